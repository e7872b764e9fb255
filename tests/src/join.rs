//! The joiner (`bandit-join`) as a separate process (so tests can SIGKILL
//! it), a generator of decisions and rewards written as the JSON contract
//! says (not with core's types), and an independent computation of their
//! join: the window, the running maximum, the aggregation, the default
//! reward and the impressions, from the documented rules, sharing no code
//! with `bandit_core::join`.
//!
//! Values are multiples of 1/8 (contexts, rewards, probabilities) so sums
//! are exact in any order: the model's A and b then equal the reference
//! fold to the bit whichever order the trainer met the examples in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use bandit_core::event::FeedbackEvent;
use serde_json::json;

use crate::fixtures::Rng;
use crate::kafka::{read_topic, KafkaBroker, KeyedProducer};
use crate::service::ServiceProcess;

/// 2026-01-01T00:00:00Z: every event is in the past, so the clock closes
/// what the streams leave open once both are read to their end.
pub const EPOCH_MS: i64 = 1_767_225_600_000;

/// The bandit-join binary.
pub fn join_path() -> PathBuf {
    crate::server::built_artifact("BANDIT_JOIN_BIN", "bandit-join", "cargo build --release -p bandit-sink")
}

/// A command that runs the joiner, without the harness's own variable (the
/// joiner refuses unknown `BANDIT_JOIN_*` variables).
pub fn join_command() -> Command {
    let mut command = Command::new(join_path());
    command.env_remove("BANDIT_JOIN_BIN");
    command
}

/// The join's settings as the test states them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub reward_wait_ms: i64,
    /// `earliest`, `sum` or `max`.
    pub aggregation: &'static str,
    pub default_reward: f64,
    /// `all` or `cascade`.
    pub impressions: &'static str,
}

/// Settings for one joiner process.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    pub brokers: String,
    pub group: String,
    pub rules: Rules,
    pub commit_interval_ms: u64,
    pub extra: Vec<String>,
}

impl JoinOptions {
    pub fn new(brokers: &str, rules: Rules) -> Self {
        // One record per batch: tansu 0.6 returns nothing for a fetch that
        // starts inside a batch, and the trainer resumes anywhere in the
        // feedback topic (a benchmark clears this).
        let extra = vec!["-X".to_owned(), "batch.num.messages=1".to_owned()];
        Self { brokers: brokers.to_owned(), group: "join".into(), rules, commit_interval_ms: 200, extra }
    }
}

/// The topics a join test uses: decisions and rewards with `partitions`
/// partitions, the state topic as many, `feedback` with
/// `feedback_partitions`, and the dead letters.
pub fn create_topics(broker: &KafkaBroker, partitions: u32, feedback_partitions: u32) {
    broker.create_topic("decisions", partitions);
    broker.create_topic("rewards", partitions);
    broker.create_topic("join-state", partitions);
    broker.create_topic("feedback", feedback_partitions);
    broker.create_topic("join-dlq", 1);
}

/// A running bandit-join (see [`ServiceProcess`]).
#[derive(Debug)]
pub struct JoinProcess(ServiceProcess);

impl JoinProcess {
    pub fn start(options: &JoinOptions) -> Self {
        let rules = options.rules;
        let mut command = join_command();
        command
            .args(["--brokers", &options.brokers, "--group", &options.group])
            .args(["--reward-wait-ms", &rules.reward_wait_ms.to_string(), "--aggregation", rules.aggregation])
            .args(["--default-reward", &rules.default_reward.to_string(), "--impressions", rules.impressions])
            .args(["--commit-interval-ms", &options.commit_interval_ms.to_string()]);
        Self(ServiceProcess::start(command, "join", &options.extra))
    }
}

impl std::ops::Deref for JoinProcess {
    type Target = ServiceProcess;
    fn deref(&self) -> &ServiceProcess {
        &self.0
    }
}

impl std::ops::DerefMut for JoinProcess {
    fn deref_mut(&mut self) -> &mut ServiceProcess {
        &mut self.0
    }
}

/// A decision as the test wrote it, and where it landed.
#[derive(Debug, Clone, PartialEq)]
pub struct TestDecision {
    pub event_id: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub context: Vec<f64>,
    /// (product, position, probability), in the order of `shown`.
    pub shown: Vec<(String, u32, f64)>,
}

/// A reward as the test wrote it, and where it landed.
#[derive(Debug, Clone, PartialEq)]
pub struct TestReward {
    pub event_id: String,
    pub product_id: String,
    pub reward: f64,
    pub timestamp: i64,
    pub partition: i32,
    pub offset: i64,
}

/// A record to produce: (topic, partition, key, payload).
pub type Record = (String, i32, String, Vec<u8>);

/// What a generated stream holds, per partition in offset order.
#[derive(Debug, Clone, Default)]
pub struct Streams {
    pub partitions: i32,
    pub decisions: Vec<TestDecision>,
    pub rewards: Vec<TestReward>,
    /// (topic, partition, offset) of records that are not JSON events.
    pub garbage: Vec<(String, i32, i64)>,
    /// The records to produce: (topic, partition, key, payload), in order.
    pub records: Vec<Record>,
}

/// A multiple of 1/8 in [0, 1].
fn eighth(rng: &mut Rng) -> f64 {
    (rng.next_u64() % 9) as f64 / 8.0
}

/// `count` decisions over `partitions` partition pairs and their rewards:
/// some on time, some late (after the wait, or behind a later reward in
/// their partition), some twice for one item, some for event ids never
/// decided or items not shown, and one undecodable record in each topic.
/// Decisions are in timestamp order per partition; rewards are in
/// timestamp order give or take 15% of the wait, as a real stream is.
pub fn generate(count: usize, partitions: i32, dim: usize, wait: i64, seed: u64) -> Streams {
    generate_from(EPOCH_MS, count, partitions, dim, wait, seed)
}

/// [`generate`] with decisions from `epoch_ms` on. With an epoch in the
/// future the clock never closes a decision, so the output is a function of
/// the streams alone however the joiner was interrupted; then
/// [`close_with_rewards`] ends the streams.
pub fn generate_from(epoch_ms: i64, count: usize, partitions: i32, dim: usize, wait: i64, seed: u64) -> Streams {
    let mut rng = Rng::new(seed);
    let mut streams = Streams { partitions, ..Streams::default() };
    let step = wait / 6;
    let mut decisions_of: BTreeMap<i32, Vec<TestDecision>> = BTreeMap::new();
    let mut rewards_of: BTreeMap<i32, Vec<(i64, TestReward)>> = BTreeMap::new();
    for i in 0..count {
        let partition = (rng.next_u64() % partitions as u64) as i32;
        let list = decisions_of.entry(partition).or_default();
        let timestamp = epoch_ms + list.len() as i64 * step + (rng.next_u64() % 1000) as i64;
        let shown_count = 1 + (rng.next_u64() % 4) as usize;
        let mut products: Vec<String> = Vec::new();
        while products.len() < shown_count {
            let product = format!("p{}", rng.next_u64() % 12);
            if !products.contains(&product) {
                products.push(product);
            }
        }
        let shown: Vec<(String, u32, f64)> =
            products.into_iter().enumerate().map(|(position, product)| (product, position as u32, (1 + rng.next_u64() % 8) as f64 / 8.0)).collect();
        let decision = TestDecision {
            event_id: format!("e{seed}-{i}"),
            partition,
            offset: 0,
            timestamp,
            context: (0..dim).map(|_| eighth(&mut rng)).collect(),
            shown: shown.clone(),
        };
        let mut reward = |product: &str, delay: i64, rng: &mut Rng| {
            let value = [0.0, 0.5, 1.0, 2.0, 0.25][(rng.next_u64() % 5) as usize];
            let jitter = (rng.next_u64() % (wait as u64 * 15 / 100)) as i64;
            let timestamp = decision.timestamp + delay;
            let reward = TestReward { event_id: decision.event_id.clone(), product_id: product.to_owned(), reward: value, timestamp, partition, offset: 0 };
            rewards_of.entry(partition).or_default().push((timestamp + jitter, reward));
        };
        for (product, _, _) in &shown {
            if rng.unit() < 0.4 {
                let delay = (rng.next_u64() % (wait as u64 * 14 / 10)) as i64;
                reward(product, delay, &mut rng);
                if rng.unit() < 0.3 {
                    let delay = (rng.next_u64() % (wait as u64 * 12 / 10)) as i64;
                    reward(product, delay, &mut rng);
                }
            }
        }
        if rng.unit() < 0.05 {
            // An item the decision did not show, soon after it.
            reward("not-shown", (rng.next_u64() % (wait as u64 / 10)) as i64, &mut rng);
        }
        if rng.unit() < 0.05 {
            // An event id never decided.
            let timestamp = decision.timestamp + (rng.next_u64() % (wait as u64 / 2)) as i64;
            let ghost = TestReward { event_id: format!("ghost-{seed}-{i}"), product_id: "p1".into(), reward: 1.0, timestamp, partition, offset: 0 };
            rewards_of.entry(partition).or_default().push((timestamp, ghost));
        }
        list.push(decision);
    }
    for partition in 0..partitions {
        let mut decisions = decisions_of.remove(&partition).unwrap_or_default();
        let mut offset = 0;
        for (index, decision) in decisions.iter_mut().enumerate() {
            if partition == 0 && index == 3 {
                streams.garbage.push(("decisions".into(), 0, offset));
                streams.records.push(("decisions".into(), 0, "garbage".into(), b"{\"event_id\": ".to_vec()));
                offset += 1;
            }
            decision.offset = offset;
            offset += 1;
            let payload = json!({
                "event_id": decision.event_id,
                "model": "model:test",
                "model_version": 7,
                "policy": "egreedy",
                "context": decision.context,
                "shown": decision.shown.iter().map(|(product, position, probability)| json!({"product_id": product, "position": position, "probability": probability})).collect::<Vec<_>>(),
                "timestamp": decision.timestamp,
            });
            streams.records.push(("decisions".into(), partition, decision.event_id.clone(), payload.to_string().into_bytes()));
        }
        streams.decisions.extend(decisions);
        let mut rewards = rewards_of.remove(&partition).unwrap_or_default();
        rewards.sort_by_key(|(order, _)| *order);
        let mut offset = 0;
        for (index, (_, mut reward)) in rewards.into_iter().enumerate() {
            if partition == 0 && index == 5 {
                streams.garbage.push(("rewards".into(), 0, offset));
                streams.records.push(("rewards".into(), 0, "garbage".into(), b"not json".to_vec()));
                offset += 1;
            }
            reward.offset = offset;
            offset += 1;
            let payload = json!({"event_id": reward.event_id, "product_id": reward.product_id, "reward": reward.reward, "timestamp": reward.timestamp});
            streams.records.push(("rewards".into(), partition, reward.event_id.clone(), payload.to_string().into_bytes()));
            streams.rewards.push(reward);
        }
    }
    interleave(&mut streams.records);
    streams
}

/// Orders the records so that every stretch of them carries about the same
/// share of every (topic, partition) stream, each stream kept in its order:
/// a wave of them then feeds every partition.
fn interleave(records: &mut Vec<Record>) {
    let mut lengths: BTreeMap<(String, i32), usize> = BTreeMap::new();
    for (topic, partition, _, _) in records.iter() {
        *lengths.entry((topic.clone(), *partition)).or_default() += 1;
    }
    let mut seen: BTreeMap<(String, i32), usize> = BTreeMap::new();
    let mut keyed: Vec<(f64, usize, Record)> = records
        .drain(..)
        .enumerate()
        .map(|(i, record)| {
            let stream = (record.0.clone(), record.1);
            let index = seen.entry(stream.clone()).or_default();
            let share = *index as f64 / lengths.get(&stream).copied().unwrap_or(1) as f64;
            *index += 1;
            (share, i, record)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    records.extend(keyed.into_iter().map(|(_, _, record)| record));
}

/// Appends to each rewards partition a reward for no decision, timestamped
/// past every deadline: the rewards stream then closes every decision
/// without the clock. It is never dead-lettered (its own wait never ends
/// before the clock reaches it) and the reference ignores it but for the
/// running maximum.
pub fn close_with_rewards(streams: &mut Streams, wait: i64) {
    let last = streams.rewards.iter().map(|r| r.timestamp).chain(streams.decisions.iter().map(|d| d.timestamp)).max().unwrap_or(EPOCH_MS);
    for partition in 0..streams.partitions {
        let offset = streams.records.iter().filter(|(topic, p, _, _)| topic == "rewards" && *p == partition).count() as i64;
        let reward = TestReward { event_id: format!("closing-{partition}"), product_id: "p0".into(), reward: 1.0, timestamp: last + 3 * wait, partition, offset };
        let payload = json!({"event_id": reward.event_id, "product_id": reward.product_id, "reward": reward.reward, "timestamp": reward.timestamp});
        streams.records.push(("rewards".into(), partition, reward.event_id.clone(), payload.to_string().into_bytes()));
        streams.rewards.push(reward);
    }
}

/// Produces the records to their partitions, one record per batch, in order.
pub fn produce_streams(bootstrap: &str, streams: &Streams) {
    produce_records(bootstrap, &streams.records);
}

/// Produces some of the records (a wave), in order; a fresh producer per
/// wave, so none outlives a broker restart.
pub fn produce_records(bootstrap: &str, records: &[Record]) {
    let decisions = KeyedProducer::new(bootstrap, "decisions");
    let rewards = KeyedProducer::new(bootstrap, "rewards");
    for (topic, partition, key, payload) in records {
        let producer = if topic == "decisions" { &decisions } else { &rewards };
        producer.send_to(*partition, key, payload);
    }
    decisions.flush();
    rewards.flush();
}

/// An example as the test expects it (the feedback event's fields).
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub event_id: String,
    pub product_id: String,
    pub reward: f64,
    pub context: Vec<f64>,
    pub position: u32,
    pub probability: f64,
    pub timestamp: i64,
}

/// The join computed from the documented rules.
#[derive(Debug, Clone, Default)]
pub struct Reference {
    /// Keyed by (decisions partition, seq = decision offset · 2¹⁶ + index in `shown`).
    pub examples: BTreeMap<(i32, u64), Expected>,
    /// Rewards after their window.
    pub late: usize,
    /// (topic, partition, offset) of each of them.
    pub late_rewards: BTreeSet<(String, i32, i64)>,
    /// (topic, partition, offset) of every record that must be dead-lettered,
    /// with a word of the reason it must give.
    pub dead_letters: BTreeMap<(String, i32, i64), &'static str>,
}

/// The join of `streams` under `rules`:
/// - a decision's deadline is its timestamp plus the wait;
/// - a reward counts when it names a decided event and a shown item, its
///   timestamp is at most the deadline, and so is every earlier reward's
///   timestamp in its partition; a reward for an item not shown, or for no
///   decision, is dead-lettered; one past the window is late;
/// - the counted rewards of an item aggregate (earliest by timestamp then
///   offset, sum, max); an item with none gets the default reward;
/// - cascade keeps the items at or above the lowest one whose aggregate is
///   positive (all when none is).
pub fn reference(streams: &Streams, rules: Rules) -> Reference {
    let mut out = Reference::default();
    for key in &streams.garbage {
        out.dead_letters.insert(key.clone(), "invalid JSON");
    }
    let decided: BTreeMap<&str, &TestDecision> = streams.decisions.iter().map(|d| (d.event_id.as_str(), d)).collect();
    // (event, product) → counted rewards in offset order.
    let mut counted: BTreeMap<(&str, &str), Vec<&TestReward>> = BTreeMap::new();
    let mut running: BTreeMap<i32, i64> = BTreeMap::new();
    let mut rewards: Vec<&TestReward> = streams.rewards.iter().collect();
    rewards.sort_by_key(|r| (r.partition, r.offset));
    for reward in rewards {
        let before = running.get(&reward.partition).copied().unwrap_or(i64::MIN);
        running.insert(reward.partition, before.max(reward.timestamp));
        let key = ("rewards".to_owned(), reward.partition, reward.offset);
        let Some(decision) = decided.get(reward.event_id.as_str()) else {
            if !reward.event_id.starts_with("closing-") {
                out.dead_letters.insert(key, "no decision");
            }
            continue;
        };
        if !decision.shown.iter().any(|(product, _, _)| *product == reward.product_id) {
            out.dead_letters.insert(key, "did not show");
            continue;
        }
        let deadline = decision.timestamp + rules.reward_wait_ms;
        if reward.timestamp > deadline || before > deadline {
            out.late += 1;
            out.late_rewards.insert(key);
            continue;
        }
        counted.entry((reward.event_id.as_str(), reward.product_id.as_str())).or_default().push(reward);
    }
    for decision in &streams.decisions {
        let aggregate: Vec<Option<f64>> = decision
            .shown
            .iter()
            .map(|(product, _, _)| {
                let list = counted.get(&(decision.event_id.as_str(), product.as_str()))?;
                let values = list.iter().map(|r| r.reward);
                match rules.aggregation {
                    "earliest" => list.iter().min_by_key(|r| (r.timestamp, r.offset)).map(|r| r.reward),
                    "sum" => Some(values.sum()),
                    "max" => values.reduce(f64::max),
                    other => panic!("aggregation {other}"),
                }
            })
            .collect();
        let cutoff = match rules.impressions {
            "all" => u32::MAX,
            "cascade" => decision
                .shown
                .iter()
                .zip(&aggregate)
                .filter(|(_, value)| value.is_some_and(|v| v > 0.0))
                .map(|((_, position, _), _)| *position)
                .max()
                .unwrap_or(u32::MAX),
            other => panic!("impressions {other}"),
        };
        for (index, ((product, position, probability), value)) in decision.shown.iter().zip(&aggregate).enumerate() {
            if *position > cutoff {
                continue;
            }
            let seq = ((decision.offset as u64) << 16) | index as u64;
            out.examples.insert(
                (decision.partition, seq),
                Expected {
                    event_id: decision.event_id.clone(),
                    product_id: product.clone(),
                    reward: value.unwrap_or(rules.default_reward),
                    context: decision.context.clone(),
                    position: *position,
                    probability: *probability,
                    timestamp: decision.timestamp,
                },
            );
        }
    }
    out
}

/// The feedback topic de-duplicated as the trainer does, by (source
/// partition, seq); a repeat must equal the first emission. Also returns
/// how many records were read (repeats included).
pub fn read_examples(bootstrap: &str, partitions: i32) -> (BTreeMap<(i32, u64), Expected>, usize) {
    let records = read_topic(bootstrap, "feedback", partitions, Duration::from_secs(60));
    let mut examples: BTreeMap<(i32, u64), Expected> = BTreeMap::new();
    for record in &records {
        let event: FeedbackEvent = serde_json::from_slice(record.payload.as_deref().unwrap_or_default())
            .unwrap_or_else(|e| panic!("feedback record {}@{} is not a feedback event: {e}", record.partition, record.offset));
        assert_eq!(record.key.as_deref(), Some(event.product_id.as_bytes()), "keyed by product id");
        let source = event.source.unwrap_or_else(|| panic!("no source in {event:?}"));
        let example = Expected {
            event_id: event.event_id,
            product_id: event.product_id,
            reward: event.reward,
            context: event.context_vector,
            position: event.position.unwrap_or(u32::MAX),
            probability: event.probability.unwrap_or(f64::NAN),
            timestamp: event.timestamp,
        };
        match examples.get(&(source.partition, source.seq)) {
            Some(first) => assert_eq!(first, &example, "a re-emission differs from the first emission"),
            None => {
                examples.insert((source.partition, source.seq), example);
            }
        }
    }
    (examples, records.len())
}

/// The dead-letter topic: (source topic, partition, offset) → reason,
/// de-duplicated (a record dead-lettered again after a crash).
pub fn read_dead_letters(bootstrap: &str) -> BTreeMap<(String, i32, i64), String> {
    let records = read_topic(bootstrap, "join-dlq", 1, Duration::from_secs(60));
    records
        .iter()
        .map(|record| {
            let header = |name: &str| {
                record.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("no {name} header"))
            };
            let key = (
                header("__connect.errors.topic"),
                header("__connect.errors.partition").parse().unwrap_or(-1),
                header("__connect.errors.offset").parse().unwrap_or(-1),
            );
            (key, header("__connect.errors.exception.message"))
        })
        .collect()
}

/// Waits until the feedback topic holds (de-duplicated) as many examples as
/// expected, then returns them.
pub fn wait_for_examples(bootstrap: &str, partitions: i32, expected: usize, deadline: Duration, context: &dyn Fn() -> String) -> BTreeMap<(i32, u64), Expected> {
    let end = Instant::now() + deadline;
    loop {
        let (examples, _) = read_examples(bootstrap, partitions);
        if examples.len() >= expected {
            return examples;
        }
        assert!(Instant::now() < end, "{} of {expected} examples after {deadline:?}\n{}", examples.len(), context());
        sleep(Duration::from_millis(500));
    }
}

/// Asserts that the emitted examples are exactly the reference's, naming
/// the first differences.
pub fn assert_examples_equal(got: &BTreeMap<(i32, u64), Expected>, want: &BTreeMap<(i32, u64), Expected>) {
    let got_keys: BTreeSet<_> = got.keys().collect();
    let want_keys: BTreeSet<_> = want.keys().collect();
    let missing: Vec<_> = want_keys.difference(&got_keys).take(5).collect();
    let extra: Vec<_> = got_keys.difference(&want_keys).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "examples missing {missing:?}, extra {extra:?} ({} vs {})", got.len(), want.len());
    for (key, example) in want {
        assert_eq!(got.get(key), Some(example), "example {key:?}");
    }
}

/// The reference examples as the feedback events the trainer folds.
pub fn as_feedback(examples: &BTreeMap<(i32, u64), Expected>) -> Vec<FeedbackEvent> {
    examples
        .values()
        .map(|e| FeedbackEvent {
            event_id: e.event_id.clone(),
            product_id: e.product_id.clone(),
            reward: e.reward,
            context_vector: e.context.clone(),
            timestamp: e.timestamp,
            ..FeedbackEvent::default()
        })
        .collect()
}
