//! Training the zoo with Burn (flex CPU backend, autodiff, Adam), evaluating it, and
//! exporting it to ONNX with its model card.

mod export;
mod import;
pub mod metrics;
mod ops_fit;
mod plot;
mod report;

pub use export::{BurnModule, ExportError, ExportOutcome, ExportRequest, ExportableModel, OpsTrained, PARITY_TOLERANCE, export_model};
pub use ops_fit::{fit_ops, predict_dx_ops};
pub use import::{ImportError, import_e3nn, load_gate_network, read_safetensors, reference_dx};
pub use plot::plot_losses;
pub use report::{render_report, write_report};

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
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { epochs: 100, batch_size: 32, learning_rate: 1e-3, seed: 0, shuffle: false, target: Target::Dx }
    }
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

/// Trains with Adam on MSE; `on_epoch` sees each epoch's stats (for progress bars).
pub fn fit<M: DynamicsModel>(
    mut model: M,
    split: &Split,
    config: &TrainConfig,
    device: &Device,
    mut on_epoch: impl FnMut(&EpochStats),
) -> (M, Vec<EpochStats>) {
    let inputs = &split.train.inputs;
    let targets = split.train.targets(config.target);
    let mut optimizer = AdamConfig::new().init();
    let mut order: Vec<usize> = (0..split.train.len()).collect();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut history = Vec::with_capacity(config.epochs);
    for epoch in 0..config.epochs {
        let start = Instant::now();
        if config.shuffle {
            order.shuffle(&mut rng);
        }
        let mut losses = Vec::new();
        for batch in order.chunks(config.batch_size) {
            let x = to_tensor(inputs.select(Axis(0), batch).view(), device);
            let y = to_tensor(targets.select(Axis(0), batch).view(), device);
            let loss = (model.forward(x) - y).powi_scalar(2).mean();
            losses.push(f64::from(to_vec(loss.clone())[0]));
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(config.learning_rate, model, grads);
        }
        let seconds = start.elapsed().as_secs_f64();
        let test_dx = predict_dx(&model, split.test.inputs.view(), config.target, device);
        let stats = EpochStats {
            epoch: epoch + 1,
            train_mse: losses.iter().sum::<f64>() / losses.len() as f64,
            test_mse: metrics::mse(&test_dx, &split.test.dx()),
            seconds,
        };
        on_epoch(&stats);
        history.push(stats);
    }
    (model, history)
}

fn to_tensor(positions: ArrayView3<f32>, device: &Device) -> Tensor<3> {
    let (batch, particles, dims) = positions.dim();
    let data: Vec<f32> = positions.iter().copied().collect();
    Tensor::from_data(TensorData::new(data, [batch, particles, dims]), device)
}

/// The model's dx for positions [batch, 12, 3], in chunks, without recording gradients.
pub fn predict_dx<M: DynamicsModel>(model: &M, positions: ArrayView3<f32>, target: Target, device: &Device) -> Array3<f32> {
    const CHUNK: usize = 512;
    let model = model.clone().no_grad();
    let mut dx = Array3::<f32>::zeros(positions.raw_dim());
    for start in (0..positions.dim().0).step_by(CHUNK) {
        let end = (start + CHUNK).min(positions.dim().0);
        let chunk = positions.slice(s![start..end, .., ..]);
        let out = to_vec(model.forward(to_tensor(chunk, device)));
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
    use crate::models::{E3Small, GateNetwork, GateNetworkConfig, ModelKind};
    match kind {
        ModelKind::Mlp => {
            let device = training_device(request.config.seed);
            let model = crate::models::Mlp::new(&device);
            let (model, history) = fit(model, request.split, request.config, &device, on_epoch);
            export_model(&BurnModule { model: &model, device: &device }, ExportRequest { history, ..request })
        }
        ModelKind::E3small => train_ops_model(E3Small::new(), request, on_epoch),
        ModelKind::E3large => {
            let model = GateNetwork::new(GateNetworkConfig::study()).expect("the study's kwargs are valid");
            train_ops_model(model, request, on_epoch)
        }
    }
}

/// Seeded e3nn-style initialisation, training in Burn, export.
fn train_ops_model<M: crate::models::OpsModel>(
    mut model: M,
    request: ExportRequest,
    on_epoch: impl FnMut(&EpochStats),
) -> Result<ExportOutcome, export::ExportError> {
    model.init_weights(&mut StdRng::seed_from_u64(request.config.seed));
    let history = fit_ops(&mut model, request.split, request.config, on_epoch);
    export_model(&OpsTrained(&model), ExportRequest { history, ..request })
}
