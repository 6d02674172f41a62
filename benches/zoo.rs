//! The whole zoo side by side, as issue 4 asks: per model, training seconds per epoch
//! on paths.npz (52 batches of 32, extrapolated from timing a few of them) and ONNX
//! Runtime frames/s at batch 1 and 32 on its test frames (one session on every core, and
//! batches of 32 through the server's default pool), each against the study's own code
//! on this kind of 2-core CPU. Run quiet: `cargo bench --bench zoo [NAME…]`.
//!
//! The study's figures are the ones issue 4 quotes, unless `--study-code` is given: then
//! `../shared/reference/seed_reference.py` (PyTorch + e3nn, 2 threads) runs each model
//! right after ours, on the same machine and data, and its figures are used instead.
//!
//! Reads `data/paths.npz` when present, else the built-in simulator's data.

use std::{path::Path, process::Command};

use equiserve::{
    card::DataInfo,
    data::{SimulationConfig, Split, SplitConfig, load_npz, simulate},
    models::ModelKind,
    onnx::init_runtime,
    train::{ExportRequest, TrainConfig, study_figures, train_and_export},
};

/// The study's epoch on paths.npz: 1,637 pairs in batches of 32.
const BATCHES_PER_EPOCH: usize = 52;

/// Batches timed per model: enough for a stable figure, few for the slow models.
fn timed_batches(kind: ModelKind) -> usize {
    match kind {
        ModelKind::Mlp => 52,
        ModelKind::Gnn | ModelKind::E3small => 8,
        ModelKind::E3large => 8,
        _ => 1,
    }
}

/// The study's own code on `model`: (seconds per epoch, one-frame-at-a-time frames/s),
/// from one epoch capped at `batches` batches, or why it could not run.
fn run_study_code(model: &str, data: &Path, batches: usize) -> Result<(f64, f64), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/seed_reference.py");
    let json = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let output = Command::new("python3")
        .arg(&script)
        .args(["--model", model, "--epochs", "1", "--threads", "2", "--max-batches", &batches.to_string()])
        .arg("--data")
        .arg(data)
        .arg("--json")
        .arg(json.path())
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(stderr.lines().last().unwrap_or("failed").to_string());
    }
    let text = std::fs::read_to_string(json.path()).map_err(|e| e.to_string())?;
    let result: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let field = |name: &str| result[name].as_f64().ok_or_else(|| format!("no {name} in the study's output"));
    Ok((field("median_epoch_s")?, field("frames_per_s_single")?))
}

fn main() {
    // Export logs why a speed could not be measured.
    tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).init();
    init_runtime(None).unwrap_or_else(|e| panic!("{e}"));
    let paths = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/paths.npz");
    let (trajectory, source) = match load_npz(&paths) {
        Ok(trajectory) => (trajectory, "paths.npz"),
        Err(_) => (simulate(&SimulationConfig { frames: 2048, ..Default::default() }), "simulator (paths.npz absent)"),
    };
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let study_code = std::env::args().any(|a| a == "--study-code");
    let mut measured_here: Vec<&str> = Vec::new();
    if study_code && source != "paths.npz" {
        panic!("--study-code needs data/paths.npz");
    }
    let out = tempfile::tempdir().expect("temp dir");
    println!("data: {source}; each model trains 3 epochs on its timed batches (the median is timed), then exports");
    println!(
        "{:<16} {:>9} {:>8} {:>10} {:>10} {:>9} {:>12} {:>12} {:>12} {:>10} {:>9}",
        "model", "params", "batches", "s/epoch", "study s", "× study", "frames/s B=1", "frames/s B=32", "B=32 pooled", "study f/s", "× study"
    );
    for &kind in <ModelKind as clap::ValueEnum>::value_variants().iter().filter(|k| k.supports_history(1)) {
        if !only.is_empty() && !only.iter().any(|name| name == kind.name()) {
            continue;
        }
        let batches = timed_batches(kind);
        let split_config = SplitConfig { train_pairs: Some(32 * batches), train_fraction: 0.8 };
        let split = Split::new(&trajectory, &split_config).expect("enough frames");
        let config = TrainConfig { epochs: 3, ..Default::default() };
        let request = ExportRequest {
            kind,
            out_dir: out.path(),
            trajectories: std::slice::from_ref(&trajectory),
            split: &split,
            split_config,
            data: vec![DataInfo { source: source.into(), sha256: String::new(), frames: trajectory.frames(), converted_from: None, simulation: None }],
            config: &config,
            history: Vec::new(),
            noise: None,
            long_steps: equiserve::train::forecast::LONG_ROLLOUT_STEPS,
            command: None,
            on_stage: &|_| {},
        };
        let card = match train_and_export(kind, 1, request, |_| {}) {
            Ok(outcome) => outcome.card,
            Err(e) => {
                println!("{:<16} not measured: {e}", kind.name());
                continue;
            }
        };
        let seconds = card.training.as_ref().expect("trained").seconds_per_epoch * BATCHES_PER_EPOCH as f64 / batches as f64;
        let speed = card.inference.as_ref();
        let (b1, b32) = speed.map_or((f64::NAN, f64::NAN), |speed| (speed.frames_per_second_batch_1, speed.frames_per_second_batch_32));
        let pooled = speed.and_then(|speed| speed.frames_per_second_batch_32_pooled);
        let best = speed.map_or(f64::NAN, |speed| speed.best());
        let mut study = study_figures(&card.architecture);
        if study_code {
            match run_study_code(kind.name(), &paths, batches) {
                Ok((seconds, frames)) => {
                    (study.seconds_per_epoch, study.frames_per_second) = (Some(seconds), Some(frames));
                    measured_here.push(kind.name());
                }
                Err(e) => println!("{:<16} study's code not run ({e}): its quoted figures are used", kind.name()),
            }
        }
        let figure = |v: Option<f64>, digits: usize| v.map_or("–".to_string(), |v| format!("{v:.digits$}"));
        println!(
            "{:<16} {:>9} {:>8} {:>10.3} {:>10} {:>9} {:>12.0} {:>12.0} {:>12} {:>10} {:>9}",
            kind.name(),
            card.params,
            batches,
            seconds,
            figure(study.seconds_per_epoch, 2),
            figure(study.seconds_per_epoch.map(|s| s / seconds), 2),
            b1,
            b32,
            figure(pooled, 0),
            figure(study.frames_per_second, 0),
            figure(study.frames_per_second.map(|f| best / f), 1),
        );
    }
    let measured = if measured_here.is_empty() {
        "as issue 4 quotes them".to_string()
    } else {
        format!("measured here just after ours for {}, else as issue 4 quotes them", measured_here.join(", "))
    };
    println!(
        "study figures {measured}. × study: the study's s/epoch over ours; our best frames/s (B=1 or B=32 on one session using every core, or B=32 through the server's default pool of one single-threaded session per core under concurrent requests) over the study's one-frame-at-a-time forward pass."
    );
}
