//! What a sampled rollout step costs beside the model: for an ensemble of 1,024 members,
//! the noise (`projected_noise`: standard normals keyed by (seed, member, step) in the
//! space each frame spans), shaping it into the shipped card's kicks (`Kicks`) and
//! adding it (`add_sample`), next to one call of the
//! shipped `pairforce-h4` on the half of the batch each of the server's two
//! single-threaded sessions runs. On planar frames (paths.npz, lifted to z = 0) and on 3-D
//! frames of the simulator. The server draws and shapes the noise while the call runs, on
//! a core the call's sessions also need, so its share of the call is what sampling costs.
//! Run quiet: `cargo bench --bench sampling [--window=SECONDS]` (default 1 s a cell).

use std::{path::Path, time::Instant};

use equiserve::{
    card::{CARD_FILE, CardSummary, MODEL_FILE},
    data::{
        SimulationConfig, load_npz,
        sampling::{Kicks, add_sample, projected_noise},
        simulate,
    },
    onnx::{ExecutionDevice, OnnxModel, init_runtime},
};
use ndarray::{Array2, Array3, Array4, Axis, s};

const MEMBERS: usize = 1024;
/// The server's default pool on two cores: two sessions, a part each.
const SESSIONS: usize = 2;
const MODEL: &str = "pairforce-h4";

/// Mean seconds per call of `work`, called until `window` seconds have passed.
fn seconds_per_call(window: f64, mut work: impl FnMut(u64)) -> f64 {
    work(0);
    let clock = Instant::now();
    let mut calls = 0u64;
    while clock.elapsed().as_secs_f64() < window {
        calls += 1;
        work(calls);
    }
    clock.elapsed().as_secs_f64() / calls as f64
}

/// `MEMBERS` windows of `history` frames from consecutive frames of `trajectory`: the
/// newest frames [MEMBERS, 12, 3] and the ones before them [MEMBERS, history − 1, 12, 3].
fn windows(trajectory: &Array3<f32>, history: usize) -> (Array3<f32>, Array4<f32>) {
    let newest = trajectory.slice(s![history - 1..history - 1 + MEMBERS, .., ..]).to_owned();
    let earlier: Vec<_> = (0..history - 1).map(|k| trajectory.slice(s![k..k + MEMBERS, .., ..])).collect();
    let previous = ndarray::stack(Axis(1), &earlier).expect("same shapes");
    (newest, previous)
}

fn main() {
    init_runtime(None).unwrap_or_else(|e| panic!("{e}"));
    let window: f64 = std::env::args().find_map(|a| a.strip_prefix("--window=").map(|v| v.parse().expect("--window=SECONDS"))).unwrap_or(1.0);
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(MODEL);
    let card: CardSummary = serde_json::from_str(&std::fs::read_to_string(folder.join(CARD_FILE)).expect("the shipped card")).expect("a card");
    let signature = card.onnx.signature.clone();
    let history = signature.history_frames();
    let mut session = OnnxModel::load(&folder.join(MODEL_FILE), &signature, ExecutionDevice::Cpu, 1).unwrap_or_else(|e| panic!("{e}"));

    let planar = load_npz(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/paths.npz")).expect("data/paths.npz").positions().clone();
    let solid = simulate(&SimulationConfig { frames: MEMBERS + history, planar: false, ..Default::default() }).positions().clone();
    println!(
        "{MEMBERS} members a step; model {MODEL} on one thread at B = {}, as each of {SESSIONS} sessions runs it; each cell timed {window} s",
        MEMBERS / SESSIONS
    );
    println!("{:<28} {:>12} {:>12} {:>12} {:>12} {:>14} {:>12}", "frames", "noise µs", "shape µs", "add µs", "call µs", "(noise+add)/call", "shape/call");
    for (name, trajectory) in [("paths.npz (planar)", &planar), ("simulator 3-D", &solid)] {
        let (newest, previous) = windows(trajectory, history);
        let part = MEMBERS / SESSIONS;
        let (part_newest, part_previous) = (newest.slice(s![..part, .., ..]), previous.slice(s![..part, .., .., ..]));
        let (dx, dx_std) = session.run_window_with_std(part_newest, part_previous).unwrap_or_else(|e| panic!("{e}"));
        let dx_std = dx_std.unwrap_or_else(|| Array2::ones((part, dx.dim().1)));
        let dx_std = ndarray::concatenate(Axis(0), &[dx_std.view(), dx_std.view()]).expect("same shapes");
        let noise_seconds = seconds_per_call(window, |step| drop(projected_noise(newest.view(), 7, 0, step)));
        let noise = projected_noise(newest.view(), 7, 0, 0);
        let mut kicks = Kicks::new(card.kick_shape().as_ref());
        let shape_seconds = seconds_per_call(window, |_| drop(kicks.next(noise.clone()))) - seconds_per_call(window, |_| drop(noise.clone()));
        let mut next = newest.clone();
        let add_seconds = seconds_per_call(window, |_| add_sample(next.view_mut(), dx_std.view(), noise.view()));
        let call_seconds = seconds_per_call(window, |_| drop(session.run_window_with_std(part_newest, part_previous).expect("ran before")));
        let micros = |s: f64| s * 1e6;
        println!(
            "{name:<28} {:>12.0} {:>12.0} {:>12.0} {:>12.0} {:>14.2} {:>12.2}",
            micros(noise_seconds),
            micros(shape_seconds),
            micros(add_seconds),
            micros(call_seconds),
            (noise_seconds + add_seconds) / call_seconds,
            shape_seconds / call_seconds
        );
    }
}
