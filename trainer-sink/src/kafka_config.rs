//! librdkafka configuration of the consumer and the dead-letter producer:
//! the user's `-X` properties (TLS, SASL, compression… pass through as
//! librdkafka spells them), which of them are secrets, and what this
//! librdkafka was built with.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use rdkafka::util::get_rdkafka_version;

use crate::config::Config;
use crate::error::Result;

/// Whether a librdkafka property holds a secret, never printed or logged:
/// `sasl.password`, `ssl.key.password`, `ssl.keystore.password`,
/// `sasl.oauthbearer.client.secret`, an inline private key
/// (`ssl.key.pem`), and the OAUTHBEARER config (which may carry one).
pub fn is_secret_property(key: &str) -> bool {
    key.contains("password") || key.contains("secret") || matches!(key, "ssl.key.pem" | "sasl.oauthbearer.config")
}

/// The largest record a producer with these `-X` properties sends
/// (`message.max.bytes`, librdkafka's 1,000,000 when not set): a larger one
/// fails at once with MSG_SIZE_TOO_LARGE, whatever the broker would take.
pub fn message_max_bytes(kafka: &BTreeMap<String, String>) -> usize {
    kafka.get("message.max.bytes").and_then(|value| value.trim().parse().ok()).unwrap_or(1_000_000)
}

/// librdkafka's version and `builtin.features` (what it was compiled
/// with: ssl, sasl_plain, sasl_scram, sasl_oauthbearer, zstd…), for the
/// start-up log.
///
/// # Errors
/// When librdkafka cannot make a configuration object.
pub fn builtin_features() -> Result<(String, String)> {
    let (_, version) = get_rdkafka_version();
    let features = ClientConfig::new().create_native_config()?.get("builtin.features")?;
    Ok((version, features))
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

/// Kafka properties with every secret value (see [`is_secret_property`])
/// replaced by `***`, for printing a configuration.
pub fn masked(kafka: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    kafka
        .iter()
        .map(|(key, value)| (key.clone(), if is_secret_property(key) { "***".to_owned() } else { value.clone() }))
        .collect()
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The build this project ships: TLS, SASL (PLAIN, SCRAM, OAUTHBEARER)
    /// and zstd, as managed Kafka clusters and producers need.
    #[test]
    fn librdkafka_is_built_with_tls_sasl_and_zstd() {
        let (version, features) = builtin_features().unwrap();
        let features: Vec<&str> = features.split(',').collect();
        for needed in ["ssl", "sasl", "sasl_plain", "sasl_scram", "sasl_oauthbearer", "zstd", "gzip"] {
            assert!(features.contains(&needed), "librdkafka {version} lacks {needed}: {features:?}");
        }
    }

    #[test]
    fn secrets_are_recognised_by_name() {
        for secret in ["sasl.password", "ssl.key.password", "ssl.keystore.password", "sasl.oauthbearer.client.secret", "ssl.key.pem"] {
            assert!(is_secret_property(secret), "{secret}");
        }
        for public in ["sasl.username", "sasl.mechanisms", "security.protocol", "ssl.ca.location", "ssl.certificate.pem", "compression.type"] {
            assert!(!is_secret_property(public), "{public}");
        }
    }
}
