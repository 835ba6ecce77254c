//! MpiComm under a real launcher: spawns `mpirun -n 4 ptytile_comm_selftest`, so this
//! test process never initialises MPI (works under `cargo test` and `cargo nextest`).
//! Skips, saying why, when `mpirun` is not on PATH.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ptytile_comm_selftest");

fn mpirun() -> Option<&'static str> {
    // Prefer MPICH's launcher by name (the binary is built against whatever `mpicc` is).
    ["mpirun.mpich", "mpirun"].into_iter().find(|cand| {
        Command::new(cand)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

/// Run the self-test on `n` ranks with a hard wall-clock limit so a hang fails the test.
fn run(n: usize, mode: &str, limit: Duration) -> Option<(Output, Duration)> {
    let Some(launcher) = mpirun() else {
        eprintln!("SKIP: mpirun not found on PATH");
        return None;
    };
    let t = Instant::now();
    let mut child = Command::new("timeout")
        .arg(format!("{}", limit.as_secs()))
        .args([launcher, "-n", &n.to_string(), BIN, mode])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mpirun");
    let out = {
        let _ = &mut child;
        child.wait_with_output().expect("wait for mpirun")
    };
    let dt = t.elapsed();
    eprintln!(
        "{launcher} -n {n} {BIN} {mode}: status {:?} in {dt:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out, dt))
}

#[test]
fn mpi_selftest_4_ranks() {
    let Some((out, _)) = run(4, "checks", Duration::from_secs(120)) else {
        return;
    };
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("selftest ok on 4 ranks"));
}

#[test]
fn mpi_rank_error_aborts_job_quickly() {
    let Some((out, dt)) = run(4, "fail-error", Duration::from_secs(60)) else {
        return;
    };
    assert!(!out.status.success());
    assert_ne!(
        out.status.code(),
        Some(124),
        "job hung until killed by timeout(1)"
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("rank 1: tile 3: deliberate failure on rank 1"));
    assert!(dt < Duration::from_secs(10), "took {dt:?}");
}

#[test]
fn mpi_rank_panic_aborts_job_quickly() {
    let Some((out, dt)) = run(4, "fail-panic", Duration::from_secs(60)) else {
        return;
    };
    assert!(!out.status.success());
    assert_ne!(
        out.status.code(),
        Some(124),
        "job hung until killed by timeout(1)"
    );
    assert!(dt < Duration::from_secs(10), "took {dt:?}");
}

#[test]
fn mpi_launcher_env_seen() {
    let Some((out, _)) = run(2, "launch-info", Duration::from_secs(60)) else {
        return;
    };
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("rank 1 of 2: Some(LaunchInfo { rank: 1, size: 2"),
        "{s}"
    );
}

#[test]
fn mpi_selftest_5_ranks() {
    let Some((out, _)) = run(5, "checks", Duration::from_secs(120)) else {
        return;
    };
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("selftest ok on 5 ranks"));
}

/// The same formula as `tree_input` in src/bin/ptytile_comm_selftest.rs.
fn tree_input(rank: usize, i: usize) -> f64 {
    let m = ((rank * 7919 + i * 104729) % 1000) as f64 - 499.5;
    m * 10f64.powi(((rank * 5 + i * 3) % 19) as i32 - 9) + 0.1 * (rank + 1) as f64
}

fn bits_hex(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{:016x}", x.to_bits()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// MPI processes and thread ranks give bit-identical all-reduce results (same tree order).
#[test]
fn mpi_allreduce_bits_equal_threads() {
    for n in [4usize, 5] {
        let Some((out, _)) = run(n, "sum-bits", Duration::from_secs(60)) else {
            return;
        };
        assert!(out.status.success());
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let threads = ptytile::comm::run_threads(n, |mut c| {
            use ptytile::comm::Comm;
            let mut s: Vec<f64> = (0..16).map(|i| tree_input(c.rank(), i)).collect();
            let mut m = s.clone();
            c.allreduce_sum(&mut s)?;
            c.allreduce_max(&mut m)?;
            Ok((s, m))
        })
        .unwrap();
        let (s, m) = &threads[0];
        assert!(
            stdout.contains(&format!("sum {}\n", bits_hex(s))),
            "{n} ranks: MPI sum differs from threads'\nthreads: {}\n{stdout}",
            bits_hex(s)
        );
        assert!(
            stdout.contains(&format!("max {}\n", bits_hex(m))),
            "{n} ranks: MPI max differs from threads'\n{stdout}"
        );
    }
}

/// A rank that never enters an all-reduce: the others fail within their timeout naming a
/// peer, and the job ends — no hang.
#[test]
fn mpi_allreduce_silent_peer_is_named() {
    let Some((out, dt)) = run(4, "allreduce-silent", Duration::from_secs(60)) else {
        return;
    };
    assert!(!out.status.success());
    assert_ne!(
        out.status.code(),
        Some(124),
        "job hung until killed by timeout(1)"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("allreduce with rank") && err.contains("no message from rank"),
        "{err}"
    );
    assert!(dt < Duration::from_secs(10), "took {dt:?}");
}
