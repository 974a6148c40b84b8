//! Anomaly detectors end to end: a real agent's host metrics scored by the real aggregator's
//! detectors, the scores read back with PromQL, `/api/v1/anomaly`, models rebuilt from stored
//! history after a restart, and the checks of `telltale-aggregator anomaly check` and
//! `serve` on good and bad detector files.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use telltale_tests::*;

const DETECTORS: &str = "detectors:
  - name: load_shape
    expr: node_load1
    method: knn
    interval: 1s
    history: 10m
    params: {memory: 200, calibration: 100, warmup: 5}
  - name: load_peers
    expr: node_load1 or label_replace(node_load1 * 1.01, \"instance\", \"twin-$1\", \"instance\", \"(.*)\") or label_replace(node_load1 * 0.99, \"instance\", \"triplet-$1\", \"instance\", \"(.*)\")
    method: peer
    interval: 1s
";

fn anomaly_api(agg: &Aggregator) -> Vec<Value> {
    let (code, body) = http_get(agg.http, "/api/v1/anomaly").unwrap();
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["data"]["detectors"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn detectors_score_live_series_and_rebuild_their_models_after_a_restart() {
    let (dir, tls) = scratch_with_ca().unwrap();
    certs_issue(&tls, "host-a").unwrap();
    let file = dir.path().join("detectors.yml");
    std::fs::write(&file, DETECTORS).unwrap();
    let data = dir.path().join("agg");
    let args = ["--detectors", file.to_str().unwrap()];
    let agg = start_aggregator(&tls, &data, "127.0.0.1:0", "127.0.0.1:0", &args).unwrap();
    let mut agent = start_agent(&tls, "host-a", agg.quic, &dir.path().join("a"), "1s").unwrap();
    let scored = wait_for(Duration::from_secs(30), || {
        let r = query(agg.http, "telltale_anomaly_score{detector=\"load_shape\"}").ok()?;
        (!r.is_empty()).then_some(r)
    })
    .unwrap_or_else(|| panic!("no scores\n{}\n{}", agg.proc.log(), agent.log()));
    // The output keeps the input's labels and adds the detector's name.
    assert_eq!(scored[0]["metric"]["instance"], "host-a", "{scored:?}");
    assert_eq!(scored[0]["metric"]["job"], "telltale-agent", "{scored:?}");
    let s: f64 = scored[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!((0.0..=1.0).contains(&s), "{s}");
    // The flag is 0 or 1; three peers that move together are not outliers.
    let peers = wait_for(Duration::from_secs(10), || {
        let r = query(agg.http, "telltale_anomaly{detector=\"load_peers\"}").ok()?;
        (r.len() == 3).then_some(r)
    })
    .unwrap_or_else(|| panic!("no peer flags\n{}", agg.proc.log()));
    for p in &peers {
        assert_eq!(p["value"][1], "0", "{peers:?}");
    }
    let api = anomaly_api(&agg);
    assert_eq!(api.len(), 2, "{api:?}");
    assert_eq!(api[0]["name"], "load_shape");
    assert_eq!(api[0]["method"], "knn");
    assert_eq!(api[0]["health"], "ok", "{api:?}");
    assert_eq!(api[0]["series"], 1);
    assert!(api[0]["modelBytes"].as_u64().unwrap() > 0);
    // The model's share of the memory budget is its method's most, not less than it holds.
    assert!(
        api[0]["reservedBytes"].as_u64().unwrap() >= api[0]["modelBytes"].as_u64().unwrap(),
        "{api:?}"
    );
    assert_eq!(api[0]["overBudgetSeries"], 0);
    let (_, body) = http_get(agg.http, "/api/v1/anomaly").unwrap();
    let budget = &serde_json::from_str::<Value>(&body).unwrap()["data"]["budget"];
    assert_eq!(budget["bytes"], 2u64 << 30, "the default budget: {body}");
    assert_eq!(budget["reservedBytes"], api[0]["reservedBytes"], "{body}");
    assert_eq!(api[1]["method"], "peer");
    assert_eq!(api[1]["series"], 3);
    let (_, metrics) = http_get(agg.http, "/metrics").unwrap();
    assert!(
        metrics.contains("telltale_aggregator_anomaly_series{detector=\"load_shape\"} 1"),
        "{metrics}"
    );
    // A forecast on demand over the same data (once there are a few seconds of it).
    std::thread::sleep(Duration::from_secs(5));
    let (code, body) = http_get(
        agg.http,
        "/api/v1/forecast?query=node_load1&history=20s&step=1s&horizon=10s&season=0&limit=1e9",
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let series = v["data"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{body}");
    assert_eq!(
        series[0]["forecast"].as_array().unwrap().len(),
        10,
        "{body}"
    );
    assert!(series[0]["secondsUntilLimit"].is_null(), "{body}");
    let (code, body) =
        http_get(agg.http, "/api/v1/forecast?query=node_load1&horizon=-3600").unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("positive"), "{body}");
    // Hostile parameters: each gets a 400 naming what is wrong, and the server goes on.
    for (q, says) in [
        // Past a Go duration (292 years): refused as Prometheus refuses such a step.
        ("step=1e300", "overflows int64"),
        ("history=1e300&step=1e299", "overflows int64"),
        ("time=-1e300&history=1e300&step=1e12", "overflows int64"),
        ("season=1e300", "overflows int64"),
        // Within one, but past the forecast's bound.
        ("step=5e9", "100 years"),
        ("history=6e9", "100 years"),
        ("season=4e9", "100 years"),
        ("season=NaN", "season"),
        ("step=soon", "step"),
        ("limit=abc", "limit"),
        ("horizon=1e9&step=1", "10 000 steps"),
        ("history=1e9&step=1", "50 000 steps"),
    ] {
        let (code, body) =
            http_get(agg.http, &format!("/api/v1/forecast?query=node_load1&{q}")).unwrap();
        assert_eq!(code, 400, "{q}: {body}");
        assert!(body.contains(says), "{q}: {body}");
    }
    let (code, body) = http_get(agg.http, "/api/v1/forecast?query=%7B").unwrap();
    assert_eq!(code, 400, "{body}");
    let (code, body) = http_get(
        agg.http,
        "/api/v1/forecast?query=node_load1&history=20s&step=1s&horizon=10s&season=0",
    )
    .unwrap();
    assert_eq!(code, 200, "after the hostile requests: {body}");
    // Restart: the models are rebuilt from the history stored so far.
    let Aggregator { mut proc, .. } = agg;
    assert_eq!(
        proc.terminate(Duration::from_secs(20)),
        Some(0),
        "{}",
        proc.log()
    );
    agent.kill();
    let agg = start_aggregator(&tls, &data, "127.0.0.1:0", "127.0.0.1:0", &args).unwrap();
    let rebuilt = wait_for(Duration::from_secs(20), || {
        let api = anomaly_api(&agg);
        let n = api.first()?["historyPoints"].as_u64()?;
        (n > 0).then_some(n)
    })
    .unwrap_or_else(|| panic!("no history read back\n{}", agg.proc.log()));
    assert!(rebuilt >= 5, "{rebuilt} points rebuilt");
    agg.proc
        .wait_log(
            "anomaly models rebuilt from history",
            Duration::from_secs(5),
        )
        .unwrap();
}

#[test]
fn detector_files_are_checked_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let bin = bin("telltale-aggregator").unwrap();
    // The shipped file is valid.
    let out = Command::new(&bin)
        .args(["anomaly", "check"])
        .arg(repo().join("config/detectors.yml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 4 detectors found"), "{text}");
    // Each per-series detector says what it sets aside from the memory budget per series
    // (the two series detectors of the shipped file; peers and forecasts keep no model).
    assert_eq!(
        text.matches("KiB per series set aside").count(),
        2,
        "{text}"
    );
    // A bad one is named, with the detector and the key.
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "detectors:\n  - name: cpu\n    expr: up\n    method: knn\n    params: {windw: 3}\n",
    )
    .unwrap();
    let out = Command::new(&bin)
        .args(["anomaly", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("detector \"cpu\": unknown parameter \"windw\" for method knn"),
        "{text}"
    );
    // serve refuses to start on it, saying why (exit 2, like a bad rule file).
    let (sdir, tls) = scratch_with_ca().unwrap();
    let out = Command::new(&bin)
        .args([
            "serve",
            "--http-listen",
            "127.0.0.1:0",
            "--quic-listen",
            "127.0.0.1:0",
        ])
        .arg("--tls-dir")
        .arg(&tls)
        .arg("--data-dir")
        .arg(sdir.path().join("agg"))
        .arg("--detectors")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("windw"), "{err}");
}
