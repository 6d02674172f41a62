//! train-export → model.onnx → gRPC server → real tonic client, checked against a
//! direct ONNX Runtime run of the same file.

mod common;

use std::time::Duration;

use common::{LIMITS, TestServer, trained_models_dir};
use equiserve::{
    data::{FRAME_LEN, PARTICLES},
    onnx::{ExecutionDevice, OnnxModel, Signature},
    proto::v1::{GetModelRequest, ListModelsRequest, PredictRequest, RolloutRequest},
};
use ndarray::Array3;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio_stream::StreamExt;
use tonic::Code;

fn random_frames(batch: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..batch * FRAME_LEN).map(|_| rng.random_range(-2.0..2.0)).collect()
}

fn predict_request(positions: Vec<f32>) -> PredictRequest {
    PredictRequest { model: "mlp".into(), positions, previous: Vec::new() }
}

#[tokio::test]
async fn predict_equals_a_direct_onnx_runtime_run() {
    let dir = trained_models_dir();
    let mut server = TestServer::start(dir).await;
    let positions = random_frames(5, 1);
    let response = server.client.predict(predict_request(positions.clone())).await.expect("predict").into_inner();
    assert_eq!(response.batch, 5);

    let mut direct = OnnxModel::load(&dir.join("mlp/model.onnx"), &Signature::dynamics(1), ExecutionDevice::Cpu, 1).expect("model loads");
    let input = Array3::from_shape_vec((5, PARTICLES, 3), positions.clone()).expect("shape");
    let expected = direct.run(input.view()).expect("runs");
    assert_eq!(response.dx.len(), expected.len());
    for (got, want) in response.dx.iter().zip(expected.iter()) {
        assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "dx {got} vs direct {want}");
    }
    for ((next, x), dx) in response.next_positions.iter().zip(&positions).zip(&response.dx) {
        assert_eq!(*next, x + dx);
    }
    // A batch gives exactly what its frames give one at a time.
    for frame in 0..5 {
        let one = positions[frame * FRAME_LEN..(frame + 1) * FRAME_LEN].to_vec();
        let single = server.client.predict(predict_request(one)).await.expect("predict").into_inner();
        let batched = &response.dx[frame * FRAME_LEN..(frame + 1) * FRAME_LEN];
        for (a, b) in single.dx.iter().zip(batched) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0));
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn rollout_equals_chained_predicts() {
    let mut server = TestServer::start(trained_models_dir()).await;
    let start = random_frames(1, 2);
    let steps = 7;
    let request = RolloutRequest { model: "mlp".into(), positions: start.clone(), steps, emit_every: 1, previous: Vec::new() };
    let frames: Vec<_> = server.client.rollout(request).await.expect("rollout").into_inner().collect::<Vec<_>>().await;
    let frames: Vec<_> = frames.into_iter().collect::<Result<_, _>>().expect("every frame arrives");
    assert_eq!(frames.iter().map(|f| f.step).collect::<Vec<_>>(), (1..=steps).collect::<Vec<_>>());

    let mut x = start.clone();
    for frame in &frames {
        x = server.client.predict(predict_request(x)).await.expect("predict").into_inner().next_positions;
        assert_eq!(frame.positions, x, "step {}", frame.step);
    }

    // Every 3rd frame, and always the last one.
    let request = RolloutRequest { model: "mlp".into(), positions: start, steps, emit_every: 3, previous: Vec::new() };
    let sparse: Vec<_> = server.client.rollout(request).await.expect("rollout").into_inner().collect::<Vec<_>>().await;
    let sparse: Vec<_> = sparse.into_iter().map(|f| f.expect("frame")).collect();
    assert_eq!(sparse.iter().map(|f| f.step).collect::<Vec<_>>(), vec![3, 6, 7]);
    assert_eq!(sparse.last().expect("last").positions, frames.last().expect("last").positions);
    server.shutdown().await;
}

#[tokio::test]
async fn models_are_listed_with_their_cards() {
    let mut server = TestServer::start(trained_models_dir()).await;
    let models = server.client.list_models(ListModelsRequest {}).await.expect("list").into_inner().models;
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].name, "mlp");
    assert_eq!(models[0].params, 8_868);
    assert_eq!(models[0].execution_provider, "CPUExecutionProvider");

    let info = server.client.get_model(GetModelRequest { name: "mlp".into() }).await.expect("get").into_inner();
    let card: serde_json::Value = serde_json::from_str(&info.card_json).expect("card is JSON");
    assert_eq!(card["name"], "mlp");
    assert_eq!(card["params"], 8_868);
    assert_eq!(card["training"]["history"].as_array().expect("history").len(), 3);
    assert!(card["metrics"]["test"]["mse"].as_f64().expect("test mse") > 0.0);
    assert!(card["onnx"]["parity_relative_error"].as_f64().expect("parity") < 1e-5);
    // The MLP is not equivariant, and its card must say so by measurement.
    assert!(card["equivariance"]["rotation_37_x"].as_f64().expect("rotation error") > 1e-4);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_clear_statuses() {
    let mut server = TestServer::start(trained_models_dir()).await;
    let frame = random_frames(1, 3);
    let mut nan_frame = frame.clone();
    nan_frame[40 % FRAME_LEN] = f32::NAN;
    let too_big = random_frames(LIMITS.max_batch + 1, 4);
    let cases: Vec<(&str, PredictRequest, Code, &str)> = vec![
        ("unknown model", PredictRequest { model: "nope".into(), positions: frame.clone(), previous: Vec::new() }, Code::NotFound, "unknown model 'nope'"),
        ("empty batch", predict_request(vec![]), Code::InvalidArgument, "empty"),
        ("partial frame", predict_request(frame[..35].to_vec()), Code::InvalidArgument, "not a multiple of 36"),
        ("NaN", predict_request(nan_frame.clone()), Code::InvalidArgument, "must be finite"),
        ("infinity", predict_request(vec![f32::INFINITY; FRAME_LEN]), Code::InvalidArgument, "must be finite"),
        ("batch over limit", predict_request(too_big), Code::InvalidArgument, "exceeds the limit of 64"),
    ];
    for (case, request, code, message) in cases {
        let status = server.client.predict(request).await.expect_err(case);
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert!(status.message().contains(message), "{case}: {:?} lacks {message:?}", status.message());
    }

    let rollout = |positions: Vec<f32>, steps: u32| RolloutRequest { model: "mlp".into(), positions, steps, emit_every: 1, previous: Vec::new() };
    let cases: Vec<(&str, RolloutRequest, Code, &str)> = vec![
        ("unknown model", RolloutRequest { model: "nope".into(), ..rollout(frame.clone(), 1) }, Code::NotFound, "unknown model"),
        ("zero steps", rollout(frame.clone(), 0), Code::InvalidArgument, "steps must be between 1 and 1000"),
        ("too many steps", rollout(frame.clone(), 1001), Code::InvalidArgument, "got 1001"),
        ("two frames", rollout(random_frames(2, 5), 3), Code::InvalidArgument, "one frame of 36 floats"),
        ("NaN start", rollout(nan_frame, 3), Code::InvalidArgument, "must be finite"),
    ];
    for (case, request, code, message) in cases {
        let status = server.client.rollout(request).await.expect_err(case);
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert!(status.message().contains(message), "{case}: {:?} lacks {message:?}", status.message());
    }
    let status = server.client.get_model(GetModelRequest { name: "nope".into() }).await.expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("served models: mlp"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_rollout_stops_computing() {
    let mut server = TestServer::start(trained_models_dir()).await;
    let activity = server.rollouts_in_progress.clone();
    let request = RolloutRequest { model: "mlp".into(), positions: random_frames(1, 6), steps: 1000, emit_every: 1, previous: Vec::new() };
    let mut stream = server.client.rollout(request).await.expect("rollout").into_inner();
    stream.next().await.expect("a frame").expect("ok frame");
    assert_eq!(activity.get(), 1);
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while activity.get() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "rollout kept running after the client left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let server = TestServer::start(trained_models_dir()).await;
    let mut health = HealthClient::new(server.channel.clone());
    let status = health
        .check(HealthCheckRequest { service: "equiserve.v1.Dynamics".into() })
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(server.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection.server_reflection_info(tokio_stream::once(request)).await.expect("reflection").into_inner();
    let response = responses.next().await.expect("one answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"equiserve.v1.Dynamics"), "{names:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn calls_and_inference_are_counted_for_prometheus() {
    let handle = common::prometheus();
    let mut server = TestServer::start(trained_models_dir()).await;
    server.client.predict(predict_request(random_frames(3, 7))).await.expect("predict");
    let status = server.client.predict(PredictRequest { model: "nope".into(), positions: random_frames(1, 8), previous: Vec::new() }).await.expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let text = handle.render();
    assert!(text.contains(r#"equiserve_requests_total{rpc="Predict",model="mlp",code="Ok"}"#), "{text}");
    assert!(text.contains(r#"equiserve_requests_total{rpc="Predict",model="nope",code="NotFound"}"#), "{text}");
    assert!(text.contains(r#"equiserve_frames_predicted_total{model="mlp"}"#), "{text}");
    assert!(text.contains("equiserve_inference_seconds"), "{text}");
    server.shutdown().await;
}
