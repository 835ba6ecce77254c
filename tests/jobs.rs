//! Batch job scripts: every `jobs/*.sh` and every script `ptytile jobs` prints is valid bash
//! (`bash -n`); the shipped scripts are the generator's current output; and a generated
//! script's body, run here with the scheduler's variables set for 2 nodes × 2 ranks and a
//! shim launcher (`srun` or `jsrun` → MPICH's `mpirun -n 4`), reconstructs a simulated
//! dataset on 4 MPI ranks. No scheduler is needed.

use ptytile::cli::jobs::{script, GpuVendor, JobSpec, Scheduler};
use ptytile::config::Config;
use ptytile::output::read_result;
use ptytile::simulate::{simulate, write, SimParams};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ptytile");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

fn bash_n(path: &Path) {
    let o = Command::new("bash").arg("-n").arg(path).output().unwrap();
    assert!(
        o.status.success(),
        "bash -n {}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn jobs(args: &[&str]) -> Output {
    Command::new(BIN)
        .env("HDF5_USE_FILE_LOCKING", "FALSE")
        .arg("jobs")
        .args(args)
        .output()
        .unwrap()
}

/// The shipped scripts: (file name, scheduler, vendor), for datasets/pbtio3_thin.toml on 2 nodes.
const TEMPLATES: [(&str, Scheduler, GpuVendor); 4] = [
    ("slurm-nvidia.sh", Scheduler::Slurm, GpuVendor::Nvidia),
    ("slurm-amd.sh", Scheduler::Slurm, GpuVendor::Amd),
    ("lsf-nvidia.sh", Scheduler::Lsf, GpuVendor::Nvidia),
    ("lsf-amd.sh", Scheduler::Lsf, GpuVendor::Amd),
];

fn template(scheduler: Scheduler, vendor: GpuVendor) -> String {
    let spec = JobSpec::new(scheduler, vendor, 2, "datasets/pbtio3_thin.toml");
    script(
        &spec,
        &Config::load(&root().join(&spec.config), &[]).unwrap(),
    )
    .unwrap()
}

/// jobs/*.sh are what the generator makes now. `PTYTILE_BLESS=1` rewrites them.
#[test]
fn shipped_scripts_are_current() {
    for (name, sched, vendor) in TEMPLATES {
        let path = root().join("jobs").join(name);
        let want = template(sched, vendor);
        if std::env::var_os("PTYTILE_BLESS").is_some() {
            std::fs::write(&path, &want).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            have,
            want,
            "{} is stale: rerun this test with PTYTILE_BLESS=1",
            path.display()
        );
    }
}

#[test]
fn every_script_passes_bash_n() {
    let mut n = 0;
    for e in std::fs::read_dir(root().join("jobs")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "sh") {
            bash_n(&e.path());
            n += 1;
        }
    }
    assert!(n >= TEMPLATES.len(), "only {n} scripts in jobs/");
    // generated ones, with every option and awkward quoting
    let dir = tempfile::tempdir().unwrap();
    let cfg = root().join("datasets/pbtio3_thin.toml");
    let cfg = cfg.to_str().unwrap();
    for sched in ["slurm", "lsf"] {
        for vendor in ["nvidia", "amd"] {
            let o = jobs(&[
                "--scheduler",
                sched,
                "--gpu-vendor",
                vendor,
                "--nodes",
                "3",
                "--ranks-per-node",
                "16",
                "--gpus-per-node",
                "8",
                "--cores-per-node",
                "64",
                "--time",
                "12:30",
                "--account",
                "proj_1",
                "--partition",
                "gpu",
                "--job-name",
                "pty-run",
                "--binary",
                "/opt/pty tile/bin/ptytile",
                "--set",
                "output.path=\"out/it's here.h5\"",
                "--set",
                "reconstruction.iterations=5",
                cfg,
            ]);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&o.stderr)
            );
            let s = String::from_utf8(o.stdout).unwrap();
            let p = dir.path().join(format!("{sched}-{vendor}.sh"));
            std::fs::write(&p, &s).unwrap();
            bash_n(&p);
            // the numbers the job runs with
            for want in [
                "NODES=3",
                "RANKS_PER_NODE=16",
                "GPUS_PER_NODE=8",
                "CPUS_PER_RANK=4",
                "--set reconstruction.iterations=5",
            ] {
                assert!(s.contains(want), "{want} not in\n{s}");
            }
            let (directive, time) = if sched == "slurm" {
                ("#SBATCH --account=proj_1", "#SBATCH --time=12:30:00")
            } else {
                ("#BSUB -P proj_1", "#BSUB -W 12:30")
            };
            assert!(s.contains(directive) && s.contains(time), "{s}");
        }
    }
}

/// `ptytile jobs` errors: exit 2, one line naming the option or key.
#[test]
fn bad_job_options_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[data]\nfile='d.h5'\nintensities='/i'\npositions='/p'\n[parallel]\ntiles=[2, 3]\n",
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let plain = dir.path().join("plain.toml");
    std::fs::write(
        &plain,
        "[data]\nfile='d.h5'\nintensities='/i'\npositions='/p'\n",
    )
    .unwrap();
    let p = plain.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["--scheduler", "slurm", "--nodes", "4", c],
            "parallel.tiles",
        ),
        (
            vec![
                "--scheduler",
                "slurm",
                "--nodes",
                "2",
                "--ranks-per-node",
                "4",
                c,
            ],
            "parallel.tiles",
        ),
        (
            vec!["--scheduler", "slurm", "--nodes", "2", c],
            "--ranks-per-node",
        ),
        (
            vec![
                "--scheduler",
                "slurm",
                "--nodes",
                "1",
                "--ranks-per-node",
                "6",
                "--gpus-per-node",
                "4",
                p,
            ],
            "--ranks-per-node",
        ),
        (
            vec!["--scheduler", "lsf", "--nodes", "1", "--time", "90", p],
            "--time",
        ),
        (vec!["--scheduler", "slurm", "--nodes", "0", p], "--nodes"),
        (
            vec!["--scheduler", "slurm", "--account", "a;rm", p],
            "--account",
        ),
        (vec!["--scheduler", "pbs", p], "pbs"),
        (
            vec!["--scheduler", "slurm", "/nonexistent/c.toml"],
            "/nonexistent/c.toml",
        ),
    ] {
        let o = jobs(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: '{needle}' not in {err}");
        assert!(o.stdout.is_empty(), "{args:?} printed a script");
    }
}

/// A fake launcher on PATH: drops its own options and starts the command on `$RANKS_EXPR`
/// MPI ranks with MPICH's mpirun, with the scheduler's variables removed (hydra would
/// otherwise try to bootstrap through the scheduler).
fn shim(dir: &Path, name: &str, ranks_expr: &str, mpirun: &str) -> PathBuf {
    let bin = dir.join("shim");
    std::fs::create_dir_all(&bin).unwrap();
    let p = bin.join(name);
    std::fs::write(
        &p,
        format!(
            r#"#!/bin/bash
# {name} emulated: options first (--opt=value or --opt value), then the command.
set -euo pipefail
declare -A opt
while [ $# -gt 0 ] && [ "${{1#-}}" != "$1" ]; do
  case "$1" in
    *=*) k=${{1%%=*}}; opt[${{k#--}}]=${{1#*=}}; shift ;;
    *) opt[${{1#--}}]=$2; shift 2 ;;
  esac
done
n=$(( {ranks_expr} ))
echo "{name} shim: $n ranks: $*" >&2
for v in $(compgen -e); do case "$v" in SLURM_*|LSB_*|LS_*) unset "$v" ;; esac; done
exec {mpirun} -n "$n" "$@"
"#
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Simulate a small dataset and write the job script for 2 nodes × 2 ranks (1 per GPU).
fn emulated_job(sched: &str) -> Option<(tempfile::TempDir, PathBuf, PathBuf, &'static str)> {
    let Some(mpi) = mpirun() else {
        eprintln!("SKIPPED: no mpirun found");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = SimParams {
        m: 16,
        scan: [6, 6],
        step_px: 2.0,
        semiangle_mrad: 40.0,
        pixel_size_m: 0.3e-10,
        dose: Some(1e4),
        ..Default::default()
    };
    let (_, cfg) = write(&dir.path().join("sim.h5"), &simulate(&p).unwrap(), &p).unwrap();
    let out = dir.path().join("out/recon.h5");
    let set_out = format!("output.path=\"{}\"", out.display());
    let o = jobs(&[
        "--scheduler",
        sched,
        "--nodes",
        "2",
        "--ranks-per-node",
        "2",
        "--gpus-per-node",
        "2",
        "--cores-per-node",
        "2",
        "--binary",
        BIN,
        "--set",
        "reconstruction.iterations=3",
        "--set",
        &set_out,
        "--set",
        "output.png=false",
        // no GPU here: the job's own backend setting comes after the script's GPU one and wins
        "--set",
        "parallel.backend=\"cpu\"",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let script = dir.path().join("job.sh");
    let text = String::from_utf8_lossy(&o.stdout);
    let args = text
        .lines()
        .find(|l| l.starts_with("ARGS=("))
        .expect("an ARGS line");
    let (gpu, cpu) = (
        args.find(r#"'parallel.backend="cuda"'"#),
        args.find(r#"'parallel.backend="cpu"'"#),
    );
    assert!(
        matches!((gpu, cpu), (Some(g), Some(c)) if g < c),
        "the GPU backend, then the job's own: {args}"
    );
    std::fs::write(&script, &o.stdout).unwrap();
    bash_n(&script);
    Some((dir, script, out, mpi))
}

fn check_result(o: &Output, out: &Path) {
    let (so, se) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(
        o.status.success(),
        "job failed ({:?})\n--- stdout\n{so}--- stderr\n{se}",
        o.status.code()
    );
    assert!(so.contains("4 ranks on 2 nodes"), "{so}");
    let r = read_result(out).unwrap();
    let attr = |k: &str| r.attrs.iter().find(|a| a.0 == k).map(|a| a.1);
    assert_eq!(attr("ranks"), Some(4.0), "ran as 4 MPI ranks");
    assert_eq!(
        attr("tiles_y").zip(attr("tiles_x")).map(|(y, x)| y * x),
        Some(4.0),
        "4 tiles"
    );
    assert_eq!(r.loss.len(), 3, "3 iterations");
    assert!(r.loss.iter().all(|l| l.is_finite()));
}

#[test]
fn slurm_script_runs_on_2_nodes_x_2_ranks() {
    let Some((dir, script, out, mpi)) = emulated_job("slurm") else {
        return;
    };
    let bin = shim(dir.path(), "srun", "${opt[ntasks]:-$SLURM_NTASKS}", mpi);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |ntasks: &str| {
        Command::new("bash")
            .arg(&script)
            .current_dir("/")
            .env("PATH", &path)
            .env("HDF5_USE_FILE_LOCKING", "FALSE")
            .env("RUST_LOG", "warn")
            .env("SLURM_JOB_ID", "4242")
            .env("SLURM_JOB_NUM_NODES", "2")
            .env("SLURM_NNODES", "2")
            .env("SLURM_JOB_NODELIST", "gpu[001-002]")
            .env("SLURM_NTASKS", ntasks)
            .env("SLURM_NTASKS_PER_NODE", "2")
            .env("SLURM_CPUS_PER_TASK", "1")
            .env("SLURM_SUBMIT_DIR", dir.path())
            .output()
            .unwrap()
    };
    // an allocation that does not match the script is refused before anything runs
    let o = run("6");
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("Slurm gave 6 tasks, the script needs 4"));
    assert!(!out.exists());
    let o = run("4");
    check_result(&o, &out);
    assert!(String::from_utf8_lossy(&o.stderr).contains("srun shim: 4 ranks"));
}

#[test]
fn lsf_script_runs_on_2_nodes_x_2_ranks() {
    let Some((dir, script, out, mpi)) = emulated_job("lsf") else {
        return;
    };
    let bin = shim(
        dir.path(),
        "jsrun",
        "${opt[nrs]} * ${opt[tasks_per_rs]}",
        mpi,
    );
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("bash")
        .arg(&script)
        .current_dir("/")
        .env("PATH", &path)
        .env("HDF5_USE_FILE_LOCKING", "FALSE")
        .env("RUST_LOG", "warn")
        .env("LSB_JOBID", "4242")
        .env("LS_SUBCWD", dir.path())
        .output()
        .unwrap();
    check_result(&o, &out);
    assert!(String::from_utf8_lossy(&o.stderr).contains("jsrun shim: 4 ranks"));
}
