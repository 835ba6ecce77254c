//! `ptytile stream`: replay a dataset as a detector would stream it (docs/format.md "Live
//! stream messages"), so a live reconstruction can be tried without a microscope. The
//! patterns go out in scan order, as stored (f32 samples, the file's zero-frequency
//! placement), at a fixed rate; the start message carries the planned positions and the
//! experiment as ptytile resolved it from the config and the file, so a live run with the
//! same config reads the same patterns, positions and experiment as an offline run.
//!
//! For tests of a receiver's robustness the replay can leave frames out, add malformed
//! messages, or stop before the end message as a killed streamer would.

use super::transport::Sender;
use super::DataFile;
use crate::error::{Error, Result};
use std::time::{Duration, Instant};

/// How to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    /// Frames per second (> 0; `f64::INFINITY` sends as fast as the receiver takes them).
    pub rate: f64,
    /// Frames to leave out, spread evenly over the scan (they are never sent).
    pub drop: usize,
    /// Malformed messages to add, spread evenly (a wrong shape, a short payload, a header
    /// that is not JSON, a message of three parts, in turn).
    pub corrupt: usize,
    /// Stop after this many frames without sending the end message (a killed streamer).
    pub stop_after: Option<usize>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            rate: 1000.0,
            drop: 0,
            corrupt: 0,
            stop_after: None,
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayReport {
    /// Frames sent.
    pub sent: usize,
    /// Indices of the frames left out (ascending).
    pub dropped: Vec<usize>,
    /// Malformed messages sent.
    pub corrupted: usize,
    /// Seconds from the start message to the last message.
    pub seconds: f64,
    /// How far the last frame went out behind its planned time (s): the receiver's queue
    /// was full and the sender waited (ZeroMQ's PUSH blocks, it never drops).
    pub behind_s: f64,
    /// Whether the end message was sent.
    pub ended: bool,
}

/// `k` indices spread evenly over `0..n` (the middles of k equal parts; none when k = 0).
pub fn spread(n: usize, k: usize) -> Vec<usize> {
    let k = k.min(n);
    (0..k).map(|i| (2 * i + 1) * n / (2 * k)).collect()
}

/// The start message of a replay of `df` (JSON): N frames, the positions in m (the file's;
/// for positions given in pixels, the centres times the pixel size), the detector
/// (M × M, f32) and `df.experiment_keys`.
///
/// Errors: the experiment keys cannot be written as JSON (not expected).
pub fn start_header(df: &DataFile) -> Result<Vec<u8>> {
    let positions: Vec<[f64; 2]> = match &df.positions_m {
        Some(p) => p.clone(),
        None => df
            .centres
            .iter()
            .map(|c| {
                [
                    c[0] * df.experiment.pixel_size_m[0],
                    c[1] * df.experiment.pixel_size_m[1],
                ]
            })
            .collect(),
    };
    let v = serde_json::json!({
        "type": "start",
        "version": super::stream::FORMAT_VERSION,
        "frames": df.n,
        "scan": {"positions_m": positions},
        "detector": {"shape": [df.m, df.m], "dtype": "f32"},
        "experiment": df.experiment_keys,
    });
    serde_json::to_vec(&v).map_err(|e| Error::new("stream", format!("start message: {e}")))
}

/// Replay `df` into `tx` (bound by the caller): the start message, the frames at
/// `o.rate` per second in scan order (read in chunks of at most
/// [`super::READ_CHUNK_BYTES`]), the end message. `progress` is called after every frame
/// with the number sent.
///
/// Errors: a read failure naming the file; a ZeroMQ failure; a rate that is not > 0
/// (naming `--rate`).
pub fn replay(
    df: &DataFile,
    tx: &Sender,
    o: &ReplayOptions,
    progress: &dyn Fn(usize),
) -> Result<ReplayReport> {
    if !(o.rate > 0.0) {
        return Err(Error::new("--rate", format!("must be > 0, got {}", o.rate)));
    }
    let (n, m) = (df.n, df.m);
    let mm = m * m;
    let dropped = spread(n, o.drop);
    let corrupt_at = spread(n, o.corrupt);
    tx.send(&start_header(df)?, &[])?;
    let t0 = Instant::now();
    let (mut sent, mut corrupted, mut behind, mut ended) = (0, 0, 0.0f64, true);
    let chunk = (super::READ_CHUNK_BYTES / (4 * mm).max(1)).max(1);
    let mut j0 = 0;
    'scan: while j0 < n {
        let len = chunk.min(n - j0);
        let block = df.read_raw(j0, len)?;
        for (b, pat) in block.chunks_exact(mm).enumerate() {
            let j = j0 + b;
            if o.stop_after.is_some_and(|s| sent >= s) {
                ended = false;
                break 'scan;
            }
            if corrupt_at.binary_search(&j).is_ok() {
                malformed(tx, corrupted, j, m)?;
                corrupted += 1;
            }
            if dropped.binary_search(&j).is_ok() {
                continue;
            }
            // frame j leaves at t0 + j / rate
            let due = Duration::from_secs_f64((j as f64 / o.rate).min(1e9));
            let now = t0.elapsed();
            if due > now {
                std::thread::sleep(due - now);
            } else {
                behind = (now - due).as_secs_f64();
            }
            let header =
                format!(r#"{{"type":"frame","index":{j},"dtype":"f32","shape":[{m},{m}]}}"#);
            let payload: Vec<u8> = pat.iter().flat_map(|v| v.to_le_bytes()).collect();
            tx.send(header.as_bytes(), &payload)?;
            sent += 1;
            progress(sent);
        }
        j0 += len;
    }
    if ended {
        tx.send(
            format!(r#"{{"type":"end","frames":{sent}}}"#).as_bytes(),
            &[],
        )?;
    }
    Ok(ReplayReport {
        sent,
        dropped,
        corrupted,
        seconds: t0.elapsed().as_secs_f64(),
        behind_s: behind,
        ended,
    })
}

/// The `k`-th malformed message (kinds in turn), placed before frame `j`.
fn malformed(tx: &Sender, k: usize, j: usize, m: usize) -> Result<()> {
    match k % 4 {
        0 => {
            let h = format!(
                r#"{{"type":"frame","index":{j},"dtype":"f32","shape":[{},{}]}}"#,
                m + 1,
                m + 1
            );
            tx.send(h.as_bytes(), &[0u8; 16])
        }
        1 => {
            let h = format!(r#"{{"type":"frame","index":{j},"dtype":"f32","shape":[{m},{m}]}}"#);
            tx.send(h.as_bytes(), &[0u8; 12])
        }
        2 => tx.send(b"\x00not json", &[]),
        _ => tx.send_parts(&[b"{}", b"", b""]),
    }
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn spread_is_even_and_within_the_scan() {
        assert_eq!(spread(10, 0), Vec::<usize>::new());
        assert_eq!(spread(10, 2), vec![2, 7]);
        assert_eq!(spread(3364, 50).len(), 50);
        assert!(spread(3364, 50).windows(2).all(|w| w[1] - w[0] >= 67));
        assert_eq!(spread(3, 10), vec![0, 1, 2]);
    }
}
