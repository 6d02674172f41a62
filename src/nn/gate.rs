//! e3nn's `Gate`: scalars go through activations; every other irrep is multiplied
//! by its own activated gate scalar, which keeps the layer equivariant.

use super::{LayerError, fully_connected::apply_activation, ops::Ops};
use crate::e3::{Irrep, Irreps, radial::Activation};

#[derive(Debug, Clone)]
pub struct Gate {
    pub irreps_scalars: Irreps,
    pub act_scalars: Vec<Activation>,
    pub irreps_gates: Irreps,
    pub act_gates: Vec<Activation>,
    pub irreps_gated: Irreps,
    /// scalars + gates + gated, sorted and simplified: what the gate expects.
    pub irreps_in: Irreps,
    pub irreps_out: Irreps,
    /// For each of scalars, gates, gated: the index ranges of its entries in the input.
    pieces: [Vec<std::ops::Range<usize>>; 3],
}

/// The parity of act(x) for odd x, or `None` when the activation is neither even
/// nor odd (then it may only act on even scalars).
fn output_parity(activation: Activation, input: Irrep) -> Result<i8, LayerError> {
    if input.p == 1 {
        return Ok(1);
    }
    match activation {
        Activation::Tanh => Ok(-1),
        Activation::Abs => Ok(1),
        other => Err(LayerError::NeitherEvenNorOdd(other, input)),
    }
}

impl Gate {
    pub fn new(
        irreps_scalars: Irreps,
        act_scalars: Vec<Activation>,
        irreps_gates: Irreps,
        act_gates: Vec<Activation>,
        irreps_gated: Irreps,
    ) -> Result<Self, LayerError> {
        if irreps_scalars.lmax().unwrap_or(0) > 0 || irreps_gates.lmax().unwrap_or(0) > 0 {
            return Err(LayerError::GatesNotScalars);
        }
        if irreps_gates.num_irreps() != irreps_gated.num_irreps() {
            return Err(LayerError::GateCount { gates: irreps_gates.num_irreps(), gated: irreps_gated.num_irreps() });
        }
        if act_scalars.len() != irreps_scalars.len() || act_gates.len() != irreps_gates.len() {
            return Err(LayerError::ActivationCount);
        }
        let groups = [irreps_scalars.simplify(), irreps_gates.simplify(), irreps_gated.simplify()];
        let all = groups[0].concat(&groups[1]).concat(&groups[2]);
        let (sorted, perm) = all.sort();
        let sorted_slices = sorted.slices();
        let mut next = 0;
        let pieces = groups.clone().map(|group| {
            let ranges: Vec<_> = (next..next + group.len()).map(|i| sorted_slices[perm[i]].clone()).collect();
            next += group.len();
            ranges
        });
        let scalars_out = Irreps(
            irreps_scalars
                .iter()
                .zip(&act_scalars)
                .map(|(m, act)| Ok(crate::e3::MulIr { mul: m.mul, ir: Irrep::new(0, output_parity(*act, m.ir)?) }))
                .collect::<Result<_, LayerError>>()?,
        );
        let gate_parities: Vec<i8> = irreps_gates
            .iter()
            .zip(&act_gates)
            .flat_map(|(m, act)| std::iter::repeat_n(output_parity(*act, m.ir), m.mul))
            .collect::<Result<_, LayerError>>()?;
        // Each gated irrep takes the parity of its gate into its own.
        let mut gated_out = Vec::new();
        let mut g = 0;
        for m in groups[2].iter() {
            for _ in 0..m.mul {
                gated_out.push((1, Irrep::new(m.ir.l, m.ir.p * gate_parities[g])));
                g += 1;
            }
        }
        let irreps_out = scalars_out.concat(&Irreps::new(gated_out).simplify());
        Ok(Self {
            irreps_in: sorted.simplify(),
            irreps_out,
            irreps_scalars: groups[0].clone(),
            act_scalars,
            irreps_gates: groups[1].clone(),
            act_gates,
            irreps_gated: groups[2].clone(),
            pieces,
        })
    }

    fn gather<O: Ops>(ops: &mut O, x: &O::Tensor, ranges: &[std::ops::Range<usize>]) -> Option<O::Tensor> {
        let parts: Vec<O::Tensor> = ranges.iter().map(|r| ops.slice(x, 1, r.start, r.end)).collect();
        match parts.len() {
            0 => None,
            1 => parts.into_iter().next(),
            _ => Some(ops.concat(&parts, 1)),
        }
    }

    /// x [rows, irreps_in.dim] → [rows, irreps_out.dim].
    pub fn forward<O: Ops>(&self, ops: &mut O, x: &O::Tensor) -> O::Tensor {
        let activate = |ops: &mut O, values: &O::Tensor, irreps: &Irreps, acts: &[Activation]| {
            let parts: Vec<O::Tensor> = irreps
                .slices()
                .iter()
                .zip(acts)
                .map(|(r, act)| {
                    let part = ops.slice(values, 1, r.start, r.end);
                    apply_activation(ops, &part, *act, true)
                })
                .collect();
            if parts.len() == 1 { parts.into_iter().next().expect("one part") } else { ops.concat(&parts, 1) }
        };
        let scalars = Self::gather(ops, x, &self.pieces[0]).map(|s| activate(ops, &s, &self.irreps_scalars, &self.act_scalars));
        let gated = match (Self::gather(ops, x, &self.pieces[1]), Self::gather(ops, x, &self.pieces[2])) {
            (Some(gates), Some(gated)) => {
                let gates = activate(ops, &gates, &self.irreps_gates, &self.act_gates);
                let mut parts = Vec::new();
                let mut gate_offset = 0;
                for (r, m) in self.irreps_gated.slices().iter().zip(self.irreps_gated.iter()) {
                    let block = ops.slice(&gated, 1, r.start, r.end);
                    let block = ops.reshape(&block, &[-1, m.mul as i64, m.ir.dim() as i64]);
                    let gate = ops.slice(&gates, 1, gate_offset, gate_offset + m.mul);
                    gate_offset += m.mul;
                    let gate = ops.reshape(&gate, &[-1, m.mul as i64, 1]);
                    let product = ops.mul(&block, &gate);
                    parts.push(ops.reshape(&product, &[-1, m.dim() as i64]));
                }
                Some(if parts.len() == 1 { parts.pop().expect("one part") } else { ops.concat(&parts, 1) })
            }
            _ => None,
        };
        match (scalars, gated) {
            (Some(s), Some(g)) => ops.concat(&[s, g], 1),
            (Some(s), None) => s,
            (None, Some(g)) => g,
            (None, None) => panic!("a gate with neither scalars nor gated irreps has no output"),
        }
    }
}
