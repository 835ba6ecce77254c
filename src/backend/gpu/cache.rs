//! The compiled kernels' cache on disk (and in memory per process).

use crate::error::Result;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Where compiled kernels are cached on disk: `$PTYTILE_KERNEL_CACHE`, else
/// `$XDG_CACHE_HOME/ptytile/kernels`, else `~/.cache/ptytile/kernels`; `None` (no disk
/// cache) when none is set or `PTYTILE_KERNEL_CACHE` is empty.
pub fn cache_dir() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    match std::env::var_os("PTYTILE_KERNEL_CACHE") {
        Some(d) if d.is_empty() => None,
        Some(d) => Some(PathBuf::from(d)),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("ptytile").join("kernels")),
    }
}

/// The cache key of a compilation: XXH3-64 of the source, the options, the target
/// architecture and the compiler version, NUL-separated.
pub fn cache_key(source: &str, options: &[String], arch: &str, compiler: &str) -> u64 {
    let mut text = String::with_capacity(source.len() + 256);
    text.push_str(source);
    for part in options.iter().map(String::as_str).chain([arch, compiler]) {
        text.push('\0');
        text.push_str(part);
    }
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// Compiled code for `key`: from this process's memory, else from the disk cache
/// ([`cache_dir`]), else from `compile` (then stored in both). Disk-cache failures only cost
/// a recompilation.
pub fn cached(
    key: u64,
    ext: &str,
    compile: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<Arc<Vec<u8>>> {
    cached_in(cache_dir().as_deref(), key, ext, compile)
}

/// [`cached`] with the disk-cache folder given (`None`: memory only).
pub fn cached_in(
    dir: Option<&std::path::Path>,
    key: u64,
    ext: &str,
    compile: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<Arc<Vec<u8>>> {
    static MEM: OnceLock<Mutex<HashMap<u64, Arc<Vec<u8>>>>> = OnceLock::new();
    let mem = MEM.get_or_init(Default::default);
    if let Some(c) = mem.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(c);
    }
    let file = dir.map(|d| d.join(format!("{key:016x}.{ext}")));
    let code = match file
        .as_ref()
        .and_then(|f| std::fs::read(f).ok())
        .filter(|c| !c.is_empty())
    {
        Some(c) => c,
        None => {
            let c = compile()?;
            if let Some(f) = &file {
                if let Err(e) = store(f, &c) {
                    tracing::debug!("kernel cache {}: {e}", f.display());
                }
            }
            c
        }
    };
    let code = Arc::new(code);
    if let Ok(mut m) = mem.lock() {
        m.insert(key, code.clone());
    }
    Ok(code)
}

/// Write `data` to `path` through a temporary file in the same folder and a rename, so that
/// concurrent ranks never read a half-written file.
fn store(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("kernel"),
        std::process::id()
    ));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_change_with_every_part_and_disk_cache_round_trips() {
        let o = vec!["-a".to_string()];
        let k = cache_key("src", &o, "sm_90", "nvrtc 12.9");
        assert_ne!(k, cache_key("src2", &o, "sm_90", "nvrtc 12.9"));
        assert_ne!(k, cache_key("src", &["-b".into()], "sm_90", "nvrtc 12.9"));
        assert_ne!(k, cache_key("src", &o, "sm_80", "nvrtc 12.9"));
        assert_ne!(k, cache_key("src", &o, "sm_90", "nvrtc 13.0"));
        let dir = tempfile::tempdir().unwrap();
        // the in-memory cache answers the second time without compiling; the disk cache
        // holds the code under the key
        let key = cache_key(&format!("{:?}", dir.path()), &o, "t", "t");
        let a = cached_in(Some(dir.path()), key, "bin", || Ok(b"one".to_vec())).unwrap();
        let b = cached_in(Some(dir.path()), key, "bin", || panic!("compiled twice")).unwrap();
        assert_eq!((a.as_slice(), b.as_slice()), (&b"one"[..], &b"one"[..]));
        assert_eq!(
            std::fs::read(dir.path().join(format!("{key:016x}.bin"))).unwrap(),
            b"one"
        );
        // a fresh key finds the file written by another process
        let key2 = key ^ 1;
        store(&dir.path().join(format!("{key2:016x}.bin")), b"two").unwrap();
        assert_eq!(
            cached_in(Some(dir.path()), key2, "bin", || panic!(
                "not read from disk"
            ))
            .unwrap()
            .as_slice(),
            b"two"
        );
    }
}
