//! One test per bad input: each run of `ptytile reconstruct` must exit with code 2, print
//! one line naming the file, dataset or key at fault, and leave no output file behind.

use ptytile::simulate::{simulate, write, SimParams};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ptytile");

/// The binary, with HDF5 file locking off: test threads fork children while other threads
/// hold HDF5 files open, and inherited lock descriptors would make unrelated opens fail.
fn ptytile() -> Command {
    let mut c = Command::new(BIN);
    c.env("HDF5_USE_FILE_LOCKING", "FALSE");
    c
}

/// A small valid dataset in a fresh directory: (dir, data file).
fn valid() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = SimParams { m: 16, scan: [3, 3], step_px: 2.0, semiangle_mrad: 40.0, pixel_size_m: 0.3e-10, dose: Some(1e4), ..Default::default() };
    let sim = simulate(&p).unwrap();
    let f = dir.path().join("d.h5");
    write(&f, &sim, &p).unwrap();
    (dir, f)
}

/// Copy `src` to `dst` with dataset `name` replaced by `f(data)` (or removed if None).
fn variant(src: &Path, dst: &Path, edit: impl Fn(&hdf5::File) -> hdf5::Result<()>) {
    std::fs::copy(src, dst).unwrap();
    let f = hdf5::File::open_rw(dst).unwrap();
    edit(&f).unwrap();
}

fn config(dir: &Path, data: &str, extra: &str) -> PathBuf {
    let c = dir.join("c.toml");
    std::fs::write(
        &c,
        format!(
            "[data]\nfile = {data:?}\nintensities = '/data/intensities'\npositions = '/data/positions_px'\n{extra}\n[reconstruction]\niterations = 2\n[output]\npath = {:?}\n",
            dir.join("out/r.h5").display().to_string()
        ),
    )
    .unwrap();
    c
}

/// Run reconstruct; assert exit 2, one stderr line containing every `needle`, no output.
fn fails(dir: &Path, cfg: &Path, extra_args: &[&str], needles: &[&str]) {
    let out = ptytile().arg("reconstruct").arg(cfg).args(extra_args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "'{n}' not in: {}", lines[0]);
    }
    assert!(!out.status.success());
    let outdir = dir.join("out");
    let left: Vec<_> = std::fs::read_dir(&outdir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "output left behind: {left:?}");
}

fn rewrite<T: hdf5::H5Type>(f: &hdf5::File, path: &str, shape: &[usize], data: &[T]) -> hdf5::Result<()> {
    f.unlink(path)?;
    f.new_dataset::<T>().shape(shape).create(path)?.write_raw(data)
}

#[test]
fn valid_dataset_runs() {
    let (dir, f) = valid();
    let c = config(dir.path(), "d.h5", "");
    let out = ptytile().arg("reconstruct").arg(&c).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("out/r.h5").exists());
    let _ = f;
}

#[test]
fn missing_file() {
    let (dir, _) = valid();
    fails(dir.path(), &config(dir.path(), "nope.h5", ""), &[], &["nope.h5", "no such file"]);
}

#[test]
fn path_is_a_directory() {
    let (dir, _) = valid();
    std::fs::create_dir(dir.path().join("adir")).unwrap();
    fails(dir.path(), &config(dir.path(), "adir", ""), &[], &["adir", "directory"]);
}

#[test]
fn not_hdf5() {
    let (dir, _) = valid();
    std::fs::write(dir.path().join("t.h5"), b"this is not HDF5").unwrap();
    fails(dir.path(), &config(dir.path(), "t.h5", ""), &[], &["t.h5", "HDF5"]);
}

#[test]
fn missing_dataset() {
    let (dir, _) = valid();
    let c = config(dir.path(), "d.h5", "");
    fails(dir.path(), &c, &["--set", "data.intensities=/data/nothing"], &["/data/nothing", "no such dataset"]);
}

#[test]
fn wrong_rank() {
    let (dir, f) = valid();
    variant(&f, &dir.path().join("v.h5"), |h| rewrite(h, "/data/intensities", &[9, 256], &vec![1f32; 9 * 256]));
    fails(dir.path(), &config(dir.path(), "v.h5", ""), &[], &["/data/intensities", "rank 3"]);
}

#[test]
fn non_square_patterns() {
    let (dir, f) = valid();
    variant(&f, &dir.path().join("v.h5"), |h| rewrite(h, "/data/intensities", &[9, 16, 8], &vec![1f32; 9 * 128]));
    fails(dir.path(), &config(dir.path(), "v.h5", ""), &[], &["/data/intensities", "square"]);
}

#[test]
fn wrong_positions_shape() {
    let (dir, f) = valid();
    variant(&f, &dir.path().join("v.h5"), |h| rewrite(h, "/data/positions_px", &[9, 3], &vec![1f64; 27]));
    fails(dir.path(), &config(dir.path(), "v.h5", ""), &[], &["/data/positions_px", "[N, 2]"]);
}

#[test]
fn wrong_dtype() {
    let (dir, f) = valid();
    variant(&f, &dir.path().join("v.h5"), |h| {
        rewrite(h, "/data/intensities", &[9, 16, 16], &vec![num_complex::Complex32::new(1.0, 0.0); 9 * 256])
    });
    fails(dir.path(), &config(dir.path(), "v.h5", ""), &[], &["/data/intensities", "dtype"]);
}

#[test]
fn integer_counts_are_accepted() {
    let (dir, f) = valid();
    variant(&f, &dir.path().join("v.h5"), |h| rewrite(h, "/data/intensities", &[9, 16, 16], &vec![3u16; 9 * 256]));
    let c = config(dir.path(), "v.h5", "");
    let out = ptytile().arg("reconstruct").arg(&c).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn nan_intensities() {
    let (dir, f) = valid();
    variant(&f, &dir.path().join("v.h5"), |h| {
        let mut d = vec![1f32; 9 * 256];
        d[5 * 256 + 7] = f32::NAN;
        rewrite(h, "/data/intensities", &[9, 16, 16], &d)
    });
    fails(dir.path(), &config(dir.path(), "v.h5", ""), &[], &["/data/intensities", "NaN", "pattern 5"]);
}

#[test]
fn negative_intensities() {
    let (dir, f) = valid();
    variant(&f, &dir.path().join("v.h5"), |h| {
        let mut d = vec![1f32; 9 * 256];
        d[2 * 256] = -3.0;
        rewrite(h, "/data/intensities", &[9, 16, 16], &d)
    });
    fails(dir.path(), &config(dir.path(), "v.h5", ""), &[], &["/data/intensities", "negative", "pattern 2"]);
}

#[test]
fn counts_do_not_match_positions() {
    let (dir, f) = valid();
    variant(&f, &dir.path().join("v.h5"), |h| rewrite(h, "/data/positions_px", &[8, 2], &vec![1f64; 16]));
    fails(dir.path(), &config(dir.path(), "v.h5", ""), &[], &["/data/positions_px", "8 positions but 9"]);
}

#[test]
fn positions_outside_field_of_view() {
    let (dir, f) = valid();
    variant(&f, &dir.path().join("v.h5"), |h| {
        let mut p = vec![10f64; 18];
        p[17] = 3e9;
        rewrite(h, "/data/positions_px", &[9, 2], &p)
    });
    fails(dir.path(), &config(dir.path(), "v.h5", ""), &[], &["/data/positions_px", "field of view"]);
}

#[test]
fn non_finite_positions() {
    let (dir, f) = valid();
    variant(&f, &dir.path().join("v.h5"), |h| {
        let mut p = vec![10f64; 18];
        p[4] = f64::INFINITY;
        rewrite(h, "/data/positions_px", &[9, 2], &p)
    });
    fails(dir.path(), &config(dir.path(), "v.h5", ""), &[], &["/data/positions_px", "non-finite", "position 2"]);
}

#[test]
fn zero_energy() {
    let (dir, _) = valid();
    fails(dir.path(), &config(dir.path(), "d.h5", "[experiment]\nenergy_ev = 0.0"), &[], &["experiment.energy_ev", "positive"]);
}

#[test]
fn negative_sampling() {
    let (dir, _) = valid();
    let c = config(dir.path(), "d.h5", "");
    fails(dir.path(), &c, &["--set", "experiment.angular_sampling_mrad=-0.5"], &["experiment.angular_sampling_mrad", "positive"]);
}

#[test]
fn absurd_metadata_in_file() {
    let (dir, f) = valid();
    variant(&f, &dir.path().join("v.h5"), |h| h.group("meta")?.attr("energy_eV")?.write_scalar(&-5.0f64));
    fails(dir.path(), &config(dir.path(), "v.h5", ""), &[], &["experiment.energy_ev", "positive"]);
}

#[test]
fn missing_metadata_key() {
    let (dir, f) = valid();
    variant(&f, &dir.path().join("v.h5"), |h| h.group("meta")?.delete_attr("energy_eV"));
    fails(dir.path(), &config(dir.path(), "v.h5", ""), &[], &["experiment.energy_ev", "missing"]);
}

#[test]
fn unknown_config_key() {
    let (dir, _) = valid();
    fails(dir.path(), &config(dir.path(), "d.h5", "[experiment]\nenergy_kev = 300"), &[], &["c.toml", "energy_kev"]);
}

#[test]
fn bad_override() {
    let (dir, _) = valid();
    let c = config(dir.path(), "d.h5", "");
    fails(dir.path(), &c, &["--set", "reconstruction.noise_model=gaussian"], &["gaussian"]);
}

#[test]
fn missing_config() {
    let (dir, _) = valid();
    fails(dir.path(), &dir.path().join("none.toml"), &[], &["none.toml"]);
}
