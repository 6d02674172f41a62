//! The models being served: every `<dir>/<name>/{model.onnx, card.json}` under the
//! models directory, each with its own worker pool.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use ndarray::{Array3, Array4};

use super::{
    ServeError,
    engine::{EngineError, ModelWorkers, PoolConfig},
    memory::MemoryBudget,
    rollout::RolloutStepper,
};
use crate::{
    card::{CARD_FILE, CardSummary, MODEL_FILE, model_folders},
    onnx::{DX, ExecutionDevice, NamedTensors, Signature},
};

pub struct LoadedModel {
    pub summary: CardSummary,
    /// The card as written by train-export, passed through to clients.
    pub card_json: String,
    pub workers: ModelWorkers,
    /// Started with the first rollout (it needs the async runtime).
    rollouts: OnceLock<RolloutStepper>,
}

impl LoadedModel {
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

    /// dx [batch, 12, 3] for `positions` [batch, 12, 3] (and, for a history model, the
    /// frames before them [batch, K − 1, 12, 3]), batched with other requests.
    pub async fn dx(&self, positions: Array3<f32>, previous: Option<Array4<f32>>) -> Result<Array3<f32>, ServeError> {
        let outputs = self.workers.infer(NamedTensors::dynamics(positions, previous)).await;
        self.take_dx(outputs)
    }

    /// dx for one step of the model's rollouts, stacked (never turned away).
    pub(crate) async fn step_rollouts(&self, positions: Array3<f32>, previous: Option<Array4<f32>>) -> Result<Array3<f32>, ServeError> {
        let outputs = self.workers.step_rollouts(NamedTensors::dynamics(positions, previous)).await;
        self.take_dx(outputs)
    }

    pub(crate) fn rollout_stepper(&self) -> &RolloutStepper {
        self.rollouts.get_or_init(RolloutStepper::spawn)
    }

    /// Ends the model's rollouts, if it has a stepper, with UNAVAILABLE.
    pub(crate) fn end_rollouts(&self) {
        if let Some(stepper) = self.rollouts.get() {
            stepper.end_all();
        }
    }

    fn take_dx(&self, outputs: Result<NamedTensors, EngineError>) -> Result<Array3<f32>, ServeError> {
        let mut outputs = outputs.map_err(|e| ServeError::from_engine(self.name(), e))?;
        outputs.take_dx().ok_or_else(|| ServeError::Internal {
            model: self.name().to_string(),
            message: format!("the model gave no {DX} [batch, 12, 3]"),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("{path}: a model named '{name}' is already served from {first}")]
    DuplicateName { path: PathBuf, name: String, first: PathBuf },
    #[error("no servable models in {dir}: {reasons}")]
    Empty { dir: PathBuf, reasons: String },
}

/// Models by name, sorted. Each is shared (`Arc`) so that a rollout keeps the model it
/// started on for as long as it runs.
pub struct ModelRegistry {
    models: BTreeMap<String, (PathBuf, Arc<LoadedModel>)>,
}

impl ModelRegistry {
    /// Loads every model folder; one that cannot load is logged and skipped, and
    /// loading fails only when nothing at all can be served.
    pub fn load(dir: &Path, device: ExecutionDevice, pool: PoolConfig) -> Result<Self, RegistryError> {
        let folders = model_folders(dir).map_err(|e| RegistryError::Unreadable { path: dir.to_path_buf(), message: e.to_string() })?;
        let mut models: BTreeMap<String, (PathBuf, Arc<LoadedModel>)> = BTreeMap::new();
        let mut failures = Vec::new();
        // One budget for every model's calls.
        let budget = Arc::new(MemoryBudget::new(pool.memory_budget));
        for folder in folders {
            let loaded = load_one(&folder, device, pool, &budget).and_then(|model| match models.get(model.name()) {
                Some((first, _)) => Err(RegistryError::DuplicateName {
                    path: folder.clone(),
                    name: model.name().to_string(),
                    first: first.clone(),
                }),
                None => Ok(model),
            });
            match loaded {
                Ok(model) => {
                    tracing::info!(
                        model = %model.summary.name,
                        architecture = %model.summary.architecture,
                        params = model.summary.params,
                        execution_provider = model.workers.execution_provider(),
                        workers = model.workers.workers(),
                        bytes_per_frame = model.workers.frame_cost(),
                        max_batch_frames = model.workers.max_batch_frames(),
                        "model loaded"
                    );
                    models.insert(model.summary.name.clone(), (folder, Arc::new(model)));
                }
                Err(e) => {
                    tracing::error!(error = %e, "model skipped");
                    failures.push(e.to_string());
                }
            }
        }
        if models.is_empty() {
            let reasons = if failures.is_empty() {
                format!("no <name>/{{{MODEL_FILE}, {CARD_FILE}}} folders found")
            } else {
                failures.join("; ")
            };
            return Err(RegistryError::Empty { dir: dir.to_path_buf(), reasons });
        }
        Ok(Self { models })
    }

    pub fn get(&self, name: &str) -> Option<Arc<LoadedModel>> {
        self.models.get(name).map(|(_, model)| Arc::clone(model))
    }

    pub fn iter(&self) -> impl Iterator<Item = &LoadedModel> {
        self.models.values().map(|(_, model)| model.as_ref())
    }

    pub fn names(&self) -> Vec<&str> {
        self.models.keys().map(String::as_str).collect()
    }
}

fn load_one(dir: &Path, device: ExecutionDevice, pool: PoolConfig, budget: &Arc<MemoryBudget>) -> Result<LoadedModel, RegistryError> {
    let card_path = dir.join(CARD_FILE);
    let unreadable = |path: &Path, e: &dyn std::fmt::Display| RegistryError::Unreadable { path: path.to_path_buf(), message: e.to_string() };
    let card_json = fs::read_to_string(&card_path).map_err(|e| unreadable(&card_path, &e))?;
    let summary: CardSummary = serde_json::from_str(&card_json).map_err(|e| unreadable(&card_path, &e))?;
    let onnx_file = dir.join(MODEL_FILE);
    if !onnx_file.is_file() {
        return Err(unreadable(&onnx_file, &"the card's model file is missing"));
    }
    let workers = ModelWorkers::start(&summary.name, &onnx_file, &summary.onnx.signature, device, pool, Arc::clone(budget))
        .map_err(|e| unreadable(&onnx_file, &e))?;
    Ok(LoadedModel { summary, card_json, workers, rollouts: OnceLock::new() })
}
