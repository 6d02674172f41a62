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
    ModelInputs, OpsModel,
    graph::{HarmonicGraph, harmonic_graph, masked_softmax_over_sources, mean_into_destinations, self_pairs},
};
use crate::{
    data::{DIMS, PARTICLES},
    e3::{SphericalHarmonics, radial::Activation},
    nn::{Dense, Ops, Unary, apply_activation},
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

    /// The projection W [in, heads·out] that values and scores are computed from.
    pub fn projection<O: Ops>(&self, ops: &mut O) -> O::Tensor {
        ops.weight(&[self.in_dim, self.heads * self.out_dim], &self.lin)
    }

    /// PyG's attention coefficients α [B, heads, dst, src] on `graph` for inputs
    /// x [B·12, d] projected as x·`projection` (+ `offset` [heads·out]): the layer's
    /// features when `projection` is [`Self::projection`] and there is no offset.
    /// Scores take x·(W a) rather than (x·W)·a: a [d, heads] matrix instead of the
    /// projected features. Scores are laid out [B, heads, src, dst]: with the 12
    /// destinations innermost, the softmax's sums and maxima over sources broadcast
    /// over outer axes only, which runtimes apply to whole rows (the 4 heads innermost,
    /// or a trailing axis of 1, went element by element).
    pub fn attention<O: Ops>(
        &self,
        ops: &mut O,
        x: &O::Tensor,
        projection: &O::Tensor,
        offset: Option<&O::Tensor>,
        graph: &LoopedGraph<O::Tensor>,
    ) -> O::Tensor {
        let (n, h, c) = (PARTICLES as i64, self.heads as i64, self.out_dim as i64);
        let width = self.heads * self.out_dim;
        let edge_dim = self.lin_edge.len() / width;
        let projection = ops.reshape(projection, &[-1, h, c]);
        let mut scores = Vec::with_capacity(2);
        for att in [&self.att_src, &self.att_dst] {
            let att = ops.weight(&[self.heads, self.out_dim], att);
            let by_input = ops.mul(&projection, &att);
            let by_input = ops.reduce_sum(&by_input, 2, false);
            let mut score = ops.matmul(x, &by_input);
            if let Some(offset) = offset {
                let offset = ops.reshape(offset, &[h, c]);
                let shift = ops.mul(&offset, &att);
                let shift = ops.reduce_sum(&shift, 1, false);
                score = ops.add(&score, &shift);
            }
            // [B·12, heads] → [B, heads, 12]
            let score = ops.reshape(&score, &[-1, n, h]);
            scores.push(ops.transpose(&score, &[0, 2, 1]));
        }
        let score_src = ops.reshape(&scores[0], &[-1, h, n, 1]);
        let score_dst = ops.reshape(&scores[1], &[-1, h, 1, n]);

        // a_edge · (W_e e) per head equals (W_e a_edge) · e: one [heads, edge_dim] matrix.
        let lin_edge = ops.weight(&[edge_dim, self.heads, self.out_dim], &self.lin_edge);
        let att_edge = ops.weight(&[self.heads, self.out_dim], &self.att_edge);
        let edge_projection = ops.mul(&lin_edge, &att_edge);
        let edge_projection = ops.reduce_sum(&edge_projection, 2, false);
        let edge_projection = ops.transpose(&edge_projection, &[1, 0]);
        let score_edge = ops.matmul(&edge_projection, &graph.edge_attr);
        let score_edge = ops.reshape(&score_edge, &[-1, h, n, n]);

        let score = ops.add(&score_edge, &score_dst);
        let score = ops.add(&score, &score_src);
        let score = leaky_relu(ops, &score, NEGATIVE_SLOPE);
        let attention = masked_softmax_over_sources(ops, &score, &graph.attended, 2);
        ops.transpose(&attention, &[0, 1, 3, 2])
    }

    pub fn bias<O: Ops>(&self, ops: &mut O) -> O::Tensor {
        ops.weight(&[self.heads * self.out_dim], &self.bias)
    }

    pub fn num_params(&self) -> usize {
        [&self.lin, &self.att_src, &self.att_dst, &self.lin_edge, &self.att_edge, &self.bias].iter().map(|w| w.len()).sum()
    }
}

/// The graph as both GAT layers see it, with PyG's self-loops on the diagonal.
pub struct LoopedGraph<T> {
    /// Edge features [B, edge_dim, 12 src · 12 dst], a self-loop's the mean of its
    /// node's incoming edges' features.
    pub edge_attr: T,
    /// 1 on the graph's edges and on the self-loops [B, 1, 12 src, 12 dst].
    pub attended: T,
}

impl<T> LoopedGraph<T> {
    /// From edge features as rows [B·144, edge_dim] and components first
    /// [B, edge_dim, 144] (both (src, dst), zero off the graph), and the graph [B, 144].
    pub fn new<O: Ops<Tensor = T>>(ops: &mut O, sh: &T, sh_by_component: &T, on_graph: &T, edge_dim: usize) -> Self {
        let (n, e) = (PARTICLES as i64, edge_dim as i64);
        // [B·12 dst, e] → [B·e, dst], placed on the diagonal of [B·e, (src, dst)] by a
        // matmul with the [dst, (src, dst)] selection.
        let loop_attr = mean_into_destinations(ops, sh, edge_dim, on_graph);
        let loop_attr = ops.reshape(&loop_attr, &[-1, n, e]);
        let loop_attr = ops.transpose(&loop_attr, &[0, 2, 1]);
        let loop_attr = ops.reshape(&loop_attr, &[-1, n]);
        let onto_diagonal: Vec<f64> =
            (0..PARTICLES).flat_map(|i| (0..PARTICLES * PARTICLES).map(move |k| if k == i * (PARTICLES + 1) { 1.0 } else { 0.0 })).collect();
        let onto_diagonal = ops.constant(&[PARTICLES, PARTICLES * PARTICLES], &onto_diagonal);
        let loops = ops.matmul(&loop_attr, &onto_diagonal);
        let loops = ops.reshape(&loops, &[-1, e, n * n]);
        let edge_attr = ops.add(sh_by_component, &loops);
        let attended = ops.reshape(on_graph, &[-1, 1, n, n]);
        let identity = self_pairs(ops);
        let attended = ops.add(&attended, &identity);
        Self { edge_attr, attended }
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

/// Σ_src α[h, dst, src] v[src] per head: α [B, heads, dst, src], values [B·12, d] →
/// [B·12, heads·d].
fn attend<O: Ops>(ops: &mut O, alpha: &O::Tensor, values: &O::Tensor, d: usize) -> O::Tensor {
    let n = PARTICLES as i64;
    let values = ops.reshape(values, &[-1, 1, n, d as i64]);
    let out = ops.matmul(alpha, &values);
    let out = ops.transpose(&out, &[0, 2, 1, 3]);
    ops.reshape(&out, &[-1, (HEADS * d) as i64])
}

impl OpsModel for Gnn {
    /// gat1 → gat2 → head as the study chains them, with no activation until the
    /// head's GELU, so everything before it is linear in the attention-weighted sums
    /// of the 16 node inputs. gat1's output is m1·blockdiag(W1) + b1, with
    /// m1 = Σ α1 x per head [B·12, 4·16]; gat2 projects it to m1·C + b1·W2 with
    /// C = blockdiag(W1)·W2 [64, 1024], and the head's first layer takes
    /// Σ α2 (m1·C_h + b1·W2_h) + b2 = m2·C_h + (Σ α2)·b1·W2_h + b2 per head h, with
    /// m2 = Σ α2 m1 [B·12, 4·64]. The products of weights (C, C_h·H1_h, b1·W2·H1) do not
    /// depend on the frames (ONNX Runtime folds them at load), so a node costs
    /// 256 × 256 multiply-adds where gat2's and the head's layers cost 1024 × 1280:
    /// the same function, ~20× less work.
    fn forward<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> O::Tensor {
        let positions = inputs.positions;
        let HarmonicGraph { on_graph, sh, sh_by_component, nodes } = harmonic_graph(ops, positions, &self.harmonics, LMAX, RADIUS, NUM_NEIGHBORS);
        let (h, c) = (HEADS as i64, HIDDEN as i64);
        let graph = LoopedGraph::new(ops, &sh, &sh_by_component, &on_graph, EDGE_DIM);
        let w1 = self.gat1.projection(ops);
        let alpha1 = self.gat1.attention(ops, &nodes, &w1, None, &graph);
        let m1 = attend(ops, &alpha1, &nodes, EDGE_DIM);

        // C[(h, i), :] = W1[i, h-th block] · W2[h-th block of rows, :]
        let w1 = ops.reshape(&w1, &[EDGE_DIM as i64, h, c]);
        let w1 = ops.transpose(&w1, &[1, 0, 2]);
        let w2 = self.gat2.projection(ops);
        let w2_by_head = ops.reshape(&w2, &[h, c, h * c]);
        let combined = ops.matmul(&w1, &w2_by_head);
        let combined = ops.reshape(&combined, &[h * EDGE_DIM as i64, h * c]);
        let b1 = self.gat1.bias(ops);
        let b1 = ops.reshape(&b1, &[1, h * c]);
        let b1_w2 = ops.matmul(&b1, &w2);
        let alpha2 = self.gat2.attention(ops, &m1, &combined, Some(&b1_w2), &graph);
        let m2 = attend(ops, &alpha2, &m1, HEADS * EDGE_DIM);

        // The head's first layer per head of gat2: C_h·H1_h [64, 256] and b1·W2_h·H1_h [256].
        let h1 = ops.weight(&[HEADS * HIDDEN, HIDDEN], &self.head1.weight);
        let h1_by_head = ops.reshape(&h1, &[h, c, c]);
        let combined = ops.reshape(&combined, &[h * EDGE_DIM as i64, h, c]);
        let combined = ops.transpose(&combined, &[1, 0, 2]);
        let folded = ops.matmul(&combined, &h1_by_head);
        let folded = ops.reshape(&folded, &[h * h * EDGE_DIM as i64, c]);
        let x = ops.matmul(&m2, &folded);
        let offset = ops.reshape(&b1_w2, &[h, 1, c]);
        let offset = ops.matmul(&offset, &h1_by_head);
        let offset = ops.reshape(&offset, &[h, c]);
        let weight_sums = ops.reduce_sum(&alpha2, 3, false);
        let weight_sums = ops.transpose(&weight_sums, &[0, 2, 1]);
        let weight_sums = ops.reshape(&weight_sums, &[-1, h]);
        let bias_through_gat2 = ops.matmul(&weight_sums, &offset);
        let x = ops.add(&x, &bias_through_gat2);
        let b2 = self.gat2.bias(ops);
        let b2 = ops.reshape(&b2, &[1, h * c]);
        let constant = ops.matmul(&b2, &h1);
        let x = ops.add(&x, &constant);
        let c1 = ops.weight(&[HIDDEN], &self.head1.bias);
        let x = ops.add(&x, &c1);
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

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;
    use crate::nn::Eager;

    /// gat1 → gat2 → head computed layer by layer as PyG does (each layer's
    /// projections per node, values per head), the folded forward's reference.
    fn layer_by_layer(gnn: &Gnn, positions: &ArrayD<f64>) -> ArrayD<f64> {
        let ops = &mut Eager;
        let HarmonicGraph { on_graph, sh, sh_by_component, nodes } = harmonic_graph(ops, positions, &gnn.harmonics, LMAX, RADIUS, NUM_NEIGHBORS);
        let (n, h, c) = (PARTICLES as i64, HEADS as i64, HIDDEN as i64);
        let graph = LoopedGraph::new(ops, &sh, &sh_by_component, &on_graph, EDGE_DIM);
        let mut x = nodes;
        for conv in [&gnn.gat1, &gnn.gat2] {
            let projection = conv.projection(ops);
            let alpha = conv.attention(ops, &x, &projection, None, &graph);
            let values = ops.matmul(&x, &projection);
            let values = ops.reshape(&values, &[-1, n, h, c]);
            let values = ops.transpose(&values, &[0, 2, 1, 3]);
            let out = ops.matmul(&alpha, &values);
            let out = ops.transpose(&out, &[0, 2, 1, 3]);
            let out = ops.reshape(&out, &[-1, h * c]);
            let bias = conv.bias(ops);
            x = ops.add(&out, &bias);
        }
        let x = gnn.head1.forward(ops, &x);
        let x = apply_activation(ops, &x, Activation::Gelu, false);
        let x = gnn.head2.forward(ops, &x);
        ops.reshape(&x, &[-1, n, DIMS as i64])
    }

    /// PyG's GATConv attention written edge by edge: for each destination, its
    /// incoming edges and its self-loop (features: the mean of the incoming edges'),
    /// scores a_src·W x_src + a_dst·W x_dst + a_edge·W_e e per head, LeakyReLU(0.2),
    /// softmax over those edges.
    #[test]
    fn attention_is_pygs_softmax_over_each_destinations_edges_and_self_loop() {
        let mut conv = GatConv::new(EDGE_DIM, 5, HEADS, EDGE_DIM);
        conv.init(&mut StdRng::seed_from_u64(5));
        let frames = 2;
        // Particles ~1–3 apart: some pairs inside r = 2.5, some outside.
        let positions = ArrayD::from_shape_fn(IxDyn(&[frames, PARTICLES, DIMS]), |ix| {
            let t = (ix[0] * 36 + ix[1] * 3 + ix[2]) as f64;
            1.1 * ix[1] as f64 * [0.6, 0.3, 0.1][ix[2]] + (t * 1.3).sin()
        });
        let ops = &mut Eager;
        let graph = harmonic_graph(ops, &positions, &SphericalHarmonics::new(LMAX), LMAX, RADIUS, NUM_NEIGHBORS);
        let looped = LoopedGraph::new(ops, &graph.sh, &graph.sh_by_component, &graph.on_graph, EDGE_DIM);
        let projection = conv.projection(ops);
        let alpha = conv.attention(ops, &graph.nodes, &projection, None, &looped);
        assert_eq!(alpha.shape(), &[frames, HEADS, PARTICLES, PARTICLES]);

        let (width, n) = (HEADS * conv.out_dim, PARTICLES);
        let project =
            |row: &[f64], weights: &[f64], dim: usize| -> Vec<f64> { (0..width).map(|o| (0..dim).map(|i| row[i] * weights[i * width + o]).sum()).collect() };
        let head_dot = |v: &[f64], att: &[f64], h: usize| -> f64 { (0..conv.out_dim).map(|c| v[h * conv.out_dim + c] * att[h * conv.out_dim + c]).sum() };
        let mut edges_seen = 0;
        for f in 0..frames {
            let node = |i: usize| graph.nodes.index_axis(ndarray::Axis(0), f * n + i).iter().copied().collect::<Vec<f64>>();
            let edge = |src: usize, dst: usize| graph.sh.index_axis(ndarray::Axis(0), (f * n + src) * n + dst).iter().copied().collect::<Vec<f64>>();
            let on_graph = |src: usize, dst: usize| graph.on_graph[[f, src * n + dst]] == 1.0;
            for dst in 0..n {
                let incoming: Vec<usize> = (0..n).filter(|&src| on_graph(src, dst)).collect();
                edges_seen += incoming.len();
                let mut loop_attr = vec![0.0; EDGE_DIM];
                for &src in &incoming {
                    edge(src, dst).iter().zip(&mut loop_attr).for_each(|(e, l)| *l += e / incoming.len() as f64);
                }
                let sources: Vec<(usize, Vec<f64>)> = incoming.iter().map(|&src| (src, edge(src, dst))).chain([(dst, loop_attr)]).collect();
                let x_dst = project(&node(dst), &conv.lin, EDGE_DIM);
                for h in 0..HEADS {
                    let scores: Vec<f64> = sources
                        .iter()
                        .map(|(src, e)| {
                            let x_src = project(&node(*src), &conv.lin, EDGE_DIM);
                            let e = project(e, &conv.lin_edge, EDGE_DIM);
                            let s = head_dot(&x_src, &conv.att_src, h) + head_dot(&x_dst, &conv.att_dst, h) + head_dot(&e, &conv.att_edge, h);
                            if s > 0.0 { s } else { NEGATIVE_SLOPE * s }
                        })
                        .collect();
                    let max = scores.iter().fold(f64::NEG_INFINITY, |m, &s| m.max(s));
                    let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                    let mut expected = vec![0.0; n];
                    for ((src, _), s) in sources.iter().zip(&scores) {
                        expected[*src] = (s - max).exp() / total;
                    }
                    for (src, want) in expected.iter().enumerate() {
                        let got = alpha[[f, h, dst, src]];
                        assert!((got - want).abs() < 1e-12, "frame {f}, head {h}, {src} → {dst}: {got} vs {want}");
                    }
                }
            }
        }
        assert!(edges_seen > 0 && edges_seen < frames * n * (n - 1), "the graph has edges and misses some pairs: {edges_seen}");
    }

    #[test]
    fn the_folded_forward_equals_the_layers_one_after_another() {
        let mut gnn = Gnn::new();
        gnn.init_weights(&mut StdRng::seed_from_u64(3));
        // PyG starts the biases at zero; the folding of each must be checked too.
        for (k, bias) in [&mut gnn.gat1.bias, &mut gnn.gat2.bias, &mut gnn.head1.bias].into_iter().enumerate() {
            bias.iter_mut().enumerate().for_each(|(i, b)| *b = 0.3 * ((i + 7 * k) as f64 * 0.61).sin());
        }
        // Two frames of particles ~1–3 apart: some pairs inside r = 2.5, some outside.
        let positions = ArrayD::from_shape_fn(IxDyn(&[2, PARTICLES, DIMS]), |ix| {
            let t = (ix[0] * 36 + ix[1] * 3 + ix[2]) as f64;
            1.2 * ix[1] as f64 * [0.6, 0.3, 0.1][ix[2]] + (t * 1.7).sin()
        });
        let folded = gnn.forward(&mut Eager, &ModelInputs::snapshot(&positions));
        let expected = layer_by_layer(&gnn, &positions);
        let scale = expected.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        assert!(scale > 1e-2, "the network outputs something: {scale:e}");
        let error = folded.iter().zip(expected.iter()).fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(error < 1e-10 * scale, "folded vs layer by layer: {error:e} of {scale:e}");
    }
}
