//! The models being served: every `<dir>/<name>/{model.onnx, card.json}` under the
//! models directory, each with its own worker pool.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use super::engine::{ModelWorkers, PoolConfig};
use crate::{
    card::{CARD_FILE, CardSummary, MODEL_FILE},
    onnx::ExecutionDevice,
};

pub struct LoadedModel {
    pub summary: CardSummary,
    /// The card as written by train-export, passed through to clients.
    pub card_json: String,
    pub workers: ModelWorkers,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("no servable models in {dir}: {reasons}")]
    Empty { dir: PathBuf, reasons: String },
}

/// Models by name, sorted.
pub struct ModelRegistry {
    models: BTreeMap<String, LoadedModel>,
}

impl ModelRegistry {
    /// Loads every model directory; one that cannot load is logged and skipped, and
    /// loading fails only when nothing at all can be served.
    pub fn load(dir: &Path, device: ExecutionDevice, pool: PoolConfig) -> Result<Self, RegistryError> {
        let unreadable = |path: &Path, e: &dyn std::fmt::Display| RegistryError::Unreadable {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .map_err(|e| unreadable(dir, &e))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.join(MODEL_FILE).is_file())
            .collect();
        entries.sort();
        let mut models = BTreeMap::new();
        let mut failures = Vec::new();
        for model_dir in entries {
            match load_one(&model_dir, device, pool) {
                Ok(model) => {
                    tracing::info!(
                        model = %model.summary.name,
                        architecture = %model.summary.architecture,
                        params = model.summary.params,
                        execution_provider = model.workers.execution_provider(),
                        workers = model.workers.workers(),
                        "model loaded"
                    );
                    models.insert(model.summary.name.clone(), model);
                }
                Err(e) => {
                    tracing::error!(error = %e, "model skipped");
                    failures.push(e.to_string());
                }
            }
        }
        if models.is_empty() {
            let reasons = if failures.is_empty() {
                format!("no <name>/{MODEL_FILE} directories found")
            } else {
                failures.join("; ")
            };
            return Err(RegistryError::Empty { dir: dir.to_path_buf(), reasons });
        }
        Ok(Self { models })
    }

    pub fn get(&self, name: &str) -> Option<&LoadedModel> {
        self.models.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &LoadedModel> {
        self.models.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.models.keys().map(String::as_str).collect()
    }
}

fn load_one(dir: &Path, device: ExecutionDevice, pool: PoolConfig) -> Result<LoadedModel, RegistryError> {
    let card_path = dir.join(CARD_FILE);
    let unreadable = |e: &dyn std::fmt::Display| RegistryError::Unreadable { path: card_path.clone(), message: e.to_string() };
    let card_json = fs::read_to_string(&card_path).map_err(|e| unreadable(&e))?;
    let summary: CardSummary = serde_json::from_str(&card_json).map_err(|e| unreadable(&e))?;
    let workers = ModelWorkers::start(&summary.name, &dir.join(MODEL_FILE), device, pool)
        .map_err(|e| RegistryError::Unreadable { path: dir.join(MODEL_FILE), message: e.to_string() })?;
    Ok(LoadedModel { summary, card_json, workers })
}
