//! ONNX: writing graphs with our own prost messages, and running them with ONNX Runtime.

mod graph;
mod ops;
mod runtime;

pub use graph::{GraphBuilder, Precision};
pub use runtime::{ExecutionDevice, OnnxModel, RuntimeError, init_runtime, library_candidates};

/// The subset of onnx.proto that we write, generated from `proto/onnx/onnx_subset.proto`.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// IR version 10 is what ONNX 1.16+ writes for opset 21.
pub const IR_VERSION: i64 = 10;
pub const OPSET: i64 = 21;
/// Every exported model maps positions float32 [batch, 12, 3] to dx float32 [batch, 12, 3].
pub const INPUT_NAME: &str = "positions";
pub const OUTPUT_NAME: &str = "dx";
