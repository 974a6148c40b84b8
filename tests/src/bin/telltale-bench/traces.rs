//! `telltale-bench traces [--spans 2000000] [--senders 2] [--per-request 500]`: the agent's
//! OTLP/HTTP intake. `--senders` keep-alive HTTP/1.1 connections post protobuf requests
//! (as the OpenTelemetry SDKs' batch exporters do) of `--per-request` spans each, cycling
//! through 64 pre-encoded requests of a seeded mix (8 services, 5–8 operations each, server
//! and client spans, 2 % errors, 5–7 attributes a span, durations from 0.2 ms to seconds),
//! to an agent with `[otlp] enabled = true` (no span rate limit) shipping its RED metrics and
//! every span to a real aggregator. Reports spans per second of wall time, spans per agent
//! CPU second (the issue's "on one core"), and the agent's peak RSS; checks the agent counted
//! every span it was sent and the aggregator's trace store received them all.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use telltale_common::otlp;
use telltale_common::trace::{Span, SpanKind, SpanStatus};
use telltale_tests::*;

use crate::{arg, mib, proc_usage};

pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A span of the benchmarks' shop with the attributes and resource an instrumented HTTP
/// service's spans carry: `ids` are trace, span and parent; `route` is "METHOD /path";
/// `how` is (server kind, start, end, failed); `vary` the peer address, user and host.
pub(crate) fn shop_span(
    ids: ([u8; 16], [u8; 8], Option<[u8; 8]>),
    service: &str,
    name: String,
    route: &str,
    how: (bool, u64, u64, bool),
    vary: [String; 3],
) -> Span {
    let (server, start_ns, end_ns, error) = how;
    let [peer, user, host] = vary;
    Span {
        trace_id: ids.0,
        span_id: ids.1,
        parent: ids.2,
        service: service.to_string(),
        name,
        kind: if server {
            SpanKind::Server
        } else {
            SpanKind::Client
        },
        start_ns,
        end_ns,
        status: if error {
            SpanStatus::Error
        } else {
            SpanStatus::Unset
        },
        status_message: if error {
            "upstream timed out".into()
        } else {
            String::new()
        },
        attributes: vec![
            (
                "http.method".into(),
                route.split(' ').next().unwrap_or("GET").into(),
            ),
            ("http.route".into(), route.into()),
            (
                "http.status_code".into(),
                if error { "503" } else { "200" }.into(),
            ),
            ("net.peer.name".into(), peer),
            ("user.id".into(), user),
        ],
        resource: vec![
            ("host.name".into(), host),
            ("service.version".into(), "1.4.2".into()),
            ("telemetry.sdk.language".into(), "python".into()),
        ],
        events: Vec::new(),
        links: Vec::new(),
    }
}

/// Request `r` of the mix: `n` spans, grouped by service as an SDK's exporter sends them.
fn request(r: u64, n: usize, t0: u64) -> Vec<u8> {
    let services = [
        "frontend", "cart", "checkout", "payments", "shipping", "catalog", "users", "email",
    ];
    let routes = [
        "GET /",
        "GET /api/products",
        "POST /api/cart",
        "GET /api/cart",
        "POST /api/checkout",
        "GET /api/user",
        "POST /api/pay",
        "db.query",
    ];
    let mut spans: Vec<Span> = (0..n as u64)
        .map(|i| {
            let id = mix(r << 32 | i | 1 << 31);
            let mut s = mix(r << 32 | i);
            let mut next = |m: u64| {
                s = mix(s);
                s % m
            };
            let svc = next(services.len() as u64) as usize;
            let op = (svc + next(5 + (svc as u64 % 4)) as usize) % routes.len();
            let error = next(100) < 2;
            // Durations: 0.2 ms to a few seconds, most under 50 ms.
            let dur = 200_000 + next(1_000) * next(1_000) * 50 + next(4) * next(1_000_000);
            let start = t0 + next(3_600_000_000_000);
            let parent = (next(4) != 0).then(|| (mix(id ^ 3) | 1).to_be_bytes());
            let server = next(2) == 0;
            let net = format!("10.0.{}.{}", next(4), next(250));
            let user = format!("u{}", next(100_000));
            shop_span(
                (
                    ((mix(id) as u128) << 64 | mix(id ^ 1) as u128 | 1).to_be_bytes(),
                    (mix(id ^ 2) | 1).to_be_bytes(),
                    parent,
                ),
                services[svc],
                routes[op].to_string(),
                routes[op],
                (server, start, start + dur, error),
                [net, user, format!("host-{}", svc % 4)],
            )
        })
        .collect();
    spans.sort_by(|a, b| a.service.cmp(&b.service));
    otlp::encode_traces(&spans)
}

/// Posts `body` on a kept-alive connection; returns the status.
fn post(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    body: &[u8],
) -> anyhow::Result<u16> {
    write!(
        stream,
        "POST /v1/traces HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let mut len = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse()?;
        }
    }
    let mut sink = vec![0u8; len];
    reader.read_exact(&mut sink)?;
    Ok(status)
}

pub fn bench_traces(args: &[String]) -> anyhow::Result<()> {
    let skip: String = args
        .iter()
        .position(|a| a == "--skip")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_default();
    let dir = tempfile::tempdir_in("/var/tmp")?;
    let tls = dir.path().join("tls");
    certs_init(&tls)?;
    if !skip.contains("intake") {
        intake(args, &tls, dir.path())?;
    }
    if !skip.contains("store") {
        let store_dir = dir.path().join("store");
        std::fs::create_dir_all(&store_dir)?;
        crate::tracestore::bench_store(&tls, &store_dir, arg(args, "--store-spans", 2_000_000))?;
    }
    Ok(())
}

/// The agent's OTLP/HTTP intake (module docs).
fn intake(args: &[String], tls: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<()> {
    let total: u64 = arg(args, "--spans", 2_000_000);
    let senders: u64 = arg(args, "--senders", 2).max(1);
    let per: usize = arg(args, "--per-request", 500).max(1);
    let tls = tls.to_path_buf();
    certs_issue(&tls, "bench-otlp")?;
    let agg = start_fresh_aggregator(&tls, dir)?;
    let port = free_port();
    let cfg = dir.join("agent.toml");
    // No per-service limit: every span is shipped, the path measured whole.
    std::fs::write(
        &cfg,
        format!(
            "[otlp]\nenabled = true\nhttp_listen = \"127.0.0.1:{port}\"\nmax_spans_per_second = 0\n"
        ),
    )?;
    let agent = start_agent_with_config(
        &tls,
        "bench-otlp",
        agg.quic,
        &dir.join("agent"),
        "1s",
        Some(&cfg),
    )?;
    agent.wait_log("OTLP/HTTP receiver started", Duration::from_secs(30))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t0 = telltale_common::model::now_ms() as u64 * 1_000_000;
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..64).map(|r| request(r, per, t0)).collect());
    let avg_body = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len();
    let requests = total.div_ceil(per as u64);
    let pid = agent.child.id();
    let (cpu0, _, _) = proc_usage(pid)?;
    let next = Arc::new(AtomicU64::new(0));
    let (refused, retried) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let threads: Vec<_> = (0..senders)
        .map(|_| {
            let (bodies, next, refused, retried) = (
                bodies.clone(),
                next.clone(),
                refused.clone(),
                retried.clone(),
            );
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut stream = TcpStream::connect(addr)?;
                stream.set_nodelay(true)?;
                let mut reader = BufReader::new(stream.try_clone()?);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        return Ok(());
                    }
                    let body = &bodies[(i % bodies.len() as u64) as usize];
                    // A 503 is the agent's back-pressure (its buffer is full while the
                    // aggregator catches up): retried after a pause, as SDKs do.
                    loop {
                        match post(&mut stream, &mut reader, addr, body)? {
                            200 => break,
                            503 => {
                                retried.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            _ => {
                                refused.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
    }
    let wall = started.elapsed().as_secs_f64();
    let (cpu1, hwm, _) = proc_usage(pid)?;
    if refused.load(Ordering::Relaxed) > 0 {
        bail!("{} requests were refused", refused.load(Ordering::Relaxed));
    }
    let sent = requests * per as u64;
    // The agent counted every span (its own counter, shipped to the aggregator).
    let counted = (0..100).find_map(|_| {
        std::thread::sleep(Duration::from_millis(200));
        metric_value(&agg, "telltale_agent_otlp_spans_total").filter(|&v| v as u64 == sent)
    });
    if counted.is_none() {
        bail!(
            "the agent counted {:?} spans of {sent}",
            metric_value(&agg, "telltale_agent_otlp_spans_total")
        );
    }
    let shipped = (0..300).find_map(|_| {
        std::thread::sleep(Duration::from_millis(200));
        own_counter(&agg, "telltale_aggregator_traces_spans_received_total").filter(|&v| v == sent)
    });
    if shipped.is_none() {
        bail!(
            "the aggregator received {:?} spans of {sent}",
            own_counter(&agg, "telltale_aggregator_traces_spans_received_total")
        );
    }
    let cpu = cpu1 - cpu0;
    println!(
        "\nOTLP/HTTP intake: {sent} spans in {requests} protobuf requests of {per} (about {} KiB each), {senders} keep-alive senders\n",
        avg_body / 1024
    );
    println!(
        "| spans/s (wall, until all were taken) | 503s retried | agent CPU s | spans per agent CPU second | agent peak RSS MiB |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {:.0} | {} | {cpu:.1} | {:.0} | {:.1} |\n",
        sent as f64 / wall,
        retried.load(Ordering::Relaxed),
        sent as f64 / cpu.max(0.01),
        mib(hwm)
    );
    Ok(())
}

/// A counter of the aggregator's own `/metrics`.
fn own_counter(agg: &Aggregator, name: &str) -> Option<u64> {
    let (_, text) = http_get(agg.http, "/metrics").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// The single value of an instant query on the aggregator.
fn metric_value(agg: &Aggregator, q: &str) -> Option<f64> {
    let r = query(agg.http, q).ok()?;
    r.first()?["value"][1].as_str()?.parse().ok()
}
