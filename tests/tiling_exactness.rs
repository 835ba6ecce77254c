//! Tiling exactness (the promise of the gradient decomposition): for several tilings, with
//! thread ranks, the object and probe after 10 iterations equal the 1-rank result (f32, to
//! 1e-5 relative; in practice bit for bit) for the gd, dm and mlcg engines and a dm → mlcg
//! schedule, and the summed gradient equals the single-rank gradient to 1e-12 in f64.
//! Tiles smaller than the probe window included.

use num_complex::{Complex32, Complex64};
use ptytile::backend::kernel::Kernel;
use ptytile::comm::{run_threads, Comm};
use ptytile::config::{BackendKind, Config, NoiseModel};
use ptytile::driver;
use ptytile::engine::gd::{self, Decomposition, Problem, Rank, State};
use ptytile::output::ReconResult;
use ptytile::physics::fft::Fft2;
use ptytile::physics::model::{Field, PositionGeom};
use ptytile::simulate::{simulate, write, SimParams};
use ptytile::tiling;

fn params() -> SimParams {
    // 14×14 positions, step 2.5 px, 32-px window: object ~ 70 px; 8×8 tiles are ~5 px wide,
    // much smaller than the window, so each halo spans many owners
    SimParams {
        m: 32,
        scan: [14, 14],
        step_px: 2.5,
        jitter_px: 0.4,
        semiangle_mrad: 30.0,
        pixel_size_m: 0.25e-10,
        dose: Some(1e5),
        seed: 7,
        ..Default::default()
    }
}

fn dataset() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = params();
    let (_, cfg) = write(&dir.path().join("sim.h5"), &simulate(&p).unwrap(), &p).unwrap();
    (dir, cfg)
}

fn recon(cfg: &std::path::Path, tiles: [usize; 2], mode: &str) -> ReconResult {
    recon_with(cfg, tiles, mode, &["reconstruction.iterations=10".into()])
}

fn recon_with(
    cfg: &std::path::Path,
    tiles: [usize; 2],
    mode: &str,
    extra: &[String],
) -> ReconResult {
    let ranks = tiles[0] * tiles[1];
    let mut set = vec![
        format!("parallel.ranks={ranks}"),
        format!("parallel.tiles=[{}, {}]", tiles[0], tiles[1]),
        format!("parallel.mode=\"{mode}\""),
    ];
    set.extend_from_slice(extra);
    let c = Config::load(cfg, &set).unwrap();
    driver::run(&c, &|_, _, _, _| {}).unwrap().unwrap()
}

fn rel(a: &[Complex32], b: &[Complex32]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).norm_sqr() as f64)
        .sum();
    let n: f64 = a.iter().map(|x| x.norm_sqr() as f64).sum();
    (d / n).sqrt()
}

/// Every tiling (and the replicated mode on 2×2) gives the 1-rank object and probe after
/// the 10 iterations set by the config `cfg` and `extra`.
fn assert_tiling_exact(cfg: &std::path::Path, extra: &[String]) {
    let one = recon_with(cfg, [1, 1], "tiled", extra);
    assert_eq!(one.loss.len(), 10);
    assert!(
        one.loss[9] < 0.5 * one.loss[0],
        "{extra:?} does not converge: {:?}",
        one.loss
    );
    let runs = [[1, 2], [2, 2], [3, 2], [4, 4], [8, 8]]
        .map(|t| (t, "tiled"))
        .into_iter()
        .chain([([2, 2], "replicated")]);
    for (tiles, mode) in runs {
        let r = recon_with(cfg, tiles, mode, extra);
        let (eo, ep) = (
            rel(&r.object.data, &one.object.data),
            rel(&r.probe, &one.probe),
        );
        eprintln!(
            "{extra:?} {mode} {tiles:?}: object {eo:.2e}, probe {ep:.2e}, loss {:.6e} vs {:.6e}",
            r.loss[9], one.loss[9]
        );
        assert!(
            eo <= 1e-5 && ep <= 1e-5,
            "{extra:?} {mode} {tiles:?}: object {eo}, probe {ep}"
        );
        assert!(((r.loss[9] - one.loss[9]) / one.loss[9]).abs() < 1e-6);
    }
}

fn engine_is_tiling_exact(extra: &[String]) {
    let (_dir, cfg) = dataset();
    assert_tiling_exact(&cfg, extra);
}

#[test]
fn dm_tiled_equals_single_rank_threads() {
    engine_is_tiling_exact(&[
        "reconstruction.engine=\"dm\"".into(),
        "reconstruction.iterations=10".into(),
        "dm.beta=0.8".into(),
    ]);
}

#[test]
fn mlcg_tiled_equals_single_rank_threads() {
    engine_is_tiling_exact(&[
        "reconstruction.engine=\"mlcg\"".into(),
        "reconstruction.iterations=10".into(),
    ]);
}

#[test]
fn mlcg_dai_yuan_amplitude_tiled_equals_single_rank_threads() {
    engine_is_tiling_exact(&[
        "reconstruction.engine=\"mlcg\"".into(),
        "reconstruction.iterations=10".into(),
        "mlcg.direction=\"dai-yuan\"".into(),
        "reconstruction.noise_model=\"amplitude\"".into(),
    ]);
}

/// A schedule (4 dm, then 6 mlcg) is as exact as its stages.
#[test]
fn schedule_tiled_equals_single_rank_threads() {
    let (_dir, cfg) = dataset();
    let text = std::fs::read_to_string(&cfg).unwrap().replace("iterations = 20\n", "")
        + "\n[[schedule]]\nengine = \"dm\"\niterations = 4\n\n[[schedule]]\nengine = \"mlcg\"\niterations = 6\n";
    let sched = cfg.with_file_name("schedule.toml");
    std::fs::write(&sched, text).unwrap();
    assert_tiling_exact(&sched, &[]);
}

#[test]
fn tiled_equals_single_rank_threads() {
    let (_dir, cfg) = dataset();
    let one = recon(&cfg, [1, 1], "tiled");
    assert!(one.loss[9] < one.loss[0]);
    for tiles in [[1, 2], [2, 2], [3, 2], [4, 4], [8, 8]] {
        let r = recon(&cfg, tiles, "tiled");
        let (eo, ep) = (
            rel(&r.object.data, &one.object.data),
            rel(&r.probe, &one.probe),
        );
        eprintln!(
            "tiles {tiles:?}: object {eo:.2e}, probe {ep:.2e}, loss {:.6e} vs {:.6e}",
            r.loss[9], one.loss[9]
        );
        assert!(
            eo <= 1e-5 && ep <= 1e-5,
            "tiles {tiles:?}: object {eo}, probe {ep}"
        );
        assert!(((r.loss[9] - one.loss[9]) / one.loss[9]).abs() < 1e-9);
    }
}

#[test]
fn replicated_equals_single_rank_threads() {
    let (_dir, cfg) = dataset();
    let one = recon(&cfg, [1, 1], "tiled");
    let r = recon(&cfg, [2, 2], "replicated");
    let (eo, ep) = (
        rel(&r.object.data, &one.object.data),
        rel(&r.probe, &one.probe),
    );
    assert!(
        eo <= 1e-5 && ep <= 1e-5,
        "replicated: object {eo}, probe {ep}"
    );
}

/// f64: the complete sums on every rank's tile (after the halo exchange) equal the
/// single-rank gradient to 1e-12 relative, probe gradient and loss too.
#[test]
fn tiled_gradient_equals_serial_f64() {
    let p = params();
    let sim = simulate(&p).unwrap();
    let m = p.m;
    let (centres, shape) = ptytile::data::object_grid(&sim.positions_px, m).unwrap();
    let mm = m * m;
    // kernel layout intensities
    let meas: Vec<f32> = sim
        .intensities
        .chunks(mm)
        .flat_map(|pat| {
            let mut o = vec![0f32; mm];
            ptytile::data::to_kernel_layout(pat, m, ptytile::config::ZeroFrequency::Center, &mut o);
            o
        })
        .collect();
    let total: f64 = meas.iter().map(|v| *v as f64).sum::<f64>() / centres.len() as f64;
    let probe: Vec<Complex64> = ptytile::physics::probe::form_probe(&sim.experiment, total)
        .unwrap()
        .iter()
        .map(|z| Complex64::new(z.re as f64, z.im as f64))
        .collect();
    // a non-trivial object: the truth, slightly perturbed
    let obj_at = |y: i64, x: i64| -> Complex64 {
        let t = sim.object.data[(y as usize).min(sim.object.shape[0] - 1) * sim.object.shape[1]
            + (x as usize).min(sim.object.shape[1] - 1)];
        Complex64::new(t.re as f64, t.im as f64)
            * Complex64::from_polar(1.0, 0.01 * ((y * 7 + x * 3) % 11) as f64)
    };
    let run = |tiles: [usize; 2]| -> (Vec<Complex64>, Vec<f64>, Vec<Complex64>, f64) {
        let plan = tiling::plan(&centres, m, shape, tiles).unwrap();
        let outs = run_threads(plan.n_ranks(), |mut c| {
            let rp = &plan.ranks[c.rank()];
            let positions: Vec<PositionGeom<f64>> = rp
                .positions
                .iter()
                .map(|&j| PositionGeom::new(j, centres[j], m))
                .collect();
            let intensities: Vec<f32> = rp
                .positions
                .iter()
                .flat_map(|&j| meas[j * mm..(j + 1) * mm].iter().copied())
                .collect();
            let kernel = Kernel {
                fft: Fft2::new(m),
                modes: 1,
                noise: NoiseModel::Poisson,
                eps: 1e-9,
                weights: None,
                propagator: Vec::new(),
            };
            let problem = Problem::new(
                kernel,
                positions,
                rp.n_halo_positions,
                intensities,
                BackendKind::Cpu,
                None,
            )
            .unwrap();
            let f = rp.field;
            let mut object = Field::filled(f.origin(), f.shape(), Complex64::default());
            for y in f.y0..f.y1 {
                for x in f.x0..f.x1 {
                    object.data[((y - f.y0) as usize) * f.shape()[1] + (x - f.x0) as usize] =
                        obj_at(y, x);
                }
            }
            let s = State {
                object,
                probe: probe.clone(),
            };
            let mut st = Default::default();
            let mut rank = Rank::new(rp, &mut c, Decomposition::Tiled);
            let g = gd::sum_gradients(&problem, &s, 0, 1, true, false, true, &mut rank, &mut st)?;
            Ok((
                rp.tile,
                gd::extract(&g.g_obj, &rp.tile),
                gd::extract(&g.d_obj, &rp.tile),
                g.g_probe_hat,
                g.loss,
            ))
        })
        .unwrap();
        let mut go = vec![Complex64::default(); shape[0] * shape[1]];
        let mut dobj = vec![0.0; shape[0] * shape[1]];
        for (t, gv, dv, _, _) in &outs {
            let mut gf = Field {
                origin: [0, 0],
                shape,
                data: go,
            };
            gd::write_rect(&mut gf, t, gv);
            go = gf.data;
            let mut df = Field {
                origin: [0, 0],
                shape,
                data: dobj,
            };
            gd::write_rect(&mut df, t, dv);
            dobj = df.data;
        }
        (go, dobj, outs[0].3.clone(), outs[0].4)
    };
    let (g1, d1, p1, l1) = run([1, 1]);
    let norm = |v: &[Complex64]| v.iter().map(|z| z.norm_sqr()).sum::<f64>().sqrt();
    for tiles in [[1, 2], [2, 2], [3, 2], [4, 4], [8, 8]] {
        let (g, d, pg, l) = run(tiles);
        let eg = norm(&g.iter().zip(&g1).map(|(a, b)| a - b).collect::<Vec<_>>()) / norm(&g1);
        let ed = d
            .iter()
            .zip(&d1)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
            / d1.iter().cloned().fold(0.0, f64::max);
        let ep = norm(&pg.iter().zip(&p1).map(|(a, b)| a - b).collect::<Vec<_>>()) / norm(&p1);
        eprintln!("f64 tiles {tiles:?}: object gradient {eg:.2e}, preconditioner {ed:.2e}, probe gradient {ep:.2e}");
        assert!(
            eg <= 1e-12 && ed <= 1e-12 && ep <= 1e-12,
            "tiles {tiles:?}: {eg} {ed} {ep}"
        );
        assert!(((l - l1) / l1).abs() <= 1e-12);
    }
}

/// A rank whose probe window is larger than its tile still gets every contribution.
#[test]
fn tiles_smaller_than_window_are_used() {
    let p = params();
    let sim = simulate(&p).unwrap();
    let (centres, shape) = ptytile::data::object_grid(&sim.positions_px, p.m).unwrap();
    let plan = tiling::plan(&centres, p.m, shape, [8, 8]).unwrap();
    let smallest = plan
        .ranks
        .iter()
        .map(|r| r.tile.shape()[0].min(r.tile.shape()[1]))
        .min()
        .unwrap();
    assert!(
        smallest < p.m / 2,
        "smallest tile {smallest} px vs window {}",
        p.m
    );
    assert!(
        plan.ranks.iter().map(|r| r.sends.len()).max().unwrap() > 8,
        "halos span more than 8 neighbours"
    );
}
