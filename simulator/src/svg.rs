//! `timeline.svg`: the run at a glance, hand-written SVG with no dependency.
//!
//! Fault windows are shaded bands across every panel, labelled on top; the
//! panels below plot the sampled time series: membership view sizes (the
//! smallest and largest view among running agents, and how many processes
//! are up), datagrams per second, Raft, telemetry freshness, and false
//! "down" verdicts so far.

use std::fmt::Write as _;

use crate::metrics::Sample;
use crate::report::Report;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const PANEL_HEIGHT: f64 = 150.0;
const PANEL_GAP: f64 = 40.0;
const TOP: f64 = 70.0;
/// Most band labels drawn; the rest are shaded but unlabelled.
const BAND_LABELS_MAX: usize = 40;

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    /// `None`: the sample has no value for this series (skipped).
    value: fn(&Sample) -> Option<f64>,
}

struct Panel<'a> {
    title: &'a str,
    series: Vec<Series<'a>>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG document for `report`.
pub(crate) fn timeline(report: &Report) -> String {
    let panels = [
        Panel {
            title: "membership view size (min, max over running agents) and processes up",
            series: vec![
                Series {
                    name: "up",
                    color: "#999999",
                    value: |s| Some(s.nodes_up as f64),
                },
                Series {
                    name: "view max",
                    color: "#1f77b4",
                    value: |s| Some(s.view_max as f64),
                },
                Series {
                    name: "view min",
                    color: "#d62728",
                    value: |s| Some(s.view_min as f64),
                },
            ],
        },
        Panel {
            title: "datagrams per second (whole cluster)",
            series: vec![Series {
                name: "msg/s",
                color: "#2ca02c",
                value: |s| Some(s.messages_per_s),
            }],
        },
        Panel {
            title: "Raft: highest term (line), leader with a majority (band at 1 = yes), catalog index / 10",
            series: vec![
                Series {
                    name: "term",
                    color: "#ff7f0e",
                    value: |s| Some(s.raft_term as f64),
                },
                Series {
                    name: "leader",
                    color: "#17becf",
                    value: |s| Some(f64::from(u8::from(s.raft_leader))),
                },
                Series {
                    name: "catalog/10",
                    color: "#8c564b",
                    value: |s| Some(s.catalog_index as f64 / 10.0),
                },
            ],
        },
        Panel {
            title: "telemetry: how stale sampled agents' copies of each other's records are, p99 (s)",
            series: vec![Series {
                name: "stale p99 s",
                color: "#e377c2",
                value: |s| s.telemetry_stale_p99_s,
            }],
        },
        Panel {
            title: "false down verdicts (cumulative)",
            series: vec![Series {
                name: "false downs",
                color: "#9467bd",
                value: |s| Some(s.false_downs as f64),
            }],
        },
    ];
    let height = TOP + panels.len() as f64 * (PANEL_HEIGHT + PANEL_GAP) + 20.0;
    let span = report.simulated_s.max(1e-9);
    let x = |t: f64| LEFT + (t / span).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let verdict = if report.pass { "PASS" } else { "FAIL" };
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{} — seed {} — {} nodes — {verdict}</text>"#,
        escape(&report.scenario),
        report.seed,
        report.nodes
    );
    let bottom = TOP + panels.len() as f64 * (PANEL_HEIGHT + PANEL_GAP) - PANEL_GAP;
    for (i, band) in report.bands.iter().enumerate() {
        let start = x(band.start_s);
        let end = x(band.end_s.unwrap_or(report.simulated_s)).max(start + 1.5);
        let color = match band.kind.as_str() {
            "crash" | "restart" => "#d62728",
            "pause" => "#ff7f0e",
            "partition" => "#1f77b4",
            _ => "#8c564b",
        };
        let _ = writeln!(
            svg,
            r#"<rect x="{start:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="{color}" fill-opacity="0.12"><title>{}</title></rect>"#,
            end - start,
            bottom - TOP,
            escape(&band.label)
        );
        if i < BAND_LABELS_MAX {
            let y = 34.0 + (i % 3) as f64 * 11.0;
            let _ = writeln!(
                svg,
                r#"<text x="{start:.1}" y="{y}" fill="{color}">{}</text>"#,
                escape(&band.label)
            );
        }
    }
    for (index, panel) in panels.iter().enumerate() {
        let top = TOP + index as f64 * (PANEL_HEIGHT + PANEL_GAP);
        let max = report
            .samples
            .iter()
            .flat_map(|s| {
                panel
                    .series
                    .iter()
                    .filter_map(move |series| (series.value)(s))
            })
            .fold(0.0_f64, f64::max)
            .max(1.0);
        let y = |v: f64| top + PANEL_HEIGHT - (v / max) * PANEL_HEIGHT;
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{top}" width="{:.1}" height="{PANEL_HEIGHT}" fill="none" stroke="#cccccc"/>"##,
            WIDTH - LEFT - RIGHT
        );
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="{:.1}">{}</text>"#,
            top - 4.0,
            escape(panel.title)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{max:.0}</text><text x="{:.1}" y="{:.1}" text-anchor="end">0</text>"#,
            LEFT - 4.0,
            top + 10.0,
            LEFT - 4.0,
            top + PANEL_HEIGHT
        );
        for (k, series) in panel.series.iter().enumerate() {
            let mut points = String::new();
            for sample in &report.samples {
                if let Some(value) = (series.value)(sample) {
                    let _ = write!(points, "{:.1},{:.1} ", x(sample.t_s), y(value));
                }
            }
            let _ = writeln!(
                svg,
                r#"<polyline points="{points}" fill="none" stroke="{}" stroke-width="1.2"/>"#,
                series.color
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" fill="{}" text-anchor="end">{}</text>"#,
                WIDTH - RIGHT - 4.0,
                top + 12.0 + k as f64 * 12.0,
                series.color,
                series.name
            );
        }
    }
    let ticks = 10;
    for tick in 0..=ticks {
        let t = span * f64::from(tick) / f64::from(ticks);
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0} s</text>"#,
            x(t),
            bottom + 14.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}
