//! Nothing lost, nothing hangs (issue 18, docs/format.md "What ptytile writes and deletes"):
//! each failure found by the hostile-user trial, as reported and as the class it stands for.
//!
//! - no write path (result, PNG images, checkpoint files) reaches an input (data file,
//!   config, `data.initial`), given directly, through missing directories and `..`, as
//!   `./`, absolute, through a symlink or as a hard link;
//! - checkpoint pruning deletes only what ptytile wrote;
//! - a failed image write leaves the previous result set untouched;
//! - FIFOs and devices are refused before they are opened (no hang);
//! - a 250-byte output name is written (temporary and image names stay within 255 bytes);
//! - SIGINT in the iteration loop checkpoints and stops like SIGTERM, leaving no temporary file;
//! - `inspect` follows each link once (link cycles);
//! - a non-finite `data.initial` is named before the run;
//! - memory is estimated before it is allocated and refused above the machine or
//!   `[parallel] memory_limit`;
//! - MPI ranks started with different arguments refuse at start-up, naming the rank;
//! - SIGTERM ends a start-up blocked in MPI_Init.

use num_complex::Complex32;
use ptytile::output::checkpoint;
use ptytile::output::{read_result, write_result, ReconResult};
use ptytile::physics::model::Field;
use ptytile::simulate::{simulate, write, SimParams};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ptytile");

/// The binary, run in `dir`, with HDF5 file locking off and default logging.
fn ptytile(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env("HDF5_USE_FILE_LOCKING", "FALSE")
        .env_remove("RUST_LOG");
    c
}

/// `dir/d.h5` (9 patterns of 16 × 16) and its config `dir/d.toml` (2 iterations, output
/// `out/r.h5`).
fn dataset(dir: &Path) -> (PathBuf, PathBuf) {
    let p = SimParams {
        m: 16,
        scan: [3, 3],
        step_px: 2.0,
        semiangle_mrad: 40.0,
        pixel_size_m: 0.3e-10,
        dose: Some(1e4),
        ..Default::default()
    };
    let (h5, cfg) = write(&dir.join("d.h5"), &simulate(&p).unwrap(), &p).unwrap();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("iterations = 20", "iterations = 2")
        .replace("d_recon/recon.h5", "out/r.h5");
    std::fs::write(&cfg, text).unwrap();
    (h5, cfg)
}

/// `ptytile ARGS` in `dir`, with the time limit of [`run_limited`].
fn run_in(dir: &Path, args: &[&str]) -> Output {
    let mut c = ptytile(dir);
    c.args(args);
    run_limited(c)
}

/// Exit code 0, else the stderr.
fn succeeded(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `dir/init.h5`: a previous result of `dir/d.toml`, for data.initial.
fn previous_result(dir: &Path) {
    succeeded(&run_in(
        dir,
        &[
            "reconstruct",
            "d.toml",
            "--output",
            "init.h5",
            "--set",
            "output.png=false",
        ],
    ));
}

/// Run with a 30 s limit (a hang fails the test instead of blocking it).
fn run_limited(mut c: Command) -> Output {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{c:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Exit code 2 and exactly one stderr line holding every needle; returns the line.
fn refused(out: &Output, needles: &[&str], case: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{case}: {err}");
    assert_eq!(err.lines().count(), 1, "{case}: {err}");
    for n in needles {
        assert!(err.contains(n), "{case}: '{n}' missing in {err}");
    }
    err
}

/// Names in `dir` that look like temporary or backup files of ptytile.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-") || n.contains(".old-"))
        .collect()
}

/// The reproduction (`--output results/../d.h5` with `results/` missing, `--output c.toml`)
/// and its class: every input (data file, config, data.initial) against the result path
/// given directly, through a missing directory and `..`, as `./`, absolute, through a
/// symlink and as a hard link; a PNG image name and the checkpoint manifest on an input.
/// Each is refused (exit 2, one line naming output.path or checkpoint.dir) before anything
/// is written: every input keeps its bytes and no directory is created.
#[test]
fn no_output_reaches_an_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, cfg) = dataset(dir);
    // a previous result, for data.initial
    previous_result(dir);
    let inputs = ["d.h5", "d.toml", "init.h5"];
    let snapshot = || {
        inputs
            .iter()
            .map(|f| std::fs::read(dir.join(f)).unwrap())
            .collect::<Vec<_>>()
    };
    let before = snapshot();
    let mut cases = 0;
    for input in inputs {
        std::os::unix::fs::symlink(dir.join(input), dir.join(format!("sym_{input}"))).unwrap();
        std::fs::hard_link(dir.join(input), dir.join(format!("hard_{input}"))).unwrap();
        let abs = dir.join(input).display().to_string();
        for target in [
            input.to_string(),
            format!("results/../{input}"),
            format!("results/a/b/../../../{input}"),
            format!("./{input}"),
            abs,
            format!("sym_{input}"),
            format!("hard_{input}"),
        ] {
            let o = run_in(
                dir,
                &[
                    "reconstruct",
                    "d.toml",
                    "--output",
                    &target,
                    "--set",
                    "data.initial=\"init.h5\"",
                ],
            );
            refused(
                &o,
                &["output.path", "never writes over its inputs"],
                &target,
            );
            assert!(
                !dir.join("results").exists(),
                "{target}: results/ was created"
            );
            cases += 1;
        }
    }
    // an image name on the config: config r_loss.png, output r.h5
    std::fs::copy(&cfg, dir.join("r_loss.png")).unwrap();
    let o = run_in(dir, &["reconstruct", "r_loss.png", "--output", "r.h5"]);
    refused(
        &o,
        &["output.path", "r_loss.png", "the config file"],
        "image name on the config",
    );
    // the checkpoint manifest on the config: config manifest.toml, checkpoint.dir "."
    std::fs::copy(&cfg, dir.join("manifest.toml")).unwrap();
    let o = run_in(
        dir,
        &[
            "reconstruct",
            "manifest.toml",
            "--set",
            "checkpoint.dir=\".\"",
        ],
    );
    refused(
        &o,
        &["checkpoint.dir", "manifest.toml"],
        "checkpoint manifest on the config",
    );
    assert_eq!(snapshot(), before, "an input changed");
    assert_eq!(cases, 21);
}

/// A checkpoint directory holding a user's `it-…` folders and files: pruning removes only
/// ptytile's rank files (by name and magic) and the iteration directories they leave empty;
/// a user's file where a rank file would go is refused, not overwritten.
#[test]
fn pruning_deletes_only_what_ptytile_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    dataset(dir);
    let ck = dir.join("ck");
    let user = [
        ("it-00000001/notes.txt", "my notes"),
        ("it-12345678/rank-00000.ckpt", "not a checkpoint"),
        ("it-data/x.txt", "x"),
        ("keep.txt", "k"),
    ];
    for (p, text) in user {
        std::fs::create_dir_all(ck.join(p).parent().unwrap()).unwrap();
        std::fs::write(ck.join(p), text).unwrap();
    }
    let o = run_in(
        dir,
        &[
            "reconstruct",
            "d.toml",
            "--iterations",
            "3",
            "--set",
            "checkpoint.every=1",
            "--set",
            "checkpoint.dir=\"ck\"",
            "--set",
            "output.png=false",
        ],
    );
    succeeded(&o);
    for (p, text) in user {
        assert_eq!(std::fs::read_to_string(ck.join(p)).unwrap(), text, "{p}");
    }
    let m = checkpoint::verify(&ck).unwrap();
    assert_eq!(m.iteration, 3);
    // ptytile's rank file of iteration 1 went, the user's notes stayed; iteration 2 is gone
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&ck.join("it-00000001")), ["notes.txt"]);
    assert_eq!(
        names(&ck),
        [
            "it-00000001",
            "it-00000003",
            "it-12345678",
            "it-data",
            "keep.txt",
            "manifest.toml"
        ]
    );

    // a user's file where the next rank file would go: refused, kept
    std::fs::create_dir_all(ck.join("it-00000001")).unwrap();
    std::fs::write(ck.join("it-00000001/rank-00000.ckpt"), "mine").unwrap();
    let o = run_in(
        dir,
        &[
            "reconstruct",
            "d.toml",
            "--iterations",
            "1",
            "--set",
            "checkpoint.every=1",
            "--set",
            "checkpoint.dir=\"ck\"",
        ],
    );
    refused(
        &o,
        &["rank-00000.ckpt", "not a ptytile checkpoint file"],
        "user file in a rank file's place",
    );
    assert_eq!(
        std::fs::read_to_string(ck.join("it-00000001/rank-00000.ckpt")).unwrap(),
        "mine"
    );
}

/// A small result whose loss history is `loss`.
fn result(loss: Vec<f64>) -> ReconResult {
    let object = Field {
        origin: [0, 0],
        shape: [6, 5],
        data: (0..30)
            .map(|i| Complex32::from_polar(1.0, 0.1 * i as f32))
            .collect(),
    };
    ReconResult {
        object,
        pixel_size_m: [2e-11, 2e-11],
        probe: (0..16).map(|i| Complex32::new(i as f32, 1.0)).collect(),
        modes: 1,
        m: 4,
        positions_px: vec![[2.0, 2.0], [3.0, 2.5]],
        loss,
        config_toml: "[data]\n".into(),
        attrs: vec![],
        excluded: vec![],
        index_lists: vec![],
    }
}

/// The reproduction: an image write that fails after the HDF5 file was renamed into place.
/// The previous result and images are left as they were (byte for byte), no new file and
/// no temporary or backup file remains; with the obstacle gone the new set is written whole.
#[test]
fn failed_image_write_keeps_the_previous_set() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("recon.h5");
    let written = write_result(&path, &result(vec![3.0, 2.0]), true).unwrap();
    assert_eq!(written.len(), 5);
    // the last file committed (the loss plot) cannot be replaced: a non-empty directory
    let loss_png = tmp.path().join("recon_loss.png");
    std::fs::remove_file(&loss_png).unwrap();
    std::fs::create_dir(&loss_png).unwrap();
    std::fs::write(loss_png.join("x"), "x").unwrap();
    let before: Vec<Option<Vec<u8>>> = written.iter().map(|p| std::fs::read(p).ok()).collect();
    let e = write_result(&path, &result(vec![9.0, 8.0, 7.0]), true).unwrap_err();
    assert!(e.what.ends_with("recon_loss.png"), "{e}");
    let after: Vec<Option<Vec<u8>>> = written.iter().map(|p| std::fs::read(p).ok()).collect();
    assert!(before == after, "the previous set changed");
    assert_eq!(read_result(&path).unwrap().loss, [3.0, 2.0]);
    assert_eq!(leftovers(tmp.path()), Vec::<String>::new());
    std::fs::remove_dir_all(&loss_png).unwrap();
    write_result(&path, &result(vec![9.0, 8.0, 7.0]), true).unwrap();
    assert_eq!(read_result(&path).unwrap().loss, [9.0, 8.0, 7.0]);
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 5);
}

/// The reproduction (a FIFO as data file or config blocks forever) and its class: FIFOs and
/// character devices as data file, config, data.initial, `inspect` and `compare` inputs are
/// refused at once with one line naming the file.
#[test]
fn fifos_and_devices_are_refused_before_opening() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    dataset(dir);
    assert!(Command::new("mkfifo")
        .arg(dir.join("p.fifo"))
        .status()
        .unwrap()
        .success());
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["reconstruct", "d.toml", "--set", "data.file=\"p.fifo\""],
            "p.fifo",
            "FIFO",
        ),
        (vec!["reconstruct", "p.fifo"], "p.fifo", "FIFO"),
        (
            vec!["reconstruct", "d.toml", "--set", "data.file=\"/dev/null\""],
            "/dev/null",
            "character device",
        ),
        (
            vec!["reconstruct", "/dev/zero"],
            "/dev/zero",
            "character device",
        ),
        (
            vec!["reconstruct", "d.toml", "--set", "data.initial=\"p.fifo\""],
            "p.fifo",
            "FIFO",
        ),
        (vec!["inspect", "p.fifo"], "p.fifo", "FIFO"),
        (vec!["compare", "p.fifo", "d.h5"], "p.fifo", "FIFO"),
        (
            vec!["compare", "d.h5", "/dev/zero"],
            "/dev/zero",
            "character device",
        ),
    ];
    for (args, name, kind) in cases {
        let t = Instant::now();
        let o = run_in(dir, &args);
        refused(&o, &[name, kind, "not a regular file"], &args.join(" "));
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{args:?} took {:?}",
            t.elapsed()
        );
    }
}

/// The reproduction: a 250-byte output name was refused because its temporary name passed
/// 255 bytes. The result is written under that name, the images under names of at most 255
/// bytes, and no temporary file is left.
#[test]
fn long_output_names_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    dataset(dir);
    let name = "r".repeat(247) + ".h5";
    assert_eq!(name.len(), 250);
    let o = run_in(dir, &["reconstruct", "d.toml", "--output", &name]);
    succeeded(&o);
    assert_eq!(read_result(&dir.join(&name)).unwrap().loss.len(), 2);
    let pngs: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    assert_eq!(pngs.len(), 4, "{pngs:?}");
    assert!(
        pngs.iter().all(|n| n.len() <= 255 && n.starts_with("rrrr")),
        "{pngs:?}"
    );
    assert_eq!(leftovers(dir), Vec::<String>::new());
}

/// Ctrl-C (SIGINT) in the iteration loop: a checkpoint at the next boundary, exit code 3,
/// no result and no temporary file; a second SIGINT ends the process at once (exit 130).
#[test]
fn sigint_checkpoints_and_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    dataset(dir);
    let mut child = ptytile(dir)
        .args([
            "reconstruct",
            "d.toml",
            "--iterations",
            "100000",
            "--set",
            "checkpoint.dir=\"ck\"",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(err).lines().map_while(|l| l.ok()) {
            let _ = tx.send(l);
        }
    });
    let t = Instant::now();
    while !rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap()
        .contains("iteration 3:")
    {
        assert!(t.elapsed() < Duration::from_secs(60));
    }
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(ptytile::cli::signals::EXIT_CHECKPOINTED)
    );
    let m = checkpoint::verify(&dir.join("ck")).unwrap();
    assert!(m.iteration >= 4, "{}", m.iteration);
    assert!(!dir.join("out/r.h5").exists());
    assert_eq!(leftovers(dir), Vec::<String>::new());
}

/// Temporary files registered by a writer are removed by the signal path
/// (`remove_registered_temps`), and unregistered once their writer is done.
#[test]
fn registered_temporary_files_are_removed() {
    use ptytile::output::safety::{remove_registered_temps, Temp};
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join(".a.tmp-1");
    let b = tmp.path().join(".b.tmp-1");
    std::fs::write(&a, "a").unwrap();
    std::fs::write(&b, "b").unwrap();
    let ta = Temp::new(a.clone());
    drop(Temp::new(b.clone()));
    remove_registered_temps();
    assert!(!a.exists() && b.exists());
    drop(ta);
}

/// The reproduction (`inspect` on a file whose links form a cycle recursed until memory ran
/// out) and its class: a hard link and a soft link back to an ancestor group. Each group is
/// listed once, the links back say where it was shown; exit 0 within the time limit.
#[test]
fn inspect_follows_each_link_once() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("cycle.h5");
    {
        let h = hdf5::File::create(&f).unwrap();
        h.create_group("a").unwrap().create_group("b").unwrap();
        h.new_dataset::<f64>().shape([3]).create("a/x").unwrap();
        h.link_hard("/a", "a/b/up").unwrap();
        h.link_soft("/a", "a/b/soft").unwrap();
        h.link_hard("/", "a/root").unwrap();
    }
    let o = run_limited({
        let mut c = ptytile(tmp.path());
        c.args(["inspect", "cycle.h5"]);
        c
    });
    let out = String::from_utf8_lossy(&o.stdout);
    succeeded(&o);
    assert_eq!(out.matches("not listed again").count(), 3, "{out}");
    assert_eq!(out.matches("/a/x  [3] float64").count(), 1, "{out}");
    assert!(out.contains("/a/b/up/  -> the group shown as /a "), "{out}");
    assert!(out.contains("/a/root/  -> the group shown as / "), "{out}");
    assert!(out.lines().count() < 20, "{out}");
}

/// The reproduction: a NaN in the `data.initial` object surfaced as "loss became NaN at
/// iteration 0". Now refused before the run, naming the file, dataset and pixel; the same
/// for the probe.
#[test]
fn non_finite_initial_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    dataset(dir);
    previous_result(dir);
    for (ds, at, needle) in [
        (
            "object",
            7,
            "init.h5:/object: value at (y, x) = (0, 7) is NaN",
        ),
        (
            "probe",
            200,
            "init.h5:/probe: value at (mode, y, x) = (0, 12, 8) is ",
        ),
    ] {
        let poisoned = dir.join(format!("{ds}.h5"));
        std::fs::copy(dir.join("init.h5"), &poisoned).unwrap();
        let h = hdf5::File::open_rw(&poisoned).unwrap();
        let d = h.dataset(ds).unwrap();
        let mut v: Vec<Complex32> = d.read_raw().unwrap();
        v[at] = if ds == "object" {
            Complex32::new(f32::NAN, 0.0)
        } else {
            Complex32::new(1.0, f32::INFINITY)
        };
        d.write_raw(&v).unwrap();
        drop(d);
        h.close().unwrap();
        let o = run_in(
            dir,
            &[
                "reconstruct",
                "d.toml",
                "--set",
                &format!("data.initial=\"{ds}.h5\""),
            ],
        );
        refused(&o, &[&needle.replace("init.h5", &format!("{ds}.h5"))], ds);
    }
}

/// The reproduction (positions spanning ~60 000 px passed the limits, then the process
/// aborted allocating the object) and its class: the memory a run needs is estimated before
/// anything large is allocated and refused with one line, against the machine or
/// `[parallel] memory_limit` (bytes or a size with a unit; a malformed one is named).
#[test]
fn memory_is_estimated_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (h5, _) = dataset(dir);
    let run = |args: &[&str]| {
        run_limited({
            let mut c = ptytile(dir);
            c.arg("reconstruct").arg("d.toml").args(args);
            c
        })
    };
    // small data, tiny limit: refused naming the key, with the estimate
    refused(
        &run(&["--set", "parallel.memory_limit=\"10 kB\""]),
        &[
            "parallel.memory_limit",
            "GB in one process",
            "0.00 GB of [parallel] memory_limit",
        ],
        "10 kB",
    );
    assert_eq!(
        run(&[
            "--set",
            "parallel.memory_limit=\"1 GiB\"",
            "--set",
            "output.png=false"
        ])
        .status
        .code(),
        Some(0)
    );
    assert_eq!(
        run(&[
            "--set",
            "parallel.memory_limit=1000000000",
            "--set",
            "output.png=false"
        ])
        .status
        .code(),
        Some(0)
    );
    refused(
        &run(&["--set", "parallel.memory_limit=\"lots\""]),
        &["parallel.memory_limit", "\"lots\" is not a size"],
        "lots",
    );
    refused(
        &run(&["--set", "parallel.memory_limit=-5"]),
        &["parallel.memory_limit", "-5 is not a size"],
        "-5",
    );
    // one position 60 000 px away: an object of 60 000² px, refused against the machine
    {
        let h = hdf5::File::open_rw(&h5).unwrap();
        let d = h.dataset("data/positions_px").unwrap();
        let mut p: Vec<f64> = d.read_raw().unwrap();
        let n = p.len();
        p[n - 2] = 60000.0;
        p[n - 1] = 60000.0;
        d.write_raw(&p).unwrap();
    }
    let t = Instant::now();
    let e = refused(
        &run(&[]),
        &[
            "d.h5",
            "GB in one process",
            "object 600",
            "memory this machine has",
        ],
        "60 000 px span",
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let need: f64 = e
        .split("needs about ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(need > 100.0, "{e}");
}

/// `mpirun.mpich` or `mpirun`, if one runs.
fn mpirun() -> Option<&'static str> {
    ["mpirun.mpich", "mpirun"].into_iter().find(|m| {
        Command::new(m)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// The reproduction (MPI ranks started with different arguments deadlocked) and its class:
/// ranks with another `--iterations`, another `--set` and another data file. `mpirun` with
/// one rank per program (MPMD, `:`) ends within the time limit, not 0, and the one `error:`
/// line names the differing rank and key (or the data file).
#[test]
fn mpi_ranks_refuse_different_jobs() {
    let Some(mpi) = mpirun() else {
        eprintln!("SKIPPED: no mpirun found");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (h5, _) = dataset(dir);
    std::fs::copy(&h5, dir.join("e.h5")).unwrap();
    let same = ["reconstruct", "d.toml", "--iterations", "2"];
    let cases: [(&[&str], &str); 3] = [
        (&["reconstruct", "d.toml", "--iterations", "3"], "rank 2 runs another job than rank 0: reconstruction.iterations is 3 there, 2 on rank 0"),
        (&["reconstruct", "d.toml", "--iterations", "2", "--set", "reconstruction.step=0.5"], "reconstruction.step is 0.5 there, 1.0 on rank 0"),
        (&["reconstruct", "d.toml", "--iterations", "2", "--set", "data.file=\"e.h5\""], "data.file is"),
    ];
    for (other, needle) in cases {
        let mut c = Command::new(mpi);
        c.current_dir(dir)
            .env("HDF5_USE_FILE_LOCKING", "FALSE")
            .env_remove("RUST_LOG");
        c.args(["-n", "2", BIN])
            .args(same)
            .args([":", "-n", "1", BIN])
            .args(other)
            .args([":", "-n", "1", BIN])
            .args(same);
        let t = Instant::now();
        let o = run_limited(c);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{other:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{other:?}: {err}");
        assert!(
            lines[0].contains(needle) && lines[0].contains("rank 2"),
            "{other:?}: {err}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{other:?}: {:?}",
            t.elapsed()
        );
    }
}

/// SIGTERM while start-up blocks (issue 18: the handler only set a flag read between
/// iterations): rank 0 of an `mpirun` job whose other rank never starts MPI waits in
/// MPI_Init; SIGTERM to it ends it within seconds with 143 and leaves no temporary file.
#[test]
fn sigterm_ends_a_blocked_start_up() {
    let Some(mpi) = mpirun() else {
        eprintln!("SKIPPED: no mpirun found");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    dataset(dir);
    let mut c = Command::new(mpi);
    c.current_dir(dir)
        .env("HDF5_USE_FILE_LOCKING", "FALSE")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut job = c
        .args([
            "-n",
            "1",
            BIN,
            "reconstruct",
            "d.toml",
            ":",
            "-n",
            "1",
            "sleep",
            "60",
        ])
        .spawn()
        .unwrap();
    // the ptytile process (a child of the launcher's proxy)
    let t = Instant::now();
    let pid = loop {
        let o = Command::new("pgrep")
            .args(["-f", &format!("{BIN} reconstruct d.toml")])
            .output()
            .unwrap();
        let pids: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if let Some(p) = pids.into_iter().find(|p| {
            std::fs::read_link(format!("/proc/{p}/cwd"))
                .is_ok_and(|d| d == dir.canonicalize().unwrap())
        }) {
            break p;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "ptytile did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(500)); // now waiting in MPI_Init
    let t = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    while std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "SIGTERM did not end the blocked start-up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = job.kill();
    let _ = job.wait();
    assert_eq!(leftovers(dir), Vec::<String>::new());
}
