//! The equivariant layers against e3nn 0.6.0's own outputs, and as properties.

use crate::common;

use common::fixtures::{array, load};
use equiserve::{
    e3::{Irreps, radial::Activation},
    nn::{Eager, FullyConnectedNet, Gate, Linear, Mode, TensorProduct},
};
use ndarray::ArrayD;
use serde_json::Value;

fn irreps(value: &Value) -> Irreps {
    value.as_str().expect("irreps string").parse().expect("valid irreps")
}

fn flat(value: &Value) -> Vec<f64> {
    array(value).iter().copied().collect()
}

fn assert_close(ours: &ArrayD<f64>, expected: &ArrayD<f64>, tolerance: f64, what: &str) {
    assert_eq!(ours.shape(), expected.shape(), "{what}: shape");
    let scale = expected.iter().fold(1.0_f64, |m, v| m.max(v.abs()));
    let error = ours.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(error / scale < tolerance, "{what}: relative error {}", error / scale);
}

fn activation(value: &Value) -> Activation {
    serde_json::from_value(value.clone()).expect("known activation")
}

#[test]
fn tensor_products_and_linear_match_e3nn() {
    let fixture = load("tensor_products.json");
    for case in fixture["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let expected = array(&case["output"]);
        let ours = match case["kind"].as_str().expect("kind") {
            "Linear" => {
                let mut linear = Linear::new(irreps(&case["irreps_in"]), irreps(&case["irreps_out"]));
                assert_eq!(linear.weight_numel(), case["weight_numel"].as_u64().expect("numel") as usize, "{name}");
                linear.weight = flat(&case["weights"]);
                linear.forward(&mut Eager, &array(&case["x"]))
            }
            kind => {
                let shared = case.get("weights").is_some();
                let (in1, in2, out) = (irreps(&case["irreps_in1"]), irreps(&case["irreps_in2"]), irreps(&case["irreps_out"]));
                let instructions = case["instructions"].as_array().expect("instructions");
                let mut tp = if kind == "FullyConnectedTensorProduct" {
                    TensorProduct::fully_connected(in1, in2, out, shared)
                } else {
                    let list: Vec<(usize, usize, usize, Mode, bool)> = instructions
                        .iter()
                        .map(|i| {
                            let index = |k: &str| i[k].as_u64().expect("index") as usize;
                            let mode = i["mode"].as_str().expect("mode").parse().expect("known mode");
                            (index("i_in1"), index("i_in2"), index("i_out"), mode, i["has_weight"].as_bool().expect("bool"))
                        })
                        .collect();
                    TensorProduct::new(in1, in2, out, &list, shared).expect("valid instructions")
                };
                assert_eq!(tp.weight_numel(), case["weight_numel"].as_u64().expect("numel") as usize, "{name}");
                assert_eq!(tp.instructions().len(), instructions.len(), "{name}: instruction count");
                for (ours, theirs) in tp.instructions().iter().zip(instructions) {
                    let theirs_shape: Vec<usize> = theirs["path_shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim") as usize).collect();
                    assert_eq!(
                        (ours.i_in1, ours.i_in2, ours.i_out),
                        (
                            theirs["i_in1"].as_u64().expect("i") as usize,
                            theirs["i_in2"].as_u64().expect("i") as usize,
                            theirs["i_out"].as_u64().expect("i") as usize,
                        ),
                        "{name}: instruction order"
                    );
                    assert_eq!(ours.path_shape, theirs_shape, "{name}");
                    assert!((ours.path_weight - theirs["path_weight"].as_f64().expect("weight")).abs() < 1e-12, "{name}: path weight");
                }
                let (x1, x2) = (array(&case["x1"]), array(&case["x2"]));
                if shared {
                    tp.set_weight(flat(&case["weights"])).expect("weight count");
                    tp.forward(&mut Eager, &x1, &x2, None)
                } else {
                    tp.forward(&mut Eager, &x1, &x2, Some(&array(&case["weights_per_sample"])))
                }
            }
        };
        assert_close(&ours, &expected, 1e-10, name);
    }
}

#[test]
fn fully_connected_net_and_gate_match_e3nn() {
    let fixture = load("fc_and_gate.json");
    let fc = &fixture["fully_connected_net"];
    let hs: Vec<usize> = fc["hs"].as_array().expect("hs").iter().map(|h| h.as_u64().expect("width") as usize).collect();
    let mut net = FullyConnectedNet::new(hs, activation(&fc["act"]));
    net.weights = fc["weights"].as_array().expect("weights").iter().map(flat).collect();
    assert_close(&net.forward(&mut Eager, &array(&fc["x"])), &array(&fc["output"]), 1e-10, "FullyConnectedNet");

    let g = &fixture["gate"];
    let acts = |v: &Value| v.as_array().expect("acts").iter().map(activation).collect::<Vec<_>>();
    let gate =
        Gate::new(irreps(&g["irreps_scalars"]), acts(&g["acts_scalars"]), irreps(&g["irreps_gates"]), acts(&g["acts_gates"]), irreps(&g["irreps_gated"]))
            .expect("valid gate");
    assert_eq!(gate.irreps_in, irreps(&g["irreps_in"]));
    assert_eq!(gate.irreps_out, irreps(&g["irreps_out"]));
    assert_close(&gate.forward(&mut Eager, &array(&g["x"])), &array(&g["output"]), 1e-10, "Gate");
}

#[test]
fn tensor_product_rejects_impossible_paths() {
    let (a, b): (Irreps, Irreps) = ("1x1o".parse().unwrap(), "1x1o".parse().unwrap());
    let error = TensorProduct::new(a.clone(), b.clone(), "1x3e".parse().unwrap(), &[(0, 0, 0, Mode::Uvw, true)], true).unwrap_err().to_string();
    assert!(error.contains("cannot give 3e"), "{error}");
    let error = TensorProduct::new(a, b, "1x0e".parse().unwrap(), &[(0, 2, 0, Mode::Uvw, true)], true).unwrap_err().to_string();
    assert!(error.contains("irreps_in2[2]"), "{error}");
}

/// Mixing the weights in per node before copying features onto edges is the same
/// function as the plain product on the copies (here: 12 nodes, each copied to 3 edges).
#[test]
fn gathered_tensor_product_equals_the_product_on_gathered_rows() {
    use equiserve::{
        e3::Irreps,
        nn::{Eager, TensorProduct},
    };
    use ndarray::{ArrayD, IxDyn};
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use rand_distr::StandardNormal;

    let mut rng = StdRng::seed_from_u64(11);
    let irreps = |s: &str| s.parse::<Irreps>().expect("valid");
    let sh = Irreps::spherical_harmonics(3, -1);
    for (in1, out) in [("32x0e+8x0o+16x1o+24x1e+8x2e", "4x0e+2x1o+3x2e+1x3o"), ("8x0e+8x0o+16x1e+16x1o+8x2e+8x2o", "1x1o")] {
        let mut tp = TensorProduct::fully_connected(irreps(in1), sh.clone(), irreps(out), true);
        tp.set_weight((0..tp.weight_numel()).map(|_| rng.sample(StandardNormal)).collect()).expect("sized");
        let random = |rows: usize, dim: usize, rng: &mut StdRng| ArrayD::from_shape_fn(IxDyn(&[rows, dim]), |_| rng.sample(StandardNormal));
        let nodes = random(12, tp.irreps_in1().dim(), &mut rng);
        let edges = random(36, sh.dim(), &mut rng);
        // Edge e starts at node e / 3.
        let gather = |_: &mut Eager, x: &ArrayD<f64>, dim: usize| ArrayD::from_shape_fn(IxDyn(&[36, dim]), |ix| x[[ix[0] / 3, ix[1]]]);
        let expected = tp.forward(&mut Eager, &gather(&mut Eager, &nodes, tp.irreps_in1().dim()), &edges, None);
        let got = tp.forward_gathered(&mut Eager, &nodes, &edges, &mut |ops, x, dim| gather(ops, x, dim));
        let scale = expected.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        let error = got.iter().zip(expected.iter()).fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(error < 1e-12 * scale, "{in1} -> {out}: {error:e}");
    }
}
