//! The model card: what a model is, what it was trained on and how well it does.
//! train-export writes it next to `model.onnx`; the server reads and serves it.

use serde::{Deserialize, Serialize};

use crate::{
    data::{DIMS, PARTICLES, SplitConfig, Target},
    onnx::{INPUT_NAME, IR_VERSION, OPSET, OUTPUT_NAME, Precision},
    train::{
        EpochStats, TrainConfig,
        metrics::{EquivarianceReport, Evaluation},
    },
};

pub const CARD_FILE: &str = "card.json";
pub const MODEL_FILE: &str = "model.onnx";

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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataInfo {
    /// The .npz file, or "simulator" for the built-in default data.
    pub source: String,
    pub sha256: String,
    pub frames: usize,
    /// The simulator's settings when it made the data.
    pub simulation: Option<crate::data::SimulationConfig>,
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
pub struct OnnxInfo {
    pub file: String,
    pub input: TensorInfo,
    pub output: TensorInfo,
    pub opset: i64,
    pub ir_version: i64,
    /// max |ONNX − reference| / max |reference| on the check inputs (the trained
    /// model's own forward pass, or the f64 evaluation of imported layers).
    pub parity_relative_error: f64,
    /// The element type the graph computes in (its input and output are float32):
    /// float64 where f32 rounding could not reproduce the trained model.
    #[serde(default = "float32")]
    pub compute_dtype: String,
}

fn float32() -> String {
    Precision::F32.name().into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<String>,
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
    /// Every exported model's interface: positions [batch, 12, 3] → dx [batch, 12, 3].
    pub fn standard(parity_relative_error: f64, precision: Precision) -> Self {
        let frames = |name: &str| TensorInfo {
            name: name.to_string(),
            dtype: "float32".into(),
            shape: vec!["batch".into(), PARTICLES.to_string(), DIMS.to_string()],
        };
        Self {
            file: MODEL_FILE.into(),
            input: frames(INPUT_NAME),
            output: frames(OUTPUT_NAME),
            opset: OPSET,
            ir_version: IR_VERSION,
            parity_relative_error,
            compute_dtype: precision.name().into(),
        }
    }
}

/// The few card fields the server needs; the rest is passed through as JSON.
#[derive(Debug, Clone, Deserialize)]
pub struct CardSummary {
    pub name: String,
    pub architecture: String,
    pub params: u64,
}
