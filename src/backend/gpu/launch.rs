//! A typed launch per kernel of kernels/ptycho.cu: one function each, with the kernel's
//! parameters in its order (device pointers [`DPtr`], `int`s as `usize`, `real`s as `f64`: rounded to f32
//! unless the device's kernels are f64),
//! so that a call with a missing or misplaced kind of argument does not compile. The list
//! below is the one place the kernels are named; [`KERNELS`] (what the backend loads and
//! the NVRTC test checks) comes from it.

use super::device::{Args, DPtr, Device};
use crate::error::Result;

/// Rust type of a kernel parameter kind: `p` pointer, `i` int, `r` real (compat.h: f32, or
/// f64 in kernels compiled with `PTY_F64`), `d` double.
macro_rules! param_type {
    (p) => {
        DPtr
    };
    (i) => {
        usize
    };
    (r) => {
        f64
    };
    (d) => {
        f64
    };
}

/// Declares one launch function per kernel and the [`KERNELS`] list.
macro_rules! kernels {
    ($( $(#[doc = $doc:literal])* $name:ident ( $($arg:ident : $kind:ident),* $(,)? ); )*) => {
        $(
            $(#[doc = $doc])*
            /// Launched on `blocks` × [`super::BLOCK`] threads.
            #[allow(clippy::too_many_arguments)]
            pub(super) fn $name<D: Device + ?Sized>(
                dev: &mut D,
                blocks: usize,
                $($arg: param_type!($kind)),*
            ) -> Result<()> {
                dev.launch(stringify!($name), blocks, Args::new(dev.wide())$(.$kind($arg))*)
            }
        )*

        /// The kernels of kernels/ptycho.cu that the backend loads.
        pub const KERNELS: &[&str] = &[$(stringify!($name)),*];

        /// Each kernel's parameter kinds as declared here, one letter per parameter
        /// (`p` pointer, `i` int, `r` real, `d` double), checked against kernels/ptycho.cu by a test.
        #[cfg(test)]
        const SIGNATURES: &[(&str, &str)] = &[$((stringify!($name), concat!($(stringify!($kind)),*))),*];
    };
}

kernels! {
    /// `shift_probe` of kernels/ptycho.cu.
    shift_probe(p: p, ph: p, ramp_y: p, ramp_x: p, idx: p, m: i, k: i, nb: i, sc: r, deriv: i);
    /// `exit_wave` of kernels/ptycho.cu.
    exit_wave(psi: p, p: p, obj_t: p, win: p, h: i, m: i, k: i, nb: i);
    /// `residual` of kernels/ptycho.cu.
    residual(psi: p, loss: p, meas: p, g: p, idx: p, m: i, k: i, noise: i, eps: r, isc: r, scale: r);
    /// `gather_sums` of kernels/ptycho.cu.
    gather_sums(g_t: p, d_t: p, psi: p, p: p, win: p, h: i, y0: i, x0: i, gh: i, gw: i, m: i, k: i, nb: i);
    /// `probe_grad` of kernels/ptycho.cu.
    probe_grad(gp: p, psi: p, ramp_y: p, ramp_x: p, idx: p, m: i, k: i, nb: i, sc: r);
    /// `position_grad` of kernels/ptycho.cu.
    position_grad(out: p, dp: p, t: p, m: i, k: i, axis: i);
    /// `position_curv` of kernels/ptycho.cu.
    position_curv(out: p, p: p, obj_t: p, win: p, h: i, m: i, k: i);
    /// `probe_density` of kernels/ptycho.cu.
    probe_density(dp_t: p, obj_t: p, win: p, h: i, m: i, nb: i);
    /// `propagate` of kernels/ptycho.cu.
    propagate(psi: p, h: p, m: i, k: i, nb: i, conj: i);
    /// `intensities` of kernels/ptycho.cu.
    intensities(out: p, psi: p, m: i, k: i, nb: i, isc: r);
    /// `transpose_c` of kernels/ptycho.cu.
    transpose_c(out: p, input: p, rows: i, cols: i);
    /// `transpose_d` of kernels/ptycho.cu.
    transpose_d(out: p, input: p, rows: i, cols: i, comps: i);
    /// `transpose_planes` of kernels/ptycho.cu.
    transpose_planes(out: p, input: p, m: i, planes: i);
    /// `dm_prepare` of kernels/ptycho.cu.
    dm_prepare(x: p, ev: p, p: p, obj_t: p, win: p, h: i, m: i, k: i, nb: i, init: i);
    /// `fourier_step` of kernels/ptycho.cu.
    fourier_step(psi: p, far: p, loss: p, meas: p, g: p, idx: p, m: i, k: i, noise: i, eps: r, isc: r, gamma: r, er: i, fisher: r);
    /// `dm_update` of kernels/ptycho.cu.
    dm_update(bw: p, ev: p, p: p, obj_t: p, win: p, h: i, m: i, k: i, nb: i, er: i, beta: r);
    /// `conj_object` of kernels/ptycho.cu.
    conj_object(psi: p, obj_t: p, win: p, h: i, m: i, k: i, nb: i);
    /// `pie_delta` of kernels/ptycho.cu.
    pie_delta(psi: p, den: p, out: p, p: p, obj_t: p, win: p, b: i, h: i, m: i, k: i);
    /// `pie_probe_delta` of kernels/ptycho.cu.
    pie_probe_delta(tw: p, dpsi: p, mx: p, obj_t: p, win: p, b: i, h: i, m: i, k: i, a: r, s: r);
    /// `pie_probe_add` of kernels/ptycho.cu.
    pie_probe_add(ph: p, tw: p, ramp_y: p, ramp_x: p, idx: p, b: i, m: i, k: i, sc: r);
    /// `pie_object` of kernels/ptycho.cu.
    pie_object(obj_t: p, illum_t: p, dpsi: p, den: p, mx: p, p: p, win: p, b: i, h: i, m: i, k: i, a: r, s: r);
    /// `rect_get_c` of kernels/ptycho.cu.
    rect_get_c(out: p, obj_t: p, h: i, y0: i, x0: i, rh: i, rw: i);
    /// `rect_set_c` of kernels/ptycho.cu.
    rect_set_c(obj_t: p, input: p, h: i, y0: i, x0: i, rh: i, rw: i);
    /// `rect_get_d` of kernels/ptycho.cu.
    rect_get_d(out: p, input_t: p, h: i, y0: i, x0: i, rh: i, rw: i, comps: i);
    /// `rect_add_d` of kernels/ptycho.cu.
    rect_add_d(sums_t: p, input: p, h: i, y0: i, x0: i, rh: i, rw: i, comps: i);
    /// `col_max_d` of kernels/ptycho.cu.
    col_max_d(out: p, d_t: p, h: i, y0: i, x0: i, rh: i, rw: i);
    /// `update_object` of kernels/ptycho.cu.
    update_object(obj_t: p, g_t: p, d_t: p, h: i, y0: i, x0: i, rh: i, rw: i, alpha: d, planes: d, reg: d);
    /// `ratio_object` of kernels/ptycho.cu.
    ratio_object(obj_t: p, g_t: p, d_t: p, h: i, y0: i, x0: i, rh: i, rw: i, reg: d);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds of a kernel's parameters in kernels/ptycho.cu (`PTY_KERNEL void name(…)`).
    fn kinds_in_source(name: &str) -> Option<String> {
        let src = super::super::PTYCHO_CU;
        let at = src.find(&format!("PTY_KERNEL void {name}("))?;
        let open = at + src[at..].find('(')? + 1;
        let close = open + src[open..].find(')')?;
        Some(
            src[open..close]
                .split(',')
                .map(|p| {
                    let p = p.trim();
                    if p.contains('*') {
                        'p'
                    } else if p.starts_with("real") {
                        'r'
                    } else if p.starts_with("double") {
                        'd'
                    } else if p.starts_with("int") {
                        'i'
                    } else {
                        '?'
                    }
                })
                .collect(),
        )
    }

    #[test]
    fn typed_launches_match_the_kernel_source() {
        assert_eq!(SIGNATURES.len(), KERNELS.len());
        for (name, kinds) in SIGNATURES {
            assert_eq!(
                kinds_in_source(name).as_deref(),
                Some(*kinds),
                "kernel {name}: parameters in kernels/ptycho.cu vs src/backend/gpu/launch.rs"
            );
        }
        let declared = super::super::PTYCHO_CU.matches("PTY_KERNEL void ").count();
        assert_eq!(
            declared,
            KERNELS.len(),
            "every kernel of the source has a launch"
        );
    }
}
