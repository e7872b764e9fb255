//! `bandit export-log` against a real broker (tansu): the decisions and
//! rewards topics, joined, are the log `bandit evaluate --decisions` reads.
//!
//! - The streams of the join's own tests (`bandit_tests::join::generate`:
//!   rewards on time, late, twice for one item, for items not shown, for
//!   decisions never made, and an undecodable record in each topic) over two
//!   partitions, plus a decision still inside its reward wait, are exported
//!   with non-default settings (wait 2 s, sum, default reward −0.25). The
//!   log must equal the independent reference join of `bandit_tests::join`
//!   (impressions `all`), decision by decision in partition and offset order,
//!   and the counts printed must be the reference's. Then `bandit evaluate`
//!   reads the exported log.
//! - A log from `bandit generate --format decisions`, published as its
//!   decisions and its clicks (the rewards), exports to the same bytes, so
//!   `bandit evaluate` gives the same numbers on both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use bandit_tests::join::{generate, produce_streams, reference, Rules};
use bandit_tests::kafka::{KafkaBroker, KeyedProducer};
use bandit_tests::process::output_within;
use bandit_tests::server::{built_artifact, TempDir};
use serde_json::{json, Value};

fn bandit_bin() -> PathBuf {
    built_artifact("BANDIT_CLI", "bandit", "cargo build --release -p bandit")
}

fn run(args: &[&str]) -> Output {
    let output = output_within(Command::new(bandit_bin()).args(args), Duration::from_secs(120));
    assert!(
        output.status.success(),
        "bandit {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn export(broker: &KafkaBroker, out: &Path, settings: &[&str]) -> String {
    let brokers = broker.bootstrap();
    let out = out.to_str().unwrap();
    let mut args = vec!["--brokers", brokers.as_str(), "--kafka-timeout", "20", "export-log", "--out", out];
    args.extend_from_slice(settings);
    String::from_utf8(run(&args).stderr).unwrap()
}

/// A log line as (event id, model, version, policy, context, shown as
/// (product, position, probability, reward), timestamp), read as plain JSON.
type Line = (String, String, u64, String, Vec<f64>, Vec<(String, u64, f64, f64)>, i64);

fn line(value: &Value) -> Line {
    let shown = value["shown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["product_id"].as_str().unwrap().to_owned(), s["position"].as_u64().unwrap(), s["probability"].as_f64().unwrap(), s["reward"].as_f64().unwrap()))
        .collect();
    (
        value["event_id"].as_str().unwrap().to_owned(),
        value["model"].as_str().unwrap().to_owned(),
        value["model_version"].as_u64().unwrap(),
        value["policy"].as_str().unwrap().to_owned(),
        value["context"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect(),
        shown,
        value["timestamp"].as_i64().unwrap(),
    )
}

#[test]
fn the_exported_log_is_the_reference_join_of_the_topics() {
    const WAIT: i64 = 2000;
    let broker = KafkaBroker::start();
    broker.create_topic("decisions", 2);
    broker.create_topic("rewards", 2);
    let mut streams = generate(240, 2, 3, WAIT, 17);
    // A decision an hour from now, last in partition 1: inside its wait, left out.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let future = json!({"event_id": "future", "model": "model:test", "model_version": 7, "policy": "egreedy", "context": [0.0, 0.0, 0.0],
        "shown": [{"product_id": "p1", "position": 0, "probability": 0.5}], "timestamp": now + 3_600_000});
    streams.records.push(("decisions".into(), 1, "future".into(), future.to_string().into_bytes()));
    produce_streams(&broker.bootstrap(), &streams);

    let dir = TempDir::new("export-log");
    let out = dir.path().join("log.jsonl");
    let summary = export(&broker, &out, &["--reward-wait-ms", &WAIT.to_string(), "--aggregation", "sum", "--default-reward", "-0.25"]);

    let rules = Rules { reward_wait_ms: WAIT, aggregation: "sum", default_reward: -0.25, impressions: "all" };
    let want = reference(&streams, rules);
    // The reference's examples, keyed by (partition, decision offset · 2¹⁶ + index),
    // grouped into decisions in partition and offset order.
    let mut expected: Vec<Line> = Vec::new();
    let mut last_key = None;
    for ((partition, seq), example) in &want.examples {
        let key = (*partition, seq >> 16);
        if last_key != Some(key) {
            last_key = Some(key);
            expected.push((example.event_id.clone(), "model:test".into(), 7, "egreedy".into(), example.context.clone(), Vec::new(), example.timestamp));
        }
        let item = (example.product_id.clone(), u64::from(example.position), example.probability, example.reward);
        expected.last_mut().unwrap().5.push(item);
    }
    let text = std::fs::read_to_string(&out).unwrap();
    let got: Vec<Line> = text.lines().map(|l| line(&serde_json::from_str(l).unwrap())).collect();
    assert_eq!(got.len(), expected.len(), "{summary}");
    for (got, want) in got.iter().zip(&expected) {
        assert_eq!(got, want);
    }
    // Rewards are 0 or more, so an item's sum differs from the default −0.25 exactly when it got one.
    let rewarded = expected.iter().filter(|d| d.5.iter().any(|s| s.3 != -0.25)).count();
    assert!(rewarded > 40 && rewarded < expected.len(), "{rewarded} of {} rewarded", expected.len());
    let unknown = want.dead_letters.iter().filter(|((topic, _, _), reason)| topic == "rewards" && **reason != "invalid JSON").count();
    assert!(want.late > 0 && unknown > 0);
    let counts = format!(
        "{} decisions exported ({} with a reward); left out: 1 still inside the reward wait, 1 rejected decisions; rewards not joined: {} late, {unknown} unknown, 1 unreadable",
        expected.len(),
        rewarded,
        want.late,
    );
    assert_eq!(summary.trim(), counts);

    // The log is what evaluate reads.
    let report = run(&["evaluate", "--decisions", out.to_str().unwrap(), "--policies", "ucb:alpha=0.5;egreedy:0.3;popularity", "--json"]);
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["decisions"].as_u64(), Some(expected.len() as u64));
    assert_eq!(report["candidates"].as_array().unwrap().len(), 3);
}

#[test]
fn a_generated_log_round_trips_through_the_topics() {
    let broker = KafkaBroker::start();
    broker.create_topic("decisions", 1);
    broker.create_topic("rewards", 1);
    let dir = TempDir::new("export-log");
    let generated = dir.path().join("generated.jsonl");
    run(&["generate", "--format", "decisions", "--events", "1200", "--seed", "3", "--policy", "softmax:0.1", "--out", generated.to_str().unwrap()]);
    let text = std::fs::read_to_string(&generated).unwrap();

    // Each decision as the shop logs it (without rewards), then its click
    // half a second later as a reward; the decisions are a second apart.
    let decisions = KeyedProducer::new(&broker.bootstrap(), "decisions");
    let rewards = KeyedProducer::new(&broker.bootstrap(), "rewards");
    let mut clicks = 0;
    for l in text.lines() {
        let mut value: Value = serde_json::from_str(l).unwrap();
        let id = value["event_id"].as_str().unwrap().to_owned();
        let timestamp = value["timestamp"].as_i64().unwrap();
        for shown in value["shown"].as_array_mut().unwrap() {
            let reward = shown.as_object_mut().unwrap().remove("reward").unwrap().as_f64().unwrap();
            if reward != 0.0 {
                clicks += 1;
                let event = json!({"event_id": id, "product_id": shown["product_id"], "reward": reward, "timestamp": timestamp + 500});
                rewards.send_to(0, &id, event.to_string().as_bytes());
            }
        }
        decisions.send_to(0, &id, value.to_string().as_bytes());
    }
    decisions.flush();
    rewards.flush();
    assert!(clicks > 100, "{clicks} clicks");

    let exported = dir.path().join("exported.jsonl");
    let summary = export(&broker, &exported, &["--reward-wait-ms", "1000"]);
    assert_eq!(std::fs::read_to_string(&exported).unwrap(), text, "{summary}");
    assert!(summary.starts_with(&format!("1200 decisions exported ({clicks} with a reward)")), "{summary}");

    let evaluate = |log: &Path| {
        let args = ["evaluate", "--decisions", log.to_str().unwrap(), "--policies", "ucb:alpha=0.3;egreedy:0.1;softmax:0.1;popularity", "--json"];
        String::from_utf8(run(&args).stdout).unwrap()
    };
    let from_topics = evaluate(&exported);
    assert_eq!(from_topics, evaluate(&generated));
    assert!(from_topics.contains("\"decisions\":1200"), "{from_topics}");
}
