//! Input formats (docs/format.md): far-field CXI files, raw 4D-STEM arrays (.npy and HDF5)
//! with scan rotation, a previous result as the starting point, and the near-field refusal.
//! The CXI and 4D-STEM files are built from a 30 × 30 block of the PbTiO3 scan
//! (../shared/datasets/pbtio3_thin.h5, dose 1e5), converted so that the object pixel stays
//! 0.1828 Å (× 1000 for the X-ray geometry), and reconstructed with the probe formed from
//! the aperture and defocus; the phase correlation with the ground truth must pass a
//! threshold.

use num_complex::Complex32;
use ptytile::analysis::compare::{compare_objects, scan_area};
use ptytile::backend::cpu::gradients;
use ptytile::backend::kernel::{probe_spectrum, Kernel};
use ptytile::config::{Config, NoiseModel};
use ptytile::data::cxi::EV_J;
use ptytile::data::DataFile;
use ptytile::driver;
use ptytile::output::ReconResult;
use ptytile::physics::fft::Fft2;
use ptytile::physics::model::{Field, PositionGeom};
use ptytile::physics::{electron_wavelength_m, pixel_size_from_angular_m, xray_wavelength_m};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ptytile");
const SIDE: usize = 30;
const M: usize = 128;
const ENERGY_EV: f64 = 300e3;
const ALPHA_MRAD: f64 = 22.0;
const DEFOCUS_M: f64 = 150e-10;
const DTHETA_MRAD: f64 = 0.841_345_68;
/// X-ray geometry: lengths × 1000, 8 keV photons, 75 µm pixels.
const SCALE: f64 = 1e3;
const XRAY_EV: f64 = 8000.0;
const DET_PIXEL_M: f64 = 75e-6;

fn shared(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets")
        .join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} not found", p.display());
        None
    }
}

/// A SIDE × SIDE block of the PbTiO3 scan: patterns [N, M, M] (counts, centred), positions
/// (y, x) in Å, the scan step (Å), and the ground truth [128, 128].
struct Block {
    patterns: Vec<f32>,
    pos_a: Vec<[f64; 2]>,
    step_a: f64,
    truth: Vec<Complex32>,
}

fn block() -> Option<Block> {
    let f = hdf5::File::open(shared("pbtio3_thin.h5")?).unwrap();
    let ds = f.dataset("/data/intensities_poisson_dose1e05").unwrap();
    let all_pos: Vec<f64> = f.dataset("/data/positions_A").unwrap().read_raw().unwrap();
    let mut patterns = Vec::with_capacity(SIDE * SIDE * M * M);
    let mut pos_a = Vec::new();
    for iy in 0..SIDE {
        let b = ds
            .read_slice::<f32, _, ndarray::Ix3>(ndarray::s![iy * 58..iy * 58 + SIDE, .., ..])
            .unwrap();
        patterns.extend(b.iter().copied());
        for ix in 0..SIDE {
            let j = iy * 58 + ix;
            pos_a.push([all_pos[2 * j], all_pos[2 * j + 1]]);
        }
    }
    let step_a = pos_a[1][1] - pos_a[0][1];
    // the block is a regular raster with that step (row-major, y = row)
    for (j, p) in pos_a.iter().enumerate() {
        let want = [
            pos_a[0][0] + (j / SIDE) as f64 * step_a,
            pos_a[0][1] + (j % SIDE) as f64 * step_a,
        ];
        assert!(
            (p[0] - want[0]).abs() < 1e-6 && (p[1] - want[1]).abs() < 1e-6,
            "position {j}: {p:?} vs {want:?}"
        );
    }
    let truth = f
        .dataset("/ground_truth/transmission_recon")
        .unwrap()
        .read_raw()
        .unwrap();
    Some(Block {
        patterns,
        pos_a,
        step_a,
        truth,
    })
}

fn load(dir: &Path, toml: &str, iterations: usize) -> Config {
    let c = dir.join("c.toml");
    std::fs::write(&c, toml).unwrap();
    Config::load(
        &c,
        &[
            format!("reconstruction.iterations={iterations}"),
            "output.png=false".into(),
        ],
    )
    .unwrap()
}

fn run(cfg: &Config) -> ReconResult {
    driver::run(cfg, &|_, _, _, _| {})
        .unwrap()
        .expect("rank 0 returns the result")
}

/// Phase correlation of a result with the (transformed) truth over the scanned area.
fn correlation(r: &ReconResult, truth: &[Complex32]) -> f64 {
    let area = scan_area(&r.positions_px).unwrap();
    let rep = compare_objects(&r.object, area, truth, [128, 128]).unwrap();
    eprintln!("{rep}\nloss {:?}", r.loss);
    rep.phase_correlation
}

fn create<T: hdf5::H5Type>(f: &hdf5::File, path: &str, shape: &[usize], data: &[T]) {
    f.new_dataset::<T>()
        .shape(shape)
        .create(path)
        .unwrap()
        .write_raw(data)
        .unwrap();
}

fn scalar(f: &hdf5::File, path: &str, v: f64) {
    f.new_dataset::<f64>()
        .shape(())
        .create(path)
        .unwrap()
        .write_scalar(&v)
        .unwrap();
}

fn groups(f: &hdf5::File, paths: &[&str]) {
    for p in paths {
        f.create_group(p).unwrap();
    }
}

/// Bad pixels of the test mask: 40 pixels within ±20 px of the centre (inside the
/// bright-field disk), alternately hot (1e6 counts) and dead (0).
fn bad_pixels() -> Vec<(usize, usize)> {
    (0..40)
        .map(|i| (64 + (i * 13) % 41 - 20, 64 + (i * 29) % 41 - 20))
        .collect()
}

/// Writes a far-field CXI file from the block. `energy_in_joule`: source_1/energy (J) and
/// the default detector axes, translations at sample_1/geometry_1, data at detector_1, a
/// mask with corrupted bad pixels; else source_1/wavelength (m), detector axes (−y, −x) in
/// basis_vectors (as cdtools writes them), data and translations in data_1.
/// Returns the config's [experiment] lines (aperture and defocus in the X-ray geometry).
fn write_cxi(b: &Block, path: &Path, energy_in_joule: bool) -> String {
    let lambda_e = electron_wavelength_m(ENERGY_EV);
    let dx = SCALE * pixel_size_from_angular_m(lambda_e, M, DTHETA_MRAD * 1e-3);
    let lambda = xray_wavelength_m(XRAY_EV);
    let z = dx * M as f64 * DET_PIXEL_M / lambda;
    let n = SIDE * SIDE;
    let f = hdf5::File::create(path).unwrap();
    create(&f, "cxi_version", &[], &[150i64]);
    groups(
        &f,
        &[
            "entry_1",
            "entry_1/instrument_1",
            "entry_1/instrument_1/detector_1",
            "entry_1/instrument_1/source_1",
            "entry_1/data_1",
        ],
    );
    let det = "entry_1/instrument_1/detector_1";
    let mut counts: Vec<i32> = b.patterns.iter().map(|v| v.round() as i32).collect();
    let mut t = Vec::with_capacity(3 * n);
    if energy_in_joule {
        let mut mask = vec![0u32; M * M];
        for (i, (y, x)) in bad_pixels().into_iter().enumerate() {
            mask[y * M + x] = if i % 2 == 0 { 0x4 } else { 0x8 }; // CXI "hot", "dead"
            for j in 0..n {
                counts[j * M * M + y * M + x] = if i % 2 == 0 { 1_000_000 } else { 0 };
            }
        }
        mask[10 * M + 10] = 0x1000; // "signal above background": a good pixel
        create(&f, &format!("{det}/mask"), &[M, M], &mask);
        create(&f, &format!("{det}/data"), &[n, M, M], &counts);
        scalar(&f, "entry_1/instrument_1/source_1/energy", XRAY_EV * EV_J);
        groups(&f, &["entry_1/sample_1", "entry_1/sample_1/geometry_1"]);
        // sample translation = −probe position, columns (x, y, z)
        for p in &b.pos_a {
            t.extend([-p[1] * 1e-10 * SCALE, -p[0] * 1e-10 * SCALE, 0.0]);
        }
        create(&f, "entry_1/sample_1/geometry_1/translation", &[n, 3], &t);
    } else {
        create(&f, "entry_1/data_1/data", &[n, M, M], &counts);
        scalar(&f, "entry_1/instrument_1/source_1/wavelength", lambda);
        // (3, 2): columns are the row (slow) and column (fast) axes: −y and −x
        create(
            &f,
            &format!("{det}/basis_vectors"),
            &[3, 2],
            &[0.0, -DET_PIXEL_M, -DET_PIXEL_M, 0.0, 0.0, 0.0],
        );
        // with both detector axes reversed, the probe position in the detector frame is +t
        for p in &b.pos_a {
            t.extend([p[1] * 1e-10 * SCALE, p[0] * 1e-10 * SCALE, 0.0]);
        }
        create(&f, "entry_1/data_1/translation", &[n, 3], &t);
    }
    scalar(&f, &format!("{det}/distance"), z);
    scalar(&f, &format!("{det}/x_pixel_size"), DET_PIXEL_M);
    scalar(&f, &format!("{det}/y_pixel_size"), DET_PIXEL_M);
    // the same probe in X-ray units: aperture cut-off and defocus phase per detector pixel kept
    let alpha = ALPHA_MRAD * lambda / (lambda_e * SCALE);
    let defocus = DEFOCUS_M * lambda_e * SCALE * SCALE / lambda;
    format!("[experiment]\nconvergence_semiangle_mrad = {alpha}\ndefocus_m = {defocus}\n")
}

fn cxi_reconstruction(energy_in_joule: bool, name: &str) {
    cxi_run(energy_in_joule, name, true, 0.95);
}

/// Reconstruct a CXI file built from the block; `probe_keys`: give the aperture and defocus
/// in the config, else only the defocus (the pupil then comes from the mean diffraction
/// pattern). Asserts the phase correlation exceeds `threshold`.
fn cxi_run(energy_in_joule: bool, name: &str, probe_keys: bool, threshold: f64) {
    let Some(b) = block() else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    let exp = write_cxi(&b, &file, energy_in_joule);
    // without the aperture: only the defocus (the pupil then comes from the mean pattern)
    let exp = if probe_keys {
        exp
    } else {
        exp.lines()
            .filter(|l| !l.starts_with("convergence"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let cfg = load(
        dir.path(),
        &format!("[data]\nfile = {name:?}\n{exp}[output]\npath = \"r.h5\"\n"),
        15,
    );
    let df = DataFile::open(&cfg).unwrap();
    assert_eq!(df.format, ptytile::config::DataFormat::Cxi);
    let dx = df.experiment.pixel_size_m[0];
    let want =
        SCALE * pixel_size_from_angular_m(electron_wavelength_m(ENERGY_EV), M, DTHETA_MRAD * 1e-3);
    assert!(
        (dx / want - 1.0).abs() < 1e-9,
        "object pixel {dx} vs {want}"
    );
    if energy_in_joule {
        let bad = df.bad_pixels.as_ref().unwrap();
        assert_eq!(bad.iter().filter(|b| **b).count(), 40);
        assert!(!bad[10 * M + 10], "0x1000 marks a good pixel");
        let p = df.read_intensities(&[0]).unwrap();
        let w = df.kernel_weights().unwrap();
        assert!(
            p.iter().zip(&w).all(|(v, w)| *w == 1.0 || *v == 0.0),
            "bad pixels read as 0"
        );
    }
    let r = run(&cfg);
    let corr = correlation(&r, &b.truth);
    assert!(corr > threshold, "phase correlation {corr}");
}

#[test]
fn cxi_energy_in_joule_with_mask() {
    cxi_reconstruction(true, "scan.cxi");
}

/// No aperture in the config: the first probe's pupil is √ of the mean pattern (with the
/// defocus phase); 0.938 measured (0.978 with the aperture). With a flat phase (no defocus
/// either) 15 iterations reach only 0.13 on these strongly defocused data.
#[test]
fn cxi_probe_from_the_mean_pattern() {
    cxi_run(true, "bare.cxi", false, 0.9);
}

/// Wavelength in m, detector axes from basis_vectors, detected by /cxi_version in a .h5 file.
#[test]
fn cxi_wavelength_and_basis_vectors() {
    cxi_reconstruction(false, "scan_cxi.h5");
}

/// Bad pixels drop out of the likelihood: with weights, loss and gradients do not depend
/// on what the bad pixels hold, for both noise models.
#[test]
fn masked_pixels_do_not_count() {
    let m = 16;
    let mm = m * m;
    let obj = Field {
        origin: [0, 0],
        shape: [24, 24],
        data: (0..576)
            .map(|i| Complex32::from_polar(1.0, (i as f32 * 0.37).sin()))
            .collect(),
    };
    let probe: Vec<Complex32> = (0..mm)
        .map(|i| Complex32::from_polar(((i % m) as f32 * 0.2).cos().abs() + 0.1, i as f32 * 0.05))
        .collect();
    let pos: Vec<PositionGeom<f32>> = (0..4)
        .map(|j| PositionGeom::new(j, [8.0 + 2.3 * j as f64, 9.0 + 1.7 * j as f64], m))
        .collect();
    let meas: Vec<f32> = (0..4 * mm).map(|i| ((i * 7919) % 97) as f32).collect();
    let weights: Vec<f32> = (0..mm)
        .map(|i| if i % 11 == 3 { 0.0 } else { 1.0 })
        .collect();
    let mut garbage = meas.clone();
    for (i, v) in garbage.iter_mut().enumerate() {
        if weights[i % mm] == 0.0 {
            *v = 5000.0 + i as f32;
        }
    }
    for noise in [NoiseModel::Poisson, NoiseModel::Amplitude] {
        let k = |w: Option<Vec<f32>>| Kernel {
            fft: Fft2::new(m),
            modes: 1,
            noise,
            eps: 1e-3,
            weights: w,
            propagator: Vec::new(),
        };
        let masked = k(Some(weights.clone()));
        let ph = probe_spectrum(&masked.fft, &probe);
        let a = gradients(&masked, &obj, &ph, &pos, &meas, true);
        let b = gradients(&masked, &obj, &ph, &pos, &garbage, true);
        assert_eq!(a.loss, b.loss, "{noise:?}");
        assert_eq!(a.g_obj.data, b.g_obj.data, "{noise:?}");
        assert_eq!(a.g_probe_hat, b.g_probe_hat, "{noise:?}");
        let c = gradients(&k(None), &obj, &ph, &pos, &garbage, true);
        assert!(
            (c.loss - b.loss).abs() > 1e-3 * b.loss.abs(),
            "{noise:?}: unmasked {} vs masked {}",
            c.loss,
            b.loss
        );
        // all-ones weights equal no weights
        let d = gradients(&k(Some(vec![1.0; mm])), &obj, &ph, &pos, &meas, true);
        let e = gradients(&k(None), &obj, &ph, &pos, &meas, true);
        assert_eq!(d.g_obj.data, e.g_obj.data, "{noise:?}");
    }
}

/// Rotate each centred pattern by a quarter turn k' = Q k about [M/2, M/2]; `sign` = +1:
/// Q(y, x) = (x, −y), −1: Q(y, x) = (−x, y).
fn rotate_patterns(p: &[f32], sign: i32) -> Vec<f32> {
    let c = M / 2;
    let mut out = vec![0f32; p.len()];
    for (src, dst) in p.chunks(M * M).zip(out.chunks_mut(M * M)) {
        for ky in 0..M {
            for kx in 0..M {
                let (y, x) = if sign > 0 {
                    (kx, (2 * c + M - ky) % M)
                } else {
                    ((2 * c + M - kx) % M, ky)
                };
                dst[y * M + x] = src[ky * M + kx];
            }
        }
    }
    out
}

/// The truth in the rotated frame: O'(r') = O(Q⁻¹ r').
fn rotate_truth(t: &[Complex32], sign: i32) -> Vec<Complex32> {
    let h = 128;
    let mut out = vec![Complex32::default(); h * h];
    for y in 0..h {
        for x in 0..h {
            // Q⁻¹(y, x) = (−x, y) for sign +1, (x, −y) for sign −1
            let (sy, sx) = if sign > 0 {
                ((h - x) % h, y)
            } else {
                (x, (h - y) % h)
            };
            out[y * h + x] = t[sy * h + sx];
        }
    }
    out
}

const ELECTRON: &str = "[experiment]\nenergy_ev = 300e3\nconvergence_semiangle_mrad = 22.0\ndefocus_m = 150e-10\nangular_sampling_mrad = 0.84134568\n";

/// .npy [Sy, Sx, K, K] float32 whose detector is turned by a quarter turn against the scan:
/// scan_rotation_deg = −90 (the fast scan axis along −y of the patterns).
#[test]
fn stem4d_npy_with_scan_rotation() {
    let Some(b) = block() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rot = rotate_patterns(&b.patterns, -1);
    let a = ndarray::Array4::from_shape_vec((SIDE, SIDE, M, M), rot).unwrap();
    ndarray_npy::write_npy(dir.path().join("scan.npy"), &a).unwrap();
    let toml = format!("[data]\nfile = \"scan.npy\"\nscan_step_angstrom = {}\nscan_rotation_deg = -90.0\n{ELECTRON}", b.step_a);
    let r = run(&load(dir.path(), &toml, 15));
    let corr = correlation(&r, &rotate_truth(&b.truth, -1));
    assert!(corr > 0.95, "phase correlation {corr}");
    // the opposite rotation does not fit the data
    let wrong = run(&load(dir.path(), &toml.replace("-90.0", "90.0"), 15));
    let bad = correlation(&wrong, &rotate_truth(&b.truth, -1));
    assert!(bad < corr - 0.2, "wrong rotation {bad} vs {corr}");
}

/// HDF5 [Sy, Sx, K, K] uint16 counts with the metadata as attributes, auto-detected by its
/// rank; scan_rotation_deg = +90 (the fast scan axis along +y). Then a second run starts
/// from the first one's result (`data.initial`) and continues its descent.
#[test]
fn stem4d_hdf5_with_scan_rotation_and_restart() {
    let Some(b) = block() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rot: Vec<u16> = rotate_patterns(&b.patterns, 1)
        .iter()
        .map(|v| v.round() as u16)
        .collect();
    {
        let f = hdf5::File::create(dir.path().join("scan.h5")).unwrap();
        f.create_group("scan").unwrap();
        let ds = f
            .new_dataset::<u16>()
            .shape([SIDE, SIDE, M, M])
            .chunk([1, 8, M, M])
            .create("scan/data")
            .unwrap();
        ds.write_raw(&rot).unwrap();
        for (k, v) in [
            ("energy_eV", ENERGY_EV),
            ("convergence_semiangle_mrad", ALPHA_MRAD),
            ("defocus_m", DEFOCUS_M),
            ("angular_sampling_mrad", DTHETA_MRAD),
        ] {
            ds.new_attr::<f64>()
                .create(k)
                .unwrap()
                .write_scalar(&v)
                .unwrap();
        }
    }
    let toml = format!("[data]\nfile = \"scan.h5\"\nintensities = \"/scan/data\"\nscan_step_m = {}\nscan_rotation_deg = 90.0\n", b.step_a * 1e-10);
    let truth = rotate_truth(&b.truth, 1);
    let full = run(&load(dir.path(), &toml, 16));
    let corr = correlation(&full, &truth);
    assert!(corr > 0.95, "phase correlation {corr}");

    // 8 iterations, written, then 8 more starting from that result
    let first = run(&load(dir.path(), &toml, 8));
    let out = dir.path().join("first.h5");
    ptytile::output::write_result(&out, &first, false).unwrap();
    let second = run(&load(
        dir.path(),
        &format!("{toml}initial = \"first.h5\"\n"),
        8,
    ));
    eprintln!(
        "continuous {:?}\nfirst {:?}\nsecond {:?}",
        full.loss, first.loss, second.loss
    );
    // the restart begins exactly where the first run stopped: same object (placed on the
    // same grid), same probe, so the same loss as the continuous run at iteration 8
    let l8 = full.loss[8];
    assert!(
        ((second.loss[0] - l8) / l8).abs() < 1e-5,
        "restart loss {} vs continuous {l8}",
        second.loss[0]
    );
    let c2 = correlation(&second, &truth);
    assert!(c2 > corr - 0.02, "restarted {c2} vs continuous {corr}");
}

/// `data.initial` with a different scan is refused with a message naming the file.
#[test]
fn initial_from_another_scan_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = ptytile::simulate::SimParams {
        m: 16,
        scan: [3, 3],
        step_px: 2.0,
        semiangle_mrad: 40.0,
        pixel_size_m: 0.3e-10,
        dose: Some(1e4),
        ..Default::default()
    };
    let sim = ptytile::simulate::simulate(&p).unwrap();
    let (_, cfg_path) = ptytile::simulate::write(&dir.path().join("d.h5"), &sim, &p).unwrap();
    let cfg = Config::load(&cfg_path, &["reconstruction.iterations=1".into()]).unwrap();
    let r = run(&cfg);
    let mut short = r.clone();
    short.positions_px.truncate(5);
    let bad = dir.path().join("short.h5");
    ptytile::output::write_result(&bad, &short, false).unwrap();
    let cfg = Config::load(
        &cfg_path,
        &[
            "reconstruction.iterations=1".into(),
            format!("data.initial={:?}", bad.display().to_string()),
        ],
    )
    .unwrap();
    let e = driver::run(&cfg, &|_, _, _, _| {}).unwrap_err();
    assert!(
        e.to_string().contains("short.h5") && e.msg.contains("5 scan positions"),
        "{e}"
    );
}

fn ptytile() -> Command {
    let mut c = Command::new(BIN);
    c.env("HDF5_USE_FILE_LOCKING", "FALSE");
    c
}

/// The real near-field file: `inspect` explains its geometry, `reconstruct` refuses it
/// with one line naming the file.
#[test]
fn near_field_cxi_is_explained_and_refused() {
    let Some(file) = shared("PETRAIII_P25_Near_Field_Ptycho.cxi") else {
        return;
    };
    let out = ptytile().arg("inspect").arg(&file).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "a CXI file: 200 diffraction patterns of 100x100",
        "12658.0 eV",
        "5 bad pixels",
        "from basis_vectors",
        "NEAR FIELD",
    ] {
        assert!(text.contains(needle), "'{needle}' not in:\n{text}");
    }
    // the far-field window λz/p = 9.795e-11 · 1.12 / 55e-6 = 1.995e-6 m
    assert!(text.contains("window M·Δx = 1.99"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[data]\nfile = {:?}\n[output]\npath = {:?}\n",
            file.display().to_string(),
            dir.path().join("out/r.h5").display().to_string()
        ),
    )
    .unwrap();
    let out = ptytile().arg("reconstruct").arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("PETRAIII_P25_Near_Field_Ptycho.cxi")
            && lines[0].contains("near-field ptychography is not supported"),
        "{err}"
    );
    assert!(!dir.path().join("out").exists());
}
