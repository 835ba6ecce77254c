//! What an engine saves in a checkpoint: its persistent state as named arrays.
//!
//! An engine's state (object on the rank's field, probe modes, and whatever else it keeps
//! between iterations: exit waves, a conjugate-gradient direction, a previous gradient) is
//! written as a list of [`NamedArray`]s by [`Snapshot::save`] and read back by
//! [`Snapshot::restore`] into a state freshly built by the same setup. Together with the
//! global iteration number this must determine the rest of the run: a deterministic
//! engine resumed from its snapshot reproduces the uninterrupted run bit for bit.
//!
//! The file format is `crate::output::checkpoint`'s business; this module only knows
//! names, element types, shapes and raw bytes (native endianness).

use crate::error::{Error, Result};
use num_complex::Complex;

/// Element type of a [`NamedArray`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// Complex of two 32-bit floats (re, im).
    C64,
    /// Complex of two 64-bit floats (re, im).
    C128,
    /// Unsigned 64-bit integer.
    U64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 | Dtype::C64 | Dtype::U64 => 8,
            Dtype::C128 => 16,
        }
    }
    /// Lower-case name (numpy's: float32, float64, complex64, complex128, uint64).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
            Dtype::C64 => "complex64",
            Dtype::C128 => "complex128",
            Dtype::U64 => "uint64",
        }
    }
}

/// Plain element types a [`NamedArray`] can hold.
pub trait Element: bytemuck::Pod {
    /// The matching [`Dtype`].
    const DTYPE: Dtype;
}
impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
}
impl Element for f64 {
    const DTYPE: Dtype = Dtype::F64;
}
impl Element for Complex<f32> {
    const DTYPE: Dtype = Dtype::C64;
}
impl Element for Complex<f64> {
    const DTYPE: Dtype = Dtype::C128;
}
impl Element for u64 {
    const DTYPE: Dtype = Dtype::U64;
}

/// One array of a snapshot: name, element type, shape (row-major, C order) and the raw
/// bytes of its elements in native endianness (`shape.iter().product() * dtype.size()` bytes).
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode)]
pub struct NamedArray {
    /// Unique within a snapshot, e.g. `object`, `probe`. `loss` is reserved for the driver.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape, row-major.
    pub shape: Vec<u64>,
    /// Raw element bytes.
    pub bytes: Vec<u8>,
}

impl NamedArray {
    /// An array named `name` of shape `shape` holding `values` (whose length must be the
    /// product of `shape`; checked in debug builds).
    pub fn new<T: Element>(name: &str, shape: &[usize], values: &[T]) -> NamedArray {
        debug_assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "{name}: shape and length disagree"
        );
        NamedArray {
            name: name.to_string(),
            dtype: T::DTYPE,
            shape: shape.iter().map(|&s| s as u64).collect(),
            bytes: bytemuck::cast_slice(values).to_vec(),
        }
    }

    /// The values, checked to be of type `T` and shape `shape`.
    ///
    /// Errors (naming the array): another element type, another shape, a byte count that
    /// does not match the shape.
    pub fn values<T: Element>(&self, shape: &[usize]) -> Result<Vec<T>> {
        let what = || format!("checkpoint array '{}'", self.name);
        if self.dtype != T::DTYPE {
            return Err(Error::new(
                what(),
                format!("is {}, expected {}", self.dtype.name(), T::DTYPE.name()),
            ));
        }
        let want: Vec<u64> = shape.iter().map(|&s| s as u64).collect();
        if self.shape != want {
            return Err(Error::new(
                what(),
                format!("has shape {:?}, expected {:?}", self.shape, want),
            ));
        }
        let n: usize = shape.iter().product();
        if self.bytes.len() != n * T::DTYPE.size() {
            return Err(Error::new(
                what(),
                format!("holds {} bytes for {n} elements", self.bytes.len()),
            ));
        }
        Ok(bytemuck::pod_collect_to_vec(&self.bytes))
    }
}

/// Find the array called `name` in `arrays`; error naming it if absent.
pub fn find<'a>(arrays: &'a [NamedArray], name: &str) -> Result<&'a NamedArray> {
    arrays
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| Error::new(format!("checkpoint array '{name}'"), "missing"))
}

/// An engine state that can be checkpointed.
pub trait Snapshot {
    /// Every array that, with the global iteration number, determines the rest of the run.
    fn save(&self) -> Vec<NamedArray>;
    /// Overwrite this state (built by the same setup: same shapes) with saved arrays.
    ///
    /// Errors: a missing array, or one of another type or shape (naming it).
    fn restore(&mut self, arrays: &[NamedArray]) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_check_type_and_shape() {
        let a = NamedArray::new("probe", &[2, 3], &[Complex::new(1.0f32, -2.0); 6]);
        assert_eq!(a.bytes.len(), 48);
        assert_eq!(
            a.values::<Complex<f32>>(&[2, 3]).unwrap(),
            vec![Complex::new(1.0f32, -2.0); 6]
        );
        let e = a.values::<Complex<f32>>(&[3, 2]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "checkpoint array 'probe': has shape [2, 3], expected [3, 2]"
        );
        let e = a.values::<f64>(&[2, 3]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "checkpoint array 'probe': is complex64, expected float64"
        );
        let mut b = a.clone();
        b.bytes.pop();
        assert!(b
            .values::<Complex<f32>>(&[2, 3])
            .unwrap_err()
            .msg
            .contains("47 bytes"));
        assert_eq!(
            find(&[a], "object").unwrap_err().to_string(),
            "checkpoint array 'object': missing"
        );
    }
}
