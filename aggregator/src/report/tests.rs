//! Reports against a seeded history: the numbers in each report are the seeded ones.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use telltale_common::model::{Labels, STALE_NAN_BITS, Sample, SeriesSamples};

use super::*;
use crate::metrics::storage::memory::MemStorage;
use crate::metrics::storage::{AppendData, AppendRequest};

const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;
/// The end of every seeded range: 2026-11-30T00:00:00Z, a midnight.
const END: i64 = 1_796_083_200_000;

fn store(series: Vec<SeriesSamples>) -> Engine {
    let s = Arc::new(MemStorage::new());
    let out = s.append_now(AppendRequest {
        origin: None,
        data: AppendData::Series(series),
    });
    assert!(
        matches!(out, crate::metrics::storage::AppendOutcome::Stored { .. }),
        "{out:?}"
    );
    Engine::new(s, Duration::from_secs(300), 50_000_000)
}

fn series(pairs: &[(&str, &str)], samples: Vec<Sample>) -> SeriesSamples {
    SeriesSamples {
        labels: Labels::from_pairs(pairs.iter().copied()),
        samples,
    }
}

fn inputs<'a>(engine: &'a Engine, slos: &'a [crate::slo::Slo]) -> Inputs<'a> {
    Inputs {
        engine,
        slos,
        incidents: Vec::new(),
        remediations: Vec::new(),
        silences: Vec::new(),
        alert_rules: Vec::new(),
        archive_note: None,
    }
}

#[test]
fn the_slo_report_shows_the_seeded_burns() {
    // 100 requests a minute for 8 days at 5-minute samples; on the range's third day 1 in
    // 100 fail, on its sixth 10 in 100: 15 840 of 1 008 000 in the 7-day range.
    let start = END - 7 * DAY;
    let (mut total, mut bad) = (Vec::new(), Vec::new());
    let (mut t_sum, mut b_sum) = (0.0, 0.0);
    let mut t = END - 8 * DAY;
    while t <= END {
        let day = (t - 5 * MIN - start).div_euclid(DAY);
        t_sum += 500.0;
        b_sum += match day {
            2 => 5.0,
            5 => 50.0,
            _ => 0.0,
        };
        total.push(Sample(t, t_sum));
        bad.push(Sample(t, b_sum));
        t += 5 * MIN;
    }
    let engine = store(vec![
        series(&[("__name__", "req_total"), ("job", "api")], total),
        series(&[("__name__", "req_failed_total"), ("job", "api")], bad),
    ]);
    let slos = crate::slo::spec::parse(
        std::path::Path::new("s.yml"),
        "version: prometheus/v1\nservice: api\nslos:\n  - name: avail\n    objective: 99.9\n    sli: {events: {error_query: 'sum(rate(req_failed_total[{{.window}}]))', total_query: 'sum(rate(req_total[{{.window}}]))'}}\n    alerting: {name: ApiBurn}\n",
    )
    .expect("slo");
    let r = make(Kind::Slo, &inputs(&engine, &slos), start, END, END);
    let s = &r.summary["slos"][0];
    let seeded = 15_840.0 / 1_008_000.0;
    let achieved = s["achieved"].as_f64().expect("achieved");
    // rate() over the range cannot see the increase of its first 5 minutes (a window is open
    // on the left), 1 in 2016 of the requests: equal to the seeded ratio to 1e-5.
    assert!((achieved - (1.0 - seeded)).abs() < 1e-5, "{s}");
    let burned = s["budgetBurned"].as_f64().expect("burned");
    assert!((burned - seeded / 0.001 * 7.0 / 30.0).abs() < 0.01, "{s}");
    assert_eq!(s["met"], false);
    let days = s["worstDays"].as_array().expect("days");
    assert_eq!(days.len(), 2, "{s}");
    assert_eq!(days[0]["day"], rfc3339(start + 5 * DAY));
    assert!(
        (days[0]["errorRatio"].as_f64().unwrap_or(0.0) - 0.1).abs() < 1e-12,
        "{s}"
    );
    assert_eq!(days[1]["day"], rfc3339(start + 2 * DAY));
    assert!(
        (days[1]["errorRatio"].as_f64().unwrap_or(0.0) - 0.01).abs() < 1e-12,
        "{s}"
    );
    let md = render::markdown(&r);
    assert!(md.contains("| api-avail | 99.9 % | 98.429 % |"), "{md}");
    assert!(md.contains("missed"), "{md}");
    let html = render::html(&r);
    assert!(
        html.contains("<svg") && html.contains("<polyline"),
        "{html}"
    );
    assert!(
        !html.contains("<script") && !html.contains("http://")
            || html.contains("http://www.w3.org/2000/svg")
    );
}

fn incident(
    id: u64,
    opened: i64,
    ack: Option<i64>,
    resolved: Option<i64>,
    root: &str,
    alerts: &[&str],
    pages: usize,
) -> Value {
    let mut timeline = vec![json!({"at": rfc3339(opened), "kind": "opened", "text": ""})];
    for _ in 0..pages {
        timeline.push(json!({"at": rfc3339(opened), "kind": "paged", "text": ""}));
    }
    json!({
        "id": id.to_string(),
        "openedAt": rfc3339(opened),
        "resolvedAt": resolved.map(rfc3339),
        "acknowledged": ack.map(|a| json!({"by": "x", "at": rfc3339(a)})),
        "rootCause": {"alertname": root},
        "alerts": alerts.iter().map(|a| json!({"labels": {"alertname": a}})).collect::<Vec<_>>(),
        "timeline": timeline,
    })
}

#[test]
fn the_incident_report_counts_the_seeded_incidents() {
    let start = END - 7 * DAY;
    let engine = store(Vec::new());
    let mut inp = inputs(&engine, &[]);
    let t0 = start + DAY;
    inp.incidents = vec![
        incident(
            1,
            t0,
            Some(t0 + 120_000),
            Some(t0 + 600_000),
            "DiskFull",
            &["DiskFull", "Slow"],
            2,
        ),
        incident(
            2,
            t0 + DAY,
            Some(t0 + DAY + 60_000),
            Some(t0 + DAY + 300_000),
            "DiskFull",
            &["DiskFull"],
            1,
        ),
        incident(
            3,
            t0 + 2 * DAY,
            None,
            None,
            "HighLatency",
            &["HighLatency"],
            0,
        ),
        incident(
            4,
            start - DAY,
            Some(start - DAY + 1),
            Some(start - DAY + 2),
            "Old",
            &["Old"],
            5,
        ),
    ];
    let rem = |state: &str, at: i64| json!({"state": state, "createdAt": rfc3339(at)});
    inp.remediations = vec![
        rem("remediated", t0),
        rem("failed", t0 + DAY),
        rem("remediated", t0 + 2 * DAY),
        rem("failed", start - DAY),
    ];
    let r = make(Kind::Incidents, &inp, start, END, END);
    let s = &r.summary;
    assert_eq!(s["incidents"], 3, "{s}");
    assert_eq!(s["acknowledged"], 2);
    assert_eq!(s["resolved"], 2);
    assert_eq!(s["mttaSeconds"], 90.0);
    assert_eq!(s["mttrSeconds"], 450.0);
    assert_eq!(s["pages"], 3);
    assert_eq!(s["rootCauses"], json!({"DiskFull": 2, "HighLatency": 1}));
    assert_eq!(s["remediations"], 3);
    assert_eq!(
        s["remediationOutcomes"],
        json!({"failed": 1, "remediated": 2})
    );
    let md = render::markdown(&r);
    assert!(
        md.contains("MTTA 1m 30s") && md.contains("MTTR 7m 30s"),
        "{md}"
    );
}

#[test]
fn the_capacity_report_finds_the_seeded_fill_rate() {
    // / loses 10 GB a day from 100 GB over the week: 30 GB left, full in 3 days; memory flat.
    let start = END - 7 * DAY;
    let (mut fs, mut mem) = (Vec::new(), Vec::new());
    let mut t = start - DAY;
    while t <= END {
        fs.push(Sample(t, 100e9 - (t - start) as f64 / DAY as f64 * 10e9));
        mem.push(Sample(t, 4e9));
        t += 5 * MIN;
    }
    let l = |n: &'static str| {
        vec![
            ("__name__", n),
            ("instance", "h1"),
            ("mountpoint", "/"),
            ("fstype", "ext4"),
        ]
    };
    let size: Vec<Sample> = fs.iter().map(|p| Sample(p.0, 200e9)).collect();
    let total: Vec<Sample> = mem.iter().map(|p| Sample(p.0, 8e9)).collect();
    let engine = store(vec![
        series(&l("node_filesystem_avail_bytes"), fs),
        series(&l("node_filesystem_size_bytes"), size),
        series(
            &[
                ("__name__", "node_memory_MemAvailable_bytes"),
                ("instance", "h1"),
            ],
            mem,
        ),
        series(
            &[
                ("__name__", "node_memory_MemTotal_bytes"),
                ("instance", "h1"),
            ],
            total,
        ),
    ]);
    let r = make(Kind::Capacity, &inputs(&engine, &[]), start, END, END);
    let f = &r.summary["filesystems"][0];
    assert_eq!(f["name"], "h1 /");
    assert_eq!(f["sizeBytes"], 200e9);
    let free = f["freeBytes"].as_f64().expect("free");
    let per_day = f["usedPerDayBytes"].as_f64().expect("growth");
    assert!((per_day - 10e9).abs() < 1e3, "{f}");
    let trend = f["secondsUntilFullTrend"].as_f64().expect("trend");
    assert_eq!(free, 30e9, "{f}");
    assert!((trend - 3.0 * 86_400.0).abs() < 1.0, "{f}");
    let forecast = f["secondsUntilFullForecast"].as_f64().expect("forecast");
    assert!((forecast / trend - 1.0).abs() < 0.1, "{f}");
    let m = &r.summary["memory"][0];
    assert_eq!(m["freeBytes"], 4e9);
    assert!(
        m["secondsUntilFullTrend"].is_null(),
        "flat memory never fills: {m}"
    );
}

#[test]
fn the_tuning_report_finds_the_seeded_noise() {
    let start = END - 7 * DAY;
    // ALERTS as the rule manager writes them: a sample a minute while firing, a stale marker
    // at the minute it resolves.
    let fire = |name: &str, episodes: &[(i64, i64)]| {
        let mut s = Vec::new();
        for &(a, minutes) in episodes {
            for m in 0..minutes {
                s.push(Sample(a + m * MIN, 1.0));
            }
            s.push(Sample(a + minutes * MIN, f64::from_bits(STALE_NAN_BITS)));
        }
        series(
            &[
                ("__name__", "ALERTS"),
                ("alertname", name),
                ("alertstate", "firing"),
                ("instance", "a"),
            ],
            s,
        )
    };
    let t0 = start + DAY;
    let flappy: Vec<(i64, i64)> = (0..3).map(|i| (t0 + i * 7 * MIN, 2)).collect();
    let noisy: Vec<(i64, i64)> = (0..10).map(|i| (t0 + i * 120 * MIN, 20)).collect();
    let silenced = [(t0 + 2 * DAY, 30), (t0 + 3 * DAY, 30)];
    let engine = store(vec![
        fire("Flappy", &flappy),
        fire("Noisy", &noisy),
        fire("Silenced", &silenced),
    ]);
    let mut inp = inputs(&engine, &[]);
    inp.alert_rules = ["Flappy", "Noisy", "Silenced", "Quiet"]
        .map(String::from)
        .to_vec();
    inp.silences = vec![json!({
        "matchers": [{"name": "alertname", "value": "Silen.*", "isRegex": true, "isEqual": true}],
        "startsAt": rfc3339(t0 + 2 * DAY - MIN),
        "endsAt": rfc3339(t0 + 4 * DAY),
    })];
    inp.incidents = vec![
        incident(1, t0, Some(t0 + MIN), None, "Flappy", &["Flappy"], 0),
        incident(2, t0 + 1000, None, None, "Noisy", &["Noisy"], 0),
    ];
    let r = make(Kind::AlertTuning, &inp, start, END, END);
    let s = &r.summary;
    let alert = |n: &str| {
        s["alerts"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["alertname"] == n).cloned())
            .unwrap_or_else(|| panic!("{n} missing: {s}"))
    };
    assert_eq!(s["alerts"][0]["alertname"], "Noisy", "noisiest first: {s}");
    let noisy = alert("Noisy");
    assert_eq!(noisy["fires"], 10);
    assert_eq!(noisy["flaps"], 0);
    assert_eq!(noisy["firingSeconds"], 10 * 20 * 60);
    assert!((noisy["firesPerWeek"].as_f64().unwrap_or(0.0) - 10.0).abs() < 1e-9);
    let flappy = alert("Flappy");
    assert_eq!(flappy["fires"], 3);
    assert_eq!(flappy["flaps"], 2);
    assert_eq!(flappy["suggestedForSeconds"], 180, "{flappy}");
    let silenced = alert("Silenced");
    assert_eq!(silenced["silencedFires"], 2);
    assert_eq!(s["neverFired"], json!(["Quiet"]));
    assert_eq!(s["alwaysSilenced"], json!(["Silenced"]));
    assert_eq!(s["neverAcknowledged"], json!(["Noisy"]));
}

#[test]
fn kinds_parse_and_a_bad_one_is_named() {
    for k in Kind::ALL {
        assert_eq!(Kind::parse(k.as_str()).expect("parses"), k);
    }
    assert!(Kind::parse("weekly").expect_err("bad").0.contains("weekly"));
}
