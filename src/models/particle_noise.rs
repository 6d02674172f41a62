//! A noise model any mean can carry: each particle's own spread, the same in every
//! configuration.

use super::{ModelInputs, OpsModel};
use crate::{
    data::PARTICLES,
    nn::{Ops, Unary},
};

/// `model`'s mean with dx_std_i = s · e^(b_i): a thermal kick per particle that does not
/// depend on where the particles are (the mean carries the friction that balances it),
/// isotropic, so the distribution is as equivariant as the mean. The 12 b_i are fitted by
/// likelihood after the mean, and s is calibrated on sampled rollouts, as every stochastic
/// model's noise is.
#[derive(Debug, Clone)]
pub struct ParticleNoise<M> {
    pub model: M,
    log_std: Vec<f64>,
    scale: f64,
}

impl<M> ParticleNoise<M> {
    /// Every particle's spread at `scale` to start with.
    pub fn new(model: M, scale: f64) -> Self {
        Self { model, log_std: vec![0.0; PARTICLES], scale }
    }
}

impl<M: OpsModel> OpsModel for ParticleNoise<M> {
    fn forward<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> O::Tensor {
        self.model.forward(ops, inputs)
    }

    fn history_frames(&self) -> usize {
        self.model.history_frames()
    }

    fn fitted_settings(&self) -> Option<serde_json::Value> {
        let noise = serde_json::json!({ "scale": self.scale, "log_std": self.log_std });
        let mut settings = self.model.fitted_settings().unwrap_or_else(|| serde_json::json!({}));
        settings["particle_noise"] = noise;
        Some(settings)
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        self.model.weights_mut()
    }

    fn num_params(&self) -> usize {
        self.model.num_params() + self.log_std.len()
    }

    fn after_fit(&mut self) {
        self.model.after_fit();
    }

    fn stochastic(&self) -> bool {
        true
    }

    fn forward_std<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> Option<O::Tensor> {
        let log_std = ops.weight(&[PARTICLES], &self.log_std);
        let std = ops.unary(&log_std, Unary::Exp);
        let std = ops.scale(&std, self.scale);
        Some(ops.repeat_for_batch(inputs.positions, &std))
    }

    fn noise_weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        vec![&mut self.log_std]
    }

    fn scale_noise(&mut self, factor: f64) {
        self.scale *= factor;
    }

    // No bound: a spread that is the same everywhere is no larger anywhere than where it was fitted.

    fn init_weights(&mut self, rng: &mut impl rand::Rng) {
        self.model.init_weights(rng);
        self.log_std.iter_mut().for_each(|b| *b = 0.0);
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::*;
    use crate::{models::Mlp, nn::Eager};

    #[test]
    fn each_particle_keeps_its_spread_in_every_frame_and_batch() {
        let mut model = ParticleNoise::new(Mlp::with_history(2), 0.5);
        model.log_std.iter_mut().enumerate().for_each(|(i, b)| *b = 0.1 * i as f64);
        model.scale_noise(2.0);
        for batch in [1, 3] {
            let positions = ArrayD::from_shape_fn(IxDyn(&[batch, PARTICLES, 3]), |index| (index[0] * 7 + index[1] * 3 + index[2]) as f64);
            let previous = ArrayD::zeros(IxDyn(&[batch, 1, PARTICLES, 3]));
            let inputs = ModelInputs { positions: &positions, previous: Some(&previous) };
            let std = model.forward_std(&mut Eager, &inputs).expect("stochastic");
            assert_eq!(std.shape(), &[batch, PARTICLES]);
            for (index, &value) in std.indexed_iter() {
                let expected = (0.1 * index[1] as f64).exp();
                assert!((value - expected).abs() < 1e-12, "{index:?}: {value} vs {expected}");
            }
        }
        assert_eq!(model.num_params(), Mlp::with_history(2).num_params() + PARTICLES);
        assert_eq!(model.noise_weights_mut().len(), 1);
    }
}
