//! e3nn's `o3.Linear`: mixes the copies of each irrep (never different irreps),
//! with weights normalised by 1/√(fan_in) per output.

use super::{add_to, ops::Ops};
use crate::e3::Irreps;

#[derive(Debug, Clone)]
pub struct Linear {
    pub irreps_in: Irreps,
    pub irreps_out: Irreps,
    /// (i_in, i_out) pairs with equal irreps, in e3nn's order.
    pub paths: Vec<(usize, usize)>,
    /// Per path a [mul_in, mul_out] matrix, concatenated.
    pub weight: Vec<f64>,
}

impl Linear {
    pub fn new(irreps_in: Irreps, irreps_out: Irreps) -> Self {
        let mut paths = Vec::new();
        for (i, a) in irreps_in.iter().enumerate() {
            for (o, b) in irreps_out.iter().enumerate() {
                if a.ir == b.ir {
                    paths.push((i, o));
                }
            }
        }
        let numel = paths.iter().map(|&(i, o)| irreps_in.0[i].mul * irreps_out.0[o].mul).sum();
        Self { irreps_in, irreps_out, paths, weight: vec![0.0; numel] }
    }

    pub fn weight_numel(&self) -> usize {
        self.weight.len()
    }

    /// x [rows, dim_in] → [rows, dim_out].
    pub fn forward<O: Ops>(&self, ops: &mut O, x: &O::Tensor) -> O::Tensor {
        let slices = self.irreps_in.slices();
        let mut sums: Vec<Option<O::Tensor>> = vec![None; self.irreps_out.len()];
        let mut offset = 0;
        for &(i, o) in &self.paths {
            let (a, b) = (self.irreps_in.0[i], self.irreps_out.0[o]);
            let fan_in: usize = self.paths.iter().filter(|p| p.1 == o).map(|p| self.irreps_in.0[p.0].mul).sum();
            let numel = a.mul * b.mul;
            let weight = ops.weight(&[a.mul, b.mul], &self.weight[offset..offset + numel]);
            let weight = ops.scale(&weight, 1.0 / (fan_in as f64).sqrt());
            offset += numel;
            let d = a.ir.dim() as i64;
            let block = ops.slice(x, 1, slices[i].start, slices[i].end);
            let block = ops.reshape(&block, &[-1, a.mul as i64, d]);
            let block = ops.transpose(&block, &[0, 2, 1]);
            let out = ops.matmul(&block, &weight);
            let out = ops.transpose(&out, &[0, 2, 1]);
            let out = ops.reshape(&out, &[-1, b.dim() as i64]);
            add_to(ops, &mut sums[o], out);
        }
        super::concat_outputs(ops, sums, &self.irreps_out, x, self.irreps_in.dim())
    }
}
