//! Serving throughput of exported models: ONNX Runtime frames/s at batch 1, 32 and 1024
//! on the CPU and, where ONNX Runtime can use one, on CUDA, plus how far CUDA's dx is
//! from the CPU's. The whole gRPC path under load is `equiserve-client bench`'s.
//! Run quiet: `cargo bench --bench serving [MODELS_DIR] [--window=SECONDS]` (default
//! `models/`, each cell timed for 1 s).
//!
//! Frames come from `data/paths.npz` when present (the shipped models were
//! trained on it), else from the built-in simulator.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use equiserve::{
    card::{CARD_FILE, CardSummary, MODEL_FILE},
    data::{SimulationConfig, load_npz, simulate},
    onnx::{ExecutionDevice, OnnxModel, Signature, init_runtime},
    train::relative_error,
};
use ndarray::{Array3, s};

const BATCHES: [usize; 3] = [1, 32, 1024];

/// Frames per second of `model` on consecutive `batch`-frame slices of `frames`.
fn throughput(model: &mut OnnxModel, frames: &Array3<f32>, batch: usize, window: f64) -> Result<f64, String> {
    let count = frames.dim().0;
    let mut run = |start: usize| model.run(frames.slice(s![start..start + batch, .., ..])).map_err(|e| e.to_string());
    run(0)?;
    let clock = Instant::now();
    let (mut done, mut start) = (0usize, 0usize);
    while clock.elapsed().as_secs_f64() < window {
        run(start)?;
        done += batch;
        start = if start + 2 * batch > count { 0 } else { start + batch };
    }
    Ok(done as f64 / clock.elapsed().as_secs_f64())
}

/// max |cuda − cpu| / max |cpu| on the first 1024 frames.
fn relative_gap(cuda: &mut OnnxModel, cpu: &mut OnnxModel, frames: &Array3<f32>) -> Result<f64, String> {
    let frames = frames.slice(s![..1024, .., ..]);
    let on_cuda = cuda.run(frames).map_err(|e| e.to_string())?;
    let on_cpu = cpu.run(frames).map_err(|e| e.to_string())?;
    Ok(relative_error(&on_cuda, &on_cpu))
}

fn frames() -> (Array3<f32>, &'static str) {
    let paths = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/paths.npz");
    let trajectory = match load_npz(&paths) {
        Ok(trajectory) => return (trajectory.positions().clone(), "paths.npz"),
        Err(_) => simulate(&SimulationConfig { frames: 2048, ..Default::default() }),
    };
    (trajectory.positions().clone(), "simulator (paths.npz absent)")
}

/// Every model's name, ONNX file and signature, from the cards of a models directory.
fn model_files(dir: &Path) -> Vec<(String, PathBuf, Signature)> {
    equiserve::serve::repository::scan(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter_map(|equiserve::serve::VersionFolder { folder, .. }| {
            let card: CardSummary = serde_json::from_str(&std::fs::read_to_string(folder.join(CARD_FILE)).ok()?).ok()?;
            Some((card.name, folder.join(MODEL_FILE), card.onnx.signature))
        })
        .collect()
}

fn main() {
    init_runtime(None).unwrap_or_else(|e| panic!("{e}"));
    let window: f64 = std::env::args().find_map(|a| a.strip_prefix("--window=").map(|v| v.parse().expect("--window=SECONDS"))).unwrap_or(1.0);
    let dir = std::env::args().skip(1).find(|a| !a.starts_with('-')).map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"), PathBuf::from);
    let (frames, source) = frames();
    assert!(frames.dim().0 >= BATCHES[2], "need {} frames", BATCHES[2]);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("models: {}; frames: {source}; CPU with {threads} threads; each cell timed {window} s", dir.display());
    println!("{:<16} {:<5} {:>14} {:>14} {:>14} {:>12}", "model", "on", "frames/s B=1", "frames/s B=32", "frames/s B=1024", "|cuda−cpu|");
    let mut cuda_missing_reported = false;
    for (name, file, signature) in model_files(&dir) {
        if signature.history_frames() > 1 {
            println!("{name:<16} not measured: reads {} frames, and this bench sends one", signature.history_frames());
            continue;
        }
        let mut cpu = match OnnxModel::load(&file, &signature, ExecutionDevice::Cpu, threads) {
            Ok(model) => model,
            Err(e) => {
                println!("{name:<16} not measured: {e}");
                continue;
            }
        };
        let mut cuda = match OnnxModel::load(&file, &signature, ExecutionDevice::Cuda, 1) {
            Ok(model) => Some(model),
            Err(e) => {
                if !cuda_missing_reported {
                    println!("(no CUDA rows: {e})");
                    cuda_missing_reported = true;
                }
                None
            }
        };
        let gap = match cuda.as_mut() {
            Some(cuda) => relative_gap(cuda, &mut cpu, &frames).map_or_else(|e| format!("failed: {e}"), |g| format!("{g:.1e}")),
            None => "–".into(),
        };
        for (device, model) in [("cpu", Some(&mut cpu)), ("cuda", cuda.as_mut())] {
            let Some(model) = model else { continue };
            let rates: Vec<String> =
                BATCHES.iter().map(|&batch| throughput(model, &frames, batch, window).map_or_else(|e| format!("failed: {e}"), |r| format!("{r:.0}"))).collect();
            let gap = if device == "cuda" { gap.as_str() } else { "" };
            println!("{name:<16} {device:<5} {:>14} {:>14} {:>14} {gap:>12}", rates[0], rates[1], rates[2]);
        }
    }
}
