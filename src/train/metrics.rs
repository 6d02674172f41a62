//! The study's metrics (MSE, four R² of predicted next positions, equivariance error)
//! plus dx-skill, computed on plain arrays so they apply to any predictor.

use ndarray::{Array3, Array4, ArrayD, ArrayView3, ArrayView4, Axis, Ix3, Ix4};
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

pub use crate::card::{EquivarianceReport, Evaluation, StudyR2};
use crate::{
    data::{DIMS, PARTICLES, Pairs},
    e3::rotation::{self, Isometry, equivariance_deviation},
};

/// Anything mapping positions [batch, 12, 3], with the frames before them [batch, K − 1,
/// 12, 3] (none for models of one snapshot), to predicted dx [batch, 12, 3].
pub type DxPredictor<'a> = dyn FnMut(ArrayView3<f32>, ArrayView4<f32>) -> Array3<f32> + 'a;

/// Mean squared error over every element.
pub fn mse(prediction: &Array3<f32>, truth: &Array3<f32>) -> f64 {
    let sum: f64 = prediction.iter().zip(truth).map(|(p, t)| (f64::from(*p) - f64::from(*t)).powi(2)).sum();
    sum / truth.len() as f64
}

/// Coefficient of determination, as sklearn's `r2_score` for one output.
pub fn r2(truth: &[f64], prediction: &[f64]) -> f64 {
    let mean = truth.iter().sum::<f64>() / truth.len() as f64;
    let residual: f64 = truth.iter().zip(prediction).map(|(t, p)| (t - p).powi(2)).sum();
    let total: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
    1.0 - residual / total
}

impl StudyR2 {
    /// The four R² of `prediction` against `truth`, both next positions [frames, 12, 3].
    pub fn new(prediction: ArrayView3<f32>, truth: ArrayView3<f32>) -> Self {
        let series = |a: ArrayView3<f32>, f: &dyn Fn(ndarray::ArrayView2<f32>) -> f64| -> Vec<f64> { a.axis_iter(Axis(0)).map(&f).collect() };
        let cm = |frame: ndarray::ArrayView2<f32>| frame.iter().map(|v| f64::from(*v)).sum::<f64>() / frame.len() as f64;
        let p1 = |frame: ndarray::ArrayView2<f32>| frame.row(0).iter().map(|v| f64::from(*v)).sum::<f64>() / DIMS as f64;
        let p7_x = |frame: ndarray::ArrayView2<f32>| f64::from(frame[[6, 0]]);
        let p12_y = |frame: ndarray::ArrayView2<f32>| f64::from(frame[[PARTICLES - 1, 1]]);
        let score = |f: &dyn Fn(ndarray::ArrayView2<f32>) -> f64| r2(&series(truth, f), &series(prediction, f));
        Self { cm: score(&cm), p1_cm: score(&p1), p7_x: score(&p7_x), p12_y: score(&p12_y) }
    }
}

/// Scores `dx_pred`, a model's dx for `pairs.inputs`.
pub fn evaluate(dx_pred: &Array3<f32>, pairs: &Pairs) -> Evaluation {
    let dx_true = pairs.dx();
    let mse = mse(dx_pred, &dx_true);
    let mean = dx_true.iter().map(|v| f64::from(*v)).sum::<f64>() / dx_true.len() as f64;
    let variance = dx_true.iter().map(|v| (f64::from(*v) - mean).powi(2)).sum::<f64>() / dx_true.len() as f64;
    let next_pred = &pairs.inputs + dx_pred;
    Evaluation { mse, dx_skill: 1.0 - mse / variance, r2: StudyR2::new(next_pred.view(), pairs.next.view()) }
}

impl EquivarianceReport {
    /// Gaussian positions as in the study (with Gaussian steps before them for history
    /// models), plus the given real frames and the frames before them, under `trials`
    /// random elements of each kind; every frame of a window moves together.
    pub fn measure(predict: &mut DxPredictor, frames: ArrayView3<f32>, previous: ArrayView4<f32>, trials: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let gaussian = Array3::from_shape_simple_fn((1, PARTICLES, DIMS), || StandardNormal.sample(&mut rng));
        let gaussian_previous = Array4::from_shape_fn((1, previous.dim().1, PARTICLES, DIMS), |(_, k, p, d)| {
            gaussian[[0, p, d]] + 0.05 * (previous.dim().1 - k) as f32 * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, &mut rng)
        });
        let rotation_37_x = deviation(predict, gaussian.view(), gaussian_previous.view(), &Isometry::linear(rotation::rotation_about_x(37.0)));
        let mut worst = |make: &mut dyn FnMut(&mut StdRng) -> Isometry| {
            (0..trials).fold(0.0_f64, |acc, _| {
                let g = make(&mut rng);
                acc.max(deviation(predict, frames, previous, &g))
            })
        };
        Self {
            rotation_37_x,
            random_rotations: worst(&mut |rng| Isometry::linear(rotation::random_rotation(rng))),
            random_reflections: worst(&mut |rng| Isometry::linear(rotation::random_reflection(rng))),
            random_translations: worst(&mut |rng| {
                Isometry::translation(std::array::from_fn(|_| 5.0 * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, rng)))
            }),
        }
    }
}

/// max |f(g·x) − g·f(x)| over all frames, g moving each whole window.
fn deviation(predict: &mut DxPredictor, frames: ArrayView3<f32>, previous: ArrayView4<f32>, g: &Isometry) -> f64 {
    let mut on_arrays = |x: &[ArrayD<f32>]| {
        let frames = x[0].view().into_dimensionality::<Ix3>().expect("frames [batch, 12, 3]");
        let previous = x[1].view().into_dimensionality::<Ix4>().expect("previous [batch, K − 1, 12, 3]");
        predict(frames, previous).into_dyn()
    };
    equivariance_deviation(&mut on_arrays, &[frames.to_owned().into_dyn(), previous.to_owned().into_dyn()], g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r2_matches_its_definition() {
        let truth = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(r2(&truth, &truth), 1.0);
        // Predicting the mean explains nothing.
        assert!(r2(&truth, &[2.5; 4]).abs() < 1e-12);
        // sklearn: r2_score([1,2,3,4], [1,2,3,5]) = 1 - 1/5.
        assert!((r2(&truth, &[1.0, 2.0, 3.0, 5.0]) - 0.8).abs() < 1e-12);
    }

    #[test]
    fn equivariance_report_separates_equivariant_from_not() {
        let frames = Array3::from_shape_fn((3, PARTICLES, DIMS), |(f, p, d)| (f + 2 * p + 3 * d) as f32 * 0.1);
        // dx = x − centroid is E(3)-equivariant.
        let none = Array4::zeros((3, 0, PARTICLES, DIMS));
        let mut centred = |x: ArrayView3<f32>, _: ArrayView4<f32>| {
            let centroid = x.mean_axis(Axis(1)).expect("particles");
            &x - &centroid.insert_axis(Axis(1))
        };
        let report = EquivarianceReport::measure(&mut centred, frames.view(), none.view(), 4, 1);
        assert!(report.max() < 1e-4, "{report:?}");
        // dx = x is rotation-equivariant but changes under translation.
        let mut identity = |x: ArrayView3<f32>, _: ArrayView4<f32>| x.to_owned();
        let report = EquivarianceReport::measure(&mut identity, frames.view(), none.view(), 4, 1);
        assert!(report.rotation_37_x < 1e-5 && report.random_reflections < 1e-4);
        assert!(report.random_translations > 0.1, "{report:?}");
        // dx = (x², 0, 0) is not rotation-equivariant.
        let mut square = |x: ArrayView3<f32>, _: ArrayView4<f32>| x.mapv(|v| v * v);
        let report = EquivarianceReport::measure(&mut square, frames.view(), none.view(), 4, 1);
        assert!(report.rotation_37_x > 0.01 && report.random_rotations > 0.01, "{report:?}");
    }

    #[test]
    fn study_r2_is_perfect_for_perfect_predictions() {
        let truth = Array3::from_shape_fn((10, PARTICLES, DIMS), |(f, p, d)| ((f * 7 + p * 3 + d) % 11) as f32);
        let r = StudyR2::new(truth.view(), truth.view());
        assert_eq!([r.cm, r.p1_cm, r.p7_x, r.p12_y], [1.0; 4]);
    }
}
