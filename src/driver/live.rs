//! Live reconstruction (`ptytile reconstruct --live ENDPOINT`): frames arrive from a
//! detector stream (docs/format.md "Live stream messages") while the ranks iterate over the
//! frames received so far, with previews, and after the end message the configured
//! iterations run over every frame received and the normal result is returned.
//!
//! One thread receives: it connects a PULL socket to the endpoint
//! ([`crate::data::transport`]), decodes every message ([`crate::data::stream::decode`];
//! a refused message is logged with its reason and recorded, never a crash) and stores each
//! frame in [`Frames`] as it arrives. The ranks — threads of this process (`[parallel]
//! ranks`, sharing the frame store), or MPI processes (the receiver on rank 0, whose
//! process forwards to each rank only the frames of its tile's positions, when a run needs
//! them) — run a sequence of [`RankRun`]s over growing pattern selections:
//!
//! - The tile plan is made once, from the start message's planned positions; every run
//!   gives each rank the received positions of its tile (halo ones first), on the same
//!   fields, so a run's object and probe carry over unchanged into the next one.
//! - Rank 0 decides for all ranks (point-to-point messages, so the decisions are the same
//!   on every rank): which frames a run uses (those received when it starts), when a new
//!   run starts (25 % more frames than the current one has, or its iterations are spent and
//!   new frames wait), when a preview is written (every `[live] preview_s` seconds: the
//!   current object and probe to `<output stem>.preview.h5` and its PNGs, through the same
//!   temporary-file-and-rename commit as a result, with the fraction of the scan received
//!   as an attribute).
//! - After the end message the last run is the offline run over every frame received: the
//!   `[data]` selection applied as offline (exclusions, outliers among the received frames,
//!   subsets), the offline tile plan, the configured initial object and probe, the
//!   configured iterations; its result is the result (bit for bit the offline one when the
//!   same frames are used, tests/live.rs). It does not start from the live object: the
//!   scan's sequential growth leaves a low-frequency phase error that the configured
//!   iterations do not remove (on pbtio3_thin.h5 at 1000 frames/s a warm start reached a
//!   phase correlation of 0.61–0.72, against 0.9837 offline; docs/performance.md), and the
//!   offline computation after the last frame is the time the live mode is allowed.
//!   With no message for `[live] timeout_s` seconds before the end, the result is the
//!   current live object and probe over the frames received, marked incomplete.
//!
//! Memory: the received frames are held once in [`Frames`] and once more in the ranks'
//! problems (the copy each run reads); the receiver's socket queue is bounded
//! ([`transport::DEFAULT_QUEUE`] messages; past it the sender blocks, so frames are delayed,
//! never dropped). Not yet: unplanned scans, frames' own positions (a planned scan's
//! positions are used), an incremental first update of a new frame (a new run re-reads the
//! frames received so far).

use super::{check_memory, memory_estimate, Progress, RankRun};
use crate::comm::{self, Comm};
use crate::config::Config;
use crate::data::live::Frames;
use crate::data::select::{self, Selection};
use crate::data::stream::{self, Arrivals, Limits, Message, Start};
use crate::data::transport::{self, Received, Receiver};
use crate::data::DataFile;
use crate::error::{Error, Result};
use crate::output::ReconResult;
use crate::tiling::TilePlan;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Exit code of `ptytile reconstruct --live` when the stream was lost before its end: the
/// result holds what arrived and is marked incomplete.
pub const EXIT_INCOMPLETE: i32 = 3;

/// Tag of rank 0's decisions to the other ranks.
const TAG_LIVE: u32 = 21;

/// How a live reconstruction ended.
#[derive(Debug)]
pub enum LiveOutcome {
    /// The end message arrived; the configured iterations ran over every frame received.
    /// The result on the process holding rank 0 (None on the other MPI ranks).
    Complete(Option<ReconResult>),
    /// No message for `[live] timeout_s` before the end: the object and probe reached over
    /// the frames received (attribute `live_complete` = 0); None on the other MPI ranks.
    Incomplete(Option<ReconResult>),
}

/// What the receiving thread saw.
#[derive(Debug, Default)]
struct Status {
    /// The end message's frame count, once it arrived.
    ended: Option<usize>,
    /// No message for `timeout_s` (or a transport failure) before the end.
    lost: Option<String>,
    /// Refused messages (all of them).
    rejected: usize,
    /// The frames (below N) that refused headers named, each once.
    rejected_frames: std::collections::BTreeSet<usize>,
    /// Frames that arrived more than once (later copies dropped): every repeat counted,
    /// each index listed once.
    repeats: usize,
    repeated: Vec<usize>,
    repeated_seen: Vec<bool>,
    /// Frames received so far.
    received: usize,
    /// When the last frame arrived.
    last_frame: Option<Instant>,
    /// When a quarter of the planned frames had arrived.
    quarter: Option<Instant>,
}

/// State shared by the receiving thread and the ranks.
struct Shared {
    frames: Arc<Frames>,
    status: Mutex<Status>,
    /// Set when the ranks are done: the receiver stops.
    stop: AtomicBool,
}

impl Shared {
    fn new(df: &DataFile) -> Result<Self> {
        let frames = df
            .live_frames()
            .ok_or_else(|| Error::new(&df.intensities_what, "not a live stream"))?;
        Ok(Shared {
            frames,
            status: Mutex::new(Status::default()),
            stop: AtomicBool::new(false),
        })
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A run over the frames received is replaced by a new one when 25 % more, and at least
/// this many more, have arrived (or its iterations are spent and any new frame waits).
const MIN_NEW_FRAMES: usize = 32;

/// Refused messages logged one line each (the count is always exact).
const MAX_REJECTED_LOGGED: usize = 1000;

/// Run a live reconstruction of the stream at `endpoint` with `cfg`: on thread ranks
/// (`[parallel] ranks`), or on the MPI ranks of this job when started by an MPI launcher;
/// `progress` as for [`super::run`], called by every run's iterations.
///
/// Errors (one line naming `--live`, the key or the file): an endpoint that is not
/// accepted; no start message within `[live] timeout_s`; a start message that is refused
/// or an unplanned scan; `[live]` keys out of range (under MPI every error is printed by
/// its rank and ends the job, exit code 2); those of
/// [`RankRun::with_data`] and the iterations; no frame received before the stream was lost.
pub fn run_live(cfg: &Config, endpoint: &str, progress: Progress) -> Result<LiveOutcome> {
    let lc = cfg.live;
    for (key, v) in [
        ("live.preview_s", lc.preview_s),
        ("live.timeout_s", lc.timeout_s),
    ] {
        if !(v.is_finite() && v > 0.0 && v < 1e7) {
            return Err(Error::new(key, format!("must be > 0 s, got {v}")));
        }
    }
    match comm::launcher_env().filter(|l| l.size > 1) {
        Some(_) => {
            let mut c = comm::MpiComm::init()?;
            // the other ranks wait for rank 0's start message up to live.timeout_s
            c.set_timeout(comm::DEFAULT_TIMEOUT.max(Duration::from_secs_f64(lc.timeout_s + 60.0)));
            match super::check_same_job(cfg, &mut c)
                .and_then(|_| live_mpi(cfg, endpoint, &mut c, progress))
            {
                Ok(r) => Ok(r),
                Err(e) => {
                    eprintln!("error: rank {}: {e}", c.rank());
                    c.abort(crate::error::EXIT_USAGE)
                }
            }
        }
        None => live_threads(cfg, endpoint, progress),
    }
}

/// The stream's start message and this process's dataset over it: connect and wait for
/// the start (on the process holding rank 0, `rx`), and under MPI (`comm`) pass the start
/// header to the other ranks.
fn start_of(
    cfg: &Config,
    endpoint: &str,
    rx: Option<&Receiver>,
    comm: Option<&mut dyn Comm>,
) -> Result<(Start, DataFile)> {
    let opt = format!("--live {endpoint}");
    let lim = Limits::default();
    let timeout = Duration::from_secs_f64(cfg.live.timeout_s);
    let header = match rx {
        Some(rx) => {
            let h = wait_for_start(rx, &lim, timeout, &opt)?;
            if let Some(c) = comm {
                for r in 1..c.size() {
                    c.isend(r, TAG_LIVE, h.clone())?;
                }
                c.wait_sends()?;
            }
            h
        }
        None => match comm {
            Some(c) => c.recv(0, TAG_LIVE)?,
            None => return Err(Error::new(&opt, "no receiver on rank 0")),
        },
    };
    let Ok(Message::Start(start)) = stream::decode(&header, None, None, &lim) else {
        return Err(Error::new(&opt, "start message refused"));
    };
    let frames = Arc::new(Frames::new(start.frames, start.detector.shape[0]));
    let df = DataFile::from_stream(cfg, endpoint, &start, frames)?;
    tracing::info!(
        "{opt}: scan of {} frames of {}x{}, object {}x{} px",
        start.frames,
        df.m,
        df.m,
        df.object_shape[0],
        df.object_shape[1]
    );
    Ok((*start, df))
}

/// Thread ranks: one receiver, one frame store shared by the ranks.
fn live_threads(cfg: &Config, endpoint: &str, progress: Progress) -> Result<LiveOutcome> {
    let opt = format!("--live {endpoint}");
    let lim = Limits::default();
    let rx = Receiver::connect(&opt, endpoint, &lim, transport::DEFAULT_QUEUE)?;
    let (start, df) = start_of(cfg, endpoint, Some(&rx), None)?;
    let ranks = cfg.parallel.ranks;
    let full = super::job_plan(cfg, &df, ranks, &Selection::all(df.n))?;
    check_memory(
        cfg,
        &df,
        with_store(
            &df,
            df.n,
            memory_estimate(cfg, &df, &full.ranks.iter().collect::<Vec<_>>(), true),
        ),
    )?;
    let shared = Shared::new(&df)?;
    let t0 = Instant::now();
    let timeout = Duration::from_secs_f64(cfg.live.timeout_s);
    let mut results = std::thread::scope(|s| {
        let (start, lim, shared) = (&start, &lim, &shared);
        let recv = s.spawn(move || receive(&rx, start, lim, timeout, shared));
        let out = comm::run_threads(ranks, |mut c| {
            let r = rank_loop(cfg, &mut c, shared, start, endpoint, &full, false, progress);
            if r.is_err() {
                shared.stop.store(true, Ordering::SeqCst);
            }
            r
        });
        shared.stop.store(true, Ordering::SeqCst);
        let _ = recv.join();
        out
    })?;
    let (res, complete) = results.swap_remove(0);
    outcome(&opt, &start, &shared, res, complete, t0)
}

/// MPI ranks: rank 0's process receives and forwards to each rank only the frames of its
/// tile's positions, when a run needs them.
fn live_mpi(
    cfg: &Config,
    endpoint: &str,
    c: &mut comm::MpiComm,
    progress: Progress,
) -> Result<LiveOutcome> {
    let opt = format!("--live {endpoint}");
    let lim = Limits::default();
    let rx = match c.rank() {
        0 => Some(Receiver::connect(
            &opt,
            endpoint,
            &lim,
            transport::DEFAULT_QUEUE,
        )?),
        _ => None,
    };
    let (start, df) = start_of(cfg, endpoint, rx.as_ref(), Some(&mut *c))?;
    let full = super::job_plan(cfg, &df, c.size(), &Selection::all(df.n))?;
    let rank = c.rank();
    let estimate = memory_estimate(cfg, &df, &[&full.ranks[rank]], rank == 0);
    // rank 0's process stores every frame, the others their tiles' frames
    let stored = match rank {
        0 => df.n,
        _ => full.ranks[rank].positions.len(),
    };
    let estimate = with_store(&df, stored, estimate);
    check_memory(cfg, &df, estimate)?;
    let shared = Shared::new(&df)?;
    let t0 = Instant::now();
    let timeout = Duration::from_secs_f64(cfg.live.timeout_s);
    let (res, complete) = std::thread::scope(|s| {
        let (start, lim, shared) = (&start, &lim, &shared);
        let recv = rx.map(|rx| s.spawn(move || receive(&rx, start, lim, timeout, shared)));
        let r = rank_loop(cfg, &mut *c, shared, start, endpoint, &full, true, progress);
        shared.stop.store(true, Ordering::SeqCst);
        if let Some(h) = recv {
            let _ = h.join();
        }
        r
    })?;
    outcome(&opt, &start, &shared, res, complete, t0)
}

/// A process's memory estimate plus its frame store's bytes when it stores `frames`
/// frames (M² f32 each: the frames as received, besides the ranks' copies in their
/// problems).
fn with_store(
    df: &DataFile,
    frames: usize,
    (total, mut parts): (u64, Vec<(&'static str, u64)>),
) -> (u64, Vec<(&'static str, u64)>) {
    let store = (frames * df.m * df.m * 4) as u64;
    parts.push(("received frames", store));
    (total + store, parts)
}

/// The outcome on this process: on rank 0 the result with the stream's attributes and
/// lists, logged; None elsewhere.
fn outcome(
    opt: &str,
    start: &Start,
    shared: &Shared,
    res: Option<ReconResult>,
    complete: bool,
    t0: Instant,
) -> Result<LiveOutcome> {
    let res = match res {
        None => None,
        Some(mut res) => {
            let st = shared.status();
            let missing: Vec<usize> = {
                let got = shared.frames.received();
                (0..got.len()).filter(|&j| !got[j]).collect()
            };
            let after_last = st.last_frame.map_or(0.0, |t| t.elapsed().as_secs_f64());
            report(opt, &st, &missing, complete);
            res.attrs.extend([
                ("live_complete".into(), f64::from(u8::from(complete))),
                ("live_frames_planned".into(), start.frames as f64),
                ("live_frames_received".into(), st.received as f64),
                ("live_frames_missing".into(), missing.len() as f64),
                ("live_messages_rejected".into(), st.rejected as f64),
                ("live_frames_repeated".into(), st.repeats as f64),
                ("live_seconds".into(), t0.elapsed().as_secs_f64()),
                ("live_result_seconds_after_last_frame".into(), after_last),
            ]);
            if let Some(e) = st.ended {
                res.attrs.push(("live_frames_sent".into(), e as f64));
            }
            let rejected_frames: Vec<usize> = st.rejected_frames.iter().copied().collect();
            res.index_lists
                .push(("live_missing_frames".into(), missing));
            res.index_lists
                .push(("live_rejected_frames".into(), rejected_frames));
            let mut repeated = st.repeated.clone();
            repeated.sort_unstable();
            res.index_lists
                .push(("live_repeated_frames".into(), repeated));
            Some(res)
        }
    };
    Ok(if complete {
        LiveOutcome::Complete(res)
    } else {
        LiveOutcome::Incomplete(res)
    })
}

/// Log what the stream delivered: missing, rejected and repeated frames.
fn report(opt: &str, st: &Status, missing: &[usize], complete: bool) {
    if !missing.is_empty() {
        tracing::warn!(
            "{opt}: {} frame(s) never arrived: {}",
            missing.len(),
            super::setup::first_indices_in(missing, "live_missing_frames")
        );
    }
    if st.rejected > 0 {
        tracing::warn!(
            "{opt}: {} message(s) rejected, naming frames {}",
            st.rejected,
            super::setup::first_indices_in(
                &st.rejected_frames.iter().copied().collect::<Vec<_>>(),
                "live_rejected_frames"
            )
        );
    }
    if st.repeats > 0 {
        tracing::warn!(
            "{opt}: {} repeated frame(s) dropped: {}",
            st.repeats,
            super::setup::first_indices_in(&st.repeated, "live_repeated_frames")
        );
    }
    if let Some(why) = st.lost.as_ref().filter(|_| !complete) {
        tracing::warn!("{opt}: {why}");
    }
}

/// Wait for the start message, logging and skipping anything else.
fn wait_for_start(rx: &Receiver, lim: &Limits, timeout: Duration, opt: &str) -> Result<Vec<u8>> {
    let t = Instant::now();
    while t.elapsed() < timeout {
        match rx.next(Duration::from_millis(100))? {
            Received::Message(p) => match stream::decode(&p.header, Some(&p.payload), None, lim) {
                Ok(Message::Start(_)) => return Ok(p.header),
                Ok(_) => {}
                Err(r) => {
                    tracing::warn!("{opt}: message refused before the start: {r}");
                    // a refused start message is the user's error, not noise: say so
                    if serde_json::from_slice::<serde_json::Value>(&p.header)
                        .ok()
                        .and_then(|v| v.get("type").cloned())
                        .is_some_and(|t| t == "start")
                    {
                        return Err(Error::new(opt, format!("start message refused: {r}")));
                    }
                }
            },
            Received::Malformed(r) => tracing::warn!("{opt}: {r}"),
            Received::Idle => {}
        }
    }
    Err(Error::new(
        opt,
        format!(
            "no start message within live.timeout_s = {} s",
            timeout.as_secs_f64()
        ),
    ))
}

/// The frame index a refused header names, if it has one (for the result's list).
fn named_index(header: &[u8]) -> Option<usize> {
    #[derive(serde::Deserialize)]
    struct Idx {
        index: usize,
    }
    serde_json::from_slice::<Idx>(header).ok().map(|i| i.index)
}

/// The receiving thread: decode and store frames until the end message, a silence of
/// `timeout`, a transport failure, or the ranks' stop.
fn receive(rx: &Receiver, start: &Start, lim: &Limits, timeout: Duration, sh: &Shared) {
    let mut arrivals = Arrivals::new(start.frames);
    let mut last = Instant::now();
    let reject = |sh: &Shared, idx: Option<usize>, why: String| {
        let mut st = sh.status();
        st.rejected += 1;
        // one line each (the first MAX_REJECTED_LOGGED; the count is always exact)
        if st.rejected <= MAX_REJECTED_LOGGED {
            tracing::warn!("live stream: message rejected: {why}");
        }
        if let Some(j) = idx.filter(|&j| j < start.frames) {
            st.rejected_frames.insert(j);
        }
    };
    while !sh.stop.load(Ordering::SeqCst) {
        match rx.next(Duration::from_millis(20)) {
            Ok(Received::Message(p)) => {
                last = Instant::now();
                match stream::decode(&p.header, Some(&p.payload), Some(start), lim) {
                    Ok(Message::Frame(f)) => {
                        let (gap, first) = arrivals.arrive(f.index);
                        if !gap.is_empty() {
                            tracing::debug!(
                                "live stream: frames {}..{} skipped so far",
                                gap.start,
                                gap.end
                            );
                        }
                        let mut st = sh.status();
                        if first && sh.frames.insert(f.index, f.pattern) {
                            st.received += 1;
                            st.last_frame = Some(Instant::now());
                            if st.quarter.is_none() && 4 * st.received >= start.frames {
                                st.quarter = st.last_frame;
                            }
                        } else {
                            st.repeats += 1;
                            if st.repeated_seen.is_empty() {
                                st.repeated_seen = vec![false; start.frames];
                            }
                            if !std::mem::replace(&mut st.repeated_seen[f.index], true) {
                                st.repeated.push(f.index);
                            }
                        }
                    }
                    Ok(Message::End { frames }) => {
                        sh.status().ended = Some(frames);
                        return;
                    }
                    Ok(Message::Start(_)) => reject(sh, None, "a second start message".into()),
                    // the index is read only from a header of a frame's size
                    Err(r) => {
                        let idx = (p.header.len() <= lim.max_header_bytes)
                            .then(|| named_index(&p.header))
                            .flatten();
                        reject(sh, idx, r.0)
                    }
                }
            }
            Ok(Received::Malformed(r)) => {
                last = Instant::now();
                reject(sh, None, r);
            }
            Ok(Received::Idle) => {
                if last.elapsed() >= timeout {
                    sh.status().lost = Some(format!(
                        "no message for live.timeout_s = {} s before the end message: the stream is taken as lost",
                        timeout.as_secs_f64()
                    ));
                    return;
                }
            }
            Err(e) => {
                sh.status().lost = Some(format!("the stream failed: {e}"));
                return;
            }
        }
    }
}

/// What rank 0 tells the other ranks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Frames still arriving.
    Live,
    /// The end message arrived: the last run.
    Final,
    /// The stream was lost.
    Lost,
}

/// What rank 0 decides for the next run, the same on every rank.
struct RunPlan {
    phase: Phase,
    /// Frames received when the run starts.
    received: usize,
    /// The patterns the run uses (None: none usable yet).
    sel: Option<Selection>,
}

fn put(out: &mut Vec<u8>, v: usize) {
    out.extend((v as u64).to_le_bytes());
}

/// Read a u64 at `*at` (advancing it); a short message reads as 0 (rank 0 wrote it).
fn take(b: &[u8], at: &mut usize) -> usize {
    let v = b.get(*at..*at + 8).map_or(0, |w| {
        u64::from_le_bytes(w.try_into().unwrap_or([0; 8])) as usize
    });
    *at += 8;
    v
}

/// Rank 0's snapshot of the stream for the next run: the phase, and the `[data]`
/// selection over the frames received ([`live_selection`], computed on rank 0, which holds
/// every frame), sent to the other ranks.
fn agree_run(c: &mut dyn Comm, sh: &Shared, cfg: &Config, df: &DataFile) -> Result<RunPlan> {
    if c.rank() == 0 {
        // the status first: a frame stored after it is in the next run
        let phase = {
            let st = sh.status();
            match (st.ended, &st.lost) {
                (Some(_), _) => Phase::Final,
                (None, Some(_)) => Phase::Lost,
                _ => Phase::Live,
            }
        };
        let got = sh.frames.received();
        let received = got.iter().filter(|&&b| b).count();
        let sel = match received {
            0 => None,
            _ => match live_selection(cfg, df, &got) {
                Ok(s) => Some(s),
                Err(_) if phase == Phase::Live => None,
                Err(e) => return Err(e),
            },
        };
        if c.size() > 1 {
            let mut msg = vec![phase as u8, u8::from(sel.is_some())];
            put(&mut msg, received);
            if let Some(s) = &sel {
                put(&mut msg, s.used.len());
                msg.extend(s.used.iter().map(|&u| u8::from(u)));
                for list in [&s.outliers, &s.manual] {
                    put(&mut msg, list.len());
                    list.iter().for_each(|&j| put(&mut msg, j));
                }
            }
            for r in 1..c.size() {
                c.isend(r, TAG_LIVE, msg.clone())?;
            }
            c.wait_sends()?;
        }
        return Ok(RunPlan {
            phase,
            received,
            sel,
        });
    }
    let b = c.recv(0, TAG_LIVE)?;
    let phase = match b.first() {
        Some(0) => Phase::Live,
        Some(1) => Phase::Final,
        _ => Phase::Lost,
    };
    let mut at = 2;
    let received = take(&b, &mut at);
    let sel = match b.get(1) {
        Some(1) => {
            let n = take(&b, &mut at).min(b.len().saturating_sub(at));
            let used = b[at..at + n].iter().map(|&u| u != 0).collect();
            at += n;
            let mut lists = [Vec::new(), Vec::new()];
            for l in &mut lists {
                let k = take(&b, &mut at).min(b.len() / 8);
                *l = (0..k).map(|_| take(&b, &mut at)).collect();
            }
            let [outliers, manual] = lists;
            Some(Selection {
                used,
                outliers,
                manual,
            })
        }
        _ => None,
    };
    Ok(RunPlan {
        phase,
        received,
        sel,
    })
}

/// Most bytes of frames in one message from rank 0 to another rank.
const FETCH_BYTES: usize = 64 << 20;

/// Under MPI: give every rank the frames of its positions in `plan` that its store lacks,
/// from rank 0's store (collective; each rank asks for its list, rank 0 answers in
/// messages of at most [`FETCH_BYTES`]). Frames reach only the ranks whose tiles hold
/// them.
fn fetch(c: &mut dyn Comm, frames: &Frames, plan: &TilePlan, m: usize) -> Result<()> {
    const TAG_WANT: u32 = 22;
    const TAG_FRAMES: u32 = 23;
    let mm = m * m;
    let per = (FETCH_BYTES / (4 * mm).max(1)).max(1);
    if c.rank() == 0 {
        for r in 1..c.size() {
            let b = c.recv(r, TAG_WANT)?;
            let want: Vec<usize> = b
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])) as usize)
                .collect();
            for chunk in want.chunks(per) {
                let mut out = Vec::with_capacity(chunk.len() * mm * 4);
                for &j in chunk {
                    out.extend(frames.read(j, 1).iter().flat_map(|v| v.to_le_bytes()));
                }
                c.isend(r, TAG_FRAMES, out)?;
            }
            c.wait_sends()?;
        }
        return Ok(());
    }
    let have = frames.received();
    let want: Vec<usize> = plan.ranks[c.rank()]
        .positions
        .iter()
        .copied()
        .filter(|&j| !have[j])
        .collect();
    let mut msg = Vec::with_capacity(8 * want.len());
    want.iter().for_each(|&j| put(&mut msg, j));
    c.isend(0, TAG_WANT, msg)?;
    c.wait_sends()?;
    for chunk in want.chunks(per) {
        let b = c.recv(0, TAG_FRAMES)?;
        if b.len() != chunk.len() * mm * 4 {
            return Err(Error::new(
                format!("rank {}", c.rank()),
                "frames from rank 0 of the wrong size",
            ));
        }
        for (&j, p) in chunk.iter().zip(b.chunks_exact(mm * 4)) {
            let pat = p
                .chunks_exact(4)
                .map(|w| f32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                .collect();
            frames.insert(j, pat);
        }
    }
    Ok(())
}

/// Rank 0's decision after an iteration: (start a new run, write a preview now).
fn agree_step(c: &mut dyn Comm, decide: impl FnOnce() -> (bool, bool)) -> Result<(bool, bool)> {
    let msg = if c.rank() == 0 {
        let (next, preview) = decide();
        let msg = vec![u8::from(next), u8::from(preview)];
        for r in 1..c.size() {
            c.isend(r, TAG_LIVE, msg.clone())?;
        }
        c.wait_sends()?;
        msg
    } else {
        c.recv(0, TAG_LIVE)?
    };
    Ok((msg.first() == Some(&1), msg.get(1) == Some(&1)))
}

/// The patterns a run uses: the `[data]` selection over the received frames (outliers
/// judged among them; a frame not received counts as the median, then is left out).
fn live_selection(cfg: &Config, df: &DataFile, received: &[bool]) -> Result<Selection> {
    let totals = match (cfg.data.exclude_outliers, df.live_frames()) {
        (false, _) => None,
        // summed once per frame as it arrived, not re-read every run
        (true, Some(f)) => Some(f.totals()),
        (true, None) => Some(df.pattern_totals(0, df.n)?),
    };
    let totals = totals.map(|mut t| {
        let mut got: Vec<f64> = (0..df.n).filter(|&j| received[j]).map(|j| t[j]).collect();
        got.sort_by(|a, b| a.total_cmp(b));
        let med = got.get(got.len() / 2).copied().unwrap_or(0.0);
        (0..df.n).filter(|&j| !received[j]).for_each(|j| t[j] = med);
        t
    });
    let mut sel = select::select(&cfg.data, &df.centres, totals.as_deref())?;
    for (u, &r) in sel.used.iter_mut().zip(received) {
        *u &= r;
    }
    if sel.n_used() == 0 {
        return Err(Error::new("data", "no received frame to reconstruct from"));
    }
    Ok(sel)
}

/// `full` with each rank's positions restricted to `used` (order kept: halo ones first).
fn restrict(full: &TilePlan, used: &[bool]) -> TilePlan {
    let mut p = full.clone();
    for r in &mut p.ranks {
        let nh = r.positions[..r.n_halo_positions]
            .iter()
            .filter(|&&j| used[j])
            .count();
        r.positions.retain(|&j| used[j]);
        r.n_halo_positions = nh;
    }
    p
}

/// Where previews go: `<output stem>.preview.h5` beside `output.path`.
pub fn preview_path(cfg: &Config) -> PathBuf {
    let p = &cfg.output.path;
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "recon".into());
    p.with_file_name(format!("{stem}.preview.h5"))
}

/// One rank's part: runs over growing selections until the final run or a lost stream;
/// with `forward` (MPI) each run first fetches its frames from rank 0. Returns the result
/// (rank 0; None elsewhere) and whether the stream was complete.
#[allow(clippy::too_many_arguments)]
fn rank_loop(
    cfg: &Config,
    c: &mut dyn Comm,
    sh: &Shared,
    start: &Start,
    endpoint: &str,
    full: &TilePlan,
    forward: bool,
    progress: Progress,
) -> Result<(Option<ReconResult>, bool)> {
    let preview_every = Duration::from_secs_f64(cfg.live.preview_s);
    let mut carried = None;
    let mut last_preview = Instant::now();
    let mut previews = 0usize;
    // seconds from a quarter of the scan received to the first preview written after it
    let mut after_quarter: Option<f64> = None;
    let finished = |r: Option<ReconResult>, complete: bool, previews: usize, q: Option<f64>| {
        let r = r.map(|mut r| {
            r.attrs.push(("live_previews".into(), previews as f64));
            if let Some(q) = q {
                r.attrs
                    .push(("live_first_preview_after_quarter_s".into(), q));
            }
            r
        });
        (r, complete)
    };
    loop {
        let df = DataFile::from_stream(cfg, endpoint, start, sh.frames.clone())?;
        let RunPlan {
            phase,
            received: n_got,
            sel,
        } = agree_run(c, sh, cfg, &df)?;
        let Some(sel) = sel else {
            if phase == Phase::Live {
                // nothing usable yet: wait for frames
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            return Err(Error::new(
                format!("--live {endpoint}"),
                "the stream ended or was lost before any usable frame arrived",
            ));
        };
        let plan = match phase {
            // the offline run over the frames received: its plan, the configured start
            Phase::Final => super::job_plan(cfg, &df, c.size(), &sel)?,
            _ => restrict(full, &sel.used),
        };
        if forward {
            fetch(&mut *c, &sh.frames, &plan, df.m)?;
        }
        let initial = match phase {
            Phase::Final => None,
            _ => carried.take(),
        };
        let mut run = RankRun::with_data(cfg, &mut *c, df, plan, sel, initial)?;
        match phase {
            Phase::Final => {
                while !run.is_done() {
                    run.step(progress)?;
                }
                return Ok(finished(run.finish()?, true, previews, after_quarter));
            }
            Phase::Lost => return Ok(finished(run.finish()?, false, previews, after_quarter)),
            Phase::Live => {}
        }
        loop {
            if !run.is_done() {
                run.step(progress)?;
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
            let done = run.is_done();
            let (next, preview) = agree_step(run.comm(), || {
                let st = sh.status();
                let more = st.received > n_got;
                let next = st.ended.is_some()
                    || st.lost.is_some()
                    || st.received >= (n_got + n_got / 4).max(n_got + MIN_NEW_FRAMES)
                    || (done && more);
                (next, last_preview.elapsed() >= preview_every)
            })?;
            if preview {
                let fraction = n_got as f64 / start.frames as f64;
                if let Some(mut r) = run.result()? {
                    r.attrs.push(("live_fraction_received".into(), fraction));
                    r.attrs.push(("live_preview".into(), (previews + 1) as f64));
                    let path = preview_path(cfg);
                    crate::output::write_result_checked(&path, &r, cfg.output.png, &cfg.inputs())?;
                    if after_quarter.is_none() {
                        after_quarter = sh.status().quarter.map(|q| q.elapsed().as_secs_f64());
                    }
                    tracing::info!(
                        "preview {} ({:.0} % of the scan): {}",
                        previews + 1,
                        100.0 * fraction,
                        path.display()
                    );
                }
                previews += 1;
                last_preview = Instant::now();
            }
            if next {
                break;
            }
        }
        carried = Some(run.into_state()?);
    }
}
