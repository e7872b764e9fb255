//! The feedback event's Avro schema, the repository's
//! `schemas/feedback.avsc`, compiled in: what the client writes with and
//! the sink reads with.

pub use apache_avro::schema::Schema;

use crate::error::{Error, Result};

/// The text of `schemas/feedback.avsc`.
pub const FEEDBACK_SCHEMA: &str = include_str!("../../schemas/feedback.avsc");

/// The Schema Registry subject of a topic's values under Confluent's
/// default TopicNameStrategy.
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// The feedback event's schema.
///
/// # Errors
/// Never for the compiled-in text (a unit test parses it); the Result is
/// for the types' sake.
pub fn feedback_schema() -> Result<Schema> {
    parse(FEEDBACK_SCHEMA)
}

/// Parses a schema's JSON text.
///
/// # Errors
/// [`Error::Io`] naming Avro's complaint.
pub fn parse(text: &str) -> Result<Schema> {
    Schema::parse_str(text).map_err(|e| Error::Io(format!("invalid Avro schema: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_schema_parses_and_names_the_event() {
        let schema = feedback_schema().unwrap();
        let Schema::Record(record) = &schema else { panic!("not a record: {schema:?}") };
        assert_eq!(record.name.fullname(None), "bandit.FeedbackEvent");
        let fields: Vec<&str> = record.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(fields, ["event_id", "product_id", "reward", "context_vector", "timestamp", "position", "probability", "source"]);
        assert_eq!(value_subject("feedback"), "feedback-value");
    }
}
