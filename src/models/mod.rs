//! The model zoo. Each architecture is defined once, as a Burn module that can also
//! write itself as ONNX nodes computing the same function.

mod e3small;
pub mod gate_network;
pub mod graph;
pub mod layers;
mod mlp;

pub use e3small::E3Small;
pub use gate_network::{GateNetwork, GateNetworkConfig, GateNetworkError};
pub use mlp::Mlp;

use burn::{module::Module, tensor::Tensor};
use serde_json::json;

use crate::{nn::Ops, onnx::GraphBuilder};

/// A model of one step of the dynamics on positions [batch, 12, 3].
pub trait DynamicsModel: Module + Sized {
    /// The training target (dx or x(t+1)) for positions [batch, 12, 3].
    fn forward(&self, positions: Tensor<3>) -> Tensor<3>;
    /// Appends nodes computing `forward` to `graph` and returns the output's name.
    fn emit_onnx(&self, graph: &mut GraphBuilder, positions: &str) -> String;
}

/// A model written against [`Ops`]: run and trained in Burn through
/// [`crate::nn::BurnOps`], exported by running it on a [`GraphBuilder`].
pub trait OpsModel {
    /// The training target (dx or x(t+1)) for positions [batch, 12, 3].
    fn forward<O: Ops>(&self, ops: &mut O, positions: &O::Tensor) -> O::Tensor;
    /// Every trainable weight, as the layers store them.
    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>>;
    fn num_params(&self) -> usize;

    /// Standard-normal weights, as e3nn initialises its tensor products and radial networks.
    fn init_weights(&mut self, rng: &mut impl rand::Rng) {
        for weights in self.weights_mut() {
            weights.iter_mut().for_each(|w| *w = rng.sample(rand_distr::StandardNormal));
        }
    }
}

/// The architectures `train-export --model` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    /// The study's MLP baseline: linear 36 → 64 → 64 → 36 on the flattened frame.
    Mlp,
    /// The study's "E3 small": a tensor-product polynomial of edge harmonics (344 parameters).
    E3small,
    /// The study's "E3 large": e3nn's gate_points_2101.Network (102,905 parameters).
    E3large,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Mlp => "mlp",
            ModelKind::E3small => "e3small",
            ModelKind::E3large => "e3large",
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
            ModelKind::E3small => json!({
                "architecture": "EquivariantPolynomial",
                "summary": "two fully connected tensor products of the edge vectors' spherical harmonics \
                            (l <= 3, not normalised) within r = 3.5, summed over neighbours; E(3)-equivariant",
                "hyperparameters": {
                    "radius": e3small::RADIUS, "irreps_sh": "1x0e+1x1o+1x2e+1x3o",
                    "irreps_mid": "8x0e+8x0o+16x1e+16x1o+8x2e+8x2o", "num_neighbors": 11,
                },
                "equivariant": true,
            }),
            ModelKind::E3large => json!({
                "architecture": "gate_points_2101.Network",
                "summary": "e3nn's gate network with the study's kwargs: three gated convolutions of \
                            tensor products with edge harmonics and radial networks; E(3)-equivariant",
                "hyperparameters": GateNetworkConfig::study(),
                "equivariant": true,
            }),
        }
    }

}
