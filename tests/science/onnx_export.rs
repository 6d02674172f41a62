//! The exported graph computes the trained model's function, and an export whose
//! graph does not is refused without touching the previous files.

use equiserve::{
    card::DataInfo,
    data::{SimulationConfig, Split, SplitConfig, Target, Trajectory, simulate},
    models::{E3Small, GateNetwork, GateNetworkConfig, Gnn, Mlp, ModelInputs, ModelKind, OpsModel, OutputScaled, Se3Transformer},
    nn::{Eager, Ops},
    onnx::{ExecutionDevice, OnnxModel, Precision, Signature},
    train::onnx_graph::GraphBuilder,
    train::{ExportError, ExportRequest, ExportableModel, OpsTrained, TrainConfig, export_model, predict_dx_ops, relative_error, render_report},
};
use ndarray::{Array3, ArrayView3, ArrayView4};
use prost::Message;
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Normal};

fn trajectory() -> &'static Trajectory {
    static TRAJECTORY: std::sync::OnceLock<Trajectory> = std::sync::OnceLock::new();
    TRAJECTORY.get_or_init(|| simulate(&SimulationConfig { frames: 60, equilibration_steps: 100, ..Default::default() }))
}

fn split() -> Split {
    Split::new(trajectory(), &SplitConfig::default()).expect("split")
}

/// The (empty) window of frames before `frames` frames, for models of one snapshot.
fn no_previous(frames: usize) -> ndarray::Array4<f32> {
    ndarray::Array4::zeros((frames, 0, 12, 3))
}

/// The study's MLP with PyTorch's initialisation, seeded.
fn mlp(seed: u64) -> Mlp {
    let mut model = Mlp::new();
    model.init_weights(&mut StdRng::seed_from_u64(seed));
    model
}

fn request<'a>(out_dir: &'a std::path::Path, split: &'a Split, config: &'a TrainConfig) -> ExportRequest<'a> {
    ExportRequest {
        kind: ModelKind::Mlp,
        out_dir,
        trajectories: std::slice::from_ref(trajectory()),
        split,
        split_config: SplitConfig::default(),
        data: vec![DataInfo { source: "test".into(), sha256: String::new(), frames: 60, converted_from: None, simulation: None }],
        config,
        history: Vec::new(),
        noise: None,
        long_steps: 200,
        command: None,
        on_stage: &|_| {},
    }
}

#[test]
fn exported_mlp_matches_burn_on_random_inputs() {
    // Outputs scaled as `--output-scale` scales them: the graph must scale them too.
    let model = OutputScaled { model: mlp(11), scale: 0.01 };
    let dir = tempfile::tempdir().expect("temp dir");
    let (split, config) = (split(), TrainConfig { output_scale: 0.01, ..Default::default() });
    let outcome = export_model(&OpsTrained(&model), request(dir.path(), &split, &config)).expect("exports");
    assert!(outcome.card.onnx.parity_relative_error < 1e-5);
    assert_eq!(outcome.card.params, 8_868);

    let mut onnx = OnnxModel::load(&outcome.dir.join("model.onnx"), &Signature::dynamics(1), ExecutionDevice::Cpu, 1).expect("loads");
    let mut rng = StdRng::seed_from_u64(5);
    // Positions on the scale of the study's data (coordinates around 26).
    let normal = Normal::new(20.0, 10.0).expect("normal");
    for batch in [1, 7, 64] {
        let x = Array3::from_shape_simple_fn((batch, 12, 3), || normal.sample(&mut rng));
        let expected = predict_dx_ops(&model, x.view(), no_previous(x.dim().0).view(), config.target);
        let actual = onnx.run(x.view()).expect("runs");
        let scale = expected.iter().fold(0.0_f32, |m, v| m.max(v.abs()));
        let error = actual.iter().zip(&expected).fold(0.0_f32, |m, (a, e)| m.max((a - e).abs()));
        assert!(error / scale < 1e-5, "batch {batch}: relative error {}", error / scale);
    }
}

/// The MLP, with an ONNX graph that adds 1e-3 to every output: a broken exporter.
struct Skewed(Mlp);

impl ExportableModel for Skewed {
    fn history_frames(&self) -> usize {
        1
    }

    fn emit_onnx(&self, graph: &mut GraphBuilder) -> String {
        let out = OpsTrained(&self.0).emit_onnx(graph);
        let offset = graph.constant_float("offset", &[1], [1e-3].into_iter());
        graph.add(&out, &offset)
    }

    fn predict_dx(&self, positions: ArrayView3<f32>, previous: ArrayView4<f32>, target: Target) -> Array3<f32> {
        OpsTrained(&self.0).predict_dx(positions, previous, target)
    }

    fn num_params(&self) -> usize {
        self.0.num_params()
    }
}

#[test]
fn a_graph_that_differs_from_the_model_is_refused_and_old_files_survive() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (split, config) = (split(), TrainConfig::default());
    export_model(&OpsTrained(&mlp(12)), request(dir.path(), &split, &config)).expect("first export");
    let model_file = dir.path().join("mlp/model.onnx");
    let before = std::fs::read(&model_file).expect("model");

    match export_model(&Skewed(mlp(12)), request(dir.path(), &split, &config)) {
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

/// dx = (x + 3000) − 3000: exact in f64, but f32 rounds x + 3000 to steps of 2.4e-4.
struct Cancelling;

impl OpsModel for Cancelling {
    fn forward<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> O::Tensor {
        let shifted = ops.add_scalar(inputs.positions, 3000.0);
        ops.add_scalar(&shifted, -3000.0)
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        Vec::new()
    }

    fn num_params(&self) -> usize {
        0
    }
}

#[test]
fn a_function_f32_cannot_reproduce_is_exported_computing_in_f64() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (split, config) = (split(), TrainConfig::default());
    let outcome = export_model(&OpsTrained(&Cancelling), request(dir.path(), &split, &config)).expect("exports");
    assert_eq!(outcome.card.onnx.compute_dtype, "float64");
    assert!(outcome.card.onnx.parity_relative_error < 1e-7, "{:e}", outcome.card.onnx.parity_relative_error);
    let report = render_report(std::slice::from_ref(&outcome.card));
    assert!(report.contains("except those of mlp, which compute in float64"), "{report}");

    // The served interface is still float32 in and out.
    let mut onnx = OnnxModel::load(&outcome.dir.join("model.onnx"), &Signature::dynamics(1), ExecutionDevice::Cpu, 1).expect("loads");
    let x = Array3::from_shape_fn((2, 12, 3), |(f, p, d)| (f * 36 + p * 3 + d) as f32 * 0.01);
    let dx = onnx.run(x.view()).expect("runs");
    assert!(relative_error(&dx, &x) < 1e-7);

    // A model f32 reproduces stays in f32.
    let mlp = export_model(&OpsTrained(&mlp(11)), request(dir.path(), &split, &config)).expect("exports");
    assert_eq!(mlp.card.onnx.compute_dtype, "float32");
}

/// Every op the zoo's graphs use has an f64 kernel in ONNX Runtime (Erf, which has
/// none, runs in f32 between casts): the faithful SE(3) Transformer's f64 graph gives
/// its f64 evaluation to within the output's f32 rounding and erf's.
#[test]
fn an_f64_graph_of_the_attention_model_matches_its_f64_evaluation() {
    let mut model = Se3Transformer::new(2, 2, false);
    model.init_weights(&mut StdRng::seed_from_u64(4));
    let mut rng = StdRng::seed_from_u64(4);
    let normal = Normal::new(0.0, 1.0).expect("normal");
    let x = Array3::<f32>::from_shape_simple_fn((3, 12, 3), || normal.sample(&mut rng));
    let expected: Vec<f32> = model.forward(&mut Eager, &ModelInputs::snapshot(&x.mapv(f64::from).into_dyn())).iter().map(|&v| v as f32).collect();

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.onnx");
    let mut graph = GraphBuilder::for_model(&model, Precision::F64);
    let output = graph.emit(&model);
    std::fs::write(&path, graph.finish(&[output], "test", &[]).encode_to_vec()).expect("writes");
    let actual = OnnxModel::load(&path, &Signature::dynamics(1), ExecutionDevice::Cpu, 1).expect("loads").run(x.view()).expect("runs");
    let error = relative_error(&actual, &expected);
    assert!(error < 2e-7, "{error:e}");
}

/// Every weight and constant a zoo graph stores is read by one of its nodes (ONNX
/// Runtime drops unused ones with a warning each, and they bloat the file).
#[test]
fn zoo_graphs_store_no_unused_initializers() {
    fn check(name: &str, model: &impl OpsModel) {
        let mut graph = GraphBuilder::for_model(model, Precision::F32);
        let output = graph.emit(model);
        let proto = graph.finish(&[output], name, &[]);
        let graph = proto.graph.expect("graph");
        let read: std::collections::HashSet<&str> = graph.node.iter().flat_map(|n| n.input.iter().map(String::as_str)).collect();
        let unused: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).filter(|n| !read.contains(n)).collect();
        assert!(unused.is_empty(), "{name}: {} unused initializers, e.g. {:?}", unused.len(), &unused[..unused.len().min(3)]);
    }
    check("e3small", &E3Small::new());
    check("e3large", &GateNetwork::new(GateNetworkConfig::study()).expect("builds"));
    check("gnn", &Gnn::new());
    check("se3net", &Se3Transformer::new(2, 2, false));
}

/// A graph whose output has other rows than its input (here, always the first frame's)
/// is refused at every call with what came back, never cut into other requests'
/// answers; and a server refuses to load it.
#[test]
fn outputs_that_lose_the_batch_are_refused() {
    let repository = tempfile::tempdir().expect("temp dir");
    let folder = repository.path().join("dropper");
    std::fs::create_dir_all(&folder).expect("folder");
    let path = folder.join("model.onnx");
    let mut graph = GraphBuilder::new(Signature::dynamics(1), Precision::F32);
    let positions = graph.input("positions").expect("positions");
    let first = graph.slice(&positions, 0, 0, 1);
    std::fs::write(&path, graph.finish(&[first], "drops rows", &[]).encode_to_vec()).expect("writes");
    let mut session = OnnxModel::load(&path, &Signature::dynamics(1), ExecutionDevice::Cpu, 1).expect("its declared shapes fit");
    assert!(session.run(Array3::zeros((1, 12, 3)).view()).is_ok(), "one frame keeps its one row");
    let error = session.run(Array3::zeros((3, 12, 3)).view()).expect_err("three frames get one row");
    assert!(error.to_string().contains("'dx' came back [1, 12, 3] for 3 frames"), "{error}");

    let mut card: serde_json::Value = crate::common::card_of(&crate::common::shipped_model("mlp"));
    card["name"] = serde_json::json!("dropper");
    std::fs::write(folder.join("card.json"), card.to_string()).expect("writes");
    let opened = equiserve::serve::ModelRepository::open(repository.path(), ExecutionDevice::Cpu, Default::default(), equiserve::serve::ModelControl::None);
    let error = opened.err().expect("nothing loads");
    assert!(error.to_string().contains("'dx' came back"), "{error}");
}
