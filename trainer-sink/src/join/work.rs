//! What the loop does with the state in [`JoinContext`]: a record into its
//! pair's joiner (dead-lettering what cannot be joined), the clock into
//! every joiner and their closed decisions out as feedback events, and the
//! commit: checkpoints only after every example before them is
//! acknowledged.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bandit_core::event::{FeedbackEvent, Source};
use bandit_core::join::{Decision, DecisionOutcome, Joined, Reward, RewardOutcome, Unjoined};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Message, OwnedMessage, Timestamp};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::dead_letter::Rejection;
use crate::error::Result;
use crate::join::checkpoint::Checkpoint;
use crate::join::context::{JoinContext, Pair};

/// How often a pair with pending work looks where its partitions end.
const END_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// How long a commit waits for acknowledgements before trying again later.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// An example's JSON beyond its ids and context: field names and numbers
/// (each at most 24 characters), with room to spare.
const EXAMPLE_OVERHEAD_BYTES: usize = 512;

/// Counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An upper bound on the bytes (key and value) of the largest training
/// example `decision` can give: its longest product id with its event id
/// and context, as JSON, and the rest of the record's fields.
fn largest_example_bytes(decision: &Decision) -> usize {
    let longest = decision.shown.iter().map(|shown| shown.product_id.as_str()).max_by_key(|id| id.len()).unwrap_or_default();
    let mut counter = Counter(0);
    let written = serde_json::to_writer(&mut counter, &(&decision.event_id, longest, &decision.context));
    if written.is_err() {
        return usize::MAX;
    }
    counter.0 + longest.len() + EXAMPLE_OVERHEAD_BYTES
}

/// A partition's high watermark as the consumer's last fetch response gave
/// it (librdkafka's cache, `rd_kafka_get_watermark_offsets`), `None` before
/// the first fetch. Asking the broker instead (`fetch_watermarks`, a
/// ListOffsets request per partition and topic) blocked the loop for most of
/// its time once a few pairs had pending work; the fetcher refreshes this
/// value on every fetch, at least every `fetch.wait.max.ms` at the end of a
/// partition, so it is as fresh as what the loop has read.
fn fetched_end<C: rdkafka::consumer::ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: `native_ptr` is the consumer's live handle, valid while
    // `consumer` is borrowed; `topic` is NUL-terminated and outlives the
    // call; `low` and `high` are valid for writes. The function only reads
    // librdkafka's per-partition cache under its own lock.
    let error = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(consumer.client().native_ptr(), topic.as_ptr(), partition, &raw mut low, &raw mut high)
    };
    (error == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl JoinContext {
    /// One record from the decisions or the rewards topic.
    ///
    /// # Errors
    /// A dead letter or an example the producer refused.
    pub fn receive<M: Message>(&self, message: &M) -> Result<()> {
        let (partition, offset) = (message.partition(), message.offset());
        let is_decision = message.topic() == self.config.decisions_topic;
        let mut pairs = self.pairs();
        let Some(pair) = pairs.get_mut(&partition) else {
            return Ok(());
        };
        let payload = message.payload().unwrap_or_default();
        if is_decision {
            pair.next_decision = pair.next_decision.max(offset + 1);
            self.metrics.decision_read();
            let outcome = match serde_json::from_slice::<Decision>(payload) {
                Ok(decision) => {
                    // Its examples could not be produced (MSG_SIZE_TOO_LARGE):
                    // with the gapless producer that would stop the join at
                    // this decision on every start.
                    let (largest, limit) = (largest_example_bytes(&decision), self.output.max_record_bytes());
                    if largest > limit {
                        let reason = format!("its training examples would be up to {largest} bytes, over the producer's message.max.bytes ({limit})");
                        self.dead_letter(message, "TASK_PUT", "bandit.DecisionTooLarge", &reason)?;
                        self.metrics.decision_invalid();
                        return Ok(());
                    }
                    pair.joiner.decision(offset, decision)
                }
                Err(e) => {
                    self.dead_letter(message, "VALUE_CONVERTER", "bandit.InvalidDecision", &format!("invalid JSON decision: {e}"))?;
                    self.metrics.decision_invalid();
                    return Ok(());
                }
            };
            if let DecisionOutcome::Rejected(reason) = outcome {
                self.dead_letter(message, "TASK_PUT", "bandit.InvalidDecision", &reason)?;
                self.metrics.decision_invalid();
            }
        } else {
            pair.next_reward = pair.next_reward.max(offset + 1);
            self.metrics.reward_read();
            let outcome = match serde_json::from_slice::<Reward>(payload) {
                Ok(reward) => {
                    let event = (reward.event_id.clone(), reward.product_id.clone());
                    let outcome = pair.joiner.reward(offset, reward);
                    if outcome == RewardOutcome::Late {
                        self.metrics.reward_late();
                        tracing::info!(partition, offset, event_id = %event.0, product_id = %event.1, "late reward: after its decision's wait, not trained on");
                    }
                    outcome
                }
                Err(e) => {
                    self.dead_letter(message, "VALUE_CONVERTER", "bandit.InvalidReward", &format!("invalid JSON reward: {e}"))?;
                    self.metrics.reward_invalid();
                    return Ok(());
                }
            };
            if let RewardOutcome::Unknown(reason) = outcome {
                self.dead_letter(message, "TASK_PUT", "bandit.UnknownReward", &reason)?;
                self.metrics.reward_unknown();
            }
        }
        self.emit_closed(partition, pair)
    }

    fn dead_letter<M: Message>(&self, message: &M, stage: &str, class: &str, reason: &str) -> Result<()> {
        self.dlq.send(message.topic(), message, &Rejection { class, stage, message: reason })?;
        self.metrics.dead_lettered();
        tracing::debug!(topic = message.topic(), partition = message.partition(), offset = message.offset(), %reason, "dead-lettered");
        Ok(())
    }

    /// Emits every decision of the pair that is complete.
    fn emit_closed(&self, partition: i32, pair: &mut Pair) -> Result<()> {
        while let Some(joined) = pair.joiner.close_next() {
            self.emit(partition, &joined)?;
        }
        Ok(())
    }

    fn emit(&self, partition: i32, joined: &Joined) -> Result<()> {
        for example in &joined.examples {
            let event = FeedbackEvent {
                event_id: example.event_id.clone(),
                product_id: example.product_id.clone(),
                reward: example.reward,
                context_vector: example.context.clone(),
                timestamp: example.timestamp,
                position: Some(example.position),
                probability: Some(example.probability),
                source: Some(Source { partition, seq: example.seq }),
            };
            let payload = serde_json::to_vec(&event).map_err(|e| crate::SinkError::Io(e.into()))?;
            self.output.send(&self.config.feedback_topic, None, example.product_id.as_bytes(), &payload)?;
        }
        let latency = joined.examples.first().map_or(0, |example| now_ms().saturating_sub(example.timestamp));
        self.metrics.joined(joined.rewarded, joined.examples.len(), latency);
        Ok(())
    }

    /// Where each pair's partitions end, the clock, expired held rewards
    /// and decisions closed by the clock.
    ///
    /// # Errors
    /// A dead letter or an example the producer refused.
    pub fn tick(&self, consumer: &BaseConsumer<Self>) -> Result<()> {
        let now = now_ms();
        let mut pairs = self.pairs();
        let (mut open, mut held) = (0, 0);
        for (&partition, pair) in pairs.iter_mut() {
            let (decisions_pending, rewards_held) = pair.joiner.pending();
            if decisions_pending + rewards_held > 0 && pair.checked_at.is_none_or(|at| at.elapsed() >= END_CHECK_INTERVAL) {
                self.check_ends(consumer, partition, pair);
            }
            // The clock expires a held reward (its decision can no longer
            // come) only when both partitions are read to their end: while
            // the decisions lag, its decision may still be on the way.
            pair.joiner.advance(now, pair.rewards_at_end && pair.decisions_at_end);
            for unjoined in pair.joiner.take_unjoined() {
                self.report(partition, unjoined)?;
            }
            // Closing by the clock needs only the rewards read to their end.
            pair.joiner.advance(now, pair.rewards_at_end);
            self.emit_closed(partition, pair)?;
            let (decisions_pending, rewards_held) = pair.joiner.pending();
            open += decisions_pending;
            held += rewards_held;
        }
        self.metrics.set_pending(open, held);
        Ok(())
    }

    /// Where both partitions end, as of the consumer's last fetch of each
    /// (an end not known yet keeps the pair off the clock).
    fn check_ends(&self, consumer: &BaseConsumer<Self>, partition: i32, pair: &mut Pair) {
        pair.checked_at = Some(Instant::now());
        let end = |topic: &str| fetched_end(consumer, topic, partition);
        match (end(&self.config.decisions_topic), end(&self.config.rewards_topic)) {
            (Some(decisions), Some(rewards)) => {
                pair.decisions_at_end = pair.next_decision >= decisions;
                pair.rewards_at_end = pair.next_reward >= rewards;
            }
            _ => {
                pair.decisions_at_end = false;
                pair.rewards_at_end = false;
            }
        }
    }

    /// A held reward that will not be joined.
    fn report(&self, partition: i32, unjoined: Unjoined) -> Result<()> {
        let Unjoined { offset, reward, outcome } = unjoined;
        match outcome {
            RewardOutcome::Unknown(reason) => {
                let payload = serde_json::to_vec(&reward).unwrap_or_default();
                let message = OwnedMessage::new(
                    Some(payload),
                    Some(reward.event_id.clone().into_bytes()),
                    self.config.rewards_topic.clone(),
                    Timestamp::NotAvailable,
                    partition,
                    offset,
                    None,
                );
                self.dead_letter(&message, "TASK_PUT", "bandit.UnknownReward", &reason)?;
                self.metrics.reward_unknown();
            }
            RewardOutcome::Late => {
                self.metrics.reward_late();
                tracing::info!(partition, offset, event_id = %reward.event_id, product_id = %reward.product_id, "late reward: after its decision's wait, not trained on");
            }
            _ => {}
        }
        Ok(())
    }

    /// Commits every pair's position once everything before it is
    /// acknowledged: examples and dead letters first, then the checkpoints,
    /// then the group's offsets (with the checkpoint as their metadata).
    /// `Ok(false)`: the broker did not acknowledge in time; nothing was
    /// committed, try again later.
    ///
    /// # Errors
    /// A record the broker refused for good.
    pub fn commit(&self, consumer: &BaseConsumer<Self>, mode: CommitMode) -> Result<bool> {
        if !self.output.flush(ACK_TIMEOUT)? {
            tracing::warn!("examples not acknowledged yet; commit postponed");
            return Ok(false);
        }
        if !self.dlq.flush_within(ACK_TIMEOUT)? {
            tracing::warn!("dead letters not acknowledged yet; commit postponed");
            return Ok(false);
        }
        let mut pairs = self.pairs();
        let changed: Vec<(i32, bandit_core::join::Position)> = pairs
            .iter()
            .map(|(&partition, pair)| (partition, pair.joiner.commit_position()))
            .filter(|(partition, position)| pairs.get(partition).is_some_and(|pair| pair.committed != Some(*position)))
            .collect();
        if changed.is_empty() {
            return Ok(true);
        }
        for &(partition, position) in &changed {
            self.checkpoints.write(&self.output, partition, position)?;
        }
        if !self.output.flush(ACK_TIMEOUT)? {
            tracing::warn!("checkpoints not acknowledged yet; commit postponed");
            return Ok(false);
        }
        let mut tpl = TopicPartitionList::new();
        for &(partition, position) in &changed {
            if let Some(pair) = pairs.get_mut(&partition) {
                pair.committed = Some(position);
            }
            let metadata = Checkpoint::new(partition, position).to_json();
            for (topic, offset) in [(&self.config.decisions_topic, position.decisions), (&self.config.rewards_topic, position.rewards)] {
                let mut element = tpl.add_partition(topic, partition);
                element.set_offset(Offset::Offset(offset))?;
                element.set_metadata(metadata.clone());
            }
        }
        self.metrics.committed();
        tracing::debug!(?changed, "committed");
        drop(pairs);
        // The checkpoints are the truth; the group's offsets are for lag tools.
        if let Err(e) = consumer.commit(&tpl, mode) {
            tracing::warn!(error = %e, "offset commit failed (the checkpoints remain the truth)");
        }
        Ok(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use bandit_core::event::{FeedbackEvent, Source};
    use bandit_core::join::{Decision, Shown};

    use super::largest_example_bytes;

    /// The bound holds for the record the join really writes, with the
    /// longest numbers JSON can give each field, ids that need escaping,
    /// and contexts of any length.
    #[test]
    fn no_example_is_larger_than_its_decisions_bound() {
        for (dim, id_len) in [(0, 0), (1, 1), (15, 40), (300, 3), (4000, 1000)] {
            let context: Vec<f64> = (0..dim).map(|i| -2.2250738585072014e-308 * (i as f64 + 1.0)).collect();
            let id: String = "\u{1}\"é".repeat(id_len);
            let shown = |product_id: String, position| Shown { product_id, position, probability: 1.0 };
            let decision = Decision {
                event_id: format!("e{id}"),
                model: "m".into(),
                model_version: 1,
                policy: "ucb".into(),
                context: context.clone(),
                shown: vec![shown("short".into(), 0), shown(id.clone(), 1)],
                timestamp: 1,
            };
            let event = FeedbackEvent {
                event_id: decision.event_id.clone(),
                product_id: id.clone(),
                reward: -1.7976931348623157e308,
                context_vector: context,
                timestamp: i64::MIN,
                position: Some(u32::MAX >> 1),
                probability: Some(2.2250738585072014e-308),
                source: Some(Source { partition: i32::MIN, seq: u64::MAX >> 1 }),
            };
            let real = serde_json::to_vec(&event).unwrap().len() + id.len();
            let bound = largest_example_bytes(&decision);
            assert!(real <= bound, "dim {dim}, id {id_len}: {real} > {bound}");
            assert!(bound - real < 1024, "a bound far above the record: {bound} for {real}");
        }
    }
}
