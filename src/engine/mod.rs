//! Solvers. An engine owns the iteration: it asks a backend for sums of per-position
//! contributions and turns them into updates of the object and probe. Its persistent
//! state is checkpointed through [`snapshot::Snapshot`].

pub mod gd;
pub mod snapshot;
