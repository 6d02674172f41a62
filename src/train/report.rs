//! REPORT.md: the study's summary table, as measured here, for the models of one run.

use std::{fmt::Write, path::Path};

use super::{
    EpochStats, ExportError,
    export::{CALIBRATION_PLOT_FILE, PAIR_DISTANCES_PLOT_FILE, SAMPLED_ROLLOUT_PLOT_FILE},
    forecast::{ForecastRow, REPORTED_HORIZONS},
    kept_epoch,
    plot::plot_rollout_errors,
    staged::{Staged, commit_all},
};
use crate::{
    card::{LongRolloutRatios, ModelCard},
    onnx::Precision,
};

/// The study's own code on this kind of 2-core CPU (PyTorch + e3nn, 2 threads, quiet),
/// as quoted in issue 4: seconds per epoch, and frames per second of its
/// one-frame-at-a-time forward pass, where the study gives them.
#[derive(Debug, Clone, Copy)]
pub struct StudyFigures {
    pub seconds_per_epoch: Option<f64>,
    pub frames_per_second: Option<f64>,
}

pub fn study_figures(architecture: &str) -> StudyFigures {
    let (seconds_per_epoch, frames_per_second) = match architecture {
        "MLPBaseline" => (Some(0.16), Some(6_400.0)),
        "GNNBaseline" => (Some(8.0), Some(173.0)),
        "EquivariantPolynomial" => (Some(3.3), Some(162.0)),
        "gate_points_2101.Network" => (Some(25.5), Some(23.0)),
        // One frame per step, as the study trains it.
        "E3MultiHeadAttention" => (Some(1_560.0), None),
        _ => (None, None),
    };
    StudyFigures { seconds_per_epoch, frames_per_second }
}

/// The markdown report for `cards` (trained models; imported ones are skipped).
pub fn render_report(cards: &[ModelCard]) -> String {
    let mut out = String::from("# equiserve: the study's comparison, measured here\n\n");
    let mut sources: Vec<String> = cards
        .iter()
        .flat_map(|c| c.data.iter().chain(&c.more_data))
        .map(|d| format!("`{}` (SHA-256 {})", d.source, &d.sha256[..12.min(d.sha256.len())]))
        .collect();
    sources.sort();
    sources.dedup();
    let _ = writeln!(
        out,
        "Data: {}. Split chronologically as in the study; metrics on the test pairs, R² of predicted next positions x + dx.\n",
        sources.join(", ")
    );
    out.push_str("| model | params | trained on | epochs | shuffle | output scale | R² cm | R² p1 cm | R² p7 x | R² p12 y | equivariance error (37° x) | E(3) error | test MSE (dx) | dx-skill | s/epoch | × study speed | frames/s B=1 | frames/s B=32 | frames/s B=32, server pool | × study frames/s |\n");
    out.push_str("|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for card in cards {
        let (Some(metrics), Some(training), Some(data)) = (&card.metrics, &card.training, &card.data) else { continue };
        let r2 = &metrics.test.r2;
        let study = study_figures(&card.architecture);
        let ratio = |value: Option<f64>| value.map_or("–".into(), |v| format!("{v:.2}"));
        let (b1, b32) = card.inference.as_ref().map_or((f64::NAN, f64::NAN), |i| (i.frames_per_second_batch_1, i.frames_per_second_batch_32));
        let pooled = card.inference.as_ref().and_then(|i| Some(format!("{:.0} ({} sessions)", i.frames_per_second_batch_32_pooled?, i.pool_workers?)));
        let best = card.inference.as_ref().map_or(f64::NAN, |i| i.best());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.2e} | {:.4} | {:.4} | {:.4} | {:.4} | {:.2e} | {:.2e} | {:.3e} | {:.4} | {:.3} | {} | {:.0} | {:.0} | {} | {} |",
            card.name,
            card.params,
            if data.source == "simulator" { "simulator" } else { "paths.npz" },
            epochs_column(&training.history),
            if training.config.shuffle { "yes" } else { "no" },
            training.config.output_scale,
            r2.cm,
            r2.p1_cm,
            r2.p7_x,
            r2.p12_y,
            card.equivariance.rotation_37_x,
            card.equivariance.max(),
            metrics.test.mse,
            metrics.test.dx_skill,
            training.seconds_per_epoch,
            ratio(study.seconds_per_epoch.map(|t| t / training.seconds_per_epoch)),
            b1,
            b32,
            pooled.unwrap_or_else(|| "–".into()),
            ratio(study.frames_per_second.map(|f| best / f)),
        );
    }
    out.push_str(
        "\nOutput scale: what the network's outputs are multiplied by, in training and in the graph (`--output-scale`; 1 is the study's \
         unscaled outputs, `auto` the root mean square of the training targets). \
         Equivariance error (37° x): the study's check, |f(R·x) − R·f(x)| of dx for a 37° rotation about x on Gaussian positions. \
         E(3) error: the largest such deviation over that rotation, random rotations, random reflections and random translations \
         (large for models that are not E(3)-equivariant by design: mlp, gnn, and the faithful se3mha/se3net, which see raw positions). \
         × study speed: the study's seconds per epoch over ours (above 1 is faster); \
         Frames/s B=1 and B=32: one ONNX Runtime session using every core, one request at a time; server pool: batches of 32 through the \
         server's default pool (one single-threaded session per core), kept busy by concurrent requests, which is what one server sustains. \
         × study frames/s: our best of these over the study's one-frame-at-a-time forward pass, both on a 2-core CPU \
         (the study's figures are those quoted in the issue, not re-measured in this run: the study's own code can run several times faster \
         than those on another machine; `cargo bench --bench zoo --study-code` measures both side by side). Figures, per model: `<model>/loss.svg`, \
         `<model>/correlation.svg`, `<model>/trajectory.svg`. \
         Epochs: those trained; (kept K): the epoch whose weights were exported, the one with the lowest MSE on the held-out last \
         training pairs (`--validation`).\n",
    );
    render_forecast(cards, &mut out);
    render_sampled(cards, &mut out);
    let wide: Vec<&str> = cards.iter().filter(|c| c.onnx.compute_dtype != Precision::F32.name()).map(|c| c.name.as_str()).collect();
    if !wide.is_empty() {
        let _ = writeln!(
            out,
            "\nThe ONNX graphs compute in float32, except those of {}, which compute in {} (float32 positions in, float32 dx out): \
             f32 rounding alone moves those trained functions by more than the 1e-5 parity.",
            wide.join(", "),
            Precision::F64.name(),
        );
    }
    out
}

/// Epochs trained, and which one's weights were kept when that was chosen on held-out pairs.
fn epochs_column(history: &[EpochStats]) -> String {
    match kept_epoch(history) {
        Some(kept) if kept.validation_mse.is_some() => format!("{} (kept {})", history.len(), kept.epoch),
        _ => history.len().to_string(),
    }
}

/// Writes the report, and beside it the rollout errors of every model with a forecast
/// and of the baselines on one chart; both whole or not at all.
pub fn write_report(cards: &[ModelCard], path: &Path) -> Result<(), ExportError> {
    let io_error = |path: &Path| {
        let path = path.display().to_string();
        move |source| ExportError::Io { path, source }
    };
    let report = Staged::new(path.to_path_buf());
    std::fs::write(report.path(), render_report(cards)).map_err(io_error(report.path()))?;
    let mut staged = vec![report];
    if let Some((baselines, models)) = forecast_rows(cards) {
        let chart = Staged::new(path.with_file_name(ROLLOUT_ERRORS_FILE));
        match plot_rollout_errors(&baselines, &models, "Rollout error against steps, test part (log–log)", chart.path()) {
            Ok(()) => staged.push(chart),
            Err(message) => tracing::warn!(%message, "figure not drawn; the earlier one, if any, stays"),
        }
    }
    commit_all(staged).map_err(io_error(path))
}

/// The chart of every model's rollout error beside the baselines, next to REPORT.md.
pub const ROLLOUT_ERRORS_FILE: &str = "rollout_errors.svg";

/// The baselines of the first card with a forecast, and the model row of every card
/// evaluated on the same data and test frames.
fn forecast_rows(cards: &[ModelCard]) -> Option<(Vec<ForecastRow>, Vec<ForecastRow>)> {
    let first = cards.iter().find(|c| c.forecast.is_some())?;
    let same_data = |c: &ModelCard| {
        c.data.as_ref().map(|d| &d.sha256) == first.data.as_ref().map(|d| &d.sha256)
            && c.forecast.as_ref().map(|f| f.first_test_frame) == first.forecast.as_ref().map(|f| f.first_test_frame)
    };
    let baselines = first.forecast.as_ref()?.baselines.clone();
    let models = cards.iter().filter(|c| same_data(c)).filter_map(|c| c.forecast.as_ref()).flat_map(|f| f.models.clone()).collect();
    Some((baselines, models))
}

/// The forecast table: one-step dx error and skill, rollout RMSE at the reported
/// horizons, for the baselines and the models.
fn render_forecast(cards: &[ModelCard], out: &mut String) {
    let Some((baselines, models)) = forecast_rows(cards) else { return };
    let first = cards.iter().find_map(|c| c.forecast.as_ref()).expect("a card with a forecast");
    let _ = writeln!(
        out,
        "\n## Predicting the motion\n\nTest part from frame {} ({} pairs); rollouts from {} start frames spread over it, each from the true \
         window, positions compared with the true frames. Skill = 1 − MSE / MSE(dx = 0): 0 is \"nothing moves\", 1 is exact. \
         The baselines need no training (linear-3 is fitted on the training pairs). ![rollout errors]({ROLLOUT_ERRORS_FILE})\n",
        first.first_test_frame,
        first.test_pairs,
        first.rollout_starts.len()
    );
    let horizons: Vec<String> = REPORTED_HORIZONS.iter().map(|h| format!("RMSE @{h}")).collect();
    let _ = writeln!(out, "| forecaster | K | test dx MSE | skill | {} | frames/s B=32 |", horizons.join(" | "));
    let _ = writeln!(out, "|---|---:|---:|---:|{}---:|", "---:|".repeat(horizons.len()));
    let speed = |name: &str| {
        cards.iter().find(|c| c.name == name).and_then(|c| c.inference.as_ref()).map_or("–".into(), |i| format!("{:.0}", i.frames_per_second_batch_32))
    };
    for (row, is_model) in baselines.iter().map(|r| (r, false)).chain(models.iter().map(|r| (r, true))) {
        let rmse: Vec<String> = REPORTED_HORIZONS.iter().map(|&h| row.rmse_at(h).map_or("–".into(), |v| format!("{v:.3e}"))).collect();
        let name = if is_model { format!("**{}**", row.name) } else { row.name.clone() };
        let _ = writeln!(
            out,
            "| {name} | {} | {:.3e} | {:.5} | {} | {} |",
            row.history_frames,
            row.dx_mse,
            row.skill,
            rmse.join(" | "),
            if is_model { speed(&row.name) } else { "–".into() }
        );
    }
}

/// Per stochastic model: its long sampled rollouts and ensembles beside linear-3 with and
/// without noise and its own mean, in the table's units.
fn render_sampled(cards: &[ModelCard], out: &mut String) {
    for card in cards {
        let Some(report) = card.forecast.as_ref().and_then(|f| f.sampled.as_ref()) else { continue };
        let _ = writeln!(
            out,
            "\n## Trajectories that stay physical: {}\n\n{} rollouts of {} steps from frames spread over the test part, statistics over \
             their last {:.0}%, each compared with the whole data (1 = as the data): motion = RMS step; pair distances = mean over the 66 \
             pairs of the Wasserstein-1 distance between the pair's distance distribution in the rollouts and in the data, over the same \
             between the data's two halves; Rg = mean radius of gyration; flew apart = non-finite or larger than 3× the data's extent (the statistics are those of the rollouts that did not). \
             Ensembles: {} members from each of the forecast's rollout starts (one for a deterministic row); spread/skill = √(mean \
             ensemble variance) / RMSE of the ensemble mean (1: calibrated); CRPS: the fair ensemble estimator per coordinate. Noise \
             seed {}. Goals: motion 0.85–1.15, pair distances ≤ 1.5, Rg 0.95–1.05, none flew apart, spread/skill 0.8–1.25. In brackets: the \
             same figure on the even and on the odd rollouts (starts) alone, how far it moves with the draw.{}\n\n\
             ![pair distances]({name}/{PAIR_DISTANCES_PLOT_FILE}) ![spread/skill]({name}/{CALIBRATION_PLOT_FILE}) \
             ![a sampled rollout]({name}/{SAMPLED_ROLLOUT_PLOT_FILE})\n",
            card.name,
            report.long_starts.len(),
            report.long_steps,
            100.0 * (1.0 - report.skipped_share),
            report.members,
            report.seed,
            report.data_rg_halves.map_or(String::new(), |[first, second]| format!(
                " The data's own first and second half have a mean Rg of {first:.2} and {second:.2} of the whole's: an Rg ratio within \
                 that moves no more than the data's size does."
            )),
            name = card.name,
        );
        let horizon_columns: Vec<String> = report.horizons.iter().map(|h| format!("spread/skill @{h} | CRPS @{h} | RMSE of mean @{h}")).collect();
        let _ = writeln!(out, "| forecaster | flew apart | motion | pair distances | Rg | {} |", horizon_columns.join(" | "));
        let _ = writeln!(out, "|---|---:|---:|---:|---:|{}", "---:|".repeat(3 * report.horizons.len()));
        for row in &report.rows {
            let scores: Vec<String> = report
                .horizons
                .iter()
                .map(|h| match row.ensemble.iter().find(|e| e.horizon == *h) {
                    Some(e) => {
                        format!("{} | {:.3e} | {:.3e}", with_halves(e.spread_skill, e.spread_skill_halves.map(|h| (h.even, h.odd))), e.crps, e.rmse_of_mean)
                    }
                    None => "– | – | –".into(),
                })
                .collect();
            let name = if row.name.starts_with(&card.name) { format!("**{}**", row.name) } else { row.name.clone() };
            let halves = |ratio: fn(&LongRolloutRatios) -> f64| row.long.halves.as_ref().map(|[even, odd]| (ratio(even), ratio(odd)));
            let _ = writeln!(
                out,
                "| {name} | {} / {} | {} | {} | {} | {} |",
                row.long.flew_apart,
                report.long_starts.len(),
                with_halves(row.long.ratios.motion_ratio, halves(|r| r.motion_ratio)),
                with_halves(row.long.ratios.pair_distance_w1_ratio, halves(|r| r.pair_distance_w1_ratio)),
                with_halves(row.long.ratios.rg_ratio, halves(|r| r.rg_ratio)),
                scores.join(" | ")
            );
        }
        if let Some(kicks) = card.noise.as_ref().and_then(|noise| noise.kicks) {
            let listed = |values: &[f64]| values.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(", ");
            let _ = writeln!(
                out,
                "\nIts kicks per chain mode m = 0 (the centroid) … 11, fitted to its one-step residuals: spread {}; lag-1 correlation {}.",
                listed(&kicks.mode_spread),
                listed(&kicks.mode_persistence)
            );
        }
    }
}

/// `value` to two decimals, then its value on the even and on the odd half, where the
/// card has them: "0.80 (0.76, 0.85)"; "–" for a half with nothing left to measure (every
/// rollout in it flew apart).
fn with_halves(value: f64, halves: Option<(f64, f64)>) -> String {
    let figure = |v: f64| if v.is_finite() { format!("{v:.2}") } else { "–".into() };
    match halves {
        Some((even, odd)) if value != 0.0 => format!("{} ({}, {})", figure(value), figure(even), figure(odd)),
        _ => figure(value),
    }
}
