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
//! Mean, xᵀθ: θ is kept as i8 codes with one scale per arm (θ ≈ s·q);
//! xᵀθ ≤ s·(qᵀx) + ‖x‖·slack, where slack covers the quantisation error
//! ‖θ − s·q‖ and the f32 rounding of both dot products.
//!
//! The scan bounds eight arms at once: their numbers sit in a
//! [`BoundBlock`], field by field, and their codes interleaved (feature j of
//! the eight arms side by side), so the whole bound vectorises across arms.
//! Only arms whose bound reaches the threshold are read further: first the
//! exact mean from the row (a tighter bound), then the quadratic form.
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
//! Gershgorin bound when that fails. A `rounding` term (a multiple of the
//! Gershgorin bound of |M|) covers the f32 rounding of the weights and of the
//! kernel's sum.

use crate::cholesky;
use crate::packed;

/// Largest i8 code of a quantised θ.
const CODE_MAX: f64 = 127.0;
/// f32 unit roundoff.
const UNIT: f64 = 1.0 / 16_777_216.0;

/// The bounds of one arm (upper bounds, rounded up to f32).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmBound {
    /// θ ≈ scale·q, q the arm's i8 codes.
    pub scale: f32,
    /// |computed xᵀθ − scale·(qᵀx)| ≤ ‖x‖·mean_slack.
    pub mean_slack: f32,
    pub along: f32,
    pub cross: f32,
    pub across: f32,
    pub rounding: f32,
}

impl ArmBound {
    /// A bound that never prunes (non-finite rows).
    pub const NEVER: Self = Self {
        scale: 0.0,
        mean_slack: f32::INFINITY,
        along: f32::INFINITY,
        cross: f32::INFINITY,
        across: f32::INFINITY,
        rounding: f32::INFINITY,
    };
}

/// Arms per [`BoundBlock`].
pub const BLOCK: usize = 8;

/// The bounds of eight consecutive arms, field by field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundBlock {
    pub scale: [f32; BLOCK],
    pub mean_slack: [f32; BLOCK],
    pub along: [f32; BLOCK],
    pub cross: [f32; BLOCK],
    pub across: [f32; BLOCK],
    pub rounding: [f32; BLOCK],
}

impl BoundBlock {
    /// Eight arms that never prune.
    pub const NEVER: Self = Self {
        scale: [0.0; BLOCK],
        mean_slack: [f32::INFINITY; BLOCK],
        along: [f32::INFINITY; BLOCK],
        cross: [f32::INFINITY; BLOCK],
        across: [f32::INFINITY; BLOCK],
        rounding: [f32::INFINITY; BLOCK],
    };

    /// Stores the bound of the arm in `lane` (0..8; others are ignored).
    pub fn set(&mut self, lane: usize, bound: &ArmBound) {
        let fields = [
            (&mut self.scale, bound.scale),
            (&mut self.mean_slack, bound.mean_slack),
            (&mut self.along, bound.along),
            (&mut self.cross, bound.cross),
            (&mut self.across, bound.across),
            (&mut self.rounding, bound.rounding),
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

/// Per-query factors of the variance bound and ‖x‖ for the mean bound.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueryBound {
    /// ‖x‖ of the f32 context the kernel multiplies, rounded up.
    pub norm: f64,
    along: f64,
    cross: f64,
    across: f64,
    rounding: f64,
}

impl QueryBound {
    /// The factors for the context `x` (as the request gives it, f64).
    #[must_use]
    pub fn new(x: &[f64]) -> Self {
        let dim = x.len().max(1) as f64;
        let t = x.iter().sum::<f64>() / dim.sqrt();
        let norm2 = packed::dot(x, x);
        // Cancellation here is covered by the rounding term (see the module doc).
        let rest2 = (norm2 - t * t).max(0.0);
        let norm32: f64 = x.iter().map(|&v| f64::from(v as f32).powi(2)).sum();
        Self {
            norm: norm32.sqrt().max(norm2.sqrt()) * (1.0 + 1e-12),
            along: t * t,
            cross: 2.0 * t.abs() * rest2.sqrt(),
            across: rest2,
            rounding: norm2,
        }
    }

    /// Upper bounds on the kernel's computed scores of the eight arms of
    /// `block`, whose codes are `codes` (interleaved, `dim` × 8) and whose
    /// f32 context is `x` (`dim` values): `spread` = α·√(variance bound) and
    /// `score` = mean bound + spread. Written so that it vectorises across
    /// the arms.
    #[inline(always)]
    pub fn block_bounds(&self, block: &BoundBlock, codes: &[i8], x: &[f32], alpha: f64, spread: &mut [f64; BLOCK], score: &mut [f64; BLOCK]) {
        // Four accumulators per arm, so the adds of consecutive features do
        // not wait on each other; the slack covers any summation order.
        let [mut s0, mut s1, mut s2, mut s3] = [[0.0f32; BLOCK]; 4];
        let (features, _) = codes.as_chunks::<BLOCK>();
        let mut groups = features.chunks_exact(4).zip(x.chunks_exact(4));
        for (group, values) in &mut groups {
            if let ([f0, f1, f2, f3], [v0, v1, v2, v3]) = (group, values) {
                add_codes(&mut s0, f0, *v0);
                add_codes(&mut s1, f1, *v1);
                add_codes(&mut s2, f2, *v2);
                add_codes(&mut s3, f3, *v3);
            }
        }
        let done = features.len() / 4 * 4;
        for (feature, &value) in features.iter().zip(x).skip(done) {
            add_codes(&mut s0, feature, value);
        }
        let mut dots = [0.0f32; BLOCK];
        for ((((dot, a), b), c), d) in dots.iter_mut().zip(s0).zip(s1).zip(s2).zip(s3) {
            *dot = (a + b) + (c + d);
        }
        // Field by field over the eight lanes, so each line vectorises.
        let mut variance = [0.0f64; BLOCK];
        let fields = block.along.iter().zip(&block.cross).zip(&block.across).zip(&block.rounding);
        for (v, (((&along, &cross), &across), &rounding)) in variance.iter_mut().zip(fields) {
            *v = self.along * f64::from(along)
                + self.cross * f64::from(cross)
                + self.across * f64::from(across)
                + self.rounding * f64::from(rounding);
        }
        for (s, v) in spread.iter_mut().zip(variance) {
            *s = alpha * v.sqrt();
        }
        let means = block.scale.iter().zip(&dots).zip(&block.mean_slack);
        for ((out, &s), ((&scale, &dot), &slack)) in score.iter_mut().zip(spread.iter()).zip(means) {
            *out = (f64::from(scale) * f64::from(dot) + self.norm * f64::from(slack)) + s;
        }
    }

    /// An upper bound on the kernel's computed variance of one arm.
    #[must_use]
    pub fn variance_bound(&self, bound: &ArmBound) -> f64 {
        self.along * f64::from(bound.along)
            + self.cross * f64::from(bound.cross)
            + self.across * f64::from(bound.across)
            + self.rounding * f64::from(bound.rounding)
    }

}

/// Adds one feature's codes of eight arms, times the feature's value.
#[inline(always)]
fn add_codes(sums: &mut [f32; BLOCK], codes: &[i8; BLOCK], value: f32) {
    for (sum, &code) in sums.iter_mut().zip(codes) {
        *sum += f32::from(code) * value;
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
    let narrowed = value as f32;
    if f64::from(narrowed) < value {
        narrowed.next_up()
    } else {
        narrowed
    }
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
    ArmBound {
        scale,
        mean_slack,
        along: up(along),
        cross: up(cross),
        across: up(across),
        rounding: up(gamma(packed::len(dim).div_ceil(8) * 8) * gershgorin + 4.0 * UNIT * gershgorin),
    }
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
