//! Timing hooks of a GPU backend for `ptytile bench gpu`.

use super::{guarded, open_device, Device, Gpu};
use crate::backend::kernel::Kernel;
use crate::backend::{BackendKind, Compute};
use crate::error::Result;
use crate::physics::model::PositionGeom;
use std::sync::Arc;

/// A GPU backend with timing hooks, for `ptytile bench gpu`.
pub trait Profiled: Compute<f32> {
    /// Positions per batch.
    fn batch(&self) -> usize;
    /// Record device events between the phases of each following [`Compute::gradients`] call.
    fn set_profile(&self, on: bool);
    /// Device time (ms) per phase of the last profiled call, in order of first appearance,
    /// phases repeated per batch summed; the first entry is the whole call.
    fn last_profile(&self) -> Result<Vec<(&'static str, f64)>>;
    /// Device time (ms) of one device-to-device copy of `bytes`, by events.
    fn copy_ms(&self, bytes: usize) -> Result<f64>;
}

impl<D: Device> Profiled for Gpu<f32, D> {
    fn batch(&self) -> usize {
        self.batch
    }

    fn set_profile(&self, on: bool) {
        if let Ok(mut st) = self.state.lock() {
            st.prof = on.then(Vec::new);
        }
    }

    fn last_profile(&self) -> Result<Vec<(&'static str, f64)>> {
        self.with(|st| {
            let marks = st.prof.clone().unwrap_or_default();
            let mut out: Vec<(&'static str, f64)> = Vec::new();
            if let (Some(first), Some(last)) = (marks.first(), marks.last()) {
                out.push(("whole call", st.dev.elapsed_ms(first.1, last.1)? as f64));
            }
            for w in marks.windows(2) {
                let ms = st.dev.elapsed_ms(w[0].1, w[1].1)? as f64;
                match out.iter_mut().skip(1).find(|(n, _)| *n == w[1].0) {
                    Some(e) => e.1 += ms,
                    None => out.push((w[1].0, ms)),
                }
            }
            Ok(out)
        })
    }

    fn copy_ms(&self, bytes: usize) -> Result<f64> {
        self.with(|st| {
            let a = st.buf("copy_src", bytes)?;
            let b = st.buf("copy_dst", bytes)?;
            st.dev.zero(a, bytes)?;
            st.dev.copy(b, a, bytes)?; // warm-up
            let e0 = st.dev.record()?;
            st.dev.copy(b, a, bytes)?;
            let e1 = st.dev.record()?;
            let ms = st.dev.elapsed_ms(e0, e1)? as f64;
            for name in ["copy_src", "copy_dst"] {
                if let Some(buf) = st.work.remove(name) {
                    st.dev.free(buf.ptr);
                }
            }
            Ok(ms)
        })
    }
}

/// Open a GPU backend in f32 with [`Profiled`]'s timing hooks (`ptytile bench gpu`).
pub fn open_profiled(
    kind: BackendKind,
    kernel: &Kernel<f32>,
    positions: Arc<[PositionGeom<f32>]>,
    intensities: Arc<[f32]>,
    local_rank: usize,
) -> Result<Box<dyn Profiled>> {
    guarded(kind, || {
        Ok(Box::new(Gpu::new(
            kind.name(),
            open_device(kind, local_rank, false)?,
            kernel,
            positions,
            intensities,
        )?) as Box<dyn Profiled>)
    })
}
