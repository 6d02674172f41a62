//! `torch.nn.Linear`, for the study's non-equivariant baselines (the MLP and the GNN's head).

use rand::Rng;
use rand_distr::{Distribution, Uniform};

use super::ops::Ops;

/// A `torch.nn.Linear` layer: x W + b.
#[derive(Debug, Clone)]
pub struct Dense {
    pub d_in: usize,
    pub d_out: usize,
    /// [in, out]
    pub weight: Vec<f64>,
    pub bias: Vec<f64>,
}

impl Dense {
    pub fn new(d_in: usize, d_out: usize) -> Self {
        Self { d_in, d_out, weight: vec![0.0; d_in * d_out], bias: vec![0.0; d_out] }
    }

    /// torch's default: U(±1/√fan_in) for weight and bias.
    pub fn init(&mut self, rng: &mut impl Rng) {
        let bound = 1.0 / (self.d_in as f64).sqrt();
        let uniform = Uniform::new_inclusive(-bound, bound).expect("finite bound");
        self.weight.iter_mut().chain(self.bias.iter_mut()).for_each(|w| *w = uniform.sample(rng));
    }

    pub fn forward<O: Ops>(&self, ops: &mut O, x: &O::Tensor) -> O::Tensor {
        let weight = ops.weight(&[self.d_in, self.d_out], &self.weight);
        let bias = ops.weight(&[self.d_out], &self.bias);
        let y = ops.matmul(x, &weight);
        ops.add(&y, &bias)
    }
}
