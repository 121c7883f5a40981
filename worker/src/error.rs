//! The error type of `ecg-worker`.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the dataset layer or the configuration.
    #[error(transparent)]
    Shared(#[from] ecg_shared::Error),
}
