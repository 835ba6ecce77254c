//! Preview images beside the result file, encoded with the `png` crate. Nothing here is
//! read back; the HDF5 file is the result.
//!
//! | file | content |
//! |---|---|
//! | `<stem>_object_phase.png` | arg O (multislice: the projected phase Σ_s arg O_s), [Ny, Nx] pixels, row = y, 8-bit grey |
//! | `<stem>_object_amplitude.png` | \|O\| (multislice: Π_s \|O_s\|), likewise |
//! | `<stem>_probe_modes.png` | \|P_k\| of the K modes side by side, [M, K·M + 2(K−1)], 8-bit grey |
//! | `<stem>_loss.png` | log10(loss) against iteration, 480 × 320 RGB |
//!
//! Object images map the 0.5th..99.5th percentile of the values linearly to 0..255
//! (clamped); each probe mode is scaled to its own maximum; modes are separated by
//! 2-pixel white gaps.

use super::ReconResult;
use crate::error::{Context, Result};
use crate::physics::model::Field;
use num_complex::Complex32;
use std::io::BufWriter;
use std::path::Path;

/// Width of the loss plot in pixels.
pub const LOSS_W: usize = 480;
/// Height of the loss plot in pixels.
pub const LOSS_H: usize = 320;
/// Gap between probe modes in the probe image (pixels).
pub const MODE_GAP: usize = 2;
const MARGIN: usize = 30;
const LINE_RGB: [u8; 3] = [31, 119, 180];

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
pub fn images(r: &ReconResult) -> Vec<(&'static str, Image)> {
    let mut out = Vec::new();
    let area = scanned_area(r);
    if r.object.planes() > 1 {
        // multislice: the projected phase Σ_s arg O_s (unwrapped across slices) and the
        // product of the slices' amplitudes
        let (o, n) = (&r.object, r.object.plane_len());
        let ph = crate::physics::multislice::projected_phase(&o.data, n);
        let amp = (0..n).map(|i| (0..o.planes()).map(|s| o.data[s * n + i].norm()).product::<f32>());
        let proj = Field { origin: o.origin, shape: o.shape, data: ph.iter().zip(amp).map(|(p, a)| Complex32::new(*p as f32, a)).collect() };
        out.extend(object_image(&proj, area, |c| c.re).map(|i| ("object_phase", i)));
        out.extend(object_image(&proj, area, |c| c.im).map(|i| ("object_amplitude", i)));
    } else {
        // phase relative to the mean phase of the scanned area, so it does not wrap at ±π there
        let mut mean = Complex32::new(0.0, 0.0);
        if let Some([y0, y1, x0, x1]) = area {
            for y in y0..y1 {
                mean += r.object.data[y * r.object.shape[1] + x0..y * r.object.shape[1] + x1].iter().sum::<Complex32>();
            }
        }
        let rot = if mean.norm() > 0.0 { mean.conj() / mean.norm() } else { Complex32::new(1.0, 0.0) };
        out.extend(object_image(&r.object, area, |c| (c * rot).arg()).map(|i| ("object_phase", i)));
        out.extend(object_image(&r.object, area, |c| c.norm()).map(|i| ("object_amplitude", i)));
    }
    if let Some(i) = probe_modes_image(&r.probe, r.modes, r.m) {
        out.push(("probe_modes", i));
    }
    out.push(("loss", loss_plot(&r.loss)));
    out
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
    let lo = |a: usize| r.positions_px.iter().map(|p| p[a]).fold(f64::INFINITY, f64::min).floor().max(0.0) as usize;
    let hi = |a: usize, n: usize| (r.positions_px.iter().map(|p| p[a]).fold(f64::NEG_INFINITY, f64::max).ceil() as usize + 1).min(n);
    let a = [lo(0), hi(0, ny), lo(1), hi(1, nx)];
    (a[0] < a[1] && a[2] < a[3]).then_some(a)
}

/// A grey image of `f(O)` for the object, [Ny, Nx] (row = y), percentile-scaled with the
/// percentiles taken inside `area` (the scanned region; the whole object if None), so the
/// poorly lit border does not set the contrast; `None` when the object is empty.
pub fn object_image(o: &Field<Complex32>, area: Option<[usize; 4]>, f: impl Fn(&Complex32) -> f32) -> Option<Image> {
    let [ny, nx] = o.shape;
    if ny == 0 || nx == 0 || o.data.len() != ny * nx {
        return None;
    }
    let vals: Vec<f32> = o.data.iter().map(f).collect();
    let [y0, y1, x0, x1] = area.unwrap_or([0, ny, 0, nx]);
    let inside: Vec<f32> = (y0..y1).flat_map(|y| vals[y * nx + x0..y * nx + x1].iter().copied()).collect();
    Some(Image { width: nx, height: ny, pixels: Pixels::Gray8, data: percentile_to_u8_by(&vals, &inside) })
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
        let max = mode.iter().map(|c| c.norm()).filter(|a| a.is_finite()).fold(0.0f32, f32::max);
        let x0 = k * (m + MODE_GAP);
        for y in 0..m {
            for x in 0..m {
                let a = mode[y * m + x].norm();
                let g = if max > 0.0 && a.is_finite() { (a / max * 255.0).round().clamp(0.0, 255.0) as u8 } else { 0 };
                data[y * width + x0 + x] = g;
            }
        }
    }
    Some(Image { width, height: m, pixels: Pixels::Gray8, data })
}

fn put(img: &mut Image, x: i64, y: i64, rgb: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as usize) < img.width && (y as usize) < img.height {
        let i = 3 * (y as usize * img.width + x as usize);
        img.data[i..i + 3].copy_from_slice(&rgb);
    }
}

/// Bresenham line from (x0, y0) to (x1, y1), both ends included; pixels outside the
/// image are skipped.
fn line(img: &mut Image, (mut x0, mut y0): (i64, i64), (x1, y1): (i64, i64), rgb: [u8; 3]) {
    let dx = (x1 - x0).abs();
    let dy = -(y1 - y0).abs();
    let sx = if x0 < x1 { 1 } else { -1 };
    let sy = if y0 < y1 { 1 } else { -1 };
    let mut err = dx + dy;
    loop {
        put(img, x0, y0, rgb);
        if x0 == x1 && y0 == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x0 += sx;
        }
        if e2 <= dx {
            err += dx;
            y0 += sy;
        }
    }
}

/// A [`LOSS_W`]×[`LOSS_H`] RGB plot of log10(loss) against iteration: white background,
/// black frame, blue line joining the finite positive values (others are skipped). One
/// point is drawn as a 3×3 dot; none gives an empty frame. No axis labels.
pub fn loss_plot(loss: &[f64]) -> Image {
    let mut img = Image { width: LOSS_W, height: LOSS_H, pixels: Pixels::Rgb8, data: vec![255; LOSS_W * LOSS_H * 3] };
    let (l, r, t, b) = (MARGIN as i64, (LOSS_W - MARGIN) as i64, MARGIN as i64, (LOSS_H - MARGIN) as i64);
    let black = [0, 0, 0];
    line(&mut img, (l, t), (r, t), black);
    line(&mut img, (r, t), (r, b), black);
    line(&mut img, (r, b), (l, b), black);
    line(&mut img, (l, b), (l, t), black);

    let pts: Vec<(usize, f64)> = loss
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite() && **v > 0.0)
        .map(|(i, v)| (i, v.log10()))
        .collect();
    if pts.is_empty() {
        return img;
    }
    let (mut ymin, mut ymax) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if ymax - ymin < 1e-12 {
        ymin -= 0.5;
        ymax += 0.5;
    }
    // Inner plot area, a few pixels inside the frame.
    let (il, ir, it, ib) = (l + 4, r - 4, t + 4, b - 4);
    let xmax = (loss.len() - 1).max(1) as f64;
    let to_px = |(i, v): (usize, f64)| -> (i64, i64) {
        let x = if loss.len() == 1 { (il + ir) / 2 } else { il + ((ir - il) as f64 * i as f64 / xmax).round() as i64 };
        let y = ib - ((ib - it) as f64 * (v - ymin) / (ymax - ymin)).round() as i64;
        (x, y)
    };
    if pts.len() == 1 {
        let (x, y) = to_px(pts[0]);
        for dy in -1..=1 {
            for dx in -1..=1 {
                put(&mut img, x + dx, y + dy, LINE_RGB);
            }
        }
        return img;
    }
    for w in pts.windows(2) {
        line(&mut img, to_px(w[0]), to_px(w[1]), LINE_RGB);
    }
    img
}
