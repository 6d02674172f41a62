//! Does a model predict the motion? One-step dx error and rollout error over many
//! steps, for the model and for guesses that need no training (nothing moves, the last
//! displacement again, second-order extrapolation, and a linear filter of the last three
//! displacements fitted on the training pairs), all on the same frames in the same run.
//!
//! R² of next positions hides what matters here: x(t+1) ≈ x(t), so predicting no
//! motion scores R² ≈ 1. The skill below compares with exactly that guess.

use ndarray::{Array1, Array2, Array3, Array4, ArrayView2, ArrayView3, ArrayView4, Axis, s};

pub use crate::card::{EnsembleScore, ForecastReport, ForecastRow, Halves, LongRolloutRatios, LongRolloutStats, SampledReport, SampledRow};
use crate::data::{
    DIMS, PARTICLES, Trajectory, advance_window, chain_modes, radius_of_gyration,
    sampling::{KickShape, Kicks, add_noise_to_batch, spanned_dims},
    windows_before,
};

/// Rollout horizons reported in tables (the curves keep every step up to the last).
pub const REPORTED_HORIZONS: [usize; 4] = [1, 10, 50, 100];
/// Rollouts start from this many frames spread over the test part.
pub const ROLLOUT_STARTS: usize = 20;
/// Frames the linear baseline reads: three past displacements.
const LINEAR_HISTORY: usize = 4;
/// Steps of the long sampled rollouts (`train-export --long-steps` changes it).
pub const LONG_ROLLOUT_STEPS: usize = 10_000;
/// Long rollouts start from this many frames spread over the test part.
pub const LONG_ROLLOUT_STARTS: usize = 16;
/// The first quarter of a long rollout is its way from the start into the model's own
/// statistics, left out of them.
const LONG_ROLLOUT_SKIPPED_SHARE: f64 = 0.25;
/// A rollout whose largest pair distance passes this many times the data's flew apart.
const FLEW_APART_EXTENT: f64 = 3.0;
/// Ensemble members drawn from each rollout start, and the horizons they are scored at.
pub const ENSEMBLE_MEMBERS: usize = 32;
pub const ENSEMBLE_HORIZONS: [usize; 3] = [10, 50, 100];
const SAMPLING_SEED: u64 = 0;
/// Pair-distance histograms' bins.
const HISTOGRAM_BINS: usize = 60;
/// Where along a long rollout its chain is drawn (shares of its steps).
const CHAIN_SNAPSHOTS: [f64; 4] = [0.01, 0.1, 0.5, 1.0];
pub(crate) const PAIRS: usize = PARTICLES * (PARTICLES - 1) / 2;

/// A one-step predictor of dx from a window of frames.
pub trait Forecaster {
    fn name(&self) -> String;
    /// Frames it reads (K ≥ 1): frame t and the K − 1 before it.
    fn history_frames(&self) -> usize;
    /// dx [B, 12, 3] for positions [B, 12, 3] and previous [B, K − 1, 12, 3] (oldest first).
    fn dx(&mut self, positions: ArrayView3<f32>, previous: ArrayView4<f32>) -> Array3<f32>;
    /// dx and, for a stochastic forecaster, dx_std [B, 12].
    fn dx_and_std(&mut self, positions: ArrayView3<f32>, previous: ArrayView4<f32>) -> (Array3<f32>, Option<Array2<f32>>) {
        (self.dx(positions, previous), None)
    }
    /// How its samples' kicks are correlated along the chain and in time (none: white).
    fn kick_shape(&self) -> Option<KickShape> {
        None
    }
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
    /// Per particle, the standard deviation of Gaussian noise on each step (none: deterministic).
    pub noise: Option<Vec<f32>>,
}

impl LinearFilter {
    pub fn zero() -> Self {
        Self { name: "zero: nothing moves".into(), coefficients: Vec::new(), noise: None }
    }

    pub fn persistence() -> Self {
        Self { name: "persistence: dx(t) = dx(t−1)".into(), coefficients: vec![1.0], noise: None }
    }

    pub fn second_order() -> Self {
        Self { name: "2nd-order: dx(t) = 2dx(t−1) − dx(t−2)".into(), coefficients: vec![2.0, -1.0], noise: None }
    }

    /// Least squares of dx(t) on dx(t−1..t−3) over the training pairs of every
    /// trajectory, one set of three coefficients for every particle and coordinate.
    pub fn fitted(data: &[Segment]) -> Self {
        let coefficients = Self::least_squares(data, LINEAR_HISTORY - 1);
        let name = format!("linear-3: dx(t) = {:.3}dx(t−1) {:+.3}dx(t−2) {:+.3}dx(t−3), fitted", coefficients[0], coefficients[1], coefficients[2]);
        Self { name, coefficients, noise: None }
    }

    /// The fitted filter with Gaussian noise of its residual's standard deviation per
    /// particle on the training pairs (over the coordinates the data spans).
    pub fn fitted_with_noise(data: &[Segment]) -> Self {
        let fitted = Self::fitted(data);
        let order = fitted.coefficients.len();
        let (mut squared, mut count) = (vec![0.0_f64; PARTICLES], 0usize);
        let mut dims = 1;
        for segment in data {
            let x = segment.trajectory.positions();
            dims = dims.max(spanned_dims(x.slice(s![..segment.train_pairs.min(x.dim().0), .., ..])));
            let dx = |t: usize| &x.index_axis(Axis(0), t + 1) - &x.index_axis(Axis(0), t);
            for t in order..segment.train_pairs {
                let mut residual = dx(t);
                for (k, c) in fitted.coefficients.iter().enumerate() {
                    residual.scaled_add(-*c as f32, &dx(t - k - 1));
                }
                for (p, row) in residual.outer_iter().enumerate() {
                    squared[p] += row.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
                }
                count += 1;
            }
        }
        let noise = squared.iter().map(|s| (s / (dims * count.max(1)) as f64).sqrt() as f32).collect();
        Self { name: "linear-3 + noise of its residual".into(), noise: Some(noise), ..fitted }
    }

    /// The least-squares coefficients of dx(t) on dx(t−1..t−order) over the training
    /// pairs of every trajectory.
    pub fn least_squares(data: &[Segment], order: usize) -> Vec<f64> {
        Self::least_squares_of(data, order, |dx| dx)
    }

    /// The same for each chain mode's displacement ([`chain_modes`], m = 0 the centroid):
    /// the centroid and the slow bends keep their velocity far longer than the fast
    /// modes, which the bonds turn around.
    pub fn chain_mode_least_squares(data: &[Segment], order: usize) -> Vec<Vec<f64>> {
        chain_modes()
            .iter()
            .map(|mode| {
                let mode = Array2::from_shape_vec((1, PARTICLES), mode.to_vec()).expect("12 particles");
                Self::least_squares_of(data, order, |dx| mode.dot(&dx))
            })
            .collect()
    }

    /// Least squares of `of(dx(t))` on `of(dx(t−1..t−order))`.
    fn least_squares_of(data: &[Segment], order: usize, of: impl Fn(Array2<f64>) -> Array2<f64>) -> Vec<f64> {
        let mut gram = Array2::<f64>::zeros((order, order));
        let mut rhs = Array1::<f64>::zeros(order);
        for segment in data {
            let x = segment.trajectory.positions();
            let dx = |t: usize| of((&x.index_axis(Axis(0), t + 1) - &x.index_axis(Axis(0), t)).mapv(f64::from));
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

    fn dx_and_std(&mut self, positions: ArrayView3<f32>, previous: ArrayView4<f32>) -> (Array3<f32>, Option<Array2<f32>>) {
        let std = self.noise.as_ref().map(|noise| Array2::from_shape_fn((positions.dim().0, PARTICLES), |(_, p)| noise[p]));
        (self.dx(positions, previous), std)
    }
}

/// A stochastic model's dx and dx_std, through any function of the window.
pub struct StochasticForecaster<F> {
    pub name: String,
    pub history_frames: usize,
    pub predict: F,
    pub kick_shape: Option<KickShape>,
}

impl<F: FnMut(ArrayView3<f32>, ArrayView4<f32>) -> (Array3<f32>, Option<Array2<f32>>)> Forecaster for StochasticForecaster<F> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn history_frames(&self) -> usize {
        self.history_frames
    }

    fn dx(&mut self, positions: ArrayView3<f32>, previous: ArrayView4<f32>) -> Array3<f32> {
        (self.predict)(positions, previous).0
    }

    fn dx_and_std(&mut self, positions: ArrayView3<f32>, previous: ArrayView4<f32>) -> (Array3<f32>, Option<Array2<f32>>) {
        (self.predict)(positions, previous)
    }

    fn kick_shape(&self) -> Option<KickShape> {
        self.kick_shape
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
        advance_window(&mut previous, positions.view());
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
        (x.select(Axis(0), ts), windows_before(x.view(), ts.iter().copied(), history_frames - 1))
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
            sampled: None,
        }
    }

    /// Long rollouts (`long_steps` steps from [`LONG_ROLLOUT_STARTS`] frames spread over the
    /// test parts) and ensembles ([`ENSEMBLE_MEMBERS`] members from each rollout start,
    /// scored at [`ENSEMBLE_HORIZONS`] within reach) of linear-3 alone, linear-3 with its
    /// residual's noise, and each model's mean, then each stochastic model sampled; the
    /// same starts and noise keys for all.
    /// Also gives what its figures draw.
    pub fn sampled_report(&self, models: &mut [&mut dyn Forecaster], long_steps: usize) -> (SampledReport, SampledFigures) {
        let reference = DataStatistics::new(&self.parts);
        let long_starts: Vec<(usize, usize)> = spread_starts(&self.parts, LONG_ROLLOUT_STARTS);
        let horizons: Vec<usize> = ENSEMBLE_HORIZONS.iter().copied().filter(|&h| h <= self.steps).collect();
        let mut figures = SampledFigures {
            bin_edges: reference.bin_edges(),
            data_density: reference.density(&reference.pairs.sorted.iter().flatten().copied().collect::<Vec<_>>()),
            densities: Vec::new(),
            chain: None,
        };
        let mut rows = Vec::new();
        let mut score = |forecaster: &mut dyn Forecaster, sampled: bool| {
            let name = if sampled { format!("{}, sampled", forecaster.name()) } else { forecaster.name() };
            let (long, density, chain) = self.long_rollouts(forecaster, &long_starts, long_steps, sampled, &reference);
            let ensemble = self.ensembles(forecaster, &horizons, sampled);
            figures.densities.push((name.clone(), density));
            if sampled {
                figures.chain = Some(chain);
            }
            rows.push(SampledRow { name, sampled, long, ensemble });
        };
        score(&mut LinearFilter::fitted(&self.train), false);
        score(&mut LinearFilter::fitted_with_noise(&self.train), true);
        for model in models.iter_mut() {
            score(&mut **model, false);
            let probe = Self::windows(&self.parts[0], &self.parts[0].starts[..1], model.history_frames());
            if model.dx_and_std(probe.0.view(), probe.1.view()).1.is_some() {
                score(&mut **model, true);
            }
        }
        let report = SampledReport {
            long_steps,
            long_starts: long_starts.iter().map(|&(_, t)| t).collect(),
            skipped_share: LONG_ROLLOUT_SKIPPED_SHARE,
            members: ENSEMBLE_MEMBERS,
            horizons,
            seed: SAMPLING_SEED,
            data_rg_halves: Some(reference.halves_radius_of_gyration.map(|rg| rg / reference.radius_of_gyration)),
            rows,
        };
        (report, figures)
    }

    /// Statistics of `long_steps`-step rollouts from `starts` (part, frame) beside the data's.
    /// Also the density of every pair distance over the rollouts' kept frames (on the
    /// reference's bins) and the first rollout's frames at [`CHAIN_SNAPSHOTS`] of its way.
    fn long_rollouts(
        &self,
        forecaster: &mut dyn Forecaster,
        starts: &[(usize, usize)],
        long_steps: usize,
        sampled: bool,
        reference: &DataStatistics,
    ) -> LongRollouts {
        let snapshot_steps: Vec<usize> = CHAIN_SNAPSHOTS.iter().map(|share| ((share * long_steps as f64) as usize).clamp(1, long_steps)).collect();
        let mut chain = Vec::new();
        let history_frames = forecaster.history_frames();
        let (mut positions, mut previous) = self.start_windows(starts, history_frames);
        let skipped = (long_steps as f64 * LONG_ROLLOUT_SKIPPED_SHARE) as usize;
        let members = starts.len();
        let mut alive = vec![true; members];
        let mut pair_distances: Vec<Vec<Vec<f32>>> = (0..members).map(|_| (0..PAIRS).map(|_| Vec::with_capacity(long_steps - skipped)).collect()).collect();
        let (mut step_squared, mut rg_sum, mut kept) = (vec![0.0_f64; members], vec![0.0_f64; members], vec![0usize; members]);
        let mut kicks = Kicks::new(forecaster.kick_shape().as_ref());
        for step in 0..long_steps {
            let next = self.step(forecaster, &positions, &previous, sampled.then_some(&mut kicks), 0, step);
            for member in 0..members {
                if !alive[member] {
                    continue;
                }
                let frame = next.index_axis(Axis(0), member);
                let distances = pair_distances_of(frame);
                let extent = distances.iter().fold(0.0_f32, |m, d| if d.is_finite() && m.is_finite() { m.max(*d) } else { f32::NAN });
                if !extent.is_finite() || f64::from(extent) > FLEW_APART_EXTENT * reference.largest_distance {
                    alive[member] = false;
                    continue;
                }
                if step >= skipped {
                    let moved = &frame - &positions.index_axis(Axis(0), member);
                    step_squared[member] += moved.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / PARTICLES as f64;
                    rg_sum[member] += radius_of_gyration(frame);
                    kept[member] += 1;
                    for (pair, distance) in distances.into_iter().enumerate() {
                        pair_distances[member][pair].push(distance);
                    }
                }
            }
            if snapshot_steps.contains(&(step + 1)) && alive[0] {
                chain.push((step + 1, next.index_axis(Axis(0), 0).to_owned()));
            }
            // A member that flew apart keeps its last sound frame, so that it poisons nothing.
            let mut next = next;
            for member in (0..members).filter(|&m| !alive[m]) {
                next.index_axis_mut(Axis(0), member).assign(&positions.index_axis(Axis(0), member));
            }
            advance_window(&mut previous, positions.view());
            positions = next;
        }
        let survivors: Vec<usize> = (0..members).filter(|&m| alive[m] && kept[m] > 0).collect();
        let flew_apart = members - survivors.len();
        // The ratios over the frames `members` kept; NaN where none did.
        let ratios = |members: &[usize]| {
            let frames: usize = members.iter().map(|&m| kept[m]).sum();
            let motion = (members.iter().map(|&m| step_squared[m]).sum::<f64>() / frames as f64).sqrt();
            let rg = members.iter().map(|&m| rg_sum[m]).sum::<f64>() / frames as f64;
            let mut pooled: Vec<Vec<f32>> = (0..PAIRS).map(|pair| members.iter().flat_map(|&m| pair_distances[m][pair].iter().copied()).collect()).collect();
            LongRolloutRatios {
                motion_ratio: motion / reference.motion,
                pair_distance_w1_ratio: reference.pairs.w1_ratio(&mut pooled),
                rg_ratio: rg / reference.radius_of_gyration,
            }
        };
        let half = |parity: usize| survivors.iter().copied().filter(|m| m % 2 == parity).collect::<Vec<_>>();
        let stats = LongRolloutStats { flew_apart, ratios: ratios(&survivors), halves: Some([ratios(&half(0)), ratios(&half(1))]) };
        let pooled: Vec<f32> = survivors.iter().flat_map(|&m| pair_distances[m].iter().flatten().copied()).collect();
        let density = if survivors.is_empty() { vec![0.0; reference.bin_edges().len() - 1] } else { reference.density(&pooled) };
        (stats, density, chain)
    }

    /// Spread, CRPS and error of ensembles from every rollout start at `horizons`.
    fn ensembles(&self, forecaster: &mut dyn Forecaster, horizons: &[usize], sampled: bool) -> Vec<EnsembleScore> {
        let members = if sampled { ENSEMBLE_MEMBERS } else { 1 };
        let starts: Vec<(usize, usize)> = self.parts.iter().enumerate().flat_map(|(i, part)| part.starts.iter().map(move |&t| (i, t))).collect();
        let copies: Vec<(usize, usize)> = starts.iter().flat_map(|&start| std::iter::repeat_n(start, members)).collect();
        let (mut positions, mut previous) = self.start_windows(&copies, forecaster.history_frames());
        let last = horizons.iter().copied().max().unwrap_or(0);
        let mut scores = Vec::new();
        let mut kicks = Kicks::new(forecaster.kick_shape().as_ref());
        for step in 0..last {
            let next = self.step(forecaster, &positions, &previous, sampled.then_some(&mut kicks), 1, step);
            advance_window(&mut previous, positions.view());
            positions = next;
            let horizon = step + 1;
            if !horizons.contains(&horizon) {
                continue;
            }
            // Summed over the even and the odd starts apart.
            let (mut squared_error, mut variance, mut crps, mut count) = ([0.0; 2], [0.0; 2], [0.0; 2], [0usize; 2]);
            for (s, &(part, t)) in starts.iter().enumerate() {
                let half = s % 2;
                let truth = self.parts[part].trajectory.positions().index_axis(Axis(0), t + horizon).to_owned();
                let ensemble = positions.slice(s![s * members..(s + 1) * members, .., ..]);
                for ((p, d), &observed) in truth.indexed_iter() {
                    let mut values: Vec<f64> = ensemble.index_axis(Axis(2), d).index_axis(Axis(1), p).iter().map(|v| f64::from(*v)).collect();
                    let observed = f64::from(observed);
                    let mean = values.iter().sum::<f64>() / members as f64;
                    squared_error[half] += (mean - observed).powi(2);
                    if members > 1 {
                        variance[half] += values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (members - 1) as f64;
                    }
                    crps[half] += fair_crps(&mut values, observed);
                    count[half] += 1;
                }
            }
            let spread_skill = |squared_error: f64, variance: f64, count: usize| (variance / count as f64).sqrt() / (squared_error / count as f64).sqrt();
            let total = count[0] + count[1];
            let rmse = ((squared_error[0] + squared_error[1]) / total as f64).sqrt();
            scores.push(EnsembleScore {
                horizon,
                spread_skill: spread_skill(squared_error[0] + squared_error[1], variance[0] + variance[1], total),
                crps: (crps[0] + crps[1]) / total as f64,
                rmse_of_mean: if rmse.is_finite() { rmse } else { f64::INFINITY },
                spread_skill_halves: Some(Halves {
                    even: spread_skill(squared_error[0], variance[0], count[0]),
                    odd: spread_skill(squared_error[1], variance[1], count[1]),
                }),
            });
        }
        scores
    }

    /// The true windows at `starts` (part, frame), stacked.
    fn start_windows(&self, starts: &[(usize, usize)], history_frames: usize) -> (Array3<f32>, Array4<f32>) {
        let mut positions = Array3::zeros((starts.len(), PARTICLES, DIMS));
        let mut previous = Array4::zeros((starts.len(), history_frames - 1, PARTICLES, DIMS));
        for (row, &(part, t)) in starts.iter().enumerate() {
            let (p, w) = Self::windows(&self.parts[part], &[t], history_frames);
            positions.index_axis_mut(Axis(0), row).assign(&p.index_axis(Axis(0), 0));
            previous.index_axis_mut(Axis(0), row).assign(&w.index_axis(Axis(0), 0));
        }
        (positions, previous)
    }

    /// One step of every member: x + dx, plus dx_std · ξ when given the rollout's `kicks`
    /// (ξ keyed by (seed, stream · 2³² + member, step), so that each evaluation draws its
    /// own noise).
    fn step(
        &self,
        forecaster: &mut dyn Forecaster,
        positions: &Array3<f32>,
        previous: &Array4<f32>,
        kicks: Option<&mut Kicks>,
        stream: u64,
        step: usize,
    ) -> Array3<f32> {
        let (dx, std) = forecaster.dx_and_std(positions.view(), previous.view());
        let mut next = positions + &dx;
        if let (Some(kicks), Some(std)) = (kicks, std) {
            add_noise_to_batch(next.view_mut(), positions.view(), std.view(), kicks, (SAMPLING_SEED, stream << 32, step as u64));
        }
        next
    }
}

/// Long rollouts' statistics, the density of their pair distances, and snapshots
/// (step, frame) of the first one.
type LongRollouts = (LongRolloutStats, Vec<f64>, Vec<(usize, Array2<f32>)>);

/// What long rollouts are compared with: the whole of every trajectory.
struct DataStatistics {
    /// RMS step per particle.
    motion: f64,
    radius_of_gyration: f64,
    largest_distance: f64,
    pairs: PairDistanceReference,
    /// The mean radius of gyration of the data's first and second halves.
    halves_radius_of_gyration: [f64; 2],
}

impl DataStatistics {
    fn new(parts: &[TestPart]) -> Self {
        let (mut step_squared, mut steps, mut rg, mut frames) = (0.0, 0usize, 0.0, 0usize);
        let (mut halves_rg, mut halves_frames) = ([0.0; 2], [0usize; 2]);
        for part in parts {
            let x = part.trajectory.positions();
            let half = x.dim().0 / 2;
            for (t, frame) in x.outer_iter().enumerate() {
                let size = radius_of_gyration(frame);
                rg += size;
                frames += 1;
                halves_rg[usize::from(t >= half)] += size;
                halves_frames[usize::from(t >= half)] += 1;
                if t > 0 {
                    let moved = &frame - &x.index_axis(Axis(0), t - 1);
                    step_squared += moved.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / PARTICLES as f64;
                    steps += 1;
                }
            }
        }
        let pairs = PairDistanceReference::new(parts.iter().flat_map(|part| {
            let x = part.trajectory.positions();
            let half = x.dim().0 / 2;
            x.outer_iter().enumerate().map(move |(t, frame)| (frame, t >= half))
        }));
        let largest_distance = pairs.sorted.iter().filter_map(|d| d.last()).fold(0.0_f32, |m, d| m.max(*d));
        Self {
            motion: (step_squared / steps.max(1) as f64).sqrt(),
            radius_of_gyration: rg / frames.max(1) as f64,
            largest_distance: f64::from(largest_distance),
            pairs,
            halves_radius_of_gyration: std::array::from_fn(|h| halves_rg[h] / halves_frames[h].max(1) as f64),
        }
    }
}

impl DataStatistics {
    /// Histogram bins of pair distances: 0 to 1.5× the data's largest.
    fn bin_edges(&self) -> Vec<f64> {
        (0..=HISTOGRAM_BINS).map(|i| 1.5 * self.largest_distance * i as f64 / HISTOGRAM_BINS as f64).collect()
    }

    /// The density of `distances` on [`bin_edges`](Self::bin_edges) (beyond the last bin: left out).
    fn density(&self, distances: &[f32]) -> Vec<f64> {
        let edges = self.bin_edges();
        let width = edges[1] - edges[0];
        let mut counts = vec![0.0; HISTOGRAM_BINS];
        for &d in distances {
            let bin = (f64::from(d) / width) as usize;
            if let Some(count) = counts.get_mut(bin) {
                *count += 1.0;
            }
        }
        let total = distances.len().max(1) as f64 * width;
        counts.iter().map(|c| c / total).collect()
    }
}

/// Every pair's distances in data, and how far the data's two halves are from each
/// other: what sampled chains' pair distances are measured against.
pub(crate) struct PairDistanceReference {
    /// Per pair (i < j), every frame's distance, sorted.
    sorted: Vec<Vec<f32>>,
    /// Mean over pairs of W1 between the first and second halves of the data.
    self_w1: f64,
}

impl PairDistanceReference {
    /// From frames [12, 3], each with whether it lies in the second half of its data.
    pub(crate) fn new<'a>(frames: impl IntoIterator<Item = (ArrayView2<'a, f32>, bool)>) -> Self {
        let mut halves = [vec![Vec::new(); PAIRS], vec![Vec::new(); PAIRS]];
        for (frame, second) in frames {
            for (pair, distance) in pair_distances_of(frame).into_iter().enumerate() {
                halves[usize::from(second)][pair].push(distance);
            }
        }
        let [mut first, mut second] = halves;
        second.iter_mut().for_each(|d| d.sort_by(f32::total_cmp));
        let self_w1 = first.iter_mut().zip(&second).map(|(a, b)| wasserstein1(a, b)).sum::<f64>() / PAIRS as f64;
        let sorted = first
            .into_iter()
            .zip(second)
            .map(|(mut a, b)| {
                a.extend(b);
                a.sort_by(f32::total_cmp);
                a
            })
            .collect();
        Self { sorted, self_w1 }
    }

    /// The mean over pairs of W1 between `samples` (per pair; sorted here) and the data,
    /// over the same between the data's halves (1: as close to the data as it is to
    /// itself); NaN where a pair has no sample.
    pub(crate) fn w1_ratio(&self, samples: &mut [Vec<f32>]) -> f64 {
        let w1 = samples.iter_mut().zip(&self.sorted).map(|(s, d)| wasserstein1(s, d)).sum::<f64>() / PAIRS as f64;
        w1 / self.self_w1
    }
}

/// What the sampled report's figures draw: pair-distance densities and a sampled chain.
#[derive(Debug, Clone)]
pub struct SampledFigures {
    pub bin_edges: Vec<f64>,
    pub data_density: Vec<f64>,
    /// Per row of the report, in its order.
    pub densities: Vec<(String, Vec<f64>)>,
    /// The last sampled row's first long rollout: (step, frame [12, 3]).
    pub chain: Option<Vec<(usize, Array2<f32>)>>,
}

/// `count` (part, frame) starts spread evenly over the test parts (as many from each).
fn spread_starts(parts: &[TestPart], count: usize) -> Vec<(usize, usize)> {
    let per_part = count.div_ceil(parts.len().max(1));
    parts
        .iter()
        .enumerate()
        .flat_map(|(i, part)| {
            let (first, last) = (part.test.start, part.test.end.saturating_sub(1).max(part.test.start));
            let n = per_part.min(last - first + 1);
            (0..n).map(move |k| (i, if n == 1 { first } else { first + k * (last - first) / (n - 1) }))
        })
        .take(count)
        .collect()
}

/// The 66 distances of a frame's pairs (i < j), in `PairDistanceReference`'s order.
pub(crate) fn pair_distances_of(frame: ArrayView2<f32>) -> Vec<f32> {
    let mut out = Vec::with_capacity(PAIRS);
    for i in 0..PARTICLES {
        for j in i + 1..PARTICLES {
            let squared: f32 = (0..DIMS).map(|d| (frame[[i, d]] - frame[[j, d]]).powi(2)).sum();
            out.push(squared.sqrt());
        }
    }
    out
}

/// The Wasserstein-1 distance between the empirical distributions of `samples` (sorted
/// here) and `reference` (sorted): ∫ |F(x) − G(x)| dx.
fn wasserstein1(samples: &mut [f32], reference: &[f32]) -> f64 {
    samples.sort_by(f32::total_cmp);
    let (n, m) = (samples.len(), reference.len());
    if n == 0 || m == 0 {
        return f64::NAN;
    }
    let (mut i, mut j, mut total) = (0, 0, 0.0);
    let mut previous = f64::from(samples[0].min(reference[0]));
    while i < n || j < m {
        let take_sample = j == m || (i < n && samples[i] <= reference[j]);
        let value = f64::from(if take_sample { samples[i] } else { reference[j] });
        total += (i as f64 / n as f64 - j as f64 / m as f64).abs() * (value - previous);
        previous = value;
        if take_sample { i += 1 } else { j += 1 }
    }
    total
}

/// The fair (unbiased for the ensemble size) CRPS of `values` (sorted here) for the
/// observation: mean |x − y| − Σ_{i<j} |x_i − x_j| / (M (M − 1)); the absolute error
/// for one member.
fn fair_crps(values: &mut [f64], observed: f64) -> f64 {
    let m = values.len();
    let error = values.iter().map(|v| (v - observed).abs()).sum::<f64>() / m as f64;
    if m < 2 {
        return error;
    }
    values.sort_by(f64::total_cmp);
    // Σ_{i<j} (x_(j) − x_(i)) = Σ_k x_(k) (2k − M + 1), k from 0.
    let spread: f64 = values.iter().enumerate().map(|(k, v)| v * (2.0 * k as f64 - m as f64 + 1.0)).sum();
    error - spread / (m * (m - 1)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn wasserstein_distance_of_a_shift_is_the_shift() {
        let reference: Vec<f32> = (0..100).map(|i| i as f32 * 0.01).collect();
        let mut shifted: Vec<f32> = reference.iter().rev().map(|v| v + 0.25).collect();
        assert!((wasserstein1(&mut shifted, &reference) - 0.25).abs() < 1e-5);
        let mut same = reference.clone();
        assert!(wasserstein1(&mut same, &reference).abs() < 1e-9);
    }

    /// Measured against how far the data's halves are apart: a chain at one size, then
    /// at twice it (each pair's halves d apart), against samples at three times it (W1
    /// to the pooled {d, 2d} per pair: 1.5 d).
    #[test]
    fn pair_distances_are_measured_against_the_data_s_own_halves() {
        let chain = Array2::from_shape_fn((PARTICLES, DIMS), |(p, d)| ((p * DIMS + d) as f32 * 0.7).sin() + p as f32 * 0.3);
        let (once, twice) = (chain.clone(), &chain * 2.0);
        let reference = PairDistanceReference::new([(once.view(), false), (twice.view(), true)]);
        let mut same: Vec<Vec<f32>> = [&once, &twice].iter().map(|f| pair_distances_of(f.view())).fold(vec![Vec::new(); PAIRS], |mut all, d| {
            all.iter_mut().zip(d).for_each(|(a, v)| a.push(v));
            all
        });
        assert!(reference.w1_ratio(&mut same).abs() < 1e-9, "the data against itself");
        let mut thrice: Vec<Vec<f32>> = pair_distances_of((&chain * 3.0).view()).into_iter().map(|d| vec![d]).collect();
        let ratio = reference.w1_ratio(&mut thrice);
        assert!((ratio - 1.5).abs() < 1e-5, "{ratio}");
    }

    #[test]
    fn fair_crps_is_the_absolute_error_for_one_member_and_rewards_spread_that_covers() {
        assert!((fair_crps(&mut [1.0], 0.25) - 0.75).abs() < 1e-12);
        // Two members ±1 about the truth: mean |x − y| = 1, less |x1 − x2| / 2 = 1.
        let crps = fair_crps(&mut [1.0, -1.0], 0.0);
        assert!((crps - 0.0).abs() < 1e-12, "{crps}");
        // A wide ensemble centred on the truth scores better than one member off by its spread.
        let wide: Vec<f64> = (0..32).map(|i| (i as f64 - 15.5) / 10.0).collect();
        assert!(fair_crps(&mut wide.clone(), 0.0) < fair_crps(&mut [0.8], 0.0));
    }

    /// Linear-3 with its residual's noise on a noisy linear chain: ensembles spread about
    /// as far as they err, its long rollouts keep the data's motion, and linear-3 alone
    /// (which freezes) does not.
    #[test]
    fn sampled_report_scores_noise_that_matches_the_data() {
        let mut x = Array3::<f32>::zeros((3000, PARTICLES, DIMS));
        let mut v = Array2::<f32>::zeros((PARTICLES, DIMS));
        for t in 1..3000 {
            let noise = crate::data::sampling::standard_normal_frame(9, 0, t as u64);
            for p in 0..PARTICLES {
                for d in 0..2 {
                    // A damped velocity and a weak pull to the particle's home (p · 0.3, 0).
                    let home = if d == 0 { p as f32 * 0.3 } else { 0.0 };
                    v[[p, d]] = 0.9 * v[[p, d]] - 0.0005 * (x[[t - 1, p, d]] - home) + 0.001 * noise[p][d] as f32;
                    x[[t, p, d]] = x[[t - 1, p, d]] + v[[p, d]];
                }
            }
            if t == 1 {
                for p in 0..PARTICLES {
                    x[[0, p, 0]] = p as f32 * 0.3;
                    x[[1, p, 0]] = p as f32 * 0.3;
                }
            }
        }
        let trajectory = Trajectory::new(x).expect("finite");
        let frames = ForecastFrames::new(&[Segment { trajectory: &trajectory, train_pairs: 2400 }], 4);
        let (report, figures) = frames.sampled_report(&mut [], 2000);
        assert_eq!(figures.densities.len(), 2);
        let integral = |density: &[f64]| density.iter().sum::<f64>() * (figures.bin_edges[1] - figures.bin_edges[0]);
        assert!((integral(&figures.data_density) - 1.0).abs() < 1e-9 && integral(&figures.densities[1].1) > 0.9);
        assert_eq!(figures.chain.as_ref().map(|c| c.iter().map(|(step, _)| *step).collect::<Vec<_>>()), Some(vec![20, 200, 1000, 2000]));
        let [deterministic, noisy] = &report.rows[..] else { panic!("two baseline rows: {report:?}") };
        assert!(!deterministic.sampled && noisy.sampled);
        assert_eq!(report.long_starts.len(), LONG_ROLLOUT_STARTS);
        assert!(deterministic.long.ratios.motion_ratio < 0.3, "{deterministic:?}");
        assert!((noisy.long.ratios.motion_ratio - 1.0).abs() < 0.3, "{noisy:?}");
        // Each half of the rollouts and starts gives its own figure, about the whole's.
        let [even, odd] = noisy.long.halves.expect("halves");
        assert!(even != odd && (even.motion_ratio - 1.0).abs() < 0.3 && (odd.motion_ratio - 1.0).abs() < 0.3, "{noisy:?}");
        let [first, second] = report.data_rg_halves.expect("the data's halves");
        assert!(first > 0.0 && second > 0.0 && (first - 1.0) * (second - 1.0) <= 0.0, "the whole's size lies between its halves': {first} {second}");
        let pooled_rg = noisy.long.ratios.rg_ratio;
        assert!(
            pooled_rg > even.rg_ratio.min(odd.rg_ratio) - 1e-12 && pooled_rg < even.rg_ratio.max(odd.rg_ratio) + 1e-12,
            "a mean of the halves' frames: {noisy:?}"
        );
        for score in &noisy.ensemble {
            assert!(score.spread_skill > 0.6 && score.spread_skill < 1.6, "{noisy:?}");
            let halves = score.spread_skill_halves.expect("halves");
            assert!(halves.even != halves.odd && halves.even > 0.4 && halves.odd > 0.4, "{score:?}");
        }
        assert!(noisy.ensemble[0].crps < deterministic.ensemble[0].crps, "{noisy:?} vs {deterministic:?}");
    }

    #[test]
    fn each_chain_mode_gets_its_own_filter() {
        // Every chain mode's displacement follows a recursion of its own: the fit per
        // mode recovers each, whatever the others do.
        let modes = chain_modes();
        let recursion = |m: usize| [1.5 - 0.02 * m as f64, -0.6 + 0.01 * m as f64, 0.05];
        let mut amplitudes: Vec<Array2<f64>> =
            (0..3).map(|k| Array2::from_shape_fn((PARTICLES, DIMS), |(m, c)| ((m * 3 + c + 7 * k) as f64 * 1.3).sin() * 0.01)).collect();
        while amplitudes.len() < 399 {
            let n = amplitudes.len();
            let now = Array2::from_shape_fn((PARTICLES, DIMS), |(m, c)| (0..3).map(|k| recursion(m)[k] * amplitudes[n - 1 - k][[m, c]]).sum());
            amplitudes.push(now);
        }
        let basis = Array2::from_shape_fn((PARTICLES, PARTICLES), |(m, i)| modes[m][i]);
        let mut x = Array3::<f32>::zeros((400, PARTICLES, DIMS));
        for (t, amplitude) in amplitudes.iter().enumerate() {
            let next = &x.index_axis(Axis(0), t) + &basis.t().dot(amplitude).mapv(|v| v as f32);
            x.index_axis_mut(Axis(0), t + 1).assign(&next);
        }
        let trajectory = Trajectory::new(x).expect("finite");
        let fitted = LinearFilter::chain_mode_least_squares(&[Segment { trajectory: &trajectory, train_pairs: 300 }], 3);
        for (m, filter) in fitted.iter().enumerate() {
            for (c, expected) in filter.iter().zip(recursion(m)) {
                assert!((c - expected).abs() < 2e-3, "mode {m}: {filter:?}");
            }
        }
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
