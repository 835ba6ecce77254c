//! Scan-position refinement (`[position_correction]`, docs/algorithm.md §14–§15): each
//! position's centre c_j moves by a Gauss–Newton step on the loss, computed from its own
//! window in the engine's gradient pass ([`crate::backend::kernel::PositionGradient`]); the
//! displacements d_j = c_j − c⁰_j from the file's centres are then constrained globally:
//! ```text
//! Δ_j,a = −(∂L/∂c_j,a) / (2 κ (h_j,a + δ h̄_a))                              a ∈ {y, x}
//! d_j + Δ_j ≈ t + B x_j,  x_j = c⁰_j − mean(c⁰)   (least squares over all positions of the job)
//! d*_j = B x_j + clamp(d_j + Δ_j − t − B x_j, ±max_error_px)   (affine; else d_j + Δ_j − t, B = 0)
//! d_j ← clamp(d_j + clamp(d*_j − d_j, ±max_step_px), ±max_shift_px)
//! ```
//! with κ the noise model's Fisher scale (1 amplitude, 2 Poisson), h_j,a = Σ_k Σ_r |P_jk|²
//! |∂_a O|² the curvature for a move of the probe relative to the object, and h̄_a its mean
//! over the job's positions. The global shift t is removed (a shift of every position is a
//! shift of the object) before the per-iteration bound, which would otherwise cut every
//! step to the same length. Everything global is an all-reduce of a few sums, so every rank
//! applies the same B and t; a position keeps the rank chosen from c⁰, whose field was
//! grown by ⌈max_shift_px⌉ (`tiling::plan_with_margin`), so the moved window stays inside it
//! and a tiled run equals the single-rank run (up to the rounding of those sums).

use crate::backend::kernel::PositionGradient;
use crate::comm::Comm;
use crate::config::{NoiseModel, PositionCorrectionConfig};
use crate::error::{Error, Result};
use crate::physics::fft::Real;
use crate::physics::model::{fisher_scale, PositionGeom};
use std::collections::HashMap;

/// Relative regularisation δ of the position curvature (fraction of its mean over the
/// job): damps the steps of positions whose window has little structure (vacuum, a flat
/// object), whose gradient is mostly noise.
pub const CURVATURE_DELTA: f64 = 0.05;

/// One rank's refined positions, in the rank's plan order.
#[derive(Debug, Clone)]
pub struct Refiner {
    cfg: PositionCorrectionConfig,
    /// κ of the noise model.
    fisher: f64,
    /// Window side M (px).
    m: usize,
    /// Global indices of the rank's positions (plan order).
    index: Vec<usize>,
    /// Centres (y, x) from the data file, object px.
    c0: Vec<[f64; 2]>,
    /// Current centres (y, x), object px.
    c: Vec<[f64; 2]>,
    /// Global index → slot in the vectors above.
    slot: HashMap<usize, usize>,
    /// Mean of c⁰ over all positions of the job.
    mean0: [f64; 2],
    /// The affine part B of the last update, [[B_yy, B_yx], [B_xy, B_xx]] row-major
    /// (d = B x; identity map + B is the scan's distortion), zero before the first update
    /// or without `affine`.
    pub affine: [f64; 4],
    /// RMS length of the last update's moves over the job's positions, px.
    pub rms_move_px: f64,
    /// Largest |x_y|, |x_x| over the job (px): bounds the affine step at the scan's edge.
    xmax: [f64; 2],
    /// Per entry of B: the acceleration γ of its step and its previous Newton step
    /// (module docs); checkpointed ([`Refiner::rates`]).
    rate: [f64; 4],
    last: [f64; 4],
}

/// Growth (×) of an affine entry's acceleration while its Newton steps keep their sign, and
/// its cap: the affine part of the scan is a slow mode (the object forms at the scale the
/// positions impose and follows them), so its Newton step, taken with the curvature at a
/// fixed object, is far too short; consistent steps are lengthened, a sign change halves
/// the factor (Rprop, Riedmiller & Braun 1993).
pub const AFFINE_RATE_GROWTH: f64 = 1.5;
/// See [`AFFINE_RATE_GROWTH`].
pub const AFFINE_RATE_MAX: f64 = 64.0;

impl Refiner {
    /// A refiner for the rank's `positions` (plan order; their centres are the file's);
    /// the job-wide mean of the centres is an all-reduce over `comm`, so every rank must
    /// call this at the same point.
    ///
    /// Errors: a failed transport.
    pub fn new<T: Real>(
        cfg: &PositionCorrectionConfig,
        noise: NoiseModel,
        positions: &[PositionGeom<T>],
        m: usize,
        comm: &mut dyn Comm,
    ) -> Result<Self> {
        let index: Vec<usize> = positions.iter().map(|p| p.index).collect();
        let c0: Vec<[f64; 2]> = positions.iter().map(|p| p.centre).collect();
        let parts: Vec<[f64; 3]> = c0.iter().map(|c| [c[0], c[1], 1.0]).collect();
        let s = exact_sums(&parts, comm)?;
        let n = s[2].max(1.0);
        let mean0 = [s[0] / n, s[1] / n];
        let mut xmax = [0.0f64; 2];
        for c in &c0 {
            xmax[0] = xmax[0].max((c[0] - mean0[0]).abs());
            xmax[1] = xmax[1].max((c[1] - mean0[1]).abs());
        }
        comm.allreduce_max(&mut xmax)?;
        let slot = index.iter().enumerate().map(|(k, &j)| (j, k)).collect();
        Ok(Refiner {
            cfg: cfg.clone(),
            fisher: fisher_scale(noise),
            m,
            index,
            c: c0.clone(),
            c0,
            slot,
            mean0,
            affine: [0.0; 4],
            rms_move_px: 0.0,
            xmax,
            rate: [1.0; 4],
            last: [0.0; 4],
        })
    }

    /// The current centres (y, x) in object px, plan order.
    pub fn centres(&self) -> &[[f64; 2]] {
        &self.c
    }

    /// The rank's global position indices, plan order.
    pub fn indices(&self) -> &[usize] {
        &self.index
    }

    /// Set the current centres (a checkpoint's `positions_px`, [n][y, x] flattened, plan
    /// order).
    ///
    /// Errors (naming `what`): a wrong length, a non-finite centre or one beyond
    /// `max_shift_px` of the file's.
    pub fn restore(&mut self, flat: &[f64], what: &str) -> Result<()> {
        if flat.len() != 2 * self.c.len() {
            return Err(Error::new(
                what,
                format!(
                    "{} position values for {} positions",
                    flat.len(),
                    self.c.len()
                ),
            ));
        }
        let lim = self.cfg.max_shift_px;
        for (k, v) in flat.chunks_exact(2).enumerate() {
            let ok = (0..2).all(|a| v[a].is_finite() && (v[a] - self.c0[k][a]).abs() <= lim);
            if !ok {
                return Err(Error::new(what, format!("position {} is ({}, {}): not within {lim} px of its centre in the data file", self.index[k], v[0], v[1])));
            }
            self.c[k] = [v[0], v[1]];
        }
        Ok(())
    }

    /// The affine step's accelerations and previous steps ([γ; 4], [ΔB; 4]), for a
    /// checkpoint.
    pub fn rates(&self) -> [f64; 8] {
        let (r, l) = (self.rate, self.last);
        [r[0], r[1], r[2], r[3], l[0], l[1], l[2], l[3]]
    }

    /// Restore [`Refiner::rates`] from a checkpoint (`what` names it in errors).
    ///
    /// Errors: not 8 finite values with accelerations in [1, [`AFFINE_RATE_MAX`]].
    pub fn restore_rates(&mut self, v: &[f64], what: &str) -> Result<()> {
        let ok = v.len() == 8
            && v.iter().all(|x| x.is_finite())
            && v[..4].iter().all(|r| (1.0..=AFFINE_RATE_MAX).contains(r));
        if !ok {
            return Err(Error::new(
                what,
                "position_affine_rates: not 4 accelerations in [1, 64] and 4 steps",
            ));
        }
        self.rate.copy_from_slice(&v[..4]);
        self.last.copy_from_slice(&v[4..]);
        Ok(())
    }

    /// Move the positions by the gradients `g` of this rank's positions (any order; from
    /// the iteration's gradient pass), then apply the global constraints (module docs).
    /// Collective: every rank calls it at the same iteration (two all-reduces).
    ///
    /// Errors: a gradient for a position this rank does not own, a failed transport.
    pub fn update(&mut self, g: &[PositionGradient], comm: &mut dyn Comm) -> Result<()> {
        // mean curvature over the job
        let parts: Vec<[f64; 3]> = g.iter().map(|p| [p.curv[0], p.curv[1], 1.0]).collect();
        let hs = exact_sums(&parts, comm)?;
        let hbar = [hs[0] / hs[2].max(1.0), hs[1] / hs[2].max(1.0)];
        let mut moved = vec![[0.0f64; 2]; self.c.len()];
        for p in g {
            let Some(&k) = self.slot.get(&p.index) else {
                return Err(Error::new(
                    "position_correction",
                    format!(
                        "a gradient for position {}, which this rank does not own",
                        p.index
                    ),
                ));
            };
            for a in 0..2 {
                let h = 2.0 * self.fisher * (p.curv[a] + CURVATURE_DELTA * hbar[a]);
                // the Newton step, bounded by the field margin only here: the global shift is
                // removed before the per-iteration bound (a bound first would cut every
                // position's step to the same length and hide the affine part in the shift)
                let step = if h > 0.0 && p.grad[a].is_finite() {
                    (-p.grad[a] / h).clamp(-self.cfg.max_shift_px, self.cfg.max_shift_px)
                } else {
                    0.0
                };
                moved[k][a] = step;
            }
        }
        let d: Vec<[f64; 2]> = self
            .c
            .iter()
            .zip(&self.c0)
            .zip(&moved)
            .map(|((c, c0), m)| [c[0] + m[0] - c0[0], c[1] + m[1] - c0[1]])
            .collect();
        // normal equations of d ≈ t + B x per axis: moments of x (n, Σx_y, Σx_x, Σx_y²,
        // Σx_y x_x, Σx_x²) and right-hand sides (Σd_a, Σx_y d_a, Σx_x d_a)
        // and (18..) those of the Newton steps alone (Σm_a, Σx_y m_a, Σx_x m_a)
        let mut parts = vec![[0.0f64; 18]; d.len()];
        for (k, (c0, dj)) in self.c0.iter().zip(&d).enumerate() {
            let x = [c0[0] - self.mean0[0], c0[1] - self.mean0[1]];
            let s = &mut parts[k];
            for (i, v) in [1.0, x[0], x[1], x[0] * x[0], x[0] * x[1], x[1] * x[1]]
                .into_iter()
                .enumerate()
            {
                s[i] = v;
            }
            for a in 0..2 {
                s[6 + 3 * a] = dj[a];
                s[7 + 3 * a] = x[0] * dj[a];
                s[8 + 3 * a] = x[1] * dj[a];
                s[12 + 3 * a] = moved[k][a];
                s[13 + 3 * a] = x[0] * moved[k][a];
                s[14 + 3 * a] = x[1] * moved[k][a];
            }
        }
        let s = exact_sums(&parts, comm)?;
        let n = s[0].max(1.0);
        let normal = [[s[0], s[1], s[2]], [s[1], s[3], s[4]], [s[2], s[4], s[5]]];
        // per axis: (t_a, B_a,y, B_a,x); translation only where B is not determined (a line
        // scan, a single position) or not wanted
        let fit: [[f64; 3]; 2] = std::array::from_fn(|a| {
            let rhs = [s[6 + 3 * a], s[7 + 3 * a], s[8 + 3 * a]];
            let affine = if self.cfg.affine {
                solve3(normal, rhs)
            } else {
                None
            };
            affine.unwrap_or([rhs[0] / n, 0.0, 0.0])
        });
        // the affine part of the Newton steps alone, ΔB, and of the displacements before
        // them, B₀ = B − ΔB (linearity of the fit)
        let step_fit: [[f64; 3]; 2] = std::array::from_fn(|a| {
            let rhs = [s[12 + 3 * a], s[13 + 3 * a], s[14 + 3 * a]];
            if self.cfg.affine {
                solve3(normal, rhs)
            } else {
                None
            }
            .unwrap_or([rhs[0] / n, 0.0, 0.0])
        });
        let db = [
            step_fit[0][1],
            step_fit[0][2],
            step_fit[1][1],
            step_fit[1][2],
        ];
        let mut b = [0.0; 4];
        for e in 0..4 {
            let b0 = [fit[0][1], fit[0][2], fit[1][1], fit[1][2]][e] - db[e];
            if self.cfg.affine {
                let prod = db[e] * self.last[e];
                self.rate[e] = if prod > 0.0 {
                    (self.rate[e] * AFFINE_RATE_GROWTH).min(AFFINE_RATE_MAX)
                } else if prod < 0.0 {
                    (self.rate[e] * 0.5).max(1.0)
                } else {
                    self.rate[e]
                };
                self.last[e] = db[e];
            }
            // at most half the per-iteration bound at the scan's edge from each entry
            let cap = 0.5 * self.cfg.max_step_px / self.xmax[e % 2].max(1.0);
            b[e] = b0 + (self.rate[e] * db[e]).clamp(-cap, cap);
        }
        self.affine = b;
        let (lim, free) = (
            self.cfg.max_shift_px,
            if self.cfg.affine {
                self.cfg.max_error_px
            } else {
                self.cfg.max_shift_px
            },
        );
        let mut sq = [0.0f64; 2];
        for k in 0..self.c.len() {
            let x = [self.c0[k][0] - self.mean0[0], self.c0[k][1] - self.mean0[1]];
            let mut c = [0.0; 2];
            for a in 0..2 {
                let f =
                    (d[k][a] - fit[a][0] - fit[a][1] * x[0] - fit[a][2] * x[1]).clamp(-free, free);
                let lin = b[2 * a] * x[0] + b[2 * a + 1] * x[1];
                let step = (self.c0[k][a] + lin + f - self.c[k][a])
                    .clamp(-self.cfg.max_step_px, self.cfg.max_step_px);
                c[a] = self.c0[k][a] + (self.c[k][a] + step - self.c0[k][a]).clamp(-lim, lim);
            }
            sq[0] += (c[0] - self.c[k][0]).powi(2) + (c[1] - self.c[k][1]).powi(2);
            sq[1] += 1.0;
            self.c[k] = c;
        }
        comm.allreduce_sum(&mut sq)?;
        self.rms_move_px = (sq[0] / sq[1].max(1.0)).sqrt();
        Ok(())
    }

    /// The rank's positions at the current centres (plan order): windows and shift ramps
    /// for the backend ([`super::Problem::set_positions`]).
    pub fn geometry<T: Real>(&self) -> Vec<PositionGeom<T>> {
        self.index
            .iter()
            .zip(&self.c)
            .map(|(&j, &c)| PositionGeom::new(j, c, self.m))
            .collect()
    }
}

/// Fraction bits of [`exact_sums`]: each term is rounded to a multiple of 2⁻⁵⁰ of its
/// quantity's largest magnitude (rounded up to a power of 2).
const EXACT_BITS: i32 = 50;
/// Limb width of [`exact_sums`]: terms are split into integers below 2²⁵ (low limb) and the
/// rest (high limb, below 2²⁵ in magnitude), so that the limb sums of up to 2²⁷ positions
/// ([`crate::data::MAX_POSITIONS`] = 2²⁶) stay below 2⁵³ and every f64 addition is exact.
const LIMB_BITS: i32 = 25;

/// Σ over all positions of all ranks of `parts` (one row of K quantities per position of
/// this rank), the same bits whatever the split of the positions over ranks and their
/// order: each term is rounded to a fixed point (2⁻⁵⁰ of its quantity's job-wide largest
/// magnitude, an all-reduced maximum) and the integers are summed in two limbs of exactly
/// representable f64 (one all-reduce). Floating-point sums depend on the grouping, and a
/// last-bit difference in the affine fit must not let a tiled run's positions drift from
/// the single-rank run's (nor flip the sign tests of the affine acceleration).
///
/// Errors: a failed transport.
pub fn exact_sums<const K: usize>(parts: &[[f64; K]], comm: &mut dyn Comm) -> Result<[f64; K]> {
    let mut max = [0.0f64; K];
    for row in parts {
        for (m, v) in max.iter_mut().zip(row) {
            if v.is_finite() {
                *m = m.max(v.abs());
            }
        }
    }
    comm.allreduce_max(&mut max)?;
    let unit: [f64; K] = std::array::from_fn(|k| {
        if max[k] > 0.0 {
            2f64.powi(max[k].log2().ceil() as i32)
        } else {
            1.0
        }
    });
    let (frac, limb) = (2f64.powi(EXACT_BITS), 1i64 << LIMB_BITS);
    let mut limbs = vec![0.0f64; 2 * K];
    for row in parts {
        for k in 0..K {
            let v = if row[k].is_finite() { row[k] } else { 0.0 };
            let q = (v / unit[k] * frac).round() as i64;
            limbs[2 * k] += q.div_euclid(limb) as f64;
            limbs[2 * k + 1] += q.rem_euclid(limb) as f64;
        }
    }
    comm.allreduce_sum(&mut limbs)?;
    Ok(std::array::from_fn(|k| {
        (limbs[2 * k] * limb as f64 + limbs[2 * k + 1]) / frac * unit[k]
    }))
}

/// The solution of the symmetric 3 × 3 system `a` x = `b` by Cramer's rule, or `None` when
/// `a` is singular relative to its scale (|det| ≤ 1e-12 · the product of its diagonal).
fn solve3(a: [[f64; 3]; 3], b: [f64; 3]) -> Option<[f64; 3]> {
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(a);
    let scale = (a[0][0] * a[1][1] * a[2][2]).abs();
    if !(d.abs() > 1e-12 * scale) {
        return None;
    }
    let col = |i: usize| {
        let mut m = a;
        for r in 0..3 {
            m[r][i] = b[r];
        }
        det(m) / d
    };
    Some([col(0), col(1), col(2)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::threads::run_threads;

    #[test]
    fn exact_sums_do_not_depend_on_the_split_over_ranks() {
        // terms of very different sizes, whose f64 sum depends on the order
        let terms: Vec<[f64; 2]> = (0..1000)
            .map(|j| {
                [
                    1e6 * ((j * 37 % 101) as f64 - 50.0) + 1e-7 * j as f64,
                    0.1 * (j as f64).sin(),
                ]
            })
            .collect();
        let run = |ranks: usize| {
            run_threads(ranks, |mut comm| {
                let mine: Vec<[f64; 2]> = terms
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| j % ranks == comm.rank())
                    .map(|(_, t)| *t)
                    .rev()
                    .collect();
                exact_sums(&mine, &mut comm)
            })
            .unwrap()
        };
        let one = run(1)[0];
        for ranks in [2, 3, 7] {
            for r in run(ranks) {
                assert_eq!(r.map(f64::to_bits), one.map(f64::to_bits), "{ranks} ranks");
            }
        }
        let plain: f64 = terms.iter().map(|t| t[1]).sum();
        assert!((one[1] - plain).abs() < 1e-12, "{} vs {plain}", one[1]);
        let plain0: f64 = terms.iter().map(|t| t[0]).sum();
        assert!(
            (one[0] - plain0).abs() < 1e-6 * 5e7,
            "{} vs {plain0}",
            one[0]
        );
    }

    #[test]
    fn solve3_solves_and_refuses_singular() {
        let a = [[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]];
        let x = [0.3, -1.2, 2.5];
        let b: [f64; 3] = std::array::from_fn(|r| (0..3).map(|c| a[r][c] * x[c]).sum());
        let got = solve3(a, b).unwrap();
        for i in 0..3 {
            assert!((got[i] - x[i]).abs() < 1e-12, "{got:?}");
        }
        // a line scan: x_x ≡ 0, so Σx_x = Σx_y x_x = Σx_x² = 0
        assert!(solve3(
            [[5.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 0.0]],
            [1.0, 2.0, 0.0]
        )
        .is_none());
    }

    /// Gradients that point every position to a target t_j = c⁰_j + A x_j + s + r_j (a
    /// scan distortion A, a global shift s, small random errors r_j) as a quadratic loss
    /// with unit curvature: the refiner moves the positions to the target without the
    /// shift, on one rank and split over three ranks alike.
    #[test]
    fn refiner_recovers_an_affine_distortion_and_drops_the_shift() {
        let cfg = PositionCorrectionConfig {
            enabled: true,
            max_step_px: 0.5,
            max_shift_px: 8.0,
            max_error_px: 1.0,
            ..Default::default()
        };
        let m = 16;
        let mut c0 = Vec::new();
        for iy in 0..7 {
            for ix in 0..6 {
                c0.push([20.0 + 2.1 * iy as f64, 20.0 + 2.1 * ix as f64]);
            }
        }
        let mean = [
            c0.iter().map(|c| c[0]).sum::<f64>() / c0.len() as f64,
            c0.iter().map(|c| c[1]).sum::<f64>() / c0.len() as f64,
        ];
        let a = [0.02, -0.0175, 0.0175, 0.02]; // 2 % scale, 1° rotation
        let target: Vec<[f64; 2]> = c0
            .iter()
            .enumerate()
            .map(|(j, c)| {
                let x = [c[0] - mean[0], c[1] - mean[1]];
                let r = [
                    0.3 * ((j * 7 % 11) as f64 / 11.0 - 0.5),
                    0.3 * ((j * 5 % 13) as f64 / 13.0 - 0.5),
                ];
                [
                    c[0] + a[0] * x[0] + a[1] * x[1] + 1.5 + r[0],
                    c[1] + a[2] * x[0] + a[3] * x[1] - 0.7 + r[1],
                ]
            })
            .collect();
        let run = |ranks: usize| {
            let out = run_threads(ranks, |mut comm| {
                let mine: Vec<usize> = (0..c0.len()).filter(|j| j % ranks == comm.rank()).collect();
                let pos: Vec<PositionGeom<f32>> = mine
                    .iter()
                    .map(|&j| PositionGeom::new(j, c0[j], m))
                    .collect();
                let mut r = Refiner::new(&cfg, NoiseModel::Amplitude, &pos, m, &mut comm)?;
                for _ in 0..40 {
                    // L = Σ (c − target)² / 2 per axis: ∂L/∂c = c − target, curvature 1/2κ
                    let g: Vec<PositionGradient> = r
                        .indices()
                        .iter()
                        .zip(r.centres())
                        .map(|(&j, c)| PositionGradient {
                            index: j,
                            grad: [c[0] - target[j][0], c[1] - target[j][1]],
                            curv: [0.5, 0.5],
                        })
                        .collect();
                    r.update(&g, &mut comm)?;
                }
                Ok(r.indices()
                    .iter()
                    .copied()
                    .zip(r.centres().iter().copied())
                    .collect::<Vec<_>>())
            })
            .unwrap();
            let mut all = vec![[0.0; 2]; c0.len()];
            for (j, c) in out.into_iter().flatten() {
                all[j] = c;
            }
            all
        };
        let one = run(1);
        let three = run(3);
        let mean_t = [
            target.iter().map(|c| c[0]).sum::<f64>() / c0.len() as f64,
            target.iter().map(|c| c[1]).sum::<f64>() / c0.len() as f64,
        ];
        for j in 0..c0.len() {
            for a in 0..2 {
                // the target without its mean shift (the shift is the object's)
                let want = target[j][a] - mean_t[a] + mean[a];
                assert!(
                    (one[j][a] - want).abs() < 1e-9,
                    "position {j} axis {a}: {} vs {want}",
                    one[j][a]
                );
                assert!(
                    (one[j][a] - three[j][a]).abs() < 1e-9,
                    "tilings differ at position {j}"
                );
            }
        }
    }
}
