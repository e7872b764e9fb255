//! Errors of this crate. No message carries a password: URL errors name the
//! part that is wrong, never the URL itself, and connection errors are the
//! redis crate's own ([`redis::RedisError`], returned as they are so that
//! callers classify them by kind and code), which do not repeat credentials.

/// Result alias of this crate.
pub type Result<T, E = ConnectError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL does not follow the scheme (see the crate documentation).
    #[error("redis URL: {0}")]
    Url(String),
    /// A query parameter this scheme does not know (its name only).
    #[error("redis URL: unknown parameter {0:?} (known: tls_ca, tls_cert, tls_key, read_from, replicas, sentinel_user, sentinel_password)")]
    UnknownParameter(String),
    /// A certificate or key file named by tls_* cannot be read.
    #[error("redis TLS: {0}")]
    Tls(String),
}

impl ConnectError {
    pub(crate) fn url(reason: impl Into<String>) -> Self {
        Self::Url(reason.into())
    }
}
