//! ptytile: ptychographic reconstruction with the object's gradient decomposed over tiles
//! (Wang et al., SC22, "Image Gradient Decomposition for Parallel and Memory-Efficient
//! Ptychographic Reconstruction").
//!
//! Modules, each importing only those listed before it:
//! `error`, `config` → `physics` (wavelengths, probe, forward model, FFT conventions) →
//! `tiling` (tiles, halos, exchange plan) → `comm` (threads, MPI) → `data` (read and
//! validate measurements into physics types) → `backend` (where arithmetic runs) →
//! `engine` (solvers) → `output` (HDF5, PNG) → `analysis` (comparison with a ground truth)
//! → `simulate` → `driver` (a job's set-up, resume, iteration loop, checkpoints and
//! metrics) → `cli`.
//!
//! Clippy runs in `make test` with `-D warnings`; four of its style lints are off for the
//! crate: `neg_cmp_op_on_partial_ord` (`!(x > 0.0)` is how the input checks reject NaN with
//! the bound), `needless_range_loop` (index loops over several arrays of the same shape are
//! the clearer form in the numerical kernels), `too_many_arguments` (kernels take their
//! buffers explicitly) and `type_complexity`.
#![allow(
    clippy::neg_cmp_op_on_partial_ord,
    clippy::needless_range_loop,
    clippy::too_many_arguments,
    clippy::type_complexity
)]

pub mod analysis;
pub mod backend;
pub mod cli;
pub mod comm;
pub mod config;
pub mod data;
pub mod driver;
pub mod engine;
pub mod error;
pub mod output;
pub mod physics;
pub mod simulate;
pub mod tiling;

pub use error::{Error, Result};
