//! The Open Inference Protocol's view of a served version, shared by its gRPC and
//! HTTP/REST mappings (which import this, never each other): the tensors a model takes
//! and gives, by its signature, and the names Triton gives its platform.

use super::model::ModelVersion;
use crate::onnx::{DX, Dim, TensorSpec};

/// Output of ModelInfer beside the model's own: positions + dx.
pub const NEXT_POSITIONS: &str = "next_positions";
/// The platform and backend Triton names ONNX Runtime models by.
pub const PLATFORM: &str = "onnxruntime_onnx";
pub const BACKEND: &str = "onnxruntime";

/// A tensor's name and its dimensions after the batch, as the model's signature gives them.
pub type TensorDims = (String, Vec<i64>);

/// The dimensions after the batch of each of `specs`.
fn dims_after_batch(specs: &[TensorSpec]) -> Vec<TensorDims> {
    specs
        .iter()
        .map(|spec| {
            let dims = spec.dims().unwrap_or_default();
            let fixed = dims.iter().skip(1).map(|dim| match dim {
                Dim::Fixed(n) => *n as i64,
                Dim::Batch => -1,
            });
            (spec.name.clone(), fixed.collect())
        })
        .collect()
}

/// The model's inputs and outputs as the protocol shows them: its signature's, and
/// `next_positions` (positions + dx) beside its outputs.
pub fn tensor_dims(model: &ModelVersion) -> (Vec<TensorDims>, Vec<TensorDims>) {
    let signature = model.signature();
    let mut outputs = dims_after_batch(&signature.outputs);
    if let Some(dx) = outputs.iter().find(|(name, _)| name == DX).cloned() {
        outputs.push((NEXT_POSITIONS.to_string(), dx.1));
    }
    (dims_after_batch(&signature.inputs), outputs)
}
