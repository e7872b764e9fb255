//! The command line: every subcommand and option, with its help text and
//! the values it refuses (clap checks them before anything runs).

use std::path::PathBuf;

use clap::builder::{TypedValueParser, ValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "bandit", version, about = "Real-time product recommendations with contextual bandits (LinUCB) on Redis and Kafka.")]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Connection {
    /// Redis URL: redis://[[user]:password@]host:port[/db], rediss://… (TLS: tls_ca, tls_cert, tls_key),
    /// redis+cluster://host:port,…, redis+sentinel://host:port,…/<master>, unix:///path; with
    /// read_from=replica RANK reads from replicas (one server: &replicas=host:port,…).
    #[arg(long, global = true, env = "BANDIT_REDIS", default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// Kafka bootstrap servers.
    #[arg(long, global = true, env = "BANDIT_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Feedback topic.
    #[arg(long, global = true, env = "BANDIT_TOPIC", default_value = "feedback")]
    pub topic: String,
    /// Model key in Redis.
    #[arg(long, global = true, env = "BANDIT_MODEL", default_value = "bandit:model")]
    pub model: String,
    /// Seconds to wait for a broker to confirm that the topic exists, before
    /// anything is sent (feedback, bootstrap, simulate).
    #[arg(long, global = true, env = "BANDIT_KAFKA_TIMEOUT", default_value_t = 10.0, value_parser = positive_seconds())]
    pub kafka_timeout: f64,
    /// librdkafka property key=value for the producer (repeatable; none by default).
    #[arg(short = 'X', global = true, value_name = "KEY=VALUE")]
    pub kafka: Vec<String>,
    /// The learning loop's decisions topic (rank --log, simulate): JSON decisions keyed by event id.
    #[arg(long, global = true, env = "BANDIT_DECISIONS_TOPIC", default_value = "decisions")]
    pub decisions_topic: String,
    /// The learning loop's rewards topic (reward, simulate): JSON rewards keyed by event id; as many partitions as --decisions-topic.
    #[arg(long, global = true, env = "BANDIT_REWARDS_TOPIC", default_value = "rewards")]
    pub rewards_topic: String,
}

/// Which outcomes become feedback events.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FeedbackArg {
    /// 0 for every product read and passed over, 1 for the click.
    Cascade,
    /// The reference design's: 1 for the click, else 0 for the first product.
    Reference,
    /// 1 for the click, 0 for every other product shown, also below the click (the join's impressions = all).
    All,
}

/// How feedback events are written to Kafka (`bandit feedback`, `bandit bootstrap`).
#[derive(Debug, Clone, Args)]
pub struct EventEncoding {
    /// Event format: json, or avro (Confluent's wire format; needs --schema-registry).
    #[arg(long, value_enum, default_value = "json", requires_if("avro", "schema_registry"))]
    pub format: EventFormat,
    /// Schema Registry URL (http:// or https://); the feedback schema is registered under <topic>-value (default: none; required with --format avro).
    #[arg(long, env = "BANDIT_SCHEMA_REGISTRY")]
    pub schema_registry: Option<String>,
    /// user:password for the registry's basic auth (a secret: prefer the variable; default: no authentication).
    #[arg(long, env = "BANDIT_SCHEMA_REGISTRY_BASIC_AUTH", hide_env_values = true)]
    pub schema_registry_basic_auth: Option<String>,
}

/// The encoding of feedback events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventFormat {
    /// One JSON object per record.
    Json,
    /// Avro binary with magic byte 0 and the schema id (Confluent's wire format).
    Avro,
}

/// How `bandit evaluate` prints its results.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    /// A Markdown table.
    Table,
    /// One JSON document.
    Json,
    /// CSV with a header line.
    Csv,
}

/// What `bandit generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenerateFormat {
    /// The CSV log of random products (and the items CSV).
    Csv,
    /// The joined decision log, JSON lines, of a logging policy.
    Decisions,
}

/// How `bandit evaluate` scores policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalMethod {
    /// Time split, top-k metrics against the logged responses (Mab2Rec's table).
    ReplayTopk,
    /// Off-policy estimators (IPS, SNIPS, DM, DR, SNDR, Switch-DR, Replay) on a decision log.
    Ope,
}

/// How several rewards for one shown item become one (`bandit export-log`, as the join).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AggregationArg {
    /// The first by timestamp.
    Earliest,
    Sum,
    Max,
}

/// The payload encoding of `bandit export`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PayloadFormat {
    /// The compact binary encoding (BNDT).
    Binary,
    /// JSON, readable and editable.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an empty model (BANDIT.CREATE).
    Create {
        /// Number of context features.
        #[arg(long, value_parser = at_least_one())]
        dim: usize,
        /// Default exploration weight α of the model (default: the module's ALPHA argument, 1 unless set).
        #[arg(long)]
        alpha: Option<f64>,
        /// Ridge prior λ: an arm with no data has A = λI (default: the module's LAMBDA argument, 1 unless set).
        #[arg(long)]
        lambda: Option<f64>,
        /// Forgetting γ in (0, 1]: before each event of an arm its evidence keeps weight γ (default: the module's DECAY argument, 1 = no forgetting, unless set).
        #[arg(long, value_parser = decay())]
        decay: Option<f64>,
    },
    /// Rank products for a context (BANDIT.RANK … WITHSCORES).
    Rank {
        /// Context values, comma-separated, as many as the model's dim.
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true, required = true)]
        context: Vec<f64>,
        /// Candidate product ids, comma-separated (default: every arm of the model).
        #[arg(long, value_delimiter = ',')]
        arms: Option<Vec<String>>,
        /// How many products to print (default: every candidate).
        #[arg(long, value_parser = at_least_one())]
        top: Option<usize>,
        /// Exploration weight α for this request (default: the model's).
        #[arg(long)]
        alpha: Option<f64>,
        /// Explore: ucb, ts, egreedy:<epsilon> or softmax:<temperature>. With
        /// it (or --event-id) each line also has the placement probability,
        /// after a first line with the model's version (default: none, the
        /// plain ranking).
        #[arg(long)]
        policy: Option<bandit::models::Policy>,
        /// The event this ranking is for: the same event on the same model
        /// version gets the same placement (BANDIT.RANK … EVENTID; default:
        /// none, the module draws its own randomness).
        #[arg(long)]
        event_id: Option<String>,
        /// Publish the decision (model version, policy, context, each item's position and
        /// probability) to --decisions-topic right after RANK, keyed by --event-id, which
        /// it needs: the shop names that id again in `bandit reward`.
        #[arg(long, requires = "event_id")]
        log: bool,
        /// Seconds to wait for the broker to confirm delivery of the decision (with --log).
        #[arg(long, default_value_t = 30.0, value_parser = positive_seconds())]
        delivery_timeout: f64,
    },
    /// Send a reward for a product of a logged decision (`rank --log`) to --rewards-topic,
    /// keyed by the event id: bandit-join pairs it with the decision and trains on it.
    Reward {
        /// The decision's event id (rank --event-id).
        #[arg(long)]
        event_id: String,
        /// The product the reward is for (one the decision showed).
        #[arg(long)]
        product: String,
        /// The reward, e.g. 1 for a click (any finite number).
        #[arg(long, allow_hyphen_values = true)]
        value: f64,
        /// Seconds to wait for the broker to confirm delivery.
        #[arg(long, default_value_t = 30.0, value_parser = positive_seconds())]
        delivery_timeout: f64,
    },
    /// Show a model's (or one arm's) statistics (BANDIT.STATS).
    Stats {
        /// Show this product's arm (default: the whole model).
        #[arg(long)]
        arm: Option<String>,
    },
    /// Write the model's payload (BANDIT.EXPORT) to a file or stdout.
    Export {
        /// Payload encoding.
        #[arg(long, value_enum, default_value = "json")]
        format: PayloadFormat,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Load a payload file, binary or JSON, into the model (BANDIT.LOAD).
    Import {
        /// The payload file.
        file: PathBuf,
    },
    /// Send one feedback event to Kafka, keyed by product id. The context is
    /// checked against the model's dim first when Redis has the model; when
    /// Redis is unreachable or has no such model, it is sent with a warning.
    Feedback {
        /// The product the feedback is about.
        #[arg(long)]
        product: String,
        /// The reward, e.g. 1 for a click and 0 for none (any finite number).
        #[arg(long, allow_hyphen_values = true)]
        reward: f64,
        /// Context values, comma-separated, as many as the model's dim.
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true, required = true)]
        context: Vec<f64>,
        /// Event id (default: cli-<milliseconds since 1970>).
        #[arg(long)]
        event_id: Option<String>,
        /// Seconds to wait for the broker to confirm delivery.
        #[arg(long, default_value_t = 30.0, value_parser = positive_seconds())]
        delivery_timeout: f64,
        #[command(flatten)]
        encoding: EventEncoding,
    },
    /// Publish a historical log (CSV: features…, product_id, response) into the topic.
    Bootstrap {
        /// The CSV log.
        #[arg(long)]
        log: PathBuf,
        /// Seconds to wait for the broker to confirm delivery of the whole log.
        #[arg(long, default_value_t = 120.0, value_parser = positive_seconds())]
        delivery_timeout: f64,
        #[command(flatten)]
        encoding: EventEncoding,
    },
    /// Write a historical log from the simulated shop (and its product features).
    Generate {
        /// Number of logged events (visits).
        #[arg(long, default_value_t = 100_000, value_parser = at_least_one())]
        events: usize,
        /// Random seed: the same seed writes the same log.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The log (CSV: event_id, 15 features, product_id, response; or JSON lines with --format decisions).
        #[arg(long)]
        out: PathBuf,
        /// The product features (CSV: product_id, category one-hot, is_coffee, price_scaled); default: not written.
        #[arg(long)]
        items_out: Option<PathBuf>,
        /// csv: random products, today's log; decisions: the joined decision log (JSON lines) of --policy learning online.
        #[arg(long, value_enum, default_value = "csv")]
        format: GenerateFormat,
        /// The logging policy of --format decisions: uniform, egreedy:<epsilon>, softmax:<temperature>, ucb or ts.
        #[arg(long, default_value = "egreedy:0.2")]
        policy: String,
        /// Exploration weight α of the logging policy's ranking (--format decisions).
        #[arg(long, default_value_t = 1.0, value_parser = non_negative())]
        alpha: f64,
        /// Actions of --format decisions: this many products spread evenly over the menu.
        #[arg(long, default_value_t = 10, value_parser = at_least_one())]
        arms: usize,
        /// Products shown per decision (--format decisions): the visitor reads them top-down and clicks at most one.
        #[arg(long, default_value_t = 1, value_parser = at_least_one())]
        top: usize,
        /// The logging policy publishes its model after this many events (--format decisions).
        #[arg(long, default_value_t = 10, value_parser = at_least_one())]
        publish_every: usize,
    },
    /// Compare policies offline on a log: time-ordered split, top-k metrics.
    Evaluate {
        /// The log (CSV with features…, product_id, response) of --method replay-topk; default: none (then --decisions is required).
        #[arg(long, required_unless_present = "decisions")]
        log: Option<PathBuf>,
        /// The joined decision log (JSON lines) for off-policy evaluation; default: none.
        #[arg(long, conflicts_with = "log")]
        decisions: Option<PathBuf>,
        /// replay-topk: the Mab2Rec-style table on --log; ope: off-policy estimators on --decisions (default: ope with --decisions, else replay-topk).
        #[arg(long, value_enum)]
        method: Option<EvalMethod>,
        /// The candidates of --method ope, separated by ';': ucb, ts, egreedy:<epsilon>, softmax:<temperature>, random, popularity (greedy on each product's reward per impression, context-free), each with an optional :alpha=<a,b,…>.
        #[arg(long, default_value = "ucb:alpha=0.1,0.3,1;ts;egreedy:0.1;softmax:0.05;random;popularity")]
        policies: String,
        /// With --method ope on a generated log: run each candidate on-policy in the simulated shop (generate's --seed is --seed) and print its true CTR.
        #[arg(long)]
        truth: bool,
        /// Print JSON (the same as --format json).
        #[arg(long)]
        json: bool,
        /// Switch-DR's threshold on the importance weight (--method ope).
        #[arg(long, default_value_t = 10.0, value_parser = non_negative())]
        tau: f64,
        /// Candidates publish their model after this many events of the log (--method ope).
        #[arg(long, default_value_t = 10, value_parser = at_least_one())]
        publish_every: usize,
        /// Candidate products (CSV with a product_id column); default: every product in the log.
        #[arg(long)]
        items: Option<PathBuf>,
        /// Length k of each policy's recommendation list; metrics are at k.
        #[arg(long, default_value_t = 5, value_parser = at_least_one())]
        top_k: usize,
        /// Share of the log, at its end, held out for testing (between 0 and 1).
        #[arg(long, default_value_t = 0.2)]
        test_fraction: f64,
        /// Random seed of the randomised policies (Random, LinGreedy, LinTS, ClustersTS; with --method ope the candidates' draws and, with --truth, the shop's seed).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Forgetting γ in (0, 1] of the linear policies (LinGreedy, LinUCB, LinTS), which
        /// fold the training rows in log order: a row keeps weight γᵏ after k later rows of
        /// its product. 1: no forgetting.
        #[arg(long, default_value_t = 1.0, value_parser = decay())]
        decay: f64,
        /// How to print the results.
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
    },
    /// Write the joined decision log (JSON lines, for `evaluate --decisions`): --decisions-topic
    /// and --rewards-topic read from their beginning to their current end and joined by event id
    /// as the join service joins them (reward wait, aggregation, default reward).
    ExportLog {
        /// The log (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// A reward joins its decision when its timestamp is at most the decision's plus this
        /// (milliseconds); decisions still inside it are left out.
        #[arg(long, default_value_t = 600_000, value_parser = clap::value_parser!(i64).range(0..))]
        reward_wait_ms: i64,
        /// How several rewards for one shown item become one.
        #[arg(long, value_enum, default_value = "earliest")]
        aggregation: AggregationArg,
        /// The reward of a shown item that got none within the wait.
        #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
        default_reward: f64,
    },
    /// Benchmarks (see the README's Performance section).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run the simulated shop against the live stack (or in process with --local) and show the learning curve.
    Simulate {
        /// Visits to simulate.
        #[arg(long, default_value_t = 3000, value_parser = at_least_one())]
        steps: usize,
        /// Random seed of the catalogue and the visitors.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Recommendations per visit.
        #[arg(long, default_value_t = 5, value_parser = at_least_one())]
        top_k: usize,
        /// Visits per CTR window (default: steps / 10).
        #[arg(long, value_parser = at_least_one())]
        window: Option<usize>,
        /// Visits per second (0: as fast as possible). Real traffic arrives
        /// over time, and the sink publishes on its flush interval.
        #[arg(long, default_value_t = 400.0, value_parser = non_negative())]
        rate: f64,
        /// Where to write the learning curve (SVG).
        #[arg(long, default_value = "bandit-simulation.svg")]
        plot: PathBuf,
        /// Which outcomes of a visit are sent as feedback, with --direct or --local (default
        /// cascade). Refused on the learning loop: there the shop sends only clicks and
        /// bandit-join's --impressions decides.
        #[arg(long, value_enum)]
        feedback: Option<FeedbackArg>,
        /// Send feedback events with the context straight to --topic (the shop before the
        /// learning loop; no bandit-join needed). Without it the shop ranks with event ids
        /// under --policy, logs each decision to --decisions-topic and sends only clicks to
        /// --rewards-topic, and bandit-join makes the feedback.
        #[arg(long, conflicts_with = "local")]
        direct: bool,
        /// The shop's exploration: ucb, ts, egreedy:<epsilon> or softmax:<temperature>
        /// (default: egreedy:0.1 on the learning loop; ucb, the plain ranking, with --local;
        /// --direct always ranks plainly).
        #[arg(long, conflicts_with = "direct")]
        policy: Option<bandit::models::Policy>,
        /// Learn in process instead of through Redis and Kafka: core's trainer and model,
        /// α = 1, λ = 1, publishing every 50 feedback events. No servers; --rate is ignored.
        #[arg(long)]
        local: bool,
        /// Forgetting γ in (0, 1] of the learner: before each event of a product its
        /// evidence keeps weight γ. With --local, the in-process learner's; live, the DECAY of
        /// a model this command creates (an existing model must have the same). 1: none.
        #[arg(long, default_value_t = 1.0, value_parser = decay())]
        decay: f64,
        /// Tastes drift after this many visits (default: never): from the next visit on,
        /// coffee drinkers come in the evening instead of the morning, and weekend visitors
        /// want salads and desserts instead of pizzas and burgers. Prints the recovery: how many visits after the drift
        /// until LinUCB's clicks over the last --recovery-window visits (all after the drift)
        /// reach 90% of the oracle's on the same visits. With --local and --decay below 1,
        /// LinUCB also runs without forgetting on the same visits, for comparison.
        #[arg(long, value_parser = at_least_one())]
        drift_at: Option<usize>,
        /// The moving window of the recovery after --drift-at, in visits.
        #[arg(long, default_value_t = 500, value_parser = at_least_one())]
        recovery_window: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// BANDIT.RANK versus GET on the --redis server: latency, throughput,
    /// server time. Writes the keys bench:model and bench:string and deletes
    /// them at the end (also after a failure).
    Rank {
        /// Arms in the benchmark model.
        #[arg(long, default_value_t = 200, value_parser = at_least_one())]
        arms: usize,
        /// Context dimension of the benchmark model.
        #[arg(long, default_value_t = 15, value_parser = at_least_one())]
        dim: usize,
        /// TOP of every RANK.
        #[arg(long, default_value_t = 5, value_parser = at_least_one())]
        top: usize,
        /// Requests per command on one connection.
        #[arg(long, default_value_t = 20_000, value_parser = at_least_one())]
        requests: usize,
        /// Connections for the throughput phase.
        #[arg(long, default_value_t = 16, value_parser = at_least_one())]
        connections: usize,
        /// Seconds per command in the throughput phase.
        #[arg(long, default_value_t = 5.0, value_parser = positive_seconds())]
        seconds: f64,
    },
    /// BANDIT.RANK TOP k over a large catalogue on --redis: server time per
    /// call on a trained model (where the top-k prunes) and on an untrained
    /// one (nothing can be pruned: the worst case), MEMORY USAGE per arm.
    /// Writes the keys bench:catalogue:trained and bench:catalogue:untrained
    /// (one at a time) and deletes them at the end.
    Catalogue {
        /// Arms in each model.
        #[arg(long, default_value_t = 100_000, value_parser = at_least_one())]
        arms: usize,
        /// Context dimension.
        #[arg(long, default_value_t = 32, value_parser = at_least_one())]
        dim: usize,
        /// TOP of every RANK.
        #[arg(long, default_value_t = 10, value_parser = at_least_one())]
        top: usize,
        /// Events folded into each arm of the trained model.
        #[arg(long, default_value_t = 64, value_parser = at_least_one())]
        events: usize,
        /// RANK requests per model.
        #[arg(long, default_value_t = 2_000, value_parser = at_least_one())]
        requests: usize,
        /// Measure the trained model only (skip the untrained worst case).
        #[arg(long)]
        trained_only: bool,
    },
    /// The sink's per-event CPU cost: fold alone, and decode + validate + fold.
    Fold {
        /// Context dimension.
        #[arg(long, default_value_t = 15, value_parser = at_least_one())]
        dim: usize,
        /// Events to fold.
        #[arg(long, default_value_t = 2_000_000, value_parser = at_least_one())]
        events: usize,
    },
    /// One flush through the sink's trainer (inversion on its threads, then
    /// encoding), LOADed on --redis while another connection runs GETs: the
    /// LOAD's time and the GETs' p50, p99 and longest latency, as a plain
    /// LOAD (prepared in the background) and inside MULTI (all on the main
    /// thread). Writes the keys bench:flush and bench:string and deletes them
    /// at the end.
    Flush {
        /// Context dimension.
        #[arg(long, default_value_t = 32, value_parser = at_least_one())]
        dim: usize,
        /// Dirty arms in the flush.
        #[arg(long, default_value_t = 10_000, value_parser = at_least_one())]
        arms: usize,
    },
    /// RANK throughput on the primary alone, then with read_from=replica, in one run:
    /// --redis must read from replicas (one server: ?read_from=replica&replicas=host:port,…).
    /// Writes the key bench:replicas and deletes it at the end.
    Replicas {
        /// Arms in the benchmark model.
        #[arg(long, default_value_t = 200, value_parser = at_least_one())]
        arms: usize,
        /// Context dimension of the benchmark model.
        #[arg(long, default_value_t = 15, value_parser = at_least_one())]
        dim: usize,
        /// TOP of every RANK.
        #[arg(long, default_value_t = 5, value_parser = at_least_one())]
        top: usize,
        /// Client threads, each with its own connection.
        #[arg(long, default_value_t = 16, value_parser = at_least_one())]
        connections: usize,
        /// Seconds per phase.
        #[arg(long, default_value_t = 5.0, value_parser = positive_seconds())]
        seconds: f64,
    },
}

/// A count that must be at least 1 (0 arms, steps or k make no sense).
fn at_least_one() -> ValueParser {
    ValueParser::new(clap::builder::StringValueParser::new().try_map(|text| match text.trim().parse::<usize>() {
        Ok(count) if count >= 1 => Ok(count),
        _ => Err(format!("expected a whole number of at least 1, got {text:?}")),
    }))
}

/// A forgetting factor γ in (0, 1].
fn decay() -> ValueParser {
    finite_number(|v| v > 0.0 && v <= 1.0, "a number in (0, 1]")
}

/// A finite number of seconds above 0.
fn positive_seconds() -> ValueParser {
    finite_number(|v| v > 0.0, "a number of seconds above 0")
}

/// A finite number, 0 or more.
fn non_negative() -> ValueParser {
    finite_number(|v| v >= 0.0, "a number, 0 or more")
}

fn finite_number(accept: fn(f64) -> bool, expected: &'static str) -> ValueParser {
    ValueParser::new(clap::builder::StringValueParser::new().try_map(move |text| match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && accept(value) => Ok(value),
        _ => Err(format!("expected {expected}, got {text:?}")),
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every command and subcommand, depth first.
    fn all_commands(command: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        out.push((path.clone(), command.clone()));
        for sub in command.get_subcommands() {
            all_commands(sub, format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_option_of_every_subcommand_is_described() {
        let mut commands = Vec::new();
        all_commands(&Cli::command(), "bandit".into(), &mut commands);
        assert!(commands.len() > 14, "{}", commands.len());
        let mut missing = Vec::new();
        for (path, command) in &commands {
            for arg in command.get_arguments() {
                let help = arg.get_help().or(arg.get_long_help()).map(ToString::to_string).unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
                // An optional value without a default states what happens
                // without it.
                let optional_value = !arg.is_required_set()
                    && arg.get_action().takes_values()
                    && arg.get_default_values().is_empty()
                    && !arg.is_positional();
                if optional_value && !help.contains("default") {
                    missing.push(format!("{path} {}: no default stated", arg.get_id()));
                }
                if arg.is_hide_default_value_set() {
                    missing.push(format!("{path} {}: default hidden", arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "options without a description: {missing:#?}");
    }

    #[test]
    fn help_renders_the_descriptions_and_defaults() {
        let mut cli = Cli::command();
        let help = cli.find_subcommand_mut("evaluate").map(|c| c.render_help().to_string()).unwrap_or_default();
        assert!(help.contains("Length k of each policy's recommendation list"), "{help}");
        assert!(help.contains("[default: 5]"), "{help}");
    }

    #[test]
    fn evaluate_takes_a_log_or_a_decision_log() {
        let parse = |args: &[&str]| Cli::try_parse_from(["bandit"].iter().chain(args)).map_err(|e| e.to_string());
        assert!(parse(&["evaluate"]).is_err(), "one of --log and --decisions is required");
        assert!(parse(&["evaluate", "--log", "l.csv", "--decisions", "d.jsonl"]).is_err());
        let fields = match parse(&["evaluate", "--decisions", "d.jsonl", "--truth", "--json"]).unwrap().command {
            Command::Evaluate { decisions, method, policies, truth, tau, publish_every, .. } => Some((decisions, method, policies, truth, tau, publish_every)),
            _ => None,
        };
        let (decisions, method, policies, truth, tau, publish_every) = fields.unwrap();
        assert_eq!(decisions, Some(PathBuf::from("d.jsonl")));
        assert_eq!((method, truth, tau, publish_every), (None, true, 10.0, 10));
        assert_eq!(policies, "ucb:alpha=0.1,0.3,1;ts;egreedy:0.1;softmax:0.05;random;popularity");
        assert!(parse(&["evaluate", "--log", "l.csv", "--method", "replay-topk"]).is_ok());
        assert!(parse(&["evaluate", "--decisions", "d.jsonl", "--method", "ope", "--publish-every", "0"]).is_err());
        assert!(parse(&["generate", "--out", "d.jsonl", "--format", "decisions", "--policy", "softmax:0.1", "--top", "3"]).is_ok());
        assert!(parse(&["generate", "--out", "d.jsonl", "--format", "decisions", "--top", "0"]).is_err());
    }

    #[test]
    fn the_learning_loop_commands_parse_with_their_defaults() {
        let parse = |args: &[&str]| Cli::try_parse_from(["bandit"].iter().chain(args)).map_err(|e| e.to_string());
        // A logged decision needs the event id the reward will name.
        let refused = parse(&["rank", "--context", "1,2", "--log"]).unwrap_err();
        assert!(refused.contains("--event-id"), "{refused}");
        let cli = parse(&["rank", "--context", "1,2", "--event-id", "e1", "--log", "--policy", "egreedy:0.1"]).unwrap();
        assert_eq!((cli.connection.decisions_topic.as_str(), cli.connection.rewards_topic.as_str()), ("decisions", "rewards"));
        assert!(matches!(cli.command, Command::Rank { log: true, event_id: Some(ref e), .. } if e == "e1"));
        let cli = parse(&["reward", "--event-id", "e1", "--product", "p", "--value", "-0.5", "--rewards-topic", "clicks"]).unwrap();
        assert_eq!(cli.connection.rewards_topic, "clicks");
        assert!(matches!(cli.command, Command::Reward { value, .. } if value == -0.5));
        assert!(parse(&["reward", "--event-id", "e1", "--product", "p"]).is_err(), "--value is required");
        // The loop is the default; --direct is the old path, --policy belongs to the loop or --local.
        assert!(matches!(parse(&["simulate"]).unwrap().command, Command::Simulate { direct: false, policy: None, .. }));
        assert!(parse(&["simulate", "--direct", "--policy", "ts"]).is_err());
        assert!(parse(&["simulate", "--local", "--direct"]).is_err());
        assert!(parse(&["simulate", "--local", "--policy", "egreedy:2"]).is_err());
        assert!(parse(&["simulate", "--local", "--feedback", "all"]).is_ok());
    }

    #[test]
    fn zero_counts_are_refused() {
        let parse = |args: &[&str]| Cli::try_parse_from(["bandit"].iter().chain(args)).map(|_| ()).map_err(|e| e.to_string());
        assert!(parse(&["evaluate", "--log", "l.csv"]).is_ok());
        let refused = parse(&["evaluate", "--log", "l.csv", "--top-k", "0"]).unwrap_err();
        assert!(refused.contains("--top-k") && refused.contains("at least 1"), "{refused}");
        assert!(parse(&["evaluate", "--log", "l.csv", "--top-k", "-1"]).is_err());
        assert!(parse(&["evaluate", "--log", "l.csv", "--top-k", "1"]).is_ok());
        assert!(parse(&["simulate", "--top-k", "0"]).is_err());
        assert!(parse(&["simulate", "--steps", "0"]).is_err());
        assert!(parse(&["rank", "--context", "1,2", "--top", "0"]).is_err());
        assert!(parse(&["create", "--dim", "0"]).is_err());
        assert!(parse(&["bench", "rank", "--connections", "0"]).is_err());
        assert!(parse(&["feedback", "--product", "p", "--reward", "1", "--context", "1", "--kafka-timeout", "0"]).is_err());
        assert!(parse(&["feedback", "--product", "p", "--reward", "-1", "--context", "-1,0.5", "--kafka-timeout", "2.5"]).is_ok());
        // Avro needs a registry to register its schema with.
        assert!(parse(&["feedback", "--product", "p", "--reward", "1", "--context", "1", "--format", "avro"]).is_err());
        assert!(parse(&["feedback", "--product", "p", "--reward", "1", "--context", "1", "--format", "avro", "--schema-registry", "http://r:8081"]).is_ok());
        assert!(parse(&["bootstrap", "--log", "l.csv", "--format", "avro", "--schema-registry", "http://r:8081"]).is_ok());
        assert!(parse(&["simulate", "--rate", "nan"]).is_err());
        for refused in ["0", "1.5", "-0.5", "nan", "x"] {
            let option = format!("--decay={refused}");
            let error = parse(&["simulate", "--local", &option]).unwrap_err();
            assert!(error.contains("a number in (0, 1]"), "{refused}: {error}");
            assert!(parse(&["evaluate", "--log", "l.csv", &option]).is_err());
            assert!(parse(&["create", "--dim", "3", &option]).is_err());
        }
        assert!(parse(&["simulate", "--local", "--decay", "1", "--drift-at", "3000"]).is_ok());
        assert!(parse(&["evaluate", "--log", "l.csv", "--decay", "0.999"]).is_ok());
        assert!(parse(&["simulate", "--drift-at", "0"]).is_err());
    }
}
