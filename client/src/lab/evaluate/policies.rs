//! The policies `bandit evaluate` compares, all behind [`Policy`]: fit on the
//! training rows, then a scored top-k for each test context. Adding one is a
//! new impl and a line in [`all`].

use bandit_core::cholesky;
use bandit_core::event::FeedbackEvent;
use bandit_core::rank::dot;
use bandit_core::ModelSettings;

use crate::error::Result;
use crate::history::LogRow;
use crate::lab::local::LocalModel;
use crate::lab::rng::Rng;

/// The candidate products, by index.
#[derive(Debug, Clone)]
pub struct Arms {
    pub ids: Vec<String>,
    index: std::collections::HashMap<String, usize>,
}

impl Arms {
    #[must_use]
    pub fn new(ids: Vec<String>) -> Self {
        let index = ids.iter().enumerate().map(|(i, id)| (id.clone(), i)).collect();
        Self { ids, index }
    }

    #[must_use]
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }
}

/// A recommendation policy.
pub trait Policy {
    fn name(&self) -> &'static str;
    /// Learns from the training rows.
    ///
    /// # Errors
    /// Numerical failures (a Gram matrix that is not positive definite).
    fn fit(&mut self, train: &[LogRow], arms: &Arms) -> Result<()>;
    /// Writes the top `k` (arm index, score) for a context, best first.
    ///
    /// # Errors
    /// Bad contexts.
    fn recommend(&mut self, context: &[f64], k: usize, out: &mut Vec<(usize, f64)>) -> Result<()>;
}

/// The six policies, each seeded from `seed`; the linear ones fold with
/// forgetting `decay` (1: none).
#[must_use]
pub fn all(dim: usize, seed: u64, decay: f64) -> Vec<Box<dyn Policy>> {
    // α = 1 and λ = 1, the module's defaults.
    let settings = ModelSettings { dim, alpha: 1.0, lambda: 1.0, decay };
    vec![
        Box::new(RandomPolicy { rng: Rng::new(seed), arms: 0 }),
        Box::new(Popularity { means: Vec::new() }),
        Box::new(LinGreedy { epsilon: 0.1, settings, rng: Rng::new(seed + 1), thetas: Vec::new() }),
        Box::new(LinUcb { settings, model: None, ids: Vec::new() }),
        Box::new(LinTs { settings, rng: Rng::new(seed + 2), arms: Vec::new(), noise: Vec::new(), scores: Vec::new() }),
        Box::new(ClustersTs { clusters: 10, rng: Rng::new(seed + 3), centroids: Vec::new(), counts: Vec::new(), arms: 0, scores: Vec::new() }),
    ]
}

/// The `k` best of `scores`, ties by arm id.
fn top_k(scores: &[f64], arms_ids: Option<&[String]>, k: usize, out: &mut Vec<(usize, f64)>) {
    out.clear();
    out.extend(scores.iter().copied().enumerate());
    let order = |a: &(usize, f64), b: &(usize, f64)| {
        b.1.total_cmp(&a.1).then_with(|| match arms_ids {
            Some(ids) => ids.get(a.0).cmp(&ids.get(b.0)),
            None => a.0.cmp(&b.0),
        })
    };
    if k < out.len() && k > 0 {
        out.select_nth_unstable_by(k - 1, order);
        out.truncate(k);
    }
    out.sort_by(order);
}

/// The training rows of candidate products folded, in log order, into an
/// in-process model and published: the ridge fit of every linear policy.
fn fit(train: &[LogRow], arms: &Arms, settings: ModelSettings) -> Result<LocalModel> {
    let mut local = LocalModel::new(settings)?;
    for row in train.iter().filter(|row| arms.position(&row.product_id).is_some() && row.context.len() == settings.dim) {
        local.fold(&FeedbackEvent {
            event_id: row.event_id.clone().unwrap_or_default(),
            product_id: row.product_id.clone(),
            reward: row.response,
            context_vector: row.context.clone(),
            timestamp: 0,
        })?;
    }
    local.publish()?;
    Ok(local)
}

/// Per candidate: θ = A⁻¹b and packed A⁻¹ of the ridge fit (the prior's
/// for a product without training rows).
fn fit_ridge(train: &[LogRow], arms: &Arms, settings: ModelSettings) -> Result<Vec<(Vec<f64>, Vec<f64>)>> {
    let local = fit(train, arms, settings)?;
    arms.ids.iter().map(|id| local.posterior(id)).collect()
}

/// Uniformly random lists (with random scores, so AUC is chance).
struct RandomPolicy {
    rng: Rng,
    arms: usize,
}

impl Policy for RandomPolicy {
    fn name(&self) -> &'static str {
        "Random"
    }
    fn fit(&mut self, _: &[LogRow], arms: &Arms) -> Result<()> {
        self.arms = arms.ids.len();
        Ok(())
    }
    fn recommend(&mut self, _: &[f64], k: usize, out: &mut Vec<(usize, f64)>) -> Result<()> {
        let scores: Vec<f64> = (0..self.arms).map(|_| self.rng.unit()).collect();
        top_k(&scores, None, k, out);
        Ok(())
    }
}

/// The products with the highest mean response in training, for everyone.
struct Popularity {
    means: Vec<f64>,
}

impl Policy for Popularity {
    fn name(&self) -> &'static str {
        "Popularity"
    }
    fn fit(&mut self, train: &[LogRow], arms: &Arms) -> Result<()> {
        let mut sums = vec![(0.0, 0.0); arms.ids.len()];
        for row in train {
            if let Some(slot) = arms.position(&row.product_id).and_then(|i| sums.get_mut(i)) {
                slot.0 += row.response;
                slot.1 += 1.0;
            }
        }
        self.means = sums.iter().map(|(sum, n)| if *n > 0.0 { sum / n } else { 0.0 }).collect();
        Ok(())
    }
    fn recommend(&mut self, _: &[f64], k: usize, out: &mut Vec<(usize, f64)>) -> Result<()> {
        top_k(&self.means, None, k, out);
        Ok(())
    }
}

/// Ridge regression per arm, greedy, with a random list with probability ε.
struct LinGreedy {
    epsilon: f64,
    settings: ModelSettings,
    rng: Rng,
    thetas: Vec<Vec<f64>>,
}

impl Policy for LinGreedy {
    fn name(&self) -> &'static str {
        "LinGreedy"
    }
    fn fit(&mut self, train: &[LogRow], arms: &Arms) -> Result<()> {
        self.thetas = fit_ridge(train, arms, self.settings)?.into_iter().map(|(theta, _)| theta).collect();
        Ok(())
    }
    fn recommend(&mut self, context: &[f64], k: usize, out: &mut Vec<(usize, f64)>) -> Result<()> {
        let expected: Vec<f64> = self.thetas.iter().map(|theta| dot(theta, context)).collect();
        if self.rng.bernoulli(self.epsilon) {
            // Explore: a random list, each arm keeping its expected reward as score.
            let shuffled: Vec<f64> = (0..expected.len()).map(|_| self.rng.unit()).collect();
            top_k(&shuffled, None, k, out);
            for entry in out.iter_mut() {
                entry.1 = expected.get(entry.0).copied().unwrap_or(0.0);
            }
        } else {
            top_k(&expected, None, k, out);
        }
        Ok(())
    }
}

/// Disjoint LinUCB through the core's trainer, model and ranking: the very
/// scores the Redis module serves.
struct LinUcb {
    settings: ModelSettings,
    model: Option<LocalModel>,
    ids: Vec<String>,
}

impl Policy for LinUcb {
    fn name(&self) -> &'static str {
        "LinUCB"
    }
    fn fit(&mut self, train: &[LogRow], arms: &Arms) -> Result<()> {
        self.model = Some(fit(train, arms, self.settings)?);
        self.ids = arms.ids.clone();
        Ok(())
    }
    fn recommend(&mut self, context: &[f64], k: usize, out: &mut Vec<(usize, f64)>) -> Result<()> {
        out.clear();
        if let Some(model) = &mut self.model {
            out.extend(model.rank(context, &self.ids, k)?.iter().map(|r| (r.index as usize, r.score)));
        }
        Ok(())
    }
}

/// Linear Thompson sampling: θ̃ ~ N(θ, α²A⁻¹) per arm and context.
struct LinTs {
    settings: ModelSettings,
    rng: Rng,
    /// Per arm: θ and the Cholesky factor L of A⁻¹ (A⁻¹ = LLᵀ).
    arms: Vec<(Vec<f64>, Vec<f64>)>,
    noise: Vec<f64>,
    scores: Vec<f64>,
}

impl Policy for LinTs {
    fn name(&self) -> &'static str {
        "LinTS"
    }
    fn fit(&mut self, train: &[LogRow], arms: &Arms) -> Result<()> {
        let dim = self.settings.dim;
        self.arms = fit_ridge(train, arms, self.settings)?
            .into_iter()
            .map(|(theta, a_inv)| {
                let mut lower = Vec::new();
                cholesky::factor_packed(dim, &a_inv, &mut lower)?;
                Ok((theta, lower))
            })
            .collect::<Result<_>>()?;
        Ok(())
    }
    fn recommend(&mut self, context: &[f64], k: usize, out: &mut Vec<(usize, f64)>) -> Result<()> {
        let (dim, alpha) = (self.settings.dim, self.settings.alpha);
        self.scores.clear();
        for (theta, lower) in &self.arms {
            self.noise.clear();
            self.noise.extend((0..dim).map(|_| self.rng.normal()));
            // xᵀθ̃ = xᵀθ + α·(Lᵀx)·z
            let mut sampled = dot(theta, context);
            for (j, z) in self.noise.iter().enumerate() {
                let column: f64 = lower.iter().skip(j).step_by(dim).zip(context).skip(j).map(|(l, x)| l * x).sum();
                sampled += alpha * column * z;
            }
            self.scores.push(sampled);
        }
        top_k(&self.scores, None, k, out);
        Ok(())
    }
}

/// k-means on contexts, then Beta-Bernoulli Thompson sampling per cluster and arm.
struct ClustersTs {
    clusters: usize,
    rng: Rng,
    centroids: Vec<Vec<f64>>,
    /// (successes, failures) per cluster × arm.
    counts: Vec<(f64, f64)>,
    arms: usize,
    scores: Vec<f64>,
}

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

fn nearest(centroids: &[Vec<f64>], x: &[f64]) -> usize {
    centroids
        .iter()
        .enumerate()
        .min_by(|a, b| squared_distance(a.1, x).total_cmp(&squared_distance(b.1, x)))
        .map_or(0, |(i, _)| i)
}

impl Policy for ClustersTs {
    fn name(&self) -> &'static str {
        "ClustersTS"
    }
    fn fit(&mut self, train: &[LogRow], arms: &Arms) -> Result<()> {
        // k-means: seeded distinct rows as the start, a fixed number of Lloyd steps.
        let k = self.clusters.min(train.len()).max(1);
        self.centroids = (0..k).filter_map(|_| train.get(self.rng.below(train.len())).map(|r| r.context.clone())).collect();
        let mut assignment = vec![0usize; train.len()];
        for _ in 0..20 {
            for (slot, row) in assignment.iter_mut().zip(train) {
                *slot = nearest(&self.centroids, &row.context);
            }
            let dim = train.first().map_or(0, |r| r.context.len());
            let mut sums = vec![(vec![0.0; dim], 0usize); self.centroids.len()];
            for (&cluster, row) in assignment.iter().zip(train) {
                if let Some((sum, n)) = sums.get_mut(cluster) {
                    sum.iter_mut().zip(&row.context).for_each(|(s, x)| *s += x);
                    *n += 1;
                }
            }
            for (centroid, (sum, n)) in self.centroids.iter_mut().zip(sums) {
                if n > 0 {
                    *centroid = sum.iter().map(|s| s / n as f64).collect();
                }
            }
        }
        self.arms = arms.ids.len();
        self.counts = vec![(0.0, 0.0); self.centroids.len() * self.arms];
        for (&cluster, row) in assignment.iter().zip(train) {
            if let Some(slot) = arms.position(&row.product_id).and_then(|arm| self.counts.get_mut(cluster * self.arms + arm)) {
                if row.response > 0.0 {
                    slot.0 += 1.0;
                } else {
                    slot.1 += 1.0;
                }
            }
        }
        Ok(())
    }
    fn recommend(&mut self, context: &[f64], k: usize, out: &mut Vec<(usize, f64)>) -> Result<()> {
        let cluster = nearest(&self.centroids, context);
        self.scores.clear();
        for arm in 0..self.arms {
            let (successes, failures) = self.counts.get(cluster * self.arms + arm).copied().unwrap_or((0.0, 0.0));
            // Beta(1 + s, 1 + f) as a ratio of Gamma draws.
            let a = self.rng.gamma(1.0 + successes);
            let b = self.rng.gamma(1.0 + failures);
            self.scores.push(a / (a + b));
        }
        top_k(&self.scores, None, k, out);
        Ok(())
    }
}
