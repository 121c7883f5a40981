//! `coordinator status --coordinator host:port [--token-file FILE]`: asks a running coordinator
//! where its run is (phase, epoch, step, learning rate, losses) and who works for it, and prints
//! it; exits non-zero when the coordinator cannot be reached or refuses.
use std::path::PathBuf;
use std::time::Duration;

use ecg_proto::v1::{self, coordinator_client::CoordinatorClient};
use ecg_proto::{AUTH_METADATA, MAX_MESSAGE_BYTES};

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
    let s = runtime.block_on(query(&args.coordinator, token))?;
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

async fn query(addr: &str, token: Option<String>) -> Result<v1::StatusResponse> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|e| Error::Arg {
            arg: "--coordinator",
            msg: format!("{addr}: {e}"),
        })?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            Error::Server(format!(
                "cannot reach {url}: {}",
                ecg_shared::cli::with_causes(&e)
            ))
        })?;
    let mut client = CoordinatorClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut req = tonic::Request::new(v1::StatusRequest {});
    if let Some(t) = token {
        let v = format!("Bearer {t}")
            .parse()
            .map_err(|_| Error::Server("the token must be printable ASCII".into()))?;
        req.metadata_mut().insert(AUTH_METADATA, v);
    }
    client
        .status(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| Error::Server(format!("{url} refused: {}", s.message())))
}
