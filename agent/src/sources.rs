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
pub mod streams;
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

/// When a connection last started or finished a request, and how many are in flight: what
/// [`serve_http2`] reads to let an idle connection go.
#[derive(Default)]
struct Activity {
    since: std::sync::Mutex<Option<tokio::time::Instant>>,
    in_flight: std::sync::atomic::AtomicUsize,
    served: std::sync::atomic::AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        if let Ok(mut s) = self.since.lock() {
            *s = Some(tokio::time::Instant::now());
        }
    }

    /// How much longer the connection may stay idle, or `None` while a request is in flight.
    fn left(&self, idle: std::time::Duration) -> Option<std::time::Duration> {
        if self.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.since.lock().ok().and_then(|s| *s)?;
        Some(idle.saturating_sub(since.elapsed()))
    }
}

/// Serves one HTTP/2 connection of a listener source (OTLP/gRPC) on `conns`, answering each
/// request with `handle(ctx, request)`. HTTP/2 has no request head to time, so the
/// connection is let go once it has had no request in flight for `idle`
/// ([`HEADER_TIMEOUT`]), counted from the accept: a client that never sends its preface, or
/// sends it and nothing more, cannot hold one of the capped connections for good, while an
/// exporter that sends every few seconds keeps its connection. Pings every 30 s, answered
/// within 20 s, drop peers that have gone away.
pub(crate) fn serve_http2<C, F, Fut, B>(
    conns: &mut tokio::task::JoinSet<()>,
    stream: tokio::net::TcpStream,
    (ctx, idle): (Arc<C>, std::time::Duration),
    handle: F,
) where
    C: Send + Sync + 'static,
    F: Fn(Arc<C>, hyper::Request<hyper::body::Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use std::sync::atomic::Ordering;
    conns.spawn(async move {
        let activity = Arc::new(Activity::default());
        activity.touch();
        let seen = activity.clone();
        let svc = hyper::service::service_fn(move |req| {
            let ctx = ctx.clone();
            let seen = seen.clone();
            async move {
                seen.in_flight.fetch_add(1, Ordering::AcqRel);
                let response = handle(ctx, req).await;
                seen.touch();
                seen.served.fetch_add(1, Ordering::AcqRel);
                seen.in_flight.fetch_sub(1, Ordering::AcqRel);
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(std::time::Duration::from_secs(30))
            .keep_alive_timeout(std::time::Duration::from_secs(20))
            .max_concurrent_streams(64)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
        let mut conn = std::pin::pin!(conn);
        loop {
            // While a request is in flight, look again after `idle`: it ends by itself or
            // by the peer's going away (the pings).
            let wait = activity.left(idle).unwrap_or(idle);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = tokio::time::sleep(wait) => {
                    if activity.left(idle).is_some_and(|l| l.is_zero()) {
                        break;
                    }
                }
            }
        }
        // A client that never sent a request (or never finished its preface, where hyper's
        // graceful shutdown would wait for it) is simply dropped. Otherwise GOAWAY, then a
        // short grace for a request that raced it; the socket closes with the future either
        // way.
        if activity.served.load(Ordering::Acquire) == 0 {
            return;
        }
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
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

    /// Reads until the server closes the connection (at most 10 s); how long after `t`.
    fn closed_after(s: &mut std::net::TcpStream, t: Instant) -> Duration {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        t.elapsed()
    }

    /// HTTP/2 (OTLP/gRPC): a client that never sends its preface, and one that sends it and
    /// nothing more, are let go after the idle time; a client that keeps sending requests
    /// for longer than that is served throughout, and let go once it stops.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_http2_clients_are_let_go_and_busy_ones_kept() {
        let idle = Duration::from_millis(400);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            for _ in 0..3 {
                let (s, _) = l.accept().await.unwrap();
                super::serve_http2(&mut conns, s, (Arc::new(()), idle), ok);
            }
            while conns.join_next().await.is_some() {}
        });
        let silent = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let mut mute = std::net::TcpStream::connect(addr).unwrap();
            let mut half = std::net::TcpStream::connect(addr).unwrap();
            // The client preface and an empty SETTINGS frame, then nothing.
            half.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
                .unwrap();
            (closed_after(&mut mute, t), closed_after(&mut half, t))
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        let busy = Instant::now();
        let mut stopped = busy;
        while busy.elapsed() < idle * 3 {
            tokio::time::sleep(idle / 4).await;
            let req = hyper::Request::get("http://x/")
                .body(String::new())
                .unwrap();
            let resp = send.send_request(req).await.expect("served while busy");
            assert_eq!(resp.status(), 200);
            stopped = Instant::now();
        }
        tokio::time::timeout(Duration::from_secs(10), conn)
            .await
            .expect("a connection idle past the limit is closed")
            .unwrap()
            .ok();
        let after = stopped.elapsed();
        assert!(
            after >= idle - Duration::from_millis(50),
            "closed {after:?} after the last request"
        );
        let (mute, half) = silent.await.unwrap();
        for (what, took) in [("no preface", mute), ("only the preface", half)] {
            assert!(
                took >= idle - Duration::from_millis(50) && took < Duration::from_secs(5),
                "{what}: closed after {took:?}"
            );
        }
        server.await.unwrap();
    }
}
