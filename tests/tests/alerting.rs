//! Rules and alerting end to end: real aggregator and agent processes, real peers from
//! Debian's packages (promtool, amtool, prometheus-alertmanager, nats-server), a webhook
//! receiver in the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use telltale_aggregator::alerting::config::RoutingConfig;
use telltale_common::model::{Labels, Sample, SeriesSamples, now_ms};
use telltale_tests::peers::{
    ALERTMANAGER, AMTOOL, Alertmanager, NATS_SERVER, Nats, WebhookSink, peer,
};
use telltale_tests::{
    Aggregator, bin, certs_init, certs_issue, http_get, http_post_auth, query,
    start_agent_with_config, start_aggregator, wait_for,
};

const TOKEN: &str = "s3cret";
const PROMTOOL: &str = "/usr/bin/promtool";
const NODE_EXPORTER_RULES: &str =
    "/usr/share/doc/prometheus-node-exporter/examples/example-rules.yml";
const AM_EXAMPLE: &str = "/etc/prometheus/alertmanager.yml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn push(agg: &Aggregator, series: &[(&[(&str, &str)], f64)]) {
    let t = now_ms();
    let s: Vec<SeriesSamples> = series
        .iter()
        .map(|(l, v)| SeriesSamples {
            labels: Labels::from_pairs(l.iter().copied()),
            samples: vec![Sample(t, *v)],
        })
        .collect();
    let body = telltale_aggregator::api::remote_write::encode(&s);
    let (st, b) = http_post_auth(
        agg.http,
        "/api/v1/write",
        "application/x-protobuf",
        &body,
        Some(TOKEN),
    )
    .expect("remote_write");
    assert_eq!(st, 204, "{b}");
}

fn get_json(agg: &Aggregator, path: &str) -> Value {
    let (st, body) = http_get(agg.http, path).expect("GET");
    assert_eq!(st, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

fn serve(dir: &Path, rules: &Path, routes: Option<&Path>) -> Aggregator {
    let mut extra: Vec<String> = vec![
        "--api-token".into(),
        TOKEN.into(),
        "--rules".into(),
        rules.display().to_string(),
    ];
    if let Some(r) = routes {
        extra.push("--routes".into());
        extra.push(r.display().to_string());
    }
    let e: Vec<&str> = extra.iter().map(|s| s.as_str()).collect();
    start_aggregator(
        &dir.join("tls"),
        &dir.join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &e,
    )
    .expect("aggregator starts")
}

fn alertnames(v: &Value) -> Vec<String> {
    v["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["labels"]["alertname"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn routing_agrees_with_amtool() {
    let Some(amtool) = peer(AMTOOL, "prometheus-alertmanager") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("tree.yml");
    std::fs::write(
        &own,
        r#"
route:
  receiver: default
  group_by: [alertname]
  routes:
    - matchers: ['service=~"api|web"', 'severity!="info"']
      receiver: apps
      continue: true
      routes:
        - match_re: {severity: "crit.*"}
          receiver: apps-pager
    - match: {team: db}
      receiver: db
      routes:
        - matchers: ['env!~"prod|staging"']
          receiver: db-dev
    - matchers: ['service="web"']
      receiver: web-extra
receivers: [{name: default}, {name: apps}, {name: apps-pager}, {name: db}, {name: db-dev}, {name: web-extra}]
"#,
    )
    .unwrap();
    let mut files = vec![own];
    if let Some(p) = peer(AM_EXAMPLE, "prometheus-alertmanager") {
        files.push(p);
    }
    let values: [(&str, &[&str]); 5] = [
        ("service", &["api", "web", "foo1", "files", "database", ""]),
        ("severity", &["critical", "warning", "info", ""]),
        ("team", &["db", ""]),
        ("env", &["prod", "dev", ""]),
        ("owner", &["team-X", "team-Y", ""]),
    ];
    let mut cases: Vec<Vec<(&str, &str)>> = vec![vec![]];
    for (name, vals) in values {
        cases = cases
            .into_iter()
            .flat_map(|c| {
                vals.iter().map(move |v| {
                    let mut c = c.clone();
                    if !v.is_empty() {
                        c.push((name, *v));
                    }
                    c
                })
            })
            .collect();
    }
    // Every fifth combination keeps the run short while covering every value.
    let mut checked = 0;
    for f in &files {
        let cfg = RoutingConfig::load(f).expect("loads");
        for case in cases.iter().step_by(5) {
            let mut labels = case.clone();
            labels.push(("alertname", "X"));
            let ours: Vec<String> = cfg
                .route
                .matching(&Labels::from_pairs(labels.iter().copied()))
                .into_iter()
                .map(|r| r.receiver.clone())
                .collect();
            let out = Command::new(&amtool)
                .args(["config", "routes", "test"])
                .arg(format!("--config.file={}", f.display()))
                .args(labels.iter().map(|(k, v)| format!("{k}={v}")))
                .output()
                .expect("amtool runs");
            let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert_eq!(ours.join(","), theirs, "{} {labels:?}", f.display());
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked}");
}

/// Templates beyond `$labels` and `$value` (queries, range, variables, define/template,
/// else-if, parentheses): the same test file passes on Prometheus and on Telltale.
#[test]
fn alert_templates_render_as_prometheus_renders_them() {
    telltale_tests::peers::rules_test_on_both(&repo().join("tests/rules/templates_test.yml"));
}

#[test]
fn rules_check_agrees_with_promtool() {
    let Some(promtool) = peer(PROMTOOL, "prometheus") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = vec![
        repo().join("config/rules/node.yml"),
        repo().join("config/rules/anomaly.yml"),
    ];
    if let Some(p) = peer(NODE_EXPORTER_RULES, "prometheus-node-exporter") {
        files.push(p);
        // node_exporter's own public rule sets shipped beside it (old ↔ new metric names).
        for f in [
            "example-17-compatibility-rules.yml",
            "example-17-compatibility-rules-new-to-old.yml",
        ] {
            files.push(Path::new("/usr/share/doc/prometheus-node-exporter").join(f));
        }
    }
    for (i, text) in [
        "groups: [{name: a, rules: [{alert: X, expr: 'up =='}]}]",
        "groups: [{name: a, rules: [{record: 'no good', expr: up}]}]",
        "groups: [{name: a, rules: [{alert: X, expr: up, for: 1m, annotations: {s: '{{ $labels.x }}'}}]}]",
        "groups: [{name: a, rules: [{record: r, alert: X, expr: up}]}]",
        "groups: [{name: a, rules: []}, {name: a, rules: []}]",
        "groups: [{name: a, interval: 10q, rules: []}]",
        "groups: [{name: a, rules: [{record: 'r:x', expr: 'sum by (job) (rate(x[5m]))', labels: {l: v}}]}]",
        "groups: [{name: a, rules: [{alert: X, expr: up, annotations: {s: '{{ nosuchfunc }}'}}]}]",
        "groups: [{name: a, rules: [{alert: X, expr: up, keep_firing_for: 5m}]}]",
        // Templates: scope, parentheses, control structures, as Go's parser sees them.
        "groups: [{name: a, rules: [{alert: X, expr: up, annotations: {s: '{{ $x }}'}}]}]",
        "groups: [{name: a, rules: [{alert: X, expr: up, annotations: {s: '{{ if true }}{{ $x := 1 }}{{ end }}{{ $x }}'}}]}]",
        "groups: [{name: a, rules: [{alert: X, expr: up, annotations: {s: '{{ with $x := 1 }}{{ $x }}{{ end }}'}}]}]",
        r#"groups: [{name: a, rules: [{alert: X, expr: up, annotations: {s: '{{ (index $labels "x" }}'}}]}]"#,
        "groups: [{name: a, rules: [{alert: X, expr: up, annotations: {s: '{{ break }}'}}]}]",
        r#"groups: [{name: a, rules: [{alert: X, expr: up, annotations: {s: '{{ range query "up" }}{{ .Labels.job }}{{ break }}{{ end }}'}}]}]"#,
        r#"groups: [{name: a, rules: [{alert: X, expr: up, annotations: {s: '{{ define "d" }}{{ $labels }}{{ end }}'}}]}]"#,
        r#"groups: [{name: a, rules: [{alert: X, expr: up, annotations: {s: '{{ define "d" }}[{{ . }}]{{ end }}{{ template "d" $value }}'}}]}]"#,
        "groups: [{name: a, rules: [{alert: X, expr: up, annotations: {s: '{{ if gt $value 1.0 }}a{{ else if lt $value 0.0 }}b{{ else }}c{{ end }}'}}]}]",
        r#"groups: [{name: a, rules: [{alert: X, expr: up, annotations: {s: '{{ $value | printf "%.1f" | }}'}}]}]"#,
        "not: [valid",
    ]
    .iter()
    .enumerate()
    {
        let p = dir.path().join(format!("r{i}.yml"));
        std::fs::write(&p, text).unwrap();
        files.push(p);
    }
    let agg = bin("telltale-aggregator").unwrap();
    for f in &files {
        let theirs = Command::new(&promtool)
            .args(["check", "rules"])
            .arg(f)
            .output()
            .unwrap();
        let ours = Command::new(&agg)
            .args(["rules", "check"])
            .arg(f)
            .output()
            .unwrap();
        let text = std::fs::read_to_string(f).unwrap();
        // Prometheus 2.42 (Debian) predates keep_firing_for: there we are the newer one.
        if text.contains("keep_firing_for") {
            assert!(ours.status.success());
            continue;
        }
        assert_eq!(
            ours.status.success(),
            theirs.status.success(),
            "{}: ours {:?} / promtool {:?}\n{}\n{}",
            f.display(),
            ours.status,
            theirs.status,
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout)
        );
        if !ours.status.success() {
            assert!(String::from_utf8_lossy(&ours.stdout).contains(&f.display().to_string()));
        }
    }
}

#[test]
fn public_rules_evaluate_against_agent_data() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    certs_init(&tls).unwrap();
    certs_issue(&tls, "host-a").unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::copy(repo().join("config/rules/node.yml"), rules.join("node.yml")).unwrap();
    if let Some(p) = peer(NODE_EXPORTER_RULES, "prometheus-node-exporter") {
        std::fs::copy(p, rules.join("node-exporter-examples.yml")).unwrap();
    }
    std::fs::write(
        rules.join("up.yml"),
        r#"groups:
  - name: up
    interval: 1s
    rules:
      - alert: AgentConnected
        expr: up{job="telltale-agent"} == 1 and on(instance) node_load1 >= 0
        labels: {severity: info}
        annotations:
          summary: '{{ $labels.instance }} is up ({{ $value | humanize }})'
"#,
    )
    .unwrap();
    let agg = serve(dir.path(), &rules.join("*.yml"), None);
    let _agent = start_agent_with_config(
        &tls,
        "host-a",
        agg.quic,
        &dir.path().join("agent"),
        "1s",
        None,
    )
    .unwrap();
    // Recording rules of the public set produce series for the agent. node_exporter's example
    // groups set no interval, so they run at the default minute: the first evaluation can
    // come a minute after the agent's first samples, and a 60 s wait failed now and then.
    let rec = wait_for(Duration::from_secs(150), || {
        let r = query(agg.http, "instance:node_cpu_utilization:ratio").ok()?;
        (!r.is_empty()).then_some(r)
    })
    .expect("node_exporter's example recording rules evaluate against agent data");
    assert_eq!(rec[0]["metric"]["instance"], "host-a");
    assert!(
        !query(agg.http, "instance:node_memory_utilisation:ratio")
            .unwrap()
            .is_empty()
    );
    // The alert fires; annotations are rendered; ALERTS holds it.
    let alerts = wait_for(Duration::from_secs(30), || {
        let v = get_json(&agg, "/api/v1/alerts");
        (alertnames(&v["data"]).contains(&"AgentConnected".to_string())).then_some(v)
    })
    .expect("alert fires");
    let a = alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "AgentConnected")
        .unwrap();
    assert_eq!(a["state"], "firing");
    assert_eq!(a["annotations"]["summary"], "host-a is up (1)");
    assert_eq!(a["value"], "1e+00");
    assert!(
        !query(
            agg.http,
            "ALERTS{alertname=\"AgentConnected\",alertstate=\"firing\"}"
        )
        .unwrap()
        .is_empty()
    );
    assert!(
        !query(agg.http, "ALERTS_FOR_STATE{alertname=\"AgentConnected\"}")
            .unwrap()
            .is_empty()
    );
    // Every rule is healthy, and the groups look as Prometheus serves them.
    let ok = wait_for(Duration::from_secs(30), || {
        let v = get_json(&agg, "/api/v1/rules");
        let groups = v["data"]["groups"].as_array()?.clone();
        let all_ok = groups.iter().all(|g| {
            g["rules"]
                .as_array()
                .is_some_and(|rs| rs.iter().all(|r| r["health"] == "ok"))
        });
        (all_ok && groups.len() >= 3).then_some(groups)
    })
    .unwrap_or_else(|| panic!("rules unhealthy: {}", get_json(&agg, "/api/v1/rules")));
    let g = ok
        .iter()
        .find(|g| g["name"] == "telltale-node-alerts")
        .expect("group");
    assert_eq!(g["interval"], 15.0);
    let r = &g["rules"][0];
    assert_eq!(r["type"], "alerting");
    assert_eq!(r["duration"], 60.0);
    let filtered = get_json(&agg, "/api/v1/rules?type=record");
    assert!(
        filtered["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["rules"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["type"] == "recording"))
    );
    // Without a routing file, notifications go to the log.
    agg.proc
        .wait_log("AgentConnected", Duration::from_secs(30))
        .expect("log receiver");
    // Evaluation is triggered by arriving samples, not only by timers.
    let m = telltale_tests::metric(
        agg.http,
        "telltale_aggregator_rule_group_evaluations_total{trigger=\"eager\"}",
    )
    .unwrap_or(0.0);
    assert!(m > 0.0, "{m}");
}

#[test]
fn agent_breach_reaches_webhook_alertmanager_and_nats() {
    let (Some(nats_bin), Some(am_bin)) = (
        peer(NATS_SERVER, "nats-server"),
        peer(ALERTMANAGER, "prometheus-alertmanager"),
    ) else {
        return;
    };
    let nats = Nats::start(&nats_bin).unwrap();
    let am = Alertmanager::start(
        &am_bin,
        "route: {receiver: none}\nreceivers: [{name: none}]\n",
    )
    .unwrap();
    let sink = WebhookSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    certs_init(&tls).unwrap();
    certs_issue(&tls, "host-b").unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups: [{name: g, interval: 10s, rules: [{alert: Breach, expr: 'demo_breach > 0', labels: {severity: critical}, annotations: {summary: 'breach on {{ $labels.instance }}'}}]}]\n",
    )
    .unwrap();
    let routes = dir.path().join("routes.yml");
    std::fs::write(
        &routes,
        format!(
            "route: {{receiver: all, group_by: [alertname], group_wait: 0s, group_interval: 1s}}\n\
             receivers:\n  - name: all\n    webhook_configs: [{{url: '{}'}}]\n    alertmanager_configs: [{{url: 'http://{}'}}]\n    nats_configs: [{{url: '{}', subject: telltale.alerts, stream: TELLTALE}}]\n",
            sink.url("/hook"),
            am.addr,
            nats.url()
        ),
    )
    .unwrap();
    let agg = serve(dir.path(), &rules, Some(&routes));
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir_all(&textfiles).unwrap();
    std::fs::write(textfiles.join("demo.prom"), "demo_breach 0\n").unwrap();
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!("[textfile]\ndirectory = {:?}\n", textfiles),
    )
    .unwrap();
    let _agent = start_agent_with_config(
        &tls,
        "host-b",
        agg.quic,
        &dir.path().join("agent"),
        "1s",
        Some(&agent_toml),
    )
    .unwrap();
    wait_for(Duration::from_secs(30), || {
        (!query(agg.http, "demo_breach").ok()?.is_empty()).then_some(())
    })
    .expect("agent data arrives");
    assert!(sink.all().is_empty(), "nothing breached yet");
    std::fs::write(textfiles.join("demo.prom"), "demo_breach 3\n").unwrap();
    let got = sink.wait("/hook", 1, Duration::from_secs(30)).unwrap();
    let b = &got[0].body;
    assert_eq!(b["version"], "4");
    assert_eq!(b["status"], "firing");
    assert_eq!(b["receiver"], "all");
    assert_eq!(b["groupLabels"]["alertname"], "Breach");
    assert_eq!(b["alerts"][0]["labels"]["instance"], "host-b");
    assert_eq!(b["alerts"][0]["annotations"]["summary"], "breach on host-b");
    let in_am = wait_for(Duration::from_secs(20), || {
        let a = am.alerts().ok()?;
        a.iter()
            .any(|x| x["labels"]["alertname"] == "Breach" && x["labels"]["instance"] == "host-b")
            .then_some(a)
    });
    assert!(
        in_am.is_some(),
        "Alertmanager never got the alert: {:?}",
        am.alerts()
    );
    let msgs = wait_for(Duration::from_secs(20), || {
        let m = nats.stream_messages("TELLTALE").ok()?;
        (!m.is_empty()).then_some(m)
    })
    .expect("JetStream stream holds the notification");
    assert_eq!(msgs[0]["alerts"][0]["labels"]["alertname"], "Breach");
    assert_eq!(msgs[0]["version"], "4");
    // Back to normal: a resolved notification follows.
    std::fs::write(textfiles.join("demo.prom"), "demo_breach 0\n").unwrap();
    let got = wait_for(Duration::from_secs(30), || {
        let a = sink.accepted("/hook");
        a.iter()
            .any(|r| r.body["status"] == "resolved")
            .then_some(a)
    })
    .expect("resolved notification");
    assert_eq!(
        got.iter().filter(|r| r.body["status"] == "firing").count(),
        1,
        "{got:?}"
    );
}

fn silence_body(matcher: &str, value: &str, minutes: i64) -> String {
    let now = now_ms();
    serde_json::json!({
        "matchers": [{"name": matcher, "value": value, "isRegex": false, "isEqual": true}],
        "startsAt": telltale_aggregator::alerting::rfc3339(now - 1000),
        "endsAt": telltale_aggregator::alerting::rfc3339(now + minutes * 60_000),
        "createdBy": "test",
        "comment": "maintenance",
    })
    .to_string()
}

#[test]
fn silences_dedup_across_restarts_and_pending_notifications_survive() {
    let sink = WebhookSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    certs_init(&dir.path().join("tls")).unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups: [{name: g, interval: 1s, rules: [{alert: TooHigh, expr: 'load_x > 10', labels: {severity: warning}}]}]\n",
    )
    .unwrap();
    let routes = dir.path().join("routes.yml");
    std::fs::write(
        &routes,
        format!(
            "route: {{receiver: hook, group_by: [inst], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}\n\
             receivers: [{{name: hook, webhook_configs: [{{url: '{}'}}]}}]\n",
            sink.url("/hook")
        ),
    )
    .unwrap();
    let count = |inst: &str| {
        sink.accepted("/hook")
            .iter()
            .filter(|r| r.body["groupLabels"]["inst"] == inst && r.body["status"] == "firing")
            .count()
    };
    let mut agg = serve(dir.path(), &rules, Some(&routes));
    push(&agg, &[(&[("__name__", "load_x"), ("inst", "a")], 20.0)]);
    sink.wait("/hook", 1, Duration::from_secs(20)).unwrap();
    // Restart: the alert fires again, but the notification log says it was sent.
    assert_eq!(agg.proc.terminate(Duration::from_secs(20)), Some(0));
    let mut agg = serve(dir.path(), &rules, Some(&routes));
    push(&agg, &[(&[("__name__", "load_x"), ("inst", "a")], 21.0)]);
    wait_for(Duration::from_secs(20), || {
        alertnames(&get_json(&agg, "/api/v1/alerts")["data"])
            .contains(&"TooHigh".to_string())
            .then_some(())
    })
    .expect("fires again after the restart");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        count("a"),
        1,
        "no duplicate after a restart: {:?}",
        sink.all()
    );

    // Silences: token required; a silenced alert is not notified and shows as suppressed.
    let body = silence_body("inst", "b", 60);
    let (st, _) = http_post_auth(
        agg.http,
        "/api/v2/silences",
        "application/json",
        body.as_bytes(),
        Some("wrong"),
    )
    .unwrap();
    assert_eq!(st, 401);
    let (st, resp) = http_post_auth(
        agg.http,
        "/api/v2/silences",
        "application/json",
        body.as_bytes(),
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(st, 200, "{resp}");
    let id = serde_json::from_str::<Value>(&resp).unwrap()["silenceID"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, bad) = http_post_auth(
        agg.http,
        "/api/v2/silences",
        "application/json",
        b"{\"matchers\":[]}",
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(st, 400, "{bad}");
    push(&agg, &[(&[("__name__", "load_x"), ("inst", "b")], 50.0)]);
    let suppressed = wait_for(Duration::from_secs(20), || {
        let (_, body) = http_get(agg.http, "/api/v2/alerts").ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v.as_array()?
            .iter()
            .find(|a| a["labels"]["inst"] == "b")
            .cloned()
    })
    .expect("alert b known");
    assert_eq!(suppressed["status"]["state"], "suppressed");
    assert_eq!(suppressed["status"]["silencedBy"][0], id.as_str());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count("b"), 0, "silenced");
    let list: Value =
        serde_json::from_str(&http_get(agg.http, "/api/v2/silences").unwrap().1).unwrap();
    assert_eq!(list[0]["status"]["state"], "active");
    // Expire it (DELETE, token): b is notified at the group's next flush.
    let del = raw_delete(agg.http, &format!("/api/v2/silence/{id}"), TOKEN).unwrap();
    assert_eq!(del, 200);
    let (_, one) = http_get(agg.http, &format!("/api/v2/silence/{id}")).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&one).unwrap()["status"]["state"],
        "expired"
    );
    wait_for(Duration::from_secs(20), || (count("b") == 1).then_some(())).expect("b after expiry");

    // Pending notifications survive a crash: the receiver fails, the aggregator is killed,
    // the receiver recovers, the restarted aggregator delivers.
    sink.set_status(500);
    push(&agg, &[(&[("__name__", "load_x"), ("inst", "c")], 30.0)]);
    wait_for(Duration::from_secs(20), || {
        sink.all()
            .iter()
            .any(|r| r.status == 500 && r.body["groupLabels"]["inst"] == "c")
            .then_some(())
    })
    .expect("a failed attempt");
    agg.proc.kill();
    sink.set_status(200);
    let agg = serve(dir.path(), &rules, Some(&routes));
    wait_for(Duration::from_secs(30), || (count("c") >= 1).then_some(())).unwrap_or_else(|| {
        panic!(
            "pending notification lost: {:?}\n{}",
            sink.all(),
            agg.proc.log()
        )
    });
    // The queue entry is removed once the receiver's answer is read, a moment after the
    // receiver has the notification: wait for it rather than race it.
    let queue =
        || telltale_tests::metric(agg.http, "telltale_aggregator_notification_queue_length").ok();
    wait_for(Duration::from_secs(10), || (queue()? == 0.0).then_some(()))
        .unwrap_or_else(|| panic!("the delivered notification stays queued: {:?}", queue()));
}

fn raw_delete(addr: std::net::SocketAddr, path: &str, token: &str) -> anyhow::Result<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "DELETE {path} HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n"
    )?;
    let mut r = String::new();
    s.read_to_string(&mut r)?;
    Ok(r.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0))
}

#[test]
fn a_failure_cascade_is_one_incident_with_one_page() {
    let sink = WebhookSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    certs_init(&dir.path().join("tls")).unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        r#"groups:
  - name: cascade
    interval: 10s
    rules:
      - alert: DiskFull
        expr: disk_avail_ratio < 0.05
        labels: {severity: critical}
      - alert: DbLatencyHigh
        expr: db_latency_seconds > 1
        labels: {severity: critical}
      - alert: ApiErrorRate
        expr: api_error_ratio > 0.1
        labels: {severity: critical}
      - alert: FrontendErrors
        expr: frontend_error_ratio > 0.05
        labels: {severity: critical}
"#,
    )
    .unwrap();
    let routes = dir.path().join("routes.yml");
    std::fs::write(
        &routes,
        format!(
            r#"route: {{receiver: log, group_by: ['...'], group_wait: 0s, group_interval: 1s}}
receivers:
  - name: log
    log_configs: [{{path: '{}'}}]
  - name: pager
    webhook_configs: [{{url: '{}'}}]
  - name: lead
    webhook_configs: [{{url: '{}'}}]
escalation_policies:
  - name: page
    matchers: ['severity="critical"']
    steps: [{{receiver: pager}}, {{receiver: lead, delay: 4s}}]
correlation:
  window: 5m
  services:
    - {{name: frontend, depends_on: [api], user_facing: true}}
    - {{name: api, depends_on: [db]}}
    - {{name: db, hosts: [db-1]}}
"#,
            dir.path().join("notifications.log").display(),
            sink.url("/page"),
            sink.url("/lead"),
        ),
    )
    .unwrap();
    let agg = serve(dir.path(), &rules, Some(&routes));
    // The database host's disk fills, then the symptoms climb the stack.
    push(
        &agg,
        &[(
            &[
                ("__name__", "disk_avail_ratio"),
                ("instance", "db-1:9100"),
                ("mountpoint", "/var"),
            ],
            0.01,
        )],
    );
    sink.wait("/page", 1, Duration::from_secs(20)).unwrap();
    for (name, service, v) in [
        ("db_latency_seconds", "db", 3.0),
        ("api_error_ratio", "api", 0.4),
        ("frontend_error_ratio", "frontend", 0.2),
    ] {
        std::thread::sleep(Duration::from_millis(300));
        push(&agg, &[(&[("__name__", name), ("service", service)], v)]);
    }
    let incidents = wait_for(Duration::from_secs(20), || {
        let v = get_json(&agg, "/api/v1/incidents?state=open");
        let list = v["data"].as_array()?.clone();
        (list.len() == 1 && list[0]["alerts"].as_array()?.len() == 4).then_some(list)
    })
    .unwrap_or_else(|| {
        panic!(
            "one incident of four alerts: {}",
            get_json(&agg, "/api/v1/incidents")
        )
    });
    let inc = &incidents[0];
    assert_eq!(inc["rootCause"]["alertname"], "DiskFull");
    let kinds: Vec<&str> = inc["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"opened") && kinds.contains(&"paged"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "alert_firing").count(),
        4,
        "{kinds:?}"
    );
    // Acknowledge (token required): the escalation's second step never pages.
    let id = inc["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/incidents/{id}/ack");
    let (st, _) = http_post_auth(
        agg.http,
        &path,
        "application/json",
        b"{\"by\":\"alice\"}",
        None,
    )
    .unwrap();
    assert_eq!(st, 401, "a token is configured: it is required");
    let (st, body) = http_post_auth(
        agg.http,
        &path,
        "application/json",
        b"{\"by\":\"alice\"}",
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(st, 200, "{body}");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        sink.accepted("/page").len(),
        1,
        "one page: {:?}",
        sink.all()
    );
    assert!(
        sink.accepted("/lead").is_empty(),
        "acknowledged before step 2"
    );
    let page = &sink.accepted("/page")[0].body;
    assert_eq!(
        page["telltale"]["incident"]["rootCause"]["alertname"],
        "DiskFull"
    );
    let one = get_json(&agg, &format!("/api/v1/incidents/{id}"));
    assert_eq!(one["data"]["acknowledged"]["by"], "alice");
    // An unrelated, unacknowledged incident escalates to step 2.
    push(
        &agg,
        &[(
            &[
                ("__name__", "disk_avail_ratio"),
                ("instance", "web-9:9100"),
                ("mountpoint", "/"),
            ],
            0.02,
        )],
    );
    sink.wait("/lead", 1, Duration::from_secs(20)).unwrap();
    assert_eq!(sink.accepted("/page").len(), 2);
    // Acknowledging an alert acknowledges its incident: a third host's incident pages once.
    push(
        &agg,
        &[(
            &[
                ("__name__", "disk_avail_ratio"),
                ("instance", "app-7:9100"),
                ("mountpoint", "/"),
            ],
            0.03,
        )],
    );
    sink.wait("/page", 3, Duration::from_secs(20)).unwrap();
    let third = wait_for(Duration::from_secs(10), || {
        get_json(&agg, "/api/v1/incidents?state=open")["data"]
            .as_array()?
            .iter()
            .find(|i| i["alerts"][0]["labels"]["instance"] == "app-7:9100")
            .cloned()
    })
    .expect("third incident");
    let fp = third["alerts"][0]["fingerprint"].as_str().unwrap();
    let (st, body) = http_post_auth(
        agg.http,
        &format!("/api/v1/alerts/{fp}/ack"),
        "application/json",
        b"",
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["data"]["acknowledged"]["by"],
        "api"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        sink.accepted("/lead").len(),
        1,
        "the acknowledged incident did not escalate"
    );
    let mut sizes: Vec<(String, usize)> = get_json(&agg, "/api/v1/incidents")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["rootCause"]["alertname"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                i["alerts"].as_array().map_or(0, |a| a.len()),
            )
        })
        .collect();
    sizes.sort();
    assert_eq!(
        sizes,
        [
            ("DiskFull".to_string(), 1),
            ("DiskFull".to_string(), 1),
            ("DiskFull".to_string(), 4)
        ]
    );
}

#[test]
fn an_alert_that_ends_while_the_aggregator_is_down_is_announced_resolved() {
    let sink = WebhookSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    certs_init(&dir.path().join("tls")).unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, "groups: []\n").unwrap();
    let routes = dir.path().join("routes.yml");
    std::fs::write(
        &routes,
        format!(
            "route: {{receiver: hook, group_wait: 0s, group_interval: 1s}}\n\
             receivers: [{{name: hook, webhook_configs: [{{url: '{}'}}]}}]\n",
            sink.url("/hook")
        ),
    )
    .unwrap();
    let mut agg = serve(dir.path(), &rules, Some(&routes));
    // An alert posted as another Prometheus would, ending in four seconds.
    let now = now_ms();
    let body = serde_json::json!([{
        "labels": {"alertname": "External", "instance": "x"},
        "startsAt": telltale_aggregator::alerting::rfc3339(now),
        "endsAt": telltale_aggregator::alerting::rfc3339(now + 4000),
    }])
    .to_string();
    let (st, _) = http_post_auth(
        agg.http,
        "/api/v2/alerts",
        "application/json",
        body.as_bytes(),
        None,
    )
    .unwrap();
    assert_eq!(st, 401);
    let (st, b) = http_post_auth(
        agg.http,
        "/api/v2/alerts",
        "application/json",
        body.as_bytes(),
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(st, 200, "{b}");
    sink.wait("/hook", 1, Duration::from_secs(10)).unwrap();
    // Delivered and confirmed (killed before the confirmation, it would be sent again: at
    // least once).
    wait_for(Duration::from_secs(10), || {
        let q = telltale_tests::metric(agg.http, "telltale_aggregator_notification_queue_length");
        (q.ok() == Some(0.0)).then_some(())
    })
    .expect("confirmed");
    agg.proc.kill();
    std::thread::sleep(Duration::from_secs(5));
    let agg2 = serve(dir.path(), &rules, Some(&routes));
    let got = wait_for(Duration::from_secs(15), || {
        let a = sink.accepted("/hook");
        a.iter()
            .any(|r| r.body["status"] == "resolved")
            .then_some(a)
    })
    .expect("resolved after the restart");
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].body["alerts"][0]["labels"]["alertname"], "External");
    // Its incident (kept across the restart) resolves with it.
    let resolved = wait_for(Duration::from_secs(10), || {
        let v = get_json(&agg2, "/api/v1/incidents?state=resolved");
        (v["data"].as_array()?.len() == 1).then_some(v)
    })
    .unwrap_or_else(|| panic!("{}", get_json(&agg2, "/api/v1/incidents")));
    assert_eq!(resolved["data"][0]["rootCause"]["alertname"], "External");
}

/// Random silences and alerts posted to a real Alertmanager 0.25 and to Telltale, both with
/// the same inhibition rules: each silence is accepted or refused by both, and every alert
/// ends up with the same state, the same silences and the same inhibiting alerts.
#[test]
fn silences_and_inhibitions_mute_as_alertmanager_does() {
    use std::collections::{BTreeMap, BTreeSet};
    use telltale_tests::compliance::Rng;
    use telltale_tests::hostile::Pick;
    let Some(am_bin) = peer(ALERTMANAGER, "prometheus-alertmanager") else {
        return;
    };
    let config = r#"
route:
  receiver: r0
  group_wait: 1h
  group_interval: 1h
  repeat_interval: 4h
  routes:
    - {matchers: ['severity=~"critical|warning"'], receiver: pager, continue: true, group_by: [team]}
    - {matchers: ['team="a"'], receiver: team-a}
receivers: [{name: r0}, {name: pager}, {name: team-a}]
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="info"']
    equal: [team]
  - source_match: {alertname: NodeDown}
    source_match_re: {instance: '.+'}
    target_match_re: {alertname: 'High.*'}
    equal: [instance]
  - source_matchers: ['a=~"\\d+"', 'alertname!="DiskFull"']
    target_matchers: ['b="x"']
"#;
    let am = Alertmanager::start(&am_bin, config).expect("alertmanager starts");
    let dir = tempfile::tempdir().unwrap();
    certs_init(&dir.path().join("tls")).unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, "groups: []\n").unwrap();
    let routes = dir.path().join("routes.yml");
    std::fs::write(&routes, config).unwrap();
    let agg = serve(dir.path(), &rules, Some(&routes));
    let seed = std::env::var("TT_SILENCE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x511e_7ce5_u64);
    let mut r = Rng(seed | 1);
    let values: &[(&str, &[&str])] = &[
        ("alertname", &["NodeDown", "HighLoad", "DiskFull"]),
        ("severity", &["critical", "warning", "info", ""]),
        ("team", &["a", "b", ""]),
        ("instance", &["i1", "i2", ""]),
        ("a", &["1", "12", "٣", "x", ""]),
        ("b", &["x", "", ""]),
    ];
    let now = now_ms();
    let time = telltale_aggregator::alerting::rfc3339;
    // Silences, each posted to both.
    let regexes = [
        r"\d+",
        "i1",
        "(?i)NODEDOWN",
        "[[0-9]",
        "crit.*",
        "(",
        "x|",
        ".*",
    ];
    let mut silence_ids: Vec<(String, String)> = Vec::new();
    const SILENCES: usize = 6;
    let post = |addr, path: &str, body: &str| {
        http_post_auth(addr, path, "application/json", body.as_bytes(), Some(TOKEN)).unwrap()
    };
    for i in 0..SILENCES {
        let n = 1 + r.below(2);
        let matchers: Vec<Value> = (0..n)
            .map(|_| {
                let (name, vals) = *r.pick(values);
                let is_regex = r.chance(0.3);
                let value = if is_regex {
                    r.pick(&regexes).to_string()
                } else if r.chance(0.05) {
                    String::new()
                } else {
                    r.pick(&vals[..vals.len().min(3)]).to_string()
                };
                serde_json::json!({"name": name, "value": value, "isRegex": is_regex,
                    "isEqual": !r.chance(0.1)})
            })
            .collect();
        let ends = if r.chance(0.05) {
            now - 60_000
        } else {
            now + 3_600_000
        };
        let body = serde_json::json!({
            "matchers": matchers, "startsAt": time(now - 60_000), "endsAt": time(ends),
            "createdBy": "fuzz", "comment": format!("silence {i}"),
        })
        .to_string();
        let (st_am, b_am) = post(am.addr, "/api/v2/silences", &body);
        let (st_tt, b_tt) = post(agg.http, "/api/v2/silences", &body);
        assert_eq!(
            st_am == 200,
            st_tt == 200,
            "silence {body}: Alertmanager {st_am} {b_am}, Telltale {st_tt} {b_tt}"
        );
        if st_am == 200 {
            let id = |b: &str| {
                serde_json::from_str::<Value>(b).unwrap()["silenceID"]
                    .as_str()
                    .unwrap()
                    .to_string()
            };
            silence_ids.push((id(&b_am), id(&b_tt)));
        }
    }
    // Alerts, one label set each.
    let mut sets: BTreeSet<BTreeMap<String, String>> = BTreeSet::new();
    while sets.len() < 40 {
        let set: BTreeMap<String, String> = values
            .iter()
            .map(|(k, vals)| (k.to_string(), r.pick(vals).to_string()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        sets.insert(set);
    }
    let alerts: Vec<Value> = sets
        .iter()
        .map(|l| serde_json::json!({"labels": l, "startsAt": time(now), "endsAt": time(now + 3_600_000)}))
        .collect();
    let body = Value::Array(alerts).to_string();
    assert_eq!(post(am.addr, "/api/v2/alerts", &body).0, 200);
    assert_eq!(post(agg.http, "/api/v2/alerts", &body).0, 200);
    // Each alert's state, silences (by their index) and inhibiting alerts (by labels).
    // Inhibitors are counted, not named: Alertmanager names one source alert per muting rule,
    // the first in Go's map order (it changes from run to run).
    type View = BTreeMap<BTreeMap<String, String>, (String, Vec<usize>, usize)>;
    let view = |addr, am_side: bool| -> Option<View> {
        let (_, b) = http_get(addr, "/api/v2/alerts").ok()?;
        let list: Vec<Value> = serde_json::from_str(&b).ok()?;
        let labels = |a: &Value| -> BTreeMap<String, String> {
            serde_json::from_value(a["labels"].clone()).unwrap_or_default()
        };
        let by_fp: BTreeMap<String, BTreeMap<String, String>> = list
            .iter()
            .map(|a| {
                (
                    a["fingerprint"].as_str().unwrap_or("").to_string(),
                    labels(a),
                )
            })
            .collect();
        let out: View = list
            .iter()
            .map(|a| {
                let st = &a["status"];
                let mut silenced: Vec<usize> = st["silencedBy"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|id| {
                        silence_ids.iter().position(|(x, y)| {
                            id.as_str() == Some(if am_side { x.as_str() } else { y.as_str() })
                        })
                    })
                    .collect();
                silenced.sort();
                let inhibited = st["inhibitedBy"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|fp| by_fp.contains_key(fp.as_str().unwrap_or("")))
                    .count();
                (
                    labels(a),
                    (
                        st["state"].as_str().unwrap_or("").to_string(),
                        silenced,
                        inhibited,
                    ),
                )
            })
            .collect();
        (out.len() == sets.len()).then_some(out)
    };
    let theirs =
        wait_for(Duration::from_secs(20), || view(am.addr, true)).expect("Alertmanager lists them");
    let ours =
        wait_for(Duration::from_secs(20), || view(agg.http, false)).expect("Telltale lists them");
    let differ: Vec<String> = theirs
        .iter()
        .filter(|(l, v)| ours.get(*l) != Some(*v))
        .map(|(l, v)| format!("{l:?}: Alertmanager {v:?}, Telltale {:?}", ours.get(l)))
        .collect();
    let silenced = theirs.values().filter(|v| !v.1.is_empty()).count();
    let inhibited = theirs.values().filter(|v| v.2 > 0).count();
    let active = theirs.values().filter(|v| v.0 == "active").count();
    println!(
        "seed {seed}: {} silences accepted of {SILENCES}, {} alerts: {silenced} silenced, \
         {inhibited} inhibited, {active} active; {} differ",
        silence_ids.len(),
        sets.len(),
        differ.len()
    );
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    assert!(
        silenced > 0 && inhibited > 0 && active > 0,
        "the case says little: {silenced} silenced, {inhibited} inhibited, {active} active"
    );

    // The list's query parameters, as `amtool alert query` and Grafana send them: the same
    // status, and the same alerts in the same order (both by fingerprint).
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let flags = [
        "true", "false", "0", "1", "yes", "no", "garbage", "", "TRUE",
    ];
    let filters = [
        r#"severity="critical""#,
        r#"team=~"a|b""#,
        r#"instance!="""#,
        r#"b="""#,
        r#"a=~"\d+""#,
        r#"alertname!~"High.*""#,
        "team=a",
        "instance=~\"\"",
        "foo",
        "1a=b",
        r#"a=~"(""#,
    ];
    let receivers = ["pager", "team-.*", "r0|pager", "(", "nobody"];
    let list = |addr, query: &str| -> (u16, Vec<BTreeMap<String, String>>) {
        let (st, b) = http_get(addr, &format!("/api/v2/alerts?{query}")).unwrap();
        let labels = serde_json::from_str::<Vec<Value>>(&b)
            .unwrap_or_default()
            .iter()
            .map(|a| serde_json::from_value(a["labels"].clone()).unwrap_or_default())
            .collect();
        (st, labels)
    };
    // A random query string of the list's parameters.
    let random_query = |r: &mut Rng| -> String {
        let mut parts: Vec<String> = Vec::new();
        for flag in ["active", "silenced", "inhibited"] {
            if r.chance(0.4) {
                parts.push(format!("{flag}={}", enc(flags[r.below(flags.len())])));
            }
        }
        for _ in 0..r.below(3) {
            parts.push(format!("filter={}", enc(filters[r.below(filters.len())])));
        }
        if r.chance(0.3) {
            parts.push(format!(
                "receiver={}",
                enc(receivers[r.below(receivers.len())])
            ));
        }
        parts.join("&")
    };
    let mut compared = 0;
    for _ in 0..40 {
        let query = random_query(&mut r);
        let (st_am, l_am) = list(am.addr, &query);
        let (st_tt, l_tt) = list(agg.http, &query);
        assert_eq!(st_am, st_tt, "GET /api/v2/alerts?{query}: status");
        assert_eq!(l_am, l_tt, "GET /api/v2/alerts?{query}");
        compared += usize::from(!l_am.is_empty());
    }
    assert!(compared > 10, "{compared} queries listed alerts");

    // The aggregation groups (Grafana's Alertmanager data source): the same groups in the same
    // order, each with the same alerts in the same order, each alert naming the same receivers.
    type Group = (
        BTreeMap<String, String>,
        String,
        Vec<(BTreeMap<String, String>, Vec<String>)>,
    );
    let groups = |addr, query: &str| -> (u16, Vec<Group>) {
        let (st, b) = http_get(addr, &format!("/api/v2/alerts/groups?{query}")).unwrap();
        let map = |v: &Value| serde_json::from_value(v.clone()).unwrap_or_default();
        let list = serde_json::from_str::<Vec<Value>>(&b)
            .unwrap_or_default()
            .iter()
            .map(|g| {
                let alerts = g["alerts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let names = a["receivers"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|r| r["name"].as_str().unwrap_or("").to_string())
                            .collect();
                        (map(&a["labels"]), names)
                    })
                    .collect();
                (
                    map(&g["labels"]),
                    g["receiver"]["name"].as_str().unwrap_or("").to_string(),
                    alerts,
                )
            })
            .collect();
        (st, list)
    };
    let mut grouped = 0;
    for _ in 0..15 {
        let query = random_query(&mut r);
        let (st_am, g_am) = groups(am.addr, &query);
        let (st_tt, g_tt) = groups(agg.http, &query);
        assert_eq!(st_am, st_tt, "GET /api/v2/alerts/groups?{query}: status");
        assert_eq!(g_am, g_tt, "GET /api/v2/alerts/groups?{query}");
        grouped += g_am.len();
    }
    assert!(grouped > 10, "{grouped} groups listed in all");

    // Silences by filter (a filter names a silence's matcher exactly): the same ones.
    let listed = |addr, query: &str, am_side: bool| -> (u16, BTreeSet<usize>) {
        let (st, b) = http_get(addr, &format!("/api/v2/silences?{query}")).unwrap();
        let ids = serde_json::from_str::<Vec<Value>>(&b)
            .unwrap_or_default()
            .iter()
            .filter_map(|s| {
                let id = s["id"].as_str()?;
                silence_ids
                    .iter()
                    .position(|(x, y)| id == if am_side { x } else { y })
            })
            .collect();
        (st, ids)
    };
    let posted: Vec<Value> =
        serde_json::from_str(&http_get(am.addr, "/api/v2/silences").unwrap().1).unwrap();
    for i in 0..20 {
        let f = match (posted.get(i % posted.len().max(1)), i % 4) {
            (Some(s), 0..=2) => {
                let m = &s["matchers"][0];
                let op = match (m["isRegex"].as_bool(), m["isEqual"].as_bool()) {
                    (Some(false), Some(false)) => "!=",
                    (Some(true), Some(true)) => "=~",
                    (Some(true), Some(false)) => "!~",
                    _ => "=",
                };
                let v = m["value"]
                    .as_str()
                    .unwrap_or("")
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"");
                format!("{}{op}\"{v}\"", m["name"].as_str().unwrap_or(""))
            }
            _ => r.pick(&filters).to_string(),
        };
        let query = format!("filter={}", enc(&f));
        let (st_am, s_am) = listed(am.addr, &query, true);
        let (st_tt, s_tt) = listed(agg.http, &query, false);
        assert_eq!(
            (st_am, &s_am),
            (st_tt, &s_tt),
            "GET /api/v2/silences?{query} ({f})"
        );
    }

    // The receivers, in the file's order.
    assert_eq!(
        http_get(am.addr, "/api/v2/receivers").unwrap().1.trim(),
        http_get(agg.http, "/api/v2/receivers").unwrap().1.trim(),
        "GET /api/v2/receivers"
    );

    // The real client: `amtool alert query` and `amtool silence query` against each.
    let Some(amtool) = peer(AMTOOL, "prometheus-alertmanager") else {
        return;
    };
    let amtool_run = |addr: std::net::SocketAddr, args: &[&str]| {
        let out = Command::new(&amtool)
            .arg(format!("--alertmanager.url=http://{addr}"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let alert_queries: [&[&str]; 9] = [
        &[],
        &["-s"],
        &["-i"],
        &["-a", "-s", "-i"],
        &["severity=critical"],
        &["-s", "team=~a|b"],
        &["-a", "-s", "-i", "-r", "pager"],
        &["-i", "NodeDown"],
        &["-s", "-i", r#"instance!="""#, "b="],
    ];
    let labels = |out: &str| -> Vec<BTreeMap<String, String>> {
        serde_json::from_str::<Vec<Value>>(out)
            .unwrap_or_default()
            .iter()
            .map(|a| serde_json::from_value(a["labels"].clone()).unwrap_or_default())
            .collect()
    };
    let mut listed = 0;
    for args in alert_queries {
        let mut full = vec!["alert", "query", "-o", "json"];
        full.extend_from_slice(args);
        let (ok_am, out_am) = amtool_run(am.addr, &full);
        let (ok_tt, out_tt) = amtool_run(agg.http, &full);
        assert!(ok_am && ok_tt, "amtool {full:?}: {out_am} / {out_tt}");
        assert_eq!(labels(&out_am), labels(&out_tt), "amtool {full:?}");
        listed += labels(&out_am).len();
    }
    assert!(listed > 20, "amtool listed {listed} alerts in all");
    for args in [
        &[][..],
        &["severity=critical"],
        &["--expired"],
        &["--within", "2h"],
    ] {
        let mut full = vec!["silence", "query", "-q"];
        full.extend_from_slice(args);
        let ids = |out: &str, am_side: bool| -> BTreeSet<usize> {
            out.lines()
                .filter_map(|id| {
                    silence_ids
                        .iter()
                        .position(|(x, y)| id.trim() == if am_side { x } else { y })
                })
                .collect()
        };
        let (ok_am, out_am) = amtool_run(am.addr, &full);
        let (ok_tt, out_tt) = amtool_run(agg.http, &full);
        assert!(ok_am && ok_tt, "amtool {full:?}: {out_am} / {out_tt}");
        assert_eq!(ids(&out_am, true), ids(&out_tt, false), "amtool {full:?}");
    }
}
