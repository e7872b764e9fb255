//! The Kafka loop. Runs on one dedicated thread: rebalance callbacks fire
//! inside `poll` on that same thread (see [`crate::context`]), so a revoke
//! can flush and commit synchronously before the partitions are given up.
//!
//! Offsets are stored only after the write downstream succeeded: the model's
//! offsets are the truth, and Kafka's committed offsets follow them after
//! each successful BANDIT.LOAD (so lag tools stay right).
//!
//! The loop never blocks on Redis: a record whose arm cannot be restored
//! while Redis is unavailable is held and its partition paused, and flushes
//! are retried with back-off, while `poll` keeps the group membership alive.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use bandit_core::fold::Learning;
use bandit_core::ModelSettings;

use crate::backoff::Backoff;
use crate::config::{Config, Tolerance};
use crate::context::{lock, SinkContext};
use crate::dead_letter::{DeadLetterQueue, Rejection};
use crate::engine::{Engine, EngineSettings, Flushed, Verdict};
use crate::error::{Result, SinkError};
use crate::health::Health;
use crate::format::Decoder;
use crate::kafka_config::{builtin_features, client_config};
use crate::metrics::Metrics;
use crate::store::ModelStore;

const REDIS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a revoke or shutdown keeps retrying its final flush.
const FINAL_FLUSH_DEADLINE: Duration = Duration::from_secs(10);

/// Publishes the dirty arms and commits the offsets now in the model.
fn flush_and_commit(context: &SinkContext, consumer: &BaseConsumer<SinkContext>, mode: CommitMode) -> Result<Flushed> {
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
    Ok(flushed)
}

/// A flush that waits (up to a deadline) for Redis to come back: for a
/// revoke and for shutdown, which must not give state up lightly.
///
/// # Errors
/// A permanent error, or a transient one past the deadline.
pub fn flush_with_deadline(context: &SinkContext, consumer: &BaseConsumer<SinkContext>, mode: CommitMode) -> Result<()> {
    let deadline = Instant::now() + FINAL_FLUSH_DEADLINE;
    let mut backoff = Backoff::default();
    loop {
        match flush_and_commit(context, consumer, mode) {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tracing::warn!(error = %e, "flush failed; retrying");
                std::thread::sleep(backoff.next_delay());
            }
            Err(e) => return Err(e),
        }
    }
}

/// Moves a partition's position. Sleeps, never polls, between attempts: a
/// poll here would hand out a record that nobody handles.
fn seek(consumer: &BaseConsumer<SinkContext>, topic: &str, partition: i32, offset: i64) {
    for _ in 0..50 {
        match consumer.seek(topic, partition, Offset::Offset(offset), Duration::from_secs(5)) {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(error = %e, partition, offset, "seek not possible yet; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    tracing::warn!(partition, offset, "could not seek; events already in the model will be skipped");
}

/// Connects to Redis and makes sure the model exists with our settings,
/// waiting while Redis is unavailable and failing at once on a refusal.
fn open_store(config: &Config, health: &Arc<Health>, metrics: &Arc<Metrics>, stop: &AtomicBool) -> Result<ModelStore> {
    let mut store = ModelStore::new(config, REDIS_TIMEOUT, health.clone(), metrics.clone())?;
    let settings = ModelSettings { dim: config.dim, alpha: config.alpha, lambda: config.lambda, decay: config.decay };
    let mut backoff = Backoff::default();
    loop {
        match store.ensure_model(settings) {
            Ok(()) => return Ok(store),
            Err(e) if e.is_transient() && !stop.load(Ordering::Relaxed) => {
                tracing::warn!(error = %e, "Redis is not reachable yet; retrying");
                std::thread::sleep(backoff.next_delay());
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs the sink until `stop` is set (then flushes, commits and returns Ok)
/// or a fatal error occurs.
///
/// # Errors
/// A permanent Redis refusal, a model mismatch, an invalid event with
/// errors.tolerance=none, an undeliverable dead letter, a Kafka failure.
pub fn consume(config: Config, metrics: Arc<Metrics>, health: Arc<Health>, stop: Arc<AtomicBool>) -> Result<()> {
    // First, so that it is in the log even while Redis is not reachable.
    let (version, features) = builtin_features()?;
    tracing::info!(version = %version, builtin_features = %features, format = ?config.format, "librdkafka");
    let store = open_store(&config, &health, &metrics, &stop)?;
    let learning = Learning { lambda: config.lambda, decay: config.decay };
    let engine = Engine::new(EngineSettings { dim: config.dim, learning, part_bytes: config.load_part_bytes }, store, metrics.clone());
    let dlq = match &config.dead_letter_topic {
        Some(topic) if config.errors_tolerance == Tolerance::All => Some(DeadLetterQueue::new(&config, topic)?),
        _ => None,
    };
    let decoder = Decoder::new(&config)?;
    let context = SinkContext::new(&config.topic, engine, metrics.clone(), health.clone(), dlq, decoder);
    let consumer: BaseConsumer<SinkContext> = client_config(&config, true)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set_log_level(RDKafkaLogLevel::Warning)
        .create_with_context(context)?;
    consumer.subscribe(&[&config.topic])?;
    tracing::info!(topic = %config.topic, group = %config.group_id, model = %config.model_key, "consuming");
    health.set_running(true);

    let result = Loop::new(&config, &consumer).run(&stop);
    health.set_running(false);
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

/// The loop's own state between polls.
struct Loop<'a> {
    config: &'a Config,
    consumer: &'a BaseConsumer<SinkContext>,
    context: &'a SinkContext,
    interval: Duration,
    next_flush: Instant,
    /// When Redis may be tried again (flush, held records) after a failure.
    retry_at: Instant,
    backoff: Backoff,
    /// Whether every partition is paused at max_unflushed_events.
    at_bound: bool,
}

impl<'a> Loop<'a> {
    fn new(config: &'a Config, consumer: &'a BaseConsumer<SinkContext>) -> Self {
        let interval = Duration::from_millis(config.flush_interval_ms);
        let now = Instant::now();
        Self {
            config,
            consumer,
            context: consumer.context(),
            interval,
            next_flush: now + interval,
            retry_at: now,
            backoff: Backoff::default(),
            at_bound: false,
        }
    }

    fn run(&mut self, stop: &AtomicBool) -> Result<()> {
        while !stop.load(Ordering::Relaxed) {
            if let Some(error) = self.context.take_failure() {
                return Err(error);
            }
            self.retry_held()?;
            let wait = self.next_flush.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
            match self.consumer.poll(wait) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                Some(Ok(message)) => {
                    self.context.health.kafka_ok();
                    self.receive(&message)?;
                }
            }
            if let Some(dlq) = &self.context.dlq {
                dlq.poll();
            }
            self.maybe_flush()?;
            self.apply_pauses()?;
            // The one writer of the engine's gauges: once a turn, after the
            // rebalances (inside poll), the record and the flush.
            let gauges = self.context.engine().gauges();
            self.context.metrics.set_engine(gauges);
        }
        Ok(())
    }

    /// A transient Redis failure: wait before the next attempt.
    fn redis_failed(&mut self, error: &SinkError, what: &str) {
        let delay = self.backoff.next_delay();
        self.retry_at = Instant::now() + delay;
        tracing::warn!(error = %error, retry_in = ?delay, "{what}");
    }

    fn redis_worked(&mut self) {
        self.backoff.reset();
        self.retry_at = Instant::now();
    }

    /// Handles a fresh record, or holds it (pausing its partition) when its
    /// arm cannot be restored because Redis is unavailable.
    fn receive(&mut self, message: &BorrowedMessage<'_>) -> Result<()> {
        if message.topic() != self.config.topic {
            return Ok(());
        }
        if lock(&self.context.held).contains_key(&message.partition()) {
            // A pause drops what was fetched past the held record, and the
            // fetch resumes right after it; a record here would be out of
            // order, so it is not handled (the resumed fetch brings it again).
            tracing::debug!(partition = message.partition(), offset = message.offset(), "record behind a held one; dropped");
            return Ok(());
        }
        match handle(self.config, self.consumer, message) {
            Ok(()) => Ok(()),
            Err(e) if e.is_transient() => {
                lock(&self.context.held).insert(message.partition(), message.detach());
                self.redis_failed(&e, "cannot restore an arm from Redis; the record is held and its partition paused");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Tries the held records again once the back-off allows.
    fn retry_held(&mut self) -> Result<()> {
        if Instant::now() < self.retry_at {
            return Ok(());
        }
        let held = std::mem::take(&mut *lock(&self.context.held));
        let mut still_held = held.into_iter();
        while let Some((partition, message)) = still_held.next() {
            match handle(self.config, self.consumer, &message) {
                Ok(()) => {
                    self.redis_worked();
                    tracing::info!(partition, offset = message.offset(), "held record handled; partition resumes");
                }
                Err(e) if e.is_transient() => {
                    self.redis_failed(&e, "Redis still unavailable; records stay held");
                    let mut slot = lock(&self.context.held);
                    slot.insert(partition, message);
                    slot.extend(still_held);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn maybe_flush(&mut self) -> Result<()> {
        let now = Instant::now();
        let due = now >= self.next_flush || self.context.engine().dirty_arms() >= self.config.max_dirty_arms;
        if !due || now < self.retry_at {
            return Ok(());
        }
        match flush_and_commit(self.context, self.consumer, CommitMode::Async) {
            Ok(flushed) => {
                self.next_flush = now + self.interval;
                self.redis_worked();
                if flushed.arms == 0 && flushed.offsets.is_empty() {
                    // Nothing was written: ask Redis anyway, so health
                    // follows it while the topic is quiet.
                    match self.context.engine().probe() {
                        Ok(()) => {}
                        Err(e) if e.is_transient() => self.redis_failed(&e, "Redis does not answer"),
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Err(e) if e.is_transient() => {
                self.redis_failed(&e, "cannot publish to Redis; state kept, retrying");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Pauses every partition at max_unflushed_events, else just those with
    /// a held record; resumes the rest.
    fn apply_pauses(&mut self) -> Result<()> {
        let assigned = self.context.engine().assigned();
        let at_bound = self.context.engine().unflushed() >= self.config.max_unflushed_events;
        if at_bound != self.at_bound {
            self.at_bound = at_bound;
            if at_bound {
                tracing::warn!(limit = self.config.max_unflushed_events, "too many unpublished events: consumption paused until Redis accepts a flush");
            } else {
                tracing::info!("publishing works again: consumption resumed");
            }
        }
        let wanted: BTreeSet<i32> = if at_bound {
            assigned.into_iter().collect()
        } else {
            let held = lock(&self.context.held);
            assigned.into_iter().filter(|p| held.contains_key(p)).collect()
        };
        let mut paused = lock(&self.context.paused);
        if *paused == wanted {
            return Ok(());
        }
        let to_pause: Vec<i32> = wanted.difference(&paused).copied().collect();
        let to_resume: Vec<i32> = paused.difference(&wanted).copied().collect();
        if !to_pause.is_empty() {
            self.consumer.pause(&self.partition_list(&to_pause)?)?;
        }
        if !to_resume.is_empty() {
            self.consumer.resume(&self.partition_list(&to_resume)?)?;
        }
        self.context.metrics.set_paused(!wanted.is_empty());
        *paused = wanted;
        Ok(())
    }

    fn partition_list(&self, partitions: &[i32]) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for &partition in partitions {
            tpl.add_partition_offset(&self.config.topic, partition, Offset::Invalid)?;
        }
        Ok(tpl)
    }
}

/// Handles one record: fold, skip, reset or reject it.
///
/// # Errors
/// [`SinkError::RedisUnavailable`] when its arm cannot be restored (nothing
/// changed: handle it again later), or a fatal error.
fn handle<M: Message>(config: &Config, consumer: &BaseConsumer<SinkContext>, message: &M) -> Result<()> {
    let context = consumer.context();
    let (partition, offset) = (message.partition(), message.offset());
    let decoded = lock(&context.decoder).decode(message.payload())?;
    let undecodable = decoded.as_ref().err().map(ToString::to_string);
    let event = match (&decoded, &undecodable) {
        (Ok(event), _) => Ok(event),
        (Err(_), reason) => Err(reason.as_deref().unwrap_or_default()),
    };
    let verdict = context.engine().handle(partition, offset, event)?;
    match verdict {
        Verdict::Folded | Verdict::Skipped => Ok(()),
        Verdict::Reset { partition, offset } => {
            seek(consumer, &config.topic, partition, offset);
            Ok(())
        }
        Verdict::Rejected(reason) => match &context.dlq {
            Some(dlq) => {
                let rejection = match &decoded {
                    Err(e) => Rejection { class: e.class_name(), stage: "VALUE_CONVERTER", message: &reason },
                    Ok(_) => Rejection { class: "bandit.InvalidEvent", stage: "TASK_PUT", message: &reason },
                };
                dlq.send(&config.topic, message, &rejection)?;
                context.engine().advance(partition, offset);
                context.metrics.event_dead_lettered();
                tracing::debug!(partition, offset, %reason, "dead-lettered");
                Ok(())
            }
            None => Err(SinkError::InvalidEvent { topic: config.topic.clone(), partition, offset, reason }),
        },
    }
}
