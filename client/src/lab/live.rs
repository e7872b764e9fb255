//! The live stack as a [`Recommender`]: RANK from Redis, feedback to Kafka,
//! the sink training in between.

use bandit_core::event::FeedbackEvent;

use crate::error::Result;
use crate::feedback::FeedbackProducer;
use crate::models::{Models, RankOptions};
use crate::lab::simulate::Recommender;

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
