//! The linear policies, all on the one ridge fit of [`Training::ridge`]:
//! LinGreedy, LinUCB (the core's own ranking) and LinTS.

use bandit_core::rank::dot;
use bandit_core::{cholesky, packed, Model, ModelSettings, RankScratch};

use super::policies::{top_k, Policy};
use super::training::Training;
use crate::error::Result;
use crate::lab::local;
use crate::lab::rng::Rng;

/// Ridge regression per arm, greedy, with a random list with probability ε.
pub(super) struct LinGreedy {
    epsilon: f64,
    rng: Rng,
    thetas: Vec<Vec<f64>>,
    expected: Vec<f64>,
    shuffled: Vec<f64>,
}

impl LinGreedy {
    pub(super) fn new(epsilon: f64, rng: Rng) -> Self {
        Self { epsilon, rng, thetas: Vec::new(), expected: Vec::new(), shuffled: Vec::new() }
    }
}

impl Policy for LinGreedy {
    fn name(&self) -> &'static str {
        "LinGreedy"
    }
    fn fit(&mut self, training: &Training<'_>) -> Result<()> {
        self.thetas = training.posteriors()?.into_iter().map(|(theta, _)| theta).collect();
        Ok(())
    }
    fn recommend(&mut self, context: &[f64], k: usize, out: &mut Vec<(usize, f64)>) -> Result<()> {
        self.expected.clear();
        self.expected.extend(self.thetas.iter().map(|theta| dot(theta, context)));
        if self.rng.bernoulli(self.epsilon) {
            // Explore: a random list, each arm keeping its expected reward as score.
            self.shuffled.clear();
            self.shuffled.extend((0..self.expected.len()).map(|_| self.rng.unit()));
            top_k(&self.shuffled, k, out);
            for entry in out.iter_mut() {
                entry.1 = self.expected.get(entry.0).copied().unwrap_or(0.0);
            }
        } else {
            top_k(&self.expected, k, out);
        }
        Ok(())
    }
}

/// Disjoint LinUCB through the core's trainer, model and ranking: the very
/// scores the Redis module serves.
#[derive(Default)]
pub(super) struct LinUcb {
    model: Option<Model>,
    ids: Vec<String>,
    /// Each model row's candidate index, when the model's arms are exactly
    /// the candidates (every candidate has training rows, none repeats).
    /// Then ranking every arm gives the list ranking the candidates gives —
    /// the same kernel scores each arm, and ties go by id either way —
    /// without a hash lookup per candidate and context.
    candidate_of_row: Option<Vec<usize>>,
    scratch: RankScratch,
}

impl Policy for LinUcb {
    fn name(&self) -> &'static str {
        "LinUCB"
    }
    fn fit(&mut self, training: &Training<'_>) -> Result<()> {
        // A copy of the shared model (a few arms), so this policy ranks
        // with its own scratch while the others read the fit.
        let model = training.ridge()?.model().clone();
        self.ids = training.arms.ids.clone();
        let mut candidate_of_row = vec![None; model.len()];
        for (candidate, id) in self.ids.iter().enumerate() {
            match model.row_of(id.as_bytes()).and_then(|row| candidate_of_row.get_mut(row)) {
                Some(slot @ None) => *slot = Some(candidate),
                _ => {
                    // Unknown (scored with the prior) or repeated: rank the candidates.
                    candidate_of_row.clear();
                    break;
                }
            }
        }
        self.candidate_of_row = candidate_of_row.iter().copied().collect::<Option<Vec<usize>>>().filter(|rows| rows.len() == self.ids.len());
        self.model = Some(model);
        Ok(())
    }
    fn recommend(&mut self, context: &[f64], k: usize, out: &mut Vec<(usize, f64)>) -> Result<()> {
        out.clear();
        let Some(model) = &self.model else { return Ok(()) };
        match &self.candidate_of_row {
            Some(candidate_of_row) => out.extend(
                local::rank_all(model, context, k, &mut self.scratch)?
                    .iter()
                    .map(|r| (candidate_of_row.get(r.index as usize).copied().unwrap_or(usize::MAX), r.score)),
            ),
            None => out.extend(local::rank(model, context, &self.ids, k, &mut self.scratch)?.iter().map(|r| (r.index as usize, r.score))),
        }
        Ok(())
    }
}

/// Arms whose sums [`LinTs::project`] keeps in registers at once.
const LANES: usize = 8;

/// Linear Thompson sampling: θ̃ ~ N(θ, α²A⁻¹) per arm and context, drawn
/// as θ + α·Lz with A⁻¹ = LLᵀ and z standard normal, so xᵀθ̃ = xᵀθ + α·(Lᵀx)·z.
///
/// Lᵀx is the hot spot (O(d²) per arm and context). Its arithmetic is that
/// of the column-by-column sum this policy was defined with: (Lᵀx)ⱼ adds
/// L[i][j]·xᵢ for i = j, j+1, … in that order, from the value an empty f64
/// sum starts at. To make it cheap without changing a bit, L is stored
/// entry-major (one entry of every arm side by side), so the sums of
/// [`LANES`] arms stay in vector registers while the rows of L are added
/// in; and the rows of L whose xᵢ is zero are skipped (see
/// [`LinTs::project`] for why that changes no result).
pub(super) struct LinTs {
    settings: ModelSettings,
    rng: Rng,
    arms: usize,
    /// θ of every arm, `dim` values each.
    thetas: Vec<f64>,
    /// L of every arm, entry-major: entry e = i(i+1)/2 + j (i ≥ j, packed
    /// by rows) of arm a at e·arms + a.
    lowers: Vec<f64>,
    /// This context's draws, `dim` per arm in arm order: zⱼ of arm a at
    /// a·dim + j.
    noise: Vec<f64>,
    /// This context's nonzero features, for [`LinTs::project`].
    active: Vec<(usize, usize, f64)>,
    /// One group of LANES arms' draws, transposed: zⱼ of lane l at [j][l].
    block: Vec<[f64; LANES]>,
    /// Lᵀx, entry-major like `lowers`: (Lᵀx)ⱼ of arm a at j·arms + a.
    projected: Vec<f64>,
    scores: Vec<f64>,
}

impl LinTs {
    pub(super) fn new(settings: ModelSettings, rng: Rng) -> Self {
        Self {
            settings,
            rng,
            arms: 0,
            thetas: Vec::new(),
            lowers: Vec::new(),
            noise: Vec::new(),
            active: Vec::new(),
            block: Vec::new(),
            projected: Vec::new(),
            scores: Vec::new(),
        }
    }

    /// `projected` = Lᵀx for every arm.
    ///
    /// A skipped row only omits terms L[i][j]·0 = ±0, and adding ±0 changes
    /// a sum only when the sum is −0 (−0 + +0 = +0). So a skipping sum
    /// either equals the full one, or is −0 where the full one is +0; and a
    /// nonzero term later makes them equal again. Hence any (Lᵀx)ⱼ that
    /// ends at −0 is summed again in full, and every other one is already
    /// the full sum's value, bit for bit.
    fn project(&mut self, context: &[f64]) {
        let (dim, arms) = (self.settings.dim, self.arms);
        let start: f64 = std::iter::empty::<f64>().sum();
        // Every slot is written below; resizing only sets the length.
        self.projected.resize(dim * arms, start);
        // The rows of L that are not skipped, in order: (i, where row i
        // starts in packed order, xᵢ).
        self.active.clear();
        self.active.extend(context.iter().enumerate().take(dim).filter(|&(_, &x)| x != 0.0).map(|(i, &x)| (i, packed::len(i), x)));
        let lowers = &self.lowers;
        let entry = |i: usize, j: usize, arm: usize| lowers.get((packed::len(i) + j) * arms + arm).copied().unwrap_or(0.0);
        for (j, sums) in self.projected.chunks_exact_mut(arms.max(1)).enumerate() {
            // (Lᵀx)ⱼ adds rows i = j, j + 1, …: the active ones from the first i ≥ j.
            let rows = self.active.get(self.active.partition_point(|&(i, _, _)| i < j)..).unwrap_or_default();
            // LANES arms at a time, their sums in registers over all rows
            // (rather than every row's pass loading and storing every sum).
            let mut groups = sums.chunks_exact_mut(LANES);
            for (group, out) in groups.by_ref().enumerate() {
                let mut lanes = [start; LANES];
                for &(_, row, x) in rows {
                    let at = (row + j) * arms + group * LANES;
                    let Some(lower) = lowers.get(at..at + LANES).and_then(|l| <&[f64; LANES]>::try_from(l).ok()) else { continue };
                    for (sum, &l) in lanes.iter_mut().zip(lower) {
                        *sum += l * x;
                    }
                }
                out.copy_from_slice(&lanes);
            }
            let done = arms - arms % LANES;
            for (arm, sum) in (done..).zip(groups.into_remainder()) {
                *sum = rows.iter().fold(start, |total, &(i, _, x)| total + entry(i, j, arm) * x);
            }
        }
        let negative_zero = (-0.0f64).to_bits();
        for (j, sums) in self.projected.chunks_exact_mut(arms.max(1)).enumerate() {
            // A branch-free scan first: the column rarely has a −0.
            if !sums.iter().fold(false, |any, sum| any | (sum.to_bits() == negative_zero)) {
                continue;
            }
            for (arm, sum) in sums.iter_mut().enumerate() {
                if sum.to_bits() == negative_zero {
                    *sum = context.iter().enumerate().take(dim).skip(j).fold(start, |total, (i, &x)| total + entry(i, j, arm) * x);
                }
            }
        }
    }
}

impl Policy for LinTs {
    fn name(&self) -> &'static str {
        "LinTS"
    }
    fn fit(&mut self, training: &Training<'_>) -> Result<()> {
        let dim = self.settings.dim;
        let posteriors = training.posteriors()?;
        self.arms = posteriors.len();
        self.thetas.clear();
        self.lowers.clear();
        self.lowers.resize(packed::len(dim) * self.arms, 0.0);
        let mut lower = Vec::new();
        for (arm, (theta, a_inv)) in posteriors.iter().enumerate() {
            cholesky::factor_packed(dim, a_inv, &mut lower)?;
            self.thetas.extend_from_slice(theta);
            // The lower triangle of the full d×d factor, row by row.
            let triangle = lower.chunks_exact(dim).enumerate().flat_map(|(i, row)| row.iter().take(i + 1));
            for (slot, &value) in self.lowers.iter_mut().skip(arm).step_by(self.arms).zip(triangle) {
                *slot = value;
            }
        }
        Ok(())
    }
    fn recommend(&mut self, context: &[f64], k: usize, out: &mut Vec<(usize, f64)>) -> Result<()> {
        let (dim, alpha, arms) = (self.settings.dim, self.settings.alpha, self.arms);
        // The draws in the order they always had: dim per arm, arm by arm.
        // (Resized, not cleared: every slot is overwritten.)
        self.noise.resize(arms * dim, 0.0);
        for slot in &mut self.noise {
            *slot = self.rng.normal();
        }
        self.project(context);
        self.scores.clear();
        self.scores.extend(self.thetas.chunks_exact(dim).map(|theta| dot(theta, context)));
        // Per arm, + α·(Lᵀx)ⱼ·zⱼ for j = 0, 1, … in that order; LANES arms
        // at a time, their scores in registers across j.
        let projected = &self.projected;
        let column = |j: usize, arm: usize| projected.get(j * arms + arm).copied().unwrap_or(0.0);
        let mut groups = self.scores.chunks_exact_mut(LANES);
        let mut noises = self.noise.chunks_exact(dim.max(1) * LANES);
        self.block.resize(dim, [0.0; LANES]);
        for ((group, scores), noise) in groups.by_ref().enumerate().zip(noises.by_ref()) {
            // The group's draws transposed: zⱼ of its LANES arms side by side.
            for (lane, draws) in noise.chunks_exact(dim.max(1)).enumerate() {
                for (zs, &z) in self.block.iter_mut().zip(draws) {
                    if let Some(slot) = zs.get_mut(lane) {
                        *slot = z;
                    }
                }
            }
            let mut lanes = [0.0; LANES];
            lanes.copy_from_slice(scores);
            for (j, zs) in self.block.iter().enumerate() {
                let at = j * arms + group * LANES;
                let Some(columns) = projected.get(at..at + LANES) else { continue };
                for ((sampled, &column), &z) in lanes.iter_mut().zip(columns).zip(zs) {
                    *sampled += alpha * column * z;
                }
            }
            scores.copy_from_slice(&lanes);
        }
        let done = arms - arms % LANES;
        for ((arm, sampled), draws) in (done..).zip(groups.into_remainder()).zip(noises.remainder().chunks_exact(dim.max(1))) {
            for (j, &z) in draws.iter().enumerate() {
                *sampled += alpha * column(j, arm) * z;
            }
        }
        top_k(&self.scores, k, out);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// Lᵀx as LinTS first defined it: column j of the full row-major L,
    /// summed from row j down.
    fn column_sums(dim: usize, lower: &[f64], x: &[f64]) -> Vec<f64> {
        (0..dim).map(|j| lower.iter().skip(j).step_by(dim).zip(x).skip(j).map(|(l, x)| l * x).sum()).collect()
    }

    /// Skipping the rows of zero features gives the column sums bit for
    /// bit, signed zeros included: factors with zero and −0 entries (a
    /// prior arm's L is diagonal), contexts with 0, −0 and cancelling terms.
    #[test]
    fn projection_is_the_column_sums_to_the_bit() {
        let dim = 4;
        let values = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0];
        let mut rng = Rng::new(8);
        let mut pick = || values[rng.below(values.len())];
        let mut negative_zeros = 0;
        // Whole groups of LANES arms, and one with a partial group.
        for arms in [40, 13] {
            let factors: Vec<Vec<f64>> =
                (0..arms).map(|_| (0..dim * dim).map(|k| if k % dim <= k / dim { pick() } else { 0.0 }).collect()).collect();
            let mut policy = LinTs::new(ModelSettings { dim, alpha: 1.0, lambda: 1.0, decay: 1.0 }, Rng::new(1));
            policy.arms = arms;
            policy.lowers = vec![0.0; packed::len(dim) * arms];
            for (arm, lower) in factors.iter().enumerate() {
                let triangle = lower.chunks_exact(dim).enumerate().flat_map(|(i, row)| row.iter().take(i + 1));
                for (slot, &value) in policy.lowers.iter_mut().skip(arm).step_by(arms).zip(triangle) {
                    *slot = value;
                }
            }
            for _ in 0..300 {
                let x: Vec<f64> = (0..dim).map(|_| pick()).collect();
                policy.project(&x);
                for (arm, lower) in factors.iter().enumerate() {
                    for (j, want) in column_sums(dim, lower, &x).into_iter().enumerate() {
                        let got = policy.projected[j * arms + arm];
                        assert_eq!(got.to_bits(), want.to_bits(), "arm {arm} column {j}: {got} vs {want}, x {x:?}, L {lower:?}");
                        negative_zeros += usize::from(want.to_bits() == (-0.0f64).to_bits());
                    }
                }
            }
        }
        assert!(negative_zeros > 0, "the test should meet sums that end at −0");
    }
}
