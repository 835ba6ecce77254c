//! In-process ranks: each rank is a thread and messages are moved (not copied) through
//! crossbeam channels: one inbox per rank, each message tagged with its source, so a
//! rank holds O(1) channels (R² pairwise channels took ~0.5 MB per rank at 1024 ranks).
//!
//! Failure handling: [`run_threads`] catches each rank's error or panic, sets a shared abort
//! flag, and every other rank blocked in a receive notices it within [`POLL`] and returns an
//! error. The launcher then reports the first rank that failed on its own account.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};

use super::{
    max_into, sum_into, tree_allreduce, Comm, CommStats, TreeLink, TreePhase, DEFAULT_TIMEOUT,
    MAX_TAG,
};
use crate::error::{Error, Result};

/// How often a blocked receive wakes up to look at the abort flag.
pub const POLL: Duration = Duration::from_millis(50);

/// Tag space: user tags are `u32`; collectives use a separate internal space so they never
/// match a user receive.
type Key = (bool, u32);
/// What travels through an inbox: source rank, key, payload.
type Message = (usize, Key, Vec<u8>);
const INTERNAL_REDUCE: Key = (true, 1);
const INTERNAL_RESULT: Key = (true, 2);
const INTERNAL_GATHER: Key = (true, 3);
const INTERNAL_BARRIER: Key = (true, 4);

const NO_RANK: usize = usize::MAX;

/// State shared by all ranks of one [`run_threads`] call.
struct Shared {
    /// Set once any rank has failed; blocked receives then return an error.
    abort: AtomicBool,
    /// The first rank that failed on its own account (not because of the abort).
    first_failed: AtomicUsize,
    /// Ranks whose last error was a consequence of another rank's failure.
    consequential: Vec<AtomicBool>,
    /// Ranks whose communicator is gone (their thread ended): a receive from them that
    /// finds nothing fails instead of waiting for the timeout.
    ended: Vec<AtomicBool>,
}

/// One rank of an in-process job; created only by [`run_threads`].
pub struct ThreadComm {
    rank: usize,
    size: usize,
    /// `to[d]` sends to rank d's inbox.
    to: Vec<Sender<Message>>,
    /// This rank's inbox: (source rank, key, payload).
    inbox: Receiver<Message>,
    /// Messages that arrived (from a source, with a key) while a receive waited for another.
    pending: HashMap<(usize, Key), VecDeque<Vec<u8>>>,
    timeout: Duration,
    stats: CommStats,
    shared: Arc<Shared>,
}

impl Drop for ThreadComm {
    fn drop(&mut self) {
        self.shared.ended[self.rank].store(true, Ordering::SeqCst);
    }
}

impl ThreadComm {
    /// Change how long [`Comm::recv`] and the collectives wait for a peer (default 120 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn check_tag(&self, peer: usize, tag: u32) -> Result<()> {
        if tag > MAX_TAG {
            return Err(Error::new(
                format!("message with rank {peer}"),
                format!("tag {tag} above {MAX_TAG}, the largest MPI guarantees"),
            ));
        }
        Ok(())
    }

    fn what(&self, peer: usize, key: Key) -> String {
        if key.0 {
            format!("collective with rank {peer}")
        } else {
            format!("recv from rank {peer} tag {}", key.1)
        }
    }

    /// An error caused by another rank's failure; marked so the launcher reports the cause.
    fn consequential(&self, what: String, msg: String) -> Error {
        self.shared.consequential[self.rank].store(true, Ordering::SeqCst);
        Error::new(what, msg)
    }

    fn aborted(&self, what: String) -> Error {
        let failed = self.shared.first_failed.load(Ordering::SeqCst);
        let msg = if failed == NO_RANK {
            "job aborted because another rank failed".to_string()
        } else {
            format!("job aborted because rank {failed} failed")
        };
        self.consequential(what, msg)
    }

    fn send_key(&mut self, to: usize, key: Key, data: Vec<u8>) -> Result<()> {
        if to >= self.size {
            return Err(Error::new(
                format!("send to rank {to}"),
                format!("no such rank (job has {} ranks)", self.size),
            ));
        }
        if self.to[to].send((self.rank, key, data)).is_err() {
            let what = format!("send to rank {to}");
            if self.shared.abort.load(Ordering::SeqCst) {
                return Err(self.aborted(what));
            }
            return Err(self.consequential(what, format!("rank {to} has already ended")));
        }
        Ok(())
    }

    fn recv_key(&mut self, from: usize, key: Key) -> Result<Vec<u8>> {
        if from >= self.size {
            return Err(Error::new(
                self.what(from, key),
                format!("no such rank (job has {} ranks)", self.size),
            ));
        }
        if let Some(d) = self
            .pending
            .get_mut(&(from, key))
            .and_then(|q| q.pop_front())
        {
            return Ok(d);
        }
        let start = Instant::now();
        loop {
            match self.inbox.recv_timeout(POLL) {
                Ok((s, k, d)) if s == from && k == key => return Ok(d),
                Ok((s, k, d)) => self.pending.entry((s, k)).or_default().push_back(d),
                Err(RecvTimeoutError::Timeout) => {
                    if self.shared.abort.load(Ordering::SeqCst) {
                        return Err(self.aborted(self.what(from, key)));
                    }
                    if self.shared.ended[from].load(Ordering::SeqCst) {
                        // its sends happened before it ended: take what is in the inbox now
                        while let Ok((s, k, d)) = self.inbox.try_recv() {
                            if s == from && k == key {
                                return Ok(d);
                            }
                            self.pending.entry((s, k)).or_default().push_back(d);
                        }
                        return Err(self.consequential(
                            self.what(from, key),
                            format!("rank {from} ended without sending the message"),
                        ));
                    }
                    if start.elapsed() >= self.timeout {
                        return Err(Error::new(
                            self.what(from, key),
                            format!(
                                "no message from rank {from} after {:.1} s (timeout)",
                                self.timeout.as_secs_f64()
                            ),
                        ));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    if self.shared.abort.load(Ordering::SeqCst) {
                        return Err(self.aborted(self.what(from, key)));
                    }
                    return Err(self.consequential(
                        self.what(from, key),
                        format!("rank {from} ended without sending the message"),
                    ));
                }
            }
        }
    }

    /// Gather every rank's bytes on rank 0 (rank order), under `key`.
    fn gather_key(&mut self, key: Key, data: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>> {
        if self.rank != 0 {
            self.send_key(0, key, data)?;
            return Ok(None);
        }
        let mut all = Vec::with_capacity(self.size);
        all.push(data);
        for r in 1..self.size {
            all.push(self.recv_key(r, key)?);
        }
        Ok(Some(all))
    }

    /// The tree all-reduce shared with [`super::MpiComm`] ([`tree_allreduce`]), over this
    /// transport's channels: same order of combination, so bit-identical results.
    fn allreduce_with(&mut self, data: &mut [f64], combine: fn(&mut [f64], &[f64])) -> Result<()> {
        self.stats.collectives += 1;
        let t = std::time::Instant::now();
        let (rank, size) = (self.rank, self.size);
        let r = tree_allreduce(self, rank, size, data, combine);
        self.stats.allreduce_ns += t.elapsed().as_nanos() as u64;
        r
    }
}

impl TreeLink for ThreadComm {
    fn tree_send(&mut self, to: usize, phase: TreePhase, data: &[f64]) -> Result<()> {
        let key = if phase == TreePhase::Reduce {
            INTERNAL_REDUCE
        } else {
            INTERNAL_RESULT
        };
        self.send_key(to, key, super::f64s_to_bytes(data))
    }

    fn tree_recv(&mut self, from: usize, phase: TreePhase) -> Result<Vec<f64>> {
        let key = if phase == TreePhase::Reduce {
            INTERNAL_REDUCE
        } else {
            INTERNAL_RESULT
        };
        super::bytes_to_f64s(&self.recv_key(from, key)?)
    }
}

impl Comm for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn isend(&mut self, to: usize, tag: u32, data: Vec<u8>) -> Result<()> {
        self.check_tag(to, tag)?;
        let n = data.len() as u64;
        self.send_key(to, (false, tag), data)?;
        self.stats.bytes_sent += n;
        self.stats.messages_sent += 1;
        Ok(())
    }

    fn recv(&mut self, from: usize, tag: u32) -> Result<Vec<u8>> {
        self.check_tag(from, tag)?;
        self.recv_key(from, (false, tag))
    }

    /// Channel sends complete at once; nothing to wait for.
    fn wait_sends(&mut self) -> Result<()> {
        Ok(())
    }

    fn allreduce_sum(&mut self, data: &mut [f64]) -> Result<()> {
        self.allreduce_with(data, sum_into)
    }

    fn allreduce_max(&mut self, data: &mut [f64]) -> Result<()> {
        self.allreduce_with(data, max_into)
    }

    fn gather(&mut self, data: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>> {
        self.stats.collectives += 1;
        self.gather_key(INTERNAL_GATHER, data)
    }

    fn barrier(&mut self) -> Result<()> {
        self.stats.collectives += 1;
        if self.gather_key(INTERNAL_BARRIER, Vec::new())?.is_some() {
            for r in 1..self.size {
                self.send_key(r, INTERNAL_BARRIER, Vec::new())?;
            }
        } else {
            self.recv_key(0, INTERNAL_BARRIER)?;
        }
        Ok(())
    }

    fn stats(&self) -> CommStats {
        self.stats
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Run `f` on `n` ranks, each a thread with its own [`ThreadComm`], and return the ranks'
/// results in rank order.
///
/// If any rank returns an error or panics, the others' blocked receives fail within
/// [`POLL`], and the result is an error naming the first rank that failed on its own
/// account: `rank 2: <its message>` or `rank 2 panicked: <payload>`. Errors that ranks
/// return only because of that failure are not reported. Ranks may use rayon inside.
pub fn run_threads<T: Send>(
    n: usize,
    f: impl Fn(ThreadComm) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    if n == 0 {
        return Err(Error::new("run_threads", "need at least one rank"));
    }
    let shared = Arc::new(Shared {
        abort: AtomicBool::new(false),
        first_failed: AtomicUsize::new(NO_RANK),
        consequential: (0..n).map(|_| AtomicBool::new(false)).collect(),
        ended: (0..n).map(|_| AtomicBool::new(false)).collect(),
    });
    // one inbox per rank; every rank holds a sender to each inbox
    let (senders, inboxes): (Vec<Sender<Message>>, Vec<Receiver<Message>>) =
        (0..n).map(|_| unbounded()).unzip();
    let comms: Vec<ThreadComm> = inboxes
        .into_iter()
        .enumerate()
        .map(|(rank, inbox)| ThreadComm {
            rank,
            size: n,
            to: senders.clone(),
            inbox,
            pending: HashMap::new(),
            timeout: DEFAULT_TIMEOUT,
            stats: CommStats::default(),
            shared: shared.clone(),
        })
        .collect();

    // Per rank: Ok(value) or the error to report.
    let failures: Mutex<Vec<(usize, Error)>> = Mutex::new(Vec::new());
    let f = &f;
    let results: Vec<Option<T>> = std::thread::scope(|scope| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let rank = comm.rank;
                let shared = shared.clone();
                let failures = &failures;
                std::thread::Builder::new()
                    .name(format!("rank-{rank}"))
                    .spawn_scoped(scope, move || {
                        let outcome = catch_unwind(AssertUnwindSafe(|| f(comm)));
                        let err = match outcome {
                            Ok(Ok(v)) => return Some(v),
                            Ok(Err(e)) => Error::new(format!("rank {rank}"), e.to_string()),
                            Err(p) => {
                                Error::new(format!("rank {rank} panicked"), panic_message(&*p))
                            }
                        };
                        if !shared.consequential[rank].load(Ordering::SeqCst) {
                            let _ = shared.first_failed.compare_exchange(
                                NO_RANK,
                                rank,
                                Ordering::SeqCst,
                                Ordering::SeqCst,
                            );
                        }
                        shared.abort.store(true, Ordering::SeqCst);
                        failures
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((rank, err));
                        None
                    })
                    .expect("spawn rank thread")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(None))
            .collect()
    });

    let failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    if !failures.is_empty() {
        let first = shared.first_failed.load(Ordering::SeqCst);
        let chosen = failures
            .iter()
            .find(|(r, _)| *r == first)
            .or_else(|| failures.first())
            .map(|(_, e)| e.clone())
            .expect("non-empty");
        return Err(chosen);
    }
    Ok(results
        .into_iter()
        .map(|v| v.expect("every rank succeeded"))
        .collect())
}
