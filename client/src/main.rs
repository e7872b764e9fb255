//! `bandit`: the command line of the recommender. Thin: every subcommand is
//! a few calls into the `bandit` library.

mod cli;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bandit::feedback::FeedbackProducer;
use bandit::lab::live::{LiveStack, LoopStack};
use bandit::lab::shop::{Catalogue, DIM};
use bandit::lab::simulate::{self, LocalLinUcb, LocalSettings, Report, SimulationConfig};
use bandit::models::{CreateOptions, Models, RankOptions};
use bandit::lab::{bench, bench_replicas, evaluate};
use bandit::ClientError;
use bandit_core::codec::Format;
use bandit_core::event::FeedbackEvent;
use bandit_core::number::Shortest;
use clap::Parser;
use cli::args::{BenchCommand, Cli, Command, Connection, EvalMethod, FeedbackArg, GenerateFormat, PayloadFormat, ReportFormat};

impl From<FeedbackArg> for simulate::FeedbackMode {
    fn from(value: FeedbackArg) -> Self {
        match value {
            FeedbackArg::Cascade => simulate::FeedbackMode::Cascade,
            FeedbackArg::Reference => simulate::FeedbackMode::Reference,
            FeedbackArg::All => simulate::FeedbackMode::All,
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

/// `bandit export-log`: the topics, joined, to a file or stdout; the counts to stderr.
fn export_log(c: &Connection, out: Option<PathBuf>, reward_wait_ms: i64, aggregation: cli::args::AggregationArg, default_reward: f64) -> Result<()> {
    use bandit_core::join::{Aggregation, Impressions, JoinSettings};
    if !default_reward.is_finite() {
        bail!("--default-reward is not a finite number");
    }
    let aggregation = match aggregation {
        cli::args::AggregationArg::Earliest => Aggregation::Earliest,
        cli::args::AggregationArg::Sum => Aggregation::Sum,
        cli::args::AggregationArg::Max => Aggregation::Max,
    };
    let settings = JoinSettings { reward_wait_ms, aggregation, default_reward, impressions: Impressions::All };
    let properties = kafka_properties(&c.kafka)?;
    let topics = bandit::export_log::Topics { brokers: &c.brokers, decisions: &c.decisions_topic, rewards: &c.rewards_topic, properties: &properties };
    let timeout = Duration::from_secs_f64(c.kafka_timeout);
    let counts = match out {
        Some(path) => {
            let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            bandit::export_log::export(&topics, settings, timeout, &mut std::io::BufWriter::new(file))?
        }
        None => bandit::export_log::export(&topics, settings, timeout, &mut std::io::BufWriter::new(std::io::stdout().lock()))?,
    };
    eprintln!("{counts}");
    Ok(())
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

/// The learning loop's producers, once a broker has confirmed both topics
/// (with the same partition count) within `--kafka-timeout`.
fn checked_decision_log(c: &Connection) -> Result<bandit::decision_log::DecisionLog> {
    let log = bandit::decision_log::DecisionLog::new(&c.brokers, &c.decisions_topic, &c.rewards_topic, &kafka_properties(&c.kafka)?)?;
    log.check_topics(Duration::from_secs_f64(c.kafka_timeout))?;
    Ok(log)
}

/// [`checked_producer`] writing the format asked for (Avro registers the
/// feedback schema first).
fn encoding_producer(c: &Connection, encoding: &cli::args::EventEncoding) -> Result<FeedbackProducer> {
    let producer = checked_producer(c)?;
    match (encoding.format, &encoding.schema_registry) {
        (cli::args::EventFormat::Avro, Some(url)) => {
            let timeout = Duration::from_secs_f64(c.kafka_timeout);
            let registry = bandit_formats::registry::RegistryClient::new(url, encoding.schema_registry_basic_auth.as_deref(), timeout)?;
            Ok(producer.with_avro(&registry)?)
        }
        _ => Ok(producer),
    }
}

fn run(cli: Cli) -> Result<()> {
    let c = &cli.connection;
    let models = || Models::connect(&c.redis).with_context(|| format!("connecting to {}", bandit_connect::mask(&c.redis)));
    match cli.command {
        Command::Create { dim, alpha, lambda, decay } => {
            models()?.create(&c.model, dim, &CreateOptions { alpha, lambda, decay })?;
            println!("OK");
        }
        Command::Rank { context, arms, top, alpha, policy: None, event_id: None, .. } => {
            let options = RankOptions { candidates: arms.as_deref(), top_k: top, alpha };
            for ranked in models()?.rank(&c.model, &context, &options).map_err(cli_error)? {
                println!("{}\t{}", ranked.id, Shortest(ranked.score));
            }
        }
        Command::Rank { context, arms, top, alpha, policy, event_id, log, delivery_timeout } => {
            let options = RankOptions { candidates: arms.as_deref(), top_k: top, alpha };
            let policy = policy.unwrap_or(bandit::models::Policy::Ucb);
            // With --log the topics are checked first: a decision that cannot be logged is not made.
            let decision_log = if log { Some(checked_decision_log(c)?) } else { None };
            let decided = models()?.decide(&c.model, &context, &options, policy, event_id.as_deref()).map_err(cli_error)?;
            println!("version\t{}", decided.version);
            for item in &decided.items {
                println!("{}\t{}\t{}", item.id, Shortest(item.score), Shortest(item.probability));
            }
            if let (Some(decision_log), Some(event_id)) = (decision_log, event_id) {
                let timestamp = bandit::decision_log::now_ms();
                let decision = bandit::decision_log::decision_event(&event_id, &c.model, policy, &context, &decided, timestamp)?;
                decision_log.publish_decision(&decision)?;
                decision_log.flush(Duration::from_secs_f64(delivery_timeout))?;
                eprintln!("logged decision {event_id} to topic '{}'", c.decisions_topic);
            }
        }
        Command::Reward { event_id, product, value, delivery_timeout } => {
            if event_id.is_empty() {
                bail!("--event-id is empty");
            }
            if product.is_empty() {
                bail!("--product is empty");
            }
            if !value.is_finite() {
                bail!("--value is not a finite number");
            }
            let decision_log = checked_decision_log(c)?;
            decision_log.reward(&event_id, &product, value)?;
            decision_log.flush(Duration::from_secs_f64(delivery_timeout))?;
            println!("sent");
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
        Command::Feedback { product, reward, context, event_id, delivery_timeout, encoding } => {
            let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
            let event_id = event_id.unwrap_or_else(|| format!("cli-{timestamp}"));
            let event = FeedbackEvent { event_id, product_id: product, reward, context_vector: context, timestamp, ..Default::default() };
            let check = cli::feedback::check_dim(&c.redis, &c.model, event.context_vector.len());
            cli::feedback::validate(&event, &check)?;
            let producer = encoding_producer(c, &encoding)?;
            producer.send(&event)?;
            producer.flush(Duration::from_secs_f64(delivery_timeout))?;
            println!("sent");
        }
        Command::Bootstrap { log, delivery_timeout, encoding } => {
            let history = bandit::history::read_log(&log)?;
            let report = encoding_producer(c, &encoding)?.publish_log(&history, Duration::from_secs_f64(delivery_timeout))?;
            println!("published {} events ({} features: {})", report.delivered, history.feature_names.len(), history.feature_names.join(", "));
        }
        Command::ExportLog { out, reward_wait_ms, aggregation, default_reward } => export_log(c, out, reward_wait_ms, aggregation, default_reward)?,
        Command::Bench(bench) => run_bench(c, bench)?,
        Command::Generate { events, seed, out, items_out, format: GenerateFormat::Decisions, policy, alpha, arms, top, publish_every } => {
            let logging = bandit::lab::ope::candidates::parse_policy(&policy)?;
            let walk = bandit::lab::generate::ShopWalk { events, seed, arms, publish_every, top };
            let file = std::fs::File::create(&out).with_context(|| format!("writing {}", out.display()))?;
            let mut writer = std::io::BufWriter::new(file);
            let ctr = bandit::lab::generate::generate_decisions(&walk, logging, alpha, &mut writer)?;
            writer.flush().with_context(|| format!("writing {}", out.display()))?;
            if items_out.is_some() {
                eprintln!("--items-out is ignored with --format decisions");
            }
            println!("wrote {events} decisions of {policy} (mean logged reward {ctr:.4}) to {}", out.display());
        }
        Command::Generate { events, seed, out, items_out, .. } => {
            let (log, items) = bandit::lab::generate::generate_log(events, seed);
            std::fs::write(&out, log).with_context(|| format!("writing {}", out.display()))?;
            if let Some(path) = items_out {
                std::fs::write(&path, items).with_context(|| format!("writing {}", path.display()))?;
            }
            println!("wrote {events} events to {}", out.display());
        }
        Command::Evaluate { decisions, method, policies, truth, json, tau, publish_every, seed, format, .. }
            if method == Some(EvalMethod::Ope) || (method.is_none() && decisions.is_some()) =>
        {
            use bandit::lab::ope;
            let started = Instant::now();
            let path = decisions.context("--method ope needs --decisions FILE")?;
            let grid = ope::candidates::parse_grid(&policies)?;
            let config = ope::OpeConfig { seed, tau, publish_every, ..ope::OpeConfig::default() };
            let mut report = ope::evaluate(&ope::log::LogSource::File(path), &grid, &config)?;
            if truth {
                ope::add_truth(&mut report, seed)?;
            }
            match (json, format) {
                (true, _) | (false, ReportFormat::Json) => println!("{}", ope::report::json(&report)),
                (false, ReportFormat::Table) => print!("{}", ope::report::table(&report)),
                (false, ReportFormat::Csv) => bail!("--method ope prints a table or JSON, not CSV"),
            }
            eprintln!("{} decisions, {} candidates in {:.2} s", report.decisions, report.candidates.len(), started.elapsed().as_secs_f64());
        }
        Command::Evaluate { log, items, top_k, test_fraction, seed, decay, format, json, .. } => {
            let started = Instant::now();
            let log = log.context("--method replay-topk needs --log FILE")?;
            let format = if json { ReportFormat::Json } else { format };
            let history = bandit::history::read_log(&log)?;
            let items = items.map(|path| bandit::history::read_items(&path)).transpose()?;
            let config = evaluate::EvalConfig { top_k, test_fraction, seed, decay };
            let results = evaluate::evaluate(&history, items, &config)?;
            match format {
                ReportFormat::Table => print!("{}", evaluate::table(&results, top_k)),
                ReportFormat::Json => println!("{}", evaluate::json(&results)),
                ReportFormat::Csv => print!("{}", evaluate::csv(&results)),
            }
            let per_policy: Vec<String> = results.iter().map(|r| format!("{} {:.2}s", r.name, r.seconds)).collect();
            eprintln!("{} events, {} policies in {:.2} s ({})", history.rows.len(), results.len(), started.elapsed().as_secs_f64(), per_policy.join(", "));
        }
        Command::Simulate { steps, seed, top_k, window, rate, plot, feedback, local, decay, drift_at, recovery_window, direct, policy } => {
            let window = window.unwrap_or((steps / 10).max(1));
            let on_loop = !local && !direct;
            let feedback = match (on_loop, feedback) {
                (true, Some(_)) => bail!(
                    "--feedback applies with --direct or --local: on the learning loop the shop sends only clicks, and bandit-join's --impressions decides which outcomes become feedback"
                ),
                (true, None) => simulate::FeedbackMode::Rewards,
                (false, feedback) => feedback.unwrap_or(FeedbackArg::Cascade).into(),
            };
            let config = SimulationConfig { steps, seed, top_k, window, feedback, drift_at };
            let policy = policy.unwrap_or(if on_loop { SHOP_POLICY } else { bandit::models::Policy::Ucb });
            let run = SimulateRun { config, rate, plot, decay, recovery_window, policy, on_loop };
            if local {
                simulate_local(&run)?;
            } else {
                simulate_live(c, &run)?;
            }
        }
    }
    Ok(())
}

fn run_bench(c: &Connection, command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Rank { arms, dim, top, requests, connections, seconds } => {
            let config = bench::BenchConfig { arms, dim, top, requests, connections, seconds };
            let result = bench::run(&c.redis, &config)?;
            print!("{}", bench::report(&config, &result));
        }
        BenchCommand::Catalogue { arms, dim, top, events, requests, trained_only } => {
            let config = bench::CatalogueConfig { arms, dim, top, events, requests, untrained: !trained_only };
            let result = bench::catalogue(&c.redis, &config)?;
            print!("{}", bench::catalogue_report(&config, &result));
        }
        BenchCommand::Fold { dim, events } => {
            let rates = bench::fold_rate(dim, events);
            println!("fold, d = {dim}: {:.0} events/s (one core); decode + validate + fold:", rates.fold);
            println!("  JSON {:.0} events/s ({:.0} bytes/event)", rates.json, rates.json_bytes);
            println!("  Avro {:.0} events/s ({:.0} bytes/event, Confluent-framed)", rates.avro, rates.avro_bytes);
        }
        BenchCommand::Flush { dim, arms } => {
            let (single_thread_ms, _) = bench::flush_cost(dim, arms);
            let run = bench::flush_with_load(&c.redis, dim, arms)?;
            print!("{}", bench::flush_report(dim, arms, single_thread_ms, &run));
        }
        BenchCommand::Replicas { arms, dim, top, connections, seconds } => {
            let config = bench_replicas::ReplicasConfig { arms, dim, top, connections, seconds };
            let result = bench_replicas::run(&c.redis, &config)?;
            print!("{}", bench_replicas::report(&config, &bandit_connect::mask(&c.redis), &result));
        }
    }
    Ok(())
}

/// What `bandit simulate` was asked for.
struct SimulateRun {
    config: SimulationConfig,
    rate: f64,
    plot: PathBuf,
    decay: f64,
    recovery_window: usize,
    /// How the shop's ranking explores.
    policy: bandit::models::Policy,
    /// Decisions and rewards through bandit-join, not feedback events.
    on_loop: bool,
}

/// The simulated shop's policy on the learning loop (see the README's
/// "The learning loop" for the runs that chose it).
const SHOP_POLICY: bandit::models::Policy = bandit::models::Policy::EpsilonGreedy { epsilon: 0.1 };

/// Prints the learning curve of `report` (and writes its SVG).
fn print_report(run: &SimulateRun, report: &Report, learner: &str) -> Result<()> {
    std::fs::write(&run.plot, report.svg()).with_context(|| format!("writing {}", run.plot.display()))?;
    println!("CTR per window of {} visits ({learner} learns from its own feedback; random and oracle see the same visits):", run.config.window);
    print!("{}", report.table());
    println!("learning curve: {}", run.plot.display());
    println!("{}", report.summary());
    Ok(())
}

/// The recovery after a drift, as a count or "none" (not within the run).
fn recovery_text(report: &Report, window: usize) -> String {
    report.recovery(window).map_or_else(|| "none".to_owned(), |visits| visits.to_string())
}

/// The recovery lines after a drift: one per learner, then a machine-readable line.
fn print_recovery(run: &SimulateRun, learners: &[(&str, String, &Report)]) {
    let Some(at) = run.config.drift_at else { return };
    let window = run.recovery_window;
    println!(
        "after the drift at visit {at} (coffee moves to evenings, weekends to salads and desserts): visits until LinUCB's clicks over the last {window} visits reach 90% of the oracle's"
    );
    for (label, _, report) in learners {
        let text = report.recovery(window).map_or_else(|| format!("not within the run ({} visits after the drift)", run.config.steps.saturating_sub(at)), |v| v.to_string());
        println!("  {label:<32} {text}");
    }
    let fields: Vec<String> = learners.iter().map(|(_, key, report)| format!("{key}={}", recovery_text(report, window))).collect();
    println!("recovery: drift_at={at} window={window} {}", fields.join(" "));
}

/// `bandit simulate --local`: in process; with a drift and forgetting, the
/// same visits once more without forgetting.
fn simulate_local(run: &SimulateRun) -> Result<()> {
    let catalogue = Catalogue::generate(run.config.seed);
    let learn = |decay: f64| -> Result<Report> {
        let mut learner = LocalLinUcb::new(&catalogue, LocalSettings { decay, policy: run.policy, ..LocalSettings::DEFAULT })?;
        Ok(simulate::run(&run.config, &catalogue, &mut learner, |_, _| {})?)
    };
    let report = learn(run.decay)?;
    let label = if run.decay < 1.0 { format!("LinUCB (in process, forgetting γ = {})", Shortest(run.decay)) } else { "LinUCB (in process)".to_owned() };
    print_report(run, &report, &label)?;
    if run.config.drift_at.is_some() {
        if run.decay < 1.0 {
            let plain = learn(1.0)?;
            let forgetting = format!("forgetting, γ = {}", Shortest(run.decay));
            print_recovery(run, &[("no forgetting, γ = 1", "no_forgetting".into(), &plain), (&forgetting, "forgetting".into(), &report)]);
        } else {
            print_recovery(run, &[("no forgetting, γ = 1", "no_forgetting".into(), &report)]);
        }
    }
    Ok(())
}

fn simulate_live(c: &Connection, run: &SimulateRun) -> Result<()> {
    let (config, rate) = (&run.config, run.rate);
    let steps = config.steps;
    let catalogue = Catalogue::generate(config.seed);
    let mut models = Models::connect(&c.redis).with_context(|| format!("connecting to {}", bandit_connect::mask(&c.redis)))?;
    match models.dim(&c.model)? {
        Some(dim) if dim != DIM => bail!("{} has dim {dim}, the shop's context has {DIM} features", c.model),
        Some(_) => {
            let decay = models.stats(&c.model, None)?.get("decay").and_then(|d| d.parse::<f64>().ok()).unwrap_or(1.0);
            if decay != run.decay {
                bail!("{} forgets with decay {decay}, --decay is {}: use another --model or the same decay", c.model, Shortest(run.decay));
            }
        }
        None => models.create(&c.model, DIM, &CreateOptions { decay: Some(run.decay), ..CreateOptions::default() })?,
    }
    let updates_before = model_updates(&mut models, &c.model)?;
    let report = if run.on_loop {
        let log = checked_decision_log(c)?;
        let policy = bandit::decision_log::policy_text(run.policy);
        let prefix = format!("sim-{}-{}", config.seed, bandit::decision_log::now_ms());
        let mut shop = LoopStack::new(models, log, c.model.clone(), catalogue.ids(), run.policy, prefix);
        eprintln!(
            "simulating {steps} visits to a shop of {} products at {rate} visits/s on the learning loop: RANK POLICY {policy} with event ids, decisions to '{}', clicks to '{}'",
            catalogue.products.len(),
            c.decisions_topic,
            c.rewards_topic
        );
        let report = run_visits(config, rate, &catalogue, &mut shop)?;
        let (decisions, rewards) = shop.log.flush(Duration::from_secs(30))?;
        eprintln!("logged {} decisions and {} rewards", decisions.delivered, rewards.delivered);
        let mut models = Models::connect(&c.redis)?;
        if model_updates(&mut models, &c.model)? == updates_before {
            // Not an error: with a long reward wait nothing is joined yet.
            eprintln!(
                "note: no training example reached {} during the run: bandit-join (reading '{}' and '{}') closes a decision once its reward wait is over, and bandit-sink folds it from '{}'; is each running? (--direct sends feedback straight to the trainer)",
                c.model, c.decisions_topic, c.rewards_topic, c.topic
            );
        }
        report
    } else {
        let producer = checked_producer(c)?;
        let mut live = LiveStack { models, producer, model: c.model.clone(), candidates: catalogue.ids() };
        eprintln!("simulating {steps} visits to a shop of {} products at {rate} visits/s, feedback straight to '{}'", catalogue.products.len(), c.topic);
        let report = run_visits(config, rate, &catalogue, &mut live)?;
        live.producer.flush(Duration::from_secs(30))?;
        report
    };
    print_report(run, &report, "LinUCB")?;
    print_recovery(run, &[("LinUCB (live)", "linucb".into(), &report)]);
    Ok(())
}

/// The model's `updates` (examples folded) as STATS reports it.
fn model_updates(models: &mut Models, model: &str) -> Result<u64> {
    Ok(models.stats(model, None)?.get("updates").and_then(|u| u.parse().ok()).unwrap_or(0))
}

/// The visits at `rate` per second (0: at once), with progress on stderr.
fn run_visits(config: &SimulationConfig, rate: f64, catalogue: &Catalogue, recommender: &mut dyn simulate::Recommender) -> Result<Report> {
    let steps = config.steps;
    let interactive = std::io::stderr().is_terminal();
    let started = Instant::now();
    let report = simulate::run(config, catalogue, recommender, |done, ctr| {
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
    Ok(report)
}
