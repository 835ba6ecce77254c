//! Probe formation from the aperture and aberrations, and mixed-state probe modes.

use super::fft::{fftfreq, Fft2};
use super::Experiment;
use crate::error::{Error, Result};
use num_complex::Complex32 as C32;

/// Aberration phase χ(θ) in rad for scattering angle θ (rad):
/// χ = (2π/λ)(½ C10 θ² + ¼ C30 θ⁴), with C10 = −defocus (positive defocus = underfocus).
pub fn chi(theta: f64, wavelength_m: f64, defocus_m: f64, c30_m: f64) -> f64 {
    let c10 = -defocus_m;
    2.0 * std::f64::consts::PI / wavelength_m
        * (0.5 * c10 * theta * theta + 0.25 * c30_m * theta.powi(4))
}

/// Form the probe on the M × M detector grid: P(k) = A(k) exp(−iχ(k)), A = 1 for
/// θ = λ|k| ≤ α, then P(r) = F⁻¹ P(k) (unitary), centred at [M/2, M/2] in real space,
/// scaled to Σ|P|² = `power` (the mean counts per diffraction pattern).
///
/// Returns [M, M] complex, row-major [y][x].
/// Errors: no convergence semi-angle known (`experiment.convergence_semiangle_mrad`), or an
/// aperture that covers no detector pixel.
pub fn form_probe(exp: &Experiment, power: f64) -> Result<Vec<C32>> {
    form_probe_stopped(exp, power, 0.0)
}

/// [`form_probe`] with a central stop, as a Fresnel zone plate's probe: A = 1 for
/// `stop`·α < θ ≤ α. `stop` is the blocked fraction of the pupil radius, in [0, 1); 0 gives
/// [`form_probe`]'s probe. Returns [M, M] complex, row-major [y][x]; errors as
/// [`form_probe`] (an annulus that covers no detector pixel names the semi-angle too).
pub fn form_probe_stopped(exp: &Experiment, power: f64, stop: f64) -> Result<Vec<C32>> {
    let alpha = exp.convergence_semiangle_rad.ok_or_else(|| {
        Error::new(
            "experiment.convergence_semiangle_mrad",
            "missing: needed to form the probe (or give data.probe)",
        )
    })?;
    let p = from_pupil(exp, power, |_, _, theta| {
        if theta <= alpha && (stop <= 0.0 || theta > stop * alpha) {
            1.0
        } else {
            0.0
        }
    });
    p.ok_or_else(|| {
        Error::new(
            "experiment.convergence_semiangle_mrad",
            "aperture covers no detector pixel",
        )
    })
}

/// Form the probe from the mean diffraction pattern Ī when no aperture is known (e.g. X-ray
/// CXI data): P(k) = √Ī(k) exp(−iχ(k)) with the defocus and C30 of `exp` in χ, then as in
/// [`form_probe`] (inverse FFT, centred, Σ|P|² = `power`).
///
/// `mean`: Ī as [M, M] in the kernel layout [kx][ky], zero frequency at [0, 0].
/// Returns [M, M] complex, row-major [y][x]. Errors: an all-zero mean pattern.
pub fn probe_from_mean_pattern(exp: &Experiment, mean: &[f64], power: f64) -> Result<Vec<C32>> {
    let m = exp.detector_px;
    from_pupil(exp, power, |iy, ix, _| mean[ix * m + iy].max(0.0).sqrt()).ok_or_else(|| {
        Error::new(
            "data",
            "mean diffraction pattern is zero: cannot form a probe",
        )
    })
}

/// P(k) = A(k) exp(−iχ(k)) on the detector grid → centred real-space probe of power `power`;
/// `amp(iy, ix, θ)` gives A at corner-centred indices and angle θ. `None` when A is 0 everywhere.
fn from_pupil(
    exp: &Experiment,
    power: f64,
    amp: impl Fn(usize, usize, f64) -> f64,
) -> Option<Vec<C32>> {
    let m = exp.detector_px;
    let mut pk = vec![C32::default(); m * m];
    let mut lit = 0usize;
    for iy in 0..m {
        for ix in 0..m {
            // corner-centred frequency index → angle θ = λ|k| = |index| · Δθ
            let ty = fftfreq(iy, m) * m as f64 * exp.dtheta_rad;
            let tx = fftfreq(ix, m) * m as f64 * exp.dtheta_rad;
            let theta = (ty * ty + tx * tx).sqrt();
            let a = amp(iy, ix, theta);
            if a > 0.0 {
                let c = chi(theta, exp.wavelength_m, exp.defocus_m, exp.c30_m);
                pk[iy * m + ix] = C32::from_polar(a as f32, -c as f32);
                lit += 1;
            }
        }
    }
    if lit == 0 {
        return None;
    }
    let fft = Fft2::<f32>::new(m);
    let mut s = fft.scratch();
    fft.inverse(&mut pk, &mut s);
    // centre it: real-space fftshift (probe at [M/2, M/2])
    let mut p = super::fft::ifftshift(&pk, m, true);
    normalise(&mut p, power);
    Some(p)
}

/// Scale `p` so that Σ|p|² = power.
pub fn normalise(p: &mut [C32], power: f64) {
    let e: f64 = p.iter().map(|z| z.norm_sqr() as f64).sum();
    if e > 0.0 {
        let s = (power / e).sqrt() as f32;
        p.iter_mut().for_each(|z| *z *= s);
    }
}

/// Build K incoherent probe modes from one probe [M, M]: mode 0 is the probe, mode k ≥ 1
/// is the probe times a low-order Hermite-like pattern (y, x, xy, y²−x², …) across the
/// probe's extent, orthogonalised against the earlier modes. The total power Σ_k Σ|P_k|²
/// equals that of `p`, split 1 − 0.05(K−1) : 0.05 : 0.05 … (mode 0 dominant).
///
/// Returns [K, M, M].
pub fn initial_modes(p: &[C32], m: usize, k: usize) -> Vec<C32> {
    let power: f64 = p.iter().map(|z| z.norm_sqr() as f64).sum();
    let mut modes: Vec<Vec<C32>> = vec![p.to_vec()];
    // centroid and width of |p|²
    let (mut cy, mut cx, mut w) = (0.0, 0.0, 0.0);
    for y in 0..m {
        for x in 0..m {
            let i = p[y * m + x].norm_sqr() as f64;
            cy += i * y as f64;
            cx += i * x as f64;
            w += i;
        }
    }
    cy /= w.max(1e-300);
    cx /= w.max(1e-300);
    let mut r2 = 0.0;
    for y in 0..m {
        for x in 0..m {
            r2 += p[y * m + x].norm_sqr() as f64
                * ((y as f64 - cy).powi(2) + (x as f64 - cx).powi(2));
        }
    }
    let sig = (r2 / w.max(1e-300)).sqrt().max(1.0);
    let patterns: [fn(f64, f64) -> f64; 6] = [
        |y, _| y,
        |_, x| x,
        |y, x| y * x,
        |y, x| y * y - x * x,
        |y, x| y * y + x * x - 1.0,
        |y, x| y * y * x,
    ];
    for j in 1..k {
        let f = patterns[(j - 1) % patterns.len()];
        let order = 1 + (j - 1) / patterns.len();
        let mut q: Vec<C32> = (0..m * m)
            .map(|i| {
                let (y, x) = (((i / m) as f64 - cy) / sig, ((i % m) as f64 - cx) / sig);
                p[i] * (f(y, x) * (1.0 + 0.5 * (order - 1) as f64 * y)) as f32
            })
            .collect();
        for prev in &modes {
            let d: C32 = prev.iter().zip(&q).map(|(a, b)| a.conj() * b).sum();
            let n: f32 = prev.iter().map(|a| a.norm_sqr()).sum();
            if n > 0.0 {
                let c = d / n;
                q.iter_mut().zip(prev).for_each(|(b, a)| *b -= c * a);
            }
        }
        modes.push(q);
    }
    let minor = 0.05;
    let major = (1.0 - minor * (k as f64 - 1.0)).max(0.5);
    let tot = major + minor * (k as f64 - 1.0);
    for (j, mode) in modes.iter_mut().enumerate() {
        normalise(mode, power * if j == 0 { major } else { minor } / tot);
    }
    modes.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pbtio3() -> Experiment {
        let l = super::super::electron_wavelength_m(300e3);
        Experiment {
            wavelength_m: l,
            pixel_size_m: [0.182_812_5e-10; 2],
            detector_px: 128,
            convergence_semiangle_rad: Some(22e-3),
            defocus_m: 150e-10,
            c30_m: 0.0,
            dtheta_rad: 0.841_345_68e-3,
        }
    }

    #[test]
    fn chi_sign_convention() {
        // underfocus (positive defocus) → C10 < 0 → χ < 0 off axis, matching the dataset's
        // χ = (π/λ) C10 θ² with C10 = −150 Å.
        let l = 1.968_748_9e-12;
        let c = chi(0.02, l, 150e-10, 0.0);
        let want = std::f64::consts::PI / l * (-150e-10) * 0.02 * 0.02;
        assert!((c - want).abs() < 1e-9 * want.abs());
    }

    #[test]
    fn probe_is_centred_normalised_and_band_limited() {
        let e = pbtio3();
        let p = form_probe(&e, 1000.0).unwrap();
        let m = 128;
        let pow: f64 = p.iter().map(|z| z.norm_sqr() as f64).sum();
        assert!((pow - 1000.0).abs() < 1e-3);
        // centroid of |P|² at [64, 64] (symmetric aperture and aberrations)
        let (mut cy, mut cx) = (0.0, 0.0);
        for (i, z) in p.iter().enumerate() {
            cy += z.norm_sqr() as f64 * (i / m) as f64;
            cx += z.norm_sqr() as f64 * (i % m) as f64;
        }
        assert!(
            (cy / pow - 64.0).abs() < 0.05 && (cx / pow - 64.0).abs() < 0.05,
            "{cy} {cx}"
        );
        // Fourier support: nothing beyond α (22 mrad ≈ 26.1 px)
        let f = Fft2::<f32>::new(m);
        let mut q = super::super::fft::ifftshift(&p, m, false);
        f.forward(&mut q, &mut f.scratch());
        for iy in 0..m {
            for ix in 0..m {
                let r = (fftfreq(iy, m).powi(2) + fftfreq(ix, m).powi(2)).sqrt() * m as f64;
                if r > 27.0 {
                    assert!(q[iy * m + ix].norm() < 1e-3, "leak at {iy},{ix}");
                }
            }
        }
    }

    #[test]
    fn modes_keep_power_and_are_orthogonal() {
        let e = pbtio3();
        let p = form_probe(&e, 100.0).unwrap();
        let m = 128;
        let k = 3;
        let modes = initial_modes(&p, m, k);
        let pw: Vec<f64> = (0..k)
            .map(|j| {
                modes[j * m * m..(j + 1) * m * m]
                    .iter()
                    .map(|z| z.norm_sqr() as f64)
                    .sum()
            })
            .collect();
        assert!((pw.iter().sum::<f64>() - 100.0).abs() < 1e-2);
        assert!((pw[0] / 100.0 - 0.9).abs() < 1e-3);
        for a in 0..k {
            for b in 0..a {
                let d: C32 = (0..m * m)
                    .map(|i| modes[a * m * m + i].conj() * modes[b * m * m + i])
                    .sum();
                assert!(
                    d.norm() < 1e-3 * (pw[a] * pw[b]).sqrt() as f32,
                    "modes {a},{b}: {d}"
                );
            }
        }
    }

    #[test]
    fn missing_semiangle_is_an_error() {
        let mut e = pbtio3();
        e.convergence_semiangle_rad = None;
        assert_eq!(
            form_probe(&e, 1.0).unwrap_err().what,
            "experiment.convergence_semiangle_mrad"
        );
    }
}

/// Powers of the orthogonal probe modes spanned by `modes` ([K, M·M] flattened, any
/// mixing): the eigenvalues of the K × K Gram matrix G_kl = Σ_r P_k*(r) P_l(r), sorted
/// largest first. They sum to Σ_k Σ|P_k|² and do not depend on how the reconstruction
/// mixed the modes (the mixed state is defined up to a unitary K × K transform).
pub fn mode_powers(modes: &[C32], k: usize) -> Vec<f64> {
    if k == 0 || modes.is_empty() {
        return Vec::new();
    }
    let n = modes.len() / k;
    // Hermitian G = B + iC as the real symmetric [[B, −C], [C, B]]: each eigenvalue twice
    let mut a = vec![vec![0.0f64; 2 * k]; 2 * k];
    for p in 0..k {
        for q in 0..k {
            let g: num_complex::Complex64 = modes[p * n..(p + 1) * n]
                .iter()
                .zip(&modes[q * n..(q + 1) * n])
                .map(|(x, y)| {
                    num_complex::Complex64::new(x.re as f64, -x.im as f64)
                        * num_complex::Complex64::new(y.re as f64, y.im as f64)
                })
                .sum();
            a[p][q] = g.re;
            a[p + k][q + k] = g.re;
            a[p][q + k] = -g.im;
            a[p + k][q] = g.im;
        }
    }
    let mut ev = jacobi_eigenvalues(a);
    ev.sort_by(|x, y| y.total_cmp(x));
    ev.iter().step_by(2).copied().collect()
}

/// Eigenvalues of a real symmetric matrix by cyclic Jacobi rotations (small matrices).
fn jacobi_eigenvalues(mut a: Vec<Vec<f64>>) -> Vec<f64> {
    let n = a.len();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        let diag: f64 = (0..n).map(|i| a[i][i] * a[i][i]).sum();
        if off <= 1e-30 * diag.max(1e-300) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..n {
                    let (arp, arq) = (a[r][p], a[r][q]);
                    a[r][p] = c * arp - s * arq;
                    a[r][q] = s * arp + c * arq;
                }
                for r in 0..n {
                    let (apr, aqr) = (a[p][r], a[q][r]);
                    a[p][r] = c * apr - s * aqr;
                    a[q][r] = s * apr + c * aqr;
                }
            }
        }
    }
    (0..n).map(|i| a[i][i]).collect()
}

#[cfg(test)]
mod mode_power_tests {
    use super::*;

    #[test]
    fn mode_powers_ignore_mixing() {
        // two orthogonal modes of powers 3 and 1, mixed by a unitary 2×2 with a phase
        let m = 4;
        let a: Vec<C32> = (0..m * m)
            .map(|i| C32::new(if i < 8 { 0.5 } else { 0.0 }, 0.0) * 3f32.sqrt() / 2f32.sqrt())
            .collect();
        let b: Vec<C32> = (0..m * m)
            .map(|i| C32::new(0.0, if i >= 8 { 0.5 } else { 0.0 }) / 2f32.sqrt())
            .collect();
        let (c, s) = (0.6f32, 0.8f32);
        let ph = C32::from_polar(1.0, 0.7);
        let mut mixed: Vec<C32> = a.iter().zip(&b).map(|(x, y)| x * c + y * s * ph).collect();
        mixed.extend(a.iter().zip(&b).map(|(x, y)| -x * s * ph.conj() + y * c));
        let p = mode_powers(&mixed, 2);
        assert!(
            (p[0] - 3.0).abs() < 1e-5 && (p[1] - 1.0).abs() < 1e-5,
            "{p:?}"
        );
    }
}
