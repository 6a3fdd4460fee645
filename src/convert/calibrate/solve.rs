//! The dense linear algebra calibration needs, on symmetric positive definite f64 matrices of a
//! layer's input width: Cholesky factors and the upper factor of the inverse that GPTQ walks.
//! Written here rather than taken from a linear-algebra crate: three short routines, run once per
//! layer, not worth a large dependency's build time; tested against their definitions below.

use rayon::prelude::*;

/// Lower Cholesky factor L of `a` ([k, k] row-major, symmetric positive definite): a = L·Lᵀ.
/// None when a pivot is not positive (the matrix is not positive definite).
pub fn cholesky(a: &[f64], k: usize) -> Option<Vec<f64>> {
    let mut l = vec![0f64; k * k];
    for j in 0..k {
        let d = a[j * k + j] - l[j * k..j * k + j].iter().map(|v| v * v).sum::<f64>();
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let djj = d.sqrt();
        l[j * k + j] = djj;
        let lj = l[j * k..j * k + j].to_vec();
        // Column j below the diagonal: each row i > j needs only rows i and j of L (left-looking).
        l[(j + 1) * k..].par_chunks_mut(k).enumerate().for_each(|(t, li)| {
            let i = j + 1 + t;
            let dot: f64 = li[..j].iter().zip(&lj).map(|(x, y)| x * y).sum();
            li[j] = (a[i * k + j] - dot) / djj;
        });
    }
    Some(l)
}

/// Inverse of a lower-triangular matrix (lower-triangular too).
fn invert_lower(l: &[f64], k: usize) -> Vec<f64> {
    // Column c of L⁻¹ solves L·x = e_c; columns are independent.
    let cols: Vec<Vec<f64>> = (0..k)
        .into_par_iter()
        .map(|c| {
            let mut x = vec![0f64; k];
            x[c] = 1.0 / l[c * k + c];
            for i in c + 1..k {
                let s: f64 = (c..i).map(|t| l[i * k + t] * x[t]).sum();
                x[i] = -s / l[i * k + i];
            }
            x
        })
        .collect();
    let mut inv = vec![0f64; k * k];
    for (c, x) in cols.iter().enumerate() {
        for i in c..k {
            inv[i * k + c] = x[i];
        }
    }
    inv
}

/// The upper Cholesky factor U of `h`⁻¹ (h⁻¹ = Uᵀ·U), as GPTQ uses it: row i of U holds how an
/// error made at column i spreads over the columns after it. None when `h` is not positive definite.
pub fn inverse_upper_factor(h: &[f64], k: usize) -> Option<Vec<f64>> {
    let l = cholesky(h, k)?;
    let li = invert_lower(&l, k);
    // h⁻¹ = L⁻ᵀ·L⁻¹: entry (i, j) = Σ_t L⁻¹[t, i]·L⁻¹[t, j], t ≥ max(i, j).
    let mut lit = vec![0f64; k * k];
    for t in 0..k {
        for i in 0..=t {
            lit[i * k + t] = li[t * k + i];
        }
    }
    let mut hinv = vec![0f64; k * k];
    hinv.par_chunks_mut(k).enumerate().for_each(|(i, row)| {
        for j in 0..k {
            let from = i.max(j);
            row[j] = lit[i * k + from..i * k + k].iter().zip(&lit[j * k + from..j * k + k]).map(|(a, b)| a * b).sum();
        }
    });
    let l2 = cholesky(&hinv, k)?;
    let mut u = vec![0f64; k * k];
    for i in 0..k {
        for j in 0..=i {
            u[j * k + i] = l2[i * k + j];
        }
    }
    Some(u)
}

/// Solve the small symmetric positive definite system `m·x = b` ([d, d]); None when singular.
pub fn solve_spd(m: &[f64], b: &[f64], d: usize) -> Option<Vec<f64>> {
    let l = cholesky(m, d)?;
    let mut y = vec![0f64; d];
    for i in 0..d {
        let s: f64 = (0..i).map(|t| l[i * d + t] * y[t]).sum();
        y[i] = (b[i] - s) / l[i * d + i];
    }
    let mut x = vec![0f64; d];
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|t| l[t * d + i] * x[t]).sum();
        x[i] = (y[i] - s) / l[i * d + i];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(k: usize) -> Vec<f64> {
        // XᵀX + I for a fixed X: symmetric positive definite.
        let x: Vec<f64> = (0..(k + 3) * k).map(|i| ((i * 7919 % 23) as f64 - 11.0) / 7.0).collect();
        let mut a = vec![0f64; k * k];
        for i in 0..k {
            for j in 0..k {
                a[i * k + j] =
                    (0..k + 3).map(|t| x[t * k + i] * x[t * k + j]).sum::<f64>() + if i == j { 1.0 } else { 0.0 };
            }
        }
        a
    }

    #[test]
    fn cholesky_reconstructs() {
        let k = 9;
        let a = spd(k);
        let l = cholesky(&a, k).unwrap();
        for i in 0..k {
            for j in 0..k {
                let v: f64 = (0..k).map(|t| l[i * k + t] * l[j * k + t]).sum();
                assert!((v - a[i * k + j]).abs() < 1e-9 * a[i * k + i].abs().max(1.0));
            }
        }
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none(), "indefinite");
    }

    #[test]
    fn inverse_upper_factor_is_the_factor_of_the_inverse() {
        let k = 8;
        let a = spd(k);
        let u = inverse_upper_factor(&a, k).unwrap();
        // (Uᵀ·U)·a = I
        for i in 0..k {
            for j in 0..k {
                let v: f64 =
                    (0..k).map(|c| (0..k).map(|t| u[t * k + i] * u[t * k + c]).sum::<f64>() * a[c * k + j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-8, "{i},{j}: {v}");
            }
            for j in 0..i {
                assert_eq!(u[i * k + j], 0.0, "upper triangular");
            }
        }
    }

    #[test]
    fn solves() {
        let k = 6;
        let a = spd(k);
        let b: Vec<f64> = (0..k).map(|i| i as f64 - 2.5).collect();
        let x = solve_spd(&a, &b, k).unwrap();
        for i in 0..k {
            let v: f64 = (0..k).map(|j| a[i * k + j] * x[j]).sum();
            assert!((v - b[i]).abs() < 1e-9);
        }
    }
}
