//! Checkpoints: every rank's engine state at an iteration boundary, written so that a
//! process killed at any moment leaves a usable checkpoint (docs/format.md, "Checkpoint").
//!
//! Layout of a checkpoint directory `DIR`:
//! ```text
//! DIR/manifest.toml               the checkpoint in force (written last, by rank 0)
//! DIR/it-00000012/rank-00000.ckpt one file per rank, iteration 12
//! DIR/it-00000012/rank-00001.ckpt
//! ```
//! Protocol of [`save`]: every rank writes its file to a temporary name, fsyncs it, renames
//! it into `it-<iteration>/` and fsyncs that directory; the file names, sizes and checksums
//! are gathered on rank 0 (which thereby waits for every rank), and rank 0 writes
//! `manifest.toml` the same way (temporary file, fsync, rename, fsync `DIR`). Only then are
//! the files of older checkpoints and stray temporary files removed: only files ptytile
//! writes (rank files recognised by name and magic, temporary files by name) and then
//! iteration directories left empty, never anything else in `DIR` ([`prune`]). A kill at
//! any moment therefore leaves `manifest.toml` naming a complete set of files: either the
//! previous checkpoint's or the new one's. Anything not named by the manifest is not a
//! checkpoint.
//!
//! A rank file is `PTYCKPT1` (8 bytes), a bincode-2 encoded [`RankSnapshot`] (standard
//! configuration: little-endian, variable-length integers), then the XXH3-64 of everything
//! before it (8 bytes, little-endian). The manifest repeats each file's size and checksum.

use crate::comm::Comm;
use crate::engine::snapshot::NamedArray;
use crate::error::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_64;

/// File name of the manifest inside a checkpoint directory.
pub const MANIFEST: &str = "manifest.toml";
/// `format` of a manifest.
pub const FORMAT: &str = "ptytile-checkpoint";
/// Version of the layout described here.
pub const VERSION: u32 = 1;
/// First 8 bytes of every rank file.
pub const MAGIC: &[u8; 8] = b"PTYCKPT1";

/// One rank's state after `iteration` completed iterations.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode)]
pub struct RankSnapshot {
    /// The rank that wrote it.
    pub rank: u64,
    /// Completed iterations (global count from the start of the run); the resumed run
    /// continues with iteration number `iteration`.
    pub iteration: u64,
    /// Engine name (e.g. `gd`).
    pub engine: String,
    /// Stage of an engine schedule (0 without a schedule).
    pub stage: u64,
    /// [`Job::fingerprint`] of the job that wrote it.
    pub fingerprint: u64,
    /// The rank's tile (y0, y1, x0, x1), object pixels, half-open.
    pub tile: [i64; 4],
    /// XXH3-64 of the rank's diffraction patterns as read (f32 bytes, plan order).
    pub data_xxh3: u64,
    /// The engine's arrays ([`crate::engine::snapshot::Snapshot::save`]) and the driver's
    /// (`loss`: loss per completed iteration, float64 [iteration]).
    pub arrays: Vec<NamedArray>,
}

/// What identifies a job for resuming: a resume is refused unless all of it is equal.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Number of ranks.
    pub ranks: usize,
    /// Tiles [Ty, Tx].
    pub tiles: [usize; 2],
    /// Engine name.
    pub engine: String,
    /// Every setting and data summary that changes the iterates (the reconstruction
    /// settings except the iteration count, the experiment, the data paths and a hash of
    /// the scan positions, the decomposition and a hash of the tile plan). Stored in the
    /// manifest as `[job]`, compared key by key on resume.
    pub table: toml::Table,
}

impl Job {
    /// XXH3-64 of the TOML text of [`Job::table`] (keys sorted).
    pub fn fingerprint(&self) -> u64 {
        xxh3_64(toml::to_string(&self.table).unwrap_or_default().as_bytes())
    }
}

/// One rank file as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// The rank.
    pub rank: usize,
    /// Path relative to the checkpoint directory, e.g. `it-00000012/rank-00003.ckpt`.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// XXH3-64 of the file without its last 8 bytes, 16 hex digits (= the file's trailer).
    pub xxh3: String,
    /// The rank's tile (y0, y1, x0, x1).
    pub tile: [i64; 4],
}

/// `manifest.toml`: the checkpoint in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Layout version ([`VERSION`]).
    pub version: u32,
    /// ptytile version that wrote it.
    pub written_by: String,
    /// Completed iterations.
    pub iteration: u64,
    /// Engine name.
    pub engine: String,
    /// Stage of an engine schedule (0 without one).
    pub stage: u64,
    /// Number of ranks (= number of files).
    pub ranks: usize,
    /// Tiles [Ty, Tx].
    pub tiles: [usize; 2],
    /// [`Job::fingerprint`], 16 hex digits.
    pub fingerprint: String,
    /// [`Job::table`].
    pub job: toml::Table,
    /// One entry per rank, in rank order.
    pub files: Vec<FileEntry>,
}

fn hex(v: u64) -> String {
    format!("{v:016x}")
}

fn bincode_cfg() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// A rank file's bytes: magic, bincode payload, XXH3-64 trailer. Returns (bytes, checksum).
pub fn encode(s: &RankSnapshot) -> Result<(Vec<u8>, u64)> {
    let mut b = MAGIC.to_vec();
    bincode::encode_into_std_write(s, &mut b, bincode_cfg())
        .ctx(|| format!("checkpoint of rank {}", s.rank))?;
    let h = xxh3_64(&b);
    b.extend_from_slice(&h.to_le_bytes());
    Ok((b, h))
}

/// Check and decode a rank file's bytes (`what` names it in errors). Returns the snapshot
/// and the file's checksum.
///
/// Errors: too short, wrong magic, checksum mismatch (a torn or corrupted file), payload
/// that does not decode.
pub fn decode(what: &str, b: &[u8]) -> Result<(RankSnapshot, u64)> {
    if b.len() < MAGIC.len() + 8 || &b[..MAGIC.len()] != MAGIC {
        return Err(Error::new(what, "not a ptytile checkpoint rank file"));
    }
    let (body, tail) = b.split_at(b.len() - 8);
    let h = xxh3_64(body);
    let stored = u64::from_le_bytes(tail.try_into().expect("8 bytes"));
    if h != stored {
        return Err(Error::new(
            what,
            format!(
                "checksum mismatch (file {}, computed {}): corrupt or incomplete",
                hex(stored),
                hex(h)
            ),
        ));
    }
    let (s, used): (RankSnapshot, usize) =
        bincode::decode_from_slice(&body[MAGIC.len()..], bincode_cfg()).ctx(|| what.to_string())?;
    if used != body.len() - MAGIC.len() {
        return Err(Error::new(what, "trailing bytes after the snapshot"));
    }
    Ok((s, h))
}

/// Name of the directory of iteration `it` inside a checkpoint directory.
pub fn iteration_dir(it: u64) -> String {
    format!("it-{it:08}")
}

/// Write this rank's snapshot and, on rank 0, the manifest that makes the checkpoint
/// complete (see the module docs for the protocol). Collective: every rank calls it at the
/// same iteration boundary with the same `dir` and `job`.
///
/// Returns the manifest path. Errors: an I/O failure (naming the file), or a rank's
/// entry missing on rank 0.
pub fn save(comm: &mut dyn Comm, dir: &Path, job: &Job, snap: &RankSnapshot) -> Result<PathBuf> {
    let sub = iteration_dir(snap.iteration);
    let rel = format!("{sub}/rank-{:05}.ckpt", snap.rank);
    let sub_path = dir.join(&sub);
    std::fs::create_dir_all(&sub_path).ctx(|| sub_path.display().to_string())?;
    let (bytes, h) = encode(snap)?;
    let file = dir.join(&rel);
    if file.exists() && !has_magic(&file) {
        return Err(Error::new(file.display().to_string(), "exists and is not a ptytile checkpoint file; ptytile writes over no file it did not create"));
    }
    super::write_atomic(&file, &bytes)?;
    let entry = FileEntry {
        rank: snap.rank as usize,
        path: rel,
        bytes: bytes.len() as u64,
        xxh3: hex(h),
        tile: snap.tile,
    };
    let enc =
        bincode::encode_to_vec(&entry, bincode_cfg()).ctx(|| "checkpoint entry".to_string())?;
    let manifest_path = dir.join(MANIFEST);
    let Some(all) = comm.gather(enc)? else {
        return Ok(manifest_path);
    };
    let mut files = Vec::with_capacity(all.len());
    for (r, b) in all.iter().enumerate() {
        let (e, _): (FileEntry, usize) = bincode::decode_from_slice(b, bincode_cfg())
            .ctx(|| format!("checkpoint entry of rank {r}"))?;
        if e.rank != r {
            return Err(Error::new(
                format!("checkpoint entry of rank {r}"),
                format!("names rank {}", e.rank),
            ));
        }
        files.push(e);
    }
    let m = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        written_by: format!("ptytile {}", env!("CARGO_PKG_VERSION")),
        iteration: snap.iteration,
        engine: snap.engine.clone(),
        stage: snap.stage,
        ranks: job.ranks,
        tiles: job.tiles,
        fingerprint: hex(job.fingerprint()),
        job: job.table.clone(),
        files,
    };
    let text = toml::to_string(&m).ctx(|| manifest_path.display().to_string())?;
    if manifest_path.exists()
        && !std::fs::read_to_string(&manifest_path)
            .is_ok_and(|t| t.starts_with(&format!("format = \"{FORMAT}\"")))
    {
        return Err(Error::new(manifest_path.display().to_string(), "exists and is not a ptytile checkpoint manifest; ptytile writes over no file it did not create"));
    }
    super::write_atomic(&manifest_path, text.as_bytes())?;
    prune(dir, &m);
    Ok(manifest_path)
}

/// Whether `name` is one of the iteration directories [`save`] creates: `it-` and at least
/// 8 digits.
pub fn is_iteration_dir(name: &str) -> bool {
    name.strip_prefix("it-")
        .is_some_and(|d| d.len() >= 8 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `name` is a rank file name [`save`] writes (`rank-<digits>.ckpt`), or, with
/// `temp`, its temporary name (`.rank-<digits>.ckpt.tmp-<pid>`).
fn is_rank_name(name: &str, temp: bool) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let base = if temp {
        match name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")) {
            Some((b, pid)) if digits(pid) => b,
            _ => return false,
        }
    } else {
        name
    };
    base.strip_prefix("rank-")
        .and_then(|r| r.strip_suffix(".ckpt"))
        .is_some_and(digits)
}

/// Whether the file at `path` starts with [`MAGIC`] (a rank file ptytile wrote).
fn has_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
        && &b == MAGIC
}

/// Remove what ptytile wrote and the manifest `m` no longer names, and nothing else: in each
/// iteration directory (`it-<digits>`) other than the manifest's, rank files (by name and
/// magic) and their temporary files, then the directory if that left it empty; in the
/// manifest's own, temporary rank files and rank files it does not name; temporary
/// manifests. A directory holding anything else is left in place (with a warning). Failures
/// are only logged: the checkpoint in force is already complete.
fn prune(dir: &Path, m: &Manifest) {
    let keep = iteration_dir(m.iteration);
    let named: Vec<&str> = m
        .files
        .iter()
        .filter_map(|f| f.path.split('/').nth(1))
        .collect();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let warn = |path: &Path, err: &dyn std::fmt::Display| {
        tracing::warn!(
            "checkpoint {}: left {} in place: {err}",
            dir.display(),
            path.display()
        )
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && is_iteration_dir(&name) {
            let Ok(inner) = std::fs::read_dir(&path) else {
                continue;
            };
            for f in inner.flatten() {
                let fname = f.file_name().to_string_lossy().into_owned();
                let fpath = f.path();
                let is_file = f.file_type().is_ok_and(|t| t.is_file());
                let stale_rank = is_rank_name(&fname, false)
                    && (name != keep || !named.contains(&fname.as_str()))
                    && has_magic(&fpath);
                if is_file && (stale_rank || is_rank_name(&fname, true)) {
                    if let Err(err) = std::fs::remove_file(&fpath) {
                        warn(&fpath, &err);
                    }
                }
            }
            if name != keep {
                if let Err(err) = std::fs::remove_dir(&path) {
                    warn(
                        &path,
                        &format!("it holds files ptytile did not write ({err})"),
                    );
                }
            }
        } else if !is_dir
            && name
                .strip_prefix(&format!(".{MANIFEST}.tmp-"))
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
        {
            if let Err(err) = std::fs::remove_file(&path) {
                warn(&path, &err);
            }
        }
    }
}

/// Read and check `DIR/manifest.toml`: it exists, parses, is of this format and version,
/// and lists one file per rank in rank order.
///
/// Errors (naming the directory or manifest): no such directory, no manifest (no complete
/// checkpoint), unparsable or inconsistent manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let d = dir.display().to_string();
    if !dir.is_dir() {
        return Err(Error::new(d, "no such checkpoint directory"));
    }
    let path = dir.join(MANIFEST);
    let what = path.display().to_string();
    super::safety::check_input(&path)?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::new(
                what,
                "missing: the directory holds no complete checkpoint",
            ))
        }
        Err(e) => return Err(Error::new(what, e.to_string())),
    };
    let m: Manifest = toml::from_str(&text)
        .map_err(|e| Error::new(&what, format!("not a checkpoint manifest: {}", e.message())))?;
    if m.format != FORMAT || m.version != VERSION {
        return Err(Error::new(
            what,
            format!(
                "format '{}' version {}, expected '{FORMAT}' version {VERSION}",
                m.format, m.version
            ),
        ));
    }
    if m.files.len() != m.ranks || m.files.iter().enumerate().any(|(r, f)| f.rank != r) {
        return Err(Error::new(
            what,
            format!(
                "lists {} files for {} ranks (one per rank, in rank order, expected)",
                m.files.len(),
                m.ranks
            ),
        ));
    }
    Ok(m)
}

/// Read rank `rank`'s file of the checkpoint `m` in `dir`, verifying its size and checksum
/// against the manifest and its own trailer, and that it is the file the manifest says.
///
/// Errors (naming the file): missing, wrong size, checksum mismatch, undecodable, or
/// disagreeing with the manifest (rank, iteration, engine, tile, fingerprint).
pub fn read_rank(dir: &Path, m: &Manifest, rank: usize) -> Result<RankSnapshot> {
    let e = m.files.get(rank).ok_or_else(|| {
        Error::new(
            dir.join(MANIFEST).display().to_string(),
            format!("no file for rank {rank}"),
        )
    })?;
    let path = dir.join(&e.path);
    let what = path.display().to_string();
    super::safety::check_input(&path)?;
    let b = std::fs::read(&path).ctx(|| what.clone())?;
    if b.len() as u64 != e.bytes {
        return Err(Error::new(
            what,
            format!("{} bytes, the manifest says {}", b.len(), e.bytes),
        ));
    }
    let (s, h) = decode(&what, &b)?;
    if hex(h) != e.xxh3 {
        return Err(Error::new(
            what,
            format!("checksum {} but the manifest says {}", hex(h), e.xxh3),
        ));
    }
    if s.rank as usize != rank
        || s.iteration != m.iteration
        || s.engine != m.engine
        || s.tile != e.tile
        || hex(s.fingerprint) != m.fingerprint
    {
        return Err(Error::new(what, "does not belong to this manifest (rank, iteration, engine, tile or fingerprint differ)"));
    }
    Ok(s)
}

/// Check every file of the checkpoint in `dir` (as [`read_rank`] does); returns its manifest.
pub fn verify(dir: &Path) -> Result<Manifest> {
    let m = read_manifest(dir)?;
    for r in 0..m.ranks {
        read_rank(dir, &m, r)?;
    }
    Ok(m)
}

/// Refuse to resume the job `job` from the checkpoint `m` unless they agree on the rank
/// count, tiles, engine and every key of the job table.
///
/// Errors (naming the manifest) say what differs, e.g. `written by 4 ranks, this job has 2`
/// or `reconstruction.noise_model was "poisson" when the checkpoint was written, now "amplitude"`.
pub fn check_job(dir: &Path, m: &Manifest, job: &Job) -> Result<()> {
    check_ranks(dir, m, job.ranks)?;
    let what = dir.join(MANIFEST).display().to_string();
    if m.tiles != job.tiles {
        return Err(Error::new(
            what,
            format!(
                "written with {}x{} tiles, this job has {}x{}",
                m.tiles[0], m.tiles[1], job.tiles[0], job.tiles[1]
            ),
        ));
    }
    if m.engine != job.engine {
        return Err(Error::new(
            what,
            format!(
                "written by engine '{}', this job runs '{}'",
                m.engine, job.engine
            ),
        ));
    }
    let (a, b) = (flatten(&m.job), flatten(&job.table));
    for key in a.keys().chain(b.keys()) {
        let (x, y) = (a.get(key), b.get(key));
        if x != y {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "unset".into());
            return Err(Error::new(
                what,
                format!(
                    "{key} was {} when the checkpoint was written, now {}",
                    show(x),
                    show(y)
                ),
            ));
        }
    }
    if m.fingerprint != hex(job.fingerprint()) {
        return Err(Error::new(
            what,
            format!(
                "job fingerprint {} differs from this job's {}",
                m.fingerprint,
                hex(job.fingerprint())
            ),
        ));
    }
    Ok(())
}

/// Refuse a checkpoint written by another number of ranks than `ranks`.
pub fn check_ranks(dir: &Path, m: &Manifest, ranks: usize) -> Result<()> {
    if m.ranks != ranks {
        let what = dir.join(MANIFEST).display().to_string();
        return Err(Error::new(
            what,
            format!(
                "written by {} ranks, this job has {ranks} (resume with the same rank count)",
                m.ranks
            ),
        ));
    }
    Ok(())
}

/// Dotted keys → TOML text of the leaf values.
pub(crate) fn flatten(t: &toml::Table) -> BTreeMap<String, String> {
    fn walk(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, String>) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(inner) => walk(&key, inner, out),
                other => {
                    out.insert(key, other.to_string());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", t, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_complex::Complex32;

    fn job() -> Job {
        let table: toml::Table = "[reconstruction]\nnoise_model = \"poisson\"\nstep = 1.0\n[parallel]\nmode = \"tiled\"\n".parse().unwrap();
        Job {
            ranks: 2,
            tiles: [1, 2],
            engine: "gd".into(),
            table,
        }
    }

    fn snap(rank: u64, it: u64, job: &Job) -> RankSnapshot {
        RankSnapshot {
            rank,
            iteration: it,
            engine: "gd".into(),
            stage: 0,
            fingerprint: job.fingerprint(),
            tile: [0, 4, 4 * rank as i64, 4 * rank as i64 + 4],
            data_xxh3: 7,
            arrays: vec![
                NamedArray::new(
                    "object",
                    &[2, 3],
                    &[Complex32::new(rank as f32, it as f32); 6],
                ),
                NamedArray::new("loss", &[it as usize], &vec![1.5f64; it as usize]),
            ],
        }
    }

    fn save_all(dir: &Path, it: u64) {
        let j = job();
        crate::comm::run_threads(2, |mut c| {
            let s = snap(c.rank() as u64, it, &j);
            save(&mut c, dir, &j, &s).map(|_| ())
        })
        .unwrap();
    }

    #[test]
    fn encode_decode_and_corruption() {
        let j = job();
        let s = snap(1, 3, &j);
        let (b, h) = encode(&s).unwrap();
        assert_eq!(decode("f", &b).unwrap(), (s, h));
        for i in [0, 9, b.len() / 2, b.len() - 1] {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(decode("f", &c).is_err(), "flipped byte {i} undetected");
        }
        assert!(decode("f", &b[..b.len() - 3])
            .unwrap_err()
            .msg
            .contains("checksum"));
        assert_eq!(
            decode("f", b"PTY").unwrap_err().to_string(),
            "f: not a ptytile checkpoint rank file"
        );
    }

    #[test]
    fn save_verify_prune_and_resume_checks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("ck");
        save_all(&d, 2);
        // a stray temporary file and a stale directory of a killed writer
        std::fs::write(d.join("it-00000002/.rank-00001.ckpt.tmp-99"), b"half").unwrap();
        std::fs::create_dir_all(d.join("it-00000009")).unwrap();
        save_all(&d, 4);
        let m = verify(&d).unwrap();
        assert_eq!((m.iteration, m.ranks, m.tiles), (4, 2, [1, 2]));
        assert_eq!(m.files[1].path, "it-00000004/rank-00001.ckpt");
        let mut names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["it-00000004", "manifest.toml"]);
        assert_eq!(std::fs::read_dir(d.join("it-00000004")).unwrap().count(), 2);
        let s = read_rank(&d, &m, 1).unwrap();
        assert_eq!(s, snap(1, 4, &job()));
        check_job(&d, &m, &job()).unwrap();

        let mut other = job();
        other.ranks = 4;
        assert!(check_job(&d, &m, &other)
            .unwrap_err()
            .msg
            .starts_with("written by 2 ranks, this job has 4"));
        let mut other = job();
        other
            .table
            .get_mut("reconstruction")
            .unwrap()
            .as_table_mut()
            .unwrap()
            .insert("noise_model".into(), "amplitude".into());
        assert_eq!(
            check_job(&d, &m, &other).unwrap_err().msg,
            "reconstruction.noise_model was \"poisson\" when the checkpoint was written, now \"amplitude\""
        );

        // a corrupted rank file is refused, naming it
        let f = d.join("it-00000004/rank-00000.ckpt");
        let mut b = std::fs::read(&f).unwrap();
        let n = b.len();
        b[n / 2] ^= 1;
        std::fs::write(&f, &b).unwrap();
        let e = verify(&d).unwrap_err();
        assert!(
            e.what.ends_with("rank-00000.ckpt") && e.msg.contains("checksum"),
            "{e}"
        );
    }

    #[test]
    fn manifest_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_manifest(&dir.path().join("nope")).unwrap_err();
        assert_eq!(e.msg, "no such checkpoint directory");
        let e = read_manifest(dir.path()).unwrap_err();
        assert!(
            e.what.ends_with("manifest.toml") && e.msg.starts_with("missing"),
            "{e}"
        );
        std::fs::write(dir.path().join(MANIFEST), "format = [").unwrap();
        let e = read_manifest(dir.path()).unwrap_err();
        assert!(e.msg.starts_with("not a checkpoint manifest"), "{e}");
        assert!(!e.to_string().contains('\n'));
    }
}
