//! The Rank/Reward contract from another language: `tests/python/shop.py`
//! (redis-py and confluent-kafka, written from the README only) ranks with
//! POLICY EGREEDY, EVENTID and WITHPROBS, logs its decisions and sends its
//! rewards, against a real redis-server, tansu, bandit-join and bandit-sink.
//! The model must hold exactly what an independent computation of the
//! contract says: decisions × rewards by event id, rewards summed, the
//! default reward for every shown item without one, only the items at or
//! above the lowest positive reward (cascade), folded by the textbook LinUCB
//! of `bandit_tests::reference`.
//!
//! Python: `$BANDIT_PYTHON`, or `target/pyvenv/bin/python` (scripts/test
//! makes it: `python3 -m venv target/pyvenv && target/pyvenv/bin/pip install
//! redis confluent-kafka`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bandit::models::{CreateOptions, Models};
use bandit_core::event::{FeedbackEvent, Source};
use bandit_core::join::{Decision, Reward};
use bandit_tests::join::{create_topics, JoinOptions, JoinProcess, Rules};
use bandit_tests::kafka::{read_topic, KafkaBroker};
use bandit_tests::reference::{close, payload_arms, DenseArm};
use bandit_tests::process::output_within;
use bandit_tests::server::{wait_until, workspace_root, RedisServer};
use bandit_tests::sink::{export_model, http_get, model_updates, SinkOptions, SinkProcess, ALPHA, LAMBDA};

const DIM: usize = 4;
/// Partitions of the decisions, rewards and join-state topics, as in scripts/demo.
const PARTITIONS: u32 = 4;
/// Not the join's defaults (earliest, 0): a setting lost on the way shows.
const DEFAULT_REWARD: f64 = -0.25;
const REWARD_WAIT_MS: i64 = 5000;

fn python() -> PathBuf {
    if let Ok(path) = std::env::var("BANDIT_PYTHON") {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace_root().join("target"));
    let venv = target.join("pyvenv/bin/python");
    assert!(
        venv.exists(),
        "no Python with redis-py and confluent-kafka: run scripts/test, or `python3 -m venv target/pyvenv && target/pyvenv/bin/pip install redis confluent-kafka`, or set BANDIT_PYTHON"
    );
    venv
}

/// The join's /metrics without comments and histogram buckets, for failure messages.
fn metrics_text(join: &JoinProcess) -> String {
    let body = http_get(join.metrics_port, "/metrics").map(|r| r.body).unwrap_or_default();
    body.lines().filter(|l| !l.starts_with('#') && !l.contains("bucket")).collect::<Vec<_>>().join("\n")
}

/// The contract's join, written from its definition: every decision's shown
/// items; an item's reward is the sum of its rewards, or the default when it
/// has none; with cascade, only items at or above the lowest-placed item
/// whose summed reward is positive (all when none is). Returns the
/// examples in decision order.
fn expected_examples(decisions: &[Decision], rewards: &[Reward]) -> Vec<FeedbackEvent> {
    let mut sums: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for reward in rewards {
        *sums.entry((reward.event_id.as_str(), reward.product_id.as_str())).or_insert(0.0) += reward.reward;
    }
    let mut examples = Vec::new();
    for decision in decisions {
        let reward_of = |product: &str| sums.get(&(decision.event_id.as_str(), product)).copied();
        let lowest_positive =
            decision.shown.iter().filter(|s| reward_of(&s.product_id).is_some_and(|r| r > 0.0)).map(|s| s.position).max();
        for shown in &decision.shown {
            if lowest_positive.is_none_or(|lowest| shown.position <= lowest) {
                let reward = reward_of(&shown.product_id).unwrap_or(DEFAULT_REWARD);
                examples.push(FeedbackEvent {
                    event_id: decision.event_id.clone(),
                    product_id: shown.product_id.clone(),
                    reward,
                    context_vector: decision.context.clone(),
                    ..FeedbackEvent::default()
                });
            }
        }
    }
    examples
}

#[test]
fn a_python_shop_learns_exactly_what_the_contract_says() {
    let broker = KafkaBroker::start();
    create_topics(&broker, PARTITIONS, 2);
    let redis = RedisServer::start();
    let model = "shop:py";
    Models::connect(&format!("redis://127.0.0.1:{}", redis.port))
        .unwrap()
        .create(model, DIM, &CreateOptions { alpha: Some(ALPHA), lambda: Some(LAMBDA), decay: None })
        .unwrap();
    let mut options = SinkOptions::new(&broker.bootstrap(), "feedback", redis.port, DIM);
    options.model = model.into();
    let sink = SinkProcess::start(&options);
    let rules = Rules { reward_wait_ms: REWARD_WAIT_MS, aggregation: "sum", default_reward: DEFAULT_REWARD, impressions: "cascade" };
    let join = JoinProcess::start(&JoinOptions { group: "python-join".into(), ..JoinOptions::new(&broker.bootstrap(), rules) });

    let events = 300;
    let output = output_within(
        Command::new(python())
            .arg(workspace_root().join("tests/python/shop.py"))
            .args(["--redis-port", &redis.port.to_string(), "--brokers", &broker.bootstrap(), "--model", model])
            .args(["--events", &events.to_string(), "--seed", "7", "--dim", &DIM.to_string()]),
        Duration::from_secs(180),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "shop.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let sent: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(sent["decisions"], events);

    // What the shop put on the topics, read back and parsed as the contract's types.
    let decision_records = read_topic(&broker.bootstrap(), "decisions", PARTITIONS as i32, Duration::from_secs(60));
    let decisions: Vec<Decision> = decision_records
        .iter()
        .map(|r| {
            let decision: Decision = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
            assert_eq!(r.key.as_deref(), Some(decision.event_id.as_bytes()), "keyed by event id");
            decision
        })
        .collect();
    let records = read_topic(&broker.bootstrap(), "rewards", PARTITIONS as i32, Duration::from_secs(60));
    let rewards: Vec<Reward> = records.iter().map(|r| serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap()).collect();
    assert_eq!(decisions.len(), events);
    assert_eq!(rewards.len() as u64, sent["rewards"].as_u64().unwrap() + 1);
    // Co-partitioned: a decision's rewards are on its partition number.
    let partition_of: BTreeMap<&str, i32> = decisions.iter().map(|d| d.event_id.as_str()).zip(decision_records.iter().map(|r| r.partition)).collect();
    for (record, reward) in records.iter().zip(&rewards) {
        if let Some(&partition) = partition_of.get(reward.event_id.as_str()) {
            assert_eq!(record.partition, partition, "{reward:?}");
        }
    }
    assert!(decisions.iter().all(|d| d.shown.iter().all(|s| s.probability > 0.0 && s.probability <= 1.0)));

    let examples = expected_examples(&decisions, &rewards);
    let mut reference: BTreeMap<String, DenseArm> = BTreeMap::new();
    for example in &examples {
        reference.entry(example.product_id.clone()).or_insert_with(|| DenseArm::prior(DIM, LAMBDA)).fold(&example.context_vector, example.reward);
    }
    let total = examples.len() as i64;
    // The join's output: every expected example, each (event, product)
    // once up to re-emissions (same source sequence number), nothing else.
    let mut emitted: BTreeMap<(String, String), (f64, Option<Source>)> = BTreeMap::new();
    let end = std::time::Instant::now() + Duration::from_secs(90);
    while join.metric("bandit_join_decisions_joined_total") != Some(events as f64) {
        assert!(std::time::Instant::now() < end, "the join did not close every decision:\n{}\n{}", metrics_text(&join), join.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    for record in read_topic(&broker.bootstrap(), "feedback", 2, Duration::from_secs(60)) {
        let event: FeedbackEvent = serde_json::from_slice(record.payload.as_deref().unwrap()).unwrap();
        let key = (event.event_id.clone(), event.product_id.clone());
        if let Some(previous) = emitted.insert(key, (event.reward, event.source)) {
            assert_eq!(previous, (event.reward, event.source), "{event:?} emitted twice, differently");
        }
    }
    let want: BTreeMap<(String, String), f64> = examples.iter().map(|e| ((e.event_id.clone(), e.product_id.clone()), e.reward)).collect();
    let got: BTreeMap<(String, String), f64> = emitted.iter().map(|(k, (r, _))| (k.clone(), *r)).collect();
    let missing: Vec<_> = want.iter().filter(|(k, _)| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.iter().filter(|(k, r)| want.get(*k) != Some(*r)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}\nextra or different {extra:?}");
    let mut conn = redis.connect();
    wait_until("the model to hold every joined example", Duration::from_secs(120), || model_updates(&mut conn, model) >= total);
    // A flush or two more: nothing beyond them arrives.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(model_updates(&mut conn, model), total, "join log:\n{}\nsink log:\n{}", join.log(), sink.log());
    assert_eq!(join.metric("bandit_join_decisions_joined_total"), Some(events as f64), "{}", join.log());
    wait_until("the unknown reward dead-lettered", Duration::from_secs(30), || join.metric("bandit_join_rewards_unknown_total") == Some(1.0));
    assert_eq!(join.metric("bandit_join_rewards_late_total"), Some(0.0));

    let got = payload_arms(&export_model(&mut conn, model));
    assert_eq!(got.keys().collect::<Vec<_>>(), reference.keys().collect::<Vec<_>>());
    for (id, want) in &reference {
        let arm = &got[id];
        assert_eq!(arm.n, want.n, "{id}: updates");
        assert!(close(arm.reward_sum, want.reward_sum, 1e-12), "{id}: reward_sum {} vs {}", arm.reward_sum, want.reward_sum);
        // A product's examples reach the trainer in the join's order, not
        // the decisions' order: sums agree to rounding.
        for (b, w) in arm.b.iter().zip(&want.b) {
            assert!(close(*b, *w, 1e-12), "{id}: b {:?} vs {:?}", arm.b, want.b);
        }
        for (row, want_row) in arm.a.iter().zip(&want.a) {
            for (a, w) in row.iter().zip(want_row) {
                assert!(close(*a, *w, 1e-12), "{id}: A {:?} vs {:?}", arm.a, want.a);
            }
        }
    }
}
