//! A textbook LinUCB written separately from `bandit_core`, so tests compare
//! the system against something that does not share its code: dense d×d
//! matrices (`Vec<Vec<f64>>`), A = λI + Σ xxᵀ and b = Σ r·x folded entry by
//! entry, θ from Gaussian elimination with partial pivoting, A⁻¹ from
//! Gauss–Jordan, and the UCB score xᵀθ + α·√(xᵀA⁻¹x). Nothing here calls the
//! core's fold, Cholesky, packed storage or kernel.
//!
//! A and b accumulate the same products in the same order as any correct
//! trainer, so they are compared to the bit; θ, A⁻¹ and scores come from a
//! different algorithm and are compared with a tolerance.

// The elimination loops index rows and columns as the textbook formulas
// do (m[row][k] -= factor · m[col][k]); iterators would hide them.
#![allow(clippy::needless_range_loop)]

use std::collections::BTreeMap;

use bandit_core::event::FeedbackEvent;

/// One arm's sufficient statistics, dense.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseArm {
    /// A = λI + Σ xxᵀ, full symmetric matrix.
    pub a: Vec<Vec<f64>>,
    /// b = Σ r·x.
    pub b: Vec<f64>,
    pub n: u64,
    pub reward_sum: f64,
}

impl DenseArm {
    /// The prior: A = λI, b = 0.
    pub fn prior(dim: usize, lambda: f64) -> Self {
        let a = (0..dim).map(|i| (0..dim).map(|j| if i == j { lambda } else { 0.0 }).collect()).collect();
        Self { a, b: vec![0.0; dim], n: 0, reward_sum: 0.0 }
    }

    /// A += xxᵀ, b += r·x.
    pub fn fold(&mut self, x: &[f64], reward: f64) {
        for (i, row) in self.a.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                *cell += x[i] * x[j];
            }
        }
        for (bi, xi) in self.b.iter_mut().zip(x) {
            *bi += reward * xi;
        }
        self.n += 1;
        self.reward_sum += reward;
    }

    /// θ = A⁻¹b by solving Aθ = b.
    pub fn theta(&self) -> Vec<f64> {
        solve(&self.a, &self.b)
    }

    /// A⁻¹ by Gauss–Jordan.
    pub fn a_inv(&self) -> Vec<Vec<f64>> {
        invert(&self.a)
    }

    /// The packed upper triangle of A, row by row (the layout payloads use),
    /// for comparison with exported matrices.
    pub fn a_upper(&self) -> Vec<f64> {
        upper(&self.a)
    }

    /// xᵀθ + α·√(max(0, xᵀA⁻¹x)).
    pub fn score(&self, x: &[f64], alpha: f64) -> f64 {
        let theta = self.theta();
        let mean: f64 = x.iter().zip(&theta).map(|(a, b)| a * b).sum();
        let a_inv_x = solve(&self.a, x);
        let width: f64 = x.iter().zip(&a_inv_x).map(|(a, b)| a * b).sum();
        mean + alpha * width.max(0.0).sqrt()
    }
}

/// The packed upper triangle of a square matrix, row by row.
pub fn upper(matrix: &[Vec<f64>]) -> Vec<f64> {
    matrix.iter().enumerate().flat_map(|(i, row)| row[i..].to_vec()).collect()
}

/// Expands a packed upper triangle (row by row) into a full matrix.
pub fn full(dim: usize, packed: &[f64]) -> Vec<Vec<f64>> {
    let mut out = vec![vec![0.0; dim]; dim];
    let mut k = 0;
    for i in 0..dim {
        for j in i..dim {
            out[i][j] = packed[k];
            out[j][i] = packed[k];
            k += 1;
        }
    }
    out
}

/// Every product's arm folded from `events` in order, with prior λ.
pub fn fold_events(events: &[FeedbackEvent], dim: usize, lambda: f64) -> BTreeMap<String, DenseArm> {
    let mut arms = BTreeMap::new();
    for event in events {
        arms.entry(event.product_id.clone())
            .or_insert_with(|| DenseArm::prior(dim, lambda))
            .fold(&event.context_vector, event.reward);
    }
    arms
}

/// The textbook arms behind a payload, from its Gram matrices A and b
/// (never from the A⁻¹ the module scores with). Every arm must carry A.
pub fn payload_arms(payload: &bandit_core::Payload) -> BTreeMap<String, DenseArm> {
    payload
        .arms
        .iter()
        .map(|arm| {
            let a = full(payload.dim, arm.a.as_deref().expect("the payload's arms carry A"));
            (arm.id.clone(), DenseArm { a, b: arm.b.clone(), n: arm.n, reward_sum: arm.reward_sum })
        })
        .collect()
}

/// Solves Mx = v by Gaussian elimination with partial pivoting.
pub fn solve(matrix: &[Vec<f64>], v: &[f64]) -> Vec<f64> {
    let n = v.len();
    let mut m: Vec<Vec<f64>> = matrix.iter().zip(v).map(|(row, &vi)| row.iter().copied().chain([vi]).collect()).collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs())).unwrap_or(col);
        m.swap(col, pivot);
        assert!(m[col][col] != 0.0, "singular matrix");
        for row in col + 1..n {
            let factor = m[row][col] / m[col][col];
            for k in col..=n {
                m[row][k] -= factor * m[col][k];
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| m[row][k] * x[k]).sum();
        x[row] = (m[row][n] - tail) / m[row][row];
    }
    x
}

/// The inverse by Gauss–Jordan elimination with partial pivoting.
pub fn invert(matrix: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = matrix.len();
    let mut m: Vec<Vec<f64>> = matrix
        .iter()
        .enumerate()
        .map(|(i, row)| row.iter().copied().chain((0..n).map(|j| if i == j { 1.0 } else { 0.0 })).collect())
        .collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs())).unwrap_or(col);
        m.swap(col, pivot);
        let p = m[col][col];
        assert!(p != 0.0, "singular matrix");
        for k in 0..2 * n {
            m[col][k] /= p;
        }
        for row in 0..n {
            if row != col {
                let factor = m[row][col];
                for k in 0..2 * n {
                    m[row][k] -= factor * m[col][k];
                }
            }
        }
    }
    m.into_iter().map(|row| row[n..].to_vec()).collect()
}

/// The score of a product the model has never seen: θ = 0, A = λI.
pub fn prior_score(x: &[f64], alpha: f64, lambda: f64) -> f64 {
    DenseArm::prior(x.len(), lambda).score(x, alpha)
}

/// Relative closeness for values from different algorithms.
pub fn close(got: f64, want: f64, tolerance: f64) -> bool {
    (got - want).abs() <= tolerance * want.abs().max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_hand() {
        // λ = 2, x = [1, 2], r = 1: A = [[3, 2], [2, 6]], det = 14,
        // A⁻¹ = [[6, -2], [-2, 3]] / 14, b = [1, 2], θ = [2/14, 4/14].
        let mut arm = DenseArm::prior(2, 2.0);
        arm.fold(&[1.0, 2.0], 1.0);
        assert_eq!(arm.a, vec![vec![3.0, 2.0], vec![2.0, 6.0]]);
        let theta = arm.theta();
        assert!(close(theta[0], 2.0 / 14.0, 1e-14) && close(theta[1], 4.0 / 14.0, 1e-14), "{theta:?}");
        let inv = arm.a_inv();
        let want = [[6.0 / 14.0, -2.0 / 14.0], [-2.0 / 14.0, 3.0 / 14.0]];
        for i in 0..2 {
            for j in 0..2 {
                assert!(close(inv[i][j], want[i][j], 1e-14));
            }
        }
        // x = [1, 0], α = 0.5: xᵀθ = 1/7, xᵀA⁻¹x = 6/14.
        let score = arm.score(&[1.0, 0.0], 0.5);
        assert!(close(score, 1.0 / 7.0 + 0.5 * (6.0f64 / 14.0).sqrt(), 1e-14));
        // The prior: α·√(xᵀx/λ) = 0.3·√(5/2).
        assert!(close(prior_score(&[1.0, 2.0], 0.3, 2.0), 0.3 * 2.5f64.sqrt(), 1e-14));
        assert_eq!(upper(&arm.a), vec![3.0, 2.0, 6.0]);
        assert_eq!(full(2, &[3.0, 2.0, 6.0]), arm.a);
    }
}
