//! What `/health` reports: whether the consumer loop runs, whether the last
//! Redis operation succeeded, and whether Kafka is reachable. Each part is
//! recorded where its outcome is known (the Redis store, the librdkafka
//! callbacks, the loop) and read by the HTTP endpoint.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Shared health state; unhealthy until the consumer starts.
#[derive(Debug, Default)]
pub struct Health {
    running: AtomicBool,
    /// Why the last Redis operation failed; None once one succeeds.
    redis: Mutex<Option<String>>,
    /// Why Kafka is unreachable; None once a broker is up again.
    kafka: Mutex<Option<String>>,
    /// Whether `kafka` holds a reason: lets the per-record "Kafka works"
    /// signal skip the lock.
    kafka_down: AtomicBool,
}

fn store(slot: &Mutex<Option<String>>, value: Option<String>) {
    // A poisoned lock only means a panic while writing a string: overwrite it.
    let mut guard = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *guard = value;
}

fn load(slot: &Mutex<Option<String>>) -> Option<String> {
    slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

impl Health {
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }

    pub fn redis_ok(&self) {
        store(&self.redis, None);
    }

    pub fn redis_failed(&self, reason: &str) {
        store(&self.redis, Some(reason.to_owned()));
    }

    pub fn kafka_ok(&self) {
        if self.kafka_down.swap(false, Ordering::Relaxed) {
            store(&self.kafka, None);
            tracing::info!("Kafka is reachable again");
        }
    }

    pub fn kafka_failed(&self, reason: &str) {
        store(&self.kafka, Some(reason.to_owned()));
        self.kafka_down.store(true, Ordering::Relaxed);
    }

    /// Ok, or the reasons it is not, one failing part per line, each line
    /// starting with the part's name.
    pub fn report(&self) -> Result<(), String> {
        let mut problems = String::new();
        if !self.running.load(Ordering::Relaxed) {
            problems.push_str("consumer: not running (starting, stopping or failed)\n");
        }
        if let Some(reason) = load(&self.redis) {
            problems.push_str(&format!("redis: unreachable: {reason}\n"));
        }
        if let Some(reason) = load(&self.kafka) {
            problems.push_str(&format!("kafka: unreachable: {reason}\n"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_each_failing_part_and_recovers() {
        let health = Health::default();
        assert!(health.report().unwrap_err().starts_with("consumer: "));
        health.set_running(true);
        assert_eq!(health.report(), Ok(()));
        health.redis_failed("connection refused");
        health.kafka_failed("all brokers down");
        let report = health.report().unwrap_err();
        assert_eq!(report, "redis: unreachable: connection refused\nkafka: unreachable: all brokers down\n");
        health.redis_ok();
        assert_eq!(health.report().unwrap_err(), "kafka: unreachable: all brokers down\n");
        health.kafka_ok();
        assert_eq!(health.report(), Ok(()));
    }
}
