//! Calibration from the data (`ptytile calibrate`, docs/algorithm.md §16): the scan–detector
//! rotation and whether the detector is transposed, the bright-field disk radius (→
//! convergence semi-angle) and the defocus, measured from a raster scan of diffraction
//! patterns without a reconstruction.
//!
//! Frames. A pattern is indexed (ky, kx) = (row, column) as stored; q = (ky, kx) − the
//! bright-field disk centre, in pixels. With `data.detector_transpose` the reader swaps the
//! two indices; the *reader frame* is the stored frame, transposed or not. Scan point (iy, ix)
//! sits at p = s·R(θ)·(iy, ix) in the reader frame, R(θ) = [[cos θ, sin θ], [−sin θ, cos θ]]
//! acting on (y, x) column vectors, θ = `data.scan_rotation_deg` (`data::stem4d`).
//!
//! 1. **Disk.** The mean of up to [`MEAN_PATTERNS`] patterns spread over the scan; the
//!    bright-field level b is the mean of the pixels above half the maximum, the dark level d
//!    the median of the rest; each pixel counts w = clamp((I − d)/(b − d), 0, 1) of itself
//!    into the disk area A (sub-pixel: edge pixels count in part). Radius r = √(A/π), centre
//!    the w-weighted centroid; α = r·Δθ with Δθ the detector's angular sampling.
//! 2. **Centre of mass** c_j = Σ q I_j(q) / Σ I_j(q) over the pixels with |q| ≤ 0.92 r (the
//!    disk's edge carries the signal; the dark field mostly adds noise), in pixels. For a
//!    phase object the COM is (1/2π)·(|P|² ⋆ ∇φ)(p_j) in the object frame, a gradient. In scan
//!    coordinates u the field g = R(θ)ᵀ c must then be curl-free; with a = ∂_iy c_x − ∂_ix c_y
//!    and b = ∂_iy c_y + ∂_ix c_x (central differences after a Gaussian blur of σ = 1 scan
//!    step and removal of a plane, the descan), curl g = a cos θ + b sin θ, so
//!    E(θ) = Σ (a cos θ + b sin θ)² is a quadratic form in (cos θ, sin θ) whose smallest
//!    eigenvector gives θ up to 180° in closed form. Both candidates (transposed or not) are
//!    fitted; the smaller ratio λ_min/λ_max wins. The 180° ambiguity: div g = b cos θ − a sin θ
//!    is −∇²φ̃ up to a positive factor, negative at atoms for a positive phase object, where
//!    the dark field (counts beyond 1.15 r) is high: θ is the branch with div g anticorrelated
//!    with the dark-field image (or, without dark-field contrast, with div g skewed negative).
//! 3. **Parallax** (tilt-corrected bright field, docs/algorithm.md §16). The virtual image of
//!    a small detector at angle θ_k inside the disk is the central one shifted by
//!    d_k = defocus_m · θ_k in the object frame (weak phase object, small spatial
//!    frequencies; defocus_m > 0 is underfocus). 32 virtual detectors (radius 0.2 r) on rings
//!    of 0.12, 0.25, 0.5 and 0.7 r; each image's shift δu_k (scan steps) against the central
//!    detector's image by normalised cross-correlation over the overlap with a parabolic
//!    sub-pixel peak, the rings in turn, each searched around the shift the previous rings
//!    predict (a crystal's lattice repeats the correlation peak). Least squares
//!    s·δu_k = M θ_k gives M = defocus_m·R(θ)ᵀ (stored frame, transposed: M·T): det M < 0
//!    means the detector is transposed; the angle of M refines θ (its branch from step 2)
//!    and |M| with the branch's sign is the defocus.

use super::DataFile;
use crate::config::ZeroFrequency;
use crate::error::{Error, Result};

/// Patterns averaged for the bright-field disk (spread evenly over the scan).
pub const MEAN_PATTERNS: usize = 256;
/// COM mask radius, in units of the disk radius.
pub const COM_MASK: f64 = 0.92;
/// Inner radius of the dark-field image, in units of the disk radius.
pub const DARK_FIELD_INNER: f64 = 1.15;
/// Radii of the rings of virtual detectors (parallax), in units of the disk radius.
pub const RINGS: [f64; 4] = [0.12, 0.25, 0.5, 0.7];
/// Virtual detectors per ring.
pub const PER_RING: usize = 8;
/// Radius of a virtual detector, in units of the disk radius.
pub const VIRTUAL_RADIUS: f64 = 0.2;
/// Largest side of the scan block used for the parallax cross-correlations.
pub const PARALLAX_BLOCK: usize = 128;

/// A raster scan of diffraction patterns for calibration, as stored (not transposed).
pub trait ScanPatterns {
    /// Scan shape [Sy, Sx] (rows, columns; pattern j = iy·Sx + ix).
    fn scan_shape(&self) -> [usize; 2];
    /// Detector side M (px).
    fn detector_px(&self) -> usize;
    /// Patterns `start..start + len`, [len, M(ky), M(kx)] as stored but with the zero
    /// frequency at [M/2, M/2]. Errors: read failures, bad values, a range beyond the scan.
    fn read(&self, start: usize, len: usize) -> Result<Vec<f32>>;
}

/// An in-memory scan [Sy, Sx, M, M] (row-major f32, zero frequency at [M/2, M/2]).
pub struct ArrayScan<'a> {
    /// The patterns, Sy·Sx·M·M values.
    pub data: &'a [f32],
    /// [Sy, Sx].
    pub scan: [usize; 2],
    /// Detector side M.
    pub m: usize,
}

impl ScanPatterns for ArrayScan<'_> {
    fn scan_shape(&self) -> [usize; 2] {
        self.scan
    }
    fn detector_px(&self) -> usize {
        self.m
    }
    fn read(&self, start: usize, len: usize) -> Result<Vec<f32>> {
        let mm = self.m * self.m;
        let n = self.scan[0] * self.scan[1];
        if start + len > n || self.data.len() != n * mm {
            return Err(Error::new(
                "patterns",
                format!(
                    "patterns {start}..{} of {n} ({} values for {n} patterns of {}x{})",
                    start + len,
                    self.data.len(),
                    self.m,
                    self.m
                ),
            ));
        }
        Ok(self.data[start * mm..(start + len) * mm].to_vec())
    }
}

/// The scan shape of a 4D-STEM data file. Errors (`data.format`): any other layout (the
/// calibration needs a raster scan).
pub fn scan_shape(df: &DataFile) -> Result<[usize; 2]> {
    match &df.source {
        super::Source::Scan { sx, .. } if *sx > 0 => Ok([df.n / sx, *sx]),
        super::Source::Npy(a) if a.shape.len() == 4 => Ok([a.shape[0], a.shape[1]]),
        _ => Err(Error::new(
            "data.format",
            "ptytile calibrate needs a raster scan: a 4D-STEM array [Sy, Sx, Ky, Kx] (data.format = \"stem4d\"); set the keys by hand for other layouts",
        )),
    }
}

impl ScanPatterns for DataFile {
    fn scan_shape(&self) -> [usize; 2] {
        scan_shape(self).unwrap_or([0, 0])
    }
    fn detector_px(&self) -> usize {
        self.m
    }
    fn read(&self, start: usize, len: usize) -> Result<Vec<f32>> {
        let m = self.m;
        let mm = m * m;
        let mut raw = self.read_raw(start, len)?;
        for (b, pat) in raw.chunks_mut(mm).enumerate() {
            if let Some(bad) = &self.bad_pixels {
                pat.iter_mut()
                    .zip(bad)
                    .filter(|(_, b)| **b)
                    .for_each(|(v, _)| *v = 0.0);
            }
            self.check_pattern(pat, start + b)?;
            if self.zero_frequency == ZeroFrequency::Corner {
                let h = m / 2;
                let src = pat.to_vec();
                for ky in 0..m {
                    for kx in 0..m {
                        pat[((ky + h) % m) * m + (kx + h) % m] = src[ky * m + kx];
                    }
                }
            }
        }
        Ok(raw)
    }
}

/// The scan and detector sampling.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// Scan step s in m.
    pub step_m: f64,
    /// Detector angular sampling Δθ in rad per pixel.
    pub dtheta_rad: f64,
}

/// A measured value and its one-standard-deviation uncertainty (same unit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The value.
    pub value: f64,
    /// Its uncertainty (≥ 0).
    pub sigma: f64,
}

/// The bright-field disk of the mean pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Disk {
    /// Centre (ky, kx) in stored pixels, 0-based.
    pub centre_px: [f64; 2],
    /// Radius in pixels.
    pub radius_px: Estimate,
    /// Bright-field level over dark-field level of the mean pattern.
    pub contrast: f64,
}

/// The curl-free fit of the centre-of-mass field (module docs, step 2).
#[derive(Debug, Clone, PartialEq)]
pub struct ComFit {
    /// The candidate with the smaller curl.
    pub transpose: bool,
    /// θ (degrees, in (−180, 180]) of each candidate [not transposed, transposed], the
    /// 180° ambiguity resolved by the divergence.
    pub rotation_deg: [Estimate; 2],
    /// λ_min/λ_max of each candidate: the curl left at the best θ relative to the worst.
    pub curl_ratio: [f64; 2],
    /// Correlation of the divergence with the dark-field image at the chosen θ (negative
    /// for a positive phase object).
    pub divergence_dark_field: f64,
    /// E(θ)/λ_max of each candidate at θ = 0, 1, …, 359°.
    pub curve: [Vec<f64>; 2],
}

/// The bright-field parallax fit (module docs, step 3).
#[derive(Debug, Clone, PartialEq)]
pub struct Parallax {
    /// M in m per rad (s·δu = M θ, θ in the stored frame), [[M_yy, M_yx], [M_xy, M_xx]].
    pub matrix: [[f64; 2]; 2],
    /// Shifts (scan steps, (iy, ix)) and angles (rad, stored frame (y, x)) of the virtual
    /// detectors, ring by ring.
    pub shifts: Vec<([f64; 2], [f64; 2])>,
    /// Largest |shift| in scan steps: under one, the parallax says little.
    pub max_shift_steps: f64,
    /// RMS residual of the least squares, in m.
    pub residual_m: f64,
}

/// Everything `ptytile calibrate` measures. The four values are each a result: a fit that
/// fails is an [`Error`] naming the key to set by hand.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// [Sy, Sx].
    pub scan: [usize; 2],
    /// Detector side M.
    pub m: usize,
    /// The bright-field disk.
    pub disk: Result<Disk>,
    /// The curl-free fit.
    pub com: Result<ComFit>,
    /// The parallax fit.
    pub parallax: Result<Parallax>,
    /// `data.detector_transpose`.
    pub detector_transpose: Result<bool>,
    /// `data.scan_rotation_deg`, degrees in (−180, 180].
    pub scan_rotation_deg: Result<Estimate>,
    /// `experiment.convergence_semiangle_mrad`.
    pub convergence_semiangle_mrad: Result<Estimate>,
    /// `experiment.defocus_m` (positive = underfocus).
    pub defocus_m: Result<Estimate>,
    /// The COM field in scan coordinates g = R(θ)ᵀ c at the found orientation (blurred by
    /// σ = 1 scan step; zeros without an orientation), [Sy·Sx] of (g_iy, g_ix) in detector
    /// pixels.
    pub com_field: Vec<[f64; 2]>,
    /// Its divergence (blurred, [Sy·Sx], 0 on the border).
    pub divergence: Vec<f64>,
}

/// Angle in degrees wrapped into (−180, 180].
pub fn wrap_deg(a: f64) -> f64 {
    let w = a.rem_euclid(360.0);
    if w > 180.0 {
        w - 360.0
    } else {
        w
    }
}

/// Measure orientation, disk and defocus of `src` (module docs).
///
/// Errors: only read failures; fits that fail are errors inside the [`Calibration`].
pub fn calibrate(src: &dyn ScanPatterns, setup: Setup) -> Result<Calibration> {
    let [sy, sx] = src.scan_shape();
    let m = src.detector_px();
    let n = sy * sx;
    if n == 0 || m < 2 {
        return Err(Error::new(
            "patterns",
            format!("empty scan {sy}x{sx} of {m}x{m} patterns"),
        ));
    }
    if !(setup.step_m.is_finite()
        && setup.step_m > 0.0
        && setup.dtheta_rad.is_finite()
        && setup.dtheta_rad > 0.0)
    {
        return Err(Error::new(
            "calibrate",
            format!(
                "scan step {} m and angular sampling {} rad must be positive",
                setup.step_m, setup.dtheta_rad
            ),
        ));
    }
    let mean = mean_pattern(src, n, m)?;
    let disk = fit_disk(&mean, m);
    let sums = accumulate(src, n, m, disk.as_ref().ok())?;
    let com = com_fit(&sums.com, &sums.com_full, &sums.dark, [sy, sx]);
    let parallax = match &disk {
        Ok(d) => parallax(&sums.virtual_images, &sums.angles_px, [sy, sx], d, setup),
        Err(_) => Err(Error::new(
            "experiment.defocus_m",
            "no bright-field disk, so no parallax: set experiment.defocus_m by hand",
        )),
    };
    let convergence_semiangle_mrad = match &disk {
        Ok(d) => Ok(Estimate {
            value: d.radius_px.value * setup.dtheta_rad * 1e3,
            sigma: d.radius_px.sigma * setup.dtheta_rad * 1e3,
        }),
        Err(e) => Err(Error::new(
            "experiment.convergence_semiangle_mrad",
            format!(
                "{}: set experiment.convergence_semiangle_mrad by hand",
                e.msg
            ),
        )),
    };
    let (transpose, rotation, defocus) = combine(&com, &parallax, setup);
    let (com_field, divergence) = match (&transpose, &rotation) {
        (Ok(t), Ok(r)) => oriented_field(&sums.com, [sy, sx], *t, r.value),
        _ => (vec![[0.0; 2]; n], vec![0.0; n]),
    };
    Ok(Calibration {
        scan: [sy, sx],
        m,
        disk,
        com,
        parallax,
        detector_transpose: transpose,
        scan_rotation_deg: rotation,
        convergence_semiangle_mrad,
        defocus_m: defocus,
        com_field,
        divergence,
    })
}

/// Mean of up to [`MEAN_PATTERNS`] of the `n` patterns of `src`, spread over them, [M·M]
/// (f64, the stored layout with the zero frequency at [M/2, M/2]). Any source of `n`
/// patterns will do (the scan shape is not used). Errors: those of `src.read`.
pub fn mean_pattern(src: &dyn ScanPatterns, n: usize, m: usize) -> Result<Vec<f64>> {
    let k = n.min(MEAN_PATTERNS);
    let mut mean = vec![0f64; m * m];
    for i in 0..k {
        let p = src.read(i * n / k, 1)?;
        mean.iter_mut()
            .zip(&p)
            .for_each(|(a, v)| *a += *v as f64 / k as f64);
    }
    Ok(mean)
}

/// Fit the bright-field disk of `mean` [M·M] (module docs, step 1). Errors
/// (`experiment.convergence_semiangle_mrad`): an empty pattern, no bright disk against the
/// dark field (contrast under 3), a disk under 1 px in radius or cut by the detector edge.
pub fn fit_disk(mean: &[f64], m: usize) -> Result<Disk> {
    let key = "experiment.convergence_semiangle_mrad";
    let max = mean.iter().cloned().fold(0.0, f64::max);
    if !(max > 0.0 && max.is_finite()) {
        return Err(Error::new(
            key,
            "the mean pattern is empty: no bright-field disk",
        ));
    }
    let (hi, lo): (Vec<f64>, Vec<f64>) = mean.iter().partition(|v| **v > 0.5 * max);
    let bf = hi.iter().sum::<f64>() / hi.len().max(1) as f64;
    let mut lo = lo;
    lo.sort_by(f64::total_cmp);
    let dark = lo.get(lo.len() / 2).copied().unwrap_or(0.0).max(0.0);
    let contrast = if dark > 0.0 { bf / dark } else { f64::INFINITY };
    if contrast < 3.0 {
        return Err(Error::new(
            key,
            format!("no bright-field disk in the mean pattern (bright/dark level {contrast:.2})"),
        ));
    }
    let (mut area, mut cy, mut cx) = (0.0, 0.0, 0.0);
    let count = |f: f64| mean.iter().filter(|v| **v > dark + f * (bf - dark)).count() as f64;
    for ky in 0..m {
        for kx in 0..m {
            let w = ((mean[ky * m + kx] - dark) / (bf - dark)).clamp(0.0, 1.0);
            area += w;
            cy += w * ky as f64;
            cx += w * kx as f64;
        }
    }
    let r = (area / std::f64::consts::PI).sqrt();
    let (cy, cx) = (cy / area, cx / area);
    let spread = ((count(0.35) / std::f64::consts::PI).sqrt()
        - (count(0.65) / std::f64::consts::PI).sqrt())
    .abs()
        / 2.0;
    if r < 1.0 {
        return Err(Error::new(
            key,
            format!("the bright-field disk is under 1 px in radius ({r:.2} px)"),
        ));
    }
    if cy - r < -0.5 || cx - r < -0.5 || cy + r > m as f64 - 0.5 || cx + r > m as f64 - 0.5 {
        return Err(Error::new(key, format!("the bright-field disk (radius {r:.1} px at ({cy:.1}, {cx:.1})) is cut by the detector edge")));
    }
    Ok(Disk {
        centre_px: [cy, cx],
        radius_px: Estimate {
            value: r,
            sigma: spread.max(0.02),
        },
        contrast,
    })
}

/// Per-pattern sums of one pass over the scan.
struct Sums {
    /// COM (c_y, c_x) in px of the stored frame, from the disk centre, [N]: over the pixels
    /// within [`COM_MASK`]·r, and over the whole pattern.
    com: Vec<[f64; 2]>,
    com_full: Vec<[f64; 2]>,
    /// Counts beyond [`DARK_FIELD_INNER`]·r, [N].
    dark: Vec<f64>,
    /// Virtual detector images: [0] the central detector, then the rings, each [N].
    virtual_images: Vec<Vec<f64>>,
    /// Centre of each virtual detector relative to the disk centre, (y, x) px, stored frame.
    angles_px: Vec<[f64; 2]>,
}

fn accumulate(src: &dyn ScanPatterns, n: usize, m: usize, disk: Option<&Disk>) -> Result<Sums> {
    let mm = m * m;
    let (centre, r) = match disk {
        Some(d) => (d.centre_px, d.radius_px.value),
        None => ([(m / 2) as f64; 2], f64::INFINITY),
    };
    let rc2 = (COM_MASK * r).powi(2);
    let rd2 = (DARK_FIELD_INNER * r).powi(2);
    let mut angles_px = Vec::new();
    if disk.is_some() {
        angles_px.push([0.0, 0.0]);
        for (i, rho) in RINGS.iter().enumerate() {
            for k in 0..PER_RING {
                let a = 2.0 * std::f64::consts::PI * (k as f64 + 0.5 * (i % 2) as f64)
                    / PER_RING as f64;
                angles_px.push([rho * r * a.sin(), rho * r * a.cos()]);
            }
        }
    }
    let wr2 = (VIRTUAL_RADIUS * r).max(1.0).powi(2);
    let pixels: Vec<Vec<usize>> = angles_px
        .iter()
        .map(|q| {
            (0..mm)
                .filter(|&i| {
                    let (dy, dx) = (
                        (i / m) as f64 - centre[0] - q[0],
                        (i % m) as f64 - centre[1] - q[1],
                    );
                    dy * dy + dx * dx <= wr2
                })
                .collect()
        })
        .collect();
    let mut com = Vec::with_capacity(n);
    let mut com_full = Vec::with_capacity(n);
    let mut dark = Vec::with_capacity(n);
    let mut virtual_images = vec![Vec::with_capacity(n); angles_px.len()];
    let chunk = (super::READ_CHUNK_BYTES / (4 * mm).max(1)).max(1);
    let mut j = 0;
    while j < n {
        let len = chunk.min(n - j);
        let block = src.read(j, len)?;
        for pat in block.chunks(mm) {
            let (mut t, mut sy, mut sx, mut d) = (0.0, 0.0, 0.0, 0.0);
            let (mut ft, mut fy, mut fx) = (0.0, 0.0, 0.0);
            for ky in 0..m {
                let dy = ky as f64 - centre[0];
                for kx in 0..m {
                    let dx = kx as f64 - centre[1];
                    let v = pat[ky * m + kx] as f64;
                    let q2 = dy * dy + dx * dx;
                    ft += v;
                    fy += v * dy;
                    fx += v * dx;
                    if q2 <= rc2 {
                        t += v;
                        sy += v * dy;
                        sx += v * dx;
                    }
                    if q2 > rd2 {
                        d += v;
                    }
                }
            }
            com.push(if t > 0.0 {
                [sy / t, sx / t]
            } else {
                [0.0, 0.0]
            });
            com_full.push(if ft > 0.0 {
                [fy / ft, fx / ft]
            } else {
                [0.0, 0.0]
            });
            dark.push(d);
            for (img, px) in virtual_images.iter_mut().zip(&pixels) {
                img.push(px.iter().map(|&i| pat[i] as f64).sum());
            }
        }
        j += len;
    }
    Ok(Sums {
        com,
        com_full,
        dark,
        virtual_images,
        angles_px,
    })
}

/// `f` [Sy·Sx] minus its least-squares plane a + b·iy + c·ix.
fn remove_plane(f: &[f64], [sy, sx]: [usize; 2]) -> Vec<f64> {
    // the grid is regular: iy and ix are orthogonal after removing their means
    let n = (sy * sx) as f64;
    let (my, mx) = ((sy as f64 - 1.0) / 2.0, (sx as f64 - 1.0) / 2.0);
    let mean = f.iter().sum::<f64>() / n;
    let (mut fy, mut fx, mut yy, mut xx) = (0.0, 0.0, 0.0, 0.0);
    for (j, v) in f.iter().enumerate() {
        let (y, x) = ((j / sx) as f64 - my, (j % sx) as f64 - mx);
        fy += v * y;
        fx += v * x;
        yy += y * y;
        xx += x * x;
    }
    let (b, c) = (
        if yy > 0.0 { fy / yy } else { 0.0 },
        if xx > 0.0 { fx / xx } else { 0.0 },
    );
    f.iter()
        .enumerate()
        .map(|(j, v)| v - mean - b * ((j / sx) as f64 - my) - c * ((j % sx) as f64 - mx))
        .collect()
}

/// Gaussian blur of σ = 1 scan step (kernel radius 3), normalised at the edges.
fn blur(f: &[f64], [sy, sx]: [usize; 2]) -> Vec<f64> {
    let g: Vec<f64> = (-3i64..=3).map(|k| (-(k * k) as f64 / 2.0).exp()).collect();
    let pass = |f: &[f64], along_y: bool| -> Vec<f64> {
        let mut out = vec![0.0; f.len()];
        for iy in 0..sy {
            for ix in 0..sx {
                let (mut s, mut w) = (0.0, 0.0);
                for (t, gk) in g.iter().enumerate() {
                    let k = t as i64 - 3;
                    let (y, x) = if along_y {
                        (iy as i64 + k, ix as i64)
                    } else {
                        (iy as i64, ix as i64 + k)
                    };
                    if y >= 0 && x >= 0 && (y as usize) < sy && (x as usize) < sx {
                        s += gk * f[y as usize * sx + x as usize];
                        w += gk;
                    }
                }
                out[iy * sx + ix] = s / w;
            }
        }
        out
    };
    pass(&pass(f, true), false)
}

/// a = ∂_iy c_x − ∂_ix c_y and b = ∂_iy c_y + ∂_ix c_x at the interior points (central
/// differences) of the blurred, plane-free field `c` (reader frame).
fn curl_terms(c: &[[f64; 2]], [sy, sx]: [usize; 2]) -> (Vec<f64>, Vec<f64>, Vec<usize>) {
    let comp = |i: usize| {
        blur(
            &remove_plane(&c.iter().map(|v| v[i]).collect::<Vec<_>>(), [sy, sx]),
            [sy, sx],
        )
    };
    let (cy, cx) = (comp(0), comp(1));
    let (mut a, mut b, mut at) = (Vec::new(), Vec::new(), Vec::new());
    for iy in 1..sy.saturating_sub(1) {
        for ix in 1..sx.saturating_sub(1) {
            let j = iy * sx + ix;
            let dy = |f: &[f64]| (f[j + sx] - f[j - sx]) / 2.0;
            let dx = |f: &[f64]| (f[j + 1] - f[j - 1]) / 2.0;
            a.push(dy(&cx) - dx(&cy));
            b.push(dy(&cy) + dx(&cx));
            at.push(j);
        }
    }
    (a, b, at)
}

/// Pearson correlation of two equally long series (0 when either is constant).
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += (x - ma) * (y - mb);
        aa += (x - ma).powi(2);
        bb += (y - mb).powi(2);
    }
    if aa > 0.0 && bb > 0.0 {
        ab / (aa * bb).sqrt()
    } else {
        0.0
    }
}

/// The curl-free fit (module docs, step 2): θ from `com` (the disk's COM), the 180° branch
/// from the divergence of `com_full` (the whole pattern's COM, the one the COM theorem makes
/// a gradient) against the `dark`-field image; all [Sy·Sx]. Errors
/// (`data.scan_rotation_deg`): a scan under 5 × 5 or a COM field without signal (no θ leaves
/// markedly less curl than another).
pub fn com_fit(
    com: &[[f64; 2]],
    com_full: &[[f64; 2]],
    dark: &[f64],
    scan: [usize; 2],
) -> Result<ComFit> {
    let key = "data.scan_rotation_deg";
    if scan[0] < 5 || scan[1] < 5 {
        return Err(Error::new(key, format!("a {}x{} scan is too small for the centre-of-mass fit: set data.scan_rotation_deg and data.detector_transpose by hand", scan[0], scan[1])));
    }
    let dark_b = blur(&remove_plane(dark, scan), scan);
    let mut rot = [Estimate {
        value: 0.0,
        sigma: 0.0,
    }; 2];
    let mut ratio = [1.0; 2];
    let mut corr = [0.0; 2];
    let mut curve = [Vec::new(), Vec::new()];
    for t in 0..2 {
        let c: Vec<[f64; 2]> = com
            .iter()
            .map(|v| if t == 1 { [v[1], v[0]] } else { *v })
            .collect();
        let (a, b, at) = curl_terms(&c, scan);
        let saa: f64 = a.iter().map(|v| v * v).sum();
        let sbb: f64 = b.iter().map(|v| v * v).sum();
        let sab: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let (h, d) = (
            (saa + sbb) / 2.0,
            (((saa - sbb) / 2.0).powi(2) + sab * sab).sqrt(),
        );
        let (lmin, lmax) = (h - d, h + d);
        if !(lmax > 0.0 && lmax.is_finite()) {
            return Err(Error::new(key, "the centre-of-mass field is constant: set data.scan_rotation_deg and data.detector_transpose by hand"));
        }
        // eigenvector (cos θ, sin θ) of λ_min
        let (v1, v2) = ((sab, lmin - saa), (lmin - sbb, sab));
        let v = if v1.0.hypot(v1.1) >= v2.0.hypot(v2.1) {
            v1
        } else {
            v2
        };
        let mut theta = v.1.atan2(v.0);
        if v.0 == 0.0 && v.1 == 0.0 {
            theta = 0.0;
        }
        let full: Vec<[f64; 2]> = com_full
            .iter()
            .map(|v| if t == 1 { [v[1], v[0]] } else { *v })
            .collect();
        let (fa, fb, _) = curl_terms(&full, scan);
        let div: Vec<f64> = fa
            .iter()
            .zip(&fb)
            .map(|(x, y)| y * theta.cos() - x * theta.sin())
            .collect();
        let df: Vec<f64> = at.iter().map(|&j| dark_b[j]).collect();
        let mut k = correlation(&div, &df);
        let flip = if k.abs() >= 0.05 {
            k > 0.0
        } else {
            let mu = div.iter().sum::<f64>() / div.len() as f64;
            div.iter().map(|x| (x - mu).powi(3)).sum::<f64>() > 0.0
        };
        if flip {
            theta += std::f64::consts::PI;
            k = -k;
        }
        // linearised least squares: E(θ) ≈ λ_min + (λ_max − λ_min) δθ², residual variance
        // λ_min / (n_eff − 1) with n_eff = n / (4πσ²) independent points after the blur
        let n_eff = (a.len() as f64 / (4.0 * std::f64::consts::PI)).max(2.0);
        let sigma = (lmin.max(0.0) / ((n_eff - 1.0) * (lmax - lmin).max(1e-300)))
            .sqrt()
            .to_degrees();
        rot[t] = Estimate {
            value: wrap_deg(theta.to_degrees()),
            sigma: sigma.min(180.0),
        };
        ratio[t] = lmin.max(0.0) / lmax;
        corr[t] = k;
        curve[t] = (0..360)
            .map(|d| {
                let (s, c) = (d as f64).to_radians().sin_cos();
                (saa * c * c + 2.0 * sab * s * c + sbb * s * s) / lmax
            })
            .collect();
    }
    let t = ratio[1] < ratio[0];
    if ratio[t as usize] > 0.8 {
        return Err(Error::new(
            key,
            format!("the centre-of-mass field has no usable signal (curl left {:.2} and {:.2} of the most): set data.scan_rotation_deg and data.detector_transpose by hand", ratio[0], ratio[1]),
        ));
    }
    Ok(ComFit {
        transpose: t,
        rotation_deg: rot,
        curl_ratio: ratio,
        divergence_dark_field: corr[t as usize],
        curve,
    })
}

/// Shift d (scan steps, (iy, ix)) maximising the Pearson correlation of a(u + d) with b(u)
/// over their overlap, searched over integer shifts within `radius` of `around`, refined by a
/// parabola through the peak and its neighbours. `None` when no shift leaves an overlap of
/// at least a quarter of the images.
fn ncc_shift(
    a: &[f64],
    b: &[f64],
    [sy, sx]: [usize; 2],
    around: [f64; 2],
    radius: i64,
) -> Option<[f64; 2]> {
    let c0 = [around[0].round() as i64, around[1].round() as i64];
    let w = 2 * radius + 1;
    let mut cc = vec![f64::NEG_INFINITY; (w * w) as usize];
    let (sy, sx) = (sy as i64, sx as i64);
    for i in 0..w {
        for k in 0..w {
            let (dy, dx) = (c0[0] + i - radius, c0[1] + k - radius);
            let (y0, y1) = (0.max(-dy), sy.min(sy - dy));
            let (x0, x1) = (0.max(-dx), sx.min(sx - dx));
            if (y1 - y0) * (x1 - x0) * 4 < sy * sx {
                continue;
            }
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for y in y0..y1 {
                for x in x0..x1 {
                    let va = a[((y + dy) * sx + x + dx) as usize];
                    let vb = b[(y * sx + x) as usize];
                    sa += va;
                    sb += vb;
                    saa += va * va;
                    sbb += vb * vb;
                    sab += va * vb;
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as f64;
            let (va, vb) = (saa - sa * sa / n, sbb - sb * sb / n);
            if va > 0.0 && vb > 0.0 {
                cc[(i * w + k) as usize] = (sab - sa * sb / n) / (va * vb).sqrt();
            }
        }
    }
    let best = (0..cc.len()).max_by(|&p, &q| cc[p].total_cmp(&cc[q]))?;
    if !cc[best].is_finite() {
        return None;
    }
    let (i, k) = (best as i64 / w, best as i64 % w);
    let at = |i: i64, k: i64| {
        if i >= 0 && k >= 0 && i < w && k < w {
            cc[(i * w + k) as usize]
        } else {
            f64::NEG_INFINITY
        }
    };
    let vertex = |m: f64, c: f64, p: f64| {
        let den = m - 2.0 * c + p;
        if m.is_finite() && p.is_finite() && den < 0.0 {
            (0.5 * (m - p) / den).clamp(-0.5, 0.5)
        } else {
            0.0
        }
    };
    let fy = vertex(at(i - 1, k), cc[best], at(i + 1, k));
    let fx = vertex(at(i, k - 1), cc[best], at(i, k + 1));
    Some([
        (c0[0] + i - radius) as f64 + fy,
        (c0[1] + k - radius) as f64 + fx,
    ])
}

/// Least squares s·δu = M θ over `rows` (δu in steps, θ in rad): M, RMS residual (m).
fn fit_matrix(rows: &[([f64; 2], [f64; 2])], step: f64) -> Option<([[f64; 2]; 2], f64)> {
    let (mut tt, mut dt) = ([[0.0; 2]; 2], [[0.0; 2]; 2]);
    for (d, t) in rows {
        for i in 0..2 {
            for k in 0..2 {
                tt[i][k] += t[i] * t[k];
                dt[i][k] += d[i] * step * t[k];
            }
        }
    }
    let det = tt[0][0] * tt[1][1] - tt[0][1] * tt[1][0];
    if !(det.abs() > 0.0) {
        return None;
    }
    let inv = [
        [tt[1][1] / det, -tt[0][1] / det],
        [-tt[1][0] / det, tt[0][0] / det],
    ];
    let mut mm = [[0.0; 2]; 2];
    for i in 0..2 {
        for k in 0..2 {
            mm[i][k] = dt[i][0] * inv[0][k] + dt[i][1] * inv[1][k];
        }
    }
    let res: f64 = rows
        .iter()
        .map(|(d, t)| {
            (0..2)
                .map(|i| (d[i] * step - mm[i][0] * t[0] - mm[i][1] * t[1]).powi(2))
                .sum::<f64>()
        })
        .sum();
    Some((mm, (res / (2 * rows.len()) as f64).sqrt()))
}

/// The parallax fit (module docs, step 3). Errors (`experiment.defocus_m`): a scan under
/// 5 × 5, or virtual images without contrast to correlate.
fn parallax(
    images: &[Vec<f64>],
    angles_px: &[[f64; 2]],
    scan: [usize; 2],
    _disk: &Disk,
    setup: Setup,
) -> Result<Parallax> {
    let key = "experiment.defocus_m";
    let fail = |why: &str| Error::new(key, format!("{why}: set experiment.defocus_m by hand"));
    if scan[0] < 5 || scan[1] < 5 || images.is_empty() {
        return Err(fail("the scan is too small for the bright-field parallax"));
    }
    // the central block of at most PARALLAX_BLOCK² scan points
    let by = scan[0].min(PARALLAX_BLOCK);
    let bx = scan[1].min(PARALLAX_BLOCK);
    let (oy, ox) = ((scan[0] - by) / 2, (scan[1] - bx) / 2);
    let cut = |img: &[f64]| -> Vec<f64> {
        (0..by * bx)
            .map(|j| img[(oy + j / bx) * scan[1] + ox + j % bx])
            .collect()
    };
    let centre = cut(&images[0]);
    let mut rows: Vec<([f64; 2], [f64; 2])> = Vec::new();
    let mut mat = [[0.0; 2]; 2];
    let first = ((by.min(bx) / 4) as i64).clamp(2, 8);
    for ring in 0..RINGS.len() {
        for k in 0..PER_RING {
            let i = 1 + ring * PER_RING + k;
            let t = [
                angles_px[i][0] * setup.dtheta_rad,
                angles_px[i][1] * setup.dtheta_rad,
            ];
            let pred = [
                (mat[0][0] * t[0] + mat[0][1] * t[1]) / setup.step_m,
                (mat[1][0] * t[0] + mat[1][1] * t[1]) / setup.step_m,
            ];
            let radius = if ring == 0 { first } else { 2 };
            if let Some(d) = ncc_shift(&cut(&images[i]), &centre, [by, bx], pred, radius) {
                rows.push((d, t));
            }
        }
        if rows.len() >= 3 {
            if let Some((m, _)) = fit_matrix(&rows, setup.step_m) {
                mat = m;
            }
        }
    }
    let (matrix, residual_m) = fit_matrix(&rows, setup.step_m)
        .ok_or_else(|| fail("no virtual bright-field images to correlate"))?;
    if !matrix.iter().flatten().all(|v| v.is_finite()) {
        return Err(fail("the bright-field parallax fit did not converge"));
    }
    let max_shift_steps = rows
        .iter()
        .map(|(d, _)| d[0].hypot(d[1]))
        .fold(0.0, f64::max);
    Ok(Parallax {
        matrix,
        shifts: rows,
        max_shift_steps,
        residual_m,
    })
}

/// The final transpose, rotation and defocus from the two fits (module docs).
#[allow(clippy::type_complexity)]
fn combine(
    com: &Result<ComFit>,
    par: &Result<Parallax>,
    setup: Setup,
) -> (Result<bool>, Result<Estimate>, Result<Estimate>) {
    // the parallax speaks when its shifts reach a scan step and its fit stands well above
    // the residual
    let strong = par.as_ref().ok().filter(|p| {
        let m = p.matrix;
        let size =
            ((m[0][0].powi(2) + m[0][1].powi(2) + m[1][0].powi(2) + m[1][1].powi(2)) / 2.0).sqrt();
        let sum_t2: f64 = p
            .shifts
            .iter()
            .map(|(_, t)| t[0] * t[0] + t[1] * t[1])
            .sum();
        p.max_shift_steps >= 1.0 && size * sum_t2.sqrt() > 10.0 * p.residual_m
    });
    let transpose = match (strong, com) {
        (Some(p), _) => Ok(p.matrix[0][0] * p.matrix[1][1] - p.matrix[0][1] * p.matrix[1][0] < 0.0),
        (None, Ok(c)) => Ok(c.transpose),
        // the centre-of-mass errors already say which keys to set by hand
        (None, Err(e)) if e.msg.contains("by hand") => {
            Err(Error::new("data.detector_transpose", e.msg.clone()))
        }
        (None, Err(e)) => Err(Error::new(
            "data.detector_transpose",
            format!("{}; set data.detector_transpose by hand", e.msg),
        )),
    };
    let Ok(t) = transpose else {
        let e = transpose.clone().expect_err("checked");
        let d = match par {
            Err(e) => Err(e.clone()),
            Ok(_) => Err(Error::new(
                "experiment.defocus_m",
                "no orientation to read the parallax in: set experiment.defocus_m by hand",
            )),
        };
        return (
            transpose,
            Err(Error::new("data.scan_rotation_deg", e.msg)),
            d,
        );
    };
    let com_theta = com.as_ref().ok().map(|c| c.rotation_deg[t as usize]);
    let rotation = match strong {
        Some(p) => {
            // M_t = M·T when transposed (the angles' components swap)
            let m = if t {
                [
                    [p.matrix[0][1], p.matrix[0][0]],
                    [p.matrix[1][1], p.matrix[1][0]],
                ]
            } else {
                p.matrix
            };
            let psi = (m[1][0] - m[0][1]).atan2(m[0][0] + m[1][1]).to_degrees();
            let size = (m[1][0] - m[0][1]).hypot(m[0][0] + m[1][1]) / 2.0;
            let sum_t2: f64 = p
                .shifts
                .iter()
                .map(|(_, t)| t[0] * t[0] + t[1] * t[1])
                .sum();
            let sigma = (p.residual_m / (size * sum_t2.sqrt()).max(1e-300)).to_degrees();
            // the branch (θ or θ + 180°: underfocus or overfocus) from the COM divergence;
            // without one, underfocus
            let value = match com_theta {
                Some(c) if wrap_deg(psi - c.value).abs() > 90.0 => wrap_deg(psi + 180.0),
                _ => wrap_deg(psi),
            };
            Ok(Estimate { value, sigma })
        }
        None => match com {
            Ok(c) => Ok(c.rotation_deg[t as usize]),
            Err(e) => Err(e.clone()),
        },
    };
    let defocus = match (par, &rotation) {
        (Err(e), _) => Err(e.clone()),
        (_, Err(_)) => Err(Error::new(
            "experiment.defocus_m",
            "no scan rotation to read the parallax in: set experiment.defocus_m by hand",
        )),
        (Ok(p), Ok(r)) => Ok(defocus_from(p, t, r.value, setup)),
    };
    (transpose, rotation, defocus)
}

/// defocus_m = Σ d_k·θ_k / Σ |θ_k|² with d_k = s·R(θ)·δu_k (reader frame); σ: the larger of
/// the residual's and the spread between the rings' own estimates.
fn defocus_from(p: &Parallax, t: bool, theta_deg: f64, setup: Setup) -> Estimate {
    let (s, c) = theta_deg.to_radians().sin_cos();
    let phys = |d: &[f64; 2]| {
        [
            setup.step_m * (c * d[0] + s * d[1]),
            setup.step_m * (-s * d[0] + c * d[1]),
        ]
    };
    let ang = |a: &[f64; 2]| if t { [a[1], a[0]] } else { *a };
    let fit = |rows: &[([f64; 2], [f64; 2])]| -> (f64, f64, f64) {
        let (mut dt, mut tt) = (0.0, 0.0);
        for (d, a) in rows {
            let (d, a) = (phys(d), ang(a));
            dt += d[0] * a[0] + d[1] * a[1];
            tt += a[0] * a[0] + a[1] * a[1];
        }
        let f = if tt > 0.0 { dt / tt } else { 0.0 };
        let res: f64 = rows
            .iter()
            .map(|(d, a)| {
                let (d, a) = (phys(d), ang(a));
                (d[0] - f * a[0]).powi(2) + (d[1] - f * a[1]).powi(2)
            })
            .sum();
        (f, res, tt)
    };
    let (value, res, tt) = fit(&p.shifts);
    let stat =
        (res / (2 * p.shifts.len()).saturating_sub(1).max(1) as f64).sqrt() / tt.sqrt().max(1e-300);
    let rings: Vec<f64> = p
        .shifts
        .chunks(PER_RING)
        .filter(|r| r.len() >= 3)
        .map(|r| fit(r).0)
        .collect();
    let spread = if rings.len() >= 2 {
        let mu = rings.iter().sum::<f64>() / rings.len() as f64;
        (rings.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / (rings.len() - 1) as f64).sqrt()
    } else {
        0.0
    };
    Estimate {
        value,
        sigma: stat.max(spread),
    }
}

/// The COM field in scan coordinates at orientation (t, θ) and its divergence (module docs).
fn oriented_field(
    com: &[[f64; 2]],
    scan: [usize; 2],
    t: bool,
    theta_deg: f64,
) -> (Vec<[f64; 2]>, Vec<f64>) {
    let (s, c) = theta_deg.to_radians().sin_cos();
    let comp = |i: usize| {
        blur(
            &com.iter().map(|v| v[i ^ t as usize]).collect::<Vec<_>>(),
            scan,
        )
    };
    let (cy, cx) = (comp(0), comp(1));
    let g: Vec<[f64; 2]> = cy
        .iter()
        .zip(&cx)
        .map(|(y, x)| [c * y - s * x, s * y + c * x])
        .collect();
    let mut div = vec![0.0; g.len()];
    if scan[0] >= 3 && scan[1] >= 3 {
        let oriented: Vec<[f64; 2]> = com
            .iter()
            .map(|v| if t { [v[1], v[0]] } else { *v })
            .collect();
        let (a, b, at) = curl_terms(&oriented, scan);
        for ((x, y), j) in a.iter().zip(&b).zip(at) {
            div[j] = y * c - x * s;
        }
    }
    (g, div)
}

/// Iterations of the configured reconstruction that score a coarse defocus candidate
/// ([`search_defocus`]).
pub const DEFOCUS_COARSE_ITERATIONS: usize = 5;
/// Iterations that score a candidate while refining ([`search_defocus`]).
pub const DEFOCUS_FINE_ITERATIONS: usize = 10;

/// The defocus found by the quadratic-phase search ([`search_defocus`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DefocusSearch {
    /// `experiment.defocus_m` (m, positive = underfocus); `sigma` is the resolution of the
    /// last refinement (a quarter of its spacing), not a statistical error.
    pub defocus_m: Estimate,
    /// Spacing of the coarse candidates, λ / (2 α²), in m: the defocus that changes the
    /// quadratic phase at the pupil's edge by π/2.
    pub step_m: f64,
    /// The coarse candidates are k · `step_m` for |k| ≤ this (the widest makes a probe as
    /// wide as the window).
    pub half_range: usize,
    /// (defocus in m, loss after [`DEFOCUS_COARSE_ITERATIONS`]) of every coarse candidate.
    pub coarse: Vec<(f64, f64)>,
    /// (defocus in m, loss after [`DEFOCUS_FINE_ITERATIONS`]) of every refinement candidate,
    /// in the order tried.
    pub fine: Vec<(f64, f64)>,
    /// Reconstruction iterations run in all.
    pub iterations: usize,
}

/// The defocus of a probe P(k) = A(k) exp(−iχ(k)), χ = −(π/λ) Δf θ², whose pupil A is known
/// (from the mean pattern or the aperture) but whose phase is not: a search over
/// quadratic-phase candidates, each scored by the loss after a few iterations of the
/// reconstruction started from that probe (docs/algorithm.md §16, "X-ray: the defocus by
/// a search").
///
/// `score(Δf, iterations)` runs the reconstruction from the probe of defocus Δf (m) and
/// returns its loss after `iterations`; `wavelength_m` λ; `alpha_rad` the pupil's outer
/// semi-angle α; `radius_px` the same in detector pixels (α / Δθ). Coarse: Δf = k·δ,
/// δ = λ / (2α²), |k| ≤ ⌈radius_px⌉ (2α·Δf up to the window M·Δx), scored after
/// [`DEFOCUS_COARSE_ITERATIONS`]. Refinement after [`DEFOCUS_FINE_ITERATIONS`]: three
/// candidates δ/2 apart about the best, walked downhill (at most four steps) until the middle
/// is the least, a parabola's vertex through them; then again δ/4 apart about that vertex.
///
/// Errors (`experiment.defocus_m`, "set it by hand"): a wavelength, angle or radius that is
/// not positive; a score that is not finite; the least coarse loss at the edge of the range
/// (the probe would be wider than the window); those of `score`.
pub fn search_defocus(
    wavelength_m: f64,
    alpha_rad: f64,
    radius_px: f64,
    score: &mut dyn FnMut(f64, usize) -> Result<f64>,
) -> Result<DefocusSearch> {
    let key = "experiment.defocus_m";
    if !(wavelength_m > 0.0 && alpha_rad > 0.0 && radius_px >= 1.0 && radius_px.is_finite()) {
        return Err(Error::new(
            key,
            format!("no pupil to search a defocus for (wavelength {wavelength_m} m, semi-angle {alpha_rad} rad, radius {radius_px} px): set it by hand"),
        ));
    }
    let step = wavelength_m / (2.0 * alpha_rad * alpha_rad);
    let half = radius_px.ceil() as usize;
    let mut iterations = 0;
    let mut eval = |d: f64, n: usize, iterations: &mut usize| -> Result<f64> {
        let l = score(d, n)?;
        *iterations += n;
        if !l.is_finite() {
            return Err(Error::new(
                key,
                format!("the loss from a probe of defocus {d:.4e} m is {l}: set it by hand"),
            ));
        }
        Ok(l)
    };
    let mut coarse = Vec::with_capacity(2 * half + 1);
    for k in -(half as i64)..=half as i64 {
        let d = k as f64 * step;
        coarse.push((d, eval(d, DEFOCUS_COARSE_ITERATIONS, &mut iterations)?));
    }
    let (kb, _) = coarse
        .iter()
        .enumerate()
        .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
        .expect("at least three candidates");
    if kb == 0 || kb == coarse.len() - 1 {
        return Err(Error::new(
            key,
            format!(
                "the loss is least at the edge of the searched range ±{:.3e} m, where the probe is as wide as the window: set it by hand",
                half as f64 * step
            ),
        ));
    }
    let mut fine = Vec::new();
    let mut centre = coarse[kb].0;
    let mut h = step / 2.0;
    for _ in 0..2 {
        let mut f = |d: f64, fine: &mut Vec<(f64, f64)>, it: &mut usize| -> Result<f64> {
            let l = eval(d, DEFOCUS_FINE_ITERATIONS, it)?;
            fine.push((d, l));
            Ok(l)
        };
        let mut y = [
            f(centre - h, &mut fine, &mut iterations)?,
            f(centre, &mut fine, &mut iterations)?,
            f(centre + h, &mut fine, &mut iterations)?,
        ];
        for _ in 0..4 {
            if y[0] < y[1] && y[0] <= y[2] {
                centre -= h;
                y = [f(centre - h, &mut fine, &mut iterations)?, y[0], y[1]];
            } else if y[2] < y[1] {
                centre += h;
                y = [y[1], y[2], f(centre + h, &mut fine, &mut iterations)?];
            } else {
                break;
            }
        }
        centre += h * parabola_vertex(y);
        h /= 2.0;
    }
    Ok(DefocusSearch {
        defocus_m: Estimate {
            value: centre,
            sigma: h / 2.0,
        },
        step_m: step,
        half_range: half,
        coarse,
        fine,
        iterations,
    })
}

/// Vertex of the parabola through (−1, y₀), (0, y₁), (1, y₂), clamped to [−1, 1]; 0 when
/// the three do not curve upwards (then the middle is kept).
pub fn parabola_vertex(y: [f64; 3]) -> f64 {
    let curv = y[0] - 2.0 * y[1] + y[2];
    if curv > 0.0 {
        (0.5 * (y[0] - y[2]) / curv).clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic COM field: the gradient of a smooth random-ish potential, in the reader
    /// frame for orientation (t, θ), recovered by the fit.
    #[test]
    fn curl_fit_recovers_rotation_and_transpose_of_a_gradient_field() {
        let (sy, sx) = (40, 40);
        let phi =
            |y: f64, x: f64| (0.4 * y).sin() * (0.3 * x).cos() + 0.5 * (0.23 * x + 0.11 * y).sin();
        let grad = |y: f64, x: f64| {
            let h = 1e-4;
            [
                (phi(y + h, x) - phi(y - h, x)) / (2.0 * h),
                (phi(y, x + h) - phi(y, x - h)) / (2.0 * h),
            ]
        };
        for &(t, theta) in &[(false, 0.0), (false, 33.0), (true, -120.0), (true, 90.0)] {
            let (s, c) = f64::to_radians(theta).sin_cos();
            let mut com = Vec::new();
            for iy in 0..sy {
                for ix in 0..sx {
                    // g = R(θ)ᵀ c in scan coordinates is the gradient; so c = R(θ) g
                    let g = grad(iy as f64, ix as f64);
                    let cv = [c * g[0] + s * g[1], -s * g[0] + c * g[1]];
                    com.push(if t { [cv[1], cv[0]] } else { cv });
                }
            }
            let dark = vec![1.0; sy * sx];
            let f = com_fit(&com, &com, &dark, [sy, sx]).unwrap();
            assert_eq!(f.transpose, t, "{theta}");
            let got = f.rotation_deg[t as usize].value;
            let off = wrap_deg(got - theta);
            // the plane removal and the edge-normalised blur leave a few hundredths of a degree
            assert!(
                off.abs() < 0.1 || (off.abs() - 180.0).abs() < 0.1,
                "{theta}: {got}"
            );
        }
    }

    #[test]
    fn disk_radius_from_the_area() {
        let m = 64;
        let r = 12.3;
        let mut mean = vec![0.01; m * m];
        // anti-aliased disk: 8 × 8 sub-samples per pixel
        for ky in 0..m {
            for kx in 0..m {
                let mut inside = 0;
                for a in 0..8 {
                    for b in 0..8 {
                        let (y, x) = (
                            ky as f64 + (a as f64 + 0.5) / 8.0 - 0.5 - 31.0,
                            kx as f64 + (b as f64 + 0.5) / 8.0 - 0.5 - 33.5,
                        );
                        inside += (y * y + x * x <= r * r) as i32;
                    }
                }
                mean[ky * m + kx] += inside as f64 / 64.0;
            }
        }
        let d = fit_disk(&mean, m).unwrap();
        assert!((d.radius_px.value - r).abs() < 0.02, "{:?}", d);
        assert!(
            (d.centre_px[0] - 31.0).abs() < 0.01 && (d.centre_px[1] - 33.5).abs() < 0.01,
            "{:?}",
            d
        );
        let e = fit_disk(&vec![1.0; m * m], m).unwrap_err();
        assert_eq!(e.what, "experiment.convergence_semiangle_mrad");
    }

    #[test]
    fn defocus_search_finds_the_least_of_a_bowl_and_names_its_key() {
        // a loss with its least at 37.3 µm inside a rugged floor, as the reconstruction's is
        let (l, a, r) = (2e-10, 2.5e-3, 16.0);
        let truth = 37.3e-6;
        let mut calls = 0;
        let mut bowl = |d: f64, _n: usize| -> Result<f64> {
            calls += 1;
            let u = (d - truth) / 16e-6;
            let bowl = (-u * u).exp();
            Ok(2000.0 - 800.0 * bowl + 30.0 * (1.0 - bowl) * (d * 3e5).sin())
        };
        let s = search_defocus(l, a, r, &mut bowl).unwrap();
        assert_eq!((s.step_m, s.half_range, s.coarse.len()), (16e-6, 16, 33));
        assert!((s.defocus_m.value - truth).abs() < 2e-6, "{s:?}");
        assert_eq!(calls, s.coarse.len() + s.fine.len());
        // least at the edge: an error naming the key
        let mut edge = |d: f64, _n: usize| -> Result<f64> { Ok(-d) };
        let e = search_defocus(l, a, r, &mut edge).unwrap_err();
        assert_eq!(e.what, "experiment.defocus_m");
        assert!(e.msg.contains("set it by hand"), "{}", e.msg);
        let mut nan = |_d: f64, _n: usize| -> Result<f64> { Ok(f64::NAN) };
        assert_eq!(
            search_defocus(l, a, r, &mut nan).unwrap_err().what,
            "experiment.defocus_m"
        );
        assert!(search_defocus(l, 0.0, r, &mut nan).is_err());
        assert_eq!(parabola_vertex([3.0, 1.0, 2.0]), 1.0 / 6.0);
        assert_eq!(parabola_vertex([1.0, 1.0, 1.0]), 0.0);
    }

    #[test]
    fn ncc_finds_a_subpixel_shift() {
        let (sy, sx) = (48, 48);
        let f = |y: f64, x: f64| {
            (-((y - 20.0).powi(2) + (x - 25.0).powi(2)) / 18.0).exp()
                + 0.5 * (-((y - 30.0).powi(2) + (x - 12.0).powi(2)) / 8.0).exp()
        };
        let b: Vec<f64> = (0..sy * sx)
            .map(|j| f((j / sx) as f64, (j % sx) as f64))
            .collect();
        // a(u + d) = b(u): a(v) = b(v − d)
        let d = [2.3, -1.6];
        let a: Vec<f64> = (0..sy * sx)
            .map(|j| f((j / sx) as f64 - d[0], (j % sx) as f64 - d[1]))
            .collect();
        let got = ncc_shift(&a, &b, [sy, sx], [0.0, 0.0], 5).unwrap();
        assert!(
            (got[0] - d[0]).abs() < 0.1 && (got[1] - d[1]).abs() < 0.1,
            "{got:?}"
        );
    }
}
