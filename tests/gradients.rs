//! Finite-difference checks of the object and probe gradients (f64), for both noise models
//! and two probe modes, and adjoint identities of the shift operator. docs/algorithm.md §3–4.

use num_complex::Complex64 as C;
use ptytile::backend::cpu::{gradients, gradients_and_positions, model_intensities};
use ptytile::backend::kernel::{probe_spectrum, Gradients, Kernel};
use ptytile::config::NoiseModel;
use ptytile::physics::fft::Fft2;
use ptytile::physics::model::{shift_ramps, Field, PositionGeom};
use ptytile::physics::multislice;

const M: usize = 16;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Case {
    k: Kernel<f64>,
    obj: Field<C>,
    probe: Vec<C>,
    pos: Vec<PositionGeom<f64>>,
    meas: Vec<f32>,
}

fn case(noise: NoiseModel, modes: usize) -> Case {
    case_with(noise, modes, false, M)
}

/// `raster`: rows of 3 positions share their sub-pixel y-shift (as in a raster scan), which
/// takes the kernel's shared-run path for the probe-shift and probe-gradient transforms.
/// `m`: the detector side (window M).
fn case_with(noise: NoiseModel, modes: usize, raster: bool, m: usize) -> Case {
    let mut r = Lcg(7);
    let shape = [30, 34];
    let obj = Field {
        origin: [-2, 3],
        shape,
        data: (0..shape[0] * shape[1])
            .map(|_| C::from_polar(0.8 + 0.4 * r.next(), 2.0 * r.next() - 1.0))
            .collect(),
    };
    let probe: Vec<C> = (0..modes * m * m)
        .map(|i| {
            let (y, x) = (((i / m) % m) as f64 - 7.7, (i % m) as f64 - 8.2);
            let g = (-(y * y + x * x) / 18.0).exp() * (1.0 + 3.0 * (i / (m * m)) as f64);
            C::from_polar(g * (1.0 + 0.3 * r.next()), 0.5 * r.next())
        })
        .collect();
    // 9 positions with sub-pixel centres; windows inside the field
    let pos: Vec<PositionGeom<f64>> = (0..9)
        .map(|j| {
            let dy = if raster { 0.27 } else { r.next() };
            let h = (m / 2) as f64;
            let c = [
                obj.origin[0] as f64 + h + 3.3 * (j / 3) as f64 + dy,
                obj.origin[1] as f64 + h + 4.1 * (j % 3) as f64 + r.next(),
            ];
            PositionGeom::new(j, c, m)
        })
        .collect();
    let k = Kernel {
        fft: Fft2::new(m),
        modes,
        noise,
        eps: 1e-9,
        weights: None,
        propagator: Vec::new(),
    };
    // "measurements": the model of a perturbed object, scaled, plus deterministic noise
    let mut truth = obj.clone();
    truth
        .data
        .iter_mut()
        .for_each(|z| *z *= C::from_polar(1.0 + 0.1 * r.next(), 0.3 * r.next()));
    let ideal = model_intensities(&k, &truth, &probe_spectrum(&k.fft, &probe), &pos);
    let meas = ideal
        .iter()
        .map(|v| ((v * 1.3) + 0.2 * r.next()).round() as f32)
        .collect();
    Case {
        k,
        obj,
        probe,
        pos,
        meas,
    }
}

fn eval(c: &Case, obj: &Field<C>, probe: &[C]) -> Gradients<f64> {
    gradients(
        &c.k,
        obj,
        &probe_spectrum(&c.k.fft, probe),
        &c.pos,
        &c.meas,
        true,
    )
}

/// Central difference of the loss along `dir` at one complex entry: returns (∂L/∂Re, ∂L/∂Im),
/// which must equal 2·(Re g, Im g) for g = ∂L/∂z*.
fn fd(c: &Case, perturb: &dyn Fn(C) -> (Field<C>, Vec<C>)) -> (f64, f64) {
    let h = 1e-6;
    let l = |d: C| {
        let (o, p) = perturb(d);
        eval(c, &o, &p).loss
    };
    (
        (l(C::new(h, 0.0)) - l(C::new(-h, 0.0))) / (2.0 * h),
        (l(C::new(0.0, h)) - l(C::new(0.0, -h))) / (2.0 * h),
    )
}

fn check(noise: NoiseModel, modes: usize) {
    check_case(case(noise, modes), noise, modes);
}

fn check_case(c: Case, noise: NoiseModel, modes: usize) {
    let g = eval(&c, &c.obj, &c.probe);
    assert!(g.loss > 0.0);
    // object: pixels in the middle, near a window edge, and one no window touches
    let mut worst: f64 = 0.0;
    let planes = c.obj.planes();
    for (s, &(y, x)) in (0..planes).flat_map(|s| {
        [(12usize, 14usize), (3, 5), (20, 9), (28, 33)]
            .iter()
            .map(move |p| (s, p))
    }) {
        let i = s * c.obj.plane_len() + y * c.obj.shape[1] + x;
        let (dre, dim) = fd(&c, &|d| {
            let mut o = c.obj.clone();
            o.data[i] += d;
            (o, c.probe.clone())
        });
        let want = 2.0 * g.g_obj.data[i];
        let scale = want.norm().max(1e-3 * g.loss.abs() / 1e3);
        let err = ((dre - want.re).powi(2) + (dim - want.im).powi(2)).sqrt() / scale;
        worst = worst.max(err);
        assert!(err < 1e-5, "{noise:?} K={modes} S={planes} object slice {s} ({y},{x}): FD ({dre:.6e},{dim:.6e}) vs 2g {want:.6e}");
    }
    // probe: g_P = F⁻¹ ĝ_P (unitary), per mode
    let m = c.k.fft.size();
    let mut gp = vec![C::default(); modes * m * m];
    let mut s = c.k.fft.scratch();
    for (hat, out) in g.g_probe_hat.chunks(m * m).zip(gp.chunks_mut(m * m)) {
        c.k.fft.inverse_t(&mut hat.to_vec(), out, &mut s);
    }
    for mode in 0..modes {
        for &(y, x) in &[(8usize, 8usize), (2, 13), (11, 4)] {
            let i = mode * m * m + y * m + x;
            let (dre, dim) = fd(&c, &|d| {
                let mut p = c.probe.clone();
                p[i] += d;
                (c.obj.clone(), p)
            });
            let want = 2.0 * gp[i];
            let err =
                ((dre - want.re).powi(2) + (dim - want.im).powi(2)).sqrt() / want.norm().max(1e-9);
            assert!(err < 1e-5, "{noise:?} K={modes} S={planes} probe mode {mode} ({y},{x}): FD ({dre:.6e},{dim:.6e}) vs 2g {want:.6e}");
        }
    }
    eprintln!("{noise:?} K={modes} S={planes}: worst object relative error {worst:.2e}");
}

/// The multislice model (docs/algorithm.md §12): `slices` planes of the case's object with
/// phases spread over them and varied per slice, the Fresnel propagator over 2 Å at 300 kV
/// for 0.2 Å pixels (up to 0.8 rad of propagation phase at the window's Nyquist frequency).
fn multislice_case(noise: NoiseModel, modes: usize, slices: usize) -> Case {
    let c = case(noise, modes);
    let mut r = Lcg(11);
    let h = multislice::fresnel_propagator(M, [0.2e-10, 0.2e-10], 1.9687e-12, 2e-10, [0.0, 0.0]);
    let k = c.k.clone().with_propagator(&h);
    let mut obj = c.obj.clone();
    obj.data = Vec::new();
    for _ in 0..slices {
        obj.data.extend(
            c.obj
                .data
                .iter()
                .map(|z| C::from_polar(z.norm().powf(0.5), z.arg() * (0.3 + r.next()))),
        );
    }
    let mut truth = obj.clone();
    truth
        .data
        .iter_mut()
        .for_each(|z| *z *= C::from_polar(1.0 + 0.1 * r.next(), 0.3 * r.next()));
    let ideal = model_intensities(&k, &truth, &probe_spectrum(&k.fft, &c.probe), &c.pos);
    let meas = ideal
        .iter()
        .map(|v| ((v * 1.3) + 0.2 * r.next()).round() as f32)
        .collect();
    Case { k, obj, meas, ..c }
}

#[test]
fn gradient_fd_multislice_one_two_four_slices() {
    for (noise, modes, slices) in [
        (NoiseModel::Poisson, 1, 1),
        (NoiseModel::Poisson, 1, 2),
        (NoiseModel::Amplitude, 2, 2),
        (NoiseModel::Poisson, 2, 4),
        (NoiseModel::Amplitude, 1, 4),
    ] {
        check_case(multislice_case(noise, modes, slices), noise, modes);
    }
}

#[test]
fn multislice_of_one_slice_is_the_single_slice_model_bit_for_bit() {
    // S = 1 with a propagator set: the propagator is not used, the sums are today's
    let c = case(NoiseModel::Poisson, 2);
    let k = c.k.clone().with_propagator(&multislice::fresnel_propagator(
        M,
        [0.2e-10; 2],
        1.9687e-12,
        2e-10,
        [0.0, 0.0],
    ));
    let (a, b) = (
        eval(&c, &c.obj, &c.probe),
        gradients(
            &k,
            &c.obj,
            &probe_spectrum(&k.fft, &c.probe),
            &c.pos,
            &c.meas,
            true,
        ),
    );
    assert_eq!(a.loss.to_bits(), b.loss.to_bits());
    assert_eq!(a.g_obj.data, b.g_obj.data);
    assert_eq!(a.g_probe_hat, b.g_probe_hat);
}

#[test]
fn multislice_with_vacuum_slices_equals_one_slice_propagated() {
    // slices 1.. = 1 (vacuum): the exit wave is the single-slice one propagated over
    // (S − 1) Δz, so the intensities equal those of the single-slice model whose probe is
    // propagated by the same distance — H is unitary and commutes with nothing else here
    let c = case(NoiseModel::Poisson, 1);
    let dz = 2e-10;
    let k = c.k.clone().with_propagator(&multislice::fresnel_propagator(
        M,
        [0.2e-10; 2],
        1.9687e-12,
        dz,
        [0.0, 0.0],
    ));
    let mut obj = c.obj.clone();
    obj.data
        .extend(std::iter::repeat_n(C::new(1.0, 0.0), 2 * c.obj.data.len()));
    let ms = model_intensities(&k, &obj, &probe_spectrum(&k.fft, &c.probe), &c.pos);
    let single = model_intensities(&c.k, &c.obj, &probe_spectrum(&c.k.fft, &c.probe), &c.pos);
    // free-space propagation after the last slice changes the phase of the far field only
    let worst = ms
        .iter()
        .zip(&single)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f64, f64::max);
    let scale = single.iter().fold(0.0f64, |a, b| a.max(*b));
    assert!(worst < 1e-9 * scale, "{worst} vs {scale}");
}

#[test]
fn gradient_fd_amplitude_one_mode() {
    check(NoiseModel::Amplitude, 1);
}
#[test]
fn gradient_fd_amplitude_two_modes() {
    check(NoiseModel::Amplitude, 2);
}
#[test]
fn gradient_fd_poisson_one_mode() {
    check(NoiseModel::Poisson, 1);
}
#[test]
fn gradient_fd_poisson_two_modes() {
    check(NoiseModel::Poisson, 2);
}

#[test]
fn gradient_fd_poisson_two_modes_raster() {
    check_case(
        case_with(NoiseModel::Poisson, 2, true, M),
        NoiseModel::Poisson,
        2,
    );
}
#[test]
fn gradient_fd_amplitude_one_mode_raster() {
    check_case(
        case_with(NoiseModel::Amplitude, 1, true, M),
        NoiseModel::Amplitude,
        1,
    );
}

/// Issue 18: detector sides that are not multiples of 4 (M ≡ 2 mod 4 panicked in the
/// residuals: M² not a multiple of 8) and odd sides: loss and gradients still match finite
/// differences, on the per-position and the shared-run (raster) paths.
#[test]
fn gradient_fd_any_detector_side() {
    for m in [17, 18, 19, 22] {
        for noise in [NoiseModel::Poisson, NoiseModel::Amplitude] {
            check_case(case_with(noise, 1, false, m), noise, 1);
            check_case(case_with(noise, 2, true, m), noise, 2);
        }
    }
}

/// Positions sharing a sub-pixel y-shift take the shared-run path (y-half of the probe
/// transforms once per run); summing each position alone takes the per-position path. The
/// two must agree to f64 rounding.
#[test]
fn shared_runs_equal_per_position_sums() {
    for modes in [1, 2] {
        let c = case_with(NoiseModel::Poisson, modes, true, M);
        assert!(c.pos[0].ramp_y == c.pos[1].ramp_y && c.pos[0].ramp_y != c.pos[3].ramp_y);
        let ph = probe_spectrum(&c.k.fft, &c.probe);
        let all = gradients(&c.k, &c.obj, &ph, &c.pos, &c.meas, true);
        let mm = M * M;
        let mut one = Gradients::<f64>::zeros(c.obj.origin, c.obj.shape, 1, Some((modes, mm)));
        for j in 0..c.pos.len() {
            let g = gradients(
                &c.k,
                &c.obj,
                &ph,
                &c.pos[j..j + 1],
                &c.meas[j * mm..(j + 1) * mm],
                true,
            );
            one.g_obj
                .data
                .iter_mut()
                .zip(&g.g_obj.data)
                .for_each(|(a, b)| *a += *b);
            one.g_probe_hat
                .iter_mut()
                .zip(&g.g_probe_hat)
                .for_each(|(a, b)| *a += *b);
            one.d_probe
                .iter_mut()
                .zip(&g.d_probe)
                .for_each(|(a, b)| *a += *b);
            one.loss += g.loss;
        }
        let rel = |a: &[C], b: &[C]| {
            let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).norm_sqr()).sum();
            let n: f64 = b.iter().map(|y| y.norm_sqr()).sum();
            (d / n).sqrt()
        };
        let (eo, ep) = (
            rel(&all.g_obj.data, &one.g_obj.data),
            rel(&all.g_probe_hat, &one.g_probe_hat),
        );
        assert!(
            eo < 1e-13 && ep < 1e-13,
            "K={modes}: object {eo:e}, probe {ep:e}"
        );
        assert!(((all.loss - one.loss) / one.loss).abs() < 1e-13);
    }
}

/// The object preconditioner is Σ_jk |P_jk|² and the unlit pixel gets no gradient.
#[test]
fn preconditioner_is_illumination() {
    let c = case(NoiseModel::Poisson, 2);
    let g = eval(&c, &c.obj, &c.probe);
    let unlit = 28 * c.obj.shape[1] + 33;
    assert_eq!(g.g_obj.data[unlit], C::default());
    assert_eq!(g.d_obj.data[unlit], 0.0);
    // total illumination = N Σ_k Σ|P_k|² (shifts are unitary)
    let p2: f64 = c.probe.iter().map(|z| z.norm_sqr()).sum();
    let d: f64 = g.d_obj.data.iter().sum();
    assert!(
        (d - c.pos.len() as f64 * p2).abs() < 1e-9 * d,
        "{d} vs {}",
        c.pos.len() as f64 * p2
    );
}

/// S_f = F⁻¹ diag(e^{−2πi q·f}) F: ⟨S a, b⟩ = ⟨a, S^H b⟩ with S^H the shift by −f, and S is
/// unitary (‖S a‖ = ‖a‖).
#[test]
fn shift_operator_adjoint() {
    let mut r = Lcg(3);
    let f = Fft2::<f64>::new(M);
    let a: Vec<C> = (0..M * M)
        .map(|_| C::new(r.next() - 0.5, r.next() - 0.5))
        .collect();
    let b: Vec<C> = (0..M * M)
        .map(|_| C::new(r.next() - 0.5, r.next() - 0.5))
        .collect();
    let shift = |v: &[C], s: [f64; 2]| -> Vec<C> {
        let (ey, ex) = shift_ramps::<f64>(s, M);
        let mut w = v.to_vec();
        let mut t = vec![C::default(); M * M];
        let mut sc = f.scratch();
        f.forward_t(&mut w, &mut t, &mut sc);
        for kx in 0..M {
            for ky in 0..M {
                t[kx * M + ky] *= ey[ky] * ex[kx];
            }
        }
        let mut out = vec![C::default(); M * M];
        f.inverse_t(&mut t, &mut out, &mut sc);
        out
    };
    let s = [0.37, -0.81];
    let sa = shift(&a, s);
    let shb = shift(&b, [-s[0], -s[1]]);
    let lhs: C = sa.iter().zip(&b).map(|(x, y)| x.conj() * y).sum();
    let rhs: C = a.iter().zip(&shb).map(|(x, y)| x.conj() * y).sum();
    assert!((lhs - rhs).norm() < 1e-12, "{lhs} vs {rhs}");
    let n0: f64 = a.iter().map(|z| z.norm_sqr()).sum();
    let n1: f64 = sa.iter().map(|z| z.norm_sqr()).sum();
    assert!((n0 - n1).abs() < 1e-12 * n0);
    // composing +f and −f is the identity
    let back = shift(&sa, [-s[0], -s[1]]);
    assert!(a.iter().zip(&back).all(|(x, y)| (x - y).norm() < 1e-12));
}

/// The exit-wave map A: O ↦ (P_j · O_j)_j and the object gradient's P*-weighted placement
/// are adjoint: ⟨A O, ψ⟩ = ⟨O, A^H ψ⟩ (checked through the amplitude-model gradient at
/// Î = 0, where ∂L/∂Ψ* = Ψ, so g_O = A^H A O and ⟨O, g_O⟩ = ‖A O‖² = L).
#[test]
fn exit_wave_operator_adjoint() {
    let mut c = case(NoiseModel::Amplitude, 2);
    c.meas.iter_mut().for_each(|v| *v = 0.0);
    // no intensity floor: w = 1 exactly where Î = 0 (with ε > 0 it is 1 − √ε/√(I + ε))
    c.k.eps = 0.0;
    let g = eval(&c, &c.obj, &c.probe);
    let inner: C = c
        .obj
        .data
        .iter()
        .zip(&g.g_obj.data)
        .map(|(o, g)| o.conj() * g)
        .sum();
    assert!(
        (inner.re - g.loss).abs() < 1e-10 * g.loss,
        "{inner} vs {}",
        g.loss
    );
    assert!(inner.im.abs() < 1e-10 * g.loss);
}

/// Position correction (docs/algorithm.md §14): the derivative of the loss with respect to
/// each probe centre, ∂L/∂c_j (y, x), against a central difference of the loss with that
/// centre moved by ±h (the window and the sub-pixel ramps rebuilt, as a corrected position
/// is); both noise models, one and two modes, raster runs and lone positions, multislice.
/// The curvature must be positive and finite, and asking for the position terms must leave
/// the other sums bit for bit as they are.
#[test]
fn position_gradient_fd() {
    let cases = [
        ("poisson K=1", case_with(NoiseModel::Poisson, 1, false, M)),
        (
            "amplitude K=2",
            case_with(NoiseModel::Amplitude, 2, false, M),
        ),
        (
            "poisson K=2 raster",
            case_with(NoiseModel::Poisson, 2, true, M),
        ),
        (
            "amplitude K=1 M=18",
            case_with(NoiseModel::Amplitude, 1, false, 18),
        ),
        (
            "poisson K=1 S=3",
            multislice_case(NoiseModel::Poisson, 1, 3),
        ),
    ];
    for (name, c) in cases {
        let m = c.k.fft.size();
        let ph = probe_spectrum(&c.k.fft, &c.probe);
        let g = gradients_and_positions(&c.k, &c.obj, &ph, &c.pos, &c.meas, true);
        let plain = gradients(&c.k, &c.obj, &ph, &c.pos, &c.meas, true);
        assert_eq!(g.loss.to_bits(), plain.loss.to_bits(), "{name}");
        assert_eq!(g.g_obj.data, plain.g_obj.data, "{name}");
        assert_eq!(g.g_probe_hat, plain.g_probe_hat, "{name}");
        assert!(plain.g_pos.is_empty());
        assert_eq!(g.g_pos.len(), c.pos.len(), "{name}");
        let h = 1e-5;
        let mut worst: f64 = 0.0;
        for (j, pg) in g.g_pos.iter().enumerate() {
            assert_eq!(
                pg.index, c.pos[j].index,
                "{name}: order of the position terms"
            );
            for axis in 0..2 {
                let l = |d: f64| {
                    let mut pos = c.pos.clone();
                    let mut ctr = pos[j].centre;
                    ctr[axis] += d;
                    pos[j] = PositionGeom::new(pos[j].index, ctr, m);
                    gradients(&c.k, &c.obj, &ph, &pos, &c.meas, false).loss
                };
                let fd = (l(h) - l(-h)) / (2.0 * h);
                let want = pg.grad[axis];
                let err = (fd - want).abs() / want.abs().max(1e-6 * g.loss.abs());
                worst = worst.max(err);
                assert!(
                    err < 1e-6,
                    "{name}: position {j} axis {axis}: FD {fd:.6e} vs {want:.6e}"
                );
                assert!(
                    pg.curv[axis].is_finite() && pg.curv[axis] > 0.0,
                    "{name}: curvature {:?}",
                    pg.curv
                );
            }
        }
        eprintln!("{name}: worst position-gradient relative error {worst:.2e}");
    }
}
