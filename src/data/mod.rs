//! Reading measurements.
