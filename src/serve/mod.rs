//! Serving models: a transport-free core (model registry and worker pools, request
//! validation, rollouts, throughput measurement) and, with the `serve` feature, the
//! gRPC mapping and server around it.

mod dynamics;
mod engine;
mod error;
mod measure;
pub mod memory;
pub mod metrics;
mod registry;
mod rollout;
mod statistics;
mod validate;

#[cfg(feature = "serve")]
pub mod access;
#[cfg(feature = "serve")]
mod grpc;
#[cfg(feature = "serve")]
mod inference;
#[cfg(feature = "serve")]
mod server;

pub use dynamics::{DynamicsCore, Limits, Prediction, RolloutEnder, RolloutStart};
pub use engine::{EngineError, ModelWorkers, PoolConfig};
pub use error::ServeError;
pub use measure::measure_inference;
pub use registry::{LoadedModel, ModelControl, ModelRegistry, RegistryError, VersionState};
pub use rollout::{RolloutCounter, RolloutFrames, RolloutStep};
pub use statistics::{StatisticsSnapshot, Tally};

#[cfg(feature = "serve")]
pub use grpc::DynamicsService;
#[cfg(feature = "serve")]
pub use inference::InferenceService;
#[cfg(feature = "serve")]
pub use server::{ServerOptions, serve, shutdown_signal};
