//! Starting a reconstruction from a previous ptytile result (`[data] initial`): its object
//! and probe modes, with the object placed on the new object grid.
//!
//! Placement: both grids put probe centres at c_j = p_j − min p + M/2 (docs/algorithm.md §1),
//! so for the same scan the two grids differ by a translation d = c_new − c_old. It is
//! taken as the median over positions of c_new,j − c_old,j (robust to refined positions),
//! rounded to whole pixels; new pixels the old object does not cover start at 1.

use crate::data::DataFile;
use crate::error::{Error, Result};
use crate::physics::model::Field;
use crate::physics::multislice;
use num_complex::Complex32;
use std::path::Path;

/// The starting state from a result file.
#[derive(Debug, Clone, PartialEq)]
pub struct Initial {
    /// The object on the new global grid (origin [0, 0], shape `DataFile::object_shape`).
    pub object: Field<Complex32>,
    /// Probe modes (K, [K, M, M]).
    pub probe: (usize, Vec<Complex32>),
    /// The translation d (y, x) in pixels from the old grid to the new one.
    pub offset_px: [i64; 2],
}

impl Initial {
    /// The object on the rectangle `origin`, `shape` of the global grid (1 outside it), with
    /// `slices` planes: a result of as many slices as they are; a single-slice result spread
    /// evenly over the slices ([`multislice::spread`]: each slice gets |O|^{1/S} e^{iφ/S}).
    ///
    /// Errors: a multislice result with another number of slices.
    pub fn object_on(
        &self,
        origin: [i64; 2],
        shape: [usize; 2],
        slices: usize,
    ) -> Result<Field<Complex32>> {
        let o = &self.object;
        let have = o.planes();
        if have != 1 && have != slices {
            return Err(Error::new("data.initial", format!("its object has {have} slices, this run {slices} (give a single-slice result or one of {slices} slices)")));
        }
        let mut f = Field::stack(origin, shape, have, Complex32::new(1.0, 0.0));
        let (fl, ol) = (f.plane_len(), o.plane_len());
        for s in 0..have {
            for y in 0..shape[0] {
                let gy = origin[0] + y as i64 - o.origin[0];
                if gy < 0 || gy >= o.shape[0] as i64 {
                    continue;
                }
                for x in 0..shape[1] {
                    let gx = origin[1] + x as i64 - o.origin[1];
                    if gx >= 0 && gx < o.shape[1] as i64 {
                        f.data[s * fl + y * shape[1] + x] =
                            o.data[s * ol + gy as usize * o.shape[1] + gx as usize];
                    }
                }
            }
        }
        if have == 1 && slices > 1 {
            f.data = multislice::spread(&f.data, slices);
        }
        Ok(f)
    }
}

/// Median of a non-empty list.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Read `path` (a ptytile result) and place its object and probe for the dataset `df`.
///
/// Errors (naming `path`): not a readable result file, a probe window M or object pixel
/// size (relative difference > 1e-3) different from the data's, a different number of
/// scan positions, positions that do not match up to a translation (spread > M/4 px).
pub fn load(path: &Path, df: &DataFile) -> Result<Initial> {
    let what = path.display().to_string();
    let r = super::read_result(path)?;
    let bad = |v: &[Complex32]| {
        v.iter()
            .position(|z| !(z.re.is_finite() && z.im.is_finite()))
    };
    if let Some(i) = bad(&r.object.data) {
        let (y, x) = (i / r.object.shape[1].max(1), i % r.object.shape[1].max(1));
        return Err(Error::new(
            format!("{what}:/object"),
            format!(
                "value at (y, x) = ({y}, {x}) is {}: not a usable starting object",
                r.object.data[i]
            ),
        ));
    }
    if let Some(i) = bad(&r.probe) {
        let mm = (r.m * r.m).max(1);
        return Err(Error::new(
            format!("{what}:/probe"),
            format!(
                "value at (mode, y, x) = ({}, {}, {}) is {}: not a usable starting probe",
                i / mm,
                i % mm / r.m.max(1),
                i % r.m.max(1),
                r.probe[i]
            ),
        ));
    }
    if let Some(j) = r
        .positions_px
        .iter()
        .position(|p| !(p[0].is_finite() && p[1].is_finite()))
    {
        return Err(Error::new(
            format!("{what}:/positions_px"),
            format!(
                "position {j} is ({}, {}): not finite",
                r.positions_px[j][0], r.positions_px[j][1]
            ),
        ));
    }
    if r.m != df.m {
        return Err(Error::new(
            &what,
            format!(
                "probe window {}x{} but the data have {}x{} patterns",
                r.m, r.m, df.m, df.m
            ),
        ));
    }
    let (a, b) = (r.pixel_size_m, df.experiment.pixel_size_m);
    if (0..2).any(|i| ((a[i] - b[i]) / b[i]).abs() > 1e-3) {
        return Err(Error::new(
            &what,
            format!("object pixel size {a:?} m but the data give {b:?} m"),
        ));
    }
    if r.positions_px.len() != df.n {
        return Err(Error::new(
            &what,
            format!(
                "holds {} scan positions, the data {}: cannot place its object on the new grid",
                r.positions_px.len(),
                df.n
            ),
        ));
    }
    let d: Vec<[f64; 2]> = df
        .centres
        .iter()
        .zip(&r.positions_px)
        .map(|(n, o)| [n[0] - o[0], n[1] - o[1]])
        .collect();
    let off = [
        median(d.iter().map(|v| v[0]).collect()),
        median(d.iter().map(|v| v[1]).collect()),
    ];
    let spread = d
        .iter()
        .map(|v| (v[0] - off[0]).abs().max((v[1] - off[1]).abs()))
        .fold(0.0, f64::max);
    if spread > df.m as f64 / 4.0 {
        return Err(Error::new(&what, format!("its scan positions differ from the data's by up to {spread:.1} px beyond a common shift")));
    }
    let offset_px = [off[0].round() as i64, off[1].round() as i64];
    let old = Field {
        origin: offset_px,
        shape: r.object.shape,
        data: r.object.data,
    };
    let placed = Initial {
        object: old,
        probe: (r.modes, r.probe),
        offset_px,
    };
    let object = placed.object_on([0, 0], df.object_shape, placed.object.planes())?;
    tracing::info!("initial object and probe from {what}, shifted by {offset_px:?} px");
    Ok(Initial { object, ..placed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_is_placed_by_the_offset() {
        // old object 2 x 3 at offset (1, 2) on the new grid
        let old = Field {
            origin: [1, 2],
            shape: [2, 3],
            data: (0..6)
                .map(|v| Complex32::new(v as f32 + 10.0, 0.0))
                .collect(),
        };
        let i = Initial {
            object: old,
            probe: (1, vec![]),
            offset_px: [1, 2],
        };
        let f = i.object_on([0, 1], [4, 4], 1).unwrap();
        let re: Vec<f32> = f.data.iter().map(|z| z.re).collect();
        #[rustfmt::skip]
        let want = [1.0, 1.0, 1.0, 1.0,
                    1.0, 10.0, 11.0, 12.0,
                    1.0, 13.0, 14.0, 15.0,
                    1.0, 1.0, 1.0, 1.0];
        assert_eq!(re, want);
        assert_eq!(median(vec![3.0, -1.0, 2.0]), 2.0);
        // a single-slice start spread over 3 slices: each |O|^(1/3), phase/3
        let f3 = i.object_on([0, 1], [4, 4], 3).unwrap();
        assert_eq!(f3.planes(), 3);
        for s in 0..3 {
            assert!(
                (f3.plane(s)[5].re - 10f32.powf(1.0 / 3.0)).abs() < 1e-5,
                "{:?}",
                f3.plane(s)[5]
            );
        }
        // a multislice start of another slice count is refused, naming the option
        let i3 = Initial {
            object: f3,
            probe: (1, vec![]),
            offset_px: [0, 0],
        };
        assert_eq!(
            i3.object_on([0, 1], [4, 4], 2).unwrap_err().what,
            "data.initial"
        );
        assert_eq!(
            i3.object_on([0, 1], [4, 4], 3).unwrap().data,
            i3.object.data
        );
    }
}
