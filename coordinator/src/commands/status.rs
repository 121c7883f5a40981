//! `coordinator status --coordinator host:port [--token-file FILE] [--tls-ca FILE [--tls-cert
//! FILE --tls-key FILE] [--tls-domain NAME]]`: asks a running coordinator (over TLS when
//! `--tls-ca` is given)
//! where its run is (phase, epoch, step, learning rate, losses) and who works for it, and prints
//! it; exits non-zero when the coordinator cannot be reached or refuses.
use std::path::PathBuf;
use std::time::Duration;

use ecg_proto::v1::{self, coordinator_client::CoordinatorClient};
use ecg_proto::{AUTH_METADATA, MAX_MESSAGE_BYTES};
use ecg_shared::config::ClientTlsPem;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::{Error, Result};

/// Arguments of `coordinator status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The coordinator's address, `host:port`.
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: String,
    /// File holding the cluster token, when the run has one.
    #[arg(long, value_name = "FILE", env = "ECG_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate the coordinator's certificate must be signed by: connects over TLS.
    #[arg(long, value_name = "FILE", env = "ECG_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate (chain), for a coordinator that requires one (mutual TLS).
    #[arg(long, value_name = "FILE", env = "ECG_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", env = "ECG_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name to verify in the coordinator's certificate (default: the host of --coordinator).
    #[arg(long, value_name = "NAME", env = "ECG_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
}

/// Queries and prints the status.
pub fn run(args: &Args) -> Result<()> {
    let token = match &args.token_file {
        Some(p) => Some(ecg_shared::cli::read_token_file(p)?),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Server(e.to_string()))?;
    let tls = ClientTlsPem::from_flags(
        args.tls_ca.as_deref(),
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        args.tls_domain.as_deref(),
    )?;
    let s = runtime.block_on(query(&args.coordinator, token, tls.as_ref()))?;
    let phase = v1::RunPhase::try_from(s.phase)
        .map(|p| {
            p.as_str_name()
                .trim_start_matches("RUN_PHASE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown ({})", s.phase));
    println!("run {} at {}: {phase}", s.run_id, args.coordinator);
    println!(
        "epoch {}, step {} of {}, {} steps in all, learning rate {:e}",
        s.epoch, s.step_in_epoch, s.steps_in_epoch, s.global_step, s.lr
    );
    println!(
        "last training loss per exam {:.4}, best validation loss {:.4}",
        s.last_train_loss, s.best_valid_loss
    );
    println!("{} worker(s)", s.workers.len());
    for w in &s.workers {
        println!(
            "  worker {:>3}  {:<20} {:<12} {:>8} contributions {:>10} exams  seen {} ms ago",
            w.worker_id, w.host, w.device, w.steps, w.exams, w.last_seen_ms
        );
    }
    Ok(())
}

async fn query(
    addr: &str,
    token: Option<String>,
    tls: Option<&ClientTlsPem>,
) -> Result<v1::StatusResponse> {
    let url = match addr.split_once("://") {
        Some(_) => addr.to_string(),
        None if tls.is_some() => format!("https://{addr}"),
        None => format!("http://{addr}"),
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| Error::Arg {
            arg: "--coordinator",
            msg: format!("{addr}: {e}"),
        })?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if let Some(pem) = tls {
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pem.ca))
            .timeout(Duration::from_secs(10));
        if let Some((cert, key)) = &pem.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(d) = &pem.domain {
            config = config.domain_name(d.clone());
        }
        endpoint = endpoint.tls_config(config).map_err(|e| {
            Error::Server(format!("{url}: TLS: {}", ecg_shared::cli::with_causes(&e)))
        })?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        Error::Server(format!(
            "cannot reach {url}: {}",
            ecg_shared::cli::with_causes(&e)
        ))
    })?;
    let mut client = CoordinatorClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut req = tonic::Request::new(v1::StatusRequest {});
    if let Some(t) = token {
        let mut v: tonic::metadata::AsciiMetadataValue = format!("Bearer {t}")
            .parse()
            .map_err(|_| Error::Server("the token must be printable ASCII".into()))?;
        v.set_sensitive(true);
        req.metadata_mut().insert(AUTH_METADATA, v);
    }
    client
        .status(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| {
            // A transport error's message is only `transport error`: add what is underneath.
            let why = match std::error::Error::source(&s) {
                Some(src) => format!("{}: {}", s.message(), ecg_shared::cli::with_causes(src)),
                None => s.message().to_string(),
            };
            Error::Server(format!("{url} refused: {why}"))
        })
}
