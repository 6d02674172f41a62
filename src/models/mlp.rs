//! The study's MLP baseline: the 36 coordinates through three linear layers
//! 36 → 64 → 64 → 36, with no activation in between (as in the study: 8,868 parameters);
//! with a history of K frames, the 36·K coordinates of the window (oldest first).

use super::{ModelInputs, OpsModel};
use crate::{
    data::{DIMS, FRAME_LEN, PARTICLES},
    nn::{Dense, Ops},
};

pub const HIDDEN: usize = 64;

#[derive(Debug, Clone)]
pub struct Mlp {
    history_frames: usize,
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
        Self::with_history(1)
    }

    /// The MLP on the flattened window of `history_frames` frames.
    pub fn with_history(history_frames: usize) -> Self {
        let history_frames = history_frames.max(1);
        Self {
            history_frames,
            input: Dense::new(FRAME_LEN * history_frames, HIDDEN),
            hidden: Dense::new(HIDDEN, HIDDEN),
            output: Dense::new(HIDDEN, FRAME_LEN),
        }
    }

    fn layers_mut(&mut self) -> [&mut Dense; 3] {
        [&mut self.input, &mut self.hidden, &mut self.output]
    }
}

impl OpsModel for Mlp {
    fn forward<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> O::Tensor {
        let positions = ops.reshape(inputs.positions, &[-1, FRAME_LEN as i64]);
        let flat = match inputs.previous {
            Some(previous) => {
                let previous = ops.reshape(previous, &[-1, (FRAME_LEN * (self.history_frames - 1)) as i64]);
                ops.concat(&[previous, positions], 1)
            }
            None => positions,
        };
        let h = self.input.forward(ops, &flat);
        let h = self.hidden.forward(ops, &h);
        let out = self.output.forward(ops, &h);
        ops.reshape(&out, &[-1, PARTICLES as i64, DIMS as i64])
    }

    fn history_frames(&self) -> usize {
        self.history_frames
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
