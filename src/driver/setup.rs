//! One job's set-up before the first iteration: the patterns it uses, the tile plan, the
//! memory check, and each rank's problem (kernel, positions, patterns) with the initial
//! object and probe.

use crate::backend::kernel::Kernel;
use crate::comm::Comm;
use crate::config::{Config, ParallelMode};
use crate::data::select::{self, Selection};
use crate::data::DataFile;
use crate::engine::{Problem, State};
use crate::error::{Error, Result};
use crate::physics::fft::Fft2;
use crate::physics::model::{Field, PositionGeom};
use crate::physics::{multislice, probe};
use crate::tiling::{self, RankPlan, TilePlan};
use num_complex::Complex32;
use std::path::Path;

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

/// At most the first 20 of `v` for a log line, `[a, b, …]`, with how many more there are
/// (the result's `@excluded_patterns` holds them all).
pub(crate) fn first_indices(v: &[usize]) -> String {
    first_indices_in(v, "excluded_patterns")
}

/// [`first_indices`] of a list the result holds in the attribute `attr`.
pub(crate) fn first_indices_in(v: &[usize], attr: &str) -> String {
    const SHOWN: usize = 20;
    let head: Vec<String> = v.iter().take(SHOWN).map(|j| j.to_string()).collect();
    match v.len().saturating_sub(SHOWN) {
        0 => format!("[{}]", head.join(", ")),
        more => format!(
            "[{}, … and {more} more, all in the result's @{attr}]",
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
