//! Layers defined once for both worlds: trained as Burn modules, exported as ONNX nodes.

use burn::{
    module::Module,
    nn::{Linear, LinearConfig},
    tensor::{Device, Tensor},
};

use crate::onnx::GraphBuilder;

/// y = x·W + b over the last axis (PyTorch's `nn.Linear`, same initialisation).
#[derive(Module, Debug)]
pub struct Dense {
    linear: Linear,
}

impl Dense {
    pub fn new(d_input: usize, d_output: usize, device: &Device) -> Self {
        Self { linear: LinearConfig::new(d_input, d_output).init(device) }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.linear.forward(x)
    }

    /// MatMul + Add with the current weights; `hint` names the initializers.
    pub fn emit_onnx(&self, graph: &mut GraphBuilder, x: &str, hint: &str) -> String {
        let weight = self.linear.weight.val();
        let [d_input, d_output] = weight.dims();
        let weight = graph.constant_float(&format!("{hint}_weight"), &[d_input, d_output], to_vec(weight).into_iter().map(f64::from));
        let product = graph.matmul(x, &weight);
        match &self.linear.bias {
            Some(bias) => {
                let bias = graph.constant_float(&format!("{hint}_bias"), &[d_output], to_vec(bias.val()).into_iter().map(f64::from));
                graph.add(&product, &bias)
            }
            None => product,
        }
    }
}

/// The tensor's values as f32, row-major.
pub fn to_vec<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().try_to_vec::<f32>().expect("float tensor data converts to f32")
}
