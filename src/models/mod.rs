//! The model zoo. Each architecture is defined once, against [`Ops`]: the same forward
//! pass is trained in Burn, evaluated in f64, and written as the exported ONNX graph.

mod e3small;
pub mod gat;
pub mod gate_network;
pub mod graph;
mod mlp;
pub mod se3_attention;

pub use e3small::E3Small;
pub use gat::Gnn;
pub use gate_network::{GateNetwork, GateNetworkConfig, GateNetworkError};
pub use mlp::Mlp;
pub use se3_attention::Se3Transformer;


use serde_json::json;

use crate::nn::Ops;

/// What a model reads: frame t, and for history models the frames before it.
#[derive(Debug)]
pub struct ModelInputs<'a, T> {
    /// [batch, 12, 3].
    pub positions: &'a T,
    /// [batch, K−1, 12, 3], oldest first; `None` for models of one snapshot.
    pub previous: Option<&'a T>,
}

impl<'a, T> ModelInputs<'a, T> {
    /// The inputs of a model that reads frame t only.
    pub fn snapshot(positions: &'a T) -> Self {
        Self { positions, previous: None }
    }
}

/// A model of one step of the dynamics, written against [`Ops`]: run and trained in Burn through
/// `BurnOps`, exported by running it on the ONNX graph builder.
pub trait OpsModel {
    /// The training target (dx or x(t+1)) for `inputs`.
    fn forward<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> O::Tensor;
    /// Frames the model reads (K): 1 reads frame t alone.
    fn history_frames(&self) -> usize {
        1
    }
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

/// A model's output times a constant. Trained so, a model whose layers start with
/// outputs of order one learns a target of order `scale` (dx on paths.npz: 4.9e-3)
/// as a function of order one; exported so, its graph ends with the same product.
#[derive(Debug, Clone)]
pub struct OutputScaled<M> {
    pub model: M,
    pub scale: f64,
}

impl<M: OpsModel> OpsModel for OutputScaled<M> {
    fn forward<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> O::Tensor {
        let out = self.model.forward(ops, inputs);
        ops.scale(&out, self.scale)
    }

    fn history_frames(&self) -> usize {
        self.model.history_frames()
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        self.model.weights_mut()
    }

    fn num_params(&self) -> usize {
        self.model.num_params()
    }

    fn init_weights(&mut self, rng: &mut impl rand::Rng) {
        self.model.init_weights(rng);
    }
}

/// The architectures `train-export --model` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelKind {
    /// The study's MLP baseline: linear 36 → 64 → 64 → 36 on the flattened frame.
    Mlp,
    /// The study's GNN baseline: two graph attention layers on edge harmonics (1,369,091 parameters).
    Gnn,
    /// The study's "E3 small": a tensor-product polynomial of edge harmonics (344 parameters).
    E3small,
    /// The study's "E3 large": e3nn's gate_points_2101.Network (102,905 parameters).
    E3large,
    /// The study's SE(3) attention, raw positions as features, as in the study (166,352 parameters).
    Se3mha,
    /// The study's SE(3) Transformer, raw positions as features, as in the study (332,864 parameters).
    Se3net,
    /// SE(3) attention on positions relative to the centre of mass: E(3)-equivariant.
    Se3mhaCentered,
    /// SE(3) Transformer on positions relative to the centre of mass: E(3)-equivariant.
    Se3netCentered,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Mlp => "mlp",
            ModelKind::Gnn => "gnn",
            ModelKind::E3small => "e3small",
            ModelKind::E3large => "e3large",
            ModelKind::Se3mha => "se3mha",
            ModelKind::Se3net => "se3net",
            ModelKind::Se3mhaCentered => "se3mha-centered",
            ModelKind::Se3netCentered => "se3net-centered",
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
            ModelKind::Gnn => json!({
                "architecture": "GNNBaseline",
                "summary": "two torch_geometric GATConv layers (4 heads of 256, edge features = spherical harmonics \
                            l <= 3 of the edge vectors within r = 2.5, self-loops with the mean edge feature), then \
                            Linear(1024, 256), GELU, Linear(256, 3); invariant to translations, not rotation-equivariant",
                "hyperparameters": {
                    "radius": gat::RADIUS, "dim_in": gat::EDGE_DIM, "edge_dim": gat::EDGE_DIM,
                    "hidden_dim": gat::HIDDEN, "heads": gat::HEADS, "dim_out": 3, "num_neighbors": 6,
                },
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
            ModelKind::Se3mha | ModelKind::Se3net | ModelKind::Se3mhaCentered | ModelKind::Se3netCentered => {
                let transformer = matches!(self, ModelKind::Se3net | ModelKind::Se3netCentered);
                let centered = matches!(self, ModelKind::Se3mhaCentered | ModelKind::Se3netCentered);
                let (blocks, heads) = if transformer { (4, 8) } else { (1, 16) };
                let features = if centered {
                    "positions relative to each frame's centre of mass (this project's fix): E(3)-equivariant"
                } else {
                    "raw positions, exactly as the study: rotation-equivariant about the origin, not translation-equivariant"
                };
                json!({
                    "architecture": if transformer { "E3Network" } else { "E3MultiHeadAttention" },
                    "summary": format!(
                        "{blocks} block(s) of {heads} E3Attention heads (query Linear; key and value tensor products \
                         with edge harmonics l <= 4 weighted by radial networks on smooth_finite bases within r = 3.5; \
                         dot-product attention with soft cutoff), then two tensor products with the harmonics; \
                         input features: {features}; graphs per frame"),
                    "hyperparameters": {
                        "irreps_in": "1x1o", "irreps_q": se3_attention::HIDDEN, "irreps_k": se3_attention::HIDDEN,
                        "irreps_mid": se3_attention::HIDDEN, "irreps_out": "1x1o", "num_bases": 20,
                        "max_radius": se3_attention::RADIUS, "sh_order": 4, "heads": heads, "layers": blocks,
                        "centered": centered,
                    },
                    "equivariant": centered,
                })
            }
        }
    }

}
