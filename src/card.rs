//! The model card: what a model is, what it was trained on and how well it does.
//! train-export writes it next to `model.onnx`; the server reads and serves it.

use serde::{Deserialize, Serialize};

use crate::{
    data::{SplitConfig, Target},
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
    pub data: DataInfo,
    pub split: SplitInfo,
    pub training: TrainingInfo,
    pub metrics: Metrics,
    pub equivariance: EquivarianceReport,
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
    /// max |ONNX − Burn| / max |Burn| on the test set and on random inputs.
    pub parity_relative_error: f64,
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

/// The few card fields the server needs; the rest is passed through as JSON.
#[derive(Debug, Clone, Deserialize)]
pub struct CardSummary {
    pub name: String,
    pub architecture: String,
    pub params: u64,
}
