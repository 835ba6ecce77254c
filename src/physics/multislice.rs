//! Multislice: a thick specimen as S thin slices O_0 … O_{S−1} (beam entrance first)
//! separated by free-space propagation over the slice thickness Δz (docs/algorithm.md §12).
//!
//! For one position j and probe mode k, with ψ_0 = P_jk the shifted probe at the entrance
//! surface,
//! ```text
//! ψ_{s+1} = F⁻¹[ H_Δz · F(ψ_s · O_s) ]   (s = 0 … S−2)      Ψ = F(ψ_{S−1} · O_{S−1})
//! ```
//! with H_Δz the Fresnel (paraxial angular-spectrum) propagator of [`fresnel_propagator`].
//! The kernel ([`crate::backend::cpu`]) runs it and its adjoint; this module holds the
//! propagator and the conversions between a multislice object and its projection.

use crate::physics::fft::fftfreq;
use num_complex::{Complex, Complex32, Complex64};

/// The Fresnel propagator over `dz_m` (m) for an M × M window of pixel `pixel_m` (y, x; m)
/// at wavelength `wavelength_m` (m), with the specimen tilted by `tilt_rad` (y, x; rad):
/// ```text
/// H(k) = exp(−iπ λ Δz |k|²) · exp(2πi Δz (k_y tan θ_y + k_x tan θ_x))
/// ```
/// (k in cycles per metre; the sign convention of the forward transform e^{−2πi k·r} used
/// throughout, the same as abTEM's, so that H_{Δz} H_{Δz'} = H_{Δz+Δz'} and a probe
/// defocused by C10 at the entrance surface is H_{C10} of the focused one). Returned in
/// the transposed kernel layout [kx][ky] (index kx·M + ky, corner-centred), unitary
/// (|H| = 1).
pub fn fresnel_propagator(
    m: usize,
    pixel_m: [f64; 2],
    wavelength_m: f64,
    dz_m: f64,
    tilt_rad: [f64; 2],
) -> Vec<Complex64> {
    let pi = std::f64::consts::PI;
    let (ty, tx) = (tilt_rad[0].tan(), tilt_rad[1].tan());
    let mut h = Vec::with_capacity(m * m);
    for ix in 0..m {
        let kx = fftfreq(ix, m) / pixel_m[1];
        for iy in 0..m {
            let ky = fftfreq(iy, m) / pixel_m[0];
            let phase = -pi * wavelength_m * dz_m * (kx * kx + ky * ky)
                + 2.0 * pi * dz_m * (ky * ty + kx * tx);
            h.push(Complex64::from_polar(1.0, phase));
        }
    }
    h
}

/// A single-slice object spread evenly over `slices` slices: O_s = |O|^{1/S} e^{iφ/S} for
/// every s, so that the product of the slices (the projection of a thin specimen) is O.
/// `object`: [rows, cols]; returns [S, rows, cols].
pub fn spread(object: &[Complex32], slices: usize) -> Vec<Complex32> {
    let s = slices.max(1) as f32;
    let one: Vec<Complex32> = object
        .iter()
        .map(|z| Complex32::from_polar(z.norm().powf(1.0 / s), z.arg() / s))
        .collect();
    one.repeat(slices.max(1))
}

/// The projected phase of a multislice object: Σ_s arg O_s per pixel (each slice's phase in
/// (−π, π], so the sum is not wrapped). `object`: [S, rows, cols] with `plane` pixels per
/// slice; returns [rows, cols].
pub fn projected_phase<T: Copy + Into<f64>>(object: &[Complex<T>], plane: usize) -> Vec<f64> {
    let mut out = vec![0.0; plane];
    for sl in object.chunks_exact(plane.max(1)) {
        for (o, z) in out.iter_mut().zip(sl) {
            let (re, im): (f64, f64) = (z.re.into(), z.im.into());
            *o += im.atan2(re);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagators_compose_and_are_unitary() {
        let (m, px, lam) = (16, [0.2e-10, 0.25e-10], 1.97e-12);
        let a = fresnel_propagator(m, px, lam, 1e-10, [0.0, 0.0]);
        let b = fresnel_propagator(m, px, lam, 2.5e-10, [0.0, 0.0]);
        let ab = fresnel_propagator(m, px, lam, 3.5e-10, [0.0, 0.0]);
        for i in 0..m * m {
            assert!((a[i].norm() - 1.0).abs() < 1e-12);
            assert!((a[i] * b[i] - ab[i]).norm() < 1e-9, "{i}");
        }
        // zero frequency is unchanged; at (kx, ky) = (1, 0)/M the phase is −πλΔz kx²
        assert!((a[0] - Complex64::new(1.0, 0.0)).norm() < 1e-15);
        let kx = 1.0 / (m as f64 * px[1]);
        let want = -std::f64::consts::PI * lam * 1e-10 * kx * kx;
        assert!((a[m].arg() - want).abs() < 1e-12, "{} {want}", a[m].arg());
        // a tilt is a linear phase in k (a lateral shift of Δz tan θ per slice)
        let t = fresnel_propagator(m, px, lam, 1e-10, [0.0, 0.01]);
        let lin = 2.0 * std::f64::consts::PI * 1e-10 * kx * 0.01f64.tan();
        assert!(((t[m] / a[m]).arg() - lin).abs() < 1e-12);
    }

    #[test]
    fn spread_slices_multiply_back_to_the_object() {
        let o = [
            Complex32::from_polar(0.9, 1.2),
            Complex32::from_polar(1.0, -2.5),
            Complex32::new(1.0, 0.0),
        ];
        let s = spread(&o, 4);
        assert_eq!(s.len(), 12);
        for (i, z) in o.iter().enumerate() {
            let p = (0..4).fold(Complex32::new(1.0, 0.0), |a, k| a * s[k * 3 + i]);
            assert!((p - z).norm() < 1e-5, "{p} {z}");
        }
        let ph = projected_phase(&s, 3);
        assert!((ph[0] - 1.2).abs() < 1e-6 && (ph[1] + 2.5).abs() < 1e-6 && ph[2].abs() < 1e-12);
    }
}
