//! What every backend shares with the engines: the fixed inputs of the forward model
//! ([`Kernel`]), the sums a gradient pass returns ([`Gradients`], [`PositionGradient`]),
//! the difference map's parameters ([`DmStep`]) and the probe's spectrum, which the engines
//! form on the host (M² per mode) whatever the backend. The CPU implementation of the
//! kernels is [`super::cpu`], the GPU one [`super::gpu`].

use crate::config::NoiseModel;
use crate::physics::fft::{Fft2, Real};
use crate::physics::model::Field;
use num_complex::Complex;

/// Fixed inputs of the gradient kernel.
#[derive(Debug, Clone)]
pub struct Kernel<T: Real> {
    /// FFT plans for M × M.
    pub fft: Fft2<T>,
    /// Number of probe modes K.
    pub modes: usize,
    /// Noise model.
    pub noise: NoiseModel,
    /// Intensity floor ε (counts) of the noise models and the Fourier step,
    /// [`crate::physics::model::intensity_floor`].
    pub eps: T,
    /// Per-pixel likelihood weights [M(kx), M(ky)] in the kernel layout (1 = measured,
    /// 0 = bad detector pixel, excluded from loss and gradients); `None` = all 1.
    pub weights: Option<Vec<f32>>,
    /// Multislice: the slice-to-slice propagator H_Δz ([`crate::physics::multislice`])
    /// in the transposed kernel layout [kx][ky], divided by M² (the factor of a raw
    /// forward and inverse transform pair). Empty for the single-slice model; required
    /// when the object has more than one plane.
    pub propagator: Vec<Complex<T>>,
}

impl<T: Real> Kernel<T> {
    /// Set the multislice propagator from the unitary H_Δz in the transposed layout
    /// [kx][ky] ([`crate::physics::multislice::fresnel_propagator`]); an empty `h` restores
    /// the single-slice model.
    pub fn with_propagator(mut self, h: &[Complex<f64>]) -> Self {
        let sc2 = self.fft.scale().f64().powi(2);
        self.propagator = h
            .iter()
            .map(|v| Complex::new(T::of(v.re * sc2), T::of(v.im * sc2)))
            .collect();
        self
    }
}

/// Sums of per-position contributions (docs/algorithm.md §4, multislice §12). All sums over positions,
/// accumulated in f64 whatever the working precision: each position's contribution is
/// computed identically under any tiling, so f64 sums make tiled and single-rank results
/// agree to ~1e-16 before they are rounded back to the working precision.
#[derive(Debug, Clone)]
pub struct Gradients<T: Real> {
    /// ∂L/∂O* on the object field's rectangle, one plane per slice.
    pub g_obj: Field<Complex<f64>>,
    /// Object preconditioner Σ_jk |P_jk|² on the same rectangle (multislice: Σ_jk |ψ_jks|²,
    /// the wave incident on slice s), one plane per slice.
    pub d_obj: Field<f64>,
    /// ∂L/∂P̂*_k, the probe gradient in Fourier space, [K][kx][ky] (transposed layout);
    /// empty when the probe gradient was not asked for.
    pub g_probe_hat: Vec<Complex<f64>>,
    /// Probe preconditioner Σ_j |O_j|² over the window, [M, M]; empty when not asked for.
    pub d_probe: Vec<f64>,
    /// Σ_j loss_j.
    pub loss: f64,
    /// Per position, in the order of the positions given: the loss's derivative with
    /// respect to the probe centre and its Gauss–Newton curvature ([`PositionGradient`]);
    /// empty unless asked for ([`super::cpu::gradients_and_positions`]).
    pub g_pos: Vec<PositionGradient>,
    _t: std::marker::PhantomData<T>,
}

/// What position correction needs of one position j (docs/algorithm.md §14), in object
/// pixels, axes (y, x): `grad` = ∂L/∂c_j = 2 Re Σ_k Σ_r conj(t_jk) ∂P_jk/∂c_j, with
/// t_jk = ∂L/∂P*_jk = O*_j b_jk the adjoint at the shifted probe and
/// ∂P_jk/∂c = F⁻¹[P̂_k e_j (−2πi q)] the derivative of the Fourier shift;
/// `curv` = Σ_k Σ_r |P_jk|² |∂_a O_j|² per axis a (central differences of the object in the
/// window), the Gauss–Newton curvature of the exit wave for a move of the probe relative
/// to the object (multislice: the entrance slice O_0; see `shift_curvature` for why not
/// Σ|O ∂P/∂c|²). Each position's terms come from its own window
/// only, so they are the same under any tiling.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PositionGradient {
    /// Index of the position in the data file ([`crate::physics::model::PositionGeom::index`]).
    pub index: usize,
    /// ∂L/∂c (y, x), loss per object pixel.
    pub grad: [f64; 2],
    /// Σ_k Σ_r |P_k|² |∂_a O|² (a = y, x), per object pixel².
    pub curv: [f64; 2],
}

impl<T: Real> Gradients<T> {
    /// Zero sums on a rectangle with `planes` slices, with probe sums for K modes of M² if
    /// `probe`.
    pub fn zeros(
        origin: [i64; 2],
        shape: [usize; 2],
        planes: usize,
        probe: Option<(usize, usize)>,
    ) -> Self {
        Gradients {
            g_obj: Field::stack(origin, shape, planes, Complex::default()),
            d_obj: Field::stack(origin, shape, planes, 0.0),
            g_probe_hat: probe
                .map(|(k, mm)| vec![Complex::default(); k * mm])
                .unwrap_or_default(),
            d_probe: probe.map(|(_, mm)| vec![0.0; mm]).unwrap_or_default(),
            loss: 0.0,
            g_pos: Vec::new(),
            _t: std::marker::PhantomData,
        }
    }
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

/// Parameters of one difference-map pass ([`crate::backend::Compute::difference_map`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DmStep {
    /// β ∈ (0, 1], the exit-wave relaxation (`[dm] beta`).
    pub beta: f64,
    /// γ ∈ (0, 1], the relaxation of the Fourier step (`[dm] gamma`).
    pub gamma: f64,
    /// An error-reduction pass instead of a difference-map one (β and γ unused).
    pub error_reduction: bool,
}
