//! Sampling the next frame of a stochastic model, x(t+1) = x(t) + dx + dx_std · ξ, the
//! same way wherever it happens (evaluation now, the server's sampled rollouts later):
//! ξ comes from a counter-based generator keyed by (seed, member, step), so one seed
//! gives the same trajectory whatever else is computed beside it, and it is drawn in the
//! space the frame spans, so that a planar system stays in its plane.

use ndarray::{ArrayView1, ArrayView2, ArrayView3, ArrayViewMut2, ArrayViewMut3};

use super::{DIMS, PARTICLES};

/// A frame whose smallest gyration eigenvalue is below this share of its largest is
/// taken as planar (2-D data lifted to z = 0, rotated or not; f32 rounding of a rotated
/// plane stays ~1e-14 of it, and no real 3-D chain of 12 beads comes near).
const PLANAR_EIGENVALUE_RATIO: f64 = 1e-9;

/// SplitMix64's finaliser: a bijective mix whose outputs for consecutive inputs look
/// independent, which is all a counter-based generator needs of it.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform in (0, 1], never 0 (its logarithm is taken).
fn unit(bits: u64) -> f64 {
    ((bits >> 11) + 1) as f64 / (1u64 << 53) as f64
}

/// Standard-normal noise for one frame, [12, 3], from (seed, member, step) alone.
pub fn standard_normal_frame(seed: u64, member: u64, step: u64) -> [[f64; DIMS]; PARTICLES] {
    let key = mix(mix(mix(seed) ^ member) ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut out = [[0.0; DIMS]; PARTICLES];
    // Box–Muller: each pair of uniforms gives two independent normals.
    for pair in 0..PARTICLES * DIMS / 2 {
        let u = unit(mix(key.wrapping_add(2 * pair as u64 + 1)));
        let v = unit(mix(key.wrapping_add(2 * pair as u64 + 2)));
        let radius = (-2.0 * u.ln()).sqrt();
        let angle = std::f64::consts::TAU * v;
        for (slot, value) in [(2 * pair, radius * angle.cos()), (2 * pair + 1, radius * angle.sin())] {
            out[slot / DIMS][slot % DIMS] = value;
        }
    }
    out
}

/// The orthogonal projector onto the space `frame` [12, 3] spans about its centre: the
/// identity for a 3-D configuration, the plane's projector for a planar one.
pub fn span_projector(frame: ArrayView2<f32>) -> [[f64; DIMS]; DIMS] {
    let mut centre = [0.0; DIMS];
    for particle in frame.outer_iter() {
        for d in 0..DIMS {
            centre[d] += f64::from(particle[d]) / PARTICLES as f64;
        }
    }
    let mut gyration = [[0.0; DIMS]; DIMS];
    for particle in frame.outer_iter() {
        for a in 0..DIMS {
            for b in 0..DIMS {
                gyration[a][b] += (f64::from(particle[a]) - centre[a]) * (f64::from(particle[b]) - centre[b]);
            }
        }
    }
    let (values, vectors) = symmetric_eigen(gyration);
    let largest = values.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    let mut projector = [[0.0; DIMS]; DIMS];
    for (k, value) in values.iter().enumerate() {
        if largest > 0.0 && *value > PLANAR_EIGENVALUE_RATIO * largest {
            for a in 0..DIMS {
                for b in 0..DIMS {
                    projector[a][b] += vectors[a][k] * vectors[b][k];
                }
            }
        }
    }
    projector
}

/// The number of coordinates `frames` [N, 12, 3] span about their centres: 3, or 2 for
/// planar data (in any orientation).
pub fn spanned_dims(frames: ArrayView3<f32>) -> usize {
    let rank = |frame| {
        let projector = span_projector(frame);
        (0..DIMS).map(|d| projector[d][d]).sum::<f64>().round() as usize
    };
    frames.outer_iter().map(rank).max().unwrap_or(DIMS)
}

/// Eigenvalues and eigenvectors (columns) of a symmetric 3 × 3 matrix, by Jacobi rotations.
fn symmetric_eigen(mut a: [[f64; DIMS]; DIMS]) -> ([f64; DIMS], [[f64; DIMS]; DIMS]) {
    let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    for _sweep in 0..32 {
        let off = a[0][1].powi(2) + a[0][2].powi(2) + a[1][2].powi(2);
        let scale = a[0][0].powi(2) + a[1][1].powi(2) + a[2][2].powi(2);
        if off <= 1e-30 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        for (p, q) in [(0, 1), (0, 2), (1, 2)] {
            if a[p][q] == 0.0 {
                continue;
            }
            let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
            let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
            let t = if theta == 0.0 { 1.0 } else { t };
            let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
            for row in &mut a {
                let (akp, akq) = (row[p], row[q]);
                row[p] = c * akp - s * akq;
                row[q] = s * akp + c * akq;
            }
            let (row_p, row_q) = (a[p], a[q]);
            a[p] = std::array::from_fn(|k| c * row_p[k] - s * row_q[k]);
            a[q] = std::array::from_fn(|k| s * row_p[k] + c * row_q[k]);
            for row in &mut v {
                let (vp, vq) = (row[p], row[q]);
                row[p] = c * vp - s * vq;
                row[q] = s * vp + c * vq;
            }
        }
    }
    ([a[0][0], a[1][1], a[2][2]], v)
}

/// Adds one sample of the noise to `next` [12, 3] (x(t) + dx): per particle, `dx_std`
/// times standard-normal noise keyed by (seed, member, step), projected onto the space
/// `frame` (x(t)) spans.
pub fn add_noise(next: ArrayViewMut2<f32>, frame: ArrayView2<f32>, dx_std: ArrayView1<f32>, seed: u64, member: u64, step: u64) {
    let projector = span_projector(frame);
    let noise = standard_normal_frame(seed, member, step);
    let mut next = next;
    for (p, mut particle) in next.outer_iter_mut().enumerate() {
        let std = f64::from(dx_std[p]);
        for a in 0..DIMS {
            let projected: f64 = (0..DIMS).map(|b| projector[a][b] * noise[p][b]).sum();
            particle[a] += (std * projected) as f32;
        }
    }
}

/// [`add_noise`] for every member of a batch: `next` and `frames` [B, 12, 3], `dx_std`
/// [B, 12]; member b draws with the key `first_member + b`.
pub fn add_noise_to_batch(mut next: ArrayViewMut3<f32>, frames: ArrayView3<f32>, dx_std: ArrayView2<f32>, seed: u64, first_member: u64, step: u64) {
    for (b, ((next, frame), std)) in next.outer_iter_mut().zip(frames.outer_iter()).zip(dx_std.outer_iter()).enumerate() {
        add_noise(next, frame, std, seed, first_member + b as u64, step);
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array2};

    use super::*;

    #[test]
    fn noise_is_a_function_of_its_key_and_standard_normal() {
        assert_eq!(standard_normal_frame(7, 3, 11), standard_normal_frame(7, 3, 11));
        assert_ne!(standard_normal_frame(7, 3, 11), standard_normal_frame(7, 4, 11));
        assert_ne!(standard_normal_frame(7, 3, 11), standard_normal_frame(8, 3, 11));
        assert_ne!(standard_normal_frame(7, 3, 11), standard_normal_frame(7, 3, 12));
        let values: Vec<f64> = (0..2000).flat_map(|step| standard_normal_frame(1, 0, step).into_iter().flatten()).collect();
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let kurtosis = values.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n / variance.powi(2);
        // 72,000 draws: the standard errors are 0.004, 0.005 and 0.02.
        assert!(mean.abs() < 0.02 && (variance - 1.0).abs() < 0.025 && (kurtosis - 3.0).abs() < 0.1, "{mean} {variance} {kurtosis}");
    }

    fn zigzag(tilt: f64) -> Array2<f32> {
        // A planar zig-zag, tilted about the x axis by `tilt`.
        Array2::from_shape_fn((PARTICLES, DIMS), |(p, d)| {
            let (x, y) = (p as f64 * 0.3, if p % 2 == 0 { 0.0 } else { 0.15 } + 0.01 * (p * p) as f64);
            [x, y * tilt.cos(), y * tilt.sin()][d] as f32
        })
    }

    #[test]
    fn planar_frames_get_noise_in_their_plane_and_3d_frames_everywhere() {
        for tilt in [0.0, 0.7] {
            let frame = zigzag(tilt);
            let mut next = frame.clone();
            add_noise(next.view_mut(), frame.view(), Array1::from_elem(PARTICLES, 0.1).view(), 5, 0, 0);
            let normal = [0.0, -(tilt.sin()), tilt.cos()];
            let moved = &next - &frame;
            let out_of_plane = moved.outer_iter().map(|m| (0..DIMS).map(|d| f64::from(m[d]) * normal[d]).sum::<f64>().abs()).fold(0.0, f64::max);
            let in_plane = moved.iter().map(|v| f64::from(*v).abs()).fold(0.0, f64::max);
            assert!(out_of_plane < 1e-6 && in_plane > 1e-2, "tilt {tilt}: {out_of_plane} {in_plane}");
        }
        let mut solid = zigzag(0.0);
        solid.column_mut(2).iter_mut().enumerate().for_each(|(p, z)| *z = (p as f32 * 3.5).cos() * 0.2);
        let projector = span_projector(solid.view());
        for (a, row) in projector.iter().enumerate() {
            for (b, value) in row.iter().enumerate() {
                assert!((value - if a == b { 1.0 } else { 0.0 }).abs() < 1e-9, "{projector:?}");
            }
        }
    }
}
