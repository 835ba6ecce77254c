//! `ptytile reconstruct`: wire data → tiling → comm → engine → output, on every rank.
//!
//! Ranks are threads of this process (`[parallel] ranks`, `--ranks`) unless the program
//! was started by an MPI launcher (mpirun, srun, jsrun), in which case each process is one
//! MPI rank. Every rank reads only its own diffraction patterns (tiled mode); rank 0
//! gathers the owned tiles and returns the assembled result.

use crate::backend::cpu::Kernel;
use crate::comm::{self, Comm};
use crate::config::{Config, ParallelMode};
use crate::data::DataFile;
use crate::engine::{self, gd, Decomposition, EngineState, Problem, Rank, Settings, State};
use crate::error::{Error, Result};
use crate::output::ReconResult;
use crate::physics::fft::Fft2;
use crate::physics::model::{Field, PositionGeom};
use crate::physics::probe;
use crate::tiling::{self, RankPlan, TilePlan};
use num_complex::Complex32;
use std::time::Instant;

/// Per-iteration callback on rank 0: (iteration, loss per pattern, seconds, positions).
pub type Progress<'a> = &'a (dyn Fn(usize, f64, f64, usize) + Sync);

/// The job's decomposition: the tile plan for `ranks` ranks (tiled), or every rank holding
/// the whole object and the positions j with j mod ranks = rank (replicated).
///
/// Errors: `parallel.tiles` whose product is not the rank count, or that the object cannot hold.
pub fn job_plan(cfg: &Config, df: &DataFile, ranks: usize) -> Result<TilePlan> {
    match cfg.parallel.mode {
        ParallelMode::Tiled => {
            let tiles = cfg.parallel.tiles.unwrap_or_else(|| tiling::tiles_for(ranks, df.object_shape));
            if tiles[0] * tiles[1] != ranks {
                return Err(Error::new("parallel.tiles", format!("{}x{} tiles for {ranks} ranks: the product must equal the rank count", tiles[0], tiles[1])));
            }
            tiling::plan(&df.centres, df.m, df.object_shape, tiles)
        }
        ParallelMode::Replicated => {
            let whole = tiling::plan(&df.centres, df.m, df.object_shape, [1, 1])?;
            let r0 = &whole.ranks[0];
            let ranks = (0..ranks)
                .map(|r| RankPlan {
                    rank: r,
                    tile: r0.tile,
                    field: r0.field,
                    positions: (0..df.n).filter(|j| j % ranks == r).collect(),
                    n_halo_positions: 0,
                    sends: Vec::new(),
                    recvs: Vec::new(),
                })
                .collect();
            Ok(TilePlan { ranks, ..whole })
        }
    }
}

/// Bytes one rank holds: (measurements, object + gradient buffers).
pub fn rank_bytes(cfg: &Config, df: &DataFile, rp: &RankPlan) -> (u64, u64) {
    let mm = (df.m * df.m) as u64;
    let patterns = match cfg.parallel.mode {
        ParallelMode::Tiled => rp.positions.len() as u64,
        ParallelMode::Replicated => df.n as u64, // the baseline loads every pattern
    };
    // object (complex f32) + gradient sums (complex f64) + preconditioner sums (f64)
    (patterns * mm * 4, rp.field_pixels() as u64 * (8 + 16 + 8))
}

/// Build one rank's problem and initial state.
///
/// Probe: `data.probe` if given (its total power rescaled to the mean counts per pattern;
/// extra modes added when K exceeds the file's), else formed from `[experiment]`; the mean
/// is all-reduced so that every rank starts from the same probe. Object: 1 on the field.
pub fn setup(cfg: &Config, df: &DataFile, rp: &RankPlan, comm: &mut dyn Comm) -> Result<(Problem<f32>, State<f32>)> {
    let m = df.m;
    let mm = m * m;
    let intensities = match cfg.parallel.mode {
        ParallelMode::Tiled => df.read_intensities(&rp.positions)?,
        ParallelMode::Replicated => {
            // the baseline holds every pattern; computes on its share
            let all = df.read_intensities(&(0..df.n).collect::<Vec<_>>())?;
            rp.positions.iter().flat_map(|&j| all[j * mm..(j + 1) * mm].iter().copied()).collect()
        }
    };
    let mut sums = [intensities.iter().map(|v| *v as f64).sum::<f64>(), rp.positions.len() as f64];
    comm.allreduce_sum(&mut sums)?;
    let mean_counts = sums[0] / sums[1].max(1.0);
    if !(mean_counts > 0.0) {
        return Err(Error::new(format!("{}:{}", df.path.display(), cfg.data.intensities), "all intensities are zero"));
    }
    let k = cfg.reconstruction.probe_modes;
    let probe = match &df.initial_probe {
        Some((kf, p)) => {
            let mut p = p.clone();
            if *kf < k {
                let extra = probe::initial_modes(&p[..mm], m, k - kf + 1);
                p.extend_from_slice(&extra[mm..]);
            }
            p.truncate(k * mm);
            probe::normalise(&mut p, mean_counts);
            p
        }
        None => probe::initial_modes(&probe::form_probe(&df.experiment, mean_counts)?, m, k),
    };
    let positions: Vec<PositionGeom<f32>> = rp.positions.iter().map(|&j| PositionGeom::new(j, df.centres[j], m)).collect();
    let kernel = Kernel { fft: Fft2::new(m), modes: k, noise: cfg.reconstruction.noise_model, eps: (1e-6 * mean_counts / mm as f64).max(1e-12) as f32 };
    let state = State { object: Field::filled(rp.field.origin(), rp.field.shape(), Complex32::new(1.0, 0.0)), probe };
    Ok((Problem { kernel, positions, n_halo: rp.n_halo_positions, intensities }, state))
}

/// Run the reconstruction described by `cfg` on every rank of this job; returns the result
/// on the process holding rank 0 (None elsewhere under MPI).
pub fn run(cfg: &Config, progress: Progress) -> Result<Option<ReconResult>> {
    match comm::launcher_env() {
        Some(info) if info.size > 1 => {
            let mut c = comm::MpiComm::init()?;
            match run_rank(cfg, &mut c, progress) {
                Ok(r) => Ok(r),
                Err(e) => {
                    eprintln!("error: rank {}: {e}", c.rank());
                    c.abort(crate::error::EXIT_USAGE)
                }
            }
        }
        _ => {
            let mut results = comm::run_threads(cfg.parallel.ranks, |mut c| run_rank(cfg, &mut c, progress))?;
            Ok(results.swap_remove(0))
        }
    }
}

/// Peak resident memory of this process in bytes (VmHWM), if the OS tells.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One rank's whole run.
pub fn run_rank(cfg: &Config, c: &mut dyn Comm, progress: Progress) -> Result<Option<ReconResult>> {
    let df = DataFile::open(cfg)?;
    let plan = job_plan(cfg, &df, c.size())?;
    let rp = &plan.ranks[c.rank()];
    if c.rank() == 0 {
        tracing::info!(
            "{}: {} patterns of {}x{}, object {}x{} px of {:.4} Å, λ = {:.5} Å, {} rank(s), tiles {}x{}",
            df.path.display(), df.n, df.m, df.m, df.object_shape[0], df.object_shape[1],
            df.experiment.pixel_size_m[0] * 1e10, df.experiment.wavelength_m * 1e10, c.size(), plan.tiles[0], plan.tiles[1]
        );
    }
    let (meas_b, field_b) = rank_bytes(cfg, &df, rp);
    tracing::info!(
        "rank {}: {} positions, {} measurement bytes, field {}x{} ({} object/gradient bytes), {} halo peers",
        c.rank(), rp.positions.len(), meas_b, rp.field.shape()[0], rp.field.shape()[1], field_b, rp.sends.len()
    );
    let (problem, mut state) = setup(cfg, &df, rp, c)?;
    let settings = Settings::from(cfg);
    let iterations = settings.total_iterations();
    let mut engine_state = EngineState::default();
    let mode = match cfg.parallel.mode {
        ParallelMode::Tiled => Decomposition::Tiled,
        ParallelMode::Replicated => Decomposition::Replicated,
    };
    let mut loss = Vec::with_capacity(iterations);
    let (mut compute_s, mut wait_s) = (0.0, 0.0);
    let t0 = Instant::now();
    {
        let mut rank = Rank { plan: rp, comm: &mut *c, mode };
        for it in 0..iterations {
            let t = Instant::now();
            let st = engine::iterate(&problem, &mut state, &mut engine_state, it, &settings, &mut rank)?;
            let l = st.loss / df.n as f64;
            if !l.is_finite() {
                return Err(Error::new("reconstruction", format!("loss became {l} at iteration {it}")));
            }
            loss.push(l);
            compute_s += st.compute_s;
            wait_s += st.wait_s;
            if rank.comm.rank() == 0 {
                progress(it, l, t.elapsed().as_secs_f64(), df.n);
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    // memory and time figures: max over ranks (and the total of measurements)
    let mut mx = [meas_b as f64, field_b as f64, peak_rss_bytes().unwrap_or(0) as f64, compute_s, wait_s];
    c.allreduce_max(&mut mx)?;
    let mut tot = [meas_b as f64, c.stats().bytes_sent as f64, c.stats().messages_sent as f64];
    c.allreduce_sum(&mut tot)?;
    // gather the owned tiles on rank 0
    let tile = gd::extract(&state.object, &rp.tile);
    let tiles = c.gather(bytemuck::cast_slice(&tile).to_vec())?;
    let Some(tiles) = tiles else { return Ok(None) };
    let mut object = Field::filled([0, 0], df.object_shape, Complex32::new(1.0, 0.0));
    for (r, bytes) in tiles.iter().enumerate() {
        let vals: Vec<Complex32> = bytemuck::pod_collect_to_vec(bytes);
        let rect = plan.ranks[r].tile;
        if vals.len() != rect.area() {
            return Err(Error::new(format!("rank {r}"), "tile of the wrong size"));
        }
        gd::write_rect(&mut object, &rect, &vals);
    }
    Ok(Some(ReconResult {
        object,
        pixel_size_m: df.experiment.pixel_size_m,
        probe: state.probe,
        modes: cfg.reconstruction.probe_modes,
        m: df.m,
        positions_px: df.centres.clone(),
        loss,
        config_toml: cfg.to_toml(),
        attrs: vec![
            ("wall_time_s".into(), secs),
            ("seconds_per_iteration".into(), secs / iterations.max(1) as f64),
            ("wavelength_m".into(), df.experiment.wavelength_m),
            ("ranks".into(), c.size() as f64),
            ("tiles_y".into(), plan.tiles[0] as f64),
            ("tiles_x".into(), plan.tiles[1] as f64),
            ("measurement_bytes_max_rank".into(), mx[0]),
            ("measurement_bytes_total".into(), tot[0]),
            ("object_gradient_bytes_max_rank".into(), mx[1]),
            ("peak_rss_bytes_max_process".into(), mx[2]),
            ("compute_s_max_rank".into(), mx[3]),
            ("wait_s_max_rank".into(), mx[4]),
            ("halo_bytes_sent_total".into(), tot[1]),
            ("halo_messages_sent_total".into(), tot[2]),
        ],
    }))
}
