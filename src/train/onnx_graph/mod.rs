//! Writing models as ONNX graphs with our own prost messages: a builder to which every
//! layer, run against [`Ops`](crate::nn::Ops), appends its nodes. Training's side of
//! ONNX; serving only runs the files (`crate::onnx`).

mod builder;
mod ops;

pub use builder::{GraphBuilder, signature_of};

/// The subset of onnx.proto that we write, generated from `proto/onnx/onnx_subset.proto`.
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
