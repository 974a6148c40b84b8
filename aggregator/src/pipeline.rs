//! The live pipeline diagram: the monitoring flow as the running system has it — sources per
//! agent kind, the agent's buffer, QUIC, ingest, the stores, analysis and actions — grouped by
//! stage, with measured latency and rate on the edges, the critical path marked, and the
//! alerting points (stages a firing rule reads from) highlighted.
//!
//! Pure: [`build`] turns [`Facts`] (gathered by the HTTP layer from the registry, the rule
//! manager, the alerting configuration, PromQL over the agents' own series and the
//! [`sampler::Sampler`]'s window) into a [`Graph`]; [`mermaid`] writes it as a Mermaid
//! flowchart, and the UI draws the same graph from its JSON.
//!
//! # Where a metric comes from ([`node_of_metric`])
//! A firing alert marks every node that produces a metric its rule's selectors name:
//! - `node_*`, `telltale_agent_collect_*`, and the agent's own `telltale_agent_*` not listed
//!   below: the host collectors (`host`);
//! - `probe_*`, `telltale_check_*`: health checks; `telltale_agent_statsd_*`: StatsD;
//!   `telltale_agent_log_*`: log sources; `traces_spanmetrics_*`: traces;
//! - `telltale_agent_buffer_*`, `telltale_agent_dropped_*`: the agent's buffer;
//!   `up`, `telltale_agent_ack_*`, `telltale_agent_connect*`, `telltale_agent_shipped_*`: QUIC;
//! - `telltale_aggregator_*` by what it counts: batches, frames, handshakes, connections →
//!   ingest; storage, series, WAL, head, blocks → TSDB; log → log store; span → trace store;
//!   rule → rules; anomaly (and `telltale_anomaly*`, `telltale_forecast*`) → detectors;
//!   alerts, incidents → correlation; notification → receivers; remediation (and
//!   `telltale_remediation_*`) → remediation; query, HTTP → dashboards; report → reports;
//! - `ALERTS`, `ALERTS_FOR_STATE` and every recording rule's output: rules — and, through the
//!   recording rule's own expression, the nodes that produce what it reads;
//! - any other name: the scrape job whose `job` label its series carry, else StatsD or the
//!   textfile collector when agents run them (application metrics arrive that way), else the
//!   host collectors;
//! - and whatever the name, a selector with `job="<a scrape job>"` points at the scrape
//!   source (`up{job="app"} == 0` is a scrape target down, not a transport problem).

pub mod mermaid;
pub mod sampler;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use sampler::{Count, Measured, Stage as Hist, Window};

/// The stages, left to right.
pub const STAGES: [(&str, &str); 7] = [
    ("collection", "Collection (agents)"),
    ("agent", "Agent buffer"),
    ("transport", "Transport"),
    ("ingest", "Ingest"),
    ("storage", "Storage"),
    ("analysis", "Analysis"),
    ("actions", "Actions"),
];

/// The source kinds, in the order they are drawn: `(node id, hello prefix, title)`.
pub const SOURCE_KINDS: [(&str, &str, &str); 7] = [
    ("host", "host", "Host collectors"),
    ("scrape", "scrape:", "Scrape jobs"),
    ("statsd", "statsd", "StatsD"),
    ("textfile", "textfile", "Textfile"),
    ("checks", "check:", "Health checks"),
    ("logs", "logs:", "Log sources"),
    ("traces", "traces", "Traces (OTLP)"),
];

/// The critical path: collection → durable ack → rule → notification.
pub const CRITICAL: [&str; 8] = [
    "host",
    "buffer",
    "quic",
    "ingest",
    "tsdb",
    "rules",
    "correlation",
    "receivers",
];

/// A latency and rate figure.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Figure {
    /// What the latency measures (e.g. `created → arrival`).
    pub what: String,
    /// Events per second.
    pub rate: Option<f64>,
    /// What the rate counts (`samples`, `batches`, `evaluations`…).
    pub unit: String,
    /// Median seconds.
    pub p50: Option<f64>,
    /// 99th percentile seconds.
    pub p99: Option<f64>,
}

impl Figure {
    fn of(what: &str, m: Measured, unit: &str) -> Figure {
        Figure {
            what: what.into(),
            rate: Some(m.rate),
            unit: unit.into(),
            p50: m.p50,
            p99: m.p99,
        }
    }

    fn rate(rate: f64, unit: &str) -> Figure {
        Figure {
            rate: Some(rate),
            unit: unit.into(),
            ..Figure::default()
        }
    }
}

/// One box.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// Stable id (Mermaid's node id).
    pub id: String,
    /// Its stage (an id of [`STAGES`]).
    pub stage: String,
    /// Title.
    pub title: String,
    /// Lines under the title (what runs, counts).
    pub detail: Vec<String>,
    /// On the critical path.
    pub critical: bool,
    /// Firing alerts whose rules read a metric this node produces (empty: not alerting).
    pub alerting: Vec<String>,
    /// A figure of the node itself (ingest: arrival → ack).
    pub figure: Option<Figure>,
}

/// One arrow, in the direction data flows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    /// From node id.
    pub from: String,
    /// To node id.
    pub to: String,
    /// On the critical path (drawn thick).
    pub critical: bool,
    /// Control rather than data (commands back to agents, derived series written back).
    pub control: bool,
    /// What flows, when there is no figure (e.g. `commands`).
    pub label: String,
    /// Measured figures (absent in the structure-only view).
    pub figure: Option<Figure>,
}

/// The diagram.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Graph {
    /// `(id, title)` of the stages that have nodes, left to right.
    pub stages: Vec<(String, String)>,
    /// Boxes.
    pub nodes: Vec<Node>,
    /// Arrows.
    pub edges: Vec<Edge>,
    /// Seconds the figures span (0 in the structure-only view).
    pub window_seconds: f64,
    /// When it was made (ms).
    pub generated_ms: i64,
}

/// Agent-side figures, read with PromQL from the agents' own series.
#[derive(Debug, Clone, Default)]
pub struct AgentFigures {
    /// Host collection time (p50, p99 seconds).
    pub collect: (Option<f64>, Option<f64>),
    /// Send → ack as the agents see it (p50, p99 seconds).
    pub ack: (Option<f64>, Option<f64>),
    /// Samples per second by source kind (a [`SOURCE_KINDS`] id).
    pub source_rate: BTreeMap<String, f64>,
    /// Log lines read per second.
    pub log_lines_rate: Option<f64>,
    /// Batches waiting in the agents' buffers.
    pub backlog: Option<f64>,
}

/// A firing alert and the metric names its rule reads (recording rules resolved).
#[derive(Debug, Clone)]
pub struct Firing {
    /// `alertname`.
    pub alert: String,
    /// Node ids it points at (see [`node_of_metric`]).
    pub nodes: BTreeSet<String>,
}

/// What the diagram is made from.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Every source the known agents named, with how many agents name it.
    pub sources: BTreeMap<String, usize>,
    /// Agents known, connected.
    pub agents: (usize, usize),
    /// Rule groups and rules.
    pub rules: (usize, usize),
    /// Anomaly detectors.
    pub detectors: usize,
    /// Receiver names.
    pub receivers: Vec<String>,
    /// Runbooks, and whether remediation is on.
    pub remediation: (usize, bool),
    /// Reports kept.
    pub reports: usize,
    /// Dashboards (built-in and files).
    pub dashboards: usize,
    /// Agent-side figures.
    pub agent: AgentFigures,
    /// Aggregator-side figures; `None`: the structure only.
    pub window: Option<Window>,
    /// Firing alerts.
    pub firing: Vec<Firing>,
    /// Draw every kind of source and stage, used or not (the README's diagram).
    pub all: bool,
}

/// The source kind (a [`SOURCE_KINDS`] id) of a source as an agent's hello names it.
pub fn kind_of_source(s: &str) -> Option<&'static str> {
    SOURCE_KINDS
        .iter()
        .find(|(_, p, _)| {
            if p.ends_with(':') {
                s.starts_with(p)
            } else {
                s == *p
            }
        })
        .map(|(id, _, _)| *id)
}

/// The node producing a metric, by its name alone; `None` for names the caller resolves
/// (recording rules, then the `job` label: see the module doc).
pub fn node_of_metric(name: &str) -> Option<&'static str> {
    const AGENT: [(&str, &str); 8] = [
        ("telltale_agent_collect", "host"),
        ("telltale_agent_statsd_", "statsd"),
        ("telltale_agent_log_", "logs"),
        ("telltale_agent_buffer_", "buffer"),
        ("telltale_agent_dropped_", "buffer"),
        ("telltale_agent_ack_", "quic"),
        ("telltale_agent_connect", "quic"),
        ("telltale_agent_shipped_", "quic"),
    ];
    const AGGREGATOR: [(&str, &str); 22] = [
        ("batch", "ingest"),
        ("ingest", "ingest"),
        ("samples_ingested", "ingest"),
        ("duplicate", "ingest"),
        ("rejected", "ingest"),
        ("frame", "ingest"),
        ("handshake", "ingest"),
        ("connect", "ingest"),
        ("log", "logstore"),
        ("span", "tracestore"),
        ("rule", "rules"),
        ("anomaly", "detectors"),
        ("alert_to_notification", "receivers"),
        ("alert", "correlation"),
        ("incident", "correlation"),
        ("notification", "receivers"),
        ("remediation", "remediation"),
        ("query", "dashboards"),
        ("http", "dashboards"),
        ("report", "reports"),
        ("config", "rules"),
        ("", "tsdb"),
    ];
    if name == "up" {
        return Some("quic");
    }
    if name == "ALERTS" || name == "ALERTS_FOR_STATE" {
        return Some("rules");
    }
    if name.starts_with("node_") {
        return Some("host");
    }
    if name.starts_with("probe_") || name.starts_with("telltale_check_") {
        return Some("checks");
    }
    if name.starts_with("traces_spanmetrics_") {
        return Some("traces");
    }
    if name.starts_with("telltale_anomaly") || name.starts_with("telltale_forecast") {
        return Some("detectors");
    }
    if name.starts_with("telltale_remediation") {
        return Some("remediation");
    }
    if name.starts_with("telltale_log_pattern") {
        return Some("logstore");
    }
    if let Some(rest) = name.strip_prefix("telltale_agent_") {
        let full = format!("telltale_agent_{rest}");
        return Some(
            AGENT
                .iter()
                .find(|(p, _)| full.starts_with(p))
                .map_or("host", |(_, n)| *n),
        );
    }
    if let Some(rest) = name.strip_prefix("telltale_aggregator_") {
        return AGGREGATOR
            .iter()
            .find(|(p, _)| rest.starts_with(p))
            .map(|(_, n)| *n);
    }
    None
}

/// Where a metric no name rule places comes from: the scrape job its series name; else the
/// sources that carry application metrics into the agent's own job (StatsD, textfile) — those
/// with traffic when any has some, as the series alone cannot tell them apart; else the host
/// collectors (see the module doc).
pub fn node_of_other(
    jobs: &BTreeSet<String>,
    sources: &BTreeMap<String, usize>,
    rates: &BTreeMap<String, f64>,
) -> Vec<&'static str> {
    if jobs
        .iter()
        .any(|j| sources.contains_key(&format!("scrape:{j}")))
    {
        return vec!["scrape"];
    }
    let present: Vec<&'static str> = ["statsd", "textfile"]
        .into_iter()
        .filter(|k| sources.contains_key(*k))
        .collect();
    let busy: Vec<&'static str> = present
        .iter()
        .copied()
        .filter(|k| rates.get(*k).is_some_and(|r| *r > 0.0))
        .collect();
    match (busy.is_empty(), present.is_empty()) {
        (false, _) => busy,
        (true, false) => present,
        (true, true) => vec!["host"],
    }
}

fn node(id: &str, stage: &str, title: &str, detail: Vec<String>) -> Node {
    Node {
        id: id.into(),
        stage: stage.into(),
        title: title.into(),
        detail,
        critical: CRITICAL.contains(&id),
        alerting: Vec::new(),
        figure: None,
    }
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// The sources of one kind, named (`scrape: app, db`), at most a few.
fn source_detail(f: &Facts, prefix: &str) -> Vec<String> {
    first_few(f.sources.keys().filter_map(|s| s.strip_prefix(prefix)))
}

/// At most four names and how many more (`app, db +3`); nothing for none.
fn first_few<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        return Vec::new();
    }
    let mut s = names[..names.len().min(4)].join(", ");
    if names.len() > 4 {
        s.push_str(&format!(" +{}", names.len() - 4));
    }
    vec![s]
}

/// Builds the diagram.
pub fn build(f: &Facts, now_ms: i64) -> Graph {
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    let w = f.window.as_ref();
    let agents = |n: usize| plural(n, "agent");
    for (id, prefix, title) in SOURCE_KINDS {
        let count: usize = f
            .sources
            .iter()
            .filter(|(s, _)| kind_of_source(s) == Some(id))
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        if count == 0 && !(f.all || id == "host") {
            continue;
        }
        let mut detail = if f.all {
            Vec::new()
        } else {
            vec![agents(count)]
        };
        if prefix.ends_with(':') && !f.all {
            detail.extend(source_detail(f, prefix));
        }
        nodes.push(node(id, "collection", title, detail));
        let figure = w.map(|_| {
            let rate = match id {
                "logs" => f.agent.log_lines_rate.unwrap_or(0.0),
                "traces" => w.map_or(0.0, |w| w.rate(Count::Spans)),
                _ => f.agent.source_rate.get(id).copied().unwrap_or(0.0),
            };
            let unit = match id {
                "logs" => "lines",
                "traces" => "spans",
                _ => "samples",
            };
            let mut fig = Figure::rate(rate, unit);
            if id == "host" {
                fig.what = "collection".into();
                (fig.p50, fig.p99) = f.agent.collect;
            }
            fig
        });
        edges.push(edge(id, "buffer", figure, ""));
    }
    let mut buffer_detail = vec![
        "sled, flushed before send,".to_string(),
        "kept until acked".into(),
    ];
    if let (Some(b), Some(_)) = (f.agent.backlog, w) {
        buffer_detail.push(format!("backlog {} batches", mermaid::number(b)));
    }
    nodes.push(node("buffer", "agent", "Buffer", buffer_detail));
    nodes.push(node(
        "quic",
        "transport",
        "QUIC + mTLS",
        vec!["MessagePack frames, ack per batch".into()],
    ));
    edges.push(edge(
        "buffer",
        "quic",
        w.map(|w| Figure {
            what: "send → ack".into(),
            p50: f.agent.ack.0,
            p99: f.agent.ack.1,
            ..Figure::of("", w.stage(Hist::Ingest), "batches")
        }),
        "",
    ));
    let mut ingest = node(
        "ingest",
        "ingest",
        "Ingest",
        vec![
            "dedup (agent, epoch, seq),".into(),
            "ack when durable".into(),
        ],
    );
    ingest.figure = w.map(|w| Figure::of("arrival → ack", w.stage(Hist::Ingest), "batches"));
    nodes.push(ingest);
    edges.push(edge(
        "quic",
        "ingest",
        w.map(|w| Figure::of("created → arrival", w.stage(Hist::BatchDelay), "batches")),
        "",
    ));
    nodes.push(node(
        "tsdb",
        "storage",
        "TSDB",
        vec!["WAL + fdatasync, head, blocks".into()],
    ));
    nodes.push(node("logstore", "storage", "Log store", Vec::new()));
    nodes.push(node("tracestore", "storage", "Trace store", Vec::new()));
    for (store, count, hist, unit) in [
        ("tsdb", Count::Samples, Hist::TsdbAppend, "samples"),
        ("logstore", Count::LogLines, Hist::LogAppend, "lines"),
        ("tracestore", Count::Spans, Hist::SpanAppend, "spans"),
    ] {
        let figure = w.map(|w| Figure {
            rate: Some(w.rate(count)),
            unit: unit.into(),
            ..Figure::of("append", w.stage(hist), "")
        });
        edges.push(edge("ingest", store, figure, ""));
    }
    let (groups, rules) = f.rules;
    nodes.push(node(
        "rules",
        "analysis",
        "Rules",
        if f.all {
            vec!["PromQL + LogQL, recording + alerting".into()]
        } else {
            vec![format!(
                "{}, {}",
                plural(groups, "group"),
                plural(rules, "rule")
            )]
        },
    ));
    edges.push(edge(
        "tsdb",
        "rules",
        w.map(|w| Figure::of("group evaluation", w.stage(Hist::RuleGroup), "evaluations")),
        "",
    ));
    edges.push(edge("logstore", "rules", None, "LogQL"));
    if f.detectors > 0 || f.all {
        let detail = if f.all {
            Vec::new()
        } else {
            vec![plural(f.detectors, "detector")]
        };
        nodes.push(node("detectors", "analysis", "Anomaly detectors", detail));
        edges.push(edge(
            "tsdb",
            "detectors",
            w.map(|w| Figure::of("evaluation", w.stage(Hist::Detector), "evaluations")),
            "",
        ));
        let mut back = edge("detectors", "tsdb", None, "scores");
        back.control = true;
        edges.push(back);
    }
    nodes.push(node(
        "correlation",
        "analysis",
        "Alerting + correlation",
        vec![
            "routes, groups, inhibition,".into(),
            "incidents, escalation".into(),
        ],
    ));
    edges.push(edge(
        "rules",
        "correlation",
        w.map(|w| {
            Figure::of(
                "alert handling",
                w.stage(Hist::Correlation),
                "alert batches",
            )
        }),
        "",
    ));
    let receivers = if f.all {
        vec!["webhook, Alertmanager, NATS, log".into()]
    } else {
        first_few(f.receivers.iter().map(String::as_str))
    };
    nodes.push(node("receivers", "actions", "Receivers", receivers));
    edges.push(edge(
        "correlation",
        "receivers",
        w.map(|w| {
            let d = w.stage(Hist::Delivery);
            Figure {
                rate: Some(d.rate),
                unit: "notifications".into(),
                ..Figure::of(
                    "alert → notification",
                    w.stage(Hist::AlertToNotification),
                    "",
                )
            }
        }),
        "",
    ));
    let (runbooks, on) = f.remediation;
    nodes.push(node(
        "remediation",
        "actions",
        "Remediation",
        if f.all {
            vec!["runbooks, allowlisted actions".into()]
        } else {
            vec![format!(
                "{}, {}",
                plural(runbooks, "runbook"),
                if on { "on" } else { "off" }
            )]
        },
    ));
    edges.push(edge(
        "correlation",
        "remediation",
        w.map(|w| Figure::of("command → result", w.stage(Hist::Remediation), "commands")),
        "",
    ));
    let mut cmd = edge("remediation", "quic", None, "commands");
    cmd.control = true;
    edges.push(cmd);
    nodes.push(node(
        "dashboards",
        "actions",
        "Dashboards + API",
        if f.all {
            vec!["web UI, Grafana, promtool".into()]
        } else {
            vec![plural(f.dashboards, "dashboard")]
        },
    ));
    edges.push(edge(
        "tsdb",
        "dashboards",
        w.map(|w| Figure::of("query", w.stage(Hist::Query), "queries")),
        "",
    ));
    edges.push(edge("logstore", "dashboards", None, "LogQL"));
    edges.push(edge("tracestore", "dashboards", None, "traces"));
    nodes.push(node(
        "reports",
        "actions",
        "Reports",
        if f.all {
            vec!["Markdown, HTML, on schedule or demand".into()]
        } else {
            vec![format!("{} kept", f.reports)]
        },
    ));
    edges.push(edge(
        "tsdb",
        "reports",
        w.map(|w| Figure::of("render", w.stage(Hist::Report), "reports")),
        "",
    ));
    for n in nodes.iter_mut() {
        n.alerting = f
            .firing
            .iter()
            .filter(|a| a.nodes.contains(&n.id))
            .map(|a| a.alert.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
    }
    let used: BTreeSet<&str> = nodes.iter().map(|n| n.stage.as_str()).collect();
    Graph {
        stages: STAGES
            .iter()
            .filter(|(id, _)| used.contains(id))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        nodes,
        edges,
        window_seconds: w.map_or(0.0, |w| w.seconds),
        generated_ms: now_ms,
    }
}

fn edge(from: &str, to: &str, figure: Option<Figure>, label: &str) -> Edge {
    let on_path = |id: &str| CRITICAL.iter().position(|c| *c == id);
    let critical = matches!((on_path(from), on_path(to)), (Some(a), Some(b)) if b == a + 1);
    Edge {
        from: from.into(),
        to: to.into(),
        critical,
        control: false,
        label: label.into(),
        figure,
    }
}
