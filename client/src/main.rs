//! `bandit`: the command line of the recommender. Thin: every subcommand is
//! a few calls into the `bandit` library.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bandit::feedback::FeedbackProducer;
use bandit::live::LiveStack;
use bandit::models::{Models, RankOptions};
use bandit::shop::{Catalogue, DIM};
use bandit::simulate::{self, SimulationConfig};
use bandit_core::codec::Format;
use bandit_core::event::FeedbackEvent;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "bandit", version, about = "Real-time product recommendations with contextual bandits (LinUCB) on Redis and Kafka.")]
struct Cli {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Connection {
    /// Redis URL.
    #[arg(long, global = true, env = "BANDIT_REDIS", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Kafka bootstrap servers.
    #[arg(long, global = true, env = "BANDIT_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Feedback topic.
    #[arg(long, global = true, env = "BANDIT_TOPIC", default_value = "feedback")]
    topic: String,
    /// Model key in Redis.
    #[arg(long, global = true, env = "BANDIT_MODEL", default_value = "bandit:model")]
    model: String,
    /// librdkafka property key=value for the producer (repeatable).
    #[arg(short = 'X', global = true, value_name = "KEY=VALUE")]
    kafka: Vec<String>,
}

/// Which outcomes become feedback events.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum FeedbackArg {
    /// 0 for every product read and passed over, 1 for the click.
    Cascade,
    /// The reference design's: 1 for the click, else 0 for the first product.
    Reference,
}

impl From<FeedbackArg> for simulate::FeedbackMode {
    fn from(value: FeedbackArg) -> Self {
        match value {
            FeedbackArg::Cascade => simulate::FeedbackMode::Cascade,
            FeedbackArg::Reference => simulate::FeedbackMode::Reference,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReportFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PayloadFormat {
    Binary,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an empty model (BANDIT.CREATE).
    Create {
        #[arg(long)]
        dim: usize,
        #[arg(long)]
        alpha: Option<f64>,
        #[arg(long)]
        lambda: Option<f64>,
    },
    /// Rank products for a context (BANDIT.RANK … WITHSCORES).
    Rank {
        /// Context values, comma-separated.
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true, required = true)]
        context: Vec<f64>,
        /// Candidate product ids, comma-separated (all arms when absent).
        #[arg(long, value_delimiter = ',')]
        arms: Option<Vec<String>>,
        #[arg(long)]
        top: Option<usize>,
        #[arg(long)]
        alpha: Option<f64>,
    },
    /// Show a model's (or one arm's) statistics (BANDIT.STATS).
    Stats {
        #[arg(long)]
        arm: Option<String>,
    },
    /// Write the model's payload (BANDIT.EXPORT) to a file or stdout.
    Export {
        #[arg(long, value_enum, default_value = "json")]
        format: PayloadFormat,
        /// Output file (stdout when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Load a payload file, binary or JSON, into the model (BANDIT.LOAD).
    Import {
        /// The payload file.
        file: PathBuf,
    },
    /// Send one feedback event to Kafka, keyed by product id.
    Feedback {
        #[arg(long)]
        product: String,
        #[arg(long)]
        reward: f64,
        #[arg(long, value_delimiter = ',', allow_hyphen_values = true, required = true)]
        context: Vec<f64>,
        #[arg(long)]
        event_id: Option<String>,
    },
    /// Publish a historical log (CSV: features…, product_id, response) into the topic.
    Bootstrap {
        /// The CSV log.
        #[arg(long)]
        log: PathBuf,
    },
    /// Write a historical log from the simulated shop (and its product features).
    Generate {
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The log (CSV: event_id, 15 features, product_id, response).
        #[arg(long)]
        out: PathBuf,
        /// The product features (CSV: product_id, category one-hot, is_coffee, price_scaled).
        #[arg(long)]
        items_out: Option<PathBuf>,
    },
    /// Compare policies offline on a log: time-ordered split, top-k metrics.
    Evaluate {
        /// The log (CSV with features…, product_id, response).
        #[arg(long)]
        log: PathBuf,
        /// Candidate products (CSV with a product_id column); default: every product in the log.
        #[arg(long)]
        items: Option<PathBuf>,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Share of the log, at its end, held out for testing.
        #[arg(long, default_value_t = 0.2)]
        test_fraction: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
    },
    /// Benchmarks (see the README's Performance section).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run the simulated shop against the live stack and show the learning curve.
    Simulate {
        /// Visits to simulate.
        #[arg(long, default_value_t = 3000)]
        steps: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Recommendations per visit.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Visits per CTR window (default: steps / 10).
        #[arg(long)]
        window: Option<usize>,
        /// Visits per second (0: as fast as possible). Real traffic arrives
        /// over time, and the sink publishes on its flush interval.
        #[arg(long, default_value_t = 400.0)]
        rate: f64,
        /// Where to write the learning curve (SVG).
        #[arg(long, default_value = "bandit-simulation.svg")]
        plot: PathBuf,
        /// Which outcomes of a visit are sent as feedback.
        #[arg(long, value_enum, default_value = "cascade")]
        feedback: FeedbackArg,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// BANDIT.RANK versus GET on the --redis server: latency, throughput, server time.
    Rank {
        #[arg(long, default_value_t = 200)]
        arms: usize,
        #[arg(long, default_value_t = 15)]
        dim: usize,
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Requests per command on one connection.
        #[arg(long, default_value_t = 20_000)]
        requests: usize,
        /// Connections for the throughput phase.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Seconds per command in the throughput phase.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// The sink's per-event CPU cost: fold alone, and decode + validate + fold.
    Fold {
        #[arg(long, default_value_t = 15)]
        dim: usize,
        #[arg(long, default_value_t = 2_000_000)]
        events: usize,
    },
    /// One flush: invert and encode dirty arms, then BANDIT.LOAD them on --redis.
    Flush {
        #[arg(long, default_value_t = 32)]
        dim: usize,
        #[arg(long, default_value_t = 10_000)]
        arms: usize,
    },
}

fn kafka_properties(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            let (key, value) = pair.split_once('=').with_context(|| format!("-X {pair}: expected key=value"))?;
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli) {
        eprintln!("bandit: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let c = &cli.connection;
    let models = || Models::connect(&c.redis).with_context(|| format!("connecting to {}", c.redis));
    let producer = || -> Result<FeedbackProducer> {
        Ok(FeedbackProducer::new(&c.brokers, &c.topic, &kafka_properties(&c.kafka)?)?)
    };
    match cli.command {
        Command::Create { dim, alpha, lambda } => {
            models()?.create(&c.model, dim, alpha, lambda)?;
            println!("OK");
        }
        Command::Rank { context, arms, top, alpha } => {
            let options = RankOptions { candidates: arms.as_deref(), top_k: top, alpha };
            for ranked in models()?.rank(&c.model, &context, &options)? {
                println!("{}\t{}", ranked.id, ranked.score);
            }
        }
        Command::Stats { arm } => {
            for (field, value) in models()?.stats(&c.model, arm.as_deref())? {
                println!("{field}\t{value}");
            }
        }
        Command::Export { format, out } => {
            let format = match format {
                PayloadFormat::Binary => Format::Binary,
                PayloadFormat::Json => Format::Json,
            };
            let bytes = models()?.export(&c.model, None, format)?;
            match out {
                Some(path) => std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?,
                None => std::io::stdout().write_all(&bytes)?,
            }
        }
        Command::Import { file } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let changed = models()?.load(&c.model, &bytes)?;
            println!("{changed} arms written");
        }
        Command::Feedback { product, reward, context, event_id } => {
            let producer = producer()?;
            let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
            let event_id = event_id.unwrap_or_else(|| format!("cli-{timestamp}"));
            producer.send(&FeedbackEvent { event_id, product_id: product, reward, context_vector: context, timestamp })?;
            producer.flush(Duration::from_secs(30))?;
            println!("sent");
        }
        Command::Bootstrap { log } => {
            let history = bandit::history::read_log(&log)?;
            let report = producer()?.publish_log(&history, Duration::from_secs(120))?;
            println!("published {} events ({} features: {})", report.delivered, history.feature_names.len(), history.feature_names.join(", "));
        }
        Command::Bench(bench) => run_bench(c, bench)?,
        Command::Generate { events, seed, out, items_out } => {
            let (log, items) = bandit::generate::generate_log(events, seed);
            std::fs::write(&out, log).with_context(|| format!("writing {}", out.display()))?;
            if let Some(path) = items_out {
                std::fs::write(&path, items).with_context(|| format!("writing {}", path.display()))?;
            }
            println!("wrote {events} events to {}", out.display());
        }
        Command::Evaluate { log, items, top_k, test_fraction, seed, format } => {
            let started = Instant::now();
            let history = bandit::history::read_log(&log)?;
            let items = match items {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    Some(bandit::generate::item_ids(&text, &path.display().to_string())?)
                }
                None => None,
            };
            let config = bandit::evaluate::EvalConfig { top_k, test_fraction, seed };
            let results = bandit::evaluate::evaluate(&history, items, &config)?;
            match format {
                ReportFormat::Table => print!("{}", bandit::evaluate::table(&results, top_k)),
                ReportFormat::Json => println!("{}", bandit::evaluate::json(&results)),
                ReportFormat::Csv => print!("{}", bandit::evaluate::csv(&results)),
            }
            let per_policy: Vec<String> = results.iter().map(|r| format!("{} {:.2}s", r.name, r.seconds)).collect();
            eprintln!("{} events, {} policies in {:.2} s ({})", history.rows.len(), results.len(), started.elapsed().as_secs_f64(), per_policy.join(", "));
        }
        Command::Simulate { steps, seed, top_k, window, rate, plot, feedback } => {
            let window = window.unwrap_or((steps / 10).max(1));
            let config = SimulationConfig { steps, seed, top_k, window, feedback: feedback.into() };
            simulate(c, &config, rate, &plot)?;
        }
    }
    Ok(())
}

fn run_bench(c: &Connection, command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Rank { arms, dim, top, requests, connections, seconds } => {
            let config = bandit::bench::BenchConfig { arms, dim, top, requests, connections, seconds };
            let result = bandit::bench::run(&c.redis, &config)?;
            print!("{}", bandit::bench::report(&config, &result));
        }
        BenchCommand::Fold { dim, events } => {
            let (fold, decode_and_fold) = bandit::bench::fold_rate(dim, events);
            println!("fold, d = {dim}: {fold:.0} events/s; JSON decode + validate + fold: {decode_and_fold:.0} events/s (one core)");
        }
        BenchCommand::Flush { dim, arms } => {
            let (cpu_ms, bytes) = bandit::bench::flush_cost(dim, arms);
            let (total_ms, load_ms) = bandit::bench::flush_with_load(&c.redis, dim, arms)?;
            println!("flush of {arms} arms, d = {dim}: inversion + encoding {cpu_ms:.1} ms ({:.1} MB); with BANDIT.LOAD {total_ms:.1} ms (LOAD alone {load_ms:.1} ms)", bytes as f64 / 1e6);
        }
    }
    Ok(())
}

fn simulate(c: &Connection, config: &SimulationConfig, rate: f64, plot: &PathBuf) -> Result<()> {
    let steps = config.steps;
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let catalogue = Catalogue::generate(config.seed);
    let mut models = Models::connect(&c.redis).with_context(|| format!("connecting to {}", c.redis))?;
    match models.stats(&c.model, None) {
        Ok(stats) if stats.get("dim").map(String::as_str) != Some(&DIM.to_string()) => {
            bail!("{} has dim {}, the shop's context has {DIM} features", c.model, stats.get("dim").cloned().unwrap_or_default())
        }
        Ok(_) => {}
        Err(_) => models.create(&c.model, DIM, None, None)?,
    }
    let producer = FeedbackProducer::new(&c.brokers, &c.topic, &kafka_properties(&c.kafka)?)?;
    let mut live = LiveStack { models, producer, model: c.model.clone(), candidates: catalogue.ids() };
    let interactive = std::io::stderr().is_terminal();
    let started = Instant::now();
    eprintln!("simulating {steps} visits to a shop of {} products at {rate} visits/s", catalogue.products.len());
    let report = simulate::run(config, &catalogue, &mut live, |done, ctr| {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(done as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let report_every = (steps / 20).max(1);
        if interactive {
            let filled = done * 30 / steps;
            eprint!("\r[{}{}] {done}/{steps}  CTR {ctr:.3}", "#".repeat(filled), " ".repeat(30 - filled));
        } else if done % report_every == 0 {
            eprintln!("{done}/{steps} visits, running CTR {ctr:.3}");
        }
    })?;
    if interactive {
        eprintln!();
    }
    live.producer.flush(Duration::from_secs(30))?;
    std::fs::write(plot, report.svg()).with_context(|| format!("writing {}", plot.display()))?;
    println!("CTR per window of {} visits (LinUCB learns from its own feedback; random and oracle see the same visits):", config.window);
    print!("{}", report.table());
    println!("learning curve: {}", plot.display());
    println!("{}", report.summary());
    Ok(())
}
