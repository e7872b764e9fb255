//! The learning loop, the shop's side: after a RANK with an event id, the
//! decision (what was shown, where, with what probability, by which model
//! version, for which context) goes to the `decisions` topic; later, what the
//! user did goes to the `rewards` topic as `(event id, product, value)`. The
//! join (`bandit-join`) pairs them by event id and writes the training
//! examples the trainer reads, so the shop never keeps or resends a context.
//!
//! Both topics are keyed by `event_id` and written by producers with the
//! same explicit `partitioner` ([`PARTITIONER`], librdkafka's default:
//! CRC32 of the key), so a decision and its rewards land on the same
//! partition number whenever the two topics have the same partition count,
//! which [`DecisionLog::check_topics`] verifies. A `-X partitioner=…`
//! property applies to both producers alike. The events are
//! [`bandit_core::join::Decision`] and [`bandit_core::join::Reward`] as JSON:
//! the contract the README documents and the join reads.

use std::collections::BTreeMap;
use std::time::Duration;

use bandit_core::join::{Decision, Reward, Shown};
use bandit_core::policy::Policy;

use crate::error::{ClientError, Result};
use crate::feedback::{DeliveryReport, FeedbackProducer};
use crate::models::{Decided, Models, RankOptions};

/// The partitioner both topics are written with unless a property says
/// otherwise: librdkafka's default (CRC32 of the key; Python's
/// confluent-kafka and every librdkafka client have it too). A Java
/// producer's default is murmur2: set `partitioner=murmur2_random` on every
/// producer of both topics to share them with one.
pub const PARTITIONER: &str = "consistent_random";

/// The topics' default names.
pub const DECISIONS_TOPIC: &str = "decisions";
pub const REWARDS_TOPIC: &str = "rewards";

/// Producers for the `decisions` and `rewards` topics.
#[derive(Debug)]
pub struct DecisionLog {
    decisions: FeedbackProducer,
    rewards: FeedbackProducer,
    topics: (String, String),
}

/// The policy as BANDIT.RANK's POLICY and the decisions log spell it:
/// `ucb`, `ts`, `egreedy:<ε>`, `softmax:<τ>` (parsed back by `Policy`'s `FromStr`).
#[must_use]
pub fn policy_text(policy: Policy) -> String {
    match policy {
        Policy::EpsilonGreedy { epsilon } => format!("egreedy:{}", bandit_core::number::Shortest(epsilon)),
        Policy::Softmax { temperature } => format!("softmax:{}", bandit_core::number::Shortest(temperature)),
        other => other.name().to_owned(),
    }
}

/// Unix milliseconds now.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The decision event of a RANK reply: every placed item with its position
/// (0 is the top) and its probability.
///
/// # Errors
/// [`ClientError::Input`] for an empty event id or a probability that is
/// not in (0, 1] (the join refuses such a decision).
pub fn decision_event(event_id: &str, model: &str, policy: Policy, context: &[f64], decided: &Decided, timestamp: i64) -> Result<Decision> {
    if event_id.is_empty() {
        return Err(ClientError::Input("the event id is empty".into()));
    }
    let shown = decided
        .items
        .iter()
        .zip(0u32..)
        .map(|(item, position)| {
            if item.probability > 0.0 && item.probability <= 1.0 {
                Ok(Shown { product_id: item.id.clone(), position, probability: item.probability })
            } else {
                Err(ClientError::Input(format!("{} at position {position} has probability {}, not in (0, 1]", item.id, item.probability)))
            }
        })
        .collect::<Result<_>>()?;
    Ok(Decision {
        event_id: event_id.to_owned(),
        model: model.to_owned(),
        model_version: decided.version,
        policy: policy_text(policy),
        context: context.to_vec(),
        shown,
        timestamp,
    })
}

impl DecisionLog {
    /// Producers for `decisions_topic` and `rewards_topic` on `brokers`,
    /// with extra librdkafka properties (the same for both), partitioned by
    /// [`PARTITIONER`] unless the properties name another.
    ///
    /// # Errors
    /// When librdkafka refuses the configuration.
    pub fn new(brokers: &str, decisions_topic: &str, rewards_topic: &str, properties: &BTreeMap<String, String>) -> Result<Self> {
        let mut properties = properties.clone();
        properties.entry("partitioner".to_owned()).or_insert_with(|| PARTITIONER.to_owned());
        Ok(Self {
            decisions: FeedbackProducer::new(brokers, decisions_topic, &properties)?.naming_records("decisions"),
            rewards: FeedbackProducer::new(brokers, rewards_topic, &properties)?.naming_records("rewards"),
            topics: (decisions_topic.to_owned(), rewards_topic.to_owned()),
        })
    }

    /// Checks, within `timeout` each, that both topics exist with the same
    /// number of partitions (the join reads partition p of both together);
    /// returns that number.
    ///
    /// # Errors
    /// [`ClientError::Kafka`] naming the topics.
    pub fn check_topics(&self, timeout: Duration) -> Result<usize> {
        let decisions = self.decisions.check_topic(timeout)?;
        let rewards = self.rewards.check_topic(timeout)?;
        if decisions != rewards {
            let (d, r) = &self.topics;
            return Err(ClientError::Kafka(format!(
                "topic '{d}' has {decisions} partitions and topic '{r}' {rewards}: the join reads them co-partitioned by event id, so they need the same number"
            )));
        }
        Ok(decisions)
    }

    /// Queues a decision, keyed by its event id.
    ///
    /// # Errors
    /// When it cannot be queued.
    pub fn publish_decision(&self, decision: &Decision) -> Result<()> {
        let payload = serde_json::to_vec(decision).map_err(|e| ClientError::Input(e.to_string()))?;
        self.decisions.send_raw(&decision.event_id, &payload)
    }

    /// Ranks with [`Models::decide`] under `policy` for `event_id` and
    /// queues the decision at once; returns it.
    ///
    /// # Errors
    /// As [`Models::decide`], [`decision_event`] and [`Self::publish_decision`].
    pub fn decide(
        &self,
        models: &mut Models,
        model: &str,
        context: &[f64],
        options: &RankOptions<'_>,
        policy: Policy,
        event_id: &str,
    ) -> Result<Decision> {
        if event_id.is_empty() {
            return Err(ClientError::Input("the event id is empty".into()));
        }
        let decided = models.decide(model, context, options, policy, Some(event_id))?;
        let decision = decision_event(event_id, model, policy, context, &decided, now_ms())?;
        self.publish_decision(&decision)?;
        Ok(decision)
    }

    /// Queues a reward event, keyed by its event id.
    ///
    /// # Errors
    /// An empty event or product id, a value that is not finite; when it
    /// cannot be queued.
    pub fn publish_reward(&self, reward: &Reward) -> Result<()> {
        if reward.event_id.is_empty() || reward.product_id.is_empty() {
            return Err(ClientError::Input("a reward needs an event id and a product id".into()));
        }
        if !reward.reward.is_finite() {
            return Err(ClientError::Input(format!("the reward {} is not a finite number", reward.reward)));
        }
        let payload = serde_json::to_vec(reward).map_err(|e| ClientError::Input(e.to_string()))?;
        self.rewards.send_raw(&reward.event_id, &payload)
    }

    /// Queues `value` as the reward of `product_id` in the decision
    /// `event_id`, timestamped now.
    ///
    /// # Errors
    /// As [`Self::publish_reward`].
    pub fn reward(&self, event_id: &str, product_id: &str, value: f64) -> Result<()> {
        self.publish_reward(&Reward { event_id: event_id.to_owned(), product_id: product_id.to_owned(), reward: value, timestamp: now_ms() })
    }

    /// Waits for every queued decision and reward; fails if any was not delivered.
    ///
    /// # Errors
    /// [`ClientError::Kafka`] naming the topic and the brokers.
    pub fn flush(&self, timeout: Duration) -> Result<(DeliveryReport, DeliveryReport)> {
        Ok((self.decisions.flush(timeout)?, self.rewards.flush(timeout)?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::models::Placement;

    fn decided() -> Decided {
        Decided {
            version: 7,
            items: vec![
                Placement { id: "40".into(), score: 1.5, probability: 0.9333333333333333 },
                Placement { id: "12".into(), score: 0.8, probability: 0.05 },
            ],
        }
    }

    /// The JSON is the README's contract, field by field.
    #[test]
    fn a_decision_is_the_documented_json() {
        let decision = decision_event("e-1", "shop", Policy::EpsilonGreedy { epsilon: 0.1 }, &[1.0, 0.5], &decided(), 1_700_000_000_123).unwrap();
        let json: serde_json::Value = serde_json::to_value(&decision).unwrap();
        let want = serde_json::json!({
            "event_id": "e-1", "model": "shop", "model_version": 7, "policy": "egreedy:0.1",
            "context": [1.0, 0.5],
            "shown": [
                {"product_id": "40", "position": 0, "probability": 0.9333333333333333},
                {"product_id": "12", "position": 1, "probability": 0.05}
            ],
            "timestamp": 1_700_000_000_123_i64
        });
        assert_eq!(json, want);
        let reward = Reward { event_id: "e-1".into(), product_id: "12".into(), reward: 1.0, timestamp: 5 };
        assert_eq!(serde_json::to_value(&reward).unwrap(), serde_json::json!({"event_id": "e-1", "product_id": "12", "reward": 1.0, "timestamp": 5}));
    }

    #[test]
    fn policies_are_spelled_as_rank_takes_them_and_parse_back() {
        for (policy, text) in [
            (Policy::Ucb, "ucb"),
            (Policy::Thompson, "ts"),
            (Policy::EpsilonGreedy { epsilon: 0.1 }, "egreedy:0.1"),
            (Policy::Softmax { temperature: 0.05 }, "softmax:0.05"),
        ] {
            assert_eq!(policy_text(policy), text);
            assert_eq!(text.parse::<Policy>().unwrap(), policy);
        }
    }

    #[test]
    fn bad_decisions_and_rewards_are_refused_before_kafka() {
        let mut bad = decided();
        bad.items[1].probability = f64::NAN;
        assert!(decision_event("e", "m", Policy::Thompson, &[1.0], &bad, 0).unwrap_err().to_string().contains("12 at position 1"));
        assert!(decision_event("", "m", Policy::Ucb, &[1.0], &decided(), 0).is_err());
        let log = DecisionLog::new("127.0.0.1:1", "decisions", "rewards", &BTreeMap::new()).unwrap();
        assert!(log.reward("", "p", 1.0).is_err());
        assert!(log.reward("e", "", 1.0).is_err());
        assert!(log.reward("e", "p", f64::INFINITY).is_err());
    }

    #[test]
    fn an_undelivered_decision_names_the_topic() {
        let log = DecisionLog::new("127.0.0.1:1", "decisions", "rewards", &BTreeMap::new()).unwrap();
        let decision = decision_event("e", "m", Policy::Ucb, &[1.0], &decided(), 0).unwrap();
        log.publish_decision(&decision).unwrap();
        let error = log.flush(Duration::from_millis(300)).unwrap_err().to_string();
        assert!(error.contains("decisions not delivered to topic 'decisions'"), "{error}");
    }
}
