//! Clients of a running server (the `serve` feature's gRPC API): what
//! `equiserve-client` does with files, and its load generator (`bench`).

pub mod files;
pub mod load;

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use crate::proto::v1::dynamics_client::DynamicsClient;

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

#[derive(Debug, thiserror::Error)]
#[error("cannot reach the server at {uri}: {message}")]
pub struct ConnectError {
    pub uri: String,
    pub message: String,
}

/// One connection to the server, answers of up to 64 MiB.
pub async fn connect(connection: &Connection) -> Result<Client, ConnectError> {
    let failed = |message: String| ConnectError { uri: connection.uri.clone(), message };
    let mut endpoint = Endpoint::from_shared(connection.uri.clone()).map_err(|e| failed(e.to_string()))?;
    if connection.uri.starts_with("https://") {
        // No system roots are built in: the CA that signed the server's certificate is given.
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &connection.tls_ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| failed(e.to_string()))?;
    }
    let token = match &connection.token {
        Some(token) => Some(format!("Bearer {token}").parse().map_err(|_| failed("the token holds characters a header cannot".into()))?),
        None => None,
    };
    let channel = endpoint.connect().await.map_err(|e| failed(e.to_string()))?;
    Ok(DynamicsClient::with_interceptor(channel, BearerToken(token)).max_decoding_message_size(64 << 20))
}
