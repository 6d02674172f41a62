//! equiserve: E(3)-equivariant models of a 12-particle system, trained offline
//! (`train-export`), exported to ONNX, and served over gRPC (`equiserve`).
//!
//! - [`e3`]: pure equivariant mathematics (rotations, irreps, spherical harmonics,
//!   Wigner 3j symbols, radial bases).
//! - [`data`]: trajectories, the study's `.npz` format, the simulator, the split.
//! - [`nn`]: equivariant layers (tensor products, gates, radial networks), written
//!   once against [`nn::Ops`] and so both computed and exported to ONNX.
//! - [`models`]: the model zoo, each defined once for training and ONNX export.
//! - [`onnx`]: writing ONNX graphs and running them with ONNX Runtime.
//! - [`train`]: training, evaluation and export with a model card.
//! - [`serve`]: the gRPC server.

pub mod card;
pub mod data;
pub mod e3;
pub mod models;
pub mod nn;
pub mod onnx;
pub mod proto;
pub mod serve;
pub mod train;

/// Training allocates and frees tensors of several megabytes at every step, which
/// glibc's allocator maps and unmaps one by one: the page faults took about 40% of E3
/// large's training. mimalloc keeps such memory for reuse. Set here, in the library,
/// so that both binaries, the tests and the benchmarks all run with it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
