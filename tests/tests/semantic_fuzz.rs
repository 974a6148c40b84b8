//! Well-formed input with hostile contents, against the real aggregator: batches over QUIC
//! from an authenticated agent (series, events, log lines, spans, exemplars) and remote_write
//! bodies whose encoding is valid but whose labels, times and values are not what any sender
//! should send — invalid and duplicate label names, thousands of labels, huge values, times at
//! the ends of i64, NaN and stale markers, unordered and repeated timestamps, repeated and
//! extreme sequence numbers. Each is stored or refused; the aggregator stays up, answers every
//! read over what it stored without a server error, keeps serving a real agent, and starts
//! again on the same data directory after a SIGKILL (its write-ahead logs replay what it
//! took). A failure prints the seed; `TT_SEMANTIC_FUZZ_SEED` replays it.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use telltale_common::codec;
use telltale_common::model::{Labels, Sample, SeriesSamples, now_ms};
use telltale_common::trace::{Span, SpanEvent, SpanKind, SpanStatus};
use telltale_common::wire::{
    Batch, ClientMessage, Event, Exemplar, ExemplarSeries, LogEntry, LogStream,
};
use telltale_tests::compliance::Rng;
use telltale_tests::hostile::{Pick, value};
use telltale_tests::*;

const NAMES: &[&str] = &[
    "__name__",
    "__name__",
    "job",
    "instance",
    "le",
    "quantile",
    "",
    "1bad",
    "a-b",
    "a b",
    "__meta_x",
    "ü",
    "__tmp",
    "A_Z",
    "_",
    "level",
    "service_name",
];

fn name(r: &mut Rng) -> String {
    match r.below(10) {
        0 => "n".repeat(1 + r.below(2_000)),
        1 => value(r).chars().take(64).collect(),
        _ => r.pick(NAMES).to_string(),
    }
}

fn text(r: &mut Rng) -> String {
    match r.below(16) {
        0 => "v".repeat(r.below(50_000)),
        1 => String::new(),
        _ => value(r).chars().take(200).collect(),
    }
}

thread_local! {
    /// Whether the request being made is tame: valid names and times, so that its hostile
    /// values and sizes reach the stores rather than being refused at the door.
    static TAME: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn tame() -> bool {
    TAME.with(|t| t.get())
}

/// Label pairs: half of the time (always in a tame request) with valid names.
fn pairs(r: &mut Rng) -> Vec<(String, String)> {
    let n = if r.chance(0.02) {
        r.below(3000)
    } else {
        r.below(6)
    };
    let valid = tame() || r.chance(0.5);
    (0..n)
        .map(|_| {
            let k = if valid {
                r.pick(&[
                    "job", "instance", "le", "quantile", "level", "A_Z", "_", "x",
                ])
                .to_string()
            } else {
                name(r)
            };
            (k, text(r))
        })
        .collect()
}

fn time_ms(r: &mut Rng, now: i64) -> i64 {
    match r.below(12) {
        0 => i64::MIN,
        1 => i64::MAX,
        2 => 0,
        3 => -1,
        4 => now + 100 * 365 * 86_400_000,
        5 => now - 100 * 365 * 86_400_000,
        6 => now - 86_400_000 * r.below(400) as i64,
        7 => i64::MAX / 2,
        _ => now - r.below(600_000) as i64,
    }
}

fn sample_value(r: &mut Rng) -> f64 {
    match r.below(10) {
        0 => f64::NAN,
        1 => f64::from_bits(0x7ff0_0000_0000_0002),
        2 => f64::INFINITY,
        3 => f64::NEG_INFINITY,
        4 => -0.0,
        5 => f64::MAX,
        6 => f64::MIN_POSITIVE / 2.0,
        _ => (r.uniform() - 0.5) * 1e6,
    }
}

fn series(r: &mut Rng, now: i64) -> Vec<SeriesSamples> {
    let n = if r.chance(0.05) { 2000 } else { 8 };
    (0..1 + r.below(n))
        .map(|_| {
            let mut p = pairs(r);
            if r.chance(0.7) {
                p.push(("__name__".into(), format!("fuzz_{}", r.below(50))));
            }
            let base = time_ms(r, now);
            let n = if r.chance(0.05) { 20_000 } else { 20 };
            let samples = (0..r.below(n))
                .map(|k| {
                    let t = if r.chance(0.8) {
                        base.saturating_add(k as i64 * 1000 * (r.below(3) as i64 - 1))
                    } else {
                        time_ms(r, now)
                    };
                    Sample(t, sample_value(r))
                })
                .collect();
            SeriesSamples {
                labels: Labels::from_pairs(p),
                samples,
            }
        })
        .collect()
}

fn batch(r: &mut Rng, now: i64) -> Batch {
    let ns = |r: &mut Rng| time_ms(r, now).saturating_mul(1_000_000);
    let mut id = [0u8; 16];
    for b in id.iter_mut() {
        *b = if r.chance(0.3) { 0 } else { r.below(256) as u8 };
    }
    Batch {
        sequence: match r.below(5) {
            0 => 0,
            1 => u64::MAX,
            2 => r.below(5) as u64,
            _ => r.uniform().to_bits(),
        },
        created_ms: time_ms(r, now),
        series: if r.chance(0.7) {
            series(r, now)
        } else {
            Vec::new()
        },
        events: (0..r.below(3))
            .map(|_| Event {
                t_ms: time_ms(r, now),
                kind: text(r),
                labels: pairs(r),
                message: text(r),
            })
            .collect(),
        logs: (0..r.below(3))
            .map(|_| LogStream {
                labels: pairs(r),
                entries: (0..r.below(50))
                    .map(|_| LogEntry {
                        t_ns: ns(r),
                        line: text(r),
                        metadata: pairs(r),
                    })
                    .collect(),
            })
            .collect(),
        spans: (0..r.below(3))
            .map(|_| {
                let start = ns(r) as u64;
                Span {
                    trace_id: id,
                    span_id: id[..8].try_into().unwrap(),
                    parent: r.chance(0.5).then_some(id[8..].try_into().unwrap()),
                    service: text(r),
                    name: text(r),
                    kind: SpanKind::default(),
                    start_ns: start,
                    end_ns: if r.chance(0.3) {
                        0
                    } else {
                        start.wrapping_add(r.below(1 << 20) as u64)
                    },
                    status: SpanStatus::default(),
                    status_message: text(r),
                    attributes: pairs(r),
                    resource: pairs(r),
                    events: (0..r.below(3))
                        .map(|_| SpanEvent {
                            t_ns: ns(r) as u64,
                            name: text(r),
                            attributes: pairs(r),
                        })
                        .collect(),
                    links: Vec::new(),
                }
            })
            .collect(),
        exemplars: (0..r.below(2))
            .map(|_| ExemplarSeries {
                labels: pairs(r),
                exemplars: (0..r.below(5))
                    .map(|_| Exemplar {
                        labels: pairs(r),
                        t_ms: time_ms(r, now),
                        value: sample_value(r),
                    })
                    .collect(),
            })
            .collect(),
    }
}

const RFC3339: &[&str] = &[
    "",
    "now",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "2026-02-30T00:00:00Z",
    "2026-12-31T23:59:60Z",
    "2026-06-01T00:00:00+14:00",
    "2026-06-01T00:00:00-23:59",
    "1970-01-01T00:00:00Z",
    "2026-06-01",
    "2026-06-01T00:00:00.123456789012Z",
];

/// A start and an end: in a tame request the start within the last hour and the end after
/// it, else each anything.
fn window(r: &mut Rng) -> (String, String) {
    if tame() {
        let start = now_ms() / 1000 - r.below(3600) as i64;
        (at(start), at(start + 1 + r.below(7200) as i64))
    } else {
        (rfc3339(r), rfc3339(r))
    }
}

fn at(t: i64) -> String {
    let (y, mo, d) = telltale_common::model::civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

fn rfc3339(r: &mut Rng) -> String {
    if r.chance(0.5) {
        at(now_ms() / 1000 + r.below(7200) as i64 - 3600)
    } else {
        r.pick(RFC3339).to_string()
    }
}

fn object(p: Vec<(String, String)>) -> serde_json::Value {
    serde_json::Value::Object(
        p.into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect(),
    )
}

/// Alerts as another Prometheus posts them, with hostile labels and times.
fn alerts(r: &mut Rng) -> String {
    let a: Vec<serde_json::Value> = (0..1 + r.below(5))
        .map(|_| {
            let mut l = pairs(r);
            if r.chance(0.8) {
                l.push(("alertname".into(), format!("Fuzz{}", r.below(20))));
            }
            let (start, end) = window(r);
            serde_json::json!({
                "labels": object(l),
                "annotations": object(pairs(r)),
                "startsAt": start,
                "endsAt": end,
                "generatorURL": text(r),
            })
        })
        .collect();
    serde_json::Value::Array(a).to_string()
}

/// A silence with hostile matchers (regular expressions included) and times.
fn silence(r: &mut Rng) -> String {
    const REGEX: &[&str] = &[
        "(a+)+$",
        "[",
        "(?P<x>",
        ".*.*.*.*.*.*.*.*.*.*.*.*.*.*.*.*",
        "\\",
        "a{1000000}",
        "(?i)fuzz.*",
        "",
    ];
    let m: Vec<serde_json::Value> = (0..r.below(5))
        .map(|_| {
            let value = if r.chance(0.5) {
                r.pick(REGEX).to_string()
            } else {
                text(r)
            };
            serde_json::json!({
                "name": if tame() { "alertname".to_string() } else { name(r) },
                "value": value,
                "isRegex": r.chance(0.5),
                "isEqual": r.chance(0.7),
            })
        })
        .collect();
    let (start, end) = window(r);
    serde_json::json!({
        "matchers": m,
        "startsAt": start,
        "endsAt": end,
        "createdBy": text(r),
        "comment": text(r),
    })
    .to_string()
}

/// A Loki push with hostile labels, times and metadata.
fn loki_push(r: &mut Rng) -> String {
    let streams: Vec<serde_json::Value> = (0..1 + r.below(3))
        .map(|_| {
            let mut l = pairs(r);
            l.push(("job".into(), "fuzzpush".into()));
            let values: Vec<serde_json::Value> = (0..r.below(20))
                .map(|_| {
                    let t = match if tame() { 7 } else { r.below(8) } {
                        0 => "-1".to_string(),
                        1 => "9223372036854775807".into(),
                        2 => "99999999999999999999".into(),
                        3 => "1e18".into(),
                        4 => String::new(),
                        _ => {
                            ((now_ms() - r.below(3_600_000) as i64) as i128 * 1_000_000).to_string()
                        }
                    };
                    if r.chance(0.3) {
                        serde_json::json!([t, text(r), object(pairs(r))])
                    } else {
                        serde_json::json!([t, text(r)])
                    }
                })
                .collect();
            serde_json::json!({"stream": object(l), "values": values})
        })
        .collect();
    serde_json::json!({ "streams": streams }).to_string()
}

/// An authenticated connection as agent `name` that has said hello; acknowledgements are
/// read and dropped, so the aggregator is never blocked on them.
async fn connect(
    tls: &std::path::Path,
    name: &str,
    addr: std::net::SocketAddr,
) -> (quinn::Endpoint, quinn::Connection, quinn::SendStream) {
    let (ep, conn, send, mut recv) = rogue_agent(tls, name, addr, 1).await.unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = recv.read_chunk(1 << 16, true).await {} });
    (ep, conn, send)
}

/// Every read a dashboard or a client makes over what is stored: never a server error.
fn reads_answer(agg: &Aggregator, seed: u64, when: &str) {
    let now = now_ms() / 1000;
    let sel = enc("{__name__=~\"fuzz_.*\"}");
    for path in [
        format!("/api/v1/query?query={sel}"),
        format!(
            "/api/v1/query?query={}",
            enc("count by (__name__) ({__name__=~\".+\"})")
        ),
        format!(
            "/api/v1/query?query={}",
            enc("sum(rate({__name__=~\"fuzz_.*\"}[5m]))")
        ),
        format!(
            "/api/v1/query_range?query={sel}&start={}&end={now}&step=60",
            now - 3600
        ),
        format!("/api/v1/series?match[]={sel}"),
        format!("/api/v1/series?match[]={sel}&start=-9999999999&end=9999999999"),
        "/api/v1/labels".into(),
        "/api/v1/label/__name__/values".into(),
        "/api/v1/label/job/values".into(),
        "/api/v1/metadata".into(),
        "/api/v1/status/tsdb".into(),
        format!("/federate?match[]={sel}"),
        format!("/api/v1/query_exemplars?query={sel}"),
        "/api/v1/events".into(),
        "/api/v1/agents".into(),
        format!(
            "/loki/api/v1/query_range?query={}&limit=5000",
            enc("{instance=\"fuzzer\"}")
        ),
        format!(
            "/loki/api/v1/query?query={}",
            enc("sum by (level) (count_over_time({instance=\"fuzzer\"}[1h]))")
        ),
        "/loki/api/v1/labels".into(),
        "/loki/api/v1/series".into(),
        "/api/services".into(),
        "/api/v2/alerts".into(),
        "/api/v2/silences".into(),
        "/api/v1/alerts".into(),
        "/api/v1/incidents".into(),
        format!(
            "/loki/api/v1/query_range?query={}&limit=5000",
            enc("{job=\"fuzzpush\"}")
        ),
        format!(
            "/loki/api/v1/query?query={}",
            enc("sum by (level) (rate({job=\"fuzzpush\"} | logfmt [1h]))")
        ),
        "/api/traces?service=x&limit=100".into(),
        "/metrics".into(),
    ] {
        let (status, body) = http_get(agg.http, &path).unwrap_or_else(|e| {
            panic!(
                "{when}: {path}: no answer (seed {seed}): {e}\n{}",
                agg.proc.log()
            )
        });
        assert!(
            status < 500,
            "{when}: {path} answered {status} (seed {seed}): {}\n{}",
            body.chars().take(500).collect::<String>(),
            agg.proc.log()
        );
    }
}

#[test]
fn hostile_contents_in_well_formed_batches_and_remote_writes_are_stored_or_refused() {
    let seed = seed_from_env("TT_SEMANTIC_FUZZ_SEED");
    let (dir, tls) = scratch_with_ca().unwrap();
    for n in ["fuzzer", "bystander"] {
        certs_issue(&tls, n).unwrap();
    }
    let token = "fuzz-token";
    let mut agg = start_quick_aggregator(&tls, dir.path(), token, &[]).unwrap();
    let (http, quic) = (agg.http.to_string(), agg.quic.to_string());
    let _bystander = start_agent(
        &tls,
        "bystander",
        agg.quic,
        &dir.path().join("bystander"),
        "1s",
    )
    .unwrap();
    let mut r = Rng(seed);
    let now = now_ms();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut sent, mut skipped, mut reconnects) = (0, 0, 0);
    let mut rw = std::collections::BTreeMap::new();
    let started = std::time::Instant::now();
    rt.block_on(async {
        let mut c = connect(&tls, "fuzzer", agg.quic).await;
        for _ in 0..150 {
            let b = batch(&mut r, now);
            let Ok(frame) = codec::encode_frame(&ClientMessage::Batch(b)) else {
                skipped += 1;
                continue;
            };
            if frame.len() > 12 << 20 {
                skipped += 1;
                continue;
            }
            if c.2.write_all(&frame).await.is_err() {
                // Closed by the aggregator (an invalid batch): a new connection goes on.
                reconnects += 1;
                c = connect(&tls, "fuzzer", agg.quic).await;
            } else {
                sent += 1;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        c.1.close(0u32.into(), b"done");
    });
    for _ in 0..80 {
        let body = telltale_aggregator::api::remote_write::encode(&series(&mut r, now));
        let (status, text) = http_post_auth(
            agg.http,
            "/api/v1/write",
            "application/x-protobuf",
            &body,
            Some(token),
        )
        .unwrap();
        assert!(
            status < 500 || status == 503,
            "remote_write answered {status} (seed {seed}): {text}\n{}",
            agg.proc.log()
        );
        *rw.entry(status).or_insert(0) += 1;
    }
    let mut api = std::collections::BTreeMap::new();
    for i in 0..120 {
        TAME.with(|t| t.set(i % 2 == 0));
        let (path, body) = match i % 3 {
            0 => ("/api/v2/alerts", alerts(&mut r)),
            1 => ("/api/v2/silences", silence(&mut r)),
            _ => ("/loki/api/v1/push", loki_push(&mut r)),
        };
        let (status, text) = http_post_auth(
            agg.http,
            path,
            "application/json",
            body.as_bytes(),
            Some(token),
        )
        .unwrap();
        assert!(
            status < 500,
            "{path} answered {status} (seed {seed}): {text}\n{}\n{}",
            body.chars().take(1000).collect::<String>(),
            agg.proc.log()
        );
        *api.entry(format!("{path} {status}")).or_insert(0) += 1;
    }
    eprintln!("API answers {api:?}");
    let refused = metric(agg.http, "telltale_aggregator_rejected_batches_total").unwrap();
    eprintln!(
        "{sent} batches sent ({skipped} too large to frame), {reconnects} reconnections, \
         {refused} refused as invalid; remote_write answers {rw:?}; {:?}",
        started.elapsed()
    );
    // Half of the batches' label sets have names from the hostile pool.
    assert!(refused > 0.0, "no batch was refused (seed {seed})");
    assert!(
        agg.proc.child.try_wait().unwrap().is_none(),
        "the aggregator exited (seed {seed}):\n{}",
        agg.proc.log()
    );
    reads_answer(&agg, seed, "after the fuzzing");
    // Nothing stored under a name Prometheus' rules do not allow: selectors could not name
    // it, and `/federate` would write a page its scrapers cannot parse.
    let invalid = |path: &str, valid: fn(&str) -> bool| -> Vec<String> {
        let (_, body) = http_get(agg.http, path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n.as_str())
            .filter(|n| !valid(n))
            .map(String::from)
            .collect()
    };
    use telltale_common::model::{valid_label_name, valid_metric_name};
    for (path, valid) in [
        ("/api/v1/labels", valid_label_name as fn(&str) -> bool),
        ("/loki/api/v1/labels", valid_label_name),
        ("/api/v1/label/__name__/values", valid_metric_name),
    ] {
        let bad = invalid(path, valid);
        assert!(
            bad.is_empty(),
            "{path} lists invalid names (seed {seed}): {bad:?}"
        );
    }
    let bystander_now = |agg: &Aggregator| {
        query(
            agg.http,
            "time() - timestamp(node_time_seconds{instance=\"bystander\"}) < 10",
        )
        .map(|v| v.len())
        .unwrap_or(0)
    };
    assert!(
        wait_for(Duration::from_secs(20), || (bystander_now(&agg) == 1)
            .then_some(()))
        .is_some(),
        "the real agent is no longer served (seed {seed})"
    );

    // What was taken replays after a SIGKILL: the same data directory starts and answers.
    agg.proc.kill();
    let agg = start_aggregator(
        &tls,
        &dir.path().join("agg"),
        &http,
        &quic,
        &[
            "--config",
            &dir.path().join("agg.toml").display().to_string(),
            "--api-token",
            token,
        ],
    )
    .unwrap_or_else(|e| panic!("no restart after the fuzzing (seed {seed}): {e}"));
    reads_answer(&agg, seed, "after a SIGKILL and restart");
    assert!(
        wait_for(Duration::from_secs(30), || (bystander_now(&agg) == 1)
            .then_some(()))
        .is_some(),
        "the real agent is not served after the restart (seed {seed})"
    );
}
