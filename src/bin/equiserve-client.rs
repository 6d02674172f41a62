//! A client of a running equiserve server.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use equiserve::{
    client::{
        endpoint_uri,
        load::{self, DEFAULT_SCENARIOS, LoadConfig, Scenario},
    },
    data::{SimulationConfig, load_npz, simulate},
    onnx::{ExecutionDevice, init_runtime},
};

/// Talks to an equiserve server (equiserve.v1.Dynamics over gRPC).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The server: host:port as its --addr takes it, or a URI.
    #[arg(long, env = "EQUISERVE_ADDR", default_value = "127.0.0.1:50051", global = true)]
    addr: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Load the server for a while and print throughput, latency and errors per
    /// scenario, beside raw ONNX Runtime on the same model file at the same batch.
    Bench {
        /// The served model to load.
        #[arg(long)]
        model: String,
        /// The server's models directory, for the raw ONNX Runtime column (omitted if absent).
        #[arg(long)]
        models_dir: Option<PathBuf>,
        /// Trajectory (.npz) the requests are cut from; default: the built-in simulator.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Seconds per scenario (raw ONNX Runtime gets half as long per batch).
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Steps each rollout asks for; one that finishes in time is started again.
        #[arg(long, default_value_t = 2000)]
        rollout_steps: u32,
        /// Scenarios, e.g. predict:64x1 (64 clients, 1 frame each) or rollout:1x256
        /// (one ensemble rollout of 256 systems); default: the serving table's six.
        #[arg(long = "scenario")]
        scenarios: Vec<Scenario>,
        /// Where raw ONNX Runtime runs.
        #[arg(long, value_enum, default_value = "cpu")]
        device: ExecutionDevice,
        /// The ONNX Runtime library to load; by default the project's .ort/lib, then the system's.
        #[arg(long, env = "EQUISERVE_ORT_LIB")]
        ort_lib: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("equiserve-client: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match args.command {
        Command::Bench { model, models_dir, data, seconds, rollout_steps, scenarios, device, ort_lib } => {
            if models_dir.is_some() {
                init_runtime(ort_lib.as_deref())?;
            }
            let (frames, source) = match &data {
                Some(path) => (load_npz(path)?.positions().clone(), path.display().to_string()),
                None => (simulate(&SimulationConfig::default()).positions().clone(), "the built-in simulator".to_string()),
            };
            let scenarios = if scenarios.is_empty() { DEFAULT_SCENARIOS.to_vec() } else { scenarios };
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let raw = match &models_dir {
                Some(_) => format!("on {device:?} with {cores} threads in this process"),
                None => "not measured (no --models-dir)".into(),
            };
            println!("{model} at {addr}; frames from {source}; {seconds} s per scenario; raw ONNX Runtime {raw}", addr = args.addr);
            let config = LoadConfig { addr: endpoint_uri(&args.addr), model, models_dir, device, frames, seconds, rollout_steps, scenarios };
            let results = load::run(&config, |result| eprintln!("{} done: {:.0}/s", result.scenario, result.rate)).await?;
            print!("{}", load::table(&results));
            Ok(())
        }
    }
}
