//! The sink as a separate process (so tests can SIGKILL it), its metrics
//! endpoint, feedback events, and the independent reference fold that the
//! model in Redis must equal.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use bandit_core::cholesky::Workspace;
use bandit_core::event::FeedbackEvent;
use bandit_core::fold::ArmAccumulator;
use bandit_core::Limits;

use crate::fixtures::Rng;
use crate::resp::Connection;
use crate::server::{free_port, TempDir};

/// The bandit-sink binary.
pub fn sink_path() -> PathBuf {
    crate::server::built_artifact("BANDIT_SINK_BIN", "bandit-sink", "cargo build --release -p bandit-sink")
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
            flush_interval_ms: 200,
            extra: Vec::new(),
        }
    }
}

/// A running bandit-sink; SIGKILLed on drop if still running.
#[derive(Debug)]
pub struct SinkProcess {
    child: Option<Child>,
    pub metrics_port: u16,
    dir: TempDir,
}

impl SinkProcess {
    pub fn start(options: &SinkOptions) -> Self {
        let dir = TempDir::new("sink");
        let metrics_port = free_port();
        let log = std::fs::File::create(dir.path().join("sink.log")).unwrap_or_else(|e| panic!("sink log: {e}"));
        let child = Command::new(sink_path())
            .args(["--brokers", &options.brokers, "--topic", &options.topic, "--group", &options.group])
            .args(["--redis", &format!("redis://127.0.0.1:{}", options.redis_port), "--model", &options.model])
            .args(["--dim", &options.dim.to_string(), "--flush-interval-ms", &options.flush_interval_ms.to_string()])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            // Short group timeouts so rebalances take seconds, not minutes.
            .args(["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500", "-X", "max.poll.interval.ms=20000"])
            .args(["-X", "fetch.wait.max.ms=50", "-X", "topic.metadata.refresh.interval.ms=1000"])
            .args(&options.extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start bandit-sink: {e}"));
        Self { child: Some(child), metrics_port, dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sink.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no flush, no commit.
    pub fn kill(&mut self) {
        crate::server::kill_child(&mut self.child);
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let pid = self.pid()?;
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        self.wait_exit(deadline)
    }

    /// Waits for the process to end by itself.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Some(status);
                }
            } else {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// One value from /metrics (the first sample of that name), if reachable
    /// (a few tries, so a busy machine's hiccup is not a missing metric).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = (0..5).find_map(|attempt| {
            if attempt > 0 {
                sleep(Duration::from_millis(100));
            }
            http_get(self.metrics_port, "/metrics")
        })?;
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find(|line| line.split([' ', '{']).next() == Some(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP GET on loopback; the body, or None.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
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

/// The fold of `events` in order, independently of the sink.
pub fn reference_fold(events: &[FeedbackEvent], dim: usize, lambda: f64) -> BTreeMap<String, ArmAccumulator> {
    let mut arms: BTreeMap<String, ArmAccumulator> = BTreeMap::new();
    for event in events {
        arms.entry(event.product_id.clone())
            .or_insert_with(|| ArmAccumulator::new(dim, lambda))
            .update(&event.context_vector, event.reward);
    }
    arms
}

/// Total events folded into the model (Σn), or 0 while it is missing.
pub fn model_updates(conn: &mut Connection, key: &str) -> i64 {
    match conn.call(&["BANDIT.STATS", key]) {
        Ok(reply) if !reply.is_error() => reply.field("updates").integer(),
        _ => 0,
    }
}

/// Asserts that the model holds exactly the reference fold: the same arms,
/// n, reward_sum, A and b to the bit (events of one product are folded in
/// partition order, as the reference does), and θ within 1e-9.
pub fn assert_model_equals_fold(conn: &mut Connection, key: &str, reference: &BTreeMap<String, ArmAccumulator>) {
    let export = conn.call(&["BANDIT.EXPORT", key]).unwrap_or_else(|e| panic!("export: {e}")).bytes();
    let limits = Limits { max_payload_bytes: usize::MAX, ..Limits::default() };
    let payload = bandit_core::codec::decode(&export, &limits).unwrap_or_else(|e| panic!("export decode: {e}"));
    let model: BTreeMap<&str, _> = payload.arms.iter().map(|arm| (arm.id.as_str(), arm)).collect();
    let expected_ids: Vec<&str> = reference.keys().map(String::as_str).collect();
    let got_ids: Vec<&str> = model.keys().copied().collect();
    assert_eq!(got_ids, expected_ids, "arms in the model");
    let mut work = Workspace::default();
    for (id, accumulator) in reference {
        let arm = model[id.as_str()];
        assert_eq!(arm.n, accumulator.n, "{id}: n (events folded exactly once)");
        assert_eq!(arm.reward_sum, accumulator.reward_sum, "{id}: reward_sum");
        assert_eq!(arm.b, accumulator.b, "{id}: b");
        assert_eq!(arm.a.as_ref(), Some(&accumulator.a), "{id}: A");
        let want = accumulator.to_payload(id, &mut work, None).unwrap_or_else(|e| panic!("{e}"));
        let theta = |a_inv: &[f64], b: &[f64]| {
            let mut out = vec![0.0; b.len()];
            bandit_core::packed::sym_mul_vec(b.len(), a_inv, b, &mut out);
            out
        };
        for (got, want) in theta(&arm.a_inv, &arm.b).iter().zip(theta(&want.a_inv, &want.b)) {
            assert!((got - want).abs() <= 1e-9, "{id}: theta {got} vs {want}");
        }
    }
}

/// Waits until the model holds `expected` events, then a little longer, and
/// checks that no more arrive (an over-count would show up here).
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
    assert!(seen >= expected, "model has {seen} of {expected} events after {deadline:?}\n{}", context());
    sleep(Duration::from_millis(700));
    let settled = model_updates(conn, key);
    assert_eq!(settled, expected, "model counted events more than once\n{}", context());
}
