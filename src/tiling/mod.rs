//! Who owns which object pixels and which probe positions, and which rectangles travel
//! between ranks: the geometry of the image gradient decomposition (Wang et al., SC22).
//!
//! Pure and deterministic: no I/O, no communication. Every rank computes the same
//! [`TilePlan`] from the same inputs, so the plan needs no broadcast.
//!
//! Conventions (docs/algorithm.md §1): all coordinates are global object pixels, axis order
//! (y, x) = (row, column); the object grid is `[Ny, Nx]` with pixel (0, 0) at its top-left.
//! A probe centre c = (cy, cx) has the `m`-pixel window with top-left
//! n = floor(c) − m/2 ([`crate::physics::model::placement`]), covering rows n_y..n_y+m and
//! columns n_x..n_x+m.
//!
//! The decomposition:
//! * the object grid is cut into `Ty × Tx` rectangular **tiles** that partition it; rank
//!   `ty · Tx + tx` owns tile (ty, tx) — the authoritative object values and the complete
//!   gradient sums there;
//! * each position belongs to the rank whose tile holds its centre (`floor(c)`), and only
//!   that rank reads its measurement;
//! * each rank sums its positions' gradient contributions into a buffer over its **field**
//!   (tile ∪ bounding box of its windows = tile + halo); the parts of the field owned by
//!   others are sent to them ([`RankPlan::sends`]) and added into their tiles
//!   ([`RankPlan::recvs`]). The owners then hold the exact global sum (up to floating-point
//!   reassociation), whatever the tiling — also when tiles are smaller than the window and
//!   a halo spans many owners, which is why the exchange lists come from geometry, not from
//!   an 8-neighbour stencil.
//! * after the owners update their tiles, the same lists serve the reverse direction: each
//!   owner sends the object values of its `recvs` rectangles back to those peers, and each
//!   rank refreshes the `sends` rectangles of its field from their owners.

use crate::error::{Error, Result};
use crate::physics::model::placement;

/// Half-open rectangle of global object pixels: rows `y0..y1`, columns `x0..x1`.
/// Empty when `y0 >= y1` or `x0 >= x1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    /// First row (inclusive), object pixels.
    pub y0: i64,
    /// One past the last row, object pixels.
    pub y1: i64,
    /// First column (inclusive), object pixels.
    pub x0: i64,
    /// One past the last column, object pixels.
    pub x1: i64,
}

impl Rect {
    /// The rectangle with top-left `origin` (y, x) and `shape` [rows, cols] — the global
    /// extent of a [`crate::physics::model::Field`] with that origin and shape.
    pub fn from_origin_shape(origin: [i64; 2], shape: [usize; 2]) -> Rect {
        Rect {
            y0: origin[0],
            y1: origin[0] + shape[0] as i64,
            x0: origin[1],
            x1: origin[1] + shape[1] as i64,
        }
    }

    /// Top-left corner (y, x): the global pixel of local pixel (0, 0) of a buffer over this
    /// rectangle (a `Field`'s `origin`).
    pub fn origin(&self) -> [i64; 2] {
        [self.y0, self.x0]
    }

    /// True when the rectangle holds no pixel.
    pub fn is_empty(&self) -> bool {
        self.y0 >= self.y1 || self.x0 >= self.x1
    }

    /// Number of pixels (0 when empty).
    pub fn area(&self) -> usize {
        let [h, w] = self.shape();
        h * w
    }

    /// [rows, cols] (each 0 when empty).
    pub fn shape(&self) -> [usize; 2] {
        if self.is_empty() {
            [0, 0]
        } else {
            [(self.y1 - self.y0) as usize, (self.x1 - self.x0) as usize]
        }
    }

    /// The common pixels, or `None` when there are none.
    pub fn intersect(&self, o: &Rect) -> Option<Rect> {
        let r = Rect {
            y0: self.y0.max(o.y0),
            y1: self.y1.min(o.y1),
            x0: self.x0.max(o.x0),
            x1: self.x1.min(o.x1),
        };
        (!r.is_empty()).then_some(r)
    }

    /// True when every pixel of `o` lies in `self` (always true for an empty `o`).
    pub fn contains_rect(&self, o: &Rect) -> bool {
        o.is_empty() || (self.y0 <= o.y0 && o.y1 <= self.y1 && self.x0 <= o.x0 && o.x1 <= self.x1)
    }

    /// True when pixel (y, x) lies in the rectangle.
    pub fn contains(&self, y: i64, x: i64) -> bool {
        self.y0 <= y && y < self.y1 && self.x0 <= x && x < self.x1
    }

    /// Smallest rectangle holding both (an empty operand is ignored).
    pub fn union_bbox(&self, o: &Rect) -> Rect {
        if o.is_empty() {
            return *self;
        }
        if self.is_empty() {
            return *o;
        }
        Rect {
            y0: self.y0.min(o.y0),
            y1: self.y1.max(o.y1),
            x0: self.x0.min(o.x0),
            x1: self.x1.max(o.x1),
        }
    }
}

/// One rectangle exchanged with one peer rank.
///
/// In a rank's [`RankPlan::sends`], `rect` is part of its field owned by `peer`: gradient
/// sums go to `peer`; refreshed object values come back from it. In
/// [`RankPlan::recvs`], `rect` is part of its own tile inside `peer`'s field: gradient sums
/// come from `peer` and are added in; updated object values go back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transfer {
    /// The other rank.
    pub peer: usize,
    /// The global object pixels exchanged (non-empty).
    pub rect: Rect,
}

/// What one rank owns, holds and exchanges.
#[derive(Debug, Clone, PartialEq)]
pub struct RankPlan {
    /// This rank, `ty · Tx + tx` (row-major over tiles).
    pub rank: usize,
    /// The object pixels this rank owns; the tiles of all ranks partition the object.
    pub tile: Rect,
    /// `tile` ∪ bounding box of the windows of all owned positions: the extent of this rank's
    /// object and gradient buffers (tile + halo). Equals `tile` when the rank owns no
    /// position. Always inside the object.
    pub field: Rect,
    /// Global indices of the owned positions (those whose centre lies in `tile`, judged by
    /// floor(cy), floor(cx)). Ordered: first the `n_halo_positions` whose window is not
    /// inside `tile` (their sums are complete early, so their sends can be posted while
    /// the interior is computed), then the interior ones; each group in ascending index.
    pub positions: Vec<usize>,
    /// How many leading entries of `positions` have windows reaching beyond `tile`.
    pub n_halo_positions: usize,
    /// For every other rank r whose tile meets `field`: (r, field ∩ tile_r), sorted by peer.
    /// Gradient direction: send these parts of the field buffer to r (which adds them into
    /// its tile). Object direction: receive these rectangles of the field from r.
    pub sends: Vec<Transfer>,
    /// For every other rank r whose field meets `tile`: (r, field_r ∩ tile), sorted by
    /// peer; the mirror of the peers' `sends`. Gradient direction: receive and add these
    /// into the tile. Object direction: send the updated object values of these rectangles
    /// back to r.
    pub recvs: Vec<Transfer>,
}

impl RankPlan {
    /// Pixels of the field buffer (tile + halo); multiply by the element size for the bytes
    /// of one object or gradient buffer.
    pub fn field_pixels(&self) -> usize {
        self.field.area()
    }

    /// Pixels of the tile (owned pixels).
    pub fn tile_pixels(&self) -> usize {
        self.tile.area()
    }

    /// Positions in `positions[n_halo_positions..]`, whose windows lie inside the tile.
    pub fn interior_positions(&self) -> &[usize] {
        &self.positions[self.n_halo_positions..]
    }

    /// Positions in `positions[..n_halo_positions]`, whose windows reach beyond the tile.
    pub fn halo_positions(&self) -> &[usize] {
        &self.positions[..self.n_halo_positions]
    }
}

/// The decomposition of an object grid into `Ty × Tx` tiles, one per rank.
#[derive(Debug, Clone, PartialEq)]
pub struct TilePlan {
    /// [Ty, Tx]: tiles along y (rows) and x (columns).
    pub tiles: [usize; 2],
    /// The whole object grid: rows 0..Ny, columns 0..Nx.
    pub object: Rect,
    /// Window (probe) size M in pixels.
    pub m: usize,
    /// Tile boundaries along y and x: `cuts[0]` = [0, b_1, …, Ny] (Ty + 1 entries, strictly
    /// increasing), tile row ty covers rows cuts[0][ty]..cuts[0][ty+1]; same for x.
    pub cuts: [Vec<i64>; 2],
    /// One entry per rank, `ranks[r].rank == r`.
    pub ranks: Vec<RankPlan>,
}

impl TilePlan {
    /// Number of ranks, Ty · Tx.
    pub fn n_ranks(&self) -> usize {
        self.ranks.len()
    }

    /// The largest field (tile + halo) over the ranks, in pixels: the per-rank memory of one
    /// object or gradient buffer.
    pub fn max_field_pixels(&self) -> usize {
        self.ranks
            .iter()
            .map(RankPlan::field_pixels)
            .max()
            .unwrap_or(0)
    }

    /// The most positions any rank owns (the per-rank measurement count).
    pub fn max_positions(&self) -> usize {
        self.ranks
            .iter()
            .map(|r| r.positions.len())
            .max()
            .unwrap_or(0)
    }

    /// The rank owning object pixel (y, x), or `None` outside the object.
    pub fn owner_of_pixel(&self, y: i64, x: i64) -> Option<usize> {
        if !self.object.contains(y, x) {
            return None;
        }
        let ty = find_band(&self.cuts[0], y);
        let tx = find_band(&self.cuts[1], x);
        Some(ty * self.tiles[1] + tx)
    }
}

/// Index k with cuts[k] <= v < cuts[k+1]; `v` must lie in cuts[0]..cuts[last].
fn find_band(cuts: &[i64], v: i64) -> usize {
    cuts.partition_point(|&c| c <= v) - 1
}

/// Plan the decomposition of the `object_shape` = [Ny, Nx] grid into `tiles` = [Ty, Tx]
/// tiles for the positions with probe `centres` (y, x) in global object pixels and an
/// `m`-pixel window.
///
/// Each axis is cut independently, balancing position counts: cut k (of Ty − 1 along y)
/// is placed where the number of centres with floor(cy) below it is closest to k·N/Ty (on a
/// tie, the smaller count), in the middle of the gap between the occupied rows on either
/// side of it, subject to every tile being at least one pixel wide. The outer tiles extend
/// to the object border. Tiles may hold no position.
///
/// Errors (`parallel.tiles`) when Ty or Tx is 0 or exceeds the object's pixels along its
/// axis, and when a centre is not finite or its window does not lie inside the object.
pub fn plan(
    centres: &[[f64; 2]],
    m: usize,
    object_shape: [usize; 2],
    tiles: [usize; 2],
) -> Result<TilePlan> {
    plan_with_margin(centres, m, object_shape, tiles, 0)
}

/// [`plan`] for positions that may move by up to `margin` pixels per axis (refined scan
/// positions, `[position_correction]`): every window is grown by `margin` on each side
/// before the fields, the halo/interior split and the transfers are formed. A centre moved
/// by at most `margin` px per axis moves its window's top-left floor(c) − M/2 by at most
/// `margin` px, so the moved window stays inside its rank's field, and an interior
/// position's inside its tile. Ownership is
/// still decided by the initial centres. `margin` = 0 is [`plan`].
///
/// Errors: those of [`plan`]; a grown window must also lie inside the object (the data
/// reader pads the object by the margin, `DataFile::pad_object`).
pub fn plan_with_margin(
    centres: &[[f64; 2]],
    m: usize,
    object_shape: [usize; 2],
    tiles: [usize; 2],
    margin: usize,
) -> Result<TilePlan> {
    let what = "parallel.tiles";
    for a in 0..2 {
        let axis = ["y (rows)", "x (columns)"][a];
        if tiles[a] == 0 {
            return Err(Error::new(
                what,
                format!("0 tiles along {axis}; need at least 1"),
            ));
        }
        if tiles[a] > object_shape[a] {
            return Err(Error::new(
                what,
                format!(
                    "{} tiles along {axis} but the object has only {} pixels there",
                    tiles[a], object_shape[a]
                ),
            ));
        }
    }
    let object = Rect {
        y0: 0,
        y1: object_shape[0] as i64,
        x0: 0,
        x1: object_shape[1] as i64,
    };

    // Windows and floor(centre) of every position; all windows must lie in the object.
    let mut floors = Vec::with_capacity(centres.len());
    let mut windows = Vec::with_capacity(centres.len());
    for (j, c) in centres.iter().enumerate() {
        if !(c[0].is_finite() && c[1].is_finite()) {
            return Err(Error::new(
                what,
                format!("probe centre {j} is not finite: ({}, {})", c[0], c[1]),
            ));
        }
        let (n, _) = placement(*c, m);
        let g = margin as i64;
        let win = Rect::from_origin_shape([n[0] - g, n[1] - g], [m + 2 * margin, m + 2 * margin]);
        if !object.contains_rect(&win) {
            return Err(Error::new(
                what,
                format!(
                    "the {m}-pixel window{} of position {j} (centre ({:.3}, {:.3})) leaves the {}x{} object",
                    if margin > 0 { format!(" grown by the {margin}-pixel position-correction margin") } else { String::new() },
                    c[0], c[1], object_shape[0], object_shape[1]
                ),
            ));
        }
        floors.push([c[0].floor() as i64, c[1].floor() as i64]);
        windows.push(win);
    }

    let cuts = [
        axis_cuts(floors.iter().map(|f| f[0]), object_shape[0], tiles[0]),
        axis_cuts(floors.iter().map(|f| f[1]), object_shape[1], tiles[1]),
    ];
    let [ty_n, tx_n] = tiles;
    let n_ranks = ty_n * tx_n;

    // Tiles and owned positions (ascending index).
    let mut ranks: Vec<RankPlan> = (0..n_ranks)
        .map(|r| {
            let (ty, tx) = (r / tx_n, r % tx_n);
            let tile = Rect {
                y0: cuts[0][ty],
                y1: cuts[0][ty + 1],
                x0: cuts[1][tx],
                x1: cuts[1][tx + 1],
            };
            RankPlan {
                rank: r,
                tile,
                field: tile,
                positions: Vec::new(),
                n_halo_positions: 0,
                sends: Vec::new(),
                recvs: Vec::new(),
            }
        })
        .collect();
    let mut owned: Vec<Vec<usize>> = vec![Vec::new(); n_ranks];
    for (j, f) in floors.iter().enumerate() {
        let r = find_band(&cuts[0], f[0]) * tx_n + find_band(&cuts[1], f[1]);
        owned[r].push(j);
    }

    // Fields, halo-first order, sends.
    for (rp, own) in ranks.iter_mut().zip(owned) {
        let (mut halo, mut interior) = (Vec::new(), Vec::new());
        for j in own {
            rp.field = rp.field.union_bbox(&windows[j]);
            if rp.tile.contains_rect(&windows[j]) {
                interior.push(j);
            } else {
                halo.push(j);
            }
        }
        rp.n_halo_positions = halo.len();
        halo.extend(interior);
        rp.positions = halo;

        // Owners of the field's pixels: a contiguous block of tile rows and columns.
        let f = rp.field;
        let (ty0, ty1) = (find_band(&cuts[0], f.y0), find_band(&cuts[0], f.y1 - 1));
        let (tx0, tx1) = (find_band(&cuts[1], f.x0), find_band(&cuts[1], f.x1 - 1));
        for ty in ty0..=ty1 {
            for tx in tx0..=tx1 {
                let q = ty * tx_n + tx;
                if q == rp.rank {
                    continue;
                }
                let tq = Rect {
                    y0: cuts[0][ty],
                    y1: cuts[0][ty + 1],
                    x0: cuts[1][tx],
                    x1: cuts[1][tx + 1],
                };
                if let Some(rect) = f.intersect(&tq) {
                    rp.sends.push(Transfer { peer: q, rect });
                }
            }
        }
    }

    // Receives mirror the sends; visiting senders in ascending rank sorts them by peer.
    for r in 0..n_ranks {
        for k in 0..ranks[r].sends.len() {
            let Transfer { peer, rect } = ranks[r].sends[k];
            ranks[peer].recvs.push(Transfer { peer: r, rect });
        }
    }

    Ok(TilePlan {
        tiles,
        object,
        m,
        cuts,
        ranks,
    })
}

/// Boundaries [0, b_1, …, len] of `t` bands along one axis of `len` pixels, balancing the
/// counts of `values` (floor of the centres' coordinate, all in 0..len) per band.
fn axis_cuts(values: impl Iterator<Item = i64>, len: usize, t: usize) -> Vec<i64> {
    // below[b] = number of values < b, for b in 0..=len.
    let mut hist = vec![0u64; len + 1];
    let mut n = 0u64;
    for v in values {
        hist[v as usize + 1] += 1;
        n += 1;
    }
    let mut below = hist;
    for b in 1..=len {
        below[b] += below[b - 1];
    }
    let (len_i, t_u) = (len as i64, t as u64);
    let mut cuts = Vec::with_capacity(t + 1);
    cuts.push(0i64);
    for k in 1..t {
        let lo = cuts[k - 1] + 1;
        let hi = len_i - (t - k) as i64;
        // Minimise |t·below(b) − k·n| over b in lo..=hi; the first minimum has the smallest count.
        let target = k as u64 * n;
        let err = |b: i64| (t_u * below[b as usize]).abs_diff(target);
        let mut best = lo;
        for b in lo..=hi {
            if err(b) < err(best) {
                best = b;
            }
        }
        // The plateau of equal count around `best`, within the feasible range: cut midway.
        let c = below[best as usize];
        let (mut p0, mut p1) = (best, best);
        while p0 > lo && below[(p0 - 1) as usize] == c {
            p0 -= 1;
        }
        while p1 < hi && below[(p1 + 1) as usize] == c {
            p1 += 1;
        }
        cuts.push((p0 + p1) / 2);
    }
    cuts.push(len_i);
    cuts
}

/// Factor `ranks` into [Ty, Tx] with Ty · Tx = ranks so that the tiles are as close to square
/// as possible, i.e. Ty / Tx as close as possible to Ny / Nx of `object_shape` (compared in
/// log-ratio, exactly). Factorisations with more tiles along an axis than object pixels
/// are used only when no other exists. Ties go to the smaller Ty. Examples on a square
/// object: 4 → [2, 2], 2 → [1, 2], 6 → [2, 3], 7 → [1, 7]. `ranks == 0` gives [0, 0],
/// which [`plan`] rejects.
pub fn tiles_for(ranks: usize, object_shape: [usize; 2]) -> [usize; 2] {
    if ranks == 0 {
        return [0, 0];
    }
    let (ny, nx) = (
        object_shape[0].max(1) as u128,
        object_shape[1].max(1) as u128,
    );
    // Tile aspect (Ny/Ty) / (Nx/Tx) = (Ny·Tx) / (Nx·Ty) as the fraction max/min ≥ 1.
    let badness = |ty: usize, tx: usize| -> (bool, u128, u128) {
        let (a, b) = (ny * tx as u128, nx * ty as u128);
        let fits = ty as u128 <= ny && tx as u128 <= nx;
        (!fits, a.max(b), a.min(b))
    };
    let mut best = [1, ranks];
    for ty in 1..=ranks {
        if ranks % ty != 0 {
            continue;
        }
        let tx = ranks / ty;
        let (bf, bn, bd) = badness(best[0], best[1]);
        let (f, n, d) = badness(ty, tx);
        // Better when it fits and the best does not, or same fit and smaller ratio n/d.
        if (!f && bf) || (f == bf && n * bd < bn * d) {
            best = [ty, tx];
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rect_ops() {
        let a = Rect {
            y0: 0,
            y1: 4,
            x0: 0,
            x1: 5,
        };
        let b = Rect {
            y0: 2,
            y1: 6,
            x0: 3,
            x1: 9,
        };
        assert_eq!(a.area(), 20);
        assert_eq!(a.shape(), [4, 5]);
        assert_eq!(
            a.intersect(&b),
            Some(Rect {
                y0: 2,
                y1: 4,
                x0: 3,
                x1: 5
            })
        );
        assert_eq!(
            a.intersect(&Rect {
                y0: 4,
                y1: 6,
                x0: 0,
                x1: 5
            }),
            None
        );
        assert_eq!(
            a.union_bbox(&b),
            Rect {
                y0: 0,
                y1: 6,
                x0: 0,
                x1: 9
            }
        );
        assert!(a.contains_rect(&Rect {
            y0: 1,
            y1: 2,
            x0: 1,
            x1: 5
        }));
        assert!(!a.contains_rect(&b));
        let e = Rect {
            y0: 3,
            y1: 3,
            x0: 0,
            x1: 9,
        };
        assert!(e.is_empty() && e.area() == 0 && e.shape() == [0, 0]);
        assert_eq!(a.union_bbox(&e), a);
        assert_eq!(
            Rect::from_origin_shape([-2, 3], [4, 5]),
            Rect {
                y0: -2,
                y1: 2,
                x0: 3,
                x1: 8
            }
        );
    }

    #[test]
    fn axis_cuts_balance_and_width() {
        // 10 values at 0..10, 2 bands over 20 px: cut in the gap after value 4, before 5.
        let cuts = axis_cuts(0..10, 20, 2);
        assert_eq!(cuts, vec![0, 5, 20]);
        // No values: bands still at least 1 px wide and strictly increasing.
        let cuts = axis_cuts(std::iter::empty(), 5, 5);
        assert_eq!(cuts, vec![0, 1, 2, 3, 4, 5]);
        // Everything on one row: cuts squeezed but valid.
        let cuts = axis_cuts(std::iter::repeat_n(3, 7), 8, 4);
        assert!(cuts.windows(2).all(|w| w[0] < w[1]) && cuts[0] == 0 && cuts[4] == 8);
    }

    #[test]
    fn tiles_for_small() {
        assert_eq!(tiles_for(4, [100, 100]), [2, 2]);
        assert_eq!(tiles_for(2, [100, 100]), [1, 2]);
        assert_eq!(tiles_for(6, [100, 100]), [2, 3]);
        assert_eq!(tiles_for(7, [100, 100]), [1, 7]);
        assert_eq!(tiles_for(2, [200, 100]), [2, 1]);
    }

    #[test]
    fn plan_two_positions() {
        // Two positions far apart on a 1×2 tiling, m = 4: no halo exchange needed beyond fields.
        let plan = plan(&[[4.5, 4.5], [4.5, 14.5]], 4, [10, 20], [1, 2]).unwrap();
        assert_eq!(plan.cuts, [vec![0, 10], vec![0, 9, 20]]);
        assert_eq!(plan.ranks[0].positions, vec![0]);
        assert_eq!(plan.ranks[1].positions, vec![1]);
        assert_eq!(plan.ranks[0].n_halo_positions, 0);
        assert!(plan.ranks[0].sends.is_empty() && plan.ranks[1].recvs.is_empty());
    }
}
