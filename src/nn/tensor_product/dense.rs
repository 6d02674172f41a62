//! Products with shared weights folded into dense matrices: the bilinear tensor M of a
//! small product, and the per-output matrices of a linear one (e3nn's `Linear`).

use std::collections::HashMap;

use super::{
    Instruction, Mode, TensorProduct,
    layout::{BlockLayout, rowwise_matmul},
    paths::PathWeight,
};
use crate::{e3::wigner_3j, nn::ops::Ops};

/// Largest dim1·dim2·dim_out folded into one dense bilinear tensor: past this the
/// dense contraction's wasted zeros (Clebsch–Gordan sparsity) outweigh the per-path
/// ops it saves.
pub(super) const DENSE_LIMIT: usize = 1 << 16;

impl TensorProduct {
    /// A product with shared uvw weights and one scalar as its second input: e3nn's
    /// `Linear` times a scalar attribute, as its `FullyConnectedTensorProduct(x, 0e)`.
    pub(super) fn is_linear(&self) -> bool {
        self.weight.is_some() && self.irreps_in2.dim() == 1 && self.instructions.iter().all(|ins| ins.mode == Mode::Uvw && ins.has_weight)
    }

    /// `forward` of a linear product (`is_linear`) with x1 given as one [rows, mul·dim]
    /// block per entry of `irreps_in1`, laid out as `layout` says, each scaled by
    /// `block_scales` first: one matmul
    /// per output irrep, [rows, Σ inputs] × [Σ inputs, mul_out·dim_out], whose matrix
    /// (the path weights ⊗ the 3j symbol) ONNX Runtime folds to a constant at load. Per
    /// path, the transposes around a channel-mixing matmul would cost more than the
    /// matmul itself.
    pub(crate) fn forward_linear<O: Ops>(&self, ops: &mut O, blocks: &[O::Tensor], layout: BlockLayout, block_scales: &[f64], x2: &O::Tensor) -> O::Tensor {
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
        let out = crate::nn::concat_outputs(ops, sums, &self.irreps_out, x2, self.irreps_in2.dim());
        ops.mul(&out, x2)
    }

    /// Σ over any set of rows of TP(x1, x2), given Σ x1 ⊗ x2 over those rows as
    /// [sets, dim1·dim2]: a bilinear map commutes with the sum, so a product summed over
    /// a node's incoming edges costs one dim1·dim2 × dim_out matmul per node instead of
    /// one per edge. `None` where the product has no dense form (see `dense_bilinear`).
    /// (E3 small folds this matrix into its own; its tests check the fold against this.)
    #[cfg(test)]
    pub(crate) fn forward_summed<O: Ops>(&self, ops: &mut O, outer_sums: &O::Tensor) -> Option<O::Tensor> {
        let dense = self.summed_matrix(ops)?;
        Some(ops.matmul(outer_sums, &dense))
    }

    /// The dense form as the matrix [dim1·dim2, dim_out] that [`Self::forward_summed`]
    /// applies to outer products.
    pub(crate) fn summed_matrix<O: Ops>(&self, ops: &mut O) -> Option<O::Tensor> {
        let dense = self.dense_bilinear(ops)?;
        let (dim1, dim2, dim_out) = (self.irreps_in1.dim(), self.irreps_in2.dim(), self.irreps_out.dim());
        Some(ops.reshape(&dense, &[(dim1 * dim2) as i64, dim_out as i64]))
    }

    /// The dense form as the linear map of x1 alone, [dim1, dim_out·dim2]: x1 times it,
    /// finished by [`Self::finish_by_x1`] with x2, is the product.
    pub(crate) fn by_x1_matrix<O: Ops>(&self, ops: &mut O) -> Option<O::Tensor> {
        let dense = self.dense_bilinear(ops)?;
        Some(self.dense_by_x1(ops, &dense))
    }

    /// M [dim1, dim2, dim_out] with out[r, o] = Σ_ab x1[r, a] x2[r, b] M[a, b, o], for
    /// shared weights and products small enough (`DENSE_LIMIT`); `None` otherwise.
    pub(super) fn dense_bilinear<O: Ops>(&self, ops: &mut O) -> Option<O::Tensor> {
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
    pub(super) fn contract_dense<O: Ops>(&self, ops: &mut O, dense: &O::Tensor, x1: &O::Tensor, x2: &O::Tensor) -> O::Tensor {
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
    pub(super) fn dense_by_x1<O: Ops>(&self, ops: &mut O, dense: &O::Tensor) -> O::Tensor {
        let (dim1, dim2, dim_out) = (self.irreps_in1.dim(), self.irreps_in2.dim(), self.irreps_out.dim());
        let by_x1 = ops.transpose(dense, &[0, 2, 1]);
        ops.reshape(&by_x1, &[dim1 as i64, (dim_out * dim2) as i64])
    }

    /// out[r, o] = Σ_b x2[r, b] y[r, (o, b)].
    pub(super) fn finish_by_x1<O: Ops>(&self, ops: &mut O, y: &O::Tensor, x2: &O::Tensor) -> O::Tensor {
        let (dim2, dim_out) = (self.irreps_in2.dim() as i64, self.irreps_out.dim() as i64);
        let x2 = ops.reshape(x2, &[-1, 1, dim2]);
        let out = rowwise_matmul(ops, &x2, y, 1, dim2, dim_out);
        ops.reshape(&out, &[-1, dim_out])
    }
}
