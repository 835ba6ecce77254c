//! Helpers shared by the integration tests (not a test binary itself).

use ptytile::analysis::compare::compare_files;
use ptytile::cli::reconstruct;
use ptytile::config::Config;
use ptytile::output::write_result;
use ptytile::simulate::{simulate, write, SimParams};

/// Phase correlation and the loss before the last iteration after 20 iterations of `engine`
/// (with `extra` settings) on seeded simulated data at about one count per detector pixel
/// (12 × 12 positions, 32-px patterns, 1000 counts per pattern).
pub fn low_dose_phase_correlation(engine: &str, extra: &[String]) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let p = SimParams { m: 32, scan: [12, 12], step_px: 2.5, jitter_px: 0.4, semiangle_mrad: 30.0, pixel_size_m: 0.25e-10, dose: Some(1e3), seed: 42, ..Default::default() };
    let sim = simulate(&p).unwrap();
    let (data, cfg_path) = write(&dir.path().join("sim.h5"), &sim, &p).unwrap();
    let out = dir.path().join("recon.h5");
    let mut set = vec![format!("reconstruction.engine=\"{engine}\""), "reconstruction.iterations=20".into()];
    set.extend_from_slice(extra);
    let cfg = Config::load(&cfg_path, &set).unwrap();
    let res = reconstruct::run(&cfg, &|_, _, _, _| {}).unwrap().expect("rank 0 returns the result");
    write_result(&out, &res, false).unwrap();
    let rep = compare_files(&out, &data, None).unwrap();
    eprintln!("{engine} {extra:?}: phase correlation {:.4}, loss {:.1} → {:.1}", rep.phase_correlation, res.loss[0], res.loss[19]);
    (rep.phase_correlation, res.loss[19])
}
