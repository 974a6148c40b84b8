//! Jaeger's query HTTP API over the trace store, so Grafana's Jaeger data source and Jaeger's
//! own UI work by changing a URL: `/api/services`, `/api/services/{service}/operations`,
//! `/api/operations`, `/api/traces` (search, or `traceID=` lookups), `/api/traces/{id}`,
//! `/api/dependencies`; the trace as OTLP/JSON at `/api/v1/traces/{id}`, and its hosts' log
//! lines in its time span at `/api/v1/traces/{id}/logs`.
//!
//! Answers use Jaeger's envelope `{"data": ..., "total", "limit", "offset", "errors"}`;
//! errors put `{"code", "msg"}` in `errors` with the same HTTP status (400 for a bad
//! parameter, 404 for an unknown trace, 500 for a store failure). Times are Jaeger's:
//! microseconds in `start`/`end`, milliseconds in `endTs`/`lookback` of dependencies, Go
//! durations (`1.5s`, `200ms`) in `minDuration`/`maxDuration`. Span attributes are kept as
//! text by the agent, so every tag is `"type": "string"` but `error` (a bool).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};
use telltale_common::model::now_ms;
use telltale_common::trace::{self, Span, SpanKind, SpanStatus};

use super::{ApiState, Params, St};
use crate::traces::store::{TraceSearch, TraceStoreError, parse_trace_id};

/// Most traces one search returns.
const MAX_LIMIT: usize = 1500;

/// An error in Jaeger's envelope.
struct JaegerError(StatusCode, String);

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        let body = json!({
            "data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{"code": self.0.as_u16(), "msg": self.1}],
        });
        (self.0, axum::Json(body)).into_response()
    }
}

fn bad(m: impl Into<String>) -> JaegerError {
    JaegerError(StatusCode::BAD_REQUEST, m.into())
}

impl From<TraceStoreError> for JaegerError {
    fn from(e: TraceStoreError) -> Self {
        JaegerError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

fn envelope(data: Json, total: usize) -> Response {
    axum::Json(json!({"data": data, "total": total, "limit": 0, "offset": 0, "errors": null}))
        .into_response()
}

/// A Go duration (`1h2m`, `1.5s`, `300ms`, `10us`, `10µs`, `5ns`) in nanoseconds.
pub fn go_duration(s: &str) -> Option<u64> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += n * scale;
    }
    (total.is_finite() && total >= 0.0 && total < u64::MAX as f64).then_some(total as u64)
}

/// Microseconds of `key`, or `default`.
fn micros(p: &Params, key: &str, default: u64) -> Result<u64, JaegerError> {
    match p.get(key).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v.parse::<u64>().map_err(|_| {
            bad(format!(
                "parameter '{key}': {v:?} is not microseconds since the epoch"
            ))
        }),
    }
}

/// Tags of a search: `tags` as a JSON object, and `tag=key:value` (repeatable).
fn tags(p: &Params) -> Result<Vec<(String, String)>, JaegerError> {
    let mut out = Vec::new();
    if let Some(t) = p.get("tags").filter(|t| !t.trim().is_empty()) {
        let map: serde_json::Map<String, Json> =
            serde_json::from_str(t).map_err(|e| bad(format!("malformed 'tags' parameter: {e}")))?;
        for (k, v) in map {
            let v = match v {
                Json::String(s) => s,
                other => other.to_string(),
            };
            out.push((k, v));
        }
    }
    for t in p.all("tag") {
        let (k, v) = t.split_once(':').ok_or_else(|| {
            bad(format!(
                "malformed 'tag' parameter {t:?}: expected key:value"
            ))
        })?;
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn kind_name(k: SpanKind) -> &'static str {
    match k {
        SpanKind::Unspecified => "",
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
    }
}

fn tag(k: &str, v: &str) -> Json {
    json!({"key": k, "type": "string", "value": v})
}

/// A trace in Jaeger's JSON: spans with references, tags and logs; one process per service
/// and resource.
fn jaeger_trace(spans: &[Span]) -> Json {
    let mut processes: Vec<(&str, &[(String, String)])> = Vec::new();
    let mut out = Vec::with_capacity(spans.len());
    for s in spans {
        let key = (s.service.as_str(), s.resource.as_slice());
        let p = match processes.iter().position(|x| *x == key) {
            Some(i) => i,
            None => {
                processes.push(key);
                processes.len() - 1
            }
        };
        let mut refs: Vec<Json> = Vec::new();
        if let Some(parent) = s.parent {
            refs.push(json!({"refType": "CHILD_OF", "traceID": trace::hex(&s.trace_id), "spanID": trace::hex(&parent)}));
        }
        for l in &s.links {
            refs.push(json!({"refType": "FOLLOWS_FROM", "traceID": trace::hex(&l.trace_id), "spanID": trace::hex(&l.span_id)}));
        }
        let mut tags: Vec<Json> = s.attributes.iter().map(|(k, v)| tag(k, v)).collect();
        if s.kind != SpanKind::Unspecified {
            tags.push(tag("span.kind", kind_name(s.kind)));
        }
        match s.status {
            SpanStatus::Error => {
                tags.push(json!({"key": "error", "type": "bool", "value": true}));
                tags.push(tag("otel.status_code", "ERROR"));
            }
            SpanStatus::Ok => tags.push(tag("otel.status_code", "OK")),
            SpanStatus::Unset => {}
        }
        if !s.status_message.is_empty() {
            tags.push(tag("otel.status_description", &s.status_message));
        }
        let logs: Vec<Json> = s
            .events
            .iter()
            .map(|e| {
                let mut fields = vec![tag("event", &e.name)];
                fields.extend(e.attributes.iter().map(|(k, v)| tag(k, v)));
                json!({"timestamp": e.t_ns / 1000, "fields": fields})
            })
            .collect();
        out.push(json!({
            "traceID": trace::hex(&s.trace_id),
            "spanID": trace::hex(&s.span_id),
            "operationName": s.name,
            "references": refs,
            "startTime": s.start_ns / 1000,
            "duration": s.duration_ns() / 1000,
            "tags": tags,
            "logs": logs,
            "processID": format!("p{}", p + 1),
            "warnings": null,
            "flags": 1,
        }));
    }
    let procs: serde_json::Map<String, Json> = processes
        .iter()
        .enumerate()
        .map(|(i, (svc, res))| {
            let tags: Vec<Json> = res.iter().map(|(k, v)| tag(k, v)).collect();
            (
                format!("p{}", i + 1),
                json!({"serviceName": svc, "tags": tags}),
            )
        })
        .collect();
    json!({
        "traceID": spans.first().map(|s| trace::hex(&s.trace_id)).unwrap_or_default(),
        "spans": out,
        "processes": procs,
        "warnings": null,
    })
}

/// Runs a store read off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TraceStoreError> + Send + 'static,
) -> Result<T, JaegerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| JaegerError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(JaegerError::from)
}

async fn services(State(st): St) -> Response {
    let traces = st.traces.clone();
    let list = tokio::task::spawn_blocking(move || traces.services())
        .await
        .unwrap_or_default();
    let n = list.len();
    envelope(json!(list), n)
}

async fn service_operations(State(st): St, Path(service): Path<String>) -> Response {
    let traces = st.traces.clone();
    let mut names: Vec<String> = tokio::task::spawn_blocking(move || traces.operations(&service))
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.dedup();
    let n = names.len();
    envelope(json!(names), n)
}

/// `/api/operations?service=S&spanKind=server`: operations with their kinds.
async fn operations(State(st): St, RawQuery(q): RawQuery) -> Result<Response, JaegerError> {
    let p = Params::parse(q.as_deref(), &[]);
    let service = p
        .get("service")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("parameter 'service' is required"))?
        .to_string();
    let kind = p.get("spanKind").unwrap_or("").to_string();
    let traces = st.traces.clone();
    let ops: Vec<Json> = tokio::task::spawn_blocking(move || traces.operations(&service))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, k)| kind.is_empty() || kind_name(*k) == kind)
        .map(|(n, k)| json!({"name": n, "spanKind": kind_name(k)}))
        .collect();
    let n = ops.len();
    Ok(envelope(json!(ops), n))
}

/// `/api/traces`: a search, or the traces named by `traceID` parameters.
async fn find_traces(State(st): St, RawQuery(q): RawQuery) -> Result<Response, JaegerError> {
    let p = Params::parse(q.as_deref(), &[]);
    let ids = p.all("traceID");
    let traces = st.traces.clone();
    if !ids.is_empty() {
        let ids = ids
            .into_iter()
            .map(|s| parse_trace_id(s).ok_or_else(|| bad(format!("malformed trace id {s:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let found = blocking(move || {
            ids.iter()
                .map(|id| traces.trace(id))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
        let data: Vec<Json> = found
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| jaeger_trace(t))
            .collect();
        let n = data.len();
        return Ok(envelope(json!(data), n));
    }
    let service = p
        .get("service")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("parameter 'service' is required"))?
        .to_string();
    let now_us = now_ms().max(0) as u64 * 1000;
    let end = micros(&p, "end", now_us)?;
    let lookback = match p
        .get("lookback")
        .filter(|v| !v.is_empty() && *v != "custom")
    {
        None => 3600 * 1_000_000,
        Some(v) => {
            go_duration(v)
                .ok_or_else(|| bad(format!("parameter 'lookback': {v:?} is not a duration")))?
                / 1000
        }
    };
    let start = micros(&p, "start", end.saturating_sub(lookback))?;
    if start > end {
        return Err(bad("parameter 'start' is after 'end'"));
    }
    let duration = |key: &str| -> Result<Option<u64>, JaegerError> {
        p.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                go_duration(v).ok_or_else(|| {
                    bad(format!(
                        "parameter '{key}': {v:?} is not a duration (like 1.5s or 200ms)"
                    ))
                })
            })
            .transpose()
    };
    let (min_d, max_d) = (duration("minDuration")?, duration("maxDuration")?);
    if let (Some(a), Some(b)) = (min_d, max_d)
        && a > b
    {
        return Err(bad("'minDuration' is longer than 'maxDuration'"));
    }
    let limit = match p.get("limit").filter(|v| !v.is_empty()) {
        None => 20,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| bad(format!("parameter 'limit': {v:?} is not a positive number")))?
            .min(MAX_LIMIT),
    };
    let search = TraceSearch {
        service,
        operation: p
            .get("operation")
            .filter(|o| !o.is_empty())
            .map(str::to_string),
        tags: tags(&p)?,
        min_duration_ns: min_d,
        max_duration_ns: max_d,
        start_ns: start.saturating_mul(1000),
        end_ns: end.saturating_mul(1000),
        limit,
    };
    let found = blocking(move || traces.search(&search)).await?;
    let data: Vec<Json> = found.iter().map(|t| jaeger_trace(t)).collect();
    let n = data.len();
    Ok(envelope(json!(data), n))
}

async fn one(st: &ApiState, id: &str) -> Result<Vec<Span>, JaegerError> {
    let id = parse_trace_id(id).ok_or_else(|| bad(format!("malformed trace id {id:?}")))?;
    let traces = st.traces.clone();
    let spans = blocking(move || traces.trace(&id)).await?;
    if spans.is_empty() {
        return Err(JaegerError(StatusCode::NOT_FOUND, "trace not found".into()));
    }
    Ok(spans)
}

async fn get_trace(State(st): St, Path(id): Path<String>) -> Result<Response, JaegerError> {
    let spans = one(&st, &id).await?;
    Ok(envelope(json!([jaeger_trace(&spans)]), 1))
}

/// `/api/dependencies?endTs=MS&lookback=MS`: calls between services.
async fn dependencies(State(st): St, RawQuery(q): RawQuery) -> Result<Response, JaegerError> {
    let p = Params::parse(q.as_deref(), &[]);
    let ms = |key: &str, default: u64| -> Result<u64, JaegerError> {
        match p.get(key).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| bad(format!("parameter '{key}': {v:?} is not milliseconds"))),
        }
    };
    let end = ms("endTs", now_ms().max(0) as u64)?;
    let lookback = ms("lookback", 86_400_000)?;
    let start = end.saturating_sub(lookback);
    let traces = st.traces.clone();
    let edges = tokio::task::spawn_blocking(move || {
        traces.dependencies(
            start.saturating_mul(1_000_000),
            end.saturating_mul(1_000_000),
        )
    })
    .await
    .unwrap_or_default();
    let data: Vec<Json> = edges
        .iter()
        .map(|e| json!({"parent": e.parent, "child": e.child, "callCount": e.calls, "errorCount": e.errors}))
        .collect();
    let n = data.len();
    Ok(envelope(json!(data), n))
}

/// OTLP/JSON's attribute list.
fn otlp_attrs(pairs: &[(String, String)]) -> Json {
    Json::Array(
        pairs
            .iter()
            .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}}))
            .collect(),
    )
}

/// `/api/v1/traces/{id}`: the trace as an OTLP/JSON `TracesData` (spans grouped by service
/// and resource, as an SDK would have sent them).
async fn otlp_trace(State(st): St, Path(id): Path<String>) -> Result<Response, JaegerError> {
    let spans = one(&st, &id).await?;
    type Resource = (String, Vec<(String, String)>);
    let mut groups: BTreeMap<Resource, Vec<Json>> = BTreeMap::new();
    for s in &spans {
        let mut resource = vec![("service.name".to_string(), s.service.clone())];
        resource.extend(s.resource.iter().cloned());
        let events: Vec<Json> = s
            .events
            .iter()
            .map(|e| json!({"timeUnixNano": e.t_ns.to_string(), "name": e.name, "attributes": otlp_attrs(&e.attributes)}))
            .collect();
        let links: Vec<Json> = s
            .links
            .iter()
            .map(|l| json!({"traceId": trace::hex(&l.trace_id), "spanId": trace::hex(&l.span_id)}))
            .collect();
        let mut status = serde_json::Map::new();
        if s.status != SpanStatus::Unset {
            status.insert("code".into(), json!(s.status as i32));
        }
        if !s.status_message.is_empty() {
            status.insert("message".into(), json!(s.status_message));
        }
        groups
            .entry((s.service.clone(), resource))
            .or_default()
            .push(json!({
                "traceId": trace::hex(&s.trace_id),
                "spanId": trace::hex(&s.span_id),
                "parentSpanId": s.parent.map(|p| trace::hex(&p)).unwrap_or_default(),
                "name": s.name,
                "kind": s.kind as i32,
                "startTimeUnixNano": s.start_ns.to_string(),
                "endTimeUnixNano": s.end_ns.to_string(),
                "attributes": otlp_attrs(&s.attributes),
                "events": events,
                "links": links,
                "status": status,
            }));
    }
    let resource_spans: Vec<Json> = groups
        .into_iter()
        .map(|((_, resource), spans)| {
            json!({"resource": {"attributes": otlp_attrs(&resource)}, "scopeSpans": [{"scope": {}, "spans": spans}]})
        })
        .collect();
    Ok(axum::Json(json!({"resourceSpans": resource_spans})).into_response())
}

/// Most lines `/api/v1/traces/{id}/logs` returns.
const MAX_TRACE_LINES: usize = 5000;

/// `/api/v1/traces/{id}/logs`: the log lines of the trace's hosts (the agents its spans came
/// through) from a second before its first span to a second after its last, oldest first;
/// `trace: true` marks the lines that carry the trace's id (their `trace_id` metadata).
/// Hosts' lines are found by `instance`; spans from elsewhere by their service's
/// `service_name` (OTLP logs' label). At most 5000 lines, the trace's own first.
async fn trace_logs(State(st): St, Path(id): Path<String>) -> Result<Response, JaegerError> {
    let spans = one(&st, &id).await?;
    let hex_id = trace::hex(&spans[0].trace_id);
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_ns).max().unwrap_or(0);
    let (start_ns, end_ns) = (
        i64::try_from(start)
            .unwrap_or(i64::MAX)
            .saturating_sub(1_000_000_000),
        i64::try_from(end)
            .unwrap_or(i64::MAX)
            .saturating_add(1_000_000_001),
    );
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for s in &spans {
        let key = match s.resource.iter().find(|(k, _)| k == "instance") {
            Some((_, host)) => ("instance", host.as_str()),
            None => ("service_name", s.service.as_str()),
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let selectors: Vec<Vec<crate::labels::Matcher>> = keys
        .iter()
        .map(|(k, v)| vec![crate::labels::Matcher::equal(k, v)])
        .collect();
    let (logs, max_bytes) = (st.logs.clone(), st.logs_max_query_bytes);
    let lines = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for m in &selectors {
            let sel = crate::logs::store::Selection {
                matchers: m,
                start_ns,
                end_ns,
                needles: &[],
                max_bytes,
            };
            for s in logs.select(&sel)? {
                for e in s.entries {
                    out.push((s.labels.clone(), e));
                }
            }
        }
        Ok::<_, crate::logs::store::LogStoreError>(out)
    })
    .await
    .map_err(|e| JaegerError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| match e {
        crate::logs::store::LogStoreError::TooMuchData { .. } => bad(e.to_string()),
        other => JaegerError(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    })?;
    let of_trace = |e: &telltale_common::wire::LogEntry| {
        e.metadata
            .iter()
            .any(|(k, v)| k == "trace_id" && v.eq_ignore_ascii_case(&hex_id))
    };
    let mut lines = lines;
    // The trace's own lines first when cutting, then by time.
    lines.sort_by_key(|(_, e)| (!of_trace(e), e.t_ns));
    lines.truncate(MAX_TRACE_LINES);
    lines.sort_by_key(|(_, e)| e.t_ns);
    let data: Vec<Json> = lines
        .iter()
        .map(|(labels, e)| {
            let l: serde_json::Map<String, Json> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), Json::String(v.to_string())))
                .collect();
            let md: serde_json::Map<String, Json> = e
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), Json::String(v.clone())))
                .collect();
            json!({"time": e.t_ns.to_string(), "labels": l, "metadata": md, "line": e.line, "trace": of_trace(e)})
        })
        .collect();
    Ok(axum::Json(json!({
        "status": "success",
        "data": {"traceID": hex_id, "start": start_ns.to_string(), "end": end_ns.to_string(), "lines": data},
    }))
    .into_response())
}

/// Adds the Jaeger and trace routes.
pub fn routes(r: Router<Arc<ApiState>>) -> Router<Arc<ApiState>> {
    r.route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(find_traces))
        .route("/api/traces/{id}", get(get_trace))
        .route("/api/dependencies", get(dependencies))
        .route("/api/v1/traces/{id}", get(otlp_trace))
        .route("/api/v1/traces/{id}/logs", get(trace_logs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_writes_them() {
        assert_eq!(go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(go_duration("200ms"), Some(200_000_000));
        assert_eq!(go_duration("1h2m"), Some(3_720_000_000_000));
        assert_eq!(go_duration("10us"), Some(10_000));
        assert_eq!(go_duration("10µs"), Some(10_000));
        assert_eq!(go_duration("5ns"), Some(5));
        assert_eq!(go_duration("0"), Some(0));
        for bad in ["", "5", "1x", "ms", "1.2.3s", "-1s", "1e400h"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }
}
