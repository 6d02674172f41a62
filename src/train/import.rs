//! `train-export import-e3nn`: a gate network trained with PyTorch/e3nn (its kwargs
//! as JSON, its state dict as safetensors) turned into a served model.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use ndarray::{Array3, Array4, ArrayView3, ArrayView4, Axis};
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Normal};
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use super::{
    ExportError, ExportOutcome,
    export::{commit_model, relative_error, stage_checked},
    metrics::EquivarianceReport,
    onnx_graph::GraphBuilder,
    ops_fit::reference_dx,
};
use crate::{
    card::{ImportInfo, ModelCard, OnnxInfo, Versions},
    data::{DIMS, PARTICLES, Target},
    models::{GateNetwork, GateNetworkConfig, GateNetworkError, OpsModel},
    onnx::{ExecutionDevice, OnnxModel, Signature},
};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{path}: {source}")]
    Network {
        path: String,
        #[source]
        source: GateNetworkError,
    },
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Runtime(#[from] crate::onnx::RuntimeError),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> ImportError {
    ImportError::File { path: path.display().to_string(), message: message.to_string() }
}

/// Tensors by name: (shape, values in f64).
pub type Tensors = HashMap<String, (Vec<usize>, Vec<f64>)>;

/// Every tensor of a safetensors file as (shape, values in f64); f32 and f64 only.
pub fn read_safetensors(path: &Path) -> Result<(Tensors, Vec<u8>), ImportError> {
    let bytes = fs::read(path).map_err(|e| file_error(path, e))?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| file_error(path, format!("not a safetensors file ({e})")))?;
    let mut out = HashMap::new();
    for (name, view) in tensors.tensors() {
        let data = view.data();
        let values: Vec<f64> = match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))).collect(),
            Dtype::F64 => data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect(),
            other => return Err(file_error(path, format!("tensor '{name}' is {other:?}; only F32 and F64 are supported"))),
        };
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok((out, bytes))
}

/// Builds the network from the two files, with every problem named by file and key.
pub fn load_gate_network(kwargs_path: &Path, weights_path: &Path) -> Result<(GateNetwork, Vec<u8>), ImportError> {
    let text = fs::read_to_string(kwargs_path).map_err(|e| file_error(kwargs_path, e))?;
    let config: GateNetworkConfig = serde_json::from_str(&text).map_err(|e| file_error(kwargs_path, e))?;
    let mut network = GateNetwork::new(config).map_err(|source| ImportError::Network { path: kwargs_path.display().to_string(), source })?;
    let (tensors, bytes) = read_safetensors(weights_path)?;
    network.load_state_dict(&tensors).map_err(|source| ImportError::Network { path: weights_path.display().to_string(), source })?;
    Ok((network, bytes))
}

/// Frames shaped like the study's: a 12-bead chain with bonds about 0.36, rotated at random.
fn probe_frames(seed: u64, frames: usize) -> Array3<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let step = Normal::new(0.0, 0.36 / 3f64.sqrt()).expect("normal");
    let mut out = Array3::<f32>::zeros((frames, PARTICLES, DIMS));
    for f in 0..frames {
        let mut p = [0.0f64; 3];
        for i in 0..PARTICLES {
            for d in 0..DIMS {
                p[d] += step.sample(&mut rng);
                out[[f, i, d]] = p[d] as f32;
            }
        }
    }
    out
}

/// `held` frames before each of `frames`, oldest first: the chain drifting by small
/// Gaussian steps, as a history model's window holds it.
fn probe_previous(frames: &Array3<f32>, held: usize, seed: u64) -> Array4<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let step = Normal::new(0.0, 0.01).expect("normal");
    let mut previous = Array4::zeros((frames.dim().0, held, PARTICLES, DIMS));
    for k in (0..held).rev() {
        let newer = if k + 1 == held { frames.clone() } else { previous.index_axis(Axis(1), k + 1).to_owned() };
        let older = newer.mapv(|v| v + step.sample(&mut rng) as f32);
        previous.index_axis_mut(Axis(1), k).assign(&older);
    }
    previous
}

/// Writes `out_dir/model.onnx` and `out_dir/card.json` for the gate network in the
/// two files, after checking ONNX Runtime against the f64 layers.
pub fn import_e3nn(kwargs_path: &Path, weights_path: &Path, out_dir: &Path, name: &str) -> Result<ExportOutcome, ImportError> {
    let (network, weight_bytes) = load_gate_network(kwargs_path, weights_path)?;
    let signature = Signature::dynamics(network.history_frames());
    let emit = |precision| {
        let mut graph = GraphBuilder::new(signature.clone(), precision);
        let output = graph.emit(&network);
        graph.finish(
            &[output],
            &format!("equiserve {name}: e3nn gate_points_2101.Network imported from {}", weights_path.display()),
            &[("equiserve.model", name.to_string()), ("equiserve.architecture", "gate_points_2101.Network".into())],
        )
    };
    let frames = probe_frames(0, 8);
    let previous = probe_previous(&frames, network.history_frames() - 1, 1);
    let expected = reference_dx(&network, frames.view(), previous.view(), Target::Dx);
    let (staged, precision, parity, mut session) = stage_checked(out_dir, name, emit, |file| {
        let mut session = OnnxModel::load(file, &signature, ExecutionDevice::Cpu, 1)?;
        let actual = session.run_window(frames.view(), previous.view())?;
        Ok((relative_error(&actual, &expected), session))
    })?;
    // On failure the staged model is removed as it drops.
    let equivariance = measure_equivariance(&mut session, frames.view(), previous.view())?;
    let card = ModelCard {
        name: name.to_string(),
        architecture: "gate_points_2101.Network".into(),
        summary: "e3nn's gate network (the study's \"E3 large\"), imported with its trained weights; \
                  E(3)-equivariant by construction"
            .into(),
        hyperparameters: serde_json::to_value(&network.config).expect("kwargs serialize"),
        equivariant: true,
        params: network.num_params(),
        data: None,
        more_data: Vec::new(),
        split: None,
        training: None,
        metrics: None,
        imported_from: Some(ImportInfo {
            framework: "PyTorch + e3nn".into(),
            kwargs_file: kwargs_path.display().to_string(),
            weights_file: weights_path.display().to_string(),
            weights_sha256: Sha256::digest(&weight_bytes).iter().map(|b| format!("{b:02x}")).collect(),
        }),
        equivariance,
        inference: None,
        onnx: OnnxInfo::exported(signature, parity, precision),
        versions: Versions::current(),
        forecast: None,
        stochastic: false,
        noise: None,
        command: None,
    };
    commit_model(out_dir, staged, &card, Vec::new())?;
    Ok(ExportOutcome { dir: PathBuf::from(out_dir), card })
}

/// The ONNX graph's equivariance errors on `frames` and the frames before them.
fn measure_equivariance(session: &mut OnnxModel, frames: ArrayView3<f32>, previous: ArrayView4<f32>) -> Result<EquivarianceReport, ImportError> {
    let mut failure = None;
    let mut onnx_dx = |x: ArrayView3<f32>, previous: ArrayView4<f32>| match session.run_window(x, previous) {
        Ok(dx) => dx,
        Err(e) => {
            failure.get_or_insert(e);
            Array3::zeros(x.raw_dim())
        }
    };
    let equivariance = EquivarianceReport::measure(&mut onnx_dx, frames, previous, 8, 0);
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(equivariance),
    }
}
