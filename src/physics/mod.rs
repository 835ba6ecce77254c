//! Physics: wavelengths, sampling, probe formation, the single-slice far-field forward
//! model with its adjoints (docs/algorithm.md §1–§3) and the multislice propagator (§12).

pub mod fft;
pub mod model;
pub mod multislice;
pub mod probe;
pub mod simd;

use crate::error::{Error, Result};

/// Planck constant × speed of light, in eV·m.
pub const HC_EV_M: f64 = 1.239_841_984_332e-6;
/// Electron rest energy m₀c² in eV.
pub const ELECTRON_REST_EV: f64 = 510_998.950_00;

/// Relativistic electron wavelength in m for accelerating energy `energy_ev` (eV):
/// λ = hc / √(E (2 m₀c² + E)). 300 keV → 1.9687e-12 m.
pub fn electron_wavelength_m(energy_ev: f64) -> f64 {
    HC_EV_M / (energy_ev * (2.0 * ELECTRON_REST_EV + energy_ev)).sqrt()
}

/// Photon wavelength in m: λ = hc / E.
pub fn xray_wavelength_m(energy_ev: f64) -> f64 {
    HC_EV_M / energy_ev
}

/// Real-space pixel size (m) of an `m`-pixel window for electrons: Δx = λ / (M Δθ),
/// Δθ in rad per detector pixel.
pub fn pixel_size_from_angular_m(wavelength_m: f64, m: usize, dtheta_rad: f64) -> f64 {
    wavelength_m / (m as f64 * dtheta_rad)
}

/// Real-space pixel size (m) for far-field X-ray geometry: Δx = λ z / (M p), with
/// detector distance z (m) and detector pixel size p (m).
pub fn pixel_size_from_detector_m(
    wavelength_m: f64,
    m: usize,
    distance_m: f64,
    det_pixel_m: f64,
) -> f64 {
    wavelength_m * distance_m / (m as f64 * det_pixel_m)
}

/// Everything the forward model needs to know about the experiment, in SI units.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// Wavelength λ in m.
    pub wavelength_m: f64,
    /// Real-space pixel size (y, x) in m of the object and probe arrays.
    pub pixel_size_m: [f64; 2],
    /// Detector side M in pixels (patterns are M × M).
    pub detector_px: usize,
    /// Probe-forming aperture semi-angle α in rad (None: not known; needed to form a probe).
    pub convergence_semiangle_rad: Option<f64>,
    /// Defocus Δf in m, positive = underfocus (C10 = −Δf).
    pub defocus_m: f64,
    /// Spherical aberration C30 in m.
    pub c30_m: f64,
    /// Angular sampling per detector pixel in rad (electrons; for X-rays p / z).
    pub dtheta_rad: f64,
}

impl Experiment {
    /// Validate the derived numbers (positive, finite).
    pub fn check(&self) -> Result<()> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        if !ok(self.wavelength_m) {
            return Err(Error::new(
                "experiment.energy_ev",
                "gives no valid wavelength",
            ));
        }
        if !ok(self.pixel_size_m[0]) || !ok(self.pixel_size_m[1]) || !ok(self.dtheta_rad) {
            return Err(Error::new(
                "experiment",
                "detector sampling gives no valid pixel size",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn electron_wavelength_300kv() {
        // Dataset metadata: 300 kV → λ = 0.019687488897 Å.
        let l = electron_wavelength_m(300e3);
        assert!((l * 1e10 - 0.019_687_488_9).abs() < 1e-8, "{l}");
        // 200 kV textbook value 0.02508 Å
        assert!((electron_wavelength_m(200e3) * 1e10 - 0.025_079).abs() < 1e-5);
    }

    #[test]
    fn pixel_sizes() {
        // PbTiO3 file: 128 px, 0.84134568 mrad → 0.1828125 Å
        let dx = pixel_size_from_angular_m(electron_wavelength_m(300e3), 128, 0.841_345_68e-3);
        assert!((dx * 1e10 - 0.182_812_5).abs() < 1e-6, "{dx}");
        // 8 keV, 5 m, 75 µm, 256 px → λ z /(M p)
        let l = xray_wavelength_m(8000.0);
        assert!((l - 1.549_802_5e-10).abs() < 1e-15);
        let dx = pixel_size_from_detector_m(l, 256, 5.0, 75e-6);
        assert!((dx - l * 5.0 / (256.0 * 75e-6)).abs() < 1e-20);
    }
}
