//! Prometheus' exemplar API over the exemplar store.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use super::{ApiError, Params, St, range_params, success};

/// `/api/v1/query_exemplars?query=&start=&end=`: the exemplars of the series every selector
/// of the query names, in Prometheus' shape.
pub async fn query_exemplars(
    State(st): St,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &body);
    let query = p.required("query")?;
    let (start, end) = range_params(&p)?;
    if start > end {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let sets = crate::metrics::promql::query_selectors(query)?;
    if sets.is_empty() {
        // No selector (`1+1`): Prometheus answers 204 No Content.
        return Ok(axum::http::StatusCode::NO_CONTENT.into_response());
    }
    let store = st.exemplars.clone();
    let found = tokio::task::spawn_blocking(move || store.query(&sets, start, end))
        .await
        .unwrap_or_default();
    let data: Vec<Json> = found
        .into_iter()
        .map(|(series, list)| {
            let labels: serde_json::Map<String, Json> = series
                .iter()
                .map(|(k, v)| (k.to_string(), Json::String(v.to_string())))
                .collect();
            let exemplars: Vec<Json> = list
                .into_iter()
                .map(|e| {
                    let el: serde_json::Map<String, Json> = e
                        .labels
                        .into_iter()
                        .map(|(k, v)| (k, Json::String(v)))
                        .collect();
                    json!({
                        "labels": el,
                        "value": crate::metrics::promql::format::format_sample(e.value),
                        "timestamp": e.t_ms as f64 / 1000.0,
                    })
                })
                .collect();
            json!({"seriesLabels": labels, "exemplars": exemplars})
        })
        .collect();
    Ok(success(Json::Array(data)))
}
