//! The dataset's stated conventions (../shared/datasets/README.md) against ptytile's:
//! forward FFT e^{−2πi k·r}, unitary, zero frequency at [M/2, M/2] in the file, probe
//! shifted by +positions, C10 = −defocus. Skips, saying why, when the file is absent.

use num_complex::Complex32;
use ptytile::backend::cpu::model_intensities;
use ptytile::backend::kernel::{probe_spectrum, Kernel};
use ptytile::config::{Config, NoiseModel, ZeroFrequency};
use ptytile::data::DataFile;
use ptytile::physics::fft::Fft2;
use ptytile::physics::model::{Field, PositionGeom};
use ptytile::physics::probe::form_probe;
use std::path::{Path, PathBuf};

fn dataset() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/pbtio3_thin.h5");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} not found", p.display());
        None
    }
}

fn config(file: &Path, zf: &str) -> Config {
    let text = format!(
        "[data]\nfile = {:?}\nintensities = '/data/intensities_poisson_dose1e05'\npositions = '/data/positions_A'\n\
         positions_unit = 'angstrom'\nzero_frequency = '{zf}'\n[experiment]\nconvergence_semiangle_mrad = 22.0\n",
        file.display().to_string()
    );
    // energy, sampling and defocus come from the file's /meta attributes (fallback path)
    Config::from_toml(&text, &[]).unwrap()
}

fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|v| *v as f64).sum::<f64>() / n,
        b.iter().map(|v| *v as f64).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64 - ma, *y as f64 - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt()
}

#[test]
fn metadata_fallback_and_probe_from_metadata() {
    let Some(file) = dataset() else { return };
    let df = DataFile::open(&config(&file, "center")).unwrap();
    let e = &df.experiment;
    assert!(
        (e.wavelength_m * 1e10 - 0.019_687_49).abs() < 1e-7,
        "{}",
        e.wavelength_m
    );
    assert!((e.pixel_size_m[0] * 1e10 - 0.182_812_5).abs() < 1e-6);
    assert!(
        (e.defocus_m - 150e-10).abs() < 1e-15,
        "defocus {}",
        e.defocus_m
    );
    assert_eq!(df.n, 3364);
    assert_eq!(df.object_shape, [253, 253]);
    // the probe formed from the metadata overlaps the stored true probe (README: 0.996)
    let p = form_probe(e, 1.0).unwrap();
    let h5 = hdf5::File::open(&file).unwrap();
    let t: Vec<Complex32> = h5.dataset("/probe/probe_real").unwrap().read_raw().unwrap();
    let dot: Complex32 = p.iter().zip(&t).map(|(a, b)| a.conj() * b).sum();
    let n = |v: &[Complex32]| v.iter().map(|z| z.norm_sqr()).sum::<f32>().sqrt();
    let overlap = dot.norm() / (n(&p) * n(&t));
    assert!(overlap > 0.99, "overlap {overlap}");
}

/// Model patterns from the true probe and the periodic ground truth correlate with the
/// measured counts; conjugating the object (the opposite FFT sign) or reading the patterns
/// as corner-centred does markedly worse.
#[test]
fn forward_model_matches_measured_patterns() {
    let Some(file) = dataset() else { return };
    let h5 = hdf5::File::open(&file).unwrap();
    let truth: Vec<Complex32> = h5
        .dataset("/ground_truth/transmission_recon")
        .unwrap()
        .read_raw()
        .unwrap();
    let probe: Vec<Complex32> = h5.dataset("/probe/probe_real").unwrap().read_raw().unwrap();
    let idx: Vec<usize> = vec![0, 57, 1000, 1681, 2522, 3363];
    let run = |zf: &str, conj: bool| -> f64 {
        let df = DataFile::open(&config(&file, zf)).unwrap();
        let m = df.m;
        // object pixel c ↔ truth pixel c − 64 (positions start at 0 in the file)
        let obj = Field {
            origin: [0, 0],
            shape: df.object_shape,
            data: (0..df.object_shape[0] * df.object_shape[1])
                .map(|i| {
                    let (y, x) = (i / df.object_shape[1], i % df.object_shape[1]);
                    let v = truth[((y + 128 - 64) % 128) * 128 + (x + 128 - 64) % 128];
                    if conj {
                        v.conj()
                    } else {
                        v
                    }
                })
                .collect(),
        };
        let mean: f64 = df
            .read_intensities(&idx)
            .unwrap()
            .iter()
            .map(|v| *v as f64)
            .sum::<f64>()
            / idx.len() as f64;
        let mut p = probe.clone();
        ptytile::physics::probe::normalise(&mut p, mean);
        let k = Kernel {
            fft: Fft2::new(m),
            modes: 1,
            noise: NoiseModel::Poisson,
            eps: 0.0,
            weights: None,
            propagator: Vec::new(),
        };
        let pos: Vec<PositionGeom<f32>> = idx
            .iter()
            .map(|&j| PositionGeom::new(j, df.centres[j], m))
            .collect();
        let model = model_intensities(&k, &obj, &probe_spectrum(&k.fft, &p), &pos);
        let meas = df.read_intensities(&idx).unwrap();
        pearson(&model, &meas)
    };
    let right = run("center", false);
    let conj = run("center", true);
    let corner = run("corner", false);
    eprintln!("correlation: conventions {right:.4}, conjugate object {conj:.4}, corner-centred {corner:.4}");
    assert!(right > 0.9, "model vs counts correlation {right}");
    assert!(right > conj + 0.02, "conjugate {conj} vs {right}");
    assert!(right > corner + 0.3, "corner {corner} vs {right}");
    let _ = ZeroFrequency::Center;
}
