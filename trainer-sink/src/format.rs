//! The format layer: a record's bytes into a feedback event, as JSON or as
//! Confluent-framed Avro, before the trainer validates and folds it. Writer
//! schemas come from the Schema Registry or from `<id>.avsc` files in a
//! directory, and are prepared once per id (checked against the reader's
//! schema, the repository's `schemas/feedback.avsc`).
//!
//! A registry that does not answer is retried with back-off, on the
//! consumer thread, up to `schema_registry_retry_ms`; then the record is
//! rejected (dead-lettered with errors_tolerance = all). Records whose
//! schema is already cached are not affected by the registry being down.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bandit_core::event::FeedbackEvent;
use bandit_formats::avro::WriterSchema;
use bandit_formats::registry::RegistryClient;
use bandit_formats::schema::{self, Schema};
use bandit_formats::{framing, json, Error};
use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::error::{Result, SinkError};

/// How events are encoded on the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per record (`core::event::FeedbackEvent`).
    #[default]
    Json,
    /// Avro binary in Confluent's wire format (magic 0, schema id).
    Avro,
}

/// Timeout of one registry call.
const REGISTRY_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where writer schemas come from.
#[derive(Debug)]
enum Schemas {
    Registry { client: RegistryClient, retry_for: Duration },
    Directory(PathBuf),
}

/// Decodes records into feedback events.
#[derive(Debug)]
pub enum Decoder {
    Json,
    Avro(Box<AvroDecoder>),
}

#[derive(Debug)]
pub struct AvroDecoder {
    reader: Schema,
    schemas: Schemas,
    /// Writer schemas by id, prepared or refused for good (an id names one
    /// schema forever). Unknown ids are not kept: the producer may register
    /// them a moment later.
    cache: HashMap<u32, Prepared>,
}

#[derive(Debug)]
enum Prepared {
    Ready(WriterSchema),
    /// Why records with this schema cannot be read as feedback events.
    Refused(String),
}

impl Decoder {
    /// The decoder the configuration asks for.
    ///
    /// # Errors
    /// [`SinkError::Config`] for a bad registry URL or schema directory.
    pub fn new(config: &Config) -> Result<Self> {
        let config_error = |e: Error| SinkError::Config(e.to_string());
        match config.format {
            Format::Json => Ok(Self::Json),
            Format::Avro => {
                let schemas = match (&config.schema_registry_url, &config.schema_dir) {
                    (Some(url), None) => Schemas::Registry {
                        client: RegistryClient::new(url, config.schema_registry_basic_auth.as_deref(), REGISTRY_CALL_TIMEOUT)
                            .map_err(config_error)?,
                        retry_for: Duration::from_millis(config.schema_registry_retry_ms),
                    },
                    (None, Some(dir)) => Schemas::Directory(PathBuf::from(dir)),
                    _ => return Err(SinkError::Config("format = avro needs exactly one of schema_registry_url and schema_dir".into())),
                };
                let reader = schema::feedback_schema().map_err(config_error)?;
                Ok(Self::Avro(Box::new(AvroDecoder { reader, schemas, cache: HashMap::new() })))
            }
        }
    }

    /// The event in a record's value.
    ///
    /// # Errors
    /// A [`bandit_formats::Error`] for a record that cannot be decoded
    /// (the record is rejected), and [`SinkError::Config`] when the registry
    /// refuses our credentials (no record could be read: the sink stops).
    pub fn decode(&mut self, payload: Option<&[u8]>) -> Result<std::result::Result<FeedbackEvent, Error>> {
        match self {
            Self::Json => Ok(json::decode(payload)),
            Self::Avro(avro) => avro.decode(payload),
        }
    }
}

impl AvroDecoder {
    fn decode(&mut self, payload: Option<&[u8]>) -> Result<std::result::Result<FeedbackEvent, Error>> {
        let Some(bytes) = payload else { return Ok(Err(Error::Empty)) };
        let (id, body) = match framing::unframe(bytes) {
            Ok(framed) => framed,
            Err(e) => return Ok(Err(e)),
        };
        if !self.cache.contains_key(&id) {
            match self.fetch(id) {
                Ok(text) => {
                    let prepared = match WriterSchema::prepare(id, &text, &self.reader) {
                        Ok(writer) => Prepared::Ready(writer),
                        Err(Error::IncompatibleSchema { reason, .. }) => Prepared::Refused(reason),
                        Err(other) => Prepared::Refused(other.to_string()),
                    };
                    if let Prepared::Refused(reason) = &prepared {
                        tracing::warn!(schema_id = id, %reason, "a writer schema cannot be read as a feedback event; its records are rejected");
                    }
                    self.cache.insert(id, prepared);
                }
                Err(Error::RegistryRefused(reason)) => return Err(SinkError::Config(format!("schema registry refused: {reason}"))),
                Err(Error::IncompatibleSchema { reason, .. }) => {
                    self.cache.insert(id, Prepared::Refused(reason));
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(match self.cache.get(&id) {
            Some(Prepared::Ready(writer)) => writer.decode(&self.reader, body),
            Some(Prepared::Refused(reason)) => Err(Error::IncompatibleSchema { id, reason: reason.clone() }),
            None => Err(Error::UnknownSchema(id)),
        })
    }

    /// A writer schema's text, from the directory, or from the registry
    /// with back-off while it does not answer (up to the retry time).
    fn fetch(&self, id: u32) -> std::result::Result<String, Error> {
        match &self.schemas {
            Schemas::Directory(dir) => {
                let path = dir.join(format!("{id}.avsc"));
                match std::fs::read_to_string(&path) {
                    Ok(text) => Ok(text),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::UnknownSchema(id)),
                    Err(e) => Err(Error::Io(format!("{}: {e}", path.display()))),
                }
            }
            Schemas::Registry { client, retry_for } => {
                let deadline = Instant::now() + *retry_for;
                let mut backoff = Backoff::default();
                loop {
                    match client.schema_by_id(id) {
                        Err(e) if e.is_transient() && Instant::now() < deadline => {
                            let delay = backoff.next_delay().min(deadline.saturating_duration_since(Instant::now()));
                            tracing::warn!(error = %e, schema_id = id, retry_in = ?delay, "schema registry unreachable; retrying");
                            std::thread::sleep(delay);
                        }
                        Err(e) if e.is_transient() => {
                            tracing::error!(error = %e, schema_id = id, "schema registry still unreachable; the record is rejected");
                            return Err(e);
                        }
                        other => return other,
                    }
                }
            }
        }
    }
}

/// Checks the format settings together.
///
/// # Errors
/// [`SinkError::Config`] naming the problem.
pub fn validate(config: &Config) -> Result<()> {
    let fail = |message: &str| Err(SinkError::Config(message.to_owned()));
    match (config.format, &config.schema_registry_url, &config.schema_dir) {
        (Format::Avro, None, None) => fail("format = avro needs schema_registry_url or schema_dir"),
        (Format::Avro, Some(_), Some(_)) => fail("set schema_registry_url or schema_dir, not both"),
        (Format::Json, Some(_), _) | (Format::Json, _, Some(_)) => {
            fail("schema_registry_url and schema_dir are for format = avro (the format is json)")
        }
        _ if config.schema_registry_basic_auth.is_some() && config.schema_registry_url.is_none() => {
            fail("schema_registry_basic_auth is set but schema_registry_url is not")
        }
        _ if config.schema_registry_basic_auth.as_deref().is_some_and(|auth| !auth.contains(':')) => {
            fail("schema_registry_basic_auth must be user:password")
        }
        // Records wait for the registry on the consumer thread, which must
        // poll within max.poll.interval.ms (librdkafka's default 300 s).
        _ if config.schema_registry_retry_ms > 120_000 => fail("schema_registry_retry_ms must be at most 120000 (2 minutes)"),
        (_, Some(url), _) => RegistryClient::new(url, None, REGISTRY_CALL_TIMEOUT).map(drop).map_err(|e| SinkError::Config(e.to_string())),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn avro(url: Option<&str>, dir: Option<&str>) -> Config {
        Config {
            format: Format::Avro,
            schema_registry_url: url.map(str::to_owned),
            schema_dir: dir.map(str::to_owned),
            ..Config::default()
        }
    }

    #[test]
    fn avro_needs_exactly_one_schema_source() {
        assert!(avro(Some("http://registry:8081"), None).validate().is_ok());
        assert!(avro(None, Some("/etc/bandit/schemas")).validate().is_ok());
        for (config, expected) in [
            (avro(None, None), "needs schema_registry_url or schema_dir"),
            (avro(Some("http://r:8081"), Some("/d")), "not both"),
            (Config { schema_registry_url: Some("http://r:8081".into()), ..Config::default() }, "are for format = avro"),
            (avro(Some("registry:8081"), None), "must start with http:// or https://"),
            (avro(Some("https://user:pw@registry:8081"), None), "not in the URL"),
            (Config { schema_registry_basic_auth: Some("user".into()), ..avro(Some("http://r"), None) }, "user:password"),
            (Config { schema_registry_retry_ms: 300_000, ..avro(Some("http://r"), None) }, "at most 120000"),
        ] {
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    /// The printed configuration (also the start-up log) shows no secret,
    /// and still reads back.
    #[test]
    fn secrets_never_appear_in_the_printed_configuration() {
        let mut config = Config { schema_registry_basic_auth: Some("reader:s3cret-registry".into()), ..avro(Some("https://registry:8081"), None) };
        for (key, value) in [("sasl.password", "s3cret-sasl"), ("ssl.key.password", "s3cret-key"), ("sasl.username", "bandit"), ("security.protocol", "SASL_SSL")] {
            config.kafka.insert(key.into(), value.into());
        }
        let printed = config.to_string();
        assert!(!printed.contains("s3cret"), "{printed}");
        for shown in ["reader:***", "\"sasl.username\" = \"bandit\"", "SASL_SSL", "https://registry:8081", "format = \"avro\""] {
            assert!(printed.contains(shown), "{shown} missing from:\n{printed}");
        }
        let back: Config = toml::from_str(&printed).unwrap();
        assert_eq!(back.schema_registry_url, config.schema_registry_url);
        assert!(format!("{:?}", Decoder::new(&config).unwrap()).contains("authenticated: true"));
        assert!(!format!("{:?}", Decoder::new(&config).unwrap()).contains("s3cret"));
    }

    #[test]
    fn a_schema_directory_serves_ids_and_refuses_unknown_ones() {
        let dir = std::env::temp_dir().join(format!("bandit-schemas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("12.avsc"), schema::FEEDBACK_SCHEMA).unwrap();
        let mut decoder = Decoder::new(&avro(None, dir.to_str())).unwrap();
        let event = FeedbackEvent { event_id: "e".into(), product_id: "p".into(), reward: 0.5, context_vector: vec![1.0], timestamp: 3, ..Default::default() };
        let encoder = bandit_formats::avro::AvroEncoder::new(12, schema::feedback_schema().unwrap());
        assert_eq!(decoder.decode(Some(&encoder.encode(&event).unwrap())).unwrap().unwrap(), event);
        let unknown = bandit_formats::avro::AvroEncoder::new(13, schema::feedback_schema().unwrap());
        let error = decoder.decode(Some(&unknown.encode(&event).unwrap())).unwrap().unwrap_err();
        assert_eq!(error.class_name(), "bandit.UnknownSchema");
        let json = br#"{"event_id": "e", "product_id": "p", "reward": 0.5, "context_vector": [1]}"#;
        assert_eq!(decoder.decode(Some(json)).unwrap().unwrap_err().class_name(), "bandit.UndecodableAvro");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
