//! The study's GNN baseline (1,369,091 parameters): two torch_geometric `GATConv`
//! layers over a radius graph (r = 2.5) whose edge features are the spherical
//! harmonics (l ≤ 3, not normalised) of the edge vectors, then an MLP head.
//! Not equivariant: the harmonics' components enter dense layers as plain numbers.
//!
//! The graph is dense (frame, src, dst) as in [`super::graph`]; PyG's self-loops sit
//! on the diagonal, which the radius graph leaves empty.

use rand::Rng;
use rand_distr::{Distribution, Uniform};

use super::{
    OpsModel,
    graph::{HarmonicGraph, harmonic_graph, masked_softmax_over_sources, mean_into_destinations, self_pairs},
};
use crate::{
    data::{DIMS, PARTICLES},
    e3::{SphericalHarmonics, radial::Activation},
    nn::{Ops, Unary, apply_activation},
};

pub const RADIUS: f64 = 2.5;
const NUM_NEIGHBORS: f64 = 6.0;
const LMAX: u32 = 3;
/// Harmonics of degree ≤ 3: the node inputs and the edge features.
pub const EDGE_DIM: usize = 16;
pub const HIDDEN: usize = 256;
pub const HEADS: usize = 4;
const NEGATIVE_SLOPE: f64 = 0.2;

/// torch_geometric's `GATConv(in, out, heads, edge_dim)` with its defaults: heads
/// concatenated, LeakyReLU(0.2) attention, self-loops whose features are the mean of
/// the node's incoming edge features, and a bias.
#[derive(Debug, Clone)]
pub struct GatConv {
    pub in_dim: usize,
    pub out_dim: usize,
    pub heads: usize,
    /// [in, heads·out]
    pub lin: Vec<f64>,
    /// [heads, out] each.
    pub att_src: Vec<f64>,
    pub att_dst: Vec<f64>,
    /// [edge_dim, heads·out]
    pub lin_edge: Vec<f64>,
    pub att_edge: Vec<f64>,
    pub bias: Vec<f64>,
}

impl GatConv {
    pub fn new(in_dim: usize, out_dim: usize, heads: usize, edge_dim: usize) -> Self {
        let width = heads * out_dim;
        Self {
            in_dim,
            out_dim,
            heads,
            lin: vec![0.0; in_dim * width],
            att_src: vec![0.0; width],
            att_dst: vec![0.0; width],
            lin_edge: vec![0.0; edge_dim * width],
            att_edge: vec![0.0; width],
            bias: vec![0.0; width],
        }
    }

    fn weights_mut(&mut self) -> [&mut Vec<f64>; 6] {
        [&mut self.lin, &mut self.att_src, &mut self.att_dst, &mut self.lin_edge, &mut self.att_edge, &mut self.bias]
    }

    /// PyG's initialisation: Glorot-uniform projections and attention vectors, zero bias.
    fn init(&mut self, rng: &mut impl Rng) {
        let width = self.heads * self.out_dim;
        let edge_dim = self.lin_edge.len() / width;
        glorot(&mut self.lin, self.in_dim, width, rng);
        for att in [&mut self.att_src, &mut self.att_dst, &mut self.att_edge] {
            glorot(att, self.heads, self.out_dim, rng);
        }
        glorot(&mut self.lin_edge, edge_dim, width, rng);
        self.bias.fill(0.0);
    }

    /// nodes [B·12, in], edge features [B·144, edge_dim] (zero off the graph) and the
    /// graph [B, 12, 12, 1] (rows ordered (frame, src, dst)) → [B·12, heads·out].
    pub fn forward<O: Ops>(&self, ops: &mut O, nodes: &O::Tensor, edge_attr: &O::Tensor, on_graph: &O::Tensor) -> O::Tensor {
        let (n, h, c) = (PARTICLES as i64, self.heads as i64, self.out_dim as i64);
        let width = self.heads * self.out_dim;
        let edge_dim = self.lin_edge.len() / width;
        let lin = ops.weight(&[self.in_dim, width], &self.lin);
        let x = ops.matmul(nodes, &lin);
        let x = ops.reshape(&x, &[-1, n, h, c]);
        let att_src = ops.weight(&[self.heads, self.out_dim], &self.att_src);
        let att_dst = ops.weight(&[self.heads, self.out_dim], &self.att_dst);
        let score_src = ops.mul(&x, &att_src);
        let score_src = ops.reduce_sum(&score_src, 3, false);
        let score_src = ops.reshape(&score_src, &[-1, n, 1, h]);
        let score_dst = ops.mul(&x, &att_dst);
        let score_dst = ops.reduce_sum(&score_dst, 3, false);
        let score_dst = ops.reshape(&score_dst, &[-1, 1, n, h]);

        // Self-loops on the diagonal, featuring the mean of the node's incoming edges.
        let loop_attr = mean_into_destinations(ops, edge_attr, edge_dim, on_graph);
        let loop_attr = ops.reshape(&loop_attr, &[-1, 1, n, edge_dim as i64]);
        let identity = self_pairs(ops);
        let loop_attr = ops.mul(&loop_attr, &identity);
        let edge_attr = ops.reshape(edge_attr, &[-1, n, n, edge_dim as i64]);
        let edge_attr = ops.add(&edge_attr, &loop_attr);
        let attended = ops.add(on_graph, &identity);
        // a_edge · (W_e e) per head equals (W_e a_edge) · e: one [edge_dim, heads] matrix.
        let lin_edge = ops.weight(&[edge_dim, self.heads, self.out_dim], &self.lin_edge);
        let att_edge = ops.weight(&[self.heads, self.out_dim], &self.att_edge);
        let edge_projection = ops.mul(&lin_edge, &att_edge);
        let edge_projection = ops.reduce_sum(&edge_projection, 2, false);
        let score_edge = ops.matmul(&edge_attr, &edge_projection);

        let score = ops.add(&score_src, &score_dst);
        let score = ops.add(&score, &score_edge);
        let score = leaky_relu(ops, &score, NEGATIVE_SLOPE);
        let attention = masked_softmax_over_sources(ops, &score, &attended);

        // out[dst] = Σ_src α[src, dst] x[src], per head: a batched matmul.
        let attention = ops.transpose(&attention, &[0, 3, 2, 1]);
        let x = ops.transpose(&x, &[0, 2, 1, 3]);
        let out = ops.matmul(&attention, &x);
        let out = ops.transpose(&out, &[0, 2, 1, 3]);
        let out = ops.reshape(&out, &[-1, width as i64]);
        let bias = ops.weight(&[width], &self.bias);
        ops.add(&out, &bias)
    }

    pub fn num_params(&self) -> usize {
        [&self.lin, &self.att_src, &self.att_dst, &self.lin_edge, &self.att_edge, &self.bias].iter().map(|w| w.len()).sum()
    }
}

/// A `torch.nn.Linear` layer: x W + b.
#[derive(Debug, Clone)]
pub struct Dense {
    pub d_in: usize,
    pub d_out: usize,
    /// [in, out]
    pub weight: Vec<f64>,
    pub bias: Vec<f64>,
}

impl Dense {
    pub fn new(d_in: usize, d_out: usize) -> Self {
        Self { d_in, d_out, weight: vec![0.0; d_in * d_out], bias: vec![0.0; d_out] }
    }

    /// torch's default: U(±1/√fan_in) for weight and bias.
    fn init(&mut self, rng: &mut impl Rng) {
        let bound = 1.0 / (self.d_in as f64).sqrt();
        let uniform = Uniform::new_inclusive(-bound, bound).expect("finite bound");
        self.weight.iter_mut().chain(self.bias.iter_mut()).for_each(|w| *w = uniform.sample(rng));
    }

    pub fn forward<O: Ops>(&self, ops: &mut O, x: &O::Tensor) -> O::Tensor {
        let weight = ops.weight(&[self.d_in, self.d_out], &self.weight);
        let bias = ops.weight(&[self.d_out], &self.bias);
        let y = ops.matmul(x, &weight);
        ops.add(&y, &bias)
    }
}

fn glorot(values: &mut [f64], fan_in: usize, fan_out: usize, rng: &mut impl Rng) {
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
    let uniform = Uniform::new_inclusive(-bound, bound).expect("finite bound");
    values.iter_mut().for_each(|w| *w = uniform.sample(rng));
}

fn leaky_relu<O: Ops>(ops: &mut O, x: &O::Tensor, slope: f64) -> O::Tensor {
    let positive = ops.unary(x, Unary::Relu);
    let negated = ops.unary(x, Unary::Neg);
    let negative = ops.unary(&negated, Unary::Relu);
    let negative = ops.scale(&negative, -slope);
    ops.add(&positive, &negative)
}

/// The study's `GNNBaseline`.
#[derive(Debug, Clone)]
pub struct Gnn {
    pub gat1: GatConv,
    pub gat2: GatConv,
    pub head1: Dense,
    pub head2: Dense,
    harmonics: SphericalHarmonics,
}

impl Default for Gnn {
    fn default() -> Self {
        Self::new()
    }
}

impl Gnn {
    pub fn new() -> Self {
        Self {
            gat1: GatConv::new(EDGE_DIM, HIDDEN, HEADS, EDGE_DIM),
            gat2: GatConv::new(HIDDEN * HEADS, HIDDEN, HEADS, EDGE_DIM),
            head1: Dense::new(HIDDEN * HEADS, HIDDEN),
            head2: Dense::new(HIDDEN, DIMS),
            harmonics: SphericalHarmonics::new(LMAX),
        }
    }
}

impl OpsModel for Gnn {
    fn forward<O: Ops>(&self, ops: &mut O, positions: &O::Tensor) -> O::Tensor {
        let HarmonicGraph { on_graph, sh, nodes, .. } = harmonic_graph(ops, positions, &self.harmonics, LMAX, RADIUS, NUM_NEIGHBORS);
        let x = self.gat1.forward(ops, &nodes, &sh, &on_graph);
        let x = self.gat2.forward(ops, &x, &sh, &on_graph);
        let x = self.head1.forward(ops, &x);
        let x = apply_activation(ops, &x, Activation::Gelu, false);
        let x = self.head2.forward(ops, &x);
        ops.reshape(&x, &[-1, PARTICLES as i64, DIMS as i64])
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        let Self { gat1, gat2, head1, head2, .. } = self;
        let mut out: Vec<&mut Vec<f64>> = gat1.weights_mut().into_iter().chain(gat2.weights_mut()).collect();
        for dense in [head1, head2] {
            out.push(&mut dense.weight);
            out.push(&mut dense.bias);
        }
        out
    }

    fn num_params(&self) -> usize {
        self.gat1.num_params() + self.gat2.num_params() + [&self.head1, &self.head2].iter().map(|d| d.weight.len() + d.bias.len()).sum::<usize>()
    }

    /// As PyTorch and PyG initialise the study's model (not e3nn's standard normal).
    fn init_weights(&mut self, rng: &mut impl Rng) {
        self.gat1.init(rng);
        self.gat2.init(rng);
        self.head1.init(rng);
        self.head2.init(rng);
    }
}
