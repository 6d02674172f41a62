//! train-export → model.onnx → gRPC server → real tonic client, checked against a
//! direct ONNX Runtime run of the same file.

mod common;

use std::{pin::Pin, sync::Arc, task::Poll, time::Duration};

use common::{LIMITS, TestServer, trained_models_dir};
use equiserve::{
    data::{FRAME_LEN, PARTICLES},
    onnx::{ExecutionDevice, OnnxModel, Signature},
    proto::v1::{GetModelRequest, ListModelsRequest, PredictRequest, RolloutFrame, RolloutRequest, dynamics_client::DynamicsClient},
    serve::{DynamicsCore, Limits, ModelControl, ModelRepository, PoolConfig, RolloutFrames, RolloutStart, RolloutStep, ServeError},
};
use ndarray::Array3;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, transport::Channel};

fn random_frames(batch: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..batch * FRAME_LEN).map(|_| rng.random_range(-2.0..2.0)).collect()
}

fn predict_request(positions: Vec<f32>) -> PredictRequest {
    PredictRequest { model: "mlp".into(), positions, previous: Vec::new(), ..Default::default() }
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
    let request = RolloutRequest { model: "mlp".into(), positions: start.clone(), steps, emit_every: 1, previous: Vec::new(), ..Default::default() };
    let frames: Vec<_> = server.client.rollout(request).await.expect("rollout").into_inner().collect::<Vec<_>>().await;
    let frames: Vec<_> = frames.into_iter().collect::<Result<_, _>>().expect("every frame arrives");
    assert_eq!(frames.iter().map(|f| f.step).collect::<Vec<_>>(), (1..=steps).collect::<Vec<_>>());

    let mut x = start.clone();
    for frame in &frames {
        x = server.client.predict(predict_request(x)).await.expect("predict").into_inner().next_positions;
        assert_eq!(frame.positions, x, "step {}", frame.step);
    }

    // Every 3rd frame, and always the last one.
    let request = RolloutRequest { model: "mlp".into(), positions: start, steps, emit_every: 3, previous: Vec::new(), ..Default::default() };
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

    let info = server.client.get_model(GetModelRequest { name: "mlp".into(), ..Default::default() }).await.expect("get").into_inner();
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
        (
            "unknown model",
            PredictRequest { model: "nope".into(), positions: frame.clone(), previous: Vec::new(), ..Default::default() },
            Code::NotFound,
            "unknown model 'nope'",
        ),
        ("empty batch", predict_request(vec![]), Code::InvalidArgument, "empty"),
        ("partial frame", predict_request(frame[..35].to_vec()), Code::InvalidArgument, "not a multiple of 36"),
        ("NaN", predict_request(nan_frame.clone()), Code::InvalidArgument, "must be finite"),
        ("infinity", predict_request(vec![f32::INFINITY; FRAME_LEN]), Code::InvalidArgument, "must be finite"),
        ("batch over limit", predict_request(too_big), Code::InvalidArgument, "exceeds the limit of 64"),
        (
            "model name of a megabyte",
            PredictRequest { model: "m".repeat(1 << 20), positions: frame.clone(), previous: Vec::new(), ..Default::default() },
            Code::InvalidArgument,
            "names are at most 256",
        ),
        ("message over 4 MiB", predict_request(vec![0.5; (4 << 20) / 4 + FRAME_LEN]), Code::ResourceExhausted, "message length too large"),
        (
            "finite input, non-finite output",
            predict_request([vec![0.5; FRAME_LEN], vec![f32::MAX; FRAME_LEN]].concat()),
            Code::OutOfRange,
            "the answer for frame 1 is not finite",
        ),
    ];
    for (case, request, code, message) in cases {
        let status = server.client.predict(request).await.expect_err(case);
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert!(status.message().contains(message), "{case}: {:?} lacks {message:?}", status.message());
    }

    let rollout =
        |positions: Vec<f32>, steps: u32| RolloutRequest { model: "mlp".into(), positions, steps, emit_every: 1, previous: Vec::new(), ..Default::default() };
    let cases: Vec<(&str, RolloutRequest, Code, &str)> = vec![
        ("unknown model", RolloutRequest { model: "nope".into(), ..rollout(frame.clone(), 1) }, Code::NotFound, "unknown model"),
        ("zero steps", rollout(frame.clone(), 0), Code::InvalidArgument, "steps must be between 1 and 1000"),
        ("too many steps", rollout(frame.clone(), 1001), Code::InvalidArgument, "got 1001"),
        ("partial frame", rollout(frame[..35].to_vec(), 3), Code::InvalidArgument, "not a multiple of 36"),
        ("ensemble over limit", rollout(random_frames(LIMITS.max_batch + 1, 5), 1), Code::InvalidArgument, "exceeds the limit of 64"),
        ("too many system-steps", rollout(random_frames(2, 5), 501), Code::InvalidArgument, "between 1 and 500 for 2 system(s)"),
        ("NaN start", rollout(nan_frame, 3), Code::InvalidArgument, "must be finite"),
    ];
    for (case, request, code, message) in cases {
        let status = server.client.rollout(request).await.expect_err(case);
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert!(status.message().contains(message), "{case}: {:?} lacks {message:?}", status.message());
    }
    let status = server.client.get_model(GetModelRequest { name: "nope".into(), ..Default::default() }).await.expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("served models: mlp"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_rollout_stops_computing() {
    let mut server = TestServer::start(trained_models_dir()).await;
    let activity = server.rollouts_in_progress.clone();
    let request =
        RolloutRequest { model: "mlp".into(), positions: random_frames(1, 6), steps: 1000, emit_every: 1, previous: Vec::new(), ..Default::default() };
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
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse,
    };

    let server = TestServer::start(trained_models_dir()).await;
    let mut health = HealthClient::new(server.channel.clone());
    let status = health.check(HealthCheckRequest { service: "equiserve.v1.Dynamics".into() }).await.expect("health check").into_inner().status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let mut reflection = ServerReflectionClient::new(server.channel.clone());
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
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
    let status = server
        .client
        .predict(PredictRequest { model: "nope".into(), positions: random_frames(1, 8), previous: Vec::new(), ..Default::default() })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let text = handle.render();
    assert!(text.contains(r#"equiserve_requests_total{rpc="Predict",model="mlp",code="Ok"}"#), "{text}");
    // Names of no served model share one label, so that clients cannot grow the label set.
    assert!(text.contains(r#"equiserve_requests_total{rpc="Predict",model="(unknown)",code="NotFound"}"#), "{text}");
    assert!(!text.contains("nope"), "{text}");
    assert!(text.contains(r#"equiserve_frames_predicted_total{model="mlp",version="1"}"#), "{text}");
    assert!(text.contains("equiserve_compute_seconds"), "{text}");
    server.shutdown().await;
}

/// Largest relative difference between two equally long float slices.
fn relative_gap(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f32::max)
}

/// Batching across requests changes which rows share an ONNX Runtime call; within this
/// much (measured 0 on the MLP: the same kernels compute each row) results must agree.
const BATCHING_TOLERANCE: f32 = 1e-5;

#[tokio::test]
async fn predicts_batched_together_equal_each_alone() {
    let pool = PoolConfig { workers: Some(2), max_queue_delay: Duration::from_millis(2), ..PoolConfig::default() };
    let server = TestServer::start_with(trained_models_dir(), pool).await;
    let requests: Vec<Vec<f32>> = (0..24).map(|i| random_frames(1 + i % 3, 100 + i as u64)).collect();
    let mut together = tokio::task::JoinSet::new();
    for (index, positions) in requests.iter().enumerate() {
        let mut client = server.client.clone();
        let request = predict_request(positions.clone());
        together.spawn(async move { (index, client.predict(request).await.expect("predict").into_inner().dx) });
    }
    let mut gap = 0.0_f32;
    while let Some(done) = together.join_next().await {
        let (index, dx) = done.expect("task");
        let alone = server.client.clone().predict(predict_request(requests[index].clone())).await.expect("predict").into_inner().dx;
        gap = gap.max(relative_gap(&dx, &alone));
    }
    eprintln!("batched vs alone: largest relative difference {gap:e}");
    assert!(gap <= BATCHING_TOLERANCE, "{gap}");
    server.shutdown().await;
}

async fn rollout_frames(client: &mut DynamicsClient<Channel>, request: RolloutRequest) -> Vec<RolloutFrame> {
    let stream = client.rollout(request).await.expect("rollout").into_inner();
    stream.collect::<Vec<_>>().await.into_iter().collect::<Result<_, _>>().expect("every frame arrives")
}

#[tokio::test]
async fn rollouts_stepped_together_equal_each_alone_and_ensembles_their_members() {
    let handle = common::prometheus();
    let mut server = TestServer::start(trained_models_dir()).await;
    // Small starts stay bounded under the briefly trained MLP.
    let start = |seed: u64| random_frames(1, seed).into_iter().map(|v| v * 0.1).collect::<Vec<f32>>();
    let request = |positions: Vec<f32>| RolloutRequest { model: "mlp".into(), positions, steps: 40, emit_every: 1, previous: Vec::new(), ..Default::default() };
    let alone = rollout_frames(&mut server.client, request(start(1))).await;

    let mut crowd = tokio::task::JoinSet::new();
    for seed in 1..=33 {
        let mut client = server.client.clone();
        let request = request(start(seed));
        crowd.spawn(async move { (seed, rollout_frames(&mut client, request).await) });
    }
    let mut gap = 0.0_f32;
    while let Some(done) = crowd.join_next().await {
        let (seed, frames) = done.expect("task");
        assert_eq!(frames.len(), 40);
        if seed == 1 {
            for (crowded, single) in frames.iter().zip(&alone) {
                gap = gap.max(relative_gap(&crowded.positions, &single.positions));
            }
        }
    }

    // An ensemble of three: member 1 is the rollout from start(1).
    let ensemble: Vec<f32> = [start(7), start(1), start(9)].concat();
    let frames = rollout_frames(&mut server.client, request(ensemble)).await;
    assert_eq!(frames.len(), 40);
    for (frame, single) in frames.iter().zip(&alone) {
        assert_eq!((frame.batch, frame.positions.len()), (3, 3 * FRAME_LEN));
        gap = gap.max(relative_gap(&frame.positions[FRAME_LEN..2 * FRAME_LEN], &single.positions));
    }
    eprintln!("rollouts stepped together vs alone: largest relative difference {gap:e}");
    assert!(gap <= BATCHING_TOLERANCE, "{gap}");

    let text = handle.render();
    let stepped_alone = text.lines().find(|l| l.starts_with(r#"equiserve_rollout_step_systems_bucket{model="mlp",version="1",le="1"}"#)).expect("histogram");
    let steps = text.lines().find(|l| l.starts_with(r#"equiserve_rollout_step_systems_count{model="mlp",version="1"}"#)).expect("histogram");
    let count = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).expect("a count");
    assert!(count(stepped_alone) < count(steps), "no step held more than one system:\n{stepped_alone}\n{steps}");
    // Each rollout's own duration and steps, recorded when it ends.
    let ended = text.lines().find(|l| l.starts_with(r#"equiserve_rollout_steps_count{model="mlp",version="1"}"#)).expect("rollout steps");
    let forty = text.lines().find(|l| l.starts_with(r#"equiserve_rollout_steps_bucket{model="mlp",version="1",le="100"}"#)).expect("rollout steps");
    assert!(count(ended) >= 35.0 && count(forty) >= 35.0, "the 35 rollouts of 40 steps:\n{ended}\n{forty}");
    assert!(text.lines().any(|l| l.starts_with(r#"equiserve_rollout_seconds_count{model="mlp",version="1"}"#)), "rollout durations");
    server.shutdown().await;
}

/// `future` polled once, without yielding to what would complete it.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
}

/// A frame if one is ready now, without yielding to the tasks computing more.
async fn ready_now(frames: &mut RolloutFrames) -> Poll<Option<Result<RolloutStep, ServeError>>> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *frames).poll_next(cx))).await
}

/// The serving core without the transport (whose HTTP/2 flow-control window buffers a
/// few hundred more frames of a client that does not read).
fn core(pool: PoolConfig, limits: Limits) -> Arc<DynamicsCore> {
    let registry = ModelRepository::open(trained_models_dir(), ExecutionDevice::Cpu, pool, ModelControl::None).expect("models load");
    Arc::new(DynamicsCore::new(Arc::new(registry), limits))
}

/// Sessions that keep ONNX Runtime's CPU arena (`--cpu-arena`) compute the same
/// trajectories as those that give their memory back.
#[tokio::test]
async fn sessions_with_the_cpu_arena_roll_out_the_same_frames() {
    let start = || RolloutStart { positions: random_frames(32, 5).into_iter().map(|v| v * 0.1).collect(), steps: 30, emit_every: 10, ..Default::default() };
    let mut frames = Vec::new();
    for cpu_arena in [false, true] {
        let core = core(PoolConfig { workers: Some(2), cpu_arena, ..PoolConfig::default() }, LIMITS);
        let mut rollout = core.rollout("mlp", "", start()).expect("admitted");
        let mut last = None;
        while let Some(frame) = rollout.next().await {
            last = Some(frame.expect("ok"));
        }
        let last = last.expect("frames");
        assert_eq!((last.step, last.batch), (30, 32));
        frames.push(last.positions);
    }
    assert_eq!(frames[0], frames[1], "the arena changed the frames");
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_no_one_back() {
    let core = core(PoolConfig { workers: Some(2), ..PoolConfig::default() }, LIMITS);
    let start = || RolloutStart {
        positions: random_frames(1, 11).into_iter().map(|v| v * 0.1).collect(),
        previous: Vec::new(),
        steps: 1000,
        emit_every: 1,
        ..Default::default()
    };
    let mut stalled = core.rollout("mlp", "", start()).expect("admitted");
    stalled.next().await.expect("a frame").expect("ok");
    // The other rollout runs all its 1000 steps while the first is not read.
    let mut reader = core.rollout("mlp", "", start()).expect("admitted");
    let mut read = 0;
    while let Some(frame) = reader.next().await {
        frame.expect("ok");
        read += 1;
    }
    assert_eq!(read, 1000);
    // The stalled one computed only what its small buffer holds, then waited: what is
    // ready now, taken without yielding to the stepper, is at most that buffer.
    let mut buffered = 0;
    while let Poll::Ready(Some(frame)) = ready_now(&mut stalled).await {
        frame.expect("ok");
        buffered += 1;
    }
    eprintln!("a stalled rollout computed {buffered} frames ahead while another ran 1000 steps");
    assert!((1..=16).contains(&buffered), "the stalled rollout ran {buffered} steps ahead of its client");
}

#[tokio::test]
async fn a_rollout_whose_client_never_reads_ends_after_the_stall_timeout() {
    let limits = Limits { rollout_stall_timeout: Duration::from_millis(200), ..LIMITS };
    let core = core(PoolConfig { workers: Some(1), ..PoolConfig::default() }, limits);
    let start = RolloutStart {
        positions: random_frames(1, 13).into_iter().map(|v| v * 0.1).collect(),
        previous: Vec::new(),
        steps: 1000,
        emit_every: 1,
        ..Default::default()
    };
    let mut stalled = core.rollout("mlp", "", start).expect("admitted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while core.rollouts_in_progress().get() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "a stalled rollout kept its place");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What it computed, then why it ended.
    let mut frames = 0;
    let ending = loop {
        match stalled.next().await.expect("the stream ends with an error") {
            Ok(_) => frames += 1,
            Err(error) => break error,
        }
    };
    assert!(matches!(ending, ServeError::Stalled { .. }) && ending.to_string().contains("took no frame for 0.2 s"), "{ending}");
    assert!((1..=16).contains(&frames), "{frames} frames before the end");
}

#[tokio::test]
async fn admission_is_bounded_for_requests_and_rollouts() {
    let core = core(PoolConfig { workers: Some(1), queue_per_worker: 2, ..PoolConfig::default() }, Limits { max_rollouts: 2, ..LIMITS });
    // A request holds its place from its first poll until it is answered and polled
    // again, so two that wait hold both places however quickly the worker answers them
    // (one answered on its first poll held nothing: try another).
    let request = |seed| Box::pin(core.predict("mlp", "", random_frames(64, seed), Vec::new()));
    let mut waiting = Vec::new();
    let mut tries = 0;
    for seed in 0..100 {
        tries += 1;
        let mut pending = request(seed);
        match poll_once(&mut pending).await {
            Poll::Pending => waiting.push(pending),
            Poll::Ready(answer) => drop(answer.expect("admitted")),
        }
        if waiting.len() == 2 {
            break;
        }
    }
    assert_eq!(waiting.len(), 2, "no two requests waited at once in 100 tries");
    for seed in 100..118 {
        match poll_once(&mut request(seed)).await {
            Poll::Ready(Err(ServeError::Busy { reason, .. })) => assert!(reason.contains("2 requests already admitted"), "{reason}"),
            Poll::Ready(other) => panic!("a third request was not turned away: {:?}", other.map(|p| p.batch)),
            Poll::Pending => panic!("a third request was admitted"),
        }
    }
    for pending in waiting {
        pending.await.expect("the admitted requests are answered");
    }
    core.predict("mlp", "", random_frames(64, 118), Vec::new()).await.expect("places are given back");
    // The model's statistics count what was answered and what was turned away.
    let statistics = core.model("mlp", "").expect("served").workers.statistics();
    assert_eq!((statistics.succeeded.count, statistics.failed.count), (tries + 1, 18), "{statistics:?}");
    assert_eq!(statistics.frames_answered, 64 * (tries + 1), "{statistics:?}");

    let start = || RolloutStart { positions: random_frames(1, 1), previous: Vec::new(), steps: 1000, emit_every: 1, ..Default::default() };
    let (first, second) = (core.rollout("mlp", "", start()).expect("admitted"), core.rollout("mlp", "", start()).expect("admitted"));
    let Err(ServeError::Busy { reason, .. }) = core.rollout("mlp", "", start()) else { panic!("a third rollout was admitted") };
    assert!(reason.contains("2 rollouts are running"), "{reason}");
    drop((first, second));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while core.rollouts_in_progress().get() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "cancelled rollouts kept their places");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    core.rollout("mlp", "", start()).expect("places are given back");
}

#[tokio::test]
async fn shutdown_ends_within_the_grace_even_with_a_client_that_never_reads() {
    let mut server = TestServer::start(trained_models_dir()).await;
    let request = RolloutRequest {
        model: "mlp".into(),
        positions: random_frames(1, 12).into_iter().map(|v| v * 0.1).collect(),
        steps: 1000,
        emit_every: 1,
        previous: Vec::new(),
        ..Default::default()
    };
    let mut never_read = server.client.rollout(request).await.expect("rollout").into_inner();
    never_read.next().await.expect("a frame").expect("ok");
    let started = std::time::Instant::now();
    server.shutdown().await;
    let took = started.elapsed();
    assert!(took < common::TEST_SERVER_OPTIONS.shutdown_grace + Duration::from_secs(2), "shutdown took {took:?}");
    drop(never_read);
}

#[tokio::test]
async fn calls_are_cut_to_fit_the_memory_budget() {
    let roomy = core(PoolConfig { workers: Some(2), ..PoolConfig::default() }, LIMITS);
    let frames = random_frames(20, 21);
    let expected = roomy.predict("mlp", "", frames.clone(), Vec::new()).await.expect("predict");
    let cost = roomy.model("mlp", "").expect("served").workers.frame_cost();
    eprintln!("mlp: {cost} bytes per frame at its peak");
    // A budget smaller than one frame's cost: every call holds one frame, and waits for
    // room beside the others.
    let tight = core(PoolConfig { workers: Some(2), memory_budget: 1, ..PoolConfig::default() }, LIMITS);
    assert_eq!(tight.model("mlp", "").expect("served").workers.max_batch_frames(), 1);
    let answer = tight.predict("mlp", "", frames, Vec::new()).await.expect("a request over the budget completes in parts");
    assert!(relative_gap(answer.dx.as_slice().expect("standard layout"), expected.dx.as_slice().expect("standard layout")) <= BATCHING_TOLERANCE);
}

#[tokio::test]
async fn tokens_guard_the_api_and_leave_health_open() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let tokens = equiserve::serve::grpc::access::AccessTokens::parse("inference inference-token-0123").expect("tokens");
    let options = equiserve::serve::grpc::ServerOptions { tokens: Some(tokens), ..common::TEST_SERVER_OPTIONS };
    let mut server = TestServer::start_with_options(trained_models_dir(), PoolConfig { workers: Some(1), ..PoolConfig::default() }, options).await;
    let status = server.client.predict(predict_request(random_frames(1, 30))).await.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let mut request = tonic::Request::new(predict_request(random_frames(1, 30)));
    request.metadata_mut().insert("authorization", "Bearer not-the-token-at-all".parse().expect("ascii"));
    assert_eq!(server.client.predict(request).await.expect_err("wrong token").code(), Code::Unauthenticated);
    let mut request = tonic::Request::new(predict_request(random_frames(1, 30)));
    request.metadata_mut().insert("authorization", "Bearer inference-token-0123".parse().expect("ascii"));
    assert_eq!(server.client.predict(request).await.expect("the right token").into_inner().batch, 1);
    let health = HealthClient::new(server.channel.clone()).check(HealthCheckRequest { service: String::new() }).await;
    assert!(health.is_ok(), "probes need no token: {health:?}");
    // The project's own client carries the token to every call.
    let connection = equiserve::client::Connection { uri: server.uri.clone(), token: Some("inference-token-0123".into()), ..Default::default() };
    let mut client = equiserve::client::connect(&connection).await.expect("connects");
    assert_eq!(client.list_models(ListModelsRequest {}).await.expect("listed with the token").into_inner().models.len(), 1);
    server.shutdown().await;
}

#[test]
fn decoded_requests_of_arbitrary_bytes_are_answered_or_refused() {
    use proptest::prelude::*;
    use prost::Message;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let core = runtime.block_on(async { core(PoolConfig { workers: Some(1), ..PoolConfig::default() }, LIMITS) });
    let config = proptest::test_runner::Config { cases: 64, ..Default::default() };
    proptest::proptest!(config, |(bytes in proptest::collection::vec(any::<u8>(), 0..600), model_is_served in any::<bool>())| {
        runtime.block_on(async {
            if let Ok(request) = PredictRequest::decode(bytes.as_slice()) {
                let model = if model_is_served { "mlp" } else { request.model.as_str() };
                let _ = core.predict(model, "", request.positions, request.previous).await;
            }
            if let Ok(request) = RolloutRequest::decode(bytes.as_slice()) {
                let start = RolloutStart { positions: request.positions, previous: request.previous, steps: request.steps.min(5), emit_every: request.emit_every, sample: request.sample, seed: request.seed };
                let model = if model_is_served { "mlp" } else { request.model.as_str() };
                if let Ok(mut frames) = core.rollout(model, "", start) {
                    while frames.next().await.is_some() {}
                }
            }
        });
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_load_on_shipped_models_runs_without_errors_or_cut_rollouts() {
    use equiserve::client::load::{LoadConfig, LoadKind, Scenario, run};
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let dir = tempfile::tempdir().expect("temp dir");
    for model in ["mlp", "pairforce-h4"] {
        std::os::unix::fs::symlink(shipped.join(model), dir.path().join(model)).expect("link a shipped model");
    }
    let pool = PoolConfig { workers: Some(2), queue_per_worker: 64, ..PoolConfig::default() };
    let server = TestServer::start_with(dir.path(), pool).await;
    let (_, peak_before) = equiserve::serve::memory::resident_and_peak().unwrap_or_default();
    let frames = equiserve::data::simulate(&equiserve::data::SimulationConfig { frames: 256, ..Default::default() }).positions().clone();
    let load = |model: &str, scenario: Scenario| LoadConfig {
        connection: equiserve::client::Connection { uri: server.uri.clone(), ..Default::default() },
        model: model.into(),
        models_dir: None,
        device: ExecutionDevice::Cpu,
        frames: frames.clone(),
        seconds: 6.0,
        rollout_steps: 200,
        emit_every: 1,
        sample: false,
        scenarios: vec![scenario],
    };
    let (predicts, infers, rollouts, history_rollouts) = (
        load("mlp", Scenario { kind: LoadKind::Predict, clients: 96, batch: 1 }),
        load("pairforce-h4", Scenario { kind: LoadKind::Infer, clients: 16, batch: 2 }),
        load("mlp", Scenario { kind: LoadKind::Rollout, clients: 16, batch: 1 }),
        load("pairforce-h4", Scenario { kind: LoadKind::Rollout, clients: 16, batch: 4 }),
    );
    let (predicts, infers, rollouts, history_rollouts) =
        tokio::join!(run(&predicts, |_| {}), run(&infers, |_| {}), run(&rollouts, |_| {}), run(&history_rollouts, |_| {}));
    let (_, peak) = equiserve::serve::memory::resident_and_peak().unwrap_or_default();
    for result in [predicts, infers, rollouts, history_rollouts].into_iter().flat_map(|r| r.expect("load runs")) {
        eprintln!("{}: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms", result.scenario, result.rate, result.p50 * 1e3, result.p99 * 1e3);
        assert!(result.errors.is_empty() && result.rollouts_cut == 0, "{}: {:?}, {} rollouts cut", result.scenario, result.errors, result.rollouts_cut);
        assert!(result.rate > 0.0, "{} made no progress", result.scenario);
    }
    eprintln!("peak RSS of the test process (server and clients): {} MiB (before the load: {} MiB)", peak >> 20, peak_before >> 20);
    assert!(peak < 4 << 30, "peak RSS {} MiB", peak >> 20);
    server.shutdown().await;
}

#[tokio::test]
async fn tls_and_mutual_tls_with_a_rustls_client() {
    use equiserve::serve::grpc::{ServerOptions, serve};
    use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
    let fixture = |name: &str| std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls").join(name)).expect("a TLS fixture");
    let ca = Certificate::from_pem(fixture("ca.pem"));
    // Mutual TLS: clients must show a certificate the test CA signed.
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(fixture("server.pem"), fixture("server.key"))).client_ca_root(ca.clone());
    let registry =
        ModelRepository::open(trained_models_dir(), ExecutionDevice::Cpu, PoolConfig { workers: Some(1), ..PoolConfig::default() }, ModelControl::None)
            .expect("models load");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServerOptions { tls: Some(tls), ..common::TEST_SERVER_OPTIONS };
    let server = tokio::spawn(serve(
        Arc::new(DynamicsCore::new(Arc::new(registry), LIMITS)),
        listener,
        async {
            let _ = stopped.await;
        },
        options,
    ));
    let list = |scheme: &'static str, tls: Option<ClientTlsConfig>| async move {
        let mut endpoint = Channel::from_shared(format!("{scheme}://127.0.0.1:{port}")).expect("uri");
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).expect("client TLS");
        }
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        DynamicsClient::new(channel).list_models(ListModelsRequest {}).await.map(|r| r.into_inner().models.len()).map_err(|e| e.to_string())
    };
    let trusted = ClientTlsConfig::new().ca_certificate(ca.clone()).domain_name("localhost");
    let with_certificate = trusted.clone().identity(Identity::from_pem(fixture("client.pem"), fixture("client.key")));
    assert_eq!(list("https", Some(with_certificate)).await, Ok(1), "a client with the CA and its own certificate is served");
    assert!(list("https", Some(trusted)).await.is_err(), "a client without a certificate is refused");
    assert!(list("http", None).await.is_err(), "plaintext is refused");
    // equiserve-client's connection shows its certificate when given one.
    let connection = |identity| equiserve::client::Connection {
        uri: format!("https://localhost:{port}"),
        tls_ca: Some(fixture("ca.pem")),
        tls_identity: identity,
        token: None,
    };
    let list_with = |connection: equiserve::client::Connection| async move {
        let mut client = equiserve::client::connect(&connection).await.map_err(|e| e.to_string())?;
        client.list_models(ListModelsRequest {}).await.map(|r| r.into_inner().models.len()).map_err(|e| e.to_string())
    };
    assert_eq!(list_with(connection(Some((fixture("client.pem"), fixture("client.key"))))).await, Ok(1));
    assert!(list_with(connection(None)).await.is_err(), "without its certificate the client is refused");
    let _ = stop.send(());
    server.await.expect("server task").expect("server ends cleanly");
}

#[tokio::test]
async fn metrics_are_served_at_their_path_only_and_behind_the_token() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let handle = common::prometheus();
    metrics::counter!("equiserve_metrics_endpoint_test_total").increment(1);
    let tokens = equiserve::serve::grpc::access::AccessTokens::parse("admin metrics-reader-token-42").expect("tokens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(equiserve::serve::grpc::serve_metrics(listener, handle, Some(tokens)));
    let ask = |request: String| async move {
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        answer
    };
    let get = |path: &str, token: &str| format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{token}\r\n");
    let bearer = "Authorization: Bearer metrics-reader-token-42\r\n";
    assert!(ask(get("/metrics", "")).await.starts_with("HTTP/1.1 401"));
    let answer = ask(get("/metrics", bearer)).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("equiserve_metrics_endpoint_test_total 1"), "{answer}");
    for process in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"] {
        assert!(answer.lines().any(|l| l.starts_with(process)), "{process} in the scrape: {answer}");
    }
    assert!(ask(get("/anything", bearer)).await.starts_with("HTTP/1.1 404"));
    let post = format!("POST /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 0\r\n{bearer}\r\n");
    assert!(ask(post).await.starts_with("HTTP/1.1 405"));
    server.abort();
}

#[tokio::test]
async fn rollouts_ended_by_shutdown_say_unavailable() {
    let core = core(PoolConfig { workers: Some(1), ..PoolConfig::default() }, LIMITS);
    let start = RolloutStart {
        positions: random_frames(1, 14).into_iter().map(|v| v * 0.1).collect(),
        previous: Vec::new(),
        steps: 1000,
        emit_every: 1,
        ..Default::default()
    };
    let mut frames = core.rollout("mlp", "", start).expect("admitted");
    frames.next().await.expect("a frame").expect("ok");
    core.rollout_ender().end_all();
    let ending = loop {
        match frames.next().await.expect("the stream ends with an error") {
            Ok(_) => continue,
            Err(error) => break error,
        }
    };
    assert!(matches!(ending, ServeError::ShuttingDown { .. }), "{ending}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while core.rollouts_in_progress().get() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "an ended rollout kept its place");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The HTTP/REST port with the gRPC port's TLS files: a client trusting the CA and
/// showing its certificate is answered; one without a certificate is refused.
#[tokio::test]
async fn rest_over_mutual_tls() {
    use equiserve::serve::rest::{RestOptions, serve_rest, tls_acceptor};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::{
        ClientConfig, RootCertStore,
        crypto::ring::default_provider,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    };
    let fixture = |name: &str| std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls").join(name)).expect("a TLS fixture");
    let acceptor = tls_acceptor(&fixture("server.pem"), &fixture("server.key"), Some(&fixture("ca.pem"))).expect("TLS");
    let registry =
        ModelRepository::open(trained_models_dir(), ExecutionDevice::Cpu, PoolConfig { workers: Some(1), ..PoolConfig::default() }, ModelControl::None)
            .expect("models load");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let options = RestOptions { tokens: None, allow_unauthenticated_admin: false, max_body_bytes: 1 << 20, tls: Some(acceptor) };
    let server = tokio::spawn(serve_rest(listener, Arc::new(DynamicsCore::new(Arc::new(registry), LIMITS)), options));

    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(&fixture("ca.pem")).expect("CA")).expect("root");
    let config = |identity: bool| {
        let builder = ClientConfig::builder_with_provider(Arc::new(default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS")
            .with_root_certificates(roots.clone());
        let config = if identity {
            let chain = CertificateDer::pem_slice_iter(&fixture("client.pem")).collect::<Result<Vec<_>, _>>().expect("client chain");
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(&fixture("client.key")).expect("client key")).expect("client auth")
        } else {
            builder.with_no_client_auth()
        };
        tokio_rustls::TlsConnector::from(Arc::new(config))
    };
    let ask = |connector: tokio_rustls::TlsConnector| async move {
        let tcp = tokio::net::TcpStream::connect(address).await.map_err(|e| e.to_string())?;
        let mut tls = connector.connect(ServerName::try_from("localhost").expect("name"), tcp).await.map_err(|e| e.to_string())?;
        tls.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.map_err(|e| e.to_string())?;
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await.map_err(|e| e.to_string())?;
        Ok::<String, String>(answer)
    };
    let answer = ask(config(true)).await.expect("served over mutual TLS");
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains(r#"{"live":true}"#), "{answer}");
    let refused = ask(config(false)).await;
    assert!(refused.as_ref().map_or(true, |answer| answer.is_empty()), "served without a client certificate: {refused:?}");
    server.abort();
}
