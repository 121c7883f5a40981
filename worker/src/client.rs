//! The worker's connection to the coordinator: one HTTP/2 channel with large flow-control
//! windows and the protocol's message-size limits, the cluster token on every call, and the
//! classification of failures into what to do next (retry the call, register again, or stop).
use std::time::Duration;

use ecg_proto::v1::coordinator_client::CoordinatorClient;
use ecg_proto::{AUTH_METADATA, MAX_MESSAGE_BYTES};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::{Error, Result};

/// The interceptor adding the token.
#[derive(Clone)]
pub struct Auth(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(AUTH_METADATA, v.clone());
        }
        Ok(req)
    }
}

/// A client of the coordinator service.
pub type Client = CoordinatorClient<InterceptedService<Channel, Auth>>;

/// Connects to `addr` (`host:port`, or a URL) with `token`.
pub async fn connect(addr: &str, token: Option<&str>) -> Result<Client> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| Error::Connect(format!("--coordinator {addr}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .initial_stream_window_size(Some(16 << 20))
        .initial_connection_window_size(Some(64 << 20))
        .max_frame_size(Some((1 << 20) + 1024));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Error::Connect(format!("{url}: {}", ecg_shared::cli::with_causes(&e))))?;
    let auth = match token {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse::<AsciiMetadataValue>()
                .map_err(|_| Error::Connect("the token must be printable ASCII".into()))?,
        ),
        None => None,
    };
    Ok(CoordinatorClient::with_interceptor(channel, Auth(auth))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// What a failed call means for the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The coordinator is unreachable or went away: reconnect with backoff.
    Reconnect,
    /// The coordinator no longer knows this worker or its run: register again.
    Rejoin,
    /// The request was stale (the run moved on): ask for work again.
    Retry,
    /// Refused for good (token, protocol version, dataset): stop with the message.
    Fatal,
}

/// Classifies a status.
pub fn classify(s: &Status) -> Failure {
    match s.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
            Failure::Reconnect
        }
        Code::NotFound => Failure::Rejoin,
        Code::Aborted | Code::ResourceExhausted => Failure::Retry,
        _ => Failure::Fatal,
    }
}
