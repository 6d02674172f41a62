//! The operations layers are written in. Each layer's forward pass is written once
//! against [`Ops`]; running it with [`super::Eager`] computes it (f64, ndarray), and
//! running it with `train::onnx_graph::GraphBuilder` emits the same computation as ONNX
//! nodes, so the exported graph is the layer by construction.
//!
//! Semantics follow ONNX (numpy broadcasting, `reshape` with 0 = keep, −1 = infer).

/// Element-wise functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    Sigmoid,
    Tanh,
    Exp,
    Sqrt,
    Cos,
    Relu,
    Abs,
    Erf,
    Neg,
}

pub trait Ops {
    type Tensor: Clone;

    /// A constant array (row-major values).
    fn constant(&mut self, shape: &[usize], values: &[f64]) -> Self::Tensor;
    /// A trainable weight with its current values: a constant, except where the
    /// operations train (Burn), which identify a weight by where `values` live.
    fn weight(&mut self, shape: &[usize], values: &[f64]) -> Self::Tensor {
        self.constant(shape, values)
    }
    fn matmul(&mut self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    fn add(&mut self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    fn sub(&mut self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    fn mul(&mut self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    fn div(&mut self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor;
    fn unary(&mut self, x: &Self::Tensor, f: Unary) -> Self::Tensor;
    /// 1.0 where x < c, else 0.0.
    fn less_than(&mut self, x: &Self::Tensor, c: f64) -> Self::Tensor;
    /// 1.0 where x > c, else 0.0.
    fn greater_than(&mut self, x: &Self::Tensor, c: f64) -> Self::Tensor;
    fn clip(&mut self, x: &Self::Tensor, min: f64, max: f64) -> Self::Tensor;
    fn reshape(&mut self, x: &Self::Tensor, shape: &[i64]) -> Self::Tensor;
    fn transpose(&mut self, x: &Self::Tensor, perm: &[usize]) -> Self::Tensor;
    /// x[..., start..end, ...] along `axis`.
    fn slice(&mut self, x: &Self::Tensor, axis: usize, start: usize, end: usize) -> Self::Tensor;
    fn concat(&mut self, xs: &[Self::Tensor], axis: usize) -> Self::Tensor;
    /// The entries of x at `indices` along `axis`, in that order (repeats allowed).
    fn gather(&mut self, x: &Self::Tensor, axis: usize, indices: &[usize]) -> Self::Tensor;
    fn reduce_sum(&mut self, x: &Self::Tensor, axis: usize, keep_dims: bool) -> Self::Tensor;
    /// The largest entry along `axis`.
    fn reduce_max(&mut self, x: &Self::Tensor, axis: usize, keep_dims: bool) -> Self::Tensor;
    /// `x` [n…] once for each entry along the first axis of `like`: [batch, n…] (what
    /// does not depend on the input still has the input's batch).
    fn repeat_for_batch(&mut self, like: &Self::Tensor, x: &Self::Tensor) -> Self::Tensor;

    /// The larger of a and b, elementwise (broadcast): a + relu(b − a), where the
    /// operations have no maximum of their own.
    fn maximum(&mut self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor {
        let excess = self.sub(b, a);
        let excess = self.unary(&excess, Unary::Relu);
        self.add(a, &excess)
    }

    /// The smaller of a and b, elementwise (broadcast): a − relu(a − b), where the
    /// operations have no minimum of their own.
    fn minimum(&mut self, a: &Self::Tensor, b: &Self::Tensor) -> Self::Tensor {
        let excess = self.sub(a, b);
        let excess = self.unary(&excess, Unary::Relu);
        self.sub(a, &excess)
    }

    fn scale(&mut self, x: &Self::Tensor, factor: f64) -> Self::Tensor {
        let factor = self.constant(&[], &[factor]);
        self.mul(x, &factor)
    }

    fn add_scalar(&mut self, x: &Self::Tensor, value: f64) -> Self::Tensor {
        let value = self.constant(&[], &[value]);
        self.add(x, &value)
    }
}
