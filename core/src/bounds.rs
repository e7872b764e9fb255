//! Per-arm upper bounds on the score the kernel computes, so that an exact
//! top-k can skip the quadratic form of arms that cannot enter it (see
//! [`crate::kernel::top_k_pruned`]).
//!
//! The bounds are derived from an arm's f32 scoring row whenever the row is
//! written (apply, snapshot load); nothing here is persisted. They bound the
//! kernel's *computed* f32 values, rounding included, so a pruned arm's
//! computed score is provably below the threshold and the pruned top-k is
//! bit-identical to the full scan's.
//!
//! Mean, xᵀθ: θ is kept as i8 codes q with one scale s per arm (θ ≈ s·q);
//! the computed xᵀθ ≤ s·(qᵀx) + ‖x‖·slack, where slack covers the
//! quantisation error ‖θ − s·q‖ and the f32 rounding of both dot products.
//! The scan takes qᵀx in integers: x is scaled by a power of two 2ᵏ and
//! rounded to i16 values p (once per query), so qᵀp is exact in i32 and
//! qᵀx ≤ qᵀp/2ᵏ + ‖q‖·‖x − p/2ᵏ‖ ≤ qᵀp/2ᵏ + 127·√d·‖e‖ (`QueryBound::offset`
//! holds that last term plus the margin for the f32 steps after it; see
//! [`QueryBound::block_bounds`]). On AVX2 one `vpmaddwd` multiplies two
//! features of eight arms, so the codes of a block of eight arms are stored
//! pair by pair: for features 2i and 2i + 1, the two codes of arm 0, of arm
//! 1, …, of arm 7 (16 bytes; an odd d is padded with a zero feature).
//!
//! Variance, xᵀMx with M = A⁻¹: split x along the fixed unit direction
//! u = (1, …, 1)/√d, x = t·u + y with y ⊥ u. Then
//! xᵀMx = t²·uᵀMu + 2t·(PMu)ᵀy + yᵀ(PMP)y ≤ t²·along + 2|t|·‖y‖·cross + ‖y‖²·across
//! with P = I − uuᵀ, along = uᵀMu, cross = ‖PMu‖ and across ≥ λmax(PMP).
//! Contexts of non-negative features (the common case) point mostly along u,
//! where a trained A is large and M small; a bound from λmax(M)·‖x‖² alone
//! would be several times too loose there. For centred contexts t ≈ 0 and the
//! bound degrades to λmax·‖x‖². `across` is a power-iteration estimate proven
//! to be an upper bound by a Cholesky factorisation of across·I − PMP, or the
//! Gershgorin bound when that fails. A rounding term ρ·‖x‖² (ρ a multiple of
//! the Gershgorin bound of |M|) covers the f32 rounding of the weights and of
//! the kernel's sum; since ‖x‖² = t² + ‖y‖², it is stored added to `along`
//! and to `across` (the query's t² and ‖y‖² factors are rounded up so that
//! their sum is at least the ‖x‖² the term was derived for).
//!
//! The scan bounds eight arms at once ([`BoundBlock`]: their numbers field
//! by field), in f32 across the eight lanes, with the margins proven at
//! [`QueryBound::block_bounds`].

use crate::cholesky;
use crate::packed;

/// Largest i8 code of a quantised θ.
const CODE_MAX: f64 = 127.0;
/// f32 unit roundoff.
const UNIT: f64 = 1.0 / 16_777_216.0;
/// 1 + 8u in f32 (exact): the relative margin the f32 steps of a bound add.
const GROW: f32 = 1.0 + 1.0 / 2_097_152.0;
/// 8u in f32 (exact): the relative margin of a bound's final sum.
const MARGIN: f32 = 1.0 / 2_097_152.0;
/// An absolute margin (2⁻¹⁰⁰) above any sum of f32 underflow errors: the
/// relative error bounds do not hold for subnormal results, whose error is
/// up to 2⁻¹⁵⁰ per operation, in the kernel's sums as in a bound's.
const TINY: f64 = 7.888_609_052_210_118e-31;
/// 2¹²⁰: partial sums below it cannot overflow f32 (see
/// [`QueryBound::block_bounds`]).
const REACH_MAX: f32 = (1u128 << 120) as f32;
/// Largest |p| of the query's i16 values.
const P_MAX: f64 = 32_767.0;
/// Scale exponents beyond this are not used (2^±100 keeps every scaled
/// value a normal f32).
const EXPONENT_MAX: i32 = 100;

/// The bounds of one arm (upper bounds, rounded up to f32).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmBound {
    /// θ ≈ scale·q, q the arm's i8 codes.
    pub scale: f32,
    /// |computed xᵀθ − scale·(qᵀx)| ≤ ‖x‖·mean_slack.
    pub mean_slack: f32,
    /// uᵀMu plus the rounding term's ρ.
    pub along: f32,
    pub cross: f32,
    /// The bound on λmax(PMP) plus the rounding term's ρ.
    pub across: f32,
}

impl ArmBound {
    /// A bound that never prunes (non-finite rows).
    pub const NEVER: Self =
        Self { scale: 0.0, mean_slack: f32::INFINITY, along: f32::INFINITY, cross: f32::INFINITY, across: f32::INFINITY };
}

/// Arms per [`BoundBlock`].
pub const BLOCK: usize = 8;

/// θ codes one arm takes in a block: d rounded up to even (features pair up).
#[must_use]
pub const fn codes_per_arm(dim: usize) -> usize {
    dim.div_ceil(2) * 2
}

/// Stores the codes of the arm in `lane` (0..8) into its block's codes
/// (`codes_per_arm(dim)` × 8 bytes; see the module doc for the order).
pub fn place_codes(lane: usize, codes: &[i8], block: &mut [i8]) {
    for (feature, &code) in codes.iter().enumerate() {
        if let Some(slot) = block.get_mut(feature / 2 * 2 * BLOCK + lane * 2 + feature % 2) {
            *slot = code;
        }
    }
}

/// The bounds of eight consecutive arms, field by field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundBlock {
    pub scale: [f32; BLOCK],
    pub mean_slack: [f32; BLOCK],
    pub along: [f32; BLOCK],
    pub cross: [f32; BLOCK],
    pub across: [f32; BLOCK],
}

impl BoundBlock {
    /// Eight arms that never prune.
    pub const NEVER: Self = Self {
        scale: [0.0; BLOCK],
        mean_slack: [f32::INFINITY; BLOCK],
        along: [f32::INFINITY; BLOCK],
        cross: [f32::INFINITY; BLOCK],
        across: [f32::INFINITY; BLOCK],
    };

    /// Stores the bound of the arm in `lane` (0..8; others are ignored).
    pub fn set(&mut self, lane: usize, bound: &ArmBound) {
        let fields = [
            (&mut self.scale, bound.scale),
            (&mut self.mean_slack, bound.mean_slack),
            (&mut self.along, bound.along),
            (&mut self.cross, bound.cross),
            (&mut self.across, bound.across),
        ];
        for (field, value) in fields {
            if let Some(slot) = field.get_mut(lane) {
                *slot = value;
            }
        }
    }
}

impl Default for ArmBound {
    fn default() -> Self {
        Self::NEVER
    }
}

/// One query's side of the bounds: its i16 values in pairs and the f32
/// factors of the mean and variance bounds. Kept in the rank scratch and
/// refilled per request ([`QueryBound::set`]), so no allocation per request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryBound {
    /// Features 2i and 2i + 1 of p (i16 each, the first in the low half),
    /// as `vpmaddwd` takes them.
    pairs: Vec<i32>,
    /// 2⁻ᵏ.
    unscale: f32,
    /// 127·√d·‖x − p/2ᵏ‖ plus the margin of the mean's f32 steps.
    offset: f32,
    /// ‖x‖ (of the f32 context the kernel multiplies, and of the f64 one),
    /// rounded up with the margin of one f32 product.
    norm: f32,
    /// t², 2|t|·‖y‖ and ‖y‖², rounded up (see the module doc).
    along: f32,
    cross: f32,
    across: f32,
    /// α, rounded up.
    alpha: f32,
    /// 127·‖x‖₁ and 2²¹·‖x‖₁², rounded up: see [`QueryBound::block_bounds`]
    /// on overflow.
    theta_reach: f32,
    weight_reach: f32,
}

impl QueryBound {
    /// The factors for the context `x` (as the request gives it, f64) and
    /// `alpha` (≥ 0).
    pub fn set(&mut self, x: &[f64], alpha: f64) {
        let dim = x.len().max(1) as f64;
        let t = x.iter().sum::<f64>() / dim.sqrt();
        let norm2 = packed::dot(x, x);
        let rest2 = (norm2 - t * t).max(0.0);
        let norm32: f64 = x.iter().map(|&v| f64::from(v as f32).powi(2)).sum();
        let norm = norm32.sqrt().max(norm2.sqrt()) * (1.0 + 1e-12);
        self.norm = up(norm * (1.0 + 2.0 * UNIT) * (1.0 + 1e-12));
        self.along = up(t * t);
        self.cross = up(2.0 * t.abs() * rest2.sqrt());
        // t² + ‖y‖² ≥ the ‖x‖² of the rounding term despite the f64 rounding
        // of norm2 − t².
        self.across = up(rest2 + norm2 * 1e-12);
        self.alpha = up(alpha);
        let l1 = x.iter().map(|&v| v.abs().max(f64::from((v as f32).abs()))).sum::<f64>() * (1.0 + 1e-9);
        self.theta_reach = up(CODE_MAX * l1);
        self.weight_reach = up(2_097_152.0 * l1 * l1);
        self.quantise(x);
    }

    /// p = x (as f32) scaled by 2ᵏ and rounded, `offset` and `unscale`. The
    /// largest k keeps |p| ≤ 32767 and |qᵀp| < 2³¹ for any codes.
    fn quantise(&mut self, x: &[f64]) {
        let width = codes_per_arm(x.len());
        let largest = x.iter().map(|&v| f64::from((v as f32).abs())).fold(0.0, f64::max);
        let p_max = P_MAX.min((f64::from(i32::MAX) / (CODE_MAX * width.max(1) as f64)).floor());
        let exponent = if largest > 0.0 { (p_max / largest).log2().floor() } else { 0.0 };
        self.pairs.clear();
        if !(largest.is_finite() && p_max >= 1.0 && exponent >= -f64::from(EXPONENT_MAX)) {
            // Nothing bounds the mean: an infinite offset never prunes.
            self.pairs.resize(width / 2, 0);
            self.unscale = 1.0;
            self.offset = f32::INFINITY;
            return;
        }
        let exponent = exponent.min(f64::from(EXPONENT_MAX)) as i32;
        let scale = 2f64.powi(exponent);
        let mut error2 = 0.0;
        let mut p_sum = 0.0;
        let mut low = 0i32;
        for (feature, value) in x.iter().map(|&v| f64::from(v as f32)).chain(std::iter::once(0.0)).take(width).enumerate() {
            // |value|·2ᵏ ≤ p_max but for log2's rounding; clamped, the value
            // fits in i16 and the error below is the one the dots see.
            let p = (value * scale).round().clamp(-p_max, p_max);
            let error = value - p / scale;
            error2 += error * error;
            p_sum += p.abs();
            let bits = i32::from(p as i16) & 0xFFFF;
            if feature % 2 == 0 {
                low = bits;
            } else {
                self.pairs.push(low | (bits << 16));
            }
        }
        // 2⁻ᵏ exactly: the biased exponent 127 − k (27..=227, a normal f32).
        self.unscale = f32::from_bits(((127 - exponent) as u32) << 23);
        // E0 = 127·√d·‖e‖ (‖q‖ ≤ 127·√d); B = 127·Σ|p|/2ᵏ ≥ |qᵀp|/2ᵏ.
        let e0 = CODE_MAX * (width as f64).sqrt() * error2.sqrt() * (1.0 + 1e-9);
        let b = CODE_MAX * p_sum / scale * (1.0 + 1e-12);
        self.offset = up(e0 + 4.0 * UNIT * (b + e0));
    }

    /// The i16 pairs of the scaled context, one i32 per two features.
    #[must_use]
    pub fn pairs(&self) -> &[i32] {
        &self.pairs
    }

    /// Upper bounds on the kernel's computed scores of the eight arms of
    /// `block`, given `dots` = qᵀp of each arm (exact, in i32). All in f32,
    /// lane by lane, so that it vectorises across the arms. A NaN bound
    /// (from ∞·0 or ∞ − ∞) never prunes: callers prune only when
    /// `bound < threshold`; any ∞ or NaN part makes the bound ∞ or NaN.
    ///
    /// Why the bound b is ≥ the computed score. The kernel computes
    /// score = fl64(m + s) with s = fl64(α·fl64(√v)) from its f32 mean m and
    /// variance v. u = 2⁻²⁴ below; fl is f32 rounding unless marked.
    ///
    /// The mean: D = qᵀp exact, Y = fl(D)·2⁻ᵏ (a power of two: exact), so
    /// |Y − D/2ᵏ| ≤ u·|D|/2ᵏ ≤ u·B, B = 127·Σ|p|/2ᵏ. `offset` E ≥ E0 + 4u(B + E0),
    /// E0 = 127·√d·‖e‖, and Z = fl(Y + E) ≥ Y + E − u|Y + E| ≥
    /// D/2ᵏ + E0 + 1.9u(B + E0); P = fl(s·Z) ≥ s(D/2ᵏ + E0) + 0.9u·s(B + E0),
    /// N = fl(norm·slack) ≥ ‖x‖·slack·(1 + 0.9u), since `norm` carries a
    /// factor 1 + 2u. So P + N ≥ s·(qᵀx) + ‖x‖·slack ≥ m, but for underflow
    /// (at most 2⁻¹⁵⁰ per f32 operation, in P and N and in the kernel's m).
    ///
    /// The spread: V = along·t² + cross·2|t|‖y‖ + across·‖y‖² (f32 fields and
    /// factors, each rounded up from its f64 value, all ≥ 0) is ≥ v + the
    /// kernel's rounding (see the module doc). Its evaluation (three
    /// products, two sums) loses at most a factor (1 − u)³; times GROW =
    /// 1 + 8u and plus TINY, then √, ·α and ·GROW again (each rounded),
    /// S = α·√V·(1 + 6u) or more, above s, whose own f64 rounding is 2⁻⁵²
    /// relative (TINY covers the underflow of v's sum).
    ///
    /// The sum: with X = |P| + N + S, fl(fl(P + N) + S) ≥ P + N + S − 2.1u·X,
    /// and the margin W = fl(fl(X)·8u) + TINY ≥ 7.9u·X + TINY (fl(X) itself
    /// within 2u); adding it (rounded, |sum| ≤ X·(1 + 11u)) leaves
    /// b ≥ P + N + S + 4.8u·X + TINY/2. The score is at most
    /// m + s + 2⁻⁵²·X (|m| is within X too), and m + s ≤ P + N + S plus
    /// the underflow errors, far below TINY/2 (d < 2⁴⁰): b ≥ score.
    ///
    /// Overflow: the error bounds above assume no f32 result overflows, in
    /// the kernel (whose sums could reach +∞ where the exact mean is
    /// finite) as here. The kernel's partial sums of xᵀθ are at most
    /// Σ|θⱼxⱼ| ≤ 127·s·‖x‖₁·(1 + u)ⁿ and those of the quadratic form at most
    /// G·‖x‖₁²·(1 + u)ⁿ (G ≥ every |Mᵢⱼ|, the weights sum to ‖x‖₁² at most),
    /// and along ≥ ρ ≥ 8u·G, so G ≤ 2²¹·along. An arm with s·127‖x‖₁ or
    /// along·2²¹‖x‖₁² not below 2¹²⁰ gets the bound +∞ (so does a NaN field).
    #[inline(always)]
    // lane < BLOCK indexes arrays of BLOCK values: always in bounds, and
    // plain indices let the compiler turn the loop into vector operations.
    #[allow(clippy::indexing_slicing)]
    pub fn block_bounds(&self, block: &BoundBlock, dots: &[i32; BLOCK], out: &mut [f32; BLOCK]) {
        for lane in 0..BLOCK {
            let s = self.spread(block.along[lane], block.cross[lane], block.across[lane]);
            let p = block.scale[lane] * ((dots[lane] as f32) * self.unscale + self.offset);
            let n = self.norm * block.mean_slack[lane];
            // X = |P| + N + S.
            let margin = ((p.abs() + n) + s) * MARGIN + TINY as f32;
            let bound = ((p + n) + s) + margin;
            // `max` ignores a NaN product (0·∞): x = 0 (the kernel's sums are
            // then 0 or NaN, no overflow), or a zero scale or `along`
            // (θ = 0, or M = 0 as G ≤ 2²¹·along: a sum of zeros).
            let reach = (block.scale[lane] * self.theta_reach).max(block.along[lane] * self.weight_reach);
            out[lane] = if reach < REACH_MAX { bound } else { f32::INFINITY };
        }
    }

    /// The spread bound s̄ (see [`QueryBound::block_bounds`]) of one arm.
    #[inline(always)]
    fn spread(&self, along: f32, cross: f32, across: f32) -> f32 {
        let v = (along * self.along + cross * self.cross) + across * self.across;
        let v = v * GROW + TINY as f32;
        (v.sqrt() * self.alpha) * GROW
    }

    /// The spread bound of the arm in `lane` of `block`: with the exact
    /// mean m, fl64(m + spread) bounds the computed score.
    #[must_use]
    #[inline(always)]
    pub fn spread_of(&self, block: &BoundBlock, lane: usize) -> f64 {
        match (block.along.get(lane), block.cross.get(lane), block.across.get(lane)) {
            (Some(&along), Some(&cross), Some(&across)) => f64::from(self.spread(along, cross, across)),
            _ => f64::INFINITY,
        }
    }
}

/// `value` as f32, rounded up (NaN stays NaN).
#[must_use]
pub fn round_up(value: f64) -> f32 {
    // `as` rounds to nearest; one step up (away from −∞) when that fell below.
    let near = value as f32;
    let step = if near < 0.0 { u32::MAX } else { 1 };
    let above = f32::from_bits(near.to_bits().wrapping_add(step));
    if f64::from(near) < value {
        above
    } else {
        near
    }
}

/// Relative error bound of an f32 sum of `n` products (any order), with room.
fn gamma(n: usize) -> f64 {
    (2 * n + 8) as f64 * UNIT
}

/// `value` as f32, rounded up; NaN becomes +∞ (never prunes).
fn up(value: f64) -> f32 {
    if value.is_nan() {
        return f32::INFINITY;
    }
    round_up(value)
}

/// Reusable buffers for [`compute`].
#[derive(Debug, Default, Clone)]
pub struct BoundWork {
    full: Vec<f64>,
    mu: Vec<f64>,
    v: Vec<f64>,
    w: Vec<f64>,
    shifted: Vec<f64>,
    lower: Vec<f64>,
}

/// The bound of an arm from its f32 θ (`theta_len` values, padded) and f32
/// packed A⁻¹ (`a_inv_len` values, padded) as the kernel reads them; writes
/// the arm's i8 codes into `codes` (`dim` values).
pub fn compute(dim: usize, theta: &[f32], a_inv: &[f32], codes: &mut [i8], work: &mut BoundWork) -> ArmBound {
    codes.fill(0);
    let plen = packed::len(dim);
    let (Some(theta), Some(a_inv)) = (theta.get(..dim), a_inv.get(..plen)) else { return ArmBound::NEVER };
    if !theta.iter().chain(a_inv).all(|v| v.is_finite()) {
        return ArmBound::NEVER;
    }
    let (scale, mean_slack) = quantise(theta, codes);
    let u = 1.0 / (dim as f64).sqrt();
    let BoundWork { full, mu, v, w, shifted, lower } = work;
    // Full symmetric M in f64 (exact copies of the f32 values).
    full.clear();
    full.resize(dim * dim, 0.0);
    for ((i, j), &value) in packed::positions(dim).zip(a_inv) {
        if let Some(slot) = full.get_mut(i * dim + j) {
            *slot = f64::from(value);
        }
        if let Some(slot) = full.get_mut(j * dim + i) {
            *slot = f64::from(value);
        }
    }
    let gershgorin = full.chunks_exact(dim).map(|row| row.iter().map(|v| v.abs()).sum::<f64>()).fold(0.0, f64::max);
    mu.clear();
    mu.extend(full.chunks_exact(dim).map(|row| row.iter().sum::<f64>() * u));
    let along = mu.iter().sum::<f64>() * u;
    // PMu = Mu − (uᵀMu)·u
    for value in mu.iter_mut() {
        *value -= along * u;
    }
    let cross = packed::dot(mu, mu).sqrt();
    // PMP = M − u(PMu)ᵀ − (PMu)uᵀ − along·uuᵀ, in place.
    for (i, row) in full.chunks_exact_mut(dim).enumerate() {
        let mi = mu.get(i).copied().unwrap_or(0.0);
        for (value, &mj) in row.iter_mut().zip(mu.iter()) {
            *value -= u * mj + mi * u + along * u * u;
        }
    }
    let across = across_bound(dim, full, gershgorin, v, w, shifted, lower);
    let rounding = gamma(packed::len(dim).div_ceil(8) * 8) * gershgorin + 4.0 * UNIT * gershgorin;
    ArmBound { scale, mean_slack, along: up(along + rounding), cross: up(cross), across: up(across + rounding) }
}

/// i8 codes of θ and the slack of the mean bound.
fn quantise(theta: &[f32], codes: &mut [i8]) -> (f32, f32) {
    let max_abs = theta.iter().map(|v| f64::from(v.abs())).fold(0.0, f64::max);
    let scale = (max_abs / CODE_MAX) as f32;
    let mut error2 = 0.0;
    let mut theta2 = 0.0;
    let mut codes2 = 0.0;
    for (code, &value) in codes.iter_mut().zip(theta) {
        let value = f64::from(value);
        let q = if scale > 0.0 { (value / f64::from(scale)).round().clamp(-CODE_MAX, CODE_MAX) } else { 0.0 };
        *code = q as i8;
        let error = value - f64::from(scale) * q;
        error2 += error * error;
        theta2 += value * value;
        codes2 += q * q;
    }
    let eps = gamma(theta.len().div_ceil(8) * 8);
    let slack = error2.sqrt() + eps * (theta2.sqrt() + f64::from(scale) * codes2.sqrt());
    (scale, up(slack * (1.0 + 1e-9)))
}

/// An upper bound on λmax of the symmetric `matrix` (full, row-major, PSD
/// up to rounding): a power-iteration estimate checked by Cholesky, else
/// `fallback` (a Gershgorin bound of a matrix that dominates it).
fn across_bound(
    dim: usize,
    matrix: &[f64],
    fallback: f64,
    v: &mut Vec<f64>,
    w: &mut Vec<f64>,
    shifted: &mut Vec<f64>,
    lower: &mut Vec<f64>,
) -> f64 {
    v.clear();
    v.extend((0..dim).map(|j| ((j * 7919) % 23) as f64 - 11.5));
    w.clear();
    w.resize(dim, 0.0);
    let mut estimate: f64 = 0.0;
    for _ in 0..12 {
        let norm = packed::dot(v, v).sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            break;
        }
        v.iter_mut().for_each(|value| *value /= norm);
        for (slot, row) in w.iter_mut().zip(matrix.chunks_exact(dim)) {
            *slot = packed::dot(row, v);
        }
        estimate = estimate.max(packed::dot(v, w));
        std::mem::swap(v, w);
    }
    let tiny = 1e-12 * fallback + f64::MIN_POSITIVE;
    for factor in [1.05, 1.3, 2.0] {
        let candidate = estimate * factor + tiny;
        if candidate >= fallback {
            break;
        }
        // candidate·(1 − 1e-9)·I − matrix positive definite ⇒ λmax < candidate,
        // with a margin far above the factorisation's rounding.
        let shift = candidate * (1.0 - 1e-9);
        shifted.clear();
        shifted.extend(packed::positions(dim).map(|(i, j)| {
            let value = matrix.get(i * dim + j).copied().unwrap_or(0.0);
            if i == j { shift - value } else { -value }
        }));
        if cholesky::factor_packed(dim, shifted, lower).is_ok() {
            return candidate;
        }
    }
    fallback
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn across_is_an_upper_bound_and_tight_on_a_diagonal() {
        // diag(1, 3, 2): λmax = 3.
        let m = [1.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 2.0];
        let bound = across_bound(3, &m, 6.0, &mut vec![], &mut vec![], &mut vec![], &mut vec![]);
        assert!((3.0..3.0 * 1.06).contains(&bound), "{bound}");
    }

    #[test]
    fn quantised_theta_bounds_the_mean() {
        let theta = [0.3f32, -1.7, 0.01, 2.5, 0.0, 0.0, 0.0, 0.0];
        let mut codes = [0i8; 8];
        let (scale, slack) = quantise(&theta[..4], &mut codes[..4]);
        assert_eq!(codes[3], 127);
        let x = [0.9f32, -0.2, 5.0, 1.0];
        let exact: f64 = theta.iter().zip(&x).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
        let coded: f64 = codes.iter().zip(&x).map(|(q, b)| f64::from(*q) * f64::from(*b)).sum::<f64>() * f64::from(scale);
        let norm = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        assert!((exact - coded).abs() <= norm * f64::from(slack));
        assert!(f64::from(slack) < 0.05, "{slack}");
    }
}
