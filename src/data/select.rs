//! Which measured patterns enter the likelihood: dropped and corrupt frames left out by a
//! robust rule on their total counts, a manual exclusion list, and checkerboard halves of
//! the scan for the Fourier ring correlation (docs/algorithm.md §13).
//!
//! Pure functions of the per-pattern totals, the positions and `[data]`: every rank
//! computes the same [`Selection`] from the same inputs.

use crate::config::{DataConfig, Subset};
use crate::error::{Error, Result};

/// Robust z-score beyond which a pattern's total counts make it an outlier
/// ([`outliers`]): |t − median| > [`OUTLIER_Z`] · 1.4826 · MAD.
pub const OUTLIER_Z: f64 = 8.0;

/// Smallest relative deviation |t − median| / median that makes an outlier ([`outliers`]),
/// whatever the spread: totals that vary by less than this (noise-free simulations, the
/// intensity lost beyond the detector edge) never exclude a pattern.
pub const OUTLIER_MIN_REL: f64 = 0.1;

/// Indices (ascending) of the patterns whose total counts `totals` ([N], counts per pattern,
/// the file's order) are far from the scan's: |t_j − med| > max(z · σ, r · med), with
/// med the median of the totals, σ = 1.4826 · median |t − med| (the MAD scaled to a
/// Gaussian's standard deviation), z = [`OUTLIER_Z`], r = [`OUTLIER_MIN_REL`].
///
/// The median and MAD ignore up to half the scan being corrupt, so a zero block, a few
/// saturated or truncated frames, or a dropped scan line cannot move the reference, as a
/// mean and standard deviation would. The scan-wide median (not a local one) is used because
/// a block of dropped frames larger than a local window would be its own reference.
/// Returns no index when the median is 0 (no signal to compare with) or N < 3.
pub fn outliers(totals: &[f64]) -> Vec<usize> {
    if totals.len() < 3 {
        return Vec::new();
    }
    let med = median(totals.to_vec());
    if !(med > 0.0) {
        return Vec::new();
    }
    let sigma = 1.4826 * median(totals.iter().map(|t| (t - med).abs()).collect());
    let limit = (OUTLIER_Z * sigma).max(OUTLIER_MIN_REL * med);
    (0..totals.len())
        .filter(|&j| !((totals[j] - med).abs() <= limit))
        .collect()
}

/// The median of `v` (the upper one for even lengths); NaN sorts last.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Whether each position ([N] probe centres (y, x), object pixels) is in the checkerboard
/// half `subset`: position j sits at scan row i = round((y_j − min y) / s) and column
/// k = round((x_j − min x) / s), s being the scan step (the median distance from a position
/// to its nearest neighbour), and belongs to `Even` when i + k is even, else to `Odd`. On
/// a raster scan aligned with the object axes, i and k are the scan row and column, so the
/// halves are the checkerboard of (row + column) parity; on other scans (rotated rasters,
/// spirals) the halves are the parity of the nearest step-sized grid cell, two interleaved,
/// spatially even halves that together hold every position once. Position errors of a few
/// per cent of the step keep each position's parity; larger jitter can move a position to
/// the neighbouring cell (the halves stay disjoint and complete).
pub fn checkerboard(centres: &[[f64; 2]], subset: Subset) -> Vec<bool> {
    let s = scan_step(centres);
    let lo = [0, 1].map(|a| centres.iter().map(|c| c[a]).fold(f64::INFINITY, f64::min));
    let want = match subset {
        Subset::Even => 0,
        Subset::Odd => 1,
    };
    centres
        .iter()
        .map(|c| {
            let idx = |a: usize| ((c[a] - lo[a]) / s).round() as i64;
            (idx(0) + idx(1)).rem_euclid(2) == want
        })
        .collect()
}

/// The scan step (object pixels): the median over positions of the distance to the nearest
/// other position (1 when there are fewer than two distinct positions). Positions are
/// bucketed into cells of the mean spacing so the search stays near-linear in N.
pub fn scan_step(centres: &[[f64; 2]]) -> f64 {
    let n = centres.len();
    if n < 2 {
        return 1.0;
    }
    let lo = [0, 1].map(|a| centres.iter().map(|c| c[a]).fold(f64::INFINITY, f64::min));
    let hi = [0, 1].map(|a| {
        centres
            .iter()
            .map(|c| c[a])
            .fold(f64::NEG_INFINITY, f64::max)
    });
    let area = ((hi[0] - lo[0]).max(1.0)) * ((hi[1] - lo[1]).max(1.0));
    let cell = (area / n as f64).sqrt().max(1e-6);
    let key = |c: &[f64; 2]| {
        [
            ((c[0] - lo[0]) / cell) as i64,
            ((c[1] - lo[1]) / cell) as i64,
        ]
    };
    let mut grid: std::collections::HashMap<[i64; 2], Vec<usize>> =
        std::collections::HashMap::new();
    for (j, c) in centres.iter().enumerate() {
        grid.entry(key(c)).or_default().push(j);
    }
    let mut nearest = Vec::with_capacity(n);
    for (j, c) in centres.iter().enumerate() {
        let k = key(c);
        // widen the ring of cells until a neighbour is found, then one more ring
        let mut best = f64::INFINITY;
        let mut r = 1i64;
        while r < 1 << 20 {
            for dy in -r..=r {
                for dx in -r..=r {
                    for &i in grid
                        .get(&[k[0] + dy, k[1] + dx])
                        .map_or(&[][..], |v| &v[..])
                    {
                        let d = (centres[i][0] - c[0]).hypot(centres[i][1] - c[1]);
                        if i != j && d > 1e-9 {
                            best = best.min(d);
                        }
                    }
                }
            }
            if best <= r as f64 * cell {
                break;
            }
            r *= 2;
        }
        if best.is_finite() {
            nearest.push(best);
        }
    }
    if nearest.is_empty() {
        1.0
    } else {
        median(nearest)
    }
}

/// The patterns a reconstruction uses, and why the others are left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// [N]: whether pattern j enters the likelihood.
    pub used: Vec<bool>,
    /// Outliers by [`outliers`] (ascending), empty with `exclude_outliers = false`.
    pub outliers: Vec<usize>,
    /// `[data] exclude` (ascending, without repeats).
    pub manual: Vec<usize>,
}

impl Selection {
    /// Every one of `n` patterns used.
    pub fn all(n: usize) -> Selection {
        Selection {
            used: vec![true; n],
            outliers: Vec::new(),
            manual: Vec::new(),
        }
    }

    /// Number of patterns used.
    pub fn n_used(&self) -> usize {
        self.used.iter().filter(|u| **u).count()
    }

    /// Outliers and manual exclusions together (ascending, without repeats): the patterns
    /// left out of the likelihood apart from the subset's other half.
    pub fn excluded(&self) -> Vec<usize> {
        let mut e: Vec<usize> = self.outliers.iter().chain(&self.manual).copied().collect();
        e.sort_unstable();
        e.dedup();
        e
    }
}

/// The [`Selection`] of `[data]` (`exclude`, `exclude_outliers`, `subset`) for a scan of
/// `centres` ([N], object pixels) whose patterns hold `totals` counts (None: not read,
/// allowed only with `exclude_outliers = false`).
///
/// Errors (naming `data.exclude` or `data.subset`): an index ≥ N; no pattern left.
pub fn select(
    data: &DataConfig,
    centres: &[[f64; 2]],
    totals: Option<&[f64]>,
) -> Result<Selection> {
    let n = centres.len();
    let mut sel = Selection::all(n);
    if let Some(&j) = data.exclude.iter().find(|&&j| j >= n) {
        return Err(Error::new(
            "data.exclude",
            format!(
                "pattern index {j} is out of range (the file has {n} patterns, 0..{})",
                n.saturating_sub(1)
            ),
        ));
    }
    sel.manual = data.exclude.clone();
    sel.manual.sort_unstable();
    sel.manual.dedup();
    if data.exclude_outliers {
        sel.outliers = outliers(totals.unwrap_or(&[]));
    }
    for &j in sel.outliers.iter().chain(&sel.manual) {
        sel.used[j] = false;
    }
    if let Some(s) = data.subset {
        for (u, inside) in sel.used.iter_mut().zip(checkerboard(centres, s)) {
            *u &= inside;
        }
    }
    if sel.n_used() == 0 {
        let key = if data.subset.is_some() {
            "data.subset"
        } else {
            "data.exclude"
        };
        return Err(Error::new(
            key,
            format!("leaves none of the {n} patterns to reconstruct from"),
        ));
    }
    Ok(sel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raster(sy: usize, sx: usize, step: f64) -> Vec<[f64; 2]> {
        (0..sy * sx)
            .map(|j| [10.0 + step * (j / sx) as f64, 10.0 + step * (j % sx) as f64])
            .collect()
    }

    #[test]
    fn outliers_find_zero_saturated_and_truncated_frames() {
        // Poisson-like spread of ~1 % around 16 000 counts
        let mut t: Vec<f64> = (0..400)
            .map(|j| 16_000.0 + 160.0 * ((j * 37 % 101) as f64 / 50.0 - 1.0))
            .collect();
        t[7] = 0.0;
        t[100] = 30_000.0; // saturated: far more
        t[250] = 9_000.0; // truncated: lost its second half
        t[300] = 16_500.0; // within noise: kept
        assert_eq!(outliers(&t), vec![7, 100, 250]);
        // a noise-free scan: spread ≈ 0, but the 10 % floor keeps a 2 % dip
        let mut flat = vec![1000.0; 50];
        flat[3] = 980.0;
        assert!(outliers(&flat).is_empty());
        flat[4] = 850.0;
        assert_eq!(outliers(&flat), vec![4]);
        // a 10 × 10 zero block in a 58 × 58 scan: every one of the 100
        let mut big = vec![16_000.0; 58 * 58];
        (0..100).for_each(|b| big[(20 + b / 10) * 58 + 20 + b % 10] = 0.0);
        assert_eq!(outliers(&big).len(), 100);
        assert!(outliers(&[0.0; 10]).is_empty());
    }

    #[test]
    fn checkerboard_halves_are_disjoint_and_cover_the_scan() {
        for (sy, sx, step) in [(7, 9, 2.2), (58, 58, 2.207), (1, 5, 3.0)] {
            let c = raster(sy, sx, step);
            let (e, o) = (
                checkerboard(&c, Subset::Even),
                checkerboard(&c, Subset::Odd),
            );
            for j in 0..c.len() {
                assert!(e[j] != o[j], "position {j}: exactly one half");
                assert_eq!(
                    e[j],
                    (j / sx + j % sx) % 2 == 0,
                    "position {j}: (row + column) parity"
                );
            }
        }
        // positions jittered by ±0.05 px (±1.7 % of the step) keep the parity of their grid point
        let c: Vec<[f64; 2]> = raster(6, 6, 3.0)
            .iter()
            .enumerate()
            .map(|(j, p)| {
                [
                    p[0] + 0.1 * ((j * 7 % 5) as f64 / 4.0 - 0.5),
                    p[1] - 0.1 * ((j * 3 % 5) as f64 / 4.0 - 0.5),
                ]
            })
            .collect();
        let e = checkerboard(&c, Subset::Even);
        assert!((0..36).all(|j| e[j] == ((j / 6 + j % 6) % 2 == 0)));
        assert!((scan_step(&raster(5, 5, 2.5)) - 2.5).abs() < 1e-12);
    }

    #[test]
    fn select_combines_rules_and_names_bad_keys() {
        let c = raster(4, 4, 2.0);
        let mut t = vec![100.0; 16];
        t[5] = 0.0;
        let mut d: DataConfig = toml::from_str("file = \"a.h5\"\nexclude = [9, 2, 9]").unwrap();
        let s = select(&d, &c, Some(&t)).unwrap();
        assert_eq!(
            (
                s.outliers.clone(),
                s.manual.clone(),
                s.excluded(),
                s.n_used()
            ),
            (vec![5], vec![2, 9], vec![2, 5, 9], 13)
        );
        d.exclude_outliers = false;
        assert_eq!(select(&d, &c, None).unwrap().n_used(), 14);
        d.subset = Some(Subset::Odd);
        // odd cells: 8, minus 2 and 9 ((0,2) is even, (2,1) odd)
        assert_eq!(select(&d, &c, None).unwrap().n_used(), 7);
        d.exclude = vec![16];
        assert_eq!(
            select(&d, &c, None).unwrap_err().to_string(),
            "data.exclude: pattern index 16 is out of range (the file has 16 patterns, 0..15)"
        );
        d.exclude = (0..16).collect();
        assert!(select(&d, &c, None)
            .unwrap_err()
            .to_string()
            .starts_with("data.subset: leaves none"));
    }
}
