//! Capacity: for every real filesystem and every host's memory, what is left, how fast it is
//! being used (the least-squares slope over the range) and when it runs out — by that line
//! and by a Holt-Winters forecast (the analysis module's, with a daily season when the range
//! holds two days) — plus the forecasts the detectors keep (`telltale_forecast_*`). Ranges
//! over two days read hourly averages, which the rollups serve.

use serde_json::{Value, json};
use telltale_common::model::Labels;

use super::{Chart, Inputs, Section, Table, duration_text};
use crate::anomaly::forecast;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// One resource's capacity.
struct Row {
    name: String,
    size: f64,
    free: f64,
    /// Used per day (bytes; negative: freeing).
    growth_per_day: f64,
    /// Seconds until nothing is free, on the line; on the forecast.
    linear_s: f64,
    forecast_s: f64,
    points: Vec<(i64, f64)>,
}

/// Least-squares slope of `(t ms, v)` per millisecond.
fn slope(points: &[(i64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let t0 = points[0].0;
    let mx = points.iter().map(|p| (p.0 - t0) as f64).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for p in points {
        let dx = (p.0 - t0) as f64 - mx;
        sxy += dx * (p.1 - my);
        sxx += dx * dx;
    }
    if sxx == 0.0 { f64::NAN } else { sxy / sxx }
}

fn name(l: &Labels, keys: &[&str]) -> String {
    keys.iter()
        .filter_map(|k| l.get(k))
        .collect::<Vec<_>>()
        .join(" ")
}

fn rows(inp: &Inputs, free_q: &str, size_q: &str, keys: &[&str], start: i64, end: i64) -> Vec<Row> {
    // Over two days: hourly averages on whole hours (served from rollups); else 5 minutes.
    let step = if end - start > 2 * DAY { HOUR } else { 300_000 };
    let (s0, e0) = (
        start - start.rem_euclid(step) + step,
        end - end.rem_euclid(step),
    );
    let q = if step == HOUR {
        format!("avg_over_time({free_q}[1h])")
    } else {
        free_q.to_string()
    };
    let Ok(series) = inp.engine.range(&q, s0, e0, step) else {
        return Vec::new();
    };
    let now = |q: &str| match inp.engine.instant(q, end) {
        Ok(crate::metrics::promql::Value::Vector(v)) => v,
        _ => Vec::new(),
    };
    // The hourly averages give the slope and the forecast; what is free is the latest value.
    let (sizes, frees) = (now(size_q), now(free_q));
    let mut out = Vec::new();
    for s in series {
        let key = name(&s.labels, keys);
        let size = sizes
            .iter()
            .find(|(l, _)| name(l, keys) == key)
            .map_or(f64::NAN, |(_, v)| v.1);
        let points: Vec<(i64, f64)> = s
            .samples
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|p| (p.0, p.1))
            .collect();
        let Some(&(_, last)) = points.last() else {
            continue;
        };
        let free = frees
            .iter()
            .find(|(l, _)| name(l, keys) == key)
            .map_or(last, |(_, v)| v.1);
        let used_per_ms = -slope(&points);
        let linear_s = if used_per_ms > 0.0 {
            free / used_per_ms / 1000.0
        } else {
            f64::INFINITY
        };
        let values = forecast::on_grid(&s.samples, s0, e0, step);
        let season = if e0 - s0 >= 2 * DAY {
            (DAY / step) as usize
        } else {
            0
        };
        let horizon = (30 * DAY / step) as usize;
        let forecast_s = forecast::fit_for(&values, season, horizon)
            .and_then(|f| f.steps_until(0.0, horizon))
            .map_or(f64::INFINITY, |h| (h as i64 * step) as f64 / 1000.0);
        out.push(Row {
            name: key,
            size,
            free,
            growth_per_day: used_per_ms * DAY as f64,
            linear_s,
            forecast_s,
            points,
        });
    }
    out.sort_by(|a, b| a.linear_s.total_cmp(&b.linear_s).then(a.name.cmp(&b.name)));
    out
}

fn bytes(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = x.abs();
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{}{v:.1} {}", if x < 0.0 { "-" } else { "" }, units[u])
}

fn until(s: f64) -> String {
    if s.is_finite() {
        duration_text(s)
    } else {
        "not within 30 days".into()
    }
}

fn table(rows: &[Row], what: &str) -> Table {
    Table {
        headers: [
            what,
            "size",
            "free",
            "used per day",
            "full in (trend)",
            "full in (forecast)",
        ]
        .map(String::from)
        .to_vec(),
        rows: rows
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    bytes(r.size),
                    bytes(r.free),
                    bytes(r.growth_per_day),
                    until(r.linear_s),
                    until(r.forecast_s),
                ]
            })
            .collect(),
    }
}

fn json_rows(rows: &[Row]) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            json!({
                "name": r.name, "sizeBytes": r.size, "freeBytes": r.free,
                "usedPerDayBytes": r.growth_per_day,
                "secondsUntilFullTrend": r.linear_s,
                "secondsUntilFullForecast": r.forecast_s,
            })
        })
        .collect()
}

pub(super) fn report(inp: &Inputs, start: i64, end: i64) -> (String, Vec<Section>, Value) {
    let fs_sel = r#"{fstype!~"tmpfs|ramfs|overlay|squashfs|nsfs|fuse.*"}"#;
    let fs = rows(
        inp,
        &format!("node_filesystem_avail_bytes{fs_sel}"),
        &format!("node_filesystem_size_bytes{fs_sel}"),
        &["instance", "mountpoint"],
        start,
        end,
    );
    let mem = rows(
        inp,
        "node_memory_MemAvailable_bytes",
        "node_memory_MemTotal_bytes",
        &["instance"],
        start,
        end,
    );
    let detectors = match inp
        .engine
        .instant("telltale_forecast_seconds_until_limit", end)
    {
        Ok(crate::metrics::promql::Value::Vector(v)) => v,
        _ => Vec::new(),
    };
    let det_rows: Vec<Vec<String>> = detectors
        .iter()
        .map(|(l, s)| {
            let mut labels: Vec<String> = l
                .iter()
                .filter(|(k, _)| *k != "__name__")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort();
            vec![labels.join(", "), until(s.1)]
        })
        .collect();
    let soonest: Vec<(String, Vec<(i64, f64)>)> = fs
        .iter()
        .take(5)
        .map(|r| (r.name.clone(), r.points.clone()))
        .collect();
    let sections = vec![
        Section {
            heading: "Filesystems".into(),
            text: vec![format!(
                "{} filesystems, the soonest to fill first. Used per day is the least-squares \
                 slope of free space over the range; full in (trend) follows that line, full in \
                 (forecast) the Holt-Winters forecast.",
                fs.len()
            )],
            table: Some(table(&fs, "filesystem")),
            chart: (!soonest.is_empty()).then(|| Chart {
                title: "free space".into(),
                unit: "bytes".into(),
                series: soonest,
                line: None,
            }),
        },
        Section {
            heading: "Memory".into(),
            text: Vec::new(),
            table: Some(table(&mem, "host")),
            chart: None,
        },
        Section {
            heading: "Forecast detectors".into(),
            text: vec![
                "Time until each configured forecast reaches its limit \
                 (`telltale_forecast_seconds_until_limit`)."
                    .into(),
            ],
            table: Some(Table {
                headers: vec!["series".into(), "reaches its limit in".into()],
                rows: det_rows,
            }),
            chart: None,
        },
    ];
    let summary = json!({"filesystems": json_rows(&fs), "memory": json_rows(&mem)});
    ("Capacity".into(), sections, summary)
}
