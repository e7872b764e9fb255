//! Property tests of the pruned top-k (`Model::rank_all` with TOP k): on
//! random models, trained, untrained (where nothing can be pruned) and mixed,
//! with copies of arms (ties broken by id), positive and centred contexts,
//! several alphas and every k, it must return exactly what the full scan
//! returns: the same arms in the same order with the same score bits.
//!
//! Two references: a dense textbook LinUCB written here (Gauss-Jordan
//! inverse, θ = A⁻¹b, xᵀθ + α√(xᵀA⁻¹x) in f64), against which the ids and
//! order must agree wherever no two scores are within single-precision
//! rounding of each other at the cut, and scores to single precision; and,
//! bit for bit, the unpruned scan (`rank_all` without TOP, which scores every
//! arm) — the kernel's f32 rounding cannot be reproduced independently.

#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic, clippy::needless_range_loop)]

use bandit_core::{ArmPayload, Limits, Model, ModelSettings, Payload, RankRequest, RankScratch, Ranked};
use proptest::prelude::*;

const LAMBDA: f64 = 1.5;

/// A small deterministic generator (values reproducible from the seed).
struct Gen(u64);

impl Gen {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Inverse of a dense SPD matrix by Gauss-Jordan elimination with partial pivoting.
fn dense_inverse(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut m: Vec<Vec<f64>> = a.iter().enumerate().map(|(i, row)| {
        let mut r = row.clone();
        r.extend((0..n).map(|j| if i == j { 1.0 } else { 0.0 }));
        r
    }).collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|&x, &y| m[x][col].abs().total_cmp(&m[y][col].abs())).unwrap();
        m.swap(col, pivot);
        let p = m[col][col];
        for v in m[col].iter_mut() {
            *v /= p;
        }
        for row in 0..n {
            if row != col {
                let f = m[row][col];
                for j in 0..2 * n {
                    let sub = f * m[col][j];
                    m[row][j] -= sub;
                }
            }
        }
    }
    m.into_iter().map(|r| r[n..].to_vec()).collect()
}

/// One arm of the test model: its payload and dense A⁻¹ and b.
struct Arm {
    a_inv: Vec<Vec<f64>>,
    b: Vec<f64>,
}

/// `kind`: 0 untrained, 1 trained on positive contexts, 2 trained on centred ones.
fn arm(dim: usize, kind: u8, events: usize, g: &mut Gen) -> Arm {
    let mut a = vec![vec![0.0; dim]; dim];
    for i in 0..dim {
        a[i][i] = LAMBDA;
    }
    let mut b = vec![0.0; dim];
    if kind != 0 {
        // A per-arm preference, so arms differ by more than noise.
        let truth: Vec<f64> = (0..dim).map(|_| g.unit() - 0.5).collect();
        for _ in 0..events {
            let x: Vec<f64> = (0..dim).map(|_| if kind == 1 { g.unit() } else { 2.0 * g.unit() - 1.0 }).collect();
            let mean: f64 = x.iter().zip(&truth).map(|(a, b)| a * b).sum();
            let reward = if g.unit() < (0.3 + mean).clamp(0.0, 1.0) { 1.0 } else { 0.0 };
            for i in 0..dim {
                for j in 0..dim {
                    a[i][j] += x[i] * x[j];
                }
                b[i] += reward * x[i];
            }
        }
    }
    Arm { a_inv: dense_inverse(&a), b }
}

fn packed(m: &[Vec<f64>]) -> Vec<f64> {
    let n = m.len();
    (0..n).flat_map(|i| (i..n).map(move |j| (i, j))).map(|(i, j)| (m[i][j] + m[j][i]) / 2.0).collect()
}

fn model_of(dim: usize, arms: &[Arm], ids: &[String]) -> Model {
    let mut model = Model::new(ModelSettings { dim, alpha: 1.0, lambda: LAMBDA, decay: 1.0 });
    let payload = Payload {
        dim,
        arms: arms
            .iter()
            .zip(ids)
            .map(|(arm, id)| ArmPayload { id: id.clone(), a_inv: packed(&arm.a_inv), b: arm.b.clone(), a: None, n: 1, reward_sum: 0.0, updated_ms: Some(1) })
            .collect(),
        ..Payload::default()
    };
    model.apply(&payload, 1, &Limits::unbounded()).unwrap();
    model
}

/// The textbook score, from the symmetrised A⁻¹ the model was given.
fn reference_score(arm: &Arm, x: &[f64], alpha: f64) -> f64 {
    let n = x.len();
    let sym = |i: usize, j: usize| (arm.a_inv[i][j] + arm.a_inv[j][i]) / 2.0;
    let theta: Vec<f64> = (0..n).map(|i| (0..n).map(|j| sym(i, j) * arm.b[j]).sum()).collect();
    let mean: f64 = (0..n).map(|i| x[i] * theta[i]).sum();
    let quad: f64 = (0..n).map(|i| (0..n).map(|j| x[i] * sym(i, j) * x[j]).sum::<f64>()).sum();
    mean + alpha * quad.max(0.0).sqrt()
}

struct Case {
    dim: usize,
    arms: Vec<Arm>,
    ids: Vec<String>,
    x: Vec<f64>,
}

fn case(seed: u64, dim: usize, count: usize, untrained_share: f64, copies: usize, centred: bool) -> Case {
    let mut g = Gen(seed);
    let mut arms = Vec::new();
    while arms.len() < count {
        let kind = if g.unit() < untrained_share { 0 } else if centred { 2 } else { 1 };
        let events = 1 + (g.unit() * 4.0 * dim as f64) as usize;
        let made = arm(dim, kind, events, &mut g);
        // Copies of an arm under other ids tie on score, bit for bit.
        for _ in 0..=copies.min(count - arms.len() - 1) {
            arms.push(Arm { a_inv: made.a_inv.clone(), b: made.b.clone() });
        }
    }
    // Ids in an order unrelated to the rows, so ties exercise the id order.
    let ids = (0..count).map(|k| format!("{:04}", (k * 7919) % 10_000)).collect();
    let x = (0..dim).map(|_| if centred { 2.0 * g.unit() - 1.0 } else { g.unit() }).collect();
    Case { dim, arms, ids, x }
}

fn check(case: &Case, alpha: f64, k: usize) -> bandit_core::kernel::PruneStats {
    let (top, stats) = check_against_the_full_scan(&model_of(case.dim, &case.arms, &case.ids), &case.x, alpha, k, 1);
    check_against_the_textbook(case, alpha, &top);
    stats
}

/// The pruned top k (on `threads` threads) is the full scan's head, bit
/// for bit; returns it and what was pruned.
fn check_against_the_full_scan(model: &Model, x: &[f64], alpha: f64, k: usize, threads: usize) -> (Vec<Ranked>, bandit_core::kernel::PruneStats) {
    let mut scratch = RankScratch::with_threads(threads);
    let request = RankRequest { context: x, alpha, top: None };
    let full: Vec<Ranked> = model.rank_all(&request, &mut scratch).unwrap().to_vec();
    assert_eq!(scratch.prune_stats().arms, 0, "no TOP: the full scan");
    let top: Vec<Ranked> = model.rank_all(&RankRequest { top: Some(k), ..request }, &mut scratch).unwrap().to_vec();
    let stats = scratch.prune_stats();
    let want = &full[..k.min(full.len())];
    assert_eq!(top.len(), want.len());
    for (got, want) in top.iter().zip(want) {
        assert_eq!(got.index, want.index, "k {k} alpha {alpha}: {top:?} vs {want:?}");
        assert_eq!(got.score.to_bits(), want.score.to_bits());
    }
    (top, stats)
}

fn check_against_the_textbook(case: &Case, alpha: f64, top: &[Ranked]) {
    // Against the textbook: scores to single precision, best first, ties by id.
    let reference: Vec<f64> = case.arms.iter().map(|arm| reference_score(arm, &case.x, alpha)).collect();
    let tolerance = |v: f64| 1e-4 * v.abs().max(1.0);
    for entry in top {
        let want = reference[entry.index as usize];
        assert!((entry.score - want).abs() <= tolerance(want), "score {} vs textbook {want}", entry.score);
    }
    // Order against the textbook, pair by pair: no two arms clearly
    // inverted, and textbook-equal scores (copies: equal bits in the kernel
    // too) by id. Pairs within rounding of each other may go either way, and
    // such an arm may shift its neighbours, so positions are not compared.
    let clear = |i: usize, j: usize| (reference[i] - reference[j]).abs() > 2.0 * tolerance(reference[i]);
    let before = |first: usize, second: usize| {
        assert!(!(clear(first, second) && reference[second] > reference[first]), "{} ranked above the clearly better {}", case.ids[first], case.ids[second]);
        if reference[first].to_bits() == reference[second].to_bits() {
            assert!(case.ids[first] < case.ids[second], "tie: {} ranked above {}", case.ids[first], case.ids[second]);
        }
    };
    let kept: Vec<usize> = top.iter().map(|entry| entry.index as usize).collect();
    for (position, &first) in kept.iter().enumerate() {
        for &second in &kept[position + 1..] {
            before(first, second);
        }
    }
    // Nothing left out is clearly better than (or tied ahead of) what was kept.
    for left_out in (0..case.arms.len()).filter(|i| !kept.contains(i)) {
        for &first in &kept {
            before(first, left_out);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn pruned_top_k_is_the_full_scan(
        seed in any::<u64>(),
        dim in 1usize..12,
        count in 1usize..400,
        untrained in prop_oneof![Just(0.0), Just(0.3), Just(1.0)],
        copies in 0usize..3,
        centred in any::<bool>(),
        alpha in prop_oneof![Just(0.0), Just(0.25), Just(1.0), Just(3.5)],
        k_share in 0.0f64..1.2,
    ) {
        let case = case(seed, dim, count, untrained, copies, centred);
        let k = 1 + (k_share * count as f64) as usize;
        let stats = check(&case, alpha, k);
        if k < count {
            prop_assert_eq!(stats.arms, count);
        }
        if untrained == 1.0 {
            // All arms score the prior: nothing can be pruned.
            prop_assert_eq!(stats.by_codes + stats.by_mean, 0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Models over 4 MB of rows (the scan prefetches the rows it reads),
    /// odd and even d, split between threads (each part has its own
    /// threshold), mixed trained and untrained arms with copies.
    #[test]
    fn large_models_on_threads_are_the_full_scan(
        seed in any::<u64>(),
        dim in prop_oneof![Just(31usize), Just(32)],
        count in 2000usize..2600,
        untrained in prop_oneof![Just(0.0), Just(0.3)],
        copies in 0usize..3,
        centred in any::<bool>(),
        alpha in prop_oneof![Just(0.0), Just(0.6), Just(2.0)],
        k in prop_oneof![Just(1usize), Just(10), Just(97), Just(1500)],
        threads in prop_oneof![Just(1usize), Just(3)],
    ) {
        let case = case(seed, dim, count, untrained, copies, centred);
        let (top, stats) = check_against_the_full_scan(&model_of(case.dim, &case.arms, &case.ids), &case.x, alpha, k, threads);
        check_against_the_textbook(&case, alpha, &top);
        prop_assert_eq!(stats.arms, count);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Contexts from 1e-30 to 1e18 (the query's integer scale, its
    /// quantisation error and underflow all change), compared with the
    /// full scan bit for bit.
    #[test]
    fn contexts_of_any_magnitude_are_the_full_scan(
        seed in any::<u64>(),
        dim in 1usize..12,
        count in 2usize..300,
        untrained in prop_oneof![Just(0.0), Just(0.3), Just(1.0)],
        centred in any::<bool>(),
        exponent in prop_oneof![Just(-30i32), Just(-12), Just(-3), Just(3), Just(12), Just(18)],
        alpha in prop_oneof![Just(0.0), Just(1.0), Just(3.5)],
        k_share in 0.0f64..1.0,
    ) {
        let case = case(seed, dim, count, untrained, 1, centred);
        let x: Vec<f64> = case.x.iter().map(|v| v * 10f64.powi(exponent)).collect();
        let k = 1 + (k_share * count as f64) as usize;
        check_against_the_full_scan(&model_of(case.dim, &case.arms, &case.ids), &x, alpha, k, 1);
    }
}

/// A zero context: every arm scores 0 (or its mean's sign of zero), ties
/// broken by id.
#[test]
fn a_zero_context_is_the_full_scan() {
    let case = case(5, 7, 300, 0.3, 1, true);
    let model = model_of(case.dim, &case.arms, &case.ids);
    for k in [1, 10, 299] {
        check_against_the_full_scan(&model, &[0.0; 7], 1.0, k, 1);
    }
}

/// At d = 32 on a trained model most arms are pruned, and the answer is
/// still the full scan's.
#[test]
fn a_trained_model_prunes_most_arms() {
    for (centred, seed) in [(false, 3), (true, 4)] {
        let case = case(seed, 32, 3000, 0.0, 0, centred);
        let stats = check(&case, 1.0, 10);
        let pruned = stats.by_codes + stats.by_mean;
        assert!(pruned * 10 >= stats.arms * 7, "centred {centred}: only {pruned} of {} pruned ({stats:?})", stats.arms);
    }
}
