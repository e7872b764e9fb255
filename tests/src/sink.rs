//! The sink as a separate process (so tests can SIGKILL it), its metrics
//! and health endpoint, feedback events, and the check that the model in
//! Redis equals the textbook fold of [`crate::reference`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use bandit_core::event::FeedbackEvent;
use bandit_core::Limits;

use crate::fixtures::Rng;
use crate::kafka::high_watermarks;
use crate::reference::{close, fold_events, full};
use crate::resp::Connection;
use crate::service::ServiceProcess;

/// The ridge prior every sink test trains with: not 1, so a sink that
/// ignored λ (or swapped it with α) could not pass.
pub const LAMBDA: f64 = 2.5;
/// The exploration the sink creates models with: neither 1 nor λ.
pub const ALPHA: f64 = 0.3;

/// The bandit-sink binary.
pub fn sink_path() -> PathBuf {
    crate::server::built_artifact("BANDIT_SINK_BIN", "bandit-sink", "cargo build --release -p bandit-sink")
}

/// A command that runs the sink. The harness's own `BANDIT_SINK_BIN` is
/// removed from its environment: the sink refuses unknown `BANDIT_SINK_*`
/// variables.
pub fn sink_command() -> Command {
    let mut command = Command::new(sink_path());
    command.env_remove("BANDIT_SINK_BIN");
    command
}

/// Settings for one sink process.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub redis_port: u16,
    pub model: String,
    pub dim: usize,
    pub lambda: f64,
    pub alpha: f64,
    pub flush_interval_ms: u64,
    pub extra: Vec<String>,
}

impl SinkOptions {
    pub fn new(brokers: &str, topic: &str, redis_port: u16, dim: usize) -> Self {
        Self {
            brokers: brokers.to_owned(),
            topic: topic.to_owned(),
            group: format!("sink-{topic}"),
            redis_port,
            model: "model:test".into(),
            dim,
            lambda: LAMBDA,
            alpha: ALPHA,
            flush_interval_ms: 200,
            extra: Vec::new(),
        }
    }
}

/// A running bandit-sink (see [`ServiceProcess`]).
#[derive(Debug)]
pub struct SinkProcess(ServiceProcess);

impl SinkProcess {
    pub fn start(options: &SinkOptions) -> Self {
        Self::start_with_redis_url(options, &format!("redis://127.0.0.1:{}", options.redis_port))
    }

    /// As [`SinkProcess::start`], with a Redis URL of the test's own
    /// (credentials, say).
    pub fn start_with_redis_url(options: &SinkOptions, redis_url: &str) -> Self {
        let mut command = sink_command();
        command
            .args(["--brokers", &options.brokers, "--topic", &options.topic, "--group", &options.group])
            .args(["--redis", redis_url, "--model", &options.model])
            .args(["--dim", &options.dim.to_string(), "--flush-interval-ms", &options.flush_interval_ms.to_string()])
            .args(["--lambda", &options.lambda.to_string(), "--alpha", &options.alpha.to_string()]);
        Self(ServiceProcess::start(command, "sink", &options.extra))
    }
}

impl std::ops::Deref for SinkProcess {
    type Target = ServiceProcess;
    fn deref(&self) -> &ServiceProcess {
        &self.0
    }
}

impl std::ops::DerefMut for SinkProcess {
    fn deref_mut(&mut self) -> &mut ServiceProcess {
        &mut self.0
    }
}

/// An HTTP response: status code and body.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// A plain HTTP GET on loopback; None when nothing answers (a crashed
/// sink), so that is never mistaken for a 503.
pub fn http_get(port: u16, path: &str) -> Option<HttpResponse> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some(HttpResponse { status, body: body.to_owned() })
}

/// `count` events over `products` products, deterministic for a seed.
pub fn feedback_events(count: usize, products: usize, dim: usize, seed: u64) -> Vec<FeedbackEvent> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| {
            let product = rng.next_u64() as usize % products;
            let context_vector: Vec<f64> = (0..dim).map(|_| (rng.unit() * 1000.0).round() / 1000.0).collect();
            let reward = if rng.unit() < 0.2 + 0.6 * context_vector.first().copied().unwrap_or(0.0) * (product % 2) as f64 { 1.0 } else { 0.0 };
            FeedbackEvent {
                event_id: format!("e{seed}-{i}"),
                product_id: format!("p{product}"),
                reward,
                context_vector,
                timestamp: 1_767_225_600_000 + i as i64,
                ..Default::default()
            }
        })
        .collect()
}

/// Produces events keyed by product id.
pub fn produce(producer: &crate::kafka::KeyedProducer, events: &[FeedbackEvent]) {
    for event in events {
        let payload = serde_json::to_vec(event).unwrap_or_default();
        producer.send(&event.product_id, &payload);
    }
    producer.flush();
}

/// Total events folded into the model (Σn), or 0 while it is missing.
pub fn model_updates(conn: &mut Connection, key: &str) -> i64 {
    match conn.call(&["BANDIT.STATS", key]) {
        Ok(reply) if !reply.is_error() => reply.field("updates").integer(),
        _ => 0,
    }
}

/// The model's offset (next record) for every partition it holds one for.
pub fn model_offsets(conn: &mut Connection, key: &str) -> BTreeMap<i32, i64> {
    match conn.call(&["BANDIT.STATS", key]) {
        Ok(reply) if !reply.is_error() => reply
            .field("offsets")
            .pairs()
            .iter()
            .filter_map(|(partition, offset)| Some((partition.parse().ok()?, offset.integer())))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The model as exported (binary), decoded.
pub fn export_model(conn: &mut Connection, key: &str) -> bandit_core::Payload {
    let export = conn.call(&["BANDIT.EXPORT", key]).unwrap_or_else(|e| panic!("export: {e}")).bytes();
    let limits = Limits { max_payload_bytes: usize::MAX, ..Limits::default() };
    bandit_core::codec::decode(&export, &limits).unwrap_or_else(|e| panic!("export decode: {e}"))
}

/// Asserts that the model holds exactly the textbook fold of `events`
/// ([`crate::reference`], no code shared with the sink) with prior λ: the
/// same arms; n and reward_sum exactly; A and b to the bit (a product's
/// events are folded in partition order, as the reference does); θ and A⁻¹,
/// from another algorithm, within 1e-9 relative.
pub fn assert_model_equals_fold(conn: &mut Connection, key: &str, events: &[FeedbackEvent], dim: usize, lambda: f64) {
    let payload = export_model(conn, key);
    let reference = fold_events(events, dim, lambda);
    let model: BTreeMap<&str, _> = payload.arms.iter().map(|arm| (arm.id.as_str(), arm)).collect();
    let expected_ids: Vec<&str> = reference.keys().map(String::as_str).collect();
    let got_ids: Vec<&str> = model.keys().copied().collect();
    assert_eq!(got_ids, expected_ids, "arms in the model");
    for (id, want) in &reference {
        let arm = model[id.as_str()];
        assert_eq!(arm.n, want.n, "{id}: n (events folded exactly once)");
        assert_eq!(arm.reward_sum, want.reward_sum, "{id}: reward_sum");
        assert_eq!(arm.b, want.b, "{id}: b");
        assert_eq!(arm.a.as_ref(), Some(&want.a_upper()), "{id}: A (packed upper triangle)");
        let a_inv = full(dim, &arm.a_inv);
        for (got_row, want_row) in a_inv.iter().zip(want.a_inv()) {
            for (got, want) in got_row.iter().zip(want_row) {
                assert!(close(*got, want, 1e-9), "{id}: A⁻¹ {got} vs {want}");
            }
        }
        let theta: Vec<f64> = a_inv.iter().map(|row| row.iter().zip(&arm.b).map(|(a, b)| a * b).sum()).collect();
        for (got, want) in theta.iter().zip(want.theta()) {
            assert!(close(*got, want, 1e-9), "{id}: θ {got} vs {want}");
        }
    }
}

/// Waits until the model's offsets reach the end of every partition of the
/// topic, i.e. every record was handled and published, then asserts that
/// the model counted exactly `expected` events: an over-count would be in
/// the very LOAD that reached the end. No settling sleep.
pub fn wait_for_model_at_end(
    conn: &mut Connection,
    key: &str,
    bootstrap: &str,
    topic: &str,
    expected: i64,
    deadline: Duration,
    context: &dyn Fn() -> String,
) {
    let end = high_watermarks(bootstrap, topic);
    let end_offsets: BTreeMap<i32, i64> = end.iter().copied().filter(|&(_, high)| high > 0).collect();
    let limit = Instant::now() + deadline;
    loop {
        let offsets = model_offsets(conn, key);
        let done = end_offsets.iter().all(|(partition, high)| offsets.get(partition) == Some(high));
        if done {
            break;
        }
        assert!(
            Instant::now() < limit,
            "the model's offsets {offsets:?} did not reach the topic's end {end_offsets:?} within {deadline:?} ({} of {expected} events)\n{}",
            model_updates(conn, key),
            context()
        );
        sleep(Duration::from_millis(50));
    }
    assert_eq!(model_updates(conn, key), expected, "events in the model once it is at the topic's end\n{}", context());
}

/// Waits until the model holds at least `expected` events, then asserts it
/// holds exactly that many. Prefer [`wait_for_model_at_end`], which knows
/// when the sink is done and so also catches a late over-count.
pub fn wait_for_updates(conn: &mut Connection, key: &str, expected: i64, deadline: Duration, context: &dyn Fn() -> String) {
    let end = Instant::now() + deadline;
    let mut seen = 0;
    while Instant::now() < end {
        seen = model_updates(conn, key);
        if seen >= expected {
            break;
        }
        sleep(Duration::from_millis(50));
    }
    assert_eq!(seen, expected, "model has {seen} of {expected} events after {deadline:?}\n{}", context());
}
