//! Wigner 3j symbols in e3nn's real basis.
//!
//! The SU(2) Clebsch–Gordan coefficients (Racah's formula) are carried from the
//! complex spherical basis into the real one with the same change of basis as e3nn,
//! including its factor (−i)^l that makes the result real, and normalised to unit
//! Frobenius norm; e3nn weights then mean the same thing here.

use ndarray::Array3;
use num_complex::Complex64;

fn factorial(n: i64) -> f64 {
    (1..=n).map(|k| k as f64).product()
}

/// ⟨l1 m1; l2 m2 | l3 m3⟩ for integer degrees.
fn clebsch_gordan(l1: i64, m1: i64, l2: i64, m2: i64, l3: i64, m3: i64) -> f64 {
    if m3 != m1 + m2 {
        return 0.0;
    }
    let prefactor =
        ((2 * l3 + 1) as f64 * factorial(l3 + l1 - l2) * factorial(l3 - l1 + l2) * factorial(l1 + l2 - l3) * factorial(l3 + m3) * factorial(l3 - m3)
            / (factorial(l1 + l2 + l3 + 1) * factorial(l1 - m1) * factorial(l1 + m1) * factorial(l2 - m2) * factorial(l2 + m2)))
        .sqrt();
    let v_min = (-l1 + l2 + m3).max(-l1 + m1).max(0);
    let v_max = (l2 + l3 + m1).min(l3 - l1 + l2).min(l3 + m3);
    let sum: f64 = (v_min..=v_max)
        .map(|v| {
            let sign = if (v + l2 + m2) % 2 == 0 { 1.0 } else { -1.0 };
            sign * factorial(l2 + l3 + m1 - v) * factorial(l1 - m1 + v)
                / (factorial(v) * factorial(l3 - l1 + l2 - v) * factorial(l3 + m3 - v) * factorial(v + l1 - l2 - m3))
        })
        .sum();
    prefactor * sum
}

/// Q with real = Q · complex, rows and columns ordered m = −l..=l.
fn real_to_complex(l: i64) -> Vec<Vec<Complex64>> {
    let n = (2 * l + 1) as usize;
    let h = std::f64::consts::FRAC_1_SQRT_2;
    let mut q = vec![vec![Complex64::new(0.0, 0.0); n]; n];
    let at = |m: i64| (l + m) as usize;
    for m in -l..0 {
        q[at(m)][at(-m)] = Complex64::new(h, 0.0);
        q[at(m)][at(m)] = Complex64::new(0.0, -h);
    }
    q[at(0)][at(0)] = Complex64::new(1.0, 0.0);
    for m in 1..=l {
        let sign = if m % 2 == 0 { 1.0 } else { -1.0 };
        q[at(m)][at(m)] = Complex64::new(sign * h, 0.0);
        q[at(m)][at(-m)] = Complex64::new(0.0, sign * h);
    }
    let phase = Complex64::new(0.0, -1.0).powi(l as i32);
    q.iter_mut().flatten().for_each(|v| *v *= phase);
    q
}

/// C[m1, m2, m3] of shape (2l1+1, 2l2+1, 2l3+1) with C·D(g)⊗D(g)⊗D(g) = C and |C| = 1.
/// Panics unless |l1 − l2| ≤ l3 ≤ l1 + l2 (the caller's instructions guarantee it).
pub fn wigner_3j(l1: u32, l2: u32, l3: u32) -> Array3<f64> {
    assert!(l1.abs_diff(l2) <= l3 && l3 <= l1 + l2, "no coupling {l1} ⊗ {l2} → {l3}");
    let (l1, l2, l3) = (i64::from(l1), i64::from(l2), i64::from(l3));
    let (n1, n2, n3) = ((2 * l1 + 1) as usize, (2 * l2 + 1) as usize, (2 * l3 + 1) as usize);
    let (q1, q2, q3) = (real_to_complex(l1), real_to_complex(l2), real_to_complex(l3));
    // Complex CG: cg[a][b][c] for m1 = a − l1, m2 = b − l2, m3 = c − l3.
    let mut cg = vec![0.0; n1 * n2 * n3];
    for a in 0..n1 {
        for b in 0..n2 {
            let m3 = (a as i64 - l1) + (b as i64 - l2);
            if m3.abs() <= l3 {
                let c = (m3 + l3) as usize;
                cg[(a * n2 + b) * n3 + c] = clebsch_gordan(l1, a as i64 - l1, l2, b as i64 - l2, l3, m3);
            }
        }
    }
    // C[j, l, m] = Σ_{i,k,n} Q1[i, j] Q2[k, l] conj(Q3)[n, m] cg[i, k, n]
    // (e3nn: einsum("ij,kl,mn,ikn->jlm", Q1, Q2, conj(Q3.T), C)).
    let mut out = Array3::<f64>::zeros((n1, n2, n3));
    for j in 0..n1 {
        for l in 0..n2 {
            for m in 0..n3 {
                let mut acc = Complex64::new(0.0, 0.0);
                for i in 0..n1 {
                    for k in 0..n2 {
                        let q12 = q1[i][j] * q2[k][l];
                        if q12.norm_sqr() == 0.0 {
                            continue;
                        }
                        for n in 0..n3 {
                            let value = cg[(i * n2 + k) * n3 + n];
                            if value != 0.0 {
                                acc += q12 * q3[n][m].conj() * value;
                            }
                        }
                    }
                }
                debug_assert!(acc.im.abs() < 1e-10, "3j symbol not real");
                out[[j, l, m]] = acc.re;
            }
        }
    }
    let norm = out.iter().map(|v| v * v).sum::<f64>().sqrt();
    out / norm
}
