//! Candidate policies and the one decision step that the logging policy
//! (`bandit generate --format decisions`), the candidates walking a log and
//! the on-policy truth run all share: rank the actions with a core
//! [`Model`] as BANDIT.RANK does, place the top item with
//! [`policy::choose`] (the module's sampler), and give the policy's whole
//! distribution over the actions, π(·|x), which the estimators need.
//!
//! π(·|x) is the closed form that `core/src/policy.rs` documents for the
//! first position: UCB puts 1 on the best; ε-greedy puts 1 − ε + ε/K on the
//! best and ε/K elsewhere; softmax puts exp(s/τ)/Σ exp(s'/τ). For Thompson
//! sampling core computes the exact probability only for the item it
//! placed, so π(·|x) is the indicator of the candidate's own draw: an
//! unbiased but noisier stand-in (E over the draw of 1[A = a] is π(a|x)).

use bandit_core::policy::{self, Candidate, Placed, Policy, PolicyScratch};
use bandit_core::{Model, RankRequest, RankScratch};

use crate::error::{ClientError, Result};
use crate::lab::rng::Rng;

/// One candidate of the grid: a policy and its exploration weight α.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateSpec {
    /// As printed: `ucb:alpha=0.3`, `egreedy:0.1`, `random`, ...
    pub name: String,
    pub policy: Policy,
    pub alpha: f64,
}

/// α when a candidate does not state one: the module's default.
pub const DEFAULT_ALPHA: f64 = 1.0;

/// `random` is ε-greedy with ε = 1: uniform over the actions.
pub const RANDOM: Policy = Policy::EpsilonGreedy { epsilon: 1.0 };

/// Parses a grid: candidates separated by `;`, each `<policy>[:alpha=a,b,…]`
/// where `<policy>` is `ucb`, `ts`, `egreedy:ε`, `softmax:τ` or `random`
/// (uniform); a list of α gives one candidate per value (default α 1).
///
/// # Errors
/// [`ClientError::Input`] for an unknown policy, a bad number or an empty grid.
pub fn parse_grid(text: &str) -> Result<Vec<CandidateSpec>> {
    let mut out = Vec::new();
    for spec in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (head, alphas) = match spec.rsplit_once(":alpha=") {
            Some((head, list)) => {
                let alphas = list
                    .split(',')
                    .map(|a| a.trim().parse::<f64>().ok().filter(|a| a.is_finite() && *a >= 0.0))
                    .collect::<Option<Vec<f64>>>()
                    .ok_or_else(|| ClientError::Input(format!("{spec}: alpha must be a list of numbers, 0 or more")))?;
                (head, Some(alphas))
            }
            None => (spec, None),
        };
        let policy = parse_policy(head)?;
        match alphas {
            Some(alphas) => {
                for alpha in alphas {
                    out.push(CandidateSpec { name: format!("{head}:alpha={alpha}"), policy, alpha });
                }
            }
            None => out.push(CandidateSpec { name: head.to_owned(), policy, alpha: DEFAULT_ALPHA }),
        }
    }
    if out.is_empty() {
        return Err(ClientError::Input("--policies names no candidate".into()));
    }
    Ok(out)
}

/// `random` / `uniform`, or anything [`Policy`]'s `FromStr` takes.
///
/// # Errors
/// [`ClientError::Input`] with the core's message.
pub fn parse_policy(text: &str) -> Result<Policy> {
    match text.trim().to_ascii_lowercase().as_str() {
        "random" | "uniform" => Ok(RANDOM),
        _ => text.parse::<Policy>().map_err(|e| ClientError::Input(e.to_string())),
    }
}

/// The spelling of a policy in the decisions log (`egreedy:0.1`, `ts`, ...).
#[must_use]
pub fn spelled(policy: Policy) -> String {
    match policy {
        Policy::EpsilonGreedy { epsilon } => format!("egreedy:{epsilon}"),
        Policy::Softmax { temperature } => format!("softmax:{temperature}"),
        other => other.name().to_owned(),
    }
}

/// How a decision is made: the policy, its α, how many items it places,
/// and whether the placements need their probabilities (the log does; the
/// evaluator and the truth run do not, and for TS they cost more than the
/// draw: without them `Placed::probability` is NaN for TS).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub policy: Policy,
    pub alpha: f64,
    pub top: usize,
    pub probabilities: bool,
}

/// Working memory of [`Decider::decide`]; nothing is allocated per decision
/// once it has grown.
#[derive(Debug, Default)]
pub struct Decider {
    rank: RankScratch,
    means: Vec<f64>,
    candidates: Vec<Candidate>,
    scratch: PolicyScratch,
    placed: Vec<Placed>,
    /// π(a|x) per action (indexed as the action list).
    pub probabilities: Vec<f64>,
}

impl Decider {
    /// Ranks `actions` for `context` under `model` with the choice's α, places
    /// its `top` items under its policy and fills [`Self::probabilities`] (of the
    /// first position). Returns the top item; [`Self::placed`] has them all:
    /// `index` into `actions`, and the probability of each placement given
    /// the items above, as `policy::choose` gives it (what the log records).
    ///
    /// # Errors
    /// [`ClientError::Core`] for a context of another dim; an empty action list.
    pub fn decide(&mut self, model: &Model, choice: Choice, context: &[f64], actions: &[String], rng: &mut Rng) -> Result<Placed> {
        let Choice { policy, alpha, top, probabilities } = choice;
        let request = RankRequest { context, alpha, top: None };
        if policy == Policy::Thompson && alpha > 0.0 {
            // The module's way: the means are the scores at α = 0.
            self.means.clear();
            self.means.resize(actions.len(), 0.0);
            for entry in model.rank_candidates(&RankRequest { alpha: 0.0, ..request }, actions, &mut self.rank)? {
                if let Some(mean) = self.means.get_mut(entry.index as usize) {
                    *mean = entry.score;
                }
            }
        }
        self.candidates.clear();
        for entry in model.rank_candidates(&request, actions, &mut self.rank)? {
            let candidate = match self.means.get(entry.index as usize) {
                Some(&mean) if policy == Policy::Thompson && alpha > 0.0 => {
                    Candidate { index: entry.index, mean, width: ((entry.score - mean) / alpha).max(0.0) }
                }
                _ => Candidate { index: entry.index, mean: entry.score, width: 0.0 },
            };
            self.candidates.push(candidate);
        }
        policy::place(policy, alpha, &self.candidates, top.max(1), rng, &mut self.scratch, &mut self.placed, probabilities);
        let placed = *self.placed.first().ok_or_else(|| ClientError::Input("no action to choose from".into()))?;
        self.fill_probabilities(policy, alpha, actions.len(), placed.index);
        Ok(placed)
    }

    /// The slate of the last [`Self::decide`], top first.
    #[must_use]
    pub fn placed(&self) -> &[Placed] {
        &self.placed
    }

    /// After [`Self::decide`] on the same context: the probability that the
    /// policy places `slate[j]` at position j given `slate[..j]` above it,
    /// for every j, into `out` (the closed forms of `core/src/policy.rs`:
    /// UCB and ε-greedy look for the best remaining by UCB score, softmax
    /// normalises over the remaining). None for Thompson sampling, whose
    /// conditional probabilities core does not give for an arbitrary slate.
    pub fn conditional(&self, policy: Policy, alpha: f64, slate: &[usize], out: &mut Vec<f64>) -> Option<()> {
        out.clear();
        let above = |c: &Candidate, j: usize| slate.get(..j).is_some_and(|prefix| prefix.contains(&(c.index as usize)));
        for (j, &item) in slate.iter().enumerate() {
            let best = self.candidates.iter().find(|c| !above(c, j)).map(|c| c.index as usize);
            let remaining = self.candidates.len().saturating_sub(j) as f64;
            let p = match policy {
                Policy::Ucb => f64::from(u8::from(best == Some(item))),
                Policy::EpsilonGreedy { epsilon } => (1.0 - epsilon) * f64::from(u8::from(best == Some(item))) + epsilon / remaining,
                Policy::Softmax { temperature } => {
                    let score = |c: &Candidate| (c.mean + alpha * c.width) / temperature;
                    let max = self.candidates.iter().filter(|c| !above(c, j)).map(score).fold(f64::NEG_INFINITY, f64::max);
                    let total: f64 = self.candidates.iter().filter(|c| !above(c, j)).map(|c| (score(c) - max).exp()).sum();
                    self.candidates.iter().find(|c| c.index as usize == item).map_or(0.0, |c| (score(c) - max).exp() / total)
                }
                Policy::Thompson => return None,
            };
            out.push(p);
        }
        Some(())
    }

    fn fill_probabilities(&mut self, policy: Policy, alpha: f64, count: usize, placed: u32) {
        self.probabilities.clear();
        self.probabilities.resize(count, 0.0);
        let best = self.candidates.first().map_or(0, |c| c.index as usize);
        let set = |probabilities: &mut Vec<f64>, at: usize, value: f64| {
            if let Some(p) = probabilities.get_mut(at) {
                *p += value;
            }
        };
        match policy {
            Policy::Ucb => set(&mut self.probabilities, best, 1.0),
            Policy::Thompson => set(&mut self.probabilities, placed as usize, 1.0),
            Policy::EpsilonGreedy { epsilon } => {
                let share = epsilon / count as f64;
                self.probabilities.fill(share);
                set(&mut self.probabilities, best, 1.0 - epsilon);
            }
            Policy::Softmax { temperature } => {
                let score = |c: &Candidate| (c.mean + alpha * c.width) / temperature;
                let max = self.candidates.iter().map(score).fold(f64::NEG_INFINITY, f64::max);
                let mut total = 0.0;
                for c in &self.candidates {
                    let weight = (score(c) - max).exp();
                    total += weight;
                    set(&mut self.probabilities, c.index as usize, weight);
                }
                if total > 0.0 {
                    self.probabilities.iter_mut().for_each(|p| *p /= total);
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn grids_parse() {
        let grid = parse_grid("ucb:alpha=0.1,0.3,1;ts;egreedy:0.1;softmax:0.05;random").unwrap();
        let names: Vec<&str> = grid.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["ucb:alpha=0.1", "ucb:alpha=0.3", "ucb:alpha=1", "ts", "egreedy:0.1", "softmax:0.05", "random"]);
        assert_eq!(grid[1].alpha, 0.3);
        assert_eq!(grid[4].policy, Policy::EpsilonGreedy { epsilon: 0.1 });
        assert_eq!(grid[6].policy, RANDOM);
        assert_eq!(parse_grid("egreedy:0.2:alpha=0.5").unwrap()[0].alpha, 0.5);
        assert!(parse_grid("greedy").is_err());
        assert!(parse_grid("egreedy:2").is_err());
        assert!(parse_grid("ucb:alpha=x").is_err());
        assert!(parse_grid(" ; ").is_err());
    }
}
