//! A small builder for ONNX graphs: each layer appends its nodes and initializers.

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, tensor_proto::DataType,
    tensor_shape_proto::{Dimension, dimension::Value as DimValue},
    type_proto::{Tensor as TensorType, Value as TypeValue},
};
use super::{INPUT_NAME, IR_VERSION, OPSET, OUTPUT_NAME};
use crate::data::{DIMS, PARTICLES};

/// Collects nodes and weights; names are made unique so layers compose without clashes.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    next_id: usize,
}

impl GraphBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The graph input: positions float32 [batch, 12, 3].
    pub fn input(&self) -> String {
        INPUT_NAME.to_string()
    }

    fn unique(&mut self, hint: &str) -> String {
        self.next_id += 1;
        format!("{hint}_{}", self.next_id)
    }

    /// A float32 weight stored as an initializer (little-endian raw data).
    pub fn constant_f32(&mut self, hint: &str, dims: &[usize], data: &[f32]) -> String {
        assert_eq!(dims.iter().product::<usize>(), data.len(), "{hint}: dims do not match data");
        let name = self.unique(hint);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
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
        self.push_node("Identity", &[value], OUTPUT_NAME, vec![]);
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
