//! The paths of a tensor product: which irreps meet in which connection mode, their
//! weights' shapes, and e3nn's path normalisation.

use serde::{Deserialize, Serialize};

use super::TensorProduct;
use crate::{e3::Irreps, nn::LayerError};

/// How the multiplicities of the two inputs meet (e3nn's connection modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Uvw,
    Uvu,
    Uvv,
    Uuw,
    Uuu,
}

impl std::str::FromStr for Mode {
    type Err = LayerError;

    fn from_str(s: &str) -> Result<Self, LayerError> {
        serde_json::from_value(serde_json::Value::String(s.into())).map_err(|_| LayerError::UnknownMode(s.into()))
    }
}

/// One path of the product, with its normalisation coefficient already applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    pub i_in1: usize,
    pub i_in2: usize,
    pub i_out: usize,
    pub mode: Mode,
    pub has_weight: bool,
    /// √α of e3nn: the factor this path's output is multiplied by.
    pub path_weight: f64,
    pub path_shape: Vec<usize>,
}

impl TensorProduct {
    /// `instructions` are (i_in1, i_in2, i_out, mode, has_weight) as in e3nn; with
    /// `shared_weights` the weights start at zero and are set with [`Self::set_weight`].
    pub fn new(
        irreps_in1: Irreps,
        irreps_in2: Irreps,
        irreps_out: Irreps,
        instructions: &[(usize, usize, usize, Mode, bool)],
        shared_weights: bool,
    ) -> Result<Self, LayerError> {
        let entry = |irreps: &Irreps, index: usize, which: &'static str| {
            irreps.0.get(index).copied().ok_or_else(|| LayerError::MissingIrrep { which, index, irreps: irreps.clone() })
        };
        let mut shaped = Vec::with_capacity(instructions.len());
        for &(i1, i2, io, mode, has_weight) in instructions {
            let (a, b, c) = (entry(&irreps_in1, i1, "irreps_in1")?, entry(&irreps_in2, i2, "irreps_in2")?, entry(&irreps_out, io, "irreps_out")?);
            if !c.ir.in_product(a.ir, b.ir) {
                return Err(LayerError::ForbiddenPath(a.ir, b.ir, c.ir));
            }
            let path_shape = match mode {
                Mode::Uvw => vec![a.mul, b.mul, c.mul],
                Mode::Uvu | Mode::Uvv => vec![a.mul, b.mul],
                Mode::Uuw => vec![a.mul, c.mul],
                Mode::Uuu => vec![a.mul],
            };
            let consistent = match mode {
                Mode::Uvw => true,
                Mode::Uvu => a.mul == c.mul,
                Mode::Uvv => b.mul == c.mul,
                Mode::Uuw => a.mul == b.mul && (has_weight || c.mul == 1),
                Mode::Uuu => a.mul == b.mul && b.mul == c.mul,
            };
            if !consistent {
                return Err(LayerError::Multiplicities(a.mul, b.mul, c.mul, mode));
            }
            shaped.push((i1, i2, io, mode, has_weight, path_shape));
        }
        // e3nn: α = dim(out) / Σ (elements summed into the same output), path weight √α.
        let elements = |i1: usize, i2: usize, mode: Mode| -> usize {
            let (a, b) = (irreps_in1.0[i1].mul, irreps_in2.0[i2].mul);
            match mode {
                Mode::Uvw => a * b,
                Mode::Uvu => b,
                Mode::Uvv | Mode::Uuw => a,
                Mode::Uuu => 1,
            }
        };
        let instructions: Vec<Instruction> = shaped
            .iter()
            .map(|(i1, i2, io, mode, has_weight, path_shape)| {
                let fan_in: usize = shaped.iter().filter(|s| s.2 == *io).map(|s| elements(s.0, s.1, s.3)).sum();
                let mut alpha = irreps_out.0[*io].ir.dim() as f64;
                if fan_in > 0 {
                    alpha /= fan_in as f64;
                }
                Instruction {
                    i_in1: *i1,
                    i_in2: *i2,
                    i_out: *io,
                    mode: *mode,
                    has_weight: *has_weight,
                    path_weight: alpha.sqrt(),
                    path_shape: path_shape.clone(),
                }
            })
            .collect();
        let weight_numel = instructions.iter().filter(|i| i.has_weight).map(|i| i.path_shape.iter().product::<usize>()).sum();
        let weight = shared_weights.then(|| vec![0.0; weight_numel]);
        Ok(Self { irreps_in1, irreps_in2, irreps_out, instructions, weight_numel, weight })
    }

    /// Every allowed path with mode uvw and a weight (e3nn's `FullyConnectedTensorProduct`).
    pub fn fully_connected(irreps_in1: Irreps, irreps_in2: Irreps, irreps_out: Irreps, shared_weights: bool) -> Self {
        let mut instructions = Vec::new();
        for (i1, a) in irreps_in1.iter().enumerate() {
            for (i2, b) in irreps_in2.iter().enumerate() {
                for (io, c) in irreps_out.iter().enumerate() {
                    if c.ir.in_product(a.ir, b.ir) {
                        instructions.push((i1, i2, io, Mode::Uvw, true));
                    }
                }
            }
        }
        Self::new(irreps_in1, irreps_in2, irreps_out, &instructions, shared_weights).expect("fully connected paths are valid")
    }

    /// Replaces the shared weights (e3nn layout).
    pub fn set_weight(&mut self, weight: Vec<f64>) -> Result<(), LayerError> {
        if weight.len() != self.weight_numel {
            return Err(LayerError::WeightCount { expected: self.weight_numel, got: weight.len() });
        }
        match &mut self.weight {
            Some(w) => *w = weight,
            None => return Err(LayerError::WeightsPerSample),
        }
        Ok(())
    }

    /// 1 for output components that some non-empty path writes, else 0 (e3nn's output_mask).
    pub fn output_mask(&self) -> Vec<f64> {
        self.irreps_out
            .iter()
            .enumerate()
            .flat_map(|(io, m)| {
                let written = self.instructions.iter().any(|i| i.i_out == io && i.path_weight != 0.0 && !i.path_shape.contains(&0));
                std::iter::repeat_n(if written { 1.0 } else { 0.0 }, m.dim())
            })
            .collect()
    }
}
