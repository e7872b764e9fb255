//! Ground truth for simulator logs: each candidate runs on-policy in the
//! simulated shop with the log's seed (the same visitors, the same click
//! stream, randomness seeded by event id and model version as the logging
//! policy's was) and learns from its own feedback. Its true CTR is the mean
//! over the visits of Σₐ π(a|x) · P(click | visit, a), the expected click of
//! its decision under the hidden click model (for Thompson sampling, whose
//! π is the indicator of its draw, the click probability of the drawn
//! product).

use crate::error::Result;
use crate::lab::generate::{walk_shop, ShopWalk};
use crate::lab::ope::candidates::CandidateSpec;
use crate::lab::shop::Tastes;

/// The true on-policy CTR of `candidate` over `walk`.
///
/// # Errors
/// As [`walk_shop`].
pub fn true_ctr(walk: &ShopWalk, candidate: &CandidateSpec) -> Result<f64> {
    let mut total = 0.0;
    walk_shop(walk, candidate.policy, candidate.alpha, |step| {
        total += step
            .probabilities
            .iter()
            .zip(step.products)
            .map(|(p, product)| if *p > 0.0 { p * Tastes::Usual.click_probability(step.visit, product) } else { 0.0 })
            .sum::<f64>();
        Ok(())
    })?;
    Ok(total / walk.events.max(1) as f64)
}
