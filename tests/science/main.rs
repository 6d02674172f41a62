//! The models and the layers under them, in one test binary (each binary links the whole
//! crate): e3nn parity of the math and layers, equivariance, the zoo, training, ONNX
//! export parity, history models and their import, the shipped models, data files.

#[path = "../common/mod.rs"]
mod common;

mod burn_layers;
mod data;
mod e3nn_layers;
mod e3nn_math;
mod gate_network;
mod history;
mod import_e3nn;
mod layer_equivariance;
mod onnx_export;
mod shipped_models;
mod training;
mod zoo;
