//! REPORT.md: the study's summary table, as measured here, for the models of one run.

use std::{fmt::Write, path::Path};

use crate::card::ModelCard;

/// The study's figures for the same models (its own code on this kind of 2-core CPU):
/// seconds per epoch, and frames per second of its one-frame-at-a-time forward pass.
fn study_figures(architecture: &str) -> Option<(f64, f64)> {
    match architecture {
        "MLPBaseline" => Some((0.16, 6_400.0)),
        "EquivariantPolynomial" => Some((3.3, 162.0)),
        "gate_points_2101.Network" => Some((25.5, 23.0)),
        _ => None,
    }
}

/// The markdown report for `cards` (trained models; imported ones are skipped).
pub fn render_report(cards: &[ModelCard]) -> String {
    let mut out = String::from("# equiserve: the study's comparison, measured here\n\n");
    let mut sources: Vec<String> = cards.iter().filter_map(|c| c.data.as_ref().map(|d| format!("`{}` (SHA-256 {})", d.source, &d.sha256[..12.min(d.sha256.len())]))).collect();
    sources.dedup();
    let _ = writeln!(out, "Data: {}. Split chronologically as in the study; metrics on the test pairs, R² of predicted next positions x + dx.\n", sources.join(", "));
    out.push_str("| model | params | trained on | epochs | shuffle | R² cm | R² p1 cm | R² p7 x | R² p12 y | equivariance error | test MSE (dx) | dx-skill | s/epoch | × study speed | frames/s B=1 | frames/s B=32 | × study B=1 |\n");
    out.push_str("|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for card in cards {
        let (Some(metrics), Some(training), Some(data)) = (&card.metrics, &card.training, &card.data) else { continue };
        let r2 = &metrics.test.r2;
        let study = study_figures(&card.architecture);
        let speed = |ours: f64, theirs: Option<f64>| theirs.map_or("–".into(), |t| format!("{:.2}", t / ours));
        let (b1, b32) = card.inference.as_ref().map_or((f64::NAN, f64::NAN), |i| (i.frames_per_second_batch_1, i.frames_per_second_batch_32));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.2e} | {:.3e} | {:.4} | {:.3} | {} | {:.0} | {:.0} | {} |",
            card.name,
            card.params,
            if data.source == "simulator" { "simulator" } else { "paths.npz" },
            training.config.epochs,
            if training.config.shuffle { "yes" } else { "no" },
            r2.cm,
            r2.p1_cm,
            r2.p7_x,
            r2.p12_y,
            card.equivariance.max(),
            metrics.test.mse,
            metrics.test.dx_skill,
            training.seconds_per_epoch,
            speed(training.seconds_per_epoch, study.map(|s| s.0)),
            b1,
            b32,
            study.map_or("–".into(), |s| format!("{:.1}", b1 / s.1)),
        );
    }
    out.push_str(
        "\nEquivariance error: the largest |f(g·x) − g·f(x)| of dx over the study's 37° rotation about x, random rotations, \
         random reflections and random translations. × study speed: the study's seconds per epoch over ours (above 1 is faster); \
         × study B=1: our ONNX Runtime frames/s at batch 1 over the study's one-frame-at-a-time forward pass, both on a 2-core CPU \
         (the study's figures are those quoted in the issue, not re-measured in this run). Figures, per model: `<model>/loss.svg`, \
         `<model>/correlation.svg`, `<model>/trajectory.svg`.\n",
    );
    out
}

pub fn write_report(cards: &[ModelCard], path: &Path) -> Result<(), String> {
    std::fs::write(path, render_report(cards)).map_err(|e| format!("{}: {e}", path.display()))
}
