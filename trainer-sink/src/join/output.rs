//! The joiner's producer: examples to the feedback topic and checkpoints to
//! the state topic, idempotent (so retries neither duplicate nor reorder a
//! partition), with every delivery failure remembered so that nothing is
//! committed past an example the broker did not take.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::error::{Result, SinkError};
use crate::kafka_config::client_config;
use crate::join::config::JoinConfig;

#[derive(Debug, Default)]
struct Deliveries {
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

struct OutputContext(Arc<Deliveries>);

impl ClientContext for OutputContext {}

impl ProducerContext for OutputContext {
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

/// The idempotent producer and what became of its deliveries.
pub struct Output {
    producer: BaseProducer<OutputContext>,
    deliveries: Arc<Deliveries>,
    /// The producer's `message.max.bytes`: a larger record fails for good.
    max_record_bytes: usize,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").finish_non_exhaustive()
    }
}

impl Output {
    /// # Errors
    /// When librdkafka refuses the configuration.
    pub fn new(config: &JoinConfig) -> Result<Self> {
        let deliveries = Arc::new(Deliveries::default());
        // The trainer's fence takes each decisions partition's sequence
        // numbers as a gapless stream per feedback partition: an example
        // that failed while later ones got through would be dropped as a
        // duplicate when re-emitted. So records never time out (the joiner
        // waits out a broker outage, its commits postponed), and a record
        // that fails for good stops the producer before anything after it
        // (librdkafka's gapless guarantee, with idempotence).
        let producer = client_config(&config.kafka_part(), false)
            .set("enable.idempotence", "true")
            .set("enable.gapless.guarantee", "true")
            .set("message.timeout.ms", "0")
            .create_with_context(OutputContext(deliveries.clone()))?;
        Ok(Self { producer, deliveries, max_record_bytes: crate::kafka_config::message_max_bytes(&config.kafka) })
    }

    /// The largest record (key and value) the producer sends.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// Queues a record (waiting while librdkafka's queue is full).
    ///
    /// # Errors
    /// When the producer refuses the record for another reason.
    pub fn send(&self, topic: &str, partition: Option<i32>, key: &[u8], payload: &[u8]) -> Result<()> {
        self.check_failed()?;
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(key).payload(payload);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(SinkError::Kafka(e)),
            }
        }
    }

    /// Serves delivery reports.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits up to `timeout` for every queued record: `Ok(true)` when all
    /// were acknowledged, `Ok(false)` when some are still in flight (the
    /// broker is away: try again later).
    ///
    /// # Errors
    /// [`SinkError::Kafka`] naming the failure when a record was not delivered:
    /// committing past it would lose it, so the joiner stops and a restart
    /// emits it again from the last checkpoint.
    pub fn flush(&self, timeout: Duration) -> Result<bool> {
        let done = match self.producer.flush(timeout) {
            Ok(()) => true,
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => false,
            Err(e) => return Err(SinkError::Kafka(e)),
        };
        self.check_failed()?;
        Ok(done)
    }

    /// Fails once any record was not delivered: nothing may be sent after
    /// it (see [`Output::new`]), and committing past it would lose it.
    fn check_failed(&self) -> Result<()> {
        if self.deliveries.failed.load(Ordering::Relaxed) > 0 {
            let last = self.deliveries.last_error.lock().ok().and_then(|slot| slot.clone()).unwrap_or_default();
            return Err(SinkError::Io(std::io::Error::other(format!("a record was not delivered: {last}"))));
        }
        Ok(())
    }
}
