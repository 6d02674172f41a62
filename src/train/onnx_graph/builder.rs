//! A small builder for ONNX graphs: each layer appends its nodes and initializers.

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType,
    tensor_proto::DataType,
    tensor_shape_proto::{Dimension, dimension::Value as DimValue},
    type_proto::{Tensor as TensorType, Value as TypeValue},
};
use crate::{
    data::Target,
    models::{ModelInputs, OpsModel},
    onnx::{BATCH, Dim, IR_VERSION, OPSET, POSITIONS, PREVIOUS, Precision, Signature, TensorSpec},
};

/// ONNX's TensorProto.DataType of a precision.
pub(super) fn data_type(precision: Precision) -> DataType {
    match precision {
        Precision::F32 => DataType::Float,
        Precision::F64 => DataType::Double,
    }
}

/// Collects nodes and weights; names are made unique so layers compose without clashes.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    next_id: usize,
    precision: Precision,
    signature: Signature,
    /// The inputs as the graph computes with them (cast when the precision is not f32),
    /// in the signature's order.
    inputs: Vec<String>,
}

/// The dynamics signature of `model`: its window, and `dx_std` when it is stochastic.
pub fn signature_of<M: OpsModel>(model: &M) -> Signature {
    Signature::dynamics_of(model.history_frames(), model.stochastic())
}

impl GraphBuilder {
    /// A graph of `signature` computing in `precision`.
    pub fn new(signature: Signature, precision: Precision) -> Self {
        let mut graph = Self { precision, ..Self::default() };
        graph.inputs = signature
            .inputs
            .iter()
            .map(|spec| if precision == Precision::F32 { spec.name.clone() } else { graph.cast(&spec.name, data_type(precision)) })
            .collect();
        graph.signature = signature;
        graph
    }

    /// A graph of the dynamics signature of `model` (it reads `model.history_frames()` frames).
    /// (With `dx_std` when the model is stochastic.)
    pub fn for_model<M: OpsModel>(model: &M, precision: Precision) -> Self {
        Self::new(signature_of(model), precision)
    }

    /// Appends `model`'s forward pass on this graph's inputs and gives its output.
    pub fn emit<M: OpsModel>(&mut self, model: &M) -> String {
        let positions = self.input(POSITIONS).expect("dynamics signatures read positions");
        let previous = self.input(PREVIOUS);
        model.forward(self, &ModelInputs { positions: &positions, previous: previous.as_ref() })
    }

    /// Appends `model`'s dx and, for a stochastic model, dx_std, from one pass.
    pub fn emit_with_std<M: OpsModel>(&mut self, model: &M) -> (String, Option<String>) {
        let positions = self.input(POSITIONS).expect("dynamics signatures read positions");
        let previous = self.input(PREVIOUS);
        model.forward_with_std(self, &ModelInputs { positions: &positions, previous: previous.as_ref() })
    }

    /// Every output of `model`, in its signature's order: dx, then dx_std if it has one.
    pub fn emit_outputs<M: OpsModel>(&mut self, model: &M) -> Vec<String> {
        let (dx, std) = self.emit_with_std(model);
        std::iter::once(dx).chain(std).collect()
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The graph's inputs in the graph's precision, in the signature's order.
    pub fn inputs(&self) -> &[String] {
        &self.inputs
    }

    /// The input called `name` in the graph's precision.
    pub fn input(&self, name: &str) -> Option<String> {
        let index = self.signature.inputs.iter().position(|spec| spec.name == name)?;
        Some(self.inputs[index].clone())
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
            data_type: data_type(self.precision) as i32,
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

    /// Finishes a dynamics graph of model `name` from its output (its training target)
    /// and, for a stochastic model, dx_std: what is served is always dx, so a model of
    /// x(t+1) has the positions subtracted.
    pub fn finish_dynamics(mut self, output: String, std: Option<String>, target: Target, name: &str, metadata: &[(&str, String)]) -> ModelProto {
        let dx = if target == Target::X {
            let positions = self.input(POSITIONS).expect("dynamics signatures read positions");
            self.sub(&output, &positions)
        } else {
            output
        };
        let outputs: Vec<String> = std::iter::once(dx).chain(std).collect();
        let served = if outputs.len() > 1 { "dx [batch, 12, 3], dx_std [batch, 12]" } else { "dx [batch, 12, 3]" };
        self.finish(&outputs, &format!("equiserve {name}: positions [batch, 12, 3] -> {served}"), metadata)
    }

    /// Names `outputs` (one value per output of the signature, in its order) as the
    /// graph's outputs and wraps everything in a model.
    pub fn finish(mut self, outputs: &[String], doc: &str, metadata: &[(&str, String)]) -> ModelProto {
        assert_eq!(outputs.len(), self.signature.outputs.len(), "one value per output of the signature");
        for (value, spec) in outputs.iter().zip(self.signature.outputs.clone()) {
            let value = if self.precision == Precision::F32 { value.clone() } else { self.cast(value, DataType::Float) };
            self.push_node("Identity", &[&value], &spec.name, vec![]);
        }
        let declare = |specs: &[TensorSpec]| specs.iter().map(value_info).collect();
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: "equiserve".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: "equiserve".into(),
                initializer: self.initializers,
                input: declare(&self.signature.inputs),
                output: declare(&self.signature.outputs),
                ..Default::default()
            }),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            metadata_props: metadata.iter().map(|(key, value)| StringStringEntryProto { key: key.to_string(), value: value.clone() }).collect(),
            ..Default::default()
        }
    }
}

/// A float32 graph input or output as the signature declares it.
fn value_info(spec: &TensorSpec) -> ValueInfoProto {
    assert_eq!(spec.dtype, crate::onnx::FLOAT32, "graphs take and give float32 tensors");
    let dim = spec
        .dims()
        .expect("signatures built here have valid shapes")
        .into_iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Batch => DimValue::DimParam(BATCH.into()),
                Dim::Fixed(n) => DimValue::DimValue(n as i64),
            }),
        })
        .collect();
    ValueInfoProto {
        name: spec.name.clone(),
        r#type: Some(TypeProto { value: Some(TypeValue::TensorType(TensorType { elem_type: DataType::Float as i32, shape: Some(TensorShapeProto { dim }) })) }),
        doc_string: String::new(),
    }
}
