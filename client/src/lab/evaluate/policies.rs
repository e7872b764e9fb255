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

/// The `k` best of `scores`, best first; equal scores by arm index.
pub(super) fn top_k(scores: &[f64], k: usize, out: &mut Vec<(usize, f64)>) {
    out.clear();
    out.extend(scores.iter().copied().enumerate());
    let order = |a: &(usize, f64), b: &(usize, f64)| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0));
    if k < out.len() && k > 0 {
        out.select_nth_unstable_by(k - 1, order);
        out.truncate(k);
    }
    out.sort_by(order);
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

