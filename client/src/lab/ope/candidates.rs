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

/// One candidate of the grid: a policy, its exploration weight α, and
/// what its model sees.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateSpec {
    /// As printed: `ucb:alpha=0.3`, `egreedy:0.1`, `random`, `popularity`, ...
    pub name: String,
    pub policy: Policy,
    pub alpha: f64,
    pub features: Features,
}

impl CandidateSpec {
    /// The policy as the JSON report spells it: `popularity`, or as the log does.
    #[must_use]
    pub fn policy_name(&self) -> String {
        match self.features {
            Features::Constant => "popularity".into(),
            Features::Context => spelled(self.policy),
        }
    }
}

/// What a candidate's model is fed in place of the context.
///
/// The `popularity` candidate is the production training core on one
/// constant feature: its ridge model per action then has θ = Σ r / (λ + n),
/// the action's observed reward rate shrunk towards 0 by the prior (λ = 1
/// impression that got nothing), and UCB with α = 0 ranks by it. It learns
/// as the others do (every folded impression counts), so it is the
/// "most clicked per impression so far" policy, blind to the visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Features {
    /// The decision's context.
    Context,
    /// One feature, always 1.
    Constant,
}

/// The constant feature vector of [`Features::Constant`].
const CONSTANT: [f64; 1] = [1.0];

impl Features {
    /// The model's input for `context`.
    #[must_use]
    pub fn input<'a>(&self, context: &'a [f64]) -> &'a [f64] {
        match self {
            Features::Context => context,
            Features::Constant => &CONSTANT,
        }
    }

    /// The model's dimension for contexts of `dim`.
    #[must_use]
    pub fn dim(&self, dim: usize) -> usize {
        match self {
            Features::Context => dim,
            Features::Constant => CONSTANT.len(),
        }
    }
}

/// α when a candidate does not state one: the module's default.
pub const DEFAULT_ALPHA: f64 = 1.0;

/// `random` is ε-greedy with ε = 1: uniform over the actions.
pub const RANDOM: Policy = Policy::EpsilonGreedy { epsilon: 1.0 };

/// The grid's name of the context-free candidate ([`Features::Constant`]).
pub const POPULARITY: &str = "popularity";

/// Parses a grid: candidates separated by `;`, each `<policy>[:alpha=a,b,…]`
/// where `<policy>` is `ucb`, `ts`, `egreedy:ε`, `softmax:τ`, `random`
/// (uniform) or `popularity` (UCB on one constant feature, see
/// [`Features::Constant`]); a list of α gives one candidate per value
/// (default α 1; 0 for `popularity`, which is then greedy).
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
        let (policy, features, default_alpha) = if head.eq_ignore_ascii_case(POPULARITY) {
            (Policy::Ucb, Features::Constant, 0.0)
        } else {
            (parse_policy(head)?, Features::Context, DEFAULT_ALPHA)
        };
        match alphas {
            Some(alphas) => {
                for alpha in alphas {
                    out.push(CandidateSpec { name: format!("{head}:alpha={alpha}"), policy, alpha, features });
                }
            }
            None => out.push(CandidateSpec { name: head.to_owned(), policy, alpha: default_alpha, features }),
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

/// The most sets of items above a position that [`Decider::marginals`]
/// sums over (C(10, 4) = 210 for the fifth of ten actions).
pub const MAX_SETS: usize = 4096;

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

    /// After [`Self::decide`] on the same context: the marginal probability
    /// that the policy places `slate[k]` at position k, whatever it placed
    /// above (summed over the sets of items above: the closed forms of
    /// [`Self::conditional`] depend on the set, not its order), for every k,
    /// into `out`. Position 0's is π of the first position. None for
    /// Thompson sampling, for more than 64 actions, or when the sets above
    /// the lowest position number more than [`MAX_SETS`].
    pub fn marginals(&self, policy: Policy, alpha: f64, slate: &[usize], out: &mut Vec<f64>) -> Option<()> {
        out.clear();
        let count = self.candidates.len();
        if policy == Policy::Thompson || count > 64 {
            return None;
        }
        // Ranks (positions in `self.candidates`, best first) stand for the actions.
        let mut rank_of = vec![usize::MAX; self.candidates.iter().map(|c| c.index as usize + 1).max().unwrap_or(0)];
        for (rank, c) in self.candidates.iter().enumerate() {
            if let Some(slot) = rank_of.get_mut(c.index as usize) {
                *slot = rank;
            }
        }
        let weights: Vec<f64> = match policy {
            Policy::Softmax { temperature } => {
                let score = |c: &Candidate| (c.mean + alpha * c.width) / temperature;
                let max = self.candidates.iter().map(score).fold(f64::NEG_INFINITY, f64::max);
                self.candidates.iter().map(|c| (score(c) - max).exp()).collect()
            }
            _ => Vec::new(),
        };
        let all = if count == 64 { u64::MAX } else { (1u64 << count) - 1 };
        // The probability of placing rank r next when the ranks in `above` are placed.
        let next = |above: u64, r: usize| -> f64 {
            let best = (!above & all).trailing_zeros() as usize;
            let remaining = f64::from(count as u32 - above.count_ones());
            match policy {
                Policy::Ucb => f64::from(u8::from(best == r)),
                Policy::EpsilonGreedy { epsilon } => (1.0 - epsilon) * f64::from(u8::from(best == r)) + epsilon / remaining,
                Policy::Softmax { .. } => {
                    let total: f64 = weights.iter().enumerate().filter(|(j, _)| above >> j & 1 == 0).map(|(_, w)| w).sum();
                    weights.get(r).map_or(0.0, |w| w / total)
                }
                Policy::Thompson => 0.0,
            }
        };
        // Sets of `k` ranks above position k, with their probabilities.
        let mut level: Vec<(u64, f64)> = vec![(0, 1.0)];
        for (k, &item) in slate.iter().enumerate() {
            let r = rank_of.get(item).copied().filter(|r| *r < count)?;
            out.push(level.iter().filter(|(above, _)| above >> r & 1 == 0).map(|(above, p)| p * next(*above, r)).sum());
            if k + 1 == slate.len() {
                break;
            }
            let mut grown: std::collections::HashMap<u64, f64> = std::collections::HashMap::new();
            for &(above, p) in &level {
                for j in (0..count).filter(|j| above >> j & 1 == 0) {
                    let q = p * next(above, j);
                    if q > 0.0 {
                        *grown.entry(above | 1 << j).or_default() += q;
                    }
                }
                if grown.len() > MAX_SETS {
                    return None;
                }
            }
            level = grown.into_iter().collect();
            level.sort_by_key(|(above, _)| *above);
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

    /// The marginal probability of each item at each position, from the
    /// closed forms summed over the sets above, against the frequencies of
    /// 40 000 slates of three drawn by core's sampler (`policy::place`, a
    /// different code path): within 4.5 standard errors, and each
    /// position's marginals over all actions sum to 1.
    #[test]
    fn marginals_match_the_sampler() {
        let ids: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
        let mut model = crate::lab::local::LocalModel::new(bandit_core::ModelSettings { dim: 2, alpha: 1.0, lambda: 1.0, decay: 1.0 }).unwrap();
        for (i, id) in ids.iter().enumerate() {
            for k in 0..=i {
                let event = bandit_core::event::FeedbackEvent {
                    event_id: format!("{id}-{k}"),
                    product_id: id.clone(),
                    reward: if k % 2 == 0 { 1.0 } else { 0.0 },
                    context_vector: vec![1.0, 0.5],
                    ..Default::default()
                };
                model.fold(&event).unwrap();
            }
        }
        model.publish().unwrap();
        let context = [1.0, 0.5];
        for policy in [Policy::EpsilonGreedy { epsilon: 0.4 }, Policy::Softmax { temperature: 0.3 }, Policy::Ucb] {
            let mut decider = Decider::default();
            let mut rng = Rng::new(7);
            const DRAWS: usize = 40_000;
            let mut counts = [[0usize; 5]; 3];
            for _ in 0..DRAWS {
                decider.decide(model.model(), Choice { policy, alpha: 0.5, top: 3, probabilities: false }, &context, &ids, &mut rng).unwrap();
                for (k, p) in decider.placed().iter().enumerate() {
                    counts[k][p.index as usize] += 1;
                }
            }
            let mut out = Vec::new();
            for (k, at_k) in counts.iter().enumerate() {
                let mut total = 0.0;
                for (item, count) in at_k.iter().enumerate() {
                    // A slate with `item` at position k (the items above are any others).
                    let mut slate: Vec<usize> = (0..5).filter(|i| *i != item).take(k).collect();
                    slate.push(item);
                    decider.marginals(policy, 0.5, &slate, &mut out).unwrap();
                    let p = out[k];
                    total += p;
                    let frequency = *count as f64 / DRAWS as f64;
                    let se = (p * (1.0 - p) / DRAWS as f64).sqrt().max(1e-9);
                    assert!((frequency - p).abs() <= 4.5 * se + 1e-12, "{policy:?} position {k} item {item}: marginal {p}, frequency {frequency}");
                }
                assert!((total - 1.0).abs() < 1e-9, "{policy:?} position {k}: marginals sum to {total}");
            }
        }
        let mut decider = Decider::default();
        let mut rng = Rng::new(1);
        decider.decide(model.model(), Choice { policy: Policy::Thompson, alpha: 0.5, top: 1, probabilities: false }, &context, &ids, &mut rng).unwrap();
        assert!(decider.marginals(Policy::Thompson, 0.5, &[0, 1], &mut Vec::new()).is_none());
    }

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
        let popular = parse_grid("popularity;popularity:alpha=0.5").unwrap();
        assert_eq!((popular[0].policy, popular[0].alpha, popular[0].features), (Policy::Ucb, 0.0, Features::Constant));
        assert_eq!((popular[1].name.as_str(), popular[1].alpha), ("popularity:alpha=0.5", 0.5));
        assert_eq!(popular[0].policy_name(), "popularity");
        assert_eq!(grid[0].features, Features::Context);
    }
}
