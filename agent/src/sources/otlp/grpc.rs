//! OTLP/gRPC: the `opentelemetry.proto.collector.trace.v1.TraceService/Export` and
//! `...logs.v1.LogsService/Export` unary calls over HTTP/2 (h2c, loopback), framed as gRPC frames it (a compressed flag, a 4-byte
//! length, the message; gzip when `grpc-encoding: gzip`). The answer is HTTP 200 with the
//! `ExportTraceServiceResponse` and the status in trailers: `grpc-status: 0`, or 3
//! (INVALID_ARGUMENT: malformed), 8 (RESOURCE_EXHAUSTED: over the size limit), 12
//! (UNIMPLEMENTED: another method or encoding) or 14 (UNAVAILABLE: the buffer refused logs) with a `grpc-message` saying what is wrong.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use telltale_common::otlp::{self, Format};

use super::{Refusal, Shared, Signal, gunzip, ingest, ingest_logs, ingest_metrics};

/// The trace service's method.
pub const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The logs service's method.
pub const EXPORT_LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
/// The metrics service's method.
pub const EXPORT_METRICS: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

type Trailers = std::future::Ready<Option<Result<HeaderMap, Infallible>>>;
/// A gRPC answer: one message (or none) and the status in trailers.
pub type GrpcBody =
    http_body_util::combinators::WithTrailers<http_body_util::Full<Bytes>, Trailers>;

/// `grpc-message` is percent-encoded: printable ASCII but `%` as is, the rest as `%XX`.
fn percent(m: &str) -> String {
    let mut out = String::with_capacity(m.len());
    for b in m.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn reply(message: Option<Vec<u8>>, code: u32, error: &str) -> Response<GrpcBody> {
    let body = match message {
        Some(m) => {
            let mut framed = Vec::with_capacity(5 + m.len());
            framed.push(0);
            framed.extend_from_slice(&(m.len() as u32).to_be_bytes());
            framed.extend_from_slice(&m);
            Bytes::from(framed)
        }
        None => Bytes::new(),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent(error))
        && !error.is_empty()
    {
        trailers.insert("grpc-message", v);
    }
    let mut r = Response::new(
        http_body_util::Full::new(body).with_trailers(std::future::ready(Some(Ok(trailers)))),
    );
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    r
}

fn refuse(sh: &Shared, code: u32, error: &str) -> Response<GrpcBody> {
    sh.stats.refused.fetch_add(1, Ordering::Relaxed);
    reply(None, code, error)
}

/// Serves one gRPC request.
pub async fn handle(sh: Arc<Shared>, req: Request<Incoming>) -> Response<GrpcBody> {
    let signal = match req.uri().path() {
        EXPORT => Signal::Traces,
        EXPORT_LOGS => Signal::Logs,
        EXPORT_METRICS => Signal::Metrics,
        other => {
            return refuse(
                &sh,
                12,
                &format!("{other}: this agent serves {EXPORT}, {EXPORT_LOGS} and {EXPORT_METRICS}"),
            );
        }
    };
    let is_grpc = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !is_grpc {
        return refuse(&sh, 3, "content-type must be application/grpc");
    }
    let encoding = req
        .headers()
        .get("grpc-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .to_string();
    let body = match http_body_util::Limited::new(req.into_body(), otlp::MAX_BODY_BYTES + 5)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return refuse(&sh, 8, &e.to_string()),
    };
    if body.len() < 5 {
        return refuse(&sh, 3, "a gRPC message needs its 5-byte prefix");
    }
    let compressed = body[0];
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let message = &body[5..];
    if compressed > 1 || len != message.len() {
        return refuse(
            &sh,
            3,
            &format!(
                "gRPC frame says {len} bytes (compressed flag {compressed}), {} follow",
                message.len()
            ),
        );
    }
    let inflated;
    let message: &[u8] = match (compressed, encoding.as_str()) {
        (0, _) => message,
        (_, "gzip") => match gunzip(message) {
            Ok(b) => {
                inflated = b;
                &inflated
            }
            Err((status, m)) => {
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    8
                } else {
                    3
                };
                return refuse(&sh, code, &m);
            }
        },
        (_, other) => {
            return refuse(
                &sh,
                12,
                &format!("grpc-encoding {other:?}: send gzip or identity"),
            );
        }
    };
    let done = match signal {
        Signal::Traces => ingest(&sh, message, Format::Protobuf).await,
        Signal::Logs => ingest_logs(&sh, message, Format::Protobuf).await,
        Signal::Metrics => ingest_metrics(&sh, message, Format::Protobuf).await,
    };
    match done {
        Ok(answer) => {
            sh.stats.requests.fetch_add(1, Ordering::Relaxed);
            reply(Some(answer), 0, "")
        }
        Err((Refusal::Malformed, m)) => refuse(&sh, 3, &m),
        Err((Refusal::Unavailable, m)) => refuse(&sh, 14, &m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(percent("bad id: 100%"), "bad id: 100%25");
        assert_eq!(percent("é\n"), "%C3%A9%0A");
    }
}
