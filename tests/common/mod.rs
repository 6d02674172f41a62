//! Shared by the integration tests: one trained model directory per test binary and
//! an in-process server on an ephemeral port.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod fixtures;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, OnceLock},
    time::Duration,
};

use equiserve::{
    onnx::ExecutionDevice,
    proto::v1::dynamics_client::DynamicsClient,
    serve::{
        DynamicsCore, Limits, ModelControl, ModelRepository, PoolConfig, RolloutCounter,
        grpc::{ServerOptions, serve},
    },
};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::transport::Channel;

/// A short grace, so that a test leaving a stream open ends quickly; a quick repository poll.
pub const TEST_SERVER_OPTIONS: ServerOptions = ServerOptions {
    shutdown_grace: Duration::from_secs(1),
    keepalive: Duration::from_secs(20),
    tokens: None,
    tls: None,
    repository_poll: Duration::from_millis(200),
    // The tests change repositories without tokens; the guard has its own tests.
    allow_unauthenticated_admin: true,
};

pub const LIMITS: Limits = Limits { max_batch: 64, max_rollout_steps: 1000, max_rollouts: 40, rollout_stall_timeout: Duration::from_secs(60) };

/// The reference values the tests check against (e3nn 0.6.0's, and networks saved by
/// e3nn as a user would), copied into the repository from the study's shared fixtures.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The study's trajectory, shipped in the repository.
pub fn study_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/paths.npz")
}

/// `path` (relative to the project), when it is there as `present` says; otherwise
/// `what` is reported skipped because of `why` (see [`skip`]).
fn beside_the_project(path: &str, present: fn(&Path) -> bool, what: &str, why: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if present(&path) {
        return Some(path);
    }
    skip(what, why);
    None
}

/// Says that `what` is skipped and why, on the process's own stderr (the test harness
/// captures `eprintln!` of passing tests, which would hide it); under CI, where every
/// fixture must be present, it fails instead.
pub fn skip(what: &str, why: &str) {
    use std::io::Write;
    if std::env::var_os("CI").is_some() {
        panic!("{what}: {why}, and CI must run every test");
    }
    let _ = writeln!(std::io::stderr(), "skipped: {what}: {why}");
}

pub fn train_export() -> Command {
    Command::new(env!("CARGO_BIN_EXE_train-export"))
}

/// Runs `command` to completion, failing the test with its stderr where it fails.
pub fn run_ok(command: &mut Command) {
    let output = command.output().expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// The card of the model exported to `model_dir`, as a `serde_json::Value` or a `ModelCard`.
pub fn card_of<T: serde::de::DeserializeOwned>(model_dir: &Path) -> T {
    serde_json::from_str(&std::fs::read_to_string(model_dir.join("card.json")).expect("card")).expect("a card")
}

/// `train-export import-e3nn` of the network saved in `fixture` (kwargs.json and
/// weights.safetensors) into the model folder `out`; asserts that it succeeds.
pub fn import_fixture(fixture: &Path, out: &Path) {
    run_ok(
        train_export()
            .args(["import-e3nn", "--kwargs"])
            .arg(fixture.join("kwargs.json"))
            .arg("--weights")
            .arg(fixture.join("weights.safetensors"))
            .arg("--out")
            .arg(out),
    );
}

/// `train-export --model mlp` on a short simulated trajectory, run once per test binary.
pub fn trained_models_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let output = train_export()
            .args(["--model", "mlp", "--frames", "400", "--epochs", "3", "--seed", "3", "--out"])
            .arg(dir.path())
            .output()
            .expect("train-export runs");
        assert!(output.status.success(), "train-export failed: {}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        dir
    })
    .path()
}

/// A Prometheus recorder for this test binary (metrics recorders are process-wide).
pub fn prometheus() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = equiserve::serve::metrics::prometheus_builder().install_recorder().expect("first recorder");
            equiserve::serve::metrics::describe();
            handle
        })
        .clone()
}

pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub uri: String,
    pub client: DynamicsClient<Channel>,
    pub channel: Channel,
    pub rollouts_in_progress: RolloutCounter,
    pub core: Arc<DynamicsCore>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(models_dir: &Path) -> Self {
        Self::start_with(models_dir, PoolConfig { workers: Some(2), queue_per_worker: 16, ..PoolConfig::default() }).await
    }

    pub async fn start_with(models_dir: &Path, pool: PoolConfig) -> Self {
        Self::start_with_options(models_dir, pool, TEST_SERVER_OPTIONS).await
    }

    pub async fn start_with_options(models_dir: &Path, pool: PoolConfig, options: ServerOptions) -> Self {
        Self::start_repository(models_dir, pool, ModelControl::None, options).await
    }

    pub async fn start_repository(models_dir: &Path, pool: PoolConfig, control: ModelControl, options: ServerOptions) -> Self {
        let registry = ModelRepository::open(models_dir, ExecutionDevice::Cpu, pool, control).expect("models load");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let core = Arc::new(DynamicsCore::new(Arc::new(registry), LIMITS));
        let rollouts_in_progress = core.rollouts_in_progress();
        let served = Arc::clone(&core);
        let task = tokio::spawn(async move {
            serve(
                served,
                listener,
                async {
                    let _ = stopped.await;
                },
                options,
            )
            .await
            .expect("server runs");
        });
        let uri = format!("http://{address}");
        let channel = Channel::from_shared(uri.clone()).expect("uri").connect().await.expect("connect");
        Self { uri, client: DynamicsClient::new(channel.clone()), channel, rollouts_in_progress, core, stop: Some(stop), task }
    }

    /// Asks the server to shut down gracefully and waits until it has.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("server task ends cleanly");
    }
}

/// The shipped model folder `models/<name>` of the project.
pub fn shipped_model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(name)
}

/// Copies a model folder's card and ONNX file into `to` (created), as a user deploys one.
pub fn copy_model(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("model folder");
    for file in ["card.json", "model.onnx"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap_or_else(|e| panic!("{}: {e}", from.join(file).display()));
    }
}

/// The Python of the project-local virtual environment that scripts/test installs
/// (scripts/setup-test-python: tritonclient, kubernetes-validate), if it is there.
pub fn test_python(what: &str) -> Option<PathBuf> {
    beside_the_project(".venv-test/bin/python", Path::is_file, what, "no .venv-test (scripts/setup-test-python installs it; scripts/test runs it)")
}

/// Runs `command` to its end, its output collected, killing it after `limit`: a client
/// script that waits forever on a server fails its test with what it printed instead of
/// holding CI up.
pub fn output_within(mut command: Command, limit: std::time::Duration) -> std::process::Output {
    use std::io::Read;
    let mut child = command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("the command starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
            panic!("{command:?} ran past {limit:?}; it printed:\n{}{}", String::from_utf8_lossy(&out), String::from_utf8_lossy(&err));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::process::Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() }
}
