//! One served version of a model: its card, its worker pool and its rollout stepper.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use ndarray::{Array3, Array4};
use tokio::sync::watch;

use super::{
    ServeError,
    displacement::{Displacement, displacement_of},
    engine::{ModelWorkers, PoolConfig},
    memory::MemoryBudget,
    metrics::ModelLabels,
    rollout::RolloutStepper,
};
use crate::{
    card::{CARD_FILE, CardSummary, MODEL_FILE, OnnxInfo, PARITY_TOLERANCE},
    onnx::{ExecutionDevice, FLOAT32, NamedTensors, OnnxModel, Signature},
};

/// The architecture a model served without a card is listed with.
const BARE_ARCHITECTURE: &str = "ONNX file (no card)";

/// Why a version's folder could not be served.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LoadError {
    pub path: PathBuf,
    pub message: String,
}

pub struct ModelVersion {
    pub summary: CardSummary,
    /// The card as written by train-export, passed through to clients.
    pub card_json: String,
    pub version: u64,
    pub workers: Arc<ModelWorkers>,
    /// Turns true when the server shuts down: the stepper then ends every rollout.
    shutdown: watch::Receiver<bool>,
    /// Started with the first rollout (it needs the async runtime), started again if it
    /// ever stopped.
    rollouts: Mutex<Option<RolloutStepper>>,
}

impl ModelVersion {
    /// Loads the version in `folder`: its card (refused when it records a parity error
    /// or a window its signature contradicts), or without one the signature its ONNX
    /// file has, and a worker pool over the file.
    pub fn load(
        folder: &Path,
        name: &str,
        version: u64,
        device: ExecutionDevice,
        pool: PoolConfig,
        budget: &Arc<MemoryBudget>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, LoadError> {
        let onnx_file = folder.join(MODEL_FILE);
        let card_path = folder.join(CARD_FILE);
        let (summary, card_json) = if card_path.exists() { read_card(&card_path, name)? } else { card_of_bare_file(&onnx_file, name)? };
        if !onnx_file.is_file() {
            return Err(fault(&onnx_file, &"the card's model file is missing"));
        }
        let workers = ModelWorkers::start(&ModelLabels::new(name, version), &onnx_file, &summary.onnx.signature, device, pool, Arc::clone(budget))
            .map_err(|e| fault(&onnx_file, &e))?;
        Ok(Self::new(summary, card_json, version, workers, shutdown))
    }

    /// A version over `workers` (ONNX Runtime's, or a stand-in's in tests).
    pub(crate) fn new(summary: CardSummary, card_json: String, version: u64, workers: ModelWorkers, shutdown: watch::Receiver<bool>) -> Self {
        Self { summary, card_json, version, workers: Arc::new(workers), shutdown, rollouts: Mutex::default() }
    }

    pub fn name(&self) -> &str {
        &self.summary.name
    }

    /// The model's inputs and outputs, as its card states and its file was checked to have.
    pub fn signature(&self) -> &Signature {
        &self.summary.onnx.signature
    }

    /// Frames the model reads (K): 1 + the fixed length of its `previous` input.
    pub fn history_frames(&self) -> usize {
        self.signature().history_frames()
    }

    /// Whether the model gives `dx_std` beside `dx`, so that its rollouts can be sampled.
    pub fn is_stochastic(&self) -> bool {
        self.signature().is_stochastic()
    }

    /// dx (and dx_std) for `positions` [batch, 12, 3] (and, for a history model, the
    /// frames before them [batch, K − 1, 12, 3]), batched with other requests.
    pub async fn displacement(&self, positions: Array3<f32>, previous: Option<Array4<f32>>) -> Result<Displacement, ServeError> {
        let outputs = self.workers.infer(NamedTensors::dynamics(positions, previous)).await;
        let outputs = outputs.map_err(|e| ServeError::from_engine(self.name(), e))?;
        displacement_of(self.name(), outputs)
    }

    /// The stepper of this version's rollouts, started (again) when it is not running.
    pub(crate) fn rollout_stepper(&self) -> RolloutStepper {
        let mut stepper = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        match stepper.as_ref() {
            Some(running) if running.is_running() => running.clone(),
            _ => {
                if stepper.is_some() {
                    tracing::error!(model = self.name(), version = self.version, "the rollout stepper had stopped; started again");
                }
                let started = RolloutStepper::spawn(self.name().to_string(), Arc::clone(&self.workers), self.shutdown.clone());
                *stepper = Some(started.clone());
                started
            }
        }
    }
}

fn fault(path: &Path, message: &dyn std::fmt::Display) -> LoadError {
    LoadError { path: path.to_path_buf(), message: message.to_string() }
}

/// The card at `card_path` as the server reads it (its summary, and its text for
/// clients), refused when it records a parity error or a window its signature
/// contradicts.
fn read_card(card_path: &Path, name: &str) -> Result<(CardSummary, String), LoadError> {
    let card_json = fs::read_to_string(card_path).map_err(|e| fault(card_path, &e))?;
    let mut summary: CardSummary = serde_json::from_str(&card_json).map_err(|e| fault(card_path, &e))?;
    let parity = summary.onnx.parity_relative_error;
    // NaN fails too.
    if parity.is_nan() || parity > PARITY_TOLERANCE {
        return Err(fault(
            card_path,
            &format_args!("the card records an ONNX parity error of {parity:.3e} (> {PARITY_TOLERANCE:e}): the graph does not compute the trained model"),
        ));
    }
    if let Some(shape) = summary.kick_shape() {
        shape.check().map_err(|e| fault(card_path, &format_args!("the card's noise: {e}")))?;
    }
    // In the versioned layout the folder names the model, as in Triton's.
    summary.name = name.to_string();
    let window = summary.onnx.signature.history_frames();
    if let Some(claimed) = summary.history_frames
        && claimed != window
    {
        return Err(fault(card_path, &format_args!("the card says the model reads {claimed} frames, its signature's inputs {window}")));
    }
    Ok((summary, card_json))
}

/// The card of a model file served without one: the signature read from the file (it
/// must fit the dynamics interface), and a text for clients that says so.
fn card_of_bare_file(onnx_file: &Path, name: &str) -> Result<(CardSummary, String), LoadError> {
    let signature = OnnxModel::read_signature(onnx_file).map_err(|e| fault(onnx_file, &e))?;
    let onnx = OnnxInfo {
        file: MODEL_FILE.into(),
        signature,
        opset: 0,
        ir_version: 0,
        // No card records a parity check: the file is served as it computes.
        parity_relative_error: 0.0,
        compute_dtype: FLOAT32.into(),
    };
    let summary = CardSummary { name: name.to_string(), architecture: BARE_ARCHITECTURE.into(), params: 0, onnx, history_frames: None, noise: None };
    let card_json = serde_json::json!({
        "name": name,
        "architecture": BARE_ARCHITECTURE,
        "summary": format!("served from {MODEL_FILE} alone: no {CARD_FILE}; the inputs and outputs were read from the file"),
        "onnx": { "file": MODEL_FILE, "inputs": summary.onnx.signature.inputs, "outputs": summary.onnx.signature.outputs },
        "stochastic": summary.onnx.signature.is_stochastic(),
    })
    .to_string();
    Ok((summary, card_json))
}
