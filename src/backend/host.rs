//! The CPU implementation of [`Compute`]: [`cpu::gradients`], [`cpu::difference_map`],
//! [`cpu::probe_sums`] and [`pie::sweep`] over the selected positions, borrowing contiguous
//! ranges without copies and gathering index subsets.

use super::cpu::{self};
use super::kernel::{DmStep, Gradients, Kernel};
use super::pie::{self, PieStep};
use super::{Compute, Selection};
use crate::error::{Error, Result};
use crate::physics::fft::Real;
use crate::physics::model::{Field, PositionGeom};
use num_complex::Complex;
use std::borrow::Cow;
use std::sync::Arc;

/// Selected positions and their intensities, borrowed or gathered.
type Selected<'a, T> = (Cow<'a, [PositionGeom<T>]>, Cow<'a, [f32]>);

/// A rank's positions and intensities in host memory.
pub struct Host<T: Real> {
    kernel: Kernel<T>,
    positions: Arc<[PositionGeom<T>]>,
    intensities: Arc<[f32]>,
    /// dm's exit waves, [n][K][M][M] ([`Compute::difference_map`]); empty before dm runs.
    exit: std::sync::Mutex<Vec<Complex<T>>>,
}

impl<T: Real> Host<T> {
    /// Wrap the rank's positions and intensities ([n][kx][ky], M² values per position).
    pub fn new(
        kernel: Kernel<T>,
        positions: Arc<[PositionGeom<T>]>,
        intensities: Arc<[f32]>,
    ) -> Self {
        Host {
            kernel,
            positions,
            intensities,
            exit: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// [`Host::select`], with every selected window checked to lie inside `obj`.
    fn select_in<V>(&self, obj: &Field<V>, sel: &Selection) -> Result<Selected<'_, T>> {
        let (pos, meas) = self.select(sel)?;
        super::window_offsets(obj, self.kernel.fft.size(), pos.iter())?;
        Ok((pos, meas))
    }

    /// Exit-wave values of `n` positions (n K M²).
    fn exit_len(&self, n: usize) -> usize {
        n * self.kernel.modes * self.kernel.fft.size().pow(2)
    }

    /// The exit waves, locked.
    fn exit_lock(&self) -> Result<std::sync::MutexGuard<'_, Vec<Complex<T>>>> {
        self.exit
            .lock()
            .map_err(|_| Error::new("backend", "a previous call panicked"))
    }

    /// The selected positions and their intensities: borrowed for a range, gathered for indices.
    fn select(&self, sel: &Selection) -> Result<Selected<'_, T>> {
        sel.check(self.positions.len())?;
        let mm = self.kernel.fft.size() * self.kernel.fft.size();
        Ok(match sel {
            Selection::Range(r) => (
                Cow::Borrowed(&self.positions[r.clone()]),
                Cow::Borrowed(&self.intensities[r.start * mm..r.end * mm]),
            ),
            Selection::Indices(ix) => (
                Cow::Owned(ix.iter().map(|&j| self.positions[j].clone()).collect()),
                Cow::Owned(
                    ix.iter()
                        .flat_map(|&j| self.intensities[j * mm..(j + 1) * mm].iter().copied())
                        .collect(),
                ),
            ),
        })
    }
}

impl<T: Real> Compute<T> for Host<T> {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn device(&self) -> String {
        format!("CPU, {} threads", rayon::current_num_threads())
    }

    fn gradients(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
        want_probe: bool,
    ) -> Result<Gradients<T>> {
        let (pos, meas) = self.select_in(obj, &sel)?;
        Ok(cpu::gradients(
            &self.kernel,
            obj,
            probe_hat,
            &pos,
            &meas,
            want_probe,
        ))
    }

    fn gradients_and_positions(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
        want_probe: bool,
    ) -> Result<Gradients<T>> {
        let (pos, meas) = self.select_in(obj, &sel)?;
        Ok(cpu::gradients_and_positions(
            &self.kernel,
            obj,
            probe_hat,
            &pos,
            &meas,
            want_probe,
        ))
    }

    fn set_positions(&mut self, positions: Arc<[PositionGeom<T>]>) -> Result<()> {
        super::check_same_positions(&self.positions, &positions)?;
        self.positions = positions;
        Ok(())
    }

    fn loss(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
    ) -> Result<f64> {
        let (pos, meas) = self.select_in(obj, &sel)?;
        Ok(cpu::loss(&self.kernel, obj, probe_hat, &pos, &meas))
    }

    fn difference_map(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
        init: bool,
        step: DmStep,
    ) -> Result<Gradients<T>> {
        let (pos, meas) = self.select_in(obj, &sel)?;
        let kmm = self.exit_len(1);
        let mut all = self.exit_lock()?;
        let n_all = self.exit_len(self.positions.len());
        if all.len() != n_all {
            if !init {
                return Err(Error::new(
                    "backend",
                    "no exit waves yet (dm starts with init)",
                ));
            }
            *all = vec![Complex::default(); n_all];
        }
        let r = super::exit_range(&sel)?;
        Ok(cpu::difference_map(
            &self.kernel,
            obj,
            probe_hat,
            &pos,
            &meas,
            false,
            &mut all[r.start * kmm..r.end * kmm],
            init,
            step,
        ))
    }

    fn probe_sums(&self, obj: &Field<Complex<T>>, sel: Selection) -> Result<Gradients<T>> {
        let (pos, _) = self.select_in(obj, &sel)?;
        let kmm = self.exit_len(1);
        let all = self.exit_lock()?;
        if all.len() != self.exit_len(self.positions.len()) {
            return Err(Error::new("backend", "no exit waves yet"));
        }
        let r = super::exit_range(&sel)?;
        Ok(cpu::probe_sums(
            &self.kernel,
            obj,
            &pos,
            &all[r.start * kmm..r.end * kmm],
        ))
    }

    fn exit_waves(&self) -> Result<Vec<Complex<T>>> {
        Ok(self.exit_lock()?.clone())
    }

    fn set_exit_waves(&self, waves: Vec<Complex<T>>) -> Result<()> {
        let n = self.positions.len();
        if !waves.is_empty() {
            super::check_exit_waves(self.kernel.modes, self.kernel.fft.size(), n, waves.len())?;
        }
        *self.exit_lock()? = waves;
        Ok(())
    }

    fn pie_sweep(
        &self,
        obj: &mut Field<Complex<T>>,
        probe_hat: &mut [Complex<T>],
        sel: Selection,
        step: &PieStep,
        illum: &mut Field<f64>,
    ) -> Result<f64> {
        sel.check(self.positions.len())?;
        let ix = sel.to_vec();
        let m = self.kernel.fft.size();
        super::window_offsets(obj, m, ix.iter().map(|&j| &self.positions[j]))?;
        super::check_illumination(obj, illum)?;
        let pos: Vec<&PositionGeom<T>> = ix.iter().map(|&j| &self.positions[j]).collect();
        let meas: Vec<&[f32]> = ix
            .iter()
            .map(|&j| &self.intensities[j * m * m..(j + 1) * m * m])
            .collect();
        Ok(pie::sweep(
            &self.kernel,
            obj,
            probe_hat,
            &pos,
            &meas,
            step,
            illum,
        ))
    }

    fn model_intensities(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
    ) -> Result<Vec<T>> {
        let (pos, _) = self.select_in(obj, &sel)?;
        Ok(cpu::model_intensities(&self.kernel, obj, probe_hat, &pos))
    }
}
