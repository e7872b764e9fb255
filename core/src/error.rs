//! The one error type of the core crate. Messages are written to be shown to a
//! Redis user after an `ERR ` prefix (the module adds it), except
//! [`Error::Stale`] and [`Error::Moved`], whose replies start with `STALE` so
//! that writers can tell a fenced write from a bad one.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A vector or matrix has the wrong number of values for the model.
    #[error("{what} has {got} values, model dim is {dim}")]
    DimMismatch { what: String, got: usize, dim: usize },

    /// A payload written for a model of another dimension.
    #[error("payload is for dim {payload}, the model has dim {model}")]
    PayloadDim { payload: usize, model: usize },

    /// A payload that states settings other than the model's.
    #[error("payload has {payload}, the model has {model}")]
    SettingsMismatch { payload: crate::payload::PayloadSettings, model: crate::payload::PayloadSettings },

    /// NaN or an infinity where a finite number is required.
    #[error("value is not a finite number{}", at_field(.field))]
    NotFinite { field: String },

    /// A payload that cannot be decoded or fails validation.
    #[error("invalid payload: {0}")]
    InvalidPayload(String),

    /// A configured bound (dim, arms, bytes, id length) was exceeded.
    #[error("{what} is {got}, the limit is {limit}")]
    TooLarge { what: &'static str, got: usize, limit: usize },

    /// The payload's offset for a partition is behind the model's: another
    /// writer has already published newer state.
    #[error("partition {partition} is at offset {stored} in the model, the payload has {given}")]
    Stale { partition: i32, stored: i64, given: i64 },

    /// The model no longer holds the offset a writer built its payload on
    /// (see [`crate::Payload::base_offsets`]): it went back (a failover lost
    /// a LOAD) or another writer moved it.
    #[error("partition {partition} is at {} in the model, the writer built on {} (the model went back or another writer moved it)", at_offset(*.stored), at_offset(*.expected))]
    Moved { partition: i32, stored: Option<i64>, expected: Option<i64> },

    /// A matrix that must be symmetric positive definite is not.
    #[error("matrix is not positive definite{}", at_field(.field))]
    NotPositiveDefinite { field: String },

    /// A setting outside its domain (alpha < 0, lambda <= 0, ...).
    #[error("{0}")]
    InvalidSetting(String),

    /// A stored snapshot written by a newer or unknown encoder.
    #[error("unsupported snapshot encoding version {0}")]
    UnsupportedSnapshot(i32),
}

fn at_offset(offset: Option<i64>) -> String {
    offset.map_or_else(|| "no offset".to_owned(), |offset| format!("offset {offset}"))
}

fn at_field(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!(" ({field})")
    }
}
