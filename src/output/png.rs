//! Preview images beside the result file, encoded with the `png` crate. Nothing here is
//! read back; the HDF5 file is the result.
//!
//! | file | content |
//! |---|---|
//! | `<stem>_object_phase.png` | arg O (multislice: the projected phase Σ_s arg O_s), [Ny, Nx] pixels × s, row = y, 8-bit grey, scale bar |
//! | `<stem>_object_amplitude.png` | \|O\| (multislice: Π_s \|O_s\|), likewise |
//! | `<stem>_probe_modes.png` | \|P_k\| of the K modes side by side, each labelled with its share of the power, RGB |
//! | `<stem>_loss.png` | loss against iteration, log scale, axes and labels (`output::plot`), 640 × 400 RGB |
//!
//! Object images map the 0.5th..99.5th percentile of the values inside the scanned area
//! linearly to 0..255 (clamped), are enlarged by an integer factor s (nearest neighbour) to
//! at least 400 pixels across where that takes at most 4, dim what lies outside the scanned
//! area to [`DIM`] of its brightness, and carry a scale bar in Å or nm; each probe mode is
//! scaled to its own maximum; modes are separated by 2-pixel white gaps.

use super::plot::{font, length_unit};
use super::ReconResult;
use crate::error::{Context, Error, Result};
use crate::physics::model::Field;
use num_complex::Complex32;
use std::io::BufWriter;
use std::path::Path;

/// Gap between probe modes in the probe image (pixels).
pub const MODE_GAP: usize = 2;
/// Brightness factor of the object pictures outside the scanned area ([`object_picture`]).
pub const DIM: f32 = 0.35;
/// Height in pixels of the label strip above the probe modes ([`probe_picture`]).
pub const LABEL_H: usize = 26;

/// Pixel format of an [`Image`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pixels {
    /// 1 byte per pixel.
    Gray8,
    /// 3 bytes per pixel (r, g, b).
    Rgb8,
}

/// An 8-bit image, row-major, row 0 at the top.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Width (columns) in pixels.
    pub width: usize,
    /// Height (rows) in pixels.
    pub height: usize,
    /// Pixel format.
    pub pixels: Pixels,
    /// `height · width · (1 or 3)` bytes.
    pub data: Vec<u8>,
}

impl Image {
    /// Encode as PNG into memory and write it to `path` atomically (temporary file,
    /// fsync, rename). Errors name `path`.
    pub fn write_atomic(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        self.encode(&mut bytes, path)?;
        super::write_atomic(path, &bytes)
    }

    /// Encode as PNG to `path` (created or truncated). Errors name `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let file = std::fs::File::create(path).ctx(|| path.display().to_string())?;
        self.encode(BufWriter::new(file), path)
    }

    fn encode<W: std::io::Write>(&self, out: W, path: &Path) -> Result<()> {
        let what = || path.display().to_string();
        let mut enc = ::png::Encoder::new(out, self.width as u32, self.height as u32);
        enc.set_color(match self.pixels {
            Pixels::Gray8 => ::png::ColorType::Grayscale,
            Pixels::Rgb8 => ::png::ColorType::Rgb,
        });
        enc.set_depth(::png::BitDepth::Eight);
        let mut w = enc.write_header().ctx(what)?;
        w.write_image_data(&self.data).ctx(what)?;
        w.finish().ctx(what)
    }
}

/// The suffixes of the images [`images`] may return, in its order.
pub const SUFFIXES: [&str; 4] = ["object_phase", "object_amplitude", "probe_modes", "loss"];

/// The preview images of `r` as (file-name suffix, image), e.g. ("object_phase", …);
/// images that would have a zero dimension are left out.
///
/// Errors: a plotters drawing failure (naming the picture).
pub fn images(r: &ReconResult) -> Result<Vec<(&'static str, Image)>> {
    let mut out = Vec::new();
    let area = scanned_area(r);
    if r.object.planes() > 1 {
        // multislice: the projected phase Σ_s arg O_s (unwrapped across slices) and the
        // product of the slices' amplitudes
        let (o, n) = (&r.object, r.object.plane_len());
        let ph = crate::physics::multislice::projected_phase(&o.data, n);
        let amp = (0..n).map(|i| {
            (0..o.planes())
                .map(|s| o.data[s * n + i].norm())
                .product::<f32>()
        });
        let proj = Field {
            origin: o.origin,
            shape: o.shape,
            data: ph
                .iter()
                .zip(amp)
                .map(|(p, a)| Complex32::new(*p as f32, a))
                .collect(),
        };
        out.extend(
            object_picture(&proj, area, r.pixel_size_m[1], |c| c.re)?.map(|i| ("object_phase", i)),
        );
        out.extend(
            object_picture(&proj, area, r.pixel_size_m[1], |c| c.im)?
                .map(|i| ("object_amplitude", i)),
        );
    } else {
        // phase relative to the mean phase of the scanned area, so it does not wrap at ±π there
        let mut mean = Complex32::new(0.0, 0.0);
        if let Some([y0, y1, x0, x1]) = area {
            for y in y0..y1 {
                mean += r.object.data[y * r.object.shape[1] + x0..y * r.object.shape[1] + x1]
                    .iter()
                    .sum::<Complex32>();
            }
        }
        let rot = if mean.norm() > 0.0 {
            mean.conj() / mean.norm()
        } else {
            Complex32::new(1.0, 0.0)
        };
        out.extend(
            object_picture(&r.object, area, r.pixel_size_m[1], |c| (c * rot).arg())?
                .map(|i| ("object_phase", i)),
        );
        out.extend(
            object_picture(&r.object, area, r.pixel_size_m[1], |c| c.norm())?
                .map(|i| ("object_amplitude", i)),
        );
    }
    if let Some(i) = probe_picture(&r.probe, r.modes, r.m)? {
        out.push(("probe_modes", i));
    }
    out.push(("loss", super::plot::loss_plot(&r.loss)?));
    Ok(out)
}

/// Map `v` linearly from its 0.5th..99.5th percentile (finite values only) to 0..255,
/// clamped. A constant input maps to 128; non-finite values map to 0.
pub fn percentile_to_u8(v: &[f32]) -> Vec<u8> {
    percentile_to_u8_by(v, v)
}

/// As [`percentile_to_u8`], with the percentiles taken from `sample`.
pub fn percentile_to_u8_by(v: &[f32], sample: &[f32]) -> Vec<u8> {
    let mut fin: Vec<f32> = sample.iter().copied().filter(|x| x.is_finite()).collect();
    if fin.is_empty() {
        return vec![0; v.len()];
    }
    let n = fin.len();
    let k_lo = ((n - 1) as f64 * 0.005).round() as usize;
    let k_hi = ((n - 1) as f64 * 0.995).round() as usize;
    let lo = *fin.select_nth_unstable_by(k_lo, f32::total_cmp).1;
    let hi = *fin.select_nth_unstable_by(k_hi, f32::total_cmp).1;
    let span = hi - lo;
    v.iter()
        .map(|&x| {
            if !x.is_finite() {
                0
            } else if span > 0.0 {
                ((x - lo) / span * 255.0).round().clamp(0.0, 255.0) as u8
            } else {
                128
            }
        })
        .collect()
}

/// The bounding box [y0, y1, x0, x1) of the probe centres, inside the object; None if
/// there are no positions.
fn scanned_area(r: &ReconResult) -> Option<[usize; 4]> {
    if r.positions_px.is_empty() {
        return None;
    }
    let [ny, nx] = r.object.shape;
    let lo = |a: usize| {
        r.positions_px
            .iter()
            .map(|p| p[a])
            .fold(f64::INFINITY, f64::min)
            .floor()
            .max(0.0) as usize
    };
    let hi = |a: usize, n: usize| {
        (r.positions_px
            .iter()
            .map(|p| p[a])
            .fold(f64::NEG_INFINITY, f64::max)
            .ceil() as usize
            + 1)
        .min(n)
    };
    let a = [lo(0), hi(0, ny), lo(1), hi(1, nx)];
    (a[0] < a[1] && a[2] < a[3]).then_some(a)
}

/// A grey image of `f(O)` for the object, [Ny, Nx] (row = y), percentile-scaled with the
/// percentiles taken inside `area` (the scanned region; the whole object if None), so the
/// poorly lit border does not set the contrast; `None` when the object is empty.
pub fn object_image(
    o: &Field<Complex32>,
    area: Option<[usize; 4]>,
    f: impl Fn(&Complex32) -> f32,
) -> Option<Image> {
    let [ny, nx] = o.shape;
    if ny == 0 || nx == 0 || o.data.len() != ny * nx {
        return None;
    }
    let vals: Vec<f32> = o.data.iter().map(f).collect();
    let [y0, y1, x0, x1] = area.unwrap_or([0, ny, 0, nx]);
    let inside: Vec<f32> = (y0..y1)
        .flat_map(|y| vals[y * nx + x0..y * nx + x1].iter().copied())
        .collect();
    Some(Image {
        width: nx,
        height: ny,
        pixels: Pixels::Gray8,
        data: percentile_to_u8_by(&vals, &inside),
    })
}

/// |P_k| of `modes` probe modes of `m`×`m` pixels (`probe` is [K, M, M]) side by side,
/// each scaled so its own maximum is 255, separated by [`MODE_GAP`] white columns.
/// Size [M, K·M + 2(K−1)]. `None` when there is nothing to draw.
pub fn probe_modes_image(probe: &[Complex32], modes: usize, m: usize) -> Option<Image> {
    if modes == 0 || m == 0 || probe.len() != modes * m * m {
        return None;
    }
    let width = modes * m + (modes - 1) * MODE_GAP;
    let mut data = vec![255u8; width * m];
    for k in 0..modes {
        let mode = &probe[k * m * m..(k + 1) * m * m];
        let max = mode
            .iter()
            .map(|c| c.norm())
            .filter(|a| a.is_finite())
            .fold(0.0f32, f32::max);
        let x0 = k * (m + MODE_GAP);
        for y in 0..m {
            for x in 0..m {
                let a = mode[y * m + x].norm();
                let g = if max > 0.0 && a.is_finite() {
                    (a / max * 255.0).round().clamp(0.0, 255.0) as u8
                } else {
                    0
                };
                data[y * width + x0 + x] = g;
            }
        }
    }
    Some(Image {
        width,
        height: m,
        pixels: Pixels::Gray8,
        data,
    })
}

/// `g` (grey) as RGB, each pixel repeated `s` × `s` times (nearest neighbour).
pub fn rgb_scaled(g: &Image, s: usize) -> Image {
    let (w, h, s) = (g.width * s.max(1), g.height * s.max(1), s.max(1));
    let mut data = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let v = match g.pixels {
                Pixels::Gray8 => [g.data[(y / s) * g.width + x / s]; 3],
                Pixels::Rgb8 => {
                    let i = 3 * ((y / s) * g.width + x / s);
                    [g.data[i], g.data[i + 1], g.data[i + 2]]
                }
            };
            data[3 * (y * w + x)..3 * (y * w + x) + 3].copy_from_slice(&v);
        }
    }
    Image {
        width: w,
        height: h,
        pixels: Pixels::Rgb8,
        data,
    }
}

/// The scale bar for an image of `width` pixels of `pixel_m` metres: (length in the unit,
/// the unit, length in pixels): the largest of 1, 2, 5 × 10ⁿ units not longer than a fifth
/// of the width.
pub fn scale_bar(pixel_m: f64, width: usize) -> (f64, &'static str, f64) {
    let (unit, per) = length_unit(pixel_m);
    let px = pixel_m / per; // units per pixel
    let target = 0.2 * width as f64 * px;
    let mut nice = 10f64.powf(target.log10().floor());
    for f in [5.0, 2.0] {
        if nice * f <= target {
            nice *= f;
            break;
        }
    }
    (nice, unit, nice / px)
}

/// The picture of `f(O)` for the object: [`object_image`] (contrast from the scanned
/// `area` only), enlarged ×s (s = ⌈400 / max(Ny, Nx)⌉ clamped to 1..4), everything outside
/// `area` dimmed to [`DIM`], and a [`scale_bar`] for `pixel_m` (the x pixel size, m) in the
/// lower left corner (white on a black box, its length in Å or nm above it when a font is
/// found). `None` when the object is empty.
///
/// Errors: a plotters drawing failure.
pub fn object_picture(
    o: &Field<Complex32>,
    area: Option<[usize; 4]>,
    pixel_m: f64,
    f: impl Fn(&Complex32) -> f32,
) -> Result<Option<Image>> {
    let Some(g) = object_image(o, area, f) else {
        return Ok(None);
    };
    let s = 400usize.div_ceil(g.width.max(g.height)).clamp(1, 4);
    let mut img = rgb_scaled(&g, s);
    if let Some([y0, y1, x0, x1]) = area {
        for y in 0..img.height {
            for x in 0..img.width {
                let inside = (y0 * s..y1 * s).contains(&y) && (x0 * s..x1 * s).contains(&x);
                if !inside {
                    img.data[3 * (y * img.width + x)..3 * (y * img.width + x) + 3]
                        .iter_mut()
                        .for_each(|v| *v = (*v as f32 * DIM).round() as u8);
                }
            }
        }
    }
    if !(pixel_m > 0.0 && pixel_m.is_finite()) || img.width < 40 || img.height < 40 {
        return Ok(Some(grey_if_grey(img)));
    }
    let (len, unit, bar_px) = scale_bar(pixel_m, g.width);
    let bar = (bar_px * s as f64).round() as i32;
    let text = font();
    let (w, h) = (img.width as u32, img.height as u32);
    {
        use plotters::prelude::*;
        let e = |x: String| Error::new("object picture", x);
        let root = BitMapBackend::with_buffer(&mut img.data, (w, h)).into_drawing_area();
        let (x0, yb) = (10i32, h as i32 - 12);
        let top = if text { yb - 30 } else { yb - 12 };
        root.draw(&Rectangle::new(
            [(x0 - 6, top), (x0 + bar + 6, yb + 6)],
            BLACK.mix(0.75).filled(),
        ))
        .map_err(|x| e(x.to_string()))?;
        root.draw(&Rectangle::new(
            [(x0, yb - 6), (x0 + bar, yb)],
            WHITE.filled(),
        ))
        .map_err(|x| e(x.to_string()))?;
        if text {
            let label = if len >= 1.0 {
                format!("{len:.0} {unit}")
            } else {
                format!("{len} {unit}")
            };
            root.draw(&Text::new(
                label,
                (x0, top + 3),
                ("sans-serif", 16).into_font().color(&WHITE),
            ))
            .map_err(|x| e(x.to_string()))?;
        }
        root.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(Some(grey_if_grey(img)))
}

/// `img` as one byte per pixel if every RGB pixel is grey (r = g = b), else unchanged: the
/// object pictures hold only greys, and a grey PNG is a third of the size.
pub fn grey_if_grey(img: Image) -> Image {
    if img.pixels == Pixels::Rgb8 && img.data.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]) {
        let data = img.data.chunks(3).map(|p| p[0]).collect();
        Image {
            pixels: Pixels::Gray8,
            data,
            ..img
        }
    } else {
        img
    }
}

/// Each mode's share Σ|P_k|² / Σ_l Σ|P_l|² of the probe's power (`probe` [K, M, M]); zeros
/// for a zero probe.
pub fn mode_fractions(probe: &[Complex32], modes: usize, m: usize) -> Vec<f64> {
    let p: Vec<f64> = (0..modes)
        .map(|k| {
            probe[k * m * m..(k + 1) * m * m]
                .iter()
                .map(|c| c.norm_sqr() as f64)
                .sum()
        })
        .collect();
    let total: f64 = p.iter().sum();
    p.iter()
        .map(|v| if total > 0.0 { v / total } else { 0.0 })
        .collect()
}

/// [`probe_modes_image`] as RGB, enlarged ×2 for windows under 200 pixels, with a strip of
/// [`LABEL_H`] pixels above it naming each mode and its [`mode_fractions`] share
/// ("mode 1: 93.1 %"; without a font the strip stays white). `None` when there is nothing
/// to draw.
///
/// Errors: a plotters drawing failure.
pub fn probe_picture(probe: &[Complex32], modes: usize, m: usize) -> Result<Option<Image>> {
    let Some(g) = probe_modes_image(probe, modes, m) else {
        return Ok(None);
    };
    let s = if m < 200 { 2 } else { 1 };
    let body = rgb_scaled(&g, s);
    let (w, h) = (body.width, body.height + LABEL_H);
    let mut data = vec![255u8; LABEL_H * w * 3];
    data.extend_from_slice(&body.data);
    let mut img = Image {
        width: w,
        height: h,
        pixels: Pixels::Rgb8,
        data,
    };
    if font() {
        use plotters::prelude::*;
        let e = |x: String| Error::new("probe picture", x);
        let root =
            BitMapBackend::with_buffer(&mut img.data, (w as u32, h as u32)).into_drawing_area();
        for (k, f) in mode_fractions(probe, modes, m).iter().enumerate() {
            let x = (k * (m + MODE_GAP) * s) as i32 + 4;
            let label = if modes == 1 {
                format!("probe: {:.1} % of the power", 100.0 * f)
            } else {
                format!("mode {}: {:.1} %", k + 1, 100.0 * f)
            };
            root.draw(&Text::new(
                label,
                (x, 5),
                ("sans-serif", 15).into_font().color(&BLACK),
            ))
            .map_err(|x| e(x.to_string()))?;
        }
        root.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(Some(img))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 100 × 120 object, phase 0.1·x inside the scanned area [20, 80) × [30, 90), wild
    /// (±50) outside.
    fn object() -> (Field<Complex32>, [usize; 4]) {
        let (ny, nx) = (100, 120);
        let data = (0..ny * nx)
            .map(|i| {
                let (y, x) = (i / nx, i % nx);
                let inside = (20..80).contains(&y) && (30..90).contains(&x);
                Complex32::from_polar(
                    1.0,
                    if inside {
                        0.01 * x as f32
                    } else {
                        50.0 * ((i * 7919 % 13) as f32 - 6.0)
                    },
                )
            })
            .collect();
        (
            Field {
                origin: [0, 0],
                shape: [ny, nx],
                data,
            },
            [20, 80, 30, 90],
        )
    }

    #[test]
    fn object_picture_dims_the_border_and_has_a_scale_bar() {
        let (o, area) = object();
        let img = object_picture(&o, Some(area), 0.1828e-10, |c| c.arg())
            .unwrap()
            .unwrap();
        // ×4: 400 / 120 rounds up to 4
        assert_eq!((img.width, img.height), (480, 400));
        assert_eq!(img.pixels, Pixels::Gray8, "all grey, stored as grey");
        let px = |y: usize, x: usize| img.data[y * img.width + x];
        // contrast from inside only: the inside ramp spans the full range
        let inside: Vec<u8> = (30 * 4..90 * 4).step_by(4).map(|x| px(50 * 4, x)).collect();
        assert!(
            inside[0] <= 3 && *inside.last().unwrap() >= 252,
            "{inside:?}"
        );
        // outside at most DIM of white, above the scale bar's box
        let outside_max = (0..img.width).map(|x| px(4, x)).max().unwrap();
        assert!(
            outside_max <= (255.0 * DIM).round() as u8 + 1,
            "{outside_max}"
        );
        // scale bar: 120 px of 0.1828 Å → a fifth is 4.4 Å → 2 Å = 10.9 px × 4 = 44 white pixels
        assert_eq!(scale_bar(0.1828e-10, 120).0, 2.0);
        let white = (0..img.width)
            .filter(|&x| px(img.height - 14, x) == 255)
            .count();
        assert!((44..=46).contains(&white), "bar row: {white} white pixels");
        assert_eq!(scale_bar(8e-9, 500), (500.0, "nm", 62.5));
    }

    #[test]
    fn probe_picture_labels_mode_powers() {
        let m = 8;
        let probe: Vec<Complex32> = (0..3 * m * m)
            .map(|i| {
                Complex32::new(
                    if i < m * m {
                        3.0
                    } else if i < 2 * m * m {
                        1.0
                    } else {
                        0.0
                    },
                    0.0,
                )
            })
            .collect();
        let f = mode_fractions(&probe, 3, m);
        assert!(
            (f[0] - 0.9).abs() < 1e-12 && (f[1] - 0.1).abs() < 1e-12 && f[2] == 0.0,
            "{f:?}"
        );
        let img = probe_picture(&probe, 3, m).unwrap().unwrap();
        assert_eq!(
            (img.width, img.height),
            (2 * (3 * m + 2 * MODE_GAP), 2 * m + LABEL_H)
        );
        // the label strip holds dark text pixels where a font was found
        let dark = img.data[..3 * img.width * LABEL_H]
            .chunks(3)
            .filter(|p| p[0] < 100)
            .count();
        assert!(!font() || dark > 20, "{dark}");
    }
}
