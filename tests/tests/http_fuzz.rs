//! A black-box fuzzer of the aggregator's HTTP API, against the real binary on loopback.
//!
//! Seeded random requests go to every route the aggregator's source declares (read from
//! `aggregator/src`, so a new endpoint is fuzzed without being listed here): any method,
//! hostile path segments, parameters the endpoints read with hostile values (PromQL, LogQL,
//! times, durations, numbers past every range, very long and deeply nested text), bodies of
//! random bytes, random JSON, form fields, truncated or bomb-sized gzip and snappy, with and
//! without the API token. Every request must get a complete HTTP answer, never a server error
//! (5xx), within the time a client waits; the process must stay up, answer its health check
//! and keep its memory bounded. A failure prints the seed and the request; `TT_HTTP_FUZZ_SEED`
//! replays it and `TT_HTTP_FUZZ_N` sets the number of requests.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use telltale_common::model::now_ms;
use telltale_tests::compliance::{Rng, demo_data};
use telltale_tests::*;

const TOKEN: &str = "fuzz-token";
/// How long a request may take: a client's patience, well above the query timeout.
const PATIENCE: Duration = Duration::from_secs(60);

trait Pick {
    fn below(&mut self, n: usize) -> usize;
    fn chance(&mut self, p: f64) -> bool;
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T;
}

impl Pick for Rng {
    fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }
    fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// Every path given to `.route(` in the aggregator's source, with whether its handlers
/// include both a GET and a POST (`get(a).post(b)`).
fn declared_routes() -> Vec<(String, bool)> {
    fn walk(dir: &Path, out: &mut Vec<(String, bool)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (i, _) in text.match_indices(".route(") {
                    let rest = text[i + 7..].trim_start();
                    if let Some(r) = rest.strip_prefix("\"/")
                        && let Some(end) = r.find('"')
                    {
                        // The handlers: up to the call's closing parenthesis.
                        let mut depth = 1;
                        let args = &r[end + 1..];
                        let close = args
                            .char_indices()
                            .find(|&(_, c)| {
                                depth += match c {
                                    '(' => 1,
                                    ')' => -1,
                                    _ => 0,
                                };
                                depth == 0
                            })
                            .map_or(args.len(), |(k, _)| k);
                        let h = &args[..close];
                        let both = h.contains("get(") && h.contains(".post(");
                        out.push((format!("/{}", &r[..end]), both));
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../aggregator/src"),
        &mut out,
    );
    out.sort();
    out.dedup();
    // Test-only routers inside the source (a forwarding peer, the gzip layer's unit test).
    out.retain(|(r, _)| r != "/big" && r != "/small" && !r.contains("/receive"));
    out
}

fn routes() -> Vec<String> {
    let mut r: Vec<String> = declared_routes().into_iter().map(|(p, _)| p).collect();
    r.dedup();
    r
}

const SEGMENTS: &[&str] = &[
    "abc",
    "0",
    "-1",
    "1",
    "99999999999999999999999",
    "%00",
    "%2e%2e",
    "..",
    "a%2Fb",
    "%C3%BC",
    "%FF%FE",
    "__name__",
    "up",
    "job",
    "%7B%7D",
    "4bf92f3577b34da6a3ce929d0e0e4736",
    "00000000000000000000000000000000",
    "ffffffffffffffff",
    "%20",
    "a.b-c_d",
];

const NAMES: &[&str] = &[
    "query",
    "query",
    "time",
    "start",
    "end",
    "step",
    "timeout",
    "match[]",
    "match[]",
    "limit",
    "limit_per_metric",
    "metric",
    "lookback_delta",
    "stats",
    "direction",
    "since",
    "until",
    "delay_for",
    "service",
    "operation",
    "tags",
    "minDuration",
    "maxDuration",
    "lookback",
    "id",
    "format",
    "silenced",
    "inhibited",
    "active",
    "filter",
    "receiver",
    "type",
    "state",
    "detector",
    "selector",
    "horizon",
    "series",
    "from",
    "to",
    "severity",
    "group",
    "rule_name[]",
    "file[]",
    "exclude_alerts",
    "dedup",
    "partial_response",
    "name",
    "window",
    "slo",
    "agent",
    "period",
    "kind",
    "trace_id",
    "expr",
];

const VALUES: &[&str] = &[
    "",
    "NaN",
    "Inf",
    "+Inf",
    "-Inf",
    "1e309",
    "-1e309",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "1.5",
    "0",
    "-1",
    "0.001",
    "now",
    "now-1h",
    "2026-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "1d",
    "1ms",
    "0s",
    "-5m",
    "100y",
    "5m",
    "true",
    "false",
    "all",
    "forward",
    "backward",
    "up",
    "demo_cpu_usage_seconds_total",
    "sum(rate(demo_cpu_usage_seconds_total[5m])) by (mode)",
    "{job=\"demo\"}",
    "{__name__=~\".*\"}",
    "{__name__=~\".+\"}",
    "{}",
    "{job=~\"\"}",
    "{job=~\"(\"}",
    "demo_cpu_usage_seconds_total[100y:1ms]",
    "count_values(\"le\", demo_cpu_usage_seconds_total)",
    "label_replace(up, \"a\", \"$1$1$1$1$1$1$1$1\", \"job\", \"(.*)\")",
    "histogram_quantile(0.9, rate(demo_api_request_duration_seconds_bucket[5m]))",
    "topk(1e300, up)",
    "quantile(NaN, up)",
    "up @ 1e300",
    "up offset -100y",
    "absent_over_time(nonexistent[1h])",
    "predict_linear(up[1h], 1e300)",
    "sum by (__name__) ({__name__=~\"demo.*\"})",
    "{job=\"fuzz\"}",
    "{job=\"fuzz\"} |= \"error\"",
    "{job=\"fuzz\"} | json | line_format \"{{.a}}\"",
    "{job=\"fuzz\"} |~ \"(a+)+b\"",
    "sum by (level) (count_over_time({job=\"fuzz\"}[5m]))",
    "rate({job=\"fuzz\"}[1m])",
    "{job=\"fuzz\"} | pattern \"<_> <x>\"",
    "quantile_over_time(0.99, {job=\"fuzz\"} | unwrap x [1h])",
    "HostDown",
    "critical",
    "api",
    "demo",
    "telltale-aggregator",
    "{\"a\":1}",
    "'; DROP TABLE x; --",
    "\u{0}",
    "\u{FFFD}\u{1F600}",
];

/// A parameter value: from the pool, a random one, or a very long or very nested one.
fn value(r: &mut Rng) -> String {
    match r.below(20) {
        0 => "x".repeat(1 + r.below(200_000)),
        1 => {
            let n = 1 + r.below(5000);
            format!("{}up{}", "(".repeat(n), ")".repeat(n))
        }
        2 => {
            let n = 1 + r.below(3000);
            format!("{}1", "-".repeat(n))
        }
        3 => (0..r.below(64))
            .map(|_| char::from_u32(r.below(0x3000) as u32).unwrap_or('?'))
            .collect(),
        4 => format!("{}", (r.uniform() - 0.5) * 10f64.powi(r.below(40) as i32)),
        5 => format!(
            "sum({}) by (job)",
            (0..1 + r.below(400))
                .map(|i| format!("x{i}"))
                .collect::<Vec<_>>()
                .join(" + ")
        ),
        _ => r.pick(VALUES).to_string(),
    }
}

fn params(r: &mut Rng) -> String {
    (0..r.below(6))
        .map(|_| {
            let name = *r.pick::<&str>(NAMES);
            format!("{}={}", enc(name), enc(&value(r)))
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn json(r: &mut Rng, depth: usize) -> String {
    if depth > 4 || r.chance(0.3) {
        return match r.below(6) {
            0 => "null".into(),
            1 => "true".into(),
            2 => format!("{}", (r.uniform() - 0.5) * 1e20),
            3 => "1e999".into(),
            _ => serde_json::to_string(&value(r)).unwrap(),
        };
    }
    if r.chance(0.5) {
        let items: Vec<String> = (0..r.below(5)).map(|_| json(r, depth + 1)).collect();
        format!("[{}]", items.join(","))
    } else {
        const KEYS: &[&str] = &[
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "matchers",
            "name",
            "value",
            "isRegex",
            "isEqual",
            "createdBy",
            "comment",
            "id",
            "streams",
            "stream",
            "values",
            "expr",
            "query",
            "title",
            "panels",
            "range",
            "format",
            "alertname",
            "generatorURL",
            "status",
        ];
        let items: Vec<String> = (0..r.below(6))
            .map(|_| format!("\"{}\":{}", r.pick(KEYS), json(r, depth + 1)))
            .collect();
        format!("{{{}}}", items.join(","))
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A body and the headers that describe it.
fn body(r: &mut Rng) -> (Vec<u8>, Vec<(String, String)>) {
    const TYPES: &[&str] = &[
        "application/json",
        "application/x-www-form-urlencoded",
        "application/x-protobuf",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/yaml",
        "garbage/\u{7f}",
    ];
    let mut h = vec![("Content-Type".to_string(), r.pick(TYPES).to_string())];
    let mut b: Vec<u8> = match r.below(8) {
        0 => Vec::new(),
        1 => (0..r.below(65_536)).map(|_| r.below(256) as u8).collect(),
        2 => {
            let n = 1 + r.below(20_000);
            format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()
        }
        3 => params(r).into_bytes(),
        4 => {
            h[0].1 = "application/x-protobuf".into();
            let raw: Vec<u8> = (0..r.below(4096)).map(|_| r.below(256) as u8).collect();
            h.push(("Content-Encoding".into(), "snappy".into()));
            snap::raw::Encoder::new().compress_vec(&raw).unwrap()
        }
        _ => json(r, 0).into_bytes(),
    };
    match r.below(10) {
        0 => {
            h.push(("Content-Encoding".into(), "gzip".into()));
            b = gzip(&b);
        }
        1 => {
            // A bomb: 64 MiB of zeros in about 64 KiB.
            h.push(("Content-Encoding".into(), "gzip".into()));
            b = gzip(&vec![0u8; 64 << 20]);
        }
        2 => {
            h.push(("Content-Encoding".into(), "gzip".into()));
            let g = gzip(&b);
            b = g[..g.len() / 2].to_vec();
        }
        3 => h.push((
            "Content-Encoding".into(),
            r.pick(&["deflate", "br", "zstd", "x-nonsense", "gzip, gzip"])
                .to_string(),
        )),
        _ => {}
    }
    (b, h)
}

/// One request, written out.
struct Request {
    method: &'static str,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t: String = self.target.chars().take(600).collect();
        write!(f, "{} {t} {:?} body ", self.method, self.headers)?;
        let b = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).to_string();
        write!(f, "{} bytes {b:?}", self.body.len())
    }
}

fn request(r: &mut Rng, routes: &[String]) -> Request {
    let method = *r.pick(&[
        "GET", "GET", "GET", "GET", "POST", "POST", "POST", "PUT", "DELETE", "PATCH", "HEAD",
        "OPTIONS",
    ]);
    let path = if r.chance(0.03) {
        format!("/{}", enc(&value(r)))
    } else {
        r.pick(routes)
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    r.pick(SEGMENTS).to_string()
                } else {
                    s.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    let q = params(r);
    let target = if q.is_empty() {
        path
    } else {
        format!("{path}?{q}")
    };
    let mut headers = Vec::new();
    match r.below(10) {
        0..=4 => headers.push(("Authorization".into(), format!("Bearer {TOKEN}"))),
        5 => headers.push(("Authorization".into(), "Bearer wrong".into())),
        6 => headers.push(("Authorization".into(), "Basic Og==".into())),
        _ => {}
    }
    if r.chance(0.1) {
        headers.push(("Origin".into(), "http://evil.example".into()));
    }
    if r.chance(0.2) {
        headers.push(("Accept-Encoding".into(), "gzip".into()));
    }
    if r.chance(0.05) {
        headers.push(("X-Scope-OrgID".into(), value(r).chars().take(100).collect()));
    }
    let body = if matches!(method, "POST" | "PUT" | "PATCH") || r.chance(0.05) {
        let (b, h) = body(r);
        headers.extend(h);
        b
    } else {
        Vec::new()
    };
    Request {
        method,
        target,
        headers,
        body,
    }
}

/// Sends a request and reads the answer to its end: the status, and how long it took.
fn send(addr: SocketAddr, req: &Request) -> Result<(u16, Duration), String> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(PATIENCE)).ok();
    s.set_write_timeout(Some(PATIENCE)).ok();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n",
        req.method, req.target
    );
    for (k, v) in &req.headers {
        let v: String = v.chars().filter(|c| *c >= ' ' && *c != '\u{7f}').collect();
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", req.body.len()));
    s.write_all(head.as_bytes())
        .map_err(|e| format!("writing the head: {e}"))?;
    // A server may answer (and close) before the whole body is read: a refusal is an answer.
    let _ = s.write_all(&req.body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("reading after {:?}: {e}", t.elapsed()))?;
    let line = raw.split(|&b| b == b'\n').next().unwrap_or_default();
    let status = String::from_utf8_lossy(line)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {} bytes", raw.len()))?;
    Ok((status, t.elapsed()))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn random_requests_to_every_route_get_an_answer_and_never_a_server_error() {
    let seed: u64 = std::env::var("TT_HTTP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| now_ms() as u64 | 1);
    let n: usize = std::env::var("TT_HTTP_FUZZ_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    eprintln!("TT_HTTP_FUZZ_SEED={seed} TT_HTTP_FUZZ_N={n}");
    let routes = routes();
    assert!(
        routes.len() >= 60 && routes.iter().any(|r| r == "/api/v1/query"),
        "the route scan found too little: {routes:?}"
    );

    let (dir, tls) = scratch_with_ca().unwrap();
    let mut agg = start_quick_aggregator(&tls, dir.path(), TOKEN, &[]).unwrap();
    let now = now_ms();
    remote_write(agg.http, &demo_data(now - 3_600_000, now), Some(TOKEN)).unwrap();
    let lines: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "[\"{}\",\"level=error a={i} msg=\\\"fuzz line {i}\\\"\"]",
                (now - 600_000 + i * 1000) as i128 * 1_000_000
            )
        })
        .collect();
    let push = format!(
        "{{\"streams\":[{{\"stream\":{{\"job\":\"fuzz\",\"level\":\"error\"}},\"values\":[{}]}}]}}",
        lines.join(",")
    );
    let (st, b) = http_post_auth(
        agg.http,
        "/loki/api/v1/push",
        "application/json",
        push.as_bytes(),
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(st, 204, "{b}");

    let pid = agg.proc.child.id();
    let mut rng = Rng(seed);
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    let (mut slowest, mut peak_rss) = (Duration::ZERO, 0u64);
    let started = Instant::now();
    for i in 0..n {
        let req = request(&mut rng, &routes);
        let (status, took) = send(agg.http, &req).unwrap_or_else(|e| {
            panic!(
                "request {i} (seed {seed}) got no answer: {e}\n{req}\n{}",
                agg.proc.log()
            )
        });
        assert!(
            status < 500,
            "request {i} (seed {seed}) answered {status}\n{req}\n{}",
            agg.proc.log()
        );
        *by_status.entry(status).or_default() += 1;
        slowest = slowest.max(took);
        if i % 50 == 49 {
            assert!(
                agg.proc.child.try_wait().unwrap().is_none(),
                "the aggregator exited after request {i} (seed {seed})\n{req}\n{}",
                agg.proc.log()
            );
            assert_eq!(
                http_get(agg.http, "/-/healthy").unwrap().0,
                200,
                "unhealthy after request {i} (seed {seed})"
            );
            peak_rss = peak_rss.max(rss_kib(pid));
        }
    }
    eprintln!(
        "{n} requests in {:?}; statuses {by_status:?}; slowest {slowest:?}; peak RSS {} MiB",
        started.elapsed(),
        peak_rss / 1024
    );
    // The answers were not all refusals: the fuzzer reached the handlers.
    assert!(
        by_status.get(&200).copied().unwrap_or(0) > n / 10,
        "{by_status:?}"
    );
    assert!(
        peak_rss < 2 << 20,
        "the aggregator grew to {} MiB (seed {seed})",
        peak_rss / 1024
    );
    // Still answering queries over the data written before.
    let (st, body) = http_get(
        agg.http,
        &format!("/api/v1/query?query={}", enc("count(up) >= 0 or vector(0)")),
    )
    .unwrap();
    assert_eq!(st, 200, "{body}");
}

/// Routes with a GET and a POST handler whose POST writes: they need the token.
const POSTS_THAT_WRITE: &[&str] = &[
    "/api/v2/alerts",
    "/api/v2/silences",
    "/api/v1/reports",
    "/api/v1/remediation/status",
];

/// Every other route that reads by GET and by POST is a read either way: Grafana sends its
/// queries (exemplars included) as form-encoded POSTs with no token, and they are answered,
/// not refused as a cross-site write; the POSTs that write still need the token.
#[test]
fn a_form_encoded_post_to_a_read_is_answered_without_a_token() {
    let routes = declared_routes();
    let both: Vec<&str> = routes
        .iter()
        .filter(|(_, b)| *b)
        .map(|(p, _)| p.as_str())
        .collect();
    assert!(
        both.contains(&"/api/v1/query") && both.contains(&"/api/v1/query_exemplars"),
        "the route scan missed GET+POST routes: {both:?}"
    );
    let (dir, tls) = scratch_with_ca().unwrap();
    let agg = start_quick_aggregator(&tls, dir.path(), TOKEN, &[]).unwrap();
    let now = now_ms();
    remote_write(agg.http, &demo_data(now - 600_000, now), Some(TOKEN)).unwrap();
    let form = format!(
        "query={}&match[]={}&start={}&end={}&step=60",
        enc("demo_cpu_usage_seconds_total"),
        enc("demo_cpu_usage_seconds_total"),
        now / 1000 - 300,
        now / 1000
    );
    for path in both {
        let (status, body) = http_post(
            agg.http,
            path,
            "application/x-www-form-urlencoded",
            form.as_bytes(),
        )
        .unwrap();
        if POSTS_THAT_WRITE.contains(&path) {
            assert!(
                status == 401 || status == 403,
                "{path}: a write without the token answered {status}: {body}"
            );
        } else {
            assert!(
                status != 401 && status != 403 && status < 500,
                "{path}: a read answered {status}: {body}"
            );
        }
    }
}
