//! The equiserve gRPC server.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use clap::Parser;
use equiserve::{
    logging::{LogFormat, init_logging},
    onnx::{ExecutionDevice, init_runtime},
    serve::{
        DynamicsCore, Limits, ModelControl, ModelRepository, PoolConfig,
        grpc::{ServerOptions, access::AccessTokens, serve, serve_metrics, shutdown_signal},
        metrics,
        rest::{RestOptions, serve_rest, tls_acceptor},
    },
};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Serves the ONNX models of a model repository over gRPC (equiserve.v1.Dynamics, the
/// Open Inference Protocol / KServe v2 with Triton's streaming and repository
/// extensions, grpc.health.v1, server reflection).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The model repository: <name>/<version>/ folders (Triton's layout) or <name>/
    /// folders (version 1), each holding model.onnx and card.json.
    #[arg(long, env = "EQUISERVE_MODELS_DIR", default_value = "models")]
    models_dir: PathBuf,
    /// When models are (re)loaded: once at start (none), also when their files change
    /// (poll), or also on RepositoryModelLoad/Unload calls with an admin token (explicit).
    #[arg(long, env = "EQUISERVE_MODEL_CONTROL", value_enum, default_value = "none")]
    model_control: ModelControl,
    /// With --model-control explicit: the models to load at start (repeat, or separate
    /// with commas), as Triton's --load-model; others wait for a RepositoryModelLoad.
    /// Default, or `*`: every model in the repository.
    #[arg(long, env = "EQUISERVE_LOAD_MODEL", value_delimiter = ',')]
    load_model: Vec<String>,
    /// Seconds between reads of the repository with --model-control poll.
    #[arg(long, env = "EQUISERVE_REPOSITORY_POLL", default_value_t = 15.0)]
    repository_poll: f64,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "EQUISERVE_ADDR", default_value = "127.0.0.1:50051")]
    addr: String,
    /// Where models run: cuda when ONNX Runtime can use a GPU (auto), or forced.
    #[arg(long, env = "EQUISERVE_DEVICE", value_enum, default_value = "auto")]
    device: ExecutionDevice,
    /// The ONNX Runtime library to load; by default the project's .ort/lib, then the system's.
    #[arg(long, env = "EQUISERVE_ORT_LIB")]
    ort_lib: Option<PathBuf>,
    /// Sessions (worker threads) per model; concurrent requests run in parallel up to this.
    /// Default: one per CPU core on the CPU, 2 on CUDA.
    #[arg(long, env = "EQUISERVE_WORKERS")]
    workers: Option<usize>,
    /// ONNX Runtime intra-op threads per session.
    #[arg(long, env = "EQUISERVE_THREADS_PER_WORKER", default_value_t = PoolConfig::default().threads_per_worker)]
    threads_per_worker: usize,
    /// Requests per worker that may be admitted (waiting or running) before
    /// RESOURCE_EXHAUSTED is returned.
    #[arg(long, env = "EQUISERVE_QUEUE_PER_WORKER", default_value_t = PoolConfig::default().queue_per_worker)]
    queue_per_worker: usize,
    /// Most frames in one ONNX Runtime call: waiting requests and rollout steps are
    /// batched up to this, larger requests split.
    #[arg(long, env = "EQUISERVE_MAX_BATCH_FRAMES", default_value_t = PoolConfig::default().max_batch_frames)]
    max_batch_frames: usize,
    /// Keep ONNX Runtime's CPU memory arena in every session: large batches (ensemble
    /// rollouts) run faster (1.01–1.04× for 1,024 sampled systems of the default model,
    /// 1.6× for graphs with larger intermediates), but each session keeps the memory of its
    /// largest call (at most --max-call-bytes) for good, beside what --memory-budget
    /// accounts for.
    #[arg(long, env = "EQUISERVE_CPU_ARENA")]
    cpu_arena: bool,
    /// How long a free session waits for more requests to fill its batch, in
    /// microseconds; 0 runs at once whatever is waiting (more latency buys throughput).
    #[arg(long, env = "EQUISERVE_MAX_QUEUE_DELAY_US", default_value_t = 0)]
    max_queue_delay_us: u64,
    /// Seconds of work a model's admitted requests may hold, waiting or running
    /// (frames × its seconds per frame measured at load, over its sessions): past it,
    /// requests get RESOURCE_EXHAUSTED at once instead of queueing behind minutes of a
    /// heavy model's work. A request alone is always admitted.
    #[arg(long, env = "EQUISERVE_MAX_QUEUED_SECONDS", default_value_t = PoolConfig::default().max_queued_seconds)]
    max_queued_seconds: f64,
    /// Memory all models' calls may hold at once (e.g. 8GiB; default: half of the
    /// machine's or the container's). Each model's cost per frame is measured at load;
    /// its calls are cut to fit and wait for room beside running ones.
    #[arg(long, env = "EQUISERVE_MEMORY_BUDGET", value_parser = equiserve::serve::memory::parse_bytes)]
    memory_budget: Option<u64>,
    /// Memory one model call may hold (e.g. 256MiB): larger batches of heavy models run
    /// as several calls.
    #[arg(long, env = "EQUISERVE_MAX_CALL_BYTES", value_parser = equiserve::serve::memory::parse_bytes, default_value = "256MiB")]
    max_call_bytes: u64,
    /// Largest batch of frames one Predict may send, and of systems one ensemble Rollout.
    #[arg(long, env = "EQUISERVE_MAX_BATCH", default_value_t = 4096)]
    max_batch: usize,
    /// Most system-steps one Rollout may ask for (systems × steps). The default admits an
    /// ensemble of 1,024 × 10,000 steps (about 20 s of the default model on 2 cores).
    #[arg(long, env = "EQUISERVE_MAX_ROLLOUT_STEPS", default_value_t = 20_000_000)]
    max_rollout_steps: u64,
    /// Rollouts running at once; once admitted, a rollout is never ended by other traffic.
    #[arg(long, env = "EQUISERVE_MAX_ROLLOUTS", default_value_t = 256)]
    max_rollouts: usize,
    /// Seconds a rollout may wait for its client to take a frame before it is ended
    /// (DEADLINE_EXCEEDED) and its place freed.
    #[arg(long, env = "EQUISERVE_ROLLOUT_STALL_TIMEOUT", default_value_t = 60.0)]
    rollout_stall_timeout: f64,
    /// After SIGTERM or Ctrl-C, seconds in-flight calls may take to finish before they
    /// are cut and the server exits (a second signal cuts them at once).
    #[arg(long, env = "EQUISERVE_SHUTDOWN_GRACE", default_value_t = ServerOptions::default().shutdown_grace.as_secs_f64())]
    shutdown_grace: f64,
    /// Seconds between HTTP/2 and TCP keepalive pings; a peer silent for as long is dropped.
    #[arg(long, env = "EQUISERVE_KEEPALIVE", default_value_t = ServerOptions::default().keepalive.as_secs_f64())]
    keepalive: f64,
    /// PEM certificate chain of the server: serve over TLS (with --tls-key).
    #[arg(long, env = "EQUISERVE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "EQUISERVE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): clients must then show a certificate it signed (mutual TLS).
    #[arg(long, env = "EQUISERVE_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// File of `ROLE TOKEN` lines (role: inference or admin): every call but health must
    /// then carry `authorization: Bearer TOKEN`.
    #[arg(long, env = "EQUISERVE_AUTH_TOKEN_FILE")]
    auth_token_file: Option<PathBuf>,
    /// Without --auth-token-file, let anyone who reaches the server load and unload
    /// models under --model-control explicit (otherwise those calls are refused); for a
    /// network you trust.
    #[arg(long, env = "EQUISERVE_ALLOW_UNAUTHENTICATED_ADMIN")]
    allow_unauthenticated_admin: bool,
    /// Log lines as text (coloured only on a terminal) or as JSON objects.
    #[arg(long, env = "EQUISERVE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Serve Prometheus metrics over HTTP at http://ADDR/metrics (e.g. 127.0.0.1:9464),
    /// behind the same tokens as the API when --auth-token-file is given; off when absent.
    #[arg(long, env = "EQUISERVE_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Also serve the Open Inference Protocol over HTTP/REST (KServe v2: health,
    /// metadata, infer with JSON or binary tensors, repository, statistics) at ADDR,
    /// e.g. 0.0.0.0:8000, behind the same tokens and with the same TLS (--tls-cert,
    /// --tls-key, --tls-client-ca); off when absent.
    #[arg(long, env = "EQUISERVE_HTTP_ADDR")]
    http_addr: Option<std::net::SocketAddr>,
}

/// Largest HTTP request body read: a JSON request of the largest batch with its window
/// fits (4,096 frames of 4 × 36 floats as text, about 7 MB).
const HTTP_MAX_BODY: usize = 32 << 20;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format, "info,ort=warn", false);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("equiserve: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    init_runtime(args.ort_lib.as_deref())?;
    let tokens = args.auth_token_file.as_deref().map(AccessTokens::from_file).transpose()?;
    if let Some(address) = args.metrics_addr {
        let handle = metrics::prometheus_builder().install_recorder().map_err(|e| format!("cannot record metrics: {e}"))?;
        metrics::describe();
        let listener = TcpListener::bind(address).await.map_err(|e| format!("cannot serve metrics on {address}: {e}"))?;
        let address = listener.local_addr()?;
        tokio::spawn(serve_metrics(listener, handle, tokens.clone()));
        tracing::info!(%address, "Prometheus metrics at http://{address}/metrics");
    }
    let pool = PoolConfig {
        workers: args.workers,
        threads_per_worker: args.threads_per_worker,
        queue_per_worker: args.queue_per_worker,
        max_batch_frames: args.max_batch_frames,
        max_queue_delay: std::time::Duration::from_micros(args.max_queue_delay_us),
        memory_budget: args.memory_budget.unwrap_or_else(|| PoolConfig::default().memory_budget),
        max_call_bytes: args.max_call_bytes,
        max_queued_seconds: seconds("--max-queued-seconds", args.max_queued_seconds)?.as_secs_f64(),
        cpu_arena: args.cpu_arena,
    };
    tracing::info!(memory_budget = pool.memory_budget, "memory budget of all model calls (bytes)");
    let models_dir = args.models_dir.clone();
    let device = args.device;
    let (control, load_models) = (args.model_control, args.load_model);
    if !load_models.is_empty() && control != ModelControl::Explicit {
        return Err("--load-model needs --model-control explicit (the other modes load every model in the repository)".into());
    }
    let every_model = load_models.is_empty() || load_models.iter().any(|name| name == "*");
    let registry = tokio::task::spawn_blocking(move || {
        if every_model {
            ModelRepository::open(&models_dir, device, pool, control)
        } else {
            ModelRepository::open_explicit(&models_dir, device, pool, &load_models)
        }
    })
    .await??;
    let limits = Limits {
        max_batch: args.max_batch,
        max_rollout_steps: args.max_rollout_steps,
        max_rollouts: args.max_rollouts,
        rollout_stall_timeout: seconds("--rollout-stall-timeout", args.rollout_stall_timeout)?,
    };
    let listener = TcpListener::bind(&args.addr).await.map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let address = listener.local_addr()?;
    if control == ModelControl::Explicit && tokens.is_none() {
        if args.allow_unauthenticated_admin {
            tracing::warn!(%address, "--allow-unauthenticated-admin: anyone who reaches the server can load and unload models");
        } else {
            tracing::info!("no --auth-token-file: RepositoryModelLoad and RepositoryModelUnload are refused (see --allow-unauthenticated-admin)");
        }
    }
    tracing::info!(%address, models = ?registry.names(), "serving");
    // For people and scripts reading text; a JSON log's "serving" line has the address.
    if args.log_format == LogFormat::Text {
        println!("equiserve listening on {address}");
    }
    let core = Arc::new(DynamicsCore::new(Arc::new(registry), limits));
    if let Some(http_addr) = args.http_addr {
        let listener = TcpListener::bind(http_addr).await.map_err(|e| format!("cannot serve HTTP on {http_addr}: {e}"))?;
        let http_address = listener.local_addr()?;
        let tls = rest_tls(args.tls_cert.as_deref(), args.tls_key.as_deref(), args.tls_client_ca.as_deref())?;
        let rest = RestOptions { tokens: tokens.clone(), allow_unauthenticated_admin: args.allow_unauthenticated_admin, max_body_bytes: HTTP_MAX_BODY, tls };
        tokio::spawn(serve_rest(listener, Arc::clone(&core), rest));
        tracing::info!(http_address = %http_address, "Open Inference Protocol over HTTP at http://{http_address}/v2");
    }
    let options = ServerOptions {
        shutdown_grace: seconds("--shutdown-grace", args.shutdown_grace)?,
        keepalive: seconds("--keepalive", args.keepalive)?,
        tokens,
        tls: tls_config(args.tls_cert.as_deref(), args.tls_key.as_deref(), args.tls_client_ca.as_deref())?,
        repository_poll: seconds("--repository-poll", args.repository_poll)?,
        allow_unauthenticated_admin: args.allow_unauthenticated_admin,
    };
    serve(core, listener, shutdown_signal(), options).await
}

/// The TLS set-up the flags ask for, its files read now so that a bad path fails at start.
fn tls_config(cert: Option<&Path>, key: Option<&Path>, client_ca: Option<&Path>) -> Result<Option<ServerTlsConfig>, String> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let (Some(cert), Some(key)) = (cert, key) else { return Ok(None) };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

/// The HTTP port's TLS, from the same files as the gRPC port's.
fn rest_tls(cert: Option<&Path>, key: Option<&Path>, client_ca: Option<&Path>) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let (Some(cert), Some(key)) = (cert, key) else { return Ok(None) };
    let client_ca = client_ca.map(read).transpose()?;
    tls_acceptor(&read(cert)?, &read(key)?, client_ca.as_deref()).map(Some).map_err(|e| format!("--http-addr TLS: {e}"))
}

fn seconds(flag: &str, value: f64) -> Result<std::time::Duration, String> {
    std::time::Duration::try_from_secs_f64(value).map_err(|_| format!("{flag} {value}: expected a number of seconds ≥ 0"))
}
