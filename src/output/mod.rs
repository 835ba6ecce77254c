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

/// TEMPORARY until the HDF5 writer lands.
pub fn write_result(_path: &std::path::Path, _r: &ReconResult, _png: bool) -> crate::Result<Vec<std::path::PathBuf>> {
    Ok(vec![])
}

/// Temporary name beside `path` for atomic writes: `.<name>.tmp-<pid>`.
pub fn temp_path(path: &std::path::Path) -> std::path::PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Write `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> crate::Result<()> {
    use crate::error::Context;
    use std::io::Write;
    let tmp = temp_path(path);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.ctx(|| path.display().to_string())
}
