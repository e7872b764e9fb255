//! The randomised policies: the frequencies with which they place items
//! match the probabilities they report (chi-square, fixed seeds), and those
//! probabilities match formulas and a Monte Carlo written here, apart from
//! the code under test.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeMap;

use bandit_core::policy::{choose, seed, Candidate, Placed, Policy, PolicyScratch};
use bandit_core::rng::Rng;

/// Five candidates, best first by UCB (α = 0.5): scores 1.0, 0.8, 0.7, 0.4, 0.1.
fn candidates() -> Vec<Candidate> {
    [(0.8, 0.4), (0.7, 0.2), (0.5, 0.4), (0.3, 0.2), (0.0, 0.2)]
        .iter()
        .zip(10u32..)
        .map(|(&(mean, width), index)| Candidate { index, mean, width })
        .collect()
}
const ALPHA: f64 = 0.5;

fn run(policy: Policy, top: usize, draws: u64) -> Vec<Vec<Placed>> {
    let candidates = candidates();
    let mut scratch = PolicyScratch::default();
    (0..draws)
        .map(|draw| {
            let mut rng = Rng::new(seed(format!("event-{draw}").as_bytes(), 7));
            let mut out = Vec::new();
            choose(policy, ALPHA, &candidates, top, &mut rng, &mut scratch, &mut out);
            out
        })
        .collect()
}

/// Pearson's statistic of observed counts against expected probabilities.
fn chi_square(observed: &BTreeMap<u32, u64>, expected: &BTreeMap<u32, f64>, total: u64) -> f64 {
    expected
        .iter()
        .map(|(index, p)| {
            let want = p * total as f64;
            let got = *observed.get(index).unwrap_or(&0) as f64;
            if want == 0.0 {
                assert_eq!(got, 0.0, "{index} was placed with probability 0");
                return 0.0;
            }
            (got - want).powi(2) / want
        })
        .sum()
}

/// The 99.9th percentile of χ² with 4 degrees of freedom (five categories).
const CHI2_4DF_999: f64 = 18.467;

/// Checks the first slot's frequencies against `first`, and the second
/// slot's (given the most frequent first item) against `second(first item)`;
/// and that every reported probability is the expected one.
fn check(policy: Policy, first: &BTreeMap<u32, f64>, second: impl Fn(u32) -> BTreeMap<u32, f64>) {
    let draws = 40_000;
    let runs = run(policy, 2, draws);
    let mut counts = BTreeMap::new();
    for out in &runs {
        *counts.entry(out[0].index).or_insert(0u64) += 1;
        let want = first[&out[0].index];
        assert!((out[0].probability - want).abs() < 1e-12, "{policy:?}: slot 0 reported {} for {}, expected {want}", out[0].probability, out[0].index);
        let want = second(out[0].index)[&out[1].index];
        assert!((out[1].probability - want).abs() < 1e-12, "{policy:?}: slot 1 reported {}, expected {want}", out[1].probability);
    }
    let statistic = chi_square(&counts, first, draws);
    assert!(statistic < CHI2_4DF_999, "{policy:?}: slot 0 χ² = {statistic}, counts {counts:?}, expected {first:?}");
    let (&top_first, _) = counts.iter().max_by_key(|(_, n)| **n).unwrap();
    let mut given = BTreeMap::new();
    let mut total = 0;
    for out in runs.iter().filter(|out| out[0].index == top_first) {
        *given.entry(out[1].index).or_insert(0u64) += 1;
        total += 1;
    }
    let expected = second(top_first);
    let statistic = chi_square(&given, &expected, total);
    // Four remaining categories: 3 degrees of freedom, 99.9th percentile 16.27.
    assert!(statistic < 16.266, "{policy:?}: slot 1 χ² = {statistic}, counts {given:?}, expected {expected:?}");
}

#[test]
fn egreedy_places_as_it_reports() {
    let epsilon = 0.3;
    let ids: Vec<u32> = (10..15).collect();
    // Best first: 10, 11, 12, 13, 14. Slot 0: the best gets 1 − ε + ε/5.
    let first: BTreeMap<u32, f64> = ids.iter().map(|&i| (i, if i == 10 { 1.0 - epsilon + epsilon / 5.0 } else { epsilon / 5.0 })).collect();
    let second = |placed: u32| {
        let best = ids.iter().copied().find(|&i| i != placed).unwrap();
        ids.iter().filter(|&&i| i != placed).map(|&i| (i, if i == best { 1.0 - epsilon + epsilon / 4.0 } else { epsilon / 4.0 })).collect()
    };
    check(Policy::EpsilonGreedy { epsilon }, &first, second);
}

#[test]
fn softmax_places_as_plackett_luce() {
    let temperature = 0.2;
    let scores = [(10u32, 1.0), (11, 0.8), (12, 0.7), (13, 0.4), (14, 0.1)];
    let share = |among: &[(u32, f64)]| -> BTreeMap<u32, f64> {
        let total: f64 = among.iter().map(|(_, s)| (s / temperature).exp()).sum();
        among.iter().map(|&(i, s)| (i, (s / temperature).exp() / total)).collect()
    };
    let first = share(&scores);
    let second = |placed: u32| share(&scores.iter().copied().filter(|(i, _)| *i != placed).collect::<Vec<_>>());
    check(Policy::Softmax { temperature }, &first, second);
}

/// A Box–Muller normal from the test's own uniform stream.
fn normal(state: &mut u64) -> f64 {
    let mut unit = || {
        *state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((*state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let (u, v) = (unit(), unit());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

#[test]
fn thompson_sampling_reports_the_probability_of_drawing_highest() {
    // Monte Carlo of P(item i's draw is the highest), independent of the policy code.
    let candidates = candidates();
    let trials = 400_000;
    let mut state = 99;
    let mut wins = BTreeMap::new();
    for _ in 0..trials {
        let best = candidates
            .iter()
            .map(|c| (c.mean + ALPHA * c.width * normal(&mut state), c.index))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap()
            .1;
        *wins.entry(best).or_insert(0u64) += 1;
    }
    let monte_carlo: BTreeMap<u32, f64> = candidates.iter().map(|c| (c.index, *wins.get(&c.index).unwrap_or(&0) as f64 / trials as f64)).collect();

    let runs = run(Policy::Thompson, 1, 40_000);
    let mut counts = BTreeMap::new();
    for out in &runs {
        *counts.entry(out[0].index).or_insert(0u64) += 1;
        let mc = monte_carlo[&out[0].index];
        let standard_error = (mc * (1.0 - mc) / trials as f64).sqrt();
        assert!((out[0].probability - mc).abs() < 5.0 * standard_error + 1e-6, "TS reported {} for {}, Monte Carlo {mc}", out[0].probability, out[0].index);
    }
    let reported: BTreeMap<u32, f64> = runs.iter().map(|out| (out[0].index, out[0].probability)).collect();
    assert!((reported.values().sum::<f64>() - 1.0).abs() < 1e-6, "first-slot probabilities of the items seen sum to 1: {reported:?}");
    let statistic = chi_square(&counts, &monte_carlo, 40_000);
    assert!(statistic < CHI2_4DF_999, "TS slot 0 χ² = {statistic}: {counts:?} vs {monte_carlo:?}");
}

#[test]
fn ucb_is_the_ranking_itself_with_probability_one() {
    for out in run(Policy::Ucb, 3, 10) {
        let got: Vec<(u32, f64, f64)> = out.iter().map(|p| (p.index, p.score, p.probability)).collect();
        assert_eq!(got, [(10, 1.0, 1.0), (11, 0.7999999999999999, 1.0), (12, 0.7, 1.0)]);
    }
}

#[test]
fn the_same_event_and_version_give_the_same_placement() {
    let candidates = candidates();
    let mut scratch = PolicyScratch::default();
    let place = |event: &str, version: u64, scratch: &mut PolicyScratch| {
        let mut out = Vec::new();
        let mut rng = Rng::new(seed(event.as_bytes(), version));
        choose(Policy::Softmax { temperature: 1.0 }, ALPHA, &candidates, 5, &mut rng, scratch, &mut out);
        out.iter().map(|p| p.index).collect::<Vec<_>>()
    };
    let once = place("e-42", 3, &mut scratch);
    assert_eq!(place("e-42", 3, &mut scratch), once);
    let others: Vec<Vec<u32>> = (0..20).map(|v| place("e-42", 100 + v, &mut scratch)).collect();
    assert!(others.iter().any(|o| *o != once), "another model version draws again");
    // FNV-1a of "a" (0xaf63dc4c8601ec8c), mixed with version 0: itself.
    assert_eq!(seed(b"a", 0), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn bad_parameters_are_refused() {
    assert!(Policy::EpsilonGreedy { epsilon: 1.5 }.validate().is_err());
    assert!(Policy::EpsilonGreedy { epsilon: -0.1 }.validate().is_err());
    assert!(Policy::EpsilonGreedy { epsilon: 1.0 }.validate().is_ok());
    assert!(Policy::Softmax { temperature: 0.0 }.validate().is_err());
    assert!(Policy::Softmax { temperature: f64::NAN }.validate().is_err());
    assert!(Policy::Thompson.validate().is_ok());
    assert_eq!("EGreedy:0.2".parse::<Policy>().unwrap(), Policy::EpsilonGreedy { epsilon: 0.2 });
    assert_eq!("softmax:0.05".parse::<Policy>().unwrap(), Policy::Softmax { temperature: 0.05 });
    assert_eq!("ts".parse::<Policy>().unwrap(), Policy::Thompson);
    assert_eq!("ucb".parse::<Policy>().unwrap(), Policy::Ucb);
    for bad in ["egreedy", "egreedy:2", "softmax:0", "softmax:x", "ucb:1", "greedy"] {
        assert!(bad.parse::<Policy>().is_err(), "{bad}");
    }
}

#[test]
fn every_policy_places_each_candidate_at_most_once() {
    for policy in [Policy::Ucb, Policy::EpsilonGreedy { epsilon: 0.7 }, Policy::Softmax { temperature: 0.3 }, Policy::Thompson] {
        for top in [1, 3, 5, 9] {
            for out in run(policy, top, 50) {
                let mut ids: Vec<u32> = out.iter().map(|p| p.index).collect();
                assert_eq!(ids.len(), top.min(5), "{policy:?} TOP {top}");
                ids.sort_unstable();
                ids.dedup();
                assert_eq!(ids.len(), top.min(5), "{policy:?} TOP {top}: a candidate placed twice");
                // The last slot of a full permutation has one candidate left.
                if top >= 5 && policy != Policy::Thompson {
                    assert!((out[4].probability - 1.0).abs() < 1e-9, "{policy:?}: {:?}", out[4]);
                }
            }
        }
    }
}
