//! Disjoint LinUCB ranking: score(x) = xᵀθ + α·√(xᵀA⁻¹x).
//!
//! The context is expanded once per request into q = [x | w], where w are the
//! quadratic weights of x (see [`packed::quadratic_weights`]); an arm's score
//! is then two dot products over its contiguous scoring row, in f32 (see
//! [`crate::model`] for why), accumulated into an f64 score. An arm the model
//! does not know scores with the prior (θ = 0, A⁻¹ = I/λ), so new products are
//! explored rather than dropped. Top-k uses partial selection (a heap while
//! pruning), and all working memory lives in a reusable [`RankScratch`]: no
//! allocation per arm.
//!
//! A top-k over every arm prunes: arms whose score bound ([`crate::bounds`])
//! is below the k-th best score found so far are skipped before their
//! quadratic form (see [`kernel::top_k_pruned`]); the result is the full
//! scan's, bit for bit.

use std::cmp::Ordering;

use crate::bounds::{codes_per_arm, QueryBound, BLOCK};
use crate::error::{Error, Result};
use crate::kernel::{self, PruneStats, Pruning, TopK};
use crate::model::Model;
use crate::packed;

/// What to rank with.
#[derive(Debug, Clone, Copy)]
pub struct RankRequest<'a> {
    /// The context vector, one value per model dimension.
    pub context: &'a [f64],
    /// Exploration weight.
    pub alpha: f64,
    /// How many to return; all candidates when None.
    pub top: Option<usize>,
}

/// One ranked candidate: `index` is the position in the candidate list (or
/// the model row when ranking every arm).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    pub index: u32,
    pub score: f64,
}

/// Working memory for ranking, kept between requests.
#[derive(Debug, Default, Clone)]
pub struct RankScratch {
    /// Threads a large full scan may use (see [`kernel::score_all`]).
    threads: usize,
    query: Vec<f32>,
    weights: Vec<f64>,
    entries: Vec<Ranked>,
    unknown: Vec<u32>,
    seen: Vec<u32>,
    epoch: u32,
    bound: QueryBound,
    /// Entries of the other threads of a parallel pruned scan.
    parts: Vec<Vec<Ranked>>,
    /// The pruned scan's working memory (the calling thread's part).
    work: kernel::PruneWork,
    stats: PruneStats,
}

/// Dot product in f64 (used for the prior and by callers outside ranking).
pub use crate::packed::dot;

/// The score of an arm with no data: α·√(xᵀx/λ).
#[must_use]
pub fn prior_score(context: &[f64], alpha: f64, lambda: f64) -> f64 {
    kernel::finite_or_lowest(alpha * (dot(context, context) / lambda).max(0.0).sqrt())
}

/// Best first; equal scores by id, ascending.
fn order<'i>(a: &Ranked, b: &Ranked, id: &impl Fn(u32) -> &'i [u8]) -> Ordering {
    b.score.total_cmp(&a.score).then_with(|| id(a.index).cmp(id(b.index)))
}

impl RankScratch {
    /// Scratch whose large scans may use up to `threads` threads.
    #[must_use]
    pub fn with_threads(threads: usize) -> Self {
        Self { threads: threads.max(1), ..Self::default() }
    }

    fn prepare(&mut self, model: &Model, request: &RankRequest<'_>) -> Result<()> {
        let dim = model.dim();
        if request.context.len() != dim {
            return Err(Error::DimMismatch { what: "CONTEXT".into(), got: request.context.len(), dim });
        }
        if !request.context.iter().all(|v| v.is_finite()) || !request.alpha.is_finite() {
            return Err(Error::NotFinite { field: String::new() });
        }
        self.weights.clear();
        self.weights.resize(packed::len(dim), 0.0);
        packed::quadratic_weights(request.context, &mut self.weights);
        model.layout.write_query(request.context, &self.weights, &mut self.query);
        self.entries.clear();
        Ok(())
    }

    /// What the last top-k over every arm skipped (all zero after a full scan).
    #[must_use]
    pub fn prune_stats(&self) -> PruneStats {
        self.stats
    }

    fn select<'i>(&mut self, top: Option<usize>, id: impl Fn(u32) -> &'i [u8]) -> &[Ranked] {
        let count = self.entries.len();
        let k = top.unwrap_or(count).min(count);
        if k == 0 {
            self.entries.clear();
        } else if k < count {
            self.entries.select_nth_unstable_by(k - 1, |a, b| order(a, b, &id));
            self.entries.truncate(k);
        }
        self.entries.sort_unstable_by(|a, b| order(a, b, &id));
        &self.entries
    }
}

impl Model {
    /// Ranks every arm of the model. `Ranked::index` is the model row.
    ///
    /// # Errors
    /// [`Error::DimMismatch`] or [`Error::NotFinite`] for a bad context.
    pub fn rank_all<'s>(&self, request: &RankRequest<'_>, scratch: &'s mut RankScratch) -> Result<&'s [Ranked]> {
        scratch.prepare(self, request)?;
        scratch.stats = PruneStats::default();
        let id = |row: u32| self.id_at(row as usize).as_bytes();
        match request.top {
            Some(k) if k > 0 && k < self.len() && request.alpha >= 0.0 => self.top_k_pruned(request, k, scratch, &id),
            _ => kernel::score_all(&self.layout, &self.scoring, &scratch.query, request.alpha, scratch.threads, &mut scratch.entries),
        }
        Ok(scratch.select(request.top, id))
    }

    /// The pruned scan, on up to `scratch.threads` threads for large models,
    /// each over a contiguous block with its own threshold.
    fn top_k_pruned<'i>(&self, request: &RankRequest<'_>, k: usize, scratch: &mut RankScratch, id: &(impl Fn(u32) -> &'i [u8] + Sync)) {
        scratch.bound.set(request.context, request.alpha);
        let RankScratch { threads, query, entries, bound, parts, stats, work, .. } = scratch;
        let layout = &self.layout;
        let pruning = Pruning { codes: &self.codes, blocks: &self.bounds, query: bound };
        let alpha = request.alpha;
        let count = self.len();
        let threads = if self.scoring.len() >= kernel::PARALLEL_MIN_VALUES { (*threads).clamp(1, 16).min(count) } else { 1 };
        // Blocks of bounds are not split between threads.
        let per_thread = count.div_ceil(threads.max(1)).div_ceil(BLOCK) * BLOCK;
        parts.resize_with(threads.saturating_sub(1), Vec::new);
        let codes = codes_per_arm(layout.dim);
        let block = |first: usize, entries: &mut Vec<Ranked>, work: &mut kernel::PruneWork| -> PruneStats {
            entries.clear();
            let end = (first + per_thread).min(count);
            let part = Pruning {
                codes: pruning.codes.get(first * codes..end.div_ceil(BLOCK) * BLOCK * codes).unwrap_or_default(),
                blocks: pruning.blocks.get(first / BLOCK..end.div_ceil(BLOCK)).unwrap_or_default(),
                query: pruning.query,
            };
            let rows = self.scoring.get(first * layout.stride..end * layout.stride).unwrap_or_default();
            let order = |a: &Ranked, b: &Ranked| order(a, b, id);
            let mut best = TopK::new(k, entries, &order);
            let start = u32::try_from(first).unwrap_or(u32::MAX);
            kernel::top_k_pruned(layout, rows, &part, query, alpha, start, &mut best, work)
        };
        if threads <= 1 {
            *stats = block(0, entries, work);
            return;
        }
        let block = &block;
        *stats = std::thread::scope(|scope| {
            let handles: Vec<_> = parts
                .iter_mut()
                .zip(1..)
                .map(|(part, t)| scope.spawn(move || block(t * per_thread, part, &mut kernel::PruneWork::default())))
                .collect();
            let mut total = block(0, entries, work);
            for handle in handles {
                if let Ok(other) = handle.join() {
                    total.add(other);
                }
            }
            total
        });
        for part in parts.iter() {
            entries.extend_from_slice(part);
        }
    }

    /// Ranks the given candidate ids. Duplicates count once (the first
    /// occurrence); unknown ids score with the prior. `Ranked::index` is the
    /// position in `candidates`.
    ///
    /// # Errors
    /// [`Error::DimMismatch`] or [`Error::NotFinite`] for a bad context.
    pub fn rank_candidates<'s, C: AsRef<[u8]>>(
        &self,
        request: &RankRequest<'_>,
        candidates: &[C],
        scratch: &'s mut RankScratch,
    ) -> Result<&'s [Ranked]> {
        scratch.prepare(self, request)?;
        let alpha = request.alpha;
        // Seen-marks per model row, stamped with a per-request epoch so they
        // never need clearing.
        if scratch.seen.len() < self.len() {
            scratch.seen.resize(self.len(), 0);
        }
        scratch.epoch = scratch.epoch.wrapping_add(1);
        if scratch.epoch == 0 {
            scratch.seen.fill(0);
            scratch.epoch = 1;
        }
        let epoch = scratch.epoch;
        scratch.unknown.clear();
        for (candidate, index) in candidates.iter().zip(0u32..) {
            let Some(row) = self.row_of(candidate.as_ref()) else {
                scratch.unknown.push(index);
                continue;
            };
            let Some(mark) = scratch.seen.get_mut(row) else { continue };
            if *mark == epoch {
                continue;
            }
            *mark = epoch;
            let stride = self.layout.stride;
            if let Some(values) = self.scoring.get(row * stride..(row + 1) * stride) {
                let score = kernel::score(&self.layout, values, &scratch.query, alpha);
                scratch.entries.push(Ranked { index, score });
            }
        }
        if !scratch.unknown.is_empty() {
            let id = |index: &u32| candidates.get(*index as usize).map_or(&[][..], AsRef::as_ref);
            // Stable sort keeps the first occurrence of each duplicate first.
            scratch.unknown.sort_by(|a, b| id(a).cmp(id(b)));
            scratch.unknown.dedup_by(|a, b| id(a) == id(b));
            let score = prior_score(request.context, alpha, self.settings().lambda);
            scratch.entries.extend(scratch.unknown.iter().map(|&index| Ranked { index, score }));
        }
        Ok(scratch.select(request.top, |index| candidates.get(index as usize).map_or(&[][..], AsRef::as_ref)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::needless_range_loop)]
mod tests {
    use super::*;
    use crate::limits::Limits;
    use crate::model::ModelSettings;
    use crate::payload::{ArmPayload, Payload};

    /// xᵀθ + α√(xᵀMx) with full matrices, written independently of the
    /// packed fast path.
    fn reference_score(x: &[f64], a_inv_rows: &[Vec<f64>], b: &[f64], alpha: f64) -> f64 {
        let d = x.len();
        let theta: Vec<f64> = (0..d).map(|i| (0..d).map(|j| a_inv_rows[i][j] * b[j]).sum()).collect();
        let mean: f64 = (0..d).map(|i| x[i] * theta[i]).sum();
        let quad: f64 = (0..d).map(|i| (0..d).map(|j| x[i] * a_inv_rows[i][j] * x[j]).sum::<f64>()).sum();
        mean + alpha * quad.max(0.0).sqrt()
    }

    fn model_with(arms: &[(&str, Vec<f64>, Vec<f64>)], dim: usize) -> Model {
        let mut model = Model::new(ModelSettings { dim, alpha: 1.0, lambda: 2.0, decay: 1.0 });
        let payload = Payload {
            dim,
            arms: arms
                .iter()
                .map(|(id, a_inv, b)| ArmPayload {
                    id: (*id).into(),
                    a_inv: a_inv.clone(),
                    b: b.clone(),
                    a: None,
                    n: 1,
                    reward_sum: 1.0,
                    updated_ms: None,
                })
                .collect(),
            offsets: vec![],
            settings: None,
            base_offsets: vec![],
            version: None,
            fences: vec![],
        };
        model.apply(&payload, 0, &Limits::default()).unwrap();
        model
    }

    #[test]
    fn score_by_hand() {
        // A⁻¹ = [[0.5, 0.1], [0.1, 0.25]], b = [1, 2] → θ = [0.7, 0.6]
        // x = [1, 2]: xᵀθ = 1.9; xᵀA⁻¹x = 0.5 + 2·0.1·2 + 0.25·4 = 1.9
        // score(α = 2) = 1.9 + 2·√1.9
        let model = model_with(&[("a", vec![0.5, 0.1, 0.25], vec![1.0, 2.0])], 2);
        let mut scratch = RankScratch::default();
        let request = RankRequest { context: &[1.0, 2.0], alpha: 2.0, top: None };
        let ranked = model.rank_all(&request, &mut scratch).unwrap();
        let expected = 1.9 + 2.0 * 1.9f64.sqrt();
        assert!((ranked[0].score - expected).abs() < 1e-6, "{} vs {expected}", ranked[0].score);
    }

    #[test]
    fn matches_the_reference_formula_on_larger_models() {
        let dim = 15;
        let arms: Vec<(String, Vec<f64>, Vec<f64>)> = (0..40)
            .map(|k| {
                // A⁻¹ = diag + small symmetric coupling, positive definite.
                let mut rows = vec![vec![0.0; dim]; dim];
                for i in 0..dim {
                    for j in 0..dim {
                        rows[i][j] = if i == j { 0.5 + (k + i) as f64 / 100.0 } else { 0.001 * ((i * j + k) % 5) as f64 };
                    }
                }
                let packed_inv: Vec<f64> = packed::positions(dim).map(|(i, j)| rows[i][j]).collect();
                let b: Vec<f64> = (0..dim).map(|i| ((k * 31 + i * 7) % 13) as f64 / 6.0 - 1.0).collect();
                (format!("p{k}"), packed_inv, b)
            })
            .collect();
        let borrowed: Vec<(&str, Vec<f64>, Vec<f64>)> =
            arms.iter().map(|(id, a, b)| (id.as_str(), a.clone(), b.clone())).collect();
        let model = model_with(&borrowed, dim);
        let x: Vec<f64> = (0..dim).map(|i| (i % 4) as f64 / 3.0).collect();
        let mut scratch = RankScratch::default();
        let ranked = model.rank_all(&RankRequest { context: &x, alpha: 0.7, top: None }, &mut scratch).unwrap();
        assert_eq!(ranked.len(), 40);
        for entry in ranked {
            let (_, a_inv, b) = &arms[entry.index as usize];
            let want = reference_score(&x, &packed::to_rows(dim, a_inv), b, 0.7);
            // f32 scoring: agreement to single precision.
            assert!((entry.score - want).abs() <= 1e-5 * want.abs().max(1.0), "{} vs {want}", entry.score);
        }
        assert!(ranked.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn top_k_equals_the_head_of_the_full_order() {
        let arms: Vec<(String, Vec<f64>, Vec<f64>)> =
            (0..50).map(|k| (format!("{k:03}"), vec![1.0], vec![(k % 7) as f64])).collect();
        let borrowed: Vec<(&str, Vec<f64>, Vec<f64>)> =
            arms.iter().map(|(id, a, b)| (id.as_str(), a.clone(), b.clone())).collect();
        let model = model_with(&borrowed, 1);
        let mut scratch = RankScratch::default();
        let full: Vec<Ranked> =
            model.rank_all(&RankRequest { context: &[1.0], alpha: 0.0, top: None }, &mut scratch).unwrap().to_vec();
        for k in [1, 3, 7, 8, 50, 60] {
            let top = model.rank_all(&RankRequest { context: &[1.0], alpha: 0.0, top: Some(k) }, &mut scratch).unwrap();
            assert_eq!(top, &full[..k.min(50)]);
        }
        // Ties on score break by id: the best score is 6, held by 006, 013, 020, …
        let ids: Vec<&str> = full[..3].iter().map(|r| model.id_at(r.index as usize)).collect();
        assert_eq!(ids, ["006", "013", "020"]);
    }

    #[test]
    fn candidates_unknown_duplicates_and_prior() {
        let model = model_with(&[("a", vec![1.0, 0.0, 1.0], vec![3.0, 0.0]), ("b", vec![1.0, 0.0, 1.0], vec![0.0, 0.0])], 2);
        let mut scratch = RankScratch::default();
        let candidates: [&[u8]; 6] = [b"b", b"zz", b"a", b"b", b"new", b"zz"];
        let request = RankRequest { context: &[1.0, 0.0], alpha: 1.0, top: None };
        let ranked = model.rank_candidates(&request, &candidates, &mut scratch).unwrap();
        let ids: Vec<&[u8]> = ranked.iter().map(|r| candidates[r.index as usize]).collect();
        assert_eq!(ids, [&b"a"[..], b"b", b"new", b"zz"]);
        // a: 3 + 1; b: 0 + 1; unknown: prior √(1/λ) with λ = 2.
        assert_eq!(ranked[0].score, 4.0);
        assert_eq!(ranked[1].score, 1.0);
        assert_eq!(ranked[2].score, (0.5f64).sqrt());
        assert_eq!(ranked[3].score, (0.5f64).sqrt());
    }

    #[test]
    fn rejects_bad_contexts() {
        let model = model_with(&[("a", vec![1.0], vec![1.0])], 1);
        let mut scratch = RankScratch::default();
        let error = model.rank_all(&RankRequest { context: &[1.0, 2.0], alpha: 1.0, top: None }, &mut scratch).unwrap_err();
        assert_eq!(error.to_string(), "CONTEXT has 2 values, model dim is 1");
        let error = model.rank_all(&RankRequest { context: &[f64::NAN], alpha: 1.0, top: None }, &mut scratch).unwrap_err();
        assert_eq!(error.to_string(), "value is not a finite number");
    }
}

