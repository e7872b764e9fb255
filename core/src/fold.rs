//! The trainer's per-arm state: A = λI + Σ xxᵀ and b = Σ r·x, updated per
//! event in O(d²), and turned into a publishable [`ArmPayload`] by inverting A
//! only when the arm is published. [`Learning`] is how every trainer (the
//! sink, the simulator, the evaluator) folds an event, forgetting included.

use crate::cholesky::{self, Workspace};
use crate::error::{Error, Result};
use crate::packed;
use crate::payload::ArmPayload;

/// How events are folded: the ridge prior λ and the forgetting γ per event.
///
/// With forgetting (γ < 1), before each event the arm's evidence is scaled
/// by γ and pulled toward the prior: A ← γA + (1−γ)λI + xxᵀ, b ← γb + r·x.
/// Old events then weigh γᵏ after k newer ones (a half-life of ln 2 / −ln γ
/// events of that arm), so a model follows changing tastes. The pull toward
/// λI keeps A well conditioned however rarely a direction is seen: if
/// A ⪰ λI then γA + (1−γ)λI ⪰ λI, so λmin(A) ≥ λ always, and
/// λmax(A) ≤ λ + max‖x‖²/(1−γ); the condition number stays below
/// 1 + max‖x‖²/(λ(1−γ)) and Cholesky never fails. Plain exponential
/// forgetting (A ← γA + xxᵀ) lets unvisited directions shrink to 0.
/// γ = 1 folds exactly as without forgetting, to the bit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Learning {
    pub lambda: f64,
    pub decay: f64,
}

impl Learning {
    /// No forgetting.
    #[must_use]
    pub fn ridge(lambda: f64) -> Self {
        Self { lambda, decay: 1.0 }
    }

    /// An arm with no data.
    #[must_use]
    pub fn prior(&self, dim: usize) -> ArmAccumulator {
        ArmAccumulator::new(dim, self.lambda)
    }

    /// Folds one event into `arm`, forgetting first when γ < 1. The caller
    /// has checked that `x` has the arm's dimension.
    pub fn fold(&self, arm: &mut ArmAccumulator, x: &[f64], reward: f64) {
        if self.decay < 1.0 {
            arm.forget(self.decay, self.lambda);
        }
        arm.update(x, reward);
    }
}

/// Sufficient statistics of one arm.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmAccumulator {
    /// A, packed upper triangle.
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    pub n: u64,
    pub reward_sum: f64,
}

impl ArmAccumulator {
    /// The prior: A = λI, b = 0.
    #[must_use]
    pub fn new(dim: usize, lambda: f64) -> Self {
        Self { a: packed::scaled_identity(dim, lambda), b: vec![0.0; dim], n: 0, reward_sum: 0.0 }
    }

    /// Restores from a published arm, which must carry A.
    ///
    /// # Errors
    /// [`Error::InvalidPayload`] when the arm has no Gram matrix.
    pub fn from_payload(arm: &ArmPayload) -> Result<Self> {
        let a = arm.a.clone().ok_or_else(|| {
            Error::InvalidPayload(format!("arm '{}' has no Gram matrix A to restore from", arm.id))
        })?;
        Ok(Self { a, b: arm.b.clone(), n: arm.n, reward_sum: arm.reward_sum })
    }

    #[must_use]
    pub fn dim(&self) -> usize {
        self.b.len()
    }

    /// Folds one event: A += xxᵀ (upper triangle), b += r·x.
    /// The caller has checked that `x` has the arm's dimension.
    pub fn update(&mut self, x: &[f64], reward: f64) {
        let mut slots = self.a.iter_mut();
        for (i, &xi) in x.iter().enumerate() {
            for &xj in x.iter().skip(i) {
                if let Some(slot) = slots.next() {
                    *slot += xi * xj;
                }
            }
        }
        for (slot, &xi) in self.b.iter_mut().zip(x) {
            *slot += reward * xi;
        }
        self.n += 1;
        self.reward_sum += reward;
    }

    /// A ← γA + (1−γ)λI, b ← γb (see [`Learning`]).
    fn forget(&mut self, decay: f64, lambda: f64) {
        let dim = self.dim();
        let pull = (1.0 - decay) * lambda;
        let mut slot = 0;
        for i in 0..dim {
            for j in i..dim {
                if let Some(value) = self.a.get_mut(slot) {
                    *value = decay * *value + if i == j { pull } else { 0.0 };
                }
                slot += 1;
            }
        }
        self.b.iter_mut().for_each(|value| *value *= decay);
    }

    /// A⁻¹ (packed) into `a_inv`, which holds `packed::len(dim)` values.
    ///
    /// # Errors
    /// As [`ArmAccumulator::to_payload`].
    pub fn invert(&self, a_inv: &mut [f64], work: &mut Workspace) -> Result<()> {
        cholesky::invert_packed(self.dim(), &self.a, a_inv, work)
    }

    /// Inverts A and packages the arm for publication.
    ///
    /// # Errors
    /// [`Error::NotPositiveDefinite`] if A has lost definiteness (it cannot
    /// with λ > 0 and finite inputs).
    pub fn to_payload(&self, id: &str, work: &mut Workspace, updated_ms: Option<i64>) -> Result<ArmPayload> {
        let mut a_inv = vec![0.0; packed::len(self.dim())];
        self.invert(&mut a_inv, work)?;
        Ok(ArmPayload {
            id: id.to_owned(),
            a_inv,
            b: self.b.clone(),
            a: Some(self.a.clone()),
            n: self.n,
            reward_sum: self.reward_sum,
            updated_ms,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::needless_range_loop)]
mod tests {
    use super::*;

    #[test]
    fn one_event_by_hand() {
        // λ = 1, x = [1, 2], r = 1: A = [[2, 2], [2, 5]], b = [1, 2];
        // A⁻¹ = [[5, -2], [-2, 2]] / 6, θ = A⁻¹b = [1/6, 2/6].
        let mut arm = ArmAccumulator::new(2, 1.0);
        arm.update(&[1.0, 2.0], 1.0);
        assert_eq!(arm.a, vec![2.0, 2.0, 5.0]);
        let published = arm.to_payload("p", &mut Workspace::default(), None).unwrap();
        let expected = [5.0 / 6.0, -2.0 / 6.0, 2.0 / 6.0];
        for (got, want) in published.a_inv.iter().zip(expected) {
            assert!((got - want).abs() < 1e-15);
        }
        let restored = ArmAccumulator::from_payload(&published).unwrap();
        assert_eq!(restored, arm);
    }

    #[test]
    fn forgetting_by_hand() {
        // λ = 2, γ = 0.5. First event x = [1, 0], r = 1 on the prior:
        // A = 0.5·2I + 0.5·2I + xxᵀ = [[3, 0], [0, 2]], b = [1, 0].
        // Second x = [0, 1], r = 2: A = 0.5A + I + xxᵀ = [[2.5, 0], [0, 3]],
        // b = 0.5·[1, 0] + [0, 2] = [0.5, 2].
        let learning = Learning { lambda: 2.0, decay: 0.5 };
        let mut arm = learning.prior(2);
        learning.fold(&mut arm, &[1.0, 0.0], 1.0);
        assert_eq!((arm.a.clone(), arm.b.clone()), (vec![3.0, 0.0, 2.0], vec![1.0, 0.0]));
        learning.fold(&mut arm, &[0.0, 1.0], 2.0);
        assert_eq!((arm.a.clone(), arm.b.clone()), (vec![2.5, 0.0, 3.0], vec![0.5, 2.0]));
        assert_eq!((arm.n, arm.reward_sum), (2, 3.0));
        // γ = 1 is the plain fold, to the bit.
        let (mut plain, mut same) = (ArmAccumulator::new(2, 2.0), Learning::ridge(2.0).prior(2));
        for k in 0..50 {
            let x = [f64::from(k) * 0.1, 1.0 / f64::from(k + 1)];
            plain.update(&x, 0.3);
            Learning::ridge(2.0).fold(&mut same, &x, 0.3);
        }
        assert_eq!(plain, same);
    }

    /// A million events on one arm, most of them along one direction: with
    /// forgetting the other direction is pulled to the prior instead of
    /// collapsing, every inversion succeeds and the condition number stays
    /// under the bound 1 + max‖x‖²/(λ(1−γ)).
    #[test]
    fn forgetting_stays_bounded_over_a_million_events() {
        let (dim, lambda, decay) = (3, 0.5, 0.999);
        let learning = Learning { lambda, decay };
        let mut arm = learning.prior(dim);
        let mut work = Workspace::default();
        let mut worst = 0.0f64;
        let mut max_norm2 = 0.0f64;
        for k in 0..1_000_000u32 {
            let x = if k % 1000 == 0 { [0.0, 0.0, 1.0] } else { [1.0, 0.5 + f64::from(k % 7) / 14.0, 0.0] };
            max_norm2 = max_norm2.max(x.iter().map(|v| v * v).sum());
            learning.fold(&mut arm, &x, f64::from(k % 2));
            if k % 50_000 == 0 || k == 999_999 {
                arm.to_payload("a", &mut work, None).unwrap();
                worst = worst.max(condition_number(dim, &arm.a));
            }
        }
        let bound = 1.0 + max_norm2 / (lambda * (1.0 - decay));
        assert!(worst <= bound, "condition number {worst} over the bound {bound}");
        assert!(worst > 10.0, "the test should stress conditioning: {worst}");
        println!("forgetting γ = {decay}, λ = {lambda}, 10⁶ events: worst condition number {worst:.1} (bound {bound:.1})");
    }

    /// λmax/λmin of a small SPD matrix by Jacobi rotations (independent of
    /// the Cholesky under test).
    fn condition_number(dim: usize, packed: &[f64]) -> f64 {
        let mut m = vec![vec![0.0; dim]; dim];
        for i in 0..dim {
            for j in i..dim {
                m[i][j] = packed[crate::packed::index(dim, i, j)];
                m[j][i] = m[i][j];
            }
        }
        for _ in 0..100 {
            for p in 0..dim {
                for q in p + 1..dim {
                    if m[p][q].abs() < 1e-300 {
                        continue;
                    }
                    let theta = (m[q][q] - m[p][p]) / (2.0 * m[p][q]);
                    let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                    let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                    for k in 0..dim {
                        let (kp, kq) = (m[k][p], m[k][q]);
                        m[k][p] = c * kp - s * kq;
                        m[k][q] = s * kp + c * kq;
                    }
                    for k in 0..dim {
                        let (pk, qk) = (m[p][k], m[q][k]);
                        m[p][k] = c * pk - s * qk;
                        m[q][k] = s * pk + c * qk;
                    }
                }
            }
        }
        let eig: Vec<f64> = (0..dim).map(|i| m[i][i]).collect();
        eig.iter().copied().fold(f64::MIN, f64::max) / eig.iter().copied().fold(f64::MAX, f64::min)
    }
}
