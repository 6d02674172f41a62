//! The equivariant models of the study's zoo: sizes, E(3) equivariance, training in
//! Burn, and export with parity.

mod common;

use common::{fixtures::load, train_export};
use equiserve::{
    data::{SimulationConfig, Split, SplitConfig, simulate},
    e3::rotation::{random_reflection, random_rotation},
    models::{E3Small, GateNetwork, GateNetworkConfig, OpsModel},
    nn::Eager,
    train::{TrainConfig, fit_ops},
};
use ndarray::{ArrayD, Axis, IxDyn};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

#[test]
fn equivariant_models_have_the_studys_sizes() {
    let e3small = E3Small::new();
    let e3large = GateNetwork::new(GateNetworkConfig::study()).expect("builds");
    assert_eq!(e3small.num_params(), 344);
    assert_eq!(e3large.num_params(), 102_905);
    if let Some(counts) = load("seed_model_param_counts.json") {
        assert_eq!(e3small.num_params() as u64, counts["e3small"].as_u64().expect("count"));
        assert_eq!(e3large.num_params() as u64, counts["e3large"].as_u64().expect("count"));
    }
}

#[test]
fn e3small_is_e3_equivariant() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut model = E3Small::new();
    model.init_weights(&mut rng);
    // Chains with bonds of about 0.36, so that some pairs fall outside the radius.
    let mut positions = ArrayD::<f64>::zeros(IxDyn(&[2, 12, 3]));
    for f in 0..2 {
        for i in 1..12 {
            for d in 0..3 {
                positions[[f, i, d]] = positions[[f, i - 1, d]] + 0.5 * rng.sample::<f64, _>(StandardNormal);
            }
        }
    }
    let out = model.forward(&mut Eager, &positions);
    let elements: Vec<_> = (0..3).flat_map(|_| [random_rotation(&mut rng), random_reflection(&mut rng)]).collect();
    for m in elements {
        let t: [f64; 3] = std::array::from_fn(|_| 4.0 * rng.sample::<f64, _>(StandardNormal));
        let moved = positions.map_axis(Axis(2), |p| [0, 1, 2].map(|i| m[i][0] * p[0] + m[i][1] * p[1] + m[i][2] * p[2] + t[i]));
        let moved = ArrayD::from_shape_fn(IxDyn(&[2, 12, 3]), |ix| moved[[ix[0], ix[1]]][ix[2]]);
        let moved_out = model.forward(&mut Eager, &moved);
        let expected = out.map_axis(Axis(2), |v| [0, 1, 2].map(|i| m[i][0] * v[0] + m[i][1] * v[1] + m[i][2] * v[2]));
        let scale = out.iter().fold(1.0_f64, |a, v| a.max(v.abs()));
        for ((f, p, d), value) in moved_out.view().into_dimensionality::<ndarray::Ix3>().expect("rank 3").indexed_iter() {
            assert!((value - expected[[f, p]][d]).abs() < 1e-9 * scale, "frame {f} particle {p}");
        }
    }
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

#[test]
fn equivariant_models_train_export_and_keep_their_symmetry_through_onnx() {
    let out = tempfile::tempdir().expect("temp dir");
    let output = train_export()
        .args(["--model", "e3small", "--model", "e3large", "--frames", "60", "--epochs", "1", "--out"])
        .arg(out.path())
        .output()
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for (name, params) in [("e3small", 344), ("e3large", 102_905)] {
        let card: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join(name).join("card.json")).expect("card")).expect("json");
        assert_eq!(card["params"], params);
        assert_eq!(card["equivariant"], true);
        assert!(card["onnx"]["parity_relative_error"].as_f64().expect("parity") < 1e-5);
        let rotation = card["equivariance"]["random_rotations"].as_f64().expect("error");
        let scale = card["metrics"]["test"]["mse"].as_f64().expect("mse").sqrt().max(1.0);
        assert!(rotation < 1e-4 * scale, "{name}: rotation error {rotation}");
    }
}
