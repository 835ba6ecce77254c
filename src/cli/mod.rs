//! Command line (clap). Only wires the library together; every failure becomes a one-line
//! message on stderr and exit code 2.

/// Print to stdout; a closed pipe (e.g. `| head`) ends output quietly instead of panicking
/// like `println!` would.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}
/// `out!` with a newline.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
pub(crate) use {out, outln};

pub mod bench;
pub mod bench_gpu;
pub mod calibrate;
pub mod jobs;
pub mod scaling;
pub mod signals;

use crate::config::Config;
use crate::driver;
use crate::error::{Error, Result, EXIT_USAGE};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// ptytile: tiled ptychographic reconstruction.
#[derive(Parser, Debug)]
#[command(name = "ptytile", version, about)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Reconstruct object and probe from a dataset described by a TOML config.
    Reconstruct {
        /// Config file (see datasets/*.toml).
        config: PathBuf,
        /// Override reconstruction.iterations.
        #[arg(long)]
        iterations: Option<usize>,
        /// Override output.path.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Override parallel.ranks (in-process ranks when not started by an MPI launcher).
        #[arg(long)]
        ranks: Option<usize>,
        /// Override any config key: --set section.key=value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Continue from the checkpoint in this directory (same config, data, rank count
        /// and tiles; the launcher and node count may differ).
        #[arg(long, value_name = "DIR")]
        resume: Option<PathBuf>,
        /// Override parallel.backend: where the gradient kernel runs (docs/gpu.md).
        #[arg(long, value_enum)]
        backend: Option<crate::config::BackendKind>,
        /// Reconstruct live from the detector stream at this ZeroMQ endpoint (e.g.
        /// tcp://127.0.0.1:5555; docs/format.md "Live stream messages"): previews every
        /// live.preview_s, the result after the end message; exit code 3 when the stream is
        /// lost (live.timeout_s) and the result holds only what arrived.
        #[arg(long, value_name = "ENDPOINT", conflicts_with = "resume")]
        live: Option<String>,
    },
    /// Replay a dataset as a detector would stream it (ZeroMQ PUSH socket bound to the
    /// endpoint; docs/format.md "Live stream messages"), for `reconstruct --live`.
    Stream {
        /// Config file of the dataset ([data], [experiment]).
        config: PathBuf,
        /// Endpoint to bind (tcp://, ipc:// or inproc://).
        #[arg(long, default_value = "tcp://127.0.0.1:5555")]
        endpoint: String,
        /// Frames per second, in scan order.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Leave out this many frames, spread evenly (tests a receiver's gap handling).
        #[arg(long, default_value_t = 0)]
        drop: usize,
        /// Add this many malformed messages, spread evenly (tests a receiver's robustness).
        #[arg(long, default_value_t = 0)]
        corrupt: usize,
        /// Stop after this many frames without the end message (a killed streamer).
        #[arg(long, value_name = "FRAMES")]
        stop_after: Option<usize>,
        /// Override any config key: --set section.key=value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Measure from a 4D-STEM scan the scan–detector rotation and transpose (centre-of-mass
    /// curl fit), the convergence semi-angle (bright-field disk) and the defocus (bright-field
    /// parallax); print them as TOML lines with uncertainties and draw the centre-of-mass
    /// field beside output.path (docs/algorithm.md §16). Exit code 2 when a fit fails.
    Calibrate {
        /// Config file (its [data] and [experiment]; the measured keys' values are ignored).
        config: PathBuf,
        /// Override any config key: --set section.key=value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Simulate a dataset with a known object (Poisson counts at a chosen dose); writes the
    /// HDF5 file and a ready-to-use config `<stem>.toml` beside it.
    Simulate(SimArgs),
    /// Show what an HDF5 file holds and how ptytile would read it.
    Inspect {
        /// The file.
        file: PathBuf,
    },
    /// Time iterations on a dataset and show where the time goes (docs/performance.md);
    /// `bench scaling` runs the strong-scaling study (docs/scaling.md).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Bench {
        /// The strong-scaling study instead of the single-rank breakdown.
        #[command(subcommand)]
        study: Option<BenchCmd>,
        /// Config file of the dataset to time.
        #[arg(required = true)]
        config: Option<PathBuf>,
        /// Timed repeats of each measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Override any config key: --set section.key=value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Also time a second configuration, the first with these overrides as well
        /// (repeatable), one iteration of each in turn in the same process, and report the
        /// ratio of their times pair by pair: how to compare two settings on a shared,
        /// noisy machine (e.g. --against reconstruction.slices=1).
        #[arg(long = "against", value_name = "KEY=VALUE")]
        against: Vec<String>,
    },
    /// Print a batch job script (Slurm or LSF) that runs `ptytile reconstruct CONFIG` on GPU
    /// nodes, one or more MPI ranks per GPU (jobs/README.md).
    Jobs(JobsArgs),
    /// Phase correlation and RMS phase error of a result against a ground truth, after
    /// sub-pixel registration and removal of the phase offset and ramp (docs/compare.md).
    Compare {
        /// A ptytile result file.
        recon: PathBuf,
        /// A file holding the true object (e.g. the dataset itself).
        truth: PathBuf,
        /// HDF5 path of the truth (default: /ground_truth/transmission_recon, /ground_truth/object, /object;
        /// for a multislice result /ground_truth/projected_potential_recon first). A float dataset is a
        /// projected potential (V·Å): phases are then compared without wrapping (docs/compare.md).
        #[arg(long)]
        truth_dataset: Option<String>,
    },
    /// Fourier ring correlation of the objects of two results (e.g. reconstructions from the
    /// `data.subset = "even"` and `"odd"` halves of a scan): registered, apodised, the
    /// resolution at the ½-bit threshold; writes PREFIX.csv and PREFIX.png (docs/compare.md).
    Frc {
        /// The first result file.
        a: PathBuf,
        /// The second result file (same object grid and pixel size).
        b: PathBuf,
        /// Output prefix of the CSV and the plot (default: `<A's stem>_frc` beside A).
        #[arg(long, value_name = "PREFIX")]
        output: Option<PathBuf>,
    },
}

/// Benchmarks other than the single-rank breakdown.
#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// One rank's gradient kernel on a GPU for a synthetic problem: time per iteration,
    /// device time per phase, achieved bytes/s against a device-to-device copy (docs/gpu.md).
    Gpu {
        /// GPU backend to time.
        #[arg(long, value_enum, default_value = "cuda")]
        backend: crate::config::BackendKind,
        /// POSITIONS,SIZE of the synthetic problem (raster scan, SIZE x SIZE patterns).
        #[arg(long, default_value = "16632,128")]
        synthetic: String,
        /// Probe modes.
        #[arg(long, default_value_t = 1)]
        modes: usize,
        /// Timed iterations (the median is reported).
        #[arg(long, default_value_t = 20)]
        repeats: usize,
        /// Also write the figures to this CSV file.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Strong scaling of the tiled decomposition: 1..N ranks as threads and as MPI
    /// processes, each with and without overlap; writes scaling.csv and scaling.png.
    Scaling {
        /// Config file of the dataset.
        config: PathBuf,
        /// Rank counts, comma-separated.
        #[arg(long, default_value = "1,2,4,8,16", value_delimiter = ',')]
        ranks: Vec<usize>,
        /// Launchers, comma-separated: threads, mpi.
        #[arg(long, default_value = "threads,mpi", value_delimiter = ',')]
        launchers: Vec<String>,
        /// Iterations per run (the first is left out as warm-up).
        #[arg(long, default_value_t = 4)]
        iterations: usize,
        /// Output folder (CSV, PNG, the runs' result files).
        #[arg(long, default_value = "out/scaling")]
        output: PathBuf,
        /// MPI launcher command.
        #[arg(long, default_value = "mpirun")]
        mpirun: String,
        /// Override any config key in every run: --set section.key=value (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

/// Options of `ptytile jobs` (see `jobs::JobSpec`).
#[derive(clap::Args, Debug)]
struct JobsArgs {
    /// Config file the job reconstructs (checked now; named by its absolute path in the script).
    config: PathBuf,
    /// Batch scheduler: slurm (sbatch + srun) or lsf (bsub + jsrun).
    #[arg(long, value_enum)]
    scheduler: jobs::Scheduler,
    /// Number of nodes.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// GPU maker: nvidia (CUDA; default node 4 GPUs, 64 cores) or amd (HIP; 8 GPUs, 56 cores).
    #[arg(long, value_enum, default_value = "nvidia")]
    gpu_vendor: jobs::GpuVendor,
    /// GPUs per node [default: 4 nvidia, 8 amd].
    #[arg(long)]
    gpus_per_node: Option<usize>,
    /// MPI ranks per node, a multiple of --gpus-per-node [default: parallel.tiles / nodes
    /// when the config sets tiles, else one rank per GPU].
    #[arg(long)]
    ranks_per_node: Option<usize>,
    /// CPU cores per node shared out among its ranks [default: 64 nvidia, 56 amd].
    #[arg(long)]
    cores_per_node: Option<usize>,
    /// Wall-clock limit, H:MM or H:MM:SS.
    #[arg(long, default_value = "1:00:00")]
    time: String,
    /// Account / project to charge (Slurm --account, LSF -P).
    #[arg(long)]
    account: Option<String>,
    /// Partition (Slurm) or queue (LSF).
    #[arg(long, visible_alias = "queue")]
    partition: Option<String>,
    /// Job name.
    #[arg(long, default_value = "ptytile")]
    job_name: String,
    /// ptytile binary the ranks run [default: this binary's absolute path].
    #[arg(long)]
    binary: Option<String>,
    /// Override any config key in the job: --set section.key=value (repeatable; checked now).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// Options of `ptytile simulate` (see `simulate::SimParams`).
#[derive(clap::Args, Debug)]
struct SimArgs {
    /// Output HDF5 file.
    #[arg(long, short)]
    output: PathBuf,
    /// Object phase from a grayscale PNG (default: a built-in lattice of atoms).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Maximum object phase (rad).
    #[arg(long, default_value_t = 0.8)]
    max_phase: f64,
    /// Probe window / detector side M (px, even).
    #[arg(long, default_value_t = 64)]
    probe_size: usize,
    /// Scan shape ROWSxCOLS.
    #[arg(long, default_value = "16x16")]
    scan: String,
    /// Scan step (object px).
    #[arg(long, default_value_t = 3.0)]
    step_px: f64,
    /// Random position jitter, ± px.
    #[arg(long, default_value_t = 0.3)]
    jitter_px: f64,
    /// Radiation: electron, or xray (λ = hc/E, a zone-plate-like probe, and a file that
    /// like a beamline's holds no probe guess; docs/algorithm.md §16).
    #[arg(long, value_enum, default_value = "electron")]
    beam: SimBeam,
    /// Beam energy (eV).
    #[arg(long, default_value_t = 300e3)]
    energy_ev: f64,
    /// Convergence semi-angle (mrad; X-ray: the zone plate's outer semi-angle).
    #[arg(long, default_value_t = 25.0)]
    semiangle_mrad: f64,
    /// Central stop: the blocked fraction of the pupil radius, in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    central_stop: f64,
    /// Defocus (m, positive = underfocus).
    #[arg(long, default_value_t = 50e-10)]
    defocus_m: f64,
    /// Object pixel size (m).
    #[arg(long, default_value_t = 0.2e-10)]
    pixel_size_m: f64,
    /// Mean counts per diffraction pattern (Poisson noise).
    #[arg(long, default_value_t = 1e5)]
    dose: f64,
    /// Write noise-free intensities instead of counts.
    #[arg(long)]
    noise_free: bool,
    /// Relative powers of incoherent probe modes, comma-separated (e.g. 0.7,0.2,0.1).
    #[arg(long, default_value = "1")]
    mode_powers: String,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `--beam` of `ptytile simulate`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum SimBeam {
    /// Electrons.
    Electron,
    /// X-ray photons.
    Xray,
}

impl SimArgs {
    fn params(&self) -> Result<crate::simulate::SimParams> {
        let scan: Vec<usize> = self
            .scan
            .split('x')
            .map(|v| v.trim().parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::new("--scan", format!("'{}' is not ROWSxCOLS", self.scan)))?;
        if scan.len() != 2 {
            return Err(Error::new(
                "--scan",
                format!("'{}' is not ROWSxCOLS", self.scan),
            ));
        }
        let mode_powers: Vec<f64> = self
            .mode_powers
            .split(',')
            .map(|v| v.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| {
                Error::new(
                    "--mode-powers",
                    format!(
                        "'{}' is not a comma-separated list of numbers",
                        self.mode_powers
                    ),
                )
            })?;
        Ok(crate::simulate::SimParams {
            m: self.probe_size,
            scan: [scan[0], scan[1]],
            step_px: self.step_px,
            jitter_px: self.jitter_px,
            beam: match self.beam {
                SimBeam::Electron => crate::config::Beam::Electron,
                SimBeam::Xray => crate::config::Beam::Xray,
            },
            energy_ev: self.energy_ev,
            semiangle_mrad: self.semiangle_mrad,
            central_stop: self.central_stop,
            defocus_m: self.defocus_m,
            pixel_size_m: self.pixel_size_m,
            dose: if self.noise_free {
                None
            } else {
                Some(self.dose)
            },
            mode_powers,
            max_phase: self.max_phase,
            image: self.image.clone(),
            seed: self.seed,
        })
    }
}

/// Parse arguments, run, map errors to exit code 2.
pub fn main() -> i32 {
    init_tracing();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print(); // --help, --version
            return 0;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print(); // bare `ptytile`: the help, as a usage error
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!("{}", one_line(&e.render().to_string()));
            return EXIT_USAGE;
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_USAGE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Run the command; returns the exit code (0, or [`signals::EXIT_CHECKPOINTED`]).
fn dispatch(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Reconstruct {
            config,
            iterations,
            output,
            ranks,
            mut set,
            resume,
            backend,
            live,
        } => {
            // first, so that SIGTERM/SIGINT end a run that blocks in start-up
            let signals = signals::install()?;
            if let Some(b) = backend {
                set.push(format!("parallel.backend={}", toml_string(b.name())));
            }
            if let Some(n) = ranks {
                set.push(format!("parallel.ranks={n}"));
            }
            if let Some(n) = iterations {
                set.push(format!("reconstruction.iterations={n}"));
            }
            if let Some(o) = output {
                set.push(format!(
                    "output.path={}",
                    toml_string(&o.display().to_string())
                ));
            }
            let mut cfg = Config::load(&config, &set)?;
            // a GPU backend that cannot run here fails now, before any data is read
            crate::backend::available(cfg.parallel.backend)?;
            // keys given as "auto" are measured from the data first (docs/algorithm.md §16)
            for line in calibrate::resolve_auto(&mut cfg)? {
                tracing::info!("calibrated {line}");
                if crate::comm::launcher_env().is_none_or(|l| l.rank == 0) {
                    eprintln!("calibrated {line}");
                }
            }
            let n = cfg.total_iterations();
            let bar = indicatif::ProgressBar::new(n as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} iterations  {msg}")
                    .map_err(|e| Error::new("progress bar", e.to_string()))?,
            );
            let progress = |it: usize, loss: f64, secs: f64, npos: usize| {
                bar.set_position(it as u64 + 1);
                bar.set_message(format!(
                    "loss {loss:.6e}  {:.0} positions/s",
                    npos as f64 / secs.max(1e-9)
                ));
                tracing::info!("iteration {it}: loss {loss:.6e}, {secs:.3} s");
            };
            if let Some(endpoint) = live {
                return live_reconstruct(&cfg, &endpoint, &progress, &bar);
            }
            let opts = driver::RunOptions {
                resume: resume.as_deref(),
                signals: Some(signals),
            };
            let res = match driver::run_with(&cfg, opts, &progress)? {
                driver::Outcome::Finished(r) => r,
                driver::Outcome::Stopped { iteration, dir } => {
                    bar.abandon();
                    if crate::comm::launcher_env().is_none_or(|l| l.rank == 0) {
                        eprintln!(
                            "stopped by SIGTERM after iteration {iteration}: checkpoint in {}; continue with: ptytile reconstruct {} --resume {}",
                            dir.display(), config.display(), dir.display()
                        );
                    }
                    return Ok(signals::EXIT_CHECKPOINTED);
                }
            };
            bar.finish();
            let Some(res) = res else { return Ok(0) };
            let paths = crate::output::write_result_checked(
                &cfg.output.path,
                &res,
                cfg.output.png,
                &cfg.inputs(),
            )?;
            for p in paths {
                crate::cli::outln!("wrote {}", p.display());
            }
            Ok(0)
        }
        Cmd::Stream {
            config,
            endpoint,
            rate,
            drop,
            corrupt,
            stop_after,
            set,
        } => {
            let cfg = Config::load(&config, &set)?;
            crate::data::transport::check_endpoint("--endpoint", &endpoint)?;
            let df = crate::data::DataFile::open(&cfg)?;
            let tx = crate::data::transport::Sender::bind(
                "--endpoint",
                &endpoint,
                crate::data::transport::DEFAULT_QUEUE,
            )?;
            let opts = crate::data::replay::ReplayOptions {
                rate,
                drop,
                corrupt,
                stop_after,
            };
            let bar = indicatif::ProgressBar::new(df.n as u64);
            let rep =
                crate::data::replay::replay(&df, &tx, &opts, &|k| bar.set_position(k as u64))?;
            bar.finish_and_clear();
            crate::cli::outln!(
                "sent {} of {} frames to {endpoint} in {:.2} s ({:.0} frames/s; {} left out, {} malformed messages, {}; last frame {:.2} s behind its time)",
                rep.sent,
                df.n,
                rep.seconds,
                rep.sent as f64 / rep.seconds.max(1e-9),
                rep.dropped.len(),
                rep.corrupted,
                if rep.ended { "end message sent" } else { "stopped without the end message" },
                rep.behind_s
            );
            Ok(0)
        }
        Cmd::Calibrate { config, set } => calibrate::run(&Config::load(&config, &set)?),
        Cmd::Inspect { file } => {
            crate::cli::out!("{}", crate::data::inspect::inspect(&file)?);
            Ok(0)
        }
        Cmd::Bench {
            study:
                Some(BenchCmd::Scaling {
                    config,
                    ranks,
                    launchers,
                    iterations,
                    output,
                    mpirun,
                    set,
                }),
            ..
        } => {
            if ranks.is_empty() || ranks.contains(&0) {
                return Err(Error::new("--ranks", "rank counts must be positive"));
            }
            // the config must load here, so that a bad one fails before any run
            Config::load(&config, &set)?;
            let launchers = launchers
                .iter()
                .map(|l| scaling::Launcher::parse(l))
                .collect::<Result<Vec<_>>>()?;
            scaling::run(&scaling::Study {
                config,
                ranks,
                launchers,
                iterations,
                output,
                mpirun,
                set,
            })
            .map(|_| 0)
        }
        Cmd::Bench {
            study:
                Some(BenchCmd::Gpu {
                    backend,
                    synthetic,
                    modes,
                    repeats,
                    output,
                }),
            ..
        } => {
            let (positions, m) = bench_gpu::parse_synthetic(&synthetic)?;
            if modes == 0 {
                return Err(Error::new("--modes", "must be at least 1"));
            }
            bench_gpu::run(&bench_gpu::GpuBench {
                backend,
                positions,
                m,
                modes,
                repeats,
                output,
            })
            .map(|_| 0)
        }
        Cmd::Bench {
            config,
            repeats,
            set,
            against,
            ..
        } => {
            let config = config.ok_or_else(|| Error::new("bench", "a config file is required"))?;
            let cfg = Config::load(&config, &set)?;
            let other = if against.is_empty() {
                None
            } else {
                Some(Config::load(&config, &[set, against.clone()].concat())?)
            };
            let against = other.as_ref().map(|cfg| bench::Against {
                cfg,
                overrides: &against,
            });
            bench::run(&cfg, against, repeats).map(|_| 0)
        }
        Cmd::Frc { a, b, output } => {
            let r = crate::analysis::frc::frc_files(&a, &b)?;
            let prefix = output.unwrap_or_else(|| {
                let stem = a
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                a.with_file_name(format!("{stem}_frc"))
            });
            let (csv, png) = (prefix.with_extension("csv"), prefix.with_extension("png"));
            frc_outputs(&r, &csv, &png, &[a.as_path(), b.as_path()])?;
            let (unit, per) = crate::output::plot::length_unit(r.pixel_size_m[0]);
            let res = r.resolution_m().map_or(
                "not reached: the FRC stays above the ½-bit threshold up to Nyquist (2 pixels)"
                    .to_string(),
                |m| format!("{:.4} {unit}", m / per),
            );
            crate::cli::outln!(
                "FRC ½-bit resolution: {res} (pixel {:.4} {unit}; area {:?}; shift of B {:.3}, {:.3} px)\n{}\n{}",
                r.pixel_size_m[0] / per, r.area, r.shift_px[0], r.shift_px[1], csv.display(), png.display()
            );
            Ok(0)
        }
        Cmd::Compare {
            recon,
            truth,
            truth_dataset,
        } => {
            let r =
                crate::analysis::compare::compare_files(&recon, &truth, truth_dataset.as_deref())?;
            crate::cli::outln!("{r}");
            Ok(0)
        }
        Cmd::Jobs(a) => {
            let cfg = Config::load(&a.config, &a.set)?;
            let config = std::path::absolute(&a.config)
                .map_err(|e| Error::new(a.config.display().to_string(), e.to_string()))?;
            let binary = match a.binary {
                Some(b) => b,
                None => std::env::current_exe()
                    .map_err(|e| {
                        Error::new(
                            "--binary",
                            format!("cannot find this binary ({e}); give --binary"),
                        )
                    })?
                    .display()
                    .to_string(),
            };
            let spec = jobs::JobSpec {
                gpus_per_node: a.gpus_per_node,
                ranks_per_node: a.ranks_per_node,
                cores_per_node: a.cores_per_node,
                time: a.time,
                account: a.account,
                queue: a.partition,
                job_name: a.job_name,
                binary,
                sets: a.set,
                ..jobs::JobSpec::new(
                    a.scheduler,
                    a.gpu_vendor,
                    a.nodes,
                    &config.display().to_string(),
                )
            };
            crate::cli::out!("{}", jobs::script(&spec, &cfg)?);
            Ok(0)
        }
        Cmd::Simulate(a) => {
            let p = a.params()?;
            let sim = crate::simulate::simulate(&p)?;
            let (h5, toml) = crate::simulate::write(&a.output, &sim, &p)?;
            crate::cli::outln!(
                "wrote {} ({} patterns of {}x{}, object {}x{})",
                h5.display(),
                sim.positions_px.len(),
                p.m,
                p.m,
                sim.object.shape[0],
                sim.object.shape[1]
            );
            crate::cli::outln!("wrote {}", toml.display());
            Ok(0)
        }
    }
}

/// The first paragraph of a clap error (what is wrong, with the argument and its possible
/// values) on one line; the usage and "try --help" paragraphs are dropped.
fn one_line(text: &str) -> String {
    let first = text.trim_start().split("\n\n").next().unwrap_or("");
    first.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Quote a string as a TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Write the FRC table `csv` (columns: spatial frequency in 1/unit and cycles per pixel,
/// FRC, ½-bit threshold, ring pixels) and its plot `png`, atomically; neither may be one of
/// the `inputs`. Errors name the file.
fn frc_outputs(
    r: &crate::analysis::frc::FrcReport,
    csv: &std::path::Path,
    png: &std::path::Path,
    inputs: &[&std::path::Path],
) -> Result<()> {
    use crate::analysis::frc::half_bit;
    for p in [csv, png] {
        if inputs
            .iter()
            .any(|i| std::path::absolute(i).ok() == std::path::absolute(p).ok())
        {
            return Err(Error::new(
                p.display().to_string(),
                "is an input: choose another --output",
            ));
        }
    }
    let (unit, per) = crate::output::plot::length_unit(r.pixel_size_m[0]);
    let pix = r.pixel_size_m[0].max(r.pixel_size_m[1]) / per;
    let rr = &r.rings;
    let thr: Vec<f64> = rr.pixels.iter().map(|&n| half_bit(n)).collect();
    let freq: Vec<f64> = rr.freq_per_px.iter().map(|q| q / pix).collect();
    let mut text = format!(
        "frequency_per_{},frequency_per_pixel,frc,half_bit_threshold,ring_pixels\n",
        if unit == "Å" { "angstrom" } else { unit }
    );
    for i in 0..freq.len() {
        text += &format!(
            "{:.6},{:.6},{:.6},{:.6},{}\n",
            freq[i], rr.freq_per_px[i], rr.frc[i], thr[i], rr.pixels[i]
        );
    }
    if let Some(d) = csv.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)
            .map_err(|e| Error::new(d.display().to_string(), e.to_string()))?;
    }
    crate::output::write_atomic(csv, text.as_bytes())?;
    // the mean ring (0) is left out of the plot
    let img = crate::output::plot::frc_plot(
        &freq[1..],
        &rr.frc[1..],
        &thr[1..],
        r.crossing_per_px.map(|q| q / pix),
        unit,
    )?;
    img.write_atomic(png)
}

/// `reconstruct --live`: run [`driver::live::run_live`] and write its result; exit code 3
/// ([`driver::live::EXIT_INCOMPLETE`]) with one line when the stream was lost.
fn live_reconstruct(
    cfg: &Config,
    endpoint: &str,
    progress: driver::Progress,
    bar: &indicatif::ProgressBar,
) -> Result<i32> {
    let outcome = driver::live::run_live(cfg, endpoint, progress)?;
    bar.finish_and_clear();
    let (res, code) = match outcome {
        driver::live::LiveOutcome::Complete(r) => (r, 0),
        driver::live::LiveOutcome::Incomplete(r) => (r, driver::live::EXIT_INCOMPLETE),
    };
    // under MPI only rank 0's process holds the result and speaks
    let Some(res) = res else { return Ok(code) };
    let paths =
        crate::output::write_result_checked(&cfg.output.path, &res, cfg.output.png, &cfg.inputs())?;
    for p in &paths {
        crate::cli::outln!("wrote {}", p.display());
    }
    if code != 0 {
        let got = res
            .attrs
            .iter()
            .find(|(n, _)| n == "live_frames_received")
            .map_or(0.0, |a| a.1);
        eprintln!(
            "error: --live {endpoint}: the stream was lost before its end (no message for live.timeout_s = {} s): {} holds the {got} frames received, marked incomplete (@live_complete = 0)",
            cfg.live.timeout_s,
            cfg.output.path.display()
        );
    }
    Ok(code)
}
