//! `muster-bench chart`: an SVG of latency percentiles per server per
//! scenario from `--json` reports.
//!
//! Each input file is one `--json` report. Files are grouped by the label
//! and server taken from the file name, `<label>__<server>__<anything>.json`
//! (what `perf/run.sh` writes); a file named otherwise is grouped by its
//! `scenario` field and `url`. Within a group every percentile is the median
//! over the group's files (rounds). For `subscribe` reports the plotted
//! latency is `push_from_send_latency_us` (write sent to datagram receipt),
//! or `push_latency_us` (from the write's ok) when the former is absent: a
//! push that arrives before the ok is recorded as 0 there, which a log axis
//! cannot show.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

/// Percentiles plotted, in order, with their JSON keys.
pub const PERCENTILES: [(&str, &str); 4] = [
    ("p50", "p50"),
    ("p90", "p90"),
    ("p99", "p99"),
    ("p99.9", "p999"),
];

/// Median of `xs` (mean of the middle two for an even count); `None` if empty.
pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One report's grouping key and latency percentiles (us).
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Scenario label (panel).
    pub label: String,
    /// Server (line).
    pub server: String,
    /// p50, p90, p99, p99.9 in microseconds.
    pub latency_us: [f64; 4],
}

/// Reads one report file.
pub fn read_sample(path: &Path) -> Result<Sample, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    sample_from(stem, &v).ok_or_else(|| format!("{}: no latency percentiles", path.display()))
}

/// Builds a [`Sample`] from a file stem and its parsed report.
pub fn sample_from(stem: &str, v: &Value) -> Option<Sample> {
    let parts: Vec<&str> = stem.split("__").collect();
    let (label, server) = if parts.len() >= 2 {
        (parts[0].to_string(), parts[1].to_string())
    } else {
        (
            v.get("scenario")?.as_str()?.to_string(),
            v.get("url")?.as_str()?.to_string(),
        )
    };
    let lat = if v.get("scenario").and_then(Value::as_str) == Some("subscribe") {
        v.get("push_from_send_latency_us")
            .or_else(|| v.get("push_latency_us"))?
    } else {
        v.get("latency_us")?
    };
    let mut latency_us = [0.0; 4];
    for (slot, (_, key)) in latency_us.iter_mut().zip(PERCENTILES) {
        *slot = lat.get(key)?.as_f64()?;
    }
    Some(Sample {
        label,
        server,
        latency_us,
    })
}

/// One panel: a label and, per server, the median percentiles.
pub type Panel = (String, Vec<(String, [f64; 4])>);

/// Groups samples by label then server (first-seen order kept) and takes the
/// median of each percentile.
pub fn medians(samples: &[Sample]) -> Vec<Panel> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<[f64; 4]>> = BTreeMap::new();
    let mut servers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in samples {
        if !order.contains(&s.label) {
            order.push(s.label.clone());
        }
        let sv = servers.entry(s.label.clone()).or_default();
        if !sv.contains(&s.server) {
            sv.push(s.server.clone());
        }
        groups
            .entry((s.label.clone(), s.server.clone()))
            .or_default()
            .push(s.latency_us);
    }
    order
        .into_iter()
        .map(|label| {
            let rows = servers[&label]
                .iter()
                .map(|server| {
                    let g = &groups[&(label.clone(), server.clone())];
                    let mut m = [0.0; 4];
                    for (i, slot) in m.iter_mut().enumerate() {
                        let col: Vec<f64> = g.iter().map(|r| r[i]).collect();
                        *slot = median(&col).unwrap_or(f64::NAN);
                    }
                    (server.clone(), m)
                })
                .collect();
            (label, rows)
        })
        .collect()
}

fn server_color(server: &str, idx: usize) -> RGBColor {
    let s = server.to_ascii_lowercase();
    if s.contains("muster") {
        RGBColor(0x1f, 0x77, 0xb4)
    } else if s.contains("nacos") {
        RGBColor(0xd6, 0x27, 0x28)
    } else if s.contains("nginx") {
        RGBColor(0x2c, 0xa0, 0x2c)
    } else {
        [
            RGBColor(0x94, 0x67, 0xbd),
            RGBColor(0xff, 0x7f, 0x0e),
            RGBColor(0x8c, 0x56, 0x4b),
        ][idx % 3]
    }
}

/// Draws one panel per label (two columns), latency in ms on a log axis,
/// one line per server, and writes the SVG to `out`.
pub fn draw(files: &[PathBuf], out: &Path, title: &str) -> Result<(), String> {
    let samples = files
        .iter()
        .map(|f| read_sample(f))
        .collect::<Result<Vec<_>, _>>()?;
    if samples.is_empty() {
        return Err("no input reports".into());
    }
    let panels = medians(&samples);
    let cols = 2usize;
    let rows = panels.len().div_ceil(cols);
    let (pw, ph) = (560u32, 300u32);
    let size = (pw * cols as u32, ph * rows as u32 + 40);
    let root = SVGBackend::new(out, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (head, body) = root.split_vertically(40);
    head.titled(title, ("sans-serif", 20))
        .map_err(|e| e.to_string())?;
    let areas = body.split_evenly((rows, cols));
    for ((label, lines), area) in panels.iter().zip(areas.iter()) {
        let vals: Vec<f64> = lines
            .iter()
            .flat_map(|(_, m)| m.iter().copied())
            .filter(|v| v.is_finite() && *v > 0.0)
            .map(|us| us / 1000.0)
            .collect();
        let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = vals.iter().copied().fold(0.0f64, f64::max);
        let (lo, hi) = if vals.is_empty() {
            (0.01, 10.0)
        } else {
            (lo / 1.5, hi * 1.5)
        };
        let mut chart = ChartBuilder::on(area)
            .caption(label, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.2f64..3.2f64, (lo..hi).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_labels(4)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && (0.0..4.0).contains(&i) {
                    PERCENTILES[i as usize].0.to_string()
                } else {
                    String::new()
                }
            })
            .y_desc("latency (ms)")
            .y_label_formatter(&|y| {
                if *y >= 10.0 {
                    format!("{y:.0}")
                } else if *y >= 1.0 {
                    format!("{y:.1}")
                } else {
                    format!("{y:.2}")
                }
            })
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (server, m)) in lines.iter().enumerate() {
            let color = server_color(server, i);
            let pts: Vec<(f64, f64)> = m
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite() && **v > 0.0)
                .map(|(x, v)| (x as f64, v / 1000.0))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(server.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn medians_and_grouping() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        let r = |p50: f64| json!({"scenario":"list","url":"u","latency_us":{"p50":p50,"p90":2.0,"p99":3.0,"p999":4.0}});
        let s: Vec<Sample> = [
            (1.0, "muster"),
            (5.0, "muster"),
            (3.0, "muster"),
            (9.0, "nginx"),
        ]
        .iter()
        .map(|(p, srv)| sample_from(&format!("list-10__{srv}__r1"), &r(*p)).unwrap())
        .collect();
        let m = medians(&s);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0, "list-10");
        assert_eq!(m[0].1[0], ("muster".to_string(), [3.0, 2.0, 3.0, 4.0]));
        assert_eq!(m[0].1[1].0, "nginx");
    }

    #[test]
    fn subscribe_uses_push_from_send_latency() {
        let v = json!({"scenario":"subscribe","url":"u",
            "latency_us":{"p50":1.0,"p90":1.0,"p99":1.0,"p999":1.0},
            "push_latency_us":{"p50":7.0,"p90":8.0,"p99":9.0,"p999":10.0}});
        let s = sample_from("plain", &v).unwrap();
        assert_eq!(s.latency_us, [7.0, 8.0, 9.0, 10.0]);
        let mut v = v;
        v["push_from_send_latency_us"] = json!({"p50":17.0,"p90":18.0,"p99":19.0,"p999":20.0});
        let s = sample_from("plain", &v).unwrap();
        assert_eq!((s.label.as_str(), s.server.as_str()), ("subscribe", "u"));
        assert_eq!(s.latency_us, [17.0, 18.0, 19.0, 20.0]);
    }

    #[test]
    fn draws_svg() {
        let dir = std::env::temp_dir().join(format!("muster-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("list-10__muster__r1.json");
        std::fs::write(
            &f,
            r#"{"scenario":"list","url":"u","latency_us":{"p50":100.0,"p90":200.0,"p99":900.0,"p999":3000.0}}"#,
        )
        .unwrap();
        let out = dir.join("out.svg");
        draw(&[f], &out, "t").unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("list-10") && svg.contains("muster"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
