//! e3nn's `TensorProduct`: a sum over paths (l1 ⊗ l2 → l3) of small Clebsch–Gordan
//! blocks, each contracted with its own weights. Large products run path by path, a
//! few matmuls on [rows, mul, 2l+1] blocks each. Small ones with shared weights fold
//! every path into one dense bilinear tensor M [dim1, dim2, dim_out] built from the
//! weights (constant-folded by ONNX Runtime, a few small ops per training step), so
//! the per-row work is one outer product or matmul and one contraction instead of
//! dozens of tiny ops per path.
//!
//! Weights are laid out exactly as in e3nn (instruction order, each path's
//! `path_shape` row-major), with e3nn 0.6's path normalisation for
//! irrep_normalization = "component" and path_normalization = "element".

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{add_to, ops::Ops};
use crate::e3::{Irreps, wigner_3j};

/// How the multiplicities of the two inputs meet (e3nn's connection modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Uvw,
    Uvu,
    Uvv,
    Uuw,
    Uuu,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.into())).map_err(|_| format!("unsupported connection mode '{s}'"))
    }
}

/// One path of the product, with its normalisation coefficient already applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    pub i_in1: usize,
    pub i_in2: usize,
    pub i_out: usize,
    pub mode: Mode,
    pub has_weight: bool,
    /// √α of e3nn: the factor this path's output is multiplied by.
    pub path_weight: f64,
    pub path_shape: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct TensorProduct {
    pub irreps_in1: Irreps,
    pub irreps_in2: Irreps,
    pub irreps_out: Irreps,
    pub instructions: Vec<Instruction>,
    pub weight_numel: usize,
    /// Shared weights (e3nn's internal weights), flat; `None` when every sample brings its own.
    pub weight: Option<Vec<f64>>,
}

/// Largest dim1·dim2·dim_out folded into one dense bilinear tensor: past this the
/// dense contraction's wasted zeros (Clebsch–Gordan sparsity) outweigh the per-path
/// ops it saves.
const DENSE_LIMIT: usize = 1 << 16;

impl TensorProduct {
    /// `instructions` are (i_in1, i_in2, i_out, mode, has_weight) as in e3nn; with
    /// `shared_weights` the weights start at zero and are set with [`Self::set_weight`].
    pub fn new(
        irreps_in1: Irreps,
        irreps_in2: Irreps,
        irreps_out: Irreps,
        instructions: &[(usize, usize, usize, Mode, bool)],
        shared_weights: bool,
    ) -> Result<Self, String> {
        let entry = |irreps: &Irreps, i: usize, which: &str| {
            irreps.0.get(i).copied().ok_or_else(|| format!("instruction refers to {which}[{i}] but {which} is {irreps}"))
        };
        let mut shaped = Vec::with_capacity(instructions.len());
        for &(i1, i2, io, mode, has_weight) in instructions {
            let (a, b, c) = (entry(&irreps_in1, i1, "irreps_in1")?, entry(&irreps_in2, i2, "irreps_in2")?, entry(&irreps_out, io, "irreps_out")?);
            if !c.ir.in_product(a.ir, b.ir) {
                return Err(format!("{} ⊗ {} cannot give {}", a.ir, b.ir, c.ir));
            }
            let path_shape = match mode {
                Mode::Uvw => vec![a.mul, b.mul, c.mul],
                Mode::Uvu | Mode::Uvv => vec![a.mul, b.mul],
                Mode::Uuw => vec![a.mul, c.mul],
                Mode::Uuu => vec![a.mul],
            };
            let consistent = match mode {
                Mode::Uvw => true,
                Mode::Uvu => a.mul == c.mul,
                Mode::Uvv => b.mul == c.mul,
                Mode::Uuw => a.mul == b.mul && (has_weight || c.mul == 1),
                Mode::Uuu => a.mul == b.mul && b.mul == c.mul,
            };
            if !consistent {
                return Err(format!("multiplicities {}, {}, {} do not fit mode {mode:?}", a.mul, b.mul, c.mul));
            }
            shaped.push((i1, i2, io, mode, has_weight, path_shape));
        }
        // e3nn: α = dim(out) / Σ (elements summed into the same output), path weight √α.
        let elements = |i1: usize, i2: usize, mode: Mode| -> usize {
            let (a, b) = (irreps_in1.0[i1].mul, irreps_in2.0[i2].mul);
            match mode {
                Mode::Uvw => a * b,
                Mode::Uvu => b,
                Mode::Uvv | Mode::Uuw => a,
                Mode::Uuu => 1,
            }
        };
        let instructions: Vec<Instruction> = shaped
            .iter()
            .map(|(i1, i2, io, mode, has_weight, path_shape)| {
                let fan_in: usize = shaped.iter().filter(|s| s.2 == *io).map(|s| elements(s.0, s.1, s.3)).sum();
                let mut alpha = irreps_out.0[*io].ir.dim() as f64;
                if fan_in > 0 {
                    alpha /= fan_in as f64;
                }
                Instruction {
                    i_in1: *i1,
                    i_in2: *i2,
                    i_out: *io,
                    mode: *mode,
                    has_weight: *has_weight,
                    path_weight: alpha.sqrt(),
                    path_shape: path_shape.clone(),
                }
            })
            .collect();
        let weight_numel = instructions.iter().filter(|i| i.has_weight).map(|i| i.path_shape.iter().product::<usize>()).sum();
        let weight = shared_weights.then(|| vec![0.0; weight_numel]);
        Ok(Self { irreps_in1, irreps_in2, irreps_out, instructions, weight_numel, weight })
    }

    /// Every allowed path with mode uvw and a weight (e3nn's `FullyConnectedTensorProduct`).
    pub fn fully_connected(irreps_in1: Irreps, irreps_in2: Irreps, irreps_out: Irreps, shared_weights: bool) -> Self {
        let mut instructions = Vec::new();
        for (i1, a) in irreps_in1.iter().enumerate() {
            for (i2, b) in irreps_in2.iter().enumerate() {
                for (io, c) in irreps_out.iter().enumerate() {
                    if c.ir.in_product(a.ir, b.ir) {
                        instructions.push((i1, i2, io, Mode::Uvw, true));
                    }
                }
            }
        }
        Self::new(irreps_in1, irreps_in2, irreps_out, &instructions, shared_weights).expect("fully connected paths are valid")
    }

    /// Replaces the shared weights (e3nn layout).
    pub fn set_weight(&mut self, weight: Vec<f64>) -> Result<(), String> {
        if weight.len() != self.weight_numel {
            return Err(format!("expected {} weights, got {}", self.weight_numel, weight.len()));
        }
        match &mut self.weight {
            Some(w) => *w = weight,
            None => return Err("this tensor product takes its weights per sample".into()),
        }
        Ok(())
    }

    /// 1 for output components that some non-empty path writes, else 0 (e3nn's output_mask).
    pub fn output_mask(&self) -> Vec<f64> {
        self.irreps_out
            .iter()
            .enumerate()
            .flat_map(|(io, m)| {
                let written = self.instructions.iter().any(|i| i.i_out == io && i.path_weight != 0.0 && !i.path_shape.contains(&0));
                std::iter::repeat_n(if written { 1.0 } else { 0.0 }, m.dim())
            })
            .collect()
    }

    /// x1 [rows, dim1] ⊗ x2 [rows, dim2] → [rows, dim_out]; `weights` [rows, weight_numel]
    /// when the weights are per sample.
    pub fn forward<O: Ops>(&self, ops: &mut O, x1: &O::Tensor, x2: &O::Tensor, weights: Option<&O::Tensor>) -> O::Tensor {
        assert!(self.weight.is_some() != weights.is_some(), "weights must be either shared or given per sample");
        if let Some(dense) = self.dense_bilinear(ops) {
            return self.contract_dense(ops, &dense, x1, x2);
        }
        if self.is_linear() {
            let blocks: Vec<O::Tensor> = self
                .irreps_in1
                .slices()
                .iter()
                .map(|range| ops.slice(x1, 1, range.start, range.end))
                .collect();
            return self.forward_linear(ops, &blocks, BlockLayout::MulFirst, &vec![1.0; blocks.len()], x2);
        }
        let path_weights = self.path_weights(ops, weights);
        self.forward_paths(ops, x1, x2, path_weights)
    }

    /// `forward` for shared weights, with each output irrep's block laid out
    /// (2l+1, mul) instead of e3nn's (mul, 2l+1): what a consumer contracting over
    /// 2l+1 per channel reads without a transpose. A dense product permutes the columns
    /// of its matrix (a constant once exported) rather than its output.
    pub fn forward_channels_last<O: Ops>(&self, ops: &mut O, x1: &O::Tensor, x2: &O::Tensor) -> O::Tensor {
        if let Some(dense) = self.dense_bilinear(ops) {
            let dense = channels_last(ops, &dense, &self.irreps_out, 3);
            return self.contract_dense(ops, &dense, x1, x2);
        }
        let out = self.forward(ops, x1, x2, None);
        channels_last(ops, &out, &self.irreps_out, 2)
    }

    /// A product with shared uvw weights and one scalar as its second input: e3nn's
    /// `Linear` times a scalar attribute, as its `FullyConnectedTensorProduct(x, 0e)`.
    fn is_linear(&self) -> bool {
        self.weight.is_some()
            && self.irreps_in2.dim() == 1
            && self.instructions.iter().all(|ins| ins.mode == Mode::Uvw && ins.has_weight)
    }

    /// `forward` of a linear product (`is_linear`) with x1 given as one [rows, mul·dim]
    /// block per entry of `irreps_in1`, laid out as `layout` says, each scaled by
    /// `block_scales` first: one matmul
    /// per output irrep, [rows, Σ inputs] × [Σ inputs, mul_out·dim_out], whose matrix
    /// (the path weights ⊗ the 3j symbol) ONNX Runtime folds to a constant at load. Per
    /// path, the transposes around a channel-mixing matmul would cost more than the
    /// matmul itself.
    pub(crate) fn forward_linear<O: Ops>(
        &self,
        ops: &mut O,
        blocks: &[O::Tensor],
        layout: BlockLayout,
        block_scales: &[f64],
        x2: &O::Tensor,
    ) -> O::Tensor {
        assert!(self.is_linear(), "forward_linear takes linear products only");
        assert_eq!(blocks.len(), self.irreps_in1.len(), "one block per input irrep");
        let shared = self.weight.as_ref().expect("checked by is_linear");
        let mut offset = 0;
        let mut parts: Vec<Vec<(O::Tensor, O::Tensor)>> = vec![Vec::new(); self.irreps_out.len()];
        for ins in &self.instructions {
            let numel: usize = ins.path_shape.iter().product();
            let range = offset..offset + numel;
            offset += numel;
            let (a, c) = (self.irreps_in1.0[ins.i_in1], self.irreps_out.0[ins.i_out]);
            if numel == 0 {
                continue;
            }
            let (u, w, d1, d3) = (a.mul, c.mul, a.ir.dim(), c.ir.dim());
            // K[(u, i), (w, k)] = √α · scale · W[u, w] · C[i, 0, k], rows (i, u) for
            // channels-last blocks.
            let scale = ins.path_weight * block_scales[ins.i_in1];
            let cg = wigner_3j(a.ir.l, self.irreps_in2.0[ins.i_in2].ir.l, c.ir.l);
            let cg: Vec<f64> = cg.iter().map(|value| value * scale).collect();
            let weight = ops.weight(&ins.path_shape, &shared[range]);
            let (cg_shape, weight_shape) = match layout {
                BlockLayout::MulFirst => ([1, d1, 1, d3], [u as i64, 1, w as i64, 1]),
                BlockLayout::ChannelsLast => ([d1, 1, 1, d3], [1, u as i64, w as i64, 1]),
            };
            let cg = ops.constant(&cg_shape, &cg);
            let weight = ops.reshape(&weight, &weight_shape);
            let matrix = ops.mul(&weight, &cg);
            let matrix = ops.reshape(&matrix, &[(u * d1) as i64, (w * d3) as i64]);
            parts[ins.i_out].push((blocks[ins.i_in1].clone(), matrix));
        }
        let sums = parts
            .into_iter()
            .map(|part| match part.len() {
                0 => None,
                1 => Some(ops.matmul(&part[0].0, &part[0].1)),
                _ => {
                    let (inputs, matrices): (Vec<_>, Vec<_>) = part.into_iter().unzip();
                    let input = ops.concat(&inputs, 1);
                    let matrix = ops.concat(&matrices, 0);
                    Some(ops.matmul(&input, &matrix))
                }
            })
            .collect();
        let out = super::concat_outputs(ops, sums, &self.irreps_out, x2, self.irreps_in2.dim());
        ops.mul(&out, x2)
    }

    /// Each weighted path's weights: a view of the shared ones, or a slice of the per-sample ones.
    fn path_weights<O: Ops>(&self, ops: &mut O, per_sample: Option<&O::Tensor>) -> Vec<Option<PathWeight<O::Tensor>>> {
        let mut offset = 0;
        let mut path_weights = Vec::with_capacity(self.instructions.len());
        for ins in &self.instructions {
            let numel: usize = if ins.has_weight { ins.path_shape.iter().product() } else { 0 };
            let range = offset..offset + numel;
            offset += numel;
            path_weights.push(ins.has_weight.then(|| match (&self.weight, per_sample) {
                (Some(shared), _) => PathWeight::Shared(ops.weight(&ins.path_shape, &shared[range])),
                (None, Some(per_sample)) => PathWeight::PerSample(ops.slice(per_sample, 1, range.start, range.end)),
                (None, None) => unreachable!("checked by forward"),
            }));
        }
        path_weights
    }

    /// `forward` with per-sample weights given path by path: one [rows, path numel]
    /// tensor per weighted instruction, in order. Slicing one wide weight tensor costs a
    /// full-size gradient buffer per slice in training; separate tensors do not.
    pub fn forward_per_path<O: Ops>(&self, ops: &mut O, x1: &O::Tensor, x2: &O::Tensor, weights: Vec<O::Tensor>) -> O::Tensor {
        assert!(self.weight.is_none(), "this tensor product has shared weights");
        let mut weights = weights.into_iter();
        let path_weights = self
            .instructions
            .iter()
            .map(|ins| ins.has_weight.then(|| PathWeight::PerSample(weights.next().expect("one weight tensor per weighted path"))))
            .collect();
        assert!(weights.next().is_none(), "one weight tensor per weighted path");
        self.forward_paths(ops, x1, x2, path_weights)
    }

    fn forward_paths<O: Ops>(&self, ops: &mut O, x1: &O::Tensor, x2: &O::Tensor, path_weights: Vec<Option<PathWeight<O::Tensor>>>) -> O::Tensor {
        let blocks = |ops: &mut O, x: &O::Tensor, irreps: &Irreps| -> Vec<O::Tensor> {
            irreps
                .slices()
                .iter()
                .zip(irreps.iter())
                .map(|(range, m)| {
                    let part = ops.slice(x, 1, range.start, range.end);
                    ops.reshape(&part, &[-1, m.mul as i64, m.ir.dim() as i64])
                })
                .collect()
        };
        let (x1s, x2s) = (blocks(ops, x1, &self.irreps_in1), blocks(ops, x2, &self.irreps_in2));
        let mut outer_cache: HashMap<(usize, usize, u32), O::Tensor> = HashMap::new();
        let mut sums: Vec<Option<O::Tensor>> = vec![None; self.irreps_out.len()];
        for (ins, weight) in self.instructions.iter().zip(path_weights) {
            if ins.path_shape.contains(&0) {
                continue;
            }
            let out = self.path(ops, ins, &x1s[ins.i_in1], &x2s[ins.i_in2], weight, &mut outer_cache);
            let out = ops.scale(&out, ins.path_weight);
            let width = self.irreps_out.0[ins.i_out].dim() as i64;
            let out = ops.reshape(&out, &[-1, width]);
            add_to(ops, &mut sums[ins.i_out], out);
        }
        super::concat_outputs(ops, sums, &self.irreps_out, x1, self.irreps_in1.dim())
    }

    /// `forward(gather(x1), x2)` for node features x1 [nodes, dim1] that `gather` copies
    /// onto edge rows (x2 [edges, dim2]). For shared uvw weights and an x2 of single
    /// copies (edge harmonics), each path's weights mix x1's channels per node before
    /// the copy, so the per-edge work scales with the output multiplicities instead of
    /// x1's: the same function, much less work where mul_out < mul_in1.
    pub fn forward_gathered<O: Ops>(
        &self,
        ops: &mut O,
        x1: &O::Tensor,
        x2: &O::Tensor,
        gather: &mut dyn FnMut(&mut O, &O::Tensor, usize) -> O::Tensor,
    ) -> O::Tensor {
        let mixed_width: usize = self
            .instructions
            .iter()
            .map(|ins| self.irreps_out.0[ins.i_out].mul * self.irreps_in1.0[ins.i_in1].ir.dim())
            .sum();
        let (dim1, dim2, dim_out) = (self.irreps_in1.dim(), self.irreps_in2.dim(), self.irreps_out.dim());
        if let Some(dense) = self.dense_bilinear(ops) {
            if dim2 * dim_out >= dim1 {
                let x1 = gather(ops, x1, dim1);
                return self.contract_dense(ops, &dense, &x1, x2);
            }
            // Contracting x1 with M on the nodes first leaves dim2·dim_out per node to copy.
            let by_x1 = self.dense_by_x1(ops, &dense);
            let y = ops.matmul(x1, &by_x1);
            let y = gather(ops, &y, dim2 * dim_out);
            return self.finish_by_x1(ops, &y, x2);
        }
        let applies = self.weight.is_some()
            && self.irreps_in2.iter().all(|m| m.mul == 1)
            && self.instructions.iter().all(|ins| ins.mode == Mode::Uvw && ins.has_weight)
            && mixed_width < self.irreps_in1.dim();
        let Some(shared) = self.weight.as_ref().filter(|_| applies) else {
            let x1 = gather(ops, x1, self.irreps_in1.dim());
            return self.forward(ops, &x1, x2, None);
        };
        let in1 = self.irreps_in1.slices();
        let in2 = self.irreps_in2.slices();
        // Each path's mixed channels are copied onto the edges on their own: slicing one
        // wide edge tensor would cost a full-size gradient buffer per path in training.
        let mut mixed = Vec::with_capacity(self.instructions.len());
        let mut offset = 0;
        for ins in &self.instructions {
            let (a, c) = (self.irreps_in1.0[ins.i_in1], self.irreps_out.0[ins.i_out]);
            let numel: usize = ins.path_shape.iter().product();
            let weight = ops.weight(&ins.path_shape, &shared[offset..offset + numel]);
            offset += numel;
            let weight = ops.reshape(&weight, &[a.mul as i64, c.mul as i64]);
            let block = ops.slice(x1, 1, in1[ins.i_in1].start, in1[ins.i_in1].end);
            let block = ops.reshape(&block, &[-1, a.mul as i64, a.ir.dim() as i64]);
            let block = ops.transpose(&block, &[0, 2, 1]);
            let block = ops.matmul(&block, &weight);
            let block = ops.transpose(&block, &[0, 2, 1]);
            let block = ops.reshape(&block, &[-1, (c.mul * a.ir.dim()) as i64]);
            mixed.push(gather(ops, &block, c.mul * a.ir.dim()));
        }

        // Z[e, i, k] = Σ_j C_ijk x2[e, j], shared by the paths with the same degrees.
        let mut contracted: HashMap<(usize, u32, u32), O::Tensor> = HashMap::new();
        let mut sums: Vec<Option<O::Tensor>> = vec![None; self.irreps_out.len()];
        for (ins, channels) in self.instructions.iter().zip(mixed) {
            let (a, b, c) = (self.irreps_in1.0[ins.i_in1], self.irreps_in2.0[ins.i_in2], self.irreps_out.0[ins.i_out]);
            let (d1, d2, d3) = (a.ir.dim(), b.ir.dim(), c.ir.dim());
            let channels = ops.reshape(&channels, &[-1, c.mul as i64, d1 as i64]);
            let z = contracted
                .entry((ins.i_in2, a.ir.l, c.ir.l))
                .or_insert_with(|| {
                    let c_jki = cg_columns_ki(a.ir.l, b.ir.l, c.ir.l);
                    let c_jki = ops.constant(&[d2, d3 * d1], &c_jki);
                    let harmonic = ops.slice(x2, 1, in2[ins.i_in2].start, in2[ins.i_in2].end);
                    ops.matmul(&harmonic, &c_jki)
                })
                .clone();
            let out = rowwise_matmul(ops, &channels, &z, c.mul as i64, d1 as i64, d3 as i64);
            let out = ops.scale(&out, ins.path_weight);
            let out = ops.reshape(&out, &[-1, c.dim() as i64]);
            add_to(ops, &mut sums[ins.i_out], out);
        }
        super::concat_outputs(ops, sums, &self.irreps_out, x2, self.irreps_in2.dim())
    }

    /// Σ over any set of rows of TP(x1, x2), given Σ x1 ⊗ x2 over those rows as
    /// [sets, dim1·dim2]: a bilinear map commutes with the sum, so a product summed over
    /// a node's incoming edges costs one dim1·dim2 × dim_out matmul per node instead of
    /// one per edge. `None` where the product has no dense form (see `dense_bilinear`).
    pub fn forward_summed<O: Ops>(&self, ops: &mut O, outer_sums: &O::Tensor) -> Option<O::Tensor> {
        let dense = self.summed_matrix(ops)?;
        Some(ops.matmul(outer_sums, &dense))
    }

    /// The dense form as the matrix [dim1·dim2, dim_out] that [`Self::forward_summed`]
    /// applies to outer products.
    pub fn summed_matrix<O: Ops>(&self, ops: &mut O) -> Option<O::Tensor> {
        let dense = self.dense_bilinear(ops)?;
        let (dim1, dim2, dim_out) = (self.irreps_in1.dim(), self.irreps_in2.dim(), self.irreps_out.dim());
        Some(ops.reshape(&dense, &[(dim1 * dim2) as i64, dim_out as i64]))
    }

    /// The dense form as the linear map of x1 alone, [dim1, dim_out·dim2]: x1 times it,
    /// finished by [`Self::finish_by_x1`] with x2, is the product.
    pub fn by_x1_matrix<O: Ops>(&self, ops: &mut O) -> Option<O::Tensor> {
        let dense = self.dense_bilinear(ops)?;
        Some(self.dense_by_x1(ops, &dense))
    }

    /// M [dim1, dim2, dim_out] with out[r, o] = Σ_ab x1[r, a] x2[r, b] M[a, b, o], for
    /// shared weights and products small enough (`DENSE_LIMIT`); `None` otherwise.
    fn dense_bilinear<O: Ops>(&self, ops: &mut O) -> Option<O::Tensor> {
        self.weight.as_ref()?;
        let (dim1, dim2, dim_out) = (self.irreps_in1.dim(), self.irreps_in2.dim(), self.irreps_out.dim());
        if dim1 * dim2 * dim_out > DENSE_LIMIT {
            return None;
        }
        // Each path's block [(u, i), (v, j), (w, k)] = √α coef[u, v, w] C[i, j, k]; blocks
        // of the same (in1, in2, out) irreps add up; the grid of blocks is concatenated.
        let mut blocks: HashMap<(usize, usize, usize), O::Tensor> = HashMap::new();
        let path_weights = self.path_weights(ops, None);
        for (ins, weight) in self.instructions.iter().zip(path_weights) {
            if ins.path_shape.contains(&0) {
                continue;
            }
            let (a, b, c) = (self.irreps_in1.0[ins.i_in1], self.irreps_in2.0[ins.i_in2], self.irreps_out.0[ins.i_out]);
            let (u, v, w) = (a.mul, b.mul, c.mul);
            let coefficients = Self::path_coefficients(ops, ins, weight, u, v, w);
            let (d1, d2, d3) = (a.ir.dim(), b.ir.dim(), c.ir.dim());
            let cg = wigner_3j(a.ir.l, b.ir.l, c.ir.l);
            let cg: Vec<f64> = cg.iter().map(|value| value * ins.path_weight).collect();
            let cg = ops.constant(&[1, d1, 1, d2, 1, d3], &cg);
            let coefficients = ops.reshape(&coefficients, &[u as i64, 1, v as i64, 1, w as i64, 1]);
            let block = ops.mul(&coefficients, &cg);
            let block = ops.reshape(&block, &[(u * d1) as i64, (v * d2) as i64, (w * d3) as i64]);
            let key = (ins.i_in1, ins.i_in2, ins.i_out);
            let block = match blocks.remove(&key) {
                Some(earlier) => ops.add(&earlier, &block),
                None => block,
            };
            blocks.insert(key, block);
        }
        let mut rows = Vec::with_capacity(self.irreps_in1.len());
        for (i1, a) in self.irreps_in1.iter().enumerate() {
            let mut columns = Vec::with_capacity(self.irreps_in2.len());
            for (i2, b) in self.irreps_in2.iter().enumerate() {
                let depth: Vec<O::Tensor> = self
                    .irreps_out
                    .iter()
                    .enumerate()
                    .map(|(io, c)| {
                        blocks.remove(&(i1, i2, io)).unwrap_or_else(|| {
                            let shape = [a.dim(), b.dim(), c.dim()];
                            ops.constant(&shape, &vec![0.0; shape.iter().product()])
                        })
                    })
                    .collect();
                columns.push(if depth.len() == 1 { depth.into_iter().next().expect("one") } else { ops.concat(&depth, 2) });
            }
            rows.push(if columns.len() == 1 { columns.into_iter().next().expect("one") } else { ops.concat(&columns, 1) });
        }
        let dense = if rows.len() == 1 { rows.into_iter().next().expect("one") } else { ops.concat(&rows, 0) };
        debug_assert!(blocks.is_empty());
        Some(dense)
    }

    /// coef[u, v, w] of one path: its weights spread over the connection mode's pattern
    /// (uvu: w = u; uvv: w = v; uuw: u = v; uuu: all equal), or the bare pattern.
    fn path_coefficients<O: Ops>(ops: &mut O, ins: &Instruction, weight: Option<PathWeight<O::Tensor>>, u: usize, v: usize, w: usize) -> O::Tensor {
        let weight = match weight {
            None => None,
            // Weights on every (u, v, w): no pattern constant, which the graph would not use.
            Some(PathWeight::Shared(weight)) if ins.mode == Mode::Uvw => return weight,
            Some(PathWeight::Shared(weight)) => Some(weight),
            Some(PathWeight::PerSample(_)) => unreachable!("the dense tensor is built from shared weights only"),
        };
        let pattern: Vec<f64> = (0..u)
            .flat_map(|i| (0..v).flat_map(move |j| (0..w).map(move |k| (i, j, k))))
            .map(|(i, j, k)| {
                let on = match ins.mode {
                    Mode::Uvw => true,
                    Mode::Uvu => k == i,
                    Mode::Uvv => k == j,
                    Mode::Uuw => i == j,
                    Mode::Uuu => i == j && j == k,
                };
                if on { 1.0 } else { 0.0 }
            })
            .collect();
        let pattern = ops.constant(&[u, v, w], &pattern);
        let Some(weight) = weight else { return pattern };
        let spread = match ins.mode {
            Mode::Uvw => unreachable!("returned above"),
            Mode::Uvu | Mode::Uvv => [u, v, 1],
            Mode::Uuw => [u, 1, w],
            Mode::Uuu => [u, 1, 1],
        };
        let weight = ops.reshape(&weight, &spread.map(|n| n as i64));
        ops.mul(&weight, &pattern)
    }

    /// out = Σ_ab x1[a] x2[b] M[a, b, :] row by row, in the order whose per-row
    /// intermediate is smallest: the outer product x1 ⊗ x2, x1·M or x2·M.
    fn contract_dense<O: Ops>(&self, ops: &mut O, dense: &O::Tensor, x1: &O::Tensor, x2: &O::Tensor) -> O::Tensor {
        let (dim1, dim2, dim_out) = (self.irreps_in1.dim(), self.irreps_in2.dim(), self.irreps_out.dim());
        let outer = dim1 * dim2;
        if outer <= dim2 * dim_out && outer <= dim1 * dim_out {
            let left = ops.reshape(x1, &[-1, dim1 as i64, 1]);
            let right = ops.reshape(x2, &[-1, 1, dim2 as i64]);
            let product = ops.mul(&left, &right);
            let product = ops.reshape(&product, &[-1, outer as i64]);
            let dense = ops.reshape(dense, &[outer as i64, dim_out as i64]);
            return ops.matmul(&product, &dense);
        }
        if dim2 * dim_out <= dim1 * dim_out {
            let by_x1 = self.dense_by_x1(ops, dense);
            let y = ops.matmul(x1, &by_x1);
            return self.finish_by_x1(ops, &y, x2);
        }
        // y[r, (o, a)] = Σ_b x2[r, b] M[a, b, o]; out[r, o] = Σ_a x1[r, a] y[r, (o, a)].
        let by_x2 = ops.transpose(dense, &[1, 2, 0]);
        let by_x2 = ops.reshape(&by_x2, &[dim2 as i64, (dim_out * dim1) as i64]);
        let y = ops.matmul(x2, &by_x2);
        let x1 = ops.reshape(x1, &[-1, 1, dim1 as i64]);
        let out = rowwise_matmul(ops, &x1, &y, 1, dim1 as i64, dim_out as i64);
        ops.reshape(&out, &[-1, dim_out as i64])
    }

    /// M as [dim1, (dim_out, dim2)]: x1 · this gives y[r, (o, b)] = Σ_a x1[r, a] M[a, b, o].
    fn dense_by_x1<O: Ops>(&self, ops: &mut O, dense: &O::Tensor) -> O::Tensor {
        let (dim1, dim2, dim_out) = (self.irreps_in1.dim(), self.irreps_in2.dim(), self.irreps_out.dim());
        let by_x1 = ops.transpose(dense, &[0, 2, 1]);
        ops.reshape(&by_x1, &[dim1 as i64, (dim_out * dim2) as i64])
    }

    /// out[r, o] = Σ_b x2[r, b] y[r, (o, b)].
    fn finish_by_x1<O: Ops>(&self, ops: &mut O, y: &O::Tensor, x2: &O::Tensor) -> O::Tensor {
        let (dim2, dim_out) = (self.irreps_in2.dim() as i64, self.irreps_out.dim() as i64);
        let x2 = ops.reshape(x2, &[-1, 1, dim2]);
        let out = rowwise_matmul(ops, &x2, y, 1, dim2, dim_out);
        ops.reshape(&out, &[-1, dim_out])
    }

    fn path<O: Ops>(
        &self,
        ops: &mut O,
        ins: &Instruction,
        x1: &O::Tensor,
        x2: &O::Tensor,
        weight: Option<PathWeight<O::Tensor>>,
        outer_cache: &mut HashMap<(usize, usize, u32), O::Tensor>,
    ) -> O::Tensor {
        let (a, b, c) = (self.irreps_in1.0[ins.i_in1], self.irreps_in2.0[ins.i_in2], self.irreps_out.0[ins.i_out]);
        let (u, v, w) = (a.mul as i64, b.mul as i64, c.mul as i64);
        let (d1, d2, d3) = (a.ir.dim(), b.ir.dim(), c.ir.dim());
        let cg = wigner_3j(a.ir.l, b.ir.l, c.ir.l);
        match ins.mode {
            Mode::Uvw | Mode::Uvu | Mode::Uvv => {
                // R[rows, u, v, k] = Σ_ij C_ijk x1[u, i] x2[v, j]
                let r = outer_cache
                    .entry((ins.i_in1, ins.i_in2, c.ir.l))
                    .or_insert_with(|| {
                        let c_jki = cg_columns_ki(a.ir.l, b.ir.l, c.ir.l);
                        let c_jki = ops.constant(&[d2, d3 * d1], &c_jki);
                        // y[v, k, i] = Σ_j C_ijk x2[v, j]
                        let y = ops.matmul(x2, &c_jki);
                        let r = rowwise_matmul(ops, x1, &y, u, d1 as i64, v * d3 as i64);
                        ops.reshape(&r, &[-1, u, v, d3 as i64])
                    })
                    .clone();
                match (ins.mode, weight) {
                    (Mode::Uvw, Some(PathWeight::Shared(wt))) => {
                        let r = ops.transpose(&r, &[0, 3, 1, 2]);
                        let r = ops.reshape(&r, &[-1, d3 as i64, u * v]);
                        let wt = ops.reshape(&wt, &[u * v, w]);
                        let out = ops.matmul(&r, &wt);
                        ops.transpose(&out, &[0, 2, 1])
                    }
                    (Mode::Uvw, Some(PathWeight::PerSample(wt))) => {
                        // out[w, k] = Σ_uv wt[uv, w] R[uv, k], per row: a batched matmul.
                        let wt = ops.reshape(&wt, &[-1, u * v, w]);
                        let wt = ops.transpose(&wt, &[0, 2, 1]);
                        let r = ops.reshape(&r, &[-1, u * v, d3 as i64]);
                        ops.matmul(&wt, &r)
                    }
                    (Mode::Uvu | Mode::Uvv, Some(wt)) => {
                        // out[u or v, k] = Σ_(v or u) wt[u, v] R[u, v, k], per row.
                        let wt = match wt {
                            PathWeight::Shared(wt) => ops.reshape(&wt, &[1, u, v, 1]),
                            PathWeight::PerSample(wt) => ops.reshape(&wt, &[-1, u, v, 1]),
                        };
                        let product = ops.mul(&wt, &r);
                        if ins.mode == Mode::Uvu {
                            sum_axis(ops, &product, 2, v, &[-1, u, d3 as i64])
                        } else {
                            sum_axis(ops, &product, 1, u, &[-1, v, d3 as i64])
                        }
                    }
                    (Mode::Uvu, None) => ops.reduce_sum(&r, 2, false),
                    (Mode::Uvv, None) => ops.reduce_sum(&r, 1, false),
                    (Mode::Uvw, None) => unreachable!("uvw paths always have weights (checked by e3nn and here)"),
                    _ => unreachable!("uv modes only"),
                }
            }
            Mode::Uuu | Mode::Uuw => {
                // D[rows, u, k] = Σ_ij C_ijk x1[u, i] x2[u, j]
                let left = ops.reshape(x1, &[-1, u, d1 as i64, 1]);
                let right = ops.reshape(x2, &[-1, u, 1, d2 as i64]);
                let outer = ops.mul(&left, &right);
                let outer = ops.reshape(&outer, &[-1, u, (d1 * d2) as i64]);
                let c_ij_k = ops.constant(&[d1 * d2, d3], &cg.iter().copied().collect::<Vec<_>>());
                let d = ops.matmul(&outer, &c_ij_k);
                match (ins.mode, weight) {
                    (Mode::Uuu, Some(PathWeight::Shared(wt))) => {
                        let wt = ops.reshape(&wt, &[u, 1]);
                        ops.mul(&d, &wt)
                    }
                    (Mode::Uuu, Some(PathWeight::PerSample(wt))) => {
                        let wt = ops.reshape(&wt, &[-1, u, 1]);
                        ops.mul(&d, &wt)
                    }
                    (Mode::Uuu, None) => d,
                    (Mode::Uuw, Some(PathWeight::Shared(wt))) => {
                        let d = ops.transpose(&d, &[0, 2, 1]);
                        let out = ops.matmul(&d, &wt);
                        ops.transpose(&out, &[0, 2, 1])
                    }
                    (Mode::Uuw, Some(PathWeight::PerSample(wt))) => {
                        // out[w, k] = Σ_u wt[u, w] D[u, k], per row.
                        let wt = ops.reshape(&wt, &[-1, u, w, 1]);
                        let d = ops.reshape(&d, &[-1, u, 1, d3 as i64]);
                        let product = ops.mul(&wt, &d);
                        sum_axis(ops, &product, 1, u, &[-1, w, d3 as i64])
                    }
                    (Mode::Uuw, None) => ops.reduce_sum(&d, 1, true),
                    _ => unreachable!("uu modes only"),
                }
            }
        }
    }
}

/// The 3j symbol C(l1, l2, l3) as a [d2, d3·d1] matrix: row j, column (k, i).
pub(crate) fn cg_columns_ki(l1: u32, l2: u32, l3: u32) -> Vec<f64> {
    let cg = wigner_3j(l1, l2, l3);
    let (d1, d2, d3) = (cg.shape()[0], cg.shape()[1], cg.shape()[2]);
    (0..d2).flat_map(|j| (0..d3).flat_map(move |k| (0..d1).map(move |i| (i, j, k)))).map(|(i, j, k)| cg[[i, j, k]]).collect()
}

/// How an irrep's block of mul·(2l+1) numbers is ordered: e3nn's (mul, 2l+1), or
/// (2l+1, mul) with the channels innermost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockLayout {
    MulFirst,
    ChannelsLast,
}

/// x [..., irreps.dim()] (rank `rank`) with each irrep's block (mul, 2l+1) turned to
/// (2l+1, mul).
fn channels_last<O: Ops>(ops: &mut O, x: &O::Tensor, irreps: &Irreps, rank: usize) -> O::Tensor {
    let last = rank - 1;
    let keep = vec![0i64; last];
    let mut swap: Vec<usize> = (0..rank + 1).collect();
    swap.swap(last, rank);
    let blocks: Vec<O::Tensor> = irreps
        .slices()
        .iter()
        .zip(irreps.iter())
        .map(|(range, m)| {
            let block = ops.slice(x, last, range.start, range.end);
            if m.mul == 1 || m.ir.dim() == 1 {
                return block;
            }
            let block = ops.reshape(&block, &[keep.clone(), vec![m.mul as i64, m.ir.dim() as i64]].concat());
            let block = ops.transpose(&block, &swap);
            ops.reshape(&block, &[keep.clone(), vec![m.dim() as i64]].concat())
        })
        .collect();
    if blocks.len() == 1 { blocks.into_iter().next().expect("one block") } else { ops.concat(&blocks, last) }
}

/// out[m, n] = Σ_k a[m, k] b[n, k] row by row, for a [rows, m, k] and b [rows, n·k]:
/// one batched matmul of a with b transposed, which runtimes fold into the matmul. (A
/// broadcast product summed over k, with k innermost, runs element by element in
/// ONNX Runtime: 4× slower for [4608, 8, 5] · [4608, 5, 5].)
fn rowwise_matmul<O: Ops>(ops: &mut O, a: &O::Tensor, b: &O::Tensor, m: i64, k: i64, n: i64) -> O::Tensor {
    let a = ops.reshape(a, &[-1, m, k]);
    let b = ops.reshape(b, &[-1, n, k]);
    let b = ops.transpose(&b, &[0, 2, 1]);
    ops.matmul(&a, &b)
}

/// Sums `x` over `axis` of the given size, giving `result_shape`; a size-1 axis is
/// dropped by a reshape, which runtimes do not compute.
fn sum_axis<O: Ops>(ops: &mut O, x: &O::Tensor, axis: usize, size: i64, result_shape: &[i64]) -> O::Tensor {
    if size == 1 { ops.reshape(x, result_shape) } else { ops.reduce_sum(x, axis, false) }
}

enum PathWeight<T> {
    Shared(T),
    PerSample(T),
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::*;
    use crate::nn::Eager;

    /// The dense bilinear tensor is the sum over paths, for every connection mode, with
    /// and without weights, and with two paths into the same block.
    #[test]
    fn dense_bilinear_equals_the_sum_over_paths() {
        let irreps = |s: &str| s.parse::<Irreps>().expect("valid");
        let instructions = [
            (0, 0, 0, Mode::Uvw, true),
            (1, 1, 0, Mode::Uvu, true),
            (0, 1, 1, Mode::Uvv, true),
            (1, 1, 2, Mode::Uuw, true),
            (1, 0, 1, Mode::Uuu, true),
            (1, 1, 0, Mode::Uuu, false),
            (0, 0, 0, Mode::Uvu, false),
        ];
        let mut tp = TensorProduct::new(irreps("2x0e+2x1o"), irreps("2x0e+2x1o"), irreps("2x0e+2x1o+2x1e"), &instructions, true)
            .expect("valid instructions");
        tp.set_weight((0..tp.weight_numel).map(|i| (i as f64 * 0.7).sin()).collect()).expect("sized");
        let x1 = ArrayD::from_shape_fn(IxDyn(&[5, 8]), |ix| ((ix[0] * 8 + ix[1]) as f64 * 0.37).cos());
        let x2 = ArrayD::from_shape_fn(IxDyn(&[5, 8]), |ix| ((ix[0] * 8 + ix[1]) as f64 * 0.53).sin());
        let dense = tp.forward(&mut Eager, &x1, &x2, None);
        let path_weights = tp.path_weights(&mut Eager, None);
        let per_path = tp.forward_paths(&mut Eager, &x1, &x2, path_weights);
        let scale = per_path.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.1, "the paths write something");
        let error = dense.iter().zip(per_path.iter()).fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(error < 1e-12 * scale, "dense vs per path: {error:e}");
    }

    #[test]
    fn a_product_summed_over_rows_equals_the_sum_of_its_rows() {
        let irreps = |s: &str| s.parse::<Irreps>().expect("valid");
        let mut tp = TensorProduct::fully_connected(irreps("2x0e+1x1o"), irreps("1x0e+1x1o+1x2e"), irreps("2x0e+2x1o+1x2e"), true);
        tp.set_weight((0..tp.weight_numel).map(|i| (i as f64 * 0.9).cos()).collect()).expect("sized");
        let (dim1, dim2) = (tp.irreps_in1.dim(), tp.irreps_in2.dim());
        let x1 = ArrayD::from_shape_fn(IxDyn(&[4, dim1]), |ix| ((ix[0] * dim1 + ix[1]) as f64 * 0.41).sin());
        let x2 = ArrayD::from_shape_fn(IxDyn(&[4, dim2]), |ix| ((ix[0] * dim2 + ix[1]) as f64 * 0.29).cos());
        let rows = tp.forward(&mut Eager, &x1, &x2, None);
        let expected = rows.sum_axis(ndarray::Axis(0));
        let outer = ArrayD::from_shape_fn(IxDyn(&[1, dim1 * dim2]), |ix| (0..4).map(|r| x1[[r, ix[1] / dim2]] * x2[[r, ix[1] % dim2]]).sum());
        let summed = tp.forward_summed(&mut Eager, &outer).expect("small enough for a dense form");
        let scale = expected.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.1, "the product writes something");
        let error = summed.iter().zip(expected.iter()).fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(error < 1e-12 * scale, "summed vs sum of rows: {error:e}");
    }

    fn max_abs(x: &ArrayD<f64>) -> f64 {
        x.iter().fold(0.0_f64, |m, v| m.max(v.abs()))
    }

    fn max_difference(a: &ArrayD<f64>, b: &ArrayD<f64>) -> f64 {
        assert_eq!(a.shape(), b.shape());
        a.iter().zip(b.iter()).fold(0.0_f64, |m, (x, y)| m.max((x - y).abs()))
    }

    /// A linear product too large for a dense form (`forward_linear`, one matmul per
    /// output) equals the sum over its paths, with per-block scales too; and its
    /// channels-last output is the same numbers with each block transposed.
    #[test]
    fn a_linear_product_per_output_equals_the_sum_over_paths() {
        let irreps = |s: &str| s.parse::<Irreps>().expect("valid");
        let (in1, out) = (irreps("48x0e+32x1o+16x1o+16x2e+4x0o"), irreps("64x0e+32x1o+16x2e+8x1e"));
        let mut tp = TensorProduct::fully_connected(in1.clone(), irreps("0e"), out.clone(), true);
        assert!(tp.irreps_in1.dim() * tp.irreps_out.dim() > DENSE_LIMIT && tp.is_linear(), "takes the per-output form");
        tp.set_weight((0..tp.weight_numel).map(|i| (i as f64 * 0.61).sin()).collect()).expect("sized");
        let x1 = ArrayD::from_shape_fn(IxDyn(&[3, in1.dim()]), |ix| ((ix[0] * 131 + ix[1]) as f64 * 0.37).cos());
        let x2 = ArrayD::from_shape_fn(IxDyn(&[3, 1]), |ix| 0.5 + ix[0] as f64);
        let per_path = {
            let path_weights = tp.path_weights(&mut Eager, None);
            tp.forward_paths(&mut Eager, &x1, &x2, path_weights)
        };
        assert!(max_abs(&per_path) > 0.1, "the paths write something");
        assert!(max_abs(&per_path.slice(ndarray::s![.., out.dim() - 24..]).into_dyn().to_owned()) == 0.0, "8x1e: no path");
        let per_output = tp.forward(&mut Eager, &x1, &x2, None);
        assert!(max_difference(&per_output, &per_path) < 1e-12 * max_abs(&per_path), "per output vs per path");

        let scales: Vec<f64> = (0..in1.len()).map(|i| 0.5 + i as f64).collect();
        let blocks: Vec<ArrayD<f64>> = in1.slices().iter().map(|r| x1.slice(ndarray::s![.., r.clone()]).into_dyn().to_owned()).collect();
        let scaled_x1 = ndarray::concatenate(
            ndarray::Axis(1),
            &blocks.iter().zip(&scales).map(|(b, s)| b * *s).collect::<Vec<_>>().iter().map(|b| b.view()).collect::<Vec<_>>(),
        )
        .expect("same rows");
        let expected = {
            let path_weights = tp.path_weights(&mut Eager, None);
            tp.forward_paths(&mut Eager, &scaled_x1, &x2, path_weights)
        };
        let scaled = tp.forward_linear(&mut Eager, &blocks, BlockLayout::MulFirst, &scales, &x2);
        assert!(max_difference(&scaled, &expected) < 1e-12 * max_abs(&expected), "block scales");
        // The same blocks with each channel's components transposed to (2l+1, mul).
        let blocks_channels_last: Vec<ArrayD<f64>> = blocks
            .iter()
            .zip(in1.iter())
            .map(|(b, m)| {
                let rows = b.shape()[0];
                let b = b.to_shape((rows, m.mul, m.ir.dim())).expect("mul·dim columns");
                b.permuted_axes([0, 2, 1]).as_standard_layout().to_shape((rows, m.dim())).expect("same size").into_owned().into_dyn()
            })
            .collect();
        let from_channels_last = tp.forward_linear(&mut Eager, &blocks_channels_last, BlockLayout::ChannelsLast, &scales, &x2);
        assert!(max_difference(&from_channels_last, &expected) < 1e-12 * max_abs(&expected), "channels-last blocks");

        let channels_last = tp.forward_channels_last(&mut Eager, &x1, &x2);
        for (range, m) in out.slices().iter().zip(out.iter()) {
            for (u, k) in (0..m.mul).flat_map(|u| (0..m.ir.dim()).map(move |k| (u, k))) {
                let (e3nn, last) = (range.start + u * m.ir.dim() + k, range.start + k * m.mul + u);
                for row in 0..3 {
                    assert_eq!(channels_last[[row, last]], per_output[[row, e3nn]], "{}x{} channel {u} component {k}", m.mul, m.ir);
                }
            }
        }
    }

    /// A dense product's channels-last output is its output with each block transposed.
    #[test]
    fn a_dense_products_channels_last_output_transposes_each_block() {
        let irreps = |s: &str| s.parse::<Irreps>().expect("valid");
        let out = irreps("3x0e+2x1o+2x2e");
        let mut tp = TensorProduct::fully_connected(irreps("2x0e+2x1o"), irreps("1x0e+1x1o"), out.clone(), true);
        tp.set_weight((0..tp.weight_numel).map(|i| (i as f64 * 0.83).cos()).collect()).expect("sized");
        let x1 = ArrayD::from_shape_fn(IxDyn(&[4, 8]), |ix| ((ix[0] * 8 + ix[1]) as f64 * 0.43).sin());
        let x2 = ArrayD::from_shape_fn(IxDyn(&[4, 4]), |ix| ((ix[0] * 4 + ix[1]) as f64 * 0.71).cos());
        let plain = tp.forward(&mut Eager, &x1, &x2, None);
        let channels_last = tp.forward_channels_last(&mut Eager, &x1, &x2);
        assert!(max_abs(&plain) > 0.1, "the product writes something");
        for (range, m) in out.slices().iter().zip(out.iter()) {
            for (u, k) in (0..m.mul).flat_map(|u| (0..m.ir.dim()).map(move |k| (u, k))) {
                let (e3nn, last) = (range.start + u * m.ir.dim() + k, range.start + k * m.mul + u);
                for row in 0..4 {
                    assert!((channels_last[[row, last]] - plain[[row, e3nn]]).abs() < 1e-12, "{}x{} channel {u} component {k}", m.mul, m.ir);
                }
            }
        }
    }
}
