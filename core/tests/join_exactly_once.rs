//! The join against an independent computation of decisions × rewards, for
//! random streams, read in random interleavings, with crashes that lose
//! in-flight output and restart from the last committed position; output
//! passes the per-partition sequence fence the trainer applies. The
//! examples that get through must be exactly the oracle's, each once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use bandit_core::join::{
    Aggregation, Decision, DecisionOutcome, Example, Impressions, JoinSettings, Joiner, Position, Reward, RewardOutcome, Shown,
};
use proptest::prelude::*;

const PRODUCTS: usize = 6;
const OUTPUT_PARTITIONS: usize = 3;

#[derive(Debug, Clone)]
struct Streams {
    decisions: Vec<Decision>,
    rewards: Vec<Reward>,
}

/// Decisions in time order; rewards mostly in time order (neighbours swapped
/// now and then), some late, some for unknown events or unshown products.
fn streams(seed: u64, count: usize, wait: i64) -> Streams {
    let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    let mut decisions = Vec::new();
    let mut rewards = Vec::new();
    let mut time = 1_000_000;
    for i in 0..count {
        time += next(60) as i64;
        let shown_count = 1 + next(4) as usize;
        let first = next(PRODUCTS as u64) as usize;
        let shown: Vec<Shown> = (0..shown_count)
            .map(|k| Shown {
                product_id: format!("p{}", (first + k) % PRODUCTS),
                position: k as u32,
                probability: 0.1 + (next(90) as f64) / 100.0,
            })
            .collect();
        let event_id = format!("e{i}");
        for item in &shown {
            for _ in 0..next(3) {
                rewards.push(Reward {
                    event_id: event_id.clone(),
                    product_id: item.product_id.clone(),
                    reward: [0.0, 1.0, 0.5, 2.0][next(4) as usize],
                    timestamp: time + next((2 * wait) as u64) as i64,
                });
            }
        }
        if next(10) == 0 {
            rewards.push(Reward { event_id: format!("nobody{i}"), product_id: "p0".into(), reward: 1.0, timestamp: time + 5 });
        }
        if next(10) == 0 {
            rewards.push(Reward { event_id: event_id.clone(), product_id: "unshown".into(), reward: 1.0, timestamp: time + 5 });
        }
        let context = vec![i as f64 / 10.0, next(100) as f64 / 100.0];
        decisions.push(Decision { event_id, model: "m".into(), model_version: 1, policy: "egreedy".into(), context, shown, timestamp: time });
    }
    rewards.sort_by_key(|r| r.timestamp);
    for i in 1..rewards.len() {
        if next(8) == 0 {
            rewards.swap(i - 1, i);
        }
    }
    Streams { decisions, rewards }
}

/// The join by definition, written without the joiner: a reward counts for
/// its decision when it is at most `wait` after it and no reward before it
/// in the stream was past the deadline.
fn oracle(streams: &Streams, settings: &JoinSettings) -> (BTreeSet<String>, BTreeSet<usize>) {
    let mut out = BTreeSet::new();
    let mut joined_rewards = BTreeSet::new();
    for decision in &streams.decisions {
        let deadline = decision.timestamp + settings.reward_wait_ms;
        let mut values: Vec<Vec<(i64, usize, f64)>> = vec![Vec::new(); decision.shown.len()];
        let mut max_before = i64::MIN;
        for (offset, reward) in streams.rewards.iter().enumerate() {
            let fits = reward.event_id == decision.event_id && reward.timestamp <= deadline && max_before <= deadline;
            if let Some(index) = decision.shown.iter().position(|s| s.product_id == reward.product_id).filter(|_| fits) {
                values[index].push((reward.timestamp, offset, reward.reward));
                joined_rewards.insert(offset);
            }
            max_before = max_before.max(reward.timestamp);
        }
        let aggregated: Vec<Option<f64>> = values
            .iter()
            .map(|v| {
                if v.is_empty() {
                    return None;
                }
                Some(match settings.aggregation {
                    Aggregation::Earliest => v.iter().min_by_key(|(t, o, _)| (*t, *o)).unwrap().2,
                    Aggregation::Sum => v.iter().map(|(_, _, r)| r).sum(),
                    Aggregation::Max => v.iter().map(|(_, _, r)| *r).fold(f64::NEG_INFINITY, f64::max),
                })
            })
            .collect();
        let lowest_click = decision.shown.iter().zip(&aggregated).filter(|(_, a)| a.is_some_and(|v| v > 0.0)).map(|(s, _)| s.position).max();
        for (shown, value) in decision.shown.iter().zip(&aggregated) {
            if settings.impressions == Impressions::Cascade && lowest_click.is_some_and(|p| shown.position > p) {
                continue;
            }
            let reward = value.unwrap_or(settings.default_reward);
            out.insert(format!("{} {} {} {} {} {:?}", decision.event_id, shown.product_id, reward, shown.position, shown.probability, decision.context));
        }
    }
    (out, joined_rewards)
}

fn key(example: &Example) -> String {
    format!(
        "{} {} {} {} {} {:?}",
        example.event_id, example.product_id, example.reward, example.position, example.probability, example.context
    )
}

fn partition_of(product: &str) -> usize {
    product.bytes().map(usize::from).sum::<usize>() % OUTPUT_PARTITIONS
}

/// Runs the joiner over `streams`, crashing at the steps in `crashes`; returns
/// what passed the fence and every reward offset reported late or unknown.
fn run(streams: &Streams, settings: JoinSettings, choices: &[bool], crashes: &BTreeSet<usize>, commits: &BTreeSet<usize>) -> (Vec<Example>, BTreeSet<usize>) {
    let mut fence: [Option<u64>; OUTPUT_PARTITIONS] = [None; OUTPUT_PARTITIONS];
    let mut trained = Vec::new();
    let mut reported = BTreeSet::new();
    let mut in_flight: Vec<Vec<Example>> = vec![Vec::new(); OUTPUT_PARTITIONS];
    let mut committed = Position { rewards_time: i64::MIN, ..Position::default() };
    let mut joiner = Joiner::resume(settings, committed);
    let (mut d, mut r) = (0usize, 0usize);
    let deliver = |in_flight: &mut Vec<Vec<Example>>, fence: &mut [Option<u64>; OUTPUT_PARTITIONS], trained: &mut Vec<Example>, keep: &[usize]| {
        for (q, queue) in in_flight.iter_mut().enumerate() {
            for example in queue.drain(..).take(keep[q]) {
                if fence[q].is_none_or(|max| example.seq > max) {
                    fence[q] = Some(example.seq);
                    trained.push(example);
                }
            }
        }
    };
    let mut step = 0;
    loop {
        let done = d >= streams.decisions.len() && r >= streams.rewards.len();
        if done {
            joiner.advance(i64::MAX, true);
        } else {
            let read_decision = r >= streams.rewards.len() || (d < streams.decisions.len() && choices[step % choices.len()]);
            if read_decision {
                match joiner.decision(d as i64, streams.decisions[d].clone()) {
                    DecisionOutcome::Pending => {}
                    DecisionOutcome::Rejected(reason) => panic!("valid decision rejected: {reason}"),
                }
                d += 1;
            } else {
                match joiner.reward(r as i64, streams.rewards[r].clone()) {
                    RewardOutcome::Late | RewardOutcome::Unknown(_) => {
                        reported.insert(r);
                    }
                    RewardOutcome::Attached | RewardOutcome::Held | RewardOutcome::Redelivered | RewardOutcome::Replayed => {}
                }
                r += 1;
            }
        }
        for unjoined in joiner.take_unjoined() {
            reported.insert(unjoined.offset as usize);
        }
        while let Some(joined) = joiner.close_next() {
            for example in joined.examples {
                in_flight[partition_of(&example.product_id)].push(example);
            }
        }
        if done {
            deliver(&mut in_flight, &mut fence, &mut trained, &[usize::MAX; OUTPUT_PARTITIONS]);
            break;
        }
        step += 1;
        if commits.contains(&step) {
            // Flush: everything in flight is acknowledged, then the position is committed.
            deliver(&mut in_flight, &mut fence, &mut trained, &[usize::MAX; OUTPUT_PARTITIONS]);
            committed = joiner.commit_position();
        } else if crashes.contains(&step) {
            // A prefix of each output partition's in-flight records landed.
            let keep: Vec<usize> = (0..OUTPUT_PARTITIONS).map(|q| (step * (q + 3)) % (in_flight[q].len() + 1)).collect();
            deliver(&mut in_flight, &mut fence, &mut trained, &keep);
            joiner = Joiner::resume(settings, committed);
            d = committed.decisions as usize;
            r = committed.rewards as usize;
        }
    }
    (trained, reported)
}

fn settings_strategy() -> impl Strategy<Value = JoinSettings> {
    (50i64..400, 0usize..3, prop_oneof![Just(0.0), Just(-0.5)], any::<bool>()).prop_map(|(wait, aggregation, default_reward, cascade)| {
        JoinSettings {
            reward_wait_ms: wait,
            aggregation: [Aggregation::Earliest, Aggregation::Sum, Aggregation::Max][aggregation],
            default_reward,
            impressions: if cascade { Impressions::Cascade } else { Impressions::All },
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn the_join_is_the_oracle_exactly_once_through_crashes(
        seed in any::<u64>(),
        count in 1usize..30,
        settings in settings_strategy(),
        choices in proptest::collection::vec(any::<bool>(), 1..64),
        crashes in proptest::collection::btree_set(1usize..200, 0..6),
        commits in proptest::collection::btree_set(1usize..200, 0..12),
    ) {
        let streams = streams(seed, count, settings.reward_wait_ms);
        let (want, joined_rewards) = oracle(&streams, &settings);
        let (trained, reported) = run(&streams, settings, &choices, &crashes, &commits);
        let mut got = BTreeMap::new();
        for example in &trained {
            *got.entry(key(example)).or_insert(0) += 1;
        }
        prop_assert!(got.values().all(|&n| n == 1), "an example trained twice: {got:?}");
        let got: BTreeSet<String> = got.into_keys().collect();
        prop_assert_eq!(&got, &want);
        // A joined reward is never reported; without a crash, every other one is.
        let all: BTreeSet<usize> = (0..streams.rewards.len()).collect();
        let unjoined: BTreeSet<usize> = all.difference(&joined_rewards).copied().collect();
        prop_assert!(reported.is_subset(&unjoined), "reported {reported:?}, unjoined {unjoined:?}");
        if crashes.is_empty() {
            prop_assert_eq!(&reported, &unjoined);
        }
    }
}

/// A hand-computed case: wait 100 ms, sum, cascade, default reward -1.
#[test]
fn a_small_log_joins_as_computed_by_hand() {
    let settings = JoinSettings { reward_wait_ms: 100, aggregation: Aggregation::Sum, default_reward: -1.0, impressions: Impressions::Cascade };
    let shown = |ids: &[&str]| {
        ids.iter().enumerate().map(|(i, id)| Shown { product_id: (*id).into(), position: i as u32, probability: 0.5 }).collect()
    };
    let mut joiner = Joiner::new(settings);
    let decision = |id: &str, t: i64, ids: &[&str]| Decision {
        event_id: id.into(),
        model: "m".into(),
        model_version: 3,
        policy: "softmax".into(),
        context: vec![1.0, 2.0],
        shown: shown(ids),
        timestamp: t,
    };
    let reward = |id: &str, product: &str, value: f64, t: i64| Reward { event_id: id.into(), product_id: product.into(), reward: value, timestamp: t };
    // A reward before its decision is held, then joined.
    assert_eq!(joiner.reward(0, reward("a", "y", 1.0, 1050)), RewardOutcome::Held);
    assert_eq!(joiner.decision(0, decision("a", 1000, &["x", "y", "z"])), DecisionOutcome::Pending);
    assert_eq!(joiner.decision(1, decision("b", 1010, &["x", "y"])), DecisionOutcome::Pending);
    assert_eq!(joiner.reward(1, reward("a", "y", 2.0, 1100)), RewardOutcome::Attached);
    assert_eq!(joiner.reward(2, reward("b", "q", 1.0, 1101)), RewardOutcome::Unknown("decision b did not show q".into()));
    assert_eq!(joiner.close_next().map(|j| j.event_id), Some("a".into()), "a's deadline 1100 is passed by the stream (1101)");
    assert!(joiner.close_next().is_none(), "b's deadline 1110 is not");
    // Late: before it in the stream, a reward was past b's deadline.
    assert_eq!(joiner.reward(3, reward("b", "x", 1.0, 1200)), RewardOutcome::Late);
    assert_eq!(joiner.reward(4, reward("b", "x", 1.0, 1105)), RewardOutcome::Late);
    assert_eq!(joiner.reward(5, reward("a", "x", 1.0, 1090)), RewardOutcome::Late, "a is closed");
    let b = joiner.close_next().unwrap();
    assert_eq!(b.examples.iter().map(|e| (e.product_id.as_str(), e.reward)).collect::<Vec<_>>(), [("x", -1.0), ("y", -1.0)]);
    assert!(!b.rewarded);
    assert_eq!(b.examples[1].seq, (1 << 16) | 1);
}

#[test]
fn a_small_log_joins_a_as_computed_by_hand() {
    let settings = JoinSettings { reward_wait_ms: 100, aggregation: Aggregation::Sum, default_reward: -1.0, impressions: Impressions::Cascade };
    let mut joiner = Joiner::new(settings);
    let shown = ["x", "y", "z"].iter().enumerate().map(|(i, id)| Shown { product_id: (*id).into(), position: i as u32, probability: 0.25 }).collect();
    joiner.decision(0, Decision { event_id: "a".into(), model: "m".into(), model_version: 1, policy: "ts".into(), context: vec![0.5], shown, timestamp: 1000 });
    for (offset, (product, value, t)) in [("y", 1.0, 1050), ("y", 2.0, 1100), ("x", 0.0, 1060)].into_iter().enumerate() {
        joiner.reward(offset as i64, Reward { event_id: "a".into(), product_id: product.into(), reward: value, timestamp: t });
    }
    assert!(joiner.close_next().is_none(), "the stream is at 1100, the deadline");
    joiner.advance(1101, false);
    assert!(joiner.close_next().is_none(), "the clock closes only when the rewards are caught up");
    joiner.advance(1101, true);
    let a = joiner.close_next().unwrap();
    // Cascade: y (position 1) was clicked (1 + 2 = 3), so z below it is not an example; x got 0, not the default.
    let got: Vec<(&str, f64, f64)> = a.examples.iter().map(|e| (e.product_id.as_str(), e.reward, e.probability)).collect();
    assert_eq!(got, [("x", 0.0, 0.25), ("y", 3.0, 0.25)]);
    assert!(a.rewarded);
    assert_eq!(joiner.commit_position(), Position { decisions: 1, rewards: 3, rewards_time: 1100, rewards_seen: 3 });
}

#[test]
fn decisions_that_cannot_be_joined_are_rejected_with_a_reason() {
    let settings = JoinSettings { reward_wait_ms: 10, aggregation: Aggregation::Max, default_reward: 0.0, impressions: Impressions::All };
    let mut joiner = Joiner::new(settings);
    let decision = |id: &str, probability: f64, shown: usize| Decision {
        event_id: id.into(),
        model: "m".into(),
        model_version: 1,
        policy: "ucb".into(),
        context: vec![0.0],
        shown: (0..shown).map(|i| Shown { product_id: format!("p{i}"), position: i as u32, probability }).collect(),
        timestamp: 5,
    };
    assert_eq!(joiner.decision(0, decision("a", 1.0, 2)), DecisionOutcome::Pending);
    let rejected = |outcome: DecisionOutcome| matches!(outcome, DecisionOutcome::Rejected(_));
    assert!(rejected(joiner.decision(1, decision("a", 1.0, 2))), "a second decision a");
    assert!(rejected(joiner.decision(2, decision("b", 0.0, 2))), "probability 0");
    assert!(rejected(joiner.decision(3, decision("c", 1.5, 2))), "probability above 1");
    assert!(rejected(joiner.decision(4, decision("d", 0.5, 0))), "nothing shown");
    assert!(rejected(joiner.decision(5, decision("", 0.5, 1))), "no event id");
    assert_eq!(joiner.decision(0, decision("z", 1.0, 1)), DecisionOutcome::Pending, "a redelivery is ignored");
    assert_eq!(joiner.pending(), (1, 0));
}
