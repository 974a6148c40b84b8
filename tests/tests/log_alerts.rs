//! Log alerts end to end on the real aggregator: a Loki ruler file loaded with `--log-rules`,
//! lines pushed as Promtail would, the alert firing through the same routing (a real webhook
//! receiver) and correlation (an incident) as metric alerts, and the rules listed in Loki's
//! ruler API — its YAML read back as a rule file by `rules check --logql`.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::Value;
use telltale_common::wire::{LogEntry, LogStream};
use telltale_tests::peers::WebhookSink;
use telltale_tests::*;

const TOKEN: &str = "s3cret";

fn get_json(agg: &Aggregator, path: &str) -> Value {
    let (status, body) = http_get(agg.http, path).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn check(file: &std::path::Path, logql: bool) -> (bool, String) {
    let mut cmd = std::process::Command::new(bin("telltale-aggregator").unwrap());
    cmd.args(["rules", "check"]);
    if logql {
        cmd.arg("--logql");
    }
    let out = cmd.arg(file).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn push(agg: &Aggregator, job: &str, lines: &[&str]) {
    let now = telltale_common::model::now_ms() * 1_000_000;
    let stream = LogStream {
        labels: vec![("job".into(), job.into())],
        entries: lines
            .iter()
            .enumerate()
            .map(|(i, l)| LogEntry {
                t_ns: now - 1_000_000_000 + i as i64,
                line: (*l).into(),
                metadata: Vec::new(),
            })
            .collect(),
    };
    loki_push(agg.http, TOKEN, &[stream]).unwrap();
}

#[test]
fn a_log_alert_fires_through_routing_and_correlation_and_is_listed_like_lokis_ruler() {
    let sink = WebhookSink::start().unwrap();
    let (dir, tls) = scratch_with_ca().unwrap();
    let rules = dir.path().join("app-logs.yml");
    std::fs::write(
        &rules,
        r#"groups:
  - name: app-errors
    interval: 1s
    rules:
      - alert: AppErrorsLogged
        expr: sum by (job) (count_over_time({job="app"} |= "error" [1m])) > 2
        labels: {severity: page}
        annotations: {summary: "{{ $labels.job }} logged {{ $value }} errors in a minute"}
      - record: job:log_lines:count1m
        expr: sum by (job) (count_over_time({job=~".+"}[1m]))
"#,
    )
    .unwrap();
    // The file is a LogQL rule file, not a Prometheus one.
    let (ok, out) = check(&rules, true);
    assert!(ok && out.contains("SUCCESS: 2 rules found"), "{out}");
    let (ok, out) = check(&rules, false);
    assert!(!ok, "LogQL is not PromQL: {out}");

    let routes = dir.path().join("routes.yml");
    std::fs::write(
        &routes,
        format!(
            "route: {{receiver: hook, group_by: [alertname], group_wait: 0s, group_interval: 1s}}\nreceivers:\n  - name: hook\n    webhook_configs: [{{url: '{}'}}]\n",
            sink.url("/hook")
        ),
    )
    .unwrap();
    let args = [
        "--api-token",
        TOKEN,
        "--log-rules",
        rules.to_str().unwrap(),
        "--routes",
        routes.to_str().unwrap(),
    ];
    let data = dir.path().join("agg");
    let agg = start_aggregator(&tls, &data, "127.0.0.1:0", "127.0.0.1:0", &args).unwrap();

    // Two errors: below the threshold, nothing fires.
    push(
        &agg,
        "app",
        &["GET /a 200", "error: db timeout", "error: db timeout"],
    );
    push(&agg, "web", &["error: not this job"]);
    std::thread::sleep(Duration::from_secs(3));
    let firing = |agg: &Aggregator| -> Vec<Value> {
        get_json(agg, "/prometheus/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert!(firing(&agg).is_empty(), "{:?}", firing(&agg));
    // A third error: the rule fires at its next evaluation.
    push(&agg, "app", &["error: db timeout"]);
    let alerts = wait_for(Duration::from_secs(20), || {
        let a = firing(&agg);
        (!a.is_empty()).then_some(a)
    })
    .expect("the log alert fires");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["labels"]["alertname"], "AppErrorsLogged");
    assert_eq!(alerts[0]["labels"]["job"], "app");
    assert_eq!(alerts[0]["state"], "firing");
    assert_eq!(
        alerts[0]["annotations"]["summary"],
        "app logged 3 errors in a minute"
    );
    // Prometheus' own endpoints list the PromQL rules only.
    let prom = get_json(&agg, "/api/v1/alerts");
    assert_eq!(
        prom["data"]["alerts"].as_array().unwrap().len(),
        0,
        "{prom}"
    );
    // Prometheus' rules list only the built-in golden-signal groups, no log rule.
    let prom_groups: Vec<String> = get_json(&agg, "/api/v1/rules")["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        prom_groups,
        ["telltale-golden-hosts", "telltale-golden-services"]
    );
    let groups = get_json(&agg, "/prometheus/api/v1/rules")["data"]["groups"].clone();
    assert_eq!(groups[0]["name"], "app-errors");
    assert_eq!(groups[0]["rules"][0]["health"], "ok", "{groups}");
    assert_eq!(groups[0]["rules"][1]["type"], "recording");

    // Routed like any alert: the webhook receiver gets it.
    let got = sink.wait("/hook", 1, Duration::from_secs(20)).unwrap();
    let body = &got[0].body;
    assert_eq!(body["alerts"][0]["labels"]["alertname"], "AppErrorsLogged");
    let url = body["alerts"][0]["generatorURL"].as_str().unwrap();
    assert!(url.contains("/loki/api/v1/query_range?query="), "{url}");
    // Correlated like any alert: an incident holds it.
    let incident = wait_for(Duration::from_secs(20), || {
        let v = get_json(&agg, "/api/v1/incidents?state=open");
        v["data"]
            .as_array()?
            .iter()
            .find(|i| {
                i["alerts"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|x| x["labels"]["alertname"] == "AppErrorsLogged")
                })
            })
            .cloned()
    })
    .unwrap_or_else(|| panic!("{}", get_json(&agg, "/api/v1/incidents")));
    assert!(incident["id"].is_string(), "{incident}");

    // The recording rule writes a metric PromQL reads.
    let v = wait_for(Duration::from_secs(10), || {
        let r = query(agg.http, r#"job:log_lines:count1m{job="app"}"#).ok()?;
        r.first()?["value"][1].as_str()?.parse::<f64>().ok()
    });
    assert_eq!(v, Some(4.0));

    // Loki's ruler API: YAML by namespace (the file's name), one group by name, 404 else.
    let (status, yaml) = http_get(agg.http, "/loki/api/v1/rules").unwrap();
    assert_eq!(status, 200, "{yaml}");
    assert!(yaml.starts_with("app-logs.yml:"), "{yaml}");
    assert!(yaml.contains("AppErrorsLogged"), "{yaml}");
    let (status, ns) = http_get(agg.http, "/loki/api/v1/rules/app-logs.yml").unwrap();
    assert_eq!((status, &ns), (200, &yaml));
    let (status, group) = http_get(agg.http, "/loki/api/v1/rules/app-logs.yml/app-errors").unwrap();
    assert_eq!(status, 200, "{group}");
    for (path, want) in [
        ("/loki/api/v1/rules/nope.yml", 404),
        ("/loki/api/v1/rules/app-logs.yml/nope", 404),
    ] {
        assert_eq!(http_get(agg.http, path).unwrap().0, want, "{path}");
    }
    // The group's YAML is a rule group a file can hold again, with the same meaning.
    let mut file = String::from("groups:\n");
    for (i, line) in group.lines().enumerate() {
        file.push_str(if i == 0 { "  - " } else { "    " });
        file.push_str(line);
        file.push('\n');
    }
    let again = dir.path().join("again.yml");
    std::fs::write(&again, &file).unwrap();
    let (ok, out) = check(&again, true);
    assert!(
        ok && out.contains("SUCCESS: 2 rules found"),
        "{file}\n{out}"
    );
    assert!(
        file.contains(r#"|= \"error\""#) || file.contains(r#"|= "error""#),
        "{file}"
    );
}

#[test]
fn the_shipped_example_log_rules_load() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/log-rules/app.yml");
    let (ok, out) = check(&file, true);
    assert!(ok && out.contains("SUCCESS: 3 rules found"), "{out}");
}
