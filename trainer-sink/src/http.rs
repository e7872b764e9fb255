//! A minimal HTTP/1.1 endpoint: `GET /metrics` (Prometheus text) and
//! `GET /health` (200 while the consumer runs and flushes succeed). Small
//! enough that a web framework would be all overhead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// Shared health flag, cleared when the consumer stops or cannot flush.
#[derive(Debug, Default)]
pub struct Health {
    pub healthy: AtomicBool,
}

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
    let mut buffer = [0u8; 1024];
    let read = stream.read(&mut buffer).await?;
    let request = String::from_utf8_lossy(buffer.get(..read).unwrap_or_default());
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let (status, content_type, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        "/health" if health.healthy.load(Ordering::Relaxed) => ("200 OK", "text/plain", "ok\n".to_owned()),
        "/health" => ("503 Service Unavailable", "text/plain", "unhealthy\n".to_owned()),
        _ => ("404 Not Found", "text/plain", "not found: try /metrics or /health\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
