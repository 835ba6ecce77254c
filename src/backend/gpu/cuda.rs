//! CUDA [`Device`]: the driver API, NVRTC and cuFFT through cudarc's raw bindings, all
//! loaded at run time (libcuda.so.1; libnvrtc and libcufft of CUDA 13 or 12, whichever the
//! library path offers first; docs/gpu.md).

use super::{cache_key, cached, kernel_source, Args, DPtr, Device, BLOCK, KERNELS};
use crate::error::{Error, Result};
use cudarc::cufft::{result as fr, sys as fs};
use cudarc::driver::{result as dr, sys as ds};
use cudarc::nvrtc::{result as nr, sys as ns};
use std::collections::HashMap;
use std::ffi::CString;

fn err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::new("backend", format!("{what} failed: {e:?}"))
}

/// Libraries load and at least one device is present.
pub fn available() -> Result<()> {
    libraries()?;
    let n = device_count()?;
    if n == 0 {
        return Err(Error::new(
            "backend",
            "the CUDA driver reports no GPU on this machine",
        ));
    }
    Ok(())
}

/// Check that libcuda, libnvrtc and libcufft can be loaded (before any call that would panic).
pub fn libraries() -> Result<()> {
    // SAFETY: each only tries to dlopen the library's candidate names.
    if !unsafe { ds::is_culib_present() } {
        return Err(Error::new("backend", "cannot load the CUDA driver library libcuda.so (no NVIDIA driver on this machine); use --backend cpu"));
    }
    nvrtc_present()?;
    if !unsafe { fs::is_culib_present() } {
        return Err(Error::new("backend", "cannot load cuFFT (libcufft.so.12 or .so.11 of CUDA 13 or 12); put the CUDA toolkit's lib64 on LD_LIBRARY_PATH"));
    }
    Ok(())
}

/// Check that NVRTC can be loaded.
pub fn nvrtc_present() -> Result<()> {
    // SAFETY: only tries to dlopen libnvrtc's candidate names.
    if !unsafe { ns::is_culib_present() } {
        return Err(Error::new("backend", "cannot load NVRTC (libnvrtc.so.13 or .so.12 of CUDA 13 or 12); put the CUDA toolkit's lib64 on LD_LIBRARY_PATH"));
    }
    Ok(())
}

fn device_count() -> Result<usize> {
    dr::init().map_err(|e| err("cuInit", e))?;
    Ok(dr::device::get_count().map_err(|e| err("cuDeviceGetCount", e))? as usize)
}

/// NVRTC's version as "nvrtc MAJOR.MINOR".
pub fn nvrtc_version() -> Result<String> {
    let (mut a, mut b) = (0, 0);
    // SAFETY: two valid out-pointers.
    unsafe { ns::nvrtcVersion(&mut a, &mut b) }
        .result()
        .map_err(|e| err("nvrtcVersion", e))?;
    Ok(format!("nvrtc {a}.{b}"))
}

/// Compile kernels/ptycho.cu with NVRTC through the memory and disk caches ([`cached`]):
/// for a real architecture ("sm_90") to a CUBIN, which any driver of the toolkit's major
/// version loads (PTX from an NVRTC newer than the driver would not JIT); for a virtual one
/// ("compute_90") to PTX; with `wide`, the f64 kernels ([`kernel_source`]). Errors carry
/// NVRTC's log.
pub fn compile(arch: &str, wide: bool) -> Result<std::sync::Arc<Vec<u8>>> {
    nvrtc_present()?;
    let src = kernel_source(wide);
    let cubin = arch.starts_with("sm_");
    let opts = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++14".to_string(),
    ];
    let key = cache_key(&src, &opts, arch, &nvrtc_version()?);
    cached(key, if cubin { "cubin" } else { "ptx" }, || {
        let csrc = CString::new(src.clone()).map_err(|e| err("kernel source", e))?;
        let name = CString::new("ptycho.cu").expect("no NUL");
        let prog =
            nr::create_program(&csrc, Some(&name)).map_err(|e| err("nvrtcCreateProgram", e))?;
        // SAFETY: prog is a live program; destroyed below on every path.
        let res = unsafe { nr::compile_program(prog, &opts) };
        let out = match res {
            Ok(()) if cubin => unsafe { get_cubin(prog) },
            Ok(()) => unsafe { nr::get_ptx(prog) }
                .map_err(|e| err("nvrtcGetPTX", e))
                .map(|p| p.iter().map(|&c| c as u8).collect::<Vec<u8>>()),
            Err(e) => {
                let log = unsafe { nr::get_program_log(prog) }
                    .map(|l| {
                        l.iter()
                            .take_while(|&&c| c != 0)
                            .map(|&c| c as u8 as char)
                            .collect::<String>()
                    })
                    .unwrap_or_default();
                Err(Error::new(
                    "kernels/ptycho.cu",
                    format!("NVRTC ({arch}) failed: {e:?}: {}", log.trim()),
                ))
            }
        };
        // SAFETY: prog is not used after this.
        let _ = unsafe { nr::destroy_program(prog) };
        out
    })
}

/// The CUBIN of a program compiled for a real architecture.
unsafe fn get_cubin(prog: ns::nvrtcProgram) -> Result<Vec<u8>> {
    let mut n = 0usize;
    ns::nvrtcGetCUBINSize(prog, &mut n)
        .result()
        .map_err(|e| err("nvrtcGetCUBINSize", e))?;
    let mut v = vec![0u8; n];
    ns::nvrtcGetCUBIN(prog, v.as_mut_ptr() as *mut _)
        .result()
        .map_err(|e| err("nvrtcGetCUBIN", e))?;
    Ok(v)
}

/// One CUDA device with its primary context, a stream, the kernels and cached FFT plans.
pub struct Cuda {
    dev: ds::CUdevice,
    ctx: ds::CUcontext,
    stream: ds::CUstream,
    module: ds::CUmodule,
    funcs: HashMap<&'static str, ds::CUfunction>,
    plans: HashMap<(usize, usize), fs::cufftHandle>,
    events: Vec<ds::CUevent>,
    describe: String,
    wide: bool,
}

// SAFETY: the raw handles are used only under the owning `Gpu`'s mutex, after `bind` makes
// the context current on the calling thread.
unsafe impl Send for Cuda {}

impl Cuda {
    /// Open device `local_rank mod count` (its primary context, shared by ranks of this
    /// process on the same GPU), compile and load the kernels: f64 kernels and Z2Z
    /// transforms with `wide`, else f32 and C2C.
    pub fn open(local_rank: usize, wide: bool) -> Result<Cuda> {
        libraries()?;
        let count = device_count()?;
        let ordinal = super::super::device_for(local_rank, count).ok_or_else(|| {
            Error::new("backend", "the CUDA driver reports no GPU on this machine")
        })?;
        let dev = dr::device::get(ordinal as i32).map_err(|e| err("cuDeviceGet", e))?;
        // SAFETY: dev is a valid device; the context is released in Drop.
        let ctx = unsafe { dr::primary_ctx::retain(dev) }
            .map_err(|e| err("cuDevicePrimaryCtxRetain", e))?;
        unsafe { dr::ctx::set_current(ctx) }.map_err(|e| err("cuCtxSetCurrent", e))?;
        let attr = |a| {
            unsafe { dr::device::get_attribute(dev, a) }.map_err(|e| err("cuDeviceGetAttribute", e))
        };
        let major = attr(ds::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attr(ds::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        if major < 6 {
            return Err(Error::new("backend", format!("GPU {ordinal} has compute capability {major}.{minor}; ptytile needs 6.0 or newer")));
        }
        let name = dr::device::get_name(dev).unwrap_or_else(|_| "CUDA device".into());
        let cubin = compile(&format!("sm_{major}{minor}"), wide)?;
        // SAFETY: a CUBIN for this device; the module is unloaded in Drop.
        let module = unsafe { dr::module::load_data(cubin.as_ptr() as *const _) }
            .map_err(|e| err("cuModuleLoadData", e))?;
        let mut funcs = HashMap::new();
        for &k in KERNELS {
            let cname = CString::new(k).expect("no NUL");
            let f = unsafe { dr::module::get_function(module, cname) }
                .map_err(|e| err(&format!("cuModuleGetFunction({k})"), e))?;
            funcs.insert(k, f);
        }
        let stream = dr::stream::create(dr::stream::StreamKind::NonBlocking)
            .map_err(|e| err("cuStreamCreate", e))?;
        let describe = format!(
            "{name} (CUDA device {ordinal} of {count}, sm_{major}{minor}, {})",
            nvrtc_version()?
        );
        Ok(Cuda {
            dev,
            ctx,
            stream,
            module,
            funcs,
            plans: HashMap::new(),
            events: Vec::new(),
            describe,
            wide,
        })
    }

    fn plan(&mut self, m: usize, count: usize) -> Result<fs::cufftHandle> {
        if let Some(p) = self.plans.get(&(m, count)) {
            return Ok(*p);
        }
        let mut n = [m as i32, m as i32];
        // SAFETY: n outlives the call; null embeds mean contiguous arrays.
        let plan = unsafe {
            fr::plan_many(
                2,
                n.as_mut_ptr(),
                std::ptr::null_mut(),
                1,
                (m * m) as i32,
                std::ptr::null_mut(),
                1,
                (m * m) as i32,
                if self.wide {
                    fs::cufftType::CUFFT_Z2Z
                } else {
                    fs::cufftType::CUFFT_C2C
                },
                count as i32,
            )
        }
        .map_err(|e| err(&format!("cufftPlanMany({m}x{m} x {count})"), e))?;
        unsafe { fs::cufftSetStream(plan, self.stream as _) }
            .result()
            .map_err(|e| err("cufftSetStream", e))?;
        self.plans.insert((m, count), plan);
        Ok(plan)
    }
}

impl Device for Cuda {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn wide(&self) -> bool {
        self.wide
    }

    fn bind(&self) -> Result<()> {
        // SAFETY: ctx is retained until Drop.
        unsafe { dr::ctx::set_current(self.ctx) }.map_err(|e| err("cuCtxSetCurrent", e))
    }

    fn alloc(&mut self, bytes: usize) -> Result<DPtr> {
        // SAFETY: plain allocation; freed by `free`.
        unsafe { dr::malloc_sync(bytes.max(1)) }
            .map_err(|e| err(&format!("cuMemAlloc({bytes} bytes)"), e))
    }

    fn free(&mut self, p: DPtr) {
        let _ = self.sync();
        // SAFETY: p came from `alloc` and is freed once.
        let _ = unsafe { dr::free_sync(p) };
    }

    fn upload(&mut self, dst: DPtr, src: &[u8]) -> Result<()> {
        // SAFETY: dst holds at least src.len() bytes (callers size buffers); pageable source
        // memory makes the copy complete before the call returns.
        unsafe { dr::memcpy_htod_async(dst, src, self.stream) }
            .map_err(|e| err("cuMemcpyHtoDAsync", e))?;
        self.sync()
    }

    fn download(&mut self, dst: &mut [u8], src: DPtr) -> Result<()> {
        unsafe { dr::memcpy_dtoh_async(dst, src, self.stream) }
            .map_err(|e| err("cuMemcpyDtoHAsync", e))?;
        self.sync()
    }

    fn zero(&mut self, p: DPtr, bytes: usize) -> Result<()> {
        unsafe { dr::memset_d8_async(p, 0, bytes, self.stream) }
            .map_err(|e| err("cuMemsetD8Async", e))
    }

    fn copy(&mut self, dst: DPtr, src: DPtr, bytes: usize) -> Result<()> {
        unsafe { dr::memcpy_dtod_async(dst, src, bytes, self.stream) }
            .map_err(|e| err("cuMemcpyDtoDAsync", e))
    }

    fn launch(&mut self, name: &'static str, blocks: usize, mut args: Args) -> Result<()> {
        let f = *self
            .funcs
            .get(name)
            .ok_or_else(|| Error::new("backend", format!("kernel {name} not loaded")))?;
        let mut ptrs = args.pointers();
        // SAFETY: the argument slots match the kernel's parameters (kernels/ptycho.cu) and
        // outlive the call, which copies them.
        unsafe {
            dr::launch_kernel(
                f,
                (blocks as u32, 1, 1),
                (BLOCK, 1, 1),
                0,
                self.stream,
                &mut ptrs,
            )
        }
        .map_err(|e| err(&format!("launch of {name}"), e))
    }

    fn fft(&mut self, data: DPtr, m: usize, count: usize, inverse: bool) -> Result<()> {
        let plan = self.plan(m, count)?;
        let dir = if inverse { 1 } else { -1 };
        if self.wide {
            let p = data as *mut fs::cufftDoubleComplex;
            // SAFETY: data holds count M×M complex f64 arrays; the plan is Z2Z.
            return unsafe { fr::exec_z2z(plan, p, p, dir) }.map_err(|e| err("cufftExecZ2Z", e));
        }
        let p = data as *mut fs::cufftComplex;
        // SAFETY: data holds count M×M complex f32 arrays; the plan is C2C.
        unsafe { fr::exec_c2c(plan, p, p, dir) }.map_err(|e| err("cufftExecC2C", e))
    }

    fn sync(&mut self) -> Result<()> {
        unsafe { dr::stream::synchronize(self.stream) }.map_err(|e| err("cuStreamSynchronize", e))
    }

    fn record(&mut self) -> Result<usize> {
        let ev = dr::event::create(ds::CUevent_flags::CU_EVENT_DEFAULT)
            .map_err(|e| err("cuEventCreate", e))?;
        unsafe { dr::event::record(ev, self.stream) }.map_err(|e| err("cuEventRecord", e))?;
        self.events.push(ev);
        Ok(self.events.len() - 1)
    }

    fn elapsed_ms(&mut self, a: usize, b: usize) -> Result<f32> {
        let (ea, eb) = (self.events[a], self.events[b]);
        unsafe { dr::event::synchronize(eb) }.map_err(|e| err("cuEventSynchronize", e))?;
        unsafe { dr::event::elapsed(ea, eb) }.map_err(|e| err("cuEventElapsedTime", e))
    }

    fn clear_events(&mut self) {
        for e in self.events.drain(..) {
            // SAFETY: created by `record`, destroyed once.
            let _ = unsafe { dr::event::destroy(e) };
        }
    }

    fn free_memory(&self) -> Result<usize> {
        Ok(dr::mem_get_info().map_err(|e| err("cuMemGetInfo", e))?.0)
    }
}

impl Drop for Cuda {
    fn drop(&mut self) {
        if self.bind().is_err() {
            return;
        }
        let _ = self.sync();
        // SAFETY: every handle below was created by this value and is destroyed once.
        unsafe {
            for p in self.plans.values() {
                let _ = fr::destroy(*p);
            }
            for e in &self.events {
                let _ = dr::event::destroy(*e);
            }
            let _ = dr::stream::destroy(self.stream);
            let _ = dr::module::unload(self.module);
            let _ = dr::primary_ctx::release(self.dev);
        }
    }
}
