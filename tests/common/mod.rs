//! Helpers shared by the integration tests (not a test binary itself).
#![allow(dead_code)] // each test binary uses its own subset of the helpers

use ptytile::analysis::compare::compare_files;
use ptytile::config::Config;
use ptytile::driver;
use ptytile::output::write_result;
use ptytile::simulate::{simulate, write, SimParams};

/// Phase correlation and the loss before the last iteration after 20 iterations of `engine`
/// (with `extra` settings) on seeded simulated data at about one count per detector pixel
/// (12 × 12 positions, 32-px patterns, 1000 counts per pattern).
pub fn low_dose_phase_correlation(engine: &str, extra: &[String]) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let (data, cfg_path) = small_scan(dir.path(), 1e3, 42);
    let out = dir.path().join("recon.h5");
    let mut set = vec![
        format!("reconstruction.engine=\"{engine}\""),
        "reconstruction.iterations=20".into(),
    ];
    set.extend_from_slice(extra);
    let cfg = Config::load(&cfg_path, &set).unwrap();
    let res = driver::run(&cfg, &|_, _, _, _| {})
        .unwrap()
        .expect("rank 0 returns the result");
    write_result(&out, &res, false).unwrap();
    let rep = compare_files(&out, &data, None).unwrap();
    eprintln!(
        "{engine} {extra:?}: phase correlation {:.4}, loss {:.1} → {:.1}",
        rep.phase_correlation, res.loss[0], res.loss[19]
    );
    (rep.phase_correlation, res.loss[19])
}

/// The small seeded simulation most tests use: 12 × 12 jittered positions (0.4 px) at
/// 2.5 px steps, 32-px patterns, 30 mrad, 0.25 Å pixels, `dose` counts per pattern, written
/// to `dir/sim.h5`; returns (data file, its config).
pub fn small_scan(
    dir: &std::path::Path,
    dose: f64,
    seed: u64,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let p = SimParams {
        m: 32,
        scan: [12, 12],
        step_px: 2.5,
        jitter_px: 0.4,
        semiangle_mrad: 30.0,
        pixel_size_m: 0.25e-10,
        dose: Some(dose),
        seed,
        ..Default::default()
    };
    write(&dir.join("sim.h5"), &simulate(&p).unwrap(), &p).unwrap()
}

/// The shipped PbTiO3 file (`../shared/datasets/pbtio3_thin.h5`). The real-data tests need
/// it (CI has ../shared beside the clone): a missing file fails the test, it is not skipped.
pub fn pbtio3_thin() -> std::path::PathBuf {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets/pbtio3_thin.h5");
    assert!(
        p.exists(),
        "{} not found: the real-data tests need ../shared beside the repository",
        p.display()
    );
    p
}

/// The shipped thick PbTiO3 file (`../shared/datasets/pbtio3_thick_dev.h5`, 33 Å in 32
/// slices); like [`pbtio3_thin`], a missing file fails the test.
#[allow(dead_code)]
pub fn pbtio3_thick() -> std::path::PathBuf {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets/pbtio3_thick_dev.h5");
    assert!(
        p.exists(),
        "{} not found: the real-data tests need ../shared beside the repository",
        p.display()
    );
    p
}

/// A `side` × `side` block of the PbTiO3 raster (scan rows and columns `0..side`, dose 1e5
/// counts) written to `dir/crop.h5`, with the shipped config's settings in `dir/crop.toml`
/// (returned). The block keeps the file's real positions (Å, not a synthetic grid), counts
/// and 128 × 128 patterns; only the scan is smaller, so CI stays fast.
#[allow(dead_code)]
pub fn pbtio3_crop(dir: &std::path::Path, side: usize) -> std::path::PathBuf {
    pbtio3_cut(dir, "crop", side, 128)
}

/// [`pbtio3_crop`] of the thick file (`side` × `side` scan positions, full detector) with the
/// shipped multislice config (datasets/pbtio3_thick.toml).
#[allow(dead_code)]
pub fn pbtio3_thick_crop(dir: &std::path::Path, side: usize) -> std::path::PathBuf {
    pbtio3_thick_cut(dir, "crop", side, 128)
}

/// [`pbtio3_cut`] of the thick file (`scan` × `scan` positions, `det` × `det` detector
/// pixels) with the shipped multislice config (datasets/pbtio3_thick.toml).
#[allow(dead_code)]
pub fn pbtio3_thick_cut(
    dir: &std::path::Path,
    name: &str,
    scan: usize,
    det: usize,
) -> std::path::PathBuf {
    cut(
        dir,
        name,
        scan,
        det,
        &pbtio3_thick(),
        "datasets/pbtio3_thick.toml",
    )
}

/// Scan rows and columns `0..scan` of the PbTiO3 raster (58: all 3364 positions; dose 1e5)
/// with every pattern cut to its central `det` × `det` detector pixels (zero frequency kept at
/// pixel det/2, as in the file; the object pixel grows to λ / (det · angular sampling)),
/// written to `dir/NAME.h5`, with the shipped config's settings in `dir/NAME.toml` (returned).
#[allow(dead_code)]
pub fn pbtio3_cut(
    dir: &std::path::Path,
    name: &str,
    scan: usize,
    det: usize,
) -> std::path::PathBuf {
    cut(
        dir,
        name,
        scan,
        det,
        &pbtio3_thin(),
        "datasets/pbtio3_thin.toml",
    )
}

/// [`pbtio3_cut`] of the 58 × 58 raster in `file`, with the shipped config `toml` (relative to
/// the repository) pointed at it.
fn cut(
    dir: &std::path::Path,
    name: &str,
    scan: usize,
    det: usize,
    file: &std::path::Path,
    toml: &str,
) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let f = hdf5::File::open(file).unwrap();
    let ds = f.dataset("/data/intensities_poisson_dose1e05").unwrap();
    let all_pos: Vec<f64> = f.dataset("/data/positions_A").unwrap().read_raw().unwrap();
    let a = 64 - det / 2;
    let mut patterns: Vec<f32> = Vec::with_capacity(scan * scan * det * det);
    let mut pos = Vec::with_capacity(2 * scan * scan);
    for iy in 0..scan {
        let b = ds
            .read_slice::<f32, _, ndarray::Ix3>(ndarray::s![
                iy * 58..iy * 58 + scan,
                a..a + det,
                a..a + det
            ])
            .unwrap();
        patterns.extend(b.iter().copied());
        for ix in 0..scan {
            pos.extend_from_slice(&all_pos[2 * (iy * 58 + ix)..2 * (iy * 58 + ix) + 2]);
        }
    }
    let out = hdf5::File::create(dir.join(format!("{name}.h5"))).unwrap();
    out.create_group("data").unwrap();
    let n = scan * scan;
    out.new_dataset::<f32>()
        .shape([n, det, det])
        .create("/data/intensities_poisson_dose1e05")
        .unwrap()
        .write_raw(&patterns)
        .unwrap();
    out.new_dataset::<f64>()
        .shape([n, 2])
        .create("/data/positions_A")
        .unwrap()
        .write_raw(&pos)
        .unwrap();
    shipped_config(dir, name, toml)
}

/// `dir/NAME.toml`: the shipped config `toml` reading `NAME.h5` (beside it) and writing
/// `recon.h5`; returns its path.
fn shipped_config(dir: &std::path::Path, name: &str, toml: &str) -> std::path::PathBuf {
    let shipped =
        std::fs::read_to_string(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(toml))
            .unwrap();
    let toml: Vec<String> = shipped
        .lines()
        .map(|l| match l {
            l if l.starts_with("file =") => format!("file = \"{name}.h5\""),
            l if l.starts_with("path =") => "path = \"recon.h5\"".to_string(),
            l => l.to_string(),
        })
        .collect();
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, toml.join("\n") + "\n").unwrap();
    cfg
}

/// Relative L2 difference ‖a − b‖ / ‖b‖ of two complex f32 arrays (accumulated in f64).
pub fn rel_l2(a: &[num_complex::Complex32], b: &[num_complex::Complex32]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).norm_sqr() as f64)
        .sum();
    let n: f64 = b.iter().map(|x| x.norm_sqr() as f64).sum();
    (d / n).sqrt()
}

/// Reconstruct the config `cfg` on `tiles[0] × tiles[1]` thread ranks (that many tiles),
/// with the overrides `set` and no PNGs; the result of rank 0.
pub fn recon_tiles(
    cfg: &std::path::Path,
    tiles: [usize; 2],
    set: &[String],
) -> ptytile::output::ReconResult {
    let mut set = set.to_vec();
    set.extend([
        format!("parallel.ranks={}", tiles[0] * tiles[1]),
        format!("parallel.tiles=[{}, {}]", tiles[0], tiles[1]),
        "output.png=false".into(),
    ]);
    let c = Config::load(cfg, &set).unwrap();
    driver::run(&c, &|_, _, _, _| {})
        .unwrap()
        .expect("rank 0 returns the result")
}

/// The configuration a result file records (its root attribute `config`, TOML), parsed.
pub fn stored_config(result: &std::path::Path) -> Config {
    let text: String = hdf5::File::open(result)
        .unwrap()
        .attr("config")
        .unwrap()
        .read_scalar::<hdf5::types::VarLenUnicode>()
        .unwrap()
        .to_string();
    Config::from_toml(&text, &[]).unwrap()
}

/// Standard normal numbers from a fixed seed (xorshift64* and Box–Muller), so the
/// perturbation is the same on every machine.
pub fn normals(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed.max(1);
    let mut uni = || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        ((s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| (-2.0 * uni().ln()).sqrt() * (2.0 * std::f64::consts::PI * uni()).cos())
        .collect()
}

/// A `side` × `side` block of the PbTiO3 scan with `det` × `det` patterns
/// ([`pbtio3_cut`], written to `dir/crop.h5`) with its positions (Å) scaled by `1 + scale`
/// and turned by `deg` about their centre, plus random errors of `rms_a` Å RMS (2-D);
/// returns (config, true positions in Å).
pub fn pbtio3_perturbed(
    dir: &std::path::Path,
    side: usize,
    det: usize,
    scale: f64,
    deg: f64,
    rms_a: f64,
) -> (std::path::PathBuf, Vec<[f64; 2]>) {
    let cfg = pbtio3_cut(dir, "crop", side, det);
    let f = hdf5::File::open_rw(dir.join("crop.h5")).unwrap();
    let ds = f.dataset("/data/positions_A").unwrap();
    let p: Vec<f64> = ds.read_raw().unwrap();
    let truth: Vec<[f64; 2]> = p.chunks(2).map(|c| [c[0], c[1]]).collect();
    let n = truth.len() as f64;
    let mean = [
        truth.iter().map(|c| c[0]).sum::<f64>() / n,
        truth.iter().map(|c| c[1]).sum::<f64>() / n,
    ];
    let (s, c) = deg.to_radians().sin_cos();
    let noise = normals(7, 2 * truth.len());
    let sigma = rms_a / 2f64.sqrt();
    let moved: Vec<f64> = truth
        .iter()
        .enumerate()
        .flat_map(|(j, t)| {
            let x = [t[0] - mean[0], t[1] - mean[1]];
            let y = mean[0] + (1.0 + scale) * (c * x[0] - s * x[1]) + sigma * noise[2 * j];
            let xx = mean[1] + (1.0 + scale) * (s * x[0] + c * x[1]) + sigma * noise[2 * j + 1];
            [y, xx]
        })
        .collect();
    ds.write_raw(&moved).unwrap();
    (cfg, truth)
}
