//! [`Ops`] computed at once in f64 with ndarray: the reference evaluation of layers.

use ndarray::{ArrayD, Axis, IxDyn, Slice};

use super::ops::{Ops, Unary};

/// Evaluates layers immediately, in f64.
#[derive(Debug, Default, Clone, Copy)]
pub struct Eager;

fn broadcast_pair(a: &ArrayD<f64>, b: &ArrayD<f64>) -> (ArrayD<f64>, ArrayD<f64>) {
    let rank = a.ndim().max(b.ndim());
    let pad = |x: &ArrayD<f64>| -> Vec<usize> { std::iter::repeat_n(1, rank - x.ndim()).chain(x.shape().iter().copied()).collect() };
    let (sa, sb) = (pad(a), pad(b));
    let shape: Vec<usize> = sa.iter().zip(&sb).map(|(x, y)| if *x == 1 { *y } else { *x }).collect();
    let expand = |x: &ArrayD<f64>, padded: &[usize]| {
        x.as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(padded))
            .expect("padding keeps size")
            .broadcast(IxDyn(&shape))
            .expect("broadcastable shapes")
            .to_owned()
    };
    (expand(a, &sa), expand(b, &sb))
}

impl Ops for Eager {
    type Tensor = ArrayD<f64>;

    fn constant(&mut self, shape: &[usize], values: &[f64]) -> ArrayD<f64> {
        ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).expect("constant shape matches its values")
    }

    /// numpy matmul for rank ≥ 2, broadcasting the leading dimensions.
    fn matmul(&mut self, a: &ArrayD<f64>, b: &ArrayD<f64>) -> ArrayD<f64> {
        let (n, k) = (a.shape()[a.ndim() - 2], a.shape()[a.ndim() - 1]);
        let m = b.shape()[b.ndim() - 1];
        assert_eq!(b.shape()[b.ndim() - 2], k, "matmul: inner dimensions differ");
        let lead_a = &a.shape()[..a.ndim() - 2];
        let lead_b = &b.shape()[..b.ndim() - 2];
        let rank = lead_a.len().max(lead_b.len());
        let pad = |lead: &[usize]| -> Vec<usize> { std::iter::repeat_n(1, rank - lead.len()).chain(lead.iter().copied()).collect() };
        let (pa, pb) = (pad(lead_a), pad(lead_b));
        let lead: Vec<usize> = pa.iter().zip(&pb).map(|(x, y)| if *x == 1 { *y } else { *x }).collect();
        let full = |p: &[usize], r: usize, c: usize| -> Vec<usize> { p.iter().copied().chain([r, c]).collect() };
        let a3 = a
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&full(&pa, n, k)))
            .expect("pad")
            .broadcast(IxDyn(&full(&lead, n, k)))
            .expect("broadcast")
            .to_owned();
        let b3 = b
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&full(&pb, k, m)))
            .expect("pad")
            .broadcast(IxDyn(&full(&lead, k, m)))
            .expect("broadcast")
            .to_owned();
        let batches: usize = lead.iter().product();
        let a3 = a3.into_shape_with_order((batches, n, k)).expect("flatten");
        let b3 = b3.into_shape_with_order((batches, k, m)).expect("flatten");
        let mut out = ndarray::Array3::<f64>::zeros((batches, n, m));
        for i in 0..batches {
            out.index_axis_mut(Axis(0), i).assign(&a3.index_axis(Axis(0), i).dot(&b3.index_axis(Axis(0), i)));
        }
        out.into_shape_with_order(IxDyn(&full(&lead, n, m))).expect("unflatten")
    }

    fn add(&mut self, a: &ArrayD<f64>, b: &ArrayD<f64>) -> ArrayD<f64> {
        let (a, b) = broadcast_pair(a, b);
        a + b
    }

    fn sub(&mut self, a: &ArrayD<f64>, b: &ArrayD<f64>) -> ArrayD<f64> {
        let (a, b) = broadcast_pair(a, b);
        a - b
    }

    fn mul(&mut self, a: &ArrayD<f64>, b: &ArrayD<f64>) -> ArrayD<f64> {
        let (a, b) = broadcast_pair(a, b);
        a * b
    }

    fn div(&mut self, a: &ArrayD<f64>, b: &ArrayD<f64>) -> ArrayD<f64> {
        let (a, b) = broadcast_pair(a, b);
        a / b
    }

    fn unary(&mut self, x: &ArrayD<f64>, f: Unary) -> ArrayD<f64> {
        x.mapv(|v| match f {
            Unary::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            Unary::Tanh => v.tanh(),
            Unary::Exp => v.exp(),
            Unary::Sqrt => v.sqrt(),
            Unary::Cos => v.cos(),
            Unary::Relu => v.max(0.0),
            Unary::Abs => v.abs(),
            Unary::Erf => libm::erf(v),
            Unary::Neg => -v,
        })
    }

    fn less_than(&mut self, x: &ArrayD<f64>, c: f64) -> ArrayD<f64> {
        x.mapv(|v| if v < c { 1.0 } else { 0.0 })
    }

    fn greater_than(&mut self, x: &ArrayD<f64>, c: f64) -> ArrayD<f64> {
        x.mapv(|v| if v > c { 1.0 } else { 0.0 })
    }

    fn clip(&mut self, x: &ArrayD<f64>, min: f64, max: f64) -> ArrayD<f64> {
        x.mapv(|v| v.clamp(min, max))
    }

    fn reshape(&mut self, x: &ArrayD<f64>, shape: &[i64]) -> ArrayD<f64> {
        let mut dims: Vec<usize> = shape.iter().enumerate().map(|(i, &d)| if d == 0 { x.shape()[i] } else { d.max(1) as usize }).collect();
        if let Some(infer) = shape.iter().position(|&d| d == -1) {
            let known: usize = dims.iter().enumerate().filter(|(i, _)| *i != infer).map(|(_, d)| d).product();
            dims[infer] = x.len() / known;
        }
        x.as_standard_layout().into_owned().into_shape_with_order(IxDyn(&dims)).expect("reshape keeps the size")
    }

    fn transpose(&mut self, x: &ArrayD<f64>, perm: &[usize]) -> ArrayD<f64> {
        x.clone().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned()
    }

    fn slice(&mut self, x: &ArrayD<f64>, axis: usize, start: usize, end: usize) -> ArrayD<f64> {
        x.slice_axis(Axis(axis), Slice::from(start..end)).to_owned()
    }

    fn concat(&mut self, xs: &[ArrayD<f64>], axis: usize) -> ArrayD<f64> {
        let views: Vec<_> = xs.iter().map(|x| x.view()).collect();
        ndarray::concatenate(Axis(axis), &views).expect("concatenated parts agree off the axis")
    }

    fn gather(&mut self, x: &ArrayD<f64>, axis: usize, indices: &[usize]) -> ArrayD<f64> {
        x.select(Axis(axis), indices)
    }

    fn reduce_sum(&mut self, x: &ArrayD<f64>, axis: usize, keep_dims: bool) -> ArrayD<f64> {
        let sum = x.sum_axis(Axis(axis));
        if keep_dims { sum.insert_axis(Axis(axis)) } else { sum }
    }

    fn repeat_for_batch(&mut self, like: &ArrayD<f64>, x: &ArrayD<f64>) -> ArrayD<f64> {
        let shape: Vec<usize> = std::iter::once(like.shape()[0]).chain(x.shape().iter().copied()).collect();
        x.broadcast(IxDyn(&shape)).expect("a leading axis broadcasts").to_owned()
    }

    fn reduce_max(&mut self, x: &ArrayD<f64>, axis: usize, keep_dims: bool) -> ArrayD<f64> {
        let max = x.map_axis(Axis(axis), |lane| lane.fold(f64::NEG_INFINITY, |a, &b| a.max(b)));
        if keep_dims { max.insert_axis(Axis(axis)) } else { max }
    }
}
