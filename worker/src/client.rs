//! The worker's connection to the coordinator: one HTTP/2 channel with large flow-control
//! windows and the protocol's message-size limits, over TLS (rustls, optionally with a client
//! certificate) when `--tls-ca` is given, the cluster token on every call, and the
//! classification of failures into what to do next (retry the call, register again, or stop;
//! TLS failures such as a certificate refused stop the worker at once).
use std::time::Duration;

use ecg_proto::v1::coordinator_client::CoordinatorClient;
use ecg_proto::{AUTH_METADATA, MAX_MESSAGE_BYTES};
use ecg_shared::config::ClientTlsPem;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use crate::{Error, Result};

/// Longest a TLS handshake may take before the connection counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The URL for `addr` (`host:port`, or a URL): `https://` with TLS, `http://` without.
pub fn coordinator_url(addr: &str, tls: bool) -> Result<String> {
    let url = match addr.split_once("://") {
        None if tls => format!("https://{addr}"),
        None => format!("http://{addr}"),
        Some(("https", _)) if !tls => {
            return Err(Error::Arg {
                arg: "--coordinator",
                msg: format!(
                    "{addr}: https needs --tls-ca (the CA of the coordinator's certificate)"
                ),
            });
        }
        Some(("http", rest)) if tls => format!("https://{rest}"),
        Some(_) => addr.to_string(),
    };
    Ok(url)
}

/// Tonic's client TLS settings from the `--tls-*` files.
pub fn client_tls(pem: &ClientTlsPem) -> ClientTlsConfig {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pem.ca))
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some((cert, key)) = &pem.identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    if let Some(d) = &pem.domain {
        tls = tls.domain_name(d.clone());
    }
    tls
}

/// Connects to `addr` (`host:port`, or a URL) with `token`, over TLS when `tls` is given.
pub async fn connect(
    addr: &str,
    token: Option<&str>,
    tls: Option<&ClientTlsPem>,
) -> Result<Client> {
    let url = coordinator_url(addr, tls.is_some())?;
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| Error::Connect(format!("--coordinator {addr}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .initial_stream_window_size(Some(16 << 20))
        .initial_connection_window_size(Some(64 << 20))
        .max_frame_size(Some((1 << 20) + 1024));
    if let Some(pem) = tls {
        endpoint = endpoint
            .tls_config(client_tls(pem))
            .map_err(|e| Error::Tls(format!("{url}: {}", ecg_shared::cli::with_causes(&e))))?;
    }
    let channel = open(&endpoint, &url, tls.is_some()).await?;
    let auth = match token {
        Some(t) => {
            let mut v = format!("Bearer {t}")
                .parse::<AsciiMetadataValue>()
                .map_err(|_| Error::Connect("the token must be printable ASCII".into()))?;
            // Never written out by a Debug of the headers (trace logs) nor indexed by HPACK.
            v.set_sensitive(true);
            Some(v)
        }
        None => None,
    };
    Ok(CoordinatorClient::with_interceptor(channel, Auth(auth))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Connections tried at once before a failure is left to the caller's backoff.
const PROBES: usize = 10;
/// Longest wait for the answer to the health check that opens a connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a channel to `url` and checks that the coordinator answers on it. A certificate refused
/// by the coordinator (mutual TLS) or a plain-text client at a TLS port is only seen once the
/// client has sent something: the coordinator then sends an alert and closes the connection,
/// and the client sees either the alert or, when it was still writing, a broken pipe. So one
/// health check is sent (no token needed) on up to [`PROBES`] fresh connections, until it is
/// answered, or fails with a reason: a TLS failure, which is final, or another transport
/// error, which the caller may retry later.
async fn open(endpoint: &Endpoint, url: &str, tls: bool) -> Result<Channel> {
    let tls_error = |why: String| match tls_problem(&why, tls) {
        Some(hint) => Error::Tls(format!("{url}: {why} ({hint})")),
        None if !tls && not_http2(&why) => Error::Tls(format!(
            "{url}: {why} (the answer is not gRPC over HTTP/2: the coordinator probably serves \
             TLS; give --tls-ca)"
        )),
        None => Error::Connect(format!("{url}: {why}")),
    };
    let mut last = None;
    for _ in 0..PROBES {
        let mut channel = endpoint
            .connect()
            .await
            .map_err(|e| tls_error(ecg_shared::cli::with_causes(&e)))?;
        match tokio::time::timeout(PROBE_TIMEOUT, probe(&mut channel)).await {
            Ok(Ok(())) => return Ok(channel),
            Ok(Err(e)) => match tls_error(ecg_shared::cli::with_causes(&e)) {
                Error::Connect(why) => last = Some(Error::Connect(why)),
                fatal => return Err(fatal),
            },
            Err(_) => {
                return Err(Error::Connect(format!(
                    "{url}: no answer to a health check within {PROBE_TIMEOUT:?}"
                )));
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Connect(url.to_string())))
}

/// One gRPC health check (`grpc.health.v1.Health/Check` of the whole server) over `channel`:
/// `Ok` once the coordinator has answered at the HTTP/2 level, whatever it answered.
async fn probe(channel: &mut Channel) -> std::result::Result<(), tonic::transport::Error> {
    use tonic::codegen::Service;
    use tonic::codegen::http::{HeaderValue, Method, Request, Uri};
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
    // A gRPC message frame: not compressed, 0 bytes long (an empty HealthCheckRequest).
    let body = tonic::body::Body::new(String::from("\0\0\0\0\0"));
    let mut request = Request::new(body);
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::from_static("/grpc.health.v1.Health/Check");
    let headers = request.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("te", HeaderValue::from_static("trailers"));
    channel.call(request).await.map(drop)
}

/// Whether the failure text `why` says that the answer was not HTTP/2 at all: what a
/// plain-text client reads from a TLS server is a TLS alert record, whose first bytes, read as
/// an HTTP/2 frame header, give a frame far larger than this client allows.
fn not_http2(why: &str) -> bool {
    why.contains("frame with invalid size") || why.contains("h2 protocol error")
}

/// When the failure text `why` (an error and its causes) is a TLS failure that retrying cannot
/// mend, what the user should check: the coordinator's certificate not signed by `--tls-ca` or
/// not for the name connected to, this worker's certificate missing or refused, or one side
/// speaking TLS and the other not.
pub fn tls_problem(why: &str, tls: bool) -> Option<&'static str> {
    let has = |s: &str| why.contains(s);
    if has("invalid peer certificate") {
        Some(
            "the coordinator's certificate is not signed by --tls-ca, has expired, or is not for \
             this host name (see --tls-domain)",
        )
    } else if has("CertificateRequired") || has("peer sent no certificates") {
        Some("the coordinator requires a client certificate: give --tls-cert and --tls-key")
    } else if has("received fatal alert") && (has("Certificate") || has("UnknownCA")) {
        Some(
            "the coordinator refused this worker's certificate: it must be signed by the \
             coordinator's cluster.tls_client_ca",
        )
    } else if tls
        && (has("InvalidContentType") || has("corrupt message") || has("received corrupt"))
    {
        Some("the coordinator does not speak TLS: drop --tls-ca, or configure cluster.tls_cert")
    } else if has("received fatal alert") {
        Some("the TLS handshake failed")
    } else {
        None
    }
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
    /// Refused for good (token, protocol version, dataset, TLS certificate): stop with the
    /// message.
    Fatal,
}

/// The status's message with the failures underneath (a transport error's message alone says
/// only `transport error`).
fn with_source(s: &Status) -> String {
    match std::error::Error::source(s) {
        Some(src) => format!("{}: {}", s.message(), ecg_shared::cli::with_causes(src)),
        None => s.message().to_string(),
    }
}

/// The status's message, with the failure underneath and what to check when it is a TLS
/// failure, or when the coordinator's answer was not HTTP/2 at all (it serves TLS and this
/// worker connected in plain text).
pub fn describe(s: &Status) -> String {
    let why = with_source(s);
    if let Some(hint) = tls_problem(&why, false) {
        format!("{why} ({hint})")
    } else if not_http2(&why) {
        format!(
            "{why} (the coordinator's answer is not gRPC over HTTP/2: if it serves TLS, \
             give --tls-ca)"
        )
    } else {
        why
    }
}

/// Classifies a status.
pub fn classify(s: &Status) -> Failure {
    if tls_problem(&with_source(s), false).is_some() {
        // A certificate refused during the handshake: retrying cannot mend it.
        return Failure::Fatal;
    }
    match s.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
            Failure::Reconnect
        }
        Code::NotFound => Failure::Rejoin,
        Code::Aborted | Code::ResourceExhausted => Failure::Retry,
        _ => Failure::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_follows_tls() {
        assert_eq!(coordinator_url("h:1", false).unwrap(), "http://h:1");
        assert_eq!(coordinator_url("h:1", true).unwrap(), "https://h:1");
        assert_eq!(coordinator_url("http://h:1", true).unwrap(), "https://h:1");
        assert_eq!(coordinator_url("https://h:1", true).unwrap(), "https://h:1");
        let e = coordinator_url("https://h:1", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tls-ca"), "{e}");
    }

    #[test]
    fn tls_failures_are_told_apart_from_outages() {
        // Texts of the failures seen from rustls and hyper, as the tests in tests/security.rs
        // produce them.
        let cases = [
            (
                "transport error: invalid peer certificate: UnknownIssuer",
                true,
                Some("--tls-ca"),
            ),
            (
                "transport error: connection error: received fatal alert: CertificateRequired",
                true,
                Some("--tls-cert"),
            ),
            (
                "transport error: connection error: received fatal alert: UnknownCA",
                true,
                Some("tls_client_ca"),
            ),
            (
                "transport error: received corrupt message of type InvalidContentType",
                true,
                Some("does not speak TLS"),
            ),
            (
                "transport error: tcp connect error: Connection refused",
                true,
                None,
            ),
            (
                "transport error: connection error: stream closed because of a broken pipe",
                true,
                None,
            ),
        ];
        for (why, tls, hint) in cases {
            let got = tls_problem(why, tls);
            match hint {
                Some(h) => assert!(got.is_some_and(|g| g.contains(h)), "{why}: {got:?}"),
                None => assert_eq!(got, None, "{why}"),
            }
        }
        assert!(not_http2(
            "transport error: http2 error: connection error detected: frame with invalid size"
        ));
        assert!(!not_http2(
            "transport error: tcp connect error: Connection refused"
        ));
    }

    #[test]
    fn a_refused_certificate_is_fatal_and_described() {
        let cause = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: CertificateRequired",
        );
        let s = Status::from_error(Box::new(cause));
        assert_eq!(classify(&s), Failure::Fatal);
        assert!(describe(&s).contains("--tls-cert"), "{}", describe(&s));
        let outage = Status::unavailable("connection refused");
        assert_eq!(classify(&outage), Failure::Reconnect);
        assert_eq!(describe(&outage), "connection refused");
    }
}
