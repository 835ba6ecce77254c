//! Tiling exactness under MPI: `mpirun -n 4 ptytile reconstruct` (2×2 tiles, one process
//! per rank) gives the same object and probe after 10 iterations as one thread rank, for
//! the gd, dm and mlcg engines.
//! Skips, saying why, when no mpirun is installed.

use ptytile::output::read_result;
use ptytile::simulate::{simulate, write, SimParams};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ptytile");

fn mpirun() -> Option<&'static str> {
    ["mpirun.mpich", "mpirun"].into_iter().find(|m| Command::new(m).arg("--version").output().map(|o| o.status.success()).unwrap_or(false))
}

fn rel(a: &[num_complex::Complex32], b: &[num_complex::Complex32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).norm_sqr() as f64).sum();
    (d / a.iter().map(|x| x.norm_sqr() as f64).sum::<f64>()).sqrt()
}

#[test]
fn mpirun_4_ranks_equals_single_rank() {
    let Some(mpi) = mpirun() else {
        eprintln!("SKIPPED: no mpirun found");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = SimParams { m: 32, scan: [14, 14], step_px: 2.5, jitter_px: 0.4, semiangle_mrad: 30.0, pixel_size_m: 0.25e-10, dose: Some(1e5), seed: 7, ..Default::default() };
    let (_, cfg) = write(&dir.path().join("sim.h5"), &simulate(&p).unwrap(), &p).unwrap();
    let run = |launcher: Option<&str>, out: &str, extra: &[&str]| {
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
            .arg(&cfg)
            .args(["--iterations", "10", "--output"])
            .arg(dir.path().join(out))
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        read_result(&dir.path().join(out)).unwrap()
    };
    for engine in ["gd", "dm", "mlcg"] {
        let e = format!("reconstruction.engine=\"{engine}\"");
        let one = run(None, &format!("one_{engine}.h5"), &["--set", &e]);
        let four = run(Some(mpi), &format!("four_{engine}.h5"), &["--set", "parallel.tiles=[2, 2]", "--set", &e]);
        assert_eq!(four.attrs.iter().find(|a| a.0 == "ranks").map(|a| a.1), Some(4.0), "ran as 4 MPI ranks");
        let (eo, ep) = (rel(&four.object.data, &one.object.data), rel(&four.probe, &one.probe));
        eprintln!("{engine}: mpirun -n 4: object {eo:.2e}, probe {ep:.2e}");
        assert!(eo <= 1e-5 && ep <= 1e-5, "{engine}: object {eo}, probe {ep}");
        assert!(one.loss[9] < 0.5 * one.loss[0], "{engine}: {:?}", one.loss);
    }
}
