//! The gradient decomposition's communication, shared by all engines (docs/algorithm.md
//! §5): sums over positions formed halo positions first, halo rectangles sent to their
//! owners while the interior positions are summed, probe sums all-reduced, halo copies of
//! tile-owned fields refreshed from their owners. Every message carries f64 sums, so the
//! complete sum on a pixel does not depend on how positions are grouped into tiles.

use super::{Decomposition, IterStats, Problem, Rank};
use crate::backend::cpu::add_field;
use crate::backend::kernel::Gradients;
use crate::comm::Comm;
use crate::error::{Error, Result};
use crate::physics::fft::{Fft2, Real};
use crate::physics::model::Field;
use crate::tiling::Rect;
use num_complex::{Complex, Complex64};
use std::ops::Range;
use std::time::Instant;

/// Message tag of halo sums (g_O, D_O).
pub const TAG_GRADIENT: u32 = 11;
/// Message tag of object halo refreshes.
pub const TAG_OBJECT: u32 = 12;
/// Message tag of halo refreshes of the ML-CG search direction.
pub const TAG_DIRECTION: u32 = 13;

/// Steps 1–5 of an iteration: `sum(range)` sums the contributions of this rank's positions
/// `range` (indices into `p.positions`); it is called for the halo positions `[0, n_halo)`,
/// whose object-field rectangles are then sent to their owners, and for the interior
/// positions while the messages travel (with `rank.overlap` off, the sends are posted only
/// after all positions, to measure what the overlap hides). Time is booked in `st`: sums in
/// `compute_s`, packing, posting and adding messages in `comm_s`, blocked receives and
/// collectives in `wait_s`. On return `g_obj`/`d_obj` hold the complete sums on
/// the rank's tile (halo pixels hold partial sums), and the probe sums and loss are global.
///
/// Errors: a failed peer or transport (naming the peer rank), a backend failure from `sum`.
///
/// `local` adds terms that need no message to the completed tile sums before the
/// all-reduce (the axial regulariser of multislice objects, [`super::axial`]).
pub fn halo_first_sums<T: Real>(
    p: &Problem<T>,
    rank: &mut Rank,
    st: &mut IterStats,
    mut sum: impl FnMut(Range<usize>) -> Result<Gradients<T>>,
    local: impl FnOnce(&mut Gradients<T>),
) -> Result<Gradients<T>> {
    let mut t = Instant::now();
    let mut g = sum(0..p.n_halo)?;
    st.compute_s += lap(&mut t);
    if rank.overlap {
        post_halo_sums(&g, rank)?;
        st.comm_s += lap(&mut t);
    }
    let gi = sum(p.n_halo..p.positions.len())?;
    add_gradients(&mut g, &gi);
    st.compute_s += lap(&mut t);
    if !rank.overlap {
        post_halo_sums(&g, rank)?;
        st.comm_s += lap(&mut t);
    }
    complete_object_sums(&mut g, rank, st)?;
    let mut t = Instant::now();
    local(&mut g);
    st.compute_s += lap(&mut t);
    allreduce_probe_sums(&mut g, rank.comm)?;
    st.wait_s += lap(&mut t);
    Ok(g)
}

/// Seconds since `t`, and restart `t`.
pub fn lap(t: &mut Instant) -> f64 {
    let now = Instant::now();
    let e = (now - *t).as_secs_f64();
    *t = now;
    e
}

/// The end of an iteration: wait until this rank's halo sends have completed (their
/// buffers are then free), the time blocked added to `st.wait_s`.
///
/// Errors: a failed peer or transport (naming the peer rank), or a send not completed
/// within the communicator's timeout.
pub fn finish_sends(rank: &mut Rank, st: &mut IterStats) -> Result<()> {
    let mut t = Instant::now();
    rank.comm.wait_sends()?;
    st.wait_s += lap(&mut t);
    Ok(())
}

/// Step 4: add the neighbours' halo contributions to the tile (tiled; the sends were
/// posted by the caller with [`post_halo_sums`] or [`halo_first_sums`]) or all-reduce the
/// object sums (replicated). Blocked time goes to `st.wait_s`, unpacking and adding to
/// `st.comm_s`.
pub fn complete_object_sums<T: Real>(
    g: &mut Gradients<T>,
    rank: &mut Rank,
    st: &mut IterStats,
) -> Result<()> {
    let mut t = Instant::now();
    match rank.mode {
        Decomposition::Tiled => {
            for tr in &rank.plan.recvs {
                let bytes = rank.comm.recv(tr.peer, TAG_GRADIENT)?;
                st.wait_s += lap(&mut t);
                unpack_add_gradient(g, &tr.rect, &bytes)
                    .map_err(|e| Error::new(format!("rank {}", tr.peer), e.msg))?;
                st.comm_s += lap(&mut t);
            }
        }
        Decomposition::Replicated => {
            rank.comm
                .allreduce_sum(bytemuck::cast_slice_mut(&mut g.g_obj.data))?;
            rank.comm.allreduce_sum(&mut g.d_obj.data)?;
            st.wait_s += lap(&mut t);
        }
    }
    Ok(())
}

/// Step 2: post the non-blocking sends of this rank's halo sums to their owners (tiled
/// mode; nothing replicated).
pub fn post_halo_sums<T: Real>(g: &Gradients<T>, rank: &mut Rank) -> Result<()> {
    if rank.mode == Decomposition::Tiled {
        for t in &rank.plan.sends {
            rank.comm
                .isend(t.peer, TAG_GRADIENT, pack_gradient(g, &t.rect))?;
        }
    }
    Ok(())
}

/// Step 5: all-reduce (fixed tree order, [`Comm::allreduce_sum`]) the probe sums and the loss
/// in one message.
pub fn allreduce_probe_sums<T: Real>(g: &mut Gradients<T>, comm: &mut dyn Comm) -> Result<()> {
    let mut v: Vec<f64> = bytemuck::cast_slice(&g.g_probe_hat)
        .iter()
        .copied()
        .chain(g.d_probe.iter().copied())
        .collect();
    v.push(g.loss);
    comm.allreduce_sum(&mut v)?;
    let np = 2 * g.g_probe_hat.len();
    bytemuck::cast_slice_mut(&mut g.g_probe_hat).copy_from_slice(&v[..np]);
    let nd = g.d_probe.len();
    g.d_probe.copy_from_slice(&v[np..np + nd]);
    g.loss = v[np + nd];
    Ok(())
}

/// Step 7: owners send `f` on their `recvs` rectangles (their tile ∩ my field), each rank
/// overwrites its `sends` rectangles (my field ∩ their tile) with what arrives. Used for the
/// object (tag [`TAG_OBJECT`]) and the ML-CG direction ([`TAG_DIRECTION`]); nothing to do
/// in the replicated mode, where every rank's tile is the whole object. Sending and copying
/// go to `st.comm_s`, blocked receives to `st.wait_s`.
pub fn refresh_halo<V: bytemuck::Pod>(
    f: &mut Field<V>,
    rank: &mut Rank,
    tag: u32,
    st: &mut IterStats,
) -> Result<()> {
    if rank.mode == Decomposition::Replicated {
        return Ok(());
    }
    send_owned_rects(rank, tag, st, |r| Ok(extract(f, r)))?;
    let planes = f.planes();
    receive_halo_rects(rank, tag, st, planes, |r, vals: &[V]| {
        write_rect(f, r, vals);
        Ok(())
    })
}

/// The first half of a halo refresh: post this rank's `recvs` rectangles (its tile ∩ a
/// neighbour's field), read by `read`, to their neighbours (time to `st.comm_s`).
///
/// Errors: a failed transport; an error of `read`.
pub fn send_owned_rects<V: bytemuck::Pod>(
    rank: &mut Rank,
    tag: u32,
    st: &mut IterStats,
    mut read: impl FnMut(&Rect) -> Result<Vec<V>>,
) -> Result<()> {
    let mut t = Instant::now();
    for tr in &rank.plan.recvs {
        let vals = read(&tr.rect)?;
        rank.comm
            .isend(tr.peer, tag, bytemuck::cast_slice(&vals).to_vec())?;
    }
    st.comm_s += lap(&mut t);
    Ok(())
}

/// The second half: receive each `sends` rectangle (my field ∩ a neighbour's tile) from
/// its owner, `planes` planes of `V`, and hand it to `write` (blocked time to `st.wait_s`,
/// copying to `st.comm_s`).
///
/// Errors: a failed peer or transport; a message of the wrong size (naming the peer); an
/// error of `write`.
pub fn receive_halo_rects<V: bytemuck::Pod>(
    rank: &mut Rank,
    tag: u32,
    st: &mut IterStats,
    planes: usize,
    mut write: impl FnMut(&Rect, &[V]) -> Result<()>,
) -> Result<()> {
    let mut t = Instant::now();
    for tr in &rank.plan.sends {
        let bytes = rank.comm.recv(tr.peer, tag)?;
        st.wait_s += lap(&mut t);
        if bytes.len() != tr.rect.area() * planes * std::mem::size_of::<V>() {
            return Err(Error::new(
                format!("rank {}", tr.peer),
                "halo message of the wrong size",
            ));
        }
        // copy into an aligned buffer (a Vec<u8> is only byte-aligned)
        let vals: Vec<V> = bytemuck::pod_collect_to_vec(&bytes);
        write(&tr.rect, &vals)?;
        st.comm_s += lap(&mut t);
    }
    Ok(())
}

/// Local indices (into `f.data`) of the pixels of `tile` (inside `f`), row by row, plane
/// (slice) by plane.
pub fn tile_indices<V>(f: &Field<V>, tile: &Rect) -> impl Iterator<Item = usize> {
    let (w, oy, ox, pl) = (f.shape[1], f.origin[0], f.origin[1], f.plane_len());
    let n = (tile.x1 - tile.x0) as usize;
    let x0 = (tile.x0 - ox) as usize;
    let (y0, y1) = (tile.y0, tile.y1);
    (0..f.planes()).flat_map(move |s| {
        (y0..y1).flat_map(move |y| {
            let r0 = s * pl + (y - oy) as usize * w + x0;
            r0..r0 + n
        })
    })
}

/// The global maximum of `f` over every rank's tile (the all-reduce goes to `st.wait_s`).
pub fn global_max_in(f: &Field<f64>, rank: &mut Rank, st: &mut IterStats) -> Result<f64> {
    let mut mx = [extract(f, &rank.plan.tile)
        .iter()
        .fold(0.0f64, |a, b| a.max(*b))];
    let mut t = Instant::now();
    rank.comm.allreduce_max(&mut mx)?;
    st.wait_s += lap(&mut t);
    Ok(mx[0])
}

/// Real-space probe sums from their Fourier form: F⁻¹ ĝ per mode ([K][kx][ky] → [K][y][x]),
/// in f64.
pub fn probe_from_hat(m: usize, ghat: &[Complex64]) -> Vec<Complex64> {
    let mm = m * m;
    let fft = Fft2::<f64>::new(m);
    let mut out = vec![Complex64::default(); ghat.len()];
    let mut sc = fft.scratch();
    for (h, o) in ghat.chunks(mm).zip(out.chunks_mut(mm)) {
        let mut w = h.to_vec();
        fft.inverse_t(&mut w, o, &mut sc);
    }
    out
}

/// Add an f64 step to a working-precision value.
#[inline]
pub fn add_step<T: Real>(x: &mut Complex<T>, u: Complex64) {
    *x = Complex::new(T::of(x.re.f64() + u.re), T::of(x.im.f64() + u.im));
}

/// `g += h` for all sums.
pub fn add_gradients<T: Real>(g: &mut Gradients<T>, h: &Gradients<T>) {
    add_field(&mut g.g_obj, &h.g_obj);
    add_field(&mut g.d_obj, &h.d_obj);
    g.g_probe_hat
        .iter_mut()
        .zip(&h.g_probe_hat)
        .for_each(|(a, b)| *a += *b);
    g.d_probe
        .iter_mut()
        .zip(&h.d_probe)
        .for_each(|(a, b)| *a += *b);
    g.loss += h.loss;
    g.g_pos.extend_from_slice(&h.g_pos);
}

/// Values of `f` on `r` (inside f), [planes][rows][columns] row-major: every slice of a
/// multislice field, so one halo message carries all slices.
pub fn extract<V: Copy>(f: &Field<V>, r: &Rect) -> Vec<V> {
    let mut out = Vec::with_capacity(r.area() * f.planes());
    for s in 0..f.planes() {
        for y in r.y0..r.y1 {
            let i = s * f.plane_len()
                + (y - f.origin[0]) as usize * f.shape[1]
                + (r.x0 - f.origin[1]) as usize;
            out.extend_from_slice(&f.data[i..i + (r.x1 - r.x0) as usize]);
        }
    }
    out
}

/// Overwrite `f` on `r` with `vals` ([planes][rows][columns] row-major, as [`extract`]).
pub fn write_rect<V: Copy>(f: &mut Field<V>, r: &Rect, vals: &[V]) {
    let n = (r.x1 - r.x0) as usize;
    let rows = (r.y1 - r.y0) as usize;
    let pl = f.plane_len();
    for s in 0..f.planes() {
        for (k, y) in (r.y0..r.y1).enumerate() {
            let i =
                s * pl + (y - f.origin[0]) as usize * f.shape[1] + (r.x0 - f.origin[1]) as usize;
            f.data[i..i + n].copy_from_slice(&vals[(s * rows + k) * n..(s * rows + k + 1) * n]);
        }
    }
}

/// Halo message: g_O (complex f64) then D_O (f64) on `r`, all slices ([`extract`]), raw bytes.
fn pack_gradient<T: Real>(g: &Gradients<T>, r: &Rect) -> Vec<u8> {
    gradient_message(&extract(&g.g_obj, r), &extract(&g.d_obj, r))
}

/// A halo message of sums on n pixels: g_O (n complex f64) then D_O (n f64), raw bytes.
pub fn gradient_message(g: &[Complex64], d: &[f64]) -> Vec<u8> {
    let mut b = bytemuck::cast_slice(g).to_vec();
    b.extend_from_slice(bytemuck::cast_slice(d));
    b
}

/// The two parts of a [`gradient_message`] of `n` pixels, copied into aligned buffers.
///
/// Errors (naming "halo"): a message of another length than 24 n bytes.
pub fn split_gradient_message(bytes: &[u8], n: usize) -> Result<(Vec<Complex64>, Vec<f64>)> {
    if bytes.len() != n * 24 {
        return Err(Error::new(
            "halo",
            format!(
                "gradient message of {} bytes for a {}-pixel rectangle",
                bytes.len(),
                n
            ),
        ));
    }
    // copy into aligned buffers (a Vec<u8> is only byte-aligned)
    Ok((
        bytemuck::pod_collect_to_vec(&bytes[..n * 16]),
        bytemuck::pod_collect_to_vec(&bytes[n * 16..]),
    ))
}

fn unpack_add_gradient<T: Real>(g: &mut Gradients<T>, r: &Rect, bytes: &[u8]) -> Result<()> {
    let (gv, dv) = split_gradient_message(bytes, r.area() * g.g_obj.planes())?;
    add_field(
        &mut g.g_obj,
        &Field {
            origin: r.origin(),
            shape: r.shape(),
            data: gv,
        },
    );
    add_field(
        &mut g.d_obj,
        &Field {
            origin: r.origin(),
            shape: r.shape(),
            data: dv,
        },
    );
    Ok(())
}
