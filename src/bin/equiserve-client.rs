//! A client of a running equiserve server.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use equiserve::{
    client::{
        Connection, connect, endpoint_uri,
        files::{self, ModelChoice},
        load::{self, DEFAULT_SCENARIOS, LoadConfig, Scenario},
    },
    data::{SimulationConfig, load_npz, simulate},
    onnx::{ExecutionDevice, every_core, init_runtime},
};

/// Talks to an equiserve server (equiserve.v1.Dynamics over gRPC).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The server: host:port as its --addr takes it, or a URI.
    #[arg(long, env = "EQUISERVE_ADDR", default_value = "127.0.0.1:50051", global = true)]
    addr: String,
    /// PEM CA certificate that signed the server's (for an https:// address; no system
    /// roots are built in).
    #[arg(long, env = "EQUISERVE_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// PEM certificate of this client, for a server that asks for one (--tls-client-ca).
    #[arg(long, env = "EQUISERVE_TLS_CERT", global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "EQUISERVE_TLS_KEY", global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Bearer token, for a server started with --auth-token-file.
    #[arg(long, env = "EQUISERVE_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The served models: name, versions, architecture, parameters, frames read, where they run.
    List,
    /// A model's card, as JSON.
    Card {
        /// The served model's name (see `list`).
        model: String,
        /// The version; default: the newest ready one.
        #[arg(long)]
        model_version: Option<u64>,
    },
    /// dx and next positions for every frame of a file (a history model's first K − 1
    /// frames are its first window), written as `dx` and `next` to an .npz.
    Predict {
        /// The served model's name (see `list`).
        #[arg(long)]
        model: String,
        /// The version; default: the newest ready one.
        #[arg(long)]
        model_version: Option<u64>,
        /// .npz with `arr` [frames, 12, 2|3].
        #[arg(long = "in")]
        input: PathBuf,
        /// The .npz written: `dx` and `next` [frames, 12, 3], for the input's frames from
        /// K − 1 on (a model of K frames reads the K − 1 before each).
        #[arg(long = "out")]
        output: PathBuf,
    },
    /// Roll a model out from a frame of a trajectory; writes the start frame and every
    /// emitted one as extended XYZ (.xyz, for ASE, OVITO, VMD) or as `arr` in an .npz.
    Rollout {
        /// The served model's name (see `list`).
        #[arg(long)]
        model: String,
        /// The version; default: the newest ready one.
        #[arg(long)]
        model_version: Option<u64>,
        /// .npz with `arr` [frames, 12, 2|3].
        #[arg(long = "from")]
        trajectory: PathBuf,
        /// The frame to start from (a history model's window is the frames before it).
        #[arg(long, default_value_t = 0)]
        frame: usize,
        /// Steps to roll out.
        #[arg(long)]
        steps: u32,
        /// Keep every n-th step (the last is always kept).
        #[arg(long, default_value_t = 1)]
        emit_every: u32,
        /// .npz `arr` [B, 12, 2|3]: B start snapshots rolled out together in place of
        /// --frame (a history model's members keep the trajectory's recent displacements);
        /// written as [frames, B, 12, 3], or every member in each .xyz frame.
        #[arg(long, conflicts_with = "members")]
        ensemble: Option<PathBuf>,
        /// Sample each step, x + dx + dx_std · ξ, with a stochastic model's noise instead
        /// of stepping its mean (see `list`: stochastic models).
        #[arg(long)]
        sample: bool,
        /// The noise's seed (with --sample): the same seed gives the same trajectory;
        /// default: the server picks one and it is printed.
        #[arg(long, requires = "sample")]
        seed: Option<u64>,
        /// Roll out N sampled members from the start frame, each with its own noise
        /// (with --sample); written as an ensemble.
        #[arg(long, requires = "sample")]
        members: Option<usize>,
        /// The rollout's frames: .xyz (extended XYZ) or .npz (`arr`).
        #[arg(long = "out")]
        output: PathBuf,
        /// The chemical symbol every particle is written as in .xyz (its index is the
        /// `particle` column); X is ASE's dummy atom.
        #[arg(long, default_value = equiserve::data::DEFAULT_SPECIES)]
        species: String,
    },
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
        /// Rollouts stream a frame every this many steps (a count of system-steps is the same).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        emit_every: u32,
        /// Rollouts are sampled (a stochastic model's x + dx + dx_std · ξ).
        #[arg(long)]
        sample: bool,
        /// Scenarios, e.g. predict:64x1 (64 clients, 1 frame each) or rollout:1x256
        /// (one ensemble rollout of 256 systems), infer:1x32 (ModelInfer of the Open Inference
        /// Protocol); default: the serving table's seven.
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
    let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let tls_ca = args.tls_ca.as_ref().map(read).transpose()?;
    let tls_identity = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    let connection = Connection { uri: endpoint_uri(&args.addr), tls_ca, tls_identity, token: args.token.clone() };
    match args.command {
        Command::List => {
            let models = files::list(&mut connect(&connection).await?).await?;
            println!("{:<18} {:<14} {:<24} {:>9} {:>7}  {:<13} runs on", "model", "version", "architecture", "params", "frames", "sampling");
            for model in models {
                // The default version, and the others a request may name.
                let version = match model.versions.as_slice() {
                    [] | [_] => model.version.clone(),
                    all => format!("{} (of {})", model.version, all.join(",")),
                };
                let sampling = if model.stochastic { "stochastic" } else { "deterministic" };
                println!(
                    "{:<18} {:<14} {:<24} {:>9} {:>7}  {:<13} {}",
                    model.name, version, model.architecture, model.params, model.history_frames, sampling, model.execution_provider
                );
            }
            Ok(())
        }
        Command::Card { model, model_version } => {
            let model = ModelChoice { name: model, version: model_version };
            println!("{}", files::card(&mut connect(&connection).await?, &model).await?);
            Ok(())
        }
        Command::Predict { model, model_version, input, output } => {
            let model = ModelChoice { name: model, version: model_version };
            let done = files::predict(&mut connect(&connection).await?, &model, &input, &output).await?;
            eprintln!("{}: dx of frames {}..{} written", output.display(), done.first_frame, done.first_frame + done.frames);
            Ok(())
        }
        Command::Rollout { model, model_version, trajectory, frame, steps, emit_every, ensemble, sample, seed, members, output, species } => {
            let model = ModelChoice { name: model, version: model_version };
            let plan = files::RolloutPlan { model, trajectory, frame, steps, emit_every, ensemble, sample, seed, members, output, species };
            let bar = indicatif::ProgressBar::new(u64::from(steps))
                .with_style(indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} steps ({per_sec}, {eta} left)").expect("a valid template"))
                .with_message(plan.model.to_string());
            let written = files::rollout(&mut connect(&connection).await?, &plan, |step| bar.set_position(u64::from(step))).await;
            bar.finish_and_clear();
            let written = written?;
            match written.seed {
                Some(seed) => eprintln!("{}: {} frames written (sampled, seed {seed})", plan.output.display(), written.frames),
                None => eprintln!("{}: {} frames written", plan.output.display(), written.frames),
            }
            Ok(())
        }
        Command::Bench { model, models_dir, data, seconds, rollout_steps, emit_every, sample, scenarios, device, ort_lib } => {
            if models_dir.is_some() {
                init_runtime(ort_lib.as_deref())?;
            }
            let (frames, source) = match &data {
                Some(path) => (load_npz(path)?.positions().clone(), path.display().to_string()),
                None => (simulate(&SimulationConfig::default()).positions().clone(), "the built-in simulator".to_string()),
            };
            let scenarios = if scenarios.is_empty() { DEFAULT_SCENARIOS.to_vec() } else { scenarios };
            let cores = every_core();
            let raw = match &models_dir {
                Some(_) => format!("on {device:?} with {cores} threads in this process"),
                None => "not measured (no --models-dir)".into(),
            };
            println!("{model} at {addr}; frames from {source}; {seconds} s per scenario; raw ONNX Runtime {raw}", addr = args.addr);
            let config = LoadConfig { connection, model, models_dir, device, frames, seconds, rollout_steps, emit_every, sample, scenarios };
            let results = load::run(&config, |result| eprintln!("{} done: {:.0}/s", result.scenario, result.rate)).await?;
            print!("{}", load::table(&results));
            Ok(())
        }
    }
}
