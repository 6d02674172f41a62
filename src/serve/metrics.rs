//! Prometheus metrics, recorded where the state they describe changes (admission,
//! queues, batches, rollouts, finished calls), so the numbers cannot drift from the
//! truth. Exported over HTTP by `equiserve --metrics-addr`.
//!
//! Per request the breakdown is Triton's: time in the queue, time computing (per batch,
//! with the batch's size), and the whole call.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

const REQUESTS: &str = "equiserve_requests_total";
const REQUEST_SECONDS: &str = "equiserve_request_seconds";
const FRAMES: &str = "equiserve_frames_predicted_total";
const COMPUTE_SECONDS: &str = "equiserve_compute_seconds";
const QUEUE_SECONDS: &str = "equiserve_queue_seconds";
const BATCH_FRAMES: &str = "equiserve_batch_frames";
const ADMITTED: &str = "equiserve_requests_admitted";
const ROLLOUTS: &str = "equiserve_rollouts_in_progress";
const ROLLOUT_BATCH: &str = "equiserve_rollout_step_systems";
const ROLLOUTS_ENDED: &str = "equiserve_rollouts_ended_total";
const ROLLOUT_SECONDS: &str = "equiserve_rollout_seconds";
const ROLLOUT_STEPS: &str = "equiserve_rollout_steps";
const ABANDONED: &str = "equiserve_jobs_abandoned_total";

/// The labels of one model version's series: bounded by the versions in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLabels {
    pub model: String,
    pub version: String,
}

impl ModelLabels {
    pub fn new(model: &str, version: u64) -> Self {
        Self { model: model.to_string(), version: version.to_string() }
    }

    fn pairs(&self) -> [(&'static str, String); 2] {
        [("model", self.model.clone()), ("version", self.version.clone())]
    }
}

/// Model label of calls naming no served model: one label, however many names clients
/// invent, so that the label set stays bounded.
pub const UNKNOWN_MODEL: &str = "(unknown)";

/// Registers help texts; call once after installing a recorder.
pub fn describe() {
    describe_counter!(REQUESTS, "Finished calls by protocol's rpc, model and status code");
    describe_histogram!(REQUEST_SECONDS, metrics::Unit::Seconds, "Whole unary call, from decoded request to answer");
    describe_counter!(FRAMES, "Frames run through a model (batch rows, rollout steps)");
    describe_histogram!(COMPUTE_SECONDS, metrics::Unit::Seconds, "ONNX Runtime time per batch");
    describe_histogram!(QUEUE_SECONDS, metrics::Unit::Seconds, "Time a request or rollout step waited for a session");
    describe_histogram!(BATCH_FRAMES, "Frames per ONNX Runtime call (requests batched together)");
    describe_gauge!(ADMITTED, "Requests admitted and not yet answered");
    describe_counter!(ABANDONED, "Queued parts of requests dropped unrun because their caller had gone (cancelled, past its deadline)");
    describe_gauge!(ROLLOUTS, "Rollouts computing right now");
    describe_histogram!(ROLLOUT_BATCH, "Systems advanced together in one rollout step");
    describe_counter!(ROLLOUTS_ENDED, "Rollouts by how they ended (finished, cancelled, diverged, failed)");
    describe_histogram!(ROLLOUT_SECONDS, metrics::Unit::Seconds, "A rollout from its start to its end, however it ended");
    describe_histogram!(ROLLOUT_STEPS, "Steps a rollout took before it ended");
}

/// Histogram buckets for the exporter (which renders summaries for the others).
#[cfg(feature = "serve")]
pub fn prometheus_builder() -> metrics_exporter_prometheus::PrometheusBuilder {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];
    let seconds = [1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0];
    let rollout_seconds = [0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0];
    let steps = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in [
        (BATCH_FRAMES, &sizes[..]),
        (ROLLOUT_BATCH, &sizes[..]),
        (COMPUTE_SECONDS, &seconds[..]),
        (QUEUE_SECONDS, &seconds[..]),
        (REQUEST_SECONDS, &seconds[..]),
        (ROLLOUT_SECONDS, &rollout_seconds[..]),
        (ROLLOUT_STEPS, &steps[..]),
    ] {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.to_string()), buckets).expect("buckets are not empty");
    }
    builder
}

/// `code` is the protocol's name for how the call ended ("Ok", "NotFound", …); `model`
/// a served model's name or [`UNKNOWN_MODEL`].
#[cfg(feature = "serve")]
pub(crate) fn request_finished(rpc: &'static str, model: &str, code: String, seconds: f64) {
    counter!(REQUESTS, "rpc" => rpc, "model" => model.to_string(), "code" => code).increment(1);
    histogram!(REQUEST_SECONDS, "rpc" => rpc, "model" => model.to_string()).record(seconds);
}

pub(crate) fn requests_admitted(labels: &ModelLabels, now: usize) {
    gauge!(ADMITTED, &labels.pairs()).set(now as f64);
}

pub(crate) fn job_waited(labels: &ModelLabels, seconds: f64) {
    histogram!(QUEUE_SECONDS, &labels.pairs()).record(seconds);
}

pub(crate) fn job_abandoned(labels: &ModelLabels) {
    counter!(ABANDONED, &labels.pairs()).increment(1);
}

pub(crate) fn batch_ran(labels: &ModelLabels, frames: usize, seconds: f64) {
    histogram!(COMPUTE_SECONDS, &labels.pairs()).record(seconds);
    histogram!(BATCH_FRAMES, &labels.pairs()).record(frames as f64);
    counter!(FRAMES, &labels.pairs()).increment(frames as u64);
}

pub(crate) fn rollout_started() {
    gauge!(ROLLOUTS).increment(1.0);
}

pub(crate) fn rollout_ended(labels: &ModelLabels, how: &'static str) {
    gauge!(ROLLOUTS).decrement(1.0);
    let [model, version] = labels.pairs();
    counter!(ROLLOUTS_ENDED, &[model, version, ("how", how.to_string())]).increment(1);
}

pub(crate) fn rollout_ran(labels: &ModelLabels, seconds: f64, steps: u32) {
    histogram!(ROLLOUT_SECONDS, &labels.pairs()).record(seconds);
    histogram!(ROLLOUT_STEPS, &labels.pairs()).record(f64::from(steps));
}

pub(crate) fn rollout_step(labels: &ModelLabels, systems: usize) {
    histogram!(ROLLOUT_BATCH, &labels.pairs()).record(systems as f64);
}
