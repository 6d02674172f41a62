//! The model repository being served, laid out as Triton's: `<dir>/<name>/<version>/`
//! holding `model.onnx` and `card.json` (versions are positive integers), or today's flat
//! `<dir>/<name>/{model.onnx, card.json}`, read as version 1 of the card's model. Every
//! version found is loaded with its own worker pool; a request names a version or gets
//! the newest ready one.
//!
//! Versions are (re)loaded at start, then on request (`explicit`) or when their files
//! change (`poll`). A version that fails to load leaves the one it would replace serving,
//! and the reason is kept for the index. Swapping is replacing an `Arc`: requests and
//! rollouts hold the version they started on until they end.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use tokio::sync::watch;

use super::{ServeError, engine::PoolConfig, memory::MemoryBudget, model::ModelVersion};
use crate::{
    card::{CARD_FILE, CardSummary, MODEL_FILE},
    onnx::ExecutionDevice,
};

/// When the repository's models are (re)loaded, as Triton's `--model-control-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ModelControl {
    /// Loaded once at start.
    #[default]
    None,
    /// Re-read every poll interval: new or changed versions load, removed ones unload.
    Poll,
    /// Loaded at start, then (re)loaded and unloaded by RepositoryModelLoad/Unload.
    Explicit,
}

#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("{path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("no servable models in {dir}: {reasons}")]
    Empty { dir: PathBuf, reasons: String },
    #[error("no model '{name}' in the repository {dir}")]
    NotInRepository { name: String, dir: PathBuf },
    #[error("'{name}' could not be (re)loaded, {kept}: {reasons}")]
    LoadFailed { name: String, kept: String, reasons: String },
    #[error("models are {control:?}-controlled: the repository cannot be changed by request (start with --model-control explicit)")]
    NotExplicit { control: ModelControl },
}

/// One version as the index shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionState {
    pub name: String,
    pub version: u64,
    pub ready: bool,
    /// Why the last (re)load failed, if it did (a ready version may have been kept).
    pub failure: Option<String>,
}

/// Sizes and times of a version's files: when they change, poll reloads it.
type FileStamp = [(u64, Option<SystemTime>); 2];
/// The failure an unloaded version shows (and which makes the next load read it again).
const UNLOADED: &str = "unloaded";

type Versions = BTreeMap<u64, VersionSlot>;

struct VersionSlot {
    folder: PathBuf,
    stamp: FileStamp,
    serving: Option<Arc<ModelVersion>>,
    failure: Option<String>,
}

/// A version folder found in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionFolder {
    pub name: String,
    pub version: u64,
    pub folder: PathBuf,
}

/// Models by name, then versions, sorted.
pub struct ModelRepository {
    dir: PathBuf,
    device: ExecutionDevice,
    pool: PoolConfig,
    /// One budget for every model's calls.
    budget: Arc<MemoryBudget>,
    control: ModelControl,
    models: RwLock<BTreeMap<String, Versions>>,
    /// Set when the server shuts down: every version's rollouts end, those of versions
    /// already swapped out or unloaded included (each version watches it).
    shutdown: watch::Sender<bool>,
    /// One (re)load at a time; loading happens outside the map's lock.
    loading: Mutex<()>,
}

impl ModelRepository {
    /// Loads every version in `dir`; one that cannot load is logged and skipped, and
    /// opening fails only when nothing at all can be served.
    pub fn open(dir: &Path, device: ExecutionDevice, pool: PoolConfig, control: ModelControl) -> Result<Self, RepositoryError> {
        let registry = Self::empty(dir, device, pool, control);
        let failures = registry.sync(None)?;
        if registry.ready().is_empty() {
            let reasons = if failures.is_empty() { format!("no <name>/[<version>/]{{{MODEL_FILE}, {CARD_FILE}}} folders found") } else { failures.join("; ") };
            return Err(RepositoryError::Empty { dir: dir.to_path_buf(), reasons });
        }
        Ok(registry)
    }

    /// Explicit control starting with `models` only (Triton's `--load-model`); fails
    /// when one of them cannot load.
    pub fn open_explicit(dir: &Path, device: ExecutionDevice, pool: PoolConfig, models: &[String]) -> Result<Self, RepositoryError> {
        let registry = Self::empty(dir, device, pool, ModelControl::Explicit);
        for name in models {
            registry.load(name)?;
        }
        if registry.ready().is_empty() {
            return Err(RepositoryError::Empty { dir: dir.to_path_buf(), reasons: "no model to load at start was named".to_string() });
        }
        Ok(registry)
    }

    pub(super) fn empty(dir: &Path, device: ExecutionDevice, pool: PoolConfig, control: ModelControl) -> Self {
        Self {
            dir: dir.to_path_buf(),
            device,
            pool,
            budget: Arc::new(MemoryBudget::new(pool.memory_budget)),
            control,
            models: RwLock::default(),
            shutdown: watch::Sender::new(false),
            loading: Mutex::default(),
        }
    }

    pub fn control(&self) -> ModelControl {
        self.control
    }

    /// `version`, or the newest ready one when `None`.
    pub fn get(&self, name: &str, version: Option<u64>) -> Result<Arc<ModelVersion>, ServeError> {
        let models = self.read();
        let Some(versions) = models.get(name) else {
            return Err(ServeError::UnknownModel { name: name.to_string(), served: ready_names(&models).join(", ") });
        };
        match version {
            None => newest_ready(versions).ok_or_else(|| {
                let failures: Vec<String> = versions.iter().filter_map(|(v, slot)| slot.failure.as_ref().map(|f| format!("version {v}: {f}"))).collect();
                ServeError::NoVersionReady { name: name.to_string(), why: failures.join("; ") }
            }),
            Some(version) => versions.get(&version).and_then(|slot| slot.serving.clone()).ok_or_else(|| ServeError::VersionNotReady {
                name: name.to_string(),
                version,
                ready: ready_versions(versions).iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// Whether `name` has a ready version.
    pub fn serves(&self, name: &str) -> bool {
        self.read().get(name).is_some_and(|versions| newest_ready(versions).is_some())
    }

    /// The default version of every model that has a ready one.
    pub fn ready(&self) -> Vec<Arc<ModelVersion>> {
        self.read().values().filter_map(newest_ready).collect()
    }

    /// The ready versions of `name`, oldest first.
    pub fn ready_versions(&self, name: &str) -> Vec<u64> {
        self.read().get(name).map(ready_versions).unwrap_or_default()
    }

    /// Every ready version of `name`, or of every model when `None`, by name then version.
    pub fn ready_all(&self, name: Option<&str>) -> Vec<Arc<ModelVersion>> {
        let models = self.read();
        let serving = |versions: &Versions| versions.values().filter_map(|slot| slot.serving.clone()).collect::<Vec<_>>();
        match name {
            Some(name) => models.get(name).map(serving).unwrap_or_default(),
            None => models.values().flat_map(serving).collect(),
        }
    }

    pub fn names(&self) -> Vec<String> {
        ready_names(&self.read())
    }

    /// Every version known, ready or not, with the reason of its last failure.
    pub fn index(&self) -> Vec<VersionState> {
        self.read()
            .iter()
            .flat_map(|(name, versions)| {
                versions.iter().map(|(version, slot)| VersionState {
                    name: name.clone(),
                    version: *version,
                    ready: slot.serving.is_some(),
                    failure: slot.failure.clone(),
                })
            })
            .collect()
    }

    /// Ends every rollout, of every version loaded now or before, with UNAVAILABLE
    /// (the server is going away).
    pub fn end_rollouts(&self) {
        self.shutdown.send_replace(true);
    }

    /// (Re)loads `name` from the repository, for RepositoryModelLoad and `--load-model`.
    /// A version that cannot load keeps what it served before, and the index says why.
    /// The load succeeds when the model serves after it and every version it served
    /// before took its files again: a new version that cannot load beside ones that do
    /// is the index's to report, while a reload that did not take fails the call.
    pub fn load(&self, name: &str) -> Result<(), RepositoryError> {
        self.explicit()?;
        let serving_before = self.ready_versions(name);
        let failures = self.sync(Some(name))?;
        let ready = self.ready_versions(name);
        let reload_failed = self.index().iter().any(|state| state.name == name && state.failure.is_some() && serving_before.contains(&state.version));
        if failures.is_empty() || (!ready.is_empty() && !reload_failed) {
            for failure in &failures {
                tracing::warn!(model = name, reason = %failure, "a version was not loaded; the others serve");
            }
            return Ok(());
        }
        let kept = match ready.as_slice() {
            [] => "nothing of it is served".to_string(),
            ready => format!("still serving version(s) {}", ready.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")),
        };
        Err(RepositoryError::LoadFailed { name: name.to_string(), kept, reasons: failures.join("; ") })
    }

    /// Stops serving every version of `name`; calls and rollouts in flight finish.
    pub fn unload(&self, name: &str) -> Result<(), RepositoryError> {
        self.explicit()?;
        let mut models = self.write();
        let Some(versions) = models.get_mut(name) else {
            return Err(RepositoryError::NotInRepository { name: name.to_string(), dir: self.dir.clone() });
        };
        // Kept in the index as unavailable; the next load retries it as a failed version.
        let unloaded: Vec<_> = versions
            .values_mut()
            .filter_map(|slot| {
                slot.failure = Some(UNLOADED.to_string());
                slot.serving.take()
            })
            .collect();
        drop(models);
        drop(unloaded);
        tracing::info!(model = name, "model unloaded");
        Ok(())
    }

    /// Brings the served versions in line with the files, for every model or one;
    /// returns why versions failed to load.
    pub fn sync(&self, only: Option<&str>) -> Result<Vec<String>, RepositoryError> {
        let _one_at_a_time = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<VersionFolder> = scan(&self.dir)?.into_iter().filter(|f| only.is_none_or(|name| f.name == name)).collect();
        // Newest first: requests that name no version go to the newest as soon as it is
        // up, never briefly to an older one loaded before it.
        found.sort_by(|a, b| (&a.name, std::cmp::Reverse(a.version)).cmp(&(&b.name, std::cmp::Reverse(b.version))));
        if let Some(name) = only
            && found.is_empty()
        {
            return Err(RepositoryError::NotInRepository { name: name.to_string(), dir: self.dir.clone() });
        }
        let mut failures = Vec::new();
        let mut folders_of: BTreeMap<(String, u64), Vec<PathBuf>> = BTreeMap::new();
        for found in &found {
            folders_of.entry((found.name.clone(), found.version)).or_default().push(found.folder.clone());
        }
        let mut seen: BTreeMap<(String, u64), PathBuf> = BTreeMap::new();
        for VersionFolder { name, version, folder } in found {
            if seen.contains_key(&(name.clone(), version)) {
                continue;
            }
            seen.insert((name.clone(), version), folder.clone());
            let stamp = stamp(&folder);
            let claimants = &folders_of[&(name.clone(), version)];
            if claimants.len() > 1 {
                // No folder wins by the order of its name: both are refused, and a version
                // already serving goes on until the clash is resolved.
                let listed: Vec<String> = claimants.iter().map(|f| f.display().to_string()).collect();
                let reason = format!(
                    "version {version} of '{name}' is in {} folders ({}): none is loaded until one is renamed (a flat folder serves the name its card gives)",
                    claimants.len(),
                    listed.join(", ")
                );
                tracing::error!(model = %name, version, error = %reason, "model version refused");
                let mut models = self.write();
                let slot = slot_of(&mut models, &name, version, &folder, stamp);
                // No stamp: once the clash is resolved, the next sync loads whichever folder is left.
                slot.stamp = FileStamp::default();
                slot.failure = Some(reason.clone());
                failures.push(reason);
                continue;
            }
            let unchanged = {
                // An explicit load retries a version that failed (or was unloaded); a poll
                // waits for its files to change.
                let retry_failed = only.is_some();
                self.read()
                    .get(&name)
                    .and_then(|versions| versions.get(&version))
                    .is_some_and(|slot| slot.folder == folder && slot.stamp == stamp && !(retry_failed && slot.failure.is_some()))
            };
            if unchanged {
                continue;
            }
            let loaded = ModelVersion::load(&folder, &name, version, self.device, self.pool, &self.budget, self.shutdown.subscribe());
            let mut models = self.write();
            let slot = slot_of(&mut models, &name, version, &folder, stamp);
            slot.folder = folder;
            slot.stamp = stamp;
            match loaded {
                Ok(model) => {
                    log_loaded(&model, slot.serving.is_some());
                    slot.failure = None;
                    let replaced = slot.serving.replace(Arc::new(model));
                    // Outside the lock: the last holder of a pool joins its workers.
                    drop(models);
                    drop(replaced);
                }
                Err(e) => {
                    let reason = e.to_string();
                    let kept = slot.serving.is_some();
                    tracing::error!(model = %name, version, error = %reason, kept_serving = kept, "model version failed to load");
                    slot.failure = Some(reason.clone());
                    failures.push(reason);
                }
            }
        }
        // Versions whose folders are gone stop serving.
        let mut models = self.write();
        let mut removed = Vec::new();
        for (name, versions) in models.iter_mut().filter(|(name, _)| only.is_none_or(|only| only == name.as_str())) {
            versions.retain(|version, slot| {
                let keep = seen.contains_key(&(name.clone(), *version));
                if !keep {
                    tracing::info!(model = %name, version, "model version removed from the repository; unloaded");
                    removed.extend(slot.serving.take());
                }
                keep
            });
        }
        models.retain(|_, versions| !versions.is_empty());
        drop(models);
        drop(removed);
        Ok(failures)
    }

    // The map's guards. A poisoned lock is taken as it is: serving on with the map as a
    // panicking holder left it beats refusing every request after one panic.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Versions>> {
        self.models.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Versions>> {
        self.models.write().unwrap_or_else(|e| e.into_inner())
    }

    fn explicit(&self) -> Result<(), RepositoryError> {
        match self.control {
            ModelControl::Explicit => Ok(()),
            control => Err(RepositoryError::NotExplicit { control }),
        }
    }
}

fn newest_ready(versions: &Versions) -> Option<Arc<ModelVersion>> {
    versions.values().rev().find_map(|slot| slot.serving.clone())
}

fn ready_versions(versions: &Versions) -> Vec<u64> {
    versions.iter().filter(|(_, slot)| slot.serving.is_some()).map(|(version, _)| *version).collect()
}

fn ready_names(models: &BTreeMap<String, Versions>) -> Vec<String> {
    models.iter().filter(|(_, versions)| newest_ready(versions).is_some()).map(|(name, _)| name.clone()).collect()
}

fn log_loaded(model: &ModelVersion, replacing: bool) {
    tracing::info!(
        model = %model.summary.name,
        version = model.version,
        architecture = %model.summary.architecture,
        params = model.summary.params,
        execution_provider = model.workers.execution_provider(),
        workers = model.workers.workers(),
        bytes_per_frame = model.workers.frame_cost(),
        max_batch_frames = model.workers.max_batch_frames(),
        "{}",
        if replacing { "model version reloaded" } else { "model version loaded" }
    );
}

/// The slot of `name`'s `version`, made empty (from `folder`, `stamp`) if it had none.
fn slot_of<'a>(models: &'a mut BTreeMap<String, Versions>, name: &str, version: u64, folder: &Path, stamp: FileStamp) -> &'a mut VersionSlot {
    models.entry(name.to_string()).or_default().entry(version).or_insert_with(|| VersionSlot {
        folder: folder.to_path_buf(),
        stamp,
        serving: None,
        failure: None,
    })
}

fn holds_model(folder: &Path) -> bool {
    folder.join(CARD_FILE).is_file() || folder.join(MODEL_FILE).is_file()
}

/// Every version folder: `<name>/<version>/` named by the folder, or a flat `<name>/`
/// as version 1 named by its card (by the folder when the card cannot be read; its load
/// then says why). Hidden folders are skipped. The one scan of a models directory: the
/// server's, `train-export report`'s and the benches'.
pub fn scan(dir: &Path) -> Result<Vec<VersionFolder>, RepositoryError> {
    let unreadable = |path: &Path, e: std::io::Error| RepositoryError::Unreadable { path: path.to_path_buf(), message: e.to_string() };
    let mut found = Vec::new();
    let mut folders: Vec<PathBuf> = fs::read_dir(dir).map_err(|e| unreadable(dir, e))?.filter_map(|entry| entry.ok().map(|e| e.path())).collect();
    folders.sort();
    for folder in folders.into_iter().filter(|f| f.is_dir()) {
        let folder_name = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // Hidden folders are where versions are staged before they are renamed in.
        if folder_name.starts_with('.') {
            continue;
        }
        if holds_model(&folder) {
            let card_name =
                fs::read_to_string(folder.join(CARD_FILE)).ok().and_then(|json| serde_json::from_str::<CardSummary>(&json).ok()).map(|card| card.name);
            found.push(VersionFolder { name: card_name.unwrap_or(folder_name), version: 1, folder });
            continue;
        }
        let Ok(entries) = fs::read_dir(&folder) else { continue };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let version = entry.file_name().to_str().and_then(|v| v.parse::<u64>().ok()).filter(|&v| v > 0);
            if let Some(version) = version
                && holds_model(&path)
            {
                found.push(VersionFolder { name: folder_name.clone(), version, folder: path });
            }
        }
    }
    found.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    Ok(found)
}

fn stamp(folder: &Path) -> FileStamp {
    let of = |file: &str| fs::metadata(folder.join(file)).map(|m| (m.len(), m.modified().ok())).unwrap_or((0, None));
    [of(CARD_FILE), of(MODEL_FILE)]
}
