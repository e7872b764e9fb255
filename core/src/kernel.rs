//! The scoring kernel: LinUCB scores of many arms against one query, the hot
//! loop of every RANK.
//!
//! Rows are f32 and laid out [θ | packed A⁻¹], each part zero-padded to a
//! multiple of eight values so both dot products run in whole 8-lane blocks
//! with no scalar tail. Two independent accumulators keep the adds in flight.
//! On x86-64 CPUs with AVX2 the same code is compiled a second time with AVX2
//! enabled and chosen at run time; no fused multiply-add is used, so both
//! copies give bit-identical scores.

use crate::bounds::{BoundBlock, QueryBound, BLOCK};
use crate::rank::Ranked;

const LANES: usize = 8;

/// Where θ and A⁻¹ sit in a scoring row of a model of dimension `dim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub dim: usize,
    /// θ's length, padded.
    pub theta_len: usize,
    /// Packed A⁻¹'s length, padded.
    pub a_inv_len: usize,
    /// Values per row.
    pub stride: usize,
}

impl Layout {
    #[must_use]
    pub fn new(dim: usize) -> Self {
        let theta_len = dim.div_ceil(LANES) * LANES;
        let a_inv_len = crate::packed::len(dim).div_ceil(LANES) * LANES;
        Self { dim, theta_len, a_inv_len, stride: theta_len + a_inv_len }
    }

    /// Writes one row from exact θ and packed A⁻¹.
    pub fn write_row(&self, theta: &[f64], a_inv: &[f64], out: &mut [f32]) {
        out.fill(0.0);
        let (theta_out, a_inv_out) = out.split_at_mut(self.theta_len.min(out.len()));
        narrow(theta, theta_out);
        narrow(a_inv, a_inv_out);
    }

    /// Writes the query [x | quadratic weights of x] in the same layout.
    pub fn write_query(&self, x: &[f64], weights: &[f64], out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.stride, 0.0);
        self.write_row(x, weights, out);
    }
}

fn narrow(exact: &[f64], out: &mut [f32]) {
    for (slot, &value) in out.iter_mut().zip(exact) {
        *slot = value as f32;
    }
}

#[inline(always)]
fn multiply_add(acc: &mut [f32; LANES], x: &[f32; LANES], y: &[f32; LANES]) {
    for ((slot, a), b) in acc.iter_mut().zip(x).zip(y) {
        *slot += a * b;
    }
}

/// Dot product of two slices whose length is a multiple of eight.
#[inline(always)]
fn dot_blocks(a: &[f32], b: &[f32]) -> f32 {
    let (blocks_a, _) = a.as_chunks::<LANES>();
    let (blocks_b, _) = b.as_chunks::<LANES>();
    let mut even = [0.0f32; LANES];
    let mut odd = [0.0f32; LANES];
    let mut pairs_a = blocks_a.chunks_exact(2);
    let mut pairs_b = blocks_b.chunks_exact(2);
    for (x, y) in (&mut pairs_a).zip(&mut pairs_b) {
        if let ([x0, x1], [y0, y1]) = (x, y) {
            multiply_add(&mut even, x0, y0);
            multiply_add(&mut odd, x1, y1);
        }
    }
    if let (Some(x), Some(y)) = (pairs_a.remainder().first(), pairs_b.remainder().first()) {
        multiply_add(&mut even, x, y);
    }
    for (e, o) in even.iter_mut().zip(odd) {
        *e += o;
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7] = even;
    ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))
}

/// xᵀθ of a row, as every scoring path computes it.
#[inline(always)]
fn mean_of(layout: &Layout, row: &[f32], query: &[f32]) -> f64 {
    let theta = row.get(..layout.theta_len).unwrap_or(row);
    let x = query.get(..layout.theta_len).unwrap_or(query);
    f64::from(dot_blocks(theta, x))
}

/// xᵀA⁻¹x of a row, as every scoring path computes it.
#[inline(always)]
fn variance_of(layout: &Layout, row: &[f32], query: &[f32]) -> f64 {
    let a_inv = row.get(layout.theta_len..).unwrap_or_default();
    let weights = query.get(layout.theta_len..).unwrap_or_default();
    // Rounding can push a tiny variance below zero; it is zero.
    f64::from(dot_blocks(a_inv, weights)).max(0.0)
}

#[inline(always)]
fn combine(mean: f64, variance: f64, alpha: f64) -> f64 {
    finite_or_lowest(mean + alpha * variance.sqrt())
}

#[inline(always)]
fn score_generic(layout: &Layout, row: &[f32], query: &[f32], alpha: f64) -> f64 {
    combine(mean_of(layout, row, query), variance_of(layout, row, query), alpha)
}

/// A NaN score (from overflowing inputs) ranks last instead of poisoning
/// the order.
#[inline(always)]
pub(crate) fn finite_or_lowest(score: f64) -> f64 {
    if score.is_nan() {
        f64::NEG_INFINITY
    } else {
        score
    }
}

/// Scores `rows` into `out` (one entry per row), numbering from `first`.
/// A plain loop rather than iterator adapters: those would be compiled as
/// separate functions without the caller's AVX2, and the hot loop with them.
#[inline(always)]
fn score_range_generic(layout: &Layout, rows: &[f32], query: &[f32], alpha: f64, first: u32, out: &mut [Ranked]) {
    let mut index = first;
    for (row, slot) in rows.chunks_exact(layout.stride).zip(out) {
        *slot = Ranked { index, score: score_generic(layout, row, query, alpha) };
        index = index.wrapping_add(1);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn score_range_avx2(layout: &Layout, rows: &[f32], query: &[f32], alpha: f64, first: u32, out: &mut [Ranked]) {
    score_range_generic(layout, rows, query, alpha, first, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn score_avx2(layout: &Layout, row: &[f32], query: &[f32], alpha: f64) -> f64 {
    score_generic(layout, row, query, alpha)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Scores `rows` into `out`, one entry per row, indices from `first`.
pub fn score_range(layout: &Layout, rows: &[f32], query: &[f32], alpha: f64, first: u32, out: &mut [Ranked]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2, the only feature this copy assumes.
        unsafe { score_range_avx2(layout, rows, query, alpha, first, out) };
        return;
    }
    score_range_generic(layout, rows, query, alpha, first, out);
}

/// What a pruned scan reads besides the rows (see [`crate::bounds`]).
#[derive(Debug, Clone, Copy)]
pub struct Pruning<'a> {
    /// The arms' θ codes, interleaved by blocks of eight arms (`dim` × 8 per block).
    pub codes: &'a [i8],
    /// The arms' bounds, eight arms per block.
    pub blocks: &'a [BoundBlock],
    /// The query's factors.
    pub query: &'a QueryBound,
}

/// How many arms a pruned scan looked at, and how many it dropped by the
/// bound from θ's codes and by the bound from the exact mean (the rest had
/// their quadratic form computed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    pub arms: usize,
    pub by_codes: usize,
    pub by_mean: usize,
}

impl PruneStats {
    /// Adds another block's counts.
    pub fn add(&mut self, other: Self) {
        self.arms += other.arms;
        self.by_codes += other.by_codes;
        self.by_mean += other.by_mean;
    }
}

/// Keeps the best entries (at least k) and returns the k-th best score, below
/// which no arm can enter the top k any more.
pub type Shrink<'s> = dyn FnMut(&mut Vec<Ranked>) -> f64 + 's;

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn top_k_pruned_generic(
    layout: &Layout,
    rows: &[f32],
    pruning: &Pruning<'_>,
    query: &[f32],
    alpha: f64,
    first: u32,
    capacity: usize,
    entries: &mut Vec<Ranked>,
    shrink: &mut Shrink<'_>,
) -> PruneStats {
    let mut threshold = f64::NEG_INFINITY;
    let mut stats = PruneStats::default();
    let x = query.get(..layout.dim).unwrap_or(query);
    let bound_of = pruning.query;
    let mut spread = [0.0; BLOCK];
    let mut bound = [0.0; BLOCK];
    let mut pending = Pending::new(capacity);
    // Rows of a small model stay in cache; prefetching them only costs.
    let far = rows.len() >= PREFETCH_MIN_VALUES;
    // Where the last candidate's row ended: a candidate right after it is
    // part of a run the hardware prefetcher already streams (an untrained
    // model, where every arm is a candidate).
    let mut next_row = std::ptr::null::<f32>();
    let blocks = rows
        .chunks(layout.stride * BLOCK)
        .zip(pruning.codes.chunks(layout.dim * BLOCK))
        .zip(pruning.blocks)
        .zip((first..).step_by(BLOCK));
    for (((rows, codes), block), start) in blocks {
        // Both bounds add the same spread to a mean bound, in the kernel's
        // operation order, so monotone rounding keeps them upper bounds.
        bound_of.block_bounds(block, codes, x, alpha, &mut spread, &mut bound);
        if bound.iter().all(|&b| b < threshold) {
            let arms = rows.len() / layout.stride.max(1);
            stats.arms += arms;
            stats.by_codes += arms;
            continue;
        }
        for (lane, (row, (&spread, &bound))) in rows.chunks_exact(layout.stride).zip(spread.iter().zip(&bound)).enumerate() {
            stats.arms += 1;
            if bound < threshold {
                stats.by_codes += 1;
                continue;
            }
            if far && row.as_ptr() != next_row {
                prefetch(row);
            }
            next_row = row.as_ptr_range().end;
            // Without prefetching there is nothing to wait for: score at once.
            if pending.push(Candidate { row, index: start.wrapping_add(lane as u32), spread, bound }) || !far {
                pending.score(layout, query, alpha, entries, shrink, &mut threshold, &mut stats);
            }
        }
    }
    pending.score(layout, query, alpha, entries, shrink, &mut threshold, &mut stats);
    stats
}

/// Candidates a pruned scan holds back until their rows, prefetched when
/// they were found, have arrived: a row is a cache miss on a large model,
/// and waiting for each in turn was a third of the scan.
const PENDING: usize = 16;

#[derive(Clone, Copy)]
struct Candidate<'r> {
    row: &'r [f32],
    index: u32,
    spread: f64,
    bound: f64,
}

struct Pending<'r> {
    held: [Option<Candidate<'r>>; PENDING],
    len: usize,
    /// Entries at which the threshold is recomputed. It grows (to at most
    /// eight times its start) each time that does not raise the threshold:
    /// where many arms tie (an untrained model) it never rises, and
    /// selecting among few entries each time would cost more than it saves.
    capacity: usize,
    max_capacity: usize,
}

impl<'r> Pending<'r> {
    fn new(capacity: usize) -> Self {
        Self { held: [None; PENDING], len: 0, capacity, max_capacity: capacity.saturating_mul(8) }
    }

    /// Holds a candidate; true when full.
    #[inline(always)]
    fn push(&mut self, candidate: Candidate<'r>) -> bool {
        if let Some(slot) = self.held.get_mut(self.len) {
            *slot = Some(candidate);
            self.len += 1;
        }
        self.len >= PENDING
    }

    /// Scores the held candidates in order, checking each against the
    /// threshold as it is now (it only rises while they wait, so a
    /// candidate skipped here would have been skipped at once too).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn score(
        &mut self,
        layout: &Layout,
        query: &[f32],
        alpha: f64,
        entries: &mut Vec<Ranked>,
        shrink: &mut Shrink<'_>,
        threshold: &mut f64,
        stats: &mut PruneStats,
    ) {
        for candidate in self.held.iter_mut().take(self.len) {
            let Some(Candidate { row, index, spread, bound }) = candidate.take() else { continue };
            if bound < *threshold {
                stats.by_codes += 1;
                continue;
            }
            let mean = mean_of(layout, row, query);
            if mean + spread < *threshold {
                stats.by_mean += 1;
                continue;
            }
            entries.push(Ranked { index, score: combine(mean, variance_of(layout, row, query), alpha) });
            if entries.len() >= self.capacity {
                let raised = shrink(entries);
                if raised > *threshold {
                    *threshold = raised;
                } else {
                    self.capacity = self.capacity.saturating_mul(2).min(self.max_capacity);
                }
            }
        }
        self.len = 0;
    }
}

/// Rows (in values) above which a pruned scan prefetches the rows it will
/// read: beyond what the caches hold (4 MB of f32).
const PREFETCH_MIN_VALUES: usize = 1 << 20;

/// Asks for a row's cache lines ahead of reading it.
#[inline(always)]
fn prefetch(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks(16) {
        // SAFETY: SSE is part of x86-64, and a prefetch never faults.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn top_k_pruned_avx2(
    layout: &Layout,
    rows: &[f32],
    pruning: &Pruning<'_>,
    query: &[f32],
    alpha: f64,
    first: u32,
    capacity: usize,
    entries: &mut Vec<Ranked>,
    shrink: &mut Shrink<'_>,
) -> PruneStats {
    top_k_pruned_generic(layout, rows, pruning, query, alpha, first, capacity, entries, shrink)
}

/// Scores `rows` (numbered from `first`, a multiple of eight, with the
/// bound blocks and codes of the same arms) into `entries`, skipping every arm
/// whose score bound is below the current threshold: the k-th best score so
/// far, which `shrink` returns each time `entries` reaches `capacity` (which
/// grows, up to eight times, while that does not raise the threshold). An
/// arm of the true top k is never skipped (its bound is at least its score,
/// which is at least the final k-th score, which is at least any threshold),
/// and every arm kept was scored exactly as [`score_all`] scores it, so the
/// best k of `entries` are the full scan's best k, bit for bit. `alpha`
/// must be ≥ 0.
#[allow(clippy::too_many_arguments)]
pub fn top_k_pruned(
    layout: &Layout,
    rows: &[f32],
    pruning: &Pruning<'_>,
    query: &[f32],
    alpha: f64,
    first: u32,
    capacity: usize,
    entries: &mut Vec<Ranked>,
    shrink: &mut Shrink<'_>,
) -> PruneStats {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2, the only feature this copy assumes.
        return unsafe { top_k_pruned_avx2(layout, rows, pruning, query, alpha, first, capacity, entries, shrink) };
    }
    top_k_pruned_generic(layout, rows, pruning, query, alpha, first, capacity, entries, shrink)
}

/// Below this many values a scan is not worth a thread (about 1 ms of work
/// per 4 M values here; a thread costs tens of microseconds).
pub const PARALLEL_MIN_VALUES: usize = 1 << 20;

/// Scores every row into `out` (replacing its contents), on up to `threads`
/// threads when the scan is large enough to pay for them. Each thread scores
/// a contiguous block of rows, so the result is the same for any count.
pub fn score_all(layout: &Layout, rows: &[f32], query: &[f32], alpha: f64, threads: usize, out: &mut Vec<Ranked>) {
    let count = rows.len() / layout.stride.max(1);
    out.clear();
    out.resize(count, Ranked { index: 0, score: 0.0 });
    let threads = if rows.len() >= PARALLEL_MIN_VALUES { threads.clamp(1, 16).min(count.max(1)) } else { 1 };
    if threads == 1 {
        score_range(layout, rows, query, alpha, 0, out);
        return;
    }
    let per_thread = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let mut blocks = rows.chunks(per_thread * layout.stride).zip(out.chunks_mut(per_thread)).zip((0u32..).step_by(per_thread));
        // The calling thread takes the first block itself.
        let first = blocks.next();
        for ((block, slots), start) in blocks {
            scope.spawn(move || score_range(layout, block, query, alpha, start, slots));
        }
        if let Some(((block, slots), start)) = first {
            score_range(layout, block, query, alpha, start, slots);
        }
    });
}

/// Scores one row.
#[must_use]
pub fn score(layout: &Layout, row: &[f32], query: &[f32], alpha: f64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: as in score_all.
        return unsafe { score_avx2(layout, row, query, alpha) };
    }
    score_generic(layout, row, query, alpha)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn threads_give_the_same_scores() {
        let layout = Layout::new(16);
        let rows_count = PARALLEL_MIN_VALUES / layout.stride + 37;
        let rows: Vec<f32> = (0..rows_count * layout.stride).map(|i| ((i * 31) % 101) as f32 / 101.0).collect();
        let query: Vec<f32> = (0..layout.stride).map(|i| ((i * 7) % 13) as f32 / 13.0).collect();
        let mut one = Vec::new();
        score_all(&layout, &rows, &query, 0.7, 1, &mut one);
        for threads in [2, 3, 8] {
            let mut many = Vec::new();
            score_all(&layout, &rows, &query, 0.7, threads, &mut many);
            assert!(many == one, "{threads} threads differ");
        }
        assert_eq!(one.len(), rows_count);
        assert_eq!(one.last().unwrap().index as usize, rows_count - 1);
    }

    #[test]
    fn padding_and_both_code_paths_agree() {
        for dim in [1, 2, 7, 8, 15, 16, 32] {
            let layout = Layout::new(dim);
            assert_eq!(layout.theta_len % LANES, 0);
            assert_eq!(layout.a_inv_len % LANES, 0);
            let plen = crate::packed::len(dim);
            let theta: Vec<f64> = (0..dim).map(|i| i as f64 / 10.0 - 0.3).collect();
            let a_inv: Vec<f64> = (0..plen).map(|i| ((i * 7) % 11) as f64 / 40.0).collect();
            let x: Vec<f64> = (0..dim).map(|i| ((i * 3) % 5) as f64 / 4.0).collect();
            let mut weights = vec![0.0; plen];
            crate::packed::quadratic_weights(&x, &mut weights);
            let mut row = vec![0.0f32; layout.stride];
            layout.write_row(&theta, &a_inv, &mut row);
            let mut query = Vec::new();
            layout.write_query(&x, &weights, &mut query);
            let mean: f64 = theta.iter().zip(&x).map(|(a, b)| a * b).sum();
            let variance: f64 = a_inv.iter().zip(&weights).map(|(a, b)| a * b).sum();
            let want = mean + 0.5 * variance.max(0.0).sqrt();
            let generic = score_generic(&layout, &row, &query, 0.5);
            assert!((generic - want).abs() <= 1e-5 * want.abs().max(1.0), "dim {dim}: {generic} vs {want}");
            assert_eq!(score(&layout, &row, &query, 0.5).to_bits(), generic.to_bits(), "dim {dim}: dispatch differs");
            let mut out = Vec::new();
            score_all(&layout, &[row.clone(), row].concat(), &query, 0.5, 1, &mut out);
            assert_eq!(out.len(), 2);
            assert_eq!(out[1], Ranked { index: 1, score: generic });
        }
    }
}
