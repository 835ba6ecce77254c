//! `ptytile bench`: time per iteration on a real dataset and where the time goes.
//!
//! Measured, each as the median of `repeats` runs over all positions on the same thread
//! pool: (1) a full iteration (object and probe gradients plus updates); (2) the kernel
//! without the probe gradient; (3) the kernel with it; (4) the FFTs alone (the transforms
//! per position and mode of (3), with the same plans and layout: 4 two-dimensional ones, or
//! for positions in a run sharing their sub-pixel y-shift 2 plus 2 row-only halves).
//! Derived: probe gradient = (3) − (2); element-wise work (sub-pixel ramps, exit waves,
//! residuals, scatter-add) = (2) − (the no-probe-gradient share of (4)); update = (1) − (3).

use crate::backend::cpu::gradients;
use crate::backend::kernel::probe_spectrum;
use crate::config::Config;
use crate::data::DataFile;
use crate::engine::gd::{self, Options};
use crate::error::Result;
use num_complex::Complex32;
use rayon::prelude::*;
use std::time::Instant;

/// Run the benchmark; prints a Markdown table to stdout.
pub fn run(cfg: &Config, repeats: usize) -> Result<()> {
    crate::comm::run_threads(1, |mut c| run_on(cfg, repeats, &mut c)).map(|_| ())
}

fn run_on(cfg: &Config, repeats: usize, c: &mut dyn crate::comm::Comm) -> Result<()> {
    let df = DataFile::open(cfg)?;
    let plan = crate::tiling::plan(&df.centres, df.m, df.object_shape, [1, 1])?;
    let rp = &plan.ranks[0];
    let (problem, mut state) = crate::driver::setup(cfg, &df, rp, c)?;
    let opts = Options::from(&cfg.reconstruction);
    let n = problem.positions.len();
    let k = &problem.kernel;
    let m = k.fft.size();
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
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
    let mut it = 1usize;
    let mut failed = None;
    let mut gs = gd::GdState::default();
    let full = {
        let mut rank = gd::Rank::new(rp, c, gd::Decomposition::Tiled);
        time(&mut || {
            if let Err(e) = gd::iterate(
                &problem,
                &mut state,
                &mut gs,
                it.max(opts.probe_update_start),
                &opts,
                &mut rank,
            ) {
                failed = Some(e);
            }
            it += 1;
        })
    };
    if let Some(e) = failed {
        return Err(e);
    }
    // a backend-resident object back to the host for the kernel timings below
    crate::engine::resident::sync(&problem, &mut state, &mut gs)?;
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
    let ffts = time(&mut || {
        (0..n * k.modes).into_par_iter().for_each_init(
            || {
                (
                    vec![Complex32::new(0.5, 0.1); m * m],
                    vec![Complex32::default(); m * m],
                    k.fft.scratch(),
                )
            },
            |(a, b, s), _| {
                k.fft.rows_inverse_raw(a, s);
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
    row(&format!("FFTs alone ({} 2-D transforms of {m}² per position, 2 of them halves, and 2 halves per raster run of {runs})", 4 * k.modes), ffts);
    // share of the FFT work without the probe gradient's transform: 2.5 of 3 2-D transform
    // equivalents per position, 0.5 of 1 per run
    let (pn, rn) = (n as f64, runs as f64);
    let no_probe_share = (2.5 * pn + 0.5 * rn) / (3.0 * pn + rn);
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
