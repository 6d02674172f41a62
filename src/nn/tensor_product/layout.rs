//! How blocks of irreps are laid out, and the row-wise products the other parts share.

use crate::{
    e3::{Irreps, wigner_3j},
    nn::ops::Ops,
};

/// The 3j symbol C(l1, l2, l3) as a [d2, d3·d1] matrix: row j, column (k, i).
pub(crate) fn cg_columns_ki(l1: u32, l2: u32, l3: u32) -> Vec<f64> {
    let cg = wigner_3j(l1, l2, l3);
    let (d1, d2, d3) = (cg.shape()[0], cg.shape()[1], cg.shape()[2]);
    (0..d2).flat_map(|j| (0..d3).flat_map(move |k| (0..d1).map(move |i| (i, j, k)))).map(|(i, j, k)| cg[[i, j, k]]).collect()
}

/// How an irrep's block of mul·(2l+1) numbers is ordered: e3nn's (mul, 2l+1), or
/// (2l+1, mul) with the channels innermost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockLayout {
    MulFirst,
    ChannelsLast,
}

/// x [..., irreps.dim()] (rank `rank`) with each irrep's block (mul, 2l+1) turned to
/// (2l+1, mul).
pub(super) fn channels_last<O: Ops>(ops: &mut O, x: &O::Tensor, irreps: &Irreps, rank: usize) -> O::Tensor {
    let last = rank - 1;
    let keep = vec![0i64; last];
    let mut swap: Vec<usize> = (0..rank + 1).collect();
    swap.swap(last, rank);
    let blocks: Vec<O::Tensor> = irreps
        .slices()
        .iter()
        .zip(irreps.iter())
        .map(|(range, m)| {
            let block = ops.slice(x, last, range.start, range.end);
            if m.mul == 1 || m.ir.dim() == 1 {
                return block;
            }
            let block = ops.reshape(&block, &[keep.clone(), vec![m.mul as i64, m.ir.dim() as i64]].concat());
            let block = ops.transpose(&block, &swap);
            ops.reshape(&block, &[keep.clone(), vec![m.dim() as i64]].concat())
        })
        .collect();
    if blocks.len() == 1 { blocks.into_iter().next().expect("one block") } else { ops.concat(&blocks, last) }
}

/// out[m, n] = Σ_k a[m, k] b[n, k] row by row, for a [rows, m, k] and b [rows, n·k]:
/// one batched matmul of a with b transposed, which runtimes fold into the matmul. (A
/// broadcast product summed over k, with k innermost, runs element by element in
/// ONNX Runtime: 4× slower for [4608, 8, 5] · [4608, 5, 5].)
pub(super) fn rowwise_matmul<O: Ops>(ops: &mut O, a: &O::Tensor, b: &O::Tensor, m: i64, k: i64, n: i64) -> O::Tensor {
    let a = ops.reshape(a, &[-1, m, k]);
    let b = ops.reshape(b, &[-1, n, k]);
    let b = ops.transpose(&b, &[0, 2, 1]);
    ops.matmul(&a, &b)
}

/// Sums `x` over `axis` of the given size, giving `result_shape`; a size-1 axis is
/// dropped by a reshape, which runtimes do not compute.
pub(super) fn sum_axis<O: Ops>(ops: &mut O, x: &O::Tensor, axis: usize, size: i64, result_shape: &[i64]) -> O::Tensor {
    if size == 1 { ops.reshape(x, result_shape) } else { ops.reduce_sum(x, axis, false) }
}
