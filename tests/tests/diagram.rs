//! The live pipeline diagram (`/api/v1/pipeline`, `telltale-aggregator diagram`) against a
//! running aggregator and a real agent over QUIC: the agent's sources drawn from its hello,
//! measured figures on the edges of the critical path (from the histograms the code records),
//! and the nodes a firing rule reads from marked as alerting points.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use telltale_tests::peers::WebhookSink;
use telltale_tests::{
    bin, certs_init, certs_issue, http_get, start_agent_with_config, start_quick_aggregator,
    wait_for,
};

fn node<'a>(g: &'a Value, id: &str) -> Option<&'a Value> {
    g["nodes"].as_array()?.iter().find(|n| n["id"] == id)
}

fn edge<'a>(g: &'a Value, from: &str, to: &str) -> Option<&'a Value> {
    g["edges"]
        .as_array()?
        .iter()
        .find(|e| e["from"] == from && e["to"] == to)
}

fn alerting(g: &Value, id: &str) -> Vec<String> {
    node(g, id)
        .and_then(|n| n["alerting"].as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// p50 and p99 of an edge's figure, when both were measured.
fn measured(g: &Value, from: &str, to: &str) -> Option<(f64, f64)> {
    let f = &edge(g, from, to)?["figure"];
    Some((f["p50"].as_f64()?, f["p99"].as_f64()?))
}

#[test]
fn the_diagram_shows_sources_figures_and_alerting_points_of_the_running_system() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    certs_init(&tls).unwrap();
    certs_issue(&tls, "web1").unwrap();
    let sink = WebhookSink::start().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        r#"groups:
- name: diagram
  rules:
  - record: test:buffer:sum
    expr: sum(telltale_agent_buffer_batches)
  - alert: BufferSeen
    expr: test:buffer:sum >= 0
  - alert: LoadSeen
    expr: node_load1 >= 0
  - alert: OrdersSeen
    expr: demo_orders_total > 0
  - alert: SelfScraped
    expr: up{job="self"} == 1
  - alert: NeverFires
    expr: node_load1 < -1
"#,
    )
    .unwrap();
    let routes = dir.path().join("routes.yml");
    std::fs::write(
        &routes,
        format!(
            "route: {{receiver: hook, group_by: [alertname], group_wait: 0s, group_interval: 1s}}\n\
             receivers:\n  - name: hook\n    webhook_configs: [{{url: '{}'}}]\n",
            sink.url("/hook")
        ),
    )
    .unwrap();
    let (r, o) = (rules.display().to_string(), routes.display().to_string());
    let agg =
        start_quick_aggregator(&tls, dir.path(), "tok", &["--rules", &r, "--routes", &o]).unwrap();
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir_all(&textfiles).unwrap();
    std::fs::write(textfiles.join("orders.prom"), "demo_orders_total 5\n").unwrap();
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "[textfile]\ndirectory = {textfiles:?}\n\n[[scrape]]\njob = \"self\"\ntargets = [\"{}\"]\ninterval = \"1s\"\n",
            agg.http
        ),
    )
    .unwrap();
    let _agent = start_agent_with_config(
        &tls,
        "web1",
        agg.quic,
        &dir.path().join("agent"),
        "1s",
        Some(&agent_toml),
    )
    .unwrap();

    // Until the three alerts fire, a notification was delivered, and the agent's histograms
    // and counters have two points in the 5m rate window.
    let g = wait_for(Duration::from_secs(60), || {
        let (code, body) = http_get(agg.http, "/api/v1/pipeline?format=json").ok()?;
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).ok()?;
        let g = v["data"].clone();
        let ready = !alerting(&g, "buffer").is_empty()
            && !alerting(&g, "host").is_empty()
            && !alerting(&g, "textfile").is_empty()
            && !alerting(&g, "scrape").is_empty()
            && measured(&g, "correlation", "receivers").is_some()
            && measured(&g, "host", "buffer").is_some()
            && measured(&g, "buffer", "quic").is_some()
            && edge(&g, "textfile", "buffer")?["figure"]["rate"].as_f64()? > 0.0;
        ready.then_some(g)
    })
    .unwrap_or_else(|| {
        let (_, body) = http_get(agg.http, "/api/v1/pipeline?format=json").unwrap();
        panic!(
            "the diagram never showed the firing alerts and figures: {body}\n{}",
            agg.proc.log()
        )
    });

    // Sources from the agent's hello: host, the scrape job by name, the textfile collector.
    assert_eq!(node(&g, "host").unwrap()["detail"][0], "1 agent");
    assert_eq!(node(&g, "scrape").unwrap()["detail"][1], "self");
    assert!(node(&g, "traces").is_none() && node(&g, "checks").is_none());

    // Alerting points: each firing rule marks the stage producing what it reads — through the
    // recording rule for BufferSeen, by the series' source for an application metric (the
    // agent's StatsD listener runs too, idle: the textfile collector is the one with traffic).
    assert_eq!(alerting(&g, "buffer"), ["BufferSeen"]);
    assert_eq!(alerting(&g, "rules"), ["BufferSeen"]);
    assert_eq!(alerting(&g, "host"), ["LoadSeen"]);
    assert_eq!(alerting(&g, "textfile"), ["OrdersSeen"]);
    // `up` of a scrape job is that job's target, not the transport.
    assert_eq!(alerting(&g, "scrape"), ["SelfScraped"]);
    for quiet in ["tsdb", "statsd", "quic", "receivers"] {
        assert!(alerting(&g, quiet).is_empty(), "{quiet}: {g}");
    }

    // Measured figures on the critical path, and rates that match the traffic.
    for (from, to) in [
        ("quic", "ingest"),
        ("ingest", "tsdb"),
        ("tsdb", "rules"),
        ("rules", "correlation"),
        ("correlation", "receivers"),
    ] {
        let (p50, p99) = measured(&g, from, to).unwrap_or_else(|| panic!("{from}→{to}: {g}"));
        assert!(
            p50 >= 0.0 && p99 >= p50 && p99 <= 600.0,
            "{from}→{to}: {p50} {p99}"
        );
        assert_eq!(edge(&g, from, to).unwrap()["critical"], true);
    }
    let samples = edge(&g, "ingest", "tsdb").unwrap()["figure"]["rate"]
        .as_f64()
        .unwrap();
    assert!(
        samples > 1.0,
        "one agent at 1 s ships hundreds of samples/s: {samples}"
    );
    let delivered = sink.accepted("/hook").len();
    assert!(delivered >= 1);
    assert!(
        node(&g, "ingest").unwrap()["figure"]["p99"]
            .as_f64()
            .is_some()
    );
    // The Mermaid text is the same graph.
    let m = g["mermaid"].as_str().unwrap();
    assert!(m.starts_with("flowchart LR\n"), "{m}");
    assert_eq!(m.matches("==>").count(), 7, "{m}");
    let alert_class = m.lines().find(|l| l.ends_with(" alerting")).unwrap();
    for id in ["host", "scrape", "textfile", "buffer", "rules"] {
        assert!(alert_class.contains(id), "{alert_class}");
    }

    // The histograms behind the figures are on /metrics as Prometheus histograms.
    let (_, metrics) = http_get(agg.http, "/metrics").unwrap();
    for name in [
        "telltale_aggregator_ingest_seconds",
        "telltale_aggregator_batch_delay_seconds",
        "telltale_aggregator_rule_group_duration_seconds",
        "telltale_aggregator_alert_to_notification_seconds",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} histogram\n")),
            "{name}"
        );
        let count = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(count >= 1.0, "{name}_count {count}");
    }

    // The command-line form, and its errors.
    let url = format!("http://{}", agg.http);
    let out = Command::new(bin("telltale-aggregator").unwrap())
        .args(["diagram", "--url", &url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(
        md.starts_with("```mermaid\nflowchart LR\n") && md.ends_with("```\n"),
        "{md}"
    );
    assert!(md.contains("subgraph stage_collection"), "{md}");
    let out = Command::new(bin("telltale-aggregator").unwrap())
        .args(["diagram", "--url", &url, "--format", "svg"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = Command::new(bin("telltale-aggregator").unwrap())
        .args(["diagram", "--url", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"));
    let (code, body) = http_get(agg.http, "/api/v1/pipeline?view=sideways").unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("view"), "{body}");

    // Structure only: no figures, no alert states — stable text whatever the traffic.
    let (_, a) = http_get(agg.http, "/api/v1/pipeline?figures=false").unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let (_, b) = http_get(agg.http, "/api/v1/pipeline?figures=false").unwrap();
    assert_eq!(a, b);
    assert!(
        !a.contains("p50") && !a.contains("firing:") && !a.contains(" alerting\n"),
        "{a}"
    );
}

/// The README's architecture diagram is the generated one (every kind of stage, no figures):
/// a change to the flow that is not regenerated into the README fails here.
#[test]
fn the_readme_diagram_is_the_generated_one() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    certs_init(&tls).unwrap();
    let agg = telltale_tests::start_fresh_aggregator(&tls, dir.path()).unwrap();
    let out = Command::new(bin("telltale-aggregator").unwrap())
        .args([
            "diagram",
            "--url",
            &format!("http://{}", agg.http),
            "--view",
            "all",
            "--no-figures",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let generated = String::from_utf8(out.stdout).unwrap();
    let readme_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let start = readme
        .find("```mermaid\n")
        .expect("the README has a Mermaid block");
    let end = start
        + readme[start..]
            .find("\n```\n")
            .expect("the block is closed")
        + 5;
    assert_eq!(
        &readme[start..end],
        generated,
        "README.md's diagram differs from `telltale-aggregator diagram --view all --no-figures`: \
         paste the generated one"
    );
}
