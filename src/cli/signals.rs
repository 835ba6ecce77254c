//! What schedulers send before the time limit: SIGTERM (checkpoint, then stop with
//! [`EXIT_CHECKPOINTED`]) and SIGUSR1 (checkpoint, then continue).
//!
//! The handlers only set flags; the driver reads them at each iteration boundary and
//! all-reduces them (maximum), so that every rank checkpoints at the same boundary even
//! when the signal reached only some processes, or reached them at different times.
//! A second SIGTERM ends the process at once with exit code 143 (128 + 15).

use crate::error::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Exit code of a run stopped by SIGTERM after writing a complete checkpoint (resume it
/// with `ptytile reconstruct CONFIG --resume DIR`).
pub const EXIT_CHECKPOINTED: i32 = 3;

/// Exit code of a second SIGTERM, which ends the process without a checkpoint.
pub const EXIT_SECOND_SIGTERM: i32 = 128 + 15;

/// Requests from signals (or from a caller that sets them directly).
#[derive(Debug, Default)]
pub struct StopFlags {
    /// SIGTERM: checkpoint at the next iteration boundary, then stop.
    pub stop: AtomicBool,
    /// SIGUSR1: checkpoint at the next iteration boundary, then continue (cleared once taken).
    pub checkpoint: AtomicBool,
}

impl StopFlags {
    /// Both flags clear.
    pub const fn new() -> StopFlags {
        StopFlags { stop: AtomicBool::new(false), checkpoint: AtomicBool::new(false) }
    }

    /// This rank's view, as numbers for an all-reduce (max): [stop, checkpoint]. Takes the
    /// checkpoint request (clears it), so one SIGUSR1 gives one checkpoint.
    pub fn take(&self) -> [f64; 2] {
        let stop = self.stop.load(Ordering::SeqCst);
        let ck = self.checkpoint.swap(false, Ordering::SeqCst);
        [stop as u8 as f64, ck as u8 as f64]
    }
}

static FLAGS: StopFlags = StopFlags::new();
static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Install the SIGTERM and SIGUSR1 handlers (once per process) and return the flags they set.
///
/// Errors: the OS refused a handler.
pub fn install() -> Result<&'static StopFlags> {
    INSTALLED
        .get_or_init(|| {
            use signal_hook::consts::{SIGTERM, SIGUSR1};
            use signal_hook::flag;
            // The shutdown must be registered first: it fires only if an earlier SIGTERM
            // already set the flag.
            flag::register_conditional_shutdown(SIGTERM, EXIT_SECOND_SIGTERM, &FLAGS.stop)
                .and_then(|_| flag::register(SIGTERM, &FLAGS.stop))
                .and_then(|_| flag::register(SIGUSR1, &FLAGS.checkpoint))
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()
        .ctx(|| "signal handlers".to_string())?;
    Ok(&FLAGS)
}
