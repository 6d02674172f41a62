//! Gate network (the study's "E3 large") forward throughput, frames per second, at
//! batch sizes 1, 32 and 1024: through ONNX Runtime on the exported graph, in Burn
//! (the training framework, forward only), and with the f64 reference evaluation. Run quiet: `cargo bench --bench gate_network`.

use std::{collections::HashMap, time::Instant};

use burn::tensor::Device;
use equiserve::{
    data::Target,
    models::{GateNetwork, GateNetworkConfig, ModelInputs, OpsModel},
    nn::{BurnOps, Ops},
    onnx::{ExecutionDevice, OnnxModel, Precision, Signature, init_runtime},
    train::onnx_graph::GraphBuilder,
    train::reference_dx,
};
use ndarray::Array3;
use prost::Message;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

/// The study's own e3nn forward pass, one frame at a time on this kind of 2-core CPU
/// (issue 4's figure); used for the ratio column.
const STUDY_FRAMES_PER_SECOND: f64 = 23.0;

fn chain_frames(batch: usize, rng: &mut StdRng) -> Array3<f32> {
    let mut out = Array3::<f32>::zeros((batch, 12, 3));
    for f in 0..batch {
        let mut p = [0.0f32; 3];
        for i in 0..12 {
            for d in 0..3 {
                p[d] += 0.2 * rng.sample::<f32, _>(StandardNormal);
                out[[f, i, d]] = p[d];
            }
        }
    }
    out
}

/// Frames per second of `run` on `batch`-frame inputs, timed for at least `budget` seconds.
fn throughput(batch: usize, budget: f64, mut run: impl FnMut()) -> f64 {
    run();
    let start = Instant::now();
    let mut calls = 0usize;
    while start.elapsed().as_secs_f64() < budget {
        run();
        calls += 1;
    }
    (calls * batch) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    init_runtime(None).unwrap_or_else(|e| panic!("{e}"));
    let mut network = GateNetwork::new(GateNetworkConfig::study()).expect("study kwargs build");
    let mut rng = StdRng::seed_from_u64(0);
    let weights: HashMap<String, (Vec<usize>, Vec<f64>)> = network
        .parameter_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let values = (0..shape.iter().product()).map(|_| rng.sample(StandardNormal)).collect();
            (name, (shape, values))
        })
        .collect();
    network.load_state_dict(&weights).expect("weights fit");

    let mut graph = GraphBuilder::for_model(&network, Precision::F32);
    let output = graph.emit(&network);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, graph.finish(&[output], "bench", &[]).encode_to_vec()).expect("write");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut session = OnnxModel::load(&path, &Signature::dynamics(1), ExecutionDevice::Auto, threads).expect("loads");

    println!("gate_points_2101.Network, study kwargs ({} parameters); {} on {threads} threads", network.num_params(), session.execution_provider());
    println!("{:<34} {:>7} {:>14} {:>16}", "engine", "batch", "frames/s", "× study (23/s)");
    for batch in [1usize, 32, 1024] {
        let frames = chain_frames(batch, &mut rng);
        let fps = throughput(batch, 2.0, || {
            session.run(frames.view()).expect("runs");
        });
        println!("{:<34} {:>7} {:>14.1} {:>16.1}", "ONNX Runtime (exported graph)", batch, fps, fps / STUDY_FRAMES_PER_SECOND);
    }
    for batch in [1usize, 32, 1024] {
        let frames = chain_frames(batch, &mut rng);
        let values: Vec<f64> = frames.iter().map(|v| f64::from(*v)).collect();
        let fps = throughput(batch, 2.0, || {
            let mut ops = BurnOps::new(Device::flex());
            let input = ops.constant(&[batch, 12, 3], &values);
            network.forward(&mut ops, &ModelInputs::snapshot(&input)).to_vec();
        });
        println!("{:<34} {:>7} {:>14.1} {:>16.1}", "Burn flex (training framework)", batch, fps, fps / STUDY_FRAMES_PER_SECOND);
    }
    for batch in [1usize, 32] {
        let frames = chain_frames(batch, &mut rng);
        let fps = throughput(batch, 2.0, || {
            reference_dx(&network, frames.view(), ndarray::Array4::zeros((batch, 0, 12, 3)).view(), Target::Dx);
        });
        println!("{:<34} {:>7} {:>14.1} {:>16.1}", "f64 reference (ndarray, 1 thread)", batch, fps, fps / STUDY_FRAMES_PER_SECOND);
    }
}
