//! `bandit feedback`: one event, checked before it is sent, because a
//! malformed event is not refused by the broker but by the sink, which sends
//! it to the dead-letter topic where nobody who ran the command sees it.
//!
//! - The context's length against the model's dim (BANDIT.STATS), when Redis
//!   answers and has the model. When it does not (Redis down, no model yet —
//!   the sink creates the model on its first flush), the event is sent with
//!   a warning: feedback must not depend on Redis being up.
//! - The event's own validity (finite numbers, a product id).
//! - The topic, on the brokers, within `--kafka-timeout`.

use std::time::Duration;

use anyhow::{bail, Result};
use bandit::models::Models;
use bandit_core::event::FeedbackEvent;

/// How long the optional dim check may wait for Redis.
const REDIS_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the model says about a context of `given` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DimCheck {
    /// The model has this dim and the context matches it.
    Matches,
    /// The model exists with another dim.
    Mismatch { dim: usize },
    /// No answer to check against; the reason, for a warning.
    Unchecked(String),
}

/// Compares the context's length with the model's dim.
pub fn check_dim(redis_url: &str, model: &str, given: usize) -> DimCheck {
    let dim = Models::connect_timeout(redis_url, REDIS_CHECK_TIMEOUT).and_then(|mut models| models.dim(model));
    match dim {
        Ok(Some(dim)) if dim == given => DimCheck::Matches,
        Ok(Some(dim)) => DimCheck::Mismatch { dim },
        Ok(None) => DimCheck::Unchecked(format!("there is no model {model} at {}", bandit_connect::mask(redis_url))),
        Err(error) => DimCheck::Unchecked(format!("cannot read model {model} at {}: {error}", bandit_connect::mask(redis_url))),
    }
}

/// Refuses an event that cannot be right, warns (on stderr) when it cannot
/// be checked.
pub fn validate(event: &FeedbackEvent, check: &DimCheck) -> Result<()> {
    let given = event.context_vector.len();
    let dim = match check {
        DimCheck::Matches => given,
        DimCheck::Mismatch { dim } => bail!("--context has {given} values, model dim is {dim}"),
        DimCheck::Unchecked(reason) => {
            eprintln!("bandit: warning: --context ({given} values) not checked against the model's dim: {reason}; sending anyway");
            given
        }
    };
    if event.product_id.is_empty() {
        bail!("--product is empty");
    }
    if !event.reward.is_finite() {
        bail!("--reward is not a finite number");
    }
    if !event.context_vector.iter().all(|v| v.is_finite()) {
        bail!("--context has a value that is not a finite number");
    }
    // The sink's own check, last: it stays authoritative if it grows.
    event.validate(dim)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn event(context: Vec<f64>, reward: f64) -> FeedbackEvent {
        FeedbackEvent { event_id: "e".into(), product_id: "p".into(), reward, context_vector: context, timestamp: 0, ..Default::default() }
    }

    #[test]
    fn a_context_of_the_wrong_length_is_refused_naming_the_option() {
        let error = validate(&event(vec![1.0, 0.5], 1.0), &DimCheck::Mismatch { dim: 15 }).unwrap_err();
        assert_eq!(error.to_string(), "--context has 2 values, model dim is 15");
        assert!(validate(&event(vec![1.0, 0.5], 1.0), &DimCheck::Matches).is_ok());
        assert!(validate(&event(vec![1.0, 0.5], 1.0), &DimCheck::Unchecked("no model".into())).is_ok());
        assert!(validate(&event(vec![1.0, f64::NAN], 1.0), &DimCheck::Matches).is_err());
        assert!(validate(&event(vec![1.0], f64::INFINITY), &DimCheck::Unchecked("down".into())).is_err());
    }

    #[test]
    fn an_unreachable_redis_leaves_the_context_unchecked() {
        // Port 1 on the loopback: nothing listens there, the connect fails at once.
        let check = check_dim("redis://127.0.0.1:1", "m", 3);
        assert!(matches!(&check, DimCheck::Unchecked(reason) if reason.contains("127.0.0.1:1")), "{check:?}");
    }
}
