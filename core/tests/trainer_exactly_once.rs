//! Property tests of the trainer's exactly-once invariant, without a broker:
//! several trainer instances consume a partitioned log into one model (the
//! core's `Model`, with the same offset fence the Redis module applies),
//! under random interleavings of deliveries, redeliveries, flushes, crashes
//! (a trainer dropped and rebuilt from the model), rebalances (a partition
//! moved, with or without a final flush), a second writer on the same
//! partition (which causes STALE) and failovers that lose the last LOADs (the
//! model goes back to an earlier state, as a promoted replica that had not
//! received them). After every step the model must equal the exact fold of
//! each partition's events below the model's offset for it, with the join's
//! re-emitted examples dropped, and hold the sequence fences of that prefix.
//!
//! The log is what the join writes: most events carry a source (decisions
//! partition, seq) whose seqs grow per source partition, and now and then
//! the join "crashes" and emits its last few examples of the partition again
//! at later offsets, some with another reward (a replay may join a late
//! reward the first emission missed): the first emission is the one that
//! counts. Some events have no source (never duplicates), some are invalid.
//!
//! The reference fold is written here, independently of the core's
//! accumulator: A = λI + Σ xxᵀ (upper triangle), b = Σ r·x, in log order,
//! with forgetting (A ← γA + (1−γ)λI + xxᵀ, b ← γb + r·x) in half the cases.
//! So is the de-duplication: per partition, an event whose source seq is at
//! or below the highest seq of its source partition folded before it is
//! left out; invalid events are left out and raise nothing.

#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic, clippy::needless_range_loop)]

use std::collections::BTreeMap;

use bandit_core::event::{FeedbackEvent, Source};
use bandit_core::fold::Learning;
use bandit_core::trainer::{Handled, Restored, Trainer};
use bandit_core::{Error, Limits, Model, ModelSettings, Payload};
use proptest::prelude::*;

const DIM: usize = 3;
const LAMBDA: f64 = 2.5;
const PARTITIONS: i32 = 3;
const PRODUCTS: u64 = 7;
const RECORDS_PER_PARTITION: usize = 24;
const INSTANCES: usize = 3;
/// Decisions partitions the join reads (the sources of the examples).
const SOURCES: u64 = 2;

/// One record of the log: a valid event or one of the wrong dimension
/// (which the trainer rejects and the consumer dead-letters).
#[derive(Debug, Clone)]
struct Record {
    event: FeedbackEvent,
}

/// The log: products are keyed to partitions (product k on k % PARTITIONS),
/// contexts and rewards from a small generator so values are reproducible.
/// Three events in four carry a source, whose seq grows per source partition
/// across the whole log; one step in six (once the partition has some)
/// emits the partition's last 1 to 4 sourced events again, as a join
/// restarted from an earlier checkpoint does, half of them with another
/// reward.
fn log(seed: u64) -> Vec<Vec<Record>> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut seqs = [0u64; SOURCES as usize];
    let mut partitions = vec![Vec::new(); PARTITIONS as usize];
    for partition in 0..PARTITIONS {
        let records: &mut Vec<Record> = &mut partitions[partition as usize];
        let mut sourced: Vec<FeedbackEvent> = Vec::new();
        let mut i = 0;
        while records.len() < RECORDS_PER_PARTITION {
            if !sourced.is_empty() && next() % 6 == 0 {
                let again = (1 + next() as usize % 4).min(sourced.len());
                for event in &sourced[sourced.len() - again..] {
                    let mut event = event.clone();
                    if next() % 2 == 0 {
                        event.reward += 0.5;
                    }
                    records.push(Record { event });
                }
                records.truncate(RECORDS_PER_PARTITION);
                continue;
            }
            let product = (next() % (PRODUCTS / 2 + 1)) * PARTITIONS as u64 + partition as u64;
            let bad = next() % 11 == 0;
            let dim = if bad { DIM + 1 } else { DIM };
            let context_vector = (0..dim).map(|_| (next() % 1000) as f64 / 997.0).collect();
            let reward = if next() % 3 == 0 { 1.0 } else { (next() % 5) as f64 / 8.0 };
            let source = (next() % 4 != 0).then(|| {
                let source = next() % SOURCES;
                // Other partitions' examples take seqs in between.
                seqs[source as usize] += 1 + next() % 3;
                Source { partition: source as i32, seq: seqs[source as usize] }
            });
            let event = FeedbackEvent {
                event_id: format!("{partition}-{i}"),
                product_id: format!("p{product}"),
                reward,
                context_vector,
                timestamp: i as i64,
                source,
                ..Default::default()
            };
            if source.is_some() {
                sourced.push(event.clone());
            }
            records.push(Record { event });
            i += 1;
        }
    }
    partitions
}

#[derive(Debug, Clone)]
enum Action {
    /// Deliver up to `count` records on each partition the instance holds.
    Deliver { instance: usize, count: usize },
    /// The consumer goes back `by` records on a partition (redelivery).
    Rewind { instance: usize, partition: i32, by: i64 },
    Flush { instance: usize },
    /// The instance dies without flushing; a new one takes its partitions
    /// at the model's offsets.
    Crash { instance: usize },
    /// The partition moves to another instance; its owner flushes first
    /// when `graceful` (a revoke), or not (it was killed).
    Move { partition: i32, to: usize, graceful: bool },
    /// Another instance takes the partition too: two live writers.
    Share { partition: i32, with: usize },
    /// A failover: the model goes back `by` published states.
    Revert { by: usize },
}

fn action() -> impl Strategy<Value = Action> {
    let instance = 0..INSTANCES;
    let partition = 0..PARTITIONS;
    prop_oneof![
        6 => (instance.clone(), 1..6usize).prop_map(|(instance, count)| Action::Deliver { instance, count }),
        2 => (instance.clone(), partition.clone(), 1..8i64).prop_map(|(instance, partition, by)| Action::Rewind { instance, partition, by }),
        3 => instance.clone().prop_map(|instance| Action::Flush { instance }),
        1 => instance.clone().prop_map(|instance| Action::Crash { instance }),
        1 => (partition.clone(), instance.clone(), any::<bool>()).prop_map(|(partition, to, graceful)| Action::Move { partition, to, graceful }),
        1 => (partition, instance).prop_map(|(partition, with)| Action::Share { partition, with }),
        1 => (1..4usize).prop_map(|by| Action::Revert { by }),
    ]
}

struct Instance {
    trainer: Trainer,
    /// Consumer position per held partition: the next offset it delivers.
    positions: BTreeMap<i32, i64>,
}

struct World {
    learning: Learning,
    log: Vec<Vec<Record>>,
    model: Model,
    /// Every state the model had, oldest first, for failovers.
    history: Vec<Model>,
    instances: Vec<Instance>,
    stale_refusals: usize,
    reverts: usize,
    /// Records the trainers called duplicates.
    duplicates: usize,
}

impl World {
    fn new(seed: u64, decay: f64) -> Self {
        let learning = Learning { lambda: LAMBDA, decay };
        let mut world = Self {
            learning,
            log: log(seed),
            model: Model::new(ModelSettings { dim: DIM, alpha: 0.4, lambda: LAMBDA, decay }),
            history: Vec::new(),
            instances: (0..INSTANCES).map(|_| Instance { trainer: Trainer::new(DIM, learning), positions: BTreeMap::new() }).collect(),
            stale_refusals: 0,
            reverts: 0,
            duplicates: 0,
        };
        // Partition p starts on instance p % INSTANCES.
        for partition in 0..PARTITIONS {
            world.assign(partition as usize % INSTANCES, partition);
        }
        world
    }

    /// The model's answer to BANDIT.EXPORT key ARMS 0: offsets and fences.
    fn model_state(&self) -> Payload {
        self.model.export(Some(&[]))
    }

    fn assign(&mut self, instance: usize, partition: i32) {
        let state = self.model_state();
        let target = &mut self.instances[instance];
        for (partition, start) in target.trainer.assign(&[partition], &state) {
            target.positions.insert(partition, start.unwrap_or(0));
        }
    }

    /// The model's answer to BANDIT.EXPORT key ARMS 1 id.
    fn export(&self, id: &str) -> Payload {
        let rows: Vec<usize> = self.model.row_of(id.as_bytes()).into_iter().collect();
        self.model.export(Some(&rows))
    }

    fn deliver(&mut self, instance: usize, count: usize) {
        let partitions: Vec<i32> = self.instances[instance].positions.keys().copied().collect();
        for partition in partitions {
            for _ in 0..count {
                let position = self.instances[instance].positions[&partition];
                let Some(record) = self.log[partition as usize].get(position as usize).cloned() else { break };
                loop {
                    let handled = self.instances[instance].trainer.handle(partition, position, Ok(&record.event));
                    match handled {
                        Handled::Folded | Handled::Skipped => {}
                        Handled::Duplicate => self.duplicates += 1,
                        Handled::Rejected(_) => self.instances[instance].trainer.advance(partition, position),
                        Handled::NeedArm(id) => {
                            let export = self.export(&id);
                            match self.instances[instance].trainer.restored(partition, &id, &export).unwrap() {
                                Restored::Ready => continue,
                                Restored::Reset { partition, offset } => {
                                    self.instances[instance].positions.insert(partition, offset);
                                    break;
                                }
                            }
                        }
                    }
                    self.instances[instance].positions.insert(partition, position + 1);
                    break;
                }
            }
        }
    }

    fn flush(&mut self, instance: usize) {
        // As the sink: one retry after a STALE, with the moved partitions
        // reset; with nothing to publish, a check that the model is still
        // where this trainer left it.
        for _ in 0..2 {
            // The sink's path: the flush encoded straight from the
            // accumulators, decoded by the model as BANDIT.LOAD decodes it.
            // Instance 0 sends its flushes in parts of about two arms (see
            // `bandit_core::parts`), the others in one LOAD.
            let part_bytes = if instance == 0 { 2_000 } else { usize::MAX };
            let mut parts = Vec::new();
            let Some((published, _)) = self.instances[instance].trainer.flush_encoded(&mut parts, part_bytes).unwrap() else {
                let state = self.model_state();
                let target = &mut self.instances[instance];
                for (partition, offset) in target.trainer.reconcile(&state) {
                    target.positions.insert(partition, offset);
                }
                return;
            };
            let decoded = parts
                .iter()
                .map(|part| bandit_core::codec::decode(part, &Limits::default()).unwrap())
                .map(|part| {
                    let prepared = bandit_core::Prepared::new(&part);
                    (part, prepared)
                })
                .collect();
            let (payload, _) = bandit_core::parts::join(decoded, &Limits::default()).unwrap();
            let before = self.model.clone();
            match self.model.apply(&payload, 0, &Limits::default()) {
                Ok(_) => {
                    self.history.push(before);
                    self.instances[instance].trainer.published(&published);
                    return;
                }
                Err(Error::Stale { .. } | Error::Moved { .. }) => {
                    self.stale_refusals += 1;
                    let state = self.model_state();
                    let target = &mut self.instances[instance];
                    for (partition, offset) in target.trainer.reconcile(&state) {
                        target.positions.insert(partition, offset);
                    }
                }
                Err(other) => panic!("the model refused a payload: {other}"),
            }
        }
    }

    fn step(&mut self, action: &Action) {
        match *action {
            Action::Deliver { instance, count } => self.deliver(instance, count),
            Action::Rewind { instance, partition, by } => {
                if let Some(position) = self.instances[instance].positions.get_mut(&partition) {
                    *position = (*position - by).max(0);
                }
            }
            Action::Flush { instance } => self.flush(instance),
            Action::Crash { instance } => {
                let held: Vec<i32> = self.instances[instance].positions.keys().copied().collect();
                self.instances[instance] = Instance { trainer: Trainer::new(DIM, self.learning), positions: BTreeMap::new() };
                for partition in held {
                    self.assign(instance, partition);
                }
            }
            Action::Move { partition, to, graceful } => {
                for from in 0..INSTANCES {
                    if from != to && self.instances[from].positions.contains_key(&partition) {
                        if graceful {
                            self.flush(from);
                        }
                        self.instances[from].trainer.revoke(&[partition]);
                        self.instances[from].positions.remove(&partition);
                    }
                }
                if !self.instances[to].positions.contains_key(&partition) {
                    self.assign(to, partition);
                }
            }
            Action::Share { partition, with } => {
                if !self.instances[with].positions.contains_key(&partition) {
                    self.assign(with, partition);
                }
            }
            Action::Revert { by } => {
                let keep = self.history.len().saturating_sub(by);
                if keep < self.history.len() {
                    self.model = self.history[keep].clone();
                    self.history.truncate(keep);
                    self.reverts += 1;
                }
            }
        }
    }

    /// The model equals the exact fold, below its offset, of every
    /// partition's events without the re-emitted ones; products with no
    /// such event are absent; its fences are the highest seq folded per
    /// (partition, source partition) there.
    fn check(&self) -> Result<(), TestCaseError> {
        let exported = self.model.export(None);
        let mut expected: BTreeMap<String, ReferenceArm> = BTreeMap::new();
        let mut expected_fences: BTreeMap<(i32, i32), u64> = BTreeMap::new();
        for (partition, records) in self.log.iter().enumerate() {
            let partition = partition as i32;
            let below = self.model.offsets().get(&partition).copied().unwrap_or(0);
            for record in records.iter().take(below as usize) {
                let event = &record.event;
                let seen = |source: &Source| expected_fences.get(&(partition, source.partition)).is_some_and(|&top| source.seq <= top);
                if event.source.as_ref().is_some_and(seen) || event.context_vector.len() != DIM {
                    continue;
                }
                expected.entry(event.product_id.clone()).or_insert_with(ReferenceArm::prior).fold(event, self.learning.decay);
                if let Some(source) = event.source {
                    expected_fences.insert((partition, source.partition), source.seq);
                }
            }
        }
        prop_assert_eq!(self.model.fences(), &expected_fences, "fences");
        let got: BTreeMap<&str, _> = exported.arms.iter().map(|arm| (arm.id.as_str(), arm)).collect();
        prop_assert_eq!(got.keys().copied().collect::<Vec<_>>(), expected.keys().map(String::as_str).collect::<Vec<_>>());
        for (id, want) in &expected {
            let arm = got[id.as_str()];
            prop_assert_eq!(arm.n, want.n, "{}: n", id);
            prop_assert_eq!(arm.reward_sum.to_bits(), want.reward_sum.to_bits(), "{}: reward_sum", id);
            prop_assert_eq!(&arm.b, &want.b, "{}: b", id);
            prop_assert_eq!(arm.a.as_ref(), Some(&want.a), "{}: A", id);
        }
        Ok(())
    }
}

/// A = λI + Σ xxᵀ as its upper triangle row by row, b = Σ r·x.
struct ReferenceArm {
    a: Vec<f64>,
    b: Vec<f64>,
    n: u64,
    reward_sum: f64,
}

impl ReferenceArm {
    fn prior() -> Self {
        let mut a = Vec::new();
        for i in 0..DIM {
            for j in i..DIM {
                a.push(if i == j { LAMBDA } else { 0.0 });
            }
        }
        Self { a, b: vec![0.0; DIM], n: 0, reward_sum: 0.0 }
    }

    fn fold(&mut self, event: &FeedbackEvent, decay: f64) {
        let x = &event.context_vector;
        let mut k = 0;
        for i in 0..DIM {
            for j in i..DIM {
                if decay < 1.0 {
                    self.a[k] = decay * self.a[k] + if i == j { (1.0 - decay) * LAMBDA } else { 0.0 };
                }
                self.a[k] += x[i] * x[j];
                k += 1;
            }
        }
        for i in 0..DIM {
            if decay < 1.0 {
                self.b[i] *= decay;
            }
            self.b[i] += event.reward * x[i];
        }
        self.n += 1;
        self.reward_sum += event.reward;
    }
}

fn run(seed: u64, decay: f64, actions: &[Action]) -> Result<World, TestCaseError> {
    let mut world = World::new(seed, decay);
    for action in actions {
        world.step(action);
        world.check()?;
    }
    // Drain: every instance consumes to the end and publishes, until the
    // model is at the end of every partition (a failover before the drain
    // costs a round: the quiet trainer notices it at its next flush).
    for _ in 0..4 {
        for instance in 0..INSTANCES {
            world.deliver(instance, RECORDS_PER_PARTITION);
            world.flush(instance);
            world.check()?;
        }
    }
    for partition in 0..PARTITIONS {
        prop_assert_eq!(world.model.offsets().get(&partition).copied(), Some(RECORDS_PER_PARTITION as i64));
    }
    Ok(world)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn the_model_always_equals_the_exact_fold(
        seed in any::<u64>(),
        decay in prop_oneof![Just(1.0), Just(0.9)],
        actions in prop::collection::vec(action(), 1..80),
    ) {
        run(seed, decay, &actions)?;
    }
}

/// The paths the property test relies on are really taken: a fixed
/// interleaving with two writers on one partition, where the late one is
/// refused as STALE and resets, and a redelivery after a crash.
#[test]
fn a_second_writer_is_fenced_and_redeliveries_are_skipped() {
    let actions = [
        Action::Share { partition: 0, with: 1 },
        Action::Deliver { instance: 0, count: 10 },
        Action::Deliver { instance: 1, count: 4 },
        Action::Flush { instance: 0 },
        // Instance 1 is behind the model on partition 0: STALE, then reset.
        Action::Flush { instance: 1 },
        Action::Deliver { instance: 0, count: 5 },
        Action::Crash { instance: 0 },
        Action::Rewind { instance: 0, partition: 0, by: 6 },
        Action::Deliver { instance: 0, count: 20 },
        Action::Flush { instance: 0 },
    ];
    let world = run(7, 0.9, &actions).unwrap_or_else(|e| panic!("{e}"));
    assert!(world.stale_refusals >= 1, "the second writer was never refused");
}

/// A failover loses the last publish: the trainer, which built on it, is
/// refused, resets to the model and replays, and the model is exact again.
#[test]
fn a_model_that_went_back_is_replayed_not_overwritten() {
    let actions = [
        Action::Deliver { instance: 0, count: 6 },
        Action::Flush { instance: 0 },
        Action::Deliver { instance: 0, count: 6 },
        Action::Flush { instance: 0 },
        Action::Revert { by: 1 },
        Action::Deliver { instance: 0, count: 6 },
        Action::Flush { instance: 0 },
    ];
    let world = run(11, 1.0, &actions).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(world.reverts, 1);
    assert!(world.stale_refusals >= 1, "the trainer was not told the model went back");
}

/// The log really has re-emitted examples that matter (folding them would
/// change the model), and a trainer rebuilt after a crash, which knows the
/// fences only from the model, still drops them.
#[test]
fn re_emitted_examples_are_dropped_after_a_crash_too() {
    let seed = 5;
    let log = log(seed);
    let mut repeated = 0;
    for records in &log {
        let mut seen = std::collections::BTreeSet::new();
        repeated += records.iter().filter_map(|r| r.event.source).filter(|s| !seen.insert((s.partition, s.seq))).count();
    }
    assert!(repeated >= 6, "only {repeated} re-emitted examples in the log");
    let actions = [
        Action::Deliver { instance: 0, count: 12 },
        Action::Flush { instance: 0 },
        Action::Deliver { instance: 0, count: 3 },
        Action::Crash { instance: 0 },
        Action::Move { partition: 1, to: 0, graceful: true },
        Action::Deliver { instance: 0, count: 24 },
        Action::Flush { instance: 0 },
    ];
    let world = run(seed, 1.0, &actions).unwrap_or_else(|e| panic!("{e}"));
    assert!(world.duplicates >= repeated, "{} duplicates dropped, {repeated} in the log", world.duplicates);
    assert_eq!(world.model.fences().keys().map(|&(p, _)| p).collect::<std::collections::BTreeSet<_>>().len(), PARTITIONS as usize);
}
