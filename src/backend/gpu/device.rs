//! The kernels' source and what the algorithm needs of a GPU: the [`Device`] trait (memory,
//! launches, batched 2-D FFTs, events) that each vendor implements, and the packed
//! arguments of a launch ([`Args`]).

use crate::error::Result;

/// kernels/compat.h, pasted in place of its `#include`.
pub const COMPAT_H: &str = include_str!("../../../kernels/compat.h");
/// kernels/ptycho.cu.
pub const PTYCHO_CU: &str = include_str!("../../../kernels/ptycho.cu");

/// Threads per block of every launch (`residual` assumes exactly this many).
pub const BLOCK: u32 = 256;

/// The complete kernel source: kernels/ptycho.cu with kernels/compat.h pasted in; with
/// `wide`, preceded by `#define PTY_F64 1`, so that the kernels compute in f64 (complex
/// `double2`) instead of f32 (compat.h).
pub fn kernel_source(wide: bool) -> String {
    let src = PTYCHO_CU.replace("#include \"compat.h\"", COMPAT_H);
    if wide {
        format!("#define PTY_F64 1\n{src}")
    } else {
        src
    }
}

/// Device address.
pub type DPtr = u64;

/// Arguments of one kernel launch, each stored in an 8-byte slot (ints and floats in the
/// low bytes, little-endian), in the kernel's parameter order; `real` parameters are f64
/// for kernels compiled in f64 ([`Device::wide`]), else f32.
#[derive(Default)]
pub struct Args(Vec<u64>, bool);

impl Args {
    /// Arguments for kernels whose `real` is f64 (`wide`) or f32.
    pub fn new(wide: bool) -> Self {
        Args(Vec::new(), wide)
    }
    /// A device pointer (0 = null).
    pub fn p(mut self, v: DPtr) -> Self {
        self.0.push(v);
        self
    }
    /// An `int`.
    pub fn i(mut self, v: usize) -> Self {
        self.0.push(v as i32 as u32 as u64);
        self
    }
    /// A `real` (compat.h): `v` rounded to f32 unless the kernels are f64.
    pub fn r(mut self, v: f64) -> Self {
        self.0.push(if self.1 {
            v.to_bits()
        } else {
            (v as f32).to_bits() as u64
        });
        self
    }
    /// A `double`.
    pub fn d(mut self, v: f64) -> Self {
        self.0.push(v.to_bits());
        self
    }
    /// Pointers to the slots, as `cuLaunchKernel`/`hipModuleLaunchKernel` want them.
    pub fn pointers(&mut self) -> Vec<*mut std::ffi::c_void> {
        self.0
            .iter_mut()
            .map(|v| v as *mut u64 as *mut std::ffi::c_void)
            .collect()
    }
}

/// What the algorithm needs from a GPU: one device, one stream, the compiled module. All
/// operations are ordered on the stream; downloads wait for it.
pub trait Device: Send {
    /// "NVIDIA H100 80GB HBM3 (device 0 of 1, sm_90)" or the like.
    fn describe(&self) -> String;
    /// Make this device current on the calling thread.
    fn bind(&self) -> Result<()>;
    /// Allocate `bytes` (at least 1).
    fn alloc(&mut self, bytes: usize) -> Result<DPtr>;
    /// Free an allocation of [`Device::alloc`].
    fn free(&mut self, p: DPtr);
    /// Copy host → device.
    fn upload(&mut self, dst: DPtr, src: &[u8]) -> Result<()>;
    /// Copy device → host (waits for the stream).
    fn download(&mut self, dst: &mut [u8], src: DPtr) -> Result<()>;
    /// Zero `bytes` at `p`.
    fn zero(&mut self, p: DPtr, bytes: usize) -> Result<()>;
    /// Device → device copy of `bytes`.
    fn copy(&mut self, dst: DPtr, src: DPtr, bytes: usize) -> Result<()>;
    /// Launch kernel `name` (one of [`super::KERNELS`]) on `blocks` × [`BLOCK`] threads.
    fn launch(&mut self, name: &'static str, blocks: usize, args: Args) -> Result<()>;
    /// Whether the kernels and FFTs compute in f64 (opened for an f64 backend: kernels
    /// compiled with `PTY_F64`, Z2Z transforms) rather than f32.
    fn wide(&self) -> bool;
    /// Unnormalised in-place 2-D FFTs (C2C, or Z2Z when [`Device::wide`]) of `count`
    /// contiguous row-major M × M complex arrays at `data`; forward is e^{−2πi k·r}.
    fn fft(&mut self, data: DPtr, m: usize, count: usize, inverse: bool) -> Result<()>;
    /// Wait for the stream.
    fn sync(&mut self) -> Result<()>;
    /// Record an event on the stream now; returns its id for [`Device::elapsed_ms`].
    fn record(&mut self) -> Result<usize>;
    /// Milliseconds between two recorded events (waits for the later one).
    fn elapsed_ms(&mut self, a: usize, b: usize) -> Result<f32>;
    /// Destroy all recorded events (their ids become invalid).
    fn clear_events(&mut self);
    /// Free device memory in bytes.
    fn free_memory(&self) -> Result<usize>;
}

/// Devices behind a box (the backend picks the vendor at run time).
impl<D: Device + ?Sized> Device for Box<D> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn bind(&self) -> Result<()> {
        (**self).bind()
    }
    fn wide(&self) -> bool {
        (**self).wide()
    }
    fn alloc(&mut self, bytes: usize) -> Result<DPtr> {
        (**self).alloc(bytes)
    }
    fn free(&mut self, p: DPtr) {
        (**self).free(p)
    }
    fn upload(&mut self, dst: DPtr, src: &[u8]) -> Result<()> {
        (**self).upload(dst, src)
    }
    fn download(&mut self, dst: &mut [u8], src: DPtr) -> Result<()> {
        (**self).download(dst, src)
    }
    fn zero(&mut self, p: DPtr, bytes: usize) -> Result<()> {
        (**self).zero(p, bytes)
    }
    fn copy(&mut self, dst: DPtr, src: DPtr, bytes: usize) -> Result<()> {
        (**self).copy(dst, src, bytes)
    }
    fn launch(&mut self, name: &'static str, blocks: usize, args: Args) -> Result<()> {
        (**self).launch(name, blocks, args)
    }
    fn fft(&mut self, data: DPtr, m: usize, count: usize, inverse: bool) -> Result<()> {
        (**self).fft(data, m, count, inverse)
    }
    fn sync(&mut self) -> Result<()> {
        (**self).sync()
    }
    fn record(&mut self) -> Result<usize> {
        (**self).record()
    }
    fn elapsed_ms(&mut self, a: usize, b: usize) -> Result<f32> {
        (**self).elapsed_ms(a, b)
    }
    fn clear_events(&mut self) {
        (**self).clear_events()
    }
    fn free_memory(&self) -> Result<usize> {
        (**self).free_memory()
    }
}

/// Blocks of [`BLOCK`] threads covering `n` items (at least one).
pub(super) fn blocks(n: usize) -> usize {
    n.div_ceil(BLOCK as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_pack_little_endian_slots() {
        let mut a = Args::new(false)
            .p(0x1234_5678_9abc)
            .i(7)
            .r(0.1)
            .i(usize::MAX);
        assert_eq!(
            a.0,
            [0x1234_5678_9abc, 7, 0.1f32.to_bits() as u64, 0xffff_ffff]
        );
        assert_eq!(a.pointers().len(), 4);
        let w = Args::new(true).r(0.1).d(0.1);
        assert_eq!(w.0, [0.1f64.to_bits(), 0.1f64.to_bits()]);
    }
}
