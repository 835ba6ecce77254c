//! Element-wise complex kernels of the hot loop, with AVX2 versions for f32 chosen at run
//! time. The AVX2 versions use the same operations in the same order as the scalar ones
//! (no FMA contraction), so both give bit-identical results.

use super::fft::Real;
use num_complex::Complex;

/// The element-wise operations of the per-position kernel. Default bodies are the scalar
/// reference; `f32` overrides them with AVX2 where the CPU has it. All slices of one call
/// have equal length.
pub trait Ops: Sized + Copy {
    /// out = a · b
    #[inline(always)]
    fn cmul(out: &mut [Complex<Self>], a: &[Complex<Self>], b: &[Complex<Self>])
    where
        Self: Real,
    {
        for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
            *o = *a * *b;
        }
    }
    /// out = (a · b) · s
    #[inline(always)]
    fn cmul_cscale(
        out: &mut [Complex<Self>],
        a: &[Complex<Self>],
        b: &[Complex<Self>],
        s: Complex<Self>,
    ) where
        Self: Real,
    {
        for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
            *o = (*a * *b) * s;
        }
    }
    /// g += conj(a) · (b · s), the product in `Self`, accumulated in f64
    #[inline(always)]
    fn acc_cmul_conj_cscale(
        g: &mut [Complex<f64>],
        a: &[Complex<Self>],
        b: &[Complex<Self>],
        s: Complex<Self>,
    ) where
        Self: Real,
    {
        for ((g, a), b) in g.iter_mut().zip(a).zip(b) {
            let v = a.conj() * (*b * s);
            *g += Complex::new(v.re.f64(), v.im.f64());
        }
    }
    /// d = |a|²
    #[inline(always)]
    fn norm(d: &mut [Self], a: &[Complex<Self>])
    where
        Self: Real,
    {
        for (d, a) in d.iter_mut().zip(a) {
            *d = a.norm_sqr();
        }
    }
    /// d += |a|²
    #[inline(always)]
    fn acc_norm(d: &mut [Self], a: &[Complex<Self>])
    where
        Self: Real,
    {
        for (d, a) in d.iter_mut().zip(a) {
            *d = *d + a.norm_sqr();
        }
    }
    /// The adjoint pass of one row: g += conj(p)·b, d += |p|², t = conj(o)·b and, when
    /// `dp` is given, dp += |o|². Products in `Self`; the sums g, d, dp in f64, so that
    /// any grouping of positions (slabs, tiles, ranks) gives the same sums to ~1e-16.
    #[inline(always)]
    fn adjoint_row(
        g: &mut [Complex<f64>],
        d: &mut [f64],
        t: &mut [Complex<Self>],
        dp: Option<&mut [f64]>,
        p: &[Complex<Self>],
        b: &[Complex<Self>],
        o: &[Complex<Self>],
    ) where
        Self: Real,
    {
        for i in 0..g.len() {
            let v = p[i].conj() * b[i];
            g[i] += Complex::new(v.re.f64(), v.im.f64());
            d[i] += p[i].norm_sqr().f64();
            t[i] = o[i].conj() * b[i];
        }
        if let Some(dp) = dp {
            for (dp, o) in dp.iter_mut().zip(o) {
                *dp += o.norm_sqr().f64();
            }
        }
    }
    /// [`Ops::adjoint_row`] without `dp`, with t written over p: `pt` holds p (a wave
    /// incident on a slice) on entry and t = conj(o)·b on return.
    #[inline(always)]
    fn adjoint_wave(
        g: &mut [Complex<f64>],
        d: &mut [f64],
        pt: &mut [Complex<Self>],
        b: &[Complex<Self>],
        o: &[Complex<Self>],
    ) where
        Self: Real,
    {
        for i in 0..g.len() {
            let p = pt[i];
            let v = p.conj() * b[i];
            g[i] += Complex::new(v.re.f64(), v.im.f64());
            d[i] += p.norm_sqr().f64();
            pt[i] = o[i].conj() * b[i];
        }
    }
    /// out = a · w (w real)
    #[inline(always)]
    fn mul_real(out: &mut [Complex<Self>], a: &[Complex<Self>], w: &[Self])
    where
        Self: Real,
    {
        for ((o, a), w) in out.iter_mut().zip(a).zip(w) {
            *o = *a * *w;
        }
    }
}

impl Ops for f64 {}

#[cfg(not(target_arch = "x86_64"))]
impl Ops for f32 {}

#[cfg(target_arch = "x86_64")]
impl Ops for f32 {
    #[inline(always)]
    fn cmul(out: &mut [Complex<f32>], a: &[Complex<f32>], b: &[Complex<f32>]) {
        if avx2() {
            // SAFETY: AVX2 present; equal lengths asserted inside.
            unsafe { avx::cmul(out, a, b) }
        } else {
            for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
                *o = *a * *b;
            }
        }
    }
    #[inline(always)]
    fn cmul_cscale(
        out: &mut [Complex<f32>],
        a: &[Complex<f32>],
        b: &[Complex<f32>],
        s: Complex<f32>,
    ) {
        if avx2() {
            // SAFETY: as above.
            unsafe { avx::cmul_cscale(out, a, b, s) }
        } else {
            for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
                *o = (*a * *b) * s;
            }
        }
    }
    #[inline(always)]
    fn acc_cmul_conj_cscale(
        g: &mut [Complex<f64>],
        a: &[Complex<f32>],
        b: &[Complex<f32>],
        s: Complex<f32>,
    ) {
        if avx2() {
            // SAFETY: as above.
            unsafe { avx::acc_cmul_conj_cscale(g, a, b, s) }
        } else {
            for ((g, a), b) in g.iter_mut().zip(a).zip(b) {
                let v = a.conj() * (*b * s);
                *g += Complex::new(v.re as f64, v.im as f64);
            }
        }
    }
    #[inline(always)]
    fn norm(d: &mut [f32], a: &[Complex<f32>]) {
        if avx2() {
            // SAFETY: as above.
            unsafe { avx::norm::<false>(d, a) }
        } else {
            for (d, a) in d.iter_mut().zip(a) {
                *d = a.norm_sqr();
            }
        }
    }
    #[inline(always)]
    fn acc_norm(d: &mut [f32], a: &[Complex<f32>]) {
        if avx2() {
            // SAFETY: as above.
            unsafe { avx::norm::<true>(d, a) }
        } else {
            for (d, a) in d.iter_mut().zip(a) {
                *d += a.norm_sqr();
            }
        }
    }
    #[inline(always)]
    fn adjoint_row(
        g: &mut [Complex<f64>],
        d: &mut [f64],
        t: &mut [Complex<f32>],
        dp: Option<&mut [f64]>,
        p: &[Complex<f32>],
        b: &[Complex<f32>],
        o: &[Complex<f32>],
    ) {
        if avx2() {
            // SAFETY: as above.
            unsafe { avx::adjoint_row(g, d, t, dp, p, b, o) }
        } else {
            for i in 0..g.len() {
                let v = p[i].conj() * b[i];
                g[i] += Complex::new(v.re as f64, v.im as f64);
                d[i] += p[i].norm_sqr() as f64;
                t[i] = o[i].conj() * b[i];
            }
            if let Some(dp) = dp {
                for (dp, o) in dp.iter_mut().zip(o) {
                    *dp += o.norm_sqr() as f64;
                }
            }
        }
    }
    fn adjoint_wave(
        g: &mut [Complex<f64>],
        d: &mut [f64],
        pt: &mut [Complex<f32>],
        b: &[Complex<f32>],
        o: &[Complex<f32>],
    ) {
        if avx2() {
            // SAFETY: as above.
            unsafe { avx::adjoint_wave(g, d, pt, b, o) }
        } else {
            for i in 0..g.len() {
                let p = pt[i];
                let v = p.conj() * b[i];
                g[i] += Complex::new(v.re as f64, v.im as f64);
                d[i] += p.norm_sqr() as f64;
                pt[i] = o[i].conj() * b[i];
            }
        }
    }
    #[inline(always)]
    fn mul_real(out: &mut [Complex<f32>], a: &[Complex<f32>], w: &[f32]) {
        if avx2() {
            // SAFETY: as above.
            unsafe { avx::mul_real(out, a, w) }
        } else {
            for ((o, a), w) in out.iter_mut().zip(a).zip(w) {
                *o = *a * *w;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
}

#[cfg(target_arch = "x86_64")]
mod avx {
    //! AVX2 bodies: 4 complex f32 per 256-bit register, scalar tail.
    use num_complex::Complex;
    use std::arch::x86_64::*;

    /// (a or conj a) · b for 4 complex numbers: re = ar br ∓ ai bi, im = ar bi ± ai br,
    /// evaluated as the scalar code does (products, then one add/sub).
    #[inline(always)]
    unsafe fn mul4<const CONJ: bool>(a: __m256, b: __m256) -> __m256 {
        let ar = _mm256_moveldup_ps(a); // ar ar
        let ai = _mm256_movehdup_ps(a); // ai ai
        let bsw = _mm256_permute_ps(b, 0b1011_0001); // bi br
        let p = _mm256_mul_ps(ar, b); // ar·br, ar·bi
        let q = _mm256_mul_ps(ai, bsw); // ai·bi, ai·br
        if CONJ {
            // conj(a)·b: re = ar br + ai bi, im = ar bi − ai br
            let neg = _mm256_xor_ps(q, _mm256_set1_ps(-0.0));
            let t = _mm256_addsub_ps(p, neg); // even: p − (−q) = p + q ; odd: p + (−q)
            t
        } else {
            _mm256_addsub_ps(p, q) // even: p − q ; odd: p + q
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn cmul(out: &mut [Complex<f32>], a: &[Complex<f32>], b: &[Complex<f32>]) {
        let n = out.len();
        assert!(a.len() == n && b.len() == n);
        let (o, pa, pb) = (
            out.as_mut_ptr() as *mut f32,
            a.as_ptr() as *const f32,
            b.as_ptr() as *const f32,
        );
        let mut i = 0;
        while i + 4 <= n {
            let r = mul4::<false>(
                _mm256_loadu_ps(pa.add(2 * i)),
                _mm256_loadu_ps(pb.add(2 * i)),
            );
            _mm256_storeu_ps(o.add(2 * i), r);
            i += 4;
        }
        for j in i..n {
            out[j] = a[j] * b[j];
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn cmul_cscale(
        out: &mut [Complex<f32>],
        a: &[Complex<f32>],
        b: &[Complex<f32>],
        s: Complex<f32>,
    ) {
        let n = out.len();
        assert!(a.len() == n && b.len() == n);
        let (o, pa, pb) = (
            out.as_mut_ptr() as *mut f32,
            a.as_ptr() as *const f32,
            b.as_ptr() as *const f32,
        );
        let s4 = _mm256_setr_ps(s.re, s.im, s.re, s.im, s.re, s.im, s.re, s.im);
        let mut i = 0;
        while i + 4 <= n {
            let r = mul4::<false>(
                _mm256_loadu_ps(pa.add(2 * i)),
                _mm256_loadu_ps(pb.add(2 * i)),
            );
            _mm256_storeu_ps(o.add(2 * i), mul4::<false>(r, s4));
            i += 4;
        }
        for j in i..n {
            out[j] = (a[j] * b[j]) * s;
        }
    }

    /// `acc[0..8] += v` for 8 f32 values widened to f64.
    #[inline(always)]
    unsafe fn acc_f64(acc: *mut f64, v: __m256) {
        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        _mm256_storeu_pd(acc, _mm256_add_pd(_mm256_loadu_pd(acc), lo));
        _mm256_storeu_pd(acc.add(4), _mm256_add_pd(_mm256_loadu_pd(acc.add(4)), hi));
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn acc_cmul_conj_cscale(
        g: &mut [Complex<f64>],
        a: &[Complex<f32>],
        b: &[Complex<f32>],
        s: Complex<f32>,
    ) {
        let n = g.len();
        assert!(a.len() == n && b.len() == n);
        let (pg, pa, pb) = (
            g.as_mut_ptr() as *mut f64,
            a.as_ptr() as *const f32,
            b.as_ptr() as *const f32,
        );
        let s4 = _mm256_setr_ps(s.re, s.im, s.re, s.im, s.re, s.im, s.re, s.im);
        let mut i = 0;
        while i + 4 <= n {
            let bs = mul4::<false>(_mm256_loadu_ps(pb.add(2 * i)), s4);
            acc_f64(
                pg.add(2 * i),
                mul4::<true>(_mm256_loadu_ps(pa.add(2 * i)), bs),
            );
            i += 4;
        }
        for j in i..n {
            let v = a[j].conj() * (b[j] * s);
            g[j] += Complex::new(v.re as f64, v.im as f64);
        }
    }

    /// d (+)= |a|² (ACC: accumulate).
    #[target_feature(enable = "avx2")]
    pub unsafe fn norm<const ACC: bool>(d: &mut [f32], a: &[Complex<f32>]) {
        let n = d.len();
        assert!(a.len() == n);
        let (pd, pa) = (d.as_mut_ptr(), a.as_ptr() as *const f32);
        let mut i = 0;
        while i + 8 <= n {
            let x0 = _mm256_loadu_ps(pa.add(2 * i)); // complex 0..3
            let x1 = _mm256_loadu_ps(pa.add(2 * i + 8)); // complex 4..7
            let s0 = _mm256_mul_ps(x0, x0);
            let s1 = _mm256_mul_ps(x1, x1);
            // hadd pairs: [re²+im²] per complex, lanes interleaved by 128-bit halves
            let h = _mm256_hadd_ps(s0, s1); // (0,1,4,5 | 2,3,6,7)
            let h = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(h), 0b1101_1000)); // 0..7
            let h = if ACC {
                _mm256_add_ps(_mm256_loadu_ps(pd.add(i)), h)
            } else {
                h
            };
            _mm256_storeu_ps(pd.add(i), h);
            i += 8;
        }
        for j in i..n {
            d[j] = if ACC {
                d[j] + a[j].norm_sqr()
            } else {
                a[j].norm_sqr()
            };
        }
    }

    /// |x|² of 8 complex numbers (two registers) in element order.
    #[inline(always)]
    unsafe fn norm8(x0: __m256, x1: __m256) -> __m256 {
        let h = _mm256_hadd_ps(_mm256_mul_ps(x0, x0), _mm256_mul_ps(x1, x1)); // (0,1,4,5 | 2,3,6,7)
        _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(h), 0b1101_1000))
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn adjoint_row(
        g: &mut [Complex<f64>],
        d: &mut [f64],
        t: &mut [Complex<f32>],
        dp: Option<&mut [f64]>,
        p: &[Complex<f32>],
        b: &[Complex<f32>],
        o: &[Complex<f32>],
    ) {
        let n = g.len();
        assert!(d.len() == n && t.len() == n && p.len() == n && b.len() == n && o.len() == n);
        assert!(dp.as_ref().is_none_or(|v| v.len() == n));
        let pdp = dp.map_or(std::ptr::null_mut(), |v| v.as_mut_ptr());
        adjoint_raw(
            n,
            g.as_mut_ptr(),
            d.as_mut_ptr(),
            t.as_mut_ptr(),
            pdp,
            p.as_ptr(),
            b.as_ptr(),
            o.as_ptr(),
        );
    }

    /// [`adjoint_row`] with `t` in the place of `p`: `pt` holds p on entry, t on return.
    #[target_feature(enable = "avx2")]
    pub unsafe fn adjoint_wave(
        g: &mut [Complex<f64>],
        d: &mut [f64],
        pt: &mut [Complex<f32>],
        b: &[Complex<f32>],
        o: &[Complex<f32>],
    ) {
        let n = g.len();
        assert!(d.len() == n && pt.len() == n && b.len() == n && o.len() == n);
        let ptr = pt.as_mut_ptr();
        adjoint_raw(
            n,
            g.as_mut_ptr(),
            d.as_mut_ptr(),
            ptr,
            std::ptr::null_mut(),
            ptr,
            b.as_ptr(),
            o.as_ptr(),
        );
    }

    /// The body of [`adjoint_row`] over n elements; `t` may equal `p` (each element of p is
    /// read before t's is written), `dp` may be null (no probe preconditioner).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn adjoint_raw(
        n: usize,
        g: *mut Complex<f64>,
        d: *mut f64,
        t: *mut Complex<f32>,
        dp: *mut f64,
        p: *const Complex<f32>,
        b: *const Complex<f32>,
        o: *const Complex<f32>,
    ) {
        let (pg, pt) = (g as *mut f64, t as *mut f32);
        let (pp, pb, po) = (p as *const f32, b as *const f32, o as *const f32);
        let mut i = 0;
        while i + 8 <= n {
            let (p0, p1) = (
                _mm256_loadu_ps(pp.add(2 * i)),
                _mm256_loadu_ps(pp.add(2 * i + 8)),
            );
            let (b0, b1) = (
                _mm256_loadu_ps(pb.add(2 * i)),
                _mm256_loadu_ps(pb.add(2 * i + 8)),
            );
            let (o0, o1) = (
                _mm256_loadu_ps(po.add(2 * i)),
                _mm256_loadu_ps(po.add(2 * i + 8)),
            );
            acc_f64(pg.add(2 * i), mul4::<true>(p0, b0));
            acc_f64(pg.add(2 * i + 8), mul4::<true>(p1, b1));
            _mm256_storeu_ps(pt.add(2 * i), mul4::<true>(o0, b0));
            _mm256_storeu_ps(pt.add(2 * i + 8), mul4::<true>(o1, b1));
            acc_f64(d.add(i), norm8(p0, p1));
            if !dp.is_null() {
                acc_f64(dp.add(i), norm8(o0, o1));
            }
            i += 8;
        }
        for j in i..n {
            let (pj, bj, oj) = (*p.add(j), *b.add(j), *o.add(j));
            let v = pj.conj() * bj;
            *g.add(j) += Complex::new(v.re as f64, v.im as f64);
            *d.add(j) += pj.norm_sqr() as f64;
            *t.add(j) = oj.conj() * bj;
            if !dp.is_null() {
                *dp.add(j) += oj.norm_sqr() as f64;
            }
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn mul_real(out: &mut [Complex<f32>], a: &[Complex<f32>], w: &[f32]) {
        let n = out.len();
        assert!(a.len() == n && w.len() == n);
        let (o, pa) = (out.as_mut_ptr() as *mut f32, a.as_ptr() as *const f32);
        let mut i = 0;
        while i + 4 <= n {
            let w4 = _mm_loadu_ps(w.as_ptr().add(i)); // w0 w1 w2 w3
            let lo = _mm_unpacklo_ps(w4, w4); // w0 w0 w1 w1
            let hi = _mm_unpackhi_ps(w4, w4); // w2 w2 w3 w3
            let ww = _mm256_set_m128(hi, lo);
            _mm256_storeu_ps(
                o.add(2 * i),
                _mm256_mul_ps(_mm256_loadu_ps(pa.add(2 * i)), ww),
            );
            i += 4;
        }
        for j in i..n {
            out[j] = a[j] * w[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type C = Complex<f32>;

    fn data(n: usize, s: u32) -> Vec<C> {
        (0..n)
            .map(|i| {
                C::new(
                    (((i as u32).wrapping_mul(2654435761u32) ^ s) % 1000) as f32 / 77.0 - 6.0,
                    ((i as u32 * 40503 + s) % 997) as f32 / 91.0 - 5.0,
                )
            })
            .collect()
    }

    /// The f32 kernels (AVX2 where present) equal the scalar reference bit for bit, tails included.
    #[test]
    fn simd_matches_scalar_bitwise() {
        for n in [1usize, 3, 4, 7, 8, 13, 128] {
            let (a, b) = (data(n, 1), data(n, 2));
            let w: Vec<f32> = data(n, 3).iter().map(|z| z.re).collect();
            let mut o = vec![C::default(); n];
            f32::cmul(&mut o, &a, &b);
            assert!(
                o.iter()
                    .zip(a.iter().zip(&b))
                    .all(|(o, (a, b))| *o == a * b),
                "cmul n={n}"
            );
            let mut d: Vec<f32> = w.clone();
            f32::norm(&mut d, &a);
            assert!((0..n).all(|i| d[i] == a[i].norm_sqr()), "norm n={n}");
            let mut d: Vec<f32> = w.clone();
            f32::acc_norm(&mut d, &a);
            assert!((0..n).all(|i| d[i] == w[i] + a[i].norm_sqr()), "norm n={n}");
            let sc = C::new(0.3, -1.7);
            f32::cmul_cscale(&mut o, &a, &b, sc);
            assert!(
                (0..n).all(|i| o[i] == (a[i] * b[i]) * sc),
                "cmul_cscale n={n}"
            );
            let w64 = |v: C| num_complex::Complex64::new(v.re as f64, v.im as f64);
            let mut g: Vec<num_complex::Complex64> = data(n, 5).into_iter().map(w64).collect();
            let g0 = g.clone();
            f32::acc_cmul_conj_cscale(&mut g, &a, &b, sc);
            assert!(
                (0..n).all(|i| g[i] == g0[i] + w64(a[i].conj() * (b[i] * sc))),
                "acc_cscale n={n}"
            );
            let w64v: Vec<f64> = w.iter().map(|v| *v as f64).collect();
            let (mut g, mut d, mut t, mut dp): (Vec<num_complex::Complex64>, _, _, _) = (
                data(n, 6).into_iter().map(w64).collect(),
                w64v.clone(),
                vec![C::default(); n],
                w64v.clone(),
            );
            let (g0, d0) = (g.clone(), d.clone());
            let c = data(n, 7);
            f32::adjoint_row(&mut g, &mut d, &mut t, Some(&mut dp), &a, &b, &c);
            for i in 0..n {
                assert_eq!(g[i], g0[i] + w64(a[i].conj() * b[i]), "adjoint g n={n}");
                assert_eq!(d[i], d0[i] + a[i].norm_sqr() as f64, "adjoint d n={n}");
                assert_eq!(t[i], c[i].conj() * b[i], "adjoint t n={n}");
                assert_eq!(dp[i], w64v[i] + c[i].norm_sqr() as f64, "adjoint dp n={n}");
            }
            // in place: t over p, the same sums and t as adjoint_row
            let (mut g2, mut d2, mut pt) = (g0.clone(), d0.clone(), a.clone());
            f32::adjoint_wave(&mut g2, &mut d2, &mut pt, &b, &c);
            assert_eq!((g2, d2, pt), (g, d, t), "adjoint_wave n={n}");
            f32::mul_real(&mut o, &a, &w);
            assert!((0..n).all(|i| o[i] == a[i] * w[i]), "mul_real n={n}");
        }
    }
}
