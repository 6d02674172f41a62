//! A model's interface: the names, element types and shapes of its inputs and outputs.
//! Written into the model card at export, checked against the ONNX file when a session
//! loads, and carried by every request as named tensors.

use std::fmt;

use ndarray::{Array2, Array3, Array4, ArrayD, ArrayView3, Axis, Ix2, Ix3, Slice};
use serde::{Deserialize, Serialize};

use crate::data::{DIMS, PARTICLES};

/// Frame t: float32 [batch, 12, 3].
pub const POSITIONS: &str = "positions";
/// Frames t−K+1 … t−1, oldest first: float32 [batch, K−1, 12, 3] (history models only).
pub const PREVIOUS: &str = "previous";
/// x(t+1) − x(t): float32 [batch, 12, 3].
pub const DX: &str = "dx";
/// The standard deviation of each coordinate of each particle's next displacement
/// (isotropic per particle): float32 [batch, 12], from stochastic models only.
pub const DX_STD: &str = "dx_std";
/// The symbolic leading dimension every input and output shares.
pub const BATCH: &str = "batch";
pub const FLOAT32: &str = "float32";

/// One input or output: `shape` entries are either a fixed size ("12") or the symbolic
/// batch ("batch").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<String>,
}

/// One dimension of a [`TensorSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Batch,
    Fixed(usize),
}

impl TensorSpec {
    fn float32(name: &str, dims: &[Dim]) -> Self {
        let shape = dims
            .iter()
            .map(|d| match d {
                Dim::Batch => BATCH.to_string(),
                Dim::Fixed(n) => n.to_string(),
            })
            .collect();
        Self { name: name.into(), dtype: FLOAT32.into(), shape }
    }

    /// The shape as dimensions; `None` for an entry that is neither a size nor "batch".
    pub fn dims(&self) -> Option<Vec<Dim>> {
        self.shape.iter().map(|d| if d == BATCH { Some(Dim::Batch) } else { d.parse().ok().map(Dim::Fixed) }).collect()
    }
}

impl fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}[{}]", self.name, self.dtype, self.shape.join(", "))
    }
}

/// Inputs and outputs of a model, in the order the graph declares them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    /// The dynamics interface of a model reading `history_frames` frames (K ≥ 1):
    /// `positions` [batch, 12, 3], with `previous` [batch, K−1, 12, 3] when K ≥ 2,
    /// to `dx` [batch, 12, 3].
    pub fn dynamics(history_frames: usize) -> Self {
        let frame = [Dim::Batch, Dim::Fixed(PARTICLES), Dim::Fixed(DIMS)];
        let mut inputs = vec![TensorSpec::float32(POSITIONS, &frame)];
        if history_frames >= 2 {
            let window = [Dim::Batch, Dim::Fixed(history_frames - 1), Dim::Fixed(PARTICLES), Dim::Fixed(DIMS)];
            inputs.push(TensorSpec::float32(PREVIOUS, &window));
        }
        Self { inputs, outputs: vec![TensorSpec::float32(DX, &frame)] }
    }

    /// The same interface with the output of a stochastic model beside `dx`: `dx_std`
    /// [batch, 12].
    pub fn with_dx_std(mut self) -> Self {
        self.outputs.push(TensorSpec::float32(DX_STD, &[Dim::Batch, Dim::Fixed(PARTICLES)]));
        self
    }

    /// Whether the model gives `dx_std`, the spread of its next displacement.
    pub fn is_stochastic(&self) -> bool {
        self.output(DX_STD).is_some()
    }

    /// The dynamics interface of a model of `history_frames` frames, with `dx_std` when
    /// it is `stochastic`.
    pub fn dynamics_of(history_frames: usize, stochastic: bool) -> Self {
        let signature = Self::dynamics(history_frames);
        if stochastic { signature.with_dx_std() } else { signature }
    }

    /// Whether `outputs` hold every output of the signature with its shape and `batch`
    /// rows: a graph whose dynamic dimensions let an output lose or gain rows would have
    /// each request's answer cut from another's.
    pub fn check_outputs(&self, outputs: &NamedTensors, batch: usize) -> Result<(), String> {
        for spec in &self.outputs {
            let shape = outputs.get(&spec.name).ok_or_else(|| format!("the model gave no output '{}'", spec.name))?.shape();
            let fits = spec.dims().is_some_and(|dims| {
                shape.len() == dims.len()
                    && shape.iter().zip(&dims).all(|(&size, dim)| match dim {
                        Dim::Batch => size == batch,
                        Dim::Fixed(n) => size == *n,
                    })
            });
            if !fits {
                return Err(format!("output '{}' came back {shape:?} for {batch} frames; the signature says [{}]", spec.name, spec.shape.join(", ")));
            }
        }
        Ok(())
    }

    /// Frames a dynamics model reads (K): 1 + the fixed length of its `previous` input.
    pub fn history_frames(&self) -> usize {
        let held = self.input(PREVIOUS).and_then(TensorSpec::dims).and_then(|dims| match dims.get(1) {
            Some(Dim::Fixed(held)) => Some(*held),
            _ => None,
        });
        1 + held.unwrap_or(0)
    }

    /// Inputs of this signature for `frames`: the frames as positions and, for a
    /// history model, each frame repeated as the window before it (what a rate or a
    /// memory peak depends on is the shapes, not the values).
    pub fn inputs_for_frames(&self, frames: ArrayView3<f32>) -> NamedTensors {
        let held = self.history_frames() - 1;
        let (batch, particles, dims) = frames.dim();
        let window = (held > 0).then(|| {
            let mut window = Array4::zeros((batch, held, particles, dims));
            window.assign(&frames.insert_axis(Axis(1)));
            window
        });
        NamedTensors::dynamics(frames.to_owned(), window)
    }

    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|spec| spec.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|spec| spec.name == name)
    }
}

/// Tensors by name, as requests carry them to a model and its answers come back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamedTensors(Vec<(String, ArrayD<f32>)>);

impl NamedTensors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the tensor called `name`.
    pub fn with(mut self, name: &str, value: ArrayD<f32>) -> Self {
        self.insert(name, value);
        self
    }

    pub fn insert(&mut self, name: &str, value: ArrayD<f32>) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, slot)) => *slot = value,
            None => self.0.push((name.to_string(), value)),
        }
    }

    /// A dynamics model's inputs: `positions` [batch, 12, 3] and, for a history model,
    /// `previous` [batch, K − 1, 12, 3].
    pub fn dynamics(positions: Array3<f32>, previous: Option<Array4<f32>>) -> Self {
        let inputs = Self::new().with(POSITIONS, positions.into_dyn());
        match previous {
            Some(previous) => inputs.with(PREVIOUS, previous.into_dyn()),
            None => inputs,
        }
    }

    /// Takes the `dx` output as [batch, 12, 3]; `None` when there is no such output.
    pub fn take_dx(&mut self) -> Option<Array3<f32>> {
        self.remove(DX).and_then(|dx| dx.into_dimensionality::<Ix3>().ok())
    }

    /// Takes the `dx_std` output as [batch, 12]; `None` when there is no such output.
    pub fn take_dx_std(&mut self) -> Option<Array2<f32>> {
        self.remove(DX_STD).and_then(|std| std.into_dimensionality::<Ix2>().ok())
    }

    pub fn get(&self, name: &str) -> Option<&ArrayD<f32>> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn remove(&mut self, name: &str) -> Option<ArrayD<f32>> {
        let index = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(index).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &ArrayD<f32>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The leading (batch) dimension shared by every tensor; 0 when there are none.
    pub fn batch(&self) -> usize {
        self.0.first().and_then(|(_, v)| v.shape().first().copied()).unwrap_or(0)
    }

    /// The tensors of `parts` stacked along the batch axis, name by name, so that several
    /// requests run as one call. `None` when the parts disagree in names or trailing shapes.
    pub fn concatenate(parts: &[NamedTensors]) -> Option<Self> {
        let first = parts.first()?;
        let mut stacked = Self::new();
        for (name, _) in &first.0 {
            let views = parts.iter().map(|part| part.get(name).map(|v| v.view())).collect::<Option<Vec<_>>>()?;
            stacked.insert(name, ndarray::concatenate(Axis(0), &views).ok()?);
        }
        Some(stacked)
    }

    /// The inverse of [`concatenate`](Self::concatenate): consecutive batch slices of
    /// `sizes` rows each (which must add up to the batch).
    pub fn split(&self, sizes: &[usize]) -> Vec<Self> {
        let mut start = 0;
        sizes
            .iter()
            .map(|&size| {
                let rows = Slice::from(start..start + size);
                start += size;
                Self(self.0.iter().map(|(n, v)| (n.clone(), v.slice_axis(Axis(0), rows).to_owned())).collect())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamics_signatures_name_the_window_only_for_history_models() {
        let snapshot = Signature::dynamics(1);
        assert_eq!(snapshot.inputs.len(), 1);
        assert_eq!(snapshot.inputs[0].shape, ["batch", "12", "3"]);
        let window = Signature::dynamics(4);
        let previous = window.input(PREVIOUS).expect("a history model reads previous frames");
        assert_eq!(previous.dims().expect("parses"), [Dim::Batch, Dim::Fixed(3), Dim::Fixed(12), Dim::Fixed(3)]);
        assert_eq!(window.output(DX), snapshot.output(DX));
        assert_eq!((snapshot.history_frames(), window.history_frames()), (1, 4));
        assert!(!window.is_stochastic());
        let stochastic = window.clone().with_dx_std();
        assert!(stochastic.is_stochastic());
        assert_eq!(stochastic.output(DX_STD).and_then(TensorSpec::dims), Some(vec![Dim::Batch, Dim::Fixed(12)]));
        assert_eq!(stochastic.inputs, window.inputs);
    }

    #[test]
    fn named_tensors_replace_by_name() {
        let a = ArrayD::zeros(vec![1, 2]);
        let b = ArrayD::ones(vec![3]);
        let mut tensors = NamedTensors::new().with("a", a).with("b", b.clone());
        tensors.insert("a", b.clone());
        assert_eq!(tensors.names(), ["a", "b"]);
        assert_eq!(tensors.get("a"), Some(&b));
        assert_eq!(tensors.remove("b"), Some(b));
        assert!(tensors.get("b").is_none());
    }

    #[test]
    fn named_tensors_split_and_concatenate_along_the_batch() {
        let positions = ArrayD::from_shape_fn(vec![5, 2], |i| (i[0] * 2 + i[1]) as f32);
        let window = ArrayD::from_shape_fn(vec![5, 3, 1], |i| (i[0] * 10 + i[1]) as f32);
        let whole = NamedTensors::new().with("p", positions).with("w", window);
        let parts = whole.split(&[2, 0, 3]);
        assert_eq!(parts.iter().map(NamedTensors::batch).collect::<Vec<_>>(), [2, 0, 3]);
        assert_eq!(parts[2].get("w").expect("w")[[0, 1, 0]], 21.0);
        assert_eq!(NamedTensors::concatenate(&parts), Some(whole));
        let other = NamedTensors::new().with("q", ArrayD::zeros(vec![1, 2]));
        assert_eq!(NamedTensors::concatenate(&[parts[0].clone(), other]), None);
    }
}
