//! Every layer commutes with O(3): layer(D(g)·x) = D(g)·layer(x) on random inputs,
//! with the Wigner D matrices of each irrep fitted from the spherical harmonics.

use equiserve::{
    e3::{
        Irreps, Normalization, SphericalHarmonics,
        radial::Activation,
        rotation::{Matrix3, determinant, random_reflection, random_rotation},
    },
    nn::{Eager, Gate, Linear, Mode, TensorProduct},
};
use ndarray::{Array2, ArrayD, IxDyn};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

/// D^l(R) for a proper rotation, from Y^l(R x) = D^l(R) Y^l(x) on 2l+1 generic points.
fn wigner_d(l: u32, r: &Matrix3) -> Array2<f64> {
    let n = 2 * l as usize + 1;
    let sh = SphericalHarmonics::new(l);
    let block = |v: [f64; 3]| sh.eval(v, true, Normalization::Component)[(l * l) as usize..].to_vec();
    let mut rng = StdRng::seed_from_u64(u64::from(l));
    let points: Vec<[f64; 3]> = (0..n).map(|_| std::array::from_fn(|_| rng.sample(StandardNormal))).collect();
    // Solve D · Y = Y_rotated, with Y [n, n] holding one point per column.
    let y = Array2::from_shape_fn((n, n), |(i, j)| block(points[j])[i]);
    let y_rot = Array2::from_shape_fn((n, n), |(i, j)| {
        let p = points[j];
        block(r.map(|row| row[0] * p[0] + row[1] * p[1] + row[2] * p[2]))[i]
    });
    // D = Y_rot · Y⁻¹ by Gauss–Jordan on Yᵀ Dᵀ = Y_rotᵀ.
    let (mut a, mut b) = (y.t().to_owned(), y_rot.t().to_owned());
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[[i, col]].abs().total_cmp(&a[[j, col]].abs())).expect("rows");
        for k in 0..n {
            a.swap([col, k], [pivot, k]);
            b.swap([col, k], [pivot, k]);
        }
        let p = a[[col, col]];
        for k in 0..n {
            a[[col, k]] /= p;
            b[[col, k]] /= p;
        }
        for row in 0..n {
            if row != col {
                let f = a[[row, col]];
                for k in 0..n {
                    a[[row, k]] -= f * a[[col, k]];
                    b[[row, k]] -= f * b[[col, k]];
                }
            }
        }
    }
    b.t().to_owned()
}

/// D(g) acting on features [rows, irreps.dim]; improper g = −R multiplies by p.
fn act(irreps: &Irreps, g: &Matrix3, x: &ArrayD<f64>) -> ArrayD<f64> {
    let improper = determinant(g) < 0.0;
    let proper = if improper { g.map(|row| row.map(|v| -v)) } else { *g };
    let mut out = x.clone();
    let mut start = 0;
    for m in irreps.iter() {
        let d = wigner_d(m.ir.l, &proper);
        let sign = if improper { f64::from(m.ir.p) } else { 1.0 };
        let n = m.ir.dim();
        for row in 0..x.shape()[0] {
            for u in 0..m.mul {
                let base = start + u * n;
                for i in 0..n {
                    out[[row, base + i]] = sign * (0..n).map(|j| d[[i, j]] * x[[row, base + j]]).sum::<f64>();
                }
            }
        }
        start += m.dim();
    }
    out
}

fn random(rows: usize, cols: usize, rng: &mut StdRng) -> ArrayD<f64> {
    ArrayD::from_shape_simple_fn(IxDyn(&[rows, cols]), || rng.sample(StandardNormal))
}

fn group_elements(rng: &mut StdRng) -> Vec<Matrix3> {
    (0..3).flat_map(|_| [random_rotation(rng), random_reflection(rng)]).collect()
}

/// f64 throughout: equal to 1e-10 relative to the outputs' size.
fn assert_commutes(name: &str, a: &ArrayD<f64>, b: &ArrayD<f64>) {
    let scale = b.iter().fold(1.0_f64, |m, v| m.max(v.abs()));
    let error = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(error < 1e-10 * scale, "{name}: equivariance error {error} (outputs up to {scale})");
}

fn irreps(s: &str) -> Irreps {
    s.parse().expect("valid")
}

#[test]
fn tensor_products_are_equivariant_in_every_mode() {
    let mut rng = StdRng::seed_from_u64(1);
    let (in1, in2) = (irreps("2x0e+2x1o+1x2e+1x1e"), irreps("1x0e+1x1o+1x2e+1x3o"));
    let out = irreps("3x0e+2x0o+2x1o+2x1e+1x2e+2x2o+1x3e");
    let mut fc = TensorProduct::fully_connected(in1.clone(), in2.clone(), out.clone(), true);
    fc.set_weight((0..fc.weight_numel()).map(|_| rng.sample(StandardNormal)).collect()).expect("count");
    let same = irreps("2x0e+2x1o+2x2e");
    let modes = [
        (
            "uvu",
            TensorProduct::new(
                same.clone(),
                irreps("2x1o"),
                irreps("2x1e+2x1o+2x2o"),
                &[(1, 0, 0, Mode::Uvu, true), (0, 0, 1, Mode::Uvu, true), (2, 0, 2, Mode::Uvu, false)],
                false,
            ),
        ),
        ("uvv", TensorProduct::new(irreps("2x1o"), same.clone(), irreps("2x1o+2x2e"), &[(0, 0, 0, Mode::Uvv, true), (0, 1, 1, Mode::Uvv, false)], false)),
        ("uuu", TensorProduct::new(same.clone(), same.clone(), irreps("2x1e+2x0e"), &[(1, 1, 0, Mode::Uuu, true), (2, 2, 1, Mode::Uuu, false)], false)),
        ("uuw", TensorProduct::new(same.clone(), same.clone(), irreps("3x1e+1x0e"), &[(1, 1, 0, Mode::Uuw, true), (2, 2, 1, Mode::Uuw, false)], false)),
    ];
    for g in group_elements(&mut rng) {
        let (x1, x2) = (random(4, in1.dim(), &mut rng), random(4, in2.dim(), &mut rng));
        let moved = fc.forward(&mut Eager, &act(&in1, &g, &x1), &act(&in2, &g, &x2), None);
        assert_commutes("fully connected", &moved, &act(&out, &g, &fc.forward(&mut Eager, &x1, &x2, None)));
        for (name, tp) in &modes {
            let tp = tp.as_ref().expect("valid instructions");
            let (x1, x2) = (random(4, tp.irreps_in1().dim(), &mut rng), random(4, tp.irreps_in2().dim(), &mut rng));
            // Per-sample weights are invariant scalars.
            let w = random(4, tp.weight_numel(), &mut rng);
            let moved = tp.forward(&mut Eager, &act(tp.irreps_in1(), &g, &x1), &act(tp.irreps_in2(), &g, &x2), Some(&w));
            let expected = act(tp.irreps_out(), &g, &tp.forward(&mut Eager, &x1, &x2, Some(&w)));
            assert_commutes(name, &moved, &expected);
        }
    }
}

#[test]
fn linear_and_gate_are_equivariant() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut linear = Linear::new(irreps("2x0e+3x1o+1x2e+1x1e"), irreps("1x0e+2x1o+2x2e+1x0o"));
    linear.weight = (0..linear.weight_numel()).map(|_| rng.sample(StandardNormal)).collect();
    let gate = Gate::new(
        irreps("4x0e+2x0o"),
        vec![Activation::Silu, Activation::Tanh],
        irreps("3x0e+1x0o"),
        vec![Activation::Sigmoid, Activation::Tanh],
        irreps("2x1o+1x2e+1x1e"),
    )
    .expect("valid gate");
    for g in group_elements(&mut rng) {
        let x = random(5, linear.irreps_in.dim(), &mut rng);
        let moved = linear.forward(&mut Eager, &act(&linear.irreps_in, &g, &x));
        assert_commutes("linear", &moved, &act(&linear.irreps_out, &g, &linear.forward(&mut Eager, &x)));
        let x = random(5, gate.irreps_in.dim(), &mut rng);
        let moved = gate.forward(&mut Eager, &act(&gate.irreps_in, &g, &x));
        assert_commutes("gate", &moved, &act(&gate.irreps_out, &g, &gate.forward(&mut Eager, &x)));
    }
}
