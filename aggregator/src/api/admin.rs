//! Prometheus' TSDB admin endpoints, each behind the state-changing token: `flush`,
//! `snapshot`, `delete_series` and `clean_tombstones` (see the storage engine's
//! `tombstones` module for what a deletion means).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value as Json, json};

use super::{ApiError, ApiState, St, authorize, params, range_params, selectors, success};
use crate::metrics::storage::StorageError;

/// Runs a blocking storage call off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `POST /api/v1/admin/tsdb/flush` (token): cuts the head into a block and compacts closed
/// windows now, then answers `{"status":"success"}`.
async fn flush(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&st, peer, &headers)?;
    let storage = st.storage.clone();
    blocking(move || storage.flush()).await?;
    Ok(success(Json::Null))
}

/// `POST /api/v1/admin/tsdb/snapshot[?skip_head=true]` (token): Prometheus' snapshot; answers
/// `{"name": …}`, the directory under `<data dir>/snapshots/`.
async fn snapshot(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    q: RawQuery,
) -> Result<Response, ApiError> {
    authorize(&st, peer, &headers)?;
    let p = params(&q, &Bytes::new());
    let skip_head = match p.get("skip_head") {
        None | Some("false") => false,
        Some("true") => true,
        Some(o) => {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"skip_head\": {o:?} (true or false)"
            )));
        }
    };
    let storage = st.storage.clone();
    let name = blocking(move || storage.snapshot(skip_head)).await?;
    Ok(success(json!({ "name": name })))
}

/// `POST|PUT /api/v1/admin/tsdb/delete_series?match[]=…[&start=…][&end=…]` (token):
/// Prometheus' deletion. At least one `match[]`; `start` and `end` default to all time (the
/// end is clamped to now: what is stored is deleted, not what arrives next). Answers 204
/// once the deletion is on disk; queries stop seeing the samples at once.
async fn delete_series(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    q: RawQuery,
) -> Result<Response, ApiError> {
    authorize(&st, peer, &headers)?;
    let p = params(&q, &Bytes::new());
    let sets = selectors(&p, true)?;
    let (start, end) = range_params(&p)?;
    if start > end {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": before \"start\"",
        ));
    }
    let storage = st.storage.clone();
    let n = blocking(move || {
        let mut n = 0;
        for m in &sets {
            n += storage.delete_series(m, start, end)?;
        }
        Ok(n)
    })
    .await?;
    tracing::info!(series = n, "delete_series");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST|PUT /api/v1/admin/tsdb/clean_tombstones` (token): rewrites the blocks holding deleted
/// samples and forgets the deletions applied; 204 when done.
async fn clean_tombstones(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&st, peer, &headers)?;
    let storage = st.storage.clone();
    blocking(move || storage.clean_tombstones()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The admin routes.
pub fn routes(r: Router<Arc<ApiState>>) -> Router<Arc<ApiState>> {
    r.route("/api/v1/admin/tsdb/flush", post(flush))
        .route("/api/v1/admin/tsdb/snapshot", post(snapshot))
        .route(
            "/api/v1/admin/tsdb/delete_series",
            post(delete_series).put(delete_series),
        )
        .route(
            "/api/v1/admin/tsdb/clean_tombstones",
            post(clean_tombstones).put(clean_tombstones),
        )
}
