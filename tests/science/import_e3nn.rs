//! Importing an e3nn gate network trained in PyTorch: fixture → ONNX → ONNX Runtime
//! → the outputs e3nn computed, and clear errors for bad files.

use crate::common;

use std::{fs, path::PathBuf};

use common::{TestServer, fixtures_dir, import_fixture, train_export};
use equiserve::{
    onnx::{ExecutionDevice, OnnxModel, Signature},
    proto::v1::PredictRequest,
};
use ndarray::{Array3, Ix3};
use ndarray_npy::NpzReader;

fn fixture_dir() -> PathBuf {
    fixtures_dir().join("e3nn_import_seed")
}

fn read_f32(reader: &mut NpzReader<fs::File>, name: &str) -> Array3<f32> {
    match reader.by_name::<ndarray::OwnedRepr<f32>, Ix3>(name) {
        Ok(a) => a,
        Err(_) => reader.by_name::<ndarray::OwnedRepr<f64>, Ix3>(name).expect(name).mapv(|v| v as f32),
    }
}

#[test]
fn imported_network_reproduces_e3nn_through_onnx_runtime() {
    let fixture = fixture_dir();
    let out = tempfile::tempdir().expect("temp dir");
    let model_dir = out.path().join("e3large");
    import_fixture(&fixture, &model_dir);

    let mut io = NpzReader::new(fs::File::open(fixture.join("io.npz")).expect("io.npz")).expect("npz");
    let (positions, expected) = (read_f32(&mut io, "positions"), read_f32(&mut io, "outputs"));
    let mut model = OnnxModel::load(&model_dir.join("model.onnx"), &Signature::dynamics(1), ExecutionDevice::Cpu, 1).expect("loads");
    let actual = model.run(positions.view()).expect("runs");
    let scale = expected.iter().fold(0.0_f32, |m, v| m.max(v.abs()));
    let error = actual.iter().zip(&expected).fold(0.0_f32, |m, (a, e)| m.max((a - e).abs()));
    assert!(error / scale < 1e-5, "relative error {}", error / scale);

    let card: serde_json::Value = crate::common::card_of(&model_dir);
    assert_eq!(card["name"], "e3large");
    assert_eq!(card["params"], 102_905);
    assert_eq!(card["architecture"], "gate_points_2101.Network");
    // f32 through ONNX Runtime: within 1e-5 of exact equivariance (outputs are of order 1).
    for key in ["rotation_37_x", "random_rotations", "random_reflections", "random_translations"] {
        assert!(card["equivariance"][key].as_f64().expect("error") < 1e-5, "{key}: {}", card["equivariance"]);
    }

    // Served like any other model: Predict gives e3nn's outputs.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut server = TestServer::start(out.path()).await;
        let request = PredictRequest { model: "e3large".into(), positions: positions.iter().copied().collect(), previous: Vec::new(), ..Default::default() };
        let response = server.client.predict(request).await.expect("predict").into_inner();
        let error = response.dx.iter().zip(&expected).fold(0.0_f32, |m, (a, e)| m.max((a - e).abs()));
        assert!(error / scale < 1e-5, "served relative error {}", error / scale);
        server.shutdown().await;
    });
}

#[test]
fn bad_import_files_are_named_with_the_problem() {
    let fixture = fixture_dir();
    let scratch = tempfile::tempdir().expect("temp dir");
    let kwargs: serde_json::Value = serde_json::from_str(&fs::read_to_string(fixture.join("kwargs.json")).expect("kwargs")).expect("json");
    let write_kwargs = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let mut k = kwargs.clone();
        edit(&mut k);
        let path = scratch.path().join(name);
        fs::write(&path, k.to_string()).expect("write");
        path
    };
    let run = |kwargs: &PathBuf, weights: &PathBuf| {
        let output = train_export()
            .args(["import-e3nn", "--kwargs"])
            .arg(kwargs)
            .arg("--weights")
            .arg(weights)
            .arg("--out")
            .arg(scratch.path().join("out"))
            .output()
            .expect("runs");
        assert!(!output.status.success());
        let message = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!message.contains("panicked"), "{message}");
        message
    };
    let weights = fixture.join("weights.safetensors");

    let unknown = write_kwargs("unknown.json", &|k| k["colour"] = "blue".into());
    let message = run(&unknown, &weights);
    assert!(message.contains("unknown.json") && message.contains("colour"), "{message}");

    // Two layers where the weights have three: a tensor goes unused, one is the wrong shape.
    let fewer_layers = write_kwargs("fewer.json", &|k| k["layers"] = 2.into());
    let message = run(&fewer_layers, &weights);
    assert!(message.contains("weights.safetensors") && message.contains("layers."), "{message}");

    let wider = write_kwargs("wider.json", &|k| k["radial_neurons"] = 64.into());
    let message = run(&wider, &weights);
    assert!(message.contains("fc.layer0.weight") && message.contains("[10, 64]"), "{message}");

    let bad_irreps = write_kwargs("irreps.json", &|k| k["irreps_hidden"] = "8x0q".into());
    let message = run(&bad_irreps, &weights);
    assert!(message.contains("irreps_hidden") && message.contains("8x0q"), "{message}");

    let reduced = write_kwargs("reduced.json", &|k| k["reduce_output"] = true.into());
    assert!(run(&reduced, &weights).contains("reduce_output"));

    let not_weights = scratch.path().join("weights.safetensors");
    fs::write(&not_weights, b"definitely not safetensors").expect("write");
    let message = run(&fixture.join("kwargs.json"), &not_weights);
    assert!(message.contains("not a safetensors file"), "{message}");
    assert!(!scratch.path().join("out/model.onnx").exists(), "a failed import left a model behind");
}

/// Other kwargs than the study's (smaller harmonics, fewer and different layers, a
/// deeper radial network) import too, with parity and equivariance through ONNX.
#[test]
fn other_gate_network_kwargs_import() {
    use equiserve::models::{GateNetwork, GateNetworkConfig};
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use safetensors::{Dtype, tensor::TensorView};

    let config = GateNetworkConfig {
        irreps_in: None,
        irreps_hidden: "4x0e+4x0o+4x1o+4x1e+2x2e".into(),
        irreps_out: "1x1o".into(),
        irreps_node_attr: None,
        irreps_edge_attr: "1x0e+1x1o+1x2e".into(),
        layers: 2,
        max_radius: 2.5,
        number_of_basis: 8,
        radial_layers: 2,
        radial_neurons: 16,
        num_neighbors: 5.0,
        num_nodes: 12.0,
        reduce_output: false,
    };
    let network = GateNetwork::new(config.clone()).expect("valid kwargs");
    let mut rng = StdRng::seed_from_u64(4);
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = network
        .parameter_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let bytes = (0..shape.iter().product::<usize>()).flat_map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal).to_le_bytes()).collect();
            (name, shape, bytes)
        })
        .collect();
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(name, shape, bytes)| (name.clone(), TensorView::new(Dtype::F32, shape.clone(), bytes).expect("view"))).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let weights = dir.path().join("weights.safetensors");
    fs::write(&weights, safetensors::serialize(views, None).expect("serialize")).expect("write");
    let kwargs = dir.path().join("kwargs.json");
    fs::write(&kwargs, serde_json::to_string(&config).expect("json")).expect("write");

    let model_dir = dir.path().join("small_gate");
    crate::common::run_ok(train_export().args(["import-e3nn", "--kwargs"]).arg(&kwargs).arg("--weights").arg(&weights).arg("--out").arg(&model_dir));
    let card: serde_json::Value = crate::common::card_of(&model_dir);
    assert_eq!(card["params"], network.num_params());
    assert!(card["onnx"]["parity_relative_error"].as_f64().expect("parity") < 1e-5);
    let worst = ["rotation_37_x", "random_rotations", "random_reflections", "random_translations"]
        .iter()
        .map(|k| card["equivariance"][k].as_f64().expect("error"))
        .fold(0.0, f64::max);
    // Errors are absolute; judge them against the size of the outputs (f32: 1e-5).
    let mut frames = Array3::<f32>::zeros((8, 12, 3));
    for f in 0..8 {
        for i in 1..12 {
            for d in 0..3 {
                frames[[f, i, d]] = frames[[f, i - 1, d]] + 0.2 * rng.sample::<f32, _>(rand_distr::StandardNormal);
            }
        }
    }
    let mut onnx = OnnxModel::load(&model_dir.join("model.onnx"), &Signature::dynamics(1), ExecutionDevice::Cpu, 1).expect("loads");
    let scale = onnx.run(frames.view()).expect("runs").iter().fold(0.0_f32, |m, v| m.max(v.abs()));
    assert!(worst / f64::from(scale) < 1e-5, "equivariance error {worst} for outputs up to {scale}");
}
