//! The live stream's messages (docs/format.md, "Live stream"): decoding and checking what
//! a detector stream sends, independent of the transport (ZeroMQ multipart messages: a
//! JSON header part, and for a frame a payload part).
//!
//! The stream is untrusted network input. Every size is bounded ([`Limits`]); a frame
//! whose header claims another shape or dtype than the start message planned, or whose
//! payload has another length, is refused before anything is allocated for it; a header
//! longer than [`Limits::max_header_bytes`] is refused before it is parsed; nothing in a
//! message names a file. Errors are values ([`Reject`]): a malformed message is logged and
//! skipped by the receiver, never a crash.

use crate::config::ExperimentConfig;
use serde::Deserialize;

/// Version of the message format this decoder reads (the start message's `version`).
pub const FORMAT_VERSION: u32 = 1;

/// Bounds on what a stream may ask for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Longest header part, bytes.
    pub max_header_bytes: usize,
    /// Most frames a scan may plan.
    pub max_frames: usize,
    /// Largest detector side, px.
    pub max_detector_px: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 << 10,
            max_frames: 10_000_000,
            max_detector_px: 8192,
        }
    }
}

/// The start message's header is larger: it may list every position (a JSON number is at
/// most ~25 bytes, two per position).
const START_BYTES_PER_FRAME: usize = 64;

/// Why a message was refused (one line, for the log and the result's attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject(pub String);

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn reject<T>(msg: impl Into<String>) -> Result<T, Reject> {
    Err(Reject(msg.into()))
}

/// Sample type of a frame's payload, little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// Unsigned 8-bit counts.
    U8,
    /// Unsigned 16-bit counts.
    U16,
    /// Unsigned 32-bit counts.
    U32,
    /// 32-bit floats (finite, ≥ 0).
    F32,
}

impl Dtype {
    /// Bytes per sample.
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::U16 => 2,
            Dtype::U32 | Dtype::F32 => 4,
        }
    }
}

/// The planned scan: explicit positions, or a raster.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, untagged)]
pub enum Scan {
    /// One (y, x) position per frame, m, in frame order.
    Positions {
        /// [frames][2] (y, x), m.
        positions_m: Vec<[f64; 2]>,
    },
    /// A raster of `shape` = [rows, columns] positions, row by row, with steps
    /// `step_m` = [dy, dx] (m) turned by `rotation_deg` about the first position.
    Raster {
        /// [rows, columns].
        shape: [usize; 2],
        /// [dy, dx], m.
        step_m: [f64; 2],
        /// Scan rotation, degrees (counter-clockwise).
        #[serde(default)]
        rotation_deg: f64,
    },
    /// No plan: every frame carries its position.
    Unplanned {},
}

/// The detector of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detector {
    /// [rows, columns] of a frame, px (square).
    pub shape: [usize; 2],
    /// Sample type of the frames.
    pub dtype: Dtype,
}

/// The start message: the planned scan and the experiment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    /// Always "start".
    #[serde(rename = "type")]
    pub kind: String,
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Frames the scan will send.
    pub frames: usize,
    /// The planned scan.
    pub scan: Scan,
    /// The detector.
    pub detector: Detector,
    /// The experiment, as `[experiment]` of a config.
    #[serde(default)]
    pub experiment: Option<ExperimentConfig>,
}

impl Start {
    /// The planned position of frame `j`, (y, x) in m, if the scan is planned.
    pub fn planned_position(&self, j: usize) -> Option<[f64; 2]> {
        match &self.scan {
            Scan::Positions { positions_m } => positions_m.get(j).copied(),
            Scan::Raster {
                shape,
                step_m,
                rotation_deg,
            } => {
                let (r, c) = (j / shape[1].max(1), j % shape[1].max(1));
                let (y, x) = (r as f64 * step_m[0], c as f64 * step_m[1]);
                let (s, co) = rotation_deg.to_radians().sin_cos();
                Some([co * y + s * x, -s * y + co * x])
            }
            Scan::Unplanned {} => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrameHeader {
    #[serde(rename = "type")]
    kind: String,
    index: usize,
    #[serde(default)]
    position_m: Option<[f64; 2]>,
    dtype: Dtype,
    shape: [usize; 2],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndHeader {
    #[serde(rename = "type")]
    kind: String,
    frames: usize,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Frame index in the scan (0-based).
    pub index: usize,
    /// (y, x), m: the frame's own, else the planned one.
    pub position_m: [f64; 2],
    /// The pattern, [rows][columns] row-major, counts as f32.
    pub pattern: Vec<f32>,
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The start message.
    Start(Box<Start>),
    /// One frame.
    Frame(Frame),
    /// The end message: how many frames the detector sent.
    End {
        /// Frames sent.
        frames: usize,
    },
}

/// The `type` of a header, read without trusting the rest.
#[derive(Deserialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: String,
}

/// Decode one message: `header` (JSON) and, for frames, `payload`. Before the start
/// message (`start` = None) only a start message is accepted.
///
/// Errors ([`Reject`], one line): a header over the limits or not JSON, an unknown type or
/// field, a plan over the limits (frames, detector side, a position list of another
/// length, non-finite numbers), a frame before the start, an index past the plan, a dtype or
/// shape other than planned, a payload of another length, a sample that is not a finite
/// count ≥ 0, an unplanned scan's frame without a position.
pub fn decode(
    header: &[u8],
    payload: Option<&[u8]>,
    start: Option<&Start>,
    lim: &Limits,
) -> Result<Message, Reject> {
    let cap = match start {
        None => start_header_cap(lim),
        Some(_) => lim.max_header_bytes,
    };
    if header.len() > cap {
        return reject(format!("header of {} bytes (at most {cap})", header.len()));
    }
    let kind: Kind = serde_json::from_slice(header)
        .map_err(|e| Reject(format!("header is not a JSON message with a type: {e}")))?;
    match (kind.kind.as_str(), start) {
        ("start", None) => decode_start(header, payload, lim),
        ("start", Some(_)) => reject("a second start message"),
        (_, None) => reject(format!("a {} message before the start", short(&kind.kind))),
        ("frame", Some(s)) => decode_frame(header, payload, s).map(Message::Frame),
        ("end", Some(_)) => {
            if payload.is_some_and(|p| !p.is_empty()) {
                return reject("an end message with a payload");
            }
            let e: EndHeader = parse(header)?;
            debug_assert_eq!(e.kind, "end");
            Ok(Message::End { frames: e.frames })
        }
        (k, Some(_)) => reject(format!("unknown message type {:?}", short(k))),
    }
}

/// The longest start header `lim` accepts: the header bound plus 64 B per planned frame
/// (a position list).
pub fn start_header_cap(lim: &Limits) -> usize {
    lim.max_header_bytes
        .saturating_add(START_BYTES_PER_FRAME.saturating_mul(lim.max_frames))
}

/// At most 40 characters of untrusted text, for a log line.
fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

fn parse<'a, T: Deserialize<'a>>(header: &'a [u8]) -> Result<T, Reject> {
    serde_json::from_slice(header).map_err(|e| Reject(format!("bad header: {e}")))
}

fn decode_start(header: &[u8], payload: Option<&[u8]>, lim: &Limits) -> Result<Message, Reject> {
    if payload.is_some_and(|p| !p.is_empty()) {
        return reject("a start message with a payload");
    }
    let s: Start = parse(header)?;
    if s.version != FORMAT_VERSION {
        return reject(format!(
            "format version {} (this ptytile reads {FORMAT_VERSION})",
            s.version
        ));
    }
    if s.frames == 0 || s.frames > lim.max_frames {
        return reject(format!(
            "{} frames planned (1 to {})",
            s.frames, lim.max_frames
        ));
    }
    let [r, c] = s.detector.shape;
    if r != c || r < 2 || r > lim.max_detector_px {
        return reject(format!(
            "detector shape [{r}, {c}] (square, 2 to {} px)",
            lim.max_detector_px
        ));
    }
    match &s.scan {
        Scan::Positions { positions_m } => {
            if positions_m.len() != s.frames {
                return reject(format!(
                    "{} positions for {} frames",
                    positions_m.len(),
                    s.frames
                ));
            }
            if positions_m.iter().flatten().any(|v| !v.is_finite()) {
                return reject("a position that is not finite");
            }
        }
        Scan::Raster {
            shape,
            step_m,
            rotation_deg,
        } => {
            if shape[0].checked_mul(shape[1]) != Some(s.frames) {
                return reject(format!(
                    "a raster of {}x{} for {} frames",
                    shape[0], shape[1], s.frames
                ));
            }
            if step_m.iter().chain([rotation_deg]).any(|v| !v.is_finite()) {
                return reject("a raster step or rotation that is not finite");
            }
        }
        Scan::Unplanned {} => {}
    }
    Ok(Message::Start(Box::new(s)))
}

fn decode_frame(header: &[u8], payload: Option<&[u8]>, s: &Start) -> Result<Frame, Reject> {
    let h: FrameHeader = parse(header)?;
    debug_assert_eq!(h.kind, "frame");
    if h.index >= s.frames {
        return reject(format!(
            "frame index {} past the {} planned",
            h.index, s.frames
        ));
    }
    if h.dtype != s.detector.dtype || h.shape != s.detector.shape {
        return reject(format!(
            "frame {}: {:?} {:?}, the start planned {:?} {:?}",
            h.index, h.dtype, h.shape, s.detector.dtype, s.detector.shape
        ));
    }
    let n = s.detector.shape[0] * s.detector.shape[1];
    let payload = payload.unwrap_or(&[]);
    if payload.len() != n * h.dtype.size() {
        return reject(format!(
            "frame {}: payload of {} bytes, {} expected",
            h.index,
            payload.len(),
            n * h.dtype.size()
        ));
    }
    let position_m = match (h.position_m, s.planned_position(h.index)) {
        (Some(p), _) if p.iter().all(|v| v.is_finite()) => p,
        (Some(_), _) => return reject(format!("frame {}: position not finite", h.index)),
        (None, Some(p)) => p,
        (None, None) => {
            return reject(format!(
                "frame {}: no position (the scan is unplanned)",
                h.index
            ))
        }
    };
    let pattern: Vec<f32> = match h.dtype {
        Dtype::U8 => payload.iter().map(|&v| v as f32).collect(),
        Dtype::U16 => payload
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as f32)
            .collect(),
        Dtype::U32 => payload
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
            .collect(),
        Dtype::F32 => {
            let v: Vec<f32> = payload
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if let Some(i) = v.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
                return reject(format!(
                    "frame {}: sample {i} is {} (counts are finite and ≥ 0)",
                    h.index, v[i]
                ));
            }
            v
        }
    };
    Ok(Frame {
        index: h.index,
        position_m,
        pattern,
    })
}

/// Which frames have arrived: gaps and repeats, for the log and the result's attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrivals {
    seen: Vec<bool>,
    /// Frames that arrived (first copies).
    pub received: usize,
    /// Indices that arrived more than once (later copies dropped; the first N repeats).
    pub repeated: Vec<usize>,
    /// Highest index seen so far.
    highest: Option<usize>,
}

impl Arrivals {
    /// None of `frames` arrived yet.
    pub fn new(frames: usize) -> Self {
        Arrivals {
            seen: vec![false; frames],
            received: 0,
            repeated: Vec::new(),
            highest: None,
        }
    }

    /// Record frame `j` (below the planned count); returns the indices skipped since the
    /// highest one before it (a gap in the sequence: empty when `j` follows it or fills
    /// an earlier gap), and false as the second value for a repeat.
    pub fn arrive(&mut self, j: usize) -> (std::ops::Range<usize>, bool) {
        if self.seen[j] {
            // bounded by the plan: at most N repeats are listed
            if self.repeated.len() < self.seen.len() {
                self.repeated.push(j);
            }
            return (0..0, false);
        }
        self.seen[j] = true;
        self.received += 1;
        let from = self.highest.map_or(0, |h| h + 1);
        let gap = if j > from { from..j } else { 0..0 };
        self.highest = Some(self.highest.map_or(j, |h| h.max(j)));
        (gap, true)
    }

    /// The frames that never arrived, in order.
    pub fn missing(&self) -> Vec<usize> {
        (0..self.seen.len()).filter(|&j| !self.seen[j]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn start_json(frames: usize) -> String {
        format!(
            r#"{{"type":"start","version":1,"frames":{frames},"scan":{{"shape":[1,{frames}],"step_m":[1e-10,1e-10]}},"detector":{{"shape":[4,4],"dtype":"u16"}}}}"#
        )
    }

    fn start(frames: usize) -> Start {
        match decode(
            start_json(frames).as_bytes(),
            None,
            None,
            &Limits::default(),
        )
        .unwrap()
        {
            Message::Start(s) => *s,
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn frames_decode_and_wrong_claims_are_refused() {
        let s = start(3);
        let lim = Limits::default();
        let payload: Vec<u8> = (0..16u16).flat_map(|v| v.to_le_bytes()).collect();
        let h = br#"{"type":"frame","index":2,"dtype":"u16","shape":[4,4]}"#;
        let Message::Frame(f) = decode(h, Some(&payload), Some(&s), &lim).unwrap() else {
            panic!()
        };
        assert_eq!(f.index, 2);
        assert_eq!(f.pattern[15], 15.0);
        assert!(
            (f.position_m[1] - 2e-10).abs() < 1e-22,
            "{:?}",
            f.position_m
        );
        for (h, p, why) in [
            (
                &br#"{"type":"frame","index":3,"dtype":"u16","shape":[4,4]}"#[..],
                &payload[..],
                "past",
            ),
            (
                br#"{"type":"frame","index":0,"dtype":"u32","shape":[4,4]}"#,
                &payload,
                "planned",
            ),
            (
                br#"{"type":"frame","index":0,"dtype":"u16","shape":[8,8]}"#,
                &payload,
                "planned",
            ),
            (
                br#"{"type":"frame","index":0,"dtype":"u16","shape":[4,4]}"#,
                &payload[1..],
                "bytes",
            ),
            (
                br#"{"type":"frame","index":0,"dtype":"u16","shape":[4,4],"file":"/etc/passwd"}"#,
                &payload,
                "unknown field",
            ),
            (br#"{"type":"start","version":1}"#, &[], "second start"),
        ] {
            let e = decode(h, Some(p), Some(&s), &lim).unwrap_err();
            assert!(e.0.contains(why), "{why}: {e}");
        }
        let e = decode(h, Some(&payload), None, &lim).unwrap_err();
        assert!(e.0.contains("before the start"), "{e}");
        let big = vec![b' '; lim.max_header_bytes + 1];
        assert!(decode(&big, None, Some(&s), &lim)
            .unwrap_err()
            .0
            .contains("at most"));
        let e = decode(start_json(0).as_bytes(), None, None, &lim).unwrap_err();
        assert!(e.0.contains("frames planned"), "{e}");
    }

    #[test]
    fn position_lists_and_unplanned_scans() {
        let lim = Limits::default();
        let st = |scan: &str| {
            let h = format!(
                r#"{{"type":"start","version":1,"frames":2,"scan":{scan},"detector":{{"shape":[2,2],"dtype":"u8"}}}}"#
            );
            decode(h.as_bytes(), None, None, &lim)
        };
        let Ok(Message::Start(s)) = st(r#"{"positions_m":[[1e-10,2e-10],[3e-10,4e-10]]}"#) else {
            panic!()
        };
        assert_eq!(s.planned_position(1), Some([3e-10, 4e-10]));
        assert!(st(r#"{"positions_m":[[1e-10,2e-10]]}"#)
            .unwrap_err()
            .0
            .contains("positions for 2"));
        let Ok(Message::Start(u)) = st("{}") else {
            panic!()
        };
        let f = br#"{"type":"frame","index":1,"dtype":"u8","shape":[2,2]}"#;
        assert!(decode(f, Some(&[1, 2, 3, 4]), Some(&u), &lim)
            .unwrap_err()
            .0
            .contains("no position"));
        let f =
            br#"{"type":"frame","index":1,"dtype":"u8","shape":[2,2],"position_m":[5e-10,6e-10]}"#;
        let Ok(Message::Frame(fr)) = decode(f, Some(&[1, 2, 3, 4]), Some(&u), &lim) else {
            panic!()
        };
        assert_eq!(
            (fr.position_m, fr.pattern),
            ([5e-10, 6e-10], vec![1.0, 2.0, 3.0, 4.0])
        );
        let e = decode(br#"{"type":"end","frames":2}"#, None, Some(&u), &lim);
        assert_eq!(e, Ok(Message::End { frames: 2 }));
    }

    #[test]
    fn scans_with_unknown_keys_are_refused() {
        for scan in [
            r#"{"foo":1}"#,
            r#"{"shape":[1,2],"step_m":[1e-10,1e-10],"foo":1}"#,
        ] {
            let h = format!(
                r#"{{"type":"start","version":1,"frames":2,"scan":{scan},"detector":{{"shape":[2,2],"dtype":"u8"}}}}"#
            );
            assert!(
                decode(h.as_bytes(), None, None, &Limits::default()).is_err(),
                "{scan}"
            );
        }
    }

    #[test]
    fn arrivals_report_gaps_repeats_and_missing_frames() {
        let mut a = Arrivals::new(6);
        assert_eq!(a.arrive(0), (0..0, true));
        assert_eq!(a.arrive(3), (1..3, true));
        assert_eq!(a.arrive(1), (0..0, true));
        assert_eq!(a.arrive(3), (0..0, false));
        assert_eq!(a.missing(), vec![2, 4, 5]);
        assert_eq!((a.received, a.repeated.clone()), (3, vec![3]));
    }

    proptest! {
        /// Any bytes as header and payload, before and after the start: a value, never a
        /// panic, and a decoded frame always has the planned size.
        #[test]
        fn decoder_never_panics(header in proptest::collection::vec(any::<u8>(), 0..256),
                                payload in proptest::collection::vec(any::<u8>(), 0..64),
                                started in any::<bool>()) {
            let s = start(3);
            let st = started.then_some(&s);
            if let Ok(Message::Frame(f)) = decode(&header, Some(&payload), st, &Limits::default()) {
                prop_assert_eq!(f.pattern.len(), 16);
            }
        }

        /// Valid frame headers with random fields: accepted exactly when they match the plan.
        #[test]
        fn frame_headers_match_the_plan(index in 0usize..6, side in 3usize..6,
                                        dtype in prop::sample::select(vec!["u8", "u16", "u32", "f32"]),
                                        len in 0usize..80) {
            let s = start(3);
            let h = format!(r#"{{"type":"frame","index":{index},"dtype":"{dtype}","shape":[{side},{side}]}}"#);
            let payload = vec![0u8; len];
            let ok = decode(h.as_bytes(), Some(&payload), Some(&s), &Limits::default()).is_ok();
            prop_assert_eq!(ok, index < 3 && side == 4 && dtype == "u16" && len == 32);
        }
    }
}
