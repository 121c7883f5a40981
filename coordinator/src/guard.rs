//! The outermost wrapper of the coordinator service: it sees every call's response, and
//! counts and logs the refusals that no handler of ours makes. tonic decodes a request before
//! the handler runs (and a streamed upload's messages as the handler reads them) and refuses a
//! message over `MAX_MESSAGE_BYTES` itself with OUT_OF_RANGE, which our handlers never answer:
//! so every OUT_OF_RANGE response is an oversized message, counted in `/metrics` under
//! `oversized` and logged with the method and the peer.
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

use crate::error::Refusal;
use crate::metrics::Metrics;

/// The `grpc-status` value of OUT_OF_RANGE.
const OUT_OF_RANGE: &str = "11";

/// The service `S` with oversized messages counted and logged.
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Guard<S> {
    /// Wraps `inner`, counting in `metrics`.
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Self {
        Guard { inner, metrics }
    }
}

impl<S, B, R> Service<http::Request<B>> for Guard<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        // tonic's own reading of the peer address (plain TCP or TLS) from the extensions.
        let peer = tonic::Request::from_parts(Default::default(), req.extensions().clone(), ())
            .remote_addr();
        let metrics = Arc::clone(&self.metrics);
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            // A refusal made before any data was sent is a trailers-only response: its
            // status is in the headers.
            if response
                .headers()
                .get("grpc-status")
                .is_some_and(|v| v == OUT_OF_RANGE)
            {
                let r = Refusal::Oversized(format!(
                    "a message of {method} over {} bytes",
                    ecg_proto::MAX_MESSAGE_BYTES
                ));
                metrics.rejected(r.label());
                let peer = peer.map_or_else(|| "an unknown peer".to_string(), |a| a.to_string());
                tracing::warn!("refused a call from {peer}: {r}");
            }
            Ok(response)
        })
    }
}

impl<S: NamedService> NamedService for Guard<S> {
    const NAME: &'static str = S::NAME;
}
