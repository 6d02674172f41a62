//! Equivariant layers after e3nn (`o3.TensorProduct`, `o3.Linear`, `nn.FullyConnectedNet`,
//! `nn.Gate`), and torch's `nn.Linear` for the baselines, each written once against
//! [`Ops`]: evaluated in f64 by [`Eager`], run and trained in Burn by [`BurnOps`], or
//! emitted as ONNX by `train::onnx_graph::GraphBuilder`.
//! Features are [rows, irreps.dim].

mod burn_ops;
mod dense;
mod eager;
mod fully_connected;
mod gate;
mod linear;
mod ops;
mod tensor_product;

pub use burn_ops::{BurnOps, BurnTensor};
pub use dense::Dense;
pub use eager::Eager;
pub use fully_connected::{FullyConnectedNet, apply_activation};
pub use gate::Gate;
pub use linear::Linear;
pub use ops::{Ops, Unary};
pub(crate) use tensor_product::{BlockLayout, cg_columns_ki};
pub use tensor_product::{Instruction, Mode, TensorProduct};

use crate::e3::{Irrep, Irreps, radial::Activation};

/// A layer that cannot be built as asked, or weights that do not fit it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LayerError {
    #[error("unsupported connection mode '{0}'")]
    UnknownMode(String),
    #[error("instruction refers to {which}[{index}] but {which} is {irreps}")]
    MissingIrrep { which: &'static str, index: usize, irreps: Irreps },
    #[error("{0} ⊗ {1} cannot give {2}")]
    ForbiddenPath(Irrep, Irrep, Irrep),
    #[error("multiplicities {0}, {1}, {2} do not fit mode {3:?}")]
    Multiplicities(usize, usize, usize, Mode),
    #[error("expected {expected} weights, got {got}")]
    WeightCount { expected: usize, got: usize },
    #[error("this tensor product takes its weights per sample")]
    WeightsPerSample,
    #[error("gate scalars and gates must be scalars (l = 0)")]
    GatesNotScalars,
    #[error("{gates} gates for {gated} gated irreps")]
    GateCount { gates: usize, gated: usize },
    #[error("one activation per scalar entry and per gate entry")]
    ActivationCount,
    #[error("{0:?} is neither even nor odd, so it cannot act on the odd scalar {1}")]
    NeitherEvenNorOdd(Activation, Irrep),
}

/// Adds `value` to the running sum in `sum`, which it starts when empty.
pub(crate) fn add_to<O: Ops>(ops: &mut O, sum: &mut Option<O::Tensor>, value: O::Tensor) {
    *sum = Some(match sum.take() {
        Some(acc) => ops.add(&acc, &value),
        None => value,
    });
}

/// Concatenates the per-output sums of a layer; outputs no path writes are zeros
/// (made as `input · 0`, which needs no row count).
pub(crate) fn concat_outputs<O: Ops>(ops: &mut O, sums: Vec<Option<O::Tensor>>, irreps_out: &Irreps, input: &O::Tensor, input_dim: usize) -> O::Tensor {
    let mut parts: Vec<O::Tensor> = sums
        .into_iter()
        .zip(irreps_out.iter())
        .map(|(sum, m)| {
            sum.unwrap_or_else(|| {
                let zeros = ops.constant(&[input_dim, m.dim()], &vec![0.0; input_dim * m.dim()]);
                ops.matmul(input, &zeros)
            })
        })
        .collect();
    if parts.len() == 1 { parts.pop().expect("one part") } else { ops.concat(&parts, 1) }
}
