//! [`Ops`] on Burn tensors: the layers run inside the training framework, with
//! autodiff when the device has it, and their weights become trainable tensors.

use std::collections::HashMap;

use burn::tensor::{Device, Int, Tensor, TensorData, activation};

use super::ops::{Ops, Unary};

/// Every tensor is held at this rank, with leading axes of size one.
const RANK: usize = 6;

/// A Burn tensor of rank ≤ 6 and its real shape.
#[derive(Debug, Clone)]
pub struct BurnTensor {
    value: Tensor<RANK>,
    shape: Vec<usize>,
}

fn padded(shape: &[usize]) -> [usize; RANK] {
    assert!(shape.len() <= RANK, "tensors of rank above {RANK} are not supported");
    let mut out = [1; RANK];
    out[RANK - shape.len()..].copy_from_slice(shape);
    out
}

fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
    (0..rank).map(|i| at(a, i).max(at(b, i))).collect()
}

impl BurnTensor {
    pub fn from_values(shape: &[usize], values: Vec<f32>, device: &Device) -> Self {
        let value = Tensor::from_data(TensorData::new(values, padded(shape)), device);
        Self { value, shape: shape.to_vec() }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The rank-6 tensor underneath (for losses and gradients).
    pub fn value(&self) -> &Tensor<RANK> {
        &self.value
    }

    pub fn to_vec(&self) -> Vec<f32> {
        self.value.clone().into_data().convert::<f32>().try_to_vec::<f32>().expect("float data")
    }

    fn with(value: Tensor<RANK>, shape: Vec<usize>) -> Self {
        Self { value, shape }
    }

    fn axis(&self, axis: usize) -> usize {
        RANK - self.shape.len() + axis
    }
}

/// Runs layers on a Burn device. Weights are turned into tensors once, keyed by
/// where the layer stores them, so every use of a weight is the same trainable tensor.
pub struct BurnOps {
    device: Device,
    weights: HashMap<usize, Tensor<RANK>>,
}

impl BurnOps {
    pub fn new(device: Device) -> Self {
        Self { device, weights: HashMap::new() }
    }

    /// The weight tensors created so far (requiring gradients on an autodiff device).
    pub fn weight_tensors(&self) -> impl Iterator<Item = &Tensor<RANK>> {
        self.weights.values()
    }

    /// Each weight's gradient, keyed by the address of the values it was made from
    /// (see [`Ops::weight`]); weights the loss does not depend on are left out.
    pub fn weight_gradients(&self, grads: &burn::tensor::Gradients) -> Vec<(usize, Vec<f32>)> {
        self.weights
            .iter()
            .filter_map(|(&address, tensor)| {
                let grad = tensor.grad(grads)?;
                Some((address, grad.into_data().convert::<f32>().try_to_vec::<f32>().expect("float data")))
            })
            .collect()
    }
}

impl Ops for BurnOps {
    type Tensor = BurnTensor;

    fn constant(&mut self, shape: &[usize], values: &[f64]) -> BurnTensor {
        BurnTensor::from_values(shape, values.iter().map(|&v| v as f32).collect(), &self.device)
    }

    fn weight(&mut self, shape: &[usize], values: &[f64]) -> BurnTensor {
        let device = self.device.clone();
        let value = self
            .weights
            .entry(values.as_ptr() as usize)
            .or_insert_with(|| {
                let data = TensorData::new(values.iter().map(|&v| v as f32).collect::<Vec<_>>(), padded(shape));
                let tensor = Tensor::from_data(data, &device);
                if device.is_autodiff() { tensor.require_grad() } else { tensor }
            })
            .clone();
        BurnTensor::with(value, shape.to_vec())
    }

    fn matmul(&mut self, a: &BurnTensor, b: &BurnTensor) -> BurnTensor {
        let (ra, rb) = (a.shape.len(), b.shape.len());
        let lead = broadcast(&a.shape[..ra - 2], &b.shape[..rb - 2]);
        let expand = |t: &BurnTensor, rows: usize, cols: usize| {
            let full: Vec<usize> = lead.iter().copied().chain([rows, cols]).collect();
            t.value.clone().expand(padded(&full))
        };
        let (n, k, m) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
        let value = expand(a, n, k).matmul(expand(b, k, m));
        BurnTensor::with(value, lead.into_iter().chain([n, m]).collect())
    }

    fn add(&mut self, a: &BurnTensor, b: &BurnTensor) -> BurnTensor {
        BurnTensor::with(a.value.clone() + b.value.clone(), broadcast(&a.shape, &b.shape))
    }

    fn sub(&mut self, a: &BurnTensor, b: &BurnTensor) -> BurnTensor {
        BurnTensor::with(a.value.clone() - b.value.clone(), broadcast(&a.shape, &b.shape))
    }

    fn mul(&mut self, a: &BurnTensor, b: &BurnTensor) -> BurnTensor {
        BurnTensor::with(a.value.clone() * b.value.clone(), broadcast(&a.shape, &b.shape))
    }

    fn div(&mut self, a: &BurnTensor, b: &BurnTensor) -> BurnTensor {
        BurnTensor::with(a.value.clone() / b.value.clone(), broadcast(&a.shape, &b.shape))
    }

    fn unary(&mut self, x: &BurnTensor, f: Unary) -> BurnTensor {
        let v = x.value.clone();
        let value = match f {
            Unary::Sigmoid => activation::sigmoid(v),
            Unary::Tanh => activation::tanh(v),
            Unary::Exp => v.exp(),
            Unary::Sqrt => v.sqrt(),
            Unary::Cos => v.cos(),
            Unary::Relu => activation::relu(v),
            Unary::Abs => v.abs(),
            Unary::Erf => v.erf(),
            Unary::Neg => v.neg(),
        };
        BurnTensor::with(value, x.shape.clone())
    }

    fn less_than(&mut self, x: &BurnTensor, c: f64) -> BurnTensor {
        BurnTensor::with(x.value.clone().lower_elem(c as f32).float(), x.shape.clone())
    }

    fn greater_than(&mut self, x: &BurnTensor, c: f64) -> BurnTensor {
        BurnTensor::with(x.value.clone().greater_elem(c as f32).float(), x.shape.clone())
    }

    fn clip(&mut self, x: &BurnTensor, min: f64, max: f64) -> BurnTensor {
        let value = if max.is_finite() { x.value.clone().clamp(min as f32, max as f32) } else { x.value.clone().clamp_min(min as f32) };
        BurnTensor::with(value, x.shape.clone())
    }

    fn reshape(&mut self, x: &BurnTensor, shape: &[i64]) -> BurnTensor {
        let total: usize = x.shape.iter().product();
        let mut dims: Vec<usize> = shape.iter().enumerate().map(|(i, &d)| if d == 0 { x.shape[i] } else { d.max(1) as usize }).collect();
        if let Some(infer) = shape.iter().position(|&d| d == -1) {
            let known: usize = dims.iter().enumerate().filter(|(i, _)| *i != infer).map(|(_, d)| d).product();
            dims[infer] = total / known;
        }
        BurnTensor::with(x.value.clone().reshape(padded(&dims)), dims)
    }

    fn transpose(&mut self, x: &BurnTensor, perm: &[usize]) -> BurnTensor {
        let offset = RANK - x.shape.len();
        let mut axes: [usize; RANK] = std::array::from_fn(|i| i);
        for (i, &p) in perm.iter().enumerate() {
            axes[offset + i] = offset + p;
        }
        let shape = perm.iter().map(|&p| x.shape[p]).collect();
        BurnTensor::with(x.value.clone().permute(axes), shape)
    }

    fn slice(&mut self, x: &BurnTensor, axis: usize, start: usize, end: usize) -> BurnTensor {
        let mut shape = x.shape.clone();
        shape[axis] = end - start;
        BurnTensor::with(x.value.clone().narrow(x.axis(axis), start, end - start), shape)
    }

    fn concat(&mut self, xs: &[BurnTensor], axis: usize) -> BurnTensor {
        let mut shape = xs[0].shape.clone();
        shape[axis] = xs.iter().map(|x| x.shape[axis]).sum();
        let values = xs.iter().map(|x| x.value.clone()).collect();
        BurnTensor::with(Tensor::cat(values, xs[0].axis(axis)), shape)
    }

    /// Gathers rows of a matrix: the backward pass (select_add) adds whole row slices
    /// there, where on higher ranks it computes every element's index one by one (a
    /// fifth of E3 large's training step). So `axis` is moved first and the rest flattened.
    fn gather(&mut self, x: &BurnTensor, axis: usize, indices: &[usize]) -> BurnTensor {
        let rank = x.shape.len();
        let to_front: Vec<usize> = std::iter::once(axis).chain((0..rank).filter(|&a| a != axis)).collect();
        let moved = self.transpose(x, &to_front);
        let rest: usize = moved.shape[1..].iter().product();
        let matrix: Tensor<2> = moved.value.reshape([moved.shape[0], rest]);
        let picked_rows: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let picked_rows = Tensor::<1, Int>::from_data(TensorData::new(picked_rows, [indices.len()]), &self.device);
        let picked = matrix.select(0, picked_rows);
        let shape: Vec<usize> = std::iter::once(indices.len()).chain(moved.shape[1..].iter().copied()).collect();
        let picked = BurnTensor::with(picked.reshape(padded(&shape)), shape);
        let mut back = vec![0; rank];
        for (position, &original) in to_front.iter().enumerate() {
            back[original] = position;
        }
        self.transpose(&picked, &back)
    }

    fn reduce_sum(&mut self, x: &BurnTensor, axis: usize, keep_dims: bool) -> BurnTensor {
        reduce(x, axis, keep_dims, Tensor::sum_dim)
    }

    fn repeat_for_batch(&mut self, like: &BurnTensor, x: &BurnTensor) -> BurnTensor {
        let shape: Vec<usize> = std::iter::once(like.shape[0]).chain(x.shape.iter().copied()).collect();
        BurnTensor::with(x.value.clone().expand(padded(&shape)), shape)
    }

    fn reduce_max(&mut self, x: &BurnTensor, axis: usize, keep_dims: bool) -> BurnTensor {
        reduce(x, axis, keep_dims, Tensor::max_dim)
    }
}

/// `x` reduced along `axis` by `f` (which keeps the axis with size 1).
fn reduce(x: &BurnTensor, axis: usize, keep_dims: bool, f: impl FnOnce(Tensor<RANK>, usize) -> Tensor<RANK>) -> BurnTensor {
    let mut shape = x.shape.clone();
    shape[axis] = 1;
    let value = f(x.value.clone(), x.axis(axis));
    if !keep_dims {
        shape.remove(axis);
    }
    let value = value.reshape(padded(&shape));
    BurnTensor::with(value, shape)
}
