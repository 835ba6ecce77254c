//! Solvers. An engine owns the iteration: it asks a backend for sums of per-position
//! contributions and turns them into updates of the object and probe. All engines share the
//! forward model (`backend`), the tiles and their halo exchange ([`exchange`]) and the
//! communicators (`comm`):
//!
//! | engine | file | update |
//! |---|---|---|
//! | `gd` | [`gd`] | preconditioned gradient descent (Fisher scoring) |
//! | `dm` | [`dm`] | difference map on exit waves, overlap projection as a ratio of sums |
//! | `mlcg` | [`mlcg`] | maximum likelihood, nonlinear conjugate gradients + line search |
//! | `epie`, `rpie` | [`pie`] | sequential per position inside a tile; tiles merge once per iteration |
//!
//! gd, dm and mlcg use only sums over positions (all-reduced scalars for mlcg), so a tiled
//! run equals the 1-rank run; epie/rpie depend on the tiling (docs/algorithm.md §9).

pub mod dm;
pub mod exchange;
pub mod gd;
pub mod mlcg;
pub mod pie;

use crate::backend::cpu::Kernel;
use crate::comm::Comm;
use crate::config::{Config, Engine, MlcgConfig, Stage};
use crate::error::Result;
use crate::physics::fft::Real;
use crate::physics::model::{Field, PositionGeom};
use crate::tiling::RankPlan;
use num_complex::Complex;

/// The unknowns on one rank: object on its field and the (replicated) probe modes.
#[derive(Debug, Clone, PartialEq)]
pub struct State<T> {
    /// Object on the rank's field (tile + halo; the whole object on one rank).
    pub object: Field<Complex<T>>,
    /// Probe modes [K, M, M], real space, centred at [M/2, M/2].
    pub probe: Vec<Complex<T>>,
}

/// What engines keep between iterations besides the object and probe: plain public data,
/// so that a checkpoint can save and restore it bit for bit. Reset (to its `Default`) when a
/// schedule moves to a different engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineState<T> {
    /// Difference map: this rank's exit waves.
    pub dm: dm::DmState<T>,
    /// ML-CG: previous gradient, direction, step.
    pub mlcg: mlcg::CgState,
}

/// How the object-sized sums of the ranks are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decomposition {
    /// Tiles with halo exchange (the object and gradient are split).
    Tiled,
    /// Every rank holds the whole object; gradients are all-reduced (baseline).
    Replicated,
}

/// What one rank works on: geometry and intensities of its positions (halo positions first,
/// as in its [`RankPlan`]) and the kernel settings.
#[derive(Debug)]
pub struct Problem<T: Real> {
    /// FFT plans, modes, noise model, Poisson floor.
    pub kernel: Kernel<T>,
    /// This rank's positions, in plan order.
    pub positions: Vec<PositionGeom<T>>,
    /// The first `n_halo` of `positions` have windows reaching outside the tile.
    pub n_halo: usize,
    /// Intensities [n, M, M] in the transposed corner-centred layout, same order.
    pub intensities: Vec<f32>,
}

/// A rank's place in the job: its plan, communicator and decomposition.
pub struct Rank<'a> {
    /// Tile, field, transfers.
    pub plan: &'a RankPlan,
    /// Transport.
    pub comm: &'a mut dyn Comm,
    /// Tiled or replicated.
    pub mode: Decomposition,
}

/// What one iteration reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct IterStats {
    /// Loss summed over all positions of all ranks, at the state before the update
    /// (epie/rpie: accumulated during the sweep).
    pub loss: f64,
    /// Whether the probe was updated.
    pub probe_updated: bool,
    /// Seconds computing gradients.
    pub compute_s: f64,
    /// Seconds in sends, receives and collectives that were not hidden behind compute.
    pub wait_s: f64,
}

/// Everything the engines read from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The run's stages (`[[schedule]]` or one stage of `reconstruction.engine`).
    pub stages: Vec<Stage>,
    /// Noise model, probe refinement, batches, step (`[reconstruction]`).
    pub gd: gd::Options,
    /// `[dm] beta`, `gamma`.
    pub dm: [f64; 2],
    /// `[mlcg]`.
    pub mlcg: MlcgConfig,
    /// `[epie]` α, β, γ.
    pub epie: [f64; 3],
    /// `[rpie]` α, β, γ.
    pub rpie: [f64; 3],
}

impl From<&Config> for Settings {
    fn from(c: &Config) -> Self {
        Settings {
            stages: c.stages(),
            gd: gd::Options::from(&c.reconstruction),
            dm: [c.dm.beta, c.dm.gamma],
            mlcg: c.mlcg.clone(),
            epie: c.epie_params(),
            rpie: c.rpie_params(),
        }
    }
}

impl Settings {
    /// Total iterations over all stages.
    pub fn total_iterations(&self) -> usize {
        self.stages.iter().map(|s| s.iterations).sum()
    }

    /// The engine of (0-based, global) iteration `it`; past the end, the last stage's.
    pub fn engine_at(&self, it: usize) -> Engine {
        let mut end = 0;
        for s in &self.stages {
            end += s.iterations;
            if it < end {
                return s.engine;
            }
        }
        self.stages.last().map(|s| s.engine).unwrap_or_default()
    }
}

/// One iteration (global index `iteration`, counted over all stages) of the engine the
/// schedule names for it. The engine state `es` is reset when the engine differs from the
/// previous iteration's, so a resumed run that restores `es` and `iteration` continues bit
/// for bit.
///
/// Errors: a failed peer or transport (naming the peer rank).
pub fn iterate<T: Real>(p: &Problem<T>, s: &mut State<T>, es: &mut EngineState<T>, iteration: usize, set: &Settings, rank: &mut Rank) -> Result<IterStats> {
    let engine = set.engine_at(iteration);
    if iteration > 0 && set.engine_at(iteration - 1) != engine {
        *es = EngineState::default();
    }
    match engine {
        Engine::Gd => gd::iterate(p, s, iteration, &set.gd, rank),
        Engine::Dm => dm::iterate(p, s, &mut es.dm, iteration, &set.gd, set.dm[0], set.dm[1], rank),
        Engine::Mlcg => mlcg::iterate(p, s, &mut es.mlcg, iteration, &set.gd, &set.mlcg, rank),
        Engine::Epie => pie::iterate(p, s, iteration, &set.gd, &pie::Params::epie(set.epie), rank),
        Engine::Rpie => pie::iterate(p, s, iteration, &set.gd, &pie::Params::rpie(set.rpie), rank),
    }
}
