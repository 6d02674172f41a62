//! Finding and loading the ONNX Runtime library, and running exported models with it.

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use ndarray::{Array2, Array3, ArrayD, ArrayView3, ArrayView4, Ix2};
use ort::{
    environment::Environment,
    ep::{self, ExecutionProvider},
    session::{Session, SessionInputValue},
    value::{Outlet, TensorElementType, TensorRef, ValueType},
};

use super::{
    DX, DX_STD, NamedTensors, POSITIONS, PREVIOUS, Signature,
    signature::{Dim, FLOAT32, TensorSpec},
};

/// Env var naming the ONNX Runtime library explicitly (the `--ort-lib` flag's fallback).
pub const LIBRARY_ENV: &str = "EQUISERVE_ORT_LIB";
/// Where `scripts/setup` installs the library, relative to the project root.
const PROJECT_LIBRARY_DIR: &str = ".ort/lib";

/// Threads for a CPU session that has the machine to itself: one per core (1 where the
/// count cannot be read).
pub fn every_core() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found; looked for {}. Run scripts/setup to install it, or pass --ort-lib / set {LIBRARY_ENV}",
        .tried.join(", ")
    )]
    LibraryNotFound { tried: Vec<String> },
    #[error("cannot load the ONNX Runtime library {path}: {message}")]
    LibraryUnusable { path: String, message: String },
    #[error("CUDA was requested but is not usable: {0}")]
    CudaUnavailable(String),
    #[error("{path}: {message}")]
    Model { path: String, message: String },
    #[error("{path} does not have the signature its card states: {message}")]
    SignatureMismatch { path: String, message: String },
    #[error("inference failed: {0}")]
    Inference(String),
}

/// Where the model runs; `Auto` uses CUDA when ONNX Runtime can, else the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutionDevice {
    Auto,
    Cpu,
    Cuda,
}

fn library_file_name() -> String {
    format!("{}onnxruntime{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

/// Project-local copies first (above the executable, the working directory, and the
/// source tree this binary was built from), then the bare name for the system's loader.
pub fn library_candidates() -> Vec<PathBuf> {
    let file = library_file_name();
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let mut candidates: Vec<PathBuf> = Vec::new();
    for root in roots {
        let candidate = root.join(PROJECT_LIBRARY_DIR).join(&file);
        if !candidates.contains(&candidate) {
            candidates.push(candidate);
        }
    }
    candidates.push(PathBuf::from(file));
    candidates
}

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// Loads ONNX Runtime once per process. An explicit path (flag or env var) is the
/// user's choice and is the only one tried; otherwise the candidates are tried in order.
/// Returns the error instead of panicking, unlike `ort::init()` on a missing library.
pub fn init_runtime(explicit: Option<&Path>) -> Result<&'static Environment, RuntimeError> {
    if let Some(environment) = ENVIRONMENT.get() {
        return Ok(environment);
    }
    let explicit = explicit.map(Path::to_path_buf).or_else(|| std::env::var_os(LIBRARY_ENV).map(PathBuf::from));
    let candidates = match explicit {
        Some(path) => vec![path],
        None => library_candidates(),
    };
    let mut tried = Vec::new();
    for candidate in &candidates {
        // A bare file name is resolved by the system loader; a path must exist.
        if candidate.components().count() > 1 && !candidate.exists() {
            tried.push(candidate.display().to_string());
            continue;
        }
        let builder = match ort::init_from(candidate) {
            Ok(builder) => builder,
            Err(e) if candidates.len() > 1 => {
                tried.push(format!("{} ({e})", candidate.display()));
                continue;
            }
            Err(e) => {
                return Err(RuntimeError::LibraryUnusable { path: candidate.display().to_string(), message: e.to_string() });
            }
        };
        let environment = builder
            .with_name("equiserve")
            .build()
            .map_err(|e| RuntimeError::LibraryUnusable { path: candidate.display().to_string(), message: e.to_string() })?;
        tracing::debug!(library = %candidate.display(), "ONNX Runtime loaded");
        return Ok(ENVIRONMENT.get_or_init(|| environment));
    }
    Err(RuntimeError::LibraryNotFound { tried })
}

/// Where a session's graph comes from.
enum GraphSource<'a> {
    File(&'a Path),
    Memory { bytes: &'a [u8], label: &'a str },
}

impl GraphSource<'_> {
    fn label(&self) -> String {
        match self {
            GraphSource::File(path) => path.display().to_string(),
            GraphSource::Memory { label, .. } => (*label).to_string(),
        }
    }
}

/// One ONNX Runtime session of an exported model. `run` needs `&mut self`, so each
/// serving worker owns one of these rather than sharing it behind a lock.
pub struct OnnxModel {
    session: Session,
    signature: Signature,
    execution_provider: &'static str,
}

impl OnnxModel {
    /// Loads `path` on `device` with `intra_threads` threads for the CPU kernels and
    /// checks that the graph's inputs and outputs are those of `signature`. Memory a call
    /// took on the CPU goes back after it.
    pub fn load(path: &Path, signature: &Signature, device: ExecutionDevice, intra_threads: usize) -> Result<Self, RuntimeError> {
        Self::load_with_arena(path, signature, device, intra_threads, false)
    }

    /// [`load`](Self::load), with ONNX Runtime's CPU memory arena when `cpu_arena`: the
    /// memory of the largest call stays with the session for the next, which spares large
    /// batches mapping and freeing their intermediates at every call (1,024-system
    /// rollouts of pairforce-h4's earlier 144-pair graph ran 1.6× as fast on 2 cores, of
    /// its 66-pair f32 graph 1.01–1.04×) at the cost of keeping that peak for good.
    pub fn load_with_arena(path: &Path, signature: &Signature, device: ExecutionDevice, intra_threads: usize, cpu_arena: bool) -> Result<Self, RuntimeError> {
        Self::open(GraphSource::File(path), signature, device, intra_threads, cpu_arena)
    }

    /// A CPU session of a graph held in memory (`label` names it in errors): for graphs
    /// run while they are built, such as a model's during its calibration.
    pub fn from_bytes(bytes: &[u8], label: &str, signature: &Signature, intra_threads: usize) -> Result<Self, RuntimeError> {
        Self::open(GraphSource::Memory { bytes, label }, signature, ExecutionDevice::Cpu, intra_threads, false)
    }

    fn open(source: GraphSource, signature: &Signature, device: ExecutionDevice, intra_threads: usize, cpu_arena: bool) -> Result<Self, RuntimeError> {
        let environment = init_runtime(None)?;
        let label = source.label();
        let model_error = |message: String| RuntimeError::Model { path: label.clone(), message };
        let mut builder =
            Session::builder(environment).and_then(|b| b.with_intra_threads(intra_threads).map_err(Into::into)).map_err(|e| model_error(e.to_string()))?;
        let mut execution_provider = "CPUExecutionProvider";
        if device != ExecutionDevice::Cpu {
            // ort silently falls back to the CPU unless told to fail, so ask it to fail and decide here.
            // ONNX Runtime's CUDA provider defaults to TF32 matmuls (10-bit mantissa): dx
            // then differs from the exported function by ~1e-3, far outside its parity.
            let cuda = ep::CUDA::default().with_tf32(false);
            let registered = match ep::CUDA::is_available() {
                Ok(true) => builder.with_execution_providers([cuda.build().error_on_failure()]).map_err(|e| {
                    let message = e.to_string();
                    (e.recover(), message)
                }),
                Ok(false) => Err((builder, "this ONNX Runtime build has no CUDA execution provider".to_string())),
                Err(e) => Err((builder, e.to_string())),
            };
            builder = match registered {
                Ok(builder) => {
                    execution_provider = ep::CUDA::NAME;
                    builder
                }
                Err((_, message)) if device == ExecutionDevice::Cuda => {
                    return Err(RuntimeError::CudaUnavailable(message));
                }
                Err((builder, message)) => {
                    // Said once per process: every session of every model would repeat it.
                    static REPORTED: std::sync::Once = std::sync::Once::new();
                    REPORTED.call_once(|| tracing::info!(reason = %message, "CUDA unavailable; running on the CPU"));
                    builder
                }
            };
        }
        // Without the arena, memory a large batch took goes back after it; with it, the
        // session keeps its peak for good.
        let mut builder =
            builder.with_execution_providers([ep::CPU::default().with_arena_allocator(cpu_arena).build()]).map_err(|e| model_error(e.to_string()))?;
        let session = match source {
            GraphSource::File(path) => builder.commit_from_file(path),
            GraphSource::Memory { bytes, .. } => builder.commit_from_memory(bytes),
        }
        .map_err(|e| model_error(e.to_string()))?;
        check_outlets("input", session.inputs(), &signature.inputs)
            .and_then(|()| check_outlets("output", session.outputs(), &signature.outputs))
            .map_err(|message| RuntimeError::SignatureMismatch { path: label.clone(), message })?;
        Ok(Self { session, signature: signature.clone(), execution_provider })
    }

    /// The dynamics signature of a model file that comes without a card: its inputs
    /// `positions` [batch, 12, 3] (and `previous` [batch, K − 1, 12, 3]) and outputs `dx`
    /// [batch, 12, 3] (and `dx_std` [batch, 12]), read from the graph; a file whose
    /// inputs and outputs do not fit that interface is refused with what it has.
    pub fn read_signature(path: &Path) -> Result<Signature, RuntimeError> {
        let environment = init_runtime(None)?;
        let model_error = |message: String| RuntimeError::Model { path: path.display().to_string(), message };
        let session = Session::builder(environment)
            .and_then(|b| b.with_intra_threads(1).map_err(Into::into))
            .and_then(|mut b| b.commit_from_file(path))
            .map_err(|e| model_error(e.to_string()))?;
        let held = session.inputs().iter().find(|input| input.name() == PREVIOUS).and_then(|input| match input.dtype() {
            ValueType::Tensor { shape, .. } => shape.get(1).copied(),
            _ => None,
        });
        let history_frames = match held {
            None => 1,
            Some(held) if held >= 1 => held as usize + 1,
            Some(held) => {
                return Err(RuntimeError::SignatureMismatch {
                    path: path.display().to_string(),
                    message: format!("'{PREVIOUS}' holds {held} frames; it must hold a fixed number, at least 1"),
                });
            }
        };
        let stochastic = session.outputs().iter().any(|output| output.name() == DX_STD);
        let signature = Signature::dynamics_of(history_frames, stochastic);
        check_outlets("input", session.inputs(), &signature.inputs)
            .and_then(|()| check_outlets("output", session.outputs(), &signature.outputs))
            .map_err(|message| RuntimeError::SignatureMismatch {
                path: path.display().to_string(),
                message: format!(
                    "{message}: a model served without a card takes {POSITIONS} [batch, 12, 3] (and {PREVIOUS} [batch, K − 1, 12, 3]) and gives {DX} [batch, 12, 3] (and {DX_STD} [batch, 12])"
                ),
            })?;
        Ok(signature)
    }

    /// The execution provider that really runs this model.
    pub fn execution_provider(&self) -> &'static str {
        self.execution_provider
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Runs the model on `inputs`, one tensor per input of its signature, and gives
    /// every output of the signature.
    pub fn infer(&mut self, inputs: &NamedTensors) -> Result<NamedTensors, RuntimeError> {
        let inference = |e: ort::Error| RuntimeError::Inference(e.to_string());
        let mut contiguous = Vec::with_capacity(self.signature.inputs.len());
        for spec in &self.signature.inputs {
            let value = inputs.get(&spec.name).ok_or_else(|| RuntimeError::Inference(format!("input '{}' was not given", spec.name)))?;
            contiguous.push((spec.name.as_str(), value.as_standard_layout()));
        }
        let mut feed: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(contiguous.len());
        for (name, value) in &contiguous {
            feed.push((*name, TensorRef::from_array_view(value.view()).map_err(inference)?.into()));
        }
        let batch = inputs.batch();
        let outputs = self.session.run(feed).map_err(inference)?;
        let mut answers = NamedTensors::new();
        for spec in &self.signature.outputs {
            let value: ArrayD<f32> = outputs[spec.name.as_str()].try_extract_array::<f32>().map_err(inference)?.to_owned();
            answers.insert(&spec.name, value);
        }
        self.signature.check_outputs(&answers, batch).map_err(RuntimeError::Inference)?;
        Ok(answers)
    }

    /// dx float32 [batch, 12, 3] for positions float32 [batch, 12, 3], for a model that
    /// reads one snapshot.
    pub fn run(&mut self, positions: ArrayView3<f32>) -> Result<Array3<f32>, RuntimeError> {
        self.dx(NamedTensors::dynamics(positions.to_owned(), None))
    }

    /// dx for positions [batch, 12, 3] and the frames before them [batch, K − 1, 12, 3]
    /// (fed only when the model reads them).
    pub fn run_window(&mut self, positions: ArrayView3<f32>, previous: ArrayView4<f32>) -> Result<Array3<f32>, RuntimeError> {
        self.run_window_with_std(positions, previous).map(|(dx, _)| dx)
    }

    /// dx and, for a stochastic model, dx_std [batch, 12], for a window as
    /// [`run_window`](Self::run_window) takes it.
    pub fn run_window_with_std(&mut self, positions: ArrayView3<f32>, previous: ArrayView4<f32>) -> Result<(Array3<f32>, Option<Array2<f32>>), RuntimeError> {
        let previous = self.signature.input(PREVIOUS).is_some().then(|| previous.to_owned());
        let mut outputs = self.infer(&NamedTensors::dynamics(positions.to_owned(), previous))?;
        let dx = outputs.take_dx().ok_or_else(|| RuntimeError::Inference(format!("the model gave no '{DX}' [batch, 12, 3]")))?;
        let dx_std = match outputs.remove(DX_STD) {
            Some(std) => Some(std.into_dimensionality::<Ix2>().map_err(|_| RuntimeError::Inference(format!("'{DX_STD}' is not [batch, 12]")))?),
            None => None,
        };
        Ok((dx, dx_std))
    }

    fn dx(&mut self, inputs: NamedTensors) -> Result<Array3<f32>, RuntimeError> {
        self.infer(&inputs)?.take_dx().ok_or_else(|| RuntimeError::Inference(format!("the model gave no '{DX}' [batch, 12, 3]")))
    }
}

/// Compares the graph's inputs or outputs with the signature's: the same names, float32,
/// the same fixed sizes, and a dynamic leading batch.
fn check_outlets(kind: &str, outlets: &[Outlet], specs: &[TensorSpec]) -> Result<(), String> {
    let found: Vec<&str> = outlets.iter().map(Outlet::name).collect();
    let expected: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    if found.len() != expected.len() || expected.iter().any(|name| !found.contains(name)) {
        return Err(format!("{kind}s are {found:?}, expected {expected:?}"));
    }
    for spec in specs {
        let outlet = outlets.iter().find(|o| o.name() == spec.name).expect("names checked above");
        let dims = spec.dims().ok_or_else(|| format!("the card's {kind} {spec} has a shape entry that is neither a size nor 'batch'"))?;
        if spec.dtype != FLOAT32 {
            return Err(format!("the card's {kind} {spec} is not float32, the only element type served"));
        }
        let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
            return Err(format!("{kind} '{}' is not a tensor", spec.name));
        };
        if *ty != TensorElementType::Float32 {
            return Err(format!("{kind} '{}' is {ty:?}, expected float32", spec.name));
        }
        let fits = shape.len() == dims.len()
            && shape.iter().zip(&dims).all(|(&size, dim)| match dim {
                Dim::Batch => size < 0,
                Dim::Fixed(n) => size == *n as i64,
            });
        if !fits {
            return Err(format!("{kind} '{}' has shape {:?} (-1: dynamic), expected [{}]", spec.name, &shape[..], spec.shape.join(", ")));
        }
    }
    Ok(())
}
