// compat.h: the few definitions that let kernels/*.cu compile unchanged as CUDA (NVRTC)
// and as HIP (hiprtc). The backend pastes this file in place of `#include "compat.h"`
// before compiling, so no include path is needed at run time.
//
// Both compilers provide float2/double2, blockIdx/threadIdx, __syncthreads and sqrtf/logf
// (sqrt/log/fmax in f64).
// The kernels use no atomics (every sum is formed in a fixed order).
#pragma once

#if defined(__HIPCC_RTC__) || defined(__HIP_PLATFORM_AMD__) || defined(__HIPCC__)
#define PTY_HIP 1
#else
#define PTY_HIP 0
#endif

#define PTY_KERNEL extern "C" __global__

// The working precision: f32 (the default), or f64 when compiled with -DPTY_F64 (a
// backend opened for f64 runs; docs/gpu.md "Precision"). `real` is a real scalar, `cf` a
// complex value; measured intensities and detector weights stay f32 (as read from the
// file), the sums over positions f64 in both.
#ifdef PTY_F64
typedef double real;
typedef double2 cf;
__device__ __forceinline__ cf make_cf(real x, real y) { return make_double2(x, y); }
__device__ __forceinline__ real r_sqrt(real x) { return sqrt(x); }
__device__ __forceinline__ real r_log(real x) { return log(x); }
__device__ __forceinline__ real r_max(real a, real b) { return fmax(a, b); }
#else
typedef float real;
typedef float2 cf;
__device__ __forceinline__ cf make_cf(real x, real y) { return make_float2(x, y); }
__device__ __forceinline__ real r_sqrt(real x) { return sqrtf(x); }
__device__ __forceinline__ real r_log(real x) { return logf(x); }
__device__ __forceinline__ real r_max(real a, real b) { return fmaxf(a, b); }
#endif

// complex helpers in the working precision
__device__ __forceinline__ cf c_mul(cf a, cf b) { return make_cf(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x); }
// conj(a) * b
__device__ __forceinline__ cf c_mulc(cf a, cf b) { return make_cf(a.x * b.x + a.y * b.y, a.x * b.y - a.y * b.x); }
__device__ __forceinline__ cf c_scale(cf a, real s) { return make_cf(a.x * s, a.y * s); }
__device__ __forceinline__ real c_norm(cf a) { return a.x * a.x + a.y * a.y; }

// global thread index over a 1-D grid (launches cover n with ceil(n / blockDim) blocks)
__device__ __forceinline__ long long gid() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
