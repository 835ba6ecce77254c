//! Tiling exactness under MPI: `mpirun -n 4 ptytile reconstruct` (2×2 tiles, one process
//! per rank) gives the same object and probe after 10 iterations as one thread rank, for
//! the gd (also with 3 mini-batches), dm and mlcg engines — on a jittered synthetic scan,
//! and on the 20 × 20-position crop of the shipped PbTiO3 file (real positions and counts;
//! relative difference ≤ 1e-6, with the Poisson and amplitude models and a dm → mlcg
//! schedule).
//! Skips, saying why, when no mpirun is installed.

mod common;

use ptytile::output::read_result;
use ptytile::simulate::{simulate, write, SimParams};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ptytile");

fn mpirun() -> Option<&'static str> {
    ["mpirun.mpich", "mpirun"].into_iter().find(|m| {
        Command::new(m)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

fn rel(a: &[num_complex::Complex32], b: &[num_complex::Complex32]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).norm_sqr() as f64)
        .sum();
    (d / a.iter().map(|x| x.norm_sqr() as f64).sum::<f64>()).sqrt()
}

/// `ptytile reconstruct CFG --output DIR/OUT EXTRA…`, under `mpirun -n 4` when `launcher`
/// names one; the result read back.
fn reconstruct(
    launcher: Option<&str>,
    cfg: &std::path::Path,
    dir: &std::path::Path,
    out: &str,
    extra: &[&str],
) -> ptytile::output::ReconResult {
    let mut c = match launcher {
        Some(m) => {
            let mut c = Command::new(m);
            c.args(["-n", "4", BIN]);
            c
        }
        None => Command::new(BIN),
    };
    let o = c
        .env("HDF5_USE_FILE_LOCKING", "FALSE")
        .arg("reconstruct")
        .arg(cfg)
        .args(["--set", "output.png=false", "--output"])
        .arg(dir.join(out))
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    read_result(&dir.join(out)).unwrap()
}

#[test]
fn mpirun_4_ranks_equals_single_rank() {
    let Some(mpi) = mpirun() else {
        eprintln!("SKIPPED: no mpirun found");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = SimParams {
        m: 32,
        scan: [14, 14],
        step_px: 2.5,
        jitter_px: 0.4,
        semiangle_mrad: 30.0,
        pixel_size_m: 0.25e-10,
        dose: Some(1e5),
        seed: 7,
        ..Default::default()
    };
    let (_, cfg) = write(&dir.path().join("sim.h5"), &simulate(&p).unwrap(), &p).unwrap();
    let run = |launcher: Option<&str>, out: &str, extra: &[&str]| {
        let mut e = vec!["--iterations", "10"];
        e.extend_from_slice(extra);
        reconstruct(launcher, &cfg, dir.path(), out, &e)
    };
    // gd with mini-batches: its first pass forms the full preconditioner (engine::gd::GdState)
    for (i, (engine, e)) in [
        ("gd", "reconstruction.engine=\"gd\""),
        ("dm", "reconstruction.engine=\"dm\""),
        ("mlcg", "reconstruction.engine=\"mlcg\""),
        ("gd, 3 mini-batches", "reconstruction.batches=3"),
    ]
    .into_iter()
    .enumerate()
    {
        let one = run(None, &format!("one_{i}.h5"), &["--set", e]);
        let four = run(
            Some(mpi),
            &format!("four_{i}.h5"),
            &["--set", "parallel.tiles=[2, 2]", "--set", e],
        );
        assert_eq!(
            four.attrs.iter().find(|a| a.0 == "ranks").map(|a| a.1),
            Some(4.0),
            "ran as 4 MPI ranks"
        );
        let (eo, ep) = (
            rel(&four.object.data, &one.object.data),
            rel(&four.probe, &one.probe),
        );
        eprintln!("{engine}: mpirun -n 4: object {eo:.2e}, probe {ep:.2e}");
        assert!(
            eo <= 1e-5 && ep <= 1e-5,
            "{engine}: object {eo}, probe {ep}"
        );
        assert!(one.loss[9] < 0.5 * one.loss[0], "{engine}: {:?}", one.loss);
    }
}

/// The real-data half of the promise under MPI: `mpirun -n 4` (2 × 2 tiles, each smaller
/// than the 128-px window) equals one thread rank on the PbTiO3 crop, to 1e-6; and the
/// multislice model (S = 3) on a crop of the thick PbTiO3 file.
#[test]
fn mpirun_4_ranks_equals_single_rank_real_data() {
    let Some(mpi) = mpirun() else {
        eprintln!("SKIPPED: no mpirun found");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::pbtio3_crop(dir.path(), 20);
    let sched = dir.path().join("schedule.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("iterations = 20\n", "");
    std::fs::write(&sched, text + "\n[[schedule]]\nengine = \"dm\"\niterations = 5\n\n[[schedule]]\nengine = \"mlcg\"\niterations = 5\n").unwrap();
    let run = |launcher: Option<&str>, cfg: &std::path::Path, out: &str, extra: &[&str]| {
        reconstruct(launcher, cfg, dir.path(), out, extra)
    };
    let thick = common::pbtio3_thick_crop(&dir.path().join("thick"), 20);
    let cases: [(&str, &std::path::Path, Vec<&str>); 7] = [
        ("gd", cfg.as_path(), vec!["--iterations", "10"]),
        // mini-batches: the first pass forms the full preconditioner (engine::gd::GdState)
        (
            "gd, 3 mini-batches",
            cfg.as_path(),
            vec!["--iterations", "10", "--set", "reconstruction.batches=3"],
        ),
        // multislice, S = 3, on the thick file with its shipped config (mlcg): every halo
        // message carries all 3 slices
        (
            "mlcg multislice S = 3",
            thick.as_path(),
            vec![
                "--iterations",
                "10",
                "--set",
                "reconstruction.slices=3",
                "--set",
                "reconstruction.slice_thickness_m=11.07e-10",
                "--set",
                "reconstruction.axial_regularization=0.05",
            ],
        ),
        (
            "gd amplitude",
            cfg.as_path(),
            vec![
                "--iterations",
                "10",
                "--set",
                "reconstruction.noise_model=\"amplitude\"",
            ],
        ),
        (
            "dm",
            cfg.as_path(),
            vec![
                "--iterations",
                "10",
                "--set",
                "reconstruction.engine=\"dm\"",
            ],
        ),
        (
            "mlcg",
            cfg.as_path(),
            vec![
                "--iterations",
                "10",
                "--set",
                "reconstruction.engine=\"mlcg\"",
            ],
        ),
        (
            "dm -> mlcg",
            sched.as_path(),
            vec!["--set", "dm.er_iterations=2"],
        ),
    ];
    for (i, (name, cfg, extra)) in cases.iter().enumerate() {
        let mut one_args = extra.clone();
        one_args.extend(["--ranks", "1"]);
        let one = run(None, cfg, &format!("one_{i}.h5"), &one_args);
        let mut four_args = extra.clone();
        four_args.extend(["--set", "parallel.tiles=[2, 2]"]);
        let four = run(Some(mpi), cfg, &format!("four_{i}.h5"), &four_args);
        assert_eq!(
            four.attrs.iter().find(|a| a.0 == "ranks").map(|a| a.1),
            Some(4.0),
            "ran as 4 MPI ranks"
        );
        let (eo, ep) = (
            common::rel_l2(&four.object.data, &one.object.data),
            common::rel_l2(&four.probe, &one.probe),
        );
        eprintln!("PbTiO3 crop, {name}: mpirun -n 4: object {eo:.2e}, probe {ep:.2e}");
        assert!(eo <= 1e-6 && ep <= 1e-6, "{name}: object {eo}, probe {ep}");
        assert_eq!(one.loss.len(), 10);
    }
}
