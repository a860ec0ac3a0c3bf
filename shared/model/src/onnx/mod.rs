//! Building ONNX graphs: a small builder over ONNX's protobuf types, and the graphs the
//! product makes with it (the imported face network, [`face_net`]).

pub mod face_detector;
pub mod face_net;
pub mod head;

use onnx_protobuf::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use protobuf::{Enum, Message};

/// The ONNX operator set the product's graphs use.
pub const OPSET: i64 = 17;
/// The ONNX IR version written (the one that goes with opset 17).
pub const IR_VERSION: i64 = 8;

/// One dimension of a graph input or output: fixed, or named (e.g. the batch size).
#[derive(Debug, Clone, Copy)]
pub enum Dim<'a> {
    /// A fixed size.
    Fixed(i64),
    /// A symbolic size, given at run time.
    Named(&'a str),
}

/// An attribute value for [`GraphBuilder::node`].
#[derive(Debug, Clone)]
pub enum Attr {
    /// One integer.
    Int(i64),
    /// A list of integers.
    Ints(Vec<i64>),
    /// One float.
    Float(f32),
}

/// Builds one ONNX graph node by node; value names are made unique by the builder.
pub struct GraphBuilder {
    graph: GraphProto,
    counter: usize,
}

impl GraphBuilder {
    /// Starts an empty graph.
    pub fn new(name: &str) -> Self {
        let graph = GraphProto {
            name: name.to_string(),
            ..Default::default()
        };
        GraphBuilder { graph, counter: 0 }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Declares a float32 graph input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        self.graph.input.push(value_info(name, dims));
        name.to_string()
    }

    /// Declares a float32 graph output (a value some node produces).
    pub fn output(&mut self, name: &str, dims: &[Dim]) {
        self.graph.output.push(value_info(name, dims));
    }

    /// Continues an existing graph (e.g. an imported backbone); new value names cannot collide
    /// with the ones it has.
    pub fn extend(graph: GraphProto) -> Self {
        let counter = graph.node.len() + graph.initializer.len() + 1_000_000;
        GraphBuilder { graph, counter }
    }

    /// Adds a float32 constant and returns its name.
    pub fn constant_f32(&mut self, hint: &str, dims: &[i64], data: &[f32]) -> String {
        let name = self.fresh(hint);
        self.named_constant_f32(&name, dims, data)
    }

    /// Adds a float32 constant under exactly `name` (which must be new) and returns it.
    pub fn named_constant_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> String {
        assert_eq!(
            dims.iter().product::<i64>() as usize,
            data.len(),
            "constant {name}: dims and data disagree"
        );
        let name = name.to_string();
        let mut raw = Vec::with_capacity(data.len() * 4);
        for v in data {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        self.graph.initializer.push(TensorProto {
            name: name.clone(),
            dims: dims.to_vec(),
            data_type: DataType::FLOAT.value(),
            raw_data: raw,
            ..Default::default()
        });
        name
    }

    /// Adds an int64 constant and returns its name.
    pub fn constant_i64(&mut self, hint: &str, dims: &[i64], data: &[i64]) -> String {
        assert_eq!(
            dims.iter().product::<i64>() as usize,
            data.len(),
            "constant {hint}: dims and data disagree"
        );
        let name = self.fresh(hint);
        let mut raw = Vec::with_capacity(data.len() * 8);
        for v in data {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        self.graph.initializer.push(TensorProto {
            name: name.clone(),
            dims: dims.to_vec(),
            data_type: DataType::INT64.value(),
            raw_data: raw,
            ..Default::default()
        });
        name
    }

    /// Adds a node with one output and returns the output's name (`output`, or a fresh one).
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
        output: Option<&str>,
    ) -> String {
        let out = match output {
            Some(o) => o.to_string(),
            None => self.fresh(&op.to_ascii_lowercase()),
        };
        let name = self.fresh(op);
        self.graph.node.push(NodeProto {
            op_type: op.to_string(),
            name,
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs.iter().map(|(n, a)| attribute(n, a)).collect(),
            ..Default::default()
        });
        out
    }

    /// Finishes the graph into a model with the given metadata.
    pub fn finish(self, doc: &str, metadata: &[(&str, String)]) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
                ..Default::default()
            }],
            producer_name: "twin-matcher".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.to_string(),
            graph: Some(self.graph).into(),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: k.to_string(),
                    value: v.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// Serializes a model to bytes.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model
        .write_to_bytes()
        .expect("an in-memory ONNX model always serializes")
}

fn attribute(name: &str, a: &Attr) -> AttributeProto {
    let mut p = AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match a {
        Attr::Int(i) => {
            p.type_ = AttributeType::INT.into();
            p.i = *i;
        }
        Attr::Ints(v) => {
            p.type_ = AttributeType::INTS.into();
            p.ints = v.clone();
        }
        Attr::Float(f) => {
            p.type_ = AttributeType::FLOAT.into();
            p.f = *f;
        }
    }
    p
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let shape = TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| tensor_shape_proto::Dimension {
                value: Some(match d {
                    Dim::Fixed(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                    Dim::Named(s) => tensor_shape_proto::dimension::Value::DimParam(s.to_string()),
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let tensor = type_proto::Tensor {
        elem_type: DataType::FLOAT.value(),
        shape: Some(shape).into(),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.to_string(),
        type_: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}
