//! The HTTP API: Prometheus' query API with its JSON envelope and error types, Telltale's own
//! resources, `/metrics` and the health endpoints. Errors map to HTTP status in one place
//! ([`ApiError`]).

mod admin;
mod alerting;
mod anomaly;
mod encode;
mod exemplars;
mod federate;
mod golden;
mod gzip;
mod jaeger;
mod loki;
mod params;
mod pipeline;
mod pool;
pub mod report;
mod slo;
pub mod status;
pub mod ui;
pub use crate::metrics::remote_write;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};
use telltale_common::model::{Labels, now_ms};

use crate::agents::Registry;
use crate::metrics::promql::{Engine, QueryError, Value};
use crate::metrics::storage::{AppendData, AppendOutcome, AppendRequest, Matcher, Storage};
use crate::selfmetrics::{Gauges, SelfMetrics};
use encode::*;
pub use params::{Params, parse_step, parse_time};

/// Prometheus refuses range queries with more points than this per series.
const MAX_POINTS: i64 = 11_000;

/// Shared state of the HTTP handlers.
pub struct ApiState {
    /// Storage, for series and label queries.
    pub storage: Arc<dyn Storage>,
    /// The query engine.
    pub engine: Engine,
    /// Agents.
    pub registry: Arc<Registry>,
    /// Counters.
    pub metrics: Arc<SelfMetrics>,
    /// Corrupt records found at start-up.
    pub corrupt_records: u64,
    /// Set once start-up recovery is done.
    pub ready: AtomicBool,
    /// `[storage] mode = "forward"`: no samples are kept, so reads of them are refused.
    pub forward_only: bool,
    /// Bearer token for state-changing calls; `None`: accepted from loopback only.
    pub api_token: Option<String>,
    /// Bearer token for reads (the API token works too); `None`: reads are open.
    pub read_token: Option<String>,
    /// Rule evaluation (replaced whole by a reload).
    pub rules: std::sync::RwLock<Arc<crate::rules::manager::RuleManager>>,
    /// Anomaly detectors (replaced by a reload; unchanged detectors keep their models).
    pub anomaly: std::sync::RwLock<Arc<crate::anomaly::live::Detectors>>,
    /// Kept reports.
    pub reports: Arc<crate::report::store::ReportStore>,
    /// Dashboard files (`[ui] dashboards`), read per request beside the built-in ones.
    pub dashboards: Option<std::path::PathBuf>,
    /// The SLOs in force (replaced by a reload; their rules are the rule manager's).
    pub slos: std::sync::RwLock<Arc<Vec<crate::slo::Slo>>>,
    /// Re-reads rules, routes and runbooks (SIGHUP and `POST /-/reload`).
    pub reload: crate::reload::Reload,
    /// Alerting, silences and incidents.
    pub alerts: Arc<crate::alerting::service::AlertingService>,
    /// Remediations and runbooks.
    pub remediation: Arc<crate::remediate::driver::Remediator>,
    /// The log store.
    pub logs: Arc<dyn crate::logs::store::LogStore>,
    /// The trace store.
    pub traces: Arc<dyn crate::traces::store::TraceStore>,
    /// The newest exemplars (`/api/v1/query_exemplars`).
    pub exemplars: Arc<crate::metrics::exemplars::Exemplars>,
    /// Stored lines as they are stored (`/loki/api/v1/tail`).
    pub live_logs: Arc<crate::logs::observe::Observed>,
    /// The log pattern index (`/loki/api/v1/patterns`).
    pub patterns: Arc<crate::logs::patterns::Patterns>,
    /// Most bytes of log lines one query may read (`[logs] max_query_bytes`).
    pub logs_max_query_bytes: u64,
    /// The stage figures' window (`/api/v1/pipeline`).
    pub pipeline: Arc<crate::pipeline::sampler::Sampler>,
    /// The remote_write queues (their metrics).
    pub forward: Arc<crate::forward::Forwarders>,
}

impl ApiState {
    /// The rule manager in force.
    pub fn rules(&self) -> Arc<crate::rules::manager::RuleManager> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The anomaly detectors in force.
    pub fn anomaly(&self) -> Arc<crate::anomaly::live::Detectors> {
        self.anomaly
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The SLOs in force.
    pub fn slos(&self) -> Arc<Vec<crate::slo::Slo>> {
        self.slos.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the rule, routing and runbook files; on any error keeps what runs and says
    /// why. Returns the number of rules loaded.
    pub async fn reload(&self) -> Result<usize, crate::reload::LoadError> {
        let r = &self.reload;
        let _one_at_a_time = r.lock.lock().await;
        let cfg = r.cfg.clone();
        let loaded = tokio::task::spawn_blocking(move || crate::reload::Alerting::load(&cfg))
            .await
            .map_err(|e| crate::reload::LoadError::Stopped(e.to_string()))
            .and_then(|x| x);
        let alerting = match loaded {
            Ok(a) => a,
            Err(e) => {
                r.status.failed();
                tracing::error!(error = %e, "reload failed: the running configuration is kept");
                return Err(e);
            }
        };
        let count = alerting.groups.iter().map(|g| g.rules.len()).sum();
        let new = crate::rules::manager::RuleManager::new(
            self.engine.clone(),
            self.storage.clone(),
            self.alerts.clone(),
            r.settings.clone(),
            alerting.groups,
        );
        let old = self.rules();
        new.inherit_counters(&old);
        old.stop();
        new.start();
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = new;
        let old = self.anomaly();
        let detectors = crate::anomaly::live::Detectors::new(
            self.engine.clone(),
            self.storage.clone(),
            alerting.detectors,
            old.budget(),
        );
        old.stop();
        detectors.inherit(&old);
        detectors.start();
        *self.anomaly.write().unwrap_or_else(|e| e.into_inner()) = detectors;
        *self.slos.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(alerting.slos);
        self.alerts.reload(alerting.routing);
        self.remediation.reload(alerting.runbooks);
        r.status.succeeded();
        tracing::info!(rules = count, "configuration reloaded");
        Ok(count)
    }
}

/// An API error in Prometheus' envelope.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl ApiError {
    /// `bad_data`, HTTP 400.
    pub fn bad_data(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error_type: "bad_data",
            message: message.into(),
        }
    }

    /// `not_found`, HTTP 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error_type: "not_found",
            message: message.into(),
        }
    }

    /// `internal`, HTTP 500.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error_type: "internal",
            message: message.into(),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::BadData(m) => ApiError::bad_data(m),
            QueryError::Execution(m) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                error_type: "execution",
                message: m,
            },
            e @ QueryError::Timeout(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error_type: "timeout",
                message: e.to_string(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.error_type, "error": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

fn success(data: Json) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

type St = State<Arc<ApiState>>;

/// The optional `timeout` parameter (Prometheus duration or seconds).
fn timeout_param(p: &Params) -> Result<Option<std::time::Duration>, ApiError> {
    match p.get("timeout").filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse_step(v)
            .map(|ms| Some(std::time::Duration::from_millis(ms.max(0) as u64)))
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"timeout\": {e}"))),
    }
}

fn params(q: &RawQuery, body: &Bytes) -> Params {
    Params::parse(q.0.as_deref(), body)
}

fn count(st: &ApiState) {
    SelfMetrics::inc(&st.metrics.http_requests, 1);
}

async fn query(State(st): St, q: RawQuery, body: Bytes) -> Result<Response, ApiError> {
    count(&st);
    let p = params(&q, &body);
    let expr = p.required("query")?.to_string();
    let t = p.time_or("time", now_ms())?;
    let timeout = timeout_param(&p)?;
    let engine = st.engine.clone();
    let v = run_query(move || engine.instant_with_timeout(&expr, t, timeout)).await?;
    Ok(value_response(&v))
}

/// Runs a query's evaluation off the async scheduler's hot path. On the multi-threaded runtime
/// the worker thread evaluates it in place (`block_in_place` hands the worker's other tasks to
/// another thread): no hand-off to the blocking pool and back, which measured as a sizeable
/// part of a small query's latency. Elsewhere (tests on a current-thread runtime) the blocking
/// pool runs it.
async fn run_query<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, QueryError> + Send + 'static,
) -> Result<T, QueryError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let started = std::time::Instant::now();
    let r = if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(f)
    } else {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| QueryError::Execution(e.to_string()))?
    };
    crate::selfmetrics::LATENCY.query.observe(started.elapsed());
    r
}

async fn query_range(State(st): St, q: RawQuery, body: Bytes) -> Result<Response, ApiError> {
    count(&st);
    let p = params(&q, &body);
    let expr = p.required("query")?.to_string();
    let start = p.time("start")?;
    let end = p.time("end")?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = parse_step(p.get("step").unwrap_or(""))
        .map_err(|e| ApiError::bad_data(format!("invalid parameter \"step\": {e}")))?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    // In i128: the span of two extreme times overflows i64.
    if (end as i128 - start as i128) / step as i128 > MAX_POINTS as i128 {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let timeout = timeout_param(&p)?;
    let engine = st.engine.clone();
    let m = run_query(move || engine.range_with_timeout(&expr, start, end, step, timeout)).await?;
    Ok(value_response(&Value::Matrix(m)))
}

/// Parses `match[]` selectors into matcher sets.
fn selectors(p: &Params, required: bool) -> Result<Vec<Vec<Matcher>>, ApiError> {
    let raw = p.all("match[]");
    if raw.is_empty() && required {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    raw.into_iter()
        .map(|s| crate::metrics::promql::selector_matchers(s).map_err(ApiError::from))
        .collect()
}

fn range_params(p: &Params) -> Result<(i64, i64), ApiError> {
    Ok((p.time_or("start", i64::MIN)?, p.time_or("end", i64::MAX)?))
}

fn matching_series(st: &ApiState, p: &Params, required: bool) -> Result<Vec<Labels>, ApiError> {
    let (start, end) = range_params(p)?;
    let sets = selectors(p, required)?;
    let mut out: Vec<Labels> = if sets.is_empty() {
        st.storage.series(&[], start, end)
    } else {
        sets.iter()
            .flat_map(|m| st.storage.series(m, start, end))
            .collect()
    };
    out.sort();
    out.dedup();
    Ok(out)
}

async fn series(State(st): St, q: RawQuery, body: Bytes) -> Result<Response, ApiError> {
    count(&st);
    let p = params(&q, &body);
    let s = matching_series(&st, &p, true)?;
    let mut out = String::from("{\"status\":\"success\",\"data\":[");
    for (i, l) in s.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_labels(&mut out, l);
    }
    out.push_str("]}");
    Ok(json_response(out))
}

async fn labels(State(st): St, q: RawQuery, body: Bytes) -> Result<Response, ApiError> {
    count(&st);
    let p = params(&q, &body);
    let (start, end) = range_params(&p)?;
    let sets = selectors(&p, false)?;
    let mut names: Vec<String> = if sets.is_empty() {
        st.storage.label_names(&[], start, end)
    } else {
        sets.iter()
            .flat_map(|m| st.storage.label_names(m, start, end))
            .collect()
    };
    names.sort();
    names.dedup();
    Ok(success(json!(names)))
}

async fn label_values(
    State(st): St,
    Path(name): Path<String>,
    q: RawQuery,
) -> Result<Response, ApiError> {
    count(&st);
    if !telltale_common::model::valid_label_name(&name) {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let p = params(&q, &Bytes::new());
    let (start, end) = range_params(&p)?;
    let sets = selectors(&p, false)?;
    let mut values: Vec<String> = if sets.is_empty() {
        st.storage.label_values(&name, &[], start, end)
    } else {
        sets.iter()
            .flat_map(|m| st.storage.label_values(&name, m, start, end))
            .collect()
    };
    values.sort();
    values.dedup();
    Ok(success(json!(values)))
}

/// Compares a given token with the secret in time that does not depend on where they differ.
fn same_secret(given: &str, secret: &str) -> bool {
    let (a, b) = (given.as_bytes(), secret.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, &x) in b.iter().enumerate() {
        diff |= usize::from(x ^ a.get(i).copied().unwrap_or(!x));
    }
    std::hint::black_box(diff) == 0
}

/// POST endpoints that only read (Prometheus accepts form-encoded POSTs for long queries, and
/// Grafana sends its queries so, exemplars included): every other method but GET and HEAD
/// changes state. Every route with both a GET and a POST handler is one of these or writes
/// (`tests/tests/http_fuzz.rs` holds the router to that).
const READ_ONLY_POSTS: &[&str] = &[
    "/federate",
    "/api/v1/query",
    "/api/v1/query_range",
    "/api/v1/series",
    "/api/v1/labels",
    "/api/v1/query_exemplars",
    "/api/v1/format_query",
    "/api/v1/forecast",
    "/loki/api/v1/series",
];

/// Whether a request changes state (and so needs [`authorize`] and [`same_site`]).
fn changes_state(method: &axum::http::Method, path: &str) -> bool {
    use axum::http::Method;
    !(method == Method::GET
        || method == Method::HEAD
        || method == Method::OPTIONS
        || (method == Method::POST && READ_ONLY_POSTS.contains(&path)))
}

/// Refuses what a page on another site can make a browser send (CSRF): a foreign `Origin`,
/// `Sec-Fetch-Site: cross-site`, or the content types a cross-origin form or `fetch` may
/// send without asking first (`text/plain`, form encodings). API clients send JSON,
/// protobuf or no body, and no `Origin`.
fn same_site(headers: &HeaderMap) -> Result<(), ApiError> {
    let forbidden = |m: String| ApiError {
        status: StatusCode::FORBIDDEN,
        error_type: "forbidden",
        message: m,
    };
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(origin) = get(header::ORIGIN) {
        let host = get(header::HOST).unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        if origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return Err(forbidden(format!(
                "cross-origin request refused: Origin {origin:?} is not this server ({host:?})"
            )));
        }
    }
    if get(header::HeaderName::from_static("sec-fetch-site")) == Some("cross-site") {
        return Err(forbidden("cross-site request refused".into()));
    }
    if let Some(ct) = get(header::CONTENT_TYPE) {
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ]
        .contains(&media.as_str())
        {
            return Err(forbidden(format!(
                "Content-Type {media} is refused on calls that change state (a browser on another \
                 site may send it); send application/json, the protocol's own type, or no body"
            )));
        }
    }
    Ok(())
}

/// Middleware: a state-changing request is checked ([`same_site`], then [`authorize`])
/// before its body is read, so an unauthorized upload is refused without buffering it.
async fn guard(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let checked = if changes_state(req.method(), req.uri().path()) {
        same_site(req.headers()).and_then(|_| authorize(&st, peer, req.headers()))
    } else {
        authorize_read(&st, req.uri().path(), req.headers())
    };
    if let Err(e) = checked {
        return e.into_response();
    }
    let path = req.uri().path();
    if st.forward_only && (SAMPLE_READS.contains(&path) || path.starts_with("/api/v1/label/")) {
        // An empty answer would read as "no data": say why there is none.
        return ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error_type: "unavailable",
            message: "this aggregator keeps no samples ([storage] mode = \"forward\"): query \
                      the store its [[remote_write]] sends them to"
                .into(),
        }
        .into_response();
    }
    next.run(req).await
}

/// The Prometheus API's reads of stored samples and series, refused in forward-only mode.
const SAMPLE_READS: &[&str] = &[
    "/api/v1/query",
    "/api/v1/query_range",
    "/api/v1/series",
    "/api/v1/labels",
    "/api/v1/query_exemplars",
    "/api/v1/metadata",
    "/federate",
];

/// Reads open to anyone even with a read token: the probes a load balancer or an init
/// system sends, which say nothing about the data.
const PROBES: [&str; 2] = ["/-/healthy", "/-/ready"];

/// The bearer token a request carries.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Checks that a read may proceed: with a read token configured, it or the API token (a
/// holder of the stronger secret may read too); with none, everyone reads.
fn authorize_read(st: &ApiState, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &st.read_token else {
        return Ok(());
    };
    // The UI's page and assets hold no data (the UI sends the token with its API calls).
    if PROBES.contains(&path) || path == "/" || path.starts_with("/ui/") {
        return Ok(());
    }
    let given = bearer(headers);
    let ok = given.is_some_and(|g| {
        same_secret(g, token) || st.api_token.as_deref().is_some_and(|a| same_secret(g, a))
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            error_type: "unauthorized",
            message: "missing or wrong bearer token: reads need the read token (read_token)".into(),
        })
    }
}

/// Checks that a state-changing call may proceed: the configured bearer token, or, with none
/// configured, a loopback peer.
fn authorize(
    st: &ApiState,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let unauthorized = |m: &str| ApiError {
        status: StatusCode::UNAUTHORIZED,
        error_type: "unauthorized",
        message: m.to_string(),
    };
    match &st.api_token {
        Some(token) => {
            let given = bearer(headers);
            if given.is_some_and(|g| same_secret(g, token)) {
                Ok(())
            } else {
                Err(unauthorized("missing or wrong bearer token"))
            }
        }
        None if peer.ip().is_loopback() => Ok(()),
        None => Err(unauthorized(
            "no API token is configured: state-changing calls are accepted from loopback only (set api_token)",
        )),
    }
}

async fn write(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    count(&st);
    authorize(&st, peer, &headers)?;
    let raw = remote_write::decompress(&body)
        .map_err(|e| ApiError::bad_data(format!("malformed remote_write body: {e}")))?;
    let req = AppendRequest {
        origin: None,
        data: AppendData::RemoteWrite(raw),
    };
    match st.storage.append(req).await {
        Ok(AppendOutcome::Invalid { reason }) => Err(ApiError::bad_data(reason)),
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error_type: "internal",
            message: e.to_string(),
        }),
    }
}

async fn metadata(q: RawQuery) -> Result<Response, ApiError> {
    let p = params(&q, &Bytes::new());
    if p.get("limit")
        .is_some_and(|l| !l.is_empty() && l.parse::<i64>().is_err())
    {
        return Err(ApiError::bad_data("limit must be a number"));
    }
    // Agents send no metric metadata yet: an empty map, as Prometheus answers without any.
    Ok(success(json!({})))
}

async fn agents(State(st): St) -> Response {
    count(&st);
    success(serde_json::to_value(st.registry.list()).unwrap_or(Json::Null))
}

/// `GET /api/v1/events?match=<selector>&since=<time>&limit=<n>`: host events (health checks
/// changing state...), oldest first; `kind` matches as a label. Default: the newest 1000.
async fn events(State(st): St, q: RawQuery) -> Result<Response, ApiError> {
    count(&st);
    let p = params(&q, &Bytes::new());
    let matchers = match p.get("match") {
        Some(m) => crate::metrics::promql::selector_matchers(m).map_err(ApiError::from)?,
        None => Vec::new(),
    };
    let since = p.time_or("since", i64::MIN)?;
    let limit = match p.get("limit") {
        None => 1000,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| ApiError::bad_data(format!("invalid limit {l:?}: use 1 to 100000")))?,
    };
    let list: Vec<Json> = st
        .storage
        .events(&matchers, since, limit)
        .into_iter()
        .map(|e| {
            let labels: serde_json::Map<String, Json> = e
                .labels
                .into_iter()
                .map(|(k, v)| (k, Json::String(v)))
                .collect();
            json!({
                "time": e.t_ms as f64 / 1000.0,
                "kind": e.kind,
                "labels": labels,
                "message": e.message,
            })
        })
        .collect();
    Ok(success(Json::Array(list)))
}

async fn metrics(State(st): St) -> Response {
    let mut text = st.metrics.render(&Gauges {
        connected_agents: st.registry.connected_count(),
        storage: st.storage.stats(),
        corrupt_records: st.corrupt_records,
        // ENOSPC, as the OS words it in the error (the only way a write error is full disk).
        disk_full: st
            .storage
            .write_error()
            .is_some_and(|e| e.contains("os error 28")),
    });
    st.storage.render_metrics(&mut text);
    st.rules().render_metrics(&mut text);
    st.anomaly().render_metrics(&mut text);
    st.patterns.render_metrics(&mut text);
    st.traces.render_metrics(&mut text);
    st.reload.status.render(&mut text);
    st.alerts.render_metrics(&mut text);
    st.remediation.render_metrics(&mut text);
    st.forward.render_metrics(&mut text);
    crate::selfmetrics::render_latencies(&mut text);
    crate::selfmetrics::render_process(
        &mut text,
        status::started(),
        status::revision(),
        status::rustc(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `POST /-/reload` (token): re-reads rules, routes and runbooks, as SIGHUP does; a bad file
/// keeps the running configuration and answers 500 naming it (like Prometheus).
async fn reload(State(st): St) -> Response {
    match st.reload().await {
        Ok(n) => format!("reloaded: {n} rules\n").into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {e}\n"),
        )
            .into_response(),
    }
}

async fn healthy() -> &'static str {
    "Telltale is Healthy.\n"
}

async fn ready(State(st): St) -> Response {
    if let Some(e) = st.storage.write_error() {
        // Writes fail (a full disk): load balancers and agents' operators should know.
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Telltale is not ready: storage cannot write: {e}\n"),
        )
            .into_response()
    } else if st.ready.load(Ordering::Relaxed) {
        "Telltale is Ready.\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Telltale is not ready.\n").into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// The router with every endpoint.
pub fn router(state: Arc<ApiState>) -> Router {
    let base = pool::routes(admin::routes(status::routes(pipeline::routes(ui::routes(
        report::routes(golden::routes(slo::routes(anomaly::routes(
            alerting::routes(Router::new()),
        )))),
    )))));
    jaeger::routes(loki::routes(base))
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route(
            "/api/v1/query_exemplars",
            get(exemplars::query_exemplars).post(exemplars::query_exemplars),
        )
        .route(
            "/federate",
            get(federate::federate).post(federate::federate),
        )
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/events", get(events))
        .route(
            "/api/v1/write",
            axum::routing::post(write).layer(DefaultBodyLimit::max(remote_write::MAX_BODY)),
        )
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/-/reload", axum::routing::post(reload).put(reload))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(axum::middleware::from_fn(gzip::gzip))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::promql::format::format_sample;

    #[test]
    fn points_are_written_as_prometheus_writes_them() {
        let mut out = String::new();
        for (t, v) in [
            (1_700_000_000_000, 1.0),
            (1_700_000_000_123, 0.5),
            (1_700_000_000_100, f64::NAN),
            (1_700_000_000_020, f64::INFINITY),
            (-1_500, f64::NEG_INFINITY),
            (-500, -2.25),
            (1, 123_456_789_012.0),
            (2, -7.0),
            (3, -0.0),
            (4, 0.0),
            (5, 2.5e20),
            (6, 8.9e15),
            (7, 1e21),
            (8, -1.5e-9),
        ] {
            push_point(&mut out, &telltale_common::model::Sample(t, v));
            out.push(' ');
            assert_eq!(
                format_sample(v),
                out.rsplit('"').nth(1).unwrap_or_default(),
                "{v}"
            );
        }
        assert_eq!(
            out,
            "[1700000000,\"1\"] [1700000000.123,\"0.5\"] [1700000000.100,\"NaN\"] \
             [1700000000.020,\"+Inf\"] [-1.500,\"-Inf\"] [-0.500,\"-2.25\"] \
             [0.001,\"123456789012\"] [0.002,\"-7\"] [0.003,\"-0\"] [0.004,\"0\"] \
             [0.005,\"250000000000000000000\"] \
             [0.006,\"8900000000000000\"] [0.007,\"1e+21\"] [0.008,\"-1.5e-09\"] "
        );
    }

    #[tokio::test]
    async fn scalars_and_strings_are_written_as_go_encoding_json_writes_them() {
        use crate::metrics::promql::Value;
        use telltale_common::model::Sample;
        async fn body(v: &Value) -> String {
            let b = axum::body::to_bytes(encode::value_response(v).into_body(), usize::MAX);
            String::from_utf8(b.await.unwrap_or_default().to_vec()).unwrap_or_default()
        }
        // Prometheus 2.42's answers: `1e-7`, `1e21` and `time()` at a fractional second.
        for (t, v, want) in [
            (1_796_619_000_050, 1e-7, "[1796619000.05,\"0.0000001\"]"),
            (
                1_796_619_000_000,
                1e21,
                "[1796619000,\"1000000000000000000000\"]",
            ),
            (
                1_796_619_000_500,
                1_796_619_000.5,
                "[1796619000.5,\"1796619000.5\"]",
            ),
            (-1_500, f64::NEG_INFINITY, "[-1.5,\"-Inf\"]"),
            (7, -0.0, "[0.007,\"-0\"]"),
        ] {
            let got = body(&Value::Scalar(Sample(t, v))).await;
            assert!(
                got.contains(&format!("\"scalar\",\"result\":{want}")),
                "{got}"
            );
        }
        let got = body(&Value::String(1_796_619_000_050, "a".into())).await;
        assert!(
            got.contains("\"string\",\"result\":[1796619000.05,\"a\"]"),
            "{got}"
        );
    }
}
