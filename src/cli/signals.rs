//! What schedulers send before the time limit: SIGTERM (checkpoint, then stop with
//! [`EXIT_CHECKPOINTED`]) and SIGUSR1 (checkpoint, then continue).
//!
//! Inside the iteration loop the signals only set flags; the driver reads them at each
//! iteration boundary and all-reduces them (maximum), so that every rank checkpoints at the
//! same boundary even when the signal reached only some processes, or reached them at
//! different times. SIGINT (Ctrl-C) there acts like SIGTERM. Outside the loop (start-up,
//! a blocking open, the result write), and for a second SIGTERM or SIGINT, the process
//! removes its temporary files and ends at once with exit code 128 + the signal number
//! (143 for SIGTERM, 130 for SIGINT); see [`install`].

use crate::error::{Context, Result};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

/// Exit code of a run stopped by SIGTERM after writing a complete checkpoint (resume it
/// with `ptytile reconstruct CONFIG --resume DIR`).
pub const EXIT_CHECKPOINTED: i32 = 3;

/// Exit code of a second SIGTERM, which ends the process without a checkpoint.
pub const EXIT_SECOND_SIGTERM: i32 = 128 + 15;

pub use crate::driver::StopFlags;

static FLAGS: StopFlags = StopFlags::new();
static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();

/// Exit code of SIGINT outside the iteration loop, or of a second one (128 + 2).
pub const EXIT_SIGINT: i32 = 128 + 2;

/// Install the SIGTERM, SIGINT and SIGUSR1 handling (once per process) and return the flags
/// it sets. A thread waits for the signals: SIGUSR1 sets [`StopFlags::checkpoint`]; the first
/// SIGTERM or SIGINT while the iteration loop runs ([`StopFlags::in_loop`]) sets
/// [`StopFlags::stop`] (checkpoint, then stop); any other SIGTERM or SIGINT (during start-up,
/// a blocking open or receive, the result write, or a second one) removes this process's
/// temporary files and ends it at once with 128 + the signal number.
///
/// Errors: the OS refused a handler.
pub fn install() -> Result<&'static StopFlags> {
    INSTALLED
        .get_or_init(|| {
            use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
            let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGUSR1])
                .map_err(|e| e.to_string())?;
            std::thread::Builder::new()
                .name("ptytile-signals".into())
                .spawn(move || {
                    for sig in signals.forever() {
                        if sig == SIGUSR1 {
                            FLAGS.checkpoint.store(true, Ordering::SeqCst);
                            continue;
                        }
                        if FLAGS.in_loop.load(Ordering::SeqCst)
                            && !FLAGS.stop.swap(true, Ordering::SeqCst)
                        {
                            continue;
                        }
                        crate::output::safety::remove_registered_temps();
                        signal_hook::low_level::exit(128 + sig);
                    }
                })
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .clone()
        .ctx(|| "signal handlers".to_string())?;
    Ok(&FLAGS)
}
