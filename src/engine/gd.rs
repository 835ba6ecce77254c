//! "gd": preconditioned full-batch (or index-defined mini-batch) gradient descent on the
//! object and probe, on one rank of a tiled job (docs/algorithm.md §4–§5).
//!
//! Each update uses only sums over a set of positions:
//! ```text
//! g_O = Σ_jk P*_jk b_jk (placed at n_j)      D_O = Σ_jk |P_jk|²
//! g_P = Σ_j S_j^H (O*_j b_jk)                 D_P = Σ_j |O_j|²
//! O ← O − α g_O / (D_O + δ max D_O)           P ← P − α g_P / (D_P + δ max D_P)
//! ```
//! with b_jk = F⁻¹(w Ψ_jk) the back-propagated residual and α = step / c, where c is the
//! noise model's Fisher curvature relative to the amplitude model (1 amplitude, 2 Poisson).
//!
//! **Gradient decomposition** (Wang et al., SC22). A rank owns a tile of the object and
//! the positions whose centres lie in it; it sums its positions' contributions into its
//! field (tile + halo). The halo parts belong to other ranks' tiles and are sent to their
//! owners; every owned pixel then holds the complete sum, so the update of the tile equals
//! the single-rank update up to floating-point reassociation. Per iteration:
//! 1. sum the positions whose windows reach outside the tile (halo positions);
//! 2. post non-blocking sends of the halo rectangles to their owners;
//! 3. sum the interior positions while the messages travel;
//! 4. receive the neighbours' contributions to the tile and add them;
//! 5. all-reduce the probe gradient, its preconditioner, the loss and max D_O;
//! 6. update the tile and the (replicated) probe;
//! 7. refresh the halo copies of the object from their owners.
//!
//! In the replicated mode (the data-parallel baseline of the Python codes) every rank
//! holds the whole object and the object-sized sums are all-reduced instead.

use super::axial;
pub use super::exchange::{extract, write_rect, TAG_GRADIENT, TAG_OBJECT};
use super::exchange::{
    finish_sends, global_max_in, halo_first_sums, lap, probe_from_hat, refresh_halo, tile_indices,
};
use super::resident;
pub use super::{Decomposition, IterStats, Problem, Rank, State};
use crate::backend::kernel::{probe_spectrum, Gradients};
use crate::backend::resident::Resident;
use crate::backend::Selection;
use crate::config::{NoiseModel, ReconstructionConfig};
use crate::error::Result;
use crate::physics::fft::Real;
use crate::physics::model::{fisher_scale, Field};
use crate::tiling::Rect;
use num_complex::Complex;
use std::time::Instant;

/// Relative regularisation δ of both preconditioners (fraction of their maximum).
pub const PRECONDITIONER_DELTA: f64 = 1e-3;

/// Options of the gd engine (from `[reconstruction]`); the probe options also steer the
/// other engines.
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
    /// First iteration whose gradient pass also returns the position gradients
    /// (`[position_correction]` enabled: its `start_iteration`); `None`: never.
    pub positions_from: Option<usize>,
}

impl Options {
    /// Whether the probe is refined at (global) iteration `it`.
    pub fn probe_at(&self, it: usize) -> bool {
        self.update_probe && it >= self.probe_update_start
    }

    /// Whether the gradient pass of (global) iteration `it` returns the position gradients.
    pub fn positions_at(&self, it: usize) -> bool {
        self.positions_from.is_some_and(|s| it >= s)
    }
}

impl From<&ReconstructionConfig> for Options {
    fn from(r: &ReconstructionConfig) -> Self {
        Options {
            noise: r.noise_model,
            update_probe: r.update_probe,
            probe_update_start: r.probe_update_start,
            batches: r.batches,
            step: r.step,
            positions_from: None,
        }
    }
}

/// What gd keeps between iterations when it runs mini-batches: the previous pass's
/// object preconditioner D̄_O = Σ_b D_O,b (the full-batch one, one pass old) on the rank's
/// field ([planes, rows, cols] row-major, complete on the tile) and its global maximum over
/// the owned pixels; empty with one batch. The first pass of a gd stage forms it from one
/// extra pass over all positions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GdState {
    /// Σ_b D_O,b of the previous pass, the layout of the object field.
    pub d_obj: Vec<f64>,
    /// Its global maximum over the owned pixels.
    pub d_max: f64,
    /// The backend's resident object ([`crate::backend::Compute::resident`]) is newer than
    /// `State::object`: [`super::resident::sync`] copies it back. Not checkpointed (a
    /// checkpoint is written after a sync).
    pub resident: bool,
}

/// One iteration on one rank: for each mini-batch, sum this rank's contributions, complete
/// the sums across ranks, update the tile and the probe, refresh the halo. With more than
/// one batch, `gs` carries the object preconditioner of the previous pass (see [`apply`]);
/// when it is empty (the first iteration of a gd stage) one extra pass forms it.
///
/// Errors: a failed peer or transport (naming the peer rank).
pub fn iterate<T: Real>(
    p: &Problem<T>,
    s: &mut State<T>,
    gs: &mut GdState,
    iteration: usize,
    o: &Options,
    rank: &mut Rank,
) -> Result<IterStats> {
    let update_probe = o.probe_at(iteration);
    let mut st = IterStats {
        probe_updated: update_probe,
        ..Default::default()
    };
    if let Some(r) = resident_backend(p, s, o, rank) {
        // the object and its sums stay in the backend; only rectangles cross
        if !gs.resident {
            r.load_object(&s.object)?;
            gs.resident = true;
        }
        let want_positions = o.positions_at(iteration);
        let mut g =
            resident::sum_gradients(p, r, &s.probe, update_probe, want_positions, rank, &mut st)?;
        st.loss += g.loss;
        st.positions.append(&mut g.g_pos);
        let dmax = resident::global_max_d(r, rank, &mut st)?;
        let mut t = Instant::now();
        let (alpha, delta) = step_sizes(o, 1.0);
        let planes = s.object.planes() as f64;
        r.update_object(
            &rank.plan.tile,
            alpha,
            planes,
            delta * dmax + f64::MIN_POSITIVE,
        )?;
        apply_probe(p, s, &g, alpha, delta, 1.0);
        st.compute_s += lap(&mut t);
        resident::refresh_halo(r, rank, &mut st)?;
        finish_sends(rank, &mut st)?;
        return Ok(st);
    }
    // the host path: the object must be the current one
    resident::sync(p, s, gs)?;
    let shares = batch_shares(p, o.batches, rank, &mut st)?;
    if o.batches > 1 && gs.d_obj.is_empty() {
        // the first pass of a gd stage: the full preconditioner from one pass over all
        // positions (its other sums are not used)
        let g = sum_gradients(p, s, 0, 1, false, false, false, rank, &mut st)?;
        finish_sends(rank, &mut st)?;
        gs.d_max = global_max_in(&g.d_obj, rank, &mut st)?;
        gs.d_obj = g.d_obj.data;
    }
    let mut pass_d: Option<Field<f64>> = None;
    for (b, &share) in shares.iter().enumerate() {
        let mut g = sum_gradients(
            p,
            s,
            b,
            o.batches,
            update_probe,
            o.positions_at(iteration),
            true,
            rank,
            &mut st,
        )?;
        st.loss += g.loss;
        st.positions.append(&mut g.g_pos);
        // global max of the object preconditioner over the owned pixels
        let dmax = global_max_in(&g.d_obj, rank, &mut st)?;
        let mut t = Instant::now();
        let previous = (gs.d_obj.len() == g.d_obj.data.len()).then_some((&gs.d_obj[..], gs.d_max));
        apply(p, s, &g, o, &rank.plan.tile, dmax, share, previous);
        if o.batches > 1 {
            let acc = pass_d.get_or_insert_with(|| Field::like(&g.d_obj, 0.0));
            acc.data
                .iter_mut()
                .zip(&g.d_obj.data)
                .for_each(|(a, d)| *a += *d);
        }
        st.compute_s += lap(&mut t);
        refresh_halo(&mut s.object, rank, TAG_OBJECT, &mut st)?;
        finish_sends(rank, &mut st)?;
    }
    if let Some(d) = pass_d {
        gs.d_max = global_max_in(&d, rank, &mut st)?;
        gs.d_obj = d.data;
    }
    Ok(st)
}

/// The backend's resident object store, where gd uses it: a backend that has one (GPUs),
/// the tiled full-batch mode of a single-slice object (with or without position
/// refinement). Else `None`: gd works on the host arrays (the CPU, and the other modes on
/// GPUs).
fn resident_backend<'p, T: Real>(
    p: &'p Problem<T>,
    s: &State<T>,
    o: &Options,
    rank: &Rank,
) -> Option<&'p dyn Resident<T>> {
    let plain = rank.mode == Decomposition::Tiled && o.batches == 1 && s.object.planes() == 1;
    p.compute.resident().filter(|_| plain)
}

/// Each mini-batch's share of all positions of the job, s_b = N_b / N (position j is in batch
/// j mod batches), from counts all-reduced over the ranks; `[1]` for the full batch (no
/// communication).
///
/// Errors: a failed peer or transport.
pub fn batch_shares<T: Real>(
    p: &Problem<T>,
    batches: usize,
    rank: &mut Rank,
    st: &mut IterStats,
) -> Result<Vec<f64>> {
    if batches == 1 {
        return Ok(vec![1.0]);
    }
    let mut counts = vec![0.0f64; batches];
    for pos in p.positions.iter() {
        counts[pos.index % batches] += 1.0;
    }
    let mut t = Instant::now();
    rank.comm.allreduce_sum(&mut counts)?;
    st.wait_s += lap(&mut t);
    let n: f64 = counts.iter().sum();
    Ok(counts.iter().map(|c| c / n.max(1.0)).collect())
}

/// Steps 1–5 for mini-batch `b` of `batches`: this rank's sums completed across ranks. On
/// return `g_obj`/`d_obj` hold the complete sums on the rank's tile (halo pixels hold only
/// partial sums), and the probe sums and the loss are global. The axial regulariser of a
/// multislice object is in the object sums; its value R joins the loss when `axial_loss`
/// (ML-CG keeps the data loss apart for its line search). With `want_positions`, `g_pos`
/// holds this rank's positions' gradients with respect to their centres (not reduced:
/// each position's terms are its own).
#[allow(clippy::too_many_arguments)]
pub fn sum_gradients<T: Real>(
    p: &Problem<T>,
    s: &State<T>,
    b: usize,
    batches: usize,
    want_probe: bool,
    want_positions: bool,
    axial_loss: bool,
    rank: &mut Rank,
    st: &mut IterStats,
) -> Result<Gradients<T>> {
    let ph = probe_spectrum(&p.kernel.fft, &s.probe);
    let (tile, counted) = (rank.plan.tile, axial_loss && axial::counted(rank));
    halo_first_sums(
        p,
        rank,
        st,
        |range| {
            let run = |sel: Selection| match want_positions {
                true => p
                    .compute
                    .gradients_and_positions(&s.object, &ph, sel, want_probe),
                false => p.compute.gradients(&s.object, &ph, sel, want_probe),
            };
            if batches == 1 {
                // contiguous ranges of plan order (borrowed, not copied, on the CPU)
                return run(Selection::Range(range));
            }
            // this batch's positions of the range, keeping plan order
            let idx: Vec<usize> = range
                .filter(|&j| p.positions[j].index % batches == b)
                .collect();
            run(Selection::Indices(&idx))
        },
        |g| {
            // the axial regulariser of a multislice object, on the tile (weighted by the
            // batch's share of the positions, so that a pass over all batches adds it once)
            let r = axial::regularise(
                &s.object,
                g,
                &tile,
                p.axial / batches as f64,
                fisher_scale(p.kernel.noise),
            );
            if counted {
                g.loss += r;
            }
        },
    )
}

/// Step 6: update the owned tile and the probe from complete sums; `dmax` is the global
/// maximum of D_O, `share` the batch's share s of all positions ([`batch_shares`], 1 for the
/// full batch), `previous` the previous pass's full object preconditioner D̄_O and its
/// maximum ([`GdState`]; `None` for the full batch, which uses its own D_O and `dmax`).
///
/// A mini-batch is preconditioned for its share of the data (docs/algorithm.md §4, "Mini-batches"). Its own
/// sums D_O and D_P cover only its positions, so (i) where its windows do not overlap, D_O
/// falls to the probe's tails and the plain regulariser δ·max D_O would let the object step
/// there grow a thousandfold, and (ii) the probe, shared by all positions, would take a full
/// Fisher step towards fitting only the batch's patterns; with one position per batch, gd
/// diverged to NaN. So the probe step is scaled by s (one pass over the batches moves the
/// probe about one full-batch step), and the object step divides by the previous pass's
/// full preconditioner, g_O / (D̄_O + δ max D̄_O): one pass then moves each pixel about one
/// full-batch step, with the later batches seeing the earlier ones' updates. Dividing by
/// the batch's own D_O instead (a Fisher step towards fitting the batch's few patterns,
/// ePIE's step with one position per batch) fits each batch's Poisson noise: the loss
/// stalls above the full batch's and the phase correlation with it (PbTiO3, 20 iterations:
/// 0.972 with 64 batches, 0.919 with one position per batch). The probe's regulariser is
/// (δ + 1 − s)·max D_P (δ·max D_P for the full batch).
///
/// The step is formed in f64 from the f64 sums and added to the working-precision values.
#[allow(clippy::too_many_arguments)]
pub fn apply<T: Real>(
    p: &Problem<T>,
    s: &mut State<T>,
    g: &Gradients<T>,
    o: &Options,
    tile: &Rect,
    dmax: f64,
    share: f64,
    previous: Option<(&[f64], f64)>,
) {
    let (alpha, delta) = step_sizes(o, share);
    let (d_obj, reg) = match previous {
        Some((d, mx)) => (d, PRECONDITIONER_DELTA * mx + f64::MIN_POSITIVE),
        None => (&g.d_obj.data[..], delta * dmax + f64::MIN_POSITIVE),
    };
    let step = |x: &mut Complex<T>, g, d, reg| descend(x, g, d, reg, alpha);
    // a multislice object: the S slices act in series on the same wave, so S simultaneous
    // steps of the single-slice (per-slice Newton) size move the exit wave S times too far;
    // each slice takes 1/S of it (docs/algorithm.md §12)
    let planes = s.object.planes() as f64;
    for i in tile_indices(&s.object, tile) {
        step(
            &mut s.object.data[i],
            g.g_obj.data[i] / planes,
            d_obj[i],
            reg,
        );
    }
    apply_probe(p, s, g, alpha, delta, share);
}

/// The step α = step / c (c the noise model's Fisher scale) and the preconditioners'
/// relative regulariser δ + 1 − s for a batch with share `share` of the positions.
fn step_sizes(o: &Options, share: f64) -> (f64, f64) {
    (
        o.step / fisher_scale(o.noise),
        PRECONDITIONER_DELTA + (1.0 - share),
    )
}

/// The probe half of step 6 ([`apply`]): P ← P − α s g_P / (D_P + (δ + 1 − s) max D_P),
/// from the complete probe sums (nothing when they were not formed).
fn apply_probe<T: Real>(
    p: &Problem<T>,
    s: &mut State<T>,
    g: &Gradients<T>,
    alpha: f64,
    delta: f64,
    share: f64,
) {
    let step = |x: &mut Complex<T>, g, d, reg| descend(x, g, d, reg, alpha);
    if !g.g_probe_hat.is_empty() {
        // the probe gradient's inverse FFT in f64: g_P = F⁻¹ ĝ_P per mode
        let gp = probe_from_hat(p.kernel.fft.size(), &g.g_probe_hat);
        let mm = g.d_probe.len();
        let dpmax = g.d_probe.iter().fold(0.0f64, |a, b| a.max(*b));
        let preg = delta * dpmax + f64::MIN_POSITIVE;
        for (pm, gm) in s.probe.chunks_mut(mm).zip(gp.chunks(mm)) {
            for ((x, g), d) in pm.iter_mut().zip(gm).zip(&g.d_probe) {
                step(x, *g * share, *d, preg);
            }
        }
    }
}

/// x ← x − α g / (d + reg): the step formed in f64, rounded to T and subtracted in T (the
/// GPU's `update_object` kernel does the same operations in the same order).
#[inline]
fn descend<T: Real>(x: &mut Complex<T>, g: Complex<f64>, d: f64, reg: f64, alpha: f64) {
    let u = g * (alpha / (d + reg));
    *x = *x - Complex::new(T::of(u.re), T::of(u.im));
}
