//! The trainer's per-arm state: A = λI + Σ xxᵀ and b = Σ r·x, updated per
//! event in O(d²), and turned into a publishable [`ArmPayload`] by inverting A
//! only when the arm is published.

use crate::cholesky::{self, Workspace};
use crate::error::{Error, Result};
use crate::packed;
use crate::payload::ArmPayload;

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

    /// Inverts A and packages the arm for publication.
    ///
    /// # Errors
    /// [`Error::NotPositiveDefinite`] if A has lost definiteness (it cannot
    /// with λ > 0 and finite inputs).
    pub fn to_payload(&self, id: &str, work: &mut Workspace, updated_ms: Option<i64>) -> Result<ArmPayload> {
        let dim = self.dim();
        let mut a_inv = vec![0.0; packed::len(dim)];
        cholesky::invert_packed(dim, &self.a, &mut a_inv, work)?;
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
#[allow(clippy::unwrap_used)]
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
}
