//! Feedback to Kafka: events keyed by product id (so one product's events
//! stay in one partition, in order, as the sink requires), through a
//! buffered asynchronous producer whose delivery failures are reported, not
//! lost. Events are JSON, or Avro in Confluent's wire format after the
//! schema is registered under the topic's subject (`<topic>-value`,
//! TopicNameStrategy) ([`FeedbackProducer::with_avro`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bandit_core::event::FeedbackEvent;
use bandit_formats::avro::AvroEncoder;
use bandit_formats::registry::RegistryClient;
use bandit_formats::schema;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::error::KafkaResult;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::error::{ClientError, Result};

#[derive(Debug, Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

struct DeliveryContext(Arc<Deliveries>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut slot) = self.0.last_error.lock() {
                    *slot = Some(error.to_string());
                }
            }
        }
    }
}

/// Counts after a flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: u64,
    pub failed: u64,
}

/// How events are written.
#[derive(Debug)]
enum Encoding {
    Json,
    /// Framed with the id the registry gave `schemas/feedback.avsc`.
    Avro(AvroEncoder),
}

/// A feedback producer for one topic.
pub struct FeedbackProducer {
    producer: ThreadedProducer<DeliveryContext>,
    encoding: Encoding,
    /// For messages: failures name where events were going.
    brokers: String,
    topic: String,
    /// What the records are, for messages ("feedback events", "decisions", …).
    what: &'static str,
    deliveries: Arc<Deliveries>,
}

impl std::fmt::Debug for FeedbackProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedbackProducer")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("encoding", &self.encoding)
            .finish()
    }
}

impl FeedbackProducer {
    /// A producer for `topic` on `brokers`, with extra librdkafka properties.
    ///
    /// # Errors
    /// When librdkafka refuses the configuration.
    pub fn new(brokers: &str, topic: &str, properties: &BTreeMap<String, String>) -> Result<Self> {
        let deliveries = Arc::new(Deliveries::default());
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers).set("enable.idempotence", "true").set("linger.ms", "5");
        for (key, value) in properties {
            config.set(key, value);
        }
        let producer = config.create_with_context(DeliveryContext(deliveries.clone()))?;
        Ok(Self { producer, encoding: Encoding::Json, brokers: brokers.to_owned(), topic: topic.to_owned(), what: "feedback events", deliveries })
    }

    /// Names the records in delivery failures ("decisions", "rewards"; feedback events by default).
    #[must_use]
    pub fn naming_records(mut self, what: &'static str) -> Self {
        self.what = what;
        self
    }

    /// Writes Avro from now on: registers the feedback schema under the
    /// topic's subject (`<topic>-value`) and frames every event with the id
    /// the registry answers (the existing id when it is already there).
    ///
    /// # Errors
    /// [`ClientError::Kafka`] naming the registry and its answer.
    pub fn with_avro(mut self, registry: &RegistryClient) -> Result<Self> {
        let subject = schema::value_subject(&self.topic);
        let registered = registry.register(&subject, schema::FEEDBACK_SCHEMA);
        let id = registered.map_err(|e| ClientError::Kafka(format!("registering the feedback schema as {subject} at {}: {e}", registry.url())))?;
        let writer = schema::feedback_schema().map_err(|e| ClientError::Kafka(e.to_string()))?;
        self.encoding = Encoding::Avro(AvroEncoder::new(id, writer));
        Ok(self)
    }

    /// Checks, within `timeout`, that a broker answers and has the topic
    /// with at least one partition; returns the number of partitions. Send
    /// failures would otherwise surface only when a flush times out.
    ///
    /// # Errors
    /// [`ClientError::Kafka`] naming the brokers and the topic.
    pub fn check_topic(&self, timeout: Duration) -> Result<usize> {
        let metadata: KafkaResult<_> = self.producer.client().fetch_metadata(Some(&self.topic), timeout);
        let metadata = metadata.map_err(|e| {
            ClientError::Kafka(format!(
                "no answer from the brokers {} about topic '{}' within {} s ({e})",
                self.brokers,
                self.topic,
                timeout.as_secs_f64()
            ))
        })?;
        let topic = metadata.topics().iter().find(|t| t.name() == self.topic);
        let unknown = |t: &rdkafka::metadata::MetadataTopic| {
            t.error().is_some_and(|e| RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition)
        };
        match topic {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len()),
            Some(t) if unknown(t) => Err(ClientError::Kafka(format!("topic '{}' does not exist on the brokers {}", self.topic, self.brokers))),
            Some(t) => Err(ClientError::Kafka(format!(
                "topic '{}' is not available on the brokers {}: {}",
                self.topic,
                self.brokers,
                t.error().map_or_else(|| "it has no partitions".to_owned(), |e| RDKafkaErrorCode::from(e).to_string())
            ))),
            None => Err(ClientError::Kafka(format!("topic '{}' does not exist on the brokers {}", self.topic, self.brokers))),
        }
    }

    /// Queues one event (returns at once; delivery is reported by [`Self::flush`]).
    ///
    /// # Errors
    /// When the event cannot be queued.
    pub fn send(&self, event: &FeedbackEvent) -> Result<()> {
        let payload = match &self.encoding {
            Encoding::Json => bandit_formats::json::encode(event),
            Encoding::Avro(encoder) => encoder.encode(event),
        };
        let payload = payload.map_err(|e| ClientError::Input(e.to_string()))?;
        self.send_raw(&event.product_id, &payload)
    }

    /// Queues raw bytes under a key.
    ///
    /// # Errors
    /// When the record cannot be queued.
    pub fn send_raw(&self, key: &str, payload: &[u8]) -> Result<()> {
        let mut record = BaseRecord::to(&self.topic).key(key).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Publishes a historical log, row by row in file order, and waits for
    /// delivery (`bandit bootstrap`): the sink then learns the history before
    /// live feedback, as the reference design's file-then-Kafka source did.
    ///
    /// # Errors
    /// As [`Self::send`] and [`Self::flush`].
    pub fn publish_log(&self, log: &crate::history::HistoryLog, timeout: Duration) -> Result<DeliveryReport> {
        for row in &log.rows {
            self.send(&FeedbackEvent {
                event_id: row.event_id.clone().unwrap_or_else(|| format!("bootstrap-{}", row.line)),
                product_id: row.product_id.clone(),
                reward: row.response,
                context_vector: row.context.clone(),
                timestamp: 0,
                ..Default::default()
            })?;
        }
        self.flush(timeout)
    }

    /// Waits for every queued event; fails if any could not be delivered.
    ///
    /// # Errors
    /// [`ClientError::Kafka`] with the last delivery error, naming the
    /// brokers and the topic.
    pub fn flush(&self, timeout: Duration) -> Result<DeliveryReport> {
        if let Err(e) = self.producer.flush(timeout) {
            return Err(ClientError::Kafka(format!(
                "{} {} not delivered to topic '{}' on the brokers {} within {} s ({e})",
                self.producer.in_flight_count(),
                self.what,
                self.topic,
                self.brokers,
                timeout.as_secs_f64()
            )));
        }
        let report = DeliveryReport {
            delivered: self.deliveries.delivered.load(Ordering::Relaxed),
            failed: self.deliveries.failed.load(Ordering::Relaxed),
        };
        if report.failed > 0 {
            let last = self.deliveries.last_error.lock().ok().and_then(|slot| slot.clone()).unwrap_or_default();
            return Err(ClientError::Kafka(format!(
                "{} {} were not delivered to topic '{}' on the brokers {}: {last}",
                report.failed, self.what, self.topic, self.brokers
            )));
        }
        Ok(report)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// A producer for a broker address where nothing listens (port 1 on
    /// the loopback refuses at once).
    fn nowhere() -> FeedbackProducer {
        FeedbackProducer::new("127.0.0.1:1", "clicks", &BTreeMap::new()).unwrap()
    }

    #[test]
    fn a_missing_broker_is_named_with_the_topic() {
        let error = nowhere().check_topic(Duration::from_millis(300)).unwrap_err().to_string();
        assert!(error.contains("127.0.0.1:1") && error.contains("'clicks'"), "{error}");
    }

    #[test]
    fn an_undelivered_event_names_the_brokers_and_the_topic() {
        let producer = nowhere();
        let event = FeedbackEvent { event_id: "e".into(), product_id: "p".into(), reward: 1.0, context_vector: vec![0.5], timestamp: 0, ..Default::default() };
        producer.send(&event).unwrap();
        let error = producer.flush(Duration::from_millis(300)).unwrap_err().to_string();
        assert!(error.contains("127.0.0.1:1") && error.contains("'clicks'"), "{error}");
    }
}
