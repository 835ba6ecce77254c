//! `ptytile bench gpu`: one rank's gradient kernel on a GPU backend for a synthetic problem
//! (docs/gpu.md, "Benchmark"): N positions on a raster with 2.2-pixel steps (the PbTiO3
//! sampling), M × M patterns, K probe modes, the probe formed for the PbTiO3 microscope
//! (300 kV, 22 mrad, 15 nm underfocus), counts from the model of a phase object.
//!
//! Measured: the wall time per iteration (gradients of object and probe over all
//! positions, plus the object and probe update on the host), the median of `repeats`; the
//! device time of each phase from events of one profiled iteration; and one
//! device-to-device copy of the iteration's compulsory bytes, by events. Reported: achieved
//! bytes/s of the iteration against the copy's.

use crate::backend::kernel::{probe_spectrum, Kernel};
use crate::backend::{gpu, BackendKind, Selection};
use crate::config::NoiseModel;
use crate::error::{Error, Result};
use crate::physics::fft::Fft2;
use crate::physics::model::{Field, PositionGeom};
use crate::physics::{electron_wavelength_m, pixel_size_from_angular_m, Experiment};
use num_complex::Complex32 as C;
use std::sync::Arc;
use std::time::Instant;

/// What to run.
#[derive(Debug, Clone)]
pub struct GpuBench {
    /// cuda or hip.
    pub backend: BackendKind,
    /// Number of scan positions.
    pub positions: usize,
    /// Pattern side M (pixels).
    pub m: usize,
    /// Probe modes K.
    pub modes: usize,
    /// Timed iterations (the median is reported).
    pub repeats: usize,
    /// Also write the figures as CSV here.
    pub output: Option<std::path::PathBuf>,
}

/// Parse `--synthetic N,M`.
pub fn parse_synthetic(s: &str) -> Result<(usize, usize)> {
    let bad = || {
        Error::new(
            "--synthetic",
            format!("'{s}' is not POSITIONS,SIZE (e.g. 16632,128)"),
        )
    };
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    match v[..] {
        [n, m] if n > 0 && m >= 8 && m % 2 == 0 && m <= 4096 => Ok((n, m)),
        _ => Err(bad()),
    }
}

/// The synthetic problem.
struct Synthetic {
    kernel: Kernel<f32>,
    /// The true object (a weak phase object).
    obj: Field<C>,
    /// K probe modes, [K][y][x].
    probe: Vec<C>,
    pos: Vec<PositionGeom<f32>>,
}

/// The synthetic problem: raster positions (rows × cols ≥ n, row-major, first n kept) with
/// 2.2-pixel steps, an object covering them with a margin, and the probe.
fn problem(n: usize, m: usize, modes: usize) -> Result<Synthetic> {
    let rows = (n as f64).sqrt().floor().max(1.0) as usize;
    let cols = n.div_ceil(rows);
    let step = 2.2;
    let shape = [
        (step * rows as f64) as usize + m + 8,
        (step * cols as f64) as usize + m + 8,
    ];
    let pos: Vec<PositionGeom<f32>> = (0..n)
        .map(|j| {
            let c = [
                (m / 2 + 4) as f64 + step * (j / cols) as f64,
                (m / 2 + 4) as f64 + step * (j % cols) as f64 + 0.37,
            ];
            PositionGeom::new(j, c, m)
        })
        .collect();
    // a weak phase object: a lattice of Gaussian-ish bumps, 0.4 rad
    let obj = Field {
        origin: [0, 0],
        shape,
        data: (0..shape[0] * shape[1])
            .map(|i| {
                let (y, x) = ((i / shape[1]) as f32, (i % shape[1]) as f32);
                let ph = 0.2 * ((y * 0.61).sin() * (x * 0.53).cos() + 1.0);
                C::from_polar(1.0, ph)
            })
            .collect(),
    };
    let wl = electron_wavelength_m(300e3);
    let dtheta = 0.841_345_68e-3;
    let px = pixel_size_from_angular_m(wl, m, dtheta);
    let exp = Experiment {
        wavelength_m: wl,
        pixel_size_m: [px, px],
        detector_px: m,
        convergence_semiangle_rad: Some(22e-3),
        defocus_m: 150e-10,
        c30_m: 0.0,
        dtheta_rad: dtheta,
    };
    let p0 = crate::physics::probe::form_probe(&exp, 16_300.0)?;
    let probe = crate::physics::probe::initial_modes(&p0, m, modes);
    let kernel = Kernel {
        fft: Fft2::new(m),
        modes,
        noise: NoiseModel::Poisson,
        eps: 1e-3,
        weights: None,
        propagator: Vec::new(),
    };
    Ok(Synthetic {
        kernel,
        obj,
        probe,
        pos,
    })
}

/// Run the benchmark; prints a Markdown table and the summary to stdout.
pub fn run(b: &GpuBench) -> Result<()> {
    if b.backend == BackendKind::Cpu {
        return Err(Error::new(
            "--backend",
            "bench gpu times a GPU backend: cuda or hip",
        ));
    }
    let (n, m, k) = (b.positions, b.m, b.modes);
    let mm = m * m;
    let t0 = Instant::now();
    let Synthetic {
        kernel,
        obj,
        probe,
        pos,
    } = problem(n, m, k)?;
    let pos: Arc<[PositionGeom<f32>]> = pos.into();
    let lr = crate::backend::local_rank().unwrap_or(0);
    // counts: the model of the object, rounded, computed on the device itself
    let ph = probe_spectrum(&kernel.fft, &probe);
    let counts: Vec<f32> = {
        let dev = gpu::open_profiled(
            b.backend,
            &kernel,
            pos.clone(),
            vec![0f32; n * mm].into(),
            lr,
        )?;
        dev.model_intensities(&obj, &ph, Selection::Range(0..n))?
            .iter()
            .map(|v| v.round())
            .collect()
    };
    let dev = gpu::open_profiled(b.backend, &kernel, pos.clone(), counts.into(), lr)?;
    crate::cli::outln!(
        "{}: {} ({:.1} s to set up)",
        b.backend.name(),
        dev.device(),
        t0.elapsed().as_secs_f64()
    );
    // the reconstruction starts from a flat object
    let mut o = Field {
        origin: obj.origin,
        shape: obj.shape,
        data: vec![C::new(1.0, 0.0); obj.data.len()],
    };
    let mut p_hat = ph.clone();
    let step = |o: &mut Field<C>, p_hat: &mut Vec<C>| -> Result<(f64, f64)> {
        let t = Instant::now();
        let g = dev.gradients(o, p_hat, Selection::Range(0..n), true)?;
        let tg = t.elapsed().as_secs_f64();
        let dmax = g.d_obj.data.iter().cloned().fold(0.0, f64::max);
        for ((z, gz), d) in o.data.iter_mut().zip(&g.g_obj.data).zip(&g.d_obj.data) {
            let s = 1.0 / (d + 0.1 * dmax).max(1e-30);
            *z -= C::new((gz.re * s) as f32, (gz.im * s) as f32);
        }
        let dp = g.d_probe.iter().cloned().fold(0.0, f64::max).max(1e-30);
        for (p, gp) in p_hat.iter_mut().zip(&g.g_probe_hat) {
            *p -= C::new((gp.re * 0.1 / dp) as f32, (gp.im * 0.1 / dp) as f32);
        }
        Ok((tg, t.elapsed().as_secs_f64()))
    };
    step(&mut o, &mut p_hat)?; // warm-up: plans, caches
    let mut times: Vec<(f64, f64)> = (0..b.repeats.max(1))
        .map(|_| step(&mut o, &mut p_hat))
        .collect::<Result<_>>()?;
    times.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (t_grad, t_iter) = times[times.len() / 2];
    let before = dev.bytes_moved();
    step(&mut o, &mut p_hat)?;
    let after = dev.bytes_moved();
    let moved = [after[0] - before[0], after[1] - before[1]];
    dev.set_profile(true);
    step(&mut o, &mut p_hat)?;
    dev.set_profile(false);
    let phases = dev.last_profile()?;
    // compulsory bytes: intensities read once, object in, object sums (g complex f64, d f64) out
    let hw = obj.shape[0] * obj.shape[1];
    let bytes = n * mm * 4 + hw * 8 + hw * 24 + k * mm * 8 * 3;
    let copy = (0..3)
        .map(|_| dev.copy_ms(bytes))
        .collect::<Result<Vec<_>>>()?;
    let t_copy = copy.iter().cloned().fold(f64::INFINITY, f64::min) / 1e3;
    crate::cli::outln!();
    crate::cli::outln!("| phase (device time, one profiled iteration) | ms | share |");
    crate::cli::outln!("|---|---|---|");
    let whole = phases.first().map_or(f64::NAN, |p| p.1);
    for (name, ms) in &phases {
        crate::cli::outln!("| {name} | {ms:.3} | {:.0} % |", 100.0 * ms / whole);
    }
    crate::cli::outln!();
    let gbs = |b: f64, t: f64| b / t / 1e9;
    crate::cli::outln!(
        "{n} positions x {m}x{m} x {k} mode(s), batches of {}, object {}x{}",
        dev.batch(),
        obj.shape[0],
        obj.shape[1]
    );
    crate::cli::outln!(
        "iteration (gradients + update on the host): {:.3} ms (gradients {:.3} ms), median of {}",
        t_iter * 1e3,
        t_grad * 1e3,
        b.repeats.max(1)
    );
    crate::cli::outln!(
        "host <-> device per iteration (counted by the backend): {:.3} MB up, {:.3} MB down",
        moved[0] as f64 / 1e6,
        moved[1] as f64 / 1e6
    );
    crate::cli::outln!("compulsory bytes per iteration: {:.3} GB (intensities, object in, sums out) -> {:.0} GB/s achieved", bytes as f64 / 1e9, gbs(bytes as f64, t_iter));
    crate::cli::outln!(
        "device-to-device copy of the same bytes: {:.3} ms -> {:.0} GB/s counting read + write; the iteration takes {:.1} x the copy time",
        t_copy * 1e3,
        gbs(2.0 * bytes as f64, t_copy),
        t_iter / t_copy
    );
    let (t_res, moved_res) = resident_iteration(&*dev, &o, &mut p_hat, n, b.repeats)?;
    crate::cli::outln!(
        "resident iteration (gd's main mode: object and sums stay on the device): {:.3} ms, median of {}; host <-> device per iteration: {} B up, {} B down",
        t_res * 1e3,
        b.repeats.max(1),
        moved_res[0],
        moved_res[1]
    );
    if let Some(path) = &b.output {
        let mut csv = String::from("what,value,unit\n");
        for (k2, v, u) in [
            ("positions", n as f64, "1"),
            ("m", m as f64, "px"),
            ("modes", k as f64, "1"),
            ("iteration", t_iter * 1e3, "ms"),
            ("gradients", t_grad * 1e3, "ms"),
            ("compulsory_bytes", bytes as f64, "B"),
            ("bytes_to_device", moved[0] as f64, "B"),
            ("bytes_to_host", moved[1] as f64, "B"),
            ("copy", t_copy * 1e3, "ms"),
            ("resident_iteration", t_res * 1e3, "ms"),
            ("resident_bytes_to_device", moved_res[0] as f64, "B"),
            ("resident_bytes_to_host", moved_res[1] as f64, "B"),
        ] {
            csv.push_str(&format!("{k2},{v},{u}\n"));
        }
        for (name, ms) in &phases {
            csv.push_str(&format!("\"phase: {name}\",{ms},ms\n"));
        }
        crate::output::write_atomic(path, csv.as_bytes())?;
        crate::cli::outln!("wrote {}", path.display());
    }
    Ok(())
}

/// The same descent with the object and its sums resident on the device
/// ([`crate::backend::resident::Resident`], docs/gpu.md "Resident state"): one rank, so no
/// halo; the object step on the device, the probe step on the host. Returns the median
/// wall time of `repeats` iterations (after a warm-up) and the bytes one steady iteration
/// moves [up, down].
///
/// Errors: a backend without a resident store; a device failure.
fn resident_iteration(
    dev: &dyn gpu::Profiled,
    obj: &Field<C>,
    p_hat: &mut [C],
    n: usize,
    repeats: usize,
) -> Result<(f64, [u64; 2])> {
    let r = dev
        .resident()
        .ok_or_else(|| Error::new("bench", "the backend keeps no resident object"))?;
    r.load_object(obj)?;
    let tile = crate::tiling::Rect::from_origin_shape(obj.origin, obj.shape);
    let step = |p_hat: &mut [C]| -> Result<f64> {
        let t = Instant::now();
        r.accumulate(p_hat, Selection::Range(0..n), true, true)?;
        let dmax = r.max_d(&tile)?;
        // the host step above: O -= g / (d + 0.1 max d)
        r.update_object(&tile, 1.0, 1.0, 0.1 * dmax)?;
        let (gp, dp) = r.probe_sums()?;
        let dp = dp.iter().cloned().fold(0.0, f64::max).max(1e-30);
        for (p, gp) in p_hat.iter_mut().zip(&gp) {
            *p -= C::new((gp.re * 0.1 / dp) as f32, (gp.im * 0.1 / dp) as f32);
        }
        Ok(t.elapsed().as_secs_f64())
    };
    step(p_hat)?; // warm-up: selection and probe uploads
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| step(p_hat))
        .collect::<Result<_>>()?;
    times.sort_by(|a, b| a.total_cmp(b));
    let before = dev.bytes_moved();
    step(p_hat)?;
    let after = dev.bytes_moved();
    Ok((
        times[times.len() / 2],
        [after[0] - before[0], after[1] - before[1]],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_spec_parses_and_rejects() {
        assert_eq!(parse_synthetic("16632,128").unwrap(), (16632, 128));
        assert_eq!(parse_synthetic(" 10 , 64 ").unwrap(), (10, 64));
        for bad in ["16632", "0,128", "10,7", "10,x", "1,2,3"] {
            assert_eq!(
                parse_synthetic(bad).unwrap_err().what,
                "--synthetic",
                "{bad}"
            );
        }
    }

    #[test]
    fn synthetic_problem_fits_its_object() {
        let s = problem(1000, 32, 2).unwrap();
        assert_eq!(
            (s.pos.len(), s.probe.len(), s.kernel.modes),
            (1000, 2 * 32 * 32, 2)
        );
        // every window inside the object, as the kernels require
        crate::backend::window_offsets(&s.obj, 32, s.pos.iter()).unwrap();
    }
}
