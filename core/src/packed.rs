//! Packed storage of symmetric d×d matrices: the upper triangle, row by row
//! (a00 a01 … a0d, a11 … a1d, …, add). It halves memory and lets the quadratic
//! form xᵀMx become one contiguous dot product (see [`quadratic_weights`]).

/// Number of stored values for a d×d symmetric matrix.
#[must_use]
pub const fn len(dim: usize) -> usize {
    dim * (dim + 1) / 2
}

/// Position of element (i, j), i ≤ j, in the packed layout.
#[must_use]
pub const fn index(dim: usize, i: usize, j: usize) -> usize {
    // Rows before i hold d + (d-1) + … + (d-i+1) values.
    i * dim - i * (i.saturating_sub(1)) / 2 - i + j
}

/// Iterates over (i, j) in packed order.
pub fn positions(dim: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..dim).flat_map(move |i| (i..dim).map(move |j| (i, j)))
}

/// The packed identity scaled by `value`.
#[must_use]
pub fn scaled_identity(dim: usize, value: f64) -> Vec<f64> {
    positions(dim)
        .map(|(i, j)| if i == j { value } else { 0.0 })
        .collect()
}

/// Writes into `out` the weights w such that xᵀMx = Σ w·packed(M):
/// xᵢ² on the diagonal and 2·xᵢxⱼ off it. `out` must hold `len(x.len())`.
pub fn quadratic_weights(x: &[f64], out: &mut [f64]) {
    let mut slots = out.iter_mut();
    for (i, &xi) in x.iter().enumerate() {
        for (offset, &xj) in x.iter().skip(i).enumerate() {
            if let Some(slot) = slots.next() {
                *slot = if offset == 0 { xi * xj } else { 2.0 * xi * xj };
            }
        }
    }
}

/// Symmetric matrix-vector product y = M·v with M packed. Slices shorter
/// than the dimension are treated as zero-padded.
pub fn sym_mul_vec(dim: usize, m: &[f64], v: &[f64], y: &mut [f64]) {
    y.iter_mut().for_each(|value| *value = 0.0);
    let mut rest = m;
    for i in 0..dim {
        let (row, tail) = rest.split_at(dim.saturating_sub(i).min(rest.len()));
        rest = tail;
        // Row i of the upper triangle holds M[i][i..dim]: it contributes
        // M[i][j]·v[j] to y[i] and, off the diagonal, M[i][j]·v[i] to y[j].
        let (Some(vs), Some(&vi)) = (v.get(i..), v.get(i)) else { break };
        let mut sum = 0.0;
        for (&mij, &vj) in row.iter().zip(vs) {
            sum += mij * vj;
        }
        if let Some(ys) = y.get_mut(i + 1..) {
            for (yj, &mij) in ys.iter_mut().zip(row.iter().skip(1)) {
                *yj += mij * vi;
            }
        }
        if let Some(yi) = y.get_mut(i) {
            *yi += sum;
        }
    }
}

/// Expands a packed matrix into full row-major rows.
#[must_use]
pub fn to_rows(dim: usize, m: &[f64]) -> Vec<Vec<f64>> {
    let mut rows = vec![vec![0.0; dim]; dim];
    for ((i, j), &value) in positions(dim).zip(m) {
        if let Some(slot) = rows.get_mut(i).and_then(|row| row.get_mut(j)) {
            *slot = value;
        }
        if let Some(slot) = rows.get_mut(j).and_then(|row| row.get_mut(i)) {
            *slot = value;
        }
    }
    rows
}

/// Dot product of two equal-length slices in f64, summed in order (the
/// prior, the bounds, and callers outside ranking, whose results are pinned
/// by that order). The inversion sums in four lanes instead, for speed
/// (see `cholesky`).
#[inline]
#[must_use]
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_positions() {
        for dim in 1..9 {
            for (k, (i, j)) in positions(dim).enumerate() {
                assert_eq!(index(dim, i, j), k, "dim {dim} ({i},{j})");
            }
            assert_eq!(positions(dim).count(), len(dim));
        }
    }

    #[test]
    fn quadratic_weights_give_the_quadratic_form() {
        // M = [[2, 1, 0], [1, 3, -1], [0, -1, 4]], x = [1, 2, 3]
        // xᵀMx = 2 + 3·4 + 4·9 + 2(1·1·2) + 2(-1·2·3) = 2 + 12 + 36 + 4 - 12 = 42
        let m = [2.0, 1.0, 0.0, 3.0, -1.0, 4.0];
        let x = [1.0, 2.0, 3.0];
        let mut w = [0.0; 6];
        quadratic_weights(&x, &mut w);
        let q: f64 = w.iter().zip(&m).map(|(a, b)| a * b).sum();
        assert_eq!(q, 42.0);
    }

    #[test]
    fn symmetric_product_and_rows() {
        let m = [2.0, 1.0, 0.0, 3.0, -1.0, 4.0];
        let mut y = [0.0; 3];
        sym_mul_vec(3, &m, &[1.0, 2.0, 3.0], &mut y);
        assert_eq!(y, [4.0, 4.0, 10.0]);
        assert_eq!(
            to_rows(3, &m),
            vec![vec![2.0, 1.0, 0.0], vec![1.0, 3.0, -1.0], vec![0.0, -1.0, 4.0]]
        );
    }
}
