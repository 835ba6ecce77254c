//! Analysis of results: comparison with a ground truth.
