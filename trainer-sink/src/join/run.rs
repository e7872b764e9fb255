//! The joiner's Kafka loop, on one dedicated thread (rebalance callbacks
//! run inside `poll` on it): start-up checks, the group subscription with
//! the range assignor, and poll / tick / commit until told to stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;

use crate::error::{Result, SinkError};
use crate::health::Health;
use crate::join::config::JoinConfig;
use crate::join::context::JoinContext;
use crate::join::metrics::JoinMetrics;
use crate::kafka_config::{builtin_features, client_config};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the clock is given to the joiners.
const TICK: Duration = Duration::from_millis(100);

/// The partition count of each topic the join needs, refusing what would
/// break it: decisions and rewards not co-partitioned, too few state
/// partitions for one checkpoint per pair, a missing topic.
fn check_topics(consumer: &BaseConsumer<JoinContext>, config: &JoinConfig) -> Result<i32> {
    let count = |topic: &str| -> Result<i32> {
        let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map_or(0, |t| i32::try_from(t.partitions().len()).unwrap_or(i32::MAX));
        if partitions == 0 {
            return Err(SinkError::Config(format!("topic {topic} does not exist (create it first)")));
        }
        Ok(partitions)
    };
    let decisions = count(&config.decisions_topic)?;
    let rewards = count(&config.rewards_topic)?;
    if decisions != rewards {
        return Err(SinkError::Config(format!(
            "{} has {decisions} partitions and {} has {rewards}: the join needs them co-partitioned (the same count, both keyed by event id)",
            config.decisions_topic, config.rewards_topic
        )));
    }
    let state = count(&config.state_topic)?;
    if state < decisions {
        return Err(SinkError::Config(format!(
            "{} has {state} partitions, fewer than the {decisions} of {}: it needs one per partition pair",
            config.state_topic, config.decisions_topic
        )));
    }
    count(&config.feedback_topic)?;
    count(&config.dead_letter_topic)?;
    Ok(decisions)
}

/// Runs the joiner until `stop` is set (then commits and returns Ok) or a
/// fatal error occurs.
///
/// # Errors
/// Configuration (topics), Kafka failures, a record the broker refused.
pub fn consume(config: JoinConfig, metrics: Arc<JoinMetrics>, health: Arc<Health>, stop: Arc<AtomicBool>) -> Result<()> {
    let (version, features) = builtin_features()?;
    tracing::info!(version = %version, builtin_features = %features, "librdkafka");
    let kafka = config.kafka_part();
    let (group, topics) = (config.group_id.clone(), [config.decisions_topic.clone(), config.rewards_topic.clone()]);
    let interval = Duration::from_millis(config.commit_interval_ms);
    let context = JoinContext::new(config.clone(), metrics, health.clone())?;
    let consumer: BaseConsumer<JoinContext> = client_config(&kafka, true)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Partition p of both topics to the same member.
        .set("partition.assignment.strategy", "range")
        .set_log_level(RDKafkaLogLevel::Warning)
        .create_with_context(context)?;
    let partitions = check_topics(&consumer, &config)?;
    consumer.subscribe(&[&topics[0], &topics[1]])?;
    tracing::info!(decisions = %topics[0], rewards = %topics[1], partitions, group = %group, "joining");
    health.set_running(true);
    let context = consumer.context();
    let result = run_loop(&consumer, context, interval, &stop);
    health.set_running(false);
    match result {
        Ok(()) => {
            context.commit_with_deadline(&consumer)?;
            consumer.unsubscribe();
            tracing::info!("stopped after a final commit");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn run_loop(consumer: &BaseConsumer<JoinContext>, context: &JoinContext, interval: Duration, stop: &AtomicBool) -> Result<()> {
    let mut next_tick = Instant::now();
    let mut next_commit = Instant::now() + interval;
    while !stop.load(Ordering::Relaxed) {
        if let Some(error) = context.take_failure() {
            return Err(error);
        }
        match consumer.poll(Duration::from_millis(50)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            Some(Ok(message)) => {
                context.health.kafka_ok();
                context.receive(&message)?;
            }
        }
        context.output.poll();
        context.dlq.poll();
        let now = Instant::now();
        if now >= next_tick {
            context.tick(consumer)?;
            next_tick = now + TICK;
        }
        if now >= next_commit {
            context.commit(consumer, CommitMode::Async)?;
            next_commit = Instant::now() + interval;
        }
    }
    Ok(())
}
