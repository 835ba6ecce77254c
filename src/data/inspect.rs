//! `ptytile inspect FILE`: what an HDF5, CXI or `.npy` file holds and how ptytile would
//! read it.

use crate::error::{Error, Result};
use hdf5::types::TypeDescriptor;
use std::fmt::Write;
use std::path::Path;

/// A human-readable report: every group and dataset with shape, dtype and attributes, then
/// a guess of what the file is (ptytile result, ptychography dataset with suggested
/// `[data]` keys, or unknown).
///
/// Errors: missing file, a directory, not HDF5 (naming the path).
pub fn inspect(path: &Path) -> Result<String> {
    let what = path.display().to_string();
    if path.is_dir() {
        return Err(Error::new(&what, "is a directory, not an HDF5 file"));
    }
    if !path.exists() {
        return Err(Error::new(&what, "no such file"));
    }
    crate::output::safety::check_input(path)?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        return Ok(npy_report(path));
    }
    let f = hdf5::File::open(path)
        .map_err(|e| Error::new(&what, format!("cannot open as HDF5 ({e})")))?;
    let mut out = String::new();
    let mut datasets: Vec<(String, Vec<usize>, String)> = Vec::new();
    let _ = writeln!(out, "{what}");
    let mut seen = Vec::new();
    if let Ok(i) = f.loc_info() {
        seen.push(((i.fileno, i.token), "/".to_string()));
    }
    walk(&f, "/", 0, &mut out, &mut datasets, &mut seen);
    let looks = if super::resolve_format(crate::config::DataFormat::Auto, path, Some(&f), "")
        == crate::config::DataFormat::Cxi
    {
        super::cxi::explain(path)
    } else {
        guess(&datasets)
    };
    let _ = writeln!(out, "\nLooks like: {looks}");
    Ok(out)
}

/// What a `.npy` file holds and the config that reads it as a 4D-STEM array.
fn npy_report(path: &Path) -> String {
    let what = path.display().to_string();
    match super::npy::NpyArray::open(path) {
        Err(e) => format!("{what}\n\nLooks like: a file ptytile cannot read: {e}\n"),
        Ok(a) if a.shape.len() == 4 => format!(
            "{what}  {:?} {}\n\nLooks like: a raw 4D-STEM array: a {}x{} scan of {}x{} diffraction patterns [Sy, Sx, Ky, Kx]. Config:\n  [data]\n  file = {what:?}\n  scan_step_angstrom = ...   # or scan_step_m\n  scan_rotation_deg = 0.0\n",
            a.shape, a.dtype, a.shape[0], a.shape[1], a.shape[2], a.shape[3]
        ),
        Ok(a) => format!("{what}  {:?} {}\n\nLooks like: a NumPy array, not a [Sy, Sx, Ky, Kx] 4D-STEM array\n", a.shape, a.dtype),
    }
}

fn dtype_name(t: &TypeDescriptor) -> String {
    match t {
        TypeDescriptor::Compound(c)
            if c.fields.len() == 2 && c.fields[0].name == "r" && c.fields[1].name == "i" =>
        {
            match c.size {
                8 => "complex64".into(),
                16 => "complex128".into(),
                _ => "complex".into(),
            }
        }
        TypeDescriptor::VarLenUnicode
        | TypeDescriptor::VarLenAscii
        | TypeDescriptor::FixedAscii(_)
        | TypeDescriptor::FixedUnicode(_) => "string".into(),
        other => other.to_string(),
    }
}

fn attrs(loc: &hdf5::Location, indent: usize, out: &mut String) {
    for name in loc.attr_names().unwrap_or_default() {
        let Ok(a) = loc.attr(&name) else { continue };
        let shape = a.shape();
        let n: usize = shape.iter().product();
        let val = if let Ok(v) = a.read_raw::<f64>() {
            if n <= 8 {
                format!("{v:?}")
            } else {
                format!("{n} values")
            }
        } else if let Ok(s) = a.read_scalar::<hdf5::types::VarLenUnicode>() {
            let s = s.as_str().replace('\n', " ");
            if s.chars().count() > 80 {
                format!("\"{}…\"", s.chars().take(80).collect::<String>())
            } else {
                format!("\"{s}\"")
            }
        } else if let Ok(s) = a.read_scalar::<hdf5::types::VarLenAscii>() {
            format!("\"{}\"", s.as_str().chars().take(80).collect::<String>())
        } else {
            "(unreadable)".into()
        };
        let _ = writeln!(out, "{:indent$}  @{name} = {val}", "", indent = indent);
    }
}

/// Groups already shown: (file number, object token) and the path they were shown under.
type Seen = Vec<((u64, hdf5::LocationToken), String)>;

/// List `g` (at `path`) and, recursively, its members. Each group is descended into once: a
/// second link to it (a hard or soft link back up the tree, a cycle) is listed with the path
/// it was shown under, so a file whose links form a cycle is still listed in finite time.
fn walk(
    g: &hdf5::Group,
    path: &str,
    depth: usize,
    out: &mut String,
    ds: &mut Vec<(String, Vec<usize>, String)>,
    seen: &mut Seen,
) {
    let ind = 2 * depth;
    attrs(g, ind, out);
    let Ok(names) = g.member_names() else { return };
    for name in names {
        let full = if path == "/" {
            format!("/{name}")
        } else {
            format!("{path}/{name}")
        };
        if let Ok(d) = g.dataset(&name) {
            let t = d
                .dtype()
                .and_then(|t| t.to_descriptor())
                .map(|t| dtype_name(&t))
                .unwrap_or_else(|_| "?".into());
            let _ = writeln!(out, "{:ind$}{full}  {:?} {t}", "", d.shape(), ind = ind);
            attrs(&d, ind, out);
            ds.push((full, d.shape(), t));
        } else if let Ok(sub) = g.group(&name) {
            let id = sub.loc_info().ok().map(|i| (i.fileno, i.token));
            if let Some((_, first)) = id.and_then(|id| seen.iter().find(|(s, _)| *s == id)) {
                let _ = writeln!(out, "{:ind$}{full}/  -> the group shown as {first} (a link to it; not listed again)", "", ind = ind);
                continue;
            }
            if let Some(id) = id {
                seen.push((id, full.clone()));
            }
            let _ = writeln!(out, "{:ind$}{full}/", "", ind = ind);
            walk(&sub, &full, depth + 1, out, ds, seen);
        }
    }
}

fn guess(ds: &[(String, Vec<usize>, String)]) -> String {
    let has = |p: &str| ds.iter().any(|d| d.0 == p);
    if has("/object") && has("/probe") && has("/positions_px") {
        return "a ptytile result (object, probe, positions_px); compare it with `ptytile compare`"
            .into();
    }
    let real = |t: &str| {
        t.starts_with("float")
            || t.starts_with("int")
            || t.starts_with("uint")
            || t.starts_with('f')
            || t.starts_with('i')
            || t.starts_with('u')
    };
    for (p, s, t) in ds
        .iter()
        .filter(|d| d.1.len() == 3 && d.1[1] == d.1[2] && real(&d.2))
    {
        if let Some((q, _, _)) = ds
            .iter()
            .find(|d| d.1.len() == 2 && d.1[0] == s[0] && d.1[1] == 2)
        {
            return format!(
                "a ptychography dataset: {} diffraction patterns of {}x{} ({t}) with positions [N, 2]. Config:\n  [data]\n  intensities = \"{p}\"\n  positions = \"{q}\"",
                s[0], s[1], s[2]
            );
        }
    }
    if let Some((p, s, t)) = ds
        .iter()
        .find(|d| d.1.len() == 4 && d.1[2] == d.1[3] && real(&d.2))
    {
        return format!(
            "a raw 4D-STEM array: a {}x{} scan of {}x{} diffraction patterns ({t}). Config:\n  [data]\n  intensities = \"{p}\"\n  scan_step_angstrom = ...   # or scan_step_m\n  scan_rotation_deg = 0.0",
            s[0], s[1], s[2], s[3]
        );
    }
    "unknown to ptytile (no [N, M, M] intensities with [N, 2] positions, no [Sy, Sx, K, K] array, no result datasets)".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbtio3_is_recognised() {
        let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/datasets/pbtio3_thin.h5");
        if !p.exists() {
            eprintln!("SKIPPED: {} not found", p.display());
            return;
        }
        let r = inspect(&p).unwrap();
        assert!(
            r.contains("/data/intensities_poisson_dose1e05  [3364, 128, 128]"),
            "{r}"
        );
        assert!(r.contains("/probe/probe_real  [128, 128] complex64"), "{r}");
        assert!(r.contains("@energy_eV = [300000.0]"), "{r}");
        assert!(
            r.contains("a ptychography dataset: 3364 diffraction patterns of 128x128"),
            "{r}"
        );
    }

    #[test]
    fn errors_name_the_path() {
        let e = inspect(Path::new("/nonexistent/x.h5")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.h5"));
        let d = tempfile::tempdir().unwrap();
        assert!(inspect(d.path()).unwrap_err().msg.contains("directory"));
        let f = d.path().join("t.h5");
        std::fs::write(&f, b"not hdf5").unwrap();
        assert!(inspect(&f).unwrap_err().msg.contains("HDF5"));
    }
}
