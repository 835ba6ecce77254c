//! Where the arithmetic runs. The CPU backend (rustfft + rayon) is the reference; GPU
//! backends implement the same kernel contract (see [`cpu::gradients`]).

pub mod cpu;
