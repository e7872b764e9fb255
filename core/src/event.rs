//! The feedback event: what a shop reports after showing a recommendation.
//! Field-compatible with the reference design's FeedbackEvent JSON.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `{"event_id": "e1", "product_id": "42", "reward": 1, "context_vector": [..], "timestamp": 1767225600000}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackEvent {
    pub event_id: String,
    pub product_id: String,
    pub reward: f64,
    pub context_vector: Vec<f64>,
    /// Unix milliseconds when the feedback happened.
    #[serde(default)]
    pub timestamp: i64,
}

impl FeedbackEvent {
    /// Checks that the event can be folded into a model of `dim` features.
    ///
    /// # Errors
    /// [`Error::DimMismatch`], [`Error::NotFinite`] or [`Error::InvalidPayload`]
    /// (empty product id).
    pub fn validate(&self, dim: usize) -> Result<()> {
        if self.product_id.is_empty() {
            return Err(Error::InvalidPayload("product_id is empty".into()));
        }
        if self.context_vector.len() != dim {
            return Err(Error::DimMismatch { what: "context_vector".into(), got: self.context_vector.len(), dim });
        }
        if !self.reward.is_finite() {
            return Err(Error::NotFinite { field: "reward".into() });
        }
        if !self.context_vector.iter().all(|v| v.is_finite()) {
            return Err(Error::NotFinite { field: "context_vector".into() });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_reference_shape_and_validates() {
        let event: FeedbackEvent = serde_json::from_str(
            r#"{"event_id": "e1", "product_id": "42", "reward": 1, "context_vector": [0.1, 0.2], "timestamp": 1767225600000}"#,
        )
        .unwrap();
        assert_eq!(event.reward, 1.0);
        event.validate(2).unwrap();
        assert!(matches!(event.validate(3), Err(Error::DimMismatch { .. })));
    }
}
