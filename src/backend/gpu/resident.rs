//! The resident object field on a GPU ([`Resident`], docs/gpu.md "Resident state"): the
//! object (transposed, [x][y] complex f32), its f64 sums g_T, d_T and the probe sums stay
//! in device memory; the probe spectrum and each selection's indices and windows are
//! uploaded only when they change. What crosses per gd iteration: the probe spectrum
//! (8 K M² B), the halo rectangles (24 B per pixel of sums each way, 8 B per pixel of
//! object each way), the probe sums (16 K M² + 8 M² B), a column maximum per tile column
//! and each position's loss (8 B).

use super::device::{blocks, DPtr, Device};
use super::launch;
use super::memory::{bytes_of, State};
use super::Gpu;
use crate::backend::kernel::{DmStep, PositionGradient};
use crate::backend::resident::Resident;
use crate::backend::Selection;
use crate::error::{Error, Result};
use crate::physics::fft::Real;
use crate::physics::model::Field;
use crate::tiling::Rect;
use num_complex::{Complex, Complex64};

/// Names of the cached selection buffers (indices, windows), three slots: gd alternates
/// between its halo and its interior positions, dm adds all positions (its probe sums).
const SLOTS: [[&str; 2]; 3] = [
    ["res_idx0", "res_win0"],
    ["res_idx1", "res_win1"],
    ["res_idx2", "res_win2"],
];

/// The resident field's rectangle: origin (row, column) and shape [rows, cols].
#[derive(Clone, Copy, PartialEq)]
struct Geom {
    origin: [i64; 2],
    shape: [usize; 2],
}

/// What the device holds for the resident field.
pub(crate) struct Res {
    geom: Geom,
    /// The probe sums hold a pass's values (accumulated with `want_probe` since the reset).
    probe: bool,
    /// The probe spectrum last uploaded (bytes), to skip unchanged uploads.
    probe_hat: Vec<u8>,
    /// The selections whose indices and windows are in the slots, and those windows.
    sel: [Vec<usize>; 3],
    win: [Vec<[i32; 2]>; 3],
    /// When each slot was last used (a call counter): the least recently used is replaced.
    used: [u64; 3],
    calls: u64,
}

impl Res {
    /// Drop the cached selections (their windows change with the positions).
    pub(crate) fn forget_selections(&mut self) {
        self.sel = Default::default();
        self.win = Default::default();
    }
}

impl Geom {
    /// `r` relative to the field: (row, column, rows, cols). Errors unless inside.
    fn local(&self, r: &Rect) -> Result<[usize; 4]> {
        let f = Rect::from_origin_shape(self.origin, self.shape);
        if !f.contains_rect(r) {
            return Err(Error::new(
                "backend",
                format!("rectangle {r:?} lies outside the resident object field {f:?}"),
            ));
        }
        let [rh, rw] = r.shape();
        Ok([
            (r.y0 - self.origin[0]) as usize,
            (r.x0 - self.origin[1]) as usize,
            rh,
            rw,
        ])
    }
}

impl<T: Real, D: Device> Gpu<T, D> {
    /// [`Resident::accumulate`], with `want_positions` also the per-position terms.
    fn res_accumulate(
        &self,
        probe_hat: &[Complex<T>],
        sel: Selection,
        want_probe: bool,
        reset: bool,
        want_positions: bool,
    ) -> Result<(f64, Vec<PositionGradient>)> {
        let (m, k) = (self.m, self.modes);
        let mm = m * m;
        self.with(|st| {
            let (res, [obj_t, g_t, d_t]) = self.res(st)?;
            let [h, w] = res.shape;
            let gp = st.buf("res_gp", k * mm * 16)?;
            let dp_t = st.buf("res_dp_t", mm * 8)?;
            if reset {
                st.dev.zero(g_t, h * w * 16)?;
                st.dev.zero(d_t, h * w * 8)?;
                st.dev.zero(gp, k * mm * 16)?;
                st.dev.zero(dp_t, mm * 8)?;
                st.res.as_mut().expect("checked").probe = false;
            }
            if sel.is_empty() {
                return Ok((0.0, Vec::new()));
            }
            let ph = self.res_probe_hat(st, probe_hat)?;
            let ([idx, win], wins) = self.res_selection(st, &sel)?;
            let loss = st.buf("loss", wins.len() * 8)?;
            let terms = match want_positions {
                true => Some(st.buf("position_terms", wins.len() * 32)?),
                false => None,
            };
            let staged = [obj_t, ph, idx, win];
            let geo = super::Geo::single(h, self.batch);
            self.sum_pass(
                st,
                staged,
                &wins,
                geo,
                [g_t, d_t, gp, dp_t],
                loss,
                want_probe,
                terms,
            )?;
            let ns = wins.len();
            if want_probe {
                st.res.as_mut().expect("checked").probe = true;
            }
            let pos = match terms {
                Some(t) => self.download_position_terms(st, t, &sel)?,
                None => Vec::new(),
            };
            Ok((self.download_loss(st, loss, ns)?, pos))
        })
    }

    /// Run `f` on the resident buffers [objT, g_T, d_T], the field's column height and `r`
    /// relative to the field (row, column, rows, cols), unless `r` is empty.
    /// Errors: `r` outside the field; nothing loaded; a device failure.
    fn on_rect(
        &self,
        r: &Rect,
        f: impl FnOnce(&mut State<D>, [DPtr; 3], usize, [usize; 4]) -> Result<()>,
    ) -> Result<()> {
        self.with(|st| {
            let (res, bufs) = self.res(st)?;
            let at = res.local(r)?;
            if at[2] * at[3] == 0 {
                return Ok(());
            }
            f(st, bufs, res.shape[0], at)
        })
    }

    /// The resident field's description and its device buffers [objT, g_T, d_T].
    fn res(&self, st: &mut State<D>) -> Result<(Geom, [DPtr; 3])> {
        let geom = match &st.res {
            Some(r) => r.geom,
            None => return Err(Error::new(self.name, "no resident object loaded")),
        };
        let [h, w] = geom.shape;
        let b = [
            st.buf("res_obj_t", h * w * Self::C)?,
            st.buf("res_g_t", h * w * 16)?,
            st.buf("res_d_t", h * w * 8)?,
        ];
        Ok((geom, b))
    }

    /// Upload the probe spectrum unless it equals the last one; its device pointer.
    fn res_probe_hat(&self, st: &mut State<D>, probe_hat: &[Complex<T>]) -> Result<DPtr> {
        self.check_probe_hat(Some(probe_hat))?;
        let ph = st.buf("res_probe_hat", probe_hat.len() * Self::C)?;
        let bytes = bytes_of(probe_hat);
        let res = st.res.as_mut().expect("callers check");
        if res.probe_hat != bytes {
            res.probe_hat = bytes.to_vec();
            st.up(ph, bytes)?;
        }
        Ok(ph)
    }

    /// The device indices and windows of `sel`, uploaded unless a slot holds them, and the
    /// windows on the host.
    fn res_selection(
        &self,
        st: &mut State<D>,
        sel: &Selection,
    ) -> Result<([DPtr; 2], Vec<[i32; 2]>)> {
        sel.check(self.positions.len())?;
        let ix = sel.to_vec();
        let res = st.res.as_ref().expect("callers check");
        let Geom { origin, shape } = res.geom;
        let hit = res.sel.iter().position(|s| *s == ix);
        let lru = (0..SLOTS.len()).min_by_key(|&i| res.used[i]).unwrap_or(0);
        let slot = hit.unwrap_or(lru);
        let [ni, nw] = SLOTS[slot];
        let idx_d = st.buf(ni, ix.len() * 4)?;
        let win_d = st.buf(nw, ix.len() * 8)?;
        if hit.is_none() {
            let win = self.windows(origin, shape, &ix)?;
            let idx: Vec<i32> = ix.iter().map(|&j| j as i32).collect();
            st.up(idx_d, bytes_of(&idx))?;
            st.up(win_d, bytes_of(&win))?;
            let res = st.res.as_mut().expect("callers check");
            res.sel[slot] = ix;
            res.win[slot] = win;
        }
        let res = st.res.as_mut().expect("callers check");
        res.calls += 1;
        res.used[slot] = res.calls;
        let win = st.res.as_ref().expect("callers check").win[slot].clone();
        Ok(([idx_d, win_d], win))
    }
}

impl<T: Real, D: Device> Resident<T> for Gpu<T, D> {
    fn load_object(&self, obj: &Field<Complex<T>>) -> Result<()> {
        if obj.planes() != 1 {
            return Err(Error::new(
                self.name,
                "GPU backends compute single-slice objects",
            ));
        }
        self.with(|st| {
            st.res = Some(Res {
                geom: Geom {
                    origin: obj.origin,
                    shape: obj.shape,
                },
                probe: false,
                probe_hat: Vec::new(),
                sel: Default::default(),
                win: Default::default(),
                used: [0; 3],
                calls: 0,
            });
            let (_, [obj_t, ..]) = self.res(st)?;
            let [h, w] = obj.shape;
            let stage = st.buf("obj_stage", h * w * Self::C)?;
            st.up(stage, bytes_of(&obj.data))?;
            launch::transpose_c(&mut st.dev, blocks(h * w), obj_t, stage, h, w)
        })
    }

    fn store_object(&self, obj: &mut Field<Complex<T>>) -> Result<()> {
        self.with(|st| {
            let (res, [obj_t, ..]) = self.res(st)?;
            if res.origin != obj.origin || res.shape != obj.shape || obj.planes() != 1 {
                return Err(Error::new(
                    self.name,
                    "the resident object has another rectangle than the state's",
                ));
            }
            let [h, w] = obj.shape;
            let stage = st.buf("obj_stage", h * w * Self::C)?;
            // objT is [w][h]: its transpose is the [h][w] field
            launch::transpose_c(&mut st.dev, blocks(h * w), stage, obj_t, w, h)?;
            st.down(bytemuck::cast_slice_mut(&mut obj.data), stage)
        })
    }

    fn object_rect(&self, r: &Rect) -> Result<Vec<Complex<T>>> {
        self.with(|st| {
            let (res, [obj_t, ..]) = self.res(st)?;
            let h = res.shape[0];
            let [y0, x0, rh, rw] = res.local(r)?;
            let mut v = vec![Complex::new(T::zero(), T::zero()); rh * rw];
            if v.is_empty() {
                return Ok(v);
            }
            let out = st.buf("res_rect", rh * rw * Self::C)?;
            launch::rect_get_c(&mut st.dev, blocks(rh * rw), out, obj_t, h, y0, x0, rh, rw)?;
            st.down(bytemuck::cast_slice_mut(&mut v), out)?;
            Ok(v)
        })
    }

    fn write_object_rect(&self, r: &Rect, v: &[Complex<T>]) -> Result<()> {
        self.with(|st| {
            let (res, [obj_t, ..]) = self.res(st)?;
            let h = res.shape[0];
            let [y0, x0, rh, rw] = res.local(r)?;
            if v.len() != rh * rw {
                return Err(Error::new(
                    self.name,
                    format!("{} values for a {rh} x {rw} rectangle", v.len()),
                ));
            }
            if v.is_empty() {
                return Ok(());
            }
            let inp = st.buf("res_rect", rh * rw * Self::C)?;
            st.up(inp, bytes_of(v))?;
            launch::rect_set_c(&mut st.dev, blocks(rh * rw), obj_t, inp, h, y0, x0, rh, rw)
        })
    }

    fn accumulate(
        &self,
        probe_hat: &[Complex<T>],
        sel: Selection,
        want_probe: bool,
        reset: bool,
    ) -> Result<f64> {
        Ok(self
            .res_accumulate(probe_hat, sel, want_probe, reset, false)?
            .0)
    }

    fn accumulate_with_positions(
        &self,
        probe_hat: &[Complex<T>],
        sel: Selection,
        want_probe: bool,
        reset: bool,
    ) -> Result<(f64, Vec<PositionGradient>)> {
        self.res_accumulate(probe_hat, sel, want_probe, reset, true)
    }

    fn probe_sums(&self) -> Result<(Vec<Complex64>, Vec<f64>)> {
        let (m, k) = (self.m, self.modes);
        let mm = m * m;
        self.with(|st| {
            if !st.res.as_ref().is_some_and(|r| r.probe) {
                return Err(Error::new(self.name, "no resident probe sums"));
            }
            let gp = st.buf("res_gp", k * mm * 16)?;
            let dp_t = st.buf("res_dp_t", mm * 8)?;
            let mut out =
                crate::backend::kernel::Gradients::<T>::zeros([0, 0], [0, 0], 1, Some((k, mm)));
            self.download_probe_sums(st, [gp, dp_t], &mut out)?;
            Ok((out.g_probe_hat, out.d_probe))
        })
    }

    fn sums_rect(&self, r: &Rect) -> Result<(Vec<Complex64>, Vec<f64>)> {
        self.with(|st| {
            let (res, [_, g_t, d_t]) = self.res(st)?;
            let h = res.shape[0];
            let [y0, x0, rh, rw] = res.local(r)?;
            let n = rh * rw;
            let mut g = vec![Complex64::default(); n];
            let mut d = vec![0f64; n];
            if n == 0 {
                return Ok((g, d));
            }
            let og = st.buf("res_rect_g", n * 16)?;
            let od = st.buf("res_rect_d", n * 8)?;
            launch::rect_get_d(&mut st.dev, blocks(n), og, g_t, h, y0, x0, rh, rw, 2)?;
            launch::rect_get_d(&mut st.dev, blocks(n), od, d_t, h, y0, x0, rh, rw, 1)?;
            st.down(bytemuck::cast_slice_mut(&mut g), og)?;
            st.down(bytemuck::cast_slice_mut(&mut d), od)?;
            Ok((g, d))
        })
    }

    fn add_sums_rect(&self, r: &Rect, g: &[Complex64], d: &[f64]) -> Result<()> {
        self.with(|st| {
            let (res, [_, g_t, d_t]) = self.res(st)?;
            let h = res.shape[0];
            let [y0, x0, rh, rw] = res.local(r)?;
            let n = rh * rw;
            if g.len() != n || d.len() != n {
                return Err(Error::new(
                    self.name,
                    format!("{} + {} sums for a {rh} x {rw} rectangle", g.len(), d.len()),
                ));
            }
            if n == 0 {
                return Ok(());
            }
            let ig = st.buf("res_rect_g", n * 16)?;
            let id = st.buf("res_rect_d", n * 8)?;
            st.up(ig, bytes_of(g))?;
            st.up(id, bytes_of(d))?;
            launch::rect_add_d(&mut st.dev, blocks(n), g_t, ig, h, y0, x0, rh, rw, 2)?;
            launch::rect_add_d(&mut st.dev, blocks(n), d_t, id, h, y0, x0, rh, rw, 1)
        })
    }

    fn max_d(&self, r: &Rect) -> Result<f64> {
        self.with(|st| {
            let (res, [_, _, d_t]) = self.res(st)?;
            let h = res.shape[0];
            let [y0, x0, rh, rw] = res.local(r)?;
            if rh * rw == 0 {
                return Ok(0.0);
            }
            let out = st.buf("res_colmax", rw * 8)?;
            launch::col_max_d(&mut st.dev, blocks(rw), out, d_t, h, y0, x0, rh, rw)?;
            let mut v = vec![0f64; rw];
            st.down(bytemuck::cast_slice_mut(&mut v), out)?;
            Ok(v.iter().fold(0.0f64, |a, b| a.max(*b)))
        })
    }

    fn update_object(&self, r: &Rect, alpha: f64, planes: f64, reg: f64) -> Result<()> {
        self.on_rect(r, |st, [obj_t, g_t, d_t], h, [y0, x0, rh, rw]| {
            launch::update_object(
                &mut st.dev,
                blocks(rh * rw),
                obj_t,
                g_t,
                d_t,
                h,
                y0,
                x0,
                rh,
                rw,
                alpha,
                planes,
                reg,
            )
        })
    }

    fn dm_accumulate(
        &self,
        probe_hat: &[Complex<T>],
        sel: Selection,
        init: bool,
        step: DmStep,
        reset: bool,
    ) -> Result<f64> {
        self.with(|st| {
            let (res, [obj_t, g_t, d_t]) = self.res(st)?;
            let [h, w] = res.shape;
            if reset {
                st.dev.zero(g_t, h * w * 16)?;
                st.dev.zero(d_t, h * w * 8)?;
            }
            let first = crate::backend::exit_range(&sel)?.start;
            if sel.is_empty() {
                return Ok(0.0);
            }
            let ph = self.res_probe_hat(st, probe_hat)?;
            let ([idx, win], wins) = self.res_selection(st, &sel)?;
            let loss = st.buf("loss", wins.len() * 8)?;
            let staged = [obj_t, ph, idx, win];
            self.dm_sums(st, staged, &wins, h, [g_t, d_t], loss, first, init, step)?;
            self.download_loss(st, loss, wins.len())
        })
    }

    fn dm_probe_sums(&self, sel: Selection) -> Result<(Vec<Complex64>, Vec<f64>)> {
        let (m, k) = (self.m, self.modes);
        let mm = m * m;
        self.with(|st| {
            let (res, [obj_t, _, _]) = self.res(st)?;
            let gp = st.buf("res_gp", k * mm * 16)?;
            let dp_t = st.buf("res_dp_t", mm * 8)?;
            st.dev.zero(gp, k * mm * 16)?;
            st.dev.zero(dp_t, mm * 8)?;
            st.res.as_mut().expect("checked").probe = false;
            let mut out =
                crate::backend::kernel::Gradients::<T>::zeros([0, 0], [0, 0], 1, Some((k, mm)));
            if !sel.is_empty() {
                let ([idx, win], _) = self.res_selection(st, &sel)?;
                self.dm_probe_batches(st, [obj_t, idx, win], res.shape[0], &sel, [gp, dp_t])?;
            }
            self.download_probe_sums(st, [gp, dp_t], &mut out)?;
            Ok((out.g_probe_hat, out.d_probe))
        })
    }

    fn ratio_update(&self, r: &Rect, reg: f64) -> Result<()> {
        self.on_rect(r, |st, [obj_t, g_t, d_t], h, [y0, x0, rh, rw]| {
            launch::ratio_object(
                &mut st.dev,
                blocks(rh * rw),
                obj_t,
                g_t,
                d_t,
                h,
                y0,
                x0,
                rh,
                rw,
                reg,
            )
        })
    }
}
