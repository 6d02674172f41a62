//! What history models read from a window of frames, written against [`Ops`].

use crate::{data::FRAME_LEN, nn::Ops};

/// The window's displacements as [B, 36, K−1]: column k − 1 is x(t−k+1) − x(t−k),
/// newest first, for positions [B, 12, 3] and previous [B, K−1, 12, 3] (oldest
/// first). One matmul of the window with a ±1 difference matrix (exact).
pub fn window_displacements<O: Ops>(ops: &mut O, positions: &O::Tensor, previous: &O::Tensor, history_frames: usize) -> O::Tensor {
    let k = history_frames;
    let frame = ops.reshape(positions, &[-1, 1, FRAME_LEN as i64]);
    let earlier = ops.reshape(previous, &[-1, (k - 1) as i64, FRAME_LEN as i64]);
    // [B, K, 36], oldest first: frame w is x(t − K + 1 + w).
    let window = ops.concat(&[earlier, frame], 1);
    let window = ops.transpose(&window, &[0, 2, 1]);
    // D[w, k − 1] = +1 at w = K − k (x(t−k+1)), −1 at w = K − k − 1 (x(t−k)).
    let differences: Vec<f64> = (0..k)
        .flat_map(|w| {
            (1..k).map(move |step| {
                if w == k - step {
                    1.0
                } else if w + 1 == k - step {
                    -1.0
                } else {
                    0.0
                }
            })
        })
        .collect();
    let differences = ops.constant(&[k, k - 1], &differences);
    ops.matmul(&window, &differences)
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn};

    use super::*;
    use crate::{
        data::{DIMS, PARTICLES},
        nn::Eager,
    };

    #[test]
    fn displacements_are_newest_first() {
        // x(t − s) = s² · (p + d + 1): d_k = x(t−k+1) − x(t−k) = ((k−1)² − k²)(p + d + 1).
        let value = |s: usize, p: usize, d: usize| (s * s) as f64 * (p + d + 1) as f64;
        let positions = ArrayD::from_shape_fn(IxDyn(&[1, PARTICLES, DIMS]), |ix| value(0, ix[1], ix[2]));
        let previous = ArrayD::from_shape_fn(IxDyn(&[1, 3, PARTICLES, DIMS]), |ix| value(3 - ix[1], ix[2], ix[3]));
        let out = window_displacements(&mut Eager, &positions, &previous, 4);
        assert_eq!(out.shape(), [1, FRAME_LEN, 3]);
        for k in 1..=3 {
            for (i, expected) in
                (0..FRAME_LEN).map(|i| ((k - 1) * (k - 1)) as f64 * (i / 3 + i % 3 + 1) as f64 - (k * k) as f64 * (i / 3 + i % 3 + 1) as f64).enumerate()
            {
                assert_eq!(out[[0, i, k - 1]], expected, "d_{k} at {i}");
            }
        }
    }
}
