//! The gRPC server: the Dynamics service and the Open Inference Protocol beside health
//! and reflection, the repository poll, and graceful shutdown.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::oneshot};
use tonic::transport::{Server, ServerTlsConfig, server::TcpIncoming};

use super::{
    access::{AccessLayer, AccessTokens},
    dynamics::DynamicsService,
    inference::InferenceService,
};
use crate::proto::{FILE_DESCRIPTOR_SET, inference::grpc_inference_service_server::GrpcInferenceServiceServer, v1::dynamics_server::DynamicsServer};
use crate::serve::{DynamicsCore, ModelControl, ModelRepository, listen::accept};

/// How long ended rollouts get to send their UNAVAILABLE before connections are cut.
const UNAVAILABLE_FLUSH: Duration = Duration::from_millis(500);

/// How the server treats connections, callers and its own shutdown.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// After the shutdown signal, how long in-flight calls (rollouts above all) may take
    /// to finish before they are cut and the server returns.
    pub shutdown_grace: Duration,
    /// HTTP/2 and TCP keepalive: a peer that does not answer a ping within this is
    /// disconnected, so that dead connections do not hold streams and file descriptors.
    pub keepalive: Duration,
    /// Bearer tokens every call but health must carry; `None`: calls are open.
    pub tokens: Option<AccessTokens>,
    /// TLS (rustls): the server's certificate and key, and a client CA when clients must
    /// show certificates too; `None`: plaintext.
    pub tls: Option<ServerTlsConfig>,
    /// How often a `poll`-controlled repository is re-read.
    pub repository_poll: Duration,
    /// Without tokens, let anyone load and unload models of an explicitly controlled
    /// repository (otherwise those calls are refused).
    pub allow_unauthenticated_admin: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(30),
            keepalive: Duration::from_secs(60),
            tokens: None,
            tls: None,
            repository_poll: Duration::from_secs(15),
            allow_unauthenticated_admin: false,
        }
    }
}

/// Serves `core` on `listener` until `shutdown` completes, then drains in-flight
/// calls for at most the grace (a second Ctrl-C or SIGTERM ends them at once).
pub async fn serve(
    core: Arc<DynamicsCore>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    options: ServerOptions,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<DynamicsServer<DynamicsService>>().await;
    health_reporter.set_serving::<GrpcInferenceServiceServer<InferenceService>>().await;
    let reflection = tonic_reflection::server::Builder::configure().register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET).build_v1()?;
    let rollouts = core.rollout_ender();
    let poll = (core.registry().control() == ModelControl::Poll).then(|| tokio::spawn(poll_repository(Arc::clone(core.registry()), options.repository_poll)));
    let _stop_polling = poll.map(AbortOnDrop);
    let (draining, drain_started) = oneshot::channel::<()>();
    let mut builder = Server::builder();
    if let Some(tls) = options.tls {
        builder = builder.tls_config(tls)?;
    }
    let server = builder
        .http2_keepalive_interval(Some(options.keepalive))
        .http2_keepalive_timeout(Some(options.keepalive))
        .tcp_keepalive(Some(options.keepalive))
        .layer(AccessLayer::new(options.tokens, options.allow_unauthenticated_admin))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(DynamicsServer::new(DynamicsService::new(Arc::clone(&core))))
        .add_service(GrpcInferenceServiceServer::new(InferenceService::new(core)))
        // Without TCP_NODELAY every unary call waits out the peer's delayed ACK (~40 ms).
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async move {
            shutdown.await;
            // Readiness probes ("" is the whole server) see the drain and stop sending work.
            let reporter = &health_reporter;
            reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            reporter.set_not_serving::<DynamicsServer<DynamicsService>>().await;
            reporter.set_not_serving::<GrpcInferenceServiceServer<InferenceService>>().await;
            let _ = draining.send(());
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return Ok(result?),
        Ok(()) = drain_started => {}
    }
    tokio::select! {
        result = &mut server => return Ok(result?),
        () = tokio::time::sleep(options.shutdown_grace) => {
            tracing::warn!(grace = ?options.shutdown_grace, "calls still in flight at the end of the shutdown grace; ending them");
        }
        () = shutdown_signal() => tracing::warn!("second shutdown signal; ending in-flight calls"),
    }
    // Rollouts end with UNAVAILABLE, which clients that read get in a moment; what is
    // still open after it (a client that does not read) is cut with its connection.
    rollouts.end_all();
    if let Ok(result) = tokio::time::timeout(UNAVAILABLE_FLUSH, &mut server).await {
        result?;
    }
    Ok(())
}

/// Re-reads the repository every `every`: new and changed versions load (a failed one
/// leaves the version it would replace serving), removed ones unload.
async fn poll_repository(registry: Arc<ModelRepository>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let registry = Arc::clone(&registry);
        match tokio::task::spawn_blocking(move || registry.sync(None)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cannot read the model repository"),
            Err(e) => tracing::error!(error = %e, "the repository poll stopped"),
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight calls (a second signal cuts them)");
}

/// Serves the Prometheus text of `handle` at `GET /metrics` on `listener` (404 for any
/// other path, 405 for another method), asking for a bearer token when `tokens` are
/// given; until the process ends. Each connection is its own task.
pub async fn serve_metrics(listener: tokio::net::TcpListener, handle: metrics_exporter_prometheus::PrometheusHandle, tokens: Option<AccessTokens>) {
    use http_body_util::Full;
    use hyper::{Method, Request, Response, StatusCode, body::Bytes, server::conn::http1, service::service_fn};
    use hyper_util::rt::TokioIo;

    let process = metrics_process::Collector::default();
    process.describe();
    loop {
        let stream = accept(&listener, "metrics").await;
        let (handle, tokens, process) = (handle.clone(), tokens.clone(), process.clone());
        let answer = service_fn(move |request: Request<hyper::body::Incoming>| {
            let reply = |status: StatusCode, body: String| {
                let mut response = Response::new(Full::new(Bytes::from(body)));
                *response.status_mut() = status;
                response
            };
            let allowed = tokens.as_ref().is_none_or(|tokens| tokens.admits(request.headers().get("authorization")));
            let response = match (request.method(), request.uri().path()) {
                (_, path) if path != "/metrics" => reply(StatusCode::NOT_FOUND, "metrics are at /metrics\n".into()),
                (&Method::GET, _) if !allowed => reply(StatusCode::UNAUTHORIZED, "send a valid token as 'authorization: Bearer TOKEN'\n".into()),
                (&Method::GET, _) => {
                    // Read at the scrape, so that the figures are the moment's.
                    process.collect();
                    reply(StatusCode::OK, handle.render())
                }
                _ => reply(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n".into()),
            };
            std::future::ready(Ok::<_, std::convert::Infallible>(response))
        });
        tokio::spawn(async move {
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), answer).await {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}
