//! `POST /api/v1/pool/spans`: spans another member of the trace pool forwards
//! (`[traces.pool]`, see [`crate::forward::pool`]) — those of traces this aggregator samples.
//! A state-changing call: the API token is required (the members share it). The body is a
//! MessagePack array of spans, already stamped with their agent by the member that received
//! them; they are appended as spans from elsewhere (never forwarded again) and answered 204
//! once durable, 400 when the body does not decode, 503 when the store cannot write.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use telltale_common::trace::Span;

use super::{ApiError, ApiState, St, authorize};
use crate::traces::store::SpanAppend;

/// Largest body taken.
const MAX_BODY: usize = 64 << 20;

async fn spans(
    State(st): St,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&st, peer, &headers)?;
    let spans: Vec<Span> = telltale_common::codec::decode_payload(&body)
        .map_err(|e| ApiError::bad_data(format!("malformed pool spans body: {e}")))?;
    if spans.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    match st
        .traces
        .append(SpanAppend {
            origin: None,
            spans,
        })
        .await
    {
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error_type: "unavailable",
            message: format!("cannot store the spans: {e}"),
        }),
    }
}

/// The route.
pub fn routes(r: Router<Arc<ApiState>>) -> Router<Arc<ApiState>> {
    r.route(
        crate::forward::pool::SPANS_PATH,
        post(spans).layer(DefaultBodyLimit::max(MAX_BODY)),
    )
}
