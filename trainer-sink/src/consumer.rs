//! The Kafka side: the consumer loop, the rebalance protocol and the
//! dead-letter producer. Runs on one dedicated thread: rebalance callbacks
//! fire inside `poll` on that same thread, so a revoke can flush and commit
//! synchronously before the partitions are given up.
//!
//! Offsets are stored only after the write downstream succeeded: the model's
//! offsets are the truth, and Kafka's committed offsets follow them after
//! each successful BANDIT.LOAD (so lag tools stay right).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;

use crate::config::{Config, Tolerance};
use crate::engine::{Engine, EngineSettings, Verdict};
use crate::error::{Result, SinkError};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::store::ModelStore;

const REDIS_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a revoke or shutdown keeps retrying its final flush.
const FINAL_FLUSH_DEADLINE: Duration = Duration::from_secs(10);

/// Capped exponential back-off.
#[derive(Debug)]
struct Backoff {
    current: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { current: Duration::from_millis(100) }
    }
    fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(MAX_BACKOFF);
        delay
    }
    fn reset(&mut self) {
        self.current = Duration::from_millis(100);
    }
}

/// Callbacks librdkafka runs on the consumer thread.
struct SinkContext {
    topic: String,
    engine: Arc<Mutex<Engine>>,
    metrics: Arc<Metrics>,
    /// The dead-letter queue (errors.tolerance = all).
    dlq: Option<DeadLetterQueue>,
    /// A fatal error raised inside a callback, for the loop to return.
    failure: Mutex<Option<SinkError>>,
}

impl SinkContext {
    fn engine(&self) -> MutexGuard<'_, Engine> {
        // A poisoned lock means a panic mid-update; the state may be torn,
        // but the model's offsets stay the truth, so go on and let the
        // restore logic reconcile.
        self.engine.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fail(&self, error: SinkError) {
        if let Ok(mut slot) = self.failure.lock() {
            slot.get_or_insert(error);
        }
    }

    fn take_failure(&self) -> Option<SinkError> {
        self.failure.lock().ok().and_then(|mut slot| slot.take())
    }

    fn partitions_in(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements_for_topic(&self.topic).iter().map(|element| element.partition()).collect()
    }

    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let partitions = self.partitions_in(tpl);
        let deadline = Instant::now() + FINAL_FLUSH_DEADLINE * 3;
        let mut backoff = Backoff::new();
        let starts = loop {
            match self.engine().assign(&partitions) {
                Ok(starts) => break Some(starts),
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "cannot read the model's offsets for the new partitions; retrying");
                    std::thread::sleep(backoff.next_delay());
                }
                Err(e) => {
                    self.fail(e);
                    break None;
                }
            }
        };
        for (partition, start) in starts.unwrap_or_default() {
            let offset = start.map_or(Offset::Beginning, Offset::Offset);
            if let Err(e) = tpl.set_partition_offset(&self.topic, partition, offset) {
                self.fail(e.into());
            }
            tracing::info!(partition, offset = ?offset, "partition assigned; resuming from the model's offset");
        }
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(e) = result {
            self.fail(e.into());
        }
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let partitions = self.partitions_in(tpl);
        if consumer.assignment_lost() {
            tracing::warn!(?partitions, "assignment lost: dropping state without flushing (the new owner restarts from the model)");
        } else if let Err(e) = flush_with_deadline(self, consumer, CommitMode::Sync) {
            tracing::warn!(error = %e, ?partitions, "could not flush before giving partitions up; the new owner re-reads from the model's offsets");
        }
        self.engine().revoke(&partitions);
        tracing::info!(?partitions, "partitions revoked");
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(e) = result {
            self.fail(e.into());
        }
    }
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(target: "librdkafka", facility, "{message}"),
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        if let Some(topic) = statistics.topics.get(&self.topic) {
            let lag = topic
                .partitions
                .iter()
                .filter(|(&partition, stats)| partition >= 0 && stats.consumer_lag >= 0)
                .map(|(&partition, stats)| (partition, stats.consumer_lag))
                .collect();
            self.metrics.set_lag(lag);
        }
    }
}

impl ConsumerContext for SinkContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.on_assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.on_revoke(consumer, tpl),
            other => {
                tracing::error!(error = ?other, "rebalance error; dropping the assignment");
                let partitions = self.partitions_in(tpl);
                self.engine().revoke(&partitions);
                let _ = consumer.unassign();
            }
        }
    }
}

/// Delivery bookkeeping of the dead-letter producer.
#[derive(Debug, Default)]
struct DeadLetters {
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

struct DeadLetterContext(Arc<DeadLetters>);

impl ClientContext for DeadLetterContext {}

impl ProducerContext for DeadLetterContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((error, _)) = result {
            self.0.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut slot) = self.0.last_error.lock() {
                *slot = Some(error.to_string());
            }
        }
    }
}

/// The dead-letter producer and its topic.
struct DeadLetterQueue {
    producer: BaseProducer<DeadLetterContext>,
    topic: String,
    state: Arc<DeadLetters>,
}

impl DeadLetterQueue {
    /// Queues an invalid record with Kafka Connect's error headers.
    fn send(&self, source_topic: &str, message: &BorrowedMessage<'_>, reason: &str) -> Result<()> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "__connect.errors.topic", value: Some(source_topic) })
            .insert(Header { key: "__connect.errors.partition", value: Some(partition.as_str()) })
            .insert(Header { key: "__connect.errors.offset", value: Some(offset.as_str()) })
            .insert(Header { key: "__connect.errors.exception.class.name", value: Some("bandit.InvalidEvent") })
            .insert(Header { key: "__connect.errors.exception.message", value: Some(reason) });
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    self.producer.poll(Duration::from_millis(100));
                }
                Err((e, _)) => return Err(SinkError::DeadLetter(e.to_string())),
            }
        }
    }

    /// Waits for every queued dead letter; fails if any was not delivered.
    fn flush(&self) -> Result<()> {
        self.producer.flush(Duration::from_secs(30)).map_err(|e| SinkError::DeadLetter(e.to_string()))?;
        if self.state.failed.load(Ordering::Relaxed) > 0 {
            let last = self.state.last_error.lock().ok().and_then(|slot| slot.clone()).unwrap_or_default();
            return Err(SinkError::DeadLetter(format!("an invalid event could not be dead-lettered: {last}")));
        }
        Ok(())
    }
}

/// Publishes the dirty arms and commits the offsets now in the model.
fn flush_and_commit(context: &SinkContext, consumer: &BaseConsumer<SinkContext>, mode: CommitMode) -> Result<()> {
    // Dead letters must exist before the model claims their offsets.
    if let Some(dlq) = &context.dlq {
        dlq.flush()?;
    }
    let flushed = context.engine().flush()?;
    for &(partition, offset) in &flushed.resets {
        seek(consumer, &context.topic, partition, offset);
    }
    if !flushed.offsets.is_empty() {
        tracing::debug!(arms = flushed.arms, offsets = ?flushed.offsets, "published");
        let mut tpl = TopicPartitionList::new();
        for &(partition, offset) in &flushed.offsets {
            tpl.add_partition_offset(&context.topic, partition, Offset::Offset(offset))?;
        }
        // The model already holds these offsets; a failed commit only delays lag reporting.
        if let Err(e) = consumer.commit(&tpl, mode) {
            tracing::warn!(error = %e, "offset commit failed (the model's offsets remain the truth)");
        }
    }
    Ok(())
}

fn flush_with_deadline(context: &SinkContext, consumer: &BaseConsumer<SinkContext>, mode: CommitMode) -> Result<()> {
    let deadline = Instant::now() + FINAL_FLUSH_DEADLINE;
    let mut backoff = Backoff::new();
    loop {
        match flush_and_commit(context, consumer, mode) {
            Ok(()) => return Ok(()),
            Err(SinkError::Redis(e)) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "flush failed; retrying");
                std::thread::sleep(backoff.next_delay());
            }
            Err(e) => return Err(e),
        }
    }
}

fn seek(consumer: &BaseConsumer<SinkContext>, topic: &str, partition: i32, offset: i64) {
    for _ in 0..50 {
        match consumer.seek(topic, partition, Offset::Offset(offset), Duration::from_secs(5)) {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(error = %e, partition, offset, "seek not possible yet; retrying");
                consumer.poll(Duration::from_millis(100));
            }
        }
    }
    tracing::warn!(partition, offset, "could not seek; events already in the model will be skipped");
}

/// Consumer-only librdkafka properties, kept away from the dead-letter
/// producer (which would warn about each).
fn is_consumer_property(key: &str) -> bool {
    key.starts_with("fetch.")
        || key.starts_with("group.")
        || key.starts_with("auto.")
        || matches!(
            key,
            "session.timeout.ms" | "heartbeat.interval.ms" | "max.poll.interval.ms" | "partition.assignment.strategy"
                | "isolation.level" | "enable.partition.eof" | "queued.min.messages" | "queued.max.messages.kbytes"
                | "check.crcs" | "coordinator.query.interval.ms"
        )
}

fn client_config(config: &Config, consumer: bool) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    if consumer {
        client.set("statistics.interval.ms", "5000");
        // Freshness is the point: do not let an idle fetch sit for librdkafka's
        // default 500 ms before new events are seen.
        client.set("fetch.wait.max.ms", "100");
    }
    for (key, value) in &config.kafka {
        if consumer || !is_consumer_property(key) {
            client.set(key, value);
        }
    }
    client
}

/// Connects to Redis and makes sure the model exists with our settings,
/// retrying while Redis is unreachable.
fn open_store(config: &Config, stop: &AtomicBool) -> Result<ModelStore> {
    let mut store = ModelStore::new(&config.redis_url, &config.model_key, REDIS_TIMEOUT)?;
    let mut backoff = Backoff::new();
    loop {
        match store.ensure_model(config.dim, config.alpha, config.lambda) {
            Ok(()) => return Ok(store),
            Err(SinkError::Redis(e)) if !stop.load(Ordering::Relaxed) => {
                tracing::warn!(error = %e, "Redis is not reachable yet; retrying");
                std::thread::sleep(backoff.next_delay());
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs the sink until `stop` is set (then flushes, commits and returns Ok)
/// or a fatal error occurs.
pub fn consume(config: Config, metrics: Arc<Metrics>, health: Arc<Health>, stop: Arc<AtomicBool>) -> Result<()> {
    let store = open_store(&config, &stop)?;
    let engine = Engine::new(EngineSettings { dim: config.dim, lambda: config.lambda }, store, metrics.clone());
    let dlq = match &config.dead_letter_topic {
        Some(topic) if config.errors_tolerance == Tolerance::All => {
            let state = Arc::new(DeadLetters::default());
            let producer: BaseProducer<DeadLetterContext> = client_config(&config, false)
                .set("enable.idempotence", "true")
                .create_with_context(DeadLetterContext(state.clone()))?;
            Some(DeadLetterQueue { producer, topic: topic.clone(), state })
        }
        _ => None,
    };
    let context = SinkContext {
        topic: config.topic.clone(),
        engine: Arc::new(Mutex::new(engine)),
        metrics: metrics.clone(),
        dlq,
        failure: Mutex::new(None),
    };
    let consumer: BaseConsumer<SinkContext> = client_config(&config, true)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set_log_level(RDKafkaLogLevel::Warning)
        .create_with_context(context)?;
    consumer.subscribe(&[&config.topic])?;
    tracing::info!(topic = %config.topic, group = %config.group_id, model = %config.model_key, "consuming");
    health.healthy.store(true, Ordering::Relaxed);

    let result = run_loop(&config, &consumer, &metrics, &health, &stop);
    health.healthy.store(false, Ordering::Relaxed);
    let context = consumer.context();
    match result {
        Ok(()) => {
            // Graceful stop: publish everything, commit synchronously.
            flush_with_deadline(context, &consumer, CommitMode::Sync)?;
            consumer.unsubscribe();
            tracing::info!("stopped after a final flush");
            Ok(())
        }
        Err(e @ SinkError::InvalidEvent { .. }) => {
            // Publish what came before the bad event, then stop in front of it.
            if let Err(flush_error) = flush_with_deadline(context, &consumer, CommitMode::Sync) {
                tracing::error!(error = %flush_error, "final flush failed");
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

fn run_loop(
    config: &Config,
    consumer: &BaseConsumer<SinkContext>,
    metrics: &Metrics,
    health: &Health,
    stop: &AtomicBool,
) -> Result<()> {
    let context = consumer.context();
    let dlq = context.dlq.as_ref();
    let interval = Duration::from_millis(config.flush_interval_ms);
    let mut next_flush = Instant::now() + interval;
    let mut retry_at = Instant::now();
    let mut backoff = Backoff::new();
    let mut paused = false;
    while !stop.load(Ordering::Relaxed) {
        if let Some(error) = context.take_failure() {
            return Err(error);
        }
        let wait = next_flush.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
        match consumer.poll(wait) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            Some(Ok(message)) => handle(config, consumer, &message, stop)?,
        }
        if let Some(dlq) = dlq {
            dlq.producer.poll(Duration::ZERO);
        }
        let now = Instant::now();
        let due = now >= next_flush || context.engine().dirty_arms() >= config.max_dirty_arms;
        if due && now >= retry_at {
            match flush_and_commit(context, consumer, CommitMode::Async) {
                Ok(()) => {
                    next_flush = now + interval;
                    backoff.reset();
                    health.healthy.store(true, Ordering::Relaxed);
                    if paused {
                        consumer.resume(&consumer.assignment()?)?;
                        paused = false;
                        Metrics::set(&metrics.paused, 0);
                        tracing::info!("publishing works again: consumption resumed");
                    }
                }
                Err(SinkError::Redis(e)) => {
                    let delay = backoff.next_delay();
                    retry_at = now + delay;
                    health.healthy.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot publish to Redis; state kept, retrying");
                }
                Err(e) => return Err(e),
            }
        }
        if !paused && context.engine().unflushed() >= config.max_unflushed_events {
            consumer.pause(&consumer.assignment()?)?;
            paused = true;
            Metrics::set(&metrics.paused, 1);
            tracing::warn!(limit = config.max_unflushed_events, "too many unpublished events: consumption paused until Redis accepts a flush");
        }
    }
    Ok(())
}

fn handle(
    config: &Config,
    consumer: &BaseConsumer<SinkContext>,
    message: &BorrowedMessage<'_>,
    stop: &AtomicBool,
) -> Result<()> {
    let context = consumer.context();
    if message.topic() != config.topic {
        return Ok(());
    }
    let (partition, offset) = (message.partition(), message.offset());
    let mut backoff = Backoff::new();
    let verdict = loop {
        match context.engine().handle(partition, offset, message.payload()) {
            Ok(verdict) => break verdict,
            // Restoring the arm needs Redis: wait for it, the record is not lost.
            Err(SinkError::Redis(e)) if !stop.load(Ordering::Relaxed) => {
                tracing::warn!(error = %e, "cannot restore an arm from Redis; retrying");
                std::thread::sleep(backoff.next_delay());
            }
            Err(e) => return Err(e),
        }
    };
    match verdict {
        Verdict::Folded | Verdict::Skipped => Ok(()),
        Verdict::Reset { partition, offset } => {
            seek(consumer, &config.topic, partition, offset);
            Ok(())
        }
        Verdict::Rejected(reason) => match &context.dlq {
            Some(dlq) => {
                dlq.send(&config.topic, message, &reason)?;
                context.engine().advance(partition, offset);
                Metrics::inc(&context.metrics.events_dead_lettered);
                tracing::debug!(partition, offset, %reason, "dead-lettered");
                Ok(())
            }
            None => Err(SinkError::InvalidEvent { topic: config.topic.clone(), partition, offset, reason }),
        },
    }
}
