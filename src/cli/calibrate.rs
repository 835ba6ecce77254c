//! `ptytile calibrate CONFIG.toml`: measure the scan–detector orientation, the convergence
//! semi-angle and the defocus from the data (`data::calibrate`), print them as TOML lines to
//! paste into the config, each with its uncertainty, and draw the centre-of-mass field and
//! the curl fit beside the result path (`<stem>_calibrate_com.png`,
//! `<stem>_calibrate_fit.png`). A fit that fails prints one line naming the key to set by
//! hand and makes the exit code 2.
//!
//! X-ray data (`experiment.beam = "xray"`) have no bright-field parallax to read: there
//! the defocus is found by a search over quadratic-phase candidates, each scored by the loss
//! after a few iterations of the configured reconstruction ([`measure_defocus`],
//! docs/algorithm.md §16).

use crate::config::{Beam, Config};
use crate::data::calibrate::{
    calibrate, fit_disk, mean_pattern, search_defocus, Calibration, DefocusSearch, Estimate, Setup,
};
use crate::data::DataFile;
use crate::error::{Error, Result, EXIT_USAGE};
use crate::output::png::{Image, Pixels};
use std::path::PathBuf;

/// The scan step of `cfg` in m. Errors (`data.scan_step_m`): none given.
pub fn scan_step_m(cfg: &Config) -> Result<f64> {
    match (cfg.data.scan_step_m, cfg.data.scan_step_angstrom) {
        (Some(m), _) => Ok(m),
        (None, Some(a)) => Ok(a * 1e-10),
        (None, None) => Err(Error::new("data.scan_step_m", "missing: the calibration needs the scan step (data.scan_step_m or data.scan_step_angstrom)")),
    }
}

/// Calibrate the data of `cfg` (the config's own values of the measured keys are ignored).
///
/// Errors: the data cannot be opened or read, it is not a raster scan (`data.format`).
pub fn measure(cfg: &Config) -> Result<Calibration> {
    let mut cfg = cfg.clone();
    cfg.auto.clear();
    let cfg = &cfg;
    let df = DataFile::open(cfg)?;
    crate::data::calibrate::scan_shape(&df)?;
    let setup = Setup {
        step_m: scan_step_m(cfg)?,
        dtheta_rad: df.experiment.dtheta_rad,
    };
    calibrate(&df, setup)
}

/// The defocus of `cfg`'s data by the quadratic-phase search ([`search_defocus`]): the
/// pupil's outer semi-angle α is `experiment.convergence_semiangle_mrad` when known, else
/// the radius of the mean pattern's bright disk ([`fit_disk`]); each candidate Δf is scored
/// by the loss after a few iterations of `cfg`'s reconstruction (its engine, noise model,
/// probe modes and probe update; a `[[schedule]]` dropped; nothing written) from the probe
/// formed with `experiment.defocus_m = Δf` (√ of the mean pattern, or the aperture, times
/// exp(−iχ)). The config's own defocus is ignored.
///
/// Errors (`experiment.defocus_m`, "set it by hand"): a first probe that a defocus does not
/// change (`data.probe` or `data.initial` given), an MPI launch (the search runs in one
/// process: run `ptytile calibrate` first), no bright pupil in the mean pattern, those of
/// [`search_defocus`]; and the data's own errors (unreadable file, bad metadata).
pub fn measure_defocus(cfg: &Config) -> Result<DefocusSearch> {
    let key = "experiment.defocus_m";
    if cfg.data.probe.is_some() || cfg.data.initial.is_some() {
        return Err(Error::new(
            key,
            "data.probe or data.initial gives the first probe, so the defocus changes nothing: give a value or leave the key out",
        ));
    }
    if crate::comm::launcher_env().is_some_and(|l| l.size > 1) {
        return Err(Error::new(
            key,
            "the defocus search runs in one process, not under an MPI launcher: run `ptytile calibrate` first and set the value it prints",
        ));
    }
    let mut c = cfg.clone();
    c.auto.clear();
    let (wavelength, alpha, radius) = {
        let df = DataFile::open(&c)?;
        let e = &df.experiment;
        match e.convergence_semiangle_rad {
            Some(a) => (e.wavelength_m, a, a / e.dtheta_rad),
            None => {
                let mean = mean_pattern(&df, df.n, df.m)?;
                let d = fit_disk(&mean, df.m).map_err(|x| {
                    Error::new(
                        key,
                        format!("no pupil in the mean pattern ({}): set it by hand", x.msg),
                    )
                })?;
                let r = d.radius_px.value;
                (e.wavelength_m, r * e.dtheta_rad, r)
            }
        }
    };
    // the scoring runs: the configured reconstruction, shortened, writing nothing
    c.schedule.clear();
    c.checkpoint.every = 0;
    let mut score = |d: f64, n: usize| -> Result<f64> {
        c.experiment.defocus_m = Some(d);
        c.reconstruction.iterations = Some(n);
        let r = crate::driver::run(&c, &|_, _, _, _| {})?;
        r.and_then(|r| r.loss.last().copied())
            .ok_or_else(|| Error::new(key, "a scoring run returned no loss"))
    };
    search_defocus(wavelength, alpha, radius, &mut score)
}

/// One line for the log: the defocus found by `s` and how.
pub fn defocus_line(s: &DefocusSearch) -> String {
    format!(
        "experiment.defocus_m = {:.4e} ± {:.1e} (quadratic-phase search: {})",
        s.defocus_m.value,
        s.defocus_m.sigma,
        search_how(s)
    )
}

/// How the search `s` went, for the log line and the TOML comment: the candidates, their
/// spacing, the refined ones and the iterations spent.
fn search_how(s: &DefocusSearch) -> String {
    format!(
        "{} candidates {:.2e} m apart, {} refined, {} iterations in all",
        s.coarse.len(),
        s.step_m,
        s.fine.len(),
        s.iterations
    )
}

/// Replace the keys of `cfg` given as `"auto"` ([`Config::auto`]) by the values measured
/// from its data ([`measure`]; with `experiment.beam = "xray"`, `experiment.defocus_m` by
/// [`measure_defocus`] instead); keys the user gave are never touched. Returns one line per
/// key set (`key = value ± sigma`), for the log; the resolved config (and so the result's
/// stored `config` attribute and the checkpoint identity) holds the values.
///
/// Errors: those of [`measure`] and [`measure_defocus`]; a fit that failed (naming its key,
/// "set it by hand");
/// `data.scan_rotation_deg` measured for the other `data.detector_transpose` than the one
/// the config sets.
pub fn resolve_auto(cfg: &mut Config) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    if cfg.experiment.beam == Beam::Xray && cfg.auto.iter().any(|k| k == "experiment.defocus_m") {
        // X-ray: no bright-field parallax; the quadratic-phase search (§16)
        cfg.auto.retain(|k| k != "experiment.defocus_m");
        let s = measure_defocus(cfg)?;
        cfg.experiment.defocus_m = Some(s.defocus_m.value);
        lines.push(defocus_line(&s));
        cfg.validate()?;
    }
    if cfg.auto.is_empty() {
        return Ok(lines);
    }
    let c = measure(cfg)?;
    let auto = std::mem::take(&mut cfg.auto);
    let given_transpose = !auto.iter().any(|k| k == "data.detector_transpose");
    for key in &auto {
        match key.as_str() {
            "data.detector_transpose" => {
                let t = c.detector_transpose.clone()?;
                cfg.data.detector_transpose = t;
                lines.push(format!("{key} = {t}"));
            }
            "data.scan_rotation_deg" => {
                let t = c.detector_transpose.clone()?;
                if given_transpose && t != cfg.data.detector_transpose {
                    return Err(Error::new(
                        key,
                        format!("the data say data.detector_transpose = {t}, the config sets {}: make that \"auto\" too, or set the rotation by hand", cfg.data.detector_transpose),
                    ));
                }
                let r = c.scan_rotation_deg.clone()?;
                cfg.data.scan_rotation_deg = r.value;
                lines.push(format!("{key} = {:.3} ± {:.3}", r.value, r.sigma));
            }
            "experiment.convergence_semiangle_mrad" => {
                let a = c.convergence_semiangle_mrad.clone()?;
                cfg.experiment.convergence_semiangle_mrad = Some(a.value);
                lines.push(format!("{key} = {:.3} ± {:.3}", a.value, a.sigma));
            }
            "experiment.defocus_m" => {
                let d = c.defocus_m.clone()?;
                cfg.experiment.defocus_m = Some(d.value);
                lines.push(format!("{key} = {:.4e} ± {:.1e}", d.value, d.sigma));
            }
            other => return Err(Error::new(other, "cannot be \"auto\"")),
        }
    }
    cfg.validate()?;
    Ok(lines)
}

/// The TOML lines of `c` (values with their uncertainty as a comment) and the errors of the
/// fits that failed.
pub fn report(c: &Calibration) -> (String, Vec<Error>) {
    let mut text = String::new();
    let mut errors = Vec::new();
    fn put(
        text: &mut String,
        errors: &mut Vec<Error>,
        key: &str,
        v: std::result::Result<String, Error>,
    ) {
        match v {
            Ok(s) => text.push_str(&format!("{key} = {s}\n")),
            Err(e) => errors.push(e),
        }
    }
    let pm = |e: &Estimate, prec: usize| format!("{:.*}   # ± {:.*}", prec, e.value, prec, e.sigma);
    text.push_str("[data]\n");
    let how = match (&c.com, &c.parallax) {
        (Ok(f), _) => format!(
            "curl left at the best angle: {:.3} not transposed, {:.3} transposed; divergence vs dark field {:+.2}",
            f.curl_ratio[0], f.curl_ratio[1], f.divergence_dark_field
        ),
        (Err(_), Ok(_)) => "from the parallax alone".to_string(),
        _ => String::new(),
    };
    put(
        &mut text,
        &mut errors,
        "detector_transpose",
        c.detector_transpose
            .clone()
            .map(|t| format!("{t}   # {how}")),
    );
    let com_says = c
        .com
        .as_ref()
        .ok()
        .zip(c.detector_transpose.as_ref().ok())
        .map(|(f, t)| f.rotation_deg[*t as usize]);
    put(
        &mut text,
        &mut errors,
        "scan_rotation_deg",
        c.scan_rotation_deg.clone().map(|r| {
            let mut s = pm(&r, 2);
            if let Some(cm) = com_says {
                s += &format!(
                    "; centre-of-mass curl fit {:.2} ± {:.2}",
                    cm.value, cm.sigma
                );
            }
            if let Ok(p) = &c.parallax {
                s += &format!(
                    "; parallax shifts up to {:.1} scan steps",
                    p.max_shift_steps
                );
            }
            s
        }),
    );
    text.push_str("[experiment]\n");
    put(
        &mut text,
        &mut errors,
        "convergence_semiangle_mrad",
        c.convergence_semiangle_mrad.clone().map(|a| {
            let r = c
                .disk
                .as_ref()
                .map(|d| {
                    format!(
                        "; bright-field disk radius {:.2} ± {:.2} px",
                        d.radius_px.value, d.radius_px.sigma
                    )
                })
                .unwrap_or_default();
            format!("{}{r}", pm(&a, 2))
        }),
    );
    put(
        &mut text,
        &mut errors,
        "defocus_m",
        c.defocus_m.clone().map(|d| format!("{:.4e}   # ± {:.1e}; positive = underfocus, C10 = −defocus_m; bright-field parallax", d.value, d.sigma)),
    );
    (text, errors)
}

/// `ptytile calibrate`: print the report, write the pictures (when `output.png`); exit code
/// 0, or [`EXIT_USAGE`] when a fit failed (each named on stderr).
pub fn run(cfg: &Config) -> Result<i32> {
    if cfg.experiment.beam == Beam::Xray {
        return run_xray(cfg);
    }
    let c = measure(cfg)?;
    let (text, errors) = report(&c);
    crate::cli::outln!(
        "# ptytile calibrate {}: {}x{} scan of {}x{} patterns",
        cfg.data.file.display(),
        c.scan[0],
        c.scan[1],
        c.m,
        c.m
    );
    crate::cli::out!("{text}");
    if cfg.output.png {
        for p in pictures(cfg, &c)? {
            crate::cli::outln!("# wrote {}", p.display());
        }
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    Ok(if errors.is_empty() { 0 } else { EXIT_USAGE })
}

/// `ptytile calibrate` on X-ray data: the defocus by the quadratic-phase search
/// ([`measure_defocus`]) as a TOML line, with every candidate's loss as comments. Exit code
/// 0; a failed search is an error naming `experiment.defocus_m` (exit code 2).
fn run_xray(cfg: &Config) -> Result<i32> {
    let s = measure_defocus(cfg)?;
    crate::cli::outln!(
        "# ptytile calibrate {}: X-ray data, defocus by a quadratic-phase search",
        cfg.data.file.display()
    );
    crate::cli::outln!(
        "# coarse: loss after {} iterations",
        crate::data::calibrate::DEFOCUS_COARSE_ITERATIONS
    );
    for (d, l) in &s.coarse {
        crate::cli::outln!("#   defocus {d:+.4e} m: {l:.6e}");
    }
    crate::cli::outln!(
        "# refined: loss after {} iterations",
        crate::data::calibrate::DEFOCUS_FINE_ITERATIONS
    );
    for (d, l) in &s.fine {
        crate::cli::outln!("#   defocus {d:+.4e} m: {l:.6e}");
    }
    crate::cli::outln!("[experiment]");
    crate::cli::outln!(
        "defocus_m = {:.4e}   # ± {:.1e}; positive = underfocus; {}",
        s.defocus_m.value,
        s.defocus_m.sigma,
        search_how(&s)
    );
    Ok(0)
}

/// Write `<stem>_calibrate_com.png` (the COM field in scan coordinates: hue = direction,
/// brightness = magnitude; beside it the divergence, grey) and `<stem>_calibrate_fit.png`
/// (the curl left against θ, both candidates) beside `output.path`.
///
/// Errors: an output that is one of the inputs, a write or drawing failure (naming the file).
pub fn pictures(cfg: &Config, c: &Calibration) -> Result<Vec<PathBuf>> {
    let out = &cfg.output.path;
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "recon".into());
    let inputs = cfg.inputs();
    let mut written = Vec::new();
    if let Some(d) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)
            .map_err(|e| Error::new(d.display().to_string(), e.to_string()))?;
    }
    let com_path = out.with_file_name(crate::output::png_name(&stem, "calibrate_com"));
    inputs.check_output("output.path", &com_path)?;
    com_picture(c).write_atomic(&com_path)?;
    written.push(com_path);
    if let Ok(f) = &c.com {
        let fit_path = out.with_file_name(crate::output::png_name(&stem, "calibrate_fit"));
        inputs.check_output("output.path", &fit_path)?;
        let chosen = c.scan_rotation_deg.as_ref().ok().map(|r| r.value);
        fit_plot(&f.curve, chosen)?.write_atomic(&fit_path)?;
        written.push(fit_path);
    }
    Ok(written)
}

/// HSV (h in turns, s = 1, v ∈ [0, 1]) to RGB bytes.
fn hue(h: f64, v: f64) -> [u8; 3] {
    let h6 = h.rem_euclid(1.0) * 6.0;
    let f = h6 - h6.floor();
    let (p, q, t) = (0.0, 1.0 - f, f);
    let (r, g, b) = match h6 as usize {
        0 => (1.0, t, p),
        1 => (q, 1.0, p),
        2 => (p, 1.0, t),
        3 => (p, q, 1.0),
        4 => (t, p, 1.0),
        _ => (1.0, p, q),
    };
    [
        (r * v * 255.0) as u8,
        (g * v * 255.0) as u8,
        (b * v * 255.0) as u8,
    ]
}

/// The COM field and its divergence side by side, enlarged to about 300 px each.
fn com_picture(c: &Calibration) -> Image {
    let [sy, sx] = c.scan;
    let s = (300 / sy.max(sx).max(1)).clamp(1, 8);
    let gap = 4;
    let (w, h) = (2 * sx * s + gap, sy * s);
    let mut data = vec![255u8; w * h * 3];
    let mut mags: Vec<f64> = c.com_field.iter().map(|g| g[0].hypot(g[1])).collect();
    let mut sorted = mags.clone();
    sorted.sort_by(f64::total_cmp);
    let top = sorted
        .get(sorted.len() * 99 / 100)
        .copied()
        .unwrap_or(0.0)
        .max(1e-300);
    mags.iter_mut().for_each(|m| *m = (*m / top).min(1.0));
    let div: Vec<f32> = c.divergence.iter().map(|v| -*v as f32).collect();
    let grey = crate::output::png::percentile_to_u8(&div);
    for y in 0..h {
        for x in 0..sx * s {
            let j = (y / s) * sx + x / s;
            let g = c.com_field[j];
            let rgb = hue(g[0].atan2(g[1]) / std::f64::consts::TAU, mags[j]);
            data[3 * (y * w + x)..3 * (y * w + x) + 3].copy_from_slice(&rgb);
            let xo = x + sx * s + gap;
            data[3 * (y * w + xo)..3 * (y * w + xo) + 3].copy_from_slice(&[grey[j]; 3]);
        }
    }
    Image {
        width: w,
        height: h,
        pixels: Pixels::Rgb8,
        data,
    }
}

/// The curl left E(θ)/λ_max against θ (degrees) for both candidates, the chosen θ marked.
fn fit_plot(curve: &[Vec<f64>; 2], chosen: Option<f64>) -> Result<Image> {
    use crate::output::plot::{font, DATA_RGB, PLOT_WH, THRESHOLD_RGB};
    use plotters::prelude::*;
    let (w, hgt) = PLOT_WH;
    let mut buf = vec![255u8; (w * hgt * 3) as usize];
    let text = font();
    let e = |x: String| Error::new("calibration plot", x);
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, hgt)).into_drawing_area();
        let mut b = ChartBuilder::on(&root);
        b.margin(14)
            .x_label_area_size(if text { 44 } else { 5 })
            .y_label_area_size(if text { 60 } else { 5 });
        if text {
            b.caption(
                "curl of the rotated centre-of-mass field",
                ("sans-serif", 20),
            );
        }
        let mut chart = b
            .build_cartesian_2d(-180f64..180f64, 0f64..1.05f64)
            .map_err(|x| e(x.to_string()))?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(RGBColor(235, 235, 235));
        if text {
            mesh.x_desc("scan_rotation_deg").y_desc("curl² / largest");
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|x| e(x.to_string()))?;
        for (t, colour) in [(0usize, DATA_RGB), (1, THRESHOLD_RGB)] {
            let pts: Vec<(f64, f64)> = (0..=360)
                .map(|d| (d as f64 - 180.0, curve[t][(d + 180) % 360]))
                .collect();
            let s = chart
                .draw_series(std::iter::once(PathElement::new(
                    pts,
                    colour.stroke_width(2),
                )))
                .map_err(|x| e(x.to_string()))?;
            if text {
                s.label(if t == 0 {
                    "not transposed"
                } else {
                    "transposed"
                })
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            }
        }
        if let Some(th) = chosen {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(th, 0.0), (th, 1.05)],
                    BLACK.stroke_width(1),
                )))
                .map_err(|x| e(x.to_string()))?;
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE)
                .border_style(BLACK)
                .draw()
                .map_err(|x| e(x.to_string()))?;
        }
        root.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(Image {
        width: w as usize,
        height: hgt as usize,
        pixels: Pixels::Rgb8,
        data: buf,
    })
}
