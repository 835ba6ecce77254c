//! `ptytile reconstruct`: wire data → physics → engine → output.

use crate::backend::cpu::Kernel;
use crate::config::Config;
use crate::data::DataFile;
use crate::engine::gd::{self, Options, Problem, State};
use crate::error::{Error, Result};
use crate::output::ReconResult;
use crate::physics::fft::Fft2;
use crate::physics::model::{Field, PositionGeom};
use crate::physics::probe;
use num_complex::Complex32;
use std::time::Instant;

/// Build the problem (all positions of the file) and the initial state.
///
/// Probe: `data.probe` if given (its total power rescaled to the mean counts per pattern;
/// extra modes added when K exceeds the file's), else formed from `[experiment]`.
/// Object: 1 everywhere.
pub fn setup(cfg: &Config, df: &DataFile) -> Result<(Problem<f32>, State<f32>)> {
    let m = df.m;
    let indices: Vec<usize> = (0..df.n).collect();
    let intensities = df.read_intensities(&indices)?;
    let mm = m * m;
    let mean_counts = intensities.iter().map(|v| *v as f64).sum::<f64>() / df.n as f64;
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
    let positions: Vec<PositionGeom<f32>> = df.centres.iter().enumerate().map(|(j, c)| PositionGeom::new(j, *c, m)).collect();
    let kernel = Kernel { fft: Fft2::new(m), modes: k, noise: cfg.reconstruction.noise_model, eps: (1e-6 * mean_counts / mm as f64).max(1e-12) as f32 };
    let state = State { object: Field::filled([0, 0], df.object_shape, Complex32::new(1.0, 0.0)), probe };
    Ok((Problem { kernel, positions, intensities }, state))
}

/// Run the reconstruction described by `cfg`; returns the result (not yet written).
/// `progress` is called after every iteration with (iteration, loss per pattern, seconds,
/// positions processed).
pub fn run(cfg: &Config, mut progress: impl FnMut(usize, f64, f64, usize)) -> Result<ReconResult> {
    let df = DataFile::open(cfg)?;
    tracing::info!(
        "{}: {} patterns of {}x{}, object {}x{} px of {:.4} Å, λ = {:.5} Å",
        df.path.display(),
        df.n,
        df.m,
        df.m,
        df.object_shape[0],
        df.object_shape[1],
        df.experiment.pixel_size_m[0] * 1e10,
        df.experiment.wavelength_m * 1e10
    );
    let (problem, mut state) = setup(cfg, &df)?;
    let opts = Options::from(&cfg.reconstruction);
    let mut loss = Vec::with_capacity(cfg.reconstruction.iterations);
    let t0 = Instant::now();
    for it in 0..cfg.reconstruction.iterations {
        let t = Instant::now();
        let st = gd::iterate(&problem, &mut state, it, &opts);
        let l = st.loss / df.n as f64;
        if !l.is_finite() {
            return Err(Error::new("reconstruction", format!("loss became {l} at iteration {it}")));
        }
        loss.push(l);
        progress(it, l, t.elapsed().as_secs_f64(), df.n);
    }
    let secs = t0.elapsed().as_secs_f64();
    Ok(ReconResult {
        object: state.object,
        pixel_size_m: df.experiment.pixel_size_m,
        probe: state.probe,
        modes: cfg.reconstruction.probe_modes,
        m: df.m,
        positions_px: df.centres.clone(),
        loss,
        config_toml: cfg.to_toml(),
        attrs: vec![
            ("wall_time_s".into(), secs),
            ("seconds_per_iteration".into(), secs / cfg.reconstruction.iterations.max(1) as f64),
            ("wavelength_m".into(), df.experiment.wavelength_m),
        ],
    })
}
