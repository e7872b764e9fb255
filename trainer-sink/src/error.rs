//! Errors of the sink, one enum for the crate.

/// Result alias of this crate.
pub type Result<T, E = SinkError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A setting is missing, unknown or inconsistent; found at start-up.
    #[error("configuration: {0}")]
    Config(String),
    /// Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Redis or the module refused or failed (retried by the caller).
    #[error("redis: {0}")]
    Redis(String),
    /// The model in Redis does not match this sink (dim, wrong type…).
    #[error("model: {0}")]
    Model(String),
    /// An invalid event with errors.tolerance=none: the sink stops without
    /// moving past it.
    #[error("invalid event at {topic}/{partition}@{offset}: {reason} (errors.tolerance=none: stopping before this offset)")]
    InvalidEvent { topic: String, partition: i32, offset: i64, reason: String },
    /// The dead-letter queue could not take an event.
    #[error("dead-letter topic: {0}")]
    DeadLetter(String),
    /// Metrics endpoint or other I/O.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<redis::RedisError> for SinkError {
    fn from(error: redis::RedisError) -> Self {
        Self::Redis(error.to_string())
    }
}
