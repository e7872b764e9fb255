//! `bandit-join`'s settings: one struct, [`JoinConfig`], layered as the
//! sink's are (defaults < TOML file < `BANDIT_JOIN_*` environment < flags,
//! merged by figment), documented on its fields, checked across fields at
//! start-up, and printed as TOML (secrets masked) when the joiner starts.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use bandit_core::join::{Aggregation, Impressions, JoinSettings};
use clap::Parser;
use serde::{Deserialize, Serialize, Serializer};

use crate::config::{as_table, kafka_property};
use crate::error::{Result, SinkError};
pub use crate::layering::Setting;
use crate::layering::{setting, Naming};

/// Personalizer's bounds on the reward wait time: 5 seconds to 2 days. A
/// shorter wait would close decisions before a click can be logged; a
/// longer one keeps every decision in memory for longer than any shop
/// attributes a purchase to a recommendation.
pub const REWARD_WAIT_MS: std::ops::RangeInclusive<i64> = 5_000..=172_800_000;

/// The effective configuration. As a TOML file it is these fields, flat, plus
/// a `[kafka]` table; a missing field keeps its default and an unknown one is
/// refused.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JoinConfig {
    /// Kafka bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The decisions topic (JSON `core::join::Decision`, keyed by event id).
    pub decisions_topic: String,
    /// The rewards topic (JSON `core::join::Reward`, keyed by event id); it
    /// must have as many partitions as the decisions topic (co-partitioned).
    pub rewards_topic: String,
    /// Where the examples go, keyed by product id: the topic the trainer
    /// (bandit-sink) reads.
    pub feedback_topic: String,
    /// The join's checkpoints, one per decisions partition (in the partition
    /// of the same number): the committed offsets with the rewards' running
    /// maximum timestamp and how far rewards were reported. Kafka keeps
    /// them as offset-commit metadata too, but tansu 0.6 drops that
    /// metadata, so this topic is what a restarted joiner reads. At least as
    /// many partitions as the decisions topic; compaction is fine.
    pub state_topic: String,
    /// Unknown rewards and records that do not decode or validate, with
    /// Kafka Connect's error headers (the reason in
    /// `__connect.errors.exception.message`).
    pub dead_letter_topic: String,
    /// Consumer group; instances with the same group share the partition
    /// pairs (range assignor: partition p of both topics to one member).
    pub group_id: String,
    /// How long a decision waits for rewards, in event time (milliseconds
    /// after its timestamp); 5 s … 2 days, as Personalizer allows.
    pub reward_wait_ms: i64,
    /// How several rewards for one shown item become one: `earliest`
    /// (Personalizer's default), `sum` or `max`.
    pub aggregation: Aggregation,
    /// The reward of a shown item that got none in the wait; finite.
    pub default_reward: f64,
    /// Which shown items become examples: `all`, or `cascade` (the items at
    /// or above the lowest clicked one; all when none was clicked).
    pub impressions: Impressions,
    /// How often progress whose examples were all acknowledged is
    /// committed, in milliseconds; a restart re-emits at most this much
    /// (the trainer drops the repeats).
    pub commit_interval_ms: u64,
    /// Address of `/metrics` and `/health`; empty disables it.
    #[serde(deserialize_with = "empty_is_none", serialize_with = "none_is_empty")]
    pub metrics_addr: Option<String>,
    /// Any librdkafka property, passed through to the consumer and the
    /// producers (TLS, SASL…), as bandit-sink's.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub kafka: BTreeMap<String, String>,
}

impl Default for JoinConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            decisions_topic: "decisions".into(),
            rewards_topic: "rewards".into(),
            feedback_topic: "feedback".into(),
            state_topic: "join-state".into(),
            dead_letter_topic: "join-dlq".into(),
            group_id: "bandit-join".into(),
            reward_wait_ms: 600_000,
            aggregation: Aggregation::Earliest,
            default_reward: 0.0,
            impressions: Impressions::Cascade,
            commit_interval_ms: 1000,
            metrics_addr: Some("127.0.0.1:9465".into()),
            kafka: BTreeMap::new(),
        }
    }
}

fn empty_is_none<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.filter(|text| !text.is_empty()))
}

fn none_is_empty<S: Serializer>(value: &Option<String>, serializer: S) -> std::result::Result<S::Ok, S::Error> {
    serializer.serialize_str(value.as_deref().unwrap_or(""))
}

/// librdkafka properties the joiner sets itself: overriding them would break
/// the co-partitioning, the ordering or the commit protocol.
const RESERVED_KAFKA_KEYS: &[&str] = &[
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "bootstrap.servers",
    "partition.assignment.strategy",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "message.timeout.ms",
];

/// Every setting but `[kafka]` (`-X`).
pub const SETTINGS: [Setting; 13] = [
    setting("brokers", "brokers", "BANDIT_JOIN_BROKERS"),
    setting("decisions_topic", "decisions-topic", "BANDIT_JOIN_DECISIONS_TOPIC"),
    setting("rewards_topic", "rewards-topic", "BANDIT_JOIN_REWARDS_TOPIC"),
    setting("feedback_topic", "feedback-topic", "BANDIT_JOIN_FEEDBACK_TOPIC"),
    setting("state_topic", "state-topic", "BANDIT_JOIN_STATE_TOPIC"),
    setting("dead_letter_topic", "dead-letter-topic", "BANDIT_JOIN_DEAD_LETTER_TOPIC"),
    setting("group_id", "group", "BANDIT_JOIN_GROUP"),
    setting("reward_wait_ms", "reward-wait-ms", "BANDIT_JOIN_REWARD_WAIT_MS"),
    setting("aggregation", "aggregation", "BANDIT_JOIN_AGGREGATION"),
    setting("default_reward", "default-reward", "BANDIT_JOIN_DEFAULT_REWARD"),
    setting("impressions", "impressions", "BANDIT_JOIN_IMPRESSIONS"),
    setting("commit_interval_ms", "commit-interval-ms", "BANDIT_JOIN_COMMIT_INTERVAL_MS"),
    setting("metrics_addr", "metrics-addr", "BANDIT_JOIN_METRICS_ADDR"),
];

const CONFIG_ENV: &str = "BANDIT_JOIN_CONFIG";

/// The joiner's settings and variables.
static NAMING: Naming = Naming {
    settings: &SETTINGS,
    config_env: CONFIG_ENV,
    env_prefix: "BANDIT_JOIN_",
    program: "the joiner",
    other_spellings: &[],
};

/// `--aggregation`'s values, as core spells them.
#[derive(Debug, Clone, Copy, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AggregationArg {
    Earliest,
    Sum,
    Max,
}

/// `--impressions`' values, as core spells them.
#[derive(Debug, Clone, Copy, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImpressionsArg {
    All,
    Cascade,
}

/// Command line: the top layer. A flag left out overrides nothing; the
/// defaults are shown in the help ([`JoinCli::command_with_defaults`]).
#[derive(Debug, Default, Parser, Serialize)]
#[command(
    name = "bandit-join",
    version,
    about = "Joins decisions with their rewards by event id (reward wait, aggregation, default reward) into feedback events for bandit-sink, exactly once."
)]
pub struct JoinCli {
    /// TOML configuration file.
    #[arg(long, env = CONFIG_ENV)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// Decisions topic.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decisions_topic: Option<String>,
    /// Rewards topic (co-partitioned with the decisions).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewards_topic: Option<String>,
    /// Feedback topic the examples go to (bandit-sink's).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_topic: Option<String>,
    /// Checkpoint topic (at least as many partitions as the decisions topic).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_topic: Option<String>,
    /// Dead-letter topic for unknown rewards and invalid records.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// Consumer group id.
    #[arg(long = "group")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Reward wait in milliseconds of event time (5000 … 172800000).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_wait_ms: Option<i64>,
    /// How several rewards for one item combine.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<AggregationArg>,
    /// Reward of a shown item that got none.
    #[arg(long, allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_reward: Option<f64>,
    /// Which shown items become examples.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impressions: Option<ImpressionsArg>,
    /// Commit interval in milliseconds.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit_interval_ms: Option<u64>,
    /// Metrics address host:port ("" disables the endpoint).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    /// librdkafka property key=value (repeatable), as kcat's -X.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = kafka_property)]
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "as_table")]
    pub kafka: Vec<(String, String)>,
    /// Print the effective configuration (secrets masked) as TOML and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
}

impl JoinCli {
    /// The command line, every flag's help naming its variable and default.
    pub fn command_with_defaults() -> clap::Command {
        let defaults = toml::Table::try_from(JoinConfig::default()).unwrap_or_default();
        NAMING.help_with_defaults(<Self as clap::CommandFactory>::command(), &defaults)
    }

    /// Parses the process's arguments (exits with usage on error, as clap does).
    pub fn parse_with_defaults() -> Self {
        let matches = Self::command_with_defaults().get_matches();
        <Self as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

impl JoinConfig {
    /// File, process environment and flags, validated.
    ///
    /// # Errors
    /// [`SinkError::Config`] naming the bad setting.
    pub fn from_cli(cli: &JoinCli) -> Result<Self> {
        Self::load(cli, std::env::vars_os())
    }

    /// [`JoinConfig::from_cli`] with the environment given (for tests).
    ///
    /// # Errors
    /// [`SinkError::Config`] naming the bad setting.
    pub fn load(cli: &JoinCli, environment: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Self> {
        let config: Self = NAMING.layered(cli.config.as_deref(), cli, environment)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks each setting and their combinations.
    ///
    /// # Errors
    /// [`SinkError::Config`] with the first problem found.
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| Err(SinkError::Config(message));
        let topics = [
            ("decisions_topic", &self.decisions_topic),
            ("rewards_topic", &self.rewards_topic),
            ("feedback_topic", &self.feedback_topic),
            ("state_topic", &self.state_topic),
            ("dead_letter_topic", &self.dead_letter_topic),
        ];
        for (name, value) in topics.iter().copied().chain([("brokers", &self.brokers), ("group_id", &self.group_id)]) {
            if value.trim().is_empty() {
                return fail(format!("{name} must not be empty"));
            }
        }
        for (i, (name, topic)) in topics.iter().enumerate() {
            if let Some((other, _)) = topics.iter().skip(i + 1).find(|(_, t)| t == topic) {
                return fail(format!("{name} and {other} are both {topic}: the join's topics must be distinct"));
            }
        }
        if !REWARD_WAIT_MS.contains(&self.reward_wait_ms) {
            return fail(format!(
                "reward_wait_ms must be between {} (5 s) and {} (2 days), got {}",
                REWARD_WAIT_MS.start(),
                REWARD_WAIT_MS.end(),
                self.reward_wait_ms
            ));
        }
        if !self.default_reward.is_finite() {
            return fail(format!("default_reward must be a finite number, got {}", self.default_reward));
        }
        if !(10..=600_000).contains(&self.commit_interval_ms) {
            return fail(format!("commit_interval_ms must be between 10 and 600000, got {}", self.commit_interval_ms));
        }
        for key in self.kafka.keys() {
            if RESERVED_KAFKA_KEYS.contains(&key.as_str()) {
                return fail(format!("kafka property {key} is managed by the joiner (use the dedicated setting)"));
            }
        }
        Ok(())
    }

    /// The join's rules, for core's [`bandit_core::join::Joiner`].
    pub fn settings(&self) -> JoinSettings {
        JoinSettings {
            reward_wait_ms: self.reward_wait_ms,
            aggregation: self.aggregation,
            default_reward: self.default_reward,
            impressions: self.impressions,
        }
    }

    /// The Kafka part in the sink's configuration type, so that the joiner
    /// builds its clients with the sink's own code (`kafka_config`,
    /// `dead_letter`): the same defaults and the same `-X` passthrough.
    pub fn kafka_part(&self) -> crate::Config {
        crate::Config { brokers: self.brokers.clone(), kafka: self.kafka.clone(), ..crate::Config::default() }
    }

    /// This configuration with secret Kafka properties replaced by `***`.
    pub fn masked(&self) -> Self {
        Self { kafka: crate::kafka_config::masked(&self.kafka), ..self.clone() }
    }
}

/// The masked configuration as TOML.
impl fmt::Display for JoinConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = toml::to_string(&self.masked()).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn load(args: &[&str], environment: &[(&str, &str)]) -> Result<JoinConfig> {
        let cli = JoinCli::try_parse_from(std::iter::once("bandit-join").chain(args.iter().copied())).unwrap();
        JoinConfig::load(&cli, environment.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))))
    }

    #[test]
    fn defaults_environment_and_flags() {
        let config = load(&[], &[]).unwrap();
        assert_eq!(config, JoinConfig::default());
        assert_eq!(config.impressions, Impressions::Cascade);
        let config = load(
            &["--reward-wait-ms", "7000", "--aggregation", "sum", "--default-reward", "-0.5", "-X", "client.id=x"],
            &[("BANDIT_JOIN_REWARD_WAIT_MS", "9000"), ("BANDIT_JOIN_IMPRESSIONS", "all"), ("BANDIT_JOIN_DECISIONS_TOPIC", "2024")],
        )
        .unwrap();
        assert_eq!(config.reward_wait_ms, 7000, "flags override the environment");
        assert_eq!((config.aggregation, config.impressions), (Aggregation::Sum, Impressions::All));
        assert_eq!(config.default_reward, -0.5);
        assert_eq!(config.decisions_topic, "2024", "a numeric topic stays text");
        assert_eq!(config.kafka.get("client.id").map(String::as_str), Some("x"));
        // The printed configuration reads back as the same.
        let printed: JoinConfig = toml::from_str(&config.to_string()).unwrap();
        assert_eq!(printed, config);
    }

    #[test]
    fn refuses_bad_combinations() {
        for (args, needle) in [
            (&["--reward-wait-ms", "4999"][..], "reward_wait_ms must be between 5000"),
            (&["--reward-wait-ms", "172800001"][..], "2 days"),
            (&["--default-reward", "inf"][..], "default_reward must be a finite number"),
            (&["--feedback-topic", "rewards"][..], "rewards_topic and feedback_topic are both rewards"),
            (&["--state-topic", "decisions"][..], "decisions_topic and state_topic"),
            (&["-X", "partition.assignment.strategy=roundrobin"][..], "managed by the joiner"),
            (&["--commit-interval-ms", "0"][..], "commit_interval_ms"),
        ] {
            let error = load(args, &[]).unwrap_err().to_string();
            assert!(error.contains(needle), "{args:?}: {error}");
        }
        let error = load(&[], &[("BANDIT_JOIN_WAIT", "1")]).unwrap_err().to_string();
        assert!(error.contains("unknown environment variable BANDIT_JOIN_WAIT"), "{error}");
        // Errors name the setting as the user wrote it.
        let error = load(&[], &[("BANDIT_JOIN_REWARD_WAIT_MS", "soon")]).unwrap_err().to_string();
        assert!(error.contains("BANDIT_JOIN_REWARD_WAIT_MS in environment"), "{error}");
    }
}
