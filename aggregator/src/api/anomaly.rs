//! `/api/v1/anomaly`: the anomaly detectors in force and their state.

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::routing::get;
use serde_json::json;

use super::params::{Params, parse_step};
use super::{ApiError, St, success};
use crate::anomaly::forecast;

async fn detectors(State(st): St) -> axum::response::Response {
    let list: Vec<serde_json::Value> = st
        .anomaly()
        .views()
        .into_iter()
        .map(|v| {
            json!({
                "name": v.name,
                "query": v.query,
                "method": v.method,
                "file": v.file,
                "intervalSeconds": v.interval_seconds,
                "threshold": v.threshold,
                "series": v.series,
                "modelBytes": v.bytes,
                "skippedSeries": v.skipped,
                "historyPoints": v.warm_points,
                "lastEvaluation": v.last_eval_ms as f64 / 1000.0,
                "evaluationSeconds": v.eval_seconds,
                "health": if v.last_eval_ms == 0 { "unknown" } else if v.last_error.is_empty() { "ok" } else { "err" },
                "lastError": v.last_error,
            })
        })
        .collect();
    success(json!({ "detectors": list }))
}

/// `/api/v1/forecast?query=&history=7d&step=5m&horizon=1d&season=1d[&limit=][&time=]`:
/// Holt-Winters fitted per series of `query` over `history` before `time` (default now) at
/// `step`, the forecast over `horizon`, and with `limit` the seconds until it is reached
/// (`null` when not within the horizon). A query over rollups (`avg_over_time(x[1h])` at a
/// step of 1h) reads months of history cheaply.
async fn forecast(
    State(st): St,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    let p = Params::parse(q.as_deref(), &body);
    let query = p.required("query")?.to_string();
    let dur = |key: &str, default: i64| -> Result<i64, ApiError> {
        match p.get(key) {
            None => Ok(default),
            Some(s) => parse_step(s)
                .map_err(|e| ApiError::bad_data(format!("invalid parameter {key:?}: {e}"))),
        }
    };
    let step = dur("step", 300_000)?.max(1000);
    let history = dur("history", 7 * 86_400_000)?;
    let horizon = dur("horizon", 86_400_000)?;
    let season = match p.get("season") {
        Some("0") | Some("none") => 0,
        _ => dur("season", 86_400_000)?,
    };
    if history <= 0 || horizon <= 0 || season < 0 {
        return Err(ApiError::bad_data(
            "history, horizon and season must be positive durations",
        ));
    }
    if history / step > 50_000 || horizon / step > 10_000 {
        return Err(ApiError::bad_data(
            "history over 50 000 steps or horizon over 10 000 steps: use a larger step",
        ));
    }
    let limit = match p.get("limit") {
        None => None,
        Some(s) => Some(
            s.parse::<f64>()
                .map_err(|e| ApiError::bad_data(format!("invalid parameter \"limit\": {e}")))?,
        ),
    };
    let now = telltale_common::model::now_ms();
    let t = p.time_or("time", now)? / step * step;
    let start = t - history / step * step;
    let engine = st.engine.clone();
    let series = tokio::task::spawn_blocking(move || engine.range(&query, start, t, step))
        .await
        .map_err(|e| ApiError::bad_data(format!("forecast stopped: {e}")))??;
    let (m, h) = ((season / step) as usize, (horizon / step).max(1) as usize);
    let mut out = Vec::new();
    for s in series {
        let values = forecast::on_grid(&s.samples, start, t, step);
        let Some(fit) = forecast::fit_for(&values, m, h) else {
            continue;
        };
        let metric: serde_json::Map<String, serde_json::Value> = s
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let points: Vec<serde_json::Value> = (1..=h)
            .map(|i| json!([(t + i as i64 * step) as f64 / 1000.0, fit.at(i).to_string()]))
            .collect();
        let until = limit
            .and_then(|l| fit.steps_until(l, h))
            .map(|i| i as f64 * step as f64 / 1000.0);
        out.push(json!({
            "metric": metric,
            "forecast": points,
            "secondsUntilLimit": until,
            "rmse": fit.rmse,
        }));
    }
    Ok(success(json!(out)))
}

/// The routes of this module.
pub fn routes(
    r: Router<std::sync::Arc<super::ApiState>>,
) -> Router<std::sync::Arc<super::ApiState>> {
    r.route("/api/v1/anomaly", get(detectors))
        .route("/api/v1/forecast", get(forecast).post(forecast))
}
