//! Errors of the module's commands, each rendered as the reply a Redis user
//! expects (`ERR …`, `WRONGTYPE …`, `STALE …`).

use bandit_core::Error as CoreError;

/// Result alias of this crate.
pub type Result<T, E = CommandError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(&'static str),
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR syntax error, {0}")]
    SyntaxDetail(String),
    #[error("ERR value is not a valid float")]
    NotAFloat,
    #[error("ERR value is not a finite number")]
    NotFinite,
    #[error("ERR value is not an integer or out of range")]
    NotAnInteger,
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    #[error("ERR no such model")]
    NoSuchModel,
    #[error("ERR no such arm")]
    NoSuchArm,
    #[error("STALE {0}")]
    Stale(String),
    #[error("ERR {0}")]
    Other(String),
}

impl From<CoreError> for CommandError {
    fn from(error: CoreError) -> Self {
        match error {
            CoreError::Stale { .. } => Self::Stale(error.to_string()),
            other => Self::Other(other.to_string()),
        }
    }
}
