//! `[cluster]` of `cluster.toml`: how the coordinator serves its workers (addresses, token,
//! membership, units of work, heartbeats, checkpoint cadence).
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Address the coordinator's gRPC service listens on (`host:port`; port 0: any free port).
    pub listen: String,
    /// Address of the Prometheus `/metrics` endpoint; empty: none.
    pub metrics_listen: String,
    /// File holding the cluster token every call must carry; empty: no token (local runs only).
    pub token_file: PathBuf,
    /// Training starts when this many workers have registered.
    pub min_workers: usize,
    /// Exams per unit of work: one forward and backward pass on a worker. A step's
    /// `training.batch_size` exams are cut into units of this size and shared among the
    /// workers; 0: the batch size divided by `min_workers`, rounded up.
    pub micro_batch: usize,
    /// Exams per prediction task (validation and test).
    pub predict_batch: usize,
    /// How often workers send a heartbeat, in milliseconds.
    pub heartbeat_ms: u64,
    /// A worker silent for this long is dropped and its units go back to the queue.
    pub worker_timeout_ms: u64,
    /// The full training state is checkpointed every this many steps (and after every
    /// epoch); 0: after every epoch only.
    pub checkpoint_every_steps: u64,
    /// A worker holding units of a step for longer than this (milliseconds) while others are
    /// there to take them is dropped from that step: its units go back to the queue and its
    /// late upload is refused. 0: automatic, ten times the median time from assignment to
    /// upload of the recent steps, and never less than `worker_timeout_ms`.
    pub step_deadline_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            listen: "0.0.0.0:50051".into(),
            metrics_listen: "0.0.0.0:9090".into(),
            token_file: PathBuf::new(),
            min_workers: 1,
            micro_batch: 0,
            predict_batch: 128,
            heartbeat_ms: 1000,
            worker_timeout_ms: 10_000,
            checkpoint_every_steps: 500,
            step_deadline_ms: 0,
        }
    }
}

impl ClusterSection {
    /// Exams per unit for a step of `batch_size` exams.
    pub fn unit_size(&self, batch_size: usize) -> usize {
        if self.micro_batch > 0 {
            self.micro_batch.min(batch_size)
        } else {
            batch_size.div_ceil(self.min_workers.max(1))
        }
    }

    /// Checks values that deserialize but cannot be used.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: String| Err(Error::Config(format!("{key}: {msg}")));
        if self.listen.trim().is_empty() {
            return bad("cluster.listen", "must be host:port".into());
        }
        if self.min_workers == 0 {
            return bad("cluster.min_workers", "must be at least 1".into());
        }
        if self.predict_batch == 0 {
            return bad("cluster.predict_batch", "must be at least 1".into());
        }
        if self.heartbeat_ms == 0 || self.worker_timeout_ms <= self.heartbeat_ms {
            return bad(
                "cluster.worker_timeout_ms",
                format!(
                    "{} must exceed heartbeat_ms = {} (which must be positive)",
                    self.worker_timeout_ms, self.heartbeat_ms
                ),
            );
        }
        Ok(())
    }
}
