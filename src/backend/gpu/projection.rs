//! The difference map's exit-wave step and probe sums and the sequential ePIE/rPIE sweep on
//! a GPU (the projection engines' [`crate::backend::Compute`] operations; docs/gpu.md).

use super::device::{DPtr, Device};
use super::launch;
use super::memory::State;
use super::{blocks, Gpu};
use crate::backend::kernel::{DmStep, Gradients};
use crate::backend::pie::PieStep;
use crate::backend::Selection;
use crate::error::{Error, Result};
use crate::physics::fft::Real;
use crate::physics::model::Field;
use num_complex::Complex;

impl<T: Real, D: Device> Gpu<T, D> {
    pub(super) fn dm_pass(
        &self,
        obj: &Field<Complex<T>>,
        probe_hat: &[Complex<T>],
        sel: Selection,
        init: bool,
        step: DmStep,
    ) -> Result<Gradients<T>> {
        self.with(|st| {
            sel.check(self.positions.len())?;
            let first = crate::backend::exit_range(&sel)?.start;
            let mut out = Gradients::zeros(obj.origin, obj.shape, 1, None);
            if sel.is_empty() {
                return Ok(out);
            }
            self.geo(st, obj, true)?;
            let (staged, wins) = self.stage(st, obj, Some(probe_hat), &sel)?;
            let [h, w] = obj.shape;
            let ns = sel.len();
            let g_t = st.buf("g_t", h * w * 16)?;
            let d_t = st.buf("d_t", h * w * 8)?;
            let loss = st.buf("loss", ns * 8)?;
            st.dev.zero(g_t, h * w * 16)?;
            st.dev.zero(d_t, h * w * 8)?;
            self.dm_sums(st, staged, &wins, h, [g_t, d_t], loss, first, init, step)?;
            self.download_object_sums(st, [g_t, d_t], obj.shape, &mut out)?;
            out.loss = self.download_loss(st, loss, ns)?;
            Ok(out)
        })
    }

    /// dm's pass (or error reduction's) over the staged selection ([`Gpu::stage`]; `wins`
    /// its windows on the host, object of column height `h`) whose exit waves start at
    /// position `first`: the exit waves updated on the device, Σ P* ψ and Σ |P|² added to
    /// [g_T, d_T], each position's loss written at `loss`. Starts the exit waves (from
    /// P O) with `init`. Errors: no exit waves yet without `init`; a device failure.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dm_sums(
        &self,
        st: &mut State<D>,
        staged: [DPtr; 4],
        wins: &[[i32; 2]],
        h: usize,
        [g_t, d_t]: [DPtr; 2],
        loss: DPtr,
        first: usize,
        init: bool,
        step: DmStep,
    ) -> Result<()> {
        let (m, k) = (self.m, self.modes);
        let kmm = k * m * m;
        if !st.has_exit {
            if !init {
                return Err(Error::new(
                    self.name,
                    "no exit waves yet (dm starts with init)",
                ));
            }
            // every selected wave is set by `init` before it is read; the others wait
            // for their own first pass
            let bytes = self.positions.len() * kmm * Self::C;
            let exit = st.exit_buffer(bytes)?;
            st.dev.zero(exit, bytes)?;
            st.has_exit = true;
        }
        let geo = super::Geo::single(h, self.batch);
        let exit = st.exit.ptr + (first * kmm * Self::C) as u64;
        let [obj_t, _, idx, win] = staged;
        let ns = wins.len();
        let x = st.buf("dm_x", self.batch * kmm * Self::C)?;
        let sc2 = self.inv_m2();
        let g = st.weights.map_or(0, |b| b.ptr);
        let er = step.error_reduction;
        let fisher = crate::physics::model::fisher_scale(self.noise);
        for s in (0..ns).step_by(self.batch) {
            let nb = self.batch.min(ns - s);
            let n = nb * kmm;
            let (idx_b, win_b) = (idx + 4 * s as u64, win + 8 * s as u64);
            let (p, psi, full) = (st.p.ptr, st.psi.ptr, self.batch * k);
            // this batch's exit waves, resident ([x][y] per mode, like every wave here)
            let ev = exit + (s * kmm * Self::C) as u64;
            self.forward(st, staged, geo, s, nb)?;
            if !er {
                launch::dm_prepare(
                    &mut st.dev,
                    blocks(n),
                    x,
                    ev,
                    p,
                    obj_t,
                    win_b,
                    h,
                    m,
                    k,
                    nb,
                    init as usize,
                )?;
                st.fft(x, m, nb * k, full, false)?;
            }
            launch::fourier_step(
                &mut st.dev,
                nb,
                psi,
                x,
                loss + 8 * s as u64,
                st.meas.ptr,
                g,
                idx_b,
                m,
                k,
                self.noise_code(),
                self.eps,
                sc2,
                step.gamma,
                er as usize,
                fisher,
            )?;
            let far = if er { psi } else { x };
            st.fft(far, m, nb * k, full, true)?;
            launch::dm_update(
                &mut st.dev,
                blocks(n),
                far,
                ev,
                p,
                obj_t,
                win_b,
                h,
                m,
                k,
                nb,
                er as usize,
                step.beta,
            )?;
            self.gather(st, [g_t, d_t], [far, p], win_b, &wins[s..s + nb], h)?;
        }
        Ok(())
    }

    pub(super) fn dm_probe_sums(
        &self,
        obj: &Field<Complex<T>>,
        sel: Selection,
    ) -> Result<Gradients<T>> {
        let (m, k) = (self.m, self.modes);
        let (mm, kmm) = (m * m, k * m * m);
        self.with(|st| {
            sel.check(self.positions.len())?;
            let mut out = Gradients::zeros([0, 0], [0, 0], 1, Some((k, mm)));
            if sel.is_empty() {
                return Ok(out);
            }
            self.geo(st, obj, true)?;
            let ([obj_t, _, idx, win], _) = self.stage(st, obj, None, &sel)?;
            let gp = st.buf("gp", kmm * 16)?;
            let dp_t = st.buf("dp_t", mm * 8)?;
            st.dev.zero(gp, kmm * 16)?;
            st.dev.zero(dp_t, mm * 8)?;
            self.dm_probe_batches(st, [obj_t, idx, win], obj.shape[0], &sel, [gp, dp_t])?;
            self.download_probe_sums(st, [gp, dp_t], &mut out)?;
            Ok(out)
        })
    }

    /// dm's probe sums over the selection (indices `idx`, windows `win` on the device, the
    /// object objT of column height `h`) from its exit waves, added to [g_P̂, d_P^T].
    /// Errors: no exit waves yet; a selection that is not a range; a device failure.
    pub(super) fn dm_probe_batches(
        &self,
        st: &mut State<D>,
        [obj_t, idx, win]: [DPtr; 3],
        h: usize,
        sel: &Selection,
        [gp, dp_t]: [DPtr; 2],
    ) -> Result<()> {
        let (m, k) = (self.m, self.modes);
        let kmm = k * m * m;
        let first = crate::backend::exit_range(sel)?.start;
        if !st.has_exit {
            return Err(Error::new(self.name, "no exit waves yet"));
        }
        let exit = st.exit.ptr + (first * kmm * Self::C) as u64;
        let ns = sel.len();
        for s in (0..ns).step_by(self.batch) {
            let nb = self.batch.min(ns - s);
            let (idx_b, win_b) = (idx + 4 * s as u64, win + 8 * s as u64);
            let (psi, full) = (st.psi.ptr, self.batch * k);
            let bytes = nb * kmm * Self::C;
            st.dev.copy(psi, exit + (s * kmm * Self::C) as u64, bytes)?;
            launch::conj_object(
                &mut st.dev,
                blocks(nb * kmm),
                psi,
                obj_t,
                win_b,
                h,
                m,
                k,
                nb,
            )?;
            st.fft(psi, m, nb * k, full, false)?;
            self.add_probe_sums(st, [gp, dp_t], [psi, obj_t], [idx_b, win_b], h, nb)?;
        }
        Ok(())
    }

    pub(super) fn copy_exit_waves(&self) -> Result<Vec<Complex<T>>> {
        self.with(|st| {
            if !st.has_exit {
                return Ok(Vec::new());
            }
            let mut v =
                vec![Complex::default(); self.positions.len() * self.modes * self.m * self.m];
            let exit = st.exit.ptr;
            self.download_planes(st, exit, &mut v)?;
            Ok(v)
        })
    }

    pub(super) fn load_exit_waves(&self, waves: Vec<Complex<T>>) -> Result<()> {
        let n = self.positions.len();
        self.with(|st| {
            if waves.is_empty() {
                st.has_exit = false;
                return Ok(());
            }
            crate::backend::check_exit_waves(self.modes, self.m, n, waves.len())?;
            let exit = st.exit_buffer(waves.len() * Self::C)?;
            self.upload_planes(st, exit, &waves)?;
            st.has_exit = true;
            Ok(())
        })
    }

    pub(super) fn pie_pass(
        &self,
        obj: &mut Field<Complex<T>>,
        probe_hat: &mut [Complex<T>],
        sel: Selection,
        step: &PieStep,
        illum: &mut Field<f64>,
    ) -> Result<f64> {
        let (m, k) = (self.m, self.modes);
        let (mm, kmm) = (m * m, k * m * m);
        self.with(|st| {
            crate::backend::check_illumination(obj, illum)?;
            sel.check(self.positions.len())?;
            if sel.is_empty() {
                return Ok(0.0);
            }
            let geo = self.geo(st, obj, true)?;
            let (staged, _) = self.stage(st, obj, Some(&*probe_hat), &sel)?;
            let [obj_t, ph, idx, win] = staged;
            let [h, w] = obj.shape;
            let ns = sel.len();
            let illum_t = st.buf("illum_t", h * w * 8)?;
            st.dev.zero(illum_t, h * w * 8)?;
            let loss = st.buf("loss", ns * 8)?;
            let den = st.buf("pie_den", mm * std::mem::size_of::<T>())?;
            let mx = st.buf("pie_max", 8)?;
            let tw = st.buf("pie_t", kmm * Self::C)?;
            let (sc, sc2) = (self.inv_m(), self.inv_m2());
            let g = st.weights.map_or(0, |b| b.ptr);
            let (p, psi, full) = (st.p.ptr, st.psi.ptr, self.batch * k);
            let (a_o, s_o) = (step.obj_mix, step.obj_step);
            let (a_p, s_p) = (step.probe_mix, step.probe_step);
            for s in 0..ns {
                self.forward(st, staged, geo, s, 1)?;
                launch::fourier_step(
                    &mut st.dev,
                    1,
                    psi,
                    psi,
                    loss + 8 * s as u64,
                    st.meas.ptr,
                    g,
                    idx + 4 * s as u64,
                    m,
                    k,
                    self.noise_code(),
                    self.eps,
                    sc2,
                    step.gamma,
                    0,
                    1.0,
                )?;
                st.fft(psi, m, k, full, true)?;
                launch::pie_delta(&mut st.dev, 1, psi, den, mx, p, obj_t, win, s, h, m, k)?;
                if step.update_probe {
                    launch::pie_probe_delta(
                        &mut st.dev,
                        blocks(kmm),
                        tw,
                        psi,
                        mx,
                        obj_t,
                        win,
                        s,
                        h,
                        m,
                        k,
                        a_p,
                        s_p,
                    )?;
                    st.fft(tw, m, k, full, false)?;
                    launch::pie_probe_add(
                        &mut st.dev,
                        blocks(kmm),
                        ph,
                        tw,
                        st.ramp_y.ptr,
                        st.ramp_x.ptr,
                        idx,
                        s,
                        m,
                        k,
                        sc,
                    )?;
                }
                launch::pie_object(
                    &mut st.dev,
                    blocks(mm),
                    obj_t,
                    illum_t,
                    psi,
                    den,
                    mx,
                    p,
                    win,
                    s,
                    h,
                    m,
                    k,
                    a_o,
                    s_o,
                )?;
            }
            // the object back to [y][x], the probe spectrum and the illumination sums
            let out = st.buf("obj_stage", h * w * Self::C)?;
            launch::transpose_c(&mut st.dev, blocks(h * w), out, obj_t, w, h)?;
            st.dev
                .download(bytemuck::cast_slice_mut(&mut obj.data[..h * w]), out)?;
            st.down(bytemuck::cast_slice_mut(probe_hat), ph)?;
            let il = self.download_t(st, illum_t, w, h, 1)?;
            illum.data.iter_mut().zip(&il).for_each(|(a, b)| *a += *b);
            self.download_loss(st, loss, ns)
        })
    }
}
