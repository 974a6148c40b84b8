//! The OTLP receiver (`[otlp]`, off by default): OTLP/HTTP on `http_listen` (default
//! `127.0.0.1:4318`, where OpenTelemetry SDKs send by default), `POST /v1/traces` with a
//! protobuf or JSON body, plain or gzip, and OTLP/gRPC on `grpc_listen` (default
//! `127.0.0.1:4317`; see `grpc.rs`). Every span that decodes is counted into the RED
//! metrics of [`red`] (before any sampling could drop it), which go out with the agent's
//! other series every interval.
//!
//! `POST /v1/logs` (and gRPC's `LogsService/Export`) hands log records to the agent's log
//! pipeline, buffered and shipped like every other log source's lines (`source="otlp"`);
//! `POST /v1/metrics` (and `MetricsService/Export`) hands series to the metric pipeline.
//!
//! Then every span a per-service rate limit lets through is buffered (in batches of their
//! own, like log lines, so metrics keep priority while a backlog drains) and shipped to the
//! aggregator, which makes every sampling decision where a trace's spans meet (`spans.rs`).
//! The answer comes once they are buffered; spans that were invalid or over the limit are
//! counted in OTLP's partial success (`rejected_spans`, with a message saying why).
//!
//! Answers: 200 with the signal's `Export*ServiceResponse`; 400 with a `google.rpc.Status`
//! naming what is wrong (malformed body); 413 over [`otlp::MAX_BODY_BYTES`] (decompressed);
//! 415 for other content types or encodings; 503 with `Retry-After` (gRPC UNAVAILABLE) while
//! the buffer of log and span batches is over half full, or when it refuses records; 404
//! for other paths. The receiver's own counters are `telltale_agent_otlp_*`.

mod grpc;

pub mod red;
mod spans;

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use telltale_common::lokipush;
use telltale_common::model::{Labels, Sample, SeriesSamples, now_ms};
use telltale_common::otlp::{self, Format};
use telltale_common::trace;
use telltale_common::wire::LogEntry;
use tokio::sync::mpsc;

use super::logbatch::{Admission, Gate, LogBatcher, cut_line};
use super::logfile::LogStats;
use crate::pipeline::SourceBatch;
use crate::pipeline::logsink::LogSink;

/// A validated `[otlp]` section.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// Where OTLP/HTTP is served.
    pub http_listen: SocketAddr,
    /// Where OTLP/gRPC is served.
    pub grpc_listen: SocketAddr,
    /// Most RED label sets (service, span name, kind, status).
    pub max_series: usize,
    /// Most spans a second per service shipped (0: no limit).
    pub max_spans_per_second: u64,
}

/// Most delta series (sums and histograms) whose running totals the receiver keeps; past it
/// new ones are rejected in the partial success (cumulative senders need no state here).
const MAX_DELTA_SERIES: usize = 20_000;

/// The receiver's counters.
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// Requests accepted (traces, logs and metrics).
    pub requests: AtomicU64,
    /// Requests refused whole (malformed, too large, unsupported type or encoding, or a
    /// full buffer).
    pub refused: AtomicU64,
    /// Requests of spans or log records refused (503) because the buffer was full.
    pub backpressure: AtomicU64,
    /// Spans counted into the RED metrics.
    pub spans: AtomicU64,
    /// Spans rejected (invalid ids or times).
    pub rejected: AtomicU64,
    /// Spans dropped by the per-service rate limit (after the RED metrics counted them).
    pub dropped: AtomicU64,
    /// Spans buffered for the aggregator.
    pub shipped: AtomicU64,
    /// Metric series samples taken from OTLP metrics.
    pub points: AtomicU64,
    /// Metric data points not converted (delta temporality, exponential histograms...).
    pub points_rejected: AtomicU64,
}

/// What the HTTP and gRPC sides and the flush loop share.
struct Shared {
    red: Mutex<red::Red>,
    stats: OtlpStats,
    /// Where OTLP log records go: the agent's log pipeline.
    logs: Arc<dyn LogSink>,
    /// Where OTLP metrics go: the metric pipeline.
    metrics: mpsc::Sender<SourceBatch>,
    log_stats: Arc<LogStats>,
    gate: Mutex<Gate>,
    /// The per-service span rate limit.
    limit: Mutex<spans::Limit>,
    /// Running totals of OTLP delta sums and histograms (made cumulative here).
    deltas: Mutex<telltale_common::otlp::metrics::Deltas>,
}

type Body = http_body_util::Full<hyper::body::Bytes>;

fn answer(status: StatusCode, format: Format, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(format.content_type()) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A refusal: the status and a `google.rpc.Status` with the gRPC code that matches it.
fn refuse(sh: &Shared, status: StatusCode, format: Format, message: &str) -> Response<Body> {
    sh.stats.refused.fetch_add(1, Ordering::Relaxed);
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => 8, // RESOURCE_EXHAUSTED
        StatusCode::NOT_FOUND => 12,        // UNIMPLEMENTED
        StatusCode::SERVICE_UNAVAILABLE => 14,
        _ => 3, // INVALID_ARGUMENT
    };
    answer(status, format, otlp::encode_status(format, code, message))
}

/// Inflates a gzip body, refusing more than [`otlp::MAX_BODY_BYTES`].
fn gunzip(body: &[u8]) -> Result<Vec<u8>, (StatusCode, String)> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(otlp::MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("gzip body: {e}")))?;
    if out.len() > otlp::MAX_BODY_BYTES {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body larger than {} bytes decompressed",
                otlp::MAX_BODY_BYTES
            ),
        ));
    }
    Ok(out)
}

async fn handle(sh: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header(hyper::header::CONTENT_TYPE);
    let format = Format::from_content_type(&content_type);
    let reply_format = format.unwrap_or(Format::Protobuf);
    let signal = match (req.method().as_str(), req.uri().path()) {
        ("POST", "/v1/traces") => Signal::Traces,
        ("POST", "/v1/logs") => Signal::Logs,
        ("POST", "/v1/metrics") => Signal::Metrics,
        (_, path) => {
            return refuse(
                &sh,
                StatusCode::NOT_FOUND,
                reply_format,
                &format!(
                    "{path}: this agent's OTLP receiver takes POST /v1/traces, /v1/logs and /v1/metrics"
                ),
            );
        }
    };
    let Some(format) = format else {
        return refuse(
            &sh,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            reply_format,
            &format!(
                "Content-Type {content_type:?}: send application/x-protobuf or application/json"
            ),
        );
    };
    let encoding = header(hyper::header::CONTENT_ENCODING);
    if !matches!(encoding.as_str(), "" | "identity" | "gzip") {
        return refuse(
            &sh,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format,
            &format!("Content-Encoding {encoding:?}: send gzip or no encoding"),
        );
    }
    let body = match http_body_util::Limited::new(req.into_body(), otlp::MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return refuse(&sh, StatusCode::PAYLOAD_TOO_LARGE, format, &e.to_string()),
    };
    let inflated;
    let body: &[u8] = if encoding == "gzip" {
        match gunzip(&body) {
            Ok(b) => {
                inflated = b;
                &inflated
            }
            Err((status, m)) => return refuse(&sh, status, format, &m),
        }
    } else {
        &body
    };
    let done = match signal {
        Signal::Traces => ingest(&sh, body, format).await,
        Signal::Logs => ingest_logs(&sh, body, format).await,
        Signal::Metrics => ingest_metrics(&sh, body, format).await,
    };
    match done {
        Ok(reply) => {
            sh.stats.requests.fetch_add(1, Ordering::Relaxed);
            answer(StatusCode::OK, format, reply)
        }
        Err((Refusal::Malformed, m)) => refuse(&sh, StatusCode::BAD_REQUEST, format, &m),
        Err((Refusal::Unavailable, m)) => {
            let mut r = refuse(&sh, StatusCode::SERVICE_UNAVAILABLE, format, &m);
            r.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                hyper::header::HeaderValue::from_static("1"),
            );
            r
        }
    }
}

/// What a request carries.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Traces,
    Logs,
    Metrics,
}

/// Decodes an `ExportMetricsServiceRequest` (protobuf or OTLP/JSON) into series (see
/// `telltale_common::otlp::metrics` for the naming) and hands them to the metric pipeline,
/// like a scrape's; data points it cannot convert are counted in the partial success.
async fn ingest_metrics(
    sh: &Shared,
    body: &[u8],
    format: Format,
) -> Result<Vec<u8>, (Refusal, String)> {
    use telltale_common::otlp::metrics;
    let decoded = {
        let mut deltas = sh.deltas.lock().unwrap_or_else(|e| e.into_inner());
        metrics::decode_metrics(body, format, &mut deltas)
    }
    .map_err(|e| (Refusal::Malformed, e.to_string()))?;
    sh.stats
        .points
        .fetch_add(decoded.series.len() as u64, Ordering::Relaxed);
    sh.stats
        .points_rejected
        .fetch_add(decoded.rejected, Ordering::Relaxed);
    if !decoded.series.is_empty() {
        let batch = SourceBatch {
            exemplars: Vec::new(),
            source: Arc::from("otlp"),
            relabel: Arc::from(Vec::new()),
            series: decoded.series,
            events: Vec::new(),
        };
        if sh.metrics.send(batch).await.is_err() {
            return Err((Refusal::Unavailable, "the agent is stopping".into()));
        }
    }
    Ok(metrics::encode_metrics_response(
        format,
        decoded.rejected,
        decoded.reason.as_deref().unwrap_or(""),
    ))
}

/// Why a decoded request is refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// The body is not the message (HTTP 400, gRPC 3).
    Malformed,
    /// The buffer refused the records (HTTP 503, gRPC 14): the sender retries.
    Unavailable,
}

/// Refuses spans and log records while the buffer of log batches is over half full (the
/// aggregator away or slower than the senders): OTLP senders retry a 503 / UNAVAILABLE
/// with backoff, so the records wait in the application instead of the buffer evicting
/// older ones it has acknowledged. Checked before decoding, so a retried request is not
/// counted twice into the RED metrics.
fn full(sh: &Shared) -> Result<(), (Refusal, String)> {
    if sh.logs.room() {
        return Ok(());
    }
    sh.stats.backpressure.fetch_add(1, Ordering::Relaxed);
    Err((
        Refusal::Unavailable,
        "the agent's buffer is full while the aggregator catches up: retry later".into(),
    ))
}

/// Decodes an `ExportLogsServiceRequest` and hands its records to the log pipeline as one
/// batch (labels `source="otlp"`, `service_name`, `level`; attributes and the trace and span
/// ids as structured metadata, so a line finds its trace); answers once they are buffered.
async fn ingest_logs(
    sh: &Shared,
    body: &[u8],
    format: Format,
) -> Result<Vec<u8>, (Refusal, String)> {
    use telltale_common::otlp::logs;
    full(sh)?;
    let decoded =
        logs::decode_logs(body, format).map_err(|e| (Refusal::Malformed, e.to_string()))?;
    let now = now_ms().saturating_mul(1_000_000);
    let mut batch = LogBatcher::default();
    for r in decoded.records {
        let mut line = r.line;
        let st = &sh.log_stats;
        st.lines.fetch_add(1, Ordering::Relaxed);
        st.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
        if cut_line(&mut line, lokipush::MAX_LINE_BYTES) {
            st.cut.fetch_add(1, Ordering::Relaxed);
        }
        let admitted = sh
            .gate
            .lock()
            .map(|mut g| g.admit(&st.counts, r.level, &line))
            .unwrap_or(true);
        if !admitted {
            continue;
        }
        let mut metadata = r.attributes;
        if let Some(t) = r.trace_id {
            metadata.push(("trace_id".into(), trace::hex(&t)));
        }
        if let Some(s) = r.span_id {
            metadata.push(("span_id".into(), trace::hex(&s)));
        }
        let t_ns = match i64::try_from(r.t_ns) {
            Ok(t) if t > 0 => t,
            _ => now,
        };
        batch.add(
            vec![
                ("source".into(), "otlp".into()),
                ("service_name".into(), r.service),
                ("level".into(), r.level.into()),
            ],
            LogEntry {
                t_ns,
                line,
                metadata,
            },
        );
    }
    if !batch.is_empty() {
        let b = super::logbatch::batch_of(batch.take());
        if let Err(e) = sh.logs.store(b, Vec::new(), Vec::new()).await {
            sh.log_stats.errors.fetch_add(1, Ordering::Relaxed);
            return Err((Refusal::Unavailable, format!("cannot buffer: {e}")));
        }
    }
    Ok(logs::encode_logs_response(format, ""))
}

/// Decodes an `ExportTraceServiceRequest`, counts its spans into the RED metrics, and
/// buffers those the per-service rate limit lets through for the aggregator; returns the
/// `ExportTraceServiceResponse` in `format` once they are buffered (the partial success
/// counts invalid spans and those over the limit), or why the request is refused.
async fn ingest(sh: &Shared, body: &[u8], format: Format) -> Result<Vec<u8>, (Refusal, String)> {
    full(sh)?;
    let decoded =
        otlp::decode_traces(body, format).map_err(|e| (Refusal::Malformed, e.to_string()))?;
    if let Ok(mut red) = sh.red.lock() {
        for s in &decoded.spans {
            red.observe(s);
        }
    }
    let st = &sh.stats;
    st.spans
        .fetch_add(decoded.spans.len() as u64, Ordering::Relaxed);
    st.rejected.fetch_add(decoded.rejected, Ordering::Relaxed);
    let mut message = decoded.reason.unwrap_or_default();
    let mut spans = decoded.spans;
    let before = spans.len();
    if let Ok(mut limit) = sh.limit.lock() {
        limit.admit(&mut spans, std::time::Instant::now());
    }
    let dropped = (before - spans.len()) as u64;
    if dropped > 0 {
        st.dropped.fetch_add(dropped, Ordering::Relaxed);
        if !message.is_empty() {
            message.push_str("; ");
        }
        message.push_str(&format!(
            "{dropped} spans over the agent's per-service rate limit (otlp.max_spans_per_second) were dropped after counting them into the RED metrics"
        ));
    }
    let shipped = spans.len() as u64;
    for batch in spans::batches(spans) {
        if let Err(e) = sh.logs.store(batch, Vec::new(), Vec::new()).await {
            return Err((Refusal::Unavailable, format!("cannot buffer spans: {e}")));
        }
    }
    st.shipped.fetch_add(shipped, Ordering::Relaxed);
    // OTLP's `rejected_spans` counts every span not accepted — invalid ones and those over
    // the limit alike; the SDK does not retry them.
    Ok(otlp::encode_response(
        format,
        decoded.rejected + dropped,
        &message,
    ))
}

/// The receiver's own counters as series.
fn own_series(st: &OtlpStats, overflowed: u64, red_series: usize, t: i64) -> Vec<SeriesSamples> {
    let one = |name: &str, v: f64| SeriesSamples {
        labels: Labels::from_pairs([("__name__", name)]),
        samples: vec![Sample(t, v)],
    };
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    vec![
        one("telltale_agent_otlp_requests_total", n(&st.requests)),
        one("telltale_agent_otlp_requests_refused_total", n(&st.refused)),
        one(
            "telltale_agent_otlp_backpressure_refusals_total",
            n(&st.backpressure),
        ),
        one("telltale_agent_otlp_spans_total", n(&st.spans)),
        one("telltale_agent_otlp_spans_rejected_total", n(&st.rejected)),
        one("telltale_agent_otlp_spans_dropped_total", n(&st.dropped)),
        one("telltale_agent_otlp_spans_shipped_total", n(&st.shipped)),
        one("telltale_agent_otlp_metric_samples_total", n(&st.points)),
        one(
            "telltale_agent_otlp_metric_points_rejected_total",
            n(&st.points_rejected),
        ),
        one(
            "telltale_agent_otlp_red_overflow_spans_total",
            overflowed as f64,
        ),
        one("telltale_agent_otlp_red_series", red_series as f64),
    ]
}

/// Binds `addr` for `what`, or logs why not (the agent runs on without that listener).
async fn bind(addr: SocketAddr, what: &str) -> Option<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(t) => {
            tracing::info!(listen = %addr, "{what} receiver started");
            Some(t)
        }
        Err(e) => {
            tracing::error!(listen = %addr, error = %e, "cannot listen for {what}; running without it");
            None
        }
    }
}

/// Accepts on `l`, or waits forever when there is no listener.
async fn accept(l: &Option<tokio::net::TcpListener>) -> std::io::Result<tokio::net::TcpStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// Serves OTLP/HTTP and OTLP/gRPC and sends the RED metrics every `interval` until the task
/// is stopped.
pub async fn run(
    cfg: OtlpConfig,
    interval: Duration,
    tx: mpsc::Sender<SourceBatch>,
    logs: Arc<dyn LogSink>,
    log_stats: Arc<LogStats>,
) {
    let http = bind(cfg.http_listen, "OTLP/HTTP").await;
    let grpc = bind(cfg.grpc_listen, "OTLP/gRPC").await;
    if http.is_none() && grpc.is_none() {
        return;
    }
    let sh = Arc::new(Shared {
        red: Mutex::new(red::Red::new(cfg.max_series)),
        stats: OtlpStats::default(),
        logs,
        log_stats,
        gate: Mutex::new(Gate::new("otlp", Admission::default())),
        metrics: tx.clone(),
        limit: Mutex::new(spans::Limit::new(cfg.max_spans_per_second, cfg.max_series)),
        deltas: Mutex::new(telltale_common::otlp::metrics::Deltas::new(
            MAX_DELTA_SERIES,
        )),
    });
    // Its own source name, so the per-source series cap ([limits]) counts the RED metrics
    // apart from the OTLP metrics applications send (source "otlp").
    let source: Arc<str> = Arc::from("spanmetrics");
    let relabel: Arc<[crate::pipeline::relabel::Rule]> = Arc::from(Vec::new());
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            a = accept(&http) => {
                if let Ok(s) = a && conns.len() < 256 {
                    super::serve_http1(&mut conns, s, (sh.clone(), super::HEADER_TIMEOUT), handle);
                }
            }
            a = accept(&grpc) => {
                if let Ok(s) = a && conns.len() < 256 {
                    super::serve_http2(&mut conns, s, (sh.clone(), super::HEADER_TIMEOUT), grpc::handle);
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = tick.tick() => {
                let t = now_ms();
                let (mut series, exemplars) = match sh.red.lock() {
                    Ok(mut red) => {
                        let mut s = red.series(t);
                        s.extend(own_series(&sh.stats, red.overflowed, red.series_count(), t));
                        (s, red.take_exemplars())
                    }
                    Err(_) => return,
                };
                series.retain(|s| !s.samples.is_empty());
                let batch = SourceBatch {
                    exemplars,
                    source: source.clone(),
                    relabel: relabel.clone(),
                    series,
                    events: Vec::new(),
                };
                if tx.send(batch).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::logsink::{BoxFuture, SinkError};
    use telltale_common::wire::Batch;

    /// Keeps the batches it is given, or refuses them all; `full` says it has no room.
    #[derive(Default)]
    struct Kept {
        batches: Mutex<Vec<Batch>>,
        refuse: bool,
        full: bool,
    }

    impl LogSink for Kept {
        fn room(&self) -> bool {
            !self.full
        }

        fn position(&self, _: &[u8]) -> Option<Vec<u8>> {
            None
        }

        fn store(
            &self,
            batch: Batch,
            _: Vec<(Vec<u8>, Vec<u8>)>,
            _: Vec<Vec<u8>>,
        ) -> BoxFuture<'_, Result<(), SinkError>> {
            let refused = self.refuse;
            if !refused && let Ok(mut b) = self.batches.lock() {
                b.push(batch);
            }
            Box::pin(async move {
                if refused {
                    Err("disk full".into())
                } else {
                    Ok(())
                }
            })
        }
    }

    fn shared(sink: Arc<Kept>) -> Shared {
        Shared {
            red: Mutex::new(red::Red::new(10)),
            stats: OtlpStats::default(),
            logs: sink,
            log_stats: Arc::new(LogStats::default()),
            gate: Mutex::new(Gate::new("otlp", Admission::default())),
            metrics: mpsc::channel(1).0,
            limit: Mutex::new(spans::Limit::new(0, 10)),
            deltas: Mutex::new(telltale_common::otlp::metrics::Deltas::new(10)),
        }
    }

    /// Log records become lines of the log pipeline with their labels, and the trace and
    /// span ids travel as structured metadata; a refusing buffer is `Unavailable`.
    #[tokio::test]
    async fn otlp_logs_become_lines_with_their_trace_ids() {
        let json = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"billing"}}]},
          "scopeLogs":[{"logRecords":[
            {"timeUnixNano":"1700000000000000000","severityNumber":17,"body":{"stringValue":"card declined"},
             "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
             "attributes":[{"key":"order","value":{"intValue":"7"}}]},
            {"severityText":"INFO","body":{"stringValue":"no time"}}]}]}]}"#;
        let sink = Arc::new(Kept::default());
        let sh = shared(sink.clone());
        let reply = ingest_logs(&sh, json.as_bytes(), Format::Json)
            .await
            .expect("accepted");
        assert_eq!(reply, b"{}");
        let streams = sink.batches.lock().expect("lock")[0].logs.clone();
        let find = |level: &str| {
            streams
                .iter()
                .find(|s| s.labels.iter().any(|(k, v)| k == "level" && v == level))
                .expect("a stream")
        };
        let err = find("error");
        for want in [("source", "otlp"), ("service_name", "billing")] {
            assert!(
                err.labels
                    .iter()
                    .any(|(k, v)| (k.as_str(), v.as_str()) == want),
                "{:?}",
                err.labels
            );
        }
        let e = &err.entries[0];
        assert_eq!(e.line, "card declined");
        assert_eq!(e.t_ns, 1_700_000_000_000_000_000);
        for want in [
            ("order", "7"),
            ("trace_id", "5b8efff798038103d269b633813fc60c"),
            ("span_id", "eee19b7ec3c1b174"),
        ] {
            assert!(
                e.metadata
                    .iter()
                    .any(|(k, v)| (k.as_str(), v.as_str()) == want),
                "{:?}",
                e.metadata
            );
        }
        let info = &find("info").entries[0];
        assert!(info.t_ns > 1_700_000_000_000_000_000, "stamped on arrival");
        let refusing = shared(Arc::new(Kept {
            refuse: true,
            ..Kept::default()
        }));
        match ingest_logs(&refusing, json.as_bytes(), Format::Json).await {
            Err((Refusal::Unavailable, m)) => assert!(m.contains("disk full"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ingest_logs(&sh, b"{", Format::Json).await,
            Err((Refusal::Malformed, _))
        ));
    }

    /// A full buffer refuses spans and log records before they are decoded: 503, the
    /// sender retries, nothing is counted into the RED metrics twice, nothing is stored.
    #[tokio::test]
    async fn a_full_buffer_pushes_back_before_counting() {
        let spans = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"cart"}}]},
          "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
            "name":"GET /cart","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000100000000"}]}]}]}"#;
        let logs =
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"x"}}]}]}]}"#;
        let sink = Arc::new(Kept {
            full: true,
            ..Kept::default()
        });
        let sh = shared(sink.clone());
        for _ in 0..2 {
            match ingest(&sh, spans.as_bytes(), Format::Json).await {
                Err((Refusal::Unavailable, m)) => assert!(m.contains("retry"), "{m}"),
                other => panic!("{other:?}"),
            }
        }
        match ingest_logs(&sh, logs.as_bytes(), Format::Json).await {
            Err((Refusal::Unavailable, m)) => assert!(m.contains("buffer is full"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(sh.stats.backpressure.load(Ordering::Relaxed), 3);
        assert_eq!(sh.stats.spans.load(Ordering::Relaxed), 0);
        assert!(sink.batches.lock().expect("lock").is_empty());
        // With room, the same request is taken and counted once.
        let open = shared(Arc::new(Kept::default()));
        ingest(&open, spans.as_bytes(), Format::Json)
            .await
            .expect("accepted");
        assert_eq!(open.stats.spans.load(Ordering::Relaxed), 1);
        assert_eq!(open.stats.backpressure.load(Ordering::Relaxed), 0);
    }
}
