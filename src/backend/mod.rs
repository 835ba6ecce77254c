//! Where the arithmetic runs. The CPU backend (rustfft + rayon) is the reference; GPU
//! backends (CUDA, HIP; docs/gpu.md) implement the same kernel contract (see
//! [`cpu::gradients`]) behind the [`Compute`] trait, which engines call for every subset of
//! a rank's positions (halo positions first, then interior ones, or mini-batches), and
//! with it the difference map's exit-wave step and probe sums and the sequential ePIE/rPIE
//! sweep: every engine runs through this one interface on every backend.

pub mod cpu;
pub mod gpu;
pub mod host;
pub mod kernel;
pub mod pie;
pub mod projection;
pub mod resident;

pub use crate::config::BackendKind;
use crate::error::{Error, Result};
use crate::physics::fft::Real;
use crate::physics::model::{Field, PositionGeom};
use kernel::{DmStep, Gradients, Kernel};
use num_complex::Complex;
use pie::PieStep;
use std::sync::Arc;

/// Which of a rank's positions a call covers: indices into the positions given to [`open`],
/// in that order.
#[derive(Debug, Clone)]
pub enum Selection<'a> {
    /// A contiguous range (halo or interior block): borrowed without copies on the CPU.
    Range(std::ops::Range<usize>),
    /// An arbitrary subset (mini-batches), in the order given.
    Indices(&'a [usize]),
}

impl Selection<'_> {
    /// Number of positions selected.
    pub fn len(&self) -> usize {
        match self {
            Selection::Range(r) => r.len(),
            Selection::Indices(i) => i.len(),
        }
    }

    /// Whether nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The selected indices, materialised (GPU uploads).
    pub fn to_vec(&self) -> Vec<usize> {
        match self {
            Selection::Range(r) => r.clone().collect(),
            Selection::Indices(i) => i.to_vec(),
        }
    }

    /// Error unless every index is below `n` (the rank's position count).
    pub fn check(&self, n: usize) -> Result<()> {
        let bad = match self {
            Selection::Range(r) => (r.end > n).then_some(r.end.saturating_sub(1)),
            Selection::Indices(i) => i.iter().copied().find(|&j| j >= n),
        };
        match bad {
            Some(j) => Err(Error::new(
                "backend",
                format!("position index {j} is out of range (the rank has {n} positions)"),
            )),
            None => Ok(()),
        }
    }
}

/// A rank's scan positions and measured intensities, resident where the arithmetic runs
/// (host memory for the CPU, device memory for GPUs), with the fixed kernel inputs.
pub trait Compute<T: Real>: Send + Sync {
    /// The backend's name: "cpu", "cuda" or "hip".
    fn name(&self) -> &'static str;

    /// A short description of the device (for logs and `bench gpu`).
    fn device(&self) -> String;

    /// The same sums as [`cpu::gradients`] over the selected positions: object gradient and
    /// preconditioner on the rectangle of `obj`, probe gradient [K][kx][ky] and probe
    /// preconditioner [M, M] when `want_probe`, and the loss.
    ///
    /// `obj` must contain every selected window; `probe_hat` is [`kernel::probe_spectrum`] of the
    /// probe, [K][kx][ky]. Errors: an index out of range, a window outside `obj`, a device or
    /// driver failure (one line naming the backend).
    fn gradients(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
        want_probe: bool,
    ) -> Result<Gradients<T>>;

    /// [`Compute::gradients`] with, in `g_pos`, each selected position's loss gradient with
    /// respect to its probe centre and its Gauss–Newton curvature
    /// ([`cpu::gradients_and_positions`], docs/algorithm.md §14); the other sums are those of
    /// [`Compute::gradients`] bit for bit.
    ///
    /// Errors: those of [`Compute::gradients`]; a backend without the position terms (the
    /// default: one line naming `position_correction.enabled`).
    fn gradients_and_positions(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
        want_probe: bool,
    ) -> Result<Gradients<T>> {
        let _ = (obj, probe_hat, sel, want_probe);
        Err(Error::new(
            "position_correction.enabled",
            format!(
                "the {} backend does not refine positions (cpu does)",
                self.name()
            ),
        ))
    }

    /// Replace the rank's positions by `positions` (the same global indices in the same
    /// order, with refined centres: new windows and shift ramps); the intensities stay.
    ///
    /// Errors: a different count or order of positions; a backend that keeps positions
    /// fixed (the default: one line naming `position_correction.enabled`).
    fn set_positions(&mut self, positions: Arc<[PositionGeom<T>]>) -> Result<()> {
        let _ = positions;
        Err(Error::new(
            "position_correction.enabled",
            format!(
                "the {} backend does not refine positions (cpu does)",
                self.name()
            ),
        ))
    }

    /// One difference-map (or, with `step.error_reduction`, error-reduction) pass over the
    /// selected positions: the same exit-wave update and overlap sums as
    /// [`cpu::difference_map`] without the probe sums (`g_obj = Σ_jk P*_jk ψ_jk`,
    /// `d_obj = Σ_jk |P_jk|²` on the rectangle of `obj`, and the loss at the current state;
    /// docs/algorithm.md §7).
    ///
    /// The exit waves ψ_jk ([n][K][M][M], one per position of the rank and probe mode) are
    /// the backend's and stay where the arithmetic runs (device memory on GPUs); with `init`
    /// the selected ones are first set to P_jk O_j (a stage's first iteration).
    /// [`Compute::exit_waves`] and [`Compute::set_exit_waves`] move them for checkpoints.
    ///
    /// Errors: as [`Compute::gradients`]; no exit waves yet and not `init`; an index subset
    /// (the exit waves are addressed by contiguous ranges; dm passes ranges).
    fn difference_map(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
        init: bool,
        step: DmStep,
    ) -> Result<Gradients<T>>;

    /// The probe half of the difference map's overlap step ([`cpu::probe_sums`]) with the
    /// backend's exit waves: `g_probe_hat = Σ_j conj(e_j) F(O*_j ψ_jk)` ([K][kx][ky]) and
    /// `d_probe = Σ_j |O_j|²` ([M, M]) over the selected positions.
    /// Errors: as [`Compute::difference_map`].
    fn probe_sums(&self, obj: &Field<Complex<T>>, sel: Selection) -> Result<Gradients<T>>;

    /// A copy of the exit waves, [n][K][M][M] complex in position order, real space [y][x]
    /// per mode (empty before the first [`Compute::difference_map`]): for checkpoints.
    /// Errors: a device failure.
    fn exit_waves(&self) -> Result<Vec<Complex<T>>>;

    /// Replace the exit waves by `waves` (a checkpoint's; same layout as
    /// [`Compute::exit_waves`]; empty: none).
    /// Errors: a length other than 0 or n K M²; a device failure.
    fn set_exit_waves(&self, waves: Vec<Complex<T>>) -> Result<()>;

    /// One ePIE/rPIE sweep ([`pie::sweep`], docs/algorithm.md §9): the selected positions
    /// in the selection's order, each updating `obj` (whose rectangle holds every window)
    /// and the probe spectrum `probe_hat` ([K][kx][ky], unitary) before the next is
    /// modelled; adds Σ_k |P_jk|² of every position to `illum` (same rectangle as `obj`).
    /// Returns Σ_j loss_j, each at the state when position j was visited.
    ///
    /// Errors: as [`Compute::gradients`]; `illum` not on the rectangle of `obj`.
    fn pie_sweep(
        &self,
        obj: &mut Field<Complex<T>>,
        probe_hat: &mut [Complex<T>],
        sel: Selection,
        step: &PieStep,
        illum: &mut Field<f64>,
    ) -> Result<f64>;

    /// Bytes this backend has copied host → device and device → host since it was opened
    /// (after the one-time copy of the positions and intensities): the traffic of the calls
    /// above, for `ptytile bench gpu` and docs/gpu.md. `[0, 0]` on the CPU, which copies
    /// nothing.
    fn bytes_moved(&self) -> [u64; 2] {
        [0, 0]
    }

    /// The backend's own copy of the object field and its gradient sums, kept across
    /// calls ([`resident::Resident`]: GPUs), or `None` (the default; the CPU, whose engines
    /// work on the host arrays). gd uses it in the tiled full-batch mode, so that per
    /// iteration only halo rectangles, the probe spectrum and the probe sums cross.
    fn resident(&self) -> Option<&dyn resident::Resident<T>> {
        None
    }

    /// Model intensities I_j = Σ_k |F S_j P_k O_j|² (unitary) of the selected positions,
    /// [n][kx][ky] (see [`cpu::model_intensities`]).
    fn model_intensities(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
    ) -> Result<Vec<T>>;

    /// Σ_j loss_j of the noise model over the selected positions (as [`cpu::loss`]); by
    /// default the loss of [`Compute::gradients`] without the probe sums.
    fn loss(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
    ) -> Result<f64> {
        Ok(self.gradients(obj, probe_hat, sel, false)?.loss)
    }
}

/// Error unless `new` holds the same positions as `old` in the same order (global indices):
/// [`Compute::set_positions`] replaces centres, not the rank's positions.
pub(crate) fn check_same_positions<T: Real>(
    old: &[PositionGeom<T>],
    new: &[PositionGeom<T>],
) -> Result<()> {
    let same = new.len() == old.len() && new.iter().zip(old).all(|(a, b)| a.index == b.index);
    if same {
        Ok(())
    } else {
        Err(Error::new(
            "backend",
            "refined positions must keep the rank's positions and their order",
        ))
    }
}

/// Each selected position's window origin (row, column) relative to `obj`'s origin, for a
/// window side `m`. Errors (naming the position's global index) when a window is not
/// inside `obj`; the kernels rely on it.
pub fn window_offsets<'a, T: Real, V>(
    obj: &Field<V>,
    m: usize,
    pos: impl Iterator<Item = &'a PositionGeom<T>>,
) -> Result<Vec<[i32; 2]>> {
    pos.map(|p| {
        let oy = p.window[0] - obj.origin[0];
        let ox = p.window[1] - obj.origin[1];
        if oy < 0 || ox < 0 || oy as usize + m > obj.shape[0] || ox as usize + m > obj.shape[1] {
            return Err(Error::new(
                "backend",
                format!(
                    "the window of position {} lies outside the object field",
                    p.index
                ),
            ));
        }
        Ok([oy as i32, ox as i32])
    })
    .collect()
}

/// Error unless `len` exit-wave values fit `n` positions of `modes` probe modes of `m` × `m`
/// pixels ([`Compute::difference_map`], [`Compute::probe_sums`]).
pub fn check_exit_waves(modes: usize, m: usize, n: usize, len: usize) -> Result<()> {
    let want = n * modes * m * m;
    if len != want {
        return Err(Error::new(
            "backend",
            format!("{len} exit-wave values for {n} positions (expected {want})"),
        ));
    }
    Ok(())
}

/// The positions of a contiguous selection, for the operations on dm's exit waves
/// ([`Compute::difference_map`], [`Compute::probe_sums`]), which address them by range.
/// Errors: an index subset.
pub fn exit_range(sel: &Selection) -> Result<std::ops::Range<usize>> {
    match sel {
        Selection::Range(r) => Ok(r.clone()),
        Selection::Indices(_) => Err(Error::new(
            "backend",
            "the difference map takes contiguous ranges of positions",
        )),
    }
}

/// Error unless the illumination sums `illum` lie on the rectangle of `obj`
/// ([`Compute::pie_sweep`]).
pub fn check_illumination<V>(obj: &Field<V>, illum: &Field<f64>) -> Result<()> {
    if illum.origin != obj.origin || illum.shape != obj.shape || illum.data.len() != obj.data.len()
    {
        return Err(Error::new(
            "backend",
            "the illumination sums are not on the object's rectangle",
        ));
    }
    Ok(())
}

/// Name of the option in errors about the backend choice.
pub fn option_name(kind: BackendKind) -> String {
    format!("--backend {} ([parallel] backend)", kind.name())
}

/// Open the backend `kind` for one rank: copies (CPU) or uploads (GPU) the positions and their
/// intensities (M² values each, [kx][ky], same order as `positions`) once.
///
/// `local_rank`: the rank's index among the ranks of its node ([`local_rank`] under MPI, the
/// thread-rank index for in-process ranks); GPU backends take device `local_rank mod count`.
///
/// Errors (one line naming `--backend` / `[parallel] backend`): a backend this binary was
/// built without, its libraries absent (no driver, no runtime), no device, a device failure.
/// GPU backends compute in `T`: f32 (C2C transforms), or f64 (the kernels compiled with
/// `PTY_F64`, Z2Z transforms; docs/gpu.md "Precision").
pub fn open<T: Real>(
    kind: BackendKind,
    kernel: &Kernel<T>,
    positions: Arc<[PositionGeom<T>]>,
    intensities: Arc<[f32]>,
    local_rank: Option<usize>,
) -> Result<Box<dyn Compute<T>>> {
    let mm = kernel.fft.size() * kernel.fft.size();
    if intensities.len() != positions.len() * mm {
        return Err(Error::new(
            "backend",
            format!(
                "{} intensities for {} positions of {mm} pixels",
                intensities.len(),
                positions.len()
            ),
        ));
    }
    match kind {
        BackendKind::Cpu => Ok(Box::new(host::Host::new(
            kernel.clone(),
            positions,
            intensities,
        ))),
        BackendKind::Cuda | BackendKind::Hip => gpu::open(
            kind,
            kernel,
            positions,
            intensities,
            local_rank.unwrap_or(0),
        ),
    }
}

/// Check, without opening a device, that backend `kind` can run here: built in, its libraries
/// load, a device is present. `Ok(())` for the CPU. Used to fail early on the command line.
pub fn available(kind: BackendKind) -> Result<()> {
    match kind {
        BackendKind::Cpu => Ok(()),
        _ => gpu::available(kind),
    }
}

/// Environment variables that carry a process's node-local rank, in the order they are read:
/// Slurm, Open MPI, MPICH/Intel MPI (Hydra), PMI, LSF's jsrun.
pub const LOCAL_RANK_VARS: [&str; 5] = [
    "SLURM_LOCALID",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MPI_LOCALRANKID",
    "PMI_LOCAL_RANK",
    "JSM_NAMESPACE_LOCAL_RANK",
];

/// This process's node-local rank from the launcher's environment ([`LOCAL_RANK_VARS`],
/// the first that is set and parses), `None` outside a launcher.
pub fn local_rank() -> Option<usize> {
    local_rank_from(|k| std::env::var(k).ok())
}

/// [`local_rank`] with the environment given as a lookup (for tests).
pub fn local_rank_from(get: impl Fn(&str) -> Option<String>) -> Option<usize> {
    LOCAL_RANK_VARS
        .iter()
        .find_map(|k| get(k).and_then(|v| v.trim().parse().ok()))
}

/// The GPU a rank uses: its node-local rank modulo the node's device count (several ranks
/// may share one GPU). `None` when there is no device.
pub fn device_for(local_rank: usize, devices: usize) -> Option<usize> {
    (devices > 0).then(|| local_rank % devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_rank_reads_launcher_variables_in_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(local_rank_from(env(&[])), None);
        assert_eq!(
            local_rank_from(env(&[("OMPI_COMM_WORLD_LOCAL_RANK", "3")])),
            Some(3)
        );
        assert_eq!(
            local_rank_from(env(&[("MPI_LOCALRANKID", "2"), ("PMI_LOCAL_RANK", "5")])),
            Some(2)
        );
        // Slurm first; an unparsable value falls through to the next variable
        assert_eq!(
            local_rank_from(env(&[
                ("SLURM_LOCALID", "1"),
                ("OMPI_COMM_WORLD_LOCAL_RANK", "7")
            ])),
            Some(1)
        );
        assert_eq!(
            local_rank_from(env(&[("SLURM_LOCALID", "x"), ("PMI_LOCAL_RANK", " 6 ")])),
            Some(6)
        );
        assert_eq!(
            local_rank_from(env(&[("JSM_NAMESPACE_LOCAL_RANK", "4")])),
            Some(4)
        );
    }

    #[test]
    fn ranks_share_devices_round_robin() {
        assert_eq!(device_for(0, 0), None);
        assert_eq!(
            (0..6)
                .map(|r| device_for(r, 4).unwrap())
                .collect::<Vec<_>>(),
            [0, 1, 2, 3, 0, 1]
        );
        assert_eq!(
            (0..4)
                .map(|r| device_for(r, 1).unwrap())
                .collect::<Vec<_>>(),
            [0, 0, 0, 0]
        );
    }

    #[test]
    fn selection_checks_bounds() {
        assert!(Selection::Range(0..5).check(5).is_ok());
        assert_eq!(
            Selection::Range(2..6).check(5).unwrap_err().msg,
            "position index 5 is out of range (the rank has 5 positions)"
        );
        assert!(Selection::Indices(&[4, 0, 2]).check(5).is_ok());
        assert!(Selection::Indices(&[1, 9]).check(5).is_err());
        assert_eq!(Selection::Indices(&[3, 1]).to_vec(), [3, 1]);
        assert_eq!(Selection::Range(1..4).to_vec(), [1, 2, 3]);
    }
}
