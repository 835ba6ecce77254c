//! "dm": the difference map (Thibault et al. 2008/2009; β-relaxed form as in Dong et al.
//! 2018) with mixed-state probe modes, on one rank of a tiled job (docs/algorithm.md §7).
//!
//! Each rank keeps the exit waves ψ_jk of its own positions. One iteration:
//! ```text
//! ψ_jk ← ψ_jk + β [ Π_F(2 P_jk O_j − ψ_jk) − P_jk O_j ]           Fourier step, per position
//!                                          (Π_F relaxed by γ: the noise model's proximal map)
//! O ← (Σ_jk P*_jk ψ_jk + r O) / (Σ_jk |P_jk|² + r)                   overlap step, object
//! P_k ← (Σ_j S_j^H(O*_j ψ_jk) + r_P P_k) / (Σ_j |O_j|² + r_P)         then the probe, new O
//! ```
//! with r = δ max Σ|P_jk|², r_P = δ max Σ|O_j|² (δ = 10⁻³; they keep unilluminated pixels).
//! The probe step uses the updated object (one alternation of the overlap projection, as
//! in Thibault et al. 2009): updating both from the same old values over-corrects their
//! common scale and diverges.
//!
//! The last `[dm] er_iterations` iterations of a difference-map stage are error reduction
//! (Fienup 1982; the difference map's usual finish): ψ_jk ← Π_F^ML(P_jk O_j), the model's
//! far field moved by the Fisher-scoring step of the likelihood, then the same overlap
//! step. On noisy data the difference map's iterate ψ does not settle (Π_F ψ − Π_O ψ stays
//! finite) and Π_O ψ stalls short of the likelihood's optimum; error reduction's fixed
//! points are its stationary points (docs/algorithm.md §7).
//!
//! The overlap step is a ratio of sums over positions: numerator and denominator are
//! formed and completed over tiles exactly like gd's gradient and preconditioner (halo
//! positions first, halo sums to owners, probe sums all-reduced), so a tiled run equals
//! the 1-rank run.

use super::exchange::{
    add_step, allreduce_probe_sums, finish_sends, global_max_in, halo_first_sums, lap,
    probe_from_hat, refresh_halo, tile_indices, TAG_OBJECT,
};
use super::gd::{Options, PRECONDITIONER_DELTA};
use super::{resident, Decomposition, IterStats, Problem, Rank, State};
use crate::backend::kernel::{probe_spectrum, DmStep, Gradients};
use crate::backend::Selection;
use crate::error::Result;
use crate::physics::fft::Real;
use crate::tiling::Rect;
use num_complex::{Complex, Complex64};
use std::time::Instant;

/// What the difference map keeps between iterations on one rank. The exit waves ψ_jk
/// themselves live in the rank's backend ([`crate::backend::Compute::difference_map`]),
/// where the arithmetic runs; this holds them only on their way to or from a checkpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DmState<T> {
    /// Whether the backend holds this stage's exit waves (false before the stage's first
    /// iteration, which starts them at P_jk O_j).
    pub started: bool,
    /// Exit waves of this rank's positions, [n][K][M][M] in plan order (the order of
    /// `Problem::positions`), real space: a checkpoint's copy, filled from the backend just
    /// before a checkpoint is written ([`sync_for_checkpoint`]) or by a resume, and handed
    /// to the backend (then emptied) at the next iteration. Empty otherwise.
    pub exit_waves: Vec<Complex<T>>,
    /// The backend's resident object ([`crate::backend::Compute::resident`]) is newer than
    /// `State::object` ([`super::resident::sync_all`] copies it back). Not checkpointed.
    pub resident: bool,
}

/// Before a checkpoint: copy the backend's exit waves into `ds.exit_waves` if this dm stage
/// has started (the checkpoint then saves them); [`iterate`] hands them back.
///
/// Errors: a device failure.
pub fn sync_for_checkpoint<T: Real>(p: &Problem<T>, ds: &mut DmState<T>) -> Result<()> {
    if ds.started && ds.exit_waves.is_empty() {
        ds.exit_waves = p.compute.exit_waves()?;
    }
    Ok(())
}

/// One difference-map (or, with `step.error_reduction`, error-reduction) iteration on one
/// rank. `step.beta` ∈ (0, 1] (`[dm] beta`), `step.gamma` ∈ (0, 1] the relaxation of the
/// Fourier step (`[dm] gamma`, docs/algorithm.md §7); the probe is refined as `o` says
/// (`update_probe`, `probe_update_start`). The reported loss is the noise model's at the
/// state before the update.
///
/// Errors: a failed peer or transport (naming the peer rank).
pub fn iterate<T: Real>(
    p: &Problem<T>,
    s: &mut State<T>,
    ds: &mut DmState<T>,
    iteration: usize,
    o: &Options,
    step: DmStep,
    rank: &mut Rank,
) -> Result<IterStats> {
    let update_probe = o.probe_at(iteration);
    let mut st = IterStats {
        probe_updated: update_probe,
        ..Default::default()
    };
    if !ds.exit_waves.is_empty() {
        // a resumed checkpoint's exit waves (or the copy a checkpoint just took) go back
        p.compute
            .set_exit_waves(std::mem::take(&mut ds.exit_waves))?;
        ds.started = true;
    }
    let init = !ds.started;
    let ph = probe_spectrum(&p.kernel.fft, &s.probe);
    if let Some(r) = p
        .compute
        .resident()
        .filter(|_| rank.mode == Decomposition::Tiled)
    {
        // the object and its sums stay in the backend; only rectangles cross
        if !ds.resident {
            r.load_object(&s.object)?;
            ds.resident = true;
        }
        let mut loss = resident::halo_first(p, r, rank, &mut st, |sel, reset| {
            r.dm_accumulate(&ph, sel, init, step, reset)
        })?;
        ds.started = true;
        let mut t = Instant::now();
        let mut mx = [loss];
        rank.comm.allreduce_sum(&mut mx)?;
        loss = mx[0];
        st.wait_s += lap(&mut t);
        st.loss = loss;
        let dmax = resident::global_max_d(r, rank, &mut st)?;
        r.ratio_update(
            &rank.plan.tile,
            PRECONDITIONER_DELTA * dmax + f64::MIN_POSITIVE,
        )?;
        st.compute_s += lap(&mut t);
        resident::refresh_halo(r, rank, &mut st)?;
        if update_probe {
            let mut t = Instant::now();
            let mut gp = Gradients::zeros([0, 0], [0, 0], 1, None);
            (gp.g_probe_hat, gp.d_probe) =
                r.dm_probe_sums(Selection::Range(0..p.positions.len()))?;
            st.compute_s += lap(&mut t);
            probe_step(p, s, gp, rank, &mut st)?;
        }
        finish_sends(rank, &mut st)?;
        return Ok(st);
    }
    // the host path: the object must be the current one
    resident::sync_flag(p, s, &mut ds.resident)?;
    let object = &s.object;
    let g = halo_first_sums(
        p,
        rank,
        &mut st,
        |r| {
            p.compute
                .difference_map(object, &ph, Selection::Range(r.clone()), init, step)
        },
        |_| {},
    )?;
    ds.started = true;
    st.loss = g.loss;
    let dmax = global_max_in(&g.d_obj, rank, &mut st)?;
    let mut t = Instant::now();
    overlap_update(p, s, &g, &rank.plan.tile, dmax);
    st.compute_s += lap(&mut t);
    refresh_halo(&mut s.object, rank, TAG_OBJECT, &mut st)?;
    if update_probe {
        let mut t = Instant::now();
        let all = Selection::Range(0..p.positions.len());
        let gp = p.compute.probe_sums(&s.object, all)?;
        st.compute_s += lap(&mut t);
        probe_step(p, s, gp, rank, &mut st)?;
    }
    finish_sends(rank, &mut st)?;
    Ok(st)
}

/// The probe half of the overlap step: this rank's probe sums `gp` (dm's, over all of its
/// positions with the updated object) all-reduced, then the probe update.
fn probe_step<T: Real>(
    p: &Problem<T>,
    s: &mut State<T>,
    mut gp: Gradients<T>,
    rank: &mut Rank,
    st: &mut IterStats,
) -> Result<()> {
    let mut t = Instant::now();
    allreduce_probe_sums(&mut gp, rank.comm)?;
    st.wait_s += lap(&mut t);
    overlap_update(p, s, &gp, &rank.plan.tile, 0.0);
    st.compute_s += lap(&mut t);
    Ok(())
}

/// The overlap step from complete sums: object on `tile` if its sums are present (`dmax`
/// the global maximum of D_O), probe if its sums are present.
/// Formed in f64 and rounded once to the working precision.
fn overlap_update<T: Real>(
    p: &Problem<T>,
    s: &mut State<T>,
    g: &Gradients<T>,
    tile: &Rect,
    dmax: f64,
) {
    let reg = PRECONDITIONER_DELTA * dmax + f64::MIN_POSITIVE;
    // x ← (n + r x)/(d + r), written as x + (n − d x)/(d + r)
    let ratio = |x: &mut Complex<T>, n: Complex64, d: f64, r: f64| {
        let xv = Complex64::new(x.re.f64(), x.im.f64());
        add_step(x, (n - xv * d) / (d + r));
    };
    for i in tile_indices(&s.object, tile).filter(|_| !g.g_obj.data.is_empty()) {
        ratio(&mut s.object.data[i], g.g_obj.data[i], g.d_obj.data[i], reg);
    }
    if !g.g_probe_hat.is_empty() {
        let num = probe_from_hat(p.kernel.fft.size(), &g.g_probe_hat);
        let mm = g.d_probe.len();
        let preg = PRECONDITIONER_DELTA * g.d_probe.iter().fold(0.0f64, |a, b| a.max(*b))
            + f64::MIN_POSITIVE;
        for (pm, nm) in s.probe.chunks_mut(mm).zip(num.chunks(mm)) {
            for ((x, n), d) in pm.iter_mut().zip(nm).zip(&g.d_probe) {
                ratio(x, *n, *d, preg);
            }
        }
    }
}
