//! Dense all-pairs graphs of one frame's 12 particles, written against [`Ops`].
//!
//! Edge tensors are [B, 12, 12, ·] indexed (frame, src, dst), flattened to rows
//! [B·144, ·] for the layers; node tensors are [B·12, ·]. Summing over the masked
//! src axis is the scatter over incoming edges, with no scatter or gather op.
//! Per-pair scalars (lengths, masks) are [B, 144] and edge vectors components first
//! [B, 3, 144]: ONNX Runtime applies elementwise steps to a tensor whose innermost
//! axis is 1 or 3 element by element (~100× slower than to rows of 144).

use crate::{
    data::{DIMS, PARTICLES},
    e3::SphericalHarmonics,
    nn::Ops,
};

const N: i64 = PARTICLES as i64;

/// edge_vec = pos[src] − pos[dst] components first [B, 3, 144] and its length
/// [B, 144], pairs (src, dst). Per-pair scalars keep the 144 pairs as their innermost
/// axis: runtimes apply elementwise steps to tensors ending in an axis of 1 (or of 3)
/// element by element.
pub fn pairwise<O: Ops>(ops: &mut O, positions: &O::Tensor) -> (O::Tensor, O::Tensor) {
    let d = DIMS as i64;
    // [B·3, 12] · D [12, (src, dst)] with D[k, (i, j)] = δ(k, i) − δ(k, j)
    let by_component = ops.transpose(positions, &[0, 2, 1]);
    let by_component = ops.reshape(&by_component, &[-1, N]);
    let differences: Vec<f64> = (0..PARTICLES)
        .flat_map(|k| (0..PARTICLES * PARTICLES).map(move |p| f64::from(u8::from(p / PARTICLES == k)) - f64::from(u8::from(p % PARTICLES == k))))
        .collect();
    let differences = ops.constant(&[PARTICLES, PARTICLES * PARTICLES], &differences);
    let vec = ops.matmul(&by_component, &differences);
    let vec = ops.reshape(&vec, &[-1, d, N * N]);
    let squared = ops.mul(&vec, &vec);
    let squared = ops.reduce_sum(&squared, 1, false);
    // A particle's distance to itself is 0, where the square root has no gradient;
    // lifting it to 1e-15 keeps gradients finite when positions are themselves
    // trained outputs (stacked attention blocks) and changes no edge.
    let squared = ops.clip(&squared, 1e-30, f64::INFINITY);
    let length = ops.unary(&squared, crate::nn::Unary::Sqrt);
    (vec, length)
}

/// 1 on every pair, [B, 144]: a value that does not depend on the input still has its batch.
pub fn pair_ones<O: Ops>(ops: &mut O, positions: &O::Tensor) -> O::Tensor {
    let ones = ops.constant(&[PARTICLES * PARTICLES], &[1.0; PARTICLES * PARTICLES]);
    ops.repeat_for_batch(positions, &ones)
}

/// 1 on every pair except a particle with itself [144] (broadcasts over frames).
pub fn off_diagonal<O: Ops>(ops: &mut O) -> O::Tensor {
    let values = pairs_where(|src, dst| src != dst);
    ops.constant(&[PARTICLES * PARTICLES], &values)
}

/// 1 on a particle paired with itself [12, 12]: the self-loops.
pub fn self_pairs<O: Ops>(ops: &mut O) -> O::Tensor {
    let values = pairs_where(|src, dst| src == dst);
    ops.constant(&[PARTICLES, PARTICLES], &values)
}

fn pairs_where(keep: impl Fn(usize, usize) -> bool) -> Vec<f64> {
    (0..PARTICLES * PARTICLES).map(|k| if keep(k / PARTICLES, k % PARTICLES) { 1.0 } else { 0.0 }).collect()
}

/// Spherical harmonics of `vec` [B, 3, 144] (components first, as [`pairwise`] gives
/// it) for the degrees `ls` (in order), component normalization, concatenated on the
/// last axis [B, 12, 12, dim]; `ones` [B, 144].
pub fn harmonics<O: Ops>(ops: &mut O, sh: &SphericalHarmonics, ls: &[u32], vec: &O::Tensor, ones: &O::Tensor) -> O::Tensor {
    let components = harmonics_by_component(ops, sh, ls, vec, ones);
    let by_pair = ops.transpose(&components, &[0, 2, 1]);
    ops.reshape(&by_pair, &[-1, N, N, harmonics_dim(ls)])
}

fn harmonics_dim(ls: &[u32]) -> i64 {
    ls.iter().map(|&l| 2 * l as i64 + 1).sum()
}

/// [`harmonics`] laid out components first, [B, dim, 144] (pairs (src, dst)). Each
/// recurrence step's outer product Y^l ⊗ x broadcasts over the 144 pairs rather than
/// over x's 3 components, which runtimes broadcast slowly.
pub fn harmonics_by_component<O: Ops>(ops: &mut O, sh: &SphericalHarmonics, ls: &[u32], vec: &O::Tensor, ones: &O::Tensor) -> O::Tensor {
    let (d, pairs) = (DIMS as i64, N * N);
    let x = ops.reshape(vec, &[-1, 1, d, pairs]);
    let mut by_degree = vec![ops.reshape(ones, &[-1, 1, pairs])];
    for (l, matrix) in sh.matrices().iter().enumerate() {
        let rows = 2 * l as i64 + 1;
        let y = ops.reshape(&by_degree[l], &[-1, rows, 1, pairs]);
        let outer = ops.mul(&y, &x);
        let outer = ops.reshape(&outer, &[-1, rows * d, pairs]);
        let m = ops.constant(&[matrix.ncols(), matrix.nrows()], &matrix.t().iter().copied().collect::<Vec<_>>());
        by_degree.push(ops.matmul(&m, &outer));
    }
    let parts: Vec<O::Tensor> = ls.iter().map(|&l| by_degree[l as usize].clone()).collect();
    if parts.len() == 1 { parts[0].clone() } else { ops.concat(&parts, 1) }
}

/// Node features [B·12, dim] seen from every edge leaving the node: rows [B·144, dim].
pub fn from_sources<O: Ops>(ops: &mut O, nodes: &O::Tensor, dim: usize, ones: &O::Tensor) -> O::Tensor {
    let x = ops.reshape(nodes, &[-1, N, 1, dim as i64]);
    let x = ops.mul(&x, ones);
    ops.reshape(&x, &[-1, dim as i64])
}

/// Edge features [B·144, dim] summed over sources into their destination: [B·12, dim].
pub fn sum_into_destinations<O: Ops>(ops: &mut O, edges: &O::Tensor, dim: usize) -> O::Tensor {
    let x = ops.reshape(edges, &[-1, N, N, dim as i64]);
    let x = ops.reduce_sum(&x, 1, false);
    ops.reshape(&x, &[-1, dim as i64])
}

/// Σ over each destination's sources of node[src] ⊗ edge[src, dst], as
/// [B·12, node_dim·edge_dim]: what [`crate::nn::TensorProduct::forward_summed`] takes
/// to give a product of source nodes and edges summed into each destination.
pub fn outer_sum_into_destinations<O: Ops>(ops: &mut O, nodes: &O::Tensor, node_dim: usize, edges: &O::Tensor, edge_dim: usize) -> O::Tensor {
    let (d1, d2) = (node_dim as i64, edge_dim as i64);
    let x = ops.reshape(nodes, &[-1, N, d1]);
    let x = ops.transpose(&x, &[0, 2, 1]);
    let e = ops.reshape(edges, &[-1, N, N * d2]);
    // [B, d1, src] · [B, src, (dst, d2)]: the sum over sources is the matmul's.
    let sums = ops.matmul(&x, &e);
    let sums = ops.reshape(&sums, &[-1, d1, N, d2]);
    let sums = ops.transpose(&sums, &[0, 2, 1, 3]);
    ops.reshape(&sums, &[-1, d1 * d2])
}

/// Σ over each destination's sources of Σ_b edge[src, dst, b] · node[src, (b, o)], as
/// [B·12, out_dim]: a product of edges with a linear map each source node holds,
/// summed into destinations by one [dst, (src, b)] · [(src, b), o] matmul per frame,
/// with no per-edge tensor.
pub fn contract_into_destinations<O: Ops>(ops: &mut O, nodes: &O::Tensor, edges: &O::Tensor, edge_dim: usize, out_dim: usize) -> O::Tensor {
    let (d2, d3) = (edge_dim as i64, out_dim as i64);
    let by_destination = ops.reshape(edges, &[-1, N, N, d2]);
    let by_destination = ops.transpose(&by_destination, &[0, 2, 1, 3]);
    let by_destination = ops.reshape(&by_destination, &[-1, N, N * d2]);
    let maps = ops.reshape(nodes, &[-1, N * d2, d3]);
    let sums = ops.matmul(&by_destination, &maps);
    ops.reshape(&sums, &[-1, d3])
}

/// Node features [B·12, dim] seen from every edge arriving at the node: rows [B·144, dim].
pub fn from_destinations<O: Ops>(ops: &mut O, nodes: &O::Tensor, dim: usize, ones: &O::Tensor) -> O::Tensor {
    let x = ops.reshape(nodes, &[-1, 1, N, dim as i64]);
    let x = ops.mul(&x, ones);
    ops.reshape(&x, &[-1, dim as i64])
}

/// torch_cluster's radius graph on one frame from the lengths [B, 144]: 1 where
/// 0 < |r| ≤ `radius` between two different particles [B, 144].
pub fn radius_graph<O: Ops>(ops: &mut O, length: &O::Tensor, radius: f64) -> O::Tensor {
    let beyond = ops.greater_than(length, radius);
    let within = ops.scale(&beyond, -1.0);
    let within = ops.add_scalar(&within, 1.0);
    let diagonal = off_diagonal(ops);
    ops.mul(&within, &diagonal)
}

/// The radius graph of the study's GNN and E3 small, with its edge and node features.
pub struct HarmonicGraph<T> {
    /// 1 on the graph's edges [B, 144].
    pub on_graph: T,
    /// Unnormalised spherical harmonics l ≤ lmax of each edge vector, 0 off the graph [B·144, (lmax+1)²].
    pub sh: T,
    /// `sh` laid out components first, [B, (lmax+1)², 144] (pairs (src, dst)).
    pub sh_by_component: T,
    /// Each node's sum of its incoming `sh` over √num_neighbors [B·12, (lmax+1)²].
    pub nodes: T,
}

/// Edges within `radius` (no self-pairs), their harmonics l ≤ `lmax`, and the node sums.
pub fn harmonic_graph<O: Ops>(
    ops: &mut O,
    positions: &O::Tensor,
    harmonics_of: &SphericalHarmonics,
    lmax: u32,
    radius: f64,
    num_neighbors: f64,
) -> HarmonicGraph<O::Tensor> {
    let (vec, length) = pairwise(ops, positions);
    let on_graph = radius_graph(ops, &length, radius);
    let ones = pair_ones(ops, positions);
    let ls: Vec<u32> = (0..=lmax).collect();
    let dim = harmonics_dim(&ls);
    let sh_by_component = harmonics_by_component(ops, harmonics_of, &ls, &vec, &ones);
    let edges = ops.reshape(&on_graph, &[-1, 1, N * N]);
    let sh_by_component = ops.mul(&sh_by_component, &edges);
    let sh = ops.transpose(&sh_by_component, &[0, 2, 1]);
    let sh = ops.reshape(&sh, &[-1, dim]);
    let nodes = sum_into_destinations(ops, &sh, dim as usize);
    let nodes = ops.scale(&nodes, 1.0 / num_neighbors.sqrt());
    HarmonicGraph { on_graph, sh, sh_by_component, nodes }
}

/// Edge features [B·144, dim] averaged over the incoming edges of `on_graph`
/// (1 per edge, ordered as the rows) into their destination: [B·12, dim]. A particle with no incoming
/// edge gets 0, as scatter-mean gives.
pub fn mean_into_destinations<O: Ops>(ops: &mut O, edges: &O::Tensor, dim: usize, on_graph: &O::Tensor) -> O::Tensor {
    let summed = sum_into_destinations(ops, edges, dim);
    per_incoming_edge(ops, &summed, on_graph)
}

/// Node sums over incoming edges [B·12, dim] divided by each node's count of incoming
/// edges of `on_graph` (1 per edge, rows (frame, src, dst)) (a node with none keeps
/// its sum, 0).
pub fn per_incoming_edge<O: Ops>(ops: &mut O, summed: &O::Tensor, on_graph: &O::Tensor) -> O::Tensor {
    let flags = ops.reshape(on_graph, &[-1, 1]);
    let incoming = sum_into_destinations(ops, &flags, 1);
    let incoming = ops.clip(&incoming, 1.0, f64::INFINITY);
    ops.div(summed, &incoming)
}

/// Edge vectors [B, 3, 144] scaled to unit length ([B, 144]); the zero vector stays
/// zero, as with torch's normalisation.
pub fn unit_vectors<O: Ops>(ops: &mut O, vec: &O::Tensor, length: &O::Tensor) -> O::Tensor {
    let safe = ops.clip(length, 1e-12, f64::INFINITY);
    let safe = ops.reshape(&safe, &[-1, 1, N * N]);
    ops.div(vec, &safe)
}

/// e3nn's `soft_unit_step`: exp(−1/x) for x > 0, else 0.
pub fn soft_unit_step<O: Ops>(ops: &mut O, x: &O::Tensor) -> O::Tensor {
    let positive = ops.greater_than(x, 0.0);
    // exp(−1/x) is 0 in f32 and f64 alike below 1e-3, so clipping there changes nothing
    // but keeps −1/x finite.
    let safe = ops.clip(x, 1e-3, f64::INFINITY);
    let minus_one = ops.constant(&[], &[-1.0]);
    let exponent = ops.div(&minus_one, &safe);
    let step = ops.unary(&exponent, crate::nn::Unary::Exp);
    ops.mul(&step, &positive)
}

/// Softmax of `score` over its sources, axis `source_axis`, where `mask` (which
/// broadcasts against it) is 1, as PyG's `softmax` (shifted by the maximum; 1e-16 added
/// to the sum); 0 elsewhere, and 0 for a destination without sources.
pub fn masked_softmax_over_sources<O: Ops>(ops: &mut O, score: &O::Tensor, mask: &O::Tensor, source_axis: usize) -> O::Tensor {
    // Non-edges are pushed far below every edge, so they neither win the maximum nor overflow.
    let kept = ops.mul(score, mask);
    let excluded = ops.add_scalar(mask, -1.0);
    let excluded = ops.scale(&excluded, 1e9);
    let masked = ops.add(&kept, &excluded);
    let max = ops.reduce_max(&masked, source_axis, true);
    let shifted = ops.sub(&masked, &max);
    let exp = ops.unary(&shifted, crate::nn::Unary::Exp);
    let exp = ops.mul(&exp, mask);
    let total = ops.reduce_sum(&exp, source_axis, true);
    let total = ops.add_scalar(&total, 1e-16);
    ops.div(&exp, &total)
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::*;
    use crate::nn::Eager;

    #[test]
    fn contractions_add_each_edge_times_its_source_nodes_map_into_the_destination() {
        let (frames, d2, d3) = (2, 4, 3);
        let nodes = ArrayD::from_shape_fn(IxDyn(&[frames * PARTICLES, d2 * d3]), |ix| ((ix[0] * d2 * d3 + ix[1]) as f64 * 0.23).sin());
        let edges = ArrayD::from_shape_fn(IxDyn(&[frames * PARTICLES * PARTICLES, d2]), |ix| ((ix[0] * d2 + ix[1]) as f64 * 0.37).cos());
        let sums = contract_into_destinations(&mut Eager, &nodes, &edges, d2, d3);
        assert_eq!(sums.shape(), &[frames * PARTICLES, d3]);
        for f in 0..frames {
            for dst in 0..PARTICLES {
                for o in 0..d3 {
                    let expected: f64 = (0..PARTICLES)
                        .flat_map(|src| (0..d2).map(move |b| (src, b)))
                        .map(|(src, b)| edges[[(f * PARTICLES + src) * PARTICLES + dst, b]] * nodes[[f * PARTICLES + src, b * d3 + o]])
                        .sum();
                    let actual = sums[[f * PARTICLES + dst, o]];
                    assert!((actual - expected).abs() < 1e-12, "frame {f}, dst {dst}, {o}: {actual} vs {expected}");
                }
            }
        }
    }

    #[test]
    fn outer_sums_add_each_source_node_times_its_edge_into_the_destination() {
        let (frames, d1, d2) = (2, 3, 4);
        let nodes = ArrayD::from_shape_fn(IxDyn(&[frames * PARTICLES, d1]), |ix| ((ix[0] * d1 + ix[1]) as f64 * 0.31).sin());
        let edges = ArrayD::from_shape_fn(IxDyn(&[frames * PARTICLES * PARTICLES, d2]), |ix| ((ix[0] * d2 + ix[1]) as f64 * 0.17).cos());
        let sums = outer_sum_into_destinations(&mut Eager, &nodes, d1, &edges, d2);
        assert_eq!(sums.shape(), &[frames * PARTICLES, d1 * d2]);
        for f in 0..frames {
            for dst in 0..PARTICLES {
                for (a, b) in (0..d1).flat_map(|a| (0..d2).map(move |b| (a, b))) {
                    let expected: f64 = (0..PARTICLES).map(|src| nodes[[f * PARTICLES + src, a]] * edges[[(f * PARTICLES + src) * PARTICLES + dst, b]]).sum();
                    let actual = sums[[f * PARTICLES + dst, a * d2 + b]];
                    assert!((actual - expected).abs() < 1e-12, "frame {f}, dst {dst}, ({a}, {b}): {actual} vs {expected}");
                }
            }
        }
    }
}
