//! `/api/v1/anomaly`: the anomaly detectors in force and their state.

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::routing::get;
use serde_json::json;

use super::params::{Params, parse_step};
use super::{ApiError, St, success};
use crate::anomaly::forecast;

async fn detectors(State(st): St) -> axum::response::Response {
    let anomaly = st.anomaly();
    let budget = anomaly.budget();
    let list: Vec<serde_json::Value> = anomaly
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
                "reservedBytes": v.reserved,
                "skippedSeries": v.skipped,
                "overBudgetSeries": v.over_budget,
                "historyPoints": v.warm_points,
                "lastEvaluation": v.last_eval_ms as f64 / 1000.0,
                "evaluationSeconds": v.eval_seconds,
                "health": if v.last_eval_ms == 0 { "unknown" } else if v.last_error.is_empty() { "ok" } else { "err" },
                "lastError": v.last_error,
            })
        })
        .collect();
    success(json!({
        "detectors": list,
        "budget": {"bytes": budget.limit(), "reservedBytes": budget.reserved()},
    }))
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
    // Bounded so that no time computed from them can overflow (times are within ±2^61 ms).
    const CENTURY_MS: i64 = 100 * 366 * 86_400_000;
    if [step, history, horizon, season]
        .iter()
        .any(|d| *d > CENTURY_MS)
    {
        return Err(ApiError::bad_data(
            "step, history, horizon and season must be at most 100 years",
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
    let start = t.saturating_sub(history / step * step);
    let engine = st.engine.clone();
    let (m, h) = ((season / step) as usize, (horizon / step).max(1) as usize);
    // The fits run beside the query, off the async workers, under the query's time limit:
    // 54 candidates × up to 5 runs over every series' history is real CPU.
    let out =
        tokio::task::spawn_blocking(move || fit_all(&engine, &query, start, t, step, m, h, limit))
            .await
            .map_err(|e| ApiError::bad_data(format!("forecast stopped: {e}")))??;
    Ok(success(json!(out)))
}

/// Forecast points answered at most (series × horizon steps): the answer is built in memory.
const MAX_FORECAST_POINTS: usize = 5_000_000;

/// Refuses an answer of more than [`MAX_FORECAST_POINTS`] points.
fn within_answer_bound(series: usize, h: usize) -> Result<(), ApiError> {
    if series.saturating_mul(h) > MAX_FORECAST_POINTS {
        return Err(ApiError::bad_data(format!(
            "{series} series × {h} forecast steps is over {MAX_FORECAST_POINTS} points: narrow the query or use a larger step"
        )));
    }
    Ok(())
}

/// A forecast point as Prometheus writes a sample: `[seconds, "value"]`, the value as
/// PromQL formats it (`+Inf`, not Rust's `inf`: a trend past the largest float overflows).
fn point(t_ms: i64, v: f64) -> serde_json::Value {
    json!([
        t_ms as f64 / 1000.0,
        crate::metrics::promql::format::format_sample(v)
    ])
}

/// The forecast of every series `query` gives over `start..=t`, as the answer's list.
#[allow(clippy::too_many_arguments)]
fn fit_all(
    engine: &crate::metrics::promql::Engine,
    query: &str,
    start: i64,
    t: i64,
    step: i64,
    m: usize,
    h: usize,
    limit: Option<f64>,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let began = std::time::Instant::now();
    let series = engine.range(query, start, t, step)?;
    within_answer_bound(series.len(), h)?;
    let mut out = Vec::new();
    for s in series {
        if let Some(limit) = engine.timeout()
            && began.elapsed() > limit
        {
            return Err(crate::metrics::promql::QueryError::Timeout("forecast fitting").into());
        }
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
            .map(|i| point(t + i as i64 * step, fit.at(i)))
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
    Ok(out)
}

/// The routes of this module.
pub fn routes(
    r: Router<std::sync::Arc<super::ApiState>>,
) -> Router<std::sync::Arc<super::ApiState>> {
    r.route("/api/v1/anomaly", get(detectors))
        .route("/api/v1/forecast", get(forecast).post(forecast))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_over_the_point_bound_is_refused_by_name() {
        assert!(within_answer_bound(500, 10_000).is_ok());
        assert!(within_answer_bound(0, usize::MAX).is_ok());
        let e = within_answer_bound(501, 10_000).expect_err("over");
        assert!(format!("{e:?}").contains("501 series"), "{e:?}");
        assert!(within_answer_bound(usize::MAX, 2).is_err());
    }

    #[test]
    fn forecast_points_are_written_as_prometheus_writes_samples() {
        assert_eq!(point(1_500, 0.25), json!([1.5, "0.25"]));
        assert_eq!(point(0, f64::INFINITY), json!([0.0, "+Inf"]));
        assert_eq!(point(0, f64::NEG_INFINITY), json!([0.0, "-Inf"]));
        // A steep rise near the largest float: the forecast overflows, and reads as +Inf.
        let rising: Vec<f64> = (0..40)
            .map(|i| f64::MAX / 2.0 + f64::from(i) * 1e306)
            .collect();
        let fit = forecast::fit_for(&rising, 0, 10_000).expect("fits");
        assert_eq!(point(0, fit.at(10_000)), json!([0.0, "+Inf"]));
    }
}
