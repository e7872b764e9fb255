//! Feedback events in Avro binary. A record's writer schema is prepared
//! once per schema id ([`WriterSchema::prepare`]): checked against the
//! reader's schema (a writer lacking a required field is refused there,
//! once), and marked when it is the reader's own, which decodes straight
//! into the event. Any other compatible writer goes through Avro's
//! reader/writer resolution (fields added with a default, fields dropped).

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::Schema;
use apache_avro::writer::datum::GenericDatumWriter;
use bandit_core::event::FeedbackEvent;

use crate::error::{Error, Result};
use crate::framing;

/// A writer's schema, ready to decode records written with it.
#[derive(Debug)]
pub struct WriterSchema {
    pub id: u32,
    schema: Schema,
    /// Same parsing canonical form as the reader's: no resolution needed.
    is_reader: bool,
}

/// The most one record's decode may allocate: far above any feedback event
/// (a context of 256 doubles is 2 KB), far below what could hurt the sink.
pub const MAX_ALLOCATION_BYTES: usize = 16 << 20;

impl WriterSchema {
    /// Parses and checks the writer's schema `text` against `reader`.
    ///
    /// # Errors
    /// [`Error::IncompatibleSchema`] when it is not valid Avro or when
    /// records written with it cannot be read as `reader` (e.g. a required
    /// field is missing and has no default in the reader).
    pub fn prepare(id: u32, text: &str, reader: &Schema) -> Result<Self> {
        let incompatible = |reason: String| Error::IncompatibleSchema { id, reason };
        let schema = Schema::parse_str(text).map_err(|e| incompatible(format!("not a valid Avro schema: {e}")))?;
        SchemaCompatibility::can_read(&schema, reader).map_err(|e| incompatible(e.to_string()))?;
        let is_reader = schema == *reader;
        Ok(Self { id, schema, is_reader })
    }

    /// Decodes one Avro body (the bytes after the framing) written with
    /// this schema, as the `reader` schema sees it.
    ///
    /// # Errors
    /// [`Error::Undecodable`] when the bytes do not decode, do not resolve,
    /// or are followed by more bytes than the event.
    pub fn decode(&self, reader: &Schema, body: &[u8]) -> Result<FeedbackEvent> {
        // A record may declare any block length; bound what one decode may
        // allocate (apache-avro's default is 512 MB) before the first one.
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        let undecodable = |reason: String| Error::Undecodable { id: self.id, reason };
        let mut rest = body;
        let event = if self.is_reader {
            // Straight into the struct: no intermediate value tree.
            let datum = GenericDatumReader::builder(&self.schema).build().map_err(|e| undecodable(e.to_string()))?;
            datum.read_deser::<FeedbackEvent>(&mut rest).map_err(|e| undecodable(e.to_string()))?
        } else {
            let datum = GenericDatumReader::builder(&self.schema)
                .reader_schema(reader)
                .build()
                .map_err(|e| undecodable(e.to_string()))?;
            let value = datum.read_value(&mut rest).map_err(|e| undecodable(e.to_string()))?;
            apache_avro::from_value::<FeedbackEvent>(&value).map_err(|e| undecodable(e.to_string()))?
        };
        if !rest.is_empty() {
            return Err(undecodable(format!("{} bytes after the event", rest.len())));
        }
        Ok(event)
    }
}

/// Writes events as framed Avro records with one schema and id.
#[derive(Debug)]
pub struct AvroEncoder {
    id: u32,
    schema: Schema,
}

impl AvroEncoder {
    pub fn new(id: u32, schema: Schema) -> Self {
        Self { id, schema }
    }

    /// The framed record of `event` into `out` (cleared first, so one
    /// buffer serves every event).
    ///
    /// # Errors
    /// [`Error::Encode`] when the event does not fit the schema.
    pub fn encode_into(&self, event: &FeedbackEvent, out: &mut Vec<u8>) -> Result<()> {
        framing::frame_header(self.id, out);
        let datum = GenericDatumWriter::builder(&self.schema).build().map_err(|e| Error::Encode(e.to_string()))?;
        datum.write_ser(out, event).map_err(|e| Error::Encode(e.to_string()))?;
        Ok(())
    }

    /// The framed record of `event`.
    ///
    /// # Errors
    /// As [`AvroEncoder::encode_into`].
    pub fn encode(&self, event: &FeedbackEvent) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode_into(event, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
#[path = "avro_tests.rs"]
mod tests;
