//! `ptytile calibrate` on the shipped PbTiO3 data (issue 19, Must show 1): the patterns of
//! pbtio3_thin.h5 (dose 1e5, the central 96 × 96 detector pixels for speed) turned by 0, 90,
//! 180, 270 and 17° (bilinear interpolation) and transposed, fed as a 4D-STEM scan without
//! rotation, convergence angle or defocus: the orientation (within 0.5°), the convergence
//! semi-angle (within 1 mrad of the file's 22 mrad) and the defocus (within 2 nm of the
//! file's 15 nm underfocus, C10 = −150 Å) come back. Arrays go both straight to the library
//! and through a temporary 4D-STEM HDF5 file and the command line.

mod common;

use ptytile::data::calibrate::{calibrate, wrap_deg, ArrayScan, Calibration, Setup};
use std::sync::OnceLock;

/// Detector pixels kept (centred on the zero frequency at [64, 64] of the file).
const DET: usize = 96;
const SCAN: usize = 58;
/// The file's /meta: angular sampling (mrad/px), scan step (Å), semi-angle (mrad), defocus (m).
const DTHETA_MRAD: f64 = 0.84134568;
const STEP_A: f64 = 0.40344828;
const ALPHA_MRAD: f64 = 22.0;
const DEFOCUS_M: f64 = 150e-10;

/// The file's patterns [58, 58, 96, 96] (scan row, scan column, ky, kx), zero frequency at
/// [48, 48], read once.
fn patterns() -> &'static [f32] {
    static P: OnceLock<Vec<f32>> = OnceLock::new();
    P.get_or_init(|| {
        let f = hdf5::File::open(common::pbtio3_thin()).unwrap();
        let ds = f.dataset("/data/intensities_poisson_dose1e05").unwrap();
        let a = 64 - DET / 2;
        let b = ds
            .read_slice::<f32, _, ndarray::Ix3>(ndarray::s![.., a..a + DET, a..a + DET])
            .unwrap();
        b.iter().copied().collect()
    })
}

/// Every pattern turned and, if `transpose`, transposed: I'(q) = I(B q) with q = (y, x)
/// from the zero frequency, B = T·R(φ) (T swaps y and x) or R(φ), R(φ) = [[cos φ, sin φ],
/// [−sin φ, cos φ]] (the convention of `data.scan_rotation_deg`); bilinear, 0 outside. Read
/// with `data.detector_transpose = transpose`, this is the original seen through A = R(−φ)
/// (transposed) or R(φ), whose scan rotation is θ = φ or −φ (docs/algorithm.md §16).
fn turned(src: &[f32], phi_deg: f64, transpose: bool) -> Vec<f32> {
    let (s, c) = phi_deg.to_radians().sin_cos();
    let r = [[c, s], [-s, c]];
    let b = if transpose { [r[1], r[0]] } else { r };
    let h = (DET / 2) as f64;
    // the source coordinates and weights of each output pixel
    let mut taps: Vec<[(usize, f32); 4]> = Vec::with_capacity(DET * DET);
    for y in 0..DET {
        for x in 0..DET {
            let (qy, qx) = (y as f64 - h, x as f64 - h);
            let (sy, sx) = (
                b[0][0] * qy + b[0][1] * qx + h,
                b[1][0] * qy + b[1][1] * qx + h,
            );
            let (y0, x0) = (sy.floor(), sx.floor());
            let (fy, fx) = (sy - y0, sx - x0);
            let mut t = [(0usize, 0f32); 4];
            for (k, (dy, dx, w)) in [
                (0, 0, (1.0 - fy) * (1.0 - fx)),
                (1, 0, fy * (1.0 - fx)),
                (0, 1, (1.0 - fy) * fx),
                (1, 1, fy * fx),
            ]
            .into_iter()
            .enumerate()
            {
                let (yy, xx) = (y0 as i64 + dy, x0 as i64 + dx);
                if yy >= 0 && xx >= 0 && (yy as usize) < DET && (xx as usize) < DET && w > 1e-9 {
                    t[k] = (yy as usize * DET + xx as usize, w as f32);
                }
            }
            taps.push(t);
        }
    }
    let mm = DET * DET;
    let mut out = vec![0f32; src.len()];
    for (o, p) in out.chunks_mut(mm).zip(src.chunks(mm)) {
        for (v, t) in o.iter_mut().zip(&taps) {
            *v = t.iter().map(|(i, w)| w * p[*i]).sum();
        }
    }
    out
}

/// `dir/NAME.h5`: a 4D-STEM dataset `/scan/data` [S, S, M, M] of `data` whose `/meta` holds
/// only the energy (300 keV) and the angular sampling (mrad); `dir/NAME.toml` reading it with
/// the scan step `step_a` (Å), writing `dir/out/recon.h5` (`png`), then the lines `extra`;
/// returns the config's path.
#[allow(clippy::too_many_arguments)]
fn scan_file(
    dir: &std::path::Path,
    name: &str,
    data: &[f32],
    [s, m]: [usize; 2],
    dtheta_mrad: f64,
    step_a: f64,
    png: bool,
    extra: &str,
) -> std::path::PathBuf {
    {
        // every handle closed before the command opens the file
        let f = hdf5::File::create(dir.join(format!("{name}.h5"))).unwrap();
        f.new_dataset::<f32>()
            .shape([s, s, m, m])
            .create("/scan/data")
            .unwrap()
            .write_raw(data)
            .unwrap();
        let meta = f.create_group("meta").unwrap();
        meta.new_attr::<f64>()
            .create("energy_eV")
            .unwrap()
            .write_scalar(&300e3)
            .unwrap();
        meta.new_attr::<f64>()
            .create("angular_sampling_mrad")
            .unwrap()
            .write_scalar(&dtheta_mrad)
            .unwrap();
    }
    let cfg = dir.join(format!("{name}.toml"));
    let out = dir.join("out/recon.h5");
    std::fs::write(&cfg, format!("[data]\nfile = \"{name}.h5\"\nintensities = \"/scan/data\"\nscan_step_angstrom = {step_a}\n[output]\npath = \"{}\"\npng = {png}\n{extra}", out.display())).unwrap();
    cfg
}

/// `ptytile COMMAND CONFIG`: its output.
fn ptytile(command: &str, cfg: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ptytile"))
        .arg(command)
        .arg(cfg)
        .output()
        .unwrap()
}

fn setup() -> Setup {
    Setup {
        step_m: STEP_A * 1e-10,
        dtheta_rad: DTHETA_MRAD * 1e-3,
    }
}

/// Check a calibration against the truth: transpose, θ (within `tol_deg`), α, defocus.
fn check(c: &Calibration, transpose: bool, theta_deg: f64, tol_deg: f64, case: &str) {
    let t = c
        .detector_transpose
        .clone()
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let r = c
        .scan_rotation_deg
        .clone()
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let a = c
        .convergence_semiangle_mrad
        .clone()
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let d = c
        .defocus_m
        .clone()
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    eprintln!(
        "{case}: transpose {t}, θ {:.3} ± {:.3}° (true {theta_deg}), α {:.3} ± {:.3} mrad, defocus {:.2} ± {:.2} Å, COM {:?}",
        r.value,
        r.sigma,
        a.value,
        a.sigma,
        d.value * 1e10,
        d.sigma * 1e10,
        c.com.as_ref().map(|f| (f.curl_ratio, f.rotation_deg, f.divergence_dark_field)).ok()
    );
    assert_eq!(t, transpose, "{case}: detector_transpose");
    assert!(
        wrap_deg(r.value - theta_deg).abs() <= tol_deg,
        "{case}: θ {} against {theta_deg}",
        r.value
    );
    assert!(
        (a.value - ALPHA_MRAD).abs() <= 1.0,
        "{case}: α {} mrad",
        a.value
    );
    assert!(
        (d.value - DEFOCUS_M).abs() <= 2e-9,
        "{case}: defocus {} m",
        d.value
    );
    assert!(
        r.sigma > 0.0 && a.sigma > 0.0 && d.sigma > 0.0,
        "{case}: every value has an uncertainty"
    );
}

/// Must show 1, through the library: transposed and turned by each multiple of 90° and by
/// 17°, and two cases without the transpose.
#[test]
fn orientation_angle_and_defocus_of_turned_and_transposed_patterns() {
    let p = patterns();
    for (phi, transpose) in [
        (0.0, true),
        (90.0, true),
        (180.0, true),
        (270.0, true),
        (17.0, true),
        (0.0, false),
        (17.0, false),
    ] {
        let data = if phi == 0.0 && !transpose {
            p.to_vec()
        } else {
            turned(p, phi, transpose)
        };
        let c = calibrate(
            &ArrayScan {
                data: &data,
                scan: [SCAN, SCAN],
                m: DET,
            },
            setup(),
        )
        .unwrap();
        let theta = if transpose { phi } else { -phi };
        check(
            &c,
            transpose,
            theta,
            0.5,
            &format!("turned {phi}°, transposed {transpose}"),
        );
    }
}

/// The same through a temporary 4D-STEM HDF5 file [Sy, Sx, Ky, Kx] whose metadata hold only
/// the energy and the angular sampling: `ptytile calibrate` prints the four keys as TOML that
/// parses, with a comment (the uncertainty) on each line, writes the pictures and exits 0;
/// the printed values, put in the config, make the reader see the original patterns.
#[test]
fn command_line_on_a_4dstem_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = turned(patterns(), 17.0, true);
    let cfg = scan_file(
        dir.path(),
        "scan",
        &data,
        [SCAN, DET],
        DTHETA_MRAD,
        STEP_A,
        true,
        "",
    );
    let out = ptytile("calibrate", &cfg);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    let toml: toml::Table = stdout.parse().unwrap();
    let (d, e) = (
        toml["data"].as_table().unwrap(),
        toml["experiment"].as_table().unwrap(),
    );
    assert_eq!(d["detector_transpose"].as_bool(), Some(true));
    let theta = d["scan_rotation_deg"].as_float().unwrap();
    assert!((theta - 17.0).abs() <= 0.5, "{theta}");
    assert!((e["convergence_semiangle_mrad"].as_float().unwrap() - ALPHA_MRAD).abs() <= 1.0);
    assert!((e["defocus_m"].as_float().unwrap() - DEFOCUS_M).abs() <= 2e-9);
    for key in [
        "detector_transpose =",
        "scan_rotation_deg =",
        "convergence_semiangle_mrad =",
        "defocus_m =",
    ] {
        let line = stdout.lines().find(|l| l.starts_with(key)).unwrap();
        assert!(line.contains('#'), "{line}");
    }
    assert!(
        dir.path().join("out/recon_calibrate_com.png").exists()
            && dir.path().join("out/recon_calibrate_fit.png").exists()
    );
    // the found keys make the reader undo the transpose: pattern 0 read with them is the
    // original pattern turned by θ about the zero frequency, its bright-field disk round
    // and in the same place
    let c = ptytile::config::Config::load(
        &cfg,
        &[
            "data.detector_transpose=true".into(),
            format!("data.scan_rotation_deg={theta}"),
        ],
    )
    .unwrap();
    let df = ptytile::data::DataFile::open(&c).unwrap();
    let k = df.read_intensities(&[0]).unwrap();
    let orig = &patterns()[..DET * DET];
    // kernel layout [kx][ky], zero frequency at [0, 0]: compare the COM of the disk's edge
    // region loosely: totals agree within the interpolation's loss at the corners
    let total: f64 = k.iter().map(|v| *v as f64).sum();
    let total0: f64 = orig.iter().map(|v| *v as f64).sum();
    assert!((total / total0 - 1.0).abs() < 0.05, "{total} {total0}");
}

/// Fits that fail are values: flat patterns (no disk, no centre-of-mass signal) give an
/// error naming each key to set by hand, and the command exits 2 with one line per key.
#[test]
fn failed_fits_name_the_keys_and_exit_2() {
    let (s, m) = (8, 16);
    let flat = vec![1f32; s * s * m * m];
    let c = calibrate(
        &ArrayScan {
            data: &flat,
            scan: [s, s],
            m,
        },
        setup(),
    )
    .unwrap();
    assert_eq!(
        c.convergence_semiangle_mrad.unwrap_err().what,
        "experiment.convergence_semiangle_mrad"
    );
    assert_eq!(c.defocus_m.unwrap_err().what, "experiment.defocus_m");
    assert_eq!(
        c.scan_rotation_deg.unwrap_err().what,
        "data.scan_rotation_deg"
    );
    let t = c.detector_transpose.unwrap_err();
    assert_eq!(t.what, "data.detector_transpose");
    // said once (the centre-of-mass fit's error already names the keys)
    assert_eq!(t.msg.matches("by hand").count(), 1, "{}", t.msg);
    // a 1 × 1 scan and a zero scan: errors, no panic
    let one = vec![1f32; m * m];
    assert!(calibrate(
        &ArrayScan {
            data: &one,
            scan: [1, 1],
            m
        },
        setup()
    )
    .unwrap()
    .scan_rotation_deg
    .is_err());
    assert!(calibrate(
        &ArrayScan {
            data: &[],
            scan: [0, 0],
            m
        },
        setup()
    )
    .is_err());
    assert!(
        calibrate(
            &ArrayScan {
                data: &one,
                scan: [2, 2],
                m
            },
            setup()
        )
        .is_err(),
        "too few values for the shape"
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = scan_file(dir.path(), "flat", &flat, [s, m], 1.0, 0.5, false, "");
    let out = ptytile("calibrate", &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(2));
    for key in [
        "data.detector_transpose",
        "data.scan_rotation_deg",
        "experiment.convergence_semiangle_mrad",
        "experiment.defocus_m",
    ] {
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with(&format!("error: {key}:")))
            .collect();
        assert_eq!(lines.len(), 1, "{key}: {stderr}");
        assert!(lines[0].contains("by hand"), "{}", lines[0]);
    }
    // a stack of patterns (not a raster scan) is refused naming data.format
    let c = ptytile::config::Config::load(&common::pbtio3_cut(dir.path(), "stack", 6, 32), &[])
        .unwrap();
    let e = ptytile::cli::calibrate::measure(&c).unwrap_err();
    assert_eq!(e.what, "data.format", "{e}");
}

/// Must show 1, end to end: the whole file (128 × 128 patterns) with every detector pattern
/// transposed, the four keys "auto": `ptytile reconstruct` (gd, 20 iterations, 2 thread
/// ranks) measures them first, logs them, stores them in the result's config and reaches a
/// phase correlation ≥ 0.975 with the ground truth (the reader's frame is the file's here,
/// A = T·T = 1, so no turn back is needed). Values the user gives are not touched, and
/// `"auto"` where the data are read without a calibration is an error naming the key.
#[test]
fn reconstruct_with_auto_keys_reaches_0975() {
    let dir = tempfile::tempdir().unwrap();
    let f = hdf5::File::open(common::pbtio3_thin()).unwrap();
    let all: Vec<f32> = f
        .dataset("/data/intensities_poisson_dose1e05")
        .unwrap()
        .read_raw()
        .unwrap();
    let m = 128;
    let mut data = vec![0f32; all.len()];
    for (o, p) in data.chunks_mut(m * m).zip(all.chunks(m * m)) {
        for y in 0..m {
            for x in 0..m {
                // transposed about the zero frequency at [64, 64] (the diagonal through it)
                o[y * m + x] = p[x * m + y];
            }
        }
    }
    drop(all);
    let extra = "[reconstruction]\niterations = 20\n[parallel]\nranks = 2\n";
    let cfg = scan_file(
        dir.path(),
        "scan",
        &data,
        [SCAN, m],
        DTHETA_MRAD,
        STEP_A,
        false,
        extra,
    );
    drop(data);
    // the four keys "auto" (as --set overrides, which is how a user can also ask for them)
    let set = [
        "data.detector_transpose=auto",
        "data.scan_rotation_deg=auto",
        "experiment.convergence_semiangle_mrad=auto",
        "experiment.defocus_m=auto",
    ];
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ptytile"));
    cmd.arg("reconstruct").arg(&cfg);
    for s in set {
        cmd.arg("--set").arg(s);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for key in [
        "data.detector_transpose = true",
        "data.scan_rotation_deg =",
        "experiment.convergence_semiangle_mrad =",
        "experiment.defocus_m =",
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&format!("calibrated {key}"))),
            "{key}: {stderr}"
        );
    }
    let result = dir.path().join("out/recon.h5");
    let rep =
        ptytile::analysis::compare::compare_files(&result, &common::pbtio3_thin(), None).unwrap();
    eprintln!(
        "phase correlation with the keys measured: {:.4}",
        rep.phase_correlation
    );
    assert!(rep.phase_correlation >= 0.975, "{}", rep.phase_correlation);
    let stored = common::stored_config(&result);
    assert!(stored.data.detector_transpose && stored.auto.is_empty());
    assert!(
        stored.data.scan_rotation_deg.abs() < 0.5
            && stored.experiment.defocus_m.is_some()
            && stored.experiment.convergence_semiangle_mrad.is_some()
    );

    // a value the user gives stays: the defocus set, the rest measured
    let c = ptytile::config::Config::load(
        &cfg,
        &[
            "data.scan_rotation_deg=auto".into(),
            "data.detector_transpose=auto".into(),
            "experiment.defocus_m=1e-8".into(),
            "experiment.convergence_semiangle_mrad=21".into(),
        ],
    )
    .unwrap();
    let mut r = c.clone();
    let lines = ptytile::cli::calibrate::resolve_auto(&mut r).unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(
        (
            r.experiment.defocus_m,
            r.experiment.convergence_semiangle_mrad
        ),
        (Some(1e-8), Some(21.0))
    );
    // the rotation measured for the other transpose than the one set is refused
    let c = ptytile::config::Config::load(&cfg, &["data.scan_rotation_deg=auto".into()]).unwrap();
    let e = ptytile::cli::calibrate::resolve_auto(&mut c.clone()).unwrap_err();
    assert_eq!(e.what, "data.scan_rotation_deg", "{e}");
    // "auto" left unresolved where the data are opened: an error naming the key
    let e = ptytile::data::DataFile::open(&c).unwrap_err();
    assert_eq!(e.what, "data.scan_rotation_deg", "{e}");
}
