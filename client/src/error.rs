//! Errors of the client library.
//!
//! Every variant's message is complete on its own and no variant exposes the
//! error it was made from as its `source`: callers print errors with their
//! chain (`{:#}` in anyhow), and a wrapped error that is also the source would
//! print its text twice.

/// Result alias of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Redis or the module answered a command with an error reply, e.g.
    /// `ERR no such model`, `STALE …`, `SETTINGS …`, `WRONGTYPE …`.
    #[error("{}", server_text(.code, .message))]
    Server {
        /// The error code, the reply's first word (`ERR`, `STALE`, …).
        code: String,
        /// The rest of the reply.
        message: String,
    },
    /// Redis answered "unknown command" to a BANDIT.* command.
    #[error("the bandit module is not loaded in this Redis at {url} ({message})")]
    ModuleNotLoaded { url: String, message: String },
    /// The model key does not exist (`NOMODEL`).
    #[error("no such model '{model}' at {url}")]
    NoSuchModel { model: String, url: String },
    /// A context whose length is not the model's dim.
    #[error("the context has {given} values, model dim is {dim}")]
    ContextLength { given: usize, dim: usize },
    /// Connecting to or talking with Redis failed (not an error reply).
    #[error("redis: {0}")]
    Redis(String),
    /// The Redis URL or its TLS files are not usable (the message names no
    /// password).
    #[error("{0}")]
    Connect(String),
    /// Kafka client or delivery error.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A reply or payload that is not what the module sends.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// Core math or payload validation.
    #[error("{0}")]
    Core(bandit_core::Error),
    /// Input files (CSV, payloads).
    #[error("{0}")]
    Input(String),
    #[error("simulation: {0}")]
    Simulation(String),
    #[error("io: {0}")]
    Io(std::io::Error),
}

/// `ERR` is Redis' generic code and says nothing; other codes (`STALE`,
/// `WRONGTYPE`, `SETTINGS`) are part of the message, as redis-cli shows them.
fn server_text(code: &str, message: &str) -> String {
    if code == "ERR" || code.is_empty() {
        message.to_owned()
    } else {
        format!("{code} {message}")
    }
}

impl ClientError {
    /// Whether Redis refused the command as unknown: the module is missing.
    #[must_use]
    pub fn is_unknown_command(&self) -> bool {
        matches!(self, Self::Server { code, message } if code == "ERR" && message.starts_with("unknown command"))
    }

    /// [`ClientError::ModuleNotLoaded`] for an unknown-command reply from the
    /// server at `url`; any other error unchanged.
    #[must_use]
    pub fn naming_server(self, url: &str) -> Self {
        match self {
            Self::Server { message, .. } if message.starts_with("unknown command") => {
                Self::ModuleNotLoaded { url: redact_url(url), message }
            }
            other => other,
        }
    }

    /// As [`Self::naming_server`], and [`ClientError::NoSuchModel`] for a
    /// missing `model` (code `NOMODEL`; `ERR no such model` from modules
    /// before the code existed).
    #[must_use]
    pub fn naming_model(self, url: &str, model: &str) -> Self {
        match self.naming_server(url) {
            Self::Server { code, message } if code == "NOMODEL" || (code == "ERR" && message == "no such model") => {
                Self::NoSuchModel { model: model.to_owned(), url: redact_url(url) }
            }
            other => other,
        }
    }
}

/// The URL without a password, for messages.
fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://…{}", url.get(at..).unwrap_or_default()),
        _ => url.to_owned(),
    }
}

impl From<redis::RedisError> for ClientError {
    fn from(error: redis::RedisError) -> Self {
        // An error reply from the server has a code and a detail; the
        // library's Display would add "An error was signalled by the server -
        // ResponseError:" around them.
        match (error.code(), error.detail()) {
            (Some(code), Some(detail)) => Self::Server { code: code.to_owned(), message: detail.to_owned() },
            _ => Self::Redis(error.to_string()),
        }
    }
}

impl From<bandit_connect::ConnectError> for ClientError {
    fn from(error: bandit_connect::ConnectError) -> Self {
        Self::Connect(error.to_string())
    }
}

impl From<rdkafka::error::KafkaError> for ClientError {
    fn from(error: rdkafka::error::KafkaError) -> Self {
        Self::Kafka(error.to_string())
    }
}

impl From<bandit_core::Error> for ClientError {
    fn from(error: bandit_core::Error) -> Self {
        Self::Core(error)
    }
}

impl From<std::io::Error> for ClientError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// An error reply as the redis crate parses it from the wire.
    fn server_error(code: &str, detail: &str) -> redis::RedisError {
        if code == "ERR" {
            redis::RedisError::from((redis::ErrorKind::ResponseError, "An error was signalled by the server", detail.to_owned()))
        } else {
            redis::make_extension_error(code.to_owned(), Some(detail.to_owned()))
        }
    }

    /// The whole chain, as `bandit` prints it (anyhow's `{:#}`).
    fn printed(error: ClientError) -> String {
        format!("{:#}", anyhow::Error::new(error).context("BANDIT.RANK m"))
    }

    #[test]
    fn a_server_error_prints_once() {
        assert_eq!(printed(server_error("ERR", "no such model").into()), "BANDIT.RANK m: no such model");
        assert_eq!(
            printed(server_error("STALE", "partition 1 is at offset 50 in the model, the payload has 49").into()),
            "BANDIT.RANK m: STALE partition 1 is at offset 50 in the model, the payload has 49"
        );
    }

    #[test]
    fn wrapped_errors_print_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        assert_eq!(printed(io.into()), "BANDIT.RANK m: io: gone");
        let core = bandit_core::Error::DimMismatch { what: "context".into(), got: 2, dim: 3 };
        let text = printed(core.into());
        assert_eq!(text.matches("has 2 values").count(), 1, "{text}");
        let refused = redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
        let text = printed(refused.into());
        assert_eq!(text.matches("refused").count(), 1, "{text}");
    }

    #[test]
    fn a_missing_model_is_named() {
        for (code, detail) in [("NOMODEL", "no such model"), ("ERR", "no such model")] {
            let error = ClientError::from(server_error(code, detail)).naming_model("redis://127.0.0.1:7000", "shop");
            assert_eq!(printed(error), "BANDIT.RANK m: no such model 'shop' at redis://127.0.0.1:7000");
        }
        let other = ClientError::from(server_error("ERR", "no such arm")).naming_model("redis://127.0.0.1:7000", "shop");
        assert_eq!(other.to_string(), "no such arm");
    }

    #[test]
    fn unknown_command_names_the_server() {
        let error: ClientError = server_error("ERR", "unknown command 'BANDIT.RANK', with args beginning with: 'm' ").into();
        assert!(error.is_unknown_command());
        let named = error.naming_server("redis://:secret@127.0.0.1:7000");
        let text = named.to_string();
        assert!(text.starts_with("the bandit module is not loaded in this Redis at redis://…@127.0.0.1:7000"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
