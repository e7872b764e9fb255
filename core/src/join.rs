//! The learning loop's join, free of sockets: decisions (what was shown, with
//! what probability) and rewards (what the user did), both keyed by event id,
//! become training examples keyed by product. One [`Joiner`] serves one pair
//! of co-partitioned partitions (decisions p, rewards p); the I/O loop feeds
//! it records with their offsets and writes out what it closes.
//!
//! The rules make the result a function of the two streams, not of when the
//! joiner ran or how it interleaved them, so that a replay after a crash
//! rebuilds the same examples:
//! - a decision's deadline is its timestamp plus `reward_wait_ms` (event time);
//! - a reward joins its decision when its timestamp is at most the deadline
//!   *and* no reward before it in the rewards partition was past the
//!   deadline (the stream's running maximum timestamp, kept per reward);
//!   otherwise it is late: counted, never trained on;
//! - so a decision is complete once the rewards stream is past its deadline.
//!   It is closed then, or, when the rewards partition is read to its end, once
//!   the wall clock is past the deadline ([`Joiner::advance`]; the one rule
//!   that depends on timing: a reward that comes after such a close is late,
//!   and a replay may join it — the trainer's fence keeps the first
//!   emission, see below);
//! - decisions close in offset order, so the examples' sequence numbers
//!   ([`Example::seq`], the decision's offset and the item's index) only grow
//!   per source partition: the trainer fences them as it fences Kafka offsets,
//!   and re-emitted examples are dropped there;
//! - a reward read before its decision is held until the decisions stream is
//!   past its timestamp by the wait; then its event id is unknown;
//! - a reward for a decision closed recently is late; one for an item the
//!   decision did not show is unknown.
//!
//! Exactly once across a crash: commit [`Joiner::commit_position`] (offsets,
//! with the rest as the commit's metadata) only after every example closed so
//! far was acknowledged by the broker. A joiner restarted from it
//! ([`Joiner::resume`]) reads again every decision still open and every
//! reward they or the held rewards need, with the running maximum as it was.
//! Rewards read again are joined as before but never reported late or
//! unknown a second time. The price: a reward held when the position was
//! committed, whose decision never comes, is not reported if the joiner
//! crashes before it expires (reporting is at most once; training is exactly
//! once). Reporting it again instead would also report rewards that were
//! joined to decisions closed before the commit, which is worse.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

/// How several rewards for one shown item become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// The first by timestamp (then by offset).
    Earliest,
    Sum,
    Max,
}

/// Which shown items become training examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Impressions {
    /// Every shown item.
    All,
    /// The items at or above the lowest-placed item with a positive reward
    /// (every item when none has one): a user who scans from the top never
    /// saw what lies below the click.
    Cascade,
}

/// The join's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JoinSettings {
    pub reward_wait_ms: i64,
    pub aggregation: Aggregation,
    /// The reward of a shown item that got none.
    pub default_reward: f64,
    pub impressions: Impressions,
}

/// One shown item of a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shown {
    pub product_id: String,
    /// 0 is the top.
    pub position: u32,
    /// The probability that this item was placed here, given the items above.
    pub probability: f64,
}

/// The `decisions` topic's event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub event_id: String,
    pub model: String,
    pub model_version: u64,
    pub policy: String,
    pub context: Vec<f64>,
    pub shown: Vec<Shown>,
    /// Unix milliseconds.
    pub timestamp: i64,
}

/// The `rewards` topic's event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reward {
    pub event_id: String,
    pub product_id: String,
    pub reward: f64,
    /// Unix milliseconds.
    pub timestamp: i64,
}

/// One training example: a shown item and its (aggregated or default) reward.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub event_id: String,
    pub product_id: String,
    pub reward: f64,
    pub context: Vec<f64>,
    pub position: u32,
    pub probability: f64,
    /// The decision's timestamp.
    pub timestamp: i64,
    /// Grows with every example of a source partition, in the order they are
    /// closed; the same decision always gets the same numbers.
    pub seq: u64,
}

/// A closed decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub event_id: String,
    pub decision_offset: i64,
    pub examples: Vec<Example>,
    /// Whether any shown item got a reward.
    pub rewarded: bool,
}

/// What became of a decision record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionOutcome {
    Pending,
    /// Not joinable; dead-letter it with this reason.
    Rejected(String),
}

/// What became of a reward record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewardOutcome {
    /// Joined to its open decision.
    Attached,
    /// Its decision was not read yet: held.
    Held,
    /// After its decision's deadline: counted, not trained on.
    Late,
    /// For no decision, or for an item the decision did not show: dead-letter
    /// it with this reason.
    Unknown(String),
    /// Below the next offset expected (a redelivery): ignored.
    Redelivered,
    /// Late or unknown, read again after a restart: reported before.
    Replayed,
}

/// Where a restarted joiner starts: the offsets to commit, and what Kafka
/// keeps beside them as the commit's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// The first decision offset still open.
    pub decisions: i64,
    /// The first reward offset still needed.
    pub rewards: i64,
    /// The latest reward timestamp before `rewards` in the partition.
    pub rewards_time: i64,
    /// How far the rewards were read: the late and unknown ones below this
    /// were reported before.
    pub rewards_seen: i64,
}

/// Shifts a decision's offset to leave room for its shown items in [`Example::seq`].
const SEQ_SHIFT: u32 = 16;
/// The most items a decision may show.
pub const MAX_SHOWN: usize = 1 << SEQ_SHIFT;

/// A reward as the joiner keeps it: where it was read and the latest reward
/// timestamp before it in its partition.
#[derive(Debug, Clone)]
struct Read {
    offset: i64,
    time_before: i64,
}

#[derive(Debug)]
struct Open {
    decision: Decision,
    deadline: i64,
    /// Per shown item (same index as `decision.shown`): the aggregate so far and
    /// the (timestamp, offset) of the reward that set it, for `Earliest`.
    rewards: Vec<Option<(f64, (i64, i64))>>,
    /// The rewards joined to it.
    joined: Vec<Read>,
}

#[derive(Debug)]
struct Held {
    reward: Reward,
    read: Read,
    /// Read again after a restart: not to be reported a second time.
    replayed: bool,
}

/// A reward that was held for its decision and then not joined.
#[derive(Debug, Clone, PartialEq)]
pub struct Unjoined {
    pub offset: i64,
    pub reward: Reward,
    /// [`RewardOutcome::Late`] or [`RewardOutcome::Unknown`].
    pub outcome: RewardOutcome,
}

/// The join of one decisions partition with its rewards partition.
#[derive(Debug)]
pub struct Joiner {
    settings: JoinSettings,
    open: BTreeMap<i64, Open>,
    by_event: HashMap<String, i64>,
    held: BTreeMap<i64, Held>,
    held_by_event: HashMap<String, Vec<i64>>,
    /// Event ids closed lately: their rewards are late.
    closed: HashSet<String>,
    closed_order: VecDeque<(i64, String)>,
    unjoined: Vec<Unjoined>,
    /// The latest timestamp read from the decisions partition.
    decisions_time: i64,
    /// The latest timestamp read from the rewards partition (its running maximum).
    rewards_time: i64,
    wall_clock: i64,
    rewards_caught_up: bool,
    next_decision: i64,
    next_reward: i64,
    rewards_seen: i64,
}

impl Joiner {
    /// A joiner starting at the beginning of both partitions.
    pub fn new(settings: JoinSettings) -> Self {
        Self::resume(settings, Position { rewards_time: i64::MIN, ..Position::default() })
    }

    /// A joiner restarted from a committed position.
    pub fn resume(settings: JoinSettings, position: Position) -> Self {
        Self {
            settings,
            open: BTreeMap::new(),
            by_event: HashMap::new(),
            held: BTreeMap::new(),
            held_by_event: HashMap::new(),
            closed: HashSet::new(),
            closed_order: VecDeque::new(),
            unjoined: Vec::new(),
            decisions_time: i64::MIN,
            rewards_time: position.rewards_time,
            wall_clock: i64::MIN,
            rewards_caught_up: false,
            next_decision: position.decisions,
            next_reward: position.rewards,
            rewards_seen: position.rewards_seen.max(position.rewards),
        }
    }

    /// A decision record at `offset`. Offsets below the next expected one
    /// (redeliveries) are ignored.
    pub fn decision(&mut self, offset: i64, decision: Decision) -> DecisionOutcome {
        if offset < self.next_decision {
            return DecisionOutcome::Pending;
        }
        self.next_decision = offset + 1;
        self.decisions_time = self.decisions_time.max(decision.timestamp);
        if let Some(reason) = invalid_decision(&decision) {
            return DecisionOutcome::Rejected(reason);
        }
        if self.by_event.contains_key(&decision.event_id) || self.closed.contains(&decision.event_id) {
            return DecisionOutcome::Rejected(format!("event id {} was seen already", decision.event_id));
        }
        let deadline = decision.timestamp.saturating_add(self.settings.reward_wait_ms);
        let rewards = vec![None; decision.shown.len()];
        let held = self.held_by_event.remove(&decision.event_id).unwrap_or_default();
        self.by_event.insert(decision.event_id.clone(), offset);
        self.open.insert(offset, Open { decision, deadline, rewards, joined: Vec::new() });
        for at in held {
            if let Some(Held { reward, read, replayed }) = self.held.remove(&at) {
                let outcome = self.join(offset, &reward, read);
                if !replayed {
                    self.report(at, reward, outcome);
                }
            }
        }
        DecisionOutcome::Pending
    }

    /// A reward record at `offset`. Offsets below the next expected one
    /// (redeliveries) are ignored.
    pub fn reward(&mut self, offset: i64, reward: Reward) -> RewardOutcome {
        if offset < self.next_reward {
            return RewardOutcome::Redelivered;
        }
        self.next_reward = offset + 1;
        let read = Read { offset, time_before: self.rewards_time };
        self.rewards_time = self.rewards_time.max(reward.timestamp);
        let replayed = offset < self.rewards_seen;
        self.rewards_seen = self.rewards_seen.max(offset + 1);
        let outcome = if let Some(&at) = self.by_event.get(&reward.event_id) {
            self.join(at, &reward, read)
        } else if self.closed.contains(&reward.event_id) {
            RewardOutcome::Late
        } else {
            self.held_by_event.entry(reward.event_id.clone()).or_default().push(offset);
            self.held.insert(offset, Held { reward, read, replayed });
            RewardOutcome::Held
        };
        match outcome {
            RewardOutcome::Late | RewardOutcome::Unknown(_) if replayed => RewardOutcome::Replayed,
            outcome => outcome,
        }
    }

    /// Joins a reward to the open decision at `at`, or says why not.
    fn join(&mut self, at: i64, reward: &Reward, read: Read) -> RewardOutcome {
        let aggregation = self.settings.aggregation;
        let Some(open) = self.open.get_mut(&at) else {
            return RewardOutcome::Unknown(format!("no open decision {}", reward.event_id));
        };
        let Some(index) = open.decision.shown.iter().position(|s| s.product_id == reward.product_id) else {
            return RewardOutcome::Unknown(format!("decision {} did not show {}", reward.event_id, reward.product_id));
        };
        if !reward.reward.is_finite() {
            return RewardOutcome::Unknown("reward is not a finite number".into());
        }
        if reward.timestamp > open.deadline || read.time_before > open.deadline {
            return RewardOutcome::Late;
        }
        let key = (reward.timestamp, read.offset);
        if let Some(slot) = open.rewards.get_mut(index) {
            *slot = Some(match (*slot, aggregation) {
                (None, _) => (reward.reward, key),
                (Some((value, first)), Aggregation::Earliest) => {
                    if key < first {
                        (reward.reward, key)
                    } else {
                        (value, first)
                    }
                }
                (Some((value, first)), Aggregation::Sum) => (value + reward.reward, first),
                (Some((value, first)), Aggregation::Max) => (value.max(reward.reward), first),
            });
        }
        open.joined.push(read);
        RewardOutcome::Attached
    }

    fn report(&mut self, offset: i64, reward: Reward, outcome: RewardOutcome) {
        if matches!(outcome, RewardOutcome::Late | RewardOutcome::Unknown(_)) {
            self.unjoined.push(Unjoined { offset, reward, outcome });
        }
    }

    /// Tells the joiner the wall clock and whether the rewards partition is
    /// read to its end; only then may the clock close decisions and expire
    /// held rewards.
    pub fn advance(&mut self, now_ms: i64, rewards_caught_up: bool) {
        self.wall_clock = self.wall_clock.max(now_ms);
        self.rewards_caught_up = rewards_caught_up;
    }

    fn clock(&self) -> i64 {
        if self.rewards_caught_up {
            self.wall_clock
        } else {
            i64::MIN
        }
    }

    /// Held rewards that will not be joined: their decision came and did not
    /// take them, or can no longer come (the decisions stream, or the clock,
    /// is past their timestamp by the wait). Rewards read again after a
    /// restart are not reported again.
    pub fn take_unjoined(&mut self) -> Vec<Unjoined> {
        let horizon = self.decisions_time.max(self.clock());
        let wait = self.settings.reward_wait_ms;
        let gone: Vec<i64> =
            self.held.iter().filter(|(_, held)| held.reward.timestamp.saturating_add(wait) < horizon).map(|(at, _)| *at).collect();
        for offset in gone {
            let Some(Held { reward, replayed, .. }) = self.held.remove(&offset) else { continue };
            if let Some(list) = self.held_by_event.get_mut(&reward.event_id) {
                list.retain(|o| *o != offset);
                if list.is_empty() {
                    self.held_by_event.remove(&reward.event_id);
                }
            }
            if !replayed {
                let outcome = RewardOutcome::Unknown(format!("no decision {} within the reward wait", reward.event_id));
                self.report(offset, reward, outcome);
            }
        }
        std::mem::take(&mut self.unjoined)
    }

    /// The next decision that is complete, in offset order, with its examples.
    pub fn close_next(&mut self) -> Option<Joined> {
        let (&offset, open) = self.open.iter().next()?;
        if self.rewards_time <= open.deadline && self.clock() <= open.deadline {
            return None;
        }
        let open = self.open.remove(&offset)?;
        self.by_event.remove(&open.decision.event_id);
        self.closed.insert(open.decision.event_id.clone());
        self.closed_order.push_back((open.deadline, open.decision.event_id.clone()));
        self.forget_closed();
        Some(self.examples(offset, open))
    }

    /// Closed event ids are remembered (so their rewards count as late, not
    /// unknown) until the rewards stream is a further wait past their deadline.
    fn forget_closed(&mut self) {
        let horizon = self.rewards_time.max(self.clock());
        while let Some((deadline, _)) = self.closed_order.front() {
            if deadline.saturating_add(self.settings.reward_wait_ms) >= horizon {
                break;
            }
            if let Some((_, id)) = self.closed_order.pop_front() {
                self.closed.remove(&id);
            }
        }
    }

    fn examples(&self, offset: i64, open: Open) -> Joined {
        let Open { decision, rewards, .. } = open;
        let rewarded = rewards.iter().any(Option::is_some);
        let cutoff = match self.settings.impressions {
            Impressions::All => u32::MAX,
            Impressions::Cascade => decision
                .shown
                .iter()
                .zip(&rewards)
                .filter(|(_, reward)| reward.is_some_and(|(value, _)| value > 0.0))
                .map(|(shown, _)| shown.position)
                .max()
                .unwrap_or(u32::MAX),
        };
        let base = u64::try_from(offset).unwrap_or(0) << SEQ_SHIFT;
        let examples = decision
            .shown
            .iter()
            .zip(&rewards)
            .enumerate()
            .filter(|(_, (shown, _))| shown.position <= cutoff)
            .map(|(index, (shown, reward))| Example {
                event_id: decision.event_id.clone(),
                product_id: shown.product_id.clone(),
                reward: reward.map_or(self.settings.default_reward, |(value, _)| value),
                context: decision.context.clone(),
                position: shown.position,
                probability: shown.probability,
                timestamp: decision.timestamp,
                seq: base | index as u64,
            })
            .collect();
        Joined { event_id: decision.event_id, decision_offset: offset, examples, rewarded }
    }

    /// What to commit once everything closed so far is acknowledged: the
    /// first open decision, the first reward still needed (joined to an open
    /// decision, or held) with the running maximum before it, and how far the
    /// rewards were read.
    pub fn commit_position(&self) -> Position {
        let decisions = self.open.keys().next().copied().unwrap_or(self.next_decision);
        let needed = self
            .open
            .values()
            .flat_map(|open| open.joined.iter())
            .chain(self.held.values().map(|held| &held.read))
            .min_by_key(|read| read.offset);
        let (rewards, rewards_time) = needed.map_or((self.next_reward, self.rewards_time), |read| (read.offset, read.time_before));
        Position { decisions, rewards, rewards_time, rewards_seen: self.rewards_seen }
    }

    /// Decisions still open and rewards held.
    pub fn pending(&self) -> (usize, usize) {
        (self.open.len(), self.held.len())
    }
}

/// Why a decision cannot be joined, if it cannot.
fn invalid_decision(decision: &Decision) -> Option<String> {
    if decision.event_id.is_empty() {
        return Some("event_id is empty".into());
    }
    if decision.shown.is_empty() || decision.shown.len() > MAX_SHOWN {
        return Some(format!("shown must list 1 to {MAX_SHOWN} items, got {}", decision.shown.len()));
    }
    if !decision.context.iter().all(|v| v.is_finite()) {
        return Some("context is not finite".into());
    }
    if decision.shown.iter().any(|s| s.product_id.is_empty() || !(s.probability > 0.0 && s.probability <= 1.0)) {
        return Some("every shown item needs a product_id and a probability in (0, 1]".into());
    }
    None
}
