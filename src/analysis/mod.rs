//! Analysis of results: comparison with a ground truth, Fourier ring correlation of two
//! results.

pub mod compare;
pub mod frc;
