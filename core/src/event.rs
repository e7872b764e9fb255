//! The feedback event: what a shop reports after showing a recommendation.
//! Field-compatible with the reference design's FeedbackEvent JSON.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `{"event_id": "e1", "product_id": "42", "reward": 1, "context_vector": [..], "timestamp": 1767225600000}`
///
/// The join (`bandit-join`) adds where the item was shown, with what
/// probability, and `source`: the decisions partition and the example's
/// sequence number there, which the trainer fences so that an example the
/// join emits again after a crash is folded once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedbackEvent {
    pub event_id: String,
    pub product_id: String,
    pub reward: f64,
    pub context_vector: Vec<f64>,
    /// Unix milliseconds when the feedback happened.
    #[serde(default)]
    pub timestamp: i64,
    /// The shown item's position (0 is the top), when the join emitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// The probability that the item was placed at `position`, given the
    /// items above it, when the join emitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Where the join read the decision, when it emitted this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// A joined example's origin: `{"partition": 3, "seq": 196608}`. `seq` grows
/// with every example the join closes from that decisions partition (see
/// [`crate::join::Example::seq`]); the same decision always gets the same
/// numbers, so the trainer drops a sequence number it has already folded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The decisions partition.
    pub partition: i32,
    pub seq: u64,
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
