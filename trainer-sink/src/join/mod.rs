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
use std::sync::Arc;

pub use config::{JoinCli, JoinConfig};

use crate::error::Result;
use crate::health::Health;

/// Runs the joiner until `shutdown` completes (then commits and returns Ok)
/// or a fatal error stops it.
///
/// # Errors
/// Configuration (the topics), Kafka failures, a record the broker refused.
pub async fn run(config: JoinConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let metrics = Arc::new(metrics::JoinMetrics::default());
    let health = Arc::new(Health::default());
    let addr = config.metrics_addr.clone();
    let (for_loop, health_for_loop) = (metrics.clone(), health.clone());
    let work = move |stop| run::consume(config, for_loop, health_for_loop, stop);
    crate::service::run("join", addr.as_deref(), metrics, health, work, shutdown).await
}
