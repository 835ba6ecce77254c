//! gd's iteration on a backend that keeps the object field and its sums in its own memory
//! ([`Resident`]: GPUs; docs/gpu.md "Resident state"). The steps are those of
//! [`super::exchange::halo_first_sums`] and [`super::exchange::refresh_halo`], with the
//! rectangles read from and written to the backend instead of host fields, so that per
//! iteration only the halo rectangles, the probe spectrum and sums and a few scalars cross
//! between host and device. The host `State::object` is then behind the backend's copy
//! until [`sync`] (checkpoints, results, engine switches): [`super::gd::GdState::resident`]
//! says so.

use super::exchange::{
    allreduce_probe_sums, gradient_message, lap, receive_halo_rects, send_owned_rects,
    split_gradient_message, TAG_GRADIENT, TAG_OBJECT,
};
use super::gd::GdState;
use super::{EngineState, IterStats, Problem, Rank, State};
use crate::backend::kernel::{probe_spectrum, Gradients};
use crate::backend::resident::Resident;
use crate::backend::Selection;
use crate::error::{Error, Result};
use crate::physics::fft::Real;
use num_complex::Complex;
use std::time::Instant;

/// Copy the backend's resident object into `s.object` if it is newer (gd ran on a
/// resident backend since the last copy); a no-op otherwise (always on the CPU). Call it
/// before reading `s.object` outside gd's iteration.
///
/// Errors: a device failure.
pub fn sync<T: Real>(p: &Problem<T>, s: &mut State<T>, gs: &mut GdState) -> Result<()> {
    sync_flag(p, s, &mut gs.resident)
}

/// [`sync`] for every engine that keeps the object in the backend (gd, dm).
///
/// Errors: a device failure.
pub fn sync_all<T: Real>(p: &Problem<T>, s: &mut State<T>, es: &mut EngineState<T>) -> Result<()> {
    sync_flag(p, s, &mut es.gd.resident)?;
    sync_flag(p, s, &mut es.dm.resident)
}

/// Copy the resident object into `s.object` if `newer` says the backend's copy is newer,
/// and clear it.
pub(super) fn sync_flag<T: Real>(p: &Problem<T>, s: &mut State<T>, newer: &mut bool) -> Result<()> {
    if *newer {
        if let Some(r) = p.compute.resident() {
            r.store_object(&mut s.object)?;
        }
        *newer = false;
    }
    Ok(())
}

/// Steps 1–5 of gd's iteration on the resident object (the full batch of this rank's
/// positions, tiled): the halo positions' sums, their rectangles sent to the owners, the
/// interior positions' sums, the neighbours' rectangles added, the probe sums and the loss
/// all-reduced. The object sums stay in the backend, complete on the tile; the returned
/// [`Gradients`] carry only the probe sums, the loss and, with `want_positions`, this
/// rank's positions' terms for position correction (halo positions first, as
/// [`super::gd::sum_gradients`]; its object fields are empty).
///
/// Errors: a failed peer or transport (naming the peer rank), a backend failure.
pub fn sum_gradients<T: Real>(
    p: &Problem<T>,
    r: &dyn Resident<T>,
    probe: &[Complex<T>],
    want_probe: bool,
    want_positions: bool,
    rank: &mut Rank,
    st: &mut IterStats,
) -> Result<Gradients<T>> {
    let ph = probe_spectrum(&p.kernel.fft, probe);
    let mut g_pos = Vec::new();
    let loss = halo_first(p, r, rank, st, |sel, reset| {
        if !want_positions {
            return r.accumulate(&ph, sel, want_probe, reset);
        }
        let (loss, mut pos) = r.accumulate_with_positions(&ph, sel, want_probe, reset)?;
        g_pos.append(&mut pos);
        Ok(loss)
    })?;
    let mut t = Instant::now();
    let n = p.positions.len();
    let probe_dims = want_probe.then_some((p.kernel.modes, probe.len() / p.kernel.modes));
    let mut g = Gradients::zeros([0, 0], [0, 0], 1, probe_dims);
    if want_probe && n > 0 {
        (g.g_probe_hat, g.d_probe) = r.probe_sums()?;
    }
    g.loss = loss;
    g.g_pos = g_pos;
    st.comm_s += lap(&mut t);
    allreduce_probe_sums(&mut g, rank.comm)?;
    st.wait_s += lap(&mut t);
    Ok(g)
}

/// Steps 1–4 on the resident sums: `acc` (the backend's pass, its sums added to the
/// resident ones, set to zero first when its flag says so) over the halo positions, their
/// rectangles posted to the owners, `acc` over the interior positions, the neighbours'
/// rectangles added as they arrive. Returns this rank's Σ loss (not yet all-reduced).
///
/// Errors: a failed peer or transport (naming the peer rank), a backend failure.
pub fn halo_first<T: Real>(
    p: &Problem<T>,
    r: &dyn Resident<T>,
    rank: &mut Rank,
    st: &mut IterStats,
    mut acc: impl FnMut(Selection, bool) -> Result<f64>,
) -> Result<f64> {
    let mut t = Instant::now();
    let n = p.positions.len();
    let mut loss = acc(Selection::Range(0..p.n_halo), true)?;
    st.compute_s += lap(&mut t);
    if rank.overlap {
        post_halo_sums(r, rank)?;
        st.comm_s += lap(&mut t);
    }
    loss += acc(Selection::Range(p.n_halo..n), false)?;
    st.compute_s += lap(&mut t);
    if !rank.overlap {
        post_halo_sums(r, rank)?;
        st.comm_s += lap(&mut t);
    }
    for tr in &rank.plan.recvs {
        let bytes = rank.comm.recv(tr.peer, TAG_GRADIENT)?;
        st.wait_s += lap(&mut t);
        let (g, d) = split_gradient_message(&bytes, tr.rect.area())
            .map_err(|e| Error::new(format!("rank {}", tr.peer), e.msg))?;
        r.add_sums_rect(&tr.rect, &g, &d)?;
        st.comm_s += lap(&mut t);
    }
    Ok(loss)
}

/// Step 2: post the halo rectangles of the resident sums to their owners (g_O then D_O,
/// the message layout of [`super::exchange::post_halo_sums`]).
fn post_halo_sums<T: Real>(r: &dyn Resident<T>, rank: &mut Rank) -> Result<()> {
    for t in &rank.plan.sends {
        let (g, d) = r.sums_rect(&t.rect)?;
        rank.comm
            .isend(t.peer, TAG_GRADIENT, gradient_message(&g, &d))?;
    }
    Ok(())
}

/// The global maximum of the resident D_O over every rank's tile.
///
/// Errors: a failed peer or transport; a backend failure.
pub fn global_max_d<T: Real>(
    r: &dyn Resident<T>,
    rank: &mut Rank,
    st: &mut IterStats,
) -> Result<f64> {
    let mut mx = [r.max_d(&rank.plan.tile)?];
    let mut t = Instant::now();
    rank.comm.allreduce_max(&mut mx)?;
    st.wait_s += lap(&mut t);
    Ok(mx[0])
}

/// Step 7 on the resident object ([`super::exchange::refresh_halo`]): send the tile's
/// rectangles that are neighbours' halos, overwrite the halo rectangles with what arrives.
///
/// Errors: a failed peer or transport; a message of the wrong size; a backend failure.
pub fn refresh_halo<T: Real>(
    r: &dyn Resident<T>,
    rank: &mut Rank,
    st: &mut IterStats,
) -> Result<()> {
    send_owned_rects(rank, TAG_OBJECT, st, |rect| r.object_rect(rect))?;
    receive_halo_rects(rank, TAG_OBJECT, st, 1, |rect, vals: &[Complex<T>]| {
        r.write_object_rect(rect, vals)
    })
}
