//! A load generator for a running server: concurrent Predict clients, Open Inference
//! Protocol ModelInfer clients, or Rollouts for a fixed time, each scenario measured beside raw ONNX Runtime on the same model file at
//! the same total batch, in the same run, so that every figure reads as a ratio.

use std::{
    collections::BTreeMap,
    fmt,
    path::PathBuf,
    str::FromStr,
    time::{Duration, Instant},
};

use ndarray::Array3;
use tokio_stream::StreamExt;

use crate::{
    card::{CardSummary, MODEL_FILE},
    onnx::{ExecutionDevice, OnnxModel, POSITIONS, PREVIOUS, RuntimeError, every_core},
    proto::{
        inference::{FP32, ModelInferRequest, fp32_bytes, model_infer_request::InferInputTensor},
        v1::{GetModelRequest, PredictRequest, RolloutRequest},
    },
};

use super::{Client, ConnectError, Connection, InferenceClient, Windows, connect, connect_inference};

/// What the clients of a load call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadKind {
    /// `equiserve.v1.Dynamics/Predict`.
    Predict,
    /// The Open Inference Protocol's ModelInfer, tensors as raw contents (as tritonclient sends).
    Infer,
    /// `equiserve.v1.Dynamics/Rollout`.
    Rollout,
}

impl LoadKind {
    fn name(self) -> &'static str {
        match self {
            LoadKind::Predict => "predict",
            LoadKind::Infer => "infer",
            LoadKind::Rollout => "rollout",
        }
    }
}

/// One load: `clients` loops of Predict (or ModelInfer) with `batch` frames each, or
/// `clients` Rollouts of `batch` systems each (an ensemble when above 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    pub kind: LoadKind,
    pub clients: usize,
    pub batch: usize,
}

impl Scenario {
    /// Frames (Predict) or systems (Rollout) in flight at once: the batch raw ONNX
    /// Runtime is measured at beside it.
    pub fn total_batch(&self) -> usize {
        self.clients * self.batch
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}x{}", self.kind.name(), self.clients, self.batch)
    }
}

impl FromStr for Scenario {
    type Err = String;

    /// `predict:CLIENTSxBATCH`, `infer:CLIENTSxBATCH` or `rollout:ROLLOUTSxSYSTEMS`, e.g. `predict:64x1`.
    fn from_str(text: &str) -> Result<Self, String> {
        let wrong = || format!("'{text}': expected predict:CLIENTSxBATCH, infer:CLIENTSxBATCH or rollout:ROLLOUTSxSYSTEMS, e.g. predict:64x1");
        let (kind, counts) = text.split_once(':').ok_or_else(wrong)?;
        let kind = [LoadKind::Predict, LoadKind::Infer, LoadKind::Rollout].into_iter().find(|k| k.name() == kind).ok_or_else(wrong)?;
        let (clients, batch) = counts.split_once('x').ok_or_else(wrong)?;
        let parse = |n: &str| n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(wrong);
        Ok(Self { kind, clients: parse(clients)?, batch: parse(batch)? })
    }
}

/// The goals, in the order the README's table lists them.
pub const DEFAULT_SCENARIOS: [Scenario; 7] = [
    Scenario { kind: LoadKind::Predict, clients: 1, batch: 32 },
    Scenario { kind: LoadKind::Infer, clients: 1, batch: 32 },
    Scenario { kind: LoadKind::Predict, clients: 1, batch: 64 },
    Scenario { kind: LoadKind::Predict, clients: 64, batch: 1 },
    Scenario { kind: LoadKind::Rollout, clients: 1, batch: 1 },
    Scenario { kind: LoadKind::Rollout, clients: 64, batch: 1 },
    Scenario { kind: LoadKind::Rollout, clients: 1, batch: 256 },
];

pub struct LoadConfig {
    pub connection: Connection,
    pub model: String,
    /// The models directory the server reads, for the raw ONNX Runtime figures; none: no raw column.
    pub models_dir: Option<PathBuf>,
    /// Where raw ONNX Runtime runs (every core of this machine on the CPU).
    pub device: ExecutionDevice,
    /// Frames the requests are cut from, [frames, 12, 3] (a trajectory the model knows).
    pub frames: Array3<f32>,
    pub seconds: f64,
    /// Steps each rollout asks for (a new one starts when one finishes within the time).
    pub rollout_steps: u32,
    /// Rollouts stream every this many steps.
    pub emit_every: u32,
    /// Rollouts are sampled (x + dx + dx_std · ξ) rather than deterministic.
    pub sample: bool,
    pub scenarios: Vec<Scenario>,
}

/// What one scenario sustained.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub scenario: Scenario,
    /// Frames (Predict) or system-steps (Rollout) per second, answered without error.
    pub rate: f64,
    /// Per call (Predict) or per streamed frame (Rollout), seconds.
    pub p50: f64,
    pub p99: f64,
    /// Calls or streams that ended in error, by status code.
    pub errors: BTreeMap<String, usize>,
    /// Rollouts that ended early with an error after streaming some frames.
    pub rollouts_cut: usize,
    /// Raw ONNX Runtime frames/s at the scenario's total batch, when measured.
    pub raw: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{0}")]
    Server(String),
    #[error("raw ONNX Runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("the frames hold {have}; a window of the model needs {need}")]
    TooFewFrames { have: usize, need: usize },
}

/// Samples kept for the percentiles per scenario: enough for p99, bounded.
const MAX_SAMPLES: usize = 1_000_000;

/// What each client gathers.
#[derive(Default)]
struct Tally {
    done: usize,
    /// From the start of the load to the end of its last call.
    seconds: f64,
    latencies: Vec<f64>,
    errors: BTreeMap<String, usize>,
    cut: usize,
}

impl Tally {
    fn latency(&mut self, seconds: f64) {
        if self.latencies.len() < MAX_SAMPLES {
            self.latencies.push(seconds);
        }
    }

    fn error(&mut self, status: &tonic::Status) {
        *self.errors.entry(format!("{:?}", status.code())).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.done += other.done;
        self.latencies.extend(other.latencies.into_iter().take(MAX_SAMPLES.saturating_sub(self.latencies.len())));
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        self.cut += other.cut;
    }
}

/// Runs every scenario of `config` in turn and returns their figures.
pub async fn run(config: &LoadConfig, mut progress: impl FnMut(&LoadResult)) -> Result<Vec<LoadResult>, LoadError> {
    let mut client = connect(&config.connection).await?;
    let info = client
        .get_model(GetModelRequest { name: config.model.clone(), ..Default::default() })
        .await
        .map_err(|e| LoadError::Server(format!("{}: {}", config.model, e.message())))?
        .into_inner();
    let card: CardSummary = serde_json::from_str(&info.card_json).map_err(|e| LoadError::Server(format!("the model's card does not parse: {e}")))?;
    let history_frames = card.onnx.signature.history_frames();
    let windows = Windows::new(&config.frames, history_frames).ok_or(LoadError::TooFewFrames { have: config.frames.dim().0, need: history_frames })?;
    let raw_rates = match &config.models_dir {
        Some(dir) => raw_rates(&dir.join(&config.model).join(MODEL_FILE), &card, config, &windows)?,
        None => BTreeMap::new(),
    };
    let mut results = Vec::new();
    for &scenario in &config.scenarios {
        let tally = match scenario.kind {
            LoadKind::Predict | LoadKind::Infer => unary(config, scenario, &windows, history_frames).await?,
            LoadKind::Rollout => rollouts(config, scenario, &windows).await?,
        };
        let result = summarise(scenario, tally, raw_rates.get(&scenario.total_batch()).copied());
        progress(&result);
        results.push(result);
    }
    Ok(results)
}

/// Raw ONNX Runtime frames/s at each scenario's total batch: one session with every
/// core, run back to back for the configured time.
fn raw_rates(file: &std::path::Path, card: &CardSummary, config: &LoadConfig, windows: &Windows) -> Result<BTreeMap<usize, f64>, LoadError> {
    let threads = every_core();
    let mut session = OnnxModel::load(file, &card.onnx.signature, config.device, threads)?;
    let mut rates = BTreeMap::new();
    for scenario in &config.scenarios {
        let batch = scenario.total_batch();
        if rates.contains_key(&batch) {
            continue;
        }
        let inputs = windows.tensors(batch);
        session.infer(&inputs)?;
        let (clock, mut runs) = (Instant::now(), 0usize);
        while clock.elapsed().as_secs_f64() < config.seconds / 2.0 {
            session.infer(&inputs)?;
            runs += 1;
        }
        rates.insert(batch, (runs * batch) as f64 / clock.elapsed().as_secs_f64());
    }
    Ok(rates)
}

/// One connection per client, all opened before the clock starts.
async fn connections(config: &LoadConfig, scenario: Scenario) -> Result<Vec<Client>, LoadError> {
    let mut clients = Vec::with_capacity(scenario.clients);
    for _ in 0..scenario.clients {
        clients.push(connect(&config.connection).await?);
    }
    Ok(clients)
}

/// A unary load's client: its connection and the requests it cycles through.
enum UnaryClient {
    Predict(Client, Vec<PredictRequest>),
    Infer(InferenceClient, Vec<ModelInferRequest>),
}

impl UnaryClient {
    /// Sends request `turn` (cycling), answering whether it succeeded.
    async fn call(&mut self, turn: usize) -> Result<(), tonic::Status> {
        match self {
            UnaryClient::Predict(client, requests) => client.predict(requests[turn % requests.len()].clone()).await.map(drop),
            UnaryClient::Infer(client, requests) => client.model_infer(requests[turn % requests.len()].clone()).await.map(drop),
        }
    }
}

/// Predict (or ModelInfer, the same tensors as raw little-endian contents) in a loop per client.
async fn unary(config: &LoadConfig, scenario: Scenario, windows: &Windows, history_frames: usize) -> Result<Tally, LoadError> {
    let mut unary_clients = Vec::with_capacity(scenario.clients);
    for index in 0..scenario.clients {
        // Each client cycles through its own few requests, cut from different frames.
        let windows = (0..8).map(|i| windows.batch((index * 8 + i) * scenario.batch, scenario.batch));
        let client = match scenario.kind {
            LoadKind::Infer => UnaryClient::Infer(
                connect_inference(&config.connection).await?,
                windows.map(|(positions, previous)| infer_request(&config.model, scenario.batch, history_frames, &positions, &previous)).collect(),
            ),
            _ => UnaryClient::Predict(
                connect(&config.connection).await?,
                windows.map(|(positions, previous)| PredictRequest { model: config.model.clone(), positions, previous, ..Default::default() }).collect(),
            ),
        };
        unary_clients.push(client);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(config.seconds);
    let mut clients = tokio::task::JoinSet::new();
    for mut client in unary_clients {
        clients.spawn(async move {
            let mut tally = Tally::default();
            // Every client sends at least one request, however short the time.
            for turn in 0.. {
                let sent = Instant::now();
                match client.call(turn).await {
                    Ok(()) => {
                        tally.latency(sent.elapsed().as_secs_f64());
                        tally.done += scenario.batch;
                    }
                    Err(status) => tally.error(&status),
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            tally
        });
    }
    gather(clients, deadline - Duration::from_secs_f64(config.seconds)).await
}

fn infer_request(model: &str, batch: usize, history_frames: usize, positions: &[f32], previous: &[f32]) -> ModelInferRequest {
    let tensor = |name: &str, shape: Vec<i64>| InferInputTensor { name: name.to_string(), datatype: FP32.to_string(), shape, ..Default::default() };
    let mut request = ModelInferRequest { model_name: model.to_string(), ..Default::default() };
    request.inputs.push(tensor(POSITIONS, vec![batch as i64, 12, 3]));
    request.raw_input_contents.push(fp32_bytes(positions.iter().copied()));
    if history_frames > 1 {
        request.inputs.push(tensor(PREVIOUS, vec![batch as i64, history_frames as i64 - 1, 12, 3]));
        request.raw_input_contents.push(fp32_bytes(previous.iter().copied()));
    }
    request
}

async fn rollouts(config: &LoadConfig, scenario: Scenario, windows: &Windows) -> Result<Tally, LoadError> {
    let connections = connections(config, scenario).await?;
    let deadline = Instant::now() + Duration::from_secs_f64(config.seconds);
    let mut clients = tokio::task::JoinSet::new();
    for (index, mut client) in connections.into_iter().enumerate() {
        let (positions, previous) = windows.batch(index * 97, scenario.batch);
        let request = RolloutRequest {
            model: config.model.clone(),
            positions,
            steps: config.rollout_steps,
            emit_every: config.emit_every,
            previous,
            sample: config.sample,
            ..Default::default()
        };
        clients.spawn(async move {
            let mut tally = Tally::default();
            'rollouts: while Instant::now() < deadline {
                let mut frames = match client.rollout(request.clone()).await {
                    Ok(stream) => stream.into_inner(),
                    Err(status) => {
                        tally.error(&status);
                        continue;
                    }
                };
                let mut last = Instant::now();
                let (mut streamed, mut last_step) = (0, 0);
                while let Some(frame) = frames.next().await {
                    match frame {
                        Ok(frame) => {
                            tally.latency(last.elapsed().as_secs_f64());
                            last = Instant::now();
                            // A frame every `emit_every` steps stands for the steps since the last.
                            tally.done += frame.batch as usize * frame.step.saturating_sub(last_step) as usize;
                            last_step = frame.step;
                            streamed += 1;
                        }
                        Err(status) => {
                            tally.error(&status);
                            tally.cut += usize::from(streamed > 0);
                            break;
                        }
                    }
                    if last >= deadline {
                        break 'rollouts;
                    }
                }
            }
            tally
        });
    }
    gather(clients, deadline - Duration::from_secs_f64(config.seconds)).await
}

async fn gather(mut clients: tokio::task::JoinSet<Tally>, started: Instant) -> Result<Tally, LoadError> {
    let mut all = Tally::default();
    while let Some(tally) = clients.join_next().await {
        all.merge(tally.map_err(|e| LoadError::Server(format!("a client task failed: {e}")))?);
    }
    all.seconds = started.elapsed().as_secs_f64();
    Ok(all)
}

fn summarise(scenario: Scenario, mut tally: Tally, raw: Option<f64>) -> LoadResult {
    tally.latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| match tally.latencies.len() {
        0 => f64::NAN,
        n => tally.latencies[((n - 1) as f64 * q).round() as usize],
    };
    LoadResult {
        scenario,
        rate: tally.done as f64 / tally.seconds,
        p50: quantile(0.5),
        p99: quantile(0.99),
        errors: tally.errors,
        rollouts_cut: tally.cut,
        raw,
    }
}

/// The results as a Markdown table.
pub fn table(results: &[LoadResult]) -> String {
    let mut out = String::from(
        "| load | frames/s (Predict) or system-steps/s (Rollout) | p50 ms | p99 ms | p99/p50 | errors | raw ORT frames/s at the same batch | ratio |\n\
         |---|---:|---:|---:|---:|---|---:|---:|\n",
    );
    for result in results {
        let errors =
            if result.errors.is_empty() { "0".to_string() } else { result.errors.iter().map(|(code, n)| format!("{code} {n}")).collect::<Vec<_>>().join(", ") };
        let errors = if result.rollouts_cut > 0 { format!("{errors} ({} rollouts cut)", result.rollouts_cut) } else { errors };
        let (raw, ratio) = match result.raw {
            Some(raw) => (format!("{raw:.0} (B={})", result.scenario.total_batch()), format!("{:.2}×", result.rate / raw)),
            None => ("–".into(), "–".into()),
        };
        out += &format!(
            "| {} | {:.0} | {:.3} | {:.3} | {:.1} | {errors} | {raw} | {ratio} |\n",
            result.scenario,
            result.rate,
            result.p50 * 1e3,
            result.p99 * 1e3,
            result.p99 / result.p50
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_parse_and_print_alike() {
        for text in ["predict:64x1", "infer:1x32", "rollout:1x256"] {
            assert_eq!(text.parse::<Scenario>().expect("parses").to_string(), text);
        }
        assert_eq!("rollout:4x8".parse::<Scenario>().expect("parses").total_batch(), 32);
        for bad in ["predict:64", "stream:1x1", "predict:0x1", "predict:ax1"] {
            assert!(bad.parse::<Scenario>().expect_err("refused").contains("predict:CLIENTSxBATCH"), "{bad}");
        }
    }
}
