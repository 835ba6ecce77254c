//! "mlcg": maximum-likelihood refinement by preconditioned nonlinear conjugate gradients
//! (Thibault & Guizar-Sicairos 2012; the distributed form of Yu et al. 2021, PtyGer), on
//! one rank of a tiled job (docs/algorithm.md §8).
//!
//! The unknowns x = (O, P) and the gradient g = (∂L/∂O*, ∂L/∂P*) of the noise model's loss
//! (amplitude = Gaussian on √I, or Poisson) are those of gd. With the gd preconditioner
//! z = g / (c (D + δ max D)) (Fisher scoring; c = 1 amplitude, 2 Poisson) and the real
//! inner product ⟨a, b⟩ = Re Σ a* b over tile pixels and probe pixels:
//! ```text
//! β_PR = max(0, ⟨g − g₋, z⟩ / ⟨g₋, z₋⟩)     (Polak–Ribière+)
//! β_DY = ⟨g, z⟩ / ⟨d₋, g − g₋⟩             (Dai–Yuan)
//! d = −z + β d₋   (d = −z at a start, when ⟨g, d⟩ ≥ 0, or after a step that raised L)
//! ```
//! Line search along d, one trial per iteration: L(0) and L'(0) = 2⟨g, d⟩ are known; L(t₁)
//! is evaluated at the trial step t₁ (the previous accepted step; first `[mlcg]
//! initial_step`), and the minimiser of the parabola through them is taken,
//! t = −L'(0) t₁² / (2 (L(t₁) − L(0) − L'(0) t₁)), at most 4 t₁ (t₁ where the parabola
//! is not convex, and 2 t₁ as the next trial). Every inner product and loss is a global all-reduce in f64, and the
//! direction's halo is refreshed from the tile owners, so a tiled run equals the 1-rank run.

use super::axial;
use super::exchange::{
    add_step, finish_sends, global_max_in, lap, probe_from_hat, refresh_halo, tile_indices,
    TAG_DIRECTION,
};
use super::gd::{sum_gradients, Options, PRECONDITIONER_DELTA};
use super::{Decomposition, IterStats, Problem, Rank, State};
use crate::backend::kernel::probe_spectrum;
use crate::backend::Selection;
use crate::config::{CgDirection, MlcgConfig};
use crate::error::Result;
use crate::physics::fft::Real;
use crate::physics::model::{fisher_scale, Field};
use num_complex::Complex64;
use std::time::Instant;

/// Largest accepted step, in units of the trial step.
const MAX_STEP_GROWTH: f64 = 4.0;

/// What ML-CG keeps between iterations on one rank. Vectors hold this rank's tile pixels
/// (row-major over the tile) followed by the probe modes [K][M][M].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgState {
    /// The previous gradient g₋ (empty at a start).
    pub gradient: Vec<Complex64>,
    /// The previous search direction d₋.
    pub direction: Vec<Complex64>,
    /// The previous ⟨g₋, z₋⟩ (global).
    pub gz: f64,
    /// The next trial step t₁ (0 = not set: `[mlcg] initial_step`).
    pub step: f64,
    /// The loss at the start of the previous iteration (global).
    pub loss: f64,
}

/// Re Σ conj(a) b.
fn dot(a: &[Complex64], b: &[Complex64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.re * y.re + x.im * y.im)
        .sum()
}

/// One ML-CG iteration on one rank (full batch; `[reconstruction] batches` does not apply).
/// The reported loss is the one before the update.
///
/// Errors: a failed peer or transport (naming the peer rank).
pub fn iterate<T: Real>(
    p: &Problem<T>,
    s: &mut State<T>,
    cg: &mut CgState,
    iteration: usize,
    o: &Options,
    c: &MlcgConfig,
    rank: &mut Rank,
) -> Result<IterStats> {
    let update_probe = o.probe_at(iteration);
    let mut st = IterStats {
        probe_updated: update_probe,
        ..Default::default()
    };
    let m = p.kernel.fft.size();
    let kmm = p.kernel.modes * m * m;
    let mut g = sum_gradients(
        p,
        s,
        0,
        1,
        update_probe,
        o.positions_at(iteration),
        false,
        rank,
        &mut st,
    )?;
    st.positions = std::mem::take(&mut g.g_pos);
    // the data loss (exact under any tiling, as the line search below needs); the axial
    // regulariser's value R(x) of a multislice object joins the tiles' inner products
    let l0_data = g.loss;
    let mut t = Instant::now();
    let tile = rank.plan.tile;
    let r0 = axial::penalty(&s.object, &tile, p.axial);
    let idx: Vec<usize> = tile_indices(&s.object, &tile).collect();
    let nt = idx.len();
    // gradient and preconditioned gradient: tile pixels, then the probe
    let fisher = fisher_scale(o.noise);
    st.compute_s += lap(&mut t);
    let reg = PRECONDITIONER_DELTA * global_max_in(&g.d_obj, rank, &mut st)? + f64::MIN_POSITIVE;
    let mut t = Instant::now();
    let mut grad: Vec<Complex64> = idx.iter().map(|&i| g.g_obj.data[i]).collect();
    let mut z: Vec<Complex64> = idx
        .iter()
        .map(|&i| g.g_obj.data[i] / (fisher * (g.d_obj.data[i] + reg)))
        .collect();
    if update_probe {
        let gp = probe_from_hat(m, &g.g_probe_hat);
        let preg = PRECONDITIONER_DELTA * g.d_probe.iter().fold(0.0f64, |a, b| a.max(*b))
            + f64::MIN_POSITIVE;
        z.extend(
            gp.iter()
                .enumerate()
                .map(|(i, v)| v / (fisher * (g.d_probe[i % (m * m)] + preg))),
        );
        grad.extend(gp);
    } else {
        grad.resize(nt + kmm, Complex64::default());
        z.resize(nt + kmm, Complex64::default());
    }
    // global inner products: tile parts all-reduced (tiled), probe parts added once; those
    // with the previous gradient and direction whenever there are such (a restart, decided
    // below from the global loss, then ignores them)
    let fresh = cg.direction.len() != grad.len();
    let (gp, dp, zp) = (&cg.gradient, &cg.direction, &z);
    let parts = |r: std::ops::Range<usize>| -> [f64; 4] {
        let gz = dot(&grad[r.clone()], &zp[r.clone()]);
        if fresh {
            [gz, 0.0, 0.0, 0.0]
        } else {
            [
                gz,
                dot(&gp[r.clone()], &zp[r.clone()]),
                dot(&dp[r.clone()], &grad[r.clone()]),
                dot(&dp[r.clone()], &gp[r]),
            ]
        }
    };
    let p0 = parts(0..nt);
    let mut ip = [p0[0], p0[1], p0[2], p0[3], r0];
    st.compute_s += lap(&mut t);
    if rank.mode == Decomposition::Tiled {
        rank.comm.allreduce_sum(&mut ip)?;
    }
    st.wait_s += lap(&mut t);
    let pp = parts(nt..nt + kmm);
    let [gz, g1z, d1g, d1g1] = [ip[0] + pp[0], ip[1] + pp[1], ip[2] + pp[2], ip[3] + pp[3]];
    // the objective: data loss + R (tiled: the tiles' R summed; replicated: every rank's
    // tile is the whole object)
    let l0 = l0_data + ip[4];
    st.loss = l0;
    // a start, or the last step raised the loss: steepest descent, half the trial step
    let restart = fresh || l0 > cg.loss;
    if restart && !cg.direction.is_empty() {
        cg.step *= 0.5;
    }
    if !(gz > 0.0) {
        // zero gradient: nothing to do
        *cg = CgState {
            loss: l0,
            ..CgState::default()
        };
        return Ok(st);
    }
    let mut beta = if restart {
        0.0
    } else {
        match c.direction {
            CgDirection::PolakRibiere => ((gz - g1z) / cg.gz).max(0.0),
            CgDirection::DaiYuan => gz / (d1g - d1g1),
        }
    };
    // ⟨g, d⟩ = −⟨g, z⟩ + β ⟨g, d₋⟩ must be negative (a descent direction)
    if !(beta.is_finite() && beta >= 0.0) || -gz + beta * d1g >= 0.0 {
        beta = 0.0;
    }
    let slope = 2.0 * (-gz + beta * d1g);
    let dir: Vec<Complex64> = if beta == 0.0 {
        z.iter().map(|v| -v).collect()
    } else {
        z.iter()
            .zip(&cg.direction)
            .map(|(v, d)| -v + d * beta)
            .collect()
    };

    // the direction on the whole field (halo from the owners) and on the probe
    let mut dfield = Field::like(&s.object, Complex64::default());
    for (k, &i) in idx.iter().enumerate() {
        dfield.data[i] = dir[k];
    }
    st.compute_s += lap(&mut t);
    refresh_halo(&mut dfield, rank, TAG_DIRECTION, &mut st)?;
    let mut t = Instant::now();
    let t1 = if cg.step > 0.0 {
        cg.step
    } else {
        c.initial_step
    };
    let trial = moved(s, &dfield, &dir[nt..], t1);
    // L(t₁) − L(0) as the data losses' difference (each exact under any tiling) plus the
    // regulariser's change summed pixel by pixel (rounding relative to the change, not to R:
    // the parabola's cancellation then does not amplify the tiles' summation order)
    let dr = if axial::counted(rank) {
        axial::penalty_change(&s.object, &dfield, &tile, p.axial, t1)
    } else {
        0.0
    };
    let mut l1 = [
        p.compute.loss(
            &trial.object,
            &probe_spectrum(&p.kernel.fft, &trial.probe),
            Selection::Range(0..p.positions.len()),
        )?,
        dr,
    ];
    st.compute_s += lap(&mut t);
    rank.comm.allreduce_sum(&mut l1)?;
    st.wait_s += lap(&mut t);
    let curv = ((l1[0] - l0_data) + l1[1] - slope * t1) / (t1 * t1);
    // the parabola's minimiser; where it is not convex, the (verified) trial step, and a
    // longer trial next time
    let (step, next) = if curv > 0.0 {
        let t = (-slope / (2.0 * curv)).min(MAX_STEP_GROWTH * t1);
        (t, t)
    } else {
        (t1, 2.0 * t1)
    };
    *s = moved(s, &dfield, &dir[nt..], step);
    *cg = CgState {
        gradient: grad,
        direction: dir,
        gz,
        step: next,
        loss: l0,
    };
    st.compute_s += lap(&mut t);
    finish_sends(rank, &mut st)?;
    Ok(st)
}

/// The state moved by `t` along the direction (object on the whole field, halo included:
/// owners and neighbours form the same values from the same inputs).
fn moved<T: Real>(s: &State<T>, d: &Field<Complex64>, dprobe: &[Complex64], t: f64) -> State<T> {
    let mut out = s.clone();
    for (x, v) in out.object.data.iter_mut().zip(&d.data) {
        add_step(x, v * t);
    }
    for (x, v) in out.probe.iter_mut().zip(dprobe) {
        add_step(x, v * t);
    }
    out
}
