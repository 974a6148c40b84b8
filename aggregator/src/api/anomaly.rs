//! `/api/v1/anomaly`: the anomaly detectors in force and their state.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::json;

use super::{St, success};

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

/// The routes of this module.
pub fn routes(
    r: Router<std::sync::Arc<super::ApiState>>,
) -> Router<std::sync::Arc<super::ApiState>> {
    r.route("/api/v1/anomaly", get(detectors))
}
