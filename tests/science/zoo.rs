//! The equivariant models of the study's zoo: sizes, E(3) equivariance, training in
//! Burn, and export with parity.

use crate::common;

use common::{fixtures::load, train_export};
use equiserve::{
    data::{SimulationConfig, Split, SplitConfig, simulate},
    e3::rotation::{Isometry, equivariance_deviation, random_reflection, random_rotation},
    models::{E3Small, GateNetwork, GateNetworkConfig, Gnn, ModelInputs, OpsModel, Se3Transformer},
    nn::Eager,
    train::{TrainConfig, fit_ops},
};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

#[test]
fn every_model_has_the_studys_size() {
    let sizes: [(&str, usize, usize); 7] = [
        ("gnn", Gnn::new().num_params(), 1_369_091),
        ("e3small", E3Small::new().num_params(), 344),
        ("e3large", GateNetwork::new(GateNetworkConfig::study()).expect("builds").num_params(), 102_905),
        ("se3mha", Se3Transformer::attention(false).num_params(), 166_352),
        ("se3net", Se3Transformer::transformer(false).num_params(), 332_864),
        ("se3mha", Se3Transformer::attention(true).num_params(), 166_352),
        ("se3net", Se3Transformer::transformer(true).num_params(), 332_864),
    ];
    let fixture = load("seed_model_param_counts.json");
    for (name, ours, study) in sizes {
        assert_eq!(ours, study, "{name}");
        assert_eq!(ours as u64, fixture[name].as_u64().expect("count"), "{name}");
    }
}

/// Chains with steps of about `step` per axis: some pairs fall outside every radius.
fn chains(frames: usize, step: f64, rng: &mut StdRng) -> ArrayD<f64> {
    let mut positions = ArrayD::<f64>::zeros(IxDyn(&[frames, 12, 3]));
    for f in 0..frames {
        for i in 1..12 {
            for d in 0..3 {
                positions[[f, i, d]] = positions[[f, i - 1, d]] + step * rng.sample::<f64, _>(StandardNormal);
            }
        }
    }
    positions
}

/// The largest |f(g·x) − g·f(x)| over the given elements of E(3), relative to max |f(x)|.
fn equivariance_error(model: &impl OpsModel, positions: &ArrayD<f64>, elements: &[Isometry]) -> f64 {
    let mut forward = |x: &[ArrayD<f64>]| model.forward(&mut Eager, &ModelInputs::snapshot(&x[0]));
    let scale = forward(std::slice::from_ref(positions)).iter().fold(0.0_f64, |a, v| a.max(v.abs()));
    assert!(scale > 1e-6, "the model's output vanishes ({scale:e}), so the check would be empty");
    let worst = elements.iter().map(|g| equivariance_deviation(&mut forward, std::slice::from_ref(positions), g)).fold(0.0, f64::max);
    worst / scale
}

fn random_elements(rng: &mut StdRng, translate: bool) -> Vec<Isometry> {
    let mut elements = Vec::new();
    for _ in 0..3 {
        for matrix in [random_rotation(rng), random_reflection(rng)] {
            let translation = std::array::from_fn(|_| if translate { 4.0 * rng.sample::<f64, _>(StandardNormal) } else { 0.0 });
            elements.push(Isometry { matrix, translation });
        }
    }
    elements
}

fn seeded<M: OpsModel>(mut model: M, seed: u64) -> M {
    model.init_weights(&mut StdRng::seed_from_u64(seed));
    model
}

#[test]
fn e3small_is_e3_equivariant() {
    let mut rng = StdRng::seed_from_u64(5);
    let model = seeded(E3Small::new(), 5);
    let positions = chains(2, 0.5, &mut rng);
    let error = equivariance_error(&model, &positions, &random_elements(&mut rng, true));
    assert!(error < 1e-9, "{error:e}");
}

#[test]
fn centered_attention_models_are_e3_equivariant() {
    let mut rng = StdRng::seed_from_u64(6);
    let positions = chains(2, 0.6, &mut rng);
    let elements = random_elements(&mut rng, true);
    for model in [Se3Transformer::attention(true), Se3Transformer::new(2, 2, true)] {
        let error = equivariance_error(&seeded(model, 6), &positions, &elements);
        assert!(error < 1e-9, "{error:e}");
    }
}

#[test]
fn faithful_attention_models_are_rotation_equivariant_but_move_with_the_origin() {
    let mut rng = StdRng::seed_from_u64(7);
    let positions = chains(2, 0.6, &mut rng);
    let rotations = random_elements(&mut rng, false);
    let translations = random_elements(&mut rng, true);
    for model in [Se3Transformer::attention(false), Se3Transformer::new(2, 2, false)] {
        let model = seeded(model, 7);
        let error = equivariance_error(&model, &positions, &rotations);
        assert!(error < 1e-9, "{error:e}");
        // The study feeds raw positions as features: a shift of the frame changes dx.
        let error = equivariance_error(&model, &positions, &translations);
        assert!(error > 1e-3, "{error:e}");
    }
}

#[test]
fn gnn_ignores_translations_but_not_rotations() {
    let mut rng = StdRng::seed_from_u64(8);
    let positions = chains(2, 0.6, &mut rng);
    let model = seeded(Gnn::new(), 8);
    let shifts: Vec<_> = (0..3).map(|_| Isometry::translation(std::array::from_fn(|_| 4.0 * rng.sample::<f64, _>(StandardNormal)))).collect();
    let error = equivariance_error(&model, &positions, &shifts);
    assert!(error < 1e-9, "{error:e}");
    let error = equivariance_error(&model, &positions, &random_elements(&mut rng, false));
    assert!(error > 1e-3, "{error:e}");
}

/// The study's forward pass is one frame at a time: a batch must give the same.
#[test]
fn a_batch_of_frames_gives_what_each_frame_gives_alone() {
    let mut rng = StdRng::seed_from_u64(9);
    let positions = chains(3, 0.6, &mut rng);
    let check = |name: &str, forward: &dyn Fn(&ArrayD<f64>) -> ArrayD<f64>| {
        let batch = forward(&positions);
        for f in 0..3 {
            let single = forward(&positions.slice(ndarray::s![f..f + 1, .., ..]).to_owned().into_dyn());
            let error = single.iter().zip(batch.slice(ndarray::s![f..f + 1, .., ..]).iter()).fold(0.0_f64, |a, (x, y)| a.max((x - y).abs()));
            assert!(error < 1e-12, "{name} frame {f}: {error:e}");
        }
    };
    let gnn = seeded(Gnn::new(), 9);
    check("gnn", &|x| gnn.forward(&mut Eager, &ModelInputs::snapshot(x)));
    let se3 = seeded(Se3Transformer::new(2, 2, false), 9);
    check("se3net", &|x| se3.forward(&mut Eager, &ModelInputs::snapshot(x)));
}

#[test]
fn e3small_learns_in_burn() {
    let trajectory = simulate(&SimulationConfig { frames: 120, equilibration_steps: 500, ..Default::default() });
    let split = Split::new(&trajectory, &SplitConfig::default()).expect("split");
    let mut model = E3Small::new();
    model.init_weights(&mut StdRng::seed_from_u64(0));
    let config = TrainConfig { epochs: 6, batch_size: 16, learning_rate: 1e-2, ..Default::default() };
    let history = fit_ops(&mut model, &split, &config, |_| {});
    let (first, last) = (history.first().expect("epochs"), history.last().expect("epochs"));
    assert!(last.train_mse < 0.5 * first.train_mse, "train MSE {} → {}", first.train_mse, last.train_mse);
    assert!(history.iter().all(|s| s.test_mse.is_finite()));
}

/// Attention and the GNN learn in Burn; stacked attention blocks train with finite
/// gradients (a block's output positions include each particle's zero distance to
/// itself, where √ has no derivative).
#[test]
fn attention_models_and_the_gnn_learn_in_burn() {
    let trajectory = simulate(&SimulationConfig { frames: 60, equilibration_steps: 500, ..Default::default() });
    let split = Split::new(&trajectory, &SplitConfig::default()).expect("split");
    let config = TrainConfig { epochs: 4, batch_size: 16, learning_rate: 1e-2, ..Default::default() };
    let finite = |name: &str, history: &[equiserve::train::EpochStats]| {
        assert!(history.iter().all(|s| s.train_mse.is_finite() && s.test_mse.is_finite()), "{name}: {history:?}");
    };
    let check = |name: &str, history: Vec<equiserve::train::EpochStats>| {
        finite(name, &history);
        let (first, last) = (history.first().expect("epochs"), history.last().expect("epochs"));
        assert!(last.train_mse < first.train_mse, "{name}: train MSE {} → {}", first.train_mse, last.train_mse);
    };
    let mut se3 = seeded(Se3Transformer::new(1, 2, true), 12);
    check("se3mha-centered (2 heads)", fit_ops(&mut se3, &split, &config, |_| {}));
    // The study feeds each block's output (here ~1e-2) to the next as positions, so a
    // second block's output is tiny and barely learns; its gradients must still be finite.
    let mut se3 = seeded(Se3Transformer::new(2, 2, true), 12);
    finite("se3net-centered (2 blocks of 2 heads)", &fit_ops(&mut se3, &split, &config, |_| {}));
    let mut gnn = seeded(Gnn::new(), 12);
    let config = TrainConfig { learning_rate: 1e-4, ..config };
    check("gnn", fit_ops(&mut gnn, &split, &config, |_| {}));
}

#[test]
fn equivariant_models_train_export_and_keep_their_symmetry_through_onnx() {
    let out = tempfile::tempdir().expect("temp dir");
    crate::common::run_ok(train_export().args(["--model", "e3small", "--model", "e3large", "--frames", "60", "--epochs", "1", "--out"]).arg(out.path()));
    for (name, params) in [("e3small", 344), ("e3large", 102_905)] {
        let card: serde_json::Value = crate::common::card_of(&out.path().join(name));
        assert_eq!(card["params"], params);
        assert_eq!(card["equivariant"], true);
        assert!(card["onnx"]["parity_relative_error"].as_f64().expect("parity") < 1e-5);
        let rotation = card["equivariance"]["random_rotations"].as_f64().expect("error");
        let scale = card["metrics"]["test"]["mse"].as_f64().expect("mse").sqrt().max(1.0);
        assert!(rotation < 1e-4 * scale, "{name}: rotation error {rotation}");
    }
}

/// The rest of the zoo through the whole product: train-export (with its ONNX parity
/// check), then the server: GetModel, Predict (a batch equals its frames one at a
/// time, for the faithful attention model too) and Rollout (equal to chained Predicts).
#[tokio::test(flavor = "multi_thread")]
async fn attention_and_graph_models_are_trained_exported_and_served() {
    use common::TestServer;
    use equiserve::{
        data::FRAME_LEN,
        proto::v1::{GetModelRequest, PredictRequest, RolloutRequest},
    };
    use tokio_stream::StreamExt;

    let out = tempfile::tempdir().expect("temp dir");
    // se3net's blocks are se3mha's; its symmetry and batching are checked above in f64.
    let models = [("gnn", 1_369_091), ("se3mha", 166_352)];
    let mut command = train_export();
    for (name, _) in models {
        command.args(["--model", name]);
    }
    crate::common::run_ok(command.args(["--frames", "40", "--epochs", "1", "--out"]).arg(out.path()));

    let mut server = TestServer::start(out.path()).await;
    let mut rng = StdRng::seed_from_u64(10);
    let frames = chains(3, 0.6, &mut rng);
    let positions: Vec<f32> = frames.iter().map(|&v| v as f32).collect();
    for (name, params) in models {
        let info = server.client.get_model(GetModelRequest { name: name.into(), ..Default::default() }).await.expect("get").into_inner();
        assert_eq!(info.summary.expect("summary").params, params);
        let card: serde_json::Value = serde_json::from_str(&info.card_json).expect("card json");
        assert!(card["onnx"]["parity_relative_error"].as_f64().expect("parity") < 1e-5, "{name}");

        let request = |positions: Vec<f32>| PredictRequest { model: name.into(), positions, previous: Vec::new(), ..Default::default() };
        let batch = server.client.predict(request(positions.clone())).await.expect("predict").into_inner();
        assert!(batch.dx.iter().all(|v| v.is_finite()), "{name}");
        // Equal up to f32 rounding: the runtime sums in a different order for other shapes.
        let tolerance = 1e-4 * batch.dx.iter().fold(0.0_f32, |m, v| m.max(v.abs()));
        for f in 0..3 {
            let frame = positions[f * FRAME_LEN..(f + 1) * FRAME_LEN].to_vec();
            let single = server.client.predict(request(frame)).await.expect("predict").into_inner();
            for (a, b) in single.dx.iter().zip(&batch.dx[f * FRAME_LEN..(f + 1) * FRAME_LEN]) {
                assert!((a - b).abs() <= tolerance, "{name} frame {f}: {a} vs {b}");
            }
        }

        let start = positions[..FRAME_LEN].to_vec();
        let rollout = RolloutRequest { model: name.into(), positions: start.clone(), steps: 3, emit_every: 1, previous: Vec::new(), ..Default::default() };
        let streamed: Vec<_> = server.client.rollout(rollout).await.expect("rollout").into_inner().collect::<Vec<_>>().await;
        assert_eq!(streamed.len(), 3, "{name}");
        let mut x = start;
        for frame in streamed {
            x = server.client.predict(request(x)).await.expect("predict").into_inner().next_positions;
            assert_eq!(frame.expect("frame").positions, x, "{name}");
        }
    }
    server.shutdown().await;
}
