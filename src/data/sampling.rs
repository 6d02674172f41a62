//! Sampling the next frame of a stochastic model, x(t+1) = x(t) + dx + dx_std · ξ, the
//! same way wherever it happens (calibration, evaluation, the server's sampled
//! rollouts): ξ comes from a counter-based generator keyed by (seed, member, step), so
//! one seed gives the same trajectory whatever else is computed beside it, and it is
//! drawn in the space the frame spans, so that a planar system stays in its plane. A
//! model whose card gives a [`KickShape`] has its ξ correlated along the chain and in
//! time ([`Kicks`]); each particle's ξ stays standard normal.

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, ArrayViewMut3, Axis, Zip, linalg::general_mat_mul};
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::{DIMS, FRAME_LEN, PARTICLES, chain_modes};

/// A frame whose smallest gyration eigenvalue is below this share of its largest is
/// taken as planar (2-D data lifted to z = 0, rotated or not; f32 rounding of a rotated
/// plane stays ~1e-14 of it, and no real 3-D chain of 12 beads comes near).
const PLANAR_EIGENVALUE_RATIO: f64 = 1e-9;

/// SplitMix64's finaliser: a bijective mix whose outputs for consecutive inputs look
/// independent, which is all a counter-based generator needs of it.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64's increment: the counter steps by it, as SplitMix64's state does.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The uniform bits of one frame's noise: SplitMix64 from the frame's key, so each
/// (seed, member, step) has a stream of its own that no other position in a batch or
/// ensemble can shift.
struct FrameStream {
    state: u64,
}

impl rand::RngCore for FrameStream {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes()[..chunk.len()]);
        }
    }
}

impl FrameStream {
    /// The stream of the frame keyed (seed, member, step).
    fn new(seed: u64, member: u64, step: u64) -> Self {
        Self { state: mix(mix(mix(seed) ^ member) ^ step.wrapping_mul(GOLDEN_GAMMA)) }
    }

    /// The ziggurat (`rand_distr::StandardNormal`) on this stream: 4× cheaper than
    /// Box–Muller's logarithm, square root and sine per pair, which took a third of a
    /// sampled ensemble's time in the server.
    fn normal(&mut self) -> f64 {
        StandardNormal.sample(self)
    }
}

/// Standard-normal noise for one frame, [12, 3], from (seed, member, step) alone,
/// particle by particle.
pub fn standard_normal_frame(seed: u64, member: u64, step: u64) -> [[f64; DIMS]; PARTICLES] {
    let mut stream = FrameStream::new(seed, member, step);
    std::array::from_fn(|_| std::array::from_fn(|_| stream.normal()))
}

/// The orthogonal projector onto the space `frame` [12, 3] spans about its centre: the
/// identity for a 3-D configuration, the plane's projector for a planar one.
pub fn span_projector(frame: ArrayView2<f32>) -> [[f64; DIMS]; DIMS] {
    let gyration = gyration(frame);
    match spanned_axes(&gyration) {
        Some(axes) => std::array::from_fn(|a| std::array::from_fn(|b| if a == b && axes[a] { 1.0 } else { 0.0 })),
        None => eigen_projector(gyration),
    }
}

/// The projector onto the eigenvectors of `gyration` whose eigenvalues are not
/// negligible beside the largest.
fn eigen_projector(gyration: [[f64; DIMS]; DIMS]) -> [[f64; DIMS]; DIMS] {
    let (values, vectors) = symmetric_eigen(gyration);
    let largest = values.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    let mut projector = [[0.0; DIMS]; DIMS];
    for (k, value) in values.iter().enumerate() {
        if largest > 0.0 && *value > PLANAR_EIGENVALUE_RATIO * largest {
            for a in 0..DIMS {
                for b in 0..DIMS {
                    projector[a][b] += vectors[a][k] * vectors[b][k];
                }
            }
        }
    }
    projector
}

/// Σ_p (x_p − x̄)(x_p − x̄)ᵀ of a frame [12, 3], in f64.
fn gyration(frame: ArrayView2<f32>) -> [[f64; DIMS]; DIMS] {
    // Read once into f64 (the server's sampled ensembles call this for every system and step).
    let points: [[f64; DIMS]; PARTICLES] = std::array::from_fn(|p| std::array::from_fn(|d| f64::from(frame[[p, d]])));
    let mut centre = [0.0; DIMS];
    for point in &points {
        for d in 0..DIMS {
            centre[d] += point[d] / PARTICLES as f64;
        }
    }
    let mut gyration = [[0.0; DIMS]; DIMS];
    for point in &points {
        let offset: [f64; DIMS] = std::array::from_fn(|d| point[d] - centre[d]);
        for a in 0..DIMS {
            for b in a..DIMS {
                gyration[a][b] += offset[a] * offset[b];
            }
        }
    }
    std::array::from_fn(|a| std::array::from_fn(|b| gyration[a.min(b)][a.max(b)]))
}

/// The coordinates a frame spans, without an eigendecomposition, for the frames
/// sampled rollouts meet every step: 3-D ones (all three) and planar ones lying in a
/// coordinate plane (2-D data lifted to z = 0: the plane's two). None for the rest. The
/// bounds decide as the eigenvalues would: the smallest of three is at least
/// 4·det / tr², the largest at most tr (of two: det / tr and tr).
fn spanned_axes(gyration: &[[f64; DIMS]; DIMS]) -> Option<[bool; DIMS]> {
    let g = gyration;
    let trace = g[0][0] + g[1][1] + g[2][2];
    let determinant = g[0][0] * (g[1][1] * g[2][2] - g[1][2] * g[2][1]) - g[0][1] * (g[1][0] * g[2][2] - g[1][2] * g[2][0])
        + g[0][2] * (g[1][0] * g[2][1] - g[1][1] * g[2][0]);
    if 4.0 * determinant > PLANAR_EIGENVALUE_RATIO * trace.powi(3) {
        return Some([true; DIMS]);
    }
    let flat = (0..DIMS).find(|&k| g[k].iter().all(|v| *v == 0.0))?;
    let (i, j) = ((flat + 1) % DIMS, (flat + 2) % DIMS);
    let (trace, determinant) = (g[i][i] + g[j][j], g[i][i] * g[j][j] - g[i][j] * g[j][i]);
    (determinant > PLANAR_EIGENVALUE_RATIO * trace * trace).then(|| std::array::from_fn(|a| a != flat))
}

/// The number of coordinates `frames` [N, 12, 3] span about their centres: 3, or 2 for
/// planar data (in any orientation).
pub fn spanned_dims(frames: ArrayView3<f32>) -> usize {
    let rank = |frame| {
        let projector = span_projector(frame);
        (0..DIMS).map(|d| projector[d][d]).sum::<f64>().round() as usize
    };
    frames.outer_iter().map(rank).max().unwrap_or(DIMS)
}

/// Eigenvalues and eigenvectors (columns) of a symmetric 3 × 3 matrix, by Jacobi rotations.
fn symmetric_eigen(mut a: [[f64; DIMS]; DIMS]) -> ([f64; DIMS], [[f64; DIMS]; DIMS]) {
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _sweep in 0..32 {
        let off = a[0][1].powi(2) + a[0][2].powi(2) + a[1][2].powi(2);
        let scale = a[0][0].powi(2) + a[1][1].powi(2) + a[2][2].powi(2);
        if off <= 1e-30 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q] == 0.0 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
            for row in &mut a {
                let (akp, akq) = (row[p], row[q]);
                row[p] = c * akp - s * akq;
                row[q] = s * akp + c * akq;
            }
            let (row_p, row_q) = (a[p], a[q]);
            a[p] = std::array::from_fn(|k| c * row_p[k] - s * row_q[k]);
            a[q] = std::array::from_fn(|k| s * row_p[k] + c * row_q[k]);
            for row in &mut v {
                let (vp, vq) = (row[p], row[q]);
                row[p] = c * vp - s * vq;
                row[q] = s * vp + c * vq;
            }
        }
    }
    ([a[0][0], a[1][1], a[2][2]], v)
}

/// Standard-normal noise keyed by (seed, member, step) for every member of a batch
/// `frames` [B, 12, 3] (member b draws with the key `first_member + b`), in the space
/// each frame (x(t)) spans: [B, 12, 3]. A frame spanning whole coordinates (3-D, or a
/// coordinate plane) draws only those, particle by particle; any other is drawn in all
/// three and projected. It does not depend on the model's output, so a server can draw
/// it while the model runs.
pub fn projected_noise(frames: ArrayView3<f32>, seed: u64, first_member: u64, step: u64) -> Array3<f32> {
    let mut out = Array3::zeros(frames.raw_dim());
    for (b, (mut out, frame)) in out.outer_iter_mut().zip(frames.outer_iter()).enumerate() {
        let mut stream = FrameStream::new(seed, first_member + b as u64, step);
        let gyration = gyration(frame);
        let out = out.as_slice_mut().expect("a fresh array is contiguous");
        match spanned_axes(&gyration) {
            // Drawing the flat axis and projecting it away would cost a third more.
            Some(axes) => {
                for particle in out.chunks_exact_mut(DIMS) {
                    for (coordinate, spanned) in particle.iter_mut().zip(axes) {
                        if spanned {
                            *coordinate = stream.normal() as f32;
                        }
                    }
                }
            }
            None => {
                let projector = eigen_projector(gyration);
                for particle in out.chunks_exact_mut(DIMS) {
                    let noise: [f64; DIMS] = std::array::from_fn(|_| stream.normal());
                    for (a, coordinate) in particle.iter_mut().enumerate() {
                        *coordinate = (0..DIMS).map(|k| projector[a][k] * noise[k]).sum::<f64>() as f32;
                    }
                }
            }
        }
    }
    out
}

/// Adds a sample to `next` [B, 12, 3] (x(t) + dx): per particle, `dx_std` [B, 12] times
/// its [`projected_noise`] [B, 12, 3].
pub fn add_sample(mut next: ArrayViewMut3<f32>, dx_std: ArrayView2<f32>, noise: ArrayView3<f32>) {
    // Contiguous (as the server's and the evaluation's arrays are): plain slices, which
    // vectorise where ndarray's per-particle rows did not.
    if let (Some(next), Some(dx_std), Some(noise)) = (next.as_slice_mut(), dx_std.as_slice(), noise.as_slice()) {
        for ((particle, std), noise) in next.chunks_exact_mut(DIMS).zip(dx_std).zip(noise.chunks_exact(DIMS)) {
            for (coordinate, noise) in particle.iter_mut().zip(noise) {
                *coordinate += std * noise;
            }
        }
        return;
    }
    Zip::from(next.rows_mut()).and(dx_std).and(noise.rows()).for_each(|mut particle, std, noise| {
        for (coordinate, noise) in particle.iter_mut().zip(noise) {
            *coordinate += std * noise;
        }
    });
}

/// x(t) + dx becomes a sample of x(t + 1): [`projected_noise`], shaped by `kicks`, then
/// [`add_sample`].
pub fn add_noise_to_batch(
    next: ArrayViewMut3<f32>,
    frames: ArrayView3<f32>,
    dx_std: ArrayView2<f32>,
    kicks: &mut Kicks,
    (seed, first_member, step): (u64, u64, u64),
) {
    let noise = kicks.next(projected_noise(frames, seed, first_member, step));
    add_sample(next, dx_std, noise.view());
}

/// The largest |lag-1 correlation| a chain mode's kicks may have (a fit is held to it,
/// a card checked against it): towards 1 a mode's kicks would stop changing, and no
/// residuals of a model worth sampling come near (paths.npz: at most 0.46).
pub const MAX_KICK_PERSISTENCE: f64 = 0.9;

/// How a stochastic model's kicks are correlated along the chain and in time, per chain
/// mode m ([`chain_modes`]): the spread of its kicks and their correlation one step
/// apart. Fitted to the model's one-step residuals, which are white in neither way (on
/// paths.npz the middle bends hold twice an even share of their variance, the centroid
/// none, and every mode's residuals correlate 0.16–0.46 with the step before): white
/// kicks of the same size left ensembles a fifth too narrow at 50 steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KickShape {
    /// Standard deviation of each mode's kicks; only their ratios matter (dx_std sets
    /// each particle's size).
    pub mode_spread: [f64; PARTICLES],
    /// Correlation of each mode's kicks with the step before's.
    pub mode_persistence: [f64; PARTICLES],
}

impl KickShape {
    /// The shape of `residuals` [N, 12, 3] (a model's one-step errors on N training
    /// pairs), where `consecutive[i]` says pair i + 1 follows pair i in time. A mode's
    /// spread is floored at a thousandth of the largest, so that every particle keeps a
    /// kick.
    pub fn of_residuals(residuals: ArrayView3<f32>, consecutive: &[bool]) -> Self {
        let modes = chain_modes();
        let in_modes = |frame: ArrayView2<f32>| -> [[f64; DIMS]; PARTICLES] {
            std::array::from_fn(|m| std::array::from_fn(|d| (0..PARTICLES).map(|i| modes[m][i] * f64::from(frame[[i, d]])).sum()))
        };
        let amplitudes: Vec<_> = residuals.outer_iter().map(in_modes).collect();
        let mut variance = [0.0; PARTICLES];
        let (mut covariance, mut paired) = ([0.0; PARTICLES], [0.0; PARTICLES]);
        for (t, now) in amplitudes.iter().enumerate() {
            let next = amplitudes.get(t + 1).filter(|_| consecutive.get(t).copied().unwrap_or(false));
            for m in 0..PARTICLES {
                variance[m] += now[m].iter().map(|a| a * a).sum::<f64>();
                if let Some(next) = next {
                    covariance[m] += (0..DIMS).map(|d| now[m][d] * next[m][d]).sum::<f64>();
                    paired[m] += (0..DIMS).map(|d| (now[m][d].powi(2) + next[m][d].powi(2)) / 2.0).sum::<f64>();
                }
            }
        }
        let largest = variance.iter().fold(0.0_f64, |l, v| l.max(*v)).max(f64::MIN_POSITIVE);
        Self {
            mode_spread: variance.map(|v| v.max(1e-6 * largest).sqrt() / largest.sqrt()),
            mode_persistence: std::array::from_fn(|m| {
                let correlation = covariance[m] / paired[m];
                if correlation.is_finite() { correlation.clamp(-MAX_KICK_PERSISTENCE, MAX_KICK_PERSISTENCE) } else { 0.0 }
            }),
        }
    }

    /// What is wrong with it, if anything (a card's shape is checked before serving).
    pub fn check(&self) -> Result<(), String> {
        if !self.mode_spread.iter().all(|s| s.is_finite() && *s >= 0.0) || !self.mode_spread.iter().any(|s| *s > 0.0) {
            return Err(format!("kick mode spreads must be finite, non-negative and not all zero: {:?}", self.mode_spread));
        }
        if !self.mode_persistence.iter().all(|p| p.abs() <= MAX_KICK_PERSISTENCE) {
            return Err(format!("kick mode persistences must lie in ±{MAX_KICK_PERSISTENCE}: {:?}", self.mode_persistence));
        }
        let weights = self.mixing();
        if weights.iter().any(|row| row.iter().all(|w| *w == 0.0)) {
            return Err(format!("kick mode spreads leave a particle without a kick: {:?}", self.mode_spread));
        }
        Ok(())
    }

    /// ξ_i = Σ_m w_im z_m for unit-variance mode states z_m: w_im = u_m(i) s_m over
    /// √(Σ_m u_m(i)² s_m²), so that each particle's ξ has unit variance.
    fn mixing(&self) -> [[f64; PARTICLES]; PARTICLES] {
        let modes = chain_modes();
        std::array::from_fn(|i| {
            let norm = (0..PARTICLES).map(|m| (modes[m][i] * self.mode_spread[m]).powi(2)).sum::<f64>().sqrt();
            std::array::from_fn(|m| if norm > 0.0 { modes[m][i] * self.mode_spread[m] / norm } else { 0.0 })
        })
    }
}

/// The kicks ξ of a batch of sampled systems through one rollout: white (each step's
/// [`projected_noise`] as drawn), or shaped by a model's [`KickShape`]: each chain mode's
/// state z follows z(t) = ρ z(t−1) + √(1 − ρ²) η(t), started at η(0) (so stationary from
/// the first step), with the step's draws η taken as the modes' innovations. ξ(t) then
/// depends on the draws keyed (seed, member, 0..=t) alone, and the keyed guarantees of
/// white kicks hold: one seed, one trajectory, whatever is batched beside it.
pub struct Kicks {
    /// None: white.
    shaped: Option<ShapedKicks>,
}

struct ShapedKicks {
    /// [12 modes, 12 particles]: row m holds w_im ([`KickShape::mixing`]), ξ_i = Σ_m w_im z_m.
    mixing: Array2<f32>,
    /// ρ_m and √(1 − ρ_m²).
    persistence: [f32; PARTICLES],
    innovation: [f32; PARTICLES],
    /// z [B, 12 modes, 3], laid out as the draws are, from the first step on.
    state: Option<Array3<f32>>,
}

impl Kicks {
    pub fn new(shape: Option<&KickShape>) -> Self {
        let shaped = shape.map(|shape| {
            let weights = shape.mixing();
            ShapedKicks {
                mixing: Array2::from_shape_fn((PARTICLES, PARTICLES), |(m, i)| weights[i][m] as f32),
                persistence: shape.mode_persistence.map(|rho| rho as f32),
                innovation: shape.mode_persistence.map(|rho| (1.0 - rho * rho).sqrt() as f32),
                state: None,
            }
        });
        Self { shaped }
    }

    /// This step's ξ [B, 12, 3] from its standard-normal draws [B, 12, 3] (the same B
    /// every step): [`Self::peek`] then [`Self::take`].
    pub fn next(&mut self, draws: Array3<f32>) -> Array3<f32> {
        let step = self.peek(draws);
        self.take(step)
    }

    /// This step's kicks and the state they leave, the state itself unmoved: a server
    /// computes them while the model runs (and again, the same, if that call is retried)
    /// and takes them once the step is applied. Kept lean, as it runs beside every call:
    /// the state laid out as the draws, one matmul per spanned coordinate on strided
    /// views.
    pub fn peek(&self, draws: Array3<f32>) -> KickStep {
        let Some(ShapedKicks { mixing, persistence, innovation, state }) = &self.shaped else {
            return KickStep { kicks: draws, state: None };
        };
        let mut next = if draws.is_standard_layout() { draws } else { draws.as_standard_layout().into_owned() };
        if let Some(z) = state {
            let (z_all, next_all) = (z.as_slice().expect("the state is contiguous"), next.as_slice_mut().expect("made contiguous above"));
            for (z_system, next_system) in z_all.chunks_exact(FRAME_LEN).zip(next_all.chunks_exact_mut(FRAME_LEN)) {
                for (m, (z_mode, next_mode)) in z_system.chunks_exact(DIMS).zip(next_system.chunks_exact_mut(DIMS)).enumerate() {
                    for (z, eta) in z_mode.iter().zip(next_mode) {
                        *eta = persistence[m] * z + innovation[m] * *eta;
                    }
                }
            }
        }
        let mut kicks = Array3::zeros(next.raw_dim());
        for d in 0..DIMS {
            let modes = next.index_axis(Axis(2), d);
            // The flat axis of a planar frame draws nothing.
            if modes.iter().all(|v| *v == 0.0) {
                continue;
            }
            // [B, 12 modes] · [12 modes, 12 particles].
            general_mat_mul(1.0, &modes, mixing, 0.0, &mut kicks.index_axis_mut(Axis(2), d));
        }
        KickStep { kicks, state: Some(next) }
    }

    /// The kicks of `step` ([`Self::peek`] on this state), its state now this one's.
    pub fn take(&mut self, step: KickStep) -> Array3<f32> {
        if let Some(shaped) = &mut self.shaped {
            shaped.state = step.state;
        }
        step.kicks
    }
}

/// A step's kicks and the state they leave, until [`Kicks::take`] takes them.
pub struct KickStep {
    kicks: Array3<f32>,
    state: Option<Array3<f32>>,
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, Array3, Axis};

    use super::*;

    #[test]
    fn noise_is_a_function_of_its_key_and_standard_normal() {
        assert_eq!(standard_normal_frame(7, 3, 11), standard_normal_frame(7, 3, 11));
        assert_ne!(standard_normal_frame(7, 3, 11), standard_normal_frame(7, 4, 11));
        assert_ne!(standard_normal_frame(7, 3, 11), standard_normal_frame(8, 3, 11));
        assert_ne!(standard_normal_frame(7, 3, 11), standard_normal_frame(7, 3, 12));
        let values: Vec<f64> = (0..2000).flat_map(|step| standard_normal_frame(1, 0, step).into_iter().flatten()).collect();
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let kurtosis = values.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n / variance.powi(2);
        // 72,000 draws: the standard errors are 0.004, 0.005 and 0.02.
        assert!(mean.abs() < 0.02 && (variance - 1.0).abs() < 0.025 && (kurtosis - 3.0).abs() < 0.1, "{mean} {variance} {kurtosis}");
    }

    fn zigzag(tilt: f64) -> Array2<f32> {
        // A planar zig-zag, tilted about the x axis by `tilt`.
        Array2::from_shape_fn((PARTICLES, DIMS), |(p, d)| {
            let (x, y) = (p as f64 * 0.3, if p % 2 == 0 { 0.0 } else { 0.15 } + 0.01 * (p * p) as f64);
            [x, y * tilt.cos(), y * tilt.sin()][d] as f32
        })
    }

    #[test]
    fn planar_frames_get_noise_in_their_plane_and_3d_frames_everywhere() {
        for tilt in [0.0, 0.7] {
            let frame = zigzag(tilt);
            let mut next = frame.clone().insert_axis(ndarray::Axis(0));
            add_noise_to_batch(
                next.view_mut(),
                frame.view().insert_axis(ndarray::Axis(0)),
                Array2::from_elem((1, PARTICLES), 0.1).view(),
                &mut Kicks::new(None),
                (5, 0, 0),
            );
            let next = next.index_axis(ndarray::Axis(0), 0);
            let normal = [0.0, -(tilt.sin()), tilt.cos()];
            let moved = &next - &frame;
            let out_of_plane = moved.outer_iter().map(|m| (0..DIMS).map(|d| f64::from(m[d]) * normal[d]).sum::<f64>().abs()).fold(0.0, f64::max);
            let in_plane = moved.iter().map(|v| f64::from(*v).abs()).fold(0.0, f64::max);
            assert!(out_of_plane < 1e-6 && in_plane > 1e-2, "tilt {tilt}: {out_of_plane} {in_plane}");
        }
        let mut solid = zigzag(0.0);
        solid.column_mut(2).iter_mut().enumerate().for_each(|(p, z)| *z = (p as f32 * 3.5).cos() * 0.2);
        let projector = span_projector(solid.view());
        for (a, row) in projector.iter().enumerate() {
            for (b, value) in row.iter().enumerate() {
                assert!((value - if a == b { 1.0 } else { 0.0 }).abs() < 1e-9, "{projector:?}");
            }
        }
    }

    /// A frame in a coordinate plane draws only the plane's coordinates: standard normal
    /// there, exactly zero off it; a tilted plane's noise has the plane's variance too.
    #[test]
    fn projected_noise_is_standard_normal_in_the_frame_s_span() {
        for tilt in [0.0, 0.7] {
            let frames = zigzag(tilt).insert_axis(ndarray::Axis(0));
            let noise: Vec<Array3<f32>> = (0..2000).map(|step| projected_noise(frames.view(), 3, 0, step)).collect();
            let normal = [0.0, -(tilt.sin()), tilt.cos()];
            let (mut squares, mut sum, mut off_plane) = (0.0, 0.0, 0.0_f64);
            for draw in &noise {
                for particle in draw.rows() {
                    squares += particle.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
                    sum += particle.iter().map(|v| f64::from(*v)).sum::<f64>();
                    off_plane = off_plane.max((0..DIMS).map(|d| f64::from(particle[d]) * normal[d]).sum::<f64>().abs());
                }
            }
            // 48,000 in-plane draws: the standard errors are 0.005 (mean) and 0.006 (variance).
            let draws = (noise.len() * PARTICLES * 2) as f64;
            let (mean, variance) = (sum / draws, squares / draws);
            assert!(mean.abs() < 0.03 && (variance - 1.0).abs() < 0.03, "tilt {tilt}: {mean} {variance}");
            if tilt == 0.0 {
                assert_eq!(off_plane, 0.0, "z is never drawn");
            } else {
                assert!(off_plane < 1e-6, "{off_plane}");
            }
        }
    }

    /// The shortcut gives the eigendecomposition's projector, for 3-D frames, frames in a
    /// coordinate plane, and a line in one (which it leaves to the eigendecomposition).
    #[test]
    fn the_axis_projector_agrees_with_the_eigenvectors() {
        let mut solid = zigzag(0.0);
        solid.column_mut(2).iter_mut().enumerate().for_each(|(p, z)| *z = (p as f32 * 3.5).cos() * 0.2);
        let mut line = zigzag(0.0);
        line.column_mut(1).fill(0.0);
        for (frame, rank) in [(solid, 3), (zigzag(0.0), 2), (line, 1), (zigzag(0.7), 2)] {
            let gyration = gyration(frame.view());
            let (values, vectors) = symmetric_eigen(gyration);
            let largest = values.iter().fold(0.0_f64, |m, v| m.max(*v));
            let kept: Vec<usize> = (0..DIMS).filter(|&k| values[k] > PLANAR_EIGENVALUE_RATIO * largest).collect();
            assert_eq!(kept.len(), rank);
            let shortcut = spanned_axes(&gyration);
            assert_eq!(shortcut.is_some(), rank >= 2 && frame.column(2).iter().all(|z| *z == 0.0) || rank == 3, "rank {rank}");
            let projector = span_projector(frame.view());
            for a in 0..DIMS {
                for b in 0..DIMS {
                    let expected: f64 = kept.iter().map(|&k| vectors[a][k] * vectors[b][k]).sum();
                    assert!((projector[a][b] - expected).abs() < 1e-12, "rank {rank}: {projector:?}");
                }
            }
        }
    }

    fn uneven_shape() -> KickShape {
        KickShape {
            mode_spread: std::array::from_fn(|m| [0.05, 0.4, 1.0, 1.3, 1.2, 0.9, 0.5, 0.6, 0.7, 0.9, 1.0, 1.1][m]),
            mode_persistence: std::array::from_fn(|m| [0.0, 0.3, 0.6, 0.2, 0.0, 0.4, 0.5, 0.4, 0.3, -0.3, 0.2, 0.1][m]),
        }
    }

    /// Frames that span all three coordinates.
    fn solid_frames(batch: usize) -> Array3<f32> {
        Array3::from_shape_fn((batch, PARTICLES, DIMS), |(b, p, d)| [p as f32 * 0.3, ((p + b) as f32 * 1.3).sin(), ((p * p) as f32 * 0.7).cos()][d])
    }

    /// Shaped kicks keep each particle's ξ standard normal, and kicks of dx_std_i ∝ the
    /// mixing's norm give back the shape they were drawn with: the fit and the sampler
    /// agree on what a shape means.
    #[test]
    fn shaped_kicks_are_standard_normal_per_particle_and_fit_back_to_their_shape() {
        let shape = uneven_shape();
        let frames = solid_frames(1);
        let mut kicks = Kicks::new(Some(&shape));
        let steps = 6000;
        let drawn: Vec<Array3<f32>> = (0..steps).map(|step| kicks.next(projected_noise(frames.view(), 21, 0, step))).collect();
        for particle in 0..PARTICLES {
            let variance = drawn.iter().map(|k| k.index_axis(Axis(0), 0).row(particle).iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()).sum::<f64>()
                / (steps as usize * DIMS) as f64;
            // Correlated in time, so fewer independent draws than 18,000: within 8%.
            assert!((variance - 1.0).abs() < 0.08, "particle {particle}: variance {variance}");
        }
        let modes = chain_modes();
        let norms: Vec<f64> = (0..PARTICLES).map(|i| (0..PARTICLES).map(|m| (modes[m][i] * shape.mode_spread[m]).powi(2)).sum::<f64>().sqrt()).collect();
        let residuals = Array3::from_shape_fn((steps as usize, PARTICLES, DIMS), |(t, i, d)| drawn[t][[0, i, d]] * norms[i] as f32);
        let fitted = KickShape::of_residuals(residuals.view(), &vec![true; steps as usize - 1]);
        let largest = shape.mode_spread.iter().fold(0.0_f64, |m, s| m.max(*s));
        for m in 0..PARTICLES {
            let spread = shape.mode_spread[m] / largest;
            assert!((fitted.mode_spread[m] - spread).abs() < 0.05 * spread + 0.01, "mode {m}: spread {} vs {spread}", fitted.mode_spread[m]);
            assert!((fitted.mode_persistence[m] - shape.mode_persistence[m]).abs() < 0.05, "mode {m}: {fitted:?}");
        }
        // Pairs that do not follow each other tell nothing about persistence.
        let unlinked = KickShape::of_residuals(residuals.view(), &vec![false; steps as usize - 1]);
        assert_eq!(unlinked.mode_persistence, [0.0; PARTICLES]);
    }

    /// Each system's kicks depend on its own draws alone (what is batched beside it does
    /// not move them), and white kicks are the draws themselves.
    #[test]
    fn a_system_s_shaped_kicks_do_not_depend_on_its_batch() {
        let shape = uneven_shape();
        let (pair, single) = (solid_frames(2), solid_frames(1));
        let (mut together, mut alone) = (Kicks::new(Some(&shape)), Kicks::new(Some(&shape)));
        for step in 0..20 {
            let both = together.next(projected_noise(pair.view(), 4, 0, step));
            let first = alone.next(projected_noise(single.view(), 4, 0, step));
            assert_eq!(both.index_axis(Axis(0), 0), first.index_axis(Axis(0), 0), "step {step}");
            let draws = projected_noise(single.view(), 4, 0, step);
            assert_eq!(Kicks::new(None).next(draws.clone()), draws);
        }
    }

    #[test]
    fn a_kick_shape_that_cannot_be_drawn_is_refused() {
        assert!(uneven_shape().check().is_ok());
        let mut unbounded = uneven_shape();
        unbounded.mode_persistence[3] = 1.0;
        assert!(unbounded.check().unwrap_err().contains("persistence"));
        let mut silent = uneven_shape();
        silent.mode_spread = [0.0; PARTICLES];
        assert!(silent.check().unwrap_err().contains("not all zero"));
        let mut broken = uneven_shape();
        broken.mode_spread[5] = f64::NAN;
        assert!(broken.check().is_err());
    }
}
