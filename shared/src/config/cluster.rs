//! `[cluster]` of `cluster.toml`: how the coordinator serves its workers (addresses, token,
//! TLS, membership, units of work, heartbeats, checkpoint cadence).
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::pem::{PemKind, read_pem};
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
    /// PEM certificate chain (the coordinator's certificate first) the gRPC service is served
    /// with over TLS; empty: plain text. Needs `tls_key`.
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert` (unencrypted; keep it readable by the coordinator's user
    /// only). Needs `tls_cert`.
    pub tls_key: PathBuf,
    /// PEM CA certificate(s): when set, every client (worker, `coordinator status`) must present
    /// a certificate signed by one of them (mutual TLS). Needs `tls_cert` and `tls_key`.
    pub tls_client_ca: PathBuf,
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
    /// Size of the pieces, in KiB, that gradients and parameters travel in (1 to 4096). The
    /// coordinator sums and applies Adam piece by piece as the uploads arrive, and the new
    /// parameters go out piece by piece while later pieces are still coming in.
    pub chunk_kib: usize,
    /// After the run is over, keep answering (workers are told it is over, `status` says
    /// so) until SIGTERM instead of exiting; a coordinator started again on a finished run does
    /// the same. For Kubernetes, where an exited pod is started again.
    pub linger_after_finish: bool,
    /// A tmpfs directory for shared-memory segments: workers on the coordinator's own host
    /// pass their gradient and parameter chunks through a segment there instead of through
    /// gRPC (which still carries everything else). Empty: everything over gRPC. The default,
    /// `/dev/shm`, is skipped quietly where it does not exist.
    pub shared_memory_dir: PathBuf,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            listen: "0.0.0.0:50051".into(),
            metrics_listen: "0.0.0.0:9090".into(),
            token_file: PathBuf::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_client_ca: PathBuf::new(),
            min_workers: 1,
            micro_batch: 0,
            predict_batch: 128,
            heartbeat_ms: 1000,
            worker_timeout_ms: 10_000,
            checkpoint_every_steps: 500,
            step_deadline_ms: 0,
            chunk_kib: 1024,
            linger_after_finish: false,
            shared_memory_dir: PathBuf::from(DEFAULT_SHARED_MEMORY_DIR),
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

    /// Resolves the relative paths of the section with `join` (against the TOML's directory).
    pub fn resolve_paths(&mut self, join: impl Fn(&Path) -> PathBuf) {
        self.token_file = join(&self.token_file);
        self.tls_cert = join(&self.tls_cert);
        self.tls_key = join(&self.tls_key);
        self.tls_client_ca = join(&self.tls_client_ca);
        self.shared_memory_dir = join(&self.shared_memory_dir);
    }

    /// The TLS files, read and checked: `None` for plain text. Errors name the setting and the
    /// file (missing half of the cert/key pair, unreadable file, not PEM of the right kind).
    pub fn tls(&self) -> Result<Option<TlsPem>> {
        let set = |p: &Path| !p.as_os_str().is_empty();
        let bad = |msg: &str| Err(Error::Config(msg.to_string()));
        match (set(&self.tls_cert), set(&self.tls_key)) {
            (false, false) => {
                if set(&self.tls_client_ca) {
                    return bad(
                        "cluster.tls_client_ca: needs cluster.tls_cert and cluster.tls_key \
                         (mutual TLS is TLS with client certificates)",
                    );
                }
                return Ok(None);
            }
            (true, false) => {
                return bad("cluster.tls_cert: needs cluster.tls_key (its private key)");
            }
            (false, true) => {
                return bad("cluster.tls_key: needs cluster.tls_cert (its certificate chain)");
            }
            (true, true) => {}
        }
        Ok(Some(TlsPem {
            cert: read_pem("cluster.tls_cert", &self.tls_cert, PemKind::Certificates)?,
            key: read_pem("cluster.tls_key", &self.tls_key, PemKind::PrivateKey)?,
            client_ca: if set(&self.tls_client_ca) {
                Some(read_pem(
                    "cluster.tls_client_ca",
                    &self.tls_client_ca,
                    PemKind::Certificates,
                )?)
            } else {
                None
            },
        }))
    }

    /// Checks values that deserialize but cannot be used (the TLS files are read and checked
    /// here, so that a wrong one stops the coordinator before it indexes the dataset).
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
        if !(1..=MAX_CHUNK_KIB).contains(&self.chunk_kib) {
            return bad(
                "cluster.chunk_kib",
                format!("{} must be from 1 to {MAX_CHUNK_KIB}", self.chunk_kib),
            );
        }
        let shm = &self.shared_memory_dir;
        let set = !shm.as_os_str().is_empty() && shm != Path::new(DEFAULT_SHARED_MEMORY_DIR);
        if set && !shm.is_dir() {
            return bad(
                "cluster.shared_memory_dir",
                format!(
                    "{} is not a directory (empty: no shared memory)",
                    shm.display()
                ),
            );
        }
        self.tls()?;
        Ok(())
    }

    /// The directory for shared-memory segments, when there is one to use.
    pub fn shared_memory_dir(&self) -> Option<&Path> {
        let d = self.shared_memory_dir.as_path();
        (!d.as_os_str().is_empty() && d.is_dir()).then_some(d)
    }

    /// `chunk_kib` in bytes.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_kib << 10
    }
}

/// `cluster.shared_memory_dir` unless set otherwise.
pub const DEFAULT_SHARED_MEMORY_DIR: &str = "/dev/shm";

/// Largest `cluster.chunk_kib`: a chunk and its message's other fields stay far below the
/// gRPC message-size limit (8 MiB).
pub const MAX_CHUNK_KIB: usize = 4096;

/// The coordinator's TLS material, as read from the `cluster.tls_*` files (PEM bytes).
pub struct TlsPem {
    /// The certificate chain.
    pub cert: Vec<u8>,
    /// Its private key.
    pub key: Vec<u8>,
    /// The CA that client certificates must be signed by (mutual TLS); `None`: no client
    /// certificates asked for.
    pub client_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsPem {
    /// Never shows the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPem")
            .field("cert_bytes", &self.cert.len())
            .field("key", &"<hidden>")
            .field("mutual", &self.client_ca.is_some())
            .finish()
    }
}
