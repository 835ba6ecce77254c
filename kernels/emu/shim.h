// Host emulation of the CUDA/HIP built-ins that kernels/ptycho.cu uses, so that g++ can
// compile the kernels into a shared library for tests/gpu.rs (`emulated_kernels_match_cpu`):
// the same kernel arithmetic and indexing, checked against the CPU backend on a machine
// without a GPU. Blocks run one after another; the threads of a block run one after another,
// except for kernels that call __syncthreads (run as real threads meeting at a barrier).
#include <barrier>
#include <math.h>
#include <cstddef>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

struct float2 { float x, y; };
inline float2 make_float2(float x, float y) { return {x, y}; }
struct double2 { double x, y; };
inline double2 make_double2(double x, double y) { return {x, y}; }
struct emu_dim { unsigned x, y, z; };
inline thread_local emu_dim blockIdx, threadIdx, blockDim;
inline thread_local std::barrier<>* emu_barrier = nullptr;
inline void __syncthreads() {
    if (emu_barrier) emu_barrier->arrive_and_wait();
}
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
// an f64 product rounded on its own (never fused into an FMA); g++ does not fuse on x86-64
inline double __dmul_rn(double a, double b) { return a * b; }
