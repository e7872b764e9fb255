//! `bandit-join`: the learning loop's join, a binary of its own beside
//! `bandit-sink` in this crate.
//!
//! It consumes the `decisions` and `rewards` topics (co-partitioned, keyed
//! by event id), keeps one core [`bandit_core::join::Joiner`] per partition
//! pair, and produces each closed decision's examples as feedback events,
//! keyed by product id, to the topic the trainer reads. Why its own binary:
//! it scales with the decisions/rewards partitions (not the feedback
//! topic's), never touches Redis, and restarts without the trainer; it
//! shares the sink's Kafka configuration, dead-letter producer, metrics
//! exposition and health endpoint as one library.
//!
//! Exactly once without transactions (tansu 0.6 has none): a joiner
//! restarted from its last checkpoint emits again what it emitted after it,
//! with the same [`bandit_core::event::Source`] (decisions partition,
//! sequence number), and the trainer folds each sequence number once: the
//! first emission counts. The examples are the same except where a decision
//! closed by the clock missed a reward a replay sees (see
//! [`bandit_core::join`]). A checkpoint is written only after every example
//! before it was acknowledged, and the output never skips a record
//! ([`output::Output::new`]).
//!
//! Layout:
//! - [`config`]: settings from TOML, environment and flags, validated.
//! - [`run`]: start-up checks and the Kafka loop; [`context`]: the pairs and
//!   the rebalance callbacks; [`work`]: records in, examples out, commits.
//! - [`output`]: the idempotent producer; [`checkpoint`]: positions in the
//!   state topic (and the offset commit's metadata).
//! - [`metrics`]: the joiner's Prometheus metrics.

pub mod checkpoint;
pub mod config;
pub mod context;
pub mod metrics;
pub mod output;
pub mod run;
pub mod work;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use config::{JoinCli, JoinConfig};

use crate::error::{Result, SinkError};
use crate::health::Health;

/// Runs the joiner until `shutdown` completes (then commits and returns Ok)
/// or a fatal error stops it.
///
/// # Errors
/// Configuration (the topics), Kafka failures, a record the broker refused.
pub async fn run(config: JoinConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let metrics = Arc::new(metrics::JoinMetrics::default());
    let health = Arc::new(Health::default());
    let server = match &config.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| SinkError::Config(format!("metrics_addr {addr}: {e}")))?;
            tracing::info!(addr = %listener.local_addr()?, "serving /metrics and /health");
            Some(tokio::spawn(crate::http::serve(listener, metrics.clone(), health.clone())))
        }
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut worker = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || run::consume(config, metrics, health, stop))
    };
    let joined = tokio::select! {
        joined = &mut worker => joined,
        () = shutdown => {
            tracing::info!("shutting down: final commit");
            stop.store(true, Ordering::Relaxed);
            (&mut worker).await
        }
    };
    if let Some(server) = server {
        server.abort();
    }
    joined.map_err(|e| SinkError::Io(std::io::Error::other(format!("join thread failed: {e}"))))?
}
