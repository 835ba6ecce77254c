//! Device memory of one rank: the resident positions, intensities and batch buffers
//! ([`State`]), grow-only work buffers by name, the traffic counter, and the batch sizes.

use super::device::{DPtr, Device};
use crate::error::Result;
use std::collections::HashMap;

/// Bytes of batch buffers per position and mode (the shifted probes P and the waves ψ).
const BYTES_PER_POSITION_MODE: usize = 16;

/// Positions per batch: `PTYTILE_GPU_BATCH` if set, else as many as fit `budget` bytes of
/// batch buffers (2 × K × M² complex f32 per position; callers halve `budget` for f64),
/// at least 1, at most `n`.
pub fn batch_size(n: usize, m: usize, modes: usize, budget: usize) -> usize {
    let env = std::env::var("PTYTILE_GPU_BATCH")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&b| b > 0);
    let per = BYTES_PER_POSITION_MODE * modes * m * m;
    env.unwrap_or(budget / per.max(1)).clamp(1, n.max(1))
}

/// Default memory for batch buffers: 1 GiB, or a quarter of the free memory if less
/// (several ranks may share a GPU).
pub(super) const BATCH_BUDGET: usize = 1 << 30;

/// Pieces of a batched FFT over `count` arrays: full batches of `full`, then powers of two,
/// so that a device needs plans for only ~log₂(full) batch counts.
pub fn fft_pieces(count: usize, full: usize) -> Vec<usize> {
    let mut left = count;
    let mut out = Vec::new();
    while left > 0 {
        let p = if left >= full {
            full
        } else {
            1 << (usize::BITS - 1 - left.leading_zeros())
        };
        out.push(p);
        left -= p;
    }
    out
}

/// A device buffer that only grows.
#[derive(Default, Clone, Copy)]
pub(super) struct Buf {
    pub(super) ptr: DPtr,
    pub(super) bytes: usize,
}

/// Device state of one rank (behind a mutex: one call at a time).
pub(super) struct State<D: Device> {
    pub(super) dev: D,
    /// e_y, e_x of every position, [n][M] complex f32 each.
    pub(super) ramp_y: Buf,
    pub(super) ramp_x: Buf,
    /// Intensities [n][kx][ky] f32.
    pub(super) meas: Buf,
    /// Detector weights [kx][ky] f32, if any.
    pub(super) weights: Option<Buf>,
    /// The multislice propagator H/M² [kx][ky] complex f32, if the kernel has one.
    pub(super) prop: Option<Buf>,
    /// Shifted probes and waves of one batch, [batch][K][M²] complex f32 each.
    pub(super) p: Buf,
    pub(super) psi: Buf,
    /// Grow-only work buffers, by name.
    pub(super) work: HashMap<&'static str, Buf>,
    /// Profiling: (phase that ends here, event id) marks of the current call, if on.
    pub(super) prof: Option<Vec<(&'static str, usize)>>,
    /// dm's exit waves of every position, [n][K][x][y] complex f32, once `has_exit`.
    pub(super) exit: Buf,
    pub(super) has_exit: bool,
    /// Bytes copied host → device and device → host by the calls so far
    /// ([`Compute::bytes_moved`]; the one-time upload of [`Gpu::new`] not counted).
    pub(super) moved: [u64; 2],
    /// The resident object field and its sums, once loaded ([`super::resident`]).
    pub(super) res: Option<super::resident::Res>,
}

impl<D: Device> State<D> {
    /// The exit-wave buffer, grown to at least `bytes`.
    pub(super) fn exit_buffer(&mut self, bytes: usize) -> Result<DPtr> {
        if self.exit.bytes < bytes || self.exit.ptr == 0 {
            if self.exit.ptr != 0 {
                self.dev.free(self.exit.ptr);
            }
            self.exit = Buf {
                ptr: self.dev.alloc(bytes.max(1))?,
                bytes: bytes.max(1),
            };
        }
        Ok(self.exit.ptr)
    }

    /// Upload `src` to `dst`, counted in `moved`.
    pub(super) fn up(&mut self, dst: DPtr, src: &[u8]) -> Result<()> {
        self.moved[0] += src.len() as u64;
        self.dev.upload(dst, src)
    }

    /// Download `src` into `dst`, counted in `moved`.
    pub(super) fn down(&mut self, dst: &mut [u8], src: DPtr) -> Result<()> {
        self.moved[1] += dst.len() as u64;
        self.dev.download(dst, src)
    }

    pub(super) fn buf(&mut self, name: &'static str, bytes: usize) -> Result<DPtr> {
        let cur = self.work.get(name).copied().unwrap_or_default();
        if cur.bytes >= bytes && cur.ptr != 0 {
            return Ok(cur.ptr);
        }
        if cur.ptr != 0 {
            self.dev.free(cur.ptr);
        }
        self.work.remove(name);
        let ptr = self.dev.alloc(bytes.max(1))?;
        self.work.insert(
            name,
            Buf {
                ptr,
                bytes: bytes.max(1),
            },
        );
        Ok(ptr)
    }

    /// Profiling mark: the phase `name` ends now.
    pub(super) fn mark(&mut self, name: &'static str) -> Result<()> {
        if let Some(p) = &mut self.prof {
            p.push((name, self.dev.record()?));
        }
        Ok(())
    }

    pub(super) fn fft(
        &mut self,
        data: DPtr,
        m: usize,
        count: usize,
        full: usize,
        inverse: bool,
    ) -> Result<()> {
        let mut at = data;
        let c = if self.dev.wide() { 16 } else { 8 };
        for piece in fft_pieces(count, full) {
            self.dev.fft(at, m, piece, inverse)?;
            at += (piece * m * m * c) as u64;
        }
        Ok(())
    }
}

impl<D: Device> Drop for State<D> {
    fn drop(&mut self) {
        let mut all = vec![
            self.ramp_y,
            self.ramp_x,
            self.meas,
            self.p,
            self.psi,
            self.exit,
        ];
        all.extend(self.weights);
        all.extend(self.prop);
        all.extend(self.work.values().copied());
        for b in all.into_iter().filter(|b| b.ptr != 0) {
            self.dev.free(b.ptr);
        }
    }
}

/// Allocate and fill a device buffer.
pub(super) fn upload<D: Device>(dev: &mut D, data: &[u8]) -> Result<Buf> {
    let ptr = dev.alloc(data.len().max(1))?;
    dev.upload(ptr, data)?;
    Ok(Buf {
        ptr,
        bytes: data.len().max(1),
    })
}

/// The bytes of a slice of plain values.
pub(super) fn bytes_of<V: bytemuck::Pod>(v: &[V]) -> &[u8] {
    bytemuck::cast_slice(v)
}
