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
    (
        [fy as i64 - (m / 2) as i64, fx as i64 - (m / 2) as i64],
        [c[0] - fy, c[1] - fx],
    )
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
/// intensity floor ε (counts, [`intensity_floor`]). Returns (loss contribution, w) with
/// ∂L/∂Ψ*_k = w Ψ_k:
/// ```text
/// amplitude  L = (√(I + ε) − √(Î + ε))²        w = 1 − √(Î + ε)/√(I + ε)
/// Poisson    L = I − Î − Î ln((I + ε)/Î)        w = 1 − Î/(I + ε)      (Î ln … = 0 where Î = 0)
/// ```
/// The floor bounds how much the weight amplifies an error of Ψ where the model intensity
/// vanishes (by (Î + ε)/ε at most, docs/algorithm.md §11); the amplitude form keeps its
/// minimum at I = Î.
#[inline(always)]
pub fn residual<T: Real>(noise: NoiseModel, meas: T, model: T, eps: T) -> (T, T) {
    match noise {
        NoiseModel::Amplitude => {
            let a = (model + eps).sqrt();
            let sm = (meas + eps).sqrt();
            let d = a - sm;
            (
                d * d,
                if a > T::zero() {
                    T::one() - sm / a
                } else {
                    T::zero()
                },
            )
        }
        NoiseModel::Poisson => {
            let den = model + eps;
            let l = if meas > T::zero() {
                model - meas - meas * (den / meas).ln()
            } else {
                model
            };
            (l, T::one() - meas / den)
        }
    }
}

/// Fraction of the mean counts per detector pixel taken as the intensity floor ε
/// ([`intensity_floor`]).
pub const FLOOR_OF_MEAN: f64 = 1e-3;

/// Largest intensity floor ε, in counts.
pub const FLOOR_MAX_COUNTS: f64 = 1.0;

/// The intensity floor ε (counts) of the noise models and of the projection engines'
/// Fourier step, from the mean counts per pattern `mean_counts` over `pixels` detector
/// pixels: ε = min(10⁻³ × mean counts per pixel, 1 count) ([`FLOOR_OF_MEAN`],
/// [`FLOOR_MAX_COUNTS`]; a tiny positive value if the patterns are empty).
///
/// Meaning: model intensities below a thousandth of the average pixel's counts (and below
/// one count, which a counting detector cannot resolve) are not told apart from ε by the
/// likelihood. Where the model far field vanishes but counts were measured (the dark field
/// of a flat starting object), the weights multiply the rounding noise of the far field
/// (f32 FFTs leave |Ψ| ≈ 1e-7 of the pattern's norm in every pixel) by up to (Î + ε)/ε;
/// the floor bounds that. Larger floors damp more but wash out the weak dark-field signal
/// that carries the resolution: docs/algorithm.md §11 measures both (10⁻⁶, the former
/// value, let a 1e-7 perturbation grow to 0.35 in 10 iterations; 0.1 cost 0.05 in phase
/// correlation on PbTiO3).
// min then max, not clamp: a NaN mean gives the 1e-12 floor instead of NaN
#[allow(clippy::manual_clamp)]
pub fn intensity_floor(mean_counts: f64, pixels: usize) -> f64 {
    (FLOOR_OF_MEAN * mean_counts / pixels.max(1) as f64)
        .min(FLOOR_MAX_COUNTS)
        .max(1e-12)
}

/// The relaxed Fourier step of the projection engines (docs/algorithm.md §7): the factor
/// f by which a far field Ψ (model intensity `model` = I = Σ_k|Ψ_k|², unitary, in counts)
/// is scaled towards the measured count `meas` = Î, so that |fΨ| is the proximal point
/// of the noise model's negative log-likelihood,
/// ```text
/// a = argmin_a  λ L(a²; Î) + ½ (a − |Ψ|)²,   γ = 2λ / (1 + 2λ) ∈ (0, 1]
/// Poisson   L = a² − Î ln a²:  a² − (1 − γ)|Ψ| a − γ Î = 0  ⇒  f = ((1 − γ) + √((1 − γ)² + 4γ Î/I)) / 2
/// amplitude L = (a − √Î)²:     a = (1 − γ)|Ψ| + γ √Î       ⇒  f = (1 − γ) + γ √(Î/I)
/// ```
/// (the proximal operator of the Poisson likelihood on the modulus: Chang, Enfedaque &
/// Marchesini, SIAM J. Imaging Sci. 12 (2019) "Blind ptychographic phase retrieval via
/// convergent ADMM"; the amplitude form is the relaxed modulus projection). The same f
/// scales every probe mode (the proximal point of a function of Σ_k|Ψ_k|²).
///
/// With the intensity floor ε ([`intensity_floor`]) the ratio Î/I is taken as
/// r = (Î + ε)/(I + ε): where the model vanishes, f stays finite and fΨ → 0 instead of a
/// modulus √Î with the phase of rounding noise.
///
/// Limits: γ = 1 gives √r, the modulus projection (exactly √(Î/I) for ε = 0); γ → 0 gives
/// 1 (no change); noise-free data (Î = I) give f = 1 for every γ and ε, so fixed points of
/// the plain projection are kept. 0 where I + ε ≤ 0. `gamma` must lie in (0, 1] (checked by
/// the configuration).
#[inline(always)]
pub fn relaxed_modulus<T: Real>(noise: NoiseModel, gamma: T, meas: T, model: T, eps: T) -> T {
    let den = model + eps;
    if den <= T::zero() {
        return T::zero();
    }
    let r = (meas + eps) / den;
    let c = T::one() - gamma;
    match noise {
        NoiseModel::Poisson => (c + (c * c + T::of(4.0) * gamma * r).sqrt()) * T::of(0.5),
        NoiseModel::Amplitude => c + gamma * r.sqrt(),
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
            for (meas, model, eps) in [
                (3.0f64, 2.5, 1e-9),
                (0.0, 0.7, 1e-9),
                (7.0, 9.0, 1e-9),
                (3.0, 2.5, 0.1),
                (1.0, 0.001, 0.1),
                (0.0, 0.3, 1.0),
            ] {
                let h = 1e-6;
                let (lp, _) = residual(noise, meas, model + h, eps);
                let (lm, _) = residual(noise, meas, model - h, eps);
                let (_, w) = residual(noise, meas, model, eps);
                // ∂L/∂Ψ* = (dL/dI) Ψ  ⇒  w = dL/dI
                assert!(
                    ((lp - lm) / (2.0 * h) - w).abs() < 1e-6,
                    "{noise:?} {meas} {model} {eps}"
                );
            }
        }
    }

    #[test]
    fn relaxed_modulus_limits() {
        for noise in [NoiseModel::Amplitude, NoiseModel::Poisson] {
            for (meas, model) in [(3.0f64, 2.5), (0.0, 0.7), (7.0, 9.0), (1.0, 0.01)] {
                // γ = 1: the modulus projection √(Î/I), exactly
                assert_eq!(
                    relaxed_modulus(noise, 1.0, meas, model, 0.0),
                    (meas / model).sqrt(),
                    "{noise:?}"
                );
                // noise-free data: unchanged for every γ
                for g in [0.05, 0.3, 0.9] {
                    assert!((relaxed_modulus(noise, g, model, model, 0.0) - 1.0).abs() < 1e-14);
                    assert!((relaxed_modulus(noise, g, model, model, 0.1) - 1.0).abs() < 1e-14);
                    // the amplitude lies between |Ψ| and √Î
                    let f = relaxed_modulus(noise, g, meas, model, 0.0);
                    let (lo, hi) = (
                        1.0f64.min((meas / model).sqrt()),
                        1.0f64.max((meas / model).sqrt()),
                    );
                    assert!(
                        f >= lo - 1e-14 && f <= hi + 1e-14,
                        "{noise:?} {g} {meas} {model}: {f}"
                    );
                }
            }
            assert_eq!(relaxed_modulus(noise, 0.5, 2.0, 0.0, 0.0), 0.0);
        }
    }

    #[test]
    fn intensity_floor_bounds_the_amplification() {
        // ε = min(1e-3 × mean per pixel, 1 count)
        assert_eq!(intensity_floor(16384.0, 16384), 1e-3);
        assert_eq!(intensity_floor(1e9, 10000), 1.0);
        assert!((intensity_floor(100.0, 10000) - 1e-5).abs() < 1e-18);
        let eps = 0.1f64;
        for noise in [NoiseModel::Amplitude, NoiseModel::Poisson] {
            for meas in [0.0f64, 1.0, 7.0, 300.0] {
                // where the model vanishes (rounding noise of a far field), the weight and the
                // projection's factor are bounded by (Î + ε)/ε, so a tiny Ψ stays tiny
                for model in [0.0f64, 1e-14, 1e-8] {
                    let (_, w) = residual(noise, meas, model, eps);
                    assert!(
                        w.abs() <= (meas + eps) / eps,
                        "{noise:?} {meas} {model}: w {w}"
                    );
                    let f = relaxed_modulus(noise, 1.0, meas, model, eps);
                    assert!(
                        f.is_finite()
                            && f * model.sqrt() <= ((meas + eps) / eps).sqrt() * 1e-4 + 1e-300,
                        "{noise:?} {meas} {model}: f {f}"
                    );
                }
            }
        }
    }

    #[test]
    fn relaxed_modulus_is_the_proximal_point() {
        // a = f|Ψ| minimises λ L(a²) + ½(a − |Ψ|)², λ = γ / (2(1 − γ)): zero derivative
        let (meas, model, g) = (5.0f64, 2.0f64, 0.3);
        let lam = g / (2.0 * (1.0 - g));
        let psi = model.sqrt();
        for noise in [NoiseModel::Amplitude, NoiseModel::Poisson] {
            let a = relaxed_modulus(noise, g, meas, model, 0.0) * psi;
            let obj = |a: f64| lam * residual(noise, meas, a * a, 0.0).0 + 0.5 * (a - psi).powi(2);
            let h = 1e-6;
            assert!(
                ((obj(a + h) - obj(a - h)) / (2.0 * h)).abs() < 1e-7,
                "{noise:?}"
            );
            assert!(obj(a) < obj(a * 1.01) && obj(a) < obj(a * 0.99));
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

/// A complex image on a rectangle of the global object grid: `data` is [planes, shape[0],
/// shape[1]] row-major (slice, y, x), and local pixel (0, 0) is global pixel `origin`
/// (y, x). The object of one rank (its tile plus halo) and gradient buffers are Fields.
/// A single-slice object has one plane; a multislice object ([`crate::physics::multislice`])
/// has one plane per slice S, plane 0 at the beam entrance. The plane count is not stored:
/// it is `data.len() / (shape[0] · shape[1])` ([`Field::planes`]).
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
    /// A one-plane field filled with `v`.
    pub fn filled(origin: [i64; 2], shape: [usize; 2], v: T) -> Self {
        Field {
            origin,
            shape,
            data: vec![v; shape[0] * shape[1]],
        }
    }

    /// A field of `planes` planes (slices) filled with `v`.
    pub fn stack(origin: [i64; 2], shape: [usize; 2], planes: usize, v: T) -> Self {
        Field {
            origin,
            shape,
            data: vec![v; planes * shape[0] * shape[1]],
        }
    }

    /// A field on the same rectangle with as many planes as `f`, filled with `v`.
    pub fn like<U>(f: &Field<U>, v: T) -> Self {
        Field::stack(f.origin, f.shape, f.planes(), v)
    }
}

impl<T> Field<T> {
    /// Pixels of one plane, rows × columns.
    pub fn plane_len(&self) -> usize {
        self.shape[0] * self.shape[1]
    }

    /// Number of planes (slices): 1 for a single-slice object (0 for an empty rectangle).
    pub fn planes(&self) -> usize {
        self.data.len().checked_div(self.plane_len()).unwrap_or(0)
    }

    /// Plane `s` ([rows, columns] row-major).
    pub fn plane(&self, s: usize) -> &[T] {
        let n = self.plane_len();
        &self.data[s * n..(s + 1) * n]
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
        PositionGeom {
            index,
            centre,
            window,
            ramp_y,
            ramp_x,
        }
    }
}
