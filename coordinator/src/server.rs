//! Starts a run: binds the gRPC port (and the metrics port), writes the bound address to
//! `<output.dir>/coordinator.addr` (so that `listen = "127.0.0.1:0"` works for scripts and
//! tests), serves the coordinator service (over TLS, or mutual TLS, when `cluster.tls_*` say so)
//! with the standard gRPC health service beside it, runs
//! the [`driver`](crate::driver) on its own thread, and shuts the server down when the run
//! ends.
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ecg_proto::v1::coordinator_server::CoordinatorServer;
use ecg_proto::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use ecg_shared::train::history::write_atomic;
use ecg_shared::train::local::TrainEvent;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::core::Core;
use crate::driver::{RunOutcome, drive};
use crate::hub::{Hub, RunFacts};
use crate::metrics::{Metrics, serve_metrics};
use crate::segments::Segments;
use crate::service::{CoordinatorService, check_token};
use crate::snapshot::Snapshot;
use crate::trainer::Trainer;
use crate::{Error, Result};

/// File in the output folder holding the address the coordinator listens on.
pub const ADDR_FILE: &str = "coordinator.addr";

/// HTTP/2 flow-control windows for what workers send. A stream's window holds 4 chunks: enough
/// for a 10 Gbit/s link with a few milliseconds of round trip, and small enough that an upload
/// held back for running ahead of the others (`service::upload`) stops sending soon, leaving
/// the coordinator's link to the others. The connection's window is larger than any
/// stream's.
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 64 << 20;
/// Largest HTTP/2 frame we accept: a whole chunk in one frame instead of 64 frames of 16 KiB.
const MAX_FRAME: u32 = (1 << 20) + 1024;
/// A client that has not finished its TLS handshake by then is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the cluster token from `path` (surrounding white space removed); empty path: none.
pub fn read_token(path: &std::path::Path) -> Result<Option<String>> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    Ok(Some(ecg_shared::cli::read_token_file(path)?))
}

/// Runs the distributed training described by `trainer.cfg` to its end.
pub fn run_cluster(
    mut trainer: Trainer,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<RunOutcome> {
    let cfg = trainer.cfg.clone();
    let c = &cfg.cluster;
    let token = read_token(&c.token_file)?;
    let config_toml = toml::to_string(&cfg)
        .map_err(|e| Error::Server(format!("cannot write the configuration as TOML: {e}")))?;
    let model_json = serde_json::to_string(&trainer.model.config().to_json_value())
        .map_err(|e| Error::Server(e.to_string()))?;
    let fp = trainer.data.index.fingerprint();
    let info = ecg_proto::v1::RunInfo {
        run_id: trainer.run_id.clone(),
        protocol_version: PROTOCOL_VERSION,
        config_toml,
        model_json,
        fingerprint: Some(ecg_proto::v1::DatasetFingerprint {
            digest: fp.0.to_vec().into(),
            n_exams: trainer.data.index.exams.len() as u64,
            n_files: trainer.data.index.files.len() as u32,
        }),
        heartbeat_ms: c.heartbeat_ms.min(u64::from(u32::MAX)) as u32,
        chunk_bytes: c.chunk_bytes() as u32,
    };
    let metrics = Metrics::new();
    let segments = Segments::new(
        c.shared_memory_dir().map(Path::to_path_buf),
        trainer.params().len(),
    );
    if let Some(regions) = segments.take_parameters(trainer.params().len()) {
        trainer.share_parameters(regions)?;
    }
    let snapshot = Snapshot::new(
        trainer.global_step,
        trainer.params().to_vec(),
        &trainer.model,
        c.chunk_bytes(),
        trainer.parameters_shared(),
    );
    let facts = RunFacts {
        info,
        fingerprint: fp.to_string(),
        token: token.clone(),
        bn_channels: trainer
            .model
            .batch_norms()
            .iter()
            .map(|b| b.channels())
            .collect(),
        n_params: trainer.params().len(),
        worker_timeout: Duration::from_millis(c.worker_timeout_ms),
        step_deadline: Duration::from_millis(c.step_deadline_ms),
        linger_after_finish: c.linger_after_finish,
        metrics: Arc::clone(&metrics),
        segments,
    };
    let hub = Arc::new(Hub::new(Core::new(Arc::new(snapshot)), facts));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("coordinator-io")
        .build()
        .map_err(|e| Error::Server(format!("cannot start the async runtime: {e}")))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&c.listen))
        .map_err(|e| Error::Server(format!("cluster.listen {}: {e}", c.listen)))?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| Error::Server(e.to_string()))?;
    let metrics_addr = if c.metrics_listen.trim().is_empty() {
        None
    } else {
        let ml = runtime
            .block_on(tokio::net::TcpListener::bind(&c.metrics_listen))
            .map_err(|e| {
                Error::Server(format!("cluster.metrics_listen {}: {e}", c.metrics_listen))
            })?;
        let maddr = ml.local_addr().map_err(|e| Error::Server(e.to_string()))?;
        let mut rx = stop_rx.clone();
        let m = Arc::clone(&metrics);
        runtime.spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = serve_metrics(ml, m, stop).await {
                tracing::warn!("metrics endpoint: {e}");
            }
        });
        Some(maddr)
    };
    // The server first, so that a certificate its key does not match stops the run before
    // anyone is told where it listens.
    let mut builder = Server::builder()
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .tcp_nodelay(true)
        .max_frame_size(Some(MAX_FRAME));
    let mut security = "";
    if let Some((tls, mutual)) = server_tls(c)? {
        builder = builder.tls_config(tls).map_err(|e| {
            Error::Server(format!(
                "cluster.tls_cert {} / cluster.tls_key {}: {}",
                c.tls_cert.display(),
                c.tls_key.display(),
                ecg_shared::cli::with_causes(&e)
            ))
        })?;
        security = if mutual {
            " with mutual TLS"
        } else {
            " with TLS"
        };
    }
    println!(
        "coordinator {} listening on {addr}{security}{}{}",
        hub.facts.info.run_id,
        metrics_addr.map_or(String::new(), |a| format!(
            ", metrics on http://{a}/metrics"
        )),
        if token.is_some() {
            ", token required"
        } else {
            ""
        }
    );
    if token.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            "no cluster.token_file: anyone who can reach {addr} can join this run and read its parameters"
        );
    }
    write_atomic(&cfg.output.dir.join(ADDR_FILE), addr.to_string().as_bytes())?;

    let service = CoordinatorServer::new(CoordinatorService::new(Arc::clone(&hub)))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let auth = check_token(token.map(Arc::from), Arc::clone(&metrics));
    let service = tonic::service::interceptor::InterceptedService::new(service, auth);
    let service = crate::guard::Guard::new(service, Arc::clone(&metrics));
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let mut rx = stop_rx.clone();
    let server = runtime.spawn(async move {
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        health_reporter
            .set_service_status("ecg.v1.Coordinator", tonic_health::ServingStatus::Serving)
            .await;
        // The health service is outside the token check (probes cannot send the token); it
        // tells the serving status and nothing else.
        builder
            .add_service(health)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming(listener), async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
    });

    {
        // SIGTERM (Kubernetes stopping the pod) or Ctrl-C: end or abandon the step under way,
        // checkpoint and exit 0; the workers wait for the coordinator to come back.
        let hub = Arc::clone(&hub);
        runtime.spawn(async move {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            println!("coordinator: stopping: ending the step under way, then checkpointing");
            hub.request_stop();
        });
    }
    let outcome = drive(&hub, trainer, on_event);
    let _ = stop_tx.send(true);
    match runtime.block_on(server) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("server: {e}"),
        Err(e) => tracing::warn!("server task: {e}"),
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    let m = &hub.facts.metrics;
    outcome.map(|o| RunOutcome {
        downloads: Some([
            m.state_downloads("during_step"),
            m.state_downloads("published"),
            m.state_downloads("abandoned"),
        ]),
        shared_memory_bytes: Some([m.shared_memory_bytes("up"), m.shared_memory_bytes("down")]),
        ..o
    })
}

/// The TLS settings of `[cluster]` as tonic's server configuration, and whether client
/// certificates are required; `None`: plain text.
fn server_tls(c: &ecg_shared::config::ClusterSection) -> Result<Option<(ServerTlsConfig, bool)>> {
    let Some(pem) = c.tls()? else {
        return Ok(None);
    };
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(pem.cert, pem.key))
        .timeout(TLS_HANDSHAKE_TIMEOUT);
    let mutual = pem.client_ca.is_some();
    if let Some(ca) = pem.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(Some((tls, mutual)))
}

/// The connections accepted on `listener`, with `TCP_NODELAY` set. `Server::tcp_nodelay` applies
/// only to a server that binds its own socket; without it, Nagle's algorithm holds each small
/// stream message back until the peer's delayed acknowledgement (up to 40 ms on Linux).
fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn accepted_connections_do_without_nagle() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut incoming = super::incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let accepted = incoming
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(accepted.nodelay().expect("TCP_NODELAY readable"));
    }
}
