//! The Fourier step shared by the projection engines (dm's `Π_F`, epie/rpie's modulus
//! update): per detector pixel weights that scale a far field to the relaxed modulus of
//! [`crate::physics::model::relaxed_modulus`] (docs/algorithm.md §7, §9).

use crate::config::NoiseModel;
use crate::physics::fft::Real;
use crate::physics::model::relaxed_modulus;

/// Weights of the relaxed Fourier step for one pattern: `wt = s · f(Î, isc · im)` per
/// detector pixel, f the [`relaxed_modulus`] factor of `noise` with relaxation `gamma`
/// ∈ (0, 1] (1: the modulus projection, `wt = s √((Î + ε) / (isc · im + ε))`) and the
/// intensity floor `eps` = ε (counts), and
/// `s` (the model far field kept) on pixels the detector mask excludes (`mask` 0, see
/// `backend::kernel::Kernel::weights`; `None`: every pixel measured).
///
/// `meas`: measured counts Î; `im`: model intensities Σ_k|Ψ_k|² in units where
/// isc · im is the unitary intensity (raw FFT intensities with isc = 1/M², unitary ones
/// with isc = 1); all three slices of length M², same layout. With s = 1/M², a raw inverse
/// FFT of Ψ_raw · wt is the unitary F⁻¹ of the relaxed far field f Ψ.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fourier_weights<T: Real>(
    noise: NoiseModel,
    gamma: T,
    eps: T,
    meas: &[f32],
    mask: Option<&[f32]>,
    im: &[T],
    isc: T,
    wt: &mut [T],
    s: T,
) {
    for (q, ((w, m), i)) in wt.iter_mut().zip(meas).zip(im).enumerate() {
        *w = if mask.is_some_and(|g| g[q] == 0.0) {
            s
        } else {
            relaxed_modulus(noise, gamma, T::of32(*m), *i * isc, eps) * s
        };
    }
}
