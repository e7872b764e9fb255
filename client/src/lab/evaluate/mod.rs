//! Offline policy evaluation: split a logged history by time, fit each
//! policy on the first part, ask it for a top-k for every test context, and
//! score the lists against what was logged (see [`metrics`]).

mod clusters;
mod linear;
pub mod metrics;
pub mod policies;
mod training;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::{ClientError, Result};
use crate::history::{HistoryLog, LogRow};
use metrics::{Judged, Metrics};
use policies::{Arms, Policy, Training};

/// How to evaluate.
#[derive(Debug, Clone, Copy)]
pub struct EvalConfig {
    pub top_k: usize,
    /// Share of the log, at its end, held out for testing.
    pub test_fraction: f64,
    pub seed: u64,
    /// Forgetting γ of the linear policies, in (0, 1]; 1: none. Training
    /// rows are folded in log (time) order, so later ones weigh more.
    pub decay: f64,
}

/// One policy's result.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyResult {
    pub name: String,
    pub metrics: Metrics,
    pub seconds: f64,
}

/// Evaluates every policy on `log`. `items`, when given, is the candidate
/// set; otherwise every product in the log is a candidate.
///
/// # Errors
/// An empty training or test split, or a policy's numerical failure.
pub fn evaluate(log: &HistoryLog, items: Option<Vec<String>>, config: &EvalConfig) -> Result<Vec<PolicyResult>> {
    if !(config.test_fraction > 0.0 && config.test_fraction < 1.0) {
        return Err(ClientError::Input(format!("--test-fraction must be between 0 and 1, got {}", config.test_fraction)));
    }
    if !(config.decay > 0.0 && config.decay <= 1.0) {
        return Err(ClientError::Input(format!("--decay must be in (0, 1], got {}", config.decay)));
    }
    let rows = log.rows.len();
    let test_rows = (rows as f64 * config.test_fraction).round() as usize;
    if test_rows == 0 {
        return Err(ClientError::Input(format!(
            "the test split is empty: {rows} rows with --test-fraction {}",
            config.test_fraction
        )));
    }
    if test_rows >= rows {
        return Err(ClientError::Input(format!("the training split is empty: {rows} rows with --test-fraction {}", config.test_fraction)));
    }
    let (train, test) = log.rows.split_at(rows - test_rows);
    let ids = items.unwrap_or_else(|| {
        // Sorted and distinct. A hash set first: it meets each row once and
        // copies nothing, then only the few distinct ids are sorted.
        let distinct: std::collections::HashSet<&str> = log.rows.iter().map(|r| r.product_id.as_str()).collect();
        let mut ids: Vec<String> = distinct.into_iter().map(str::to_owned).collect();
        ids.sort_unstable();
        ids
    });
    let arms = Arms::new(ids);
    let dim = log.feature_names.len();
    let training = Training::new(train, &arms, policies::linear_settings(dim, config.decay));
    let test = Test { rows: test, arm_of: arms.positions(test) };
    let policies = policies::all(dim, config.seed, config.decay);
    // Policies are independent and each draws from its own seeded stream,
    // so running them side by side changes no number; results keep the
    // policies' order, and the first error in that order is the one
    // reported, as when they ran one after another.
    let count = policies.len();
    let queue: Vec<Mutex<Box<dyn Policy>>> = policies.into_iter().map(Mutex::new).collect();
    let results: Vec<Mutex<Option<Result<PolicyResult>>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(count);
    let worker = || {
        let mut list = Vec::with_capacity(config.top_k);
        loop {
            let taken = next.fetch_add(1, Ordering::Relaxed);
            // The costliest policies are listed last: taking the list from
            // its end starts them first, so no thread is left with one of
            // them alone at the end.
            let Some(index) = count.checked_sub(taken + 1) else { break };
            let (Some(policy), Some(slot)) = (queue.get(index), results.get(index)) else { break };
            let mut policy = policy.lock().unwrap_or_else(PoisonError::into_inner);
            let result = run(policy.as_mut(), &training, &test, config.top_k, &mut list);
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(worker);
        }
        worker();
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .unwrap_or_else(|| Err(ClientError::Simulation("a policy thread stopped before its policy ran".into())))
        })
        .collect()
}

/// The test split, each row's logged product as a candidate index.
struct Test<'a> {
    rows: &'a [LogRow],
    arm_of: Vec<Option<usize>>,
}

/// Fits one policy, asks it for a top-k per test row and scores the lists.
fn run(policy: &mut dyn Policy, training: &Training<'_>, test: &Test<'_>, k: usize, list: &mut Vec<(usize, f64)>) -> Result<PolicyResult> {
    let started = std::time::Instant::now();
    policy.fit(training)?;
    let mut judged = Vec::with_capacity(test.rows.len());
    for (row, &logged) in test.rows.iter().zip(&test.arm_of) {
        policy.recommend(&row.context, k, list)?;
        let matched_score = list.iter().find(|(arm, _)| Some(*arm) == logged).map(|&(_, score)| score);
        judged.push(Judged { response: row.response, matched_score });
    }
    Ok(PolicyResult { name: policy.name().to_owned(), metrics: metrics::compute(&judged, k), seconds: started.elapsed().as_secs_f64() })
}

fn cell(value: f64) -> String {
    if value.is_nan() {
        "n/a".into()
    } else {
        format!("{value:.3}")
    }
}

/// The result as a Markdown table, like the reference design's.
#[must_use]
pub fn table(results: &[PolicyResult], k: usize) -> String {
    let mut out = format!("| Model | AUC@{k} | CTR@{k} | Precision@{k} | Recall@{k} |\n|---|---|---|---|---|\n");
    for r in results {
        let m = &r.metrics;
        let _ = writeln!(out, "| {} | {} | {} | {} | {} |", r.name, cell(m.auc), cell(m.ctr), cell(m.precision), cell(m.recall));
    }
    out
}

/// `{"LinUCB": {"auc": …, "ctr": …, "precision": …, "recall": …}, …}` (null where undefined).
#[must_use]
pub fn json(results: &[PolicyResult]) -> String {
    let number = |v: f64| if v.is_nan() { serde_json::Value::Null } else { serde_json::json!(v) };
    let map: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|r| {
            let m = &r.metrics;
            (r.name.clone(), serde_json::json!({"auc": number(m.auc), "ctr": number(m.ctr), "precision": number(m.precision), "recall": number(m.recall)}))
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// CSV with a header.
#[must_use]
pub fn csv(results: &[PolicyResult]) -> String {
    let mut out = String::from("model,auc,ctr,precision,recall\n");
    for r in results {
        let m = &r.metrics;
        let v = |x: f64| if x.is_nan() { String::new() } else { x.to_string() };
        let _ = writeln!(out, "{},{},{},{},{}", r.name, v(m.auc), v(m.ctr), v(m.precision), v(m.recall));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::lab::generate::generate_log;
    use crate::history::parse_log;

    #[test]
    fn evaluates_all_policies_deterministically_and_linucb_beats_random() {
        let (log_csv, _) = generate_log(20_000, 7);
        let log = parse_log(&log_csv, "log.csv").unwrap();
        let config = EvalConfig { top_k: 5, test_fraction: 0.2, seed: 3, decay: 1.0 };
        let results = evaluate(&log, None, &config).unwrap();
        let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["Random", "Popularity", "LinGreedy", "LinUCB", "LinTS", "ClustersTS"]);
        let by_name = |name: &str| results.iter().find(|r| r.name == name).unwrap().metrics;
        assert!(by_name("LinUCB").auc > by_name("Random").auc + 0.1, "{}", table(&results, 5));
        assert!(by_name("LinUCB").ctr > by_name("Random").ctr, "{}", table(&results, 5));
        let again = evaluate(&log, None, &config).unwrap();
        assert_eq!(
            results.iter().map(|r| r.metrics).collect::<Vec<_>>(),
            again.iter().map(|r| r.metrics).collect::<Vec<_>>()
        );
        let parsed: serde_json::Value = serde_json::from_str(&json(&results)).unwrap();
        assert_eq!(parsed["LinUCB"]["ctr"].as_f64(), Some(by_name("LinUCB").ctr));
        assert_eq!(parsed.as_object().unwrap().len(), 6);
        println!("{}", table(&results, 5));
        assert!(csv(&results).starts_with("model,auc,ctr,precision,recall\nRandom,"));
    }

    #[test]
    fn empty_splits_are_clear_errors() {
        let log = parse_log("a,product_id,response\n1,x,1\n2,y,0\n", "tiny.csv").unwrap();
        let config = EvalConfig { top_k: 5, test_fraction: 0.2, seed: 1, decay: 1.0 };
        assert_eq!(evaluate(&log, None, &config).unwrap_err().to_string(), "the test split is empty: 2 rows with --test-fraction 0.2");
        let config = EvalConfig { test_fraction: 0.9, ..config };
        assert!(evaluate(&log, None, &config).unwrap_err().to_string().contains("training split is empty"));
    }

    #[test]
    fn linucb_scores_are_the_cores() {
        use bandit_core::{Limits, Model, ModelSettings, RankRequest, RankScratch};
        let (log_csv, _) = generate_log(3_000, 9);
        let log = parse_log(&log_csv, "log.csv").unwrap();
        let (train, test) = log.rows.split_at(2_400);
        let mut ids: Vec<String> = log.rows.iter().map(|r| r.product_id.clone()).collect();
        ids.sort();
        ids.dedup();
        let arms = Arms::new(ids.clone());
        let mut policy = policies::all(15, 1, 1.0).into_iter().find(|p| p.name() == "LinUCB").unwrap();
        policy.fit(&Training::new(train, &arms, policies::linear_settings(15, 1.0))).unwrap();
        // The same model built by hand from the same rows, ranked by the core.
        let mut accumulators = std::collections::BTreeMap::new();
        for row in train {
            accumulators
                .entry(row.product_id.clone())
                .or_insert_with(|| bandit_core::fold::ArmAccumulator::new(15, 1.0))
                .update(&row.context, row.response);
        }
        let mut work = bandit_core::cholesky::Workspace::default();
        let published = accumulators.iter().map(|(id, a)| a.to_payload(id, &mut work, None).unwrap()).collect();
        let mut model = Model::new(ModelSettings { dim: 15, alpha: 1.0, lambda: 1.0, decay: 1.0 });
        model.apply(&bandit_core::Payload { dim: 15, arms: published, offsets: vec![], settings: None, base_offsets: vec![], version: None, fences: vec![] }, 0, &Limits::default()).unwrap();
        let mut scratch = RankScratch::default();
        let mut list = Vec::new();
        for row in test.iter().take(50) {
            policy.recommend(&row.context, 5, &mut list).unwrap();
            let core = model.rank_candidates(&RankRequest { context: &row.context, alpha: 1.0, top: Some(5) }, &ids, &mut scratch).unwrap();
            let expected: Vec<(usize, f64)> = core.iter().map(|r| (r.index as usize, r.score)).collect();
            assert_eq!(list, expected);
        }
    }
}
