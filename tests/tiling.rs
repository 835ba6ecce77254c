//! Tiling geometry (`ptytile::tiling`): partition, ownership, halo-first order, exchange
//! symmetry, and — the point of the module — exactness of the simulated gradient exchange
//! and object refresh for many tilings, including tiles smaller than the probe window.

use std::collections::HashMap;

use ptytile::data::object_grid;
use ptytile::physics::model::placement;
use ptytile::tiling::{plan, tiles_for, Rect, TilePlan};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A `n × n` raster of step `step` px with uniform jitter of ±0.3 px, mapped onto the object
/// grid as `data::object_grid` does. Returns (centres, object shape).
fn raster(n: usize, step: f64, m: usize, seed: u64) -> (Vec<[f64; 2]>, [usize; 2]) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut px = Vec::with_capacity(n * n);
    for i in 0..n {
        for k in 0..n {
            let jy: f64 = rng.random_range(-0.3..0.3);
            let jx: f64 = rng.random_range(-0.3..0.3);
            px.push([i as f64 * step + jy, k as f64 * step + jx]);
        }
    }
    object_grid(&px, m).unwrap()
}

/// The 40×40 raster, step 2.2 px, M = 32.
fn small() -> (Vec<[f64; 2]>, [usize; 2], usize) {
    let (c, s) = raster(40, 2.2, 32, 7);
    (c, s, 32)
}

/// The PbTiO3-like 58×58 raster, step 2.2069 px, M = 128.
fn pbtio3() -> (Vec<[f64; 2]>, [usize; 2], usize) {
    let (c, s) = raster(58, 2.2069, 128, 11);
    (c, s, 128)
}

const TILINGS: [[usize; 2]; 6] = [[1, 1], [1, 2], [2, 2], [3, 2], [4, 4], [8, 8]];

/// The tilings to check on a data set: the list above plus 16×16 (tiles far smaller than
/// the window on both data sets).
fn tilings() -> Vec<[usize; 2]> {
    let mut t = TILINGS.to_vec();
    t.push([16, 16]);
    t
}

fn window(c: [f64; 2], m: usize) -> Rect {
    Rect::from_origin_shape(placement(c, m).0, [m, m])
}

/// Deterministic value in [−1, 1) for (position j, pixel i) — a "random" gradient patch
/// that need not be stored (3364 × 128² f64 would be 440 MB).
fn patch(seed: u64, j: usize, i: usize) -> f64 {
    let mut z = seed ^ ((j as u64) << 24) ^ (i as u64);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// A buffer over a rectangle of global pixels (row-major).
struct Buf {
    rect: Rect,
    data: Vec<f64>,
}

impl Buf {
    fn new(rect: Rect, v: f64) -> Buf {
        Buf {
            rect,
            data: vec![v; rect.area()],
        }
    }
    fn idx(&self, y: i64, x: i64) -> usize {
        assert!(
            self.rect.contains(y, x),
            "pixel ({y}, {x}) outside {:?}",
            self.rect
        );
        ((y - self.rect.y0) as usize) * self.rect.shape()[1] + (x - self.rect.x0) as usize
    }
    /// Add the M×M patch of position j at window `w`.
    fn add_patch(&mut self, seed: u64, j: usize, w: Rect, m: usize) {
        for a in 0..m {
            let row = self.idx(w.y0 + a as i64, w.x0);
            for b in 0..m {
                self.data[row + b] += patch(seed, j, a * m + b);
            }
        }
    }
    fn extract(&self, r: Rect) -> Vec<f64> {
        let mut out = Vec::with_capacity(r.area());
        for y in r.y0..r.y1 {
            let i = self.idx(y, r.x0);
            out.extend_from_slice(&self.data[i..i + (r.x1 - r.x0) as usize]);
        }
        out
    }
    fn apply(&mut self, r: Rect, v: &[f64], add: bool) {
        assert_eq!(v.len(), r.area());
        let w = (r.x1 - r.x0) as usize;
        for (k, y) in (r.y0..r.y1).enumerate() {
            let i = self.idx(y, r.x0);
            for (d, s) in self.data[i..i + w].iter_mut().zip(&v[k * w..(k + 1) * w]) {
                if add {
                    *d += s
                } else {
                    *d = *s
                }
            }
        }
    }
}

/// Every structural property of test 1, for one plan.
fn check_structure(p: &TilePlan, centres: &[[f64; 2]], m: usize, shape: [usize; 2]) {
    let [ty, tx] = p.tiles;
    assert_eq!(p.ranks.len(), ty * tx);
    assert_eq!(
        p.object,
        Rect {
            y0: 0,
            y1: shape[0] as i64,
            x0: 0,
            x1: shape[1] as i64
        }
    );
    // Tiles partition the object: every pixel owned exactly once, and the grid layout holds.
    let mut owners = vec![0u32; shape[0] * shape[1]];
    for (r, rp) in p.ranks.iter().enumerate() {
        assert_eq!(rp.rank, r);
        assert!(!rp.tile.is_empty(), "rank {r} has an empty tile");
        let (a, b) = (r / tx, r % tx);
        assert_eq!(
            rp.tile,
            Rect {
                y0: p.cuts[0][a],
                y1: p.cuts[0][a + 1],
                x0: p.cuts[1][b],
                x1: p.cuts[1][b + 1]
            }
        );
        for y in rp.tile.y0..rp.tile.y1 {
            for x in rp.tile.x0..rp.tile.x1 {
                owners[y as usize * shape[1] + x as usize] += 1;
                assert_eq!(p.owner_of_pixel(y, x), Some(r));
            }
        }
    }
    assert!(
        owners.iter().all(|&c| c == 1),
        "tiles do not partition the object"
    );
    // Every position owned by exactly one rank, the one whose tile holds floor(centre).
    let mut owner_of = vec![usize::MAX; centres.len()];
    for rp in &p.ranks {
        for &j in &rp.positions {
            assert_eq!(owner_of[j], usize::MAX, "position {j} owned twice");
            owner_of[j] = rp.rank;
            let c = centres[j];
            assert!(rp.tile.contains(c[0].floor() as i64, c[1].floor() as i64));
        }
    }
    assert!(
        owner_of.iter().all(|&o| o != usize::MAX),
        "a position has no owner"
    );
    for rp in &p.ranks {
        // Windows inside the field; field = tile ∪ bbox(windows), inside the object.
        let mut bbox = rp.tile;
        for &j in &rp.positions {
            let w = window(centres[j], m);
            assert!(rp.field.contains_rect(&w));
            bbox = bbox.union_bbox(&w);
        }
        assert_eq!(rp.field, bbox);
        assert!(p.object.contains_rect(&rp.field));
        // Halo first, each group ascending.
        let (halo, interior) = rp.positions.split_at(rp.n_halo_positions);
        assert!(halo
            .iter()
            .all(|&j| !rp.tile.contains_rect(&window(centres[j], m))));
        assert!(interior
            .iter()
            .all(|&j| rp.tile.contains_rect(&window(centres[j], m))));
        assert!(halo.windows(2).all(|w| w[0] < w[1]));
        assert!(interior.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(rp.halo_positions(), halo);
        assert_eq!(rp.interior_positions(), interior);
        assert_eq!(rp.field_pixels(), rp.field.area());
    }
    assert_eq!(
        p.max_field_pixels(),
        p.ranks.iter().map(|r| r.field.area()).max().unwrap()
    );
}

/// Test 2: r sends R to q ⇔ q receives R from r; sorted, no self, non-empty; the sends
/// cover exactly field \ tile.
fn check_symmetry(p: &TilePlan) {
    for rp in &p.ranks {
        for list in [&rp.sends, &rp.recvs] {
            assert!(
                list.windows(2).all(|w| w[0].peer < w[1].peer),
                "not sorted by peer"
            );
            assert!(list.iter().all(|t| t.peer != rp.rank && !t.rect.is_empty()));
        }
        for s in &rp.sends {
            assert_eq!(s.rect, rp.field.intersect(&p.ranks[s.peer].tile).unwrap());
            let back: Vec<_> = p.ranks[s.peer]
                .recvs
                .iter()
                .filter(|t| t.peer == rp.rank)
                .collect();
            assert_eq!(back.len(), 1);
            assert_eq!(back[0].rect, s.rect);
        }
        for t in &rp.recvs {
            assert_eq!(t.rect, p.ranks[t.peer].field.intersect(&rp.tile).unwrap());
            assert!(p.ranks[t.peer]
                .sends
                .iter()
                .any(|s| s.peer == rp.rank && s.rect == t.rect));
        }
        // Geometry, not a stencil: every other rank whose tile meets the field is a peer.
        let expect: Vec<usize> = p
            .ranks
            .iter()
            .filter(|q| q.rank != rp.rank && q.tile.intersect(&rp.field).is_some())
            .map(|q| q.rank)
            .collect();
        assert_eq!(rp.sends.iter().map(|t| t.peer).collect::<Vec<_>>(), expect);
        let covered: usize = rp.sends.iter().map(|t| t.rect.area()).sum::<usize>() + rp.tile.area();
        assert_eq!(covered, rp.field.area());
    }
}

/// Test 3: the summed, exchanged tiles equal the global sum; the object refresh fills each
/// field with the global object. Returns the relative error of the sum.
fn check_exchange(p: &TilePlan, centres: &[[f64; 2]], m: usize, global: &Buf, seed: u64) -> f64 {
    // Gradient direction: sum own patches over the field, send halo parts to owners.
    let fields: Vec<Buf> = p
        .ranks
        .iter()
        .map(|rp| {
            let mut b = Buf::new(rp.field, 0.0);
            for &j in &rp.positions {
                b.add_patch(seed, j, window(centres[j], m), m);
            }
            b
        })
        .collect();
    let mut msgs: HashMap<(usize, usize), Vec<f64>> = HashMap::new();
    for rp in &p.ranks {
        for s in &rp.sends {
            assert!(msgs
                .insert((rp.rank, s.peer), fields[rp.rank].extract(s.rect))
                .is_none());
        }
    }
    let mut scale = 0f64;
    let mut err = 0f64;
    for rp in &p.ranks {
        let mut tile = Buf::new(rp.tile, 0.0);
        tile.apply(rp.tile, &fields[rp.rank].extract(rp.tile), false);
        for t in &rp.recvs {
            let v = msgs
                .remove(&(t.peer, rp.rank))
                .expect("message from a peer with no send");
            tile.apply(t.rect, &v, true);
        }
        for y in rp.tile.y0..rp.tile.y1 {
            for x in rp.tile.x0..rp.tile.x1 {
                let g = global.data[global.idx(y, x)];
                scale = scale.max(g.abs());
                err = err.max((tile.data[tile.idx(y, x)] - g).abs());
            }
        }
    }
    assert!(msgs.is_empty(), "{} messages never received", msgs.len());
    let rel = err / scale;
    assert!(
        rel <= 1e-12,
        "tiles {:?}: tiled sum differs from the global sum by {rel:.3e} (relative)",
        p.tiles
    );

    // Object direction: owners send their recvs rects back; ranks fill their sends rects.
    let object = |y: i64, x: i64| patch(seed ^ 0xABCD, 0, (y as usize) << 20 | x as usize);
    let tiles: Vec<Buf> = p
        .ranks
        .iter()
        .map(|rp| {
            let mut b = Buf::new(rp.tile, 0.0);
            for y in rp.tile.y0..rp.tile.y1 {
                for x in rp.tile.x0..rp.tile.x1 {
                    let i = b.idx(y, x);
                    b.data[i] = object(y, x);
                }
            }
            b
        })
        .collect();
    let mut msgs: HashMap<(usize, usize), Vec<f64>> = HashMap::new();
    for rp in &p.ranks {
        for t in &rp.recvs {
            msgs.insert((rp.rank, t.peer), tiles[rp.rank].extract(t.rect));
        }
    }
    for rp in &p.ranks {
        let mut f = Buf::new(rp.field, f64::NAN);
        f.apply(rp.tile, &tiles[rp.rank].data, false);
        for s in &rp.sends {
            f.apply(s.rect, &msgs.remove(&(s.peer, rp.rank)).unwrap(), false);
        }
        for y in rp.field.y0..rp.field.y1 {
            for x in rp.field.x0..rp.field.x1 {
                assert_eq!(
                    f.data[f.idx(y, x)].to_bits(),
                    object(y, x).to_bits(),
                    "rank {} field pixel ({y}, {x})",
                    rp.rank
                );
            }
        }
    }
    assert!(msgs.is_empty());
    rel
}

fn global_sum(centres: &[[f64; 2]], m: usize, shape: [usize; 2], seed: u64) -> Buf {
    let mut g = Buf::new(
        Rect {
            y0: 0,
            y1: shape[0] as i64,
            x0: 0,
            x1: shape[1] as i64,
        },
        0.0,
    );
    for (j, c) in centres.iter().enumerate() {
        g.add_patch(seed, j, window(*c, m), m);
    }
    g
}

fn summary(p: &TilePlan) -> String {
    let counts: Vec<usize> = p.ranks.iter().map(|r| r.positions.len()).collect();
    let max_peers = p
        .ranks
        .iter()
        .map(|r| r.sends.len().max(r.recvs.len()))
        .max()
        .unwrap();
    format!(
        "tiles {:?}: positions/rank min {} max {}, max field {} px, max peers {}",
        p.tiles,
        counts.iter().min().unwrap(),
        counts.iter().max().unwrap(),
        p.max_field_pixels(),
        max_peers
    )
}

#[test]
fn structure_small_raster_all_tilings() {
    let (c, shape, m) = small();
    for t in tilings() {
        let p = plan(&c, m, shape, t).unwrap();
        check_structure(&p, &c, m, shape);
        eprintln!("M={m} object {shape:?} {}", summary(&p));
    }
}

#[test]
fn structure_pbtio3_raster_all_tilings() {
    let (c, shape, m) = pbtio3();
    for t in tilings() {
        let p = plan(&c, m, shape, t).unwrap();
        check_structure(&p, &c, m, shape);
        eprintln!("M={m} object {shape:?} {}", summary(&p));
    }
}

#[test]
fn exchange_lists_are_symmetric() {
    for (c, shape, m) in [small(), pbtio3()] {
        for t in tilings() {
            check_symmetry(&plan(&c, m, shape, t).unwrap());
        }
    }
}

#[test]
fn tiles_smaller_than_window_talk_to_many_peers() {
    // 16×16 tiles with M = 32 on the 40×40 raster: tiles are ~5–8 px across, so a halo
    // spans several owners per direction — far beyond an 8-neighbour stencil.
    let (c, shape, m) = small();
    let p = plan(&c, m, shape, [16, 16]).unwrap();
    for rp in &p.ranks {
        let (ty, tx) = (rp.rank / 16, rp.rank % 16);
        if (1..15).contains(&ty) && (1..15).contains(&tx) {
            let s = rp.tile.shape();
            assert!(s[0] < m && s[1] < m, "rank {} tile {s:?}", rp.rank);
        }
    }
    let max_peers = p.ranks.iter().map(|r| r.sends.len()).max().unwrap();
    assert!(max_peers > 8, "max peers {max_peers}");
    eprintln!("{}", summary(&p));
}

#[test]
fn simulated_exchange_is_exact_small() {
    let (c, shape, m) = small();
    let seed = 1;
    let g = global_sum(&c, m, shape, seed);
    for t in tilings() {
        let p = plan(&c, m, shape, t).unwrap();
        let rel = check_exchange(&p, &c, m, &g, seed);
        eprintln!("M={m} tiles {t:?}: relative error {rel:.2e}");
    }
}

#[test]
fn simulated_exchange_is_exact_pbtio3() {
    let (c, shape, m) = pbtio3();
    let seed = 2;
    let g = global_sum(&c, m, shape, seed);
    for t in tilings() {
        let p = plan(&c, m, shape, t).unwrap();
        let rel = check_exchange(&p, &c, m, &g, seed);
        eprintln!("M={m} tiles {t:?}: relative error {rel:.2e}");
    }
}

#[test]
fn one_tile_is_the_serial_case() {
    let (c, shape, m) = small();
    let p = plan(&c, m, shape, [1, 1]).unwrap();
    assert_eq!(p.ranks.len(), 1);
    let r = &p.ranks[0];
    assert_eq!(r.tile, p.object);
    assert_eq!(r.field, p.object);
    assert!(r.sends.is_empty() && r.recvs.is_empty());
    assert_eq!(r.positions, (0..c.len()).collect::<Vec<_>>());
    assert_eq!(r.n_halo_positions, 0);
    assert_eq!(p.max_field_pixels(), shape[0] * shape[1]);
}

#[test]
fn plan_is_deterministic() {
    let (c, shape, m) = pbtio3();
    for t in tilings() {
        assert_eq!(
            plan(&c, m, shape, t).unwrap(),
            plan(&c, m, shape, t).unwrap()
        );
    }
}

#[test]
fn tiles_for_factorisations() {
    let sq = [300, 300];
    assert_eq!(tiles_for(1, sq), [1, 1]);
    assert_eq!(tiles_for(2, sq), [1, 2]);
    assert_eq!(tiles_for(4, sq), [2, 2]);
    assert_eq!(tiles_for(6, sq), [2, 3]);
    assert_eq!(tiles_for(7, sq), [1, 7]);
    assert_eq!(tiles_for(16, sq), [4, 4]);
    assert_eq!(tiles_for(12, sq), [3, 4]);
    assert_eq!(tiles_for(4158, sq), [63, 66]);
    // Aspect ratio followed: a wide object gets more columns, a tall one more rows.
    assert_eq!(tiles_for(8, [100, 200]), [2, 4]);
    assert_eq!(tiles_for(12, [300, 100]), [6, 2]);
    assert_eq!(tiles_for(2, [300, 100]), [2, 1]);
    // A 1-pixel-high object cannot take 2 tile rows.
    assert_eq!(tiles_for(4, [1, 100]), [1, 4]);
    assert_eq!(tiles_for(0, sq), [0, 0]);
}

#[test]
fn error_cases() {
    let (c, shape, m) = small();
    for t in [[0, 1], [1, 0], [0, 0], [shape[0] + 1, 1], [1, shape[1] + 1]] {
        let e = plan(&c, m, shape, t).unwrap_err();
        assert_eq!(e.what, "parallel.tiles", "{t:?}: {e}");
    }
    assert!(plan(&c, m, shape, tiles_for(0, shape)).is_err());
    // As many tiles as pixels is allowed (1-pixel tiles).
    let p = plan(&c, m, shape, [shape[0], 1]).unwrap();
    assert!(p.ranks.iter().all(|r| r.tile.shape()[0] == 1));
    // A window leaving the object, and a non-finite centre.
    assert_eq!(
        plan(&[[1.0, 50.0]], m, shape, [1, 1]).unwrap_err().what,
        "parallel.tiles"
    );
    assert_eq!(
        plan(&[[f64::NAN, 50.0]], m, shape, [1, 1])
            .unwrap_err()
            .what,
        "parallel.tiles"
    );
    // No positions at all: every field is its tile, no transfers.
    let p = plan(&[], m, shape, [3, 2]).unwrap();
    assert!(p
        .ranks
        .iter()
        .all(|r| r.field == r.tile && r.sends.is_empty() && r.positions.is_empty()));
}

#[test]
fn balance_pbtio3_16_ranks() {
    // Measurement bytes per rank ∝ positions per rank: must be ≤ 1.1 × total / 16.
    let (c, shape, m) = pbtio3();
    assert_eq!(c.len(), 3364);
    let t = tiles_for(16, shape);
    assert_eq!(t, [4, 4]);
    let p = plan(&c, m, shape, t).unwrap();
    let counts: Vec<usize> = p.ranks.iter().map(|r| r.positions.len()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 3364);
    let max = *counts.iter().max().unwrap();
    eprintln!(
        "object {shape:?}, cuts {:?}, positions per rank {counts:?}, max field {} px",
        p.cuts,
        p.max_field_pixels()
    );
    assert!(
        max as f64 <= 1.1 * 3364.0 / 16.0,
        "max {max} positions on a rank"
    );
    // The small raster balances too.
    let (c, shape, m) = small();
    let p = plan(&c, m, shape, [4, 4]).unwrap();
    assert!(
        p.max_positions() as f64 <= 1.1 * c.len() as f64 / 16.0,
        "{}",
        summary(&p)
    );
}
