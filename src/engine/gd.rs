//! "gd": preconditioned full-batch (or index-defined mini-batch) gradient descent on the
//! object and probe, on one rank of a tiled job (docs/algorithm.md §4–§5).
//!
//! Each update uses only sums over a set of positions:
//! ```text
//! g_O = Σ_jk P*_jk b_jk (placed at n_j)      D_O = Σ_jk |P_jk|²
//! g_P = Σ_j S_j^H (O*_j b_jk)                 D_P = Σ_j |O_j|²
//! O ← O − α g_O / (D_O + δ max D_O)           P ← P − α g_P / (D_P + δ max D_P)
//! ```
//! with b_jk = F⁻¹(w Ψ_jk) the back-propagated residual and α = step / c, where c is the
//! noise model's Fisher curvature relative to the amplitude model (1 amplitude, 2 Poisson).
//!
//! **Gradient decomposition** (Wang et al., SC22). A rank owns a tile of the object and
//! the positions whose centres lie in it; it sums its positions' contributions into its
//! field (tile + halo). The halo parts belong to other ranks' tiles and are sent to their
//! owners; every owned pixel then holds the complete sum, so the update of the tile equals
//! the single-rank update up to floating-point reassociation. Per iteration:
//! 1. sum the positions whose windows reach outside the tile (halo positions);
//! 2. post non-blocking sends of the halo rectangles to their owners;
//! 3. sum the interior positions while the messages travel;
//! 4. receive the neighbours' contributions to the tile and add them;
//! 5. all-reduce the probe gradient, its preconditioner, the loss and max D_O;
//! 6. update the tile and the (replicated) probe;
//! 7. refresh the halo copies of the object from their owners.
//!
//! In the replicated mode (the data-parallel baseline of the Python codes) every rank
//! holds the whole object and the object-sized sums are all-reduced instead.

use crate::backend::cpu::{add_field, gradients, probe_spectrum, Gradients, Kernel};
use crate::comm::Comm;
use crate::config::{NoiseModel, ReconstructionConfig};
use crate::engine::snapshot::{find, Element, NamedArray, Snapshot};
use crate::error::{Error, Result};
use crate::physics::fft::Real;
use crate::physics::model::{fisher_scale, Field, PositionGeom};
use crate::tiling::{Rect, RankPlan};
use num_complex::Complex;
use std::time::Instant;

/// Relative regularisation δ of both preconditioners (fraction of their maximum).
pub const PRECONDITIONER_DELTA: f64 = 1e-3;
/// Message tag of halo gradients.
pub const TAG_GRADIENT: u32 = 11;
/// Message tag of object halo refreshes.
pub const TAG_OBJECT: u32 = 12;

/// The unknowns on one rank: object on its field and the (replicated) probe modes.
#[derive(Debug, Clone, PartialEq)]
pub struct State<T> {
    /// Object on the rank's field (tile + halo; the whole object on one rank).
    pub object: Field<Complex<T>>,
    /// Probe modes [K, M, M], real space, centred at [M/2, M/2].
    pub probe: Vec<Complex<T>>,
}

/// Checkpoint of the gd engine: `object` ([rows, cols] of the rank's field, tile + halo,
/// complex of T) and `probe` ([K·M·M], complex of T). The engine keeps nothing else between
/// iterations (no random numbers, no momentum), so these two arrays and the iteration
/// number determine the rest of the run.
impl<T: Real> Snapshot for State<T>
where
    Complex<T>: Element,
{
    fn engine(&self) -> &'static str {
        "gd"
    }
    fn save(&self) -> Vec<NamedArray> {
        vec![
            NamedArray::new("object", &self.object.shape, &self.object.data),
            NamedArray::new("probe", &[self.probe.len()], &self.probe),
        ]
    }
    fn restore(&mut self, arrays: &[NamedArray]) -> Result<()> {
        let object = find(arrays, "object")?.values(&self.object.shape)?;
        let probe = find(arrays, "probe")?.values(&[self.probe.len()])?;
        self.object.data = object;
        self.probe = probe;
        Ok(())
    }
}

/// Options of the gd engine (from `[reconstruction]`).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Noise model.
    pub noise: NoiseModel,
    /// Refine the probe.
    pub update_probe: bool,
    /// First iteration at which the probe is refined.
    pub probe_update_start: usize,
    /// Index-defined mini-batches per iteration (position j in batch j mod batches).
    pub batches: usize,
    /// Step in units of the Fisher-scoring step.
    pub step: f64,
}

impl From<&ReconstructionConfig> for Options {
    fn from(r: &ReconstructionConfig) -> Self {
        Options {
            noise: r.noise_model,
            update_probe: r.update_probe,
            probe_update_start: r.probe_update_start,
            batches: r.batches,
            step: r.step,
        }
    }
}

/// How the object-sized sums of the ranks are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decomposition {
    /// Tiles with halo exchange (the object and gradient are split).
    Tiled,
    /// Every rank holds the whole object; gradients are all-reduced (baseline).
    Replicated,
}

/// What one rank works on: geometry and intensities of its positions (halo positions first,
/// as in its [`RankPlan`]) and the kernel settings.
#[derive(Debug)]
pub struct Problem<T: Real> {
    /// FFT plans, modes, noise model, Poisson floor.
    pub kernel: Kernel<T>,
    /// This rank's positions, in plan order.
    pub positions: Vec<PositionGeom<T>>,
    /// The first `n_halo` of `positions` have windows reaching outside the tile.
    pub n_halo: usize,
    /// Intensities [n, M, M] in the transposed corner-centred layout, same order.
    pub intensities: Vec<f32>,
}

/// A rank's place in the job: its plan, communicator and decomposition.
pub struct Rank<'a> {
    /// Tile, field, transfers.
    pub plan: &'a RankPlan,
    /// Transport.
    pub comm: &'a mut dyn Comm,
    /// Tiled or replicated.
    pub mode: Decomposition,
    /// Post the halo sends before computing the interior positions (true, the method) or
    /// only after all positions (false: no overlap, to measure what the overlap hides).
    pub overlap: bool,
}

impl<'a> Rank<'a> {
    /// A rank with overlapped halo exchange.
    pub fn new(plan: &'a RankPlan, comm: &'a mut dyn Comm, mode: Decomposition) -> Self {
        Rank { plan, comm, mode, overlap: true }
    }
}

/// What one iteration reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct IterStats {
    /// Loss summed over all positions of all ranks, at the state before the update.
    pub loss: f64,
    /// Whether the probe was updated.
    pub probe_updated: bool,
    /// Seconds computing: gradient kernels and the update.
    pub compute_s: f64,
    /// Seconds of communication work: packing and posting halo messages, adding received
    /// halo gradients, writing refreshed halo object values.
    pub comm_s: f64,
    /// Seconds blocked: in receives, collectives and send completion (load imbalance and
    /// message time not hidden behind compute).
    pub wait_s: f64,
}

/// One iteration on one rank: for each mini-batch, sum this rank's contributions, complete
/// the sums across ranks, update the tile and the probe, refresh the halo.
///
/// Errors: a failed peer or transport (naming the peer rank).
pub fn iterate<T: Real>(p: &Problem<T>, s: &mut State<T>, iteration: usize, o: &Options, rank: &mut Rank) -> Result<IterStats> {
    let update_probe = o.update_probe && iteration >= o.probe_update_start;
    let mut st = IterStats { probe_updated: update_probe, ..Default::default() };
    for b in 0..o.batches {
        let g = sum_gradients(p, s, b, o.batches, update_probe, rank, &mut st)?;
        st.loss += g.loss;
        let mut t = Instant::now();
        // global max of the object preconditioner over the owned pixels
        let mut mx = [max_in(&g.d_obj, &rank.plan.tile)];
        rank.comm.allreduce_max(&mut mx)?;
        st.wait_s += lap(&mut t);
        apply(p, s, &g, o, &rank.plan.tile, mx[0]);
        st.compute_s += lap(&mut t);
        if rank.mode == Decomposition::Tiled {
            refresh_halo(s, rank, &mut st)?;
        }
        let mut t = Instant::now();
        rank.comm.wait_sends()?;
        st.wait_s += lap(&mut t);
    }
    Ok(st)
}

/// Steps 1–5 for mini-batch `b` of `batches`: this rank's sums completed across ranks. On
/// return `g_obj`/`d_obj` hold the complete sums on the rank's tile (halo pixels hold only
/// partial sums), and the probe sums and the loss are global.
pub fn sum_gradients<T: Real>(
    p: &Problem<T>,
    s: &State<T>,
    b: usize,
    batches: usize,
    want_probe: bool,
    rank: &mut Rank,
    st: &mut IterStats,
) -> Result<Gradients<T>> {
    let mm = p.kernel.fft.size().pow(2);
    // this batch's halo and interior positions, each keeping plan order; with one batch
    // they are the contiguous ranges [0, n_halo) and [n_halo, n), borrowed, not copied
    let owned: [(Vec<PositionGeom<T>>, Vec<f32>); 2];
    let [(hp, hm), (ip, im)]: [(&[PositionGeom<T>], &[f32]); 2] = if batches == 1 {
        let h = p.n_halo;
        [(&p.positions[..h], &p.intensities[..h * mm]), (&p.positions[h..], &p.intensities[h * mm..])]
    } else {
        let pick = |range: std::ops::Range<usize>| -> (Vec<PositionGeom<T>>, Vec<f32>) {
            let idx: Vec<usize> = range.filter(|&j| p.positions[j].index % batches == b).collect();
            (idx.iter().map(|&j| p.positions[j].clone()).collect(), idx.iter().flat_map(|&j| p.intensities[j * mm..(j + 1) * mm].iter().copied()).collect())
        };
        owned = [pick(0..p.n_halo), pick(p.n_halo..p.positions.len())];
        [(&owned[0].0, &owned[0].1), (&owned[1].0, &owned[1].1)]
    };
    let mut t = Instant::now();
    let ph = probe_spectrum(&p.kernel.fft, &s.probe);
    let mut g = gradients(&p.kernel, &s.object, &ph, hp, hm, want_probe);
    st.compute_s += lap(&mut t);
    if rank.overlap {
        post_halo_sends(&g, rank)?;
        st.comm_s += lap(&mut t);
    }
    let gi = gradients(&p.kernel, &s.object, &ph, ip, im, want_probe);
    add_gradients(&mut g, &gi);
    st.compute_s += lap(&mut t);
    if !rank.overlap {
        post_halo_sends(&g, rank)?;
        st.comm_s += lap(&mut t);
    }
    complete_sums(&mut g, rank, st)?;
    Ok(g)
}

/// Seconds since `t`, and restart `t`.
fn lap(t: &mut Instant) -> f64 {
    let now = Instant::now();
    let e = (now - *t).as_secs_f64();
    *t = now;
    e
}

/// Step 2: the halo rectangles of the summed gradient to their owners (tiled mode).
fn post_halo_sends<T: Real>(g: &Gradients<T>, rank: &mut Rank) -> Result<()> {
    if rank.mode == Decomposition::Tiled {
        for t in &rank.plan.sends {
            rank.comm.isend(t.peer, TAG_GRADIENT, pack_gradient(g, &t.rect))?;
        }
    }
    Ok(())
}

/// Steps 4–5: add the neighbours' halo contributions to the tile (tiled) or all-reduce the
/// object sums (replicated); all-reduce probe sums and loss. Blocked time goes to
/// `st.wait_s`, unpacking and adding to `st.comm_s`.
fn complete_sums<T: Real>(g: &mut Gradients<T>, rank: &mut Rank, st: &mut IterStats) -> Result<()> {
    let mut t = Instant::now();
    match rank.mode {
        Decomposition::Tiled => {
            for tr in &rank.plan.recvs {
                let bytes = rank.comm.recv(tr.peer, TAG_GRADIENT)?;
                st.wait_s += lap(&mut t);
                unpack_add_gradient(g, &tr.rect, &bytes).map_err(|e| Error::new(format!("rank {}", tr.peer), e.msg))?;
                st.comm_s += lap(&mut t);
            }
        }
        Decomposition::Replicated => {
            rank.comm.allreduce_sum(bytemuck::cast_slice_mut(&mut g.g_obj.data))?;
            rank.comm.allreduce_sum(&mut g.d_obj.data)?;
        }
    }
    // probe gradient, its preconditioner and the loss: one small all-reduce
    let mut v: Vec<f64> = bytemuck::cast_slice(&g.g_probe_hat).iter().copied().chain(g.d_probe.iter().copied()).collect();
    v.push(g.loss);
    rank.comm.allreduce_sum(&mut v)?;
    let np = 2 * g.g_probe_hat.len();
    bytemuck::cast_slice_mut(&mut g.g_probe_hat).copy_from_slice(&v[..np]);
    let nd = g.d_probe.len();
    g.d_probe.copy_from_slice(&v[np..np + nd]);
    g.loss = v[np + nd];
    st.wait_s += lap(&mut t);
    Ok(())
}

/// Step 7: owners send the object on `recvs` rectangles (their tile ∩ my field), each rank
/// overwrites its `sends` rectangles (my field ∩ their tile) with what arrives.
fn refresh_halo<T: Real>(s: &mut State<T>, rank: &mut Rank, st: &mut IterStats) -> Result<()> {
    let mut t = Instant::now();
    for tr in &rank.plan.recvs {
        let vals = extract(&s.object, &tr.rect);
        rank.comm.isend(tr.peer, TAG_OBJECT, bytemuck::cast_slice(&vals).to_vec())?;
    }
    st.comm_s += lap(&mut t);
    for tr in &rank.plan.sends {
        let bytes = rank.comm.recv(tr.peer, TAG_OBJECT)?;
        st.wait_s += lap(&mut t);
        let vals: Vec<Complex<T>> = bytemuck::try_cast_slice(&bytes)
            .map(|v: &[Complex<T>]| v.to_vec())
            .map_err(|e| Error::new(format!("rank {}", tr.peer), format!("bad object message: {e}")))?;
        if vals.len() != tr.rect.area() {
            return Err(Error::new(format!("rank {}", tr.peer), "object message of the wrong size"));
        }
        write_rect(&mut s.object, &tr.rect, &vals);
        st.comm_s += lap(&mut t);
    }
    Ok(())
}

/// Step 6: update the owned tile and the probe from complete sums; `dmax` is the global
/// maximum of D_O.
///
/// The step is formed in f64 from the f64 sums and added to the working-precision values.
pub fn apply<T: Real>(p: &Problem<T>, s: &mut State<T>, g: &Gradients<T>, o: &Options, tile: &Rect, dmax: f64) {
    let alpha = o.step / fisher_scale(o.noise);
    let reg = PRECONDITIONER_DELTA * dmax + f64::MIN_POSITIVE;
    let step = |x: &mut Complex<T>, g: Complex<f64>, d: f64| {
        let u = g * (alpha / (d + reg));
        *x = *x - Complex::new(T::of(u.re), T::of(u.im));
    };
    let f = &mut s.object;
    let (w, oy, ox) = (f.shape[1], f.origin[0], f.origin[1]);
    for y in tile.y0..tile.y1 {
        let r0 = (y - oy) as usize * w + (tile.x0 - ox) as usize;
        let n = (tile.x1 - tile.x0) as usize;
        for i in r0..r0 + n {
            step(&mut f.data[i], g.g_obj.data[i], g.d_obj.data[i]);
        }
    }
    if !g.g_probe_hat.is_empty() {
        // the probe gradient's inverse FFT in f64: g_P = F⁻¹ ĝ_P per mode
        let m = p.kernel.fft.size();
        let mm = m * m;
        let fft = crate::physics::fft::Fft2::<f64>::new(m);
        let dpmax = g.d_probe.iter().fold(0.0f64, |a, b| a.max(*b));
        let preg = PRECONDITIONER_DELTA * dpmax + f64::MIN_POSITIVE;
        let mut gp = vec![Complex::default(); mm];
        let mut sc = fft.scratch();
        for (mode, ghat) in g.g_probe_hat.chunks(mm).enumerate() {
            let mut w = ghat.to_vec();
            fft.inverse_t(&mut w, &mut gp, &mut sc);
            for ((x, g), d) in s.probe[mode * mm..(mode + 1) * mm].iter_mut().zip(&gp).zip(&g.d_probe) {
                let u = *g * (alpha / (*d + preg));
                *x = *x - Complex::new(T::of(u.re), T::of(u.im));
            }
        }
    }
}

fn add_gradients<T: Real>(g: &mut Gradients<T>, h: &Gradients<T>) {
    add_field(&mut g.g_obj, &h.g_obj);
    add_field(&mut g.d_obj, &h.d_obj);
    g.g_probe_hat.iter_mut().zip(&h.g_probe_hat).for_each(|(a, b)| *a += *b);
    g.d_probe.iter_mut().zip(&h.d_probe).for_each(|(a, b)| *a += *b);
    g.loss += h.loss;
}

fn max_in(f: &Field<f64>, r: &Rect) -> f64 {
    extract(f, r).iter().fold(0.0, |a: f64, b| a.max(*b))
}

/// Values of `f` on `r` (inside f), row-major.
pub fn extract<V: Copy>(f: &Field<V>, r: &Rect) -> Vec<V> {
    let mut out = Vec::with_capacity(r.area());
    for y in r.y0..r.y1 {
        let i = (y - f.origin[0]) as usize * f.shape[1] + (r.x0 - f.origin[1]) as usize;
        out.extend_from_slice(&f.data[i..i + (r.x1 - r.x0) as usize]);
    }
    out
}

/// Overwrite `f` on `r` with `vals` (row-major).
pub fn write_rect<V: Copy>(f: &mut Field<V>, r: &Rect, vals: &[V]) {
    let n = (r.x1 - r.x0) as usize;
    for (k, y) in (r.y0..r.y1).enumerate() {
        let i = (y - f.origin[0]) as usize * f.shape[1] + (r.x0 - f.origin[1]) as usize;
        f.data[i..i + n].copy_from_slice(&vals[k * n..(k + 1) * n]);
    }
}

/// Halo message: g_O (complex f64) then D_O (f64) on `r`, raw bytes.
fn pack_gradient<T: Real>(g: &Gradients<T>, r: &Rect) -> Vec<u8> {
    let mut b = bytemuck::cast_slice(&extract(&g.g_obj, r)).to_vec();
    b.extend_from_slice(bytemuck::cast_slice(&extract(&g.d_obj, r)));
    b
}

fn unpack_add_gradient<T: Real>(g: &mut Gradients<T>, r: &Rect, bytes: &[u8]) -> Result<()> {
    let n = r.area();
    if bytes.len() != n * 24 {
        return Err(Error::new("halo", format!("gradient message of {} bytes for a {}-pixel rectangle", bytes.len(), n)));
    }
    // copy into aligned buffers (a Vec<u8> is only byte-aligned)
    let gv: Vec<Complex<f64>> = bytemuck::pod_collect_to_vec(&bytes[..n * 16]);
    let dv: Vec<f64> = bytemuck::pod_collect_to_vec(&bytes[n * 16..]);
    add_field(&mut g.g_obj, &Field { origin: r.origin(), shape: r.shape(), data: gv });
    add_field(&mut g.d_obj, &Field { origin: r.origin(), shape: r.shape(), data: dv });
    Ok(())
}
