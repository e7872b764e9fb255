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
    /// Written as a signed 32-bit integer, Avro's `int` (apache-avro maps
    /// u32 to a long): at most 2³¹ − 1.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "position_as_int")]
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
    /// Written as a signed 64-bit integer, so that it is Avro's `long`
    /// (apache-avro maps u64 to a fixed, not to a long): a seq must be below
    /// 2⁶³, which the join's (offset << 16 | item) is for any offset below
    /// 2⁴⁷. Read from any non-negative integer.
    #[serde(with = "seq_as_long")]
    pub seq: u64,
}

/// [`FeedbackEvent::position`] as a signed 32-bit integer.
mod position_as_int {
    use serde::de::Error as _;
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(position: &Option<u32>, serializer: S) -> Result<S::Ok, S::Error> {
        match position {
            Some(position) => {
                let int = i32::try_from(*position).map_err(|_| S::Error::custom(format!("position {position} is above 2^31 - 1")))?;
                serializer.serialize_some(&int)
            }
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
        Option::<i32>::deserialize(deserializer)?
            .map(|int| u32::try_from(int).map_err(|_| D::Error::custom(format!("position {int} is negative"))))
            .transpose()
    }
}

/// [`Source::seq`] as a signed 64-bit integer.
mod seq_as_long {
    use serde::de::Visitor;
    use serde::ser::Error as _;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(seq: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        let long = i64::try_from(*seq).map_err(|_| S::Error::custom(format!("source seq {seq} is above 2^63 - 1")))?;
        serializer.serialize_i64(long)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        struct Seq;
        impl Visitor<'_> for Seq {
            type Value = u64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<u64, E> {
                u64::try_from(value).map_err(|_| E::custom(format!("source seq {value} is negative")))
            }
            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<u64, E> {
                Ok(value)
            }
        }
        deserializer.deserialize_i64(Seq)
    }
}

impl FeedbackEvent {
    /// Checks that the event can be folded into a model of `dim` features.
    ///
    /// # Errors
    /// [`Error::DimMismatch`], [`Error::NotFinite`] or [`Error::InvalidPayload`]
    /// (empty product id, negative source partition).
    pub fn validate(&self, dim: usize) -> Result<()> {
        if self.product_id.is_empty() {
            return Err(Error::InvalidPayload("product_id is empty".into()));
        }
        if let Some(source) = self.source.filter(|source| source.partition < 0) {
            return Err(Error::InvalidPayload(format!("source partition {} is negative", source.partition)));
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

    #[test]
    fn a_joined_example_round_trips_in_json() {
        let text = r#"{"event_id":"e1","product_id":"42","reward":0.5,"context_vector":[0.1],"timestamp":7,"position":3,"probability":0.25,"source":{"partition":2,"seq":9223372036854775807}}"#;
        let event: FeedbackEvent = serde_json::from_str(text).unwrap();
        assert_eq!((event.position, event.probability), (Some(3), Some(0.25)));
        assert_eq!(event.source, Some(Source { partition: 2, seq: i64::MAX as u64 }));
        assert_eq!(serde_json::to_string(&event).unwrap(), text);
        // Any non-negative seq is read; negative numbers are not.
        let above = text.replace("9223372036854775807", "18446744073709551615");
        assert_eq!(serde_json::from_str::<FeedbackEvent>(&above).unwrap().source.unwrap().seq, u64::MAX);
        assert!(serde_json::from_str::<FeedbackEvent>(&text.replace("9223372036854775807", "-1")).is_err());
        assert!(serde_json::from_str::<FeedbackEvent>(&text.replace(r#""position":3"#, r#""position":-3"#)).is_err());
        // A negative source partition can be read, but never folded.
        let negative: FeedbackEvent = serde_json::from_str(&text.replace(r#""partition":2"#, r#""partition":-2"#)).unwrap();
        assert_eq!(negative.validate(1).unwrap_err().to_string(), "invalid payload: source partition -2 is negative");
    }
}
