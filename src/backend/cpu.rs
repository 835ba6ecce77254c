//! CPU backend: the per-position gradient kernel over rustfft and rayon.
//!
//! Determinism: positions are split into at most [`SLABS`] contiguous slabs, a function of
//! the position count only; each slab is summed sequentially and the slabs are added in
//! slab order. The result is therefore bit-identical for any number of threads.

use super::kernel::{DmStep, Gradients, Kernel, PositionGradient};
use super::projection::fourier_weights;
use crate::config::NoiseModel;
use crate::physics::fft::Real;
use crate::physics::model::{fisher_scale, Field, PositionGeom};
use num_complex::Complex;
use rayon::prelude::*;

/// Upper bound on the number of independently summed slabs of positions.
pub const SLABS: usize = 64;

/// Positions taken through the slices together by the multislice kernel (`slab`): each
/// thread holds this many sets of work buffers (each with its S − 1 incident waves per
/// mode), and a slice's object window and f64 sums are reused from cache this many times.
pub const MULTISLICE_BLOCK: usize = 4;

/// Per-thread work buffers: shifted probe modes `pj`, raw far fields `psi` and the adjoint
/// waves `bk` (∂L/∂χ* of each mode's exit wave, [K][M²]), difference-map far fields `x`
/// ([K][M²], empty unless asked for), one-mode temporaries; multislice: the waves incident
/// on slices 1..S `waves` ([K][S−1][M²]) and a second temporary `w2`, sized on first use.
pub(crate) struct Work<T> {
    pub(crate) pj: Vec<Complex<T>>,
    pub(crate) waves: Vec<Complex<T>>,
    pub(crate) w2: Vec<Complex<T>>,
    pub(crate) psi: Vec<Complex<T>>,
    pub(crate) x: Vec<Complex<T>>,
    pub(crate) w1: Vec<Complex<T>>,
    pub(crate) b: Vec<Complex<T>>,
    pub(crate) bk: Vec<Complex<T>>,
    pub(crate) im: Vec<T>,
    pub(crate) wt: Vec<T>,
    pub(crate) scratch: Vec<Complex<T>>,
}

impl<T: Real> Work<T> {
    /// Buffers for `k`; `x` only with `dm`.
    pub(crate) fn new(k: &Kernel<T>, dm: bool) -> Self {
        let mm = k.fft.size().pow(2);
        let z = Complex::default();
        Work {
            pj: vec![z; k.modes * mm],
            waves: Vec::new(),
            w2: Vec::new(),
            psi: vec![z; k.modes * mm],
            x: if dm {
                vec![z; k.modes * mm]
            } else {
                Vec::new()
            },
            w1: vec![z; mm],
            b: vec![z; mm],
            bk: vec![z; k.modes * mm],
            im: vec![T::zero(); mm],
            wt: vec![T::zero(); mm],
            scratch: k.fft.scratch(),
        }
    }
}

/// One slab's partial sums (f64), on the bounding box of its windows.
struct Slab {
    g: Field<Complex<f64>>,
    d: Field<f64>,
    gp: Vec<Complex<f64>>,
    dp: Vec<f64>,
    loss: f64,
    gpos: Vec<PositionGradient>,
}

/// Accumulate the gradient contributions of `pos` (their intensities `meas`, M² values
/// each in the transposed corner-centred layout `[kx][ky]`, same order as `pos`).
///
/// * `obj`: the object on a rectangle that contains every window of `pos`.
/// * `probe_hat`: [`probe_spectrum`] of the current probe, [K][kx][ky].
/// * `want_probe`: also sum the probe gradient (one more FFT per position and mode).
///
/// Panics only on violated preconditions (a window outside `obj`), which callers rule out
/// when the geometry is built.
pub fn gradients<T: Real>(
    k: &Kernel<T>,
    obj: &Field<Complex<T>>,
    probe_hat: &[Complex<T>],
    pos: &[PositionGeom<T>],
    meas: &[f32],
    want_probe: bool,
) -> Gradients<T> {
    accumulate(
        k,
        obj,
        probe_hat,
        pos,
        meas,
        want_probe,
        false,
        Adjoint::Gradient,
    )
}

/// [`gradients`] and, per position, the loss's derivative with respect to the probe centre
/// and its curvature ([`Gradients::g_pos`], in the order of `pos`): two more row passes of
/// M transforms per position and mode, and one more half transform per run of positions
/// sharing their sub-pixel y-shift (docs/algorithm.md §14).
pub fn gradients_and_positions<T: Real>(
    k: &Kernel<T>,
    obj: &Field<Complex<T>>,
    probe_hat: &[Complex<T>],
    pos: &[PositionGeom<T>],
    meas: &[f32],
    want_probe: bool,
) -> Gradients<T> {
    accumulate(
        k,
        obj,
        probe_hat,
        pos,
        meas,
        want_probe,
        true,
        Adjoint::Gradient,
    )
}

/// The difference-map pass (docs/algorithm.md §7) over `pos`: for each position j and mode
/// k, with Π_O ψ_jk = P_jk O_j from the current object and probe,
/// ```text
/// ψ_jk ← ψ_jk + β [ Π_F(2 Π_O ψ_jk − ψ_jk) − Π_O ψ_jk ]
/// ```
/// (Π_F: the Fourier step with relaxation `gamma` ∈ (0, 1], Ψ'_k scaled jointly over the
/// modes by [`crate::physics::model::relaxed_modulus`]; γ = 1: by √(Î/Σ_k|Ψ_k|²), the
/// modulus projection), and
/// the sums of the object's overlap step, formed with the updated exit waves:
/// `g_obj = Σ_jk P*_jk ψ_jk`, `d_obj = Σ_jk |P_jk|²` (with `want_probe` also
/// `g_probe_hat = Σ_j conj(e_j) F(O*_j ψ_jk)`, `d_probe = Σ_j |O_j|²` with the current
/// object; the engine uses [`probe_sums`] with the updated one instead). `loss` is the noise
/// model's loss at Π_O ψ (the current state).
///
/// With `step.error_reduction` the pass is error reduction instead: ψ_jk ← Π_F^ML(Π_O ψ_jk),
/// the far field of the current state moved by the Fisher-scoring step of the likelihood
/// ([`dm_far_field`]); the sums are formed from these exit waves in the same way.
///
/// `exit`: [n][K][M][M] exit waves, same order as `pos`, updated in place; with `init`
/// they are first set to Π_O ψ (a run's first difference-map iteration).
#[allow(clippy::too_many_arguments)]
pub fn difference_map<T: Real>(
    k: &Kernel<T>,
    obj: &Field<Complex<T>>,
    probe_hat: &[Complex<T>],
    pos: &[PositionGeom<T>],
    meas: &[f32],
    want_probe: bool,
    exit: &mut [Complex<T>],
    init: bool,
    step: DmStep,
) -> Gradients<T> {
    assert_eq!(
        exit.len(),
        pos.len() * k.modes * k.fft.size().pow(2),
        "exit waves do not match positions"
    );
    assert_eq!(
        obj.planes(),
        1,
        "the difference map runs the single-slice model"
    );
    let DmStep {
        beta,
        gamma,
        error_reduction: er,
    } = step;
    accumulate(
        k,
        obj,
        probe_hat,
        pos,
        meas,
        want_probe,
        false,
        Adjoint::DifferenceMap {
            exit,
            init,
            er,
            beta: T::of(beta),
            gamma: T::of(gamma),
        },
    )
}

/// What is back-propagated through the adjoint of the forward model.
enum Adjoint<'a, T> {
    /// b = F⁻¹(w Ψ), the gradient of the noise model's loss.
    Gradient,
    /// b = the updated exit wave of the difference map; `exit` holds the exit waves of
    /// the positions being summed.
    /// With `er`, the error-reduction step instead (see [`dm_far_field`]).
    DifferenceMap {
        exit: &'a mut [Complex<T>],
        init: bool,
        er: bool,
        beta: T,
        gamma: T,
    },
}

fn accumulate<T: Real>(
    k: &Kernel<T>,
    obj: &Field<Complex<T>>,
    probe_hat: &[Complex<T>],
    pos: &[PositionGeom<T>],
    meas: &[f32],
    want_probe: bool,
    want_positions: bool,
    op: Adjoint<'_, T>,
) -> Gradients<T> {
    let m = k.fft.size();
    let mm = m * m;
    assert_eq!(
        meas.len(),
        pos.len() * mm,
        "intensities do not match positions"
    );
    assert_eq!(probe_hat.len(), k.modes * mm, "probe has the wrong size");
    let n = pos.len();
    let probe_dims = if want_probe {
        Some((k.modes, mm))
    } else {
        None
    };
    if n == 0 {
        return Gradients::zeros(obj.origin, obj.shape, obj.planes(), probe_dims);
    }
    let bounds = slab_bounds(n);
    // one adjoint per slab: the exit waves are split along the slab bounds
    let ops: Vec<Adjoint<'_, T>> = match op {
        Adjoint::Gradient => bounds.iter().map(|_| Adjoint::Gradient).collect(),
        Adjoint::DifferenceMap {
            mut exit,
            init,
            er,
            beta,
            gamma,
        } => {
            let per = k.modes * mm;
            let mut v = Vec::with_capacity(bounds.len());
            for &(a, b) in &bounds {
                let (head, tail) = std::mem::take(&mut exit).split_at_mut((b - a) * per);
                v.push(Adjoint::DifferenceMap {
                    exit: head,
                    init,
                    er,
                    beta,
                    gamma,
                });
                exit = tail;
            }
            v
        }
    };
    // slabs in groups of a few per thread: each slab's f64 partial sums (on the bounding box
    // of its windows) live only until they are added, in slab order (so the sum does not
    // depend on the thread count, and the memory of the partials is bounded by the group)
    let group = 2 * rayon::current_num_threads().max(1);
    let mut g = Gradients::zeros(obj.origin, obj.shape, obj.planes(), probe_dims);
    let mut ops = ops.into_iter();
    for bs in bounds.chunks(group) {
        let parts: Vec<Slab> = ops
            .by_ref()
            .take(bs.len())
            .collect::<Vec<_>>()
            .into_par_iter()
            .zip(bs.par_iter())
            .map(|(op, &(a, b))| {
                slab(
                    k,
                    obj,
                    probe_hat,
                    &pos[a..b],
                    &meas[a * mm..b * mm],
                    want_probe,
                    want_positions,
                    op,
                )
            })
            .collect();
        for p in &parts {
            add_field(&mut g.g_obj, &p.g);
            add_field(&mut g.d_obj, &p.d);
            g.g_probe_hat
                .iter_mut()
                .zip(&p.gp)
                .for_each(|(a, b)| *a += *b);
            g.d_probe.iter_mut().zip(&p.dp).for_each(|(a, b)| *a += *b);
            g.loss += p.loss;
            g.g_pos.extend_from_slice(&p.gpos);
        }
    }
    g
}

/// The probe half of the difference map's overlap step, with the object already updated:
/// `g_probe_hat = Σ_j conj(e_j) F(O*_j ψ_jk)` ([K][kx][ky]) and `d_probe = Σ_j |O_j|²`
/// ([M, M]) over `pos` with exit waves `exit` ([n][K][M][M]); f64 sums, per slab and the
/// slabs in order. One FFT per position and mode.
pub fn probe_sums<T: Real>(
    k: &Kernel<T>,
    obj: &Field<Complex<T>>,
    pos: &[PositionGeom<T>],
    exit: &[Complex<T>],
) -> Gradients<T> {
    let m = k.fft.size();
    let mm = m * m;
    let kmm = k.modes * mm;
    assert_eq!(
        exit.len(),
        pos.len() * kmm,
        "exit waves do not match positions"
    );
    let sc = k.fft.scale();
    let parts: Vec<(Vec<Complex<f64>>, Vec<f64>)> = slab_bounds(pos.len())
        .par_iter()
        .map(|&(a, b)| {
            let mut w = Work::new(k, false);
            let (mut gp, mut dp) = (vec![Complex::default(); kmm], vec![0.0; mm]);
            for (j, p) in pos[a..b].iter().enumerate() {
                let (oy, ox) = window_offset(obj, p, m);
                let orow = |y: usize| &obj.data[(oy + y) * obj.shape[1] + ox..][..m];
                for y in 0..m {
                    for (d, o) in dp[y * m..(y + 1) * m].iter_mut().zip(orow(y)) {
                        *d += o.norm_sqr().f64();
                    }
                }
                for mode in 0..k.modes {
                    let e = &exit[(a + j) * kmm + mode * mm..][..mm];
                    for (y, (t, er)) in w.w1.chunks_exact_mut(m).zip(e.chunks_exact(m)).enumerate()
                    {
                        for ((t, ev), o) in t.iter_mut().zip(er).zip(orow(y)) {
                            *t = o.conj() * *ev;
                        }
                    }
                    k.fft.forward_t_raw(&mut w.w1, &mut w.b, &mut w.scratch);
                    for ((g, t), rx) in gp[mode * mm..(mode + 1) * mm]
                        .chunks_exact_mut(m)
                        .zip(w.b.chunks_exact(m))
                        .zip(&p.ramp_x)
                    {
                        T::acc_cmul_conj_cscale(g, &p.ramp_y, t, rx.conj() * sc);
                    }
                }
            }
            (gp, dp)
        })
        .collect();
    let mut g = Gradients::zeros([0, 0], [0, 0], 1, Some((k.modes, mm)));
    for (gp, dp) in &parts {
        g.g_probe_hat.iter_mut().zip(gp).for_each(|(a, b)| *a += *b);
        g.d_probe.iter_mut().zip(dp).for_each(|(a, b)| *a += *b);
    }
    g
}

/// Contiguous slabs [a, b) of `n` positions (at most [`SLABS`], a function of n only).
fn slab_bounds(n: usize) -> Vec<(usize, usize)> {
    let slabs = SLABS.min(n);
    (0..slabs)
        .map(|s| (s * n / slabs, (s + 1) * n / slabs))
        .collect()
}

/// Σ_j loss_j of the noise model over `pos` (forward model only; 2 FFTs per position and
/// mode), summed per slab in f64 and the slabs in order: deterministic for any thread count.
pub fn loss<T: Real>(
    k: &Kernel<T>,
    obj: &Field<Complex<T>>,
    probe_hat: &[Complex<T>],
    pos: &[PositionGeom<T>],
    meas: &[f32],
) -> f64 {
    let mm = k.fft.size().pow(2);
    assert_eq!(
        meas.len(),
        pos.len() * mm,
        "intensities do not match positions"
    );
    let sc2 = k.fft.scale() * k.fft.scale();
    let parts: Vec<f64> = slab_bounds(pos.len())
        .par_iter()
        .map(|&(a, b)| {
            let mut w = Work::new(k, false);
            let mut l = 0.0;
            for (j, p) in pos[a..b].iter().enumerate() {
                forward(k, obj, probe_hat, None, p, &mut w);
                l += pattern_residuals(
                    k,
                    &meas[(a + j) * mm..(a + j + 1) * mm],
                    &mut w.im,
                    &mut w.wt,
                    sc2,
                    sc2,
                );
            }
            l
        })
        .collect();
    parts.iter().sum()
}

/// `dst += src` where `src`'s rectangle lies inside `dst`'s, plane by plane (both have the
/// same number of planes).
pub fn add_field<V: Copy + std::ops::Add<Output = V>>(dst: &mut Field<V>, src: &Field<V>) {
    let oy = (src.origin[0] - dst.origin[0]) as usize;
    let ox = (src.origin[1] - dst.origin[1]) as usize;
    let w = src.shape[1];
    let (dl, sl) = (dst.plane_len(), src.plane_len());
    for s in 0..src.planes().min(dst.planes()) {
        for y in 0..src.shape[0] {
            let d = &mut dst.data[s * dl + (oy + y) * dst.shape[1] + ox..][..w];
            for (a, b) in d
                .iter_mut()
                .zip(&src.data[s * sl + y * w..s * sl + (y + 1) * w])
            {
                *a = *a + *b;
            }
        }
    }
}

/// Noise-model residual over one pattern: from raw intensities `im` (scaled by `isc` to
/// model intensities I, in place) writes `wt = scale · ∂L/∂I` per detector pixel and returns
/// the pattern's loss (see `physics::model::residual`, which this must match). The loss is
/// summed in 8 independent lanes so the loop vectorises; the lane order is fixed, so the
/// result is deterministic.
///
/// With `MASKED`, each pixel's loss and weight are multiplied by `g` (0 or 1 per pixel,
/// [`Kernel::weights`]), so bad pixels drop out of the likelihood; without it `g` is unused
/// and the loop is the unweighted one.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn residuals<T: Real, const MASKED: bool>(
    noise: NoiseModel,
    meas: &[f32],
    g: &[f32],
    im: &mut [T],
    wt: &mut [T],
    eps: T,
    isc: T,
    scale: T,
) -> f64 {
    const L: usize = 8;
    let gw = |i: usize| if MASKED { T::of32(g[i]) } else { T::one() };
    let mut lanes = [T::zero(); L];
    let n = meas.len();
    assert!(
        im.len() == n && wt.len() == n,
        "pattern, intensity and weight lengths differ"
    );
    // whole chunks of L (vectorised), then the last n mod L pixels (any detector side) into
    // lanes 0..n mod L; the same per-pixel arithmetic, so the result stays deterministic
    let body = n - n % L;
    match noise {
        NoiseModel::Poisson => {
            let first = |lane: &mut T, m: f32, i: &mut T, w: &mut T, gq: T| {
                let iv = *i * isc;
                *i = iv;
                *w = (T::one() - T::of32(m) / (iv + eps)) * scale * gq;
                *lane = *lane + iv * gq;
            };
            // −Î − Î ln((I + ε)/Î) only where Î > 0 (most low-dose pixels are 0)
            let second = |lane: &mut T, m: f32, i: T, gq: T| {
                if m > 0.0 {
                    let mv = T::of32(m);
                    let lq = mv * ((i + eps) / mv).ln();
                    *lane = if MASKED {
                        *lane - (mv + lq) * gq
                    } else {
                        *lane - mv - lq
                    };
                }
            };
            for (c, ((w, m), i)) in wt[..body]
                .chunks_exact_mut(L)
                .zip(meas[..body].chunks_exact(L))
                .zip(im[..body].chunks_exact_mut(L))
                .enumerate()
            {
                for q in 0..L {
                    first(&mut lanes[q], m[q], &mut i[q], &mut w[q], gw(c * L + q));
                }
            }
            for j in body..n {
                first(&mut lanes[j - body], meas[j], &mut im[j], &mut wt[j], gw(j));
            }
            for (c, (m, i)) in meas[..body]
                .chunks_exact(L)
                .zip(im[..body].chunks_exact(L))
                .enumerate()
            {
                for q in 0..L {
                    second(&mut lanes[q], m[q], i[q], gw(c * L + q));
                }
            }
            for j in body..n {
                second(&mut lanes[j - body], meas[j], im[j], gw(j));
            }
        }
        NoiseModel::Amplitude => {
            let one = |lane: &mut T, m: f32, i: &mut T, w: &mut T, gq: T| {
                let iv = *i * isc;
                *i = iv;
                let a = (iv + eps).sqrt();
                let sm = (T::of32(m) + eps).sqrt();
                let d = a - sm;
                *lane = *lane + d * d * gq;
                *w = if a > T::zero() {
                    (T::one() - sm / a) * scale * gq
                } else {
                    T::zero()
                };
            };
            for (c, ((w, m), i)) in wt[..body]
                .chunks_exact_mut(L)
                .zip(meas[..body].chunks_exact(L))
                .zip(im[..body].chunks_exact_mut(L))
                .enumerate()
            {
                for q in 0..L {
                    one(&mut lanes[q], m[q], &mut i[q], &mut w[q], gw(c * L + q));
                }
            }
            for j in body..n {
                one(&mut lanes[j - body], meas[j], &mut im[j], &mut wt[j], gw(j));
            }
        }
    }
    lanes.iter().map(|v| v.f64()).sum()
}

/// [`residuals`] of one pattern with the kernel's noise model, Poisson floor and detector
/// mask ([`Kernel::weights`]).
#[inline(always)]
pub(crate) fn pattern_residuals<T: Real>(
    k: &Kernel<T>,
    meas: &[f32],
    im: &mut [T],
    wt: &mut [T],
    isc: T,
    scale: T,
) -> f64 {
    match &k.weights {
        None => residuals::<T, false>(k.noise, meas, &[], im, wt, k.eps, isc, scale),
        Some(g) => residuals::<T, true>(k.noise, meas, g, im, wt, k.eps, isc, scale),
    }
}

fn slab<T: Real>(
    k: &Kernel<T>,
    obj: &Field<Complex<T>>,
    probe_hat: &[Complex<T>],
    pos: &[PositionGeom<T>],
    meas: &[f32],
    want_probe: bool,
    want_positions: bool,
    mut op: Adjoint<'_, T>,
) -> Slab {
    let m = k.fft.size();
    let mm = m * m;
    let km = k.modes;
    let sc = k.fft.scale(); // 1/M: raw transforms are M × unitary ones
    let sc2 = sc * sc;
    // bounding box of the slab's windows
    let y0 = pos
        .iter()
        .map(|p| p.window[0])
        .min()
        .unwrap_or(obj.origin[0]);
    let x0 = pos
        .iter()
        .map(|p| p.window[1])
        .min()
        .unwrap_or(obj.origin[1]);
    let y1 = pos
        .iter()
        .map(|p| p.window[0])
        .max()
        .unwrap_or(obj.origin[0])
        + m as i64;
    let x1 = pos
        .iter()
        .map(|p| p.window[1])
        .max()
        .unwrap_or(obj.origin[1])
        + m as i64;
    let shape = [(y1 - y0) as usize, (x1 - x0) as usize];
    let mut s = Slab {
        g: Field::stack([y0, x0], shape, obj.planes(), Complex::default()),
        d: Field::stack([y0, x0], shape, obj.planes(), 0.0),
        gp: if want_probe {
            vec![Complex::default(); km * mm]
        } else {
            Vec::new()
        },
        dp: if want_probe {
            vec![0.0; mm]
        } else {
            Vec::new()
        },
        loss: 0.0,
        gpos: Vec::with_capacity(if want_positions { pos.len() } else { 0 }),
    };
    let z = Complex::default();
    // multislice: the positions of a run go through the slices in blocks of
    // MULTISLICE_BLOCK, slice by slice, so that a slice's object window and f64 sums are
    // reused from cache by the block's overlapping windows instead of being evicted by the
    // other S − 1 slices' between two positions; every sum still receives its terms in
    // position order, so the result is the same bit for bit as one position at a time
    let planes = obj.planes();
    let blk = if planes > 1 { MULTISLICE_BLOCK } else { 1 };
    let dm = matches!(op, Adjoint::DifferenceMap { .. });
    let mut ws: Vec<Work<T>> = (0..blk).map(|_| Work::new(k, dm)).collect();
    let ow = obj.shape[1];
    let gw = shape[1];
    // runs of consecutive positions with the same sub-pixel y-shift (rows of a raster scan)
    // share the y-half of the probe-shift transform and of the probe gradient's transform.
    // Every position takes this path, a lone one as a run of 1: its arithmetic is then the
    // same whichever neighbours a rank's subset gives it, so a tiled sum has the same terms
    // as the single-rank one (docs/algorithm.md §5).
    let mut cy = vec![z; km * mm];
    // position correction: the y-half of the y-derivative of the shifted probe, per run, and
    // a temporary for the derivatives
    let (mut cyd, mut dpos) = if want_positions {
        (vec![z; km * mm], vec![z; mm])
    } else {
        (Vec::new(), Vec::new())
    };
    let (mut acc, mut tmp64) = if want_probe {
        (
            vec![Complex::default(); km * mm],
            vec![Complex::default(); mm],
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let local = |p: &PositionGeom<T>| ((p.window[0] - y0) as usize, (p.window[1] - x0) as usize);
    for run in y_runs(pos) {
        let (start, end) = (run.start, run.end);
        let w = &mut ws[0];
        y_shifted(
            k,
            probe_hat,
            &pos[start].ramp_y,
            &mut w.w1,
            &mut w.scratch,
            &mut cy,
        );
        if want_positions {
            let ey = shift_derivative(&pos[start].ramp_y);
            y_shifted(k, probe_hat, &ey, &mut w.w1, &mut w.scratch, &mut cyd);
        }
        for first in (start..end).step_by(blk) {
            let block = first..(first + blk).min(end);
            let bp = &pos[block.clone()];
            let ws = &mut ws[..block.len()];
            // forward: the shifted probes, then slice by slice over the block
            for (w, p) in ws.iter_mut().zip(bp) {
                shifted_probe(k, probe_hat, Some(&cy), p, w);
            }
            for sl in 0..planes - 1 {
                for (w, p) in ws.iter_mut().zip(bp) {
                    propagate_slice(k, obj, window_offset(obj, p, m), sl, w);
                }
            }
            // far fields, model intensities (scaled by 1/M² in `residuals`) and weights
            // w/M², so that a raw inverse FFT of w Ψ_raw gives the unitary adjoint wave b
            for ((w, p), j) in ws.iter_mut().zip(bp).zip(block.clone()) {
                let (oy, ox) = window_offset(obj, p, m);
                let orow = |y: usize| &obj.data[(oy + y) * ow + ox..][..m];
                far_field(k, obj, (oy, ox), w);
                let pat = &meas[j * mm..(j + 1) * mm];
                s.loss += pattern_residuals(k, pat, &mut w.im, &mut w.wt, sc2, sc2);
                if let Adjoint::DifferenceMap {
                    exit,
                    init,
                    er,
                    gamma,
                    ..
                } = &mut op
                {
                    dm_far_field(
                        k,
                        w,
                        &mut exit[j * km * mm..(j + 1) * km * mm],
                        *init,
                        *er,
                        *gamma,
                        pat,
                        &orow,
                    );
                }
                for mode in 0..km {
                    let b = &mut w.bk[mode * mm..(mode + 1) * mm];
                    match &mut op {
                        Adjoint::Gradient => {
                            T::mul_real(&mut w.w1, &w.psi[mode * mm..(mode + 1) * mm], &w.wt);
                            k.fft.inverse_t_raw(&mut w.w1, b, &mut w.scratch);
                        }
                        Adjoint::DifferenceMap { exit, beta, er, .. } => {
                            // ψ' = F⁻¹(f X_k); ψ ← ψ + β(ψ' − P_jk O_j) (error reduction:
                            // ψ ← ψ'); b = ψ
                            let (reduce, beta) = (*er, *beta);
                            // error reduction scales the model's far field Ψ itself
                            let far = if reduce { &w.psi } else { &w.x };
                            T::mul_real(&mut w.w1, &far[mode * mm..(mode + 1) * mm], &w.wt);
                            k.fft.inverse_t_raw(&mut w.w1, b, &mut w.scratch);
                            let e = &mut exit[(j * km + mode) * mm..(j * km + mode + 1) * mm];
                            let pj = &w.pj[mode * mm..(mode + 1) * mm];
                            for (y, ((er, br), pr)) in e
                                .chunks_exact_mut(m)
                                .zip(b.chunks_exact_mut(m))
                                .zip(pj.chunks_exact(m))
                                .enumerate()
                            {
                                for ((ev, bv), (pv, ov)) in
                                    er.iter_mut().zip(br.iter_mut()).zip(pr.iter().zip(orow(y)))
                                {
                                    *ev = if reduce {
                                        *bv
                                    } else {
                                        *ev + (*bv - *pv * *ov) * beta
                                    };
                                    *bv = *ev;
                                }
                            }
                        }
                    }
                }
            }
            // the slices after the first, last to second: each slice's sums over the block,
            // then the block's back-propagations to the slice before
            for sl in (1..planes).rev() {
                for (w, p) in ws.iter_mut().zip(bp) {
                    let at = window_offset(obj, p, m);
                    adjoint_slice(k, obj, at, &mut s.g, &mut s.d, local(p), sl, w);
                }
                for w in ws.iter_mut() {
                    back_propagate_slice(k, planes, sl, w);
                }
            }
            // slice 0 (the only one of a single-slice object), the probe and the position
            for (w, p) in ws.iter_mut().zip(bp) {
                let (oy, ox) = window_offset(obj, p, m);
                let orow = |y: usize| &obj.data[(oy + y) * ow + ox..][..m];
                // g_O += P* b, D_O += |P|²; g_P̂ += conj(ramp) F(O* b)
                let (gy, gx) = local(p);
                let mut pg = PositionGradient {
                    index: p.index,
                    ..Default::default()
                };
                let ex = if want_positions {
                    shift_derivative(&p.ramp_x)
                } else {
                    Vec::new()
                };
                for mode in 0..km {
                    // g_O += P* b, D_O += |P|², and for the probe gradient w1 = O* b,
                    // D_P += |O|² (multislice: slice 0 and the wave incident on it, the
                    // shifted probe)
                    let pj = &w.pj[mode * mm..(mode + 1) * mm];
                    for (y, ((pr, br), t)) in pj
                        .chunks_exact(m)
                        .zip(w.bk[mode * mm..(mode + 1) * mm].chunks_exact(m))
                        .zip(w.w1.chunks_exact_mut(m))
                        .enumerate()
                    {
                        let row = (gy + y) * gw + gx;
                        let dp = if want_probe && mode == 0 {
                            Some(&mut s.dp[y * m..(y + 1) * m])
                        } else {
                            None
                        };
                        T::adjoint_row(
                            &mut s.g.data[row..row + m],
                            &mut s.d.data[row..row + m],
                            t,
                            dp,
                            pr,
                            br,
                            orow(y),
                        );
                    }
                    if want_positions {
                        // ∂P/∂c_y from the run's y-derivative half, ∂P/∂c_x from the shared half
                        // times the x-derivative ramp; each a row pass of inverse transforms
                        for (axis, (half, rx)) in
                            [(&cyd, &p.ramp_x), (&cy, &ex)].into_iter().enumerate()
                        {
                            for (dst, src) in dpos
                                .chunks_exact_mut(m)
                                .zip(half[mode * mm..(mode + 1) * mm].chunks_exact(m))
                            {
                                T::cmul(dst, src, rx);
                            }
                            k.fft.rows_inverse_raw(&mut dpos, &mut w.scratch);
                            pg.grad[axis] += position_gradient(&dpos, &w.w1, m);
                        }
                        let cv = shift_curvature(pj, &orow, m);
                        pg.curv[0] += cv[0];
                        pg.curv[1] += cv[1];
                    }
                    if !want_probe {
                        continue;
                    }
                    // x-half of F(O* b), times conj(e_x)/M, summed over the run (f64)
                    k.fft.rows_forward_raw(&mut w.w1, &mut w.scratch);
                    let a = &mut acc[mode * mm..(mode + 1) * mm];
                    for (arow, trow) in a.chunks_exact_mut(m).zip(w.w1.chunks_exact(m)) {
                        T::acc_cmul_conj_cscale(arow, &p.ramp_x, trow, Complex::new(sc, T::zero()));
                    }
                }
                if want_positions {
                    s.gpos.push(pg);
                }
            }
        }
        if want_probe {
            flush_probe_run(k, &pos[start].ramp_y, &mut acc, &mut tmp64, &mut s.gp);
        }
    }
    s
}

/// The derivative of a shift ramp e[q] = exp(−2πi q f) with respect to the shift f:
/// e[q] · (−2πi q), q = fftfreq(index, M) (cycles per pixel).
fn shift_derivative<T: Real>(ramp: &[Complex<T>]) -> Vec<Complex<T>> {
    let m = ramp.len();
    ramp.iter()
        .enumerate()
        .map(|(i, e)| {
            *e * Complex::new(
                T::zero(),
                T::of(-2.0 * std::f64::consts::PI * crate::physics::fft::fftfreq(i, m)),
            )
        })
        .collect()
}

/// One axis of a [`PositionGradient`]'s gradient: 2 Re Σ conj(t) dP over the window, with
/// `dp` = ∂P/∂c ([M][M]) and `t` = ∂L/∂P* ([M][M]); f64.
fn position_gradient<T: Real>(dp: &[Complex<T>], t: &[Complex<T>], m: usize) -> f64 {
    let mut g = 0.0;
    for (dr, tr) in dp.chunks_exact(m).zip(t.chunks_exact(m)) {
        for (d, t) in dr.iter().zip(tr) {
            g += t.re.f64() * d.re.f64() + t.im.f64() * d.im.f64();
        }
    }
    2.0 * g
}

/// A [`PositionGradient`]'s curvature for one mode: Σ_r |P(r)|² |∂_a O(r)|² per axis
/// a = (y, x), with `p` the shifted probe ([M][M]) and ∂_a O the central difference of the
/// object's window (one-sided at the window's edges); f64. This is the Gauss–Newton
/// curvature of the exit wave for a move of the probe *relative to the object*
/// (docs/algorithm.md §14): the exit wave's own derivative O ∂P/∂c also holds a shift of
/// the whole wave, which moves only the far field's phase and no intensity, and with a
/// defocused probe (large phase gradients) it dominates Σ|O ∂P/∂c|² by orders of magnitude.
fn shift_curvature<'o, T: Real>(
    p: &[Complex<T>],
    orow: &dyn Fn(usize) -> &'o [Complex<T>],
    m: usize,
) -> [f64; 2] {
    let mut c = [0.0f64; 2];
    if m < 2 {
        return c;
    }
    let diff = |a: Complex<T>, b: Complex<T>, h: f64| {
        let (re, im) = (a.re.f64() - b.re.f64(), a.im.f64() - b.im.f64());
        (re * re + im * im) / (h * h)
    };
    for y in 0..m {
        let (ya, yb) = (y.saturating_sub(1), (y + 1).min(m - 1));
        let (ra, rb, r) = (orow(ya), orow(yb), orow(y));
        let hy = (yb - ya) as f64;
        for x in 0..m {
            let (xa, xb) = (x.saturating_sub(1), (x + 1).min(m - 1));
            let w = p[y * m + x].norm_sqr().f64();
            c[0] += w * diff(rb[x], ra[x], hy);
            c[1] += w * diff(r[xb], r[xa], (xb - xa) as f64);
        }
    }
    c
}

/// Runs of consecutive positions with the same sub-pixel y-shift (rows of a raster scan),
/// in order (a position whose neighbours differ is a run of 1): the y-half of the probe
/// transforms is computed once per run.
pub fn y_runs<T: Real>(pos: &[PositionGeom<T>]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < pos.len() {
        let end = start
            + pos[start..]
                .iter()
                .take_while(|q| q.ramp_y == pos[start].ramp_y)
                .count();
        runs.push(start..end);
        start = end;
    }
    runs
}

/// The difference map's Fourier step for one position, after [`forward`] and
/// [`pattern_residuals`]: X_k = F_raw(2 P_jk O_j − ψ_jk) into `w.x` and the Fourier-step
/// weights f/M² into `w.wt` (f of [`super::projection::fourier_weights`] with relaxation
/// `gamma`; γ = 1: f = √(Î / Σ_k|X_k|²)), so that a raw inverse FFT of X_k · wt is the
/// unitary Π_F. With `init` the exit waves `exit` ([K][M][M]) are first set to P_jk O_j.
///
/// With `er` (error reduction, docs/algorithm.md §7) only the weights are written: the
/// step scales the model's far field F_raw(P_jk O_j), already in `w.psi`, by
/// f = 1 − (∂L/∂I)/c, the Fisher-scoring step of the noise model's
/// likelihood (c = [`fisher_scale`]; Poisson f = (1 + Î/I)/2, amplitude f = √(Î/I), the
/// modulus projection), from the gradient weights `w.wt` = (∂L/∂I)/M² that
/// [`pattern_residuals`] left there (0 on masked pixels: f = 1 keeps the model there).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dm_far_field<'o, T: Real>(
    k: &Kernel<T>,
    w: &mut Work<T>,
    exit: &mut [Complex<T>],
    init: bool,
    er: bool,
    gamma: T,
    meas: &[f32],
    orow: &dyn Fn(usize) -> &'o [Complex<T>],
) {
    let m = k.fft.size();
    let mm = m * m;
    if er {
        let sc2 = k.fft.scale() * k.fft.scale();
        let c = T::of(fisher_scale(k.noise));
        for v in w.wt.iter_mut() {
            *v = sc2 - *v / c;
        }
        return;
    }
    let two = T::of(2.0);
    for mode in 0..k.modes {
        let pj = &w.pj[mode * mm..(mode + 1) * mm];
        let e = &mut exit[mode * mm..(mode + 1) * mm];
        for (y, ((er, pr), cr)) in e
            .chunks_exact_mut(m)
            .zip(pj.chunks_exact(m))
            .zip(w.w1.chunks_exact_mut(m))
            .enumerate()
        {
            for ((ev, cv), (pv, ov)) in er.iter_mut().zip(cr.iter_mut()).zip(pr.iter().zip(orow(y)))
            {
                let po = *pv * *ov;
                if init {
                    *ev = po;
                }
                *cv = po * two - *ev;
            }
        }
        k.fft.forward_t_raw(
            &mut w.w1,
            &mut w.x[mode * mm..(mode + 1) * mm],
            &mut w.scratch,
        );
    }
    T::norm(&mut w.im, &w.x[..mm]);
    for mode in 1..k.modes {
        T::acc_norm(&mut w.im, &w.x[mode * mm..(mode + 1) * mm]);
    }
    // raw intensities: the unitary ones are im/M²; weights f/M²
    let sc2 = k.fft.scale() * k.fft.scale();
    fourier_weights(
        k.noise,
        gamma,
        k.eps,
        meas,
        k.weights.as_deref(),
        &w.im,
        sc2,
        &mut w.wt,
        sc2,
    );
}

/// Local (row, column) of a position's window in `obj`. Panics if the window is not inside
/// `obj` (a violated precondition: geometry is validated when it is built).
pub(crate) fn window_offset<T>(
    obj: &Field<T>,
    p: &PositionGeom<impl Real>,
    m: usize,
) -> (usize, usize) {
    let oy = p.window[0] - obj.origin[0];
    let ox = p.window[1] - obj.origin[1];
    assert!(
        oy >= 0 && ox >= 0 && oy as usize + m <= obj.shape[0] && ox as usize + m <= obj.shape[1],
        "window outside the object field"
    );
    (oy as usize, ox as usize)
}

/// Forward model of one position: shifted probe modes into `w.pj`, raw far fields
/// (M × unitary) into `w.psi`, raw intensities Σ_k |Ψ_raw|² into `w.im`; multislice: the
/// waves incident on slices 1..S−1 into `w.waves`.
///
/// `cy`: the probe modes already shifted along y for this position's sub-pixel y-shift
/// ([`y_shifted`], shared by a run of positions with the same y-shift, as along a row of a
/// raster scan); the x-shift then costs only the second half of the inverse transform.
#[inline(always)]
pub(crate) fn forward<T: Real>(
    k: &Kernel<T>,
    obj: &Field<Complex<T>>,
    probe_hat: &[Complex<T>],
    cy: Option<&[Complex<T>]>,
    p: &PositionGeom<T>,
    w: &mut Work<T>,
) {
    let at = window_offset(obj, p, k.fft.size());
    shifted_probe(k, probe_hat, cy, p, w);
    for s in 0..obj.planes() - 1 {
        propagate_slice(k, obj, at, s, w);
    }
    far_field(k, obj, at, w);
}

/// The shifted probe modes P_jk = S_j P_k of one position (docs/algorithm.md §3) into
/// `w.pj` ([K][y][x]): from `cy` ([`y_shifted`]) by the x-half of the inverse transform,
/// or without `cy` from the probe spectrum `probe_hat` ([K][kx][ky]) by a whole one.
#[inline(always)]
fn shifted_probe<T: Real>(
    k: &Kernel<T>,
    probe_hat: &[Complex<T>],
    cy: Option<&[Complex<T>]>,
    p: &PositionGeom<T>,
    w: &mut Work<T>,
) {
    let m = k.fft.size();
    let mm = m * m;
    let sc = k.fft.scale();
    for mode in 0..k.modes {
        let pj = &mut w.pj[mode * mm..(mode + 1) * mm];
        match cy {
            Some(cy) => {
                // P_jk[y][x] = F⁻¹_kx (C_k[y][kx] · e_x[kx])
                for (dst, src) in pj
                    .chunks_exact_mut(m)
                    .zip(cy[mode * mm..(mode + 1) * mm].chunks_exact(m))
                {
                    T::cmul(dst, src, &p.ramp_x);
                }
                k.fft.rows_inverse_raw(pj, &mut w.scratch);
            }
            None => {
                let ph = &probe_hat[mode * mm..(mode + 1) * mm];
                for ((dst, src), rx) in
                    w.w1.chunks_exact_mut(m)
                        .zip(ph.chunks_exact(m))
                        .zip(&p.ramp_x)
                {
                    T::cmul_cscale(dst, src, &p.ramp_y, *rx * sc);
                }
                k.fft.inverse_t_raw(&mut w.w1, pj, &mut w.scratch);
            }
        }
    }
}

/// The far field of one position (docs/algorithm.md §3, §12): for every probe mode the raw
/// transform (M × unitary) of the exit wave, the wave incident on the last slice (the
/// shifted probe `w.pj` for a single slice, else `w.waves`) times that slice at the
/// window's local origin `(oy, ox)` in `obj`, into `w.psi` ([K][kx][ky]); the raw
/// intensities Σ_k |Ψ_raw|² (M² × the unitary ones) into `w.im`.
#[inline(always)]
fn far_field<T: Real>(
    k: &Kernel<T>,
    obj: &Field<Complex<T>>,
    (oy, ox): (usize, usize),
    w: &mut Work<T>,
) {
    let m = k.fft.size();
    let mm = m * m;
    let (ow, planes) = (obj.shape[1], obj.planes());
    let last = (planes - 1) * obj.plane_len();
    for mode in 0..k.modes {
        let src = if planes > 1 {
            &w.waves[(mode * (planes - 1) + planes - 2) * mm..][..mm]
        } else {
            &w.pj[mode * mm..(mode + 1) * mm]
        };
        for (y, (dst, pr)) in
            w.w1.chunks_exact_mut(m)
                .zip(src.chunks_exact(m))
                .enumerate()
        {
            T::cmul(dst, pr, &obj.data[last + (oy + y) * ow + ox..][..m]);
        }
        k.fft.forward_t_raw(
            &mut w.w1,
            &mut w.psi[mode * mm..(mode + 1) * mm],
            &mut w.scratch,
        );
    }
    T::norm(&mut w.im, &w.psi[..mm]);
    for mode in 1..k.modes {
        T::acc_norm(&mut w.im, &w.psi[mode * mm..(mode + 1) * mm]);
    }
}

/// One step of the multislice forward model (docs/algorithm.md §12) for every probe mode of
/// one position: the wave incident on slice s + 1, ψ_{s+1} = F⁻¹[H_Δz · F(ψ_s · O_s)], from
/// ψ_s (the shifted probe `w.pj` for s = 0, else `w.waves`) into `w.waves` ([K][S−1][M²],
/// sized at s = 0); `(oy, ox)` is the window's local origin in `obj` (S planes).
fn propagate_slice<T: Real>(
    k: &Kernel<T>,
    obj: &Field<Complex<T>>,
    (oy, ox): (usize, usize),
    s: usize,
    w: &mut Work<T>,
) {
    let m = k.fft.size();
    let mm = m * m;
    let planes = obj.planes();
    assert_eq!(
        k.propagator.len(),
        mm,
        "a multislice object needs the kernel's propagator"
    );
    if s == 0 {
        let need = k.modes * (planes - 1) * mm;
        if w.waves.len() != need {
            w.waves.resize(need, Complex::default());
        }
        if w.w2.len() != mm {
            w.w2.resize(mm, Complex::default());
        }
    }
    let (ow, pl) = (obj.shape[1], obj.plane_len());
    for mode in 0..k.modes {
        let (done, rest) = w.waves.split_at_mut((mode * (planes - 1) + s) * mm);
        let src = if s == 0 {
            &w.pj[mode * mm..(mode + 1) * mm]
        } else {
            &done[(mode * (planes - 1) + s - 1) * mm..][..mm]
        };
        for (y, (dst, pr)) in
            w.w1.chunks_exact_mut(m)
                .zip(src.chunks_exact(m))
                .enumerate()
        {
            T::cmul(dst, pr, &obj.data[s * pl + (oy + y) * ow + ox..][..m]);
        }
        k.fft.convolve_raw(
            &mut w.w1,
            &k.propagator,
            false,
            &mut w.w2,
            &mut rest[..mm],
            &mut w.scratch,
        );
    }
}

/// The adjoint of slice s ≥ 1 for every probe mode of one position (docs/algorithm.md §12):
/// with `w.bk` = b_s (∂L/∂χ* of the wave leaving slice s), adds g_s += conj(ψ_s) b_s and
/// d_s += |ψ_s|² to plane s of the sums `g`, `d` at local origin (gy, gx), and leaves
/// c_s = conj(O_s) b_s in the place of ψ_s in `w.waves` (ψ_s is not needed again) for
/// [`back_propagate_slice`].
#[allow(clippy::too_many_arguments)]
fn adjoint_slice<T: Real>(
    k: &Kernel<T>,
    obj: &Field<Complex<T>>,
    (oy, ox): (usize, usize),
    g: &mut Field<Complex<f64>>,
    d: &mut Field<f64>,
    (gy, gx): (usize, usize),
    s: usize,
    w: &mut Work<T>,
) {
    let m = k.fft.size();
    let mm = m * m;
    let planes = obj.planes();
    let (ow, pl, gw, gpl) = (obj.shape[1], obj.plane_len(), g.shape[1], g.plane_len());
    for mode in 0..k.modes {
        let wave = &mut w.waves[(mode * (planes - 1) + s - 1) * mm..][..mm];
        for (y, (pt, br)) in wave
            .chunks_exact_mut(m)
            .zip(w.bk[mode * mm..(mode + 1) * mm].chunks_exact(m))
            .enumerate()
        {
            let row = s * gpl + (gy + y) * gw + gx;
            T::adjoint_wave(
                &mut g.data[row..row + m],
                &mut d.data[row..row + m],
                pt,
                br,
                &obj.data[s * pl + (oy + y) * ow + ox..][..m],
            );
        }
    }
}

/// The adjoint of the propagation into slice s ≥ 1 for every probe mode of one position:
/// b_{s−1} = F⁻¹[conj(H_Δz) · F c_s] from c_s ([`adjoint_slice`], in `w.waves`) into `w.bk`.
fn back_propagate_slice<T: Real>(k: &Kernel<T>, planes: usize, s: usize, w: &mut Work<T>) {
    let mm = k.fft.size().pow(2);
    for mode in 0..k.modes {
        k.fft.convolve_raw(
            &mut w.waves[(mode * (planes - 1) + s - 1) * mm..][..mm],
            &k.propagator,
            true,
            &mut w.w2,
            &mut w.bk[mode * mm..(mode + 1) * mm],
            &mut w.scratch,
        );
    }
}

/// The probe modes shifted by a sub-pixel y-shift and half inverse-transformed:
/// `out[k][y][kx] = (1/M) Σ_ky P̂_k[kx][ky] e_y[ky] e^{2πi ky y/M}`, [K][y][kx]. Multiplying
/// a row by e_x and inverse-transforming along kx gives the shifted probe S_j P_k (the 2-D
/// shift ramp is separable), so positions sharing `ramp_y` share this half.
fn y_shifted<T: Real>(
    k: &Kernel<T>,
    probe_hat: &[Complex<T>],
    ramp_y: &[Complex<T>],
    tmp: &mut [Complex<T>],
    scratch: &mut [Complex<T>],
    out: &mut [Complex<T>],
) {
    let m = k.fft.size();
    let mm = m * m;
    let sc = Complex::new(k.fft.scale(), T::zero());
    for (ph, o) in probe_hat.chunks_exact(mm).zip(out.chunks_exact_mut(mm)) {
        for (dst, src) in tmp.chunks_exact_mut(m).zip(ph.chunks_exact(m)) {
            T::cmul_cscale(dst, src, ramp_y, sc);
        }
        k.fft.rows_inverse_raw(tmp, scratch);
        k.fft.transpose(tmp, o);
    }
}

/// Completes the probe gradient of a run of positions sharing `ramp_y`: `acc[k][y][kx]`
/// holds Σ_j conj(e_x,j[kx]) (F_x t_j)[y][kx] / M (the x-half of each forward transform);
/// adds conj(e_y[ky]) (F_y acc)[kx][ky] to `gp` ([K][kx][ky]) and zeroes `acc`. In f64.
fn flush_probe_run<T: Real>(
    k: &Kernel<T>,
    ramp_y: &[Complex<T>],
    acc: &mut [Complex<f64>],
    tmp: &mut [Complex<f64>],
    gp: &mut [Complex<f64>],
) {
    let m = k.fft.size();
    let mm = m * m;
    let ey: Vec<Complex<f64>> = ramp_y
        .iter()
        .map(|e| Complex::new(e.re.f64(), -e.im.f64()))
        .collect();
    for (a, g) in acc.chunks_exact_mut(mm).zip(gp.chunks_exact_mut(mm)) {
        k.fft.transpose(a, tmp);
        k.fft.rows_forward_raw_f64(tmp);
        for (grow, trow) in g.chunks_exact_mut(m).zip(tmp.chunks_exact(m)) {
            for ((g, t), e) in grow.iter_mut().zip(trow).zip(&ey) {
                *g += *e * *t;
            }
        }
        a.iter_mut().for_each(|v| *v = Complex::default());
    }
}

/// Model intensities I_j = Σ_k |F S_j P_k · O_j|² (unitary) of each position, [n][kx][ky]
/// (the transposed corner-centred kernel layout), for simulation and tests.
pub fn model_intensities<T: Real>(
    k: &Kernel<T>,
    obj: &Field<Complex<T>>,
    probe_hat: &[Complex<T>],
    pos: &[PositionGeom<T>],
) -> Vec<T> {
    let sc2 = k.fft.scale() * k.fft.scale();
    pos.par_iter()
        .map(|p| {
            let mut w = Work::new(k, false);
            forward(k, obj, probe_hat, None, p, &mut w);
            w.im.iter().map(|v| *v * sc2).collect::<Vec<T>>()
        })
        .collect::<Vec<_>>()
        .concat()
}
