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
//   P[b][k][i], psi[b][k][i]  batch buffers, complex `cf` (f32; f64 with PTY_F64, compat.h)
// Sums (object gradient, preconditioners, probe gradient, loss) accumulate in f64.
#include "compat.h"

// P[b][k][kx][ky] = P^_k[kx][ky] e_y[ky] e_x[kx] / M   (then an inverse FFT gives S_j P_k).
// With deriv = 1 (y) or 2 (x), times -2 pi i q of that axis, q = fftfreq(ky or kx, M) in
// cycles per pixel: the inverse FFT then gives dP/dc_y or dP/dc_x, the derivative of the
// shifted probe with respect to the probe centre (position correction, docs/algorithm.md §14).
PTY_KERNEL void shift_probe(cf* P, const cf* ph, const cf* ramp_y, const cf* ramp_x, const int* idx,
                            int M, int K, int nb, real sc, int deriv) {
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
    if (deriv) {
        int f = deriv == 1 ? ky : kx;
        int q = f < (M + 1) / 2 ? f : f - M;
        real w = (real)(-6.283185307179586 * q / M);
        e = make_cf(-e.y * w, e.x * w);
    }
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

// The noise model's loss l and weight w at one detector pixel (physics::model::residual):
// measured counts m, model intensity iv (unitary), detector weight gq; w scaled by `scale`.
__device__ __forceinline__ void noise_terms(int noise, real m, real iv, real eps, real gq, real scale,
                                            real* l, real* w) {
    if (noise == 1) {
        *l = iv * gq;
        if (m > 0.0f) *l -= (m + m * r_log((iv + eps) / m)) * gq;
        *w = (1.0f - m / (iv + eps)) * scale * gq;
    } else {
        real a = r_sqrt(iv + eps);
        real sm = r_sqrt(m + eps);
        real d = a - sm;
        *l = d * d * gq;
        *w = a > 0.0f ? (1.0f - sm / a) * scale * gq : 0.0f;
    }
}

// Block-wide sum of one f64 per thread into thread 0's return value (blockDim.x == 256).
__device__ __forceinline__ double block_sum(double v) {
    __shared__ double part[256];
    part[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    double r = part[0];
    __syncthreads();
    return r;
}

// One block per position. Model intensities I = isc sum_k |Psi_raw|^2, the noise-model
// weight w (physics::model::residual, with the intensity floor eps and detector weights g),
// psi <- (scale w g) psi in place, loss[b] = sum_i g l_i (f64).
// noise: 0 = amplitude, 1 = Poisson. g == 0 (null) means all weights 1.
PTY_KERNEL void residual(cf* psi, double* loss, const float* meas, const float* g, const int* idx,
                         int M, int K, int noise, real eps, real isc, real scale) {
    __shared__ double part[256];
    int b = blockIdx.x;
    long long mm = (long long)M * M;
    const float* mj = meas + (long long)idx[b] * mm;
    cf* pb = psi + (long long)b * K * mm;
    double acc = 0.0;
    for (int i = threadIdx.x; i < mm; i += blockDim.x) {
        real im = 0.0f;
        for (int k = 0; k < K; ++k) im += c_norm(pb[k * mm + i]);
        real gq = g ? g[i] : 1.0f;
        real l, w;
        noise_terms(noise, mj[i], im * isc, eps, gq, scale, &l, &w);
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

// Object sums of one batch, gathered: with psi = b = F^-1(w Psi) (real space, [x][y]), one
// thread per pixel (x, y) of the rectangle [x0, x0 + gw) x [y0, y0 + gh) that the batch's
// windows cover (objT column height H) adds, for each position b whose window covers it and
// each mode k, in the order (b, k), at its window pixel (u, v) = (x - ox_b, y - oy_b):
//   gT[x][y] += conj(P[b][k][u][v]) psi[b][k][u][v],  dT[x][y] += |P[b][k][u][v]|^2   (f64)
// Every run and every schedule adds the same terms in the same order, so the sums are the
// same bits (f64 atomics would add them in the order the threads happen to run).
PTY_KERNEL void gather_sums(double* gT, double* dT, const cf* psi, const cf* P, const int* win, int H, int y0,
                            int x0, int gh, int gw, int M, int K, int nb) {
    long long t = gid();
    if (t >= (long long)gh * gw) return;
    int x = x0 + (int)(t / gh), y = y0 + (int)(t % gh);
    long long mm = (long long)M * M;
    long long oi = (long long)x * H + y;
    double gr = gT[2 * oi], gi = gT[2 * oi + 1], d = dT[oi];
    for (int b = 0; b < nb; ++b) {
        unsigned u = (unsigned)(x - win[2 * b + 1]), v = (unsigned)(y - win[2 * b]);
        if (u >= (unsigned)M || v >= (unsigned)M) continue;
        long long i = (long long)b * K * mm + (long long)u * M + v;
        for (int k = 0; k < K; ++k, i += mm) {
            cf p = P[i];
            cf gv = c_mulc(p, psi[i]);
            gr += (double)gv.x;
            gi += (double)gv.y;
            d += (double)c_norm(p);
        }
    }
    gT[2 * oi] = gr;
    gT[2 * oi + 1] = gi;
    dT[oi] = d;
}

// Probe gradient of one batch, one thread per (k, kx, ky), summed over the batch in f64:
//   gp[k][kx][ky] += sum_b conj(e_y[ky] e_x[kx]) T_b[k][kx][ky] / M   (T = FFT_raw(conj(O) b))
PTY_KERNEL void probe_grad(double* gp, const cf* psi, const cf* ramp_y, const cf* ramp_x, const int* idx,
                           int M, int K, int nb, real sc) {
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

// Position correction (docs/algorithm.md §14), one block per position b, with
// dP = dP/dc_a (shift_probe with deriv = a + 1, then an inverse FFT) and t = conj(O) b
// (`conj_object` of the slice-0 adjoint wave), both [b][k][x][y]:
//   out[4b + a] = 2 Re sum_k sum_i conj(t) dP   (dL/dc_a, f64; a = 0 y, 1 x)
PTY_KERNEL void position_grad(double* out, const cf* dP, const cf* t, int M, int K, int axis) {
    int b = blockIdx.x;
    long long n = (long long)K * M * M;
    const cf* d = dP + (long long)b * n;
    const cf* tb = t + (long long)b * n;
    double acc = 0.0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x)
        acc += (double)tb[i].x * (double)d[i].x + (double)tb[i].y * (double)d[i].y;
    double s = block_sum(acc);
    if (threadIdx.x == 0) out[4 * b + axis] = 2.0 * s;
}

// The Gauss-Newton curvature of position b for a move of the probe relative to the object
// (docs/algorithm.md §14): out[4b + 2 + a] = sum_k sum_r |P_k(r)|^2 |d_a O(r)|^2, with d_a the
// central difference of slice 0's window along a = 0 (y), 1 (x), one-sided at the window's
// edges; P the shifted probes [b][k][x][y]; f64.
PTY_KERNEL void position_curv(double* out, const cf* P, const cf* objT, const int* win, int H, int M, int K) {
    int b = blockIdx.x;
    long long mm = (long long)M * M;
    int oy = win[2 * b], ox = win[2 * b + 1];
    double cy = 0.0, cx = 0.0;
    for (long long i = threadIdx.x; M > 1 && i < mm; i += blockDim.x) {
        int x = (int)(i / M), y = (int)(i % M);
        double w = 0.0;
        for (int k = 0; k < K; ++k) w += (double)c_norm(P[((long long)b * K + k) * mm + i]);
        int ya = y > 0 ? y - 1 : 0, yb = y + 1 < M ? y + 1 : M - 1;
        int xa = x > 0 ? x - 1 : 0, xb = x + 1 < M ? x + 1 : M - 1;
        const cf* col = objT + (long long)(ox + x) * H + oy;
        cf u = col[yb], v = col[ya];
        double dr = (double)u.x - (double)v.x, di = (double)u.y - (double)v.y, h = yb - ya;
        cy += w * (dr * dr + di * di) / (h * h);
        u = objT[(long long)(ox + xb) * H + oy + y];
        v = objT[(long long)(ox + xa) * H + oy + y];
        dr = (double)u.x - (double)v.x;
        di = (double)u.y - (double)v.y;
        h = xb - xa;
        cx += w * (dr * dr + di * di) / (h * h);
    }
    double sy = block_sum(cy);
    double sx = block_sum(cx);
    if (threadIdx.x == 0) {
        out[4 * b + 2] = sy;
        out[4 * b + 3] = sx;
    }
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

// Multislice propagation in Fourier space (docs/algorithm.md §12): psi[b][k][kx][ky] *= H[kx][ky]
// (or conj(H) for the adjoint), with H the Fresnel propagator times 1/M^2 (the raw transforms'
// scale), [kx][ky] like every Fourier-space array here.
PTY_KERNEL void propagate(cf* psi, const cf* h, int M, int K, int nb, int conj) {
    long long t = gid();
    long long mm = (long long)M * M;
    if (t >= mm * K * nb) return;
    cf hv = h[t % mm];
    if (conj) hv.y = -hv.y;
    psi[t] = c_mul(psi[t], hv);
}

// Model intensities out[b][kx][ky] = isc sum_k |Psi_raw[b][k][kx][ky]|^2.
PTY_KERNEL void intensities(real* out, const cf* psi, int M, int K, int nb, real isc) {
    long long t = gid();
    long long mm = (long long)M * M;
    if (t >= mm * nb) return;
    long long b = t / mm, i = t % mm;
    real im = 0.0f;
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

// ---- the projection engines (dm, epie, rpie; docs/algorithm.md §7, §9) ----

// The relaxed modulus factor f (physics::model::relaxed_modulus): gamma in (0, 1], meas and
// model unitary intensities; f = sqrt((meas + eps) / (model + eps)) at gamma = 1.
__device__ __forceinline__ real relaxed_modulus(int noise, real gamma, real meas, real model, real eps) {
    real den = model + eps;
    if (den <= 0.0f) return 0.0f;
    real r = (meas + eps) / den;
    real c = 1.0f - gamma;
    if (noise == 1) return (c + r_sqrt(c * c + 4.0f * gamma * r)) * 0.5f;
    return c + gamma * r_sqrt(r);
}

// out[p][c][r] = in[p][r][c] for `planes` M x M complex planes (exit waves [y][x] <-> [x][y]).
PTY_KERNEL void transpose_planes(cf* out, const cf* in, int M, int planes) {
    long long t = gid();
    long long mm = (long long)M * M;
    if (t >= mm * planes) return;
    long long pl = t / mm;
    int i = (int)(t % mm);
    int r = i / M, c = i % M;
    out[pl * mm + (long long)c * M + r] = in[t];
}

// Difference map before its Fourier step: po = P O (window); with init ev <- po (the first
// iteration); x = 2 po - ev (then a forward FFT gives the far field X).
PTY_KERNEL void dm_prepare(cf* x, cf* ev, const cf* P, const cf* objT, const int* win, int H, int M, int K, int nb,
                           int init) {
    long long t = gid();
    long long mm = (long long)M * M;
    if (t >= mm * K * nb) return;
    cf po = c_mul(P[t], objT[window_pixel(win, (int)(t / mm / K), (int)(t % mm), M, H)]);
    if (init) ev[t] = po;
    cf e = ev[t];
    x[t] = make_cf(po.x * 2.0f - e.x, po.y * 2.0f - e.y);
}

// One block per position: the loss l of the model far fields psi (as `residual`) into
// loss[b], and the Fourier step of the projection engines in place, scaled by isc so that
// a raw inverse FFT gives the unitary wave (backend::projection::fourier_weights):
//   er == 0: far <- f far, f the relaxed modulus of far's own intensities (1 on pixels the
//            detector mask excludes); far may be psi itself (ePIE/rPIE) or X (dm);
//   er == 1: psi <- (1 - w g / fisher) psi, error reduction's Fisher-scoring step
//            (backend::cpu::dm_far_field; `far` unused).
PTY_KERNEL void fourier_step(cf* psi, cf* far, double* loss, const float* meas, const float* g, const int* idx,
                             int M, int K, int noise, real eps, real isc, real gamma, int er, real fisher) {
    int b = blockIdx.x;
    long long mm = (long long)M * M;
    const float* mj = meas + (long long)idx[b] * mm;
    cf* pb = psi + (long long)b * K * mm;
    cf* fb = far + (long long)b * K * mm;
    double acc = 0.0;
    for (int i = threadIdx.x; i < mm; i += blockDim.x) {
        real im = 0.0f;
        for (int k = 0; k < K; ++k) im += c_norm(pb[k * mm + i]);
        real gq = g ? g[i] : 1.0f;
        real m = mj[i];
        real l, w;
        noise_terms(noise, m, im * isc, eps, gq, isc, &l, &w);
        acc += (double)l;
        if (er) {
            real wt = isc - w / fisher;
            for (int k = 0; k < K; ++k) pb[k * mm + i] = c_scale(pb[k * mm + i], wt);
        } else {
            real ix = 0.0f;
            for (int k = 0; k < K; ++k) ix += c_norm(fb[k * mm + i]);
            real wt = (g && gq == 0.0f) ? isc : relaxed_modulus(noise, gamma, m, ix * isc, eps) * isc;
            for (int k = 0; k < K; ++k) fb[k * mm + i] = c_scale(fb[k * mm + i], wt);
        }
    }
    double tot = block_sum(acc);
    if (threadIdx.x == 0) loss[b] = tot;
}

// Difference map after its Fourier step, with b = F^-1(f X) (or error reduction's wave):
//   ev <- b (er) or ev + beta (b - P O);  b <- ev  (`gather_sums` then sums P* b).
PTY_KERNEL void dm_update(cf* bw, cf* ev, const cf* P, const cf* objT, const int* win, int H, int M, int K, int nb,
                          int er, real beta) {
    long long t = gid();
    long long mm = (long long)M * M;
    if (t >= mm * K * nb) return;
    cf e = bw[t];
    if (!er) {
        cf po = c_mul(P[t], objT[window_pixel(win, (int)(t / mm / K), (int)(t % mm), M, H)]);
        cf d = make_cf(e.x - po.x, e.y - po.y);
        cf o = ev[t];
        e = make_cf(o.x + d.x * beta, o.y + d.y * beta);
    }
    ev[t] = e;
    bw[t] = e;
}

// psi <- conj(O) psi for a batch of exit waves (dm's probe sums; a forward FFT follows).
PTY_KERNEL void conj_object(cf* psi, const cf* objT, const int* win, int H, int M, int K, int nb) {
    long long t = gid();
    long long mm = (long long)M * M;
    if (t >= mm * K * nb) return;
    psi[t] = c_mulc(objT[window_pixel(win, (int)(t / mm / K), (int)(t % mm), M, H)], psi[t]);
}

// ePIE/rPIE, one position (b): psi <- psi - P O (the exit-wave change, psi = F^-1(f Psi)),
// den[i] = sum_k |P_k|^2, and out[0] = max_i den, out[1] = max_i |O_i|^2 over the window.
// One block.
PTY_KERNEL void pie_delta(cf* psi, real* den, real* out, const cf* P, const cf* objT, const int* win, int b, int H,
                          int M, int K) {
    __shared__ real mx[2][256];
    long long mm = (long long)M * M;
    real dmax = 0.0f, omax = 0.0f;
    for (int i = threadIdx.x; i < mm; i += blockDim.x) {
        cf o = objT[window_pixel(win, b, i, M, H)];
        real d = 0.0f;
        for (int k = 0; k < K; ++k) {
            cf p = P[k * mm + i];
            cf po = c_mul(p, o);
            cf v = psi[k * mm + i];
            psi[k * mm + i] = make_cf(v.x - po.x, v.y - po.y);
            d = d + c_norm(p);
        }
        den[i] = d;
        dmax = r_max(dmax, d);
        omax = r_max(omax, c_norm(o));
    }
    mx[0][threadIdx.x] = dmax;
    mx[1][threadIdx.x] = omax;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            mx[0][threadIdx.x] = r_max(mx[0][threadIdx.x], mx[0][threadIdx.x + s]);
            mx[1][threadIdx.x] = r_max(mx[1][threadIdx.x], mx[1][threadIdx.x + s]);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        out[0] = mx[0][0];
        out[1] = mx[1][0];
    }
}

// ePIE/rPIE probe change of position b: t_k = s O* dpsi_k / ((1 - a)|O|^2 + a max|O|^2)
// (0 where that is 0); a forward FFT and `pie_probe_add` follow. mx[1] = max |O|^2.
PTY_KERNEL void pie_probe_delta(cf* tw, const cf* dpsi, const real* mx, const cf* objT, const int* win, int b, int H,
                                int M, int K, real a, real s) {
    long long t = gid();
    long long mm = (long long)M * M;
    if (t >= mm * K) return;
    cf o = objT[window_pixel(win, b, (int)(t % mm), M, H)];
    real d = (1.0f - a) * c_norm(o) + a * mx[1];
    tw[t] = d > 0.0f ? c_scale(c_mulc(o, dpsi[t]), s / d) : make_cf(0.0f, 0.0f);
}

// P^_k[kx][ky] += conj(e_y[ky]) T_k[kx][ky] conj(e_x[kx]) / M for position j = idx[b].
PTY_KERNEL void pie_probe_add(cf* ph, const cf* tw, const cf* ramp_y, const cf* ramp_x, const int* idx, int b, int M,
                              int K, real sc) {
    long long t = gid();
    long long mm = (long long)M * M;
    if (t >= mm * K) return;
    int i = (int)(t % mm);
    int kx = i / M, ky = i % M;
    long long j = idx[b];
    cf ry = ramp_y[j * M + ky], rx = ramp_x[j * M + kx];
    cf v = c_mulc(ry, tw[t]);
    cf e = c_scale(make_cf(rx.x, -rx.y), sc);
    cf u = c_mul(v, e);
    ph[t] = make_cf(ph[t].x + u.x, ph[t].y + u.y);
}

// ePIE/rPIE object change of position b: O += s sum_k P*_k dpsi_k / ((1 - a) den + a max den)
// where that is positive; illumT += den (f64, the merge weights). mx[0] = max den.
PTY_KERNEL void pie_object(cf* objT, double* illumT, const cf* dpsi, const real* den, const real* mx, const cf* P,
                           const int* win, int b, int H, int M, int K, real a, real s) {
    long long i = gid();
    long long mm = (long long)M * M;
    if (i >= mm) return;
    cf num = make_cf(0.0f, 0.0f);
    for (int k = 0; k < K; ++k) {
        cf v = c_mulc(P[k * mm + i], dpsi[k * mm + i]);
        num = make_cf(num.x + v.x, num.y + v.y);
    }
    real d = (1.0f - a) * den[i] + a * mx[0];
    long long oi = window_pixel(win, b, (int)i, M, H);
    if (d > 0.0f) {
        cf u = c_scale(num, s / d);
        objT[oi] = make_cf(objT[oi].x + u.x, objT[oi].y + u.y);
    }
    illumT[oi] += (double)den[i];
}

// ---- the resident object field (gd keeps the object and its sums on the device; ----
// ---- only halo rectangles cross: docs/gpu.md "Resident state")                    ----
// A rectangle (rows y0..y0+rh, columns x0..x0+rw of the field, column height H) of a
// transposed field; the host side of every copy is [row][column] row-major.

// out[r][c] = objT[x0 + c][y0 + r]
PTY_KERNEL void rect_get_c(cf* out, const cf* objT, int H, int y0, int x0, int rh, int rw) {
    long long t = gid();
    if (t >= (long long)rh * rw) return;
    int r = (int)(t / rw), c = (int)(t % rw);
    out[t] = objT[(long long)(x0 + c) * H + y0 + r];
}

// objT[x0 + c][y0 + r] = in[r][c]
PTY_KERNEL void rect_set_c(cf* objT, const cf* in, int H, int y0, int x0, int rh, int rw) {
    long long t = gid();
    if (t >= (long long)rh * rw) return;
    int r = (int)(t / rw), c = (int)(t % rw);
    objT[(long long)(x0 + c) * H + y0 + r] = in[t];
}

// f64 sums with `comps` doubles per pixel: out[r][c][q] = inT[x0 + c][y0 + r][q]
PTY_KERNEL void rect_get_d(double* out, const double* inT, int H, int y0, int x0, int rh, int rw, int comps) {
    long long t = gid();
    if (t >= (long long)rh * rw) return;
    int r = (int)(t / rw), c = (int)(t % rw);
    long long o = ((long long)(x0 + c) * H + y0 + r) * comps;
    for (int q = 0; q < comps; ++q) out[t * comps + q] = inT[o + q];
}

// sT[x0 + c][y0 + r][q] += in[r][c][q]   (a neighbour's halo sums added to the tile)
PTY_KERNEL void rect_add_d(double* sT, const double* in, int H, int y0, int x0, int rh, int rw, int comps) {
    long long t = gid();
    if (t >= (long long)rh * rw) return;
    int r = (int)(t / rw), c = (int)(t % rw);
    long long o = ((long long)(x0 + c) * H + y0 + r) * comps;
    for (int q = 0; q < comps; ++q) sT[o + q] += in[t * comps + q];
}

// Column maxima of dT on the rectangle: out[c] = max_r dT[x0 + c][y0 + r] (the host takes
// the maximum of the rw values; max is exact, so the order does not matter).
PTY_KERNEL void col_max_d(double* out, const double* dT, int H, int y0, int x0, int rh, int rw) {
    long long c = gid();
    if (c >= rw) return;
    const double* col = dT + (long long)(x0 + c) * H + y0;
    double m = 0.0;
    for (int r = 0; r < rh; ++r) m = col[r] > m ? col[r] : m;
    out[c] = m;
}

// gd's preconditioned object step on the rectangle (engine::gd::apply, docs/algorithm.md §4),
// in the same order of operations as the host's:
//   u = (g / planes) * (alpha / (d + reg)),   O <- O - (real)u
PTY_KERNEL void update_object(cf* objT, const double* gT, const double* dT, int H, int y0, int x0, int rh, int rw,
                              double alpha, double planes, double reg) {
    long long t = gid();
    if (t >= (long long)rh * rw) return;
    int r = (int)(t / rw), c = (int)(t % rw);
    long long o = (long long)(x0 + c) * H + y0 + r;
    double s = alpha / (dT[o] + reg);
    double ure = (gT[2 * o] / planes) * s;
    double uim = (gT[2 * o + 1] / planes) * s;
    objT[o] = make_cf(objT[o].x - (real)ure, objT[o].y - (real)uim);
}

// dm's overlap step on the rectangle (engine::dm, docs/algorithm.md §7), in the same order
// of operations as the host's (f64, products not fused, so the result is the host's bits):
//   O <- (real)(O + (g - d O) / (d + reg))
PTY_KERNEL void ratio_object(cf* objT, const double* gT, const double* dT, int H, int y0, int x0, int rh, int rw,
                             double reg) {
    long long t = gid();
    if (t >= (long long)rh * rw) return;
    int r = (int)(t / rw), c = (int)(t % rw);
    long long o = (long long)(x0 + c) * H + y0 + r;
    double xr = objT[o].x, xi = objT[o].y, d = dT[o];
    double nr = gT[2 * o] - __dmul_rn(xr, d), ni = gT[2 * o + 1] - __dmul_rn(xi, d);
    double den = d + reg;
    objT[o] = make_cf((real)(xr + nr / den), (real)(xi + ni / den));
}
