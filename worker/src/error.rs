//! The error type of `ecg-worker`.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the dataset layer, the model or the configuration.
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
    /// The coordinator cannot be reached.
    #[error("cannot reach the coordinator: {0}")]
    Connect(String),
    /// A TLS failure that retrying cannot mend (a certificate refused by either side, or one
    /// side not speaking TLS).
    #[error("TLS: {0}")]
    Tls(String),
    /// The coordinator refused this worker for good.
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
    /// The coordinator answered something that breaks the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Shared(e.into())
    }
}
