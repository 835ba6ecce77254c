//! Ranks as MPI processes (rsmpi 0.8, any MPI with `mpicc`; tested with MPICH 4.0).
//!
//! MPI is initialised at most once per process ([`MpiComm::init`]), asking for
//! `MPI_THREAD_SERIALIZED` (rayon threads may exist; MPI is only ever called by the one
//! thread that owns the [`MpiComm`] at a time, which `&mut self` guarantees). Sends are
//! `MPI_Isend`s whose byte buffers the communicator owns until [`Comm::wait_sends`]
//! completes them. Receives are matched probes plus a receive of the whole byte vector,
//! polled so they can time out. All-reduces are the binomial tree of
//! [`super::tree_allreduce`] built on the same polled point-to-point messages, on a
//! duplicate of the world communicator (so they never match a user tag): no rank does more
//! than ⌈log2 R⌉ steps or holds more than one incoming chunk, a dead or silent peer gives
//! an error naming it, and results are bit-identical on all ranks and equal to
//! [`super::ThreadComm`]'s.
//!
//! Failure: a rank that hits an error should call [`MpiComm::abort`]; the launcher then
//! kills every rank. A rank that panics while it owns its [`MpiComm`] aborts the job from
//! `Drop` (a panic would otherwise finalise MPI and let this rank exit while the others
//! wait); a rank that crashes (signal) is handled by the launcher, which kills the job.
//! MPICH's hydra does not say which rank that was (4.0 prints one PID, not always the dead
//! one), so under hydra each rank first starts a watcher ([`start_rank_watch`]) that names
//! it when it dies without finishing.

use std::io::Write;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use mpi::datatype::PartitionMut;
use mpi::point_to_point::MatchedReceiveVec;
use mpi::request::{Request, StaticScope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::{Count, Threading};

use super::{
    max_into, sum_into, tree_allreduce, Comm, CommStats, TreeLink, TreePhase, DEFAULT_TIMEOUT,
    MAX_TAG,
};
use crate::error::{Error, Result};

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// The write end of the rank watcher's pipe ([`start_rank_watch`]); `None` when none runs.
static RANK_WATCH: Mutex<Option<ChildStdin>> = Mutex::new(None);

/// What the rank writes to its watcher when it ends in an orderly way (finalised, or
/// aborted after printing its own error).
const WATCH_DONE: &[u8] = b"done";

/// Under MPICH's hydra (`PMI_FD` set), start this rank's watcher: a `/bin/sh` child that
/// reads a pipe from this process until end of file. Started before `MPI_Init`, it holds
/// copies of this rank's standard output and error and PMI socket, so when the rank dies
/// without finishing (SIGKILL, crash) hydra sees nothing yet; the watcher gets end of file
/// without [`WATCH_DONE`], prints `error: rank R (pid P on HOST) ended without finishing
/// (killed by a signal or crashed); the MPI job ends` to standard error and exits, and
/// only then does hydra see the PMI socket close and kill the job (whole process groups,
/// watchers included). Hydra itself names no rank. Ranks ending in order write
/// [`WATCH_DONE`] first ([`finish_rank_watch`]), so the watcher exits silently. Costs two
/// sleeping processes (sh, cat) per rank; `PTYTILE_RANK_WATCH=0` turns it off. Other
/// launchers (Slurm, OpenMPI) detect deaths by other means and get no watcher.
fn start_rank_watch(launch: Option<&LaunchInfo>) {
    let Some(l) = launch else { return };
    if std::env::var_os("PMI_FD").is_none()
        || std::env::var("PTYTILE_RANK_WATCH").is_ok_and(|v| v == "0")
    {
        return;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let msg = format!(
        "error: rank {} (pid {} on {host}) ended without finishing (killed by a signal or crashed); the MPI job ends",
        l.rank,
        std::process::id()
    );
    let child = Command::new("/bin/sh")
        .args([
            "-c",
            "m=$(cat); [ \"$m\" = done ] && exit 0; printf '%s\\n' \"$1\" >&2; exit 1",
            "ptytile-rank-watch",
            &msg,
        ])
        .stdin(Stdio::piped())
        .spawn();
    match child {
        // The `Child` is dropped without waiting: the watcher outlives it or is reaped by init.
        Ok(mut c) => *RANK_WATCH.lock().unwrap_or_else(|e| e.into_inner()) = c.stdin.take(),
        Err(e) => eprintln!(
            "warning: rank {}: could not start the rank watcher (/bin/sh): {e}",
            l.rank
        ),
    }
}

/// Tell the watcher this rank ends in order (it then exits silently) and close its pipe.
fn finish_rank_watch() {
    if let Some(mut w) = RANK_WATCH.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = w.write_all(WATCH_DONE);
    }
}

/// What the launcher (`mpirun`, `srun`, `jsrun`, …) told this process through its
/// environment, read before MPI is initialised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchInfo {
    /// This process's rank in the job.
    pub rank: usize,
    /// Number of processes the launcher started.
    pub size: usize,
    /// Rank among the processes on this node (for picking a GPU); 0 if not given.
    pub local_rank: usize,
    /// Which launcher's variables were found (e.g. `"hydra/PMI"`, `"OpenMPI"`, `"Slurm"`).
    pub launcher: &'static str,
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// The launcher's view of this process, or `None` when it was not started by a known
/// launcher (a singleton run). Reads, in this order: OpenMPI (`OMPI_COMM_WORLD_RANK/SIZE/
/// LOCAL_RANK`), jsrun (`JSM_NAMESPACE_RANK/SIZE/LOCAL_RANK`), MPICH hydra and other PMI
/// launchers (`PMI_RANK/PMI_SIZE`, local rank from `MPI_LOCALRANKID` or `PMI_LOCAL_RANK`),
/// Slurm's srun (`SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`; the step's task
/// count, not `SLURM_NTASKS`, so a plain batch script is not mistaken for an srun step).
pub fn launcher_env() -> Option<LaunchInfo> {
    let info = |launcher, rank, size, local: &[&str]| {
        let local_rank = local.iter().find_map(|v| env_usize(v)).unwrap_or(0);
        Some(LaunchInfo {
            rank,
            size,
            local_rank,
            launcher,
        })
    };
    if let (Some(r), Some(s)) = (
        env_usize("OMPI_COMM_WORLD_RANK"),
        env_usize("OMPI_COMM_WORLD_SIZE"),
    ) {
        return info("OpenMPI", r, s, &["OMPI_COMM_WORLD_LOCAL_RANK"]);
    }
    if let (Some(r), Some(s)) = (
        env_usize("JSM_NAMESPACE_RANK"),
        env_usize("JSM_NAMESPACE_SIZE"),
    ) {
        return info("jsrun", r, s, &["JSM_NAMESPACE_LOCAL_RANK"]);
    }
    if let (Some(r), Some(s)) = (env_usize("PMI_RANK"), env_usize("PMI_SIZE")) {
        return info(
            "hydra/PMI",
            r,
            s,
            &["MPI_LOCALRANKID", "PMI_LOCAL_RANK", "SLURM_LOCALID"],
        );
    }
    if let (Some(r), Some(s)) = (env_usize("SLURM_PROCID"), env_usize("SLURM_STEP_NUM_TASKS")) {
        return info("Slurm", r, s, &["SLURM_LOCALID"]);
    }
    None
}

/// A send handed to MPI and not yet known to be complete. `req` borrows `buf`, which was
/// leaked from a `Box<[u8]>` and is reclaimed only once `req` has completed.
struct PendingSend {
    req: Request<'static, [u8], StaticScope>,
    buf: *mut [u8],
    to: usize,
    tag: u32,
    /// Sent by an all-reduce on [`MpiComm::coll`], not by [`Comm::isend`].
    coll: bool,
}

/// One MPI process's rank; see the module docs.
pub struct MpiComm {
    rank: usize,
    size: usize,
    pending: Vec<PendingSend>,
    timeout: Duration,
    stats: CommStats,
    /// Duplicate of the world communicator for the all-reduce's messages: its own matching
    /// context, so they can never be taken by (or take) a user receive of the same tag.
    /// `None` only while dropping (freed before MPI is finalised).
    coll: Option<SimpleCommunicator>,
    /// Set when MPI only granted `MPI_THREAD_FUNNELED`: the one thread allowed to call MPI.
    funnel: Option<ThreadId>,
    /// Dropped last (after pending sends are completed): finalises MPI.
    universe: Option<mpi::environment::Universe>,
}

// SAFETY: MPI handles are process-global. MPI is initialised with at least
// MPI_THREAD_SERIALIZED, or, if only FUNNELED was granted, every MPI call first checks it
// runs on the initialising thread (`check_thread`). `&mut self` on every MPI call means
// calls never overlap. The raw `buf` pointers are owned exclusively by this value.
unsafe impl Send for MpiComm {}

/// Wait between polls: spin briefly (low latency), then back off to 1 ms sleeps so
/// oversubscribed ranks leave the cores to those doing work.
fn backoff(round: &mut u32) {
    if *round < 64 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(if *round < 200 { 50 } else { 1000 }));
    }
    *round += 1;
}

fn world() -> SimpleCommunicator {
    SimpleCommunicator::world()
}

/// Largest number of f64 values per all-reduce message (64 MiB): longer buffers are reduced
/// chunk by chunk (element-wise, so the order of combination is unchanged), which keeps
/// each message under MPI's count limit and bounds the buffers of every rank.
const REDUCE_CHUNK: usize = 8 << 20;

/// Tags of the all-reduce's messages on [`MpiComm::coll`].
const TAG_REDUCE: mpi::Tag = 1;
const TAG_RESULT: mpi::Tag = 2;

impl MpiComm {
    /// Initialise MPI (once per process) and check the job against the launcher.
    ///
    /// Errors: MPI already initialised in this process; MPI refused to start; or the
    /// launcher started N ranks but MPI reports another size — the sign of a binary built
    /// against one MPI and started by another's `mpirun` (each process then runs alone).
    pub fn init() -> Result<MpiComm> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(Error::new(
                "MPI",
                "already initialised in this process (MPI can be initialised only once per process)",
            ));
        }
        let launch = launcher_env();
        start_rank_watch(launch.as_ref());
        let r = Self::init_mpi(launch);
        if r.is_err() {
            finish_rank_watch(); // the caller reports the error
        }
        r
    }

    fn init_mpi(launch: Option<LaunchInfo>) -> Result<MpiComm> {
        let (universe, provided) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| {
                Error::new(
                    "MPI",
                    "MPI_Init_thread failed or MPI was already initialised",
                )
            })?;
        if provided < Threading::Funneled {
            return Err(Error::new(
                "MPI",
                format!(
                    "library granted thread level {provided:?}; ptytile needs at least Funneled"
                ),
            ));
        }
        let funnel = (provided < Threading::Serialized).then(|| std::thread::current().id());
        let w = universe.world();
        let (rank, size) = (w.rank() as usize, w.size() as usize);
        let coll = w.duplicate();
        if let Some(l) = &launch {
            if l.size != size {
                return Err(Error::new(
                    "MPI",
                    format!(
                        "launched with {} ranks ({}) but MPI reports {size}: mpirun from a different MPI?",
                        l.size, l.launcher
                    ),
                ));
            }
            if l.rank != rank {
                return Err(Error::new(
                    "MPI",
                    format!("launcher says rank {} but MPI says rank {rank}", l.rank),
                ));
            }
        }
        Ok(MpiComm {
            rank,
            size,
            pending: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            stats: CommStats::default(),
            coll: Some(coll),
            funnel,
            universe: Some(universe),
        })
    }

    /// Change how long receives, send completion and barriers wait (default 120 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Rank on this node as told by the launcher (0 for a singleton run).
    pub fn local_rank(&self) -> usize {
        launcher_env().map(|l| l.local_rank).unwrap_or(0)
    }

    /// Abort the whole job (`MPI_Abort` on the world communicator) with exit `code`;
    /// the launcher kills every rank. Call it when this rank hits an error: standard
    /// output and error are flushed and the launcher is given [`ABORT_GRACE`] to forward
    /// this rank's last lines (the error message) before it tears the job down.
    pub fn abort(&self, code: i32) -> ! {
        abort_world(code)
    }

    fn check_thread(&self, what: &str) -> Result<()> {
        match self.funnel {
            Some(id) if id != std::thread::current().id() => Err(Error::new(
                format!("rank {}: {what}", self.rank),
                "MPI granted only MPI_THREAD_FUNNELED; call MPI from the thread that initialised it",
            )),
            _ => Ok(()),
        }
    }

    fn check_peer(&self, what: &str, peer: usize, tag: u32) -> Result<()> {
        if peer >= self.size {
            return Err(Error::new(
                format!("rank {}: {what} rank {peer}", self.rank),
                format!("no such rank (job has {} ranks)", self.size),
            ));
        }
        if tag > MAX_TAG {
            return Err(Error::new(
                format!("rank {}: {what} rank {peer}", self.rank),
                format!("tag {tag} above {MAX_TAG}, the largest MPI guarantees"),
            ));
        }
        self.check_thread(what)
    }

    /// Test every pending send once; reclaim the buffers of those complete.
    fn progress_sends(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            let PendingSend {
                req,
                buf,
                to,
                tag,
                coll,
            } = p;
            match req.test() {
                Ok(_) => {
                    // SAFETY: the request that borrowed `buf` has completed and is gone;
                    // `buf` came from Box::leak and is reclaimed exactly once.
                    drop(unsafe { Box::from_raw(buf) });
                }
                Err(req) => self.pending.push(PendingSend {
                    req,
                    buf,
                    to,
                    tag,
                    coll,
                }),
            }
        }
    }

    /// Hand `data` to MPI as a non-blocking send to `to` with `tag` on `comm` (world or
    /// [`MpiComm::coll`]); the buffer is owned by [`MpiComm::pending`] until complete.
    fn post_send(
        pending: &mut Vec<PendingSend>,
        comm: &SimpleCommunicator,
        to: usize,
        tag: u32,
        data: Vec<u8>,
        coll: bool,
    ) {
        let buf: *mut [u8] = Box::into_raw(data.into_boxed_slice());
        // SAFETY: `buf` stays allocated and unaliased by writers until the request that
        // borrows it has completed (`progress_sends`) or, on shutdown without completion,
        // forever (leaked), so a 'static shared borrow is valid.
        let shared: &'static [u8] = unsafe { &*buf };
        let req = comm
            .process_at_rank(to as mpi::Rank)
            .immediate_send_with_tag(StaticScope, shared, tag as mpi::Tag);
        pending.push(PendingSend {
            req,
            buf,
            to,
            tag,
            coll,
        });
    }

    /// Polled receive of the next message from `from` with `tag` on `comm`; an error naming
    /// `from` once [`MpiComm::set_timeout`]'s time has passed with no message.
    fn recv_on(
        &self,
        comm: &SimpleCommunicator,
        what: &str,
        from: usize,
        tag: u32,
    ) -> Result<Vec<u8>> {
        let src = comm.process_at_rank(from as mpi::Rank);
        let start = Instant::now();
        let mut round = 0;
        loop {
            if let Some(matched) = src.immediate_matched_probe_with_tag(tag as mpi::Tag) {
                let (v, _status) = matched.matched_receive_vec::<u8>();
                return Ok(v);
            }
            if start.elapsed() >= self.timeout {
                return Err(Error::new(
                    format!("rank {}: {what} rank {from} tag {tag}", self.rank),
                    format!(
                        "no message from rank {from} after {:.1} s (timeout; is rank {from} alive and sending?)",
                        self.timeout.as_secs_f64()
                    ),
                ));
            }
            backoff(&mut round);
        }
    }

    /// Complete pending sends (only the all-reduce's if `only_coll`), up to the timeout;
    /// the error names the peers whose sends are still pending.
    fn wait_pending(&mut self, what: &str, only_coll: bool) -> Result<()> {
        let start = Instant::now();
        let mut round = 0;
        loop {
            self.progress_sends();
            let left: Vec<&PendingSend> = self
                .pending
                .iter()
                .filter(|p| p.coll || !only_coll)
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= self.timeout {
                let mut peers: Vec<usize> = left.iter().map(|p| p.to).collect();
                peers.sort_unstable();
                peers.dedup();
                let p = left[0];
                return Err(Error::new(
                    format!("rank {}: {what}", self.rank),
                    format!(
                        "{} sends not received after {:.1} s (timeout; first: to rank {} tag {}; peers {:?})",
                        left.len(),
                        self.timeout.as_secs_f64(),
                        p.to,
                        p.tag,
                        peers
                    ),
                ));
            }
            backoff(&mut round);
        }
    }

    /// The tree all-reduce of [`tree_allreduce`] (shared with [`super::ThreadComm`]) on
    /// [`MpiComm::coll`], chunk by chunk ([`REDUCE_CHUNK`] values), then completion of its
    /// sends.
    fn allreduce_with(&mut self, data: &mut [f64], combine: fn(&mut [f64], &[f64])) -> Result<()> {
        self.check_thread("allreduce")?;
        self.stats.collectives += 1;
        let t = std::time::Instant::now();
        let (rank, size) = (self.rank, self.size);
        for part in data.chunks_mut(REDUCE_CHUNK) {
            tree_allreduce(self, rank, size, part, combine)?;
        }
        let r = self.wait_pending("allreduce: completing sends", true);
        self.stats.allreduce_ns += t.elapsed().as_nanos() as u64;
        r
    }
}

impl TreeLink for MpiComm {
    fn tree_send(&mut self, to: usize, phase: TreePhase, data: &[f64]) -> Result<()> {
        let tag = if phase == TreePhase::Reduce {
            TAG_REDUCE
        } else {
            TAG_RESULT
        };
        let coll = self
            .coll
            .as_ref()
            .expect("all-reduce communicator lives until drop");
        Self::post_send(
            &mut self.pending,
            coll,
            to,
            tag as u32,
            super::f64s_to_bytes(data),
            true,
        );
        Ok(())
    }

    fn tree_recv(&mut self, from: usize, phase: TreePhase) -> Result<Vec<f64>> {
        let tag = if phase == TreePhase::Reduce {
            TAG_REDUCE
        } else {
            TAG_RESULT
        };
        let coll = self
            .coll
            .as_ref()
            .expect("all-reduce communicator lives until drop");
        super::bytes_to_f64s(&self.recv_on(coll, "allreduce with", from, tag as u32)?)
    }
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn isend(&mut self, to: usize, tag: u32, data: Vec<u8>) -> Result<()> {
        self.check_peer("isend to", to, tag)?;
        if data.len() > Count::MAX as usize {
            return Err(Error::new(
                format!("rank {}: isend to rank {to}", self.rank),
                format!(
                    "{} bytes exceeds MPI's count limit of {} bytes per message",
                    data.len(),
                    Count::MAX
                ),
            ));
        }
        let n = data.len() as u64;
        Self::post_send(&mut self.pending, &world(), to, tag, data, false);
        self.stats.bytes_sent += n;
        self.stats.messages_sent += 1;
        Ok(())
    }

    fn recv(&mut self, from: usize, tag: u32) -> Result<Vec<u8>> {
        self.check_peer("recv from", from, tag)?;
        self.recv_on(&world(), "recv from", from, tag)
    }

    fn wait_sends(&mut self) -> Result<()> {
        self.check_thread("wait_sends")?;
        self.wait_pending("wait_sends", false)
    }

    fn allreduce_sum(&mut self, data: &mut [f64]) -> Result<()> {
        self.allreduce_with(data, sum_into)
    }

    fn allreduce_max(&mut self, data: &mut [f64]) -> Result<()> {
        self.allreduce_with(data, max_into)
    }

    fn gather(&mut self, data: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>> {
        self.check_thread("gather")?;
        self.stats.collectives += 1;
        if data.len() > Count::MAX as usize {
            return Err(Error::new(
                format!("rank {}: gather", self.rank),
                format!("{} bytes exceeds MPI's count limit", data.len()),
            ));
        }
        let w = world();
        let root = w.process_at_rank(0);
        let len = data.len() as Count;
        if self.rank != 0 {
            root.gather_into(&len);
            root.gather_varcount_into(&data[..]);
            return Ok(None);
        }
        let mut counts = vec![0 as Count; self.size];
        root.gather_into_root(&len, &mut counts[..]);
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total > Count::MAX as usize {
            // The others are already inside the second gather; this cannot be recovered.
            return Err(Error::new(
                "rank 0: gather",
                format!("{total} bytes in all exceeds MPI's count limit"),
            ));
        }
        let displs: Vec<Count> = counts
            .iter()
            .scan(0 as Count, |acc, &c| {
                let d = *acc;
                *acc += c;
                Some(d)
            })
            .collect();
        let mut buf = vec![0u8; total];
        {
            let mut part = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
            root.gather_varcount_into_root(&data[..], &mut part);
        }
        Ok(Some(
            counts
                .iter()
                .zip(&displs)
                .map(|(&c, &d)| buf[d as usize..(d + c) as usize].to_vec())
                .collect(),
        ))
    }

    fn barrier(&mut self) -> Result<()> {
        self.check_thread("barrier")?;
        self.stats.collectives += 1;
        let mut req = world().immediate_barrier();
        let start = Instant::now();
        let mut round = 0;
        loop {
            match req.test() {
                Ok(_) => return Ok(()),
                Err(r) => req = r,
            }
            if start.elapsed() >= self.timeout {
                // The request can never be completed now; forget it rather than panic.
                std::mem::forget(req);
                return Err(Error::new(
                    format!("rank {}: barrier", self.rank),
                    format!(
                        "not all ranks arrived after {:.1} s (timeout)",
                        self.timeout.as_secs_f64()
                    ),
                ));
            }
            backoff(&mut round);
        }
    }

    fn stats(&self) -> CommStats {
        self.stats
    }
}

/// How long a rank that aborts the job waits, after flushing its output, for the launcher
/// to forward that output: MPICH's hydra kills the other ranks and may drop lines still in
/// flight once `MPI_Abort` is called.
pub const ABORT_GRACE: Duration = Duration::from_millis(250);

/// Flush this rank's standard streams, wait [`ABORT_GRACE`], then `MPI_Abort` the world.
fn abort_world(code: i32) -> ! {
    finish_rank_watch();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::thread::sleep(ABORT_GRACE);
    world().abort(code)
}

impl Drop for MpiComm {
    /// Completes outstanding sends (up to the timeout) before MPI is finalised; sends that
    /// still have not completed are leaked, never freed under MPI's feet. Dropped while
    /// the thread panics, it aborts the job instead (exit code 101, as for a Rust panic):
    /// finalising would let this rank exit quietly and leave the others blocked.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("rank {}: panicked; aborting the MPI job", self.rank);
            abort_world(101);
        }
        if !self.pending.is_empty() && self.check_thread("drop").is_ok() {
            let _ = self.wait_sends();
        }
        for p in self.pending.drain(..) {
            std::mem::forget(p.req);
            // `p.buf` is deliberately leaked: MPI may still read it.
        }
        drop(self.coll.take()); // MPI_Comm_free, which must come before MPI_Finalize
        drop(self.universe.take());
        finish_rank_watch();
    }
}
