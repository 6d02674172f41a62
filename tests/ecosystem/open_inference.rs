//! The Open Inference Protocol (KServe v2) as its official client sees it: the
//! unmodified `tritonclient[grpc]` package runs tests/tritonclient/check.py against the
//! server; its tensors are then compared with ONNX Runtime and with the server's own Rollout.

use std::{path::Path, process::Command};

use crate::common::{LIMITS, TEST_SERVER_OPTIONS, TestServer, copy_model, output_within, shipped_model, test_python, trained_models_dir};
use equiserve::{
    onnx::{ExecutionDevice, OnnxModel, Signature},
    proto::v1::RolloutRequest,
    serve::{ModelControl, PoolConfig},
};
use ndarray::{Array, Array3, Array4, ArrayD, Axis, Ix3, Ix4};

fn read(npz: &mut ndarray_npy::NpzReader<std::fs::File>, name: &str) -> ArrayD<f32> {
    npz.by_name(&format!("{name}.npy")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn max_difference<D: ndarray::Dimension>(a: &Array<f32, D>, b: &Array<f32, D>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// The model's own ONNX Runtime session, with the signature its card gives (a
/// stochastic model's graph also gives dx_std).
fn direct(model_dir: &Path, history_frames: usize) -> OnnxModel {
    let card: equiserve::card::ModelCard = crate::common::card_of(model_dir);
    assert_eq!(card.onnx.signature.inputs, Signature::dynamics(history_frames).inputs);
    OnnxModel::load(&model_dir.join("model.onnx"), &card.onnx.signature, ExecutionDevice::Cpu, 1).expect("loads")
}

/// A repository for both protocols' checks: mlp version 1 trained here and version 2
/// the shipped one, pairforce-h4 in the flat layout.
fn protocol_repository() -> tempfile::TempDir {
    let repository = tempfile::tempdir().expect("temp dir");
    copy_model(&trained_models_dir().join("mlp"), &repository.path().join("mlp/1"));
    copy_model(&shipped_model("mlp"), &repository.path().join("mlp/2"));
    copy_model(&shipped_model("pairforce-h4"), &repository.path().join("pairforce-h4"));
    repository
}

/// What a tritonclient check script saved, against ONNX Runtime on the same tensors:
/// mlp's dx per version, and pairforce-h4's dx and dx_std from its window. Gives the
/// file, for what else it holds, and the window the script sent.
fn served_tensors_match_onnx_runtime(results: &Path) -> (ndarray_npy::NpzReader<std::fs::File>, Array3<f32>, Array4<f32>) {
    let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(results).expect("results")).expect("npz");
    let batch = read(&mut npz, "batch").into_dimensionality::<Ix3>().expect("[B, 12, 3]");
    for (name, dir) in [("dx", shipped_model("mlp")), ("dx_v1", trained_models_dir().join("mlp"))] {
        let served = read(&mut npz, name).into_dimensionality::<Ix3>().expect("[B, 12, 3]");
        let expected = direct(&dir, 1).run(batch.view()).expect("runs");
        assert!(max_difference(&served, &expected) <= 1e-6, "{name}: {}", max_difference(&served, &expected));
    }
    let now = read(&mut npz, "now").into_dimensionality::<Ix3>().expect("[B, 12, 3]");
    let previous: Array4<f32> = read(&mut npz, "previous").into_dimensionality::<Ix4>().expect("[B, 3, 12, 3]");
    let (expected_dx, expected_std) = direct(&shipped_model("pairforce-h4"), 4).run_window_with_std(now.view(), previous.view()).expect("runs");
    let served_dx = read(&mut npz, "history_dx").into_dimensionality::<Ix3>().expect("[B, 12, 3]");
    let served_std = read(&mut npz, "history_std").into_dimensionality::<ndarray::Ix2>().expect("[B, 12]");
    assert!(max_difference(&served_dx, &expected_dx) <= 1e-6, "history dx: {}", max_difference(&served_dx, &expected_dx));
    assert!(max_difference(&served_std, &expected_std.expect("a stochastic model")) <= 1e-6, "history dx_std");
    (npz, now, previous)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_works_unmodified() {
    let Some(python) = test_python("the tritonclient test") else { return };
    let repository = protocol_repository();
    let pool = PoolConfig { workers: Some(2), queue_per_worker: 16, ..PoolConfig::default() };
    let mut server = TestServer::start_repository(repository.path(), pool, ModelControl::Explicit, TEST_SERVER_OPTIONS).await;

    let results = repository.path().join("results.npz");
    let address = server.uri.trim_start_matches("http://").to_string();
    let (script, out) = (Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tritonclient/check.py"), results.clone());
    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(python);
        command.arg(script).arg(address).arg(out).arg(LIMITS.max_batch.to_string());
        output_within(command, std::time::Duration::from_secs(300))
    })
    .await
    .expect("joins");
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "check.py failed:\n{log}");
    assert!(log.contains("every check passed"), "{log}");

    // ModelInfer's tensors are what ONNX Runtime computes from the same inputs, per version.
    let (mut npz, now, previous) = served_tensors_match_onnx_runtime(&results);

    // The streamed rollout equals the server's own Rollout of the same start (steps 3, 6, 7).
    let start = read(&mut npz, "start").into_dimensionality::<Ix3>().expect("[B, 12, 3]");
    let rolled = read(&mut npz, "rolled").into_dimensionality::<Ix4>().expect("[frames, B, 12, 3]");
    let request = RolloutRequest { model: "mlp".into(), positions: start.iter().copied().collect(), steps: 7, emit_every: 3, ..Default::default() };
    let mut stream = server.client.rollout(request).await.expect("rollout").into_inner();
    let mut own = Vec::new();
    while let Some(frame) = stream.message().await.expect("frame") {
        own.push(Array3::from_shape_vec((frame.batch as usize, 12, 3), frame.positions).expect("[B, 12, 3]"));
    }
    assert_eq!(own.len(), rolled.len_of(Axis(0)));
    for (index, frame) in own.iter().enumerate() {
        assert_eq!(&rolled.index_axis(Axis(0), index), frame, "frame {index}");
    }

    // A sampled rollout's seed gives the same trajectory through either protocol.
    let sampled = read(&mut npz, "sampled").into_dimensionality::<Ix4>().expect("[frames, B, 12, 3]");
    let request = RolloutRequest {
        model: "pairforce-h4".into(),
        positions: now.iter().copied().collect(),
        previous: previous.iter().copied().collect(),
        steps: 5,
        emit_every: 1,
        sample: true,
        seed: Some(42),
        ..Default::default()
    };
    let mut stream = server.client.rollout(request).await.expect("rollout").into_inner();
    let mut index = 0;
    while let Some(frame) = stream.message().await.expect("frame") {
        assert_eq!(frame.seed, Some(42));
        let frame = Array3::from_shape_vec((frame.batch as usize, 12, 3), frame.positions).expect("[B, 12, 3]");
        assert_eq!(sampled.index_axis(Axis(0), index), frame, "sampled frame {index}");
        index += 1;
    }
    assert_eq!(index, 5);
    server.shutdown().await;
}

/// The same protocol over HTTP/REST: the unmodified `tritonclient[http]` runs
/// tests/tritonclient/check_http.py (binary and JSON tensors, metadata, statistics, the
/// repository); its tensors are compared with ONNX Runtime; raw requests check the status
/// codes, error bodies and tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_http_works_unmodified() {
    use equiserve::serve::{
        grpc::access::AccessTokens,
        rest::{RestOptions, serve_rest},
    };
    let Some(python) = test_python("the tritonclient.http test") else { return };
    let repository = protocol_repository();
    let pool = PoolConfig { workers: Some(2), queue_per_worker: 16, ..PoolConfig::default() };
    let server = TestServer::start_repository(repository.path(), pool, ModelControl::Explicit, TEST_SERVER_OPTIONS).await;
    let rest = |tokens: Option<AccessTokens>, allow_unauthenticated_admin: bool| {
        let core = std::sync::Arc::clone(&server.core);
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let address = listener.local_addr().expect("address");
            let options = RestOptions { tokens, allow_unauthenticated_admin, max_body_bytes: 1 << 20, tls: None };
            (address, tokio::spawn(serve_rest(listener, core, options)))
        }
    };
    let (address, open) = rest(None, true).await;

    let results = repository.path().join("http.npz");
    let (script, out) = (Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tritonclient/check_http.py"), results.clone());
    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(python);
        command.arg(script).arg(address.to_string()).arg(out);
        output_within(command, std::time::Duration::from_secs(300))
    })
    .await
    .expect("joins");
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && log.contains("every check passed"), "check_http.py failed:\n{log}");
    served_tensors_match_onnx_runtime(&results);

    // Raw HTTP: codes and the protocol's error bodies.
    let ask = |address: std::net::SocketAddr, request: String| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    };
    let post = |path: &str, body: &str, extra: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}", body.len())
    };
    let get = |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n");
    // Nested JSON data, as curl users write it.
    let frame: Vec<Vec<f32>> = (0..12).map(|p| vec![0.1 * p as f32, 0.05, 0.0]).collect();
    let body = serde_json::json!({ "inputs": [{ "name": "positions", "shape": [1, 12, 3], "datatype": "FP32", "data": [frame] }] }).to_string();
    let answer = ask(address, post("/v2/models/mlp/infer", &body, "")).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains(r#""name":"dx""#) && answer.contains(r#""model_version":"2""#), "{answer}");
    let answer = ask(address, post("/v2/models/nope/infer", &body, "")).await;
    assert!(answer.starts_with("HTTP/1.1 404") && answer.contains(r#"{"error":"unknown model 'nope'"#), "{answer}");
    let answer = ask(address, post("/v2/models/mlp/infer", "{not json", "")).await;
    assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("not an inference request"), "{answer}");
    assert!(ask(address, get("/v1/models", "")).await.starts_with("HTTP/1.1 404"));
    let big = "x".repeat((1 << 20) + 1);
    assert!(ask(address, post("/v2/models/mlp/infer", &big, "")).await.starts_with("HTTP/1.1 413"));
    open.abort();

    // Tokens: probes open, inference needs a token, repository changes an admin's.
    let tokens = AccessTokens::parse("inference inference-token-0123\nadmin admin-token-456789ab").expect("tokens");
    let (address, guarded) = rest(Some(tokens), false).await;
    assert!(ask(address, get("/v2/health/ready", "")).await.starts_with("HTTP/1.1 200"));
    assert!(ask(address, get("/v2/models/mlp/ready", "")).await.starts_with("HTTP/1.1 200"));
    assert!(ask(address, post("/v2/models/mlp/infer", &body, "")).await.starts_with("HTTP/1.1 401"));
    let inference = "Authorization: Bearer inference-token-0123\r\n";
    assert!(ask(address, post("/v2/models/mlp/infer", &body, inference)).await.starts_with("HTTP/1.1 200"));
    assert!(ask(address, post("/v2/repository/models/mlp/unload", "", inference)).await.starts_with("HTTP/1.1 403"));
    guarded.abort();
    server.shutdown().await;
}
