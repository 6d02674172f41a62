//! What history models read from a window of frames, written against [`Ops`].

use crate::{
    data::{DIMS, FRAME_LEN, PARTICLES, chain_modes},
    nn::Ops,
};

/// The window as [B, K, 36], oldest first: row w is x(t − K + 1 + w), for positions
/// [B, 12, 3] and previous [B, K−1, 12, 3] (oldest first).
pub fn window_frames<O: Ops>(ops: &mut O, positions: &O::Tensor, previous: &O::Tensor, history_frames: usize) -> O::Tensor {
    let frame = ops.reshape(positions, &[-1, 1, FRAME_LEN as i64]);
    let earlier = ops.reshape(previous, &[-1, (history_frames - 1) as i64, FRAME_LEN as i64]);
    ops.concat(&[earlier, frame], 1)
}

/// D [K, K−1]: the window's displacements as combinations of its frames, newest first:
/// D[w, k − 1] = +1 at w = K − k (x(t−k+1)), −1 at w = K − k − 1 (x(t−k)).
fn differences(history_frames: usize) -> Vec<f64> {
    let k = history_frames;
    (0..k)
        .flat_map(|w| {
            (1..k).map(move |step| {
                if w == k - step {
                    1.0
                } else if w + 1 == k - step {
                    -1.0
                } else {
                    0.0
                }
            })
        })
        .collect()
}

/// The window's displacements as [B, 36, K−1]: column k − 1 is x(t−k+1) − x(t−k),
/// newest first. One matmul of the window with a ±1 difference matrix (exact).
pub fn window_displacements<O: Ops>(ops: &mut O, positions: &O::Tensor, previous: &O::Tensor, history_frames: usize) -> O::Tensor {
    let window = window_frames(ops, positions, previous, history_frames);
    let window = ops.transpose(&window, &[0, 2, 1]);
    let differences = ops.constant(&[history_frames, history_frames - 1], &differences(history_frames));
    ops.matmul(&window, &differences)
}

/// The window's displacements [B, K−1, 36] for a window [B, K, 36] ([`window_frames`]),
/// oldest first: row w is x(t−K+2+w) − x(t−K+1+w). Neighbouring frames are subtracted
/// directly, so in f32 a displacement is rounded relative to itself, not to the
/// positions (a weighted sum of frames lost a factor 100 there).
pub fn window_steps<O: Ops>(ops: &mut O, window: &O::Tensor, history_frames: usize) -> O::Tensor {
    let later = ops.slice(window, 1, 1, history_frames);
    let earlier = ops.slice(window, 1, 0, history_frames - 1);
    ops.sub(&later, &earlier)
}

/// The matrix [(K−1)·36, 36] that maps the window's displacements, flattened
/// [B, (K−1)·36] ([`window_steps`], oldest first), to Σ_k Σ_m c_{k,m} (block_m · d_k),
/// for a filter `coefficients` [K−1, M] (newest first, row 1 on x(t) − x(t−1)) on M
/// `blocks` [M, 36·36] (one block, the identity: a plain filter). Applied as one matmul:
/// broadcasting [B, K−1, 36] against [K−1, 1] took ONNX Runtime's slow path (a trailing
/// axis of one).
pub fn step_filter<O: Ops>(ops: &mut O, coefficients: &O::Tensor, blocks: &[f64], history_frames: usize) -> O::Tensor {
    let taps = history_frames - 1;
    let reversal: Vec<f64> = (0..taps * taps).map(|k| f64::from(u8::from(k / taps + k % taps == taps - 1))).collect();
    let reversal = ops.constant(&[taps, taps], &reversal);
    let oldest_first = ops.matmul(&reversal, coefficients);
    let blocks = ops.constant(&[blocks.len() / (FRAME_LEN * FRAME_LEN), FRAME_LEN * FRAME_LEN], blocks);
    let filter = ops.matmul(&oldest_first, &blocks);
    ops.reshape(&filter, &[(taps * FRAME_LEN) as i64, FRAME_LEN as i64])
}

/// The projectors onto each chain mode, per coordinate, [12, 36·36]: block m is
/// u_m u_mᵀ ⊗ I₃.
pub fn chain_mode_blocks() -> Vec<f64> {
    let modes = chain_modes();
    modes
        .iter()
        .flat_map(|u| {
            (0..FRAME_LEN * FRAME_LEN).map(move |k| {
                let (row, column) = (k / FRAME_LEN, k % FRAME_LEN);
                if row % DIMS == column % DIMS { u[row / DIMS] * u[column / DIMS] } else { 0.0 }
            })
        })
        .collect()
}

/// The spectral radius of a filter dx(t) = Σ_k c_k dx(t−k) (`coefficients` newest
/// first): the largest |z| of its characteristic roots, the factor by which its slowest
/// motion grows (> 1) or decays (< 1) per step. Gelfand's formula ‖A^(2^s)‖^(1/2^s) on
/// the companion matrix A, squared 40 times with the scale kept as a logarithm.
pub fn filter_spectral_radius(coefficients: &[f64]) -> f64 {
    let n = coefficients.len();
    let mut matrix: Vec<f64> = (0..n * n).map(|k| if k < n { coefficients[k] } else { f64::from(u8::from(k % n + 1 == k / n)) }).collect();
    let mut log_scale = 0.0;
    for squaring in 0..=40 {
        if squaring > 0 {
            matrix = (0..n * n).map(|k| (0..n).map(|j| matrix[(k / n) * n + j] * matrix[j * n + k % n]).sum()).collect();
            log_scale *= 2.0;
        }
        let norm = matrix.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        if norm == 0.0 {
            return 0.0;
        }
        matrix.iter_mut().for_each(|v| *v /= norm);
        log_scale += norm.ln();
    }
    (log_scale / 2f64.powi(40)).exp()
}

/// The filter whose roots are those of `coefficients` times `factor`: c_k factor^k.
pub fn scale_filter_roots(coefficients: &[f64], factor: f64) -> Vec<f64> {
    coefficients.iter().zip(1..).map(|(c, k)| c * factor.powi(k)).collect()
}

/// The identity [36, 36], row-major.
pub fn identity_block() -> Vec<f64> {
    (0..FRAME_LEN * FRAME_LEN).map(|k| f64::from(u8::from(k / FRAME_LEN == k % FRAME_LEN))).collect()
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::*;
    use crate::nn::Eager;

    #[test]
    fn displacements_are_newest_first() {
        // x(t − s) = s² · (p + d + 1): d_k = x(t−k+1) − x(t−k) = ((k−1)² − k²)(p + d + 1).
        let value = |s: usize, p: usize, d: usize| (s * s) as f64 * (p + d + 1) as f64;
        let positions = ArrayD::from_shape_fn(IxDyn(&[1, PARTICLES, DIMS]), |ix| value(0, ix[1], ix[2]));
        let previous = ArrayD::from_shape_fn(IxDyn(&[1, 3, PARTICLES, DIMS]), |ix| value(3 - ix[1], ix[2], ix[3]));
        let out = window_displacements(&mut Eager, &positions, &previous, 4);
        assert_eq!(out.shape(), [1, FRAME_LEN, 3]);
        for k in 1..=3 {
            for (i, expected) in
                (0..FRAME_LEN).map(|i| ((k - 1) * (k - 1)) as f64 * (i / 3 + i % 3 + 1) as f64 - (k * k) as f64 * (i / 3 + i % 3 + 1) as f64).enumerate()
            {
                assert_eq!(out[[0, i, k - 1]], expected, "d_{k} at {i}");
            }
        }
    }

    #[test]
    fn a_filter_s_spectral_radius_is_its_largest_root() {
        // (z − 0.8)(z − 0.7); z² − z + 0.81 (roots 0.5 ± 0.748i, |z| = 0.9); (z − 1.05)(z − 0.3)(z + 0.2).
        for (filter, radius) in [(vec![1.5, -0.56], 0.8), (vec![1.0, -0.81], 0.9), (vec![1.15, -0.045, -0.063], 1.05), (vec![0.0, 0.0], 0.0)] {
            let measured = filter_spectral_radius(&filter);
            assert!((measured - radius).abs() < 1e-9, "{filter:?}: {measured} vs {radius}");
            let scaled = filter_spectral_radius(&scale_filter_roots(&filter, 0.9));
            assert!((scaled - 0.9 * radius).abs() < 1e-9, "{filter:?} scaled: {scaled}");
        }
    }

    #[test]
    fn filtering_the_steps_weights_the_displacements_newest_first() {
        let positions = ArrayD::from_shape_fn(IxDyn(&[2, PARTICLES, DIMS]), |ix| ((ix[0] * 36 + ix[1] * 3 + ix[2]) as f64 * 0.37).sin());
        let previous = ArrayD::from_shape_fn(IxDyn(&[2, 3, PARTICLES, DIMS]), |ix| ((ix[0] * 144 + ix[1] * 36 + ix[2] * 3 + ix[3]) as f64 * 0.61).cos());
        let coefficients = [0.7, -0.2, 0.05];
        let displacements = window_displacements(&mut Eager, &positions, &previous, 4);
        let window = window_frames(&mut Eager, &positions, &previous, 4);
        let steps = window_steps(&mut Eager, &window, 4);
        let steps = steps.into_shape_with_order(IxDyn(&[2, 3 * FRAME_LEN])).unwrap();
        let weights = ArrayD::from_shape_vec(IxDyn(&[3, 1]), coefficients.to_vec()).unwrap();
        let filter = step_filter(&mut Eager, &weights, &identity_block(), 4);
        let filtered = Eager.matmul(&steps, &filter);
        assert_eq!(filtered.shape(), [2, FRAME_LEN]);
        for b in 0..2 {
            for i in 0..FRAME_LEN {
                let expected: f64 = (0..3).map(|k| coefficients[k] * displacements[[b, i, k]]).sum();
                assert!((filtered[[b, i]] - expected).abs() < 1e-12, "{b} {i}");
            }
        }
    }
}

/// A learned filter of the window's displacements per chain mode, the chain's inertia
/// and friction: Σ_m u_m(i) Σ_k c_m,k D_m,k, D_m,k = Σ_i u_m(i) (x_i(t−k+1) − x_i(t−k)).
/// It acts on each coordinate alike, so it is E(3)-equivariant.
#[derive(Debug, Clone)]
pub struct ModeFilter {
    history_frames: usize,
    /// c_m,k as [K−1, 12]: row k − 1 is the tap on x(t−k+1) − x(t−k), column m the mode.
    coefficients: Vec<f64>,
    /// Where training starts: persistence, or filters fitted to the data.
    initial: Vec<f64>,
}

impl ModeFilter {
    /// Every mode keeps its last displacement (c_m,1 = 1), for a window of K ≥ 2 frames.
    pub fn persistence(history_frames: usize) -> Self {
        assert!(history_frames >= 2, "a filter of past displacements needs at least two frames");
        let mut coefficients = vec![0.0; (history_frames - 1) * PARTICLES];
        coefficients[..PARTICLES].fill(1.0);
        Self { history_frames, initial: coefficients.clone(), coefficients }
    }

    /// Starts from a filter per chain mode (`per_mode[m]` = c_m,1 … c_m,K−1, e.g. least
    /// squares on the training data).
    pub fn starting_from(mut self, per_mode: &[Vec<f64>]) -> Self {
        assert_eq!(per_mode.len(), PARTICLES, "one filter per chain mode");
        assert!(per_mode.iter().all(|c| c.len() == self.history_frames - 1), "one coefficient per past displacement");
        self.coefficients = (0..self.history_frames - 1).flat_map(|k| per_mode.iter().map(move |c| c[k])).collect();
        self.initial.clone_from(&self.coefficients);
        self
    }

    pub fn history_frames(&self) -> usize {
        self.history_frames
    }

    /// The filter of chain mode m, c_m,1 … c_m,K−1.
    pub fn mode(&self, mode: usize) -> Vec<f64> {
        (0..self.history_frames - 1).map(|k| self.coefficients[k * PARTICLES + mode]).collect()
    }

    /// Its coefficients: one per chain mode and past displacement.
    pub fn num_params(&self) -> usize {
        self.coefficients.len()
    }

    /// The trained coefficients, [K−1, 12].
    pub fn coefficients_mut(&mut self) -> &mut Vec<f64> {
        &mut self.coefficients
    }

    /// Back to where training starts.
    pub fn restart(&mut self) {
        self.coefficients.clone_from(&self.initial);
    }

    /// Holds every chain mode's persistence (its filter's spectral radius) at or below
    /// the centroid's, and the centroid's at or below 1, after training, by scaling the
    /// filter's roots. Friction slows every mode alike and forces only turn the chain's
    /// modes around sooner, so none keeps its velocity longer than the centroid; where
    /// the data are too few to tell (600 frames), least squares gave slow modes roots
    /// beyond 1 (1.05), which grow without bound in rollouts.
    pub fn limit_mode_persistence(&mut self) {
        let centroid = filter_spectral_radius(&self.mode(0)).min(1.0);
        for mode in 0..PARTICLES {
            let filter = self.mode(mode);
            let radius = filter_spectral_radius(&filter);
            if radius > centroid {
                for (k, c) in scale_filter_roots(&filter, centroid / radius).into_iter().enumerate() {
                    self.coefficients[k * PARTICLES + mode] = c;
                }
            }
        }
    }

    /// The filtered displacements [B, 36] of positions [B, 12, 3] and the frames before
    /// them [B, K−1, 12, 3].
    pub fn inertia<O: Ops>(&self, ops: &mut O, positions: &O::Tensor, previous: &O::Tensor) -> O::Tensor {
        let window = window_frames(ops, positions, previous, self.history_frames);
        let steps = window_steps(ops, &window, self.history_frames);
        let steps = ops.reshape(&steps, &[-1, ((self.history_frames - 1) * FRAME_LEN) as i64]);
        let filter = ops.weight(&[self.history_frames - 1, PARTICLES], &self.coefficients);
        let filter = step_filter(ops, &filter, &chain_mode_blocks(), self.history_frames);
        ops.matmul(&steps, &filter)
    }
}
