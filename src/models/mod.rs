//! The model zoo. Each architecture is defined once, as a Burn module that can also
//! write itself as ONNX nodes computing the same function.

pub mod gate_network;
pub mod layers;
mod mlp;

pub use gate_network::{GateNetwork, GateNetworkConfig, GateNetworkError};
pub use mlp::Mlp;

use burn::{module::Module, tensor::Tensor};
use serde_json::json;

use crate::onnx::GraphBuilder;

/// A model of one step of the dynamics on positions [batch, 12, 3].
pub trait DynamicsModel: Module + Sized {
    /// The training target (dx or x(t+1)) for positions [batch, 12, 3].
    fn forward(&self, positions: Tensor<3>) -> Tensor<3>;
    /// Appends nodes computing `forward` to `graph` and returns the output's name.
    fn emit_onnx(&self, graph: &mut GraphBuilder, positions: &str) -> String;
}

/// The architectures `train-export --model` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    /// The study's MLP baseline: linear 36 → 64 → 64 → 36 on the flattened frame.
    Mlp,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Mlp => "mlp",
        }
    }

    /// Architecture and hyper-parameters, as written into the model card.
    pub fn describe(self) -> serde_json::Value {
        match self {
            ModelKind::Mlp => json!({
                "architecture": "MLPBaseline",
                "summary": "three linear layers on the 36 flattened coordinates, no activation (as in the study); \
                            neither rotation- nor translation-equivariant",
                "hyperparameters": { "layers": [36, mlp::HIDDEN, mlp::HIDDEN, 36], "activation": null },
                "equivariant": false,
            }),
        }
    }

}
