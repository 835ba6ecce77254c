//! A rank's figures of a run (memory, seconds, traffic) as named fields, reduced over the
//! job's ranks into the result's attributes (docs/format.md).

use crate::comm::{Comm, CommStats};
use crate::error::Result;
use crate::tiling::RankPlan;

/// Declares [`RankFigures`] with its fields in one list, so that the all-reduce's flat
/// array and the names cannot drift apart.
macro_rules! rank_figures {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// One rank's figures for the result's attributes (docs/format.md), by name; the
        /// job's maximum and sum over ranks come from one all-reduce each
        /// ([`RankFigures::reduced`]). Seconds and traffic cover the iteration loop only;
        /// "per iteration" figures of seconds leave out the first iteration (warm-up) when
        /// there are more.
        #[derive(Debug, Clone, Copy, Default, PartialEq)]
        pub struct RankFigures {
            $($(#[doc = $doc])* pub $name: f64,)*
        }

        impl RankFigures {
            /// The fields in declaration order (for one all-reduce).
            fn to_vec(self) -> Vec<f64> {
                vec![$(self.$name),*]
            }

            /// The inverse of [`RankFigures::to_vec`].
            fn from_slice(a: &[f64]) -> Self {
                let mut it = a.iter().copied();
                RankFigures { $($name: it.next().unwrap_or(0.0),)* }
            }
        }
    };
}

rank_figures! {
    /// Bytes of the rank's measured patterns.
    measurement_bytes,
    /// Bytes of the rank's object and gradient buffers (its field).
    field_bytes,
    /// Peak resident memory of the process (bytes).
    peak_rss_bytes,
    /// Seconds computing over the loop.
    compute_s,
    /// Seconds in communication work over the loop.
    comm_s,
    /// Seconds blocked over the loop.
    wait_s,
    /// Seconds computing per steady iteration.
    compute_s_per_it,
    /// Seconds in communication work per steady iteration.
    comm_s_per_it,
    /// Seconds blocked per steady iteration.
    wait_s_per_it,
    /// Point-to-point bytes sent by the rank over the whole run.
    bytes_sent,
    /// Point-to-point messages sent by the rank over the whole run.
    messages_sent,
    /// Messages per iteration of the loop.
    messages_per_it,
    /// Bytes per iteration of the loop.
    bytes_per_it,
    /// All-reduce seconds per iteration of the loop.
    allreduce_s_per_it,
    /// All-reduces per iteration of the loop.
    allreduces_per_it,
    /// Halo peers (ranks the rank sends to or receives from).
    peers,
}

impl RankFigures {
    /// This rank's figures after the iterations whose [compute, comm, wait] seconds are
    /// `split` (one entry per iteration run), from the counters `before` the loop and
    /// `after` it, for a rank holding `bytes` = (patterns, field buffers) ([`super::rank_bytes`]).
    pub fn of_loop(
        bytes: (u64, u64),
        split: &[[f64; 3]],
        before: CommStats,
        after: CommStats,
        rp: &RankPlan,
    ) -> Self {
        let its = split.len().max(1) as f64;
        let peers = rp
            .sends
            .iter()
            .chain(&rp.recvs)
            .map(|t| t.peer)
            .collect::<std::collections::BTreeSet<_>>()
            .len() as f64;
        // steady state: leave out the first iteration (warm-up) when there are more
        let skip = usize::from(split.len() > 1);
        let steady = (split.len() - skip).max(1) as f64;
        let per_it = |q: usize| split[skip..].iter().map(|v| v[q]).sum::<f64>() / steady;
        let total = |q: usize| split.iter().map(|v| v[q]).sum::<f64>();
        RankFigures {
            measurement_bytes: bytes.0 as f64,
            field_bytes: bytes.1 as f64,
            peak_rss_bytes: peak_rss_bytes().unwrap_or(0) as f64,
            compute_s: total(0),
            comm_s: total(1),
            wait_s: total(2),
            compute_s_per_it: per_it(0),
            comm_s_per_it: per_it(1),
            wait_s_per_it: per_it(2),
            bytes_sent: after.bytes_sent as f64,
            messages_sent: after.messages_sent as f64,
            messages_per_it: (after.messages_sent - before.messages_sent) as f64 / its,
            bytes_per_it: (after.bytes_sent - before.bytes_sent) as f64 / its,
            allreduce_s_per_it: (after.allreduce_ns - before.allreduce_ns) as f64 * 1e-9 / its,
            allreduces_per_it: (after.collectives - before.collectives) as f64 / its,
            peers,
        }
    }

    /// (maximum, sum) of every figure over the ranks of `c` (collective).
    ///
    /// Errors: a failed peer or transport.
    pub fn reduced(self, c: &mut dyn Comm) -> Result<(Self, Self)> {
        let (mut mx, mut sum) = (self.to_vec(), self.to_vec());
        c.allreduce_max(&mut mx)?;
        c.allreduce_sum(&mut sum)?;
        Ok((Self::from_slice(&mx), Self::from_slice(&sum)))
    }
}

/// The result's attributes of the reduced figures (maximum `mx` and sum `tot` over `nr`
/// ranks; docs/format.md names them).
pub fn attributes(mx: &RankFigures, tot: &RankFigures, nr: f64) -> Vec<(String, f64)> {
    [
        ("measurement_bytes_max_rank", mx.measurement_bytes),
        ("measurement_bytes_total", tot.measurement_bytes),
        ("object_gradient_bytes_max_rank", mx.field_bytes),
        ("peak_rss_bytes_max_process", mx.peak_rss_bytes),
        ("messages_per_iteration_max_rank", mx.messages_per_it),
        ("messages_per_iteration_mean_rank", tot.messages_per_it / nr),
        ("bytes_per_iteration_max_rank", mx.bytes_per_it),
        ("bytes_per_iteration_mean_rank", tot.bytes_per_it / nr),
        ("peers_max_rank", mx.peers),
        ("peers_mean_rank", tot.peers / nr),
        ("allreduce_s_per_iteration_max_rank", mx.allreduce_s_per_it),
        (
            "allreduce_s_per_iteration_mean_rank",
            tot.allreduce_s_per_it / nr,
        ),
        ("allreduces_per_iteration", mx.allreduces_per_it),
        ("compute_s_max_rank", mx.compute_s),
        ("wait_s_max_rank", mx.wait_s),
        ("comm_s_max_rank", mx.comm_s),
        ("compute_s_per_iteration_max_rank", mx.compute_s_per_it),
        ("comm_s_per_iteration_max_rank", mx.comm_s_per_it),
        ("wait_s_per_iteration_max_rank", mx.wait_s_per_it),
        (
            "compute_s_per_iteration_mean_rank",
            tot.compute_s_per_it / nr,
        ),
        ("comm_s_per_iteration_mean_rank", tot.comm_s_per_it / nr),
        ("wait_s_per_iteration_mean_rank", tot.wait_s_per_it / nr),
        ("halo_bytes_sent_total", tot.bytes_sent),
        ("halo_messages_sent_total", tot.messages_sent),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect()
}

/// Peak resident memory of this process in bytes (VmHWM), if the OS tells.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::RankFigures;

    #[test]
    fn figures_survive_the_flat_array_in_order() {
        let mut f = RankFigures::default();
        let v: Vec<f64> = (0..f.to_vec().len()).map(|i| i as f64 + 0.5).collect();
        f = RankFigures::from_slice(&v);
        assert_eq!(f.measurement_bytes, 0.5);
        assert_eq!(f.peers, v[v.len() - 1]);
        assert_eq!(f.to_vec(), v);
    }
}
