//! Rank-to-rank communication.
//!
//! Engines see only the [`Comm`] trait; each transport implements it once:
//! [`ThreadComm`] (ranks are threads of one process, started by [`run_threads`]) and
//! [`MpiComm`] (ranks are MPI processes started by `mpirun`/`srun`/`jsrun`).
//!
//! Every payload is a byte vector; float buffers travel as their raw in-memory bytes
//! (native endianness — all ranks of one job run on the same architecture), converted with
//! [`f32s_to_bytes`]/[`bytes_to_f32s`] and friends. All sizes reported here are in bytes.

pub mod mpi;
pub mod threads;

use std::time::Duration;

use num_complex::Complex32;

use crate::error::{Error, Result};

pub use self::mpi::{launcher_env, LaunchInfo, MpiComm};
pub use self::threads::{run_threads, ThreadComm};

/// How long a blocking call waits for a peer before giving up with an error naming it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest tag accepted by every transport: 32767, the least `MPI_TAG_UB` MPI guarantees.
/// Enforced by [`ThreadComm`] too, so code that runs on threads also runs under MPI.
pub const MAX_TAG: u32 = 32767;

/// Counters of what one rank has sent so far (for scaling figures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommStats {
    /// Payload bytes handed to [`Comm::isend`] (collectives not included).
    pub bytes_sent: u64,
    /// Number of [`Comm::isend`] calls (collectives not included).
    pub messages_sent: u64,
    /// Number of collective calls (all-reduce, gather, barrier) this rank took part in.
    pub collectives: u64,
    /// Nanoseconds this rank spent inside all-reduces (waiting for peers included).
    pub allreduce_ns: u64,
}

/// Rank-to-rank communication. One implementation per transport; engines see only this.
///
/// All calls are made by the rank that owns the value (`&mut self`); collectives must be
/// called by every rank in the same order, as in MPI.
pub trait Comm: Send {
    /// This rank's index, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks in the job.
    fn size(&self) -> usize;
    /// Non-blocking send of `data` (bytes) to rank `to` with `tag`: returns once the
    /// message is handed to the transport, which owns the buffer from then on. Messages
    /// between one pair of ranks with one tag arrive in the order they were sent.
    /// Sending to oneself is allowed.
    fn isend(&mut self, to: usize, tag: u32, data: Vec<u8>) -> Result<()>;
    /// Blocking receive of the next message from rank `from` with `tag`. Messages with
    /// other tags that arrive meanwhile are kept for later receives. Returns an [`Error`]
    /// naming the peer rank — never hangs — if a peer rank failed, or when the timeout
    /// (default [`DEFAULT_TIMEOUT`], see `set_timeout` on each transport) passes with no
    /// matching message.
    fn recv(&mut self, from: usize, tag: u32) -> Result<Vec<u8>>;
    /// Complete all outstanding [`Comm::isend`]s. Call it at the end of each iteration
    /// (MPI needs it before send buffers can be released).
    fn wait_sends(&mut self) -> Result<()>;
    /// Element-wise sum over ranks, result on every rank. Deterministic: the sum is formed
    /// in the fixed binomial-tree order of [`tree_allreduce`], a function of the rank count
    /// only: the sum over ranks `a..b` is `sum(a..a+h) + sum(a+h..b)`, h the largest power of
    /// two below `b − a` (4 ranks: `(x0 + x1) + (x2 + x3)`; 5: `((x0 + x1) + (x2 + x3)) + x4`),
    /// in f64. So every rank gets bit-identical values regardless of timing, and the value
    /// does not depend on the transport. Every rank must pass the same length.
    fn allreduce_sum(&mut self, data: &mut [f64]) -> Result<()>;
    /// Element-wise maximum over ranks, result on every rank, combined in the same tree
    /// order as [`Comm::allreduce_sum`]. A NaN on any rank makes that element NaN everywhere
    /// (divergence is not hidden).
    fn allreduce_max(&mut self, data: &mut [f64]) -> Result<()>;
    /// Variable-size gather to rank 0: `Some(v)` with `v[r]` = rank r's bytes on rank 0,
    /// `None` on every other rank.
    fn gather(&mut self, data: Vec<u8>) -> Result<Option<Vec<Vec<u8>>>>;
    /// Returns once every rank has entered the barrier.
    fn barrier(&mut self) -> Result<()>;
    /// Bytes and messages sent so far by this rank.
    fn stats(&self) -> CommStats;
}

/// Which half of [`tree_allreduce`] a message belongs to (transports may give each its own tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TreePhase {
    /// Partial results travelling up the tree towards rank 0.
    Reduce,
    /// The final result travelling down from rank 0.
    Broadcast,
}

/// The point-to-point messages [`tree_allreduce`] needs from a transport. Payloads are f64
/// values; `tree_recv` returns the values the peer sent (their count is checked by
/// [`tree_allreduce`]) or an error naming the peer rank, and must never block forever (a
/// dead or silent peer gives an error, as [`Comm::recv`]).
pub(crate) trait TreeLink {
    fn tree_send(&mut self, to: usize, phase: TreePhase, data: &[f64]) -> Result<()>;
    fn tree_recv(&mut self, from: usize, phase: TreePhase) -> Result<Vec<f64>>;
}

/// [`TreeLink::tree_recv`] of exactly `n` values: a peer that passed another length is an
/// error naming it.
fn tree_recv_n(
    link: &mut dyn TreeLink,
    from: usize,
    phase: TreePhase,
    n: usize,
) -> Result<Vec<f64>> {
    let v = link.tree_recv(from, phase)?;
    if v.len() != n {
        return Err(Error::new(
            format!("allreduce with rank {from}"),
            format!("rank {from} passed {} values, this rank {n}", v.len()),
        ));
    }
    Ok(v)
}

/// Deterministic all-reduce of `data` (f64, same length on every rank) over `size` ranks:
/// a binomial-tree reduce to rank 0 followed by a binomial-tree broadcast, the single
/// definition both transports use so their results agree bit for bit.
///
/// Reduce: for mask = 1, 2, 4, … a rank with `rank & mask != 0` sends its partial result to
/// `rank − mask` and is done; otherwise it receives the partial result of `rank + mask`
/// (if that rank exists) and combines `mine = combine(mine, theirs)` — lower ranks always on
/// the left. The result is therefore `T(0..size)` with `T(a..b) = T(a..a+h) ⊕ T(a+h..b)`,
/// h the largest power of two below `b − a`, `T(a..a+1) = x_a`: a function of `size` only,
/// never of message timing. Broadcast: rank r > 0 receives the result from
/// `r − lowbit(r)`, then sends it to `r + m` for m = lowbit(r)/2, …, 2, 1 (rank 0: m from
/// the largest power of two below `size` down to 1), largest subtree first.
///
/// Per rank: at most ⌈log2 size⌉ receives and one send going up, one receive and at most
/// ⌈log2 size⌉ sends coming down, each message `8 · data.len()` bytes; no rank buffers more
/// than one incoming message at a time.
pub(crate) fn tree_allreduce(
    link: &mut dyn TreeLink,
    rank: usize,
    size: usize,
    data: &mut [f64],
    combine: fn(&mut [f64], &[f64]),
) -> Result<()> {
    let mut mask = 1usize;
    while mask < size {
        if rank & mask != 0 {
            link.tree_send(rank - mask, TreePhase::Reduce, data)?;
            break;
        }
        if rank + mask < size {
            let theirs = tree_recv_n(link, rank + mask, TreePhase::Reduce, data.len())?;
            combine(data, &theirs);
        }
        mask <<= 1;
    }
    // Rank 0 is the root of subtrees of every size below `size`; rank r > 0 of lowbit(r).
    let top = if rank == 0 {
        size.next_power_of_two()
    } else {
        rank & rank.wrapping_neg()
    };
    if rank != 0 {
        let result = tree_recv_n(link, rank - top, TreePhase::Broadcast, data.len())?;
        data.copy_from_slice(&result);
    }
    let mut m = top >> 1;
    while m > 0 {
        if rank + m < size {
            link.tree_send(rank + m, TreePhase::Broadcast, data)?;
        }
        m >>= 1;
    }
    Ok(())
}

/// `acc[i] = acc[i] + other[i]` (acc holds the lower ranks' partial sum).
pub(crate) fn sum_into(acc: &mut [f64], other: &[f64]) {
    for (a, &x) in acc.iter_mut().zip(other) {
        *a += x;
    }
}

/// `acc[i] = max(acc[i], other[i])`, NaN if either is NaN; on ties (e.g. −0 and +0) the
/// lower ranks' value is kept.
pub(crate) fn max_into(acc: &mut [f64], other: &[f64]) {
    for (a, &x) in acc.iter_mut().zip(other) {
        if (x.is_nan() || x > *a) && !a.is_nan() {
            *a = x;
        }
    }
}

/// Copy raw bytes into a fresh, properly aligned vector of `T`.
fn from_bytes<T: bytemuck::Pod>(what: &str, bytes: &[u8]) -> Result<Vec<T>> {
    let elem = std::mem::size_of::<T>();
    if bytes.len() % elem != 0 {
        return Err(Error::new(
            what,
            format!(
                "{} bytes is not a whole number of {elem}-byte elements",
                bytes.len()
            ),
        ));
    }
    let mut v = vec![T::zeroed(); bytes.len() / elem];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
    Ok(v)
}

/// Raw bytes of an `f32` buffer (native endianness), 4 bytes per value.
pub fn f32s_to_bytes(v: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

/// `f32` values from raw bytes; errors if the length is not a multiple of 4.
/// Works for any alignment of `b`.
pub fn bytes_to_f32s(b: &[u8]) -> Result<Vec<f32>> {
    from_bytes("message as f32", b)
}

/// Raw bytes of an `f64` buffer (native endianness), 8 bytes per value.
pub fn f64s_to_bytes(v: &[f64]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

/// `f64` values from raw bytes; errors if the length is not a multiple of 8.
pub fn bytes_to_f64s(b: &[u8]) -> Result<Vec<f64>> {
    from_bytes("message as f64", b)
}

/// Raw bytes of a `Complex32` buffer (re, im interleaved), 8 bytes per value.
pub fn c32s_to_bytes(v: &[Complex32]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

/// `Complex32` values from raw bytes; errors if the length is not a multiple of 8.
pub fn bytes_to_c32s(b: &[u8]) -> Result<Vec<Complex32>> {
    from_bytes("message as complex64", b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let f = vec![1.5f32, -2.0, f32::MAX];
        assert_eq!(bytes_to_f32s(&f32s_to_bytes(&f)).unwrap(), f);
        let d = vec![1.5f64, -0.0, 1e300];
        assert_eq!(bytes_to_f64s(&f64s_to_bytes(&d)).unwrap(), d);
        let c = vec![Complex32::new(1.0, -2.0), Complex32::new(3.0, 4.0)];
        assert_eq!(bytes_to_c32s(&c32s_to_bytes(&c)).unwrap(), c);
        // Unaligned input still works.
        let mut b = vec![0u8];
        b.extend(f32s_to_bytes(&f));
        assert_eq!(bytes_to_f32s(&b[1..]).unwrap(), f);
        assert!(bytes_to_f32s(&[0u8; 5]).is_err());
        assert!(bytes_to_c32s(&[0u8; 12]).is_err());
    }

    #[test]
    fn max_propagates_nan() {
        let a = [1.0, f64::NAN, 3.0];
        let b = [2.0, 0.0, f64::NAN];
        let mut out = a;
        max_into(&mut out, &b);
        assert_eq!(out[0], 2.0);
        assert!(out[1].is_nan() && out[2].is_nan());
    }
}
