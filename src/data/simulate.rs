//! The built-in simulator: a 12-bead chain in a heat bath, moving like the study's data
//! (bonds about 0.36 long, smooth motion), so the project runs without `../shared`.

use ndarray::Array3;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::{DIMS, PARTICLES, Trajectory};

type Vec3 = [f64; DIMS];

/// Underdamped Langevin dynamics (BAOAB splitting) of a bead–spring chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimulationConfig {
    pub frames: usize,
    pub seed: u64,
    /// Keep the chain in the xy-plane (z = 0), like the study's 2-D trajectory.
    pub planar: bool,
    pub bond_length: f64,
    pub bond_stiffness: f64,
    /// Strength of the soft repulsion between beads that are not bonded.
    pub repulsion: f64,
    /// Distance below which non-bonded beads repel.
    pub repulsion_range: f64,
    pub temperature: f64,
    pub friction: f64,
    pub time_step: f64,
    /// Integration steps between recorded frames: few enough that consecutive
    /// displacements stay strongly correlated.
    pub steps_per_frame: usize,
    /// Steps run before recording, to forget the straight initial chain.
    pub equilibration_steps: usize,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        Self {
            frames: 2048,
            seed: 0,
            planar: true,
            bond_length: 0.36,
            bond_stiffness: 50.0,
            repulsion: 20.0,
            repulsion_range: 0.5,
            temperature: 0.05,
            friction: 0.5,
            time_step: 0.002,
            steps_per_frame: 10,
            equilibration_steps: 5_000,
        }
    }
}

/// Runs the simulation; the same config gives the same trajectory.
pub fn simulate(config: &SimulationConfig) -> Trajectory {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let active_dims = if config.planar { 2 } else { DIMS };
    let mut x: Vec<Vec3> = (0..PARTICLES)
        .map(|i| {
            // A zig-zag so that no two beads start on top of each other.
            let zig = if i % 2 == 0 { 0.0 } else { 0.5 * config.bond_length };
            [i as f64 * 0.85 * config.bond_length, zig, 0.0]
        })
        .collect();
    let mut v = vec![[0.0; DIMS]; PARTICLES];
    let mut force = forces(&x, config);
    let dt = config.time_step;
    let decay = (-config.friction * dt).exp();
    let kick = ((1.0 - decay * decay) * config.temperature).sqrt();
    let step = |x: &mut Vec<Vec3>, v: &mut Vec<Vec3>, force: &mut Vec<Vec3>, rng: &mut StdRng| {
        for p in 0..PARTICLES {
            for d in 0..active_dims {
                v[p][d] += 0.5 * dt * force[p][d];
                x[p][d] += 0.5 * dt * v[p][d];
                let noise: f64 = rng.sample(StandardNormal);
                v[p][d] = decay * v[p][d] + kick * noise;
                x[p][d] += 0.5 * dt * v[p][d];
            }
        }
        *force = forces(x, config);
        for p in 0..PARTICLES {
            for d in 0..active_dims {
                v[p][d] += 0.5 * dt * force[p][d];
            }
        }
    };
    for _ in 0..config.equilibration_steps {
        step(&mut x, &mut v, &mut force, &mut rng);
    }
    let mut positions = Array3::<f32>::zeros((config.frames, PARTICLES, DIMS));
    for frame in 0..config.frames {
        for _ in 0..config.steps_per_frame {
            step(&mut x, &mut v, &mut force, &mut rng);
        }
        for p in 0..PARTICLES {
            for d in 0..DIMS {
                positions[[frame, p, d]] = x[p][d] as f32;
            }
        }
    }
    Trajectory::new(positions).expect("the simulator produces finite [frames, 12, 3] data")
}

/// Harmonic bonds between neighbours plus soft repulsion (1 − r/σ)² between the others.
fn forces(x: &[Vec3], config: &SimulationConfig) -> Vec<Vec3> {
    let mut f = vec![[0.0; DIMS]; PARTICLES];
    for i in 0..PARTICLES {
        for j in i + 1..PARTICLES {
            let r: Vec3 = std::array::from_fn(|d| x[j][d] - x[i][d]);
            let dist = r.iter().map(|c| c * c).sum::<f64>().sqrt().max(1e-9);
            // Positive magnitude pulls i towards j.
            let magnitude = if j == i + 1 {
                config.bond_stiffness * (dist - config.bond_length)
            } else if dist < config.repulsion_range {
                -2.0 * config.repulsion * (1.0 - dist / config.repulsion_range) / config.repulsion_range
            } else {
                continue;
            };
            for d in 0..DIMS {
                let component = magnitude * r[d] / dist;
                f[i][d] += component;
                f[j][d] -= component;
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn correlation(a: &[f64], b: &[f64]) -> f64 {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (ma, mb) = (mean(a), mean(b));
        let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let var = |v: &[f64], m: f64| v.iter().map(|x| (x - m).powi(2)).sum::<f64>();
        cov / (var(a, ma) * var(b, mb)).sqrt()
    }

    #[test]
    fn chain_moves_smoothly_with_study_like_bonds() {
        let trajectory = simulate(&SimulationConfig { frames: 600, ..Default::default() });
        let x = trajectory.positions().mapv(f64::from);
        let mut bonds = Vec::new();
        for f in 0..x.dim().0 {
            for p in 0..PARTICLES - 1 {
                let d: f64 = (0..DIMS).map(|d| (x[[f, p + 1, d]] - x[[f, p, d]]).powi(2)).sum::<f64>().sqrt();
                bonds.push(d);
            }
        }
        let mean_bond = bonds.iter().sum::<f64>() / bonds.len() as f64;
        assert!((0.3..0.42).contains(&mean_bond), "mean bond length {mean_bond}");

        let dx: Vec<f64> = (1..x.dim().0)
            .flat_map(|f| (0..PARTICLES * DIMS).map(move |k| (f, k)))
            .map(|(f, k)| x[[f, k / DIMS, k % DIMS]] - x[[f - 1, k / DIMS, k % DIMS]])
            .collect();
        let stride = PARTICLES * DIMS;
        let r = correlation(&dx[..dx.len() - stride], &dx[stride..]);
        assert!(r > 0.9, "consecutive displacements correlate only {r}");
        assert!(x.iter().all(|v| v.is_finite()));
        assert!(x.slice(ndarray::s![.., .., 2]).iter().all(|z| *z == 0.0), "planar chain left the plane");
    }

    #[test]
    fn same_seed_same_trajectory_other_seed_differs() {
        let config = SimulationConfig { frames: 50, equilibration_steps: 100, ..Default::default() };
        assert_eq!(simulate(&config), simulate(&config));
        assert_ne!(simulate(&config), simulate(&SimulationConfig { seed: 1, ..config }));
    }
}
