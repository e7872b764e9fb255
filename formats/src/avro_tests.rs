#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::schema::{feedback_schema, FEEDBACK_SCHEMA};

/// The feedback schema with one more field, as a newer producer would
/// write it: an optional session id, default null.
fn with_session_field() -> String {
    FEEDBACK_SCHEMA.replacen(
        r#"{"name": "timestamp""#,
        r#"{"name": "session_id", "type": ["null", "string"], "default": null}, {"name": "timestamp""#,
        1,
    )
}

fn event() -> FeedbackEvent {
    FeedbackEvent { event_id: "e1".into(), product_id: "p".into(), reward: 1.5, context_vector: vec![0.25, -2.0], timestamp: 1000, ..Default::default() }
}

/// `event()` in Avro binary, written out by hand from the specification:
/// strings and counts as zig-zag varints, doubles as 8 bytes little-endian,
/// an array as one block (count, items) closed by a 0 count.
fn event_body() -> Vec<u8> {
    let mut out = vec![4, b'e', b'1', 2, b'p'];
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0xF8, 0x3F]); // 1.5
    out.push(4); // two items
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0xD0, 0x3F]); // 0.25
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0xC0]); // -2.0
    out.push(0); // end of the array
    out.extend_from_slice(&[0xD0, 0x0F]); // 1000 → zig-zag 2000
    out.extend_from_slice(&[0, 0, 0]); // position, probability, source: the null branch of each union
    out
}

#[test]
fn encodes_as_the_specification_says_and_decodes_back() {
    let reader = feedback_schema().unwrap();
    let framed = AvroEncoder::new(7, reader.clone()).encode(&event()).unwrap();
    let mut expected = vec![0, 0, 0, 0, 7];
    expected.extend(event_body());
    assert_eq!(framed, expected);
    let writer = WriterSchema::prepare(7, FEEDBACK_SCHEMA, &reader).unwrap();
    assert!(writer.is_reader);
    assert_eq!(writer.decode(&reader, &event_body()).unwrap(), event());
}

#[test]
fn a_newer_writer_with_an_optional_field_is_read_by_the_older_reader() {
    let reader = feedback_schema().unwrap();
    let writer = WriterSchema::prepare(8, &with_session_field(), &reader).unwrap();
    assert!(!writer.is_reader);
    // The body with the session id "s9" (union branch 1) before the timestamp.
    let mut body = event_body();
    let timestamp = body.split_off(body.len() - 5); // the timestamp and the three null unions after it
    body.extend_from_slice(&[2, 4, b's', b'9']);
    body.extend(timestamp);
    assert_eq!(writer.decode(&reader, &body).unwrap(), event());
}

#[test]
fn an_older_writer_is_read_by_a_newer_reader_with_the_default() {
    let newer = Schema::parse_str(&with_session_field()).unwrap();
    let writer = WriterSchema::prepare(7, FEEDBACK_SCHEMA, &newer).unwrap();
    assert_eq!(writer.decode(&newer, &event_body()).unwrap(), event());
}

#[test]
fn a_writer_without_a_required_field_is_refused_once_at_preparation() {
    let reader = feedback_schema().unwrap();
    let without_context = r#"{"type": "record", "name": "FeedbackEvent", "namespace": "bandit", "fields": [
        {"name": "event_id", "type": "string"}, {"name": "product_id", "type": "string"}, {"name": "reward", "type": "double"}]}"#;
    let error = WriterSchema::prepare(9, without_context, &reader).unwrap_err();
    assert!(matches!(&error, Error::IncompatibleSchema { id: 9, reason } if reason.contains("context_vector")), "{error}");
    assert_eq!(error.class_name(), "bandit.IncompatibleSchema");
    let reward_as_text = FEEDBACK_SCHEMA.replacen(r#""name": "reward", "type": "double""#, r#""name": "reward", "type": "string""#, 1);
    assert!(matches!(WriterSchema::prepare(10, &reward_as_text, &reader), Err(Error::IncompatibleSchema { id: 10, .. })));
    assert!(matches!(WriterSchema::prepare(11, "{not json", &reader), Err(Error::IncompatibleSchema { id: 11, .. })));
}

#[test]
fn bytes_that_do_not_decode_are_named() {
    let reader = feedback_schema().unwrap();
    let writer = WriterSchema::prepare(7, FEEDBACK_SCHEMA, &reader).unwrap();
    let body = event_body();
    for cut in [0, 3, body.len() - 1] {
        let error = writer.decode(&reader, &body[..cut]).unwrap_err();
        assert!(matches!(error, Error::Undecodable { id: 7, .. }), "cut at {cut}: {error}");
    }
    let mut longer = body.clone();
    longer.push(0);
    assert!(matches!(writer.decode(&reader, &longer), Err(Error::Undecodable { reason, .. }) if reason.contains("1 bytes after")));
    // A string length far past the end.
    assert!(matches!(writer.decode(&reader, &[0xFE, 0xFF, 0xFF, 0x0F]), Err(Error::Undecodable { .. })));
}

/// An array block that claims 2²⁸ items: refused, not allocated, through
/// both decode paths (our own schema, and an evolved writer's).
#[test]
fn a_huge_declared_array_is_refused_not_allocated() {
    let reader = feedback_schema().unwrap();
    let mut body = vec![4, b'e', b'1', 2, b'p'];
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0xF8, 0x3F]);
    // Zig-zag 2·2²⁸ as a varint.
    body.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x04]);
    for writer in [WriterSchema::prepare(7, FEEDBACK_SCHEMA, &reader).unwrap(), WriterSchema::prepare(8, &with_session_field(), &reader).unwrap()] {
        assert!(matches!(writer.decode(&reader, &body), Err(Error::Undecodable { .. })));
    }
}

/// A joined example: position, probability and source (the union's record
/// branch), with its seq as Avro's long. Written out by hand, decoded back
/// through both paths (our schema, and an evolved writer's through
/// resolution). A seq above 2⁶³ − 1 has no long: refused at encoding.
#[test]
fn a_joined_example_with_its_source_round_trips() {
    use bandit_core::event::Source;
    let reader = feedback_schema().unwrap();
    let joined = FeedbackEvent {
        position: Some(2),
        probability: Some(0.25),
        source: Some(Source { partition: 3, seq: 196_609 }),
        ..event()
    };
    let mut body = event_body();
    body.truncate(body.len() - 3);
    body.extend_from_slice(&[2, 4]); // position: branch 1, int 2
    body.push(2); // probability: branch 1
    body.extend_from_slice(&0.25f64.to_le_bytes());
    body.extend_from_slice(&[2, 6]); // source: branch 1, partition 3
    body.extend_from_slice(&[0x82, 0x80, 0x18]); // seq 196609 → zig-zag 393218 as a varint
    let framed = AvroEncoder::new(7, reader.clone()).encode(&joined).unwrap();
    assert_eq!(&framed[5..], body.as_slice());
    let ours = WriterSchema::prepare(7, FEEDBACK_SCHEMA, &reader).unwrap();
    assert_eq!(ours.decode(&reader, &body).unwrap(), joined);
    let evolved = WriterSchema::prepare(8, &with_session_field(), &reader).unwrap();
    let mut with_session = body.clone();
    let tail = with_session.split_off(event_body().len() - 5);
    with_session.push(0); // session id: null
    with_session.extend(tail);
    assert_eq!(evolved.decode(&reader, &with_session).unwrap(), joined);
    // The largest seq a long holds round trips; one more is refused.
    let largest = FeedbackEvent { source: Some(Source { partition: 0, seq: i64::MAX as u64 }), ..joined.clone() };
    let framed = AvroEncoder::new(7, reader.clone()).encode(&largest).unwrap();
    assert_eq!(ours.decode(&reader, &framed[5..]).unwrap(), largest);
    let beyond = FeedbackEvent { source: Some(Source { partition: 0, seq: 1 << 63 }), ..joined };
    let error = AvroEncoder::new(7, reader).encode(&beyond).unwrap_err();
    assert!(error.to_string().contains("above 2^63 - 1"), "{error}");
}
