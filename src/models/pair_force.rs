//! A fast E(3)-equivariant model for a window of frames: the chain's own inertia as a
//! learned linear filter of its past displacements per chain mode, plus a learned pair
//! force,
//!
//! dx_i(t) = Σ_m u_m(i) Σ_k c_m,k D_m,k + a · Σ_j f_ij(|r_ij|) (x_j − x_i),
//! D_m,k = Σ_i u_m(i) d_i,k, d_i,k = x_i(t−k+1) − x_i(t−k),
//!
//! u_m the chain's normal modes (cosines along the particles' order, m = 0 the centroid),
//! with f_ij a radial function of its own for every pair of particles (a Gaussian basis
//! on the distance; the chain's bonds and its non-bonded contacts differ by pair), the
//! same for (i, j) and (j, i), so forces come in equal and opposite pairs. Displacements
//! and pair vectors are polar vectors and f_ij depends on distances only, so the model
//! is E(3)-equivariant; it is not invariant to relabelling the particles, on purpose.
//! Each mode has its own filter because each keeps its velocity for its own time: the
//! centroid and the slow bends for about a hundred steps, the fast modes a few before
//! the bonds turn them around (least squares on the simulator's chain: Σ_k c_m,k 0.99
//! for m = 0, 1 falling to 0.94 for m = 11). One filter for all (Σc = 0.96) damped the
//! slow bends four times too fast, and sampled ensembles spread too little at 50 and 100
//! steps. The filters start from least squares per mode (persistence without data), the
//! forces from zero, and both learn from there. Mode filters act on each coordinate
//! alike, so the model stays E(3)-equivariant.
//!
//! Beyond the distances a pair covered in training, its radial function is held at its
//! value at the edge (the distance fed to the basis is clamped to the pair's reach): the
//! Gaussians vanish outside the data, so a bond stretched further than the data went
//! felt no force and sampled chains tore (pair-distance W1 2.0–2.4× the data's own on
//! paths.npz); held, a bond pulls in proportion to its stretch (W1 1.1×).
//!
//! The model is stochastic: the next displacement is Gaussian about dx with a standard
//! deviation per particle (isotropic), log σ_i = s + b_i + Σ_m w_m Σ_j φ_m(|r_ij|), a
//! function of how crowded the particle's surroundings are (collisions are where the
//! data's steps are least predictable), fitted after the mean by Gaussian likelihood.
//!
//! A last term pulls every particle towards the system's centroid, κ (x̄ − x_i) =
//! Σ_j (κ/12)(x_j − x_i), or pushes it out where κ < 0: a pair force of one strength for
//! every pair, so momentum is still conserved. One-step training cannot see it (on
//! paths.npz κ ≈ 4e-6 per step, far below the residual), but it sets how large the chain
//! grows over thousands of sampled steps; it is calibrated with the noise, so that sampled
//! rollouts keep the data's size: a pull where the learned forces hold the chain too
//! loosely (paths.npz), a push where they hold it too tightly.

use super::{
    ModelInputs, OpsModel,
    history::{ModeFilter, identity_block},
};
use crate::{
    data::{DIMS, PARTICLES},
    nn::{Ops, Unary},
};

/// Gaussian radial basis functions per pair.
pub const BASIS: usize = 16;
const N: i64 = PARTICLES as i64;
const DISTINCT_PAIRS: usize = PARTICLES * (PARTICLES - 1) / 2;
/// The largest squared distance, in widths, from a Gaussian's centre that the basis
/// evaluates: e^−50 ≈ 2e−22.
const GAUSSIAN_CUTOFF: f64 = 50.0;
/// A radial weight below this fraction of the largest acts below f32's resolution.
const NEGLIGIBLE: f64 = 1e-9;
/// No bound on ln σ until the fit sets one: finite in f32.
const UNREACHED: f64 = 1e30;

/// Where training starts the filters per chain mode (the forces start from zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterStart {
    /// Least squares on every past displacement the window holds.
    LeastSquares,
    /// Least squares on the last displacement alone, no weight on the older ones.
    OneLag,
}

#[derive(Debug, Clone)]
pub struct PairForce {
    /// The basis covers distances 0..max_distance.
    max_distance: f64,
    /// a: the size of a typical change of displacement, so that the learned forces are
    /// of order one.
    acceleration_scale: f64,
    filter: ModeFilter,
    filter_start: FilterStart,
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
    /// The distances each distinct pair covered in training, (nearest, farthest): its
    /// radial function is held at its value there beyond them.
    reach: Option<Vec<(f64, f64)>>,
}

impl PairForce {
    /// A model reading `history_frames` ≥ 2 frames, for chains whose pair distances stay
    /// below `max_distance` and whose displacements change by about `acceleration_scale`
    /// per step.
    pub fn new(history_frames: usize, max_distance: f64, acceleration_scale: f64) -> Self {
        Self {
            max_distance,
            acceleration_scale,
            filter: ModeFilter::persistence(history_frames),
            filter_start: FilterStart::LeastSquares,
            radial: vec![0.0; DISTINCT_PAIRS * BASIS],
            noise_scale: 1.0,
            noise_bias: vec![0.0; PARTICLES],
            noise_radial: vec![0.0; BASIS],
            noise_bound: UNREACHED,
            confinement: 0.0,
            reach: None,
        }
    }

    /// Holds each pair's radial function at its value at the nearest and farthest
    /// distances the pair covered in training (`reach`, one (nearest, farthest) per
    /// distinct pair) beyond them: a Gaussian basis vanishes outside the data, so a bond
    /// stretched further than the data went would feel no force and tear; held, the force
    /// s(farthest) (x_j − x_i) keeps pulling, in proportion to the stretch.
    pub fn with_reach(mut self, reach: Vec<(f64, f64)>) -> Self {
        assert_eq!(reach.len(), DISTINCT_PAIRS, "one range per distinct pair");
        self.reach = Some(reach);
        self
    }

    /// The noise starts at `scale` for every particle (e.g. the residual of the starting
    /// filter) before its fit.
    pub fn with_noise_scale(mut self, scale: f64) -> Self {
        self.noise_scale = scale;
        self
    }

    /// Starts training from a filter per chain mode (`per_mode[m]` = c_m,1 … c_m,K−1, e.g.
    /// least squares on the training data) instead of persistence: the forces then learn
    /// what the filters leave.
    pub fn starting_from(mut self, per_mode: &[Vec<f64>]) -> Self {
        self.filter = self.filter.starting_from(per_mode);
        self
    }

    /// Records where training started the filters (`starting_from` least squares, unless
    /// told otherwise), for the card.
    pub fn with_filter_start(mut self, start: FilterStart) -> Self {
        self.filter_start = start;
        self
    }

    /// Zeroes the radial weights below 1e-9 of the largest, after training: those of
    /// Gaussians the data never reached keep what Adam's normalised steps on vanishing
    /// gradients left (down to 1e-36 on paths.npz), far below any force's resolution,
    /// and in f32 their products with the basis are subnormal numbers, which ran the
    /// graph 2.6× slower in ONNX Runtime.
    fn zero_negligible_weights(&mut self) {
        let largest = self.radial.iter().fold(0.0_f64, |m, w| m.max(w.abs()));
        self.radial.iter_mut().filter(|w| w.abs() < NEGLIGIBLE * largest).for_each(|w| *w = 0.0);
    }

    /// The particles (i, j), i < j, of each distinct pair, in the radial weights' (and
    /// the reach's) order.
    pub fn distinct_pairs() -> impl Iterator<Item = (usize, usize)> {
        (0..PARTICLES).flat_map(|i| (i + 1..PARTICLES).map(move |j| (i, j)))
    }

    /// [36, 3·66]: a frame [B, 36] times it is every distinct pair's vector x_i − x_j,
    /// components first ([B, 3, 66]).
    fn pair_differences() -> Vec<f64> {
        let columns = DIMS * DISTINCT_PAIRS;
        let mut matrix = vec![0.0; PARTICLES * DIMS * columns];
        for (pair, (i, j)) in Self::distinct_pairs().enumerate() {
            for d in 0..DIMS {
                matrix[(i * DIMS + d) * columns + d * DISTINCT_PAIRS + pair] = 1.0;
                matrix[(j * DIMS + d) * columns + d * DISTINCT_PAIRS + pair] = -1.0;
            }
        }
        matrix
    }

    /// [3·66, 36]: sums f (x_i − x_j) per pair into the particles, −f on i and +f on j
    /// (the difference matrix, transposed and negated).
    fn pair_forces_on_particles() -> Vec<f64> {
        let (rows, columns) = (PARTICLES * DIMS, DIMS * DISTINCT_PAIRS);
        let differences = Self::pair_differences();
        (0..columns * rows).map(|k| -differences[(k % rows) * columns + k / rows]).collect()
    }

    /// [36, 36]: the mean over the particles, per coordinate, times `factor`.
    fn centroid_block(factor: f64) -> Vec<f64> {
        let n = PARTICLES * DIMS;
        (0..n * n).map(|k| if (k / n) % DIMS == (k % n) % DIMS { factor / PARTICLES as f64 } else { 0.0 }).collect()
    }

    /// dx [B, 12, 3]: the filter of the window's displacements plus the pair forces, from
    /// the distinct pairs' vectors [B, 3, 66] and basis [B, BASIS, 66]. Every broadcast
    /// runs along the last axis (ONNX Runtime's fast path) or is a matmul.
    fn mean<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>, vec: &O::Tensor, basis: &O::Tensor) -> O::Tensor {
        let previous = inputs.previous.expect("a history model reads previous frames");
        let frame_len = (PARTICLES * DIMS) as i64;
        // Inertia: Σ_m Σ_k c_m,k (u_m u_mᵀ ⊗ I₃) d_k [B, 36].
        let inertia = self.filter.inertia(ops, inputs.positions, previous);

        // Pair forces: f_ij(|r_ij|) on each distinct pair's vector, summed into the
        // particles [B, 36].
        let radial = ops.weight(&[DISTINCT_PAIRS, BASIS], &self.radial);
        let radial = ops.transpose(&radial, &[1, 0]);
        let strength = ops.mul(basis, &radial);
        let strength = ops.reduce_sum(&strength, 1, true);
        let force = ops.mul(vec, &strength);
        let force = ops.reshape(&force, &[-1, (DIMS * DISTINCT_PAIRS) as i64]);
        let on_particles = ops.constant(&[DIMS * DISTINCT_PAIRS, PARTICLES * DIMS], &Self::pair_forces_on_particles());
        let force = ops.matmul(&force, &on_particles);
        let force = ops.scale(&force, self.acceleration_scale);

        // Confinement: κ (x̄ − x_i).
        let frame = ops.reshape(inputs.positions, &[-1, frame_len]);
        let pull: Vec<f64> =
            Self::centroid_block(self.confinement).iter().zip(identity_block()).map(|(centroid, own)| centroid - self.confinement * own).collect();
        let pull = ops.constant(&[PARTICLES * DIMS, PARTICLES * DIMS], &pull);
        let pull = ops.matmul(&frame, &pull);

        let dx = ops.add(&inertia, &force);
        let dx = ops.add(&dx, &pull);
        ops.reshape(&dx, &[-1, N, DIMS as i64])
    }

    /// σ_i = s · exp(b_i + Σ_m w_m Σ_j φ_m(|r_ij|)), clipped at the bound: only
    /// distances, so invariant. The sum over j counts the particle itself (φ(0)).
    fn std<O: Ops>(&self, ops: &mut O, basis: &O::Tensor) -> O::Tensor {
        // Σ_m w_m φ_m of each distinct pair, added to both its particles, as one matmul
        // of the basis [B, BASIS·66] with w ⊗ membership [BASIS·66, 12].
        let weights = ops.weight(&[BASIS, 1], &self.noise_radial);
        let per_basis = ops.reshape(&weights, &[BASIS as i64, 1, 1]);
        let membership: Vec<f64> = Self::distinct_pairs().flat_map(|(i, j)| (0..PARTICLES).map(move |p| f64::from(u8::from(p == i || p == j)))).collect();
        let membership = ops.constant(&[1, DISTINCT_PAIRS, PARTICLES], &membership);
        let crowding = ops.mul(&per_basis, &membership);
        let crowding = ops.reshape(&crowding, &[(BASIS * DISTINCT_PAIRS) as i64, N]);
        let flat = ops.reshape(basis, &[-1, (BASIS * DISTINCT_PAIRS) as i64]);
        let log_std = ops.matmul(&flat, &crowding);
        let at_zero: Vec<f64> = self.centres().iter().map(|c| (-(c / self.basis_width()).powi(2).min(GAUSSIAN_CUTOFF)).exp()).collect();
        let at_zero = ops.constant(&[1, BASIS], &at_zero);
        let itself = ops.matmul(&at_zero, &weights);
        let log_std = ops.add(&log_std, &itself);
        let bias = ops.weight(&[PARTICLES], &self.noise_bias);
        let log_std = ops.add(&log_std, &bias);
        let log_std = ops.clip(&log_std, -UNREACHED, self.noise_bound.ln());
        let std = ops.unary(&log_std, Unary::Exp);
        ops.scale(&std, self.noise_scale)
    }

    /// The Gaussians' spacing, which is also their width.
    fn basis_width(&self) -> f64 {
        self.max_distance / (BASIS - 1) as f64
    }

    fn centres(&self) -> Vec<f64> {
        (0..BASIS).map(|m| m as f64 * self.basis_width()).collect()
    }

    /// The distinct pairs' vectors [B, 3, 66] and the Gaussian basis on their lengths
    /// [B, BASIS, 66]: only the 66 distinct pairs, with the pairs on the last axis (ONNX
    /// Runtime broadcasts a trailing axis of one element by element, 10× slower).
    fn pair_basis<O: Ops>(&self, ops: &mut O, positions: &O::Tensor) -> (O::Tensor, O::Tensor) {
        let frame = ops.reshape(positions, &[-1, (PARTICLES * DIMS) as i64]);
        let differences = ops.constant(&[PARTICLES * DIMS, DIMS * DISTINCT_PAIRS], &Self::pair_differences());
        let vec = ops.matmul(&frame, &differences);
        let vec = ops.reshape(&vec, &[-1, DIMS as i64, DISTINCT_PAIRS as i64]);
        let squared = ops.mul(&vec, &vec);
        let squared = ops.reduce_sum(&squared, 1, true);
        // Distinct particles never coincide in data, but a trained pair of positions
        // could: 1e-30 keeps the square root's gradient finite there.
        let squared = ops.clip(&squared, 1e-30, f64::INFINITY);
        let length = ops.unary(&squared, Unary::Sqrt);
        let width = self.basis_width();
        let length = ops.scale(&length, 1.0 / width);
        let length = match &self.reach {
            Some(reach) => {
                let nearest: Vec<f64> = reach.iter().map(|(near, _)| near / width).collect();
                let farthest: Vec<f64> = reach.iter().map(|(_, far)| far / width).collect();
                let nearest = ops.constant(&[DISTINCT_PAIRS], &nearest);
                let farthest = ops.constant(&[DISTINCT_PAIRS], &farthest);
                let length = ops.maximum(&length, &nearest);
                ops.minimum(&length, &farthest)
            }
            None => length,
        };
        let centres: Vec<f64> = self.centres().iter().map(|c| c / width).collect();
        let centres = ops.constant(&[BASIS, 1], &centres);
        let diff = ops.sub(&length, &centres);
        let diff = ops.mul(&diff, &diff);
        // A Gaussian's tail below e^−50 is far below f32's resolution of the sum it
        // joins; cut there, f32 graphs never compute with subnormal numbers (they ran
        // at half speed in ONNX Runtime).
        let diff = ops.clip(&diff, 0.0, GAUSSIAN_CUTOFF);
        let diff = ops.unary(&diff, Unary::Neg);
        (vec, ops.unary(&diff, Unary::Exp))
    }
}

impl OpsModel for PairForce {
    fn history_frames(&self) -> usize {
        self.filter.history_frames()
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
            "reach": self.reach,
            "filter_start": self.filter_start,
        }))
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        vec![self.filter.coefficients_mut(), &mut self.radial]
    }

    fn num_params(&self) -> usize {
        self.filter.num_params() + self.radial.len() + self.noise_bias.len() + self.noise_radial.len()
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

    /// No mode persisting longer than the centroid, and no radial weight below f32's
    /// resolution.
    fn after_fit(&mut self) {
        self.filter.limit_mode_persistence();
        self.zero_negligible_weights();
    }

    /// The starting filter, no force and the noise at its scale: training starts from a
    /// guess without physics.
    fn init_weights(&mut self, _rng: &mut impl rand::Rng) {
        self.filter.restart();
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
    use crate::{data::chain_modes, models::history::filter_spectral_radius, nn::Eager};

    #[test]
    fn pair_differences_give_every_distinct_pair_once() {
        let matrix = PairForce::pair_differences();
        let columns = DISTINCT_PAIRS * DIMS;
        let frame: Vec<f64> = (0..PARTICLES * DIMS).map(|k| (k as f64 * 0.83).sin()).collect();
        let vectors: Vec<f64> = (0..columns).map(|c| (0..PARTICLES * DIMS).map(|r| frame[r] * matrix[r * columns + c]).sum()).collect();
        let forces = PairForce::pair_forces_on_particles();
        let pairs: Vec<_> = PairForce::distinct_pairs().collect();
        assert_eq!(pairs.len(), DISTINCT_PAIRS);
        for (pair, &(i, j)) in pairs.iter().enumerate() {
            assert!(i < j);
            for d in 0..DIMS {
                let column = d * DISTINCT_PAIRS + pair;
                assert_eq!(vectors[column], frame[i * DIMS + d] - frame[j * DIMS + d]);
                // The force on i is −f (x_i − x_j), on j +f (x_i − x_j).
                assert_eq!(forces[column * PARTICLES * DIMS + i * DIMS + d], -1.0);
                assert_eq!(forces[column * PARTICLES * DIMS + j * DIMS + d], 1.0);
            }
        }
    }

    /// Forces come in equal and opposite pairs and the chain modes other than the
    /// centroid's sum to zero over the particles: only the centroid's filter moves the
    /// centre of mass, whatever the other weights.
    #[test]
    fn only_the_centroid_filter_moves_the_centre_of_mass() {
        let mut model = PairForce::new(3, 3.0, 1.0);
        *model.filter.coefficients_mut() = (0..2 * PARTICLES).map(|k| if k % PARTICLES == 0 { 0.0 } else { (k as f64 * 0.7).cos() }).collect();
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

    /// The graph computes the model's formula, summed here pair by pair and mode by mode
    /// (the 66 distinct pairs, the particle itself in the crowding, a filter per mode).
    #[test]
    fn the_graph_computes_the_formula() {
        let per_mode: Vec<Vec<f64>> = (0..PARTICLES).map(|m| vec![0.9 - 0.02 * m as f64, -0.25 + 0.01 * (m as f64).sin()]).collect();
        let mut model = PairForce::new(3, 2.5, 0.7).with_noise_scale(0.3).starting_from(&per_mode);
        model.confinement = 0.05;
        model.radial.iter_mut().enumerate().for_each(|(i, w)| *w = ((i * 5) as f64 * 0.41).cos());
        model.noise_bias.iter_mut().enumerate().for_each(|(i, w)| *w = (i as f64 * 0.3).sin() * 0.2);
        model.noise_radial.iter_mut().enumerate().for_each(|(i, w)| *w = (i as f64 * 0.7).cos() * 0.1);
        // A third of the pairs held beyond 0.5, a third below 1.5, the rest never.
        let reach: Vec<(f64, f64)> = (0..DISTINCT_PAIRS).map(|p| [(0.0, 0.5), (1.5, 10.0), (0.0, 10.0)][p % 3]).collect();
        model = model.with_reach(reach.clone());
        let x = ArrayD::from_shape_fn(IxDyn(&[1, PARTICLES, DIMS]), |ix| ((ix[1] * 3 + ix[2]) as f64 * 1.3).sin() * 1.2);
        let previous = ArrayD::from_shape_fn(IxDyn(&[1, 2, PARTICLES, DIMS]), |ix| {
            x[[0, ix[2], ix[3]]] - 0.02 * (2 - ix[1]) as f64 * ((ix[2] * 3 + ix[3] + ix[1]) as f64).cos()
        });
        let (dx, std) = model.forward_with_std(&mut Eager, &ModelInputs { positions: &x, previous: Some(&previous) });
        let std = std.expect("stochastic");

        let modes = chain_modes();
        let at = |frame: usize, p: usize, d: usize| if frame == 2 { x[[0, p, d]] } else { previous[[0, frame, p, d]] };
        let step = |k: usize, p: usize, d: usize| at(3 - k, p, d) - at(2 - k, p, d);
        let phi = |r: f64, m: usize| (-((r - m as f64 * model.basis_width()) / model.basis_width()).powi(2).min(GAUSSIAN_CUTOFF)).exp();
        let pairs: Vec<_> = PairForce::distinct_pairs().collect();
        let row = |i: usize, j: usize| pairs.iter().position(|&p| p == (i.min(j), i.max(j))).unwrap();
        // The distance the radial functions read: held within the pair's reach.
        let distance = |i: usize, j: usize| {
            let r = (0..DIMS).map(|d| (x[[0, i, d]] - x[[0, j, d]]).powi(2)).sum::<f64>().sqrt();
            if i == j { r } else { r.clamp(reach[row(i, j)].0, reach[row(i, j)].1) }
        };
        let strength = |i: usize, j: usize| (0..BASIS).map(|m| model.radial[row(i, j) * BASIS + m] * phi(distance(i, j), m)).sum::<f64>();
        for i in 0..PARTICLES {
            for d in 0..DIMS {
                let amplitude = |m: usize, k: usize| (0..PARTICLES).map(|p| modes[m][p] * step(k, p, d)).sum::<f64>();
                let inertia: f64 = (0..PARTICLES).map(|m| modes[m][i] * (1..3).map(|k| per_mode[m][k - 1] * amplitude(m, k)).sum::<f64>()).sum();
                let force: f64 = (0..PARTICLES).filter(|&j| j != i).map(|j| 0.7 * strength(i, j) * (x[[0, j, d]] - x[[0, i, d]])).sum();
                let mean = (0..PARTICLES).map(|p| x[[0, p, d]]).sum::<f64>() / PARTICLES as f64;
                let expected = inertia + force + 0.05 * (mean - x[[0, i, d]]);
                assert!((dx[[0, i, d]] - expected).abs() < 1e-12, "dx[{i}, {d}] {} vs {expected}", dx[[0, i, d]]);
            }
            let crowding: f64 = (0..PARTICLES).map(|j| (0..BASIS).map(|m| model.noise_radial[m] * phi(distance(i, j), m)).sum::<f64>()).sum();
            let expected = 0.3 * (model.noise_bias[i] + crowding).exp();
            assert!((std[[0, i]] - expected).abs() < 1e-12 * expected, "std[{i}] {} vs {expected}", std[[0, i]]);
        }
    }

    #[test]
    fn no_chain_mode_persists_longer_than_the_centroid() {
        // The centroid (0.9), a slow mode beyond it (1.05, growing), one within (0.7).
        let mut per_mode = vec![vec![1.5, -0.56]; PARTICLES];
        per_mode[0] = vec![1.7, -0.72];
        per_mode[1] = vec![1.1, -0.0525];
        let mut model = PairForce::new(3, 3.0, 1.0).starting_from(&per_mode);
        model.after_fit();
        assert!((filter_spectral_radius(&model.filter.mode(0)) - 0.9).abs() < 1e-9, "the centroid's kept");
        assert!((filter_spectral_radius(&model.filter.mode(1)) - 0.9).abs() < 1e-9, "held at the centroid's");
        assert_eq!(model.filter.mode(2), vec![1.5, -0.56], "within it: unchanged");
        // A centroid beyond 1 is held at 1.
        let mut model = PairForce::new(3, 3.0, 1.0).starting_from(&vec![vec![1.1, -0.0525]; PARTICLES]);
        model.after_fit();
        assert!((0..PARTICLES).all(|m| (filter_spectral_radius(&model.filter.mode(m)) - 1.0).abs() < 1e-9));
    }

    #[test]
    fn negligible_weights_are_zeroed_and_the_rest_kept() {
        let mut model = PairForce::new(2, 3.0, 1.0);
        model.radial[0] = 0.02;
        model.radial[1] = -1e-11;
        model.radial[2] = 1e-36;
        model.radial[3] = -1e-10;
        model.after_fit();
        assert_eq!(&model.radial[..4], &[0.02, 0.0, 0.0, -1e-10]);
    }

    /// The confinement alone pulls every particle towards the centroid, in proportion.
    #[test]
    fn the_confinement_pulls_towards_the_centroid() {
        let mut model = PairForce::new(2, 3.0, 1.0);
        *model.filter.coefficients_mut() = vec![0.0; PARTICLES];
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
