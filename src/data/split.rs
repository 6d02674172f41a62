//! Chronological train/test split of (x(t), x(t+1)) pairs, as in the study.

use ndarray::{Array3, Array4, Axis, s};
use serde::{Deserialize, Serialize};

use super::{SplitError, Trajectory, windows_before};

/// What the network is trained to output. Exported models always output dx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The displacement x(t+1) − x(t) (the study's choice).
    Dx,
    /// The next positions x(t+1).
    X,
}

/// Consecutive snapshots: `inputs[i]` = x(t), `next[i]` = x(t+1), and the frames
/// before x(t) that history models read.
#[derive(Debug, Clone)]
pub struct Pairs {
    pub inputs: Array3<f32>,
    pub next: Array3<f32>,
    /// x(t−H) … x(t−1), oldest first: [pairs, H, 12, 3], H = history frames − 1.
    pub previous: Array4<f32>,
}

impl Pairs {
    pub fn len(&self) -> usize {
        self.inputs.dim().0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dx(&self) -> Array3<f32> {
        &self.next - &self.inputs
    }

    /// dx(t) − dx(t−1), the change of displacement (a step's acceleration); needs a
    /// previous frame.
    pub fn change_of_dx(&self) -> Array3<f32> {
        let last = self.previous.dim().1.checked_sub(1).expect("a previous frame");
        &self.dx() - &(&self.inputs - &self.previous.index_axis(Axis(1), last))
    }

    /// The last `frames` of each pair's previous frames, [pairs, frames, 12, 3].
    pub fn previous_frames(&self, frames: usize) -> Array4<f32> {
        let held = self.previous.dim().1;
        assert!(frames <= held, "{frames} previous frames asked, {held} held");
        self.previous.slice(s![.., held - frames.., .., ..]).to_owned()
    }

    pub fn targets(&self, target: Target) -> Array3<f32> {
        match target {
            Target::Dx => self.dx(),
            Target::X => self.next.clone(),
        }
    }
}

/// Where to cut the trajectory's pairs: an explicit count wins over the fraction.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SplitConfig {
    pub train_pairs: Option<usize>,
    /// floor(0.8 · 2047) = 1637 reproduces the study's split of paths.npz.
    pub train_fraction: f64,
}

impl SplitConfig {
    /// Training pairs out of `pairs`: the explicit count, else floor(fraction · pairs).
    pub fn train_pairs(&self, pairs: usize) -> Result<usize, SplitError> {
        match self.train_pairs {
            Some(n) => Ok(n),
            None if self.train_fraction > 0.0 && self.train_fraction < 1.0 => Ok((self.train_fraction * pairs as f64).floor() as usize),
            None => Err(SplitError::Fraction(self.train_fraction)),
        }
    }
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self { train_pairs: None, train_fraction: 0.8 }
    }
}

#[derive(Debug, Clone)]
pub struct Split {
    pub train: Pairs,
    pub test: Pairs,
}

impl Split {
    /// The first pairs train, the rest test: no frame of the test period is seen in training.
    pub fn new(trajectory: &Trajectory, config: &SplitConfig) -> Result<Self, SplitError> {
        Self::with_history(trajectory, config, 1)
    }

    /// As [`Self::new`], each pair with the `history_frames − 1` frames before x(t):
    /// training starts at the first pair that has them all; the test pairs are the same
    /// for every history (their earlier frames are inputs, never targets).
    pub fn with_history(trajectory: &Trajectory, config: &SplitConfig, history_frames: usize) -> Result<Self, SplitError> {
        let held = history_frames.max(1) - 1;
        let positions = trajectory.positions();
        let pairs = trajectory.frames() - 1;
        let train_pairs = config.train_pairs(pairs)?;
        if train_pairs <= held || train_pairs >= pairs {
            return Err(SplitError::Count { pairs, train_pairs, history_frames: held + 1 });
        }
        let pairs_in = |range: std::ops::Range<usize>| Pairs {
            inputs: positions.slice(s![range.start..range.end, .., ..]).to_owned(),
            next: positions.slice(s![range.start + 1..range.end + 1, .., ..]).to_owned(),
            previous: windows_before(positions.view(), range.clone(), held),
        };
        Ok(Self { train: pairs_in(held..train_pairs), test: pairs_in(train_pairs..pairs) })
    }

    /// The splits of several trajectories as one: their training pairs together, and
    /// their test pairs together (no pair straddles two trajectories).
    pub fn merged(splits: Vec<Split>) -> Split {
        let join = |parts: Vec<&Pairs>| Pairs {
            inputs: ndarray::concatenate(Axis(0), &parts.iter().map(|p| p.inputs.view()).collect::<Vec<_>>()).expect("frames of one shape"),
            next: ndarray::concatenate(Axis(0), &parts.iter().map(|p| p.next.view()).collect::<Vec<_>>()).expect("frames of one shape"),
            previous: ndarray::concatenate(Axis(0), &parts.iter().map(|p| p.previous.view()).collect::<Vec<_>>()).expect("windows of one shape"),
        };
        Split { train: join(splits.iter().map(|s| &s.train).collect()), test: join(splits.iter().map(|s| &s.test).collect()) }
    }
}
