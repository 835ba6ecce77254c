//! NumPy `.npy` arrays, memory-mapped: the header is parsed and the data viewed in place by
//! the `ndarray-npy` crate (no copy of the whole file), so a rank reads only the patterns
//! it owns. Element types: float32/64, (u)int8/16/32/64 in native byte order, C or
//! Fortran order.

use crate::error::{Context, Error, Result};
use ndarray::{ArrayViewD, Axis};
use ndarray_npy::ViewNpyExt;
use num_traits::AsPrimitive;
use std::path::{Path, PathBuf};

/// An opened `.npy` file.
#[derive(Debug)]
pub struct NpyArray {
    /// The file.
    pub path: PathBuf,
    map: memmap2::Mmap,
    /// Shape as stored (C order of axes, whatever the memory layout).
    pub shape: Vec<usize>,
    /// NumPy type descriptor, e.g. `'<f4'`.
    pub dtype: String,
}

/// Apply `$f(view, args…)` to the file's data viewed with its own element type.
macro_rules! with_view {
    ($buf:expr, $f:ident ( $($arg:expr),* )) => {{
        let buf: &[u8] = $buf;
        if let Ok(v) = ArrayViewD::<f32>::view_npy(buf) { Some($f(v, $($arg),*)) }
        else if let Ok(v) = ArrayViewD::<f64>::view_npy(buf) { Some($f(v, $($arg),*)) }
        else if let Ok(v) = ArrayViewD::<u16>::view_npy(buf) { Some($f(v, $($arg),*)) }
        else if let Ok(v) = ArrayViewD::<u32>::view_npy(buf) { Some($f(v, $($arg),*)) }
        else if let Ok(v) = ArrayViewD::<i32>::view_npy(buf) { Some($f(v, $($arg),*)) }
        else if let Ok(v) = ArrayViewD::<u8>::view_npy(buf) { Some($f(v, $($arg),*)) }
        else if let Ok(v) = ArrayViewD::<i16>::view_npy(buf) { Some($f(v, $($arg),*)) }
        else if let Ok(v) = ArrayViewD::<i64>::view_npy(buf) { Some($f(v, $($arg),*)) }
        else if let Ok(v) = ArrayViewD::<u64>::view_npy(buf) { Some($f(v, $($arg),*)) }
        else if let Ok(v) = ArrayViewD::<i8>::view_npy(buf) { Some($f(v, $($arg),*)) }
        else { None }
    }};
}

impl NpyArray {
    /// Open and memory-map `path`, parse its header and check that its element type is one
    /// ptytile reads.
    ///
    /// Errors (naming the file): unreadable, not an `.npy` file, unsupported dtype (complex,
    /// bool, structured) or byte order, truncated data.
    pub fn open(path: &Path) -> Result<NpyArray> {
        let what = || path.display().to_string();
        let f = std::fs::File::open(path).ctx(what)?;
        let header =
            ndarray_npy::npy::header::Header::from_reader(&mut std::io::BufReader::new(&f))
                .map_err(|e| Error::new(what(), format!("not a NumPy .npy file ({e})")))?;
        // SAFETY: the map is read-only; ptytile never writes the file while it runs. A file
        // truncated by another process while mapped would fault, like any mmap reader.
        let map = unsafe { memmap2::Mmap::map(&f) }.ctx(what)?;
        let dtype = header.type_descriptor.to_string();
        let a = NpyArray {
            path: path.to_path_buf(),
            map,
            shape: header.shape,
            dtype,
        };
        if with_view!(&a.map, ndim()).is_none() {
            let why = ArrayViewD::<f32>::view_npy(&a.map)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            return Err(Error::new(
                what(),
                format!("dtype {} is not supported (float32/64 or integers in native byte order): {why}", a.dtype),
            ));
        }
        Ok(a)
    }

    /// Copy the sub-arrays `start..start + len` along axis 0 of the array reshaped to
    /// [N, rest…] (N = product of the first `lead` axes), as f32 in C order.
    pub fn read_f32(&self, lead: usize, start: usize, len: usize) -> Result<Vec<f32>> {
        let what = || self.path.display().to_string();
        with_view!(&self.map, copy_rows(lead, start, len))
            .ok_or_else(|| Error::new(what(), "data no longer readable"))?
            .map_err(|e| Error::new(what(), e.msg))
    }
}

fn ndim<T>(v: ArrayViewD<T>) -> usize {
    v.ndim()
}

fn copy_rows<T: AsPrimitive<f32>>(
    v: ArrayViewD<T>,
    lead: usize,
    start: usize,
    len: usize,
) -> Result<Vec<f32>> {
    let shape = v.shape().to_vec();
    if lead > shape.len() {
        return Err(Error::new(
            "npy",
            format!("array of rank {} has fewer than {lead} axes", shape.len()),
        ));
    }
    let n: usize = shape[..lead].iter().product();
    if start + len > n {
        return Err(Error::new(
            "npy",
            format!("index {} out of range ({n} rows)", start + len - 1),
        ));
    }
    let rest: usize = shape[lead..].iter().product();
    if let Some(s) = v.as_slice() {
        // C order: rows are contiguous
        return Ok(s[start * rest..(start + len) * rest]
            .iter()
            .map(|x| x.as_())
            .collect());
    }
    // Fortran (or other) order: index element by element in logical C order
    let mut out = Vec::with_capacity(len * rest);
    for j in start..start + len {
        let mut sub = v.view();
        let mut r = j;
        let mut idx = vec![0usize; lead];
        for ax in (0..lead).rev() {
            idx[ax] = r % shape[ax];
            r /= shape[ax];
        }
        for i in idx {
            sub = sub.index_axis_move(Axis(0), i);
        }
        out.extend(sub.iter().map(|x| x.as_()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array4, ShapeBuilder};

    #[test]
    fn c_and_fortran_order_read_the_same_patterns() {
        let d = tempfile::tempdir().unwrap();
        let a = Array4::from_shape_fn((2, 3, 4, 4), |(a, b, c, e)| {
            (a * 1000 + b * 100 + c * 10 + e) as u16
        });
        let f = Array4::from_shape_fn((2, 3, 4, 4).f(), |(a, b, c, e)| {
            (a * 1000 + b * 100 + c * 10 + e) as f64
        });
        ndarray_npy::write_npy(d.path().join("c.npy"), &a).unwrap();
        ndarray_npy::write_npy(d.path().join("f.npy"), &f).unwrap();
        let c = NpyArray::open(&d.path().join("c.npy")).unwrap();
        let ff = NpyArray::open(&d.path().join("f.npy")).unwrap();
        assert_eq!(c.shape, vec![2, 3, 4, 4]);
        let x = c.read_f32(2, 4, 2).unwrap(); // patterns (1,1), (1,2)
        assert_eq!(x, ff.read_f32(2, 4, 2).unwrap());
        assert_eq!(x[0], 1100.0);
        assert_eq!(x[16 + 3 * 4 + 1], 1231.0);
        assert!(c.read_f32(2, 5, 2).is_err());
        std::fs::write(d.path().join("x.npy"), b"nonsense").unwrap();
        assert!(NpyArray::open(&d.path().join("x.npy"))
            .unwrap_err()
            .msg
            .contains(".npy"));
    }
}
