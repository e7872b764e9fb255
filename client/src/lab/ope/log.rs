//! The joined decision log: one JSON line per decision, the `decisions`
//! topic's event (`bandit_core::join::Decision`) with each shown item's
//! reward added:
//!
//! ```json
//! {"event_id":"e1","model":"shop","model_version":0,"policy":"egreedy:0.1",
//!  "context":[0.5,…],"shown":[{"product_id":"41","position":0,"probability":0.91,"reward":1.0}],
//!  "timestamp":1767225600000}
//! ```
//!
//! `probability` is the probability that the logging policy placed the item
//! at its position given the items above it (BANDIT.RANK … WITHPROBS);
//! `reward` is the joined reward (the join's default reward when none came).
//! An optional `marginal` (the logger's probability of the item at its
//! position, whatever is above) serves position-wise IPS on slates.

use std::io::BufRead;
use std::path::PathBuf;

use bandit_core::join::{Decision, Shown};
use serde::{Deserialize, Serialize};

use crate::error::{ClientError, Result};

/// One shown item with its reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShownReward {
    #[serde(flatten)]
    pub shown: Shown,
    pub reward: f64,
    /// The probability that the logging policy placed this item at this
    /// position whatever it placed above (`probability` is given the items
    /// above). Optional: the simulator writes it for slates; BANDIT.RANK
    /// does not return it, so logs from the topics lack it. Position-wise
    /// IPS needs it below the top (at the top it is `probability`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marginal: Option<f64>,
}

impl ShownReward {
    /// The logged marginal probability of the item at its position, when known.
    #[must_use]
    pub fn marginal(&self) -> Option<f64> {
        if self.shown.position == 0 {
            Some(self.shown.probability)
        } else {
            self.marginal.filter(|m| *m > 0.0 && *m <= 1.0)
        }
    }
}

/// One line of the joined log: the decision contract plus rewards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedDecision {
    pub event_id: String,
    pub model: String,
    pub model_version: u64,
    pub policy: String,
    pub context: Vec<f64>,
    pub shown: Vec<ShownReward>,
    /// Unix milliseconds.
    pub timestamp: i64,
}

impl LoggedDecision {
    /// The decision as the `decisions` topic carries it (without rewards).
    #[must_use]
    pub fn decision(&self) -> Decision {
        Decision {
            event_id: self.event_id.clone(),
            model: self.model.clone(),
            model_version: self.model_version,
            policy: self.policy.clone(),
            context: self.context.clone(),
            shown: self.shown.iter().map(|s| s.shown.clone()).collect(),
            timestamp: self.timestamp,
        }
    }

    /// The top item (position 0): the action of a top-1 decision.
    #[must_use]
    pub fn top(&self) -> Option<&ShownReward> {
        self.shown.iter().find(|s| s.shown.position == 0)
    }
}

/// Where a log is read from; the evaluator reads it twice (the reward model
/// first, then the candidates), so memory stays bounded by one line.
#[derive(Debug, Clone)]
pub enum LogSource {
    File(PathBuf),
    Text(String),
}

impl LogSource {
    /// Calls `each` with every decision in order.
    ///
    /// # Errors
    /// [`ClientError::Input`] naming the line that is not a decision, or that
    /// has no item at position 0 with a probability in (0, 1]; `each`'s errors.
    pub fn for_each(&self, mut each: impl FnMut(&LoggedDecision) -> Result<()>) -> Result<usize> {
        let reader: Box<dyn BufRead> = match self {
            LogSource::File(path) => Box::new(std::io::BufReader::new(
                std::fs::File::open(path).map_err(|e| ClientError::Input(format!("{}: {e}", path.display())))?,
            )),
            LogSource::Text(text) => Box::new(std::io::Cursor::new(text.as_bytes())),
        };
        let mut count = 0;
        for (number, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| ClientError::Input(format!("line {}: {e}", number + 1)))?;
            if line.trim().is_empty() {
                continue;
            }
            let decision: LoggedDecision =
                serde_json::from_str(&line).map_err(|e| ClientError::Input(format!("line {}: not a joined decision: {e}", number + 1)))?;
            match decision.top() {
                Some(top) if top.shown.probability > 0.0 && top.shown.probability <= 1.0 && top.reward.is_finite() => {}
                _ => {
                    return Err(ClientError::Input(format!(
                        "line {}: no shown item at position 0 with a probability in (0, 1] and a finite reward",
                        number + 1
                    )))
                }
            }
            each(&decision)?;
            count += 1;
        }
        Ok(count)
    }
}
