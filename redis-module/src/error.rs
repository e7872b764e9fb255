//! Errors of the module's commands, each rendered as the reply a Redis user
//! expects (`ERR …`, `WRONGTYPE …`, `STALE …`).

use bandit_core::Error as CoreError;

/// Result alias of this crate.
pub type Result<T, E = CommandError> = std::result::Result<T, E>;

/// Each error reply starts with a code that programs can act on without
/// reading the message: Redis' own (`ERR`, `WRONGTYPE`) and the module's
/// (`NOMODEL`, `EXISTS`, `SETTINGS`, `STALE`, `PARTS`), documented in the README.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("ERR wrong number of arguments for '{0}' command")]
    WrongArity(&'static str),
    /// An argument where none was expected, or a missing one.
    #[error("ERR syntax error, a value is missing after the last option")]
    Syntax,
    /// An unknown option, named.
    #[error("ERR syntax error, unexpected '{0}'")]
    Unexpected(String),
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
    #[error("NOMODEL no such model")]
    NoSuchModel,
    /// CREATE of a model that exists with other settings.
    #[error("EXISTS {0}")]
    Exists(String),
    /// LOAD of a payload that states other settings than the model's.
    #[error("SETTINGS {0}")]
    Settings(String),
    #[error("ERR no such arm")]
    NoSuchArm,
    #[error("STALE {0}")]
    Stale(String),
    /// A part of a LOAD in parts that does not continue the flush being
    /// received (or a last part whose earlier parts were refused or lost):
    /// the writer sends the flush again from part 0.
    #[error("PARTS {0}")]
    Parts(String),
    /// This server became a replica while a LOAD was prepared.
    #[error("READONLY You can't write against a read only replica.")]
    ReadOnly,
    /// The key left this node (a slot migration) while a LOAD was prepared:
    /// the client retries, and is redirected.
    #[error("TRYAGAIN the model moved while the LOAD was prepared; retry")]
    TryAgain,
    #[error("ERR {0}")]
    Other(String),
}

impl From<CoreError> for CommandError {
    fn from(error: CoreError) -> Self {
        match error {
            CoreError::Stale { .. } | CoreError::Moved { .. } => Self::Stale(error.to_string()),
            CoreError::SettingsMismatch { .. } => Self::Settings(error.to_string()),
            other => Self::Other(other.to_string()),
        }
    }
}

impl CommandError {
    /// The syntax error for an unknown option, naming it (shortened and made
    /// printable, since it is outside data).
    pub fn unexpected(arg: &[u8]) -> Self {
        const SHOWN: usize = 32;
        let text = String::from_utf8_lossy(arg.get(..SHOWN).unwrap_or(arg));
        let text: String = text.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
        Self::Unexpected(if arg.len() > SHOWN { format!("{text}…") } else { text })
    }
}
