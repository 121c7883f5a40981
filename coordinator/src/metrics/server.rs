//! The HTTP side of the metrics: [`serve_metrics`] answers `GET /metrics` with the registry's
//! exposition text and 404 everywhere else, until its shutdown future completes.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use super::Metrics;

/// Content type of the Prometheus text exposition format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`: the current document.
async fn metrics_page(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render())
}

/// Any other path.
async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found\n",
    )
}

/// Serves `metrics` on `listener` until `shutdown` completes, then lets open requests finish.
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics endpoint listening");
    }
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .fallback(not_found)
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::net::TcpStream;

    use super::*;

    /// Sends one HTTP/1.1 request over a plain socket and returns the whole response.
    async fn raw_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let mut rest = request.as_bytes();
        while !rest.is_empty() {
            stream.writable().await?;
            match stream.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            stream.readable().await?;
            match stream.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        String::from_utf8(response).map_err(std::io::Error::other)
    }

    /// The value of header `name` (case-insensitive) in a raw response.
    fn header_value<'a>(response: &'a str, name: &str) -> Option<&'a str> {
        let head = response.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[tokio::test]
    async fn serves_metrics_and_404_elsewhere() -> anyhow::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let metrics = Metrics::new();
        metrics.set_workers(3);
        metrics.rejected("bad_token");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_metrics(listener, Arc::clone(&metrics), async {
            let _ = stopped.await;
        }));

        let guard = Duration::from_secs(30);
        let page = tokio::time::timeout(guard, raw_get(addr, "/metrics")).await??;
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert_eq!(header_value(&page, "content-type"), Some(CONTENT_TYPE));
        let body = page
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        assert!(body.lines().any(|l| l == "ecg_workers 3"), "{body}");
        assert!(
            body.lines()
                .any(|l| l == "ecg_rejected_total{reason=\"bad_token\"} 1"),
            "{body}"
        );

        // The document is rendered per request, not once.
        metrics.set_workers(5);
        let again = tokio::time::timeout(guard, raw_get(addr, "/metrics")).await??;
        assert!(again.lines().any(|l| l == "ecg_workers 5"), "{again}");

        let other = tokio::time::timeout(guard, raw_get(addr, "/other")).await??;
        assert!(other.starts_with("HTTP/1.1 404 Not Found\r\n"), "{other}");
        assert!(!other.contains("ecg_"), "{other}");

        let _ = stop.send(());
        tokio::time::timeout(guard, server).await???;
        Ok(())
    }
}
