//! Reports: `/api/v1/reports` (the kept ones), `/api/v1/reports/render` (made on demand, not
//! kept), `POST /api/v1/reports` (made, kept and delivered; token), `/api/v1/reports/<id>`;
//! and the scheduler that makes `[[report]]`s when due.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use telltale_common::model::now_ms;

use super::params::{Params, parse_step, parse_time};
use super::{ApiError, ApiState, St, success};
use crate::report::schedule::Schedule;
use crate::report::{Inputs, Kind, Report, render};

/// Makes a report from what the aggregator keeps (blocking: run it off the runtime). Only the
/// records its kind reads are gathered: an SLO or capacity report does not render every
/// incident.
pub fn make(
    st: &ApiState,
    kind: Kind,
    start: i64,
    end: i64,
    archived: Option<Result<Vec<serde_json::Value>, String>>,
) -> Report {
    let slos = st.slos();
    let tuning = kind == Kind::AlertTuning;
    let alert_rules = if tuning {
        st.rules()
            .groups()
            .iter()
            .flat_map(|g| g.rules.iter())
            .filter(|r| matches!(r.rule.kind, crate::rules::file::RuleKind::Alerting { .. }))
            .map(|r| r.rule.name.clone())
            .collect()
    } else {
        Vec::new()
    };
    let mut incidents = if tuning || kind == Kind::Incidents {
        st.alerts.incidents("all")
    } else {
        Vec::new()
    };
    let mut archive_note = None;
    match archived {
        Some(Ok(a)) => incidents = crate::forward::clickhouse::incidents::merge(incidents, a),
        Some(Err(e)) => {
            archive_note = Some(format!(
                "The incident archive in ClickHouse could not be read ({e}): incidents resolved \
                 more than 7 days ago are missing."
            ))
        }
        None => {}
    }
    let remediations = if kind == Kind::Incidents {
        st.remediation
            .remediations(&crate::remediate::driver::RemediationFilter::default())
    } else {
        Vec::new()
    };
    let inputs = Inputs {
        engine: &st.engine,
        slos: &slos,
        incidents,
        remediations,
        silences: if tuning {
            st.alerts
                .silences(&crate::alerting::apiquery::SilenceQuery::all())
        } else {
            Vec::new()
        },
        alert_rules,
        archive_note,
    };
    crate::report::make(kind, &inputs, start, end, now_ms())
}

/// Incidents the aggregator no longer holds may be in the ClickHouse archive: read when the
/// range reaches back past what it keeps (7 days after resolution).
async fn archived(
    st: &ApiState,
    kind: Kind,
    start: i64,
    end: i64,
) -> Option<Result<Vec<serde_json::Value>, String>> {
    let archive = st.forward.incident_archive()?;
    let reads = matches!(kind, Kind::Incidents | Kind::AlertTuning);
    if !reads || start >= now_ms() - 7 * 86_400_000 {
        return None;
    }
    Some(archive.read(start, end).await.map_err(|e| e.to_string()))
}

/// A report in the format asked for (`json`, `md` or `html`).
fn formatted(r: &Report, format: Option<&str>) -> Result<Response, ApiError> {
    match format.unwrap_or("json") {
        "json" => Ok(success(json!({
            "report": r.meta(), "summary": r.summary, "sections": r.sections,
        }))),
        "md" | "markdown" => Ok((
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            render::markdown(r),
        )
            .into_response()),
        "html" => Ok((
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            render::html(r),
        )
            .into_response()),
        other => Err(ApiError::bad_data(format!(
            "invalid parameter \"format\": {other:?} (json, md or html)"
        ))),
    }
}

/// `kind`, and the range: `end` (default now) and `range` (default 7d) before it.
fn request(p: &Params) -> Result<(Kind, i64, i64), ApiError> {
    let kind = Kind::parse(p.required("kind")?).map_err(|e| ApiError::bad_data(e.0))?;
    let end = match p.get("end") {
        Some(s) => parse_time(s)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"end\": {e}")))?,
        None => now_ms(),
    };
    let range = match p.get("range") {
        Some(s) => parse_step(s)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"range\": {e}")))?,
        None => 7 * 86_400_000,
    };
    if !(60_000..=400 * 86_400_000).contains(&range) {
        return Err(ApiError::bad_data(
            "invalid parameter \"range\": from 1m to 400d",
        ));
    }
    Ok((kind, end.saturating_sub(range), end))
}

async fn made(st: Arc<ApiState>, kind: Kind, start: i64, end: i64) -> Result<Report, ApiError> {
    let old = archived(&st, kind, start, end).await;
    tokio::task::spawn_blocking(move || make(&st, kind, start, end, old))
        .await
        .map_err(|e| ApiError::internal(format!("the report stopped: {e}")))
}

async fn render_now(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &[]);
    let (kind, start, end) = request(&p)?;
    let r = made(st, kind, start, end).await?;
    formatted(&r, p.get("format"))
}

async fn list(State(st): St) -> Response {
    let list: Vec<_> = st.reports.list().iter().map(Report::meta).collect();
    success(json!({ "reports": list }))
}

async fn one(
    State(st): St,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &[]);
    let r = id
        .parse::<u64>()
        .ok()
        .and_then(|id| st.reports.get(id))
        .ok_or_else(|| ApiError::not_found(format!("no report {id:?}")))?;
    formatted(&r, p.get("format"))
}

/// Keeps `r` and delivers it to `receivers`; the kept report.
async fn keep_and_deliver(
    st: &ApiState,
    r: Report,
    receivers: &[String],
) -> Result<Report, ApiError> {
    let store = st.reports.clone();
    let r = tokio::task::spawn_blocking(move || store.keep(r))
        .await
        .map_err(|e| ApiError::internal(format!("the report stopped: {e}")))?
        .map_err(|e| ApiError::internal(format!("cannot keep the report: {e}")))?;
    let payload = r.payload();
    for rc in receivers {
        st.alerts
            .deliver_report(rc, payload.clone())
            .await
            .map_err(|e| ApiError::bad_data(e.to_string()))?;
    }
    Ok(r)
}

async fn create(State(st): St, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &[]);
    let (kind, start, end) = request(&p)?;
    let receivers: Vec<String> = p.all("receiver").into_iter().map(String::from).collect();
    let routing_knows = |r: &String| st.alerts.knows_receiver(r);
    if let Some(r) = receivers.iter().find(|r| !routing_knows(r)) {
        return Err(ApiError::bad_data(format!(
            "no receiver {r:?} in the routing file"
        )));
    }
    let r = made(st.clone(), kind, start, end).await?;
    let r = keep_and_deliver(&st, r, &receivers).await?;
    Ok(success(r.meta()))
}

/// Makes the scheduled reports when due, forever; a run missed while the aggregator was
/// down is made at start (unless kept already).
pub async fn run_schedules(st: Arc<ApiState>, schedules: Vec<Schedule>) {
    if schedules.is_empty() {
        return;
    }
    loop {
        let now = now_ms();
        let kept = st.reports.list();
        let mut failed = false;
        for s in &schedules {
            let due = s.last_due(now);
            let done = kept.iter().any(|r| r.schedule == s.name && r.end_ms == due);
            if done {
                continue;
            }
            let start = due - s.range.as_millis() as i64;
            let mut r = match made(st.clone(), s.kind, start, due).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(schedule = %s.name, error = ?e, "scheduled report failed");
                    failed = true;
                    continue;
                }
            };
            r.schedule = s.name.clone();
            match keep_and_deliver(&st, r, &s.receivers).await {
                Ok(r) => tracing::info!(schedule = %s.name, id = r.id, "report made"),
                Err(e) => {
                    failed = true;
                    tracing::error!(schedule = %s.name, error = ?e, "scheduled report not kept or delivered");
                }
            }
        }
        let next = schedules
            .iter()
            .map(|s| s.next_due(now))
            .min()
            .unwrap_or(now + 3_600_000);
        // A failure (a full disk) is tried again in a minute.
        let cap = if failed { 60_000 } else { 3_600_000 };
        let wait = (next - now_ms()).clamp(1000, cap) as u64;
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// The routes of this module.
pub fn routes(r: Router<Arc<ApiState>>) -> Router<Arc<ApiState>> {
    r.route("/api/v1/reports", get(list).post(create))
        .route("/api/v1/reports/render", get(render_now))
        .route("/api/v1/reports/{id}", get(one))
}
