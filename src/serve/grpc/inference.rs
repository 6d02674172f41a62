//! The Open Inference Protocol (KServe v2) over gRPC, with Triton's streaming and model
//! repository extensions, mapped onto the serving core as `equiserve.v1.Dynamics` is:
//! ModelInfer is Predict, a ModelStreamInfer request with a `steps` parameter is a
//! Rollout answered as a decoupled model (one response per emitted frame).
//!
//! Tensors are the model's signature's: inputs `positions` FP32 [B, 12, 3] and, for a
//! model of K ≥ 2 frames, `previous` FP32 [B, K − 1, 12, 3]; outputs `dx` FP32 [B, 12, 3],
//! for a stochastic model `dx_std` FP32 [B, 12], and `next_positions` (positions + dx)
//! (a rollout's responses: `positions`). A streamed rollout takes the parameters
//! `steps`, `emit_every`, `sample` and `seed`, and answers `step` (and a sampled one's
//! `seed`). Inputs come as typed `fp32_contents` or as `raw_input_contents`; outputs
//! always go as `raw_output_contents`, as Triton answers (tritonclient reads numeric
//! outputs from there only).

use std::{collections::HashMap, sync::Arc, time::Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use super::status::{finished, repository_status, status};
use crate::serve::open_inference::{BACKEND, NEXT_POSITIONS, PLATFORM, RequestInputs, TensorDims, tensor_dims};
use crate::{
    data::{DIMS, PARTICLES},
    onnx::{DX, DX_STD, POSITIONS},
    proto::inference::{
        DataType, FP32, InferBatchStatistics, InferParameter, InferStatistics, ModelConfig, ModelConfigRequest, ModelConfigResponse, ModelDynamicBatching,
        ModelInferRequest, ModelInferResponse, ModelInput, ModelInstanceGroup, ModelMetadataRequest, ModelMetadataResponse, ModelOutput, ModelReadyRequest,
        ModelReadyResponse, ModelStatistics, ModelStatisticsRequest, ModelStatisticsResponse, ModelStreamInferResponse, RepositoryIndexRequest,
        RepositoryIndexResponse, RepositoryModelLoadRequest, RepositoryModelLoadResponse, RepositoryModelUnloadRequest, RepositoryModelUnloadResponse,
        ServerLiveRequest, ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse, StatisticDuration,
        fp32_bytes, grpc_inference_service_server::GrpcInferenceService, infer_parameter::ParameterChoice, model_infer_request::InferInputTensor,
        model_infer_response::InferOutputTensor, model_instance_group::Kind, model_metadata_response::TensorMetadata, repository_index_response::ModelIndex,
    },
    serve::{DynamicsCore, MAX_MODEL_NAME, ModelRepository, ModelVersion, Prediction, RepositoryError, RolloutStart, StatisticsSnapshot, Tally},
};

/// Dimensions of one frame after the batch: a rollout's `positions`.
const FRAME_DIMS: [i64; 2] = [PARTICLES as i64, DIMS as i64];
/// Request parameters of a streamed rollout.
const STEPS: &str = "steps";
const EMIT_EVERY: &str = "emit_every";
const SAMPLE: &str = "sample";
/// Request and response parameter: a sampled rollout's seed.
const SEED: &str = "seed";
/// Response parameter: the rollout step of the frame.
const STEP: &str = "step";
/// Triton's decoupled-model flags: the last response of a request, and the request's
/// wish to get that flag in a response of its own with no outputs.
const FINAL_RESPONSE: &str = "triton_final_response";
const EMPTY_FINAL_RESPONSE: &str = "triton_enable_empty_final_response";
/// Responses waiting for a stream's client; a rollout whose client stops reading then
/// stops taking frames and ends at the stall timeout.
const STREAM_RESPONSES: usize = 16;
/// ModelInfer requests of one stream computed at once (rollouts are bounded by the
/// server's rollout limit).
const STREAM_INFERS: usize = 16;

#[derive(Clone)]
pub struct InferenceService {
    core: Arc<DynamicsCore>,
}

impl InferenceService {
    pub fn new(core: Arc<DynamicsCore>) -> Self {
        Self { core }
    }
}

/// A request's tensors, checked against the model's signature.
struct Inputs {
    positions: Vec<f32>,
    previous: Vec<f32>,
}

fn invalid(message: String) -> Status {
    Status::invalid_argument(message)
}

/// Reads `positions` (and `previous`) from typed or raw contents, checking names,
/// datatypes and shapes against the model's inputs.
fn inputs(request: &mut ModelInferRequest, model: &ModelVersion) -> Result<Inputs, Status> {
    let raw = std::mem::take(&mut request.raw_input_contents);
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(invalid(format!("{} raw_input_contents for {} inputs; give one per input", raw.len(), request.inputs.len())));
    }
    let mut gathered = RequestInputs::new(model);
    let mut raw = raw.into_iter();
    for input in &mut request.inputs {
        let InferInputTensor { name, datatype, shape, contents, .. } = input;
        let (index, elements) = gathered.declare(name, datatype, shape).map_err(invalid)?;
        let values = match (raw.next(), contents.take()) {
            (Some(bytes), None) => {
                if bytes.len() != elements * 4 {
                    return Err(invalid(format!("input '{name}' of shape {shape:?} needs {} bytes of raw contents, got {}", elements * 4, bytes.len())));
                }
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            (None, Some(contents)) => {
                if contents.fp32_contents.len() != elements {
                    return Err(invalid(format!("input '{name}' of shape {shape:?} needs {elements} fp32_contents, got {}", contents.fp32_contents.len())));
                }
                contents.fp32_contents
            }
            (Some(_), Some(_)) => return Err(invalid(format!("input '{name}' has both contents and raw_input_contents; give one"))),
            (None, None) => return Err(invalid(format!("input '{name}' has no data"))),
        };
        gathered.give(index, shape[0], values);
    }
    let (positions, previous) = gathered.finish().map_err(invalid)?;
    Ok(Inputs { positions, previous })
}

/// An output of `batch` rows of `dims` each.
fn output_tensor(name: &str, batch: usize, dims: &[i64]) -> InferOutputTensor {
    InferOutputTensor { name: name.to_string(), datatype: FP32.to_string(), shape: [&[batch as i64][..], dims].concat(), ..Default::default() }
}

fn parameter(value: ParameterChoice) -> InferParameter {
    InferParameter { parameter_choice: Some(value) }
}

/// A boolean request parameter, if present.
fn boolean(parameters: &HashMap<String, InferParameter>, name: &str) -> Result<Option<bool>, Status> {
    match parameters.get(name).map(|value| &value.parameter_choice) {
        None => Ok(None),
        Some(Some(ParameterChoice::BoolParam(value))) => Ok(Some(*value)),
        Some(_) => Err(invalid(format!("parameter '{name}' must be a bool"))),
    }
}

/// A 64-bit unsigned request parameter (uint64, or a non-negative int64), if present.
fn unsigned(parameters: &HashMap<String, InferParameter>, name: &str) -> Result<Option<u64>, Status> {
    match parameters.get(name).map(|value| &value.parameter_choice) {
        None => Ok(None),
        Some(Some(ParameterChoice::Uint64Param(value))) => Ok(Some(*value)),
        Some(Some(ParameterChoice::Int64Param(value))) => {
            u64::try_from(*value).map(Some).map_err(|_| invalid(format!("parameter '{name}' = {value} must not be negative")))
        }
        Some(_) => Err(invalid(format!("parameter '{name}' must be an unsigned integer"))),
    }
}

/// A non-negative integer request parameter, if present.
fn integer(parameters: &HashMap<String, InferParameter>, name: &str) -> Result<Option<u32>, Status> {
    let Some(value) = parameters.get(name) else { return Ok(None) };
    let number = match value.parameter_choice {
        Some(ParameterChoice::Int64Param(v)) => i128::from(v),
        Some(ParameterChoice::Uint64Param(v)) => i128::from(v),
        _ => return Err(invalid(format!("parameter '{name}' must be an integer"))),
    };
    u32::try_from(number).map(Some).map_err(|_| invalid(format!("parameter '{name}' = {number} is out of range (0..={})", u32::MAX)))
}

impl InferenceService {
    /// ModelInfer: Predict for the request's tensors.
    async fn infer(&self, mut request: ModelInferRequest) -> Result<ModelInferResponse, Status> {
        let model = self.core.model(&request.model_name, &request.model_version).map_err(status)?;
        let Inputs { positions, previous } = inputs(&mut request, &model)?;
        let (_, outputs) = tensor_dims(&model);
        let wanted: Vec<String> = request.outputs.iter().map(|o| o.name.clone()).collect();
        if let Some(unknown) = wanted.iter().find(|name| !outputs.iter().any(|(output, _)| output == *name)) {
            let given = outputs.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(invalid(format!("unknown output '{}'; the model gives {given}", unknown.chars().take(64).collect::<String>())));
        }
        let prediction = self.core.predict_on(model, positions, previous).await.map_err(status)?;
        let mut response =
            ModelInferResponse { model_name: request.model_name, model_version: prediction.version.to_string(), id: request.id, ..Default::default() };
        let Prediction { batch, dx, dx_std, next_positions, .. } = prediction;
        let mut values = HashMap::from([(DX, fp32_bytes(dx)), (NEXT_POSITIONS, fp32_bytes(next_positions))]);
        if let Some(std) = dx_std {
            values.insert(DX_STD, fp32_bytes(std));
        }
        for (name, dims) in outputs {
            if (wanted.is_empty() || wanted.contains(&name))
                && let Some(bytes) = values.remove(name.as_str())
            {
                response.outputs.push(output_tensor(&name, batch, &dims));
                response.raw_output_contents.push(bytes);
            }
        }
        Ok(response)
    }

    /// A streamed rollout: every emitted frame as a response on `out`, the last flagged final.
    fn rollout(&self, mut request: ModelInferRequest, steps: u32, out: mpsc::Sender<Result<ModelStreamInferResponse, Status>>) -> Result<(), Status> {
        let model = self.core.model(&request.model_name, &request.model_version).map_err(status)?;
        let Inputs { positions, previous } = inputs(&mut request, &model)?;
        let emit_every = integer(&request.parameters, EMIT_EVERY)?.unwrap_or(1);
        let empty_final = boolean(&request.parameters, EMPTY_FINAL_RESPONSE)?.unwrap_or(false);
        let sample = boolean(&request.parameters, SAMPLE)?.unwrap_or(false);
        let seed = unsigned(&request.parameters, SEED)?;
        let version = model.version.to_string();
        let mut frames = self.core.rollout_on(model, RolloutStart { positions, previous, steps, emit_every, sample, seed }).map_err(status)?;
        let seed = frames.seed();
        let (name, id) = (request.model_name, request.id);
        tokio::spawn(async move {
            let response =
                |outputs: Vec<InferOutputTensor>, raw_output_contents: Vec<Vec<u8>>, parameters: HashMap<String, InferParameter>| ModelStreamInferResponse {
                    error_message: String::new(),
                    infer_response: Some(ModelInferResponse {
                        model_name: name.clone(),
                        model_version: version.clone(),
                        id: id.clone(),
                        parameters,
                        outputs,
                        raw_output_contents,
                    }),
                };
            while let Some(frame) = frames.next().await {
                let answers = match frame {
                    Ok(frame) => {
                        let last = frame.step == steps;
                        let mut parameters = HashMap::from([
                            (STEP.to_string(), parameter(ParameterChoice::Int64Param(i64::from(frame.step)))),
                            (FINAL_RESPONSE.to_string(), parameter(ParameterChoice::BoolParam(last && !empty_final))),
                        ]);
                        if let Some(seed) = seed {
                            parameters.insert(SEED.to_string(), parameter(ParameterChoice::Uint64Param(seed)));
                        }
                        let mut answers =
                            vec![response(vec![output_tensor(POSITIONS, frame.batch, &FRAME_DIMS)], vec![fp32_bytes(frame.positions)], parameters)];
                        if last && empty_final {
                            answers.push(response(
                                Vec::new(),
                                Vec::new(),
                                HashMap::from([(FINAL_RESPONSE.to_string(), parameter(ParameterChoice::BoolParam(true)))]),
                            ));
                        }
                        answers
                    }
                    Err(error) => vec![ModelStreamInferResponse { error_message: error.to_string(), infer_response: None }],
                };
                for answer in answers {
                    // A client gone: dropping `frames` ends the rollout.
                    if out.send(Ok(answer)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(())
    }
}

impl InferenceService {
    /// Runs a repository change off the async runtime: loading builds sessions, and an
    /// unload may join the last holder's worker threads.
    async fn change_repository(&self, change: impl FnOnce(&ModelRepository) -> Result<(), RepositoryError> + Send + 'static) -> Result<(), Status> {
        let registry = Arc::clone(self.core.registry());
        tokio::task::spawn_blocking(move || change(&registry))
            .await
            .map_err(|e| Status::internal(format!("the repository change stopped: {e}")))?
            .map_err(repository_status)
    }
}

/// Triton's configuration of `model`: tensors, the batch limit, the session pool and
/// its batching delay.
fn model_config(model: &ModelVersion, max_batch: usize) -> ModelConfig {
    let (inputs, outputs) = tensor_dims(model);
    let kind = if model.workers.execution_provider() == "CPUExecutionProvider" { Kind::Cpu } else { Kind::Gpu };
    ModelConfig {
        name: model.name().to_string(),
        platform: PLATFORM.to_string(),
        backend: BACKEND.to_string(),
        max_batch_size: i32::try_from(max_batch).unwrap_or(i32::MAX),
        input: inputs.into_iter().map(|(name, dims)| ModelInput { name, data_type: DataType::TypeFp32.into(), dims }).collect(),
        output: outputs.into_iter().map(|(name, dims)| ModelOutput { name, data_type: DataType::TypeFp32.into(), dims }).collect(),
        instance_group: vec![ModelInstanceGroup {
            name: model.name().to_string(),
            count: i32::try_from(model.workers.workers()).unwrap_or(i32::MAX),
            kind: kind.into(),
        }],
        dynamic_batching: Some(ModelDynamicBatching {
            max_queue_delay_microseconds: u64::try_from(model.workers.max_queue_delay().as_micros()).unwrap_or(u64::MAX),
        }),
    }
}

fn duration(tally: Tally) -> Option<StatisticDuration> {
    Some(StatisticDuration { count: tally.count, ns: tally.nanos })
}

fn model_statistics(model: &ModelVersion) -> ModelStatistics {
    let StatisticsSnapshot { succeeded, failed, queued, computed, frames_answered, calls, last_call_ms, calls_by_frames } = model.workers.statistics();
    ModelStatistics {
        name: model.name().to_string(),
        version: model.version.to_string(),
        last_inference: last_call_ms,
        inference_count: frames_answered,
        execution_count: calls,
        inference_stats: Some(InferStatistics {
            success: duration(succeeded),
            fail: duration(failed),
            queue: duration(queued),
            compute_infer: duration(computed),
        }),
        batch_stats: calls_by_frames
            .into_iter()
            .map(|(frames, tally)| InferBatchStatistics { batch_size: frames as u64, compute_infer: duration(tally) })
            .collect(),
    }
}

type InferStream = std::pin::Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

fn stream_error(status: Status) -> ModelStreamInferResponse {
    ModelStreamInferResponse { error_message: status.message().to_string(), infer_response: None }
}

/// Repository calls take a model name and no parameters but `accepted` (Triton's file
/// and config overrides are not supported).
fn repository_target<V>(model_name: &str, parameters: &HashMap<String, V>, accepted: &[&str]) -> Result<(), Status> {
    if model_name.is_empty() || model_name.len() > MAX_MODEL_NAME {
        return Err(invalid(format!("model_name must have 1 to {} bytes", MAX_MODEL_NAME)));
    }
    if let Some(name) = parameters.keys().find(|name| !accepted.contains(&name.as_str())) {
        return Err(invalid(format!(
            "parameter '{}' is not supported: models load from their files in the repository",
            name.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: !self.core.models().is_empty() }))
    }

    async fn model_ready(&self, request: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        let ModelReadyRequest { name, version } = request.get_ref();
        Ok(Response::new(ModelReadyResponse { ready: self.core.model(name, version).is_ok() }))
    }

    async fn server_metadata(&self, _: Request<ServerMetadataRequest>) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: ["model_repository", "model_configuration", "statistics", "parameters"].map(String::from).to_vec(),
        }))
    }

    async fn model_metadata(&self, request: Request<ModelMetadataRequest>) -> Result<Response<ModelMetadataResponse>, Status> {
        let ModelMetadataRequest { name, version } = request.get_ref();
        let model = self.core.model(name, version).map_err(status)?;
        // The batch is the first dimension, of any size.
        let tensor = |(name, dims): TensorDims| TensorMetadata { name, datatype: FP32.to_string(), shape: [vec![-1], dims].concat() };
        let (inputs, outputs) = tensor_dims(&model);
        let versions = if version.is_empty() { self.core.registry().ready_versions(name) } else { vec![model.version] };
        Ok(Response::new(ModelMetadataResponse {
            name: name.clone(),
            versions: versions.iter().map(u64::to_string).collect(),
            platform: PLATFORM.to_string(),
            inputs: inputs.into_iter().map(tensor).collect(),
            outputs: outputs.into_iter().map(tensor).collect(),
        }))
    }

    async fn model_config(&self, request: Request<ModelConfigRequest>) -> Result<Response<ModelConfigResponse>, Status> {
        let ModelConfigRequest { name, version } = request.get_ref();
        let model = self.core.model(name, version).map_err(status)?;
        Ok(Response::new(ModelConfigResponse { config: Some(model_config(&model, self.core.limits().max_batch)) }))
    }

    async fn model_statistics(&self, request: Request<ModelStatisticsRequest>) -> Result<Response<ModelStatisticsResponse>, Status> {
        let ModelStatisticsRequest { name, version } = request.get_ref();
        let models = match (name.is_empty(), version.is_empty()) {
            (true, true) => self.core.registry().ready_all(None),
            (true, false) => return Err(invalid("a version without a model name; name the model".to_string())),
            (false, true) => match self.core.registry().ready_all(Some(name)) {
                // Not served: the lookup says why.
                none if none.is_empty() => vec![self.core.model(name, "").map_err(status)?],
                versions => versions,
            },
            (false, false) => vec![self.core.model(name, version).map_err(status)?],
        };
        Ok(Response::new(ModelStatisticsResponse { model_stats: models.iter().map(|model| model_statistics(model)).collect() }))
    }

    async fn model_infer(&self, request: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        let started = Instant::now();
        let request = request.into_inner();
        let model = request.model_name.clone();
        let result = self.infer(request).await.map(Response::new);
        finished(&self.core, "ModelInfer", &model, started, &result);
        result
    }

    type ModelStreamInferStream = InferStream;

    async fn model_stream_infer(&self, request: Request<Streaming<ModelInferRequest>>) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let mut requests = request.into_inner();
        let (out, responses) = mpsc::channel(STREAM_RESPONSES);
        let service = self.clone();
        tokio::spawn(async move {
            let infers = Arc::new(Semaphore::new(STREAM_INFERS));
            while let Some(Ok(request)) = requests.next().await {
                let started = Instant::now();
                let model = request.model_name.clone();
                let result = match integer(&request.parameters, STEPS) {
                    Ok(Some(steps)) => service.rollout(request, steps, out.clone()),
                    Ok(None) => {
                        let Ok(permit) = Arc::clone(&infers).acquire_owned().await else { return };
                        let (service, out) = (service.clone(), out.clone());
                        tokio::spawn(async move {
                            let answer = match service.infer(request).await {
                                Ok(response) => ModelStreamInferResponse { error_message: String::new(), infer_response: Some(response) },
                                Err(status) => stream_error(status),
                            };
                            let _ = out.send(Ok(answer)).await;
                            drop(permit);
                        });
                        Ok(())
                    }
                    Err(status) => Err(status),
                };
                finished(&service.core, "ModelStreamInfer", &model, started, &result);
                if let Err(status) = result
                    && out.send(Ok(stream_error(status))).await.is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses)) as InferStream))
    }

    async fn repository_index(&self, request: Request<RepositoryIndexRequest>) -> Result<Response<RepositoryIndexResponse>, Status> {
        let ready_only = request.get_ref().ready;
        let models = self
            .core
            .registry()
            .index()
            .into_iter()
            .filter(|state| state.ready || !ready_only)
            .map(|state| ModelIndex {
                name: state.name,
                version: state.version.to_string(),
                state: if state.ready { "READY" } else { "UNAVAILABLE" }.to_string(),
                reason: state.failure.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(&self, request: Request<RepositoryModelLoadRequest>) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let RepositoryModelLoadRequest { model_name, parameters, .. } = request.into_inner();
        repository_target(&model_name, &parameters, &[])?;
        self.change_repository(move |registry| registry.load(&model_name)).await?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(&self, request: Request<RepositoryModelUnloadRequest>) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let RepositoryModelUnloadRequest { model_name, parameters, .. } = request.into_inner();
        // Models here have no dependents (no ensembles): the flag changes nothing.
        repository_target(&model_name, &parameters, &["unload_dependents"])?;
        self.change_repository(move |registry| registry.unload(&model_name)).await?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}
