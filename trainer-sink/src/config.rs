//! Configuration, Kafka Connect style: one struct, [`Config`], read from a
//! TOML file, overridden by environment variables (`BANDIT_SINK_*`),
//! overridden by flags. The layering is figment's (`config_sources.rs`); this file
//! holds what the settings are, their defaults and their checks. Every field
//! is documented here, checked on its own and against the others at start-up,
//! and printed (secrets masked) when the sink starts.

use std::collections::BTreeMap;
use std::fmt;

use bandit_connect::Target;
use bandit_core::{Limits, ModelSettings};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Result, SinkError};
pub use crate::format::Format;

#[path = "config_sources.rs"]
mod sources;

pub use sources::{Cli, Setting, SETTINGS};
pub(crate) use sources::{as_table, kafka_property};

/// What to do with an event that cannot be folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tolerance {
    /// Stop the sink at the first invalid event, without moving past it.
    None,
    /// Send invalid events to the dead-letter topic and go on.
    All,
}

/// The effective configuration. As a TOML file it is these fields, flat,
/// plus a `[kafka]` table; a missing field keeps its default
/// ([`Config::default`]) and an unknown one is refused.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The feedback topic to consume.
    pub topic: String,
    /// Consumer group; instances with the same group share the partitions.
    pub group_id: String,
    /// Redis URL in bandit_connect's scheme: `redis://`, `rediss://` (TLS,
    /// `tls_ca`/`tls_cert`/`tls_key`), `redis+cluster://`, `redis+sentinel://…/<master>`,
    /// `unix://`. Printed and logged with its passwords masked.
    pub redis_url: String,
    /// After each BANDIT.LOAD, wait for this many replicas of the model's
    /// primary to acknowledge it (WAIT); 0 (the default) does not wait. Too
    /// few acknowledgements are logged and counted, not retried.
    pub min_replicas_ack: u32,
    /// How long WAIT may block a flush, in milliseconds (with min_replicas_ack).
    pub wait_timeout_ms: u64,
    /// Largest share of a flush's arms sent in one BANDIT.LOAD, in bytes. A
    /// larger flush goes as several `BANDIT.LOAD … PART` commands that the
    /// module applies together, atomically: Redis receives (and frees) each
    /// command on its main thread in one go, so an 88 MB LOAD stalls every
    /// other client for several milliseconds where 8 MB parts do not.
    pub load_part_bytes: usize,
    /// Key of the model in Redis.
    pub model_key: String,
    /// Context dimension; events with another length are invalid. At most
    /// the module's default MAX-DIM (`Limits::default().max_dim`).
    pub dim: usize,
    /// Ridge prior: every arm starts at A = λI, b = 0. Must equal the model's.
    pub lambda: f64,
    /// ALPHA the model is created with (RANK's default exploration); an
    /// existing model keeps its own.
    pub alpha: f64,
    /// Forgetting per event of an arm, in (0, 1]; 1 (the default) forgets
    /// nothing. The model is created with it and must have it.
    pub decay: f64,
    /// How often changed arms are inverted and published, in milliseconds.
    pub flush_interval_ms: u64,
    /// Publish early once this many arms are waiting.
    pub max_dirty_arms: usize,
    /// Pause consumption when this many events are folded but unpublished
    /// (e.g. while Redis is down); resume once a flush succeeds.
    pub max_unflushed_events: u64,
    /// `none` or `all`, as Kafka Connect's `errors.tolerance`. Spelled flat
    /// like the flag and the variable; Connect's `[errors] tolerance` is
    /// refused with a pointer here.
    pub errors_tolerance: Tolerance,
    /// Where invalid events go when errors_tolerance = all. Empty, in any
    /// layer, means none (and clears a topic set by a lower layer).
    #[serde(deserialize_with = "empty_is_none", skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Address of the `/metrics` and `/health` endpoint; empty disables it.
    #[serde(deserialize_with = "empty_is_none", serialize_with = "none_is_empty")]
    pub metrics_addr: Option<String>,
    /// How events are encoded: `json` (the default) or `avro` (Confluent's
    /// wire format; needs schema_registry_url or schema_dir).
    pub format: Format,
    /// Confluent Schema Registry (or Karapace) for Avro writer schemas,
    /// `http://` or `https://`, credentials not in it. Empty: none.
    #[serde(deserialize_with = "empty_is_none", skip_serializing_if = "Option::is_none")]
    pub schema_registry_url: Option<String>,
    /// `user:password` for the registry's basic auth (Confluent's
    /// `basic.auth.user.info`); a secret, printed masked. Empty: none.
    #[serde(deserialize_with = "empty_is_none", skip_serializing_if = "Option::is_none")]
    pub schema_registry_basic_auth: Option<String>,
    /// Instead of a registry: a directory of `<schema id>.avsc` files.
    #[serde(deserialize_with = "empty_is_none", skip_serializing_if = "Option::is_none")]
    pub schema_dir: Option<String>,
    /// How long a record waits, retrying with back-off, for a registry that
    /// does not answer before it is rejected (dead-lettered), in ms.
    pub schema_registry_retry_ms: u64,
    /// Any librdkafka property, passed through to the consumer and producer.
    /// TOML numbers and booleans are taken as their text.
    #[serde(deserialize_with = "property_values", skip_serializing_if = "BTreeMap::is_empty")]
    pub kafka: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "feedback".into(),
            group_id: "bandit-sink".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            min_replicas_ack: 0,
            wait_timeout_ms: 1000,
            load_part_bytes: bandit_core::parts::DEFAULT_PART_BYTES,
            model_key: "bandit:model".into(),
            dim: 15,
            lambda: 1.0,
            alpha: 1.0,
            decay: 1.0,
            flush_interval_ms: 5000,
            max_dirty_arms: 10_000,
            max_unflushed_events: 1_000_000,
            errors_tolerance: Tolerance::None,
            dead_letter_topic: None,
            metrics_addr: Some("127.0.0.1:9464".into()),
            format: Format::Json,
            schema_registry_url: None,
            schema_registry_basic_auth: None,
            schema_dir: None,
            schema_registry_retry_ms: 30_000,
            kafka: BTreeMap::new(),
        }
    }
}

/// One meaning of "" for every layer: the file, the environment and a flag
/// all reach the struct through this, after figment has merged them.
fn empty_is_none<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.filter(|text| !text.is_empty()))
}

/// The inverse of [`empty_is_none`], so the printed configuration reads back
/// as the same configuration.
fn none_is_empty<S: Serializer>(value: &Option<String>, serializer: S) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_str(value.as_deref().unwrap_or(""))
}

/// A `[kafka]` value as TOML may write it; librdkafka takes text.
#[derive(Deserialize)]
#[serde(untagged)]
enum PropertyValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

fn property_values<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<BTreeMap<String, String>, D::Error> {
    let values = BTreeMap::<String, PropertyValue>::deserialize(deserializer)?;
    Ok(values
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                PropertyValue::Text(text) => text,
                PropertyValue::Integer(n) => n.to_string(),
                PropertyValue::Float(x) => x.to_string(),
                PropertyValue::Bool(b) => b.to_string(),
            };
            (key, text)
        })
        .collect())
}

/// The longest WAIT a flush may be held by.
const MAX_WAIT_MS: u64 = 60_000;
/// Smallest `load_part_bytes`: below it the commands' own overhead dominates.
const MIN_LOAD_PART_BYTES: usize = 64 << 10;

/// librdkafka properties the sink sets itself: overriding them would break
/// the exactly-once protocol.
const RESERVED_KAFKA_KEYS: &[&str] = &["group.id", "enable.auto.commit", "enable.auto.offset.store", "bootstrap.servers"];

impl Config {
    /// Builds the configuration from the file, the process's environment
    /// and the flags, and validates it.
    ///
    /// # Errors
    /// [`SinkError::Config`] naming the bad setting.
    pub fn from_cli(cli: &Cli) -> Result<Self> {
        Self::load(cli, std::env::vars_os())
    }

    /// [`Config::from_cli`] with the environment given, so that tests need
    /// not change the process's (shared by every test thread).
    ///
    /// # Errors
    /// [`SinkError::Config`] naming the bad setting.
    pub fn load(cli: &Cli, environment: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>) -> Result<Self> {
        let config = sources::layered(cli, environment)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks each setting and their combinations.
    ///
    /// # Errors
    /// [`SinkError::Config`] with the first problem found.
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| Err(SinkError::Config(message));
        for (name, value) in [("brokers", &self.brokers), ("topic", &self.topic), ("group_id", &self.group_id), ("redis_url", &self.redis_url), ("model_key", &self.model_key)] {
            if value.trim().is_empty() {
                return fail(format!("{name} must not be empty"));
            }
        }
        self.validate_model_settings()?;
        if self.flush_interval_ms < 10 {
            return fail(format!("flush_interval_ms must be at least 10, got {}", self.flush_interval_ms));
        }
        if self.max_dirty_arms == 0 || self.max_unflushed_events == 0 {
            return fail("max_dirty_arms and max_unflushed_events must be positive".into());
        }
        match (self.errors_tolerance, &self.dead_letter_topic) {
            (Tolerance::All, None) => {
                return fail("errors_tolerance = all needs a dead_letter_topic, or invalid events would be dropped".into())
            }
            (Tolerance::None, Some(topic)) => {
                return fail(format!("dead_letter_topic {topic} is set but errors_tolerance = none never uses it"))
            }
            (_, Some(topic)) if topic == &self.topic => {
                return fail("dead_letter_topic must differ from the feedback topic".into())
            }
            _ => {}
        }
        self.validate_redis()?;
        for key in self.kafka.keys() {
            if RESERVED_KAFKA_KEYS.contains(&key.as_str()) {
                return fail(format!("kafka property {key} is managed by the sink (use the dedicated setting)"));
            }
        }
        crate::format::validate(self)
    }

    /// The URL parses (unknown parameters refused, no password in the
    /// message), and WAIT's timeout is usable.
    fn validate_redis(&self) -> Result<()> {
        Target::parse(&self.redis_url).map_err(|e| SinkError::Config(format!("redis_url: {e}")))?;
        // WAIT n 0 blocks until n replicas answer: a lost replica would stop
        // the sink; a long timeout holds every flush as long.
        if self.min_replicas_ack > 0 && !(1..=MAX_WAIT_MS).contains(&self.wait_timeout_ms) {
            return Err(SinkError::Config(format!(
                "wait_timeout_ms must be between 1 and {MAX_WAIT_MS} with min_replicas_ack, got {} (WAIT with timeout 0 blocks for ever)",
                self.wait_timeout_ms
            )));
        }
        if self.load_part_bytes < MIN_LOAD_PART_BYTES {
            return Err(SinkError::Config(format!(
                "load_part_bytes must be at least {MIN_LOAD_PART_BYTES}, got {}",
                self.load_part_bytes
            )));
        }
        Ok(())
    }

    /// dim, lambda, alpha and decay by core's own rules, the ones the module
    /// applies to BANDIT.CREATE, so that the sink refuses at start what the
    /// module would refuse later.
    fn validate_model_settings(&self) -> Result<()> {
        let settings = ModelSettings { dim: self.dim, alpha: self.alpha, lambda: self.lambda, decay: self.decay };
        // The module's MAX-DIM can be raised per server, but the sink cannot
        // see the server's before connecting: it holds to the default.
        settings.validate(&Limits::default()).map_err(|e| match e {
            bandit_core::Error::TooLarge { got, limit, .. } => SinkError::Config(format!(
                "dim is {got}, the limit is {limit} (the bandit module's default MAX-DIM: a model cannot be created with more)"
            )),
            other => SinkError::Config(format!(
                "{other} (dim = {}, lambda = {}, alpha = {}, decay = {})",
                self.dim, self.lambda, self.alpha, self.decay
            )),
        })
    }

    /// The Redis URL with every password replaced by `***`
    /// ([`bandit_connect::mask`]).
    pub fn redis_url_masked(&self) -> String {
        bandit_connect::mask(&self.redis_url)
    }

    /// This configuration with every secret replaced by `***`: the Redis
    /// password and any Kafka property whose name says password or secret.
    pub fn masked(&self) -> Self {
        let kafka = crate::kafka_config::masked(&self.kafka);
        let schema_registry_basic_auth =
            self.schema_registry_basic_auth.as_ref().map(|auth| format!("{}:***", auth.split(':').next().unwrap_or_default()));
        Self { redis_url: self.redis_url_masked(), kafka, schema_registry_basic_auth, ..self.clone() }
    }
}

/// The masked configuration as TOML: a file that reads back as the same
/// configuration, less its secrets.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = toml::to_string(&self.masked()).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
