//! `/api/v1/pipeline`: the live pipeline diagram. Mermaid text by default (`format=mermaid`),
//! `format=markdown` for docs, `format=json` (or `Accept: application/json`) for the graph the
//! UI draws. `figures=false` leaves the measured figures and alert states out (the structure
//! only); `view=all` draws every kind of source and stage whether it runs or not (the README's
//! diagram is this view, checked by a test).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::params::Params;
use super::{ApiError, ApiState, St, success};
use crate::metrics::promql::{Engine, Value};
use crate::pipeline::{self, AgentFigures, Facts, Firing, mermaid};
use crate::rules::alert::State as AlertState;
use crate::rules::file::{RuleExpr, RuleKind};

/// The newest value of each series of an instant query, by one label (`""`: the only one).
fn by_label(engine: &Engine, q: &str, label: &str, t: i64) -> BTreeMap<String, f64> {
    match engine.instant(q, t) {
        Ok(Value::Vector(v)) => v
            .into_iter()
            .filter(|(_, s)| s.1.is_finite())
            .map(|(l, s)| (l.get(label).unwrap_or("").to_string(), s.1))
            .collect(),
        Ok(Value::Scalar(s)) if s.1.is_finite() => [(String::new(), s.1)].into(),
        _ => BTreeMap::new(),
    }
}

fn one(engine: &Engine, q: &str, t: i64) -> Option<f64> {
    by_label(engine, q, "", t).into_values().next()
}

fn quantiles(engine: &Engine, metric: &str, t: i64) -> (Option<f64>, Option<f64>) {
    let q = |p: f64| {
        one(
            engine,
            &format!("histogram_quantile({p}, sum by (le) (rate({metric}_bucket[5m])))"),
            t,
        )
    };
    (q(0.5), q(0.99))
}

/// The agents' side, from their own series.
fn agent_figures(engine: &Engine, t: i64) -> AgentFigures {
    use telltale_common::names;
    let mut source_rate: BTreeMap<String, f64> = BTreeMap::new();
    let q = format!(
        "sum by (source) (rate({}[5m]))",
        names::AGENT_SOURCE_SAMPLES
    );
    for (source, r) in by_label(engine, &q, "source", t) {
        if let Some(kind) = pipeline::kind_of_source(&source) {
            *source_rate.entry(kind.to_string()).or_default() += r;
        }
    }
    AgentFigures {
        collect: quantiles(engine, names::AGENT_COLLECT_DURATION, t),
        ack: quantiles(engine, names::AGENT_ACK_LATENCY, t),
        source_rate,
        log_lines_rate: one(engine, "sum(rate(telltale_agent_log_lines_total[5m]))", t),
        backlog: one(engine, &format!("sum({})", names::AGENT_BUFFER_BATCHES), t),
    }
}

/// The nodes a metric name points at: by name, through recording rules, else by its `job`.
/// What [`nodes_of`] reads besides the name.
struct Lookup<'a> {
    recorded: &'a HashMap<String, Vec<String>>,
    engine: &'a Engine,
    sources: &'a BTreeMap<String, usize>,
    rates: &'a BTreeMap<String, f64>,
    t: i64,
}

fn nodes_of(name: &str, l: &Lookup, depth: u8, out: &mut BTreeSet<String>) {
    if let Some(n) = pipeline::node_of_metric(name) {
        out.insert(n.to_string());
        return;
    }
    if let Some(reads) = l.recorded.get(name) {
        out.insert("rules".into());
        if depth < 4 {
            for r in reads {
                nodes_of(r, l, depth + 1, out);
            }
        }
        return;
    }
    let q = format!("count by (job) ({{__name__={name:?}}})");
    let jobs: BTreeSet<String> = by_label(l.engine, &q, "job", l.t).into_keys().collect();
    for n in pipeline::node_of_other(&jobs, l.sources, l.rates) {
        out.insert(n.to_string());
    }
}

/// Everything the diagram is drawn from. Blocking (PromQL, report files).
fn facts(st: &ApiState, figures: bool, all: bool, t: i64) -> Facts {
    let mut sources: BTreeMap<String, usize> = BTreeMap::new();
    let agents = st.registry.list();
    for a in &agents {
        for s in &a.sources {
            *sources.entry(s.clone()).or_default() += 1;
        }
    }
    let groups = st.rules().groups();
    let mut recorded: HashMap<String, Vec<String>> = HashMap::new();
    // (alert, its selectors as (name, job matcher)); `None`: a LogQL rule.
    type Reads = Option<Vec<(String, Option<String>)>>;
    let mut firing_rules: Vec<(String, Reads)> = Vec::new();
    for r in groups.iter().flat_map(|g| &g.rules) {
        let reads = match &r.rule.expr {
            RuleExpr::Prom(e) => crate::rules::selectors(e),
            // LogQL rules read the log store.
            RuleExpr::Log(_) => None,
        };
        match r.rule.kind {
            RuleKind::Recording => {
                let names = reads.unwrap_or_default().into_iter().map(|(n, _)| n);
                recorded.insert(r.rule.name.clone(), names.collect());
            }
            RuleKind::Alerting { .. } => {
                if r.alerts.iter().any(|a| a.state == AlertState::Firing) {
                    let log = matches!(r.rule.expr, RuleExpr::Log(_));
                    firing_rules.push((
                        r.rule.name.clone(),
                        if log {
                            None
                        } else {
                            Some(reads.unwrap_or_default())
                        },
                    ));
                }
            }
        }
    }
    let agent = if figures {
        agent_figures(&st.engine, t)
    } else {
        AgentFigures::default()
    };
    let lookup = Lookup {
        recorded: &recorded,
        engine: &st.engine,
        sources: &sources,
        rates: &agent.source_rate,
        t,
    };
    let mut firing = Vec::new();
    if figures {
        for (alert, reads) in firing_rules {
            let mut nodes = BTreeSet::new();
            match reads {
                None => {
                    nodes.insert("logstore".to_string());
                }
                Some(selectors) => {
                    for (n, job) in selectors {
                        // A selector naming a scrape job's series (its `up` too) points at
                        // that scrape source, whatever the name.
                        if job.is_some_and(|j| sources.contains_key(&format!("scrape:{j}"))) {
                            nodes.insert("scrape".to_string());
                        } else {
                            nodes_of(&n, &lookup, 0, &mut nodes);
                        }
                    }
                }
            }
            firing.push(Firing { alert, nodes });
        }
    }
    let remediation = st.remediation.status();
    Facts {
        agents: (agents.len(), agents.iter().filter(|a| a.connected).count()),
        sources,
        rules: (groups.len(), groups.iter().map(|g| g.rules.len()).sum()),
        detectors: st.anomaly().views().len(),
        receivers: st.alerts.receiver_names(),
        remediation: (
            remediation["runbooks"].as_array().map_or(0, |r| r.len()),
            remediation["enabled"].as_bool().unwrap_or(false),
        ),
        reports: st.reports.count(),
        dashboards: super::ui::load_dashboards(st.dashboards.as_deref())
            .or_else(|_| super::ui::load_dashboards(None))
            .map_or(0, |d| d.len()),
        agent,
        window: figures.then(|| st.pipeline.window()),
        firing,
        all,
    }
}

async fn diagram(
    State(st): St,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &[]);
    let figures = match p.get("figures") {
        None | Some("true") => true,
        Some("false") => false,
        Some(o) => {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"figures\": {o:?} (true or false)"
            )));
        }
    };
    let all = match p.get("view") {
        None | Some("live") => false,
        Some("all") => true,
        Some(o) => {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"view\": {o:?} (live or all)"
            )));
        }
    };
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let format = match p.get("format") {
        Some(f @ ("json" | "mermaid" | "markdown")) => f,
        None if wants_json => "json",
        None => "mermaid",
        Some(o) => {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"format\": {o:?} (mermaid, markdown or json)"
            )));
        }
    };
    let now = telltale_common::model::now_ms();
    let state: Arc<ApiState> = st.clone();
    let f = tokio::task::spawn_blocking(move || facts(&state, figures, all, now))
        .await
        .map_err(|e| ApiError::internal(format!("the pipeline view stopped: {e}")))?;
    let g = pipeline::build(&f, if figures { now } else { 0 });
    let text =
        |ct: &'static str, body: String| ([(header::CONTENT_TYPE, ct)], body).into_response();
    Ok(match format {
        "json" => {
            let mut v = serde_json::to_value(&g)
                .map_err(|e| ApiError::internal(format!("cannot encode the diagram: {e}")))?;
            v["mermaid"] = serde_json::Value::String(mermaid::render(&g));
            success(v)
        }
        "markdown" => text("text/markdown; charset=utf-8", mermaid::markdown(&g)),
        _ => text("text/plain; charset=utf-8", mermaid::render(&g)),
    })
}

/// The routes of this module.
pub fn routes(r: Router<Arc<ApiState>>) -> Router<Arc<ApiState>> {
    r.route("/api/v1/pipeline", get(diagram))
}
