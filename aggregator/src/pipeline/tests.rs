use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::sampler::{Sampler, Stage};
use super::*;
use crate::selfmetrics::{LATENCY, SelfMetrics};

fn facts() -> Facts {
    let mut sources = BTreeMap::new();
    for (s, n) in [
        ("host", 3),
        ("scrape:app", 2),
        ("scrape:db", 1),
        ("check:web", 1),
        ("logs:file", 3),
    ] {
        sources.insert(s.to_string(), n);
    }
    Facts {
        sources,
        agents: (3, 3),
        rules: (2, 7),
        receivers: vec!["ops".into(), "pager".into()],
        remediation: (1, true),
        dashboards: 2,
        ..Facts::default()
    }
}

#[test]
fn metrics_map_to_the_stage_that_produces_them() {
    for (name, node) in [
        ("node_cpu_seconds_total", Some("host")),
        (
            "telltale_agent_collect_duration_seconds_bucket",
            Some("host"),
        ),
        ("telltale_agent_process_resident_memory_bytes", Some("host")),
        ("probe_success", Some("checks")),
        ("telltale_check_status", Some("checks")),
        ("telltale_agent_statsd_dropped_total", Some("statsd")),
        ("telltale_agent_log_lines_total", Some("logs")),
        ("traces_spanmetrics_calls_total", Some("traces")),
        ("telltale_agent_buffer_batches", Some("buffer")),
        ("up", Some("quic")),
        ("telltale_agent_ack_latency_seconds_bucket", Some("quic")),
        ("telltale_aggregator_frame_errors_total", Some("ingest")),
        (
            "telltale_aggregator_batch_delay_seconds_bucket",
            Some("ingest"),
        ),
        ("telltale_aggregator_wal_bytes_total", Some("tsdb")),
        ("telltale_aggregator_series", Some("tsdb")),
        (
            "telltale_aggregator_log_pattern_events_total",
            Some("logstore"),
        ),
        (
            "telltale_aggregator_span_append_seconds_count",
            Some("tracestore"),
        ),
        (
            "telltale_aggregator_rule_evaluation_failures_total",
            Some("rules"),
        ),
        ("ALERTS", Some("rules")),
        ("telltale_anomaly_score", Some("detectors")),
        ("telltale_aggregator_incidents_open", Some("correlation")),
        (
            "telltale_aggregator_alert_to_notification_seconds_bucket",
            Some("receivers"),
        ),
        (
            "telltale_aggregator_notifications_dropped_total",
            Some("receivers"),
        ),
        ("telltale_remediation_runs_total", Some("remediation")),
        (
            "telltale_aggregator_query_seconds_count",
            Some("dashboards"),
        ),
        (
            "telltale_aggregator_report_render_seconds_sum",
            Some("reports"),
        ),
        ("orders_total", None),
    ] {
        assert_eq!(node_of_metric(name), node, "{name}");
    }
    let mut jobs = BTreeSet::new();
    jobs.insert("app".to_string());
    let none = BTreeMap::new();
    assert_eq!(node_of_other(&jobs, &facts().sources, &none), ["scrape"]);
    assert_eq!(
        node_of_other(&BTreeSet::new(), &facts().sources, &none),
        ["host"]
    );
    let mut apps = facts().sources;
    apps.insert("statsd".into(), 1);
    apps.insert("textfile".into(), 1);
    // Both could carry it: both, unless only one has traffic.
    assert_eq!(
        node_of_other(&BTreeSet::new(), &apps, &none),
        ["statsd", "textfile"]
    );
    let rates: BTreeMap<String, f64> =
        [("statsd".to_string(), 0.0), ("textfile".to_string(), 2.0)].into();
    assert_eq!(node_of_other(&BTreeSet::new(), &apps, &rates), ["textfile"]);
    assert_eq!(kind_of_source("scrape:app"), Some("scrape"));
    assert_eq!(kind_of_source("logs:syslog"), Some("logs"));
    assert_eq!(kind_of_source("scraper"), None);
}

#[test]
fn the_graph_has_the_running_sources_and_the_critical_path_in_order() {
    let g = build(&facts(), 1);
    let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
    for id in [
        "host", "scrape", "checks", "logs", "buffer", "quic", "ingest", "tsdb",
    ] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }
    // Not run by any agent, not configured: not drawn.
    for id in ["statsd", "textfile", "traces", "detectors"] {
        assert!(!ids.contains(&id), "{id} in {ids:?}");
    }
    let scrape = g.nodes.iter().find(|n| n.id == "scrape").unwrap();
    assert_eq!(scrape.detail, ["2 agents", "app, db"]);
    // The critical edges chain the critical path, each step once.
    let thick: Vec<(&str, &str)> = g
        .edges
        .iter()
        .filter(|e| e.critical)
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect();
    let want: Vec<(&str, &str)> = CRITICAL.windows(2).map(|w| (w[0], w[1])).collect();
    assert_eq!(thick, want);
    // Every edge joins drawn nodes; stages are listed in flow order.
    for e in &g.edges {
        assert!(
            ids.contains(&e.from.as_str()) && ids.contains(&e.to.as_str()),
            "{e:?}"
        );
    }
    let stages: Vec<&str> = g.stages.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        stages,
        [
            "collection",
            "agent",
            "transport",
            "ingest",
            "storage",
            "analysis",
            "actions"
        ]
    );
    // The structure-only view carries no figures.
    assert!(g.edges.iter().all(|e| e.figure.is_none()));
    assert_eq!(g.window_seconds, 0.0);
}

#[test]
fn a_firing_alert_marks_its_nodes_and_mermaid_fills_them_red() {
    let mut f = facts();
    f.firing = vec![Firing {
        alert: "HostDown".into(),
        nodes: ["quic".to_string()].into_iter().collect(),
    }];
    let g = build(&f, 1);
    let quic = g.nodes.iter().find(|n| n.id == "quic").unwrap();
    assert_eq!(quic.alerting, ["HostDown"]);
    assert!(
        g.nodes
            .iter()
            .filter(|n| n.id != "quic")
            .all(|n| n.alerting.is_empty())
    );
    let m = mermaid::render(&g);
    assert!(m.contains("    class quic alerting\n"), "{m}");
    assert!(m.contains("firing: HostDown"), "{m}");
    // Alerting wins over the critical class on the same node.
    let critical = m.lines().find(|l| l.ends_with(" critical")).unwrap();
    assert!(
        !critical.contains("quic") && critical.contains("ingest"),
        "{critical}"
    );
    assert_eq!(m.matches("==>").count(), CRITICAL.len() - 1);
    assert!(m.contains("linkStyle "), "{m}");
}

#[test]
fn mermaid_labels_escape_what_would_break_the_syntax() {
    let mut f = facts();
    f.receivers = vec!["a\"b|c<d>#e".into()];
    let m = mermaid::render(&build(&f, 1));
    let line = m.lines().find(|l| l.contains("receivers[")).unwrap();
    assert!(line.contains("a#quot;b#124;c#lt;d#gt;#35;e"), "{line}");
    // Every stage is one subgraph, closed; subgraph ids never collide with node ids.
    assert_eq!(m.matches("\n    subgraph ").count(), 7);
    assert_eq!(m.matches("\n    end\n").count(), 7);
    assert!(m.contains("subgraph stage_ingest[\"Ingest\"]"));
    assert!(mermaid::markdown(&build(&f, 1)).starts_with("```mermaid\nflowchart LR\n"));
}

#[test]
fn figures_are_formatted_for_people() {
    assert_eq!(mermaid::duration(0.00042), "420 µs");
    assert_eq!(mermaid::duration(0.0031), "3.1 ms");
    assert_eq!(mermaid::duration(0.25), "250 ms");
    assert_eq!(mermaid::duration(1.25), "1.2 s");
    assert_eq!(mermaid::duration(150.0), "2.5 min");
    assert_eq!(mermaid::number(0.0), "0");
    assert_eq!(mermaid::number(0.25), "0.25");
    assert_eq!(mermaid::number(950.0), "950");
    assert_eq!(mermaid::number(1234.0), "1.2k");
    assert_eq!(mermaid::number(3_400_000.0), "3.4M");
    let f = Figure {
        what: "append".into(),
        rate: Some(120.0),
        unit: "samples".into(),
        p50: Some(0.0012),
        p99: Some(0.004),
    };
    assert_eq!(
        mermaid::figure_text(&f),
        "120 samples/s · append p50 1.2 ms p99 4.0 ms"
    );
}

#[test]
fn the_window_measures_what_was_observed_since_its_start() {
    let m = Arc::new(SelfMetrics::default());
    let s = Sampler::new(m.clone());
    let before = s.window().stage(Stage::Report).count;
    // Other tests of this process may observe too: at least these, all in the 2.5–5 ms bucket.
    for _ in 0..10 {
        LATENCY.report.observe_secs(0.003);
    }
    SelfMetrics::inc(&m.samples, 500);
    let w = s.window();
    let r = w.stage(Stage::Report);
    assert!(r.count >= before + 10, "{r:?}");
    let p50 = r.p50.unwrap();
    assert!((0.0025..=0.005).contains(&p50), "{p50}");
    assert!(w.rate(sampler::Count::Samples) > 0.0);
    let g = build(
        &Facts {
            window: Some(w),
            ..facts()
        },
        1,
    );
    let to_tsdb = g
        .edges
        .iter()
        .find(|e| e.from == "ingest" && e.to == "tsdb")
        .unwrap();
    assert_eq!(to_tsdb.figure.as_ref().unwrap().unit, "samples");
    let reports = g.edges.iter().find(|e| e.to == "reports").unwrap();
    assert!(reports.figure.as_ref().unwrap().p99.is_some());
}
