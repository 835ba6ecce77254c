//! The sequential kernel of ePIE (Maiden & Rodenburg 2009) and rPIE (Maiden, Johnson & Li
//! 2017): positions one after another, each updating the object and the probe before the
//! next is modelled (docs/algorithm.md §9). Same forward model and noise models as
//! [`super::cpu`].

use super::cpu::{forward, pattern_residuals, window_offset, Work};
use super::kernel::Kernel;
use super::projection::fourier_weights;
use crate::physics::fft::Real;
use crate::physics::model::{Field, PositionGeom};
use num_complex::Complex;

/// Step rule of one sweep. For each position, with Δψ_k = Π_F(P_jk O_j) − P_jk O_j (Π_F the
/// Fourier step with relaxation γ, [`super::projection::fourier_weights`]):
/// ```text
/// O_j  += s_O Σ_k P*_jk Δψ_k / ((1 − a_O) Σ_k|P_jk|² + a_O max Σ_k|P_jk|²)
/// P_k  += S_j^H [ s_P O*_j Δψ_k / ((1 − a_P) |O_j|² + a_P max |O_j|²) ]
/// ```
/// (maxima over the window). ePIE: a = 1, s = α (β); rPIE: a = α (β), s = 1.
#[derive(Debug, Clone, Copy)]
pub struct PieStep {
    /// a_O.
    pub obj_mix: f64,
    /// s_O.
    pub obj_step: f64,
    /// a_P.
    pub probe_mix: f64,
    /// s_P.
    pub probe_step: f64,
    /// Relaxation γ ∈ (0, 1] of the Fourier step (1: the modulus projection).
    pub gamma: f64,
    /// Update the probe.
    pub update_probe: bool,
}

/// Sweep `pos` in the given order (intensities `meas[j]` in the kernel layout), updating
/// `obj` (whose rectangle holds every window) and the probe spectrum `probe_hat`
/// ([K][kx][ky], unitary) in place. Adds Σ_k |P_jk|² of every position to `illum` (same
/// rectangle as `obj`). Returns Σ_j loss_j, each at the state when position j was visited.
pub fn sweep<T: Real>(
    k: &Kernel<T>,
    obj: &mut Field<Complex<T>>,
    probe_hat: &mut [Complex<T>],
    pos: &[&PositionGeom<T>],
    meas: &[&[f32]],
    st: &PieStep,
    illum: &mut Field<f64>,
) -> f64 {
    let m = k.fft.size();
    let mm = m * m;
    let sc = k.fft.scale();
    let sc2 = sc * sc;
    let mut w = Work::new(k, true);
    let mut den = vec![T::zero(); mm];
    let gamma = T::of(st.gamma);
    let mut loss = 0.0;
    let ow = obj.shape[1];
    for (p, pat) in pos.iter().zip(meas) {
        forward(k, obj, probe_hat, None, p, &mut w);
        loss += pattern_residuals(k, pat, &mut w.im, &mut w.wt, sc2, sc2);
        fourier_weights(
            k.noise,
            gamma,
            k.eps,
            pat,
            k.weights.as_deref(),
            &w.im,
            T::one(),
            &mut w.wt,
            sc2,
        );
        let (oy, ox) = window_offset(obj, p, m);
        let at = |y: usize, x: usize| (oy + y) * ow + ox + x;
        // Δψ_k = F⁻¹(f Ψ_k) − P_jk O_j into w.x; Σ_k |P_jk|² into den
        den.iter_mut().for_each(|v| *v = T::zero());
        for mode in 0..k.modes {
            T::mul_real(&mut w.w1, &w.psi[mode * mm..(mode + 1) * mm], &w.wt);
            let dpsi = &mut w.x[mode * mm..(mode + 1) * mm];
            k.fft.inverse_t_raw(&mut w.w1, dpsi, &mut w.scratch);
            let pj = &w.pj[mode * mm..(mode + 1) * mm];
            for y in 0..m {
                for x in 0..m {
                    let i = y * m + x;
                    dpsi[i] = dpsi[i] - pj[i] * obj.data[at(y, x)];
                    den[i] = den[i] + pj[i].norm_sqr();
                }
            }
        }
        if st.update_probe {
            let omax = (0..mm)
                .map(|i| obj.data[at(i / m, i % m)].norm_sqr())
                .fold(T::zero(), |a, b| a.max(b));
            let (a, s) = (T::of(st.probe_mix), T::of(st.probe_step));
            for mode in 0..k.modes {
                let dpsi = &w.x[mode * mm..(mode + 1) * mm];
                for (i, t) in w.w1.iter_mut().enumerate() {
                    let o = obj.data[at(i / m, i % m)];
                    let d = (T::one() - a) * o.norm_sqr() + a * omax;
                    *t = if d > T::zero() {
                        o.conj() * dpsi[i] * (s / d)
                    } else {
                        Complex::default()
                    };
                }
                // P̂_k += conj(e_j) F(ΔP)
                k.fft.forward_t_raw(&mut w.w1, &mut w.b, &mut w.scratch);
                let ph = &mut probe_hat[mode * mm..(mode + 1) * mm];
                for (kx, (row, t)) in ph.chunks_exact_mut(m).zip(w.b.chunks_exact(m)).enumerate() {
                    let rx = p.ramp_x[kx].conj() * sc;
                    for ((v, tv), ry) in row.iter_mut().zip(t).zip(&p.ramp_y) {
                        *v = *v + ry.conj() * *tv * rx;
                    }
                }
            }
        }
        let dmax = den.iter().fold(T::zero(), |a, b| a.max(*b));
        let (a, s) = (T::of(st.obj_mix), T::of(st.obj_step));
        let iw = illum.shape[1];
        let (iy, ix) = (
            (p.window[0] - illum.origin[0]) as usize,
            (p.window[1] - illum.origin[1]) as usize,
        );
        for i in 0..mm {
            let mut num = Complex::default();
            for mode in 0..k.modes {
                num = num + w.pj[mode * mm + i].conj() * w.x[mode * mm + i];
            }
            let d = (T::one() - a) * den[i] + a * dmax;
            if d > T::zero() {
                let o = &mut obj.data[at(i / m, i % m)];
                *o = *o + num * (s / d);
            }
            illum.data[(iy + i / m) * iw + ix + i % m] += den[i].f64();
        }
    }
    loss
}
