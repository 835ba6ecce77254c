//! A rank's object field and its gradient sums kept in the backend's own memory across
//! iterations (GPUs; issue "One engine interface", docs/gpu.md "Resident state"), so that
//! gd moves per iteration only what the gradient decomposition exchanges: the halo
//! rectangles of the sums and of the object, the probe spectrum, the probe sums and a few
//! scalars. The CPU backend has no such copy: its engines work on the host arrays directly
//! ([`super::Compute::resident`] is `None`).
//!
//! Rectangles are in global object pixels ([`Rect`]) and must lie inside the field given
//! to [`Resident::load_object`]; host-side values are [rows][columns] row-major, one plane
//! (the GPU backends compute single-slice objects).

use super::kernel::{DmStep, PositionGradient};
use super::Selection;
use crate::error::Result;
use crate::physics::fft::Real;
use crate::physics::model::Field;
use crate::tiling::Rect;
use num_complex::{Complex, Complex64};

/// The resident object field (complex, working precision) and its f64 sums
/// g_O = Σ_jk P*_jk b_jk, D_O = Σ_jk |P_jk|² (docs/algorithm.md §4) on the same field, and
/// the probe sums ĝ_P ([K][kx][ky], complex f64) and D_P ([M, M], f64).
pub trait Resident<T: Real>: Send + Sync {
    /// Copy `obj` (one plane, [rows][cols]) into the backend: its rectangle becomes the
    /// resident field. Errors: a multislice field; a device failure.
    fn load_object(&self, obj: &Field<Complex<T>>) -> Result<()>;

    /// Copy the resident object into `obj` (the rectangle loaded).
    /// Errors: nothing loaded, another rectangle; a device failure.
    fn store_object(&self, obj: &mut Field<Complex<T>>) -> Result<()>;

    /// The resident object on `r`, [rows][cols].
    /// Errors: `r` outside the field; nothing loaded; a device failure.
    fn object_rect(&self, r: &Rect) -> Result<Vec<Complex<T>>>;

    /// Overwrite the resident object on `r` with `v` ([rows][cols]).
    /// Errors: `r` outside the field, `v` of another length; a device failure.
    fn write_object_rect(&self, r: &Rect, v: &[Complex<T>]) -> Result<()>;

    /// The sums of [`super::Compute::gradients`] over the selected positions on the
    /// resident object, added to the resident sums (set to zero first when `reset`; the
    /// probe sums only when `want_probe`). Returns Σ_j loss_j of the selection.
    /// Errors: as [`super::Compute::gradients`]; nothing loaded.
    fn accumulate(
        &self,
        probe_hat: &[Complex<T>],
        sel: Selection,
        want_probe: bool,
        reset: bool,
    ) -> Result<f64>;

    /// [`Resident::accumulate`] that also returns each selected position's loss gradient
    /// with respect to its centre and its curvature (selection order), as
    /// [`super::Compute::gradients_and_positions`] does; the sums are the same bits.
    /// Errors: as [`Resident::accumulate`].
    fn accumulate_with_positions(
        &self,
        probe_hat: &[Complex<T>],
        sel: Selection,
        want_probe: bool,
        reset: bool,
    ) -> Result<(f64, Vec<PositionGradient>)>;

    /// dm's pass ([`super::Compute::difference_map`], or error reduction's) over the
    /// selected positions (a contiguous range) on the resident object: the backend's exit
    /// waves updated, g_O = Σ P* ψ and D_O = Σ |P|² added to the resident sums (set to zero
    /// first when `reset`). Returns Σ_j loss_j at the current state.
    /// Errors: as [`super::Compute::difference_map`]; nothing loaded.
    fn dm_accumulate(
        &self,
        probe_hat: &[Complex<T>],
        sel: Selection,
        init: bool,
        step: DmStep,
        reset: bool,
    ) -> Result<f64>;

    /// dm's probe sums ([`super::Compute::probe_sums`]) over the selected positions (a
    /// contiguous range) from the resident object and the backend's exit waves:
    /// (ĝ_P [K][kx][ky], D_P [M, M] row-major).
    /// Errors: as [`super::Compute::probe_sums`]; nothing loaded.
    fn dm_probe_sums(&self, sel: Selection) -> Result<(Vec<Complex64>, Vec<f64>)>;

    /// dm's overlap step on `r` ([`crate::engine::dm`], docs/algorithm.md §7):
    /// O ← O + (g_O − D_O O) / (D_O + reg), formed in f64 and rounded to the working
    /// precision. Errors: as [`Resident::sums_rect`].
    fn ratio_update(&self, r: &Rect, reg: f64) -> Result<()>;

    /// The resident probe sums (ĝ_P [K][kx][ky], D_P [M, M] row-major).
    /// Errors: no probe sums accumulated since the last reset; a device failure.
    fn probe_sums(&self) -> Result<(Vec<Complex64>, Vec<f64>)>;

    /// The resident sums (g_O, D_O) on `r`, [rows][cols] each: a halo message's content.
    /// Errors: `r` outside the field; a device failure.
    fn sums_rect(&self, r: &Rect) -> Result<(Vec<Complex64>, Vec<f64>)>;

    /// Add `g`, `d` ([rows][cols] on `r`: a neighbour's halo sums) to the resident sums.
    /// Errors: `r` outside the field, lengths other than r's area; a device failure.
    fn add_sums_rect(&self, r: &Rect, g: &[Complex64], d: &[f64]) -> Result<()>;

    /// max D_O over `r` (0 for an empty rectangle). Errors: as [`Resident::sums_rect`].
    fn max_d(&self, r: &Rect) -> Result<f64>;

    /// gd's object step on `r` ([`crate::engine::gd::apply`]): O ← O − (g_O / planes) ·
    /// (alpha / (D_O + reg)), formed in f64 and rounded to the working precision.
    /// Errors: as [`Resident::sums_rect`].
    fn update_object(&self, r: &Rect, alpha: f64, planes: f64, reg: f64) -> Result<()>;
}
