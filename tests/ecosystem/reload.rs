//! Hot reload of the model repository under a running client loop: a good new version
//! swaps in with no failed request, broken ones are refused while the old version keeps
//! answering, and a rollout finishes on the version it started on.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::common::{TEST_SERVER_OPTIONS, TestServer, copy_model, shipped_model, trained_models_dir};
use equiserve::{
    onnx::ExecutionDevice,
    proto::{
        inference::{RepositoryIndexRequest, RepositoryModelLoadRequest, grpc_inference_service_client::GrpcInferenceServiceClient},
        v1::{PredictRequest, RolloutRequest, dynamics_client::DynamicsClient},
    },
    serve::{ModelControl, ModelRepository, PoolConfig, RepositoryError, VersionState},
};
use tokio_stream::StreamExt;
use tonic::{Code, transport::Channel};

fn pool() -> PoolConfig {
    PoolConfig { workers: Some(1), queue_per_worker: 64, ..PoolConfig::default() }
}

fn frame(seed: u64) -> Vec<f32> {
    (0..36).map(|i| ((i as u64 * 7 + seed * 13) % 17) as f32 * 0.05 - 0.4).collect()
}

/// Predicts in a loop until stopped; counts answers by version and failures.
struct ClientLoop {
    stop: Arc<AtomicBool>,
    answered: Arc<[AtomicUsize; 4]>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl ClientLoop {
    fn start(channel: Channel) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered: Arc<[AtomicUsize; 4]> = Arc::new(Default::default());
        let (stopped, counts) = (Arc::clone(&stop), Arc::clone(&answered));
        let task = tokio::spawn(async move {
            let mut client = DynamicsClient::new(channel);
            let mut failures = Vec::new();
            let mut seed = 0;
            while !stopped.load(Ordering::SeqCst) {
                seed += 1;
                match client.predict(PredictRequest { model: "mlp".into(), positions: frame(seed), ..Default::default() }).await {
                    Ok(answer) => {
                        let version: usize = answer.into_inner().version.parse().expect("a version number");
                        counts[version.min(3)].fetch_add(1, Ordering::SeqCst);
                    }
                    Err(status) => failures.push(format!("{:?}: {}", status.code(), status.message())),
                }
            }
            failures
        });
        Self { stop, answered, task }
    }

    fn answered_by(&self, version: usize) -> usize {
        self.answered[version].load(Ordering::SeqCst)
    }

    async fn failures(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the loop ends")
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state(server: &TestServer, version: u64) -> Option<VersionState> {
    server.core.registry().index().into_iter().find(|state| state.name == "mlp" && state.version == version)
}

/// A version appears whole: written into a hidden folder of the repository (which the
/// server skips), then renamed in.
fn deploy(from: &Path, repository: &Path, version: u64) {
    let staging = repository.join(format!(".staging-{version}"));
    copy_model(from, &staging);
    std::fs::rename(&staging, repository.join("mlp").join(version.to_string())).expect("rename");
}

async fn rollout_frames(client: &mut DynamicsClient<Channel>, version: &str, steps: u32) -> Vec<Vec<f32>> {
    let request = RolloutRequest { model: "mlp".into(), positions: frame(99), steps, emit_every: 1, version: version.into(), ..Default::default() };
    let stream = client.rollout(request).await.expect("rollout").into_inner();
    stream.map(|frame| frame.expect("frame").positions).collect().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_repository_swaps_versions_under_load_and_keeps_serving_through_broken_ones() {
    let repository = tempfile::tempdir().expect("temp dir");
    copy_model(&trained_models_dir().join("mlp"), &repository.path().join("mlp/1"));
    let mut server = TestServer::start_repository(repository.path(), pool(), ModelControl::Poll, TEST_SERVER_OPTIONS).await;
    let looping = ClientLoop::start(server.channel.clone());
    wait_for("answers of version 1", || looping.answered_by(1) > 20).await;

    // A rollout on version 1, read one frame at a time across the swaps below.
    let steps = 40;
    let request = RolloutRequest { model: "mlp".into(), positions: frame(99), steps, emit_every: 1, ..Default::default() };
    let mut across_swaps = server.client.rollout(request).await.expect("rollout").into_inner();
    let mut first_frames = Vec::new();
    for _ in 0..3 {
        first_frames.push(across_swaps.message().await.expect("frame").expect("a frame").positions);
    }

    // A good new version swaps in: the loop's answers move to it with no failure.
    deploy(&shipped_model("mlp"), repository.path(), 2);
    let before = looping.answered_by(2);
    wait_for("answers of version 2", || looping.answered_by(2) > before + 20).await;

    // A corrupt new version is refused with its reason; version 2 stays the default.
    let broken = repository.path().join("mlp/.broken");
    copy_model(&shipped_model("mlp"), &broken);
    std::fs::write(broken.join("model.onnx"), b"not an onnx model").expect("write");
    std::fs::rename(&broken, repository.path().join("mlp/3")).expect("rename");
    wait_for("version 3 refused", || state(&server, 3).is_some_and(|s| s.failure.is_some())).await;
    let refused = state(&server, 3).expect("listed");
    assert!(!refused.ready && refused.failure.as_deref().is_some_and(|f| f.contains("model.onnx")), "{refused:?}");

    // Version 2 rewritten in place with a broken file: the loaded version keeps serving.
    std::fs::write(repository.path().join("mlp/2/model.onnx"), b"truncated").expect("write");
    wait_for("version 2's reload refused", || state(&server, 2).is_some_and(|s| s.failure.is_some())).await;
    assert!(state(&server, 2).expect("listed").ready, "the old version 2 stays ready");
    let before = looping.answered_by(2);
    wait_for("version 2 still answering", || looping.answered_by(2) > before + 20).await;

    // A card whose graph does not match its model (parity error over tolerance) is refused.
    let card_path = repository.path().join("mlp/3/card.json");
    let card = std::fs::read_to_string(&card_path).expect("card");
    let mut card: serde_json::Value = serde_json::from_str(&card).expect("json");
    card["onnx"]["parity_relative_error"] = serde_json::json!(1e-3);
    std::fs::copy(shipped_model("mlp").join("model.onnx"), repository.path().join("mlp/3/model.onnx")).expect("copy");
    std::fs::write(&card_path, serde_json::to_string(&card).expect("json")).expect("write");
    wait_for("version 3's parity refused", || state(&server, 3).is_some_and(|s| s.failure.as_deref().is_some_and(|f| f.contains("parity")))).await;
    // So is one whose sampled kicks cannot be drawn (a chain mode's kicks correlated 1.0
    // with the step before would never change).
    card["onnx"]["parity_relative_error"] = serde_json::json!(1e-7);
    let persistence: Vec<f64> = (0..12).map(|m| if m == 4 { 1.0 } else { 0.2 }).collect();
    card["noise"] = serde_json::json!({ "kicks": { "mode_spread": vec![1.0; 12], "mode_persistence": persistence } });
    std::fs::write(&card_path, serde_json::to_string(&card).expect("json")).expect("write");
    wait_for("version 3's kicks refused", || state(&server, 3).is_some_and(|s| s.failure.as_deref().is_some_and(|f| f.contains("kick")))).await;

    // Version 1 is removed from the repository while the rollout on it runs: the rollout
    // finishes on version 1, frame for frame as a rollout of version 1 alone.
    let expected = rollout_frames(&mut server.client, "1", steps).await;
    std::fs::remove_dir_all(repository.path().join("mlp/1")).expect("remove");
    wait_for("version 1 unloaded", || state(&server, 1).is_none()).await;
    let mut streamed = first_frames;
    while let Some(frame) = across_swaps.message().await.expect("the rollout goes on") {
        streamed.push(frame.positions);
    }
    assert_eq!(streamed, expected, "the rollout ran on the version it started on");
    assert_ne!(streamed, rollout_frames(&mut server.client, "2", steps).await, "versions 1 and 2 differ");

    let status =
        server.client.predict(PredictRequest { model: "mlp".into(), positions: frame(1), version: "1".into(), ..Default::default() }).await.expect_err("gone");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let failures = looping.failures().await;
    assert!(failures.is_empty(), "{} failed requests: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_loads_say_why_they_failed_and_keep_the_old_version() {
    let repository = tempfile::tempdir().expect("temp dir");
    copy_model(&trained_models_dir().join("mlp"), &repository.path().join("mlp/1"));
    let server = TestServer::start_repository(repository.path(), pool(), ModelControl::Explicit, TEST_SERVER_OPTIONS).await;
    let mut repository_client = GrpcInferenceServiceClient::new(server.channel.clone());
    let load = |name: &str| RepositoryModelLoadRequest { model_name: name.into(), ..Default::default() };
    let looping = ClientLoop::start(server.channel.clone());

    // Files changed on disk are not read until a load asks.
    deploy(&shipped_model("mlp"), repository.path(), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(state(&server, 2).is_none(), "explicit control does not poll");
    repository_client.repository_model_load(load("mlp")).await.expect("loads");
    assert!(state(&server, 2).expect("listed").ready);

    // A broken version 2: the load fails with the reason, version 2 as loaded keeps serving.
    std::fs::write(repository.path().join("mlp/2/model.onnx"), b"garbage").expect("write");
    let status = repository_client.repository_model_load(load("mlp")).await.expect_err("broken");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("still serving version(s) 1, 2") && status.message().contains("model.onnx"), "{}", status.message());
    let before = looping.answered_by(2);
    wait_for("version 2 still answering", || looping.answered_by(2) > before + 20).await;
    let again = repository_client.repository_model_load(load("mlp")).await.expect_err("still broken");
    assert_eq!(again.code(), Code::FailedPrecondition, "a second load of the same broken files fails again: {again:?}");

    let status = repository_client.repository_model_load(load("absent")).await.expect_err("absent");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let index = repository_client.repository_index(RepositoryIndexRequest { ready: true, ..Default::default() }).await.expect("index").into_inner();
    assert_eq!(
        index.models.iter().map(|m| (m.name.as_str(), m.version.as_str(), m.state.as_str())).collect::<Vec<_>>(),
        [("mlp", "1", "READY"), ("mlp", "2", "READY")]
    );
    let failures = looping.failures().await;
    assert!(failures.is_empty(), "{} failed requests: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_changes_need_explicit_control() {
    let server = TestServer::start(trained_models_dir()).await;
    let mut client = GrpcInferenceServiceClient::new(server.channel.clone());
    let status = client.repository_model_load(RepositoryModelLoadRequest { model_name: "mlp".into(), ..Default::default() }).await.expect_err("none");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("--model-control explicit"), "{}", status.message());
    server.shutdown().await;
}

/// Safe defaults: without tokens, models are loaded and unloaded on request only where
/// the operator allowed anyone to; with tokens, the protocol's probes need none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_unauthenticated_changes_the_repository_unless_allowed() {
    use equiserve::{
        proto::inference::{ModelReadyRequest, RepositoryModelUnloadRequest, ServerLiveRequest, ServerReadyRequest},
        serve::grpc::access::AccessTokens,
    };
    let repository = tempfile::tempdir().expect("temp dir");
    copy_model(&trained_models_dir().join("mlp"), &repository.path().join("mlp/1"));
    let guarded = equiserve::serve::grpc::ServerOptions { allow_unauthenticated_admin: false, ..TEST_SERVER_OPTIONS };
    let server = TestServer::start_repository(repository.path(), pool(), ModelControl::Explicit, guarded).await;
    let mut client = GrpcInferenceServiceClient::new(server.channel.clone());
    let status = client.repository_model_unload(RepositoryModelUnloadRequest { model_name: "mlp".into(), ..Default::default() }).await.expect_err("refused");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("--auth-token-file"), "{}", status.message());
    assert!(client.model_ready(ModelReadyRequest { name: "mlp".into(), version: String::new() }).await.expect("ready").into_inner().ready, "mlp still serves");
    server.shutdown().await;

    let tokens = AccessTokens::parse("inference 0123456789abcdef\nadmin fedcba9876543210").expect("tokens");
    let with_tokens = equiserve::serve::grpc::ServerOptions { tokens: Some(tokens), allow_unauthenticated_admin: false, ..TEST_SERVER_OPTIONS };
    let server = TestServer::start_repository(repository.path(), pool(), ModelControl::Explicit, with_tokens).await;
    let mut client = GrpcInferenceServiceClient::new(server.channel.clone());
    assert!(client.server_live(ServerLiveRequest {}).await.expect("open to probes").into_inner().live);
    assert!(client.server_ready(ServerReadyRequest {}).await.expect("open to probes").into_inner().ready);
    assert!(client.model_ready(ModelReadyRequest { name: "mlp".into(), version: String::new() }).await.expect("open to probes").into_inner().ready);
    let status = client.repository_index(RepositoryIndexRequest::default()).await.expect_err("needs a token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut unload = tonic::Request::new(RepositoryModelUnloadRequest { model_name: "mlp".into(), ..Default::default() });
    unload.metadata_mut().insert("authorization", "Bearer fedcba9876543210".parse().expect("ascii"));
    client.repository_model_unload(unload).await.expect("an admin unloads");
    server.shutdown().await;
}

#[test]
fn explicit_control_can_start_with_some_models_only() {
    let repository = tempfile::tempdir().expect("temp dir");
    copy_model(&shipped_model("mlp"), &repository.path().join("mlp"));
    copy_model(&shipped_model("pairforce-h4"), &repository.path().join("pairforce-h4"));
    let open = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        ModelRepository::open_explicit(repository.path(), ExecutionDevice::Cpu, pool(), &names)
    };

    let registry = open(&["mlp"]).expect("opens");
    assert_eq!(registry.names(), ["mlp"]);
    registry.load("pairforce-h4").expect("loads on request");
    assert_eq!(registry.names(), ["mlp", "pairforce-h4"]);

    // A broken version beside good ones: the good ones serve, the index says why the
    // other does not, and requests naming no version go to the newest ready one.
    let versions = tempfile::tempdir().expect("temp dir");
    for version in [1, 2, 3] {
        copy_model(&shipped_model("mlp"), &versions.path().join(format!("mlp/{version}")));
    }
    std::fs::write(versions.path().join("mlp/3/model.onnx"), b"trunc").expect("write");
    let registry = ModelRepository::open_explicit(versions.path(), ExecutionDevice::Cpu, pool(), &["mlp".to_string()]).expect("starts with versions 1 and 2");
    assert_eq!(registry.ready_versions("mlp"), [1, 2]);
    assert_eq!(registry.get("mlp", None).expect("served").version, 2);
    let third = registry.index().into_iter().find(|state| state.version == 3).expect("listed");
    assert!(!third.ready && third.failure.as_deref().is_some_and(|f| f.contains("model.onnx")), "{third:?}");
    registry.load("mlp").expect("loading again serves 1 and 2 and reports 3 in the index");
    registry.unload("mlp").expect("unloads");
    let unavailable = registry.get("mlp", None).err().expect("nothing ready");
    assert!(unavailable.to_string().contains("'mlp' has no version ready (version 1: unloaded"), "{unavailable}");

    let error = open(&["mlp", "nope"]).err().expect("an absent model");
    assert!(error.to_string().contains("no model 'nope'"), "{error}");
    std::fs::write(repository.path().join("pairforce-h4/model.onnx"), b"garbage").expect("write");
    let error = open(&["pairforce-h4"]).err().expect("a broken model");
    assert!(matches!(error, RepositoryError::LoadFailed { .. }) && error.to_string().contains("model.onnx"), "{error}");
    let error = open(&[]).err().expect("nothing named");
    assert!(error.to_string().contains("no model to load at start"), "{error}");
}

/// Two folders naming one model version are both refused, whichever sorts first, and a
/// card whose window contradicts its ONNX inputs is refused; each with its reason.
#[test]
fn clashing_folders_and_contradicting_cards_are_refused_with_the_reason() {
    let repository = tempfile::tempdir().expect("temp dir");
    copy_model(&shipped_model("mlp"), &repository.path().join("mlp/1"));
    // A flat folder whose card also names mlp: version 1 too.
    copy_model(&shipped_model("mlp"), &repository.path().join("another-mlp"));
    copy_model(&shipped_model("pairforce-h4"), &repository.path().join("pairforce-h4"));
    let card_path = repository.path().join("pairforce-h4/card.json");
    let mut card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&card_path).expect("card")).expect("json");
    card["history_frames"] = serde_json::json!(3);
    std::fs::write(&card_path, card.to_string()).expect("write");

    let error = ModelRepository::open(repository.path(), ExecutionDevice::Cpu, pool(), ModelControl::None).err().expect("nothing to serve");
    assert!(error.to_string().contains("2 folders") && error.to_string().contains("reads 3 frames"), "{error}");
    copy_model(&shipped_model("e3small"), &repository.path().join("e3small"));
    let registry = ModelRepository::open(repository.path(), ExecutionDevice::Cpu, pool(), ModelControl::None).expect("opens");
    assert_eq!(registry.names(), ["e3small"]);
    let index = registry.index();
    let failure = |name: &str| index.iter().find(|v| v.name == name).and_then(|v| v.failure.clone()).unwrap_or_else(|| panic!("{name}: {index:?}"));
    let clash = failure("mlp");
    assert!(clash.contains("2 folders") && clash.contains("another-mlp") && clash.contains("mlp/1"), "{clash}");
    let window = failure("pairforce-h4");
    assert!(window.contains("reads 3 frames") && window.contains("inputs 4"), "{window}");

    // Hiding one clears the clash: the folder left loads, though its files did not change.
    std::fs::rename(repository.path().join("mlp"), repository.path().join(".mlp")).expect("rename");
    registry.sync(None).expect("syncs");
    assert_eq!(registry.names(), ["e3small", "mlp"]);
}

/// A folder with `model.onnx` alone serves, its inputs and outputs read from the file
/// (a stochastic history model's included); a file that does not fit the interface is
/// refused saying what it has and what is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_file_without_a_card_serves_when_it_fits_the_interface() {
    use equiserve::{
        onnx::{OnnxModel, Precision, Signature, TensorSpec},
        proto::v1::GetModelRequest,
        train::onnx_graph::GraphBuilder,
    };
    use prost::Message;
    let repository = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(repository.path().join("bare/1")).expect("folder");
    std::fs::copy(shipped_model("pairforce-h4").join("model.onnx"), repository.path().join("bare/1/model.onnx")).expect("copy");
    // A graph whose input is called `x`: not the interface.
    let misfit = Signature { inputs: vec![TensorSpec { name: "x".into(), ..Signature::dynamics(1).inputs[0].clone() }], ..Signature::dynamics(1) };
    let graph = GraphBuilder::new(misfit, Precision::F32);
    let x = graph.input("x").expect("x");
    std::fs::create_dir_all(repository.path().join("misfit")).expect("folder");
    std::fs::write(repository.path().join("misfit/model.onnx"), graph.finish(&[x], "a misfit", &[]).encode_to_vec()).expect("write");

    let server = TestServer::start_repository(repository.path(), pool(), ModelControl::None, TEST_SERVER_OPTIONS).await;
    let misfit = server.core.registry().index().into_iter().find(|state| state.name == "misfit").expect("listed");
    let reason = misfit.failure.expect("refused");
    assert!(!misfit.ready && reason.contains("inputs are [\"x\"]") && reason.contains("without a card takes positions"), "{reason}");

    let mut client = server.client.clone();
    let info = client.get_model(GetModelRequest { name: "bare".into(), ..Default::default() }).await.expect("served").into_inner();
    let summary = info.summary.expect("summary");
    assert_eq!((summary.history_frames, summary.stochastic), (4, true));
    assert!(info.card_json.contains("no card.json"), "{}", info.card_json);
    let positions: Vec<f32> = (0..36).map(|i| 0.1 * (i % 7) as f32).collect();
    let previous: Vec<f32> = (0..3).flat_map(|k| positions.iter().map(move |v| v - 0.01 * (3 - k) as f32)).collect();
    let answer = client
        .predict(PredictRequest { model: "bare".into(), positions: positions.clone(), previous: previous.clone(), ..Default::default() })
        .await
        .expect("predicts")
        .into_inner();
    let card: equiserve::card::ModelCard = crate::common::card_of(&shipped_model("pairforce-h4"));
    let mut direct = OnnxModel::load(&shipped_model("pairforce-h4").join("model.onnx"), &card.onnx.signature, ExecutionDevice::Cpu, 1).expect("loads");
    let x = ndarray::Array3::from_shape_vec((1, 12, 3), positions).expect("frame");
    let window = ndarray::Array4::from_shape_vec((1, 3, 12, 3), previous).expect("window");
    let (dx, std) = direct.run_window_with_std(x.view(), window.view()).expect("runs");
    assert_eq!(answer.dx, dx.iter().copied().collect::<Vec<_>>());
    assert_eq!(answer.dx_std, std.expect("stochastic").iter().copied().collect::<Vec<_>>());
    server.shutdown().await;
}
