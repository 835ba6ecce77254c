//! The axial regulariser of multislice objects (docs/algorithm.md §12):
//! ```text
//! R(O) = μ Σ_r Σ_{s=0}^{S−2} |O_{s+1}(r) − O_s(r)|²
//! ∂R/∂O_s* = μ Σ_{s' ∈ {s−1, s+1} ∩ [0, S)} (O_s − O_s')      ∂²R/∂O_s ∂O_s* = μ n_s
//! ```
//! (n_s the number of neighbouring slices, 1 or 2). It penalises what varies from slice to
//! slice at a pixel — the high axial frequencies where the poorly determined depth
//! information and the cross-talk between slices live — and leaves the projection free. It
//! couples only the slices of one pixel, so a rank evaluates it on its own tile with no
//! halo and no message: the tiled sums equal the single-rank ones exactly.

use crate::backend::kernel::Gradients;
use crate::physics::fft::Real;
use crate::physics::model::Field;
use crate::tiling::Rect;
use num_complex::{Complex, Complex64};

/// Adds ∂R/∂O* to `g.g_obj` and μ n_s / `fisher` to `g.d_obj` (the regulariser's curvature
/// in the units of the data term's preconditioner, whose Newton step is g / (c D)) on the
/// pixels of `tile`, for every slice; returns R over `tile`. `obj`, `g.g_obj` and `g.d_obj`
/// are on the same field with S planes; nothing happens for S = 1 or μ = 0.
pub fn regularise<T: Real>(
    obj: &Field<Complex<T>>,
    g: &mut Gradients<T>,
    tile: &Rect,
    mu: f64,
    fisher: f64,
) -> f64 {
    let Some((planes, pl, pixels)) = tile_slices(obj, tile, mu) else {
        return 0.0;
    };
    let mut r = 0.0;
    for i in pixels {
        let at =
            |s: usize| Complex64::new(obj.data[s * pl + i].re.f64(), obj.data[s * pl + i].im.f64());
        for s in 0..planes {
            let o = at(s);
            let mut grad = Complex64::default();
            let mut n = 0.0;
            if s > 0 {
                grad += o - at(s - 1);
                n += 1.0;
            }
            if s + 1 < planes {
                let d = at(s + 1) - o;
                grad -= d;
                r += d.norm_sqr();
                n += 1.0;
            }
            g.g_obj.data[s * pl + i] += grad * mu;
            g.d_obj.data[s * pl + i] += mu * n / fisher;
        }
    }
    mu * r
}

/// The slice count S, the pixels per slice and the local indices of the tile's pixels in
/// slice 0, or `None` when R vanishes (S = 1 or μ = 0).
fn tile_slices<'a, V>(
    obj: &'a Field<V>,
    tile: &'a Rect,
    mu: f64,
) -> Option<(usize, usize, impl Iterator<Item = usize> + 'a)> {
    let planes = obj.planes();
    // tile_indices lists slice 0 first
    (planes > 1 && mu != 0.0).then(|| {
        (
            planes,
            obj.plane_len(),
            super::exchange::tile_indices(obj, tile).take(tile.area()),
        )
    })
}

/// Whether this rank adds its R to the loss before the all-reduce: every rank of a tiled
/// job (each sums its own tile), only rank 0 of a replicated one (each holds the whole
/// object).
pub fn counted(rank: &super::Rank) -> bool {
    rank.mode == super::Decomposition::Tiled || rank.comm.rank() == 0
}

/// R over the pixels of `tile` (the value [`regularise`] returns), for line searches.
pub fn penalty<T: Real>(obj: &Field<Complex<T>>, tile: &Rect, mu: f64) -> f64 {
    let Some((planes, pl, pixels)) = tile_slices(obj, tile, mu) else {
        return 0.0;
    };
    let mut r = 0.0;
    for i in pixels {
        for s in 0..planes - 1 {
            let d = obj.data[(s + 1) * pl + i] - obj.data[s * pl + i];
            r += d.re.f64().powi(2) + d.im.f64().powi(2);
        }
    }
    mu * r
}

/// R(O + t D) − R(O) over the pixels of `tile`, summed pixel by pixel as
/// μ Σ (2t Re(a* b) + t² |b|²), a = O_{s+1} − O_s, b = D_{s+1} − D_s, so that its
/// rounding is relative to the change, not to R (ML-CG's line search, docs/algorithm.md
/// §12). `dir` is on the same field as `obj`.
pub fn penalty_change<T: Real>(
    obj: &Field<Complex<T>>,
    dir: &Field<Complex64>,
    tile: &Rect,
    mu: f64,
    t: f64,
) -> f64 {
    let Some((planes, pl, pixels)) = tile_slices(obj, tile, mu) else {
        return 0.0;
    };
    let at = |s: usize, i: usize| {
        Complex64::new(obj.data[s * pl + i].re.f64(), obj.data[s * pl + i].im.f64())
    };
    let mut r = 0.0;
    for i in pixels {
        for s in 0..planes - 1 {
            let a = at(s + 1, i) - at(s, i);
            let b = dir.data[(s + 1) * pl + i] - dir.data[s * pl + i];
            r += 2.0 * t * (a.re * b.re + a.im * b.im) + t * t * b.norm_sqr();
        }
    }
    mu * r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let (shape, planes, mu) = ([3, 4], 3, 0.7);
        let obj = Field {
            origin: [2, 5],
            shape,
            data: (0..planes * 12)
                .map(|i| {
                    Complex::new(
                        1.0 + 0.1 * (i as f64 * 0.7).sin(),
                        0.3 * (i as f64 * 1.3).cos(),
                    )
                })
                .collect::<Vec<Complex<f64>>>(),
        };
        let tile = Rect {
            y0: 3,
            y1: 5,
            x0: 5,
            x1: 8,
        };
        let mut g = Gradients::<f64>::zeros(obj.origin, obj.shape, planes, None);
        let r = regularise(&obj, &mut g, &tile, mu, 2.0);
        assert!((r - penalty(&obj, &tile, mu)).abs() < 1e-12);
        // Wirtinger: dR = 2 Re(conj(∂R/∂O*) dO)
        let h = 1e-6;
        for i in [12 + 4 + 1, 5, 24 + 2 * 4 + 2] {
            let mut o2 = obj.clone();
            o2.data[i].re += h;
            let d_re = (penalty(&o2, &tile, mu) - r) / h;
            let mut o3 = obj.clone();
            o3.data[i].im += h;
            let d_im = (penalty(&o3, &tile, mu) - r) / h;
            assert!(
                (d_re - 2.0 * g.g_obj.data[i].re).abs() < 1e-5,
                "{i}: {d_re} {}",
                g.g_obj.data[i]
            );
            assert!(
                (d_im - 2.0 * g.g_obj.data[i].im).abs() < 1e-5,
                "{i}: {d_im} {}",
                g.g_obj.data[i]
            );
        }
        // curvature μ n_s / c: 1 neighbour for the first and last slice, 2 in between
        let i = 4 + 1;
        assert_eq!(
            [g.d_obj.data[i], g.d_obj.data[12 + i], g.d_obj.data[24 + i]],
            [0.35, 0.7, 0.35]
        );
        // pixels outside the tile are untouched
        assert_eq!(g.g_obj.data[0], Complex64::default());
        // the change along a direction equals the difference of the penalties
        let dir = Field {
            origin: obj.origin,
            shape,
            data: (0..planes * 12)
                .map(|i| Complex64::new((i as f64).cos(), 0.5 * (i as f64 * 0.3).sin()))
                .collect::<Vec<_>>(),
        };
        let t = 0.37;
        let moved = Field {
            data: obj
                .data
                .iter()
                .zip(&dir.data)
                .map(|(o, d)| o + d * t)
                .collect(),
            ..obj.clone()
        };
        let dr = penalty_change(&obj, &dir, &tile, mu, t);
        assert!(
            (dr - (penalty(&moved, &tile, mu) - r)).abs() < 1e-12 * r.abs().max(1.0),
            "{dr}"
        );
    }
}
