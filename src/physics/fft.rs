//! Unitary 2-D FFT of square M × M arrays with a *transposed* Fourier-space layout.
//!
//! Convention (docs/algorithm.md §1): forward transform e^{−2πi k·r}, orthonormal scaling
//! (1/M for an M × M transform, so Σ|ψ|² = Σ|Ψ|²), zero frequency at index [0, 0].
//!
//! A 2-D FFT is row FFTs, a transpose, row FFTs. Leaving the result transposed saves the
//! second transpose; ptytile keeps every Fourier-space array (measured intensities, the
//! Fourier probe, phase ramps) in that layout, `[kx][ky]`, so each transform costs one
//! transpose. Real-space arrays are always `[y][x]`, row-major.

use num_complex::Complex;
use rustfft::{Fft, FftNum, FftPlanner};
use std::sync::Arc;

/// Real scalar of the numerics: f32 in production, f64 for gradient checks.
pub trait Real:
    FftNum
    + num_traits::Float
    + std::iter::Sum
    + Default
    + Send
    + Sync
    + bytemuck::Pod
    + crate::physics::simd::Ops
    + 'static
{
    /// Lossless for f64, rounded for f32.
    fn of(x: f64) -> Self;
    /// To f64.
    fn f64(self) -> f64;
    /// From f32 (measured intensities).
    fn of32(x: f32) -> Self;
}
impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn of32(x: f32) -> Self {
        x
    }
    fn f64(self) -> f64 {
        self as f64
    }
}
impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn of32(x: f32) -> Self {
        x as f64
    }
    fn f64(self) -> f64 {
        self
    }
}

/// Plans for forward and inverse unitary 2-D FFTs of one size. Cheap to clone; share one
/// per size across threads (each thread brings its own scratch, see [`Fft2::scratch`]).
#[derive(Clone)]
pub struct Fft2<T: Real> {
    m: usize,
    fwd: Arc<dyn Fft<T>>,
    inv: Arc<dyn Fft<T>>,
    /// Forward row transform in f64, for sums that are transformed after accumulation.
    fwd64: Arc<dyn Fft<f64>>,
    scale: T,
}

impl<T: Real> std::fmt::Debug for Fft2<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fft2({}x{})", self.m, self.m)
    }
}

impl<T: Real> Fft2<T> {
    /// Plan transforms of `m × m` arrays.
    pub fn new(m: usize) -> Self {
        let mut planner = FftPlanner::<T>::new();
        let fwd64 = FftPlanner::<f64>::new().plan_fft_forward(m);
        Fft2 {
            m,
            fwd: planner.plan_fft_forward(m),
            inv: planner.plan_fft_inverse(m),
            fwd64,
            scale: T::of(1.0 / m as f64),
        }
    }

    /// Side length M.
    pub fn size(&self) -> usize {
        self.m
    }

    /// A scratch buffer large enough for either direction.
    pub fn scratch(&self) -> Vec<Complex<T>> {
        let n = self
            .fwd
            .get_inplace_scratch_len()
            .max(self.inv.get_inplace_scratch_len());
        vec![Complex::default(); n.max(1)]
    }

    /// `out[kx][ky] = (F a)[ky][kx]`, unitary. `a` ([y][x], M²) is used as work space and
    /// left holding garbage.
    pub fn forward_t(
        &self,
        a: &mut [Complex<T>],
        out: &mut [Complex<T>],
        scratch: &mut [Complex<T>],
    ) {
        self.forward_t_raw(a, out, scratch);
        out.iter_mut().for_each(|z| *z = *z * self.scale);
    }

    /// `out[y][x] = (F⁻¹ A)[y][x]` for `a[kx][ky] = A[ky][kx]` (transposed layout), unitary.
    /// `a` is used as work space.
    pub fn inverse_t(
        &self,
        a: &mut [Complex<T>],
        out: &mut [Complex<T>],
        scratch: &mut [Complex<T>],
    ) {
        self.inverse_t_raw(a, out, scratch);
        out.iter_mut().for_each(|z| *z = *z * self.scale);
    }

    /// As [`Fft2::forward_t`] but unnormalised: the result is M × the unitary transform.
    /// Hot loops fold the 1/M into their element-wise passes.
    #[inline]
    pub fn forward_t_raw(
        &self,
        a: &mut [Complex<T>],
        out: &mut [Complex<T>],
        scratch: &mut [Complex<T>],
    ) {
        self.fwd.process_with_scratch(a, scratch);
        transpose::transpose(a, out, self.m, self.m);
        self.fwd.process_with_scratch(out, scratch);
    }

    /// As [`Fft2::inverse_t`] but unnormalised: M × the unitary inverse.
    #[inline]
    pub fn inverse_t_raw(
        &self,
        a: &mut [Complex<T>],
        out: &mut [Complex<T>],
        scratch: &mut [Complex<T>],
    ) {
        self.inv.process_with_scratch(a, scratch);
        transpose::transpose(a, out, self.m, self.m);
        self.inv.process_with_scratch(out, scratch);
    }

    /// `out[y][x] = M² (F⁻¹[h ∘ F a])[y][x]` (unnormalised) for a filter `h` in the
    /// transposed layout `[kx][ky]`, or its conjugate with `conj`: the same arithmetic as
    /// [`Fft2::forward_t_raw`], `A ∘ h`, [`Fft2::inverse_t_raw`], but the middle half
    /// transforms, the product and the inverse half transforms run row by row (each row stays
    /// in L1). `a` ([y][x]) and `tmp` (M²) are used as work space.
    pub fn convolve_raw(
        &self,
        a: &mut [Complex<T>],
        h: &[Complex<T>],
        conj: bool,
        tmp: &mut [Complex<T>],
        out: &mut [Complex<T>],
        scratch: &mut [Complex<T>],
    ) {
        let m = self.m;
        self.fwd.process_with_scratch(a, scratch);
        transpose::transpose(a, tmp, m, m);
        for (row, hr) in tmp.chunks_exact_mut(m).zip(h.chunks_exact(m)) {
            self.fwd.process_with_scratch(row, scratch);
            if conj {
                row.iter_mut().zip(hr).for_each(|(v, h)| *v = *v * h.conj());
            } else {
                row.iter_mut().zip(hr).for_each(|(v, h)| *v = *v * *h);
            }
            self.inv.process_with_scratch(row, scratch);
        }
        transpose::transpose(tmp, out, m, m);
        self.inv.process_with_scratch(out, scratch);
    }

    /// Unnormalised forward 1-D transforms of the M rows of `a` (M × M, row-major), in place:
    /// one half of a 2-D transform.
    #[inline]
    pub fn rows_forward_raw(&self, a: &mut [Complex<T>], scratch: &mut [Complex<T>]) {
        self.fwd.process_with_scratch(a, scratch);
    }

    /// Unnormalised inverse 1-D transforms of the M rows of `a`, in place.
    #[inline]
    pub fn rows_inverse_raw(&self, a: &mut [Complex<T>], scratch: &mut [Complex<T>]) {
        self.inv.process_with_scratch(a, scratch);
    }

    /// As [`Fft2::rows_forward_raw`] on f64 data (sums accumulated in f64).
    pub fn rows_forward_raw_f64(&self, a: &mut [Complex<f64>]) {
        self.fwd64.process(a);
    }

    /// `out = aᵀ` for M × M arrays.
    #[inline]
    pub fn transpose<V: Copy>(&self, a: &[V], out: &mut [V]) {
        transpose::transpose(a, out, self.m, self.m);
    }

    /// 1/M, the factor between the raw and unitary transforms.
    pub fn scale(&self) -> T {
        self.scale
    }

    /// Plain unitary forward transform, Fourier result in the ordinary `[ky][kx]` layout
    /// (two transposes; for set-up code, not the hot loop).
    pub fn forward(&self, a: &mut [Complex<T>], scratch: &mut [Complex<T>]) {
        let mut t = vec![Complex::default(); a.len()];
        self.forward_t(a, &mut t, scratch);
        transpose::transpose(&t, a, self.m, self.m);
    }

    /// Plain unitary inverse transform of an ordinary `[ky][kx]` array.
    pub fn inverse(&self, a: &mut [Complex<T>], scratch: &mut [Complex<T>]) {
        let mut t = vec![Complex::default(); a.len()];
        transpose::transpose(a, &mut t, self.m, self.m);
        self.inverse_t(&mut t, a, scratch);
    }
}

/// Move the zero frequency between the array centre [M/2, M/2] and the corner [0, 0]
/// (numpy's `ifftshift`; for even M its own inverse, for odd M use `inverse = true`).
pub fn ifftshift<T: Copy>(a: &[T], m: usize, inverse: bool) -> Vec<T> {
    let h = if inverse { m - m / 2 } else { m / 2 };
    let mut out = a.to_vec();
    for y in 0..m {
        for x in 0..m {
            out[y * m + x] = a[((y + h) % m) * m + (x + h) % m];
        }
    }
    out
}

/// Spatial frequency of FFT index `i` in cycles per pixel (numpy's `fftfreq`).
pub fn fftfreq(i: usize, m: usize) -> f64 {
    let i = i as isize;
    let m = m as isize;
    let k = if i < (m + 1) / 2 { i } else { i - m };
    k as f64 / m as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_complex::Complex32 as C32;

    fn rnd(n: usize, seed: u64) -> Vec<C32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let a = ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5;
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let b = ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5;
                C32::new(a, b)
            })
            .collect()
    }

    /// Direct DFT, e^{−2πi k·r}/M, in f64.
    fn dft(a: &[C32], m: usize) -> Vec<num_complex::Complex64> {
        let mut out = vec![num_complex::Complex64::default(); m * m];
        for ky in 0..m {
            for kx in 0..m {
                let mut s = num_complex::Complex64::default();
                for y in 0..m {
                    for x in 0..m {
                        let ph = -2.0 * std::f64::consts::PI * ((ky * y) as f64 + (kx * x) as f64)
                            / m as f64;
                        s += num_complex::Complex64::new(
                            a[y * m + x].re as f64,
                            a[y * m + x].im as f64,
                        ) * num_complex::Complex64::from_polar(1.0, ph);
                    }
                }
                out[ky * m + kx] = s / m as f64;
            }
        }
        out
    }

    #[test]
    fn matches_direct_dft_sign_and_scaling() {
        let m = 12;
        let f = Fft2::new(m);
        let a = rnd(m * m, 1);
        let want = dft(&a, m);
        let mut w = a.clone();
        let mut t = vec![C32::default(); m * m];
        let mut s = f.scratch();
        f.forward_t(&mut w, &mut t, &mut s);
        for ky in 0..m {
            for kx in 0..m {
                let got = t[kx * m + ky];
                assert!((got.re as f64 - want[ky * m + kx].re).abs() < 1e-5);
                assert!((got.im as f64 - want[ky * m + kx].im).abs() < 1e-5);
            }
        }
        // inverse_t undoes forward_t
        let mut back = vec![C32::default(); m * m];
        f.inverse_t(&mut t, &mut back, &mut s);
        for (x, y) in a.iter().zip(&back) {
            assert!((x - y).norm() < 1e-5);
        }
    }

    #[test]
    fn parseval_and_adjoint() {
        let m = 32;
        let f = Fft2::new(m);
        let a = rnd(m * m, 2);
        let b = rnd(m * m, 3);
        let mut s = f.scratch();
        let (mut fa, mut w) = (vec![C32::default(); m * m], a.clone());
        f.forward_t(&mut w, &mut fa, &mut s);
        let e0: f64 = a.iter().map(|z| z.norm_sqr() as f64).sum();
        let e1: f64 = fa.iter().map(|z| z.norm_sqr() as f64).sum();
        assert!((e0 - e1).abs() / e0 < 1e-5, "Parseval {e0} vs {e1}");
        // <F a, b> = <a, F⁻¹ b>  (F unitary, adjoint = inverse)
        let (mut fib, mut w2) = (vec![C32::default(); m * m], b.clone());
        f.inverse_t(&mut w2, &mut fib, &mut s);
        let lhs: num_complex::Complex64 = fa
            .iter()
            .zip(&b)
            .map(|(x, y)| x.conj() * y)
            .map(|z: C32| num_complex::Complex64::new(z.re as f64, z.im as f64))
            .sum();
        let rhs: num_complex::Complex64 = a
            .iter()
            .zip(&fib)
            .map(|(x, y)| x.conj() * y)
            .map(|z| num_complex::Complex64::new(z.re as f64, z.im as f64))
            .sum();
        assert!(
            (lhs - rhs).norm() < 1e-3 * lhs.norm().max(1.0),
            "{lhs} vs {rhs}"
        );
    }

    /// The fused row-by-row filter is the unfused sequence forward_t_raw, A ∘ h (or h*),
    /// inverse_t_raw bit for bit.
    #[test]
    #[allow(clippy::assign_op_pattern)] // the product exactly as the old unfused loop wrote it
    fn convolve_raw_is_the_unfused_sequence_bit_for_bit() {
        for m in [12, 32, 128] {
            let f = Fft2::new(m);
            let (a, h) = (rnd(m * m, 4), rnd(m * m, 5));
            let mut s = f.scratch();
            for conj in [false, true] {
                let (mut w, mut t, mut want) = (
                    a.clone(),
                    vec![C32::default(); m * m],
                    vec![C32::default(); m * m],
                );
                f.forward_t_raw(&mut w, &mut t, &mut s);
                for (v, h) in t.iter_mut().zip(&h) {
                    *v = *v * if conj { h.conj() } else { *h };
                }
                f.inverse_t_raw(&mut t, &mut want, &mut s);
                let (mut w, mut tmp, mut got) = (
                    a.clone(),
                    vec![C32::default(); m * m],
                    vec![C32::default(); m * m],
                );
                f.convolve_raw(&mut w, &h, conj, &mut tmp, &mut got, &mut s);
                assert!(got == want, "m = {m}, conj = {conj}");
            }
        }
    }

    #[test]
    fn shift_convention() {
        // ifftshift of a centred delta puts it at the corner; fftfreq is numpy's.
        let m = 8;
        let mut a = vec![0.0f32; m * m];
        a[4 * m + 4] = 1.0;
        let c = ifftshift(&a, m, false);
        assert_eq!(c[0], 1.0);
        assert_eq!(ifftshift(&c, m, true), a);
        assert_eq!(fftfreq(3, 8), 0.375);
        assert_eq!(fftfreq(4, 8), -0.5);
        assert_eq!(fftfreq(7, 8), -0.125);
    }
}
