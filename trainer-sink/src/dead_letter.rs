//! The dead-letter producer (errors.tolerance = all): invalid records go to
//! their topic with Kafka Connect's error headers, and a flush proves they
//! were delivered before the model's offsets move past them.
//!
//! Headers: `__connect.errors.topic`, `.partition`, `.offset`, `.stage`
//! (`VALUE_CONVERTER` when the bytes did not decode, `TASK_PUT` when the
//! event did not validate), `.exception.class.name` (a stable class per
//! cause, see [`Rejection`]) and `.exception.message` (for people).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::config::Config;
use crate::error::{Result, SinkError};
use crate::kafka_config::client_config;

/// How long a flush waits for the broker to acknowledge the dead letters.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// What a dead letter's headers may take of a record (the reason is the
/// longest, a few hundred bytes).
const HEADER_ROOM_BYTES: usize = 4096;

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

/// Why a record is dead-lettered.
#[derive(Debug, Clone, Copy)]
pub struct Rejection<'a> {
    /// Stable: `bandit.InvalidEvent` (JSON or validation),
    /// `bandit.UndecodableAvro`, `bandit.UnknownSchema`,
    /// `bandit.IncompatibleSchema`, `bandit.RegistryUnavailable`.
    pub class: &'a str,
    /// Kafka Connect's stage: `VALUE_CONVERTER` or `TASK_PUT`.
    pub stage: &'a str,
    pub message: &'a str,
}

/// The dead-letter producer and its topic.
pub struct DeadLetterQueue {
    producer: BaseProducer<DeadLetterContext>,
    topic: String,
    state: Arc<DeadLetters>,
    /// The producer's `message.max.bytes`.
    max_record_bytes: usize,
}

impl std::fmt::Debug for DeadLetterQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterQueue").field("topic", &self.topic).finish()
    }
}

impl DeadLetterQueue {
    /// # Errors
    /// When librdkafka refuses the producer configuration.
    pub fn new(config: &Config, topic: &str) -> Result<Self> {
        let state = Arc::new(DeadLetters::default());
        let producer: BaseProducer<DeadLetterContext> = client_config(config, false)
            .set("enable.idempotence", "true")
            .create_with_context(DeadLetterContext(state.clone()))?;
        let max_record_bytes = crate::kafka_config::message_max_bytes(&config.kafka);
        Ok(Self { producer, topic: topic.to_owned(), state, max_record_bytes })
    }

    /// Serves delivery reports.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Queues an invalid record with Kafka Connect's error headers.
    ///
    /// # Errors
    /// [`SinkError::DeadLetter`] when the producer refuses the record.
    pub fn send(&self, source_topic: &str, message: &impl Message, reason: &Rejection<'_>) -> Result<()> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        // A record this producer cannot send (a broker may take larger
        // ones than its message.max.bytes) goes without its value, which
        // its origin headers locate, rather than stop everything behind it.
        let key_bytes = message.key().map_or(0, <[u8]>::len);
        let payload = message.payload().filter(|payload| key_bytes + payload.len() + HEADER_ROOM_BYTES <= self.max_record_bytes);
        let omitted = match (message.payload(), payload) {
            (Some(value), None) => Some(value.len().to_string()),
            _ => None,
        };
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: "__connect.errors.topic", value: Some(source_topic) })
            .insert(Header { key: "__connect.errors.partition", value: Some(partition.as_str()) })
            .insert(Header { key: "__connect.errors.offset", value: Some(offset.as_str()) })
            .insert(Header { key: "__connect.errors.stage", value: Some(reason.stage) })
            .insert(Header { key: "__connect.errors.exception.class.name", value: Some(reason.class) })
            .insert(Header { key: "__connect.errors.exception.message", value: Some(reason.message) });
        if let Some(length) = &omitted {
            headers = headers.insert(Header { key: "bandit.value.omitted.bytes", value: Some(length.as_str()) });
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = payload {
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
    ///
    /// # Errors
    /// [`SinkError::DeadLetter`] naming the delivery error.
    pub fn flush(&self) -> Result<()> {
        self.producer.flush(FLUSH_TIMEOUT).map_err(|e| SinkError::DeadLetter(format!("dead letters not acknowledged: {e}")))?;
        self.check_failed()
    }

    /// Waits up to `timeout` for every queued dead letter: `Ok(false)` when
    /// some are still in flight (the broker is away: try again later).
    ///
    /// # Errors
    /// [`SinkError::DeadLetter`] when one was not delivered.
    pub fn flush_within(&self, timeout: std::time::Duration) -> Result<bool> {
        let done = match self.producer.flush(timeout) {
            Ok(()) => true,
            Err(rdkafka::error::KafkaError::Flush(rdkafka::types::RDKafkaErrorCode::OperationTimedOut)) => false,
            Err(e) => return Err(SinkError::DeadLetter(format!("dead letters not acknowledged: {e}"))),
        };
        self.check_failed()?;
        Ok(done)
    }

    fn check_failed(&self) -> Result<()> {
        if self.state.failed.load(Ordering::Relaxed) > 0 {
            let last = self.state.last_error.lock().ok().and_then(|slot| slot.clone()).unwrap_or_default();
            return Err(SinkError::DeadLetter(format!("an invalid event could not be dead-lettered: {last}")));
        }
        Ok(())
    }
}
