//! A minimal HTTP/1.1 endpoint: `GET /metrics` (Prometheus text) and
//! `GET /health` (200 "ok" while the consumer runs and both Redis and Kafka
//! are reachable; 503 with one line per failing part otherwise). Small
//! enough that a web framework would be all overhead.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub use crate::health::Health;
use crate::metrics::Metrics;

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (metrics, health) = (metrics.clone(), health.clone());
        tokio::spawn(async move {
            let _ = respond(stream, &metrics, &health).await;
        });
    }
}

async fn respond(mut stream: TcpStream, metrics: &Metrics, health: &Health) -> std::io::Result<()> {
    // Read until the end of the headers: a request may arrive in pieces.
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") && buffer.len() < 16 * 1024 {
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request headers"))??;
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(chunk.get(..read).unwrap_or_default());
    }
    let request = String::from_utf8_lossy(&buffer);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, content_type, body) = match (path, health.report()) {
        ("/metrics", _) => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        ("/health", Ok(())) => ("200 OK", "text/plain", "ok\n".to_owned()),
        ("/health", Err(problems)) => ("503 Service Unavailable", "text/plain", problems),
        _ => ("404 Not Found", "text/plain", "not found: try /metrics or /health\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_requests_that_arrive_in_pieces() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        let health = Arc::new(Health::default());
        health.set_running(true);
        let server = tokio::spawn(serve(listener, metrics, health));
        for (path, status) in [("/metrics", "200 OK"), ("/health", "200 OK"), ("/nope", "404 Not Found")] {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"GET ").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            stream.write_all(format!("{path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            assert!(response.starts_with(&format!("HTTP/1.1 {status}")), "{path}: {response}");
        }
        server.abort();
    }
}
