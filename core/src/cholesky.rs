//! Inversion of a symmetric positive-definite matrix through its Cholesky
//! factor: A = LLᵀ, then A⁻¹ = L⁻ᵀL⁻¹. It is cheaper and numerically kinder
//! than a general inverse, and fails cleanly on a matrix that is not positive
//! definite instead of returning garbage.

use crate::error::{Error, Result};
use crate::packed;

/// Reusable buffers for [`invert_packed`], so a trainer inverting thousands of
/// arms per flush allocates once.
#[derive(Debug, Default, Clone)]
pub struct Workspace {
    factor: Vec<f64>,
    inverse_factor: Vec<f64>,
}

/// The inner loop of every step below: a dot product summed in four
/// independent lanes. One running sum is a chain of dependent additions,
/// each waiting for the last (about four cycles apiece); four chains overlap,
/// and the compiler can pack them into vector registers. It makes an
/// inversion at d = 32 about three times faster. The lanes change the order
/// of the additions, so results may differ from a one-sum loop in the last
/// bit; every reader of an inverse gets it from here.
#[inline]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let (a_lanes, a_rest) = a.as_chunks::<4>();
    let (b_lanes, b_rest) = b.as_chunks::<4>();
    let mut lanes = [0.0f64; 4];
    for (x, y) in a_lanes.iter().zip(b_lanes) {
        for ((sum, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *sum += x * y;
        }
    }
    let tail: f64 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail
}

/// Factors the packed SPD matrix `a` as LLᵀ; `lower` receives L, full
/// row-major d×d (zeros above the diagonal).
///
/// # Errors
/// As [`invert_packed`].
#[allow(clippy::indexing_slicing)] // every index is below dim, and `lower` holds dim² values
pub fn factor_packed(dim: usize, a: &[f64], lower: &mut Vec<f64>) -> Result<()> {
    if a.len() != packed::len(dim) {
        return Err(Error::DimMismatch { what: "packed matrix".into(), got: a.len(), dim });
    }
    let l = lower;
    l.clear();
    l.resize(dim * dim, 0.0);
    for j in 0..dim {
        let (_, rest) = l.split_at_mut(j * dim);
        let (row_j, below) = rest.split_at_mut(dim);
        let pivot = a[packed::index(dim, j, j)] - dot(&row_j[..j], &row_j[..j]);
        if !(pivot > 0.0 && pivot.is_finite()) {
            return Err(Error::NotPositiveDefinite { field: format!("pivot {j}") });
        }
        let diagonal = pivot.sqrt();
        row_j[j] = diagonal;
        for (offset, row_i) in below.chunks_exact_mut(dim).enumerate() {
            let i = j + 1 + offset;
            let value = a[packed::index(dim, j, i)] - dot(&row_i[..j], &row_j[..j]);
            row_i[j] = value / diagonal;
        }
    }
    Ok(())
}

/// Inverts the packed SPD matrix `a` (dim `dim`) into `out` (packed).
///
/// # Errors
/// [`Error::DimMismatch`] when the slices do not hold `packed::len(dim)` values,
/// [`Error::NotPositiveDefinite`] when a pivot is not positive and finite.
#[allow(clippy::indexing_slicing)] // every index is below dim, and both buffers hold dim² values (checked on entry)
pub fn invert_packed(dim: usize, a: &[f64], out: &mut [f64], work: &mut Workspace) -> Result<()> {
    let plen = packed::len(dim);
    if a.len() != plen || out.len() != plen {
        return Err(Error::DimMismatch {
            what: "packed matrix".into(),
            got: a.len().min(out.len()),
            dim,
        });
    }
    factor_packed(dim, a, &mut work.factor)?;
    let l = &work.factor;
    // M = L⁻¹, lower triangular, row-major. From LM = I, row i of M is
    // −(Σ_{k<i} L[i][k]·(row k of M)) / L[i][i] left of the diagonal and
    // 1/L[i][i] on it: whole earlier rows scaled and added, with no value
    // waiting on its neighbour, so the loops run as wide as the machine.
    let m = &mut work.inverse_factor;
    m.clear();
    m.resize(dim * dim, 0.0);
    for i in 0..dim {
        let (done, rest) = m.split_at_mut(i * dim);
        let row_i = &mut rest[..dim];
        for (k, &weight) in l[i * dim..i * dim + i].iter().enumerate() {
            for (slot, &value) in row_i[..=k].iter_mut().zip(&done[k * dim..=k * dim + k]) {
                *slot += weight * value;
            }
        }
        let reciprocal = 1.0 / l[i * dim + i];
        for slot in &mut row_i[..i] {
            *slot *= -reciprocal;
        }
        row_i[i] = reciprocal;
    }
    // A⁻¹ = MᵀM = Σₖ (row k of M)ᵀ(row k of M): each row of M adds its outer
    // product to the packed upper triangle, one contiguous run per row p
    // (columns p..=k), summed over k in increasing order.
    out.fill(0.0);
    for k in 0..dim {
        let row_k = &m[k * dim..=k * dim + k];
        let mut starts = 0;
        for p in 0..=k {
            let scale = row_k[p];
            for (slot, &value) in out[starts..=starts + k - p].iter_mut().zip(&row_k[p..]) {
                *slot += scale * value;
            }
            starts += dim - p;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::needless_range_loop)]
mod tests {
    use super::*;

    fn invert(dim: usize, a: &[f64]) -> Result<Vec<f64>> {
        let mut out = vec![0.0; packed::len(dim)];
        invert_packed(dim, a, &mut out, &mut Workspace::default())?;
        Ok(out)
    }

    #[test]
    fn inverts_a_two_by_two_by_hand() {
        // A = [[4, 2], [2, 3]], det = 8, A⁻¹ = [[3/8, -2/8], [-2/8, 4/8]]
        let inverse = invert(2, &[4.0, 2.0, 3.0]).unwrap();
        let expected = [0.375, -0.25, 0.5];
        for (got, want) in inverse.iter().zip(expected) {
            assert!((got - want).abs() < 1e-15, "{got} vs {want}");
        }
    }

    #[test]
    fn product_with_original_is_identity() {
        // A = λI + Σ xxᵀ for a few deterministic vectors, as the trainer builds it.
        let dim = 7;
        let mut a = packed::scaled_identity(dim, 1.0);
        for t in 0..20 {
            let x: Vec<f64> = (0..dim).map(|i| ((t * 7 + i * 3) % 11) as f64 / 10.0).collect();
            for (slot, (i, j)) in a.iter_mut().zip(packed::positions(dim)) {
                *slot += x[i] * x[j];
            }
        }
        let inverse = invert(dim, &a).unwrap();
        let full_a = packed::to_rows(dim, &a);
        let full_inv = packed::to_rows(dim, &inverse);
        for i in 0..dim {
            for j in 0..dim {
                let value: f64 = (0..dim).map(|k| full_a[i][k] * full_inv[k][j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((value - want).abs() < 1e-12, "({i},{j}) = {value}");
            }
        }
    }

    #[test]
    fn rejects_indefinite_and_wrong_sizes() {
        assert!(matches!(
            invert(2, &[1.0, 2.0, 1.0]),
            Err(Error::NotPositiveDefinite { .. })
        ));
        assert!(matches!(invert(2, &[1.0, 0.0]), Err(Error::DimMismatch { .. })));
        assert!(matches!(
            invert(1, &[f64::NAN]),
            Err(Error::NotPositiveDefinite { .. })
        ));
    }
}
