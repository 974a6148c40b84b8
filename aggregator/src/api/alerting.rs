//! Rules, alerts, silences and incidents over HTTP: Prometheus' `/api/v1/rules` and
//! `/api/v1/alerts`, Loki's ruler API for the LogQL rules (`/loki/api/v1/rules` in YAML,
//! `/prometheus/api/v1/rules` and `/prometheus/api/v1/alerts` in Prometheus' shape), Alertmanager's v2 `alerts` and `silences`, and Telltale's
//! `/api/v1/incidents` with acknowledgements, and `/api/v1/remediations` with approvals and
//! the global switch. Changes need the API token (see
//! [`super::authorize`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value as Json, json};
use telltale_common::model::Labels;

use super::{ApiError, ApiState, St, authorize, count, params, success};
use crate::alert::RequestError;
use crate::alert::labels_json;
use crate::alert::{Alert, parse_rfc3339, rfc3339};
use crate::alerting::apiquery::{AlertQuery, SilenceQuery};
use crate::alerting::silence::PostableSilence;
use crate::rules::file::{Lang, RuleKind};
use crate::rules::manager::GroupView;

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`, as Prometheus prints alert values.
fn go_exp(v: f64) -> String {
    crate::alert::template::format_float(v, b'e', -1)
}

fn template_labels(l: &[(String, crate::alert::template::Template)]) -> Json {
    Json::Object(
        l.iter()
            .map(|(k, t)| (k.clone(), Json::String(t.source().to_string())))
            .collect(),
    )
}

fn alert_view(a: &crate::rules::manager::AlertView) -> Json {
    let mut v = json!({
        "labels": labels_json(&a.labels),
        "annotations": labels_json(&a.annotations),
        "state": a.state.as_str(),
        "activeAt": rfc3339(a.active_at),
        "value": go_exp(a.value),
    });
    if a.keep_firing_since > 0 {
        v["keepFiringSince"] = json!(rfc3339(a.keep_firing_since));
    }
    v
}

fn group_json(g: &GroupView, want: Option<&str>) -> Json {
    let rules: Vec<Json> = g
        .rules
        .iter()
        .filter_map(|r| {
            let common = |mut v: Json| {
                v["name"] = json!(r.rule.name);
                v["query"] = json!(r.rule.query);
                v["labels"] = template_labels(&r.rule.labels);
                v["health"] = json!(r.health.as_str());
                v["lastError"] = json!(r.last_error);
                v["evaluationTime"] = json!(r.eval_seconds);
                v["lastEvaluation"] = json!(rfc3339(r.last_eval_ms));
                v
            };
            match &r.rule.kind {
                RuleKind::Alerting {
                    hold,
                    keep_firing_for,
                    annotations,
                } if want != Some("record") => Some(common(json!({
                    "state": r.state.as_str(),
                    "duration": hold.as_secs_f64(),
                    "keepFiringFor": keep_firing_for.as_secs_f64(),
                    "annotations": template_labels(annotations),
                    "alerts": r.alerts.iter().map(alert_view).collect::<Vec<_>>(),
                    "type": "alerting",
                }))),
                RuleKind::Recording if want != Some("alert") => {
                    Some(common(json!({"type": "recording"})))
                }
                _ => None,
            }
        })
        .collect();
    json!({
        "name": g.name,
        "file": g.file,
        "rules": rules,
        "interval": g.interval.as_secs_f64(),
        "limit": g.limit,
        "evaluationTime": g.eval_seconds,
        "lastEvaluation": rfc3339(g.last_eval_ms),
    })
}

/// `GET /api/v1/rules[?type=alert|record]`: the Prometheus rules (the LogQL ones are under
/// `/prometheus/api/v1/rules`, where Grafana's Loki data source looks, as on Loki).
async fn rules(State(st): St, q: RawQuery) -> Result<Response, ApiError> {
    rules_of(&st, &q, Lang::PromQL)
}

/// `GET /prometheus/api/v1/rules[?type=alert|record]`: the LogQL rules, in Prometheus' shape.
async fn log_rules(State(st): St, q: RawQuery) -> Result<Response, ApiError> {
    rules_of(&st, &q, Lang::LogQL)
}

fn rules_of(st: &ApiState, q: &RawQuery, lang: Lang) -> Result<Response, ApiError> {
    count(st);
    let p = params(q, &Bytes::new());
    let want = p.get("type");
    if let Some(t) = want
        && t != "alert"
        && t != "record"
    {
        return Err(ApiError::bad_data(format!(
            "invalid type {t:?}: use alert or record"
        )));
    }
    let groups: Vec<Json> = st
        .rules()
        .groups()
        .iter()
        .filter(|g| g.lang == lang)
        .map(|g| group_json(g, want))
        .filter(|g| want.is_none() || g["rules"].as_array().is_some_and(|r| !r.is_empty()))
        .collect();
    Ok(success(json!({"groups": groups})))
}

/// `GET /api/v1/alerts`
async fn alerts(State(st): St) -> Response {
    alerts_of(&st, Lang::PromQL)
}

/// `GET /prometheus/api/v1/alerts`: the alerts of LogQL rules.
async fn log_alerts(State(st): St) -> Response {
    alerts_of(&st, Lang::LogQL)
}

fn alerts_of(st: &ApiState, lang: Lang) -> Response {
    count(st);
    let alerts: Vec<Json> = st
        .rules()
        .groups()
        .iter()
        .filter(|g| g.lang == lang)
        .flat_map(|g| g.rules.iter().flat_map(|r| r.alerts.iter().map(alert_view)))
        .collect();
    success(json!({"alerts": alerts}))
}

/// A group as its rule file would hold it (Loki's ruler API answers in YAML).
fn group_yaml(g: &GroupView) -> Json {
    let rules: Vec<Json> = g
        .rules
        .iter()
        .map(|r| {
            let mut v = serde_json::Map::new();
            match &r.rule.kind {
                RuleKind::Alerting {
                    hold,
                    keep_firing_for,
                    annotations,
                } => {
                    v.insert("alert".into(), json!(r.rule.name));
                    v.insert("expr".into(), json!(r.rule.query));
                    if !hold.is_zero() {
                        v.insert("for".into(), json!(prom_duration_text(*hold)));
                    }
                    if !keep_firing_for.is_zero() {
                        v.insert(
                            "keep_firing_for".into(),
                            json!(prom_duration_text(*keep_firing_for)),
                        );
                    }
                    if !r.rule.labels.is_empty() {
                        v.insert("labels".into(), template_labels(&r.rule.labels));
                    }
                    if !annotations.is_empty() {
                        v.insert("annotations".into(), template_labels(annotations));
                    }
                }
                RuleKind::Recording => {
                    v.insert("record".into(), json!(r.rule.name));
                    v.insert("expr".into(), json!(r.rule.query));
                    if !r.rule.labels.is_empty() {
                        v.insert("labels".into(), template_labels(&r.rule.labels));
                    }
                }
            }
            Json::Object(v)
        })
        .collect();
    let mut out = json!({"name": g.name, "interval": prom_duration_text(g.interval)});
    if g.limit > 0 {
        out["limit"] = json!(g.limit);
    }
    out["rules"] = json!(rules);
    out
}

/// Prometheus' duration text (`1h30m`, `15s`, `500ms`).
fn prom_duration_text(d: std::time::Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("y", 365 * 86_400_000u128),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// `GET /loki/api/v1/rules[/{namespace}[/{group}]]`: the LogQL rule groups as YAML, by
/// namespace (the rule file's name), as Loki's ruler answers; 404 when nothing matches.
async fn loki_rules(State(st): St, path: Option<Path<Vec<String>>>) -> Response {
    count(&st);
    let wanted = path.map(|p| p.0).unwrap_or_default();
    let mut by_ns: std::collections::BTreeMap<String, Vec<Json>> = Default::default();
    for g in st.rules().groups().iter().filter(|g| g.lang == Lang::LogQL) {
        let ns = std::path::Path::new(&g.file)
            .file_name()
            .map_or_else(|| g.file.clone(), |n| n.to_string_lossy().into_owned());
        if wanted.first().is_some_and(|w| *w != ns) || wanted.get(1).is_some_and(|w| *w != g.name) {
            continue;
        }
        by_ns.entry(ns).or_default().push(group_yaml(g));
    }
    let yaml = match wanted.len() {
        _ if by_ns.is_empty() => {
            return (StatusCode::NOT_FOUND, "no rule groups found\n").into_response();
        }
        // Like Loki (and Cortex): a map of namespaces to groups, or with a group's name the
        // group alone.
        0 | 1 => serde_saphyr::to_string(&by_ns),
        _ => serde_saphyr::to_string(&by_ns.into_values().flatten().next()),
    };
    match yaml {
        Ok(text) => ([(header::CONTENT_TYPE, "application/yaml")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Invalid(m) => ApiError::bad_data(m),
            RequestError::NotFound(m) => ApiError::not_found(m),
            RequestError::Store(m) => ApiError::internal(m),
        }
    }
}

/// Alertmanager's v2 API answers errors with a JSON string.
fn v2_error(e: RequestError) -> Response {
    let (code, m) = match e {
        RequestError::Invalid(m) => (StatusCode::BAD_REQUEST, m),
        RequestError::NotFound(m) => (StatusCode::NOT_FOUND, m),
        RequestError::Store(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
    };
    (code, axum::Json(Json::String(m))).into_response()
}

/// `GET /api/v2/alerts[?active=&silenced=&inhibited=&filter=…&receiver=]`, read as
/// Alertmanager 0.25 reads them (`alerting::apiquery`).
async fn v2_alerts(State(st): St, q: RawQuery) -> Response {
    count(&st);
    let p = params(&q, &Bytes::new());
    match AlertQuery::parse(|k| p.all(k).last().copied(), &p.all("filter")) {
        Ok(query) => axum::Json(Json::Array(st.alerts.alerts_v2(&query))).into_response(),
        Err(e) => v2_error(RequestError::Invalid(e.0)),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert {
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
}

/// `POST /api/v2/alerts` (token): alerts from another Prometheus, as Alertmanager takes them.
async fn v2_post_alerts(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    count(&st);
    if let Err(e) = authorize(&st, peer, &headers) {
        return e.into_response();
    }
    let posted: Vec<PostableAlert> = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return v2_error(RequestError::Invalid(format!("invalid alerts: {e}"))),
    };
    let now = telltale_common::model::now_ms();
    let mut out = Vec::with_capacity(posted.len());
    for p in posted {
        if p.labels.is_empty() {
            return v2_error(RequestError::Invalid(
                "an alert needs at least one label".into(),
            ));
        }
        let t = |s: &Option<String>| match s.as_deref() {
            None | Some("") => Ok(0),
            Some(x) => parse_rfc3339(x),
        };
        let (starts_at, ends_at) = match (t(&p.starts_at), t(&p.ends_at)) {
            (Ok(a), Ok(b)) => (if a == 0 { now } else { a }, b),
            (Err(e), _) | (_, Err(e)) => return v2_error(e.into()),
        };
        if ends_at != 0 && ends_at < starts_at {
            return v2_error(RequestError::Invalid(
                "end time is before start time".into(),
            ));
        }
        out.push(Alert {
            labels: Labels::from_pairs(p.labels),
            annotations: Labels::from_pairs(p.annotations),
            starts_at,
            ends_at,
            generator_url: p.generator_url,
        });
    }
    st.alerts.receive(out);
    StatusCode::OK.into_response()
}

/// `GET /api/v2/alerts/groups[?active=&silenced=&inhibited=&filter=…&receiver=]`: the
/// aggregation groups, as Alertmanager lists them (Grafana's Alertmanager data source).
async fn v2_alert_groups(State(st): St, q: RawQuery) -> Response {
    count(&st);
    let p = params(&q, &Bytes::new());
    match AlertQuery::parse(|k| p.all(k).last().copied(), &p.all("filter")) {
        Ok(query) => axum::Json(Json::Array(st.alerts.alert_groups(&query))).into_response(),
        Err(e) => v2_error(RequestError::Invalid(e.0)),
    }
}

/// `GET /api/v2/receivers`: the routing file's receivers, in its order.
async fn v2_receivers(State(st): St) -> Response {
    count(&st);
    let names: Vec<Json> = st
        .alerts
        .receivers()
        .into_iter()
        .map(|n| json!({"name": n}))
        .collect();
    axum::Json(Json::Array(names)).into_response()
}

/// `GET /api/v2/silences[?filter=…]`, in Alertmanager's order.
async fn v2_silences(State(st): St, q: RawQuery) -> Response {
    count(&st);
    let p = params(&q, &Bytes::new());
    match SilenceQuery::parse(&p.all("filter")) {
        Ok(query) => axum::Json(Json::Array(st.alerts.silences(&query))).into_response(),
        Err(e) => v2_error(RequestError::Invalid(e.0)),
    }
}

async fn v2_silence(State(st): St, Path(id): Path<String>) -> Response {
    count(&st);
    match st.alerts.silence(&id) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => v2_error(e),
    }
}

async fn v2_post_silence(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    count(&st);
    if let Err(e) = authorize(&st, peer, &headers) {
        return e.into_response();
    }
    let p: PostableSilence = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return v2_error(RequestError::Invalid(format!("invalid silence: {e}"))),
    };
    match st.alerts.put_silence(p).await {
        Ok(id) => axum::Json(json!({"silenceID": id})).into_response(),
        Err(e) => v2_error(e),
    }
}

async fn v2_delete_silence(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    count(&st);
    if let Err(e) = authorize(&st, peer, &headers) {
        return e.into_response();
    }
    match st.alerts.expire_silence(&id).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => v2_error(e),
    }
}

/// `GET /api/v1/incidents[?state=open|resolved|all]` (default: all), newest first.
async fn incidents(State(st): St, q: RawQuery) -> Result<Response, ApiError> {
    count(&st);
    let p = params(&q, &Bytes::new());
    let state = p.get("state").unwrap_or("all");
    if !["open", "resolved", "all"].contains(&state) {
        return Err(ApiError::bad_data(format!(
            "invalid state {state:?}: use open, resolved or all"
        )));
    }
    Ok(success(Json::Array(st.alerts.incidents(state))))
}

fn incident_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_data(format!("invalid incident id {id:?}")))
}

async fn incident(State(st): St, Path(id): Path<String>) -> Result<Response, ApiError> {
    count(&st);
    Ok(success(st.alerts.incident(incident_id(&id)?)?))
}

/// Who acknowledges: `{"by": "name"}` in the body, else "api".
fn ack_by(body: &Bytes) -> Result<String, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok("api".into());
    }
    let v: Json = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_data(format!("invalid body: {e}")))?;
    Ok(v.get("by")
        .and_then(|b| b.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("api")
        .to_string())
}

/// `POST /api/v1/incidents/{id}/ack` (token): stops the incident's escalation.
async fn ack_incident(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    count(&st);
    authorize(&st, peer, &headers)?;
    let id = incident_id(&id)?;
    st.alerts.acknowledge(id, &ack_by(&body)?).await?;
    Ok(success(st.alerts.incident(id)?))
}

/// `POST /api/v1/alerts/{fingerprint}/ack` (token): acknowledges the alert's incident.
async fn ack_alert(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path(fp): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    count(&st);
    authorize(&st, peer, &headers)?;
    let id = st.alerts.acknowledge_alert(&fp, &ack_by(&body)?).await?;
    Ok(success(st.alerts.incident(id)?))
}

/// `GET /api/v1/remediations[?state=&action=&instance=&alertname=]`, newest first.
async fn remediations(State(st): St, q: RawQuery) -> Response {
    count(&st);
    let p = params(&q, &Bytes::new());
    let f = crate::remediate::driver::RemediationFilter {
        state: p.get("state").map(str::to_string),
        action: p.get("action").map(str::to_string),
        instance: p.get("instance").map(str::to_string),
        alertname: p.get("alertname").map(str::to_string),
    };
    success(Json::Array(st.remediation.remediations(&f)))
}

async fn remediation(State(st): St, Path(id): Path<String>) -> Result<Response, ApiError> {
    count(&st);
    Ok(success(st.remediation.remediation(&id)?))
}

async fn decide(
    st: &ApiState,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    id: &str,
    body: &Bytes,
    approve: bool,
) -> Result<Response, ApiError> {
    count(st);
    authorize(st, peer, headers)?;
    Ok(success(
        st.remediation.decide(id, approve, &ack_by(body)?).await?,
    ))
}

/// `POST /api/v1/remediations/{id}/approve` (token).
async fn approve(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    decide(&st, peer, &headers, &id, &body, true).await
}

/// `POST /api/v1/remediations/{id}/reject` (token).
async fn reject(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    decide(&st, peer, &headers, &id, &body, false).await
}

async fn remediation_status(State(st): St) -> Response {
    count(&st);
    success(st.remediation.status())
}

/// `POST /api/v1/remediation/status` (token) with `{"enabled": false}`: the global switch.
async fn set_remediation(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    count(&st);
    authorize(&st, peer, &headers)?;
    let v: Json = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_data(format!("invalid body: {e}")))?;
    let enabled = v
        .get("enabled")
        .and_then(|e| e.as_bool())
        .ok_or_else(|| ApiError::bad_data("body must be {\"enabled\": true|false}"))?;
    Ok(success(st.remediation.set_enabled(enabled).await?))
}

/// The routes of this module.
pub fn routes(r: Router<Arc<ApiState>>) -> Router<Arc<ApiState>> {
    r.route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts))
        .route("/prometheus/api/v1/rules", get(log_rules))
        .route("/prometheus/api/v1/alerts", get(log_alerts))
        .route("/loki/api/v1/rules", get(loki_rules))
        .route("/loki/api/v1/rules/{namespace}", get(loki_rules))
        .route("/loki/api/v1/rules/{namespace}/{group}", get(loki_rules))
        .route("/api/v1/alerts/{fingerprint}/ack", post(ack_alert))
        .route("/api/v1/incidents", get(incidents))
        .route("/api/v1/incidents/{id}", get(incident))
        .route("/api/v1/incidents/{id}/ack", post(ack_incident))
        .route("/api/v2/alerts", get(v2_alerts).post(v2_post_alerts))
        .route("/api/v2/alerts/groups", get(v2_alert_groups))
        .route("/api/v2/receivers", get(v2_receivers))
        .route("/api/v2/silences", get(v2_silences).post(v2_post_silence))
        .route(
            "/api/v2/silence/{id}",
            get(v2_silence).delete(v2_delete_silence),
        )
        .route("/api/v1/remediations", get(remediations))
        .route("/api/v1/remediations/{id}", get(remediation))
        .route("/api/v1/remediations/{id}/approve", post(approve))
        .route("/api/v1/remediations/{id}/reject", post(reject))
        .route(
            "/api/v1/remediation/status",
            get(remediation_status).post(set_remediation),
        )
}

#[cfg(test)]
mod tests {
    use super::go_exp;

    #[test]
    fn alert_values_print_like_prometheus() {
        assert_eq!(go_exp(1.0), "1e+00");
        assert_eq!(go_exp(0.25), "2.5e-01");
        assert_eq!(go_exp(123456.0), "1.23456e+05");
        assert_eq!(go_exp(f64::NAN), "NaN");
    }
}
