//! `telltale-bench logs [--records 10000000] [--rate 10000] [--rss-seconds 60] [--rounds 5]
//! [--skip collection,memory,store]`:
//! the logs path next to its peers, on one seeded, realistic mix of records — nginx access
//! lines (40 %), JSON application lines with trace ids (35 %), syslog lines (22 %) and Java
//! stack traces spanning 6–16 lines (3 %) — over 24 hours, from 10 hosts, stamped in
//! nanoseconds with jitter, following a diurnal swing with bursts (see [`time_in_day`]).
//!
//! 1. **Collection**: `telltale-agent` tails the mix from 10 files (JSON parsed, stack traces
//!    joined by a start regex, levels detected, shipped over QUIC and acknowledged), next to
//!    `rsyslogd` doing the same with imfile (the same start regex), mmjsonparse for the JSON
//!    files and omfwd over TCP (octet-counted) to a local sink: CPU seconds per million
//!    records, each until the last record arrived.
//! 2. **Agent memory**: peak RSS of an agent tailing 10 files written at `--rate` records/s
//!    in all, for `--rss-seconds`.
//! 3. **Ingest**: records per second the aggregator acknowledges from 10 simulated agents
//!    over QUIC (the whole mix, which the rest reads), and through Loki push (4 senders).
//! 4. **Bytes on disk per record** after the head is cut into blocks, next to ClickHouse
//!    (`clickhouse-server`, MergeTree ordered by source, instance, level and time, zstd,
//!    after `OPTIMIZE ... FINAL`) loaded with the same records over HTTP.
//! 5. **Query latency**, best of `--rounds`: a needle search (`{source="app"} |= "<a token in
//!    10 records>"` over the 24 hours) and `sum by (level) (count_over_time({source=~".+"}[5m]))`
//!    at a 5-minute step over the 24 hours, next to the equivalent SQL; both answers checked
//!    equal.

use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use telltale_common::codec::{self, FrameDecoder};
use telltale_common::wire::{Batch, ClientMessage, LogEntry, LogStream, ServerMessage};
use telltale_tests::*;

use crate::{arg, connect_sim, mib, proc_usage, rand_epoch};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";
const CLICKHOUSE: &str = "/usr/sbin/clickhouse-server";
const HOSTS: u64 = 10;
const DAY_NS: i64 = 86_400 * 1_000_000_000;
/// The rare token of the needle search, in exactly [`NEEDLES`] records.
const NEEDLE: &str = "needle-5a7c9e1f0b";
const NEEDLES: u64 = 10;
const JAVA_START: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} ";

/// Kills a child process when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Nginx,
    App,
    Syslog,
    Java,
}

impl Kind {
    fn source(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::App => "app",
            Kind::Syslog => "syslog",
            Kind::Java => "java",
        }
    }
}

/// One record of the mix.
struct Record {
    t_ns: i64,
    kind: Kind,
    host: u64,
    level: &'static str,
    line: String,
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Minutes of the day as `(share of the records, share before it)`: a diurnal swing (0.4× at
/// night to 1.6× at noon) and bursts (3 % of minutes at 4–16×), seeded.
fn minute_shares() -> &'static [(f64, f64)] {
    static SHARES: std::sync::OnceLock<Vec<(f64, f64)>> = std::sync::OnceLock::new();
    SHARES.get_or_init(|| {
        let weights: Vec<f64> = (0..1440u64)
            .map(|m| {
                let day = (std::f64::consts::PI * m as f64 / 1440.0).sin();
                let h = mix(m ^ 0xb1257);
                let burst = if h % 100 < 3 {
                    4.0 + (h >> 8) as f64 % 13.0
                } else {
                    1.0
                };
                (0.4 + 1.2 * day * day) * burst
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let mut before = 0.0;
        weights
            .into_iter()
            .map(|w| {
                let share = w / total;
                before += share;
                (share, before - share)
            })
            .collect()
    })
}

/// Nanoseconds into the day of record `i` of `n`: records follow [`minute_shares`], evenly
/// within a minute, each moved later by up to a quarter of the smaller of its own and the
/// next minute's spacing (`jitter` of 2^30: a random draw) — real senders stamp in
/// nanoseconds and burst; the order of records is kept.
fn time_in_day(i: u64, n: u64, jitter: u64) -> i64 {
    let shares = minute_shares();
    let u = i as f64 / n.max(1) as f64;
    let m = shares
        .partition_point(|&(_, before)| before <= u)
        .saturating_sub(1);
    let (share, before) = shares[m];
    let minute_ns = 60_000_000_000f64;
    let base = (m as f64 + ((u - before) / share).clamp(0.0, 1.0)) * minute_ns;
    let next = shares.get(m + 1).map_or(share, |&(s, _)| s);
    let spacing = minute_ns / (share.max(next) * n.max(1) as f64);
    let jitter = (jitter as f64 / (1u64 << 30) as f64) * spacing / 4.0;
    (base + jitter) as i64
}

/// Record `i` of `n` (deterministic: every phase regenerates the same records).
fn record(i: u64, n: u64, t0: i64) -> Record {
    let mut s = mix(i ^ 0x7e11_7a1e);
    let mut r = |m: u64| {
        s = mix(s);
        s % m
    };
    let t_ns = t0 + time_in_day(i, n, r(1 << 30));
    let needle = i % (n / NEEDLES).max(1) == 7 && i / (n / NEEDLES).max(1) < NEEDLES;
    let p = r(100);
    let kind = if needle {
        Kind::App
    } else if p < 40 {
        Kind::Nginx
    } else if p < 75 {
        Kind::App
    } else if p < 97 {
        Kind::Syslog
    } else {
        Kind::Java
    };
    let host = r(HOSTS);
    let secs = t_ns / 1_000_000_000;
    let (hh, mm, ss) = (secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let paths = [
        "/api/users",
        "/api/orders",
        "/api/items",
        "/login",
        "/static/app.js",
        "/health",
    ];
    let words = [
        "cache", "db", "queue", "auth", "payment", "search", "mailer", "session",
    ];
    let (level, line) = match kind {
        Kind::Nginx => {
            let status = [200, 200, 200, 200, 201, 204, 301, 304, 404, 500, 502][r(11) as usize];
            let level = match status {
                500.. => "error",
                400.. => "warn",
                _ => "info",
            };
            (
                level,
                format!(
                    "10.{}.{}.{} - - [02/Dec/2026:{hh:02}:{mm:02}:{ss:02} +0000] \"{} {} HTTP/1.1\" {status} {} \"https://shop.example.com{}\" \"Mozilla/5.0 (X11; Linux x86_64) Chrome/{}.0\" {}.{:03}",
                    r(4),
                    r(256),
                    r(256),
                    ["GET", "GET", "GET", "POST", "PUT"][r(5) as usize],
                    paths[r(6) as usize],
                    r(60_000),
                    paths[r(6) as usize],
                    100 + r(30),
                    r(2),
                    r(1000)
                ),
            )
        }
        Kind::App => {
            let level = ["info", "info", "info", "info", "debug", "warn", "error"][r(7) as usize];
            let msg = if needle {
                format!("payment declined by issuer, reference {NEEDLE}")
            } else {
                [
                    "request served",
                    "cache miss, loading from db",
                    "retrying upstream call",
                    "user session refreshed",
                    "order placed",
                    "slow query detected",
                ][r(6) as usize]
                    .to_string()
            };
            (
                level,
                format!(
                    r#"{{"ts":"2026-12-02T{hh:02}:{mm:02}:{ss:02}.{:03}Z","level":"{level}","msg":"{msg}","service":"{}","trace_id":"{:016x}{:016x}","span_id":"{:016x}","user":"u{}","latency_ms":{}.{},"path":"{}"}}"#,
                    r(1000),
                    words[r(8) as usize],
                    r(u64::MAX),
                    r(u64::MAX),
                    r(u64::MAX),
                    r(100_000),
                    r(2000),
                    r(10),
                    paths[r(6) as usize]
                ),
            )
        }
        Kind::Syslog => {
            let (level, text) = match r(5) {
                0 => (
                    "info",
                    format!(
                        "sshd[{}]: Accepted publickey for deploy from 10.0.{}.{} port {} ssh2",
                        r(40_000),
                        r(256),
                        r(256),
                        1024 + r(60_000)
                    ),
                ),
                1 => (
                    "info",
                    format!(
                        "CRON[{}]: (root) CMD (/usr/local/bin/backup.sh --incremental)",
                        r(40_000)
                    ),
                ),
                2 => (
                    "warn",
                    format!(
                        "kernel: [{}.{:06}] TCP: request_sock_TCP: Possible SYN flooding on port {}. Sending cookies.",
                        r(100_000),
                        r(1_000_000),
                        [80, 443, 8080][r(3) as usize]
                    ),
                ),
                3 => (
                    "error",
                    format!(
                        "systemd[1]: {}.service: Main process exited, code=exited, status={}/FAILURE",
                        words[r(8) as usize],
                        1 + r(3)
                    ),
                ),
                _ => (
                    "info",
                    format!(
                        "dhclient[{}]: DHCPACK of 10.0.{}.{} from 10.0.0.1",
                        r(40_000),
                        r(256),
                        r(256)
                    ),
                ),
            };
            (
                level,
                format!("Dec  2 {hh:02}:{mm:02}:{ss:02} host-{host:02} {text}"),
            )
        }
        Kind::Java => {
            let mut l = format!(
                "2026-12-02 {hh:02}:{mm:02}:{ss:02}.{:03} ERROR [http-nio-8080-exec-{}] c.e.shop.OrderService - Request failed: java.lang.IllegalStateException: {} unavailable",
                r(1000),
                r(200),
                words[r(8) as usize]
            );
            for k in 0..5 + r(11) {
                l.push_str(&format!(
                    "\n\tat com.example.shop.{}.{}(Service{}.java:{})",
                    ["OrderService", "PaymentClient", "Repository", "Controller"][r(4) as usize],
                    ["handle", "process", "load", "call"][r(4) as usize],
                    k,
                    10 + r(900)
                ));
            }
            ("error", l)
        }
    };
    Record {
        t_ns,
        kind,
        host,
        level,
        line,
    }
}

/// The file a record is written to for the tailing phases (10 files).
fn file_of(r: &Record, i: u64) -> String {
    match r.kind {
        Kind::Nginx => format!("access-{}.log", i % 4),
        Kind::App => format!("app-{}.json", i % 3),
        Kind::Syslog => format!("syslog-{}.log", i % 2),
        Kind::Java => "java-0.log".into(),
    }
}

const FILES: [&str; 10] = [
    "access-0.log",
    "access-1.log",
    "access-2.log",
    "access-3.log",
    "app-0.json",
    "app-1.json",
    "app-2.json",
    "syslog-0.log",
    "syslog-1.log",
    "java-0.log",
];

fn agent_config(files: &Path, start_at: &str) -> String {
    let f = files.display();
    format!(
        r#"[buffer]
logs_max_bytes = "512MiB"

[[log]]
name = "nginx"
type = "file"
paths = ["{f}/access-*.log"]
start_at = "{start_at}"

[[log]]
name = "app"
type = "file"
paths = ["{f}/app-*.json"]
parser = "json"
start_at = "{start_at}"

[[log]]
name = "syslog"
type = "file"
paths = ["{f}/syslog-*.log"]
start_at = "{start_at}"

[[log]]
name = "java"
type = "file"
paths = ["{f}/java-*.log"]
multiline_start = '{JAVA_START}'
start_at = "{start_at}"
"#
    )
}

/// An agent with extra environment variables (10 s interval).
fn start_agent_env(
    tls: &Path,
    name: &str,
    quic: SocketAddr,
    data: &Path,
    config: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(bin("telltale-agent")?);
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .args(["--name", name, "--interval", "10s"])
        .args(["--aggregator", &format!("localhost:{}", quic.port())])
        .arg("--data-dir")
        .arg(data)
        .arg("--ca")
        .arg(tls.join("ca.crt"))
        .arg("--cert")
        .arg(tls.join(format!("agents/{name}.crt")))
        .arg("--key")
        .arg(tls.join(format!("agents/{name}.key")))
        .envs(env.iter().copied());
    Ok(Proc::spawn(cmd, name)?.0)
}

/// Records the aggregator holds from `instance` (from the index: cheap).
fn stored(agg: &Aggregator, instance: &str) -> u64 {
    let path = format!(
        "/loki/api/v1/index/stats?query={}&start=0&end={}",
        enc(&format!("{{instance=\"{instance}\"}}")),
        i64::MAX / 2
    );
    http_get(agg.http, &path)
        .ok()
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["entries"].as_u64())
        .unwrap_or(0)
}

/// A TCP sink counting octet-counted syslog frames (RFC 6587).
fn sink(count: Arc<AtomicU64>) -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let count = count.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 1 << 16];
                loop {
                    let n = match c.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let mut at = 0;
                    while let Some(sp) = buf[at..].iter().position(|&b| b == b' ') {
                        let Some(len) = std::str::from_utf8(&buf[at..at + sp])
                            .ok()
                            .and_then(|s| s.parse::<usize>().ok())
                        else {
                            return;
                        };
                        if buf.len() < at + sp + 1 + len {
                            break;
                        }
                        at += sp + 1 + len;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    buf.drain(..at);
                }
            });
        }
    });
    Ok(addr)
}

fn rsyslog_config(files: &Path, work: &Path, sink: SocketAddr) -> String {
    let f = files.display();
    let fwd = format!(
        r#"action(type="omfwd" target="{}" port="{}" protocol="tcp" TCP_Framing="octet-counted")"#,
        sink.ip(),
        sink.port()
    );
    format!(
        r#"global(workDirectory="{w}")
module(load="imfile")
module(load="mmjsonparse")
input(type="imfile" File="{f}/access-*.log" Tag="nginx" ruleset="fwd")
input(type="imfile" File="{f}/app-*.json" Tag="app" ruleset="json")
input(type="imfile" File="{f}/syslog-*.log" Tag="syslog" ruleset="fwd")
input(type="imfile" File="{f}/java-*.log" Tag="java" ruleset="fwd" startmsg.regex="{JAVA_START}" readTimeout="2")
ruleset(name="fwd") {{ {fwd} }}
ruleset(name="json") {{ action(type="mmjsonparse" cookie="") {fwd} }}
"#,
        w = work.display()
    )
}

/// Waits until `done()` or `limit`; returns the seconds it took.
pub(crate) fn until(limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<f64> {
    let t = Instant::now();
    while !done() {
        if t.elapsed() > limit {
            bail!("not done after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(t.elapsed().as_secs_f64())
}

pub fn bench_logs(args: &[String]) -> anyhow::Result<()> {
    let n: u64 = arg(args, "--records", 10_000_000);
    let rate: u64 = arg(args, "--rate", 10_000);
    let rss_secs: u64 = arg(args, "--rss-seconds", 60);
    let rounds: usize = arg(args, "--rounds", 5);
    for (p, pkg) in [(RSYSLOGD, "rsyslog"), (CLICKHOUSE, "clickhouse-server")] {
        if !Path::new(p).exists() {
            bail!("{p} is missing: apt-get install {pkg}");
        }
    }
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))?;
    let tls = dir.path().join("tls");
    certs_init(&tls)?;
    let t0 = (telltale_common::model::now_ms() * 1_000_000) - DAY_NS;

    // The files.
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files)?;
    let started = Instant::now();
    let mut writers: Vec<(String, BufWriter<std::fs::File>)> = FILES
        .iter()
        .map(|f| {
            Ok((
                f.to_string(),
                BufWriter::with_capacity(1 << 20, std::fs::File::create(files.join(f))?),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let (mut bytes, mut physical) = (0u64, 0u64);
    for i in 0..n {
        let r = record(i, n, t0);
        let name = file_of(&r, i);
        let w = &mut writers
            .iter_mut()
            .find(|(f, _)| *f == name)
            .context("file")?
            .1;
        w.write_all(r.line.as_bytes())?;
        w.write_all(b"\n")?;
        bytes += r.line.len() as u64 + 1;
        physical += 1 + r.line.matches('\n').count() as u64;
    }
    for (_, w) in &mut writers {
        w.flush()?;
    }
    drop(writers);
    println!(
        "\nLogs benchmark: {n} records ({physical} lines, {:.0} MiB) over 24 h from {HOSTS} hosts, written in {:.0} s\n",
        mib(bytes),
        started.elapsed().as_secs_f64()
    );

    let skip: String = arg(args, "--skip", String::new());
    let skip: Vec<&str> = skip.split(',').collect();
    if !skip.contains(&"collection") {
        collection(dir.path(), &tls, &files, n)?;
    }
    if !skip.contains(&"memory") {
        memory(dir.path(), &tls, n, t0, rate, rss_secs)?;
    }
    if skip.contains(&"store") {
        return Ok(());
    }

    // 3. Ingest over QUIC (the data set the rest reads), then through Loki push.
    let data = dir.path().join("store");
    let agg = start_fresh_aggregator(&tls, &data)?;
    for h in 0..HOSTS {
        certs_issue(&tls, &format!("host-{h:02}"))?;
    }
    // Every batch is encoded before the clock starts: the bench's own work stays out of it.
    let mut frames: Vec<Vec<Vec<u8>>> = vec![Vec::new(); HOSTS as usize];
    let mut pending: Vec<Vec<Record>> = (0..HOSTS).map(|_| Vec::new()).collect();
    for i in 0..n {
        let r = record(i, n, t0);
        let h = r.host as usize;
        pending[h].push(r);
        if pending[h].len() == 1000 || i + 1 == n {
            for (h, p) in pending.iter_mut().enumerate() {
                if p.len() == 1000 || (i + 1 == n && !p.is_empty()) {
                    let seq = frames[h].len() as u64 + 1;
                    frames[h].push(batch_frame(std::mem::take(p), seq)?);
                }
            }
        }
    }
    let agg_pid = agg.proc.child.id();
    let c0 = proc_usage(agg_pid)?.0;
    let t = Instant::now();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut tasks = Vec::new();
        for (h, f) in frames.into_iter().enumerate() {
            tasks.push(tokio::spawn(log_agent(tls.clone(), h as u64, agg.quic, f)));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;
    let quic_secs = t.elapsed().as_secs_f64();
    let quic_cpu = proc_usage(agg_pid)?.0 - c0;
    let push_n = (n / 5).max(1);
    let (push_secs, push_cpu) = push_ingest(&tls, dir.path(), push_n, t0)?;
    println!("Aggregator ingest (acknowledged after fdatasync, loopback):\n");
    println!("| path | records | records/s | aggregator CPU s per 1M records |\n|---|---|---|---|");
    println!(
        "| 10 agents over QUIC + mTLS | {n} | {:.0} | {:.2} |",
        n as f64 / quic_secs,
        quic_cpu / (n as f64 / 1e6)
    );
    println!(
        "| Loki push (protobuf + snappy, 4 senders, 1000 records per request) | {push_n} | {:.0} | {:.2} |\n",
        push_n as f64 / push_secs,
        push_cpu / (push_n as f64 / 1e6)
    );

    // 4. Bytes on disk: the head cut into blocks, next to ClickHouse after its merges.
    drop(agg);
    // start_fresh_aggregator keeps its data in `<dir>/agg`.
    let data = data.join("agg");
    let logs_dir = data.join("logs");
    let (blocks_bytes, wal_bytes) = rt.block_on(async {
        let engine =
            telltale_aggregator::logs::engine::LogEngine::open(&logs_dir, Default::default())?;
        engine.flush().await?;
        drop(engine);
        anyhow::Ok((
            dir_bytes(&logs_dir.join("blocks")),
            dir_bytes(&logs_dir.join("wal")),
        ))
    })?;
    let ch = ClickHouse::start(dir.path())?;
    ch.sql("CREATE TABLE logs (source String, instance String, level String, ts UInt64, line String) ENGINE = MergeTree() PARTITION BY tuple() ORDER BY (source, instance, level, ts)")?;
    let t = Instant::now();
    ch.load(n, t0)?;
    let ch_load = t.elapsed().as_secs_f64();
    ch.sql("OPTIMIZE TABLE logs FINAL")?;
    let ch_bytes = ch.table_bytes("logs")?;
    println!(
        "Bytes on disk per record ({:.0} raw bytes per record):\n",
        bytes as f64 / n as f64
    );
    println!("| store | bytes | bytes per record | ratio |\n|---|---|---|---|");
    println!(
        "| Telltale blocks (+ {wal_bytes} B of WAL) | {blocks_bytes} | {:.1} | **{:.2}** |",
        blocks_bytes as f64 / n as f64,
        blocks_bytes as f64 / ch_bytes as f64
    );
    println!(
        "| ClickHouse 18.16 MergeTree, zstd, after OPTIMIZE FINAL (loaded in {ch_load:.0} s) | {ch_bytes} | {:.1} | 1 |\n",
        ch_bytes as f64 / n as f64
    );

    // 5. Queries, best of `rounds`, both answers checked.
    // The whole day is read by the count query: the per-query read bound is raised past it.
    let qcfg = dir.path().join("query.toml");
    std::fs::write(&qcfg, "[logs]\nmax_query_bytes = \"64GiB\"\n")?;
    let agg = start_aggregator(
        &tls,
        &data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--config", qcfg.to_str().context("path")?],
    )?;
    let (start, end) = (t0, t0 + DAY_NS);
    let needle_q = format!(
        "/loki/api/v1/query_range?query={}&start={start}&end={end}&limit=100&direction=backward",
        enc(&format!("{{source=\"app\"}} |= \"{NEEDLE}\""))
    );
    let needle_sql = format!(
        "SELECT ts, line FROM logs WHERE source = 'app' AND position(line, '{NEEDLE}') > 0 ORDER BY ts DESC LIMIT 100 FORMAT JSON"
    );
    let step = 300_000_000_000i64;
    let first_step = start - start.rem_euclid(step) + step;
    let count_q = format!(
        "/loki/api/v1/query_range?query={}&start={first_step}&end={end}&step=300",
        enc(r#"sum by (level) (count_over_time({source=~".+"}[5m]))"#)
    );
    let last_step = first_step + (end - first_step) / step * step;
    let count_sql = format!(
        "SELECT level, intDiv(ts - 1, {step}) AS b, count() AS c FROM logs WHERE ts > {} AND ts <= {last_step} GROUP BY level, b FORMAT JSON",
        first_step - step
    );
    let mut rows = Vec::new();
    for (name, path, sql) in [
        (
            "needle: {source=\"app\"} \\|= \"<token in 10 records>\", 24 h",
            &needle_q,
            &needle_sql,
        ),
        (
            "sum by (level) (count_over_time({source=~\".+\"}[5m])), 24 h at 5 m",
            &count_q,
            &count_sql,
        ),
    ] {
        let (mut ours, mut theirs) = (f64::MAX, f64::MAX);
        let (mut our_body, mut their_body) = (String::new(), String::new());
        for _ in 0..rounds {
            let t = Instant::now();
            let (status, body) = http_get(agg.http, path)?;
            ours = ours.min(t.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(status == 200, "{path}: {body}");
            our_body = body;
            let t = Instant::now();
            their_body = ch.sql(sql)?;
            theirs = theirs.min(t.elapsed().as_secs_f64() * 1000.0);
        }
        let check = compare(name, &our_body, &their_body)?;
        rows.push((name, ours, theirs, check));
    }
    println!("Query latency, best of {rounds} (HTTP on loopback):\n");
    println!("| query | Telltale ms | ClickHouse ms | ratio | answers |\n|---|---|---|---|---|");
    for (name, a, b, check) in rows {
        println!(
            "| `{name}` | {a:.0} | {b:.0} | **{:.2}** | {check} |",
            a / b
        );
    }
    Ok(())
}

/// 1. Collection: the agent, then rsyslog, on the same files.
fn collection(dir: &Path, tls: &Path, files: &Path, n: u64) -> anyhow::Result<()> {
    // 1. Collection: agent, then rsyslog, on the same files.
    let agg = start_fresh_aggregator(tls, &dir.join("collect"))?;
    certs_issue(tls, "bench-tail")?;
    let cfg = dir.join("agent-tail.toml");
    std::fs::write(&cfg, agent_config(files, "beginning"))?;
    let agent = start_agent_with_config(
        tls,
        "bench-tail",
        agg.quic,
        &dir.join("agent-tail"),
        "10s",
        Some(&cfg),
    )?;
    let pid = agent.child.id();
    // The agent's buffer on disk while it catches up (sled and the log segments).
    let (buffer_dir, mut buffer_peak, mut polls) = (dir.join("agent-tail"), 0u64, 0u64);
    let agent_secs = until(Duration::from_secs(3600), || {
        polls += 1;
        if polls % 5 == 0 {
            buffer_peak = buffer_peak.max(dir_bytes(&buffer_dir));
        }
        stored(&agg, "bench-tail") >= n
    })?;
    let (agent_cpu, agent_hwm, _) = proc_usage(pid)?;
    drop(agent);
    drop(agg);
    let count = Arc::new(AtomicU64::new(0));
    let sink_addr = sink(count.clone())?;
    let work = dir.join("rsyslog");
    std::fs::create_dir_all(&work)?;
    let conf = dir.join("rsyslog.conf");
    std::fs::write(&conf, rsyslog_config(files, &work, sink_addr))?;
    let rs = Guard(
        Command::new(RSYSLOGD)
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let rs_secs = until(Duration::from_secs(3600), || {
        count.load(Ordering::Relaxed) >= n
    })?;
    let (rs_cpu, rs_hwm, _) = proc_usage(rs.0.id())?;
    drop(rs);
    let per_m = |cpu: f64| cpu / (n as f64 / 1e6);
    println!(
        "Collection: tail the 10 files from their start until the last record arrived (JSON parsed, stack traces joined)\n"
    );
    println!("| collector | CPU s | CPU s per 1M records | wall s | peak RSS MiB |");
    println!("|---|---|---|---|---|");
    println!(
        "| telltale-agent (QUIC, acknowledged, stored) | {agent_cpu:.1} | {:.2} | {agent_secs:.0} | {:.1} |",
        per_m(agent_cpu),
        mib(agent_hwm)
    );
    println!(
        "| rsyslogd 8.2302 (imfile, mmjsonparse, omfwd TCP) | {rs_cpu:.1} | {:.2} | {rs_secs:.0} | {:.1} |",
        per_m(rs_cpu),
        mib(rs_hwm)
    );
    println!(
        "| **ratio agent / rsyslog** | | **{:.2}** | | |\n",
        agent_cpu / rs_cpu
    );
    println!(
        "Agent data directory (buffer) at its largest, sampled every second: {:.1} MiB\n",
        mib(buffer_peak)
    );
    Ok(())
}

/// 2. Agent memory while 10 files grow at `rate` records/s in all.
fn memory(dir: &Path, tls: &Path, n: u64, t0: i64, rate: u64, rss_secs: u64) -> anyhow::Result<()> {
    // 2. Agent memory while 10 files grow at `rate` records/s in all.
    let agg = start_fresh_aggregator(tls, &dir.join("rss"))?;
    // Each agent tails its own copy of the files' lines.
    let start = |name: &str, env: &[(&str, &str)]| -> anyhow::Result<(PathBuf, Proc)> {
        let live = dir.join(format!("live-{name}"));
        std::fs::create_dir_all(&live)?;
        certs_issue(tls, name)?;
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&cfg, agent_config(&live, "beginning"))?;
        let agent = start_agent_env(tls, name, agg.quic, &dir.join(name), &cfg, env)?;
        Ok((live, agent))
    };
    let (live, agent) = start("bench-rss", &[])?;
    // The same with the malloc setting the packaged unit gives the agent
    // (packaging/systemd/telltale-agent.service).
    let (live_unit, agent_unit) = start("bench-rss-unit", &[("MALLOC_ARENA_MAX", "2")])?;
    let mut outs_unit: Vec<std::fs::File> = FILES
        .iter()
        .map(|f| Ok(std::fs::File::create(live_unit.join(f))?))
        .collect::<anyhow::Result<_>>()?;
    let mut outs: Vec<(String, std::fs::File)> = FILES
        .iter()
        .map(|f| Ok((f.to_string(), std::fs::File::create(live.join(f))?)))
        .collect::<anyhow::Result<_>>()?;
    let start = Instant::now();
    let mut written = 0u64;
    while start.elapsed() < Duration::from_secs(rss_secs) {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        let mut per_file: Vec<Vec<u8>> = vec![Vec::new(); FILES.len()];
        while written < due {
            let r = record(written, n, t0);
            let name = file_of(&r, written);
            let k = FILES.iter().position(|f| *f == name).context("file")?;
            per_file[k].extend_from_slice(r.line.as_bytes());
            per_file[k].push(b'\n');
            written += 1;
        }
        for (k, b) in per_file.iter().enumerate() {
            if !b.is_empty() {
                outs[k].1.write_all(b)?;
                outs_unit[k].write_all(b)?;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let caught_up = until(Duration::from_secs(120), || {
        stored(&agg, "bench-rss") >= written && stored(&agg, "bench-rss-unit") >= written
    })
    .is_ok();
    println!(
        "Agent memory: two agents, each tailing 10 files written at {rate} records/s in all for {rss_secs} s ({written} records{})\n",
        if caught_up {
            ", all stored"
        } else {
            ", NOT all stored in time"
        }
    );
    println!("| agent | peak RSS MiB | RSS at end MiB | CPU s |\n|---|---|---|---|");
    for (what, a) in [
        ("glibc's default malloc arenas", &agent),
        (
            "MALLOC_ARENA_MAX=2, as the packaged unit runs it",
            &agent_unit,
        ),
    ] {
        let (cpu, hwm, now) = proc_usage(a.child.id())?;
        println!("| {what} | {:.1} | {:.1} | {cpu:.1} |", mib(hwm), mib(now));
    }
    println!();
    drop(agent);
    drop(agent_unit);
    drop(agg);
    Ok(())
}

/// Checks both answers agree; returns what was compared.
fn compare(name: &str, ours: &str, theirs: &str) -> anyhow::Result<String> {
    let o: serde_json::Value = serde_json::from_str(ours)?;
    let t: serde_json::Value = serde_json::from_str(theirs)?;
    if name.starts_with("needle") {
        let mut a: Vec<String> = o["data"]["result"]
            .as_array()
            .context("streams")?
            .iter()
            .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
            .map(|v| v[0].as_str().unwrap_or("").to_string())
            .collect();
        let mut b: Vec<String> = t["data"]
            .as_array()
            .context("rows")?
            .iter()
            .map(|r| {
                r["ts"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| r["ts"].to_string())
            })
            .collect();
        a.sort();
        b.sort();
        anyhow::ensure!(
            a == b && a.len() as u64 == NEEDLES,
            "needle answers differ: {a:?} vs {b:?}"
        );
        return Ok(format!("same {} records", a.len()));
    }
    let mut ours_total = std::collections::BTreeMap::<String, f64>::new();
    for s in o["data"]["result"].as_array().context("matrix")? {
        let level = s["metric"]["level"].as_str().unwrap_or("").to_string();
        for v in s["values"].as_array().context("values")? {
            *ours_total.entry(level.clone()).or_default() +=
                v[1].as_str().unwrap_or("0").parse::<f64>()?;
        }
    }
    let mut theirs_total = std::collections::BTreeMap::<String, f64>::new();
    let mut cells = 0;
    for r in t["data"].as_array().context("rows")? {
        let c: f64 = r["c"]
            .as_str()
            .map(|s| s.parse())
            .unwrap_or(Ok(r["c"].as_f64().unwrap_or(0.0)))?;
        *theirs_total
            .entry(r["level"].as_str().unwrap_or("").to_string())
            .or_default() += c;
        cells += 1;
    }
    anyhow::ensure!(
        ours_total == theirs_total,
        "counts differ: {ours_total:?} vs {theirs_total:?}"
    );
    Ok(format!("same counts in {cells} (level, 5 m) cells"))
}

pub(crate) fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Records grouped into streams by their labels (`instance` too for Loki push: agents get
/// theirs from the certificate).
fn streams_of(records: impl IntoIterator<Item = Record>, instance: bool) -> Vec<LogStream> {
    let mut streams: Vec<LogStream> = Vec::new();
    for r in records {
        let mut labels = Vec::with_capacity(3);
        if instance {
            labels.push(("instance".to_string(), format!("host-{:02}", r.host)));
        }
        labels.push(("level".to_string(), r.level.to_string()));
        labels.push(("source".to_string(), r.kind.source().to_string()));
        let entry = LogEntry {
            t_ns: r.t_ns,
            line: r.line,
            metadata: Vec::new(),
        };
        match streams.iter_mut().find(|s| s.labels == labels) {
            Some(s) => s.entries.push(entry),
            None => streams.push(LogStream {
                labels,
                entries: vec![entry],
            }),
        }
    }
    streams
}

/// A wire batch of log records, framed.
fn batch_frame(records: Vec<Record>, seq: u64) -> anyhow::Result<Vec<u8>> {
    Ok(codec::encode_frame(&ClientMessage::Batch(Batch {
        sequence: seq,
        created_ms: telltale_common::model::now_ms(),
        series: Vec::new(),
        events: Vec::new(),
        spans: Vec::new(),
        exemplars: Vec::new(),
        logs: streams_of(records, false),
    }))?)
}

/// One simulated agent (`host-NN`) sending its batches with a window of 32, until all are
/// acknowledged.
pub(crate) async fn log_agent(
    tls: PathBuf,
    host: u64,
    addr: SocketAddr,
    frames: Vec<Vec<u8>>,
) -> anyhow::Result<()> {
    let name = format!("host-{host:02}");
    let (conn, mut send, mut recv) = connect_sim(&tls, &name, addr, rand_epoch() ^ host).await?;
    let window = Arc::new(tokio::sync::Semaphore::new(32));
    let w2 = window.clone();
    let acked = Arc::new(AtomicU64::new(0));
    let ab = acked.clone();
    let reader = tokio::spawn(async move {
        let mut dec = FrameDecoder::new(codec::DEFAULT_MAX_FRAME);
        while let Ok(Some(c)) = recv.read_chunk(1 << 16, true).await {
            if dec.push(&c.bytes).is_err() {
                break;
            }
            while let Ok(Some(p)) = dec.poll_frame() {
                if let Ok(ServerMessage::Ack { .. }) = codec::decode_payload(&p) {
                    ab.fetch_add(1, Ordering::Relaxed);
                    w2.add_permits(1);
                }
            }
        }
    });
    let total = frames.len() as u64;
    for f in frames {
        window.acquire().await?.forget();
        send.write_all(&f).await?;
    }
    while acked.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.abort();
    conn.close(0u32.into(), b"done");
    Ok(())
}

/// Pushes `n` records of the mix through Loki push with 4 senders to a fresh aggregator;
/// returns seconds and aggregator CPU seconds.
fn push_ingest(tls: &Path, dir: &Path, n: u64, t0: i64) -> anyhow::Result<(f64, f64)> {
    let agg = start_aggregator(
        tls,
        &dir.join("push"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--api-token", "bench"],
    )?;
    // Every request is encoded before the clock starts.
    let mut bodies: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 4];
    let mut i = 0;
    while i < n {
        let streams = streams_of((i..(i + 1000).min(n)).map(|j| record(j, n, t0)), true);
        bodies[(i / 1000 % 4) as usize]
            .push(telltale_aggregator::logs::push::encode_protobuf(&streams));
        i += 1000;
    }
    let pid = agg.proc.child.id();
    let c0 = proc_usage(pid)?.0;
    let t = Instant::now();
    let failed = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        for mine in &bodies {
            let (agg, failed) = (&agg, failed.clone());
            s.spawn(move || {
                for body in mine {
                    match http_post_auth(
                        agg.http,
                        "/loki/api/v1/push",
                        "application/x-protobuf",
                        body,
                        Some("bench"),
                    ) {
                        Ok((204, _)) => {}
                        other => {
                            eprintln!("push failed: {other:?}");
                            failed.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            });
        }
    });
    anyhow::ensure!(!failed.load(Ordering::Relaxed), "a push failed");
    Ok((t.elapsed().as_secs_f64(), proc_usage(pid)?.0 - c0))
}

/// A ClickHouse server of its own on free ports.
pub(crate) struct ClickHouse {
    _proc: Guard,
    pub(crate) http: SocketAddr,
    data: PathBuf,
}

impl ClickHouse {
    pub(crate) fn start(dir: &Path) -> anyhow::Result<ClickHouse> {
        let home = dir.join("clickhouse");
        std::fs::create_dir_all(&home)?;
        let http_port = telltale_tests::peers::free_tcp_port();
        let tcp_port = telltale_tests::peers::free_tcp_port();
        std::fs::copy("/etc/clickhouse-server/users.xml", home.join("users.xml"))?;
        let h = home.display();
        std::fs::write(
            home.join("config.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{h}/server.log</log><errorlog>{h}/err.log</errorlog></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{h}/data/</path>
  <tmp_path>{h}/tmp/</tmp_path>
  <user_files_path>{h}/user_files/</user_files_path>
  <format_schema_path>{h}/format_schemas/</format_schema_path>
  <users_config>{h}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>1073741824</mark_cache_size>
  <compression><case><method>zstd</method></case></compression>
</yandex>
"#
            ),
        )?;
        let proc = Guard(
            Command::new(CLICKHOUSE)
                .arg(format!("--config-file={h}/config.xml"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let http = SocketAddr::from(([127, 0, 0, 1], http_port));
        let ch = ClickHouse {
            _proc: proc,
            http,
            data: home.join("data"),
        };
        until(Duration::from_secs(60), || ch.sql("SELECT 1").is_ok())?;
        Ok(ch)
    }

    pub(crate) fn sql(&self, q: &str) -> anyhow::Result<String> {
        let (status, body) = http_post(self.http, "/", "text/plain", q.as_bytes())?;
        anyhow::ensure!(status == 200, "ClickHouse: {status} {body}");
        Ok(body)
    }

    /// Loads the mix over HTTP in inserts of 200 000 rows (TabSeparated, escaped).
    fn load(&self, n: u64, t0: i64) -> anyhow::Result<()> {
        let mut body = Vec::with_capacity(64 << 20);
        let path = format!("/?query={}", enc("INSERT INTO logs FORMAT TabSeparated"));
        for i in 0..n {
            let r = record(i, n, t0);
            let mut line = String::with_capacity(r.line.len() + 8);
            for c in r.line.chars() {
                match c {
                    '\\' => line.push_str("\\\\"),
                    '\t' => line.push_str("\\t"),
                    '\n' => line.push_str("\\n"),
                    c => line.push(c),
                }
            }
            writeln!(
                body,
                "{}\thost-{:02}\t{}\t{}\t{line}",
                r.kind.source(),
                r.host,
                r.level,
                r.t_ns
            )?;
            if (i + 1) % 200_000 == 0 || i + 1 == n {
                let (status, resp) =
                    http_post(self.http, &path, "text/tab-separated-values", &body)?;
                anyhow::ensure!(status == 200, "ClickHouse insert: {status} {resp}");
                body.clear();
            }
        }
        Ok(())
    }

    /// Bytes of a table's active parts.
    pub(crate) fn table_bytes(&self, table: &str) -> anyhow::Result<u64> {
        let b = self.sql(&format!(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND table = '{table}'"
        ))?;
        let v: u64 = b.trim().parse().context("bytes_on_disk")?;
        let du = dir_bytes(&self.data.join(format!("data/default/{table}")));
        anyhow::ensure!(v > 0 && du >= v / 2, "odd sizes: parts {v}, directory {du}");
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_times_keep_their_order_jitter_and_burst() {
        let n = 200_000;
        let times: Vec<i64> = (0..n).map(|i| record(i, n, 0).t_ns).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "order kept");
        assert!(times[0] >= 0 && times[n as usize - 1] < DAY_NS);
        let mut per_minute = vec![0u64; 1440];
        for t in &times {
            per_minute[(t / 60_000_000_000) as usize] += 1;
        }
        let mut sorted = per_minute.clone();
        sorted.sort_unstable();
        assert!(sorted[1439] > 4 * sorted[720], "bursts: {sorted:?}");
        // Spacing is not one constant: deltas of deltas are rarely zero.
        let flat = times
            .windows(3)
            .filter(|w| w[2] - w[1] == w[1] - w[0])
            .count();
        assert!(flat < times.len() / 20, "{flat} evenly spaced triples");
    }
}
