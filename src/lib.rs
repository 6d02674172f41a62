//! equiserve: E(3)-equivariant models of a 12-particle system, trained offline
//! (`train-export`), exported to ONNX, and served over gRPC (`equiserve`).
//!
//! Layers depend one way (docs/architecture.md):
//! data ← e3 ← nn ← models ← train (which writes ONNX graphs), with [`card`] a plain
//! record both sides read and [`serve`] reading only [`onnx`]'s runtime and the card.
//!
//! - [`data`]: trajectories, the study's `.npz` format, the simulator, the split.
//! - [`e3`]: pure equivariant mathematics (rotations, irreps, spherical harmonics,
//!   Wigner 3j symbols, radial bases).
//! - [`nn`]: equivariant layers (tensor products, gates, radial networks), written
//!   once against [`nn::Ops`] and so both computed and exported to ONNX.
//! - [`models`]: the model zoo, each defined once for training and ONNX export.
//! - [`onnx`]: a model's signature and running models with ONNX Runtime.
//! - [`card`]: the model card, the record export writes and the server reads.
//! - [`train`]: training, evaluation and export with a model card.
//! - [`serve`]: the transport-free serving core, and the gRPC server around it.
//! - [`client`]: clients of a running server (files in and out, the load generator).
//! - [`logging`]: the binaries' log format.
//!
//! Features: `serve` (the gRPC server) and `train` (everything that defines, trains
//! and exports models: Burn, plotters); both by default.

pub mod card;
#[cfg(feature = "serve")]
pub mod client;
pub mod data;
#[cfg(feature = "train")]
pub mod e3;
pub mod logging;
#[cfg(feature = "train")]
pub mod models;
#[cfg(feature = "train")]
pub mod nn;
pub mod onnx;
#[cfg(feature = "serve")]
pub mod proto;
pub mod serve;
#[cfg(feature = "train")]
pub mod train;

/// Training allocates and frees tensors of several megabytes at every step, which
/// glibc's allocator maps and unmaps one by one: the page faults took about 40% of E3
/// large's training. mimalloc keeps such memory for reuse. Set here, in the library,
/// so that both binaries, the tests and the benchmarks all run with it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
