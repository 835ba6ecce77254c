//! `ptytile bench scaling`: a strong-scaling study of the tiled decomposition.
//!
//! For every launcher (in-process thread ranks, MPI processes started by `mpirun`) and
//! every rank count N, the same reconstruction runs twice as a child process of this
//! binary: with the halo exchange overlapped with the interior positions (the method) and
//! without overlap (halo messages posted only after all positions). Each run records in its
//! result file the per-iteration seconds of compute, communication work and waiting
//! (mean and maximum over ranks, first iteration left out as warm-up) and the halo traffic.
//!
//! Derived per (launcher, N), docs/scaling.md:
//! * strong-scaling efficiency E(N) = T(1) / (N · T(N)), T the median steady time per
//!   iteration with overlap, T(1) of the same launcher;
//! * hidden communication h = 1 − X_overlap / X_no-overlap, with X = comm + wait per
//!   iteration (mean over ranks): the share of the exposed exchange time that overlapping
//!   removes (clamped to [0, 1]; load imbalance sits in both and lowers h).
//!
//! Output: `scaling.csv` (one row per run) and `scaling.png` (stacked compute / comm / wait
//! bars per rank count, E and h above each bar), written atomically into the output folder.

use crate::error::{Context, Error, Result};
use crate::output::png::{Image, Pixels};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of the study.
#[derive(Debug, Clone)]
pub struct Study {
    /// The dataset's config file.
    pub config: PathBuf,
    /// Rank counts, e.g. [1, 2, 4, 8, 16].
    pub ranks: Vec<usize>,
    /// "threads" and/or "mpi".
    pub launchers: Vec<Launcher>,
    /// Iterations per run (the first is left out as warm-up).
    pub iterations: usize,
    /// Folder for the CSV, the PNG and the runs' result files.
    pub output: PathBuf,
    /// The MPI launcher command (mpirun, mpiexec, srun).
    pub mpirun: String,
    /// Extra `--set` overrides passed to every run.
    pub set: Vec<String>,
}

/// How ranks are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// Threads of one process (`--ranks N`).
    Threads,
    /// One MPI process per rank (`mpirun -n N`).
    Mpi,
}

impl Launcher {
    /// Parse "threads" | "mpi". Errors name the option `--launchers`.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim() {
            "threads" => Ok(Launcher::Threads),
            "mpi" => Ok(Launcher::Mpi),
            o => Err(Error::new(
                "--launchers",
                format!("unknown launcher {o:?} (threads|mpi)"),
            )),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Launcher::Threads => "threads",
            Launcher::Mpi => "mpi",
        }
    }
}

/// One run's figures (seconds per iteration unless named otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Launcher.
    pub launcher: Launcher,
    /// Rank count N.
    pub ranks: usize,
    /// Tiles [Ty, Tx].
    pub tiles: [usize; 2],
    /// Halo exchange overlapped with interior compute.
    pub overlap: bool,
    /// Median steady wall time per iteration.
    pub seconds: f64,
    /// Compute, communication work, waiting: mean over ranks.
    pub compute: f64,
    /// See `compute`.
    pub comm: f64,
    /// See `compute`.
    pub wait: f64,
    /// Maximum over ranks of the compute time (load balance).
    pub compute_max: f64,
    /// Halo bytes sent by all ranks per iteration.
    pub halo_bytes: f64,
    /// Halo messages sent by all ranks per iteration.
    pub halo_messages: f64,
    /// Largest measurement bytes held by one rank.
    pub meas_bytes_max: f64,
    /// Per rank and iteration, the largest over ranks: halo messages sent, halo bytes
    /// sent, peers (ranks it exchanges halos with, either way), seconds inside all-reduces.
    pub per_rank_max: PerRank,
    /// The same, mean over ranks.
    pub per_rank_mean: PerRank,
    /// All-reduce calls per iteration (every rank makes the same).
    pub allreduces: f64,
    /// Largest object/gradient field bytes of one rank.
    pub field_bytes_max: f64,
    /// Largest peak resident memory of one process (bytes; thread ranks share one process).
    pub peak_rss_max: f64,
}

/// What one rank sends and waits for per iteration (see [`Run::per_rank_max`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PerRank {
    /// Halo messages sent.
    pub messages: f64,
    /// Halo bytes sent.
    pub bytes: f64,
    /// Distinct halo peers.
    pub peers: f64,
    /// Seconds inside all-reduces.
    pub allreduce_s: f64,
}

/// Run the study; writes `scaling.csv` and `scaling.png` into `s.output` and returns the
/// runs. Errors: a run that fails (its first stderr line, naming the launcher and N), an
/// unwritable output folder, a missing MPI launcher (naming `--mpirun`).
pub fn run(s: &Study) -> Result<Vec<Run>> {
    let exe = std::env::current_exe().ctx(|| "ptytile executable".to_string())?;
    let runs_dir = s.output.join("runs");
    std::fs::create_dir_all(&runs_dir).ctx(|| runs_dir.display().to_string())?;
    let mut runs = Vec::new();
    for &l in &s.launchers {
        for &n in &s.ranks {
            for overlap in [true, false] {
                let out = runs_dir.join(format!(
                    "{}_{n}_{}.h5",
                    l.name(),
                    if overlap { "overlap" } else { "serial" }
                ));
                let r = one_run(s, &exe, l, n, overlap, &out)?;
                crate::cli::outln!(
                    "{:>7} N={n:>2} {}: {:.4} s/it (compute {:.4}, comm {:.4}, wait {:.4})",
                    l.name(),
                    if overlap { "overlap   " } else { "no overlap" },
                    r.seconds,
                    r.compute,
                    r.comm,
                    r.wait
                );
                runs.push(r);
            }
        }
    }
    write_csv(&s.output.join("scaling.csv"), &runs)?;
    let png = s.output.join("scaling.png");
    plot(&runs)?.write_atomic(&png)?;
    crate::cli::outln!(
        "wrote {} and {}",
        s.output.join("scaling.csv").display(),
        png.display()
    );
    Ok(runs)
}

fn one_run(s: &Study, exe: &Path, l: Launcher, n: usize, overlap: bool, out: &Path) -> Result<Run> {
    let mut cmd = match l {
        Launcher::Threads => Command::new(exe),
        Launcher::Mpi => {
            let mut c = Command::new(&s.mpirun);
            c.args(["-n", &n.to_string()]).arg(exe);
            c
        }
    };
    cmd.arg("reconstruct").arg(&s.config);
    cmd.args([
        "--ranks",
        &n.to_string(),
        "--iterations",
        &s.iterations.to_string(),
        "--output",
    ])
    .arg(out);
    for kv in s.set.iter().cloned().chain([
        format!("parallel.overlap={overlap}"),
        "parallel.mode=\"tiled\"".into(),
    ]) {
        cmd.args(["--set", &kv]);
    }
    // tiles follow the rank count: a config that fixes parallel.tiles fails for other N,
    // and the run's error line (naming parallel.tiles) is reported
    cmd.env("RUST_LOG", "warn")
        .env("HDF5_USE_FILE_LOCKING", "FALSE");
    let what = format!("{} N={n}", l.name());
    let o = cmd.output().map_err(|e| match l {
        Launcher::Mpi => Error::new("--mpirun", format!("cannot start {:?}: {e}", s.mpirun)),
        Launcher::Threads => Error::new(what.clone(), e.to_string()),
    })?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let line = err
            .lines()
            .find(|l| l.contains("error"))
            .or(err.lines().next())
            .unwrap_or("no message");
        return Err(Error::new(
            what,
            format!("run failed ({}): {line}", o.status),
        ));
    }
    let res = crate::output::read_result(out)?;
    let a = |k: &str| {
        res.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| *v)
            .ok_or_else(|| Error::new(out.display().to_string(), format!("attribute {k} missing")))
    };
    let it = s.iterations.max(1) as f64;
    Ok(Run {
        launcher: l,
        ranks: a("ranks")? as usize,
        tiles: [a("tiles_y")? as usize, a("tiles_x")? as usize],
        overlap,
        seconds: a("steady_seconds_per_iteration")?,
        compute: a("compute_s_per_iteration_mean_rank")?,
        comm: a("comm_s_per_iteration_mean_rank")?,
        wait: a("wait_s_per_iteration_mean_rank")?,
        compute_max: a("compute_s_per_iteration_max_rank")?,
        halo_bytes: a("halo_bytes_sent_total")? / it,
        halo_messages: a("halo_messages_sent_total")? / it,
        meas_bytes_max: a("measurement_bytes_max_rank")?,
        per_rank_max: PerRank {
            messages: a("messages_per_iteration_max_rank")?,
            bytes: a("bytes_per_iteration_max_rank")?,
            peers: a("peers_max_rank")?,
            allreduce_s: a("allreduce_s_per_iteration_max_rank")?,
        },
        per_rank_mean: PerRank {
            messages: a("messages_per_iteration_mean_rank")?,
            bytes: a("bytes_per_iteration_mean_rank")?,
            peers: a("peers_mean_rank")?,
            allreduce_s: a("allreduce_s_per_iteration_mean_rank")?,
        },
        allreduces: a("allreduces_per_iteration")?,
        field_bytes_max: a("object_gradient_bytes_max_rank")?,
        peak_rss_max: a("peak_rss_bytes_max_process")?,
    })
}

/// (efficiency, hidden fraction) of the run `r` among `runs`: NaN when a reference run is
/// missing, and h is NaN for a run without halo messages (one rank).
pub fn derived(runs: &[Run], r: &Run) -> (f64, f64) {
    let find = |n: usize, ov: bool| {
        runs.iter()
            .find(|q| q.launcher == r.launcher && q.ranks == n && q.overlap == ov)
    };
    let eff = find(1, true)
        .map(|one| one.seconds / (r.ranks as f64 * r.seconds))
        .unwrap_or(f64::NAN);
    let hidden = match (find(r.ranks, true), find(r.ranks, false)) {
        (Some(on), Some(off)) if on.halo_messages > 0.0 && off.comm + off.wait > 0.0 => {
            (1.0 - (on.comm + on.wait) / (off.comm + off.wait)).clamp(0.0, 1.0)
        }
        _ => f64::NAN,
    };
    (eff, hidden)
}

fn write_csv(path: &Path, runs: &[Run]) -> Result<()> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut s = String::from(
        "launcher,ranks,tiles_y,tiles_x,overlap,cores,s_per_iteration,compute_s,comm_s,wait_s,compute_s_max_rank,halo_bytes_per_iteration,halo_messages_per_iteration,measurement_bytes_max_rank,hidden_fraction,efficiency,\
         messages_per_iteration_max_rank,messages_per_iteration_mean_rank,bytes_per_iteration_max_rank,bytes_per_iteration_mean_rank,peers_max_rank,peers_mean_rank,\
         allreduce_s_per_iteration_max_rank,allreduce_s_per_iteration_mean_rank,allreduces_per_iteration,field_bytes_max_rank,peak_rss_bytes_max_process\n",
    );
    for r in runs {
        let (e, h) = derived(runs, r);
        let (x, m) = (&r.per_rank_max, &r.per_rank_mean);
        s += &format!(
            "{},{},{},{},{},{cores},{:.6},{:.6},{:.6},{:.6},{:.6},{:.0},{:.0},{:.0},{:.4},{:.4},{:.1},{:.2},{:.0},{:.0},{:.0},{:.2},{:.7},{:.7},{:.0},{:.0},{:.0}\n",
            r.launcher.name(), r.ranks, r.tiles[0], r.tiles[1], r.overlap, r.seconds, r.compute, r.comm, r.wait, r.compute_max,
            r.halo_bytes, r.halo_messages, r.meas_bytes_max, h, e,
            x.messages, m.messages, x.bytes, m.bytes, x.peers, m.peers, x.allreduce_s, m.allreduce_s, r.allreduces, r.field_bytes_max, r.peak_rss_max
        );
    }
    crate::output::write_atomic(path, s.as_bytes())
}

/// Plot width and height in pixels.
pub const PLOT_SIZE: (u32, u32) = (1100, 460);

/// Stacked bars of compute / comm / wait per iteration (mean over ranks, overlapped runs)
/// per rank count, one panel per launcher; E(N) and h(N) above each bar.
pub fn plot(runs: &[Run]) -> Result<Image> {
    use plotters::prelude::*;
    let (w, h) = PLOT_SIZE;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let text = crate::output::plot::font();
    let err = |e: String| Error::new("scaling.png", e);
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let mut launchers: Vec<Launcher> = runs.iter().map(|r| r.launcher).collect();
        launchers.dedup();
        let panels = root.split_evenly((1, launchers.len().max(1)));
        let colours = [
            RGBColor(31, 119, 180),
            RGBColor(255, 127, 14),
            RGBColor(150, 150, 150),
        ];
        for (l, area) in launchers.iter().zip(&panels) {
            let rows: Vec<&Run> = runs
                .iter()
                .filter(|r| r.launcher == *l && r.overlap)
                .collect();
            let ymax = rows
                .iter()
                .map(|r| (r.compute + r.comm + r.wait).max(r.seconds))
                .fold(0.0, f64::max)
                .max(1e-6)
                * 1.3;
            let n = rows.len();
            let mut b = ChartBuilder::on(area);
            b.margin(12)
                .x_label_area_size(if text { 40 } else { 5 })
                .y_label_area_size(if text { 60 } else { 5 });
            if text {
                b.caption(
                    format!("{}: time per iteration", l.name()),
                    ("sans-serif", 20),
                );
            }
            let mut chart = b
                .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..ymax)
                .map_err(|e| err(e.to_string()))?;
            let mut mesh = chart.configure_mesh();
            mesh.disable_x_mesh().light_line_style(WHITE);
            if text {
                let labels: Vec<String> = rows
                    .iter()
                    .map(|r| format!("N={} ({}x{})", r.ranks, r.tiles[0], r.tiles[1]))
                    .collect();
                mesh.x_labels(n)
                    .x_label_formatter(&move |x| {
                        labels
                            .get(x.round() as usize)
                            .filter(|_| (x - x.round()).abs() < 1e-6)
                            .cloned()
                            .unwrap_or_default()
                    })
                    .y_desc("seconds per iteration")
                    .x_desc("ranks (tiles)")
                    .draw()
                    .map_err(|e| err(e.to_string()))?;
            } else {
                mesh.x_labels(0)
                    .y_labels(0)
                    .draw()
                    .map_err(|e| err(e.to_string()))?;
            }
            for (i, r) in rows.iter().enumerate() {
                let x = i as f64;
                let mut y0 = 0.0;
                for (v, c) in [r.compute, r.comm, r.wait].iter().zip(colours) {
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(x - 0.35, y0), (x + 0.35, y0 + v)],
                            c.filled(),
                        )))
                        .map_err(|e| err(e.to_string()))?;
                    y0 += v;
                }
                // measured wall time per iteration
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x - 0.42, r.seconds), (x + 0.42, r.seconds)],
                        BLACK.stroke_width(2),
                    )))
                    .map_err(|e| err(e.to_string()))?;
                if text {
                    let (e, hid) = derived(runs, r);
                    let label = format!(
                        "E {:.0}%  h {}",
                        100.0 * e,
                        if hid.is_nan() {
                            "-".into()
                        } else {
                            format!("{:.0}%", 100.0 * hid)
                        }
                    );
                    chart
                        .draw_series(std::iter::once(Text::new(
                            label,
                            (x - 0.4, y0.max(r.seconds) + ymax * 0.04),
                            ("sans-serif", 13),
                        )))
                        .map_err(|e| err(e.to_string()))?;
                }
            }
            if text {
                // legend in one row along the top
                let legend = [
                    ("compute", colours[0]),
                    ("comm", colours[1]),
                    ("wait", colours[2]),
                ];
                let (y, dy, dx) = (ymax * 0.985, ymax * 0.035, n as f64 / 5.5);
                for (k, (name, c)) in legend.iter().enumerate() {
                    let x = -0.45 + dx * k as f64;
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(x, y - dy), (x + 0.08, y)],
                            c.filled(),
                        )))
                        .map_err(|e| err(e.to_string()))?;
                    chart
                        .draw_series(std::iter::once(Text::new(
                            name.to_string(),
                            (x + 0.11, y),
                            ("sans-serif", 13),
                        )))
                        .map_err(|e| err(e.to_string()))?;
                }
                let x = -0.45 + dx * 3.0;
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        vec![(x, y - dy / 2.0), (x + 0.1, y - dy / 2.0)],
                        BLACK.stroke_width(2),
                    )))
                    .map_err(|e| err(e.to_string()))?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        "wall time".to_string(),
                        (x + 0.13, y),
                        ("sans-serif", 13),
                    )))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(Image {
        width: w as usize,
        height: h as usize,
        pixels: Pixels::Rgb8,
        data: buf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(l: Launcher, n: usize, overlap: bool, seconds: f64, comm: f64, wait: f64) -> Run {
        Run {
            launcher: l,
            ranks: n,
            tiles: [1, n],
            overlap,
            seconds,
            compute: seconds - comm - wait,
            comm,
            wait,
            compute_max: seconds,
            halo_bytes: 0.0,
            halo_messages: 0.0,
            meas_bytes_max: 0.0,
            per_rank_max: PerRank::default(),
            per_rank_mean: PerRank::default(),
            allreduces: 0.0,
            field_bytes_max: 0.0,
            peak_rss_max: 0.0,
        }
    }

    #[test]
    fn efficiency_and_hidden_fraction() {
        let runs = vec![
            run(Launcher::Threads, 1, true, 1.0, 0.0, 0.0),
            run(Launcher::Threads, 1, false, 1.0, 0.0, 0.0),
            run(Launcher::Threads, 4, true, 0.5, 0.05, 0.05),
            run(Launcher::Threads, 4, false, 0.6, 0.1, 0.3),
        ];
        let mut runs = runs;
        runs[2].halo_messages = 8.0;
        let (e, h) = derived(&runs, &runs[2]);
        assert!((e - 0.5).abs() < 1e-12, "{e}");
        assert!((h - 0.75).abs() < 1e-12, "{h}");
        // no exchange at all: the hidden fraction is undefined
        assert!(derived(&runs, &runs[0]).1.is_nan());
        let img = plot(&runs).unwrap();
        assert_eq!(
            (img.width, img.height),
            (PLOT_SIZE.0 as usize, PLOT_SIZE.1 as usize)
        );
        // the bars are drawn: the compute colour is present
        assert!(img.data.chunks(3).any(|p| p == [31, 119, 180]));
    }

    #[test]
    fn launcher_names() {
        assert_eq!(Launcher::parse("mpi").unwrap(), Launcher::Mpi);
        assert!(Launcher::parse("slurm")
            .unwrap_err()
            .to_string()
            .contains("--launchers"));
    }
}
