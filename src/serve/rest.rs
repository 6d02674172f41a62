//! The Open Inference Protocol over HTTP/REST (KServe v2), with Triton's binary tensor
//! extension and its repository and statistics endpoints, mapped onto the serving core
//! as the gRPC protocols are; the same bearer tokens and TLS, and errors as the protocol's
//! `{"error": "..."}` bodies with HTTP status codes of the same meaning.
//!
//! ```text
//! GET  /v2                                        server metadata
//! GET  /v2/health/live | /v2/health/ready         open to probes
//! GET  /v2/models/{m}[/versions/{v}]              model metadata
//! GET  /v2/models/{m}[/versions/{v}]/ready        open to probes
//! GET  /v2/models/{m}[/versions/{v}]/config       Triton's model configuration
//! GET  /v2/models[/{m}[/versions/{v}]]/stats      statistics
//! POST /v2/models/{m}[/versions/{v}]/infer        JSON tensors, or binary after a JSON header
//! POST /v2/repository/index                       every version and its state
//! POST /v2/repository/models/{m}/load | /unload   admin only
//! ```

use std::{convert::Infallible, sync::Arc, time::Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    HeaderMap, Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    DynamicsCore, ModelVersion, Prediction, RepositoryError, ServeError, StatisticsSnapshot, Tally,
    grpc::access::{AccessTokens, Role},
    listen::accept,
    metrics,
    open_inference::{BACKEND, NEXT_POSITIONS, PLATFORM, RequestInputs, TensorDims, tensor_dims},
};
use crate::{
    onnx::{DX, DX_STD},
    proto::inference::FP32,
};

/// Triton's header giving the length of the JSON that precedes binary tensors.
const HEADER_LENGTH: &str = "inference-header-content-length";
const BINARY_DATA_SIZE: &str = "binary_data_size";

/// Who may call, how, and how much a request may carry.
#[derive(Clone)]
pub struct RestOptions {
    pub tokens: Option<AccessTokens>,
    /// Without tokens, let anyone load and unload models (as the gRPC server's flag).
    pub allow_unauthenticated_admin: bool,
    /// Largest request body read; a larger one is answered 413.
    pub max_body_bytes: usize,
    /// TLS (the gRPC port's certificate, key and client CA); `None`: plaintext.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The HTTP port's TLS from PEM files: the server's certificate chain and key and, for
/// mutual TLS, the CA that signs the clients' certificates.
pub fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8], client_ca_pem: Option<&[u8]>) -> Result<tokio_rustls::TlsAcceptor, String> {
    use tokio_rustls::rustls::{
        RootCertStore, ServerConfig,
        crypto::ring::default_provider,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::WebPkiClientVerifier,
    };
    let provider = Arc::new(default_provider());
    let certificates = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>().map_err(|e| format!("the certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("the key: {e}"))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions().map_err(|e| e.to_string())?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for certificate in CertificateDer::pem_slice_iter(ca) {
                roots.add(certificate.map_err(|e| format!("the client CA: {e}"))?).map_err(|e| format!("the client CA: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().map_err(|e| format!("the client CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certificates, key).map_err(|e| format!("the certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves the protocol on `listener` until the task is dropped; each connection is its
/// own task.
pub async fn serve_rest(listener: tokio::net::TcpListener, core: Arc<DynamicsCore>, options: RestOptions) {
    let options = Arc::new(options);
    loop {
        let stream = accept(&listener, "http").await;
        let (core, options) = (Arc::clone(&core), Arc::clone(&options));
        let tls = options.tls.clone();
        let service = service_fn(move |request| {
            let (core, options) = (Arc::clone(&core), Arc::clone(&options));
            async move { Ok::<_, Infallible>(answer(&core, &options, request).await) }
        });
        // Each connection its own task, handshake included: a slow client holds no other.
        tokio::spawn(async move {
            let served = match tls {
                None => http1::Builder::new().serve_connection(TokioIo::new(stream), service).await,
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => http1::Builder::new().serve_connection(TokioIo::new(stream), service).await,
                    Ok(Err(e)) => return tracing::debug!(error = %e, "http: TLS handshake failed"),
                    Err(_) => return tracing::debug!("http: TLS handshake timed out"),
                },
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "http connection ended");
            }
        });
    }
}

/// An answer that is not a success: its HTTP status and the protocol's error body.
struct Failure(StatusCode, String);

impl Failure {
    fn bad(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }
}

impl From<ServeError> for Failure {
    fn from(error: ServeError) -> Self {
        let code = match &error {
            ServeError::UnknownModel { .. } | ServeError::VersionNotReady { .. } => StatusCode::NOT_FOUND,
            ServeError::InvalidArgument(_) | ServeError::Diverged { .. } | ServeError::NotFinite { .. } => StatusCode::BAD_REQUEST,
            ServeError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ServeError::NoVersionReady { .. } | ServeError::ShuttingDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::Stalled { .. } => StatusCode::GATEWAY_TIMEOUT,
            ServeError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(code, error.to_string())
    }
}

impl From<RepositoryError> for Failure {
    fn from(error: RepositoryError) -> Self {
        let code = match &error {
            RepositoryError::NotInRepository { .. } => StatusCode::NOT_FOUND,
            RepositoryError::NotExplicit { .. } => StatusCode::NOT_IMPLEMENTED,
            RepositoryError::LoadFailed { .. } | RepositoryError::Unreadable { .. } | RepositoryError::Empty { .. } => StatusCode::BAD_REQUEST,
        };
        Self(code, error.to_string())
    }
}

type Answer = Response<Full<Bytes>>;

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>, headers: &[(&'static str, String)]) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
    response
}

fn json_answer(value: &Value) -> Answer {
    respond(StatusCode::OK, "application/json", value.to_string().into_bytes(), &[])
}

fn failure_answer(Failure(status, message): Failure) -> Answer {
    respond(status, "application/json", json!({ "error": message }).to_string().into_bytes(), &[])
}

/// The path's parts after `/v2`, or `None` for a path outside the protocol.
fn route(path: &str) -> Option<Vec<&str>> {
    let mut parts = path.trim_end_matches('/').split('/').skip(1);
    (parts.next() == Some("v2")).then(|| parts.collect())
}

/// A model (and version) named by `/models/{m}[/versions/{v}]/...`, and what follows.
fn model_path<'a>(parts: &'a [&'a str]) -> Option<(&'a str, &'a str, &'a [&'a str])> {
    match parts {
        ["models", name, "versions", version, rest @ ..] => Some((name, version, rest)),
        ["models", name, rest @ ..] => Some((name, "", rest)),
        _ => None,
    }
}

/// The role a call needs; `None` for the probes.
fn required_role(method: &Method, parts: &[&str]) -> Option<Role> {
    match (method, parts) {
        (_, ["health", ..]) => None,
        (&Method::GET, _) if model_path(parts).is_some_and(|(_, _, rest)| rest == ["ready"]) => None,
        (_, ["repository", "models", _, "load" | "unload"]) => Some(Role::Admin),
        _ => Some(Role::Inference),
    }
}

fn refusal(options: &RestOptions, method: &Method, parts: &[&str], headers: &HeaderMap) -> Option<Failure> {
    let needed = required_role(method, parts);
    let Some(tokens) = &options.tokens else {
        let admin = needed == Some(Role::Admin) && !options.allow_unauthenticated_admin;
        return admin.then(|| {
            Failure(
                StatusCode::FORBIDDEN,
                "loading and unloading models needs an admin token: start the server with --auth-token-file \
                 (or, on a network you trust, --allow-unauthenticated-admin)"
                    .into(),
            )
        });
    };
    match (needed?, tokens.role(headers.get(AUTHORIZATION))) {
        (_, None) => Some(Failure(StatusCode::UNAUTHORIZED, "send a valid token as 'authorization: Bearer TOKEN'".into())),
        (Role::Admin, Some(Role::Inference)) => Some(Failure(StatusCode::FORBIDDEN, "this call needs an admin token".into())),
        _ => None,
    }
}

async fn answer(core: &DynamicsCore, options: &RestOptions, request: Request<Incoming>) -> Answer {
    let started = Instant::now();
    let (head, body) = request.into_parts();
    let Some(parts) = route(head.uri.path()) else {
        return failure_answer(Failure(
            StatusCode::NOT_FOUND,
            format!("{} is not served: the Open Inference Protocol's paths start with /v2", head.uri.path()),
        ));
    };
    if let Some(refused) = refusal(options, &head.method, &parts, &head.headers) {
        return failure_answer(refused);
    }
    let body = match Limited::new(body, options.max_body_bytes).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            let message = format!("request body not read ({e}); at most {} bytes are taken", options.max_body_bytes);
            return failure_answer(Failure(StatusCode::PAYLOAD_TOO_LARGE, message));
        }
    };
    let inferred = model_path(&parts).filter(|(_, _, rest)| *rest == ["infer"]).map(|(name, _, _)| name.to_string());
    let result = dispatch(core, &head.method, &parts, &head.headers, body).await;
    if let Some(model) = inferred {
        let code = match &result {
            Ok(_) => "Ok".to_string(),
            Err(Failure(status, _)) => status.as_u16().to_string(),
        };
        let label = if core.serves(&model) { model.as_str() } else { metrics::UNKNOWN_MODEL };
        metrics::request_finished("HttpInfer", label, code, started.elapsed().as_secs_f64());
    }
    result.unwrap_or_else(failure_answer)
}

async fn dispatch(core: &DynamicsCore, method: &Method, parts: &[&str], headers: &HeaderMap, body: Bytes) -> Result<Answer, Failure> {
    let get = method == Method::GET;
    let post = method == Method::POST;
    match parts {
        [] if get => Ok(json_answer(&json!({
            "name": env!("CARGO_PKG_NAME"),
            "version": env!("CARGO_PKG_VERSION"),
            "extensions": ["model_repository", "model_configuration", "statistics", "binary_tensor_data"],
        }))),
        ["health", "live"] if get => Ok(json_answer(&json!({ "live": true }))),
        ["health", "ready"] if get => {
            let ready = !core.models().is_empty();
            Ok(respond(
                if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE },
                "application/json",
                json!({ "ready": ready }).to_string().into(),
                &[],
            ))
        }
        ["models", "stats"] if get => Ok(json_answer(&statistics(core, "", "")?)),
        ["repository", "index"] if post => {
            let index: Vec<Value> = core
                .registry()
                .index()
                .into_iter()
                .map(|state| {
                    json!({
                        "name": state.name,
                        "version": state.version.to_string(),
                        "state": if state.ready { "READY" } else { "UNAVAILABLE" },
                        "reason": state.failure.unwrap_or_default(),
                    })
                })
                .collect();
            Ok(json_answer(&Value::Array(index)))
        }
        ["repository", "models", name, change @ ("load" | "unload")] if post => {
            let (repository, name, load) = (Arc::clone(core.registry()), name.to_string(), *change == "load");
            // Loading builds sessions and an unload may join workers: off the async runtime.
            tokio::task::spawn_blocking(move || if load { repository.load(&name) } else { repository.unload(&name) })
                .await
                .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("the repository change stopped: {e}")))??;
            Ok(respond(StatusCode::OK, "application/json", Vec::new(), &[]))
        }
        _ => match model_path(parts) {
            Some((name, version, [])) if get => metadata(core, name, version),
            Some((name, version, ["ready"])) if get => {
                let ready = core.model(name, version).is_ok();
                Ok(respond(if ready { StatusCode::OK } else { StatusCode::BAD_REQUEST }, "application/json", json!({ "ready": ready }).to_string().into(), &[]))
            }
            Some((name, version, ["config"])) if get => {
                let model = core.model(name, version)?;
                Ok(json_answer(&config(&model, core.limits().max_batch)))
            }
            Some((name, version, ["stats"])) if get => Ok(json_answer(&statistics(core, name, version)?)),
            Some((name, version, ["infer"])) if post => infer(core, name, version, headers, body).await,
            _ => Err(Failure(StatusCode::NOT_FOUND, format!("{method} /v2/{} is not part of the protocol served here", parts.join("/")))),
        },
    }
}

fn tensor_json((name, dims): TensorDims) -> Value {
    let shape = [vec![-1], dims].concat();
    json!({ "name": name, "datatype": FP32, "shape": shape })
}

fn metadata(core: &DynamicsCore, name: &str, version: &str) -> Result<Answer, Failure> {
    let model = core.model(name, version)?;
    let (inputs, outputs) = tensor_dims(&model);
    let versions = if version.is_empty() { core.registry().ready_versions(name) } else { vec![model.version] };
    Ok(json_answer(&json!({
        "name": name,
        "versions": versions.iter().map(u64::to_string).collect::<Vec<_>>(),
        "platform": PLATFORM,
        "inputs": inputs.into_iter().map(tensor_json).collect::<Vec<_>>(),
        "outputs": outputs.into_iter().map(tensor_json).collect::<Vec<_>>(),
    })))
}

/// Triton's configuration JSON of `model`.
fn config(model: &ModelVersion, max_batch: usize) -> Value {
    let (inputs, outputs) = tensor_dims(model);
    let tensor = |(name, dims): TensorDims| json!({ "name": name, "data_type": "TYPE_FP32", "dims": dims });
    let kind = if model.workers.execution_provider() == "CPUExecutionProvider" { "KIND_CPU" } else { "KIND_GPU" };
    json!({
        "name": model.name(),
        "platform": PLATFORM,
        "backend": BACKEND,
        "max_batch_size": max_batch,
        "input": inputs.into_iter().map(tensor).collect::<Vec<_>>(),
        "output": outputs.into_iter().map(tensor).collect::<Vec<_>>(),
        "instance_group": [{ "name": model.name(), "count": model.workers.workers(), "kind": kind }],
        "dynamic_batching": { "max_queue_delay_microseconds": model.workers.max_queue_delay().as_micros() as u64 },
    })
}

fn statistics(core: &DynamicsCore, name: &str, version: &str) -> Result<Value, Failure> {
    let models = match (name.is_empty(), version.is_empty()) {
        (true, _) => core.registry().ready_all(None),
        (false, true) => match core.registry().ready_all(Some(name)) {
            none if none.is_empty() => vec![core.model(name, "")?],
            versions => versions,
        },
        (false, false) => vec![core.model(name, version)?],
    };
    let duration = |tally: Tally| json!({ "count": tally.count, "ns": tally.nanos });
    let stats: Vec<Value> = models
        .iter()
        .map(|model| {
            let StatisticsSnapshot { succeeded, failed, queued, computed, frames_answered, calls, last_call_ms, calls_by_frames } = model.workers.statistics();
            json!({
                "name": model.name(),
                "version": model.version.to_string(),
                "last_inference": last_call_ms,
                "inference_count": frames_answered,
                "execution_count": calls,
                "inference_stats": { "success": duration(succeeded), "fail": duration(failed), "queue": duration(queued), "compute_infer": duration(computed) },
                "batch_stats": calls_by_frames.into_iter().map(|(frames, tally)| json!({ "batch_size": frames, "compute_infer": duration(tally) })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({ "model_stats": stats }))
}

#[derive(Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InputTensor>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
    #[serde(default)]
    parameters: Map<String, Value>,
}

#[derive(Deserialize)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    parameters: Map<String, Value>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// Every number of a (nested) JSON array, row-major.
fn flatten(value: &Value, name: &str, into: &mut Vec<f32>) -> Result<(), Failure> {
    match value {
        Value::Array(items) => items.iter().try_for_each(|item| flatten(item, name, into)),
        Value::Number(number) => {
            into.push(number.as_f64().ok_or_else(|| Failure::bad(format!("input '{name}' holds {number}, not a float")))? as f32);
            Ok(())
        }
        other => Err(Failure::bad(format!("input '{name}' holds {other}; FP32 data are numbers"))),
    }
}

/// `positions` (and `previous`) of the request, checked against the model's inputs; a
/// tensor's data come from its JSON `data` or from the binary part after the header.
fn inputs(model: &ModelVersion, request: &InferRequest, mut binary: &[u8]) -> Result<(Vec<f32>, Vec<f32>), Failure> {
    let mut gathered = RequestInputs::new(model);
    for input in &request.inputs {
        let (name, shape) = (&input.name, &input.shape);
        let (index, elements) = gathered.declare(name, &input.datatype, shape).map_err(Failure::bad)?;
        let values = match (input.parameters.get(BINARY_DATA_SIZE), &input.data) {
            (Some(size), None) => {
                let size = size
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| Failure::bad(format!("input '{name}': {BINARY_DATA_SIZE} must be a byte count")))?;
                if size != elements * 4 || binary.len() < size {
                    return Err(Failure::bad(format!(
                        "input '{name}' of shape {shape:?} needs {} bytes of binary data; {size} announced, {} left in the body",
                        elements * 4,
                        binary.len()
                    )));
                }
                let (bytes, rest) = binary.split_at(size);
                binary = rest;
                bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            (None, Some(data)) => {
                let mut values = Vec::with_capacity(elements);
                flatten(data, name, &mut values)?;
                if values.len() != elements {
                    return Err(Failure::bad(format!("input '{name}' of shape {shape:?} needs {elements} values, got {}", values.len())));
                }
                values
            }
            (Some(_), Some(_)) => return Err(Failure::bad(format!("input '{name}' has both data and {BINARY_DATA_SIZE}; give one"))),
            (None, None) => return Err(Failure::bad(format!("input '{name}' has no data"))),
        };
        gathered.give(index, shape[0], values);
    }
    gathered.finish().map_err(Failure::bad)
}

fn flag(parameters: &Map<String, Value>, name: &str) -> Option<bool> {
    parameters.get(name).and_then(Value::as_bool)
}

async fn infer(core: &DynamicsCore, name: &str, version: &str, headers: &HeaderMap, body: Bytes) -> Result<Answer, Failure> {
    let header_length = match headers.get(HEADER_LENGTH) {
        Some(value) => {
            let length = value.to_str().ok().and_then(|v| v.parse::<usize>().ok()).filter(|&n| n <= body.len());
            Some(length.ok_or_else(|| Failure::bad(format!("{HEADER_LENGTH} must be a byte count within the body's {} bytes", body.len())))?)
        }
        None => None,
    };
    let (header, binary) = body.split_at(header_length.unwrap_or(body.len()));
    let request: InferRequest = serde_json::from_slice(header).map_err(|e| Failure::bad(format!("the request is not an inference request: {e}")))?;
    let model = core.model(name, version)?;
    let (positions, previous) = inputs(&model, &request, binary)?;
    let (_, outputs) = tensor_dims(&model);
    let requested = request.outputs.as_deref().unwrap_or_default();
    if let Some(unknown) = requested.iter().find(|wanted| !outputs.iter().any(|(name, _)| *name == wanted.name)) {
        let given = outputs.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(", ");
        return Err(Failure::bad(format!("unknown output '{}'; the model gives {given}", unknown.name.chars().take(64).collect::<String>())));
    }
    let binary_by_default = flag(&request.parameters, "binary_data_output").unwrap_or(false);
    let Prediction { batch, version, dx, dx_std, next_positions } = core.predict_on(model, positions, previous).await?;
    let mut values: Vec<(&str, Vec<f32>)> = vec![(DX, dx.into_iter().collect()), (NEXT_POSITIONS, next_positions.into_iter().collect())];
    if let Some(std) = dx_std {
        values.push((DX_STD, std.into_iter().collect()));
    }
    let (mut described, mut binary_out) = (Vec::new(), Vec::new());
    for (name, dims) in outputs {
        let asked = requested.iter().find(|wanted| wanted.name == name);
        if !requested.is_empty() && asked.is_none() {
            continue;
        }
        let Some(index) = values.iter().position(|(value_name, _)| *value_name == name) else { continue };
        let data = values.swap_remove(index).1;
        let shape = [vec![batch as i64], dims].concat();
        if asked.and_then(|wanted| flag(&wanted.parameters, "binary_data")).unwrap_or(binary_by_default) {
            let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            described.push(json!({ "name": name, "datatype": FP32, "shape": shape, "parameters": { BINARY_DATA_SIZE: bytes.len() } }));
            binary_out.extend(bytes);
        } else {
            described.push(json!({ "name": name, "datatype": FP32, "shape": shape, "data": data }));
        }
    }
    let mut response = json!({ "model_name": name, "model_version": version.to_string(), "outputs": described });
    if let Some(id) = request.id {
        response["id"] = Value::String(id);
    }
    let mut body = response.to_string().into_bytes();
    if binary_out.is_empty() {
        return Ok(respond(StatusCode::OK, "application/json", body, &[]));
    }
    let header_length = body.len();
    body.extend(binary_out);
    Ok(respond(StatusCode::OK, "application/octet-stream", body, &[(HEADER_LENGTH, header_length.to_string())]))
}
