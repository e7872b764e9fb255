//! Errors of the client library.

/// Result alias of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Redis or the module answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Kafka client or delivery error.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A reply or payload that is not what the module sends.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// Core math or payload validation.
    #[error("{0}")]
    Core(#[from] bandit_core::Error),
    /// Input files (CSV, payloads).
    #[error("{0}")]
    Input(String),
    #[error("simulation: {0}")]
    Simulation(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<rdkafka::error::KafkaError> for ClientError {
    fn from(error: rdkafka::error::KafkaError) -> Self {
        Self::Kafka(error.to_string())
    }
}
