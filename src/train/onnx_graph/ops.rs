//! [`Ops`] emitted as ONNX nodes: a layer run on a [`GraphBuilder`] writes itself out.

use super::{
    GraphBuilder,
    proto::{AttributeProto, attribute_proto::AttributeType, tensor_proto::DataType},
};
use crate::{
    nn::{Ops, Unary},
    onnx::Precision,
};

fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i: value, r#type: AttributeType::Int as i32, ..Default::default() }
}

fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: values.to_vec(), r#type: AttributeType::Ints as i32, ..Default::default() }
}

impl Ops for GraphBuilder {
    type Tensor = String;

    fn constant(&mut self, shape: &[usize], values: &[f64]) -> String {
        self.constant_float("const", shape, values.iter().copied())
    }

    fn matmul(&mut self, a: &String, b: &String) -> String {
        self.op("MatMul", &[a, b], vec![])
    }

    fn add(&mut self, a: &String, b: &String) -> String {
        self.op("Add", &[a, b], vec![])
    }

    fn sub(&mut self, a: &String, b: &String) -> String {
        self.op("Sub", &[a, b], vec![])
    }

    fn mul(&mut self, a: &String, b: &String) -> String {
        self.op("Mul", &[a, b], vec![])
    }

    fn div(&mut self, a: &String, b: &String) -> String {
        self.op("Div", &[a, b], vec![])
    }

    fn unary(&mut self, x: &String, f: Unary) -> String {
        if f == Unary::Erf && self.precision() == Precision::F64 {
            // ONNX Runtime has no f64 Erf kernel; erf is well-conditioned, so f32 costs
            // only its own rounding (~1e-7 relative).
            let narrow = self.cast(x, DataType::Float);
            let erf = self.op("Erf", &[&narrow], vec![]);
            return self.cast(&erf, DataType::Double);
        }
        let op = match f {
            Unary::Sigmoid => "Sigmoid",
            Unary::Tanh => "Tanh",
            Unary::Exp => "Exp",
            Unary::Sqrt => "Sqrt",
            Unary::Cos => "Cos",
            Unary::Relu => "Relu",
            Unary::Abs => "Abs",
            Unary::Erf => "Erf",
            Unary::Neg => "Neg",
        };
        self.op(op, &[x], vec![])
    }

    fn less_than(&mut self, x: &String, c: f64) -> String {
        let c = self.constant(&[], &[c]);
        let flags = self.op("Less", &[x, &c], vec![]);
        self.cast(&flags, super::builder::data_type(self.precision()))
    }

    fn greater_than(&mut self, x: &String, c: f64) -> String {
        let c = self.constant(&[], &[c]);
        let flags = self.op("Greater", &[x, &c], vec![]);
        self.cast(&flags, super::builder::data_type(self.precision()))
    }

    fn clip(&mut self, x: &String, min: f64, max: f64) -> String {
        let (min, max) = (self.constant(&[], &[min]), self.constant(&[], &[max]));
        self.op("Clip", &[x, &min, &max], vec![])
    }

    fn reshape(&mut self, x: &String, shape: &[i64]) -> String {
        GraphBuilder::reshape(self, x, shape)
    }

    /// One node where the default takes three.
    fn maximum(&mut self, a: &String, b: &String) -> String {
        self.op("Max", &[a, b], vec![])
    }

    fn minimum(&mut self, a: &String, b: &String) -> String {
        self.op("Min", &[a, b], vec![])
    }

    fn transpose(&mut self, x: &String, perm: &[usize]) -> String {
        let perm: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
        self.op("Transpose", &[x], vec![attr_ints("perm", &perm)])
    }

    fn slice(&mut self, x: &String, axis: usize, start: usize, end: usize) -> String {
        let starts = self.constant_i64("starts", &[start as i64]);
        let ends = self.constant_i64("ends", &[end as i64]);
        let axes = self.constant_i64("axes", &[axis as i64]);
        self.op("Slice", &[x, &starts, &ends, &axes], vec![])
    }

    fn concat(&mut self, xs: &[String], axis: usize) -> String {
        let inputs: Vec<&str> = xs.iter().map(String::as_str).collect();
        self.op("Concat", &inputs, vec![attr_int("axis", axis as i64)])
    }

    fn gather(&mut self, x: &String, axis: usize, indices: &[usize]) -> String {
        let indices: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let indices = self.constant_i64("indices", &indices);
        self.op("Gather", &[x, &indices], vec![attr_int("axis", axis as i64)])
    }

    fn reduce_sum(&mut self, x: &String, axis: usize, keep_dims: bool) -> String {
        let axes = self.constant_i64("axes", &[axis as i64]);
        self.op("ReduceSum", &[x, &axes], vec![attr_int("keepdims", i64::from(keep_dims))])
    }

    fn repeat_for_batch(&mut self, like: &String, x: &String) -> String {
        let batch = self.op("Shape", &[like], vec![attr_int("start", 0), attr_int("end", 1)]);
        let dims = self.op("Shape", &[x], vec![]);
        let shape = self.op("Concat", &[&batch, &dims], vec![attr_int("axis", 0)]);
        self.op("Expand", &[x, &shape], vec![])
    }

    fn reduce_max(&mut self, x: &String, axis: usize, keep_dims: bool) -> String {
        let axes = self.constant_i64("axes", &[axis as i64]);
        self.op("ReduceMax", &[x, &axes], vec![attr_int("keepdims", i64::from(keep_dims))])
    }
}
