//! e3nn's `FullyConnectedNet`: dense layers without biases, weights scaled by
//! 1/√(fan_in) and activations normalised to unit second moment, so the output
//! has unit variance at initialisation.

use std::ops::Range;

use super::ops::{Ops, Unary};
use crate::e3::radial::Activation;

#[derive(Debug, Clone)]
pub struct FullyConnectedNet {
    /// Widths: input, hidden…, output.
    pub hs: Vec<usize>,
    pub activation: Activation,
    /// One [h_in, h_out] matrix per layer, row-major.
    pub weights: Vec<Vec<f64>>,
}

impl FullyConnectedNet {
    pub fn new(hs: Vec<usize>, activation: Activation) -> Self {
        let weights = hs.windows(2).map(|w| vec![0.0; w[0] * w[1]]).collect();
        Self { hs, activation, weights }
    }

    pub fn num_params(&self) -> usize {
        self.weights.iter().map(Vec::len).sum()
    }

    /// x [rows, hs[0]] → [rows, hs.last()].
    pub fn forward<O: Ops>(&self, ops: &mut O, x: &O::Tensor) -> O::Tensor {
        let hidden = self.hidden(ops, x);
        let weight = self.layer_weight(ops, self.weights.len() - 1);
        ops.matmul(&hidden, &weight)
    }

    /// `forward`'s output columns in groups, each the listed column ranges side by
    /// side, the last layer run once per group. In training, slicing the whole output
    /// would cost a full-size gradient buffer per slice; slicing the last weight
    /// matrix costs one of its size.
    pub fn forward_column_groups<O: Ops>(&self, ops: &mut O, x: &O::Tensor, groups: &[Vec<Range<usize>>]) -> Vec<O::Tensor> {
        let hidden = self.hidden(ops, x);
        let weight = self.layer_weight(ops, self.weights.len() - 1);
        groups
            .iter()
            .map(|ranges| {
                let columns: Vec<O::Tensor> = ranges.iter().map(|range| ops.slice(&weight, 1, range.start, range.end)).collect();
                let columns = if columns.len() == 1 { columns[0].clone() } else { ops.concat(&columns, 1) };
                ops.matmul(&hidden, &columns)
            })
            .collect()
    }

    /// The activations that the last layer takes.
    fn hidden<O: Ops>(&self, ops: &mut O, x: &O::Tensor) -> O::Tensor {
        let mut x = x.clone();
        for layer in 0..self.weights.len() - 1 {
            let weight = self.layer_weight(ops, layer);
            x = ops.matmul(&x, &weight);
            x = apply_activation(ops, &x, self.activation, true);
        }
        x
    }

    /// Layer `layer`'s weights [h_in, h_out], scaled by 1/√h_in.
    fn layer_weight<O: Ops>(&self, ops: &mut O, layer: usize) -> O::Tensor {
        let h_in = self.hs[layer];
        let weight = ops.weight(&[h_in, self.hs[layer + 1]], &self.weights[layer]);
        ops.scale(&weight, 1.0 / (h_in as f64).sqrt())
    }
}

/// act(x), times e3nn's second-moment constant when `normalized`.
pub fn apply_activation<O: Ops>(ops: &mut O, x: &O::Tensor, activation: Activation, normalized: bool) -> O::Tensor {
    let y = match activation {
        Activation::Silu => {
            let s = ops.unary(x, Unary::Sigmoid);
            ops.mul(x, &s)
        }
        Activation::Tanh => ops.unary(x, Unary::Tanh),
        Activation::Sigmoid => ops.unary(x, Unary::Sigmoid),
        Activation::Gelu => {
            let scaled = ops.scale(x, std::f64::consts::FRAC_1_SQRT_2);
            let erf = ops.unary(&scaled, Unary::Erf);
            let one_plus = ops.add_scalar(&erf, 1.0);
            let half_x = ops.scale(x, 0.5);
            ops.mul(&half_x, &one_plus)
        }
        Activation::Relu => ops.unary(x, Unary::Relu),
        Activation::Abs => ops.unary(x, Unary::Abs),
    };
    if normalized { ops.scale(&y, activation.second_moment_constant()) } else { y }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn, s};

    use super::*;
    use crate::nn::Eager;

    #[test]
    fn column_groups_equal_those_columns_of_the_whole_output() {
        let mut net = FullyConnectedNet::new(vec![3, 5, 7], Activation::Silu);
        for (layer, weights) in net.weights.iter_mut().enumerate() {
            weights.iter_mut().enumerate().for_each(|(i, w)| *w = ((i + 10 * layer) as f64 * 0.77).sin());
        }
        let x = ArrayD::from_shape_fn(IxDyn(&[4, 3]), |ix| ((ix[0] * 3 + ix[1]) as f64 * 0.31).cos());
        let whole = net.forward(&mut Eager, &x);
        let groups = [vec![5..7, 0..2], std::iter::once(2..5).collect()];
        let parts = net.forward_column_groups(&mut Eager, &x, &groups);
        for (part, ranges) in parts.iter().zip(&groups) {
            let columns: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(part.shape(), &[4, columns.len()]);
            for (c, &column) in columns.iter().enumerate() {
                let (got, expected) = (part.slice(s![.., c]), whole.slice(s![.., column]));
                assert!(got.iter().zip(expected.iter()).all(|(a, b)| (a - b).abs() < 1e-14), "column {column}");
            }
        }
    }
}
