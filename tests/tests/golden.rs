//! Golden signals without configuration: the built-in rules (config/rules/golden.yml) give the
//! same values on Prometheus (`promtool test rules`) and on Telltale (`rules test`), bit for
//! bit; a serving aggregator with a real agent and a scraped-style HTTP histogram shows the
//! host's saturation and the service's signals at `/api/v1/golden-signals`, and
//! `golden_signals = false` turns the built-in rules off.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use telltale_common::model::{Labels, Sample, SeriesSamples, now_ms};
use telltale_tests::{
    certs_init, certs_issue, http_get, remote_write, start_agent, start_aggregator,
    start_quick_aggregator, wait_for,
};

const TOKEN: &str = "s3cret";

#[test]
fn golden_rules_give_prometheus_values_on_both_engines() {
    telltale_tests::peers::rules_test_on_both(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/golden_test.yml"),
    );
}

/// 2.2 requests/s for the last 10 minutes at 15 s, a tenth of them 5xx (job shop).
fn http_histogram(now: i64) -> Vec<SeriesSamples> {
    let start = now - 10 * 60_000;
    let series = |code: &str, le: Option<&str>, per_s: f64| {
        let name = if le.is_some() {
            "http_request_duration_seconds_bucket"
        } else {
            "http_request_duration_seconds_count"
        };
        let mut l = vec![
            ("__name__", name),
            ("job", "shop"),
            ("instance", "web1"),
            ("code", code),
        ];
        if let Some(le) = le {
            l.push(("le", le));
        }
        SeriesSamples {
            labels: Labels::from_pairs(l),
            samples: (0..=40)
                .map(|i| Sample(start + i * 15_000, i as f64 * 15.0 * per_s))
                .collect(),
        }
    };
    vec![
        series("200", None, 2.0),
        series("500", None, 0.2),
        series("200", Some("0.1"), 2.0),
        series("200", Some("+Inf"), 2.0),
        series("500", Some("0.1"), 0.0),
        series("500", Some("+Inf"), 0.2),
    ]
}

#[test]
fn a_serving_aggregator_shows_host_and_service_golden_signals() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    certs_init(&tls).expect("certs");
    certs_issue(&tls, "web-1").expect("agent cert");
    let agg = start_quick_aggregator(&tls, dir.path(), TOKEN, &[]).expect("aggregator starts");
    let _agent =
        start_agent(&tls, "web-1", agg.quic, &dir.path().join("agent"), "1s").expect("agent");
    remote_write(agg.http, &http_histogram(now_ms()), Some(TOKEN)).expect("remote_write");

    let view = wait_for(Duration::from_secs(60), || {
        let (st, body) = http_get(agg.http, "/api/v1/golden-signals").ok()?;
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).ok()?;
        let host = v["data"]["hosts"]
            .as_array()?
            .iter()
            .find(|h| h["instance"] == "web-1")?
            .clone();
        let sat = &host["saturation"];
        // The CPU share needs two collections inside the rate window.
        let ready = sat["cpu"].is_number() && sat["memory"].is_number();
        let shop = v["data"]["services"]
            .as_array()?
            .iter()
            .any(|s| s["service"] == "shop");
        (ready && shop).then_some(v)
    })
    .unwrap_or_else(|| {
        let (_, body) = http_get(agg.http, "/api/v1/golden-signals").unwrap_or_default();
        panic!(
            "no golden signals for web-1 and shop: {body}\n{}",
            agg.proc.log()
        )
    });
    let hosts = view["data"]["hosts"].as_array().expect("hosts");
    let sat = &hosts
        .iter()
        .find(|h| h["instance"] == "web-1")
        .expect("web-1")["saturation"];
    for r in ["cpu", "memory", "filesystem"] {
        let x = sat[r].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&x), "{r}: {sat}");
    }
    assert!(sat["cpu_load"].as_f64().is_some_and(|x| x >= 0.0), "{sat}");
    let shop = view["data"]["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["service"] == "shop")
        .expect("shop");
    let http = shop["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["source"] == "http")
        .expect("http source");
    let rps = http["requestsPerSecond"].as_f64().expect("rps");
    assert!((rps - 2.2).abs() < 0.01, "{shop}");
    let err = http["errorRatio"].as_f64().expect("errors");
    assert!((err - 0.2 / 2.2).abs() < 1e-6, "{shop}");
    let p99 = http["latencyP99Seconds"].as_f64().expect("p99");
    assert!(p99 > 0.0 && p99 <= 0.1, "{shop}");
}

#[test]
fn golden_signals_can_be_turned_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    certs_init(&tls).expect("certs");
    let groups = |golden: &str| {
        let cfg = dir.path().join(format!("agg-{golden}.toml"));
        std::fs::write(&cfg, format!("[rules]\ngolden_signals = {golden}\n")).expect("write");
        let cfg_arg = cfg.display().to_string();
        let agg = start_aggregator(
            &tls,
            &dir.path().join(format!("agg-{golden}")),
            "127.0.0.1:0",
            "127.0.0.1:0",
            &["--config", &cfg_arg],
        )
        .expect("aggregator starts");
        let (st, body) = http_get(agg.http, "/api/v1/rules").expect("rules");
        assert_eq!(st, 200);
        let v: Value = serde_json::from_str(&body).expect("json");
        v["data"]["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .map(|g| g["name"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        groups("true"),
        ["telltale-golden-hosts", "telltale-golden-services"]
    );
    assert!(groups("false").is_empty());
}
