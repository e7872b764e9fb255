//! Errors of the sink, one enum for the crate, and the rule that splits
//! Redis failures into "wait and retry" and "stop now".

use redis::{ErrorKind, RedisError, RetryMethod};

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
    /// Redis cannot serve right now (connection refused or reset, timeout,
    /// LOADING, BUSY, TRYAGAIN, MASTERDOWN…): the caller keeps its state and
    /// retries with back-off.
    #[error("redis unavailable: {0}")]
    RedisUnavailable(String),
    /// Redis or the module refused in a way no retry can fix (authentication,
    /// ACL, a module limit, WRONGTYPE, the module not loaded): the sink stops.
    #[error("redis refused: {0}")]
    RedisRefused(String),
    /// The model in Redis does not match this sink (dim, lambda, wrong type…).
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

impl SinkError {
    /// Whether waiting can cure this error (only Redis being unavailable).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RedisUnavailable(_))
    }
}

/// Error codes (the reply's first word) that mean "not now" rather than "no":
/// a script or module command is running (BUSY), the server is out of memory
/// until something is freed (OOM), too few replicas are in sync (NOREPLICAS),
/// a blocked command was released by a role change (UNBLOCKED: a LOAD being
/// prepared when the server became a replica), a flush in parts whose
/// earlier parts the server no longer holds (PARTS: it restarted between
/// them; the flush is sent again whole).
const TRANSIENT_CODES: &[&str] = &["BUSY", "OOM", "NOREPLICAS", "UNBLOCKED", "PARTS"];

/// Whether a Redis failure can pass by itself. Decided by the error's kind
/// and code, never by its text, so a reworded message cannot turn a
/// permanent refusal into an endless retry (or the reverse).
pub fn is_transient_redis(error: &RedisError) -> bool {
    match error.kind() {
        // Refused, reset, broken pipe, timed out, EOF: the server is down or
        // restarting. Permission denied (a unix socket) is configuration.
        ErrorKind::IoError => !matches!(error.retry_method(), RetryMethod::NoRetry),
        // Loading its dataset, a failover in progress, a replica that lost
        // its master, or one we were left connected to after a failover.
        // Sentinels answer "no such master" while the primary is down and
        // not yet replaced (redis-rs skips a primary flagged down), so a
        // master name that is wrong from the start also retries, with
        // /health and the log naming it.
        ErrorKind::BusyLoadingError
        | ErrorKind::TryAgain
        | ErrorKind::MasterDown
        | ErrorKind::ClusterDown
        | ErrorKind::ReadOnly
        | ErrorKind::MasterNameNotFoundBySentinel
        | ErrorKind::NoValidReplicasFoundBySentinel => true,
        _ => error.code().is_some_and(|code| TRANSIENT_CODES.contains(&code)),
    }
}

impl From<RedisError> for SinkError {
    fn from(error: RedisError) -> Self {
        if is_transient_redis(&error) {
            Self::RedisUnavailable(error.to_string())
        } else {
            Self::RedisRefused(error.to_string())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn server_error(reply: &str) -> RedisError {
        // The crate's own parser, so codes are split as for a real reply.
        let value = redis::parse_redis_value(format!("-{reply}\r\n").as_bytes()).unwrap();
        value.extract_error().unwrap_err()
    }

    #[test]
    fn classifies_by_kind_and_code() {
        for transient in ["LOADING Redis is loading the dataset in memory", "BUSY Redis is busy running a script", "TRYAGAIN x", "MASTERDOWN Link with MASTER is down", "READONLY You can't write against a read only replica.", "OOM command not allowed", "UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)", "PARTS part 1 of 3 arrived but no flush is being received for this key (send part 0 first)"] {
            assert!(SinkError::from(server_error(transient)).is_transient(), "{transient}");
        }
        for permanent in ["ERR DIM is 300, the limit is 256", "NOAUTH Authentication required.", "WRONGPASS invalid username-password pair", "NOPERM this user has no permissions", "WRONGTYPE Operation against a key holding the wrong kind of value", "ERR unknown command 'BANDIT.STATS'", "NOMODEL no such model", "EXISTS model exists with other settings"] {
            assert!(!SinkError::from(server_error(permanent)).is_transient(), "{permanent}");
        }
        let failing_over = RedisError::from((ErrorKind::MasterNameNotFoundBySentinel, "Master with given name not found in sentinel"));
        assert!(SinkError::from(failing_over).is_transient(), "a primary the sentinels are replacing");
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(SinkError::from(refused).is_transient());
        let denied = RedisError::from(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(!SinkError::from(denied).is_transient());
        let auth = RedisError::from((ErrorKind::AuthenticationFailed, "Password authentication failed"));
        assert!(!SinkError::from(auth).is_transient());
    }
}
