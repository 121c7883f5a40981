//! The error type of `ecg-coordinator`.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the dataset layer, the splits, the generator or the configuration.
    #[error(transparent)]
    Shared(#[from] ecg_shared::Error),
    /// A command-line argument that cannot be used.
    #[error("argument {arg}: {msg}")]
    Arg {
        /// The argument, as spelled on the command line.
        arg: &'static str,
        /// What is wrong.
        msg: String,
    },
}
