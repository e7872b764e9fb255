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

use crate::bounds::{codes_per_arm, BoundBlock, QueryBound, BLOCK};
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

    /// qᵀp of the eight arms of a block: `codes` their i8 codes in pairs
    /// (see [`crate::bounds`]), `pairs` the query's i16 values in pairs.
    /// Exact in i32 (the query's scale keeps every sum below 2³¹), so every
    /// implementation gives the same values.
    fn code_dots(codes: &[i8], pairs: &[i32]) -> [i32; BLOCK];
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

    #[inline(always)]
    fn code_dots(codes: &[i8], pairs: &[i32]) -> [i32; BLOCK] {
        let mut sums = [0i32; BLOCK];
        for (pair_codes, &pair) in codes.chunks_exact(2 * BLOCK).zip(pairs) {
            let (low, high) = (i32::from(pair as i16), i32::from((pair >> 16) as i16));
            let (arms, _) = pair_codes.as_chunks::<2>();
            for (sum, &[a, b]) in sums.iter_mut().zip(arms) {
                *sum = sum.wrapping_add(i32::from(a) * low + i32::from(b) * high);
            }
        }
        sums
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

    #[inline(always)]
    fn code_dots(codes: &[i8], pairs: &[i32]) -> [i32; BLOCK] {
        // SAFETY: as in `dot`.
        unsafe { code_dots_avx2(codes, pairs) }
    }
}

/// One `vpmaddwd` per two features of eight arms: the 16 codes widened to
/// i16, times the query's pair, summed in pairs into eight i32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn code_dots_avx2(codes: &[i8], pairs: &[i32]) -> [i32; BLOCK] {
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_add_epi32, _mm256_cvtepi8_epi16, _mm256_madd_epi16, _mm256_set1_epi32, _mm256_setzero_si256,
        _mm256_storeu_si256, _mm_loadu_si128,
    };
    let mut sums = _mm256_setzero_si256();
    for (pair_codes, &pair) in codes.chunks_exact(2 * BLOCK).zip(pairs) {
        // SAFETY: the chunk holds exactly 16 bytes.
        let widened = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(pair_codes.as_ptr().cast::<__m128i>()) });
        sums = _mm256_add_epi32(sums, _mm256_madd_epi16(widened, _mm256_set1_epi32(pair)));
    }
    let mut out = [0i32; BLOCK];
    // SAFETY: `out` holds eight i32, 32 bytes.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast::<__m256i>(), sums) };
    out
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
    /// The arms' θ codes, by blocks of eight arms
    /// ([`crate::bounds::codes_per_arm`] × 8 bytes per block).
    pub codes: &'a [i8],
    /// The arms' bounds, eight arms per block.
    pub blocks: &'a [BoundBlock],
    /// The query's side of the bounds.
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

/// Working memory of a pruned scan, kept between requests.
#[derive(Debug, Default, Clone)]
pub struct PruneWork {
    /// Every arm's score bound (rounded up to f32), by position.
    bounds: Vec<f32>,
    /// The k best arms by bound ([`key`]), the worst on top.
    best: std::collections::BinaryHeap<u64>,
    /// Arms to score, as [`key`]s.
    keys: Vec<u64>,
}

/// An arm's place in the best-first order: higher bound first (NaN, which
/// never prunes, before all), then lower position. Smaller keys come first.
#[inline(always)]
fn key(bound: f32, at: u32) -> u64 {
    let bits = bound.to_bits();
    // Ordered like the bounds: negatives flipped below the positives.
    let rank = if bound.is_nan() {
        u32::MAX
    } else if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    };
    u64::from(!rank) << 32 | u64::from(at)
}

/// The bound and position of a [`key`].
#[inline(always)]
fn unkey(key: u64) -> (f32, u32) {
    let rank = !((key >> 32) as u32);
    let bits = if rank >> 31 == 1 { rank & !(1 << 31) } else { !rank };
    (f32::from_bits(bits), key as u32)
}

/// Candidates a best-first scan asks the memory for ahead of scoring them,
/// on a large model: their rows arrive while the ones before are scored.
const AHEAD: usize = 12;

/// The pruned scan: every arm's bound first (a pass over the codes and
/// bounds only, keeping the k arms with the highest bounds), then those k
/// are scored, so the threshold starts near its final value, and then the
/// arms whose bound reaches it, highest bound first, until the next bound
/// is below the threshold (all after it are too). Only the arms whose bound
/// reaches the final threshold are ever read (on the 100,000-arm
/// catalogue, about 200 instead of the 660 a scan in row order reads).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn top_k_pruned_generic<D: Dot>(layout: &Layout, rows: &[f32], pruning: &Pruning<'_>, query: &[f32], alpha: f64, first: u32, best: &mut TopK<'_, '_>, work: &mut PruneWork) -> PruneStats {
    let arms = rows.len() / layout.stride.max(1);
    let mut stats = PruneStats { arms, ..PruneStats::default() };
    bound_all::<D>(pruning, codes_per_arm(layout.dim) * BLOCK, arms, best.k, work);
    let scan = Scan { layout, rows, pruning, query, alpha, first, ahead: if rows.len() >= PREFETCH_MIN_VALUES { AHEAD } else { 0 } };
    let PruneWork { bounds, best: heap, keys } = work;
    // The k highest bounds, scored first.
    keys.clear();
    keys.extend(heap.drain());
    keys.sort_unstable();
    let last_first = keys.last().copied();
    let mut threshold = best.threshold();
    scan.score_in_order::<D>(keys, best, &mut threshold, &mut stats);
    // Every other arm whose bound reaches the threshold, highest first.
    keys.clear();
    let below = round_down(threshold);
    let (blocks, _) = bounds.as_chunks::<BLOCK>();
    for (lanes, start) in blocks.iter().zip((0u32..).step_by(BLOCK)) {
        if lanes.iter().all(|&bound| bound < below) {
            continue;
        }
        for (&bound, at) in lanes.iter().zip(start..) {
            if (bound >= below || bound.is_nan()) && (at as usize) < arms {
                keys.push(key(bound, at));
            }
        }
    }
    keys.sort_unstable();
    // The first ones scored already (they are the smallest keys).
    let done = last_first.map_or(0, |last| keys.partition_point(|&key| key <= last));
    stats.by_codes += arms - keys.len();
    scan.score_in_order::<D>(keys.get(done..).unwrap_or_default(), best, &mut threshold, &mut stats);
    stats
}

/// Every arm's bound into `work.bounds`, and the k best by bound into
/// `work.best` (`per_block`: bytes of codes per block).
#[inline(always)]
fn bound_all<D: Dot>(pruning: &Pruning<'_>, per_block: usize, arms: usize, k: usize, work: &mut PruneWork) {
    let query = pruning.query;
    work.bounds.clear();
    work.bounds.resize(pruning.blocks.len() * BLOCK, f32::NAN);
    work.best.clear();
    // The bound of the worst of the k best so far: a block none of whose
    // bounds reaches it changes nothing (NaN lets every block through).
    let mut worst = f32::NEG_INFINITY;
    let (outs, _) = work.bounds.as_chunks_mut::<BLOCK>();
    let blocks = pruning.blocks.iter().zip(pruning.codes.chunks_exact(per_block.max(1))).zip(outs).zip((0u32..).step_by(BLOCK));
    for (((block, codes), out), start) in blocks {
        query.block_bounds(block, &D::code_dots(codes, query.pairs()), out);
        if out.iter().all(|&bound| bound < worst) {
            continue;
        }
        for (&bound, at) in out.iter().zip(start..).take(arms.saturating_sub(start as usize)) {
            let key = key(bound, at);
            if work.best.len() < k {
                work.best.push(key);
            } else if let Some(mut top) = work.best.peek_mut() {
                if key < *top {
                    *top = key;
                }
            }
            if work.best.len() >= k {
                worst = work.best.peek().map_or(f32::NEG_INFINITY, |&top| unkey(top).0);
            }
        }
    }
}

/// The largest f32 at most `value` (a threshold the f32 bounds can be
/// compared with: a bound below it is below `value`).
#[inline(always)]
fn round_down(value: f64) -> f32 {
    -crate::bounds::round_up(-value)
}

/// What scoring candidates in a given order needs.
struct Scan<'a> {
    layout: &'a Layout,
    rows: &'a [f32],
    pruning: &'a Pruning<'a>,
    query: &'a [f32],
    alpha: f64,
    first: u32,
    /// How many candidates ahead to prefetch (0: rows are in cache).
    ahead: usize,
}

impl Scan<'_> {
    fn row(&self, at: u32) -> Option<&[f32]> {
        let start = at as usize * self.layout.stride;
        self.rows.get(start..start + self.layout.stride)
    }

    /// Scores the arms of `keys` (sorted: highest bound first) until one's
    /// bound is below the threshold; the rest count as pruned.
    #[inline(always)]
    fn score_in_order<D: Dot>(&self, keys: &[u64], best: &mut TopK<'_, '_>, threshold: &mut f64, stats: &mut PruneStats) {
        for &key in keys.iter().take(self.ahead) {
            if let Some(row) = self.row(unkey(key).1) {
                prefetch(row);
            }
        }
        for (position, &key) in keys.iter().enumerate() {
            let (bound, at) = unkey(key);
            if f64::from(bound) < *threshold {
                stats.by_codes += keys.len() - position;
                return;
            }
            if self.ahead > 0 {
                if let Some(row) = keys.get(position + self.ahead).and_then(|&next| self.row(unkey(next).1)) {
                    prefetch(row);
                }
            }
            let (Some(row), Some(block)) = (self.row(at), self.pruning.blocks.get(at as usize / BLOCK)) else { continue };
            let spread = self.pruning.query.spread_of(block, at as usize % BLOCK);
            let candidate = Candidate { row, index: self.first.wrapping_add(at), spread, bound: f64::from(bound) };
            consider::<D>(self.layout, self.query, self.alpha, &candidate, best, threshold, stats);
        }
    }
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

#[derive(Clone, Copy)]
struct Candidate<'r> {
    row: &'r [f32],
    index: u32,
    spread: f64,
    bound: f64,
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
fn top_k_pruned_avx2(layout: &Layout, rows: &[f32], pruning: &Pruning<'_>, query: &[f32], alpha: f64, first: u32, best: &mut TopK<'_, '_>, work: &mut PruneWork) -> PruneStats {
    top_k_pruned_generic::<Avx2>(layout, rows, pruning, query, alpha, first, best, work)
}

/// Scores `rows` (numbered from `first`, with the bound blocks and codes of
/// the same arms) into `best`, skipping every arm whose score bound is
/// below the current threshold: the k-th best score so far. An arm of the
/// true top k is never skipped (its bound is at least its score, which is
/// at least the final k-th score, which is at least any threshold), and
/// every arm kept was scored exactly as [`score_all`] scores it, so `best`
/// ends with the full scan's best k, bit for bit. `work` is reused between
/// calls. `alpha` must be ≥ 0, and `pruning.query` set for it.
#[allow(clippy::too_many_arguments)]
pub fn top_k_pruned(layout: &Layout, rows: &[f32], pruning: &Pruning<'_>, query: &[f32], alpha: f64, first: u32, best: &mut TopK<'_, '_>, work: &mut PruneWork) -> PruneStats {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2, the only feature this copy assumes.
        return unsafe { top_k_pruned_avx2(layout, rows, pruning, query, alpha, first, best, work) };
    }
    top_k_pruned_generic::<Portable>(layout, rows, pruning, query, alpha, first, best, work)
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
    use crate::bounds::{place_codes, BoundWork};

    /// A deterministic stream in [0, 1).
    struct Stream(u64);

    impl Stream {
        fn unit(&mut self) -> f64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }

        /// 10^e, e from -30 to 20 in steps of 5 (1 half of the time).
        fn magnitude(&mut self) -> f64 {
            if self.unit() < 0.5 {
                return 1.0;
            }
            10f64.powi((self.unit() * 11.0) as i32 * 5 - 30)
        }
    }

    /// The bound of every arm, and the exact mean plus its spread bound,
    /// are at least the score the kernel computes (the reference: `score`,
    /// which knows nothing of bounds), for arms and contexts from tiny to
    /// overflowing magnitudes, odd and even d, untrained and non-finite
    /// rows, and several alphas; the AVX2 code dots equal the portable ones
    /// and the dots computed here from the codes.
    #[test]
    fn bounds_are_above_every_computed_score() {
        let mut g = Stream(11);
        let mut work = BoundWork::default();
        let mut query_bound = QueryBound::default();
        let mut query = Vec::new();
        let mut checked = 0;
        for dim in [1, 2, 3, 7, 16, 33] {
            let layout = Layout::new(dim);
            let plen = crate::packed::len(dim);
            for _ in 0..60 {
                let mut block = BoundBlock::NEVER;
                let mut codes = vec![0i8; codes_per_arm(dim) * BLOCK];
                let mut arm_codes = vec![vec![0i8; dim]; BLOCK];
                let mut rows = vec![0.0f32; layout.stride * BLOCK];
                let (theta_size, a_inv_size) = (g.magnitude(), g.magnitude());
                for (lane, row) in rows.chunks_exact_mut(layout.stride).enumerate() {
                    let kind = g.unit();
                    let theta: Vec<f64> = (0..dim).map(|_| if kind < 0.2 { 0.0 } else { (g.unit() - 0.3) * theta_size }).collect();
                    // A⁻¹ = BᵀB/d + diagonal: symmetric positive definite.
                    let b: Vec<f64> = (0..dim * dim).map(|_| g.unit() - 0.5).collect();
                    let mut a_inv: Vec<f64> = crate::packed::positions(dim)
                        .map(|(i, j)| {
                            let product: f64 = (0..dim).map(|r| b[r * dim + i] * b[r * dim + j]).sum::<f64>() / dim as f64;
                            (product + if i == j { 0.1 } else { 0.0 }) * a_inv_size
                        })
                        .collect();
                    if kind > 0.95 {
                        a_inv[plen / 2] = f64::MAX;
                    }
                    layout.write_row(&theta, &a_inv, row);
                    let (theta32, a_inv32) = row.split_at(layout.theta_len);
                    let bound = crate::bounds::compute(dim, theta32, a_inv32, &mut arm_codes[lane], &mut work);
                    block.set(lane, &bound);
                    place_codes(lane, &arm_codes[lane], &mut codes);
                }
                for _ in 0..8 {
                    let centred = g.unit() < 0.4;
                    let size = g.magnitude();
                    let x: Vec<f64> = (0..dim)
                        .map(|_| if g.unit() < 0.1 { 0.0 } else if centred { (2.0 * g.unit() - 1.0) * size } else { g.unit() * size })
                        .collect();
                    let alpha = [0.0, 0.3, 1.0, 7.5][(g.unit() * 4.0) as usize];
                    let mut weights = vec![0.0; plen];
                    crate::packed::quadratic_weights(&x, &mut weights);
                    layout.write_query(&x, &weights, &mut query);
                    query_bound.set(&x, alpha);
                    let dots = Portable::code_dots(&codes, query_bound.pairs());
                    #[cfg(target_arch = "x86_64")]
                    if has_avx2() {
                        // SAFETY: the CPU has AVX2.
                        assert_eq!(unsafe { code_dots_avx2(&codes, query_bound.pairs()) }, dots);
                    }
                    let p: Vec<i64> = query_bound.pairs().iter().flat_map(|&pair| [i64::from(pair as i16), i64::from((pair >> 16) as i16)]).collect();
                    let mut bounds = [0.0f32; BLOCK];
                    query_bound.block_bounds(&block, &dots, &mut bounds);
                    for (lane, row) in rows.chunks_exact(layout.stride).enumerate() {
                        let direct: i64 = arm_codes[lane].iter().zip(&p).map(|(&q, &p)| i64::from(q) * p).sum();
                        assert_eq!(i64::from(dots[lane]), direct, "dim {dim}");
                        let score = score(&layout, row, &query, alpha);
                        let bound = bounds[lane];
                        assert!(f64::from(bound) >= score || bound.is_nan(), "dim {dim} lane {lane}: bound {bound} < score {score} (x {x:?}, alpha {alpha})");
                        let mean = mean_of::<Portable>(&layout, row, &query);
                        let spread = query_bound.spread_of(&block, lane);
                        assert!(mean + spread >= score || (mean + spread).is_nan(), "dim {dim} lane {lane}: mean {mean} + spread {spread} < score {score}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 6 * 60 * 8 * BLOCK);
    }

    /// Both copies of the pruned scan (portable and AVX2) keep what sorting
    /// the full scan keeps, on a small and a prefetched (over 4 MB) model
    /// with equal arms (ties by position).
    #[test]
    fn both_pruned_scans_are_the_full_scan() {
        let mut g = Stream(5);
        let mut work = BoundWork::default();
        let order = |a: &Ranked, b: &Ranked| b.score.total_cmp(&a.score).then_with(|| a.index.cmp(&b.index));
        for (dim, arms) in [(5, 300), (16, PREFETCH_MIN_VALUES / Layout::new(16).stride + 50)] {
            let layout = Layout::new(dim);
            let plen = crate::packed::len(dim);
            let mut rows = vec![0.0f32; arms * layout.stride];
            let mut codes = vec![0i8; arms.div_ceil(BLOCK) * BLOCK * codes_per_arm(dim)];
            let mut blocks = vec![BoundBlock::NEVER; arms.div_ceil(BLOCK)];
            let mut arm_codes = vec![0i8; dim];
            for (arm, row) in rows.chunks_exact_mut(layout.stride).enumerate() {
                // Every third arm a copy of the one before: equal scores.
                let seed = if arm % 3 == 2 { arm - 1 } else { arm };
                let mut h = Stream(seed as u64);
                let theta: Vec<f64> = (0..dim).map(|_| h.unit() - 0.4).collect();
                let a_inv: Vec<f64> = crate::packed::positions(dim).map(|(i, j)| if i == j { 0.05 + 0.1 * h.unit() } else { 0.01 * (h.unit() - 0.5) }).collect();
                layout.write_row(&theta, &a_inv, row);
                let (theta32, a_inv32) = row.split_at(layout.theta_len);
                let bound = crate::bounds::compute(dim, theta32, a_inv32, &mut arm_codes, &mut work);
                blocks[arm / BLOCK].set(arm % BLOCK, &bound);
                let per_block = codes_per_arm(dim) * BLOCK;
                place_codes(arm % BLOCK, &arm_codes, &mut codes[arm / BLOCK * per_block..(arm / BLOCK + 1) * per_block]);
            }
            for _ in 0..4 {
                let x: Vec<f64> = (0..dim).map(|_| g.unit()).collect();
                let mut weights = vec![0.0; plen];
                crate::packed::quadratic_weights(&x, &mut weights);
                let mut query = Vec::new();
                layout.write_query(&x, &weights, &mut query);
                let mut query_bound = QueryBound::default();
                query_bound.set(&x, 0.8);
                let pruning = Pruning { codes: &codes, blocks: &blocks, query: &query_bound };
                let mut all = Vec::new();
                score_all(&layout, &rows, &query, 0.8, 1, &mut all);
                all.sort_by(order);
                for k in [1, 7, 40] {
                    let mut heap = Vec::new();
                    let mut best = TopK::new(k, &mut heap, &order);
                    let stats = top_k_pruned_generic::<Portable>(&layout, &rows, &pruning, &query, 0.8, 0, &mut best, &mut PruneWork::default());
                    assert!(stats.by_codes > 0, "dim {dim}: nothing pruned");
                    heap.sort_by(order);
                    assert_eq!(heap, all[..k], "portable, dim {dim}, k {k}");
                    #[cfg(target_arch = "x86_64")]
                    if has_avx2() {
                        let mut heap = Vec::new();
                        let mut best = TopK::new(k, &mut heap, &order);
                        // SAFETY: the CPU has AVX2.
                        unsafe { top_k_pruned_avx2(&layout, &rows, &pruning, &query, 0.8, 0, &mut best, &mut PruneWork::default()) };
                        heap.sort_by(order);
                        assert_eq!(heap, all[..k], "AVX2, dim {dim}, k {k}");
                    }
                }
            }
        }
    }

    /// A mean whose exact value is finite but whose f32 sum overflows:
    /// (2e38 + 2e38) − 2e38 is +∞ in the kernel, so its bound must be too.
    #[test]
    fn an_overflowing_sum_is_never_pruned() {
        let layout = Layout::new(3);
        let mut row = vec![0.0f32; layout.stride];
        layout.write_row(&[2e37, 2e37, -2e37], &[1e-3, 0.0, 0.0, 1e-3, 0.0, 1e-3], &mut row);
        let mut codes = vec![0i8; 3];
        let (theta, a_inv) = row.split_at(layout.theta_len);
        let bound = crate::bounds::compute(3, theta, a_inv, &mut codes, &mut BoundWork::default());
        let mut block = BoundBlock::NEVER;
        block.set(0, &bound);
        let mut block_codes = vec![0i8; codes_per_arm(3) * BLOCK];
        place_codes(0, &codes, &mut block_codes);
        let x = [10.0, 10.0, 10.0];
        let mut weights = vec![0.0; 6];
        crate::packed::quadratic_weights(&x, &mut weights);
        let mut query = Vec::new();
        layout.write_query(&x, &weights, &mut query);
        let mut query_bound = QueryBound::default();
        query_bound.set(&x, 1.0);
        let mut bounds = [0.0f32; BLOCK];
        query_bound.block_bounds(&block, &Portable::code_dots(&block_codes, query_bound.pairs()), &mut bounds);
        assert_eq!(score(&layout, &row, &query, 1.0), f64::INFINITY);
        assert_eq!(bounds[0], f32::INFINITY);
    }

    #[test]
    fn keys_order_by_bound_then_position() {
        let bounds = [f32::NAN, f32::INFINITY, 3.5, 3.5, 0.0, -0.0, -2.0, f32::NEG_INFINITY];
        let keys: Vec<u64> = bounds.iter().zip(0u32..).map(|(&bound, at)| key(bound, at)).collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "{keys:x?}");
        for (&k, (&bound, at)) in keys.iter().zip(bounds.iter().zip(0u32..)) {
            let (back, back_at) = unkey(k);
            assert_eq!(back_at, at);
            assert!(back.to_bits() == bound.to_bits() || (back.is_nan() && bound.is_nan()), "{back} vs {bound}");
        }
        assert_eq!(round_down(0.1), 0.099_999_994);
        assert_eq!(round_down(-0.1), -0.1f32);
        assert_eq!(round_down(f64::NEG_INFINITY), f32::NEG_INFINITY);
    }

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
