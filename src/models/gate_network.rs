//! e3nn's `gate_points_2101.Network` (the study's "E3 large"): convolutions whose
//! filters are tensor products of neighbour features with the edges' spherical
//! harmonics, weighted by a radial network, each followed by a gate.
//!
//! Graphs are dense: all ordered pairs of the 12 particles of a frame, with a mask
//! for 0 < |r| < max_radius (e3nn's radius graph, edge_vec = pos[src] − pos[dst]).
//! Summing over the masked all-pairs layout is exactly the scatter over edges, and it
//! exports to ONNX without scatter or gather.

use std::{collections::HashMap, ops::Range};

use serde::{Deserialize, Serialize};

use super::{
    ModelInputs, OpsModel,
    graph::{harmonics_by_component, off_diagonal, pair_ones, pairwise, unit_vectors},
    history::window_displacements,
};
use crate::{
    data::{DIMS, PARTICLES},
    e3::{Irrep, Irreps, SphericalHarmonics, radial::Activation, wigner_3j},
    nn::{BlockLayout, FullyConnectedNet, Gate, Mode, Ops, TensorProduct, Unary},
};

/// The constructor arguments of `gate_points_2101.Network`, as e3nn takes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateNetworkConfig {
    pub irreps_in: Option<String>,
    pub irreps_hidden: String,
    pub irreps_out: String,
    pub irreps_node_attr: Option<String>,
    pub irreps_edge_attr: String,
    pub layers: usize,
    pub max_radius: f64,
    pub number_of_basis: usize,
    pub radial_layers: usize,
    pub radial_neurons: usize,
    pub num_neighbors: f64,
    pub num_nodes: f64,
    #[serde(default = "reduce_output_default")]
    pub reduce_output: bool,
}

fn reduce_output_default() -> bool {
    true
}

impl GateNetworkConfig {
    /// The study's "E3 large" (102,905 parameters).
    pub fn study() -> Self {
        Self {
            irreps_in: None,
            irreps_hidden: "8x0e+8x0o+16x1e+16x1o+8x2e+8x2o".into(),
            irreps_out: "1x1o".into(),
            irreps_node_attr: None,
            irreps_edge_attr: "1x0e+1x1o+1x2e+1x3o".into(),
            layers: 3,
            max_radius: 3.5,
            number_of_basis: 10,
            radial_layers: 1,
            radial_neurons: 128,
            num_neighbors: 11.0,
            num_nodes: 12.0,
            reduce_output: false,
        }
    }
}

/// One `Convolution` of the network.
#[derive(Debug, Clone)]
pub struct Convolution {
    pub sc: TensorProduct,
    pub lin1: TensorProduct,
    pub fc: FullyConnectedNet,
    pub tp: TensorProduct,
    pub lin2: TensorProduct,
    num_neighbors: f64,
}

fn path_exists(a: &Irreps, b: &Irreps, ir: Irrep) -> bool {
    let (a, b) = (a.simplify(), b.simplify());
    a.iter().any(|x| b.iter().any(|y| ir.in_product(x.ir, y.ir)))
}

impl Convolution {
    fn new(irreps_in: &Irreps, node_attr: &Irreps, edge_attr: &Irreps, irreps_out: &Irreps, config: &GateNetworkConfig) -> Self {
        let sc = TensorProduct::fully_connected(irreps_in.clone(), node_attr.clone(), irreps_out.clone(), true);
        let lin1 = TensorProduct::fully_connected(irreps_in.clone(), node_attr.clone(), irreps_in.clone(), true);
        let mut mid = Vec::new();
        let mut instructions = Vec::new();
        for (i, a) in irreps_in.iter().enumerate() {
            for (j, b) in edge_attr.iter().enumerate() {
                for ir in a.ir.product(b.ir) {
                    if irreps_out.contains(ir) {
                        instructions.push((i, j, mid.len(), Mode::Uvu, true));
                        mid.push((a.mul, ir));
                    }
                }
            }
        }
        let (mid, perm) = Irreps::new(mid).sort();
        let instructions: Vec<_> = instructions.into_iter().map(|(i, j, k, mode, w)| (i, j, perm[k], mode, w)).collect();
        let tp =
            TensorProduct::new(irreps_in.clone(), edge_attr.clone(), mid.clone(), &instructions, false).expect("convolution paths are valid by construction");
        let mut hs = vec![config.number_of_basis];
        hs.extend(std::iter::repeat_n(config.radial_neurons, config.radial_layers));
        hs.push(tp.weight_numel);
        let fc = FullyConnectedNet::new(hs, Activation::Silu);
        let lin2 = TensorProduct::fully_connected(mid, node_attr.clone(), irreps_out.clone(), true);
        Self { sc, lin1, fc, tp, lin2, num_neighbors: config.num_neighbors }
    }

    fn num_params(&self) -> usize {
        self.sc.weight_numel + self.lin1.weight_numel + self.fc.num_params() + self.lin2.weight_numel
    }

    /// nodes [B·12, dim_in], node_attr [B·12, dim_attr] → [B·12, dim_out].
    fn forward<O: Ops>(
        &self,
        ops: &mut O,
        nodes: &O::Tensor,
        node_attr: &O::Tensor,
        edges: &EdgeTensors<O::Tensor>,
        harmonics: &mut ProjectedHarmonics<O::Tensor>,
    ) -> O::Tensor {
        // The radial net's outputs are each path's weights in turn; a group of paths
        // takes its paths' columns side by side.
        let groups = self.paths_by_harmonics();
        let mut path_columns: Vec<Range<usize>> = Vec::with_capacity(self.tp.instructions.len());
        let mut end = 0;
        for ins in &self.tp.instructions {
            let start = end;
            end += ins.path_shape.iter().product::<usize>();
            path_columns.push(start..end);
        }
        let group_columns: Vec<Vec<_>> = groups.iter().map(|group| group.iter().map(|&p| path_columns[p].clone()).collect()).collect();
        let weights = self.fc.forward_column_groups(ops, &edges.radial_basis, &group_columns);
        let weights = weights.into_iter().zip(&group_columns).map(|(w, columns)| edges.per_edge(ops, &w, columns.iter().map(|c| c.len()).sum())).collect();
        let s = self.sc.forward(ops, nodes, node_attr, None);
        let x = self.lin1.forward_channels_last(ops, nodes, node_attr);
        let messages = self.messages_into_destinations(ops, &x, edges, harmonics, &groups, weights);
        // Each message is one path's output: its √α and e3nn's 1/√num_neighbors scale
        // it before lin2, so they are folded into lin2's matrices.
        let mut scales = vec![0.0; self.tp.irreps_out.len()];
        for ins in &self.tp.instructions {
            scales[ins.i_out] = ins.path_weight / self.num_neighbors.sqrt();
        }
        let x = self.lin2.forward_linear(ops, &messages, BlockLayout::ChannelsLast, &scales, node_attr);
        // Outputs the self-connection writes are mixed at angle π/8; the rest pass.
        let (c_s, c_x) = ((std::f64::consts::PI / 8.0).sin(), (std::f64::consts::PI / 8.0).cos());
        let mask = self.sc.output_mask();
        let c_x: Vec<f64> = mask.iter().map(|m| (1.0 - m) + c_x * m).collect();
        let c_x = ops.constant(&[c_x.len()], &c_x);
        let s = ops.scale(&s, c_s);
        let x = ops.mul(&x, &c_x);
        ops.add(&s, &x)
    }
}

impl Convolution {
    /// The paths of tp, by index, grouped by the projected harmonics they read (the
    /// edge harmonic and the degrees in and out): paths that differ only by their input
    /// irrep's parity, contracted in one matmul.
    fn paths_by_harmonics(&self) -> Vec<Vec<usize>> {
        let tp = &self.tp;
        let mut groups: Vec<((usize, u32, u32), Vec<usize>)> = Vec::new();
        for (p, ins) in tp.instructions.iter().enumerate() {
            let key = (ins.i_in2, tp.irreps_in1.0[ins.i_in1].ir.l, tp.irreps_out.0[ins.i_out].ir.l);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push(p),
                None => groups.push((key, vec![p])),
            }
        }
        groups.into_iter().map(|(_, group)| group).collect()
    }

    /// Each uvu path of tp(x[src] ⊗ attr, weight) summed over the node's incoming edges,
    /// unscaled, as [B·12, (2l+1)·u] (channels last), one per entry of tp's output (each
    /// is one path's); x's irreps are laid out channels last, (2l+1, mul) too.
    /// Contracted per destination and group of paths (`paths_by_harmonics`, their
    /// channels side by side, Σu): the per-edge weights times the source features form
    /// [(i, src), Σu], the harmonics times the 3j symbol form [k, (i, src)], and one
    /// batched matmul of the second with the first sums over sources and i together.
    /// No per-edge message tensor is made, and no operand needs a transpose: the
    /// weights [dst, 1, (src, Σu)] times the sources [1, i, (src, Σu)] broadcast only
    /// outer axes, so runtimes multiply whole rows (broadcasting the short u axis
    /// innermost ran element by element).
    /// `weights` are each group's per-edge weights [B·144, Σu], rows (frame, dst, src).
    fn messages_into_destinations<O: Ops>(
        &self,
        ops: &mut O,
        x: &O::Tensor,
        edges: &EdgeTensors<O::Tensor>,
        harmonics: &mut ProjectedHarmonics<O::Tensor>,
        groups: &[Vec<usize>],
        weights: Vec<O::Tensor>,
    ) -> Vec<O::Tensor> {
        let tp = &self.tp;
        let n = PARTICLES as i64;
        let in1 = tp.irreps_in1.slices();
        let mut sources: HashMap<Vec<usize>, O::Tensor> = HashMap::new();
        let mut messages: Vec<Option<O::Tensor>> = vec![None; tp.irreps_out.len()];
        for (group, group_weight) in groups.iter().zip(weights) {
            let paths: Vec<_> = group.iter().map(|&p| &tp.instructions[p]).collect();
            for ins in &paths {
                let b = tp.irreps_in2.0[ins.i_in2];
                assert!(ins.mode == Mode::Uvu && ins.has_weight && b.mul == 1, "convolutions build weighted uvu paths on single harmonics");
            }
            let (first, inputs) = (paths[0], paths.iter().map(|ins| ins.i_in1).collect::<Vec<_>>());
            let (a, b, c) = (tp.irreps_in1.0[first.i_in1], tp.irreps_in2.0[first.i_in2], tp.irreps_out.0[first.i_out]);
            let (d1, d3) = (a.ir.dim() as i64, c.ir.dim() as i64);
            let muls: Vec<i64> = inputs.iter().map(|&i| tp.irreps_in1.0[i].mul as i64).collect();
            let width: i64 = muls.iter().sum();
            let group_weight = ops.reshape(&group_weight, &[-1, n, 1, n * width]);
            // [B·12, (i, u)] per input → [B, 1, i, (src, Σu)]
            let source = sources
                .entry(inputs.clone())
                .or_insert_with(|| {
                    let parts: Vec<O::Tensor> = inputs
                        .iter()
                        .zip(&muls)
                        .map(|(&input, &u)| {
                            let part = ops.slice(x, 1, in1[input].start, in1[input].end);
                            ops.reshape(&part, &[-1, n, d1, u])
                        })
                        .collect();
                    let source = if parts.len() == 1 { parts[0].clone() } else { ops.concat(&parts, 3) };
                    let source = ops.transpose(&source, &[0, 2, 1, 3]);
                    ops.reshape(&source, &[-1, 1, d1, n * width])
                })
                .clone();
            // [B, dst, i, (src, Σu)] → [B·dst, (i, src), Σu]
            let weighted = ops.mul(&group_weight, &source);
            let weighted = ops.reshape(&weighted, &[-1, d1 * n, width]);
            let projected = harmonics.get(ops, edges, first.i_in2, a.ir.l, b.ir.l, c.ir.l);
            // [B·dst, k, Σu]
            let out = ops.matmul(&projected, &weighted);
            let mut offset = 0;
            for (ins, &u) in paths.iter().zip(&muls) {
                let part = if paths.len() == 1 { out.clone() } else { ops.slice(&out, 2, offset as usize, (offset + u) as usize) };
                offset += u;
                messages[ins.i_out] = Some(ops.reshape(&part, &[-1, d3 * u]));
            }
        }
        messages.into_iter().map(|m| m.expect("each output of the convolution's product is one path's")).collect()
    }
}

/// Per-edge inputs shared by all convolutions.
struct EdgeTensors<T> {
    /// smooth_cutoff(|r| / max_radius) · Y(r̂) of each destination's incoming edges,
    /// zero off the radius graph, sources last [B·12 dst, dim_sh, 12 src].
    attr: T,
    /// The start of each harmonic of `irreps_edge_attr` within attr's dim_sh.
    attr_offsets: Vec<usize>,
    /// Gaussian basis of |r| times √number_of_basis, one row per pair of distinct
    /// particles (|r_ij| = |r_ji|, so the radial networks run on 66 pairs a frame, not
    /// 144) [B·66, number_of_basis].
    radial_basis: T,
    /// For each edge (dst, src), the row of its pair within a frame; a self-edge
    /// (whose harmonics are zero) reads pair 0.
    pair_of_edge: Vec<usize>,
}

impl<T> EdgeTensors<T> {
    /// Per-pair values [B·66, width] → per-edge [B·144, width], rows (frame, dst, src).
    fn per_edge<O: Ops<Tensor = T>>(&self, ops: &mut O, by_pair: &T, width: usize) -> T {
        let by_pair = ops.reshape(by_pair, &[-1, DISTINCT_PAIRS as i64, width as i64]);
        let by_edge = ops.gather(&by_pair, 1, &self.pair_of_edge);
        ops.reshape(&by_edge, &[-1, width as i64])
    }
}

/// The edge harmonics contracted with a 3j symbol, H[k, (i, src)] = Σ_j C[i, j, k] Y_j
/// [B·12 dst, 2l3+1, (2l1+1)·12], made once per forward for every convolution that
/// reads them: they depend only on the edges and the degrees.
struct ProjectedHarmonics<T>(HashMap<(usize, u32, u32), T>);

impl<T: Clone> ProjectedHarmonics<T> {
    fn get<O: Ops<Tensor = T>>(&mut self, ops: &mut O, edges: &EdgeTensors<T>, harmonic: usize, l1: u32, l2: u32, l3: u32) -> T {
        self.0
            .entry((harmonic, l1, l3))
            .or_insert_with(|| {
                let cg = wigner_3j(l1, l2, l3);
                let (d1, d2, d3) = (cg.shape()[0], cg.shape()[1], cg.shape()[2]);
                // Row (k, i), column j.
                let cg_ki_j: Vec<f64> =
                    (0..d3).flat_map(|k| (0..d1).flat_map(move |i| (0..d2).map(move |j| (i, j, k)))).map(|(i, j, k)| cg[[i, j, k]]).collect();
                let cg_ki_j = ops.constant(&[d3 * d1, d2], &cg_ki_j);
                let start = edges.attr_offsets[harmonic];
                let y = ops.slice(&edges.attr, 1, start, start + d2);
                // [B·dst, (k, i), src] → [B·dst, k, (i, src)]
                let projected = ops.matmul(&cg_ki_j, &y);
                ops.reshape(&projected, &[-1, d3 as i64, (d1 * PARTICLES) as i64])
            })
            .clone()
    }
}

/// Pairs {i, j} with i < j of a frame's particles.
const DISTINCT_PAIRS: usize = PARTICLES * (PARTICLES - 1) / 2;

/// The pairs of distinct particles as indices i·12 + j (i < j) into a frame's ordered
/// pairs, and for each ordered pair (a, b), at a·12 + b, the position of {a, b} among
/// them (0 for a = b).
fn distinct_pairs() -> (Vec<usize>, Vec<usize>) {
    let pairs: Vec<usize> = (0..PARTICLES).flat_map(|i| (i + 1..PARTICLES).map(move |j| i * PARTICLES + j)).collect();
    let position = |i: usize, j: usize| match i == j {
        true => 0,
        false => pairs.iter().position(|&p| p == i.min(j) * PARTICLES + i.max(j)).expect("every pair is listed"),
    };
    let pair_of_edge = (0..PARTICLES * PARTICLES).map(|e| position(e / PARTICLES, e % PARTICLES)).collect();
    (pairs, pair_of_edge)
}

#[derive(Debug, Clone)]
pub struct GateNetwork {
    pub config: GateNetworkConfig,
    /// Convolution, then the gate that follows it (none after the last).
    pub layers: Vec<(Convolution, Option<Gate>)>,
    edge_attr: Irreps,
    /// Degrees of the edge harmonics, in the order of `irreps_edge_attr`.
    edge_ls: Vec<u32>,
    harmonics: SphericalHarmonics,
}

#[derive(Debug, thiserror::Error)]
pub enum GateNetworkError {
    #[error("kwargs: {0}")]
    Config(String),
    #[error("weights: {0}")]
    Weights(String),
}

fn parse_irreps(value: &str, key: &str) -> Result<Irreps, GateNetworkError> {
    value.parse().map_err(|e| GateNetworkError::Config(format!("{key}: {e}")))
}

impl GateNetwork {
    /// Builds the network as e3nn does for these kwargs (weights all zero).
    pub fn new(config: GateNetworkConfig) -> Result<Self, GateNetworkError> {
        let invalid = |m: String| Err(GateNetworkError::Config(m));
        // Node inputs: none (ones), or the window's displacements, newest first, one 1o each.
        let irreps_in = match &config.irreps_in {
            None => "0e".parse::<Irreps>().expect("valid"),
            Some(text) => {
                let irreps = parse_irreps(text, "irreps_in")?;
                let displacements = irreps.len() == 1 && irreps.0[0].ir == Irrep::new(1, -1) && irreps.0[0].mul >= 1;
                if !displacements {
                    return invalid(format!(
                        "irreps_in = {text:?}: node inputs are the window's past displacements, so it must be null or Nx1o (N = frames − 1)"
                    ));
                }
                irreps
            }
        };
        if let Some(attr) = &config.irreps_node_attr {
            return invalid(format!("irreps_node_attr = {attr:?}: served models have no node attributes, so it must be null"));
        }
        if config.reduce_output {
            return invalid("reduce_output = true sums over particles; a per-particle dx needs false".into());
        }
        let irreps_out = parse_irreps(&config.irreps_out, "irreps_out")?;
        if irreps_out != "1x1o".parse::<Irreps>().expect("valid") {
            return invalid(format!("irreps_out = {:?}: dx is one vector per particle, so it must be 1x1o", config.irreps_out));
        }
        if config.number_of_basis < 2 {
            return invalid("number_of_basis must be at least 2 (the Gaussian basis needs a spacing)".into());
        }
        // Written so that NaN fails too.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(config.max_radius > 0.0) || !(config.num_neighbors > 0.0) {
            return invalid("max_radius and num_neighbors must be positive".into());
        }
        let hidden = parse_irreps(&config.irreps_hidden, "irreps_hidden")?;
        let edge_attr = parse_irreps(&config.irreps_edge_attr, "irreps_edge_attr")?;
        // The edge attributes are spherical harmonics of the edge vector (a polar vector,
        // or a pseudovector when some odd l is even).
        let input_parity: i8 = if edge_attr.iter().any(|m| m.ir.l % 2 == 1 && m.ir.p == 1) { 1 } else { -1 };
        let mut edge_ls = Vec::new();
        for m in edge_attr.iter() {
            let expected = if m.ir.l % 2 == 0 { 1 } else { input_parity };
            if m.ir.p != expected {
                return invalid(format!("irreps_edge_attr = {edge_attr}: {} is not a spherical harmonic of one vector", m.ir));
            }
            edge_ls.extend(std::iter::repeat_n(m.ir.l, m.mul));
        }
        if input_parity == 1 {
            return invalid("irreps_edge_attr with pseudovector harmonics (odd l with even parity) do not apply to positions".into());
        }
        let node_attr: Irreps = "0e".parse().expect("valid");
        let mut irreps = irreps_in;
        let mut layers = Vec::new();
        for _ in 0..config.layers {
            let scalars = Irreps(hidden.iter().filter(|m| m.ir.l == 0 && path_exists(&irreps, &edge_attr, m.ir)).copied().collect());
            let gated = Irreps(hidden.iter().filter(|m| m.ir.l > 0 && path_exists(&irreps, &edge_attr, m.ir)).copied().collect());
            let gate_ir = if path_exists(&irreps, &edge_attr, Irrep::new(0, 1)) { Irrep::new(0, 1) } else { Irrep::new(0, -1) };
            let gates = Irreps::new(gated.iter().map(|m| (m.mul, gate_ir)));
            let act = |ir: Irrep| if ir.p == 1 { Activation::Silu } else { Activation::Tanh };
            let act_gate = |ir: Irrep| if ir.p == 1 { Activation::Sigmoid } else { Activation::Tanh };
            let gate =
                Gate::new(scalars.clone(), scalars.iter().map(|m| act(m.ir)).collect(), gates.clone(), gates.iter().map(|m| act_gate(m.ir)).collect(), gated)
                    .map_err(|e| GateNetworkError::Config(e.to_string()))?;
            let conv = Convolution::new(&irreps, &node_attr, &edge_attr, &gate.irreps_in, &config);
            irreps = gate.irreps_out.clone();
            layers.push((conv, Some(gate)));
        }
        layers.push((Convolution::new(&irreps, &node_attr, &edge_attr, &irreps_out, &config), None));
        let harmonics = SphericalHarmonics::new(edge_ls.iter().copied().max().unwrap_or(0));
        Ok(Self { config, layers, edge_attr, edge_ls, harmonics })
    }

    pub fn num_params(&self) -> usize {
        self.layers.iter().map(|(conv, _)| conv.num_params()).sum()
    }

    /// The names and shapes of the trainable tensors, as in e3nn's state dict.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let last = self.layers.len() - 1;
        let mut out = Vec::new();
        for (i, (conv, _)) in self.layers.iter().enumerate() {
            let prefix = if i == last { format!("layers.{i}.") } else { format!("layers.{i}.first.") };
            out.push((format!("{prefix}sc.weight"), vec![conv.sc.weight_numel]));
            out.push((format!("{prefix}lin1.weight"), vec![conv.lin1.weight_numel]));
            for (k, w) in conv.fc.hs.windows(2).enumerate() {
                out.push((format!("{prefix}fc.layer{k}.weight"), vec![w[0], w[1]]));
            }
            out.push((format!("{prefix}lin2.weight"), vec![conv.lin2.weight_numel]));
        }
        out
    }

    /// Sets every weight from an e3nn state dict (name → (shape, row-major values)).
    /// Buffers e3nn stores beside them (output masks, Wigner 3j, empty weights) are
    /// accepted and ignored; anything else is an error, as is a missing tensor.
    pub fn load_state_dict(&mut self, tensors: &HashMap<String, (Vec<usize>, Vec<f64>)>) -> Result<(), GateNetworkError> {
        let expected = self.parameter_shapes();
        for (name, (shape, _)) in tensors {
            let known = expected.iter().any(|(n, _)| n == name);
            let buffer = name.ends_with(".output_mask") || name.contains("._w3j_") || shape.iter().product::<usize>() == 0;
            if !known && !buffer {
                return Err(GateNetworkError::Weights(format!("unexpected tensor '{name}' (shape {shape:?}) for these kwargs")));
            }
        }
        let take = |name: &str, shape: &[usize]| -> Result<Vec<f64>, GateNetworkError> {
            let (found, values) = tensors.get(name).ok_or_else(|| GateNetworkError::Weights(format!("missing tensor '{name}' (shape {shape:?})")))?;
            if found.as_slice() != shape {
                return Err(GateNetworkError::Weights(format!("tensor '{name}' has shape {found:?}, expected {shape:?}")));
            }
            Ok(values.clone())
        };
        let mut shapes = expected.into_iter();
        for (conv, _) in &mut self.layers {
            let mut next = || shapes.next().expect("one shape per tensor");
            let (name, shape) = next();
            conv.sc.set_weight(take(&name, &shape)?).map_err(|e| GateNetworkError::Weights(format!("{name}: {e}")))?;
            let (name, shape) = next();
            conv.lin1.set_weight(take(&name, &shape)?).map_err(|e| GateNetworkError::Weights(format!("{name}: {e}")))?;
            for k in 0..conv.fc.weights.len() {
                let (name, shape) = next();
                conv.fc.weights[k] = take(&name, &shape)?;
            }
            let (name, shape) = next();
            conv.lin2.set_weight(take(&name, &shape)?).map_err(|e| GateNetworkError::Weights(format!("{name}: {e}")))?;
        }
        Ok(())
    }

    /// Every trainable weight vector, in state-dict order.
    fn weight_vectors(&mut self) -> Vec<&mut Vec<f64>> {
        let mut out = Vec::new();
        for (conv, _) in &mut self.layers {
            let Convolution { sc, lin1, fc, lin2, .. } = conv;
            out.extend(sc.weight.as_mut());
            out.extend(lin1.weight.as_mut());
            out.extend(fc.weights.iter_mut());
            out.extend(lin2.weight.as_mut());
        }
        out
    }
}

impl OpsModel for GateNetwork {
    /// One frame, or 1 + N for node inputs Nx1o (the window's N displacements).
    fn history_frames(&self) -> usize {
        self.config.irreps_in.as_ref().and_then(|text| text.parse::<Irreps>().ok()).map_or(1, |irreps| 1 + irreps.num_irreps())
    }

    fn weights_mut(&mut self) -> Vec<&mut Vec<f64>> {
        self.weight_vectors()
    }

    fn num_params(&self) -> usize {
        GateNetwork::num_params(self)
    }

    /// positions [B, 12, 3] → per-particle vectors [B, 12, 3].
    fn forward<O: Ops>(&self, ops: &mut O, inputs: &ModelInputs<O::Tensor>) -> O::Tensor {
        let positions = inputs.positions;
        let (n, d) = (PARTICLES as i64, DIMS as i64);
        // pairwise gives pos[i] − pos[j] at pair (i, j); with i the destination and j the
        // source, e3nn's edge_vec = pos[src] − pos[dst] is its negative (lengths agree).
        let (vec, length) = pairwise(ops, positions);
        let vec = ops.scale(&vec, -1.0);
        let inside = ops.less_than(&length, self.config.max_radius);
        let distinct = off_diagonal(ops);
        let on_graph = ops.mul(&inside, &distinct);
        let ones = pair_ones(ops, positions);

        // Harmonics of the unit vector (e3nn: normalize=True, component), the zero
        // vector staying zero as with torch's normalize.
        let unit = unit_vectors(ops, &vec, &length);
        let sh = harmonics_by_component(ops, &self.harmonics, &self.edge_ls, &unit, &ones);

        // smooth_cutoff(|r| / max_radius) = (1 − cos(π·clip(2(x − 1), −1, 0))) / 2
        let u = ops.scale(&length, 2.0 / self.config.max_radius);
        let u = ops.add_scalar(&u, -2.0);
        let u = ops.clip(&u, -1.0, 0.0);
        let u = ops.scale(&u, std::f64::consts::PI);
        let cos = ops.unary(&u, Unary::Cos);
        let cutoff = ops.scale(&cos, -0.5);
        let cutoff = ops.add_scalar(&cutoff, 0.5);
        let weight = ops.mul(&cutoff, &on_graph);
        let weight = ops.reshape(&weight, &[-1, 1, n * n]);
        let attr = ops.mul(&sh, &weight);
        // [B, dim_sh, dst, src] → [B·dst, dim_sh, src]
        let dim_sh = self.edge_attr.dim() as i64;
        let attr = ops.reshape(&attr, &[-1, dim_sh, n, n]);
        let attr = ops.transpose(&attr, &[0, 2, 1, 3]);
        let attr = ops.reshape(&attr, &[-1, dim_sh, n]);
        let attr_offsets = self.edge_attr.slices().iter().map(|range| range.start).collect();

        // Gaussian basis on [0, max_radius] without cutoff, times √number_of_basis.
        let basis = self.config.number_of_basis;
        let step = self.config.max_radius / (basis - 1) as f64;
        let centres: Vec<f64> = (0..basis).map(|i| i as f64 * step).collect();
        let centres = ops.constant(&[basis], &centres);
        let (pairs, pair_of_edge) = distinct_pairs();
        let pair_length = ops.reshape(&length, &[-1, n * n, 1]);
        let pair_length = ops.gather(&pair_length, 1, &pairs);
        let diff = ops.sub(&pair_length, &centres);
        let diff = ops.scale(&diff, 1.0 / step);
        let diff = ops.mul(&diff, &diff);
        let diff = ops.unary(&diff, Unary::Neg);
        let gaussian = ops.unary(&diff, Unary::Exp);
        let radial_basis = ops.scale(&gaussian, (basis as f64).sqrt() / 1.12);
        let radial_basis = ops.reshape(&radial_basis, &[-1, basis as i64]);
        let edges = EdgeTensors { attr, attr_offsets, radial_basis, pair_of_edge };
        let mut projected_harmonics = ProjectedHarmonics(HashMap::new());

        // Node features and attributes are ones (irreps 0e), one row per particle.
        let node_ones = ops.constant(&[PARTICLES, 1], &[1.0; PARTICLES]);
        let node_ones = ops.repeat_for_batch(positions, &node_ones);
        let node_ones = ops.reshape(&node_ones, &[-1, 1]);
        let mut x = match inputs.previous {
            // [B, 36, N] newest first → [B·12, (N, xyz)], e3nn's (mul, 2l+1) layout.
            Some(previous) => {
                let frames = self.history_frames();
                let displacements = window_displacements(ops, positions, previous, frames);
                let displacements = ops.reshape(&displacements, &[-1, n, d, (frames - 1) as i64]);
                let displacements = ops.transpose(&displacements, &[0, 1, 3, 2]);
                ops.reshape(&displacements, &[-1, d * (frames - 1) as i64])
            }
            None => node_ones.clone(),
        };
        for (conv, gate) in &self.layers {
            x = conv.forward(ops, &x, &node_ones, &edges, &mut projected_harmonics);
            if let Some(gate) = gate {
                x = gate.forward(ops, &x);
            }
        }
        ops.reshape(&x, &[-1, n, d])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_edge_between_distinct_particles_reads_its_pair() {
        let (pairs, pair_of_edge) = distinct_pairs();
        assert_eq!(pairs.len(), DISTINCT_PAIRS);
        for (edge, &pair) in pair_of_edge.iter().enumerate() {
            let (a, b) = (edge / PARTICLES, edge % PARTICLES);
            if a != b {
                assert_eq!(pairs[pair], a.min(b) * PARTICLES + a.max(b), "edge ({a}, {b})");
            }
        }
    }
}
