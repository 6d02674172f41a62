//! Clients of a running server (the `serve` feature's gRPC API): what
//! `equiserve-client` does with files, and its load generator (`bench`).

pub mod files;
pub mod load;

/// A server address as typed (`host:port`, as the server's `--addr` takes it) or as a URI.
pub fn endpoint_uri(addr: &str) -> String {
    if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") }
}
