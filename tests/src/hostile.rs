//! Hostile input for the black-box fuzzers of the network surfaces (`tests/tests/http_fuzz.rs`,
//! `receiver_fuzz.rs`, `semantic_fuzz.rs`): seeded choices, parameter values past every range, random
//! JSON, bodies with and without (bomb-sized, truncated) compression, and a raw HTTP/1.1
//! client that reads an answer to its end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::compliance::Rng;
use crate::enc;

/// How long a request may take: a client's patience, well above the query timeout.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Seeded choices.
pub trait Pick {
    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize;
    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool;
    /// One of `xs`.
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

/// Parameter names the endpoints read.
pub const NAMES: &[&str] = &[
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

/// Values from the sane to the hostile.
pub const VALUES: &[&str] = &[
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
pub fn value(r: &mut Rng) -> String {
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

/// A query string (or form body) of up to five random parameters.
pub fn params(r: &mut Rng) -> String {
    (0..r.below(6))
        .map(|_| {
            let name = *r.pick::<&str>(NAMES);
            format!("{}={}", enc(name), enc(&value(r)))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A random JSON document (keys that API bodies use), up to five levels deep.
pub fn json(r: &mut Rng, depth: usize) -> String {
    if depth > 4 || r.chance(0.3) {
        return match r.below(6) {
            0 => "null".into(),
            1 => "true".into(),
            2 => format!("{}", (r.uniform() - 0.5) * 1e20),
            3 => "1e999".into(),
            _ => serde_json::to_string(&value(r)).expect("a string serialises"),
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

/// `data`, gzip-compressed.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("writes to memory");
    e.finish().expect("writes to memory")
}

/// A body and the headers that describe it.
pub fn body(r: &mut Rng) -> (Vec<u8>, Vec<(String, String)>) {
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
            snap::raw::Encoder::new()
                .compress_vec(&raw)
                .expect("under snappy's size limit")
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
            static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            b = BOMB.get_or_init(|| gzip(&vec![0u8; 64 << 20])).clone();
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
pub struct Request {
    /// GET, POST, ...
    pub method: &'static str,
    /// Path and query.
    pub target: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t: String = self.target.chars().take(600).collect();
        write!(f, "{} {t} {:?} body ", self.method, self.headers)?;
        let b = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).to_string();
        write!(f, "{} bytes {b:?}", self.body.len())
    }
}

/// Sends a request and reads the answer to its end: the status, and how long it took.
pub fn send(addr: SocketAddr, req: &Request) -> Result<(u16, Duration), String> {
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
