// Per-position gradient kernel of ptytile on GPUs (CUDA and HIP), the same contract as the
// CPU backend (src/backend/cpu.rs; docs/algorithm.md §2–§4, docs/gpu.md).
//
// Layouts. The GPU works in the transposed world: real-space per-position arrays are
// [x][y] (x-major) and the object is uploaded transposed, objT[x][y] with column height H,
// so that a plain row-major 2-D FFT of an [x][y] array yields the [kx][ky] Fourier layout
// that ptytile keeps everywhere (intensities, probe spectrum, detector weights). All FFTs
// are unnormalised (cuFFT/hipFFT), like the CPU's `*_raw` transforms.
//
// Per batch of nb positions (b), K probe modes (k), M x M pixels (i):
//   idx[b]        the position's index into the rank's arrays (ramps, intensities)
//   win[2b..2b+2] its window origin (row oy, column ox) in the object field
//   P[b][k][i], psi[b][k][i]  batch buffers, complex f32
// Sums (object gradient, preconditioners, probe gradient, loss) accumulate in f64.
#include "compat.h"

// P[b][k][kx][ky] = P^_k[kx][ky] e_y[ky] e_x[kx] / M   (then an inverse FFT gives S_j P_k)
PTY_KERNEL void shift_probe(cf* P, const cf* ph, const cf* ramp_y, const cf* ramp_x, const int* idx,
                            int M, int K, int nb, float sc) {
    long long t = gid();
    long long mm = (long long)M * M;
    if (t >= mm * K * nb) return;
    int i = (int)(t % mm);
    long long bk = t / mm;
    int k = (int)(bk % K);
    int b = (int)(bk / K);
    int kx = i / M, ky = i % M;
    long long j = idx[b];
    cf e = c_mul(ramp_y[j * M + ky], c_scale(ramp_x[j * M + kx], sc));
    P[t] = c_mul(ph[k * mm + i], e);
}

// Index into objT (column height H) of pixel i = x M + y of position b's window.
__device__ __forceinline__ long long window_pixel(const int* win, int b, int i, int M, int H) {
    int x = i / M, y = i % M;
    return (long long)(win[2 * b + 1] + x) * H + win[2 * b] + y;
}

// psi[b][k][x][y] = P[b][k][x][y] O[oy + y][ox + x]   (then a forward FFT gives Psi_raw)
PTY_KERNEL void exit_wave(cf* psi, const cf* P, const cf* objT, const int* win, int H, int M, int K, int nb) {
    long long t = gid();
    long long mm = (long long)M * M;
    if (t >= mm * K * nb) return;
    psi[t] = c_mul(P[t], objT[window_pixel(win, (int)(t / mm / K), (int)(t % mm), M, H)]);
}

// One block per position. Model intensities I = isc sum_k |Psi_raw|^2, the noise-model
// weight w (physics::model::residual, with the intensity floor eps and detector weights g),
// psi <- (scale w g) psi in place, loss[b] = sum_i g l_i (f64).
// noise: 0 = amplitude, 1 = Poisson. g == 0 (null) means all weights 1.
PTY_KERNEL void residual(cf* psi, double* loss, const float* meas, const float* g, const int* idx,
                         int M, int K, int noise, float eps, float isc, float scale) {
    __shared__ double part[256];
    int b = blockIdx.x;
    long long mm = (long long)M * M;
    const float* mj = meas + (long long)idx[b] * mm;
    cf* pb = psi + (long long)b * K * mm;
    double acc = 0.0;
    for (int i = threadIdx.x; i < mm; i += blockDim.x) {
        float im = 0.0f;
        for (int k = 0; k < K; ++k) im += c_norm(pb[k * mm + i]);
        float iv = im * isc;
        float gq = g ? g[i] : 1.0f;
        float m = mj[i];
        float l, w;
        if (noise == 1) {
            l = iv * gq;
            if (m > 0.0f) l -= (m + m * logf((iv + eps) / m)) * gq;
            w = (1.0f - m / (iv + eps)) * scale * gq;
        } else {
            float a = sqrtf(iv + eps);
            float sm = sqrtf(m + eps);
            float d = a - sm;
            l = d * d * gq;
            w = a > 0.0f ? (1.0f - sm / a) * scale * gq : 0.0f;
        }
        acc += (double)l;
        for (int k = 0; k < K; ++k) pb[k * mm + i] = c_scale(pb[k * mm + i], w);
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) loss[b] = part[0];
}

// Adjoint scatter: with psi = b = F^-1(w Psi) (real space, [x][y]):
//   gT[ox+x][oy+y] += conj(P) b,  dT[..] += |P|^2   (f64 atomics, object transposed)
//   and, when want_probe, psi <- conj(O) b (a forward FFT then gives the probe gradient).
PTY_KERNEL void adjoint(cf* psi, const cf* P, const cf* objT, const int* win, double* gT, double* dT,
                        int H, int M, int K, int nb, int want_probe) {
    long long t = gid();
    long long mm = (long long)M * M;
    if (t >= mm * K * nb) return;
    long long oi = window_pixel(win, (int)(t / mm / K), (int)(t % mm), M, H);
    cf bv = psi[t];
    cf p = P[t];
    cf gv = c_mulc(p, bv);
    atomicAdd(&gT[2 * oi], (double)gv.x);
    atomicAdd(&gT[2 * oi + 1], (double)gv.y);
    atomicAdd(&dT[oi], (double)c_norm(p));
    if (want_probe) psi[t] = c_mulc(objT[oi], bv);
}

// Probe gradient of one batch, one thread per (k, kx, ky), summed over the batch in f64:
//   gp[k][kx][ky] += sum_b conj(e_y[ky] e_x[kx]) T_b[k][kx][ky] / M   (T = FFT_raw(conj(O) b))
PTY_KERNEL void probe_grad(double* gp, const cf* psi, const cf* ramp_y, const cf* ramp_x, const int* idx,
                           int M, int K, int nb, float sc) {
    long long t = gid();
    long long mm = (long long)M * M;
    if (t >= mm * K) return;
    int i = (int)(t % mm);
    int k = (int)(t / mm);
    int kx = i / M, ky = i % M;
    double re = 0.0, im = 0.0;
    for (int b = 0; b < nb; ++b) {
        long long j = idx[b];
        cf e = c_mul(ramp_y[j * M + ky], ramp_x[j * M + kx]);
        cf v = c_scale(c_mulc(e, psi[((long long)b * K + k) * mm + i]), sc);
        re += (double)v.x;
        im += (double)v.y;
    }
    gp[2 * t] += re;
    gp[2 * t + 1] += im;
}

// Probe preconditioner of one batch: dpT[x][y] += sum_b |O[oy+y][ox+x]|^2 (f64).
PTY_KERNEL void probe_density(double* dpT, const cf* objT, const int* win, int H, int M, int nb) {
    long long t = gid();
    long long mm = (long long)M * M;
    if (t >= mm) return;
    double acc = 0.0;
    for (int b = 0; b < nb; ++b) acc += (double)c_norm(objT[window_pixel(win, b, (int)t, M, H)]);
    dpT[t] += acc;
}

// Model intensities out[b][kx][ky] = isc sum_k |Psi_raw[b][k][kx][ky]|^2.
PTY_KERNEL void intensities(float* out, const cf* psi, int M, int K, int nb, float isc) {
    long long t = gid();
    long long mm = (long long)M * M;
    if (t >= mm * nb) return;
    long long b = t / mm, i = t % mm;
    float im = 0.0f;
    for (int k = 0; k < K; ++k) im += c_norm(psi[(b * K + k) * mm + i]);
    out[t] = im * isc;
}

// out[c][r] = in[r][c] for rows x cols complex f32 (object upload: [y][x] -> [x][y]).
PTY_KERNEL void transpose_c(cf* out, const cf* in, int rows, int cols) {
    long long t = gid();
    if (t >= (long long)rows * cols) return;
    int r = (int)(t / cols), c = (int)(t % cols);
    out[(long long)c * rows + r] = in[t];
}

// out[c][r][q] = in[r][c][q] for rows x cols elements of `comps` doubles each (sums back to [y][x]).
PTY_KERNEL void transpose_d(double* out, const double* in, int rows, int cols, int comps) {
    long long t = gid();
    if (t >= (long long)rows * cols) return;
    int r = (int)(t / cols), c = (int)(t % cols);
    for (int q = 0; q < comps; ++q) out[((long long)c * rows + r) * comps + q] = in[t * comps + q];
}
