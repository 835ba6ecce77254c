//! Compute backends (docs/gpu.md): the CPU implementation of `backend::Compute` against
//! `cpu::gradients`; the GPU kernels compiled by NVRTC through the backend's own code path;
//! CUDA and HIP against the CPU (gradients, model intensities, 10 descent iterations) where
//! a GPU is present; and the one-line errors where none is. Checks that need a library or a
//! device this machine lacks print "skipped: <reason>" and pass.

use num_complex::Complex32 as C;
use ptytile::backend::cpu::{self, model_intensities};
use ptytile::backend::kernel::{probe_spectrum, Gradients, Kernel};
use ptytile::backend::{self, BackendKind, Compute, Selection};
use ptytile::config::NoiseModel;
use ptytile::physics::fft::Fft2;
use ptytile::physics::model::{Field, PositionGeom};
use std::sync::Arc;

mod common;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / (1u64 << 24) as f32
    }
}

struct Case {
    k: Kernel<f32>,
    obj: Field<C>,
    probe_hat: Vec<C>,
    pos: Arc<[PositionGeom<f32>]>,
    meas: Arc<[f32]>,
}

/// A random object, `modes` probe modes, `rows` × 6 positions on a jittered raster (rows share
/// their sub-pixel y-shift, as in a raster scan) and Poisson-like counts from a perturbed object.
fn case(m: usize, modes: usize, rows: usize, noise: NoiseModel, masked: bool, seed: u64) -> Case {
    let mut r = Lcg(seed);
    let shape = [m + 3 * rows + 4, m + 3 * 6 + 4];
    let origin = [5, -7];
    let obj = Field {
        origin,
        shape,
        data: (0..shape[0] * shape[1])
            .map(|_| C::from_polar(0.7 + 0.5 * r.next(), 2.0 * r.next() - 1.0))
            .collect(),
    };
    let c = (m as f32 - 1.0) / 2.0;
    let probe: Vec<C> = (0..modes * m * m)
        .map(|i| {
            let (y, x) = (((i / m) % m) as f32 - c, (i % m) as f32 - c);
            let g = (-(y * y + x * x) / (m * m) as f32 * 12.0).exp() / (1.0 + (i / (m * m)) as f32);
            C::from_polar(g * (1.0 + 0.2 * r.next()), 0.4 * r.next())
        })
        .collect();
    let k = Kernel {
        fft: Fft2::new(m),
        modes,
        noise,
        eps: 1e-3,
        weights: masked.then(|| {
            (0..m * m)
                .map(|i| if i % 37 == 5 { 0.0 } else { 1.0 })
                .collect()
        }),
        propagator: Vec::new(),
    };
    let probe_hat = probe_spectrum(&k.fft, &probe);
    let pos: Vec<PositionGeom<f32>> = (0..rows * 6)
        .map(|j| {
            let dy = 0.1 + 0.8 * ((j / 6) as f64 / rows as f64);
            let cy = origin[0] as f64 + (m / 2) as f64 + 1.0 + 3.0 * (j / 6) as f64 + dy;
            let cx =
                origin[1] as f64 + (m / 2) as f64 + 1.0 + 3.0 * (j % 6) as f64 + r.next() as f64;
            PositionGeom::new(j, [cy, cx], m)
        })
        .collect();
    let mut truth = obj.clone();
    truth
        .data
        .iter_mut()
        .for_each(|z| *z *= C::from_polar(1.0 + 0.1 * r.next(), 0.3 * r.next()));
    let ideal = model_intensities(&k, &truth, &probe_hat, &pos);
    let meas: Vec<f32> = ideal
        .iter()
        .map(|v| (v * 40.0 + r.next()).floor())
        .collect();
    Case {
        k,
        obj,
        probe_hat,
        pos: pos.into(),
        meas: meas.into(),
    }
}

/// ‖a − b‖ / ‖b‖ over complex or real f64 slices given as (re, im) pairs.
fn rel(a: impl Iterator<Item = (f64, f64)>, b: impl Iterator<Item = (f64, f64)>) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for ((ar, ai), (br, bi)) in a.zip(b) {
        num += (ar - br).powi(2) + (ai - bi).powi(2);
        den += br * br + bi * bi;
    }
    (num / den.max(1e-300)).sqrt()
}

fn c64(v: &[num_complex::Complex64]) -> impl Iterator<Item = (f64, f64)> + '_ {
    v.iter().map(|z| (z.re, z.im))
}
fn r64(v: &[f64]) -> impl Iterator<Item = (f64, f64)> + '_ {
    v.iter().map(|x| (*x, 0.0))
}

/// Largest relative difference over the five sums of two gradient sets.
fn grad_diff<T: ptytile::physics::fft::Real>(a: &Gradients<T>, b: &Gradients<T>) -> [f64; 5] {
    assert_eq!(
        (a.g_obj.origin, a.g_obj.shape),
        (b.g_obj.origin, b.g_obj.shape)
    );
    assert_eq!(
        (a.g_probe_hat.len(), a.d_probe.len()),
        (b.g_probe_hat.len(), b.d_probe.len())
    );
    [
        rel(c64(&a.g_obj.data), c64(&b.g_obj.data)),
        rel(r64(&a.d_obj.data), r64(&b.d_obj.data)),
        if b.g_probe_hat.is_empty() {
            0.0
        } else {
            rel(c64(&a.g_probe_hat), c64(&b.g_probe_hat))
        },
        if b.d_probe.is_empty() {
            0.0
        } else {
            rel(r64(&a.d_probe), r64(&b.d_probe))
        },
        ((a.loss - b.loss) / b.loss.abs().max(1e-300)).abs(),
    ]
}

fn gather(c: &Case, ix: &[usize]) -> (Vec<PositionGeom<f32>>, Vec<f32>) {
    let mm = c.k.fft.size().pow(2);
    (
        ix.iter().map(|&j| c.pos[j].clone()).collect(),
        ix.iter()
            .flat_map(|&j| c.meas[j * mm..(j + 1) * mm].iter().copied())
            .collect(),
    )
}

#[test]
fn host_compute_equals_cpu_gradients_on_ranges_and_index_subsets() {
    let c = case(16, 2, 3, NoiseModel::Poisson, true, 3);
    let host = backend::open(BackendKind::Cpu, &c.k, c.pos.clone(), c.meas.clone(), None).unwrap();
    assert_eq!(host.name(), "cpu");
    let n = c.pos.len();
    let mm = 16 * 16;
    for want in [false, true] {
        // a range borrows: bit-identical to the kernel on the same slice
        let got = host
            .gradients(&c.obj, &c.probe_hat, Selection::Range(4..n - 2), want)
            .unwrap();
        let r = n - 2;
        let want_g = cpu::gradients(
            &c.k,
            &c.obj,
            &c.probe_hat,
            &c.pos[4..r],
            &c.meas[4 * mm..r * mm],
            want,
        );
        assert_eq!(got.g_obj.data, want_g.g_obj.data);
        assert_eq!(got.d_probe, want_g.d_probe);
        assert_eq!(got.loss.to_bits(), want_g.loss.to_bits());
        // indices gather, in the order given
        let ix = [7, 2, 11, 3];
        let got = host
            .gradients(&c.obj, &c.probe_hat, Selection::Indices(&ix), want)
            .unwrap();
        let (p, m) = gather(&c, &ix);
        let want_g = cpu::gradients(&c.k, &c.obj, &c.probe_hat, &p, &m, want);
        assert_eq!(got.g_obj.data, want_g.g_obj.data);
        assert_eq!(got.g_probe_hat, want_g.g_probe_hat);
        assert_eq!(got.loss.to_bits(), want_g.loss.to_bits());
    }
    let got = host
        .model_intensities(&c.obj, &c.probe_hat, Selection::Indices(&[5, 1]))
        .unwrap();
    let (p, _) = gather(&c, &[5, 1]);
    assert_eq!(got, model_intensities(&c.k, &c.obj, &c.probe_hat, &p));
    // errors, not panics
    let e = host
        .gradients(&c.obj, &c.probe_hat, Selection::Indices(&[0, n]), true)
        .unwrap_err();
    assert!(e.msg.contains("out of range"), "{e}");
    let small = Field {
        origin: c.obj.origin,
        shape: [10, 10],
        data: vec![C::default(); 100],
    };
    let e = host
        .gradients(&small, &c.probe_hat, Selection::Range(0..n), false)
        .unwrap_err();
    assert!(e.msg.contains("outside the object field"), "{e}");
    let e = backend::open(
        BackendKind::Cpu,
        &c.k,
        c.pos.clone(),
        c.meas[..mm].to_vec().into(),
        None,
    )
    .err()
    .unwrap();
    assert!(e.msg.contains("intensities"), "{e}");
}

/// Every kernel of kernels/ptycho.cu compiles with NVRTC for the architectures ptytile
/// targets (the oldest the NVRTC supports: 6.0 for CUDA 12, 7.5 for 13; Ampere; Hopper), through the same function the CUDA backend calls. Needs libnvrtc (CI installs
/// the nvidia-cuda-nvrtc-cu12 wheel, .ci/run); no GPU.
#[cfg(feature = "cuda")]
#[test]
fn kernels_compile_with_nvrtc() {
    use ptytile::backend::gpu::{cuda, KERNELS};
    if let Err(e) = cuda::nvrtc_present() {
        println!("skipped: {}", e.msg);
        return;
    }
    std::env::set_var("PTYTILE_KERNEL_CACHE", "");
    let version = cuda::nvrtc_version().unwrap();
    println!("{version}");
    // CUDA 13 dropped targets below compute capability 7.5
    let oldest = if version.starts_with("nvrtc 12.") {
        "compute_60"
    } else {
        "compute_75"
    };
    for (arch, wide) in [oldest, "compute_80", "compute_90"]
        .into_iter()
        .flat_map(|a| [(a, false), (a, true)])
    {
        let prec = if wide { "f64" } else { "f32" };
        let ptx = cuda::compile(arch, wide).unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&ptx);
        assert!(
            text.contains(&format!(".target sm_{}", &arch[8..])),
            "{arch}: {}",
            &text[..300.min(text.len())]
        );
        for k in KERNELS {
            assert!(
                text.contains(&format!(".entry {k}(")),
                "{arch} {prec}: kernel {k} missing from the PTX"
            );
        }
        // no atomics: every sum is formed in a fixed order (gather_sums, probe_grad, …),
        // so a run's sums are the same bits on every run
        assert!(
            !text.contains("atom.") && !text.contains("red.global"),
            "{arch} {prec}: an atomic instruction in the PTX"
        );
        // the f64 kernels' complex products (exit_wave: P O) are f64 products, the f32
        // kernels' f32 products
        let body = &text[text.find(".entry exit_wave(").unwrap()..];
        let body = &body[..body[1..].find(".entry ").map_or(body.len(), |e| e + 1)];
        let mul = if wide { ".f64" } else { ".f32" };
        assert!(
            body.contains(&format!("mul.rn{mul}"))
                || body.contains(&format!("fma.rn{mul}"))
                || body.contains(&format!("mul{mul}")),
            "{arch} {prec}: exit_wave has no {mul} product"
        );
        println!(
            "{arch} {prec}: {} bytes of PTX, {} kernels",
            ptx.len(),
            KERNELS.len()
        );
        // the backend loads a CUBIN for the device's real architecture: an ELF image
        let sm = arch.replace("compute_", "sm_");
        let cubin = cuda::compile(&sm, wide).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&cubin[..4], b"\x7fELF", "{sm}: not a CUBIN");
        println!("{sm} {prec}: {} bytes of CUBIN", cubin.len());
    }
}

/// The backend `kind` if it can run here, else print why not.
fn gpu_or_skip(kind: BackendKind) -> bool {
    match backend::available(kind) {
        Ok(()) => true,
        Err(e) => {
            println!("skipped: {e}");
            false
        }
    }
}

type Opener = dyn Fn(&Case) -> Box<dyn Compute<f32>>;

/// `open` of backend `kind` for the first local rank.
fn opener(kind: BackendKind) -> Box<Opener> {
    Box::new(move |c: &Case| {
        backend::open(kind, &c.k, c.pos.clone(), c.meas.clone(), Some(0))
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

/// GPU vs CPU: gradients (ranges and index subsets, with and without the probe gradient,
/// both noise models, 1 and 2 modes, detector mask) and model intensities within 1e-4.
fn gpu_matches_cpu(kind: BackendKind) {
    if gpu_or_skip(kind) {
        matches_cpu(&*opener(kind), &format!("{kind:?}"));
    }
}

fn matches_cpu(open: &Opener, label: &str) {
    matches_cpu_on(
        open,
        label,
        &[
            (32, 1, NoiseModel::Poisson, false, 1),
            (64, 2, NoiseModel::Amplitude, true, 1),
            (32, 3, NoiseModel::Poisson, true, 1),
        ],
    );
}

/// Multislice on a GPU (or its emulation) against the CPU, as [`matches_cpu`]: gradients
/// of every slice (each within 1e-4 on its own) and of the probe for S = 3 (Poisson, one
/// mode) and S = 2 (amplitude, two modes, detector mask), model intensities within 1e-5;
/// dm's pass and probe sums (single-slice operations) refuse a multislice object with one
/// line.
fn multislice_matches_cpu(open: &Opener, label: &str) {
    matches_cpu_on(
        open,
        label,
        &[
            (32, 1, NoiseModel::Poisson, false, 3),
            (32, 2, NoiseModel::Amplitude, true, 2),
        ],
    );
}

/// [`matches_cpu`] on cases (M, modes, noise model, detector mask, slices).
fn matches_cpu_on(open: &Opener, label: &str, cases: &[(usize, usize, NoiseModel, bool, usize)]) {
    for &(m, modes, noise, masked, planes) in cases {
        let c = multislice(case(m, modes, 4, noise, masked, 11), planes, 5);
        // small batches so that several batches and FFT pieces run
        std::env::set_var("PTYTILE_GPU_BATCH", "5");
        let gpu = open(&c);
        std::env::remove_var("PTYTILE_GPU_BATCH");
        let host =
            backend::open(BackendKind::Cpu, &c.k, c.pos.clone(), c.meas.clone(), None).unwrap();
        let n = c.pos.len();
        let ix: Vec<usize> = (0..n).rev().step_by(2).collect();
        for want in [false, true] {
            for sel in [
                Selection::Range(0..n),
                Selection::Range(3..n - 1),
                Selection::Indices(&ix),
            ] {
                let a = gpu
                    .gradients(&c.obj, &c.probe_hat, sel.clone(), want)
                    .unwrap_or_else(|e| panic!("{e}"));
                let b = host
                    .gradients(&c.obj, &c.probe_hat, sel.clone(), want)
                    .unwrap();
                let d = grad_diff(&a, &b);
                // each slice on its own: a slice's sums must not hide in another's
                assert_eq!(a.g_obj.planes(), planes);
                let pl = c.obj.plane_len();
                let per: Vec<f64> = (0..planes)
                    .map(|sl| {
                        let r = sl * pl..(sl + 1) * pl;
                        rel(c64(&a.g_obj.data[r.clone()]), c64(&b.g_obj.data[r]))
                    })
                    .collect();
                let per_s: Vec<String> = per.iter().map(|v| format!("{v:.1e}")).collect();
                println!("{label} S={planes} M={m} K={modes} {noise:?} masked={masked} probe={want} {sel:?}: rel diff g_O {:.1e} (per slice {}) D_O {:.1e} g_P {:.1e} D_P {:.1e} loss {:.1e}", d[0], per_s.join(", "), d[1], d[2], d[3], d[4]);
                assert!(d.iter().chain(&per).all(|v| *v < 1e-4), "{d:?} {per:?}");
            }
        }
        let a = gpu
            .model_intensities(&c.obj, &c.probe_hat, Selection::Indices(&ix))
            .unwrap();
        let b = host
            .model_intensities(&c.obj, &c.probe_hat, Selection::Indices(&ix))
            .unwrap();
        let d = rel(
            a.iter().map(|v| (*v as f64, 0.0)),
            b.iter().map(|v| (*v as f64, 0.0)),
        );
        println!("{label} S={planes} M={m} K={modes}: model intensities rel diff {d:.1e}");
        assert!(d < 1e-5, "model intensities differ by {d:.2e}");
        if planes > 1 {
            let step = ptytile::backend::kernel::DmStep {
                beta: 0.8,
                gamma: 0.9,
                error_reduction: false,
            };
            let all = || Selection::Range(0..n);
            for e in [
                gpu.difference_map(&c.obj, &c.probe_hat, all(), true, step)
                    .err(),
                gpu.probe_sums(&c.obj, all()).err(),
            ] {
                let e = e.expect("a single-slice operation accepted a multislice object");
                assert!(e.to_string().contains("single-slice"), "{e}");
                assert_eq!(e.to_string().lines().count(), 1);
            }
        }
    }
}

/// Position correction's terms (docs/algorithm.md §14) on a GPU (or its emulation) against
/// the CPU, for one slice (Poisson; two modes, amplitude, detector mask) and two slices:
/// each position's ∂L/∂c and curvature within 1e-4 relative (over the selection's vectors)
/// on a range and an index subset, with and without the probe sums, the positions in
/// selection order with their file indices, and the other sums the same bits as the
/// backend's own `gradients`. Then `set_positions` with moved centres: the terms and sums
/// are the same bits as those of a backend opened with the moved positions, and match the
/// CPU's; another order of positions is refused with one line.
fn positions_match_cpu(open: &Opener, label: &str) {
    for &(m, modes, noise, masked, planes) in &[
        (32, 1, NoiseModel::Poisson, false, 1),
        (32, 2, NoiseModel::Amplitude, true, 1),
        (32, 1, NoiseModel::Poisson, false, 2),
    ] {
        let mut c = multislice(case(m, modes, 4, noise, masked, 13), planes, 5);
        let open_small = |c: &Case| {
            // small batches so that several batches run
            std::env::set_var("PTYTILE_GPU_BATCH", "5");
            let g = open(c);
            std::env::remove_var("PTYTILE_GPU_BATCH");
            g
        };
        let mut gpu = open_small(&c);
        let mut host =
            backend::open(BackendKind::Cpu, &c.k, c.pos.clone(), c.meas.clone(), None).unwrap();
        let n = c.pos.len();
        let ix: Vec<usize> = (0..n).rev().step_by(3).collect();
        let sels = [Selection::Range(2..n), Selection::Indices(&ix)];
        let what = format!("{label} S={planes} K={modes} {noise:?}");
        let check = |gpu: &dyn Compute<f32>, host: &dyn Compute<f32>, c: &Case, when: &str| {
            for sel in &sels {
                for want in [false, true] {
                    let a = gpu
                        .gradients_and_positions(&c.obj, &c.probe_hat, sel.clone(), want)
                        .unwrap_or_else(|e| panic!("{e}"));
                    let b = host
                        .gradients_and_positions(&c.obj, &c.probe_hat, sel.clone(), want)
                        .unwrap();
                    let plain = gpu
                        .gradients(&c.obj, &c.probe_hat, sel.clone(), want)
                        .unwrap();
                    assert!(
                        a.g_obj.data == plain.g_obj.data
                            && a.d_obj.data == plain.d_obj.data
                            && a.g_probe_hat == plain.g_probe_hat
                            && a.d_probe == plain.d_probe
                            && a.loss.to_bits() == plain.loss.to_bits(),
                        "{what} {when}: the sums differ from gradients'"
                    );
                    let order: Vec<usize> = sel.to_vec().iter().map(|&j| c.pos[j].index).collect();
                    let got: Vec<usize> = a.g_pos.iter().map(|g| g.index).collect();
                    assert_eq!(got, order, "{what} {when}: positions out of order");
                    let pair = |v: &[ptytile::backend::kernel::PositionGradient], curv: bool| {
                        v.iter()
                            .map(|g| {
                                if curv {
                                    (g.curv[0], g.curv[1])
                                } else {
                                    (g.grad[0], g.grad[1])
                                }
                            })
                            .collect::<Vec<_>>()
                    };
                    let dg = rel(
                        pair(&a.g_pos, false).into_iter(),
                        pair(&b.g_pos, false).into_iter(),
                    );
                    let dc = rel(
                        pair(&a.g_pos, true).into_iter(),
                        pair(&b.g_pos, true).into_iter(),
                    );
                    let d = grad_diff(&a, &b);
                    println!("{what} {when} probe={want} {sel:?}: rel diff dL/dc {dg:.1e}, curvature {dc:.1e}, sums {d:?}", d = d.map(|v| format!("{v:.1e}")));
                    assert!(dg < 1e-4 && dc < 1e-4, "{what} {when}: {dg:.2e} {dc:.2e}");
                    assert!(d.iter().all(|v| *v < 1e-4), "{what} {when}: {d:?}");
                    // the terms are not all zero
                    assert!(b
                        .g_pos
                        .iter()
                        .any(|g| g.grad[0].abs() > 0.0 && g.curv[1] > 0.0));
                }
            }
        };
        check(&*gpu, &*host, &c, "as opened");
        // every centre moved by up to ±0.4 px (some windows move by a pixel)
        let moved: Vec<PositionGeom<f32>> = c
            .pos
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let d = [0.4 * ((j % 3) as f64 - 1.0), 0.37 - 0.23 * (j % 4) as f64];
                PositionGeom::new(p.index, [p.centre[0] + d[0], p.centre[1] + d[1]], m)
            })
            .collect();
        let moved: Arc<[PositionGeom<f32>]> = moved.into();
        assert!(moved
            .iter()
            .zip(c.pos.iter())
            .any(|(a, b)| a.window != b.window));
        gpu.set_positions(moved.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        host.set_positions(moved.clone()).unwrap();
        c.pos = moved;
        check(&*gpu, &*host, &c, "moved");
        let fresh = open_small(&c);
        for sel in &sels {
            let a = gpu
                .gradients_and_positions(&c.obj, &c.probe_hat, sel.clone(), true)
                .unwrap();
            let b = fresh
                .gradients_and_positions(&c.obj, &c.probe_hat, sel.clone(), true)
                .unwrap();
            assert!(
                a.g_pos == b.g_pos
                    && a.g_obj.data == b.g_obj.data
                    && a.g_probe_hat == b.g_probe_hat
                    && a.loss.to_bits() == b.loss.to_bits(),
                "{what}: set_positions differs from opening with the moved positions"
            );
        }
        let reversed: Vec<PositionGeom<f32>> = c.pos.iter().rev().cloned().collect();
        let e = gpu.set_positions(reversed.into()).unwrap_err().to_string();
        assert!(e.contains("order") && e.lines().count() == 1, "{e}");
    }
}

/// Opens a backend in f64 for a kernel, positions and intensities.
type Opener64 = dyn Fn(&Kernel<f64>, Arc<[PositionGeom<f64>]>, Arc<[f32]>) -> Box<dyn Compute<f64>>;

/// The f64 kernels (`PTY_F64`, f64 transforms; docs/gpu.md "Precision") on a GPU (or its
/// emulation) against the CPU backend in f64: the gradients (object sums, probe sums, loss)
/// and position correction's terms (∂L/∂c, curvature) of a single-slice case (Poisson, one
/// mode) and a two-slice case (amplitude, two modes, detector mask), on the whole range and
/// an index subset, in batches of 5. Asserted within 1e-10 relative; with f32 rounding out
/// of the way, any difference between the kernels' algorithm and the CPU's shows far above
/// that (measured in emulation, 2026-12-03: sums ≤ 3.3e-16, position terms ≤ 9.1e-15).
fn f64_matches_cpu(open: &Opener64, label: &str) {
    use num_complex::Complex64;
    let to64 = |v: &[C]| -> Vec<Complex64> {
        v.iter()
            .map(|z| Complex64::new(z.re as f64, z.im as f64))
            .collect()
    };
    for (m, modes, noise, masked, planes) in [
        (32, 1, NoiseModel::Poisson, false, 1),
        (32, 2, NoiseModel::Amplitude, true, 2),
    ] {
        let c = multislice(case(m, modes, 4, noise, masked, 11), planes, 5);
        let k = Kernel::<f64> {
            fft: Fft2::new(m),
            modes,
            noise,
            eps: c.k.eps as f64,
            weights: c.k.weights.clone(),
            propagator: to64(&c.k.propagator),
        };
        let pos: Arc<[PositionGeom<f64>]> = c
            .pos
            .iter()
            .map(|q| PositionGeom::new(q.index, q.centre, m))
            .collect();
        let obj = Field {
            origin: c.obj.origin,
            shape: c.obj.shape,
            data: to64(&c.obj.data),
        };
        let probe_hat = to64(&c.probe_hat);
        std::env::set_var("PTYTILE_GPU_BATCH", "5");
        let gpu = open(&k, pos.clone(), c.meas.clone());
        std::env::remove_var("PTYTILE_GPU_BATCH");
        let host = backend::open(BackendKind::Cpu, &k, pos.clone(), c.meas.clone(), None).unwrap();
        let n = pos.len();
        let ix: Vec<usize> = (0..n).rev().step_by(2).collect();
        for sel in [Selection::Range(0..n), Selection::Indices(&ix)] {
            let a = gpu
                .gradients_and_positions(&obj, &probe_hat, sel.clone(), true)
                .unwrap_or_else(|e| panic!("{e}"));
            let b = host
                .gradients_and_positions(&obj, &probe_hat, sel, true)
                .unwrap();
            let d = grad_diff(&a, &b);
            let terms = |g: &Gradients<f64>| -> Vec<f64> {
                g.g_pos
                    .iter()
                    .flat_map(|p| p.grad.into_iter().chain(p.curv))
                    .collect()
            };
            let dp = rel(r64(&terms(&a)), r64(&terms(&b)));
            let ds = d.map(|x| format!("{x:.1e}")).join(", ");
            println!(
                "{label} f64, M {m}, {modes} modes, {planes} slices: sums (g_O, d_O, g_P, d_P, loss) {ds}; position terms {dp:.1e}"
            );
            assert!(
                d.iter().all(|&x| x <= 1e-10) && dp <= 1e-10 && a.g_pos.len() == b.g_pos.len(),
                "{label} f64: sums {ds}, position terms {dp:.2e}"
            );
        }
    }
}

#[test]
fn emulated_f64_matches_cpu() {
    let Ok(_) = emu::open_f64().map_err(|e| println!("skipped: {e}")) else {
        return;
    };
    f64_matches_cpu(
        &|k, pos, meas| {
            Box::new(
                ptytile::backend::gpu::Gpu::new("emu f64", emu::open_f64().unwrap(), k, pos, meas)
                    .unwrap_or_else(|e| panic!("{e}")),
            )
        },
        "emulated",
    );
}

/// [`f64_matches_cpu`] on a GPU backend `kind` (skipped without one).
fn gpu_f64_matches_cpu(kind: BackendKind) {
    if !gpu_or_skip(kind) {
        return;
    }
    f64_matches_cpu(
        &move |k, pos, meas| {
            backend::open(kind, k, pos, meas, None).unwrap_or_else(|e| panic!("{e}"))
        },
        kind.name(),
    );
}

#[test]
fn cuda_f64_matches_cpu() {
    gpu_f64_matches_cpu(BackendKind::Cuda);
}

#[test]
fn hip_f64_matches_cpu() {
    gpu_f64_matches_cpu(BackendKind::Hip);
}

#[test]
fn emulated_positions_match_cpu() {
    if let Some(open) = emu_opener() {
        positions_match_cpu(&*open, "emulated");
    }
}

#[test]
fn cuda_positions_match_cpu() {
    if gpu_or_skip(BackendKind::Cuda) {
        positions_match_cpu(&*opener(BackendKind::Cuda), "Cuda");
    }
}

#[test]
fn hip_positions_match_cpu() {
    if gpu_or_skip(BackendKind::Hip) {
        positions_match_cpu(&*opener(BackendKind::Hip), "Hip");
    }
}

/// `c` as a multislice case (unchanged for one slice): `planes` slices (slice 0 the case's object, the others phase
/// perturbations of it) 4 Å apart, 0.1 Å pixels at 300 kV (the propagator's phase reaches
/// ~6 rad at the window's Nyquist frequency), a 2 mrad specimen tilt.
fn multislice(mut c: Case, planes: usize, seed: u64) -> Case {
    use ptytile::physics::multislice::fresnel_propagator;
    if planes == 1 {
        return c;
    }
    let mut r = Lcg(seed);
    let m = c.k.fft.size();
    let h = fresnel_propagator(m, [1e-11, 1e-11], 1.97e-12, 4e-10, [2e-3, -1e-3]);
    c.k = c.k.with_propagator(&h);
    let one = c.obj.data.clone();
    for _ in 1..planes {
        let next: Vec<C> = one
            .iter()
            .map(|z| z.norm() * C::from_polar(1.0, z.arg() * 0.5 + 0.4 * r.next()))
            .collect();
        c.obj.data.extend(next);
    }
    assert_eq!(c.obj.planes(), planes);
    c
}

#[test]
fn emulated_multislice_matches_cpu() {
    if let Some(open) = emu_opener() {
        multislice_matches_cpu(&*open, "emulated");
    }
}

#[test]
fn cuda_multislice_matches_cpu() {
    if gpu_or_skip(BackendKind::Cuda) {
        multislice_matches_cpu(&*opener(BackendKind::Cuda), "Cuda");
    }
}

#[test]
fn hip_multislice_matches_cpu() {
    if gpu_or_skip(BackendKind::Hip) {
        multislice_matches_cpu(&*opener(BackendKind::Hip), "Hip");
    }
}

/// The projection engines' operations through `Compute`, GPU (or its emulation) against
/// the CPU: three difference-map passes (the first from P O, the last error reduction) on a
/// range and on a sub-range with its own exit waves, dm's probe sums, and two ePIE/rPIE
/// sweeps in a shuffled order with the probe refined; sums, exit waves, object, probe
/// spectrum, illumination and loss within 1e-4 relative (f32 FFTs in a different order).
fn projection_ops_match_cpu(open: &Opener, label: &str) {
    use ptytile::backend::kernel::DmStep;
    use ptytile::backend::pie::PieStep;
    let f = |v: &[C]| -> Vec<(f64, f64)> { v.iter().map(|z| (z.re as f64, z.im as f64)).collect() };
    let relc = |a: &[C], b: &[C]| rel(f(a).into_iter(), f(b).into_iter());
    for (m, modes, noise, masked) in [
        (32, 1, NoiseModel::Poisson, false),
        (32, 2, NoiseModel::Amplitude, true),
    ] {
        let c = case(m, modes, 3, noise, masked, 17);
        std::env::set_var("PTYTILE_GPU_BATCH", "5");
        let gpu = open(&c);
        std::env::remove_var("PTYTILE_GPU_BATCH");
        let host =
            backend::open(BackendKind::Cpu, &c.k, c.pos.clone(), c.meas.clone(), None).unwrap();
        let n = c.pos.len();
        // the exit waves live in the backends; a pass without them is an error
        let step0 = DmStep {
            beta: 0.8,
            gamma: 0.9,
            error_reduction: false,
        };
        for be in [&gpu, &host] {
            assert!(be.exit_waves().unwrap().is_empty());
            assert!(be
                .difference_map(&c.obj, &c.probe_hat, Selection::Range(0..n), false, step0)
                .is_err());
        }
        for (it, er) in [false, false, true].into_iter().enumerate() {
            let step = DmStep {
                error_reduction: er,
                ..step0
            };
            for r in [0..n, 3..n - 1] {
                let a = gpu
                    .difference_map(
                        &c.obj,
                        &c.probe_hat,
                        Selection::Range(r.clone()),
                        it == 0,
                        step,
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                let b = host
                    .difference_map(
                        &c.obj,
                        &c.probe_hat,
                        Selection::Range(r.clone()),
                        it == 0,
                        step,
                    )
                    .unwrap();
                let d = grad_diff(&a, &b);
                let de = relc(&gpu.exit_waves().unwrap(), &host.exit_waves().unwrap());
                println!("{label} dm M={m} K={modes} {noise:?} pass {it} er={er} {r:?}: rel diff g_O {:.1e} D_O {:.1e} loss {:.1e} exit waves {de:.1e}", d[0], d[1], d[4]);
                assert!(d.iter().all(|v| *v < 1e-4) && de < 1e-4, "{d:?} {de:.2e}");
            }
        }
        // a checkpoint's round trip: the CPU's waves into the GPU backend and back, exactly;
        // then both form the probe sums from the same waves
        let waves = host.exit_waves().unwrap();
        assert_eq!(waves.len(), n * modes * m * m);
        gpu.set_exit_waves(waves.clone()).unwrap();
        assert_eq!(gpu.exit_waves().unwrap(), waves);
        assert!(gpu.set_exit_waves(waves[1..].to_vec()).is_err());
        let a = gpu
            .probe_sums(&c.obj, Selection::Range(0..n))
            .unwrap_or_else(|e| panic!("{e}"));
        let b = host.probe_sums(&c.obj, Selection::Range(0..n)).unwrap();
        let d = grad_diff(&a, &b);
        println!(
            "{label} dm probe sums: rel diff g_P {:.1e} D_P {:.1e}",
            d[2], d[3]
        );
        assert!(d[2] < 1e-4 && d[3] < 1e-4, "{d:?}");
        // ePIE then rPIE, each sweeping twice in a shuffled order
        let order: Vec<usize> = (0..n).map(|j| (j * 7 + 3) % n).collect();
        let runs = |be: &dyn Compute<f32>| {
            let (mut obj, mut ph) = (c.obj.clone(), c.probe_hat.clone());
            let mut illum = Field::filled(obj.origin, obj.shape, 0.0);
            let mut loss = Vec::new();
            for (a_o, s_o, a_p, s_p, gamma) in
                [(1.0, 0.9, 1.0, 0.5, 1.0), (0.1, 1.0, 0.3, 1.0, 0.8)]
            {
                let st = PieStep {
                    obj_mix: a_o,
                    obj_step: s_o,
                    probe_mix: a_p,
                    probe_step: s_p,
                    gamma,
                    update_probe: true,
                };
                for _ in 0..2 {
                    let l = be
                        .pie_sweep(
                            &mut obj,
                            &mut ph,
                            Selection::Indices(&order),
                            &st,
                            &mut illum,
                        )
                        .unwrap_or_else(|e| panic!("{e}"));
                    loss.push(l);
                }
            }
            (obj, ph, illum, loss)
        };
        let (oa, pa, ia, la) = runs(gpu.as_ref());
        let (ob, pb, ib, lb) = runs(host.as_ref());
        let (d_o, d_p, d_i) = (
            relc(&oa.data, &ob.data),
            relc(&pa, &pb),
            rel(r64(&ia.data), r64(&ib.data)),
        );
        let d_l = la
            .iter()
            .zip(&lb)
            .map(|(a, b)| ((a - b) / b).abs())
            .fold(0.0, f64::max);
        println!("{label} epie+rpie M={m} K={modes} {noise:?}, 4 sweeps: rel diff object {d_o:.1e} probe {d_p:.1e} illumination {d_i:.1e} loss {d_l:.1e}");
        assert!(d_o < 1e-4 && d_p < 1e-4 && d_i < 1e-4 && d_l < 1e-4);
        assert_ne!(oa.data, c.obj.data, "the sweep changed nothing");
    }
}

fn gpu_projection_ops_match_cpu(kind: BackendKind) {
    if gpu_or_skip(kind) {
        projection_ops_match_cpu(&*opener(kind), &format!("{kind:?}"));
    }
}

#[test]
fn cuda_projection_ops_match_cpu() {
    gpu_projection_ops_match_cpu(BackendKind::Cuda);
}

#[test]
fn hip_projection_ops_match_cpu() {
    gpu_projection_ops_match_cpu(BackendKind::Hip);
}

/// The resident object store (`Compute::resident`, docs/gpu.md "Resident state") against
/// the host arithmetic it replaces, on a random case (2 modes, 3 × 6 positions):
/// - `load_object` then `store_object` returns the field bit for bit; `object_rect` equals
///   the host's `extract`, `write_object_rect` the host's `write_rect`;
/// - `accumulate` over two ranges (reset, then added) gives the sums of one `gradients`
///   call over both to 1e-12 relative (`sums_rect` of the whole field, `probe_sums`), and
///   the loss;
/// - `add_sums_rect` adds exactly; `max_d` equals the host's maximum of D_O on a rectangle;
/// - `update_object` equals gd's step on the host bit for bit (same f64 operations);
/// - `accumulate_with_positions` gives the same sums, and the position terms of
///   `gradients_and_positions` (bit for bit; the CPU's within 1e-4);
/// - `dm_accumulate`, `dm_probe_sums` give dm's sums through `Compute` (three passes) and
///   upload nothing in a later round (the selections stay cached), `ratio_update` dm's
///   overlap step on the host bit for bit.
fn resident_ops_match_host(open: &Opener, label: &str) {
    use ptytile::engine::exchange::{extract, write_rect};
    use ptytile::tiling::Rect;
    let c = case(32, 2, 3, NoiseModel::Poisson, false, 11);
    let dev = open(&c);
    let r = dev
        .resident()
        .expect("a GPU backend keeps a resident object");
    let field = Rect::from_origin_shape(c.obj.origin, c.obj.shape);
    let inner = Rect {
        y0: field.y0 + 3,
        y1: field.y1 - 5,
        x0: field.x0 + 2,
        x1: field.x1 - 7,
    };
    r.load_object(&c.obj).unwrap();
    let mut back = c.obj.clone();
    back.data.iter_mut().for_each(|z| *z = C::new(0.0, 0.0));
    r.store_object(&mut back).unwrap();
    assert_eq!(back, c.obj, "{label}: load then store");
    assert_eq!(
        r.object_rect(&inner).unwrap(),
        extract(&c.obj, &inner),
        "{label}: object_rect"
    );
    let patch: Vec<C> = (0..inner.area())
        .map(|i| C::new(i as f32, -(i as f32)))
        .collect();
    let mut host = c.obj.clone();
    write_rect(&mut host, &inner, &patch);
    r.write_object_rect(&inner, &patch).unwrap();
    r.store_object(&mut back).unwrap();
    assert_eq!(back, host, "{label}: write_object_rect");
    // sums: two calls on the device == one host call over both
    let n = c.pos.len();
    let want = cpu::gradients(&c.k, &host, &c.probe_hat, &c.pos, &c.meas, true);
    let loss = r
        .accumulate(&c.probe_hat, Selection::Range(0..7), true, true)
        .unwrap()
        + r.accumulate(&c.probe_hat, Selection::Range(7..n), true, false)
            .unwrap();
    let (g, d) = r.sums_rect(&field).unwrap();
    let (gp, dp) = r.probe_sums().unwrap();
    let rel_c = |a: &[num_complex::Complex64], b: &[num_complex::Complex64]| {
        rel(
            a.iter().map(|z| (z.re, z.im)),
            b.iter().map(|z| (z.re, z.im)),
        )
    };
    let rel_r =
        |a: &[f64], b: &[f64]| rel(a.iter().map(|&v| (v, 0.0)), b.iter().map(|&v| (v, 0.0)));
    let errs = [
        rel_c(&g, &want.g_obj.data),
        rel_r(&d, &want.d_obj.data),
        rel_c(&gp, &want.g_probe_hat),
        rel_r(&dp, &want.d_probe),
        (loss - want.loss).abs() / want.loss.abs(),
    ];
    println!("{label}: resident sums vs host (g_O, D_O, g_P, D_P, loss): {errs:?}");
    assert!(errs.iter().all(|e| *e <= 1e-4), "{label}: {errs:?}");
    // with position correction's terms: the same sums bit for bit, and the terms those of
    // the backend's own gradients_and_positions (bit for bit) and of the CPU (within 1e-4)
    let (mut loss2, mut terms) = (0.0, Vec::new());
    for (range, reset) in [(0..7, true), (7..n, false)] {
        let (l, mut t) = r
            .accumulate_with_positions(&c.probe_hat, Selection::Range(range.clone()), true, reset)
            .unwrap();
        let own = dev
            .gradients_and_positions(&host, &c.probe_hat, Selection::Range(range), true)
            .unwrap();
        assert_eq!(t, own.g_pos, "{label}: resident position terms");
        loss2 += l;
        terms.append(&mut t);
    }
    assert_eq!(
        loss2.to_bits(),
        loss.to_bits(),
        "{label}: loss with positions"
    );
    assert!(
        r.sums_rect(&field).unwrap() == (g.clone(), d.clone())
            && r.probe_sums().unwrap() == (gp.clone(), dp.clone()),
        "{label}: the sums changed when the position terms were asked for"
    );
    let cpu_terms = cpu::gradients_and_positions(&c.k, &host, &c.probe_hat, &c.pos, &c.meas, true);
    let flat = |v: &[ptytile::backend::kernel::PositionGradient]| {
        v.iter()
            .flat_map(|g| [(g.grad[0], g.grad[1]), (g.curv[0], g.curv[1])])
            .collect::<Vec<_>>()
    };
    let dt = rel(flat(&terms).into_iter(), flat(&cpu_terms.g_pos).into_iter());
    println!("{label}: resident position terms vs host: {dt:.1e}");
    assert!(dt <= 1e-4, "{label}: position terms {dt:.2e}");
    // add a rectangle of sums; max of D_O
    let add_g: Vec<num_complex::Complex64> = (0..inner.area())
        .map(|i| num_complex::Complex64::new(i as f64 * 0.5, 1.0))
        .collect();
    let add_d: Vec<f64> = (0..inner.area()).map(|i| (i % 13) as f64).collect();
    r.add_sums_rect(&inner, &add_g, &add_d).unwrap();
    let (g2, d2) = r.sums_rect(&inner).unwrap();
    let (g_in, d_in) = (
        extract(
            &Field {
                origin: field.origin(),
                shape: field.shape(),
                data: g.clone(),
            },
            &inner,
        ),
        extract(
            &Field {
                origin: field.origin(),
                shape: field.shape(),
                data: d.clone(),
            },
            &inner,
        ),
    );
    for i in 0..inner.area() {
        assert_eq!(g2[i], g_in[i] + add_g[i], "{label}: add_sums_rect g at {i}");
        assert_eq!(d2[i], d_in[i] + add_d[i], "{label}: add_sums_rect d at {i}");
    }
    let host_max = d2.iter().fold(0.0f64, |a, b| a.max(*b));
    assert_eq!(r.max_d(&inner).unwrap(), host_max, "{label}: max_d");
    // gd's step on the inner rectangle, on the device and on the host
    let (alpha, planes, reg) = (0.5, 1.0, 1e-3 * host_max);
    r.update_object(&inner, alpha, planes, reg).unwrap();
    r.store_object(&mut back).unwrap();
    for (i, z) in extract(&host, &inner).iter().enumerate() {
        let u = (g2[i] / planes) * (alpha / (d2[i] + reg));
        let want = *z - C::new(u.re as f32, u.im as f32);
        let got = extract(&back, &inner)[i];
        assert_eq!(got, want, "{label}: update_object at {i}");
    }
    // outside the rectangle the object is untouched
    assert_eq!(back.data[0], host.data[0], "{label}: update_object outside");
    // rectangles outside the field are refused
    let outside = Rect {
        y0: field.y0 - 1,
        ..inner
    };
    assert!(
        r.object_rect(&outside).is_err(),
        "{label}: a rectangle outside"
    );
    // dm on the resident object against dm through `Compute` on a second backend: the same
    // sums, losses and probe sums bit for bit over three passes (the first from P O, the
    // last error reduction); dm's overlap step equal to the host's bit for bit
    let step = |er| ptytile::backend::kernel::DmStep {
        beta: 0.8,
        gamma: 0.9,
        error_reduction: er,
    };
    let other = open(&c);
    r.load_object(&host).unwrap();
    for (pass, er) in [false, false, true].into_iter().enumerate() {
        let init = pass == 0;
        let loss = r
            .dm_accumulate(&c.probe_hat, Selection::Range(0..7), init, step(er), true)
            .unwrap()
            + r.dm_accumulate(&c.probe_hat, Selection::Range(7..n), init, step(er), false)
                .unwrap();
        let a = other
            .difference_map(&host, &c.probe_hat, Selection::Range(0..7), init, step(er))
            .unwrap();
        let b = other
            .difference_map(&host, &c.probe_hat, Selection::Range(7..n), init, step(er))
            .unwrap();
        let mut want_g = a.g_obj.data.clone();
        let mut want_d = a.d_obj.data.clone();
        want_g
            .iter_mut()
            .zip(&b.g_obj.data)
            .for_each(|(x, y)| *x += *y);
        want_d
            .iter_mut()
            .zip(&b.d_obj.data)
            .for_each(|(x, y)| *x += *y);
        let (g, d) = r.sums_rect(&field).unwrap();
        // the two ranges' sums were added in one buffer on the device, in two on the host:
        // a sum over both differs only where both ranges' windows overlap
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * y.abs().max(1.0);
        assert!(
            g.iter()
                .zip(&want_g)
                .all(|(x, y)| close(x.re, y.re) && close(x.im, y.im))
                && d.iter().zip(&want_d).all(|(x, y)| close(*x, *y)),
            "{label}: dm pass {pass}: resident sums"
        );
        assert_eq!(
            loss.to_bits(),
            (a.loss + b.loss).to_bits(),
            "{label}: dm pass {pass}: loss"
        );
    }
    let (gp, dp) = r.dm_probe_sums(Selection::Range(0..n)).unwrap();
    let want = other.probe_sums(&host, Selection::Range(0..n)).unwrap();
    assert!(
        gp == want.g_probe_hat && dp == want.d_probe,
        "{label}: dm probe sums"
    );
    // a dm iteration's three selections (halo, interior, all) stay cached: another round
    // with the same probe uploads nothing
    let up = dev.bytes_moved()[0];
    for (range, reset) in [(0..7, true), (7..n, false)] {
        r.dm_accumulate(
            &c.probe_hat,
            Selection::Range(range),
            false,
            step(false),
            reset,
        )
        .unwrap();
    }
    r.dm_probe_sums(Selection::Range(0..n)).unwrap();
    assert_eq!(dev.bytes_moved()[0], up, "{label}: a dm round uploaded");
    let (g, d) = r.sums_rect(&inner).unwrap();
    let reg = 1e-3 * d.iter().fold(0.0f64, |a, b| a.max(*b));
    r.ratio_update(&inner, reg).unwrap();
    r.store_object(&mut back).unwrap();
    for (i, z) in extract(&host, &inner).iter().enumerate() {
        let x = num_complex::Complex64::new(z.re as f64, z.im as f64);
        let u = (g[i] - x * d[i]) / (d[i] + reg);
        let want = C::new((x.re + u.re) as f32, (x.im + u.im) as f32);
        assert_eq!(
            extract(&back, &inner)[i],
            want,
            "{label}: ratio_update at {i}"
        );
    }
}

#[test]
fn emulated_resident_ops_match_host() {
    if let Some(open) = emu_opener() {
        resident_ops_match_host(&*open, "emulated");
    }
}

#[test]
fn cuda_resident_ops_match_host() {
    if gpu_or_skip(BackendKind::Cuda) {
        resident_ops_match_host(&*opener(BackendKind::Cuda), "cuda");
    }
}

#[test]
fn hip_resident_ops_match_host() {
    if gpu_or_skip(BackendKind::Hip) {
        resident_ops_match_host(&*opener(BackendKind::Hip), "hip");
    }
}

/// 10 preconditioned descent iterations of object and probe through `Compute` on both
/// backends; the final objects and probes agree to 1e-4.
fn gpu_iterations_match_cpu(kind: BackendKind) {
    if gpu_or_skip(kind) {
        iterations_match_cpu(&*opener(kind), &format!("{kind:?}"));
    }
}

fn iterations_match_cpu(open: &Opener, label: &str) {
    let c = case(64, 1, 6, NoiseModel::Poisson, false, 5);
    let run = |be: &dyn Compute<f32>| -> (Field<C>, Vec<C>) {
        let (mut obj, mut ph) = (c.obj.clone(), c.probe_hat.clone());
        let n = c.pos.len();
        for it in 0..10 {
            let g = be
                .gradients(&obj, &ph, Selection::Range(0..n), it >= 2)
                .unwrap_or_else(|e| panic!("{e}"));
            let dmax = g.d_obj.data.iter().cloned().fold(0.0, f64::max);
            for ((o, gz), d) in obj.data.iter_mut().zip(&g.g_obj.data).zip(&g.d_obj.data) {
                let s = 0.5 / (d + 0.1 * dmax);
                *o -= C::new((gz.re * s) as f32, (gz.im * s) as f32);
            }
            if it >= 2 {
                let dp = g.d_probe.iter().cloned().fold(0.0, f64::max);
                for (p, gp) in ph.iter_mut().zip(&g.g_probe_hat) {
                    *p -= C::new((gp.re * 0.3 / dp) as f32, (gp.im * 0.3 / dp) as f32);
                }
            }
        }
        (obj, ph)
    };
    let gpu = open(&c);
    let host = backend::open(BackendKind::Cpu, &c.k, c.pos.clone(), c.meas.clone(), None).unwrap();
    let (oa, pa) = run(gpu.as_ref());
    let (ob, pb) = run(host.as_ref());
    let f = |v: &[C]| {
        v.iter()
            .map(|z| (z.re as f64, z.im as f64))
            .collect::<Vec<_>>()
    };
    let (d_o, d_p) = (
        rel(f(&oa.data).into_iter(), f(&ob.data).into_iter()),
        rel(f(&pa).into_iter(), f(&pb).into_iter()),
    );
    println!("{label} after 10 iterations: object rel diff {d_o:.2e}, probe rel diff {d_p:.2e}");
    assert!(
        d_o < 1e-4 && d_p < 1e-4,
        "object {d_o:.2e}, probe {d_p:.2e}"
    );
}

#[test]
fn cuda_gradients_match_cpu() {
    gpu_matches_cpu(BackendKind::Cuda);
}

#[test]
fn cuda_ten_iterations_match_cpu() {
    gpu_iterations_match_cpu(BackendKind::Cuda);
}

#[test]
fn hip_gradients_match_cpu() {
    gpu_matches_cpu(BackendKind::Hip);
}

#[test]
fn hip_ten_iterations_match_cpu() {
    gpu_iterations_match_cpu(BackendKind::Hip);
}

/// Without a GPU, opening a GPU backend is a one-line error naming the option, not a panic,
/// in f32 and in f64 alike (f64 backends compile the f64 kernels; docs/gpu.md "Precision");
/// with one, both open.
#[test]
fn gpu_backends_fail_cleanly_without_a_gpu() {
    let c = case(16, 1, 1, NoiseModel::Poisson, false, 1);
    for kind in [BackendKind::Cuda, BackendKind::Hip] {
        let k64 = Kernel {
            fft: Fft2::<f64>::new(16),
            modes: 1,
            noise: NoiseModel::Poisson,
            eps: 1e-3,
            weights: None,
            propagator: Vec::new(),
        };
        let p64: Arc<[PositionGeom<f64>]> = vec![PositionGeom::new(0, [10.0, 10.0], 16)].into();
        let r64 = backend::open(kind, &k64, p64, vec![0f32; 256].into(), None);
        if backend::available(kind).is_ok() {
            if let Err(e) = r64 {
                panic!("{kind:?} in f64 on a GPU host: {e}");
            }
            println!("skipped for {kind:?}: a GPU is present");
            continue;
        }
        let e = r64.err().unwrap();
        assert_eq!(
            e.what,
            format!("--backend {} ([parallel] backend)", kind.name())
        );
        assert!(!e.to_string().contains('\n'), "{e}");
        let e = backend::open(kind, &c.k, c.pos.clone(), c.meas.clone(), None)
            .err()
            .unwrap();
        assert_eq!(
            e.what,
            format!("--backend {} ([parallel] backend)", kind.name())
        );
        assert!(!e.to_string().contains('\n'), "{e}");
        println!("{kind:?}: {e}");
    }
}

/// `ptytile reconstruct … --backend cuda|hip` with every engine on a machine without that GPU: one line on
/// stderr, exit code 2.
#[test]
fn cli_backend_without_gpu_exits_2() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/datasets/pbtio3_thin.toml");
    for kind in ["cuda", "hip"] {
        if backend::available(if kind == "cuda" {
            BackendKind::Cuda
        } else {
            BackendKind::Hip
        })
        .is_ok()
        {
            println!("skipped for {kind}: a GPU is present");
            continue;
        }
        // every engine, multislice and position correction are accepted: the only error
        // is the missing driver, for each
        let engines = ["gd", "mlcg", "dm", "epie", "rpie"].map(|e| (e, None));
        let more = [
            ("gd", Some("position_correction.enabled=true")),
            (
                "mlcg",
                Some("reconstruction.slices=3,reconstruction.slice_thickness_m=11e-10"),
            ),
        ];
        for (engine, extra) in engines.into_iter().chain(more) {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ptytile"));
            cmd.args(["reconstruct", cfg, "--backend", kind, "--iterations", "1"])
                .args(["--set", &format!("reconstruction.engine=\"{engine}\"")]);
            for e in extra.iter().flat_map(|e| e.split(',')) {
                cmd.args(["--set", e]);
            }
            let out = cmd.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
            assert!(
                err.starts_with(&format!("error: --backend {kind}")),
                "{engine} {extra:?}: {err}"
            );
            println!("{kind}, {engine} {extra:?}: {}", err.trim_end());
        }
    }
}

/// Host emulation of the GPU kernels: kernels/ptycho.cu compiled by g++ with the shim
/// kernels/emu/shim.h (blocks and threads as loops, __syncthreads as a barrier), driven by
/// the GPU backend's own algorithm (`backend::gpu::Gpu`) through a `Device` whose memory is
/// host memory and whose FFTs are rustfft's. Checks kernel arithmetic and indexing, batching
/// and the layouts against the CPU backend without a GPU; the vendor libraries are not run.
mod emu {
    use ptytile::backend::gpu::{kernel_source, Args, DPtr, Device, BLOCK};
    use ptytile::Result;
    use std::collections::HashMap;
    use std::ffi::{c_char, c_int, c_void, CString};

    type Launch = unsafe extern "C" fn(*const c_char, u32, u32, *mut *mut c_void) -> c_int;

    pub struct Emu {
        _dir: tempfile::TempDir,
        _lib: libloading::Library,
        launch: Launch,
        set_order: unsafe extern "C" fn(c_int),
        allocs: HashMap<DPtr, usize>,
        plans: HashMap<(usize, bool), std::sync::Arc<dyn rustfft::Fft<f32>>>,
        plans64: HashMap<(usize, bool), std::sync::Arc<dyn rustfft::Fft<f64>>>,
        wide: bool,
    }

    /// Compile the emulation library (f32 kernels) with g++; `Err(reason)` when g++ is
    /// missing or fails.
    pub fn open() -> std::result::Result<Emu, String> {
        open_in(false)
    }

    /// The emulation with the f64 kernels (`PTY_F64`) and f64 transforms.
    pub fn open_f64() -> std::result::Result<Emu, String> {
        open_in(true)
    }

    fn open_in(wide: bool) -> std::result::Result<Emu, String> {
        // embedded, so that the test binary also runs away from the source tree (a GPU host)
        let (shim, launch) = (
            include_str!("../kernels/emu/shim.h"),
            include_str!("../kernels/emu/launch.h"),
        );
        let src = format!(
            "{shim}\n{}\n{launch}",
            kernel_source(wide).replace("#pragma once", "")
        );
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (cpp, so) = (dir.path().join("emu.cpp"), dir.path().join("libemu.so"));
        std::fs::write(&cpp, src).map_err(|e| e.to_string())?;
        // -fno-gnu-unique: `__shared__` is `static` here, and g++ would make a static local
        // of an inline function (block_sum's partial sums) one process-wide symbol shared
        // by every emulation library loaded, so thread ranks running at once would add into
        // each other's reductions
        let out = std::process::Command::new("g++")
            .args([
                "-std=c++20",
                "-O2",
                "-shared",
                "-fPIC",
                "-pthread",
                "-fno-gnu-unique",
                "-o",
            ])
            .arg(&so)
            .arg(&cpp)
            .output()
            .map_err(|e| format!("g++ not available: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "g++ failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // SAFETY: our own library; emu_launch has the Launch signature (kernels/emu/launch.h).
        unsafe {
            let lib = libloading::Library::new(&so).map_err(|e| e.to_string())?;
            let launch = *lib
                .get::<Launch>(b"emu_launch\0")
                .map_err(|e| e.to_string())?;
            let set_order = *lib
                .get::<unsafe extern "C" fn(c_int)>(b"emu_set_order\0")
                .map_err(|e| e.to_string())?;
            Ok(Emu {
                _dir: dir,
                _lib: lib,
                launch,
                set_order,
                allocs: HashMap::new(),
                plans: HashMap::new(),
                plans64: HashMap::new(),
                wide,
            })
        }
    }

    impl Emu {
        /// Run every later launch's blocks, and the threads of kernels without a barrier,
        /// in reverse order (a GPU may run them in any order).
        pub fn reversed(self) -> Self {
            // SAFETY: emu_set_order sets an int of this library (kernels/emu/launch.h).
            unsafe { (self.set_order)(1) };
            self
        }
    }

    fn direction(inverse: bool) -> rustfft::FftDirection {
        if inverse {
            rustfft::FftDirection::Inverse
        } else {
            rustfft::FftDirection::Forward
        }
    }

    /// Unnormalised 2-D transforms of the row-major M × M arrays of `data` with the row
    /// transform `plan`: rows, transpose, rows, transpose back.
    fn fft2<R: rustfft::FftNum>(
        plan: &dyn rustfft::Fft<R>,
        data: &mut [num_complex::Complex<R>],
        m: usize,
    ) {
        let mut t = vec![num_complex::Complex::<R>::new(R::zero(), R::zero()); m * m];
        for a in data.chunks_exact_mut(m * m) {
            plan.process(a);
            transpose::transpose(a, &mut t, m, m);
            plan.process(&mut t);
            transpose::transpose(&t, a, m, m);
        }
    }

    fn slice<'a, V>(p: DPtr, n: usize) -> &'a mut [V] {
        // SAFETY: p is a live allocation of this device holding n values (callers' contract).
        unsafe { std::slice::from_raw_parts_mut(p as *mut V, n) }
    }

    impl Device for Emu {
        fn describe(&self) -> String {
            "host emulation (g++)".into()
        }
        fn bind(&self) -> Result<()> {
            Ok(())
        }
        fn wide(&self) -> bool {
            self.wide
        }
        fn alloc(&mut self, bytes: usize) -> Result<DPtr> {
            // poisoned with NaN bytes: every value the kernels read must have been written
            let words = bytes.div_ceil(8).max(1);
            let p = Box::into_raw(vec![u64::MAX; words].into_boxed_slice()) as *mut u64 as DPtr;
            self.allocs.insert(p, words);
            Ok(p)
        }
        fn free(&mut self, p: DPtr) {
            if let Some(words) = self.allocs.remove(&p) {
                // SAFETY: allocated by `alloc` with this length, freed once.
                drop(unsafe {
                    Box::from_raw(std::ptr::slice_from_raw_parts_mut(p as *mut u64, words))
                });
            }
        }
        fn upload(&mut self, dst: DPtr, src: &[u8]) -> Result<()> {
            slice::<u8>(dst, src.len()).copy_from_slice(src);
            Ok(())
        }
        fn download(&mut self, dst: &mut [u8], src: DPtr) -> Result<()> {
            dst.copy_from_slice(slice::<u8>(src, dst.len()));
            Ok(())
        }
        fn zero(&mut self, p: DPtr, bytes: usize) -> Result<()> {
            slice::<u8>(p, bytes).fill(0);
            Ok(())
        }
        fn copy(&mut self, dst: DPtr, src: DPtr, bytes: usize) -> Result<()> {
            let v = slice::<u8>(src, bytes).to_vec();
            slice::<u8>(dst, bytes).copy_from_slice(&v);
            Ok(())
        }
        fn launch(&mut self, name: &'static str, blocks: usize, mut args: Args) -> Result<()> {
            let n = CString::new(name).unwrap();
            let mut ptrs = args.pointers();
            // SAFETY: the slots hold the kernel's arguments in order (as for cuLaunchKernel).
            let r = unsafe { (self.launch)(n.as_ptr(), blocks as u32, BLOCK, ptrs.as_mut_ptr()) };
            assert_eq!(r, 0, "unknown kernel {name}");
            Ok(())
        }
        fn fft(&mut self, data: DPtr, m: usize, count: usize, inverse: bool) -> Result<()> {
            if self.wide {
                let plan = self.plans64.entry((m, inverse)).or_insert_with(|| {
                    rustfft::FftPlanner::<f64>::new().plan_fft(m, direction(inverse))
                });
                fft2(plan.as_ref(), slice(data, count * m * m), m);
            } else {
                let plan = self.plans.entry((m, inverse)).or_insert_with(|| {
                    rustfft::FftPlanner::<f32>::new().plan_fft(m, direction(inverse))
                });
                fft2::<f32>(plan.as_ref(), slice(data, count * m * m), m);
            }
            Ok(())
        }
        fn sync(&mut self) -> Result<()> {
            Ok(())
        }
        fn record(&mut self) -> Result<usize> {
            Ok(0)
        }
        fn elapsed_ms(&mut self, _: usize, _: usize) -> Result<f32> {
            Ok(0.0)
        }
        fn clear_events(&mut self) {}
        fn free_memory(&self) -> Result<usize> {
            Ok(1 << 34)
        }
    }

    impl Drop for Emu {
        fn drop(&mut self) {
            for p in self.allocs.keys().copied().collect::<Vec<_>>() {
                self.free(p);
            }
        }
    }
}

/// Replace the rank's backend of `p` with the emulated kernels on `dev` (f32 or f64, as `T`).
fn emulate<T: ptytile::physics::fft::Real>(
    p: &mut ptytile::engine::Problem<T>,
    dev: emu::Emu,
) -> ptytile::Result<()> {
    p.compute = Box::new(ptytile::backend::gpu::Gpu::new(
        "emu",
        dev,
        &p.kernel,
        p.positions.clone(),
        p.intensities.clone(),
    )?);
    Ok(())
}

fn emu_opener() -> Option<Box<Opener>> {
    match emu::open() {
        Err(reason) => {
            println!("skipped: {reason}");
            None
        }
        Ok(_) => Some(Box::new(|c: &Case| {
            let dev = emu::open().unwrap();
            Box::new(
                ptytile::backend::gpu::Gpu::new("emu", dev, &c.k, c.pos.clone(), c.meas.clone())
                    .unwrap_or_else(|e| panic!("{e}")),
            ) as Box<dyn Compute<f32>>
        })),
    }
}

#[test]
fn emulated_kernels_match_cpu() {
    if let Some(open) = emu_opener() {
        matches_cpu(&*open, "emulated");
    }
}

#[test]
fn emulated_ten_iterations_match_cpu() {
    if let Some(open) = emu_opener() {
        iterations_match_cpu(&*open, "emulated");
    }
}

#[test]
fn emulated_projection_ops_match_cpu() {
    if let Some(open) = emu_opener() {
        projection_ops_match_cpu(&*open, "emulated");
    }
}

/// The sums of `a` and `b` (two backends of the same case, or one backend twice) for the
/// same calls are the same bits: gradients with the probe sums over a range and an index
/// subset, and two difference-map passes. On a GPU, an object sum formed by f64 atomics
/// gets its terms in the order the blocks happen to run, so repeated calls differ in the
/// last bits; the gather (`gather_sums`, docs/gpu.md "Precision") adds them in a fixed order.
fn sums_do_not_depend_on_the_schedule(
    a: &dyn Compute<f32>,
    b: &dyn Compute<f32>,
    c: &Case,
    label: &str,
) {
    use ptytile::backend::kernel::DmStep;
    let n = c.pos.len();
    let ix: Vec<usize> = (0..n).rev().step_by(2).collect();
    let bits = |g: &Gradients<f32>| -> Vec<u64> {
        let c = g
            .g_obj
            .data
            .iter()
            .chain(&g.g_probe_hat)
            .flat_map(|z| [z.re, z.im]);
        c.chain(g.d_obj.data.iter().copied())
            .chain(g.d_probe.iter().copied())
            .chain([g.loss])
            .map(f64::to_bits)
            .collect()
    };
    let differ = |ga: &Gradients<f32>, gb: &Gradients<f32>| {
        let (x, y) = (bits(ga), bits(gb));
        assert_eq!(x.len(), y.len());
        (x.iter().zip(&y).filter(|(p, q)| p != q).count(), x.len())
    };
    let mut calls = 0;
    for sel in [Selection::Range(0..n), Selection::Indices(&ix)] {
        let ga = a
            .gradients(&c.obj, &c.probe_hat, sel.clone(), true)
            .unwrap_or_else(|e| panic!("{e}"));
        let gb = b
            .gradients(&c.obj, &c.probe_hat, sel.clone(), true)
            .unwrap_or_else(|e| panic!("{e}"));
        let (d, of) = differ(&ga, &gb);
        println!("{label}: gradients {sel:?}: {d} of {of} f64 sums differ");
        assert_eq!(
            d, 0,
            "{label}: gradients over {sel:?} depend on the schedule"
        );
        calls += 1;
    }
    for init in [true, false] {
        let step = DmStep {
            beta: 0.8,
            gamma: 0.9,
            error_reduction: false,
        };
        // a pass moves the exit waves: b starts from the waves a started from
        let waves = (!init).then(|| a.exit_waves().unwrap());
        let ga = a
            .difference_map(&c.obj, &c.probe_hat, Selection::Range(0..n), init, step)
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(w) = waves {
            b.set_exit_waves(w).unwrap();
        }
        let gb = b
            .difference_map(&c.obj, &c.probe_hat, Selection::Range(0..n), init, step)
            .unwrap_or_else(|e| panic!("{e}"));
        let (d, of) = differ(&ga, &gb);
        println!("{label}: difference map (init {init}): {d} of {of} f64 sums differ");
        assert_eq!(
            d, 0,
            "{label}: the difference map's sums depend on the schedule"
        );
        calls += 1;
    }
    assert_eq!(calls, 4);
}

/// `c` with probe modes that fall to 1e-7 of their peak at the window's edge (a focused
/// probe's tails), so that the terms of an object sum span ~45 binary orders: f64 sums of
/// such f32 terms round, and their value depends on the order of the additions (terms of
/// similar size, as in `case`, add exactly in any order).
fn steep(mut c: Case) -> Case {
    let m = c.k.fft.size();
    let h = (m as f32 - 1.0) / 2.0;
    let probe: Vec<C> = (0..c.k.modes * m * m)
        .map(|i| {
            let (y, x) = (((i / m) % m) as f32 - h, (i % m) as f32 - h);
            let r2 = (y * y + x * x) / (h * h);
            C::from_polar((-16.0 * r2).exp(), 0.3 * r2 + (i / (m * m)) as f32)
        })
        .collect();
    c.probe_hat = probe_spectrum(&c.k.fft, &probe);
    c
}

/// The emulated kernels with blocks and threads in reverse order against the forward order
/// (several batches, two probe modes, a steep probe): every sum the same bits.
#[test]
fn emulated_sums_do_not_depend_on_the_schedule() {
    let Ok(fwd) = emu::open().map_err(|e| println!("skipped: {e}")) else {
        return;
    };
    let c = steep(case(32, 2, 4, NoiseModel::Poisson, true, 7));
    std::env::set_var("PTYTILE_GPU_BATCH", "5");
    let open = |dev: emu::Emu| {
        ptytile::backend::gpu::Gpu::new("emu", dev, &c.k, c.pos.clone(), c.meas.clone())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let (a, b) = (open(fwd), open(emu::open().unwrap().reversed()));
    std::env::remove_var("PTYTILE_GPU_BATCH");
    sums_do_not_depend_on_the_schedule(&a, &b, &c, "emulated, reversed schedule");
}

/// On a GPU: the same calls twice on one backend give the same bits.
fn gpu_sums_are_deterministic(kind: BackendKind) {
    if gpu_or_skip(kind) {
        let c = steep(case(64, 2, 12, NoiseModel::Poisson, true, 7));
        let be = opener(kind)(&c);
        sums_do_not_depend_on_the_schedule(&*be, &*be, &c, &format!("{kind:?}, two calls"));
    }
}

#[test]
fn cuda_sums_are_deterministic() {
    gpu_sums_are_deterministic(BackendKind::Cuda);
}

#[test]
fn hip_sums_are_deterministic() {
    gpu_sums_are_deterministic(BackendKind::Hip);
}

/// Every engine (gd, gd with mini-batches, mlcg, dm with its error-reduction finish, epie,
/// rpie, and a dm → mlcg schedule) for 10 iterations on an 8 × 8 crop of the PbTiO3 scan
/// (patterns cut to 64², shipped settings: Poisson, one rank) four ways: the emulated GPU
/// kernels (f32) as the rank's backend, the CPU backend in f32, the CPU backend in f64
/// as the reference, and the emulated GPU kernels compiled in f64 (`PTY_F64`, f64
/// transforms). The engines call only `Compute`, so the runs differ only in the backend's
/// arithmetic.
///
/// Asserted: the f64 emulated run is within 1e-10 relative of the f64 CPU run (object,
/// probe): the kernels compute what the CPU backend computes (issue 15, Must show 2, asks
/// 1e-5; with f32 rounding out of the way, any difference in the algorithm would show far
/// above the ≤ 1.4e-13 measured). The f32 emulated run is within 1e-4 relative of the CPU f32 run,
/// and no further from the f64 reference than 1.5 × the CPU f32 run plus 1e-6: the GPU
/// kernels are as accurate as the CPU's. (1e-5 between two f32 implementations is not
/// reachable on these data: the Poisson weight 1 − Î/I cancels to 10⁻³ where the model fits
/// the bright field, so f32 rounding of I moves the first gradient by ~3e-6 relative;
/// docs/gpu.md.)
#[test]
fn emulated_engines_match_cpu_on_pbtio3() {
    use ptytile::backend::kernel::Kernel;
    use ptytile::comm::threads::run_threads;
    use ptytile::config::Config;
    use ptytile::data::DataFile;
    use ptytile::driver;
    use ptytile::engine::{self, Decomposition, EngineState, Problem, Rank, Settings, State};
    use ptytile::physics::fft::Real;
    let Ok(_) = emu::open().map_err(|e| println!("skipped: {e}")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let toml = common::pbtio3_cut(dir.path(), "cut", 8, 64);
    // the shipped config without its iteration count (a schedule sets it)
    let mut schedule: String = std::fs::read_to_string(&toml)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("iterations ="))
        .map(|l| format!("{l}\n"))
        .collect();
    schedule.push_str("\n[[schedule]]\nengine = \"dm\"\niterations = 4\n[[schedule]]\nengine = \"mlcg\"\niterations = 6\n");
    let sched_toml = dir.path().join("schedule.toml");
    std::fs::write(&sched_toml, schedule).unwrap();
    let to64 = |v: &[C]| -> Vec<num_complex::Complex64> {
        v.iter()
            .map(|z| num_complex::Complex64::new(z.re as f64, z.im as f64))
            .collect()
    };
    let rel64 = |a: &[num_complex::Complex64], b: &[num_complex::Complex64]| {
        rel(
            a.iter().map(|z| (z.re, z.im)),
            b.iter().map(|z| (z.re, z.im)),
        )
    };
    for (label, file, set) in [
        ("gd", &toml, vec![]),
        (
            "gd, 3 mini-batches",
            &toml,
            vec!["reconstruction.batches=3".to_string()],
        ),
        ("mlcg", &toml, vec!["reconstruction.engine=\"mlcg\"".into()]),
        (
            "dm",
            &toml,
            vec![
                "reconstruction.engine=\"dm\"".into(),
                "dm.er_iterations=3".into(),
            ],
        ),
        ("epie", &toml, vec!["reconstruction.engine=\"epie\"".into()]),
        ("rpie", &toml, vec!["reconstruction.engine=\"rpie\"".into()]),
        ("dm:4,mlcg:6", &sched_toml, vec![]),
    ] {
        let mut set = set;
        if !file.ends_with("schedule.toml") {
            set.push("reconstruction.iterations=10".into());
        }
        let cfg = Config::load(file, &set).unwrap_or_else(|e| panic!("{e}"));
        let df = DataFile::open(&cfg).unwrap();
        let sel = driver::selection(&cfg, &df, None).unwrap();
        let plan = driver::job_plan(&cfg, &df, 1, &sel).unwrap();
        let rp = &plan.ranks[0];
        let settings = Settings::from(&cfg);
        // 10 iterations of `p` from `s` on one thread rank; (object, probe) in f64
        fn iterate<T: Real>(
            p: &Problem<T>,
            s: State<T>,
            rp: &ptytile::tiling::RankPlan,
            settings: &Settings,
        ) -> (
            Vec<num_complex::Complex64>,
            Vec<num_complex::Complex64>,
            Vec<f64>,
        ) {
            run_threads(1, |mut comm| {
                let mut s = s.clone();
                let mut es = EngineState::default();
                let mut rank = Rank::new(rp, &mut comm, Decomposition::Tiled);
                let mut loss = Vec::new();
                for it in 0..10 {
                    loss.push(engine::iterate(p, &mut s, &mut es, it, settings, &mut rank)?.loss);
                }
                engine::resident::sync_all(p, &mut s, &mut es)?;
                let c = |v: &[num_complex::Complex<T>]| {
                    v.iter()
                        .map(|z| num_complex::Complex64::new(z.re.f64(), z.im.f64()))
                        .collect()
                };
                Ok((c(&s.object.data), c(&s.probe), loss))
            })
            .unwrap_or_else(|e| panic!("{e}"))
            .remove(0)
        }
        let (p32, s32) = run_threads(1, |mut comm| driver::setup(&cfg, &df, rp, &mut comm))
            .unwrap_or_else(|e| panic!("{e}"))
            .remove(0);
        let (o_cpu, p_cpu, l_cpu) = iterate(&p32, s32.clone(), rp, &settings);
        // the same problem in f64 on the CPU: the reference
        let k = &p32.kernel;
        let k64 = Kernel::<f64> {
            fft: ptytile::physics::fft::Fft2::new(k.fft.size()),
            modes: k.modes,
            noise: k.noise,
            eps: k.eps as f64,
            weights: k.weights.clone(),
            propagator: Vec::new(),
        };
        let pos64: Vec<PositionGeom<f64>> = p32
            .positions
            .iter()
            .map(|q| PositionGeom::new(q.index, q.centre, k.fft.size()))
            .collect();
        let p64 = Problem::new(
            k64,
            pos64,
            p32.n_halo,
            p32.intensities.clone(),
            BackendKind::Cpu,
            None,
        )
        .unwrap();
        let s64 = State {
            object: Field {
                origin: s32.object.origin,
                shape: s32.object.shape,
                data: to64(&s32.object.data),
            },
            probe: to64(&s32.probe),
        };
        let (o_ref, p_ref, _) = iterate(&p64, s64.clone(), rp, &settings);
        // the f64 kernels on the same f64 problem
        let mut pw = p64;
        emulate(&mut pw, emu::open_f64().unwrap()).unwrap();
        let (o_w, p_w, _) = iterate(&pw, s64, rp, &settings);
        let (w_o, w_p) = (rel64(&o_w, &o_ref), rel64(&p_w, &p_ref));
        let mut pe = p32;
        emulate(&mut pe, emu::open().unwrap()).unwrap();
        let (o_emu, p_emu, l_emu) = iterate(&pe, s32, rp, &settings);
        let (d_o, d_p) = (rel64(&o_emu, &o_cpu), rel64(&p_emu, &p_cpu));
        let (e_o, e_p) = (rel64(&o_emu, &o_ref), rel64(&p_emu, &p_ref));
        let (c_o, c_p) = (rel64(&o_cpu, &o_ref), rel64(&p_cpu, &p_ref));
        println!(
            "{label}, 10 iterations: emulated vs cpu f32: object {d_o:.1e}, probe {d_p:.1e}; \
             vs the f64 reference: emulated {e_o:.1e} / {e_p:.1e}, cpu f32 {c_o:.1e} / {c_p:.1e}; \
             emulated f64 vs cpu f64: {w_o:.1e} / {w_p:.1e}; \
             loss {:.6e} → {:.6e} (cpu {:.6e} → {:.6e})",
            l_emu[0], l_emu[9], l_cpu[0], l_cpu[9]
        );
        // issue 15 asks 1e-5; the f64 runs agree to ~1e-13 (2026-12-03), so hold them to 1e-10
        assert!(
            w_o <= 1e-10 && w_p <= 1e-10,
            "{label}: emulated f64 vs cpu f64: object {w_o:.2e}, probe {w_p:.2e}"
        );
        assert!(l_cpu[9] < l_cpu[0], "{label}: the loss did not fall");
        assert!(
            d_o <= 1e-4 && d_p <= 1e-4,
            "{label}: emulated vs cpu: object {d_o:.2e}, probe {d_p:.2e}"
        );
        assert!(
            e_o <= 1.5 * c_o + 1e-6 && e_p <= 1.5 * c_p + 1e-6,
            "{label}: the emulated kernels are further from the f64 reference than the cpu's"
        );
    }
}

/// What crosses between host and device (issue 15, Must show 3), counted by the backend
/// (`Compute::bytes_moved`), on a 12 × 12 crop of the PbTiO3 scan (64² patterns) with 2 × 2
/// tiles on four thread ranks, each with the emulated GPU kernels as its backend: gd and dm
/// keep the object and its sums resident (dm also its exit waves), so a steady iteration
/// (the second; the first loads the object) moves only the halo rectangles (sums 24 B/px, object 8 B/px, each way), the probe
/// spectrum and probe sums, each position's loss and a column maximum per tile column.
/// Asserted: each rank's count equals that, term by term, and is at most 1.2 times the
/// halo rectangles plus the probe sums; printed beside it, what the field-sized transfers
/// of the non-resident path would be.
#[test]
fn emulated_transfers_per_iteration_on_pbtio3_tiles() {
    use ptytile::engine::{self, EngineState};
    let Ok(_) = emu::open().map_err(|e| println!("skipped: {e}")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // the crop's side in scan positions: 12 here; PTYTILE_TRANSFER_CROP=40 measures larger
    // tiles for docs/performance.md
    let side = std::env::var("PTYTILE_TRANSFER_CROP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let toml = common::pbtio3_cut(dir.path(), "cut", side, 64);
    for engine in ["gd", "dm"] {
        let per_rank = on_ranks(
            &toml,
            [2, 2],
            engine,
            &[],
            true,
            |p, mut s, rank, settings| {
                let mut es = EngineState::default();
                // iteration 0 loads the object into the backend; iteration 1 is a steady one
                engine::iterate(p, &mut s, &mut es, 0, settings, rank)?;
                let before = p.compute.bytes_moved();
                engine::iterate(p, &mut s, &mut es, 1, settings, rank)?;
                let after = p.compute.bytes_moved();
                let o_emu = {
                    engine::resident::sync_all(p, &mut s, &mut es)?;
                    s.object.clone()
                };
                let (m, k) = (p.kernel.fft.size(), p.kernel.modes);
                Ok((
                    [after[0] - before[0], after[1] - before[1]],
                    rank.plan.clone(),
                    p.positions.len(),
                    p.n_halo,
                    m,
                    k,
                    o_emu,
                    settings.gd.probe_at(0),
                ))
            },
        );
        for ([up, down], rp, n, n_halo, m, k, obj, probe_changed) in per_rank {
            let (mm, k) = ((m * m) as u64, k as u64);
            let sent: u64 = rp.sends.iter().map(|t| t.rect.area() as u64).sum();
            let recv: u64 = rp.recvs.iter().map(|t| t.rect.area() as u64).sum();
            let tile_cols = (rp.tile.x1 - rp.tile.x0) as u64;
            // up: the probe spectrum (when the probe moved), the neighbours' sums (g_O 16 B +
            // D_O 8 B per pixel), the halo object from its owners (8 B per pixel)
            let want_up = 8 * k * mm * probe_changed as u64 + 24 * recv + 8 * sent;
            // down: the halo sums to send, the probe sums, each position's loss, the column
            // maxima of D_O over the tile, the tile's rectangles that are neighbours' halos
            let want_down =
                24 * sent + 16 * k * mm + 8 * mm + 8 * n as u64 + 8 * tile_cols + 8 * recv;
            let ideal = 32 * (sent + recv) + 24 * k * mm + 8 * mm;
            let field = rp.field_pixels() as u64;
            // the non-resident path: each non-empty gradients call (halo positions, interior
            // positions) uploads the field, the probe spectrum and the selection and downloads
            // the field-sized sums, the probe sums and the losses
            let old: u64 = [n_halo, n - n_halo]
                .iter()
                .filter(|&&c| c > 0)
                .map(|&c| 32 * field + 24 * k * mm + 8 * mm + 20 * c as u64)
                .sum();
            println!(
            "{engine}, rank {}: field {field} px, halo rectangles {sent} px sent + {recv} px received, \
             {n} positions ({n_halo} halo): moved {up} B up + {down} B down = {} B per iteration \
             (the non-resident path: {old} B); halo rectangles + probe sums {ideal} B; ratio {:.3}",
            rp.rank,
            up + down,
            (up + down) as f64 / ideal as f64
        );
            assert_eq!(
                [up, down],
                [want_up, want_down],
                "{engine}, rank {}: bytes counted",
                rp.rank
            );
            assert!(
                (up + down) as f64 <= 1.2 * ideal as f64,
                "{engine}, rank {}: {} B moved, more than 1.2 x {ideal} B",
                rp.rank,
                up + down
            );
            assert!(obj
                .data
                .iter()
                .all(|z| z.re.is_finite() && z.im.is_finite()));
        }
    }
}

/// Emulated tiled == emulated single rank, bit for bit (issue 15, Must show 2): gd, mlcg and
/// dm, 3 iterations with the probe refined, on a 12 × 12 crop of the PbTiO3 scan (64²
/// patterns), once on one rank and once on 2 × 2 tiles (four thread ranks), every rank's
/// backend the emulated GPU kernels. The object on every tile and the probe must have the
/// same bits as the single-rank run's.
#[test]
fn emulated_tiled_equals_single_rank() {
    use ptytile::engine::{self, EngineState};
    let Ok(_) = emu::open().map_err(|e| println!("skipped: {e}")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let toml = common::pbtio3_cut(dir.path(), "cut", 12, 64);
    let run = |engine: &str, tiles: [usize; 2]| {
        on_ranks(
            &toml,
            tiles,
            engine,
            &[],
            true,
            |p, mut s, rank, settings| {
                let mut es = EngineState::default();
                for it in 0..3 {
                    engine::iterate(p, &mut s, &mut es, it, settings, rank)?;
                }
                engine::resident::sync_all(p, &mut s, &mut es)?;
                Ok((rank.plan.tile, s.object, s.probe))
            },
        )
    };
    for engine in ["gd", "mlcg", "dm"] {
        let one = run(engine, [1, 1]).remove(0);
        let (o1, p1) = (&one.1, &one.2);
        let mut differ = 0usize;
        for (tile, o, p) in run(engine, [2, 2]) {
            assert_eq!(p, *p1, "{engine}: the probe differs from the single rank's");
            for y in tile.y0..tile.y1 {
                for x in tile.x0..tile.x1 {
                    let at = |f: &Field<C>| {
                        f.data[(y - f.origin[0]) as usize * f.shape[1] + (x - f.origin[1]) as usize]
                    };
                    differ += (at(&o).re.to_bits() != at(o1).re.to_bits()
                        || at(&o).im.to_bits() != at(o1).im.to_bits())
                        as usize;
                }
            }
        }
        println!("{engine}: emulated 2 x 2 tiles vs one rank: {differ} object pixels differ");
        assert_eq!(differ, 0, "{engine}: tiled != single rank");
    }
}

/// Multislice on the emulated GPU kernels, end to end on a 10 × 10 block of the thick
/// PbTiO3 file (64² patterns, S = 3 slices of 11.07 Å, the axial regulariser on; the
/// shipped multislice settings otherwise): gd and mlcg, 4 iterations with the probe refined.
/// Asserted: on 2 × 2 tiles the object on every tile and the probe have the same bits as on
/// one rank (as on the CPU, tests/tiling_real.rs), and the single-rank run is within 1e-4
/// (object, probe; relative L2) of the CPU backend's in f32.
#[test]
fn emulated_multislice_on_thick_pbtio3() {
    use ptytile::engine::{self, EngineState};
    let Ok(_) = emu::open().map_err(|e| println!("skipped: {e}")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let toml = common::pbtio3_thick_cut(dir.path(), "thick", 10, 64);
    let extra = [
        "reconstruction.slices=3",
        "reconstruction.slice_thickness_m=11.07e-10",
        "reconstruction.axial_regularization=0.05",
    ];
    let run = |engine: &str, tiles: [usize; 2], emulated: bool| {
        on_ranks(
            &toml,
            tiles,
            engine,
            &extra,
            emulated,
            |p, mut s, rank, settings| {
                let mut es = EngineState::default();
                for it in 0..4 {
                    engine::iterate(p, &mut s, &mut es, it, settings, rank)?;
                }
                engine::resident::sync_all(p, &mut s, &mut es)?;
                Ok((rank.plan.tile, s.object, s.probe))
            },
        )
    };
    for engine in ["gd", "mlcg"] {
        let one = run(engine, [1, 1], true).remove(0);
        let (o1, p1) = (&one.1, &one.2);
        assert_eq!(o1.planes(), 3);
        let cpu = run(engine, [1, 1], false).remove(0);
        let (dob, dpr) = (
            common::rel_l2(&o1.data, &cpu.1.data),
            common::rel_l2(p1, &cpu.2),
        );
        println!(
            "{engine}, S = 3, 4 iterations: emulated vs cpu f32: object {dob:.1e}, probe {dpr:.1e}"
        );
        assert!(dob < 1e-4 && dpr < 1e-4, "{engine}: {dob:.2e} {dpr:.2e}");
        let mut differ = 0usize;
        for (tile, o, p) in run(engine, [2, 2], true) {
            assert_eq!(p, *p1, "{engine}: the probe differs from the single rank's");
            let pl = |f: &Field<C>| f.plane_len();
            for sl in 0..3 {
                for y in tile.y0..tile.y1 {
                    for x in tile.x0..tile.x1 {
                        let at = |f: &Field<C>| {
                            f.data[sl * pl(f)
                                + (y - f.origin[0]) as usize * f.shape[1]
                                + (x - f.origin[1]) as usize]
                        };
                        differ += (at(&o).re.to_bits() != at(o1).re.to_bits()
                            || at(&o).im.to_bits() != at(o1).im.to_bits())
                            as usize;
                    }
                }
            }
        }
        println!(
            "{engine}, S = 3: emulated 2 x 2 tiles vs one rank: {differ} object pixels differ"
        );
        assert_eq!(differ, 0, "{engine}: tiled != single rank");
    }
}

/// Position correction on the emulated GPU kernels (issue 15, Must show 1): gd and mlcg with
/// `[position_correction]` from iteration 1 on a 10 × 10 block of the PbTiO3 scan (64 × 64
/// patterns) whose positions were perturbed (2 % scale, 1°, 0.3 Å RMS random), 5 iterations, each followed by
/// the driver's refinement step (`Refiner::update`, `Problem::set_positions`): the emulated
/// run is within 1e-4 of the CPU backend's in f32 (object, probe; relative L2) and its
/// refined positions within 1e-3 px of the CPU's, having moved; gd on 2 × 2 emulated tiles
/// equals the single rank bit for bit (object on each tile, probe, refined positions).
/// gd runs on the backend's resident object (`Resident::accumulate_with_positions`),
/// mlcg through `Compute::gradients_and_positions`.
#[test]
fn emulated_position_correction_on_pbtio3() {
    use ptytile::config::Config;
    use ptytile::engine::positions::Refiner;
    use ptytile::engine::{self, EngineState};
    let Ok(_) = emu::open().map_err(|e| println!("skipped: {e}")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (toml, _) = common::pbtio3_perturbed(dir.path(), 10, 64, 0.02, 1.0, 0.3);
    let extra = [
        "position_correction.enabled=true",
        "position_correction.start_iteration=1",
    ];
    let cfg = Config::load(&toml, &extra.map(String::from)).unwrap();
    let run = |engine: &str, tiles: [usize; 2], emulated: bool| {
        on_ranks(
            &toml,
            tiles,
            engine,
            &extra,
            emulated,
            |p, mut s, rank, settings| {
                let pc = &cfg.position_correction;
                let noise = cfg.reconstruction.noise_model;
                let m = p.kernel.fft.size();
                let mut r = Refiner::new(pc, noise, &p.positions, m, &mut *rank.comm)?;
                let mut es = EngineState::default();
                for it in 0..5 {
                    let st = engine::iterate(p, &mut s, &mut es, it, settings, rank)?;
                    if pc.at(it) {
                        r.update(&st.positions, &mut *rank.comm)?;
                        p.set_positions(r.geometry())?;
                    }
                }
                engine::resident::sync_all(p, &mut s, &mut es)?;
                let centres: Vec<(usize, [f64; 2])> = r
                    .indices()
                    .iter()
                    .copied()
                    .zip(r.centres().iter().copied())
                    .collect();
                // bytes down from the device over the run, against one object-sized
                // download of the sums (24 B per field pixel)
                let down = (p.compute.bytes_moved()[1], 24 * s.object.data.len() as u64);
                let moved = r.rms_move_px;
                Ok((rank.plan.tile, s.object, s.probe, centres, moved, down))
            },
        )
    };
    let by_index = |v: &[(usize, [f64; 2])]| {
        let mut v = v.to_vec();
        v.sort_by_key(|c| c.0);
        v
    };
    for engine in ["gd", "mlcg"] {
        let one = run(engine, [1, 1], true).remove(0);
        let cpu = run(engine, [1, 1], false).remove(0);
        let (dob, dpr) = (
            common::rel_l2(&one.1.data, &cpu.1.data),
            common::rel_l2(&one.2, &cpu.2),
        );
        let dpos = by_index(&one.3)
            .iter()
            .zip(by_index(&cpu.3))
            .map(|(a, b)| {
                assert_eq!(a.0, b.0);
                (a.1[0] - b.1[0]).abs().max((a.1[1] - b.1[1]).abs())
            })
            .fold(0.0, f64::max);
        println!(
            "{engine}, position correction, 5 iterations: emulated vs cpu f32: object {dob:.1e}, probe {dpr:.1e}, positions {dpos:.1e} px (last move {:.3} px RMS)",
            one.4
        );
        assert!(one.4 > 1e-3, "{engine}: the positions did not move");
        if engine == "gd" {
            // gd kept the object and its sums on the device (the resident path): less came
            // down in 5 iterations than the object sums of one gradients call per
            // iteration (the probe sums, 24 K M² B per iteration, come down either way)
            let (down, one_call) = one.5;
            println!("gd: {down} B down in 5 iterations (one object-sized download: {one_call} B)");
            assert!(down < 5 * one_call, "gd did not run on the resident object");
        }
        assert!(
            dob < 1e-4 && dpr < 1e-4 && dpos < 1e-3,
            "{engine}: {dob:.2e} {dpr:.2e} {dpos:.2e}"
        );
        if engine != "gd" {
            // mlcg's line search sums the loss per rank: tiled runs differ in the last bits
            // (tests/position_correction.rs), on the CPU as here
            continue;
        }
        // the CPU's tiled run too, to tell a GPU defect from the data's own rounding
        for (label, emulated, single) in [("cpu", false, &cpu), ("emulated", true, &one)] {
            let (mut differ, mut probe_differ, mut centres) = (0usize, 0usize, Vec::new());
            for (tile, o, p, c, _, _) in run(engine, [2, 2], emulated) {
                probe_differ += p.iter().zip(&single.2).filter(|(a, b)| a != b).count();
                for y in tile.y0..tile.y1 {
                    for x in tile.x0..tile.x1 {
                        let at = |f: &Field<C>| {
                            f.data[(y - f.origin[0]) as usize * f.shape[1]
                                + (x - f.origin[1]) as usize]
                        };
                        differ += (at(&o).re.to_bits() != at(&single.1).re.to_bits()
                            || at(&o).im.to_bits() != at(&single.1).im.to_bits())
                            as usize;
                    }
                }
                centres.extend(c);
            }
            assert_eq!(
                centres.len(),
                single.3.len(),
                "{engine}, {label}: positions"
            );
            let dpos = by_index(&centres)
                .iter()
                .zip(by_index(&single.3))
                .map(|(a, b)| {
                    assert_eq!(a.0, b.0);
                    (a.1[0] - b.1[0]).abs().max((a.1[1] - b.1[1]).abs())
                })
                .fold(0.0, f64::max);
            println!("{engine}: {label} 2 x 2 tiles vs one rank: {differ} object pixels and {probe_differ} probe values differ, positions by {dpos:.1e} px");
            assert_eq!(
                (differ, probe_differ, dpos),
                (0, 0, 0.0),
                "{engine}, {label}: tiled != single rank"
            );
        }
    }
}

/// Run `body` on every rank of `toml` with `tiles` (that many thread ranks), engine
/// `engine`, the probe refined from iteration 0 and the settings `extra`, each rank's
/// backend replaced by the emulated GPU kernels if `emulated` (else the CPU's, f32); the
/// ranks' results in rank order. `body` gets the rank's problem, its starting state, the
/// rank and the engine settings.
fn on_ranks<R: Send>(
    toml: &std::path::Path,
    tiles: [usize; 2],
    engine: &str,
    extra: &[&str],
    emulated: bool,
    body: impl Fn(
            &mut ptytile::engine::Problem<f32>,
            ptytile::engine::State<f32>,
            &mut ptytile::engine::Rank,
            &ptytile::engine::Settings,
        ) -> ptytile::Result<R>
        + Sync,
) -> Vec<R> {
    use ptytile::comm::threads::run_threads;
    use ptytile::comm::Comm;
    use ptytile::config::Config;
    use ptytile::data::DataFile;
    use ptytile::driver;
    use ptytile::engine::{Decomposition, Rank, Settings};
    let ranks = tiles[0] * tiles[1];
    let mut set = vec![
        format!("parallel.ranks={ranks}"),
        format!("parallel.tiles=[{}, {}]", tiles[0], tiles[1]),
        "reconstruction.probe_update_start=0".into(),
        format!("reconstruction.engine=\"{engine}\""),
    ];
    set.extend(extra.iter().map(|e| e.to_string()));
    let cfg = Config::load(toml, &set).unwrap_or_else(|e| panic!("{e}"));
    let df = DataFile::open(&cfg).unwrap();
    let sel = driver::selection(&cfg, &df, None).unwrap();
    let plan = driver::job_plan(&cfg, &df, ranks, &sel).unwrap();
    let settings = Settings::from(&cfg);
    run_threads(ranks, |mut comm| {
        let rp = &plan.ranks[comm.rank()];
        let (mut p, s) = driver::setup(&cfg, &df, rp, &mut comm)?;
        if emulated {
            emulate(&mut p, emu::open().unwrap())?;
        }
        let mut rank = Rank::new(rp, &mut comm, Decomposition::Tiled);
        body(&mut p, s, &mut rank, &settings)
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A rank that owns no position (a tile without probe centres) runs dm like the others:
/// every pass and the probe sums over its empty range succeed on the CPU backend and on the
/// emulated GPU kernels, and it holds no exit waves.
#[test]
fn dm_on_a_rank_without_positions() {
    use ptytile::backend::kernel::DmStep;
    let c = case(32, 1, 1, NoiseModel::Poisson, false, 3);
    let empty: Arc<[PositionGeom<f32>]> = Vec::new().into();
    let mut backends: Vec<Box<dyn Compute<f32>>> = vec![backend::open(
        BackendKind::Cpu,
        &c.k,
        empty.clone(),
        Vec::new().into(),
        None,
    )
    .unwrap()];
    if let Ok(dev) = emu::open() {
        backends.push(Box::new(
            ptytile::backend::gpu::Gpu::new("emu", dev, &c.k, empty, Vec::new().into()).unwrap(),
        ));
    }
    let step = DmStep {
        beta: 1.0,
        gamma: 1.0,
        error_reduction: false,
    };
    for be in &backends {
        for init in [true, false, false] {
            let g = be
                .difference_map(&c.obj, &c.probe_hat, Selection::Range(0..0), init, step)
                .unwrap_or_else(|e| panic!("{}: {e}", be.name()));
            assert!(g.d_obj.data.iter().all(|d| *d == 0.0) && g.loss == 0.0);
        }
        let g = be.probe_sums(&c.obj, Selection::Range(0..0)).unwrap();
        assert!(g.d_probe.iter().all(|d| *d == 0.0));
        assert!(be.exit_waves().unwrap().is_empty());
    }
}
