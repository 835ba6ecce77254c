//! Stop and checkpoint requests that the iteration loop reads at its boundaries
//! ([`StopFlags`]); `cli::signals` sets them from SIGTERM, SIGINT and SIGUSR1.

use std::sync::atomic::{AtomicBool, Ordering};

/// Requests from signals (or from a caller that sets them directly).
#[derive(Debug, Default)]
pub struct StopFlags {
    /// SIGTERM: checkpoint at the next iteration boundary, then stop.
    pub stop: AtomicBool,
    /// SIGUSR1: checkpoint at the next iteration boundary, then continue (cleared once taken).
    pub checkpoint: AtomicBool,
    /// Set by the driver while the iteration loop runs, and kept once the ranks agreed to
    /// stop (a launcher forwards one SIGTERM to every rank, and a rank's copy may arrive
    /// after the others' copies already stopped it): only then does a first SIGTERM or
    /// SIGINT wait for the next iteration boundary instead of ending the process.
    pub in_loop: AtomicBool,
}

impl StopFlags {
    /// Both flags clear.
    pub const fn new() -> StopFlags {
        StopFlags {
            stop: AtomicBool::new(false),
            checkpoint: AtomicBool::new(false),
            in_loop: AtomicBool::new(false),
        }
    }

    /// This rank's view, as numbers for an all-reduce (max): [stop, checkpoint]. Takes the
    /// checkpoint request (clears it), so one SIGUSR1 gives one checkpoint.
    pub fn take(&self) -> [f64; 2] {
        let stop = self.stop.load(Ordering::SeqCst);
        let ck = self.checkpoint.swap(false, Ordering::SeqCst);
        [stop as u8 as f64, ck as u8 as f64]
    }
}

/// Marks the iteration loop for the signal handling ([`StopFlags::in_loop`]) while it is
/// alive; clears the mark when dropped unless [`InLoop::keep`] was called.
pub(crate) struct InLoop<'a>(Option<&'a StopFlags>);

impl<'a> InLoop<'a> {
    /// Set `in_loop` (when there are flags).
    pub(crate) fn enter(flags: Option<&'a StopFlags>) -> Self {
        InLoop(flags.inspect(|s| s.in_loop.store(true, Ordering::SeqCst)))
    }

    /// Leave `in_loop` set after the guard is gone (the ranks agreed to stop).
    pub(crate) fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for InLoop<'_> {
    fn drop(&mut self) {
        self.0.inspect(|s| s.in_loop.store(false, Ordering::SeqCst));
    }
}
