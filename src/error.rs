//! Errors as values: every failure the user can cause is an [`Error`] whose one-line
//! message names the file, dataset, key or option at fault. `main` prints it and exits
//! with code 2 ([`EXIT_USAGE`]); nothing in ptytile panics on bad input.

use std::fmt;

/// Exit code for every user-facing error (bad input, bad config, missing GPU, …).
pub const EXIT_USAGE: i32 = 2;

/// A one-line, user-facing error. `what` names the file/dataset/key/option, `msg` says
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// The file, dataset, config key or option at fault (e.g. `data.h5:/data/intensities`).
    pub what: String,
    /// What is wrong, in a few words.
    pub msg: String,
}

impl Error {
    /// An error about `what` (a file, dataset, key or option).
    pub fn new(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error {
            what: what.into(),
            msg: msg.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep it on one line whatever the underlying library said.
        let msg = self.msg.replace('\n', " ");
        write!(f, "{}: {}", self.what, msg)
    }
}

impl std::error::Error for Error {}

/// Result with ptytile's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Attach a `what` to a foreign error (HDF5, I/O, TOML, PNG …).
pub trait Context<T> {
    /// Map the error into an [`Error`] naming `what`.
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::new(what(), e.to_string()))
    }
}
