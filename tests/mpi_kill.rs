//! Killing one MPI rank ends the job: `mpirun -n 16 ptytile reconstruct` on a small
//! simulated dataset (16 processes, oversubscribed on small machines), SIGKILL to rank 5 once
//! rank 0 logs that it is iterating; mpirun must exit non-zero within 10 s of the kill, its
//! output must name rank 5 (MPICH 4.0's hydra names only a PID; ptytile's rank watcher,
//! src/comm/mpi.rs, names the rank), and no process of the job may be left behind.
//! Skips, saying why, when `mpirun` is not on PATH (as tests/comm_mpi.rs).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ptytile");
const RANKS: usize = 16;
const VICTIM: usize = 5;
/// Hard limit on the whole test: past it the job is killed and the test fails.
const LIMIT: Duration = Duration::from_secs(60);

fn mpirun() -> Option<&'static str> {
    ["mpirun.mpich", "mpirun"].into_iter().find(|m| {
        Command::new(m)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

/// Parent pid from /proc/PID/stat (the field after the parenthesised command name).
fn ppid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let state = f.next()?;
    if state == "Z" {
        return None; // exited, not yet reaped
    }
    f.next()?.parse().ok()
}

/// The environment of `pid` as (name, value) pairs (empty if unreadable or gone).
fn environ(pid: u32) -> Vec<(String, String)> {
    let Ok(b) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return Vec::new();
    };
    b.split(|&c| c == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Live processes whose environment carries `marker` (every process of this job: mpirun,
/// hydra's proxy, the ranks and their watchers).
fn job_processes(marker: &str) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| {
            ppid(p).is_some()
                && environ(p)
                    .iter()
                    .any(|(k, v)| k == "PTYTILE_KILL_TEST" && v == marker)
        })
        .collect()
}

/// rank → pid of the ranks: children of hydra's proxy (itself a child of mpirun) with PMI_RANK.
fn rank_pids(mpirun_pid: u32) -> Vec<(usize, u32)> {
    let pids = all_pids();
    let proxies: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| ppid(p) == Some(mpirun_pid))
        .collect();
    let mut ranks: Vec<(usize, u32)> = pids
        .iter()
        .copied()
        .filter(|&p| ppid(p).is_some_and(|pp| proxies.contains(&pp)))
        .filter_map(|p| {
            environ(p)
                .into_iter()
                .find(|(k, _)| k == "PMI_RANK")
                .and_then(|(_, v)| v.parse().ok())
                .map(|r| (r, p))
        })
        .collect();
    ranks.sort();
    ranks
}

/// Kills whatever is left of the job when dropped (test failure or success).
struct Cleanup<'a> {
    child: Child,
    marker: &'a str,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in job_processes(self.marker) {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
    }
}

fn read(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

#[test]
fn sigkill_of_one_rank_ends_the_job_naming_it() {
    let Some(mpi) = mpirun() else {
        eprintln!("SKIP: mpirun not found on PATH");
        return;
    };
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim.h5");
    let o = Command::new(BIN)
        .args(["simulate", "--output"])
        .arg(&sim)
        .args(["--scan", "12x12", "--probe-size", "32"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "simulate: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (out_path, err_path) = (dir.path().join("mpirun.out"), dir.path().join("mpirun.err"));
    let marker = dir.path().display().to_string();
    let child = Command::new(mpi)
        .args(["-n", &RANKS.to_string(), BIN, "reconstruct"])
        .arg(dir.path().join("sim.toml"))
        .args([
            "--iterations",
            "100000",
            "--set",
            "output.png=false",
            "--output",
        ])
        .arg(dir.path().join("recon.h5"))
        .env("HDF5_USE_FILE_LOCKING", "FALSE")
        .env("RUST_LOG", "info")
        .env("PTYTILE_KILL_TEST", &marker)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn mpirun");
    let mpirun_pid = child.id();
    let mut job = Cleanup {
        child,
        marker: &marker,
    };
    let output = || {
        format!(
            "--- stdout\n{}--- stderr\n{}",
            read(&out_path),
            read(&err_path)
        )
    };

    // Wait for all 16 ranks and for rank 0 to log the first iteration, then a little more.
    let ranks = loop {
        assert!(
            t0.elapsed() < LIMIT,
            "not iterating after {LIMIT:?}\n{}",
            output()
        );
        if let Some(st) = job.child.try_wait().unwrap() {
            panic!("mpirun ended before the kill: {st}\n{}", output());
        }
        let ranks = rank_pids(mpirun_pid);
        if ranks.len() == RANKS && read(&err_path).contains("from iteration 0") {
            break ranks;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        job.child.try_wait().unwrap().is_none(),
        "mpirun ended before the kill\n{}",
        output()
    );
    let (r, victim) = ranks[VICTIM];
    assert_eq!(r, VICTIM, "{ranks:?}");
    eprintln!("ranks (rank, pid): {ranks:?}; at {:.1} s (2 s after rank 0 logged iteration 0): kill -9 {victim} (rank {VICTIM})", t0.elapsed().as_secs_f64());
    let killed = Instant::now();
    assert!(Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap()
        .success());

    let status = loop {
        if let Some(st) = job.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < LIMIT,
            "mpirun still running {:?} after the kill\n{}",
            killed.elapsed(),
            output()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let dt = killed.elapsed();
    let text = output();
    let brief: String = text
        .lines()
        .filter(|l| !l.contains(" INFO "))
        .map(|l| format!("{l}\n"))
        .collect();
    eprintln!(
        "mpirun ended {dt:?} after the kill with {status} (output less INFO lines):\n{brief}"
    );
    assert!(!status.success(), "mpirun exited 0 after a rank was killed");
    assert!(
        dt < Duration::from_secs(10),
        "mpirun took {dt:?} to end after the kill"
    );
    assert!(
        text.contains(&format!("rank {VICTIM} (pid {victim} ")),
        "output does not name rank {VICTIM}\n{brief}"
    );

    // No stray processes: everything carrying this job's marker is gone within 5 s.
    let t = Instant::now();
    loop {
        let left = job_processes(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "processes of the job left behind: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "no process left; whole test {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
