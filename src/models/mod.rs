//! The model zoo. Each architecture is defined once, against [`Ops`]: the same forward
//! pass is trained in Burn, evaluated in f64, and written as the exported ONNX graph.

mod e3small;
pub mod gat;
pub mod gate_network;
pub mod graph;
pub mod history;
mod inertial;
mod mlp;
pub mod pair_force;
mod particle_noise;
pub mod se3_attention;

pub use e3small::E3Small;
pub use gat::Gnn;
pub use gate_network::{GateNetwork, GateNetworkConfig, GateNetworkError};
pub use inertial::Inertial;
pub use mlp::Mlp;
pub use pair_force::PairForce;
pub use particle_noise::ParticleNoise;
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
    /// Settings the model took from its training data, for the card (beside its kind's).
    fn fitted_settings(&self) -> Option<serde_json::Value> {
        None
    }
    /// Every weight of the mean (`forward`), as the layers store them.
    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>>;
    /// Every parameter, the noise model's included.
    fn num_params(&self) -> usize;

    /// Settles, after the mean's training, what its loss leaves free (e.g. a filter's
    /// persistence beyond what the data can tell).
    fn after_fit(&mut self) {}

    /// Whether the model also gives the spread of its next displacement ([`forward_std`](Self::forward_std)).
    fn stochastic(&self) -> bool {
        false
    }
    /// dx_std [batch, 12]: the standard deviation of each coordinate of each particle's
    /// next displacement (isotropic per particle, so the distribution is as equivariant
    /// as the mean), for stochastic models.
    fn forward_std<O: Ops>(&self, _ops: &mut O, _inputs: &ModelInputs<O::Tensor>) -> Option<O::Tensor> {
        None
    }
    /// Both outputs from one pass (what the exported graph computes): a model may share
    /// work between them.
    fn forward_with_std<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> (O::Tensor, Option<O::Tensor>) {
        (self.forward(ops, inputs), self.forward_std(ops, inputs))
    }
    /// The weights of the noise model, fitted after the mean (by Gaussian likelihood).
    fn noise_weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        Vec::new()
    }
    /// Multiplies dx_std by `factor` everywhere (its calibration to the data's motion).
    fn scale_noise(&mut self, _factor: f64) {}
    /// Bounds dx_std at `largest` (what the training frames needed at most), so that a
    /// configuration the data never showed cannot draw a larger kick.
    fn bound_noise(&mut self, _largest: f64) {}
    /// The strength κ of a pull of every particle towards the system's centroid,
    /// κ (x̄ − x_i), for models that have one: calibrated with the noise so that sampled
    /// rollouts keep the data's size.
    fn confinement(&self) -> Option<f64> {
        None
    }
    fn set_confinement(&mut self, _strength: f64) {}

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

    fn fitted_settings(&self) -> Option<serde_json::Value> {
        self.model.fitted_settings()
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        self.model.weights_mut()
    }

    fn num_params(&self) -> usize {
        self.model.num_params()
    }

    fn after_fit(&mut self) {
        self.model.after_fit();
    }

    fn stochastic(&self) -> bool {
        self.model.stochastic()
    }

    fn forward_std<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> Option<O::Tensor> {
        let std = self.model.forward_std(ops, inputs)?;
        Some(ops.scale(&std, self.scale.abs()))
    }

    fn forward_with_std<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> (O::Tensor, Option<O::Tensor>) {
        let (dx, std) = self.model.forward_with_std(ops, inputs);
        (ops.scale(&dx, self.scale), std.map(|std| ops.scale(&std, self.scale.abs())))
    }

    fn noise_weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        self.model.noise_weights_mut()
    }

    fn scale_noise(&mut self, factor: f64) {
        self.model.scale_noise(factor);
    }

    fn bound_noise(&mut self, largest: f64) {
        self.model.bound_noise(largest / self.scale.abs());
    }

    fn confinement(&self) -> Option<f64> {
        self.model.confinement().map(|strength| strength * self.scale)
    }

    fn set_confinement(&mut self, strength: f64) {
        self.model.set_confinement(strength / self.scale);
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
    /// For windows of K ≥ 2 frames: a learned filter of past displacements plus learned
    /// pair forces (E(3)-equivariant, ~1,000 parameters).
    Pairforce,
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
            ModelKind::Pairforce => "pairforce",
        }
    }

    /// Whether the architecture reads a window of `history_frames` frames: the MLP and
    /// the gate network any, the pair-force model two or more, the rest one.
    pub fn supports_history(self, history_frames: usize) -> bool {
        match self {
            ModelKind::Mlp | ModelKind::E3large => history_frames >= 1,
            ModelKind::Pairforce => history_frames >= 2,
            _ => history_frames == 1,
        }
    }

    /// The model's folder and served name: the kind's, with `-h<K>` for a window of K ≥ 2
    /// frames (so the study's one-frame models keep their names).
    pub fn model_name(self, history_frames: usize) -> String {
        if history_frames > 1 { format!("{}-h{history_frames}", self.name()) } else { self.name().to_string() }
    }

    /// Architecture and hyper-parameters, as written into the model card, for a window
    /// of `history_frames` frames.
    pub fn describe(self, history_frames: usize) -> serde_json::Value {
        let mut description = self.describe_one_frame();
        if history_frames > 1 && self != ModelKind::Pairforce {
            let window = format!("reads a window of {history_frames} frames (x(t−{}) … x(t)): ", history_frames - 1);
            let summary = description["summary"].as_str().unwrap_or_default().to_string();
            description["summary"] = serde_json::Value::String(
                match self {
                    ModelKind::E3large => format!(
                        "{window}dx = a filter of the past displacements per chain mode (the chain's inertia and friction, as the \
                         pair-force model's, started from least squares on the training data) + a times the network's output \
                         (a: the RMS change of displacement per step); its {} most recent displacements, newest first, are the \
                         nodes' {}x1o input features; {summary}",
                        history_frames - 1,
                        history_frames - 1
                    ),
                    _ => format!("{window}the {} coordinates of the window, flattened; {summary}", 36 * history_frames),
                } + "; stochastic: dx_std_i = s e^(b_i), a spread per particle the same in every configuration (`particle_noise`)",
            );
        }
        description["hyperparameters"]["history_frames"] = serde_json::json!(history_frames);
        description
    }

    fn describe_one_frame(self) -> serde_json::Value {
        match self {
            ModelKind::Pairforce => json!({
                "architecture": "PairForce",
                "summary": "dx_i(t) = sum_m u_m(i) sum_k c_mk D_mk + a sum_j f_ij(|r_ij|) (x_j - x_i), D_mk = sum_i u_m(i) \
                            (x_i(t-k+1) - x_i(t-k)): a learned filter of the past displacements per chain mode u_m (cosines \
                            along the chain, m = 0 the centroid; the chain's inertia and friction, no mode persisting longer \
                            than the centroid) plus learned pair forces, a Gaussian-basis radial function per pair of \
                            particles, equal and opposite, held at its value at the nearest and farthest distances the pair \
                            covered in training beyond them (`reach`); E(3)-equivariant; starts from the least-squares filter \
                            of each mode on the training data and no force",
                "hyperparameters": { "basis": pair_force::BASIS },
                "equivariant": true,
            }),
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
