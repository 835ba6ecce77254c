//! `ptytile jobs`: a batch job script that runs `ptytile reconstruct CONFIG` on GPU nodes,
//! for Slurm (`sbatch` + `srun`) or LSF (`bsub` + `jsrun`), printed to standard output.
//!
//! The job has `nodes × ranks_per_node` MPI ranks, `ranks_per_node / gpus_per_node` of them
//! per GPU (node-local rank r uses GPU ⌊r / ranks_per_gpu⌋), each bound to
//! `cores_per_node / ranks_per_node` cores that run its rayon threads. ptytile finds its rank,
//! the rank count and the node-local rank in the launcher's environment (`comm::launcher_env`).
//! The scripts in `jobs/` are this generator's output for `datasets/pbtio3_thin.toml`
//! (jobs/README.md).

use crate::config::{Config, ParallelMode};
use crate::error::{Error, Result};
use std::fmt::Write;

/// Batch scheduler the script is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheduler {
    /// `#SBATCH` header, ranks started with `srun`.
    Slurm,
    /// `#BSUB` header, ranks started with `jsrun` (IBM Job Step Manager).
    Lsf,
}

/// GPU maker: decides the toolkit named in the script and the default node shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GpuVendor {
    /// NVIDIA GPUs, CUDA (default node: 4 GPUs, 64 cores).
    Nvidia,
    /// AMD GPUs, HIP/ROCm (default node: 8 GPUs or GCDs, 56 usable cores).
    Amd,
}

impl GpuVendor {
    /// (GPUs per node, cores per node) of a typical node: 4 × A100/H100 with 64 cores;
    /// 8 MI250X GCDs with 56 cores left to jobs (one core per L3 region reserved).
    pub fn default_node(self) -> (usize, usize) {
        match self {
            GpuVendor::Nvidia => (4, 64),
            GpuVendor::Amd => (8, 56),
        }
    }
    /// The option value: `nvidia` or `amd`.
    pub fn name(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "nvidia",
            GpuVendor::Amd => "amd",
        }
    }
    /// The `[parallel] backend` value this vendor's GPUs will use.
    pub fn backend(self) -> &'static str {
        match self {
            GpuVendor::Nvidia => "cuda",
            GpuVendor::Amd => "hip",
        }
    }
}

/// What to generate. `None` fields take the vendor's or the config's defaults ([`script`]).
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Slurm or LSF.
    pub scheduler: Scheduler,
    /// NVIDIA (CUDA) or AMD (HIP).
    pub vendor: GpuVendor,
    /// Number of nodes (≥ 1).
    pub nodes: usize,
    /// GPUs per node; default from the vendor.
    pub gpus_per_node: Option<usize>,
    /// MPI ranks per node, a multiple of the GPUs per node; default: the config's
    /// `parallel.tiles` product divided by `nodes` when tiles are set, else one rank per GPU.
    pub ranks_per_node: Option<usize>,
    /// CPU cores per node shared out among the ranks; default from the vendor.
    pub cores_per_node: Option<usize>,
    /// Wall-clock limit, `H:MM` or `H:MM:SS` (hours may exceed 24).
    pub time: String,
    /// Account (Slurm `--account`, LSF `-P`), if the site needs one.
    pub account: Option<String>,
    /// Partition (Slurm) or queue (LSF), if not the site's default.
    pub queue: Option<String>,
    /// Job name.
    pub job_name: String,
    /// The ptytile binary the ranks run (the script lets `$PTYTILE` override it).
    pub binary: String,
    /// The config file, as the script will name it.
    pub config: String,
    /// `--set section.key=value` overrides passed on to `ptytile reconstruct`.
    pub sets: Vec<String>,
}

impl JobSpec {
    /// A job on `nodes` nodes running `config` with every other setting at its default: node
    /// shape from the vendor (or the config's tiles), 1 hour, no account or queue, job name
    /// and binary `ptytile`, no overrides.
    pub fn new(scheduler: Scheduler, vendor: GpuVendor, nodes: usize, config: &str) -> JobSpec {
        JobSpec {
            scheduler,
            vendor,
            nodes,
            gpus_per_node: None,
            ranks_per_node: None,
            cores_per_node: None,
            time: "1:00:00".into(),
            account: None,
            queue: None,
            job_name: "ptytile".into(),
            binary: "ptytile".into(),
            config: config.into(),
            sets: Vec::new(),
        }
    }
}

/// The job's shape after defaults and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Nodes.
    pub nodes: usize,
    /// GPUs per node.
    pub gpus_per_node: usize,
    /// MPI ranks per node.
    pub ranks_per_node: usize,
    /// Ranks sharing one GPU.
    pub ranks_per_gpu: usize,
    /// Cores bound to each rank (its rayon threads).
    pub cpus_per_rank: usize,
    /// Total ranks = nodes × ranks_per_node.
    pub ranks: usize,
}

/// Apply defaults and check the job's shape against itself and against `cfg`.
///
/// Errors, naming the option or key: zero nodes/GPUs/ranks/cores, ranks per node not a
/// multiple of GPUs per node, fewer cores than ranks, `parallel.tiles` whose product is not
/// the job's rank count.
pub fn shape(spec: &JobSpec, cfg: &Config) -> Result<Shape> {
    let (dg, dc) = spec.vendor.default_node();
    let nodes = spec.nodes;
    let gpus_per_node = spec.gpus_per_node.unwrap_or(dg);
    let cores_per_node = spec.cores_per_node.unwrap_or(dc);
    for (opt, v) in [
        ("--nodes", nodes),
        ("--gpus-per-node", gpus_per_node),
        ("--cores-per-node", cores_per_node),
    ] {
        if v == 0 {
            return Err(Error::new(opt, "must be at least 1"));
        }
    }
    let tiles = match cfg.parallel.mode {
        ParallelMode::Tiled => cfg.parallel.tiles,
        ParallelMode::Replicated => None,
    };
    let ranks_per_node = match (spec.ranks_per_node, tiles) {
        (Some(r), _) => r,
        (None, Some(t)) if (t[0] * t[1]) % nodes == 0 => t[0] * t[1] / nodes,
        (None, Some(t)) => {
            return Err(Error::new(
                "parallel.tiles",
                format!("{}x{} tiles cannot be spread evenly over {nodes} nodes; set --ranks-per-node or the tiles", t[0], t[1]),
            ))
        }
        (None, None) => gpus_per_node,
    };
    if ranks_per_node == 0 || ranks_per_node % gpus_per_node != 0 {
        return Err(Error::new(
            "--ranks-per-node",
            format!("{ranks_per_node} ranks per node cannot share {gpus_per_node} GPUs evenly (use a multiple of --gpus-per-node)"),
        ));
    }
    if cores_per_node < ranks_per_node {
        return Err(Error::new("--cores-per-node", format!("{cores_per_node} cores for {ranks_per_node} ranks per node: need at least one core per rank")));
    }
    let ranks = nodes * ranks_per_node;
    if let Some(t) = tiles {
        if t[0] * t[1] != ranks {
            return Err(Error::new(
                "parallel.tiles",
                format!("{}x{} tiles for {ranks} ranks ({nodes} nodes x {ranks_per_node}): the product must equal the rank count", t[0], t[1]),
            ));
        }
    }
    Ok(Shape {
        nodes,
        gpus_per_node,
        ranks_per_node,
        ranks_per_gpu: ranks_per_node / gpus_per_node,
        cpus_per_rank: cores_per_node / ranks_per_node,
        ranks,
    })
}

/// Wall-clock limit in minutes from `H:MM` or `H:MM:SS` (seconds round up).
pub fn minutes(time: &str) -> Result<u64> {
    let bad = || Error::new("--time", format!("'{time}' is not H:MM or H:MM:SS"));
    let parts: Vec<u64> = time
        .split(':')
        .map(|p| p.trim().parse::<u64>().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    let m = match parts.as_slice() {
        [h, m] if *m < 60 => h * 60 + m,
        [h, m, s] if *m < 60 && *s < 60 => h * 60 + m + s.div_ceil(60),
        _ => return Err(bad()),
    };
    if m == 0 || m > 1_000_000 {
        return Err(Error::new(
            "--time",
            format!("'{time}' must be between 1 minute and 1e6 minutes"),
        ));
    }
    Ok(m)
}

/// Quote `s` for a POSIX shell: unchanged when it holds only safe characters, else in
/// single quotes.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=,+-@%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A value that goes into a scheduler directive line: letters, digits and `_.-+:` only.
fn directive_value(opt: &str, v: &str) -> Result<String> {
    if v.is_empty()
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-+:".contains(c))
    {
        return Err(Error::new(
            opt,
            format!("'{v}' may hold only letters, digits and _.-+:"),
        ));
    }
    Ok(v.to_string())
}

/// The batch script for `spec`, with `cfg` the loaded config (`spec.config` with
/// `spec.sets` applied), as the text of a bash script.
///
/// Errors: those of [`shape`] and [`minutes`]; an account, queue or job name with
/// characters a directive line cannot hold; a newline in the binary, config path or an
/// override.
pub fn script(spec: &JobSpec, cfg: &Config) -> Result<String> {
    let sh = shape(spec, cfg)?;
    let mins = minutes(&spec.time)?;
    let name = directive_value("--job-name", &spec.job_name)?;
    let account = spec
        .account
        .as_deref()
        .map(|a| directive_value("--account", a))
        .transpose()?;
    let queue = spec
        .queue
        .as_deref()
        .map(|q| directive_value("--partition", q))
        .transpose()?;
    for (what, v) in [("--binary", &spec.binary), ("config path", &spec.config)]
        .into_iter()
        .chain(spec.sets.iter().map(|s| ("--set", s)))
    {
        if v.contains(['\n', '\r']) {
            return Err(Error::new(what, "must not contain a line break"));
        }
    }
    let (vendor, toolkit, vis) = match spec.vendor {
        GpuVendor::Nvidia => ("NVIDIA", "CUDA", "CUDA_VISIBLE_DEVICES"),
        GpuVendor::Amd => ("AMD", "HIP/ROCm", "ROCR_VISIBLE_DEVICES"),
    };
    let (sched, submit) = match spec.scheduler {
        Scheduler::Slurm => ("slurm", "sbatch"),
        Scheduler::Lsf => ("lsf", "bsub <"),
    };
    let mut made_by = format!(
        "ptytile jobs --scheduler {sched} --gpu-vendor {} --nodes {} --ranks-per-node {} --gpus-per-node {} --cores-per-node {} --time {}",
        spec.vendor.name(),
        sh.nodes, sh.ranks_per_node, sh.gpus_per_node, sh.cpus_per_rank * sh.ranks_per_node, spec.time
    );
    for s in &spec.sets {
        let _ = write!(made_by, " --set {}", shell_quote(s));
    }
    let _ = write!(made_by, " {}", shell_quote(&spec.config));

    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "#!/bin/bash");
    let _ = writeln!(
        w,
        "# ptytile reconstruction: {} node(s) x {} = {} MPI ranks; per node {} {vendor} GPUs ({toolkit}),\n# {} rank(s) per GPU, {} cores per rank.",
        sh.nodes, sh.ranks_per_node, sh.ranks, sh.gpus_per_node, sh.ranks_per_gpu, sh.cpus_per_rank
    );
    let _ = writeln!(w, "# Made by: {made_by}");
    let _ = writeln!(
        w,
        "# Submit: {submit} THIS_FILE    Check: bash -n THIS_FILE"
    );
    // A directive, or a commented-out placeholder when the option was not given.
    let optional =
        |w: &mut String, set: &Option<String>, directive: &str, placeholder: &str, why: &str| {
            let _ = match set {
                Some(v) => writeln!(w, "{directive}{v}"),
                None => writeln!(w, "#{directive}{placeholder}   # {why}"),
            };
        };
    let (site_account, site_queue) = (
        "if your site needs one (ptytile jobs --account)",
        "if not the default (ptytile jobs --partition)",
    );
    match spec.scheduler {
        Scheduler::Slurm => {
            let _ = writeln!(w, "#SBATCH --job-name={name}");
            let _ = writeln!(w, "#SBATCH --nodes={}", sh.nodes);
            let _ = writeln!(w, "#SBATCH --ntasks-per-node={}", sh.ranks_per_node);
            let _ = writeln!(w, "#SBATCH --cpus-per-task={}", sh.cpus_per_rank);
            let _ = writeln!(w, "#SBATCH --gpus-per-node={}", sh.gpus_per_node);
            let _ = writeln!(w, "#SBATCH --time={}:{:02}:00", mins / 60, mins % 60);
            optional(w, &account, "#SBATCH --account=", "ACCOUNT", site_account);
            optional(w, &queue, "#SBATCH --partition=", "PARTITION", site_queue);
            let _ = writeln!(w, "#SBATCH --output={name}-%j.out");
        }
        Scheduler::Lsf => {
            let _ = writeln!(w, "#BSUB -J {name}");
            let _ = writeln!(w, "#BSUB -nnodes {}", sh.nodes);
            let _ = writeln!(w, "#BSUB -W {}:{:02}", mins / 60, mins % 60);
            optional(w, &account, "#BSUB -P ", "PROJECT", site_account);
            optional(w, &queue, "#BSUB -q ", "QUEUE", site_queue);
            let _ = writeln!(w, "#BSUB -o {name}.%J.out");
            let _ = writeln!(w, "#BSUB -e {name}.%J.err");
        }
    }
    let _ = writeln!(w, "set -euo pipefail");
    let _ = writeln!(w);
    let _ = writeln!(w, "# ---- the run (edit here) ----");
    let _ = writeln!(w, "PTYTILE=${{PTYTILE:-{}}}", shell_quote(&spec.binary));
    let _ = writeln!(w, "CONFIG={}", shell_quote(&spec.config));
    let _ = writeln!(w, "NODES={}", sh.nodes);
    let _ = writeln!(w, "RANKS_PER_NODE={}", sh.ranks_per_node);
    let _ = writeln!(w, "GPUS_PER_NODE={}", sh.gpus_per_node);
    let _ = writeln!(w, "CPUS_PER_RANK={}", sh.cpus_per_rank);
    let _ = writeln!(w, "RANKS=$((NODES * RANKS_PER_NODE))");
    let _ = writeln!(w, "RANKS_PER_GPU=$((RANKS_PER_NODE / GPUS_PER_NODE))");
    // the vendor's GPU backend first: a `--set parallel.backend=…` of the job's own comes later and wins
    let mut args = format!(
        "\"$PTYTILE\" reconstruct \"$CONFIG\" --set {}",
        shell_quote(&format!("parallel.backend=\"{}\"", spec.vendor.backend()))
    );
    for s in &spec.sets {
        let _ = write!(args, " --set {}", shell_quote(s));
    }
    let _ = writeln!(w, "ARGS=({args})");
    let _ = writeln!(w);
    let _ = writeln!(w, "# ---- environment ----");
    let _ = writeln!(
        w,
        "# Site modules (edit), e.g.: module load {} hdf5 mpich",
        match spec.vendor {
            GpuVendor::Nvidia => "cuda",
            GpuVendor::Amd => "rocm",
        }
    );
    let _ = writeln!(
        w,
        "# GPU backend: {} (parallel.backend in ARGS): each rank sums its tile's positions on the GPU\n# of its node-local rank modulo the GPUs it sees (docs/gpu.md). Every engine runs there;\n# multislice and position correction are CPU-only: for them, generate with --set parallel.backend='\"cpu\"'.",
        spec.vendor.backend()
    );
    let _ = writeln!(w, "export RAYON_NUM_THREADS=\"$CPUS_PER_RANK\"   # ptytile's worker threads per rank = its bound cores");
    let _ = writeln!(
        w,
        "export OMP_NUM_THREADS=1                     # no nested threading in libraries"
    );
    let _ = writeln!(w, "export HDF5_USE_FILE_LOCKING=FALSE           # all ranks read one file; locks fail on many parallel file systems");
    let _ = writeln!(w, "export RUST_LOG=\"${{RUST_LOG:-info}}\"          # per-iteration log lines in the job's output");
    let _ = writeln!(w);
    match spec.scheduler {
        Scheduler::Slurm => {
            let _ = writeln!(w, "# The allocation must match the script (ptytile would otherwise run on a different tiling).");
            let _ = writeln!(w, "if [ -n \"${{SLURM_JOB_NUM_NODES:-}}\" ] && [ \"$SLURM_JOB_NUM_NODES\" -ne \"$NODES\" ]; then");
            let _ = writeln!(w, "  echo \"ptytile job: Slurm gave $SLURM_JOB_NUM_NODES nodes, the script needs $NODES\" >&2; exit 2");
            let _ = writeln!(w, "fi");
            let _ = writeln!(
                w,
                "if [ -n \"${{SLURM_NTASKS:-}}\" ] && [ \"$SLURM_NTASKS\" -ne \"$RANKS\" ]; then"
            );
            let _ = writeln!(w, "  echo \"ptytile job: Slurm gave $SLURM_NTASKS tasks, the script needs $RANKS\" >&2; exit 2");
            let _ = writeln!(w, "fi");
            let _ = writeln!(w, "cd \"${{SLURM_SUBMIT_DIR:-.}}\"");
            let _ = writeln!(w, "echo \"ptytile job ${{SLURM_JOB_ID:-}}: $RANKS ranks on $NODES nodes, $RANKS_PER_GPU per GPU, $CPUS_PER_RANK cores each, config $CONFIG\"");
            let _ = writeln!(w);
            let _ = writeln!(
                w,
                "# Node-local rank r gets GPU r / RANKS_PER_GPU (Slurm sets {vis} to it) and"
            );
            let _ = writeln!(
                w,
                "# CPUS_PER_RANK cores of its own; ptytile reads its rank from srun's environment."
            );
            let _ = writeln!(w, "GPU_MAP=$(for ((r = 0; r < RANKS_PER_NODE; r++)); do printf '%d,' $((r / RANKS_PER_GPU)); done)");
            let _ = writeln!(w, "srun --nodes=\"$NODES\" --ntasks=\"$RANKS\" --ntasks-per-node=\"$RANKS_PER_NODE\" \\");
            let _ = writeln!(
                w,
                "     --cpus-per-task=\"$CPUS_PER_RANK\" --cpu-bind=cores \\"
            );
            let _ = writeln!(
                w,
                "     --gpus-per-node=\"$GPUS_PER_NODE\" --gpu-bind=\"map_gpu:${{GPU_MAP%,}}\" \\"
            );
            let _ = writeln!(w, "     \"${{ARGS[@]}}\"");
        }
        Scheduler::Lsf => {
            let _ = writeln!(w, "cd \"${{LS_SUBCWD:-.}}\"");
            let _ = writeln!(w, "echo \"ptytile job ${{LSB_JOBID:-}}: $RANKS ranks on $NODES nodes, $RANKS_PER_GPU per GPU, $CPUS_PER_RANK cores each, config $CONFIG\"");
            let _ = writeln!(w);
            let _ = writeln!(w, "# One resource set per GPU: RANKS_PER_GPU ranks, 1 GPU (jsrun sets CUDA_VISIBLE_DEVICES,");
            let _ = writeln!(w, "# which HIP honours too) and CPUS_PER_RANK cores bound to each rank. ptytile reads its");
            let _ = writeln!(
                w,
                "# rank from jsrun's environment (JSM_NAMESPACE_RANK/SIZE/LOCAL_RANK)."
            );
            let _ = writeln!(
                w,
                "jsrun --nrs $((NODES * GPUS_PER_NODE)) --rs_per_host \"$GPUS_PER_NODE\" \\"
            );
            let _ = writeln!(w, "      --tasks_per_rs \"$RANKS_PER_GPU\" --gpu_per_rs 1 --cpu_per_rs $((RANKS_PER_GPU * CPUS_PER_RANK)) \\");
            let _ = writeln!(
                w,
                "      --bind \"packed:$CPUS_PER_RANK\" --launch_distribution packed \\"
            );
            let _ = writeln!(w, "      \"${{ARGS[@]}}\"");
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        Config::from_toml(
            &format!("[data]\nfile='a.h5'\nintensities='/i'\npositions='/p'\n{extra}"),
            &[],
        )
        .unwrap()
    }

    fn spec() -> JobSpec {
        JobSpec::new(Scheduler::Slurm, GpuVendor::Nvidia, 2, "c.toml")
    }

    #[test]
    fn shape_defaults_and_tiles() {
        let s = shape(&spec(), &cfg("")).unwrap();
        assert_eq!(
            (s.ranks, s.ranks_per_node, s.ranks_per_gpu, s.cpus_per_rank),
            (8, 4, 1, 16)
        );
        let amd = shape(
            &JobSpec {
                vendor: GpuVendor::Amd,
                ..spec()
            },
            &cfg(""),
        )
        .unwrap();
        assert_eq!(
            (amd.ranks, amd.gpus_per_node, amd.cpus_per_rank),
            (16, 8, 7)
        );
        // ranks per node from the config's tiles: 4x4 over 2 nodes = 8 per node, 2 per GPU
        let t = shape(&spec(), &cfg("[parallel]\ntiles=[4, 4]")).unwrap();
        assert_eq!(
            (t.ranks, t.ranks_per_node, t.ranks_per_gpu, t.cpus_per_rank),
            (16, 8, 2, 8)
        );
        let e = shape(
            &JobSpec {
                ranks_per_node: Some(4),
                ..spec()
            },
            &cfg("[parallel]\ntiles=[4, 4]"),
        )
        .unwrap_err();
        assert_eq!(e.what, "parallel.tiles");
        let e = shape(
            &JobSpec {
                ranks_per_node: Some(6),
                ..spec()
            },
            &cfg(""),
        )
        .unwrap_err();
        assert_eq!(e.what, "--ranks-per-node");
        let e = shape(
            &JobSpec { nodes: 3, ..spec() },
            &cfg("[parallel]\ntiles=[2, 2]"),
        )
        .unwrap_err();
        assert_eq!(e.what, "parallel.tiles");
        let e = shape(
            &JobSpec {
                cores_per_node: Some(2),
                ..spec()
            },
            &cfg(""),
        )
        .unwrap_err();
        assert_eq!(e.what, "--cores-per-node");
        // replicated mode ignores tiles
        assert_eq!(
            shape(&spec(), &cfg("[parallel]\ntiles=[4, 4]\nmode='replicated'"))
                .unwrap()
                .ranks,
            8
        );
    }

    #[test]
    fn times_and_quoting() {
        assert_eq!(minutes("1:00:00").unwrap(), 60);
        assert_eq!(minutes("0:30").unwrap(), 30);
        assert_eq!(minutes("48:00:01").unwrap(), 48 * 60 + 1);
        for bad in ["", "1", "1:60", "0:00", "a:b", "1:2:3:4"] {
            assert_eq!(minutes(bad).unwrap_err().what, "--time", "{bad}");
        }
        assert_eq!(shell_quote("a/b.toml"), "a/b.toml");
        assert_eq!(shell_quote("it's a b"), r"'it'\''s a b'");
        assert_eq!(
            shell_quote("parallel.tiles=[2, 2]"),
            "'parallel.tiles=[2, 2]'"
        );
    }

    #[test]
    fn script_fields() {
        let s = script(
            &JobSpec {
                account: Some("abc123".into()),
                sets: vec!["output.path=\"x y.h5\"".into()],
                ..spec()
            },
            &cfg(""),
        )
        .unwrap();
        for want in [
            "#SBATCH --nodes=2",
            "#SBATCH --ntasks-per-node=4",
            "#SBATCH --cpus-per-task=16",
            "#SBATCH --account=abc123",
            "#SBATCH --time=1:00:00",
            "--set 'output.path=\"x y.h5\"'",
        ] {
            assert!(s.contains(want), "{want} not in\n{s}");
        }
        let l = script(
            &JobSpec {
                scheduler: Scheduler::Lsf,
                time: "0:30".into(),
                ..spec()
            },
            &cfg(""),
        )
        .unwrap();
        for want in [
            "#BSUB -nnodes 2",
            "#BSUB -W 0:30",
            "jsrun --nrs $((NODES * GPUS_PER_NODE))",
        ] {
            assert!(l.contains(want), "{want} not in\n{l}");
        }
        assert_eq!(
            script(
                &JobSpec {
                    account: Some("a b".into()),
                    ..spec()
                },
                &cfg("")
            )
            .unwrap_err()
            .what,
            "--account"
        );
        assert_eq!(
            script(
                &JobSpec {
                    sets: vec!["a.b=1\nrm -rf /".into()],
                    ..spec()
                },
                &cfg("")
            )
            .unwrap_err()
            .what,
            "--set"
        );
    }
}
