//! SLOs end to end: a Sloth file's generated rules are checked by promtool, the same
//! `promtool test rules` file (an error burst and its reset) passes on Prometheus and on
//! Telltale's test clock — and a wrong timeline fails on both — and a real aggregator serving
//! the SLO pages on a burst pushed over remote_write and reports it at `/api/v1/slos`.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use telltale_common::model::{Labels, Sample, SeriesSamples, now_ms};
use telltale_tests::peers::peer;
use telltale_tests::{bin, certs_init, http_get, remote_write, start_quick_aggregator, wait_for};

const PROMTOOL: &str = "/usr/bin/promtool";
const TOKEN: &str = "s3cret";

const SLO: &str = r#"version: "prometheus/v1"
service: "myservice"
labels:
  owner: "myteam"
slos:
  - name: "requests-availability"
    objective: 99.9
    description: "HTTP responses that are not 5xx."
    sli:
      events:
        error_query: sum(rate(http_requests_total{job="myservice",code=~"5.."}[{{.window}}]))
        total_query: sum(rate(http_requests_total{job="myservice"}[{{.window}}]))
    alerting:
      name: MyServiceHighErrorRate
      labels:
        category: "availability"
      annotations:
        summary: "High error rate on 'myservice' requests"
      page_alert:
        labels:
          severity: page
      ticket_alert:
        labels:
          severity: ticket
"#;

/// The labels and annotations of one of the SLO's alerts, as promtool expects them.
fn alert(severity: &str) -> String {
    format!(
        "          - exp_labels:
              owner: myteam
              category: availability
              severity: {severity}
              sloth_severity: {severity}
              sloth_id: myservice-requests-availability
              sloth_service: myservice
              sloth_slo: requests-availability
            exp_annotations:
              summary: \"High error rate on 'myservice' requests\"
              title: \"({severity}) myservice requests-availability SLO error budget burn rate is too fast.\"
"
    )
}

/// 10 requests/s throughout; from minute 60 to 80 another 5/s fail (a third of all), then
/// none. Expected: nothing before; page and ticket during the burst; the page holds on the
/// 30m/6h pair until the 30-minute window has passed the burst, then resolves; the ticket
/// holds on the 6h/3d pair for six hours, then resolves.
fn test_file(timeline: &[(&str, &[&str])]) -> String {
    let mut out = String::from(
        "rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'http_requests_total{job=\"myservice\",code=\"200\"}'
        values: '0+600x460'
      - series: 'http_requests_total{job=\"myservice\",code=\"500\"}'
        values: '0x60 300+300x19 6000x379'
    promql_expr_test:
      - expr: slo:sli_error:ratio_rate5m
        eval_time: 70m
        exp_samples:
          - labels: 'slo:sli_error:ratio_rate5m{owner=\"myteam\",sloth_id=\"myservice-requests-availability\",sloth_service=\"myservice\",sloth_slo=\"requests-availability\",sloth_window=\"5m\"}'
            value: 0.3333333333333333
      - expr: slo:time_period:days
        eval_time: 10m
        exp_samples:
          - labels: 'slo:time_period:days{owner=\"myteam\",sloth_id=\"myservice-requests-availability\",sloth_service=\"myservice\",sloth_slo=\"requests-availability\"}'
            value: 30
    alert_rule_test:
",
    );
    for (at, severities) in timeline {
        out.push_str(&format!(
            "      - eval_time: {at}\n        alertname: MyServiceHighErrorRate\n        exp_alerts:{}\n",
            if severities.is_empty() { " []" } else { "" }
        ));
        for s in *severities {
            out.push_str(&alert(s));
        }
    }
    out
}

const TIMELINE: &[(&str, &[&str])] = &[
    ("50m", &[]),
    ("70m", &["page", "ticket"]),
    ("100m", &["page", "ticket"]),
    ("120m", &["ticket"]),
    ("300m", &["ticket"]),
    ("460m", &[]),
];

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn generated_slo_rules_agree_with_promtool_on_a_burst_and_its_reset() {
    let Some(promtool) = peer(PROMTOOL, "prometheus") else {
        return;
    };
    let agg = bin("telltale-aggregator").expect("built");
    let dir = tempfile::tempdir().expect("tempdir");
    let slo = dir.path().join("slo.yml");
    std::fs::write(&slo, SLO).expect("write");
    let (ok, rules) = run(Command::new(&agg).args(["slos", "generate"]).arg(&slo));
    assert!(ok, "{rules}");
    std::fs::write(dir.path().join("rules.yml"), &rules).expect("write");
    let (ok, out) = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(dir.path().join("rules.yml")));
    assert!(ok, "promtool check rules: {out}\n{rules}");

    let test = dir.path().join("test.yml");
    std::fs::write(&test, test_file(TIMELINE)).expect("write");
    let (ok, out) = run(Command::new(&promtool).args(["test", "rules"]).arg(&test));
    assert!(ok, "promtool test rules: {out}");
    let (ok, out) = run(Command::new(&agg).args(["rules", "test"]).arg(&test));
    assert!(ok, "telltale rules test: {out}");

    // Each wrong timeline fails on both: the page kept too long, the ticket dropped too early,
    // an alert during the quiet hour.
    for wrong in [
        &[("120m", &["page", "ticket"][..])][..],
        &[("300m", &[][..])][..],
        &[("50m", &["ticket"][..])][..],
    ] {
        std::fs::write(&test, test_file(wrong)).expect("write");
        let (ok, out) = run(Command::new(&promtool).args(["test", "rules"]).arg(&test));
        assert!(!ok, "promtool accepted a wrong timeline {wrong:?}: {out}");
        let (ok, out) = run(Command::new(&agg).args(["rules", "test"]).arg(&test));
        assert!(!ok, "telltale accepted a wrong timeline {wrong:?}: {out}");
        assert!(out.contains("MyServiceHighErrorRate"), "{out}");
    }
}

#[test]
fn slos_check_refuses_a_bad_file_naming_the_slo() {
    let agg = bin("telltale-aggregator").expect("built");
    let dir = tempfile::tempdir().expect("tempdir");
    let slo = dir.path().join("slo.yml");
    std::fs::write(&slo, SLO.replace("objective: 99.9", "objective: 100")).expect("write");
    let (ok, out) = run(Command::new(&agg).args(["slos", "check"]).arg(&slo));
    assert!(!ok, "{out}");
    assert!(
        out.contains("requests-availability") && out.contains("objective 100"),
        "{out}"
    );
    // serve refuses to start on it, exit 2 like a bad rule file.
    let st = Command::new(&agg)
        .args(["check-config", "--slos"])
        .arg(&slo)
        .output()
        .expect("runs");
    assert_eq!(st.status.code(), Some(2), "{st:?}");
}

#[test]
fn a_serving_aggregator_pages_on_a_burst_and_reports_the_slo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = dir.path().join("tls");
    certs_init(&tls).expect("certs");
    let slo = dir.path().join("slo.yml");
    std::fs::write(&slo, SLO).expect("write");
    let slo_arg = slo.display().to_string();
    let agg = start_quick_aggregator(&tls, dir.path(), TOKEN, &["--slos", &slo_arg])
        .expect("aggregator starts");

    // The last 50 minutes at 15 s: 10 requests/s, and for the last 10 minutes 5/s failing.
    let now = now_ms();
    let start = now - 50 * 60_000;
    let series = |code: &str, f: &dyn Fn(i64) -> f64| SeriesSamples {
        labels: Labels::from_pairs([
            ("__name__", "http_requests_total"),
            ("job", "myservice"),
            ("code", code),
        ]),
        samples: (0..=200)
            .map(|i| {
                let t = start + i * 15_000;
                Sample(t, f(t - start))
            })
            .collect(),
    };
    let burst = 40 * 60_000;
    remote_write(
        agg.http,
        &[
            series("200", &|dt| dt as f64 / 1000.0 * 10.0),
            series("500", &|dt| (dt - burst).max(0) as f64 / 1000.0 * 5.0),
        ],
        Some(TOKEN),
    )
    .expect("remote_write");

    let slo_view = wait_for(Duration::from_secs(60), || {
        let (st, body) = http_get(agg.http, "/api/v1/slos").ok()?;
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).ok()?;
        let s = v["data"]["slos"][0].clone();
        let paging = s["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["severity"] == "page" && a["state"] == "firing");
        // Each group runs on its own clock: wait for the metadata group's first evaluation.
        (paging && s["errorBudgetRemaining"].is_number()).then_some(s)
    })
    .unwrap_or_else(|| {
        let (_, body) = http_get(agg.http, "/api/v1/slos").unwrap_or_default();
        panic!("the page alert did not fire: {body}\n{}", agg.proc.log())
    });
    assert_eq!(slo_view["id"], "myservice-requests-availability");
    assert_eq!(slo_view["objective"], 99.9);
    assert_eq!(slo_view["periodDays"], 30.0);
    let series0 = &slo_view["series"][0];
    // A third of the requests fail: the SLI is about 2/3, the 5m burn rate about 333.
    let sli = slo_view["sli"].as_f64().expect("sli");
    assert!((sli - 2.0 / 3.0).abs() < 0.05, "{slo_view}");
    let burn = series0["burnRate"]["5m"].as_f64().expect("burn rate");
    assert!((250.0..400.0).contains(&burn), "{slo_view}");
    // 1h: 10 of 50 minutes of data at a third failing.
    let burn_1h = series0["burnRate"]["1h"].as_f64().expect("1h");
    assert!(burn_1h > 14.4, "{slo_view}");
    let left = slo_view["errorBudgetRemaining"].as_f64().expect("budget");
    assert!(
        left < 0.0,
        "a third failing for minutes overspends a 0.1 % budget: {slo_view}"
    );
    // The recorded series are ordinary series: a PromQL query sees them.
    let (st, body) =
        http_get(agg.http, "/api/v1/query?query=slo%3Aobjective%3Aratio").expect("query");
    assert_eq!(st, 200);
    assert!(body.contains("0.999"), "{body}");
}
