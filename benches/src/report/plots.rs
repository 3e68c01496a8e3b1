//! The report's SVG plots. One colour per target in every plot; a hollow marker is a point where
//! the load generator, not the target, was the bottleneck. Legends sit beside the plotting area,
//! never over the data.

use std::error::Error;
use std::path::Path;

use plotters::coord::ranged1d::SegmentedCoord;
use plotters::coord::ranged1d::{SegmentValue, ValueFormatter};
use plotters::coord::types::{RangedCoordf64, RangedCoordi32};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::schema::{Results, Scenario, SummaryRow, FANOUT};
use super::targets::{workers, SLOW_ALONE, WS_360P, WS_720P};
use super::ReportError;

pub const FPS: &str = "fps-vs-viewers.svg";
pub const P99: &str = "p99-vs-viewers.svg";
pub const CPU: &str = "cpu-per-frame-vs-viewers.svg";
pub const SLOW: &str = "slow-viewers.svg";
pub const BYTES: &str = "bytes-per-viewer.svg";

const SIZE: (u32, u32) = (960, 540);
const LEGEND_WIDTH: u32 = 280;
const FONT: &str = "sans-serif";
const HOLLOW_NOTE: &str = "hollow marker: the load generator\nwas the bottleneck there";

/// A plot that was drawn, and the scenarios it shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    /// File name inside the plot directory.
    pub file: &'static str,
    pub title: String,
    pub scenarios: Vec<String>,
}

type DrawResult<T = ()> = Result<T, Box<dyn Error + Send + Sync>>;

/// Draws every plot the results have data for into `dir`.
pub fn draw_all(results: &Results, dir: &Path) -> Result<Vec<Plot>, ReportError> {
    let line_plots = [
        (
            FPS,
            "Delivered frame rate vs viewers",
            "fps, median over viewers",
            (|r: &SummaryRow| r.fps_median) as fn(&SummaryRow) -> Option<f64>,
            YScale::Linear,
        ),
        (
            P99,
            "p99 latency vs viewers",
            "p99 latency (ms, log scale)",
            |r| r.latency_p99_ms,
            YScale::Log,
        ),
        (
            CPU,
            "Server CPU per delivered frame vs viewers",
            // Log: one viewer costs a frame's whole fixed overhead (hundreds of µs), a thousand
            // share it (tens); a linear axis would flatten the part that matters.
            "CPU per delivered frame (µs, log scale)",
            |r| r.cpu_us_per_frame,
            YScale::Log,
        ),
    ];
    let mut plots = Vec::new();
    for (file, title, y_desc, value, scale) in line_plots {
        let (lines, scenarios) = viewer_lines(results, &[WS_720P, WS_360P], value);
        if lines.is_empty() {
            continue;
        }
        let chart = LineChart {
            title,
            y_desc,
            lines: &lines,
            scale,
        };
        draw_into(dir, file, |root| draw_line_chart(root, &chart))?;
        plots.push(Plot {
            file,
            title: title.to_owned(),
            scenarios,
        });
    }
    plots.extend(slow_plot(results, dir)?);
    plots.extend(bytes_plot(results, dir)?);
    Ok(plots)
}

fn draw_into(
    dir: &Path,
    file: &str,
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> DrawResult,
) -> Result<(), ReportError> {
    let path = dir.join(file);
    let result = {
        let root = SVGBackend::new(&path, SIZE).into_drawing_area();
        draw(&root).and_then(|()| Ok(root.present()?))
    };
    result.map_err(|e| ReportError::Plot {
        path,
        message: e.to_string(),
    })
}

/// The same colour for a target in every plot: fan-out grey, then one hue per worker count.
pub fn target_colour(target: &str) -> RGBColor {
    const WORKERS: [RGBColor; 4] = [
        RGBColor(31, 119, 180),
        RGBColor(230, 110, 0),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
    ];
    if target == FANOUT {
        return RGBColor(90, 90, 90);
    }
    match workers(target) {
        Some(n) if n >= 1 => WORKERS[(n as usize - 1) % WORKERS.len()],
        _ => RGBColor(140, 86, 75),
    }
}

pub fn target_label(target: &str) -> String {
    match workers(target) {
        _ if target == FANOUT => "bare fan-out".to_owned(),
        Some(1) => "server, 1 worker".to_owned(),
        Some(n) => format!("server, {n} workers"),
        None => target.to_owned(),
    }
}

/// "720p", "MJPEG 360p", "H.264 720p": what a line streams, JPEG being the default.
pub fn stream_label(scenario: &Scenario) -> String {
    let codec = if scenario.codec == "jpeg" {
        String::new()
    } else {
        codec_label(&scenario.codec) + " "
    };
    let transport = if scenario.mode == "mjpeg" {
        "MJPEG "
    } else {
        ""
    };
    format!("{codec}{transport}{}p", height(scenario))
}

/// "JPEG 720p", "JPEG 720p (MJPEG)", "H.264 720p": a stream among streams of other codecs.
pub fn full_stream_label(scenario: &Scenario) -> String {
    let transport = if scenario.mode == "mjpeg" {
        " (MJPEG)"
    } else {
        ""
    };
    format!(
        "{} {}p{transport}",
        codec_label(&scenario.codec),
        height(scenario)
    )
}

fn height(scenario: &Scenario) -> &str {
    let size = scenario.size.as_deref().unwrap_or("?");
    size.split_once('x').map_or(size, |(_, h)| h)
}

fn codec_label(codec: &str) -> String {
    match codec {
        "jpeg" => "JPEG".to_owned(),
        "h264" => "H.264".to_owned(),
        other => other.to_uppercase(),
    }
}

/// Fan-out first, then servers by worker count.
fn targets_of(scenario: &Scenario) -> Vec<&str> {
    let mut targets: Vec<&str> = scenario.summary.iter().map(|r| r.target.as_str()).collect();
    targets.sort_by_key(|t| (*t != FANOUT, workers(t), *t));
    targets.dedup();
    targets
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Dash {
    Solid,
    Dashed,
    Dotted,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Marker {
    Filled,
    Hollow,
    Triangle,
    Square,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum YScale {
    Linear,
    Log,
}

#[derive(Debug, Clone, Copy)]
struct Point {
    x: f64,
    y: f64,
    hollow: bool,
}

struct Line {
    colour: RGBColor,
    dash: Dash,
    label: String,
    points: Vec<Point>,
}

struct LineChart<'a> {
    title: &'a str,
    y_desc: &'a str,
    lines: &'a [Line],
    scale: YScale,
}

struct LegendEntry {
    label: String,
    colour: RGBColor,
    dash: Option<Dash>,
    marker: Option<Marker>,
}

/// One line per target and scenario, the first scenario solid and the next dashed, and the ids
/// of the scenarios that had any.
fn viewer_lines(
    results: &Results,
    ids: &[&str],
    value: fn(&SummaryRow) -> Option<f64>,
) -> (Vec<Line>, Vec<String>) {
    let mut lines = Vec::new();
    let mut used = Vec::new();
    let scenarios = ids.iter().filter_map(|id| results.scenario(id));
    for (scenario, dash) in scenarios.zip([Dash::Solid, Dash::Dashed, Dash::Dotted]) {
        for target in targets_of(scenario) {
            let mut rows: Vec<&SummaryRow> = scenario
                .summary
                .iter()
                .filter(|r| r.target == target)
                .collect();
            rows.sort_by_key(|r| r.viewers);
            let points: Vec<Point> = rows
                .iter()
                .filter_map(|r| {
                    let y = value(r).filter(|y| y.is_finite() && *y > 0.0)?;
                    Some(Point {
                        x: f64::from(r.viewers),
                        y,
                        hollow: r.loadgen_bottleneck(),
                    })
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            lines.push(Line {
                colour: target_colour(target),
                dash,
                label: format!("{}, {}", target_label(target), stream_label(scenario)),
                points,
            });
        }
        if lines.iter().any(|l| l.dash == dash) {
            used.push(scenario.id.clone());
        }
    }
    (lines, used)
}

fn draw_line_chart(root: &DrawingArea<SVGBackend, Shift>, chart: &LineChart) -> DrawResult {
    let (plot_area, legend_area) = titled_with_legend(root, chart.title)?;
    let points = || chart.lines.iter().flat_map(|l| &l.points);
    let x_max = points().map(|p| p.x).fold(1.0, f64::max) * 1.05;
    let y_max = points().map(|p| p.y).fold(f64::MIN_POSITIVE, f64::max);
    let y_min = points().map(|p| p.y).fold(f64::INFINITY, f64::min);
    let builder = || {
        let mut builder = ChartBuilder::on(&plot_area);
        builder
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(65);
        builder
    };
    match chart.scale {
        YScale::Linear => {
            let mut ctx = builder().build_cartesian_2d(0.0..x_max, 0.0..y_max * 1.15)?;
            draw_lines(&mut ctx, chart)?;
        }
        YScale::Log => {
            let range = (y_min / 1.5..y_max * 1.5).log_scale();
            let mut ctx = builder().build_cartesian_2d(0.0..x_max, range)?;
            draw_lines(&mut ctx, chart)?;
        }
    }
    let mut legend: Vec<LegendEntry> = chart
        .lines
        .iter()
        .map(|l| LegendEntry {
            label: l.label.clone(),
            colour: l.colour,
            dash: Some(l.dash),
            marker: Some(Marker::Filled),
        })
        .collect();
    if points().any(|p| p.hollow) {
        legend.push(hollow_entry());
    }
    draw_legend(&legend_area, &legend)
}

fn draw_lines<'a, Y>(
    ctx: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    chart: &LineChart,
) -> DrawResult
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    ctx.configure_mesh()
        .x_desc("viewers")
        .y_desc(chart.y_desc)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(WHITE)
        .draw()?;
    for line in chart.lines {
        let coords: Vec<(f64, f64)> = line.points.iter().map(|p| (p.x, p.y)).collect();
        ctx.draw_series(std::iter::once(path(coords, line.colour, line.dash)))?;
        draw_markers(ctx, &line.points, line.colour)?;
    }
    Ok(())
}

/// "500" rather than plotters' "500.0"; a decimal only where the step needs one.
fn tick(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// `'static` because plotters draws a series only of elements that outlive any borrow of them.
fn path<DB: DrawingBackend, C: Clone + 'static>(
    coords: Vec<C>,
    colour: RGBColor,
    dash: Dash,
) -> DynElement<'static, DB, C> {
    let style = colour.stroke_width(2);
    match dash {
        Dash::Solid => PathElement::new(coords, style).into_dyn(),
        Dash::Dashed => DashedPathElement::new(coords, 9, 6, style).into_dyn(),
        Dash::Dotted => DashedPathElement::new(coords, 2, 5, style).into_dyn(),
    }
}

/// A hollow marker gets a white disc under its ring, so the line does not run through it.
fn draw_markers<'a, Y>(
    ctx: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    points: &[Point],
    colour: RGBColor,
) -> DrawResult
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let hollow = points.iter().filter(|p| p.hollow);
    ctx.draw_series(hollow.map(|p| Circle::new((p.x, p.y), 5, WHITE.filled())))?;
    ctx.draw_series(points.iter().map(|p| {
        let radius = if p.hollow { 5 } else { 4 };
        Circle::new((p.x, p.y), radius, marker_style(colour, p.hollow))
    }))?;
    Ok(())
}

fn titled_with_legend<'a>(
    root: &DrawingArea<SVGBackend<'a>, Shift>,
    title: &str,
) -> DrawResult<(
    DrawingArea<SVGBackend<'a>, Shift>,
    DrawingArea<SVGBackend<'a>, Shift>,
)> {
    root.fill(&WHITE)?;
    let body = root.titled(title, (FONT, 24))?;
    Ok(body.split_horizontally(SIZE.0 - LEGEND_WIDTH))
}

fn hollow_entry() -> LegendEntry {
    LegendEntry {
        label: HOLLOW_NOTE.to_owned(),
        colour: BLACK,
        dash: None,
        marker: Some(Marker::Hollow),
    }
}

/// Entries top down: a line sample and/or marker, then the label, whose `\n`s start new lines.
fn draw_legend(area: &DrawingArea<SVGBackend, Shift>, entries: &[LegendEntry]) -> DrawResult {
    const LINE_HEIGHT: i32 = 18;
    let font = (FONT, 14)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let mut y = 40;
    for entry in entries {
        if let Some(dash) = entry.dash {
            area.draw(&path(vec![(8, y), (48, y)], entry.colour, dash))?;
        }
        if let Some(marker) = entry.marker {
            draw_marker(area, (28, y), marker, entry.colour)?;
        }
        for line in entry.label.lines() {
            area.draw(&Text::new(line.to_owned(), (58, y), font.clone()))?;
            y += LINE_HEIGHT;
        }
        y += 8;
    }
    Ok(())
}

fn draw_marker(
    area: &DrawingArea<SVGBackend, Shift>,
    at: (i32, i32),
    marker: Marker,
    colour: RGBColor,
) -> DrawResult {
    match marker {
        Marker::Filled => area.draw(&Circle::new(at, 4, colour.filled()))?,
        Marker::Hollow => {
            area.draw(&Circle::new(at, 5, WHITE.filled()))?;
            area.draw(&Circle::new(at, 5, colour.stroke_width(2)))?
        }
        Marker::Triangle => area.draw(&TriangleMarker::new(at, 6, colour.filled()))?,
        Marker::Square => area.draw(&Rectangle::new(
            [(at.0 - 6, at.1 - 6), (at.0 + 6, at.1 + 6)],
            colour.filled(),
        ))?,
    }
    Ok(())
}

/// One category of the slow-viewer plot: a target at a viewer count of a slow scenario.
struct SlowPoint {
    label: String,
    colour: RGBColor,
    p50_s: f64,
    max_s: f64,
    hollow: bool,
}

fn slow_points(results: &Results) -> (Vec<SlowPoint>, Vec<f64>, Vec<String>) {
    let scenarios: Vec<&Scenario> = results.scenarios.iter().filter(|s| s.slow > 0).collect();
    let rows: Vec<(&Scenario, &SummaryRow)> = scenarios
        .iter()
        .flat_map(|s| {
            targets_of(s)
                .into_iter()
                .flat_map(move |t| s.summary.iter().filter(move |r| r.target == t))
                .map(move |r| (*s, r))
        })
        .filter(|(_, r)| r.slow_latency_p50_ms.is_some() || r.slow_latency_max_ms.is_some())
        .collect();
    let one_group = rows
        .iter()
        .all(|(s, r)| (&s.id, r.viewers) == (&rows[0].0.id, rows[0].1.viewers));
    let points = rows
        .iter()
        .map(|(_, r)| SlowPoint {
            label: if one_group {
                target_label(&r.target)
            } else {
                format!("{}, {} viewers", target_label(&r.target), r.viewers)
            },
            colour: target_colour(&r.target),
            p50_s: r.slow_latency_p50_ms.unwrap_or(f64::NAN) / 1000.0,
            max_s: r.slow_latency_max_ms.unwrap_or(f64::NAN) / 1000.0,
            hollow: r.loadgen_bottleneck(),
        })
        .collect();
    let mut limits: Vec<f64> = scenarios
        .iter()
        .filter_map(|s| s.slow_age_limit_ms())
        .map(|ms| ms / 1000.0)
        .collect();
    limits.sort_by(f64::total_cmp);
    limits.dedup();
    let mut ids: Vec<String> = rows.iter().map(|(s, _)| s.id.clone()).collect();
    ids.dedup();
    (points, limits, ids)
}

fn slow_plot(results: &Results, dir: &Path) -> Result<Option<Plot>, ReportError> {
    let (points, limits, scenarios) = slow_points(results);
    if points.is_empty() {
        return Ok(None);
    }
    let title = "Slow viewers: age of the frames they receive";
    draw_into(dir, SLOW, |root| {
        draw_slow_chart(root, title, &points, &limits)
    })?;
    Ok(Some(Plot {
        file: SLOW,
        title: title.to_owned(),
        scenarios,
    }))
}

fn draw_slow_chart(
    root: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    points: &[SlowPoint],
    limits: &[f64],
) -> DrawResult {
    let (plot_area, legend_area) = titled_with_legend(root, title)?;
    let values = points.iter().flat_map(|p| [p.p50_s, p.max_s]);
    let y_max = values
        .chain(limits.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.1, f64::max)
        * 1.15;
    let labels: Vec<String> = points.iter().map(|p| p.label.clone()).collect();
    let mut ctx = category_chart(
        &plot_area,
        &labels,
        y_max,
        "age of a slow viewer's frame (s)",
    )?;
    for &limit in limits {
        let ends = vec![(SegmentValue::Exact(0), limit), (SegmentValue::Last, limit)];
        ctx.draw_series(std::iter::once(path(ends, LIMIT_COLOUR, Dash::Dashed)))?;
    }
    for (i, point) in (0..).zip(points) {
        draw_slow_point(&mut ctx, i, point)?;
    }
    let any_hollow = points.iter().any(|p| p.hollow);
    draw_legend(&legend_area, &slow_legend(limits, any_hollow))
}

const LIMIT_COLOUR: RGBColor = RGBColor(200, 30, 30);

type CategoryChart<'a> =
    ChartContext<'a, SVGBackend<'a>, Cartesian2d<SegmentedCoord<RangedCoordi32>, RangedCoordf64>>;

/// A chart with one named slot per label along x and a linear y from 0.
fn category_chart<'a>(
    area: &DrawingArea<SVGBackend<'a>, Shift>,
    labels: &[String],
    y_max: f64,
    y_desc: &str,
) -> DrawResult<CategoryChart<'a>> {
    let last = labels.len() as i32 - 1;
    let mut ctx = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d((0..last).into_segmented(), 0.0..y_max)?;
    let label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => usize::try_from(*i)
            .ok()
            .and_then(|i| labels.get(i))
            .cloned()
            .unwrap_or_default(),
        SegmentValue::Last => String::new(),
    };
    ctx.configure_mesh()
        .disable_x_mesh()
        .x_labels(labels.len())
        .x_label_formatter(&label)
        .y_desc(y_desc)
        .y_label_formatter(&|v| tick(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(WHITE)
        .draw()?;
    Ok(ctx)
}

fn marker_style(colour: RGBColor, hollow: bool) -> ShapeStyle {
    if hollow {
        colour.stroke_width(2)
    } else {
        colour.filled()
    }
}

/// The p50 and the max joined by a thin line, so that the spread reads as one target's.
fn draw_slow_point(ctx: &mut CategoryChart, i: i32, point: &SlowPoint) -> DrawResult {
    let x = SegmentValue::CenterOf(i);
    let style = marker_style(point.colour, point.hollow);
    if point.p50_s.is_finite() && point.max_s.is_finite() {
        let span = vec![(x.clone(), point.p50_s), (x.clone(), point.max_s)];
        ctx.draw_series(std::iter::once(PathElement::new(span, point.colour)))?;
    }
    if point.max_s.is_finite() {
        let max = TriangleMarker::new((x.clone(), point.max_s), 7, style);
        ctx.draw_series(std::iter::once(max))?;
    }
    if point.p50_s.is_finite() {
        ctx.draw_series(std::iter::once(Circle::new((x, point.p50_s), 5, style)))?;
    }
    Ok(())
}

fn slow_legend(limits: &[f64], any_hollow: bool) -> Vec<LegendEntry> {
    let marker = |label: &str, marker| LegendEntry {
        label: label.to_owned(),
        colour: BLACK,
        dash: None,
        marker: Some(marker),
    };
    let mut legend = vec![
        marker("median age (p50)", Marker::Filled),
        marker("oldest frame (max)", Marker::Triangle),
    ];
    legend.extend(limits.iter().map(|limit| LegendEntry {
        label: format!("target: two transmit times\n+ 0.1 s = {limit:.2} s"),
        colour: LIMIT_COLOUR,
        dash: Some(Dash::Dashed),
        marker: None,
    }));
    if any_hollow {
        legend.push(hollow_entry());
    }
    legend
}

/// What one viewer of a stream receives per second: a frame's bytes times the frame rate
/// delivered at the fewest viewers measured, where nothing is lost to load.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRate {
    pub label: String,
    pub codec: String,
    pub scenario: String,
    pub frame_bytes: u64,
    pub fps: f64,
    pub bytes_per_s: f64,
}

/// One per codec, mode and size: the scenarios with slow viewers, or the slow scenarios' fast
/// baseline, repeat a stream measured elsewhere.
pub fn stream_rates(results: &Results) -> Vec<StreamRate> {
    let mut seen = Vec::new();
    let mut rates = Vec::new();
    for scenario in results
        .scenarios
        .iter()
        .filter(|s| s.slow == 0 && s.id != SLOW_ALONE)
    {
        let key = (&scenario.codec, &scenario.mode, &scenario.size);
        if seen.contains(&key) {
            continue;
        }
        let Some(rate) = stream_rate(scenario) else {
            continue;
        };
        seen.push(key);
        rates.push(rate);
    }
    rates
}

fn stream_rate(scenario: &Scenario) -> Option<StreamRate> {
    let frame_bytes = scenario.frame_bytes?;
    let fewest = scenario
        .summary
        .iter()
        .filter(|r| r.fps_median.is_some())
        .min_by_key(|r| (r.viewers, r.is_fanout()))?;
    let fps = fewest.fps_median?;
    Some(StreamRate {
        label: full_stream_label(scenario),
        codec: scenario.codec.clone(),
        scenario: scenario.id.clone(),
        frame_bytes,
        fps,
        bytes_per_s: frame_bytes as f64 * fps,
    })
}

fn codec_colour(codec: &str) -> RGBColor {
    match codec {
        "jpeg" => RGBColor(70, 130, 180),
        "h264" => RGBColor(46, 139, 87),
        _ => RGBColor(120, 120, 120),
    }
}

fn bytes_plot(results: &Results, dir: &Path) -> Result<Option<Plot>, ReportError> {
    let rates = stream_rates(results);
    if rates.is_empty() {
        return Ok(None);
    }
    let title = "Bytes per viewer per second, by stream";
    draw_into(dir, BYTES, |root| draw_bytes_chart(root, title, &rates))?;
    Ok(Some(Plot {
        file: BYTES,
        title: title.to_owned(),
        scenarios: rates.iter().map(|r| r.scenario.clone()).collect(),
    }))
}

fn draw_bytes_chart(
    root: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    rates: &[StreamRate],
) -> DrawResult {
    let (plot_area, legend_area) = titled_with_legend(root, title)?;
    let y_max = rates.iter().map(StreamRate::kb_per_s).fold(1.0, f64::max) * 1.2;
    let labels: Vec<String> = rates.iter().map(|r| r.label.clone()).collect();
    let mut ctx = category_chart(&plot_area, &labels, y_max, "kB per viewer per second")?;
    let last = labels.len() as i32 - 1;
    for (i, rate) in (0..).zip(rates) {
        draw_bar(&mut ctx, i, last, rate)?;
    }
    draw_legend(&legend_area, &codec_legend(rates))
}

impl StreamRate {
    fn kb_per_s(&self) -> f64 {
        self.bytes_per_s / 1000.0
    }
}

/// A bar with its figure on top, so that the reader need not read it off the axis.
fn draw_bar(ctx: &mut CategoryChart, i: i32, last: i32, rate: &StreamRate) -> DrawResult {
    let right = if i < last {
        SegmentValue::Exact(i + 1)
    } else {
        SegmentValue::Last
    };
    let top = rate.kb_per_s();
    let mut bar = Rectangle::new(
        [(SegmentValue::Exact(i), 0.0), (right, top)],
        codec_colour(&rate.codec).filled(),
    );
    bar.set_margin(0, 0, 20, 20);
    ctx.draw_series(std::iter::once(bar))?;
    let font = (FONT, 14)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Bottom));
    let figure = format!("{top:.0} kB/s ({:.1} Mbit/s)", rate.bytes_per_s * 8.0 / 1e6);
    let text = Text::new(figure, (SegmentValue::CenterOf(i), top), font);
    ctx.draw_series(std::iter::once(text))?;
    Ok(())
}

fn codec_legend(rates: &[StreamRate]) -> Vec<LegendEntry> {
    let mut codecs: Vec<&str> = Vec::new();
    for rate in rates {
        if !codecs.contains(&rate.codec.as_str()) {
            codecs.push(&rate.codec);
        }
    }
    codecs
        .into_iter()
        .map(|codec| LegendEntry {
            label: codec_label(codec),
            colour: codec_colour(codec),
            dash: None,
            marker: Some(Marker::Square),
        })
        .collect()
}
