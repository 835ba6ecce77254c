//! What identifies a job: every rank running the same one (MPI start-up check), the
//! identity a checkpoint is written for, and loading a rank's part of a checkpoint.

use crate::comm::Comm;
use crate::config::Config;
use crate::data::DataFile;
use crate::engine::snapshot::{self, NamedArray, Snapshot};
use crate::error::{Error, Result};
use crate::output::checkpoint::{self, Job};
use crate::tiling::{self, RankPlan, TilePlan};
use std::path::Path;
use xxhash_rust::xxh3::xxh3_64;

/// What a rank runs, for [`check_same_job`]: the full configuration after `--set` and the
/// command-line options (TOML), and the data file's identity (absolute path, size,
/// modification time; the same on every node of a shared file system).
fn job_words(cfg: &Config) -> (String, String) {
    let f = &cfg.data.file;
    let meta = std::fs::metadata(f).ok();
    let mtime = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let data = format!(
        "{} ({} bytes, modified {mtime} ns)",
        std::path::absolute(f)
            .unwrap_or_else(|_| f.clone())
            .display(),
        meta.map_or(0, |m| m.len())
    );
    (cfg.to_toml(), data)
}

/// Start-up check of an MPI job: every rank must run the same job (the same configuration
/// after overrides, the same data file). The configurations and data identities are
/// gathered on rank 0, which compares each rank's with its own; on a difference rank 0
/// returns one line naming the first differing rank and what differs (the first differing
/// config key with both values, or the data file), and the other ranks wait to be ended by
/// rank 0's abort, so that only that line is printed. Without this check, ranks started
/// with different arguments (e.g. `--iterations`) deadlocked in a later collective.
///
/// Errors: a rank runs another job (from rank 0), or a failed transport.
pub fn check_same_job(cfg: &Config, c: &mut dyn Comm) -> Result<()> {
    let (toml_text, data) = job_words(cfg);
    let all = c.gather(format!("{data}\n{toml_text}").into_bytes())?;
    let mut verdict = [0.0f64];
    let mut msg = None;
    if let Some(all) = all {
        let split = |b: &[u8]| {
            let s = String::from_utf8_lossy(b).into_owned();
            let (d, t) = s.split_once('\n').unwrap_or((&s, ""));
            (d.to_string(), t.to_string())
        };
        let (d0, t0) = split(&all[0]);
        let flat = |t: &str| {
            t.parse::<toml::Table>()
                .map(|t| checkpoint::flatten(&t))
                .unwrap_or_default()
        };
        let f0 = flat(&t0);
        for (r, b) in all.iter().enumerate().skip(1) {
            let (d, t) = split(b);
            if t != t0 {
                let f = flat(&t);
                let key = f0
                    .keys()
                    .chain(f.keys())
                    .find(|k| f0.get(*k) != f.get(*k))
                    .cloned()
                    .unwrap_or_else(|| "the configuration".into());
                let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "unset".into());
                msg = Some(format!("rank {r} runs another job than rank 0: {key} is {} there, {} on rank 0; start every rank with the same config and arguments", show(f.get(&key)), show(f0.get(&key))));
            } else if d != d0 {
                msg = Some(format!("rank {r} runs another job than rank 0: its data file is {d}, rank 0's {d0}; every rank must read the same file"));
            }
            if msg.is_some() {
                verdict[0] = r as f64;
                break;
            }
        }
    }
    c.allreduce_max(&mut verdict)?;
    if verdict[0] == 0.0 {
        return Ok(());
    }
    match msg {
        Some(m) => Err(Error::new("MPI job", m)),
        None => {
            // rank 0 reports and aborts the job; wait for that (bounded)
            std::thread::sleep(std::time::Duration::from_secs(60));
            Err(Error::new(
                "MPI job",
                format!("rank {} runs another job than rank 0", verdict[0]),
            ))
        }
    }
}

/// What identifies this job for resuming ([`Job`]): the reconstruction settings except
/// the iteration count, the experiment settings, the data settings except the file's path
/// (so that a moved file still resumes) with the pattern count, detector size, object
/// grid and an XXH3-64 of the scan positions, the decomposition, and an XXH3-64 of the
/// tile plan (every rank's tile, field and positions).
pub fn job_identity(cfg: &Config, df: &DataFile, plan: &TilePlan, engine: &str) -> Result<Job> {
    let mut rec = table(&cfg.reconstruction, "reconstruction")?;
    rec.remove("iterations");
    let mut data = table(&cfg.data, "data")?;
    data.remove("file");
    let centres: Vec<f64> = df.centres.iter().flatten().copied().collect();
    data.insert("patterns".into(), (df.n as i64).into());
    data.insert("detector_px".into(), (df.m as i64).into());
    data.insert(
        "object_shape".into(),
        toml::Value::Array(df.object_shape.iter().map(|&v| (v as i64).into()).collect()),
    );
    data.insert(
        "positions_xxh3".into(),
        format!("{:016x}", xxh3_64(bytemuck::cast_slice(&centres))).into(),
    );
    let mut plan_words: Vec<i64> = Vec::new();
    for r in &plan.ranks {
        plan_words.extend(rect4(&r.tile));
        plan_words.extend(rect4(&r.field));
        plan_words.push(r.positions.len() as i64);
        plan_words.extend(r.positions.iter().map(|&j| j as i64));
    }
    let mut par = toml::Table::new();
    par.insert(
        "mode".into(),
        toml::Value::try_from(cfg.parallel.mode)
            .map_err(|e| Error::new("parallel.mode", e.to_string()))?,
    );
    par.insert(
        "tiles".into(),
        toml::Value::Array(plan.tiles.iter().map(|&v| (v as i64).into()).collect()),
    );
    par.insert(
        "plan_xxh3".into(),
        format!("{:016x}", xxh3_64(bytemuck::cast_slice(&plan_words))).into(),
    );
    let mut t = toml::Table::new();
    t.insert("engine".into(), engine.into());
    t.insert("reconstruction".into(), rec.into());
    // the engines' own parameters and the schedule (its iterations included: they decide
    // which engine runs at which iteration)
    for (name, v) in [
        ("dm", table(&cfg.dm, "dm")?),
        ("mlcg", table(&cfg.mlcg, "mlcg")?),
        ("epie", table(&cfg.epie, "epie")?),
        ("rpie", table(&cfg.rpie, "rpie")?),
    ] {
        t.insert(name.into(), v.into());
    }
    if !cfg.schedule.is_empty() {
        let stages = cfg
            .schedule
            .iter()
            .map(|s| table(s, "schedule").map(toml::Value::Table))
            .collect::<Result<Vec<_>>>()?;
        t.insert("schedule".into(), toml::Value::Array(stages));
    }
    if !cfg.position_correction.is_default() {
        // the refinement's settings decide every later position (absent when left alone, so
        // the identities of runs without it are as before)
        t.insert(
            "position_correction".into(),
            table(&cfg.position_correction, "position_correction")?.into(),
        );
    }
    t.insert(
        "experiment".into(),
        table(&cfg.experiment, "experiment")?.into(),
    );
    t.insert("data".into(), data.into());
    t.insert("parallel".into(), par.into());
    Ok(Job {
        ranks: plan.ranks.len(),
        tiles: plan.tiles,
        engine: engine.into(),
        table: t,
    })
}

/// A config section as a TOML table (`what` names it in errors).
fn table<T: serde::Serialize>(v: &T, what: &str) -> Result<toml::Table> {
    match toml::Value::try_from(v) {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(_) => Err(Error::new(what, "not a table")),
        Err(e) => Err(Error::new(what, e.to_string())),
    }
}

/// (y0, y1, x0, x1) of a rectangle.
pub(crate) fn rect4(r: &tiling::Rect) -> [i64; 4] {
    [r.y0, r.y1, r.x0, r.x1]
}

/// Load this rank's part of the checkpoint in `dir` into `state`; returns the completed
/// iterations, the loss history and the rank's arrays (for what the driver keeps itself:
/// refined positions).
///
/// Errors (one line, naming the manifest or file): a job that differs from the one that
/// wrote the checkpoint, a corrupt file, other diffraction patterns on this rank, or more
/// iterations already done than `iterations`.
pub(crate) fn resume(
    dir: &Path,
    job: &Job,
    rp: &RankPlan,
    data_xxh3: u64,
    iterations: usize,
    state: &mut dyn Snapshot,
) -> Result<(usize, Vec<f64>, Vec<NamedArray>)> {
    let m = checkpoint::read_manifest(dir)?;
    checkpoint::check_job(dir, &m, job)?;
    let s = checkpoint::read_rank(dir, &m, rp.rank)?;
    let file = dir.join(&m.files[rp.rank].path).display().to_string();
    if s.tile != rect4(&rp.tile) {
        return Err(Error::new(
            file,
            format!("tile {:?}, this rank's is {:?}", s.tile, rect4(&rp.tile)),
        ));
    }
    if s.data_xxh3 != data_xxh3 {
        return Err(Error::new(
            file,
            format!(
                "rank {}'s diffraction patterns differ from those the checkpoint was written from",
                rp.rank
            ),
        ));
    }
    let done = s.iteration as usize;
    if done > iterations {
        return Err(Error::new(
            "reconstruction.iterations",
            format!(
                "{iterations}, but the checkpoint in {} has {done} iterations done",
                dir.display()
            ),
        ));
    }
    state.restore(&s.arrays)?;
    let loss = snapshot::find(&s.arrays, "loss")?.values::<f64>(&[done])?;
    Ok((done, loss, s.arrays))
}
