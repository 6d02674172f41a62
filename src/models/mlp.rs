//! The study's MLP baseline: the 36 coordinates through three linear layers
//! 36 → 64 → 64 → 36, with no activation in between (as in the study: 8,868 parameters).

use burn::{
    module::Module,
    tensor::{Device, Tensor},
};

use super::{DynamicsModel, layers::Dense};
use crate::{
    data::{DIMS, FRAME_LEN, PARTICLES},
    onnx::GraphBuilder,
};

pub const HIDDEN: usize = 64;

#[derive(Module, Debug)]
pub struct Mlp {
    input: Dense,
    hidden: Dense,
    output: Dense,
}

impl Mlp {
    pub fn new(device: &Device) -> Self {
        Self {
            input: Dense::new(FRAME_LEN, HIDDEN, device),
            hidden: Dense::new(HIDDEN, HIDDEN, device),
            output: Dense::new(HIDDEN, FRAME_LEN, device),
        }
    }
}

impl DynamicsModel for Mlp {
    fn forward(&self, positions: Tensor<3>) -> Tensor<3> {
        let [batch, _, _] = positions.dims();
        let flat = positions.reshape([batch, FRAME_LEN]);
        let out = self.output.forward(self.hidden.forward(self.input.forward(flat)));
        out.reshape([batch, PARTICLES, DIMS])
    }

    fn emit_onnx(&self, graph: &mut GraphBuilder, positions: &str) -> String {
        let flat = graph.reshape(positions, &[-1, FRAME_LEN as i64]);
        let h = self.input.emit_onnx(graph, &flat, "input");
        let h = self.hidden.emit_onnx(graph, &h, "hidden");
        let out = self.output.emit_onnx(graph, &h, "output");
        graph.reshape(&out, &[-1, PARTICLES as i64, DIMS as i64])
    }
}
