//! `/api/v1/slos`: the SLOs in force and their state (objective, SLI now, error budget left,
//! burn rates over every window, alert states), from the series their rules record.

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::routing::get;
use serde_json::json;

use super::params::{Params, parse_time};
use super::{ApiError, St, success};

async fn slos(State(st): St, RawQuery(q): RawQuery) -> Result<axum::response::Response, ApiError> {
    let p = Params::parse(q.as_deref(), &[]);
    let t = match p.get("time") {
        Some(s) => parse_time(s)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"time\": {e}")))?,
        None => telltale_common::model::now_ms(),
    };
    let slos = st.slos();
    let groups = st.rules().groups();
    let engine = st.engine.clone();
    let list =
        tokio::task::spawn_blocking(move || crate::slo::status::status(&engine, &slos, &groups, t))
            .await
            .map_err(|e| ApiError::internal(format!("the SLO view stopped: {e}")))?;
    Ok(success(json!({ "slos": list })))
}

/// The routes of this module.
pub fn routes(
    r: Router<std::sync::Arc<super::ApiState>>,
) -> Router<std::sync::Arc<super::ApiState>> {
    r.route("/api/v1/slos", get(slos))
}
