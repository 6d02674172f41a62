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
    OpsModel,
    graph::{from_destinations, from_sources, harmonics, mean_into_destinations, pairwise, radius_graph, soft_unit_step, sum_into_destinations, unit_vectors},
};
use crate::{
    data::{DIMS, PARTICLES},
    e3::{Irreps, SphericalHarmonics, radial::Activation},
    nn::{FullyConnectedNet, Linear, Ops, TensorProduct, Unary},
};

pub const RADIUS: f64 = 3.5;
const NUM_BASES: usize = 20;
const SH_ORDER: u32 = 4;
pub const HIDDEN: &str = "8x0e+8x0o+16x1e+16x1o+8x2e+8x2o";

fn irreps(text: &str) -> Irreps {
    text.parse().expect("valid irreps")
}

/// One head: the study's `E3Attention`.
#[derive(Debug, Clone)]
pub struct Attention {
    pub to_q: Linear,
    pub tp_k: TensorProduct,
    pub fc_k: FullyConnectedNet,
    pub tp_v: TensorProduct,
    pub fc_v: FullyConnectedNet,
    pub dot_product: TensorProduct,
}

impl Attention {
    fn new(irreps_in: &Irreps, hidden: &Irreps, sh: &Irreps) -> Self {
        let tp_k = TensorProduct::fully_connected(irreps_in.clone(), sh.clone(), hidden.clone(), false);
        let tp_v = TensorProduct::fully_connected(irreps_in.clone(), sh.clone(), hidden.clone(), false);
        let radial = |tp: &TensorProduct| FullyConnectedNet::new(vec![NUM_BASES, sh.dim(), tp.weight_numel], Activation::Gelu);
        Self {
            to_q: Linear::new(irreps_in.clone(), hidden.clone()),
            fc_k: radial(&tp_k),
            fc_v: radial(&tp_v),
            tp_k,
            tp_v,
            dot_product: TensorProduct::fully_connected(hidden.clone(), hidden.clone(), irreps("0e"), true),
        }
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        let Self { to_q, fc_k, fc_v, dot_product, .. } = self;
        let mut out = vec![&mut to_q.weight];
        out.extend(fc_k.weights.iter_mut());
        out.extend(fc_v.weights.iter_mut());
        out.extend(dot_product.weight.as_mut());
        out
    }

    fn num_params(&self) -> usize {
        self.to_q.weight_numel() + self.fc_k.num_params() + self.fc_v.num_params() + self.dot_product.weight_numel
    }

    /// features [B·12, dim_in] → [B·12, dim_hidden].
    fn forward<O: Ops>(&self, ops: &mut O, features: &O::Tensor, graph: &Graph<O::Tensor>) -> O::Tensor {
        let dim_in = self.to_q.irreps_in.dim();
        let dim_hidden = self.to_q.irreps_out.dim();
        let q = self.to_q.forward(ops, features);
        let x_src = from_sources(ops, features, dim_in, &graph.ones);
        let k_weights = self.fc_k.forward(ops, &graph.radial);
        let k = self.tp_k.forward(ops, &x_src, &graph.sh, Some(&k_weights));
        let v_weights = self.fc_v.forward(ops, &graph.radial);
        let v = self.tp_v.forward(ops, &x_src, &graph.sh, Some(&v_weights));
        let q_dst = from_destinations(ops, &q, dim_hidden, &graph.ones);
        let logit = self.dot_product.forward(ops, &q_dst, &k, None);
        // clamp(cut · exp(logit), 0, 1) with cut = exp(−1/u) is exp(min(0, logit − 1/u)):
        // the same value and gradient, without overflowing where the logit is large.
        let exponent = ops.add(&logit, &graph.log_cut);
        let negated = ops.unary(&exponent, Unary::Neg);
        let clamped = ops.unary(&negated, Unary::Relu);
        let clamped = ops.unary(&clamped, Unary::Neg);
        let exp = ops.unary(&clamped, Unary::Exp);
        let exp = ops.mul(&exp, &graph.cut_mask);
        let z = sum_into_destinations(ops, &exp, 1);
        // z = 0 (no weight arriving) divides by 1 instead, as the study sets z[z == 0] = 1.
        let nonzero = ops.greater_than(&z, 0.0);
        let z = ops.sub(&z, &nonzero);
        let z = ops.add_scalar(&z, 1.0);
        let z = from_destinations(ops, &z, 1, &graph.ones);
        let alpha = ops.div(&exp, &z);
        let alpha = ops.unary(&alpha, Unary::Relu);
        let alpha = ops.unary(&alpha, Unary::Sqrt);
        let messages = ops.mul(&v, &alpha);
        mean_into_destinations(ops, &messages, dim_hidden, &graph.on_graph)
    }
}

/// The study's `E3MultiHeadAttention`.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    pub heads: Vec<Attention>,
    pub tp1: TensorProduct,
    pub tp2: TensorProduct,
    hidden: Irreps,
}

impl MultiHeadAttention {
    fn new(heads: usize) -> Self {
        let irreps_in = irreps("1x1o");
        let hidden = irreps(HIDDEN);
        let sh = Irreps::spherical_harmonics(SH_ORDER, -1);
        // The study's `irreps_mid * heads` lists the heads one after another; a fully
        // connected tensor product treats copies of an irrep alike wherever they sit, so
        // the heads are regrouped by irrep (same function, same parameter count) and each
        // irrep is one block.
        let concatenated = Irreps::new(hidden.iter().map(|m| (m.mul * heads, m.ir)));
        Self {
            heads: (0..heads).map(|_| Attention::new(&irreps_in, &hidden, &sh)).collect(),
            tp1: TensorProduct::fully_connected(concatenated, sh.clone(), hidden.clone(), true),
            tp2: TensorProduct::fully_connected(hidden.clone(), sh, irreps_in, true),
            hidden,
        }
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        let Self { heads, tp1, tp2, .. } = self;
        let mut out: Vec<&mut Vec<f64>> = heads.iter_mut().flat_map(Attention::weights_mut).collect();
        out.extend(tp1.weight.as_mut());
        out.extend(tp2.weight.as_mut());
        out
    }

    fn num_params(&self) -> usize {
        self.heads.iter().map(Attention::num_params).sum::<usize>() + self.tp1.weight_numel + self.tp2.weight_numel
    }

    /// positions [B, 12, 3] → [B, 12, 3].
    fn forward<O: Ops>(&self, ops: &mut O, positions: &O::Tensor, harmonics_table: &SphericalHarmonics) -> O::Tensor {
        let graph = Graph::new(ops, positions, harmonics_table);
        let features = ops.reshape(positions, &[-1, DIMS as i64]);
        let outputs: Vec<O::Tensor> = self.heads.iter().map(|head| head.forward(ops, &features, &graph)).collect();
        let slices = self.hidden.slices();
        let mut blocks = Vec::new();
        for slice in slices {
            for output in &outputs {
                blocks.push(ops.slice(output, 1, slice.start, slice.end));
            }
        }
        let concatenated = ops.concat(&blocks, 1);
        let dim_concatenated = self.tp1.irreps_in1.dim();
        let x = from_sources(ops, &concatenated, dim_concatenated, &graph.ones);
        let h = self.tp1.forward(ops, &x, &graph.sh, None);
        let h = mean_into_destinations(ops, &h, self.hidden.dim(), &graph.on_graph);
        let x = from_sources(ops, &h, self.hidden.dim(), &graph.ones);
        let out = self.tp2.forward(ops, &x, &graph.sh, None);
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
    /// On the graph and u > 0, where the cutoff is not 0 [B·144, 1].
    cut_mask: T,
}

impl<T: Clone> Graph<T> {
    fn new<O: Ops<Tensor = T>>(ops: &mut O, positions: &T, harmonics_table: &SphericalHarmonics) -> Self {
        let (vec, length) = pairwise(ops, positions);
        let on_graph = radius_graph(ops, &length, RADIUS);
        let ones = ops.greater_than(&length, -1.0);
        let unit = unit_vectors(ops, &vec, &length);
        let ls: Vec<u32> = (0..=SH_ORDER).collect();
        let sh = harmonics(ops, harmonics_table, &ls, &unit, &ones);
        let sh = ops.reshape(&sh, &[-1, ((SH_ORDER + 1) * (SH_ORDER + 1)) as i64]);

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
        let cut_mask = ops.reshape(&cut_mask, &[-1, 1]);
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
        Self {
            blocks: (0..blocks).map(|_| MultiHeadAttention::new(heads)).collect(),
            centered,
            harmonics: SphericalHarmonics::new(SH_ORDER),
        }
    }
}

impl OpsModel for Se3Transformer {
    fn forward<O: Ops>(&self, ops: &mut O, positions: &O::Tensor) -> O::Tensor {
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
