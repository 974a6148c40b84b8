//! Log patterns end to end on the real aggregator: lines pushed as Promtail would, then the
//! request Grafana's Logs Drilldown sends (`/loki/api/v1/patterns`), the pattern counters
//! read back with PromQL, and the new-pattern event at `/api/v1/events`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::Value;
use telltale_common::wire::{LogEntry, LogStream};
use telltale_tests::*;

const TOKEN: &str = "s3cret";

fn push(agg: &Aggregator, source: &str, lines: Vec<(i64, String)>) {
    let stream = LogStream {
        labels: vec![("source".into(), source.into())],
        entries: lines
            .into_iter()
            .map(|(t_ns, line)| LogEntry {
                t_ns,
                line,
                metadata: Vec::new(),
            })
            .collect(),
    };
    loki_push(agg.http, TOKEN, &[stream]).unwrap();
}

#[test]
fn patterns_are_learnt_counted_and_announced() {
    let (dir, tls) = scratch_with_ca().unwrap();
    let cfg = dir.path().join("aggregator.toml");
    std::fs::write(
        &cfg,
        "[logs]\npattern_interval = \"1s\"\npattern_warmup = \"0s\"\n",
    )
    .unwrap();
    let data = dir.path().join("agg");
    let args = ["--api-token", TOKEN, "--config", cfg.to_str().unwrap()];
    let agg = start_aggregator(&tls, &data, "127.0.0.1:0", "127.0.0.1:0", &args).unwrap();
    let now = telltale_common::model::now_ms() * 1_000_000;
    // nginx access lines with varying addresses, paths, statuses, sizes and times.
    let mut x: u64 = 42;
    let access: Vec<(i64, String)> = (0..50)
        .map(|i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (
                now - 60_000_000_000 + i * 1_000_000_000,
                format!(
                    "10.0.{}.{} - - [02/Dec/2026:10:{:02}:00 +0000] \"GET /api/{} HTTP/1.1\" {} {} \"-\" \"curl/8.5.0\"",
                    (x >> 8) % 256,
                    (x >> 16) % 256,
                    i % 60,
                    ["users", "orders", "items"][(x >> 24) as usize % 3],
                    [200, 200, 404, 500][(x >> 32) as usize % 4],
                    (x >> 40) % 5000
                ),
            )
        })
        .collect();
    push(&agg, "nginx", access);
    let errors: Vec<(i64, String)> = (0..5)
        .map(|i| {
            (
                now - 30_000_000_000 + i * 1_000_000_000,
                format!("connection to db-{i} failed after {}ms: timeout", 100 + i),
            )
        })
        .collect();
    push(&agg, "app", errors);

    let path = format!(
        "/loki/api/v1/patterns?query={}&start={}&end={}&step=60s",
        enc(r#"{source="nginx"}"#),
        now - 3_600_000_000_000,
        now + 60_000_000_000
    );
    let found = wait_for(Duration::from_secs(10), || {
        let (status, body) = http_get(agg.http, &path).ok()?;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let data = v["data"].as_array()?.clone();
        (!data.is_empty()).then_some(data)
    })
    .expect("patterns appear");
    let total = |p: &Value| -> u64 {
        p["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert!(s[0].is_i64(), "seconds: {s}");
                s[1].as_u64().unwrap()
            })
            .sum()
    };
    let all: u64 = found.iter().map(total).sum();
    assert_eq!(
        all, 50,
        "every nginx line in one pattern or another: {found:?}"
    );
    let top = found[0]["pattern"].as_str().unwrap();
    assert!(
        top.starts_with("<_> - - [<_> <_>] \"GET"),
        "addresses and times are variable parts: {top}"
    );
    assert!(
        found.len() <= 3,
        "one kind of line, at most one template per path: {found:?}"
    );
    // The app's stream is not in nginx's answer, and has its own template.
    assert!(
        found
            .iter()
            .all(|p| !p["pattern"].as_str().unwrap().contains("db"))
    );

    // The counters, read with PromQL.
    let sum = wait_for(Duration::from_secs(15), || {
        let r = query(
            agg.http,
            r#"sum by (source) (telltale_log_pattern_lines_total)"#,
        )
        .ok()?;
        let get = |s: &str| {
            r.iter()
                .find(|x| x["metric"]["source"] == s)
                .and_then(|x| x["value"][1].as_str()?.parse::<f64>().ok())
        };
        let (n, a) = (get("nginx")?, get("app")?);
        (n == 50.0 && a == 5.0).then_some((n, a))
    });
    assert_eq!(sum, Some((50.0, 5.0)));

    // New patterns (warm-up 0s here) are events.
    let events = wait_for(Duration::from_secs(15), || {
        let (_, body) = http_get(
            agg.http,
            &format!(
                "/api/v1/events?match={}",
                enc(r#"{kind="log_pattern_new", source="app"}"#)
            ),
        )
        .ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let list = v["data"].as_array()?.clone();
        (!list.is_empty()).then_some(list)
    })
    .expect("a new-pattern event for the app");
    let msg = events[0]["message"].as_str().unwrap();
    assert!(msg.contains("connection to <_> failed"), "{msg}");

    // Bad requests get Loki's 400s.
    for (q, says) in [
        (r#"{source="nginx"} |= "x""#, "no pipeline"),
        (
            r#"count_over_time({source="nginx"}[1m])"#,
            "stream selector",
        ),
        ("{", "parse error"),
    ] {
        let (status, body) =
            http_get(agg.http, &format!("/loki/api/v1/patterns?query={}", enc(q))).unwrap();
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body.contains(says), "{q}: {body}");
    }
    let (status, _) = http_get(agg.http, "/loki/api/v1/patterns").unwrap();
    assert_eq!(status, 400);
}
