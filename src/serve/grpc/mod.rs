//! The transports around the serving core: `equiserve.v1.Dynamics` ([`dynamics`]) and
//! the Open Inference Protocol ([`inference`]), each a mapping of its messages onto
//! [`DynamicsCore`](crate::serve::DynamicsCore) that imports no other protocol; the
//! status codes both give ([`status`]), bearer tokens ([`access`]) and the server that
//! serves them on one port with health, reflection and `GET /metrics` ([`server`]).

pub mod access;
mod dynamics;
mod inference;
mod server;
mod status;

pub use dynamics::DynamicsService;
pub use inference::InferenceService;
pub use server::{ServerOptions, serve, serve_metrics, shutdown_signal};
