//! Checkpoint and restart: a run stopped after k iterations and resumed ends with the same
//! object, probe and loss bits as the uninterrupted run (1 rank, 4 thread ranks, and across
//! launchers: threads ↔ `mpirun -n 4`); `kill -9` at arbitrary moments leaves only complete
//! checkpoints and loses at most `checkpoint.every` iterations; SIGTERM checkpoints and
//! exits with code 3, SIGUSR1 checkpoints and continues; bad resume directories are refused
//! with one line and exit code 2.

mod common;

use ptytile::cli::signals::EXIT_CHECKPOINTED;
use ptytile::config::Config;
use ptytile::driver::StopFlags;
use ptytile::driver::{self, Outcome, RunOptions};
use ptytile::output::checkpoint::{self, MANIFEST};
use ptytile::output::{read_result, ReconResult};
use ptytile::simulate::{simulate, write, SimParams};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ptytile");

fn dataset() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg) = common::small_scan(dir.path(), 1e5, 11);
    (dir, cfg)
}

/// Object, probe and loss equal bit for bit (NaN-safe: compares the bits).
fn assert_same_bits(a: &ReconResult, b: &ReconResult, what: &str) {
    let bits32 = |v: &[num_complex::Complex32]| {
        v.iter()
            .flat_map(|c| [c.re.to_bits(), c.im.to_bits()])
            .collect::<Vec<_>>()
    };
    assert_eq!(a.object.shape, b.object.shape, "{what}: object shape");
    assert!(
        bits32(&a.object.data) == bits32(&b.object.data),
        "{what}: object differs"
    );
    assert!(
        bits32(&a.probe) == bits32(&b.probe),
        "{what}: probe differs"
    );
    let l = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(l(&a.loss), l(&b.loss), "{what}: loss history differs");
}

fn config(cfg: &Path, ranks: usize, extra: &[String]) -> Config {
    let mut set = vec![format!("parallel.ranks={ranks}"), "output.png=false".into()];
    set.extend_from_slice(extra);
    Config::load(cfg, &set).unwrap()
}

/// In-process: uninterrupted N iterations; stopped (as by SIGTERM) after k and resumed;
/// the stop leaves a complete checkpoint at exactly k, holding the engine arrays `arrays`.
fn stop_and_resume_in_process(ranks: usize, extra: &[String], arrays: &[&str]) {
    let (dir, cfg) = dataset();
    let (n, k) = (9, 4);
    let ck = dir.path().join("ck");
    let mut set = vec![
        format!("reconstruction.iterations={n}"),
        format!("checkpoint.dir={:?}", ck.display().to_string()),
    ];
    set.extend_from_slice(extra);
    let c = config(&cfg, ranks, &set);
    let full = driver::run(&c, &|_, _, _, _| {}).unwrap().unwrap();
    assert_eq!(full.loss.len(), n);

    let flags = StopFlags::new();
    let stop_at = |it: usize, _: f64, _: f64, _: usize| {
        if it + 1 == k {
            flags.stop.store(true, Ordering::SeqCst);
        }
    };
    let out = driver::run_with(
        &c,
        RunOptions {
            resume: None,
            signals: Some(&flags),
        },
        &stop_at,
    )
    .unwrap();
    match out {
        Outcome::Stopped { iteration, dir } => {
            assert_eq!((iteration, dir.as_path()), (k, ck.as_path()))
        }
        Outcome::Finished(_) => panic!("did not stop"),
    }
    let m = checkpoint::verify(&ck).unwrap();
    assert_eq!(
        (m.iteration, m.ranks, m.engine.as_str()),
        (k as u64, ranks, "gd")
    );
    let names: Vec<String> = checkpoint::read_rank(&ck, &m, 0)
        .unwrap()
        .arrays
        .iter()
        .map(|a| a.name.clone())
        .collect();
    for a in arrays {
        assert!(names.contains(&a.to_string()), "{a} missing from {names:?}");
    }

    let resumed = match driver::run_with(
        &c,
        RunOptions {
            resume: Some(&ck),
            signals: None,
        },
        &|_, _, _, _| {},
    )
    .unwrap()
    {
        Outcome::Finished(r) => r.unwrap(),
        Outcome::Stopped { .. } => panic!("stopped"),
    };
    assert_eq!(
        resumed
            .attrs
            .iter()
            .find(|a| a.0 == "resumed_from_iteration")
            .map(|a| a.1),
        Some(k as f64)
    );
    assert_same_bits(&resumed, &full, &format!("{ranks} rank(s), resumed at {k}"));
    // a checkpoint at the last iteration resumes to the same result with no iteration left
    set.push(format!("checkpoint.every={n}"));
    let c_last = config(&cfg, ranks, &set);
    assert_same_bits(
        &driver::run(&c_last, &|_, _, _, _| {}).unwrap().unwrap(),
        &full,
        "run writing checkpoints",
    );
    let again = driver::run_with(
        &c,
        RunOptions {
            resume: Some(&ck),
            signals: None,
        },
        &|_, _, _, _| {},
    )
    .unwrap();
    let Outcome::Finished(Some(again)) = again else {
        panic!("no result")
    };
    assert_same_bits(&again, &full, "resumed from the final checkpoint");
}

/// A dm → mlcg → epie schedule, stopped inside each stage and resumed: the exit waves and
/// the conjugate-gradient memory travel in the checkpoint, so every resumed run ends with
/// the uninterrupted run's bits; the manifest names the schedule and the stage.
#[test]
fn schedule_resume_bit_exact_in_every_stage() {
    let (dir, cfg) = dataset();
    // the stages set the iterations: drop the simulated config's reconstruction.iterations
    let mut text: String = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("iterations"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str("\n[[schedule]]\nengine = \"dm\"\niterations = 3\n[[schedule]]\nengine = \"mlcg\"\niterations = 4\n[[schedule]]\nengine = \"epie\"\niterations = 2\n");
    std::fs::write(&cfg, text).unwrap();
    let ck = dir.path().join("ck");
    let c = config(
        &cfg,
        4,
        &[format!("checkpoint.dir={:?}", ck.display().to_string())],
    );
    let full = driver::run(&c, &|_, _, _, _| {}).unwrap().unwrap();
    assert_eq!(full.loss.len(), 9);
    for (k, stage, arrays) in [
        (2, 0, vec!["exit_waves"]),
        (5, 1, vec!["cg_gradient", "cg_direction", "cg_scalars"]),
        (8, 2, vec![]),
    ] {
        let flags = StopFlags::new();
        let stop_at = |it: usize, _: f64, _: f64, _: usize| {
            if it + 1 == k {
                flags.stop.store(true, Ordering::SeqCst);
            }
        };
        let out = driver::run_with(
            &c,
            RunOptions {
                resume: None,
                signals: Some(&flags),
            },
            &stop_at,
        )
        .unwrap();
        assert!(
            matches!(out, Outcome::Stopped { iteration, .. } if iteration == k),
            "did not stop at {k}"
        );
        let m = checkpoint::verify(&ck).unwrap();
        assert_eq!(
            (m.iteration, m.engine.as_str(), m.stage),
            (k as u64, "dm:3,mlcg:4,epie:2", stage)
        );
        let names: Vec<String> = checkpoint::read_rank(&ck, &m, 0)
            .unwrap()
            .arrays
            .iter()
            .map(|a| a.name.clone())
            .collect();
        for a in &arrays {
            assert!(
                names.contains(&a.to_string()),
                "stop at {k}: {a} missing from {names:?}"
            );
        }
        let resumed = match driver::run_with(
            &c,
            RunOptions {
                resume: Some(&ck),
                signals: None,
            },
            &|_, _, _, _| {},
        )
        .unwrap()
        {
            Outcome::Finished(r) => r.unwrap(),
            Outcome::Stopped { .. } => panic!("stopped"),
        };
        assert_same_bits(&resumed, &full, &format!("schedule resumed at {k}"));
    }
}

#[test]
fn resume_bit_exact_one_rank() {
    stop_and_resume_in_process(1, &[], &[]);
}

#[test]
fn resume_bit_exact_four_thread_ranks() {
    stop_and_resume_in_process(4, &[], &[]);
}

/// gd with mini-batches keeps the previous pass's object preconditioner between iterations
/// (src/engine/gd.rs `GdState`): it travels in the checkpoint and the resumed run ends with
/// the uninterrupted run's bits.
#[test]
fn resume_bit_exact_gd_mini_batches() {
    stop_and_resume_in_process(
        4,
        &["reconstruction.batches=3".into()],
        &["gd_d_obj", "gd_d_max"],
    );
}

/// `ptytile reconstruct` with arguments, HDF5 locking off (forked test processes).
fn cmd<S: AsRef<std::ffi::OsStr>>(launcher: Option<&str>, cfg: &Path, args: &[S]) -> Command {
    let mut c = match launcher {
        Some(m) => {
            let mut c = Command::new(m);
            c.args(["-n", "4", BIN]);
            c
        }
        None => Command::new(BIN),
    };
    c.env("HDF5_USE_FILE_LOCKING", "FALSE")
        .arg("reconstruct")
        .arg(cfg)
        .args(["--set", "output.png=false"])
        .args(args);
    c
}

fn run_ok(mut c: Command) -> std::process::Output {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn mpirun() -> Option<&'static str> {
    ["mpirun.mpich", "mpirun"].into_iter().find(|m| {
        Command::new(m)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// The 'different node count' case: the same 4 ranks and 2×2 tiles, once as threads of one
/// process and once as 4 MPI processes; a checkpoint of either resumes under the other.
#[test]
fn resume_across_launchers_threads_and_mpirun() {
    let Some(mpi) = mpirun() else {
        eprintln!("SKIPPED: no mpirun found");
        return;
    };
    let (dir, cfg) = dataset();
    let d = |s: &str| dir.path().join(s).display().to_string();
    let tiles = "parallel.tiles=[2, 2]";
    run_ok(cmd(
        None,
        &cfg,
        &[
            "--ranks",
            "4",
            "--iterations",
            "10",
            "--output",
            &d("full.h5"),
            "--set",
            tiles,
        ],
    ));
    let full = read_result(Path::new(&d("full.h5"))).unwrap();
    for (first, second, name) in [
        (None, Some(mpi), "threads-to-mpirun"),
        (Some(mpi), None, "mpirun-to-threads"),
    ] {
        let ck = d(&format!("ck-{name}"));
        let ck_set = format!("checkpoint.dir={ck:?}");
        let part = [
            "--ranks",
            "4",
            "--iterations",
            "4",
            "--output",
            &d("part.h5"),
            "--set",
            tiles,
            "--set",
            "checkpoint.every=4",
            "--set",
            &ck_set,
        ];
        run_ok(cmd(first, &cfg, &part));
        let m = checkpoint::verify(Path::new(&ck)).unwrap();
        assert_eq!((m.iteration, m.ranks), (4, 4));
        let out = d(&format!("resumed-{name}.h5"));
        run_ok(cmd(
            second,
            &cfg,
            &[
                "--ranks",
                "4",
                "--iterations",
                "10",
                "--output",
                &out,
                "--set",
                tiles,
                "--resume",
                &ck,
            ],
        ));
        let r = read_result(Path::new(&out)).unwrap();
        assert_eq!(
            r.attrs.iter().find(|a| a.0 == "ranks").map(|a| a.1),
            Some(4.0)
        );
        assert_same_bits(&r, &full, name);
    }
}

/// A child whose stderr lines arrive on a channel.
struct Watched {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

fn spawn(mut c: Command) -> Watched {
    c.env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(|l| l.ok()) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Watched {
        child,
        lines,
        seen: Vec::new(),
    }
}

impl Watched {
    /// Wait (≤ 60 s) for a stderr line containing `pat`.
    fn wait_line(&mut self, pat: &str) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let hit = l.contains(pat);
                self.seen.push(l);
                if hit {
                    return;
                }
            }
        }
        panic!("no line with '{pat}' in 60 s; saw {:?}", self.seen);
    }
    /// Wait (≤ 60 s) for the exit; returns (status, all stderr lines).
    fn finish(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                while let Ok(l) = self.lines.try_recv() {
                    self.seen.push(l);
                }
                return (s, self.seen);
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "did not exit in 60 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Completed iterations according to the progress log lines `lines` (`iteration I: loss ...`).
fn done(lines: &[String]) -> usize {
    lines
        .iter()
        .filter_map(|l| {
            l.split("iteration ")
                .nth(1)?
                .split(':')
                .next()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |it| it + 1)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

/// Files in the checkpoint directory that the manifest does not name: these must never be
/// taken for a checkpoint (only temporary names of killed writers or stale directories).
fn unnamed(dir: &Path, m: &checkpoint::Manifest) -> Vec<String> {
    let named: Vec<PathBuf> = m.files.iter().map(|f| dir.join(&f.path)).collect();
    let mut out = Vec::new();
    for e in walk(dir) {
        if e.file_name().unwrap() != MANIFEST && !named.contains(&e) {
            out.push(e.display().to_string());
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            v.extend(walk(&p))
        } else {
            v.push(p)
        }
    }
    v
}

/// Repeatedly `kill -9` a run at moments spread over its iterations (some during
/// checkpoint writes): every time the directory holds a manifest whose files all verify,
/// at most `every` iterations behind the progress; resuming from each in turn and finally
/// running to the end gives the uninterrupted result bit for bit.
#[test]
fn kill_9_leaves_complete_checkpoints_and_resume_is_bit_exact() {
    let (dir, cfg) = dataset();
    let (n, every) = (150usize, 2usize);
    let d = |s: &str| dir.path().join(s).display().to_string();
    let ck = d("ck");
    let run = |extra: &[&str], out: &str| {
        let mut v: Vec<String> = vec![
            "--ranks".into(),
            "4".into(),
            "--iterations".into(),
            n.to_string(),
            "--output".into(),
            d(out),
        ];
        v.extend([
            "--set".into(),
            format!("checkpoint.every={every}"),
            "--set".into(),
            format!("checkpoint.dir={ck:?}"),
        ]);
        v.extend(extra.iter().map(|s| s.to_string()));
        cmd(None, &cfg, &v)
    };
    run_ok(cmd(
        None,
        &cfg,
        &[
            "--ranks",
            "4",
            "--iterations",
            &n.to_string(),
            "--output",
            &d("full.h5"),
        ],
    ));
    let full = read_result(Path::new(&d("full.h5"))).unwrap();

    let mut last = 0u64;
    for (round, delay_ms) in [0u64, 2, 5, 11, 23, 41].into_iter().enumerate() {
        let extra: Vec<&str> = if round == 0 {
            vec![]
        } else {
            vec!["--resume", &ck]
        };
        let w = spawn(run(&extra, "part.h5"));
        // wait for a checkpoint newer than the one this round started from, then a bit more
        let t = Instant::now();
        loop {
            if let Ok(m) = checkpoint::read_manifest(Path::new(&ck)) {
                if m.iteration > last {
                    break;
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no new checkpoint in 60 s (round {round})"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        signal(&w.child, "-KILL");
        let (status, lines) = w.finish();
        let done = done(&lines);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "round {round}: the run ended before the kill ({status:?})"
        );
        let m = checkpoint::verify(Path::new(&ck)).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            m.iteration > last && (m.iteration as usize) < n,
            "round {round}: checkpoint at {}",
            m.iteration
        );
        assert!(
            done <= m.iteration as usize + every,
            "round {round}: {done} iterations logged, checkpoint at {}: lost more than {every}",
            m.iteration
        );
        eprintln!("round {round}: killed after {done} logged iterations; checkpoint at {}; unnamed files {:?}", m.iteration, unnamed(Path::new(&ck), &m));
        last = m.iteration;
    }
    assert!(
        !Path::new(&d("part.h5")).exists(),
        "a killed run wrote a result"
    );
    run_ok(run(&["--resume", &ck], "resumed.h5"));
    assert_same_bits(
        &read_result(Path::new(&d("resumed.h5"))).unwrap(),
        &full,
        "after 6 kills",
    );
}

/// SIGUSR1 writes a checkpoint and the run goes on; SIGTERM writes one at the next
/// iteration boundary and exits promptly with code 3 and no result file; resuming finishes
/// with the uninterrupted result bit for bit.
#[test]
fn sigusr1_continues_sigterm_checkpoints_and_stops() {
    let (dir, cfg) = dataset();
    let n = 200usize;
    let d = |s: &str| dir.path().join(s).display().to_string();
    let ck = d("ck");
    let ck_set = format!("checkpoint.dir={ck:?}");
    let iters = n.to_string();
    let mut w = spawn(cmd(
        None,
        &cfg,
        &[
            "--ranks",
            "4",
            "--iterations",
            &iters,
            "--output",
            &d("part.h5"),
            "--set",
            &ck_set,
        ],
    ));
    w.wait_line("iteration 2:");
    signal(&w.child, "-USR1");
    w.wait_line("checkpoint after iteration");
    let m1 = checkpoint::verify(Path::new(&ck)).unwrap();
    assert!(m1.iteration >= 3, "{}", m1.iteration);
    w.wait_line(&format!("iteration {}:", m1.iteration + 2));
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "SIGUSR1 stopped the run"
    );
    let t = Instant::now();
    signal(&w.child, "-TERM");
    let (status, lines) = w.finish();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(status.code(), Some(EXIT_CHECKPOINTED), "{lines:?}");
    assert!(secs < 10.0, "took {secs} s to stop");
    let stop_line = lines
        .iter()
        .find(|l| l.starts_with("stopped by SIGTERM after iteration "))
        .unwrap_or_else(|| panic!("{lines:?}"));
    let k: u64 = stop_line["stopped by SIGTERM after iteration ".len()..]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let m = checkpoint::verify(Path::new(&ck)).unwrap();
    assert_eq!(
        m.iteration, k,
        "the checkpoint is of the iteration the run stopped at"
    );
    assert!(k > m1.iteration && (k as usize) < n, "stopped at {k}");
    assert!(
        unnamed(Path::new(&ck), &m).is_empty(),
        "{:?}",
        unnamed(Path::new(&ck), &m)
    );
    assert!(
        !Path::new(&d("part.h5")).exists(),
        "a stopped run wrote a result"
    );
    eprintln!(
        "SIGUSR1 checkpoint at {}, SIGTERM stop at {k} in {secs:.2} s",
        m1.iteration
    );

    run_ok(cmd(
        None,
        &cfg,
        &[
            "--ranks",
            "4",
            "--iterations",
            &iters,
            "--output",
            &d("resumed.h5"),
            "--resume",
            &ck,
        ],
    ));
    run_ok(cmd(
        None,
        &cfg,
        &[
            "--ranks",
            "4",
            "--iterations",
            &iters,
            "--output",
            &d("full.h5"),
        ],
    ));
    assert_same_bits(
        &read_result(Path::new(&d("resumed.h5"))).unwrap(),
        &read_result(Path::new(&d("full.h5"))).unwrap(),
        "SIGTERM + resume",
    );
}

/// Missing directory, directory without manifest, corrupt manifest, corrupt rank file,
/// wrong rank count, changed setting or data: exit 2 with one line naming the fault.
#[test]
fn bad_resume_directories_are_refused() {
    let (dir, cfg) = dataset();
    let d = |s: &str| dir.path().join(s).display().to_string();
    let ck = d("ck");
    let ck_set = format!("checkpoint.dir={ck:?}");
    run_ok(cmd(
        None,
        &cfg,
        &[
            "--ranks",
            "2",
            "--iterations",
            "2",
            "--output",
            &d("a.h5"),
            "--set",
            "checkpoint.every=2",
            "--set",
            &ck_set,
        ],
    ));
    let refused_with = |ranks: &str, resume: &str, extra: &[&str], want: &str| {
        let out = d("b.h5");
        let mut args = vec![
            "--ranks",
            ranks,
            "--iterations",
            "4",
            "--output",
            &out,
            "--resume",
            resume,
        ];
        args.extend_from_slice(extra);
        let o = cmd(None, &cfg, &args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{resume} {extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "not one line: {err}");
        assert!(err.starts_with("error: ") && err.contains(want), "{err}");
        assert!(!Path::new(&d("b.h5")).exists());
    };
    let refused = |resume: &str, extra: &[&str], want: &str| refused_with("2", resume, extra, want);
    refused(&d("nope"), &[], "no such checkpoint directory");
    std::fs::create_dir(d("empty")).unwrap();
    refused(&d("empty"), &[], "manifest.toml: missing");
    refused_with("4", &ck, &[], "written by 2 ranks, this job has 4");
    refused(&ck, &["--set", "reconstruction.noise_model=\"amplitude\""], "reconstruction.noise_model was \"poisson\" when the checkpoint was written, now \"amplitude\"");
    refused(
        &ck,
        &["--set", "parallel.tiles=[2, 1]"],
        "written with 1x2 tiles, this job has 2x1",
    );

    // a flipped byte in a rank file
    let m = checkpoint::read_manifest(Path::new(&ck)).unwrap();
    let f = Path::new(&ck).join(&m.files[1].path);
    let good = std::fs::read(&f).unwrap();
    let mut bad = good.clone();
    let i = bad.len() / 3;
    bad[i] ^= 0x10;
    std::fs::write(&f, &bad).unwrap();
    refused(&ck, &[], "checksum mismatch");
    std::fs::write(&f, &good[..good.len() - 100]).unwrap();
    refused(
        &ck,
        &[],
        &format!(
            "{} bytes, the manifest says {}",
            good.len() - 100,
            good.len()
        ),
    );
    std::fs::write(&f, &good).unwrap();

    // a corrupt manifest
    let mpath = Path::new(&ck).join(MANIFEST);
    let text = std::fs::read_to_string(&mpath).unwrap();
    std::fs::write(&mpath, &text[..text.len() / 2]).unwrap();
    refused(&ck, &[], "manifest.toml: not a checkpoint manifest");
    std::fs::write(&mpath, "garbage \u{0} ]]").unwrap();
    refused(&ck, &[], "manifest.toml: not a checkpoint manifest");
    std::fs::write(&mpath, &text).unwrap();

    // other diffraction patterns (same shapes and positions)
    let p = SimParams {
        m: 32,
        scan: [12, 12],
        step_px: 2.5,
        jitter_px: 0.4,
        semiangle_mrad: 30.0,
        pixel_size_m: 0.25e-10,
        dose: Some(1e5),
        seed: 11,
        ..Default::default()
    };
    let mut sim = simulate(&p).unwrap();
    sim.intensities[5] += 1.0;
    write(&dir.path().join("sim.h5"), &sim, &p).unwrap();
    refused(&ck, &[], "diffraction patterns differ");
}

/// SIGTERM to `mpirun -n 4` (which forwards it to the ranks): every rank checkpoints at the
/// same boundary, the job exits with code 3, and the checkpoint resumes on 4 thread ranks
/// to the uninterrupted result bit for bit.
#[test]
fn sigterm_under_mpirun_then_resume_on_threads() {
    let Some(mpi) = mpirun() else {
        eprintln!("SKIPPED: no mpirun found");
        return;
    };
    let (dir, cfg) = dataset();
    let n = "60";
    let d = |s: &str| dir.path().join(s).display().to_string();
    let ck = d("ck");
    let ck_set = format!("checkpoint.dir={ck:?}");
    let tiles = "parallel.tiles=[2, 2]";
    let mut w = spawn(cmd(
        Some(mpi),
        &cfg,
        &[
            "--iterations",
            n,
            "--output",
            &d("part.h5"),
            "--set",
            tiles,
            "--set",
            &ck_set,
        ],
    ));
    w.wait_line("iteration 2:");
    signal(&w.child, "-TERM");
    let (status, lines) = w.finish();
    assert_eq!(status.code(), Some(EXIT_CHECKPOINTED), "{lines:?}");
    let stops: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("stopped by SIGTERM"))
        .collect();
    assert_eq!(stops.len(), 1, "one line from rank 0: {lines:?}");
    let m = checkpoint::verify(Path::new(&ck)).unwrap();
    assert_eq!(m.ranks, 4);
    assert!(
        stops[0].starts_with(&format!(
            "stopped by SIGTERM after iteration {}:",
            m.iteration
        )),
        "{} vs {}",
        stops[0],
        m.iteration
    );
    assert!(!Path::new(&d("part.h5")).exists());
    run_ok(cmd(
        None,
        &cfg,
        &[
            "--ranks",
            "4",
            "--iterations",
            n,
            "--output",
            &d("resumed.h5"),
            "--set",
            tiles,
            "--resume",
            &ck,
        ],
    ));
    run_ok(cmd(
        None,
        &cfg,
        &[
            "--ranks",
            "4",
            "--iterations",
            n,
            "--output",
            &d("full.h5"),
            "--set",
            tiles,
        ],
    ));
    assert_same_bits(
        &read_result(Path::new(&d("resumed.h5"))).unwrap(),
        &read_result(Path::new(&d("full.h5"))).unwrap(),
        "mpirun SIGTERM → threads",
    );
}
