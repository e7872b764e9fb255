//! Errors of the formats crate. A record the sink cannot decode is one of
//! the "rejection" variants, each with a stable class name for the
//! dead-letter headers (programs act on the class, never on the message).

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The record has no value.
    #[error("empty record (no value)")]
    Empty,
    /// Not a JSON feedback event.
    #[error("invalid JSON event: {0}")]
    Json(String),
    /// Not Confluent-framed (no magic byte 0, or shorter than the header).
    #[error("not Confluent-framed Avro: {0}")]
    NotFramed(String),
    /// The framed schema id is unknown to the registry (or the schema
    /// directory).
    #[error("unknown schema id {0}")]
    UnknownSchema(u32),
    /// The writer's schema cannot be read as a feedback event (a required
    /// field is missing or has another type), or is not valid Avro.
    #[error("schema {id} cannot be read as a feedback event: {reason}")]
    IncompatibleSchema { id: u32, reason: String },
    /// The Avro body does not decode with its writer's schema.
    #[error("Avro body does not decode with schema {id}: {reason}")]
    Undecodable { id: u32, reason: String },
    /// The registry did not answer (connection, timeout, 5xx).
    #[error("schema registry unreachable: {0}")]
    RegistryUnavailable(String),
    /// The registry refused the request (credentials, permissions, an
    /// incompatible schema on register, a malformed answer).
    #[error("schema registry refused: {0}")]
    RegistryRefused(String),
    /// Encoding an event (the producer side).
    #[error("cannot encode the event as Avro: {0}")]
    Encode(String),
    /// Reading a schema file.
    #[error("{0}")]
    Io(String),
}

impl Error {
    /// The stable class name of a record's rejection, for the
    /// `__connect.errors.exception.class.name` dead-letter header.
    pub fn class_name(&self) -> &'static str {
        match self {
            Self::Empty | Self::Json(_) => "bandit.InvalidEvent",
            Self::NotFramed(_) | Self::Undecodable { .. } => "bandit.UndecodableAvro",
            Self::UnknownSchema(_) => "bandit.UnknownSchema",
            Self::IncompatibleSchema { .. } => "bandit.IncompatibleSchema",
            Self::RegistryUnavailable(_) => "bandit.RegistryUnavailable",
            Self::RegistryRefused(_) => "bandit.RegistryRefused",
            Self::Encode(_) | Self::Io(_) => "bandit.Error",
        }
    }

    /// Whether waiting may cure it (the registry may come back).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RegistryUnavailable(_))
    }
}
