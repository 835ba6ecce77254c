//! Single-slice far-field forward model, per position j and probe mode k
//! (docs/algorithm.md §1–§3):
//!
//! ```text
//! P_jk = S_j P_k = F⁻¹[ F(P_k) · e^{−2πi q·f_j} ]     sub-pixel Fourier shift by f_j
//! ψ_jk = P_jk · O[n_j + (0..M, 0..M)]                   exit wave on the window at n_j
//! Ψ_jk = F ψ_jk                                         far field (unitary FFT)
//! I_j  = Σ_k |Ψ_jk|²                                    model intensities
//! ```
//! where the probe centre c_j (object pixels, (y, x)) splits as n_j + M/2 + f_j with
//! n_j = ⌊c_j⌋ − M/2 integer and f_j ∈ [0, 1)².
//!
//! Noise models, with measured counts Î (docs/algorithm.md §3):
//! amplitude L = Σ (√I − √Î)², Poisson L = Σ (I − Î ln(I + ε)). Both give
//! ∂L/∂Ψ*_jk = w · Ψ_jk with a real per-pixel weight w returned by [`NoiseModel`] here.

use super::fft::{fftfreq, Real};
use crate::config::NoiseModel;
use num_complex::Complex;

/// Integer window origin n (may be negative before the object grid is fixed) and the
/// sub-pixel remainder f ∈ [0, 1)² of a probe centre `c` (y, x) in object pixels, for an
/// `m`-pixel window: c = n + m/2 + f.
pub fn placement(c: [f64; 2], m: usize) -> ([i64; 2], [f64; 2]) {
    let fy = c[0].floor();
    let fx = c[1].floor();
    ([fy as i64 - (m / 2) as i64, fx as i64 - (m / 2) as i64], [c[0] - fy, c[1] - fx])
}

/// The separable phase ramp of a shift by `f` (pixels): `(e_y, e_x)` with
/// e_y[k] = exp(−2πi q_k f_y), q_k = fftfreq(k, m). The 2-D ramp is e_y[ky] e_x[kx].
pub fn shift_ramps<T: Real>(f: [f64; 2], m: usize) -> (Vec<Complex<T>>, Vec<Complex<T>>) {
    let ramp = |s: f64| -> Vec<Complex<T>> {
        (0..m)
            .map(|k| {
                let ph = -2.0 * std::f64::consts::PI * fftfreq(k, m) * s;
                Complex::new(T::of(ph.cos()), T::of(ph.sin()))
            })
            .collect()
    };
    (ramp(f[0]), ramp(f[1]))
}

/// Per-pixel loss and weight for one detector pixel.
///
/// `meas` is the measured count Î, `model` the model intensity I = Σ_k|Ψ_k|², `eps` the
/// Poisson floor ε. Returns (loss contribution, w) with ∂L/∂Ψ*_k = w Ψ_k:
/// amplitude w = 1 − √Î/√I, Poisson w = 1 − Î/(I + ε).
#[inline(always)]
pub fn residual<T: Real>(noise: NoiseModel, meas: T, model: T, eps: T) -> (T, T) {
    match noise {
        NoiseModel::Amplitude => {
            let a = model.sqrt();
            let sm = meas.sqrt();
            let d = a - sm;
            let w = if a > T::zero() { T::one() - sm / a } else { T::zero() };
            (d * d, w)
        }
        NoiseModel::Poisson => {
            let den = model + eps;
            let l = if meas > T::zero() { model - meas - meas * (den / meas).ln() } else { model };
            (l, T::one() - meas / den)
        }
    }
}

/// Curvature of the noise model relative to the amplitude model (its Fisher information in
/// |Ψ| is 2 for amplitude, 4 for Poisson): the preconditioned step is divided by this.
pub fn fisher_scale(noise: NoiseModel) -> f64 {
    match noise {
        NoiseModel::Amplitude => 1.0,
        NoiseModel::Poisson => 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_splits_centre() {
        let (n, f) = placement([70.25, 63.75], 128);
        assert_eq!(n, [6, -1]);
        assert!((f[0] - 0.25).abs() < 1e-12 && (f[1] - 0.75).abs() < 1e-12);
    }

    #[test]
    fn residual_weights_are_derivatives() {
        // d loss / d I = w / 1 ... check ∂L/∂Ψ* = wΨ via dL/dI · Ψ, dI/dΨ* = Ψ
        for noise in [NoiseModel::Amplitude, NoiseModel::Poisson] {
            for (meas, model) in [(3.0f64, 2.5), (0.0, 0.7), (7.0, 9.0)] {
                let h = 1e-6;
                let (lp, _) = residual(noise, meas, model + h, 1e-9);
                let (lm, _) = residual(noise, meas, model - h, 1e-9);
                let (_, w) = residual(noise, meas, model, 1e-9);
                // ∂L/∂Ψ* = (dL/dI) Ψ  ⇒  w = dL/dI
                assert!(((lp - lm) / (2.0 * h) - w).abs() < 1e-6, "{noise:?} {meas} {model}");
            }
        }
    }

    #[test]
    fn ramp_is_the_fourier_shift() {
        // shifting a delta at 0 by an integer 3 moves it to 3
        let m = 16;
        let (ey, ex) = shift_ramps::<f64>([3.0, 0.0], m);
        let f = crate::physics::fft::Fft2::<f64>::new(m);
        let mut a = vec![Complex::new(0.0, 0.0); m * m];
        a[0] = Complex::new(1.0, 0.0);
        let mut t = vec![Complex::default(); m * m];
        let mut s = f.scratch();
        f.forward_t(&mut a, &mut t, &mut s);
        for kx in 0..m {
            for ky in 0..m {
                t[kx * m + ky] *= ey[ky] * ex[kx];
            }
        }
        let mut out = vec![Complex::default(); m * m];
        f.inverse_t(&mut t, &mut out, &mut s);
        assert!((out[3 * m].re - 1.0).abs() < 1e-12, "{:?}", out[3 * m]);
    }
}

/// A complex image on a rectangle of the global object grid: `data` is [shape[0], shape[1]]
/// row-major (y, x), and local pixel (0, 0) is global pixel `origin` (y, x). The object of
/// one rank (its tile plus halo) and gradient buffers are Fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Field<T> {
    /// Global pixel (y, x) of local [0, 0].
    pub origin: [i64; 2],
    /// (rows, columns).
    pub shape: [usize; 2],
    /// Row-major values.
    pub data: Vec<T>,
}

impl<T: Clone> Field<T> {
    /// A field filled with `v`.
    pub fn filled(origin: [i64; 2], shape: [usize; 2], v: T) -> Self {
        Field { origin, shape, data: vec![v; shape[0] * shape[1]] }
    }
}

/// Geometry of one scan position, precomputed once per run.
#[derive(Debug, Clone)]
pub struct PositionGeom<T> {
    /// Global index of the position in the data file.
    pub index: usize,
    /// Probe centre (y, x) in global object pixels.
    pub centre: [f64; 2],
    /// Window origin n_j (y, x) in global object pixels.
    pub window: [i64; 2],
    /// Sub-pixel shift ramps (e_y, e_x), each of length M.
    pub ramp_y: Vec<Complex<T>>,
    /// See `ramp_y`.
    pub ramp_x: Vec<Complex<T>>,
}

impl<T: Real> PositionGeom<T> {
    /// Geometry of the position with global `index` and probe centre `centre`.
    pub fn new(index: usize, centre: [f64; 2], m: usize) -> Self {
        let (window, f) = placement(centre, m);
        let (ramp_y, ramp_x) = shift_ramps(f, m);
        PositionGeom { index, centre, window, ramp_y, ramp_x }
    }
}
