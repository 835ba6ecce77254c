//! Comparison of a reconstructed object with a ground truth (`ptytile compare`).
//!
//! The figure of merit is the one quoted for peer codes in the shared dataset README: the
//! Pearson correlation of the reconstructed and true phases inside the scanned area, after
//! sub-pixel registration and removal of the global phase offset and linear phase ramp, plus
//! the RMS phase error under the same registration. docs/compare.md describes the method;
//! [`compare_objects`] is the pure computation, [`compare_files`] the HDF5 front end.
//!
//! Conventions: every 2-D array is row-major `[y][x]`; pixel coordinates are (y, x) in
//! object pixels of the reconstruction's global grid; phases are in radians. The truth is
//! periodic: truth pixel (y, x) stands for every (y + aH, x + bW).

use crate::error::{Context, Error, Result};
use crate::physics::fft::fftfreq;
use crate::physics::model::Field;
use num_complex::{Complex32, Complex64};
use rustfft::{Fft, FftPlanner};
use std::f64::consts::PI;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Result of comparing a reconstructed object with a ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareReport {
    /// Pearson correlation of the reconstructed phase φ_R and the true phase φ_T over the
    /// area, after registration and ramp removal (1 = perfect).
    pub phase_correlation: f64,
    /// RMS of φ_R − φ_T over the area, rad.
    pub rms_phase_error_rad: f64,
    /// Registration shift s (y, x) in object pixels, reduced to [0, H) × [0, W) of the
    /// truth period: recon pixel r corresponds to truth position (r − s) mod (H, W).
    pub shift_px: [f64; 2],
    /// Removed phase ramp: the reconstruction was multiplied by
    /// exp(−i(ramp[0] + ramp[1]·y + ramp[2]·x)), with (y, x) global object pixels:
    /// offset (rad, wrapped to (−π, π]), d/dy and d/dx (rad per pixel).
    pub ramp: [f64; 3],
    /// Compared area [y0, y1, x0, x1] (global object pixels, y1 and x1 exclusive).
    pub area: [usize; 4],
}

impl fmt::Display for CompareReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [y0, y1, x0, x1] = self.area;
        writeln!(f, "phase correlation   {:.4}", self.phase_correlation)?;
        writeln!(f, "RMS phase error     {:.4} rad", self.rms_phase_error_rad)?;
        writeln!(
            f,
            "registration shift  ({:.3}, {:.3}) px (y, x), modulo the truth period",
            self.shift_px[0], self.shift_px[1]
        )?;
        writeln!(
            f,
            "removed phase ramp  offset {:.4} rad, d/dy {:.5} rad/px, d/dx {:.5} rad/px",
            self.ramp[0], self.ramp[1], self.ramp[2]
        )?;
        write!(
            f,
            "area                rows {y0}..{y1}, columns {x0}..{x1} ({} × {} px)",
            y1 - y0,
            x1 - x0
        )
    }
}

/// Compare a reconstructed object with a periodic ground truth inside `area`.
///
/// * `recon`: the reconstructed object O on the global object grid (`origin` respected),
///   `[shape[0], shape[1]]` = (y, x).
/// * `area`: [y0, y1, x0, x1] in global object pixels, y1/x1 exclusive, at least 2 × 2 and
///   inside `recon` (normally the scanned area, see [`scan_area`]).
/// * `truth`, `truth_shape` = [H, W]: the ground truth transmission, row-major (y, x), at
///   the reconstruction's pixel size, treated as periodic (index (y mod H, x mod W)); it may
///   be one period smaller than the area or larger than it.
///
/// Method (all arithmetic in f64):
/// 1. **Integer registration.** The recon over the area is pre-flattened (its mean phase
///    gradient, arg Σ O(y+1,x)·conj O(y,x) and likewise in x, is removed so that a phase
///    ramp does not wrap its phase), its global phase offset removed (× exp(−i arg Σ O)),
///    and its phase p = arg O taken and made zero-mean. p is folded modulo (H, W) together
///    with a count mask, and the normalised cross-correlation with the truth phase arg T,
///    NCC(s) = Σ p(r)·t(r − s) / √(Σp² · var_mask t(· − s)), is computed for every circular
///    shift s by FFT. The best few local maxima are scored with the final metric (below) and
///    the best one kept.
/// 2. **Sub-pixel refinement.** A parabolic fit through the NCC peak gives a start; then
///    alternating golden-section searches along y and x (±1 px around the integer peak, then
///    ±0.25 px, tolerance 1e-4 px) maximise the final phase correlation. The truth at a
///    shift s is T_s(r) = T(r − s), computed by Fourier interpolation (multiplying its DFT by
///    exp(−2πi(k_y s_y/H + k_x s_x/W)), exact for a periodic band-limited truth).
/// 3. **Ramp removal and metric.** With D = O·conj T_s on the area, a first ramp estimate
///    (arg of the mean neighbour products of D, then arg Σ D·e^{−i ramp} for the offset)
///    is removed so the residual d = arg(D·e^{−i ramp₀}) does not wrap; offset + linear
///    ramp is then fitted to d by least squares (3 parameters, centred coordinates) and
///    removed. φ_T = arg T_s, φ_R = φ_T + (d − fit), so the truth phase (up to ~2.9 rad)
///    never wraps against the recon. `phase_correlation` = Pearson(φ_R, φ_T),
///    `rms_phase_error_rad` = RMS(φ_R − φ_T).
///
/// Errors: empty or smaller than 2 × 2 area, area outside the recon field, zero-size or
/// inconsistent truth, non-finite values in the recon area or in the truth, a truth phase
/// that is constant over the area (correlation undefined).
pub fn compare_objects(
    recon: &Field<Complex32>,
    area: [usize; 4],
    truth: &[Complex32],
    truth_shape: [usize; 2],
) -> Result<CompareReport> {
    compare_with(recon, area, truth, truth_shape, None)
}

/// [`compare_objects`] for real phases compared directly, not modulo 2π: the recon's
/// phase `recon_phase` (e.g. the projected phase Σ_s arg O_s of a multislice object,
/// [`crate::physics::multislice::projected_phase`]) against the true phase `truth_phase`
/// ([H, W], e.g. σ V of a projected potential, [`interaction_constant`]). Registration runs
/// on e^{iφ} as in [`compare_objects`]; at each shift the residual φ_R − φ_T(r − s) is
/// fitted by offset + ramp without wrapping, so a phase that wrapped or saturated where the
/// truth exceeds π counts as an error. Errors as [`compare_objects`].
pub fn compare_phases(
    recon_phase: &Field<f64>,
    area: [usize; 4],
    truth_phase: &[f64],
    truth_shape: [usize; 2],
) -> Result<CompareReport> {
    let cis = |v: &[f64]| {
        v.iter()
            .map(|p| Complex32::from_polar(1.0, *p as f32))
            .collect::<Vec<_>>()
    };
    let recon = Field {
        origin: recon_phase.origin,
        shape: recon_phase.shape,
        data: cis(&recon_phase.data),
    };
    if recon_phase
        .data
        .iter()
        .chain(truth_phase)
        .any(|v| !v.is_finite())
    {
        let what = if recon_phase.data.iter().any(|v| !v.is_finite()) {
            "object"
        } else {
            "truth"
        };
        return Err(Error::new(what, "contains NaN or Inf phases"));
    }
    compare_with(
        &recon,
        area,
        &cis(truth_phase),
        truth_shape,
        Some((recon_phase, truth_phase)),
    )
}

/// The work of [`compare_objects`] and, with `unwrapped` (recon phase field, true phase),
/// of [`compare_phases`].
fn compare_with(
    recon: &Field<Complex32>,
    area: [usize; 4],
    truth: &[Complex32],
    truth_shape: [usize; 2],
    unwrapped: Option<(&Field<f64>, &[f64])>,
) -> Result<CompareReport> {
    let [y0, y1, x0, x1] = area;
    let [h, w] = truth_shape;
    if h == 0 || w == 0 {
        return Err(Error::new("truth", format!("has zero size {h} × {w}")));
    }
    if truth.len() != h * w {
        return Err(Error::new(
            "truth",
            format!("has {} values but shape {h} × {w}", truth.len()),
        ));
    }
    if y1 <= y0 || x1 <= x0 {
        return Err(Error::new(
            "area",
            format!("is empty: rows {y0}..{y1}, columns {x0}..{x1}"),
        ));
    }
    if y1 - y0 < 2 || x1 - x0 < 2 {
        return Err(Error::new(
            "area",
            format!("rows {y0}..{y1}, columns {x0}..{x1} is smaller than the 2 × 2 pixels a ramp fit needs"),
        ));
    }
    let [ny, nx] = recon.shape;
    if recon.data.len() != ny * nx {
        return Err(Error::new(
            "object",
            format!("has {} values but shape {ny} × {nx}", recon.data.len()),
        ));
    }
    let [oy, ox] = recon.origin;
    let (ly0, lx0) = (y0 as i64 - oy, x0 as i64 - ox);
    let (ly1, lx1) = (y1 as i64 - oy, x1 as i64 - ox);
    if ly0 < 0 || lx0 < 0 || ly1 > ny as i64 || lx1 > nx as i64 {
        return Err(Error::new(
            "area",
            format!(
                "rows {y0}..{y1}, columns {x0}..{x1} lies outside the object field (rows {oy}..{}, columns {ox}..{})",
                oy + ny as i64,
                ox + nx as i64
            ),
        ));
    }
    let (ha, wa) = (y1 - y0, x1 - x0);
    let (ly0, lx0) = (ly0 as usize, lx0 as usize);
    let mut o = Vec::with_capacity(ha * wa);
    for i in 0..ha {
        let row = &recon.data[(ly0 + i) * nx + lx0..(ly0 + i) * nx + lx0 + wa];
        o.extend(row.iter().map(|z| Complex64::new(z.re as f64, z.im as f64)));
    }
    check_finite(&o, wa, [y0, x0], "object")?;
    let t: Vec<Complex64> = truth
        .iter()
        .map(|z| Complex64::new(z.re as f64, z.im as f64))
        .collect();
    check_finite(&t, w, [0, 0], "truth")?;

    let mut p = Problem::new(o, [ha, wa], [y0, x0], &t, [h, w]);
    if let Some((rp, tp)) = unwrapped {
        let phase: Vec<f64> = (0..ha)
            .flat_map(|i| rp.data[(ly0 + i) * nx + lx0..][..wa].iter().copied())
            .collect();
        let mut hat: Vec<Complex64> = tp.iter().map(|v| Complex64::new(*v, 0.0)).collect();
        p.dft.run(&mut hat, false);
        p.unwrapped = Some((phase, hat, tp.to_vec()));
    }
    let (start, ipeak) = p.integer_registration();
    let best = p.refine(start, ipeak)?;
    Ok(CompareReport {
        phase_correlation: best.corr,
        rms_phase_error_rad: best.rms,
        shift_px: [reduce(best.shift[0], h), reduce(best.shift[1], w)],
        ramp: best.ramp,
        area,
    })
}

/// The scanned area of probe centres `positions_px` ((y, x), object pixels): their bounding
/// box rounded inward to whole pixels, [y0, y1, x0, x1] with y1, x1 exclusive
/// (y0 = ⌈min y⌉, y1 = ⌊max y⌋ + 1). Errors (what = "positions") on no positions, non-finite
/// or negative coordinates.
pub fn scan_area(positions_px: &[[f64; 2]]) -> Result<[usize; 4]> {
    if positions_px.is_empty() {
        return Err(Error::new("positions", "there are no scan positions"));
    }
    let mut lo = [f64::INFINITY; 2];
    let mut hi = [f64::NEG_INFINITY; 2];
    for (j, c) in positions_px.iter().enumerate() {
        if !c[0].is_finite() || !c[1].is_finite() {
            return Err(Error::new(
                "positions",
                format!("position {j} is not finite: ({}, {})", c[0], c[1]),
            ));
        }
        for a in 0..2 {
            lo[a] = lo[a].min(c[a]);
            hi[a] = hi[a].max(c[a]);
        }
    }
    let (a0, a1) = (lo.map(f64::ceil), hi.map(f64::floor));
    if lo[0] < 0.0 || lo[1] < 0.0 {
        return Err(Error::new(
            "positions",
            format!(
                "probe centres reach negative object coordinates (min ({}, {}))",
                lo[0], lo[1]
            ),
        ));
    }
    Ok([
        a0[0] as usize,
        a1[0] as usize + 1,
        a0[1] as usize,
        a1[1] as usize + 1,
    ])
}

/// Error naming `what` if `v` (row length `w`, pixel (0,0) at global `at`) holds NaN/Inf.
fn check_finite(v: &[Complex64], w: usize, at: [usize; 2], what: &str) -> Result<()> {
    let bad = |z: &Complex64| !(z.re.is_finite() && z.im.is_finite());
    let count = v.iter().filter(|z| bad(z)).count();
    if count == 0 {
        return Ok(());
    }
    let first = v.iter().position(bad).unwrap_or(0);
    let kind = if v.iter().any(|z| z.re.is_nan() || z.im.is_nan()) {
        "NaN"
    } else {
        "Inf"
    };
    Err(Error::new(
        what,
        format!(
            "contains {kind}: {count} non-finite value(s), first at pixel ({}, {})",
            at[0] + first / w,
            at[1] + first % w
        ),
    ))
}

/// Unnormalised 2-D DFT of H × W row-major arrays (rustfft rows, transpose, rustfft rows).
pub(crate) struct Dft2 {
    h: usize,
    w: usize,
    rows: [Arc<dyn Fft<f64>>; 2],
    cols: [Arc<dyn Fft<f64>>; 2],
    scratch: Vec<Complex64>,
    t: Vec<Complex64>,
}

impl Dft2 {
    pub(crate) fn new(h: usize, w: usize) -> Self {
        let mut pl = FftPlanner::<f64>::new();
        let rows = [pl.plan_fft_forward(w), pl.plan_fft_inverse(w)];
        let cols = [pl.plan_fft_forward(h), pl.plan_fft_inverse(h)];
        let n = rows
            .iter()
            .chain(&cols)
            .map(|f| f.get_inplace_scratch_len())
            .max()
            .unwrap_or(0);
        Dft2 {
            h,
            w,
            rows,
            cols,
            scratch: vec![Complex64::default(); n.max(1)],
            t: vec![Complex64::default(); h * w],
        }
    }

    /// In place; forward e^{−2πi k·r}, inverse e^{+2πi k·r}, neither scaled.
    pub(crate) fn run(&mut self, a: &mut [Complex64], inverse: bool) {
        let (h, w, d) = (self.h, self.w, inverse as usize);
        self.rows[d].process_with_scratch(a, &mut self.scratch);
        for y in 0..h {
            for x in 0..w {
                self.t[x * h + y] = a[y * w + x];
            }
        }
        self.cols[d].process_with_scratch(&mut self.t, &mut self.scratch);
        for x in 0..w {
            for y in 0..h {
                a[y * w + x] = self.t[x * h + y];
            }
        }
    }
}

/// One evaluation of the final metric at a shift.
#[derive(Debug, Clone, Copy)]
struct Eval {
    shift: [f64; 2],
    corr: f64,
    rms: f64,
    ramp: [f64; 3],
}

/// The state of one comparison: recon area, truth spectrum, work buffers.
struct Problem {
    /// Recon over the area, [ha][wa].
    o: Vec<Complex64>,
    ha: usize,
    wa: usize,
    /// Global pixel of area [0, 0].
    at: [usize; 2],
    h: usize,
    w: usize,
    /// Truth, [h][w].
    truth: Vec<Complex64>,
    /// Unnormalised DFT of the truth, [ky][kx].
    truth_hat: Vec<Complex64>,
    dft: Dft2,
    /// Truth row/column of each area row/column at zero shift.
    ymap: Vec<usize>,
    xmap: Vec<usize>,
    buf: Vec<Complex64>,
    d: Vec<f64>,
    phi_t: Vec<f64>,
    best: Option<Eval>,
    truth_constant: bool,
    /// Unwrapped mode ([`compare_phases`]): the recon's phase on the area [ha][wa], the
    /// unnormalised DFT of the true phase [ky][kx] and the true phase [h][w]; phases are compared directly, not
    /// modulo 2π.
    unwrapped: Option<(Vec<f64>, Vec<Complex64>, Vec<f64>)>,
}

fn centred(n: usize) -> impl Iterator<Item = f64> {
    let c = (n as f64 - 1.0) / 2.0;
    (0..n).map(move |i| i as f64 - c)
}

/// `v` modulo the period `n`, in [0, n).
fn reduce(v: f64, n: usize) -> f64 {
    let r = v.rem_euclid(n as f64);
    if r >= n as f64 {
        0.0
    } else {
        r
    }
}

/// An angle wrapped to (−π, π].
fn wrap(a: f64) -> f64 {
    let r = (a + PI).rem_euclid(2.0 * PI) - PI;
    if r <= -PI {
        r + 2.0 * PI
    } else {
        r
    }
}

impl Problem {
    fn new(
        o: Vec<Complex64>,
        [ha, wa]: [usize; 2],
        at: [usize; 2],
        truth: &[Complex64],
        [h, w]: [usize; 2],
    ) -> Self {
        let mut dft = Dft2::new(h, w);
        let mut truth_hat = truth.to_vec();
        dft.run(&mut truth_hat, false);
        Problem {
            ymap: (0..ha).map(|i| (at[0] + i) % h).collect(),
            xmap: (0..wa).map(|j| (at[1] + j) % w).collect(),
            o,
            ha,
            wa,
            at,
            h,
            w,
            truth: truth.to_vec(),
            truth_hat,
            dft,
            buf: vec![Complex64::default(); h * w],
            d: vec![0.0; ha * wa],
            phi_t: vec![0.0; ha * wa],
            best: None,
            truth_constant: false,
            unwrapped: None,
        }
    }

    /// Integer registration by normalised phase cross-correlation (step 1 of
    /// [`compare_objects`]). Returns (sub-pixel start from a parabolic fit, integer peak).
    fn integer_registration(&mut self) -> ([f64; 2], [f64; 2]) {
        let (ha, wa, h, w) = (self.ha, self.wa, self.h, self.w);
        let n = (ha * wa) as f64;
        // Pre-flatten and remove the global phase offset.
        let (gy, gx) = mean_gradients(&self.o, ha, wa);
        let ey: Vec<Complex64> = centred(ha)
            .map(|y| Complex64::from_polar(1.0, -gy * y))
            .collect();
        let ex: Vec<Complex64> = centred(wa)
            .map(|x| Complex64::from_polar(1.0, -gx * x))
            .collect();
        let mut flat = self.o.clone();
        for i in 0..ha {
            for j in 0..wa {
                flat[i * wa + j] *= ey[i] * ex[j];
            }
        }
        let g: Complex64 = flat.iter().sum();
        let rot = Complex64::from_polar(1.0, -g.arg());
        let mut p: Vec<f64> = match &self.unwrapped {
            Some((phase, _, _)) => phase.clone(),
            None => flat.iter().map(|z| (z * rot).arg()).collect(),
        };
        let mean = p.iter().sum::<f64>() / n;
        p.iter_mut().for_each(|v| *v -= mean);
        let sp2: f64 = p.iter().map(|v| v * v).sum();

        // Fold p and the mask modulo the truth period.
        let z = Complex64::default();
        let (mut pf, mut mf) = (vec![z; h * w], vec![z; h * w]);
        for i in 0..ha {
            for j in 0..wa {
                let k = self.ymap[i] * w + self.xmap[j];
                pf[k].re += p[i * wa + j];
                mf[k].re += 1.0;
            }
        }
        let mut t: Vec<Complex64> = match &self.unwrapped {
            Some((_, _, tp)) => tp.iter().map(|v| Complex64::new(*v, 0.0)).collect(),
            None => self
                .truth
                .iter()
                .map(|v| Complex64::new(v.arg(), 0.0))
                .collect(),
        };
        let mut t2: Vec<Complex64> = t.iter().map(|v| Complex64::new(v.re * v.re, 0.0)).collect();
        for a in [&mut pf, &mut mf, &mut t, &mut t2] {
            self.dft.run(a, false);
        }
        // c(s) = Σ_u a(u) b(u − s)  ⇔  ĉ = â · conj(b̂)  (b real)
        for k in 0..h * w {
            let (tc, t2c) = (t[k].conj(), t2[k].conj());
            pf[k] *= tc;
            t2[k] = mf[k] * t2c;
            mf[k] *= tc;
        }
        for a in [&mut pf, &mut mf, &mut t2] {
            self.dft.run(a, true);
        }
        let norm = (h * w) as f64;
        let ncc: Vec<f64> = (0..h * w)
            .map(|k| {
                let (num, s1, s2) = (pf[k].re / norm, mf[k].re / norm, t2[k].re / norm);
                let var = s2 - s1 * s1 / n;
                if var > 1e-12 * s2.abs().max(1e-30) && sp2 > 0.0 {
                    num / (sp2 * var).sqrt()
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();

        // Best few periodic local maxima, scored with the final metric.
        let at = |y: isize, x: isize| {
            ncc[(y.rem_euclid(h as isize) as usize) * w + x.rem_euclid(w as isize) as usize]
        };
        let mut peaks: Vec<(f64, usize, usize)> = Vec::new();
        for y in 0..h as isize {
            for x in 0..w as isize {
                let c = at(y, x);
                if !c.is_finite() {
                    continue;
                }
                let is_max = (-1..=1).all(|dy| (-1..=1).all(|dx| at(y + dy, x + dx) <= c));
                if is_max {
                    peaks.push((c, y as usize, x as usize));
                }
            }
        }
        peaks.sort_by(|a, b| b.0.total_cmp(&a.0));
        peaks.truncate(4);
        if peaks.is_empty() {
            peaks.push((0.0, 0, 0));
        }
        let mut chosen = (f64::NEG_INFINITY, 0usize, 0usize);
        for &(_, y, x) in &peaks {
            let e = self.score([y as f64, x as f64]);
            if e > chosen.0 {
                chosen = (e, y, x);
            }
        }
        let (_, y, x) = chosen;
        let (yi, xi) = (y as isize, x as isize);
        let parab = |m: f64, c: f64, p: f64| {
            let den = m - 2.0 * c + p;
            if den < 0.0 && m.is_finite() && p.is_finite() {
                (0.5 * (m - p) / den).clamp(-0.5, 0.5)
            } else {
                0.0
            }
        };
        let c = at(yi, xi);
        let dy = parab(at(yi - 1, xi), c, at(yi + 1, xi));
        let dx = parab(at(yi, xi - 1), c, at(yi, xi + 1));
        ([y as f64 + dy, x as f64 + dx], [y as f64, x as f64])
    }

    /// Sub-pixel refinement (step 2): alternating golden-section searches on the final
    /// metric; returns the best evaluation seen.
    fn refine(&mut self, start: [f64; 2], ipeak: [f64; 2]) -> Result<Eval> {
        let mut s = start;
        for round in 0..6 {
            let prev = s;
            for axis in 0..2 {
                let (lo, hi) = if round == 0 {
                    (ipeak[axis] - 1.0, ipeak[axis] + 1.0)
                } else {
                    (s[axis] - 0.25, s[axis] + 0.25)
                };
                s[axis] = golden(lo, hi, 1e-4, |v| {
                    let mut q = s;
                    q[axis] = v;
                    self.score(q)
                });
            }
            if round > 0 && (s[0] - prev[0]).abs().max((s[1] - prev[1]).abs()) < 2e-4 {
                break;
            }
        }
        if self.truth_constant {
            return Err(Error::new(
                "truth",
                "phase is constant over the compared area: correlation undefined",
            ));
        }
        self.best
            .ok_or_else(|| Error::new("compare", "no finite phase correlation at any shift"))
    }

    /// Phase correlation at shift `s`, remembering the best evaluation.
    fn score(&mut self, s: [f64; 2]) -> f64 {
        let e = self.eval(s);
        if e.corr.is_finite() && self.best.is_none_or(|b| e.corr > b.corr) {
            self.best = Some(e);
        }
        if e.corr.is_finite() {
            e.corr
        } else {
            f64::NEG_INFINITY
        }
    }

    /// The final metric at shift `s` (step 3 of [`compare_objects`]).
    fn eval(&mut self, s: [f64; 2]) -> Eval {
        let (ha, wa, h, w) = (self.ha, self.wa, self.h, self.w);
        let n = (ha * wa) as f64;
        // Truth shifted by s: T_s(r) = T(r − s), by a Fourier phase ramp.
        let ry: Vec<Complex64> = (0..h)
            .map(|k| Complex64::from_polar(1.0, -2.0 * PI * fftfreq(k, h) * s[0]))
            .collect();
        let rx: Vec<Complex64> = (0..w)
            .map(|k| Complex64::from_polar(1.0, -2.0 * PI * fftfreq(k, w) * s[1]))
            .collect();
        let scale = 1.0 / (h * w) as f64;
        for ky in 0..h {
            let f = ry[ky] * scale;
            for kx in 0..w {
                self.buf[ky * w + kx] = self.truth_hat[ky * w + kx] * f * rx[kx];
            }
        }
        self.dft.run(&mut self.buf, true);
        let (yc, xc): (Vec<f64>, Vec<f64>) = (centred(ha).collect(), centred(wa).collect());
        let (b0, c0, a0) = if let Some((phase, hat, _)) = &self.unwrapped {
            // φ_T shifted by s (real part of the Fourier-shifted real phase); d = φ_R − φ_T
            for ky in 0..h {
                let f = ry[ky] * scale;
                for kx in 0..w {
                    self.buf[ky * w + kx] = hat[ky * w + kx] * f * rx[kx];
                }
            }
            self.dft.run(&mut self.buf, true);
            for i in 0..ha {
                for j in 0..wa {
                    let k = i * wa + j;
                    self.phi_t[k] = self.buf[self.ymap[i] * w + self.xmap[j]].re;
                    self.d[k] = phase[k] - self.phi_t[k];
                }
            }
            (0.0, 0.0, 0.0)
        } else {
            self.wrapped_residual()
        };
        let (mut sd, mut syd, mut sxd) = (0.0, 0.0, 0.0);
        for i in 0..ha {
            for j in 0..wa {
                let d = self.d[i * wa + j];
                sd += d;
                syd += yc[i] * d;
                sxd += xc[j] * d;
            }
        }
        let syy: f64 = yc.iter().map(|v| v * v).sum::<f64>() * wa as f64;
        let sxx: f64 = xc.iter().map(|v| v * v).sum::<f64>() * ha as f64;
        let (a1, b1, c1) = (sd / n, syd / syy, sxd / sxx);
        // Statistics of φ_T and r = φ_R − φ_T.
        let (mut st, mut stt, mut sr, mut srr, mut str_) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for i in 0..ha {
            for j in 0..wa {
                let k = i * wa + j;
                let r = self.d[k] - a1 - b1 * yc[i] - c1 * xc[j];
                let t = self.phi_t[k];
                st += t;
                stt += t * t;
                sr += r;
                srr += r * r;
                str_ += t * r;
            }
        }
        let var_t = stt / n - (st / n).powi(2);
        let var_r = srr / n - (sr / n).powi(2);
        let cov_tr = str_ / n - (st / n) * (sr / n);
        // Pearson(φ_T + r, φ_T)
        let cov = var_t + cov_tr;
        let var_rt = var_t + 2.0 * cov_tr + var_r;
        if var_t <= 1e-24 {
            self.truth_constant = true;
        }
        let corr = if var_t > 1e-24 && var_rt > 0.0 {
            cov / (var_t * var_rt).sqrt()
        } else {
            f64::NAN
        };
        let rms = (srr / n).sqrt();
        let (gy, gx) = (b0 + b1, c0 + c1);
        let cy = self.at[0] as f64 + (ha as f64 - 1.0) / 2.0;
        let cx = self.at[1] as f64 + (wa as f64 - 1.0) / 2.0;
        Eval {
            shift: s,
            corr,
            rms,
            ramp: [wrap(a0 + a1 - gy * cy - gx * cx), gy, gx],
        }
    }

    /// With the shifted truth T_s in `self.buf`: the residual phase d = arg(O conj T_s)
    /// unwrapped by a first ramp estimate, into `self.d`, and φ_T = arg T_s into
    /// `self.phi_t`; returns the estimate (d/dy, d/dx, offset).
    fn wrapped_residual(&mut self) -> (f64, f64, f64) {
        let (ha, wa, w) = (self.ha, self.wa, self.w);
        // D = O conj T_s on the area (kept in self.d/phi_t after the ramp estimate).
        let tv = |i: usize, j: usize, buf: &[Complex64]| buf[self.ymap[i] * w + self.xmap[j]];
        let dval =
            |i: usize, j: usize, buf: &[Complex64]| self.o[i * wa + j] * tv(i, j, buf).conj();
        let (mut sy, mut sx) = (Complex64::default(), Complex64::default());
        for i in 0..ha {
            for j in 0..wa {
                let d = dval(i, j, &self.buf);
                if i + 1 < ha {
                    sy += dval(i + 1, j, &self.buf) * d.conj();
                }
                if j + 1 < wa {
                    sx += dval(i, j + 1, &self.buf) * d.conj();
                }
            }
        }
        let (b0, c0) = (sy.arg(), sx.arg());
        let ey: Vec<Complex64> = centred(ha)
            .map(|y| Complex64::from_polar(1.0, -b0 * y))
            .collect();
        let ex: Vec<Complex64> = centred(wa)
            .map(|x| Complex64::from_polar(1.0, -c0 * x))
            .collect();
        let mut so = Complex64::default();
        for i in 0..ha {
            for j in 0..wa {
                so += dval(i, j, &self.buf) * ey[i] * ex[j];
            }
        }
        let a0 = so.arg();
        let rot = Complex64::from_polar(1.0, -a0);
        // Residual phase d (unwrapped by the first estimate)
        for i in 0..ha {
            for j in 0..wa {
                let k = i * wa + j;
                let t = tv(i, j, &self.buf);
                self.d[k] = (self.o[k] * t.conj() * ey[i] * ex[j] * rot).arg();
                self.phi_t[k] = t.arg();
            }
        }
        (b0, c0, a0)
    }
}

/// Mean phase gradients (d/dy, d/dx) of a complex [ha][wa] array, rad per pixel:
/// arg Σ a(y+1,x)·conj a(y,x) and likewise along x.
pub(crate) fn mean_gradients(a: &[Complex64], ha: usize, wa: usize) -> (f64, f64) {
    let (mut sy, mut sx) = (Complex64::default(), Complex64::default());
    for i in 0..ha {
        for j in 0..wa {
            let v = a[i * wa + j].conj();
            if i + 1 < ha {
                sy += a[(i + 1) * wa + j] * v;
            }
            if j + 1 < wa {
                sx += a[i * wa + j + 1] * v;
            }
        }
    }
    (sy.arg(), sx.arg())
}

/// Golden-section search for the maximum of `f` on [lo, hi] to width `tol`.
fn golden(mut lo: f64, mut hi: f64, tol: f64, mut f: impl FnMut(f64) -> f64) -> f64 {
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut a = hi - g * (hi - lo);
    let mut b = lo + g * (hi - lo);
    let (mut fa, mut fb) = (f(a), f(b));
    while hi - lo > tol {
        if fa >= fb {
            hi = b;
            b = a;
            fb = fa;
            a = hi - g * (hi - lo);
            fa = f(a);
        } else {
            lo = a;
            a = b;
            fa = fb;
            b = lo + g * (hi - lo);
            fb = f(b);
        }
    }
    if fa >= fb {
        a
    } else {
        b
    }
}

/// Datasets tried, in order, for the truth when none is named.
pub const TRUTH_DATASETS: [&str; 3] = [
    "/ground_truth/transmission_recon",
    "/ground_truth/object",
    "/object",
];

/// Compare a ptytile result file with a ground truth file.
///
/// Reads `/object` (complex64 [Ny, Nx], (y, x), attribute `pixel_size_m` [2] optional) and
/// `/positions_px` (float64 [N, 2], probe centres (y, x) in object pixels) from `recon`, and
/// the truth (complex64 [H, W]) from `truth`: `truth_dataset` if given, else the first of
/// [`TRUTH_DATASETS`] that exists. The truth's pixel size is its `pixel_size_m` attribute,
/// else follows from the file's `/meta` ([`meta_pixel_size`]); where it differs from the
/// result's by more than 0.1 %, the truth is resampled to the result's pixel size
/// ([`resample_truth`]). The compared area is [`scan_area`] of the positions; the work
/// is [`compare_objects`]. Errors name `file:dataset`.
pub fn compare_files(
    recon: &Path,
    truth: &Path,
    truth_dataset: Option<&str>,
) -> Result<CompareReport> {
    let rname = recon.display().to_string();
    let tname = truth.display().to_string();
    crate::output::safety::check_input(recon)?;
    crate::output::safety::check_input(truth)?;
    let rf = hdf5::File::open(recon).ctx(|| rname.clone())?;
    let slices = rf
        .dataset("/object")
        .map(|d| d.ndim())
        .unwrap_or(2)
        .saturating_sub(1)
        .max(1);
    let (object, oshape, opix) = read_complex_2d(&rf, &rname, "/object", true)?;
    let (area, pos_what) = read_scan_area(&rf, &rname)?;

    let tf = hdf5::File::open(truth).ctx(|| tname.clone())?;
    // a multislice result is compared with the projected potential where the truth has one
    let defaults: Vec<&str> = if slices > 1 {
        std::iter::once(PROJECTED_POTENTIAL)
            .chain(TRUTH_DATASETS)
            .collect()
    } else {
        TRUTH_DATASETS.to_vec()
    };
    let tds = match truth_dataset {
        Some(d) => d.to_string(),
        None => defaults
            .iter()
            .find(|d| path_exists(&tf, d))
            .map(|d| d.to_string())
            .ok_or_else(|| {
                Error::new(
                    tname.clone(),
                    format!("none of the truth datasets {} exists", defaults.join(", ")),
                )
            })?,
    };
    let real_truth = tf
        .dataset(&tds)
        .and_then(|d| d.dtype())
        .map(|t| matches!(t.to_descriptor(), Ok(hdf5::types::TypeDescriptor::Float(_))))
        .unwrap_or(false);
    if real_truth {
        return compare_potential(&rf, &rname, &tf, &tname, &tds, area, &pos_what);
    }
    let (mut tdata, mut tshape, tpix) = read_complex_2d(&tf, &tname, &tds, false)?;
    let tpix = tpix.or_else(|| meta_pixel_size(&tf, &tds, tshape));
    if let (Some(a), Some(b)) = (opix, tpix) {
        // 0.1 %: over a 1000-pixel area the grids then drift apart by at most one pixel
        if (0..2).any(|ax| (a[ax] - b[ax]).abs() > 1e-3 * a[ax].abs().max(b[ax].abs())) {
            (tdata, tshape) = resample_truth(&tf, &tname, &tds, (tdata, tshape, b), a)?;
        }
    }
    let field = Field {
        origin: [0, 0],
        shape: oshape,
        data: object,
    };
    compare_objects(&field, area, &tdata, tshape).map_err(|e| {
        let what = match e.what.as_str() {
            "object" => format!("{rname}:/object"),
            "truth" => format!("{tname}:{tds}"),
            "area" => pos_what.clone(),
            _ => format!("{rname} vs {tname}"),
        };
        Error::new(what, e.msg)
    })
}

/// The projected potential of the shared datasets (V·Å, [H, W]), what a multislice result is
/// compared with by default.
pub const PROJECTED_POTENTIAL: &str = "/ground_truth/projected_potential_recon";

/// The interaction constant σ (rad per V·Å) of electrons of kinetic energy `energy_ev`:
/// σ = 2π/(λ E) · (m₀c² + E)/(2 m₀c² + E), λ in Å (Kirkland, Advanced Computing in Electron
/// Microscopy, eq. 5.6). 300 keV → 6.526e-4.
pub fn interaction_constant(energy_ev: f64) -> f64 {
    let lam_a = crate::physics::electron_wavelength_m(energy_ev) * 1e10;
    let m0 = crate::physics::ELECTRON_REST_EV;
    2.0 * PI / (lam_a * energy_ev) * (m0 + energy_ev) / (2.0 * m0 + energy_ev)
}

/// [`compare_files`] with a real truth dataset `tds` (a projected potential V, V·Å): the
/// true phase is σ V, σ from the truth's `/meta` attribute `interaction_constant_sigma_rad_per_VA`,
/// else [`interaction_constant`] of its `energy_eV`; the recon's phase is its projected
/// phase Σ_s arg O_s (a single slice: arg O relative to its mean phase over the area, so
/// it does not wrap there); [`compare_phases`] compares them.
fn compare_potential(
    rf: &hdf5::File,
    rname: &str,
    tf: &hdf5::File,
    tname: &str,
    tds: &str,
    area: [usize; 4],
    pos_what: &str,
) -> Result<CompareReport> {
    let ow = || format!("{rname}:/object");
    let d = rf.dataset("/object").ctx(ow)?;
    let shape = d.shape();
    let (oshape, plane) = match shape.as_slice() {
        [ny, nx] | [_, ny, nx] => ([*ny, *nx], ny * nx),
        _ => {
            return Err(Error::new(
                ow(),
                format!("has shape {shape:?}, expected [Ny, Nx] or [S, Ny, Nx]"),
            ))
        }
    };
    let object = d
        .read_raw::<Complex32>()
        .ctx(|| format!("{}: reading as complex64", ow()))?;
    let phase = if shape.len() == 3 {
        crate::physics::multislice::projected_phase(&object, plane)
    } else {
        let [y0, y1, x0, x1] = area;
        let mut mean = Complex64::default();
        for y in y0..y1.min(oshape[0]) {
            for x in x0..x1.min(oshape[1]) {
                let z = object[y * oshape[1] + x];
                mean += Complex64::new(z.re as f64, z.im as f64);
            }
        }
        let rot = if mean.norm() > 0.0 {
            mean.conj() / mean.norm()
        } else {
            Complex64::new(1.0, 0.0)
        };
        object
            .iter()
            .map(|z| (Complex64::new(z.re as f64, z.im as f64) * rot).arg())
            .collect()
    };
    let tw = || format!("{tname}:{tds}");
    let t = tf.dataset(tds).ctx(tw)?;
    let tshape = t.shape();
    if tshape.len() != 2 {
        return Err(Error::new(
            tw(),
            format!("has shape {tshape:?}, expected a 2-D potential"),
        ));
    }
    let v = t
        .read_raw::<f64>()
        .ctx(|| format!("{}: reading as float", tw()))?;
    let meta = tf.group("/meta").ok();
    let attr = |name: &str| {
        meta.as_ref()
            .and_then(|g| g.attr(name).ok())
            .and_then(|a| a.read_scalar::<f64>().ok())
    };
    let sigma = match (attr("interaction_constant_sigma_rad_per_VA"), attr("energy_eV")) {
        (Some(s), _) => s,
        (None, Some(e)) => interaction_constant(e),
        (None, None) => return Err(Error::new(format!("{tname}:/meta"), "neither interaction_constant_sigma_rad_per_VA nor energy_eV: cannot turn the potential into a phase")),
    };
    let truth: Vec<f64> = v.iter().map(|p| p * sigma).collect();
    let field = Field {
        origin: [0, 0],
        shape: oshape,
        data: phase,
    };
    compare_phases(&field, area, &truth, [tshape[0], tshape[1]]).map_err(|e| {
        let what = match e.what.as_str() {
            "object" => ow(),
            "truth" => tw(),
            "area" => pos_what.to_string(),
            _ => format!("{rname} vs {tname}"),
        };
        Error::new(what, e.msg)
    })
}

/// Pixel size (y, x) in m of the truth dataset `ds` from the file's `/meta` attributes (the
/// layout of the shared PbTiO3 files): `sim_sampling_A` for `*_sim` arrays,
/// `recon_pixel_size_A` for `*_recon` arrays, else `supercell_extent_A` / shape.
fn meta_pixel_size(f: &hdf5::File, ds: &str, shape: [usize; 2]) -> Option<[f64; 2]> {
    let meta = f.group("meta").ok()?;
    let attr = |name: &str| -> Option<Vec<f64>> { meta.attr(name).ok()?.read_raw::<f64>().ok() };
    let pair = |v: Vec<f64>| match v.as_slice() {
        [a] => Some([*a * 1e-10, *a * 1e-10]),
        [a, b] => Some([*a * 1e-10, *b * 1e-10]),
        _ => None,
    };
    if ds.ends_with("_sim") {
        pair(attr("sim_sampling_A")?)
    } else if ds.ends_with("_recon") {
        pair(attr("recon_pixel_size_A")?)
    } else {
        let e = pair(attr("supercell_extent_A")?)?;
        Some([e[0] / shape[0] as f64, e[1] / shape[1] as f64])
    }
}

/// The truth `(values, shape, pixel size)` of `file:ds` resampled to the result's pixel size
/// `pix` (m): one period (shape × pixel size) on round(period / pix) pixels per axis, by
/// Fourier interpolation ([`fourier_resample`]). For a transmission whose file also holds
/// `/ground_truth/projected_potential_sim` and `/meta@interaction_constant_sigma_rad_per_VA`,
/// the finely sampled potential V is resampled and exp(iσV) formed (how the file's own
/// `transmission_recon` was made); else a `*_sim` sibling of `ds`, if present, or `ds` itself.
///
/// Errors (naming `file:dataset`): unreadable source, or fewer than 2 pixels per period.
fn resample_truth(
    f: &hdf5::File,
    fname: &str,
    ds: &str,
    truth: (Vec<Complex32>, [usize; 2], [f64; 2]),
    pix: [f64; 2],
) -> Result<(Vec<Complex32>, [usize; 2])> {
    let (data, shape, tpix) = truth;
    let period = [shape[0] as f64 * tpix[0], shape[1] as f64 * tpix[1]];
    let n = [
        (period[0] / pix[0]).round() as usize,
        (period[1] / pix[1]).round() as usize,
    ];
    if n[0] < 2 || n[1] < 2 {
        return Err(Error::new(
            format!("{fname}:{ds}"),
            format!("one period ({period:?} m) holds fewer than 2 result pixels of {pix:?} m"),
        ));
    }
    let sigma = f
        .group("meta")
        .and_then(|m| m.attr("interaction_constant_sigma_rad_per_VA"))
        .and_then(|a| a.read_scalar::<f64>())
        .ok();
    let potential = "/ground_truth/projected_potential_sim";
    let sim = ds
        .strip_suffix("_recon")
        .map(|p| format!("{p}_sim"))
        .filter(|s| path_exists(f, s));
    let (out, from) = match sigma {
        Some(sigma) if ds.contains("transmission") && path_exists(f, potential) => {
            let d = f
                .dataset(potential)
                .ctx(|| format!("{fname}:{potential}"))?;
            let v: Vec<f64> = d.read_raw::<f64>().ctx(|| format!("{fname}:{potential}"))?;
            let s = d.shape();
            if s.len() != 2 {
                return Err(Error::new(
                    format!("{fname}:{potential}"),
                    format!("has shape {s:?}, expected 2-D"),
                ));
            }
            let c: Vec<Complex64> = v.iter().map(|&x| Complex64::new(x, 0.0)).collect();
            let r = fourier_resample(&c, [s[0], s[1]], n);
            (
                r.iter()
                    .map(|z| Complex32::from_polar(1.0, (sigma * z.re) as f32))
                    .collect(),
                format!("exp(iσV) of {potential} ({}x{})", s[0], s[1]),
            )
        }
        _ => {
            let (src, sshape) = match &sim {
                Some(s) => {
                    let (d, sh, _) = read_complex_2d(f, fname, s, false)?;
                    (d, sh)
                }
                None => (data, shape),
            };
            let c: Vec<Complex64> = src
                .iter()
                .map(|z| Complex64::new(z.re as f64, z.im as f64))
                .collect();
            let r = fourier_resample(&c, sshape, n);
            (
                r.iter()
                    .map(|z| Complex32::new(z.re as f32, z.im as f32))
                    .collect(),
                format!(
                    "{} ({}x{})",
                    sim.as_deref().unwrap_or(ds),
                    sshape[0],
                    sshape[1]
                ),
            )
        }
    };
    tracing::info!("{fname}:{ds}: pixel size {tpix:?} m, the result's {pix:?} m: truth resampled from {from} to {}x{} px per period", n[0], n[1]);
    Ok((out, n))
}

/// One period of a periodic array resampled from `[h, w]` to `[h2, w2]` samples by Fourier
/// interpolation: the spectrum is cut to (or zero-padded to) the new grid's frequencies and
/// transformed back, values kept (band-limited interpolation).
pub fn fourier_resample(
    a: &[Complex64],
    [h, w]: [usize; 2],
    [h2, w2]: [usize; 2],
) -> Vec<Complex64> {
    let mut spec = a.to_vec();
    Dft2::new(h, w).run(&mut spec, false);
    // signed frequency of index k on an n-point grid, and whether an n-point grid holds f
    let freq = |k: usize, n: usize| {
        if k < n.div_ceil(2) {
            k as i64
        } else {
            k as i64 - n as i64
        }
    };
    let holds = |f: i64, n: usize| f >= -((n / 2) as i64) && f <= ((n - 1) / 2) as i64;
    let mut out = vec![Complex64::default(); h2 * w2];
    for ky in 0..h2 {
        let fy = freq(ky, h2);
        if !holds(fy, h) {
            continue;
        }
        for kx in 0..w2 {
            let fx = freq(kx, w2);
            if holds(fx, w) {
                out[ky * w2 + kx] =
                    spec[fy.rem_euclid(h as i64) as usize * w + fx.rem_euclid(w as i64) as usize];
            }
        }
    }
    Dft2::new(h2, w2).run(&mut out, true);
    let s = 1.0 / (h * w) as f64;
    out.iter_mut().for_each(|z| *z *= s);
    out
}

/// Whether every prefix of the absolute HDF5 path `path` exists in `f`.
fn path_exists(f: &hdf5::File, path: &str) -> bool {
    let mut p = String::new();
    for part in path.split('/').filter(|s| !s.is_empty()) {
        p.push('/');
        p.push_str(part);
        if !f.link_exists(&p) {
            return false;
        }
    }
    !p.is_empty()
}

/// The [`scan_area`] of a result's `/positions_px` ([N, 2] float64) and `file:/positions_px`
/// for messages. Errors name that dataset: unreadable, not [N, 2], no or bad positions.
pub(crate) fn read_scan_area(rf: &hdf5::File, rname: &str) -> Result<([usize; 4], String)> {
    let pos_what = format!("{rname}:/positions_px");
    let pos = rf
        .dataset("/positions_px")
        .and_then(|d| d.read_2d::<f64>())
        .ctx(|| pos_what.clone())?;
    if pos.ncols() != 2 {
        return Err(Error::new(
            pos_what,
            format!("has shape {:?}, expected [N, 2]", pos.shape()),
        ));
    }
    let positions: Vec<[f64; 2]> = pos.rows().into_iter().map(|r| [r[0], r[1]]).collect();
    let area = scan_area(&positions).map_err(|e| Error::new(pos_what.clone(), e.msg))?;
    Ok((area, pos_what))
}

/// A complex64 2-D dataset: (values row-major, [rows, cols], its `pixel_size_m` attribute
/// if present and a pair of numbers). With `project`, a 3-D [S, rows, cols] dataset (a
/// multislice object) is accepted and reduced to its projection Π_s O_s, whose phase is the
/// projected phase Σ_s arg O_s (modulo 2π, which the comparison's phase difference absorbs).
#[allow(clippy::type_complexity)]
pub(crate) fn read_complex_2d(
    f: &hdf5::File,
    fname: &str,
    ds: &str,
    project: bool,
) -> Result<(Vec<Complex32>, [usize; 2], Option<[f64; 2]>)> {
    let what = || format!("{fname}:{ds}");
    let d = f.dataset(ds).ctx(what)?;
    let mut shape = d.shape();
    if !(shape.len() == 2 || project && shape.len() == 3) {
        return Err(Error::new(
            what(),
            format!("has shape {shape:?}, expected a 2-D complex64 array"),
        ));
    }
    let mut data = d
        .read_raw::<Complex32>()
        .ctx(|| format!("{}: reading as complex64", what()))?;
    if shape.len() == 3 {
        let n = shape[1] * shape[2];
        let mut proj = vec![Complex32::new(1.0, 0.0); n];
        for sl in data.chunks_exact(n.max(1)) {
            proj.iter_mut().zip(sl).for_each(|(p, o)| *p *= *o);
        }
        (data, shape) = (proj, shape[1..].to_vec());
    }
    let pix = match d.attr_names() {
        Ok(names) if names.iter().any(|n| n == "pixel_size_m") => {
            let v = d
                .attr("pixel_size_m")
                .and_then(|a| a.read_raw::<f64>())
                .ctx(|| format!("{}@pixel_size_m", what()))?;
            match v.as_slice() {
                [a, b] => Some([*a, *b]),
                [a] => Some([*a, *a]),
                _ => None,
            }
        }
        _ => None,
    };
    Ok((data, [shape[0], shape[1]], pix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: usize = 64;

    /// Smooth periodic test phase (period 64 px in y and x), range about 0..2.5 rad.
    fn phase(y: f64, x: f64) -> f64 {
        let k = 2.0 * PI / P as f64;
        1.25 + 0.45 * (k * 2.0 * x + 0.3).sin()
            + 0.4 * (k * 3.0 * y + 1.1).cos()
            + 0.3 * (k * (4.0 * y + 5.0 * x) + 2.0).sin()
            + 0.1 * (k * (7.0 * y - 6.0 * x) + 0.5).cos()
    }

    fn truth() -> Vec<Complex32> {
        (0..P * P)
            .map(|k| Complex32::from_polar(1.0, phase((k / P) as f64, (k % P) as f64) as f32))
            .collect()
    }

    /// Recon field with O(y, x) = exp(i(φ(y − s_y, x − s_x) + extra(y, x))), global (y, x).
    fn recon(
        origin: [i64; 2],
        shape: [usize; 2],
        s: [f64; 2],
        extra: impl Fn(f64, f64) -> f64,
    ) -> Field<Complex32> {
        let mut f = Field::filled(origin, shape, Complex32::default());
        for i in 0..shape[0] {
            for j in 0..shape[1] {
                let (y, x) = ((origin[0] + i as i64) as f64, (origin[1] + j as i64) as f64);
                f.data[i * shape[1] + j] =
                    Complex32::from_polar(1.0, (phase(y - s[0], x - s[1]) + extra(y, x)) as f32);
            }
        }
        f
    }

    #[test]
    fn unwrapped_phases_count_whole_turns() {
        // a thick specimen's projected phase: 4 × the test phase, 0.3 … 9.3 rad
        let big = |y: f64, x: f64| 4.0 * phase(y, x) - 1.0;
        let truth: Vec<f64> = (0..P * P)
            .map(|k| big((k / P) as f64, (k % P) as f64))
            .collect();
        let (origin, shape, s) = ([3i64, 2i64], [90usize, 80usize], [5.3, 11.6]);
        let field = |f: &dyn Fn(f64) -> f64| {
            let mut o = Field::filled(origin, shape, 0.0f64);
            for i in 0..shape[0] {
                for j in 0..shape[1] {
                    let (y, x) = ((origin[0] + i as i64) as f64, (origin[1] + j as i64) as f64);
                    o.data[i * shape[1] + j] =
                        f(big(y - s[0], x - s[1])) + 0.2 + 0.003 * y - 0.002 * x;
                }
            }
            o
        };
        let area = [10, 80, 10, 70];
        // the true phase (shifted, with an offset and ramp): found, correlation 1
        let r = compare_phases(&field(&|p| p), area, &truth, [P, P]).unwrap();
        assert!(r.phase_correlation > 0.999_999, "{r}");
        assert!(
            cdist(r.shift_px[0], s[0], P) < 0.02 && cdist(r.shift_px[1], s[1], P) < 0.02,
            "{r}"
        );
        // the same phase wrapped to (−π, π]: equal modulo 2π, but not the projected phase
        let w = compare_phases(&field(&wrap), area, &truth, [P, P]).unwrap();
        assert!(w.phase_correlation < 0.9, "{w}");
        assert!(
            (interaction_constant(300e3) - 6.526161e-4).abs() < 1e-9,
            "{}",
            interaction_constant(300e3)
        );
    }

    /// Circular distance of a and b modulo n.
    fn cdist(a: f64, b: f64, n: usize) -> f64 {
        let d = (a - b).rem_euclid(n as f64);
        d.min(n as f64 - d)
    }

    /// Standard normal samples (LCG + Box–Muller), deterministic.
    fn gauss(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        let mut u = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| (-2.0 * u().ln()).sqrt() * (2.0 * PI * u()).cos())
            .collect()
    }

    #[test]
    fn recovers_subpixel_shift_and_ramp() {
        let s = [5.3 + P as f64, -7.6];
        let o = recon([10, 20], [150, 140], s, |y, x| 0.7 + 0.01 * y - 0.02 * x);
        let area = [20, 150, 30, 150];
        let t0 = std::time::Instant::now();
        let r = compare_objects(&o, area, &truth(), [P, P]).expect("compare");
        println!("{r}\n{r:?}\n({:.3} s)", t0.elapsed().as_secs_f64());
        assert!(r.phase_correlation > 0.999, "{}", r.phase_correlation);
        assert!(r.rms_phase_error_rad < 0.01, "{}", r.rms_phase_error_rad);
        assert!(cdist(r.shift_px[0], 5.3, P) < 0.05, "{:?}", r.shift_px);
        assert!(cdist(r.shift_px[1], -7.6, P) < 0.05, "{:?}", r.shift_px);
        assert!(
            (r.ramp[0] - 0.7).abs() < 0.01
                && (r.ramp[1] - 0.01).abs() < 1e-4
                && (r.ramp[2] + 0.02).abs() < 1e-4,
            "{:?}",
            r.ramp
        );
        assert_eq!(r.area, area);
    }

    #[test]
    fn noise_lowers_correlation_as_expected() {
        let s = [-12.7, 30.2];
        let (origin, shape, area) = ([0, 0], [100, 100], [0, 100, 0, 100]);
        let sigma = 0.3;
        let n = gauss(shape[0] * shape[1], 7);
        let w = shape[1];
        let o = recon(origin, shape, s, |y, x| {
            sigma * n[y as usize * w + x as usize]
        });
        let r = compare_objects(&o, area, &truth(), [P, P]).expect("compare");
        // Expected: √(var_s / (var_s + σ²)), var_s the truth phase variance over the area.
        let ph: Vec<f64> = (0..shape[0] * shape[1])
            .map(|k| phase((k / w) as f64 - s[0], (k % w) as f64 - s[1]))
            .collect();
        let m = ph.iter().sum::<f64>() / ph.len() as f64;
        let var_s = ph.iter().map(|v| (v - m).powi(2)).sum::<f64>() / ph.len() as f64;
        let want = (var_s / (var_s + sigma * sigma)).sqrt();
        println!("{r}\n{r:?}\nexpected correlation {want:.6}");
        assert!(
            (r.phase_correlation - want).abs() < 0.01,
            "{} vs {want}",
            r.phase_correlation
        );
        assert!(
            (r.rms_phase_error_rad - sigma).abs() < 0.03 * sigma,
            "{}",
            r.rms_phase_error_rad
        );
        assert!(
            cdist(r.shift_px[0], s[0], P) < 0.1 && cdist(r.shift_px[1], s[1], P) < 0.1,
            "{:?}",
            r.shift_px
        );
    }

    #[test]
    fn identical_objects_correlate_perfectly() {
        let t = truth();
        let o = Field {
            origin: [0, 0],
            shape: [P, P],
            data: t.clone(),
        };
        let r = compare_objects(&o, [0, P, 0, P], &t, [P, P]).expect("compare");
        println!("{r}\n{r:?}");
        assert!(
            (r.phase_correlation - 1.0).abs() < 1e-9,
            "{}",
            r.phase_correlation
        );
        assert!(r.rms_phase_error_rad < 1e-6, "{}", r.rms_phase_error_rad);
        assert!(
            cdist(r.shift_px[0], 0.0, P) < 1e-3 && cdist(r.shift_px[1], 0.0, P) < 1e-3,
            "{:?}",
            r.shift_px
        );
        assert!(r.ramp.iter().all(|v| v.abs() < 1e-6), "{:?}", r.ramp);
    }

    #[test]
    fn truth_larger_than_area() {
        // Area 40 × 50 inside one 64-pixel period.
        let o = recon([0, 0], [60, 70], [3.4, -2.25], |_, _| -1.0);
        let r = compare_objects(&o, [10, 50, 15, 65], &truth(), [P, P]).expect("compare");
        println!("{r:?}");
        assert!(r.phase_correlation > 0.999, "{r}");
        assert!(
            cdist(r.shift_px[0], 3.4, P) < 0.05 && cdist(r.shift_px[1], -2.25, P) < 0.05,
            "{:?}",
            r.shift_px
        );
    }

    #[test]
    fn error_cases() {
        let t = truth();
        let o = Field {
            origin: [0, 0],
            shape: [P, P],
            data: t.clone(),
        };
        let e = compare_objects(&o, [5, 5, 0, 10], &t, [P, P]).unwrap_err();
        assert!(e.what == "area" && e.msg.contains("empty"), "{e}");
        let e = compare_objects(&o, [0, 1, 0, 10], &t, [P, P]).unwrap_err();
        assert_eq!(e.what, "area", "{e}");
        let e = compare_objects(&o, [0, 10, 60, 70], &t, [P, P]).unwrap_err();
        assert!(e.what == "area" && e.msg.contains("outside"), "{e}");
        let shifted = Field {
            origin: [5, 0],
            ..o.clone()
        };
        let e = compare_objects(&shifted, [0, 10, 0, 10], &t, [P, P]).unwrap_err();
        assert!(e.msg.contains("outside"), "{e}");
        let e = compare_objects(&o, [0, 10, 0, 10], &[], [0, 0]).unwrap_err();
        assert!(e.what == "truth" && e.msg.contains("zero size"), "{e}");
        let e = compare_objects(&o, [0, 10, 0, 10], &t[..10], [P, P]).unwrap_err();
        assert_eq!(e.what, "truth", "{e}");
        let mut bad = o.clone();
        bad.data[3 * P + 4] = Complex32::new(f32::NAN, 0.0);
        let e = compare_objects(&bad, [0, 10, 0, 10], &t, [P, P]).unwrap_err();
        assert!(
            e.what == "object" && e.msg.contains("NaN") && e.msg.contains("(3, 4)"),
            "{e}"
        );
        // outside the area a NaN does not matter
        assert!(compare_objects(&bad, [10, 40, 10, 40], &t, [P, P]).is_ok());
        bad.data[3 * P + 4] = Complex32::new(f32::INFINITY, 0.0);
        let e = compare_objects(&bad, [0, 10, 0, 10], &t, [P, P]).unwrap_err();
        assert!(e.msg.contains("Inf"), "{e}");
        let mut badt = t.clone();
        badt[0].im = f32::NAN;
        let e = compare_objects(&o, [0, 10, 0, 10], &badt, [P, P]).unwrap_err();
        assert!(e.what == "truth" && e.msg.contains("NaN"), "{e}");
        let flat = vec![Complex32::new(1.0, 0.0); 16];
        let e = compare_objects(&o, [0, 10, 0, 10], &flat, [4, 4]).unwrap_err();
        assert!(e.what == "truth" && e.msg.contains("constant"), "{e}");
    }

    #[test]
    fn scan_area_rounds_inward() {
        assert_eq!(
            scan_area(&[[64.0, 64.2], [189.79, 70.0], [100.0, 189.0]]).unwrap(),
            [64, 190, 65, 190]
        );
        assert!(scan_area(&[]).is_err());
        assert!(scan_area(&[[-0.5, 3.0]]).is_err());
        assert!(scan_area(&[[f64::NAN, 3.0]]).is_err());
    }

    #[test]
    fn pbtio3_file_end_to_end() {
        let data = Path::new("/work/shared/datasets/pbtio3_thin.h5");
        if !data.exists() {
            println!("skipped: {} is absent", data.display());
            return;
        }
        let f = hdf5::File::open(data).expect("open dataset");
        let t = f
            .dataset("/ground_truth/transmission_recon")
            .and_then(|d| d.read_raw::<Complex32>())
            .expect("truth");
        let pos = f
            .dataset("/data/positions_px")
            .and_then(|d| d.read_2d::<f64>())
            .expect("positions");
        let (n, off) = (254usize, 64usize);
        let obj: Vec<Complex32> = (0..n * n)
            .map(|k| t[((k / n + 128 - off) % 128) * 128 + (k % n + 128 - off) % 128])
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let rp = dir.path().join("recon.h5");
        {
            let rf = hdf5::File::create(&rp).expect("create");
            // (hdf5-metno brings its own ndarray version: write raw with an explicit shape)
            let ds = rf
                .new_dataset::<Complex32>()
                .shape([n, n])
                .create("object")
                .expect("object");
            ds.write_raw(obj.as_slice()).expect("write object");
            ds.new_attr_builder()
                .with_data(&[1.828125e-11f64, 1.828125e-11])
                .create("pixel_size_m")
                .expect("attr");
            let p = pos.mapv(|v| v + off as f64);
            rf.new_dataset_builder()
                .with_data(&p)
                .create("positions_px")
                .expect("positions");
        }
        let t0 = std::time::Instant::now();
        let r = compare_files(&rp, data, None).expect("compare_files");
        println!("{r}\n{r:?}\n({:.3} s)", t0.elapsed().as_secs_f64());
        assert!(r.phase_correlation > 0.999, "{}", r.phase_correlation);
        assert!(
            cdist(r.shift_px[0], 64.0, 128) < 0.05 && cdist(r.shift_px[1], 64.0, 128) < 0.05,
            "{:?}",
            r.shift_px
        );
        assert_eq!(r.area, [64, 190, 64, 190]);
        // a named dataset that is absent is an error naming file:dataset
        let e = compare_files(&rp, data, Some("/nope")).unwrap_err();
        assert!(e.what.ends_with(":/nope"), "{e}");
        let e = compare_files(&dir.path().join("missing.h5"), data, None).unwrap_err();
        assert!(e.what.contains("missing.h5"), "{e}");
    }

    #[test]
    fn files_with_fallback_dataset_and_pixel_size_mismatch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rp, tp) = (dir.path().join("r.h5"), dir.path().join("t.h5"));
        let o = recon([0, 0], [80, 80], [10.25, 20.5], |_, _| 0.0);
        {
            let rf = hdf5::File::create(&rp).expect("create");
            let ds = rf
                .new_dataset::<Complex32>()
                .shape([80, 80])
                .create("object")
                .expect("object");
            ds.write_raw(o.data.as_slice()).expect("write");
            ds.new_attr_builder()
                .with_data(&[1e-10f64, 1e-10])
                .create("pixel_size_m")
                .expect("attr");
            let pos: Vec<f64> = [[5.0, 6.0], [70.5, 71.2]].concat();
            let p = rf
                .new_dataset::<f64>()
                .shape([2, 2])
                .create("positions_px")
                .expect("positions");
            p.write_raw(pos.as_slice()).expect("write");
            let tf = hdf5::File::create(&tp).expect("create");
            let ds = tf
                .create_group("ground_truth")
                .expect("group")
                .new_dataset::<Complex32>()
                .shape([P, P])
                .create("object")
                .expect("truth");
            ds.write_raw(truth().as_slice()).expect("write");
            // 0.05 % larger pixels: within the 0.1 % tolerance, compared pixel by pixel (larger
            // differences resample the truth: tests/detector_sizes.rs)
            ds.new_attr_builder()
                .with_data(&[1.0005e-10f64, 1.0005e-10])
                .create("pixel_size_m")
                .expect("attr");
        }
        let r = compare_files(&rp, &tp, None).expect("compare_files");
        println!("{r:?}");
        assert_eq!(r.area, [5, 71, 6, 72]);
        assert!(r.phase_correlation > 0.999, "{r}");
        assert!(
            cdist(r.shift_px[0], 10.25, P) < 0.05 && cdist(r.shift_px[1], 20.5, P) < 0.05,
            "{:?}",
            r.shift_px
        );
        // an object with a NaN inside the area names the file and dataset
        {
            let rf = hdf5::File::open_rw(&rp).expect("open");
            let mut bad = o.data.clone();
            bad[40 * 80 + 40] = Complex32::new(f32::NAN, f32::NAN);
            rf.dataset("object")
                .and_then(|d| d.write_raw(bad.as_slice()))
                .expect("write");
        }
        let e = compare_files(&rp, &tp, None).unwrap_err();
        assert!(
            e.what.ends_with("r.h5:/object") && e.msg.contains("NaN"),
            "{e}"
        );
    }
}
