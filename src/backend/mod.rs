//! Where the arithmetic runs. The CPU backend (rustfft + rayon) is the reference; GPU
//! backends implement the same kernel contract (see [`cpu::gradients`],
//! [`cpu::difference_map`], [`cpu::loss`] and the sequential [`pie::sweep`]).

pub mod cpu;
pub mod pie;
pub mod projection;
