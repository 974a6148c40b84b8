//! Where the agent's data comes from. Each source produces samples (and events) on its own
//! schedule and hands them to the pipeline; none of them knows about the buffer or the
//! transport.
//!
//! - [`host`]: host and network collectors, one file per `/proc`/`/sys` source, with
//!   node_exporter's names.
//! - [`scrape`]: Prometheus endpoints on the host; [`statsd`]: StatsD/DogStatsD over UDP;
//!   [`textfile`]: `*.prom` files; [`checks`]: HTTP/TCP/DNS/exec health checks.
//! - [`expfmt`]: the exposition format the scrape and textfile sources read; [`httpc`]: the
//!   small HTTP client of scrapes and checks.
//! - [`logfile`]: log files tailed through rotations, [`logparse`]: fields and levels of log
//!   lines, [`syslog`]: RFC 5424/3164 over UDP and TCP, [`forward`]: Fluentd's forward
//!   protocol, [`journald`]: the systemd journal, [`loki`]: Loki's push API, [`logbatch`]:
//!   lines by stream; log
//!   sources hand batches and read positions to a `pipeline::logsink::LogSink`.
//! - [`otlp`]: OpenTelemetry's OTLP over HTTP and gRPC — spans counted into RED metrics,
//!   logs into the log pipeline, metrics into the metric pipeline.

pub mod checks;
pub mod expfmt;
pub mod forward;
pub mod host;
pub mod httpc;
pub mod journald;
pub mod logbatch;
pub mod logfile;
pub mod logparse;
pub mod loki;
pub mod otlp;
pub mod scrape;
pub mod statsd;
pub mod syslog;
pub mod textfile;

use std::future::Future;
use std::sync::Arc;

/// Serves one HTTP/1.1 connection of a listener source (Loki push, OTLP/HTTP) on `conns`,
/// answering each request with `handle(ctx, request)`.
pub(crate) fn serve_http1<C, F, Fut, B>(
    conns: &mut tokio::task::JoinSet<()>,
    stream: tokio::net::TcpStream,
    ctx: Arc<C>,
    handle: F,
) where
    C: Send + Sync + 'static,
    F: Fn(Arc<C>, hyper::Request<hyper::body::Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    conns.spawn(async move {
        let svc = hyper::service::service_fn(move |req| {
            let ctx = ctx.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(ctx, req).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
            .await;
    });
}
