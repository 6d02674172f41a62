//! The models shipped in `models/` are the whole zoo and the default history model,
//! each one loads and serves.

use crate::common;

use std::{collections::BTreeMap, path::Path};

use clap::ValueEnum;
use common::TestServer;
use equiserve::{
    models::ModelKind,
    proto::v1::{GetModelRequest, ListModelsRequest, PredictRequest},
};

/// Two frames on the scale of the study's data: a 4 × 3 grid of spacing 1.2 around
/// (20, 25), the second one shifted and turned a little.
fn frames() -> Vec<f32> {
    (0..2)
        .flat_map(|f| {
            (0..12).flat_map(move |i| {
                let (u, v) = ((i % 4) as f32 * 1.2, (i / 4) as f32 * 1.2);
                let turn = 0.1 * f as f32;
                [20.0 + u * turn.cos() - v * turn.sin() + f as f32, 25.0 + u * turn.sin() + v * turn.cos(), 0.0]
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_model_of_the_zoo_is_shipped_with_parity_and_served() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut server = TestServer::start(&dir).await;
    let listed = server.client.list_models(ListModelsRequest {}).await.expect("list").into_inner().models;
    let params: BTreeMap<String, u64> = listed.into_iter().map(|m| (m.name, m.params)).collect();
    // The study's eight models, one snapshot each.
    for kind in ModelKind::value_variants().iter().filter(|k| k.supports_history(1)) {
        let name = kind.name();
        assert!(params.contains_key(name), "models/ lacks {name}: {:?}", params.keys());
        let info = server.client.get_model(GetModelRequest { name: name.into(), ..Default::default() }).await.expect("get").into_inner();
        let card: serde_json::Value = serde_json::from_str(&info.card_json).expect("card json");
        assert!(card["onnx"]["parity_relative_error"].as_f64().expect("parity") <= 1e-5, "{name}");
        assert_eq!(card["params"].as_u64(), Some(params[name]), "{name}");

        let positions = frames();
        let predicted = server
            .client
            .predict(PredictRequest { model: name.into(), positions: positions.clone(), previous: Vec::new(), ..Default::default() })
            .await
            .expect("predict");
        let dx = predicted.into_inner().dx;
        assert_eq!(dx.len(), positions.len(), "{name}");
        assert!(dx.iter().all(|v| v.is_finite()), "{name}: {dx:?}");
    }

    // The default: a history model reading 4 frames, served with its window.
    let name = "pairforce-h4";
    let summary =
        server.client.get_model(GetModelRequest { name: name.into(), ..Default::default() }).await.expect("shipped").into_inner().summary.expect("summary");
    assert_eq!(summary.history_frames, 4);
    let positions = frames();
    // Each frame's three predecessors, oldest first: the chain drifting along x.
    let previous: Vec<f32> = positions
        .chunks(36)
        .flat_map(|frame| (0..3).flat_map(move |k| frame.iter().enumerate().map(move |(i, v)| if i % 3 == 0 { v - 0.01 * (3 - k) as f32 } else { *v })))
        .collect();
    let predicted =
        server.client.predict(PredictRequest { model: name.into(), positions, previous, ..Default::default() }).await.expect("predict").into_inner();
    assert!(predicted.dx.iter().all(|v| v.is_finite()), "{name}");
    server.shutdown().await;
}

/// The shipped default is stochastic: its graph gives a positive dx_std per particle, and
/// its card holds the long sampled rollouts and ensembles it was judged by, beside
/// linear-3 with and without noise, computed in the same run.
#[test]
fn the_shipped_default_is_stochastic_and_judged_by_its_samples() {
    use equiserve::{
        card::ModelCard,
        onnx::{ExecutionDevice, OnnxModel},
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/pairforce-h4");
    let card: ModelCard = crate::common::card_of(&dir);
    assert!(card.stochastic && card.onnx.signature.is_stochastic());
    let mut session = OnnxModel::load(&dir.join("model.onnx"), &card.onnx.signature, ExecutionDevice::Cpu, 1).expect("loads with its signature");
    let positions = ndarray::Array3::from_shape_vec((2, 12, 3), frames()).expect("two frames");
    let previous = ndarray::Array4::from_shape_fn((2, 3, 12, 3), |(f, k, p, d)| positions[[f, p, d]] - if d == 0 { 0.01 * (3 - k) as f32 } else { 0.0 });
    let (dx, dx_std) = session.run_window_with_std(positions.view(), previous.view()).expect("runs");
    let dx_std = dx_std.expect("dx_std");
    assert_eq!((dx.dim(), dx_std.dim()), ((2, 12, 3), (2, 12)));
    assert!(dx_std.iter().all(|s| s.is_finite() && *s > 0.0), "{dx_std:?}");

    let kicks = card.noise.as_ref().and_then(|noise| noise.kicks).expect("kicks shaped like its residuals");
    kicks.check().expect("kicks that can be drawn");

    let sampled = card.forecast.and_then(|f| f.sampled).expect("the sampled report");
    assert_eq!((sampled.long_steps, sampled.long_starts.len(), sampled.members), (10_000, 16, 32));
    let names: Vec<&str> = sampled.rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    let (noisy_linear, model) = (&sampled.rows[1], &sampled.rows[3]);
    assert!(model.sampled && model.name.starts_with("pairforce-h4"), "{names:?}");
    assert_eq!(model.long.flew_apart, 0, "{model:?}");
    // Its ensembles beat linear-3's with noise at every horizon.
    for (ours, theirs) in model.ensemble.iter().zip(&noisy_linear.ensemble) {
        assert!(ours.crps < theirs.crps, "{ours:?} vs {theirs:?}");
    }
}
