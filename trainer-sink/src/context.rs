//! Callbacks librdkafka runs on the consumer thread (inside `poll`):
//! rebalances, statistics, errors and logs, and the state they share with
//! the consumer loop (the engine, records held while Redis is away, the
//! partitions this sink paused).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;

use crate::backoff::Backoff;
use crate::dead_letter::DeadLetterQueue;
use crate::engine::Engine;
use crate::error::SinkError;
use crate::format::Decoder;
use crate::health::Health;
use crate::metrics::Metrics;

/// How long an assignment keeps retrying to read the model's offsets.
const ASSIGN_DEADLINE: Duration = Duration::from_secs(30);

/// Locks a mutex, going on after a panic elsewhere: the model's offsets stay
/// the truth, and the restore logic reconciles a torn state.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// librdkafka's log lines into tracing, at their level.
pub fn log_librdkafka(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => tracing::info!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
    }
}

/// A client's global error: logged; losing every broker (or a fatal
/// consumption error) makes the service unhealthy until a broker is up
/// again. Single connection failures are routine and only logged.
pub fn client_error(health: &Health, error: &KafkaError, reason: &str) {
    tracing::error!(target: "librdkafka", error = %error, "{reason}");
    let code = error.rdkafka_error_code();
    if code == Some(RDKafkaErrorCode::AllBrokersDown) || matches!(error, KafkaError::MessageConsumptionFatal(_)) {
        health.kafka_failed(&format!("{error}: {reason}"));
    }
}

/// Kafka's health from a statistics report: up while any broker connection is.
pub fn broker_health(health: &Health, statistics: &Statistics) {
    if statistics.brokers.values().any(|broker| broker.state == "UP") {
        health.kafka_ok();
    } else if !statistics.brokers.is_empty() {
        health.kafka_failed("no connection to any broker is up");
    }
}

#[derive(Debug)]
pub struct SinkContext {
    pub topic: String,
    pub engine: Mutex<Engine>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// The dead-letter queue (errors.tolerance = all).
    pub dlq: Option<DeadLetterQueue>,
    /// Bytes into events (JSON or Avro); used on the consumer thread only.
    pub decoder: Mutex<Decoder>,
    /// A record per partition that could not be handled because Redis was
    /// unavailable; its partition is paused until it is.
    pub held: Mutex<BTreeMap<i32, OwnedMessage>>,
    /// Partitions this sink has paused.
    pub paused: Mutex<BTreeSet<i32>>,
    /// A fatal error raised inside a callback, for the loop to return.
    failure: Mutex<Option<SinkError>>,
}

impl SinkContext {
    pub fn new(topic: &str, engine: Engine, metrics: Arc<Metrics>, health: Arc<Health>, dlq: Option<DeadLetterQueue>, decoder: Decoder) -> Self {
        Self {
            topic: topic.to_owned(),
            engine: Mutex::new(engine),
            metrics,
            health,
            dlq,
            decoder: Mutex::new(decoder),
            held: Mutex::new(BTreeMap::new()),
            paused: Mutex::new(BTreeSet::new()),
            failure: Mutex::new(None),
        }
    }

    pub fn engine(&self) -> MutexGuard<'_, Engine> {
        lock(&self.engine)
    }

    fn fail(&self, error: SinkError) {
        lock(&self.failure).get_or_insert(error);
    }

    pub fn take_failure(&self) -> Option<SinkError> {
        lock(&self.failure).take()
    }

    fn partitions_in(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements_for_topic(&self.topic).iter().map(|element| element.partition()).collect()
    }

    /// Forgets held records and pauses of partitions changing hands: a new
    /// assignment starts from the model's offset, unpaused.
    fn forget(&self, partitions: &[i32]) {
        let mut held = lock(&self.held);
        let mut paused = lock(&self.paused);
        for partition in partitions {
            held.remove(partition);
            paused.remove(partition);
        }
    }

    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let partitions = self.partitions_in(tpl);
        self.forget(&partitions);
        let deadline = Instant::now() + ASSIGN_DEADLINE;
        let mut backoff = Backoff::default();
        let starts = loop {
            match self.engine().assign(&partitions) {
                Ok(starts) => break Some(starts),
                Err(e) if e.is_transient() && Instant::now() < deadline => {
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
        // librdkafka keeps an application pause on a partition it assigns
        // again; the loop pauses what it needs to, so start from unpaused.
        if let Err(e) = consumer.resume(tpl) {
            tracing::debug!(error = %e, "resume of new partitions");
        }
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let partitions = self.partitions_in(tpl);
        if consumer.assignment_lost() {
            tracing::warn!(?partitions, "assignment lost: dropping state without flushing (the new owner restarts from the model)");
        } else if let Err(e) = crate::consumer::flush_with_deadline(self, consumer, CommitMode::Sync) {
            tracing::warn!(error = %e, ?partitions, "could not flush before giving partitions up; the new owner re-reads from the model's offsets");
        }
        self.engine().revoke(&partitions);
        self.forget(&partitions);
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
        log_librdkafka(level, facility, message);
    }

    /// Global errors. Losing every broker makes the sink unhealthy until a
    /// broker is up again (seen in statistics or by a fetched record);
    /// single connection failures are routine and only logged.
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&self.health, &error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        broker_health(&self.health, &statistics);
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
                self.forget(&partitions);
                let _ = consumer.unassign();
            }
        }
    }
}
