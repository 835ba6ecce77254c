//! CXI files (Coherent X-ray Imaging format, cxidb.org; versions 1.4–1.6) as beamline
//! software writes them, read without a hand-written config:
//!
//! | what | CXI places, first found wins | unit |
//! |---|---|---|
//! | diffraction patterns [N, M, M] | `data.intensities` if set, `entry_1/data_1/data`, `entry_1/instrument_1/detector_1/data` | counts |
//! | bad-pixel mask [M, M] | `entry_1/instrument_1/detector_1/mask`: nonzero = bad, except exactly 0x1000 ("signal above background") | — |
//! | detector distance | `entry_1/instrument_1/detector_1/distance` | m |
//! | detector pixel size | `…/detector_1/x_pixel_size`, `y_pixel_size` | m |
//! | detector axes | `…/detector_1/basis_vectors`, [2, 3] or [3, 2]: the lab-frame (x, y, z) vectors of one step along the pattern rows (slow axis) and columns (fast axis); default (0, p, 0) and (p, 0, 0) | m |
//! | photon energy | `entry_1/instrument_1/source_1/energy`, else `…/source_1/wavelength` | J, else m |
//! | sample translations [N, 3] (x, y, z) | `entry_1/data_1/translation`, `entry_1/sample_1/geometry_1/translation`, `entry_1/instrument_1/detector_1/translation` | m |
//!
//! `[experiment]` keys, when given, override the file's values. CXI translations move the
//! sample, so the probe position relative to the sample is −t; ptytile works in the frame of
//! the detector axes ŝ (rows) and f̂ (columns): probe centre (y, x) = (−t·ŝ, −t·f̂). In that
//! frame the far field of the exit wave is the ordinary forward FFT of docs/algorithm.md.
//! The zero frequency is taken at pixel [M/2, M/2] (`data.zero_frequency`).
//!
//! **Near field.** ptytile's propagator is far-field only. CXI files carry no flag for the
//! propagation regime, so [`assess`] tests the data: when the patterns hold a shadow image
//! (in-line hologram) of the sample, its features move across the detector as the sample
//! moves. The shift between the patterns of neighbouring positions is measured by
//! cross-correlation and fitted as a linear function of their separation (px per m; R²);
//! the illuminated width on the sample is then the bright area of the mean pattern divided
//! by that magnification. Far-field ptychography needs the illumination to fit inside the
//! window M·Δx = λz/p the detector samples; when it does not (the PETRA III P25 example:
//! about 8 µm of illumination against a 2 µm window) the data are near-field and
//! reconstruction is refused. Defocused far-field probes (4D-STEM, X-ray) also show a
//! shadow image, but one that fits the window.

use super::{check_stack, experiment, object_grid, read_probe, to_pixels, DataFile, Meta, Source};
use crate::config::{Beam, Config, DataFormat, Geometry};
use crate::error::{Context, Error, Result};
use crate::physics::fft::Fft2;
use crate::physics::HC_EV_M;
use num_complex::Complex;
use std::path::Path;

/// Elementary charge, J per eV.
pub const EV_J: f64 = 1.602_176_634e-19;

const DATA: [&str; 2] = [
    "entry_1/data_1/data",
    "entry_1/instrument_1/detector_1/data",
];
const TRANSLATION: [&str; 3] = [
    "entry_1/data_1/translation",
    "entry_1/sample_1/geometry_1/translation",
    "entry_1/instrument_1/detector_1/translation",
];
const DET: &str = "entry_1/instrument_1/detector_1";
const SOURCE: &str = "entry_1/instrument_1/source_1";

/// What a CXI file holds, with the dataset each value came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Cxi {
    /// Path of the diffraction patterns.
    pub data: String,
    /// Path of the mask and its number of bad pixels.
    pub mask: Option<(String, usize)>,
    /// Detector distance z in m.
    pub distance_m: Option<f64>,
    /// Detector pixel size (y, x) in m.
    pub pixel_size_m: Option<[f64; 2]>,
    /// Photon energy in J (`source_1/energy`).
    pub energy_j: Option<f64>,
    /// Wavelength in m (`source_1/wavelength`).
    pub wavelength_m: Option<f64>,
    /// Path of the translations.
    pub translation: String,
    /// Unit vectors of the pattern rows ŝ and columns f̂ in the lab frame (x, y, z).
    pub axes: [[f64; 3]; 2],
    /// Whether `axes` came from `basis_vectors` (else the default).
    pub axes_from_file: bool,
}

impl Cxi {
    /// Photon energy in eV from the energy (J), else the wavelength.
    pub fn energy_ev(&self) -> Option<f64> {
        self.energy_j
            .map(|j| j / EV_J)
            .or(self.wavelength_m.map(|l| HC_EV_M / l))
    }
}

fn first(file: &hdf5::File, places: &[&str]) -> Option<String> {
    places
        .iter()
        .find(|p| file.link_exists(p) && file.dataset(p).is_ok())
        .map(|p| p.to_string())
}

/// A scalar dataset (or one value repeated per frame); `None` when absent.
fn scalar(file: &hdf5::File, pname: &str, path: &str) -> Result<Option<f64>> {
    if !file.link_exists(path) {
        return Ok(None);
    }
    let what = || format!("{pname}:{path}");
    let v: Vec<f64> = file
        .dataset(path)
        .and_then(|d| d.read_raw::<f64>())
        .ctx(what)?;
    let Some(&x) = v.first() else {
        return Err(Error::new(what(), "empty"));
    };
    if v.iter().any(|y| (y - x).abs() > 1e-6 * x.abs()) {
        return Err(Error::new(
            what(),
            format!(
                "varies between frames ({} values); ptytile needs one value",
                v.len()
            ),
        ));
    }
    if !(x.is_finite() && x > 0.0) {
        return Err(Error::new(
            what(),
            format!("must be a positive number, got {x}"),
        ));
    }
    Ok(Some(x))
}

/// Read the CXI places (table in the module docs). Errors name the file and dataset: no
/// diffraction data, no translations, unreadable values.
pub fn read(file: &hdf5::File, pname: &str, intensities: &str) -> Result<Cxi> {
    let data = if intensities.is_empty() {
        first(file, &DATA).ok_or_else(|| {
            Error::new(
                pname,
                format!(
                    "CXI file without diffraction data (looked for {})",
                    DATA.join(", ")
                ),
            )
        })?
    } else {
        intensities.to_string()
    };
    let translation = first(file, &TRANSLATION).ok_or_else(|| {
        Error::new(
            pname,
            format!(
                "CXI file without sample translations (looked for {})",
                TRANSLATION.join(", ")
            ),
        )
    })?;
    let mask = format!("{DET}/mask");
    let mask = if file.link_exists(&mask) {
        Some((
            mask.clone(),
            bad_pixels(file, pname, &mask)?
                .iter()
                .filter(|b| **b)
                .count(),
        ))
    } else {
        None
    };
    let px = scalar(file, pname, &format!("{DET}/x_pixel_size"))?;
    let py = scalar(file, pname, &format!("{DET}/y_pixel_size"))?;
    let pixel_size_m = match (py, px) {
        (Some(y), Some(x)) => Some([y, x]),
        (None, Some(x)) => Some([x, x]),
        (Some(y), None) => Some([y, y]),
        (None, None) => None,
    };
    let (axes, axes_from_file) = match basis(file, pname)? {
        Some(a) => (a, true),
        None => ([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], false),
    };
    Ok(Cxi {
        data,
        mask,
        distance_m: scalar(file, pname, &format!("{DET}/distance"))?,
        pixel_size_m,
        energy_j: scalar(file, pname, &format!("{SOURCE}/energy"))?,
        wavelength_m: scalar(file, pname, &format!("{SOURCE}/wavelength"))?,
        translation,
        axes,
        axes_from_file,
    })
}

/// `basis_vectors` [2, 3] (one vector per row) or [3, 2] (one per column) → unit vectors
/// (rows ŝ, columns f̂).
fn basis(file: &hdf5::File, pname: &str) -> Result<Option<[[f64; 3]; 2]>> {
    let path = format!("{DET}/basis_vectors");
    if !file.link_exists(&path) {
        return Ok(None);
    }
    let what = || format!("{pname}:{path}");
    let ds = file.dataset(&path).ctx(what)?;
    let v: Vec<f64> = ds.read_raw::<f64>().ctx(what)?;
    let mut a = [[0.0; 3]; 2];
    match ds.shape().as_slice() {
        [2, 3] => (0..2).for_each(|i| (0..3).for_each(|c| a[i][c] = v[i * 3 + c])),
        [3, 2] => (0..2).for_each(|i| (0..3).for_each(|c| a[i][c] = v[c * 2 + i])),
        s => {
            return Err(Error::new(
                what(),
                format!("expected shape [2, 3] or [3, 2], got {s:?}"),
            ))
        }
    }
    for r in a.iter_mut() {
        let n = r.iter().map(|x| x * x).sum::<f64>().sqrt();
        if !(n.is_finite() && n > 0.0) {
            return Err(Error::new(what(), "zero or non-finite basis vector"));
        }
        r.iter_mut().for_each(|x| *x /= n);
    }
    Ok(Some(a))
}

/// The mask as bad pixels (row-major, as stored): nonzero = bad, except exactly 0x1000.
fn bad_pixels(file: &hdf5::File, pname: &str, path: &str) -> Result<Vec<bool>> {
    let what = || format!("{pname}:{path}");
    let ds = file.dataset(path).ctx(what)?;
    if ds.ndim() != 2 {
        return Err(Error::new(
            what(),
            format!("expected a [M, M] mask, got shape {:?}", ds.shape()),
        ));
    }
    let v: Vec<u64> = ds.read_raw::<u64>().ctx(what)?;
    Ok(v.iter().map(|&b| b != 0 && b != 0x1000).collect())
}

/// Open a CXI file as a far-field X-ray dataset (module docs).
///
/// Errors (naming the file, dataset or key): missing data or translations, data not
/// [N, M, M], translations not [N, 3] or non-finite, a mask of the wrong shape,
/// anisotropic detector pixels, missing geometry, near-field data
/// (`experiment.geometry = "auto"`, see [`assess`]).
pub(super) fn open(cfg: &Config, path: &Path, file: hdf5::File) -> Result<DataFile> {
    let pname = path.display().to_string();
    let cxi = read(&file, &pname, &cfg.data.intensities)?;
    let what = |d: &str| format!("{pname}:{d}");
    let (n, m) = check_stack(&file, &pname, &cxi.data)?;

    let dt = file
        .dataset(&cxi.translation)
        .ctx(|| what(&cxi.translation))?;
    let ts = dt.shape();
    if ts.len() != 2 || ts[1] != 3 || ts[0] != n {
        return Err(Error::new(
            what(&cxi.translation),
            format!("expected [N, 3] (x, y, z) translations with N = {n}, got {ts:?}"),
        ));
    }
    let t: Vec<f64> = dt.read_raw::<f64>().ctx(|| what(&cxi.translation))?;
    if let Some(j) = t.iter().position(|v| !v.is_finite()) {
        return Err(Error::new(
            what(&cxi.translation),
            format!("non-finite value at position {}", j / 3),
        ));
    }
    let [s, f] = cxi.axes;
    let dot = |a: &[f64], b: &[f64; 3]| -(a[0] * b[0] + a[1] * b[1] + a[2] * b[2]);
    let pm: Vec<[f64; 2]> = t.chunks(3).map(|tj| [dot(tj, &s), dot(tj, &f)]).collect();

    let bad_pixels = match &cxi.mask {
        Some((p, _)) => {
            let b = bad_pixels(&file, &pname, p)?;
            if b.len() != m * m {
                return Err(Error::new(
                    what(p),
                    format!("mask has {} pixels, the patterns {m}x{m}", b.len()),
                ));
            }
            Some(b)
        }
        None => None,
    };
    // geometry: config keys win over the file
    let mut e = cfg.experiment.clone();
    e.beam = Beam::Xray;
    e.energy_ev = e.energy_ev.or(cxi.energy_ev());
    e.detector_distance_m = e.detector_distance_m.or(cxi.distance_m);
    if e.detector_pixel_size_m.is_none() {
        if let Some([py, px]) = cxi.pixel_size_m {
            if (py - px).abs() > 1e-6 * px {
                return Err(Error::new(
                    what(&format!("{DET}/y_pixel_size")),
                    format!(
                        "detector pixels of {py} x {px} m: anisotropic pixels are not supported"
                    ),
                ));
            }
            e.detector_pixel_size_m = Some(px);
        }
    }
    let meta = Meta {
        file: Some(&file),
        pname: &pname,
        intensities: &cxi.data,
    };
    let (experiment, experiment_keys) = experiment(&e, &meta, m)?;
    let (centres, object_shape) = object_grid(&to_pixels(&pm, &experiment), m)
        .map_err(|msg| Error::new(what(&cxi.translation), msg))?;
    let initial_probe = match &cfg.data.probe {
        None => None,
        Some(p) => Some(read_probe(&file, &pname, p, m)?),
    };
    let df = DataFile {
        path: path.to_path_buf(),
        intensities_what: what(&cxi.data),
        source: Source::Stack {
            file,
            dataset: cxi.data.clone(),
        },
        zero_frequency: cfg.data.zero_frequency,
        detector_transpose: cfg.data.detector_transpose,
        format: DataFormat::Cxi,
        experiment,
        experiment_keys,
        n,
        m,
        positions_m: Some(pm),
        centres,
        object_shape,
        initial_probe,
        bad_pixels,
        cxi: Some(cxi),
    };
    if cfg.experiment.geometry == Geometry::Auto {
        let a = assess(&df)?;
        if a.near_field() {
            return Err(Error::new(
                &pname,
                format!(
                    "near-field geometry: {}; ptytile has only a far-field propagator, near-field ptychography is not supported (experiment.geometry = \"far_field\" overrides this check)",
                    a.summary()
                ),
            ));
        }
    }
    Ok(df)
}

/// A shadow image found in the patterns (module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shadow {
    /// How far pattern features move per metre of probe displacement (detector px per m),
    /// √|det A| of the fitted 2 × 2 map A.
    pub px_per_m: f64,
    /// Fraction of the measured shifts' variance the linear map explains.
    pub r2: f64,
    /// Diameter (detector px) of the bright area of the mean pattern (> 10 % of its maximum).
    pub bright_px: f64,
    /// Number of neighbour pairs measured.
    pub pairs: usize,
}

impl Shadow {
    /// Width of the illuminated area on the sample, m.
    pub fn illuminated_m(&self) -> f64 {
        self.bright_px / self.px_per_m
    }
}

/// Result of [`assess`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    /// The far-field window M·Δx = λz/p (m).
    pub window_m: f64,
    /// The shadow image, if the shifts follow the positions (R² ≥ [`SHADOW_R2`]).
    pub shadow: Option<Shadow>,
}

/// Minimum R² for the pattern shifts to count as a shadow image.
pub const SHADOW_R2: f64 = 0.8;

impl Assessment {
    /// Near field: a shadow image of an illumination wider than the far-field window.
    pub fn near_field(&self) -> bool {
        self.shadow
            .is_some_and(|s| s.illuminated_m() > self.window_m)
    }

    /// One line of explanation.
    pub fn summary(&self) -> String {
        match self.shadow {
            None => format!("no shadow image of the sample moves with the scan: far-field diffraction (window λz/p = {:.4e} m)", self.window_m),
            Some(s) => format!(
                "the patterns hold a shadow image of the sample that moves {:.3e} px per m of translation (R² {:.3}, {} neighbour pairs); the illumination is about {:.3e} m wide, {:.2} x the far-field window λz/p = {:.3e} m{}",
                s.px_per_m,
                s.r2,
                s.pairs,
                s.illuminated_m(),
                s.illuminated_m() / self.window_m,
                self.window_m,
                if self.near_field() { "" } else { ", so a far-field model holds (a defocused probe)" }
            ),
        }
    }
}

/// Test the far-field assumption on the data (module docs): cross-correlate the
/// normalised patterns (I / Ī − 1 on the bright area of the mean pattern Ī) of up to 48
/// positions with their nearest neighbours, fit the shifts as a linear map of the position
/// differences, and compare the implied illuminated width with the window M·Δx.
///
/// Errors: read failures of the patterns.
pub fn assess(df: &DataFile) -> Result<Assessment> {
    let m = df.m;
    let mm = m * m;
    let window_m = m as f64 * df.experiment.pixel_size_m[1];
    let none = Assessment {
        window_m,
        shadow: None,
    };
    let Some(pm) = &df.positions_m else {
        return Ok(none);
    };
    if df.n < 3 {
        return Ok(none);
    }
    let samples = 48.min(df.n);
    let mut pairs = Vec::new();
    for i in 0..samples {
        let j = i * df.n / samples;
        let d2 = |k: usize| (pm[k][0] - pm[j][0]).powi(2) + (pm[k][1] - pm[j][1]).powi(2);
        let k = (0..df.n)
            .filter(|&k| k != j && d2(k) > 0.0)
            .min_by(|&a, &b| d2(a).total_cmp(&d2(b)));
        if let Some(k) = k {
            pairs.push((j, k));
        }
    }
    let mut pats = std::collections::BTreeMap::new();
    for &(j, k) in &pairs {
        for i in [j, k] {
            if let std::collections::btree_map::Entry::Vacant(v) = pats.entry(i) {
                let mut p = df.read_raw(i, 1)?;
                if let Some(b) = &df.bad_pixels {
                    p.iter_mut()
                        .zip(b)
                        .filter(|(_, b)| **b)
                        .for_each(|(x, _)| *x = 0.0);
                }
                v.insert(p);
            }
        }
    }
    let mut mean = vec![0f64; mm];
    for p in pats.values() {
        mean.iter_mut()
            .zip(p)
            .for_each(|(a, b)| *a += *b as f64 / pats.len() as f64);
    }
    let max = mean.iter().cloned().fold(0.0, f64::max);
    if !(max > 0.0) {
        return Ok(none);
    }
    let bright: Vec<bool> = mean.iter().map(|v| *v > 0.1 * max).collect();
    let bright_px =
        2.0 * (bright.iter().filter(|b| **b).count() as f64 / std::f64::consts::PI).sqrt();
    let fft = Fft2::<f64>::new(m);
    let mut scratch = fft.scratch();
    let spectrum = |p: &[f32], scratch: &mut Vec<Complex<f64>>| -> Vec<Complex<f64>> {
        let mut a: Vec<Complex<f64>> = (0..mm)
            .map(|i| {
                Complex::new(
                    if bright[i] {
                        p[i] as f64 / mean[i] - 1.0
                    } else {
                        0.0
                    },
                    0.0,
                )
            })
            .collect();
        fft.forward(&mut a, scratch);
        a
    };
    // shifts s (px, rows/columns) against position differences d (m)
    let (mut dd, mut ds) = (Vec::new(), Vec::new());
    for &(j, k) in &pairs {
        let a = spectrum(&pats[&j], &mut scratch);
        let b = spectrum(&pats[&k], &mut scratch);
        let mut c: Vec<Complex<f64>> = a.iter().zip(&b).map(|(x, y)| x * y.conj()).collect();
        fft.inverse(&mut c, &mut scratch);
        let i = (0..mm)
            .max_by(|&x, &y| c[x].re.total_cmp(&c[y].re))
            .unwrap_or(0);
        let signed = |v: usize| {
            if v > m / 2 {
                v as f64 - m as f64
            } else {
                v as f64
            }
        };
        ds.push([signed(i / m), signed(i % m)]);
        dd.push([pm[j][0] - pm[k][0], pm[j][1] - pm[k][1]]);
    }
    let Some((a, r2)) = fit_linear(&dd, &ds) else {
        return Ok(none);
    };
    let det = (a[0][0] * a[1][1] - a[0][1] * a[1][0]).abs();
    if r2 < SHADOW_R2 || !(det > 0.0) {
        return Ok(none);
    }
    Ok(Assessment {
        window_m,
        shadow: Some(Shadow {
            px_per_m: det.sqrt(),
            r2,
            bright_px,
            pairs: pairs.len(),
        }),
    })
}

/// Least-squares S ≈ D·A through the origin for 2-vectors; returns (A, R² = 1 − Σ|S − DA|² / Σ|S|²),
/// or `None` when the shifts are all zero or D is degenerate.
fn fit_linear(d: &[[f64; 2]], s: &[[f64; 2]]) -> Option<([[f64; 2]; 2], f64)> {
    let mut g = [[0.0; 2]; 2]; // DᵀD
    let mut h = [[0.0; 2]; 2]; // DᵀS
    for (di, si) in d.iter().zip(s) {
        for r in 0..2 {
            for c in 0..2 {
                g[r][c] += di[r] * di[c];
                h[r][c] += di[r] * si[c];
            }
        }
    }
    let det = g[0][0] * g[1][1] - g[0][1] * g[1][0];
    let total: f64 = s.iter().map(|v| v[0] * v[0] + v[1] * v[1]).sum();
    if !(det.abs() > 0.0) || !(total > 0.0) {
        return None;
    }
    let inv = [
        [g[1][1] / det, -g[0][1] / det],
        [-g[1][0] / det, g[0][0] / det],
    ];
    let mut a = [[0.0; 2]; 2];
    for r in 0..2 {
        for c in 0..2 {
            a[r][c] = inv[r][0] * h[0][c] + inv[r][1] * h[1][c];
        }
    }
    let resid: f64 = d
        .iter()
        .zip(s)
        .map(|(di, si)| {
            (0..2)
                .map(|c| (si[c] - di[0] * a[0][c] - di[1] * a[1][c]).powi(2))
                .sum::<f64>()
        })
        .sum();
    Some((a, 1.0 - resid / total))
}

/// What `ptytile inspect` says about a CXI file: the values found and where, the derived
/// far-field sampling, the mask, and the near-field test; or why ptytile cannot read it.
pub fn explain(path: &Path) -> String {
    let mut cfg = match Config::from_toml(
        "[data]\nfile = 'x'\nformat = 'cxi'\n[experiment]\ngeometry = 'far_field'\n",
        &[],
    ) {
        Ok(c) => c,
        Err(e) => return format!("(internal: {e})"),
    };
    cfg.data.file = path.to_path_buf();
    let df = match DataFile::open(&cfg) {
        Ok(df) => df,
        Err(e) => return format!("a CXI file that ptytile cannot read as it is: {e}"),
    };
    let Some(c) = &df.cxi else {
        return String::new();
    };
    let e = &df.experiment;
    let pm = df.positions_m.as_deref().unwrap_or_default();
    let span = |a: usize| {
        let lo = pm.iter().map(|p| p[a]).fold(f64::INFINITY, f64::min);
        let hi = pm.iter().map(|p| p[a]).fold(f64::NEG_INFINITY, f64::max);
        hi - lo
    };
    let energy = match (c.energy_j, c.wavelength_m) {
        (Some(j), _) => format!("{j:.4e} J = {:.1} eV (source_1/energy)", j / EV_J),
        (None, Some(l)) => format!(
            "λ = {l:.4e} m (source_1/wavelength) = {:.1} eV",
            HC_EV_M / l
        ),
        (None, None) => "not in the file".into(),
    };
    let mut s = format!(
        "a CXI file: {} diffraction patterns of {m}x{m} at {}\n  photon energy {energy}; λ = {:.4e} m\n  detector distance {} m, pixel {} m; pattern rows along {:?}, columns along {:?} (lab x, y, z){}\n  {} translations at {} (m), spanning {:.3e} x {:.3e} m (y, x)\n  mask: {}\n  far field: object pixel Δx = λz/(Mp) = {:.4e} m, window M·Δx = {:.4e} m\n",
        df.n,
        c.data,
        e.wavelength_m,
        c.distance_m.map(|v| format!("{v:.6}")).unwrap_or("?".into()),
        c.pixel_size_m.map(|v| format!("{:.4e} x {:.4e} (y, x)", v[0], v[1])).unwrap_or("?".into()),
        c.axes[0],
        c.axes[1],
        if c.axes_from_file { " from basis_vectors" } else { " (default)" },
        df.n,
        c.translation,
        span(0),
        span(1),
        c.mask.as_ref().map(|(p, b)| format!("{b} bad pixels at {p} (excluded from the likelihood)")).unwrap_or("none".into()),
        e.pixel_size_m[1],
        df.m as f64 * e.pixel_size_m[1],
        m = df.m,
    );
    match assess(&df) {
        Ok(a) if a.near_field() => s.push_str(&format!(
            "  geometry: NEAR FIELD: {}.\n  `ptytile reconstruct` refuses it: ptytile has only a far-field propagator.\n",
            a.summary()
        )),
        Ok(a) => s.push_str(&format!("  geometry: far field: {}.\n  Config: [data] file = {:?} (everything else is read from the file; set the probe with [experiment] convergence_semiangle_mrad, defocus_m, or data.probe / data.initial)\n", a.summary(), path.display().to_string())),
        Err(e) => s.push_str(&format!("  geometry: not tested ({e})\n")),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_fit_recovers_a_map() {
        let a = [[2.0, -1.0], [0.5, 3.0]];
        let d: Vec<[f64; 2]> = (0..10)
            .map(|i| [(i as f64).sin(), (i as f64 * 0.7).cos()])
            .collect();
        let s: Vec<[f64; 2]> = d
            .iter()
            .map(|v| {
                [
                    v[0] * a[0][0] + v[1] * a[1][0],
                    v[0] * a[0][1] + v[1] * a[1][1],
                ]
            })
            .collect();
        let (b, r2) = fit_linear(&d, &s).unwrap();
        assert!((r2 - 1.0).abs() < 1e-12);
        for r in 0..2 {
            for c in 0..2 {
                assert!((a[r][c] - b[r][c]).abs() < 1e-9);
            }
        }
        assert!(fit_linear(&d, &[[0.0, 0.0]; 10]).is_none());
    }
}
