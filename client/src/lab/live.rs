//! The live stack as a [`Recommender`]: RANK from Redis, the sink training
//! from Kafka. Two ways to close the loop:
//! - [`LoopStack`] (the default of `bandit simulate`): RANK with an event id
//!   under a randomised policy, the decision to the `decisions` topic, only
//!   clicks to the `rewards` topic; bandit-join turns them into feedback.
//! - [`LiveStack`] (`--direct`): feedback events with their context straight
//!   to the feedback topic, as a shop did before the learning loop.

use bandit_core::event::FeedbackEvent;
use bandit_core::policy::Policy;

use crate::decision_log::DecisionLog;
use crate::error::{ClientError, Result};
use crate::feedback::FeedbackProducer;
use crate::lab::simulate::Recommender;
use crate::models::{Models, RankOptions};

/// Ranks with BANDIT.RANK over a candidate list and reports to Kafka.
#[derive(Debug)]
pub struct LiveStack {
    pub models: Models,
    pub producer: FeedbackProducer,
    pub model: String,
    pub candidates: Vec<String>,
}

impl Recommender for LiveStack {
    fn recommend(&mut self, context: &[f64], k: usize) -> Result<Vec<String>> {
        let options = RankOptions { candidates: Some(&self.candidates), top_k: Some(k), alpha: None };
        Ok(self.models.rank(&self.model, context, &options)?.into_iter().map(|r| r.id).collect())
    }

    fn feedback(&mut self, event: FeedbackEvent) -> Result<()> {
        self.producer.send(&event)
    }
}

/// The shop on the learning loop: every recommendation is a logged decision
/// with event id `<prefix>-<n>`; a reward is for the last one.
#[derive(Debug)]
pub struct LoopStack {
    pub models: Models,
    pub log: DecisionLog,
    pub model: String,
    pub candidates: Vec<String>,
    pub policy: Policy,
    /// Unique per run (the event ids of two runs must differ: the join
    /// refuses a second decision with an open event id).
    pub prefix: String,
    decisions: u64,
    last: Option<String>,
}

impl LoopStack {
    #[must_use]
    pub fn new(models: Models, log: DecisionLog, model: String, candidates: Vec<String>, policy: Policy, prefix: String) -> Self {
        Self { models, log, model, candidates, policy, prefix, decisions: 0, last: None }
    }

    /// Decisions logged so far.
    #[must_use]
    pub fn decisions(&self) -> u64 {
        self.decisions
    }
}

impl Recommender for LoopStack {
    fn recommend(&mut self, context: &[f64], k: usize) -> Result<Vec<String>> {
        self.decisions += 1;
        let event_id = format!("{}-{}", self.prefix, self.decisions);
        let options = RankOptions { candidates: Some(&self.candidates), top_k: Some(k), alpha: None };
        let decision = self.log.decide(&mut self.models, &self.model, context, &options, self.policy, &event_id)?;
        self.last = Some(event_id);
        Ok(decision.shown.into_iter().map(|s| s.product_id).collect())
    }

    fn feedback(&mut self, _: FeedbackEvent) -> Result<()> {
        Err(ClientError::Simulation("on the learning loop the shop sends rewards, never a context".into()))
    }

    fn reward(&mut self, product_id: &str, reward: f64) -> Result<()> {
        let event_id = self.last.as_deref().ok_or_else(|| ClientError::Simulation("a reward before any decision".into()))?;
        self.log.reward(event_id, product_id, reward)
    }
}
