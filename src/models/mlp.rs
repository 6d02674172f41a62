//! The study's MLP baseline: the 36 coordinates through three linear layers
//! 36 → 64 → 64 → 36, with no activation in between (as in the study: 8,868 parameters).

use super::{ModelInputs, OpsModel};
use crate::{
    data::{DIMS, FRAME_LEN, PARTICLES},
    nn::{Dense, Ops},
};

pub const HIDDEN: usize = 64;

#[derive(Debug, Clone)]
pub struct Mlp {
    input: Dense,
    hidden: Dense,
    output: Dense,
}

impl Default for Mlp {
    fn default() -> Self {
        Self::new()
    }
}

impl Mlp {
    pub fn new() -> Self {
        Self { input: Dense::new(FRAME_LEN, HIDDEN), hidden: Dense::new(HIDDEN, HIDDEN), output: Dense::new(HIDDEN, FRAME_LEN) }
    }

    fn layers_mut(&mut self) -> [&mut Dense; 3] {
        [&mut self.input, &mut self.hidden, &mut self.output]
    }
}

impl OpsModel for Mlp {
    fn forward<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> O::Tensor {
        let positions = inputs.positions;
        let flat = ops.reshape(positions, &[-1, FRAME_LEN as i64]);
        let h = self.input.forward(ops, &flat);
        let h = self.hidden.forward(ops, &h);
        let out = self.output.forward(ops, &h);
        ops.reshape(&out, &[-1, PARTICLES as i64, DIMS as i64])
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        self.layers_mut().into_iter().flat_map(|layer| [&mut layer.weight, &mut layer.bias]).collect()
    }

    fn num_params(&self) -> usize {
        [&self.input, &self.hidden, &self.output].iter().map(|layer| layer.weight.len() + layer.bias.len()).sum()
    }

    /// PyTorch's `nn.Linear` initialisation, as the study's MLP starts.
    fn init_weights(&mut self, rng: &mut impl rand::Rng) {
        self.layers_mut().into_iter().for_each(|layer| layer.init(rng));
    }
}
