//! Where a restarted joiner starts: the [`Position`] of each partition pair,
//! committed only after every example before it was acknowledged.
//!
//! Kafka's standard place for it is the offset commit: the two offsets, and
//! the rest (the rewards' running maximum timestamp, how far rewards were
//! reported) in the commit's metadata string. The joiner commits that way
//! (so lag tools and Kafka's own tooling see its progress), but tansu 0.6
//! stores the offsets and drops the metadata (its storage engines keep
//! `committed_offset` alone). So the whole position is also written, as
//! JSON, to partition p of the state topic (a plain produce, any broker),
//! and that record is what an assignment reads back: the last record of the
//! partition. Any acknowledged checkpoint is a valid start (everything
//! before it was acknowledged); a newer one only re-emits less.

use std::time::{Duration, Instant};

use bandit_core::join::Position;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SinkError};
use crate::join::config::JoinConfig;
use crate::join::output::Output;
use crate::kafka_config::client_config;

const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The state topic's record (and the offset commit's metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The decisions (and rewards) partition.
    pub partition: i32,
    pub decisions: i64,
    pub rewards: i64,
    pub rewards_time: i64,
    pub rewards_seen: i64,
}

impl Checkpoint {
    pub fn new(partition: i32, position: Position) -> Self {
        let Position { decisions, rewards, rewards_time, rewards_seen } = position;
        Self { partition, decisions, rewards, rewards_time, rewards_seen }
    }

    pub fn position(&self) -> Position {
        Position { decisions: self.decisions, rewards: self.rewards, rewards_time: self.rewards_time, rewards_seen: self.rewards_seen }
    }

    pub fn to_json(self) -> String {
        serde_json::to_string(&self).unwrap_or_default()
    }
}

/// The state topic's record: a checkpoint and whose it is.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    checkpoint: Checkpoint,
    /// `<group>/<decisions topic>`: a state topic shared by two joins (or
    /// read after the decisions topic was renamed) is refused rather than
    /// resumed from another stream's offsets.
    #[serde(default)]
    stream: String,
}

/// Reads and writes checkpoints.
pub struct Checkpoints {
    topic: String,
    stream: String,
    reader: BaseConsumer,
}

impl std::fmt::Debug for Checkpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoints").field("topic", &self.topic).finish()
    }
}

impl Checkpoints {
    /// # Errors
    /// When librdkafka refuses the configuration.
    pub fn new(config: &JoinConfig) -> Result<Self> {
        // A reader outside the group: it is assigned one partition at a
        // time and never commits.
        // A consumer: the user's consumer properties (TLS, SASL, fetch.*)
        // apply, producer ones (batch.num.messages) do not.
        let reader = client_config(&config.kafka_part(), true)
            .set("statistics.interval.ms", "0")
            .set("group.id", format!("{}-checkpoint-reader", config.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()?;
        Ok(Self { topic: config.state_topic.clone(), stream: format!("{}/{}", config.group_id, config.decisions_topic), reader })
    }

    /// Queues partition `partition`'s checkpoint on `output` (the caller
    /// flushes it before it counts).
    ///
    /// # Errors
    /// When the producer refuses the record.
    pub fn write(&self, output: &Output, partition: i32, position: Position) -> Result<()> {
        let record = Record { checkpoint: Checkpoint::new(partition, position), stream: self.stream.clone() };
        let record = serde_json::to_vec(&record).map_err(|e| SinkError::Config(format!("checkpoint: {e}")))?;
        output.send(&self.topic, Some(partition), partition.to_string().as_bytes(), &record)
    }

    /// The last checkpoint of a partition pair, `None` for a pair never
    /// committed.
    ///
    /// # Errors
    /// Kafka failures, a checkpoint that does not read back, or one for
    /// another partition (the state topic is shared with something else).
    pub fn read(&self, partition: i32) -> Result<Option<Position>> {
        let (low, high) = self.reader.fetch_watermarks(&self.topic, partition, READ_TIMEOUT)?;
        if high <= low {
            return Ok(None);
        }
        let last = high - 1;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(last))?;
        self.reader.assign(&tpl)?;
        let deadline = Instant::now() + READ_TIMEOUT;
        let found = loop {
            match self.reader.poll(Duration::from_millis(100)) {
                Some(Ok(message)) if message.partition() == partition && message.offset() == last => {
                    break serde_json::from_slice::<Record>(message.payload().unwrap_or_default())
                        .map_err(|e| SinkError::Config(format!("{}/{partition}@{last} is not a checkpoint: {e}", self.topic)));
                }
                Some(Ok(_)) | None => {}
                Some(Err(e)) => tracing::debug!(error = %e, "reading a checkpoint"),
            }
            if Instant::now() >= deadline {
                break Err(SinkError::Config(format!("cannot read the checkpoint {}/{partition}@{last}", self.topic)));
            }
        };
        self.reader.unassign()?;
        found?.position_for(&self.topic, &self.stream, partition).map(Some)
    }
}

impl Record {
    /// The position, if this record is `stream`'s checkpoint of `partition`.
    fn position_for(self, topic: &str, stream: &str, partition: i32) -> Result<Position> {
        if self.stream != stream {
            return Err(SinkError::Config(format!(
                "{topic}/{partition} holds a checkpoint of {:?}, not of this join ({stream:?}: group/decisions topic): the state topic must be this join's alone",
                self.stream
            )));
        }
        if self.checkpoint.partition != partition {
            return Err(SinkError::Config(format!(
                "{topic}/{partition} holds a checkpoint of partition {}: the state topic must be this join's alone",
                self.checkpoint.partition
            )));
        }
        Ok(self.checkpoint.position())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_resumed_only_by_its_own_join_and_partition() {
        let text = r#"{"partition": 2, "decisions": 40, "rewards": 31, "rewards_time": 1700, "rewards_seen": 33, "stream": "shop-join/decisions"}"#;
        let record = || serde_json::from_str::<Record>(text).unwrap();
        let position = record().position_for("join-state", "shop-join/decisions", 2).unwrap();
        assert_eq!(position, Position { decisions: 40, rewards: 31, rewards_time: 1700, rewards_seen: 33 });
        let other_group = record().position_for("join-state", "other/decisions", 2).unwrap_err().to_string();
        assert!(other_group.contains("\"shop-join/decisions\", not of this join (\"other/decisions\""), "{other_group}");
        let other_topic = record().position_for("join-state", "shop-join/decisions-v2", 2).unwrap_err().to_string();
        assert!(other_topic.contains("must be this join's alone"), "{other_topic}");
        let other_partition = record().position_for("join-state", "shop-join/decisions", 3).unwrap_err().to_string();
        assert!(other_partition.contains("holds a checkpoint of partition 2"), "{other_partition}");
        // What the writer produces reads back.
        let written = serde_json::to_string(&Record { checkpoint: Checkpoint::new(2, position), stream: "shop-join/decisions".into() }).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&written).unwrap().position_for("s", "shop-join/decisions", 2).unwrap(), position);
    }
}
