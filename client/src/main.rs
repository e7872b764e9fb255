//! `bandit`: the command line of the recommender. Thin: every subcommand is
//! a few calls into the `bandit` library.

mod cli;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bandit::feedback::FeedbackProducer;
use bandit::format;
use bandit::live::LiveStack;
use bandit::models::{Models, RankOptions};
use bandit::shop::{Catalogue, DIM};
use bandit::simulate::{self, SimulationConfig};
use bandit::ClientError;
use bandit_core::codec::Format;
use bandit_core::event::FeedbackEvent;
use clap::Parser;
use cli::args::{BenchCommand, Cli, Command, Connection, FeedbackArg, PayloadFormat, ReportFormat};

impl From<FeedbackArg> for simulate::FeedbackMode {
    fn from(value: FeedbackArg) -> Self {
        match value {
            FeedbackArg::Cascade => simulate::FeedbackMode::Cascade,
            FeedbackArg::Reference => simulate::FeedbackMode::Reference,
        }
    }
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

/// A library error in the words of the command line: the context the
/// library was given is the user's `--context`.
fn cli_error(error: ClientError) -> anyhow::Error {
    match error {
        ClientError::ContextLength { given, dim } => anyhow::anyhow!("--context has {given} values, model dim is {dim}"),
        other => other.into(),
    }
}

/// A producer whose topic a broker has confirmed within `--kafka-timeout`.
fn checked_producer(c: &Connection) -> Result<FeedbackProducer> {
    let producer = FeedbackProducer::new(&c.brokers, &c.topic, &kafka_properties(&c.kafka)?)?;
    producer.check_topic(Duration::from_secs_f64(c.kafka_timeout))?;
    Ok(producer)
}

fn run(cli: Cli) -> Result<()> {
    let c = &cli.connection;
    let models = || Models::connect(&c.redis).with_context(|| format!("connecting to {}", c.redis));
    match cli.command {
        Command::Create { dim, alpha, lambda } => {
            models()?.create(&c.model, dim, alpha, lambda)?;
            println!("OK");
        }
        Command::Rank { context, arms, top, alpha } => {
            let options = RankOptions { candidates: arms.as_deref(), top_k: top, alpha };
            for ranked in models()?.rank(&c.model, &context, &options).map_err(cli_error)? {
                println!("{}\t{}", ranked.id, format::number(ranked.score));
            }
        }
        // Numbers come at their shortest round-trip text (Models::stats).
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
        Command::Feedback { product, reward, context, event_id, delivery_timeout } => {
            let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
            let event_id = event_id.unwrap_or_else(|| format!("cli-{timestamp}"));
            let event = FeedbackEvent { event_id, product_id: product, reward, context_vector: context, timestamp };
            let check = cli::feedback::check_dim(&c.redis, &c.model, event.context_vector.len());
            cli::feedback::validate(&event, &check)?;
            let producer = checked_producer(c)?;
            producer.send(&event)?;
            producer.flush(Duration::from_secs_f64(delivery_timeout))?;
            println!("sent");
        }
        Command::Bootstrap { log, delivery_timeout } => {
            let history = bandit::history::read_log(&log)?;
            let report = checked_producer(c)?.publish_log(&history, Duration::from_secs_f64(delivery_timeout))?;
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
    let catalogue = Catalogue::generate(config.seed);
    let mut models = Models::connect(&c.redis).with_context(|| format!("connecting to {}", c.redis))?;
    match models.dim(&c.model)? {
        Some(dim) if dim != DIM => bail!("{} has dim {dim}, the shop's context has {DIM} features", c.model),
        Some(_) => {}
        None => models.create(&c.model, DIM, None, None)?,
    }
    let producer = checked_producer(c)?;
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
