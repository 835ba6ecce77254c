//! GPU backends (docs/gpu.md): every [`Compute`] operation of [`super::cpu`] and
//! [`super::pie`] (gradient sums, position correction's terms, dm's exit-wave step and
//! probe sums, the ePIE/rPIE sweep)
//! on CUDA (cudarc: driver API, NVRTC, cuFFT) and HIP (cubecl-hip-sys: HIP, hiprtc; hipFFT
//! via libloading). Both load their libraries at run time, so they build without CUDA or ROCm.
//!
//! The kernels (kernels/ptycho.cu with kernels/compat.h) are written once in CUDA C that
//! also compiles as HIP, compiled at run time and cached in memory per process and on disk
//! ([`cached`]). The algorithm ([`Gpu`]) is written once over a small [`Device`] trait
//! (memory, launches, batched 2-D FFTs, events) that each vendor implements.
//!
//! Files by job: `device` (the kernel source, [`Device`], [`Args`]), `launch` (a typed
//! launch function per kernel, and the kernel list), `memory` (a rank's device buffers,
//! the traffic counter, batch sizes), this module (opening a backend, the forward model and
//! the gradient sums, single-slice and multislice), `projection` (dm's exit-wave step and probe sums, the ePIE/rPIE
//! sweep), `profile` (timing hooks for `ptytile bench gpu`), `cache` (compiled kernels on
//! disk), and the vendors' `cuda` and `hip`.
//!
//! Precision: products and FFTs in the backend's `T`: f32 (the app's working precision), or
//! f64 (kernels compiled with `PTY_F64`, Z2Z transforms: [`Device::wide`]); the object gradient and
//! preconditioner are gathered in f64 into object-sized buffers (one thread per pixel,
//! terms in a fixed order: no atomics, so a run's sums are the same bits on every run), the
//! probe sums and the loss in f64 per batch, so sums over positions stay f64 as on the CPU.

pub mod cache;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
#[cfg(feature = "hip")]
pub mod hip;
mod launch;
mod memory;
pub mod profile;
mod projection;
mod resident;

pub use cache::{cache_dir, cache_key, cached, cached_in};
use device::blocks;
pub use device::{kernel_source, Args, DPtr, Device, BLOCK, COMPAT_H, PTYCHO_CU};
pub use launch::KERNELS;
pub use memory::{batch_size, fft_pieces};
use memory::{bytes_of, upload, Buf, State, BATCH_BUDGET};
pub use profile::{open_profiled, Profiled};

use super::kernel::{DmStep, Gradients, Kernel, PositionGradient};
use super::pie::PieStep;
use super::resident::Resident;
use super::{option_name, BackendKind, Compute, Selection};
use crate::config::NoiseModel;
use crate::error::{Error, Result};
use crate::physics::fft::Real;
use crate::physics::model::{Field, PositionGeom};
use num_complex::Complex;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    guarded(kind, || {
        Ok(Box::new(Gpu::new(
            kind.name(),
            open_device(kind, local_rank, wide::<T>())?,
            kernel,
            positions,
            intensities,
        )?) as Box<dyn Compute<T>>)
    })
}

/// Whether `T` is f64 (the device computes in f64: [`Device::wide`]).
fn wide<T: Real>() -> bool {
    std::mem::size_of::<T>() == 8
}

/// The device of backend `kind` for node-local rank `local_rank`, computing in f64 if `wide`.
fn open_device(kind: BackendKind, local_rank: usize, wide: bool) -> Result<Box<dyn Device>> {
    match kind {
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Ok(Box::new(cuda::Cuda::open(local_rank, wide)?)),
        #[cfg(feature = "hip")]
        BackendKind::Hip => Ok(Box::new(hip::Hip::open(local_rank, wide)?)),
        _ => {
            let _ = (local_rank, wide);
            Err(not_built(kind))
        }
    }
}

/// The positions' shift ramps [e_y, e_x] as uploaded: [n][M] complex each, position order.
fn ramps<T: Real>(positions: &[PositionGeom<T>]) -> [Vec<Complex<T>>; 2] {
    let flat = |f: fn(&PositionGeom<T>) -> &[Complex<T>]| {
        positions
            .iter()
            .flat_map(|p| f(p).iter().copied())
            .collect()
    };
    [flat(|p| &p.ramp_y), flat(|p| &p.ramp_x)]
}

/// A staged object field on the device: objT's column height `h` (the field's rows), the
/// values per plane (rows × columns), the planes (slices), and the positions per batch for
/// it (a multislice batch also keeps the S − 1 incident waves, so it holds fewer positions).
#[derive(Clone, Copy)]
struct Geo {
    h: usize,
    plane: usize,
    planes: usize,
    batch: usize,
}

impl Geo {
    /// One slice of column height `h` (the field's rows) in batches of `batch` positions
    /// (`plane` is read only for slices after the first).
    fn single(h: usize, batch: usize) -> Geo {
        Geo {
            h,
            plane: 0,
            planes: 1,
            batch,
        }
    }
}

/// The gradient kernel on a GPU [`Device`]: a rank's positions and intensities resident in
/// device memory, processed in batches of `batch` positions.
pub struct Gpu<T: Real, D: Device> {
    name: &'static str,
    describe: String,
    m: usize,
    modes: usize,
    noise: NoiseModel,
    eps: f64,
    batch: usize,
    positions: Arc<[PositionGeom<T>]>,
    state: Mutex<State<D>>,
}

impl<T: Real, D: Device> Gpu<T, D> {
    /// Bytes of a complex value in the working precision (8 for f32, 16 for f64).
    const C: usize = 2 * std::mem::size_of::<T>();

    /// Upload the positions' shift ramps and intensities and allocate the batch buffers.
    /// Error unless `dev` computes in `T`'s precision ([`Device::wide`]).
    pub fn new(
        name: &'static str,
        dev: D,
        kernel: &Kernel<T>,
        positions: Arc<[PositionGeom<T>]>,
        intensities: Arc<[f32]>,
    ) -> Result<Self> {
        dev.bind()?;
        if dev.wide() != wide::<T>() {
            return Err(Error::new(
                name,
                format!(
                    "the device's kernels compute in {}, the run in {}",
                    if dev.wide() { "f64" } else { "f32" },
                    if wide::<T>() { "f64" } else { "f32" }
                ),
            ));
        }
        let m = kernel.fft.size();
        let n = positions.len();
        let modes = kernel.modes;
        // batch_size counts complex f32 buffers
        let budget = BATCH_BUDGET.min(dev.free_memory()? / 4) * 8 / Self::C;
        let batch = batch_size(n, m, modes, budget);
        let describe = dev.describe();
        let mut st = State {
            dev,
            ramp_y: Buf::default(),
            ramp_x: Buf::default(),
            meas: Buf::default(),
            weights: None,
            prop: None,
            p: Buf::default(),
            psi: Buf::default(),
            work: HashMap::new(),
            prof: None,
            exit: Buf::default(),
            has_exit: false,
            moved: [0, 0],
            res: None,
        };
        let [ry, rx] = ramps(&positions);
        st.ramp_y = upload(&mut st.dev, bytes_of(&ry))?;
        st.ramp_x = upload(&mut st.dev, bytes_of(&rx))?;
        st.meas = upload(&mut st.dev, bytes_of(&intensities))?;
        if let Some(w) = &kernel.weights {
            st.weights = Some(upload(&mut st.dev, bytes_of(w))?);
        }
        if !kernel.propagator.is_empty() {
            st.prop = Some(upload(&mut st.dev, bytes_of(&kernel.propagator))?);
        }
        let bb = batch * modes * m * m * Self::C;
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
            eps: kernel.eps.f64(),
            batch,
            positions,
            state: Mutex::new(st),
        })
    }

    /// 1/M in the working precision (as f64, for a launch's `real`).
    fn inv_m(&self) -> f64 {
        (T::one() / T::of(self.m as f64)).f64()
    }

    /// 1/M² in the working precision, formed as (1/M)(1/M).
    fn inv_m2(&self) -> f64 {
        let sc = T::one() / T::of(self.m as f64);
        (sc * sc).f64()
    }

    /// Positions per batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The geometry of `obj` staged on the device. Errors: a multislice object without the
    /// kernel's propagator, or one where `single` (the single-slice operations) is asked.
    fn geo(&self, st: &State<D>, obj: &Field<Complex<T>>, single: bool) -> Result<Geo> {
        let planes = obj.planes();
        if planes > 1 && (single || st.prop.is_none()) {
            return Err(Error::new(
                self.name,
                if single {
                    "this operation computes single-slice objects only (multislice: gradients, model intensities)"
                } else {
                    "a multislice object needs the kernel's propagator"
                },
            ));
        }
        // batch buffers P, ψ and S − 1 incident waves within the memory of P and ψ
        let batch = if planes > 1 {
            (self.batch * 2 / (planes + 1)).max(1)
        } else {
            self.batch
        };
        Ok(Geo {
            h: obj.shape[0],
            plane: obj.plane_len(),
            planes,
            batch,
        })
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
    /// idx, win) device pointers and the window offsets (row, column) on the host.
    fn stage(
        &self,
        st: &mut State<D>,
        obj: &Field<Complex<T>>,
        probe_hat: Option<&[Complex<T>]>,
        sel: &Selection,
    ) -> Result<([DPtr; 4], Vec<[i32; 2]>)> {
        self.check_probe_hat(probe_hat)?;
        sel.check(self.positions.len())?;
        let ix = sel.to_vec();
        let win = self.windows(obj.origin, obj.shape, &ix)?;
        let [h, w] = obj.shape;
        let n = obj.data.len();
        let stage = st.buf("obj_stage", n * Self::C)?;
        st.up(stage, bytes_of(&obj.data))?;
        let obj_t = st.buf("obj_t", n * Self::C)?;
        // plane by plane: objT is [S][x][y]
        for off in (0..n).step_by((h * w).max(1)) {
            let o = (off * Self::C) as u64;
            launch::transpose_c(&mut st.dev, blocks(h * w), obj_t + o, stage + o, h, w)?;
        }
        let ph = match probe_hat {
            Some(probe_hat) => {
                let ph = st.buf("probe_hat", probe_hat.len() * Self::C)?;
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
        Ok(([obj_t, ph, idx_d, win_d], win))
    }

    /// Error unless `probe_hat` (if given) has K M² values.
    fn check_probe_hat(&self, probe_hat: Option<&[Complex<T>]>) -> Result<()> {
        let want = self.modes * self.m * self.m;
        match probe_hat.filter(|p| p.len() != want) {
            Some(p) => Err(Error::new(
                self.name,
                format!("probe spectrum has {} values, expected {want}", p.len()),
            )),
            None => Ok(()),
        }
    }

    /// The window origins (row, column; [`super::window_offsets`]) of positions `ix` in a
    /// field with `origin` and `shape`.
    fn windows(&self, origin: [i64; 2], shape: [usize; 2], ix: &[usize]) -> Result<Vec<[i32; 2]>> {
        let field = Field::<u8> {
            origin,
            shape,
            data: Vec::new(),
        };
        super::window_offsets(&field, self.m, ix.iter().map(|&j| &self.positions[j]))
    }

    /// Shifted probes into P and far fields Ψ_raw into ψ for positions `s..s+nb` of the
    /// staged selection; multislice (docs/algorithm.md §12): the waves incident on slices
    /// 1..S into the buffer `ms_waves` ([S−1][batch][K][x][y]).
    fn forward(
        &self,
        st: &mut State<D>,
        staged: [DPtr; 4],
        geo: Geo,
        s: usize,
        nb: usize,
    ) -> Result<()> {
        let [obj_t, ph, idx, win] = staged;
        let h = geo.h;
        let (m, k) = (self.m, self.modes);
        let n = nb * k * m * m;
        let (p, psi, full) = (st.p.ptr, st.psi.ptr, geo.batch * k);
        let (idx_b, win_b) = (idx + 4 * s as u64, win + 8 * s as u64);
        let sc = self.inv_m();
        launch::shift_probe(
            &mut st.dev,
            blocks(n),
            p,
            ph,
            st.ramp_y.ptr,
            st.ramp_x.ptr,
            idx_b,
            m,
            k,
            nb,
            sc,
            0,
        )?;
        st.mark("shift_probe: probe spectrum x ramps")?;
        st.fft(p, m, nb * k, full, true)?;
        st.mark("FFT: shifted probes")?;
        launch::exit_wave(&mut st.dev, blocks(n), psi, p, obj_t, win_b, h, m, k, nb)?;
        st.mark("exit_wave: probe x object window")?;
        if geo.planes > 1 {
            let [waves, prop] = self.multislice_buffers(st, geo)?;
            for sl in 1..geo.planes {
                // ψ ← F⁻¹[H F ψ], kept as the wave incident on slice sl, then ψ ← ψ O_sl
                st.fft(psi, m, nb * k, full, false)?;
                launch::propagate(&mut st.dev, blocks(n), psi, prop, m, k, nb, 0)?;
                st.fft(psi, m, nb * k, full, true)?;
                st.dev.copy(
                    waves + ((sl - 1) * full * m * m * Self::C) as u64,
                    psi,
                    n * Self::C,
                )?;
                let o_sl = obj_t + (sl * geo.plane * Self::C) as u64;
                launch::exit_wave(&mut st.dev, blocks(n), psi, psi, o_sl, win_b, h, m, k, nb)?;
            }
            st.mark("multislice: propagations through the slices")?;
        }
        st.fft(psi, m, nb * k, full, false)?;
        st.mark("FFT: far fields")
    }

    /// The incident-wave buffer of `geo`'s batches ([S−1][batch][K][M²] complex) and
    /// the propagator.
    fn multislice_buffers(&self, st: &mut State<D>, geo: Geo) -> Result<[DPtr; 2]> {
        let bytes = (geo.planes - 1) * geo.batch * self.modes * self.m * self.m * Self::C;
        let waves = st.buf("ms_waves", bytes)?;
        let prop = st.prop.map(|b| b.ptr).ok_or_else(|| {
            Error::new(
                self.name,
                "a multislice object needs the kernel's propagator",
            )
        })?;
        Ok([waves, prop])
    }

    /// The gradient sums of the `ns` staged positions ([`Gpu::stage`]: objT of column
    /// height `h`, probe spectrum, indices, windows; `wins` the windows on the host), in
    /// batches: added to the object sums [g_T, d_T] (transposed; [`Gpu::gather`]) and, with
    /// `want_probe`, to the probe sums [g_P̂, d_P^T]; each position's loss written at
    /// `loss` (f64, selection order); with `terms`, each position's
    /// [∂L/∂c_y, ∂L/∂c_x, curvature y, curvature x] (4 f64, selection order; docs/algorithm.md
    /// §14) written there.
    #[allow(clippy::too_many_arguments)]
    fn sum_pass(
        &self,
        st: &mut State<D>,
        staged: [DPtr; 4],
        wins: &[[i32; 2]],
        geo: Geo,
        [g_t, d_t, gp, dp_t]: [DPtr; 4],
        loss: DPtr,
        want_probe: bool,
        terms: Option<DPtr>,
    ) -> Result<()> {
        let (m, k) = (self.m, self.modes);
        let mm = m * m;
        let ns = wins.len();
        let h = geo.h;
        let [obj_t, ph, idx, win] = staged;
        let (sc, sc2) = (self.inv_m(), self.inv_m2());
        let g = st.weights.map_or(0, |b| b.ptr);
        let noise = self.noise_code();
        for s in (0..ns).step_by(geo.batch) {
            let nb = geo.batch.min(ns - s);
            let n = nb * k * mm;
            let (idx_b, win_b) = (idx + 4 * s as u64, win + 8 * s as u64);
            let (p, psi, full) = (st.p.ptr, st.psi.ptr, geo.batch * k);
            let wins_b = &wins[s..s + nb];
            self.forward(st, staged, geo, s, nb)?;
            launch::residual(
                &mut st.dev,
                nb,
                psi,
                loss + 8 * s as u64,
                st.meas.ptr,
                g,
                idx_b,
                m,
                k,
                noise,
                self.eps,
                sc2,
                sc2,
            )?;
            st.mark("residual: noise model, loss")?;
            st.fft(psi, m, nb * k, full, true)?;
            st.mark("FFT: back-propagation")?;
            if geo.planes > 1 {
                // slices S−1 … 1: g_O_s += ψ*_s b_s, D_O_s += |ψ_s|²; b_{s−1} = F⁻¹[H* F(O*_s b_s)]
                let [waves, prop] = self.multislice_buffers(st, geo)?;
                for sl in (1..geo.planes).rev() {
                    let wave = waves + ((sl - 1) * full * mm * Self::C) as u64;
                    let sums = [
                        g_t + (sl * geo.plane * 16) as u64,
                        d_t + (sl * geo.plane * 8) as u64,
                    ];
                    self.gather(st, sums, [psi, wave], win_b, wins_b, h)?;
                    let o_sl = obj_t + (sl * geo.plane * Self::C) as u64;
                    launch::conj_object(&mut st.dev, blocks(n), psi, o_sl, win_b, h, m, k, nb)?;
                    st.fft(psi, m, nb * k, full, false)?;
                    launch::propagate(&mut st.dev, blocks(n), psi, prop, m, k, nb, 1)?;
                    st.fft(psi, m, nb * k, full, true)?;
                }
                st.mark("multislice: slices' sums and back-propagations")?;
            }
            self.gather(st, [g_t, d_t], [psi, p], win_b, wins_b, h)?;
            st.mark("gather_sums: object sums, one thread per pixel")?;
            if want_probe || terms.is_some() {
                // t = O*_0 b_0, the adjoint at the shifted probe
                launch::conj_object(&mut st.dev, blocks(n), psi, obj_t, win_b, h, m, k, nb)?;
            }
            if let Some(terms) = terms {
                // the curvature from the shifted probes, then P holds ∂P/∂c_y, ∂P/∂c_x in turn
                let out = terms + (32 * s) as u64;
                launch::position_curv(&mut st.dev, nb, out, p, obj_t, win_b, h, m, k)?;
                for axis in 0..2 {
                    let (ry, rx) = (st.ramp_y.ptr, st.ramp_x.ptr);
                    launch::shift_probe(
                        &mut st.dev,
                        blocks(n),
                        p,
                        ph,
                        ry,
                        rx,
                        idx_b,
                        m,
                        k,
                        nb,
                        sc,
                        axis + 1,
                    )?;
                    st.fft(p, m, nb * k, full, true)?;
                    launch::position_grad(&mut st.dev, nb, out, p, psi, m, k, axis)?;
                }
                st.mark("position_curv, position_grad: position terms")?;
            }
            if want_probe {
                st.fft(psi, m, nb * k, full, false)?;
                st.mark("FFT: probe gradient")?;
                self.add_probe_sums(st, [gp, dp_t], [psi, obj_t], [idx_b, win_b], h, nb)?;
                st.mark("probe_grad, probe_density: probe sums")?;
            }
        }
        Ok(())
    }

    /// Add one batch's object sums to [g_T, d_T] (field height `h`): Σ_b Σ_k conj(P) b and
    /// Σ_b Σ_k |P|² from the shifted probes `p` and waves `psi` of the batch, whose windows
    /// are `win` on the device and `wins` on the host (`gather_sums`: one thread per pixel
    /// of the windows' bounding rectangle, terms in (position, mode) order, no atomics).
    fn gather(
        &self,
        st: &mut State<D>,
        [g_t, d_t]: [DPtr; 2],
        [psi, p]: [DPtr; 2],
        win: DPtr,
        wins: &[[i32; 2]],
        h: usize,
    ) -> Result<()> {
        let (m, k) = (self.m, self.modes);
        let (Some(lo), Some(hi)) = (
            wins.iter()
                .copied()
                .reduce(|a, b| [a[0].min(b[0]), a[1].min(b[1])]),
            wins.iter()
                .copied()
                .reduce(|a, b| [a[0].max(b[0]), a[1].max(b[1])]),
        ) else {
            return Ok(());
        };
        // window offsets lie inside the field (window_offsets), so none is negative
        let [y0, x0] = lo.map(|v| v as usize);
        let [gh, gw] = [hi[0] as usize + m - y0, hi[1] as usize + m - x0];
        launch::gather_sums(
            &mut st.dev,
            blocks(gh * gw),
            g_t,
            d_t,
            psi,
            p,
            win,
            h,
            y0,
            x0,
            gh,
            gw,
            m,
            k,
            wins.len(),
        )
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
        launch::transpose_d(
            &mut st.dev,
            blocks(rows * cols),
            out,
            src,
            rows,
            cols,
            comps,
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
        // one plane per slice, as `out` was made
        let hw = h * w;
        let planes = out.g_obj.data.len() / hw.max(1);
        let (mut g, mut d) = (
            Vec::with_capacity(planes * hw),
            Vec::with_capacity(planes * hw),
        );
        for sl in 0..planes {
            let gv = self.download_t(st, g_t + (sl * hw * 16) as u64, w, h, 2)?;
            g.extend(gv.chunks_exact(2).map(|c| Complex::new(c[0], c[1])));
            d.extend(self.download_t(st, d_t + (sl * hw * 8) as u64, w, h, 1)?);
        }
        (out.g_obj.data, out.d_obj.data) = (g, d);
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

    /// Copy host exit waves ([planes][y][x], complex) to `dst` as [planes][x][y].
    fn upload_planes(&self, st: &mut State<D>, dst: DPtr, host: &[Complex<T>]) -> Result<()> {
        let stage = st.buf("planes", host.len() * Self::C)?;
        st.up(stage, bytes_of(host))?;
        let planes = host.len() / (self.m * self.m);
        launch::transpose_planes(&mut st.dev, blocks(host.len()), dst, stage, self.m, planes)
    }

    /// Copy `src` ([planes][x][y]) back to host exit waves ([planes][y][x]).
    fn download_planes(&self, st: &mut State<D>, src: DPtr, host: &mut [Complex<T>]) -> Result<()> {
        let stage = st.buf("planes", host.len() * Self::C)?;
        let planes = host.len() / (self.m * self.m);
        launch::transpose_planes(&mut st.dev, blocks(host.len()), stage, src, self.m, planes)?;
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
        launch::probe_grad(
            &mut st.dev,
            blocks(k * m * m),
            gp,
            psi,
            st.ramp_y.ptr,
            st.ramp_x.ptr,
            idx,
            m,
            k,
            nb,
            self.inv_m(),
        )?;
        launch::probe_density(&mut st.dev, blocks(m * m), dp_t, obj_t, win, h, m, nb)
    }

    /// [`Compute::gradients`], and with `want_positions` also
    /// [`Compute::gradients_and_positions`]' per-position terms (the other sums are the
    /// same either way: the position terms only read the batch buffers).
    fn sums(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
        want_probe: bool,
        want_positions: bool,
    ) -> Result<Gradients<T>> {
        let (m, k) = (self.m, self.modes);
        let mm = m * m;
        let probe_dims = want_probe.then_some((k, mm));
        let planes = obj.planes();
        if sel.is_empty() {
            return Ok(Gradients::zeros(obj.origin, obj.shape, planes, probe_dims));
        }
        self.with(|st| {
            if st.prof.is_some() {
                st.dev.clear_events();
                st.prof = Some(Vec::new());
                st.mark("start")?;
            }
            let geo = self.geo(st, obj, false)?;
            let (staged, wins) = self.stage(st, obj, Some(probe_hat), &sel)?;
            let n = obj.data.len();
            let ns = sel.len();
            let g_t = st.buf("g_t", n * 16)?;
            let d_t = st.buf("d_t", n * 8)?;
            let gp = st.buf("gp", k * mm * 16)?;
            let dp_t = st.buf("dp_t", mm * 8)?;
            let loss = st.buf("loss", ns * 8)?;
            let terms = match want_positions {
                true => Some(st.buf("position_terms", ns * 32)?),
                false => None,
            };
            st.dev.zero(g_t, n * 16)?;
            st.dev.zero(d_t, n * 8)?;
            st.dev.zero(gp, k * mm * 16)?;
            st.dev.zero(dp_t, mm * 8)?;
            st.mark("upload object, probe, selection; zero sums")?;
            self.sum_pass(
                st,
                staged,
                &wins,
                geo,
                [g_t, d_t, gp, dp_t],
                loss,
                want_probe,
                terms,
            )?;
            let mut out = Gradients::zeros(obj.origin, obj.shape, planes, probe_dims);
            self.download_object_sums(st, [g_t, d_t], obj.shape, &mut out)?;
            if want_probe {
                self.download_probe_sums(st, [gp, dp_t], &mut out)?;
            }
            out.loss = self.download_loss(st, loss, ns)?;
            if let Some(terms) = terms {
                out.g_pos = self.download_position_terms(st, terms, &sel)?;
            }
            st.mark("transpose and download sums")?;
            Ok(out)
        })
    }

    /// The per-position terms at `terms` ([n][4] f64: ∂L/∂c_y, ∂L/∂c_x, curvature y, x)
    /// of the positions of `sel`, in selection order.
    fn download_position_terms(
        &self,
        st: &mut State<D>,
        terms: DPtr,
        sel: &Selection,
    ) -> Result<Vec<PositionGradient>> {
        let mut v = vec![0f64; sel.len() * 4];
        st.down(bytemuck::cast_slice_mut(&mut v), terms)?;
        Ok(sel
            .to_vec()
            .into_iter()
            .zip(v.chunks_exact(4))
            .map(|(j, t)| PositionGradient {
                index: self.positions[j].index,
                grad: [t[0], t[1]],
                curv: [t[2], t[3]],
            })
            .collect())
    }

    /// [`Compute::set_positions`]: new shift ramps uploaded in place of the old ones (same
    /// sizes); the resident selections' cached windows are dropped, so the next call
    /// uploads the new ones. Errors: another count or order of positions; a device failure.
    fn replace_positions(&mut self, positions: Arc<[PositionGeom<T>]>) -> Result<()> {
        super::check_same_positions(&self.positions, &positions)
            .map_err(|e| Error::new(self.name, e.msg))?;
        self.with(|st| {
            let [ry, rx] = ramps(&positions);
            let (ry_d, rx_d) = (st.ramp_y.ptr, st.ramp_x.ptr);
            if !ry.is_empty() {
                st.up(ry_d, bytes_of(&ry))?;
                st.up(rx_d, bytes_of(&rx))?;
            }
            if let Some(res) = st.res.as_mut() {
                res.forget_selections();
            }
            Ok(())
        })?;
        self.positions = positions;
        Ok(())
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
        self.sums(obj, probe_hat, sel, want_probe, false)
    }

    fn gradients_and_positions(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
        want_probe: bool,
    ) -> Result<Gradients<T>> {
        self.sums(obj, probe_hat, sel, want_probe, true)
    }

    fn set_positions(&mut self, positions: Arc<[PositionGeom<T>]>) -> Result<()> {
        self.replace_positions(positions)
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
            let geo = self.geo(st, obj, false)?;
            let (staged, _) = self.stage(st, obj, Some(probe_hat), &sel)?;
            let ns = sel.len();
            let out = st.buf("intensities", ns * mm * std::mem::size_of::<T>())?;
            for s in (0..ns).step_by(geo.batch) {
                let nb = geo.batch.min(ns - s);
                self.forward(st, staged, geo, s, nb)?;
                launch::intensities(
                    &mut st.dev,
                    blocks(nb * mm),
                    out + (s * mm * std::mem::size_of::<T>()) as u64,
                    st.psi.ptr,
                    m,
                    k,
                    nb,
                    self.inv_m2(),
                )?;
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
        self.dm_pass(obj, probe_hat, sel, init, step)
    }

    fn probe_sums(&self, obj: &Field<Complex<T>>, sel: Selection) -> Result<Gradients<T>> {
        self.dm_probe_sums(obj, sel)
    }

    fn exit_waves(&self) -> Result<Vec<Complex<T>>> {
        self.copy_exit_waves()
    }

    fn set_exit_waves(&self, waves: Vec<Complex<T>>) -> Result<()> {
        self.load_exit_waves(waves)
    }

    fn pie_sweep(
        &self,
        obj: &mut Field<Complex<T>>,
        probe_hat: &mut [Complex<T>],
        sel: Selection,
        step: &PieStep,
        illum: &mut Field<f64>,
    ) -> Result<f64> {
        self.pie_pass(obj, probe_hat, sel, step, illum)
    }

    fn resident(&self) -> Option<&dyn Resident<T>> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_has_every_kernel_and_no_include() {
        let s = kernel_source(false);
        assert!(
            !s.lines().any(|l| l.trim_start().starts_with("#include")),
            "an #include is left"
        );
        assert!(s.contains("typedef float2 cf;"), "compat.h not pasted");
        assert!(!s.contains("#define PTY_F64"));
        let w = kernel_source(true);
        assert!(w.starts_with("#define PTY_F64 1\n") && w.ends_with(&s));
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
}
