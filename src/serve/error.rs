//! What can go wrong serving a request, independent of the protocol that carried it;
//! each protocol maps these to its own status codes.

use super::engine::EngineError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ServeError {
    #[error("unknown model '{name}'; served models: {served}")]
    UnknownModel { name: String, served: String },
    #[error("model '{name}' has no version {version} ready; ready versions: [{ready}]")]
    VersionNotReady { name: String, version: u64, ready: String },
    /// The model is in the repository but none of its versions is ready (unloaded, or
    /// every version failed to load): worth retrying once it is (re)loaded.
    #[error("model '{name}' has no version ready ({why})")]
    NoVersionReady { name: String, why: String },
    /// The request is malformed or out of the limits: the client's to fix.
    #[error("{0}")]
    InvalidArgument(String),
    /// The model (or the server) is at capacity: worth retrying later.
    #[error("{model}: busy: {reason}; retry later")]
    Busy { model: String, reason: String },
    /// A rollout's client took no frame for the stall timeout: the rollout was ended so
    /// that it holds no place.
    #[error("{model}: rollout ended: the client took no frame for {seconds} s")]
    Stalled { model: String, seconds: f64 },
    /// The server is shutting down and ended the call.
    #[error("{model}: the server is shutting down; try again on another instance")]
    ShuttingDown { model: String },
    /// A rollout's positions stopped being finite.
    #[error("{model}: rollout diverged at step {step} (non-finite positions)")]
    Diverged { model: String, step: u32 },
    /// The model's answer for a frame of finite input is not finite (input far outside
    /// what it was trained on).
    #[error("{model}: the answer for frame {frame} is not finite (is the input far outside the model's training data?)")]
    NotFinite { model: String, frame: usize },
    /// A fault of the server or the model, not of the request.
    #[error("{model}: {message}")]
    Internal { model: String, message: String },
}

impl ServeError {
    pub(crate) fn from_engine(model: &str, error: EngineError) -> Self {
        match error {
            EngineError::Busy(_) | EngineError::TooMuchWork { .. } => ServeError::Busy { model: model.to_string(), reason: error.to_string() },
            // Retrying elsewhere helps; the server is not at fault.
            EngineError::Stopped => ServeError::ShuttingDown { model: model.to_string() },
            EngineError::Lost | EngineError::Runtime(_) => ServeError::Internal { model: model.to_string(), message: error.to_string() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopping_pool_is_worth_retrying_and_a_failed_worker_is_ours() {
        assert!(matches!(ServeError::from_engine("m", EngineError::Stopped), ServeError::ShuttingDown { .. }));
        assert!(matches!(ServeError::from_engine("m", EngineError::Lost), ServeError::Internal { .. }));
        assert!(matches!(ServeError::from_engine("m", EngineError::Busy(3)), ServeError::Busy { .. }));
    }
}
