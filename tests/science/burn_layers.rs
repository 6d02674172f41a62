//! The layers inside the training framework: Burn computes what the f64 reference
//! computes, and its gradients are those of the layer.

use crate::common;

use burn::tensor::{Device, Tensor, TensorData};
use common::fixtures::{array, load, state_dict};
use equiserve::{
    e3::Irreps,
    models::{GateNetwork, GateNetworkConfig, ModelInputs, OpsModel},
    nn::{BurnOps, BurnTensor, Eager, Mode, Ops, TensorProduct},
};
use ndarray::{ArrayD, IxDyn};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

fn to_burn(ops: &mut BurnOps, x: &ArrayD<f64>) -> BurnTensor {
    ops.constant(x.shape(), &x.iter().copied().collect::<Vec<_>>())
}

#[test]
fn burn_runs_the_seeded_gate_network_as_e3nn_does() {
    let fixture = load("network_seed_e3large.json");
    let config: GateNetworkConfig = serde_json::from_value(fixture["kwargs"].clone()).expect("kwargs");
    let mut network = GateNetwork::new(config).expect("builds");
    network.load_state_dict(&state_dict(&fixture["state_dict"])).expect("weights load");
    let frames: Vec<ArrayD<f64>> = fixture["positions"].as_array().expect("frames").iter().map(array).collect();
    let views: Vec<_> = frames.iter().map(|f| f.view()).collect();
    let positions = ndarray::stack(ndarray::Axis(0), &views).expect("stack");

    let expected = network.forward(&mut Eager, &ModelInputs::snapshot(&positions));
    let mut ops = BurnOps::new(Device::flex());
    let input = to_burn(&mut ops, &positions);
    let out = network.forward(&mut ops, &ModelInputs::snapshot(&input));
    assert_eq!(out.shape(), expected.shape());
    let actual = out.to_vec();
    let scale = expected.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    let error = actual.iter().zip(&expected).map(|(a, b)| (f64::from(*a) - b).abs()).fold(0.0, f64::max);
    assert!(error / scale < 1e-5, "relative error {}", error / scale);
}

#[test]
fn burn_gradients_are_the_layers_derivatives() {
    let mut rng = StdRng::seed_from_u64(8);
    let (in1, in2, out): (Irreps, Irreps, Irreps) = ("3x1o".parse().unwrap(), "2x2e".parse().unwrap(), "2x1o".parse().unwrap());
    let mut tp = TensorProduct::new(in1.clone(), in2.clone(), out.clone(), &[(0, 0, 0, Mode::Uvw, true)], true).expect("valid");
    tp.set_weight((0..tp.weight_numel()).map(|_| rng.sample(StandardNormal)).collect()).expect("count");
    let random = |rows: usize, cols: usize, rng: &mut StdRng| ArrayD::from_shape_simple_fn(IxDyn(&[rows, cols]), || rng.sample(StandardNormal));
    let (x1, x2, coeffs) = (random(5, in1.dim(), &mut rng), random(5, in2.dim(), &mut rng), random(5, out.dim(), &mut rng));

    // loss = Σ coeffs · tp(x1, x2): linear in the weights, so a unit step is exact.
    let loss_of = |tp: &TensorProduct| -> f64 {
        let y = tp.forward(&mut Eager, &x1, &x2, None);
        y.iter().zip(&coeffs).map(|(a, b)| a * b).sum()
    };
    let mut ops = BurnOps::new(Device::flex().autodiff());
    let (b1, b2) = (to_burn(&mut ops, &x1), to_burn(&mut ops, &x2));
    let y = tp.forward(&mut ops, &b1, &b2, None);
    let c: Tensor<2> = Tensor::from_data(TensorData::new(coeffs.iter().map(|v| *v as f32).collect::<Vec<_>>(), [5, out.dim()]), &Device::flex().autodiff());
    let y2: Tensor<2> = y.value().clone().reshape([5, out.dim()]);
    let loss = (y2 * c).sum();
    let grads = loss.backward();
    let weights: Vec<_> = ops.weight_tensors().collect();
    assert_eq!(weights.len(), 1, "one path, one weight tensor");
    let grad: Vec<f32> = weights[0].grad(&grads).expect("weights get gradients").into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
    assert_eq!(grad.len(), tp.weight_numel());

    let base = loss_of(&tp);
    for i in [0, 3, tp.weight_numel() - 1] {
        let mut stepped = tp.clone();
        let mut w = tp.weight().expect("shared").to_vec();
        w[i] += 1.0;
        stepped.set_weight(w).expect("count");
        let finite_difference = loss_of(&stepped) - base;
        assert!((f64::from(grad[i]) - finite_difference).abs() < 1e-4 * finite_difference.abs().max(1.0), "weight {i}: {} vs {finite_difference}", grad[i]);
    }
}

/// Gathered entries are the reference's, and each entry's gradient is the sum over the
/// places it was gathered into (a repeated index counts twice, an unused one not at all).
#[test]
fn gathered_entries_pass_their_gradients_back_summed() {
    let x = ArrayD::from_shape_fn(IxDyn(&[2, 3, 2]), |ix| (ix[0] * 6 + ix[1] * 2 + ix[2]) as f64 * 0.5);
    let indices = [2, 0, 2];
    let expected = Eager.gather(&x, 1, &indices);
    assert_eq!(expected[[1, 0, 1]], x[[1, 2, 1]]);

    let mut ops = BurnOps::new(Device::flex().autodiff());
    let values: Vec<f64> = x.iter().copied().collect();
    let weight = ops.weight(x.shape(), &values);
    let gathered = ops.gather(&weight, 1, &indices);
    assert_eq!(gathered.shape(), expected.shape());
    let actual = gathered.to_vec();
    assert!(actual.iter().zip(&expected).all(|(a, b)| (f64::from(*a) - b).abs() < 1e-6), "{actual:?} vs {expected:?}");

    let grads = gathered.value().clone().sum().backward();
    let weights: Vec<_> = ops.weight_tensors().collect();
    let grad: Vec<f32> = weights[0].grad(&grads).expect("gradient").into_data().convert::<f32>().try_to_vec::<f32>().expect("f32");
    let times_gathered = |i: usize| indices.iter().filter(|&&k| k == i).count() as f32;
    let expected_grad: Vec<f32> = (0..12).map(|flat| times_gathered(flat / 2 % 3)).collect();
    assert_eq!(grad, expected_grad);
}
