//! Raw 4D-STEM arrays: intensities [Sy, Sx, Ky, Kx] (scan row, scan column, detector row,
//! detector column) in an HDF5 dataset (`data.intensities`) or a `.npy` file, recorded on a
//! raster scan whose step and rotation come from the config.
//!
//! Scan geometry (docs/format.md): pattern j = iy·Sx + ix (row-major) was recorded at
//! ```text
//! y = s·(ix·sin θ + iy·cos θ),   x = s·(ix·cos θ − iy·sin θ)
//! ```
//! in the frame of the diffraction patterns' rows (y) and columns (x), with step s
//! (`data.scan_step_m` or `data.scan_step_angstrom`) and θ = `data.scan_rotation_deg`. At
//! θ = 0 the fast scan axis runs along the pattern columns (+x) and the slow one along the
//! rows (+y); θ = 90° turns the fast axis to +y and the slow one to −x.

use super::npy::NpyArray;
use super::{
    check_numeric, check_patterns, dataset, experiment, object_grid, read_probe, to_pixels,
    DataFile, Meta, Source,
};
use crate::config::{Config, DataFormat};
use crate::error::{Error, Result};
use std::path::Path;

/// Probe positions (y, x) in m of a `sy` × `sx` raster with step `step_m` rotated by
/// `rotation_deg` (formula in the module docs), pattern order row-major.
pub fn scan_positions_m(sy: usize, sx: usize, step_m: f64, rotation_deg: f64) -> Vec<[f64; 2]> {
    let (s, c) = rotation_deg.to_radians().sin_cos();
    let mut p = Vec::with_capacity(sy * sx);
    for iy in 0..sy {
        for ix in 0..sx {
            let (u, v) = (ix as f64 * step_m, iy as f64 * step_m);
            p.push([u * s + v * c, u * c - v * s]);
        }
    }
    p
}

/// Open a 4D-STEM array: `file` is the opened HDF5 file, or `None` for a `.npy` file.
///
/// Errors (naming the file, dataset or key): no scan step given, a dataset that is not
/// rank 4 or not numeric, non-square or empty patterns, missing metadata.
pub(super) fn open(cfg: &Config, path: &Path, file: Option<hdf5::File>) -> Result<DataFile> {
    let pname = path.display().to_string();
    let step = match (cfg.data.scan_step_m, cfg.data.scan_step_angstrom) {
        (Some(m), _) => m,
        (None, Some(a)) => a * 1e-10,
        (None, None) => {
            return Err(Error::new("data.scan_step_m", "missing: a 4D-STEM array needs the scan step (data.scan_step_m or data.scan_step_angstrom)"))
        }
    };
    let (source, shape, what) = match file {
        Some(file) => {
            if cfg.data.intensities.is_empty() {
                return Err(Error::new(
                    "data.intensities",
                    "missing: HDF5 path of the [Sy, Sx, Ky, Kx] array",
                ));
            }
            let what = format!("{pname}:{}", cfg.data.intensities);
            let ds = dataset(&file, &pname, &cfg.data.intensities)?;
            check_numeric(&ds, &what)?;
            let shape = ds.shape();
            let sx = shape.get(1).copied().unwrap_or(0);
            (
                Source::Scan {
                    file,
                    dataset: cfg.data.intensities.clone(),
                    sx,
                },
                shape,
                what,
            )
        }
        None => {
            let a = NpyArray::open(path)?;
            let shape = a.shape.clone();
            (Source::Npy(a), shape, pname.clone())
        }
    };
    if shape.len() != 4 {
        return Err(Error::new(
            &what,
            format!("expected a 4D-STEM array [Sy, Sx, Ky, Kx], got shape {shape:?}"),
        ));
    }
    check_patterns(&what, &shape[2..])?;
    let (sy, sx, m) = (shape[0], shape[1], shape[2]);
    if sy * sx == 0 {
        return Err(Error::new(&what, format!("empty scan: shape {shape:?}")));
    }
    let (meta_file, probe_file) = match &source {
        Source::Scan { file, .. } => (Some(file), Some(file)),
        _ => (None, None),
    };
    let meta = Meta {
        file: meta_file,
        pname: &pname,
        intensities: &cfg.data.intensities,
    };
    let (experiment, experiment_keys) = experiment(&cfg.experiment, &meta, m)?;
    let pm = scan_positions_m(sy, sx, step, cfg.data.scan_rotation_deg);
    let (centres, object_shape) = object_grid(&to_pixels(&pm, &experiment), m)
        .map_err(|msg| Error::new("data.scan_step_m", msg))?;
    let initial_probe = match (&cfg.data.probe, probe_file) {
        (None, _) => None,
        (Some(p), Some(f)) => Some(read_probe(f, &pname, p, m)?),
        (Some(_), None) => {
            return Err(Error::new(
                "data.probe",
                "an initial probe cannot be read from a .npy file (use data.initial)",
            ))
        }
    };
    Ok(DataFile {
        path: path.to_path_buf(),
        source,
        intensities_what: what,
        zero_frequency: cfg.data.zero_frequency,
        detector_transpose: cfg.data.detector_transpose,
        format: DataFormat::Stem4d,
        experiment,
        experiment_keys,
        n: sy * sx,
        m,
        positions_m: Some(pm),
        centres,
        object_shape,
        initial_probe,
        bad_pixels: None,
        cxi: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_convention() {
        // θ = 0: fast axis along +x
        let p = scan_positions_m(2, 3, 1.0, 0.0);
        assert_eq!(p[1], [0.0, 1.0]);
        assert_eq!(p[3], [1.0, 0.0]);
        // θ = 90°: fast axis along +y, slow axis along −x
        let p = scan_positions_m(2, 3, 2.0, 90.0);
        assert!(
            (p[1][0] - 2.0).abs() < 1e-12 && p[1][1].abs() < 1e-12,
            "{:?}",
            p[1]
        );
        assert!(
            p[3][0].abs() < 1e-12 && (p[3][1] + 2.0).abs() < 1e-12,
            "{:?}",
            p[3]
        );
    }
}
