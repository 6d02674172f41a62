use burn::tensor::Device;
use equiserve::{models::{OpsModel, Se3Transformer}, nn::{BurnOps, Ops}};
use rand::{SeedableRng, rngs::StdRng, Rng};
use rand_distr::StandardNormal;
fn main() {
    let mut rng = StdRng::seed_from_u64(0);
    let vals: Vec<f64> = (0..32*36).map(|_| rng.sample::<f64,_>(StandardNormal) * 1.5).collect();
    let mut m = Se3Transformer::new(1, 4, false); m.init_weights(&mut rng);
    let t = std::time::Instant::now();
    for _ in 0..5 {
        let mut ops = BurnOps::new(Device::flex().autodiff());
        let x = ops.constant(&[32, 12, 3], &vals);
        let out = m.forward(&mut ops, &x);
        let l = out.value().clone().powi_scalar(2).mean(); let g = l.backward(); let _ = ops.weight_gradients(&g);
    }
    println!("{:.3} s/step", t.elapsed().as_secs_f64() / 5.0);
}
