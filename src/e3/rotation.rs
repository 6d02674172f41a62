//! Elements of O(3) as 3×3 matrices acting on column vectors.

use rand::Rng;
use rand_distr::StandardNormal;

pub type Matrix3 = [[f64; 3]; 3];

/// Rotation by `degrees` about the x axis (the study's equivariance check uses 37°).
pub fn rotation_about_x(degrees: f64) -> Matrix3 {
    let (s, c) = degrees.to_radians().sin_cos();
    [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]
}

/// A rotation drawn uniformly from SO(3), through a normalised Gaussian quaternion.
pub fn random_rotation(rng: &mut impl Rng) -> Matrix3 {
    let mut q: [f64; 4] = std::array::from_fn(|_| rng.sample(StandardNormal));
    let norm = q.iter().map(|v| v * v).sum::<f64>().sqrt();
    q.iter_mut().for_each(|v| *v /= norm);
    let [w, x, y, z] = q;
    [
        [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - z * w), 2.0 * (x * z + y * w)],
        [2.0 * (x * y + z * w), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - x * w)],
        [2.0 * (x * z - y * w), 2.0 * (y * z + x * w), 1.0 - 2.0 * (x * x + y * y)],
    ]
}

/// A random rotation composed with the inversion −I: an improper element of O(3).
pub fn random_reflection(rng: &mut impl Rng) -> Matrix3 {
    random_rotation(rng).map(|row| row.map(|v| -v))
}

pub fn determinant(m: &Matrix3) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// Applies `m` to every consecutive (x, y, z) triple of `points`.
pub fn apply(m: &Matrix3, points: &[f32]) -> Vec<f32> {
    points
        .chunks_exact(3)
        .flat_map(|p| {
            let p = [p[0], p[1], p[2]].map(f64::from);
            m.map(|row| (row[0] * p[0] + row[1] * p[1] + row[2] * p[2]) as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    fn transpose_times(m: &Matrix3) -> Matrix3 {
        std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| m[k][i] * m[k][j]).sum()))
    }

    #[test]
    fn random_elements_are_orthogonal_with_the_right_determinant() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..100 {
            for (m, det) in [(random_rotation(&mut rng), 1.0), (random_reflection(&mut rng), -1.0)] {
                let mtm = transpose_times(&m);
                for i in 0..3 {
                    for j in 0..3 {
                        let identity = if i == j { 1.0 } else { 0.0 };
                        assert!((mtm[i][j] - identity).abs() < 1e-12);
                    }
                }
                assert!((determinant(&m) - det).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn rotation_about_x_turns_y_towards_z() {
        let m = rotation_about_x(90.0);
        let out = apply(&m, &[0.0, 1.0, 0.0]);
        assert!(out[0].abs() < 1e-7 && out[1].abs() < 1e-7 && (out[2] - 1.0).abs() < 1e-7);
    }
}
