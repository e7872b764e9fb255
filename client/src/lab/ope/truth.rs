//! Ground truth for simulator logs (top position and whole slate): each candidate runs on-policy in the
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

/// A candidate's true on-policy values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Truth {
    /// The mean click probability of the top position: Σₐ π(a|x)·P(click | x, a).
    pub top: f64,
    /// The mean probability that the slate it drew is clicked at all,
    /// 1 − Πₖ (1 − P(click | x, sₖ)) (the top's value for top-1).
    pub slate: f64,
}

/// The true on-policy values of `candidate` over `walk`.
///
/// # Errors
/// As [`walk_shop`].
pub fn true_ctr(walk: &ShopWalk, candidate: &CandidateSpec) -> Result<Truth> {
    let (mut top, mut slate) = (0.0, 0.0);
    walk_shop(walk, (candidate.policy, candidate.alpha, candidate.features), false, |step| {
        let click = |product| Tastes::Usual.click_probability(step.visit, product);
        top += step.probabilities.iter().zip(step.products).map(|(p, product)| if *p > 0.0 { p * click(product) } else { 0.0 }).sum::<f64>();
        if step.placed.len() > 1 {
            let missed: f64 = step.placed.iter().filter_map(|p| step.products.get(p.index as usize)).map(|product| 1.0 - click(product)).product();
            slate += 1.0 - missed;
        }
        Ok(())
    })?;
    let events = walk.events.max(1) as f64;
    let top = top / events;
    Ok(Truth { top, slate: if walk.top > 1 { slate / events } else { top } })
}
