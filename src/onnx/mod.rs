//! ONNX: a model's signature and running models with ONNX Runtime (the graph writer is
//! training's: `train::onnx_graph`), and the versions and precision a card records.

mod runtime;
mod signature;

pub use runtime::{ExecutionDevice, OnnxModel, RuntimeError, every_core, init_runtime, library_candidates};
pub use signature::{BATCH, DX, DX_STD, Dim, FLOAT32, NamedTensors, POSITIONS, PREVIOUS, Signature, TensorSpec};

/// IR version 10 is what ONNX 1.16+ writes for opset 21.
pub const IR_VERSION: i64 = 10;
pub const OPSET: i64 = 21;

/// The element type a graph computes in; its inputs and outputs stay float32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    /// For trained functions whose output is small beside their intermediate values, so
    /// that f32 rounding alone exceeds the parity tolerance: the faithful SE(3)
    /// Transformer (its later blocks take the earlier ones' dx-sized outputs as
    /// positions; its dx stays below 1e-6) and E3 small after long training (its
    /// unnormalised harmonics' large terms cancel).
    F64,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "float32",
            Precision::F64 => "float64",
        }
    }
}
