//! The run configuration: a TOML file whose every key can be overridden on the command
//! line with `--set section.key=value`. Key names are part of ptytile's interface
//! (docs/format.md lists them); unknown keys are errors, not silently ignored.

use crate::error::{Context, Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Unit of the scan positions stored in the data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PositionsUnit {
    /// metres
    M,
    /// nanometres
    Nm,
    /// ångström
    Angstrom,
    /// reconstruction pixels
    #[default]
    Px,
}

/// Where the zero spatial frequency sits in the stored diffraction patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ZeroFrequency {
    /// at pixel [M/2, M/2] (the usual detector image; `fftshift`ed)
    #[default]
    Center,
    /// at pixel [0, 0] (raw FFT order)
    Corner,
}

/// Radiation: sets how the wavelength follows from `energy_ev` and how the real-space
/// pixel size follows from the detector sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Beam {
    /// Electrons: relativistic wavelength; sampling given as `angular_sampling_mrad`.
    #[default]
    Electron,
    /// X-ray photons: λ = hc/E; sampling from `detector_distance_m` and `detector_pixel_size_m`.
    Xray,
}

/// Noise model of the measured intensities (docs/algorithm.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NoiseModel {
    /// Gaussian noise on amplitudes: L = Σ (|Ψ| − √I)².
    Amplitude,
    /// Poisson counts: L = Σ (|Ψ|² − I ln |Ψ|²).
    #[default]
    Poisson,
}

/// Layout of the data file (docs/format.md, "Input datasets").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// `cxi` for a `.cxi` file or an HDF5 file with a `/cxi_version` dataset, `stem4d` for a
    /// `.npy` file or a rank-4 `intensities` dataset, else `hdf5`.
    #[default]
    Auto,
    /// Intensities [N, M, M] and positions [N, 2] at the paths given in `[data]`.
    Hdf5,
    /// A CXI file (Coherent X-ray Imaging format): data, mask, geometry and translations
    /// read from their CXI places; X-ray beam.
    Cxi,
    /// A raw 4D-STEM array [Sy, Sx, Ky, Kx] (HDF5 dataset `intensities`, or a `.npy` file)
    /// on a raster scan given by `scan_step_*` and `scan_rotation_deg`.
    Stem4d,
}

/// `[data]`: where the measurements are.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Data file: HDF5 (`hdf5`, `cxi`, `stem4d`) or `.npy` (`stem4d`). Relative paths are
    /// relative to the config file's directory.
    pub file: PathBuf,
    /// Layout of `file`.
    #[serde(default)]
    pub format: DataFormat,
    /// HDF5 path of the intensities: [N, M, M] (positions, ky, kx) for `hdf5`, [Sy, Sx, Ky, Kx]
    /// for `stem4d`; float or integer counts. Optional for `cxi` (overrides the CXI places)
    /// and for `.npy` files.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub intensities: String,
    /// HDF5 path of the scan positions, shape [N, 2], (y, x) probe centres (`hdf5` only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub positions: String,
    /// Unit of the positions.
    #[serde(default)]
    pub positions_unit: PositionsUnit,
    /// Where the zero frequency sits in each pattern.
    #[serde(default)]
    pub zero_frequency: ZeroFrequency,
    /// Optional HDF5 path (in `file`) of an initial probe, complex [M, M] or [K, M, M],
    /// centred at [M/2, M/2]. Without it the probe is formed from `[experiment]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// `stem4d`: scan step in m (the same along both scan axes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_step_m: Option<f64>,
    /// `stem4d`: scan step in Å (alternative to `scan_step_m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_step_angstrom: Option<f64>,
    /// `stem4d`: rotation θ of the scan grid relative to the detector, in degrees: scan
    /// point (iy, ix) sits at (y, x) = s·(ix sin θ + iy cos θ, ix cos θ − iy sin θ) in the
    /// frame of the diffraction patterns' rows and columns (docs/format.md).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub scan_rotation_deg: f64,
    /// Transpose every diffraction pattern (swap detector rows and columns) as it is read,
    /// before anything else uses it: I'(ky, kx) = I(kx, ky) with both indices counted from
    /// the zero frequency. A detector mounted mirrored against the scan needs this (a
    /// rotation alone cannot express a reflection); `scan_rotation_deg` and the positions
    /// then refer to the transposed patterns' rows and columns. Every format; default false
    /// (not written out when false, so configs and checkpoints without it read as before).
    /// `ptytile calibrate` measures it (docs/algorithm.md §16).
    #[serde(default, skip_serializing_if = "is_false")]
    pub detector_transpose: bool,
    /// A previous ptytile result file whose object and probe start this reconstruction
    /// (the object placed on the new object grid by matching scan positions). Relative
    /// paths are relative to the config file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<PathBuf>,
    /// Pattern indices (0-based, the file's order) left out of the likelihood (weight 0), in
    /// addition to the outliers found by `exclude_outliers` (docs/algorithm.md §13).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<usize>,
    /// Leave out patterns whose total counts are far from the scan's median
    /// (`data::select::outliers`); default true.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub exclude_outliers: bool,
    /// Reconstruct from one checkerboard half of the scan only (for `ptytile frc`);
    /// `None`: every pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<Subset>,
}

/// `[data] subset`: a checkerboard half of the scan, by the parity of (scan row + scan
/// column) (`data::select::checkerboard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subset {
    /// Scan points with (row + column) even.
    Even,
    /// Scan points with (row + column) odd.
    Odd,
}

fn is_true(v: &bool) -> bool {
    *v
}

fn is_false(v: &bool) -> bool {
    !*v
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// Propagation regime of the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Geometry {
    /// Far field, unless a CXI file's patterns show the near-field signature (a shadow
    /// image of the illumination wider than the far-field window, `data::cxi`).
    #[default]
    Auto,
    /// Far field (Fraunhofer): skip the near-field check.
    FarField,
    /// Near field (Fresnel): refused, ptytile has no near-field propagator yet.
    NearField,
}

/// `[experiment]`: the microscope or beamline. Missing keys fall back to attributes of
/// the data file (see `data::metadata`), else they are an error naming the key.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// electron or xray
    #[serde(default)]
    pub beam: Beam,
    /// Beam energy in eV (electron accelerating voltage × e, or photon energy).
    pub energy_ev: Option<f64>,
    /// Probe-forming aperture semi-angle in mrad (electrons).
    pub convergence_semiangle_mrad: Option<f64>,
    /// Defocus in m, positive = underfocus; C10 = −defocus_m (docs/algorithm.md §2).
    pub defocus_m: Option<f64>,
    /// Spherical aberration C30 (Cs) in m; 0 when absent.
    pub spherical_aberration_m: Option<f64>,
    /// Detector angular sampling in mrad per pixel (electrons).
    pub angular_sampling_mrad: Option<f64>,
    /// Sample–detector distance in m (X-ray).
    pub detector_distance_m: Option<f64>,
    /// Detector pixel size in m (X-ray).
    pub detector_pixel_size_m: Option<f64>,
    /// auto, far_field or near_field (see [`Geometry`]).
    #[serde(default, skip_serializing_if = "is_auto")]
    pub geometry: Geometry,
}

fn is_auto(g: &Geometry) -> bool {
    *g == Geometry::Auto
}

/// The solver of a run or of one stage of a schedule (docs/algorithm.md §4, §7–§9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Preconditioned gradient descent (Fisher scoring), full batch or mini-batches.
    #[default]
    Gd,
    /// Difference map on exit waves (Thibault et al. 2009), parameter `[dm] beta`.
    Dm,
    /// Maximum likelihood by nonlinear conjugate gradients with a line search.
    Mlcg,
    /// Extended ptychographical iterative engine (sequential per position).
    Epie,
    /// Regularised PIE (sequential per position).
    Rpie,
}

impl Engine {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Gd => "gd",
            Engine::Dm => "dm",
            Engine::Mlcg => "mlcg",
            Engine::Epie => "epie",
            Engine::Rpie => "rpie",
        }
    }
}

/// `[reconstruction]`: the solver.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReconstructionConfig {
    /// The engine (used when there is no `[[schedule]]`).
    #[serde(default)]
    pub engine: Engine,
    /// Number of iterations (full passes over all positions), 20 when absent. Not allowed
    /// together with `[[schedule]]`, whose stages set the iterations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<usize>,
    /// amplitude or poisson.
    #[serde(default)]
    pub noise_model: NoiseModel,
    /// Number of incoherent probe modes K (≥ 1).
    #[serde(default = "one")]
    pub probe_modes: usize,
    /// Refine the probe.
    #[serde(default = "yes")]
    pub update_probe: bool,
    /// First iteration (0-based) at which the probe is refined.
    #[serde(default = "one")]
    pub probe_update_start: usize,
    /// Number of mini-batches per iteration, formed from position indices alone
    /// (position j goes to batch j mod batches). 1 = full batch.
    #[serde(default = "one")]
    pub batches: usize,
    /// Step length in units of the preconditioned Newton/Fisher-scoring step (1 = full).
    #[serde(default = "unit_step")]
    pub step: f64,
    /// Number of object slices S of the multislice model (docs/algorithm.md §12); 1 (the
    /// default) is the single-slice model. S > 1 needs `slice_thickness_m` and runs the gd
    /// and mlcg engines on the cpu backend.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub slices: usize,
    /// Slice thickness Δz in m (multislice; e.g. 1.66e-10 for 33.2 Å in 20 slices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice_thickness_m: Option<f64>,
    /// Specimen tilt (y, x) in mrad, applied in the slice-to-slice propagator (multislice).
    #[serde(default, skip_serializing_if = "is_zero2")]
    pub specimen_tilt_mrad: [f64; 2],
    /// Weight λ_z of the axial regulariser μ Σ_s |O_{s+1} − O_s|² (multislice), with μ =
    /// λ_z × the mean counts per pattern (docs/algorithm.md §12); 0 turns it off.
    #[serde(default = "axial_default", skip_serializing_if = "is_axial_default")]
    pub axial_regularization: f64,
}

/// `[position_correction]`: refinement of the scan positions by the loss's gradient with
/// respect to each probe centre (docs/algorithm.md §14–§15). Positions are in object pixels
/// (px), per axis (y, x).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PositionCorrectionConfig {
    /// Refine the positions (gd and mlcg, cpu backend).
    #[serde(default)]
    pub enabled: bool,
    /// First iteration (0-based, counted over all stages) whose gradient pass moves the
    /// positions; earlier iterations let the object form first.
    #[serde(default = "pc_start")]
    pub start_iteration: usize,
    /// Largest move of a position per iteration, px per axis.
    #[serde(default = "pc_step")]
    pub max_step_px: f64,
    /// Largest displacement of a position from where the data file puts it, px per axis.
    /// The object grid and every rank's field grow by ⌈max_shift_px⌉ on each side, so a
    /// moved window stays inside the field its rank sums into (tiled == single rank).
    #[serde(default = "pc_shift")]
    pub max_shift_px: f64,
    /// Fit a global affine map (scale, rotation, shear) to the displacements at every
    /// update and keep only its residual, bounded by `max_error_px`, as each position's free
    /// part; the global shift is always removed (it belongs to the object).
    #[serde(default = "yes")]
    pub affine: bool,
    /// Largest free (non-affine) displacement of a position with `affine`, px per axis.
    #[serde(default = "pc_error")]
    pub max_error_px: f64,
}

fn pc_start() -> usize {
    5
}
fn pc_step() -> f64 {
    0.5
}
fn pc_shift() -> f64 {
    8.0
}
fn pc_error() -> f64 {
    4.0
}

impl Default for PositionCorrectionConfig {
    fn default() -> Self {
        PositionCorrectionConfig {
            enabled: false,
            start_iteration: pc_start(),
            max_step_px: pc_step(),
            max_shift_px: pc_shift(),
            affine: true,
            max_error_px: pc_error(),
        }
    }
}

impl PositionCorrectionConfig {
    /// Whether every key has its default value (the section is then not serialised).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Pixels by which the object grid and each window's reach grow on every side: ⌈`max_shift_px`⌉ when
    /// enabled, else 0 (the grid and tile plan are then those of a run without the section).
    pub fn margin_px(&self) -> usize {
        if self.enabled {
            self.max_shift_px.ceil() as usize
        } else {
            0
        }
    }

    /// Whether the gradient pass of (global) iteration `it` moves the positions.
    pub fn at(&self, it: usize) -> bool {
        self.enabled && it >= self.start_iteration
    }
}

/// `[dm]`: difference map.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DmConfig {
    /// Relaxation β of the exit-wave update ψ ← ψ + β[Π_F(2Π_O ψ − ψ) − Π_O ψ], in (0, 1];
    /// 1 is the classic difference map.
    #[serde(default = "unit_step")]
    pub beta: f64,
    /// Relaxation γ ∈ (0, 1] of the Fourier step Π_F: the far field moves to the proximal
    /// point of the noise model's likelihood (`physics::model::relaxed_modulus`); 1 is the
    /// modulus projection |Ψ| ← √Î.
    #[serde(default = "dm_gamma")]
    pub gamma: f64,
    /// The last this many iterations of each difference-map stage are error reduction,
    /// ψ ← Π_F(Π_O ψ) with the likelihood's Fisher-scoring Fourier step (docs/algorithm.md
    /// §7): they take the difference map's result to the likelihood's optimum. 0: none; at
    /// least the stage's length: the whole stage.
    #[serde(default = "dm_er_iterations")]
    pub er_iterations: usize,
}

/// Conjugate-direction formula of the ML-CG engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CgDirection {
    /// Polak–Ribière, clipped at 0 (PR+): restarts by itself when progress stalls.
    #[default]
    PolakRibiere,
    /// Dai–Yuan.
    DaiYuan,
}

/// `[mlcg]`: maximum likelihood by nonlinear conjugate gradients.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MlcgConfig {
    /// "polak-ribiere" or "dai-yuan".
    #[serde(default)]
    pub direction: CgDirection,
    /// First trial step of the line search, in units of the preconditioned (Fisher-scoring)
    /// step; later iterations start from the previous accepted step.
    #[serde(default = "unit_step")]
    pub initial_step: f64,
}

/// `[epie]` and `[rpie]`: the sequential engines. ePIE (Maiden & Rodenburg 2009) divides
/// by the maximum of |P|² (|O|²) and multiplies by `alpha` (`beta`); rPIE (Maiden et al.
/// 2017) divides by (1 − α)|P|² + α max|P|² (same with β and |O|²) and takes full steps.
/// Absent keys take the engine's defaults ([`Config::epie_params`], [`Config::rpie_params`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct PieConfig {
    /// Object parameter α (ePIE: step; rPIE: mix between local and maximum illumination).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Probe parameter β (same roles for the probe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    /// Relaxation γ ∈ (0, 1] of the Fourier step, as `[dm] gamma`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
}

impl PieConfig {
    /// [α, β, γ], absent keys from `defaults`.
    fn params(&self, defaults: [f64; 3]) -> [f64; 3] {
        [
            self.alpha.unwrap_or(defaults[0]),
            self.beta.unwrap_or(defaults[1]),
            self.gamma.unwrap_or(defaults[2]),
        ]
    }
}

/// One stage of a `[[schedule]]`: `engine` for `iterations` iterations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// The engine of this stage.
    pub engine: Engine,
    /// Its number of iterations (≥ 1).
    pub iterations: usize,
}

/// `[output]`: where results go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Result HDF5 file; PNG images are written beside it (`<stem>_object_phase.png`, …).
    #[serde(default = "default_output")]
    pub path: PathBuf,
    /// Write the PNG images.
    #[serde(default = "yes")]
    pub png: bool,
}

/// The keys that may be `"auto"` (section, key): measured from the data by `ptytile
/// calibrate` (docs/algorithm.md §16) when a reconstruction starts ([`Config::auto`]).
pub const AUTO_KEYS: [(&str, &str); 4] = [
    ("data", "detector_transpose"),
    ("data", "scan_rotation_deg"),
    ("experiment", "convergence_semiangle_mrad"),
    ("experiment", "defocus_m"),
];

/// Iterations of a run without `[[schedule]]` and without `reconstruction.iterations`.
pub const DEFAULT_ITERATIONS: usize = 20;
fn one() -> usize {
    1
}
fn is_one(v: &usize) -> bool {
    *v == 1
}
fn is_zero2(v: &[f64; 2]) -> bool {
    v == &[0.0, 0.0]
}
/// Default `[reconstruction] axial_regularization`.
pub const AXIAL_REGULARIZATION: f64 = 0.05;
fn axial_default() -> f64 {
    AXIAL_REGULARIZATION
}
fn is_axial_default(v: &f64) -> bool {
    *v == AXIAL_REGULARIZATION
}
fn yes() -> bool {
    true
}
fn unit_step() -> f64 {
    1.0
}
fn dm_gamma() -> f64 {
    DM_GAMMA
}
fn dm_er_iterations() -> usize {
    DM_ER_ITERATIONS
}

/// Default `[dm] gamma`.
pub const DM_GAMMA: f64 = 0.2;
/// Default `[dm] er_iterations`.
pub const DM_ER_ITERATIONS: usize = 5;
/// Defaults `[epie]` α, β, γ.
pub const EPIE_DEFAULTS: [f64; 3] = [1.0, 1.0, 0.01];
/// Defaults `[rpie]` α, β, γ.
pub const RPIE_DEFAULTS: [f64; 3] = [0.1, 1.0, 0.005];
fn default_output() -> PathBuf {
    PathBuf::from("ptytile_out/recon.h5")
}

impl Default for ReconstructionConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults deserialize")
    }
}
impl Default for DmConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults deserialize")
    }
}
impl Default for MlcgConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults deserialize")
    }
}
impl Default for OutputConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults deserialize")
    }
}

/// How ranks share the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ParallelMode {
    /// Tiles of object and gradient, halo exchange (the SC22 decomposition).
    #[default]
    Tiled,
    /// Whole object on every rank, gradients all-reduced (the data-parallel baseline).
    Replicated,
}

/// Where the per-position arithmetic runs (`[parallel] backend`, `--backend`;
/// docs/gpu.md). GPU backends load their libraries at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// rustfft + rayon on the host (the reference).
    #[default]
    Cpu,
    /// NVIDIA GPUs: CUDA driver API, NVRTC, cuFFT (CUDA 12 or 13).
    Cuda,
    /// AMD GPUs: HIP, hiprtc, hipFFT (ROCm 6).
    Hip,
}

impl BackendKind {
    /// The lowercase name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Hip => "hip",
        }
    }
}

/// `[parallel]`: ranks and tiles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ParallelConfig {
    /// Number of in-process ranks (threads) when not launched by mpirun/srun/jsrun.
    #[serde(default = "one")]
    pub ranks: usize,
    /// Tiles [Ty, Tx]; Ty·Tx must equal the rank count. Default: factor the rank count to
    /// the object's aspect ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiles: Option<[usize; 2]>,
    /// tiled | replicated.
    #[serde(default)]
    pub mode: ParallelMode,
    /// Overlap the halo exchange with the interior positions' compute (default true);
    /// false posts the halo messages only after all positions, to measure what the
    /// overlap hides (`ptytile bench scaling`).
    #[serde(default = "yes")]
    pub overlap: bool,
    /// cpu | cuda | hip: where every engine's work over positions runs (each rank on the
    /// GPU of its node-local rank modulo the GPU count; docs/gpu.md).
    #[serde(default)]
    pub backend: BackendKind,
    /// Most memory one process may use, as bytes (an integer) or a string with a unit
    /// (`"16 GiB"`, `"500 MB"`); default: the machine's available memory. A run whose
    /// estimate exceeds it is refused before anything large is allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<toml::Value>,
}

impl ParallelConfig {
    /// `memory_limit` in bytes (None if unset).
    ///
    /// Errors (`parallel.memory_limit`): not a positive integer or a number with a unit of
    /// B, kB, MB, GB, TB, KiB, MiB, GiB or TiB.
    pub fn memory_limit_bytes(&self) -> Result<Option<u64>> {
        let bad = |v: &dyn std::fmt::Display| {
            Error::new(
                "parallel.memory_limit",
                format!(
                    "{v} is not a size: give bytes (an integer) or e.g. \"16 GiB\", \"500 MB\""
                ),
            )
        };
        let v = match &self.memory_limit {
            None => return Ok(None),
            Some(toml::Value::Integer(i)) if *i > 0 => return Ok(Some(*i as u64)),
            Some(toml::Value::String(s)) => s,
            Some(other) => return Err(bad(other)),
        };
        let t = v.trim();
        let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
        let (num, unit) = (t[..split].trim(), t[split..].trim());
        let scale = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            "tb" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024f64.powi(2),
            "gib" => 1024f64.powi(3),
            "tib" => 1024f64.powi(4),
            _ => return Err(bad(&format!("\"{v}\""))),
        };
        match num.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => Ok(Some((x * scale) as u64)),
            _ => Err(bad(&format!("\"{v}\""))),
        }
    }
}

impl Default for ParallelConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults deserialize")
    }
}

/// `[checkpoint]`: periodic and signal-triggered checkpoints (docs/format.md, "Checkpoint").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Write a checkpoint after every `every` iterations (counted from iteration 0, so a
    /// resumed run keeps the same schedule); 0 = only on SIGTERM/SIGUSR1.
    #[serde(default)]
    pub every: usize,
    /// Directory of the checkpoints (relative to the working directory). Default:
    /// `<output stem>_checkpoint` beside `output.path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

/// `[live]`: a reconstruction from a detector stream (`ptytile reconstruct --live`,
/// docs/format.md "Live stream messages").
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LiveConfig {
    /// Seconds between previews (the current object and probe written to
    /// `<output stem>.preview.h5` and its PNGs, atomically) while frames arrive.
    #[serde(default = "LiveConfig::default_preview_s")]
    pub preview_s: f64,
    /// Seconds without any message after which the stream counts as lost: the result
    /// holds what arrived, is marked incomplete, and ptytile exits with code 3.
    #[serde(default = "LiveConfig::default_timeout_s")]
    pub timeout_s: f64,
}

impl LiveConfig {
    fn default_preview_s() -> f64 {
        1.0
    }
    fn default_timeout_s() -> f64 {
        30.0
    }
    /// Whether every key is at its default (then `[live]` is not written out).
    pub fn is_default(&self) -> bool {
        *self == LiveConfig::default()
    }
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            preview_s: Self::default_preview_s(),
            timeout_s: Self::default_timeout_s(),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[data]`
    pub data: DataConfig,
    /// `[experiment]`
    #[serde(default)]
    pub experiment: ExperimentConfig,
    /// `[reconstruction]`
    #[serde(default)]
    pub reconstruction: ReconstructionConfig,
    /// `[output]`
    #[serde(default)]
    pub output: OutputConfig,
    /// `[parallel]`
    #[serde(default)]
    pub parallel: ParallelConfig,
    /// `[checkpoint]`
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// `[dm]`
    #[serde(default)]
    pub dm: DmConfig,
    /// `[mlcg]`
    #[serde(default)]
    pub mlcg: MlcgConfig,
    /// `[epie]` (defaults [`EPIE_DEFAULTS`])
    #[serde(default)]
    pub epie: PieConfig,
    /// `[rpie]` (defaults [`RPIE_DEFAULTS`])
    #[serde(default)]
    pub rpie: PieConfig,
    /// `[position_correction]` (off by default; not written when left at its defaults, so
    /// configs, results and checkpoint identities without it are unchanged)
    #[serde(default, skip_serializing_if = "PositionCorrectionConfig::is_default")]
    pub position_correction: PositionCorrectionConfig,
    /// `[[schedule]]`: stages run in order (e.g. 20 DM, then 30 ML-CG); empty = one stage of
    /// `reconstruction.engine` for `reconstruction.iterations`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<Stage>,
    /// `[live]` (not written when left at its defaults)
    #[serde(default, skip_serializing_if = "LiveConfig::is_default")]
    pub live: LiveConfig,
    /// The config file this was loaded from ([`Config::load`]; not a TOML key).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// The keys of [`AUTO_KEYS`] given as `"auto"` (dotted, e.g. `data.scan_rotation_deg`):
    /// to be measured from the data before the data are read (`cli::calibrate::resolve_auto`,
    /// which `ptytile reconstruct` runs). Not written out: a resolved config holds the values
    /// found instead.
    #[serde(skip)]
    pub auto: Vec<String>,
}

impl Config {
    /// Read `path`, apply `--set section.key=value` overrides, validate. Relative
    /// `data.file` is resolved against the config file's directory.
    ///
    /// Errors: unreadable file, TOML syntax, unknown or mistyped key, bad override,
    /// invalid value, an output path that is a directory or the data file itself (each
    /// naming the file or key).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        crate::output::safety::check_input(path)?;
        let text = std::fs::read_to_string(path).ctx(|| path.display().to_string())?;
        let mut cfg =
            Self::from_toml(&text, overrides).map_err(|e| match e.what.strip_prefix("config") {
                Some(rest) if rest.is_empty() || rest.starts_with(':') => {
                    Error::new(format!("{}{rest}", path.display()), e.msg)
                }
                _ => e,
            })?;
        if cfg.data.file.is_relative() {
            if let Some(dir) = path.parent() {
                let candidate = dir.join(&cfg.data.file);
                if candidate.exists() || !cfg.data.file.exists() {
                    cfg.data.file = candidate;
                }
                if let Some(init) = cfg.data.initial.as_mut().filter(|p| p.is_relative()) {
                    let candidate = dir.join(&*init);
                    if candidate.exists() || !init.exists() {
                        *init = candidate;
                    }
                }
            }
        }
        cfg.source = Some(path.to_path_buf());
        let out = &cfg.output.path;
        if out.is_dir() {
            return Err(Error::new(
                "output.path",
                format!("{} is a directory, not a file name", out.display()),
            ));
        }
        cfg.check_outputs()?;
        Ok(cfg)
    }

    /// The files a run reads: the config file (when loaded from one), `data.file` and
    /// `data.initial`, as (what, path).
    pub fn inputs(&self) -> crate::output::safety::Inputs {
        let mut list: Vec<(&str, &Path)> = vec![("the data file", &self.data.file)];
        if let Some(c) = &self.source {
            list.push(("the config file", c));
        }
        if let Some(i) = &self.data.initial {
            list.push(("data.initial", i));
        }
        crate::output::safety::Inputs::new(list)
    }

    /// Refuse a run whose result, images or checkpoints would be written to or over one of
    /// its inputs ([`Config::inputs`], docs/format.md "What ptytile writes and deletes").
    pub fn check_outputs(&self) -> Result<()> {
        let inputs = self.inputs();
        let out = &self.output.path;
        inputs.check_output("output.path", out)?;
        if self.output.png {
            let stem = out
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            for suffix in crate::output::png::SUFFIXES {
                inputs.check_output(
                    "output.path",
                    &out.with_file_name(crate::output::png_name(&stem, suffix)),
                )?;
            }
        }
        let key = if self.checkpoint.dir.is_some() {
            "checkpoint.dir"
        } else {
            "output.path"
        };
        inputs.check_checkpoint_dir(key, &self.checkpoint_dir())
    }

    /// Parse TOML text, apply overrides, validate.
    pub fn from_toml(text: &str, overrides: &[String]) -> Result<Config> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e.span().map(|s| {
                format!(
                    "line {}: ",
                    text.as_bytes()[..s.start.min(text.len())]
                        .iter()
                        .filter(|b| **b == b'\n')
                        .count()
                        + 1
                )
            });
            Error::new(
                "config",
                format!("{}{}", at.unwrap_or_default(), e.message()),
            )
        })?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        // "auto" keys leave the table (their fields take the defaults) and are listed
        let mut auto = Vec::new();
        for (section, key) in AUTO_KEYS {
            if let Some(toml::Value::Table(t)) = table.get_mut(section) {
                if t.get(key).and_then(|v| v.as_str()) == Some("auto") {
                    t.remove(key);
                    auto.push(format!("{section}.{key}"));
                }
            }
        }
        let mut cfg: Config =
            toml::Value::Table(table.clone())
                .try_into()
                .map_err(|e: toml::de::Error| {
                    let what = key_of_error(&table)
                        .map_or_else(|| "config".to_string(), |k| format!("config: {k}"));
                    Error::new(what, e.message().to_string())
                })?;
        cfg.auto = auto;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check values that parse but make no sense: zero or absurdly large counts (limits in
    /// [`LIMITS`]), non-positive or non-finite physical values, empty paths.
    pub fn validate(&self) -> Result<()> {
        let r = &self.reconstruction;
        let mut counts = vec![
            ("reconstruction.iterations", self.total_iterations(), 0),
            ("reconstruction.probe_modes", r.probe_modes, 1),
            ("reconstruction.batches", r.batches, 1),
            ("reconstruction.slices", r.slices, 1),
            ("parallel.ranks", self.parallel.ranks, 1),
        ];
        if let Some(t) = self.parallel.tiles {
            counts.push(("parallel.tiles", t[0], 1));
            counts.push(("parallel.tiles", t[1], 1));
        }
        for (key, v, min) in counts {
            let max = LIMITS
                .iter()
                .find(|l| l.0 == key)
                .map_or(usize::MAX, |l| l.1);
            if v < min {
                let which = if key == "parallel.tiles" {
                    "each of [Ty, Tx] "
                } else {
                    ""
                };
                return Err(Error::new(key, format!("{which}must be at least {min}")));
            }
            if v > max {
                return Err(Error::new(key, format!("{v} is beyond the limit of {max}")));
            }
        }
        for (key, v) in [
            ("data.file", self.data.file.as_os_str()),
            ("output.path", self.output.path.as_os_str()),
        ] {
            if v.is_empty() {
                return Err(Error::new(key, "is empty"));
            }
        }
        self.parallel.memory_limit_bytes()?;
        if !(r.step.is_finite() && r.step > 0.0) {
            return Err(Error::new(
                "reconstruction.step",
                "must be a positive number",
            ));
        }
        if self
            .checkpoint
            .dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(Error::new("checkpoint.dir", "must not be empty"));
        }
        if !self.schedule.is_empty() && r.iterations.is_some() {
            return Err(Error::new(
                "reconstruction.iterations",
                "not allowed with [[schedule]], whose stages set the iterations",
            ));
        }
        if self.schedule.iter().any(|s| s.iterations == 0) {
            return Err(Error::new("schedule.iterations", "must be at least 1"));
        }
        for (key, v) in [("dm.beta", self.dm.beta), ("dm.gamma", self.dm.gamma)] {
            check_unit_interval(key, v)?;
        }
        if !(self.mlcg.initial_step.is_finite() && self.mlcg.initial_step > 0.0) {
            return Err(Error::new("mlcg.initial_step", "must be a positive number"));
        }
        for (name, p) in [("epie", self.epie_params()), ("rpie", self.rpie_params())] {
            for (key, v) in ["alpha", "beta", "gamma"].into_iter().zip(p) {
                check_unit_interval(&format!("{name}.{key}"), v)?;
            }
        }
        if r.slices > 1 {
            let Some(dz) = r.slice_thickness_m else {
                return Err(Error::new(
                    "reconstruction.slice_thickness_m",
                    format!("needed with reconstruction.slices = {}", r.slices),
                ));
            };
            check_positive("reconstruction.slice_thickness_m", Some(dz))?;
            if let Some(st) = self
                .stages()
                .iter()
                .find(|s| !matches!(s.engine, Engine::Gd | Engine::Mlcg))
            {
                return Err(Error::new(
                    "reconstruction.slices",
                    format!(
                        "{}: engine {} runs the single-slice model only (multislice: gd, mlcg)",
                        r.slices,
                        st.engine.name()
                    ),
                ));
            }
        }
        let pc = &self.position_correction;
        if pc.enabled {
            if let Some(st) = self
                .stages()
                .iter()
                .find(|s| !matches!(s.engine, Engine::Gd | Engine::Mlcg))
            {
                return Err(Error::new(
                    "position_correction.enabled",
                    format!(
                        "engine {} does not refine positions (gd, mlcg do)",
                        st.engine.name()
                    ),
                ));
            }
        }
        for (key, v, hi) in [
            ("position_correction.max_step_px", pc.max_step_px, 64.0),
            ("position_correction.max_shift_px", pc.max_shift_px, 256.0),
            ("position_correction.max_error_px", pc.max_error_px, 256.0),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= hi) {
                return Err(Error::new(key, format!("must be a number in (0, {hi}] px")));
            }
        }
        if !(r.axial_regularization.is_finite() && r.axial_regularization >= 0.0) {
            return Err(Error::new(
                "reconstruction.axial_regularization",
                "must be a number ≥ 0",
            ));
        }
        if !r
            .specimen_tilt_mrad
            .iter()
            .all(|t| t.is_finite() && t.abs() < 500.0)
        {
            return Err(Error::new(
                "reconstruction.specimen_tilt_mrad",
                "must be finite and below 500 mrad",
            ));
        }
        let e = &self.experiment;
        for (key, v) in [
            ("experiment.energy_ev", e.energy_ev),
            ("experiment.angular_sampling_mrad", e.angular_sampling_mrad),
            (
                "experiment.convergence_semiangle_mrad",
                e.convergence_semiangle_mrad,
            ),
            ("experiment.detector_distance_m", e.detector_distance_m),
            ("experiment.detector_pixel_size_m", e.detector_pixel_size_m),
            ("data.scan_step_m", self.data.scan_step_m),
            ("data.scan_step_angstrom", self.data.scan_step_angstrom),
        ] {
            check_positive(key, v)?;
        }
        if !self.data.scan_rotation_deg.is_finite() {
            return Err(Error::new(
                "data.scan_rotation_deg",
                "must be a finite number",
            ));
        }
        if self.data.scan_step_m.is_some() && self.data.scan_step_angstrom.is_some() {
            return Err(Error::new(
                "data.scan_step_angstrom",
                "give either data.scan_step_m or data.scan_step_angstrom, not both",
            ));
        }
        for (key, v) in [
            ("experiment.defocus_m", e.defocus_m),
            (
                "experiment.spherical_aberration_m",
                e.spherical_aberration_m,
            ),
        ] {
            if let Some(x) = v {
                if !x.is_finite() {
                    return Err(Error::new(key, "must be a finite number"));
                }
            }
        }
        Ok(())
    }

    /// The checkpoint directory: `checkpoint.dir`, else `<stem>_checkpoint` beside
    /// `output.path` (e.g. `out/recon_checkpoint` for `out/recon.h5`).
    pub fn checkpoint_dir(&self) -> PathBuf {
        if let Some(d) = &self.checkpoint.dir {
            return d.clone();
        }
        let p = &self.output.path;
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "recon".into());
        p.with_file_name(format!(
            "{}_checkpoint",
            crate::output::safety::fit_name(&stem, crate::output::safety::NAME_MAX - 11)
        ))
    }

    /// The run's stages: `[[schedule]]`, or one stage of `reconstruction.engine` for
    /// `reconstruction.iterations` (default [`DEFAULT_ITERATIONS`]).
    pub fn stages(&self) -> Vec<Stage> {
        if self.schedule.is_empty() {
            let r = &self.reconstruction;
            vec![Stage {
                engine: r.engine,
                iterations: r.iterations.unwrap_or(DEFAULT_ITERATIONS),
            }]
        } else {
            self.schedule.clone()
        }
    }

    /// ePIE's [α, β, γ] (defaults [`EPIE_DEFAULTS`]).
    pub fn epie_params(&self) -> [f64; 3] {
        self.epie.params(EPIE_DEFAULTS)
    }

    /// rPIE's [α, β, γ] (defaults [`RPIE_DEFAULTS`]).
    pub fn rpie_params(&self) -> [f64; 3] {
        self.rpie.params(RPIE_DEFAULTS)
    }

    /// Total iterations of the run (over all stages).
    pub fn total_iterations(&self) -> usize {
        self.stages()
            .iter()
            .fold(0usize, |a, s| a.saturating_add(s.iterations))
    }

    /// The configuration as TOML text (stored in the output file).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// Upper limits of counts in the config, beyond which a value is a typo, not a run:
/// iterations (the loss history is kept), probe modes (each a full M × M field), mini-batches,
/// thread ranks (one thread and n channels each; use MPI for more), tiles per axis.
pub const LIMITS: [(&str, usize); 6] = [
    ("reconstruction.iterations", 1_000_000),
    ("reconstruction.probe_modes", 64),
    ("reconstruction.batches", 1 << 20),
    ("reconstruction.slices", 1024),
    ("parallel.ranks", 1024),
    ("parallel.tiles", 1 << 16),
];

/// Error naming `key` unless `v` ∈ (0, 1] (a relaxation or step parameter).
fn check_unit_interval(key: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 && v <= 1.0 {
        Ok(())
    } else {
        Err(Error::new(key, format!("must lie in (0, 1], got {v}")))
    }
}

/// Metadata values must be finite and > 0 (energy, samplings, distances).
pub fn check_positive(key: &str, v: Option<f64>) -> Result<()> {
    match v {
        Some(x) if !(x.is_finite() && x > 0.0) => Err(Error::new(
            key,
            format!("must be a positive number, got {x}"),
        )),
        _ => Ok(()),
    }
}

/// The dotted key (`section.key`, or `section`) a deserialization error of `table` is about:
/// the table is written out as TOML and parsed again, which gives the error a position in
/// that text, and the key is read off the line there. `None` when there is no position.
fn key_of_error(table: &toml::Table) -> Option<String> {
    let text = toml::to_string(table).ok()?;
    let err = toml::from_str::<Config>(&text).err()?;
    let span = err.span()?;
    if span.is_empty() || (span.start == 0 && span.end + 1 >= text.len()) {
        return None; // about the whole document (e.g. a missing section)
    }
    let start = span.start.min(text.len());
    let bytes = text.as_bytes();
    let line_start = bytes[..start]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let line = String::from_utf8_lossy(&bytes[line_start..])
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let header = |l: &str| {
        l.trim()
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
            .map(|l| l.trim().to_string())
    };
    if let Some(section) = header(&line) {
        return Some(section);
    }
    let key = line.split_once('=')?.0.trim().trim_matches('"').to_string();
    let above = String::from_utf8_lossy(&bytes[..line_start]).into_owned();
    match above.lines().rev().find_map(header) {
        Some(section) => Some(format!("{section}.{key}")),
        None => Some(key),
    }
}

/// Apply one `section.key=value` override. The value is parsed as a TOML value
/// (number, bool, quoted string, array); anything that does not parse is taken as a string.
fn apply_override(table: &mut toml::Table, o: &str) -> Result<()> {
    let (key, value) = o.split_once('=').ok_or_else(|| {
        Error::new(
            "--set",
            format!("'{o}' is not of the form section.key=value"),
        )
    })?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(Error::new(
            "--set",
            format!("'{key}' is not of the form section.key"),
        ));
    }
    let value = value.trim();
    let parsed: toml::Value = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let section = table
        .entry(parts[0].to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match section {
        toml::Value::Table(t) => {
            t.insert(parts[1].to_string(), parsed);
            Ok(())
        }
        _ => Err(Error::new(
            "--set",
            format!("'{}' is not a section", parts[0]),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "[data]\nfile='a.h5'\nintensities='/i'\npositions='/p'\n";

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_toml(
            MIN,
            &[
                "reconstruction.iterations=7".into(),
                "output.path=x/y.h5".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.reconstruction.iterations, Some(7));
        assert_eq!(c.total_iterations(), 7);
        assert_eq!(c.reconstruction.noise_model, NoiseModel::Poisson);
        assert_eq!(c.output.path, PathBuf::from("x/y.h5"));
        assert_eq!(c.data.positions_unit, PositionsUnit::Px);
        let back = Config::from_toml(&c.to_toml(), &[]).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn checkpoint_keys() {
        let c = Config::from_toml(MIN, &["output.path=\"out/r.h5\"".into()]).unwrap();
        assert_eq!(c.checkpoint.every, 0);
        assert_eq!(c.checkpoint_dir(), PathBuf::from("out/r_checkpoint"));
        let c = Config::from_toml(
            MIN,
            &["checkpoint.every=5".into(), "checkpoint.dir=\"ck\"".into()],
        )
        .unwrap();
        assert_eq!(
            (c.checkpoint.every, c.checkpoint_dir()),
            (5, PathBuf::from("ck"))
        );
        assert_eq!(Config::from_toml(&c.to_toml(), &[]).unwrap(), c);
        let e = Config::from_toml(MIN, &["checkpoint.dir=\"\"".into()]).unwrap_err();
        assert_eq!(e.what, "checkpoint.dir");
        let e = Config::from_toml(MIN, &["checkpoint.every=-1".into()]).unwrap_err();
        assert!(
            e.to_string().contains("every") || e.to_string().contains("-1"),
            "{e}"
        );
        let e = Config::from_toml(MIN, &["checkpoint.evry=1".into()]).unwrap_err();
        assert!(e.msg.contains("evry"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e =
            Config::from_toml(&format!("{MIN}[reconstruction]\niterationz=3\n"), &[]).unwrap_err();
        assert!(e.msg.contains("iterationz"), "{e}");
        let e = Config::from_toml(MIN, &["reconstruction.noise_model=gauss".into()]).unwrap_err();
        assert!(e.msg.contains("gauss"), "{e}");
    }

    #[test]
    fn mistyped_keys_are_named() {
        let e = Config::from_toml(&format!("{MIN}[parallel]\nranks = 'four'\n"), &[]).unwrap_err();
        assert_eq!(e.what, "config: parallel.ranks", "{e}");
        assert!(e.msg.contains("four"), "{e}");
        let e =
            Config::from_toml(&format!("{MIN}[experiment]\nenergy_kev = 3\n"), &[]).unwrap_err();
        assert_eq!(e.what, "config: experiment.energy_kev", "{e}");
        let e = Config::from_toml("[output]\npng = true\n", &[]).unwrap_err();
        assert_eq!(e.what, "config", "{e}");
        // a [data] table without `file` (intensities and positions may be absent: CXI and
        // 4D-STEM files need neither)
        let e = Config::from_toml("[data]\nintensities = '/i'\n[output]\npng = true\n", &[])
            .unwrap_err();
        assert_eq!(e.what, "config: data", "{e}");
        assert!(Config::from_toml("[data]\nfile = 'a.cxi'\n", &[]).is_ok());
        let e = Config::from_toml(&format!("{MIN}[solver]\nkind = 1\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("solver"), "{e}");
        let e = Config::from_toml("[data]\nfile = 'a'\nintensities = '/i\n", &[]).unwrap_err();
        assert!(e.msg.starts_with("line 3: "), "{e}");
        let e =
            Config::from_toml(MIN, &["reconstruction.iterations=10000000000".into()]).unwrap_err();
        assert_eq!(e.what, "reconstruction.iterations");
        let e = Config::from_toml(MIN, &["parallel.ranks=5000".into()]).unwrap_err();
        assert_eq!(e.what, "parallel.ranks");
    }

    #[test]
    fn engines_and_schedule() {
        let c = Config::from_toml(
            &format!("{MIN}[reconstruction]\nengine='dm'\n[dm]\nbeta=0.8\n"),
            &[],
        )
        .unwrap();
        assert_eq!(
            c.stages(),
            vec![Stage {
                engine: Engine::Dm,
                iterations: DEFAULT_ITERATIONS
            }]
        );
        assert_eq!(c.dm.beta, 0.8);
        let text = format!("{MIN}[mlcg]\ndirection='dai-yuan'\n[[schedule]]\nengine='dm'\niterations=20\n[[schedule]]\nengine='mlcg'\niterations=30\n");
        let c = Config::from_toml(&text, &[]).unwrap();
        assert_eq!(c.total_iterations(), 50);
        assert_eq!(c.stages()[1].engine, Engine::Mlcg);
        assert_eq!(c.mlcg.direction, CgDirection::DaiYuan);
        assert_eq!(c.rpie_params(), RPIE_DEFAULTS);
        assert_eq!(c.epie_params(), EPIE_DEFAULTS);
        assert_eq!(c.dm.gamma, DM_GAMMA);
        assert_eq!(Config::from_toml(&c.to_toml(), &[]).unwrap(), c);
        let e = Config::from_toml(&text, &["reconstruction.iterations=5".into()]).unwrap_err();
        assert_eq!(e.what, "reconstruction.iterations");
        let e = Config::from_toml(MIN, &["reconstruction.engine=pie".into()]).unwrap_err();
        assert!(e.msg.contains("pie"), "{e}");
        let e = Config::from_toml(MIN, &["dm.beta=1.5".into()]).unwrap_err();
        assert_eq!(e.what, "dm.beta");
        let e = Config::from_toml(MIN, &["rpie.alpha=0".into()]).unwrap_err();
        assert_eq!(e.what, "rpie.alpha");
        for key in ["dm.gamma", "epie.gamma", "rpie.gamma"] {
            for bad in ["0", "1.5", "nan"] {
                let e = Config::from_toml(MIN, &[format!("{key}={bad}")]).unwrap_err();
                assert_eq!(e.what, key, "{bad}");
            }
        }
        let c = Config::from_toml(
            MIN,
            &[
                "dm.gamma=0.2".into(),
                "epie.gamma=0.3".into(),
                "rpie.gamma=1".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            (c.dm.gamma, c.epie_params()[2], c.rpie_params()[2]),
            (0.2, 0.3, 1.0)
        );
        assert_eq!(Config::from_toml(&c.to_toml(), &[]).unwrap(), c);
        let e = Config::from_toml(
            &format!("{MIN}[[schedule]]\nengine='gd'\niterations=0\n"),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.what, "schedule.iterations");
    }

    #[test]
    fn absurd_values_are_named() {
        let e = Config::from_toml(MIN, &["experiment.energy_ev=0".into()]).unwrap_err();
        assert_eq!(e.what, "experiment.energy_ev");
        let e =
            Config::from_toml(MIN, &["experiment.angular_sampling_mrad=-1".into()]).unwrap_err();
        assert_eq!(e.what, "experiment.angular_sampling_mrad");
        let e = Config::from_toml(MIN, &["iterations=3".into()]).unwrap_err();
        assert_eq!(e.what, "--set");
    }

    #[test]
    fn multislice_options_are_checked_and_default_to_one_slice() {
        let c = Config::from_toml(MIN, &[]).unwrap();
        assert_eq!(
            (c.reconstruction.slices, c.reconstruction.slice_thickness_m),
            (1, None)
        );
        // the defaults are not written out: a single-slice config (and its checkpoint job
        // identity) reads as before
        assert!(
            !c.to_toml().contains("slices") && !c.to_toml().contains("axial"),
            "{}",
            c.to_toml()
        );
        let set = |v: &[&str]| {
            Config::from_toml(MIN, &v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        let e = set(&["reconstruction.slices=4"]).unwrap_err();
        assert_eq!(e.what, "reconstruction.slice_thickness_m", "{e}");
        let ok = [
            "reconstruction.slices=4",
            "reconstruction.slice_thickness_m=2e-10",
        ];
        let c = set(&ok).unwrap();
        assert!(c.to_toml().contains("slices = 4"), "{}", c.to_toml());
        assert!(set(&[ok[0], ok[1], "reconstruction.engine=\"mlcg\""]).is_ok());
        for engine in ["dm", "epie", "rpie"] {
            let e =
                set(&[ok[0], ok[1], &format!("reconstruction.engine=\"{engine}\"")]).unwrap_err();
            assert_eq!(e.what, "reconstruction.slices", "{e}");
            assert!(e.msg.contains(engine), "{e}");
        }
        // multislice runs on every backend (GPUs: kernels/ptycho.cu `propagate`)
        assert!(set(&[ok[0], ok[1], "parallel.backend=\"cuda\""]).is_ok());
        assert_eq!(
            set(&["reconstruction.slices=0"]).unwrap_err().what,
            "reconstruction.slices"
        );
        assert_eq!(
            set(&[ok[0], "reconstruction.slice_thickness_m=-1e-10"])
                .unwrap_err()
                .what,
            "reconstruction.slice_thickness_m"
        );
        assert_eq!(
            set(&["reconstruction.axial_regularization=-0.1"])
                .unwrap_err()
                .what,
            "reconstruction.axial_regularization"
        );
        assert_eq!(
            set(&["reconstruction.specimen_tilt_mrad=[1.0, 1e9]"])
                .unwrap_err()
                .what,
            "reconstruction.specimen_tilt_mrad"
        );
    }

    #[test]
    fn position_correction_is_checked_and_off_by_default() {
        let c = Config::from_toml(MIN, &[]).unwrap();
        assert!(!c.position_correction.enabled && c.position_correction.margin_px() == 0);
        // not written out when left alone: configs and checkpoint identities read as before
        assert!(
            !c.to_toml().contains("position_correction"),
            "{}",
            c.to_toml()
        );
        let set = |v: &[&str]| {
            Config::from_toml(MIN, &v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        let on = "position_correction.enabled=true";
        let c = set(&[on, "position_correction.max_shift_px=5.5"]).unwrap();
        assert_eq!(c.position_correction.margin_px(), 6);
        assert!(c.position_correction.at(5) && !c.position_correction.at(4));
        assert!(
            c.to_toml().contains("[position_correction]"),
            "{}",
            c.to_toml()
        );
        assert!(set(&[on, "reconstruction.engine=\"mlcg\""]).is_ok());
        for engine in ["dm", "epie", "rpie"] {
            let e = set(&[on, &format!("reconstruction.engine=\"{engine}\"")]).unwrap_err();
            assert_eq!(e.what, "position_correction.enabled", "{e}");
            assert!(e.msg.contains(engine), "{e}");
        }
        // every backend refines positions (the GPUs' kernels position_grad, position_curv)
        for backend in ["cuda", "hip"] {
            let b = format!("parallel.backend=\"{backend}\"");
            assert!(set(&[on, &b]).is_ok(), "{backend}");
        }
        for key in ["max_step_px", "max_shift_px", "max_error_px"] {
            for bad in ["0.0", "-1.0", "1e9", "nan"] {
                let e = set(&[&format!("position_correction.{key}={bad}")]).unwrap_err();
                assert_eq!(e.what, format!("position_correction.{key}"), "{bad}: {e}");
            }
        }
    }

    #[test]
    fn detector_transpose_defaults_to_false_and_is_not_written_then() {
        let c = Config::from_toml(MIN, &[]).unwrap();
        assert!(!c.data.detector_transpose);
        // left out of the config text stored in results and checkpoint identities
        assert!(
            !c.to_toml().contains("detector_transpose"),
            "{}",
            c.to_toml()
        );
        let c = Config::from_toml(MIN, &["data.detector_transpose=true".into()]).unwrap();
        assert!(c.data.detector_transpose && c.to_toml().contains("detector_transpose = true"));
        assert_eq!(Config::from_toml(&c.to_toml(), &[]).unwrap(), c);
        let e = Config::from_toml(MIN, &["data.detector_transpose=3".into()]).unwrap_err();
        assert_eq!(e.what, "config: data.detector_transpose", "{e}");
    }

    #[test]
    fn auto_keys_are_listed_and_left_out() {
        let text = format!("{MIN}scan_rotation_deg = 'auto'\ndetector_transpose = 'auto'\n[experiment]\ndefocus_m = 'auto'\nconvergence_semiangle_mrad = 20.0\n");
        let c = Config::from_toml(&text, &[]).unwrap();
        assert_eq!(
            c.auto,
            [
                "data.detector_transpose",
                "data.scan_rotation_deg",
                "experiment.defocus_m"
            ]
        );
        assert_eq!(
            (
                c.data.scan_rotation_deg,
                c.experiment.defocus_m,
                c.experiment.convergence_semiangle_mrad
            ),
            (0.0, None, Some(20.0))
        );
        let text = c.to_toml();
        assert!(
            !text.contains("scan_rotation_deg")
                && !text.contains("detector_transpose")
                && !text.contains("defocus_m"),
            "{text}"
        );
        let c =
            Config::from_toml(MIN, &["experiment.convergence_semiangle_mrad=auto".into()]).unwrap();
        assert_eq!(c.auto, ["experiment.convergence_semiangle_mrad"]);
        // any other string is still a type error naming the key
        let e = Config::from_toml(MIN, &["data.scan_rotation_deg=automatic".into()]).unwrap_err();
        assert_eq!(e.what, "config: data.scan_rotation_deg", "{e}");
        assert!(Config::from_toml(MIN, &[]).unwrap().auto.is_empty());
    }

    #[test]
    fn backend_parses_and_defaults_to_cpu() {
        assert_eq!(
            Config::from_toml(MIN, &[]).unwrap().parallel.backend,
            BackendKind::Cpu
        );
        let c = Config::from_toml(&format!("{MIN}[parallel]\nbackend = 'cuda'\n"), &[]).unwrap();
        assert_eq!(c.parallel.backend, BackendKind::Cuda);
        assert_eq!(
            Config::from_toml(MIN, &["parallel.backend=hip".into()])
                .unwrap()
                .parallel
                .backend,
            BackendKind::Hip
        );
        let e = Config::from_toml(MIN, &["parallel.backend=opencl".into()]).unwrap_err();
        assert_eq!(e.what, "config: parallel.backend", "{e}");
        assert!(
            e.msg.contains("cpu") && e.msg.contains("cuda") && e.msg.contains("hip"),
            "{e}"
        );
        // every engine runs on every backend: a GPU backend with dm is a valid config
        assert!(Config::from_toml(
            MIN,
            &[
                "parallel.backend=cuda".into(),
                "reconstruction.engine=dm".into()
            ]
        )
        .is_ok());
        assert!(Config::from_toml(
            MIN,
            &[
                "parallel.backend=hip".into(),
                "reconstruction.engine=mlcg".into()
            ]
        )
        .is_ok());
    }
}
