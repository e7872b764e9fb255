//! Benchmarks.
//!
//! - [`run`]: BANDIT.RANK beside a plain GET of a small string on the same
//!   server in the same run, so the ratio says what ranking costs over Redis'
//!   own floor: latency on one connection, throughput over many, and the
//!   server's own time per call from INFO commandstats. It writes the keys
//!   [`RANK_KEYS`] and deletes them when done, also after a failure.
//! - [`fold_rate`]: the trainer's per-event CPU cost (JSON or Avro decode + fold).
//! - [`flush_cost`]: inverting and encoding many dirty arms, as one flush does.
//! - [`flush_with_load`]: a sink flush through the sink's trainer, LOADed
//!   while another connection runs GETs: the longest main-thread stall,
//!   with the LOAD in the background and (inside MULTI) on the main thread.
//! - [`catalogue`]: RANK TOP k over a large catalogue, trained (where the
//!   top-k prunes) next to untrained (the worst case: every arm scores the
//!   prior, nothing can be pruned), with MEMORY USAGE per arm.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bandit_core::cholesky::Workspace;
use bandit_core::codec::encode_binary;
use bandit_core::event::FeedbackEvent;
use bandit_core::fold::{ArmAccumulator, Learning};
use bandit_core::trainer::{Handled, Trainer};
use bandit_core::{ModelSettings, Payload};
use bandit_core::parts;

use crate::error::Result;
use crate::lab::local::LocalModel;
use crate::lab::rng::Rng;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub arms: usize,
    pub dim: usize,
    pub top: usize,
    /// Requests per command on the single connection.
    pub requests: usize,
    /// Client connections for the throughput phase.
    pub connections: usize,
    /// Seconds per command in the throughput phase.
    pub seconds: f64,
}

/// Latency percentiles in microseconds and throughput in requests/s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    pub p50_us: f64,
    pub p99_us: f64,
    pub ops_per_s: f64,
    /// Server-side microseconds per call (INFO commandstats).
    pub server_us_per_call: f64,
}

#[derive(Debug, Clone, Default)]
pub struct BenchResult {
    pub get: Measured,
    pub rank: Measured,
    /// RANK … EVENTID e POLICY p [WITHPROBS] per policy: latency on
    /// one connection and server time per call (no throughput phase).
    pub policies: Vec<(&'static str, Measured)>,
}

/// The randomised policies `bench rank` times next to plain UCB, as
/// BANDIT.RANK arguments after `… EVENTID e`.
const POLICIES: [(&str, &[&str]); 5] = [
    ("UCB decision", &["POLICY", "UCB", "WITHPROBS"]),
    ("EGREEDY 0.1", &["POLICY", "EGREEDY", "0.1", "WITHPROBS"]),
    ("SOFTMAX 0.05", &["POLICY", "SOFTMAX", "0.05", "WITHPROBS"]),
    ("TS", &["POLICY", "TS"]),
    ("TS WITHPROBS", &["POLICY", "TS", "WITHPROBS"]),
];

/// The model [`run`] ranks.
const MODEL_KEY: &str = "bench:model";
/// The string [`run`] GETs.
const STRING_KEY: &str = "bench:string";
/// The model [`flush_with_load`] loads.
const FLUSH_KEY: &str = "bench:flush";
/// The key `bench flush` SETs to the payload's bytes (no module: Redis'
/// own cost for a command that large), deleted after.
const BYTES_KEY: &str = "bench:flush:bytes";
/// Every key [`run`] writes (and deletes at its end).
pub const RANK_KEYS: [&str; 2] = [MODEL_KEY, STRING_KEY];

/// RANK as the library sends it (a CONTEXTBLOB of little-endian f64), for
/// a random context.
fn rank_command(key: &str, dim: usize, top: usize, rng: &mut Rng) -> redis::Cmd {
    let context: Vec<f64> = (0..dim).map(|_| rng.unit()).collect();
    crate::models::rank_command(key, &context, &crate::models::RankOptions { candidates: None, top_k: Some(top), alpha: None })
}

fn get_command() -> redis::Cmd {
    let mut command = redis::cmd("GET");
    command.arg(STRING_KEY);
    command
}

/// A model of `arms` arms named `p0…`, each folded from `events` random
/// events, with the prior λ = 1.
///
/// # Errors
/// [`crate::ClientError::Core`] if an inversion fails (it cannot with λ > 0).
pub fn trained_payload(dim: usize, arms: usize, events: usize, seed: u64) -> Result<Payload> {
    trained_payload_with_lambda(dim, arms, events, seed, 1.0)
}

/// As [`trained_payload`], with the prior A = λI, trained in process
/// ([`LocalModel`]). The payload carries no trainer offsets: it is a model
/// to load as is.
///
/// # Errors
/// [`crate::ClientError::Core`] for λ ≤ 0.
pub fn trained_payload_with_lambda(dim: usize, arms: usize, events: usize, seed: u64, lambda: f64) -> Result<Payload> {
    let mut rng = Rng::new(seed);
    let mut local = LocalModel::new(ModelSettings { dim, alpha: 1.0, lambda, decay: 1.0 })?;
    for k in 0..arms {
        for _ in 0..events {
            let context_vector = (0..dim).map(|_| rng.unit()).collect();
            let reward = if rng.unit() < 0.3 { 1.0 } else { 0.0 };
            local.fold(&FeedbackEvent { event_id: String::new(), product_id: format!("p{k}"), reward, context_vector, timestamp: 0, ..Default::default() })?;
        }
    }
    let mut payload = local.publish()?.unwrap_or(Payload { dim, arms: vec![], offsets: vec![], settings: None, base_offsets: vec![], version: None, fences: vec![] });
    payload.offsets.clear();
    payload.base_offsets.clear();
    Ok(payload)
}

fn connect(url: &str) -> Result<redis::Connection> {
    let client = redis::Client::open(url)?;
    Ok(client.get_connection_with_timeout(Duration::from_secs(5))?)
}

/// Runs `body`, then deletes `keys` whether it succeeded or not; the body's
/// error comes first, a failed delete after a successful body second.
fn with_cleanup<T>(url: &str, keys: &[&str], body: impl FnOnce() -> Result<T>) -> Result<T> {
    let outcome = body();
    let deleted = connect(url).and_then(|mut conn| {
        let _: u64 = redis::cmd("DEL").arg(keys).query(&mut conn)?;
        Ok(())
    });
    let value = outcome.map_err(|e| e.naming_server(url))?;
    deleted?;
    Ok(value)
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Loads the benchmark model (in chunks that fit the default payload limit)
/// and the GET key.
pub fn prepare(url: &str, config: &BenchConfig) -> Result<()> {
    let mut conn = connect(url)?;
    let _: u64 = redis::cmd("DEL").arg(MODEL_KEY).query(&mut conn)?;
    let () = redis::cmd("SET").arg(STRING_KEY).arg("hello").query(&mut conn)?;
    let payload = trained_payload(config.dim, config.arms, 20, 7)?;
    for chunk in payload.arms.chunks(2000) {
        let part = Payload { dim: payload.dim, arms: chunk.to_vec(), offsets: vec![], settings: None, base_offsets: vec![], version: None, fences: vec![] };
        let bytes = encode_binary(&part)?;
        let _: u64 = redis::cmd("BANDIT.LOAD").arg(MODEL_KEY).arg(bytes).query(&mut conn)?;
    }
    Ok(())
}

fn latency(conn: &mut redis::Connection, commands: &[redis::Cmd], requests: usize) -> Result<(f64, f64)> {
    let mut samples = Vec::with_capacity(requests);
    for command in commands.iter().cycle().take(requests) {
        let start = Instant::now();
        let _: redis::Value = command.query(conn)?;
        samples.push(start.elapsed());
    }
    samples.sort_unstable();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

fn throughput(url: &str, commands: &[redis::Cmd], connections: usize, seconds: f64) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..connections {
        let mut conn = connect(url)?;
        let commands = commands.to_vec();
        let (done, stop) = (done.clone(), stop.clone());
        workers.push(thread::spawn(move || {
            for command in commands.iter().cycle().skip(worker) {
                if stop.load(Ordering::Relaxed) || command.query::<redis::Value>(&mut conn).is_err() {
                    break;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    thread::sleep(Duration::from_secs_f64(seconds));
    let count = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.join();
    }
    Ok(count as f64 / elapsed)
}

fn server_us_per_call(conn: &mut redis::Connection, command: &str) -> Result<f64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn)?;
    Ok(info
        .lines()
        .find(|line| line.starts_with(&format!("cmdstat_{command}:")))
        .and_then(|line| line.split(',').find_map(|part| part.strip_prefix("usec_per_call=")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0))
}

/// Runs the benchmark against a server that has the module loaded, and
/// deletes its keys ([`RANK_KEYS`]) at the end, also after a failure.
///
/// # Errors
/// Connection or command failures.
pub fn run(url: &str, config: &BenchConfig) -> Result<BenchResult> {
    with_cleanup(url, &RANK_KEYS, || measure(url, config))
}

fn measure(url: &str, config: &BenchConfig) -> Result<BenchResult> {
    prepare(url, config)?;
    let mut rng = Rng::new(99);
    let rank: Vec<redis::Cmd> = (0..64).map(|_| rank_command(MODEL_KEY, config.dim, config.top, &mut rng)).collect();
    let get = vec![get_command()];
    let mut conn = connect(url)?;
    // Warm both paths (scratch buffers, caches) before measuring.
    latency(&mut conn, &rank, 500)?;
    latency(&mut conn, &get, 500)?;
    let () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut conn)?;

    let mut result = BenchResult::default();
    (result.get.p50_us, result.get.p99_us) = latency(&mut conn, &get, config.requests)?;
    (result.rank.p50_us, result.rank.p99_us) = latency(&mut conn, &rank, config.requests)?;
    result.get.ops_per_s = throughput(url, &get, config.connections, config.seconds)?;
    result.rank.ops_per_s = throughput(url, &rank, config.connections, config.seconds)?;
    result.get.server_us_per_call = server_us_per_call(&mut conn, "get")?;
    result.rank.server_us_per_call = server_us_per_call(&mut conn, "bandit.rank")?;
    for (name, arguments) in POLICIES {
        let decided: Vec<redis::Cmd> = rank
            .iter()
            .zip(0..)
            .map(|(command, i)| {
                let mut command = command.clone();
                command.arg("EVENTID").arg(format!("bench-{i}")).arg(arguments);
                command
            })
            .collect();
        latency(&mut conn, &decided, 500)?;
        let () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut conn)?;
        let mut measured = Measured::default();
        (measured.p50_us, measured.p99_us) = latency(&mut conn, &decided, config.requests)?;
        measured.server_us_per_call = server_us_per_call(&mut conn, "bandit.rank")?;
        result.policies.push((name, measured));
    }
    Ok(result)
}

/// The report, as printed by `bandit bench rank`.
#[must_use]
pub fn report(config: &BenchConfig, result: &BenchResult) -> String {
    let BenchResult { get, rank, policies } = result;
    let mut out = String::new();
    out.push_str(&format!(
        "BANDIT.RANK over {} arms, d = {}, TOP {}, CONTEXTBLOB versus GET; {} requests on 1 connection, {} connections for {:.0} s\n",
        config.arms, config.dim, config.top, config.requests, config.connections, config.seconds
    ));
    out.push_str(&format!("{:<12} {:>10} {:>10} {:>14} {:>16}\n", "command", "p50 µs", "p99 µs", "requests/s", "server µs/call"));
    for (name, m) in [("GET", get), ("BANDIT.RANK", rank)] {
        out.push_str(&format!(
            "{:<12} {:>10.1} {:>10.1} {:>14.0} {:>16.2}\n",
            name, m.p50_us, m.p99_us, m.ops_per_s, m.server_us_per_call
        ));
    }
    out.push_str(&format!(
        "ratio RANK/GET: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x\n",
        rank.p50_us / get.p50_us.max(f64::MIN_POSITIVE),
        rank.p99_us / get.p99_us.max(f64::MIN_POSITIVE),
        rank.ops_per_s / get.ops_per_s.max(f64::MIN_POSITIVE)
    ));
    out.push_str("decisions (EVENTID; WITHPROBS but where shown without), one connection, server time next to plain UCB's:\n");
    for (name, m) in policies {
        out.push_str(&format!(
            "{:<14} p50 {:>8.1} µs  p99 {:>8.1} µs  server {:>8.2} µs/call ({:.2}x UCB)\n",
            name,
            m.p50_us,
            m.p99_us,
            m.server_us_per_call,
            m.server_us_per_call / rank.server_us_per_call.max(f64::MIN_POSITIVE)
        ));
    }
    out
}

/// Events per second through the sink's per-event CPU path, on one core:
/// the fold alone (A += xxᵀ, b += r·x), then decode + validation + fold
/// with the events as JSON and as Confluent-framed Avro (the sink's own
/// decoders: `bandit_formats::json` and a prepared writer schema).
#[must_use]
pub fn fold_rate(dim: usize, events: usize) -> FoldRates {
    let mut rng = Rng::new(5);
    let samples: Vec<FeedbackEvent> = (0..events.min(100_000))
        .map(|i| FeedbackEvent {
            event_id: format!("e{i}"),
            product_id: format!("p{}", i % 200),
            reward: if rng.unit() < 0.3 { 1.0 } else { 0.0 },
            context_vector: (0..dim).map(|_| (rng.unit() * 1e4).round() / 1e4).collect(),
            timestamp: 1_767_225_600_000,
            ..Default::default()
        })
        .collect();
    let learning = Learning::ridge(1.0);
    let mut arms: Vec<ArmAccumulator> = (0..200).map(|_| learning.prior(dim)).collect();
    let contexts: Vec<Vec<f64>> = (0..1000).map(|_| (0..dim).map(|_| rng.unit()).collect()).collect();
    let start = Instant::now();
    for (i, x) in contexts.iter().cycle().take(events).enumerate() {
        if let Some(arm) = arms.get_mut(i % 200) {
            learning.fold(arm, x, 1.0);
        }
    }
    let fold = events as f64 / start.elapsed().as_secs_f64();
    let mut fold_decoded = |encoded: &[Vec<u8>], decode: &dyn Fn(&[u8]) -> Option<FeedbackEvent>| {
        let start = Instant::now();
        let mut folded = 0usize;
        for bytes in encoded.iter().cycle().take(events) {
            let Some(event) = decode(bytes).filter(|event| event.validate(dim).is_ok()) else { continue };
            let index = event.product_id.get(1..).and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
            if let Some(arm) = arms.get_mut(index) {
                learning.fold(arm, &event.context_vector, event.reward);
                folded += 1;
            }
        }
        folded as f64 / start.elapsed().as_secs_f64()
    };
    let json: Vec<Vec<u8>> = samples.iter().map(|event| bandit_formats::json::encode(event).unwrap_or_default()).collect();
    let json_rate = fold_decoded(&json, &|bytes| bandit_formats::json::decode(Some(bytes)).ok());
    let (avro_rate, avro_bytes) = match avro_decoder() {
        Some((encoder, writer, reader)) => {
            let avro: Vec<Vec<u8>> = samples.iter().map(|event| encoder.encode(event).unwrap_or_default()).collect();
            let decode = |bytes: &[u8]| {
                let (_, body) = bandit_formats::framing::unframe(bytes).ok()?;
                writer.decode(&reader, body).ok()
            };
            (fold_decoded(&avro, &decode), avro.iter().map(Vec::len).sum::<usize>() as f64 / avro.len().max(1) as f64)
        }
        None => (0.0, 0.0),
    };
    let json_bytes = json.iter().map(Vec::len).sum::<usize>() as f64 / json.len().max(1) as f64;
    FoldRates { fold, json: json_rate, avro: avro_rate, json_bytes, avro_bytes }
}

/// [`fold_rate`]'s results: events per second, and mean record sizes.
#[derive(Debug, Clone, Copy, Default)]
pub struct FoldRates {
    pub fold: f64,
    pub json: f64,
    pub avro: f64,
    pub json_bytes: f64,
    pub avro_bytes: f64,
}

/// The repository's schema as writer (id 1) and reader, as the sink holds it.
fn avro_decoder() -> Option<(bandit_formats::avro::AvroEncoder, bandit_formats::avro::WriterSchema, bandit_formats::schema::Schema)> {
    let reader = bandit_formats::schema::feedback_schema().ok()?;
    let writer = bandit_formats::avro::WriterSchema::prepare(1, bandit_formats::schema::FEEDBACK_SCHEMA, &reader).ok()?;
    Some((bandit_formats::avro::AvroEncoder::new(1, reader.clone()), writer, reader))
}

/// Milliseconds to invert and encode `arms` dirty arms of dimension `dim`
/// (the CPU half of a flush), and the payload size in bytes.
#[must_use]
pub fn flush_cost(dim: usize, arms: usize) -> (f64, usize) {
    let mut rng = Rng::new(8);
    let learning = Learning::ridge(1.0);
    let accumulators: Vec<ArmAccumulator> = (0..arms)
        .map(|_| {
            let mut arm = learning.prior(dim);
            for _ in 0..dim * 2 {
                let x: Vec<f64> = (0..dim).map(|_| rng.unit()).collect();
                learning.fold(&mut arm, &x, 1.0);
            }
            arm
        })
        .collect();
    let mut work = Workspace::default();
    let start = Instant::now();
    let published: Vec<_> = accumulators
        .iter()
        .enumerate()
        .filter_map(|(i, arm)| arm.to_payload(&format!("p{i}"), &mut work, None).ok())
        .collect();
    let bytes = encode_binary(&Payload { dim, arms: published, offsets: vec![(0, 1)], settings: None, base_offsets: vec![], version: None, fences: vec![] }).map_or(0, |b| b.len());
    (start.elapsed().as_secs_f64() * 1e3, bytes)
}

/// One BANDIT.LOAD of a flush, and what a GET loop on another connection saw
/// meanwhile.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadRun {
    /// Milliseconds from sending the LOAD to its reply.
    pub load_ms: f64,
    /// GETs answered while the LOAD was in flight.
    pub gets: usize,
    pub get_p50_us: f64,
    pub get_p99_us: f64,
    pub get_max_us: f64,
    /// How long the LOAD held the server's main thread, by the module's own
    /// clock (INFO `bandit_loads_apply_last_usec`).
    pub held_us: f64,
    /// The server's own record of its longest main-thread event in the
    /// window (a command, an AOF write, …), in whole milliseconds: its
    /// latency monitor (`LATENCY LATEST`) at a 1 ms threshold, which a
    /// client descheduled on a busy machine cannot inflate. 0 when no
    /// event took 1 ms; NaN where the monitor could not be set (CONFIG
    /// refused).
    pub server_max_ms: f64,
    /// Which event that was (`command`, `aof-write`, `bandit-load`, …).
    pub server_max_event: &'static str,
}

/// What [`flush_with_load`] measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlushRun {
    /// The sink's CPU half of the flush (Trainer::flush: inversion on its
    /// threads, then encoding), milliseconds, and the payload size.
    pub invert_encode_ms: f64,
    pub bytes: usize,
    /// A plain LOAD: prepared off the main thread.
    /// The GET loop alone, as long as the plain LOAD took (baseline).
    pub idle: LoadRun,
    /// The payload's bytes stored with a plain SET (then deleted, outside
    /// the window): Redis' own cost of receiving, storing, propagating (to
    /// the AOF, replicas) and freeing a command this large, with no module.
    pub plain_set: LoadRun,
    pub background: LoadRun,
    /// The next flush in parts of at most [`parts::DEFAULT_PART_BYTES`] of
    /// arms, as the sink sends it: `BANDIT.LOAD … PART` commands applied
    /// together; and how many parts.
    pub in_parts: LoadRun,
    pub parts: usize,
    /// The same flush inside MULTI/EXEC, where the module may not block the
    /// client: everything on the main thread (as every LOAD was before).
    pub main_thread: LoadRun,
}

/// Three flushes of `arms` changed arms of dimension `dim` through the sink's
/// own trainer (core's [`Trainer`], inverting on its threads), each sent
/// while another connection runs GETs: as one BANDIT.LOAD, in parts as the
/// sink sends it, and as one LOAD inside MULTI/EXEC. The model is the key
/// `bench:flush`, deleted at the end, also after a failure.
///
/// # Errors
/// Connection or command failures.
pub fn flush_with_load(url: &str, dim: usize, arms: usize) -> Result<FlushRun> {
    // The server's latency monitor records every event of 1 ms or more
    // while this runs (each window starts with LATENCY RESET, which clears
    // its history); its own setting is put back after. Where CONFIG is not
    // allowed (a managed server, an ACL user), the run goes on without it.
    let mut conn = connect(url)?;
    let threshold: Option<(String, String)> = redis::cmd("CONFIG").arg("GET").arg("latency-monitor-threshold").query(&mut conn).ok();
    let monitor = threshold.is_some()
        && redis::cmd("CONFIG").arg("SET").arg("latency-monitor-threshold").arg(1).query::<()>(&mut conn).is_ok();
    let run = with_cleanup(url, &[FLUSH_KEY, STRING_KEY, BYTES_KEY], || measure_flush(url, dim, arms, monitor));
    if let (true, Some((_, value))) = (monitor, threshold) {
        let () = redis::cmd("CONFIG").arg("SET").arg("latency-monitor-threshold").arg(value).query(&mut conn)?;
    }
    run
}

/// A trainer holding partition 0, and the next offset on it.
struct FlushTrainer {
    trainer: Trainer,
    offset: i64,
    rng: Rng,
    dim: usize,
    /// The encoded payload of the last flush, in parts.
    encoded: Vec<Vec<u8>>,
}

impl FlushTrainer {
    /// Folds `events` random events into each of `arms` arms.
    fn fold(&mut self, arms: usize, events: usize) -> Result<()> {
        let empty = Payload { dim: self.dim, ..Payload::default() };
        for k in 0..arms {
            for _ in 0..events {
                let event = FeedbackEvent {
                    event_id: String::new(),
                    product_id: format!("p{k}"),
                    reward: if self.rng.unit() < 0.3 { 1.0 } else { 0.0 },
                    context_vector: (0..self.dim).map(|_| self.rng.unit()).collect(),
                    timestamp: 0,
                    ..Default::default()
                };
                while let Handled::NeedArm(id) = self.trainer.handle(0, self.offset, Ok(&event)) {
                    // A new arm: the model has none, so it starts from the prior.
                    self.trainer.restored(0, &id, &empty)?;
                }
                self.offset += 1;
            }
        }
        Ok(())
    }

    /// The sink's flush: the dirty arms inverted on the trainer's threads,
    /// encoded into the buffers kept from the last flush (as the sink does),
    /// in parts of at most `part_bytes` of arms; milliseconds.
    fn flush(&mut self, part_bytes: usize) -> Result<f64> {
        let start = Instant::now();
        let flushed = self.trainer.flush_encoded(&mut self.encoded, part_bytes)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if let Some((payload, _)) = flushed {
            self.trainer.published(&payload);
        }
        Ok(ms)
    }
}

fn measure_flush(url: &str, dim: usize, arms: usize, monitor: bool) -> Result<FlushRun> {
    let mut conn = connect(url)?;
    let _: u64 = redis::cmd("DEL").arg(FLUSH_KEY).query(&mut conn)?;
    let () = redis::cmd("SET").arg(STRING_KEY).arg("hello").query(&mut conn)?;
    let mut trainer =
        FlushTrainer { trainer: Trainer::new(dim, Learning::ridge(1.0)), offset: 0, rng: Rng::new(9), dim, encoded: Vec::new() };
    trainer.trainer.assign(&[0], &Payload::default());
    trainer.fold(arms, dim * 2)?;
    trainer.flush(usize::MAX)?;
    let _: u64 = redis::cmd("BANDIT.LOAD").arg(FLUSH_KEY).arg(trainer.encoded.concat()).query(&mut conn)?;
    let mut run = FlushRun::default();
    for phase in [Phase::Whole, Phase::InParts, Phase::InMulti] {
        // The next flush: every arm has seen one more event.
        trainer.fold(arms, 1)?;
        if phase == Phase::InParts {
            trainer.flush(parts::DEFAULT_PART_BYTES)?;
            run.parts = trainer.encoded.len();
            run.in_parts = timed_load(url, &mut conn, Window::Parts(&trainer.encoded), monitor)?;
            continue;
        }
        let ms = trainer.flush(usize::MAX)?;
        let whole = trainer.encoded.concat();
        if phase == Phase::InMulti {
            run.main_thread = timed_load(url, &mut conn, Window::InMulti(&whole), monitor)?;
        } else {
            (run.invert_encode_ms, run.bytes) = (ms, whole.len());
            run.background = timed_load(url, &mut conn, Window::Plain(&whole), monitor)?;
            let as_long = Duration::from_secs_f64(run.background.load_ms / 1e3);
            run.idle = timed_load(url, &mut conn, Window::Idle(as_long), monitor)?;
            run.plain_set = timed_load(url, &mut conn, Window::PlainSet(&whole), monitor)?;
            let _: u64 = redis::cmd("DEL").arg(BYTES_KEY).query(&mut conn)?;
        }
    }
    Ok(run)
}

/// The flushes [`measure_flush`] sends, one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Whole,
    InParts,
    InMulti,
}

/// How a [`timed_load`] window is filled.
#[derive(Debug, Clone, Copy)]
enum Window<'a> {
    /// No LOAD for as long as the plain LOAD took: the GET loop's own
    /// latency on this machine, the baseline of the same run.
    Idle(Duration),
    Plain(&'a [u8]),
    /// `BANDIT.LOAD … PART token index count`, one part after the other.
    Parts(&'a [Vec<u8>]),
    InMulti(&'a [u8]),
    /// The same bytes in a plain `SET`: what Redis itself costs for a
    /// command this large (receiving, storing, propagating it), with no
    /// module involved.
    PlainSet(&'a [u8]),
}

/// Sends one LOAD (inside MULTI/EXEC when `in_multi`) while a GET loop runs
/// on another connection.
fn timed_load(url: &str, conn: &mut redis::Connection, window: Window<'_>, monitor: bool) -> Result<LoadRun> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut getter = connect(url)?;
    let flag = stop.clone();
    let loop_thread = thread::spawn(move || -> Vec<(Instant, Duration)> {
        let mut samples = Vec::with_capacity(100_000);
        let command = get_command();
        while !flag.load(Ordering::Relaxed) {
            let start = Instant::now();
            if command.query::<redis::Value>(&mut getter).is_err() {
                break;
            }
            samples.push((start, start.elapsed()));
        }
        samples
    });
    thread::sleep(Duration::from_millis(100));
    if monitor {
        let _: u64 = redis::cmd("LATENCY").arg("RESET").query(conn)?;
    }
    let start = Instant::now();
    match window {
        Window::Idle(duration) => thread::sleep(duration),
        Window::Plain(payload) => {
            let _: u64 = redis::cmd("BANDIT.LOAD").arg(FLUSH_KEY).arg(payload).query(conn)?;
        }
        Window::Parts(parts) => {
            for (index, part) in parts.iter().enumerate() {
                let mut command = redis::cmd("BANDIT.LOAD");
                command.arg(FLUSH_KEY).arg(part.as_slice()).arg("PART").arg("bench").arg(index).arg(parts.len());
                let _: u64 = command.query(conn)?;
            }
        }
        Window::InMulti(payload) => {
            let _: (u64,) = redis::pipe().atomic().cmd("BANDIT.LOAD").arg(FLUSH_KEY).arg(payload).query(conn)?;
        }
        Window::PlainSet(payload) => {
            let () = redis::cmd("SET").arg(BYTES_KEY).arg(payload).query(conn)?;
        }
    }
    let end = Instant::now();
    let held_us = match window {
        Window::Idle(_) | Window::PlainSet(_) => 0.0,
        Window::Plain(_) | Window::Parts(_) | Window::InMulti(_) => info_number(conn, "bandit", "bandit_loads_apply_last_usec")?,
    };
    thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let samples = loop_thread.join().unwrap_or_default();
    let (server_max_ms, server_max_event) = if monitor { longest_server_event(conn)? } else { (f64::NAN, "n/a") };
    // Every GET that was in flight at some point while the LOAD was.
    let mut during: Vec<Duration> =
        samples.iter().filter(|(sent, took)| *sent <= end && *sent + *took >= start).map(|&(_, took)| took).collect();
    during.sort_unstable();
    Ok(LoadRun {
        load_ms: (end - start).as_secs_f64() * 1e3,
        gets: during.len(),
        get_p50_us: percentile(&during, 0.5),
        get_p99_us: percentile(&during, 0.99),
        get_max_us: during.last().map_or(0.0, |d| d.as_secs_f64() * 1e6),
        held_us,
        server_max_ms,
        server_max_event,
    })
}

/// The longest event the server's latency monitor recorded since the last
/// `LATENCY RESET`: the largest "max" of `LATENCY LATEST`'s rows
/// (event, time, latest ms, max ms), and its event's name.
fn longest_server_event(conn: &mut redis::Connection) -> Result<(f64, &'static str)> {
    // The events worth naming here; Redis has more (expire-cycle, fork…).
    const EVENTS: [&str; 9] = [
        "command",
        "fast-command",
        "aof-write",
        "aof-write-alone",
        "aof-write-active-child",
        "aof-fsync-always",
        "fork",
        "module-acquire-GIL",
        "bandit-load",
    ];
    // Rows of at least four fields (newer servers add more after them).
    let rows: Vec<Vec<redis::Value>> = redis::cmd("LATENCY").arg("LATEST").query(conn)?;
    Ok(rows.iter().fold((0.0, ""), |longest, row| {
        let (Some(event), Some(max_ms)) = (row.first(), row.get(3)) else { return longest };
        let event: String = redis::from_redis_value(event).unwrap_or_default();
        let max_ms = redis::from_redis_value::<i64>(max_ms).map_or(0.0, |ms| ms as f64);
        if max_ms > longest.0 {
            (max_ms, EVENTS.iter().find(|name| **name == event).copied().unwrap_or("other"))
        } else {
            longest
        }
    }))
}

/// A numeric field of an INFO section (0 when absent).
fn info_number(conn: &mut redis::Connection, section: &str, field: &str) -> Result<f64> {
    let info: String = redis::cmd("INFO").arg(section).query(conn)?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0))
}

/// The report, as printed by `bandit bench flush`.
#[must_use]
pub fn flush_report(dim: usize, arms: usize, single_thread_ms: f64, run: &FlushRun) -> String {
    let mut out = format!(
        "flush of {arms} changed arms, d = {dim}: invert + encode {:.1} ms on the sink's threads ({single_thread_ms:.1} ms building a payload, then encoding it, on one thread), {:.1} MB\n",
        run.invert_encode_ms,
        run.bytes as f64 / 1e6
    );
    out.push_str(&format!(
        "{:<24} {:>10} {:>8} {:>12} {:>12} {:>12} {:>14} {:>16}\n",
        "BANDIT.LOAD", "LOAD ms", "GETs", "GET p50 µs", "GET p99 µs", "GET max µs", "main thread µs", "server max ms"
    ));
    let parts_name = format!("background, {} parts", run.parts);
    let rows = [
        ("no LOAD (baseline)", &run.idle),
        ("same bytes, plain SET", &run.plain_set),
        ("background, one LOAD", &run.background),
        (&parts_name, &run.in_parts),
        ("main thread (in MULTI)", &run.main_thread),
    ];
    for (name, load) in rows {
        out.push_str(&format!(
            "{:<24} {:>10.1} {:>8} {:>12.0} {:>12.0} {:>12.0} {:>14.0} {:>16}\n",
            name,
            load.load_ms,
            load.gets,
            load.get_p50_us,
            load.get_p99_us,
            load.get_max_us,
            load.held_us,
            if load.server_max_ms.is_nan() { "n/a".to_owned() } else { format!("{:.0} {}", load.server_max_ms, load.server_max_event) }
        ));
    }
    let longest = |load: &LoadRun, base: &LoadRun| load.get_max_us / base.get_max_us.max(f64::MIN_POSITIVE);
    out.push_str(&format!(
        "ratio of the longest GET, in parts / no LOAD: {:.1}x; in parts / the same bytes in a SET: {:.1}x; one LOAD / no LOAD: {:.1}x; one LOAD / SET: {:.1}x\n",
        longest(&run.in_parts, &run.idle),
        longest(&run.in_parts, &run.plain_set),
        longest(&run.background, &run.idle),
        longest(&run.background, &run.plain_set)
    ));
    out.push_str(&format!(
        "ratio of the longest GET, main thread / background: {:.1}x\n",
        run.main_thread.get_max_us / run.background.get_max_us.max(f64::MIN_POSITIVE)
    ));
    out
}

/// What [`catalogue`] measures.
#[derive(Debug, Clone)]
pub struct CatalogueConfig {
    pub arms: usize,
    pub dim: usize,
    pub top: usize,
    /// Events folded into each arm of the trained model.
    pub events: usize,
    /// RANK requests per model.
    pub requests: usize,
    /// Also build and measure the untrained model.
    pub untrained: bool,
}

/// One model's figures in [`catalogue`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CatalogueModel {
    /// Server microseconds per RANK (INFO commandstats).
    pub server_us_per_call: f64,
    pub p50_us: f64,
    /// MEMORY USAGE of the key, per arm.
    pub bytes_per_arm: f64,
    /// Growth of the server's used_memory (INFO memory) while the model was
    /// built, per arm: what MEMORY USAGE should agree with.
    pub used_per_arm: f64,
    /// Seconds the chunked BANDIT.LOADs took.
    pub load_s: f64,
}

/// The trained and (optionally) untrained model of [`catalogue`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CatalogueResult {
    pub trained: CatalogueModel,
    pub untrained: Option<CatalogueModel>,
}

const CATALOGUE_TRAINED: &str = "bench:catalogue:trained";
const CATALOGUE_UNTRAINED: &str = "bench:catalogue:untrained";
/// Arms per BANDIT.LOAD while building a catalogue.
const CATALOGUE_CHUNK: usize = 2000;

/// Arms `first..first + count` of the trained catalogue: each arm has its own
/// base rate (popularity) and context preference, and `events` events with
/// contexts in [0, 1]^d.
fn catalogue_chunk(dim: usize, first: usize, count: usize, events: usize, trained: bool) -> Result<Payload> {
    let learning = Learning::ridge(1.0);
    let mut rng = Rng::new(1000 + first as u64);
    let mut work = Workspace::default();
    let mut arms = Vec::with_capacity(count);
    for k in first..first + count {
        let mut arm = learning.prior(dim);
        if trained {
            let base = 0.05 + 0.45 * rng.unit();
            let preference: Vec<f64> = (0..dim).map(|_| (rng.unit() - 0.5) * 0.4 / (dim as f64).sqrt()).collect();
            for _ in 0..events {
                let x: Vec<f64> = (0..dim).map(|_| rng.unit()).collect();
                let lift: f64 = x.iter().zip(&preference).map(|(a, b)| (a - 0.5) * b).sum();
                let reward = if rng.unit() < (base + lift).clamp(0.0, 1.0) { 1.0 } else { 0.0 };
                learning.fold(&mut arm, &x, reward);
            }
        }
        arms.push(arm.to_payload(&format!("p{k}"), &mut work, Some(0))?);
    }
    Ok(Payload { dim, arms, offsets: vec![], settings: None, base_offsets: vec![], version: None, fences: vec![] })
}

fn used_memory(conn: &mut redis::Connection) -> Result<f64> {
    info_number(conn, "memory", "used_memory")
}

/// Builds the catalogue `key` (deleting it first) in chunked LOADs; seconds,
/// and used_memory's growth per arm.
fn build_catalogue(conn: &mut redis::Connection, key: &str, config: &CatalogueConfig, trained: bool) -> Result<(f64, f64)> {
    let _: u64 = redis::cmd("DEL").arg(key).query(conn)?;
    let before = used_memory(conn)?;
    let mut seconds = 0.0;
    for first in (0..config.arms).step_by(CATALOGUE_CHUNK) {
        let chunk = catalogue_chunk(config.dim, first, CATALOGUE_CHUNK.min(config.arms - first), config.events, trained)?;
        let bytes = encode_binary(&chunk)?;
        let start = Instant::now();
        let _: u64 = redis::cmd("BANDIT.LOAD").arg(key).arg(bytes).query(conn)?;
        seconds += start.elapsed().as_secs_f64();
    }
    let used = (used_memory(conn)? - before) / config.arms.max(1) as f64;
    Ok((seconds, used))
}

fn measure_catalogue(conn: &mut redis::Connection, key: &str, config: &CatalogueConfig) -> Result<CatalogueModel> {
    let mut rng = Rng::new(77);
    let commands: Vec<redis::Cmd> = (0..64)
        .map(|_| {
            let mut command = rank_command(key, config.dim, config.top, &mut rng);
            command.arg("WITHSCORES");
            command
        })
        .collect();
    latency(conn, &commands, 50)?;
    let () = redis::cmd("CONFIG").arg("RESETSTAT").query(conn)?;
    let (p50_us, _) = latency(conn, &commands, config.requests)?;
    let server_us_per_call = server_us_per_call(conn, "bandit.rank")?;
    let bytes: u64 = redis::cmd("MEMORY").arg("USAGE").arg(key).query(conn)?;
    Ok(CatalogueModel { server_us_per_call, p50_us, bytes_per_arm: bytes as f64 / config.arms.max(1) as f64, ..CatalogueModel::default() })
}

/// Builds the catalogue models on `url`, ranks each `requests` times, and
/// deletes them at the end (also after a failure). The trained model is
/// deleted before the untrained one is built, so only one is in memory.
///
/// # Errors
/// Connection or command failures.
pub fn catalogue(url: &str, config: &CatalogueConfig) -> Result<CatalogueResult> {
    with_cleanup(url, &[CATALOGUE_TRAINED, CATALOGUE_UNTRAINED], || {
        let mut conn = connect(url)?;
        let mut result = CatalogueResult::default();
        let (load_s, used_per_arm) = build_catalogue(&mut conn, CATALOGUE_TRAINED, config, true)?;
        result.trained = CatalogueModel { load_s, used_per_arm, ..measure_catalogue(&mut conn, CATALOGUE_TRAINED, config)? };
        let _: u64 = redis::cmd("DEL").arg(CATALOGUE_TRAINED).query(&mut conn)?;
        if config.untrained {
            let (load_s, used_per_arm) = build_catalogue(&mut conn, CATALOGUE_UNTRAINED, config, false)?;
            result.untrained = Some(CatalogueModel { load_s, used_per_arm, ..measure_catalogue(&mut conn, CATALOGUE_UNTRAINED, config)? });
        }
        Ok(result)
    })
}

/// The report, as printed by `bandit bench catalogue`.
#[must_use]
pub fn catalogue_report(config: &CatalogueConfig, result: &CatalogueResult) -> String {
    let mut out = format!(
        "BANDIT.RANK CONTEXTBLOB … TOP {} WITHSCORES over {} arms, d = {}, {} requests per model on 1 connection\n",
        config.top, config.arms, config.dim, config.requests
    );
    out.push_str(&format!(
        "{:<10} {:>16} {:>10} {:>16} {:>18} {:>10}\n",
        "model", "server µs/call", "p50 µs", "MEMORY B/arm", "used_memory B/arm", "load s"
    ));
    let mut line = |name: &str, m: &CatalogueModel| {
        out.push_str(&format!(
            "{:<10} {:>16.1} {:>10.1} {:>16.0} {:>18.0} {:>10.1}\n",
            name, m.server_us_per_call, m.p50_us, m.bytes_per_arm, m.used_per_arm, m.load_s
        ));
    };
    line("trained", &result.trained);
    if let Some(untrained) = &result.untrained {
        line("untrained", untrained);
        out.push_str(&format!(
            "ratio untrained/trained server time: {:.1}x (untrained: nothing can be pruned, about a full scan)\n",
            untrained.server_us_per_call / result.trained.server_us_per_call.max(f64::MIN_POSITIVE)
        ));
    }
    out
}
