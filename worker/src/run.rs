//! `worker --coordinator host:port`: joins a run and works until it is over. It fetches the
//! run's settings, indexes the dataset as this node sees it (`--data-root`), registers with
//! its dataset fingerprint, then loops: ask for work, download the state version the work
//! needs, compute, upload (gradients in chunks, or predictions). A heartbeat task keeps it
//! alive in the coordinator's eyes. When the coordinator goes away it reconnects with
//! exponential backoff; when it is forgotten it registers again; refusals for good (token,
//! protocol, dataset) end it with the coordinator's message. SIGTERM or Ctrl-C: it finishes
//! the current step, leaves the run and exits 0.
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ecg_proto::v1::{self, work_assignment::Kind};
use ecg_proto::{NO_VERSION, PROTOCOL_VERSION};
use ecg_shared::config::{ClientTlsPem, ClusterConfig};
use ecg_shared::model::ModelConfig;
use tonic::Status;

use crate::client::{Client, Failure, classify, connect};
use crate::trainer::Compute;
use crate::{Error, Result};
use ecg_shared::model::device;

mod exchange;
mod shared;

use shared::{Shared, open_shared};

/// Arguments of a worker run.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The coordinator's address, `host:port`.
    #[arg(long, value_name = "HOST:PORT", value_parser = ecg_shared::cli::host_port)]
    pub coordinator: Option<String>,
    /// Compute on CUDA device N (needs a build with the `cuda` feature).
    #[arg(long, value_name = "N", conflicts_with = "cpu")]
    pub gpu: Option<usize>,
    /// Compute on the CPU.
    #[arg(long)]
    pub cpu: bool,
    /// File holding the cluster token.
    #[arg(long, value_name = "FILE", env = "ECG_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate the coordinator's certificate must be signed by: connects over TLS.
    #[arg(long, value_name = "FILE", env = "ECG_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate (chain) for a coordinator that requires one (mutual TLS).
    #[arg(long, value_name = "FILE", env = "ECG_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", env = "ECG_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name to verify in the coordinator's certificate (default: the host of --coordinator).
    #[arg(long, value_name = "NAME", env = "ECG_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
    /// Where the CSV and HDF5 files are on this node (replaces the coordinator's data.root).
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// Threads for the computation (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Give up after the coordinator has been unreachable this long, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub give_up_after: u64,
    /// Benchmark mode: no data and no network computation, but this many milliseconds per
    /// step and a random gradient of the real size.
    #[arg(long, value_name = "MS")]
    pub simulate_ms: Option<u64>,
    /// Append `epoch,step,exam_id` for every exam of every accepted contribution to FILE.
    #[arg(long, value_name = "FILE")]
    pub exam_log: Option<PathBuf>,
    /// Write every state version received to DIR/v<version>.f32 (the flat parameters,
    /// little-endian f32), to check that workers hold identical parameters.
    #[arg(long, value_name = "DIR")]
    pub dump_states: Option<PathBuf>,
    /// Append one line of timings per training step to FILE (CSV: step, units, exams,
    /// compute_ms, upload_ms, wait_ms, download_ms): wait is from the end of the previous
    /// work to this assignment (the coordinator's reduction and Adam step, or idle time),
    /// download the time to receive the step's state (not to install it).
    #[arg(long, value_name = "FILE")]
    pub step_log: Option<PathBuf>,
    /// When the run is over, wait for SIGTERM instead of exiting (for Kubernetes, where a
    /// container that exits is started again).
    #[arg(long, env = "ECG_LINGER_AFTER_FINISH")]
    pub linger_after_finish: bool,
    /// Pass every chunk over gRPC even when the coordinator offers shared memory (it does to
    /// workers on its own host).
    #[arg(long, env = "ECG_NO_SHARED_MEMORY")]
    pub no_shared_memory: bool,
}

/// The CPU, or CUDA device `gpu` (an error naming what is missing when it cannot be had).
pub fn select_device(gpu: Option<usize>) -> Result<ecg_shared::model::Device> {
    match gpu {
        None => Ok(ecg_shared::model::Device::Cpu),
        Some(n) => device::cuda_device(n).map_err(|e| Error::Arg {
            arg: "--gpu",
            msg: match e {
                ecg_shared::Error::Training(m) => m,
                other => other.to_string(),
            },
        }),
    }
}

/// Runs the worker until the run is over (or SIGTERM).
pub fn run(args: &Args) -> Result<()> {
    let Some(addr) = args.coordinator.clone() else {
        return Err(Error::Arg {
            arg: "--coordinator",
            msg: "missing: give the coordinator's host:port (or a subcommand, see --help)".into(),
        });
    };
    // Fail before connecting when the device cannot be had.
    let device = select_device(args.gpu)?;
    if let Some(t) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t.max(1))
            .build_global()
            .map_err(|e| Error::Arg {
                arg: "--threads",
                msg: e.to_string(),
            })?;
    }
    let token = match &args.token_file {
        Some(p) => Some(ecg_shared::cli::read_token_file(p)?),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (stopped_tx, mut stopped) = tokio::sync::watch::channel(false);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::Connect(format!("cannot start the async runtime: {e}")))?;
    {
        let stop = Arc::clone(&stop);
        runtime.spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            eprintln!("worker: stopping after the current step");
            stop.store(true, Ordering::SeqCst);
            let _ = stopped_tx.send(true);
        });
    }
    let mut w = Worker {
        device,
        args: args.clone(),
        addr,
        token,
        tls: ClientTlsPem::from_flags(
            args.tls_ca.as_deref(),
            args.tls_cert.as_deref(),
            args.tls_key.as_deref(),
            args.tls_domain.as_deref(),
        )?,
        stop,
        compute: None,
        version: NO_VERSION,
        chunk_bytes: ecg_proto::CHUNK_BYTES,
        joined: false,
        shared: None,
        spare: Vec::new(),
        leaving: Arc::new(AtomicBool::new(false)),
    };
    runtime.block_on(w.run())?;
    if args.linger_after_finish && !*stopped.borrow() {
        println!("worker: the run is over; waiting for SIGTERM (--linger-after-finish)");
        runtime.block_on(async {
            let _ = stopped.wait_for(|s| *s).await;
        });
    }
    Ok(())
}

/// Heartbeats failing in a row (error or no answer within twice the period) after which the
/// coordinator counts as lost.
const LOST_AFTER_HEARTBEATS: u32 = 3;

struct Worker {
    /// Where the network computes.
    device: ecg_shared::model::Device,
    args: Args,
    addr: String,
    token: Option<String>,
    /// TLS toward the coordinator (`--tls-*`); `None`: plain text.
    tls: Option<ClientTlsPem>,
    stop: Arc<AtomicBool>,
    /// The computation of the run it belongs to, with its dataset fingerprint.
    compute: Option<(
        String,
        Arc<std::sync::Mutex<Compute>>,
        v1::DatasetFingerprint,
    )>,
    version: u64,
    /// Bytes per gradient chunk, as the run asks (`RunInfo.chunk_bytes`).
    chunk_bytes: usize,
    /// Whether the current session registered (so a later failure is a new outage).
    joined: bool,
    /// The shared memory of the current session, when the coordinator offered it and it is
    /// usable from here.
    shared: Option<Shared>,
    /// The buffer of the last state downloaded, for the next download to fill.
    spare: Vec<f32>,
    /// Set just before this worker leaves the run: the coordinator then forgets it, and the
    /// heartbeats' NOT_FOUND is no reason to register again.
    leaving: Arc<AtomicBool>,
}

/// Why a session ended.
enum SessionEnd {
    /// The run is over or we were asked to stop.
    Done,
    /// Connect again (after a backoff).
    Reconnect(String),
}

fn status_err(s: Status) -> Error {
    Error::Refused(crate::client::describe(&s))
}

impl Worker {
    async fn run(&mut self) -> Result<()> {
        let mut backoff = Duration::from_millis(100);
        let mut unreachable_since: Option<Instant> = None;
        loop {
            self.joined = false;
            self.shared = None;
            self.leaving = Arc::new(AtomicBool::new(false));
            match self.session().await {
                Ok(SessionEnd::Done) => return Ok(()),
                Ok(SessionEnd::Reconnect(why)) => {
                    if self.joined {
                        // The coordinator was there a moment ago: a new outage starts now.
                        unreachable_since = None;
                        backoff = Duration::from_millis(100);
                    }
                    let since = *unreachable_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(self.args.give_up_after) {
                        return Err(Error::Connect(format!(
                            "{} unreachable for {} s, giving up: {why}",
                            self.addr, self.args.give_up_after
                        )));
                    }
                    if self.stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    tracing::warn!("coordinator {}: {why}; retrying in {backoff:?}", self.addr);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One connection: run info, registration, work loop.
    async fn session(&mut self) -> Result<SessionEnd> {
        let mut client = match connect(&self.addr, self.token.as_deref(), self.tls.as_ref()).await {
            Ok(c) => c,
            Err(e @ (Error::Tls(_) | Error::Arg { .. })) => return Err(e),
            Err(e) => return Ok(SessionEnd::Reconnect(e.to_string())),
        };
        let info = match client
            .get_run_info(v1::RunInfoRequest {
                protocol_version: PROTOCOL_VERSION,
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => return self.fail(s),
        };
        let chunk = info.chunk_bytes as usize;
        if chunk == 0 || !chunk.is_multiple_of(4) || chunk > ecg_proto::MAX_MESSAGE_BYTES / 2 {
            return Err(Error::Protocol(format!(
                "the run's chunk size of {chunk} bytes is not a positive multiple of 4 of at \
                 most {} bytes",
                ecg_proto::MAX_MESSAGE_BYTES / 2
            )));
        }
        self.chunk_bytes = chunk;
        let compute = self.compute_for(&info).await?;
        ecg_shared::faults::point("worker.register");
        let fingerprint = compute.1.clone();
        let compute = compute.0;
        let reg = match client
            .register(v1::RegisterRequest {
                protocol_version: PROTOCOL_VERSION,
                build: format!(
                    "worker {} ({})",
                    env!("CARGO_PKG_VERSION"),
                    if device::CUDA_BUILD { "cuda" } else { "cpu" }
                ),
                device: if self.args.simulate_ms.is_some() {
                    "simulated".into()
                } else {
                    device::describe(&self.device)
                },
                fingerprint: Some(fingerprint),
                host: hostname(),
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => return self.fail(s),
        };
        let (run_id, id) = (reg.run_id, reg.worker_id);
        let n_params = compute
            .lock()
            .map_err(|_| Error::Protocol("the computation panicked".into()))?
            .n_params();
        self.shared = if self.args.no_shared_memory {
            None
        } else {
            open_shared(reg.shared_memory, reg.parameters, n_params)
        };
        println!(
            "worker {id}: joined run {run_id} at {}{}",
            self.addr,
            if self.shared.is_some() {
                ", chunks through shared memory"
            } else {
                ""
            }
        );
        self.joined = true;
        ecg_shared::faults::point("worker.registered");
        let lost = Arc::new(tokio::sync::Notify::new());
        let beat = {
            let mut c = client.clone();
            let run_id = run_id.clone();
            let lost = Arc::clone(&lost);
            let leaving = Arc::clone(&self.leaving);
            let every = Duration::from_millis(u64::from(info.heartbeat_ms.max(10)));
            let patience = (every * 2).max(Duration::from_millis(500));
            tokio::spawn(async move {
                let mut failures = 0;
                loop {
                    tokio::time::sleep(every).await;
                    let r = tokio::time::timeout(
                        patience,
                        c.heartbeat(v1::HeartbeatRequest {
                            run_id: run_id.clone(),
                            worker_id: id,
                        }),
                    )
                    .await;
                    if leaving.load(Ordering::SeqCst) {
                        return;
                    }
                    match r {
                        Ok(Ok(_)) => failures = 0,
                        Ok(Err(s)) if classify(&s) == Failure::Rejoin => {
                            lost.notify_one();
                            return;
                        }
                        Ok(Err(s)) if classify(&s) != Failure::Reconnect => return,
                        _ => {
                            failures += 1;
                            if failures >= LOST_AFTER_HEARTBEATS {
                                lost.notify_one();
                                return;
                            }
                        }
                    }
                }
            })
        };
        // A coordinator that stops answering heartbeats (a cut link, a frozen or restarted
        // coordinator) or that no longer knows this worker ends the session at once, whatever
        // call is under way: the worker connects and registers again.
        let end = tokio::select! {
            end = self.work(&mut client, &run_id, id, &compute) => end,
            () = lost.notified() => Ok(SessionEnd::Reconnect(
                "the coordinator stopped answering heartbeats or dropped this worker".into(),
            )),
        };
        beat.abort();
        end
    }

    fn fail(&self, s: Status) -> Result<SessionEnd> {
        match classify(&s) {
            Failure::Fatal => Err(status_err(s)),
            _ => Ok(SessionEnd::Reconnect(format!(
                "{}: {}",
                s.code(),
                s.message()
            ))),
        }
    }

    /// The computation for this run (built once per run id, reused across reconnections).
    async fn compute_for(
        &mut self,
        info: &v1::RunInfo,
    ) -> Result<(Arc<std::sync::Mutex<Compute>>, v1::DatasetFingerprint)> {
        let model: ModelConfig = serde_json::from_str(&info.model_json)
            .map_err(|e| Error::Protocol(format!("the run's architecture: {e}")))?;
        if let Some((run, c, fp)) = &self.compute
            && *run == info.run_id
        {
            return Ok((Arc::clone(c), fp.clone()));
        }
        self.version = NO_VERSION;
        let args = self.args.clone();
        let device = self.device.clone();
        let config_toml = info.config_toml.clone();
        let run_fp = info.fingerprint.clone().unwrap_or_default();
        let (compute, fp) = tokio::task::spawn_blocking(move || -> Result<_> {
            if let Some(ms) = args.simulate_ms {
                let c = Compute::simulated(
                    &model,
                    Duration::from_millis(ms),
                    std::process::id().into(),
                )?;
                return Ok((c, run_fp));
            }
            let mut cfg: ClusterConfig = toml::from_str(&config_toml)
                .map_err(|e| Error::Protocol(format!("the run's configuration: {e}")))?;
            if let Some(root) = &args.data_root {
                cfg.data.root = root.clone();
            }
            let (_, index, report) = cfg.build_index()?;
            tracing::info!("{report}");
            let fp = index.fingerprint();
            let c = Compute::new(
                &model,
                &index,
                cfg.training.prefetch_threads,
                &device,
                cfg.training.precision,
            )?;
            Ok((
                c,
                v1::DatasetFingerprint {
                    digest: fp.0.to_vec().into(),
                    n_exams: index.exams.len() as u64,
                    n_files: index.files.len() as u32,
                },
            ))
        })
        .await
        .map_err(|e| Error::Protocol(format!("indexing failed: {e}")))??;
        let compute = Arc::new(std::sync::Mutex::new(compute));
        self.compute = Some((info.run_id.clone(), Arc::clone(&compute), fp.clone()));
        Ok((compute, fp))
    }

    async fn work(
        &mut self,
        client: &mut Client,
        run_id: &str,
        id: u64,
        compute: &Arc<std::sync::Mutex<Compute>>,
    ) -> Result<SessionEnd> {
        let leaving = Arc::clone(&self.leaving);
        let leave = |mut c: Client, run_id: String| async move {
            leaving.store(true, Ordering::SeqCst);
            let _ = c
                .leave(v1::LeaveRequest {
                    run_id,
                    worker_id: id,
                })
                .await;
        };
        let mut waited_since = Instant::now();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                leave(client.clone(), run_id.to_string()).await;
                println!("worker {id}: left the run");
                return Ok(SessionEnd::Done);
            }
            let a = match client
                .next_work(v1::WorkRequest {
                    run_id: run_id.to_string(),
                    worker_id: id,
                    have_version: self.version,
                    wait_ms: 2000,
                })
                .await
            {
                Ok(r) => r.into_inner(),
                Err(s) => match classify(&s) {
                    Failure::Retry => continue,
                    Failure::Fatal => return Err(status_err(s)),
                    _ => return Ok(SessionEnd::Reconnect(s.message().to_string())),
                },
            };
            let assigned = Instant::now();
            let wait_ms = assigned.duration_since(waited_since).as_secs_f64() * 1e3;
            let kind = a
                .kind
                .ok_or_else(|| Error::Protocol("an empty assignment".into()))?;
            if let Kind::Finished(f) = &kind {
                leave(client.clone(), run_id.to_string()).await;
                println!("worker {id}: the run is over ({})", f.reason);
                return Ok(SessionEnd::Done);
            }
            if matches!(kind, Kind::Wait(_)) {
                continue;
            }
            let mut download_ms = 0.0;
            if a.version != self.version {
                match self.download(client, run_id, id, a.version, compute).await {
                    Ok(received) => download_ms = received.as_secs_f64() * 1e3,
                    Err(Some(s)) => match classify(&s) {
                        Failure::Retry => continue,
                        Failure::Fatal => return Err(status_err(s)),
                        _ => return Ok(SessionEnd::Reconnect(s.message().to_string())),
                    },
                    Err(None) => return Err(Error::Protocol("a malformed state download".into())),
                }
            }
            let outcome = match kind {
                Kind::Train(t) => {
                    self.train(client, run_id, id, t, compute, wait_ms, download_ms)
                        .await
                }
                Kind::Predict(p) => self.predict(client, run_id, id, p, compute).await,
                Kind::Wait(_) | Kind::Finished(_) => Ok(()),
            };
            waited_since = Instant::now();
            match outcome {
                Ok(()) => {}
                Err(s) => match classify(&s) {
                    Failure::Retry => continue,
                    Failure::Rejoin => return Ok(SessionEnd::Reconnect(s.message().to_string())),
                    Failure::Fatal => return Err(status_err(s)),
                    Failure::Reconnect => {
                        return Ok(SessionEnd::Reconnect(s.message().to_string()));
                    }
                },
            }
        }
    }
}

fn append(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(text.as_bytes())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
