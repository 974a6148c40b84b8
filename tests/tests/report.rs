//! Reports through a real aggregator: an SLO report on history seeded over remote_write gives
//! the seeded numbers (through `telltale-aggregator report`, in Markdown, HTML and JSON); a
//! scheduled `[[report]]` is made at start for the run that was due, delivered to a webhook
//! through the outbox, kept at `/api/v1/reports`, and not made again after a restart; a
//! report made through `POST /api/v1/reports` needs the token and is delivered too.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use telltale_common::model::{Labels, Sample, SeriesSamples, now_ms};
use telltale_tests::peers::{NATS_SERVER, Nats, WebhookSink, peer};
use telltale_tests::{
    Aggregator, bin, certs_init, http_get, http_post_auth, remote_write, start_aggregator,
};

const TOKEN: &str = "s3cret";
const DAY: i64 = 86_400_000;

const SLO: &str = r#"version: prometheus/v1
service: api
slos:
  - name: avail
    objective: 99.9
    sli:
      events:
        error_query: sum(rate(req_failed_total[{{.window}}]))
        total_query: sum(rate(req_total[{{.window}}]))
    alerting: {name: ApiBurn}
"#;

fn serve(dir: &Path, extra: &[&str]) -> Aggregator {
    let mut args = vec!["--api-token", TOKEN];
    args.extend_from_slice(extra);
    start_aggregator(
        &dir.join("tls"),
        &dir.join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &args,
    )
    .expect("aggregator starts")
}

fn reports(agg: &Aggregator) -> Vec<Value> {
    let (st, body) = http_get(agg.http, "/api/v1/reports").expect("GET");
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["data"]["reports"].as_array().cloned().unwrap_or_default()
}

#[test]
fn an_slo_report_on_seeded_history_gives_the_seeded_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs_init(&dir.path().join("tls")).expect("certs");
    let slo = dir.path().join("slo.yml");
    std::fs::write(&slo, SLO).expect("write");
    let slo_arg = slo.display().to_string();
    let agg = serve(dir.path(), &["--slos", &slo_arg]);
    // Two days ending at the last midnight: 60 requests a minute; on the second day 3 a
    // minute fail. 4320 of 172 800 requests over the range, a day at 5 %.
    let end = now_ms() / DAY * DAY;
    let start = end - 2 * DAY;
    let (mut total, mut bad) = (Vec::new(), Vec::new());
    let (mut t, mut n, mut b) = (start - DAY, 0.0, 0.0);
    while t <= end {
        n += 60.0;
        if t > start + DAY {
            b += 3.0;
        }
        total.push(Sample(t, n));
        bad.push(Sample(t, b));
        t += 60_000;
    }
    let s = |name: &str, samples| SeriesSamples {
        labels: Labels::from_pairs([("__name__", name), ("job", "api")]),
        samples,
    };
    remote_write(
        agg.http,
        &[s("req_total", total), s("req_failed_total", bad)],
        Some(TOKEN),
    )
    .expect("remote_write");

    let run = |format: &str| {
        let out = Command::new(bin("telltale-aggregator").expect("built"))
            .args([
                "report", "--kind", "slo", "--range", "2d", "--format", format,
            ])
            .args(["--end", &(end / 1000).to_string()])
            .args(["--url", &format!("http://{}", agg.http)])
            .output()
            .expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let json: Value = serde_json::from_str(&run("json")).expect("json");
    let s0 = &json["data"]["summary"]["slos"][0];
    let seeded = 4320.0 / 172_800.0;
    let achieved = s0["achieved"].as_f64().expect("achieved");
    assert!((achieved - (1.0 - seeded)).abs() < 1e-5, "{s0}");
    let worst = &s0["worstDays"][0];
    assert!(
        (worst["errorRatio"].as_f64().unwrap_or(0.0) - 0.05).abs() < 1e-9,
        "{s0}"
    );
    assert_eq!(s0["worstDays"].as_array().map(Vec::len), Some(1), "{s0}");
    let md = run("md");
    assert!(md.starts_with("# SLO compliance"), "{md}");
    assert!(md.contains("| api-avail | 99.9 % | 97.500 % |"), "{md}");
    let html = run("html");
    assert!(
        html.contains("<svg") && html.contains("api-avail"),
        "{html}"
    );
    // A bad kind is refused with its name.
    let out = Command::new(bin("telltale-aggregator").expect("built"))
        .args([
            "report",
            "--kind",
            "weekly",
            "--url",
            &format!("http://{}", agg.http),
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("weekly"));
}

#[test]
fn scheduled_reports_are_made_kept_delivered_and_not_repeated() {
    let dir = tempfile::tempdir().expect("tempdir");
    certs_init(&dir.path().join("tls")).expect("certs");
    let sink = WebhookSink::start().expect("sink");
    // NATS JetStream too, where nats-server is installed (always in CI).
    let nats = peer(NATS_SERVER, "nats-server").map(|b| Nats::start(&b).expect("nats starts"));
    let nats_cfg = nats
        .as_ref()
        .map(|n| {
            format!(
                ", nats_configs: [{{url: '{}', subject: telltale.reports, stream: REPORTS}}]",
                n.url()
            )
        })
        .unwrap_or_default();
    let routes = dir.path().join("routes.yml");
    std::fs::write(
        &routes,
        format!(
            "route: {{receiver: hook}}\nreceivers: [{{name: hook, webhook_configs: [{{url: '{}'}}]{nats_cfg}}}]\n",
            sink.url("/hook")
        ),
    )
    .expect("write");
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        "[[report]]\nname = \"daily-incidents\"\nkind = \"incidents\"\nevery = \"daily\"\nat = \"00:00\"\nreceivers = [\"hook\"]\n",
    )
    .expect("write");
    let (routes_arg, cfg_arg) = (routes.display().to_string(), cfg.display().to_string());
    let args = [
        "--config",
        cfg_arg.as_str(),
        "--routes",
        routes_arg.as_str(),
    ];
    {
        let agg = serve(dir.path(), &args);
        // The run due at the last midnight is made at start.
        let got = sink
            .wait("/hook", 1, Duration::from_secs(30))
            .expect("delivered");
        let body = &got[0].body;
        assert_eq!(body["kind"], "report", "{body}");
        assert_eq!(body["report"]["schedule"], "daily-incidents");
        assert_eq!(body["report"]["kind"], "incidents");
        let midnight = now_ms() / DAY * DAY;
        let end = telltale_aggregator::report::rfc3339(midnight);
        assert_eq!(body["report"]["end"], end.as_str(), "{body}");
        assert!(
            body["markdown"]
                .as_str()
                .is_some_and(|m| m.starts_with("# Incidents"))
        );
        assert!(
            body["html"]
                .as_str()
                .is_some_and(|h| h.contains("<h1>Incidents</h1>"))
        );
        assert_eq!(body["summary"]["incidents"], 0);
        if let Some(n) = &nats {
            let msgs = telltale_tests::wait_for(Duration::from_secs(20), || {
                let m = n.stream_messages("REPORTS").ok()?;
                (!m.is_empty()).then_some(m)
            })
            .expect("the JetStream stream holds the report");
            assert_eq!(msgs[0]["kind"], "report");
            assert_eq!(msgs[0]["report"]["schedule"], "daily-incidents");
        }
        let kept = reports(&agg);
        assert_eq!(kept.len(), 1, "{kept:?}");
        let id = kept[0]["id"].as_u64().expect("id");
        let (st, md) = http_get(agg.http, &format!("/api/v1/reports/{id}?format=md")).expect("GET");
        assert_eq!(st, 200);
        assert!(md.starts_with("# Incidents"), "{md}");
        let (st, _) = http_get(agg.http, "/api/v1/reports/999999").expect("GET");
        assert_eq!(st, 404);

        // On demand: the token is needed; the report is kept and delivered.
        let path = "/api/v1/reports?kind=alert-tuning&range=1d&receiver=hook";
        let (st, _) = http_post_auth(agg.http, path, "application/json", b"", None).expect("POST");
        assert_eq!(st, 401);
        let (st, b) =
            http_post_auth(agg.http, path, "application/json", b"", Some(TOKEN)).expect("POST");
        assert_eq!(st, 200, "{b}");
        let got = sink
            .wait("/hook", 2, Duration::from_secs(30))
            .expect("delivered");
        assert!(
            got.iter()
                .any(|r| r.body["report"]["kind"] == "alert-tuning")
        );
        let (st, b) = http_post_auth(
            agg.http,
            "/api/v1/reports?kind=slo&receiver=nobody",
            "application/json",
            b"",
            Some(TOKEN),
        )
        .expect("POST");
        assert_eq!(st, 400, "{b}");
        assert!(b.contains("nobody"), "{b}");
    }
    // After a restart the day's report is kept already: not made or sent again.
    let agg = serve(dir.path(), &args);
    std::thread::sleep(Duration::from_secs(3));
    let kept = reports(&agg);
    assert_eq!(kept.len(), 2, "{kept:?}");
    let scheduled = sink
        .accepted("/hook")
        .iter()
        .filter(|r| r.body["report"]["schedule"] == "daily-incidents")
        .count();
    assert_eq!(scheduled, 1);
}

#[test]
fn a_bad_report_schedule_stops_the_aggregator_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        "[[report]]\nkind = \"slo\"\nevery = \"daily\"\nat = \"24:30\"\n",
    )
    .expect("write");
    let out = Command::new(bin("telltale-aggregator").expect("built"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("report[0].at"), "{e}");
    // A receiver the routing file does not have is refused at start, not at the first run.
    std::fs::write(
        &cfg,
        "[[report]]\nkind = \"slo\"\nevery = \"daily\"\nreceivers = [\"nobody\"]\n",
    )
    .expect("write");
    let out = Command::new(bin("telltale-aggregator").expect("built"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("\"nobody\"") && e.contains("routing file"),
        "{e}"
    );
}
