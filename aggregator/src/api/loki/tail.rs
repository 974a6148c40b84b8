//! `GET /loki/api/v1/tail` (WebSocket): live tailing as Loki serves it to Grafana's live
//! mode and `logcli --tail`. The query is a log query (selector and pipeline); the answer is
//! first the last `limit` lines since `start` (default: the hour before), oldest first, then
//! every matching line as it is stored, in messages of Loki's shape:
//! `{"streams": [{"stream": {labels}, "values": [["<ns>", "<line>"]]}]}`. `delay_for`
//! (seconds, at most 5) gathers lines that long before each message. A tail that falls behind
//! the stored lines misses some rather than holding ingest up (it is told, in
//! `dropped_entries`, how many appends it missed). At most [`MAX_TAILS`] tails at once.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use telltale_common::model::Labels;
use tokio::sync::broadcast::error::RecvError;

use super::{
    LokiError, Params, St, bad, blocking, duration_param, labels_json, limit_of, limits, now_ns,
    query_of, time_ns,
};
use crate::logs::logql::eval::{self, Direction};
use crate::logs::logql::{LogExpr, Query};

/// Tails served at once (Loki's `max_concurrent_tail_requests` default).
pub const MAX_TAILS: usize = 10;
/// Entries in one message.
const MAX_PER_MESSAGE: usize = 5000;

static TAILS: AtomicUsize = AtomicUsize::new(0);

/// Frees a tail's place when it ends.
struct Place;

impl Drop for Place {
    fn drop(&mut self) {
        TAILS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The handler: checks the request, then upgrades.
pub(super) async fn tail(
    State(st): St,
    q: RawQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, LokiError> {
    let p = Params::parse(q.0.as_deref(), &[]);
    let Query::Log(expr) = query_of(&p)? else {
        return Err(bad("tail needs a log query, not a metric query"));
    };
    let limit = limit_of(&p)?;
    let delay = match p.get("delay_for").filter(|v| !v.is_empty()) {
        Some(v) => Duration::from_nanos(duration_param(v)? as u64),
        None => Duration::ZERO,
    };
    if delay > Duration::from_secs(5) {
        return Err(bad("delay_for can't be greater than 5"));
    }
    let now = now_ns();
    let start = match p.get("start").filter(|v| !v.is_empty()) {
        Some(v) => time_ns(v)?,
        None => now - 3_600_000_000_000,
    };
    if TAILS.fetch_add(1, Ordering::Relaxed) >= MAX_TAILS {
        TAILS.fetch_sub(1, Ordering::Relaxed);
        return Err(LokiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!("max concurrent tail requests limit exceeded ({MAX_TAILS})"),
        ));
    }
    let place = Place;
    Ok(ws
        .on_upgrade(move |socket| async move {
            let _place = place;
            session(socket, st, expr, start, limit, delay).await;
        })
        .into_response())
}

/// One message: entries grouped by their labels after the pipeline.
fn message(entries: Vec<(Labels, i64, String)>, dropped: u64) -> Json {
    let mut by: BTreeMap<Labels, Vec<Json>> = BTreeMap::new();
    for (l, t, line) in entries {
        by.entry(l).or_default().push(json!([t.to_string(), line]));
    }
    let streams: Vec<Json> = by
        .into_iter()
        .map(|(l, values)| json!({"stream": labels_json(&l), "values": values}))
        .collect();
    let mut m = json!({ "streams": streams });
    if dropped > 0 {
        m["dropped_entries"] = json!([{"labels": {}, "timestamp": "0", "missed_appends": dropped}]);
    }
    m
}

async fn send(
    socket: &mut WebSocket,
    mut entries: Vec<(Labels, i64, String)>,
    dropped: u64,
) -> bool {
    if entries.is_empty() && dropped == 0 {
        return true;
    }
    let mut dropped = dropped;
    loop {
        let rest = entries.split_off(entries.len().min(MAX_PER_MESSAGE));
        let text = message(std::mem::take(&mut entries), dropped).to_string();
        dropped = 0;
        if socket.send(Message::Text(text.into())).await.is_err() {
            return false;
        }
        if rest.is_empty() {
            return true;
        }
        entries = rest;
    }
}

async fn session(
    mut socket: WebSocket,
    st: std::sync::Arc<super::ApiState>,
    expr: LogExpr,
    start: i64,
    limit: usize,
    delay: Duration,
) {
    // Subscribed before the history is read: no line falls between the two.
    let mut rx = st.live_logs.subscribe();
    let hist_end = now_ns();
    let (store, lim, e) = (st.logs.clone(), limits(&st), expr.clone());
    let history = blocking(move || {
        eval::select_logs(
            store.as_ref(),
            &e,
            start,
            hist_end.saturating_add(1),
            limit,
            Direction::Backward,
            &lim,
        )
        .map_err(LokiError::from)
    })
    .await;
    let history = match history {
        Ok(h) => h,
        Err(e) => {
            let _ = socket
                .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                    code: 1011,
                    reason: e.1.into(),
                })))
                .await;
            return;
        }
    };
    let mut first: Vec<(Labels, i64, String)> = history
        .into_iter()
        .flat_map(|s| {
            let l = s.labels;
            s.entries
                .into_iter()
                .map(move |(t, line)| (l.clone(), t, line))
        })
        .collect();
    first.sort_by_key(|x| x.1);
    // Lines both read and broadcast (stored while the history was read: the appends already
    // queued now) are sent once.
    let mut overlap = rx.len();
    let mut sent: HashSet<(i64, String)> = first.iter().map(|x| (x.1, x.2.clone())).collect();
    if !send(&mut socket, first, 0).await {
        return;
    }
    loop {
        let got = tokio::select! {
            m = socket.recv() => match m {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
            got = rx.recv() => got,
        };
        let mut jobs = Vec::new();
        let mut dropped = 0;
        match got {
            Ok(j) => jobs.push(j),
            Err(RecvError::Lagged(n)) => dropped += n,
            Err(RecvError::Closed) => return,
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        loop {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => dropped += n,
                Err(_) => break,
            }
        }
        let mut out = Vec::new();
        for job in &jobs {
            let early = overlap > 0;
            overlap = overlap.saturating_sub(1);
            for (labels, lines) in job.iter() {
                if !expr.matchers.iter().all(|m| m.matches_labels(labels)) {
                    continue;
                }
                for (t, line) in lines {
                    if early && *t <= hist_end && sent.contains(&(*t, line.clone())) {
                        continue;
                    }
                    if let Some((l, text)) = eval::pipeline(&expr, labels, line) {
                        out.push((l, *t, text));
                    }
                }
            }
        }
        if dropped > 0 {
            tracing::warn!(missed_appends = dropped, "a live tail fell behind");
        }
        if overlap == 0 && !sent.is_empty() {
            sent = HashSet::new();
        }
        if !send(&mut socket, out, dropped).await {
            return;
        }
    }
}
