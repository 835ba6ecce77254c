//! The reconstruction driver: one job's set-up, tile plan, resume, iteration loop,
//! checkpoints and metrics, as library types that the CLI (`ptytile reconstruct`), the
//! tests and the benches share.
//!
//! [`run`]/[`run_with`] run a whole job: ranks are threads of this process
//! (`[parallel] ranks`) unless the program was started by an MPI launcher (mpirun, srun,
//! jsrun), in which case each process is one MPI rank. Every rank reads only its own
//! diffraction patterns (tiled mode); rank 0 gathers the owned tiles and returns the
//! assembled result.
//!
//! [`RankRun`] is one rank's run as a value: [`RankRun::new`] sets it up (and resumes),
//! [`RankRun::step`] runs one iteration, [`RankRun::checkpoint`] saves the state at the
//! current iteration boundary, [`RankRun::finish`] gathers the result. A caller that
//! interleaves other work with the iterations (a live reconstruction) drives these
//! itself; [`RankRun::run`] is the plain loop with checkpoints and stop requests.
//!
//! Checkpoints (`[checkpoint]`, docs/format.md): after every `checkpoint.every` iterations,
//! and at the first iteration boundary after SIGTERM or SIGUSR1 ([`StopFlags`]), every rank
//! saves its engine state and the loss history ([`crate::output::checkpoint::save`]); after
//! SIGTERM the run then stops ([`Outcome::Stopped`]). A run started with a checkpoint
//! directory ([`RunOptions::resume`]) continues from it and, every engine being
//! deterministic, ends with the same object, probe and loss bits as the uninterrupted run.
//!
//! Module order: the driver sits above the engines and the output (it uses both); only the
//! CLI sits above it.

pub mod figures;
pub mod job;
pub mod live;
pub mod setup;
pub mod stop;

pub use figures::{peak_rss_bytes, RankFigures};
pub use job::{check_same_job, job_identity};
pub use setup::{
    available_memory, check_memory, job_plan, memory_estimate, rank_bytes, scan_density, selection,
    setup,
};
pub use stop::StopFlags;

use crate::comm::{self, Comm, CommStats};
use crate::config::{Config, ParallelMode};
use crate::data::select::Selection;
use crate::data::DataFile;
use crate::engine::positions::Refiner;
use crate::engine::snapshot::{NamedArray, Snapshot};
use crate::engine::{self, gd, Carry, Decomposition, EngineState, Problem, Rank, Settings};
use crate::error::{Error, Result};
use crate::output::checkpoint::{self, Job, RankSnapshot};
use crate::output::ReconResult;
use crate::physics::model::Field;
use crate::tiling::TilePlan;
use num_complex::Complex32;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;
use xxhash_rust::xxh3::xxh3_64;

/// Per-iteration callback on rank 0: (iteration, loss per pattern, seconds, positions).
pub type Progress<'a> = &'a (dyn Fn(usize, f64, f64, usize) + Sync);

/// How a run ended.
// one value per run: boxing the result would only add an allocation
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome {
    /// Every iteration done: the result on the process holding rank 0 (None elsewhere
    /// under MPI).
    Finished(Option<ReconResult>),
    /// Stopped on request (SIGTERM) after `iteration` completed iterations, whose
    /// checkpoint is complete in `dir`.
    Stopped {
        /// Completed iterations.
        iteration: usize,
        /// The checkpoint directory.
        dir: PathBuf,
    },
}

/// What a run needs beyond the config.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunOptions<'a> {
    /// Continue from the checkpoint in this directory (`--resume DIR`).
    pub resume: Option<&'a Path>,
    /// Checkpoint/stop requests, read at every iteration boundary (see [`StopFlags`]).
    pub signals: Option<&'a StopFlags>,
}

/// Run the reconstruction described by `cfg` on every rank of this job; returns the result
/// on the process holding rank 0 (None elsewhere under MPI). Periodic checkpoints are
/// written as configured; no resume, no signals.
pub fn run(cfg: &Config, progress: Progress) -> Result<Option<ReconResult>> {
    match run_with(cfg, RunOptions::default(), progress)? {
        Outcome::Finished(r) => Ok(r),
        Outcome::Stopped { iteration, .. } => Err(Error::new(
            "reconstruction",
            format!("stopped after iteration {iteration}"),
        )),
    }
}

/// [`run`], resuming from a checkpoint and/or obeying stop requests as `opts` says.
///
/// Errors: those of [`run_rank`]; with `opts.resume`, a missing or unreadable checkpoint
/// or one written by another rank count (checked before any rank starts).
pub fn run_with(cfg: &Config, opts: RunOptions, progress: Progress) -> Result<Outcome> {
    let launch = comm::launcher_env().filter(|info| info.size > 1);
    if let Some(dir) = opts.resume {
        let m = checkpoint::read_manifest(dir)?;
        checkpoint::check_ranks(
            dir,
            &m,
            launch.as_ref().map_or(cfg.parallel.ranks, |l| l.size),
        )?;
    }
    match launch {
        Some(_) => {
            let mut c = comm::MpiComm::init()?;
            match check_same_job(cfg, &mut c).and_then(|_| run_rank(cfg, &mut c, opts, progress)) {
                Ok(r) => Ok(r),
                Err(e) => {
                    eprintln!("error: rank {}: {e}", c.rank());
                    c.abort(crate::error::EXIT_USAGE)
                }
            }
        }
        None => {
            // one tile plan for all thread ranks of this process (each rank computing its own
            // would hold R plans of O(R) each: 6.5 GB at 1024 ranks, docs/scaling.md)
            let df = DataFile::open(cfg)?;
            let sel = selection(cfg, &df, None)?;
            let plan = job_plan(cfg, &df, cfg.parallel.ranks, &sel)?;
            check_memory(
                cfg,
                &df,
                memory_estimate(cfg, &df, &plan.ranks.iter().collect::<Vec<_>>(), true),
            )?;
            let mut results = comm::run_threads(cfg.parallel.ranks, |mut c| {
                RankRun::new(cfg, &mut c, opts.resume, Some((&plan, &sel)))?
                    .run(opts.signals, progress)
            })?;
            Ok(results.swap_remove(0))
        }
    }
}

/// One rank's whole run (see the module docs for checkpoints and resuming).
///
/// Errors: those of [`RankRun::new`], [`RankRun::step`], [`RankRun::checkpoint`] and
/// [`RankRun::finish`].
pub fn run_rank(
    cfg: &Config,
    c: &mut dyn Comm,
    ro: RunOptions,
    progress: Progress,
) -> Result<Outcome> {
    RankRun::new(cfg, c, ro.resume, None)?.run(ro.signals, progress)
}

/// What one iteration of [`RankRun::step`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The (global, 0-based) iteration that ran.
    pub iteration: usize,
    /// The job's loss per used pattern after it (the same on every rank).
    pub loss: f64,
    /// Wall seconds of the iteration on this rank.
    pub seconds: f64,
}

/// One rank's reconstruction: its data, tile, problem, engine state and refined
/// positions, the loss history and the timing of the iterations run so far.
///
/// Every method that communicates is collective: all ranks of the job call it in the same
/// order.
pub struct RankRun<'a> {
    cfg: &'a Config,
    comm: &'a mut dyn Comm,
    df: DataFile,
    plan: Cow<'a, TilePlan>,
    sel: Cow<'a, Selection>,
    problem: Problem<f32>,
    carry: Carry<f32>,
    refiner: Option<Refiner>,
    settings: Settings,
    mode: Decomposition,
    label: String,
    job: Job,
    /// XXH3-64 of the rank's patterns, computed when a checkpoint is first read or written.
    data_xxh3: Option<u64>,
    /// The iteration the run started from (0, or the checkpoint's) and the next one.
    start: usize,
    next: usize,
    /// Loss per used pattern of every completed iteration (from 0, resumed ones included).
    loss: Vec<f64>,
    /// Wall seconds and [compute, comm, wait] seconds of every iteration run here.
    iter_s: Vec<f64>,
    split: Vec<[f64; 3]>,
    /// Start of the iteration loop and the rank's traffic counters then.
    t0: Instant,
    stats0: CommStats,
    /// Bytes of the rank's patterns and of its field buffers ([`rank_bytes`]).
    bytes: (u64, u64),
    resumed_from: Option<PathBuf>,
}

impl<'a> RankRun<'a> {
    /// Set up this rank of the job: open the data, plan the tiles (or take `shared`, the
    /// plan and pattern selection computed once for all thread ranks of a process), check
    /// the memory, form the problem and the initial object and probe ([`setup`]), and with
    /// `resume` load this rank's part of that checkpoint.
    ///
    /// Errors (one line naming the file, dataset or option): unreadable data, a plan the
    /// object cannot hold, too little memory, a checkpoint of another job or data.
    pub fn new(
        cfg: &'a Config,
        c: &'a mut dyn Comm,
        resume: Option<&Path>,
        shared: Option<(&'a TilePlan, &'a Selection)>,
    ) -> Result<Self> {
        let df = DataFile::open(cfg)?;
        let (plan, sel) = match shared {
            Some((p, s)) if p.n_ranks() == c.size() => (Cow::Borrowed(p), Cow::Borrowed(s)),
            _ => {
                let s = selection(cfg, &df, Some(&mut *c))?;
                let p = job_plan(cfg, &df, c.size(), &s)?;
                (Cow::Owned(p), Cow::Owned(s))
            }
        };
        if matches!(plan, Cow::Owned(_)) {
            // one process per rank (MPI): this rank's own estimate
            let rp = &plan.ranks[c.rank()];
            check_memory(cfg, &df, memory_estimate(cfg, &df, &[rp], c.rank() == 0))?;
        }
        Self::build(cfg, c, df, plan, sel, resume, None)
    }

    /// A rank's run over `df` with a given plan and pattern selection (a live
    /// reconstruction's data so far), starting from `initial` (the object on this rank's
    /// field and the probe, e.g. of an earlier run over fewer patterns) instead of the
    /// configured initial object and probe; no resume. The memory is not checked here.
    ///
    /// Errors: those of [`RankRun::new`]; an `initial` state of another field or probe size
    /// (naming `reconstruction`).
    pub fn with_data(
        cfg: &'a Config,
        c: &'a mut dyn Comm,
        df: DataFile,
        plan: TilePlan,
        sel: Selection,
        initial: Option<engine::State<f32>>,
    ) -> Result<Self> {
        Self::build(cfg, c, df, Cow::Owned(plan), Cow::Owned(sel), None, initial)
    }

    fn build(
        cfg: &'a Config,
        c: &'a mut dyn Comm,
        df: DataFile,
        plan: Cow<'a, TilePlan>,
        sel: Cow<'a, Selection>,
        resume: Option<&Path>,
        initial: Option<engine::State<f32>>,
    ) -> Result<Self> {
        let rp = &plan.ranks[c.rank()];
        let (n_used, excluded) = (sel.n_used(), sel.excluded());
        if c.rank() == 0 {
            tracing::info!(
                "{}: {} patterns of {}x{}, object {}x{} px of {:.4} Å, λ = {:.5} Å, {} rank(s), tiles {}x{}",
                df.path.display(), df.n, df.m, df.m, df.object_shape[0], df.object_shape[1],
                df.experiment.pixel_size_m[0] * 1e10, df.experiment.wavelength_m * 1e10, c.size(), plan.tiles[0], plan.tiles[1]
            );
            if !excluded.is_empty() {
                tracing::warn!(
                    "{}: {} of {} patterns left out of the likelihood: {} with total counts far from the scan's median {}, {} by data.exclude {}",
                    df.intensities_what, excluded.len(), df.n, sel.outliers.len(), setup::first_indices(&sel.outliers), sel.manual.len(), setup::first_indices(&sel.manual)
                );
            }
            if let Some(s) = cfg.data.subset {
                tracing::info!("data.subset = {s:?}: {n_used} of {} patterns used", df.n);
            }
        }
        let bytes = rank_bytes(cfg, &df, rp);
        tracing::info!(
            "rank {}: {} positions, {} measurement bytes, field {}x{} ({} object/gradient bytes), {} halo peers",
            c.rank(), rp.positions.len(), bytes.0, rp.field.shape()[0], rp.field.shape()[1], bytes.1, rp.sends.len()
        );
        let (mut problem, mut state) = setup(cfg, &df, rp, c)?;
        if let Some(init) = initial {
            let same = init.object.origin == state.object.origin
                && init.object.shape == state.object.shape
                && init.object.data.len() == state.object.data.len()
                && init.probe.len() == state.probe.len();
            if !same {
                return Err(Error::new(
                    "reconstruction",
                    format!(
                        "rank {}: the state carried over does not fit this rank's field and probe",
                        rp.rank
                    ),
                ));
            }
            state = init;
        }
        // refined scan positions ([position_correction]; collective set-up)
        let pc = &cfg.position_correction;
        let mut refiner = match pc.enabled {
            true => Some(Refiner::new(
                pc,
                cfg.reconstruction.noise_model,
                &problem.positions,
                df.m,
                &mut *c,
            )?),
            false => None,
        };
        let mut carry = Carry {
            state,
            engines: EngineState::default(),
        };
        let settings = Settings::from(cfg);
        let iterations = settings.total_iterations();
        let mode = match cfg.parallel.mode {
            ParallelMode::Tiled => Decomposition::Tiled,
            ParallelMode::Replicated => Decomposition::Replicated,
        };
        let label = settings.label();
        let job = job_identity(cfg, &df, &plan, &label)?;
        let mut data_xxh3 = None;
        let (start, loss) = match resume {
            Some(dir) => {
                let hash = xxh3_64(bytemuck::cast_slice(&problem.intensities));
                data_xxh3 = Some(hash);
                let (done, loss, arrays) =
                    job::resume(dir, &job, rp, hash, iterations, &mut carry)?;
                if let Some(r) = refiner.as_mut() {
                    // refined positions (absent when no update had run yet: the file's)
                    if let Some(a) = arrays.iter().find(|a| a.name == "positions_px") {
                        r.restore(
                            &a.values::<f64>(&[problem.positions.len(), 2])?,
                            &dir.display().to_string(),
                        )?;
                        problem.set_positions(r.geometry())?;
                    }
                    if let Some(a) = arrays.iter().find(|a| a.name == "position_affine_rates") {
                        r.restore_rates(&a.values::<f64>(&[8])?, &dir.display().to_string())?;
                    }
                }
                (done, loss)
            }
            None => (0, Vec::with_capacity(iterations)),
        };
        let exit_len = problem.positions.len() * problem.kernel.modes * df.m * df.m;
        if !carry.engines.dm.exit_waves.is_empty() && carry.engines.dm.exit_waves.len() != exit_len
        {
            let dir = resume.unwrap_or(Path::new("")).display().to_string();
            return Err(Error::new(
                dir,
                format!(
                    "rank {}'s exit waves do not match its {} positions",
                    rp.rank,
                    problem.positions.len()
                ),
            ));
        }
        if start > 0 && c.rank() == 0 {
            tracing::info!(
                "resuming from {} after iteration {start}",
                resume.unwrap_or(Path::new("")).display()
            );
        }
        let stats0 = c.stats();
        Ok(RankRun {
            cfg,
            comm: c,
            df,
            plan,
            sel,
            problem,
            carry,
            refiner,
            settings,
            mode,
            label,
            job,
            data_xxh3,
            start,
            next: start,
            loss,
            iter_s: Vec::with_capacity(iterations),
            split: Vec::with_capacity(iterations),
            t0: Instant::now(),
            stats0,
            bytes,
            resumed_from: resume.map(Path::to_path_buf),
        })
    }

    /// The next iteration to run (0-based; the completed ones before it).
    pub fn next_iteration(&self) -> usize {
        self.next
    }

    /// All iterations of the job (the schedule's total).
    pub fn iterations(&self) -> usize {
        self.settings.total_iterations()
    }

    /// Whether every iteration has run.
    pub fn is_done(&self) -> bool {
        self.next >= self.iterations()
    }

    /// Loss per used pattern of every completed iteration.
    pub fn loss(&self) -> &[f64] {
        &self.loss
    }

    /// This rank's problem (positions, patterns, kernel) and current object and probe.
    pub fn problem(&self) -> &Problem<f32> {
        &self.problem
    }

    /// This rank's current object (its field: tile + halo) and probe (copied back from
    /// the backend first where it keeps the object: [`engine::resident::sync`]).
    ///
    /// Errors: a device failure.
    pub fn state(&mut self) -> Result<&engine::State<f32>> {
        self.sync()?;
        Ok(&self.carry.state)
    }

    /// Copy a backend-resident object back into the host state ([`engine::resident::sync`]).
    fn sync(&mut self) -> Result<()> {
        let c = &mut self.carry;
        engine::resident::sync_all(&self.problem, &mut c.state, &mut c.engines)
    }

    /// This rank's object and probe after the iterations run so far, ending the run (the
    /// state a live reconstruction carries into its next run over more patterns).
    ///
    /// Errors: a device failure while copying a backend-resident object back.
    pub fn into_state(mut self) -> Result<engine::State<f32>> {
        self.sync()?;
        Ok(self.carry.state)
    }

    /// This rank's communicator.
    pub fn comm(&mut self) -> &mut dyn Comm {
        &mut *self.comm
    }

    /// Run the next iteration on this rank (collective): the scheduled engine's update,
    /// then, where `[position_correction]` says so, the refined positions; `progress` is
    /// called on rank 0.
    ///
    /// Errors: a failed peer, transport or backend; a loss that is not finite (naming
    /// `reconstruction`); no iteration left.
    pub fn step(&mut self, progress: Progress) -> Result<StepReport> {
        let it = self.next;
        if it >= self.iterations() {
            return Err(Error::new(
                "reconstruction.iterations",
                format!("all {} iterations have run", self.iterations()),
            ));
        }
        let rp = &self.plan.ranks[self.comm.rank()];
        let mut rank = Rank {
            plan: rp,
            comm: &mut *self.comm,
            mode: self.mode,
            overlap: self.cfg.parallel.overlap,
        };
        if rank.comm.rank() == 0 && (it == self.start || self.settings.starts_step(it)) {
            tracing::info!("from iteration {it}: {}", self.settings.step_name(it));
        }
        let t = Instant::now();
        let st = engine::iterate(
            &self.problem,
            &mut self.carry.state,
            &mut self.carry.engines,
            it,
            &self.settings,
            &mut rank,
        )?;
        let pc = &self.cfg.position_correction;
        if let Some(r) = self.refiner.as_mut().filter(|_| pc.at(it)) {
            // the positions move by the gradients of this iteration's pass; the next
            // iteration sees them
            r.update(&st.positions, &mut *rank.comm)?;
            self.problem.set_positions(r.geometry())?;
            if rank.comm.rank() == 0 {
                let b = r.affine;
                tracing::debug!("iteration {it}: positions moved {:.4} px RMS; affine part [[{:.5}, {:.5}], [{:.5}, {:.5}]]", r.rms_move_px, b[0], b[1], b[2], b[3]);
            }
        }
        let n_used = self.sel.n_used();
        let l = st.loss / n_used.max(1) as f64;
        if !l.is_finite() {
            return Err(Error::new(
                "reconstruction",
                format!("loss became {l} at iteration {it}"),
            ));
        }
        let seconds = t.elapsed().as_secs_f64();
        self.loss.push(l);
        self.iter_s.push(seconds);
        self.split.push([st.compute_s, st.comm_s, st.wait_s]);
        if rank.comm.rank() == 0 {
            progress(it, l, seconds, n_used);
        }
        self.next = it + 1;
        Ok(StepReport {
            iteration: it,
            loss: l,
            seconds,
        })
    }

    /// Save this rank's state after the completed iterations into the configured
    /// checkpoint directory (collective; [`checkpoint::save`]): the engines' state, the
    /// loss history and the refined positions. Returns the manifest's path.
    ///
    /// Errors: a write failure naming the file; a failed peer or transport.
    pub fn checkpoint(&mut self) -> Result<PathBuf> {
        let t = Instant::now();
        let done = self.next;
        self.sync()?;
        let rp = &self.plan.ranks[self.comm.rank()];
        // dm's exit waves and gd's resident object live in the backend: copy them out
        engine::dm::sync_for_checkpoint(&self.problem, &mut self.carry.engines.dm)?;
        let mut arrays = self.carry.save();
        self.carry.engines.dm.exit_waves = Vec::new();
        arrays.push(NamedArray::new("loss", &[self.loss.len()], &self.loss));
        if let Some(r) = &self.refiner {
            let flat: Vec<f64> = r.centres().iter().flatten().copied().collect();
            arrays.push(NamedArray::new(
                "positions_px",
                &[r.centres().len(), 2],
                &flat,
            ));
            arrays.push(NamedArray::new("position_affine_rates", &[8], &r.rates()));
        }
        let intensities = &self.problem.intensities;
        let data_xxh3 = *self
            .data_xxh3
            .get_or_insert_with(|| xxh3_64(bytemuck::cast_slice(intensities)));
        let snap = RankSnapshot {
            rank: rp.rank as u64,
            iteration: done as u64,
            engine: self.label.clone(),
            stage: self.settings.stage_at(done) as u64,
            fingerprint: self.job.fingerprint(),
            tile: job::rect4(&rp.tile),
            data_xxh3,
            arrays,
        };
        let manifest = checkpoint::save(
            &mut *self.comm,
            &self.cfg.checkpoint_dir(),
            &self.job,
            &snap,
        )?;
        if self.comm.rank() == 0 {
            tracing::info!(
                "checkpoint after iteration {done}: {} ({:.3} s)",
                manifest.display(),
                t.elapsed().as_secs_f64()
            );
        }
        Ok(manifest)
    }

    /// The iteration loop: [`RankRun::step`] until every iteration has run, with a
    /// checkpoint after every `checkpoint.every` iterations and, at the first iteration
    /// boundary after a request in `signals` (all-reduced, so every rank acts at the same
    /// boundary), a checkpoint and possibly a stop; then [`RankRun::finish`].
    ///
    /// Errors: those of the methods it calls.
    pub fn run(mut self, signals: Option<&StopFlags>, progress: Progress) -> Result<Outcome> {
        let every = self.cfg.checkpoint.every;
        // signals wait for the iteration boundary only inside the loop (cli::signals)
        let mut in_loop = stop::InLoop::enter(signals);
        while !self.is_done() {
            self.step(progress)?;
            // iteration boundary: do all ranks agree on a checkpoint or a stop?
            let done = self.next;
            let mut req = [0.0; 2];
            if let Some(sig) = signals {
                req = sig.take();
                self.comm.allreduce_max(&mut req)?;
            }
            let (stop, requested) = (req[0] > 0.0, req[1] > 0.0);
            if stop || requested || (every > 0 && done % every == 0) {
                self.checkpoint()?;
            }
            if stop && !self.is_done() {
                // The ranks agreed to stop: keep absorbing a first SIGTERM. A launcher
                // forwards one signal to every rank at its own pace, and a rank whose copy
                // arrives only now (its signal thread was not scheduled before the
                // all-reduce) must not take it for a second signal and exit before the
                // others finish (mpirun would then kill them).
                in_loop.keep();
                return Ok(Outcome::Stopped {
                    iteration: done,
                    dir: self.cfg.checkpoint_dir(),
                });
            }
        }
        drop(in_loop);
        self.finish().map(Outcome::Finished)
    }

    /// This rank's figures over the iterations run so far, reduced over the job's ranks:
    /// (maximum, sum) of each (collective).
    ///
    /// Errors: a failed peer or transport.
    pub fn figures(&mut self) -> Result<(RankFigures, RankFigures)> {
        let rp = &self.plan.ranks[self.comm.rank()];
        figures::RankFigures::of_loop(self.bytes, &self.split, self.stats0, self.comm.stats(), rp)
            .reduced(&mut *self.comm)
    }

    /// Gather the owned tiles on rank 0 and assemble the result with the run's attributes
    /// (docs/format.md; collective). Returns the result on rank 0, None on the other ranks.
    ///
    /// Errors: a failed peer or transport; a rank's tile of the wrong size.
    pub fn finish(mut self) -> Result<Option<ReconResult>> {
        self.result()
    }

    /// [`RankRun::finish`] without ending the run: the result so far (a live
    /// reconstruction's preview; collective). Returns it on rank 0, None elsewhere.
    ///
    /// Errors: those of [`RankRun::finish`].
    pub fn result(&mut self) -> Result<Option<ReconResult>> {
        let secs = self.t0.elapsed().as_secs_f64();
        self.sync()?;
        let (mx, tot) = self.figures()?;
        let c = &mut *self.comm;
        let rp = &self.plan.ranks[c.rank()];
        let nr = c.size() as f64;
        let skip = usize::from(self.iter_s.len() > 1);
        let mut steady_s = self.iter_s[skip.min(self.iter_s.len())..].to_vec();
        steady_s.sort_by(|a, b| a.total_cmp(b));
        let median_s = steady_s.get(steady_s.len() / 2).copied().unwrap_or(0.0);
        // refined positions on rank 0: (index, y, x) per position of every rank
        let refined = match &self.refiner {
            Some(r) => {
                let words: Vec<f64> = r
                    .indices()
                    .iter()
                    .zip(r.centres())
                    .flat_map(|(&j, c)| [j as f64, c[0], c[1]])
                    .collect();
                c.gather(bytemuck::cast_slice(&words).to_vec())?
            }
            None => None,
        };
        // gather the owned tiles on rank 0
        let tile = gd::extract(&self.carry.state.object, &rp.tile);
        let tiles = c.gather(bytemuck::cast_slice(&tile).to_vec())?;
        let Some(tiles) = tiles else {
            return Ok(None);
        };
        let df = &self.df;
        let mut positions_px = df.centres.clone();
        for bytes in refined.iter().flatten() {
            let words: Vec<f64> = bytemuck::pod_collect_to_vec(bytes);
            for w in words.chunks_exact(3) {
                positions_px[w[0] as usize] = [w[1], w[2]];
            }
        }
        let slices = self.carry.state.object.planes();
        let mut object = Field::stack([0, 0], df.object_shape, slices, Complex32::new(1.0, 0.0));
        for (r, bytes) in tiles.iter().enumerate() {
            let vals: Vec<Complex32> = bytemuck::pod_collect_to_vec(bytes);
            let rect = self.plan.ranks[r].tile;
            if vals.len() != rect.area() * slices {
                return Err(Error::new(format!("rank {r}"), "tile of the wrong size"));
            }
            gd::write_rect(&mut object, &rect, &vals);
        }
        let ran = (self.next - self.start).max(1) as f64;
        let mut attrs = vec![
            ("wall_time_s".into(), secs),
            ("seconds_per_iteration".into(), secs / ran),
            ("wavelength_m".into(), df.experiment.wavelength_m),
            ("ranks".into(), nr),
            ("slices".into(), slices as f64),
            ("tiles_y".into(), self.plan.tiles[0] as f64),
            ("tiles_x".into(), self.plan.tiles[1] as f64),
        ];
        attrs.extend(figures::attributes(&mx, &tot, nr));
        attrs.push(("steady_seconds_per_iteration".into(), median_s));
        let sel = &self.sel;
        attrs.push(("patterns_used".into(), sel.n_used() as f64));
        attrs.push(("excluded_outlier_count".into(), sel.outliers.len() as f64));
        attrs.push(("excluded_manual_count".into(), sel.manual.len() as f64));
        if self.resumed_from.is_some() {
            attrs.push(("resumed_from_iteration".into(), self.start as f64));
        }
        let cfg = self.cfg;
        if slices > 1 {
            attrs.push((
                "slice_thickness_m".into(),
                cfg.reconstruction.slice_thickness_m.unwrap_or(0.0),
            ));
        }
        if let Some(r) = &self.refiner {
            // d = B x: the scan's distortion fitted at the last update (identity + B)
            for (name, v) in ["yy", "yx", "xy", "xx"].iter().zip(r.affine) {
                attrs.push((format!("position_affine_{name}"), v));
            }
            attrs.push((
                "position_margin_px".into(),
                cfg.position_correction.margin_px() as f64,
            ));
            let rms = df
                .centres
                .iter()
                .zip(&positions_px)
                .map(|(a, b)| (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2))
                .sum::<f64>()
                / df.n.max(1) as f64;
            attrs.push(("position_rms_displacement_px".into(), rms.sqrt()));
        }
        Ok(Some(ReconResult {
            object,
            pixel_size_m: df.experiment.pixel_size_m,
            probe: self.carry.state.probe.clone(),
            modes: cfg.reconstruction.probe_modes,
            m: df.m,
            positions_px,
            loss: self.loss.clone(),
            config_toml: cfg.to_toml(),
            attrs,
            excluded: sel.excluded(),
            index_lists: Vec::new(),
        }))
    }
}
