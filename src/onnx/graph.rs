//! A small builder for ONNX graphs: each layer appends its nodes and initializers.

use super::proto::{
    AttributeProto, attribute_proto::AttributeType, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, tensor_proto::DataType,
    tensor_shape_proto::{Dimension, dimension::Value as DimValue},
    type_proto::{Tensor as TensorType, Value as TypeValue},
};
use super::{INPUT_NAME, IR_VERSION, OPSET, OUTPUT_NAME};
use crate::data::{DIMS, PARTICLES};

/// The element type a graph computes in; its input and output stay float32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    F32,
    /// For trained functions whose output is small beside their intermediate values, so
    /// that f32 rounding alone exceeds the parity tolerance: the faithful SE(3)
    /// Transformer (its later blocks take the earlier ones' dx-sized outputs as
    /// positions; its dx stays below 1e-6) and E3 small after long training (its
    /// unnormalised harmonics' large terms cancel).
    F64,
}

impl Precision {
    /// ONNX's TensorProto.DataType.
    pub fn data_type(self) -> DataType {
        match self {
            Precision::F32 => DataType::Float,
            Precision::F64 => DataType::Double,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "float32",
            Precision::F64 => "float64",
        }
    }
}

/// Collects nodes and weights; names are made unique so layers compose without clashes.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    next_id: usize,
    precision: Precision,
    /// The input as the graph computes with it (cast when the precision is not f32).
    input: String,
}

impl GraphBuilder {
    /// A graph computing in f32.
    pub fn new() -> Self {
        Self::with_precision(Precision::F32)
    }

    pub fn with_precision(precision: Precision) -> Self {
        let mut graph = Self { precision, input: INPUT_NAME.to_string(), ..Self::default() };
        if precision != Precision::F32 {
            graph.input = graph.cast(INPUT_NAME, precision.data_type());
        }
        graph
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The graph input: positions [batch, 12, 3], in the graph's precision.
    pub fn input(&self) -> String {
        self.input.clone()
    }

    pub fn cast(&mut self, x: &str, to: DataType) -> String {
        let to = AttributeProto { name: "to".into(), i: to as i64, r#type: AttributeType::Int as i32, ..Default::default() };
        self.op("Cast", &[x], vec![to])
    }

    fn unique(&mut self, hint: &str) -> String {
        self.next_id += 1;
        format!("{hint}_{}", self.next_id)
    }

    /// A weight stored as an initializer in the graph's precision (little-endian raw data).
    pub fn constant_float(&mut self, hint: &str, dims: &[usize], data: impl ExactSizeIterator<Item = f64>) -> String {
        assert_eq!(dims.iter().product::<usize>(), data.len(), "{hint}: dims do not match data");
        let name = self.unique(hint);
        let raw_data = match self.precision {
            Precision::F32 => data.flat_map(|v| (v as f32).to_le_bytes()).collect(),
            Precision::F64 => data.flat_map(f64::to_le_bytes).collect(),
        };
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: self.precision.data_type() as i32,
            raw_data,
            ..Default::default()
        });
        name
    }

    pub fn constant_i64(&mut self, hint: &str, data: &[i64]) -> String {
        let name = self.unique(hint);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: vec![data.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// Appends one node with a single output and returns that output's name.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        let output = self.unique(&op_type.to_lowercase());
        self.push_node(op_type, inputs, &output, attributes);
        output
    }

    fn push_node(&mut self, op_type: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: format!("{op_type}_{}", self.nodes.len()),
            op_type: op_type.to_string(),
            attribute,
            ..Default::default()
        });
    }

    pub fn matmul(&mut self, a: &str, b: &str) -> String {
        self.op("MatMul", &[a, b], vec![])
    }

    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.op("Add", &[a, b], vec![])
    }

    pub fn sub(&mut self, a: &str, b: &str) -> String {
        self.op("Sub", &[a, b], vec![])
    }

    /// Reshape with a constant target shape (0 copies a dimension, -1 infers one).
    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let shape = self.constant_i64("shape", shape);
        self.op("Reshape", &[x, &shape], vec![])
    }

    /// Names `value` as the graph output `dx` and wraps everything in a model.
    pub fn finish(mut self, value: &str, doc: &str, metadata: &[(&str, String)]) -> ModelProto {
        let value = if self.precision == Precision::F32 { value.to_string() } else { self.cast(value, DataType::Float) };
        self.push_node("Identity", &[&value], OUTPUT_NAME, vec![]);
        let frames = || ValueInfoProto {
            name: String::new(),
            r#type: Some(TypeProto {
                value: Some(TypeValue::TensorType(TensorType {
                    elem_type: DataType::Float as i32,
                    shape: Some(TensorShapeProto {
                        dim: vec![
                            Dimension { value: Some(DimValue::DimParam("batch".into())) },
                            Dimension { value: Some(DimValue::DimValue(PARTICLES as i64)) },
                            Dimension { value: Some(DimValue::DimValue(DIMS as i64)) },
                        ],
                    }),
                })),
            }),
            doc_string: String::new(),
        };
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: "equiserve".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: "equiserve".into(),
                initializer: self.initializers,
                input: vec![ValueInfoProto { name: INPUT_NAME.into(), ..frames() }],
                output: vec![ValueInfoProto { name: OUTPUT_NAME.into(), ..frames() }],
                ..Default::default()
            }),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            metadata_props: metadata
                .iter()
                .map(|(key, value)| StringStringEntryProto { key: key.to_string(), value: value.clone() })
                .collect(),
            ..Default::default()
        }
    }
}
