//! Training the zoo with Burn (flex CPU backend, autodiff, Adam), evaluating it, and
//! exporting it to ONNX with its model card.

mod export;
mod import;
pub mod metrics;
mod ops_fit;
mod plot;
mod report;

pub use export::{BurnModule, ExportError, ExportOutcome, ExportRequest, ExportableModel, OpsTrained, PARITY_TOLERANCE, export_model, relative_error};
pub use ops_fit::{fit_ops, predict_dx_ops, reference_dx};

pub use import::{ImportError, import_e3nn, load_gate_network, read_safetensors};
pub use plot::plot_losses;
pub use report::{StudyFigures, render_report, study_figures, write_report};

use std::time::Instant;

use burn::{
    optim::{AdamConfig, GradientsParams},
    tensor::{Device, Tensor, TensorData},
};
use ndarray::{Array3, ArrayView3, Axis, s};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde::{Deserialize, Serialize};

use crate::{
    data::{DIMS, PARTICLES, Split, Target},
    models::{DynamicsModel, layers::to_vec},
};

/// Adam's moment decay rates and ε as PyTorch's `torch.optim.Adam` defaults, which the
/// study trains with. (Burn's own default ε is 1e-5: 1,000× larger, it damps every
/// step whose gradients are that small, as dx-sized residuals make them.)
pub(crate) const ADAM_BETA1: f64 = 0.9;
pub(crate) const ADAM_BETA2: f64 = 0.999;
pub(crate) const ADAM_EPSILON: f64 = 1e-8;

/// Hyper-parameters of a training run; the defaults are the study's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Shuffle the training pairs each epoch (the study does not).
    pub shuffle: bool,
    pub target: Target,
    /// The network's outputs times this are its prediction, in training and in the
    /// exported graph: a network whose layers start with outputs of order one then
    /// learns targets of this size (dx on paths.npz: 4.9e-3) as values of order one.
    /// 1 is the study's unscaled outputs.
    #[serde(default = "unscaled")]
    pub output_scale: f64,
}

fn unscaled() -> f64 {
    1.0
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { epochs: 100, batch_size: 32, learning_rate: 1e-3, seed: 0, shuffle: false, target: Target::Dx, output_scale: unscaled() }
    }
}

/// The root mean square of the training targets: the output scale that makes them of
/// order one, or `None` when they are all zero or not finite.
pub fn target_rms(split: &Split, target: Target) -> Option<f64> {
    let targets = split.train.targets(target);
    let mean_square = targets.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / targets.len().max(1) as f64;
    let rms = mean_square.sqrt();
    (rms.is_finite() && rms > 0.0).then_some(rms)
}

/// One epoch's losses, as the study logs them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    /// Mean of the epoch's batch losses.
    pub train_mse: f64,
    /// MSE over the test pairs after the epoch.
    pub test_mse: f64,
    pub seconds: f64,
}

/// The CPU device training runs on, seeded so initial weights are reproducible.
pub fn training_device(seed: u64) -> Device {
    let device = Device::flex().autodiff();
    device.seed(seed);
    device
}

/// One way of training a model, driven by [`run_epochs`].
trait Trainer {
    /// Trains on the training pairs at `batch` and returns the batch's loss.
    fn step(&mut self, batch: &[usize]) -> f64;
    /// The model's current dx on the test inputs.
    fn test_dx(&self) -> Array3<f32>;
}

/// The study's schedule: epochs of batches in order (or shuffled, seeded), each
/// followed by the test MSE; `on_epoch` sees each epoch's stats (for progress bars).
fn run_epochs(trainer: &mut impl Trainer, split: &Split, config: &TrainConfig, mut on_epoch: impl FnMut(&EpochStats)) -> Vec<EpochStats> {
    let mut order: Vec<usize> = (0..split.train.len()).collect();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let test_truth = split.test.dx();
    (0..config.epochs)
        .map(|epoch| {
            let start = Instant::now();
            if config.shuffle {
                order.shuffle(&mut rng);
            }
            let losses: Vec<f64> = order.chunks(config.batch_size).map(|batch| trainer.step(batch)).collect();
            let seconds = start.elapsed().as_secs_f64();
            let stats = EpochStats {
                epoch: epoch + 1,
                train_mse: losses.iter().sum::<f64>() / losses.len() as f64,
                test_mse: metrics::mse(&trainer.test_dx(), &test_truth),
                seconds,
            };
            on_epoch(&stats);
            stats
        })
        .collect()
}

/// A Burn module trained with Burn's Adam.
struct ModuleTrainer<'a, M> {
    /// Taken out and put back by every optimizer step.
    model: Option<M>,
    optimizer: burn::optim::ModuleOptimizer,
    split: &'a Split,
    targets: Array3<f32>,
    config: &'a TrainConfig,
    device: &'a Device,
}

impl<M: DynamicsModel> Trainer for ModuleTrainer<'_, M> {
    fn step(&mut self, batch: &[usize]) -> f64 {
        let model = self.model.take().expect("the model is always put back");
        let x = to_tensor(self.split.train.inputs.select(Axis(0), batch).view(), self.device);
        let y = to_tensor(self.targets.select(Axis(0), batch).view(), self.device);
        let loss = (model.forward(x) * self.config.output_scale - y).powi_scalar(2).mean();
        let value = f64::from(to_vec(loss.clone())[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        self.model = Some(self.optimizer.step(self.config.learning_rate, model, grads));
        value
    }

    fn test_dx(&self) -> Array3<f32> {
        let model = self.model.as_ref().expect("the model is always put back");
        predict_dx(model, self.split.test.inputs.view(), self.config.target, self.config.output_scale, self.device)
    }
}

/// Trains with Adam on MSE, as the study does.
pub fn fit<M: DynamicsModel>(
    model: M,
    split: &Split,
    config: &TrainConfig,
    device: &Device,
    on_epoch: impl FnMut(&EpochStats),
) -> (M, Vec<EpochStats>) {
    let mut trainer = ModuleTrainer {
        model: Some(model),
        optimizer: AdamConfig::new()
            .with_beta_1(ADAM_BETA1 as f32)
            .with_beta_2(ADAM_BETA2 as f32)
            .with_epsilon(ADAM_EPSILON as f32)
            .init(),
        split,
        targets: split.train.targets(config.target),
        config,
        device,
    };
    let history = run_epochs(&mut trainer, split, config, on_epoch);
    (trainer.model.expect("the model is always put back"), history)
}

fn to_tensor(positions: ArrayView3<f32>, device: &Device) -> Tensor<3> {
    let (batch, particles, dims) = positions.dim();
    let data: Vec<f32> = positions.iter().copied().collect();
    Tensor::from_data(TensorData::new(data, [batch, particles, dims]), device)
}

/// The model's dx for positions [batch, 12, 3] (its outputs times `output_scale`), in
/// chunks, without recording gradients.
pub fn predict_dx<M: DynamicsModel>(model: &M, positions: ArrayView3<f32>, target: Target, output_scale: f64, device: &Device) -> Array3<f32> {
    const CHUNK: usize = 512;
    let model = model.clone().no_grad();
    let mut dx = Array3::<f32>::zeros(positions.raw_dim());
    for start in (0..positions.dim().0).step_by(CHUNK) {
        let end = (start + CHUNK).min(positions.dim().0);
        let chunk = positions.slice(s![start..end, .., ..]);
        let out = to_vec(model.forward(to_tensor(chunk, device)) * output_scale);
        let mut out = Array3::from_shape_vec((end - start, PARTICLES, DIMS), out).expect("model output is [batch, 12, 3]");
        if target == Target::X {
            out -= &chunk;
        }
        dx.slice_mut(s![start..end, .., ..]).assign(&out);
    }
    dx
}

/// Trains `kind` on `split` and exports it into `out_dir/<name>/`.
pub fn train_and_export(
    kind: crate::models::ModelKind,
    request: ExportRequest,
    on_epoch: impl FnMut(&EpochStats),
) -> Result<ExportOutcome, export::ExportError> {
    use crate::models::{E3Small, GateNetwork, GateNetworkConfig, Gnn, ModelKind, Se3Transformer};
    match kind {
        ModelKind::Mlp => {
            let device = training_device(request.config.seed);
            let model = crate::models::Mlp::new(&device);
            let (model, history) = fit(model, request.split, request.config, &device, on_epoch);
            let output_scale = request.config.output_scale;
            export_model(&BurnModule { model: &model, output_scale, device: &device }, ExportRequest { history, ..request })
        }
        ModelKind::Gnn => train_ops_model(Gnn::new(), request, on_epoch),
        ModelKind::E3small => train_ops_model(E3Small::new(), request, on_epoch),
        ModelKind::E3large => {
            let model = GateNetwork::new(GateNetworkConfig::study()).expect("the study's kwargs are valid");
            train_ops_model(model, request, on_epoch)
        }
        ModelKind::Se3mha => train_ops_model(Se3Transformer::attention(false), request, on_epoch),
        ModelKind::Se3net => train_ops_model(Se3Transformer::transformer(false), request, on_epoch),
        ModelKind::Se3mhaCentered => train_ops_model(Se3Transformer::attention(true), request, on_epoch),
        ModelKind::Se3netCentered => train_ops_model(Se3Transformer::transformer(true), request, on_epoch),
    }
}

/// Seeded e3nn-style initialisation, training in Burn, export.
fn train_ops_model<M: crate::models::OpsModel>(
    mut model: M,
    request: ExportRequest,
    on_epoch: impl FnMut(&EpochStats),
) -> Result<ExportOutcome, export::ExportError> {
    model.init_weights(&mut StdRng::seed_from_u64(request.config.seed));
    let scale = request.config.output_scale;
    if scale == 1.0 {
        let history = fit_ops(&mut model, request.split, request.config, on_epoch);
        return export_model(&OpsTrained(&model), ExportRequest { history, ..request });
    }
    let mut model = crate::models::OutputScaled { model, scale };
    let history = fit_ops(&mut model, request.split, request.config, on_epoch);
    export_model(&OpsTrained(&model), ExportRequest { history, ..request })
}
