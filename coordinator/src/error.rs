//! The error type of `ecg-coordinator`, and the one mapping from it to `tonic::Status`.
use crate::core::WorkerId;

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
    /// A request refused.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The server could not start or failed.
    #[error("server: {0}")]
    Server(String),
}

/// Why a worker's request is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// No or the wrong token.
    #[error("the cluster token is missing or wrong")]
    Unauthenticated,
    /// Another protocol version.
    #[error("protocol version {got} is not this coordinator's version {want}: use matching builds")]
    ProtocolVersion {
        /// The worker's.
        got: u32,
        /// Ours.
        want: u32,
    },
    /// Another dataset.
    #[error(
        "dataset fingerprint {got} differs from the coordinator's {want}: the worker sees other data (check --data-root and the files)"
    )]
    Fingerprint {
        /// The worker's.
        got: String,
        /// Ours.
        want: String,
    },
    /// Another run.
    #[error("run id {got} is not this run ({want}): register again")]
    WrongRun {
        /// The worker's.
        got: String,
        /// Ours.
        want: String,
    },
    /// Not (or no longer) a member.
    #[error("{0} is not registered (dropped or unknown): register again")]
    UnknownWorker(WorkerId),
    /// An upload for a step that is not the current one.
    #[error("step {got} is not the current step {current}")]
    StaleStep {
        /// The upload's step.
        got: u64,
        /// The current one.
        current: u64,
    },
    /// An upload when no step is in progress.
    #[error("no step is in progress (upload for step {got})")]
    NoStep {
        /// The upload's step.
        got: u64,
    },
    /// A unit that is not this worker's.
    #[error("unit {unit} of step {step} is not assigned to this worker")]
    NotAssigned {
        /// The step.
        step: u64,
        /// The unit.
        unit: u32,
    },
    /// A prediction task that is not this worker's.
    #[error("prediction task {0} is not assigned to this worker")]
    NoTask(u64),
    /// A state version no longer (or not yet) held.
    #[error("state version {0} is not available: ask for work again")]
    NoVersion(u64),
    /// A malformed upload.
    #[error("malformed upload: {0}")]
    BadUpload(String),
}

impl Refusal {
    /// The label under which `/metrics` counts it.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::ProtocolVersion { .. } => "protocol_version",
            Refusal::Fingerprint { .. } => "fingerprint",
            Refusal::WrongRun { .. } => "wrong_run",
            Refusal::UnknownWorker(_) => "unknown_worker",
            Refusal::StaleStep { .. } | Refusal::NoStep { .. } => "stale_step",
            Refusal::NotAssigned { .. } | Refusal::NoTask(_) => "not_assigned",
            Refusal::NoVersion(_) => "no_version",
            Refusal::BadUpload(_) => "bad_upload",
        }
    }
}

impl From<Refusal> for tonic::Status {
    fn from(r: Refusal) -> Self {
        let msg = r.to_string();
        match r {
            Refusal::Unauthenticated => tonic::Status::unauthenticated(msg),
            Refusal::ProtocolVersion { .. } | Refusal::Fingerprint { .. } => {
                tonic::Status::failed_precondition(msg)
            }
            Refusal::WrongRun { .. } | Refusal::UnknownWorker(_) => tonic::Status::not_found(msg),
            Refusal::StaleStep { .. }
            | Refusal::NoStep { .. }
            | Refusal::NotAssigned { .. }
            | Refusal::NoTask(_)
            | Refusal::NoVersion(_) => tonic::Status::aborted(msg),
            Refusal::BadUpload(_) => tonic::Status::invalid_argument(msg),
        }
    }
}
