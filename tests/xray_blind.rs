//! A far-field X-ray scan without a probe guess (issue 19, Must show 2): `ptytile simulate
//! --beam xray` makes a zone-plate-like probe (6.2 keV, semi-angle 2.5 mrad, central stop
//! 0.3 of the radius, 80 µm underfocus: about 20 object pixels = 400 nm across, ten times
//! its focus) and Poisson counts (1e5 per pattern) on a 16 × 16 raster with ±1 px jitter,
//! 64 × 64 detector. The file, like a beamline's, holds no semi-angle and no defocus. With
//! `experiment.defocus_m = "auto"` the quadratic-phase search (docs/algorithm.md §16) finds
//! the defocus, and the reconstruction from that blind start reaches within 0.01 of the phase
//! correlation that the true probe as a start gives after the same 20 gd iterations. The
//! flat-phase start that a missing defocus means fails, as it does on real CXI files.

mod common;

use ptytile::analysis::compare::compare_files;
use ptytile::cli::calibrate;
use ptytile::config::{Beam, Config};
use ptytile::driver;
use ptytile::output::write_result;
use ptytile::simulate::{simulate, write, SimParams};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The true defocus (m, underfocus).
const DEFOCUS_M: f64 = 80e-6;

fn params() -> SimParams {
    SimParams {
        beam: Beam::Xray,
        energy_ev: 6200.0,
        m: 64,
        scan: [16, 16],
        step_px: 6.0,
        jitter_px: 1.0,
        semiangle_mrad: 2.5,
        central_stop: 0.3,
        defocus_m: DEFOCUS_M,
        pixel_size_m: 20e-9,
        dose: Some(1e5),
        seed: 2,
        ..Default::default()
    }
}

/// The simulated file and its config in `dir`.
fn dataset(dir: &Path) -> (PathBuf, PathBuf) {
    let p = params();
    let sim = simulate(&p).unwrap();
    write(&dir.join("xray.h5"), &sim, &p).unwrap()
}

/// Reconstruct `cfg` (after resolving its "auto" keys) into `out`; the phase correlation
/// with the truth in `data`, the seconds it took and the log lines of the calibration.
fn run(cfg: &mut Config, out: &Path, data: &Path) -> (f64, f64, Vec<String>) {
    let t = Instant::now();
    let lines = calibrate::resolve_auto(cfg).unwrap();
    let res = driver::run(cfg, &|_, _, _, _| {})
        .unwrap()
        .expect("rank 0 returns the result");
    let secs = t.elapsed().as_secs_f64();
    write_result(out, &res, false).unwrap();
    (
        compare_files(out, data, None).unwrap().phase_correlation,
        secs,
        lines,
    )
}

#[test]
fn blind_start_reaches_the_true_probe_correlation() {
    let dir = tempfile::tempdir().unwrap();
    let (data, cfg_path) = dataset(dir.path());
    let load = |set: &[&str]| {
        let mut s: Vec<String> = set.iter().map(|x| x.to_string()).collect();
        s.push("reconstruction.iterations=20".into());
        Config::load(&cfg_path, &s).unwrap()
    };
    let mut truth_cfg = load(&["data.probe=\"/probe/probe_real\""]);
    let (c_true, t_true, _) = run(&mut truth_cfg, &dir.path().join("true.h5"), &data);
    let mut flat_cfg = load(&[]);
    let (c_flat, t_flat, _) = run(&mut flat_cfg, &dir.path().join("flat.h5"), &data);
    let mut auto_cfg = load(&["experiment.defocus_m=auto"]);
    let (c_auto, t_auto, lines) = run(&mut auto_cfg, &dir.path().join("auto.h5"), &data);
    let found = auto_cfg
        .experiment
        .defocus_m
        .expect("the search sets the defocus");
    eprintln!("{}", lines.join("\n"));
    eprintln!(
        "true probe: {c_true:.4} ({t_true:.2} s); blind start, defocus {found:.4e} m (true {DEFOCUS_M:.1e}): {c_auto:.4} ({t_auto:.2} s with the search); flat phase: {c_flat:.4} ({t_flat:.2} s)"
    );
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("experiment.defocus_m = "), "{lines:?}");
    assert!(
        (found - DEFOCUS_M).abs() < 0.05 * DEFOCUS_M,
        "defocus {found:e}"
    );
    assert!(c_true > 0.98, "true-probe start {c_true}");
    assert!(
        c_auto >= c_true - 0.01,
        "blind {c_auto} vs true-probe start {c_true}"
    );
    assert!(
        c_flat < 0.5,
        "a flat-phase start was expected to fail: {c_flat}"
    );
    // the result's stored config holds the value found, not "auto"
    let stored = common::stored_config(&dir.path().join("auto.h5"));
    assert_eq!(stored.experiment.defocus_m, Some(found));
    assert!(stored.auto.is_empty());
}

/// `ptytile COMMAND CONFIG --set …`: its output.
fn ptytile(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ptytile"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn calibrate_command_prints_the_defocus_and_refuses_a_given_probe() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg) = dataset(dir.path());
    let cfg = cfg.to_str().unwrap();
    let out = ptytile(&["calibrate", cfg]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("defocus_m = "))
        .unwrap_or_else(|| panic!("{text}"));
    let v: f64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    eprintln!("{line}");
    assert!((v - DEFOCUS_M).abs() < 0.05 * DEFOCUS_M, "{line}");
    assert!(text.contains("[experiment]"), "{text}");
    // a probe given in the config leaves the defocus nothing to change: one line, exit 2
    let out = ptytile(&[
        "calibrate",
        cfg,
        "--set",
        "data.probe=\"/probe/probe_real\"",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("experiment.defocus_m"), "{err}");
}
