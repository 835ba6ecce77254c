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
//! A rank's persistent state ([`Carry`]) is checkpointed through [`snapshot::Snapshot`].

pub mod axial;
pub mod dm;
pub mod exchange;
pub mod gd;
pub mod mlcg;
pub mod pie;
pub mod positions;
pub mod resident;
pub mod snapshot;

use crate::backend::kernel::{DmStep, Kernel};
use crate::backend::{self, BackendKind, Compute};
use crate::comm::Comm;
use crate::config::{Config, DmConfig, Engine, MlcgConfig, Stage};
use crate::error::Result;
use crate::physics::fft::Real;
use crate::physics::model::{Field, PositionGeom};
use crate::tiling::RankPlan;
use num_complex::Complex;
use snapshot::{find, Element, NamedArray, Snapshot};
use std::sync::Arc;

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
    /// gd with mini-batches: the previous pass's object preconditioner.
    pub gd: gd::GdState,
    /// Difference map: this rank's exit waves.
    pub dm: dm::DmState<T>,
    /// ML-CG: previous gradient, direction, step.
    pub mlcg: mlcg::CgState,
}

/// Everything one rank carries from one iteration to the next: the unknowns and the
/// engines' own state. With the global iteration number it determines the rest of the run,
/// so it is what a checkpoint saves.
#[derive(Debug, Clone, PartialEq)]
pub struct Carry<T> {
    /// Object and probe.
    pub state: State<T>,
    /// gd's mini-batch preconditioner, exit waves (dm), conjugate-gradient memory (mlcg).
    pub engines: EngineState<T>,
}

/// Checkpoint arrays: `object` ([rows, cols] of the rank's field, tile + halo, complex of
/// T; [S, rows, cols] for S > 1 slices), `probe` ([K·M·M]); `exit_waves` ([n·K·M·M], complex of T) once dm has run;
/// `cg_gradient`, `cg_direction` ([tile pixels + K·M·M], complex f64) and `cg_scalars`
/// ([⟨g₋, z₋⟩, step, loss], f64) once mlcg has run; `gd_d_obj` (the layout of `object`,
/// f64) and `gd_d_max` ([1], f64) once gd has run a pass of mini-batches. No engine keeps random numbers, so
/// these arrays and the iteration number determine the rest of the run.
impl<T: Real> Snapshot for Carry<T>
where
    Complex<T>: Element,
{
    fn save(&self) -> Vec<NamedArray> {
        let (s, e) = (&self.state, &self.engines);
        let mut v = vec![
            NamedArray::new("object", &object_dims(&s.object), &s.object.data),
            NamedArray::new("probe", &[s.probe.len()], &s.probe),
        ];
        if !e.dm.exit_waves.is_empty() {
            v.push(NamedArray::new(
                "exit_waves",
                &[e.dm.exit_waves.len()],
                &e.dm.exit_waves,
            ));
        }
        if !e.gd.d_obj.is_empty() {
            v.push(NamedArray::new(
                "gd_d_obj",
                &object_dims(&s.object),
                &e.gd.d_obj,
            ));
            v.push(NamedArray::new("gd_d_max", &[1], &[e.gd.d_max]));
        }
        let cg = &e.mlcg;
        if cg != &mlcg::CgState::default() {
            v.push(NamedArray::new(
                "cg_gradient",
                &[cg.gradient.len()],
                &cg.gradient,
            ));
            v.push(NamedArray::new(
                "cg_direction",
                &[cg.direction.len()],
                &cg.direction,
            ));
            v.push(NamedArray::new(
                "cg_scalars",
                &[3],
                &[cg.gz, cg.step, cg.loss],
            ));
        }
        v
    }
    fn restore(&mut self, arrays: &[NamedArray]) -> Result<()> {
        let s = &mut self.state;
        let object = find(arrays, "object")?.values(&object_dims(&s.object))?;
        let probe = find(arrays, "probe")?.values(&[s.probe.len()])?;
        let mut engines = EngineState::default();
        let len = |name: &str| {
            arrays
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.shape.iter().product::<u64>() as usize)
        };
        if let Some(n) = len("exit_waves") {
            engines.dm.exit_waves = find(arrays, "exit_waves")?.values(&[n])?;
        }
        if len("gd_d_obj").is_some() {
            engines.gd = gd::GdState {
                d_obj: find(arrays, "gd_d_obj")?.values(&object_dims(&s.object))?,
                d_max: find(arrays, "gd_d_max")?.values::<f64>(&[1])?[0],
                resident: false,
            };
        }
        if let (Some(ng), Some(nd)) = (len("cg_gradient"), len("cg_direction")) {
            let c = find(arrays, "cg_scalars")?.values::<f64>(&[3])?;
            engines.mlcg = mlcg::CgState {
                gradient: find(arrays, "cg_gradient")?.values(&[ng])?,
                direction: find(arrays, "cg_direction")?.values(&[nd])?,
                gz: c[0],
                step: c[1],
                loss: c[2],
            };
        }
        s.object.data = object;
        s.probe = probe;
        self.engines = engines;
        Ok(())
    }
}

/// Checkpoint dimensions of a rank's object: [rows, cols], or [S, rows, cols] for S > 1
/// slices.
fn object_dims<V>(o: &Field<V>) -> Vec<usize> {
    match o.planes() {
        1 => o.shape.to_vec(),
        s => vec![s, o.shape[0], o.shape[1]],
    }
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
/// as in its [`RankPlan`]), the kernel settings, and the backend its gradient sums run on.
pub struct Problem<T: Real> {
    /// FFT plans, modes, noise model, Poisson floor.
    pub kernel: Kernel<T>,
    /// This rank's positions, in plan order.
    pub positions: Arc<[PositionGeom<T>]>,
    /// The first `n_halo` of `positions` have windows reaching outside the tile.
    pub n_halo: usize,
    /// Intensities [n, M, M] in the transposed corner-centred layout, same order.
    pub intensities: Arc<[f32]>,
    /// Where every engine's work over positions runs ([`backend::open`]): gradient sums,
    /// dm's exit-wave step and probe sums, the ePIE/rPIE sweep. It shares the positions and
    /// intensities above (CPU) or holds a device copy (GPU).
    pub compute: Box<dyn Compute<T>>,
    /// Weight μ (counts) of the axial regulariser of a multislice object ([`axial`]); 0 =
    /// none (and always for one slice).
    pub axial: f64,
}

impl<T: Real> Problem<T> {
    /// A rank's problem on backend `kind` (`local_rank`: see [`backend::open`]).
    ///
    /// Errors (naming `--backend` / `[parallel] backend`): a GPU backend that cannot run here.
    /// `intensities` as an `Arc` is shared, not copied (a `Vec` is copied once into one).
    pub fn new(
        kernel: Kernel<T>,
        positions: Vec<PositionGeom<T>>,
        n_halo: usize,
        intensities: impl Into<Arc<[f32]>>,
        kind: BackendKind,
        local_rank: Option<usize>,
    ) -> Result<Self> {
        let (positions, intensities): (Arc<[PositionGeom<T>]>, Arc<[f32]>) =
            (positions.into(), intensities.into());
        let compute = backend::open(
            kind,
            &kernel,
            positions.clone(),
            intensities.clone(),
            local_rank,
        )?;
        Ok(Problem {
            kernel,
            positions,
            n_halo,
            intensities,
            compute,
            axial: 0.0,
        })
    }
}

impl<T: Real> Problem<T> {
    /// Move this rank's positions to refined centres ([`positions`]): the same positions in
    /// the same (plan) order, new windows and shift ramps, here and in the backend.
    ///
    /// Errors: a backend that keeps positions fixed, a changed count or order.
    pub fn set_positions(&mut self, positions: Vec<PositionGeom<T>>) -> Result<()> {
        let positions: Arc<[PositionGeom<T>]> = positions.into();
        self.compute.set_positions(positions.clone())?;
        self.positions = positions;
        Ok(())
    }
}

impl<T: Real> std::fmt::Debug for Problem<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Problem")
            .field("positions", &self.positions.len())
            .field("n_halo", &self.n_halo)
            .field("backend", &self.compute.name())
            .finish()
    }
}

/// A rank's place in the job: its plan, communicator and decomposition.
pub struct Rank<'a> {
    /// Tile, field, transfers.
    pub plan: &'a RankPlan,
    /// Transport.
    pub comm: &'a mut dyn Comm,
    /// Tiled or replicated.
    pub mode: Decomposition,
    /// Post the halo sends before computing the interior positions (true, the method) or
    /// only after all positions (false: no overlap, to measure what the overlap hides).
    pub overlap: bool,
}

impl<'a> Rank<'a> {
    /// A rank with overlapped halo exchange.
    pub fn new(plan: &'a RankPlan, comm: &'a mut dyn Comm, mode: Decomposition) -> Self {
        Rank {
            plan,
            comm,
            mode,
            overlap: true,
        }
    }
}

/// What one iteration reports.
#[derive(Debug, Clone, Default)]
pub struct IterStats {
    /// Loss summed over all positions of all ranks, at the state before the update
    /// (epie/rpie: accumulated during the sweep).
    pub loss: f64,
    /// This rank's positions' loss gradients with respect to their centres, from the
    /// iteration's gradient pass(es), when `[position_correction]` is active at this
    /// iteration (gd, mlcg); empty otherwise. [`positions::Refiner`] turns them into moves.
    pub positions: Vec<crate::backend::kernel::PositionGradient>,
    /// Whether the probe was updated.
    pub probe_updated: bool,
    /// Seconds computing: kernels over positions and the updates.
    pub compute_s: f64,
    /// Seconds of communication work: packing and posting halo messages, adding received
    /// halo sums, writing refreshed halo values.
    pub comm_s: f64,
    /// Seconds blocked: in receives, collectives and send completion (load imbalance and
    /// message time not hidden behind compute).
    pub wait_s: f64,
}

/// Everything the engines read from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The run's stages (`[[schedule]]` or one stage of `reconstruction.engine`).
    pub stages: Vec<Stage>,
    /// Noise model, probe refinement, batches, step (`[reconstruction]`).
    pub gd: gd::Options,
    /// `[dm]`.
    pub dm: DmConfig,
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
            gd: gd::Options {
                positions_from: c
                    .position_correction
                    .enabled
                    .then_some(c.position_correction.start_iteration),
                ..gd::Options::from(&c.reconstruction)
            },
            dm: c.dm.clone(),
            mlcg: c.mlcg.clone(),
            epie: c.epie_params(),
            rpie: c.rpie_params(),
        }
    }
}

impl Settings {
    /// Total iterations over all stages.
    pub fn total_iterations(&self) -> usize {
        self.stages
            .iter()
            .fold(0usize, |a, s| a.saturating_add(s.iterations))
    }

    /// The schedule in words, recorded in checkpoints: the engine's name for one stage
    /// (`gd`), else `dm:20,mlcg:30` (engine:iterations per stage).
    pub fn label(&self) -> String {
        match self.stages.as_slice() {
            [one] => one.engine.name().to_string(),
            all => all
                .iter()
                .map(|s| format!("{}:{}", s.engine.name(), s.iterations))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// The (0-based) stage of global iteration `it`; past the end, the last stage.
    pub fn stage_at(&self, it: usize) -> usize {
        let mut end = 0;
        for (i, s) in self.stages.iter().enumerate() {
            end += s.iterations;
            if it < end {
                return i;
            }
        }
        self.stages.len().saturating_sub(1)
    }

    /// Iterations from `it` (0-based, global) to the end of its stage, `it` included (≥ 1;
    /// past the end of the schedule, 1).
    pub fn left_in_stage(&self, it: usize) -> usize {
        let end: usize = self
            .stages
            .iter()
            .take(self.stage_at(it) + 1)
            .map(|s| s.iterations)
            .sum();
        end.saturating_sub(it).max(1)
    }

    /// Whether iteration `it` is one of the error-reduction iterations that end a
    /// difference-map stage (its last `[dm] er_iterations`, docs/algorithm.md §7).
    pub fn error_reduction_at(&self, it: usize) -> bool {
        self.engine_at(it) == Engine::Dm && self.left_in_stage(it) <= self.dm.er_iterations
    }

    /// What iteration `it` runs, in words: its engine's name, or "dm error reduction".
    pub fn step_name(&self, it: usize) -> &'static str {
        if self.error_reduction_at(it) {
            "dm error reduction"
        } else {
            self.engine_at(it).name()
        }
    }

    /// Whether iteration `it` starts a stage or dm's error-reduction finish (for the log).
    pub fn starts_step(&self, it: usize) -> bool {
        it == 0
            || self.stage_at(it) != self.stage_at(it - 1)
            || self.error_reduction_at(it) != self.error_reduction_at(it - 1)
    }

    /// The engine of (0-based, global) iteration `it`; past the end, the last stage's.
    pub fn engine_at(&self, it: usize) -> Engine {
        self.stages
            .get(self.stage_at(it))
            .map(|s| s.engine)
            .unwrap_or_default()
    }
}

/// One iteration (global index `iteration`, counted over all stages) of the engine the
/// schedule names for it. The engine state `es` is reset when the engine differs from the
/// previous iteration's, so a resumed run that restores `es` and `iteration` continues bit
/// for bit.
///
/// Errors: a failed peer or transport (naming the peer rank).
pub fn iterate<T: Real>(
    p: &Problem<T>,
    s: &mut State<T>,
    es: &mut EngineState<T>,
    iteration: usize,
    set: &Settings,
    rank: &mut Rank,
) -> Result<IterStats> {
    let engine = set.engine_at(iteration);
    if iteration > 0 && set.engine_at(iteration - 1) != engine {
        // the next engine works on the host object
        resident::sync_all(p, s, es)?;
        *es = EngineState::default();
    }
    match engine {
        Engine::Gd => gd::iterate(p, s, &mut es.gd, iteration, &set.gd, rank),
        Engine::Dm => {
            let step = DmStep {
                beta: set.dm.beta,
                gamma: set.dm.gamma,
                error_reduction: set.error_reduction_at(iteration),
            };
            dm::iterate(p, s, &mut es.dm, iteration, &set.gd, step, rank)
        }
        Engine::Mlcg => mlcg::iterate(p, s, &mut es.mlcg, iteration, &set.gd, &set.mlcg, rank),
        Engine::Epie => pie::iterate(p, s, iteration, &set.gd, &pie::Params::epie(set.epie), rank),
        Engine::Rpie => pie::iterate(p, s, iteration, &set.gd, &pie::Params::rpie(set.rpie), rank),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_and_error_reduction_iterations() {
        let c = Config::from_toml(
            "[data]\nfile = \"x.h5\"\nintensities = \"/i\"\npositions = \"/p\"\n[dm]\ner_iterations = 2\n\
             [[schedule]]\nengine = \"dm\"\niterations = 3\n[[schedule]]\nengine = \"mlcg\"\niterations = 2\n[[schedule]]\nengine = \"dm\"\niterations = 4\n",
            &[],
        )
        .unwrap();
        let set = Settings::from(&c);
        assert_eq!(set.total_iterations(), 9);
        assert_eq!(set.label(), "dm:3,mlcg:2,dm:4");
        let stage: Vec<usize> = (0..10).map(|i| set.stage_at(i)).collect();
        assert_eq!(stage, [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]);
        let left: Vec<usize> = (0..10).map(|i| set.left_in_stage(i)).collect();
        assert_eq!(left, [3, 2, 1, 2, 1, 4, 3, 2, 1, 1]);
        // the last 2 iterations of each dm stage, never an mlcg one
        let er: Vec<bool> = (0..9).map(|i| set.error_reduction_at(i)).collect();
        assert_eq!(
            er,
            [false, true, true, false, false, false, false, true, true]
        );
        let starts: Vec<usize> = (0..9).filter(|&i| set.starts_step(i)).collect();
        assert_eq!(starts, [0, 1, 3, 5, 7]);
        let names: Vec<&str> = starts.iter().map(|&i| set.step_name(i)).collect();
        assert_eq!(
            names,
            [
                "dm",
                "dm error reduction",
                "mlcg",
                "dm",
                "dm error reduction"
            ]
        );
    }
}
