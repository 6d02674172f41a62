//! Elements of O(3) as 3×3 matrices acting on column vectors, elements of E(3) acting
//! on frames, and the equivariance check every model and layer is held to.

use ndarray::{ArrayD, Axis};
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
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// A coordinate type frames are stored in.
pub trait Coordinate: Copy {
    fn to_f64(self) -> f64;
    fn from_f64(value: f64) -> Self;
}

impl Coordinate for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(value: f64) -> Self {
        value as f32
    }
}

impl Coordinate for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(value: f64) -> Self {
        value
    }
}

/// An element of E(3): x ↦ m·x + t.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Isometry {
    pub matrix: Matrix3,
    pub translation: [f64; 3],
}

impl Isometry {
    /// m alone (no translation).
    pub fn linear(matrix: Matrix3) -> Self {
        Self { matrix, translation: [0.0; 3] }
    }

    pub fn translation(translation: [f64; 3]) -> Self {
        Self { matrix: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], translation }
    }

    pub fn apply_point(&self, p: [f64; 3]) -> [f64; 3] {
        let m = &self.matrix;
        std::array::from_fn(|i| m[i][0] * p[0] + m[i][1] * p[1] + m[i][2] * p[2] + self.translation[i])
    }

    /// Every point (x, y, z) along the last axis of `points` (of any rank: a frame, a
    /// batch, a window of frames) moved by this element.
    pub fn apply<A: Coordinate>(&self, points: &ArrayD<A>) -> ArrayD<A> {
        self.map_lanes(points, |p| self.apply_point(p))
    }

    /// Vectors (displacements, velocities) along the last axis rotated by m: they
    /// ignore the translation.
    pub fn apply_to_vectors<A: Coordinate>(&self, vectors: &ArrayD<A>) -> ArrayD<A> {
        Self::linear(self.matrix).apply(vectors)
    }

    fn map_lanes<A: Coordinate>(&self, points: &ArrayD<A>, f: impl Fn([f64; 3]) -> [f64; 3]) -> ArrayD<A> {
        let last = points.ndim().checked_sub(1).expect("points have at least one axis");
        assert_eq!(points.shape()[last], 3, "points are (x, y, z) along the last axis");
        let mut out = points.clone();
        for mut lane in out.lanes_mut(Axis(last)) {
            let moved = f([lane[0].to_f64(), lane[1].to_f64(), lane[2].to_f64()]);
            for (slot, value) in lane.iter_mut().zip(moved) {
                *slot = A::from_f64(value);
            }
        }
        out
    }
}

/// max |f(g·x) − g·f(x)| for a function `f` of point sets (a frame, or a frame with
/// its past: every input is moved) to vectors (dx), which rotate with g and ignore
/// its translation.
pub fn equivariance_deviation<A: Coordinate>(f: &mut dyn FnMut(&[ArrayD<A>]) -> ArrayD<A>, inputs: &[ArrayD<A>], g: &Isometry) -> f64 {
    let out = f(inputs);
    let moved: Vec<ArrayD<A>> = inputs.iter().map(|x| g.apply(x)).collect();
    let out_moved = f(&moved);
    let expected = g.apply_to_vectors(&out);
    assert_eq!(out_moved.shape(), expected.shape(), "f changed its output's shape");
    out_moved.iter().zip(&expected).map(|(a, b)| (a.to_f64() - b.to_f64()).abs()).fold(0.0, f64::max)
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
                for (i, row) in mtm.iter().enumerate() {
                    for (j, value) in row.iter().enumerate() {
                        let identity = if i == j { 1.0 } else { 0.0 };
                        assert!((value - identity).abs() < 1e-12);
                    }
                }
                assert!((determinant(&m) - det).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn rotation_about_x_turns_y_towards_z() {
        let out = Isometry::linear(rotation_about_x(90.0)).apply_point([0.0, 1.0, 0.0]);
        assert!(out[0].abs() < 1e-12 && out[1].abs() < 1e-12 && (out[2] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn isometries_move_points_and_rotate_vectors() {
        let g = Isometry { matrix: rotation_about_x(90.0), translation: [1.0, 2.0, 3.0] };
        let frame = ArrayD::from_shape_vec(vec![1, 2, 3], vec![0.0_f64, 1.0, 0.0, 1.0, 0.0, 0.0]).expect("shape");
        let moved = g.apply(&frame);
        let expected = [1.0, 2.0, 4.0, 2.0, 2.0, 3.0];
        assert!(moved.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-12), "{moved:?}");
        let rotated = g.apply_to_vectors(&frame);
        assert!(rotated.iter().zip([0.0, 0.0, 1.0, 1.0, 0.0, 0.0]).all(|(a, b)| (a - b).abs() < 1e-12), "{rotated:?}");
    }

    #[test]
    fn equivariance_deviation_tells_equivariant_functions_apart() {
        let mut rng = StdRng::seed_from_u64(2);
        let frame = ArrayD::from_shape_fn(vec![2, 12, 3], |_| rng.sample::<f64, _>(StandardNormal));
        let g = Isometry { matrix: random_reflection(&mut rng), translation: [0.5, -1.0, 2.0] };
        // Each point's offset from the centroid is a vector: equivariant.
        let mut centred = |x: &[ArrayD<f64>]| {
            let centroid = x[0].mean_axis(Axis(1)).expect("particles").insert_axis(Axis(1));
            &x[0] - &centroid
        };
        assert!(equivariance_deviation(&mut centred, std::slice::from_ref(&frame), &g) < 1e-12);
        // The difference of two inputs moved alike is a vector too.
        let mut difference = |x: &[ArrayD<f64>]| &x[0] - &x[1];
        let other = frame.mapv(|v| v * 0.5);
        assert!(equivariance_deviation(&mut difference, &[frame.clone(), other], &g) < 1e-12);
        // The positions themselves move with the translation: not a vector.
        let mut identity = |x: &[ArrayD<f64>]| x[0].clone();
        assert!(equivariance_deviation(&mut identity, &[frame], &g) > 0.1);
    }
}
