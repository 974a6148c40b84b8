//! Loki's push API on the agent (`[[log]]` with `type = "loki"`): `POST /loki/api/v1/push` on
//! the source's `listen` address, protobuf + snappy or JSON (the format and its checks are
//! `telltale_common::lokipush`, the aggregator's too), so Promtail, Alloy or Fluent Bit
//! configurations work by pointing their URL at the agent. A push is answered 204 once its
//! lines are in the agent's buffer (durable), 400 naming what is wrong otherwise, 503 when the
//! buffer refuses it (the sender retries, as it does with Loki).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use telltale_common::lokipush;
use tokio::sync::watch;

use super::logbatch::{Admission, Gate, LogBatcher, cut_line};
use super::logfile::LogStats;
use super::logparse;
use crate::pipeline::logsink::LogSink;

/// A validated Loki push source.
#[derive(Debug, Clone)]
pub struct LokiSource {
    /// The `source` label.
    pub name: String,
    /// Where to listen (HTTP).
    pub listen: SocketAddr,
    /// Static labels.
    pub labels: Vec<(String, String)>,
    /// Longer lines are cut (and counted).
    pub max_line_bytes: usize,
    /// Rate limit and counters.
    pub admission: Admission,
}

type Body = http_body_util::Full<hyper::body::Bytes>;

fn answer(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("{text}\n")));
    *r.status_mut() = status;
    r
}

struct Ctx {
    cfg: LokiSource,
    sink: Arc<dyn LogSink>,
    stats: Arc<LogStats>,
    gate: Mutex<Gate>,
}

async fn handle(ctx: Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/ready") => return answer(StatusCode::OK, "ready"),
        ("POST", "/loki/api/v1/push") => {}
        _ => return answer(StatusCode::NOT_FOUND, "not found: POST /loki/api/v1/push"),
    }
    let json = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if req.headers().contains_key(hyper::header::CONTENT_ENCODING) {
        return answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Encoding is not supported: send protobuf with snappy, or plain JSON",
        );
    }
    let body = match http_body_util::Limited::new(req.into_body(), lokipush::MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return answer(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
    };
    let streams = match if json {
        lokipush::decode_json(&body)
    } else {
        lokipush::decode_protobuf(&body)
    } {
        Ok(s) => s,
        Err(e) => {
            ctx.stats.malformed.fetch_add(1, Ordering::Relaxed);
            return answer(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let cfg = &ctx.cfg;
    let mut batch = LogBatcher::default();
    for s in streams {
        for mut e in s.entries {
            ctx.stats.lines.fetch_add(1, Ordering::Relaxed);
            ctx.stats
                .bytes
                .fetch_add(e.line.len() as u64, Ordering::Relaxed);
            if cut_line(&mut e.line, cfg.max_line_bytes) {
                ctx.stats.cut.fetch_add(1, Ordering::Relaxed);
            }
            // A pushed `level` label is kept; otherwise the line says.
            let level = s
                .labels
                .iter()
                .find(|(k, _)| k == "level")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| logparse::level(&e.metadata, &e.line).to_string());
            let lvl: &'static str = match level.as_str() {
                "error" => "error",
                "warn" => "warn",
                "info" => "info",
                "debug" => "debug",
                _ => "unknown",
            };
            let admitted = ctx
                .gate
                .lock()
                .map(|mut g| g.admit(&ctx.stats.counts, lvl, &e.line))
                .unwrap_or(true);
            if !admitted {
                continue;
            }
            // The sender's labels, then the source's own; `source` and `instance` are the
            // agent's to say.
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .filter(|(k, _)| k != "source" && k != "instance")
                .cloned()
                .collect();
            labels.extend(cfg.labels.iter().cloned());
            labels.push(("source".into(), cfg.name.clone()));
            if !labels.iter().any(|(k, _)| k == "level") {
                labels.push(("level".into(), lvl.into()));
            }
            batch.add(labels, e);
        }
    }
    if batch.is_empty() {
        return answer(StatusCode::NO_CONTENT, "");
    }
    let b = super::logbatch::batch_of(batch.take());
    match ctx.sink.store(b, Vec::new(), Vec::new()).await {
        Ok(()) => answer(StatusCode::NO_CONTENT, ""),
        Err(e) => {
            ctx.stats.errors.fetch_add(1, Ordering::Relaxed);
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("cannot buffer: {e}"),
            )
        }
    }
}

/// Runs a Loki push source until `stop`.
pub async fn run(
    cfg: LokiSource,
    sink: Arc<dyn LogSink>,
    stats: Arc<LogStats>,
    mut stop: watch::Receiver<bool>,
) {
    let tcp = match tokio::net::TcpListener::bind(cfg.listen).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(source = %cfg.name, listen = %cfg.listen, error = %e, "cannot listen for Loki pushes; running without this source");
            return;
        }
    };
    tracing::info!(source = %cfg.name, listen = %cfg.listen, "loki push listener started");
    let ctx = Arc::new(Ctx {
        gate: Mutex::new(Gate::new(&cfg.name, cfg.admission.clone())),
        cfg,
        sink,
        stats,
    });
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            a = tcp.accept() => {
                if let Ok((s, _)) = a && conns.len() < 256 {
                    super::serve_http1(&mut conns, s, (ctx.clone(), super::HEADER_TIMEOUT), handle);
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = stop.changed() => return,
        }
    }
}
