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

/// How long a client of a listener source may take to send a request's head, and a
/// kept-alive connection may stay idle: the sources cap their connections, and without a
/// timeout that many clients that never finish a request (slowloris) would shut out every
/// other application for good. Two minutes, as the aggregator's default: past the 90 s Go
/// clients keep idle connections.
pub(crate) const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Serves one HTTP/1.1 connection of a listener source (Loki push, OTLP/HTTP) on `conns`,
/// answering each request with `handle(ctx, request)`; the client has `header_timeout`
/// ([`HEADER_TIMEOUT`]) for each request's head.
pub(crate) fn serve_http1<C, F, Fut, B>(
    conns: &mut tokio::task::JoinSet<()>,
    stream: tokio::net::TcpStream,
    (ctx, header_timeout): (Arc<C>, std::time::Duration),
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
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
            .await;
    });
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    async fn ok(_: Arc<()>, _: hyper::Request<hyper::body::Incoming>) -> hyper::Response<String> {
        hyper::Response::new("ok".to_string())
    }

    /// A client that never finishes a request's head is let go after the header timeout,
    /// and so is an idle kept-alive connection; a complete request is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_and_idle_clients_are_let_go_after_the_header_timeout() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            for _ in 0..2 {
                let (s, _) = l.accept().await.unwrap();
                super::serve_http1(
                    &mut conns,
                    s,
                    (Arc::new(()), Duration::from_millis(300)),
                    ok,
                );
            }
            while conns.join_next().await.is_some() {}
        });
        let client = tokio::task::spawn_blocking(move || {
            let mut slow = std::net::TcpStream::connect(addr).unwrap();
            slow.write_all(b"POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            let mut kept = std::net::TcpStream::connect(addr).unwrap();
            kept.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut b = [0u8; 256];
            let n = kept.read(&mut b).unwrap();
            assert!(b[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &b[..n]);
            let t = Instant::now();
            for s in [&mut slow, &mut kept] {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut rest = Vec::new();
                // The server closes: the read ends (a 408 may come first).
                let _ = s.read_to_end(&mut rest);
            }
            t.elapsed()
        });
        let took = client.await.unwrap();
        assert!(took < Duration::from_secs(5), "closed after {took:?}");
        server.await.unwrap();
    }
}
