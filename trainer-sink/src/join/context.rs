//! The joiner's state and the librdkafka callbacks that change it: one
//! [`Pair`] (a core [`Joiner`]) per assigned partition number, created from
//! its checkpoint when the group assigns it and committed when it is
//! revoked. Rebalances run inside `poll`, on the loop's thread.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bandit_core::join::{Joiner, Position};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;

use crate::backoff::Backoff;
use crate::context::{broker_health, client_error, lock, log_librdkafka};
use crate::dead_letter::DeadLetterQueue;
use crate::error::SinkError;
use crate::health::Health;
use crate::join::checkpoint::Checkpoints;
use crate::join::config::JoinConfig;
use crate::join::metrics::JoinMetrics;
use crate::join::output::Output;

/// How long an assignment keeps retrying to read its checkpoints.
const ASSIGN_DEADLINE: Duration = Duration::from_secs(30);

/// One partition pair: decisions p and rewards p.
#[derive(Debug)]
pub struct Pair {
    pub joiner: Joiner,
    /// The next offsets the consumer will hand out (for "read to the end").
    pub next_decision: i64,
    pub next_reward: i64,
    /// Whether each partition was read to its end at the last check.
    pub decisions_at_end: bool,
    pub rewards_at_end: bool,
    pub checked_at: Option<Instant>,
    /// The last checkpoint written (None: never).
    pub committed: Option<Position>,
}

#[derive(Debug)]
pub struct JoinContext {
    pub config: JoinConfig,
    pub pairs: Mutex<BTreeMap<i32, Pair>>,
    pub output: Output,
    pub checkpoints: Checkpoints,
    pub dlq: DeadLetterQueue,
    pub metrics: Arc<JoinMetrics>,
    pub health: Arc<Health>,
    failure: Mutex<Option<SinkError>>,
}

impl JoinContext {
    pub fn new(config: JoinConfig, metrics: Arc<JoinMetrics>, health: Arc<Health>) -> crate::Result<Self> {
        let output = Output::new(&config)?;
        let checkpoints = Checkpoints::new(&config)?;
        let dlq = DeadLetterQueue::new(&config.kafka_part(), &config.dead_letter_topic)?;
        Ok(Self { config, pairs: Mutex::new(BTreeMap::new()), output, checkpoints, dlq, metrics, health, failure: Mutex::new(None) })
    }

    pub fn pairs(&self) -> MutexGuard<'_, BTreeMap<i32, Pair>> {
        lock(&self.pairs)
    }

    pub fn fail(&self, error: SinkError) {
        lock(&self.failure).get_or_insert(error);
    }

    pub fn take_failure(&self) -> Option<SinkError> {
        lock(&self.failure).take()
    }

    /// The partition numbers of `topic` in a list.
    fn partitions_of(&self, tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
        tpl.elements_for_topic(topic).iter().map(rdkafka::topic_partition_list::TopicPartitionListElem::partition).collect()
    }

    /// Reads a pair's checkpoint, retrying while the broker does not answer.
    fn read_checkpoint(&self, partition: i32) -> crate::Result<Option<Position>> {
        let deadline = Instant::now() + ASSIGN_DEADLINE;
        let mut backoff = Backoff::default();
        loop {
            match self.checkpoints.read(partition) {
                Ok(found) => return Ok(found),
                Err(e @ SinkError::Kafka(_)) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, partition, "cannot read the checkpoint yet; retrying");
                    std::thread::sleep(backoff.next_delay());
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let (decisions, rewards) = (&self.config.decisions_topic, &self.config.rewards_topic);
        let mut numbers = self.partitions_of(tpl, decisions);
        let mut reward_numbers = self.partitions_of(tpl, rewards);
        numbers.sort_unstable();
        reward_numbers.sort_unstable();
        if numbers != reward_numbers {
            self.fail(SinkError::Config(format!(
                "assigned {decisions} partitions {numbers:?} but {rewards} partitions {reward_numbers:?}: the group must use the range assignor and both topics the same partition count"
            )));
            return;
        }
        for partition in numbers {
            let position = match self.read_checkpoint(partition) {
                Ok(position) => position,
                Err(e) => {
                    self.fail(e);
                    return;
                }
            };
            let settings = self.config.settings();
            let (joiner, start) = match position {
                Some(position) => (Joiner::resume(settings, position), position),
                None => (Joiner::new(settings), Position::default()),
            };
            for (topic, offset) in [(decisions, start.decisions), (rewards, start.rewards)] {
                if let Err(e) = tpl.set_partition_offset(topic, partition, Offset::Offset(offset)) {
                    self.fail(e.into());
                }
            }
            tracing::info!(partition, ?position, "partition pair assigned; resuming from its checkpoint");
            let pair = Pair {
                joiner,
                next_decision: start.decisions,
                next_reward: start.rewards,
                decisions_at_end: false,
                rewards_at_end: false,
                checked_at: None,
                committed: position,
            };
            self.pairs().insert(partition, pair);
        }
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(e) = result {
            self.fail(e.into());
        }
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let partitions = self.partitions_of(tpl, &self.config.decisions_topic);
        if consumer.assignment_lost() {
            tracing::warn!(?partitions, "assignment lost: dropping state without committing (the new owner resumes from the checkpoints)");
        } else if let Err(e) = self.commit_with_deadline(consumer) {
            tracing::warn!(error = %e, ?partitions, "could not commit before giving partitions up; the new owner re-emits from the last checkpoint");
        }
        {
            let mut pairs = self.pairs();
            for partition in &partitions {
                pairs.remove(partition);
            }
        }
        tracing::info!(?partitions, "partitions revoked");
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(e) = result {
            self.fail(e.into());
        }
    }

    /// A synchronous commit that waits (up to a deadline) for the broker.
    pub fn commit_with_deadline(&self, consumer: &BaseConsumer<Self>) -> crate::Result<()> {
        let deadline = Instant::now() + ASSIGN_DEADLINE;
        loop {
            if self.commit(consumer, CommitMode::Sync)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SinkError::Io(std::io::Error::other("the broker did not acknowledge the examples in time")));
            }
        }
    }
}

impl ClientContext for JoinContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_librdkafka(level, facility, message);
    }

    /// As the sink's: losing every broker makes the joiner unhealthy until
    /// one is up again.
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&self.health, &error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        broker_health(&self.health, &statistics);
    }
}

impl ConsumerContext for JoinContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.on_assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.on_revoke(consumer, tpl),
            other => {
                tracing::error!(error = ?other, "rebalance error; dropping the assignment");
                self.pairs().clear();
                let _ = consumer.unassign();
            }
        }
    }
}
