//! Analysis of results: comparison with a ground truth.

pub mod compare;
