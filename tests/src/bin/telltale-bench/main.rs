//! Benchmarks whose figures go in the README. Measurements, not tests: each prints what it
//! measured, side by side with the peer where there is one.
//!
//! - `telltale-bench agent [--duration 5m]`: CPU seconds and peak RSS of `telltale-agent` at
//!   10s and 1s intervals, next to `prometheus-node-exporter` scraped at the same intervals,
//!   all four running at once (ratios, since the machine is shared).
//! - `telltale-bench ingest [--agents 20] [--series 1000] [--seconds 20]`: samples per second the
//!   aggregator stores and acknowledges from simulated agents over QUIC on loopback.
//! - `telltale-bench dashboard [--hosts 1000] [--hours 6]`: see [`dashboard`].
//! - `telltale-bench tsdb [--hosts 50] [--hours 24]`: see [`tsdb`].
//! - `telltale-bench logs [--records 10000000]`: see [`logs`].
//! - `telltale-bench traces [--spans 2000000] [--store-spans 2000000]`: see [`traces`] and
//!   [`tracestore`].
//! - `telltale-bench fleet [--agents 10000]`: see [`fleet`].
//! - `telltale-bench chaos [--scale ci|full]` and `telltale-bench soak [--duration 1h]`: see
//!   [`chaos`] and [`soak`].
//! - `telltale-bench statsd [--step 5s]`, `telltale-bench sources [--duration 2m]` and
//!   `telltale-bench hostile [--duration 30s]`: see [`sources`].

mod alerting;
mod chaos;
mod correlation;
mod dashboard;
mod fleet;
mod forward;
mod logs;
mod remediation;
mod soak;
mod sources;
mod traces;
mod tracestore;
mod tsdb;
mod ui;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use telltale_common::codec::{self, FrameDecoder};
use telltale_common::model::{Labels, Sample, SeriesSamples};
use telltale_common::wire::{Batch, ClientMessage, ServerMessage};
use telltale_tests::*;

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// `(utime + stime)` in seconds, and `(VmHWM, VmRSS)` in bytes, of a process.
fn proc_usage(pid: u32) -> anyhow::Result<(f64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("bad stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            * 1024
    };
    Ok((ticks / 100.0, kb("VmHWM:"), kb("VmRSS:")))
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn bench_agent(args: &[String]) -> anyhow::Result<()> {
    let duration = humantime::parse_duration(&arg(args, "--duration", "5m".to_string()))?;
    if !Path::new(NODE_EXPORTER).exists() {
        bail!("{NODE_EXPORTER} is missing: apt-get install prometheus-node-exporter");
    }
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    certs_init(&tls)?;
    let agg = start_fresh_aggregator(&tls, dir.path())?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut rows = Vec::new();
    let mut keep = Vec::new();
    for (interval, secs) in [("10s", 10u64), ("1s", 1)] {
        let name = format!("bench-{interval}");
        certs_issue(&tls, &name)?;
        let agent = start_agent(&tls, &name, agg.quic, &dir.path().join(&name), interval)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let ne = Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let scraped = Arc::new(AtomicU64::new(0));
        let (stop2, scraped2) = (stop.clone(), scraped.clone());
        // The scraper: what a Prometheus server does to node_exporter every interval.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            while !stop2.load(Ordering::Relaxed) {
                let t = Instant::now();
                if let Ok((_, body)) = http_get(addr, "/metrics") {
                    let series = body
                        .lines()
                        .filter(|l| !l.starts_with('#') && !l.is_empty())
                        .count();
                    scraped2.store(series as u64, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_secs(secs).saturating_sub(t.elapsed()));
            }
        });
        keep.push((interval, name, agent, ne, scraped));
    }
    // Let both sides start up and run one 10 s interval before measuring.
    std::thread::sleep(Duration::from_secs(12));
    let start: Vec<_> = keep
        .iter()
        .map(|(_, _, a, n, _)| Ok((proc_usage(a.child.id())?, proc_usage(n.id())?)))
        .collect::<anyhow::Result<_>>()?;
    eprintln!("measuring for {}...", humantime::format_duration(duration));
    std::thread::sleep(duration);
    for ((interval, name, agent, ne, scraped), (a0, n0)) in keep.iter().zip(start) {
        let a1 = proc_usage(agent.child.id())?;
        let n1 = proc_usage(ne.id())?;
        let ours = query(agg.http, &format!("{{instance=\"{name}\"}}"))?.len();
        rows.push(format!(
            "| {interval} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {ours} | {} |",
            a1.0 - a0.0,
            n1.0 - n0.0,
            (a1.0 - a0.0) / (n1.0 - n0.0).max(0.001),
            mib(a1.1),
            mib(a1.2),
            mib(n1.1),
            scraped.load(Ordering::Relaxed),
        ));
    }
    stop.store(true, Ordering::Relaxed);
    for (_, _, _, mut ne, _) in keep {
        let _ = ne.kill();
        let _ = ne.wait();
    }
    println!(
        "\nAgent overhead over {} (CPU seconds used in that window; peak RSS = VmHWM):\n",
        humantime::format_duration(duration)
    );
    println!(
        "| interval | telltale-agent CPU s | node_exporter CPU s | CPU ratio | telltale-agent peak RSS MiB | telltale-agent RSS at end MiB | node_exporter peak RSS MiB | series (telltale) | series (node_exporter) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

/// A batch encoded once, with the byte offsets of its timestamps and sequence, so sending
/// costs a copy and a checksum instead of an encode.
struct Template {
    payload: Vec<u8>,
    ts: Vec<usize>,
    seq: usize,
    samples: u64,
}

const SEQ0: u64 = 1 << 40;

/// The first batch's timestamp: 12 hours ago, so the batches (1 s apart, about a thousand a
/// second) stay inside what the aggregator stores — not older than its retention, not more
/// than a day ahead. (A fixed date in 2020 once made every sample "too old": the benchmark
/// then measured refusals.)
fn t0() -> i64 {
    static T: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T.get_or_init(|| telltale_common::model::now_ms() / 1000 * 1000 - 12 * 3_600_000)
}

fn offsets(hay: &[u8], value: u64) -> Vec<usize> {
    let needle = value.to_be_bytes();
    (1..hay.len().saturating_sub(8))
        .filter(|&i| matches!(hay[i - 1], 0xcf | 0xd3) && hay[i..i + 8] == needle)
        .collect()
}

impl Template {
    fn new(agent: usize, series: usize) -> anyhow::Result<Template> {
        let b = Batch {
            sequence: SEQ0,
            created_ms: t0(),
            events: Vec::new(),
            series: (0..series)
                .map(|j| SeriesSamples {
                    labels: Labels::from_pairs([
                        ("__name__", format!("bench_metric_{}", j % 25)),
                        ("series", j.to_string()),
                        ("device", format!("dev{}", j % 7)),
                        ("mode", "user".to_string()),
                        ("host", format!("bench-{agent}")),
                    ]),
                    samples: vec![Sample(t0(), j as f64 * 1.5)],
                })
                .collect(),
            spans: Vec::new(),
            exemplars: Vec::new(),
            logs: Vec::new(),
        };
        let payload = codec::encode_payload(&ClientMessage::Batch(b))?;
        let ts = offsets(&payload, t0() as u64);
        let seq = *offsets(&payload, SEQ0)
            .first()
            .context("sequence not found in template")?;
        anyhow::ensure!(ts.len() == series + 1, "found {} timestamps", ts.len());
        Ok(Template {
            payload,
            ts,
            seq,
            samples: series as u64,
        })
    }

    fn frame(&self, k: u64) -> Vec<u8> {
        self.frame_at(k, t0() + k as i64 * 1000)
    }

    /// Batch `k` with every sample at `t_ms`.
    fn frame_at(&self, k: u64, t_ms: i64) -> Vec<u8> {
        let mut p = self.payload.clone();
        let t = (t_ms as u64).to_be_bytes();
        for &o in &self.ts {
            p[o..o + 8].copy_from_slice(&t);
        }
        p[self.seq..self.seq + 8].copy_from_slice(&(SEQ0 + k).to_be_bytes());
        let mut out = Vec::with_capacity(p.len() + codec::HEADER_LEN);
        codec::frame_into(&p, &mut out);
        out
    }
}

/// A simulated agent's connection: mTLS with `agents/<name>` of `tls`, its stream, its hello
/// sent.
async fn connect_sim(
    tls: &std::path::Path,
    name: &str,
    addr: SocketAddr,
    epoch: u64,
) -> anyhow::Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream)> {
    let (_ep, conn, send, recv) = telltale_tests::rogue_agent(tls, name, addr, epoch).await?;
    Ok((conn, send, recv))
}

async fn sim_agent(
    tls: std::path::PathBuf,
    name: String,
    addr: SocketAddr,
    tpl: Template,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let (conn, mut send, mut recv) = connect_sim(&tls, &name, addr, rand_epoch()).await?;
    let window = Arc::new(tokio::sync::Semaphore::new(64));
    let w2 = window.clone();
    let samples = tpl.samples;
    let reader = tokio::spawn(async move {
        let mut dec = FrameDecoder::new(codec::DEFAULT_MAX_FRAME);
        while let Ok(Some(c)) = recv.read_chunk(1 << 16, true).await {
            if dec.push(&c.bytes).is_err() {
                break;
            }
            while let Ok(Some(p)) = dec.poll_frame() {
                if let Ok(ServerMessage::Ack { .. }) = codec::decode_payload(&p) {
                    acked.fetch_add(samples, Ordering::Relaxed);
                    w2.add_permits(1);
                }
            }
        }
    });
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) {
        window.acquire().await?.forget();
        send.write_all(&tpl.frame(k)).await?;
        k += 1;
    }
    reader.abort();
    conn.close(0u32.into(), b"done");
    Ok(())
}

fn rand_epoch() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    t ^ (std::process::id() as u64) << 32
}

fn bench_ingest(args: &[String]) -> anyhow::Result<()> {
    let agents: usize = arg(args, "--agents", 20);
    let series: usize = arg(args, "--series", 1000);
    let seconds: u64 = arg(args, "--seconds", 20);
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    certs_init(&tls)?;
    for i in 0..agents {
        certs_issue(&tls, &format!("bench-{i}"))?;
    }
    let agg = start_fresh_aggregator(&tls, dir.path())?;
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Runtime::new()?;
    let mut tasks = Vec::new();
    for i in 0..agents {
        let tpl = Template::new(i, series)?;
        tasks.push(rt.spawn(sim_agent(
            tls.clone(),
            format!("bench-{i}"),
            agg.quic,
            tpl,
            acked.clone(),
            stop.clone(),
        )));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (a0, c0) = (
        acked.load(Ordering::Relaxed),
        proc_usage(agg.proc.child.id())?.0,
    );
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let (a1, c1) = (
        acked.load(Ordering::Relaxed),
        proc_usage(agg.proc.child.id())?.0,
    );
    let el = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            match tokio::time::timeout(Duration::from_secs(10), t).await {
                Ok(Ok(Err(e))) => eprintln!("simulated agent failed: {e:#}"),
                Ok(Err(e)) => eprintln!("simulated agent panicked: {e}"),
                _ => {}
            }
        }
    });
    let rate = (a1 - a0) as f64 / el;
    let cpu = c1 - c0;
    let stored = metric(agg.http, "telltale_aggregator_samples_ingested_total")?;
    let overwritten = metric(agg.http, "telltale_aggregator_samples_overwritten_total")?;
    let all_acked = acked.load(Ordering::Relaxed) as f64;
    // An acknowledged sample the aggregator refused (too old, too far ahead) would make
    // this a benchmark of refusals.
    anyhow::ensure!(
        stored >= all_acked,
        "only {stored} of {all_acked} acknowledged samples were stored"
    );
    println!(
        "\nAggregator ingest: {agents} simulated agents × {series} series per batch, {seconds} s, QUIC + mTLS on loopback, ack after fdatasync\n"
    );
    println!(
        "| acknowledged samples/s | aggregator CPU s in window | aggregator CPU s per 1M samples | samples stored | overwritten |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| {rate:.0} | {cpu:.2} | {:.2} | {stored} | {overwritten} |",
        cpu / ((a1 - a0) as f64 / 1e6).max(1e-9)
    );
    Ok(())
}

/// Median and 90th percentile.
fn med_p90(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

fn bench_promql(args: &[String]) -> anyhow::Result<()> {
    let rounds: usize = arg(args, "--rounds", 3);
    let cases = telltale_tests::compliance::cases()?;
    let peers = telltale_tests::compliance::Peers::start()?;
    let (qs, qe) = (peers.end - 60 * 60_000, peers.end);
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_query: Vec<(f64, f64, f64, String)> = Vec::new();
    let time = |addr: SocketAddr, path: &str| -> f64 {
        let t = Instant::now();
        let _ = http_get(addr, path);
        t.elapsed().as_secs_f64() * 1000.0
    };
    for c in cases.iter().filter(|c| !c.should_fail) {
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=10",
            enc(&c.query),
            qs / 1000,
            qe / 1000
        );
        // Best of `rounds`, alternating which server goes first.
        let (mut a, mut b) = (f64::MAX, f64::MAX);
        for r in 0..rounds {
            if r % 2 == 0 {
                a = a.min(time(peers.telltale.http, &path));
                b = b.min(time(peers.prometheus_addr, &path));
            } else {
                b = b.min(time(peers.prometheus_addr, &path));
                a = a.min(time(peers.telltale.http, &path));
            }
        }
        ours.push(a);
        theirs.push(b);
        ratios.push(a / b);
        per_query.push((a / b, a, b, c.query.clone()));
    }
    let n = ours.len();
    let (om, op) = med_p90(&mut ours);
    let (pm, pp) = med_p90(&mut theirs);
    let (rm, rp) = med_p90(&mut ratios);
    println!(
        "\nPromQL range-query latency, {n} compliance cases (1 h at 10 s, 361 steps), best of {rounds}, HTTP on loopback:\n"
    );
    println!("| | median ms | p90 ms |");
    println!("|---|---|---|");
    println!("| Telltale | {om:.2} | {op:.2} |");
    println!("| Prometheus 2.42 | {pm:.2} | {pp:.2} |");
    println!("| per-query ratio Telltale / Prometheus | {rm:.2} | {rp:.2} |");
    per_query.sort_by(|x, y| y.0.total_cmp(&x.0));
    println!("\nSlowest relative to Prometheus (ratio, Telltale ms, Prometheus ms, query):");
    for (r, a, b, q) in per_query.iter().take(12) {
        println!("  {r:5.2}  {a:7.2}  {b:7.2}  {q}");
    }
    println!("\nAround the median ratio:");
    let mid = per_query.len() / 2;
    for (r, a, b, q) in per_query.iter().skip(mid.saturating_sub(6)).take(12) {
        println!("  {r:5.2}  {a:7.2}  {b:7.2}  {q}");
    }
    Ok(())
}

/// `fuzz`: the differential PromQL fuzzer (see `telltale_tests::fuzz`): random queries on
/// scrape-shaped data, against Debian's Prometheus; prints the agreement rate and the
/// differences. The seed is printed so a run can be replayed. `--cases` runs the compliance
/// cases on the scrape-shaped demo data instead.
fn bench_fuzz(args: &[String]) -> anyhow::Result<()> {
    use telltale_tests::fuzz;
    let n: usize = arg(args, "--queries", 2000);
    let seed: u64 = arg(args, "--seed", telltale_common::model::now_ms() as u64);
    let show: usize = arg(args, "--show", 40);
    let hold = |pair: &fuzz::Pair| {
        if std::env::var_os("TT_FUZZ_HOLD").is_some() {
            println!(
                "holding: prometheus http://{} telltale http://{} (Ctrl-C ends)",
                pair.prometheus_addr, pair.telltale.http
            );
            std::thread::sleep(Duration::from_secs(3600));
        }
    };
    if args.iter().any(|a| a == "--cases") {
        println!(
            "seed {seed}: compliance cases on scrape-shaped demo data (replay with --seed {seed})"
        );
        let now = telltale_common::model::now_ms() / 10_000 * 10_000;
        let (start, end) = (now - 65 * 60_000, now);
        let pair = fuzz::Pair::load(&fuzz::rough_demo_data(seed, start, end), start, end)?;
        let started = Instant::now();
        let report = fuzz::run_cases(&pair, &telltale_tests::compliance::cases()?);
        report.print("compliance cases", show);
        println!("({:.1} s)", started.elapsed().as_secs_f64());
        hold(&pair);
        return Ok(());
    }
    println!("seed {seed} ({n} queries; replay with --seed {seed})");
    let pair = fuzz::Pair::start(seed)?;
    let started = Instant::now();
    let report = fuzz::run(&pair, seed, n);
    report.print("random queries", show);
    println!("({:.1} s)", started.elapsed().as_secs_f64());
    hold(&pair);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("agent") => bench_agent(&args),
        Some("ingest") => bench_ingest(&args),
        Some("promql") => bench_promql(&args),
        Some("dashboard") => dashboard::bench_dashboard(&args),
        Some("statsd") => sources::bench_statsd(&args),
        Some("sources") => sources::bench_sources(&args),
        Some("hostile") => sources::bench_hostile(&args),
        Some("fuzz") => bench_fuzz(&args),
        Some("tsdb") => tsdb::bench_tsdb(&args),
        Some("forward") => forward::bench_forward(&args),
        Some("alerting") => alerting::bench_alerting(&args),
        Some("remediation") => remediation::bench_remediation(&args),
        Some("logs") => logs::bench_logs(&args),
        Some("traces") => traces::bench_traces(&args),
        Some("correlation") => correlation::bench_correlation(&args),
        Some("ui") => ui::bench_ui(&args),
        Some("chaos") => chaos::bench_chaos(&args),
        Some("soak") => soak::bench_soak(&args),
        Some("fleet") => fleet::bench_fleet(&args),
        Some(fleet::WORKER) => fleet::worker(&args),
        _ => bail!(
            "usage: telltale-bench agent [--duration 5m] | ingest [--agents N] [--series N] [--seconds N] | promql [--rounds N] | dashboard [--hosts N] [--hours N] | statsd [--step 5s] | sources [--duration 2m] [--interval 10s] | hostile [--duration 30s] [--interval 5s] | fuzz [--queries 2000] [--seed N] [--cases] [--show 40] | tsdb [--hosts 50] [--hours 24] [--senders 4] | alerting [--trials 40] | remediation [--trials 10] | logs [--records 10000000] [--rate 10000] [--rss-seconds 60] [--rounds 5] | traces [--spans 2000000] [--senders 2] [--per-request 500] [--store-spans 2000000] [--skip intake,store] | correlation [--scenarios 300] [--seed 1] [--show 15] | ui [--hosts 100] [--hours 6] [--rounds 5] | chaos [--scale ci|full] [--cycles N] [--seed N] | soak [--duration 1h] [--agents 50] [--every 1m] [--out DIR] [--config F] | fleet [--agents 10000] [--workers 4] [--series 300] [--interval 10s] [--steady 60s] [--restart kill|term|none] [--down 10s] | forward [--hosts 100] [--hours 2] [--senders 4] [--per-body 2000] [--only telltale|vmagent]"
        ),
    }
}
