//! `bandit export-log`: the joined decision log, read from the learning
//! loop's topics, in the JSON-lines form `bandit evaluate --decisions` reads
//! ([`crate::lab::ope::log`]): every decision with each shown item's
//! reward, joined as the join service joins them.
//!
//! The join is core's [`Joiner`] (one per partition pair, the topics being
//! co-partitioned by event id) with the service's settings: the reward wait,
//! the aggregation, the default reward. Every shown item keeps its reward
//! (impressions `all`: the log is for evaluation, and the estimators decide
//! what each position's reward means), so the export is a function of the
//! two topics, not of the order the consumer happened to read them in.
//!
//! What is read: each partition of both topics from its beginning to the
//! high watermark it had when the export reached it, partition by
//! partition; decisions come out in offset order within a partition, and
//! the partitions one after the other (with one partition, the log is the
//! topic's order, which is the order a learning candidate walks it in).
//! When a partition pair is read to its end, the wall clock closes the
//! decisions whose reward wait is over, as the service's does once the
//! rewards are caught up. A decision still inside its wait is left out
//! (rewards may still come), and so is every decision after it in its
//! partition, because the join closes decisions in offset order; they are
//! counted.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use bandit_core::join::{Decision, Impressions, JoinSettings, Joined, Joiner, Reward, RewardOutcome};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::error::{ClientError, Result};
use crate::lab::ope::log::{LoggedDecision, ShownReward};

/// What an export did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportCounts {
    /// Decisions written.
    pub exported: u64,
    /// Of those, decisions where some shown item got a reward.
    pub rewarded: u64,
    /// Decision records that are not JSON decisions, or that the join rejects.
    pub rejected_decisions: u64,
    /// Reward records that are not JSON rewards.
    pub unreadable_rewards: u64,
    /// Rewards after their decision's wait: not joined.
    pub late_rewards: u64,
    /// Rewards for no decision, or for an item it did not show.
    pub unknown_rewards: u64,
    /// Decisions left out: still inside their reward wait, or after one that is.
    pub open: u64,
}

impl ExportCounts {
    fn add(&mut self, other: &ExportCounts) {
        self.exported += other.exported;
        self.rewarded += other.rewarded;
        self.rejected_decisions += other.rejected_decisions;
        self.unreadable_rewards += other.unreadable_rewards;
        self.late_rewards += other.late_rewards;
        self.unknown_rewards += other.unknown_rewards;
        self.open += other.open;
    }
}

impl std::fmt::Display for ExportCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} decisions exported ({} with a reward); left out: {} still inside the reward wait, {} rejected decisions; rewards not joined: {} late, {} unknown, {} unreadable",
            self.exported, self.rewarded, self.open, self.rejected_decisions, self.late_rewards, self.unknown_rewards, self.unreadable_rewards
        )
    }
}

/// The join of one decisions partition with its rewards partition into log
/// lines, free of I/O: records go in with their offsets, closed decisions
/// come out in offset order.
#[derive(Debug)]
pub struct LogJoin {
    joiner: Joiner,
    /// Open decisions by offset: the join's examples lack the model, version and policy.
    decisions: HashMap<i64, Decision>,
    counts: ExportCounts,
}

impl LogJoin {
    /// A join with the service's wait, aggregation and default reward;
    /// every shown item is kept whatever `settings.impressions` says.
    #[must_use]
    pub fn new(settings: JoinSettings) -> Self {
        Self {
            joiner: Joiner::new(JoinSettings { impressions: Impressions::All, ..settings }),
            decisions: HashMap::new(),
            counts: ExportCounts::default(),
        }
    }

    /// A decision record.
    pub fn decision(&mut self, offset: i64, payload: &[u8]) {
        let Ok(decision) = serde_json::from_slice::<Decision>(payload) else {
            self.counts.rejected_decisions += 1;
            return;
        };
        let kept = decision.clone();
        match self.joiner.decision(offset, decision) {
            bandit_core::join::DecisionOutcome::Pending => {
                self.decisions.insert(offset, kept);
            }
            bandit_core::join::DecisionOutcome::Rejected(_) => self.counts.rejected_decisions += 1,
        }
    }

    /// A reward record.
    pub fn reward(&mut self, offset: i64, payload: &[u8]) {
        let Ok(reward) = serde_json::from_slice::<Reward>(payload) else {
            self.counts.unreadable_rewards += 1;
            return;
        };
        match self.joiner.reward(offset, reward) {
            RewardOutcome::Late => self.counts.late_rewards += 1,
            RewardOutcome::Unknown(_) => self.counts.unknown_rewards += 1,
            RewardOutcome::Attached | RewardOutcome::Held | RewardOutcome::Redelivered | RewardOutcome::Replayed => {}
        }
    }

    /// The decisions closed so far, in offset order.
    pub fn closed(&mut self, out: &mut Vec<LoggedDecision>) {
        while let Some(joined) = self.joiner.close_next() {
            if let Some(line) = self.line(joined) {
                out.push(line);
            }
        }
        self.count_unjoined();
    }

    /// Both partitions are read to their end: the clock `now_ms` closes
    /// what it can; returns the counts (what is still open is left out).
    pub fn finish(&mut self, now_ms: i64, out: &mut Vec<LoggedDecision>) -> ExportCounts {
        self.joiner.advance(now_ms, true);
        self.closed(out);
        self.counts.open = self.joiner.pending().0 as u64;
        self.counts
    }

    fn count_unjoined(&mut self) {
        for unjoined in self.joiner.take_unjoined() {
            match unjoined.outcome {
                RewardOutcome::Late => self.counts.late_rewards += 1,
                _ => self.counts.unknown_rewards += 1,
            }
        }
    }

    /// The log line of a closed decision: its shown items with their rewards.
    fn line(&mut self, joined: Joined) -> Option<LoggedDecision> {
        let decision = self.decisions.remove(&joined.decision_offset)?;
        // Impressions `all`: one example per shown item, in the order shown.
        let shown = decision
            .shown
            .into_iter()
            .enumerate()
            .map(|(index, shown)| {
                let reward = joined.examples.get(index).filter(|e| e.product_id == shown.product_id).map_or(f64::NAN, |e| e.reward);
                ShownReward { shown, reward, marginal: None }
            })
            .collect();
        self.counts.exported += 1;
        self.counts.rewarded += u64::from(joined.rewarded);
        Some(LoggedDecision {
            event_id: decision.event_id,
            model: decision.model,
            model_version: decision.model_version,
            policy: decision.policy,
            context: decision.context,
            shown,
            timestamp: decision.timestamp,
        })
    }
}

/// Where the topics are.
#[derive(Debug, Clone)]
pub struct Topics<'a> {
    pub brokers: &'a str,
    pub decisions: &'a str,
    pub rewards: &'a str,
    /// librdkafka properties (`-X`), e.g. SASL.
    pub properties: &'a BTreeMap<String, String>,
}

/// Reads both topics from their beginning to their current end, joins them
/// and writes the log to `out`, one JSON line per decision. `timeout`
/// bounds the wait for metadata and for any record while some are still due.
///
/// # Errors
/// [`ClientError::Kafka`] for an unreachable broker, a missing topic, topics
/// with different partition counts, or no progress within `timeout`; write errors.
pub fn export(topics: &Topics<'_>, settings: JoinSettings, timeout: Duration, out: &mut impl Write) -> Result<ExportCounts> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", topics.brokers)
        .set("group.id", format!("bandit-export-log-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    for (key, value) in topics.properties {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config.create()?;
    let partitions = partition_count(&consumer, topics.brokers, topics.decisions, timeout)?;
    let reward_partitions = partition_count(&consumer, topics.brokers, topics.rewards, timeout)?;
    if partitions != reward_partitions {
        return Err(ClientError::Kafka(format!(
            "topics '{}' ({partitions} partitions) and '{}' ({reward_partitions}) are not co-partitioned",
            topics.decisions, topics.rewards
        )));
    }
    let mut counts = ExportCounts::default();
    for partition in 0..partitions {
        let part = export_partition(&consumer, topics, partition, settings, timeout, out)?;
        counts.add(&part);
    }
    out.flush().map_err(ClientError::Io)?;
    Ok(counts)
}

fn partition_count(consumer: &BaseConsumer, brokers: &str, topic: &str, timeout: Duration) -> Result<i32> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| ClientError::Kafka(format!("no answer from the brokers {brokers} about topic '{topic}' ({e})")))?;
    match metadata.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            i32::try_from(t.partitions().len()).map_err(|_| ClientError::Kafka(format!("topic '{topic}' has too many partitions")))
        }
        _ => Err(ClientError::Kafka(format!("topic '{topic}' does not exist on the brokers {brokers}"))),
    }
}

/// One partition pair, read to the high watermarks it has now.
fn export_partition(
    consumer: &BaseConsumer,
    topics: &Topics<'_>,
    partition: i32,
    settings: JoinSettings,
    timeout: Duration,
    out: &mut impl Write,
) -> Result<ExportCounts> {
    let watermarks = |topic: &str| {
        consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|e| ClientError::Kafka(format!("no watermarks for '{topic}' partition {partition} from {} ({e})", topics.brokers)))
    };
    let (decisions_low, decisions_end) = watermarks(topics.decisions)?;
    let (rewards_low, rewards_end) = watermarks(topics.rewards)?;
    // Where each topic's next record is; the partition is read when both reach their end.
    let mut next = [decisions_low, rewards_low];
    let ends = [decisions_end, rewards_end];
    let mut join = LogJoin::new(settings);
    let mut lines = Vec::new();
    if next.iter().zip(&ends).any(|(n, e)| n < e) {
        let mut assignment = TopicPartitionList::new();
        for topic in [topics.decisions, topics.rewards] {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let mut progress = Instant::now();
        while next.iter().zip(&ends).any(|(n, e)| n < e) {
            if progress.elapsed() > timeout {
                return Err(ClientError::Kafka(format!(
                    "no record within {} s from partition {partition} of '{}' (at {} of {}) and '{}' (at {} of {})",
                    timeout.as_secs_f64(),
                    topics.decisions,
                    next[0],
                    ends[0],
                    topics.rewards,
                    next[1],
                    ends[1]
                )));
            }
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                // Past records that are never delivered (a transaction's markers, compacted gaps).
                if let Ok(positions) = consumer.position() {
                    for (at, topic) in next.iter_mut().zip([topics.decisions, topics.rewards]) {
                        if let Some(rdkafka::Offset::Offset(position)) = positions.find_partition(topic, partition).map(|p| p.offset()) {
                            *at = (*at).max(position);
                        }
                    }
                }
                continue;
            };
            let message = message?;
            progress = Instant::now();
            let which = usize::from(message.topic() != topics.decisions);
            let (Some(end), Some(at)) = (ends.get(which), next.get_mut(which)) else { continue };
            if message.offset() >= *end {
                continue;
            }
            *at = message.offset() + 1;
            let payload = message.payload().unwrap_or_default();
            if which == 0 {
                join.decision(message.offset(), payload);
            } else {
                join.reward(message.offset(), payload);
            }
            join.closed(&mut lines);
            write_lines(&mut lines, out)?;
        }
    }
    let counts = join.finish(crate::decision_log::now_ms(), &mut lines);
    write_lines(&mut lines, out)?;
    Ok(counts)
}

fn write_lines(lines: &mut Vec<LoggedDecision>, out: &mut impl Write) -> Result<()> {
    for line in lines.drain(..) {
        serde_json::to_writer(&mut *out, &line).map_err(|e| ClientError::Input(format!("writing the log: {e}")))?;
        out.write_all(b"\n").map_err(ClientError::Io)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::float_cmp)]
mod tests {
    use super::*;
    use bandit_core::join::Aggregation;

    fn settings() -> JoinSettings {
        JoinSettings { reward_wait_ms: 100, aggregation: Aggregation::Max, default_reward: -0.5, impressions: Impressions::Cascade }
    }

    fn decision(id: &str, at: i64, items: &[&str]) -> Vec<u8> {
        let shown: Vec<String> = items
            .iter()
            .zip(0..)
            .map(|(p, k)| format!(r#"{{"product_id":"{p}","position":{k},"probability":0.5}}"#))
            .collect();
        format!(r#"{{"event_id":"{id}","model":"m","model_version":3,"policy":"egreedy:0.1","context":[1.0,2.0],"shown":[{}],"timestamp":{at}}}"#, shown.join(","))
            .into_bytes()
    }

    fn reward(id: &str, product: &str, value: f64, at: i64) -> Vec<u8> {
        format!(r#"{{"event_id":"{id}","product_id":"{product}","reward":{value},"timestamp":{at}}}"#).into_bytes()
    }

    /// Two decisions of two items; rewards: a max of two for e1/a, one
    /// late for e1/b (after 1000 + 100), none for e2 (default −0.5 on both,
    /// cascade impressions notwithstanding), one unknown; a third decision
    /// inside its wait at the clock's time is left out.
    #[test]
    fn lines_carry_every_item_with_its_joined_or_default_reward() {
        let mut join = LogJoin::new(settings());
        join.decision(0, &decision("e1", 1000, &["a", "b"]));
        join.decision(1, &decision("e2", 1050, &["c", "a"]));
        join.decision(2, b"not json");
        join.decision(3, &decision("e3", 5000, &["a"]));
        join.reward(0, &reward("e1", "a", 0.25, 1010));
        join.reward(1, &reward("e1", "a", 1.0, 1020));
        join.reward(2, &reward("zz", "a", 1.0, 1030));
        join.reward(3, &reward("e1", "b", 1.0, 1101));
        let mut lines = Vec::new();
        join.closed(&mut lines);
        let counts = join.finish(5050, &mut lines);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].event_id, "e1");
        assert_eq!(lines[0].model_version, 3);
        assert_eq!(lines[0].policy, "egreedy:0.1");
        assert_eq!(lines[0].shown.iter().map(|s| s.reward).collect::<Vec<_>>(), [1.0, -0.5]);
        assert_eq!(lines[1].shown.iter().map(|s| (s.shown.product_id.as_str(), s.reward)).collect::<Vec<_>>(), [("c", -0.5), ("a", -0.5)]);
        assert_eq!(
            counts,
            ExportCounts { exported: 2, rewarded: 1, rejected_decisions: 1, unreadable_rewards: 0, late_rewards: 1, unknown_rewards: 1, open: 1 }
        );
    }
}
