//! The `equiserve.v1.Dynamics` gRPC service: request validation and the mapping of
//! errors to status codes. Inference itself happens in the model's worker pool.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use ndarray::{Array3, Axis};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{
    engine::EngineError,
    metrics,
    registry::{LoadedModel, ModelRegistry},
};
use crate::{
    data::{DIMS, FRAME_LEN, PARTICLES},
    proto::v1::{
        GetModelRequest, ListModelsRequest, ListModelsResponse, ModelInfo, ModelSummary, PredictRequest,
        PredictResponse, RolloutFrame, RolloutRequest, dynamics_server::Dynamics,
    },
};

/// Bounds on what one request may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch: usize,
    pub max_rollout_steps: u32,
}

/// How many rollouts are computing right now.
#[derive(Debug, Clone, Default)]
pub struct RolloutCounter(Arc<AtomicUsize>);

impl RolloutCounter {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    fn enter(&self) -> RolloutGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        metrics::rollout_started();
        RolloutGuard(self.clone())
    }
}

/// Counts a rollout until it ends, however it ends.
struct RolloutGuard(RolloutCounter);

impl Drop for RolloutGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::SeqCst);
        metrics::rollout_ended();
    }
}

pub struct DynamicsService {
    registry: Arc<ModelRegistry>,
    limits: Limits,
    rollouts: RolloutCounter,
}

impl DynamicsService {
    pub fn new(registry: Arc<ModelRegistry>, limits: Limits) -> Self {
        Self { registry, limits, rollouts: RolloutCounter::default() }
    }

    pub fn rollouts_in_progress(&self) -> RolloutCounter {
        self.rollouts.clone()
    }

    fn model(&self, name: &str) -> Result<&LoadedModel, Status> {
        self.registry.get(name).ok_or_else(|| {
            Status::not_found(format!("unknown model '{name}'; served models: {}", self.registry.names().join(", ")))
        })
    }
}

/// Checks a packed [batch, 12, 3] array: whole frames, 1..=max_batch of them, all finite.
fn frames(positions: Vec<f32>, max_batch: usize) -> Result<Array3<f32>, Status> {
    if positions.is_empty() {
        return Err(Status::invalid_argument("positions is empty: send at least one frame of 12×3 floats"));
    }
    if !positions.len().is_multiple_of(FRAME_LEN) {
        return Err(Status::invalid_argument(format!(
            "positions has {} floats, not a multiple of {FRAME_LEN} (frames of {PARTICLES} particles × {DIMS} coordinates)",
            positions.len()
        )));
    }
    let batch = positions.len() / FRAME_LEN;
    if batch > max_batch {
        return Err(Status::invalid_argument(format!("batch of {batch} frames exceeds the limit of {max_batch}")));
    }
    if let Some(index) = positions.iter().position(|v| !v.is_finite()) {
        return Err(Status::invalid_argument(format!(
            "positions[{index}] is {} (frame {}, particle {}, coordinate {}): values must be finite",
            positions[index],
            index / FRAME_LEN,
            index % FRAME_LEN / DIMS,
            index % DIMS
        )));
    }
    Ok(Array3::from_shape_vec((batch, PARTICLES, DIMS), positions).expect("length checked above"))
}

fn engine_status(model: &str, error: EngineError) -> Status {
    match error {
        EngineError::Busy(_) => Status::resource_exhausted(format!("{model}: {error}")),
        EngineError::Stopped | EngineError::Runtime(_) => Status::internal(format!("{model}: {error}")),
    }
}

fn summary(model: &LoadedModel) -> ModelSummary {
    ModelSummary {
        name: model.summary.name.clone(),
        architecture: model.summary.architecture.clone(),
        params: model.summary.params,
        execution_provider: model.workers.execution_provider().to_string(),
    }
}

#[tonic::async_trait]
impl Dynamics for DynamicsService {
    async fn list_models(&self, _: Request<ListModelsRequest>) -> Result<Response<ListModelsResponse>, Status> {
        Ok(Response::new(ListModelsResponse { models: self.registry.iter().map(summary).collect() }))
    }

    async fn get_model(&self, request: Request<GetModelRequest>) -> Result<Response<ModelInfo>, Status> {
        let model = self.model(&request.get_ref().name)?;
        Ok(Response::new(ModelInfo { summary: Some(summary(model)), card_json: model.card_json.clone() }))
    }

    async fn predict(&self, request: Request<PredictRequest>) -> Result<Response<PredictResponse>, Status> {
        let model = request.get_ref().model.clone();
        let result = self.predict_frames(request.into_inner()).await;
        metrics::request_finished("Predict", &model, result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok));
        result
    }

    type RolloutStream = ReceiverStream<Result<RolloutFrame, Status>>;

    async fn rollout(&self, request: Request<RolloutRequest>) -> Result<Response<Self::RolloutStream>, Status> {
        let model = request.get_ref().model.clone();
        let result = self.start_rollout(request.into_inner());
        // A started rollout counts as OK here; a stream that ends in error reports its own status.
        metrics::request_finished("Rollout", &model, result.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok));
        result
    }
}

impl DynamicsService {
    async fn predict_frames(&self, request: PredictRequest) -> Result<Response<PredictResponse>, Status> {
        let PredictRequest { model: name, positions } = request;
        let model = self.model(&name)?;
        let positions = frames(positions, self.limits.max_batch)?;
        let batch = positions.dim().0 as u32;
        let dx = model.workers.predict(positions.clone()).await.map_err(|e| engine_status(&name, e))?;
        let next = &positions + &dx;
        Ok(Response::new(PredictResponse {
            model: name,
            batch,
            dx: dx.into_iter().collect(),
            next_positions: next.into_iter().collect(),
        }))
    }

    fn start_rollout(&self, request: RolloutRequest) -> Result<Response<ReceiverStream<Result<RolloutFrame, Status>>>, Status> {
        let RolloutRequest { model: name, positions, steps, emit_every } = request;
        self.model(&name)?;
        if positions.len() != FRAME_LEN {
            return Err(Status::invalid_argument(format!(
                "rollout starts from one frame of {FRAME_LEN} floats ({PARTICLES}×{DIMS}), got {}",
                positions.len()
            )));
        }
        let mut x = frames(positions, 1)?;
        if steps == 0 || steps > self.limits.max_rollout_steps {
            return Err(Status::invalid_argument(format!(
                "steps must be between 1 and {}, got {steps}",
                self.limits.max_rollout_steps
            )));
        }
        let emit_every = emit_every.max(1);
        let registry = Arc::clone(&self.registry);
        let in_progress = self.rollouts.enter();
        // A small buffer: a slow client slows the rollout instead of growing memory.
        let (frames_out, frames_in) = mpsc::channel(16);
        tokio::spawn(async move {
            let _in_progress = in_progress;
            let model = registry.get(&name).expect("model checked before spawning");
            for step in 1..=steps {
                // A cancelled call drops the receiver; stop computing for it.
                if frames_out.is_closed() {
                    tracing::debug!(model = %name, step, "rollout cancelled by the client");
                    return;
                }
                let dx = match model.workers.predict(x.clone()).await {
                    Ok(dx) => dx,
                    Err(e) => {
                        let _ = frames_out.send(Err(engine_status(&name, e))).await;
                        return;
                    }
                };
                x += &dx;
                if x.iter().any(|v| !v.is_finite()) {
                    let message = format!("{name}: rollout diverged at step {step} (non-finite positions)");
                    let _ = frames_out.send(Err(Status::out_of_range(message))).await;
                    return;
                }
                if step % emit_every == 0 || step == steps {
                    let frame = RolloutFrame { step, positions: x.index_axis(Axis(0), 0).iter().copied().collect() };
                    if frames_out.send(Ok(frame)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(frames_in)))
    }
}
