//! CPU backend: the per-position gradient kernel over rustfft and rayon.
//!
//! Determinism: positions are split into at most [`SLABS`] contiguous slabs, a function of
//! the position count only; each slab is summed sequentially and the slabs are added in
//! slab order. The result is therefore bit-identical for any number of threads.

use crate::config::NoiseModel;
use crate::physics::fft::{Fft2, Real};
use crate::physics::model::{residual, Field, PositionGeom};
use num_complex::Complex;
use rayon::prelude::*;

/// Upper bound on the number of independently summed slabs of positions.
pub const SLABS: usize = 64;

/// Fixed inputs of the gradient kernel.
#[derive(Debug, Clone)]
pub struct Kernel<T: Real> {
    /// FFT plans for M × M.
    pub fft: Fft2<T>,
    /// Number of probe modes K.
    pub modes: usize,
    /// Noise model.
    pub noise: NoiseModel,
    /// Poisson floor ε (counts), see `physics::model::residual`.
    pub eps: T,
}

/// Sums of per-position contributions (docs/algorithm.md §4). All sums over positions.
#[derive(Debug, Clone)]
pub struct Gradients<T: Real> {
    /// ∂L/∂O* on the object field's rectangle.
    pub g_obj: Field<Complex<T>>,
    /// Object preconditioner Σ_jk |P_jk|² on the same rectangle.
    pub d_obj: Field<T>,
    /// ∂L/∂P̂*_k, the probe gradient in Fourier space, [K][kx][ky] (transposed layout);
    /// empty when the probe gradient was not asked for.
    pub g_probe_hat: Vec<Complex<T>>,
    /// Probe preconditioner Σ_j |O_j|² over the window, [M, M]; empty when not asked for.
    pub d_probe: Vec<T>,
    /// Σ_j loss_j.
    pub loss: f64,
}

/// The probe modes in Fourier space, transposed layout: F(P_k) as [K][kx][ky].
pub fn probe_spectrum<T: Real>(fft: &Fft2<T>, probe: &[Complex<T>]) -> Vec<Complex<T>> {
    let mm = fft.size() * fft.size();
    let mut out = vec![Complex::default(); probe.len()];
    let mut s = fft.scratch();
    for (p, o) in probe.chunks(mm).zip(out.chunks_mut(mm)) {
        let mut w = p.to_vec();
        fft.forward_t(&mut w, o, &mut s);
    }
    out
}

/// Per-thread work buffers.
struct Work<T> {
    pj: Vec<Complex<T>>,
    psi: Vec<Complex<T>>,
    w1: Vec<Complex<T>>,
    b: Vec<Complex<T>>,
    im: Vec<T>,
    wt: Vec<T>,
    scratch: Vec<Complex<T>>,
}

/// One slab's partial sums, on the bounding box of its windows.
struct Slab<T: Real> {
    g: Field<Complex<T>>,
    d: Field<T>,
    gp: Vec<Complex<T>>,
    dp: Vec<T>,
    loss: f64,
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
    let m = k.fft.size();
    let mm = m * m;
    assert_eq!(meas.len(), pos.len() * mm, "intensities do not match positions");
    assert_eq!(probe_hat.len(), k.modes * mm, "probe has the wrong size");
    let n = pos.len();
    let slabs = SLABS.min(n).max(1);
    let bounds: Vec<(usize, usize)> = (0..slabs).map(|s| (s * n / slabs, (s + 1) * n / slabs)).collect();
    let parts: Vec<Slab<T>> = bounds
        .par_iter()
        .map(|&(a, b)| slab(k, obj, probe_hat, &pos[a..b], &meas[a * mm..b * mm], want_probe))
        .collect();
    let mut g = Gradients {
        g_obj: Field::filled(obj.origin, obj.shape, Complex::default()),
        d_obj: Field::filled(obj.origin, obj.shape, T::zero()),
        g_probe_hat: if want_probe { vec![Complex::default(); k.modes * mm] } else { Vec::new() },
        d_probe: if want_probe { vec![T::zero(); mm] } else { Vec::new() },
        loss: 0.0,
    };
    for p in &parts {
        add_field(&mut g.g_obj, &p.g);
        add_field(&mut g.d_obj, &p.d);
        g.g_probe_hat.iter_mut().zip(&p.gp).for_each(|(a, b)| *a = *a + *b);
        g.d_probe.iter_mut().zip(&p.dp).for_each(|(a, b)| *a = *a + *b);
        g.loss += p.loss;
    }
    g
}

/// `dst += src` where `src`'s rectangle lies inside `dst`'s.
pub fn add_field<V: Copy + std::ops::Add<Output = V>>(dst: &mut Field<V>, src: &Field<V>) {
    let oy = (src.origin[0] - dst.origin[0]) as usize;
    let ox = (src.origin[1] - dst.origin[1]) as usize;
    let w = src.shape[1];
    for y in 0..src.shape[0] {
        let d = &mut dst.data[(oy + y) * dst.shape[1] + ox..][..w];
        for (a, b) in d.iter_mut().zip(&src.data[y * w..(y + 1) * w]) {
            *a = *a + *b;
        }
    }
}

fn slab<T: Real>(
    k: &Kernel<T>,
    obj: &Field<Complex<T>>,
    probe_hat: &[Complex<T>],
    pos: &[PositionGeom<T>],
    meas: &[f32],
    want_probe: bool,
) -> Slab<T> {
    let m = k.fft.size();
    let mm = m * m;
    let km = k.modes;
    // bounding box of the slab's windows
    let y0 = pos.iter().map(|p| p.window[0]).min().unwrap_or(obj.origin[0]);
    let x0 = pos.iter().map(|p| p.window[1]).min().unwrap_or(obj.origin[1]);
    let y1 = pos.iter().map(|p| p.window[0]).max().unwrap_or(obj.origin[0]) + m as i64;
    let x1 = pos.iter().map(|p| p.window[1]).max().unwrap_or(obj.origin[1]) + m as i64;
    let shape = [(y1 - y0) as usize, (x1 - x0) as usize];
    let mut s = Slab {
        g: Field::filled([y0, x0], shape, Complex::default()),
        d: Field::filled([y0, x0], shape, T::zero()),
        gp: if want_probe { vec![Complex::default(); km * mm] } else { Vec::new() },
        dp: if want_probe { vec![T::zero(); mm] } else { Vec::new() },
        loss: 0.0,
    };
    let z = Complex::default();
    let mut w = Work {
        pj: vec![z; km * mm],
        psi: vec![z; km * mm],
        w1: vec![z; mm],
        b: vec![z; mm],
        im: vec![T::zero(); mm],
        wt: vec![T::zero(); mm],
        scratch: k.fft.scratch(),
    };
    let ow = obj.shape[1];
    for (j, p) in pos.iter().enumerate() {
        let oy = (p.window[0] - obj.origin[0]) as usize;
        let ox = (p.window[1] - obj.origin[1]) as usize;
        assert!(oy + m <= obj.shape[0] && ox + m <= ow, "window outside the object field");
        let owin = |y: usize| &obj.data[(oy + y) * ow + ox..][..m];
        // forward: shifted probes, exit waves, far field
        for mode in 0..km {
            let ph = &probe_hat[mode * mm..(mode + 1) * mm];
            for kx in 0..m {
                let ex = p.ramp_x[kx];
                let (src, dst) = (&ph[kx * m..(kx + 1) * m], &mut w.w1[kx * m..(kx + 1) * m]);
                for ky in 0..m {
                    dst[ky] = src[ky] * (p.ramp_y[ky] * ex);
                }
            }
            let pj = &mut w.pj[mode * mm..(mode + 1) * mm];
            k.fft.inverse_t(&mut w.w1, pj, &mut w.scratch);
            for y in 0..m {
                let o = owin(y);
                for x in 0..m {
                    w.w1[y * m + x] = pj[y * m + x] * o[x];
                }
            }
            k.fft.forward_t(&mut w.w1, &mut w.psi[mode * mm..(mode + 1) * mm], &mut w.scratch);
        }
        // model intensities and the noise model's residual weights
        w.im.iter_mut().for_each(|v| *v = T::zero());
        for mode in 0..km {
            for (i, v) in w.im.iter_mut().zip(&w.psi[mode * mm..(mode + 1) * mm]) {
                *i = *i + v.norm_sqr();
            }
        }
        let mj = &meas[j * mm..(j + 1) * mm];
        let mut loss = 0.0f64;
        for i in 0..mm {
            let (l, wt) = residual(k.noise, T::of(mj[i] as f64), w.im[i], k.eps);
            loss += l.f64();
            w.wt[i] = wt;
        }
        s.loss += loss;
        // adjoint: back-propagate w·Ψ, then object and probe gradients
        let (gy, gx) = ((p.window[0] - y0) as usize, (p.window[1] - x0) as usize);
        let gw = shape[1];
        for mode in 0..km {
            for ((d, v), wt) in w.w1.iter_mut().zip(&w.psi[mode * mm..(mode + 1) * mm]).zip(&w.wt) {
                *d = *v * *wt;
            }
            k.fft.inverse_t(&mut w.w1, &mut w.b, &mut w.scratch);
            let pj = &w.pj[mode * mm..(mode + 1) * mm];
            for y in 0..m {
                let g = &mut s.g.data[(gy + y) * gw + gx..][..m];
                let d = &mut s.d.data[(gy + y) * gw + gx..][..m];
                for x in 0..m {
                    let pv = pj[y * m + x];
                    g[x] = g[x] + pv.conj() * w.b[y * m + x];
                    d[x] = d[x] + pv.norm_sqr();
                }
            }
            if want_probe {
                for y in 0..m {
                    let o = owin(y);
                    for x in 0..m {
                        w.w1[y * m + x] = o[x].conj() * w.b[y * m + x];
                    }
                }
                // reuse b as the transform's output
                k.fft.forward_t(&mut w.w1, &mut w.b, &mut w.scratch);
                let gp = &mut s.gp[mode * mm..(mode + 1) * mm];
                for kx in 0..m {
                    let ex = p.ramp_x[kx];
                    for ky in 0..m {
                        let i = kx * m + ky;
                        gp[i] = gp[i] + (p.ramp_y[ky] * ex).conj() * w.b[i];
                    }
                }
            }
        }
        if want_probe {
            for y in 0..m {
                let o = owin(y);
                for x in 0..m {
                    s.dp[y * m + x] = s.dp[y * m + x] + o[x].norm_sqr();
                }
            }
        }
    }
    s
}
