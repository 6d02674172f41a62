//! The training schedule: held-out pairs choose which epoch's weights a run keeps.

use equiserve::{
    data::{SimulationConfig, Split, SplitConfig, Target, simulate},
    models::{Mlp, OpsModel},
    train::{TrainConfig, fit_ops, kept_epoch, metrics, predict_dx_ops},
};
use ndarray::s;
use rand::{SeedableRng, rngs::StdRng};

fn mlp() -> Mlp {
    let mut model = Mlp::new();
    model.init_weights(&mut StdRng::seed_from_u64(3));
    model
}

#[test]
fn held_out_pairs_choose_the_kept_weights_and_patience_stops_training() {
    let trajectory = simulate(&SimulationConfig { frames: 120, equilibration_steps: 500, ..Default::default() });
    let split = Split::new(&trajectory, &SplitConfig::default()).expect("split");
    // A step size far too large for these targets: the held-out MSE jumps around.
    let config = TrainConfig { epochs: 60, batch_size: 8, learning_rate: 0.05, validation_fraction: 0.25, patience: Some(3), ..Default::default() };
    let mut model = mlp();
    let history = fit_ops(&mut model, &split, &config, |_| {});

    let held_out = config.validation_pairs(split.train.len());
    assert_eq!(held_out, 24, "a quarter of {} training pairs", split.train.len());
    assert!(history.iter().all(|s| s.validation_mse.is_some_and(f64::is_finite)), "{history:?}");
    let kept = kept_epoch(&history).expect("epochs ran");
    let lowest = history.iter().filter_map(|s| s.validation_mse).fold(f64::INFINITY, f64::min);
    assert_eq!(kept.validation_mse, Some(lowest));
    assert_eq!(history.len(), kept.epoch + 3, "stops 3 epochs after its best ({history:?})");

    // The model ends with the kept epoch's weights, not the last epoch's.
    let start = split.train.len() - held_out;
    let dx = predict_dx_ops(&model, split.train.inputs.slice(s![start.., .., ..]), split.train.previous.slice(s![start.., .., .., ..]), Target::Dx);
    let mse = metrics::mse(&dx, &split.train.dx().slice(s![start.., .., ..]).to_owned());
    assert_eq!(mse, lowest, "held-out MSE of the returned model");
    assert_ne!(history.last().and_then(|s| s.validation_mse), Some(lowest));
}

#[test]
fn without_held_out_pairs_every_training_pair_trains_and_the_last_epoch_is_kept() {
    let trajectory = simulate(&SimulationConfig { frames: 60, equilibration_steps: 500, ..Default::default() });
    let split = Split::new(&trajectory, &SplitConfig::default()).expect("split");
    let config = TrainConfig { epochs: 3, batch_size: 8, ..Default::default() };
    assert_eq!(config.validation_pairs(split.train.len()), 0);
    let history = fit_ops(&mut mlp(), &split, &config, |_| {});
    assert_eq!(history.len(), 3);
    assert!(history.iter().all(|s| s.validation_mse.is_none()));
    assert_eq!(kept_epoch(&history).map(|s| s.epoch), Some(3));
}
