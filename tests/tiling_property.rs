//! Property test of the tiling promise (issue "Exact at any scale"): for random scans —
//! rasters with arbitrary step and sub-pixel origin (rows share their y-shift, so the
//! shared y-half path and its cut by tile boundaries are exercised), Fermat spirals and
//! jittered rasters — random tilings of up to 16 thread ranks, a random engine (gd, dm,
//! mlcg: the engines whose updates are sums over positions) and noise model, the object and
//! probe after 3 iterations equal the 1-rank result to 1e-6 relative.

mod common;

use proptest::prelude::*;
use ptytile::simulate::{simulate, write, SimParams};

/// Number of scan positions of every case (the simulated counts are reused for each scan).
const N: usize = 49;

#[derive(Debug, Clone)]
enum Scan {
    /// Step (px) and sub-pixel origin (y, x).
    Raster { step: f64, origin: [f64; 2] },
    /// Radial scale c (px): r_j = c √j, θ_j = j × the golden angle.
    Fermat { c: f64, origin: [f64; 2] },
    /// Raster with uniform jitter ± `jitter` px from a seed.
    Jittered { step: f64, jitter: f64, seed: u64 },
}

impl Scan {
    /// Probe centres (y, x) in px, all ≥ 0.
    fn centres(&self) -> Vec<[f64; 2]> {
        let side = (N as f64).sqrt() as usize;
        match *self {
            Scan::Raster { step, origin } => (0..N)
                .map(|j| {
                    [
                        origin[0] + (j / side) as f64 * step,
                        origin[1] + (j % side) as f64 * step,
                    ]
                })
                .collect(),
            Scan::Fermat { c, origin } => {
                let golden = std::f64::consts::PI * (3.0 - 5f64.sqrt());
                let r_max = c * (N as f64).sqrt();
                (0..N)
                    .map(|j| {
                        let (r, t) = (c * (j as f64).sqrt(), j as f64 * golden);
                        [
                            origin[0] + r_max + r * t.sin(),
                            origin[1] + r_max + r * t.cos(),
                        ]
                    })
                    .collect()
            }
            Scan::Jittered { step, jitter, seed } => {
                let mut s = seed;
                let mut u = || {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
                };
                (0..N)
                    .map(|j| {
                        [
                            jitter + (j / side) as f64 * step + jitter * u(),
                            jitter + (j % side) as f64 * step + jitter * u(),
                        ]
                    })
                    .collect()
            }
        }
    }
}

fn scan() -> impl Strategy<Value = Scan> {
    prop_oneof![
        (1.3f64..4.0, 0.0f64..1.0, 0.0f64..1.0).prop_map(|(step, y, x)| Scan::Raster {
            step,
            origin: [y, x]
        }),
        (0.8f64..2.5, 0.0f64..1.0, 0.0f64..1.0)
            .prop_map(|(c, y, x)| Scan::Fermat { c, origin: [y, x] }),
        (1.5f64..4.0, 0.05f64..1.0, any::<u64>()).prop_map(|(step, jitter, seed)| Scan::Jittered {
            step,
            jitter,
            seed
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn tiled_equals_single_rank_on_random_scans(
        scan in scan(),
        tiles in (1usize..=4, 1usize..=4),
        engine in prop::sample::select(vec!["gd", "dm", "mlcg"]),
        noise in prop::sample::select(vec!["poisson", "amplitude"]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = SimParams { m: 32, scan: [7, 7], step_px: 2.5, jitter_px: 0.0, semiangle_mrad: 30.0, pixel_size_m: 0.25e-10, dose: Some(1e4), seed: 3, ..Default::default() };
        let (h5, cfg) = write(&dir.path().join("sim.h5"), &simulate(&p).unwrap(), &p).unwrap();
        // the same counts, measured at this case's scan positions
        let c: Vec<f64> = scan.centres().iter().flat_map(|c| [c[0], c[1]]).collect();
        hdf5::File::open_rw(&h5).unwrap().dataset("/data/positions_px").unwrap().write_raw(&c).unwrap();
        let set = vec![format!("reconstruction.engine=\"{engine}\""), format!("reconstruction.noise_model=\"{noise}\""), "reconstruction.iterations=3".into(), "dm.er_iterations=1".into()];
        let one = common::recon_tiles(&cfg, [1, 1], &set);
        let tiled = common::recon_tiles(&cfg, [tiles.0, tiles.1], &set);
        let (eo, ep) = (common::rel_l2(&tiled.object.data, &one.object.data), common::rel_l2(&tiled.probe, &one.probe));
        eprintln!("{scan:?} tiles {tiles:?} {engine} {noise}: object {eo:.2e}, probe {ep:.2e}, loss {:.4e} → {:.4e}", one.loss[0], one.loss[2]);
        prop_assert!(eo <= 1e-6 && ep <= 1e-6, "{scan:?} tiles {tiles:?} {engine} {noise}: object {eo:.2e}, probe {ep:.2e}");
    }
}
