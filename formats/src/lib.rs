//! Feedback events as they travel on Kafka: JSON (the default), or Avro in
//! Confluent's wire format with schemas from a Confluent Schema Registry.
//! The decoding of bytes into a [`FeedbackEvent`] lives here, for the sink,
//! the client and the benchmarks; what makes an event foldable (dim, finite
//! numbers) stays with [`FeedbackEvent::validate`] in core.
//!
//! Layout:
//! - [`schema`]: the feedback event's Avro schema (`schemas/feedback.avsc`).
//! - [`framing`]: Confluent's wire format (magic byte 0, schema id, body).
//! - [`avro`]: Avro encoding and decoding with reader/writer resolution.
//! - [`json`]: the JSON form.
//! - [`registry`]: the Schema Registry REST client (the two calls we use).
//! - [`error`]: this crate's error type; each rejection has a stable class.
//!
//! [`FeedbackEvent`]: bandit_core::event::FeedbackEvent
//! [`FeedbackEvent::validate`]: bandit_core::event::FeedbackEvent::validate

pub mod avro;
pub mod error;
pub mod framing;
pub mod json;
pub mod registry;
pub mod schema;

pub use error::{Error, Result};
