//! Off-policy evaluation: how would another policy have done on the traffic
//! the shop really served? Reads the joined decision log ([`log`]) twice:
//! first to fit the reward model of DM (a ridge regression per action,
//! cross-fitted: events are split into two folds, even and odd, and each
//! event is scored by the model fitted on the other fold), then to walk the
//! candidates through it ([`candidates`]) while the estimators
//! ([`estimators`]) sum their terms. [`report`] prints the table and JSON;
//! [`truth`] runs each candidate on-policy in the simulated shop.
//!
//! The learning protocol ("learn on the log"): every candidate decides with
//! a core model ([`LocalModel`], the production training core), and after
//! each decision it is scored on, the model folds the logged (context,
//! action, reward), whatever the candidate would have chosen itself; the
//! model is published every `publish_every` events, as a sink flush would.
//! Since every candidate learns the same data the same way, candidates fed
//! the same features share one model per thread ([`Lane`]): the same numbers
//! as one model each, without repeating the folds and publishes. The estimators are then
//! unbiased for the mean over the log of the value of the candidate *as it
//! stood at each event*. That candidate learned from the logging policy's
//! data, not from its own: a candidate that explores less than the logger
//! sees more varied data in the log than it would on-policy (and the
//! reverse), so the estimate is of a slightly different learner than the one
//! that would be deployed. The gap shrinks as the models converge; `--truth`
//! measures it on simulator logs.
//!
//! The top-1 estimators score the item at position 0 and its reward (its
//! logged probability is then the marginal one). Slates (k > 1) are scored
//! as a whole by the cascade estimator RIPS ([`estimators::Cascade`]): the
//! candidates' conditional probabilities of the logged items come from
//! [`Decider::conditional`]; Thompson sampling has none (n/a). And by
//! position-wise IPS ([`estimators::Independent`]) when the log has the
//! logger's marginal probabilities (the simulator writes them), with the
//! candidates' marginals from [`Decider::marginals`]. Candidates
//! learn from the items at or above the lowest rewarded one (all when none
//! is), the join's cascade impressions.

pub mod candidates;
pub mod estimators;
pub mod log;
pub mod report;
pub mod truth;

use std::collections::{BTreeSet, HashMap};

use bandit_core::event::FeedbackEvent;
use bandit_core::{ModelSettings, RankRequest, RankScratch};

use crate::error::{ClientError, Result};
use crate::lab::local::LocalModel;
use crate::lab::rng::Rng;
use candidates::{CandidateSpec, Choice, Decider, Features};
use estimators::{Accumulator, Cascade, Estimate, Independent, Mean};
use log::{LogSource, LoggedDecision};

/// How to evaluate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpeConfig {
    /// Seeds the candidates' own random draws (stream per candidate).
    pub seed: u64,
    /// Switch-DR's threshold on the importance weight.
    pub tau: f64,
    /// Candidates publish their model after this many folded events.
    pub publish_every: usize,
    /// Ridge λ of DM's reward model.
    pub ridge_lambda: f64,
}

impl Default for OpeConfig {
    fn default() -> Self {
        Self { seed: 1, tau: estimators::DEFAULT_TAU, publish_every: DEFAULT_PUBLISH_EVERY, ridge_lambda: 1.0 }
    }
}

/// One candidate's result.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateResult {
    pub spec: CandidateSpec,
    /// In [`estimators::NAMES`] order, then RIPS where the candidate has
    /// conditional probabilities, then PIPS where the log and the candidate
    /// have marginal ones (slates only).
    pub estimates: Vec<Estimate>,
    /// The true on-policy CTR of the top position, when asked for.
    pub truth: Option<f64>,
    /// The true on-policy share of slates with a click, when asked for.
    pub truth_slate: Option<f64>,
}

impl CandidateResult {
    /// The estimate named `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Estimate> {
        self.estimates.iter().find(|e| e.name == name)
    }
}

/// The evaluation of a grid on a log.
#[derive(Debug, Clone, PartialEq)]
pub struct OpeReport {
    pub decisions: usize,
    /// The `policy` field of the log's first decision.
    pub logging_policy: String,
    /// The logging policy's own on-policy value: the mean logged reward at position 0.
    pub logged: Estimate,
    /// The mean logged reward of a whole slate (Σ over its items).
    pub logged_slate: Estimate,
    /// The longest slate in the log.
    pub top: usize,
    /// Ranked by DR, best first.
    pub candidates: Vec<CandidateResult>,
    pub config: OpeConfig,
    /// The log's actions, in the order candidates rank them.
    pub actions: Vec<String>,
}

/// Events between two publishes of a learning policy's model, by default:
/// a publish per event costs more than the decision itself (the trainer's
/// flush asks the OS for the core count every time).
pub const DEFAULT_PUBLISH_EVERY: usize = 10;

/// The estimator the table is ranked by.
pub const RANKED_BY: &str = "DR";

/// A candidate walking the log.
struct Runner {
    spec: CandidateSpec,
    decider: Decider,
    rng: Rng,
    accumulator: Accumulator,
    cascade: Option<Cascade>,
    /// Position-wise IPS, on slates whose every item has a logged marginal.
    independent: Option<Independent>,
    conditional: Vec<f64>,
    marginals: Vec<f64>,
}

/// The candidates one thread walks through the log, and their models.
///
/// Every candidate learns the same thing (the logged impressions, with the
/// same λ, no forgetting and the same publish cadence), so the candidates
/// fed the same features have the same model at every event: a lane keeps
/// one [`LocalModel`] per kind of features and every candidate decides on it
/// with its own α and its own random stream. The numbers are those of one
/// model per candidate; the folds and publishes (most of the cost) are not
/// repeated per candidate.
struct Lane {
    runners: Vec<Runner>,
    models: Vec<(Features, LocalModel)>,
}

/// One decision as the candidates need it.
struct Row {
    context: Vec<f64>,
    /// The slate (action indices), its logged probabilities and rewards, top first.
    slate: Vec<usize>,
    mu: Vec<f64>,
    /// The logged marginal probabilities, when every item has one.
    marginal: Option<Vec<f64>>,
    rewards: Vec<f64>,
    qhat: Vec<f64>,
    /// The cascade impressions, to learn from.
    events: Vec<FeedbackEvent>,
}

/// Decisions handed to the candidate threads at a time.
const BATCH: usize = 4096;

/// Evaluates every candidate of `grid` on the log.
///
/// # Errors
/// An unreadable or empty log, contexts of different lengths, a core error.
pub fn evaluate(source: &LogSource, grid: &[CandidateSpec], config: &OpeConfig) -> Result<OpeReport> {
    // Pass 1: the actions, the logging value, and DM's two fold models.
    let mut names = BTreeSet::new();
    let mut dim = None;
    let mut logging_policy = String::new();
    let mut folds: Vec<LocalModel> = Vec::new();
    let mut logged = Mean::default();
    let mut logged_slate = Mean::default();
    let mut top = 1;
    let mut index = 0usize;
    source.for_each(|d| {
        let dim = *dim.get_or_insert(d.context.len());
        if folds.is_empty() {
            logging_policy.clone_from(&d.policy);
            for _ in 0..2 {
                folds.push(LocalModel::new(ModelSettings { dim, alpha: 0.0, lambda: config.ridge_lambda, decay: 1.0 })?);
            }
        }
        let (event, reward) = example(d)?;
        for shown in &d.shown {
            names.insert(shown.shown.product_id.clone());
        }
        top = top.max(d.shown.len());
        logged.add(reward);
        logged_slate.add(d.shown.iter().map(|s| s.reward).sum());
        if let Some(fold) = folds.get_mut(index % 2) {
            fold.fold(&event)?;
        }
        index += 1;
        Ok(())
    })?;
    if index == 0 {
        return Err(ClientError::Input("the decisions log is empty".into()));
    }
    for fold in &mut folds {
        fold.publish()?;
    }
    // Numeric ids in numeric order (the catalogue's), others after them.
    let mut actions: Vec<String> = names.into_iter().collect();
    actions.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    let position: HashMap<String, usize> = actions.iter().enumerate().map(|(i, a)| (a.clone(), i)).collect();
    // The candidates learn as the generated logger does (λ and no forgetting).
    let settings = |features: Features| ModelSettings {
        dim: features.dim(dim.unwrap_or(0)),
        alpha: candidates::DEFAULT_ALPHA,
        lambda: crate::lab::generate::LAMBDA,
        decay: 1.0,
    };
    let runners = grid
        .iter()
        .zip(1u64..)
        .map(|(spec, k)| {
            Ok(Runner {
                spec: spec.clone(),
                decider: Decider::default(),
                rng: Rng::new(config.seed ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                accumulator: Accumulator::new(config.tau),
                cascade: Some(Cascade::default()),
                independent: (top > 1).then(Independent::default),
                conditional: Vec::new(),
                marginals: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(runners.len()).max(1);
    let per_thread = runners.len().div_ceil(threads).max(1);
    let mut lanes: Vec<Lane> = Vec::with_capacity(threads);
    let mut runners = runners.into_iter().peekable();
    while runners.peek().is_some() {
        let lane: Vec<Runner> = runners.by_ref().take(per_thread).collect();
        let mut models: Vec<(Features, LocalModel)> = Vec::new();
        for runner in &lane {
            if !models.iter().any(|(f, _)| *f == runner.spec.features) {
                models.push((runner.spec.features, LocalModel::new(settings(runner.spec.features))?));
            }
        }
        lanes.push(Lane { runners: lane, models });
    }

    // Pass 2: the candidates, a batch of decisions at a time, on all cores.
    let mut rows: Vec<Row> = Vec::with_capacity(BATCH);
    let mut scratch = RankScratch::default();
    let mut index = 0usize;
    let mut seen = 0usize;
    source.for_each(|d| {
        let mut ordered: Vec<&log::ShownReward> = d.shown.iter().collect();
        ordered.sort_by_key(|s| s.shown.position);
        let slate = ordered.iter().map(|s| position.get(&s.shown.product_id).copied().unwrap_or(0)).collect();
        let mu = ordered.iter().map(|s| s.shown.probability).collect();
        let marginal = if top > 1 { ordered.iter().map(|s| s.marginal()).collect::<Option<Vec<f64>>>() } else { None };
        let rewards: Vec<f64> = ordered.iter().map(|s| s.reward).collect();
        let read = rewards.iter().rposition(|r| *r > 0.0).map_or(ordered.len(), |last| last + 1);
        let events = ordered
            .iter()
            .take(read)
            .map(|s| FeedbackEvent {
                event_id: d.event_id.clone(),
                product_id: s.shown.product_id.clone(),
                reward: s.reward,
                context_vector: d.context.clone(),
                timestamp: d.timestamp,
                ..Default::default()
            })
            .collect();
        let mut qhat = vec![0.0; actions.len()];
        if let Some(other) = folds.get(1 - index % 2) {
            let request = RankRequest { context: &d.context, alpha: 0.0, top: None };
            for entry in other.model().rank_candidates(&request, &actions, &mut scratch)? {
                if let Some(q) = qhat.get_mut(entry.index as usize) {
                    *q = entry.score;
                }
            }
        }
        rows.push(Row { context: d.context.clone(), slate, mu, marginal, rewards, qhat, events });
        index += 1;
        if rows.len() == BATCH {
            seen = run_batch(&mut lanes, &rows, &actions, config, seen)?;
            rows.clear();
        }
        Ok(())
    })?;
    run_batch(&mut lanes, &rows, &actions, config, seen)?;

    let mut candidates: Vec<CandidateResult> = lanes
        .into_iter()
        .flat_map(|lane| lane.runners)
        .map(|r| {
            let mut estimates = r.accumulator.estimates().to_vec();
            estimates.extend(r.cascade.map(|c| c.estimate()));
            estimates.extend(r.independent.map(|i| i.estimate()));
            CandidateResult { spec: r.spec, estimates, truth: None, truth_slate: None }
        })
        .collect();
    let key = |c: &CandidateResult| c.get(RANKED_BY).map_or(f64::NEG_INFINITY, |e| if e.value.is_nan() { f64::NEG_INFINITY } else { e.value });
    candidates.sort_by(|a, b| key(b).total_cmp(&key(a)));
    Ok(OpeReport {
        decisions: index,
        logging_policy,
        logged: logged.estimate("logged"),
        logged_slate: logged_slate.estimate("logged slate"),
        top,
        candidates,
        config: *config,
        actions,
    })
}

/// The logged top item as a training event, and its reward.
fn example(d: &LoggedDecision) -> Result<(FeedbackEvent, f64)> {
    let top = d.top().ok_or_else(|| ClientError::Input(format!("decision {}: nothing at position 0", d.event_id)))?;
    let event = FeedbackEvent {
        event_id: d.event_id.clone(),
        product_id: top.shown.product_id.clone(),
        reward: top.reward,
        context_vector: d.context.clone(),
        timestamp: d.timestamp,
        ..Default::default()
    };
    Ok((event, top.reward))
}

/// Every lane (one scoped thread each) walks the rows: on each row every
/// runner of the lane decides and is scored, then the lane's models learn
/// the row (and publish on the cadence). Returns the number of rows seen so far.
fn run_batch(lanes: &mut [Lane], rows: &[Row], actions: &[String], config: &OpeConfig, seen: usize) -> Result<usize> {
    let publish_every = config.publish_every.max(1);
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = lanes.iter_mut().map(|lane| scope.spawn(move || walk_lane(lane, rows, actions, seen, publish_every))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(ClientError::Simulation("a candidate thread panicked".into())))).collect()
    });
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(seen + rows.len())
}

fn walk_lane(lane: &mut Lane, rows: &[Row], actions: &[String], seen: usize, publish_every: usize) -> Result<()> {
    let Lane { runners, models } = lane;
    for (offset, row) in rows.iter().enumerate() {
        for runner in runners.iter_mut() {
            let model = models.iter().find(|(f, _)| *f == runner.spec.features).map(|(_, m)| m.model());
            let model = model.ok_or_else(|| ClientError::Simulation("a candidate without a model".into()))?;
            step(runner, model, row, actions)?;
        }
        for (features, model) in models.iter_mut() {
            for event in &row.events {
                match features {
                    Features::Context => model.fold(event)?,
                    Features::Constant => model.fold(&FeedbackEvent { context_vector: features.input(&event.context_vector).to_vec(), ..event.clone() })?,
                }
            }
            if (seen + offset + 1).is_multiple_of(publish_every) {
                model.publish()?;
            }
        }
    }
    Ok(())
}

/// One candidate on one row: its decision, and every estimator's terms.
fn step(runner: &mut Runner, model: &bandit_core::Model, row: &Row, actions: &[String]) -> Result<()> {
    let (spec, decider) = (&runner.spec, &mut runner.decider);
    let choice = Choice { policy: spec.policy, alpha: spec.alpha, top: 1, probabilities: false };
    let placed = decider.decide(model, choice, spec.features.input(&row.context), actions, &mut runner.rng)?;
    let (logged, mu, reward) = (row.slate.first(), row.mu.first(), row.rewards.first());
    if let (Some(&logged), Some(&mu), Some(&reward)) = (logged, mu, reward) {
        runner.accumulator.add(&decider.probabilities, logged, mu, reward, &row.qhat, placed.index as usize);
    }
    if decider.conditional(spec.policy, spec.alpha, &row.slate, &mut runner.conditional).is_some() {
        if let Some(cascade) = runner.cascade.as_mut() {
            cascade.add(&runner.conditional, &row.mu, &row.rewards);
        }
    } else {
        runner.cascade = None;
    }
    if runner.independent.is_some() {
        match (&row.marginal, decider.marginals(spec.policy, spec.alpha, &row.slate, &mut runner.marginals)) {
            (Some(mu), Some(())) => {
                if let Some(independent) = runner.independent.as_mut() {
                    independent.add(&runner.marginals, mu, &row.rewards);
                }
            }
            _ => runner.independent = None,
        }
    }
    Ok(())
}

/// Adds the true on-policy CTR to every candidate: the log must be a
/// generated one (`bandit generate --format decisions`) with this `seed`
/// and `publish_every`, which the check of its actions partly confirms.
///
/// # Errors
/// A log whose actions are not the shop's for this seed; the walk's errors.
pub fn add_truth(report: &mut OpeReport, seed: u64) -> Result<()> {
    let walk = crate::lab::generate::ShopWalk {
        events: report.decisions,
        seed,
        arms: report.actions.len(),
        publish_every: report.config.publish_every,
        top: report.top,
    };
    let expected = crate::lab::generate::shop_actions(seed, walk.arms)?;
    if expected != report.actions {
        return Err(ClientError::Input(format!(
            "--truth: the log's actions are not those of a shop generated with --seed {seed} and --arms {}",
            walk.arms
        )));
    }
    // One thread per candidate: the walks are independent.
    let truths: Vec<Result<truth::Truth>> = std::thread::scope(|scope| {
        let handles: Vec<_> = report.candidates.iter().map(|c| scope.spawn(|| truth::true_ctr(&walk, &c.spec))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(ClientError::Simulation("a truth thread panicked".into())))).collect()
    });
    for (candidate, truth) in report.candidates.iter_mut().zip(truths) {
        let truth = truth?;
        candidate.truth = Some(truth.top);
        candidate.truth_slate = Some(truth.slate);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::float_cmp)]
mod tests {
    use super::*;
    use crate::lab::generate::{generate_decisions, ShopWalk};
    use bandit_core::join::Decision;

    fn log(policy: &str, events: usize, seed: u64) -> (String, f64) {
        slates(policy, events, seed, 1)
    }

    fn slates(policy: &str, events: usize, seed: u64, top: usize) -> (String, f64) {
        let walk = ShopWalk { events, seed, arms: 6, publish_every: DEFAULT_PUBLISH_EVERY, top };
        let mut out = Vec::new();
        let ctr = generate_decisions(&walk, candidates::parse_policy(policy).unwrap(), 0.5, &mut out).unwrap();
        (String::from_utf8(out).unwrap(), ctr)
    }

    /// Every line is the decisions contract (it parses as core's
    /// `Decision`) plus a reward per shown item, and the log is a function
    /// of the seed.
    #[test]
    fn generated_lines_are_the_decisions_contract_plus_rewards() {
        let (text, ctr) = log("softmax:0.1", 300, 4);
        assert_eq!(text, log("softmax:0.1", 300, 4).0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 300);
        let mut clicks = 0.0;
        for line in &lines {
            let decision: Decision = serde_json::from_str(line).unwrap();
            assert_eq!(decision.policy, "softmax:0.1");
            assert_eq!(decision.context.len(), 15);
            assert_eq!(decision.shown.len(), 1);
            assert!(decision.shown[0].probability > 0.0 && decision.shown[0].probability <= 1.0);
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let reward = value["shown"][0]["reward"].as_f64().unwrap();
            assert!(reward == 0.0 || reward == 1.0);
            clicks += reward;
        }
        assert_eq!(clicks / 300.0, ctr);
    }

    /// The logging policy evaluated as a candidate (same α, same publish
    /// cadence, learning on its own log) has the logger's model at every
    /// event, so π(a|x) equals the logged probability: every weight is 1,
    /// IPS and SNIPS equal the mean logged reward, and the ESS is n. This
    /// checks the closed-form π of ε-greedy and softmax against the
    /// probabilities `policy::choose` wrote into the log.
    #[test]
    fn the_logging_policy_as_a_candidate_has_weight_one() {
        for policy in ["egreedy:0.3", "softmax:0.2"] {
            let (text, ctr) = log(policy, 400, 9);
            let grid = candidates::parse_grid(&format!("{policy}:alpha=0.5")).unwrap();
            let report = evaluate(&LogSource::Text(text), &grid, &OpeConfig::default()).unwrap();
            assert_eq!(report.decisions, 400);
            assert!((report.logged.value - ctr).abs() < 1e-12);
            let c = &report.candidates[0];
            for name in ["IPS", "SNIPS"] {
                let e = c.get(name).unwrap();
                assert!((e.value - ctr).abs() < 1e-9, "{policy} {name}: {} vs {ctr}", e.value);
                assert!((e.ess - 400.0).abs() < 1e-6, "{policy} {name}: ESS {}", e.ess);
            }
        }
    }

    /// The same on slates of three: each logged item's conditional
    /// probability under the logger-as-candidate equals the logged one, so
    /// every cascade weight is 1 and RIPS is the mean slate reward (the
    /// share of slates clicked), with ESS n. So is every position-wise
    /// weight (the candidate's marginals, summed over the sets above, equal
    /// the ones the simulator logged), so PIPS is the same mean. Thompson
    /// sampling has neither.
    #[test]
    fn slates_the_logging_policy_as_a_candidate_has_cascade_weight_one() {
        for policy in ["egreedy:0.3", "softmax:0.2"] {
            let (text, ctr) = slates(policy, 300, 5, 3);
            assert!(text.lines().all(|l| serde_json::from_str::<Decision>(l).unwrap().shown.len() == 3));
            let grid = candidates::parse_grid(&format!("{policy}:alpha=0.5;ts")).unwrap();
            let report = evaluate(&LogSource::Text(text), &grid, &OpeConfig::default()).unwrap();
            assert_eq!(report.top, 3);
            assert!((report.logged_slate.value - ctr).abs() < 1e-12);
            let me = report.candidates.iter().find(|c| c.spec.name.starts_with(policy)).unwrap();
            let rips = me.get("RIPS").unwrap();
            assert!((rips.value - ctr).abs() < 1e-9, "{policy}: RIPS {} vs {ctr}", rips.value);
            assert!((rips.ess - 300.0).abs() < 1e-6, "{policy}: ESS {}", rips.ess);
            let pips = me.get("PIPS").unwrap();
            assert!((pips.value - ctr).abs() < 1e-9, "{policy}: PIPS {} vs {ctr}", pips.value);
            assert!((pips.ess - 300.0).abs() < 1e-6, "{policy}: PIPS ESS {}", pips.ess);
            let ts = report.candidates.iter().find(|c| c.spec.name == "ts").unwrap();
            assert!(ts.get("RIPS").is_none() && ts.get("PIPS").is_none());
        }
    }

    /// Without the logger's marginals (a log from the topics) PIPS is n/a;
    /// RIPS needs only the logged conditional probabilities.
    #[test]
    fn slates_without_marginals_have_no_position_wise_ips() {
        let (text, _) = slates("egreedy:0.3", 100, 5, 3);
        let mut stripped = String::new();
        for line in text.lines() {
            let mut d: LoggedDecision = serde_json::from_str(line).unwrap();
            assert!(d.shown.iter().all(|s| s.marginal.is_some()));
            d.shown.iter_mut().for_each(|s| s.marginal = None);
            stripped.push_str(&serde_json::to_string(&d).unwrap());
            stripped.push('\n');
        }
        let grid = candidates::parse_grid("egreedy:0.1").unwrap();
        let report = evaluate(&LogSource::Text(stripped), &grid, &OpeConfig::default()).unwrap();
        assert!(report.candidates[0].get("RIPS").is_some());
        assert!(report.candidates[0].get("PIPS").is_none());
    }

    /// Popularity ranks by each action's reward per impression so far,
    /// θ = Σ r / (λ + n) with λ = 1, whatever the context (which varies
    /// here and is ignored). Six hand-made decisions over "a" and "b", each
    /// logged with μ = 0.5, one publish per event; the walk is in the
    /// comments below.
    #[test]
    fn popularity_ranks_by_observed_reward_rate() {
        let decision = |i: usize, product: &str, mu: f64, reward: f64, context: f64| {
            format!(
                r#"{{"event_id":"e{i}","model":"m","model_version":0,"policy":"egreedy:0.5","context":[{context},1.0],"shown":[{{"product_id":"{product}","position":0,"probability":{mu},"reward":{reward}}}],"timestamp":{i}}}"#
            )
        };
        let rows = [("a", 0.5, 1.0), ("b", 0.5, 1.0), ("a", 0.5, 0.0), ("b", 0.5, 1.0), ("b", 0.5, 0.0), ("a", 0.5, 1.0)];
        let text: Vec<String> = rows.iter().enumerate().map(|(i, (p, mu, r))| decision(i, p, *mu, *r, i as f64 * 0.37)).collect();
        let grid = candidates::parse_grid("popularity").unwrap();
        assert_eq!(grid[0].alpha, 0.0);
        let config = OpeConfig { publish_every: 1, ..OpeConfig::default() };
        let report = evaluate(&LogSource::Text(text.join("\n")), &grid, &config).unwrap();
        // π of each event: 1 on the best so far (ties: the first action, "a").
        // after e0 (a:1/1): a 0.5, b 0      -> e1 picks a; logged b: w 0
        // after e1 (b:1/1): a 0.5, b 0.5    -> e2 picks a (tie); logged a: w 2, r 0
        // after e2 (a:1/2): a 1/3, b 0.5    -> e3 picks b; logged b: w 2, r 1
        // after e3 (b:2/2): a 1/3, b 2/3    -> e4 picks b; logged b: w 2, r 0
        // after e4 (b:2/3): a 1/3, b 0.5    -> e5 picks b; logged a: w 0
        // e0: nothing learnt, picks a, logged a: w 2, r 1.
        // IPS = (2 + 0 + 0 + 2 + 0 + 0) / 6
        let ips = report.candidates[0].get("IPS").unwrap();
        assert!((ips.value - 4.0 / 6.0).abs() < 1e-12, "IPS {}", ips.value);
        let names: Vec<&str> = report.actions.iter().map(String::as_str).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn bad_logs_are_clear_errors() {
        let grid = candidates::parse_grid("random").unwrap();
        let error = evaluate(&LogSource::Text("{\"x\":1}\n".into()), &grid, &OpeConfig::default()).unwrap_err().to_string();
        assert!(error.starts_with("line 1: not a joined decision"), "{error}");
        let zero = r#"{"event_id":"e","model":"m","model_version":0,"policy":"ucb","context":[1.0],"shown":[{"product_id":"a","position":0,"probability":0.0,"reward":1.0}],"timestamp":0}"#;
        let error = evaluate(&LogSource::Text(zero.into()), &grid, &OpeConfig::default()).unwrap_err().to_string();
        assert!(error.contains("probability in (0, 1]"), "{error}");
        assert!(evaluate(&LogSource::Text(String::new()), &grid, &OpeConfig::default()).unwrap_err().to_string().contains("empty"));
    }
}
