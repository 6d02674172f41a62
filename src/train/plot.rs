//! Figures drawn next to the model card.

use std::path::Path;

use plotters::prelude::*;

use ndarray::Array2;

use super::{
    EpochStats,
    forecast::{EnsembleScore, ForecastRow, SampledFigures, SampledReport},
    kept_epoch,
};

/// A figure that could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

/// Train and test MSE per epoch on a log scale, as an SVG; with held-out pairs, their
/// MSE too, and the epoch whose weights were kept.
pub fn plot_losses(history: &[EpochStats], title: &str, path: &Path) -> Result<(), PlotError> {
    let positive = |v: f64| v.max(f64::MIN_POSITIVE);
    let values = history.iter().flat_map(|s| [Some(s.train_mse), Some(s.test_mse), s.validation_mse]).flatten().map(positive);
    let (low, high) = values.fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if history.is_empty() || !low.is_finite() || !high.is_finite() {
        return Err(PlotError { path: path.display().to_string(), message: "no finite losses to plot".into() });
    }
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| PlotError { path: path.display().to_string(), message: e.to_string() };
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(1usize..history.len().max(2), (low * 0.8..high * 1.25).log_scale())
        .map_err(|e| draw(&e))?;
    chart.configure_mesh().x_desc("epoch").y_desc("MSE of dx").y_label_formatter(&|v| format!("{v:.1e}")).draw().map_err(|e| draw(&e))?;
    let kept = kept_epoch(history).filter(|s| s.validation_mse.is_some());
    let validation_label = kept.map_or(String::new(), |s| format!("validation (kept epoch {})", s.epoch));
    for (label, color, pick) in [
        ("train", BLUE, (|s: &EpochStats| Some(s.train_mse)) as fn(&EpochStats) -> Option<f64>),
        ("test", RED, |s: &EpochStats| Some(s.test_mse)),
        (validation_label.as_str(), GREEN, |s: &EpochStats| s.validation_mse),
    ] {
        let points: Vec<(usize, f64)> = history.iter().filter_map(|s| pick(s).map(|v| (s.epoch, positive(v)))).collect();
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| draw(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    if let Some(kept) = kept {
        let marker = Circle::new((kept.epoch, positive(kept.validation_mse.unwrap_or(kept.test_mse))), 5, GREEN.filled());
        chart.draw_series(std::iter::once(marker)).map_err(|e| draw(&e))?;
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))
}

/// The smallest and largest finite value, if there is one.
fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.filter(|v| v.is_finite()).fold(None, |range, v| match range {
        None => Some((v, v)),
        Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
    })
}

/// The study's four correlation panels (predicted vs true next positions on the test
/// set: centre of mass, particle 1's mean, particle 7's x, particle 12's y), R² in titles.
pub fn plot_correlations(
    predicted: ndarray::ArrayView3<f32>,
    truth: ndarray::ArrayView3<f32>,
    r2: &super::metrics::StudyR2,
    title: &str,
    path: &Path,
) -> Result<(), PlotError> {
    use ndarray::Axis;
    let draw = |e: &dyn std::fmt::Display| PlotError { path: path.display().to_string(), message: e.to_string() };
    let series = |a: ndarray::ArrayView3<f32>, pick: &dyn Fn(ndarray::ArrayView2<f32>) -> f64| -> Vec<f64> { a.axis_iter(Axis(0)).map(&pick).collect() };
    let mean = |frame: ndarray::ArrayView2<f32>| frame.iter().map(|v| f64::from(*v)).sum::<f64>() / frame.len() as f64;
    let p1 = |frame: ndarray::ArrayView2<f32>| frame.row(0).iter().map(|v| f64::from(*v)).sum::<f64>() / 3.0;
    let p7_x = |frame: ndarray::ArrayView2<f32>| f64::from(frame[[6, 0]]);
    let p12_y = |frame: ndarray::ArrayView2<f32>| f64::from(frame[[11, 1]]);
    type Statistic<'a> = &'a dyn Fn(ndarray::ArrayView2<f32>) -> f64;
    let panels: [(&str, f64, Statistic); 4] =
        [("centre of mass", r2.cm, &mean), ("particle 1 mean", r2.p1_cm, &p1), ("particle 7 x", r2.p7_x, &p7_x), ("particle 12 y", r2.p12_y, &p12_y)];
    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let root = root.titled(title, ("sans-serif", 24)).map_err(|e| draw(&e))?;
    for (area, (label, r2, pick)) in root.split_evenly((2, 2)).iter().zip(panels) {
        let (t, p) = (series(truth, pick), series(predicted, pick));
        let (low, high) = finite_range(t.iter().chain(&p).copied()).ok_or_else(|| draw(&"no finite values to plot"))?;
        let pad = ((high - low) * 0.05).max(1e-6);
        let range = low - pad..high + pad;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{label}: R² = {r2:.4}"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(range.clone(), range.clone())
            .map_err(|e| draw(&e))?;
        chart.configure_mesh().x_desc("true").y_desc("predicted").draw().map_err(|e| draw(&e))?;
        chart.draw_series(LineSeries::new([(range.start, range.start), (range.end, range.end)], BLACK.mix(0.4))).map_err(|e| draw(&e))?;
        chart
            .draw_series(t.iter().zip(&p).filter(|(a, b)| a.is_finite() && b.is_finite()).map(|(a, b)| Circle::new((*a, *b), 2, BLUE.mix(0.5).filled())))
            .map_err(|e| draw(&e))?;
    }
    root.present().map_err(|e| draw(&e))
}

/// True and predicted next positions (x, y) of every particle at every `stride`-th
/// test frame, coloured by time: dots are true, crosses predicted.
pub fn plot_trajectory(predicted: ndarray::ArrayView3<f32>, truth: ndarray::ArrayView3<f32>, stride: usize, title: &str, path: &Path) -> Result<(), PlotError> {
    let draw = |e: &dyn std::fmt::Display| PlotError { path: path.display().to_string(), message: e.to_string() };
    let frames: Vec<usize> = (0..truth.dim().0).step_by(stride.max(1)).collect();
    let points = |a: ndarray::ArrayView3<f32>| -> Vec<(usize, f64, f64)> {
        frames.iter().flat_map(|&f| (0..a.dim().1).map(move |p| (f, f64::from(a[[f, p, 0]]), f64::from(a[[f, p, 1]])))).collect()
    };
    let (t, p) = (points(truth), points(predicted));
    let finite = || t.iter().chain(&p).filter(|(_, x, y)| x.is_finite() && y.is_finite());
    let (x_lo, x_hi) = finite_range(finite().map(|(_, x, _)| *x)).ok_or_else(|| draw(&"no finite positions to plot"))?;
    let (y_lo, y_hi) = finite_range(finite().map(|(_, _, y)| *y)).ok_or_else(|| draw(&"no finite positions to plot"))?;
    let pad = 0.05 * (x_hi - x_lo).max(y_hi - y_lo).max(1e-6);
    let root = SVGBackend::new(path, (900, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(x_lo - pad..x_hi + pad, y_lo - pad..y_hi + pad)
        .map_err(|e| draw(&e))?;
    chart.configure_mesh().x_desc("x").y_desc("y").draw().map_err(|e| draw(&e))?;
    let last = truth.dim().0.max(2) - 1;
    let colour = |f: usize| ViridisRGB::get_color(f as f64 / last as f64);
    chart
        .draw_series(t.iter().map(|&(f, x, y)| Circle::new((x, y), 3, colour(f).filled())))
        .map_err(|e| draw(&e))?
        .label("true")
        .legend(|(x, y)| Circle::new((x, y), 3, BLACK.filled()));
    chart
        .draw_series(p.iter().filter(|(_, x, y)| x.is_finite() && y.is_finite()).map(|&(f, x, y)| Cross::new((x, y), 4, colour(f))))
        .map_err(|e| draw(&e))?
        .label("predicted")
        .legend(|(x, y)| Cross::new((x, y), 4, BLACK));
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))
}

/// Rollout RMSE of positions against the number of steps, log–log, one line per
/// forecaster (baselines dashed in grey tones, models in colour).
pub fn plot_rollout_errors(baselines: &[ForecastRow], models: &[ForecastRow], title: &str, path: &Path) -> Result<(), PlotError> {
    let draw = |e: &dyn std::fmt::Display| PlotError { path: path.display().to_string(), message: e.to_string() };
    let rows = || baselines.iter().chain(models);
    let values = rows().flat_map(|r| r.rollout_rmse.iter().copied()).filter(|v| v.is_finite() && *v > 0.0);
    let (low, high) = values.fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let steps = rows().map(|r| r.rollout_rmse.len()).max().unwrap_or(0);
    if !low.is_finite() || steps == 0 {
        return Err(draw(&"no finite rollout errors to plot"));
    }
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0..steps.max(2) as f64).log_scale(), (low * 0.8..high * 1.25).log_scale())
        .map_err(|e| draw(&e))?;
    chart.configure_mesh().x_desc("rollout steps").y_desc("RMSE of positions").y_label_formatter(&|v| format!("{v:.0e}")).draw().map_err(|e| draw(&e))?;
    let greys = [RGBColor(0, 0, 0), RGBColor(110, 110, 110), RGBColor(160, 120, 60), RGBColor(90, 90, 170)];
    for (i, row) in rows().enumerate() {
        let baseline = i < baselines.len();
        let color = if baseline {
            greys[i % greys.len()]
        } else {
            let (r, g, b) = Palette99::pick(i - baselines.len()).to_rgba().rgb();
            RGBColor(r, g, b)
        };
        let points: Vec<(f64, f64)> =
            row.rollout_rmse.iter().enumerate().filter(|(_, v)| v.is_finite() && **v > 0.0).map(|(s, v)| ((s + 1) as f64, *v)).collect();
        let style = color.stroke_width(if baseline { 1 } else { 3 });
        let label = row.name.split(':').next().unwrap_or(&row.name).to_string();
        chart
            .draw_series(LineSeries::new(points, style))
            .map_err(|e| draw(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).background_style(WHITE).draw().map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))
}

/// True (black) and predicted (red) chains, beads joined in particle order as the study
/// draws them, x–y, after each of `horizons` rollout steps from one start frame.
/// `truth` and `predicted` hold the frames after steps 1, 2, …
pub fn plot_rollout_chains(truth: &[Array2<f32>], predicted: &[Array2<f32>], horizons: &[usize], title: &str, path: &Path) -> Result<(), PlotError> {
    let panels: Vec<Panel> = horizons
        .iter()
        .copied()
        .filter(|h| *h >= 1 && *h <= truth.len().min(predicted.len()))
        .map(|step| {
            (
                format!("after {step} step{}", if step == 1 { "" } else { "s" }),
                vec![("true", &truth[step - 1], BLACK), ("predicted", &predicted[step - 1], RED)],
            )
        })
        .collect();
    plot_chains(&panels, title, path)
}

/// A sampled rollout's chain at some of its steps, x–y.
pub fn plot_sampled_chain(snapshots: &[(usize, Array2<f32>)], title: &str, path: &Path) -> Result<(), PlotError> {
    let panels: Vec<Panel> = snapshots.iter().map(|(step, frame)| (format!("after {step} steps"), vec![("sampled", frame, RED)])).collect();
    plot_chains(&panels, title, path)
}

/// One panel of chains: its caption, and each chain's label, frame [12, 3] and colour.
type Panel<'a> = (String, Vec<(&'a str, &'a Array2<f32>, RGBColor)>);

/// Panels side by side, each chain's beads joined in particle order.
fn plot_chains(panels: &[Panel], title: &str, path: &Path) -> Result<(), PlotError> {
    let draw = |e: &dyn std::fmt::Display| PlotError { path: path.display().to_string(), message: e.to_string() };
    if panels.is_empty() {
        return Err(draw(&"no frames to draw"));
    }
    let root = SVGBackend::new(path, (440 * panels.len() as u32, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(|e| draw(&e))?;
    for (area, (caption, chains)) in root.split_evenly((1, panels.len())).iter().zip(panels) {
        let finite = chains
            .iter()
            .flat_map(|(_, frame, _)| frame.rows().into_iter())
            .filter(|r| r[0].is_finite() && r[1].is_finite())
            .map(|r| (f64::from(r[0]), f64::from(r[1])))
            .collect::<Vec<_>>();
        let (x_lo, x_hi) = finite_range(finite.iter().map(|v| v.0)).ok_or_else(|| draw(&"no finite positions"))?;
        let (y_lo, y_hi) = finite_range(finite.iter().map(|v| v.1)).ok_or_else(|| draw(&"no finite positions"))?;
        let half = 0.55 * (x_hi - x_lo).max(y_hi - y_lo).max(1e-6);
        let (cx, cy) = ((x_lo + x_hi) / 2.0, (y_lo + y_hi) / 2.0);
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(cx - half..cx + half, cy - half..cy + half)
            .map_err(|e| draw(&e))?;
        chart.configure_mesh().x_desc("x").y_desc("y").draw().map_err(|e| draw(&e))?;
        for &(label, frame, color) in chains {
            let beads: Vec<(f64, f64)> =
                frame.rows().into_iter().map(|r| (f64::from(r[0]), f64::from(r[1]))).filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
            chart
                .draw_series(LineSeries::new(beads.clone(), color.stroke_width(2)))
                .map_err(|e| draw(&e))?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(beads.into_iter().map(|b| Circle::new(b, 4, color.filled()))).map_err(|e| draw(&e))?;
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|e| draw(&e))?;
    }
    root.present().map_err(|e| draw(&e))
}

/// The density of all pair distances in the data (thick black) and in each row's long
/// rollouts.
pub fn plot_pair_distances(figures: &SampledFigures, title: &str, path: &Path) -> Result<(), PlotError> {
    let draw = |e: &dyn std::fmt::Display| PlotError { path: path.display().to_string(), message: e.to_string() };
    let centres: Vec<f64> = figures.bin_edges.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
    let high =
        figures.densities.iter().flat_map(|(_, d)| d.iter()).chain(&figures.data_density).fold(0.0_f64, |m, v| if v.is_finite() { m.max(*v) } else { m });
    let (Some(&first), Some(&last)) = (figures.bin_edges.first(), figures.bin_edges.last()) else { return Err(draw(&"no bins")) };
    if high <= 0.0 {
        return Err(draw(&"no distances to plot"));
    }
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(first..last, 0.0..high * 1.1)
        .map_err(|e| draw(&e))?;
    chart.configure_mesh().x_desc("distance between two particles").y_desc("density (all 66 pairs)").draw().map_err(|e| draw(&e))?;
    let data = std::iter::once(("data".to_string(), &figures.data_density, BLACK.stroke_width(3)));
    let rows = figures.densities.iter().enumerate().map(|(i, (name, density))| {
        let (r, g, b) = Palette99::pick(i).to_rgba().rgb();
        (name.split(':').next().unwrap_or(name).to_string(), density, RGBColor(r, g, b).stroke_width(2))
    });
    for (label, density, style) in data.chain(rows) {
        chart
            .draw_series(LineSeries::new(centres.iter().copied().zip(density.iter().copied()), style))
            .map_err(|e| draw(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))
}

/// Spread/skill of each sampled row's ensembles against the horizon (1: calibrated,
/// the goal band 0.8–1.25 shaded), a bar from its value on the even starts to the odd.
pub fn plot_calibration(report: &SampledReport, title: &str, path: &Path) -> Result<(), PlotError> {
    let draw = |e: &dyn std::fmt::Display| PlotError { path: path.display().to_string(), message: e.to_string() };
    let sampled: Vec<_> = report.rows.iter().filter(|r| r.sampled).collect();
    let last = report.horizons.iter().copied().max().ok_or_else(|| draw(&"no horizons"))?;
    let halves = |e: &EnsembleScore| e.spread_skill_halves.filter(|h| h.even.is_finite() && h.odd.is_finite()).map(|h| (h.even.min(h.odd), h.even.max(h.odd)));
    let high = sampled
        .iter()
        .flat_map(|r| r.ensemble.iter().flat_map(|e| [e.spread_skill, halves(e).map_or(0.0, |(_, high)| high)]))
        .filter(|v| v.is_finite())
        .fold(1.5_f64, f64::max);
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..last as f64 * 1.05, 0.0..high * 1.1)
        .map_err(|e| draw(&e))?;
    chart.configure_mesh().x_desc("ensemble horizon (steps)").y_desc("spread / skill").draw().map_err(|e| draw(&e))?;
    chart.draw_series(std::iter::once(Rectangle::new([(0.0, 0.8), (last as f64 * 1.05, 1.25)], RGBColor(220, 235, 220).filled()))).map_err(|e| draw(&e))?;
    for (i, row) in sampled.iter().enumerate() {
        let (r, g, b) = Palette99::pick(i).to_rgba().rgb();
        let style = RGBColor(r, g, b).stroke_width(3);
        let points: Vec<(f64, f64)> = row.ensemble.iter().filter(|e| e.spread_skill.is_finite()).map(|e| (e.horizon as f64, e.spread_skill)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(|e| draw(&e))?
            .label(row.name.split(':').next().unwrap_or(&row.name).to_string())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, style.filled()))).map_err(|e| draw(&e))?;
        let bars = row.ensemble.iter().filter(|e| e.spread_skill.is_finite()).filter_map(|e| {
            halves(e).map(|(low, high)| ErrorBar::new_vertical(e.horizon as f64, low, e.spread_skill, high, RGBColor(r, g, b).stroke_width(2), 10))
        });
        chart.draw_series(bars).map_err(|e| draw(&e))?;
    }
    chart.configure_series_labels().position(SeriesLabelPosition::UpperRight).border_style(BLACK).background_style(WHITE).draw().map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))
}
