//! Loki's HTTP API over the log store, so Grafana's Loki data source, logcli-style clients
//! and Loki pushers (Promtail, Alloy, Fluent Bit) work by changing a URL:
//! `/loki/api/v1/{query, query_range, labels, label/<name>/values, series, index/stats,
//! patterns, tail, push}`.
//!
//! Answers use Loki's JSON envelope (`{"status":"success","data":{"resultType":...}}`);
//! errors are Loki's plain-text bodies with 400 for a bad query or a limit, 500 for a store
//! failure. `push` changes state, so it needs the API token like remote_write (the guard of
//! [`super::router`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value as Json, json};
use telltale_common::model::{Labels, now_ms};

use super::{ApiState, Params, St};
use crate::logs::logql::eval::{self, Direction, EvalError, Limits};
use crate::logs::logql::{self, Query};
use crate::logs::push;
use crate::logs::store::{LogAppend, LogStoreError};

mod tail;

/// Most lines one log query returns (Loki's `max_entries_limit_per_query`).
const MAX_ENTRIES: usize = 5000;

/// A Loki-shaped error: plain text.
struct LokiError(StatusCode, String);

impl IntoResponse for LokiError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.1),
        )
            .into_response()
    }
}

fn bad(m: impl Into<String>) -> LokiError {
    LokiError(StatusCode::BAD_REQUEST, m.into())
}

impl From<EvalError> for LokiError {
    fn from(e: EvalError) -> Self {
        match e {
            EvalError::Store(LogStoreError::TooMuchData { .. })
            | EvalError::Limit(_)
            | EvalError::Matching(_) => bad(e.to_string()),
            other => LokiError(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

/// A Loki time: integer nanoseconds (more than 10 digits) or seconds, fractional seconds, or
/// RFC 3339.
fn time_ns(s: &str) -> Result<i64, LokiError> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        let n: i64 = t
            .parse()
            .map_err(|_| bad(format!("invalid timestamp {s:?}")))?;
        return Ok(if t.trim_start_matches('-').len() <= 10 {
            n.saturating_mul(1_000_000_000)
        } else {
            n
        });
    }
    if let Ok(f) = t.parse::<f64>() {
        if !f.is_finite() {
            return Err(bad(format!("invalid timestamp {s:?}")));
        }
        return Ok((f * 1e9) as i64);
    }
    humantime::parse_rfc3339_weak(t.trim_end_matches('Z'))
        .ok()
        .and_then(|st| st.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .ok_or_else(|| bad(format!("invalid timestamp {s:?}")))
}

/// A step or `since`: a duration (`30s`, `5m`) or seconds.
fn duration_param(s: &str) -> Result<i64, LokiError> {
    if let Ok(f) = s.trim().parse::<f64>()
        && f.is_finite()
        && f > 0.0
    {
        return Ok((f * 1e9) as i64);
    }
    logql::parse_duration_ns(s)
        .filter(|&n| n > 0)
        .ok_or_else(|| bad(format!("invalid duration {s:?}")))
}

fn now_ns() -> i64 {
    now_ms().saturating_mul(1_000_000)
}

/// `start`/`end` (or `since`): default the last hour, as Loki.
fn range(p: &Params) -> Result<(i64, i64), LokiError> {
    let end = match p.get("end").filter(|v| !v.is_empty()) {
        Some(v) => time_ns(v)?,
        None => now_ns(),
    };
    let start = match (p.get("start").filter(|v| !v.is_empty()), p.get("since")) {
        (Some(v), _) => time_ns(v)?,
        // Saturating: `end` may be any i64 a client sends (i64::MIN panicked here in debug).
        (None, Some(s)) => end.saturating_sub(duration_param(s)?),
        (None, None) => end.saturating_sub(3_600_000_000_000),
    };
    if end < start {
        return Err(bad("end timestamp must not be before start time"));
    }
    Ok((start, end))
}

fn labels_json(l: &Labels) -> Json {
    Json::Object(
        l.iter()
            .map(|(k, v)| (k.to_string(), Json::String(v.to_string())))
            .collect(),
    )
}

fn success(data: Json) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

fn query_of(p: &Params) -> Result<Query, LokiError> {
    let q = p
        .get("query")
        .ok_or_else(|| bad("query parameter is required"))?;
    logql::parse(q).map_err(|e| bad(e.to_string()))
}

fn limit_of(p: &Params) -> Result<usize, LokiError> {
    let limit = match p.get("limit").filter(|v| !v.is_empty()) {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| bad(format!("invalid limit {v:?}")))?,
        None => 100,
    };
    if limit > MAX_ENTRIES {
        return Err(bad(format!(
            "max entries limit per query exceeded, limit > max_entries_limit ({limit} > {MAX_ENTRIES})"
        )));
    }
    Ok(limit)
}

fn direction_of(p: &Params) -> Result<Direction, LokiError> {
    match p
        .get("direction")
        .map(|d| d.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("backward") => Ok(Direction::Backward),
        Some("forward") => Ok(Direction::Forward),
        Some(other) => Err(bad(format!("invalid direction {other:?}"))),
    }
}

fn streams_json(r: Vec<eval::StreamResult>) -> Json {
    Json::Array(
        r.into_iter()
            .map(|s| {
                json!({
                    "stream": labels_json(&s.labels),
                    "values": s.entries.into_iter()
                        .map(|(t, l)| json!([t.to_string(), l]))
                        .collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

fn value_str(v: f64) -> String {
    crate::metrics::promql::format::format_value(v)
}

fn limits(st: &ApiState) -> Limits {
    Limits {
        max_bytes: st.logs_max_query_bytes,
        ..Limits::default()
    }
}

/// Runs a query off the async threads (it reads and decompresses).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LokiError> + Send + 'static,
) -> Result<T, LokiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LokiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

async fn query_range(State(st): St, q: RawQuery) -> Result<Response, LokiError> {
    let p = Params::parse(q.0.as_deref(), &[]);
    let query = query_of(&p)?;
    let (start, end) = range(&p)?;
    let limit = limit_of(&p)?;
    let dir = direction_of(&p)?;
    let step = match p.get("step").filter(|v| !v.is_empty()) {
        Some(s) => duration_param(s)?,
        // Loki's default: about 250 points, at least a second.
        None => ((end.saturating_sub(start) / 250) / 1_000_000_000).max(1) * 1_000_000_000,
    };
    let lim = limits(&st);
    let store = st.logs.clone();
    let data = blocking(move || match query {
        Query::Log(e) => {
            let r = eval::select_logs(store.as_ref(), &e, start, end, limit, dir, &lim)?;
            Ok(json!({"resultType": "streams", "result": streams_json(r)}))
        }
        Query::Metric(e) => {
            let r = eval::range_metric(store.as_ref(), &e, start, end, step, &lim)?;
            let result: Vec<Json> = r
                .into_iter()
                .map(|s| {
                    json!({
                        "metric": labels_json(&s.labels),
                        "values": s.points.into_iter()
                            .map(|(t, v)| json!([t as f64 / 1e9, value_str(v)]))
                            .collect::<Vec<_>>(),
                    })
                })
                .collect();
            Ok(json!({"resultType": "matrix", "result": result}))
        }
    })
    .await?;
    Ok(success(data))
}

async fn query(State(st): St, q: RawQuery) -> Result<Response, LokiError> {
    let p = Params::parse(q.0.as_deref(), &[]);
    let query = query_of(&p)?;
    let t = match p.get("time").filter(|v| !v.is_empty()) {
        Some(v) => time_ns(v)?,
        None => now_ns(),
    };
    let limit = limit_of(&p)?;
    let dir = direction_of(&p)?;
    let lim = limits(&st);
    let store = st.logs.clone();
    let data = blocking(move || match query {
        Query::Log(_) => Err(bad(
            "log queries are not supported as an instant query type, please change your query to a range query type",
        )),
        Query::Metric(e) => {
            let _ = (limit, dir);
            let scalar = e.is_scalar();
            let r = eval::range_metric(store.as_ref(), &e, t, t, 1, &lim)?;
            if scalar {
                let v = r.first().and_then(|s| s.points.first()).map_or(f64::NAN, |p| p.1);
                return Ok(json!({"resultType": "scalar", "result": [t as f64 / 1e9, value_str(v)]}));
            }
            let result: Vec<Json> = r
                .into_iter()
                .filter_map(|s| {
                    let (_, v) = *s.points.first()?;
                    Some(json!({"metric": labels_json(&s.labels), "value": [t as f64 / 1e9, value_str(v)]}))
                })
                .collect();
            Ok(json!({"resultType": "vector", "result": result}))
        }
    })
    .await?;
    Ok(success(data))
}

/// The streams of the range, filtered by `query` (a selector) when given.
fn streams(st: &ApiState, p: &Params) -> Result<Vec<Labels>, LokiError> {
    let (start, end) = range(p)?;
    let matchers = match p.get("query").filter(|v| !v.is_empty()) {
        Some(q) => match logql::parse(q).map_err(|e| bad(e.to_string()))? {
            Query::Log(e) => e.matchers,
            Query::Metric(_) => return Err(bad("query must be a stream selector")),
        },
        None => Vec::new(),
    };
    Ok(st.logs.streams(&matchers, start, end))
}

async fn labels(State(st): St, q: RawQuery) -> Result<Response, LokiError> {
    let p = Params::parse(q.0.as_deref(), &[]);
    let s = streams(&st, &p)?;
    Ok(success(json!(crate::labels::label_names_of(&s))))
}

async fn label_values(
    State(st): St,
    Path(name): Path<String>,
    q: RawQuery,
) -> Result<Response, LokiError> {
    let p = Params::parse(q.0.as_deref(), &[]);
    let s = streams(&st, &p)?;
    Ok(success(json!(crate::labels::label_values_of(&s, &name))))
}

async fn series(State(st): St, q: RawQuery, body: Bytes) -> Result<Response, LokiError> {
    let p = Params::parse(q.0.as_deref(), &body);
    let (start, end) = range(&p)?;
    let mut out: BTreeMap<Labels, ()> = BTreeMap::new();
    let selectors = p.all("match[]");
    if selectors.is_empty() {
        return Err(bad("at least one match[] selector is required"));
    }
    for m in selectors {
        let Query::Log(e) = logql::parse(m).map_err(|e| bad(e.to_string()))? else {
            return Err(bad("match[] must be a stream selector"));
        };
        for l in st.logs.streams(&e.matchers, start, end) {
            out.insert(l, ());
        }
    }
    Ok(success(Json::Array(out.keys().map(labels_json).collect())))
}

/// `GET /loki/api/v1/index/stats?query=<selector>&start=&end=`: streams, chunks, entries and
/// bytes the selector covers (Grafana shows them as the query's size). Loki's shape: the
/// object itself, no envelope.
async fn index_stats(State(st): St, q: RawQuery) -> Result<Response, LokiError> {
    let p = Params::parse(q.0.as_deref(), &[]);
    let (start, end) = range(&p)?;
    let Query::Log(e) = query_of(&p)? else {
        return Err(bad("query must be a stream selector"));
    };
    let s = st.logs.index_stats(&e.matchers, start, end);
    Ok(axum::Json(json!({
        "streams": s.streams,
        "chunks": s.chunks,
        "entries": s.entries,
        "bytes": s.bytes,
    }))
    .into_response())
}

/// `GET /loki/api/v1/patterns?query=<selector>&start=&end=&step=`: the templates the
/// selected streams' lines fall into, with their line counts per step, most lines first (the
/// last three hours are kept; see `logs::patterns`). Loki's shape: `{"status": "success",
/// "data": [{"pattern": "...", "samples": [[seconds, count], ...]}]}`.
async fn patterns(State(st): St, q: RawQuery) -> Result<Response, LokiError> {
    let p = Params::parse(q.0.as_deref(), &[]);
    let (start, end) = range(&p)?;
    let Query::Log(e) = query_of(&p)? else {
        return Err(bad("query must be a stream selector"));
    };
    if !e.stages.is_empty() {
        return Err(bad(
            "query must be a stream selector: patterns take no pipeline",
        ));
    }
    let step = match p.get("step").filter(|v| !v.is_empty()) {
        Some(s) => duration_param(s)? / 1_000_000,
        None => (end.saturating_sub(start) / 250 / 1_000_000).max(10_000),
    };
    let limit = match p.get("limit").filter(|v| !v.is_empty()) {
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| bad(format!("invalid limit {v:?}")))?,
        None => 1000,
    };
    let index = st.patterns.clone();
    let found = blocking(move || {
        Ok(index.query(&e.matchers, start / 1_000_000, end / 1_000_000, step, limit))
    })
    .await?;
    let data: Vec<Json> = found
        .into_iter()
        .map(|s| {
            json!({
                "pattern": s.pattern,
                "samples": s.samples.iter().map(|&(t, n)| json!([t / 1000, n])).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(success(Json::Array(data)))
}

async fn push_handler(
    State(st): St,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, LokiError> {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if headers.contains_key(header::CONTENT_ENCODING) {
        return Err(LokiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Encoding is not supported: send protobuf with snappy, or plain JSON".into(),
        ));
    }
    let streams = if json_body {
        push::decode_json(&body)
    } else {
        push::decode_protobuf(&body)
    }
    .map_err(|e| bad(e.to_string()))?;
    match st
        .logs
        .append(LogAppend {
            origin: None,
            streams,
        })
        .await
    {
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(LogStoreError::Invalid(m)) => Err(bad(m)),
        Err(e) => Err(LokiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// The Loki routes.
pub fn routes(r: Router<Arc<ApiState>>) -> Router<Arc<ApiState>> {
    r.route("/loki/api/v1/query", get(query))
        .route("/loki/api/v1/query_range", get(query_range))
        .route("/loki/api/v1/labels", get(labels))
        .route("/loki/api/v1/label", get(labels))
        .route("/loki/api/v1/label/{name}/values", get(label_values))
        .route("/loki/api/v1/series", get(series).post(series))
        .route("/loki/api/v1/index/stats", get(index_stats))
        .route("/loki/api/v1/patterns", get(patterns))
        .route("/loki/api/v1/tail", get(tail::tail))
        .route(
            "/loki/api/v1/push",
            post(push_handler).layer(axum::extract::DefaultBodyLimit::max(push::MAX_BODY_BYTES)),
        )
}
