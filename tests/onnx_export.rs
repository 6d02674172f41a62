//! The exported graph computes the trained model's function, and an export whose
//! graph does not is refused without touching the previous files.

use burn::{module::Module, tensor::Tensor};
use equiserve::{
    card::DataInfo,
    data::{SimulationConfig, Split, SplitConfig, simulate},
    models::{DynamicsModel, Mlp, ModelKind},
    onnx::{ExecutionDevice, GraphBuilder, OnnxModel},
    train::{BurnModule, ExportError, ExportRequest, TrainConfig, export_model, predict_dx, training_device},
};
use ndarray::Array3;
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Normal};

fn split() -> Split {
    let trajectory = simulate(&SimulationConfig { frames: 60, equilibration_steps: 100, ..Default::default() });
    Split::new(&trajectory, &SplitConfig::default()).expect("split")
}

fn request<'a>(out_dir: &'a std::path::Path, split: &'a Split, config: &'a TrainConfig) -> ExportRequest<'a> {
    ExportRequest {
        kind: ModelKind::Mlp,
        out_dir,
        split,
        split_config: SplitConfig::default(),
        data: DataInfo { source: "test".into(), sha256: String::new(), frames: 60, simulation: None },
        config,
        history: Vec::new(),
    }
}

#[test]
fn exported_mlp_matches_burn_on_random_inputs() {
    let device = training_device(11);
    let model = Mlp::new(&device);
    let dir = tempfile::tempdir().expect("temp dir");
    let (split, config) = (split(), TrainConfig::default());
    let outcome = export_model(&BurnModule { model: &model, device: &device }, request(dir.path(), &split, &config)).expect("exports");
    assert!(outcome.card.onnx.parity_relative_error < 1e-5);
    assert_eq!(outcome.card.params, 8_868);

    let mut onnx = OnnxModel::load(&outcome.dir.join("model.onnx"), ExecutionDevice::Cpu, 1).expect("loads");
    let mut rng = StdRng::seed_from_u64(5);
    // Positions on the scale of the study's data (coordinates around 26).
    let normal = Normal::new(20.0, 10.0).expect("normal");
    for batch in [1, 7, 64] {
        let x = Array3::from_shape_simple_fn((batch, 12, 3), || normal.sample(&mut rng));
        let expected = predict_dx(&model, x.view(), config.target, &device);
        let actual = onnx.run(x.view()).expect("runs");
        let scale = expected.iter().fold(0.0_f32, |m, v| m.max(v.abs()));
        let error = actual.iter().zip(&expected).fold(0.0_f32, |m, (a, e)| m.max((a - e).abs()));
        assert!(error / scale < 1e-5, "batch {batch}: relative error {}", error / scale);
    }
}

/// The MLP, with an ONNX graph that adds 1e-3 to every output: a broken exporter.
#[derive(Module, Debug)]
struct Skewed {
    inner: Mlp,
}

impl DynamicsModel for Skewed {
    fn forward(&self, positions: Tensor<3>) -> Tensor<3> {
        self.inner.forward(positions)
    }

    fn emit_onnx(&self, graph: &mut GraphBuilder, positions: &str) -> String {
        let out = self.inner.emit_onnx(graph, positions);
        let offset = graph.constant_f32("offset", &[1], &[1e-3]);
        graph.add(&out, &offset)
    }
}

#[test]
fn a_graph_that_differs_from_the_model_is_refused_and_old_files_survive() {
    let device = training_device(12);
    let dir = tempfile::tempdir().expect("temp dir");
    let (split, config) = (split(), TrainConfig::default());
    export_model(&BurnModule { model: &Mlp::new(&device), device: &device }, request(dir.path(), &split, &config)).expect("first export");
    let model_file = dir.path().join("mlp/model.onnx");
    let before = std::fs::read(&model_file).expect("model");

    let broken = Skewed { inner: Mlp::new(&device) };
    match export_model(&BurnModule { model: &broken, device: &device }, request(dir.path(), &split, &config)) {
        Err(ExportError::Parity { error, .. }) => assert!(error > 1e-5),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a graph that differs from the model was exported"),
    }
    assert_eq!(std::fs::read(&model_file).expect("model"), before, "previous model replaced");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("mlp"))
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "staged files left behind");
}
