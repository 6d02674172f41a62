//! Trains the model zoo, evaluates it, and exports each model to ONNX with a model card.

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args as ClapArgs, Parser, Subcommand};
use equiserve::{
    card::{CARD_FILE, DataInfo, ModelCard},
    data::{SimulationConfig, Split, SplitConfig, Target, Trajectory, load_npz, load_npz_described, save_npz, simulate},
    models::ModelKind,
    onnx::init_runtime,
    serve::repository,
    train::{
        EpochStats, ExportRequest, TrainConfig, forecast::REPORTED_HORIZONS, import_e3nn, kept_epoch, remeasure_card, target_rms, train_and_export,
        write_report,
    },
};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// Train the equiserve model zoo on a trajectory, evaluate it with the study's metrics,
/// and export each model as DIR/<name>/model.onnx + card.json + loss.svg.
///
/// Without --data, the built-in simulator makes the default trajectory.
#[derive(Parser, Debug)]
#[command(version, about, long_about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the built-in simulator's trajectory as an .npz (array `arr`).
    Simulate {
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 2048)]
        frames: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Simulate in 3-D instead of the study's xy-plane.
        #[arg(long)]
        three_d: bool,
        /// Thermal energy kT of the Langevin thermostat (default: the simulator's).
        #[arg(long)]
        temperature: Option<f64>,
        /// Friction of the Langevin thermostat (default: the simulator's).
        #[arg(long)]
        friction: Option<f64>,
        /// Bond stiffness of the chain's springs (default: the simulator's).
        #[arg(long)]
        bond_stiffness: Option<f64>,
    },
    /// Rewrite DIR/REPORT.md from the model cards in DIR/<name>/card.json (e.g. after
    /// training models in separate runs).
    Report {
        /// The output directory of earlier runs.
        #[arg(long, default_value = "models")]
        dir: PathBuf,
        /// Measure every model again first, on this machine and its own data, and write the
        /// results into the cards: ONNX Runtime frames/s on the test frames (one quiet run
        /// gives figures that compare: run nothing else meanwhile), and the exported graph's
        /// one-step and rollout errors beside the baselines.
        #[arg(long)]
        measure: bool,
        /// The ONNX Runtime library used with --measure.
        #[arg(long, env = "EQUISERVE_ORT_LIB")]
        ort_lib: Option<PathBuf>,
    },
    /// Turn an e3nn gate_points_2101.Network trained in PyTorch into a served model:
    /// writes OUT/model.onnx and OUT/card.json.
    ImportE3nn {
        /// The constructor's kwargs as JSON (irreps as strings).
        #[arg(long)]
        kwargs: PathBuf,
        /// The state dict, saved with safetensors (F32 or F64).
        #[arg(long)]
        weights: PathBuf,
        /// Output directory (a folder of the server's models directory).
        #[arg(long)]
        out: PathBuf,
        /// Model name served by the server (default: the output folder's name).
        #[arg(long)]
        name: Option<String>,
        /// The ONNX Runtime library used for the parity check.
        #[arg(long, env = "EQUISERVE_ORT_LIB")]
        ort_lib: Option<PathBuf>,
    },
}

#[derive(ClapArgs, Debug)]
struct TrainArgs {
    /// Model to train (repeatable).
    #[arg(long = "model", value_enum, default_values_t = [ModelKind::Mlp])]
    models: Vec<ModelKind>,
    /// Train every model of the zoo.
    #[arg(long, conflicts_with = "models")]
    all: bool,
    /// Trajectory .npz with `arr` of shape [frames, 12, 2|3]; the simulator's when absent.
    /// Repeat for several trajectories: each is split the same way, their training pairs
    /// train together and their test parts are scored together.
    #[arg(long, env = "EQUISERVE_DATA")]
    data: Vec<PathBuf>,
    /// Frames the simulator makes when --data is absent.
    #[arg(long, default_value_t = 2048)]
    frames: usize,
    /// Output directory; each model goes to DIR/<name>/.
    #[arg(long, default_value = "models")]
    out: PathBuf,
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long = "lr", default_value_t = 1e-3)]
    learning_rate: f64,
    /// Seeds weights, shuffling, the simulator and the checks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Shuffle training batches every epoch.
    #[arg(long)]
    shuffle: bool,
    /// What the network learns to output; exported models always output dx.
    #[arg(long, value_enum, default_value = "dx")]
    target: Target,
    /// Multiplies the network's outputs, in training and in the exported graph: `auto`
    /// (the root mean square of the training targets, so the network learns them as
    /// values of order one), `none` (the study's unscaled outputs), or a positive number.
    #[arg(long, default_value = "auto", value_parser = parse_output_scale)]
    output_scale: OutputScale,
    /// Share of the training pairs to hold out (the last ones in time): after every epoch
    /// the MSE on them is measured, and the weights of the epoch where it was lowest are
    /// exported. 0 trains on all of them and exports the last epoch's, as the study does.
    #[arg(long = "validation", default_value_t = 0.0)]
    validation_fraction: f64,
    /// With --validation: stop after this many epochs without a new lowest validation MSE.
    #[arg(long)]
    patience: Option<usize>,
    /// Frames each model reads (K): frame t and the K − 1 before it. 1 is the study's
    /// one-snapshot models; K ≥ 2 trains history models (mlp, e3large, pairforce), named
    /// <model>-h<K>.
    #[arg(long, default_value_t = 1)]
    history: usize,
    /// Random-walk noise added to every training window, frame by frame, with this
    /// standard deviation per step as a fraction of the training displacements' root
    /// mean square (the target corrected to pull back): trains for rollouts. 0: none.
    #[arg(long, default_value_t = 0.0)]
    input_noise: f64,
    /// Steps of the long sampled rollouts a stochastic model's card reports (16 of them,
    /// from the test part, beside linear-3 with and without noise).
    #[arg(long, default_value_t = equiserve::train::forecast::LONG_ROLLOUT_STEPS)]
    long_steps: usize,
    /// Training pairs, counted from the start (default: floor(fraction · pairs)).
    #[arg(long)]
    train_pairs: Option<usize>,
    /// Share of pairs used for training when --train-pairs is absent (0.8 gives the study's 1637 of 2047).
    #[arg(long, default_value_t = 0.8)]
    train_fraction: f64,
    /// The ONNX Runtime library used for the parity check.
    #[arg(long, env = "EQUISERVE_ORT_LIB")]
    ort_lib: Option<PathBuf>,
}

fn main() -> ExitCode {
    equiserve::logging::init_logging(equiserve::logging::LogFormat::Text, "warn", true);
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Simulate { out, frames, seed, three_d, temperature, friction, bond_stiffness }) => {
            let defaults = SimulationConfig::default();
            let config = SimulationConfig {
                frames,
                seed,
                planar: !three_d,
                temperature: temperature.unwrap_or(defaults.temperature),
                friction: friction.unwrap_or(defaults.friction),
                bond_stiffness: bond_stiffness.unwrap_or(defaults.bond_stiffness),
                ..defaults
            };
            simulate_to_file(&out, &config)
        }
        Some(Command::Report { dir, measure, ort_lib }) => {
            if measure { measure_cards(&dir, ort_lib.as_deref()) } else { Ok(()) }.and_then(|()| report_from_cards(&dir))
        }
        Some(Command::ImportE3nn { kwargs, weights, out, name, ort_lib }) => import(&kwargs, &weights, &out, name, ort_lib),
        None => train(cli.train),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("train-export: {message}");
            ExitCode::FAILURE
        }
    }
}

fn simulate_to_file(out: &Path, config: &SimulationConfig) -> Result<(), String> {
    let trajectory = simulate(config);
    save_npz(&trajectory, out, config.planar).map_err(|e| e.to_string())?;
    println!("wrote {} frames to {}", trajectory.frames(), out.display());
    Ok(())
}

/// The model cards in DIR/<name>/card.json, by path, sorted; a model folder without
/// a card is skipped with a line saying so.
fn read_cards(dir: &Path) -> Result<Vec<(PathBuf, ModelCard)>, String> {
    let folders = repository::scan(dir).map_err(|e| e.to_string())?;
    let mut cards = Vec::with_capacity(folders.len());
    for repository::VersionFolder { folder, .. } in folders {
        let path = folder.join(CARD_FILE);
        if !path.is_file() {
            eprintln!("{}: skipped (no {CARD_FILE})", folder.display());
            continue;
        }
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let card = serde_json::from_str::<ModelCard>(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        cards.push((path, card));
    }
    Ok(cards)
}

/// The trajectories a card's model was trained and evaluated on: its data files, or the
/// simulator's run.
fn card_trajectories(card: &ModelCard) -> Result<Vec<Trajectory>, String> {
    let Some(first) = &card.data else {
        return Err(format!("{}: the card names no training data to take test frames from", card.name));
    };
    std::iter::once(first)
        .chain(&card.more_data)
        .map(|data| match &data.simulation {
            Some(config) => Ok(simulate(config)),
            None => load_npz(Path::new(&data.source)).map_err(|e| format!("{} (the data of {}): {e}", data.source, card.name)),
        })
        .collect()
}

fn measure_cards(dir: &Path, ort_lib: Option<&Path>) -> Result<(), String> {
    init_runtime(ort_lib).map_err(|e| e.to_string())?;
    for (path, mut card) in read_cards(dir)? {
        if card.data.is_none() {
            eprintln!("{}: skipped (imported: no test frames, and not in the report)", card.name);
            continue;
        }
        let model_dir = path.parent().expect("a card lies in its model's folder");
        let trajectories = card_trajectories(&card)?;
        remeasure_card(model_dir, &mut card, &trajectories).map_err(|e| e.to_string())?;
        let speed = card.inference.as_ref().expect("just measured");
        let pooled = speed.frames_per_second_batch_32_pooled.zip(speed.pool_workers);
        let pooled = pooled.map_or(String::new(), |(rate, sessions)| format!(", {rate:.0} at batch 32 through the server's pool of {sessions}"));
        eprintln!("{}: {:.0} frames/s at batch 1, {:.0} at batch 32{pooled}", card.name, speed.frames_per_second_batch_1, speed.frames_per_second_batch_32);
        if let Some(row) = card.forecast.as_ref().and_then(|f| f.models.first()) {
            eprintln!("{}: one-step skill {:.5}, rollout RMSE after 10 steps {:.3e}", card.name, row.skill, row.rmse_at(10).unwrap_or(f64::NAN));
        }
    }
    Ok(())
}

fn report_from_cards(dir: &Path) -> Result<(), String> {
    let cards: Vec<ModelCard> = read_cards(dir)?.into_iter().map(|(_, card)| card).collect();
    let report = dir.join("REPORT.md");
    write_report(&cards, &report).map_err(|e| e.to_string())?;
    println!("wrote {} ({} models)", report.display(), cards.len());
    Ok(())
}

fn import(kwargs: &Path, weights: &Path, out: &Path, name: Option<String>, ort_lib: Option<PathBuf>) -> Result<(), String> {
    init_runtime(ort_lib.as_deref()).map_err(|e| e.to_string())?;
    let name = name
        .or_else(|| out.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| format!("{}: cannot name the model after this folder; pass --name", out.display()))?;
    let outcome = import_e3nn(kwargs, weights, out, &name).map_err(|e| e.to_string())?;
    let card = &outcome.card;
    println!(
        "imported {} ({} parameters) into {}: ONNX parity {:.1e}, equivariance error {:.1e}",
        card.name,
        card.params,
        outcome.dir.display(),
        card.onnx.parity_relative_error,
        card.equivariance.max()
    );
    Ok(())
}

/// Every `--data` file (or the simulator's run) with its record for the card.
fn load_data(args: &TrainArgs) -> Result<Vec<(Trajectory, DataInfo)>, String> {
    if !args.data.is_empty() {
        return args
            .data
            .iter()
            .map(|path| {
                let (trajectory, dtype) = load_npz_described(path).map_err(|e| e.to_string())?;
                let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let converted_from = (!dtype.starts_with("float")).then(|| {
                    eprintln!("{}: arr is {dtype}; converted to float32", path.display());
                    dtype.to_string()
                });
                let info =
                    DataInfo { source: shareable(path), sha256: hex(&Sha256::digest(&bytes)), frames: trajectory.frames(), converted_from, simulation: None };
                Ok((trajectory, info))
            })
            .collect();
    }
    let config = SimulationConfig { frames: args.frames, seed: args.seed, ..Default::default() };
    let trajectory = simulate(&config);
    let bytes: Vec<u8> = trajectory.positions().iter().flat_map(|v| v.to_le_bytes()).collect();
    let info = DataInfo {
        source: "simulator".into(),
        sha256: hex(&Sha256::digest(&bytes)),
        frames: trajectory.frames(),
        converted_from: None,
        simulation: Some(config),
    };
    Ok(vec![(trajectory, info)])
}

/// A path as the card may show it to every client of a server: the file's name alone
/// when the path is absolute (it would tell the training machine's layout), else as typed.
fn shareable(path: &Path) -> String {
    match path.file_name() {
        Some(name) if path.is_absolute() => name.to_string_lossy().into_owned(),
        _ => path.display().to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, Copy)]
enum OutputScale {
    Auto,
    Fixed(f64),
}

fn parse_output_scale(text: &str) -> Result<OutputScale, String> {
    match text {
        "auto" => Ok(OutputScale::Auto),
        "none" => Ok(OutputScale::Fixed(1.0)),
        _ => match text.parse::<f64>() {
            Ok(scale) if scale.is_finite() && scale > 0.0 => Ok(OutputScale::Fixed(scale)),
            _ => Err(format!("'{text}' is neither auto, none nor a positive number")),
        },
    }
}

fn train(args: TrainArgs) -> Result<(), String> {
    if args.epochs == 0 || args.batch_size == 0 {
        return Err("--epochs and --batch-size must be at least 1".into());
    }
    if !(0.0..1.0).contains(&args.validation_fraction) {
        return Err(format!("--validation must be in [0, 1), got {}", args.validation_fraction));
    }
    if args.patience.is_some() && args.validation_fraction == 0.0 {
        return Err("--patience needs held-out pairs to watch: pass --validation too (e.g. 0.1)".into());
    }
    if args.patience == Some(0) {
        return Err("--patience must be at least 1".into());
    }
    if args.history == 0 {
        return Err("--history must be at least 1 (the frame itself)".into());
    }
    if !(args.input_noise.is_finite() && args.input_noise >= 0.0) {
        return Err(format!("--input-noise must be a fraction ≥ 0, got {}", args.input_noise));
    }
    let kinds: Vec<ModelKind> = if args.all {
        <ModelKind as clap::ValueEnum>::value_variants().iter().copied().filter(|k| k.supports_history(args.history)).collect()
    } else {
        args.models.clone()
    };
    if let Some(kind) = kinds.iter().find(|k| !k.supports_history(args.history)) {
        let readers: Vec<&str> =
            <ModelKind as clap::ValueEnum>::value_variants().iter().filter(|k| k.supports_history(args.history)).map(|k| k.name()).collect();
        let frames = if args.history == 1 { "one frame".to_string() } else { format!("windows of {} frames", args.history) };
        return Err(format!("--model {} does not read {frames} (--history {}); models that do: {}", kind.name(), args.history, readers.join(", ")));
    }
    // Fail before training, not after, when the parity check cannot run.
    init_runtime(args.ort_lib.as_deref()).map_err(|e| e.to_string())?;
    let (trajectories, data): (Vec<Trajectory>, Vec<DataInfo>) = load_data(&args)?.into_iter().unzip();
    let split_config = SplitConfig { train_pairs: args.train_pairs, train_fraction: args.train_fraction };
    let splits = trajectories
        .iter()
        .zip(&data)
        .map(|(trajectory, info)| Split::with_history(trajectory, &split_config, args.history).map_err(|e| format!("{}: {e}", info.source)))
        .collect::<Result<Vec<_>, _>>()?;
    let split = Split::merged(splits);
    let sources = data.iter().map(|d| d.source.as_str()).collect::<Vec<_>>().join(", ");
    let frames: usize = data.iter().map(|d| d.frames).sum();
    let output_scale = match args.output_scale {
        OutputScale::Fixed(scale) => scale,
        OutputScale::Auto => target_rms(&split, args.target)
            .ok_or_else(|| format!("{sources}: the training targets are all zero or not finite; pass --output-scale none or a number"))?,
    };
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        seed: args.seed,
        shuffle: args.shuffle,
        target: args.target,
        output_scale,
        validation_fraction: args.validation_fraction,
        patience: args.patience,
        input_noise: args.input_noise * target_rms(&split, Target::Dx).unwrap_or(0.0),
    };
    let command: Vec<String> = std::env::args().skip(1).map(|arg| shareable(Path::new(&arg))).collect();
    let held_out = config.validation_pairs(split.train.len());
    eprintln!(
        "data: {} ({} frames; {} train / {} test pairs{}); output scale {:.4e}",
        sources,
        frames,
        split.train.len(),
        split.test.len(),
        if held_out > 0 { format!(", the last {held_out} training pairs held out for validation") } else { String::new() },
        config.output_scale
    );
    let mut cards = Vec::new();
    for kind in kinds {
        let bar = ProgressBar::new(config.epochs as u64).with_prefix(kind.model_name(args.history));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} epochs {msg} ({elapsed}, eta {eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        let request = ExportRequest {
            kind,
            out_dir: &args.out,
            trajectories: &trajectories,
            split: &split,
            split_config,
            data: data.clone(),
            config: &config,
            history: Vec::new(),
            noise: None,
            long_steps: args.long_steps,
            command: Some(command.clone()),
            on_stage: &|stage| {
                bar.enable_steady_tick(std::time::Duration::from_millis(250));
                bar.set_message(format!("{stage} …"));
            },
        };
        let outcome = train_and_export(kind, args.history, request, |stats| {
            let validation = match (stats.validation_rollout_rmse, stats.validation_mse) {
                (Some(rmse), _) => format!(" validation rollout RMSE {rmse:.3e}"),
                (None, Some(mse)) => format!(" validation {mse:.3e}"),
                (None, None) => String::new(),
            };
            bar.set_message(format!("train {:.3e}{validation} test {:.3e}", stats.train_mse, stats.test_mse));
            // A model trained again from another start counts its epochs from 1 again.
            bar.set_position(stats.epoch as u64);
        })
        .map_err(|e| e.to_string())?;
        bar.finish_with_message("done");
        let history = outcome.card.training.as_ref().map(|t| t.history.as_slice()).unwrap_or_default();
        let epochs = history.last().map_or(0, |s| s.epoch);
        let kept = match kept_epoch(history) {
            Some(EpochStats { epoch, validation_rollout_rmse: Some(rmse), .. }) => {
                format!(" (weights of epoch {epoch} of {epochs}: validation rollout RMSE {rmse:.3e})")
            }
            Some(EpochStats { epoch, validation_mse: Some(mse), .. }) => format!(" (weights of epoch {epoch} of {epochs}: validation MSE {mse:.3e})"),
            _ => String::new(),
        };
        eprintln!("{}: wrote {}{kept}", outcome.card.name, outcome.dir.display());
        cards.push(outcome.card);
    }
    print_summary(&cards);
    // The report covers every model in the folder, not only this run's.
    report_from_cards(&args.out)
}

fn print_summary(cards: &[ModelCard]) {
    println!(
        "\n{:<16} {:>9} {:>11} {:>11} {:>9} {:>7} {:>7} {:>7} {:>7} {:>10} {:>9} {:>9}",
        "model", "params", "train MSE", "test MSE", "dx-skill", "R² cm", "R² p1", "R² p7x", "R² p12y", "equiv err", "s/epoch", "parity"
    );
    for card in cards {
        let (Some(metrics), Some(training)) = (&card.metrics, &card.training) else { continue };
        let test = &metrics.test;
        println!(
            "{:<16} {:>9} {:>11.3e} {:>11.3e} {:>9.4} {:>7.4} {:>7.4} {:>7.4} {:>7.4} {:>10.2e} {:>9.3} {:>9.1e}",
            card.name,
            card.params,
            metrics.train.mse,
            test.mse,
            test.dx_skill,
            test.r2.cm,
            test.r2.p1_cm,
            test.r2.p7_x,
            test.r2.p12_y,
            card.equivariance.max(),
            training.seconds_per_epoch,
            card.onnx.parity_relative_error
        );
    }
    // The baselines once (the same frames for every card of a run), then each model.
    let Some(first) = cards.iter().find_map(|c| c.forecast.as_ref()) else { return };
    println!(
        "\nPredicting the motion (test part from frame {}, rollouts from {} starts; skill = 1 − MSE/MSE(dx = 0)):",
        first.first_test_frame,
        first.rollout_starts.len()
    );
    let horizons: Vec<String> = REPORTED_HORIZONS.iter().map(|h| format!("{:>10}", format!("RMSE@{h}"))).collect();
    println!("{:<44} {:>2} {:>11} {:>9} {}", "forecaster", "K", "dx MSE", "skill", horizons.join(" "));
    let models = cards.iter().filter_map(|c| c.forecast.as_ref()).flat_map(|f| f.models.iter());
    for row in first.baselines.iter().chain(models) {
        let rmse: Vec<String> = REPORTED_HORIZONS.iter().map(|&h| row.rmse_at(h).map_or(format!("{:>10}", "–"), |v| format!("{v:>10.3e}"))).collect();
        let name: String = row.name.chars().take(44).collect();
        println!("{name:<44} {:>2} {:>11.3e} {:>9.5} {}", row.history_frames, row.dx_mse, row.skill, rmse.join(" "));
    }
}
