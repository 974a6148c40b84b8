//! `telltale-bench fleet [--agents 10000] [--workers 4] [--series 300] [--interval 10s]
//! [--ramp 20s] [--steady 60s] [--restart kill|term|none] [--down 10s]`: one aggregator and a
//! fleet of simulated agents over real QUIC + mutual TLS on loopback — every agent its own
//! certificate, its own connection, `series` series every `interval` at the wall-clock time,
//! behaving like `telltale-agent`'s shipper: unacknowledged batches kept and sent again on
//! the next connection, reconnection after a lost session with the agent's backoff (0.5 s
//! doubling to 5 s, full jitter). The agents run in `workers` processes (this binary again,
//! `fleet-worker`), each with one client endpoint (one UDP socket) carrying its share.
//!
//! Measured, in this order:
//! 1. the start: agents come up spread over `ramp`; the time until all are connected;
//! 2. the steady state over `steady`: the aggregator's CPU (per core and per million
//!    samples), its resident memory per connected agent (the growth from the idle aggregator
//!    divided by the agents: the connection, the session and the agent's head series), the
//!    acknowledged samples per second, and the ack latency as the agents see it (send to ack:
//!    median, p99, max), from log-spaced histograms (±8 %);
//! 3. the storm: the aggregator SIGKILLed (or SIGTERMed) under that load and started again
//!    after `down` on the same ports and data directory, while every agent keeps collecting
//!    and retries on its own backoff — the time from the new process's start until it is
//!    ready, until every agent is connected again, and until every batch collected before the
//!    restart is acknowledged (drained), with the p99 ack latency of the storm.
//!
//! A run fails (not just reports) when an agent never connects, or `count(up == 1)` does not
//! find every agent afterwards.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use telltale_common::codec::{self, FrameDecoder};
use telltale_common::model::now_ms;
use telltale_common::tls::TlsPaths;
use telltale_common::wire::{ClientMessage, Hello, ServerMessage};
use telltale_tests::chaos::rss_and_fds;
use telltale_tests::*;

use crate::{Template, arg, mib, proc_usage, rand_epoch};

/// The worker's subcommand.
pub const WORKER: &str = "fleet-worker";

/// Latency histogram buckets: bucket `b` holds latencies in [R^b, R^(b+1)) microseconds.
const BUCKETS: usize = 160;
const R: f64 = 1.15;
/// Unacknowledged batches of one agent on the wire at once.
const WINDOW: usize = 16;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The agent's shipper gives up on a session when a batch waits this long for its ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);

fn bucket(d: Duration) -> usize {
    let us = d.as_micros().max(1) as f64;
    ((us.ln() / R.ln()) as usize).min(BUCKETS - 1)
}

fn agent_name(i: usize) -> String {
    format!("fleet-{i:05}")
}

/// What a worker counts; printed as one line a second.
struct Stats {
    connected: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    sessions_lost: AtomicU64,
    /// Why sessions ended: a stateless reset from a restarted aggregator, the idle timeout,
    /// no acknowledgement within [`ACK_TIMEOUT`] (the agent's own check), anything else.
    ended_by: [AtomicU64; 4],
    acked: AtomicU64,
    hist: Vec<AtomicU64>,
    /// Per agent: the collection time (ms) of its oldest unacknowledged batch, `i64::MAX`
    /// when it has none.
    oldest: Vec<AtomicI64>,
}

impl Stats {
    fn line(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let oldest = self
            .oldest
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .min()
            .unwrap_or(i64::MAX);
        let hist: Vec<String> = self.hist.iter().map(|h| g(h).to_string()).collect();
        format!(
            "fleet connected={} connects={} failures={} lost={} ended={} acked={} oldest={} hist={}",
            g(&self.connected),
            g(&self.connects),
            g(&self.connect_failures),
            g(&self.sessions_lost),
            self.ended_by
                .iter()
                .map(|a| g(a).to_string())
                .collect::<Vec<_>>()
                .join(","),
            g(&self.acked),
            oldest,
            hist.join(",")
        )
    }
}

/// One worker's last line, parsed.
#[derive(Clone, Default)]
struct Report {
    connected: u64,
    connects: u64,
    failures: u64,
    lost: u64,
    ended: [u64; 4],
    acked: u64,
    oldest: i64,
    hist: Vec<u64>,
}

impl Report {
    fn parse(line: &str) -> Option<Report> {
        let mut r = Report::default();
        for kv in line.strip_prefix("fleet ")?.split(' ') {
            let (k, v) = kv.split_once('=')?;
            match k {
                "connected" => r.connected = v.parse().ok()?,
                "connects" => r.connects = v.parse().ok()?,
                "failures" => r.failures = v.parse().ok()?,
                "lost" => r.lost = v.parse().ok()?,
                "acked" => r.acked = v.parse().ok()?,
                "ended" => {
                    for (slot, x) in r.ended.iter_mut().zip(v.split(',')) {
                        *slot = x.parse().ok()?;
                    }
                }
                "oldest" => r.oldest = v.parse().ok()?,
                "hist" => {
                    r.hist = v
                        .split(',')
                        .map(|x| x.parse().ok())
                        .collect::<Option<_>>()?
                }
                _ => {}
            }
        }
        Some(r)
    }

    fn sum(all: &[Report]) -> Report {
        let mut s = Report {
            oldest: i64::MAX,
            hist: vec![0; BUCKETS],
            ..Report::default()
        };
        for r in all {
            s.connected += r.connected;
            s.connects += r.connects;
            s.failures += r.failures;
            s.lost += r.lost;
            s.acked += r.acked;
            for (a, b) in s.ended.iter_mut().zip(r.ended) {
                *a += b;
            }
            s.oldest = s.oldest.min(r.oldest);
            for (a, b) in s.hist.iter_mut().zip(&r.hist) {
                *a += b;
            }
        }
        s
    }
}

/// Quantile `q` of the latencies between two histogram snapshots, in ms (a bucket's upper
/// bound); the largest as the upper bound of the highest bucket used.
fn quantile(from: &Report, to: &Report, q: f64) -> f64 {
    let d: Vec<u64> = (0..BUCKETS)
        .map(|b| to.hist.get(b).copied().unwrap_or(0) - from.hist.get(b).copied().unwrap_or(0))
        .collect();
    let total: u64 = d.iter().sum();
    if total == 0 {
        return f64::NAN;
    }
    let want = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (b, n) in d.iter().enumerate() {
        seen += n;
        if seen >= want {
            return R.powi(b as i32 + 1) / 1000.0;
        }
    }
    f64::NAN
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// The worker: agents `--from`..`--to`.
pub fn worker(args: &[String]) -> anyhow::Result<()> {
    let tls = PathBuf::from(arg(args, "--tls", String::new()));
    let addr: SocketAddr = arg(args, "--addr", String::new()).parse()?;
    let (from, to): (usize, usize) = (arg(args, "--from", 0), arg(args, "--to", 0));
    let series: usize = arg(args, "--series", 300);
    let interval = humantime::parse_duration(&arg(args, "--interval", "10s".to_string()))?;
    let ramp = humantime::parse_duration(&arg(args, "--ramp", "20s".to_string()))?;
    let n = to.saturating_sub(from);
    let stats = Arc::new(Stats {
        connected: AtomicU64::new(0),
        connects: AtomicU64::new(0),
        connect_failures: AtomicU64::new(0),
        sessions_lost: AtomicU64::new(0),
        ended_by: Default::default(),
        acked: AtomicU64::new(0),
        hist: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        oldest: (0..n).map(|_| AtomicI64::new(i64::MAX)).collect(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        let start = tokio::time::Instant::now();
        let mut seed = rand_epoch() | 1;
        for (slot, i) in (from..to).enumerate() {
            let name = agent_name(i);
            let paths = TlsPaths {
                ca: tls.join("ca.crt"),
                cert: tls.join(format!("agents/{name}.crt")),
                key: tls.join(format!("agents/{name}.key")),
            };
            let cfg = paths.load()?.client_config()?;
            let sim = Sim {
                endpoint: endpoint.clone(),
                cfg,
                addr,
                tpl: Template::new(i, series)?,
                interval,
                stats: stats.clone(),
                slot,
                seed: xorshift(&mut seed) | 1,
            };
            let at = start + ramp.mul_f64((xorshift(&mut seed) % 10_000) as f64 / 10_000.0);
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                sim.run().await
            });
        }
        let mut out = std::io::stdout();
        loop {
            use std::io::Write;
            // The parent reads these lines; it going away ends the worker.
            if writeln!(out, "{}", stats.line()).is_err() || out.flush().is_err() {
                return Ok::<_, anyhow::Error>(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// One simulated agent.
struct Sim {
    endpoint: quinn::Endpoint,
    cfg: quinn::ClientConfig,
    addr: SocketAddr,
    tpl: Template,
    interval: Duration,
    stats: Arc<Stats>,
    slot: usize,
    seed: u64,
}

/// An agent's unacknowledged batches: sequence → collection time (ms), and when each was
/// last sent in this session.
#[derive(Default)]
struct Buffer {
    pending: BTreeMap<u64, i64>,
    sent: BTreeMap<u64, Instant>,
}

impl Sim {
    async fn run(mut self) {
        let epoch = rand_epoch() ^ self.seed;
        let mut buf = Buffer::default();
        let mut next_k = 0u64;
        let mut next_at = tokio::time::Instant::now();
        let mut backoff = BACKOFF_MIN;
        loop {
            // A session that worked starts the backoff afresh (as the agent's shipper does).
            if self
                .session(epoch, &mut buf, &mut next_k, &mut next_at)
                .await
                .is_ok()
            {
                backoff = BACKOFF_MIN;
            }
            let wait = backoff
                .mul_f64((xorshift(&mut self.seed) % 1000) as f64 / 1000.0)
                .max(Duration::from_millis(100));
            backoff = (backoff * 2).min(BACKOFF_MAX);
            // Collection goes on while disconnected.
            let until = tokio::time::Instant::now() + wait;
            while next_at <= until {
                tokio::time::sleep_until(next_at).await;
                self.collect(&mut buf, &mut next_k, &mut next_at);
            }
            tokio::time::sleep_until(until).await;
        }
    }

    fn collect(&self, buf: &mut Buffer, next_k: &mut u64, next_at: &mut tokio::time::Instant) {
        while *next_at <= tokio::time::Instant::now() {
            buf.pending.insert(*next_k, now_ms());
            *next_k += 1;
            *next_at += self.interval;
        }
        self.publish_oldest(buf);
    }

    fn publish_oldest(&self, buf: &Buffer) {
        let oldest = buf.pending.values().next().copied().unwrap_or(i64::MAX);
        self.stats.oldest[self.slot].store(oldest, Ordering::Relaxed);
    }

    /// One connection, until it fails: `Ok` when it had been welcomed.
    async fn session(
        &self,
        epoch: u64,
        buf: &mut Buffer,
        next_k: &mut u64,
        next_at: &mut tokio::time::Instant,
    ) -> anyhow::Result<()> {
        let connecting = self
            .endpoint
            .connect_with(self.cfg.clone(), self.addr, "localhost")?;
        let conn = match connecting.await {
            Ok(c) => c,
            Err(e) => {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        let (mut send, mut recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(e) => {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        let hello = codec::encode_frame(&ClientMessage::Hello(Hello {
            protocol_version: telltale_common::PROTOCOL_VERSION,
            agent_version: "fleet-bench".into(),
            epoch,
            capabilities: Vec::new(),
            actions: Vec::new(),
            sources: Vec::new(),
        }))?;
        send.write_all(&hello).await?;
        let mut dec = FrameDecoder::new(codec::DEFAULT_MAX_FRAME);
        // The welcome first: only then is the agent connected (waited for as the agent does).
        let welcome = tokio::time::timeout(ACK_TIMEOUT, async {
            loop {
                let Some(c) = recv.read_chunk(1 << 16, true).await? else {
                    bail!("closed before the welcome");
                };
                dec.push(&c.bytes)?;
                match dec.poll_frame()? {
                    Some(p) => match codec::decode_payload(&p)? {
                        ServerMessage::Welcome(_) => return Ok(()),
                        other => bail!("refused: {other:?}"),
                    },
                    None => continue,
                }
            }
        })
        .await;
        if !matches!(welcome, Ok(Ok(()))) {
            self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
            return Err(anyhow::anyhow!("no welcome"));
        }
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        self.stats.connected.fetch_add(1, Ordering::Relaxed);
        buf.sent.clear();
        // It only ends by failing: the connection or the stream was lost.
        let lost = self
            .exchange(buf, next_k, next_at, &mut send, &mut recv, &mut dec)
            .await;
        let why = match conn.close_reason() {
            Some(quinn::ConnectionError::Reset) => 0,
            Some(quinn::ConnectionError::TimedOut) => 1,
            _ if lost
                .as_ref()
                .is_err_and(|e| e.to_string().contains("no ack")) =>
            {
                2
            }
            _ => 3,
        };
        self.stats.ended_by[why].fetch_add(1, Ordering::Relaxed);
        self.stats.connected.fetch_sub(1, Ordering::Relaxed);
        self.stats.sessions_lost.fetch_add(1, Ordering::Relaxed);
        conn.close(0u32.into(), b"");
        Ok(())
    }

    async fn exchange(
        &self,
        buf: &mut Buffer,
        next_k: &mut u64,
        next_at: &mut tokio::time::Instant,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
        dec: &mut FrameDecoder,
    ) -> anyhow::Result<()> {
        // The welcome was the last word.
        let mut last_heard = Instant::now();
        loop {
            // Send what is due and fits the window, oldest first.
            let unsent: Vec<(u64, i64)> = buf
                .pending
                .iter()
                .filter(|(k, _)| !buf.sent.contains_key(k))
                .take(WINDOW.saturating_sub(buf.sent.len()))
                .map(|(k, t)| (*k, *t))
                .collect();
            for (k, t) in unsent {
                send.write_all(&self.tpl.frame_at(k, t)).await?;
                buf.sent.insert(k, Instant::now());
            }
            let due = *next_at;
            // As the agent does (`Client::ack_deadline`): given up when the oldest batch on
            // the wire and the last word from the aggregator are both `ACK_TIMEOUT` old.
            let give_up = buf
                .sent
                .values()
                .min()
                .map(|t| tokio::time::Instant::from_std((*t).max(last_heard) + ACK_TIMEOUT));
            tokio::select! {
                _ = tokio::time::sleep_until(due) => self.collect(buf, next_k, next_at),
                _ = async { tokio::time::sleep_until(give_up?).await; Some(()) }, if give_up.is_some() => {
                    bail!("no ack for {} s", ACK_TIMEOUT.as_secs());
                }
                chunk = recv.read_chunk(1 << 16, true) => {
                    let Some(c) = chunk? else { bail!("stream closed") };
                    dec.push(&c.bytes)?;
                    while let Some(p) = dec.poll_frame()? {
                        last_heard = Instant::now();
                        if let ServerMessage::Ack { sequence } | ServerMessage::Rejected { sequence, .. } =
                            codec::decode_payload(&p)?
                        {
                            let k = sequence.wrapping_sub(crate::SEQ0);
                            buf.pending.remove(&k);
                            if let Some(at) = buf.sent.remove(&k) {
                                self.stats.hist[bucket(at.elapsed())].fetch_add(1, Ordering::Relaxed);
                                self.stats.acked.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    self.publish_oldest(buf);
                }
            }
        }
    }
}

/// The workers' latest reports, kept by reader threads.
struct Fleet {
    procs: Vec<std::process::Child>,
    reports: Arc<Mutex<Vec<Report>>>,
}

impl Fleet {
    fn start(
        tls: &Path,
        addr: SocketAddr,
        agents: usize,
        workers: usize,
        series: usize,
        interval: &str,
        ramp: &str,
    ) -> anyhow::Result<Fleet> {
        let exe = std::env::current_exe()?;
        let reports = Arc::new(Mutex::new(vec![Report::default(); workers]));
        let mut procs = Vec::new();
        for w in 0..workers {
            let (from, to) = (agents * w / workers, agents * (w + 1) / workers);
            let mut child = Command::new(&exe)
                .arg(WORKER)
                .arg("--tls")
                .arg(tls)
                .args(["--addr", &addr.to_string()])
                .args(["--from", &from.to_string(), "--to", &to.to_string()])
                .args(["--series", &series.to_string()])
                .args(["--interval", interval, "--ramp", ramp])
                .stdout(Stdio::piped())
                .spawn()
                .context("cannot start a fleet worker")?;
            let out = child.stdout.take().context("no stdout")?;
            let reports = reports.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(r) = Report::parse(&line)
                        && let Ok(mut g) = reports.lock()
                    {
                        g[w] = r;
                    }
                }
            });
            procs.push(child);
        }
        Ok(Fleet { procs, reports })
    }

    fn now(&self) -> Report {
        Report::sum(&self.reports.lock().map(|g| g.clone()).unwrap_or_default())
    }

    fn cpu(&self) -> f64 {
        self.procs
            .iter()
            .filter_map(|p| proc_usage(p.id()).ok())
            .map(|u| u.0)
            .sum()
    }

    /// Waits (≤ `timeout`) until `done` holds; returns the time it took.
    fn until(&self, timeout: Duration, done: impl Fn(&Report) -> bool) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if done(&self.now()) {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn issue_all(tls: &Path, agents: usize) -> anyhow::Result<()> {
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..2)
            .map(|t| {
                s.spawn(move || -> anyhow::Result<()> {
                    for i in (t..agents).step_by(2) {
                        telltale_common::tls::issue_agent(tls, &agent_name(i))?;
                    }
                    Ok(())
                })
            })
            .collect();
        for p in parts {
            p.join()
                .map_err(|_| anyhow::anyhow!("issuing panicked"))??;
        }
        Ok(())
    })
}

fn ready(agg: &Aggregator, timeout: Duration) -> Option<Duration> {
    let t = Instant::now();
    wait_for(timeout, || {
        (http_get(agg.http, "/-/ready").ok()?.0 == 200).then_some(())
    })
    .map(|()| t.elapsed())
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("never".into(), |d| format!("{:.1}", d.as_secs_f64()))
}

pub fn bench_fleet(args: &[String]) -> anyhow::Result<()> {
    let agents: usize = arg(args, "--agents", 10_000);
    let workers: usize = arg(args, "--workers", 4).max(1);
    let series: usize = arg(args, "--series", 300);
    let interval_s = arg(args, "--interval", "10s".to_string());
    let interval = humantime::parse_duration(&interval_s)?;
    let ramp_s = arg(args, "--ramp", "20s".to_string());
    let steady = humantime::parse_duration(&arg(args, "--steady", "60s".to_string()))?;
    let down = humantime::parse_duration(&arg(args, "--down", "10s".to_string()))?;
    // How long each step of the storm is waited for before it is reported as "never".
    let storm_timeout = humantime::parse_duration(&arg(args, "--storm-timeout", "5m".to_string()))?;
    let restart = arg(args, "--restart", "kill".to_string());
    if !["kill", "term", "none"].contains(&restart.as_str()) {
        bail!("--restart is kill, term or none, not {restart:?}");
    }
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    certs_init(&tls)?;
    let t = Instant::now();
    issue_all(&tls, agents)?;
    eprintln!(
        "{agents} agent certificates issued in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let data = dir.path().join("agg");
    let mut agg = start_aggregator(&tls, &data, "127.0.0.1:0", "127.0.0.1:0", &[])?;
    let (http_s, quic_s) = (agg.http.to_string(), agg.quic.to_string());
    ready(&agg, Duration::from_secs(60)).context("the aggregator never became ready")?;
    std::thread::sleep(Duration::from_secs(3));
    let (rss_idle, fds_idle) = rss_and_fds(&agg.proc);

    // 1. The start.
    let fleet = Fleet::start(
        &tls,
        agg.quic,
        agents,
        workers,
        series,
        &interval_s,
        &ramp_s,
    )?;
    let all_in = fleet.until(Duration::from_secs(600), |r| r.connected as usize >= agents);
    let now = fleet.now();
    if all_in.is_none() {
        bail!(
            "only {} of {agents} agents connected within 10 minutes ({} failed attempts)\n{}",
            now.connected,
            now.failures,
            agg.proc
                .log()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    eprintln!(
        "all {agents} connected {} s after the workers started (ramp {ramp_s}); warming up for two intervals",
        secs(all_in)
    );
    std::thread::sleep(interval * 2);

    // 2. The steady state.
    let (r0, c0, w0) = (fleet.now(), proc_usage(agg.proc.child.id())?.0, fleet.cpu());
    let t = Instant::now();
    std::thread::sleep(steady);
    let (r1, c1, w1) = (fleet.now(), proc_usage(agg.proc.child.id())?.0, fleet.cpu());
    let el = t.elapsed().as_secs_f64();
    let (rss, fds) = rss_and_fds(&agg.proc);
    let samples = (r1.acked - r0.acked) as f64 * series as f64;
    let cpu = c1 - c0;
    let steady_lost = r1.lost - r0.lost;

    // The steady state's figures now: a storm that never settles still leaves them.
    println!(
        "\nFleet: {agents} simulated agents in {workers} processes, each its own mTLS certificate and QUIC connection, {series} series every {interval_s}; loopback, 2 cores shared by all\n"
    );
    println!("| | |\n|---|---|");
    println!(
        "| all connected after start (ramp {ramp_s}) | {} s |",
        secs(all_in)
    );
    println!(
        "| acknowledged samples/s (steady, {:.0} s) | {:.0} |",
        el,
        samples / el
    );
    println!(
        "| aggregator CPU | {:.0} % of a core, {:.2} CPU s per 1M samples |",
        cpu / el * 100.0,
        cpu / (samples / 1e6).max(1e-9)
    );
    println!(
        "| aggregator RSS | {:.0} MiB idle → {:.0} MiB with {agents} agents: {:.1} KiB per agent ({series} head series each) |",
        mib(rss_idle),
        mib(rss),
        (rss.saturating_sub(rss_idle)) as f64 / 1024.0 / agents as f64
    );
    println!("| aggregator descriptors | {fds_idle} idle → {fds} |");
    println!(
        "| ack latency, send → ack (steady) | median {:.1} ms, p99 {:.1} ms, max ≤ {:.0} ms |",
        quantile(&r0, &r1, 0.5),
        quantile(&r0, &r1, 0.99),
        quantile(&r0, &r1, 1.0)
    );
    println!("| sessions lost in the steady state | {steady_lost} |");
    println!(
        "| simulated agents' CPU (all workers, steady) | {:.0} % of a core |",
        (w1 - w0) / el * 100.0
    );
    // 3. The storm.
    let mut storm = None;
    if restart != "none" {
        let before = fleet.now();
        if restart == "kill" {
            agg.proc.kill();
        } else {
            agg.proc.terminate(Duration::from_secs(60));
        }
        std::thread::sleep(down);
        let started = Instant::now();
        let mark = now_ms();
        agg = start_aggregator(&tls, &data, &http_s, &quic_s, &[])?;
        let to_ready = ready(&agg, Duration::from_secs(600)).map(|_| started.elapsed());
        let timeout = storm_timeout;
        // Half, 99 % and all of the agents connected again.
        let back = |share: f64| {
            let want = (agents as f64 * share).ceil() as u64;
            move |r: &Report| r.connects >= before.connects + want && r.connected >= want
        };
        let half = fleet.until(timeout, back(0.5)).map(|_| started.elapsed());
        let most = fleet.until(timeout, back(0.99)).map(|_| started.elapsed());
        let reconnected = fleet.until(timeout, back(1.0)).map(|_| started.elapsed());
        let drained = fleet
            .until(timeout, |r| r.oldest > mark)
            .map(|_| started.elapsed());
        let after = fleet.now();
        storm = Some((to_ready, [half, most, reconnected], drained, before, after));
    }
    std::thread::sleep(Duration::from_secs(2));
    let up = query(agg.http, "count(up == 1)")?;
    let up_n: f64 = up
        .first()
        .and_then(|v| v["value"][1].as_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    drop(fleet);

    if let Some((to_ready, reconnected, drained, before, after)) = storm {
        println!(
            "| aggregator {} under load, restarted after {} | ready {} s; agents reconnected: half {} s, 99 % {} s, all {} s; everything collected before the restart acknowledged {} s after its start |",
            if restart == "kill" {
                "SIGKILLed"
            } else {
                "stopped (SIGTERM)"
            },
            humantime::format_duration(down),
            secs(to_ready),
            secs(reconnected[0]),
            secs(reconnected[1]),
            secs(reconnected[2]),
            secs(drained)
        );
        let e: Vec<u64> = (0..4).map(|i| after.ended[i] - before.ended[i]).collect();
        println!(
            "| sessions ended by the restart | {} by a stateless reset, {} by the idle timeout, {} by the agent's ack timeout, {} otherwise |",
            e[0], e[1], e[2], e[3]
        );
        println!(
            "| the storm | {} failed connection attempts, ack latency p99 {:.0} ms |",
            after.failures - before.failures,
            quantile(&before, &after, 0.99)
        );
    }
    println!("| `count(up == 1)` at the end | {up_n} |");
    anyhow::ensure!(
        up_n as usize == agents,
        "count(up == 1) is {up_n}, not {agents}"
    );
    Ok(())
}
