//! e3nn's `TensorProduct`: a sum over paths (l1 ⊗ l2 → l3) of small Clebsch–Gordan
//! blocks, each contracted with its own weights, in four parts:
//! `instructions` (the paths and their normalisation), `paths` (path by path, a
//! few matmuls on [rows, mul, 2l+1] blocks each), `dense` (small products with shared
//! weights folded into one dense bilinear tensor M [dim1, dim2, dim_out], which ONNX
//! Runtime constant-folds, so the per-row work is one contraction instead of dozens of
//! tiny ops per path) and `layout` (block orders and row-wise products).
//!
//! Weights are laid out exactly as in e3nn (instruction order, each path's
//! `path_shape` row-major), with e3nn 0.6's path normalisation for
//! irrep_normalization = "component" and path_normalization = "element".

mod dense;
mod instructions;
mod layout;
mod paths;

pub use instructions::{Instruction, Mode};
pub(crate) use layout::{BlockLayout, cg_columns_ki};

use super::ops::Ops;
use crate::e3::Irreps;
use layout::channels_last;

#[derive(Debug, Clone)]
pub struct TensorProduct {
    pub(crate) irreps_in1: Irreps,
    pub(crate) irreps_in2: Irreps,
    pub(crate) irreps_out: Irreps,
    pub(crate) instructions: Vec<Instruction>,
    pub(crate) weight_numel: usize,
    /// Shared weights (e3nn's internal weights), flat; `None` when every sample brings its own.
    pub(crate) weight: Option<Vec<f64>>,
}

impl TensorProduct {
    /// x1 [rows, dim1] ⊗ x2 [rows, dim2] → [rows, dim_out]; `weights` [rows, weight_numel]
    /// when the weights are per sample.
    pub fn forward<O: Ops>(&self, ops: &mut O, x1: &O::Tensor, x2: &O::Tensor, weights: Option<&O::Tensor>) -> O::Tensor {
        assert!(self.weight.is_some() != weights.is_some(), "weights must be either shared or given per sample");
        if let Some(dense) = self.dense_bilinear(ops) {
            return self.contract_dense(ops, &dense, x1, x2);
        }
        if self.is_linear() {
            let blocks: Vec<O::Tensor> = self.irreps_in1.slices().iter().map(|range| ops.slice(x1, 1, range.start, range.end)).collect();
            return self.forward_linear(ops, &blocks, BlockLayout::MulFirst, &vec![1.0; blocks.len()], x2);
        }
        let path_weights = self.path_weights(ops, weights);
        self.forward_paths(ops, x1, x2, path_weights)
    }

    /// `forward` for shared weights, with each output irrep's block laid out
    /// (2l+1, mul) instead of e3nn's (mul, 2l+1): what a consumer contracting over
    /// 2l+1 per channel reads without a transpose. A dense product permutes the columns
    /// of its matrix (a constant once exported) rather than its output.
    pub(crate) fn forward_channels_last<O: Ops>(&self, ops: &mut O, x1: &O::Tensor, x2: &O::Tensor) -> O::Tensor {
        if let Some(dense) = self.dense_bilinear(ops) {
            let dense = channels_last(ops, &dense, &self.irreps_out, 3);
            return self.contract_dense(ops, &dense, x1, x2);
        }
        let out = self.forward(ops, x1, x2, None);
        channels_last(ops, &out, &self.irreps_out, 2)
    }

    pub fn irreps_in1(&self) -> &Irreps {
        &self.irreps_in1
    }

    pub fn irreps_in2(&self) -> &Irreps {
        &self.irreps_in2
    }

    pub fn irreps_out(&self) -> &Irreps {
        &self.irreps_out
    }

    pub fn instructions(&self) -> &[Instruction] {
        &self.instructions
    }

    /// Weights the product takes: shared, or per sample.
    pub fn weight_numel(&self) -> usize {
        self.weight_numel
    }

    /// The shared weights (e3nn layout); `None` when every sample brings its own.
    pub fn weight(&self) -> Option<&[f64]> {
        self.weight.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::dense::DENSE_LIMIT;
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
        let mut tp = TensorProduct::new(irreps("2x0e+2x1o"), irreps("2x0e+2x1o"), irreps("2x0e+2x1o+2x1e"), &instructions, true).expect("valid instructions");
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
