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

use std::path::Path;
use std::time::{Duration, Instant};

use telltale_common::model::now_ms;
use telltale_tests::chaos::rss_and_fds;
use telltale_tests::compliance::{Rng, demo_data};
use telltale_tests::hostile::{Pick, Request, body, params, send, value};
use telltale_tests::*;

const TOKEN: &str = "fuzz-token";

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

#[test]
fn random_requests_to_every_route_get_an_answer_and_never_a_server_error() {
    let seed = seed_from_env("TT_HTTP_FUZZ_SEED");
    let n: usize = std::env::var("TT_HTTP_FUZZ_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    eprintln!("TT_HTTP_FUZZ_N={n}");
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
            peak_rss = peak_rss.max(rss_and_fds(&agg.proc).0);
        }
    }
    eprintln!(
        "{n} requests in {:?}; statuses {by_status:?}; slowest {slowest:?}; peak RSS {} MiB",
        started.elapsed(),
        peak_rss >> 20
    );
    // The answers were not all refusals: the fuzzer reached the handlers.
    assert!(
        by_status.get(&200).copied().unwrap_or(0) > n / 10,
        "{by_status:?}"
    );
    assert!(
        peak_rss < 2 << 30,
        "the aggregator grew to {} MiB (seed {seed})",
        peak_rss >> 20
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

/// Times at the ends of what they can be (i64's ends as nanoseconds, seconds and floats,
/// ±1e300, dates of year 1 and 9999), as `start`/`end` pairs and as every other time or
/// duration parameter, on every route with a PromQL, LogQL and metric LogQL query: never a
/// server error. (CI's random run found `end=-9223372036854775808` overflowing a Loki
/// route's arithmetic; a sweep of this shape then found LogQL's range evaluation doing the
/// same, both fixed with saturating arithmetic.)
#[test]
fn extreme_times_on_every_route_are_answered_without_a_server_error() {
    const EXTREMES: &[&str] = &[
        "-9223372036854775808",
        "9223372036854775807",
        "-9223372036854775.808",
        "-1e300",
        "1e300",
        "-1",
        "0",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
    ];
    const OTHERS: &[&str] = &["time", "since", "step", "range", "limit", "delay_for"];
    let (dir, tls) = scratch_with_ca().unwrap();
    let agg = start_quick_aggregator(&tls, dir.path(), TOKEN, &[]).unwrap();
    let mut asked = 0;
    let mut failed = Vec::new();
    for route in routes() {
        let route: String = route
            .split('/')
            .map(|s| {
                if s.starts_with('{') || s.starts_with(':') {
                    "abc"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for q in [
            "",
            "query=up&",
            "query=%7Bjob%3D%22a%22%7D&",
            "query=count_over_time(%7Bjob%3D%22a%22%7D%5B1h%5D)&",
        ] {
            let mut paths: Vec<String> = Vec::new();
            for a in EXTREMES {
                for b in EXTREMES {
                    paths.push(format!(
                        "{route}?{q}start={}&end={}&step=15",
                        enc(a),
                        enc(b)
                    ));
                }
                for p in OTHERS {
                    paths.push(format!("{route}?{q}{p}={}", enc(a)));
                }
            }
            for path in paths {
                asked += 1;
                match http_get(agg.http, &path) {
                    Ok((st, _)) if st < 500 => {}
                    Ok((st, body)) => {
                        failed.push(format!("{st} {path}: {}", &body[..body.len().min(200)]))
                    }
                    Err(e) => failed.push(format!("no answer {path}: {e}")),
                }
            }
        }
    }
    eprintln!(
        "{asked} requests with extreme times, {} server errors",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{}\n{}",
        failed.join("\n"),
        agg.proc.log()
    );
}
