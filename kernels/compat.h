// compat.h: the few definitions that let kernels/*.cu compile unchanged as CUDA (NVRTC)
// and as HIP (hiprtc). The backend pastes this file in place of `#include "compat.h"`
// before compiling, so no include path is needed at run time.
//
// Both compilers provide float2/double2, blockIdx/threadIdx, __syncthreads and sqrtf/logf.
// The kernels use no atomics (every sum is formed in a fixed order).
#pragma once

#if defined(__HIPCC_RTC__) || defined(__HIP_PLATFORM_AMD__) || defined(__HIPCC__)
#define PTY_HIP 1
#else
#define PTY_HIP 0
#endif

#define PTY_KERNEL extern "C" __global__

typedef float2 cf;

// complex helpers in f32 (the working precision on GPUs)
__device__ __forceinline__ cf c_mul(cf a, cf b) { return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x); }
// conj(a) * b
__device__ __forceinline__ cf c_mulc(cf a, cf b) { return make_float2(a.x * b.x + a.y * b.y, a.x * b.y - a.y * b.x); }
__device__ __forceinline__ cf c_scale(cf a, float s) { return make_float2(a.x * s, a.y * s); }
__device__ __forceinline__ float c_norm(cf a) { return a.x * a.x + a.y * a.y; }

// global thread index over a 1-D grid (launches cover n with ceil(n / blockDim) blocks)
__device__ __forceinline__ long long gid() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }
