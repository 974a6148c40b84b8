//! `telltale-bench traces` (store phase; `--store-spans 2000000`, `--skip intake`): the
//! aggregator's trace store next to ClickHouse on the same spans.
//!
//! The spans are whole traces (3–12 spans, a root in one of 4 front services calling down
//! into 12 services with 6 operations each, children inside their parent's time, server and
//! client spans, 2 % of traces with a failed span, 5 attributes a span with a high-cardinality
//! user id, 3 resource attributes), starting over one hour. Telltale receives them from 4
//! simulated agents over QUIC (each service's spans through one agent, so traces cross
//! agents), acknowledged after fdatasync; the head is then cut into blocks. ClickHouse
//! (Debian's 18.16, server-wide zstd) gets the same spans over HTTP into a MergeTree `spans`
//! table ordered by service and time, and a `trace_index` table ordered by trace id (service,
//! first and last start of each trace's spans per service) built from it — the layout an
//! operator builds on a version without skip indices. Measured: bytes per span (blocks vs the
//! two tables' active parts after OPTIMIZE FINAL), a trace by id (p50/p99 over 200 random
//! traces; ClickHouse: the lookup, then the spans in the services and time it names), and a
//! search (one service, a minimum duration, the hour, 20 newest traces with their spans;
//! ClickHouse: the matching trace ids, then their spans through the lookup). Answers are
//! checked to agree.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use telltale_common::codec;
use telltale_common::trace::{Span, hex};
use telltale_common::wire::{Batch, ClientMessage};
use telltale_tests::*;

use crate::logs::{ClickHouse, dir_bytes, log_agent};
use crate::traces::{mix, shop_span};

const AGENTS: usize = 4;
const HOUR_NS: u64 = 3_600_000_000_000;
const SERVICES: [&str; 12] = [
    "cart",
    "checkout",
    "payments",
    "shipping",
    "catalog",
    "users",
    "email",
    "ads",
    "recommend",
    "currency",
    "inventory",
    "auth",
];
const FRONTS: [&str; 4] = ["frontend", "mobile-api", "partner-api", "admin"];

/// Trace `k` of `n`, starting in the hour after `t0`.
fn trace(k: u64, n: u64, t0: u64) -> Vec<Span> {
    let mut s = mix(k ^ 0x5eed);
    let mut next = |m: u64| {
        s = mix(s);
        s % m.max(1)
    };
    let id = ((mix(k) as u128) << 64 | mix(k ^ 7) as u128 | 1).to_be_bytes();
    let count = 3 + next(10) as usize;
    let failed = next(100) < 2;
    let fail_at = next(count as u64) as usize;
    let start = t0 + k * (HOUR_NS / n.max(1)) + next(1_000_000_000);
    let mut spans: Vec<Span> = Vec::with_capacity(count);
    for i in 0..count {
        let (service, parent, p_start, p_end) = if i == 0 {
            let d = 5_000_000 + next(60) * next(60) * 300_000 + next(20) * next(100_000_000);
            (FRONTS[(k % 4) as usize].to_string(), None, start, start + d)
        } else {
            let p = &spans[next(i as u64) as usize];
            (
                SERVICES[next(SERVICES.len() as u64) as usize].to_string(),
                Some(p.span_id),
                p.start_ns,
                p.end_ns,
            )
        };
        let room = p_end.saturating_sub(p_start).max(2);
        let (st, en) = if i == 0 {
            (p_start, p_end)
        } else {
            let a = p_start + next(room / 2);
            (a, a + 1 + next(p_end - a))
        };
        let op = next(6);
        let error = failed && i == fail_at;
        let route = format!(
            "{} /api/{}/{}",
            if op % 3 == 0 { "POST" } else { "GET" },
            service,
            op
        );
        let server = i == 0 || next(2) == 0;
        let net = format!("10.0.{}.{}", next(4), next(250));
        let user = format!("u{}", next(100_000));
        let host = format!("{service}-{}", next(3));
        spans.push(shop_span(
            (id, (mix(k << 8 | i as u64) | 1).to_be_bytes(), parent),
            &service,
            if op == 5 {
                "db.query".into()
            } else {
                route.clone()
            },
            &route,
            (server, st, en, error),
            [net, user, host],
        ));
    }
    spans
}

/// The agent a service's spans come through.
fn agent_of(service: &str) -> usize {
    (service
        .bytes()
        .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)))
        % AGENTS as u64) as usize
}

fn frame(spans: Vec<Span>, seq: u64) -> anyhow::Result<Vec<u8>> {
    Ok(codec::encode_frame(&ClientMessage::Batch(Batch {
        sequence: seq,
        created_ms: telltale_common::model::now_ms(),
        series: Vec::new(),
        events: Vec::new(),
        logs: Vec::new(),
        spans,
        exemplars: Vec::new(),
    }))?)
}

/// ClickHouse's array literal of strings (the values here hold no quotes or tabs).
fn ch_array<'a>(v: impl Iterator<Item = &'a str>) -> String {
    let items: Vec<String> = v.map(|x| format!("'{x}'")).collect();
    format!("[{}]", items.join(","))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Trace ids of a Jaeger answer, sorted.
fn jaeger_ids(body: &str) -> anyhow::Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(body)?;
    let mut ids: Vec<String> = v["data"]
        .as_array()
        .context("data")?
        .iter()
        .filter_map(|t| t["traceID"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    Ok(ids)
}

pub fn bench_store(tls: &Path, dir: &Path, total: u64) -> anyhow::Result<()> {
    let t0 = (telltale_common::model::now_ms() as u64 * 1_000_000).saturating_sub(2 * HOUR_NS);
    // Traces until `total` spans.
    let mut traces = 0u64;
    let mut spans_n = 0u64;
    while spans_n < total {
        spans_n += 3 + (mix(mix(traces ^ 0x5eed)) % 10);
        traces += 1;
    }
    for a in 0..AGENTS {
        certs_issue(tls, &format!("host-{a:02}"))?;
    }
    let agg = start_aggregator(tls, &dir.join("agg"), "127.0.0.1:0", "127.0.0.1:0", &[])?;
    let (http, quic) = (agg.http.to_string(), agg.quic.to_string());
    // 1. Ingest over QUIC, 2000 spans a batch.
    let mut frames: Vec<Vec<Vec<u8>>> = vec![Vec::new(); AGENTS];
    let mut pending: Vec<Vec<Span>> = vec![Vec::new(); AGENTS];
    let mut raw = 0u64;
    for k in 0..traces {
        for s in trace(k, traces, t0) {
            raw += (s.name.len() + s.service.len() + 40) as u64
                + s.attributes
                    .iter()
                    .chain(&s.resource)
                    .map(|(a, b)| (a.len() + b.len()) as u64)
                    .sum::<u64>();
            let a = agent_of(&s.service);
            pending[a].push(s);
            if pending[a].len() == 2000 {
                let seq = frames[a].len() as u64 + 1;
                frames[a].push(frame(std::mem::take(&mut pending[a]), seq)?);
            }
        }
    }
    for (a, p) in pending.into_iter().enumerate() {
        if !p.is_empty() {
            let seq = frames[a].len() as u64 + 1;
            frames[a].push(frame(p, seq)?);
        }
    }
    let pid = agg.proc.child.id();
    let c0 = crate::proc_usage(pid)?.0;
    let started = Instant::now();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for (a, f) in frames.into_iter().enumerate() {
            tasks.push(tokio::spawn(log_agent(
                tls.to_path_buf(),
                a as u64,
                agg.quic,
                f,
            )));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = crate::proc_usage(pid)?.0 - c0;
    println!(
        "Trace store: {spans_n} spans in {traces} traces ({:.0} raw bytes a span)\n",
        raw as f64 / spans_n as f64
    );
    println!("| ingest | spans/s | aggregator CPU s per 1M spans |\n|---|---|---|");
    println!(
        "| 4 agents over QUIC + mTLS, 2000 spans a batch, acknowledged after fdatasync | {:.0} | {:.2} |\n",
        spans_n as f64 / secs,
        cpu / (spans_n as f64 / 1e6)
    );
    // 2. Bytes: the head cut into blocks.
    let mut agg = agg;
    agg.proc.terminate(Duration::from_secs(30));
    let traces_dir = dir.join("agg").join("traces");
    let blocks = rt.block_on(async {
        let e = telltale_aggregator::traces::engine::TraceEngine::open(
            &traces_dir,
            Default::default(),
        )?;
        e.flush().await?;
        drop(e);
        anyhow::Ok(dir_bytes(&traces_dir.join("blocks")))
    })?;
    let ch = ClickHouse::start(dir)?;
    ch.sql("CREATE TABLE spans (trace_id String, span_id String, parent_id String, service String, name String, kind UInt8, start UInt64, duration UInt64, status UInt8, status_message String, attr_keys Array(String), attr_values Array(String), res_keys Array(String), res_values Array(String)) ENGINE = MergeTree() PARTITION BY tuple() ORDER BY (service, start)")?;
    ch.sql("CREATE TABLE trace_index (trace_id String, service String, ts_min UInt64, ts_max UInt64) ENGINE = MergeTree() PARTITION BY tuple() ORDER BY trace_id")?;
    let path = format!("/?query={}", enc("INSERT INTO spans FORMAT TabSeparated"));
    let mut body = String::with_capacity(64 << 20);
    let load = Instant::now();
    let mut rows = 0u64;
    for k in 0..traces {
        for s in trace(k, traces, t0) {
            let _ = writeln!(
                body,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                hex(&s.trace_id),
                hex(&s.span_id),
                s.parent.map(|p| hex(&p)).unwrap_or_default(),
                s.service,
                s.name,
                s.kind as u8,
                s.start_ns,
                s.duration_ns(),
                s.status as u8,
                s.status_message,
                ch_array(s.attributes.iter().map(|(k, _)| k.as_str())),
                ch_array(s.attributes.iter().map(|(_, v)| v.as_str())),
                ch_array(s.resource.iter().map(|(k, _)| k.as_str())),
                ch_array(s.resource.iter().map(|(_, v)| v.as_str())),
            );
            rows += 1;
            if rows.is_multiple_of(200_000) {
                let (st, resp) =
                    http_post(ch.http, &path, "text/tab-separated-values", body.as_bytes())?;
                anyhow::ensure!(st == 200, "ClickHouse insert: {st} {resp}");
                body.clear();
            }
        }
    }
    if !body.is_empty() {
        let (st, resp) = http_post(ch.http, &path, "text/tab-separated-values", body.as_bytes())?;
        anyhow::ensure!(st == 200, "ClickHouse insert: {st} {resp}");
    }
    ch.sql("INSERT INTO trace_index SELECT trace_id, service, min(start), max(start) FROM spans GROUP BY trace_id, service")?;
    ch.sql("OPTIMIZE TABLE spans FINAL")?;
    ch.sql("OPTIMIZE TABLE trace_index FINAL")?;
    let ch_load = load.elapsed().as_secs_f64();
    let (ch_spans, ch_index) = (ch.table_bytes("spans")?, ch.table_bytes("trace_index")?);
    let ch_bytes = ch_spans + ch_index;
    println!("| store | bytes | bytes per span | ratio |\n|---|---|---|---|");
    println!(
        "| Telltale trace blocks | {blocks} | {:.1} | **{:.2}** |",
        blocks as f64 / spans_n as f64,
        blocks as f64 / ch_bytes as f64
    );
    println!(
        "| ClickHouse 18.16 spans ({ch_spans}) + trace_index ({ch_index}), zstd, after OPTIMIZE FINAL (loaded in {ch_load:.0} s) | {ch_bytes} | {:.1} | 1 |\n",
        ch_bytes as f64 / spans_n as f64
    );
    // 3. Queries on the restarted aggregator (its data all in blocks).
    let agg = start_aggregator(tls, &dir.join("agg"), &http, &quic, &[])?;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..200u64 {
        let k = mix(i ^ 0xbeef) % traces;
        let want = trace(k, traces, t0);
        let id = hex(&want[0].trace_id);
        let t = Instant::now();
        let (st, b) = http_get(agg.http, &format!("/api/traces/{id}"))?;
        ours.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(st == 200, "trace {id}: {st} {b}");
        let v: serde_json::Value = serde_json::from_str(&b)?;
        let got = v["data"][0]["spans"].as_array().map(Vec::len).unwrap_or(0);
        let t = Instant::now();
        let sv = ch_traces(&ch, &[format!("'{id}'")])?;
        theirs.push(t.elapsed().as_secs_f64() * 1000.0);
        let ch_n = sv["rows"].as_u64().unwrap_or(0) as usize;
        anyhow::ensure!(
            got == want.len() && ch_n == want.len(),
            "trace {id}: Telltale {got}, ClickHouse {ch_n}, generated {}",
            want.len()
        );
    }
    let (o50, o99) = (percentile(&mut ours, 0.5), percentile(&mut ours, 0.99));
    let (c50, c99) = (percentile(&mut theirs, 0.5), percentile(&mut theirs, 0.99));
    // The search: checkout spans of at least 500 ms in the hour, 20 newest traces.
    let (start_us, end_us) = (t0 / 1000, (t0 + HOUR_NS + 60_000_000_000) / 1000);
    let q = format!(
        "/api/traces?service=checkout&minDuration=500ms&start={start_us}&end={end_us}&limit=20"
    );
    let (mut s_ours, mut s_theirs) = (f64::MAX, f64::MAX);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        let (st, body) = http_get(agg.http, &q)?;
        s_ours = s_ours.min(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(st == 200, "{q}: {body}");
        a = jaeger_ids(&body)?;
        let t = Instant::now();
        let ids = ch.sql(&format!(
            "SELECT trace_id FROM spans WHERE service = 'checkout' AND duration >= 500000000 AND start >= {} AND start <= {} GROUP BY trace_id ORDER BY max(start) DESC LIMIT 20 FORMAT JSONCompact",
            start_us * 1000,
            end_us * 1000
        ))?;
        let iv: serde_json::Value = serde_json::from_str(&ids)?;
        let list: Vec<String> = iv["data"]
            .as_array()
            .context("ids")?
            .iter()
            .filter_map(|r| r[0].as_str().map(|s| format!("'{s}'")))
            .collect();
        let sv = ch_traces(&ch, &list)?;
        s_theirs = s_theirs.min(t.elapsed().as_secs_f64() * 1000.0);
        b = sv["data"]
            .as_array()
            .context("rows")?
            .iter()
            .filter_map(|r| r["trace_id"].as_str().map(str::to_string))
            .collect();
        b.sort();
        b.dedup();
    }
    let agree = if a == b {
        "same 20 traces"
    } else {
        "DIFFERENT"
    };
    println!("| query | Telltale ms | ClickHouse ms | ratio | answers |\n|---|---|---|---|---|");
    println!(
        "| trace by id, p50 (200 random traces) | {o50:.1} | {c50:.1} | {:.2} | same spans |",
        o50 / c50
    );
    println!(
        "| trace by id, p99 | {o99:.1} | {c99:.1} | **{:.2}** | same spans |",
        o99 / c99
    );
    println!(
        "| search: service=checkout, minDuration=500ms, 1 h, 20 traces with their spans (best of 5) | {s_ours:.0} | {s_theirs:.0} | **{:.2}** | {agree} ({} traces) |\n",
        s_ours / s_theirs,
        a.len()
    );
    anyhow::ensure!(a == b, "the searches disagree: {a:?} vs {b:?}");
    Ok(())
}

/// ClickHouse's spans of the traces `ids` (quoted), as Tempo-like stores fetch them: the
/// trace index gives their services and time range, which narrow the read of `spans` (its
/// key is service, start).
fn ch_traces(ch: &ClickHouse, ids: &[String]) -> anyhow::Result<serde_json::Value> {
    let list = ids.join(",");
    let look = ch.sql(&format!(
        "SELECT groupUniqArray(service), min(ts_min), max(ts_max) FROM trace_index WHERE trace_id IN ({list}) FORMAT JSONCompact"
    ))?;
    let lv: serde_json::Value = serde_json::from_str(&look)?;
    let row = &lv["data"][0];
    let svcs: Vec<String> = row[0]
        .as_array()
        .context("services")?
        .iter()
        .filter_map(|x| x.as_str().map(|s| format!("'{s}'")))
        .collect();
    let spans = ch.sql(&format!(
        "SELECT * FROM spans WHERE service IN ({}) AND start >= {} AND start <= {} AND trace_id IN ({list}) FORMAT JSON",
        svcs.join(","),
        row[1].as_str().unwrap_or("0"),
        row[2].as_str().unwrap_or("0"),
    ))?;
    Ok(serde_json::from_str(&spans)?)
}
