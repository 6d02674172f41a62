//! A fast E(3)-equivariant model for a window of frames: the chain's own inertia as a
//! learned linear filter of its past displacements, plus a learned pair force,
//!
//! dx_i(t) = Σ_k c_k (d_i,k − d̄_k) + Σ_k c'_k d̄_k + a · Σ_j f_ij(|r_ij|) (x_j − x_i),
//! d_i,k = x_i(t−k+1) − x_i(t−k), d̄_k the centroid's,
//!
//! with f_ij a radial function of its own for every pair of particles (a Gaussian basis
//! on the distance; the chain's bonds and its non-bonded contacts differ by pair), the
//! same for (i, j) and (j, i), so forces come in equal and opposite pairs. Displacements
//! and pair vectors are polar vectors and f_ij depends on distances only, so the model
//! is E(3)-equivariant; it is not invariant to relabelling the particles, on purpose.
//! It starts from a filter of past displacements (persistence, or one fitted to the
//! training data) and no force, and learns from there. After training the centroid gets
//! a filter of its own (c', least squares on the centroid's displacements; until then
//! c' = c): the chain's centre of mass keeps its velocity far longer than a particle
//! does, whose motion the bonds turn around (on the simulator's chain Σc' = 0.99 against
//! Σc = 0.96), and one filter for both made sampled ensembles spread too little at 50
//! and 100 steps. Forces and the particles' filter never move the centroid, so c' is
//! the one-step optimum for its motion whatever the rest learned.
//!
//! The model is stochastic: the next displacement is Gaussian about dx with a standard
//! deviation per particle (isotropic), log σ_i = s + b_i + Σ_m w_m Σ_j φ_m(|r_ij|), a
//! function of how crowded the particle's surroundings are (collisions are where the
//! data's steps are least predictable), fitted after the mean by Gaussian likelihood.
//!
//! A last term pulls every particle towards the system's centroid, κ (x̄ − x_i) =
//! Σ_j (κ/12)(x_j − x_i): a pair force of one strength for every pair, so momentum is
//! still conserved. One-step training cannot see it (on paths.npz κ ≈ 4e-6 per step, far
//! below the residual), but it sets how large the chain grows over thousands of sampled
//! steps; it is calibrated with the noise, so that sampled rollouts keep the data's size.

use super::{ModelInputs, OpsModel, graph::pairwise, history::window_displacements};
use crate::{
    data::{DIMS, PARTICLES},
    nn::{Ops, Unary},
};

/// Gaussian radial basis functions per pair.
pub const BASIS: usize = 16;
const N: i64 = PARTICLES as i64;
const DISTINCT_PAIRS: usize = PARTICLES * (PARTICLES - 1) / 2;
/// No bound on ln σ until the fit sets one: finite in f32.
const UNREACHED: f64 = 1e30;

#[derive(Debug, Clone)]
pub struct PairForce {
    history_frames: usize,
    /// The basis covers distances 0..max_distance.
    max_distance: f64,
    /// a: the size of a typical change of displacement, so that the learned forces are
    /// of order one.
    acceleration_scale: f64,
    /// c_k, k = 1..K−1.
    filter: Vec<f64>,
    /// Where the filter starts: persistence, or a filter fitted to the data.
    initial_filter: Vec<f64>,
    /// c'_k, the centroid's, once fitted (until then the centroid follows c).
    centroid_filter: Option<Vec<f64>>,
    /// Radial weights [pair (i < j), basis].
    radial: Vec<f64>,
    /// s: the typical size of the noise, so that the fitted weights are of order one.
    noise_scale: f64,
    /// b_i, per particle.
    noise_bias: Vec<f64>,
    /// w_m, on the particle's summed basis over its partners.
    noise_radial: Vec<f64>,
    /// The largest σ / s: ln σ is clipped there.
    noise_bound: f64,
    /// κ: the pull towards the centroid per unit distance and step.
    confinement: f64,
}

impl PairForce {
    /// A model reading `history_frames` ≥ 2 frames, for chains whose pair distances stay
    /// below `max_distance` and whose displacements change by about `acceleration_scale`
    /// per step.
    pub fn new(history_frames: usize, max_distance: f64, acceleration_scale: f64) -> Self {
        assert!(history_frames >= 2, "a filter of past displacements needs at least two frames");
        let mut filter = vec![0.0; history_frames - 1];
        filter[0] = 1.0;
        let initial_filter = filter.clone();
        Self {
            history_frames,
            max_distance,
            acceleration_scale,
            centroid_filter: None,
            filter,
            initial_filter,
            radial: vec![0.0; DISTINCT_PAIRS * BASIS],
            noise_scale: 1.0,
            noise_bias: vec![0.0; PARTICLES],
            noise_radial: vec![0.0; BASIS],
            noise_bound: UNREACHED,
            confinement: 0.0,
        }
    }

    /// The noise starts at `scale` for every particle (e.g. the residual of the starting
    /// filter) before its fit.
    pub fn with_noise_scale(mut self, scale: f64) -> Self {
        self.noise_scale = scale;
        self
    }

    /// Starts training from `coefficients` (c_1 … c_{K−1}, e.g. least squares on the
    /// training data) instead of persistence: the forces then learn what the filter leaves.
    pub fn starting_from(mut self, coefficients: Vec<f64>) -> Self {
        assert_eq!(coefficients.len(), self.history_frames - 1, "one coefficient per past displacement");
        self.filter = coefficients.clone();
        self.initial_filter = coefficients;
        self
    }

    /// Gives the centroid its own filter c'_1 … c'_{K−1} (after training: least squares
    /// on the centroid's displacements).
    pub fn set_centroid_filter(&mut self, coefficients: Vec<f64>) {
        assert_eq!(coefficients.len(), self.history_frames - 1, "one coefficient per past displacement");
        self.centroid_filter = Some(coefficients);
    }

    /// The row of each ordered pair (src, dst) in the radial weights; a particle with
    /// itself reads row 0 (its pair vector is zero).
    fn pair_rows() -> Vec<usize> {
        (0..PARTICLES * PARTICLES)
            .map(|p| {
                let (a, b) = (p / PARTICLES, p % PARTICLES);
                let (i, j) = (a.min(b), a.max(b));
                if i == j { 0 } else { i * (2 * PARTICLES - i - 1) / 2 + (j - i - 1) }
            })
            .collect()
    }

    /// dx: the filter of the window's displacements plus the pair forces, from the pair
    /// vectors and basis.
    fn mean<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>, vec: &O::Tensor, basis: &O::Tensor) -> O::Tensor {
        let previous = inputs.previous.expect("a history model reads previous frames");
        // Inertia: Σ c_k d_k as one matmul of the window's displacements.
        let displacements = window_displacements(ops, inputs.positions, previous, self.history_frames);
        let taps = (self.history_frames - 1) as i64;
        let filter = ops.weight(&[self.history_frames - 1, 1], &self.filter);
        let inertia = ops.matmul(&displacements, &filter);
        let inertia = ops.reshape(&inertia, &[-1, N, DIMS as i64]);
        // The centroid's own inertia: Σ_k (c'_k − c_k) d̄_k, the same for every particle.
        let inertia = match &self.centroid_filter {
            Some(centroid_filter) => {
                let centroid = ops.reshape(&displacements, &[-1, N, DIMS as i64 * taps]);
                let centroid = ops.reduce_sum(&centroid, 1, true);
                let centroid = ops.scale(&centroid, 1.0 / N as f64);
                let centroid = ops.reshape(&centroid, &[-1, taps]);
                let correction: Vec<f64> = centroid_filter.iter().zip(&self.filter).map(|(own, shared)| own - shared).collect();
                let correction = ops.weight(&[self.history_frames - 1, 1], &correction);
                let centroid = ops.matmul(&centroid, &correction);
                let centroid = ops.reshape(&centroid, &[-1, 1, DIMS as i64]);
                ops.add(&inertia, &centroid)
            }
            None => inertia,
        };

        // Pair forces: vec[(src, dst)] = x_src − x_dst, components first [B, 3, 144].
        let radial = ops.weight(&[DISTINCT_PAIRS, BASIS], &self.radial);
        let radial = ops.gather(&radial, 0, &Self::pair_rows());
        let strength = ops.mul(basis, &radial);
        let strength = ops.reduce_sum(&strength, 2, false);
        let strength = ops.reshape(&strength, &[-1, 1, N * N]);
        let force = ops.mul(vec, &strength);
        let force = ops.reshape(&force, &[-1, DIMS as i64, N, N]);
        let force = ops.reduce_sum(&force, 2, false);
        let force = ops.transpose(&force, &[0, 2, 1]);
        let force = ops.scale(&force, self.acceleration_scale);

        // Confinement: κ (x̄ − x_i).
        let centroid = ops.reduce_sum(inputs.positions, 1, true);
        let centroid = ops.scale(&centroid, 1.0 / N as f64);
        let pull = ops.sub(&centroid, inputs.positions);
        let pull = ops.scale(&pull, self.confinement);
        let force = ops.add(&force, &pull);
        ops.add(&inertia, &force)
    }

    /// σ_i = s · exp(b_i + Σ_m w_m Σ_j φ_m(|r_ij|)), clipped at the bound: only
    /// distances, so invariant.
    fn std<O: Ops>(&self, ops: &mut O, basis: &O::Tensor) -> O::Tensor {
        // Every particle's own pair (length 0) adds the same φ(0): part of b_i.
        let crowding = ops.reshape(basis, &[-1, N, N, BASIS as i64]);
        let crowding = ops.reduce_sum(&crowding, 2, false);
        let crowding = ops.reshape(&crowding, &[-1, BASIS as i64]);
        let weights = ops.weight(&[BASIS, 1], &self.noise_radial);
        let log_std = ops.matmul(&crowding, &weights);
        let log_std = ops.reshape(&log_std, &[-1, N]);
        let bias = ops.weight(&[PARTICLES], &self.noise_bias);
        let log_std = ops.add(&log_std, &bias);
        let log_std = ops.clip(&log_std, -UNREACHED, self.noise_bound.ln());
        let std = ops.unary(&log_std, Unary::Exp);
        ops.scale(&std, self.noise_scale)
    }

    /// Pair vectors [B, 3, 144] and the Gaussian basis on their lengths [B, 144, BASIS].
    fn pair_basis<O: Ops>(&self, ops: &mut O, positions: &O::Tensor) -> (O::Tensor, O::Tensor) {
        let (vec, length) = pairwise(ops, positions);
        let step = self.max_distance / (BASIS - 1) as f64;
        let centres: Vec<f64> = (0..BASIS).map(|m| m as f64 * step).collect();
        let centres = ops.constant(&[BASIS], &centres);
        let length = ops.reshape(&length, &[-1, N * N, 1]);
        let diff = ops.sub(&length, &centres);
        let diff = ops.scale(&diff, 1.0 / step);
        let diff = ops.mul(&diff, &diff);
        let diff = ops.unary(&diff, Unary::Neg);
        (vec, ops.unary(&diff, Unary::Exp))
    }
}

impl OpsModel for PairForce {
    fn history_frames(&self) -> usize {
        self.history_frames
    }

    fn forward<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> O::Tensor {
        let (vec, basis) = self.pair_basis(ops, inputs.positions);
        self.mean(ops, inputs, &vec, &basis)
    }

    /// One pair basis for both outputs: it is most of the graph's work.
    fn forward_with_std<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> (O::Tensor, Option<O::Tensor>) {
        let (vec, basis) = self.pair_basis(ops, inputs.positions);
        (self.mean(ops, inputs, &vec, &basis), Some(self.std(ops, &basis)))
    }

    fn fitted_settings(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "max_distance": self.max_distance,
            "acceleration_scale": self.acceleration_scale,
            "noise_scale": self.noise_scale,
            "noise_bound": self.noise_bound,
            "confinement": self.confinement,
            "centroid_filter": self.centroid_filter,
        }))
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        vec![&mut self.filter, &mut self.radial]
    }

    fn num_params(&self) -> usize {
        self.filter.len() + self.centroid_filter.as_ref().map_or(0, Vec::len) + self.radial.len() + self.noise_bias.len() + self.noise_radial.len()
    }

    fn stochastic(&self) -> bool {
        true
    }

    fn forward_std<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> Option<O::Tensor> {
        let (_, basis) = self.pair_basis(ops, inputs.positions);
        Some(self.std(ops, &basis))
    }

    fn noise_weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        vec![&mut self.noise_bias, &mut self.noise_radial]
    }

    fn scale_noise(&mut self, factor: f64) {
        self.noise_scale *= factor;
    }

    fn bound_noise(&mut self, largest: f64) {
        self.noise_bound = largest / self.noise_scale;
    }

    fn confinement(&self) -> Option<f64> {
        Some(self.confinement)
    }

    fn set_confinement(&mut self, strength: f64) {
        self.confinement = strength;
    }

    /// The starting filter, no force and the noise at its scale: training starts from a
    /// guess without physics.
    fn init_weights(&mut self, _rng: &mut impl rand::Rng) {
        self.filter.clone_from(&self.initial_filter);
        self.centroid_filter = None;
        self.confinement = 0.0;
        self.radial.iter_mut().for_each(|w| *w = 0.0);
        self.noise_bias.iter_mut().for_each(|w| *w = 0.0);
        self.noise_radial.iter_mut().for_each(|w| *w = 0.0);
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::*;
    use crate::nn::Eager;

    #[test]
    fn pair_rows_are_symmetric_and_cover_every_pair_once() {
        let rows = PairForce::pair_rows();
        let mut seen = vec![0; DISTINCT_PAIRS];
        for a in 0..PARTICLES {
            for b in 0..PARTICLES {
                assert_eq!(rows[a * PARTICLES + b], rows[b * PARTICLES + a]);
                if a < b {
                    seen[rows[a * PARTICLES + b]] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    }

    /// Forces come in equal and opposite pairs and the particles' filter acts on
    /// displacements from the centroid's: only the centroid's filter moves the centre of
    /// mass, whatever the other weights.
    #[test]
    fn only_the_centroid_filter_moves_the_centre_of_mass() {
        let mut model = PairForce::new(3, 3.0, 1.0);
        model.filter = vec![0.8, -0.3];
        model.centroid_filter = Some(vec![0.0, 0.0]);
        model.confinement = 0.3;
        model.radial.iter_mut().enumerate().for_each(|(i, w)| *w = ((i * 7) as f64 * 0.37).sin());
        let positions = ArrayD::from_shape_fn(IxDyn(&[2, PARTICLES, DIMS]), |ix| ((ix[0] * 36 + ix[1] * 3 + ix[2]) as f64 * 0.71).sin() * 1.5);
        let previous = ArrayD::from_shape_fn(IxDyn(&[2, 2, PARTICLES, DIMS]), |ix| {
            positions[[ix[0], ix[2], ix[3]]] - 0.01 * (2 - ix[1]) as f64 * (1.0 + ((ix[2] * 3 + ix[3]) as f64).cos())
        });
        let out = model.forward(&mut Eager, &ModelInputs { positions: &positions, previous: Some(&previous) });
        let scale = out.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "forces act");
        for frame in 0..2 {
            for d in 0..DIMS {
                let total: f64 = (0..PARTICLES).map(|p| out[[frame, p, d]]).sum();
                assert!(total.abs() < 1e-12 * scale * PARTICLES as f64, "net force {total}");
            }
        }
    }

    /// The confinement alone pulls every particle towards the centroid, in proportion.
    #[test]
    fn the_confinement_pulls_towards_the_centroid() {
        let mut model = PairForce::new(2, 3.0, 1.0);
        model.filter = vec![0.0];
        model.set_confinement(0.25);
        let positions = ArrayD::from_shape_fn(IxDyn(&[1, PARTICLES, DIMS]), |ix| ((ix[1] * 3 + ix[2]) as f64 * 0.9).cos());
        let previous = positions.clone().insert_axis(ndarray::Axis(1));
        let out = model.forward(&mut Eager, &ModelInputs { positions: &positions, previous: Some(&previous) });
        for d in 0..DIMS {
            let centroid = (0..PARTICLES).map(|p| positions[[0, p, d]]).sum::<f64>() / PARTICLES as f64;
            for p in 0..PARTICLES {
                assert!((out[[0, p, d]] - 0.25 * (centroid - positions[[0, p, d]])).abs() < 1e-12);
            }
        }
    }
}
