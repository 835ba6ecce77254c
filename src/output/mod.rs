//! Results out: the HDF5 result file (docs/format.md), PNG images beside it, and reading a
//! result back. Every file is written to a temporary name and renamed into place, so a
//! failed run never leaves a half-written output.

use crate::physics::model::Field;
use num_complex::Complex32;

/// A finished reconstruction, everything that goes into the result file.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconResult {
    /// The object O on the global object grid, [Ny, Nx] (y, x); `origin` is [0, 0].
    pub object: Field<Complex32>,
    /// Object pixel size (y, x) in m.
    pub pixel_size_m: [f64; 2],
    /// Probe modes [K, M, M] (mode, y, x), centred at [M/2, M/2], Σ|P|² in counts.
    pub probe: Vec<Complex32>,
    /// Number of probe modes K.
    pub modes: usize,
    /// Probe window side M (px).
    pub m: usize,
    /// Probe centres (y, x) in object pixel coordinates, [N].
    pub positions_px: Vec<[f64; 2]>,
    /// Loss per iteration (mean per diffraction pattern, before that iteration's update).
    pub loss: Vec<f64>,
    /// The full configuration used, as TOML.
    pub config_toml: String,
    /// Further scalar attributes of the root group (name, value), e.g. timings.
    pub attrs: Vec<(String, f64)>,
}
