//! Any model of the forces on a window, on top of the chain's inertia.

use super::{ModelInputs, OpsModel, history::ModeFilter};
use crate::{
    data::{DIMS, FRAME_LEN, PARTICLES},
    nn::Ops,
};

/// dx = the filter of the window's displacements per chain mode (the pair-force model's
/// inertia and friction) + `forces`' output: a network reading the window then learns
/// what the past displacements do not say, where on its own it has to learn the inertia
/// too (e3nn's gate network on paths.npz: one-step skill 0.29 after 30 epochs, where the
/// filter alone has 0.9998).
#[derive(Debug, Clone)]
pub struct Inertial<M> {
    pub filter: ModeFilter,
    pub forces: M,
}

impl<M: OpsModel> OpsModel for Inertial<M> {
    fn forward<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> O::Tensor {
        let previous = inputs.previous.expect("a history model reads previous frames");
        let inertia = self.filter.inertia(ops, inputs.positions, previous);
        let forces = self.forces.forward(ops, inputs);
        let forces = ops.reshape(&forces, &[-1, FRAME_LEN as i64]);
        let dx = ops.add(&inertia, &forces);
        ops.reshape(&dx, &[-1, PARTICLES as i64, DIMS as i64])
    }

    fn history_frames(&self) -> usize {
        self.filter.history_frames()
    }

    fn fitted_settings(&self) -> Option<serde_json::Value> {
        self.forces.fitted_settings()
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        let mut weights = vec![self.filter.coefficients_mut()];
        weights.extend(self.forces.weights_mut());
        weights
    }

    fn num_params(&self) -> usize {
        self.filter.num_params() + self.forces.num_params()
    }

    fn after_fit(&mut self) {
        self.filter.limit_mode_persistence();
        self.forces.after_fit();
    }

    /// The starting filter, and the forces' own initialisation.
    fn init_weights(&mut self, rng: &mut impl rand::Rng) {
        self.filter.restart();
        self.forces.init_weights(rng);
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::*;
    use crate::{models::Mlp, nn::Eager};

    /// The sum of the filter's inertia and the forces' model, each computed alone.
    #[test]
    fn dx_is_the_filter_plus_the_forces() {
        let per_mode: Vec<Vec<f64>> = (0..PARTICLES).map(|m| vec![0.9 - 0.03 * m as f64, -0.2]).collect();
        let mut forces = Mlp::with_history(3);
        forces.init_weights(&mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3));
        let model = Inertial { filter: ModeFilter::persistence(3).starting_from(&per_mode), forces: forces.clone() };
        let positions = ArrayD::from_shape_fn(IxDyn(&[2, PARTICLES, DIMS]), |ix| ((ix[0] * 36 + ix[1] * 3 + ix[2]) as f64 * 0.37).sin());
        let previous =
            ArrayD::from_shape_fn(IxDyn(&[2, 2, PARTICLES, DIMS]), |ix| positions[[ix[0], ix[2], ix[3]]] - 0.01 * (3 - ix[1]) as f64 * (ix[3] + 1) as f64);
        let inputs = ModelInputs { positions: &positions, previous: Some(&previous) };
        let dx = model.forward(&mut Eager, &inputs);
        let inertia = model.filter.inertia(&mut Eager, &positions, &previous).into_shape_with_order(IxDyn(&[2, PARTICLES, DIMS])).expect("[B, 36]");
        let expected = inertia + forces.forward(&mut Eager, &inputs);
        let error = dx.iter().zip(expected.iter()).fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(error < 1e-12, "{error:e}");
        assert_eq!(model.num_params(), 2 * PARTICLES + forces.num_params());
    }
}
