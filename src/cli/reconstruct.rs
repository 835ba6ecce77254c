//! `ptytile reconstruct`: wire data → tiling → comm → engine → output, on every rank.
//!
//! Ranks are threads of this process (`[parallel] ranks`, `--ranks`) unless the program
//! was started by an MPI launcher (mpirun, srun, jsrun), in which case each process is one
//! MPI rank. Every rank reads only its own diffraction patterns (tiled mode); rank 0
//! gathers the owned tiles and returns the assembled result.
//!
//! Checkpoints (`[checkpoint]`, docs/format.md): after every `checkpoint.every` iterations,
//! and at the first iteration boundary after SIGTERM or SIGUSR1, every rank saves its
//! engine state and the loss history ([`crate::output::checkpoint::save`]); after SIGTERM
//! the run then stops ([`Outcome::Stopped`]). A run started with a checkpoint directory
//! ([`RunOptions::resume`]) continues from it and, every engine being deterministic,
//! ends with the same object, probe and loss bits as the uninterrupted run.

use crate::backend::cpu::Kernel;
use crate::cli::signals::StopFlags;
use crate::comm::{self, Comm};
use crate::config::{Config, ParallelMode};
use crate::data::select::{self, Selection};
use crate::data::DataFile;
use crate::engine::positions::Refiner;
use crate::engine::snapshot::{self, NamedArray, Snapshot};
use crate::engine::{self, gd, Carry, Decomposition, EngineState, Problem, Rank, Settings, State};
use crate::error::{Error, Result};
use crate::output::checkpoint::{self, Job, RankSnapshot};
use crate::output::ReconResult;
use crate::physics::fft::Fft2;
use crate::physics::model::{Field, PositionGeom};
use crate::physics::{multislice, probe};
use crate::tiling::{self, RankPlan, TilePlan};
use num_complex::Complex32;
use std::path::{Path, PathBuf};
use std::time::Instant;
use xxhash_rust::xxh3::xxh3_64;

/// Per-iteration callback on rank 0: (iteration, loss per pattern, seconds, positions).
pub type Progress<'a> = &'a (dyn Fn(usize, f64, f64, usize) + Sync);

/// The job's decomposition of the patterns `sel` uses: the tile plan for `ranks` ranks
/// (tiled), or every rank holding the whole object and the used positions j with
/// j mod ranks = rank (replicated). Left-out patterns belong to no rank, so they add nothing
/// to any sum on any tiling (weight 0), and the object grid stays that of all positions.
///
/// Errors: `parallel.tiles` whose product is not the rank count, or that the object cannot hold.
pub fn job_plan(cfg: &Config, df: &DataFile, ranks: usize, sel: &Selection) -> Result<TilePlan> {
    // plan over the used positions, then name them by their indices in the file
    let index: Vec<usize> = (0..df.n).filter(|&j| sel.used[j]).collect();
    let centres: Vec<[f64; 2]> = index.iter().map(|&j| df.centres[j]).collect();
    // room for refined positions ([position_correction]; 0 without)
    let margin = cfg.position_correction.margin_px();
    let renamed = |mut plan: TilePlan| {
        plan.ranks
            .iter_mut()
            .for_each(|r| r.positions.iter_mut().for_each(|j| *j = index[*j]));
        plan
    };
    match cfg.parallel.mode {
        ParallelMode::Tiled => {
            let tiles = cfg
                .parallel
                .tiles
                .unwrap_or_else(|| tiling::tiles_for(ranks, df.object_shape));
            if tiles[0] * tiles[1] != ranks {
                return Err(Error::new(
                    "parallel.tiles",
                    format!(
                        "{}x{} tiles for {ranks} ranks: the product must equal the rank count",
                        tiles[0], tiles[1]
                    ),
                ));
            }
            tiling::plan_with_margin(&centres, df.m, df.object_shape, tiles, margin).map(renamed)
        }
        ParallelMode::Replicated => {
            let whole = renamed(tiling::plan_with_margin(
                &centres,
                df.m,
                df.object_shape,
                [1, 1],
                margin,
            )?);
            let r0 = &whole.ranks[0];
            let ranks = (0..ranks)
                .map(|r| RankPlan {
                    rank: r,
                    tile: r0.tile,
                    field: r0.field,
                    positions: index.iter().copied().filter(|j| j % ranks == r).collect(),
                    n_halo_positions: 0,
                    sends: Vec::new(),
                    recvs: Vec::new(),
                })
                .collect();
            Ok(TilePlan { ranks, ..whole })
        }
    }
}

/// The patterns this job uses ([`select::select`] of `[data]`): with `exclude_outliers`,
/// the patterns' total counts are read first, each rank reading an even share of the file
/// (contiguous, `comm`'s rank r of R reads N·r/R .. N·(r+1)/R) and the totals all-reduced, so
/// every rank applies the rule to the same numbers; without `comm` (thread ranks, one
/// process) this process reads them all.
///
/// Errors: read failures; those of [`select::select`].
pub fn selection(cfg: &Config, df: &DataFile, comm: Option<&mut dyn Comm>) -> Result<Selection> {
    let totals = if cfg.data.exclude_outliers {
        let (r, nr, n) = comm
            .as_ref()
            .map_or((0, 1, df.n), |c| (c.rank(), c.size(), df.n));
        let (a, b) = (n * r / nr, n * (r + 1) / nr);
        let mut t = vec![0f64; n];
        t[a..b].copy_from_slice(&df.pattern_totals(a, b - a)?);
        if let Some(c) = comm {
            c.allreduce_sum(&mut t)?;
        }
        Some(t)
    } else {
        None
    };
    select::select(&cfg.data, &df.centres, totals.as_deref())
}

/// Bytes one rank holds: (measurements, object + gradient buffers).
pub fn rank_bytes(cfg: &Config, df: &DataFile, rp: &RankPlan) -> (u64, u64) {
    let mm = (df.m * df.m) as u64;
    let patterns = match cfg.parallel.mode {
        ParallelMode::Tiled => rp.positions.len() as u64,
        ParallelMode::Replicated => df.n as u64, // the baseline loads every pattern
    };
    // object (complex f32) + gradient sums (complex f64) + preconditioner sums (f64), per slice
    (
        patterns * mm * 4,
        rp.field_pixels() as u64 * (8 + 16 + 8) * cfg.reconstruction.slices as u64,
    )
}

/// Bytes one process of this job holds at its peak, estimated before anything large is
/// allocated, for the ranks `ranks` it runs: each rank's [`rank_bytes`] (patterns; object,
/// gradient and preconditioner sums on its field), the engines' own arrays (dm: exit waves,
/// complex f32 per position and mode; mlcg: two complex f64 vectors of tile + probe), and,
/// with `rank0`, the assembled result (the whole object, complex f32, three times: gathered
/// tiles, assembled object, written copy). Returns (total, the parts as (name, bytes)).
pub fn memory_estimate(
    cfg: &Config,
    df: &DataFile,
    ranks: &[&RankPlan],
    rank0: bool,
) -> (u64, Vec<(&'static str, u64)>) {
    let stages = cfg.stages();
    let uses = |e: crate::config::Engine| stages.iter().any(|s| s.engine == e);
    let kmm = (cfg.reconstruction.probe_modes * df.m * df.m) as u64;
    let (mut meas, mut field, mut engines) = (0u64, 0u64, 0u64);
    for rp in ranks {
        let (a, b) = rank_bytes(cfg, df, rp);
        meas += a;
        field += b;
        if uses(crate::config::Engine::Dm) {
            engines += rp.positions.len() as u64 * kmm * 8;
        }
        if uses(crate::config::Engine::Mlcg) {
            engines += 2 * (rp.tile.area() as u64 + kmm) * 16;
        }
    }
    let result = if rank0 {
        3 * (df.object_shape[0] * df.object_shape[1]) as u64 * 8
    } else {
        0
    };
    let parts = vec![
        ("diffraction patterns", meas),
        ("object and gradient sums", field),
        ("engine arrays", engines),
        ("assembled result", result),
    ];
    (parts.iter().map(|p| p.1).sum(), parts)
}

/// Memory this machine has for a process: `MemTotal` of /proc/meminfo, or a cgroup (v2)
/// `memory.max` where that is lower. (The total, not what is free right now, so that a run
/// is not refused because other jobs happen to hold memory.) None where neither is known.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let avail = meminfo
        .as_deref()
        .and_then(|s| s.lines().find(|l| l.starts_with("MemTotal:")))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|kb| kb * 1024);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    match (avail, cgroup) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// Refuse a process whose [`memory_estimate`] exceeds `[parallel] memory_limit` or, without
/// one, [`available_memory`]: one line naming the data file (or the key) with the estimate,
/// its largest part and the limit.
pub fn check_memory(
    cfg: &Config,
    df: &DataFile,
    estimate: (u64, Vec<(&'static str, u64)>),
) -> Result<()> {
    let (need, parts) = estimate;
    let (limit, whose, key) = match cfg.parallel.memory_limit_bytes()? {
        Some(l) => (
            l,
            "[parallel] memory_limit",
            "parallel.memory_limit".to_string(),
        ),
        None => match available_memory() {
            Some(a) => (a, "memory this machine has", df.path.display().to_string()),
            None => return Ok(()),
        },
    };
    if need <= limit {
        return Ok(());
    }
    let gb = |b: u64| b as f64 / 1e9;
    let shown: Vec<String> = parts
        .iter()
        .filter(|p| p.1 > 0)
        .map(|(n, b)| format!("{n} {:.2} GB", gb(*b)))
        .collect();
    Err(Error::new(
        key,
        format!(
            "this run needs about {:.2} GB in one process ({}, object {}x{} px), more than the {:.2} GB of {whose}; use more ranks on more nodes, a smaller scan or detector, or raise [parallel] memory_limit",
            gb(need), shown.join(", "), df.object_shape[0], df.object_shape[1], gb(limit)
        ),
    ))
}

/// Build one rank's problem and initial state.
///
/// Probe: from `data.initial` (a previous result, which also gives the object, placed by
/// `output::initial`; its power kept), else `data.probe` if given (its total power rescaled to the mean counts per pattern;
/// extra modes added when K exceeds the file's), else formed from `[experiment]` (aperture
/// and aberrations; without an aperture, √ of the mean diffraction pattern as the pupil); the mean
/// is all-reduced so that every rank starts from the same probe. Object: from `data.initial`,
/// else 1 on the field. Bad detector pixels (a CXI mask) get likelihood weight 0.
pub fn setup(
    cfg: &Config,
    df: &DataFile,
    rp: &RankPlan,
    comm: &mut dyn Comm,
) -> Result<(Problem<f32>, State<f32>)> {
    let m = df.m;
    let mm = m * m;
    let intensities = match cfg.parallel.mode {
        ParallelMode::Tiled => df.read_intensities(&rp.positions)?,
        ParallelMode::Replicated => {
            // the baseline holds every pattern; computes on its share
            let all = df.read_intensities(&(0..df.n).collect::<Vec<_>>())?;
            rp.positions
                .iter()
                .flat_map(|&j| all[j * mm..(j + 1) * mm].iter().copied())
                .collect::<Vec<f32>>()
                .into()
        }
    };
    let mut sums = [
        intensities.iter().map(|v| *v as f64).sum::<f64>(),
        rp.positions.len() as f64,
    ];
    comm.allreduce_sum(&mut sums)?;
    let mean_counts = sums[0] / sums[1].max(1.0);
    if !(mean_counts > 0.0) {
        return Err(Error::new(&df.intensities_what, "all intensities are zero"));
    }
    let k = cfg.reconstruction.probe_modes;
    let initial = cfg
        .data
        .initial
        .as_deref()
        .map(|p| crate::output::initial::load(p, df))
        .transpose()?;
    let probe = match initial
        .as_ref()
        .map(|i| &i.probe)
        .or(df.initial_probe.as_ref())
    {
        Some((kf, p)) => {
            // a previous result's probe is already in counts: keep its power
            let power = if initial.is_some() {
                p.iter().map(|z| z.norm_sqr() as f64).sum()
            } else {
                mean_counts
            };
            let mut p = p.clone();
            if *kf < k {
                let extra = probe::initial_modes(&p[..mm], m, k - kf + 1);
                p.extend_from_slice(&extra[mm..]);
            }
            p.truncate(k * mm);
            probe::normalise(&mut p, power);
            p
        }
        None if df.experiment.convergence_semiangle_rad.is_none() => {
            // no aperture known (X-ray data): the mean diffraction pattern of all ranks is the pupil
            let mut mean = vec![0f64; mm];
            for pat in intensities.chunks(mm) {
                mean.iter_mut().zip(pat).for_each(|(a, b)| *a += *b as f64);
            }
            comm.allreduce_sum(&mut mean)?;
            mean.iter_mut().for_each(|v| *v /= sums[1].max(1.0));
            probe::initial_modes(
                &probe::probe_from_mean_pattern(&df.experiment, &mean, mean_counts)?,
                m,
                k,
            )
        }
        None => probe::initial_modes(&probe::form_probe(&df.experiment, mean_counts)?, m, k),
    };
    let positions: Vec<PositionGeom<f32>> = rp
        .positions
        .iter()
        .map(|&j| PositionGeom::new(j, df.centres[j], m))
        .collect();
    let eps = crate::physics::model::intensity_floor(mean_counts, mm) as f32;
    let mut kernel = Kernel {
        fft: Fft2::new(m),
        modes: k,
        noise: cfg.reconstruction.noise_model,
        eps,
        weights: df.kernel_weights(),
        propagator: Vec::new(),
    };
    let r = &cfg.reconstruction;
    let slices = r.slices;
    if slices > 1 {
        let dz = r.slice_thickness_m.unwrap_or(0.0);
        let tilt = [
            r.specimen_tilt_mrad[0] * 1e-3,
            r.specimen_tilt_mrad[1] * 1e-3,
        ];
        kernel = kernel.with_propagator(&multislice::fresnel_propagator(
            m,
            df.experiment.pixel_size_m,
            df.experiment.wavelength_m,
            dz,
            tilt,
        ));
    }
    let object = match &initial {
        Some(i) => i
            .object_on(rp.field.origin(), rp.field.shape(), slices)
            .map_err(|e| {
                Error::new(
                    cfg.data
                        .initial
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                        .to_string(),
                    e.msg,
                )
            })?,
        None => Field::stack(
            rp.field.origin(),
            rp.field.shape(),
            slices,
            Complex32::new(1.0, 0.0),
        ),
    };
    let state = State { object, probe };
    // the GPU a rank uses: its node-local rank under a launcher, else its thread-rank index
    let local = crate::backend::local_rank().unwrap_or(comm.rank());
    let mut problem = Problem::new(
        kernel,
        positions,
        rp.n_halo_positions,
        intensities,
        cfg.parallel.backend,
        Some(local),
    )?;
    if slices > 1 {
        problem.axial = r.axial_regularization * mean_counts * scan_density(&df.centres);
    }
    Ok((problem, state))
}

/// One rank's figures for the result's attributes (docs/format.md), by name; the job's
/// maximum and sum over ranks come from one all-reduce each ([`RankFigures::reduced`]).
/// Seconds and traffic cover the iteration loop only; "per iteration" figures of seconds
/// leave out the first iteration (warm-up) when there are more.
#[derive(Debug, Clone, Copy, Default)]
struct RankFigures {
    /// Bytes of the rank's measured patterns.
    measurement_bytes: f64,
    /// Bytes of the rank's object and gradient buffers (its field).
    field_bytes: f64,
    /// Peak resident memory of the process (bytes).
    peak_rss_bytes: f64,
    /// Seconds computing, in communication work, and blocked, over the loop.
    compute_s: f64,
    comm_s: f64,
    wait_s: f64,
    /// The same per steady iteration.
    compute_s_per_it: f64,
    comm_s_per_it: f64,
    wait_s_per_it: f64,
    /// Point-to-point bytes and messages sent by the rank over the whole run.
    bytes_sent: f64,
    messages_sent: f64,
    /// Per iteration of the loop: messages, bytes, all-reduce seconds and all-reduces.
    messages_per_it: f64,
    bytes_per_it: f64,
    allreduce_s_per_it: f64,
    allreduces_per_it: f64,
    /// Halo peers (ranks the rank sends to or receives from).
    peers: f64,
}

impl RankFigures {
    fn to_array(self) -> [f64; 16] {
        [
            self.measurement_bytes,
            self.field_bytes,
            self.peak_rss_bytes,
            self.compute_s,
            self.comm_s,
            self.wait_s,
            self.compute_s_per_it,
            self.comm_s_per_it,
            self.wait_s_per_it,
            self.bytes_sent,
            self.messages_sent,
            self.messages_per_it,
            self.bytes_per_it,
            self.allreduce_s_per_it,
            self.allreduces_per_it,
            self.peers,
        ]
    }

    fn from_array(a: [f64; 16]) -> Self {
        RankFigures {
            measurement_bytes: a[0],
            field_bytes: a[1],
            peak_rss_bytes: a[2],
            compute_s: a[3],
            comm_s: a[4],
            wait_s: a[5],
            compute_s_per_it: a[6],
            comm_s_per_it: a[7],
            wait_s_per_it: a[8],
            bytes_sent: a[9],
            messages_sent: a[10],
            messages_per_it: a[11],
            bytes_per_it: a[12],
            allreduce_s_per_it: a[13],
            allreduces_per_it: a[14],
            peers: a[15],
        }
    }

    /// (maximum, sum) of every figure over the ranks of `c` (collective).
    ///
    /// Errors: a failed peer or transport.
    fn reduced(self, c: &mut dyn Comm) -> Result<(Self, Self)> {
        let (mut mx, mut sum) = (self.to_array(), self.to_array());
        c.allreduce_max(&mut mx)?;
        c.allreduce_sum(&mut sum)?;
        Ok((Self::from_array(mx), Self::from_array(sum)))
    }
}

/// Scan positions per object pixel²: N over the area of the positions' bounding box (at
/// least one pixel per side), the same on every rank. The data term's object
/// preconditioner Σ_j |P_j|² is about (mean counts) × this, which sets the axial
/// regulariser's scale (docs/algorithm.md §12).
pub fn scan_density(centres: &[[f64; 2]]) -> f64 {
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for c in centres {
        for a in 0..2 {
            lo[a] = lo[a].min(c[a]);
            hi[a] = hi[a].max(c[a]);
        }
    }
    let side = |a: usize| (hi[a] - lo[a]).max(1.0);
    centres.len() as f64 / (side(0) * side(1))
}

/// How a run ended.
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
    /// Checkpoint/stop requests, read at every iteration boundary (see `cli::signals`).
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
                rank_run(cfg, &mut c, opts, progress, Some((&plan, &sel)))
            })?;
            Ok(results.swap_remove(0))
        }
    }
}

/// What a rank runs, for [`check_same_job`]: the full configuration after `--set` and the
/// command-line options (TOML), and the data file's identity (absolute path, size,
/// modification time; the same on every node of a shared file system).
fn job_words(cfg: &Config) -> (String, String) {
    let f = &cfg.data.file;
    let meta = std::fs::metadata(f).ok();
    let mtime = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let data = format!(
        "{} ({} bytes, modified {mtime} ns)",
        std::path::absolute(f)
            .unwrap_or_else(|_| f.clone())
            .display(),
        meta.map_or(0, |m| m.len())
    );
    (cfg.to_toml(), data)
}

/// Start-up check of an MPI job: every rank must run the same job (the same configuration
/// after overrides, the same data file). The configurations and data identities are
/// gathered on rank 0, which compares each rank's with its own; on a difference rank 0
/// returns one line naming the first differing rank and what differs (the first differing
/// config key with both values, or the data file), and the other ranks wait to be ended by
/// rank 0's abort, so that only that line is printed. Without this check, ranks started
/// with different arguments (e.g. `--iterations`) deadlocked in a later collective.
///
/// Errors: a rank runs another job (from rank 0), or a failed transport.
pub fn check_same_job(cfg: &Config, c: &mut dyn Comm) -> Result<()> {
    let (toml_text, data) = job_words(cfg);
    let all = c.gather(format!("{data}\n{toml_text}").into_bytes())?;
    let mut verdict = [0.0f64];
    let mut msg = None;
    if let Some(all) = all {
        let split = |b: &[u8]| {
            let s = String::from_utf8_lossy(b).into_owned();
            let (d, t) = s.split_once('\n').unwrap_or((&s, ""));
            (d.to_string(), t.to_string())
        };
        let (d0, t0) = split(&all[0]);
        let flat = |t: &str| {
            t.parse::<toml::Table>()
                .map(|t| checkpoint::flatten(&t))
                .unwrap_or_default()
        };
        let f0 = flat(&t0);
        for (r, b) in all.iter().enumerate().skip(1) {
            let (d, t) = split(b);
            if t != t0 {
                let f = flat(&t);
                let key = f0
                    .keys()
                    .chain(f.keys())
                    .find(|k| f0.get(*k) != f.get(*k))
                    .cloned()
                    .unwrap_or_else(|| "the configuration".into());
                let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "unset".into());
                msg = Some(format!("rank {r} runs another job than rank 0: {key} is {} there, {} on rank 0; start every rank with the same config and arguments", show(f.get(&key)), show(f0.get(&key))));
            } else if d != d0 {
                msg = Some(format!("rank {r} runs another job than rank 0: its data file is {d}, rank 0's {d0}; every rank must read the same file"));
            }
            if msg.is_some() {
                verdict[0] = r as f64;
                break;
            }
        }
    }
    c.allreduce_max(&mut verdict)?;
    if verdict[0] == 0.0 {
        return Ok(());
    }
    match msg {
        Some(m) => Err(Error::new("MPI job", m)),
        None => {
            // rank 0 reports and aborts the job; wait for that (bounded)
            std::thread::sleep(std::time::Duration::from_secs(60));
            Err(Error::new(
                "MPI job",
                format!("rank {} runs another job than rank 0", verdict[0]),
            ))
        }
    }
}

/// What identifies this job for resuming ([`Job`]): the reconstruction settings except
/// the iteration count, the experiment settings, the data settings except the file's path
/// (so that a moved file still resumes) with the pattern count, detector size, object
/// grid and an XXH3-64 of the scan positions, the decomposition, and an XXH3-64 of the
/// tile plan (every rank's tile, field and positions).
pub fn job_identity(cfg: &Config, df: &DataFile, plan: &TilePlan, engine: &str) -> Result<Job> {
    let mut rec = table(&cfg.reconstruction, "reconstruction")?;
    rec.remove("iterations");
    let mut data = table(&cfg.data, "data")?;
    data.remove("file");
    let centres: Vec<f64> = df.centres.iter().flatten().copied().collect();
    data.insert("patterns".into(), (df.n as i64).into());
    data.insert("detector_px".into(), (df.m as i64).into());
    data.insert(
        "object_shape".into(),
        toml::Value::Array(df.object_shape.iter().map(|&v| (v as i64).into()).collect()),
    );
    data.insert(
        "positions_xxh3".into(),
        format!("{:016x}", xxh3_64(bytemuck::cast_slice(&centres))).into(),
    );
    let mut plan_words: Vec<i64> = Vec::new();
    for r in &plan.ranks {
        plan_words.extend(rect4(&r.tile));
        plan_words.extend(rect4(&r.field));
        plan_words.push(r.positions.len() as i64);
        plan_words.extend(r.positions.iter().map(|&j| j as i64));
    }
    let mut par = toml::Table::new();
    par.insert(
        "mode".into(),
        toml::Value::try_from(cfg.parallel.mode)
            .map_err(|e| Error::new("parallel.mode", e.to_string()))?,
    );
    par.insert(
        "tiles".into(),
        toml::Value::Array(plan.tiles.iter().map(|&v| (v as i64).into()).collect()),
    );
    par.insert(
        "plan_xxh3".into(),
        format!("{:016x}", xxh3_64(bytemuck::cast_slice(&plan_words))).into(),
    );
    let mut t = toml::Table::new();
    t.insert("engine".into(), engine.into());
    t.insert("reconstruction".into(), rec.into());
    // the engines' own parameters and the schedule (its iterations included: they decide
    // which engine runs at which iteration)
    for (name, v) in [
        ("dm", table(&cfg.dm, "dm")?),
        ("mlcg", table(&cfg.mlcg, "mlcg")?),
        ("epie", table(&cfg.epie, "epie")?),
        ("rpie", table(&cfg.rpie, "rpie")?),
    ] {
        t.insert(name.into(), v.into());
    }
    if !cfg.schedule.is_empty() {
        let stages = cfg
            .schedule
            .iter()
            .map(|s| table(s, "schedule").map(toml::Value::Table))
            .collect::<Result<Vec<_>>>()?;
        t.insert("schedule".into(), toml::Value::Array(stages));
    }
    if !cfg.position_correction.is_default() {
        // the refinement's settings decide every later position (absent when left alone, so
        // the identities of runs without it are as before)
        t.insert(
            "position_correction".into(),
            table(&cfg.position_correction, "position_correction")?.into(),
        );
    }
    t.insert(
        "experiment".into(),
        table(&cfg.experiment, "experiment")?.into(),
    );
    t.insert("data".into(), data.into());
    t.insert("parallel".into(), par.into());
    Ok(Job {
        ranks: plan.ranks.len(),
        tiles: plan.tiles,
        engine: engine.into(),
        table: t,
    })
}

/// A config section as a TOML table (`what` names it in errors).
fn table<T: serde::Serialize>(v: &T, what: &str) -> Result<toml::Table> {
    match toml::Value::try_from(v) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(_) => Err(Error::new(what, "not a table")),
        Err(e) => Err(Error::new(what, e.to_string())),
    }
}

/// (y0, y1, x0, x1) of a rectangle.
fn rect4(r: &tiling::Rect) -> [i64; 4] {
    [r.y0, r.y1, r.x0, r.x1]
}

/// Load this rank's part of the checkpoint in `dir` into `state`; returns the completed
/// iterations, the loss history and the rank's arrays (for what the driver keeps itself:
/// refined positions).
///
/// Errors (one line, naming the manifest or file): a job that differs from the one that
/// wrote the checkpoint, a corrupt file, other diffraction patterns on this rank, or more
/// iterations already done than `iterations`.
fn resume(
    dir: &Path,
    job: &Job,
    rp: &RankPlan,
    data_xxh3: u64,
    iterations: usize,
    state: &mut dyn Snapshot,
) -> Result<(usize, Vec<f64>, Vec<NamedArray>)> {
    let m = checkpoint::read_manifest(dir)?;
    checkpoint::check_job(dir, &m, job)?;
    let s = checkpoint::read_rank(dir, &m, rp.rank)?;
    let file = dir.join(&m.files[rp.rank].path).display().to_string();
    if s.tile != rect4(&rp.tile) {
        return Err(Error::new(
            file,
            format!("tile {:?}, this rank's is {:?}", s.tile, rect4(&rp.tile)),
        ));
    }
    if s.data_xxh3 != data_xxh3 {
        return Err(Error::new(
            file,
            format!(
                "rank {}'s diffraction patterns differ from those the checkpoint was written from",
                rp.rank
            ),
        ));
    }
    let done = s.iteration as usize;
    if done > iterations {
        return Err(Error::new(
            "reconstruction.iterations",
            format!(
                "{iterations}, but the checkpoint in {} has {done} iterations done",
                dir.display()
            ),
        ));
    }
    state.restore(&s.arrays)?;
    let loss = snapshot::find(&s.arrays, "loss")?.values::<f64>(&[done])?;
    Ok((done, loss, s.arrays))
}

/// Peak resident memory of this process in bytes (VmHWM), if the OS tells.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One rank's whole run (see the module docs for checkpoints and resuming).
pub fn run_rank(
    cfg: &Config,
    c: &mut dyn Comm,
    ro: RunOptions,
    progress: Progress,
) -> Result<Outcome> {
    rank_run(cfg, c, ro, progress, None)
}

/// [`run_rank`] with the job's tile plan and pattern selection computed by the caller
/// (`shared`, the same for every rank of the job) or, if `None`, by this rank.
fn rank_run(
    cfg: &Config,
    c: &mut dyn Comm,
    ro: RunOptions,
    progress: Progress,
    shared: Option<(&TilePlan, &Selection)>,
) -> Result<Outcome> {
    let df = DataFile::open(cfg)?;
    let (own, own_sel);
    let (plan, sel) = match shared {
        Some((p, s)) if p.n_ranks() == c.size() => (p, s),
        _ => {
            own_sel = selection(cfg, &df, Some(&mut *c))?;
            own = job_plan(cfg, &df, c.size(), &own_sel)?;
            (&own, &own_sel)
        }
    };
    let n_used = sel.n_used();
    let excluded = sel.excluded();
    let rp = &plan.ranks[c.rank()];
    if shared.is_none() {
        // one process per rank (MPI): this rank's own estimate
        check_memory(cfg, &df, memory_estimate(cfg, &df, &[rp], c.rank() == 0))?;
    }
    if c.rank() == 0 {
        tracing::info!(
            "{}: {} patterns of {}x{}, object {}x{} px of {:.4} Å, λ = {:.5} Å, {} rank(s), tiles {}x{}",
            df.path.display(), df.n, df.m, df.m, df.object_shape[0], df.object_shape[1],
            df.experiment.pixel_size_m[0] * 1e10, df.experiment.wavelength_m * 1e10, c.size(), plan.tiles[0], plan.tiles[1]
        );
        if !excluded.is_empty() {
            tracing::warn!(
                "{}: {} of {} patterns left out of the likelihood: {} with total counts far from the scan's median {}, {} by data.exclude {}",
                df.intensities_what, excluded.len(), df.n, sel.outliers.len(), first_indices(&sel.outliers), sel.manual.len(), first_indices(&sel.manual)
            );
        }
        if let Some(s) = cfg.data.subset {
            tracing::info!("data.subset = {s:?}: {n_used} of {} patterns used", df.n);
        }
    }
    let (meas_b, field_b) = rank_bytes(cfg, &df, rp);
    tracing::info!(
        "rank {}: {} positions, {} measurement bytes, field {}x{} ({} object/gradient bytes), {} halo peers",
        c.rank(), rp.positions.len(), meas_b, rp.field.shape()[0], rp.field.shape()[1], field_b, rp.sends.len()
    );
    let (mut problem, state) = setup(cfg, &df, rp, c)?;
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
    let job = job_identity(cfg, &df, plan, &label)?;
    // hash of this rank's patterns, only when a checkpoint is read or written
    let data_hash = std::cell::OnceCell::new();
    let intensities = problem.intensities.clone();
    let data_xxh3 = || *data_hash.get_or_init(|| xxh3_64(bytemuck::cast_slice(&intensities)));
    let (start, mut loss) = match ro.resume {
        Some(dir) => {
            let (done, loss, arrays) = resume(dir, &job, rp, data_xxh3(), iterations, &mut carry)?;
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
    if !carry.engines.dm.exit_waves.is_empty() && carry.engines.dm.exit_waves.len() != exit_len {
        let dir = ro.resume.unwrap_or(Path::new("")).display().to_string();
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
            ro.resume.unwrap_or(Path::new("")).display()
        );
    }
    let ck_dir = cfg.checkpoint_dir();
    let every = cfg.checkpoint.every;
    // per-iteration wall time and [compute, comm, wait] seconds of this rank
    let mut iter_s = Vec::with_capacity(iterations);
    let mut split = Vec::with_capacity(iterations);
    let t0 = Instant::now();
    let stats0 = c.stats();
    // signals wait for the iteration boundary only inside the loop (cli::signals)
    struct InLoop<'a>(Option<&'a StopFlags>);
    impl Drop for InLoop<'_> {
        fn drop(&mut self) {
            self.0
                .inspect(|s| s.in_loop.store(false, std::sync::atomic::Ordering::SeqCst));
        }
    }
    let mut in_loop = InLoop(
        ro.signals
            .inspect(|s| s.in_loop.store(true, std::sync::atomic::Ordering::SeqCst)),
    );
    {
        let mut rank = Rank {
            plan: rp,
            comm: &mut *c,
            mode,
            overlap: cfg.parallel.overlap,
        };
        for it in start..iterations {
            if rank.comm.rank() == 0 && (it == start || settings.starts_step(it)) {
                tracing::info!("from iteration {it}: {}", settings.step_name(it));
            }
            let t = Instant::now();
            let st = engine::iterate(
                &problem,
                &mut carry.state,
                &mut carry.engines,
                it,
                &settings,
                &mut rank,
            )?;
            if let Some(r) = refiner.as_mut().filter(|_| pc.at(it)) {
                // the positions move by the gradients of this iteration's pass; the next
                // iteration sees them
                r.update(&st.positions, &mut *rank.comm)?;
                problem.set_positions(r.geometry())?;
                if rank.comm.rank() == 0 {
                    let b = r.affine;
                    tracing::debug!("iteration {it}: positions moved {:.4} px RMS; affine part [[{:.5}, {:.5}], [{:.5}, {:.5}]]", r.rms_move_px, b[0], b[1], b[2], b[3]);
                }
            }
            let l = st.loss / n_used.max(1) as f64;
            if !l.is_finite() {
                return Err(Error::new(
                    "reconstruction",
                    format!("loss became {l} at iteration {it}"),
                ));
            }
            loss.push(l);
            iter_s.push(t.elapsed().as_secs_f64());
            split.push([st.compute_s, st.comm_s, st.wait_s]);
            if rank.comm.rank() == 0 {
                progress(it, l, t.elapsed().as_secs_f64(), n_used);
            }
            // iteration boundary: do all ranks agree on a checkpoint or a stop?
            let done = it + 1;
            let mut req = [0.0; 2];
            if let Some(sig) = ro.signals {
                req = sig.take();
                rank.comm.allreduce_max(&mut req)?;
            }
            let (stop, requested) = (req[0] > 0.0, req[1] > 0.0);
            if stop || requested || (every > 0 && done % every == 0) {
                let t = Instant::now();
                // dm's exit waves live in the backend: copy them out for the checkpoint
                engine::dm::sync_for_checkpoint(&problem, &mut carry.engines.dm)?;
                let mut arrays = carry.save();
                carry.engines.dm.exit_waves = Vec::new();
                arrays.push(NamedArray::new("loss", &[loss.len()], &loss));
                if let Some(r) = &refiner {
                    let flat: Vec<f64> = r.centres().iter().flatten().copied().collect();
                    arrays.push(NamedArray::new(
                        "positions_px",
                        &[r.centres().len(), 2],
                        &flat,
                    ));
                    arrays.push(NamedArray::new("position_affine_rates", &[8], &r.rates()));
                }
                let snap = RankSnapshot {
                    rank: rp.rank as u64,
                    iteration: done as u64,
                    engine: label.clone(),
                    stage: settings.stage_at(done) as u64,
                    fingerprint: job.fingerprint(),
                    tile: rect4(&rp.tile),
                    data_xxh3: data_xxh3(),
                    arrays,
                };
                let manifest = checkpoint::save(&mut *rank.comm, &ck_dir, &job, &snap)?;
                if rank.comm.rank() == 0 {
                    tracing::info!(
                        "checkpoint after iteration {done}: {} ({:.3} s)",
                        manifest.display(),
                        t.elapsed().as_secs_f64()
                    );
                }
            }
            if stop && done < iterations {
                // The ranks agreed to stop: keep absorbing a first SIGTERM. A launcher
                // forwards one signal to every rank at its own pace, and a rank whose copy
                // arrives only now (its signal thread was not scheduled before the
                // all-reduce) must not take it for a second signal and exit before the
                // others finish (mpirun would then kill them).
                in_loop.0 = None;
                return Ok(Outcome::Stopped {
                    iteration: done,
                    dir: ck_dir,
                });
            }
        }
    }
    drop(in_loop);
    let secs = t0.elapsed().as_secs_f64();
    // this rank's traffic per iteration (the iteration loop only: set-up and the final
    // reductions below are left out), its halo peers and its peak memory
    let (st1, its) = (c.stats(), (iterations - start).max(1) as f64);
    let peers = rp
        .sends
        .iter()
        .chain(&rp.recvs)
        .map(|t| t.peer)
        .collect::<std::collections::BTreeSet<_>>()
        .len() as f64;
    // steady state: leave out the first iteration (warm-up) when there are more
    let skip = usize::from(split.len() > 1);
    let steady = (split.len() - skip).max(1) as f64;
    let per_it: Vec<f64> = (0..3)
        .map(|q| split[skip..].iter().map(|v| v[q]).sum::<f64>() / steady)
        .collect();
    let total = |q: usize| split.iter().map(|v| v[q]).sum::<f64>();
    let (mx, tot) = RankFigures {
        measurement_bytes: meas_b as f64,
        field_bytes: field_b as f64,
        peak_rss_bytes: peak_rss_bytes().unwrap_or(0) as f64,
        compute_s: total(0),
        comm_s: total(1),
        wait_s: total(2),
        compute_s_per_it: per_it[0],
        comm_s_per_it: per_it[1],
        wait_s_per_it: per_it[2],
        bytes_sent: st1.bytes_sent as f64,
        messages_sent: st1.messages_sent as f64,
        messages_per_it: (st1.messages_sent - stats0.messages_sent) as f64 / its,
        bytes_per_it: (st1.bytes_sent - stats0.bytes_sent) as f64 / its,
        peers,
        allreduce_s_per_it: (st1.allreduce_ns - stats0.allreduce_ns) as f64 * 1e-9 / its,
        allreduces_per_it: (st1.collectives - stats0.collectives) as f64 / its,
    }
    .reduced(c)?;
    let nr = c.size() as f64;
    let mut steady_s = iter_s[skip..].to_vec();
    steady_s.sort_by(|a, b| a.total_cmp(b));
    let median_s = steady_s.get(steady_s.len() / 2).copied().unwrap_or(0.0);
    // refined positions on rank 0: (index, y, x) per position of every rank
    let refined = match &refiner {
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
    let tile = gd::extract(&carry.state.object, &rp.tile);
    let tiles = c.gather(bytemuck::cast_slice(&tile).to_vec())?;
    let Some(tiles) = tiles else {
        return Ok(Outcome::Finished(None));
    };
    let mut positions_px = df.centres.clone();
    for bytes in refined.iter().flatten() {
        let words: Vec<f64> = bytemuck::pod_collect_to_vec(bytes);
        for w in words.chunks_exact(3) {
            positions_px[w[0] as usize] = [w[1], w[2]];
        }
    }
    let slices = carry.state.object.planes();
    let mut object = Field::stack([0, 0], df.object_shape, slices, Complex32::new(1.0, 0.0));
    for (r, bytes) in tiles.iter().enumerate() {
        let vals: Vec<Complex32> = bytemuck::pod_collect_to_vec(bytes);
        let rect = plan.ranks[r].tile;
        if vals.len() != rect.area() * slices {
            return Err(Error::new(format!("rank {r}"), "tile of the wrong size"));
        }
        gd::write_rect(&mut object, &rect, &vals);
    }
    let mut attrs = vec![
        ("wall_time_s".into(), secs),
        (
            "seconds_per_iteration".into(),
            secs / (iterations - start).max(1) as f64,
        ),
        ("wavelength_m".into(), df.experiment.wavelength_m),
        ("ranks".into(), c.size() as f64),
        ("slices".into(), slices as f64),
        ("tiles_y".into(), plan.tiles[0] as f64),
        ("tiles_x".into(), plan.tiles[1] as f64),
        ("measurement_bytes_max_rank".into(), mx.measurement_bytes),
        ("measurement_bytes_total".into(), tot.measurement_bytes),
        ("object_gradient_bytes_max_rank".into(), mx.field_bytes),
        ("peak_rss_bytes_max_process".into(), mx.peak_rss_bytes),
        ("messages_per_iteration_max_rank".into(), mx.messages_per_it),
        (
            "messages_per_iteration_mean_rank".into(),
            tot.messages_per_it / nr,
        ),
        ("bytes_per_iteration_max_rank".into(), mx.bytes_per_it),
        (
            "bytes_per_iteration_mean_rank".into(),
            tot.bytes_per_it / nr,
        ),
        ("peers_max_rank".into(), mx.peers),
        ("peers_mean_rank".into(), tot.peers / nr),
        (
            "allreduce_s_per_iteration_max_rank".into(),
            mx.allreduce_s_per_it,
        ),
        (
            "allreduce_s_per_iteration_mean_rank".into(),
            tot.allreduce_s_per_it / nr,
        ),
        ("allreduces_per_iteration".into(), mx.allreduces_per_it),
        ("compute_s_max_rank".into(), mx.compute_s),
        ("wait_s_max_rank".into(), mx.wait_s),
        ("comm_s_max_rank".into(), mx.comm_s),
        ("steady_seconds_per_iteration".into(), median_s),
        (
            "compute_s_per_iteration_max_rank".into(),
            mx.compute_s_per_it,
        ),
        ("comm_s_per_iteration_max_rank".into(), mx.comm_s_per_it),
        ("wait_s_per_iteration_max_rank".into(), mx.wait_s_per_it),
        (
            "compute_s_per_iteration_mean_rank".into(),
            tot.compute_s_per_it / nr,
        ),
        (
            "comm_s_per_iteration_mean_rank".into(),
            tot.comm_s_per_it / nr,
        ),
        (
            "wait_s_per_iteration_mean_rank".into(),
            tot.wait_s_per_it / nr,
        ),
        ("halo_bytes_sent_total".into(), tot.bytes_sent),
        ("halo_messages_sent_total".into(), tot.messages_sent),
    ];
    attrs.push(("patterns_used".into(), n_used as f64));
    attrs.push(("excluded_outlier_count".into(), sel.outliers.len() as f64));
    attrs.push(("excluded_manual_count".into(), sel.manual.len() as f64));
    if ro.resume.is_some() {
        attrs.push(("resumed_from_iteration".into(), start as f64));
    }
    if slices > 1 {
        attrs.push((
            "slice_thickness_m".into(),
            cfg.reconstruction.slice_thickness_m.unwrap_or(0.0),
        ));
    }
    if let Some(r) = &refiner {
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
    Ok(Outcome::Finished(Some(ReconResult {
        object,
        pixel_size_m: df.experiment.pixel_size_m,
        probe: carry.state.probe,
        modes: cfg.reconstruction.probe_modes,
        m: df.m,
        positions_px,
        loss,
        config_toml: cfg.to_toml(),
        attrs,
        excluded,
    })))
}

/// At most the first 20 of `v` for a log line, `[a, b, …]`, with how many more there are
/// (the result's `@excluded_patterns` holds them all).
fn first_indices(v: &[usize]) -> String {
    const SHOWN: usize = 20;
    let head: Vec<String> = v.iter().take(SHOWN).map(|j| j.to_string()).collect();
    match v.len().saturating_sub(SHOWN) {
        0 => format!("[{}]", head.join(", ")),
        more => format!(
            "[{}, … and {more} more, all in the result's @excluded_patterns]",
            head.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::first_indices;

    #[test]
    fn log_lists_at_most_twenty_indices() {
        assert_eq!(first_indices(&[]), "[]");
        assert_eq!(first_indices(&[3, 7]), "[3, 7]");
        let v: Vec<usize> = (100..125).collect();
        let s = first_indices(&v);
        assert!(
            s.starts_with("[100, 101, ") && s.contains("119, … and 5 more"),
            "{s}"
        );
        assert!(!s.contains("120"), "{s}");
    }
}
