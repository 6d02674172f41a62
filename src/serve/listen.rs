//! Taking connections on the ports served by hand (HTTP/REST, `/metrics`).

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The next connection on `listener`. An error (out of file descriptors, say) is logged
/// for `port` and retried after a moment rather than in a spin.
pub async fn accept(listener: &TcpListener, port: &str) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return stream,
            Err(e) => {
                tracing::warn!(error = %e, "{port}: cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
