//! `phone-ledger loadtest --report FILE.html`: one self-contained page (no script, no network)
//! with the run's settings, throughput and p50/p99 latency over time, the latency histogram of
//! each operation, the latency and outcome tables, and the verdict. The plots are drawn in Rust
//! with plotters, as inline SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::checker::{ClientOp, Op};
use super::{ms, OpStats, Report};

/// How many time slices the run is cut into for the plots over time.
const SLICES: u64 = 60;
/// Plot size in pixels.
const WIDE: (u32, u32) = (960, 300);

/// Why the report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot draw the {what} plot: {message}")]
    Plot { what: &'static str, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn plot_error<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> ReportError {
    move |e| ReportError::Plot {
        what,
        message: format!("{e:?}"),
    }
}

/// Writes the report of `report` to `path`.
pub fn write_html(report: &Report, path: &Path) -> Result<(), ReportError> {
    let page = html(report)?;
    std::fs::write(path, page).map_err(|source| ReportError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// The page itself.
pub fn html(report: &Report) -> Result<String, ReportError> {
    let ops = &report.client_ops[report.setup_ops.min(report.client_ops.len())..];
    let slices = over_time(ops);
    let mut page = String::new();
    let verdict = if report.verdict.ok { "PASS" } else { "FAIL" };
    let _ = write!(
        page,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>phone-ledger load test: {verdict}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.15em; margin-top: 2em; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
th, td {{ padding: .2em .7em; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child, td.text {{ text-align: left; }}
.pass {{ color: #1a7f37; font-weight: bold; }} .fail {{ color: #cf222e; font-weight: bold; }}
.violation {{ color: #cf222e; font-family: monospace; font-size: 12px; }}
</style></head><body>
<h1>Load test: <span class="{class}">{verdict}</span></h1>
<p>{requests} requests in {elapsed:.1} s against {server}: <b>{throughput:.0} req/s</b>
({clients} clients, {numbers} numbers, {pools} pools, hot fraction {hot}, seed {seed}, mix <code>{mix}</code>).
The log held {events} events.</p>
"#,
        class = verdict.to_lowercase(),
        requests = report.requests,
        elapsed = report.elapsed_s,
        server = escape(&report.server),
        throughput = report.throughput_per_s,
        clients = report.settings.clients,
        numbers = report.settings.numbers,
        pools = report.settings.pools,
        hot = report.settings.hot_fraction,
        seed = report.settings.seed,
        mix = escape(&report.settings.mix),
        events = report.log_events,
    );
    page.push_str("<h2>Throughput over time</h2>\n");
    page.push_str(&throughput_plot(&slices)?);
    page.push_str("<h2>Latency over time (p50 and p99)</h2>\n");
    page.push_str(&latency_plot(&slices)?);
    page.push_str("<h2>Latency histogram per operation</h2>\n");
    page.push_str(&histogram_plot(ops)?);
    page.push_str("<h2>Latency per operation</h2>\n");
    page.push_str(&latency_table(report));
    page.push_str("<h2>Outcomes</h2>\n");
    page.push_str(&outcome_table(report));
    page.push_str("<h2>Verdict</h2>\n");
    page.push_str(&verdict_table(report));
    page.push_str("</body></html>\n");
    Ok(page)
}

/// `s` safe inside HTML text and attributes.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One slice of the run: when it ends (seconds from the first request), the answers in it, and
/// their p50 and p99 latency in milliseconds.
struct Slice {
    end_s: f64,
    per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// The run cut into [`SLICES`] slices by when each answer arrived.
fn over_time(ops: &[ClientOp]) -> Vec<Slice> {
    let (Some(start), Some(end)) = (ops.iter().map(|o| o.started_ns).min(), ops.iter().map(|o| o.finished_ns).max()) else {
        return vec![];
    };
    let width = ((end - start) / SLICES).max(1);
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); SLICES as usize + 1];
    for o in ops {
        let slice = ((o.finished_ns - start) / width).min(SLICES) as usize;
        latencies[slice].push(o.finished_ns.saturating_sub(o.started_ns));
    }
    latencies
        .into_iter()
        .enumerate()
        .map(|(i, mut l)| {
            l.sort_unstable();
            let at = |q: f64| {
                l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(0) as f64
                    / 1e6
            };
            Slice {
                end_s: ((i as u64 + 1) * width) as f64 / 1e9,
                per_s: l.len() as f64 / (width as f64 / 1e9),
                p50_ms: at(0.5),
                p99_ms: at(0.99),
            }
        })
        .collect()
}

fn throughput_plot(slices: &[Slice]) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, WIDE).into_drawing_area();
        area.fill(&WHITE).map_err(plot_error("throughput"))?;
        let max_x = slices.last().map_or(1.0, |s| s.end_s);
        let max_y = slices.iter().map(|s| s.per_s).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&area)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_x, 0.0..max_y)
            .map_err(plot_error("throughput"))?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("answers per second")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_error("throughput"))?;
        chart
            .draw_series(LineSeries::new(slices.iter().map(|s| (s.end_s, s.per_s)), BLUE.stroke_width(2)))
            .map_err(plot_error("throughput"))?;
        area.present().map_err(plot_error("throughput"))?;
    }
    Ok(svg)
}

fn latency_plot(slices: &[Slice]) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, WIDE).into_drawing_area();
        area.fill(&WHITE).map_err(plot_error("latency"))?;
        let max_x = slices.last().map_or(1.0, |s| s.end_s);
        let max_y = slices.iter().map(|s| s.p99_ms).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(&area)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_x, 0.0..max_y)
            .map_err(plot_error("latency"))?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("milliseconds")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_error("latency"))?;
        for (label, color, pick) in [
            ("p50", GREEN, (|s: &Slice| s.p50_ms) as fn(&Slice) -> f64),
            ("p99", RED, |s: &Slice| s.p99_ms),
        ] {
            chart
                .draw_series(LineSeries::new(slices.iter().map(|s| (s.end_s, pick(s))), color.stroke_width(2)))
                .map_err(plot_error("latency"))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error("latency"))?;
        area.present().map_err(plot_error("latency"))?;
    }
    Ok(svg)
}

/// Histogram buckets per doubling of the latency (quarter octaves).
const BUCKETS_PER_OCTAVE: f64 = 4.0;

/// The histogram bucket of a latency: buckets grow by 2^(1/4) from 1/16 ms.
fn bucket_of(latency_ns: u64) -> u32 {
    let ms = latency_ns as f64 / 1e6;
    ((ms * 16.0).max(1.0).log2() * BUCKETS_PER_OCTAVE).floor() as u32
}

/// The upper bound of a bucket, in milliseconds.
fn bucket_ms(bucket: u32) -> f64 {
    2f64.powf((bucket + 1) as f64 / BUCKETS_PER_OCTAVE) / 16.0
}

/// One line per operation: how many of its answers fell in each latency bucket (log scale).
fn histogram_plot(ops: &[ClientOp]) -> Result<String, ReportError> {
    let mut by_op: BTreeMap<Op, BTreeMap<u32, u64>> = BTreeMap::new();
    for o in ops {
        *by_op
            .entry(o.op)
            .or_default()
            .entry(bucket_of(o.finished_ns.saturating_sub(o.started_ns)))
            .or_default() += 1;
    }
    let last_bucket = by_op.values().flat_map(|b| b.keys().copied()).max().unwrap_or(1) + 1;
    let max_count = by_op.values().flat_map(|b| b.values().copied()).max().unwrap_or(1);
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, (WIDE.0, 380)).into_drawing_area();
        area.fill(&WHITE).map_err(plot_error("histogram"))?;
        let mut chart = ChartBuilder::on(&area)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (1.0 / 16.0..bucket_ms(last_bucket)).log_scale(),
                0u64..max_count + max_count / 10 + 1,
            )
            .map_err(plot_error("histogram"))?;
        chart
            .configure_mesh()
            .x_desc("latency, milliseconds (log scale; each point is its bucket's upper bound)")
            .y_desc("answers")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_error("histogram"))?;
        for (i, (op, buckets)) in by_op.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points = (0..=last_bucket).map(|b| (bucket_ms(b), buckets.get(&b).copied().unwrap_or(0)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(plot_error("histogram"))?
                .label(op.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(plot_error("histogram"))?;
        area.present().map_err(plot_error("histogram"))?;
    }
    Ok(svg)
}

fn latency_row(name: &str, s: &OpStats) -> String {
    format!(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
        escape(name),
        s.count,
        s.ok,
        ms(s.p50_us),
        ms(s.p90_us),
        ms(s.p99_us),
        ms(s.p999_us),
        ms(s.max_us)
    )
}

fn latency_table(report: &Report) -> String {
    let mut t = String::from(
        "<table><tr><th>operation</th><th>count</th><th>ok</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th></tr>\n",
    );
    for (name, s) in &report.operations {
        t.push_str(&latency_row(name, s));
    }
    t.push_str(&latency_row("all", &report.overall));
    t.push_str("</table>\n");
    t
}

fn outcome_table(report: &Report) -> String {
    let mut t = String::from("<table><tr><th>operation</th><th>outcome</th><th>count</th></tr>\n");
    for (name, s) in &report.operations {
        for (outcome, n) in &s.outcomes {
            let _ = writeln!(
                t,
                "<tr><td>{}</td><td class=\"text\">{}</td><td>{n}</td></tr>",
                escape(name),
                escape(outcome)
            );
        }
    }
    t.push_str("</table>\n");
    t
}

fn verdict_table(report: &Report) -> String {
    let mut t = String::from("<table><tr><th>check</th><th>checked</th><th>result</th></tr>\n");
    for c in &report.verdict.checks {
        let (class, mark) = if c.violations.is_empty() {
            ("pass", "PASS")
        } else {
            ("fail", "FAIL")
        };
        let _ = writeln!(
            t,
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{mark}</td></tr>",
            escape(&c.name),
            c.checked
        );
        for v in &c.violations {
            let _ = writeln!(t, "<tr><td colspan=\"3\" class=\"violation\">{}</td></tr>", escape(v));
        }
    }
    t.push_str("</table>\n");
    t
}
