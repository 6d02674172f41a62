//! The model card: what a model is, what it was trained on and how well it does.
//! train-export writes it next to `model.onnx`; the server reads and serves it. A plain
//! record: its types are its own, so training and serving depend on it and not on
//! each other.

use serde::{Deserialize, Serialize};

use crate::{
    data::{SimulationConfig, SplitConfig, Target, sampling::KickShape},
    onnx::{IR_VERSION, OPSET, Precision, Signature, TensorSpec},
};

pub const CARD_FILE: &str = "card.json";
pub const MODEL_FILE: &str = "model.onnx";
/// Above this, the exported graph does not compute the trained model's function (the
/// exporter refuses to write it, the server to load a card that records more).
pub const PARITY_TOLERANCE: f64 = 1e-5;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    pub name: String,
    pub architecture: String,
    pub summary: String,
    pub hyperparameters: serde_json::Value,
    /// Whether the architecture is E(3)-equivariant by construction (measured below).
    pub equivariant: bool,
    pub params: usize,
    /// Trained here: the data, split, training run and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataInfo>,
    /// Further trajectories trained and evaluated on beside `data` (`--data` given several
    /// times), each split the same way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_data: Vec<DataInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// Imported: the files the weights came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<ImportInfo>,
    pub equivariance: EquivarianceReport,
    /// ONNX Runtime throughput on the test frames, measured right after export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference: Option<InferenceSpeed>,
    pub onnx: OnnxInfo,
    pub versions: Versions,
    /// One-step and rollout errors beside the physics-free baselines, on the test part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<ForecastReport>,
    /// Whether the model gives dx_std beside dx (its next displacement's spread).
    #[serde(default)]
    pub stochastic: bool,
    /// How a stochastic model's dx_std was fitted and how its samples are drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<NoiseInfo>,
    /// The `train-export` arguments that made this model (retrain it on other data by
    /// changing `--data` and `--out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

impl ModelCard {
    /// Frames the model reads (K): frame t and the K − 1 before it, as its signature's
    /// inputs say (the one place K is kept).
    pub fn history_frames(&self) -> usize {
        self.onnx.signature.history_frames()
    }
}

/// A forecaster's errors on the test part: one step of dx, and positions after each
/// step of a rollout from the true window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ForecastRow {
    pub name: String,
    pub history_frames: usize,
    /// MSE of dx over the test pairs.
    pub dx_mse: f64,
    /// 1 − MSE / MSE(dx = 0): 0 is "nothing moves", 1 is exact.
    pub skill: f64,
    /// Root mean square position error over the rollout starts after 1, 2, … steps.
    pub rollout_rmse: Vec<f64>,
}

impl ForecastRow {
    /// Rollout RMSE after `steps` steps, when the rollouts went that far.
    pub fn rmse_at(&self, steps: usize) -> Option<f64> {
        steps.checked_sub(1).and_then(|i| self.rollout_rmse.get(i).copied())
    }
}

/// Every baseline and the model, on the same test pairs and rollout starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ForecastReport {
    pub test_pairs: usize,
    pub first_test_frame: usize,
    /// Frame indices the rollouts start from.
    pub rollout_starts: Vec<usize>,
    pub baselines: Vec<ForecastRow>,
    pub models: Vec<ForecastRow>,
    /// Long sampled rollouts and ensembles: do trajectories stay physical, and do
    /// ensembles spread as far as they err?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled: Option<SampledReport>,
}

/// A figure that may be undefined (no rollout survived, an ensemble went non-finite):
/// written as null, read back as NaN (JSON has no NaN or infinity).
mod finite_or_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() { serializer.serialize_f64(*value) } else { serializer.serialize_none() }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
    }
}

/// A stochastic model's noise.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NoiseInfo {
    /// How a next frame is drawn from dx and dx_std.
    pub sampling: String,
    /// How dx_std was fitted.
    pub fit: String,
    /// Coordinates the training data spans (2: planar).
    pub dims: usize,
    pub pairs: usize,
    /// Mean Gaussian negative log-likelihood per particle and step (up to a constant)
    /// of the training residuals, with the starting and the fitted dx_std.
    pub initial_nll: f64,
    pub fitted_nll: f64,
    /// dx_std is bounded at the largest value the training frames needed.
    pub largest_std: f64,
    /// The factor dx_std was then scaled by so that sampled rollouts from training
    /// windows keep the training data's RMS step about the centroid (1: the likelihood fit alone).
    pub motion_factor: f64,
    /// The pull of every particle towards the centroid, κ (x̄ − x_i) per step (a push from
    /// it where κ < 0), calibrated with the noise so that those rollouts keep the data's
    /// radius of gyration (models with one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confinement: Option<f64>,
    /// Those rollouts with the calibrated model against the training data: RMS step and
    /// mean radius of gyration (1 = as the data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrated_motion_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrated_size_ratio: Option<f64>,
    /// Their pair distances against the training data's: the mean over pairs of W1, over
    /// the same between the data's halves (1 = as close as the data is to itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrated_pair_distance_w1_ratio: Option<f64>,
    /// How the kicks ξ are correlated along the chain and in time (older cards: white).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kicks: Option<KickShape>,
}

/// Long rollouts from the test part and ensembles from its rollout starts, the same
/// frames and noise keys for every row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SampledReport {
    pub long_steps: usize,
    pub long_starts: Vec<usize>,
    /// Statistics cover the last `1 − skipped_share` of each long rollout.
    pub skipped_share: f64,
    pub members: usize,
    pub horizons: Vec<usize>,
    pub seed: u64,
    /// The mean radius of gyration of the data's first and second half over the whole
    /// data's: how far the size moves within the data itself (older cards: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_rg_halves: Option<[f64; 2]>,
    pub rows: Vec<SampledRow>,
}

/// One forecaster, deterministic or sampled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SampledRow {
    pub name: String,
    /// Whether noise was drawn (false: the mean alone, one member).
    pub sampled: bool,
    pub long: LongRolloutStats,
    /// At each of the report's horizons.
    pub ensemble: Vec<EnsembleScore>,
}

/// How a long rollout's statistics compare with the data's (1 = as the data).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LongRolloutStats {
    /// Rollouts that went non-finite or grew past 3× the data's largest extent.
    pub flew_apart: usize,
    #[serde(flatten)]
    pub ratios: LongRolloutRatios,
    /// The same ratios on the even and on the odd rollouts apart: how far the figures
    /// move with the draw (older cards: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halves: Option<[LongRolloutRatios; 2]>,
}

/// A long rollout's statistics over the data's.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct LongRolloutRatios {
    /// RMS step over the data's.
    #[serde(with = "finite_or_null")]
    pub motion_ratio: f64,
    /// Mean over the 66 pairs of the Wasserstein-1 distance between the pair's distance
    /// distribution in the rollouts and in the data, over the same between the data's
    /// two halves (1: as close as the data is to itself).
    #[serde(with = "finite_or_null")]
    pub pair_distance_w1_ratio: f64,
    /// Mean radius of gyration over the data's.
    #[serde(with = "finite_or_null")]
    pub rg_ratio: f64,
}

/// An ensemble's error and spread at one horizon, over starts and coordinates.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnsembleScore {
    pub horizon: usize,
    /// √(mean ensemble variance) / RMSE of the ensemble mean (1: calibrated; 0 for one member).
    #[serde(with = "finite_or_null")]
    pub spread_skill: f64,
    /// Fair ensemble CRPS per coordinate (the mean absolute error for one member).
    #[serde(with = "finite_or_null")]
    pub crps: f64,
    #[serde(with = "finite_or_null")]
    pub rmse_of_mean: f64,
    /// Spread/skill on the even and on the odd starts apart (older cards: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_skill_halves: Option<Halves>,
}

/// A figure measured again on each half of what it pools, the even and the odd members:
/// how far apart the two are is how far the figure itself moves with the draw.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Halves {
    #[serde(with = "finite_or_null")]
    pub even: f64,
    #[serde(with = "finite_or_null")]
    pub odd: f64,
}

impl ForecastReport {
    /// The baseline with the lowest one-step dx MSE.
    pub fn best_baseline(&self) -> Option<&ForecastRow> {
        self.baselines.iter().min_by(|a, b| a.dx_mse.total_cmp(&b.dx_mse))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataInfo {
    /// The .npz file as typed (its name alone when the path was absolute), or
    /// "simulator" for the built-in default data.
    pub source: String,
    pub sha256: String,
    pub frames: usize,
    /// The element type the file stored when it was not float (converted to float32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted_from: Option<String>,
    /// The simulator's settings when it made the data.
    pub simulation: Option<SimulationConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferenceSpeed {
    pub execution_provider: String,
    pub threads: usize,
    /// One frame per call, as the study's forward pass runs.
    pub frames_per_second_batch_1: f64,
    pub frames_per_second_batch_32: f64,
    /// Batches of 32 through the server's default pool (on the CPU one single-threaded
    /// session per core) kept busy by concurrent requests: what one server sustains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_per_second_batch_32_pooled: Option<f64>,
    /// Sessions in that pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_workers: Option<usize>,
}

impl InferenceSpeed {
    /// The most frames per second any of the measured ways reached.
    pub fn best(&self) -> f64 {
        let pooled = self.frames_per_second_batch_32_pooled.unwrap_or(0.0);
        self.frames_per_second_batch_1.max(self.frames_per_second_batch_32).max(pooled)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImportInfo {
    /// What trained the weights, e.g. "e3nn 0.6 (PyTorch)".
    pub framework: String,
    pub kwargs_file: String,
    pub weights_file: String,
    pub weights_sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitInfo {
    pub config: SplitConfig,
    pub train_pairs: usize,
    pub test_pairs: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingInfo {
    pub config: TrainConfig,
    pub seconds_per_epoch: f64,
    pub history: Vec<EpochStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metrics {
    pub target: Target,
    pub train: Evaluation,
    pub test: Evaluation,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "OnnxInfoFields")]
pub struct OnnxInfo {
    pub file: String,
    /// The graph's inputs and outputs, checked against the file when it loads.
    #[serde(flatten)]
    pub signature: Signature,
    pub opset: i64,
    pub ir_version: i64,
    /// max |ONNX − reference| / max |reference| on the check inputs (the trained
    /// model's own forward pass, or the f64 evaluation of imported layers).
    pub parity_relative_error: f64,
    /// The element type the graph computes in (its input and output are float32):
    /// float64 where f32 rounding could not reproduce the trained model.
    pub compute_dtype: String,
}

/// The card's `onnx` object as stored: cards written before signatures had one
/// `input` and one `output` where today's have `inputs` and `outputs`.
#[derive(Deserialize)]
struct OnnxInfoFields {
    file: String,
    #[serde(default)]
    inputs: Vec<TensorSpec>,
    #[serde(default)]
    outputs: Vec<TensorSpec>,
    input: Option<TensorSpec>,
    output: Option<TensorSpec>,
    opset: i64,
    ir_version: i64,
    parity_relative_error: f64,
    #[serde(default = "float32")]
    compute_dtype: String,
}

impl TryFrom<OnnxInfoFields> for OnnxInfo {
    type Error = String;

    fn try_from(fields: OnnxInfoFields) -> Result<Self, String> {
        let OnnxInfoFields { file, mut inputs, mut outputs, input, output, opset, ir_version, parity_relative_error, compute_dtype } = fields;
        inputs.extend(input);
        outputs.extend(output);
        if inputs.is_empty() || outputs.is_empty() {
            return Err("the onnx record names no inputs or no outputs".into());
        }
        let signature = Signature { inputs, outputs };
        Ok(Self { file, signature, opset, ir_version, parity_relative_error, compute_dtype })
    }
}

fn float32() -> String {
    Precision::F32.name().into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Versions {
    pub equiserve: String,
    pub burn: String,
    pub ort: String,
}

impl Versions {
    pub fn current() -> Self {
        Self { equiserve: env!("CARGO_PKG_VERSION").into(), burn: "0.22.1".into(), ort: "2.0.0-rc.15".into() }
    }
}

impl OnnxInfo {
    /// An exported graph of `signature` in `MODEL_FILE`.
    pub fn exported(signature: Signature, parity_relative_error: f64, precision: Precision) -> Self {
        Self { file: MODEL_FILE.into(), signature, opset: OPSET, ir_version: IR_VERSION, parity_relative_error, compute_dtype: precision.name().into() }
    }
}

/// The card fields the server needs; the rest is passed through as JSON.
#[derive(Debug, Clone, Deserialize)]
pub struct CardSummary {
    pub name: String,
    pub architecture: String,
    pub params: u64,
    pub onnx: OnnxInfo,
    /// The frames the card says the model reads; checked against its signature's inputs.
    #[serde(default)]
    pub history_frames: Option<usize>,
    /// How a stochastic model's sampled kicks are correlated (none: white).
    #[serde(default)]
    pub noise: Option<NoiseSummary>,
}

/// The part of a card's noise that sampling needs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NoiseSummary {
    #[serde(default)]
    pub kicks: Option<KickShape>,
}

impl CardSummary {
    /// The shape of its sampled kicks, none for white ones.
    pub fn kick_shape(&self) -> Option<KickShape> {
        self.noise.as_ref().and_then(|noise| noise.kicks)
    }
}

/// Hyper-parameters of a training run; the defaults are the study's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Shuffle the training pairs each epoch (the study does not).
    pub shuffle: bool,
    pub target: Target,
    /// The network's outputs times this are its prediction, in training and in the
    /// exported graph: a network whose layers start with outputs of order one then
    /// learns targets of this size (dx on paths.npz: 4.9e-3) as values of order one.
    /// 1 is the study's unscaled outputs.
    #[serde(default = "unscaled")]
    pub output_scale: f64,
    /// Share of the training pairs held out, the last ones in time, to choose the epoch
    /// whose weights are kept: the one with the lowest MSE on them. 0 trains on every
    /// training pair and keeps the last epoch's weights, as the study does.
    #[serde(default)]
    pub validation_fraction: f64,
    /// With held-out pairs: stop after this many epochs without a new lowest MSE on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
    /// Standard deviation of the random-walk noise added to the input window of each
    /// training batch (per frame step, oldest to newest; the target is corrected so that
    /// the model learns to pull a perturbed window back): trains for rollouts.
    #[serde(default)]
    pub input_noise: f64,
}

fn unscaled() -> f64 {
    1.0
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            batch_size: 32,
            learning_rate: 1e-3,
            seed: 0,
            shuffle: false,
            target: Target::Dx,
            output_scale: unscaled(),
            validation_fraction: 0.0,
            patience: None,
            input_noise: 0.0,
        }
    }
}

impl TrainConfig {
    /// How many of `train_pairs` (the last ones) are held out: none without a
    /// validation fraction, else at least one and never all.
    pub fn validation_pairs(&self, train_pairs: usize) -> usize {
        if self.validation_fraction <= 0.0 || train_pairs < 2 {
            return 0;
        }
        ((self.validation_fraction * train_pairs as f64).round() as usize).clamp(1, train_pairs - 1)
    }
}

/// One epoch's losses, as the study logs them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    /// Mean of the epoch's batch losses.
    pub train_mse: f64,
    /// MSE over the test pairs after the epoch.
    pub test_mse: f64,
    /// MSE (of dx) over the held-out training pairs after the epoch, when some are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_mse: Option<f64>,
    /// For history models: RMSE of positions over rollouts through the held-out pairs,
    /// which chooses the kept epoch (one-step error does not tell how errors compound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_rollout_rmse: Option<f64>,
    pub seconds: f64,
}

impl EpochStats {
    /// What chooses the kept epoch: the rollout error where measured, else the MSE.
    pub fn validation_error(&self) -> Option<f64> {
        self.validation_rollout_rmse.or(self.validation_mse).filter(|v| v.is_finite())
    }
}

/// The epoch whose weights a run kept: the lowest validation error (the first such),
/// or the last epoch when nothing was held out.
pub fn kept_epoch(history: &[EpochStats]) -> Option<&EpochStats> {
    let validated = history.iter().filter(|s| s.validation_error().is_some());
    validated.min_by(|a, b| a.validation_error().partial_cmp(&b.validation_error()).expect("finite")).or(history.last())
}

/// The study's four R² of predicted next positions x(t) + dx.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct StudyR2 {
    /// Mean of all 36 coordinates ("centre of mass").
    pub cm: f64,
    /// Particle 1's mean coordinate.
    pub p1_cm: f64,
    /// Particle 7's x.
    pub p7_x: f64,
    /// Particle 12's y.
    pub p12_y: f64,
}

/// How a model does on one set of pairs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Evaluation {
    pub mse: f64,
    /// 1 − MSE / Var(dx): the share of the displacement's variance explained.
    pub dx_skill: f64,
    pub r2: StudyR2,
}

/// Largest |f(g·x) − g·f(x)| for dx, under each kind of transformation g.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct EquivarianceReport {
    /// The study's check: 37° about x, on Gaussian positions.
    pub rotation_37_x: f64,
    pub random_rotations: f64,
    /// Random rotations composed with the inversion (improper elements of O(3)).
    pub random_reflections: f64,
    /// dx must not change when every particle moves by the same vector.
    pub random_translations: f64,
}

impl EquivarianceReport {
    /// The largest of all the deviations.
    pub fn max(&self) -> f64 {
        [self.rotation_37_x, self.random_rotations, self.random_reflections, self.random_translations].into_iter().fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cards written before signatures (one `input`, one `output`) still read.
    #[test]
    fn onnx_records_of_either_form_read_as_a_signature() {
        let frame = r#"{"name": "NAME", "dtype": "float32", "shape": ["batch", "12", "3"]}"#;
        let legacy = format!(
            r#"{{"file": "model.onnx", "input": {}, "output": {}, "opset": 21, "ir_version": 10, "parity_relative_error": 1e-7}}"#,
            frame.replace("NAME", "positions"),
            frame.replace("NAME", "dx")
        );
        let read: OnnxInfo = serde_json::from_str(&legacy).expect("legacy record reads");
        assert_eq!(read.signature, Signature::dynamics(1));
        assert_eq!(read.compute_dtype, "float32");
        let written = serde_json::to_string(&OnnxInfo::exported(Signature::dynamics(3), 1e-7, Precision::F64)).expect("serializes");
        let again: OnnxInfo = serde_json::from_str(&written).expect("today's record reads");
        assert_eq!(again.signature, Signature::dynamics(3));
        assert!(written.contains(r#""inputs""#) && !written.contains(r#""input""#), "{written}");
        let empty = r#"{"file": "model.onnx", "opset": 21, "ir_version": 10, "parity_relative_error": 0.0}"#;
        assert!(serde_json::from_str::<OnnxInfo>(empty).is_err());
    }
}
