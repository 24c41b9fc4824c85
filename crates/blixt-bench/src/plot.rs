//! PNG plots for docs/benchmarks.md, drawn with plotters' bitmap backend.
//!
//! Text is rendered by ab_glyph from a TrueType font read at run time (Debian's
//! fonts-dejavu-core, which `bench/run.sh` installs): no fontconfig or freetype build
//! dependency, and the PNGs look the same on every machine.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

/// Fonts tried in order.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];
const FONT: &str = "sans-serif";

pub const BLUE: RGBColor = RGBColor(31, 119, 180);
pub const ORANGE: RGBColor = RGBColor(255, 127, 14);
pub const GREY: RGBColor = RGBColor(150, 150, 150);
pub const GREEN: RGBColor = RGBColor(44, 160, 44);
pub const RED: RGBColor = RGBColor(214, 39, 40);

fn register_font() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = FONT_PATHS
            .iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| {
                format!(
                    "no TrueType font found (tried {}): apt-get install fonts-dejavu-core",
                    FONT_PATHS.join(", ")
                )
            })?;
        let bytes = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
        // plotters keeps fonts for the life of the process
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| format!("{path} is not a usable font"))?;
        plotters::style::register_font(FONT, FontStyle::Bold, bytes)
            .map_err(|_| format!("{path} is not a usable font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// One series of a horizontal bar chart: a value per category, with an optional range.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    /// (median, min, max) per category; `None` leaves the slot empty.
    pub values: Vec<Option<(f64, f64, f64)>>,
}

/// A vertical reference line (a goal or an ideal).
#[derive(Debug, Clone)]
pub struct Marker {
    pub label: String,
    pub x: f64,
    pub color: RGBColor,
}

/// A horizontal grouped bar chart: categories top to bottom, one bar per series, whiskers
/// from min to max, the median written at the end of each bar.
#[derive(Debug, Clone)]
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub categories: Vec<String>,
    pub series: Vec<Series>,
    pub markers: Vec<Marker>,
    /// Digits after the point in value labels.
    pub decimals: usize,
    /// Where the legend goes (where the bars are short).
    pub legend: SeriesLabelPosition,
}

impl BarChart {
    pub fn draw(&self, path: &Path) -> Result<PathBuf> {
        register_font()?;
        if self.categories.is_empty() || self.series.is_empty() {
            bail!("{}: nothing to plot", self.title);
        }
        let n = self.categories.len();
        let rows_px = 30 + 26 * self.series.len() as u32;
        let height = 150 + rows_px * n as u32;
        let root = BitMapBackend::new(path, (1100, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let max = self
            .series
            .iter()
            .flat_map(|s| s.values.iter().flatten().map(|v| v.2.max(v.0)))
            .chain(self.markers.iter().map(|m| m.x))
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let x_max = max * 1.18;
        let categories = self.categories.clone();
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, (FONT, 22).into_font())
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(330)
            .build_cartesian_2d(0.0..x_max, (n as f64 - 0.5)..-0.5)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n + 1)
            .y_label_formatter(&|y| {
                let i = y.round();
                if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < categories.len() {
                    categories[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .x_desc(&self.x_label)
            .label_style((FONT, 15).into_font())
            .axis_desc_style((FONT, 16).into_font())
            .draw()
            .map_err(|e| anyhow!("{e}"))?;

        let k = self.series.len() as f64;
        let band = 0.8;
        let bar = band / k;
        for (si, s) in self.series.iter().enumerate() {
            let color = s.color;
            let mut first = true;
            for (ci, v) in s.values.iter().enumerate() {
                let Some((med, lo, hi)) = *v else { continue };
                let y0 = ci as f64 - band / 2.0 + si as f64 * bar;
                let y1 = y0 + bar * 0.9;
                let rect = Rectangle::new([(0.0, y0), (med.max(0.0), y1)], color.filled());
                let anno = chart
                    .draw_series(std::iter::once(rect))
                    .map_err(|e| anyhow!("{e}"))?;
                if first {
                    anno.label(&s.label).legend(move |(x, y)| {
                        Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                    });
                    first = false;
                }
                let ym = (y0 + y1) / 2.0;
                if hi > lo {
                    chart
                        .draw_series(std::iter::once(PathElement::new(
                            vec![(lo.max(0.0), ym), (hi, ym)],
                            BLACK.stroke_width(1),
                        )))
                        .map_err(|e| anyhow!("{e}"))?;
                }
                let text = format!("{:.*}", self.decimals, med);
                chart
                    .draw_series(std::iter::once(Text::new(
                        text,
                        (med.max(hi).max(0.0) + x_max * 0.008, ym - bar * 0.3),
                        (FONT, 14).into_font(),
                    )))
                    .map_err(|e| anyhow!("{e}"))?;
            }
        }
        for m in &self.markers {
            let color = m.color;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(m.x, -0.5), (m.x, n as f64 - 0.5)],
                    color.stroke_width(2),
                )))
                .map_err(|e| anyhow!("{e}"))?
                .label(&m.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(self.legend.clone())
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 15).into_font())
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        root.present()
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path.to_path_buf())
    }
}

/// A horizontal stacked bar chart: one bar per category, made of colored segments.
#[derive(Debug, Clone)]
pub struct StackedChart {
    pub title: String,
    pub x_label: String,
    pub categories: Vec<String>,
    /// (segment label, color, value per category).
    pub segments: Vec<(String, RGBColor, Vec<f64>)>,
}

/// Colors for stacked segments, in order.
pub const PALETTE: [RGBColor; 7] = [
    BLUE,
    RED,
    ORANGE,
    GREEN,
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    GREY,
];

impl StackedChart {
    pub fn draw(&self, path: &Path) -> Result<PathBuf> {
        register_font()?;
        if self.categories.is_empty() || self.segments.is_empty() {
            bail!("{}: nothing to plot", self.title);
        }
        let n = self.categories.len();
        let height = 200 + 44 * n as u32 + 22 * self.segments.len() as u32;
        let root = BitMapBackend::new(path, (1100, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let totals: Vec<f64> = (0..n)
            .map(|i| self.segments.iter().map(|s| s.2[i].max(0.0)).sum())
            .collect();
        let x_max = totals.iter().copied().fold(1e-9, f64::max) * 1.12;
        let categories = self.categories.clone();
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, (FONT, 22).into_font())
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(330)
            .build_cartesian_2d(0.0..x_max, (n as f64 - 0.5)..-0.5)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n + 1)
            .y_label_formatter(&|y| {
                let i = y.round();
                if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < categories.len() {
                    categories[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .x_desc(&self.x_label)
            .label_style((FONT, 15).into_font())
            .axis_desc_style((FONT, 16).into_font())
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        let mut start = vec![0.0f64; n];
        for (label, color, values) in &self.segments {
            let color = *color;
            let rects: Vec<_> = (0..n)
                .map(|i| {
                    let v = values[i].max(0.0);
                    let r = Rectangle::new(
                        [(start[i], i as f64 - 0.35), (start[i] + v, i as f64 + 0.35)],
                        color.filled(),
                    );
                    start[i] += v;
                    r
                })
                .collect();
            chart
                .draw_series(rects)
                .map_err(|e| anyhow!("{e}"))?
                .label(label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
        }
        chart
            .draw_series((0..n).map(|i| {
                Text::new(
                    format!("{:.0}", totals[i]),
                    (totals[i] + x_max * 0.008, i as f64 - 0.1),
                    (FONT, 14).into_font(),
                )
            }))
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 14).into_font())
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        root.present()
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path.to_path_buf())
    }
}
