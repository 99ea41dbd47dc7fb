//! `--plot DIR`: PNG charts of a report, drawn with `plotters`.
//!
//! - `DIR/<scenario>-ratios.png`, for every report with a ratio: one
//!   horizontal bar per row for "vs kernel" and one for "vs stock smoltcp",
//!   growing from a line at 1x on a log axis (to the right where usertcp
//!   is better, to the left where it is worse).
//! - `DIR/<scenario>.png`, for reports whose rows sit on an x axis
//!   ([`Row::x`], e.g. `scale`'s connection counts): each side's figure
//!   against x, both axes logarithmic.
//!
//! Text needs a font. plotters' `ab_glyph` rasteriser (pure Rust) is fed a
//! TrueType file read at run time: `$LOOPBENCH_FONT` if set, else the
//! first of [`FONT_PATHS`] that exists (Debian's `fonts-dejavu-core`
//! provides the first). With none, the charts are drawn without text (bars,
//! curves and grid only) and a line on stderr says so: a missing font
//! never fails a run.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Metric, Report, Row, format_number};

/// Fonts tried in turn when `$LOOPBENCH_FONT` is not set.
pub const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

/// The family name the font is registered under.
const FAMILY: &str = "sans-serif";
/// Width of every chart, pixels.
const WIDTH: u32 = 1100;
/// Width of the row labels left of the bars, pixels.
const LABEL_WIDTH: u32 = 430;

/// usertcp's colour (and the "vs kernel" bars).
const USERTCP: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
/// The kernel's colour.
const KERNEL: RGBColor = RGBColor(0x55, 0x55, 0x55);
/// Stock smoltcp's colour (and the "vs smoltcp" bars).
const SMOLTCP: RGBColor = RGBColor(0xff, 0x7f, 0x0e);

/// Label text anchored at its left end, centred vertically.
fn left_centred() -> TextStyle<'static> {
    TextStyle::from((FAMILY, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center))
}

/// Registers a font once per process; returns where it came from, or
/// `None` when none could be loaded.
pub fn font() -> Option<&'static str> {
    static FONT: OnceLock<Option<String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let mut candidates: Vec<String> = std::env::var("LOOPBENCH_FONT").into_iter().collect();
        candidates.extend(FONT_PATHS.iter().map(|p| (*p).to_owned()));
        candidates.into_iter().find(|path| {
            let Ok(bytes) = std::fs::read(path) else {
                return false;
            };
            // The font lives as long as the process: plotters keeps a
            // `'static` reference to it.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok()
        })
    })
    .as_deref()
}

fn draw_err(err: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("plot: {err}"))
}

/// Writes the report's charts into `dir` (created if needed) and returns
/// their paths. Text is drawn if a font is available (see [`font`]).
pub fn write(report: &Report, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let text = font().is_some();
    let mut written = Vec::new();
    if report
        .rows
        .iter()
        .any(|r| r.vs_kernel().is_some() || r.vs_smoltcp().is_some())
    {
        let path = dir.join(format!("{}-ratios.png", report.scenario));
        ratios(report, &path, text)?;
        written.push(path);
    }
    if report.rows.iter().filter(|r| r.x.is_some()).count() >= 2 {
        let path = dir.join(format!("{}.png", report.scenario));
        curves(report, &path, text)?;
        written.push(path);
    }
    Ok(written)
}

/// The height of the ratio chart of `rows` rows, pixels.
pub fn ratios_height(rows: usize) -> u32 {
    140 + 44 * rows.max(1) as u32
}

/// The bar chart of the ratios (see the module docs).
pub fn ratios(report: &Report, path: &Path, text: bool) -> io::Result<()> {
    let rows: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.vs_kernel().is_some() || r.vs_smoltcp().is_some())
        .collect();
    let n = rows.len();
    let values: Vec<f64> = rows
        .iter()
        .flat_map(|r| [r.vs_kernel(), r.vs_smoltcp()])
        .flatten()
        .filter(|v| *v > 0.0)
        .chain([1.0])
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min) / 2.0;
    let hi = values.iter().copied().fold(0.0, f64::max) * 2.0;
    let root = BitMapBackend::new(path, (WIDTH, ratios_height(n))).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let (labels, plot) = root.split_horizontally(if text { LABEL_WIDTH } else { 40 });
    let mut builder = ChartBuilder::on(&plot);
    builder.margin(10).margin_right(30);
    if text {
        builder
            .caption(
                format!("{}: how many times better usertcp is", report.scenario),
                (FAMILY, 20),
            )
            .x_label_area_size(40);
    } else {
        builder.margin_top(40).x_label_area_size(10);
    }
    let mut chart = builder
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..n as f64)
        .map_err(draw_err)?;
    let mut mesh = chart.configure_mesh();
    mesh.disable_y_mesh().y_labels(0);
    if text {
        mesh.x_desc("ratio (log scale; right of 1x, usertcp is better)")
            .x_label_formatter(&|v| format!("{}x", format_number(*v)))
            .label_style((FAMILY, 13));
    } else {
        mesh.x_labels(0);
    }
    mesh.draw().map_err(draw_err)?;
    chart
        .draw_series(LineSeries::new(
            [(1.0, 0.0), (1.0, n as f64)],
            BLACK.stroke_width(2),
        ))
        .map_err(draw_err)?;
    for (i, row) in rows.iter().enumerate() {
        // Row 0 at the top.
        let y = (n - 1 - i) as f64;
        for (value, color, top, bottom) in [
            (row.vs_kernel(), USERTCP, y + 0.92, y + 0.52),
            (row.vs_smoltcp(), SMOLTCP, y + 0.48, y + 0.08),
        ] {
            let Some(v) = value.filter(|v| *v > 0.0) else {
                continue;
            };
            // Bars grow from the 1x line: right when usertcp is better.
            chart
                .draw_series([Rectangle::new([(1.0, top), (v, bottom)], color.filled())])
                .map_err(draw_err)?;
            if text {
                chart
                    .draw_series([Text::new(
                        format!("{}x", format_number(v)),
                        (v.max(1.0), (top + bottom) / 2.0),
                        left_centred(),
                    )])
                    .map_err(draw_err)?;
            }
        }
        if text {
            let (_, py) = chart.plotting_area().map_coordinate(&(lo, y + 0.5));
            let (_, label_top) = labels.get_base_pixel();
            let name: String = row.workload.trim().chars().take(62).collect();
            labels
                .draw(&Text::new(name, (8, py - label_top), left_centred()))
                .map_err(draw_err)?;
        }
    }
    if text {
        let legend = (FAMILY, 13).into_font();
        let mut keys = vec![("vs kernel", USERTCP)];
        if rows.iter().any(|r| r.vs_smoltcp().is_some()) {
            keys.push(("vs stock smoltcp", SMOLTCP));
        }
        for (i, (name, color)) in keys.into_iter().enumerate() {
            let y = 12 + 20 * i as i32;
            labels
                .draw(&Rectangle::new([(8, y), (22, y + 12)], color.filled()))
                .map_err(draw_err)?;
            labels
                .draw(&Text::new(name, (28, y), legend.clone()))
                .map_err(draw_err)?;
        }
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

/// One side's curve: its name, its colour, its (x, y) points.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

/// The figures of the rows placed on an x axis, per side.
fn series(report: &Report) -> [Series; 3] {
    let points = |pick: &dyn Fn(&Row) -> Option<f64>| -> Vec<(f64, f64)> {
        report
            .rows
            .iter()
            .filter_map(|r| Some((r.x?, pick(r)?)))
            .filter(|&(x, y)| x > 0.0 && y > 0.0)
            .collect()
    };
    [
        ("usertcp", USERTCP, points(&|r| r.usertcp.value())),
        ("kernel", KERNEL, points(&|r| r.kernel.value())),
        (
            "stock smoltcp",
            SMOLTCP,
            points(&|r| r.smoltcp.as_ref().and_then(|f| f.value())),
        ),
    ]
}

/// The curves of each side's figure against x (see the module docs).
pub fn curves(report: &Report, path: &Path, text: bool) -> io::Result<()> {
    let sides = series(report);
    let all: Vec<(f64, f64)> = sides.iter().flat_map(|s| s.2.iter().copied()).collect();
    if all.is_empty() {
        return Err(io::Error::other("plot: no figure to draw"));
    }
    let min = |f: fn(&(f64, f64)) -> f64| all.iter().map(f).fold(f64::INFINITY, f64::min);
    let max = |f: fn(&(f64, f64)) -> f64| all.iter().map(f).fold(0.0, f64::max);
    let (x0, x1) = (min(|p| p.0) / 2.0, max(|p| p.0) * 2.0);
    let (y0, y1) = (min(|p| p.1) / 2.0, max(|p| p.1) * 2.0);
    let metric = report
        .rows
        .iter()
        .find(|r| r.x.is_some())
        .map_or(Metric::ReqPerSec, |r| r.metric);
    let root = BitMapBackend::new(path, (WIDTH, 650)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15).margin_right(30);
    if text {
        builder
            .caption(report.title.as_str(), (FAMILY, 18))
            .x_label_area_size(45)
            .y_label_area_size(80);
    } else {
        builder.x_label_area_size(10).y_label_area_size(10);
    }
    let mut chart = builder
        .build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale())
        .map_err(draw_err)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("connections (log scale)")
            .y_desc(format!("{} (log scale)", metric.unit()))
            .x_label_formatter(&|v| short(*v))
            .y_label_formatter(&|v| short(*v))
            .label_style((FAMILY, 13));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(draw_err)?;
    for (name, color, points) in sides {
        if points.is_empty() {
            continue;
        }
        let line = chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))
            .map_err(draw_err)?;
        if text {
            line.label(name).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3))
            });
        }
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(draw_err)?;
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .draw()
            .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

/// `1.5M`, `20k`, `300`: short axis labels.
fn short(v: f64) -> String {
    let (value, suffix) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if value >= 10.0 || value.fract() == 0.0 {
        0
    } else {
        1
    };
    format!("{value:.digits$}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::Machine;
    use crate::measure::Config;
    use crate::report::Figure;

    fn report() -> Report {
        let row = |n: f64, u: f64, k: f64, s: f64| {
            Row::new(
                format!("{n} connections"),
                Metric::ReqPerSec,
                Figure::Value(u),
                Figure::Value(k),
            )
            .smoltcp(Figure::Value(s))
            .at(n)
        };
        Report {
            scenario: "plot-test",
            title: "plot test".to_owned(),
            machine: Machine::detect(),
            config: Config::quick(),
            rows: vec![
                row(1.0, 2e5, 5e4, 6e5),
                row(1e3, 2e5, 4e4, 1e4),
                row(1e5, 1.8e5, 3e4, 10.0),
            ],
            footer: Vec::new(),
        }
    }

    /// Width and height from a PNG's IHDR chunk.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&bytes[16..20]), be(&bytes[20..24]))
    }

    #[test]
    fn charts_are_pngs_of_the_expected_size_with_and_without_text() {
        let dir = std::env::temp_dir().join(format!("loopbench-plot-{}", std::process::id()));
        let report = report();
        let written = write(&report, &dir).unwrap();
        assert_eq!(
            written,
            vec![dir.join("plot-test-ratios.png"), dir.join("plot-test.png")]
        );
        let bars = std::fs::read(&written[0]).unwrap();
        assert_eq!(png_size(&bars), (WIDTH, ratios_height(3)));
        let lines = std::fs::read(&written[1]).unwrap();
        assert_eq!(png_size(&lines), (WIDTH, 650));
        // The text-free path (no font on the machine) draws too.
        let bare = dir.join("bare.png");
        ratios(&report, &bare, false).unwrap();
        assert_eq!(
            png_size(&std::fs::read(&bare).unwrap()),
            (WIDTH, ratios_height(3))
        );
        curves(&report, &bare, false).unwrap();
        assert_eq!(png_size(&std::fs::read(&bare).unwrap()), (WIDTH, 650));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_report_without_ratios_or_x_draws_nothing() {
        let mut report = report();
        for row in &mut report.rows {
            row.x = None;
            row.kernel = Figure::NotAvailable("test".to_owned());
            row.smoltcp = None;
        }
        let dir = std::env::temp_dir().join(format!("loopbench-noplot-{}", std::process::id()));
        assert!(write(&report, &dir).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn short_labels() {
        assert_eq!(short(1.0), "1");
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(1e6), "1M");
        assert_eq!(short(250_000.0), "250k");
    }
}
