//! The output policy (docs/format.md, "What ptytile writes and deletes"), applied wherever
//! ptytile writes a file: the result, its PNG images, checkpoints and their manifest.
//!
//! - Inputs must be regular files: a FIFO, device or socket is refused before it is opened
//!   ([`check_input`]), so that no open blocks.
//! - Nothing is written to or over an input: an output path is resolved the way the write
//!   will resolve it (the deepest existing ancestor canonicalised, the directories still to
//!   be created applied lexically, so `results/../d.h5` is `d.h5` even while `results/` does
//!   not exist), then compared with every input by path and, where it exists, by device and
//!   inode (hard links, symlinks) ([`Inputs::check_output`]).
//! - Temporary files are named `.<name>.tmp-<pid>` (shortened with a hash when that would
//!   exceed 255 bytes, [`temp_name`]); while they exist they are registered ([`Temp`]), and
//!   SIGINT or SIGTERM outside the iteration loop removes them before the process ends
//!   ([`remove_registered_temps`]).

use crate::error::{Error, Result};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

/// Longest file name most file systems accept (bytes).
pub const NAME_MAX: usize = 255;

/// Refuse `path` unless it is a regular file (after following symlinks) or missing (the
/// caller's own open then says so). Checked with `stat`, which never blocks on a FIFO.
///
/// Errors (naming the file): a FIFO, character or block device, or socket.
pub fn check_input(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let t = meta.file_type();
    let kind = if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        return Ok(());
    };
    Err(Error::new(
        path.display().to_string(),
        format!("is {kind}, not a regular file; ptytile reads inputs only from regular files"),
    ))
}

/// Device and inode of an existing file (following symlinks).
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// `path` as a write will reach it: absolute, its deepest existing ancestor canonicalised
/// (symlinks resolved) and the remaining components, which name directories still to be
/// created, applied lexically (`..` after a missing directory returns to its parent).
pub fn resolve(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let comps: Vec<Component> = abs.components().collect();
    // the longest prefix that exists
    let mut k = comps.len();
    let mut base = None;
    while k > 0 {
        let prefix: PathBuf = comps[..k].iter().collect();
        if let Ok(c) = prefix.canonicalize() {
            base = Some(c);
            break;
        }
        k -= 1;
    }
    let mut out = base.unwrap_or_else(|| PathBuf::from("/"));
    for c in &comps[k..] {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The files a run reads, to be kept apart from everything it writes.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    files: Vec<Input>,
}

/// One input: what it is (e.g. `data.file`), the path as given, its resolved path, and its
/// device and inode where it exists.
type Input = (String, PathBuf, PathBuf, Option<(u64, u64)>);

impl Inputs {
    /// Record the inputs `(what, path)` (their identity is taken now).
    pub fn new<'a>(list: impl IntoIterator<Item = (&'a str, &'a Path)>) -> Inputs {
        Inputs {
            files: list
                .into_iter()
                .map(|(w, p)| (w.to_string(), p.to_path_buf(), resolve(p), file_id(p)))
                .collect(),
        }
    }

    /// Refuse to write `out` (named `key` in the error, e.g. `output.path`) when it is one of
    /// the inputs: the same resolved path, or the same device and inode where `out` exists.
    pub fn check_output(&self, key: &str, out: &Path) -> Result<()> {
        let r = resolve(out);
        let id = file_id(&r);
        for (what, p, rp, pid) in &self.files {
            if *rp == r || (id.is_some() && id == *pid) {
                return Err(Error::new(
                    key,
                    format!("{} is {what} ({}); ptytile never writes over its inputs, choose another name", out.display(), p.display()),
                ));
            }
        }
        Ok(())
    }

    /// Refuse a checkpoint directory `dir` that holds an input under a name checkpoints use
    /// (`manifest.toml`, its temporary names, or anything in an `it-<iteration>` directory).
    pub fn check_checkpoint_dir(&self, key: &str, dir: &Path) -> Result<()> {
        let d = resolve(dir);
        for (what, p, rp, _) in &self.files {
            let (Some(parent), Some(name)) = (rp.parent(), rp.file_name().and_then(|n| n.to_str()))
            else {
                continue;
            };
            let in_dir = parent == d
                && (name == super::checkpoint::MANIFEST || name.starts_with(".manifest.toml.tmp-"));
            let in_iteration = parent.parent() == Some(d.as_path())
                && parent
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(super::checkpoint::is_iteration_dir);
            if in_dir || in_iteration {
                return Err(Error::new(
                    key,
                    format!("{} would hold checkpoint files where {what} ({}) is; ptytile never writes over its inputs", dir.display(), p.display()),
                ));
            }
        }
        Ok(())
    }
}

/// `name` cut to at most `max` bytes at a character boundary.
fn cut(name: &str, max: usize) -> &str {
    let mut end = max.min(name.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// `name` if it has at most `max` bytes, else its head and `~` and 16 hex digits of its
/// XXH3-64 (distinct long names stay distinct).
pub fn fit_name(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let h = format!("~{:016x}", xxhash_rust::xxh3::xxh3_64(name.as_bytes()));
    format!("{}{h}", cut(name, max.saturating_sub(h.len())))
}

/// Temporary name beside a file called `name`: `.<name>.tmp-<pid>`, with `name` shortened
/// ([`fit_name`]) so that the whole stays within [`NAME_MAX`] bytes.
pub fn temp_name(name: &str) -> String {
    let suffix = format!(".tmp-{}", std::process::id());
    format!(".{}{suffix}", fit_name(name, NAME_MAX - 1 - suffix.len()))
}

/// Temporary files that exist right now (removed by [`remove_registered_temps`]).
static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A registered temporary file: registered on creation, unregistered on drop (the file
/// itself is renamed or removed by its writer).
#[derive(Debug)]
pub struct Temp(pub PathBuf);

impl Temp {
    /// Register `path` as a temporary file of this process.
    pub fn new(path: PathBuf) -> Temp {
        if let Ok(mut t) = TEMPS.lock() {
            t.push(path.clone());
        }
        Temp(path)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Ok(mut t) = TEMPS.lock() {
            if let Some(i) = t.iter().rposition(|p| *p == self.0) {
                t.swap_remove(i);
            }
        }
    }
}

/// Held while a set of files is renamed into place, so that a signal does not end the
/// process half-way through (see [`remove_registered_temps`]).
pub static COMMIT: Mutex<()> = Mutex::new(());

/// Remove every registered temporary file (on SIGINT/SIGTERM before the process ends);
/// waits for a commit in progress to finish first.
pub fn remove_registered_temps() {
    let _hold = COMMIT.lock();
    if let Ok(t) = TEMPS.lock() {
        for p in t.iter() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_through_missing_directories() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        assert_eq!(resolve(&d.join("results/../d.h5")), d.join("d.h5"));
        assert_eq!(resolve(&d.join("a/b/../../c/./d.h5")), d.join("c/d.h5"));
        std::os::unix::fs::symlink(d.join("x"), d.join("link")).unwrap();
        std::fs::create_dir(d.join("x")).unwrap();
        assert_eq!(resolve(&d.join("link/new/../f")), d.join("x/f"));
    }

    #[test]
    fn temp_names_fit() {
        let long = "a".repeat(250) + ".h5";
        let t = temp_name(&long);
        assert!(
            t.len() <= NAME_MAX && t.starts_with(".aaaa") && t.contains(".tmp-"),
            "{t}"
        );
        assert_ne!(temp_name(&("a".repeat(250) + ".h6")), t);
        assert_eq!(
            temp_name("r.h5"),
            format!(".r.h5.tmp-{}", std::process::id())
        );
        let f = fit_name(&"é".repeat(200), 100);
        assert!(
            f.len() <= 100 && f.starts_with("éé") && f.contains('~'),
            "{f}"
        );
        assert_eq!(cut("aé", 2), "a");
    }
}
