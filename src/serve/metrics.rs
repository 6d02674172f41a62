//! Prometheus metrics, recorded where the state they describe changes (queues,
//! workers, rollouts, finished calls), so the numbers cannot drift from the truth.
//! Exported over HTTP by `equiserve --metrics-addr`.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

const REQUESTS: &str = "equiserve_requests_total";
const FRAMES: &str = "equiserve_frames_predicted_total";
const INFERENCE: &str = "equiserve_inference_seconds";
const QUEUE: &str = "equiserve_queue_depth";
const ROLLOUTS: &str = "equiserve_rollouts_in_progress";

/// Registers help texts; call once after installing a recorder.
pub fn describe() {
    describe_counter!(REQUESTS, "Finished gRPC calls by rpc, model and status code");
    describe_counter!(FRAMES, "Frames run through a model (batch rows, rollout steps)");
    describe_histogram!(INFERENCE, metrics::Unit::Seconds, "ONNX Runtime time per model call");
    describe_gauge!(QUEUE, "Requests waiting for a model's workers");
    describe_gauge!(ROLLOUTS, "Rollouts computing right now");
}

/// `code` is the protocol's name for how the call ended ("Ok", "NotFound", …).
#[cfg(feature = "serve")]
pub(crate) fn request_finished(rpc: &'static str, model: &str, code: String) {
    counter!(REQUESTS, "rpc" => rpc, "model" => model.to_string(), "code" => code).increment(1);
}

pub(crate) fn queued(model: &str) {
    gauge!(QUEUE, "model" => model.to_string()).increment(1.0);
}

pub(crate) fn dequeued(model: &str) {
    gauge!(QUEUE, "model" => model.to_string()).decrement(1.0);
}

pub(crate) fn inference(model: &str, frames: usize, seconds: f64) {
    histogram!(INFERENCE, "model" => model.to_string()).record(seconds);
    counter!(FRAMES, "model" => model.to_string()).increment(frames as u64);
}

pub(crate) fn rollout_started() {
    gauge!(ROLLOUTS).increment(1.0);
}

pub(crate) fn rollout_ended() {
    gauge!(ROLLOUTS).decrement(1.0);
}
