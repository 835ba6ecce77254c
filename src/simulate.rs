//! Synthetic datasets (`ptytile simulate`): a known object, a probe formed from the
//! aperture and aberrations (optionally with K incoherent modes of given powers), a raster
//! scan with sub-pixel jitter, the same forward model as the reconstruction, and Poisson
//! counts at a chosen dose. The file follows the layout of the shared PbTiO3 dataset, so
//! the same config keys read it, and carries the ground truth for `ptytile compare`.
//!
//! Layout written (all 2-D arrays [row = y, column = x], positions (y, x)):
//! `/data/intensities` float32 [N, M, M] counts, zero frequency at [M/2, M/2];
//! `/data/positions_px` float64 [N, 2] probe centres in object pixels;
//! `/probe/probe_real` complex64 [K, M, M]; `/ground_truth/object` complex64 [H, W];
//! attributes of `/meta`: energy_eV, convergence_semiangle_mrad, defocus_m,
//! angular_sampling_mrad, pixel_size_m, dose_counts_per_pattern, seed, mode_powers.
//!
//! X-ray (`beam = Xray`, docs/algorithm.md §16): λ = hc/E, the probe a zone-plate-like
//! pupil (a disk of semi-angle α, optionally with a central stop) defocused by `defocus_m`.
//! Like a beamline's CXI file, `/meta` then holds only what the geometry gives:
//! energy_eV, detector_distance_m and detector_pixel_size_m (a 75 µm pixel at the distance
//! that makes Δθ = λ / (M Δx)), pixel_size_m, dose_counts_per_pattern, seed, mode_powers;
//! the pupil's semi-angle, central stop and defocus are attributes of `/probe/probe_real`
//! (`pupil_semiangle_mrad`, `central_stop`, `defocus_m`), where no reader looks, so the
//! written config starts without a probe guess (add `data.probe = "/probe/probe_real"` to
//! start from the true probe).

use crate::backend::cpu::model_intensities;
use crate::backend::kernel::{probe_spectrum, Kernel};
use crate::config::{Beam, NoiseModel};
use crate::error::{Context, Error, Result};
use crate::physics::fft::Fft2;
use crate::physics::model::{Field, PositionGeom};
use crate::physics::{self, probe, Experiment};
use num_complex::Complex32;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use std::path::{Path, PathBuf};

/// Detector pixel (m) written for X-ray simulations (a 75 µm hybrid pixel detector); the
/// distance follows from the sampling.
pub const XRAY_DETECTOR_PIXEL_M: f64 = 75e-6;

/// What to simulate. Units as named.
#[derive(Debug, Clone)]
pub struct SimParams {
    /// Detector / probe window side M (px).
    pub m: usize,
    /// Scan shape (rows, columns).
    pub scan: [usize; 2],
    /// Scan step in object pixels.
    pub step_px: f64,
    /// Uniform random jitter of each position, ± this many pixels (sub-pixel positions).
    pub jitter_px: f64,
    /// Radiation: electrons (default) or X-rays (λ = hc/E; a zone-plate-like probe and a
    /// CXI-like `/meta`, see the module docs).
    pub beam: Beam,
    /// Beam energy in eV (electron accelerating energy or photon energy).
    pub energy_ev: f64,
    /// Convergence semi-angle in mrad (X-ray: the zone plate's outer semi-angle, NA).
    pub semiangle_mrad: f64,
    /// Central stop: the fraction of the pupil radius blocked, in [0, 1); 0 = none.
    pub central_stop: f64,
    /// Defocus in m (positive = underfocus).
    pub defocus_m: f64,
    /// Object pixel size in m; sets the angular sampling Δθ = λ / (M Δx).
    pub pixel_size_m: f64,
    /// Mean counts per diffraction pattern; `None` = noise-free intensities.
    pub dose: Option<f64>,
    /// Relative powers of the incoherent probe modes (normalised to sum 1); `[1.0]` = one mode.
    pub mode_powers: Vec<f64>,
    /// Maximum phase of the object in rad.
    pub max_phase: f64,
    /// Object from a grayscale PNG (phase ∝ gray level); `None` = built-in lattice of atoms.
    pub image: Option<PathBuf>,
    /// RNG seed (positions jitter, atom displacements, Poisson noise).
    pub seed: u64,
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams {
            m: 64,
            scan: [16, 16],
            step_px: 3.0,
            jitter_px: 0.3,
            beam: Beam::Electron,
            energy_ev: 300e3,
            semiangle_mrad: 25.0,
            central_stop: 0.0,
            defocus_m: 50e-10,
            pixel_size_m: 0.2e-10,
            dose: Some(1e5),
            mode_powers: vec![1.0],
            max_phase: 0.8,
            image: None,
            seed: 0,
        }
    }
}

/// A simulated measurement with its ground truth.
#[derive(Debug, Clone)]
pub struct Simulated {
    /// Counts [N, M, M], zero frequency at [M/2, M/2], row-major (position, ky, kx).
    pub intensities: Vec<f32>,
    /// Probe centres (y, x) in object pixels, [N].
    pub positions_px: Vec<[f64; 2]>,
    /// True probe modes [K, M, M].
    pub probe: Vec<Complex32>,
    /// True object [H, W].
    pub object: Field<Complex32>,
    /// The experiment.
    pub experiment: Experiment,
}

/// Simulate a dataset. Errors: invalid parameters (named by their option), unreadable image.
pub fn simulate(p: &SimParams) -> Result<Simulated> {
    if p.m < 8 || p.m % 2 == 1 {
        return Err(Error::new("--probe-size", "must be an even number ≥ 8"));
    }
    if p.scan[0] == 0 || p.scan[1] == 0 {
        return Err(Error::new("--scan", "needs at least one position"));
    }
    for (opt, v) in [
        ("--step-px", p.step_px),
        ("--energy-ev", p.energy_ev),
        ("--semiangle-mrad", p.semiangle_mrad),
        ("--pixel-size-m", p.pixel_size_m),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(Error::new(
                opt,
                format!("must be a positive number, got {v}"),
            ));
        }
    }
    if let Some(d) = p.dose {
        if !(d.is_finite() && d > 0.0) {
            return Err(Error::new(
                "--dose",
                format!("must be a positive number, got {d}"),
            ));
        }
    }
    if !(0.0..1.0).contains(&p.central_stop) {
        return Err(Error::new(
            "--central-stop",
            format!(
                "must be a fraction of the pupil radius in [0, 1), got {}",
                p.central_stop
            ),
        ));
    }
    if p.mode_powers.is_empty() || p.mode_powers.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
        return Err(Error::new("--mode-powers", "must be positive numbers"));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let m = p.m;
    let wavelength = match p.beam {
        Beam::Electron => physics::electron_wavelength_m(p.energy_ev),
        Beam::Xray => physics::xray_wavelength_m(p.energy_ev),
    };
    let exp = Experiment {
        wavelength_m: wavelength,
        pixel_size_m: [p.pixel_size_m; 2],
        detector_px: m,
        convergence_semiangle_rad: Some(p.semiangle_mrad * 1e-3),
        defocus_m: p.defocus_m,
        c30_m: 0.0,
        dtheta_rad: wavelength / (m as f64 * p.pixel_size_m),
    };
    // positions: raster + jitter, with a margin of 2 px around the windows
    let margin = 2.0 + p.jitter_px.abs();
    let h = (m / 2) as f64 + margin;
    let positions_px: Vec<[f64; 2]> = (0..p.scan[0] * p.scan[1])
        .map(|j| {
            let (iy, ix) = (j / p.scan[1], j % p.scan[1]);
            let jy = rng.random_range(-1.0..=1.0) * p.jitter_px;
            let jx = rng.random_range(-1.0..=1.0) * p.jitter_px;
            [
                h + iy as f64 * p.step_px + jy,
                h + ix as f64 * p.step_px + jx,
            ]
        })
        .collect();
    let shape = [
        (h + (p.scan[0] - 1) as f64 * p.step_px + h).ceil() as usize + 1,
        (h + (p.scan[1] - 1) as f64 * p.step_px + h).ceil() as usize + 1,
    ];
    let phase = match &p.image {
        Some(path) => image_phase(path, shape)?,
        None => lattice_phase(shape, &mut rng),
    };
    let object = Field {
        origin: [0, 0],
        shape,
        data: phase
            .iter()
            .map(|v| Complex32::from_polar((-0.05 * v).exp() as f32, (v * p.max_phase) as f32))
            .collect(),
    };
    // probe modes with the requested powers; total power = dose (or 1e4 when noise-free)
    let total = p.dose.unwrap_or(1e4);
    let k = p.mode_powers.len();
    let p0 = probe::form_probe_stopped(&exp, total, p.central_stop)?;
    let mut modes = probe::initial_modes(&p0, m, k);
    let wsum: f64 = p.mode_powers.iter().sum();
    for (j, mode) in modes.chunks_mut(m * m).enumerate() {
        probe::normalise(mode, total * p.mode_powers[j] / wsum);
    }
    let fft = Fft2::<f32>::new(m);
    let kernel = Kernel {
        fft: fft.clone(),
        modes: k,
        noise: NoiseModel::Poisson,
        eps: 0.0,
        weights: None,
        propagator: Vec::new(),
    };
    let geom: Vec<PositionGeom<f32>> = positions_px
        .iter()
        .enumerate()
        .map(|(j, c)| PositionGeom::new(j, *c, m))
        .collect();
    let ideal = model_intensities(&kernel, &object, &probe_spectrum(&fft, &modes), &geom);
    let mm = m * m;
    let mut intensities = vec![0f32; ideal.len()];
    for (j, pat) in ideal.chunks(mm).enumerate() {
        // kernel layout [kx][ky] corner-centred → file layout [ky][kx] centred
        let out = &mut intensities[j * mm..(j + 1) * mm];
        for ky in 0..m {
            for kx in 0..m {
                let v = pat[((kx + m / 2) % m) * m + (ky + m / 2) % m].max(0.0) as f64;
                out[ky * m + kx] = match p.dose {
                    None => v as f32,
                    Some(_) if v <= 0.0 => 0.0,
                    Some(_) => Poisson::new(v).map(|d| d.sample(&mut rng)).unwrap_or(0.0) as f32,
                };
            }
        }
    }
    Ok(Simulated {
        intensities,
        positions_px,
        probe: modes,
        object,
        experiment: exp,
    })
}

/// Built-in object: Gaussian "atoms" (σ = 1.2 px) on a square lattice of 8 px with random
/// displacements of 0.5 px RMS and random strengths in [0.5, 1]; values in [0, 1].
fn lattice_phase(shape: [usize; 2], rng: &mut ChaCha8Rng) -> Vec<f64> {
    let (a, sigma) = (8.0, 1.2);
    let mut out = vec![0f64; shape[0] * shape[1]];
    let ny = (shape[0] as f64 / a).ceil() as usize + 1;
    let nx = (shape[1] as f64 / a).ceil() as usize + 1;
    for iy in 0..ny {
        for ix in 0..nx {
            let cy = iy as f64 * a + rng.random_range(-0.9..0.9);
            let cx = ix as f64 * a
                + rng.random_range(-0.9..0.9)
                + if iy % 2 == 1 { a / 2.0 } else { 0.0 };
            let s = rng.random_range(0.5..1.0);
            let (y0, y1) = (
                (cy - 4.0 * sigma).floor().max(0.0) as usize,
                ((cy + 4.0 * sigma).ceil() as usize).min(shape[0]),
            );
            let (x0, x1) = (
                (cx - 4.0 * sigma).floor().max(0.0) as usize,
                ((cx + 4.0 * sigma).ceil() as usize).min(shape[1]),
            );
            for y in y0..y1 {
                for x in x0..x1 {
                    let r2 = (y as f64 - cy).powi(2) + (x as f64 - cx).powi(2);
                    out[y * shape[1] + x] += s * (-r2 / (2.0 * sigma * sigma)).exp();
                }
            }
        }
    }
    let max = out.iter().cloned().fold(0.0, f64::max).max(1e-12);
    out.iter_mut().for_each(|v| *v /= max);
    out
}

/// Grayscale (or RGB, averaged) PNG resampled bilinearly to `shape`, values in [0, 1].
fn image_phase(path: &Path, shape: [usize; 2]) -> Result<Vec<f64>> {
    let what = || path.display().to_string();
    let file = std::fs::File::open(path).ctx(what)?;
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().ctx(what)?;
    let mut buf = vec![
        0u8;
        reader
            .output_buffer_size()
            .ok_or_else(|| Error::new(what(), "image too large"))?
    ];
    let info = reader.next_frame(&mut buf).ctx(what)?;
    let ch = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    if w == 0 || h == 0 {
        return Err(Error::new(what(), "empty image"));
    }
    let gray = |y: usize, x: usize| -> f64 {
        let px = &buf[(y * w + x) * ch..][..ch];
        let c = if ch >= 3 {
            (px[0] as f64 + px[1] as f64 + px[2] as f64) / 3.0
        } else {
            px[0] as f64
        };
        c / 255.0
    };
    let mut out = vec![0f64; shape[0] * shape[1]];
    for y in 0..shape[0] {
        for x in 0..shape[1] {
            let fy = y as f64 * (h - 1) as f64 / (shape[0] - 1).max(1) as f64;
            let fx = x as f64 * (w - 1) as f64 / (shape[1] - 1).max(1) as f64;
            let (y0, x0) = (fy.floor() as usize, fx.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
            let (ty, tx) = (fy - y0 as f64, fx - x0 as f64);
            out[y * shape[1] + x] = (1.0 - ty) * ((1.0 - tx) * gray(y0, x0) + tx * gray(y0, x1))
                + ty * ((1.0 - tx) * gray(y1, x0) + tx * gray(y1, x1));
        }
    }
    Ok(out)
}

/// Write a simulated dataset (layout in the module docs) atomically, plus `<stem>.toml`, a
/// ready-to-use ptytile config beside it. Returns both paths.
pub fn write(path: &Path, s: &Simulated, p: &SimParams) -> Result<(PathBuf, PathBuf)> {
    let what = || path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).ctx(|| dir.display().to_string())?;
    }
    let tmp = crate::output::temp_path(path);
    let res = (|| -> hdf5::Result<()> {
        let f = hdf5::File::create(&tmp)?;
        let m = p.m;
        let n = s.positions_px.len();
        let data = f.create_group("data")?;
        let arr = ndarray::ArrayView3::from_shape((n, m, m), &s.intensities)
            .map_err(|e| hdf5::Error::from(e.to_string().as_str()))?;
        data.new_dataset_builder()
            .with_data(&arr)
            .create("intensities")?;
        let pos: Vec<f64> = s.positions_px.iter().flat_map(|c| [c[0], c[1]]).collect();
        let arr = ndarray::ArrayView2::from_shape((n, 2), &pos)
            .map_err(|e| hdf5::Error::from(e.to_string().as_str()))?;
        data.new_dataset_builder()
            .with_data(&arr)
            .create("positions_px")?;
        let k = s.probe.len() / (m * m);
        let arr = ndarray::ArrayView3::from_shape((k, m, m), &s.probe)
            .map_err(|e| hdf5::Error::from(e.to_string().as_str()))?;
        let probe_ds = f
            .create_group("probe")?
            .new_dataset_builder()
            .with_data(&arr)
            .create("probe_real")?;
        let arr =
            ndarray::ArrayView2::from_shape((s.object.shape[0], s.object.shape[1]), &s.object.data)
                .map_err(|e| hdf5::Error::from(e.to_string().as_str()))?;
        f.create_group("ground_truth")?
            .new_dataset_builder()
            .with_data(&arr)
            .create("object")?;
        let meta = f.create_group("meta")?;
        let e = &s.experiment;
        let common = [
            ("energy_eV", p.energy_ev),
            ("pixel_size_m", p.pixel_size_m),
            ("dose_counts_per_pattern", p.dose.unwrap_or(0.0)),
            ("seed", p.seed as f64),
        ];
        let (described, hidden): (Vec<(&str, f64)>, Vec<(&str, f64)>) = match p.beam {
            Beam::Electron => (
                vec![
                    ("convergence_semiangle_mrad", p.semiangle_mrad),
                    ("defocus_m", p.defocus_m),
                    ("angular_sampling_mrad", e.dtheta_rad * 1e3),
                ],
                vec![],
            ),
            // a beamline file: the geometry only; the probe's making beside the probe
            Beam::Xray => (
                vec![
                    ("detector_distance_m", XRAY_DETECTOR_PIXEL_M / e.dtheta_rad),
                    ("detector_pixel_size_m", XRAY_DETECTOR_PIXEL_M),
                ],
                vec![
                    ("pupil_semiangle_mrad", p.semiangle_mrad),
                    ("central_stop", p.central_stop),
                    ("defocus_m", p.defocus_m),
                ],
            ),
        };
        for (name, v) in common.into_iter().chain(described) {
            meta.new_attr::<f64>().create(name)?.write_scalar(&v)?;
        }
        for (name, v) in hidden {
            probe_ds.new_attr::<f64>().create(name)?.write_scalar(&v)?;
        }
        let w: f64 = p.mode_powers.iter().sum();
        let powers: Vec<f64> = p.mode_powers.iter().map(|x| x / w).collect();
        meta.new_attr::<f64>()
            .shape(powers.len())
            .create("mode_powers")?
            .write_raw(&powers)?;
        f.flush()?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::new(what(), e.to_string()));
    }
    std::fs::rename(&tmp, path).ctx(what)?;
    let toml_path = path.with_extension("toml");
    let fname = path
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = path
        .file_stem()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_else(|| "sim".into());
    let cfg = format!(
        "# written by `ptytile simulate` (seed {seed}); metadata are read from the file's /meta attributes\n\
         [data]\nfile = \"{fname}\"\nintensities = \"/data/intensities\"\npositions = \"/data/positions_px\"\n\
         positions_unit = \"px\"\nzero_frequency = \"center\"\n{probe_hint}\n[experiment]\nbeam = \"{beam}\"\n\n\
         [reconstruction]\niterations = 20\nnoise_model = \"{noise}\"\nprobe_modes = {k}\nupdate_probe = true\n\n\
         [output]\npath = \"{stem}_recon/recon.h5\"\n",
        seed = p.seed,
        beam = match p.beam {
            Beam::Electron => "electron",
            Beam::Xray => "xray",
        },
        probe_hint = match p.beam {
            Beam::Electron => "",
            Beam::Xray => "# no probe guess: the first probe is formed from the mean pattern (set experiment.defocus_m = \"auto\"\n# to search its defocus); data.probe = \"/probe/probe_real\" starts from the true probe\n",
        },
        noise = if p.dose.is_some() { "poisson" } else { "amplitude" },
        k = p.mode_powers.len(),
    );
    crate::output::write_atomic(&toml_path, cfg.as_bytes())?;
    Ok((path.to_path_buf(), toml_path))
}
