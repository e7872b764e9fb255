//! `bandit-sink`: a Kafka Connect-style sink that trains disjoint LinUCB.
//!
//! It consumes feedback events, folds each into its product's arm
//! (A += xxᵀ, b += r·x), and every flush interval inverts the changed arms
//! and publishes them, with the next offset of every partition folded, in one
//! atomic `BANDIT.LOAD`. The offsets inside the model are the truth, which
//! makes delivery exactly once across crashes and rebalances.
//!
//! Layout:
//! - [`config`]: settings from TOML, environment and flags, validated;
//!   [`layering`]: the layering itself, which bandit-join's settings share.
//! - [`engine`]: partitions, arms, restore, flush: the state machine.
//! - [`store`]: the model in Redis (CREATE, EXPORT, LOAD).
//! - [`format`]: a record's bytes into an event (JSON, or Avro with
//!   writer schemas from a Schema Registry or a directory).
//! - [`consumer`]: the Kafka loop; [`context`]: its librdkafka callbacks
//!   (rebalances, statistics, errors); [`dead_letter`]: the DLQ producer;
//!   [`kafka_config`]: librdkafka properties; [`backoff`]: retry delays.
//! - [`metrics`], [`http`], [`health`]: Prometheus text on /metrics, and
//!   /health (consumer, Redis and Kafka).
//! - [`error`]: this crate's error type, transient vs permanent failures.
//! - [`service`]: what both binaries share around their Kafka loops (the
//!   HTTP endpoints, the stop flag, `main`'s exit codes, logs and signals).
//!
//! - [`join`]: `bandit-join`, the learning loop's join of decisions and
//!   rewards into feedback events (its own binary, this library's parts).
//!
//! [`run`] is the whole service, for the binary and for in-process tests.

pub mod backoff;
pub mod config;
pub mod consumer;
pub mod context;
pub mod dead_letter;
pub mod engine;
pub mod error;
pub mod format;
pub mod health;
pub mod http;
pub mod join;
pub mod kafka_config;
pub mod layering;
pub mod metrics;
pub mod service;
pub mod store;

use std::future::Future;
use std::sync::Arc;

pub use config::{Cli, Config, Tolerance};
pub use error::{Result, SinkError};

/// Runs the sink until `shutdown` completes (then flushes, commits and
/// returns Ok) or a fatal error stops it.
///
/// # Errors
/// Configuration, a permanent Redis refusal, model mismatch, an invalid
/// event with errors.tolerance=none, or a dead letter that could not be
/// delivered.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let metrics = Arc::new(metrics::Metrics::default());
    let health = Arc::new(health::Health::default());
    let addr = config.metrics_addr.clone();
    let (for_loop, health_for_loop) = (metrics.clone(), health.clone());
    let work = move |stop| consumer::consume(config, for_loop, health_for_loop, stop);
    service::run("consumer", addr.as_deref(), metrics, health, work, shutdown).await
}
