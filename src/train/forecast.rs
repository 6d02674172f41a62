//! Does a model predict the motion? One-step dx error and rollout error over many
//! steps, for the model and for guesses that need no training (nothing moves, the last
//! displacement again, second-order extrapolation, and a linear filter of the last three
//! displacements fitted on the training pairs), all on the same frames in the same run.
//!
//! R² of next positions hides what matters here: x(t+1) ≈ x(t), so predicting no
//! motion scores R² ≈ 1. The skill below compares with exactly that guess.

use ndarray::{Array1, Array2, Array3, Array4, ArrayView3, ArrayView4, Axis, s};

pub use crate::card::{ForecastReport, ForecastRow};
use crate::data::{Trajectory, advance_window};

/// Rollout horizons reported in tables (the curves keep every step up to the last).
pub const REPORTED_HORIZONS: [usize; 4] = [1, 10, 50, 100];
/// Rollouts start from this many frames spread over the test part.
pub const ROLLOUT_STARTS: usize = 20;
/// Frames the linear baseline reads: three past displacements.
const LINEAR_HISTORY: usize = 4;

/// A one-step predictor of dx from a window of frames.
pub trait Forecaster {
    fn name(&self) -> String;
    /// Frames it reads (K ≥ 1): frame t and the K − 1 before it.
    fn history_frames(&self) -> usize;
    /// dx [B, 12, 3] for positions [B, 12, 3] and previous [B, K − 1, 12, 3] (oldest first).
    fn dx(&mut self, positions: ArrayView3<f32>, previous: ArrayView4<f32>) -> Array3<f32>;
}

/// The displacements a window holds, newest first: [B, K − 1, 12, 3] with entry k − 1
/// = x(t−k+1) − x(t−k).
fn displacements(positions: ArrayView3<f32>, previous: ArrayView4<f32>) -> Array4<f32> {
    let held = previous.dim().1;
    let mut out = Array4::zeros(previous.raw_dim());
    for k in 0..held {
        let newer = if k == 0 { positions } else { previous.index_axis(Axis(1), held - k) };
        let older = previous.index_axis(Axis(1), held - k - 1);
        out.index_axis_mut(Axis(1), k).assign(&(&newer - &older));
    }
    out
}

/// dx(t) = Σ_k c_k · dx(t − k), k = 1..coefficients.len(): nothing moves (no
/// coefficients), persistence ([1]), second-order extrapolation ([2, −1]), or a fitted filter.
pub struct LinearFilter {
    pub name: String,
    pub coefficients: Vec<f64>,
}

impl LinearFilter {
    pub fn zero() -> Self {
        Self { name: "zero: nothing moves".into(), coefficients: Vec::new() }
    }

    pub fn persistence() -> Self {
        Self { name: "persistence: dx(t) = dx(t−1)".into(), coefficients: vec![1.0] }
    }

    pub fn second_order() -> Self {
        Self { name: "2nd-order: dx(t) = 2dx(t−1) − dx(t−2)".into(), coefficients: vec![2.0, -1.0] }
    }

    /// Least squares of dx(t) on dx(t−1..t−3) over the training pairs of every
    /// trajectory, one set of three coefficients for every particle and coordinate.
    pub fn fitted(data: &[Segment]) -> Self {
        let coefficients = Self::least_squares(data, LINEAR_HISTORY - 1);
        let name = format!(
            "linear-3: dx(t) = {:.3}dx(t−1) {:+.3}dx(t−2) {:+.3}dx(t−3), fitted",
            coefficients[0], coefficients[1], coefficients[2]
        );
        Self { name, coefficients }
    }

    /// The least-squares coefficients of dx(t) on dx(t−1..t−order) over the training
    /// pairs of every trajectory.
    pub fn least_squares(data: &[Segment], order: usize) -> Vec<f64> {
        let mut gram = Array2::<f64>::zeros((order, order));
        let mut rhs = Array1::<f64>::zeros(order);
        for segment in data {
            let x = segment.trajectory.positions();
            let dx = |t: usize| (&x.index_axis(Axis(0), t + 1) - &x.index_axis(Axis(0), t)).mapv(f64::from);
            for t in order..segment.train_pairs {
                let past: Vec<_> = (1..=order).map(|k| dx(t - k)).collect();
                let now = dx(t);
                for i in 0..order {
                    rhs[i] += (&past[i] * &now).sum();
                    for j in 0..order {
                        gram[[i, j]] += (&past[i] * &past[j]).sum();
                    }
                }
            }
        }
        solve(gram, rhs)
    }
}

/// Solves the small symmetric system by Gaussian elimination with partial pivoting;
/// a singular system (no motion to fit) gives zeros.
fn solve(mut a: Array2<f64>, mut b: Array1<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[[i, col]].abs().total_cmp(&a[[j, col]].abs())).expect("rows");
        if a[[pivot, col]].abs() < 1e-300 {
            return vec![0.0; n];
        }
        for k in 0..n {
            a.swap([col, k], [pivot, k]);
        }
        b.swap(col, pivot);
        for row in col + 1..n {
            let factor = a[[row, col]] / a[[col, col]];
            for k in col..n {
                a[[row, k]] -= factor * a[[col, k]];
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[[row, k]] * x[k]).sum();
        x[row] = (b[row] - tail) / a[[row, row]];
    }
    x
}

impl Forecaster for LinearFilter {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn history_frames(&self) -> usize {
        self.coefficients.len() + 1
    }

    fn dx(&mut self, positions: ArrayView3<f32>, previous: ArrayView4<f32>) -> Array3<f32> {
        let past = displacements(positions, previous);
        let mut out = Array3::<f32>::zeros(positions.raw_dim());
        for (k, c) in self.coefficients.iter().enumerate() {
            out.scaled_add(*c as f32, &past.index_axis(Axis(1), k));
        }
        out
    }
}

/// A model's own dx, through any function of the window.
pub struct ModelForecaster<F> {
    pub name: String,
    pub history_frames: usize,
    pub predict: F,
}

impl<F: FnMut(ArrayView3<f32>, ArrayView4<f32>) -> Array3<f32>> Forecaster for ModelForecaster<F> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn history_frames(&self) -> usize {
        self.history_frames
    }

    fn dx(&mut self, positions: ArrayView3<f32>, previous: ArrayView4<f32>) -> Array3<f32> {
        (self.predict)(positions, previous)
    }
}

/// Positions [B, 12, 3] after each of `steps` steps of x ← x + dx(window) from
/// `positions` and the frames before them, `previous` [B, K − 1, 12, 3].
pub(crate) fn rollout(
    mut positions: Array3<f32>,
    mut previous: Array4<f32>,
    steps: usize,
    mut dx: impl FnMut(ArrayView3<f32>, ArrayView4<f32>) -> Array3<f32>,
) -> Vec<Array3<f32>> {
    let mut frames = Vec::with_capacity(steps);
    for _ in 0..steps {
        let next = &positions + &dx(positions.view(), previous.view());
        previous = advance_window(&previous, positions.view());
        positions = next;
        frames.push(positions.clone());
    }
    frames
}

/// The four baselines, the linear filter fitted on the training pairs.
pub fn baselines(data: &[Segment]) -> Vec<LinearFilter> {
    vec![LinearFilter::zero(), LinearFilter::persistence(), LinearFilter::second_order(), LinearFilter::fitted(data)]
}

/// One trajectory, split after its first `train_pairs` pairs.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub trajectory: &'a Trajectory,
    pub train_pairs: usize,
}

/// A trajectory's test pairs and rollout starts.
#[derive(Debug, Clone)]
struct TestPart<'a> {
    trajectory: &'a Trajectory,
    /// Frame indices t of the test pairs (x(t) → x(t+1)).
    test: std::ops::Range<usize>,
    starts: Vec<usize>,
}

/// The test parts of one or more trajectories: every forecaster is scored on the same
/// frames, the errors pooled over all of them.
#[derive(Debug, Clone)]
pub struct ForecastFrames<'a> {
    parts: Vec<TestPart<'a>>,
    train: Vec<Segment<'a>>,
    steps: usize,
}

impl<'a> ForecastFrames<'a> {
    /// Test pairs of each trajectory from its `train_pairs` on (the study's split), every
    /// forecaster given up to `max_history` frames; rollouts of up to 100 steps (at most
    /// half of the shortest test part, so that the starts spread) from at least 20 frames
    /// spread over the test parts (as many from each trajectory).
    pub fn new(data: &[Segment<'a>], max_history: usize) -> Self {
        let first_of = |segment: &Segment| segment.train_pairs.max(max_history.max(LINEAR_HISTORY) - 1);
        let steps = data
            .iter()
            .map(|segment| segment.trajectory.frames().saturating_sub(1 + first_of(segment)) / 2)
            .min()
            .unwrap_or(0)
            .min(REPORTED_HORIZONS[REPORTED_HORIZONS.len() - 1])
            .max(1);
        let per_part = ROLLOUT_STARTS.div_ceil(data.len().max(1));
        let parts = data
            .iter()
            .map(|segment| {
                let (first, frames) = (first_of(segment), segment.trajectory.frames());
                let last_start = (frames - 1 - steps).max(first);
                let count = per_part.min(last_start - first + 1);
                let starts = (0..count).map(|i| if count == 1 { first } else { first + i * (last_start - first) / (count - 1) }).collect();
                TestPart { trajectory: segment.trajectory, test: first..frames - 1, starts }
            })
            .collect();
        Self { parts, train: data.to_vec(), steps }
    }

    /// positions [N, 12, 3] and previous [N, k − 1, 12, 3] for frames `ts` of `part`.
    fn windows(part: &TestPart, ts: &[usize], history_frames: usize) -> (Array3<f32>, Array4<f32>) {
        let x = part.trajectory.positions();
        let positions = x.select(Axis(0), ts);
        let held = history_frames - 1;
        let mut previous = Array4::zeros((ts.len(), held, x.dim().1, x.dim().2));
        for (row, &t) in ts.iter().enumerate() {
            previous.index_axis_mut(Axis(0), row).assign(&x.slice(s![t - held..t, .., ..]));
        }
        (positions, previous)
    }

    /// One-step MSE of dx on the test pairs, and rollout RMSE of positions after every
    /// step, pooled over the start frames as a root mean square.
    pub fn evaluate(&self, forecaster: &mut dyn Forecaster, zero_mse: f64) -> ForecastRow {
        let history_frames = forecaster.history_frames();
        let (mut squared, mut count) = (0.0, 0usize);
        let mut rollout_squared = vec![0.0; self.steps];
        let mut rollout_count = 0usize;
        for part in &self.parts {
            let x = part.trajectory.positions();
            let ts: Vec<usize> = part.test.clone().collect();
            for chunk in ts.chunks(256) {
                let (positions, previous) = Self::windows(part, chunk, history_frames);
                let dx = forecaster.dx(positions.view(), previous.view());
                let next = x.select(Axis(0), &chunk.iter().map(|t| t + 1).collect::<Vec<_>>());
                squared += (&(&positions + &dx) - &next).iter().map(|e| f64::from(*e).powi(2)).sum::<f64>();
                count += positions.len();
            }
            for (i, positions) in Self::roll(part, forecaster, &part.starts, self.steps).iter().enumerate() {
                let truth = x.select(Axis(0), &part.starts.iter().map(|s| s + i + 1).collect::<Vec<_>>());
                rollout_squared[i] += (positions - &truth).iter().map(|e| f64::from(*e).powi(2)).sum::<f64>();
            }
            rollout_count += part.starts.len() * x.dim().1 * x.dim().2;
        }
        let dx_mse = squared / count as f64;
        let rollout_rmse = rollout_squared
            .iter()
            .map(|sum| {
                let mean_square = sum / rollout_count as f64;
                if mean_square.is_finite() { mean_square.sqrt() } else { f64::INFINITY }
            })
            .collect();
        ForecastRow { name: forecaster.name(), history_frames, dx_mse, skill: 1.0 - dx_mse / zero_mse, rollout_rmse }
    }

    /// Positions [starts, 12, 3] after each of `steps` steps of rollouts from the true
    /// windows at `starts`.
    fn roll(part: &TestPart, forecaster: &mut dyn Forecaster, starts: &[usize], steps: usize) -> Vec<Array3<f32>> {
        let (positions, previous) = Self::windows(part, starts, forecaster.history_frames());
        rollout(positions, previous, steps, |x, p| forecaster.dx(x, p))
    }

    /// The true and the predicted frames [12, 3] after each step of a rollout from the
    /// first start frame of the first trajectory.
    pub fn first_rollout(&self, forecaster: &mut dyn Forecaster) -> (Vec<Array2<f32>>, Vec<Array2<f32>>) {
        let part = &self.parts[0];
        let start = part.starts[0];
        let x = part.trajectory.positions();
        let truth = (1..=self.steps).map(|step| x.index_axis(Axis(0), start + step).to_owned()).collect();
        let predicted = Self::roll(part, forecaster, &[start], self.steps).into_iter().map(|frame| frame.index_axis_move(Axis(0), 0)).collect();
        (truth, predicted)
    }

    /// Every baseline, then `models`, on the same frames.
    pub fn report(&self, models: &mut [&mut dyn Forecaster]) -> ForecastReport {
        let mut zero = LinearFilter::zero();
        let zero_mse = self.evaluate(&mut zero, 1.0).dx_mse;
        let mut rows: Vec<ForecastRow> = baselines(&self.train).into_iter().map(|mut b| self.evaluate(&mut b, zero_mse)).collect();
        let baseline_rows = rows.len();
        rows.extend(models.iter_mut().map(|m| self.evaluate(&mut **m, zero_mse)));
        ForecastReport {
            test_pairs: self.parts.iter().map(|p| p.test.len()).sum(),
            first_test_frame: self.parts[0].test.start,
            rollout_starts: self.parts.iter().flat_map(|p| p.starts.iter().copied()).collect(),
            baselines: rows.drain(..baseline_rows).collect(),
            models: rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DIMS, PARTICLES};

    /// Particles moving with constant acceleration: the 2nd-order guess is exact and
    /// the fitted filter finds it.
    fn accelerating(frames: usize) -> Trajectory {
        Trajectory::new(Array3::from_shape_fn((frames, PARTICLES, DIMS), |(t, p, d)| {
            let t = t as f32 * 0.01;
            (p + d) as f32 * 0.1 + 0.3 * t + 0.5 * (0.2 + 0.01 * p as f32) * t * t
        }))
        .expect("finite")
    }

    #[test]
    fn baselines_rank_as_physics_says_on_accelerating_particles() {
        let trajectory = accelerating(500);
        let frames = ForecastFrames::new(&[Segment { trajectory: &trajectory, train_pairs: 200 }], 4);
        let report = frames.report(&mut []);
        let [zero, persistence, second, linear] = &report.baselines[..] else { panic!("four baselines") };
        assert_eq!(zero.skill, 0.0);
        assert!(persistence.skill > 0.99 && persistence.skill < 1.0, "{persistence:?}");
        // Exact but for float32 rounding of the positions.
        assert!(second.dx_mse < 1e-7 * zero.dx_mse, "{second:?}");
        assert!(linear.dx_mse < 1e-6 * zero.dx_mse, "{linear:?}");
        assert!(second.rollout_rmse[49] < 1e-2 * zero.rollout_rmse[49], "{second:?} vs {zero:?}");
        assert_eq!(report.rollout_starts.len(), ROLLOUT_STARTS);
        assert_eq!((report.rollout_starts[0], report.rollout_starts[ROLLOUT_STARTS - 1]), (200, 500 - 1 - 100));
        assert_eq!(zero.rollout_rmse.len(), 100);
    }

    #[test]
    fn a_fitted_filter_recovers_its_coefficients() {
        // dx(t) = 1.5 dx(t−1) − 0.7 dx(t−2) + 0.1 dx(t−3) (a stable recursion), from
        // three arbitrary displacements.
        let mut dx: Vec<Array2<f32>> =
            (0..3).map(|k| Array2::from_shape_fn((PARTICLES, DIMS), |(p, c)| ((p * 3 + c + 7 * k) as f32 * 1.3).sin() * 0.01)).collect();
        while dx.len() < 399 {
            let n = dx.len();
            let now = &dx[n - 1] * 1.5 - &dx[n - 2] * 0.7 + &dx[n - 3] * 0.1;
            dx.push(now);
        }
        let mut x = Array3::<f32>::zeros((400, PARTICLES, DIMS));
        for (t, step) in dx.iter().enumerate() {
            let next = &x.index_axis(Axis(0), t) + step;
            x.index_axis_mut(Axis(0), t + 1).assign(&next);
        }
        let trajectory = Trajectory::new(x).expect("finite");
        let fitted = LinearFilter::fitted(&[Segment { trajectory: &trajectory, train_pairs: 300 }]);
        for (c, expected) in fitted.coefficients.iter().zip([1.5, -0.7, 0.1]) {
            assert!((c - expected).abs() < 1e-3, "{:?}", fitted.coefficients);
        }
    }
}
