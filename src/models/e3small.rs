//! The study's "E3 small": a tensor-product polynomial of the edge vectors' spherical
//! harmonics (l ≤ 3, not normalised) within r = 3.5; 344 parameters.
//!
//! node = Σ_in Y / √11; edge = FCTP(node[src] ⊗ Y → 8x0e+8x0o+16x1e+16x1o+8x2e+8x2o);
//! node = Σ_in edge / √11; edge = FCTP(node[src] ⊗ Y → 1x1o); dx = mean over incoming edges.
//! The first product and its sum are taken together, as FCTP(Σ_in node[src] ⊗ Y).

use super::{
    OpsModel,
    graph::{HarmonicGraph, from_sources, harmonic_graph, mean_into_destinations, outer_sum_into_destinations},
};
use crate::{
    data::{DIMS, PARTICLES},
    e3::{Irreps, SphericalHarmonics},
    nn::{Ops, TensorProduct},
};

pub const RADIUS: f64 = 3.5;
const NUM_NEIGHBORS: f64 = 11.0;
const LMAX: u32 = 3;

#[derive(Debug, Clone)]
pub struct E3Small {
    pub tp1: TensorProduct,
    pub tp2: TensorProduct,
    harmonics: SphericalHarmonics,
}

impl Default for E3Small {
    fn default() -> Self {
        Self::new()
    }
}

impl E3Small {
    pub fn new() -> Self {
        let sh = Irreps::spherical_harmonics(LMAX, -1);
        let mid: Irreps = "8x0e+8x0o+16x1e+16x1o+8x2e+8x2o".parse().expect("valid irreps");
        Self {
            tp1: TensorProduct::fully_connected(sh.clone(), sh.clone(), mid.clone(), true),
            tp2: TensorProduct::fully_connected(mid, sh, "1x1o".parse().expect("valid irreps"), true),
            harmonics: SphericalHarmonics::new(LMAX),
        }
    }
}

impl OpsModel for E3Small {
    fn forward<O: Ops>(&self, ops: &mut O, positions: &O::Tensor) -> O::Tensor {
        let HarmonicGraph { on_graph, ones, sh, nodes } = harmonic_graph(ops, positions, &self.harmonics, LMAX, RADIUS, NUM_NEIGHBORS);
        // The first product is summed straight into the destinations: per node, not per edge.
        let sh_dim = self.tp1.irreps_in2.dim();
        let outer = outer_sum_into_destinations(ops, &nodes, self.tp1.irreps_in1.dim(), &sh, sh_dim);
        let nodes = self.tp1.forward_summed(ops, &outer).expect("E3 small's first product is small enough for a dense form");
        let nodes = ops.scale(&nodes, 1.0 / NUM_NEIGHBORS.sqrt());
        let mut gather = |ops: &mut O, nodes: &O::Tensor, dim: usize| from_sources(ops, nodes, dim, &ones);
        let edges = self.tp2.forward_gathered(ops, &nodes, &sh, &mut gather);
        let mean = mean_into_destinations(ops, &edges, DIMS, &on_graph);
        ops.reshape(&mean, &[-1, PARTICLES as i64, DIMS as i64])
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        [&mut self.tp1, &mut self.tp2].into_iter().filter_map(|tp| tp.weight.as_mut()).collect()
    }

    fn num_params(&self) -> usize {
        self.tp1.weight_numel + self.tp2.weight_numel
    }
}
