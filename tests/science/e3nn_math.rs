//! The pure E(3) mathematics against e3nn 0.6.0's own values, and as properties.

use crate::common;

use common::fixtures::{array, load, max_abs_diff};
use equiserve::e3::{
    Normalization, SphericalHarmonics,
    radial::{Activation, Basis, SoftOneHotLinspace, smooth_cutoff, soft_unit_step},
    rotation::{Isometry, random_reflection, random_rotation},
    wigner_3j,
};
use rand::{SeedableRng, rngs::StdRng};

#[test]
fn wigner_3j_matches_e3nn() {
    let fixture = load("wigner_3j.json");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() >= 60);
    for case in cases {
        let l = |k: &str| case[k].as_u64().expect("l") as u32;
        let expected = array(&case["values"]);
        let ours = wigner_3j(l("l1"), l("l2"), l("l3"));
        assert_eq!(ours.shape(), expected.shape());
        let error = max_abs_diff(ours.iter(), expected.iter());
        assert!(error < 1e-10, "3j({}, {}, {}): error {error}", l("l1"), l("l2"), l("l3"));
    }
}

#[test]
fn spherical_harmonics_match_e3nn() {
    let fixture = load("spherical_harmonics.json");
    let vectors = array(&fixture["vectors"]);
    for case in fixture["cases"].as_array().expect("cases") {
        let lmax = case["lmax"].as_u64().expect("lmax") as u32;
        let normalize = case["normalize"].as_bool().expect("normalize");
        let normalization: Normalization = serde_json::from_value(case["normalization"].clone()).expect("normalization");
        let expected = array(&case["values"]);
        let sh = SphericalHarmonics::new(lmax);
        for (row, v) in vectors.outer_iter().enumerate() {
            let ours = sh.eval([v[0], v[1], v[2]], normalize, normalization);
            let want: Vec<f64> = expected.index_axis(ndarray::Axis(0), row).iter().copied().collect();
            let scale = want.iter().fold(1.0_f64, |m, x| m.max(x.abs()));
            let error = max_abs_diff(&ours, &want);
            assert!(error / scale < 1e-10, "lmax {lmax} normalize {normalize} {normalization:?} vector {row}: {error}");
        }
    }
}

#[test]
fn radial_functions_match_e3nn() {
    let fixture = load("radial_and_activations.json");
    let x = array(&fixture["x"]);
    for case in fixture["cases"].as_array().expect("cases") {
        let expected = array(&case["values"]);
        let function = case["fn"].as_str().expect("fn");
        let ours: Vec<f64> = match function {
            "soft_one_hot_linspace" => {
                let basis = SoftOneHotLinspace {
                    start: case["start"].as_f64().expect("start"),
                    end: case["end"].as_f64().expect("end"),
                    number: case["number"].as_u64().expect("number") as usize,
                    basis: case["basis"].as_str().expect("basis").parse::<Basis>().expect("known basis"),
                    cutoff: case["cutoff"].as_bool().expect("cutoff"),
                };
                x.iter().flat_map(|&r| basis.eval(r)).collect()
            }
            "soft_unit_step" => x.iter().map(|&r| soft_unit_step(r)).collect(),
            "smooth_cutoff" => x.iter().map(|&r| smooth_cutoff(r)).collect(),
            other => panic!("fixture has an unknown function {other}"),
        };
        // Bessel bases divide by x and are infinite at 0 in e3nn too.
        let pairs: Vec<(f64, f64)> = ours.iter().zip(expected.iter()).map(|(a, b)| (*a, *b)).filter(|(_, b)| b.is_finite()).collect();
        let error = pairs.iter().map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0, f64::max);
        assert!(error < 1e-10, "{function} {case:?}: error {error}", case = case.get("basis"));
    }
    for (name, value) in fixture["normalize2mom_constants"].as_object().expect("constants") {
        let activation: Activation = serde_json::from_value(serde_json::Value::String(name.clone())).expect("known activation");
        assert_eq!(activation.second_moment_constant(), value.as_f64().expect("number"), "{name}");
    }
}

/// Σ C_ijk Y^l1_i(a) Y^l2_j(b) Y^l3_k(c) is unchanged by rotations and picks up
/// (−1)^(l1+l2+l3) under improper elements: this needs the 3j symbols and the
/// harmonics to share one basis, for every l.
#[test]
fn wigner_3j_and_harmonics_are_jointly_invariant() {
    let mut rng = StdRng::seed_from_u64(3);
    let lmax = 4;
    let sh = SphericalHarmonics::new(lmax);
    let (a, b, c) = ([0.3, -1.2, 0.7], [1.1, 0.4, -0.5], [-0.2, 0.9, 1.3]);
    let block = |v: [f64; 3], l: u32| -> Vec<f64> { sh.eval(v, false, Normalization::Component)[(l * l) as usize..((l + 1) * (l + 1)) as usize].to_vec() };
    let invariant = |a: [f64; 3], b: [f64; 3], c: [f64; 3], (l1, l2, l3): (u32, u32, u32)| -> f64 {
        let w = wigner_3j(l1, l2, l3);
        let (ya, yb, yc) = (block(a, l1), block(b, l2), block(c, l3));
        w.indexed_iter().map(|((i, j, k), v)| v * ya[i] * yb[j] * yc[k]).sum()
    };
    for l1 in 0..=lmax {
        for l2 in 0..=lmax {
            for l3 in l1.abs_diff(l2)..=(l1 + l2).min(lmax) {
                let ls = (l1, l2, l3);
                let reference = invariant(a, b, c, ls);
                for _ in 0..3 {
                    for (m, sign) in [(random_rotation(&mut rng), 1.0), (random_reflection(&mut rng), if (l1 + l2 + l3) % 2 == 0 { 1.0 } else { -1.0 })] {
                        let g = Isometry::linear(m);
                        let moved = invariant(g.apply_point(a), g.apply_point(b), g.apply_point(c), ls);
                        assert!((moved - sign * reference).abs() < 1e-9, "{ls:?}: {moved} vs {}", sign * reference);
                    }
                }
            }
        }
    }
}

#[test]
fn harmonics_have_their_normalisation_everywhere_on_the_sphere() {
    let sh = SphericalHarmonics::new(6);
    let mut rng = StdRng::seed_from_u64(4);
    for _ in 0..20 {
        let v = Isometry::linear(random_rotation(&mut rng)).apply_point([0.0, 0.0, 2.5]);
        let y = sh.eval(v, true, Normalization::Component);
        for l in 0..=6u32 {
            let norm: f64 = y[(l * l) as usize..((l + 1) * (l + 1)) as usize].iter().map(|x| x * x).sum();
            assert!((norm - f64::from(2 * l + 1)).abs() < 1e-9, "l = {l}: |Y|² = {norm}");
        }
        // l = 1 is √3 · x̂ in e3nn's axis order.
        let r = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        for k in 0..3 {
            assert!((y[1 + k] - 3f64.sqrt() * v[k] / r).abs() < 1e-12);
        }
    }
}
