//! Where [`Config`]'s values come from: the TOML file, the `BANDIT_SINK_*`
//! environment and the flags, layered by [`crate::layering`] into one
//! [`Config`] (missing keys keep [`Config::default`]). [`SETTINGS`] names
//! every setting's key, flag and variable once, for the help, the
//! environment, error messages and the README test.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;
use serde::{Serialize, Serializer};

use super::{Config, Tolerance};
use crate::error::Result;
pub use crate::layering::Setting;
use crate::layering::{setting, Naming};

/// Every setting but `[kafka]` (`-X`, no variable). Three variables and
/// flags are shorter than their keys; they are the names users have.
pub const SETTINGS: [Setting; 23] = [
    setting("brokers", "brokers", "BANDIT_SINK_BROKERS"),
    setting("topic", "topic", "BANDIT_SINK_TOPIC"),
    setting("group_id", "group", "BANDIT_SINK_GROUP"),
    setting("redis_url", "redis", "BANDIT_SINK_REDIS"),
    setting("min_replicas_ack", "min-replicas-ack", "BANDIT_SINK_MIN_REPLICAS_ACK"),
    setting("wait_timeout_ms", "wait-timeout-ms", "BANDIT_SINK_WAIT_TIMEOUT_MS"),
    setting("load_part_bytes", "load-part-bytes", "BANDIT_SINK_LOAD_PART_BYTES"),
    setting("model_key", "model", "BANDIT_SINK_MODEL"),
    setting("dim", "dim", "BANDIT_SINK_DIM"),
    setting("lambda", "lambda", "BANDIT_SINK_LAMBDA"),
    setting("alpha", "alpha", "BANDIT_SINK_ALPHA"),
    setting("decay", "decay", "BANDIT_SINK_DECAY"),
    setting("flush_interval_ms", "flush-interval-ms", "BANDIT_SINK_FLUSH_INTERVAL_MS"),
    setting("max_dirty_arms", "max-dirty-arms", "BANDIT_SINK_MAX_DIRTY_ARMS"),
    setting("max_unflushed_events", "max-unflushed-events", "BANDIT_SINK_MAX_UNFLUSHED_EVENTS"),
    setting("errors_tolerance", "errors-tolerance", "BANDIT_SINK_ERRORS_TOLERANCE"),
    setting("dead_letter_topic", "dead-letter-topic", "BANDIT_SINK_DEAD_LETTER_TOPIC"),
    setting("metrics_addr", "metrics-addr", "BANDIT_SINK_METRICS_ADDR"),
    setting("format", "format", "BANDIT_SINK_FORMAT"),
    setting("schema_registry_url", "schema-registry-url", "BANDIT_SINK_SCHEMA_REGISTRY_URL"),
    setting("schema_registry_basic_auth", "schema-registry-basic-auth", "BANDIT_SINK_SCHEMA_REGISTRY_BASIC_AUTH"),
    setting("schema_dir", "schema-dir", "BANDIT_SINK_SCHEMA_DIR"),
    setting("schema_registry_retry_ms", "schema-registry-retry-ms", "BANDIT_SINK_SCHEMA_REGISTRY_RETRY_MS"),
];

/// The variable naming the file; read by clap, as it is needed before the
/// layers are.
const CONFIG_ENV: &str = "BANDIT_SINK_CONFIG";

/// The sink's settings, variables and other tools' spellings (Kafka
/// Connect's `errors.*`, which earlier versions of this sink also read).
static NAMING: Naming = Naming {
    settings: &SETTINGS,
    config_env: CONFIG_ENV,
    env_prefix: "BANDIT_SINK_",
    program: "the sink",
    other_spellings: &[
        ("errors", "errors_tolerance and dead_letter_topic at the top level, as the flags and variables are, not [errors] tolerance and deadletterqueue_topic (Kafka Connect's spelling)"),
        ("deadletterqueue_topic", "dead_letter_topic"),
        ("tolerance", "errors_tolerance"),
    ],
};

/// Command line: the top layer. A flag left out is `None` and not
/// serialized, so it overrides nothing; the defaults are only shown in the
/// help ([`Cli::command_with_defaults`]). Fields are named after the TOML
/// keys, which is what figment merges them by.
#[derive(Debug, Default, Parser, Serialize)]
#[command(name = "bandit-sink", version, about = "Folds feedback events from Kafka into LinUCB arms and publishes them to Redis (BANDIT.LOAD), exactly once.")]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = CONFIG_ENV)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// Feedback topic.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Consumer group id.
    #[arg(long = "group")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Redis URL: redis://, rediss:// (TLS), redis+cluster://, redis+sentinel://…/<master>, unix://.
    #[arg(long = "redis")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Replicas that must acknowledge each BANDIT.LOAD (WAIT); 0: no WAIT.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_replicas_ack: Option<u32>,
    /// WAIT's timeout in milliseconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_timeout_ms: Option<u64>,
    /// Largest share of a flush sent in one BANDIT.LOAD, in bytes; larger flushes go in parts, applied atomically.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_part_bytes: Option<usize>,
    /// Model key in Redis.
    #[arg(long = "model")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_key: Option<String>,
    /// Context dimension; events with another length are invalid.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dim: Option<usize>,
    /// Ridge prior λ (A = λI for a new arm); must equal the model's LAMBDA.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    /// ALPHA the model is created with (an existing model keeps its own; a difference is logged).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Forgetting per event of an arm, in (0, 1] (1: none); must equal the model's DECAY.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay: Option<f64>,
    /// Flush interval in milliseconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_interval_ms: Option<u64>,
    /// Flush early once this many arms are dirty.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_dirty_arms: Option<usize>,
    /// Pause consumption past this many unpublished events.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_unflushed_events: Option<u64>,
    /// errors.tolerance: none or all.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors_tolerance: Option<Tolerance>,
    /// Dead-letter topic for invalid events (errors-tolerance all); "" for none.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Metrics address host:port ("" disables the endpoint).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    /// Event format: json or avro (Confluent wire format).
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<super::Format>,
    /// Schema Registry URL for Avro (http:// or https://); "" for none.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_registry_url: Option<String>,
    /// user:password for the registry (a secret: prefer the variable or the file).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_registry_basic_auth: Option<String>,
    /// Directory of <schema id>.avsc files, instead of a registry; "" for none.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_dir: Option<String>,
    /// Milliseconds a record waits for an unreachable registry before it is rejected.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_registry_retry_ms: Option<u64>,
    /// librdkafka property key=value (repeatable), as kcat's -X.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = kafka_property)]
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "as_table")]
    pub kafka: Vec<(String, String)>,
    /// Print the effective configuration (secrets masked) as TOML and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
}

pub(crate) fn kafka_property(pair: &str) -> std::result::Result<(String, String), String> {
    let (key, value) = pair.split_once('=').ok_or_else(|| format!("{pair}: expected key=value"))?;
    Ok((key.trim().to_owned(), value.trim().to_owned()))
}

/// `-X` pairs as the `[kafka]` table they override, later pairs winning.
pub(crate) fn as_table<S: Serializer>(pairs: &[(String, String)], serializer: S) -> std::result::Result<S::Ok, S::Error> {
    let table: std::collections::BTreeMap<&str, &str> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    table.serialize(serializer)
}

impl Cli {
    /// The command line, with every flag's help naming its variable and its
    /// default. The defaults are shown, not set: a flag left out must not
    /// override the file or the environment, so they come from
    /// [`Config::default`], through the same serialization as
    /// `--print-config`.
    pub fn command_with_defaults() -> clap::Command {
        let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
        NAMING.help_with_defaults(<Self as clap::CommandFactory>::command(), &defaults)
    }

    /// Parses the process's arguments (exits with usage on error, as clap does).
    pub fn parse_with_defaults() -> Self {
        let matches = Self::command_with_defaults().get_matches();
        <Self as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// A setting's default as `--help` and the README show it; `None` when it
/// has none (an unset dead-letter topic).
#[cfg(test)]
pub fn default_shown(key: &str) -> Option<String> {
    let defaults = toml::Table::try_from(Config::default()).ok()?;
    crate::layering::default_shown(&defaults, key)
}

/// The layers merged: defaults < file < environment < flags.
pub(super) fn layered(cli: &Cli, environment: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Config> {
    NAMING.layered(cli.config.as_deref(), cli, environment)
}
