//! The reliability scenarios (issue 26): network faults through [`FaultProxy`], crash loops
//! of the aggregator and of an agent, full disks and clock jumps, against the real binaries on
//! loopback. Each scenario runs at a size its caller picks and returns what it *counted*; the
//! tests (`tests/tests/chaos.rs`) assert the goals on the CI size, and `cargo bench-telltale
//! chaos` prints the same figures as the README's table.
//!
//! "Every interval present once" is read from `node_time_seconds`, which an agent stamps with
//! its own collection time: at a 1 s interval a gap wider than 1.5 intervals is a lost
//! collection, and a sample stored twice shows in `telltale_aggregator_samples_overwritten_total`
//! (the engine counts every append onto an existing timestamp).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::faultproxy::{FaultProxy, Faults, ProxyStats};
use crate::{
    Aggregator, Proc, certs_init, certs_issue, http_get, metric, raw_samples, start_agent,
    start_aggregator, wait_for,
};

/// Lost intervals in sorted collection timestamps: every gap wider than 1.5 intervals counts
/// the collections that should have been in it.
pub fn missing_intervals(ts: &[i64], interval_ms: i64) -> u64 {
    ts.windows(2)
        .map(|w| w[1] - w[0])
        .filter(|&g| g * 2 > interval_ms * 3)
        .map(|g| ((g as f64 / interval_ms as f64).round() as u64).saturating_sub(1))
        .sum()
}

/// `node_time_seconds` timestamps of `instance` over the last `range_s` seconds.
pub fn collection_times(
    http: SocketAddr,
    instance: &str,
    range_s: u64,
) -> anyhow::Result<Vec<i64>> {
    let s = raw_samples(
        http,
        &format!("node_time_seconds{{instance=\"{instance}\"}}"),
        &format!("{range_s}s"),
    )?;
    Ok(s.into_iter().map(|(t, _)| t).collect())
}

/// A metric of the aggregator's `/metrics`, 0 when absent (a counter not yet touched).
fn counter(http: SocketAddr, name: &str) -> f64 {
    metric(http, name).unwrap_or(0.0)
}

/// A scratch directory with a CA and agent certificates.
pub struct Scratch {
    /// Removed when dropped.
    pub dir: tempfile::TempDir,
    /// The certificates (`certs init`).
    pub tls: PathBuf,
}

impl Scratch {
    /// A CA and a certificate for each agent name.
    pub fn new(agents: &[&str]) -> anyhow::Result<Scratch> {
        let dir = tempfile::tempdir()?;
        let tls = dir.path().join("tls");
        certs_init(&tls)?;
        for a in agents {
            certs_issue(&tls, a)?;
        }
        Ok(Scratch { dir, tls })
    }
    /// A path inside the scratch directory.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

// ---- Network faults -----------------------------------------------------------------------

/// How long each network phase lasts; collection is every second throughout.
#[derive(Clone, Debug)]
pub struct NetPlan {
    /// 10 % loss both ways (with 2 % duplication, 5 % reordering and 5 ± 5 ms of latency).
    pub loss: Duration,
    /// Nothing passes, both ways.
    pub partition: Duration,
    /// 500 ± 50 ms one-way latency.
    pub latency: Duration,
}

impl NetPlan {
    /// The size CI runs.
    pub fn ci() -> NetPlan {
        NetPlan {
            loss: Duration::from_secs(40),
            partition: Duration::from_secs(30),
            // Long enough to reconnect (a retry every 5–10 s) and drain the partition's
            // backlog at a 1 s round trip, which the run checks before healing. 40 s was
            // once too short on a loaded CI machine (reconnected after 8 s, 9 intervals
            // still missing 32 s later; drained 0.4 s after healing): the cause is not
            // known, the full-scale run drains 306 batches well within its 5 minutes.
            latency: Duration::from_secs(70),
        }
    }
    /// The issue's size: 10 minutes of loss, a 5-minute partition, 5 minutes at 500 ms.
    pub fn full() -> NetPlan {
        NetPlan {
            loss: Duration::from_secs(600),
            partition: Duration::from_secs(300),
            latency: Duration::from_secs(300),
        }
    }
}

/// What a network run counted.
#[derive(Clone, Debug)]
pub struct NetReport {
    /// The proxy's seed.
    pub seed: u64,
    /// Collections expected from the first to the last before healing.
    pub expected: u64,
    /// Of them, missing after the drain.
    pub missing: u64,
    /// Intervals up to 5 s before healing that were not stored when the latency phase ended
    /// (the backlog of the partition must drain at 500 ms, not wait for a healed path).
    pub missing_before_heal: u64,
    /// Samples stored onto an existing timestamp (a batch stored twice).
    pub overwritten: u64,
    /// Replayed batches the aggregator recognised and did not store again.
    pub deduplicated: u64,
    /// The gaps behind `missing_before_heal`: the stored collections each lies between, in
    /// seconds before healing.
    pub gaps_before_heal: Vec<(i64, i64)>,
    /// Seconds from healing until every interval was present (`None`: not within the wait).
    pub drain_s: Option<f64>,
    /// Connections the agent opened (the first and every reconnection).
    pub connects: u64,
    /// What the proxy did.
    pub proxy: ProxyStats,
    /// The agent's log lines about its connection and backlog (for a failing run).
    pub agent_log: Vec<String>,
}

/// One agent at 1 s through the fault proxy: loss, then a partition, then high latency, then
/// healed; afterwards every interval must be present once.
pub fn network(plan: &NetPlan, seed: u64) -> anyhow::Result<NetReport> {
    let s = Scratch::new(&["netagent"])?;
    let agg = start_aggregator(&s.tls, &s.path("agg"), "127.0.0.1:0", "127.0.0.1:0", &[])?;
    let proxy = FaultProxy::start(agg.quic, seed)?;
    let agent = start_agent(&s.tls, "netagent", proxy.addr, &s.path("agent"), "1s")?;
    let t0 = Instant::now();
    wait_for(Duration::from_secs(30), || {
        (collection_times(agg.http, "netagent", 60).ok()?.len() >= 2).then_some(())
    })
    .with_context(|| format!("no samples through the proxy\n{}", agent.log()))?;
    let first = collection_times(agg.http, "netagent", 60)?
        .first()
        .copied()
        .unwrap_or(0);
    proxy.set(Faults {
        loss: 0.10,
        duplicate: 0.02,
        reorder: 0.05,
        reorder_by: Duration::from_millis(20),
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(5),
        partition: false,
    });
    std::thread::sleep(plan.loss);
    proxy.set(Faults {
        partition: true,
        ..Faults::default()
    });
    std::thread::sleep(plan.partition);
    proxy.set(Faults {
        delay: Duration::from_millis(500),
        jitter: Duration::from_millis(50),
        ..Faults::default()
    });
    std::thread::sleep(plan.latency);
    // Still at 500 ms: the backlog must have drained through the slow path, not wait for
    // healing (the last 5 s may still be on their way).
    let before_heal = telltale_common::model::now_ms();
    let (missing_before_heal, gaps_before_heal) =
        collection_times(agg.http, "netagent", t0.elapsed().as_secs() + 60)
            .map(|ts| {
                let mut ts: Vec<i64> = ts
                    .into_iter()
                    .filter(|&t| t >= first && t <= before_heal - 5000)
                    .collect();
                let tail = ts
                    .last()
                    .map_or(before_heal - first, |&l| before_heal - 5000 - l);
                let missing = missing_intervals(&ts, 1000) + (tail.max(0) / 1000) as u64;
                // Where they were: a stalled drain leaves the partition's span empty, a
                // late fresh batch the last seconds.
                ts.push(before_heal - 4000);
                let gaps = ts
                    .windows(2)
                    .filter(|w| (w[1] - w[0]) * 2 > 3000)
                    .map(|w| ((w[0] - before_heal) / 1000, (w[1] - before_heal) / 1000))
                    .collect();
                (missing, gaps)
            })
            .unwrap_or((u64::MAX, Vec::new()));
    proxy.set(Faults::default());
    let healed = telltale_common::model::now_ms();
    let healed_at = Instant::now();
    let range = t0.elapsed().as_secs() + 120;
    let in_run = |ts: Vec<i64>| -> Vec<i64> {
        ts.into_iter()
            .filter(|&t| t >= first && t <= healed)
            .collect()
    };
    // Drained: samples up to the heal and no gap left (bounded wait: the backlog of a
    // 5-minute partition drains in seconds).
    let drained = wait_for(Duration::from_secs(180), || {
        let ts = in_run(collection_times(agg.http, "netagent", range).ok()?);
        let done =
            ts.last().is_some_and(|&l| l > healed - 2000) && missing_intervals(&ts, 1000) == 0;
        done.then_some(())
    });
    let drain_s = drained.map(|()| healed_at.elapsed().as_secs_f64());
    let ts = in_run(collection_times(agg.http, "netagent", range)?);
    let expected = ((healed - first) as f64 / 1000.0).round() as u64;
    Ok(NetReport {
        seed,
        expected,
        missing: missing_intervals(&ts, 1000),
        missing_before_heal,
        gaps_before_heal,
        overwritten: counter(agg.http, "telltale_aggregator_samples_overwritten_total") as u64,
        deduplicated: counter(agg.http, "telltale_aggregator_duplicate_batches_total") as u64,
        drain_s,
        connects: agent
            .log()
            .lines()
            .filter(|l| l.contains(" connected") && l.contains("backlog="))
            .count() as u64,
        proxy: proxy.stats(),
        agent_log: agent
            .log()
            .lines()
            .filter(|l| {
                [
                    "connect",
                    "backlog",
                    "gave up",
                    "giving up",
                    "session",
                    "adaptive",
                ]
                .iter()
                .any(|w| l.contains(w))
            })
            .map(String::from)
            .collect(),
    })
}

// ---- remote_write that never sends a sample twice ----------------------------------------

/// Series the writer keeps, and samples per series in one request.
/// Series a [`RwWriter`] writes (`chaos_rw_0` ...).
pub const RW_SERIES: usize = 5;
const RW_PER_REQUEST: i64 = 100;

/// A remote_write client writing `chaos_rw_<n>` series, 1 ms apart from ten minutes ago. It
/// never resends: a request that fails (the aggregator died under it) is given up and the next
/// one carries new timestamps, so anything stored twice is the server's doing, and every
/// sample of a 204 must be found at the end.
pub struct RwWriter {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Acked>>,
}

/// The requests a [`RwWriter`] had acknowledged: sample numbers `[from, to)` of every series.
#[derive(Clone, Debug, Default)]
pub struct Acked {
    /// Timestamp of sample number 0, ms.
    pub base: i64,
    /// Acknowledged ranges of sample numbers.
    pub ranges: Vec<(i64, i64)>,
    /// When each range was acknowledged, wall-clock ms.
    pub at: Vec<i64>,
}

impl RwWriter {
    /// Starts writing to `http` as fast as it answers, until [`RwWriter::stop`].
    pub fn start(http: SocketAddr) -> RwWriter {
        RwWriter::paced(http, Duration::ZERO, None)
    }

    /// Like [`RwWriter::start`], pausing `pause` between requests, with the API `token` when
    /// the server has one.
    pub fn paced(http: SocketAddr, pause: Duration, token: Option<&str>) -> RwWriter {
        let token = token.map(String::from);
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let handle = std::thread::spawn(move || {
            let base = telltale_common::model::now_ms() - 600_000;
            let mut acked = Acked {
                base,
                ..Acked::default()
            };
            let mut k = 0i64;
            while !st.load(Ordering::Relaxed) {
                // Never ahead of the clock: a long run catches up with now, then keeps pace.
                if base + k + RW_PER_REQUEST > telltale_common::model::now_ms() - 1000 {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let series: Vec<telltale_common::model::SeriesSamples> = (0..RW_SERIES)
                    .map(|n| telltale_common::model::SeriesSamples {
                        labels: telltale_common::model::Labels::from_pairs([
                            ("__name__", format!("chaos_rw_{n}").as_str()),
                            ("job", "chaos"),
                        ]),
                        samples: (k..k + RW_PER_REQUEST)
                            .map(|i| telltale_common::model::Sample(base + i, i as f64))
                            .collect(),
                    })
                    .collect();
                let body = telltale_aggregator::api::remote_write::encode(&series);
                match crate::http_post_auth(
                    http,
                    "/api/v1/write",
                    "application/x-protobuf",
                    &body,
                    token.as_deref(),
                ) {
                    Ok((204, _)) => {
                        acked.ranges.push((k, k + RW_PER_REQUEST));
                        acked.at.push(telltale_common::model::now_ms());
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
                std::thread::sleep(pause);
                k += RW_PER_REQUEST;
            }
            acked
        });
        RwWriter {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops and returns what was acknowledged.
    pub fn stop(mut self) -> Acked {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for RwWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Acked {
    /// Acknowledged samples, over every series.
    pub fn total(&self) -> u64 {
        self.ranges.iter().map(|(a, b)| (b - a) as u64).sum::<u64>() * RW_SERIES as u64
    }

    /// Acknowledged samples not stored with their value at `http` now.
    pub fn lost(&self, http: SocketAddr) -> anyhow::Result<u64> {
        let Some(&(_, end)) = self.ranges.last() else {
            return Ok(0);
        };
        let range_s = (telltale_common::model::now_ms() - self.base) / 1000 + 60;
        let mut lost = 0u64;
        for n in 0..RW_SERIES {
            let got: std::collections::HashMap<i64, f64> =
                raw_samples(http, &format!("chaos_rw_{n}"), &format!("{range_s}s"))?
                    .into_iter()
                    .collect();
            for &(a, b) in &self.ranges {
                for i in a..b.min(end) {
                    if got.get(&(self.base + i)) != Some(&(i as f64)) {
                        lost += 1;
                    }
                }
            }
        }
        Ok(lost)
    }
}

// ---- Crash loops --------------------------------------------------------------------------

/// What a crash loop counted.
#[derive(Clone, Debug, Default)]
pub struct CrashReport {
    /// Kill/restart cycles run.
    pub cycles: usize,
    /// remote_write samples acknowledged (204) over the run, and of them not found at the end.
    pub rw_acked: u64,
    /// Acknowledged remote_write samples missing at the end (goal 0).
    pub rw_lost: u64,
    /// Agent collections expected (between its first and its last before the final check).
    pub agent_expected: u64,
    /// Agent collections missing (goal 0; for agent kills: holes inside each lifetime and
    /// more than one interval lost at its end).
    pub agent_lost: u64,
    /// Samples stored twice, summed over the aggregator's lives (goal 0).
    pub duplicates: u64,
    /// Recovery times, seconds (aggregator: kill to `/-/ready`; agent: restart to its next
    /// stored sample), sorted.
    pub recovery_s: Vec<f64>,
}

impl CrashReport {
    /// The recovery time's p99 (nearest rank) in seconds.
    pub fn recovery_p99(&self) -> f64 {
        let v = &self.recovery_s;
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    }
}

/// Waits for `/-/ready` to answer 200.
fn ready(agg: &Aggregator, timeout: Duration) -> bool {
    wait_for(timeout, || {
        (http_get(agg.http, "/-/ready").ok()?.0 == 200).then_some(())
    })
    .is_some()
}

/// The seeded pause before a kill: 1.5 to 4 s.
fn pause(rng: &mut u64) -> Duration {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    Duration::from_millis(1500 + *rng % 2500)
}

/// `cycles` SIGKILLs of the aggregator while an agent ships at 1 s and a remote_write client
/// writes; each restart on the same data directory and ports.
pub fn aggregator_crash_loop(cycles: usize, seed: u64) -> anyhow::Result<CrashReport> {
    let s = Scratch::new(&["loopagent"])?;
    let data = s.path("agg");
    let mut agg = start_aggregator(&s.tls, &data, "127.0.0.1:0", "127.0.0.1:0", &[])?;
    let (http_s, quic_s) = (agg.http.to_string(), agg.quic.to_string());
    let agent = start_agent(&s.tls, "loopagent", agg.quic, &s.path("agent"), "1s")?;
    let writer = RwWriter::start(agg.http);
    let t0 = Instant::now();
    let first_ms = telltale_common::model::now_ms();
    let mut rng = seed | 1;
    let mut report = CrashReport {
        cycles,
        ..CrashReport::default()
    };
    for _ in 0..cycles {
        // Sample the duplicate counter through the life (a SIGKILL gives no last word).
        let until = Instant::now() + pause(&mut rng);
        let mut seen = 0.0f64;
        while Instant::now() < until {
            seen = seen.max(counter(
                agg.http,
                "telltale_aggregator_samples_overwritten_total",
            ));
            std::thread::sleep(Duration::from_millis(200));
        }
        report.duplicates += seen as u64;
        agg.proc.kill();
        let killed = Instant::now();
        agg = start_aggregator(&s.tls, &data, &http_s, &quic_s, &[])?;
        anyhow::ensure!(
            ready(&agg, Duration::from_secs(60)),
            "not ready after a restart\n{}",
            agg.proc.log()
        );
        report.recovery_s.push(killed.elapsed().as_secs_f64());
    }
    std::thread::sleep(Duration::from_secs(2));
    let acked = writer.stop();
    let last_ms = telltale_common::model::now_ms() - 1000;
    // Everything drained: the agent's intervals and the acknowledged writes.
    let range = t0.elapsed().as_secs() + 60;
    wait_for(Duration::from_secs(60), || {
        let ts: Vec<i64> = collection_times(agg.http, "loopagent", range)
            .ok()?
            .into_iter()
            .filter(|&t| t >= first_ms)
            .collect();
        (ts.last().is_some_and(|&l| l >= last_ms) && missing_intervals(&ts, 1000) == 0)
            .then_some(())
    });
    let ts: Vec<i64> = collection_times(agg.http, "loopagent", range)?
        .into_iter()
        .filter(|&t| t >= first_ms && t <= last_ms)
        .collect();
    report.agent_expected = ts
        .first()
        .zip(ts.last())
        .map(|(a, b)| ((b - a) / 1000 + 1) as u64)
        .unwrap_or(0);
    report.agent_lost = missing_intervals(&ts, 1000);
    report.rw_acked = acked.total();
    report.rw_lost = acked.lost(agg.http)?;
    report.duplicates += counter(agg.http, "telltale_aggregator_samples_overwritten_total") as u64;
    report.recovery_s.sort_by(f64::total_cmp);
    drop(agent);
    Ok(report)
}

/// `cycles` SIGKILLs of an agent collecting every second while the aggregator stays up.
pub fn agent_crash_loop(cycles: usize, seed: u64) -> anyhow::Result<CrashReport> {
    let s = Scratch::new(&["loopee"])?;
    let agg = start_aggregator(&s.tls, &s.path("agg"), "127.0.0.1:0", "127.0.0.1:0", &[])?;
    let data = s.path("agent");
    let t0 = Instant::now();
    let mut rng = seed | 1;
    let mut report = CrashReport {
        cycles,
        ..CrashReport::default()
    };
    // Each life: (started, killed) wall-clock ms.
    let mut lives: Vec<(i64, i64)> = Vec::new();
    for _ in 0..cycles {
        let started = telltale_common::model::now_ms();
        let t = Instant::now();
        let mut agent = start_agent(&s.tls, "loopee", agg.quic, &data, "1s")?;
        // Recovery: the first sample of this life stored.
        let back = wait_for(Duration::from_secs(30), || {
            collection_times(agg.http, "loopee", 120)
                .ok()?
                .iter()
                .any(|&x| x >= started)
                .then_some(())
        });
        anyhow::ensure!(
            back.is_some(),
            "the agent did not come back\n{}",
            agent.log()
        );
        report.recovery_s.push(t.elapsed().as_secs_f64());
        std::thread::sleep(pause(&mut rng));
        agent.kill();
        lives.push((started, telltale_common::model::now_ms()));
    }
    // The last life's buffer is delivered by one more start.
    let _agent = start_agent(&s.tls, "loopee", agg.quic, &data, "1s")?;
    let range = t0.elapsed().as_secs() + 60;
    let tail_ok = |ts: &[i64], (a, b): (i64, i64)| {
        ts.iter()
            .filter(|&&t| t >= a && t <= b)
            .max()
            .is_some_and(|&m| m >= b - 2000)
    };
    wait_for(Duration::from_secs(30), || {
        let ts = collection_times(agg.http, "loopee", range).ok()?;
        lives.iter().all(|&l| tail_ok(&ts, l)).then_some(())
    });
    let ts = collection_times(agg.http, "loopee", range)?;
    for &(a, b) in &lives {
        let life: Vec<i64> = ts.iter().copied().filter(|&t| t >= a && t <= b).collect();
        let (Some(&f), Some(&l)) = (life.first(), life.last()) else {
            report.agent_lost += 1;
            continue;
        };
        report.agent_expected += ((b - f) / 1000 + 1) as u64;
        // Holes inside the life, and the end: a collection under way at the kill may be
        // lost (it was never persisted), anything older than that was.
        report.agent_lost += missing_intervals(&life, 1000) + ((b - l) / 1000 - 1).max(0) as u64;
    }
    report.duplicates = counter(agg.http, "telltale_aggregator_samples_overwritten_total") as u64;
    report.recovery_s.sort_by(f64::total_cmp);
    Ok(report)
}

// ---- Full disks ---------------------------------------------------------------------------

/// What a disk-full run counted.
#[derive(Clone, Debug, Default)]
pub struct DiskReport {
    /// The process logged the condition.
    pub logged: bool,
    /// `telltale_*_disk_full` while full (`None`: never seen).
    pub flagged: Option<f64>,
    /// Intervals (agent) or acknowledged samples (aggregator) missing afterwards.
    pub lost: u64,
    /// Acknowledged writes while full (aggregator: goal 0).
    pub acked_while_full: u64,
    /// Data flowed again after space came back, by itself.
    pub resumed: bool,
    /// Seconds from freeing space to the first new data stored.
    pub resume_s: f64,
    /// Aggregator: of 200 silences made while the disk is full, how many were refused (its
    /// sled store cannot write; small records may still fit pages already allocated) ...
    pub alerting_refused_while_full: Option<u64>,
    /// ... and one made once space is back is taken (200).
    pub alerting_writes: Option<bool>,
}

/// Makes a one-hour silence through the API; true on 200.
fn make_silence(http: SocketAddr, token: &str) -> bool {
    let now = std::time::SystemTime::now();
    let body = format!(
        r#"{{"matchers":[{{"name":"alertname","value":"ChaosDiskFull","isRegex":false}}],"startsAt":"{}","endsAt":"{}","createdBy":"chaos","comment":"disk full test"}}"#,
        humantime::format_rfc3339_seconds(now),
        humantime::format_rfc3339_seconds(now + Duration::from_secs(3600))
    );
    crate::http_post_auth(
        http,
        "/api/v2/silences",
        "application/json",
        body.as_bytes(),
        Some(token),
    )
    .is_ok_and(|(st, _)| st == 200)
}

/// The agent's data directory on a 16 MiB tmpfs, filled for `full_for` while it collects every
/// second, then freed. `None` when no tmpfs can be mounted (not root).
pub fn agent_disk_full(full_for: Duration) -> anyhow::Result<Option<DiskReport>> {
    let s = Scratch::new(&["fullagent"])?;
    let agg = start_aggregator(&s.tls, &s.path("agg"), "127.0.0.1:0", "127.0.0.1:0", &[])?;
    let Some(fs) = Tmpfs::mount(&s.path("small"), "16m") else {
        return Ok(None);
    };
    let agent = start_agent(
        &s.tls,
        "fullagent",
        agg.quic,
        &s.path("small").join("agent"),
        "1s",
    )?;
    let first_ms = telltale_common::model::now_ms();
    wait_for(Duration::from_secs(30), || {
        (collection_times(agg.http, "fullagent", 60).ok()?.len() >= 2).then_some(())
    })
    .with_context(|| format!("no samples\n{}", agent.log()))?;
    let filler = fs.fill();
    let mut r = DiskReport::default();
    std::thread::sleep(full_for);
    r.logged = agent.log().contains("agent buffer disk full");
    std::fs::remove_file(&filler)?;
    let freed = telltale_common::model::now_ms();
    let t = Instant::now();
    let resumed = wait_for(Duration::from_secs(60), || {
        let ts = collection_times(agg.http, "fullagent", 300).ok()?;
        let ts: Vec<i64> = ts.into_iter().filter(|&t| t >= first_ms).collect();
        (ts.last().is_some_and(|&l| l > freed + 1000) && missing_intervals(&ts, 1000) == 0)
            .then_some(())
    });
    r.resumed = resumed.is_some();
    r.resume_s = t.elapsed().as_secs_f64();
    let ts: Vec<i64> = collection_times(agg.http, "fullagent", 300)?
        .into_iter()
        .filter(|&t| t >= first_ms)
        .collect();
    r.lost = missing_intervals(&ts, 1000);
    // The gauge's samples from the full time arrive with the held batches.
    let q = crate::query(
        agg.http,
        "max_over_time(telltale_agent_disk_full{instance=\"fullagent\"}[5m])",
    )?;
    r.flagged = q
        .first()
        .and_then(|x| x["value"][1].as_str())
        .and_then(|v| v.parse().ok());
    if !r.resumed {
        eprintln!("agent log:\n{}", agent.log());
    }
    drop(agent);
    drop(fs);
    Ok(Some(r))
}

/// The aggregator's data directory on a 32 MiB tmpfs, filled for `full_for` under an agent at
/// 1 s and remote_write, then freed. `None` when no tmpfs can be mounted (not root).
pub fn aggregator_disk_full(full_for: Duration) -> anyhow::Result<Option<DiskReport>> {
    let s = Scratch::new(&["fullagg"])?;
    let Some(fs) = Tmpfs::mount(&s.path("small"), "32m") else {
        return Ok(None);
    };
    let agg = start_aggregator(
        &s.tls,
        &s.path("small").join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--api-token", "chaos"],
    )?;
    let agent = start_agent(&s.tls, "fullagg", agg.quic, &s.path("agent"), "1s")?;
    let writer = RwWriter::paced(agg.http, Duration::from_millis(100), Some("chaos"));
    let first_ms = telltale_common::model::now_ms();
    wait_for(Duration::from_secs(30), || {
        (collection_times(agg.http, "fullagg", 60).ok()?.len() >= 2).then_some(())
    })
    .with_context(|| format!("no samples\n{}", agent.log()))?;
    let filler = fs.fill();
    let full_at = telltale_common::model::now_ms();
    let mut r = DiskReport::default();
    let until = Instant::now() + full_for;
    while Instant::now() < until {
        if let Ok(v) = metric(agg.http, "telltale_aggregator_disk_full") {
            r.flagged = Some(r.flagged.map_or(v, |f: f64| f.max(v)));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    r.logged = agg.proc.log().contains("log write failed");
    // The alerting state on the same disk: a write while full.
    r.alerting_refused_while_full = Some(
        (0..200)
            .filter(|_| !make_silence(agg.http, "chaos"))
            .count() as u64,
    );
    std::fs::remove_file(&filler)?;
    let freed = telltale_common::model::now_ms();
    let t = Instant::now();
    let resumed = wait_for(Duration::from_secs(60), || {
        let ts: Vec<i64> = collection_times(agg.http, "fullagg", 300)
            .ok()?
            .into_iter()
            .filter(|&t| t >= first_ms)
            .collect();
        (ts.last().is_some_and(|&l| l > freed + 1000) && missing_intervals(&ts, 1000) == 0)
            .then_some(())
    });
    r.resumed = resumed.is_some();
    r.resume_s = t.elapsed().as_secs_f64();
    // The alerting state's sled store was full too (it flushes every 500 ms).
    r.alerting_writes = Some(
        wait_for(Duration::from_secs(10), || {
            make_silence(agg.http, "chaos").then_some(())
        })
        .is_some(),
    );
    std::thread::sleep(Duration::from_secs(1));
    let acked = writer.stop();
    // Acknowledged after the disk was full and the write in flight had failed.
    r.acked_while_full = acked
        .at
        .iter()
        .filter(|&&a| a > full_at + 2000 && a < freed)
        .count() as u64;
    let ts: Vec<i64> = collection_times(agg.http, "fullagg", 300)?
        .into_iter()
        .filter(|&t| t >= first_ms)
        .collect();
    r.lost = missing_intervals(&ts, 1000) + acked.lost(agg.http)?;
    anyhow::ensure!(acked.total() > 0, "remote_write never acknowledged");
    if !r.resumed {
        eprintln!("aggregator log:\n{}", agg.proc.log());
    }
    drop(agent);
    drop(agg);
    drop(fs);
    Ok(Some(r))
}

// ---- Clock jumps --------------------------------------------------------------------------

/// Debian's libfaketime (package `faketime`): it moves the wall clock of the process it is
/// preloaded in, read from a file, so the clock can jump while the process runs. The
/// monotonic clock is left alone (`DONT_FAKE_MONOTONIC`), as an NTP step or an operator's
/// `date -s` leaves it.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Whose clock jumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whose {
    /// The agent's.
    Agent,
    /// The aggregator's.
    Aggregator,
}

/// What a clock jump counted.
#[derive(Clone, Debug, Default)]
pub struct ClockReport {
    /// Both processes still running at the end.
    pub alive: bool,
    /// Samples refused as too far ahead / too old while and after the clock was off.
    pub refused_new: u64,
    /// See `refused_new`.
    pub refused_old: u64,
    /// Seconds from the clock's return until the agent's samples were stored again (`None`:
    /// not within a minute: a window stuck).
    pub flowing_again_s: Option<f64>,
    /// Rule group evaluations in the 5 s after the return (the aggregator kept evaluating).
    pub evaluations_after: u64,
}

fn faketime(cmd: &mut std::process::Command, file: &std::path::Path) {
    cmd.env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", file)
        .env("FAKETIME_CACHE_DURATION", "1")
        .env("DONT_FAKE_MONOTONIC", "1");
}

fn refused(http: SocketAddr, reason: &str) -> u64 {
    metric(
        http,
        &format!("telltale_aggregator_samples_refused_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0) as u64
}

/// `whose` clock jumps by `offset` (libfaketime's notation: `+3h`, `-3h`) for `hold`, then
/// comes back, while an agent collects every second. `None` when libfaketime is absent.
pub fn clock_jump(
    whose: Whose,
    offset: &str,
    hold: Duration,
) -> anyhow::Result<Option<ClockReport>> {
    if !std::path::Path::new(LIBFAKETIME).exists() {
        return Ok(None);
    }
    let s = Scratch::new(&["clockagent"])?;
    let clock = s.path("clock");
    std::fs::write(&clock, "+0\n")?;
    let cfg = s.path("agg.toml");
    std::fs::write(&cfg, "[rules]\nevaluation_interval = \"1s\"\n")?;
    let mut cmd = std::process::Command::new(crate::bin("telltale-aggregator")?);
    cmd.arg("serve")
        .arg("--tls-dir")
        .arg(&s.tls)
        .arg("--data-dir")
        .arg(s.path("agg"))
        .arg("--config")
        .arg(&cfg)
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--quic-listen",
            "127.0.0.1:0",
        ]);
    if whose == Whose::Aggregator {
        faketime(&mut cmd, &clock);
    }
    let mut agg = crate::start_aggregator_command(cmd)?;
    let mut cmd =
        crate::agent_command(&s.tls, "clockagent", agg.quic, &s.path("agent"), "1s", None)?;
    if whose == Whose::Agent {
        faketime(&mut cmd, &clock);
    }
    let mut agent = Proc::spawn(cmd, "clockagent")?.0;
    wait_for(Duration::from_secs(30), || {
        (collection_times(agg.http, "clockagent", 600).ok()?.len() >= 3).then_some(())
    })
    .with_context(|| format!("no samples\n{}", agent.log()))?;
    std::fs::write(&clock, format!("{offset}\n"))?;
    std::thread::sleep(hold);
    std::fs::write(&clock, "+0\n")?;
    // libfaketime re-reads the file within its cache second.
    std::thread::sleep(Duration::from_millis(1100));
    let back = telltale_common::model::now_ms();
    let t = Instant::now();
    // Evaluations on the timer: they stop if a clock jump leaves the schedule waiting.
    let evals = || {
        counter(
            agg.http,
            "telltale_aggregator_rule_group_evaluations_total{trigger=\"timer\"}",
        )
    };
    let e0 = evals();
    // Flowing again: a sample stamped after the return, by the (now right) clocks.
    let flowing = wait_for(Duration::from_secs(60), || {
        collection_times(agg.http, "clockagent", 600)
            .ok()?
            .iter()
            .any(|&x| x > back + 1000)
            .then_some(())
    });
    let flowing_again_s = flowing.map(|()| t.elapsed().as_secs_f64());
    let e1 = evals();
    std::thread::sleep(Duration::from_secs(5));
    let report = ClockReport {
        alive: agent.child.try_wait().ok().flatten().is_none()
            && agg.proc.child.try_wait().ok().flatten().is_none(),
        refused_new: refused(agg.http, "too_far_in_future"),
        refused_old: refused(agg.http, "too_old"),
        flowing_again_s,
        evaluations_after: (evals() - e1.max(e0)) as u64,
    };
    if report.flowing_again_s.is_none() {
        eprintln!(
            "agent log:\n{}\naggregator log:\n{}",
            agent.log(),
            agg.proc.log()
        );
    }
    agent.kill();
    agg.proc.kill();
    Ok(Some(report))
}

/// A process's resident set in bytes and open descriptors (the soak samples them).
pub fn rss_and_fds(p: &Proc) -> (u64, u64) {
    let pid = p.child.id();
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (rss, fds)
}

/// A small tmpfs of our own (a full disk on demand; needs root, as CI has), unmounted when
/// dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `24m`) on `dir`; `None` when it cannot.
    pub fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    /// Fills the file system with `dir/filler` until a write fails; returns the file.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        if let Ok(mut f) = std::fs::File::create(&filler) {
            let block = vec![0u8; 1 << 16];
            while f.write_all(&block).is_ok() {}
            let mut small = [0u8; 512];
            while f.write_all(&small[..]).is_ok() {
                small[0] = small[0].wrapping_add(1);
            }
            let _ = f.sync_all();
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
