//! "gd": preconditioned full-batch (or index-defined mini-batch) gradient descent on the
//! object and probe (docs/algorithm.md §4).
//!
//! Each update uses only sums over a set of positions:
//! ```text
//! g_O = Σ_jk P*_jk b_jk (placed at n_j)      D_O = Σ_jk |P_jk|²
//! g_P = Σ_j S_j^H (O*_j b_jk)                 D_P = Σ_j |O_j|²
//! O ← O − α g_O / (D_O + δ max D_O)           P ← P − α g_P / (D_P + δ max D_P)
//! ```
//! with b_jk = F⁻¹(w Ψ_jk) the back-propagated residual and α = step / c, where c is the
//! noise model's Fisher curvature relative to the amplitude model (1 amplitude, 2 Poisson).
//! For the amplitude model and step 1 the object update of a single position is exactly the
//! projection onto the measured modulus; no data-dependent tuning is involved. Because every
//! term is a sum over positions, splitting the positions over tiles and adding the partial
//! sums reproduces the update (the gradient decomposition of Wang et al., SC22).

use crate::backend::cpu::{gradients, probe_spectrum, Gradients, Kernel};
use crate::config::{NoiseModel, ReconstructionConfig};
use crate::physics::fft::Real;
use crate::physics::model::{fisher_scale, Field, PositionGeom};
use num_complex::Complex;

/// Relative regularisation δ of both preconditioners (fraction of their maximum).
pub const PRECONDITIONER_DELTA: f64 = 1e-3;

/// The unknowns: object and probe modes.
#[derive(Debug, Clone, PartialEq)]
pub struct State<T> {
    /// Object on its field (the whole object grid, or a rank's tile plus halo).
    pub object: Field<Complex<T>>,
    /// Probe modes [K, M, M], real space, centred at [M/2, M/2].
    pub probe: Vec<Complex<T>>,
}

/// Options of the gd engine (from `[reconstruction]`).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Noise model.
    pub noise: NoiseModel,
    /// Refine the probe.
    pub update_probe: bool,
    /// First iteration at which the probe is refined.
    pub probe_update_start: usize,
    /// Index-defined mini-batches per iteration (position j in batch j mod batches).
    pub batches: usize,
    /// Step in units of the Fisher-scoring step.
    pub step: f64,
}

impl From<&ReconstructionConfig> for Options {
    fn from(r: &ReconstructionConfig) -> Self {
        Options {
            noise: r.noise_model,
            update_probe: r.update_probe,
            probe_update_start: r.probe_update_start,
            batches: r.batches,
            step: r.step,
        }
    }
}

/// The measurements an engine works on: geometry and intensities (kernel layout) of the
/// positions this process owns, in the same order.
#[derive(Debug)]
pub struct Problem<T: Real> {
    /// FFT plans, modes, noise model, Poisson floor.
    pub kernel: Kernel<T>,
    /// Positions.
    pub positions: Vec<PositionGeom<T>>,
    /// Intensities [n, M, M] in the transposed corner-centred layout.
    pub intensities: Vec<f32>,
}

/// What one iteration reports.
#[derive(Debug, Clone, Copy)]
pub struct IterStats {
    /// Loss summed over positions at the state before this iteration's updates.
    pub loss: f64,
    /// Whether the probe was updated.
    pub probe_updated: bool,
}

/// One iteration: for each mini-batch, sum the gradients, then update object and probe.
pub fn iterate<T: Real>(p: &Problem<T>, s: &mut State<T>, iteration: usize, o: &Options) -> IterStats {
    let update_probe = o.update_probe && iteration >= o.probe_update_start;
    let mut loss = 0.0;
    let mm = p.kernel.fft.size().pow(2);
    for b in 0..o.batches {
        let (pos, meas): (Vec<PositionGeom<T>>, Vec<f32>) = if o.batches == 1 {
            (Vec::new(), Vec::new())
        } else {
            let idx: Vec<usize> = (0..p.positions.len()).filter(|j| p.positions[*j].index % o.batches == b).collect();
            (
                idx.iter().map(|&j| p.positions[j].clone()).collect(),
                idx.iter().flat_map(|&j| p.intensities[j * mm..(j + 1) * mm].iter().copied()).collect(),
            )
        };
        let (pos, meas) = if o.batches == 1 { (&p.positions[..], &p.intensities[..]) } else { (&pos[..], &meas[..]) };
        if pos.is_empty() {
            continue;
        }
        let ph = probe_spectrum(&p.kernel.fft, &s.probe);
        let g = gradients(&p.kernel, &s.object, &ph, pos, meas, update_probe);
        loss += g.loss;
        apply(p, s, g, o);
    }
    IterStats { loss, probe_updated: update_probe }
}

/// Apply summed gradients (docs/algorithm.md §4). Public so that a tiled engine can call it
/// after adding its neighbours' halo contributions.
pub fn apply<T: Real>(p: &Problem<T>, s: &mut State<T>, g: Gradients<T>, o: &Options) {
    let alpha = T::of(o.step / fisher_scale(o.noise));
    precondition_step(&mut s.object.data, &g.g_obj.data, &g.d_obj.data, alpha);
    if !g.g_probe_hat.is_empty() {
        let fft = &p.kernel.fft;
        let mm = fft.size() * fft.size();
        let mut gp = vec![Complex::default(); mm];
        let mut sc = fft.scratch();
        for (mode, ghat) in g.g_probe_hat.chunks(mm).enumerate() {
            let mut w = ghat.to_vec();
            fft.inverse_t(&mut w, &mut gp, &mut sc);
            precondition_step(&mut s.probe[mode * mm..(mode + 1) * mm], &gp, &g.d_probe, alpha);
        }
    }
}

/// x ← x − α g / (d + δ max d).
fn precondition_step<T: Real>(x: &mut [Complex<T>], g: &[Complex<T>], d: &[T], alpha: T) {
    let dmax = d.iter().fold(T::zero(), |a, b| a.max(*b));
    let reg = T::of(PRECONDITIONER_DELTA) * dmax + T::min_positive_value();
    for ((x, g), d) in x.iter_mut().zip(g).zip(d) {
        *x = *x - *g * (alpha / (*d + reg));
    }
}
