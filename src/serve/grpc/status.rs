//! The one mapping of the serving core's errors to gRPC status codes, and the count of
//! finished calls, shared by every protocol so that none imports another.

use std::time::Instant;

use tonic::Status;

use crate::serve::{DynamicsCore, RepositoryError, ServeError, metrics};

pub fn status(error: ServeError) -> Status {
    let message = error.to_string();
    match error {
        ServeError::UnknownModel { .. } | ServeError::VersionNotReady { .. } => Status::not_found(message),
        // As Triton answers a known model with nothing loaded.
        ServeError::NoVersionReady { .. } => Status::unavailable(message),
        ServeError::InvalidArgument(_) => Status::invalid_argument(message),
        ServeError::Busy { .. } => Status::resource_exhausted(message),
        ServeError::Diverged { .. } | ServeError::NotFinite { .. } => Status::out_of_range(message),
        ServeError::Stalled { .. } => Status::deadline_exceeded(message),
        ServeError::ShuttingDown { .. } => Status::unavailable(message),
        ServeError::Internal { .. } => Status::internal(message),
    }
}

/// What a repository change's failure means to the caller.
pub fn repository_status(error: RepositoryError) -> Status {
    let message = error.to_string();
    match error {
        RepositoryError::NotInRepository { .. } => Status::not_found(message),
        // Triton answers a repository call its control mode does not allow as unsupported.
        RepositoryError::NotExplicit { .. } => Status::unimplemented(message),
        RepositoryError::LoadFailed { .. } | RepositoryError::Unreadable { .. } | RepositoryError::Empty { .. } => Status::failed_precondition(message),
    }
}

/// Counts a finished call, under the model's name only when it is served.
pub fn finished<T>(core: &DynamicsCore, rpc: &'static str, model: &str, started: Instant, result: &Result<T, Status>) {
    let code = result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
    let label = if core.serves(model) { model } else { metrics::UNKNOWN_MODEL };
    metrics::request_finished(rpc, label, format!("{code:?}"), started.elapsed().as_secs_f64());
}
