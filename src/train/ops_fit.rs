//! Training models written against [`Ops`] in Burn: each step runs the model on a
//! fresh [`BurnOps`] (weights become autodiff leaves), and Adam updates the layers'
//! own weight vectors with the gradients, so the exported graph always reads the
//! trained values.

use std::{collections::HashMap, time::Instant};

use burn::tensor::{Device, Tensor, TensorData};
use ndarray::{Array3, ArrayView3, Axis, s};
use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};

use super::{EpochStats, TrainConfig, metrics};
use crate::{
    data::{DIMS, PARTICLES, Split, Target},
    models::OpsModel,
    nn::{BurnOps, Ops},
};

/// Adam (PyTorch's defaults: β = (0.9, 0.999), ε = 1e-8) on plain weight vectors.
struct Adam {
    learning_rate: f64,
    step: i32,
    /// First and second moments per weight slice, by the slice's address.
    moments: HashMap<usize, (Vec<f64>, Vec<f64>)>,
}

impl Adam {
    fn new(learning_rate: f64) -> Self {
        Self { learning_rate, step: 0, moments: HashMap::new() }
    }

    /// Applies one step; `gradients` are keyed by the address of the slice they belong to.
    fn update(&mut self, weights: Vec<&mut Vec<f64>>, gradients: &[(usize, Vec<f32>)]) {
        const BETA1: f64 = 0.9;
        const BETA2: f64 = 0.999;
        const EPSILON: f64 = 1e-8;
        self.step += 1;
        let (c1, c2) = (1.0 - BETA1.powi(self.step), 1.0 - BETA2.powi(self.step));
        for vector in weights {
            let base = vector.as_ptr() as usize;
            let end = base + vector.len() * std::mem::size_of::<f64>();
            for (address, grad) in gradients.iter().filter(|(a, _)| (base..end).contains(a)) {
                let offset = (address - base) / std::mem::size_of::<f64>();
                let (m, v) = self.moments.entry(*address).or_insert_with(|| (vec![0.0; grad.len()], vec![0.0; grad.len()]));
                for (i, g) in grad.iter().map(|g| f64::from(*g)).enumerate() {
                    m[i] = BETA1 * m[i] + (1.0 - BETA1) * g;
                    v[i] = BETA2 * v[i] + (1.0 - BETA2) * g * g;
                    vector[offset + i] -= self.learning_rate * (m[i] / c1) / ((v[i] / c2).sqrt() + EPSILON);
                }
            }
        }
    }
}

fn frames_tensor(ops: &mut BurnOps, frames: ArrayView3<f32>) -> crate::nn::BurnTensor {
    let values: Vec<f64> = frames.iter().map(|v| f64::from(*v)).collect();
    ops.constant(&[frames.dim().0, PARTICLES, DIMS], &values)
}

/// The model's dx for positions [batch, 12, 3], computed in Burn without gradients.
pub fn predict_dx_ops<M: OpsModel>(model: &M, positions: ArrayView3<f32>, target: Target) -> Array3<f32> {
    const CHUNK: usize = 256;
    let mut dx = Array3::<f32>::zeros(positions.raw_dim());
    for start in (0..positions.dim().0).step_by(CHUNK) {
        let end = (start + CHUNK).min(positions.dim().0);
        let chunk = positions.slice(s![start..end, .., ..]);
        let mut ops = BurnOps::new(Device::flex());
        let input = frames_tensor(&mut ops, chunk);
        let out = model.forward(&mut ops, &input).to_vec();
        let mut out = Array3::from_shape_vec((end - start, PARTICLES, DIMS), out).expect("model output is [batch, 12, 3]");
        if target == Target::X {
            out -= &chunk;
        }
        dx.slice_mut(s![start..end, .., ..]).assign(&out);
    }
    dx
}

/// Trains with Adam on the MSE, as the study does; `on_epoch` sees each epoch's stats.
pub fn fit_ops<M: OpsModel>(model: &mut M, split: &Split, config: &TrainConfig, mut on_epoch: impl FnMut(&EpochStats)) -> Vec<EpochStats> {
    let device = Device::flex().autodiff();
    let targets = split.train.targets(config.target);
    let mut adam = Adam::new(config.learning_rate);
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
            let x = split.train.inputs.select(Axis(0), batch);
            let y = targets.select(Axis(0), batch);
            let mut ops = BurnOps::new(device.clone());
            let input = frames_tensor(&mut ops, x.view());
            let out = model.forward(&mut ops, &input);
            let prediction: Tensor<3> = out.value().clone().reshape([batch.len(), PARTICLES, DIMS]);
            let truth: Tensor<3> = Tensor::from_data(TensorData::new(y.iter().copied().collect::<Vec<_>>(), [batch.len(), PARTICLES, DIMS]), &device);
            let loss = (prediction - truth).powi_scalar(2).mean();
            losses.push(f64::from(loss.clone().into_data().convert::<f32>().try_to_vec::<f32>().expect("float")[0]));
            let gradients = ops.weight_gradients(&loss.backward());
            adam.update(model.weights_mut(), &gradients);
        }
        let seconds = start.elapsed().as_secs_f64();
        let test_dx = predict_dx_ops(model, split.test.inputs.view(), config.target);
        let stats = EpochStats {
            epoch: epoch + 1,
            train_mse: losses.iter().sum::<f64>() / losses.len() as f64,
            test_mse: metrics::mse(&test_dx, &split.test.dx()),
            seconds,
        };
        on_epoch(&stats);
        history.push(stats);
    }
    history
}
