//! ClustersTS: k-means on the training contexts, then Beta-Bernoulli
//! Thompson sampling per cluster and arm.

use std::cmp::Ordering;

use super::policies::{top_k, Policy};
use super::training::Training;
use crate::error::Result;
use crate::lab::rng::{GammaShape, Rng};

/// Lloyd steps of the k-means fit.
const LLOYD_STEPS: usize = 20;

/// See the module documentation.
pub(super) struct ClustersTs {
    clusters: usize,
    rng: Rng,
    centroids: Vec<Vec<f64>>,
    /// Per cluster × arm, the Beta(1 + successes, 1 + failures) posterior
    /// as its two Gamma samplers, built once at fit time.
    posteriors: Vec<(GammaShape, GammaShape)>,
    arms: usize,
    scores: Vec<f64>,
}

impl ClustersTs {
    pub(super) fn new(clusters: usize, rng: Rng) -> Self {
        Self { clusters, rng, centroids: Vec::new(), posteriors: Vec::new(), arms: 0, scores: Vec::new() }
    }
}

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The first of the closest centroids (0 when there are none): a later one
/// wins only when strictly closer. Each distance is computed once.
fn nearest(centroids: &[Vec<f64>], x: &[f64]) -> usize {
    let mut best: Option<(usize, f64)> = None;
    for (i, centroid) in centroids.iter().enumerate() {
        let distance = squared_distance(centroid, x);
        if best.is_none_or(|(_, closest)| distance.total_cmp(&closest) == Ordering::Less) {
            best = Some((i, distance));
        }
    }
    best.map_or(0, |(i, _)| i)
}

/// Centroids per group of [`Assigner`]: one group's distances are a local
/// array, kept in registers while a point's values are added in.
const LANES: usize = 4;

/// [`nearest`] for many points against fixed centroids, with the centroids
/// stored dimension-major in groups of [`LANES`], so that one pass over a
/// point's values updates a group's distances at once (in vector
/// registers). Each distance adds the same terms in the same order as
/// [`squared_distance`], so the answers are [`nearest`]'s, bit for bit;
/// points or centroids of another length than the first centroid's go
/// through [`nearest`] itself.
struct Assigner<'c> {
    centroids: &'c [Vec<f64>],
    dim: usize,
    /// Value i of centroid g·LANES + l at (g·dim + i)·LANES + l; the last
    /// group is padded with zeros (distances computed and ignored).
    groups: Vec<[f64; LANES]>,
    distances: Vec<f64>,
}

impl<'c> Assigner<'c> {
    fn new(centroids: &'c [Vec<f64>]) -> Self {
        let k = centroids.len();
        let dim = centroids.first().map_or(0, Vec::len);
        let uniform = centroids.iter().all(|c| c.len() == dim);
        let mut groups = Vec::new();
        if uniform {
            groups.resize(k.div_ceil(LANES) * dim, [0.0; LANES]);
            for (c, centroid) in centroids.iter().enumerate() {
                let group = groups.iter_mut().skip(c / LANES * dim).take(dim);
                for (lanes, &value) in group.zip(centroid) {
                    if let Some(slot) = lanes.get_mut(c % LANES) {
                        *slot = value;
                    }
                }
            }
        }
        Self { centroids, dim: if uniform { dim } else { usize::MAX }, groups, distances: Vec::with_capacity(k + LANES) }
    }

    fn nearest(&mut self, x: &[f64]) -> usize {
        let k = self.centroids.len();
        if x.len() != self.dim || k == 0 {
            return nearest(self.centroids, x);
        }
        let start: f64 = std::iter::empty::<f64>().sum();
        self.distances.clear();
        for group in self.groups.chunks_exact(self.dim.max(1)) {
            let mut sums = [start; LANES];
            for (&value, lanes) in x.iter().zip(group) {
                for (sum, &c) in sums.iter_mut().zip(lanes) {
                    *sum += (c - value) * (c - value);
                }
            }
            self.distances.extend_from_slice(&sums);
        }
        let mut best: Option<(usize, f64)> = None;
        for (i, &distance) in self.distances.iter().take(k).enumerate() {
            if best.is_none_or(|(_, closest)| distance.total_cmp(&closest) == Ordering::Less) {
                best = Some((i, distance));
            }
        }
        best.map_or(0, |(i, _)| i)
    }
}

impl Policy for ClustersTs {
    fn name(&self) -> &'static str {
        "ClustersTS"
    }
    fn fit(&mut self, training: &Training<'_>) -> Result<()> {
        let train = training.rows;
        // k-means: seeded distinct rows as the start, a fixed number of Lloyd steps.
        let k = self.clusters.min(train.len()).max(1);
        self.centroids = (0..k).filter_map(|_| train.get(self.rng.below(train.len())).map(|r| r.context.clone())).collect();
        let mut assignment = vec![0usize; train.len()];
        let dim = train.first().map_or(0, |r| r.context.len());
        for step in 0..LLOYD_STEPS {
            let mut assigner = Assigner::new(&self.centroids);
            let mut moved = false;
            for (slot, row) in assignment.iter_mut().zip(train) {
                let cluster = assigner.nearest(&row.context);
                moved |= cluster != *slot;
                *slot = cluster;
            }
            // No row changed cluster: the centroids are already the means of
            // these clusters (made from the same rows, in the same order, by
            // the previous step), so every remaining step would reproduce
            // them and this assignment bit for bit. Stopping here changes
            // nothing. (Step 0's "previous" assignment made no centroid.)
            if step > 0 && !moved {
                break;
            }
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
        self.arms = training.arms.ids.len();
        let mut counts = vec![(0.0, 0.0); self.centroids.len() * self.arms];
        for ((&cluster, row), arm) in assignment.iter().zip(train).zip(&training.arm_of) {
            if let Some(slot) = arm.and_then(|arm| counts.get_mut(cluster * self.arms + arm)) {
                if row.response > 0.0 {
                    slot.0 += 1.0;
                } else {
                    slot.1 += 1.0;
                }
            }
        }
        self.posteriors = counts
            .iter()
            .map(|(successes, failures)| (GammaShape::new(1.0 + successes), GammaShape::new(1.0 + failures)))
            .collect();
        Ok(())
    }
    fn recommend(&mut self, context: &[f64], k: usize, out: &mut Vec<(usize, f64)>) -> Result<()> {
        let cluster = nearest(&self.centroids, context);
        let uniform = (GammaShape::new(1.0), GammaShape::new(1.0));
        self.scores.clear();
        for arm in 0..self.arms {
            let (successes, failures) = self.posteriors.get(cluster * self.arms + arm).unwrap_or(&uniform);
            // Beta(1 + s, 1 + f) as a ratio of Gamma draws.
            let a = self.rng.gamma_of(successes);
            let b = self.rng.gamma_of(failures);
            self.scores.push(a / (a + b));
        }
        top_k(&self.scores, k, out);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_assignment_is_nearest() {
        let mut rng = Rng::new(3);
        let mut point = |len: usize| (0..len).map(|_| (rng.unit() * 4.0).floor() / 2.0 - 0.5).collect::<Vec<f64>>();
        // Coarse values, so exact ties between centroids happen.
        let centroids: Vec<Vec<f64>> = (0..7).map(|_| point(5)).collect();
        let mut assigner = Assigner::new(&centroids);
        for len in [5, 5, 5, 3] {
            for _ in 0..500 {
                let x = point(len);
                assert_eq!(assigner.nearest(&x), nearest(&centroids, &x), "{x:?}");
            }
        }
        let ragged = vec![vec![0.0, 1.0], vec![1.0]];
        assert_eq!(Assigner::new(&ragged).nearest(&[1.0, 1.0]), nearest(&ragged, &[1.0, 1.0]));
        assert_eq!(Assigner::new(&[]).nearest(&[1.0]), 0);
    }
}
