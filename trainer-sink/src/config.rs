//! Configuration, Kafka Connect style: a TOML file, overridden by
//! environment variables (`BANDIT_SINK_*`), overridden by flags. Every field
//! is documented here, checked on its own and against the others at start-up,
//! and printed (secrets masked) when the sink starts.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

use crate::error::{Result, SinkError};

/// What to do with an event that cannot be folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Tolerance {
    /// Stop the sink at the first invalid event, without moving past it.
    None,
    /// Send invalid events to the dead-letter topic and go on.
    All,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Kafka bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The feedback topic to consume.
    pub topic: String,
    /// Consumer group; instances with the same group share the partitions.
    pub group_id: String,
    /// Redis URL, `redis://[user:password@]host:port[/db]`.
    pub redis_url: String,
    /// Key of the model in Redis.
    pub model_key: String,
    /// Context dimension; events with another length are invalid.
    pub dim: usize,
    /// Ridge prior: every arm starts at A = λI, b = 0.
    pub lambda: f64,
    /// ALPHA the model is created with (RANK's default exploration).
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
    /// `none` or `all`, as Kafka Connect's errors.tolerance.
    pub errors_tolerance: Tolerance,
    /// Where invalid events go when errors_tolerance = all.
    pub dead_letter_topic: Option<String>,
    /// Address of the `/metrics` and `/health` endpoint; empty disables it.
    pub metrics_addr: Option<String>,
    /// Any librdkafka property, passed through to the consumer and producer.
    pub kafka: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "feedback".into(),
            group_id: "bandit-sink".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
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
            kafka: BTreeMap::new(),
        }
    }
}

/// The TOML file: the same fields as [`Config`], all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    brokers: Option<String>,
    topic: Option<String>,
    group_id: Option<String>,
    redis_url: Option<String>,
    model_key: Option<String>,
    dim: Option<usize>,
    lambda: Option<f64>,
    alpha: Option<f64>,
    decay: Option<f64>,
    flush_interval_ms: Option<u64>,
    max_dirty_arms: Option<usize>,
    max_unflushed_events: Option<u64>,
    errors: Option<ErrorsSection>,
    errors_tolerance: Option<Tolerance>,
    dead_letter_topic: Option<String>,
    metrics_addr: Option<String>,
    #[serde(default)]
    kafka: BTreeMap<String, toml::Value>,
}

/// `[errors]` table: `tolerance` and `deadletterqueue_topic`, as Connect names them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorsSection {
    tolerance: Option<Tolerance>,
    deadletterqueue_topic: Option<String>,
}

/// Command line; every flag also reads `BANDIT_SINK_<NAME>` from the environment.
#[derive(Debug, Default, Parser)]
#[command(name = "bandit-sink", version, about = "Folds feedback events from Kafka into LinUCB arms and publishes them to Redis (BANDIT.LOAD), exactly once.")]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "BANDIT_SINK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "BANDIT_SINK_BROKERS")]
    pub brokers: Option<String>,
    /// Feedback topic.
    #[arg(long, env = "BANDIT_SINK_TOPIC")]
    pub topic: Option<String>,
    /// Consumer group id.
    #[arg(long, env = "BANDIT_SINK_GROUP")]
    pub group: Option<String>,
    /// Redis URL.
    #[arg(long, env = "BANDIT_SINK_REDIS")]
    pub redis: Option<String>,
    /// Model key in Redis.
    #[arg(long, env = "BANDIT_SINK_MODEL")]
    pub model: Option<String>,
    /// Context dimension; events with another length are invalid.
    #[arg(long, env = "BANDIT_SINK_DIM")]
    pub dim: Option<usize>,
    /// Ridge prior λ (A = λI for a new arm); must equal the model's LAMBDA.
    #[arg(long, env = "BANDIT_SINK_LAMBDA")]
    pub lambda: Option<f64>,
    /// ALPHA the model is created with (an existing model keeps its own; a difference is logged).
    #[arg(long, env = "BANDIT_SINK_ALPHA")]
    pub alpha: Option<f64>,
    /// Forgetting per event of an arm, in (0, 1] (1: none); must equal the model's DECAY.
    #[arg(long, env = "BANDIT_SINK_DECAY")]
    pub decay: Option<f64>,
    /// Flush interval in milliseconds.
    #[arg(long, env = "BANDIT_SINK_FLUSH_INTERVAL_MS")]
    pub flush_interval_ms: Option<u64>,
    /// Flush early once this many arms are dirty.
    #[arg(long, env = "BANDIT_SINK_MAX_DIRTY_ARMS")]
    pub max_dirty_arms: Option<usize>,
    /// Pause consumption past this many unpublished events.
    #[arg(long, env = "BANDIT_SINK_MAX_UNFLUSHED_EVENTS")]
    pub max_unflushed_events: Option<u64>,
    /// errors.tolerance: none or all.
    #[arg(long, value_enum, env = "BANDIT_SINK_ERRORS_TOLERANCE")]
    pub errors_tolerance: Option<Tolerance>,
    /// Dead-letter topic for invalid events (errors.tolerance=all).
    #[arg(long, env = "BANDIT_SINK_DEAD_LETTER_TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Metrics address host:port ("" disables the endpoint).
    #[arg(long, env = "BANDIT_SINK_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// librdkafka property key=value (repeatable), as kcat's -X.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub kafka: Vec<String>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    pub print_config: bool,
}

impl Cli {
    /// The command line, with every flag's help naming its default. The
    /// defaults are shown, not set: a flag left out must not override the
    /// file or the environment, so they come from [`Config::default`].
    pub fn command_with_defaults() -> clap::Command {
        let d = Config::default();
        let tolerance = format!("{:?}", d.errors_tolerance).to_lowercase();
        let shown: [(&str, String); 14] = [
            ("brokers", d.brokers),
            ("topic", d.topic),
            ("group", d.group_id),
            ("redis", d.redis_url),
            ("model", d.model_key),
            ("dim", d.dim.to_string()),
            ("lambda", format!("{:?}", d.lambda)),
            ("alpha", format!("{:?}", d.alpha)),
            ("decay", format!("{:?}", d.decay)),
            ("flush_interval_ms", d.flush_interval_ms.to_string()),
            ("max_dirty_arms", d.max_dirty_arms.to_string()),
            ("max_unflushed_events", d.max_unflushed_events.to_string()),
            ("errors_tolerance", tolerance),
            ("metrics_addr", d.metrics_addr.unwrap_or_default()),
        ];
        let mut command = <Self as clap::CommandFactory>::command();
        for (id, value) in shown {
            command = command.mut_arg(id, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [default: {value}]"))
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

/// librdkafka properties the sink sets itself: overriding them would break
/// the exactly-once protocol.
const RESERVED_KAFKA_KEYS: &[&str] = &["group.id", "enable.auto.commit", "enable.auto.offset.store", "bootstrap.servers"];

impl Config {
    /// Builds the configuration from the file, the environment and flags,
    /// and validates it.
    ///
    /// # Errors
    /// [`SinkError::Config`] naming the bad setting.
    pub fn from_cli(cli: &Cli) -> Result<Self> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| SinkError::Config(format!("cannot read {}: {e}", path.display())))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| SinkError::Config(format!("{}: {e}", path.display())))?
            }
            None => FileConfig::default(),
        };
        let mut config = Config::default();
        config.apply_file(file)?;
        config.apply_cli(cli)?;
        config.validate()?;
        Ok(config)
    }

    fn apply_file(&mut self, file: FileConfig) -> Result<()> {
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(value) = file.$field { self.$field = value; })* };
        }
        set!(brokers, topic, group_id, redis_url, model_key, dim, lambda, alpha, decay, flush_interval_ms, max_dirty_arms, max_unflushed_events, errors_tolerance);
        if let Some(errors) = file.errors {
            if let Some(tolerance) = errors.tolerance {
                self.errors_tolerance = tolerance;
            }
            if errors.deadletterqueue_topic.is_some() {
                self.dead_letter_topic = errors.deadletterqueue_topic;
            }
        }
        if file.dead_letter_topic.is_some() {
            self.dead_letter_topic = file.dead_letter_topic;
        }
        if let Some(addr) = file.metrics_addr {
            self.metrics_addr = Some(addr).filter(|a| !a.is_empty());
        }
        for (key, value) in file.kafka {
            let value = match value {
                toml::Value::String(text) => text,
                other => other.to_string(),
            };
            self.kafka.insert(key, value);
        }
        Ok(())
    }

    fn apply_cli(&mut self, cli: &Cli) -> Result<()> {
        macro_rules! set {
            ($($flag:ident => $field:ident),*) => { $(if let Some(value) = cli.$flag.clone() { self.$field = value; })* };
        }
        set!(brokers => brokers, topic => topic, group => group_id, redis => redis_url, model => model_key,
             dim => dim, lambda => lambda, alpha => alpha, decay => decay, flush_interval_ms => flush_interval_ms,
             max_dirty_arms => max_dirty_arms, max_unflushed_events => max_unflushed_events,
             errors_tolerance => errors_tolerance);
        if let Some(topic) = &cli.dead_letter_topic {
            self.dead_letter_topic = Some(topic.clone()).filter(|t| !t.is_empty());
        }
        if let Some(addr) = &cli.metrics_addr {
            self.metrics_addr = Some(addr.clone()).filter(|a| !a.is_empty());
        }
        for pair in &cli.kafka {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| SinkError::Config(format!("-X {pair}: expected key=value")))?;
            self.kafka.insert(key.trim().to_owned(), value.trim().to_owned());
        }
        Ok(())
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
        if !(1..=1024).contains(&self.dim) {
            return fail(format!("dim must be between 1 and 1024, got {}", self.dim));
        }
        if !(self.lambda.is_finite() && self.lambda > 0.0) {
            return fail(format!("lambda must be a finite number > 0, got {}", self.lambda));
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return fail(format!("alpha must be a finite number >= 0, got {}", self.alpha));
        }
        if !(self.decay > 0.0 && self.decay <= 1.0) {
            return fail(format!("decay must be a number in (0, 1], got {}", self.decay));
        }
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
        if !self.redis_url.starts_with("redis://") && !self.redis_url.starts_with("rediss://") && !self.redis_url.starts_with("unix://") {
            return fail(format!("redis_url must start with redis://, rediss:// or unix://, got {}", self.redis_url));
        }
        for key in self.kafka.keys() {
            if RESERVED_KAFKA_KEYS.contains(&key.as_str()) {
                return fail(format!("kafka property {key} is managed by the sink (use the dedicated setting)"));
            }
        }
        Ok(())
    }

    /// The Redis URL with any password replaced, for logs.
    pub fn redis_url_masked(&self) -> String {
        let url = &self.redis_url;
        let parts = url.find("://").zip(url.rfind('@')).and_then(|(scheme, at)| {
            let credentials = url.get(scheme + 3..at)?;
            Some((url.get(..scheme + 3)?, credentials.split(':').next().unwrap_or_default(), url.get(at..)?))
        });
        match parts {
            Some((scheme, user, rest)) => format!("{scheme}{user}:***{rest}"),
            None => url.clone(),
        }
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "brokers = {:?}", self.brokers)?;
        writeln!(f, "topic = {:?}", self.topic)?;
        writeln!(f, "group_id = {:?}", self.group_id)?;
        writeln!(f, "redis_url = {:?}", self.redis_url_masked())?;
        writeln!(f, "model_key = {:?}", self.model_key)?;
        writeln!(f, "dim = {}", self.dim)?;
        writeln!(f, "lambda = {:?}", self.lambda)?;
        writeln!(f, "alpha = {:?}", self.alpha)?;
        writeln!(f, "decay = {:?}", self.decay)?;
        writeln!(f, "flush_interval_ms = {}", self.flush_interval_ms)?;
        writeln!(f, "max_dirty_arms = {}", self.max_dirty_arms)?;
        writeln!(f, "max_unflushed_events = {}", self.max_unflushed_events)?;
        writeln!(f, "errors_tolerance = {:?}", format!("{:?}", self.errors_tolerance).to_lowercase())?;
        if let Some(topic) = &self.dead_letter_topic {
            writeln!(f, "dead_letter_topic = {topic:?}")?;
        }
        writeln!(f, "metrics_addr = {:?}", self.metrics_addr.as_deref().unwrap_or(""))?;
        if !self.kafka.is_empty() {
            writeln!(f, "[kafka]")?;
            for (key, value) in &self.kafka {
                let shown = if key.contains("password") || key.contains("secret") { "***" } else { value };
                writeln!(f, "{key:?} = {shown:?}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
