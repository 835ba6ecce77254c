//! ptytile: ptychographic reconstruction with the object's gradient decomposed over tiles
//! (Wang et al., SC22, "Image Gradient Decomposition for Parallel and Memory-Efficient
//! Ptychographic Reconstruction").
//!
//! Modules, each importing only those listed before it:
//! `error`, `config` → `physics` (wavelengths, probe, forward model, FFT conventions) →
//! `tiling` (tiles, halos, exchange plan) → `comm` (threads, MPI) → `data` (read and
//! validate measurements into physics types) → `backend` (where arithmetic runs) →
//! `engine` (solvers) → `output` (HDF5, PNG) → `analysis` (comparison with a ground truth)
//! → `simulate` → `cli`.

pub mod error;
pub mod config;
pub mod physics;
pub mod tiling;
pub mod comm;
pub mod data;
pub mod backend;
pub mod engine;
pub mod output;
pub mod analysis;
pub mod simulate;
pub mod cli;

pub use error::{Error, Result};
