//! Fourier ring correlation of two reconstructions (`ptytile frc`): resolution without a
//! ground truth, from two independent halves of the data (`[data] subset = "even"` and
//! `"odd"`). docs/compare.md describes the method.
//!
//! Conventions: images are row-major `[y][x]` real arrays (phases in rad); spatial
//! frequencies are in cycles per pixel (q = √((k_y/H)² + (k_x/W)²)), converted to 1/m with
//! the result's pixel size.

use super::compare::{mean_gradients, Dft2};
use crate::error::{Context, Error, Result};
use num_complex::Complex64;
use std::path::Path;

/// Fraction α of each side that the Tukey window tapers (α/2 at each end): 1 is a Hann
/// window, 0 none. 0.5 keeps the middle half flat and the edges of the scanned area out.
pub const TUKEY_ALPHA: f64 = 0.5;

/// The ½-bit information threshold for a ring of `n` pixels (van Heel & Schatz 2005,
/// eq. 17, one half of the data in each image):
/// T(n) = (0.2071 + 1.9102/√n) / (1.2071 + 0.9102/√n). It tends to 0.1716 for large rings
/// and to 1 for a ring of one pixel.
pub fn half_bit(n: usize) -> f64 {
    let s = (n.max(1) as f64).sqrt();
    (0.2071 + 1.9102 / s) / (1.2071 + 0.9102 / s)
}

/// The Fourier ring correlation of two real `[h, w]` images, no window, no registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Rings {
    /// Ring centre frequency, cycles per pixel: ring i holds the frequencies q with
    /// round(q / Δq) = i, Δq = 1 / max(h, w); rings 0 ..= max(h, w)/2 (up to Nyquist).
    pub freq_per_px: Vec<f64>,
    /// FRC_i = Re Σ F_a F_b* / √(Σ|F_a|² Σ|F_b|²) over ring i (0 where a sum is 0).
    pub frc: Vec<f64>,
    /// Pixels (frequencies) in ring i.
    pub pixels: Vec<usize>,
}

/// [`Rings`] of the images `a` and `b` ([h][w], row-major). Sums in f64.
///
/// Errors (what = "images"): lengths that are not h · w, or a side smaller than 2.
pub fn rings(a: &[f64], b: &[f64], [h, w]: [usize; 2]) -> Result<Rings> {
    if h < 2 || w < 2 || a.len() != h * w || b.len() != h * w {
        return Err(Error::new(
            "images",
            format!(
                "need two {h}x{w} images of at least 2x2, have {} and {} values",
                a.len(),
                b.len()
            ),
        ));
    }
    let mut dft = Dft2::new(h, w);
    let (fa, fb) = (spectrum(a, &mut dft), spectrum(b, &mut dft));
    let side = h.max(w);
    let nr = side / 2 + 1;
    let (mut ab, mut aa, mut bb, mut pixels) = (
        vec![0f64; nr],
        vec![0f64; nr],
        vec![0f64; nr],
        vec![0usize; nr],
    );
    for ky in 0..h {
        for kx in 0..w {
            let q = radial(ky, kx, [h, w]);
            let i = (q * side as f64).round() as usize;
            if i >= nr {
                continue; // the corners beyond Nyquist
            }
            let (x, y) = (fa[ky * w + kx], fb[ky * w + kx]);
            ab[i] += (x * y.conj()).re;
            aa[i] += x.norm_sqr();
            bb[i] += y.norm_sqr();
            pixels[i] += 1;
        }
    }
    let frc = (0..nr)
        .map(|i| {
            if aa[i] > 0.0 && bb[i] > 0.0 {
                ab[i] / (aa[i] * bb[i]).sqrt()
            } else {
                0.0
            }
        })
        .collect();
    Ok(Rings {
        freq_per_px: (0..nr).map(|i| i as f64 / side as f64).collect(),
        frc,
        pixels,
    })
}

/// |q| in cycles per pixel of the DFT bin (ky, kx) of an [h, w] array: each index k above
/// n/2 stands for the negative frequency k/n − 1.
fn radial(ky: usize, kx: usize, [h, w]: [usize; 2]) -> f64 {
    let f = |k: usize, n: usize| {
        if k <= n / 2 {
            k as f64 / n as f64
        } else {
            k as f64 / n as f64 - 1.0
        }
    };
    f(ky, h).hypot(f(kx, w))
}

/// The unnormalised DFT of the real image `v` (row-major, `dft`'s shape).
fn spectrum(v: &[f64], dft: &mut Dft2) -> Vec<Complex64> {
    let mut c: Vec<Complex64> = v.iter().map(|&x| Complex64::new(x, 0.0)).collect();
    dft.run(&mut c, false);
    c
}

/// The frequency (cycles per pixel) where the FRC first falls below the ½-bit threshold,
/// interpolated linearly in FRC − T between the last ring above and the first below; ring
/// 0 (the mean) is skipped. `None` when it never falls below (the resolution is then at
/// least the Nyquist limit, 2 pixels).
pub fn crossing(r: &Rings) -> Option<f64> {
    let d: Vec<f64> = (0..r.frc.len())
        .map(|i| r.frc[i] - half_bit(r.pixels[i]))
        .collect();
    let i = (1..d.len()).find(|&i| d[i] < 0.0)?;
    if i == 1 {
        return Some(r.freq_per_px[1]);
    }
    let t = d[i - 1] / (d[i - 1] - d[i]);
    Some(r.freq_per_px[i - 1] + t * (r.freq_per_px[i] - r.freq_per_px[i - 1]))
}

/// The Tukey window of `n` samples with taper fraction `alpha` ([`TUKEY_ALPHA`]):
/// w(i) = ½(1 − cos(2π x/α)) for x = i/(n − 1) < α/2, symmetric at the other end, 1 between.
pub fn tukey(n: usize, alpha: f64) -> Vec<f64> {
    if n < 2 || alpha <= 0.0 {
        return vec![1.0; n];
    }
    (0..n)
        .map(|i| {
            let x = i as f64 / (n - 1) as f64;
            let e = x.min(1.0 - x);
            if e < alpha / 2.0 {
                0.5 * (1.0 - (2.0 * std::f64::consts::PI * e / alpha).cos())
            } else {
                1.0
            }
        })
        .collect()
}

/// `v` ([h][w]) times the separable [`tukey`] window, its windowed mean removed first (so
/// the window's own spectrum does not dominate the low rings).
pub fn apodise(v: &[f64], [h, w]: [usize; 2]) -> Vec<f64> {
    let (wy, wx) = (tukey(h, TUKEY_ALPHA), tukey(w, TUKEY_ALPHA));
    let wsum: f64 = wy.iter().sum::<f64>() * wx.iter().sum::<f64>();
    let mean = (0..h * w)
        .map(|i| v[i] * wy[i / w] * wx[i % w])
        .sum::<f64>()
        / wsum.max(f64::MIN_POSITIVE);
    (0..h * w)
        .map(|i| (v[i] - mean) * wy[i / w] * wx[i % w])
        .collect()
}

/// The shift s (y, x), pixels, that best aligns `b` to `a` ([h][w]): b(r − s) ≈ a(r). The
/// peak of the circular cross-correlation of the apodised images (by FFT), refined by a
/// parabola through the peak and its two neighbours along each axis (sub-pixel).
pub fn register(a: &[f64], b: &[f64], [h, w]: [usize; 2]) -> [f64; 2] {
    let mut dft = Dft2::new(h, w);
    let (fa, fb) = (
        spectrum(&apodise(a, [h, w]), &mut dft),
        spectrum(&apodise(b, [h, w]), &mut dft),
    );
    let mut c: Vec<Complex64> = fa.iter().zip(&fb).map(|(x, y)| x * y.conj()).collect();
    dft.run(&mut c, true);
    let cc: Vec<f64> = c.iter().map(|z| z.re).collect();
    let p = (0..h * w)
        .max_by(|&i, &j| cc[i].total_cmp(&cc[j]))
        .unwrap_or(0);
    let (py, px) = (p / w, p % w);
    let at = |y: usize, x: usize| cc[(y % h) * w + x % w];
    let vertex = |m: f64, c0: f64, p: f64| {
        let d = m - 2.0 * c0 + p;
        if d < 0.0 {
            (0.5 * (m - p) / d).clamp(-0.5, 0.5)
        } else {
            0.0
        }
    };
    let dy = vertex(at(py + h - 1, px), at(py, px), at(py + 1, px));
    let dx = vertex(at(py, px + w - 1), at(py, px), at(py, px + 1));
    let signed = |k: usize, n: usize| {
        if k <= n / 2 {
            k as f64
        } else {
            k as f64 - n as f64
        }
    };
    [signed(py, h) + dy, signed(px, w) + dx]
}

/// `v` ([h][w]) shifted by `s` pixels (y, x), v_s(r) = v(r − s), by the Fourier shift
/// theorem (circular; exact for a periodic band-limited image): each frequency q times
/// e^{−2πi q s} per axis, except the Nyquist bin of an even side, times cos(π s) (the mean of
/// the ramp at ±½, so the result stays real; exact for whole-pixel shifts).
pub fn shift(v: &[f64], [h, w]: [usize; 2], s: [f64; 2]) -> Vec<f64> {
    let mut dft = Dft2::new(h, w);
    let mut c = spectrum(v, &mut dft);
    let pi = std::f64::consts::PI;
    let factor = |k: usize, n: usize, s: f64| {
        if 2 * k == n {
            Complex64::new((pi * s).cos(), 0.0)
        } else {
            let q = if k <= n / 2 {
                k as f64 / n as f64
            } else {
                k as f64 / n as f64 - 1.0
            };
            Complex64::from_polar(1.0, -2.0 * pi * q * s)
        }
    };
    let fy: Vec<Complex64> = (0..h).map(|k| factor(k, h, s[0])).collect();
    let fx: Vec<Complex64> = (0..w).map(|k| factor(k, w, s[1])).collect();
    for ky in 0..h {
        for kx in 0..w {
            c[ky * w + kx] *= fy[ky] * fx[kx];
        }
    }
    dft.run(&mut c, true);
    c.iter().map(|z| z.re / (h * w) as f64).collect()
}

/// What `ptytile frc` reports.
#[derive(Debug, Clone)]
pub struct FrcReport {
    /// The rings of the registered, apodised phase images.
    pub rings: Rings,
    /// [`crossing`] of `rings`, cycles per pixel.
    pub crossing_per_px: Option<f64>,
    /// Pixel size (y, x), m, of the first result.
    pub pixel_size_m: [f64; 2],
    /// The compared area [y0, y1, x0, x1) (global object pixels, the first result's scan).
    pub area: [usize; 4],
    /// The shift (y, x), px, applied to the second image ([`register`]).
    pub shift_px: [f64; 2],
}

impl FrcReport {
    /// The ½-bit resolution in m: the pixel size over the crossing frequency (the larger
    /// pixel side for non-square pixels); `None` when the FRC never falls below the threshold.
    pub fn resolution_m(&self) -> Option<f64> {
        self.crossing_per_px
            .map(|q| self.pixel_size_m[0].max(self.pixel_size_m[1]) / q)
    }
}

/// The phase image of `o` (complex, [h][w]) used for the FRC: global phase offset and mean
/// phase gradient removed (as `compare` pre-flattens), so that a ramp or an offset that
/// differs between two reconstructions is not counted as a difference; then arg.
pub fn flat_phase(o: &[Complex64], [h, w]: [usize; 2]) -> Vec<f64> {
    let (gy, gx) = mean_gradients(o, h, w);
    let ramped: Vec<Complex64> = (0..h * w)
        .map(|i| o[i] * Complex64::from_polar(1.0, -(gy * (i / w) as f64 + gx * (i % w) as f64)))
        .collect();
    let mean: Complex64 = ramped.iter().sum();
    let rot = if mean.norm() > 0.0 {
        mean.conj() / mean.norm()
    } else {
        Complex64::new(1.0, 0.0)
    };
    ramped.iter().map(|z| (z * rot).arg()).collect()
}

/// FRC of two phase images over the same area ([h][w]): `b` registered to `a`
/// ([`register`], [`shift`]), both apodised ([`apodise`]), then [`rings`]; returns the
/// rings and the shift.
pub fn frc_images(a: &[f64], b: &[f64], shape: [usize; 2]) -> Result<(Rings, [f64; 2])> {
    rings(a, b, shape)?; // the shape checks
    let s = register(a, b, shape);
    let bs = shift(b, shape, s);
    Ok((rings(&apodise(a, shape), &apodise(&bs, shape), shape)?, s))
}

/// `ptytile frc A B`: the FRC of the objects of two ptytile results (`/object`, a
/// multislice one through its projection; `/object@pixel_size_m`; `/positions_px`) over the
/// scanned area of A's positions (`compare::scan_area`), on their [`flat_phase`] images.
///
/// Errors (naming the file and dataset): unreadable files, objects of different shapes or
/// pixel sizes (0.1 %), a scanned area outside the object or smaller than 8 × 8 pixels.
pub fn frc_files(a: &Path, b: &Path) -> Result<FrcReport> {
    let mut objs = Vec::new();
    for p in [a, b] {
        let name = p.display().to_string();
        crate::output::safety::check_input(p)?;
        let f = hdf5::File::open(p).ctx(|| name.clone())?;
        let (o, shape, pix) = super::compare::read_complex_2d(&f, &name, "/object", true)?;
        let pix = pix.ok_or_else(|| {
            Error::new(
                format!("{name}:/object"),
                "attribute pixel_size_m missing: the FRC needs the pixel size",
            )
        })?;
        objs.push((name, f, o, shape, pix));
    }
    let (an, af, ao, ashape, apix) = &objs[0];
    let (bn, _, bo, bshape, bpix) = &objs[1];
    if ashape != bshape {
        return Err(Error::new(
            format!("{bn}:/object"),
            format!(
                "shape {bshape:?}, {an} has {ashape:?}: compare reconstructions of the same scan"
            ),
        ));
    }
    if (0..2).any(|i| (apix[i] - bpix[i]).abs() > 1e-3 * apix[i].abs()) {
        return Err(Error::new(
            format!("{bn}:/object@pixel_size_m"),
            format!("{bpix:?}, {an} has {apix:?}"),
        ));
    }
    let (area, pos_what) = super::compare::read_scan_area(af, an)?;
    let [y0, y1, x0, x1] = area;
    if y1 > ashape[0] || x1 > ashape[1] || y1 - y0 < 8 || x1 - x0 < 8 {
        return Err(Error::new(
            pos_what,
            format!(
                "scanned area {area:?} is outside the {ashape:?} object or smaller than 8x8 pixels"
            ),
        ));
    }
    let shape = [y1 - y0, x1 - x0];
    let cut = |o: &[num_complex::Complex32]| -> Vec<Complex64> {
        (y0..y1)
            .flat_map(|y| {
                o[y * ashape[1] + x0..y * ashape[1] + x1]
                    .iter()
                    .map(|z| Complex64::new(z.re as f64, z.im as f64))
            })
            .collect()
    };
    let (pa, pb) = (flat_phase(&cut(ao), shape), flat_phase(&cut(bo), shape));
    if pa.iter().chain(&pb).any(|v| !v.is_finite()) {
        return Err(Error::new(
            format!("{an} vs {bn}"),
            "non-finite values in an object's scanned area",
        ));
    }
    let (rings, shift_px) = frc_images(&pa, &pb, shape)?;
    Ok(FrcReport {
        crossing_per_px: crossing(&rings),
        rings,
        pixel_size_m: *apix,
        area,
        shift_px,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn noise(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random::<f64>() - 0.5).collect()
    }

    /// White noise low-pass filtered to |q| ≤ `q0` cycles per pixel (a disk in frequency).
    fn band_limited(shape: [usize; 2], q0: f64, seed: u64) -> Vec<f64> {
        let [h, w] = shape;
        let mut dft = Dft2::new(h, w);
        let mut c = spectrum(&noise(h * w, seed), &mut dft);
        for ky in 0..h {
            for kx in 0..w {
                if radial(ky, kx, shape) > q0 {
                    c[ky * w + kx] = Complex64::default();
                }
            }
        }
        dft.run(&mut c, true);
        c.iter().map(|z| z.re / (h * w) as f64).collect()
    }

    #[test]
    fn half_bit_threshold_values() {
        assert!((half_bit(1) - 1.0).abs() < 1e-3);
        assert!((half_bit(1 << 30) - 0.2071 / 1.2071).abs() < 1e-4);
        // a 100-pixel ring: (0.2071 + 0.19102) / (1.2071 + 0.09102)
        assert!((half_bit(100) - 0.39812 / 1.29812).abs() < 1e-12);
    }

    #[test]
    fn an_image_with_itself_is_one_and_independent_noise_is_near_zero() {
        let shape = [96, 128];
        let a = band_limited(shape, 0.3, 1);
        let r = rings(&a, &a, shape).unwrap();
        assert!(
            r.frc
                .iter()
                .zip(&r.pixels)
                .all(|(f, n)| *n == 0 || (f - 1.0).abs() < 1e-12),
            "{:?}",
            r.frc
        );
        assert!(crossing(&r).is_none());
        let (a, b) = (noise(128 * 128, 2), noise(128 * 128, 3));
        let r = rings(&a, &b, [128, 128]).unwrap();
        // each ring's FRC of independent noise has a standard deviation of about 1/√n: every
        // ring with n ≥ 20 pixels within 4.5/√n, and the mean over rings within 0.02 of 0
        for i in 1..r.frc.len() {
            assert!(
                r.frc[i].abs() < 4.5 / (r.pixels[i] as f64).sqrt(),
                "ring {i}: {} of {} px",
                r.frc[i],
                r.pixels[i]
            );
        }
        let mean = r.frc[1..].iter().sum::<f64>() / (r.frc.len() - 1) as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        // through registration and the window (which halves the effective pixel count of a
        // ring): every ring beyond the 1st within 4.5·√2/√n; the mean is biased upwards by
        // aligning the noise on its largest chance correlation, ≈ √(2 ln N)/√(N/2) = 0.046 for
        // N = 128² shifts and pixels (measured 0.043), so within 0.06
        let (r, _) = frc_images(&a, &b, [128, 128]).unwrap();
        let worst = (2..r.frc.len())
            .map(|i| r.frc[i].abs() * (r.pixels[i] as f64 / 2.0).sqrt())
            .fold(0f64, f64::max);
        let mean = r.frc[2..].iter().sum::<f64>() / (r.frc.len() - 2) as f64;
        eprintln!("registered noise: worst |FRC|·√(n/2) {worst:.3}, mean {mean:.4}");
        assert!(
            worst < 4.5 && mean.abs() < 0.06,
            "worst {worst}, mean {mean}"
        );
    }

    #[test]
    fn a_band_limited_pair_crosses_at_its_band_edge() {
        // signal band-limited to 0.25 cycles/px, each image with its own white noise at a
        // tenth of the signal's power per frequency: FRC ≈ 10/11 below the edge, ≈ 0 above;
        // the second image is shifted by (0.3, −0.7) px, which registration must undo
        let shape = [128, 128];
        let s = band_limited(shape, 0.25, 7);
        let ps = s.iter().map(|v| v * v).sum::<f64>() / (std::f64::consts::PI * 0.25 * 0.25);
        let noisy = |seed: u64| {
            let n = noise(128 * 128, seed);
            let pn = n.iter().map(|v| v * v).sum::<f64>();
            let k = (0.1 * ps / pn).sqrt();
            s.iter()
                .zip(&n)
                .map(|(a, b)| a + k * b)
                .collect::<Vec<f64>>()
        };
        let a = noisy(8);
        let b = shift(&noisy(9), shape, [0.3, -0.7]);
        let (r, sh) = frc_images(&a, &b, shape).unwrap();
        assert!(
            (sh[0] + 0.3).abs() < 0.05 && (sh[1] - 0.7).abs() < 0.05,
            "shift {sh:?}"
        );
        let q = crossing(&r).unwrap();
        assert!(
            (q - 0.25).abs() < 0.015,
            "crossing at {q} cycles/px, the band edge is 0.25"
        );
        let mid = r.frc[10..28].iter().fold(1f64, |m, f| m.min(*f));
        assert!(mid > 0.85, "FRC below the edge {mid}");
    }

    #[test]
    fn shift_and_window() {
        let shape = [32, 40];
        let a = band_limited(shape, 0.3, 4);
        let back = shift(&shift(&a, shape, [1.25, -2.5]), shape, [-1.25, 2.5]);
        assert!(a.iter().zip(&back).all(|(x, y)| (x - y).abs() < 1e-12));
        // full-band noise (Nyquist rows included): no shift is the identity, a whole-pixel
        // shift a circular roll
        let n = noise(32 * 40, 5);
        assert!(n
            .iter()
            .zip(shift(&n, shape, [0.0, 0.0]))
            .all(|(x, y)| (x - y).abs() < 1e-12));
        let rolled = shift(&n, shape, [3.0, -1.0]);
        assert!((0..32 * 40)
            .all(|i| (rolled[i] - n[((i / 40 + 29) % 32) * 40 + (i % 40 + 1) % 40]).abs() < 1e-12));
        let t = tukey(9, 0.5);
        assert_eq!((t[0], t[4], t[8]), (0.0, 1.0, 0.0));
        assert!((t[1] - 0.5).abs() < 1e-12 && (t[2] - 1.0).abs() < 1e-12);
        assert!(rings(&a, &a[1..], shape)
            .unwrap_err()
            .to_string()
            .starts_with("images: need two 32x40"));
    }
}
