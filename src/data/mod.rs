//! Measurements in: open a ptychography HDF5 file, map units, validate, and read the
//! diffraction patterns of a chosen set of positions (HDF5 selection reads, so a rank
//! never holds patterns it does not own).
//!
//! Conventions after loading (docs/algorithm.md §1): probe centres are (y, x) in global
//! object pixels, c_j = p_j − min_j p_j + M/2, so every M × M window lies inside the object
//! grid [Ny, Nx] = [⌊max c_y⌋ + M/2, ⌊max c_x⌋ + M/2]; intensities are stored per position
//! in the transposed, corner-centred layout `[kx][ky]` of `physics::fft`.

pub mod calibrate;
pub mod cxi;
pub mod inspect;
pub mod live;
pub mod npy;
pub mod replay;
pub mod select;
pub mod stem4d;
pub mod stream;
pub mod transport;

use crate::config::{
    Beam, Config, DataFormat, ExperimentConfig, Geometry, PositionsUnit, ZeroFrequency,
};
use crate::error::{Context, Error, Result};
use crate::physics::{self, Experiment};
use hdf5::types::{FloatSize, TypeDescriptor};
use num_complex::Complex32;
use std::path::{Path, PathBuf};

/// Largest object side (px) ptytile accepts; larger means the positions are wrong (unit?).
pub const MAX_OBJECT_SIDE: usize = 1 << 16;

/// Largest detector side M (px) ptytile accepts: one complex M × M probe mode is 512 MiB at
/// this size, and a larger side means a wrong dataset or a corrupt shape.
pub const MAX_DETECTOR_SIDE: usize = 8192;

/// Largest number of positions N ptytile accepts (the positions alone are 1 GiB of f64 at
/// this count); more means a wrong dataset or a corrupt shape.
pub const MAX_POSITIONS: usize = 1 << 26;

/// Largest number of probe modes read from a file (`data.probe`, [K, M, M]).
pub const MAX_PROBE_MODES: usize = 64;

/// Where the diffraction patterns are read from.
#[derive(Debug)]
enum Source {
    /// HDF5 dataset [N, M, M] (formats `hdf5`, `cxi`).
    Stack { file: hdf5::File, dataset: String },
    /// HDF5 dataset [Sy, Sx, M, M], pattern j = (j / Sx, j mod Sx) (format `stem4d`).
    Scan {
        file: hdf5::File,
        dataset: String,
        sx: usize,
    },
    /// `.npy` array [Sy, Sx, M, M] (format `stem4d`).
    Npy(npy::NpyArray),
    /// Frames of a live stream as they arrive ([`live::Frames`]; `--live`).
    Live(std::sync::Arc<live::Frames>),
}

/// An opened dataset: metadata, geometry and positions of all N patterns; intensities are
/// read on demand with [`DataFile::read_intensities`].
#[derive(Debug)]
pub struct DataFile {
    /// The data file.
    pub path: PathBuf,
    source: Source,
    /// `file:dataset` of the intensities, for messages.
    pub intensities_what: String,
    zero_frequency: ZeroFrequency,
    /// `data.detector_transpose`: patterns are transposed as they are read.
    pub detector_transpose: bool,
    /// The resolved format.
    pub format: DataFormat,
    /// Physics of the experiment (SI units).
    pub experiment: Experiment,
    /// The `[experiment]` keys as resolved (the config's, else the file's metadata, in the
    /// config's units): a config holding them gives the same [`DataFile::experiment`]
    /// bit for bit (what `ptytile stream` sends in its start message).
    pub experiment_keys: ExperimentConfig,
    /// Number of positions N in the file.
    pub n: usize,
    /// Detector side M (px).
    pub m: usize,
    /// Probe positions (y, x) in m before the shift to the object grid (`None` when the
    /// positions were given in pixels), [N].
    pub positions_m: Option<Vec<[f64; 2]>>,
    /// Probe centres (y, x), global object pixels, [N].
    pub centres: Vec<[f64; 2]>,
    /// Object grid (Ny, Nx) in pixels.
    pub object_shape: [usize; 2],
    /// Initial probe from the file, [K', M, M], if `data.probe` was given.
    pub initial_probe: Option<(usize, Vec<Complex32>)>,
    /// Bad detector pixels, [M, M] (ky, kx) as stored (true = excluded from the likelihood),
    /// from a CXI mask; `None` when every pixel counts.
    pub bad_pixels: Option<Vec<bool>>,
    /// What the CXI reader found (format `cxi`).
    pub cxi: Option<cxi::Cxi>,
}

/// The format `cfg` names, or the one `path` looks like (`.cxi` or a `/cxi_version` dataset →
/// CXI; `.npy` or a rank-4 `data.intensities` → 4D-STEM; else the plain HDF5 layout).
pub fn resolve_format(
    format: DataFormat,
    path: &Path,
    file: Option<&hdf5::File>,
    intensities: &str,
) -> DataFormat {
    if format != DataFormat::Auto {
        return format;
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    match (ext.as_str(), file) {
        ("cxi", _) => DataFormat::Cxi,
        ("npy", _) => DataFormat::Stem4d,
        (_, Some(f)) if f.link_exists("cxi_version") => DataFormat::Cxi,
        (_, Some(f))
            if !intensities.is_empty()
                && f.link_exists(intensities)
                && f.dataset(intensities)
                    .map(|d| d.ndim() == 4)
                    .unwrap_or(false) =>
        {
            DataFormat::Stem4d
        }
        _ => DataFormat::Hdf5,
    }
}

/// Largest read of patterns held at once by [`DataFile::read_intensities`] (bytes of f32).
pub const READ_CHUNK_BYTES: usize = 8 << 20;

impl DataFile {
    /// Open and validate `cfg.data` in its format (`data.format`, auto-detected by default):
    /// the file, the intensities' and positions' shapes and dtypes, the experiment metadata
    /// (config keys, else the file's), the field of view; for CXI files also the detector
    /// mask and the far-field check (`data::cxi`).
    ///
    /// Errors, each naming the file, dataset or key: missing/unreadable file, missing
    /// dataset, wrong rank/shape/dtype, non-square or empty patterns, count mismatch between
    /// intensities and positions, non-finite positions, a field of view larger than
    /// [`MAX_OBJECT_SIDE`], more than [`MAX_POSITIONS`] patterns or patterns wider than
    /// [`MAX_DETECTOR_SIDE`], missing or absurd metadata, near-field data, a key still
    /// `"auto"` ([`Config::auto`]: resolve it first).
    pub fn open(cfg: &Config) -> Result<DataFile> {
        let path = cfg.data.file.clone();
        let pname = path.display().to_string();
        if path.is_dir() {
            return Err(Error::new(&pname, "is a directory, not a data file"));
        }
        if !path.exists() {
            return Err(Error::new(&pname, "no such file"));
        }
        crate::output::safety::check_input(&path)?;
        if let Some(key) = cfg.auto.first() {
            return Err(Error::new(key, "\"auto\" is measured when `ptytile reconstruct` starts; here give the value (`ptytile calibrate` prints it)"));
        }
        if cfg.experiment.geometry == Geometry::NearField {
            return Err(Error::new(
                &pname,
                "experiment.geometry = near_field: near-field ptychography is not supported (ptytile has only a far-field propagator)",
            ));
        }
        let is_npy = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
        let file = if is_npy {
            None
        } else {
            Some(
                hdf5::File::open(&path)
                    .map_err(|e| Error::new(&pname, format!("cannot open as HDF5 ({e})")))?,
            )
        };
        let format = resolve_format(cfg.data.format, &path, file.as_ref(), &cfg.data.intensities);
        let df = match (format, file) {
            (DataFormat::Stem4d, f) => stem4d::open(cfg, &path, f)?,
            (DataFormat::Cxi, Some(f)) => cxi::open(cfg, &path, f)?,
            (_, Some(f)) => open_hdf5(cfg, &path, f)?,
            (_, None) => {
                return Err(Error::new(
                    &pname,
                    "a .npy file holds a raw 4D-STEM array: use data.format = \"stem4d\"",
                ))
            }
        };
        if df.m > MAX_DETECTOR_SIDE || df.n > MAX_POSITIONS {
            return Err(Error::new(
                &df.intensities_what,
                format!("absurd size: {} patterns of {}x{} (at most {MAX_POSITIONS} of at most {MAX_DETECTOR_SIDE}x{MAX_DETECTOR_SIDE})", df.n, df.m, df.m),
            ));
        }
        let mut df = DataFile { format, ..df };
        df.pad_object(cfg.position_correction.margin_px());
        Ok(df)
    }

    /// Grow the object grid by `margin` pixels on every side, moving every probe centre by
    /// (`margin`, `margin`): room for refined positions (`[position_correction]`
    /// max_shift_px), whose windows then stay inside the object. 0 changes nothing.
    pub fn pad_object(&mut self, margin: usize) {
        if margin == 0 {
            return;
        }
        let d = margin as f64;
        self.centres
            .iter_mut()
            .for_each(|c| *c = [c[0] + d, c[1] + d]);
        self.object_shape = [
            self.object_shape[0] + 2 * margin,
            self.object_shape[1] + 2 * margin,
        ];
    }

    /// Read the patterns of the given global position indices (ascending or not), in that
    /// order, as f32 counts in the transposed corner-centred layout: [len, M(kx), M(ky)].
    /// Contiguous index runs become reads of at most [`READ_CHUNK_BYTES`] each (one HDF5
    /// hyperslab per scan row for 4D arrays). Bad pixels ([`DataFile::bad_pixels`]) are set
    /// to 0 and not checked.
    ///
    /// Memory: the result is allocated once, where it stays (an `Arc`, shared with the
    /// backend without a copy); besides it only one chunk of at most [`READ_CHUNK_BYTES`]
    /// (and HDF5's own chunk cache) is held while reading, so a rank's peak stays near the
    /// size of its patterns.
    ///
    /// Errors: NaN, infinite or negative intensities (naming the position), read failures.
    pub fn read_intensities(&self, indices: &[usize]) -> Result<std::sync::Arc<[f32]>> {
        let m = self.m;
        let mm = m * m;
        // allocated once, zero-filled, then written in place (no Vec → Arc copy)
        let mut out: std::sync::Arc<[f32]> =
            std::iter::repeat_n(0f32, indices.len() * mm).collect();
        let dst = std::sync::Arc::get_mut(&mut out).expect("a new Arc is unique");
        let max_len = (READ_CHUNK_BYTES / (4 * mm).max(1)).max(1);
        let mut i = 0;
        while i < indices.len() {
            let start = indices[i];
            let mut len = 1;
            while len < max_len && i + len < indices.len() && indices[i + len] == start + len {
                len += 1;
            }
            let mut flat = self.read_raw(start, len)?;
            for (b, pat) in flat.chunks_mut(mm).enumerate() {
                let j = start + b;
                if let Some(bad) = &self.bad_pixels {
                    pat.iter_mut()
                        .zip(bad)
                        .filter(|(_, b)| **b)
                        .for_each(|(v, _)| *v = 0.0);
                }
                self.check_pattern(pat, j)?;
                to_kernel_layout_oriented(
                    pat,
                    m,
                    self.zero_frequency,
                    self.detector_transpose,
                    &mut dst[(i + b) * mm..(i + b + 1) * mm],
                );
            }
            i += len;
        }
        Ok(out)
    }

    /// Total counts Σ_k I_j(k) (f64) of patterns `start..start + len`, bad pixels
    /// ([`DataFile::bad_pixels`]) left out, read in chunks of at most [`READ_CHUNK_BYTES`];
    /// the input of [`select::outliers`].
    ///
    /// Errors: NaN, infinite or negative intensities as in [`DataFile::read_intensities`]
    /// (so a corrupt pattern is an error, not an outlier left out), read failures, a range
    /// beyond N.
    pub fn pattern_totals(&self, start: usize, len: usize) -> Result<Vec<f64>> {
        let mm = self.m * self.m;
        let max_len = (READ_CHUNK_BYTES / (4 * mm).max(1)).max(1);
        let mut out = Vec::with_capacity(len);
        let mut j = start;
        while j < start + len {
            let l = max_len.min(start + len - j);
            for (b, pat) in self.read_raw(j, l)?.chunks_mut(mm).enumerate() {
                if let Some(bad) = &self.bad_pixels {
                    pat.iter_mut()
                        .zip(bad)
                        .filter(|(_, b)| **b)
                        .for_each(|(v, _)| *v = 0.0);
                }
                self.check_pattern(pat, j + b)?;
                out.push(pat.iter().map(|v| *v as f64).sum());
            }
            j += l;
        }
        Ok(out)
    }

    /// Error naming the intensities and pattern `j` if `pat` holds a NaN, infinite or
    /// negative value (bad pixels must be zeroed first).
    fn check_pattern(&self, pat: &[f32], j: usize) -> Result<()> {
        match pat.iter().find(|v| !v.is_finite() || **v < 0.0) {
            None => Ok(()),
            Some(bad) => {
                let kind = if bad.is_nan() {
                    "NaN"
                } else if bad.is_infinite() {
                    "infinite"
                } else {
                    "negative"
                };
                Err(Error::new(
                    &self.intensities_what,
                    format!("{kind} intensity in pattern {j}"),
                ))
            }
        }
    }

    /// Patterns `start..start + len` as stored ([len, M(ky), M(kx)], zero frequency as
    /// stored), converted to f32, without checks.
    pub fn read_raw(&self, start: usize, len: usize) -> Result<Vec<f32>> {
        let what = || self.intensities_what.clone();
        if start + len > self.n {
            return Err(Error::new(
                what(),
                format!("position index {} out of range", start + len - 1),
            ));
        }
        let block =
            |ds: &hdf5::Dataset,
             sel: ndarray::SliceInfo<[ndarray::SliceInfoElem; 3], ndarray::Ix3, ndarray::Ix3>|
             -> Result<Vec<f32>> {
                let b = ds.read_slice::<f32, _, ndarray::Ix3>(sel).ctx(what)?;
                // the array's own buffer when it is already row-major (no second copy)
                Ok(if b.is_standard_layout() {
                    b.into_raw_vec_and_offset().0
                } else {
                    b.iter().copied().collect()
                })
            };
        match &self.source {
            Source::Stack { file, dataset } => {
                let ds = file.dataset(dataset).ctx(what)?;
                block(&ds, ndarray::s![start..start + len, .., ..])
            }
            Source::Scan { file, dataset, sx } => {
                let ds = file.dataset(dataset).ctx(what)?;
                let mut out = Vec::with_capacity(len * self.m * self.m);
                let mut j = start;
                while j < start + len {
                    let (iy, ix) = (j / sx, j % sx);
                    let run = (sx - ix).min(start + len - j);
                    let b = ds
                        .read_slice::<f32, _, ndarray::Ix3>(ndarray::s![iy, ix..ix + run, .., ..])
                        .ctx(what)?;
                    out.extend(b.as_standard_layout().iter().copied());
                    j += run;
                }
                Ok(out)
            }
            Source::Npy(a) => a.read_f32(2, start, len),
            Source::Live(f) => Ok(f.read(start, len)),
        }
    }

    /// Per-pixel likelihood weights in the kernel layout [M(kx), M(ky)] (1 = measured,
    /// 0 = bad pixel), or `None` when every pixel counts.
    pub fn kernel_weights(&self) -> Option<Vec<f32>> {
        let bad = self.bad_pixels.as_ref()?;
        let w: Vec<f32> = bad.iter().map(|b| if *b { 0.0 } else { 1.0 }).collect();
        let mut out = vec![0f32; w.len()];
        to_kernel_layout_oriented(
            &w,
            self.m,
            self.zero_frequency,
            self.detector_transpose,
            &mut out,
        );
        Some(out)
    }
}

/// The plain layout: intensities [N, M, M] and positions [N, 2] at the configured paths.
fn open_hdf5(cfg: &Config, path: &Path, file: hdf5::File) -> Result<DataFile> {
    let pname = path.display().to_string();
    let what = |d: &str| format!("{pname}:{d}");
    for (key, v) in [
        ("data.intensities", &cfg.data.intensities),
        ("data.positions", &cfg.data.positions),
    ] {
        if v.trim().is_empty() {
            return Err(Error::new(key, "empty or missing: needed for data.format = \"hdf5\" (`ptytile inspect FILE` suggests it)"));
        }
    }
    let (n, m) = check_stack(&file, &pname, &cfg.data.intensities)?;

    // positions: [N, 2]
    let dp = dataset(&file, &pname, &cfg.data.positions)?;
    let ps = dp.shape();
    if ps.len() != 2 || ps[1] != 2 {
        return Err(Error::new(
            what(&cfg.data.positions),
            format!("expected shape [N, 2] (y, x), got {ps:?}"),
        ));
    }
    check_numeric(&dp, &what(&cfg.data.positions))?;
    if ps[0] != n {
        return Err(Error::new(
            what(&cfg.data.positions),
            format!(
                "{} positions but {} diffraction patterns in {}",
                ps[0], n, cfg.data.intensities
            ),
        ));
    }
    let raw: Vec<f64> = dp.read_raw::<f64>().ctx(|| what(&cfg.data.positions))?;
    if let Some(j) = raw.iter().position(|v| !v.is_finite()) {
        return Err(Error::new(
            what(&cfg.data.positions),
            format!("non-finite value at position {}", j / 2),
        ));
    }
    let meta = Meta {
        file: Some(&file),
        pname: &pname,
        intensities: &cfg.data.intensities,
    };
    let (experiment, experiment_keys) = experiment(&cfg.experiment, &meta, m)?;
    let unit = match cfg.data.positions_unit {
        PositionsUnit::Px => None,
        PositionsUnit::M => Some(1.0),
        PositionsUnit::Nm => Some(1e-9),
        PositionsUnit::Angstrom => Some(1e-10),
    };
    let p: Vec<[f64; 2]> = raw.chunks(2).map(|p| [p[0], p[1]]).collect();
    let (positions_m, px) = match unit {
        None => (None, p),
        Some(u) => {
            let pm: Vec<[f64; 2]> = p.iter().map(|q| [q[0] * u, q[1] * u]).collect();
            let px = to_pixels(&pm, &experiment);
            (Some(pm), px)
        }
    };
    let (centres, object_shape) = object_grid(&px, m).map_err(|msg| {
        Error::new(
            what(&cfg.data.positions),
            format!("{msg} (positions_unit = {:?}?)", cfg.data.positions_unit),
        )
    })?;
    let initial_probe = match &cfg.data.probe {
        None => None,
        Some(p) => Some(read_probe(&file, &pname, p, m)?),
    };
    Ok(DataFile {
        path: path.to_path_buf(),
        intensities_what: what(&cfg.data.intensities),
        source: Source::Stack {
            file,
            dataset: cfg.data.intensities.clone(),
        },
        zero_frequency: cfg.data.zero_frequency,
        detector_transpose: cfg.data.detector_transpose,
        format: DataFormat::Hdf5,
        experiment,
        experiment_keys,
        n,
        m,
        positions_m,
        centres,
        object_shape,
        initial_probe,
        bad_pixels: None,
        cxi: None,
    })
}

/// Check an intensities dataset [N, M, M] (numeric, square, non-empty); returns (N, M).
fn check_stack(file: &hdf5::File, pname: &str, path: &str) -> Result<(usize, usize)> {
    let what = format!("{pname}:{path}");
    let di = dataset(file, pname, path)?;
    let shape = di.shape();
    if shape.len() != 3 {
        return Err(Error::new(
            &what,
            format!("expected rank 3 [N, M, M], got shape {shape:?}"),
        ));
    }
    check_numeric(&di, &what)?;
    check_patterns(&what, &shape[1..])?;
    if shape[0] == 0 {
        return Err(Error::new(&what, format!("empty: shape {shape:?}")));
    }
    if shape[0] > MAX_POSITIONS {
        return Err(Error::new(
            &what,
            format!("absurd shape {shape:?}: at most {MAX_POSITIONS} patterns"),
        ));
    }
    Ok((shape[0], shape[1]))
}

/// Patterns must be square and at least 2 × 2.
fn check_patterns(what: &str, s: &[usize]) -> Result<()> {
    if s[0] != s[1] {
        return Err(Error::new(
            what,
            format!("patterns must be square, got {}x{}", s[0], s[1]),
        ));
    }
    if s[0] < 2 {
        return Err(Error::new(
            what,
            format!("empty: patterns of {}x{}", s[0], s[1]),
        ));
    }
    if s[0] > MAX_DETECTOR_SIDE {
        return Err(Error::new(
            what,
            format!(
                "absurd shape: patterns of {}x{} (at most {MAX_DETECTOR_SIDE}x{MAX_DETECTOR_SIDE})",
                s[0], s[1]
            ),
        ));
    }
    Ok(())
}

/// Positions (y, x) in m → object pixels.
fn to_pixels(pm: &[[f64; 2]], e: &Experiment) -> Vec<[f64; 2]> {
    pm.iter()
        .map(|p| [p[0] / e.pixel_size_m[0], p[1] / e.pixel_size_m[1]])
        .collect()
}

/// Convert one pattern [ky][kx] (zero frequency as stored) to the kernel layout [kx][ky]
/// with zero frequency at [0, 0].
pub fn to_kernel_layout(pat: &[f32], m: usize, zf: ZeroFrequency, out: &mut [f32]) {
    to_kernel_layout_oriented(pat, m, zf, false, out)
}

/// [`to_kernel_layout`], the pattern first transposed when `transpose`
/// (`data.detector_transpose`): `pat` [M(ky), M(kx)] as stored, `out` [M(kx'), M(ky')] of the
/// transposed pattern I'(ky', kx') = I(kx', ky'), i.e. `out[ky * M + kx]` holds stored pixel
/// (ky, kx). The transposition is about the zero frequency, so for `Center` data it is the
/// swap of the indices relative to pixel [M/2, M/2].
pub fn to_kernel_layout_oriented(
    pat: &[f32],
    m: usize,
    zf: ZeroFrequency,
    transpose: bool,
    out: &mut [f32],
) {
    let h = match zf {
        ZeroFrequency::Center => m / 2,
        ZeroFrequency::Corner => 0,
    };
    for ky in 0..m {
        for kx in 0..m {
            let o = if transpose { ky * m + kx } else { kx * m + ky };
            out[o] = pat[((ky + h) % m) * m + (kx + h) % m];
        }
    }
}

/// Probe centres in object pixels (c = p − min p + M/2) and the object grid that holds every
/// window. Errors (as a message) when a position is not finite in pixels (finite in the
/// file, it can overflow in the unit conversion) or the positions span an absurd field of view.
pub fn object_grid(
    px: &[[f64; 2]],
    m: usize,
) -> std::result::Result<(Vec<[f64; 2]>, [usize; 2]), String> {
    if let Some(j) = px
        .iter()
        .position(|p| !(p[0].is_finite() && p[1].is_finite()))
    {
        return Err(format!(
            "position {j} is ({:e}, {:e}) px after conversion to pixels: not a finite number",
            px[j][0], px[j][1]
        ));
    }
    let min = |a: usize| px.iter().map(|p| p[a]).fold(f64::INFINITY, f64::min);
    let max = |a: usize| px.iter().map(|p| p[a]).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = ([min(0), min(1)], [max(0), max(1)]);
    let span = [hi[0] - lo[0], hi[1] - lo[1]];
    if span.iter().any(|s| *s > MAX_OBJECT_SIDE as f64) {
        return Err(format!(
            "scan spans {:.3e} x {:.3e} px, outside any sane field of view (limit {MAX_OBJECT_SIDE} px)",
            span[0], span[1]
        ));
    }
    if px.len() > 1 && span[0] < 1e-3 && span[1] < 1e-3 {
        return Err(format!(
            "all {} positions lie within 1e-3 px of each other",
            px.len()
        ));
    }
    let h = (m / 2) as f64;
    let centres: Vec<[f64; 2]> = px
        .iter()
        .map(|p| [p[0] - lo[0] + h, p[1] - lo[1] + h])
        .collect();
    // a window spans floor(c) − M/2 .. floor(c) + M − M/2 (M/2 rounded down: one more pixel
    // after the centre than before it for odd M)
    let shape = [
        (span[0] + h).floor() as usize + m.div_ceil(2),
        (span[1] + h).floor() as usize + m.div_ceil(2),
    ];
    Ok((centres, shape))
}

fn dataset(file: &hdf5::File, pname: &str, path: &str) -> Result<hdf5::Dataset> {
    if !file.link_exists(path) {
        return Err(Error::new(format!("{pname}:{path}"), "no such dataset"));
    }
    file.dataset(path)
        .map_err(|e| Error::new(format!("{pname}:{path}"), format!("not a dataset ({e})")))
}

/// Integers and floats are accepted (read with conversion to f32/f64); anything else is a
/// dtype error.
fn check_numeric(ds: &hdf5::Dataset, what: &str) -> Result<()> {
    let t = ds
        .dtype()
        .and_then(|t| t.to_descriptor())
        .ctx(|| what.to_string())?;
    match t {
        TypeDescriptor::Float(FloatSize::U4) | TypeDescriptor::Float(FloatSize::U8) => Ok(()),
        TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => Ok(()),
        other => Err(Error::new(
            what,
            format!("dtype {other} is not a real number type"),
        )),
    }
}

fn read_probe(
    file: &hdf5::File,
    pname: &str,
    path: &str,
    m: usize,
) -> Result<(usize, Vec<Complex32>)> {
    let what = format!("{pname}:{path}");
    let ds = dataset(file, pname, path)?;
    let s = ds.shape();
    let k = match s.as_slice() {
        [a, b] if *a == m && *b == m => 1,
        [k, a, b] if *a == m && *b == m && *k > 0 && *k <= MAX_PROBE_MODES => *k,
        _ => {
            return Err(Error::new(
                &what,
                format!("expected a complex probe [M, M] or [K, M, M] with M = {m}, 1 <= K <= {MAX_PROBE_MODES}, got {s:?}"),
            ))
        }
    };
    let t = ds
        .dtype()
        .and_then(|t| t.to_descriptor())
        .ctx(|| what.clone())?;
    let complex = matches!(&t, TypeDescriptor::Compound(c)
        if c.fields.len() == 2 && c.fields.iter().all(|f| matches!(f.ty, TypeDescriptor::Float(_))));
    if !complex {
        return Err(Error::new(
            &what,
            format!("dtype {t} is not complex (a compound of two floats r, i)"),
        ));
    }
    let p: Vec<Complex32> = ds
        .read_raw::<Complex32>()
        .map_err(|e| Error::new(&what, format!("not a complex64 probe ({e})")))?;
    if p.iter().any(|z| !z.re.is_finite() || !z.im.is_finite()) {
        return Err(Error::new(&what, "probe contains non-finite values"));
    }
    if p.iter().all(|z| z.norm_sqr() == 0.0) {
        return Err(Error::new(&what, "probe is zero everywhere"));
    }
    Ok((k, p))
}

/// Where metadata attributes are looked for: the intensities dataset, its parent group,
/// the root, `/meta`, `/metadata`.
struct Meta<'a> {
    file: Option<&'a hdf5::File>,
    pname: &'a str,
    intensities: &'a str,
}

impl Meta<'_> {
    /// First attribute found among `names` (each with a scale factor), as f64 values, with
    /// its source `file:place@name`. An attribute of that name that is not numeric is an
    /// error naming it (not silently skipped).
    fn find(&self, names: &[(&str, f64)]) -> Result<Option<(String, Vec<f64>)>> {
        let Some(file) = self.file else {
            return Ok(None);
        };
        let parent = match self.intensities.rfind('/') {
            Some(0) | None => "/".to_string(),
            Some(i) => self.intensities[..i].to_string(),
        };
        let places = [
            self.intensities.to_string(),
            parent,
            "/".into(),
            "/meta".into(),
            "/metadata".into(),
        ];
        for place in places.iter() {
            if place != "/" && !file.link_exists(place) {
                continue;
            }
            let attr = |name: &str| -> Option<hdf5::Attribute> {
                if let Ok(d) = file.dataset(place) {
                    d.attr(name).ok()
                } else {
                    file.group(place).ok()?.attr(name).ok()
                }
            };
            for (name, scale) in names {
                if let Some(a) = attr(name) {
                    let src = format!("{}:{}@{}", self.pname, place, name);
                    let numeric = matches!(
                        a.dtype().and_then(|t| t.to_descriptor()),
                        Ok(TypeDescriptor::Float(_)
                            | TypeDescriptor::Integer(_)
                            | TypeDescriptor::Unsigned(_))
                    );
                    if !numeric {
                        return Err(Error::new(src, "attribute is not a number"));
                    }
                    let v = a
                        .read_raw::<f64>()
                        .map_err(|e| Error::new(&src, e.to_string()))?;
                    return Ok(Some((src, v.iter().map(|x| x * scale).collect())));
                }
            }
        }
        Ok(None)
    }
}

/// What a metadata value must be.
#[derive(Clone, Copy, PartialEq)]
enum Valid {
    /// finite and > 0 (energy, samplings, distances)
    Positive,
    /// finite (defocus, aberrations)
    Finite,
}

/// A scalar from the config, else from file attributes (`names`, each with the factor to
/// SI units). Errors name the config key, or the attribute `file:place@name` it came from:
/// missing when `required`, empty, anisotropic, or not `valid`.
fn value(
    key: &str,
    cfg: Option<f64>,
    meta: &Meta,
    names: &[(&str, f64)],
    required: bool,
    valid: Valid,
) -> Result<Option<f64>> {
    let check = |what: &str, x: f64| -> Result<f64> {
        let ok = x.is_finite() && (valid == Valid::Finite || x > 0.0);
        if !ok {
            let want = if valid == Valid::Positive {
                "a positive number"
            } else {
                "a finite number"
            };
            let subject = if what == key {
                String::new()
            } else {
                format!("{key} ")
            };
            return Err(Error::new(
                what,
                format!("{subject}must be {want}, got {x}"),
            ));
        }
        Ok(x)
    };
    if let Some(v) = cfg {
        return check(key, v).map(Some);
    }
    match meta.find(names)? {
        Some((src, v)) => {
            let x = *v
                .first()
                .ok_or_else(|| Error::new(&src, "empty attribute"))?;
            check(&src, x)?;
            if v.iter()
                .any(|y| !((y - x).abs() <= 1e-9 * x.abs().max(1e-300)))
            {
                return Err(Error::new(
                    &src,
                    format!("anisotropic values {v:?} are not supported for {key}"),
                ));
            }
            tracing::info!("{key} = {x} (from {src})");
            Ok(Some(x))
        }
        None if required => Err(Error::new(
            key,
            "missing: not in the config and no matching attribute in the data file",
        )),
        None => Ok(None),
    }
}

/// The experiment of `e` (config keys), else of the file's metadata, for M = `m`; with
/// the keys as resolved (every value found, in the config's units), which give the same
/// experiment again from a config alone ([`DataFile::experiment_keys`]).
fn experiment(
    e: &ExperimentConfig,
    meta: &Meta,
    m: usize,
) -> Result<(Experiment, ExperimentConfig)> {
    use Valid::{Finite, Positive};
    let energy = value(
        "experiment.energy_ev",
        e.energy_ev,
        meta,
        &[("energy_ev", 1.0), ("energy_eV", 1.0), ("energy", 1.0)],
        true,
        Positive,
    )?
    .unwrap_or_default();
    let wavelength = match e.beam {
        Beam::Electron => physics::electron_wavelength_m(energy),
        Beam::Xray => physics::xray_wavelength_m(energy),
    };
    let alpha = value(
        "experiment.convergence_semiangle_mrad",
        e.convergence_semiangle_mrad,
        meta,
        &[("convergence_semiangle_mrad", 1.0), ("semiangle_mrad", 1.0)],
        false,
        Positive,
    )?;
    let defocus = value(
        "experiment.defocus_m",
        e.defocus_m,
        meta,
        &[
            ("defocus_m", 1.0),
            ("defocus_A", 1e-10),
            ("defocus_A_abtem", 1e-10),
            ("C10_A", -1e-10),
            ("C10_m", -1.0),
        ],
        false,
        Finite,
    )?
    .unwrap_or(0.0);
    let c30 = value(
        "experiment.spherical_aberration_m",
        e.spherical_aberration_m,
        meta,
        &[("C30_m", 1.0), ("Cs_m", 1.0), ("C30_A", 1e-10)],
        false,
        Finite,
    )?
    .unwrap_or(0.0);
    let mut keys = ExperimentConfig {
        beam: e.beam,
        energy_ev: Some(energy),
        convergence_semiangle_mrad: alpha,
        defocus_m: Some(defocus),
        spherical_aberration_m: Some(c30),
        angular_sampling_mrad: None,
        detector_distance_m: None,
        detector_pixel_size_m: None,
        geometry: e.geometry,
    };
    let (dtheta, pixel) = match e.beam {
        Beam::Electron => {
            let mrad = value(
                "experiment.angular_sampling_mrad",
                e.angular_sampling_mrad,
                meta,
                &[("angular_sampling_mrad", 1.0)],
                true,
                Positive,
            )?
            .unwrap_or_default();
            let dt = mrad * 1e-3;
            keys.angular_sampling_mrad = Some(mrad);
            (dt, physics::pixel_size_from_angular_m(wavelength, m, dt))
        }
        Beam::Xray => {
            let z = value(
                "experiment.detector_distance_m",
                e.detector_distance_m,
                meta,
                &[("detector_distance_m", 1.0), ("distance", 1.0)],
                true,
                Positive,
            )?
            .unwrap_or_default();
            let p = value(
                "experiment.detector_pixel_size_m",
                e.detector_pixel_size_m,
                meta,
                &[("detector_pixel_size_m", 1.0), ("x_pixel_size", 1.0)],
                true,
                Positive,
            )?
            .unwrap_or_default();
            keys.detector_distance_m = Some(z);
            keys.detector_pixel_size_m = Some(p);
            (
                p / z,
                physics::pixel_size_from_detector_m(wavelength, m, z, p),
            )
        }
    };
    let exp = Experiment {
        wavelength_m: wavelength,
        pixel_size_m: [pixel, pixel],
        detector_px: m,
        convergence_semiangle_rad: alpha.map(|a| a * 1e-3),
        defocus_m: defocus,
        c30_m: c30,
        dtheta_rad: dtheta,
    };
    exp.check()?;
    Ok((exp, keys))
}

#[cfg(test)]
mod tests {
    use super::{object_grid, to_kernel_layout, to_kernel_layout_oriented};
    use crate::config::ZeroFrequency;

    #[test]
    fn transpose_swaps_detector_rows_and_columns_about_the_zero_frequency() {
        let m = 4;
        let pat: Vec<f32> = (0..16).map(|v| v as f32).collect();
        for zf in [ZeroFrequency::Center, ZeroFrequency::Corner] {
            let (mut a, mut b) = (vec![0f32; 16], vec![0f32; 16]);
            to_kernel_layout(&pat, m, zf, &mut a);
            to_kernel_layout_oriented(&pat, m, zf, true, &mut b);
            // the transposed pattern in the kernel layout [kx][ky] is the plain one's [ky][kx]
            for ky in 0..m {
                for kx in 0..m {
                    assert_eq!(b[kx * m + ky], a[ky * m + kx]);
                }
            }
            assert_eq!(a[0], b[0], "the zero frequency stays put");
        }
    }

    #[test]
    fn positions_not_finite_in_pixels_are_refused() {
        // 1e300 m at 0.18 Å pixels overflows to inf: the case tests/fuzz_readers.rs found
        let e = object_grid(&[[f64::INFINITY; 2]; 4], 6).unwrap_err();
        assert!(
            e.contains("position 0") && e.contains("not a finite number"),
            "{e}"
        );
        let e = object_grid(&[[0.0, 0.0], [1.0, f64::NAN]], 6).unwrap_err();
        assert!(e.contains("position 1"), "{e}");
        let (c, shape) = object_grid(&[[0.0, 0.0], [1.0, 2.0]], 6).unwrap();
        assert_eq!((c, shape), (vec![[3.0, 3.0], [4.0, 5.0]], [7, 8]));
    }
}
