//! The scoring kernel: LinUCB scores of many arms against one query, the hot
//! loop of every RANK.
//!
//! Rows are f32 and laid out [θ | packed A⁻¹], each part zero-padded to a
//! multiple of eight values so both dot products run in whole 8-lane blocks
//! with no scalar tail. Two independent accumulators keep the adds in flight.
//! On x86-64 CPUs with AVX2 the same code is compiled a second time with AVX2
//! enabled and chosen at run time, its dot product written in AVX2
//! instructions that perform the portable loop's operations in its order
//! (`Dot`); no fused multiply-add is used, so both copies give
//! bit-identical scores. A pruned top-k keeps its best k in a heap
//! ([`TopK`]), so the threshold is always the exact k-th best so far.

use std::cmp::Ordering;

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

/// How the scoring paths take a dot product of two slices whose length is a
/// multiple of eight. Every implementation computes the same operations in
/// the same order (eight lanes, even and odd blocks summed apart, then
/// `((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))`), so they give the
/// same bits: the AVX2 one only states the vector instructions itself,
/// where the compiler's own vectorisation of the portable loop was poor
/// (half-width adds and shuffles in the quadratic form, a third of a scan).
trait Dot {
    fn dot(a: &[f32], b: &[f32]) -> f32;
}

/// The portable dot product.
struct Portable;

impl Dot for Portable {
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
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
}

/// The AVX2 dot product; only the `*_avx2` functions, which run after
/// [`has_avx2`], instantiate code with it.
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Dot for Avx2 {
    #[inline(always)]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: Avx2 is used only inside functions that run after
        // has_avx2() found the feature.
        unsafe { dot_avx2(a, b) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_setzero_ps,
        _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehdup_ps, _mm_movehl_ps,
    };
    let blocks = a.len().min(b.len()) / LANES;
    let (a, b) = (a.as_ptr(), b.as_ptr());
    // SAFETY: block i < blocks covers values 8i..8i + 8 of both slices.
    let product = |i: usize| -> __m256 { unsafe { _mm256_mul_ps(_mm256_loadu_ps(a.add(i * LANES)), _mm256_loadu_ps(b.add(i * LANES))) } };
    let mut even = _mm256_setzero_ps();
    let mut odd = _mm256_setzero_ps();
    let mut i = 0;
    while i + 2 <= blocks {
        even = _mm256_add_ps(even, product(i));
        odd = _mm256_add_ps(odd, product(i + 1));
        i += 2;
    }
    if i < blocks {
        even = _mm256_add_ps(even, product(i));
    }
    let lanes = _mm256_add_ps(even, odd);
    // [a0 + a4, a1 + a5, a2 + a6, a3 + a7]
    let halves = _mm_add_ps(_mm256_castps256_ps128(lanes), _mm256_extractf128_ps::<1>(lanes));
    // [s0 + s1, _, s2 + s3, _], then their sum.
    let pairs = _mm_add_ps(halves, _mm_movehdup_ps(halves));
    _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehl_ps(pairs, pairs)))
}

/// xᵀθ of a row, as every scoring path computes it.
#[inline(always)]
fn mean_of<D: Dot>(layout: &Layout, row: &[f32], query: &[f32]) -> f64 {
    let theta = row.get(..layout.theta_len).unwrap_or(row);
    let x = query.get(..layout.theta_len).unwrap_or(query);
    f64::from(D::dot(theta, x))
}

/// xᵀA⁻¹x of a row, as every scoring path computes it.
#[inline(always)]
fn variance_of<D: Dot>(layout: &Layout, row: &[f32], query: &[f32]) -> f64 {
    let a_inv = row.get(layout.theta_len..).unwrap_or_default();
    let weights = query.get(layout.theta_len..).unwrap_or_default();
    // Rounding can push a tiny variance below zero; it is zero.
    f64::from(D::dot(a_inv, weights)).max(0.0)
}

#[inline(always)]
fn combine(mean: f64, variance: f64, alpha: f64) -> f64 {
    finite_or_lowest(mean + alpha * variance.sqrt())
}

#[inline(always)]
fn score_generic<D: Dot>(layout: &Layout, row: &[f32], query: &[f32], alpha: f64) -> f64 {
    combine(mean_of::<D>(layout, row, query), variance_of::<D>(layout, row, query), alpha)
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
/// Eight rows at a time, their square roots and sums last, so the long
/// latency of each square root overlaps the next rows' dot products.
#[inline(always)]
fn score_range_generic<D: Dot>(layout: &Layout, rows: &[f32], query: &[f32], alpha: f64, first: u32, out: &mut [Ranked]) {
    let mut index = first;
    let mut means = [0.0f64; BLOCK];
    let mut variances = [0.0f64; BLOCK];
    for (rows, slots) in rows.chunks(layout.stride * BLOCK).zip(out.chunks_mut(BLOCK)) {
        for ((row, mean), variance) in rows.chunks_exact(layout.stride).zip(&mut means).zip(&mut variances) {
            *mean = mean_of::<D>(layout, row, query);
            *variance = variance_of::<D>(layout, row, query);
        }
        for ((slot, &mean), &variance) in slots.iter_mut().zip(&means).zip(&variances) {
            *slot = Ranked { index, score: combine(mean, variance, alpha) };
            index = index.wrapping_add(1);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn score_range_avx2(layout: &Layout, rows: &[f32], query: &[f32], alpha: f64, first: u32, out: &mut [Ranked]) {
    score_range_generic::<Avx2>(layout, rows, query, alpha, first, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn score_avx2(layout: &Layout, row: &[f32], query: &[f32], alpha: f64) -> f64 {
    score_generic::<Avx2>(layout, row, query, alpha)
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
    score_range_generic::<Portable>(layout, rows, query, alpha, first, out);
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

/// The best k entries seen so far under `order` (best first; ties by id),
/// kept as a binary heap whose root is the worst of them, so the k-th best
/// score, below which no arm can enter any more, is always at hand and
/// follows the scan exactly. An entry is offered only when it reached that
/// score, which after the first k is rare: the heap costs little.
pub struct TopK<'e, 'o> {
    k: usize,
    heap: &'e mut Vec<Ranked>,
    order: &'o (dyn Fn(&Ranked, &Ranked) -> Ordering + Sync),
}

impl std::fmt::Debug for TopK<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopK").field("k", &self.k).field("heap", &self.heap).finish_non_exhaustive()
    }
}

impl<'e, 'o> TopK<'e, 'o> {
    /// An empty top `k`, kept in `heap` (cleared here; left in heap order,
    /// not sorted).
    pub fn new(k: usize, heap: &'e mut Vec<Ranked>, order: &'o (dyn Fn(&Ranked, &Ranked) -> Ordering + Sync)) -> Self {
        heap.clear();
        Self { k, heap, order }
    }

    /// The k-th best score so far (−∞ while fewer than k are kept): an
    /// entry below it cannot enter, one equal to it may (ties go by id).
    #[inline(always)]
    pub fn threshold(&self) -> f64 {
        match self.heap.first() {
            Some(root) if self.heap.len() >= self.k => root.score,
            _ => f64::NEG_INFINITY,
        }
    }

    /// Keeps `entry` if it is among the best k so far.
    pub fn offer(&mut self, entry: Ranked) {
        if self.heap.len() < self.k {
            self.heap.push(entry);
            let mut at = self.heap.len() - 1;
            while at > 0 && self.worse(at, (at - 1) / 2) {
                self.heap.swap(at, (at - 1) / 2);
                at = (at - 1) / 2;
            }
            return;
        }
        let Some(root) = self.heap.first() else { return };
        if !self.ranks_below(root, &entry) {
            return;
        }
        if let Some(root) = self.heap.first_mut() {
            *root = entry;
        }
        let mut at = 0;
        loop {
            let mut worst = at;
            for child in [2 * at + 1, 2 * at + 2] {
                if self.worse(child, worst) {
                    worst = child;
                }
            }
            if worst == at {
                break;
            }
            self.heap.swap(at, worst);
            at = worst;
        }
    }

    /// Whether the entry at `a` ranks below the one at `b` (false when
    /// either is missing).
    #[inline(always)]
    fn worse(&self, a: usize, b: usize) -> bool {
        match (self.heap.get(a), self.heap.get(b)) {
            (Some(a), Some(b)) => self.ranks_below(a, b),
            _ => false,
        }
    }

    /// Whether `a` ranks below `b`. Different scores decide by themselves
    /// (scores are never NaN, and `order` compares them the same way);
    /// only equal ones (±0 included) ask `order`, which looks at the ids.
    #[inline(always)]
    fn ranks_below(&self, a: &Ranked, b: &Ranked) -> bool {
        if a.score != b.score {
            return a.score < b.score;
        }
        (self.order)(a, b) == Ordering::Greater
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn top_k_pruned_generic<D: Dot>(layout: &Layout, rows: &[f32], pruning: &Pruning<'_>, query: &[f32], alpha: f64, first: u32, best: &mut TopK<'_, '_>, held: &mut Vec<Held>) -> PruneStats {
    // Rows of a small model stay in cache: no prefetching (it only costs),
    // and the bounds of every arm can be looked at first.
    if rows.len() < PREFETCH_MIN_VALUES {
        return best_first::<D>(layout, rows, pruning, query, alpha, first, best, held);
    }
    let mut threshold = best.threshold();
    let mut stats = PruneStats::default();
    let x = query.get(..layout.dim).unwrap_or(query);
    let bound_of = pruning.query;
    let mut spread = [0.0; BLOCK];
    let mut bound = [0.0; BLOCK];
    let mut pending = Pending::new();
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
        let survivors = bound.iter().filter(|&&b| b >= threshold).count();
        if survivors == 0 {
            let arms = rows.len() / layout.stride.max(1);
            stats.arms += arms;
            stats.by_codes += arms;
            continue;
        }
        if survivors == BLOCK {
            // A whole block passes (an untrained model): scoring its eight
            // rows in one batch costs less than picking them out, and rows
            // read in order stream without prefetching.
            let mut scored = [Ranked { index: 0, score: f64::NEG_INFINITY }; BLOCK];
            score_range_generic::<D>(layout, rows, query, alpha, start, &mut scored);
            stats.arms += rows.len() / layout.stride.max(1);
            for entry in scored.iter().take(rows.len() / layout.stride.max(1)) {
                if entry.score >= threshold {
                    best.offer(*entry);
                    threshold = best.threshold();
                }
            }
            continue;
        }
        for (lane, (row, (&spread, &bound))) in rows.chunks_exact(layout.stride).zip(spread.iter().zip(&bound)).enumerate() {
            stats.arms += 1;
            if bound < threshold {
                stats.by_codes += 1;
                continue;
            }
            if row.as_ptr() != next_row {
                prefetch(row);
            }
            next_row = row.as_ptr_range().end;
            if pending.push(Candidate { row, index: start.wrapping_add(lane as u32), spread, bound }) {
                pending.score::<D>(layout, query, alpha, best, &mut threshold, &mut stats);
            }
        }
    }
    pending.score::<D>(layout, query, alpha, best, &mut threshold, &mut stats);
    stats
}

/// An arm's bound, kept by a best-first scan.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    bound: f64,
    spread: f64,
    /// The arm's position in the scanned rows.
    at: u32,
}

/// The pruned scan of rows in cache: every arm's bound first (cheap beside
/// the rows), then the k arms with the highest bounds are scored, so the
/// threshold starts near its final value instead of rising arm by arm in
/// row order, and then the rest, each only if its bound reaches the
/// threshold. On a model whose arms score alike (200 arms trained on the
/// same rate) that scores about half as many rows as the scan in row order.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn best_first<D: Dot>(layout: &Layout, rows: &[f32], pruning: &Pruning<'_>, query: &[f32], alpha: f64, first: u32, best: &mut TopK<'_, '_>, held: &mut Vec<Held>) -> PruneStats {
    let x = query.get(..layout.dim).unwrap_or(query);
    let mut spread = [0.0; BLOCK];
    let mut bound = [0.0; BLOCK];
    held.clear();
    let blocks = rows.chunks(layout.stride * BLOCK).zip(pruning.codes.chunks(layout.dim * BLOCK)).zip(pruning.blocks).zip((0u32..).step_by(BLOCK));
    for (((rows, codes), block), start) in blocks {
        pruning.query.block_bounds(block, codes, x, alpha, &mut spread, &mut bound);
        let arms = rows.len() / layout.stride.max(1);
        for ((&bound, &spread), lane) in bound.iter().zip(&spread).zip(0u32..).take(arms) {
            held.push(Held { bound, spread, at: start.wrapping_add(lane) });
        }
    }
    let mut stats = PruneStats { arms: held.len(), ..PruneStats::default() };
    let k = best.k.min(held.len());
    let mut threshold = best.threshold();
    if k > 0 {
        // The k highest bounds first (a partition, not a sort); the rest in
        // any order.
        held.select_nth_unstable_by(k - 1, |a, b| b.bound.total_cmp(&a.bound));
    }
    for arm in held.iter() {
        let start = arm.at as usize * layout.stride;
        if let Some(row) = rows.get(start..start + layout.stride) {
            let candidate = Candidate { row, index: first.wrapping_add(arm.at), spread: arm.spread, bound: arm.bound };
            consider::<D>(layout, query, alpha, &candidate, best, &mut threshold, &mut stats);
        }
    }
    stats
}


/// Scores a candidate unless the threshold is above its bound, or above
/// its exact mean plus the spread (a tighter bound), and offers it to the
/// top k.
#[inline(always)]
fn consider<D: Dot>(layout: &Layout, query: &[f32], alpha: f64, candidate: &Candidate<'_>, best: &mut TopK<'_, '_>, threshold: &mut f64, stats: &mut PruneStats) {
    if candidate.bound < *threshold {
        stats.by_codes += 1;
        return;
    }
    let mean = mean_of::<D>(layout, candidate.row, query);
    if mean + candidate.spread < *threshold {
        stats.by_mean += 1;
        return;
    }
    let score = combine(mean, variance_of::<D>(layout, candidate.row, query), alpha);
    if score >= *threshold {
        best.offer(Ranked { index: candidate.index, score });
        *threshold = best.threshold();
    }
}

/// Candidates a pruned scan holds back and then scores together: on a
/// large model their rows, prefetched when they were found, have arrived
/// by then (waiting for each in turn was a third of the scan), and on any
/// model the held rows' dot products and square roots overlap instead of
/// each waiting on the last candidate's comparison with the threshold.
const PENDING: usize = 16;

#[derive(Clone, Copy)]
struct Candidate<'r> {
    row: &'r [f32],
    index: u32,
    spread: f64,
    bound: f64,
}

struct Pending<'r> {
    held: [Candidate<'r>; PENDING],
    len: usize,
}

impl<'r> Pending<'r> {
    fn new() -> Self {
        Self { held: [Candidate { row: &[], index: 0, spread: 0.0, bound: f64::NEG_INFINITY }; PENDING], len: 0 }
    }

    /// Holds a candidate; true when full.
    #[inline(always)]
    fn push(&mut self, candidate: Candidate<'r>) -> bool {
        if let Some(slot) = self.held.get_mut(self.len) {
            *slot = candidate;
            self.len += 1;
        }
        self.len >= PENDING
    }

    /// Scores the held candidates against the threshold as it is now (it
    /// only rises while they wait, so a candidate skipped here would have
    /// been skipped at once too): those whose bound it has overtaken are
    /// dropped, then those whose exact mean plus the spread (a tighter
    /// bound) is below it, and the rest are scored in full and offered to
    /// the top k.
    #[inline(always)]
    fn score<D: Dot>(&mut self, layout: &Layout, query: &[f32], alpha: f64, best: &mut TopK<'_, '_>, threshold: &mut f64, stats: &mut PruneStats) {
        let held = self.held.get_mut(..self.len).unwrap_or_default();
        self.len = 0;
        let mut means = [0.0f64; PENDING];
        for (candidate, mean) in held.iter().zip(&mut means) {
            if candidate.bound >= *threshold {
                *mean = mean_of::<D>(layout, candidate.row, query);
            }
        }
        let mut variances = [f64::NAN; PENDING];
        for ((candidate, &mean), variance) in held.iter().zip(&means).zip(&mut variances) {
            if candidate.bound < *threshold {
                stats.by_codes += 1;
            } else if mean + candidate.spread < *threshold {
                stats.by_mean += 1;
            } else {
                *variance = variance_of::<D>(layout, candidate.row, query);
            }
        }
        for ((candidate, &mean), &variance) in held.iter().zip(&means).zip(&variances) {
            // NaN marks a candidate dropped above (a computed variance is ≥ 0).
            if variance.is_nan() {
                continue;
            }
            let score = combine(mean, variance, alpha);
            if score >= *threshold {
                best.offer(Ranked { index: candidate.index, score });
                *threshold = best.threshold();
            }
        }
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
fn top_k_pruned_avx2(layout: &Layout, rows: &[f32], pruning: &Pruning<'_>, query: &[f32], alpha: f64, first: u32, best: &mut TopK<'_, '_>, held: &mut Vec<Held>) -> PruneStats {
    top_k_pruned_generic::<Avx2>(layout, rows, pruning, query, alpha, first, best, held)
}

/// Scores `rows` (numbered from `first`, a multiple of eight, with the
/// bound blocks and codes of the same arms) into `best`, skipping every arm
/// whose score bound is below the current threshold: the k-th best score
/// so far. An arm of the true top k is never skipped (its bound is at least
/// its score, which is at least the final k-th score, which is at least any
/// threshold), and every arm kept was scored exactly as [`score_all`]
/// scores it, so `best` ends with the full scan's best k, bit for bit.
/// Rows that fit in the caches are scanned best first (`held` keeps their
/// bounds). `alpha` must be ≥ 0.
#[allow(clippy::too_many_arguments)]
pub fn top_k_pruned(layout: &Layout, rows: &[f32], pruning: &Pruning<'_>, query: &[f32], alpha: f64, first: u32, best: &mut TopK<'_, '_>, held: &mut Vec<Held>) -> PruneStats {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2, the only feature this copy assumes.
        return unsafe { top_k_pruned_avx2(layout, rows, pruning, query, alpha, first, best, held) };
    }
    top_k_pruned_generic::<Portable>(layout, rows, pruning, query, alpha, first, best, held)
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
    score_generic::<Portable>(layout, row, query, alpha)
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

    /// The heap keeps what sorting everything and taking the head keeps,
    /// with many ties (broken by a stand-in id: the index reversed).
    #[test]
    fn top_k_keeps_the_head_of_the_sorted_order() {
        let order = |a: &Ranked, b: &Ranked| b.score.total_cmp(&a.score).then_with(|| b.index.cmp(&a.index));
        let entries: Vec<Ranked> = (0..300u32).map(|i| Ranked { index: i, score: f64::from((i * 7919) % 13) - 6.0 }).collect();
        for k in [1, 2, 5, 13, 64, 300, 400] {
            let mut heap = Vec::new();
            let mut best = TopK::new(k, &mut heap, &order);
            for entry in &entries {
                best.offer(*entry);
            }
            let threshold = best.threshold();
            heap.sort_by(order);
            let mut want = entries.clone();
            want.sort_by(order);
            want.truncate(k);
            assert_eq!(heap, want, "k {k}");
            let expected = if k <= entries.len() { want[k - 1].score } else { f64::NEG_INFINITY };
            assert_eq!(threshold.to_bits(), expected.to_bits(), "k {k}");
        }
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
            let generic = score_generic::<Portable>(&layout, &row, &query, 0.5);
            assert!((generic - want).abs() <= 1e-5 * want.abs().max(1.0), "dim {dim}: {generic} vs {want}");
            assert_eq!(score(&layout, &row, &query, 0.5).to_bits(), generic.to_bits(), "dim {dim}: dispatch differs");
            let mut out = Vec::new();
            score_all(&layout, &[row.clone(), row].concat(), &query, 0.5, 1, &mut out);
            assert_eq!(out.len(), 2);
            assert_eq!(out[1], Ranked { index: 1, score: generic });
        }
    }
}
