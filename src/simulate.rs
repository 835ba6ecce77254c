//! Synthetic datasets.
