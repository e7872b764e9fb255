//! Randomised exploration over ranked candidates, with the probability of
//! every placement, so that logged decisions can judge other policies
//! offline.
//!
//! - **UCB**: the LinUCB order itself; every placement has probability 1.
//! - **ε-greedy**: each slot from the top takes the best remaining candidate
//!   (by UCB score) with probability 1 − ε, otherwise a uniformly random
//!   remaining one. P(placed) = (1 − ε)·[it is the best remaining] +
//!   ε / |remaining|: exact.
//! - **Softmax**: Plackett–Luce sampling without replacement on score/τ,
//!   drawn with the Gumbel-top-k trick (one draw per candidate, then a
//!   top-k). P(placed) = exp(s/τ) / Σ over the remaining of exp(s'/τ): exact.
//! - **Thompson sampling**: one posterior draw per candidate, xᵀθ +
//!   α·√(xᵀA⁻¹x)·z with z ~ N(0, 1), then a top-k of the draws. P(placed) is
//!   the probability that the item's draw beats every remaining candidate's,
//!   by numerical integration over its own draw ([`TS_NODES`]-point
//!   trapezoid on ±8σ: error below 1e-6 when rivals are about as wide as
//!   the item, at most 0.02 next to a rival far narrower, see
//!   `probability_of_max`). It does not
//!   condition on the draws of the items above, so it is exact for the first
//!   position and an approximation below it.
//!
//! The randomness is a function of a seed: [`seed`] of the request's event
//! id and the model's version, so the same event on the same model gets the
//! same reply. Working memory is kept in a [`PolicyScratch`]; nothing is
//! allocated per candidate once it has grown.

use std::cmp::Ordering;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// How a ranking explores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    Ucb,
    EpsilonGreedy { epsilon: f64 },
    Softmax { temperature: f64 },
    Thompson,
}

impl Policy {
    /// The policy's name as `BANDIT.RANK … POLICY` and the decisions log spell it.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Ucb => "ucb",
            Policy::EpsilonGreedy { .. } => "egreedy",
            Policy::Softmax { .. } => "softmax",
            Policy::Thompson => "ts",
        }
    }

    /// Whether the policy draws random numbers.
    #[must_use]
    pub fn is_random(&self) -> bool {
        !matches!(self, Policy::Ucb)
    }

    /// # Errors
    /// [`Error::InvalidSetting`] for ε outside [0, 1] or τ not above 0.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Policy::EpsilonGreedy { epsilon } if !(0.0..=1.0).contains(&epsilon) => {
                Err(Error::InvalidSetting(format!("epsilon must be in [0, 1], got {epsilon}")))
            }
            Policy::Softmax { temperature } if !(temperature > 0.0 && temperature.is_finite()) => {
                Err(Error::InvalidSetting(format!("temperature must be a positive number, got {temperature}")))
            }
            _ => Ok(()),
        }
    }
}

/// `ucb`, `ts`, `egreedy:ε` or `softmax:τ` (case-insensitive), the notation
/// of the CLI and of the decisions log.
impl std::str::FromStr for Policy {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let (name, parameter) = text.split_once(':').map_or((text, None), |(name, value)| (name, Some(value)));
        let number = |what: &str| -> Result<f64> {
            let value = parameter.ok_or_else(|| Error::InvalidSetting(format!("{name} needs {what}: {name}:<{what}>")))?;
            value.trim().parse().map_err(|_| Error::InvalidSetting(format!("{what} is not a number: {value}")))
        };
        let policy = match name.trim().to_ascii_lowercase().as_str() {
            "ucb" if parameter.is_none() => Policy::Ucb,
            "ts" if parameter.is_none() => Policy::Thompson,
            "egreedy" => Policy::EpsilonGreedy { epsilon: number("epsilon")? },
            "softmax" => Policy::Softmax { temperature: number("temperature")? },
            _ => return Err(Error::InvalidSetting(format!("unknown policy {text}: expected ucb, ts, egreedy:<epsilon> or softmax:<temperature>"))),
        };
        policy.validate()?;
        Ok(policy)
    }
}

/// The seed of a request: FNV-1a over the event id, mixed with the model
/// version. Stable across releases and machines (it defines audited replies).
#[must_use]
pub fn seed(event_id: &[u8], version: u64) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = event_id.iter().fold(OFFSET, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME));
    hash ^ version.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A candidate as the policies see it: its position in the caller's list,
/// its mean xᵀθ and its width √(xᵀA⁻¹x). The UCB score is mean + α·width.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub index: u32,
    pub mean: f64,
    pub width: f64,
}

/// One placement: the candidate (`index` as given), the score it was ranked
/// by (the UCB score, or the posterior draw for TS), and the probability
/// that it was placed at its position given the items above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub index: u32,
    pub score: f64,
    pub probability: f64,
}

/// Quadrature points of the TS placement probability.
pub const TS_NODES: usize = 161;
const TS_SPAN: f64 = 8.0;

/// Working memory for [`choose`].
#[derive(Debug, Default, Clone)]
pub struct PolicyScratch {
    /// (key, candidate position), best first after sorting.
    keyed: Vec<(f64, u32)>,
    remaining: Vec<u32>,
    /// ε-greedy: each position's slot in `remaining` (u32::MAX once placed).
    slot_of: Vec<u32>,
    /// Softmax and TS: whether each position is placed.
    placed: Vec<bool>,
}

/// The most candidates × TOP for which RANK computes Thompson sampling's
/// placement probabilities: each costs a quadrature over every remaining
/// candidate, and RANK runs on Redis' main thread.
pub const TS_PROBABILITY_BUDGET: usize = 20_000;

/// Places up to `top` of `candidates` (which must be best first by UCB
/// score, ties broken as the ranker breaks them) under `policy`, into `out`.
pub fn choose(
    policy: Policy,
    alpha: f64,
    candidates: &[Candidate],
    top: usize,
    rng: &mut Rng,
    scratch: &mut PolicyScratch,
    out: &mut Vec<Placed>,
) {
    place(policy, alpha, candidates, top, rng, scratch, out, true);
}

/// As [`choose`]; without `probabilities`, TS leaves each placement's
/// probability NaN instead of integrating it (the one policy where it costs
/// more than the draw). The placements are the same either way.
#[allow(clippy::too_many_arguments)]
pub fn place(
    policy: Policy,
    alpha: f64,
    candidates: &[Candidate],
    top: usize,
    rng: &mut Rng,
    scratch: &mut PolicyScratch,
    out: &mut Vec<Placed>,
    probabilities: bool,
) {
    out.clear();
    let k = top.min(candidates.len());
    let ucb = |c: &Candidate| c.mean + alpha * c.width;
    match policy {
        Policy::Ucb => out.extend(candidates.iter().take(k).map(|c| Placed { index: c.index, score: ucb(c), probability: 1.0 })),
        Policy::EpsilonGreedy { epsilon } => {
            // `remaining` holds positions into `candidates` (best first, so the
            // best remaining is the smallest position); a random pick takes
            // the slot a uniform draw names and swap-removes it. `slot_of`
            // finds the best's slot, and `best` only moves forward, so a
            // request costs O(n + k), not O(n·k).
            let n = u32::try_from(candidates.len()).unwrap_or(u32::MAX);
            scratch.remaining.clear();
            scratch.remaining.extend(0..n);
            scratch.slot_of.clear();
            scratch.slot_of.extend(0..n);
            let mut best = 0usize;
            for _ in 0..k {
                let count = scratch.remaining.len();
                let explore = rng.unit() < epsilon;
                let best_slot = scratch.slot_of.get(best).map_or(0, |&slot| slot as usize);
                let slot = if explore { rng.below(count) } else { best_slot };
                let share = epsilon / count as f64;
                let probability = if slot == best_slot { 1.0 - epsilon + share } else { share };
                let position = scratch.remaining.swap_remove(slot);
                if let Some(&moved) = scratch.remaining.get(slot) {
                    if let Some(entry) = scratch.slot_of.get_mut(moved as usize) {
                        *entry = u32::try_from(slot).unwrap_or(u32::MAX);
                    }
                }
                if let Some(entry) = scratch.slot_of.get_mut(position as usize) {
                    *entry = u32::MAX;
                }
                while scratch.slot_of.get(best).is_some_and(|&slot| slot == u32::MAX) {
                    best += 1;
                }
                if let Some(c) = candidates.get(position as usize) {
                    out.push(Placed { index: c.index, score: ucb(c), probability });
                }
            }
        }
        Policy::Softmax { temperature } => {
            scratch.keyed.clear();
            for (c, position) in candidates.iter().zip(0u32..) {
                // Open interval, so both logarithms are finite.
                let gumbel = -(-rng.open_unit().ln()).ln();
                scratch.keyed.push((ucb(c) / temperature + gumbel, position));
            }
            select_top(&mut scratch.keyed, k);
            let max = candidates.iter().map(|c| ucb(c) / temperature).fold(f64::NEG_INFINITY, f64::max);
            let weight = |c: &Candidate| (ucb(c) / temperature - max).exp();
            clear_marks(&mut scratch.placed, candidates.len());
            let total: f64 = candidates.iter().map(weight).sum();
            let mut remaining = total;
            for slot in 0..k {
                let Some(&(_, position)) = scratch.keyed.get(slot) else { break };
                let Some(c) = candidates.get(position as usize) else { continue };
                // Subtracting the placed weights cancels badly once they are
                // almost all of the total: then sum the rest afresh.
                if remaining < total * 1e-6 {
                    remaining = candidates.iter().zip(&scratch.placed).filter(|(_, placed)| !**placed).map(|(other, _)| weight(other)).sum();
                }
                out.push(Placed { index: c.index, score: ucb(c), probability: weight(c) / remaining });
                remaining -= weight(c);
                if let Some(mark) = scratch.placed.get_mut(position as usize) {
                    *mark = true;
                }
            }
        }
        Policy::Thompson => {
            scratch.keyed.clear();
            for (c, position) in candidates.iter().zip(0u32..) {
                scratch.keyed.push((c.mean + alpha * c.width * rng.normal(), position));
            }
            select_top(&mut scratch.keyed, k);
            clear_marks(&mut scratch.placed, candidates.len());
            for slot in 0..k {
                let Some(&(draw, position)) = scratch.keyed.get(slot) else { break };
                let Some(c) = candidates.get(position as usize) else { continue };
                if let Some(mark) = scratch.placed.get_mut(position as usize) {
                    *mark = true;
                }
                let probability = if probabilities {
                    // The rivals: every candidate not placed yet (this one is marked).
                    let rivals = candidates.iter().zip(&scratch.placed).filter(|(_, placed)| !**placed).map(|(other, _)| (other.mean, alpha * other.width));
                    probability_of_max((c.mean, alpha * c.width), rivals)
                } else {
                    f64::NAN
                };
                out.push(Placed { index: c.index, score: draw, probability });
            }
        }
    }
}

/// Clears the placed marks for `n` candidates.
fn clear_marks(marks: &mut Vec<bool>, n: usize) {
    marks.clear();
    marks.resize(n, false);
}

/// Sorts the best `k` keys first (descending key, then position).
fn select_top(keyed: &mut [(f64, u32)], k: usize) {
    let order = |a: &(f64, u32), b: &(f64, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if k > 0 && k < keyed.len() {
        keyed.select_nth_unstable_by(k - 1, order);
    }
    if let Some(head) = keyed.get_mut(..k) {
        head.sort_unstable_by(order);
    }
}

/// P(N(μ, σ²) > every rival N(μᵣ, σᵣ²)), rivals independent: the integral
/// over the item's draw s of its density times Π Φ((s − μᵣ)/σᵣ), by the
/// trapezoid rule on μ ± 8σ (the rule converges geometrically for smooth
/// integrands that vanish at both ends; a rival much narrower than the item
/// makes a sharp step, where the error is at most a node spacing's worth of
/// density, 0.1·φ ≤ 0.02). Per node the product stops once it is below
/// 10⁻¹⁸ (the node adds nothing a logged probability can show), and a rival
/// more than 8.3 of its widths below s (Φ = 1 in double precision) costs
/// no Φ: the rivals come best first, so most nodes stop early.
fn probability_of_max((mean, sd): (f64, f64), rivals: impl Iterator<Item = (f64, f64)> + Clone) -> f64 {
    if sd.partial_cmp(&0.0) != Some(Ordering::Greater) {
        // A point mass (or no width at all): it wins when it is above every rival's draw.
        return rivals.map(|(m, s)| normal_cdf_scaled(mean - m, s)).product();
    }
    let low = mean - TS_SPAN * sd;
    let step = 2.0 * TS_SPAN * sd / (TS_NODES - 1) as f64;
    let relevant = rivals.filter(|(m, s)| m + 9.0 * s >= low);
    let mut total = 0.0;
    for node in 0..TS_NODES {
        let s = low + step * node as f64;
        let t = (s - mean) / sd;
        let density = (-0.5 * t * t).exp() / (sd * (2.0 * std::f64::consts::PI).sqrt());
        let mut beaten = 1.0;
        for (m, rs) in relevant.clone() {
            if rs > 0.0 && s - m > 8.3 * rs {
                continue;
            }
            beaten *= normal_cdf_scaled(s - m, rs);
            if beaten < 1e-18 {
                beaten = 0.0;
                break;
            }
        }
        let weight = if node == 0 || node == TS_NODES - 1 { 0.5 } else { 1.0 };
        total += weight * density * beaten;
    }
    (total * step).clamp(0.0, 1.0)
}

/// Φ(d/σ), with σ = 0 as a step (½ at 0).
fn normal_cdf_scaled(d: f64, sd: f64) -> f64 {
    if sd > 0.0 {
        0.5 * libm::erfc(-d / (sd * std::f64::consts::SQRT_2))
    } else {
        match d.partial_cmp(&0.0) {
            Some(Ordering::Greater) => 1.0,
            Some(Ordering::Equal) => 0.5,
            _ => 0.0,
        }
    }
}
