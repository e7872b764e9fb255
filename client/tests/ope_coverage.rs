//! The 95 % intervals of IPS, SNIPS and DR contain the true on-policy CTR.
//!
//! For each of ten seeds (1 to 10), the simulated shop logs 3000 top-1
//! decisions of an ε-greedy policy (ε = 0.2, α = 1, 10 actions) that learns
//! online; every candidate of the grid is evaluated on that log, and its true
//! CTR is measured by running it on-policy in the shop with the same seed
//! (`bandit evaluate --truth`). Each candidate's interval must contain its
//! truth in at least 9 of the 10 seeds, for each of the three estimators.
//! The truth comes from the shop's hidden click model, independent of the
//! estimators. Deterministic: every draw is seeded.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use bandit::lab::generate::{generate_decisions, ShopWalk, DEFAULT_ARMS};
use bandit::lab::ope::{self, candidates, log::LogSource, OpeConfig};

const SEEDS: [u64; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
const EVENTS: usize = 3000;
const GRID: &str = "ucb:alpha=0.1,1;ts;egreedy:0.1;softmax:0.05;random";

#[test]
fn intervals_of_ips_snips_and_dr_cover_the_true_ctr() {
    let grid = candidates::parse_grid(GRID).unwrap();
    let logging = candidates::parse_policy("egreedy:0.2").unwrap();
    // covered[candidate][estimator]
    let estimators = ["IPS", "SNIPS", "DR"];
    let mut covered = vec![[0usize; 3]; grid.len()];
    let mut lines = Vec::new();
    for seed in SEEDS {
        let walk = ShopWalk { events: EVENTS, seed, arms: DEFAULT_ARMS, publish_every: ope::DEFAULT_PUBLISH_EVERY, top: 1 };
        let mut text = Vec::new();
        generate_decisions(&walk, logging, 1.0, &mut text).unwrap();
        let config = OpeConfig { seed, ..OpeConfig::default() };
        let mut report = ope::evaluate(&LogSource::Text(String::from_utf8(text).unwrap()), &grid, &config).unwrap();
        ope::add_truth(&mut report, seed).unwrap();
        for result in &report.candidates {
            let k = grid.iter().position(|c| c.name == result.spec.name).unwrap();
            let truth = result.truth.unwrap();
            for (j, name) in estimators.iter().enumerate() {
                let e = result.get(name).unwrap();
                let inside = e.low <= truth && truth <= e.high;
                covered[k][j] += usize::from(inside);
                lines.push(format!("seed {seed} {} {name}: [{:.4}, {:.4}] truth {truth:.4}{}", result.spec.name, e.low, e.high, if inside { "" } else { "  MISSED" }));
            }
        }
    }
    let mut failures = Vec::new();
    for (candidate, counts) in grid.iter().zip(&covered) {
        for (name, count) in estimators.iter().zip(counts) {
            if *count < 9 {
                failures.push(format!("{} {name}: {count}/10", candidate.name));
            }
        }
    }
    assert!(failures.is_empty(), "coverage below 9/10: {failures:?}\n{}", lines.join("\n"));
}
