//! The study's "E3 small": a tensor-product polynomial of the edge vectors' spherical
//! harmonics (l ≤ 3, not normalised) within r = 3.5; 344 parameters.
//!
//! node = Σ_in Y / √11; edge = FCTP(node[src] ⊗ Y → 8x0e+8x0o+16x1e+16x1o+8x2e+8x2o);
//! node = Σ_in edge / √11; edge = FCTP(node[src] ⊗ Y → 1x1o); dx = mean over incoming edges.
//! Computed per node, not per edge: the first product and its sum are taken together,
//! as FCTP(Σ_in node[src] ⊗ Y); the second product's map of node features is folded into
//! the first's matrix, and its contraction with Y and the mean over incoming edges are
//! one matmul per frame.

use super::{
    ModelInputs, OpsModel,
    graph::{HarmonicGraph, contract_into_destinations, harmonic_graph, outer_sum_into_destinations, per_incoming_edge},
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
    fn forward<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> O::Tensor {
        let positions = inputs.positions;
        let HarmonicGraph { on_graph, sh, nodes, .. } = harmonic_graph(ops, positions, &self.harmonics, LMAX, RADIUS, NUM_NEIGHBORS);
        // The first product is summed straight into the destinations: per node, not per edge.
        let sh_dim = self.tp1.irreps_in2.dim();
        let outer = outer_sum_into_destinations(ops, &nodes, self.tp1.irreps_in1.dim(), &sh, sh_dim);
        // Nothing but the sum's 1/√11 lies between the two products, so the second one's
        // map of node features (before the edge harmonics enter) folds into the first's
        // matrix: each node multiplies one [256, 48] matrix, not [256, 192] then [192, 48].
        let first = self.tp1.summed_matrix(ops).expect("E3 small's first product is small enough for a dense form");
        let second = self.tp2.by_x1_matrix(ops).expect("E3 small's second product is small enough for a dense form");
        // by_x1's columns are (o, b); the contraction with the harmonics reads (b, o).
        let out_dim = self.tp2.irreps_out.dim() as i64;
        let second = ops.reshape(&second, &[-1, out_dim, sh_dim as i64]);
        let second = ops.transpose(&second, &[0, 2, 1]);
        let second = ops.reshape(&second, &[-1, sh_dim as i64 * out_dim]);
        let folded = ops.matmul(&first, &second);
        let folded = ops.scale(&folded, 1.0 / NUM_NEIGHBORS.sqrt());
        let maps = ops.matmul(&outer, &folded);
        // The second product per edge, summed into its destination, in one matmul per frame.
        let summed = contract_into_destinations(ops, &maps, &sh, sh_dim, out_dim as usize);
        let mean = per_incoming_edge(ops, &summed, &on_graph);
        ops.reshape(&mean, &[-1, PARTICLES as i64, DIMS as i64])
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        [&mut self.tp1, &mut self.tp2].into_iter().filter_map(|tp| tp.weight.as_mut()).collect()
    }

    fn num_params(&self) -> usize {
        self.tp1.weight_numel + self.tp2.weight_numel
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};
    use rand::{SeedableRng, rngs::StdRng};
    use rand_distr::{Distribution, Normal};

    use super::*;
    use crate::{
        models::graph::{from_sources, mean_into_destinations},
        nn::Eager,
    };

    /// The study's layers one after another: the first product summed into nodes, the
    /// second per edge, averaged.
    fn layer_by_layer(model: &E3Small, positions: &ArrayD<f64>) -> ArrayD<f64> {
        let ops = &mut Eager;
        let HarmonicGraph { on_graph, sh, nodes, .. } = harmonic_graph(ops, positions, &model.harmonics, LMAX, RADIUS, NUM_NEIGHBORS);
        let ones = ArrayD::ones(IxDyn(&[PARTICLES, PARTICLES, 1]));
        let outer = outer_sum_into_destinations(ops, &nodes, model.tp1.irreps_in1.dim(), &sh, sh.shape()[1]);
        let nodes = model.tp1.forward_summed(ops, &outer).expect("dense");
        let nodes = ops.scale(&nodes, 1.0 / NUM_NEIGHBORS.sqrt());
        let edges = model.tp2.forward_gathered(ops, &nodes, &sh, &mut |ops, x, dim| from_sources(ops, x, dim, &ones));
        let mean = mean_into_destinations(ops, &edges, DIMS, &on_graph);
        ops.reshape(&mean, &[-1, PARTICLES as i64, DIMS as i64])
    }

    #[test]
    fn folded_products_equal_the_layers_one_after_another() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut model = E3Small::new();
        model.init_weights(&mut rng);
        // Spread so that some pairs fall outside the radius.
        let normal = Normal::new(0.0, 1.6).expect("normal");
        let positions = ArrayD::from_shape_simple_fn(IxDyn(&[3, PARTICLES, DIMS]), || normal.sample(&mut rng));
        let expected = layer_by_layer(&model, &positions);
        let folded = model.forward(&mut Eager, &ModelInputs::snapshot(&positions));
        let scale = expected.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        assert!(scale > 1e-3, "the model writes something");
        let error = folded.iter().zip(expected.iter()).fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(error < 1e-12 * scale, "folded vs layer by layer: {error:e} of {scale:e}");
    }
}
