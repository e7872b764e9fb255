//! The policies `bandit evaluate` compares, all behind [`Policy`]: fit on the
//! training rows, then a scored top-k for each test context. Adding one is a
//! new impl and a line in [`all`]. The linear ones are in
//! [`super::linear`], ClustersTS in [`super::clusters`].

use bandit_core::ModelSettings;

use super::clusters::ClustersTs;
use super::linear::{LinGreedy, LinTs, LinUcb};
pub use super::training::{Arms, Training};
use crate::error::Result;
use crate::lab::rng::Rng;

/// A recommendation policy (`Send`: the evaluator runs policies side by
/// side on threads).
pub trait Policy: Send {
    fn name(&self) -> &'static str;
    /// Learns from the training rows.
    ///
    /// # Errors
    /// Numerical failures (a Gram matrix that is not positive definite).
    fn fit(&mut self, training: &Training<'_>) -> Result<()>;
    /// Writes the top `k` (arm index, score) for a context, best first.
    ///
    /// # Errors
    /// Bad contexts.
    fn recommend(&mut self, context: &[f64], k: usize, out: &mut Vec<(usize, f64)>) -> Result<()>;
}

/// The settings of the linear policies' ridge fit: α = 1 and λ = 1, the
/// module's defaults, and forgetting `decay` (1: none).
#[must_use]
pub fn linear_settings(dim: usize, decay: f64) -> ModelSettings {
    ModelSettings { dim, alpha: 1.0, lambda: 1.0, decay }
}

/// The six policies, each seeded from `seed`; the linear ones use
/// [`linear_settings`]. Listed cheapest first: the evaluator starts the
/// last ones first.
#[must_use]
pub fn all(dim: usize, seed: u64, decay: f64) -> Vec<Box<dyn Policy>> {
    let settings = linear_settings(dim, decay);
    vec![
        Box::new(RandomPolicy { rng: Rng::new(seed), arms: 0, scores: Vec::new() }),
        Box::new(Popularity { means: Vec::new(), best: None }),
        Box::new(LinGreedy::new(0.1, Rng::new(seed + 1))),
        Box::new(LinUcb::default()),
        Box::new(LinTs::new(settings, Rng::new(seed + 2))),
        Box::new(ClustersTs::new(10, Rng::new(seed + 3))),
    ]
}

/// The `k` best of `scores`, best first; equal scores by arm index (k = 0:
/// all of them).
///
/// One pass that keeps the best `k` so far in order: a score enters only
/// when it beats the kept k-th, which for k ≪ arms is rare, so most scores
/// cost one comparison. The order is total (scores by `total_cmp`, then
/// index), so the list is the one sorting every score would give.
pub(super) fn top_k(scores: &[f64], k: usize, out: &mut Vec<(usize, f64)>) {
    out.clear();
    if k == 0 || k >= scores.len() {
        out.extend(scores.iter().copied().enumerate());
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        return;
    }
    // The kept k-th score's `total_cmp` key once k are kept, in a local so
    // that the common case (no entry) touches no memory but the score.
    let mut threshold = i64::MIN;
    for (arm, &score) in scores.iter().enumerate() {
        let key = total_order_key(score);
        if out.len() == k {
            // Arms come in index order, so a score equal to the k-th's
            // ranks after it: only a strictly greater one enters.
            if key <= threshold {
                continue;
            }
            out.pop();
        }
        // In at the end, then up past the kept scores it strictly beats (a
        // kept equal score has a lower index, so it stays above).
        out.push((arm, score));
        let mut at = out.len() - 1;
        while at > 0 && out.get(at - 1).is_some_and(|&(_, kept)| key > total_order_key(kept)) {
            out.swap(at, at - 1);
            at -= 1;
        }
        if out.len() == k {
            threshold = out.last().map_or(i64::MIN, |&(_, kth)| total_order_key(kth));
        }
    }
}

/// An integer that orders as `f64::total_cmp` orders the floats (its own
/// definition: negative floats have their magnitude bits flipped).
fn total_order_key(value: f64) -> i64 {
    let bits = value.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

/// Uniformly random lists (with random scores, so AUC is chance).
struct RandomPolicy {
    rng: Rng,
    arms: usize,
    scores: Vec<f64>,
}

impl Policy for RandomPolicy {
    fn name(&self) -> &'static str {
        "Random"
    }
    fn fit(&mut self, training: &Training<'_>) -> Result<()> {
        self.arms = training.arms.ids.len();
        Ok(())
    }
    fn recommend(&mut self, _: &[f64], k: usize, out: &mut Vec<(usize, f64)>) -> Result<()> {
        self.scores.clear();
        self.scores.extend((0..self.arms).map(|_| self.rng.unit()));
        top_k(&self.scores, k, out);
        Ok(())
    }
}

/// The products with the highest mean response in training, for everyone.
struct Popularity {
    means: Vec<f64>,
    /// The list for the last k asked: it does not depend on the context.
    best: Option<(usize, Vec<(usize, f64)>)>,
}

impl Policy for Popularity {
    fn name(&self) -> &'static str {
        "Popularity"
    }
    fn fit(&mut self, training: &Training<'_>) -> Result<()> {
        let mut sums = vec![(0.0, 0.0); training.arms.ids.len()];
        for (row, arm) in training.rows.iter().zip(&training.arm_of) {
            if let Some(slot) = arm.and_then(|i| sums.get_mut(i)) {
                slot.0 += row.response;
                slot.1 += 1.0;
            }
        }
        self.means = sums.iter().map(|(sum, n)| if *n > 0.0 { sum / n } else { 0.0 }).collect();
        self.best = None;
        Ok(())
    }
    fn recommend(&mut self, _: &[f64], k: usize, out: &mut Vec<(usize, f64)>) -> Result<()> {
        match &self.best {
            Some((cached_k, list)) if *cached_k == k => {
                out.clear();
                out.extend_from_slice(list);
            }
            _ => {
                top_k(&self.means, k, out);
                self.best = Some((k, out.clone()));
            }
        }
        Ok(())
    }
}


#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// The one-pass list is the head of every score sorted (best first,
    /// ties by index), for coarse scores with many ties, signed zeros and
    /// NaN, at every k.
    #[test]
    fn top_k_is_the_head_of_the_full_sort() {
        let values = [0.0, -0.0, 1.0, -1.0, 0.5, f64::NAN, -f64::NAN, f64::INFINITY];
        let mut rng = Rng::new(4);
        let mut list = Vec::new();
        for arms in [0, 1, 2, 7, 40] {
            for _ in 0..200 {
                let scores: Vec<f64> = (0..arms).map(|_| values[rng.below(values.len())]).collect();
                let mut sorted: Vec<(usize, f64)> = scores.iter().copied().enumerate().collect();
                sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                for k in 0..=arms + 1 {
                    top_k(&scores, k, &mut list);
                    let want = if k == 0 { &sorted[..] } else { &sorted[..k.min(arms)] };
                    let bits = |l: &[(usize, f64)]| l.iter().map(|&(i, s)| (i, s.to_bits())).collect::<Vec<_>>();
                    assert_eq!(bits(&list), bits(want), "k {k} scores {scores:?}");
                }
            }
        }
    }
}
