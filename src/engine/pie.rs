//! "epie" and "rpie": the sequential engines (Maiden & Rodenburg 2009; Maiden, Johnson & Li
//! 2017) on the tiles of the gradient decomposition (docs/algorithm.md §9).
//!
//! Inside its field a rank visits its positions in position order (global index), each
//! updating the object and the probe before the next ([`crate::backend::Compute::pie_sweep`],
//! on the rank's backend).
//! Once per iteration the tiles are merged:
//! - object: each pixel of a tile gets the illumination-weighted mean of the changes that
//!   the ranks whose positions reach it made, ΔO = Σ_r D_r ΔO_r / Σ_r D_r with
//!   D_r = Σ_{j∈r,k} |P_jk|² — sent to the owner exactly like gd's (g_O, D_O) halo sums;
//! - probe: the position-count-weighted mean of the ranks' changes, all-reduced;
//! - halo copies are then refreshed from the owners.
//!
//! Where windows of different ranks overlap, the ranks' updates start from the same object
//! instead of seeing each other's: unlike gd, dm and mlcg this engine depends on the tiling
//! (measured in docs/algorithms.md).

use super::exchange::{
    add_step, allreduce_probe_sums, complete_object_sums, finish_sends, lap, post_halo_sums,
    probe_from_hat, refresh_halo, tile_indices, TAG_OBJECT,
};
use super::gd::Options;
use super::{IterStats, Problem, Rank, State};
use crate::backend::kernel::{probe_spectrum, Gradients};
use crate::backend::pie::PieStep;
use crate::backend::Selection;
use crate::error::Result;
use crate::physics::fft::Real;
use crate::physics::model::Field;
use num_complex::Complex64;
use std::time::Instant;

/// The step rule of ePIE or rPIE (see [`PieStep`]).
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// a_O, s_O, a_P, s_P of [`PieStep`].
    pub mix_step: [f64; 4],
    /// Relaxation γ of the Fourier step ([`PieStep::gamma`]).
    pub gamma: f64,
}

impl Params {
    /// ePIE from `[epie]` α, β, γ: O += α P* Δψ / max|P|², P += β O* Δψ / max|O|².
    pub fn epie([alpha, beta, gamma]: [f64; 3]) -> Self {
        Params {
            mix_step: [1.0, alpha, 1.0, beta],
            gamma,
        }
    }
    /// rPIE from `[rpie]` α, β, γ: O += P* Δψ / ((1 − α)|P|² + α max|P|²), the probe
    /// likewise with β.
    pub fn rpie([alpha, beta, gamma]: [f64; 3]) -> Self {
        Params {
            mix_step: [alpha, 1.0, beta, 1.0],
            gamma,
        }
    }
}

/// One ePIE/rPIE iteration on one rank: sweep, merge the tiles, refresh the halo. The
/// reported loss is accumulated during the sweeps.
///
/// Errors: a failed peer or transport (naming the peer rank).
pub fn iterate<T: Real>(
    p: &Problem<T>,
    s: &mut State<T>,
    iteration: usize,
    o: &Options,
    prm: &Params,
    rank: &mut Rank,
) -> Result<IterStats> {
    let update_probe = o.probe_at(iteration);
    let mut st = IterStats {
        probe_updated: update_probe,
        ..Default::default()
    };
    let m = p.kernel.fft.size();
    let mut t = Instant::now();
    let mut order: Vec<usize> = (0..p.positions.len()).collect();
    order.sort_by_key(|&j| p.positions[j].index);
    let [a_o, s_o, a_p, s_p] = prm.mix_step;
    let step = PieStep {
        obj_mix: a_o,
        obj_step: s_o,
        probe_mix: a_p,
        probe_step: s_p,
        gamma: prm.gamma,
        update_probe,
    };
    let mut obj = s.object.clone();
    let ph0 = probe_spectrum(&p.kernel.fft, &s.probe);
    let mut ph = ph0.clone();
    let mut illum = Field::filled(obj.origin, obj.shape, 0.0);
    let loss = p.compute.pie_sweep(
        &mut obj,
        &mut ph,
        Selection::Indices(&order),
        &step,
        &mut illum,
    )?;
    // the sums to merge: D ΔO and D on the field; n ΔP̂ and n for the probe
    let mut g = Gradients::<T>::zeros(obj.origin, obj.shape, 1, Some((p.kernel.modes, 1)));
    for (i, d) in illum.data.iter().enumerate() {
        let (a, b) = (obj.data[i], s.object.data[i]);
        g.g_obj.data[i] = Complex64::new(a.re.f64() - b.re.f64(), a.im.f64() - b.im.f64()) * *d;
        g.d_obj.data[i] = *d;
    }
    let n = p.positions.len() as f64;
    g.g_probe_hat = ph
        .iter()
        .zip(&ph0)
        .map(|(a, b)| Complex64::new(a.re.f64() - b.re.f64(), a.im.f64() - b.im.f64()) * n)
        .collect();
    g.d_probe = vec![n];
    g.loss = loss;
    st.compute_s += lap(&mut t);
    post_halo_sums(&g, rank)?;
    st.comm_s += lap(&mut t);
    complete_object_sums(&mut g, rank, &mut st)?;
    let mut t = Instant::now();
    allreduce_probe_sums(&mut g, rank.comm)?;
    st.wait_s += lap(&mut t);
    st.loss = g.loss;
    for i in tile_indices(&s.object, &rank.plan.tile) {
        if g.d_obj.data[i] > 0.0 {
            add_step(&mut s.object.data[i], g.g_obj.data[i] / g.d_obj.data[i]);
        }
    }
    if update_probe && g.d_probe[0] > 0.0 {
        let inv = 1.0 / g.d_probe[0];
        let dp = probe_from_hat(m, &g.g_probe_hat);
        for (x, v) in s.probe.iter_mut().zip(&dp) {
            add_step(x, v * inv);
        }
    }
    st.compute_s += lap(&mut t);
    refresh_halo(&mut s.object, rank, TAG_OBJECT, &mut st)?;
    finish_sends(rank, &mut st)?;
    Ok(st)
}
