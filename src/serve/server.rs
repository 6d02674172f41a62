//! The gRPC server: the Dynamics service beside health and reflection, and graceful
//! shutdown.

use std::future::Future;

use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};

use super::DynamicsService;
use crate::proto::{FILE_DESCRIPTOR_SET, v1::dynamics_server::DynamicsServer};

/// Serves `service` on `listener` until `shutdown` completes, then drains in-flight calls.
pub async fn serve(
    service: DynamicsService,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<DynamicsServer<DynamicsService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(DynamicsServer::new(service))
        // Without TCP_NODELAY every unary call waits out the peer's delayed ACK (~40 ms).
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown)
        .await?;
    Ok(())
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
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
