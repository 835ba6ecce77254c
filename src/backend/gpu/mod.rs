//! GPU backends (docs/gpu.md): every [`Compute`] operation of [`super::cpu`] and
//! [`super::pie`] (gradient sums, dm's exit-wave step and probe sums, the ePIE/rPIE sweep)
//! on CUDA (cudarc: driver API, NVRTC, cuFFT) and HIP (cubecl-hip-sys: HIP, hiprtc; hipFFT
//! via libloading). Both load their libraries at run time, so they build without CUDA or ROCm.
//!
//! The kernels (kernels/ptycho.cu with kernels/compat.h) are written once in CUDA C that
//! also compiles as HIP, compiled at run time and cached in memory per process and on disk
//! ([`cached`]). The algorithm ([`Gpu`]) is written once over a small [`Device`] trait
//! (memory, launches, batched 2-D FFTs, events) that each vendor implements.
//!
//! Precision: f32 products and FFTs (the app's working precision); the object gradient and
//! preconditioner accumulate by f64 atomics into object-sized buffers, the probe sums and
//! the loss in f64 per batch, so sums over positions stay f64 as on the CPU.

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "hip")]
pub mod hip;

use super::kernel::{DmStep, Gradients, Kernel};
use super::pie::PieStep;
use super::{option_name, BackendKind, Compute, Selection};
use crate::config::NoiseModel;
use crate::error::{Error, Result};
use crate::physics::fft::Real;
use crate::physics::model::{Field, PositionGeom};
use num_complex::Complex;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// kernels/compat.h, pasted in place of its `#include`.
pub const COMPAT_H: &str = include_str!("../../../kernels/compat.h");
/// kernels/ptycho.cu.
pub const PTYCHO_CU: &str = include_str!("../../../kernels/ptycho.cu");
/// The kernels of kernels/ptycho.cu that the backend loads.
pub const KERNELS: [&str; 18] = [
    "shift_probe",
    "exit_wave",
    "residual",
    "adjoint",
    "probe_grad",
    "probe_density",
    "intensities",
    "transpose_c",
    "transpose_d",
    "transpose_planes",
    "dm_prepare",
    "fourier_step",
    "dm_update",
    "conj_object",
    "pie_delta",
    "pie_probe_delta",
    "pie_probe_add",
    "pie_object",
];

/// Threads per block of every launch (`residual` assumes exactly this many).
pub const BLOCK: u32 = 256;

/// The complete kernel source: kernels/ptycho.cu with kernels/compat.h pasted in.
pub fn kernel_source() -> String {
    PTYCHO_CU.replace("#include \"compat.h\"", COMPAT_H)
}

/// Device address.
pub type DPtr = u64;

/// Arguments of one kernel launch, each stored in an 8-byte slot (ints and floats in the
/// low bytes, little-endian), in the kernel's parameter order.
#[derive(Default)]
pub struct Args(Vec<u64>);

impl Args {
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
    /// A `float`.
    pub fn f(mut self, v: f32) -> Self {
        self.0.push(v.to_bits() as u64);
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
    /// Launch kernel `name` (one of [`KERNELS`]) on `blocks` × [`BLOCK`] threads.
    fn launch(&mut self, name: &'static str, blocks: usize, args: Args) -> Result<()>;
    /// Unnormalised in-place 2-D C2C FFTs of `count` contiguous row-major M × M complex f32
    /// arrays at `data`; forward is e^{−2πi k·r}.
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

/// Whether backend `kind` can run here (libraries load, a device is present).
pub fn available(kind: BackendKind) -> Result<()> {
    guarded(kind, || match kind {
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => cuda::available(),
        #[cfg(feature = "hip")]
        BackendKind::Hip => hip::available(),
        _ => Err(not_built(kind)),
    })
}

fn not_built(kind: BackendKind) -> Error {
    Error::new(
        option_name(kind),
        format!(
            "this ptytile was built without the `{}` feature (cargo build --features {0})",
            kind.name()
        ),
    )
}

/// Run `f`, turning a panic inside a vendor library binding (a symbol missing from an old
/// driver, say) into an error naming the backend.
/// The panic hook is silenced meanwhile, so that the error stays the only line printed.
fn guarded<R>(kind: BackendKind, f: impl FnOnce() -> Result<R>) -> Result<R> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    match res {
        Ok(r) => r.map_err(|e| {
            if e.what == "backend" {
                Error::new(option_name(kind), e.msg)
            } else {
                e
            }
        }),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the GPU library failed".into());
            Err(Error::new(option_name(kind), msg))
        }
    }
}

/// Open a GPU backend for the rank with node-local rank `local_rank`.
pub fn open<T: Real>(
    kind: BackendKind,
    kernel: &Kernel<T>,
    positions: Arc<[PositionGeom<T>]>,
    intensities: Arc<[f32]>,
    local_rank: usize,
) -> Result<Box<dyn Compute<T>>> {
    if std::mem::size_of::<T>() != 4 {
        return Err(Error::new(
            option_name(kind),
            "GPU backends compute in f32; f64 runs only with --backend cpu",
        ));
    }
    guarded(kind, || {
        Ok(Box::new(Gpu::new(
            kind.name(),
            open_device(kind, local_rank)?,
            kernel,
            positions,
            intensities,
        )?) as Box<dyn Compute<T>>)
    })
}

/// The device of backend `kind` for node-local rank `local_rank`.
fn open_device(kind: BackendKind, local_rank: usize) -> Result<Box<dyn Device>> {
    match kind {
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Ok(Box::new(cuda::Cuda::open(local_rank)?)),
        #[cfg(feature = "hip")]
        BackendKind::Hip => Ok(Box::new(hip::Hip::open(local_rank)?)),
        _ => {
            let _ = local_rank;
            Err(not_built(kind))
        }
    }
}

/// Bytes of batch buffers per position and mode (the shifted probes P and the waves ψ).
const BYTES_PER_POSITION_MODE: usize = 16;

/// Positions per batch: `PTYTILE_GPU_BATCH` if set, else as many as fit `budget` bytes of
/// batch buffers (2 × K × M² complex f32 per position), at least 1, at most `n`.
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
const BATCH_BUDGET: usize = 1 << 30;

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
struct Buf {
    ptr: DPtr,
    bytes: usize,
}

/// Device state of one rank (behind a mutex: one call at a time).
struct State<D: Device> {
    dev: D,
    /// e_y, e_x of every position, [n][M] complex f32 each.
    ramp_y: Buf,
    ramp_x: Buf,
    /// Intensities [n][kx][ky] f32.
    meas: Buf,
    /// Detector weights [kx][ky] f32, if any.
    weights: Option<Buf>,
    /// Shifted probes and waves of one batch, [batch][K][M²] complex f32 each.
    p: Buf,
    psi: Buf,
    /// Grow-only work buffers, by name.
    work: HashMap<&'static str, Buf>,
    /// Profiling: (phase that ends here, event id) marks of the current call, if on.
    prof: Option<Vec<(&'static str, usize)>>,
    /// dm's exit waves of every position, [n][K][x][y] complex f32, once `has_exit`.
    exit: Buf,
    has_exit: bool,
    /// Bytes copied host → device and device → host by the calls so far
    /// ([`Compute::bytes_moved`]; the one-time upload of [`Gpu::new`] not counted).
    moved: [u64; 2],
}

impl<D: Device> State<D> {
    /// The exit-wave buffer, grown to at least `bytes`.
    fn exit_buffer(&mut self, bytes: usize) -> Result<DPtr> {
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
    fn up(&mut self, dst: DPtr, src: &[u8]) -> Result<()> {
        self.moved[0] += src.len() as u64;
        self.dev.upload(dst, src)
    }

    /// Download `src` into `dst`, counted in `moved`.
    fn down(&mut self, dst: &mut [u8], src: DPtr) -> Result<()> {
        self.moved[1] += dst.len() as u64;
        self.dev.download(dst, src)
    }

    fn buf(&mut self, name: &'static str, bytes: usize) -> Result<DPtr> {
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
    fn mark(&mut self, name: &'static str) -> Result<()> {
        if let Some(p) = &mut self.prof {
            p.push((name, self.dev.record()?));
        }
        Ok(())
    }

    fn fft(
        &mut self,
        data: DPtr,
        m: usize,
        count: usize,
        full: usize,
        inverse: bool,
    ) -> Result<()> {
        let mut at = data;
        for piece in fft_pieces(count, full) {
            self.dev.fft(at, m, piece, inverse)?;
            at += (piece * m * m * 8) as u64;
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
        all.extend(self.work.values().copied());
        for b in all.into_iter().filter(|b| b.ptr != 0) {
            self.dev.free(b.ptr);
        }
    }
}

fn blocks(n: usize) -> usize {
    n.div_ceil(BLOCK as usize).max(1)
}

/// The gradient kernel on a GPU [`Device`]: a rank's positions and intensities resident in
/// device memory, processed in batches of `batch` positions.
pub struct Gpu<T: Real, D: Device> {
    name: &'static str,
    describe: String,
    m: usize,
    modes: usize,
    noise: NoiseModel,
    eps: f32,
    batch: usize,
    positions: Arc<[PositionGeom<T>]>,
    state: Mutex<State<D>>,
}

fn bytes_of<V: bytemuck::Pod>(v: &[V]) -> &[u8] {
    bytemuck::cast_slice(v)
}

impl<T: Real, D: Device> Gpu<T, D> {
    /// Upload the positions' shift ramps and intensities and allocate the batch buffers.
    /// `T` must be f32 (checked by [`open`]).
    pub fn new(
        name: &'static str,
        dev: D,
        kernel: &Kernel<T>,
        positions: Arc<[PositionGeom<T>]>,
        intensities: Arc<[f32]>,
    ) -> Result<Self> {
        dev.bind()?;
        let m = kernel.fft.size();
        let n = positions.len();
        let modes = kernel.modes;
        let budget = BATCH_BUDGET.min(dev.free_memory()? / 4);
        let batch = batch_size(n, m, modes, budget);
        let describe = dev.describe();
        let mut st = State {
            dev,
            ramp_y: Buf::default(),
            ramp_x: Buf::default(),
            meas: Buf::default(),
            weights: None,
            p: Buf::default(),
            psi: Buf::default(),
            work: HashMap::new(),
            prof: None,
            exit: Buf::default(),
            has_exit: false,
            moved: [0, 0],
        };
        let ry: Vec<Complex<T>> = positions
            .iter()
            .flat_map(|p| p.ramp_y.iter().copied())
            .collect();
        let rx: Vec<Complex<T>> = positions
            .iter()
            .flat_map(|p| p.ramp_x.iter().copied())
            .collect();
        st.ramp_y = upload(&mut st.dev, bytes_of(&ry))?;
        st.ramp_x = upload(&mut st.dev, bytes_of(&rx))?;
        st.meas = upload(&mut st.dev, bytes_of(&intensities))?;
        if let Some(w) = &kernel.weights {
            st.weights = Some(upload(&mut st.dev, bytes_of(w))?);
        }
        let bb = batch * modes * m * m * 8;
        st.p = Buf {
            ptr: st.dev.alloc(bb)?,
            bytes: bb,
        };
        st.psi = Buf {
            ptr: st.dev.alloc(bb)?,
            bytes: bb,
        };
        st.dev.sync()?;
        tracing::info!("{name}: {describe}, {n} positions, batches of {batch}");
        Ok(Gpu {
            name,
            describe,
            m,
            modes,
            noise: kernel.noise,
            eps: kernel.eps.f64() as f32,
            batch,
            positions,
            state: Mutex::new(st),
        })
    }

    /// Positions per batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Lock the device state and make the device current on this thread.
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State<D>>> {
        let st = self
            .state
            .lock()
            .map_err(|_| Error::new(self.name, "a previous call on this device panicked"))?;
        st.dev.bind()?;
        Ok(st)
    }

    /// Upload the object transposed ([x][y]), the probe spectrum (if given; else the probe
    /// pointer is 0) and the selection's indices and window offsets; returns (objT, probe,
    /// idx, win) device pointers.
    fn stage(
        &self,
        st: &mut State<D>,
        obj: &Field<Complex<T>>,
        probe_hat: Option<&[Complex<T>]>,
        sel: &Selection,
    ) -> Result<[DPtr; 4]> {
        let mm = self.m * self.m;
        if let Some(probe_hat) = probe_hat.filter(|p| p.len() != self.modes * mm) {
            return Err(Error::new(
                self.name,
                format!(
                    "probe spectrum has {} values, expected {}",
                    probe_hat.len(),
                    self.modes * mm
                ),
            ));
        }
        sel.check(self.positions.len())?;
        let ix = sel.to_vec();
        let win = super::window_offsets(obj, self.m, ix.iter().map(|&j| &self.positions[j]))?;
        let [h, w] = obj.shape;
        let stage = st.buf("obj_stage", h * w * 8)?;
        st.up(stage, bytes_of(&obj.data))?;
        let obj_t = st.buf("obj_t", h * w * 8)?;
        st.dev.launch(
            "transpose_c",
            blocks(h * w),
            Args::default().p(obj_t).p(stage).i(h).i(w),
        )?;
        let ph = match probe_hat {
            Some(probe_hat) => {
                let ph = st.buf("probe_hat", probe_hat.len() * 8)?;
                st.up(ph, bytes_of(probe_hat))?;
                ph
            }
            None => 0,
        };
        let idx: Vec<i32> = ix.iter().map(|&j| j as i32).collect();
        let idx_d = st.buf("idx", idx.len() * 4)?;
        st.up(idx_d, bytes_of(&idx))?;
        let win_d = st.buf("win", win.len() * 8)?;
        st.up(win_d, bytes_of(&win))?;
        Ok([obj_t, ph, idx_d, win_d])
    }

    /// Shifted probes into P and far fields Ψ_raw into ψ for positions `s..s+nb` of the
    /// staged selection.
    fn forward(
        &self,
        st: &mut State<D>,
        staged: [DPtr; 4],
        h: usize,
        s: usize,
        nb: usize,
    ) -> Result<()> {
        let [obj_t, ph, idx, win] = staged;
        let (m, k) = (self.m, self.modes);
        let n = nb * k * m * m;
        let (p, psi, full) = (st.p.ptr, st.psi.ptr, self.batch * k);
        let (idx_b, win_b) = (idx + 4 * s as u64, win + 8 * s as u64);
        let sc = 1.0 / m as f32;
        st.dev.launch(
            "shift_probe",
            blocks(n),
            Args::default()
                .p(p)
                .p(ph)
                .p(st.ramp_y.ptr)
                .p(st.ramp_x.ptr)
                .p(idx_b)
                .i(m)
                .i(k)
                .i(nb)
                .f(sc),
        )?;
        st.mark("shift_probe: probe spectrum x ramps")?;
        st.fft(p, m, nb * k, full, true)?;
        st.mark("FFT: shifted probes")?;
        st.dev.launch(
            "exit_wave",
            blocks(n),
            Args::default()
                .p(psi)
                .p(p)
                .p(obj_t)
                .p(win_b)
                .i(h)
                .i(m)
                .i(k)
                .i(nb),
        )?;
        st.mark("exit_wave: probe x object window")?;
        st.fft(psi, m, nb * k, full, false)?;
        st.mark("FFT: far fields")
    }

    /// Download `len` f64 of a [rows][cols][comps] device array transposed to [cols][rows][comps].
    fn download_t(
        &self,
        st: &mut State<D>,
        src: DPtr,
        rows: usize,
        cols: usize,
        comps: usize,
    ) -> Result<Vec<f64>> {
        let out = st.buf("transposed", rows * cols * comps * 8)?;
        st.dev.launch(
            "transpose_d",
            blocks(rows * cols),
            Args::default().p(out).p(src).i(rows).i(cols).i(comps),
        )?;
        let mut v = vec![0f64; rows * cols * comps];
        st.down(bytemuck::cast_slice_mut(&mut v), out)?;
        Ok(v)
    }

    /// The object sums [g_T, d_T] (transposed, [x][y]; complex f64 and f64) of a field of
    /// `shape` into `out.g_obj`, `out.d_obj` ([y][x]).
    fn download_object_sums(
        &self,
        st: &mut State<D>,
        [g_t, d_t]: [DPtr; 2],
        [h, w]: [usize; 2],
        out: &mut Gradients<T>,
    ) -> Result<()> {
        let gv = self.download_t(st, g_t, w, h, 2)?;
        out.g_obj.data = gv
            .chunks_exact(2)
            .map(|c| Complex::new(c[0], c[1]))
            .collect();
        out.d_obj.data = self.download_t(st, d_t, w, h, 1)?;
        Ok(())
    }

    /// The probe sums [g_P̂ ([K][kx][ky] complex f64), d_P^T ([x][y] f64)] into
    /// `out.g_probe_hat`, `out.d_probe` ([y][x]).
    fn download_probe_sums(
        &self,
        st: &mut State<D>,
        [gp, dp_t]: [DPtr; 2],
        out: &mut Gradients<T>,
    ) -> Result<()> {
        let m = self.m;
        let mut gpv = vec![0f64; self.modes * m * m * 2];
        st.down(bytemuck::cast_slice_mut(&mut gpv), gp)?;
        out.g_probe_hat = gpv
            .chunks_exact(2)
            .map(|c| Complex::new(c[0], c[1]))
            .collect();
        out.d_probe = self.download_t(st, dp_t, m, m, 1)?;
        Ok(())
    }

    /// Σ of the `n` per-position losses (f64) at `loss`, in position order.
    fn download_loss(&self, st: &mut State<D>, loss: DPtr, n: usize) -> Result<f64> {
        let mut lv = vec![0f64; n];
        st.down(bytemuck::cast_slice_mut(&mut lv), loss)?;
        Ok(lv.iter().sum())
    }

    /// Copy host exit waves ([planes][y][x], complex f32) to `dst` as [planes][x][y].
    fn upload_planes(&self, st: &mut State<D>, dst: DPtr, host: &[Complex<T>]) -> Result<()> {
        let stage = st.buf("planes", host.len() * 8)?;
        st.up(stage, bytes_of(host))?;
        let planes = host.len() / (self.m * self.m);
        st.dev.launch(
            "transpose_planes",
            blocks(host.len()),
            Args::default().p(dst).p(stage).i(self.m).i(planes),
        )
    }

    /// Copy `src` ([planes][x][y]) back to host exit waves ([planes][y][x]).
    fn download_planes(&self, st: &mut State<D>, src: DPtr, host: &mut [Complex<T>]) -> Result<()> {
        let stage = st.buf("planes", host.len() * 8)?;
        let planes = host.len() / (self.m * self.m);
        st.dev.launch(
            "transpose_planes",
            blocks(host.len()),
            Args::default().p(stage).p(src).i(self.m).i(planes),
        )?;
        st.down(bytemuck::cast_slice_mut(host), stage)
    }

    /// Add one batch's probe sums to [g_P̂, d_P^T]: `probe_grad` of the transforms
    /// T = F(O* b) in `psi` and `probe_density` of the object windows (`idx`, `win` of the
    /// batch's first position; field height `h`).
    fn add_probe_sums(
        &self,
        st: &mut State<D>,
        [gp, dp_t]: [DPtr; 2],
        [psi, obj_t]: [DPtr; 2],
        [idx, win]: [DPtr; 2],
        h: usize,
        nb: usize,
    ) -> Result<()> {
        let (m, k) = (self.m, self.modes);
        let args = Args::default()
            .p(gp)
            .p(psi)
            .p(st.ramp_y.ptr)
            .p(st.ramp_x.ptr)
            .p(idx)
            .i(m)
            .i(k)
            .i(nb)
            .f(1.0 / m as f32);
        st.dev.launch("probe_grad", blocks(k * m * m), args)?;
        st.dev.launch(
            "probe_density",
            blocks(m * m),
            Args::default().p(dp_t).p(obj_t).p(win).i(h).i(m).i(nb),
        )
    }

    /// The noise model's code in the kernels (0 amplitude, 1 Poisson).
    fn noise_code(&self) -> usize {
        match self.noise {
            NoiseModel::Amplitude => 0,
            NoiseModel::Poisson => 1,
        }
    }

    /// Run `f` on the device state, rendering errors with the backend's name.
    fn with<R>(&self, f: impl FnOnce(&mut State<D>) -> Result<R>) -> Result<R> {
        let mut st = self.lock()?;
        f(&mut st).map_err(|e| {
            if e.what == "backend" {
                Error::new(self.name, e.msg)
            } else {
                e
            }
        })
    }
}

/// Allocate and fill a device buffer.
fn upload<D: Device>(dev: &mut D, data: &[u8]) -> Result<Buf> {
    let ptr = dev.alloc(data.len().max(1))?;
    dev.upload(ptr, data)?;
    Ok(Buf {
        ptr,
        bytes: data.len().max(1),
    })
}

impl<T: Real, D: Device> Compute<T> for Gpu<T, D> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn device(&self) -> String {
        format!("{}, batches of {} positions", self.describe, self.batch)
    }

    fn gradients(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
        want_probe: bool,
    ) -> Result<Gradients<T>> {
        let (m, k) = (self.m, self.modes);
        let mm = m * m;
        let probe_dims = want_probe.then_some((k, mm));
        if sel.is_empty() {
            return Ok(Gradients::zeros(obj.origin, obj.shape, 1, probe_dims));
        }
        self.with(|st| {
            if st.prof.is_some() {
                st.dev.clear_events();
                st.prof = Some(Vec::new());
                st.mark("start")?;
            }
            let staged = self.stage(st, obj, Some(probe_hat), &sel)?;
            let [obj_t, _, idx, win] = staged;
            let [h, w] = obj.shape;
            let ns = sel.len();
            let g_t = st.buf("g_t", h * w * 16)?;
            let d_t = st.buf("d_t", h * w * 8)?;
            let gp = st.buf("gp", k * mm * 16)?;
            let dp_t = st.buf("dp_t", mm * 8)?;
            let loss = st.buf("loss", ns * 8)?;
            st.dev.zero(g_t, h * w * 16)?;
            st.dev.zero(d_t, h * w * 8)?;
            st.dev.zero(gp, k * mm * 16)?;
            st.dev.zero(dp_t, mm * 8)?;
            st.mark("upload object, probe, selection; zero sums")?;
            let sc = 1.0 / m as f32;
            let sc2 = sc * sc;
            let g = st.weights.map_or(0, |b| b.ptr);
            let noise = self.noise_code();
            for s in (0..ns).step_by(self.batch) {
                let nb = self.batch.min(ns - s);
                let n = nb * k * mm;
                let (idx_b, win_b) = (idx + 4 * s as u64, win + 8 * s as u64);
                let (p, psi, full) = (st.p.ptr, st.psi.ptr, self.batch * k);
                self.forward(st, staged, h, s, nb)?;
                let args = Args::default()
                    .p(psi)
                    .p(loss + 8 * s as u64)
                    .p(st.meas.ptr)
                    .p(g)
                    .p(idx_b)
                    .i(m)
                    .i(k)
                    .i(noise)
                    .f(self.eps)
                    .f(sc2)
                    .f(sc2);
                st.dev.launch("residual", nb, args)?;
                st.mark("residual: noise model, loss")?;
                st.fft(psi, m, nb * k, full, true)?;
                st.mark("FFT: back-propagation")?;
                let args = Args::default()
                    .p(psi)
                    .p(p)
                    .p(obj_t)
                    .p(win_b)
                    .p(g_t)
                    .p(d_t)
                    .i(h)
                    .i(m)
                    .i(k)
                    .i(nb)
                    .i(want_probe as usize);
                st.dev.launch("adjoint", blocks(n), args)?;
                st.mark("adjoint: scatter-add into object sums (f64 atomics)")?;
                if want_probe {
                    st.fft(psi, m, nb * k, full, false)?;
                    st.mark("FFT: probe gradient")?;
                    self.add_probe_sums(st, [gp, dp_t], [psi, obj_t], [idx_b, win_b], h, nb)?;
                    st.mark("probe_grad, probe_density: probe sums")?;
                }
            }
            let mut out = Gradients::zeros(obj.origin, obj.shape, 1, probe_dims);
            self.download_object_sums(st, [g_t, d_t], obj.shape, &mut out)?;
            if want_probe {
                self.download_probe_sums(st, [gp, dp_t], &mut out)?;
            }
            out.loss = self.download_loss(st, loss, ns)?;
            st.mark("transpose and download sums")?;
            Ok(out)
        })
    }

    fn model_intensities(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
    ) -> Result<Vec<T>> {
        let (m, k) = (self.m, self.modes);
        let mm = m * m;
        if sel.is_empty() {
            return Ok(Vec::new());
        }
        self.with(|st| {
            let staged = self.stage(st, obj, Some(probe_hat), &sel)?;
            let h = obj.shape[0];
            let ns = sel.len();
            let out = st.buf("intensities", ns * mm * 4)?;
            let sc = 1.0 / m as f32;
            for s in (0..ns).step_by(self.batch) {
                let nb = self.batch.min(ns - s);
                self.forward(st, staged, h, s, nb)?;
                let args = Args::default()
                    .p(out + (s * mm * 4) as u64)
                    .p(st.psi.ptr)
                    .i(m)
                    .i(k)
                    .i(nb)
                    .f(sc * sc);
                st.dev.launch("intensities", blocks(nb * mm), args)?;
            }
            let mut v = vec![T::zero(); ns * mm];
            st.down(bytemuck::cast_slice_mut(&mut v), out)?;
            Ok(v)
        })
    }

    fn bytes_moved(&self) -> [u64; 2] {
        self.state.lock().map_or([0, 0], |st| st.moved)
    }

    fn difference_map(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
        init: bool,
        step: DmStep,
    ) -> Result<Gradients<T>> {
        let (m, k) = (self.m, self.modes);
        let kmm = k * m * m;
        self.with(|st| {
            sel.check(self.positions.len())?;
            let first = super::exit_range(&sel)?.start;
            let mut out = Gradients::zeros(obj.origin, obj.shape, 1, None);
            if sel.is_empty() {
                return Ok(out);
            }
            if !st.has_exit {
                if !init {
                    return Err(Error::new(
                        self.name,
                        "no exit waves yet (dm starts with init)",
                    ));
                }
                // every selected wave is set by `init` before it is read; the others wait
                // for their own first pass
                let bytes = self.positions.len() * kmm * 8;
                let exit = st.exit_buffer(bytes)?;
                st.dev.zero(exit, bytes)?;
                st.has_exit = true;
            }
            let exit = st.exit.ptr + (first * kmm * 8) as u64;
            let staged = self.stage(st, obj, Some(probe_hat), &sel)?;
            let [obj_t, _, idx, win] = staged;
            let [h, w] = obj.shape;
            let ns = sel.len();
            let g_t = st.buf("g_t", h * w * 16)?;
            let d_t = st.buf("d_t", h * w * 8)?;
            let loss = st.buf("loss", ns * 8)?;
            st.dev.zero(g_t, h * w * 16)?;
            st.dev.zero(d_t, h * w * 8)?;
            let x = st.buf("dm_x", self.batch * kmm * 8)?;
            let sc2 = 1.0 / (m * m) as f32;
            let g = st.weights.map_or(0, |b| b.ptr);
            let er = step.error_reduction;
            let fisher = crate::physics::model::fisher_scale(self.noise) as f32;
            for s in (0..ns).step_by(self.batch) {
                let nb = self.batch.min(ns - s);
                let n = nb * kmm;
                let (idx_b, win_b) = (idx + 4 * s as u64, win + 8 * s as u64);
                let (p, psi, full) = (st.p.ptr, st.psi.ptr, self.batch * k);
                // this batch's exit waves, resident ([x][y] per mode, like every wave here)
                let ev = exit + (s * kmm * 8) as u64;
                self.forward(st, staged, h, s, nb)?;
                if !er {
                    let args = Args::default()
                        .p(x)
                        .p(ev)
                        .p(p)
                        .p(obj_t)
                        .p(win_b)
                        .i(h)
                        .i(m)
                        .i(k)
                        .i(nb)
                        .i(init as usize);
                    st.dev.launch("dm_prepare", blocks(n), args)?;
                    st.fft(x, m, nb * k, full, false)?;
                }
                let args = Args::default()
                    .p(psi)
                    .p(x)
                    .p(loss + 8 * s as u64)
                    .p(st.meas.ptr)
                    .p(g)
                    .p(idx_b)
                    .i(m)
                    .i(k)
                    .i(self.noise_code())
                    .f(self.eps)
                    .f(sc2)
                    .f(step.gamma as f32)
                    .i(er as usize)
                    .f(fisher);
                st.dev.launch("fourier_step", nb, args)?;
                let far = if er { psi } else { x };
                st.fft(far, m, nb * k, full, true)?;
                let args = Args::default()
                    .p(far)
                    .p(ev)
                    .p(p)
                    .p(obj_t)
                    .p(win_b)
                    .i(h)
                    .i(m)
                    .i(k)
                    .i(nb)
                    .i(er as usize)
                    .f(step.beta as f32);
                st.dev.launch("dm_update", blocks(n), args)?;
                let args = Args::default()
                    .p(far)
                    .p(p)
                    .p(obj_t)
                    .p(win_b)
                    .p(g_t)
                    .p(d_t)
                    .i(h)
                    .i(m)
                    .i(k)
                    .i(nb)
                    .i(0);
                st.dev.launch("adjoint", blocks(n), args)?;
            }
            self.download_object_sums(st, [g_t, d_t], obj.shape, &mut out)?;
            out.loss = self.download_loss(st, loss, ns)?;
            Ok(out)
        })
    }

    fn probe_sums(&self, obj: &Field<Complex<T>>, sel: Selection) -> Result<Gradients<T>> {
        let (m, k) = (self.m, self.modes);
        let (mm, kmm) = (m * m, k * m * m);
        self.with(|st| {
            sel.check(self.positions.len())?;
            let first = super::exit_range(&sel)?.start;
            let mut out = Gradients::zeros([0, 0], [0, 0], 1, Some((k, mm)));
            if sel.is_empty() {
                return Ok(out);
            }
            if !st.has_exit {
                return Err(Error::new(self.name, "no exit waves yet"));
            }
            let exit = st.exit.ptr + (first * kmm * 8) as u64;
            let [obj_t, _, idx, win] = self.stage(st, obj, None, &sel)?;
            let h = obj.shape[0];
            let gp = st.buf("gp", kmm * 16)?;
            let dp_t = st.buf("dp_t", mm * 8)?;
            st.dev.zero(gp, kmm * 16)?;
            st.dev.zero(dp_t, mm * 8)?;
            let ns = sel.len();
            for s in (0..ns).step_by(self.batch) {
                let nb = self.batch.min(ns - s);
                let (idx_b, win_b) = (idx + 4 * s as u64, win + 8 * s as u64);
                let (psi, full) = (st.psi.ptr, self.batch * k);
                let bytes = nb * kmm * 8;
                st.dev.copy(psi, exit + (s * kmm * 8) as u64, bytes)?;
                let args = Args::default()
                    .p(psi)
                    .p(obj_t)
                    .p(win_b)
                    .i(h)
                    .i(m)
                    .i(k)
                    .i(nb);
                st.dev.launch("conj_object", blocks(nb * kmm), args)?;
                st.fft(psi, m, nb * k, full, false)?;
                self.add_probe_sums(st, [gp, dp_t], [psi, obj_t], [idx_b, win_b], h, nb)?;
            }
            self.download_probe_sums(st, [gp, dp_t], &mut out)?;
            Ok(out)
        })
    }

    fn exit_waves(&self) -> Result<Vec<Complex<T>>> {
        self.with(|st| {
            if !st.has_exit {
                return Ok(Vec::new());
            }
            let mut v =
                vec![Complex::default(); self.positions.len() * self.modes * self.m * self.m];
            let exit = st.exit.ptr;
            self.download_planes(st, exit, &mut v)?;
            Ok(v)
        })
    }

    fn set_exit_waves(&self, waves: Vec<Complex<T>>) -> Result<()> {
        let n = self.positions.len();
        self.with(|st| {
            if waves.is_empty() {
                st.has_exit = false;
                return Ok(());
            }
            super::check_exit_waves(self.modes, self.m, n, waves.len())?;
            let exit = st.exit_buffer(waves.len() * 8)?;
            self.upload_planes(st, exit, &waves)?;
            st.has_exit = true;
            Ok(())
        })
    }

    fn pie_sweep(
        &self,
        obj: &mut Field<Complex<T>>,
        probe_hat: &mut [Complex<T>],
        sel: Selection,
        step: &PieStep,
        illum: &mut Field<f64>,
    ) -> Result<f64> {
        let (m, k) = (self.m, self.modes);
        let (mm, kmm) = (m * m, k * m * m);
        self.with(|st| {
            super::check_illumination(obj, illum)?;
            sel.check(self.positions.len())?;
            if sel.is_empty() {
                return Ok(0.0);
            }
            let staged = self.stage(st, obj, Some(&*probe_hat), &sel)?;
            let [obj_t, ph, idx, win] = staged;
            let [h, w] = obj.shape;
            let ns = sel.len();
            let illum_t = st.buf("illum_t", h * w * 8)?;
            st.dev.zero(illum_t, h * w * 8)?;
            let loss = st.buf("loss", ns * 8)?;
            let den = st.buf("pie_den", mm * 4)?;
            let mx = st.buf("pie_max", 8)?;
            let tw = st.buf("pie_t", kmm * 8)?;
            let (sc, sc2) = (1.0 / m as f32, 1.0 / (m * m) as f32);
            let g = st.weights.map_or(0, |b| b.ptr);
            let (p, psi, full) = (st.p.ptr, st.psi.ptr, self.batch * k);
            let (a_o, s_o) = (step.obj_mix as f32, step.obj_step as f32);
            let (a_p, s_p) = (step.probe_mix as f32, step.probe_step as f32);
            for s in 0..ns {
                self.forward(st, staged, h, s, 1)?;
                let args = Args::default()
                    .p(psi)
                    .p(psi)
                    .p(loss + 8 * s as u64)
                    .p(st.meas.ptr)
                    .p(g)
                    .p(idx + 4 * s as u64)
                    .i(m)
                    .i(k)
                    .i(self.noise_code())
                    .f(self.eps)
                    .f(sc2)
                    .f(step.gamma as f32)
                    .i(0)
                    .f(1.0);
                st.dev.launch("fourier_step", 1, args)?;
                st.fft(psi, m, k, full, true)?;
                let args = Args::default()
                    .p(psi)
                    .p(den)
                    .p(mx)
                    .p(p)
                    .p(obj_t)
                    .p(win)
                    .i(s)
                    .i(h)
                    .i(m)
                    .i(k);
                st.dev.launch("pie_delta", 1, args)?;
                if step.update_probe {
                    let args = Args::default()
                        .p(tw)
                        .p(psi)
                        .p(mx)
                        .p(obj_t)
                        .p(win)
                        .i(s)
                        .i(h)
                        .i(m)
                        .i(k)
                        .f(a_p)
                        .f(s_p);
                    st.dev.launch("pie_probe_delta", blocks(kmm), args)?;
                    st.fft(tw, m, k, full, false)?;
                    let args = Args::default()
                        .p(ph)
                        .p(tw)
                        .p(st.ramp_y.ptr)
                        .p(st.ramp_x.ptr)
                        .p(idx)
                        .i(s)
                        .i(m)
                        .i(k)
                        .f(sc);
                    st.dev.launch("pie_probe_add", blocks(kmm), args)?;
                }
                let args = Args::default()
                    .p(obj_t)
                    .p(illum_t)
                    .p(psi)
                    .p(den)
                    .p(mx)
                    .p(p)
                    .p(win)
                    .i(s)
                    .i(h)
                    .i(m)
                    .i(k)
                    .f(a_o)
                    .f(s_o);
                st.dev.launch("pie_object", blocks(mm), args)?;
            }
            // the object back to [y][x], the probe spectrum and the illumination sums
            let out = st.buf("obj_stage", h * w * 8)?;
            st.dev.launch(
                "transpose_c",
                blocks(h * w),
                Args::default().p(out).p(obj_t).i(w).i(h),
            )?;
            st.dev
                .download(bytemuck::cast_slice_mut(&mut obj.data[..h * w]), out)?;
            st.down(bytemuck::cast_slice_mut(probe_hat), ph)?;
            let il = self.download_t(st, illum_t, w, h, 1)?;
            illum.data.iter_mut().zip(&il).for_each(|(a, b)| *a += *b);
            self.download_loss(st, loss, ns)
        })
    }
}

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
            open_device(kind, local_rank)?,
            kernel,
            positions,
            intensities,
        )?) as Box<dyn Profiled>)
    })
}

/// Devices behind a box (the backend picks the vendor at run time).
impl<D: Device + ?Sized> Device for Box<D> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn bind(&self) -> Result<()> {
        (**self).bind()
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
    fn source_has_every_kernel_and_no_include() {
        let s = kernel_source();
        assert!(
            !s.lines().any(|l| l.trim_start().starts_with("#include")),
            "an #include is left"
        );
        assert!(s.contains("typedef float2 cf;"), "compat.h not pasted");
        for k in KERNELS {
            assert!(
                s.contains(&format!("PTY_KERNEL void {k}(")),
                "{k} missing from kernels/ptycho.cu"
            );
        }
    }

    #[test]
    fn fft_pieces_cover_the_count_with_few_sizes() {
        assert_eq!(fft_pieces(10, 4), [4, 4, 2]);
        assert_eq!(
            fft_pieces(4096 * 4 + 248, 4096),
            [4096, 4096, 4096, 4096, 128, 64, 32, 16, 8]
        );
        assert_eq!(fft_pieces(7, 16), [4, 2, 1]);
        assert!(fft_pieces(0, 16).is_empty());
        for (c, f) in [(1000, 64), (12345, 4096), (3, 1)] {
            assert_eq!(fft_pieces(c, f).iter().sum::<usize>(), c);
        }
    }

    #[test]
    fn batches_fit_the_budget() {
        if std::env::var_os("PTYTILE_GPU_BATCH").is_some() {
            return;
        }
        // 128² × 1 mode: 256 KiB per position
        assert_eq!(batch_size(16632, 128, 1, 1 << 30), 4096);
        assert_eq!(batch_size(100, 128, 1, 1 << 30), 100);
        assert_eq!(batch_size(100, 128, 3, 1000), 1);
        assert_eq!(batch_size(0, 64, 1, 1 << 30), 1);
    }

    #[test]
    fn args_pack_little_endian_slots() {
        let mut a = Args::default()
            .p(0x1234_5678_9abc)
            .i(7)
            .f(1.5)
            .i(usize::MAX);
        assert_eq!(
            a.0,
            [0x1234_5678_9abc, 7, 1.5f32.to_bits() as u64, 0xffff_ffff]
        );
        assert_eq!(a.pointers().len(), 4);
    }

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
