//! Figures drawn next to the model card.

use std::path::Path;

use plotters::prelude::*;

use super::EpochStats;

/// Train and test MSE per epoch on a log scale, as an SVG.
pub fn plot_losses(history: &[EpochStats], title: &str, path: &Path) -> Result<(), String> {
    let positive = |v: f64| v.max(f64::MIN_POSITIVE);
    let values = history.iter().flat_map(|s| [positive(s.train_mse), positive(s.test_mse)]);
    let (low, high) = values.fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if history.is_empty() || !low.is_finite() || !high.is_finite() {
        return Err("no finite losses to plot".into());
    }
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(1usize..history.len().max(2), (low * 0.8..high * 1.25).log_scale())
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("MSE of dx")
        .y_label_formatter(&|v| format!("{v:.1e}"))
        .draw()
        .map_err(|e| draw(&e))?;
    for (label, color, pick) in [
        ("train", BLUE, (|s: &EpochStats| s.train_mse) as fn(&EpochStats) -> f64),
        ("test", RED, |s: &EpochStats| s.test_mse),
    ] {
        chart
            .draw_series(LineSeries::new(history.iter().map(|s| (s.epoch, positive(pick(s)))), color.stroke_width(2)))
            .map_err(|e| draw(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))
}
