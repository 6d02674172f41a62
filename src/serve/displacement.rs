//! A model call's outputs as the serving core uses them: the mean displacement and, for
//! a stochastic model, its spread.

use ndarray::{Array2, Array3};

use super::ServeError;
use crate::onnx::{DX, DX_STD, NamedTensors};

/// What a model answers for a batch: the mean displacement and, for a stochastic model,
/// its spread.
#[derive(Debug, Clone, PartialEq)]
pub struct Displacement {
    /// [batch, 12, 3].
    pub dx: Array3<f32>,
    /// [batch, 12]: the standard deviation of each coordinate of each particle's next
    /// displacement; `None` for a deterministic model.
    pub dx_std: Option<Array2<f32>>,
}

/// dx and, when the model gives it, dx_std from a call's outputs.
pub(crate) fn displacement_of(model: &str, mut outputs: NamedTensors) -> Result<Displacement, ServeError> {
    let missing = |what: &str| ServeError::Internal { model: model.to_string(), message: format!("the model gave no {what}") };
    let dx = outputs.take_dx().ok_or_else(|| missing(&format!("{DX} [batch, 12, 3]")))?;
    let dx_std = match outputs.get(DX_STD) {
        Some(_) => Some(outputs.take_dx_std().ok_or_else(|| missing(&format!("{DX_STD} [batch, 12]")))?),
        None => None,
    };
    Ok(Displacement { dx, dx_std })
}
