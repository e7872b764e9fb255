//! Historical logs from the simulated shop.
//!
//! - [`generate_log`] (CSV, for `bandit evaluate --method replay-topk` and
//!   `bandit bootstrap`): random visitors shown one random product at a
//!   random time in the 90 days before 2026-01-01, the response drawn from
//!   the hidden click model, in time order.
//! - [`generate_decisions`] (`--format decisions`, for off-policy
//!   evaluation): the joined decision log ([`crate::lab::ope::log`]) of a
//!   logging policy that learns online through the production training core
//!   ([`LocalModel`]), with the probability of every placement.

use std::fmt::Write as _;

use bandit_core::event::FeedbackEvent;
use bandit_core::join::Shown;
use bandit_core::policy::{self, Placed, Policy};
use bandit_core::ModelSettings;

use crate::error::{ClientError, Result};
use crate::lab::local::LocalModel;
use crate::lab::ope::candidates::{Choice, Decider, Features};
use crate::lab::ope::log::{LoggedDecision, ShownReward};
use crate::lab::rng::Rng;
use crate::lab::shop::{Catalogue, Category, Product, Tastes, Visit, DIM, FEATURE_NAMES};

/// 2026-01-01T00:00:00Z, the end of the generated period.
const END_UNIX_SECONDS: i64 = 1_767_225_600;
const DAYS: i64 = 90;

/// (log CSV, items CSV) for `events` events.
#[must_use]
pub fn generate_log(events: usize, seed: u64) -> (String, String) {
    let catalogue = Catalogue::generate(seed);
    let mut rng = Rng::new(seed);
    let start = END_UNIX_SECONDS - DAYS * 86_400;
    let mut times: Vec<i64> = (0..events).map(|_| start + (rng.unit() * (DAYS * 86_400) as f64) as i64).collect();
    times.sort_unstable();
    let mut log = format!("event_id,{},product_id,response\n", FEATURE_NAMES.join(","));
    for (i, &time) in times.iter().enumerate() {
        let visit = Visit::at_time(&mut rng, time);
        let Some(product) = catalogue.products.get(rng.below(catalogue.products.len())) else { continue };
        let response = u8::from(rng.bernoulli(Tastes::Usual.click_probability(&visit, product)));
        let features: Vec<String> = visit.context().iter().map(|v| format!("{v:.6}")).collect();
        let _ = writeln!(log, "e{},{},{},{response}", i + 1, features.join(","), product.id);
    }
    let mut items = String::from("product_id");
    for category in Category::ALL {
        let _ = write!(items, ",category_{}", category.name().replace([' ', '&'], "_").replace("__", "_").replace("__", "_"));
    }
    items.push_str(",is_coffee,price_scaled\n");
    for product in &catalogue.products {
        let _ = write!(items, "{}", product.id);
        for category in Category::ALL {
            let _ = write!(items, ",{}", u8::from(product.category == category));
        }
        let _ = writeln!(items, ",{},{:.6}", u8::from(product.category == Category::Coffee), product.price_scaled);
    }
    (log, items)
}

/// How the shop is walked by a learning policy (the logging policy of
/// [`generate_decisions`], or a candidate's on-policy truth run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShopWalk {
    pub events: usize,
    pub seed: u64,
    /// The actions: this many products spread evenly over the catalogue
    /// (product ⌊i·len/arms⌋ for i < arms), the same for every visit.
    pub arms: usize,
    /// The policy's model is published (the sink's flush) after this many events.
    pub publish_every: usize,
    /// Products shown per visit (the slate). The visitor reads them in
    /// order and clicks the first one a Bernoulli draw accepts (the shop's
    /// cascade); the model learns from the items at or above the click.
    pub top: usize,
}

/// Actions of a decisions log by default: ten products, every category but
/// the soft drinks (see [`ShopWalk::arms`]).
pub const DEFAULT_ARMS: usize = 10;

/// The model of a walking policy: ridge prior λ = 1, no forgetting.
pub const LAMBDA: f64 = 1.0;

/// One decision of a walk.
#[derive(Debug)]
pub struct Step<'a> {
    pub index: usize,
    pub event_id: &'a str,
    pub visit: &'a Visit,
    pub context: &'a [f64],
    /// The model's version when it decided.
    pub version: u64,
    /// The slate, top first.
    pub placed: &'a [Placed],
    /// π(·|x) of the policy's first position (see [`crate::lab::ope::candidates`]).
    pub probabilities: &'a [f64],
    /// The marginal probability of each placed item at its position
    /// ([`Decider::marginals`]): with `probabilities` on slates, else empty.
    pub marginals: &'a [f64],
    pub products: &'a [&'a Product],
    /// The position clicked, if any.
    pub clicked: Option<usize>,
}

impl Step<'_> {
    /// The reward of the item at `position`: 1 where the visitor clicked.
    #[must_use]
    pub fn reward(&self, position: usize) -> f64 {
        if self.clicked == Some(position) {
            1.0
        } else {
            0.0
        }
    }
}

/// The 2026-01-01 epoch of decision timestamps (Unix ms); one decision a second.
const START_MS: i64 = END_UNIX_SECONDS * 1000;

/// Walks the shop: visitor i (from the stream `Rng::new(seed)`) gets the
/// top `walk.top` of `policy` (randomness seeded from the event id `e{i+1}`
/// and the model's version, as BANDIT.RANK … EVENTID seeds it), reacts per
/// the hidden click model (stream `seed + 2`, [`Tastes::react`]), and the
/// items at or above the click (all when none) are folded into the policy's
/// model. `each` sees every step before it is learned from; the placements
/// carry their probabilities when `probabilities` asks (see [`Choice`]).
/// The policy's model sees `features` of the visitor's context (the
/// context itself, or the popularity candidate's constant).
///
/// # Errors
/// More arms than the catalogue has; the model's errors; `each`'s.
pub fn walk_shop(
    walk: &ShopWalk,
    (policy, alpha, features): (Policy, f64, Features),
    probabilities: bool,
    mut each: impl FnMut(&Step<'_>) -> Result<()>,
) -> Result<()> {
    let catalogue = Catalogue::generate(walk.seed);
    let products = spread(&catalogue, walk.arms)?;
    let ids: Vec<String> = products.iter().map(|p| p.id.clone()).collect();
    let mut model = LocalModel::new(ModelSettings { dim: features.dim(DIM), alpha, lambda: LAMBDA, decay: 1.0 })?;
    let (mut slate, mut marginals) = (Vec::with_capacity(walk.top), Vec::with_capacity(walk.top));
    let mut visits = Rng::new(walk.seed);
    let mut clicks = Rng::new(walk.seed.wrapping_add(2));
    let mut decider = Decider::default();
    let publish_every = walk.publish_every.max(1);
    let mut shown: Vec<&Product> = Vec::with_capacity(walk.top);
    for index in 0..walk.events {
        let visit = Visit::random(&mut visits);
        let context = visit.context();
        let event_id = format!("e{}", index + 1);
        let version = model.model().version();
        let mut rng = Rng::new(policy::seed(event_id.as_bytes(), version));
        decider.decide(model.model(), Choice { policy, alpha, top: walk.top, probabilities }, features.input(&context), &ids, &mut rng)?;
        let placed = decider.placed();
        marginals.clear();
        if probabilities && walk.top > 1 {
            slate.clear();
            slate.extend(placed.iter().map(|p| p.index as usize));
            decider.marginals(policy, alpha, &slate, &mut marginals);
        }
        shown.clear();
        for p in placed {
            shown.push(products.get(p.index as usize).ok_or_else(|| ClientError::Simulation("placed an unknown action".into()))?);
        }
        let clicked = Tastes::Usual.react(&mut clicks, &visit, &shown);
        let step = Step { index, event_id: &event_id, visit: &visit, context: &context, version, placed, probabilities: &decider.probabilities, marginals: &marginals, products: &products, clicked };
        each(&step)?;
        let timestamp = START_MS + index as i64 * 1000;
        let read = clicked.map_or(shown.len(), |position| position + 1);
        for (position, product) in shown.iter().enumerate().take(read) {
            let reward = step.reward(position);
            model.fold(&FeedbackEvent { event_id: event_id.clone(), product_id: product.id.clone(), reward, context_vector: features.input(&context).to_vec(), timestamp, ..Default::default() })?;
        }
        if (index + 1).is_multiple_of(publish_every) {
            model.publish()?;
        }
    }
    Ok(())
}

/// The action ids of a walk with this seed and arm count, in their order.
///
/// # Errors
/// More arms than the catalogue has.
pub fn shop_actions(seed: u64, arms: usize) -> Result<Vec<String>> {
    Ok(spread(&Catalogue::generate(seed), arms)?.iter().map(|p| p.id.clone()).collect())
}

/// `arms` products spread evenly over the catalogue.
fn spread(catalogue: &Catalogue, arms: usize) -> Result<Vec<&Product>> {
    let len = catalogue.products.len();
    if arms == 0 || arms > len {
        return Err(ClientError::Input(format!("--arms must be between 1 and {len}, got {arms}")));
    }
    Ok((0..arms).filter_map(|i| catalogue.products.get(i * len / arms)).collect())
}

/// Writes the joined decision log of `policy` (α `alpha`) walking the shop,
/// one JSON line per decision (shape in [`crate::lab::ope::log`]); the
/// `policy` field spells it as BANDIT.RANK's POLICY does (uniform is
/// `egreedy:1`). Returns the share of decisions with a click.
///
/// # Errors
/// As [`walk_shop`]; write errors.
pub fn generate_decisions(walk: &ShopWalk, policy: Policy, alpha: f64, out: &mut impl std::io::Write) -> Result<f64> {
    let spelled = crate::lab::ope::candidates::spelled(policy);
    let mut clicks = 0.0;
    walk_shop(walk, (policy, alpha, Features::Context), true, |step| {
        let shown = step
            .placed
            .iter()
            .zip(0u32..)
            .map(|(p, position)| {
                let product_id = step.products.get(p.index as usize).map(|p| p.id.clone()).unwrap_or_default();
                let marginal = step.marginals.get(position as usize).copied();
                ShownReward { shown: Shown { product_id, position, probability: p.probability }, reward: step.reward(position as usize), marginal }
            })
            .collect();
        let line = LoggedDecision {
            event_id: step.event_id.to_owned(),
            model: "shop".into(),
            model_version: step.version,
            policy: spelled.clone(),
            context: step.context.to_vec(),
            shown,
            timestamp: START_MS + step.index as i64 * 1000,
        };
        clicks += f64::from(u8::from(step.clicked.is_some()));
        serde_json::to_writer(&mut *out, &line).map_err(|e| ClientError::Input(format!("writing the log: {e}")))?;
        out.write_all(b"\n").map_err(ClientError::Io)
    })?;
    Ok(clicks / walk.events.max(1) as f64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn logs_have_the_documented_columns_and_are_deterministic() {
        let (log, items) = generate_log(500, 4);
        assert_eq!(log, generate_log(500, 4).0);
        let header = log.lines().next().unwrap();
        assert!(header.starts_with("event_id,age,latitude,longitude,gender_male,"));
        assert!(header.ends_with(",is_weekend,is_weekday,product_id,response"));
        let parsed = crate::history::parse_log(&log, "log.csv").unwrap();
        assert_eq!(parsed.feature_names.len(), 15);
        assert_eq!(parsed.rows.len(), 500);
        assert!(parsed.rows.iter().any(|r| r.response == 1.0) && parsed.rows.iter().any(|r| r.response == 0.0));
        let ids = crate::history::parse_items(&items, "items.csv").unwrap();
        assert_eq!(ids.len(), Catalogue::generate(4).products.len());
        assert!(items.lines().next().unwrap().ends_with(",is_coffee,price_scaled"));
    }
}
