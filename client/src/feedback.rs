//! Feedback to Kafka: JSON events keyed by product id (so one product's
//! events stay in one partition, in order, as the sink requires), through a
//! buffered asynchronous producer whose delivery failures are reported, not
//! lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bandit_core::event::FeedbackEvent;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
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

/// A feedback producer for one topic.
pub struct FeedbackProducer {
    producer: ThreadedProducer<DeliveryContext>,
    topic: String,
    deliveries: Arc<Deliveries>,
}

impl std::fmt::Debug for FeedbackProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedbackProducer").field("topic", &self.topic).finish()
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
        Ok(Self { producer, topic: topic.to_owned(), deliveries })
    }

    /// Queues one event (returns at once; delivery is reported by [`Self::flush`]).
    ///
    /// # Errors
    /// When the event cannot be queued.
    pub fn send(&self, event: &FeedbackEvent) -> Result<()> {
        let payload = serde_json::to_vec(event).map_err(|e| ClientError::Input(e.to_string()))?;
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
            })?;
        }
        self.flush(timeout)
    }

    /// Waits for every queued event; fails if any could not be delivered.
    ///
    /// # Errors
    /// [`ClientError::Kafka`] with the last delivery error.
    pub fn flush(&self, timeout: Duration) -> Result<DeliveryReport> {
        self.producer.flush(timeout)?;
        let report = DeliveryReport {
            delivered: self.deliveries.delivered.load(Ordering::Relaxed),
            failed: self.deliveries.failed.load(Ordering::Relaxed),
        };
        if report.failed > 0 {
            let last = self.deliveries.last_error.lock().ok().and_then(|slot| slot.clone()).unwrap_or_default();
            return Err(ClientError::Kafka(format!("{} feedback events were not delivered: {last}", report.failed)));
        }
        Ok(report)
    }
}
