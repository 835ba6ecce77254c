//! Results out: the HDF5 result file (docs/format.md), PNG images beside it, and reading a
//! result back. Every file is written to a temporary name and renamed into place, so a
//! failed run never leaves a half-written output.

use crate::physics::model::Field;
use num_complex::Complex32;

/// A finished reconstruction, everything that goes into the result file.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconResult {
    /// The object O on the global object grid, [Ny, Nx] (y, x); `origin` is [0, 0].
    pub object: Field<Complex32>,
    /// Object pixel size (y, x) in m.
    pub pixel_size_m: [f64; 2],
    /// Probe modes [K, M, M] (mode, y, x), centred at [M/2, M/2], Σ|P|² in counts.
    pub probe: Vec<Complex32>,
    /// Number of probe modes K.
    pub modes: usize,
    /// Probe window side M (px).
    pub m: usize,
    /// Probe centres (y, x) in object pixel coordinates, [N].
    pub positions_px: Vec<[f64; 2]>,
    /// Loss per iteration (mean per diffraction pattern, before that iteration's update).
    pub loss: Vec<f64>,
    /// The full configuration used, as TOML.
    pub config_toml: String,
    /// Further scalar attributes of the root group (name, value), e.g. timings.
    pub attrs: Vec<(String, f64)>,
    /// Indices (ascending, the data file's order) of the patterns left out of the
    /// likelihood as outliers or by `[data] exclude` (`data::select`); root attribute
    /// `excluded_patterns` (uint64 [E], absent when empty).
    pub excluded: Vec<usize>,
    /// Further lists of pattern/frame indices (name, indices), e.g. a live run's
    /// `live_missing_frames`; one root attribute uint64 [E] each, absent when empty.
    pub index_lists: Vec<(String, Vec<usize>)>,
}

pub mod checkpoint;
pub mod hdf5;
pub mod initial;
pub mod plot;
pub mod png;
pub mod safety;

use crate::error::{Context, Error, Result};
use std::path::{Path, PathBuf};

/// Write the result file `path` (HDF5, layout in docs/format.md) and, when `png` is true,
/// the preview images beside it (`<stem>_object_phase.png`, `<stem>_object_amplitude.png`,
/// `<stem>_probe_modes.png`, `<stem>_loss.png`, where `stem` is the file name of `path`
/// without its extension, shortened with a hash where a name would exceed 255 bytes; see
/// [`png`](self::png) for what each shows). Same as [`write_result_checked`] without inputs.
pub fn write_result(path: &Path, r: &ReconResult, png: bool) -> Result<Vec<PathBuf>> {
    write_result_checked(path, r, png, &safety::Inputs::default())
}

/// [`write_result`], refusing to write any of its files to or over one of `inputs`
/// (checked after the parent directory exists, by path and by device and inode).
///
/// Returns every path written, the HDF5 file first. The parent directory is created if
/// missing. All files are first written to hidden temporary names in the same directory
/// (`.<name>.tmp-<pid>`, [`safety::temp_name`]) and then committed as one unit: files of
/// the same names are kept under `.<name>.old-<pid>` until every new file is in place, so
/// on any error either the complete new set or the previous set is left, and no temporary
/// file. Images that would be empty (an object or probe with a zero dimension) are skipped.
pub fn write_result_checked(
    path: &Path,
    r: &ReconResult,
    png: bool,
    inputs: &safety::Inputs,
) -> Result<Vec<PathBuf>> {
    let what = || path.display().to_string();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::new(what(), "not a file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    inputs.check_output("output.path", path)?;
    std::fs::create_dir_all(&dir).ctx(|| dir.display().to_string())?;
    inputs.check_output("output.path", path)?;
    self::hdf5::check(path, r)?;

    let stem = Path::new(name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(name);
    let mut jobs: Vec<(PathBuf, Box<dyn Fn(&Path) -> Result<()> + '_>)> = vec![(
        path.to_path_buf(),
        Box::new(|p: &Path| self::hdf5::write_h5(p, r)),
    )];
    if png {
        for (suffix, img) in self::png::images(r)? {
            let target = dir.join(png_name(stem, suffix));
            inputs.check_output("output.path", &target)?;
            jobs.push((target, Box::new(move |p: &Path| img.write(p))));
        }
    }

    // Phase 1: every file to its temporary name.
    let mut temps: Vec<(safety::Temp, PathBuf)> = Vec::with_capacity(jobs.len());
    for (target, write) in &jobs {
        let tmp = safety::Temp::new(temp_path(target));
        let res = write(&tmp.0);
        let shown = tmp.0.display().to_string();
        temps.push((tmp, target.clone()));
        if let Err(e) = res {
            for (t, _) in &temps {
                let _ = std::fs::remove_file(&t.0);
            }
            // Report the final name, not the temporary one.
            let msg = e.msg.replace(&shown, &target.display().to_string());
            return Err(Error::new(target.display().to_string(), msg));
        }
    }
    // Phase 2: commit all of them, or none.
    let pairs: Vec<(PathBuf, PathBuf)> = temps
        .iter()
        .map(|(t, p)| (t.0.clone(), p.clone()))
        .collect();
    commit(&pairs)?;
    Ok(pairs.into_iter().map(|(_, t)| t).collect())
}

/// Name of the image `suffix` of a result whose file stem is `stem`: `<stem>_<suffix>.png`,
/// the stem shortened ([`safety::fit_name`]) where the name would exceed 255 bytes.
pub fn png_name(stem: &str, suffix: &str) -> String {
    let tail = format!("_{suffix}.png");
    format!(
        "{}{tail}",
        safety::fit_name(stem, safety::NAME_MAX - tail.len())
    )
}

/// Rename each temporary file onto its target as one unit. Existing targets are first
/// linked (or copied) to `.<name>.old-<pid>`; if a rename fails, the targets already
/// renamed get their previous files back (or are removed where there was none), the
/// remaining temporary files are removed, and the error names the target. SIGINT/SIGTERM
/// wait until the commit is over ([`safety::remove_registered_temps`]).
fn commit(pairs: &[(PathBuf, PathBuf)]) -> Result<()> {
    let _hold = safety::COMMIT.lock();
    let mut backups: Vec<Option<safety::Temp>> = Vec::with_capacity(pairs.len());
    let drop_all = |backups: &[Option<safety::Temp>], from: usize| {
        for (t, _) in &pairs[from..] {
            let _ = std::fs::remove_file(t);
        }
        for b in backups.iter().flatten() {
            let _ = std::fs::remove_file(&b.0);
        }
    };
    for (_, target) in pairs {
        let is_file = std::fs::symlink_metadata(target).is_ok_and(|m| m.is_file());
        if !is_file {
            backups.push(None);
            continue;
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let b = safety::Temp::new(
            target.with_file_name(safety::temp_name(&name).replacen(".tmp-", ".old-", 1)),
        );
        let _ = std::fs::remove_file(&b.0);
        if let Err(e) =
            std::fs::hard_link(target, &b.0).or_else(|_| std::fs::copy(target, &b.0).map(|_| ()))
        {
            drop_all(&backups, 0);
            return Err(Error::new(
                target.display().to_string(),
                format!("cannot keep the previous file while writing the new one: {e}"),
            ));
        }
        backups.push(Some(b));
    }
    for (i, (tmp, target)) in pairs.iter().enumerate() {
        if let Err(e) = std::fs::rename(tmp, target) {
            for ((_, done), b) in pairs[..i].iter().zip(&backups) {
                let _ = match b {
                    Some(b) => std::fs::rename(&b.0, done),
                    None => std::fs::remove_file(done),
                };
            }
            drop_all(&backups, i);
            return Err(Error::new(
                target.display().to_string(),
                format!("rename failed: {e}"),
            ));
        }
    }
    for b in backups.iter().flatten() {
        let _ = std::fs::remove_file(&b.0);
    }
    Ok(())
}

/// Read a result file written by [`write_result`] (docs/format.md). The object's `origin`
/// is [0, 0]. Errors name the file and dataset, e.g. `out.h5:/probe: expected rank 3, got 2`.
pub fn read_result(path: &Path) -> Result<ReconResult> {
    self::hdf5::read_h5(path)
}

/// Temporary name beside `path` for atomic writes: `.<name>.tmp-<pid>`, within 255 bytes
/// ([`safety::temp_name`]).
pub fn temp_path(path: &std::path::Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(safety::temp_name(&name))
}

/// Write `bytes` to `path` atomically and durably: temporary file, fsync, rename, fsync of
/// the directory (so that after a crash `path` holds either its old or its new contents).
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> crate::Result<()> {
    use crate::error::Context;
    use std::io::Write;
    let guard = safety::Temp::new(temp_path(path));
    let tmp = &guard.0;
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(tmp, path)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    res.ctx(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small result with distinct values everywhere: object 5×7, 2 probe modes of 4×4.
    pub(crate) fn sample() -> ReconResult {
        let (ny, nx, k, m) = (5, 7, 2, 4);
        let object = Field {
            origin: [0, 0],
            shape: [ny, nx],
            data: (0..ny * nx)
                .map(|i| Complex32::from_polar(1.0 + 0.01 * i as f32, 0.1 * i as f32 - 1.5))
                .collect(),
        };
        let probe = (0..k * m * m)
            .map(|i| Complex32::new(i as f32 * 0.5, -(i as f32) * 0.25))
            .collect();
        ReconResult {
            object,
            pixel_size_m: [1.828e-11, 1.9e-11],
            probe,
            modes: k,
            m,
            positions_px: vec![[2.5, 3.25], [2.75, 3.5], [3.0, 4.125]],
            loss: vec![10.0, 3.5, 1.25, 0.5],
            config_toml: "[data]\nfile = \"a.h5\"\n# ünïcode Å\n".into(),
            attrs: vec![
                ("time_s".into(), 12.5),
                ("a_first_by_name".into(), -3.0),
                ("dose".into(), 1e5),
            ],
            excluded: vec![3, 17],
            index_lists: vec![("live_missing_frames".into(), vec![2, 5])],
        }
    }

    #[test]
    fn round_trip_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/recon.h5");
        let r = sample();
        let written = write_result(&path, &r, false).unwrap();
        assert_eq!(written, vec![path.clone()]);
        let back = read_result(&path).unwrap();
        assert_eq!(back.object.shape, [5, 7]);
        assert_eq!(back.object.origin, [0, 0]);
        assert_eq!(back.object.data, r.object.data);
        assert_eq!(back.pixel_size_m, [1.828e-11, 1.9e-11]);
        assert_eq!((back.modes, back.m), (2, 4));
        assert_eq!(back.probe, r.probe);
        assert_eq!(back.positions_px, r.positions_px);
        assert_eq!(back.loss, vec![10.0, 3.5, 1.25, 0.5]);
        assert_eq!(back.config_toml, r.config_toml);
        assert_eq!(back.excluded, vec![3, 17]);
        assert_eq!(back.attrs, r.attrs, "attrs keep their order");
        assert_eq!(back, r);
        // Only the result is left in the directory: no temporary files.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("recon.h5")]);
    }

    #[test]
    fn empty_loss_and_positions_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.h5");
        let mut r = sample();
        r.loss.clear();
        r.positions_px.clear();
        r.attrs.clear();
        let written = write_result(&path, &r, true).unwrap();
        assert_eq!(written.len(), 5);
        assert_eq!(read_result(&path).unwrap(), r);
    }

    #[test]
    fn pngs_written_beside_with_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recon.h5");
        let r = sample();
        let written = write_result(&path, &r, true).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "recon.h5",
                "recon_object_phase.png",
                "recon_object_amplitude.png",
                "recon_probe_modes.png",
                "recon_loss.png"
            ]
        );
        let dims = |p: &Path| {
            let dec = ::png::Decoder::new(std::io::BufReader::new(std::fs::File::open(p).unwrap()));
            let rd = dec.read_info().unwrap();
            let i = rd.info();
            (i.width, i.height, i.color_type)
        };
        // objects enlarged ×4 (the most), probe modes ×2 under a label strip
        assert_eq!(
            dims(&written[1]),
            (4 * 7, 4 * 5, ::png::ColorType::Grayscale)
        );
        assert_eq!(
            dims(&written[2]),
            (4 * 7, 4 * 5, ::png::ColorType::Grayscale)
        );
        assert_eq!(
            dims(&written[3]),
            (2 * (2 * 4 + 2), 2 * 4 + 26, ::png::ColorType::Rgb)
        );
        assert_eq!(dims(&written[4]), (640, 400, ::png::ColorType::Rgb));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5);
    }

    #[test]
    fn bad_result_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recon.h5");
        let mut r = sample();
        r.attrs.push(("config".into(), 1.0));
        let e = write_result(&path, &r, true).unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
        let mut r = sample();
        r.probe.pop();
        let e = write_result(&path, &r, true).unwrap_err();
        assert!(e.what.ends_with("recon.h5:/probe"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn failed_png_removes_hdf5_temp() {
        // A directory where a PNG should go makes its rename fail after everything was
        // written: nothing new may remain.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recon.h5");
        std::fs::create_dir(dir.path().join("recon_loss.png")).unwrap();
        std::fs::write(dir.path().join("recon_loss.png/x"), b"x").unwrap();
        let e = write_result(&path, &sample(), true).unwrap_err();
        assert!(e.what.ends_with("recon_loss.png"), "{e}");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["recon_loss.png".to_string()]);
    }

    #[test]
    fn missing_dataset_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.h5");
        write_result(&path, &sample(), false).unwrap();
        let f = ::hdf5::File::open_rw(&path).unwrap();
        f.unlink("positions_px").unwrap();
        f.close().unwrap();
        let e = read_result(&path).unwrap_err();
        assert!(e.what.ends_with("out.h5:/positions_px"), "{e}");
        assert_eq!(e.msg, "dataset missing");
    }

    #[test]
    fn wrong_rank_and_type_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.h5");
        write_result(&path, &sample(), false).unwrap();
        let f = ::hdf5::File::open_rw(&path).unwrap();
        f.unlink("probe").unwrap();
        f.new_dataset::<Complex32>()
            .shape([4, 4])
            .create("probe")
            .unwrap();
        f.unlink("loss").unwrap();
        f.new_dataset::<i32>().shape([3]).create("loss").unwrap();
        f.close().unwrap();
        let e = read_result(&path).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("out.h5:/probe: expected rank 3, got 2 (shape [4, 4])"),
            "{e}"
        );
        let f = ::hdf5::File::open_rw(&path).unwrap();
        f.unlink("probe").unwrap();
        f.new_dataset::<Complex32>()
            .shape([1, 4, 4])
            .create("probe")
            .unwrap();
        f.close().unwrap();
        let e = read_result(&path).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("out.h5:/loss: expected float64, got int32"),
            "{e}"
        );
    }

    #[test]
    fn read_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.h5");
        let e = read_result(&missing).unwrap_err();
        assert!(e.what.ends_with("nope.h5"), "{e}");
        let text = dir.path().join("text.h5");
        std::fs::write(&text, "hello").unwrap();
        let e = read_result(&text).unwrap_err();
        assert_eq!(e.msg, "not an HDF5 file", "{e}");
        let e = read_result(dir.path()).unwrap_err();
        assert!(e.msg.contains("directory"), "{e}");
    }
}
