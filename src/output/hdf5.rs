//! The HDF5 result file (docs/format.md): writing and reading [`ReconResult`].
//!
//! Layout: `/object` complex64 [Ny, Nx] ([S, Ny, Nx] for S > 1 slices, slice 0 at the beam
//! entrance) with attribute `pixel_size_m` float64 [2] (y, x);
//! `/probe` complex64 [K, M, M]; `/positions_px` float64 [N, 2] (y, x); `/loss` float64
//! [iterations]; root attributes `ptytile_version` and `config` (variable-length UTF-8
//! strings), one float64 scalar per entry of [`ReconResult::attrs`], `excluded_patterns`
//! uint64 [E] (the [`ReconResult::excluded`] patterns, absent when none), and one uint64
//! [E] per non-empty entry of [`ReconResult::index_lists`].

use super::ReconResult;
use crate::error::{Context, Error, Result};
use crate::physics::model::Field;
use ::hdf5::plist::file_create::AttrCreationOrder;
use ::hdf5::types::{TypeDescriptor, VarLenAscii, VarLenUnicode};
use ::hdf5::{File, IndexType, IterationOrder, Location};
use num_complex::Complex32;
use std::path::Path;
use std::str::FromStr;

/// Root attribute holding the ptytile version string.
pub const ATTR_VERSION: &str = "ptytile_version";
/// Root attribute holding the configuration TOML.
pub const ATTR_CONFIG: &str = "config";
/// Root attribute holding the indices of the patterns left out of the likelihood.
pub const ATTR_EXCLUDED: &str = "excluded_patterns";

/// Check that `r` is self-consistent (array lengths match the shapes, attribute names are
/// unique and not reserved) before anything is written to `path`.
pub(super) fn check(path: &Path, r: &ReconResult) -> Result<()> {
    let what = |ds: &str| format!("{}:{ds}", path.display());
    let [ny, nx] = r.object.shape;
    let n = r.object.data.len();
    if if ny * nx == 0 {
        n != 0
    } else {
        n == 0 || n % (ny * nx) != 0
    } {
        return Err(Error::new(
            what("/object"),
            format!(
                "shape {ny}x{nx} needs a multiple of {} values, have {}",
                ny * nx,
                r.object.data.len()
            ),
        ));
    }
    if r.probe.len() != r.modes * r.m * r.m {
        return Err(Error::new(
            what("/probe"),
            format!(
                "{} modes of {}x{} need {} values, have {}",
                r.modes,
                r.m,
                r.m,
                r.modes * r.m * r.m,
                r.probe.len()
            ),
        ));
    }
    let names: Vec<&String> = r
        .attrs
        .iter()
        .map(|(n, _)| n)
        .chain(r.index_lists.iter().map(|(n, _)| n))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let name = *name;
        if name.is_empty() || name == ATTR_VERSION || name == ATTR_CONFIG || name == ATTR_EXCLUDED {
            return Err(Error::new(
                what("/"),
                format!("attribute name {name:?} is reserved"),
            ));
        }
        if names[..i].contains(&name) {
            return Err(Error::new(
                what("/"),
                format!("attribute {name:?} given twice"),
            ));
        }
    }
    Ok(())
}

fn vlu(path: &Path, name: &str, s: &str) -> Result<VarLenUnicode> {
    VarLenUnicode::from_str(s).ctx(|| format!("{}:/ attribute {name}", path.display()))
}

fn write_str_attr(loc: &Location, path: &Path, name: &str, s: &str) -> Result<()> {
    let v = vlu(path, name, s)?;
    let what = || format!("{}:/ attribute {name}", path.display());
    let a = loc
        .new_attr::<VarLenUnicode>()
        .shape(())
        .create(name)
        .ctx(what)?;
    a.write_scalar(&v).ctx(what)
}

/// Create dataset `name` of `shape` holding `data` (row-major, `data.len()` = product of
/// `shape`; zero-length axes allowed).
fn write_ds<T: ::hdf5::H5Type>(
    file: &File,
    what: &str,
    name: &str,
    shape: &[usize],
    data: &[T],
) -> Result<()> {
    file.new_dataset::<T>()
        .shape(shape)
        .create(name)
        .and_then(|d| d.write_raw(data))
        .ctx(|| what.to_string())
}

/// Write `r` to the HDF5 file `path` (created or truncated), layout as in the module docs.
/// Does not check consistency; [`check`] first.
pub(super) fn write_h5(path: &Path, r: &ReconResult) -> Result<()> {
    let p = path.display().to_string();
    let what = |ds: &str| format!("{p}:{ds}");
    let file = File::with_options()
        .with_fcpl(|c| c.attr_creation_order(AttrCreationOrder::Indexed))
        .create(path)
        .ctx(|| p.clone())?;

    let [ny, nx] = r.object.shape;
    // [Ny, Nx] for one slice, [S, Ny, Nx] (slice 0 = beam entrance) for a multislice object
    let dims: Vec<usize> = if r.object.planes() > 1 {
        vec![r.object.planes(), ny, nx]
    } else {
        vec![ny, nx]
    };
    write_ds(&file, &what("/object"), "object", &dims, &r.object.data)?;
    let ds = file.dataset("object").ctx(|| what("/object"))?;
    ds.new_attr::<f64>()
        .shape(2)
        .create("pixel_size_m")
        .and_then(|a| a.write_raw(&r.pixel_size_m[..]))
        .ctx(|| what("/object attribute pixel_size_m"))?;
    write_ds(
        &file,
        &what("/probe"),
        "probe",
        &[r.modes, r.m, r.m],
        &r.probe,
    )?;
    let flat: Vec<f64> = r.positions_px.iter().flat_map(|c| [c[0], c[1]]).collect();
    write_ds(
        &file,
        &what("/positions_px"),
        "positions_px",
        &[r.positions_px.len(), 2],
        &flat,
    )?;
    write_ds(&file, &what("/loss"), "loss", &[r.loss.len()], &r.loss)?;

    write_str_attr(&file, path, ATTR_VERSION, env!("CARGO_PKG_VERSION"))?;
    write_str_attr(&file, path, ATTR_CONFIG, &r.config_toml)?;
    for (name, v) in &r.attrs {
        file.new_attr::<f64>()
            .shape(())
            .create(name.as_str())
            .and_then(|a| a.write_scalar(v))
            .ctx(|| format!("{p}:/ attribute {name}"))?;
    }
    if !r.excluded.is_empty() {
        let e: Vec<u64> = r.excluded.iter().map(|&j| j as u64).collect();
        file.new_attr::<u64>()
            .shape(e.len())
            .create(ATTR_EXCLUDED)
            .and_then(|a| a.write_raw(&e))
            .ctx(|| format!("{p}:/ attribute {ATTR_EXCLUDED}"))?;
    }
    for (name, list) in r.index_lists.iter().filter(|(_, l)| !l.is_empty()) {
        let e: Vec<u64> = list.iter().map(|&j| j as u64).collect();
        file.new_attr::<u64>()
            .shape(e.len())
            .create(name.as_str())
            .and_then(|a| a.write_raw(&e))
            .ctx(|| format!("{p}:/ attribute {name}"))?;
    }
    file.close().ctx(|| p.clone())
}

/// Open an existing HDF5 file read-only, with a one-line error naming `path` when it is
/// missing, a directory or not HDF5.
pub fn open(path: &Path) -> Result<File> {
    let p = || path.display().to_string();
    let meta = std::fs::metadata(path).ctx(p)?;
    if meta.is_dir() {
        return Err(Error::new(p(), "is a directory, not an HDF5 file"));
    }
    super::safety::check_input(path)?;
    File::open(path).map_err(|e| {
        let s = e.to_string();
        if s.contains("signature") {
            Error::new(p(), "not an HDF5 file")
        } else {
            Error::new(p(), s)
        }
    })
}

/// Whether a type is complex in h5py's sense: a compound {r, i} of two equal floats.
/// Returns the float size in bytes (4 for complex64, 8 for complex128).
pub(crate) fn complex_size(td: &TypeDescriptor) -> Option<usize> {
    if let TypeDescriptor::Compound(c) = td {
        if c.fields.len() == 2 && c.fields[0].name == "r" && c.fields[1].name == "i" {
            if let (TypeDescriptor::Float(a), TypeDescriptor::Float(b)) =
                (&c.fields[0].ty, &c.fields[1].ty)
            {
                if a == b {
                    return Some(c.fields[0].ty.size());
                }
            }
        }
    }
    None
}

/// A short dtype name: numpy-style for numbers, `complex64`/`complex128` for h5py complex,
/// `string` for every string type.
pub(crate) fn dtype_name(td: &TypeDescriptor) -> String {
    match td {
        TypeDescriptor::VarLenAscii
        | TypeDescriptor::VarLenUnicode
        | TypeDescriptor::FixedAscii(_)
        | TypeDescriptor::FixedUnicode(_) => "string".into(),
        _ => match complex_size(td) {
            Some(n) => format!("complex{}", 16 * n),
            None => td.to_string(),
        },
    }
}

enum Kind {
    Complex,
    Float,
}

/// Open dataset `name`, check its rank (and, if `dims` entries are `Some`, its extents) and
/// element kind, and read it row-major.
fn read_ds<T: ::hdf5::H5Type>(
    file: &File,
    path: &Path,
    name: &str,
    kind: Kind,
    dims: &[Option<usize>],
) -> Result<(Vec<usize>, Vec<T>)> {
    let what = || format!("{}:/{name}", path.display());
    let ds = file
        .dataset(name)
        .map_err(|_| Error::new(what(), "dataset missing"))?;
    let shape = ds.shape();
    if shape.len() != dims.len() {
        return Err(Error::new(
            what(),
            format!(
                "expected rank {}, got {} (shape {shape:?})",
                dims.len(),
                shape.len()
            ),
        ));
    }
    for (ax, (want, got)) in dims.iter().zip(&shape).enumerate() {
        if let Some(w) = want {
            if w != got {
                return Err(Error::new(
                    what(),
                    format!("expected {w} along axis {ax}, got shape {shape:?}"),
                ));
            }
        }
    }
    let td = ds.dtype().and_then(|t| t.to_descriptor()).ctx(what)?;
    let ok = match kind {
        Kind::Complex => complex_size(&td).is_some(),
        Kind::Float => matches!(td, TypeDescriptor::Float(_)),
    };
    if !ok {
        let want = match kind {
            Kind::Complex => "complex64",
            Kind::Float => "float64",
        };
        return Err(Error::new(
            what(),
            format!("expected {want}, got {}", dtype_name(&td)),
        ));
    }
    let data = ds.read_raw::<T>().ctx(what)?;
    Ok((shape, data))
}

fn read_str_attr(file: &File, path: &Path, name: &str) -> Result<String> {
    let what = || format!("{}:/ attribute {name}", path.display());
    let a = file
        .attr(name)
        .map_err(|_| Error::new(what(), "attribute missing"))?;
    let td = a.dtype().and_then(|t| t.to_descriptor()).ctx(what)?;
    if !a.is_scalar() {
        return Err(Error::new(
            what(),
            format!("expected a scalar string, got shape {:?}", a.shape()),
        ));
    }
    match td {
        TypeDescriptor::VarLenUnicode => Ok(a
            .read_scalar::<VarLenUnicode>()
            .ctx(what)?
            .as_str()
            .to_owned()),
        TypeDescriptor::VarLenAscii => Ok(a
            .read_scalar::<VarLenAscii>()
            .ctx(what)?
            .as_str()
            .to_owned()),
        other => Err(Error::new(
            what(),
            format!(
                "expected a variable-length string, got {}",
                dtype_name(&other)
            ),
        )),
    }
}

/// Read a result file (see the module docs). Root attributes other than `ptytile_version`
/// and `config` that are numeric scalars go to `attrs`, in creation order where the file
/// records it (as ptytile's own files do), else by name; others are ignored.
pub(super) fn read_h5(path: &Path) -> Result<ReconResult> {
    let p = path.display().to_string();
    let file = open(path)?;

    // [Ny, Nx], or [S, Ny, Nx] for a multislice result
    let rank = file.dataset("object").map(|d| d.ndim()).unwrap_or(2);
    let (shape, object) = read_ds::<Complex32>(
        &file,
        path,
        "object",
        Kind::Complex,
        if rank == 3 {
            &[None, None, None]
        } else {
            &[None, None]
        },
    )?;
    let shape = if rank == 3 { &shape[1..] } else { &shape[..] };
    let ds = file.dataset("object").ctx(|| format!("{p}:/object"))?;
    let pw = || format!("{p}:/object attribute pixel_size_m");
    let px = ds
        .attr("pixel_size_m")
        .map_err(|_| Error::new(pw(), "attribute missing"))?
        .read_raw::<f64>()
        .ctx(pw)?;
    let pixel_size_m: [f64; 2] = px
        .as_slice()
        .try_into()
        .map_err(|_| Error::new(pw(), format!("expected 2 values (y, x), got {}", px.len())))?;

    let (pshape, probe) =
        read_ds::<Complex32>(&file, path, "probe", Kind::Complex, &[None, None, None])?;
    if pshape[1] != pshape[2] {
        return Err(Error::new(
            format!("{p}:/probe"),
            format!("modes must be square, got shape {pshape:?}"),
        ));
    }
    let (_, pos) = read_ds::<f64>(&file, path, "positions_px", Kind::Float, &[None, Some(2)])?;
    let (_, loss) = read_ds::<f64>(&file, path, "loss", Kind::Float, &[None])?;

    let _version = read_str_attr(&file, path, ATTR_VERSION)?;
    let config_toml = read_str_attr(&file, path, ATTR_CONFIG)?;

    let names = file
        .attr_names_by(IndexType::CreationOrder, IterationOrder::Increasing)
        .or_else(|_| file.attr_names())
        .ctx(|| p.clone())?;
    let mut attrs = Vec::new();
    let mut excluded = Vec::new();
    let mut index_lists = Vec::new();
    for name in names {
        if name == ATTR_EXCLUDED {
            let what = || format!("{p}:/ attribute {name}");
            excluded = file
                .attr(&name)
                .and_then(|a| a.read_raw::<u64>())
                .ctx(what)?
                .into_iter()
                .map(|j| j as usize)
                .collect();
            continue;
        }
        if name == ATTR_VERSION || name == ATTR_CONFIG {
            continue;
        }
        let what = || format!("{p}:/ attribute {name}");
        let a = file.attr(&name).ctx(what)?;
        let td = a.dtype().and_then(|t| t.to_descriptor()).ctx(what)?;
        let numeric = matches!(
            td,
            TypeDescriptor::Float(_) | TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_)
        );
        if numeric && a.is_scalar() {
            attrs.push((name.clone(), a.read_scalar::<f64>().ctx(what)?));
        } else if matches!(td, TypeDescriptor::Unsigned(_)) && a.ndim() == 1 {
            let list = a.read_raw::<u64>().ctx(what)?;
            index_lists.push((name.clone(), list.into_iter().map(|j| j as usize).collect()));
        }
    }

    Ok(ReconResult {
        object: Field {
            origin: [0, 0],
            shape: [shape[0], shape[1]],
            data: object,
        },
        pixel_size_m,
        probe,
        modes: pshape[0],
        m: pshape[1],
        positions_px: pos.chunks_exact(2).map(|c| [c[0], c[1]]).collect(),
        loss,
        config_toml,
        attrs,
        excluded,
        index_lists,
    })
}
