//! `ptytile bench`: time per iteration on a real dataset and where the time goes.
//!
//! Measured, each as the median of `repeats` runs over all positions on the same thread
//! pool: (1) a full iteration (object and probe gradients plus updates); (2) the kernel
//! without the probe gradient; (3) the kernel with it; (4) the FFTs alone (the transforms
//! per position and mode of (3), with the same plans and layout: 4 two-dimensional ones, or
//! for positions in a run sharing their sub-pixel y-shift 2 plus 2 row-only halves).
//! Derived: probe gradient = (3) − (2); element-wise work (sub-pixel ramps, exit waves,
//! residuals, scatter-add) = (2) − (the no-probe-gradient share of (4)); update = (1) − (3).
//! With S > 1 slices, (4) also holds the 4(S − 1) transforms of the propagations there and
//! back per position and mode.
//!
//! With `--against`, a second configuration's full iteration is timed in turn with the
//! first's, one iteration each per repeat in the same process, and the ratio of each pair is
//! reported: on a shared machine whose speed drifts over seconds to minutes, the two halves
//! of a pair see about the same machine, so the pairs' ratios scatter much less than two
//! separately measured medians do.

use crate::backend::cpu::gradients;
use crate::backend::kernel::probe_spectrum;
use crate::config::Config;
use crate::data::DataFile;
use crate::engine::gd::{self, Options};
use crate::error::Result;
use num_complex::Complex32;
use rayon::prelude::*;
use std::time::Instant;

/// A second configuration to time in turn with the first: the config and the `--against`
/// overrides that made it (for the report).
pub struct Against<'a> {
    /// The first configuration with the overrides applied.
    pub cfg: &'a Config,
    /// The overrides, KEY=VALUE.
    pub overrides: &'a [String],
}

/// Run the benchmark; prints Markdown tables to stdout. Errors: the config's data (missing
/// file or dataset, wrong shapes) or a failing iteration, as `ptytile reconstruct` reports
/// them.
pub fn run(cfg: &Config, against: Option<Against<'_>>, repeats: usize) -> Result<()> {
    crate::comm::run_threads(1, |mut c| {
        run_on(cfg, repeats, &mut c)?;
        match &against {
            Some(a) => paired(cfg, a, repeats, &mut c),
            None => Ok(()),
        }
    })
    .map(|_| ())
}

/// One rank's gd iterations over a whole configuration (one tile), for timing.
struct Iterations {
    plan: crate::tiling::TilePlan,
    problem: crate::engine::Problem<f32>,
    state: crate::engine::State<f32>,
    gs: gd::GdState,
    opts: Options,
    it: usize,
}

impl Iterations {
    fn new(cfg: &Config, c: &mut dyn crate::comm::Comm) -> Result<Self> {
        let df = DataFile::open(cfg)?;
        let plan = crate::tiling::plan(&df.centres, df.m, df.object_shape, [1, 1])?;
        let (problem, state) = crate::driver::setup(cfg, &df, &plan.ranks[0], c)?;
        Ok(Iterations {
            plan,
            problem,
            state,
            gs: gd::GdState::default(),
            opts: Options::from(&cfg.reconstruction),
            it: 1,
        })
    }

    /// Seconds of one gd iteration (object and probe updated once the probe's start is
    /// reached).
    fn step(&mut self, c: &mut dyn crate::comm::Comm) -> Result<f64> {
        let mut rank = gd::Rank::new(&self.plan.ranks[0], c, gd::Decomposition::Tiled);
        let t = Instant::now();
        gd::iterate(
            &self.problem,
            &mut self.state,
            &mut self.gs,
            self.it.max(self.opts.probe_update_start),
            &self.opts,
            &mut rank,
        )?;
        self.it += 1;
        Ok(t.elapsed().as_secs_f64())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The `--against` comparison: after a warm-up iteration of each, `repeats` pairs; a pair
/// is one iteration of the slower configuration and as many of the faster one as take about
/// as long (from the warm-up), each side's time per iteration. Prints each one's median and
/// fastest time per iteration and the median and range of the pairs' ratios.
fn paired(
    cfg: &Config,
    against: &Against<'_>,
    repeats: usize,
    c: &mut dyn crate::comm::Comm,
) -> Result<()> {
    let mut a = Iterations::new(cfg, c)?;
    let mut b = Iterations::new(against.cfg, c)?;
    let (wa, wb) = (a.step(c)?, b.step(c)?);
    let (ka, kb) = (
        (wb / wa).round().clamp(1.0, 100.0) as usize,
        (wa / wb).round().clamp(1.0, 100.0) as usize,
    );
    let per = |x: &mut Iterations, k: usize, c: &mut dyn crate::comm::Comm| -> Result<f64> {
        let mut t = 0.0;
        for _ in 0..k {
            t += x.step(c)?;
        }
        Ok(t / k as f64)
    };
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..repeats.max(1) {
        ta.push(per(&mut a, ka, c)?);
        tb.push(per(&mut b, kb, c)?);
    }
    let mut ratios: Vec<f64> = ta.iter().zip(&tb).map(|(x, y)| x / y).collect();
    ratios.sort_by(|x, y| x.total_cmp(y));
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let n = ratios.len();
    crate::cli::outln!();
    crate::cli::outln!("| configuration | s / iteration (median of {n}) | fastest |");
    crate::cli::outln!("|---|---|---|");
    crate::cli::outln!(
        "| this config | {:.4} | {:.4} |",
        median(ta.clone()),
        min(&ta)
    );
    crate::cli::outln!(
        "| against {} | {:.4} | {:.4} |",
        against.overrides.join(" "),
        median(tb.clone()),
        min(&tb)
    );
    crate::cli::outln!();
    crate::cli::outln!(
        "ratio of each pair (this config ÷ against, per iteration; a pair = {ka} iteration(s) of this config and {kb} of the other): median {:.4}, range {:.4}–{:.4} over {n} pairs",
        ratios[n / 2],
        ratios[0],
        ratios[n - 1]
    );
    Ok(())
}

fn run_on(cfg: &Config, repeats: usize, c: &mut dyn crate::comm::Comm) -> Result<()> {
    let time = |f: &mut dyn FnMut()| -> f64 {
        f(); // warm-up
        median(
            (0..repeats.max(1))
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    let mut its = Iterations::new(cfg, c)?;
    let mut failed = None;
    let full = time(&mut || {
        if let Err(e) = its.step(c) {
            failed = Some(e);
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let Iterations {
        problem,
        mut state,
        mut gs,
        ..
    } = its;
    // a backend-resident object back to the host for the kernel timings below
    crate::engine::resident::sync(&problem, &mut state, &mut gs)?;
    let n = problem.positions.len();
    let k = &problem.kernel;
    let m = k.fft.size();
    let ph = probe_spectrum(&k.fft, &state.probe);
    let no_probe = time(&mut || {
        std::hint::black_box(gradients(
            k,
            &state.object,
            &ph,
            &problem.positions,
            &problem.intensities,
            false,
        ));
    });
    let with_probe = time(&mut || {
        std::hint::black_box(gradients(
            k,
            &state.object,
            &ph,
            &problem.positions,
            &problem.intensities,
            true,
        ));
    });
    // every position takes half transforms for the probe shift and the probe gradient; each
    // run of positions sharing its sub-pixel y-shift (a raster row) adds the other halves
    // once (backend::cpu::y_runs)
    let runs = crate::backend::cpu::y_runs(&problem.positions).len();
    // multislice: each slice after the first adds a propagation there and back
    // (backend::cpu::{propagate_slice, back_propagate_slice}), 2 2-D transforms each
    let extra = state.object.planes() - 1;
    let ffts = time(&mut || {
        (0..n * k.modes).into_par_iter().for_each_init(
            || {
                (
                    vec![Complex32::new(0.5, 0.1); m * m],
                    vec![Complex32::default(); m * m],
                    vec![Complex32::default(); m * m],
                    k.fft.scratch(),
                )
            },
            |(a, b, t, s), _| {
                k.fft.rows_inverse_raw(a, s);
                for _ in 0..extra {
                    k.fft.convolve_raw(a, &k.propagator, false, t, b, s);
                    k.fft.convolve_raw(b, &k.propagator, true, t, a, s);
                }
                k.fft.forward_t_raw(b, a, s);
                k.fft.inverse_t_raw(a, b, s);
                k.fft.rows_forward_raw(b, s);
            },
        );
        (0..runs * k.modes).into_par_iter().for_each_init(
            || (vec![Complex32::new(0.5, 0.1); m * m], k.fft.scratch()),
            |(a, s), _| {
                k.fft.rows_inverse_raw(a, s);
                k.fft.rows_forward_raw(a, s);
            },
        );
    });
    let threads = rayon::current_num_threads();
    crate::cli::outln!("| what | s / iteration | share |");
    crate::cli::outln!("|---|---|---|");
    let row =
        |name: &str, t: f64| crate::cli::outln!("| {name} | {t:.4} | {:.0} % |", 100.0 * t / full);
    row("full iteration (object + probe, update)", full);
    row(&format!("FFTs alone ({} 2-D transforms of {m}² per position, 2 of them halves, and 2 halves per raster run of {runs})", (4 + 4 * extra) * k.modes), ffts);
    // share of the FFT work without the probe gradient's transform: 2.5 + 4(S − 1) of
    // 3 + 4(S − 1) 2-D transform equivalents per position, 0.5 of 1 per run
    let (pn, rn, xs) = (n as f64, runs as f64, 4.0 * extra as f64);
    let no_probe_share = ((2.5 + xs) * pn + 0.5 * rn) / ((3.0 + xs) * pn + rn);
    row(
        "element-wise: ramps, exit waves, residuals, scatter-add",
        (no_probe - no_probe_share * ffts).max(0.0),
    );
    row(
        "probe gradient (1 FFT + 2 passes per position)",
        (with_probe - no_probe).max(0.0),
    );
    row("update of object and probe", (full - with_probe).max(0.0));
    crate::cli::outln!();
    crate::cli::outln!(
        "{n} positions, {m}x{m}, {} mode(s), {:?} noise model, {threads} threads: {:.4} s per iteration ({:.0} positions/s), median of {repeats}",
        k.modes,
        k.noise,
        full,
        n as f64 / full
    );
    Ok(())
}
