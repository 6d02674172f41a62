//! Writing a trained model as `model.onnx` + `card.json` (+ figures), after checking
//! that ONNX Runtime computes the same function as the trained model.

use std::{
    fs,
    path::{Path, PathBuf},
};

use ndarray::{Array2, Array3, Array4, ArrayView3, ArrayView4, s};
use prost::Message;
use rand::{SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, StandardNormal};

use super::{
    EpochStats, TrainConfig,
    forecast::{ForecastFrames, ModelForecaster, REPORTED_HORIZONS, SampledFigures, SampledReport, Segment, StochasticForecaster},
    metrics::{EquivarianceReport, evaluate},
    onnx_graph::{GraphBuilder, proto::ModelProto},
    ops_fit::NoiseFit,
    plot::{plot_calibration, plot_correlations, plot_pair_distances, plot_rollout_chains, plot_rollout_errors, plot_sampled_chain, plot_trajectory},
    plot_losses,
    staged::{Staged, commit_all},
};
use crate::{
    card::{CARD_FILE, DataInfo, MODEL_FILE, Metrics, ModelCard, NoiseInfo, OnnxInfo, SplitInfo, TrainingInfo, Versions},
    data::{DIMS, PARTICLES, Pairs, Split, SplitConfig, Target, Trajectory, sampling::KickShape},
    models::{ModelKind, OpsModel},
    onnx::{ExecutionDevice, OnnxModel, Precision, Signature, every_core},
    serve::measure_inference,
};

pub use crate::card::PARITY_TOLERANCE;
pub const LOSS_PLOT_FILE: &str = "loss.svg";
pub const CORRELATION_PLOT_FILE: &str = "correlation.svg";
pub const TRAJECTORY_PLOT_FILE: &str = "trajectory.svg";
pub const ROLLOUT_ERROR_PLOT_FILE: &str = "rollout_error.svg";
pub const ROLLOUT_PLOT_FILE: &str = "rollout.svg";
pub const PAIR_DISTANCES_PLOT_FILE: &str = "pair_distances.svg";
pub const CALIBRATION_PLOT_FILE: &str = "calibration.svg";
pub const SAMPLED_ROLLOUT_PLOT_FILE: &str = "sampled_rollout.svg";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ONNX parity check failed for {name}: relative error {error:.3e} > {PARITY_TOLERANCE:e}; nothing was written")]
    Parity { name: String, error: f64 },
    #[error("{name} predicts non-finite dx on the test set (training diverged: try a smaller --lr); nothing was written")]
    NonFinite { name: String },
    #[error("{name}: {message}")]
    Data { name: String, message: String },
    #[error(transparent)]
    Runtime(#[from] crate::onnx::RuntimeError),
}

/// Everything about the run that the card records besides the model itself.
pub struct ExportRequest<'a> {
    pub kind: ModelKind,
    /// Models are written to `out_dir/<name>/`.
    pub out_dir: &'a Path,
    /// The whole trajectories (one per data file), for rollouts over their test parts.
    pub trajectories: &'a [Trajectory],
    /// Their splits, merged, with at least the model's history: each pair with its K − 1
    /// frames before.
    pub split: &'a Split,
    pub split_config: SplitConfig,
    /// One record per trajectory, in the same order.
    pub data: Vec<DataInfo>,
    pub config: &'a TrainConfig,
    pub history: Vec<EpochStats>,
    /// How a stochastic model's dx_std was fitted.
    pub noise: Option<NoiseFit>,
    /// Steps of the long sampled rollouts the card reports.
    pub long_steps: usize,
    /// The command line that trained the model, recorded in the card.
    pub command: Option<Vec<String>>,
    /// Told each stage after the epochs as it starts (the noise's calibration and the
    /// sampled evaluation take minutes for the larger models).
    pub on_stage: &'a dyn Fn(&str),
}

impl ExportRequest<'_> {
    /// Each trajectory with the number of its pairs before its test part.
    pub(crate) fn segments(&self) -> Vec<Segment<'_>> {
        segments(self.trajectories, &self.split_config)
    }
}

fn segments<'a>(trajectories: &'a [Trajectory], config: &SplitConfig) -> Vec<Segment<'a>> {
    trajectories
        .iter()
        .map(|trajectory| Segment {
            trajectory,
            // The split succeeded on these trajectories before training.
            train_pairs: config.train_pairs(trajectory.frames() - 1).expect("a valid split"),
        })
        .collect()
}

pub struct ExportOutcome {
    pub dir: PathBuf,
    pub card: ModelCard,
}

/// What export needs of a trained model: its graph, its own predictions, and the
/// reference the graph is checked against.
pub trait ExportableModel {
    /// Frames the model reads (K); its graph's signature follows from it.
    fn history_frames(&self) -> usize;
    /// Appends nodes computing the training target from the graph's inputs and
    /// returns the output's name.
    fn emit_onnx(&self, graph: &mut GraphBuilder) -> String;
    /// The trained model's own dx for positions [batch, 12, 3] and the frames before
    /// them [batch, ≥ K − 1, 12, 3] (it reads the last K − 1).
    fn predict_dx(&self, positions: ArrayView3<f32>, previous: ArrayView4<f32>, target: Target) -> Array3<f32>;
    /// The most exact evaluation of the trained function available: what the exported
    /// graph, the metrics and the figures are checked and drawn against.
    fn reference_dx(&self, positions: ArrayView3<f32>, previous: ArrayView4<f32>, target: Target) -> Array3<f32> {
        self.predict_dx(positions, previous, target)
    }
    fn num_params(&self) -> usize;
    /// Settings the model took from its training data, for the card.
    fn fitted_settings(&self) -> Option<serde_json::Value> {
        None
    }
    /// Whether the model gives dx_std beside dx.
    fn stochastic(&self) -> bool {
        false
    }
    /// Appends nodes computing the training target and, for a stochastic model, dx_std.
    fn emit_onnx_with_std(&self, graph: &mut GraphBuilder) -> (String, Option<String>) {
        (self.emit_onnx(graph), None)
    }
    /// The most exact dx_std [batch, 12] of a stochastic model.
    fn reference_std(&self, _positions: ArrayView3<f32>, _previous: ArrayView4<f32>) -> Option<Array2<f32>> {
        None
    }
}

/// A model written against [`crate::nn::Ops`]: run in Burn, emitted by the graph builder.
pub struct OpsTrained<'a, M>(pub &'a M);

impl<M: OpsModel> ExportableModel for OpsTrained<'_, M> {
    fn history_frames(&self) -> usize {
        self.0.history_frames()
    }

    fn emit_onnx(&self, graph: &mut GraphBuilder) -> String {
        graph.emit(self.0)
    }

    fn predict_dx(&self, positions: ArrayView3<f32>, previous: ArrayView4<f32>, target: Target) -> Array3<f32> {
        super::ops_fit::predict_dx_ops(self.0, positions, previous, target)
    }

    /// The layers evaluated in f64.
    fn reference_dx(&self, positions: ArrayView3<f32>, previous: ArrayView4<f32>, target: Target) -> Array3<f32> {
        super::ops_fit::reference_dx(self.0, positions, previous, target)
    }

    fn num_params(&self) -> usize {
        self.0.num_params()
    }

    fn fitted_settings(&self) -> Option<serde_json::Value> {
        self.0.fitted_settings()
    }

    fn stochastic(&self) -> bool {
        self.0.stochastic()
    }

    fn emit_onnx_with_std(&self, graph: &mut GraphBuilder) -> (String, Option<String>) {
        graph.emit_with_std(self.0)
    }

    fn reference_std(&self, positions: ArrayView3<f32>, previous: ArrayView4<f32>) -> Option<Array2<f32>> {
        super::ops_fit::reference_std(self.0, positions, previous)
    }
}

/// Exports, checks parity through ONNX Runtime, evaluates, and only then replaces
/// any previous files in `out_dir/<name>/`, so a failed export never loses a model.
pub fn export_model(model: &impl ExportableModel, request: ExportRequest) -> Result<ExportOutcome, ExportError> {
    let history_frames = model.history_frames();
    let name = &request.kind.model_name(history_frames);
    let dir = request.out_dir.join(name);
    let mut description = request.kind.describe(history_frames);
    if let Some(serde_json::Value::Object(fitted)) = model.fitted_settings() {
        for (key, value) in fitted {
            description["hyperparameters"][key] = value;
        }
    }
    let target = request.config.target;

    let architecture = description["architecture"].as_str().unwrap_or(name).to_string();
    let metadata = [("equiserve.model", name.to_string()), ("equiserve.architecture", architecture.clone())];
    let signature = Signature::dynamics_of(history_frames, model.stochastic());
    let emit = |precision| {
        let mut graph = GraphBuilder::new(signature.clone(), precision);
        let (output, std) = model.emit_onnx_with_std(&mut graph);
        graph.finish_dynamics(output, std, target, name, &metadata)
    };

    // The reference test predictions serve the parity check, the metrics and the figures.
    let (train_pairs, test_pairs) = (&request.split.train, &request.split.test);
    let test_inputs = test_pairs.inputs.view();
    let test_dx = model.reference_dx(test_inputs, test_pairs.previous.view(), target);
    if !test_dx.iter().all(|v| v.is_finite()) {
        return Err(ExportError::NonFinite { name: name.to_string() });
    }
    (request.on_stage)("exporting: ONNX parity");
    let (staged_model, precision, parity_relative_error, ()) =
        stage_checked(&dir, name, emit, |file| Ok((check_parity(model, file, &signature, test_pairs, &test_dx, target, request.config.seed)?, ())))?;

    let mut trained_dx = |x: ArrayView3<f32>, previous: ArrayView4<f32>| model.predict_dx(x, previous, target);
    let train = evaluate(&trained_dx(train_pairs.inputs.view(), train_pairs.previous.view()), train_pairs);
    let test = evaluate(&test_dx, test_pairs);
    let probe = ..8.min(test_pairs.len());
    let equivariance = EquivarianceReport::measure(
        &mut trained_dx,
        test_pairs.inputs.slice(s![probe, .., ..]),
        test_pairs.previous.slice(s![probe, .., .., ..]),
        8,
        request.config.seed,
    );
    (request.on_stage)("scoring one step and rollouts beside the baselines");
    let forecast_frames = ForecastFrames::new(&request.segments(), history_frames);
    let mut forecaster = ModelForecaster {
        name: name.to_string(),
        history_frames,
        predict: |x: ArrayView3<f32>, previous: ArrayView4<f32>| model.predict_dx(x, previous, target),
    };
    let mut forecast = forecast_frames.report(&mut [&mut forecaster]);
    let (rollout_truth, rollout_predicted) = forecast_frames.first_rollout(&mut forecaster);
    let sampled_figures = if model.stochastic() {
        // Thousands of steps: through the exported graph (what is served, checked above).
        (request.on_stage)("sampled long rollouts and ensembles");
        let kick_shape = request.noise.as_ref().map(|fit| fit.kick_shape);
        let (report, figures) = sampled_report(staged_model.path(), &signature, kick_shape, name, &forecast_frames, request.long_steps)?;
        forecast.sampled = Some(report);
        Some(figures)
    } else {
        None
    };

    let history = request.history;
    let card = ModelCard {
        name: name.to_string(),
        architecture,
        summary: description["summary"].as_str().unwrap_or_default().to_string(),
        hyperparameters: description["hyperparameters"].clone(),
        equivariant: description["equivariant"].as_bool().unwrap_or(false),
        params: model.num_params(),
        data: request.data.first().cloned(),
        more_data: request.data.iter().skip(1).cloned().collect(),
        split: Some(SplitInfo { config: request.split_config, train_pairs: request.split.train.len(), test_pairs: request.split.test.len() }),
        training: Some(TrainingInfo { config: request.config.clone(), seconds_per_epoch: median(history.iter().map(|s| s.seconds).collect()), history }),
        metrics: Some(Metrics { target, train, test }),
        imported_from: None,
        equivariance,
        inference: measure_inference(staged_model.path(), &signature, request.split.test.inputs.view())
            .inspect_err(|e| tracing::warn!(error = %e, "inference speed not measured"))
            .ok(),
        onnx: OnnxInfo::exported(signature, parity_relative_error, precision),
        versions: Versions::current(),
        forecast: Some(forecast.clone()),
        stochastic: model.stochastic(),
        noise: request.noise.as_ref().map(|fit| NoiseInfo {
            sampling: SAMPLING.into(),
            fit: "maximum Gaussian likelihood of the trained mean's residuals on the training pairs (the mean fixed), bounded at the \
                  largest value on the training frames, then scaled so that sampled rollouts from training windows keep the data's RMS step about the centroid \
                  (and, for a model with a confinement, its strength set so that they keep the data's radius of gyration: a pull towards the centroid, or a push from it where negative)"
                .into(),
            dims: fit.dims,
            pairs: fit.pairs,
            initial_nll: fit.initial_nll,
            fitted_nll: fit.fitted_nll,
            largest_std: fit.largest_std,
            motion_factor: fit.motion_factor,
            confinement: fit.confinement,
            calibrated_motion_ratio: Some(fit.motion_ratio),
            calibrated_size_ratio: Some(fit.size_ratio),
            calibrated_pair_distance_w1_ratio: Some(fit.pair_distance_w1_ratio),
            kicks: Some(fit.kick_shape),
        }),
        command: request.command,
    };
    let predicted_next = &test_inputs + &test_dx;
    let truth = request.split.test.next.view();
    let history = card.training.as_ref().map(|t| t.history.as_slice()).unwrap_or_default();
    let staged = |file: &str| Staged::new(dir.join(file));
    let (losses, correlations, trajectory, rollout_error, rollout) =
        (staged(LOSS_PLOT_FILE), staged(CORRELATION_PLOT_FILE), staged(TRAJECTORY_PLOT_FILE), staged(ROLLOUT_ERROR_PLOT_FILE), staged(ROLLOUT_PLOT_FILE));
    let figures = [
        (plot_losses(history, &format!("{name}: MSE of dx"), losses.path()), losses),
        (plot_correlations(predicted_next.view(), truth, &test.r2, &format!("{name}: test set, next positions"), correlations.path()), correlations),
        (
            plot_trajectory(
                predicted_next.view(),
                truth,
                25,
                &format!("{name}: true (dots) and predicted (crosses) next positions, every 25th test frame"),
                trajectory.path(),
            ),
            trajectory,
        ),
        (
            plot_rollout_errors(
                &forecast.baselines,
                &forecast.models,
                &format!("{name}: rollout error beside the baselines (test part)"),
                rollout_error.path(),
            ),
            rollout_error,
        ),
        (
            plot_rollout_chains(
                &rollout_truth,
                &rollout_predicted,
                &REPORTED_HORIZONS,
                &format!("{name}: rollout from test frame {} (black: true, red: predicted)", forecast.rollout_starts[0]),
                rollout.path(),
            ),
            rollout,
        ),
    ];
    let mut figures = Vec::from(figures);
    if let (Some(sampled), Some(report)) = (&sampled_figures, forecast.sampled.as_ref()) {
        let (pairs, calibration, chain) = (staged(PAIR_DISTANCES_PLOT_FILE), staged(CALIBRATION_PLOT_FILE), staged(SAMPLED_ROLLOUT_PLOT_FILE));
        let steps = report.long_steps;
        figures.push((plot_pair_distances(sampled, &format!("{name}: pair distances over {steps}-step rollouts and in the data"), pairs.path()), pairs));
        figures.push((plot_calibration(report, &format!("{name}: ensemble spread / skill ({} members)", report.members), calibration.path()), calibration));
        if let Some(snapshots) = &sampled.chain {
            figures
                .push((plot_sampled_chain(snapshots, &format!("{name}: one sampled rollout from test frame {}", report.long_starts[0]), chain.path()), chain));
        }
    }
    let mut drawn = Vec::new();
    for (outcome, figure) in figures {
        match outcome {
            Ok(()) => drawn.push(figure),
            Err(message) => tracing::warn!(%message, figure = %figure.target().display(), "figure not drawn; the earlier one, if any, stays"),
        }
    }
    commit_model(&dir, staged_model, &card, drawn)?;
    Ok(ExportOutcome { dir, card })
}

/// How a stochastic model's next frame is drawn (as `data::sampling` draws it).
const SAMPLING: &str = "x(t+1) = x(t) + dx + dx_std * xi, xi standard normal per particle in the space the frame spans \
                        (its plane for a planar system), from draws keyed by (seed, member, step), correlated along the chain and in \
                        time as `kicks` says: per chain mode m, z_m(t) = rho_m z_m(t-1) + sqrt(1 - rho_m^2) eta_m(t), z_m(0) = eta_m(0), \
                        and xi_i = sum_m u_m(i) s_m z_m / sqrt(sum_m u_m(i)^2 s_m^2)";

/// The sampled report of a stochastic model, run through its ONNX file, its kicks shaped
/// as `kick_shape` says.
fn sampled_report(
    file: &Path,
    signature: &Signature,
    kick_shape: Option<KickShape>,
    name: &str,
    frames: &ForecastFrames,
    long_steps: usize,
) -> Result<(SampledReport, SampledFigures), ExportError> {
    let threads = every_core();
    let mut session = OnnxModel::load(file, signature, ExecutionDevice::Cpu, threads)?;
    let mut failure = None;
    let mut forecaster = StochasticForecaster {
        name: name.to_string(),
        history_frames: signature.history_frames(),
        predict: |x: ArrayView3<f32>, previous: ArrayView4<f32>| match session.run_window_with_std(x, previous) {
            Ok(answer) => answer,
            Err(e) => {
                failure.get_or_insert(e);
                (Array3::from_elem(x.raw_dim(), f32::NAN), None)
            }
        },
        kick_shape,
    };
    let report = frames.sampled_report(&mut [&mut forecaster], long_steps);
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(report),
    }
}

/// Writes `proto` beside the final model file, to be checked before it replaces it.
fn stage_model(dir: &Path, proto: &ModelProto) -> Result<Staged, ExportError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let staged = Staged::new(dir.join(MODEL_FILE));
    fs::write(staged.path(), proto.encode_to_vec()).map_err(io_error(staged.path()))?;
    Ok(staged)
}

/// Writes the f32 graph `emit` gives beside the final model file and checks it with
/// `parity` (its relative error, and whatever else the check made, e.g. its session);
/// where f32 rounding alone misses the tolerance, the same graph computing in f64 is
/// written and checked instead (a graph that computes another function fails both).
/// Gives the staged file, its precision, its parity error and what the check made; on
/// failure nothing stays staged.
pub(crate) fn stage_checked<T>(
    dir: &Path,
    name: &str,
    emit: impl Fn(Precision) -> ModelProto,
    mut parity: impl FnMut(&Path) -> Result<(f64, T), ExportError>,
) -> Result<(Staged, Precision, f64, T), ExportError> {
    let mut failure = None;
    for precision in [Precision::F32, Precision::F64] {
        let staged = stage_model(dir, &emit(precision))?;
        match parity(staged.path()) {
            Ok((error, made)) if error <= PARITY_TOLERANCE => return Ok((staged, precision, error, made)),
            outcome => {
                drop(staged);
                let error = match outcome {
                    Ok((error, _)) => ExportError::Parity { name: name.to_string(), error },
                    Err(e) => e,
                };
                if precision == Precision::F32 {
                    tracing::info!(model = name, %error, "the f32 graph missed parity; trying it in f64");
                }
                failure = Some(error);
            }
        }
    }
    Err(failure.expect("both precisions were tried"))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError {
    let path = path.display().to_string();
    move |source| ExportError::Io { path, source }
}

/// Writes `card` beside its final place in `dir`, to be renamed into it: a card is
/// replaced whole, never left half-written.
fn stage_card(dir: &Path, card: &ModelCard) -> Result<Staged, ExportError> {
    let staged = Staged::new(dir.join(CARD_FILE));
    let json = serde_json::to_string_pretty(card).expect("model cards serialize");
    fs::write(staged.path(), json).map_err(io_error(staged.path()))?;
    Ok(staged)
}

/// Moves the checked model, its card and its figures into place, replacing earlier
/// ones; until every one of them is written whole, the earlier ones stay untouched.
pub(crate) fn commit_model(dir: &Path, staged_model: Staged, card: &ModelCard, figures: Vec<Staged>) -> Result<(), ExportError> {
    let staged_card = stage_card(dir, card)?;
    commit_all([staged_model, staged_card].into_iter().chain(figures)).map_err(io_error(dir))
}

/// Measures the model in `dir` again, on this machine, on `trajectory` (its data) split as
/// its card records: ONNX Runtime's throughput on the test frames, and the exported
/// graph's one-step and rollout errors beside the baselines on the test part; rewrites
/// its card with both.
pub fn remeasure_card(dir: &Path, card: &mut ModelCard, trajectories: &[Trajectory]) -> Result<(), ExportError> {
    let split_config = card.split.as_ref().map(|s| s.config).unwrap_or_default();
    let history_frames = card.history_frames();
    let data_error = |e: crate::data::SplitError| ExportError::Data { name: card.name.clone(), message: e.to_string() };
    let splits = trajectories.iter().map(|t| Split::with_history(t, &split_config, history_frames)).collect::<Result<Vec<_>, _>>();
    let split = Split::merged(splits.map_err(data_error)?);
    let file = dir.join(MODEL_FILE);
    card.inference = Some(measure_inference(&file, &card.onnx.signature, split.test.inputs.view())?);

    let threads = every_core();
    let mut session = OnnxModel::load(&file, &card.onnx.signature, ExecutionDevice::Cpu, threads)?;
    let mut failure = None;
    let mut forecaster = ModelForecaster {
        name: card.name.clone(),
        history_frames,
        predict: |x: ArrayView3<f32>, previous: ArrayView4<f32>| match session.run_window(x, previous) {
            Ok(dx) => dx,
            Err(e) => {
                failure.get_or_insert(e);
                Array3::zeros(x.raw_dim())
            }
        },
    };
    let frames = ForecastFrames::new(&segments(trajectories, &split_config), history_frames);
    let mut forecast = frames.report(&mut [&mut forecaster]);
    if let Some(e) = failure {
        return Err(e.into());
    }
    if card.onnx.signature.is_stochastic() {
        let long_steps = card.forecast.as_ref().and_then(|f| f.sampled.as_ref()).map_or(super::forecast::LONG_ROLLOUT_STEPS, |s| s.long_steps);
        let kick_shape = card.noise.as_ref().and_then(|noise| noise.kicks);
        forecast.sampled = Some(sampled_report(&file, &card.onnx.signature, kick_shape, &card.name, &frames, long_steps)?.0);
    }
    card.forecast = Some(forecast);
    commit_all([stage_card(dir, card)?]).map_err(io_error(dir))
}

/// max |actual − expected| / max |expected|.
pub fn relative_error<'a>(actual: impl IntoIterator<Item = &'a f32>, expected: impl IntoIterator<Item = &'a f32> + Clone) -> f64 {
    let scale = expected.clone().into_iter().fold(0.0_f64, |m, v| m.max(f64::from(v.abs()))).max(f64::MIN_POSITIVE);
    // NaN must win the maximum (f64::max would drop it) so that it fails the check.
    let error = actual.into_iter().zip(expected).fold(0.0_f64, |m, (a, e)| {
        let d = f64::from((a - e).abs());
        if d.is_nan() || m.is_nan() { f64::NAN } else { m.max(d) }
    });
    error / scale
}

/// max |ONNX − reference| / max |reference| over the test inputs (whose reference dx
/// is given) and Gaussian random frames.
fn check_parity(
    model: &impl ExportableModel,
    onnx_file: &Path,
    signature: &Signature,
    test: &Pairs,
    test_dx: &Array3<f32>,
    target: Target,
    seed: u64,
) -> Result<f64, ExportError> {
    let mut session = OnnxModel::load(onnx_file, signature, ExecutionDevice::Cpu, 1)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let held = model.history_frames() - 1;
    let random = Array3::from_shape_simple_fn((16, PARTICLES, DIMS), || StandardNormal.sample(&mut rng));
    let random_previous = Array4::from_shape_simple_fn((16, held, PARTICLES, DIMS), || StandardNormal.sample(&mut rng));
    let random_dx = model.reference_dx(random.view(), random_previous.view(), target);
    let test_previous = test.previous_frames(held);
    let mut worst = 0.0_f64;
    for (inputs, previous, expected) in [(test.inputs.view(), test_previous.view(), test_dx), (random.view(), random_previous.view(), &random_dx)] {
        let (actual, actual_std) = session.run_window_with_std(inputs, previous)?;
        worst = worst.max(relative_error(&actual, expected));
        match (model.reference_std(inputs, previous), actual_std) {
            (Some(expected), Some(actual)) => worst = worst.max(relative_error(&actual, &expected)),
            (None, None) => {}
            // A graph without the model's dx_std (or with one it has not) is not its function.
            _ => worst = f64::INFINITY,
        }
    }
    Ok(worst)
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
