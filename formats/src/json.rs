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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_each_kind_of_bad_event() {
        // What the trainer then sees: the decoded event, validated for dim 2.
        let checked = |bytes: Option<&[u8]>| {
            decode(bytes).map_err(|e| e.to_string()).and_then(|e| e.validate(2).map(|()| e).map_err(|e| e.to_string()))
        };
        let ok = br#"{"event_id": "e", "product_id": "1", "reward": 1, "context_vector": [0.5, 1], "timestamp": 0}"#;
        assert!(checked(Some(ok)).is_ok());
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "invalid JSON event"),
            (br#"{"event_id": "e", "reward": 1, "context_vector": [0.5, 1]}"#, "missing field `product_id`"),
            (br#"{"event_id": "e", "product_id": "1", "reward": 1, "context_vector": [0.5]}"#, "context_vector has 1 values, model dim is 2"),
            (br#"{"event_id": "e", "product_id": "1", "reward": 1e999, "context_vector": [0.5, 1]}"#, "invalid JSON event"),
            (br#"{"event_id": "e", "product_id": "", "reward": 1, "context_vector": [0.5, 1]}"#, "product_id is empty"),
            (br#"{"event_id": "e", "product_id": "1", "reward": "x", "context_vector": [0.5, 1]}"#, "invalid type"),
        ];
        for (bytes, expected) in cases {
            let error = checked(Some(bytes)).unwrap_err();
            assert!(error.contains(expected), "{}: {error}", String::from_utf8_lossy(bytes));
        }
        assert_eq!(decode(None).unwrap_err().to_string(), "empty record (no value)");
    }
}
