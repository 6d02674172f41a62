//! The study's SE(3) attention ("se3mha": one multi-head attention block, 16 heads,
//! 166,352 parameters) and SE(3) Transformer ("se3net": four blocks of 8 heads,
//! 332,864 parameters).
//!
//! Each head (the study's `E3Attention`) attends over the radius graph (r = 3.5) of its
//! input positions: query `Linear`, key and value tensor products of the source's
//! features with the edge's spherical harmonics (l ≤ 4) under per-edge weights from a
//! radial network, a dot-product tensor product to a scalar, then
//! exp · soft cutoff clamped to [0, 1], normalised over incoming edges, and the
//! mean of √α · v. A block concatenates its heads and applies two tensor products
//! with the harmonics, each averaged over incoming edges. A transformer feeds each
//! block's output to the next as its positions.
//!
//! As in the study, the input features are the raw positions, so the `faithful`
//! variant is rotation- but not translation-equivariant; the `centered` variant
//! subtracts each frame's centre of mass first and is E(3)-equivariant. The study
//! builds one graph over its batch and trains one frame per step; graphs here are
//! per frame, which is the same function for those steps and keeps frames apart in
//! any batch.

use super::{
    ModelInputs, OpsModel,
    graph::{
        from_destinations, from_sources, harmonics, masked_softmax_over_sources, mean_into_destinations, pair_ones, pairwise, per_incoming_edge, radius_graph,
        soft_unit_step, unit_vectors,
    },
};
use crate::{
    data::{DIMS, PARTICLES},
    e3::{Irreps, SphericalHarmonics, radial::Activation, wigner_3j},
    nn::{Linear, Mode, Ops, TensorProduct, Unary, add_to, apply_activation, cg_columns_ki, concat_outputs},
};

pub const RADIUS: f64 = 3.5;
const NUM_BASES: usize = 20;
const SH_ORDER: u32 = 4;
pub const HIDDEN: &str = "8x0e+8x0o+16x1e+16x1o+8x2e+8x2o";

fn irreps(text: &str) -> Irreps {
    text.parse().expect("valid irreps")
}

/// e3nn's `FullyConnectedNet([20, 25, n], gelu)` once per head, the heads side by side:
/// one [20, heads·25] first layer; the second layer kept path by path of the product it
/// feeds ([heads, 25, path width] each), so that each path's weights come out as a
/// tensor of their own.
#[derive(Debug, Clone)]
pub struct StackedRadialNet {
    pub heads: usize,
    pub hidden: usize,
    /// Per head, the width of each path's weights.
    pub path_widths: Vec<usize>,
    pub first: Vec<f64>,
    pub second: Vec<f64>,
}

impl StackedRadialNet {
    fn new(heads: usize, hidden: usize, tp: &TensorProduct) -> Self {
        let path_widths: Vec<usize> = tp.instructions.iter().filter(|i| i.has_weight).map(|i| i.path_shape.iter().product::<usize>() / heads).collect();
        let outputs: usize = path_widths.iter().sum();
        Self { heads, hidden, path_widths, first: vec![0.0; NUM_BASES * heads * hidden], second: vec![0.0; heads * hidden * outputs] }
    }

    fn num_params(&self) -> usize {
        self.first.len() + self.second.len()
    }

    /// radial [E, 20] → the weights of the paths in `keep` ([E, heads·width] each, head
    /// by head), each head's scaled by `scale` [E, heads, 1] when given.
    fn forward<O: Ops>(&self, ops: &mut O, radial: &O::Tensor, keep: &[usize], scale: Option<&O::Tensor>) -> Vec<O::Tensor> {
        let h = self.heads as i64;
        let first = ops.weight(&[NUM_BASES, self.heads * self.hidden], &self.first);
        let first = ops.scale(&first, 1.0 / (NUM_BASES as f64).sqrt());
        let x = ops.matmul(radial, &first);
        let x = apply_activation(ops, &x, Activation::Gelu, true);
        let x = ops.reshape(&x, &[-1, h, self.hidden as i64]);
        let x = ops.transpose(&x, &[1, 0, 2]);
        let mut out = Vec::with_capacity(keep.len());
        let mut offset = 0;
        for (path, &width) in self.path_widths.iter().enumerate() {
            let numel = self.heads * self.hidden * width;
            let range = offset..offset + numel;
            offset += numel;
            if !keep.contains(&path) {
                continue;
            }
            let second = ops.weight(&[self.heads, self.hidden, width], &self.second[range]);
            let second = ops.scale(&second, 1.0 / (self.hidden as f64).sqrt());
            let y = ops.matmul(&x, &second);
            let mut y = ops.transpose(&y, &[1, 0, 2]);
            if let Some(scale) = scale {
                y = ops.mul(&y, scale);
            }
            out.push(ops.reshape(&y, &[-1, h * width as i64]));
        }
        out
    }
}

/// The heads of one block (the study's `E3Attention`, once per head), computed
/// together: head h's channels are copy block h of every irrep of the stacked irreps
/// (16 heads of 8x0e are 128x0e), which is also the order the block's first tensor
/// product takes them in.
#[derive(Debug, Clone)]
pub struct Heads {
    pub count: usize,
    /// Every head's query `Linear`, side by side: 1x1o → stacked irreps.
    pub to_q: Linear,
    /// Every head's key product, side by side (per-edge weights), keeping only the paths
    /// into the irreps the query writes: keys elsewhere meet a zero query. `key_paths`
    /// are those paths' indices among all of the study's key paths (which `fc_k` weights).
    pub tp_k: TensorProduct,
    key_paths: Vec<usize>,
    /// Every head's value product, side by side (per-edge weights).
    pub tp_v: TensorProduct,
    pub fc_k: StackedRadialNet,
    pub fc_v: StackedRadialNet,
    /// One head's dot product hidden ⊗ hidden → 0e (its paths; weights are below).
    pub dot_product: TensorProduct,
    /// The dot products' weights, path by path, each path's [heads, mul, mul] together.
    pub dot_weights: Vec<f64>,
    hidden: Irreps,
    stacked: Irreps,
}

impl Heads {
    fn new(count: usize, irreps_in: &Irreps, hidden: &Irreps, sh: &Irreps) -> Self {
        let stacked = Irreps::new(hidden.iter().map(|m| (m.mul * count, m.ir)));
        let all_keys = TensorProduct::fully_connected(irreps_in.clone(), sh.clone(), stacked.clone(), false);
        let tp_v = TensorProduct::fully_connected(irreps_in.clone(), sh.clone(), stacked.clone(), false);
        let radial = |tp: &TensorProduct| StackedRadialNet::new(count, sh.dim(), tp);
        let dot_product = TensorProduct::fully_connected(hidden.clone(), hidden.clone(), irreps("0e"), false);
        let to_q = Linear::new(irreps_in.clone(), stacked.clone());
        let written: Vec<usize> = (0..stacked.len()).filter(|&o| to_q.paths.iter().any(|p| p.1 == o)).collect();
        let key_paths: Vec<usize> = (0..all_keys.instructions.len()).filter(|&i| written.contains(&all_keys.instructions[i].i_out)).collect();
        let used_out = Irreps(written.iter().map(|&o| stacked.0[o]).collect());
        let used_instructions: Vec<_> = key_paths
            .iter()
            .map(|&i| {
                let ins = &all_keys.instructions[i];
                let out = written.iter().position(|&o| o == ins.i_out).expect("written");
                (ins.i_in1, ins.i_in2, out, ins.mode, ins.has_weight)
            })
            .collect();
        let tp_k = TensorProduct::new(irreps_in.clone(), sh.clone(), used_out, &used_instructions, false).expect("a subset of valid paths is valid");
        Self {
            count,
            to_q,
            key_paths,
            fc_k: radial(&all_keys),
            fc_v: radial(&tp_v),
            tp_k,
            tp_v,
            dot_weights: vec![0.0; count * dot_product.weight_numel],
            dot_product,
            hidden: hidden.clone(),
            stacked,
        }
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        let Self { to_q, fc_k, fc_v, dot_weights, .. } = self;
        vec![&mut to_q.weight, &mut fc_k.first, &mut fc_k.second, &mut fc_v.first, &mut fc_v.second, dot_weights]
    }

    fn num_params(&self) -> usize {
        self.to_q.weight_numel() + self.fc_k.num_params() + self.fc_v.num_params() + self.dot_weights.len()
    }

    /// features [B·12, dim_in] → every head's output [B·12, dim_stacked].
    fn forward<O: Ops>(&self, ops: &mut O, features: &O::Tensor, graph: &Graph<O::Tensor>) -> O::Tensor {
        let heads = self.count as i64;
        let dim_in = self.to_q.irreps_in.dim();
        let q = self.to_q.forward(ops, features);
        let x_src = from_sources(ops, features, dim_in, &graph.ones);
        let k_weights = self.fc_k.forward(ops, &graph.radial, &self.key_paths, None);
        let keys = self.tp_k.forward_per_path(ops, &x_src, &graph.sh, k_weights);

        // q · W · k per head and irrep (the dot product's path l ⊗ l → 0e). q is zero on
        // the irreps the query Linear does not write (all but the input's), so only
        // those paths contribute; their weights act on q per node, before the copy to edges.
        let slices = self.stacked.slices();
        let written: Vec<usize> = (0..self.stacked.len()).filter(|&o| self.to_q.paths.iter().any(|p| p.1 == o)).collect();
        let mut weighted = Vec::new();
        let mut offset = 0;
        for ins in &self.dot_product.instructions {
            let numel = self.count * ins.path_shape.iter().product::<usize>();
            let range = offset..offset + numel;
            offset += numel;
            let j = ins.i_in1;
            if !written.contains(&j) {
                continue;
            }
            let m = self.hidden.0[j];
            let (mul, d) = (m.mul as i64, m.ir.dim() as i64);
            let weight = ops.weight(&[self.count, m.mul, m.mul], &self.dot_weights[range]);
            let q_j = ops.slice(&q, 1, slices[j].start, slices[j].end);
            let q_j = ops.reshape(&q_j, &[-1, heads, mul, d]);
            let q_j = ops.transpose(&q_j, &[0, 1, 3, 2]);
            let q_j = ops.matmul(&q_j, &weight);
            let q_j = ops.transpose(&q_j, &[0, 1, 3, 2]);
            let cg = wigner_3j(m.ir.l, m.ir.l, 0);
            let cg: Vec<f64> = cg.iter().copied().collect();
            let cg = ops.constant(&[m.ir.dim(), m.ir.dim()], &cg);
            let q_j = ops.matmul(&q_j, &cg);
            let q_j = ops.scale(&q_j, ins.path_weight);
            weighted.push(ops.reshape(&q_j, &[-1, heads * mul * d]));
        }
        let weighted = if weighted.len() == 1 { weighted.pop().expect("one") } else { ops.concat(&weighted, 1) };
        let width: usize = written.iter().map(|&j| slices[j].len()).sum();
        let weighted = from_destinations(ops, &weighted, width, &graph.ones);
        let logit = ops.mul(&weighted, &keys);
        // Per head, the written blocks are [heads, ·] each; sum them block by block.
        let mut logits: Option<O::Tensor> = None;
        let mut start = 0;
        for &j in &written {
            let part = ops.slice(&logit, 1, start, start + slices[j].len());
            start += slices[j].len();
            let part = ops.reshape(&part, &[-1, heads, (slices[j].len() / self.count) as i64]);
            let part = ops.reduce_sum(&part, 2, false);
            add_to(ops, &mut logits, part);
        }
        let logit = logits.expect("the query writes at least one irrep");

        // The study's weights are clamp(cut · exp(logit), 0, 1) = exp(s) with
        // s = min(0, logit − 1/u) (cut = exp(−1/u)), normalised over incoming edges:
        // a softmax of s. Taken as one (shifted by the maximum), it has the same value
        // and gradient without overflow, or the 1/z² of a sum that underflows near the
        // cutoff (which turns training to NaN).
        let exponent = ops.add(&logit, &graph.log_cut);
        let negated = ops.unary(&exponent, Unary::Neg);
        let clamped = ops.unary(&negated, Unary::Relu);
        let score = ops.unary(&clamped, Unary::Neg);
        let n = PARTICLES as i64;
        let score = ops.reshape(&score, &[-1, n, n, heads]);
        let alpha = masked_softmax_over_sources(ops, &score, &graph.cut_mask, 1);
        let alpha = ops.reshape(&alpha, &[-1, heads]);
        let alpha = ops.unary(&alpha, Unary::Relu);
        let alpha = ops.unary(&alpha, Unary::Sqrt);
        let alpha = ops.reshape(&alpha, &[-1, heads, 1]);
        // √α · v: v is linear in its per-edge weights, so √α scales each head's weights.
        let all_paths: Vec<usize> = (0..self.fc_v.path_widths.len()).collect();
        let v_weights = self.fc_v.forward(ops, &graph.radial, &all_paths, Some(&alpha));
        let summed = self.values_into_destinations(ops, features, &x_src, &graph.sh, v_weights);
        per_incoming_edge(ops, &summed, &graph.on_graph)
    }

    /// Σ over each destination's sources of the value product [B·12, dim_out] (`nodes`,
    /// the block's input features, give the rows of outputs no path writes; `x_src` are
    /// those features on the edges). Its paths take one input vector and one harmonic
    /// degree, 1x1o ⊗ 1xl → w copies, under per-edge weights W: per path, R[e, k] = Σ_ij C_ijk x[src, i] Y[e, j] on the edges, then one batched
    /// matmul per destination, Σ_src R[e, k] W[e, w]. The same function as the product on
    /// every edge followed by the scatter-sum, without its [edges, w, 2l+1] messages.
    fn values_into_destinations<O: Ops>(&self, ops: &mut O, nodes: &O::Tensor, x_src: &O::Tensor, sh: &O::Tensor, weights: Vec<O::Tensor>) -> O::Tensor {
        let tp = &self.tp_v;
        let n = PARTICLES as i64;
        let (in1, in2) = (tp.irreps_in1.slices(), tp.irreps_in2.slices());
        let mut sums: Vec<Option<O::Tensor>> = vec![None; tp.irreps_out.len()];
        for (ins, weight) in tp.instructions.iter().zip(weights) {
            let (a, b, c) = (tp.irreps_in1.0[ins.i_in1], tp.irreps_in2.0[ins.i_in2], tp.irreps_out.0[ins.i_out]);
            assert!(ins.mode == Mode::Uvw && a.mul == 1 && b.mul == 1, "attention values are uvw products of one vector and one harmonic");
            let (d1, d2, d3, w) = (a.ir.dim(), b.ir.dim(), c.ir.dim() as i64, c.mul as i64);
            // R[e, k] = Σ_i x[e, i] (Σ_j Y[e, j] C_ijk)
            let cg_j_ki = ops.constant(&[d2, c.ir.dim() * d1], &cg_columns_ki(a.ir.l, b.ir.l, c.ir.l));
            let y = ops.slice(sh, 1, in2[ins.i_in2].start, in2[ins.i_in2].end);
            let y = ops.matmul(&y, &cg_j_ki);
            let y = ops.reshape(&y, &[-1, d3, d1 as i64]);
            let x = ops.slice(x_src, 1, in1[ins.i_in1].start, in1[ins.i_in1].end);
            let x = ops.reshape(&x, &[-1, 1, d1 as i64]);
            let r = ops.mul(&y, &x);
            let r = ops.reduce_sum(&r, 2, false);
            // [B, src, dst, ·] → [B·dst, ·, src] and [B·dst, src, ·]: the matmul sums over sources.
            let r = ops.reshape(&r, &[-1, n, n, d3]);
            let r = ops.transpose(&r, &[0, 2, 3, 1]);
            let r = ops.reshape(&r, &[-1, d3, n]);
            let weight = ops.reshape(&weight, &[-1, n, n, w]);
            let weight = ops.transpose(&weight, &[0, 2, 1, 3]);
            let weight = ops.reshape(&weight, &[-1, n, w]);
            let out = ops.matmul(&r, &weight);
            let out = ops.transpose(&out, &[0, 2, 1]);
            let out = ops.scale(&out, ins.path_weight);
            let out = ops.reshape(&out, &[-1, w * d3]);
            add_to(ops, &mut sums[ins.i_out], out);
        }
        concat_outputs(ops, sums, &tp.irreps_out, nodes, tp.irreps_in1.dim())
    }
}

/// The study's `E3MultiHeadAttention`.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    pub heads: Heads,
    pub tp1: TensorProduct,
    pub tp2: TensorProduct,
    hidden: Irreps,
}

impl MultiHeadAttention {
    fn new(heads: usize) -> Self {
        let irreps_in = irreps("1x1o");
        let hidden = irreps(HIDDEN);
        let sh = Irreps::spherical_harmonics(SH_ORDER, -1);
        let heads = Heads::new(heads, &irreps_in, &hidden, &sh);
        // The study's `irreps_mid * heads` lists the heads one after another; a fully
        // connected tensor product treats copies of an irrep alike wherever they sit, so
        // taking them grouped by irrep is the same function with as many parameters.
        Self {
            tp1: TensorProduct::fully_connected(heads.stacked.clone(), sh.clone(), hidden.clone(), true),
            tp2: TensorProduct::fully_connected(hidden.clone(), sh, irreps_in, true),
            heads,
            hidden,
        }
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        let Self { heads, tp1, tp2, .. } = self;
        let mut out = heads.weights_mut();
        out.extend(tp1.weight.as_mut());
        out.extend(tp2.weight.as_mut());
        out
    }

    fn num_params(&self) -> usize {
        self.heads.num_params() + self.tp1.weight_numel + self.tp2.weight_numel
    }

    /// positions [B, 12, 3] → [B, 12, 3].
    fn forward<O: Ops>(&self, ops: &mut O, positions: &O::Tensor, harmonics_table: &SphericalHarmonics) -> O::Tensor {
        let graph = Graph::new(ops, positions, harmonics_table);
        let features = ops.reshape(positions, &[-1, DIMS as i64]);
        let heads = self.heads.forward(ops, &features, &graph);
        let mut gather = |ops: &mut O, nodes: &O::Tensor, dim: usize| from_sources(ops, nodes, dim, &graph.ones);
        let h = self.tp1.forward_gathered(ops, &heads, &graph.sh, &mut gather);
        let h = mean_into_destinations(ops, &h, self.hidden.dim(), &graph.on_graph);
        let out = self.tp2.forward_gathered(ops, &h, &graph.sh, &mut gather);
        let out = mean_into_destinations(ops, &out, DIMS, &graph.on_graph);
        ops.reshape(&out, &[-1, PARTICLES as i64, DIMS as i64])
    }
}

/// One frame's radius graph over a block's input positions, rows (frame, src, dst).
struct Graph<T> {
    /// [B, 12, 12, 1]
    on_graph: T,
    ones: T,
    /// Harmonics of the unit edge vectors, l ≤ 4, component normalisation [B·144, 25].
    sh: T,
    /// smooth_finite basis of |r| on [0, r] with cutoff, times √20 [B·144, 20].
    radial: T,
    /// log of the soft cutoff, −1/u with u = 10(1 − |r|/r) (finite where u ≤ 0) [B·144, 1].
    log_cut: T,
    /// On the graph and u > 0, where the cutoff is not 0 [B, 12, 12, 1].
    cut_mask: T,
}

impl<T: Clone> Graph<T> {
    fn new<O: Ops<Tensor = T>>(ops: &mut O, positions: &T, harmonics_table: &SphericalHarmonics) -> Self {
        let (vec, length) = pairwise(ops, positions);
        let on_graph = radius_graph(ops, &length, RADIUS);
        let ones = pair_ones(ops, positions);
        let unit = unit_vectors(ops, &vec, &length);
        let ls: Vec<u32> = (0..=SH_ORDER).collect();
        let sh = harmonics(ops, harmonics_table, &ls, &unit, &ones);
        let sh = ops.reshape(&sh, &[-1, ((SH_ORDER + 1) * (SH_ORDER + 1)) as i64]);
        // The rest broadcasts against edge features [B, 12, 12, ·].
        let n = PARTICLES as i64;
        let [length, on_graph, ones] = [length, on_graph, ones].map(|x| ops.reshape(&x, &[-1, n, n, 1]));

        // soft_one_hot_linspace(|r|, 0, r, 20, "smooth_finite", cutoff = True) · √20:
        // bumps centred on the 20 inner points of 22 evenly spaced ones.
        let step = RADIUS / (NUM_BASES + 1) as f64;
        let centres: Vec<f64> = (1..=NUM_BASES).map(|i| i as f64 * step).collect();
        let centres = ops.constant(&[NUM_BASES], &centres);
        let diff = ops.sub(&length, &centres);
        let diff = ops.scale(&diff, 1.0 / step);
        let rising = ops.add_scalar(&diff, 1.0);
        let falling = ops.scale(&diff, -1.0);
        let falling = ops.add_scalar(&falling, 1.0);
        let rising = soft_unit_step(ops, &rising);
        let falling = soft_unit_step(ops, &falling);
        let bump = ops.mul(&rising, &falling);
        let radial = ops.scale(&bump, 1.14136 * std::f64::consts::E.powi(2) * (NUM_BASES as f64).sqrt());
        let radial = ops.reshape(&radial, &[-1, NUM_BASES as i64]);

        let u = ops.scale(&length, -10.0 / RADIUS);
        let u = ops.add_scalar(&u, 10.0);
        let live = ops.greater_than(&u, 0.0);
        let cut_mask = ops.mul(&live, &on_graph);
        let safe = ops.clip(&u, 1e-3, f64::INFINITY);
        let minus_one = ops.constant(&[], &[-1.0]);
        let log_cut = ops.div(&minus_one, &safe);
        let log_cut = ops.reshape(&log_cut, &[-1, 1]);
        Self { on_graph, ones, sh, radial, log_cut, cut_mask }
    }
}

/// A stack of attention blocks, each block's output the next one's positions.
#[derive(Debug, Clone)]
pub struct Se3Transformer {
    pub blocks: Vec<MultiHeadAttention>,
    /// Positions relative to each frame's centre of mass (E(3)-equivariant), rather
    /// than raw (as the study: rotation-equivariant only).
    pub centered: bool,
    harmonics: SphericalHarmonics,
}

impl Se3Transformer {
    /// The study's "SE(3) attention": one block of 16 heads.
    pub fn attention(centered: bool) -> Self {
        Self::new(1, 16, centered)
    }

    /// The study's "SE(3) Transformer": four blocks of 8 heads.
    pub fn transformer(centered: bool) -> Self {
        Self::new(4, 8, centered)
    }

    pub fn new(blocks: usize, heads: usize, centered: bool) -> Self {
        Self { blocks: (0..blocks).map(|_| MultiHeadAttention::new(heads)).collect(), centered, harmonics: SphericalHarmonics::new(SH_ORDER) }
    }
}

impl OpsModel for Se3Transformer {
    fn forward<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> O::Tensor {
        let positions = inputs.positions;
        let mut x = positions.clone();
        if self.centered {
            let centre = ops.reduce_sum(&x, 1, true);
            let centre = ops.scale(&centre, 1.0 / PARTICLES as f64);
            x = ops.sub(&x, &centre);
        }
        for block in &self.blocks {
            x = block.forward(ops, &x, &self.harmonics);
        }
        x
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        self.blocks.iter_mut().flat_map(MultiHeadAttention::weights_mut).collect()
    }

    fn num_params(&self) -> usize {
        self.blocks.iter().map(MultiHeadAttention::num_params).sum()
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;
    use crate::{models::graph::sum_into_destinations, nn::Eager};

    /// The per-destination value contraction is the value product on every edge
    /// followed by the scatter-sum.
    #[test]
    fn values_summed_per_destination_equal_the_sum_of_edge_messages() {
        let mut rng = StdRng::seed_from_u64(3);
        let model = Se3Transformer::attention(false);
        let heads = &model.blocks[0].heads;
        let positions = ArrayD::from_shape_fn(IxDyn(&[2, PARTICLES, DIMS]), |_| 1.5 * rng.random::<f64>());
        let graph = Graph::new(&mut Eager, &positions, &model.harmonics);
        let features = positions.clone().into_shape_with_order(IxDyn(&[2 * PARTICLES, DIMS])).expect("rows");
        let x_src = from_sources(&mut Eager, &features, DIMS, &graph.ones);
        let edges = 2 * PARTICLES * PARTICLES;
        let weights: Vec<ArrayD<f64>> =
            heads.fc_v.path_widths.iter().map(|&width| ArrayD::from_shape_fn(IxDyn(&[edges, heads.count * width]), |_| rng.random::<f64>() - 0.5)).collect();
        let messages = heads.tp_v.forward_per_path(&mut Eager, &x_src, &graph.sh, weights.clone());
        let expected = sum_into_destinations(&mut Eager, &messages, heads.stacked.dim());
        let actual = heads.values_into_destinations(&mut Eager, &features, &x_src, &graph.sh, weights);
        assert_eq!(actual.shape(), expected.shape());
        let scale = expected.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.1, "the values are not all zero");
        let error = actual.iter().zip(expected.iter()).fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(error < 1e-12 * scale, "{error:e}");
    }
}
