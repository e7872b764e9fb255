//! librdkafka configuration of the consumer and the dead-letter producer.

use rdkafka::config::ClientConfig;

use crate::config::Config;

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

/// The user's properties over the sink's defaults, for the consumer
/// (`consumer`) or the dead-letter producer.
pub fn client_config(config: &Config, consumer: bool) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    if consumer {
        // Statistics feed the lag metric and Kafka's health.
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
