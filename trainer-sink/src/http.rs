//! `GET /metrics` (Prometheus text) and `GET /health` (200 "ok" while the
//! consumer runs and both Redis and Kafka are reachable; 503 with one line
//! per failing part otherwise); 404 elsewhere.
//!
//! Served by axum (HTTP/1 on hyper): parsing, partial reads and keep-alive
//! are the library's, and so is the accept loop, which retries a lasting
//! accept error (EMFILE) once a second with an error in the log instead of
//! spinning on it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::health::Health;
use crate::metrics::Render;

/// The Prometheus text format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

#[derive(Debug, Clone)]
struct Shared {
    metrics: Arc<dyn Render>,
    health: Arc<Health>,
}

/// The endpoint's routes.
pub fn router(metrics: Arc<dyn Render>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(health_report))
        .fallback(not_found)
        .with_state(Shared { metrics, health })
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<dyn Render>, health: Arc<Health>) {
    // axum's serve only returns on a shutdown signal, which is not set here;
    // were that to change, the error must not pass silently.
    if let Err(e) = axum::serve(listener, router(metrics, health)).await {
        tracing::error!(error = %e, "the /metrics and /health endpoint stopped");
    }
}

async fn metrics_text(State(shared): State<Shared>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], shared.metrics.render())
}

async fn health_report(State(shared): State<Shared>) -> (StatusCode, String) {
    match shared.health.report() {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(problems) => (StatusCode::SERVICE_UNAVAILABLE, problems),
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found: try /metrics or /health\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::metrics::Metrics;

    /// A running endpoint on a free loopback port.
    async fn start(metrics: Arc<Metrics>, health: Arc<Health>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, metrics, health));
        addr
    }

    /// Sends a request in `pieces`, each its own write (and so, with the
    /// pause between them, its own TCP segment), and returns the status
    /// line, the headers (lower-cased) and the body.
    async fn request(addr: SocketAddr, pieces: &[&str]) -> (String, String, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            stream.write_all(piece.as_bytes()).await.unwrap();
        }
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await.unwrap().unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let (status, headers) = head.split_once("\r\n").unwrap();
        (status.to_owned(), headers.to_lowercase(), body.to_owned())
    }

    async fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
        request(addr, &[&format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")]).await
    }

    #[tokio::test]
    async fn serves_metrics_as_prometheus_text() {
        let metrics = Arc::new(Metrics::default());
        metrics.event_folded();
        let addr = start(metrics, Arc::new(Health::default())).await;
        let (status, headers, body) = get(addr, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(headers.lines().any(|line| line == "content-type: text/plain; version=0.0.4"), "{headers}");
        assert!(body.contains("\nbandit_sink_events_folded_total 1\n"), "{body}");
    }

    #[tokio::test]
    async fn health_is_ok_or_names_each_failing_part() {
        let health = Arc::new(Health::default());
        let addr = start(Arc::new(Metrics::default()), health.clone()).await;
        let (status, _, body) = get(addr, "/health").await;
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 503 Service Unavailable", "consumer: not running (starting, stopping or failed)\n"));
        health.set_running(true);
        let (status, _, body) = get(addr, "/health").await;
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "ok\n"));
        health.redis_failed("connection refused");
        health.kafka_failed("all brokers down");
        let (status, _, body) = get(addr, "/health").await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(body, "redis: unreachable: connection refused\nkafka: unreachable: all brokers down\n");
    }

    #[tokio::test]
    async fn other_paths_are_not_found() {
        let addr = start(Arc::new(Metrics::default()), Arc::new(Health::default())).await;
        for path in ["/", "/nope", "/metrics/x", "/healthz"] {
            let (status, _, body) = get(addr, path).await;
            assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 404 Not Found", "not found: try /metrics or /health\n"), "{path}");
        }
    }

    #[tokio::test]
    async fn answers_requests_that_arrive_in_pieces() {
        let health = Arc::new(Health::default());
        health.set_running(true);
        let addr = start(Arc::new(Metrics::default()), health).await;
        for (path, status) in [("/metrics", "HTTP/1.1 200 OK"), ("/health", "HTTP/1.1 200 OK"), ("/nope", "HTTP/1.1 404 Not Found")] {
            let rest = format!("{path} HTTP/1.1\r\nHo");
            let (got, _, _) = request(addr, &["GET ", &rest, "st: x\r\nConnection: close\r\n", "\r\n"]).await;
            assert_eq!(got, status, "{path}");
        }
    }
}
