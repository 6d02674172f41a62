//! Writing a trained model as `model.onnx` + `card.json` (+ figures), after checking
//! that ONNX Runtime computes the same function as the trained model.

use std::{
    fs,
    path::{Path, PathBuf},
};

use burn::tensor::Device;
use ndarray::{Array3, ArrayView3, s};
use prost::Message;
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

use super::{
    EpochStats, TrainConfig,
    metrics::{EquivarianceReport, evaluate},
    plot_losses, predict_dx,
};
use crate::{
    card::{CARD_FILE, DataInfo, MODEL_FILE, Metrics, ModelCard, OnnxInfo, SplitInfo, TensorInfo, TrainingInfo, Versions},
    data::{DIMS, PARTICLES, Split, SplitConfig, Target},
    models::{DynamicsModel, ModelKind},
    onnx::{ExecutionDevice, GraphBuilder, INPUT_NAME, IR_VERSION, OPSET, OUTPUT_NAME, OnnxModel},
};

/// Above this, the exported graph does not compute the trained model's function.
pub const PARITY_TOLERANCE: f64 = 1e-5;
pub const LOSS_PLOT_FILE: &str = "loss.svg";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ONNX parity check failed for {name}: relative error {error:.3e} > {PARITY_TOLERANCE:e}; nothing was written")]
    Parity { name: String, error: f64 },
    #[error(transparent)]
    Runtime(#[from] crate::onnx::RuntimeError),
}

/// Everything about the run that the card records besides the model itself.
pub struct ExportRequest<'a> {
    pub kind: ModelKind,
    /// Models are written to `out_dir/<name>/`.
    pub out_dir: &'a Path,
    pub split: &'a Split,
    pub split_config: SplitConfig,
    pub data: DataInfo,
    pub config: &'a TrainConfig,
    pub history: Vec<EpochStats>,
}

pub struct ExportOutcome {
    pub dir: PathBuf,
    pub card: ModelCard,
}

/// Exports, checks parity through ONNX Runtime, evaluates, and only then replaces
/// any previous files in `out_dir/<name>/`, so a failed export never loses a model.
pub fn export_model<M: DynamicsModel>(model: &M, request: ExportRequest, device: &Device) -> Result<ExportOutcome, ExportError> {
    let name = request.kind.name();
    let dir = request.out_dir.join(name);
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ExportError::Io { path, source }
    };
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let description = request.kind.describe();
    let target = request.config.target;

    let mut graph = GraphBuilder::new();
    let input = graph.input();
    let mut output = model.emit_onnx(&mut graph, &input);
    if target == Target::X {
        // The served interface is always dx.
        output = graph.sub(&output, &input);
    }
    let architecture = description["architecture"].as_str().unwrap_or(name).to_string();
    let proto = graph.finish(
        &output,
        &format!("equiserve {name}: positions [batch, 12, 3] -> dx [batch, 12, 3]"),
        &[("equiserve.model", name.to_string()), ("equiserve.architecture", architecture.clone())],
    );
    let staged_model = dir.join(format!("{MODEL_FILE}.partial"));
    fs::write(&staged_model, proto.encode_to_vec()).map_err(io(&staged_model))?;

    let parity = check_parity(model, &staged_model, request.split.test.inputs.view(), target, device, request.config.seed);
    let parity_relative_error = match parity {
        Ok(error) if error <= PARITY_TOLERANCE => error,
        failed => {
            let _ = fs::remove_file(&staged_model);
            return Err(match failed {
                Ok(error) => ExportError::Parity { name: name.to_string(), error },
                Err(e) => e,
            });
        }
    };

    let mut burn_dx = |x: ArrayView3<f32>| predict_dx(model, x, target, device);
    let train = evaluate(&mut burn_dx, &request.split.train);
    let test = evaluate(&mut burn_dx, &request.split.test);
    let probe_frames = request.split.test.inputs.slice(s![..8.min(request.split.test.len()), .., ..]);
    let equivariance = EquivarianceReport::measure(&mut burn_dx, probe_frames, 8, request.config.seed);

    let frames_info = |name: &str| TensorInfo {
        name: name.to_string(),
        dtype: "float32".into(),
        shape: vec!["batch".into(), PARTICLES.to_string(), DIMS.to_string()],
    };
    let history = request.history;
    let card = ModelCard {
        name: name.to_string(),
        architecture,
        summary: description["summary"].as_str().unwrap_or_default().to_string(),
        hyperparameters: description["hyperparameters"].clone(),
        equivariant: description["equivariant"].as_bool().unwrap_or(false),
        params: model.num_params(),
        data: request.data,
        split: SplitInfo {
            config: request.split_config,
            train_pairs: request.split.train.len(),
            test_pairs: request.split.test.len(),
        },
        training: TrainingInfo {
            config: request.config.clone(),
            seconds_per_epoch: median(history.iter().map(|s| s.seconds).collect()),
            history,
        },
        metrics: Metrics { target, train, test },
        equivariance,
        onnx: OnnxInfo {
            file: MODEL_FILE.into(),
            input: frames_info(INPUT_NAME),
            output: frames_info(OUTPUT_NAME),
            opset: OPSET,
            ir_version: IR_VERSION,
            parity_relative_error,
        },
        versions: Versions {
            equiserve: env!("CARGO_PKG_VERSION").into(),
            burn: "0.22.1".into(),
            ort: "2.0.0-rc.15".into(),
        },
    };
    let staged_card = dir.join(format!("{CARD_FILE}.partial"));
    let json = serde_json::to_string_pretty(&card).expect("model cards serialize");
    fs::write(&staged_card, json).map_err(io(&staged_card))?;
    fs::rename(&staged_model, dir.join(MODEL_FILE)).map_err(io(&dir))?;
    fs::rename(&staged_card, dir.join(CARD_FILE)).map_err(io(&dir))?;
    if let Err(message) = plot_losses(&card.training.history, &format!("{name}: MSE of dx"), &dir.join(LOSS_PLOT_FILE)) {
        tracing::warn!(%message, "loss plot not drawn");
    }
    Ok(ExportOutcome { dir, card })
}

/// max |ONNX − Burn| / max |Burn| over the test inputs and Gaussian random frames.
fn check_parity<M: DynamicsModel>(
    model: &M,
    onnx_file: &Path,
    test_inputs: ArrayView3<f32>,
    target: Target,
    device: &Device,
    seed: u64,
) -> Result<f64, ExportError> {
    let mut session = OnnxModel::load(onnx_file, ExecutionDevice::Cpu, 1)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let random = Array3::from_shape_simple_fn((16, PARTICLES, DIMS), || StandardNormal.sample(&mut rng));
    let mut worst = 0.0_f64;
    for inputs in [test_inputs, random.view()] {
        let expected = predict_dx(model, inputs, target, device);
        let actual = session.run(inputs)?;
        let scale = expected.iter().fold(0.0_f64, |m, v| m.max(f64::from(v.abs()))).max(f64::MIN_POSITIVE);
        let error = actual.iter().zip(&expected).fold(0.0_f64, |m, (a, e)| m.max(f64::from((a - e).abs())));
        worst = worst.max(error / scale);
    }
    Ok(worst)
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
