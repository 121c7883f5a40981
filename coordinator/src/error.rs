//! The error type of `ecg-coordinator`, and the one mapping from a refused request to its
//! `tonic::Status` and to its `/metrics` label. Values a client sent are echoed in refusals
//! only through [`shown`]: cut short and with control characters escaped, so that a hostile
//! field can neither flood the log and the status message nor forge log lines.
use crate::core::WorkerId;

/// Longest piece of a client's value echoed in a refusal, in characters.
const SHOWN_CHARS: usize = 64;

/// `value` as a refusal may echo it: at most 64 characters (`SHOWN_CHARS`), escaped like a Rust
/// string literal (no control characters), with the number of bytes left out.
pub fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(SHOWN_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    let kept: usize = value.chars().take(SHOWN_CHARS).map(char::len_utf8).sum();
    if kept < value.len() {
        out.push_str(&format!("... ({} more bytes)", value.len() - kept));
    }
    out
}

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
    /// A unit already delivered in this step (by this worker or another).
    #[error("unit {unit} of step {step} is already done: a duplicate upload")]
    Duplicate {
        /// The step.
        step: u64,
        /// The unit.
        unit: u32,
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
    /// A malformed upload (gradient, unit results or predictions).
    #[error("malformed upload: {0}")]
    BadUpload(String),
    /// A malformed request other than an upload (a registration's fields).
    #[error("malformed request: {0}")]
    BadRequest(String),
    /// A message over the protocol's size limit, refused by the transport before any handler
    /// saw it (counted and logged by [`crate::guard`]).
    #[error("oversized message: {0}")]
    Oversized(String),
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
            Refusal::Duplicate { .. } => "duplicate",
            Refusal::NotAssigned { .. } | Refusal::NoTask(_) => "not_assigned",
            Refusal::NoVersion(_) => "no_version",
            Refusal::BadUpload(_) => "bad_upload",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::Oversized(_) => "oversized",
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
            | Refusal::Duplicate { .. }
            | Refusal::NotAssigned { .. }
            | Refusal::NoTask(_)
            | Refusal::NoVersion(_) => tonic::Status::aborted(msg),
            Refusal::BadUpload(_) | Refusal::BadRequest(_) => tonic::Status::invalid_argument(msg),
            Refusal::Oversized(_) => tonic::Status::out_of_range(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_values_are_cut_short_and_escaped() {
        assert_eq!(shown("run-1"), "run-1");
        assert_eq!(shown("a\nb\u{7}"), "a\\nb\\u{7}");
        let long = "x".repeat(1 << 20);
        let s = shown(&long);
        assert!(s.len() < 100, "{s}");
        assert!(s.ends_with(&format!("({} more bytes)", (1 << 20) - SHOWN_CHARS)));
        let wide = "\u{e9}".repeat(100);
        assert!(
            shown(&wide).ends_with("(72 more bytes)"),
            "{}",
            shown(&wide)
        );
    }

    #[test]
    fn every_refusal_has_a_status_fit_for_the_worker_and_a_label() {
        use tonic::Code;
        let cases = [
            (Refusal::Unauthenticated, Code::Unauthenticated),
            (
                Refusal::WrongRun {
                    got: "a".into(),
                    want: "b".into(),
                },
                Code::NotFound,
            ),
            (Refusal::UnknownWorker(WorkerId(3)), Code::NotFound),
            (Refusal::StaleStep { got: 1, current: 2 }, Code::Aborted),
            (Refusal::Duplicate { step: 1, unit: 0 }, Code::Aborted),
            (Refusal::NotAssigned { step: 1, unit: 0 }, Code::Aborted),
            (Refusal::BadUpload("x".into()), Code::InvalidArgument),
            (Refusal::BadRequest("x".into()), Code::InvalidArgument),
            (Refusal::Oversized("x".into()), Code::OutOfRange),
        ];
        for (r, code) in cases {
            assert!(!r.label().is_empty());
            assert_eq!(tonic::Status::from(r).code(), code);
        }
    }
}
