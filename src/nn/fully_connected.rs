//! e3nn's `FullyConnectedNet`: dense layers without biases, weights scaled by
//! 1/√(fan_in) and activations normalised to unit second moment, so the output
//! has unit variance at initialisation.

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
        let layers = self.hs.len() - 1;
        let mut x = x.clone();
        for (i, weight) in self.weights.iter().enumerate() {
            let (h_in, h_out) = (self.hs[i], self.hs[i + 1]);
            let weight = ops.weight(&[h_in, h_out], weight);
            let weight = ops.scale(&weight, 1.0 / (h_in as f64).sqrt());
            x = ops.matmul(&x, &weight);
            if i + 1 < layers {
                x = apply_activation(ops, &x, self.activation, true);
            }
        }
        x
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
