//! `ptytile bench scaling` end to end on a small simulated dataset: 1 and 2 ranks, thread
//! and MPI launchers, with and without overlap → a CSV with one row per run and a PNG.

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

#[test]
fn scaling_study_writes_csv_and_png() {
    let dir = tempfile::tempdir().unwrap();
    let p = SimParams {
        m: 32,
        scan: [10, 10],
        step_px: 2.5,
        jitter_px: 0.0,
        semiangle_mrad: 30.0,
        pixel_size_m: 0.25e-10,
        dose: Some(1e5),
        seed: 3,
        ..Default::default()
    };
    let (_, cfg) = write(&dir.path().join("sim.h5"), &simulate(&p).unwrap(), &p).unwrap();
    let out = dir.path().join("scaling");
    let mpi = mpirun();
    let launchers = if mpi.is_some() {
        "threads,mpi"
    } else {
        "threads"
    };
    if mpi.is_none() {
        eprintln!("no mpirun found: thread ranks only");
    }
    let o = Command::new(BIN)
        .args(["bench", "scaling"])
        .arg(&cfg)
        .args([
            "--ranks",
            "1,2",
            "--launchers",
            launchers,
            "--iterations",
            "3",
            "--mpirun",
            mpi.unwrap_or("mpirun"),
            "--output",
        ])
        .arg(&out)
        .env("HDF5_USE_FILE_LOCKING", "FALSE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("scaling.csv")).unwrap();
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| {
        head.iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("column {name}"))
    };
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let n_launchers = launchers.split(',').count();
    assert_eq!(
        rows.len(),
        n_launchers * 2 * 2,
        "launchers × rank counts × overlap on/off"
    );
    for r in &rows {
        let ranks: usize = r[col("ranks")].parse().unwrap();
        let (ty, tx): (usize, usize) = (
            r[col("tiles_y")].parse().unwrap(),
            r[col("tiles_x")].parse().unwrap(),
        );
        assert_eq!(ty * tx, ranks, "{r:?}");
        let num = |c: &str| r[col(c)].parse::<f64>().unwrap();
        assert!(
            num("s_per_iteration") > 0.0 && num("compute_s") > 0.0,
            "{r:?}"
        );
        assert!(
            num("compute_s") + num("comm_s") + num("wait_s") <= 1.5 * num("s_per_iteration") + 0.01,
            "split within the wall time: {r:?}"
        );
        let msgs = num("halo_messages_per_iteration");
        if ranks == 1 {
            assert_eq!(msgs, 0.0);
            if r[col("overlap")] == "true" {
                assert!((num("efficiency") - 1.0).abs() < 1e-9);
            }
        } else {
            // 2 ranks: a gradient message and an object refresh each way per iteration
            assert_eq!(msgs, 4.0, "{r:?}");
            assert!(num("halo_bytes_per_iteration") > 0.0);
            let h = num("hidden_fraction");
            assert!((0.0..=1.0).contains(&h), "{r:?}");
        }
    }
    // the PNG decodes to the documented size
    let dec = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(out.join("scaling.png")).unwrap(),
    ));
    let info = dec.read_info().unwrap();
    assert_eq!(
        (info.info().width, info.info().height),
        ptytile::cli::scaling::PLOT_SIZE
    );
}

#[test]
fn unknown_launcher_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = SimParams {
        m: 32,
        scan: [4, 4],
        step_px: 2.5,
        seed: 1,
        ..Default::default()
    };
    let (_, cfg) = write(&dir.path().join("sim.h5"), &simulate(&p).unwrap(), &p).unwrap();
    let o = Command::new(BIN)
        .args(["bench", "scaling"])
        .arg(&cfg)
        .args(["--launchers", "slurm", "--output"])
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--launchers"), "{err}");
}
