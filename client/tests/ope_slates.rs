//! Slates: the 95 % intervals of RIPS (the cascade estimator) contain the
//! true on-policy share of clicked slates.
//!
//! For each of ten seeds (1 to 10), the simulated shop logs 3000 slates of
//! three of an ε-greedy policy (ε = 0.2, α = 1, 10 actions) that learns
//! online; the visitor reads each slate top-down and clicks at most one item
//! (the cascade RIPS assumes). Every candidate of the grid is evaluated on
//! that log, and its true slate CTR is measured by running it on-policy in
//! the shop with the same seed (`bandit evaluate --truth`). The truth comes
//! from the shop's hidden click model, independent of the estimators.
//! Deterministic: every draw is seeded.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use bandit::lab::generate::{generate_decisions, ShopWalk, DEFAULT_ARMS};
use bandit::lab::ope::{self, candidates, log::LogSource, OpeConfig};

const SEEDS: [u64; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
const EVENTS: usize = 3000;
const TOP: usize = 3;

/// Per candidate of `grid`: in how many seeds the interval of `estimator`
/// held the true slate CTR, and the lines that say so.
fn coverage(grid: &str, estimator: &str) -> (Vec<(String, usize)>, Vec<String>) {
    let grid = candidates::parse_grid(grid).unwrap();
    let logging = candidates::parse_policy("egreedy:0.2").unwrap();
    let mut covered = vec![0usize; grid.len()];
    let mut lines = Vec::new();
    for seed in SEEDS {
        let walk = ShopWalk { events: EVENTS, seed, arms: DEFAULT_ARMS, publish_every: ope::DEFAULT_PUBLISH_EVERY, top: TOP };
        let mut text = Vec::new();
        generate_decisions(&walk, logging, 1.0, &mut text).unwrap();
        let config = OpeConfig { seed, ..OpeConfig::default() };
        let mut report = ope::evaluate(&LogSource::Text(String::from_utf8(text).unwrap()), &grid, &config).unwrap();
        ope::add_truth(&mut report, seed).unwrap();
        for result in &report.candidates {
            let k = grid.iter().position(|c| c.name == result.spec.name).unwrap();
            let truth = result.truth_slate.unwrap();
            let e = result.get(estimator).unwrap();
            let inside = e.low <= truth && truth <= e.high;
            covered[k] += usize::from(inside);
            lines.push(format!(
                "seed {seed} {} {estimator}: {:.4} [{:.4}, {:.4}] ESS {:.0}, truth {truth:.4}{}",
                result.spec.name,
                e.value,
                e.low,
                e.high,
                e.ess,
                if inside { "" } else { "  MISSED" }
            ));
        }
    }
    (grid.iter().map(|c| c.name.clone()).zip(covered).collect(), lines)
}

/// Each candidate's interval holds the truth in at least 9 of the 10
/// seeds. Measured when this was written: 10/10 for all but softmax:0.05
/// (9/10). Not in the grid: `ts` (RIPS n/a) and `popularity`, whose fixed
/// slate the ε-greedy log seldom shows whole (RIPS ESS 2 to 8 of 3000): it
/// covered in 8 of 10 seeds, below the bar, as the README reports.
#[test]
fn rips_intervals_cover_the_true_slate_ctr() {
    let (covered, lines) = coverage("ucb:alpha=0.1,1;egreedy:0.1;egreedy:0.3;softmax:0.05;random", "RIPS");
    let failures: Vec<String> = covered.iter().filter(|(_, n)| *n < 9).map(|(name, n)| format!("{name}: {n}/10")).collect();
    assert!(failures.is_empty(), "RIPS coverage below 9/10: {failures:?}\n{}", lines.join("\n"));
}

