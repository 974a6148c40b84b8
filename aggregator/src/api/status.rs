//! What Prometheus and Alertmanager answer about themselves, so Grafana, promtool and amtool
//! treat Telltale as one of them: `/api/v1/status/{buildinfo,config,flags,runtimeinfo,tsdb}`,
//! `/api/v1/targets`, and Alertmanager's `/api/v2/status`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};

use super::params::Params;
use super::{ApiError, ApiState, St, success};
use crate::metrics::promql::Value;

/// The Prometheus version whose HTTP API Telltale answers like. Grafana reads `version` to
/// choose its queries (from 2.24 it asks `/api/v1/labels` with `match[]` instead of walking
/// `/series`; from 2.26 it asks for exemplars); an old number makes it slow, a number beyond
/// what is implemented would make it ask for what is not there (native histograms).
pub const PROMETHEUS_API_VERSION: &str = "2.45.0";

/// The Alertmanager version whose API `/api/v2/*` answers like (amtool warns when its own
/// version and the server's differ; Telltale's version is in `telltaleVersion`).
pub const ALERTMANAGER_API_VERSION: &str = "0.25.0";

/// When the process started (ms), set once by [`started`].
static STARTED_MS: OnceLock<i64> = OnceLock::new();

/// Records the start time (`serve` calls it first thing); later calls keep the first.
pub fn started() -> i64 {
    *STARTED_MS.get_or_init(telltale_common::model::now_ms)
}

/// The build's git revision and compiler, from `build.rs`.
pub fn revision() -> &'static str {
    option_env!("TELLTALE_REVISION").unwrap_or("unknown")
}

/// The compiler that built this binary.
pub fn rustc() -> &'static str {
    option_env!("TELLTALE_RUSTC").unwrap_or("unknown")
}

fn rfc3339(ms: i64) -> String {
    crate::report::rfc3339(ms)
}

async fn buildinfo() -> Response {
    success(json!({
        "version": PROMETHEUS_API_VERSION,
        "revision": revision(),
        "branch": "main",
        "buildUser": "telltale",
        "buildDate": "unknown",
        "goVersion": rustc(),
        "application": "telltale-aggregator",
        "telltaleVersion": telltale_common::VERSION,
    }))
}

/// Tokens and keys never leave the process.
fn redact(key: &str, value: String) -> String {
    let k = key.to_ascii_lowercase();
    if k.contains("token") || k.contains("password") || k.contains("secret") {
        "<secret>".into()
    } else {
        value
    }
}

/// The effective configuration as YAML (what Prometheus' `status/config` answers), secrets
/// replaced.
fn config_yaml(st: &ApiState) -> String {
    let c = &st.reload.cfg;
    let list = |v: &[String]| {
        if v.is_empty() {
            "[]".to_string()
        } else {
            format!(
                "[{}]",
                v.iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref().map_or("null".to_string(), |p| {
            format!("{:?}", p.display().to_string())
        })
    };
    let secret = |s: &Option<String>| if s.is_some() { "<secret>" } else { "null" };
    format!(
        "data_dir: {:?}\ntls_dir: {:?}\nhttp_listen: {:?}\nquic_listen: {:?}\n\
         api_token: {}\nread_token: {}\nexternal_url: {:?}\nmax_frame_bytes: {}\n\
         query:\n  lookback_delta: {}\n  timeout: {}\n  max_samples: {}\n\
         storage:\n  retention: {}\n  rollup_retention: {}\n  out_of_order_window: {}\n  max_series: {}\n\
         rules:\n  files: {}\n  log_rule_files: {}\n  evaluation_interval: {}\n  golden_signals: {}\n\
         routes: {}\nrunbooks: {}\nanomaly:\n  files: {}\nslo:\n  files: {}\ndashboards: {}\n",
        c.data_dir.display().to_string(),
        c.tls_dir.display().to_string(),
        c.http_listen.to_string(),
        c.quic_listen.to_string(),
        secret(&c.api_token),
        secret(&c.read_token),
        c.external_url,
        c.max_frame_bytes,
        humantime::format_duration(c.lookback_delta),
        humantime::format_duration(c.query_timeout),
        c.query_max_samples,
        humantime::format_duration(c.storage.retention),
        humantime::format_duration(c.storage.rollup_retention),
        humantime::format_duration(c.storage.ooo_window),
        c.storage.max_series,
        list(&c.rule_files),
        list(&c.log_rule_files),
        humantime::format_duration(c.evaluation_interval),
        c.golden_signals,
        path(&c.routes),
        path(&c.runbooks),
        list(&c.detector_files),
        list(&c.slo_files),
        path(&c.dashboards),
    )
}

async fn config(State(st): St) -> Response {
    success(json!({ "yaml": config_yaml(&st) }))
}

/// The command line as `flag → value` (a flag without a value is `true`), secrets replaced.
fn flags() -> BTreeMap<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        if let Some(flag) = args[i].strip_prefix("--") {
            let (k, v) = match flag.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None if args.get(i + 1).is_some_and(|n| !n.starts_with("--")) => {
                    i += 1;
                    (flag.to_string(), args[i].clone())
                }
                None => (flag.to_string(), "true".to_string()),
            };
            let v = redact(&k, v);
            out.insert(k, v);
        }
        i += 1;
    }
    out
}

async fn flags_handler() -> Response {
    success(json!(flags()))
}

async fn runtimeinfo(State(st): St) -> Response {
    let (ok, last) = st.reload.status.last();
    success(json!({
        "startTime": rfc3339(started()),
        "CWD": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        "reloadConfigSuccess": ok,
        "lastConfigTime": rfc3339(last),
        "corruptionCount": st.corrupt_records,
        "goroutineCount": tokio::runtime::Handle::current().metrics().num_alive_tasks(),
        "GOMAXPROCS": tokio::runtime::Handle::current().metrics().num_workers(),
        "GOMEMLIMIT": 0,
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": humantime::format_duration(st.reload.cfg.storage.retention).to_string(),
        "connectedAgents": st.registry.connected_count(),
    }))
}

/// The cardinality view: series per metric name, values per label name, series per label
/// pair, over the last two hours (the head's span), top `limit` each.
fn tsdb_view(st: &ApiState, limit: usize, now: i64) -> Json {
    let all = crate::metrics::promql::selector_matchers("{__name__=~\".+\"}").unwrap_or_default();
    let from = now - 2 * 3_600_000;
    let series = st.storage.series(&all, from, now);
    let mut by_name: HashMap<&str, u64> = HashMap::new();
    let mut values: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
    let mut bytes: HashMap<&str, u64> = HashMap::new();
    let mut pairs: HashMap<(&str, &str), u64> = HashMap::new();
    let mut label_pairs = std::collections::HashSet::new();
    for s in &series {
        for (k, v) in s.iter() {
            if k == "__name__" {
                *by_name.entry(v).or_default() += 1;
            }
            if values.entry(k).or_default().insert(v) {
                *bytes.entry(k).or_default() += v.len() as u64;
            }
            *pairs.entry((k, v)).or_default() += 1;
            label_pairs.insert((k, v));
        }
    }
    fn top<K: ToString>(m: impl IntoIterator<Item = (K, u64)>, limit: usize) -> Json {
        let mut v: Vec<(String, u64)> = m.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(limit);
        Json::Array(
            v.into_iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect(),
        )
    }
    let stats = st.storage.stats();
    json!({
        "headStats": {
            "numSeries": series.len(),
            "numLabelPairs": label_pairs.len(),
            "chunkCount": 0,
            "minTime": from,
            "maxTime": now,
        },
        "seriesCountByMetricName": top(by_name, limit),
        "labelValueCountByLabelName": top(values.into_iter().map(|(k, v)| (k, v.len() as u64)), limit),
        "memoryInBytesByLabelName": top(bytes, limit),
        "seriesCountByLabelValuePair": top(pairs.into_iter().map(|((k, v), n)| (format!("{k}={v}"), n)), limit),
        "storedSeries": stats.series,
        "storedSamples": stats.samples,
    })
}

async fn tsdb(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &[]);
    let limit = match p.get("limit") {
        None => 10,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                ApiError::bad_data(format!("invalid parameter \"limit\": {s:?} (1 to 10000)"))
            })?,
    };
    let now = telltale_common::model::now_ms();
    let state: Arc<ApiState> = st.clone();
    let v = tokio::task::spawn_blocking(move || tsdb_view(&state, limit, now))
        .await
        .map_err(|e| ApiError::internal(format!("the TSDB status stopped: {e}")))?;
    Ok(success(v))
}

/// Agents (each a target of job `telltale-agent`, healthy while connected) and the scrape
/// targets of their scrape jobs (from the `up` series the agents write per target).
fn targets_view(st: &ApiState, now: i64) -> Json {
    let mut active: Vec<Json> = st
        .registry
        .list()
        .into_iter()
        // An agent that moved to another aggregator of its list is that one's target.
        .filter(|a| !a.moved_away)
        .map(|a| {
            json!({
                "discoveredLabels": {},
                "labels": {"job": crate::metrics::storage::AGENT_JOB, "instance": a.name},
                "scrapePool": crate::metrics::storage::AGENT_JOB,
                "scrapeUrl": a.address.map(|x| format!("quic://{x}")).unwrap_or_default(),
                "globalUrl": "",
                "lastError": if a.connected { "" } else { "not connected" },
                "lastScrape": a.last_batch_ms.map(rfc3339).unwrap_or_default(),
                "lastScrapeDuration": 0,
                "health": if a.connected { "up" } else { "down" },
                "scrapeInterval": "",
                "scrapeTimeout": "",
            })
        })
        .collect();
    let up = format!("up{{job!=\"{}\"}}", crate::metrics::storage::AGENT_JOB);
    if let Ok(Value::Vector(v)) = st.engine.instant(&up, now) {
        for (l, s) in v {
            let job = l.get("job").unwrap_or("").to_string();
            let target = l.get("target").unwrap_or("").to_string();
            let labels: BTreeMap<&str, &str> = l.iter().filter(|(k, _)| *k != "__name__").collect();
            active.push(json!({
                "discoveredLabels": {},
                "labels": labels,
                "scrapePool": job,
                "scrapeUrl": if target.is_empty() { String::new() } else { format!("http://{target}/metrics") },
                "globalUrl": "",
                "lastError": "",
                "lastScrape": rfc3339(s.0),
                "lastScrapeDuration": 0,
                "health": if s.1 == 1.0 { "up" } else { "down" },
                "scrapeInterval": "",
                "scrapeTimeout": "",
            }));
        }
    }
    json!({"activeTargets": active, "droppedTargets": []})
}

async fn targets(State(st): St) -> Result<Response, ApiError> {
    let now = telltale_common::model::now_ms();
    let state: Arc<ApiState> = st.clone();
    let v = tokio::task::spawn_blocking(move || targets_view(&state, now))
        .await
        .map_err(|e| ApiError::internal(format!("the targets view stopped: {e}")))?;
    Ok(success(v))
}

/// Alertmanager's `GET /api/v2/status` (amtool's `config show` and `cluster show`, Grafana's
/// Alertmanager data source): the routing file as loaded, no cluster.
async fn am_status(State(st): St) -> Response {
    let original = st
        .reload
        .cfg
        .routes
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let uptime = rfc3339(started());
    axum::Json(json!({
        "cluster": {"name": "", "status": "disabled", "peers": []},
        "config": {"original": original},
        "uptime": uptime,
        "telltaleVersion": telltale_common::VERSION,
        "versionInfo": {
            "version": ALERTMANAGER_API_VERSION,
            "revision": revision(),
            "branch": "main",
            "buildUser": "telltale",
            "buildDate": "unknown",
            "goVersion": rustc(),
        },
    }))
    .into_response()
}

/// `/api/v1/format_query?query=`: the query as Prometheus' formatter writes it (Grafana's
/// "Format query" button), after the same checks as a query.
async fn format_query(RawQuery(q): RawQuery, body: Bytes) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &body);
    let expr = crate::metrics::promql::Engine::parse_syntax(p.get("query").unwrap_or(""))?;
    Ok(success(Json::String(
        crate::metrics::promql::format::format_query(&expr),
    )))
}

/// `/api/v1/targets/metadata`: metric metadata of scrape targets; agents send none yet.
async fn targets_metadata() -> Response {
    success(json!([]))
}

/// `/api/v1/alertmanagers`: the Alertmanagers rule evaluation sends alerts to. None: firing
/// rules go to the aggregator's own routing (`/api/v2/...`, the `--routes` file), which
/// reaches an external Alertmanager, where one is wanted, as a webhook receiver — so the list
/// is empty, as Prometheus answers without an `alerting` section.
async fn alertmanagers() -> Response {
    success(json!({"activeAlertmanagers": [], "droppedAlertmanagers": []}))
}

/// The routes of this module.
pub fn routes(r: Router<Arc<ApiState>>) -> Router<Arc<ApiState>> {
    r.route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/alertmanagers", get(alertmanagers))
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/targets/metadata", get(targets_metadata))
        .route("/api/v1/status/config", get(config))
        .route("/api/v1/status/flags", get(flags_handler))
        .route("/api/v1/status/runtimeinfo", get(runtimeinfo))
        .route("/api/v1/status/tsdb", get(tsdb))
        .route("/api/v1/targets", get(targets))
        .route("/api/v2/status", get(am_status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_by_key() {
        assert_eq!(redact("api-token", "s".into()), "<secret>");
        assert_eq!(redact("read_token", "s".into()), "<secret>");
        assert_eq!(redact("data-dir", "/x".into()), "/x");
    }
}
