//! Plots drawn with plotters into an RGB [`Image`]: the loss history of a result and the
//! Fourier ring correlation of `ptytile frc`. Text needs a system font ([`font`]); without
//! one the plots are drawn without labels.

use super::png::{Image, Pixels};
use crate::error::{Error, Result};
use plotters::prelude::*;

/// Width and height (pixels) of the loss and FRC plots.
pub const PLOT_WH: (u32, u32) = (640, 400);

/// Line colour of the plotted data (matplotlib's first colour).
pub const DATA_RGB: RGBColor = RGBColor(31, 119, 180);
/// Colour of the ½-bit threshold curve.
pub const THRESHOLD_RGB: RGBColor = RGBColor(214, 39, 40);

/// A font for the plots' labels: DejaVu Sans or Liberation Sans from the usual system
/// folders, registered with plotters once as "sans-serif". False when none is found.
pub fn font() -> bool {
    static FONT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FONT.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        ];
        candidates
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .is_some_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font(
                    "sans-serif",
                    plotters::style::FontStyle::Normal,
                    bytes,
                )
                .is_ok()
            })
    })
}

/// The length unit to show a pixel of `pixel_m` metres in: (name, metres per unit): Å below
/// 1 nm (electron ptychography), nm below 1 µm, else µm.
pub fn length_unit(pixel_m: f64) -> (&'static str, f64) {
    if pixel_m < 1e-9 {
        ("Å", 1e-10)
    } else if pixel_m < 1e-6 {
        ("nm", 1e-9)
    } else {
        ("µm", 1e-6)
    }
}

/// `v` with 4 significant digits (scientific notation below 0.001 and from 10⁷ on).
pub fn significant(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let e = v.abs().log10().floor() as i32;
    if !(-3..7).contains(&e) {
        format!("{v:.3e}")
    } else {
        format!("{v:.*}", (3 - e).max(0) as usize)
    }
}

/// A [`PLOT_WH`] RGB image of the pixels `buf`.
fn rgb_image(buf: Vec<u8>) -> Image {
    Image {
        width: PLOT_WH.0 as usize,
        height: PLOT_WH.1 as usize,
        pixels: Pixels::Rgb8,
        data: buf,
    }
}

fn err(what: &str) -> impl Fn(String) -> Error + '_ {
    move |e| Error::new(what, e)
}

/// The loss per pattern against iteration (0-based), y on a log₁₀ scale, with axes, ticks
/// and labels, [`PLOT_WH`]. The y axis is linear in log₁₀(loss), its tick labels the loss
/// itself (plotters' own log axis labels only powers of ten, none within a decade).
/// Non-finite and non-positive values are left out; with none left the axes are drawn over
/// 1..10.
///
/// Errors (what = "loss plot"): a plotters drawing failure.
pub fn loss_plot(loss: &[f64]) -> Result<Image> {
    let (w, h) = PLOT_WH;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let text = font();
    let e = err("loss plot");
    let pts: Vec<(f64, f64)> = loss
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite() && **v > 0.0)
        .map(|(i, v)| (i as f64, v.log10()))
        .collect();
    let (lo, hi) = pts
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    // a margin of 5 % of the span (at least 0.05 decades) above and below
    let pad = if pts.is_empty() {
        0.0
    } else {
        (0.05 * (hi - lo)).max(0.05)
    };
    let (lo, hi) = if pts.is_empty() {
        (0.0, 1.0)
    } else {
        (lo - pad, hi + pad)
    };
    let xmax = (loss.len().max(2) - 1) as f64;
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let mut b = ChartBuilder::on(&root);
        b.margin(14)
            .x_label_area_size(if text { 44 } else { 5 })
            .y_label_area_size(if text { 78 } else { 5 });
        if text {
            b.caption("loss per diffraction pattern", ("sans-serif", 20));
        }
        let mut chart = b
            .build_cartesian_2d(0f64..xmax, lo..hi)
            .map_err(|x| e(x.to_string()))?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(RGBColor(235, 235, 235));
        if text {
            mesh.x_desc("iteration")
                .y_desc("loss (log scale)")
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| significant(10f64.powf(*y)));
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|x| e(x.to_string()))?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                pts.clone(),
                DATA_RGB.stroke_width(2),
            )))
            .map_err(|x| e(x.to_string()))?;
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 2, DATA_RGB.filled())))
            .map_err(|x| e(x.to_string()))?;
        root.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(rgb_image(buf))
}

/// The Fourier ring correlation against spatial frequency (`freq`, 1/`unit`), the ½-bit
/// threshold, and, where it crosses (`crossing`, 1/`unit`), a vertical line labelled with
/// the resolution 1/crossing in `unit`; [`PLOT_WH`].
///
/// Errors (what = "FRC plot"): lengths of `freq`, `frc`, `threshold` that differ, or a
/// plotters drawing failure.
pub fn frc_plot(
    freq: &[f64],
    frc: &[f64],
    threshold: &[f64],
    crossing: Option<f64>,
    unit: &str,
) -> Result<Image> {
    let e = err("FRC plot");
    if freq.len() != frc.len() || freq.len() != threshold.len() || freq.is_empty() {
        return Err(e(format!(
            "{} frequencies, {} FRC values, {} thresholds",
            freq.len(),
            frc.len(),
            threshold.len()
        )));
    }
    let (w, h) = PLOT_WH;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let text = font();
    let xmax = freq
        .iter()
        .copied()
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let ymin = frc
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::min)
        .max(-1.0)
        - 0.05;
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let mut b = ChartBuilder::on(&root);
        b.margin(14)
            .x_label_area_size(if text { 44 } else { 5 })
            .y_label_area_size(if text { 56 } else { 5 });
        if text {
            let res = crossing.map_or("not reached (≥ Nyquist)".to_string(), |q| {
                format!("{:.3} {unit}", 1.0 / q)
            });
            b.caption(
                format!("Fourier ring correlation, ½-bit resolution {res}"),
                ("sans-serif", 18),
            );
        }
        let mut chart = b
            .build_cartesian_2d(0f64..xmax, ymin..1.05f64)
            .map_err(|x| e(x.to_string()))?;
        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(RGBColor(235, 235, 235));
        if text {
            mesh.x_desc(format!("spatial frequency (1/{unit})"))
                .y_desc("FRC");
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(|x| e(x.to_string()))?;
        let frc_line = std::iter::once(PathElement::new(
            freq.iter()
                .zip(frc)
                .map(|(q, f)| (*q, *f))
                .collect::<Vec<_>>(),
            DATA_RGB.stroke_width(2),
        ));
        let thr_line = std::iter::once(PathElement::new(
            freq.iter()
                .zip(threshold)
                .map(|(q, t)| (*q, *t))
                .collect::<Vec<_>>(),
            THRESHOLD_RGB.stroke_width(2),
        ));
        let a = chart.draw_series(frc_line).map_err(|x| e(x.to_string()))?;
        if text {
            a.label("FRC").legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], DATA_RGB.stroke_width(2))
            });
        }
        let t = chart.draw_series(thr_line).map_err(|x| e(x.to_string()))?;
        if text {
            t.label("½-bit threshold").legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], THRESHOLD_RGB.stroke_width(2))
            });
        }
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 0.0), (xmax, 0.0)],
                BLACK.mix(0.4),
            )))
            .map_err(|x| e(x.to_string()))?;
        if let Some(q) = crossing {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(q, ymin), (q, 1.05)],
                    BLACK.stroke_width(1),
                )))
                .map_err(|x| e(x.to_string()))?;
            if text {
                let label = Text::new(
                    format!("{:.3} {unit}", 1.0 / q),
                    (q + 0.01 * xmax, 0.9),
                    ("sans-serif", 15),
                );
                chart
                    .draw_series(std::iter::once(label))
                    .map_err(|x| e(x.to_string()))?;
            }
        }
        if text {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .border_style(BLACK.mix(0.3))
                .background_style(WHITE.mix(0.9))
                .draw()
                .map_err(|x| e(x.to_string()))?;
        }
        root.present().map_err(|x| e(x.to_string()))?;
    }
    Ok(rgb_image(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(img: &Image, c: RGBColor) -> usize {
        img.data.chunks(3).filter(|p| p == &[c.0, c.1, c.2]).count()
    }

    #[test]
    fn plots_draw_their_curves() {
        let img = loss_plot(&[100.0, 50.0, 20.0, 15.0, f64::NAN, 12.0]).unwrap();
        assert_eq!(
            (img.width, img.height, img.data.len()),
            (640, 400, 640 * 400 * 3)
        );
        assert!(has(&img, DATA_RGB) > 100);
        assert!(has(&loss_plot(&[]).unwrap(), DATA_RGB) == 0);
        let q: Vec<f64> = (0..50).map(|i| i as f64 * 0.05).collect();
        let f: Vec<f64> = q.iter().map(|q| (-q * q).exp()).collect();
        let t = vec![0.2; 50];
        let img = frc_plot(&q, &f, &t, Some(1.27), "Å").unwrap();
        assert!(has(&img, DATA_RGB) > 100 && has(&img, THRESHOLD_RGB) > 100);
        assert!(frc_plot(&q, &f[1..], &t, None, "Å")
            .unwrap_err()
            .to_string()
            .starts_with("FRC plot: 50 frequencies, 49"));
        assert_eq!(length_unit(1.8e-11), ("Å", 1e-10));
        assert_eq!(
            [
                significant(1995.26),
                significant(3.16228),
                significant(0.012345),
                significant(2.5e-5)
            ],
            ["1995", "3.162", "0.01235", "2.500e-5"]
        );
        assert_eq!(length_unit(2e-8).0, "nm");
    }
}
