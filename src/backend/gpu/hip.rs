//! HIP [`Device`] (AMD GPUs): the HIP runtime and hiprtc through cubecl-hip-sys, hipFFT
//! through a small libloading table; all loaded at run time (libamdhip64, libhiprtc,
//! libhipfft of ROCm 6, found on the library path or under `$ROCM_PATH/lib`).

use super::{cache_key, cached, kernel_source, Args, DPtr, Device, BLOCK, KERNELS};
use crate::error::{Error, Result};
use cubecl_hip_sys as h;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

fn check(what: &str, code: h::hipError_t) -> Result<()> {
    if code == h::HIP_SUCCESS as h::hipError_t {
        Ok(())
    } else {
        Err(Error::new(
            "backend",
            format!("{what} failed: HIP error {code}"),
        ))
    }
}

/// Libraries load and at least one device is present.
pub fn available() -> Result<()> {
    libraries()?;
    if device_count()? == 0 {
        return Err(Error::new(
            "backend",
            "the HIP runtime reports no GPU on this machine",
        ));
    }
    Ok(())
}

/// Check that libamdhip64, libhiprtc and libhipfft load (before any call that would panic).
pub fn libraries() -> Result<()> {
    if !h::is_available() {
        return Err(Error::new("backend", "cannot load the HIP runtime (libamdhip64.so and libhiprtc.so of ROCm 6; no ROCm on this machine, or set ROCM_PATH); use --backend cpu"));
    }
    hipfft().map(|_| ())
}

fn device_count() -> Result<usize> {
    let mut n: c_int = 0;
    // SAFETY: libraries are loaded; valid out-pointer.
    check("hipInit", unsafe { h::hipInit(0) })?;
    check("hipGetDeviceCount", unsafe { h::hipGetDeviceCount(&mut n) })?;
    Ok(n.max(0) as usize)
}

type PlanMany = unsafe extern "C" fn(
    *mut *mut c_void,
    c_int,
    *mut c_int,
    *mut c_int,
    c_int,
    c_int,
    *mut c_int,
    c_int,
    c_int,
    c_int,
    c_int,
) -> c_int;
type SetStream = unsafe extern "C" fn(*mut c_void, h::hipStream_t) -> c_int;
type ExecC2C = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut c_void, c_int) -> c_int;
type Destroy = unsafe extern "C" fn(*mut c_void) -> c_int;

/// hipFFT entry points (hipfft.h), resolved once.
struct HipFft {
    _lib: libloading::Library,
    plan_many: PlanMany,
    set_stream: SetStream,
    exec_c2c: ExecC2C,
    exec_z2z: ExecC2C,
    destroy: Destroy,
}

/// HIPFFT_C2C in hipfft.h.
const HIPFFT_C2C: c_int = 0x29;
/// HIPFFT_Z2Z in hipfft.h.
const HIPFFT_Z2Z: c_int = 0x69;

fn hipfft() -> Result<&'static HipFft> {
    static LIB: OnceLock<std::result::Result<HipFft, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        let mut names: Vec<std::path::PathBuf> = Vec::new();
        for dir in ["ROCM_PATH", "HIP_PATH"]
            .iter()
            .filter_map(std::env::var_os)
        {
            let d = std::path::PathBuf::from(dir).join("lib");
            names.extend(["libhipfft.so", "libhipfft.so.0"].map(|n| d.join(n)));
        }
        names.extend(
            [
                "libhipfft.so",
                "libhipfft.so.0",
                "/opt/rocm/lib/libhipfft.so",
            ]
            .map(std::path::PathBuf::from),
        );
        // SAFETY: loading hipFFT runs its initialisers only; the symbols are typed as in hipfft.h.
        unsafe {
            let lib = names
                .iter()
                .find_map(|n| libloading::Library::new(n).ok())
                .ok_or_else(|| {
                    "cannot load hipFFT (libhipfft.so of ROCm 6); install hipfft or set ROCM_PATH"
                        .to_string()
                })?;
            fn sym<F: Copy>(
                lib: &libloading::Library,
                name: &[u8],
            ) -> std::result::Result<F, String> {
                // SAFETY: F is the symbol's C signature from hipfft.h.
                unsafe { lib.get::<F>(name) }.map(|s| *s).map_err(|e| {
                    format!(
                        "hipFFT lacks {}: {e}",
                        String::from_utf8_lossy(&name[..name.len() - 1])
                    )
                })
            }
            Ok(HipFft {
                plan_many: sym::<PlanMany>(&lib, b"hipfftPlanMany\0")?,
                set_stream: sym::<SetStream>(&lib, b"hipfftSetStream\0")?,
                exec_c2c: sym::<ExecC2C>(&lib, b"hipfftExecC2C\0")?,
                // the same signature with hipfftDoubleComplex pointers
                exec_z2z: sym::<ExecC2C>(&lib, b"hipfftExecZ2Z\0")?,
                destroy: sym::<Destroy>(&lib, b"hipfftDestroy\0")?,
                _lib: lib,
            })
        }
    })
    .as_ref()
    .map_err(|e| Error::new("backend", e.clone()))
}

/// hiprtc's version as "hiprtc MAJOR.MINOR".
fn hiprtc_version() -> Result<String> {
    let (mut a, mut b) = (0, 0);
    // SAFETY: valid out-pointers.
    let r = unsafe { h::hiprtcVersion(&mut a, &mut b) };
    if r != h::hiprtcResult_HIPRTC_SUCCESS {
        return Err(Error::new("backend", format!("hiprtcVersion failed: {r}")));
    }
    Ok(format!("hiprtc {a}.{b}"))
}

/// Compile kernels/ptycho.cu to a code object for `arch` (e.g. "gfx90a") with hiprtc,
/// through the memory and disk caches; with `wide`, the f64 kernels ([`kernel_source`]).
pub fn compile(arch: &str, wide: bool) -> Result<std::sync::Arc<Vec<u8>>> {
    let src = kernel_source(wide);
    let opts = vec![format!("--offload-arch={arch}"), "-std=c++14".to_string()];
    let key = cache_key(&src, &opts, arch, &hiprtc_version()?);
    cached(key, "hsaco", || {
        let csrc = CString::new(src.clone())
            .map_err(|e| Error::new("kernels/ptycho.cu", e.to_string()))?;
        let name = CString::new("ptycho.cu").expect("no NUL");
        let copts: Vec<CString> = opts
            .iter()
            .map(|o| CString::new(o.as_str()).expect("no NUL"))
            .collect();
        let popts: Vec<*const c_char> = copts.iter().map(|o| o.as_ptr()).collect();
        let mut prog: h::hiprtcProgram = std::ptr::null_mut();
        // SAFETY: valid C strings that outlive the calls; prog destroyed below.
        unsafe {
            let r = h::hiprtcCreateProgram(
                &mut prog,
                csrc.as_ptr(),
                name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            );
            if r != h::hiprtcResult_HIPRTC_SUCCESS {
                return Err(Error::new(
                    "backend",
                    format!("hiprtcCreateProgram failed: {r}"),
                ));
            }
            let r = h::hiprtcCompileProgram(prog, popts.len() as c_int, popts.as_ptr());
            let out = if r == h::hiprtcResult_HIPRTC_SUCCESS {
                let mut n = 0usize;
                h::hiprtcGetCodeSize(prog, &mut n);
                let mut code = vec![0u8; n];
                h::hiprtcGetCode(prog, code.as_mut_ptr() as *mut c_char);
                Ok(code)
            } else {
                let mut n = 0usize;
                h::hiprtcGetProgramLogSize(prog, &mut n);
                let mut log = vec![0u8; n.max(1)];
                h::hiprtcGetProgramLog(prog, log.as_mut_ptr() as *mut c_char);
                let log = CStr::from_bytes_until_nul(&log)
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Err(Error::new(
                    "kernels/ptycho.cu",
                    format!("hiprtc ({arch}) failed: {r}: {}", log.trim()),
                ))
            };
            h::hiprtcDestroyProgram(&mut prog);
            out
        }
    })
}

/// One HIP device with a stream, the kernels and cached FFT plans.
pub struct Hip {
    ordinal: c_int,
    stream: h::hipStream_t,
    module: h::hipModule_t,
    funcs: HashMap<&'static str, h::hipFunction_t>,
    plans: HashMap<(usize, usize), *mut c_void>,
    events: Vec<h::hipEvent_t>,
    describe: String,
    wide: bool,
}

// SAFETY: the raw handles are used only under the owning `Gpu`'s mutex, after `bind` selects
// the device on the calling thread.
unsafe impl Send for Hip {}

impl Hip {
    /// Open device `local_rank mod count`, compile and load the kernels: f64 kernels and
    /// Z2Z transforms with `wide`, else f32 and C2C.
    pub fn open(local_rank: usize, wide: bool) -> Result<Hip> {
        libraries()?;
        let count = device_count()?;
        let ordinal = super::super::device_for(local_rank, count).ok_or_else(|| {
            Error::new("backend", "the HIP runtime reports no GPU on this machine")
        })? as c_int;
        // SAFETY: ordinal < count; prop is plain data filled by the runtime.
        let (name, arch) = unsafe {
            check("hipSetDevice", h::hipSetDevice(ordinal))?;
            let mut prop: h::hipDeviceProp_tR0600 = std::mem::zeroed();
            check(
                "hipGetDeviceProperties",
                h::hipGetDevicePropertiesR0600(&mut prop, ordinal),
            )?;
            let s = |v: &[c_char]| CStr::from_ptr(v.as_ptr()).to_string_lossy().into_owned();
            (s(&prop.name), s(&prop.gcnArchName))
        };
        // "gfx90a:sramecc+:xnack-" → the processor name is enough for hiprtc
        let arch = arch.split(':').next().unwrap_or("").to_string();
        let code = compile(&arch, wide)?;
        let mut module: h::hipModule_t = std::ptr::null_mut();
        let mut funcs = HashMap::new();
        let mut stream: h::hipStream_t = std::ptr::null_mut();
        // SAFETY: code is a code object for this device; handles released in Drop.
        unsafe {
            check(
                "hipModuleLoadData",
                h::hipModuleLoadData(&mut module, code.as_ptr() as *const c_void),
            )?;
            for &k in KERNELS {
                let cname = CString::new(k).expect("no NUL");
                let mut f: h::hipFunction_t = std::ptr::null_mut();
                check(
                    &format!("hipModuleGetFunction({k})"),
                    h::hipModuleGetFunction(&mut f, module, cname.as_ptr()),
                )?;
                funcs.insert(k, f);
            }
            check(
                "hipStreamCreate",
                h::hipStreamCreateWithFlags(&mut stream, 1),
            )?;
        }
        let describe = format!(
            "{name} (HIP device {ordinal} of {count}, {arch}, {})",
            hiprtc_version()?
        );
        Ok(Hip {
            ordinal,
            stream,
            module,
            funcs,
            plans: HashMap::new(),
            events: Vec::new(),
            describe,
            wide,
        })
    }

    fn plan(&mut self, m: usize, count: usize) -> Result<*mut c_void> {
        if let Some(p) = self.plans.get(&(m, count)) {
            return Ok(*p);
        }
        let f = hipfft()?;
        let mut n = [m as c_int, m as c_int];
        let mut plan: *mut c_void = std::ptr::null_mut();
        let mm = (m * m) as c_int;
        // SAFETY: n outlives the call; null embeds mean contiguous arrays.
        let r = unsafe {
            (f.plan_many)(
                &mut plan,
                2,
                n.as_mut_ptr(),
                std::ptr::null_mut(),
                1,
                mm,
                std::ptr::null_mut(),
                1,
                mm,
                if self.wide { HIPFFT_Z2Z } else { HIPFFT_C2C },
                count as c_int,
            )
        };
        if r != 0 {
            return Err(Error::new(
                "backend",
                format!("hipfftPlanMany({m}x{m} x {count}) failed: {r}"),
            ));
        }
        let r = unsafe { (f.set_stream)(plan, self.stream) };
        if r != 0 {
            return Err(Error::new(
                "backend",
                format!("hipfftSetStream failed: {r}"),
            ));
        }
        self.plans.insert((m, count), plan);
        Ok(plan)
    }
}

impl Device for Hip {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn wide(&self) -> bool {
        self.wide
    }

    fn bind(&self) -> Result<()> {
        check("hipSetDevice", unsafe { h::hipSetDevice(self.ordinal) })
    }

    fn alloc(&mut self, bytes: usize) -> Result<DPtr> {
        let mut p: *mut c_void = std::ptr::null_mut();
        check(&format!("hipMalloc({bytes} bytes)"), unsafe {
            h::hipMalloc(&mut p, bytes.max(1))
        })?;
        Ok(p as DPtr)
    }

    fn free(&mut self, p: DPtr) {
        let _ = self.sync();
        let _ = unsafe { h::hipFree(p as *mut c_void) };
    }

    fn upload(&mut self, dst: DPtr, src: &[u8]) -> Result<()> {
        check("hipMemcpyHtoDAsync", unsafe {
            h::hipMemcpyHtoDAsync(
                dst as _,
                src.as_ptr() as *const c_void,
                src.len(),
                self.stream,
            )
        })?;
        self.sync()
    }

    fn download(&mut self, dst: &mut [u8], src: DPtr) -> Result<()> {
        check("hipMemcpyDtoHAsync", unsafe {
            h::hipMemcpyDtoHAsync(
                dst.as_mut_ptr() as *mut c_void,
                src as _,
                dst.len(),
                self.stream,
            )
        })?;
        self.sync()
    }

    fn zero(&mut self, p: DPtr, bytes: usize) -> Result<()> {
        check("hipMemsetD8Async", unsafe {
            h::hipMemsetD8Async(p as _, 0, bytes, self.stream)
        })
    }

    fn copy(&mut self, dst: DPtr, src: DPtr, bytes: usize) -> Result<()> {
        check("hipMemcpyDtoDAsync", unsafe {
            h::hipMemcpyDtoDAsync(dst as _, src as _, bytes, self.stream)
        })
    }

    fn launch(&mut self, name: &'static str, blocks: usize, mut args: Args) -> Result<()> {
        let f = *self
            .funcs
            .get(name)
            .ok_or_else(|| Error::new("backend", format!("kernel {name} not loaded")))?;
        let mut ptrs = args.pointers();
        // SAFETY: argument slots match the kernel's parameters and outlive the call.
        let r = unsafe {
            h::hipModuleLaunchKernel(
                f,
                blocks as u32,
                1,
                1,
                BLOCK,
                1,
                1,
                0,
                self.stream,
                ptrs.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        check(&format!("launch of {name}"), r)
    }

    fn fft(&mut self, data: DPtr, m: usize, count: usize, inverse: bool) -> Result<()> {
        let plan = self.plan(m, count)?;
        let f = hipfft()?;
        let p = data as *mut c_void;
        let (exec, what) = if self.wide {
            (f.exec_z2z, "hipfftExecZ2Z")
        } else {
            (f.exec_c2c, "hipfftExecC2C")
        };
        // SAFETY: data holds count M×M complex arrays of the plan's type (Z2Z when wide).
        let r = unsafe { exec(plan, p, p, if inverse { 1 } else { -1 }) };
        if r != 0 {
            return Err(Error::new("backend", format!("{what} failed: {r}")));
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        check("hipStreamSynchronize", unsafe {
            h::hipStreamSynchronize(self.stream)
        })
    }

    fn record(&mut self) -> Result<usize> {
        let mut e: h::hipEvent_t = std::ptr::null_mut();
        check("hipEventCreate", unsafe { h::hipEventCreate(&mut e) })?;
        check("hipEventRecord", unsafe {
            h::hipEventRecord(e, self.stream)
        })?;
        self.events.push(e);
        Ok(self.events.len() - 1)
    }

    fn elapsed_ms(&mut self, a: usize, b: usize) -> Result<f32> {
        let mut ms = 0f32;
        check("hipEventSynchronize", unsafe {
            h::hipEventSynchronize(self.events[b])
        })?;
        check("hipEventElapsedTime", unsafe {
            h::hipEventElapsedTime(&mut ms, self.events[a], self.events[b])
        })?;
        Ok(ms)
    }

    fn clear_events(&mut self) {
        for e in self.events.drain(..) {
            // SAFETY: created by `record`, destroyed once.
            unsafe { h::hipEventDestroy(e) };
        }
    }

    fn free_memory(&self) -> Result<usize> {
        let (mut free, mut total) = (0usize, 0usize);
        check("hipMemGetInfo", unsafe {
            h::hipMemGetInfo(&mut free, &mut total)
        })?;
        Ok(free)
    }
}

impl Drop for Hip {
    fn drop(&mut self) {
        if self.bind().is_err() {
            return;
        }
        let _ = self.sync();
        // SAFETY: every handle below was created by this value and is destroyed once.
        unsafe {
            if let Ok(f) = hipfft() {
                for p in self.plans.values() {
                    (f.destroy)(*p);
                }
            }
            for e in &self.events {
                h::hipEventDestroy(*e);
            }
            h::hipStreamDestroy(self.stream);
            h::hipModuleUnload(self.module);
        }
    }
}
