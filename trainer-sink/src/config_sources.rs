//! Where [`Config`]'s values come from: figment merges the TOML file, the
//! `BANDIT_SINK_*` environment and the flags, in that order, and extracts
//! one [`Config`] (missing keys keep [`Config::default`]). [`SETTINGS`] names
//! every setting's key, flag and variable once, for the help, the
//! environment, error messages and the README test.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;
use figment::error::Kind;
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Serialize, Serializer};

use super::{Config, Tolerance};
use crate::error::{Result, SinkError};

/// One setting: its TOML key (a [`Config`] field), flag and variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    pub flag: &'static str,
    pub env: &'static str,
}

const fn setting(key: &'static str, flag: &'static str, env: &'static str) -> Setting {
    Setting { key, flag, env }
}

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
const ENV_PREFIX: &str = "BANDIT_SINK_";

/// Keys other tools spell differently (Kafka Connect's `errors.*`, which
/// earlier versions of this sink also read), and the key this sink reads.
const OTHER_SPELLINGS: &[(&str, &str)] = &[
    ("errors", "errors_tolerance and dead_letter_topic at the top level, as the flags and variables are, not [errors] tolerance and deadletterqueue_topic (Kafka Connect's spelling)"),
    ("deadletterqueue_topic", "dead_letter_topic"),
    ("tolerance", "errors_tolerance"),
];

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
        let mut command = <Self as clap::CommandFactory>::command();
        for setting in SETTINGS {
            let default = default_shown(setting.key);
            command = command.mut_arg(setting.key, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                let default = default.map(|value| format!(" [default: {value}]")).unwrap_or_default();
                arg.help(format!("{help} [env: {}]{default}", setting.env))
            });
        }
        command
    }

    /// Parses the process's arguments (exits with usage on error, as clap does).
    pub fn parse_with_defaults() -> Self {
        let matches = Self::command_with_defaults().get_matches();
        <Self as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// A setting's default as `--help` and the README show it; `None` when it
/// has none (an unset dead-letter topic).
pub fn default_shown(key: &str) -> Option<String> {
    let defaults = toml::Table::try_from(Config::default()).ok()?;
    match defaults.get(key)? {
        toml::Value::String(text) if text.is_empty() => None,
        toml::Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// The layers merged: defaults < file < environment < flags.
pub(super) fn layered(cli: &Cli, environment: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Config> {
    let mut figment = Figment::new();
    if let Some(path) = &cli.config {
        // figment's own `file` would search parent directories and take a
        // missing file as empty; a named file must exist.
        std::fs::metadata(path).map_err(|e| SinkError::Config(format!("cannot read {}: {e}", path.display())))?;
        figment = figment.merge(Toml::file_exact(path));
    }
    let flags = Value::serialize(cli).ok().and_then(Value::into_dict).unwrap_or_default();
    figment = figment
        .merge(Layer::new("environment", environment_layer(environment)?, |key| setting_of(key).map(|s| s.env)))
        .merge(Layer::new("command line", flags, |key| setting_of(key).map(|s| s.flag)));
    // Lossy: the environment is text, "8" must read as a number.
    figment.extract_lossy::<Config>().map_err(describe)
}

fn setting_of(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|setting| setting.key == key)
}

/// The `BANDIT_SINK_*` variables as keys. Values stay text (figment's `Env`
/// would read `BANDIT_SINK_TOPIC=2024` as a number and refuse it for a
/// topic); numbers are parsed by the lossy extraction. An unknown variable
/// is refused, as an unknown key in the file is: it is most likely a typo
/// that would otherwise be silently ignored.
fn environment_layer(environment: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Dict> {
    let mut dict = Dict::new();
    for (name, value) in environment {
        let Some(name) = name.to_str().filter(|name| name.starts_with(ENV_PREFIX) && *name != CONFIG_ENV) else {
            continue;
        };
        let setting = SETTINGS.iter().find(|setting| setting.env == name).ok_or_else(|| {
            let known: Vec<&str> = SETTINGS.iter().map(|setting| setting.env).chain([CONFIG_ENV]).collect();
            SinkError::Config(format!("unknown environment variable {name}; the sink reads {}", known.join(", ")))
        })?;
        let value = value.into_string().map_err(|_| SinkError::Config(format!("{name} is not valid UTF-8")))?;
        dict.insert(setting.key.to_owned(), Value::from(value));
    }
    Ok(dict)
}

/// A layer of keys figment merges, named in its errors by what the user
/// wrote: the variable or the flag, not the key.
struct Layer {
    name: &'static str,
    dict: Dict,
    name_of: fn(&str) -> Option<&'static str>,
}

impl Layer {
    fn new(name: &'static str, dict: Dict, name_of: fn(&str) -> Option<&'static str>) -> Self {
        Self { name, dict, name_of }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let name_of = self.name_of;
        Metadata::named(self.name).interpolater(move |_: &Profile, keys: &[&str]| {
            let key = keys.join(".");
            keys.first().and_then(|first| name_of(first)).map_or(key, str::to_owned)
        })
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// figment's errors, one per line, each naming the key as the user wrote it
/// (TOML key, variable or flag) and where; an unknown key in another tool's
/// spelling is followed by the spelling this sink reads.
fn describe(error: figment::Error) -> SinkError {
    let lines: Vec<String> = error.into_iter().map(|error| describe_one(&error)).collect();
    SinkError::Config(lines.join("\n"))
}

fn describe_one(error: &figment::Error) -> String {
    let Some(metadata) = &error.metadata else { return error.to_string() };
    let (place, key) = match &metadata.source {
        Some(source) => (source.to_string(), error.path.join(".")),
        None => (metadata.name.to_string(), metadata.interpolate(&Profile::Default, &error.path)),
    };
    match &error.kind {
        Kind::UnknownField(field, known) => {
            let hint = OTHER_SPELLINGS.iter().find(|(other, _)| other == field);
            match hint {
                Some((_, right)) => format!("unknown key `{key}` in {place}: write {right}"),
                None => format!("unknown key `{key}` in {place}; the keys are {}", known.join(", ")),
            }
        }
        Kind::UnknownVariant(value, known) => format!("{key} in {place}: `{value}` is not one of {}", known.join(", ")),
        kind if key.is_empty() => format!("{place}: {kind}"),
        kind => format!("{key} in {place}: {kind}"),
    }
}
