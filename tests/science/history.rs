//! Models that read a window of past frames: ONNX parity with both inputs, E(3)
//! equivariance with the whole window moved, the e3nn history fixture, serving
//! (windows kept by the server, bad windows refused), and a learning check.

use crate::common;

use std::{fs, path::PathBuf, sync::OnceLock};

use common::{TestServer, fixtures_dir, import_fixture, run_ok, train_export};
use equiserve::{
    e3::rotation::{Isometry, equivariance_deviation, random_reflection, random_rotation},
    models::{GateNetwork, GateNetworkConfig, Inertial, Mlp, ModelInputs, OpsModel, PairForce, ParticleNoise, history::ModeFilter},
    nn::Eager,
    onnx::{DX, DX_STD, ExecutionDevice, NamedTensors, OnnxModel, POSITIONS, PREVIOUS, Precision},
    proto::v1::{GetModelRequest, ListModelsRequest, PredictRequest, RolloutRequest},
    train::onnx_graph::{GraphBuilder, signature_of},
    train::relative_error,
};
use ndarray::{ArrayD, IxDyn};
use ndarray_npy::NpzReader;
use prost::Message;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Normal, StandardNormal};
use tonic::Code;

/// Chains of 12 beads ~0.36 apart, and the `held` frames before each, drifting by
/// small steps: a window as a history model reads it.
fn windows(frames: usize, held: usize, rng: &mut StdRng) -> (ArrayD<f64>, ArrayD<f64>) {
    let step = Normal::new(0.0, 0.36 / 3f64.sqrt()).expect("normal");
    let mut positions = ArrayD::<f64>::zeros(IxDyn(&[frames, 12, 3]));
    for f in 0..frames {
        for i in 1..12 {
            for d in 0..3 {
                positions[[f, i, d]] = positions[[f, i - 1, d]] + rng.sample(step);
            }
        }
    }
    let mut previous = ArrayD::<f64>::zeros(IxDyn(&[frames, held, 12, 3]));
    for f in 0..frames {
        for k in (0..held).rev() {
            for i in 0..12 {
                for d in 0..3 {
                    let newer = if k + 1 == held { positions[[f, i, d]] } else { previous[[f, k + 1, i, d]] };
                    previous[[f, k, i, d]] = newer - 0.02 + 0.01 * rng.sample::<f64, _>(StandardNormal);
                }
            }
        }
    }
    (positions, previous)
}

fn seeded<M: OpsModel>(mut model: M, seed: u64) -> M {
    model.init_weights(&mut StdRng::seed_from_u64(seed));
    model
}

/// A pair-force model with every weight set (its own initialisation is persistence),
/// its noise model's included, and a reach that random frames leave on both sides.
fn pair_force(history_frames: usize, seed: u64) -> PairForce {
    let reach = (0..66).map(|pair| (0.5 + 0.01 * pair as f64, 2.0 + 0.01 * pair as f64)).collect();
    let mut model = PairForce::new(history_frames, 4.0, 0.3).with_noise_scale(0.01).with_reach(reach);
    let mut rng = StdRng::seed_from_u64(seed);
    for weights in model.weights_mut() {
        weights.iter_mut().for_each(|w| *w = 0.3 * rng.sample::<f64, _>(StandardNormal));
    }
    for weights in model.noise_weights_mut() {
        weights.iter_mut().for_each(|w| *w = 0.3 * rng.sample::<f64, _>(StandardNormal));
    }
    model
}

fn history_gate_network(history_frames: usize, seed: u64) -> GateNetwork {
    let config = GateNetworkConfig {
        irreps_in: Some(format!("{}x1o", history_frames - 1)),
        irreps_hidden: "4x0e+4x0o+4x1e+4x1o".into(),
        layers: 1,
        ..GateNetworkConfig::study()
    };
    seeded(GateNetwork::new(config).expect("builds"), seed)
}

/// The model's dx through ONNX Runtime, both inputs fed.
fn onnx_dx(model: &impl OpsModel, positions: &ArrayD<f64>, previous: &ArrayD<f64>) -> Vec<f32> {
    onnx_outputs(model, positions, previous).get(DX).expect("dx").iter().copied().collect()
}

/// Every output of the model's graph through ONNX Runtime, both inputs fed.
fn onnx_outputs(model: &impl OpsModel, positions: &ArrayD<f64>, previous: &ArrayD<f64>) -> NamedTensors {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.onnx");
    let mut graph = GraphBuilder::for_model(model, Precision::F32);
    let outputs = graph.emit_outputs(model);
    fs::write(&path, graph.finish(&outputs, "test", &[]).encode_to_vec()).expect("writes");
    let mut session = OnnxModel::load(&path, &signature_of(model), ExecutionDevice::Cpu, 1).expect("loads with its signature");
    let inputs = NamedTensors::new().with(POSITIONS, positions.mapv(|v| v as f32)).with(PREVIOUS, previous.mapv(|v| v as f32));
    session.infer(&inputs).expect("runs")
}

/// The pair-force model's noise: its graph computes the trained dx_std, which is
/// invariant when the whole window is rotated, reflected or translated, and depends on
/// how crowded each particle is.
#[test]
fn pair_force_noise_exports_with_parity_and_is_invariant() {
    let mut rng = StdRng::seed_from_u64(21);
    let (positions, previous) = windows(6, 3, &mut rng);
    let model = pair_force(4, 22);
    let inputs = ModelInputs { positions: &positions, previous: Some(&previous) };
    let std = model.forward_std(&mut Eager, &inputs).expect("stochastic");
    assert_eq!(std.shape(), [6, 12]);
    assert!(std.iter().all(|s| *s > 0.0));
    let exported = onnx_outputs(&model, &positions, &previous);
    let onnx_std: Vec<f32> = exported.get(DX_STD).expect("dx_std").iter().copied().collect();
    let expected: Vec<f32> = std.iter().map(|&v| v as f32).collect();
    let error = relative_error(&onnx_std, &expected);
    assert!(error < 1e-5, "dx_std parity {error:e}");
    let spread = std.iter().fold(0.0_f64, |m, v| m.max(*v)) / std.iter().fold(f64::INFINITY, |m, v| m.min(*v));
    assert!(spread > 1.01, "dx_std depends on the surroundings: {spread}");
    for _ in 0..3 {
        for matrix in [random_rotation(&mut rng), random_reflection(&mut rng)] {
            let translation: [f64; 3] = std::array::from_fn(|_| 3.0 * rng.sample::<f64, _>(StandardNormal));
            let isometry = Isometry { matrix, translation };
            let (x, p) = (isometry.apply(&positions), isometry.apply(&previous));
            let after = model.forward_std(&mut Eager, &ModelInputs { positions: &x, previous: Some(&p) }).expect("stochastic");
            let change = after.iter().zip(std.iter()).fold(0.0_f64, |m, (a, b)| m.max((a - b).abs() / b));
            assert!(change < 1e-10, "dx_std moved with the frame: {change:e}");
        }
    }
}

/// The gate network with history carries a spread per particle: its graph gives the
/// mean and the trained dx_std for any batch, the same in every configuration and so
/// unchanged when the whole window is rotated, reflected or translated.
#[test]
fn a_history_gate_network_s_noise_per_particle_exports_with_parity() {
    let mut rng = StdRng::seed_from_u64(23);
    let mut model = ParticleNoise::new(history_gate_network(3, 24), 0.01);
    for weights in model.noise_weights_mut() {
        weights.iter_mut().for_each(|w| *w = 0.3 * rng.sample::<f64, _>(StandardNormal));
    }
    for frames in [1, 4] {
        let (positions, previous) = windows(frames, 2, &mut rng);
        let inputs = ModelInputs { positions: &positions, previous: Some(&previous) };
        let std = model.forward_std(&mut Eager, &inputs).expect("stochastic");
        assert_eq!(std.shape(), [frames, 12]);
        let exported = onnx_outputs(&model, &positions, &previous);
        let expected: Vec<f32> = std.iter().map(|&v| v as f32).collect();
        let error = relative_error(exported.get(DX_STD).expect("dx_std").as_slice().expect("contiguous"), &expected);
        assert!(error < 1e-5, "dx_std parity at batch {frames}: {error:e}");
        let dx: Vec<f32> = model.forward(&mut Eager, &inputs).iter().map(|&v| v as f32).collect();
        let error = relative_error(exported.get(DX).expect("dx").as_slice().expect("contiguous"), &dx);
        assert!(error < 1e-5, "dx parity at batch {frames}: {error:e}");
        let particles: Vec<f64> = std.index_axis(ndarray::Axis(0), 0).iter().copied().collect();
        assert!(particles.iter().any(|s| (s - particles[0]).abs() > 1e-3 * particles[0]), "each particle its own spread: {particles:?}");
        let isometry = Isometry { matrix: random_reflection(&mut rng), translation: [1.0, -2.0, 0.5] };
        let (x, p) = (isometry.apply(&positions), isometry.apply(&previous));
        let moved = model.forward_std(&mut Eager, &ModelInputs { positions: &x, previous: Some(&p) }).expect("stochastic");
        assert_eq!(moved, std);
    }
}

#[test]
fn history_models_export_with_parity_on_random_windows() {
    let mut rng = StdRng::seed_from_u64(1);
    let (positions, previous) = windows(5, 3, &mut rng);
    // The ONNX graph's and the f64 evaluation's dx for one window.
    type Pair<'a> = &'a dyn Fn(&ArrayD<f64>, &ArrayD<f64>) -> (Vec<f32>, Vec<f32>);
    let check = |name: &str, model: Pair| {
        let (actual, expected) = model(&positions, &previous);
        let error = relative_error(&actual, &expected);
        assert!(error < 1e-5, "{name}: relative error {error:e}");
        assert!(expected.iter().any(|v| v.abs() > 1e-3), "{name}: the check is not empty");
    };
    let f64_eval = |model: &dyn Fn(&ModelInputs<ArrayD<f64>>) -> ArrayD<f64>, x: &ArrayD<f64>, p: &ArrayD<f64>| -> Vec<f32> {
        model(&ModelInputs { positions: x, previous: Some(p) }).iter().map(|&v| v as f32).collect()
    };
    let pair = pair_force(4, 2);
    check("pairforce", &|x, p| (onnx_dx(&pair, x, p), f64_eval(&|i| pair.forward(&mut Eager, i), x, p)));
    let mlp = seeded(Mlp::with_history(4), 3);
    check("mlp", &|x, p| (onnx_dx(&mlp, x, p), f64_eval(&|i| mlp.forward(&mut Eager, i), x, p)));
    let gate = history_gate_network(4, 4);
    check("e3large", &|x, p| (onnx_dx(&gate, x, p), f64_eval(&|i| gate.forward(&mut Eager, i), x, p)));
    let trained = inertial_gate_network(4, 12);
    check("e3large on the chain's inertia", &|x, p| (onnx_dx(&trained, x, p), f64_eval(&|i| trained.forward(&mut Eager, i), x, p)));
}

/// The gate network as `train-export --model e3large --history K` trains it: on top of
/// a filter of the past displacements per chain mode.
fn inertial_gate_network(history_frames: usize, seed: u64) -> Inertial<GateNetwork> {
    let per_mode: Vec<Vec<f64>> = (0..12).map(|m| (0..history_frames - 1).map(|k| 0.8 / (k + 1) as f64 - 0.01 * m as f64).collect()).collect();
    Inertial { filter: ModeFilter::persistence(history_frames).starting_from(&per_mode), forces: history_gate_network(history_frames, seed) }
}

#[test]
fn equivariant_history_models_move_with_the_whole_window() {
    let mut rng = StdRng::seed_from_u64(5);
    let (positions, previous) = windows(3, 2, &mut rng);
    let pair = pair_force(3, 6);
    let gate = history_gate_network(3, 7);
    let trained = inertial_gate_network(3, 13);
    type Forward<'a> = &'a dyn Fn(&[ArrayD<f64>]) -> ArrayD<f64>;
    let models: [(&str, Forward); 3] = [
        ("pairforce", &|x| pair.forward(&mut Eager, &ModelInputs { positions: &x[0], previous: Some(&x[1]) })),
        ("e3large", &|x| gate.forward(&mut Eager, &ModelInputs { positions: &x[0], previous: Some(&x[1]) })),
        ("e3large on the chain's inertia", &|x| trained.forward(&mut Eager, &ModelInputs { positions: &x[0], previous: Some(&x[1]) })),
    ];
    for (name, forward) in models {
        let mut f = |x: &[ArrayD<f64>]| forward(x);
        let inputs = [positions.clone(), previous.clone()];
        let scale = f(&inputs).iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        assert!(scale > 1e-6, "{name}: output vanishes");
        for _ in 0..3 {
            for matrix in [random_rotation(&mut rng), random_reflection(&mut rng)] {
                let translation = std::array::from_fn(|_| 3.0 * rng.sample::<f64, _>(StandardNormal));
                let error = equivariance_deviation(&mut f, &inputs, &Isometry { matrix, translation }) / scale;
                assert!(error < 1e-10, "{name}: {error:e}");
            }
        }
        // Moving frame t alone, not its past, changes the velocities: the check is not empty.
        let shifted = [positions.mapv(|v| v + 0.05), previous.clone()];
        let moved = f(&shifted);
        let change = moved.iter().zip(f(&inputs).iter()).fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(change > 1e-6 * scale, "{name} ignores its window");
    }
}

#[test]
fn a_batch_of_windows_gives_what_each_window_gives_alone() {
    let mut rng = StdRng::seed_from_u64(8);
    let (positions, previous) = windows(3, 2, &mut rng);
    let pair = pair_force(3, 9);
    let mlp = seeded(Mlp::with_history(3), 10);
    let gate = history_gate_network(3, 11);
    type Forward<'a> = &'a dyn Fn(&ArrayD<f64>, &ArrayD<f64>) -> ArrayD<f64>;
    let models: [(&str, Forward); 3] = [
        ("pairforce", &|x, p| pair.forward(&mut Eager, &ModelInputs { positions: x, previous: Some(p) })),
        ("mlp", &|x, p| mlp.forward(&mut Eager, &ModelInputs { positions: x, previous: Some(p) })),
        ("e3large", &|x, p| gate.forward(&mut Eager, &ModelInputs { positions: x, previous: Some(p) })),
    ];
    for (name, forward) in models {
        let batch = forward(&positions, &previous);
        for f in 0..3 {
            let one = |a: &ArrayD<f64>| a.slice_axis(ndarray::Axis(0), ndarray::Slice::from(f..f + 1)).to_owned();
            let single = forward(&one(&positions), &one(&previous));
            let error = single.iter().zip(one(&batch).iter()).fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(error < 1e-12, "{name} frame {f}: {error:e}");
        }
    }
}

/// `train-export --model pairforce --model mlp --history 3` on a short simulated trajectory, once.
fn served_history_models() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        run_ok(
            train_export()
                .args([
                    "--model",
                    "pairforce",
                    "--model",
                    "mlp",
                    "--history",
                    "3",
                    "--frames",
                    "600",
                    "--epochs",
                    "30",
                    "--lr",
                    "0.01",
                    "--seed",
                    "2",
                    "--long-steps",
                    "1500",
                    "--out",
                ])
                .arg(dir.path()),
        );
        let path = dir.path().to_path_buf();
        (dir, path)
    })
    .1
}

/// A history model without noise of its own (the MLP here, e3nn's gate network alike)
/// learns a spread per particle after its mean, calibrated on sampled rollouts as the
/// pair-force model's is, and the server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_mlp_learns_a_spread_per_particle_and_serves_it() {
    let card: serde_json::Value = crate::common::card_of(&served_history_models().join("mlp-h3"));
    assert_eq!(card["stochastic"], true);
    assert_eq!(card["onnx"]["outputs"][1]["name"], "dx_std");
    let log_std = card["hyperparameters"]["particle_noise"]["log_std"].as_array().expect("a spread per particle");
    assert_eq!(log_std.len(), 12);
    let noise = &card["noise"];
    assert!(noise["fitted_nll"].as_f64().expect("fitted") < noise["initial_nll"].as_f64().expect("initial"), "{noise}");
    assert!(noise["confinement"].is_null(), "the MLP has no pull towards the centroid: {noise}");
    // Calibrated as the pair-force model's noise is (whose test checks what it reaches:
    // this linear MLP's own mean runs hot over the calibration's rollouts from 600 training frames).
    for figure in ["motion_factor", "calibrated_motion_ratio"] {
        assert!(noise[figure].as_f64().is_some_and(|v| v.is_finite() && v > 0.0), "{figure}: {noise}");
    }
    let rows = card["forecast"]["sampled"]["rows"].as_array().expect("rows");
    let sampled = rows.iter().find(|r| r["name"] == "mlp-h3, sampled").expect("the MLP's samples scored");
    assert!(sampled["ensemble"].as_array().expect("ensemble").iter().all(|s| s["spread_skill"].as_f64().expect("spread/skill") > 0.0), "{sampled}");

    let mut server = TestServer::start(served_history_models()).await;
    let models = server.client.list_models(ListModelsRequest {}).await.expect("list").into_inner().models;
    assert_eq!(models.iter().find(|m| m.name == "mlp-h3").map(|m| m.stochastic), Some(true));
    let request = PredictRequest { model: "mlp-h3".into(), positions: frame(3), previous: [frame(1), frame(2)].concat(), ..Default::default() };
    let answer = server.client.predict(request).await.expect("predict").into_inner();
    assert_eq!(answer.dx_std.len(), 12);
    let scale = card["hyperparameters"]["particle_noise"]["scale"].as_f64().expect("the noise's scale");
    let expected: Vec<f32> = log_std.iter().map(|b| (scale * b.as_f64().expect("b").exp()) as f32).collect();
    let error = relative_error(&answer.dx_std, &expected);
    assert!(error < 1e-5, "served dx_std {:?} vs the card's s·e^b {expected:?}", answer.dx_std);
}

/// A real learning check: trained on simulator data, the pair-force model beats the
/// persistence guess on one-step dx, in the same run on the same frames.
#[test]
fn a_trained_history_model_beats_persistence() {
    let card: serde_json::Value = crate::common::card_of(&served_history_models().join("pairforce-h3"));
    // K is kept once, in the signature: the window input holds K − 1 = 2 frames.
    assert!(card.get("history_frames").is_none(), "K written twice");
    assert_eq!(card["onnx"]["inputs"][1]["name"], "previous");
    assert_eq!(card["onnx"]["inputs"][1]["shape"], serde_json::json!(["batch", "2", "12", "3"]));
    let forecast = &card["forecast"];
    let persistence = forecast["baselines"][1]["dx_mse"].as_f64().expect("persistence");
    let model = forecast["models"][0]["dx_mse"].as_f64().expect("model");
    assert!(model < persistence, "model dx MSE {model:e} vs persistence {persistence:e}");
    assert!(card["equivariance"]["random_reflections"].as_f64().expect("measured") < 1e-5, "{}", card["equivariance"]);
    assert!(card["command"].as_array().expect("command").iter().any(|a| a == "--history"));

    // Stochastic: dx_std in the signature, fitted by likelihood, and sampled rollouts
    // and ensembles scored beside linear-3 with and without its residual's noise.
    assert_eq!(card["stochastic"], true);
    assert_eq!(card["onnx"]["outputs"][1]["name"], "dx_std");
    let noise = &card["noise"];
    assert_eq!(noise["dims"], 2, "the simulator's default chain is planar");
    assert!(noise["fitted_nll"].as_f64().expect("fitted") < noise["initial_nll"].as_f64().expect("initial"), "{noise}");
    // Calibrated on sampled rollouts from training windows: they keep the data's step
    // about the centroid and its size, with a pull towards the centroid (or a push) of its own.
    for ratio in ["calibrated_motion_ratio", "calibrated_size_ratio"] {
        let value = noise[ratio].as_f64().expect(ratio);
        assert!((0.85..1.15).contains(&value), "{ratio} {value}: {noise}");
    }
    // ...and its pair distances, so the filters started from least squares stand.
    let pair_distances = noise["calibrated_pair_distance_w1_ratio"].as_f64().expect("pair distances");
    assert!(pair_distances <= 1.5, "{noise}");
    assert_eq!(card["hyperparameters"]["filter_start"], "least_squares");
    let confinement = noise["confinement"].as_f64().expect("confinement");
    assert_eq!(card["hyperparameters"]["confinement"].as_f64(), Some(confinement));
    assert!(confinement.is_finite(), "a pull (κ > 0) or a push (κ < 0): {noise}");
    // Each distinct pair's reach, over which its radial function is held: a real range.
    let reach = card["hyperparameters"]["reach"].as_array().expect("each pair's reach");
    assert_eq!(reach.len(), 66);
    for range in reach {
        let (near, far) = (range[0].as_f64().expect("nearest"), range[1].as_f64().expect("farthest"));
        assert!(0.0 < near && near < far, "{range}");
    }
    let sampled = &forecast["sampled"];
    assert_eq!(sampled["long_steps"], 1500);
    let rows = sampled["rows"].as_array().expect("rows");
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().expect("name")).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names[1].starts_with("linear-3 + noise") && names[3].starts_with("pairforce-h3") && names[3].ends_with("sampled"), "{names:?}");
    for row in rows {
        let sampled_row = row["sampled"].as_bool().expect("sampled");
        for score in row["ensemble"].as_array().expect("ensemble") {
            let spread_skill = score["spread_skill"].as_f64().expect("spread/skill");
            assert_eq!(spread_skill > 0.0, sampled_row, "{row}");
            assert!(score["crps"].as_f64().expect("crps") > 0.0, "{row}");
        }
        let long = &row["long"];
        assert_eq!(long["flew_apart"], 0, "{row}");
        assert!(long["rg_ratio"].as_f64().expect("rg") > 0.5, "{row}");
    }
    // Sampled, the chain keeps moving.
    assert!(rows[3]["long"]["motion_ratio"].as_f64().expect("motion") > 0.1, "{}", rows[3]);
}

fn frame(seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..36).map(|i| (i / 3) as f32 * 0.3 + 0.01 * rng.sample::<f32, _>(StandardNormal)).collect()
}

#[test]
fn a_served_rollout_keeps_the_window_as_chained_predicts_would() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut server = TestServer::start(served_history_models()).await;
        let models = server.client.list_models(ListModelsRequest {}).await.expect("list").into_inner().models;
        assert_eq!(models.iter().find(|m| m.name == "pairforce-h3").map(|m| m.history_frames), Some(3));
        let card = server.client.get_model(GetModelRequest { name: "pairforce-h3".into(), ..Default::default() }).await.expect("card").into_inner();
        assert_eq!(card.summary.expect("summary").history_frames, 3);

        let (older, old, now) = (frame(1), frame(2), frame(3));
        let steps = 5;
        let request = RolloutRequest {
            model: "pairforce-h3".into(),
            positions: now.clone(),
            previous: [older.clone(), old.clone()].concat(),
            steps,
            emit_every: 1,
            ..Default::default()
        };
        let mut stream = server.client.rollout(request).await.expect("rollout").into_inner();
        let mut streamed = Vec::new();
        while let Some(frame) = stream.message().await.expect("frame") {
            streamed.push(frame.positions);
        }
        // The client keeps the window itself and asks for one step at a time.
        let mut window = vec![older, old, now];
        for (step, served) in streamed.iter().enumerate() {
            let request = PredictRequest {
                model: "pairforce-h3".into(),
                positions: window[2].clone(),
                previous: [window[0].clone(), window[1].clone()].concat(),
                ..Default::default()
            };
            let next = server.client.predict(request).await.expect("predict").into_inner().next_positions;
            assert_eq!(&next, served, "step {}", step + 1);
            window = vec![window[1].clone(), window[2].clone(), next];
        }
        assert_eq!(streamed.len(), steps as usize);
        server.shutdown().await;
    });
}

#[test]
fn bad_windows_are_refused_naming_the_models_history() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut server = TestServer::start(served_history_models()).await;
        let predict = |positions: Vec<f32>, previous: Vec<f32>| PredictRequest { model: "pairforce-h3".into(), positions, previous, ..Default::default() };
        let mut nan = frame(2).repeat(2);
        nan[7] = f32::NAN;
        let cases = [
            ("missing", predict(frame(1), Vec::new()), "history_frames 3"),
            ("too short", predict(frame(1), frame(2)), "history_frames 3"),
            ("one frame short for a batch of two", predict(frame(1).repeat(2), frame(2).repeat(3)), "[2, 2, 12, 3]"),
            ("non-finite", predict(frame(1), nan), "previous[7]"),
        ];
        for (name, request, expected) in cases {
            let status = server.client.predict(request).await.expect_err(name);
            assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
            assert!(status.message().contains(expected), "{name}: {}", status.message());
        }
        let rollout = RolloutRequest { model: "pairforce-h3".into(), positions: frame(1), previous: Vec::new(), steps: 3, emit_every: 1, ..Default::default() };
        let status = server.client.rollout(rollout).await.expect_err("no window");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("history_frames 3"), "{}", status.message());
        server.shutdown().await;
    });
}

#[test]
fn previous_frames_sent_to_a_one_frame_model_are_refused() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut server = TestServer::start(common::trained_models_dir()).await;
        let request = PredictRequest { model: "mlp".into(), positions: frame(1), previous: frame(2), ..Default::default() };
        let status = server.client.predict(request).await.expect_err("previous for K = 1");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("history_frames 1"), "{}", status.message());
        server.shutdown().await;
    });
}

fn read_f32<D: ndarray::Dimension>(reader: &mut NpzReader<fs::File>, name: &str) -> ndarray::Array<f32, D> {
    match reader.by_name::<ndarray::OwnedRepr<f32>, D>(name) {
        Ok(a) => a,
        Err(_) => reader.by_name::<ndarray::OwnedRepr<f64>, D>(name).expect(name).mapv(|v| v as f32),
    }
}

/// The e3nn gate network trained with past displacements as node inputs imports and
/// gives e3nn's outputs through ONNX Runtime and through the server.
#[test]
fn the_e3nn_history_fixture_imports_and_reproduces_its_outputs() {
    let fixture = fixtures_dir().join("e3nn_import_history");
    let out = tempfile::tempdir().expect("temp dir");
    let model_dir = out.path().join("e3large-h3");
    import_fixture(&fixture, &model_dir);

    let mut io = NpzReader::new(fs::File::open(fixture.join("io.npz")).expect("io.npz")).expect("npz");
    let positions: ndarray::Array3<f32> = read_f32(&mut io, "positions");
    let previous: ndarray::Array4<f32> = read_f32(&mut io, "previous");
    let expected: ndarray::Array3<f32> = read_f32(&mut io, "outputs");
    let scale = expected.iter().fold(0.0_f32, |m, v| m.max(v.abs()));

    let mut session = OnnxModel::load(&model_dir.join("model.onnx"), &equiserve::onnx::Signature::dynamics(3), ExecutionDevice::Cpu, 1).expect("loads");
    let inputs = NamedTensors::new().with(POSITIONS, positions.clone().into_dyn()).with(PREVIOUS, previous.clone().into_dyn());
    let actual = session.infer(&inputs).expect("runs").remove(DX).expect("dx");
    let error = relative_error(&actual, &expected);
    assert!(error < 1e-5, "relative error {error:e}");

    let card: serde_json::Value = crate::common::card_of(&model_dir);
    assert_eq!(card["onnx"]["inputs"][1]["shape"][1], "2", "a window of K − 1 = 2 frames");
    for key in ["rotation_37_x", "random_rotations", "random_reflections", "random_translations"] {
        assert!(card["equivariance"][key].as_f64().expect("error") < 1e-5, "{key}: {}", card["equivariance"]);
    }

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut server = TestServer::start(out.path()).await;
        let request = PredictRequest {
            model: "e3large-h3".into(),
            positions: positions.iter().copied().collect(),
            previous: previous.iter().copied().collect(),
            ..Default::default()
        };
        let response = server.client.predict(request).await.expect("predict").into_inner();
        let error = response.dx.iter().zip(&expected).fold(0.0_f32, |m, (a, e)| m.max((a - e).abs()));
        assert!(error / scale < 1e-5, "served relative error {}", error / scale);
        server.shutdown().await;
    });
}

/// `--data` given twice: both trajectories train, both test parts are scored, the card
/// names both files.
#[test]
fn several_trajectories_train_and_score_together() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files: Vec<PathBuf> = [(1, "a.npz"), (2, "b.npz")]
        .iter()
        .map(|(seed, name)| {
            let path = dir.path().join(name);
            run_ok(train_export().args(["simulate", "--frames", "300", "--seed", &seed.to_string(), "--out"]).arg(&path));
            path
        })
        .collect();
    let mut train = train_export();
    train.args(["--model", "pairforce", "--history", "3", "--epochs", "2", "--data"]).arg(&files[0]).arg("--data").arg(&files[1]);
    let card = trained_card(&mut train, &dir.path().join("models"), "pairforce-h3");
    assert!(card["data"]["source"].as_str().expect("first").ends_with("a.npz"));
    assert!(card["more_data"][0]["source"].as_str().expect("second").ends_with("b.npz"));
    // floor(0.8 · 299) = 239 pairs each, the first 2 without a full window: 237 + 237.
    assert_eq!(card["split"]["train_pairs"], 474);
    assert_eq!(card["split"]["test_pairs"], 2 * (299 - 239));
    let forecast = &card["forecast"];
    assert_eq!(forecast["test_pairs"], 2 * (299 - 239));
    assert_eq!(forecast["rollout_starts"].as_array().expect("starts").len(), 20);
}

/// Where the pair-force model's first fit lets a chain's bonds dissolve in sampled
/// rollouts (a cold, nearly frictionless chain: filters started from least squares
/// carry the bonds' long vibration, and the forces barely learn), it is trained again
/// from one-lag filters, and the card says so; the simulator's default chain keeps the
/// first fit (`a_trained_history_model_beats_persistence`).
#[test]
fn a_chain_whose_bonds_dissolve_is_trained_again_with_forces_holding_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("cold.npz");
    run_ok(train_export().args(["simulate", "--frames", "1000", "--seed", "21", "--temperature", "0.03", "--friction", "0.1", "--out"]).arg(&data));
    let mut train = train_export();
    train.args(["--model", "pairforce", "--history", "3", "--epochs", "20", "--validation", "0.1", "--long-steps", "1500", "--data"]).arg(&data);
    let card = trained_card(&mut train, &dir.path().join("models"), "pairforce-h3");
    assert_eq!(card["hyperparameters"]["filter_start"], "one_lag", "{}", card["hyperparameters"]);
    let held = card["noise"]["calibrated_pair_distance_w1_ratio"].as_f64().expect("measured in the calibration");
    assert!(held <= 1.5, "pair distances held: W1 {held}");
    let sampled = card["forecast"]["sampled"]["rows"].as_array().expect("rows").iter().find(|r| r["name"] == "pairforce-h3, sampled").expect("scored");
    let long = &sampled["long"];
    assert_eq!(long["flew_apart"], 0, "{long}");
    assert!(long["pair_distance_w1_ratio"].as_f64().expect("W1") < 1.5, "{long}");
}

/// Trains with `train-export` (`command`, given `--out out`) and reads the card of the
/// model `name`.
fn trained_card(command: &mut std::process::Command, out: &std::path::Path, name: &str) -> serde_json::Value {
    run_ok(command.arg("--out").arg(out));
    crate::common::card_of(&out.join(name))
}
