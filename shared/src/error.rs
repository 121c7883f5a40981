//! The error type of `ecg-shared`. Every variant that comes from bad input names the file (and
//! where it can, the line, column, dataset or value) so that the user can find the problem.
use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the dataset layer, the splits, the generator or the config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A CSV file that cannot be used; `line` is 1-based and counts the header.
    #[error("{}{}: {msg}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The line, when the problem is on one line.
        line: Option<u64>,
        /// What is wrong.
        msg: String,
    },
    /// An HDF5 file that cannot be used (missing dataset, wrong shape or type, unreadable).
    #[error("{}: {msg}", path.display())]
    Hdf5 {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The CSV and the HDF5 files do not fit together.
    #[error("dataset: {0}")]
    Dataset(String),
    /// Training inputs that do not fit together (lengths, non-finite values).
    #[error("training: {0}")]
    Training(String),
    /// A configuration value or command-line argument that cannot be used.
    #[error("config: {0}")]
    Config(String),
    /// A checkpoint (PyTorch `model.pth`, `config.json` or our safetensors) that cannot be used:
    /// unreadable, truncated, or not matching the model (the message names the tensor).
    #[error("{}: {msg}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A model computation failed (shapes, dtypes, device) inside Candle or our own ops.
    #[error("model: {0}")]
    Model(#[from] candle_core::Error),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Hdf5`] for `path`.
    pub fn hdf5(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        Error::Hdf5 {
            path: path.into(),
            msg: msg.to_string(),
        }
    }

    /// An [`Error::Checkpoint`] for `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.to_string(),
        }
    }

    /// An [`Error::Csv`] for `path`, optionally at a 1-based `line`.
    pub fn csv(path: impl Into<PathBuf>, line: Option<u64>, msg: impl std::fmt::Display) -> Self {
        Error::Csv {
            path: path.into(),
            line,
            msg: msg.to_string(),
        }
    }
}
