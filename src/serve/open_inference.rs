//! The Open Inference Protocol's view of a served version, shared by its gRPC and
//! HTTP/REST mappings (which import this, never each other): the tensors a model takes
//! and gives, by its signature, and the names Triton gives its platform.

use super::model::ModelVersion;
use crate::{
    onnx::{DX, Dim, POSITIONS, PREVIOUS, TensorSpec},
    proto::inference::FP32,
};

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

/// A request's input tensors gathered against the model's inputs, with the same checks
/// whichever transport carried them (names, datatype, shape, one batch); reading the
/// values (typed, raw or binary contents) is the transport's.
pub struct RequestInputs {
    wanted: Vec<TensorDims>,
    given: Vec<Option<(i64, Vec<f32>)>>,
    history_frames: usize,
}

impl RequestInputs {
    pub fn new(model: &ModelVersion) -> Self {
        let (wanted, _) = tensor_dims(model);
        let given = vec![None; wanted.len()];
        Self { wanted, given, history_frames: model.history_frames() }
    }

    fn expected(&self) -> String {
        self.wanted.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(" and ")
    }

    /// Checks an input as declared (name, datatype, shape [batch, …]); gives where its
    /// values go and how many there must be.
    pub fn declare(&self, name: &str, datatype: &str, shape: &[i64]) -> Result<(usize, usize), String> {
        let Some(index) = self.wanted.iter().position(|(wanted, _)| wanted == name) else {
            return Err(format!("unknown input '{}'; the model takes {}", name.chars().take(64).collect::<String>(), self.expected()));
        };
        if self.given[index].is_some() {
            return Err(format!("input '{name}' given twice"));
        }
        if datatype != FP32 {
            return Err(format!("input '{name}' has datatype {}; the model takes {FP32}", datatype.chars().take(16).collect::<String>()));
        }
        let dims = &self.wanted[index].1;
        if shape.len() != dims.len() + 1 || shape[1..] != dims[..] || shape[0] < 1 {
            let dims = dims.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
            return Err(format!("input '{name}' has shape {shape:?}; expected [batch, {dims}]"));
        }
        // Checked: the batch is the client's number, and may be absurd.
        let elements = usize::try_from(shape[0])
            .ok()
            .and_then(|batch| batch.checked_mul(dims.iter().product::<i64>() as usize))
            .filter(|&n| n <= isize::MAX as usize / 4)
            .ok_or_else(|| format!("input '{name}' has shape {shape:?}: far more elements than any request can carry"))?;
        Ok((index, elements))
    }

    /// The values of the input `declare` placed at `index`, of `batch` rows.
    pub fn give(&mut self, index: usize, batch: i64, values: Vec<f32>) {
        self.given[index] = Some((batch, values));
    }

    /// `positions` and (for a history model) `previous`, packed, once every input the
    /// model takes came with one batch.
    pub fn finish(mut self) -> Result<(Vec<f32>, Vec<f32>), String> {
        let expected = self.expected();
        let mut batch = None;
        let mut take = |wanted: &str| -> Result<Vec<f32>, String> {
            let index = self.wanted.iter().position(|(name, _)| name == wanted).ok_or_else(|| format!("the model takes no '{wanted}'"))?;
            let Some((rows, values)) = self.given[index].take() else {
                return Err(format!("no input '{wanted}'; the model takes {expected}"));
            };
            match batch {
                Some(batch) if batch != rows => Err(format!("'{wanted}' has batch {rows} but '{POSITIONS}' has {batch}")),
                _ => {
                    batch = Some(rows);
                    Ok(values)
                }
            }
        };
        let positions = take(POSITIONS)?;
        let previous = if self.history_frames > 1 { take(PREVIOUS)? } else { Vec::new() };
        Ok((positions, previous))
    }
}
