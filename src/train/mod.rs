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

pub use crate::card::{EpochStats, TrainConfig, kept_epoch};
use crate::data::{Split, Target};

/// Adam's moment decay rates and ε as PyTorch's `torch.optim.Adam` defaults, which the
/// study trains with. (Burn's own default ε is 1e-5: 1,000× larger, it damps every
/// step whose gradients are that small, as dx-sized residuals make them.)
pub(crate) const ADAM_BETA1: f64 = 0.9;
pub(crate) const ADAM_BETA2: f64 = 0.999;
pub(crate) const ADAM_EPSILON: f64 = 1e-8;

/// The root mean square of the training targets: the output scale that makes them of
/// order one, or `None` when they are all zero or not finite.
pub fn target_rms(split: &Split, target: Target) -> Option<f64> {
    let targets = split.train.targets(target);
    let mean_square = targets.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / targets.len().max(1) as f64;
    let rms = mean_square.sqrt();
    (rms.is_finite() && rms > 0.0).then_some(rms)
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
