//! `equiserve.v1.Dynamics` over gRPC: messages to and from the serving core, and
//! [`ServeError`]s to status codes. Nothing else happens here.

use std::{sync::Arc, time::Instant};

use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use super::status::{finished, status};
use crate::proto::v1::{
    GetModelRequest, ListModelsRequest, ListModelsResponse, ModelInfo, ModelSummary, PredictRequest, PredictResponse, RolloutFrame, RolloutRequest,
    dynamics_server::Dynamics,
};
use crate::serve::{DynamicsCore, ModelVersion, RolloutStart};

pub struct DynamicsService {
    core: Arc<DynamicsCore>,
}

impl DynamicsService {
    pub fn new(core: Arc<DynamicsCore>) -> Self {
        Self { core }
    }
}

fn summary(model: &ModelVersion, versions: &[u64]) -> ModelSummary {
    ModelSummary {
        name: model.summary.name.clone(),
        architecture: model.summary.architecture.clone(),
        params: model.summary.params,
        execution_provider: model.workers.execution_provider().to_string(),
        history_frames: model.history_frames() as u32,
        version: model.version.to_string(),
        versions: versions.iter().map(u64::to_string).collect(),
        stochastic: model.is_stochastic(),
    }
}

type RolloutStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<RolloutFrame, Status>> + Send>>;

#[tonic::async_trait]
impl Dynamics for DynamicsService {
    async fn list_models(&self, _: Request<ListModelsRequest>) -> Result<Response<ListModelsResponse>, Status> {
        let registry = self.core.registry();
        let models = self.core.models().iter().map(|model| summary(model, &registry.ready_versions(model.name()))).collect();
        Ok(Response::new(ListModelsResponse { models }))
    }

    async fn get_model(&self, request: Request<GetModelRequest>) -> Result<Response<ModelInfo>, Status> {
        let GetModelRequest { name, version } = request.get_ref();
        let model = self.core.model(name, version).map_err(status)?;
        let versions = self.core.registry().ready_versions(name);
        Ok(Response::new(ModelInfo { summary: Some(summary(&model, &versions)), card_json: model.card_json.clone() }))
    }

    async fn predict(&self, request: Request<PredictRequest>) -> Result<Response<PredictResponse>, Status> {
        let started = Instant::now();
        let PredictRequest { model, positions, previous, version } = request.into_inner();
        let result = self.core.predict(&model, &version, positions, previous).await.map_err(status).map(|prediction| {
            Response::new(PredictResponse {
                model: model.clone(),
                version: prediction.version.to_string(),
                batch: prediction.batch as u32,
                dx: prediction.dx.into_iter().collect(),
                dx_std: prediction.dx_std.map(|std| std.into_iter().collect()).unwrap_or_default(),
                next_positions: prediction.next_positions.into_iter().collect(),
            })
        });
        finished(&self.core, "Predict", &model, started, &result);
        result
    }

    type RolloutStream = RolloutStream;

    async fn rollout(&self, request: Request<RolloutRequest>) -> Result<Response<Self::RolloutStream>, Status> {
        let started = Instant::now();
        let RolloutRequest { model, positions, steps, emit_every, previous, version, sample, seed } = request.into_inner();
        let start = RolloutStart { positions, previous, steps, emit_every, sample, seed };
        let result = self.core.rollout(&model, &version, start).map_err(status).map(|frames| {
            let seed = frames.seed();
            let frames =
                frames.map(move |frame| frame.map(|f| RolloutFrame { step: f.step, positions: f.positions, batch: f.batch as u32, seed }).map_err(status));
            Response::new(Box::pin(frames) as RolloutStream)
        });
        // Counts whether the rollout was admitted; how admitted ones end is counted in
        // equiserve_rollouts_ended_total.
        finished(&self.core, "Rollout", &model, started, &result);
        result
    }
}
