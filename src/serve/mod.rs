//! Serving models: a transport-free core (the model repository, one served version's
//! worker pool and rollout stepper, request validation, throughput measurement) and,
//! with the `serve` feature, the gRPC transports and server around it (`grpc/`).

mod core;
mod displacement;
mod engine;
mod error;
#[cfg(test)]
mod fake_backend;
mod measure;
pub mod memory;
pub mod metrics;
mod model;
#[cfg(feature = "serve")]
pub mod open_inference;
pub mod repository;
mod rollout;
mod statistics;
mod validate;

#[cfg(feature = "serve")]
pub mod grpc;
#[cfg(feature = "serve")]
mod listen;
#[cfg(feature = "serve")]
pub mod rest;

pub use core::{DynamicsCore, Limits, MAX_MODEL_NAME, Prediction, RolloutEnder, RolloutStart};
pub use displacement::Displacement;
pub use engine::{Backend, EngineError, ModelWorkers, PoolConfig};
pub use error::ServeError;
pub use measure::measure_inference;
pub use model::{LoadError, ModelVersion};
pub use repository::{ModelControl, ModelRepository, RepositoryError, VersionFolder, VersionState};
pub use rollout::{RolloutCounter, RolloutFrames, RolloutStep};
pub use statistics::{StatisticsSnapshot, Tally};
