//! The JSON form of a feedback event (the sink's default format).

use bandit_core::event::FeedbackEvent;

use crate::error::{Error, Result};

/// Parses one JSON event (validation is the trainer's).
///
/// # Errors
/// [`Error::Empty`] or [`Error::Json`].
pub fn decode(payload: Option<&[u8]>) -> Result<FeedbackEvent> {
    let bytes = payload.ok_or(Error::Empty)?;
    serde_json::from_slice(bytes).map_err(|e| Error::Json(e.to_string()))
}

/// The JSON bytes of an event.
///
/// # Errors
/// [`Error::Encode`] (a non-finite number).
pub fn encode(event: &FeedbackEvent) -> Result<Vec<u8>> {
    serde_json::to_vec(event).map_err(|e| Error::Encode(e.to_string()))
}
