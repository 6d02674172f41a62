//! Training the zoo with Burn (flex CPU backend, autodiff, Adam), evaluating it, and
//! exporting it to ONNX with its model card.

mod export;
mod import;
pub mod metrics;
mod ops_fit;
mod plot;
mod report;

pub use export::{ExportError, ExportOutcome, ExportRequest, ExportableModel, OpsTrained, PARITY_TOLERANCE, export_model, relative_error, remeasure_inference};
pub use ops_fit::{fit_ops, predict_dx_ops, reference_dx};

pub use import::{ImportError, import_e3nn, load_gate_network, read_safetensors};
pub use plot::plot_losses;
pub use report::{StudyFigures, render_report, study_figures, write_report};

use rand::{SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::data::{Split, Target};

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
    /// Share of the training pairs held out, the last ones in time, to choose the epoch
    /// whose weights are kept: the one with the lowest MSE on them. 0 trains on every
    /// training pair and keeps the last epoch's weights, as the study does.
    #[serde(default)]
    pub validation_fraction: f64,
    /// With held-out pairs: stop after this many epochs without a new lowest MSE on them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patience: Option<usize>,
}

fn unscaled() -> f64 {
    1.0
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 100,
            batch_size: 32,
            learning_rate: 1e-3,
            seed: 0,
            shuffle: false,
            target: Target::Dx,
            output_scale: unscaled(),
            validation_fraction: 0.0,
            patience: None,
        }
    }
}

impl TrainConfig {
    /// How many of `train_pairs` (the last ones) are held out: none without a
    /// validation fraction, else at least one and never all.
    pub fn validation_pairs(&self, train_pairs: usize) -> usize {
        if self.validation_fraction <= 0.0 || train_pairs < 2 {
            return 0;
        }
        ((self.validation_fraction * train_pairs as f64).round() as usize).clamp(1, train_pairs - 1)
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
    /// MSE (of dx) over the held-out training pairs after the epoch, when some are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_mse: Option<f64>,
    pub seconds: f64,
}

/// The epoch whose weights a run kept: the lowest validation MSE (the first such),
/// or the last epoch when nothing was held out.
pub fn kept_epoch(history: &[EpochStats]) -> Option<&EpochStats> {
    let validated = history.iter().filter(|s| s.validation_mse.is_some_and(f64::is_finite));
    validated.min_by(|a, b| a.validation_mse.partial_cmp(&b.validation_mse).expect("finite")).or(history.last())
}

/// Trains `kind` on `split` and exports it into `out_dir/<name>/`.
pub fn train_and_export(
    kind: crate::models::ModelKind,
    request: ExportRequest,
    on_epoch: impl FnMut(&EpochStats),
) -> Result<ExportOutcome, export::ExportError> {
    use crate::models::{E3Small, GateNetwork, GateNetworkConfig, Gnn, Mlp, ModelKind, Se3Transformer};
    match kind {
        ModelKind::Mlp => train_ops_model(Mlp::new(), request, on_epoch),
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
