//! Tensor products computed path by path: per-sample weights, and products too large
//! for a dense form.

use std::collections::HashMap;

use super::{
    Instruction, Mode, TensorProduct,
    layout::{cg_columns_ki, rowwise_matmul, sum_axis},
};
use crate::{
    e3::{Irreps, wigner_3j},
    nn::{add_to, concat_outputs, ops::Ops},
};

/// A path's weights: shared by every row, or one set per row.
pub(super) enum PathWeight<T> {
    Shared(T),
    PerSample(T),
}

/// Copies node rows onto edge rows: (ops, node features, width) → edge features.
pub type Gather<'a, O> = dyn FnMut(&mut O, &<O as Ops>::Tensor, usize) -> <O as Ops>::Tensor + 'a;

impl TensorProduct {
    /// Each weighted path's weights: a view of the shared ones, or a slice of the per-sample ones.
    pub(super) fn path_weights<O: Ops>(&self, ops: &mut O, per_sample: Option<&O::Tensor>) -> Vec<Option<PathWeight<O::Tensor>>> {
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

    pub(super) fn forward_paths<O: Ops>(&self, ops: &mut O, x1: &O::Tensor, x2: &O::Tensor, path_weights: Vec<Option<PathWeight<O::Tensor>>>) -> O::Tensor {
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
        concat_outputs(ops, sums, &self.irreps_out, x1, self.irreps_in1.dim())
    }

    /// `forward(gather(x1), x2)` for node features x1 [nodes, dim1] that `gather` copies
    /// onto edge rows (x2 [edges, dim2]). For shared uvw weights and an x2 of single
    /// copies (edge harmonics), each path's weights mix x1's channels per node before
    /// the copy, so the per-edge work scales with the output multiplicities instead of
    /// x1's: the same function, much less work where mul_out < mul_in1.
    pub fn forward_gathered<O: Ops>(&self, ops: &mut O, x1: &O::Tensor, x2: &O::Tensor, gather: &mut Gather<O>) -> O::Tensor {
        let mixed_width: usize = self.instructions.iter().map(|ins| self.irreps_out.0[ins.i_out].mul * self.irreps_in1.0[ins.i_in1].ir.dim()).sum();
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
        concat_outputs(ops, sums, &self.irreps_out, x2, self.irreps_in2.dim())
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
