//! Trajectories of the 12-particle system: loading, simulating and splitting them.

mod npz;
pub mod sampling;
mod simulate;
mod split;
mod xyz;

pub use npz::{NpzArray, load_frames, load_npz, load_npz_described, save_arrays, save_npz};
pub use simulate::{SimulationConfig, simulate};
pub use split::{Pairs, Split, SplitConfig, Target};
pub use xyz::{DEFAULT_SPECIES, check_species, write_ensemble_xyz, write_xyz};

use ndarray::{Array3, Array4, ArrayView2, ArrayView3, Axis, concatenate, s};

/// Particles in every snapshot.
pub const PARTICLES: usize = 12;
/// Coordinates per particle (2-D data is lifted to 3-D with z = 0).
pub const DIMS: usize = 3;
/// Floats in one snapshot, `PARTICLES * DIMS`.
pub const FRAME_LEN: usize = PARTICLES * DIMS;

/// The chain's normal modes: row m is the cosine u_m(i) = √((1 or 2)/12) cos(π m (i + ½)/12)
/// over the particles' order (m = 0 the centroid's motion, m = 11 neighbours moving
/// against each other), an orthonormal basis. Chain modes move at their own pace: the
/// slow bends keep their velocity nearly as long as the centroid, the fast ones are
/// turned around by the bonds within a few steps.
pub fn chain_modes() -> [[f64; PARTICLES]; PARTICLES] {
    let n = PARTICLES as f64;
    std::array::from_fn(|m| {
        let norm = if m == 0 { (1.0 / n).sqrt() } else { (2.0 / n).sqrt() };
        std::array::from_fn(|i| norm * (std::f64::consts::PI * m as f64 * (i as f64 + 0.5) / n).cos())
    })
}

/// The `held` frames before each frame index of `ends` (each at least `held`), oldest
/// first: [ends, held, 12, 3]. The one place a history model's windows are cut from a
/// trajectory (training pairs, evaluation, the client's files).
pub fn windows_before(frames: ArrayView3<f32>, ends: impl IntoIterator<Item = usize>, held: usize) -> Array4<f32> {
    let ends: Vec<usize> = ends.into_iter().collect();
    let (_, particles, dims) = frames.dim();
    let mut windows = Array4::zeros((ends.len(), held, particles, dims));
    for (row, &t) in ends.iter().enumerate() {
        windows.index_axis_mut(Axis(0), row).assign(&frames.slice(s![t - held..t, .., ..]));
    }
    windows
}

/// The radius of gyration of a frame [12, 3]: the RMS distance of its particles from
/// their centroid, the system's size.
pub fn radius_of_gyration(frame: ArrayView2<f32>) -> f64 {
    let centre = frame.mean_axis(Axis(0)).expect("12 particles");
    let squared: f64 = frame.outer_iter().map(|p| (&p - &centre).iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()).sum();
    (squared / PARTICLES as f64).sqrt()
}

/// Moves a window one step on, in place: of `window` [B, H, 12, 3] (oldest first) the
/// oldest frame leaves and `frame` [B, 12, 3] joins as the newest. An empty window stays
/// empty. Contiguous windows shift by memmove (concatenating a new window along its
/// second axis, strided, was a twentieth of a served ensemble's time).
pub fn advance_window(window: &mut Array4<f32>, frame: ArrayView3<f32>) {
    let held = window.dim().1;
    if held == 0 {
        return;
    }
    if let (Some(frames), Some(newest)) = (window.as_slice_mut(), frame.as_slice()) {
        for (frames, newest) in frames.chunks_exact_mut(held * FRAME_LEN).zip(newest.chunks_exact(FRAME_LEN)) {
            frames.copy_within(FRAME_LEN.., 0);
            frames[(held - 1) * FRAME_LEN..].copy_from_slice(newest);
        }
    } else {
        *window = concatenate(Axis(1), &[window.slice(s![.., 1.., .., ..]), frame.insert_axis(Axis(1))]).expect("frames of one shape");
    }
}

/// A sequence of snapshots, float32 `[frames, 12, 3]`, all finite.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    positions: Array3<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why an array is not a trajectory.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrajectoryError {
    #[error("expected shape [frames, {PARTICLES}, {DIMS}], got {0:?}")]
    Shape(Vec<usize>),
    #[error("need at least 2 frames to form (x(t), x(t+1)) pairs, got {0}")]
    TooFewFrames(usize),
    #[error("non-finite value {value} at frame {frame}, particle {particle}, coordinate {coordinate}")]
    NonFinite { value: f32, frame: usize, particle: usize, coordinate: usize },
}

/// Why a trajectory cannot be split as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplitError {
    #[error("train fraction must be in (0, 1), got {0}")]
    Fraction(f64),
    #[error("cannot split {pairs} pairs into {train_pairs} for training (each with {history_frames} frames) and the rest for testing")]
    Count { pairs: usize, train_pairs: usize, history_frames: usize },
}

impl DataError {
    pub(crate) fn invalid(path: &std::path::Path, message: impl Into<String>) -> Self {
        DataError::Invalid { path: path.display().to_string(), message: message.into() }
    }
}

/// The first non-finite value of `positions`, as an error naming where it is.
pub(crate) fn check_finite(positions: &Array3<f32>) -> Result<(), TrajectoryError> {
    match positions.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((frame, particle, coordinate), value)) => Err(TrajectoryError::NonFinite { value: *value, frame, particle, coordinate }),
        None => Ok(()),
    }
}

impl Trajectory {
    /// Checks shape `[frames, 12, 3]`, at least two frames and finite values.
    pub fn new(positions: Array3<f32>) -> Result<Self, TrajectoryError> {
        let (frames, particles, dims) = positions.dim();
        if particles != PARTICLES || dims != DIMS {
            return Err(TrajectoryError::Shape(positions.shape().to_vec()));
        }
        if frames < 2 {
            return Err(TrajectoryError::TooFewFrames(frames));
        }
        check_finite(&positions)?;
        Ok(Self { positions })
    }

    pub fn positions(&self) -> &Array3<f32> {
        &self.positions
    }

    pub fn frames(&self) -> usize {
        self.positions.dim().0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chain_modes_are_orthonormal_and_start_with_the_centroid() {
        let modes = chain_modes();
        for (m, u) in modes.iter().enumerate() {
            for (n, v) in modes.iter().enumerate() {
                let dot: f64 = u.iter().zip(v).map(|(a, b)| a * b).sum();
                assert!((dot - f64::from(u8::from(m == n))).abs() < 1e-12, "{m} {n}: {dot}");
            }
        }
        assert!(modes[0].iter().all(|u| (u - modes[0][0]).abs() < 1e-15), "mode 0 moves every particle alike");
    }

    use ndarray::{Array3, Array4, ShapeBuilder};

    use super::*;

    /// Both ways of moving a window (a contiguous one in place, any other by
    /// concatenation) drop the oldest frame and append the newest.
    #[test]
    fn a_window_moves_one_frame_on() {
        let value = |b: usize, k: usize, i: usize| (b * 1000 + k * 100 + i) as f32;
        let frame = Array3::from_shape_fn((2, PARTICLES, DIMS), |(b, p, d)| value(b, 9, p * DIMS + d));
        let contiguous = Array4::from_shape_fn((2, 3, PARTICLES, DIMS), |(b, k, p, d)| value(b, k, p * DIMS + d));
        let strided = Array4::from_shape_fn((2, 3, PARTICLES, DIMS).f(), |(b, k, p, d)| value(b, k, p * DIMS + d));
        for mut window in [contiguous, strided] {
            advance_window(&mut window, frame.view());
            for b in 0..2 {
                for (k, source) in [1, 2, 9].into_iter().enumerate() {
                    for i in 0..FRAME_LEN {
                        assert_eq!(window[[b, k, i / DIMS, i % DIMS]], value(b, source, i));
                    }
                }
            }
        }
    }
}
