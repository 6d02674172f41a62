//! Clients of a running server (the `serve` feature's gRPC API): what
//! `equiserve-client` does with files, and its load generator (`bench`).

pub mod files;
pub mod load;

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use ndarray::{Array3, Array4, Axis, s};

use crate::{
    data::windows_before,
    onnx::NamedTensors,
    proto::{inference::grpc_inference_service_client::GrpcInferenceServiceClient, v1::dynamics_client::DynamicsClient},
};

/// A server address as typed (`host:port`, as the server's `--addr` takes it) or as a URI.
pub fn endpoint_uri(addr: &str) -> String {
    if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") }
}

/// How to reach a server: its URI (`https://` for TLS), the CA that signed its
/// certificate when it is not a public one, and a bearer token when it asks for one.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub uri: String,
    /// PEM.
    pub tls_ca: Option<Vec<u8>>,
    /// The client's certificate and key (PEM), for a server that asks for one (mutual TLS).
    pub tls_identity: Option<(Vec<u8>, Vec<u8>)>,
    pub token: Option<String>,
}

/// Adds `authorization: Bearer TOKEN` to every call, when there is a token.
#[derive(Debug, Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

pub type Client = DynamicsClient<InterceptedService<Channel, BearerToken>>;
/// The Open Inference Protocol's client, on the same kind of connection.
pub type InferenceClient = GrpcInferenceServiceClient<InterceptedService<Channel, BearerToken>>;

#[derive(Debug, thiserror::Error)]
#[error("cannot reach the server at {uri}: {message}")]
pub struct ConnectError {
    pub uri: String,
    pub message: String,
}

/// One connection to the server, answers of up to 64 MiB.
pub async fn connect(connection: &Connection) -> Result<Client, ConnectError> {
    let (channel, token) = channel(connection).await?;
    Ok(DynamicsClient::with_interceptor(channel, token).max_decoding_message_size(ANSWER_LIMIT))
}

/// One connection to the server's Open Inference Protocol service.
pub async fn connect_inference(connection: &Connection) -> Result<InferenceClient, ConnectError> {
    let (channel, token) = channel(connection).await?;
    Ok(GrpcInferenceServiceClient::with_interceptor(channel, token).max_decoding_message_size(ANSWER_LIMIT))
}

const ANSWER_LIMIT: usize = 64 << 20;

async fn channel(connection: &Connection) -> Result<(Channel, BearerToken), ConnectError> {
    let failed = |message: String| ConnectError { uri: connection.uri.clone(), message };
    let mut endpoint = Endpoint::from_shared(connection.uri.clone()).map_err(|e| failed(e.to_string()))?;
    if connection.uri.starts_with("https://") {
        // No system roots are built in: the CA that signed the server's certificate is given.
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &connection.tls_ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &connection.tls_identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| failed(e.to_string()))?;
    }
    let token = match &connection.token {
        Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| failed("the token holds characters a header cannot".into()))?),
        None => None,
    };
    let channel = endpoint.connect_timeout(CONNECT_TIMEOUT).connect().await.map_err(|e| failed(causes(&e)))?;
    Ok((channel, BearerToken(token)))
}

/// How long reaching the server may take before the client gives up.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// An error and every cause under it ("transport error: tcp connect error: Connection
/// refused"): tonic's own message alone says only "transport error".
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in std::iter::successors(Some(error), |e| e.source()) {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// Windows cut from consecutive frames: `positions` [n, 12, 3] and, for a model of K
/// frames, the K − 1 frames before each, [n, K − 1, 12, 3]; window i ends at frame
/// K − 1 + i.
pub(crate) struct Windows {
    positions: Array3<f32>,
    previous: Option<Array4<f32>>,
}

impl Windows {
    /// `None` when `frames` holds no whole window.
    pub(crate) fn new(frames: &Array3<f32>, history_frames: usize) -> Option<Self> {
        let held = history_frames - 1;
        let count = frames.dim().0;
        if count <= held {
            return None;
        }
        let positions = frames.slice(s![held.., .., ..]).to_owned();
        let previous = (held > 0).then(|| windows_before(frames.view(), held..count, held));
        Some(Self { positions, previous })
    }

    pub(crate) fn len(&self) -> usize {
        self.positions.dim().0
    }

    /// `batch` consecutive windows from `start` (wrapping), packed as the API sends them.
    pub(crate) fn batch(&self, start: usize, batch: usize) -> (Vec<f32>, Vec<f32>) {
        let rows: Vec<usize> = (0..batch).map(|i| (start + i) % self.len()).collect();
        let positions = self.positions.select(Axis(0), &rows).into_iter().collect();
        let previous = self.previous.as_ref().map_or_else(Vec::new, |p| p.select(Axis(0), &rows).into_iter().collect());
        (positions, previous)
    }

    /// The first `batch` windows (wrapping) as a model's inputs.
    pub(crate) fn tensors(&self, batch: usize) -> NamedTensors {
        let rows: Vec<usize> = (0..batch).map(|i| i % self.len()).collect();
        NamedTensors::dynamics(self.positions.select(Axis(0), &rows), self.previous.as_ref().map(|p| p.select(Axis(0), &rows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_hold_the_frames_before_each() {
        let frames = Array3::from_shape_fn((6, 12, 3), |(t, _, _)| t as f32);
        let windows = Windows::new(&frames, 3).expect("enough frames");
        assert_eq!(windows.len(), 4);
        let (positions, previous) = windows.batch(3, 2);
        assert_eq!((positions[0], positions[36]), (5.0, 2.0));
        assert_eq!((previous[0], previous[36], previous[72]), (3.0, 4.0, 0.0));
        assert!(Windows::new(&frames.slice(s![..2, .., ..]).to_owned(), 3).is_none());
    }
}
