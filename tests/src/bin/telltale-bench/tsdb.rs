//! `telltale-bench tsdb [--shape real|slices] [--hosts N] [--hours H] [--senders 4]
//! [--per-body 10000] [--jitter-ms 25]`: the storage engine against VictoriaMetrics and
//! Prometheus (Debian's packages), the same remote_write bodies sent to each, one system at a
//! time in one run.
//!
//! Shapes: `real` (the default, 366 hosts × 6 h) is what real senders produce — Prometheus'
//! remote_write queues and Telltale's agents ship what was just scraped, one sample per series
//! per request, thousands of series a request, time-major, from shards that each own a share of
//! the series; `slices` (50 hosts × 24 h) sends 30 samples per series per request.
//!
//! Data: per simulated host 82 series every 10 s — node_exporter-like (4 CPUs × 5 modes of
//! `node_cpu_seconds_total` in 0.01 s steps, memory in 4 KiB pages, load with two decimals,
//! filesystems, network and disk counters, context switches...) and an application mix
//! (request counters by code and method, a latency histogram of 11 buckets with sum and
//! count, gauges, a business counter). Timestamps carry a per-host offset and a few ms of
//! scrape jitter. Bodies are encoded before timing, in time order (5-minute slices).
//!
//! Measured: ingest samples/s (wall time of the senders until the last body is
//! acknowledged), the server's CPU seconds (utime + stime) per million samples while the
//! senders ran, bytes per sample on disk (the whole data directory, after each system's
//! own compaction: Telltale's flush endpoint, VictoriaMetrics' force_flush + force_merge,
//! Prometheus' own compaction loop until the directory stops changing), RSS growth per
//! million active series, and the median latency of `rate(node_cpu_seconds_total[5m])` over
//! the last 6 h at a 60 s step (1000 series at 50 hosts).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use telltale_common::model::{Labels, Sample, SeriesSamples};
use telltale_tests::compliance::{PROMETHEUS, Rng};
use telltale_tests::*;

use crate::{arg, mib, proc_usage};
use telltale_aggregator::metrics::tsdb::check::du;

pub(crate) const VICTORIA: &str = "/usr/bin/victoria-metrics";
const STEP: i64 = 10_000;

/// How one series evolves.
#[derive(Clone, Copy)]
enum Shape {
    /// A counter growing by `[lo, lo + spread)` per step, rounded to `res`.
    Counter { lo: f64, spread: f64, res: f64 },
    /// A gauge random-walking by up to `spread` per step around its start, rounded to `res`.
    Walk { spread: f64, res: f64, min: f64 },
    /// A constant.
    Const,
    /// Seconds since the epoch at the sample time (node_time_seconds).
    Clock,
}

struct Gen {
    labels: Labels,
    shape: Shape,
    v: f64,
    host_offset: i64,
    host: usize,
}

fn host_series(h: usize, rng: &mut Rng) -> Vec<Gen> {
    let instance = format!("host-{h:04}:9100");
    let host_offset = (rng.uniform() * 10_000.0) as i64;
    let mut out = Vec::new();
    let mut add = |name: &str, extra: &[(&str, &str)], shape: Shape, v: f64| {
        let mut l = Labels::from_pairs(extra.iter().copied());
        l.set("__name__", name);
        l.set("instance", &instance);
        l.set("job", "node");
        out.push(Gen {
            labels: l,
            shape,
            v,
            host_offset,
            host: h,
        });
    };
    let c = |lo: f64, spread: f64, res: f64| Shape::Counter { lo, spread, res };
    for cpu in ["0", "1", "2", "3"] {
        for (mode, lo, spread) in [
            ("idle", 7.0, 2.5),
            ("user", 1.0, 1.5),
            ("system", 0.3, 0.5),
            ("iowait", 0.0, 0.1),
            ("steal", 0.0, 0.02),
        ] {
            add(
                "node_cpu_seconds_total",
                &[("cpu", cpu), ("mode", mode)],
                c(lo, spread, 0.01),
                100_000.0 * rng.uniform(),
            );
        }
    }
    for (name, v) in [
        ("MemTotal", 16e9),
        ("MemFree", 2e9),
        ("MemAvailable", 8e9),
        ("Buffers", 3e8),
        ("Cached", 5e9),
        ("SwapFree", 2e9),
    ] {
        let shape = if name == "MemTotal" {
            Shape::Const
        } else {
            Shape::Walk {
                spread: 2e6,
                res: 4096.0,
                min: 0.0,
            }
        };
        add(
            &format!("node_memory_{name}_bytes"),
            &[],
            shape,
            (v / 4096.0f64).round() * 4096.0,
        );
    }
    for (name, spread) in [
        ("node_load1", 0.3),
        ("node_load5", 0.1),
        ("node_load15", 0.05),
    ] {
        add(
            name,
            &[],
            Shape::Walk {
                spread,
                res: 0.01,
                min: 0.0,
            },
            1.0,
        );
    }
    for mp in ["/", "/var", "/home"] {
        add(
            "node_filesystem_size_bytes",
            &[("mountpoint", mp), ("fstype", "ext4")],
            Shape::Const,
            1e11,
        );
        add(
            "node_filesystem_avail_bytes",
            &[("mountpoint", mp), ("fstype", "ext4")],
            Shape::Walk {
                spread: 1e5,
                res: 4096.0,
                min: 0.0,
            },
            5e10,
        );
        add(
            "node_filesystem_free_bytes",
            &[("mountpoint", mp), ("fstype", "ext4")],
            Shape::Walk {
                spread: 1e5,
                res: 4096.0,
                min: 0.0,
            },
            5.5e10,
        );
    }
    for dev in ["eth0", "lo"] {
        add(
            "node_network_receive_bytes_total",
            &[("device", dev)],
            c(1e4, 1e5, 1.0),
            1e9,
        );
        add(
            "node_network_transmit_bytes_total",
            &[("device", dev)],
            c(1e4, 5e4, 1.0),
            1e9,
        );
        add(
            "node_network_receive_packets_total",
            &[("device", dev)],
            c(10.0, 100.0, 1.0),
            1e6,
        );
        add(
            "node_network_transmit_packets_total",
            &[("device", dev)],
            c(10.0, 80.0, 1.0),
            1e6,
        );
    }
    for dev in ["sda", "sdb"] {
        add(
            "node_disk_reads_completed_total",
            &[("device", dev)],
            c(0.0, 20.0, 1.0),
            1e5,
        );
        add(
            "node_disk_writes_completed_total",
            &[("device", dev)],
            c(0.0, 40.0, 1.0),
            1e5,
        );
        add(
            "node_disk_read_bytes_total",
            &[("device", dev)],
            c(0.0, 4e5, 512.0),
            1e9,
        );
        add(
            "node_disk_written_bytes_total",
            &[("device", dev)],
            c(0.0, 8e5, 512.0),
            1e9,
        );
    }
    add(
        "node_context_switches_total",
        &[],
        c(1000.0, 3000.0, 1.0),
        1e7,
    );
    add("node_intr_total", &[], c(500.0, 1500.0, 1.0), 1e7);
    add(
        "node_procs_running",
        &[],
        Shape::Walk {
            spread: 2.0,
            res: 1.0,
            min: 0.0,
        },
        3.0,
    );
    add(
        "node_procs_blocked",
        &[],
        Shape::Walk {
            spread: 1.0,
            res: 1.0,
            min: 0.0,
        },
        0.0,
    );
    add("node_boot_time_seconds", &[], Shape::Const, 1.7e9);
    add("node_time_seconds", &[], Shape::Clock, 0.0);
    for code in ["200", "404", "500"] {
        for method in ["GET", "POST"] {
            let lo = if code == "200" { 50.0 } else { 0.0 };
            add(
                "http_requests_total",
                &[("code", code), ("method", method)],
                c(lo, 30.0, 1.0),
                1e5,
            );
        }
    }
    let mut bucket_base = 0.0;
    for (i, le) in [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf",
    ]
    .iter()
    .enumerate()
    {
        bucket_base += 1000.0 * (i + 1) as f64;
        add(
            "http_request_duration_seconds_bucket",
            &[("le", le)],
            c(5.0 * (i + 1) as f64, 10.0, 1.0),
            bucket_base,
        );
    }
    add(
        "http_request_duration_seconds_sum",
        &[],
        c(10.0, 20.0, 0.001),
        1e5,
    );
    add(
        "http_request_duration_seconds_count",
        &[],
        c(300.0, 80.0, 1.0),
        1e6,
    );
    add(
        "app_queue_depth",
        &[],
        Shape::Walk {
            spread: 5.0,
            res: 1.0,
            min: 0.0,
        },
        10.0,
    );
    add(
        "app_active_users",
        &[],
        Shape::Walk {
            spread: 20.0,
            res: 1.0,
            min: 0.0,
        },
        500.0,
    );
    add("shop_orders_total", &[], c(0.0, 4.0, 1.0), 1e4);
    out
}

impl Gen {
    /// The next sample for scrape slot `t`, landing up to `jitter_ms` after it.
    fn next(&mut self, t: i64, rng: &mut Rng, jitter_ms: f64) -> Sample {
        let round = |v: f64, res: f64| (v / res).round() * res;
        self.v = match self.shape {
            Shape::Counter { lo, spread, res } => round(self.v + lo + spread * rng.uniform(), res),
            Shape::Walk { spread, res, min } => {
                round((self.v + spread * (rng.uniform() - 0.5)).max(min), res)
            }
            Shape::Const => self.v,
            Shape::Clock => t as f64 / 1000.0,
        };
        // A scrape lands a little after its slot.
        let jitter = (rng.uniform() * jitter_ms) as i64;
        Sample(t + self.host_offset + jitter, self.v)
    }
}

/// A remote_write body: (time slice, series group, bytes).
pub(crate) type Body = (usize, usize, Vec<u8>);

/// Remote-write bodies in time order: 5-minute slices, 200 series a body, each tagged with
/// its group of series.
fn bodies(hosts: usize, start: i64, end: i64) -> (Vec<Body>, usize, usize) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut gens: Vec<Gen> = (0..hosts).flat_map(|h| host_series(h, &mut rng)).collect();
    let series = gens.len();
    let mut out = Vec::new();
    let mut samples = 0;
    let mut t = start;
    let mut slice = 0;
    while t < end {
        let slice_end = (t + 30 * STEP).min(end);
        for (gi, group) in gens.chunks_mut(200).enumerate() {
            let chunk: Vec<SeriesSamples> = group
                .iter_mut()
                .map(|g| {
                    let mut s = Vec::with_capacity(30);
                    let mut u = t;
                    while u < slice_end {
                        s.push(g.next(u, &mut rng, 4.0));
                        u += STEP;
                    }
                    samples += s.len();
                    SeriesSamples {
                        labels: g.labels.clone(),
                        samples: s,
                    }
                })
                .collect();
            out.push((
                slice,
                gi,
                telltale_aggregator::api::remote_write::encode(&chunk),
            ));
        }
        t = slice_end;
        slice += 1;
    }
    (out, series, samples)
}

/// Remote-write bodies as real senders cut them (Prometheus' remote_write queues, Telltale's
/// agents): time-major, one sample per series per scrape, `per_body` samples a request, the
/// series split over `shards` (series `i` to shard `i % shards`, as a shard owns its series),
/// timestamps up to `jitter_ms` after the scrape slot. Every shard closes its partial body
/// at each 5-minute slice, where the senders meet. What real traffic also has: a host now and
/// then misses a scrape (1 in 1,000), goes down for 5 minutes with stale markers for all its
/// series first (1 in 20,000 scrapes), a counter resets (a process restart, 1 in 50,000
/// samples) and a gauge reads NaN (1 in 20,000).
pub(crate) fn bodies_real(
    hosts: usize,
    start: i64,
    end: i64,
    shards: usize,
    per_body: usize,
    jitter_ms: f64,
) -> (Vec<Body>, usize, usize) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut gens: Vec<Gen> = (0..hosts).flat_map(|h| host_series(h, &mut rng)).collect();
    let series = gens.len();
    let mut pending: Vec<Vec<SeriesSamples>> = (0..shards).map(|_| Vec::new()).collect();
    let mut out = Vec::new();
    let mut samples = 0;
    let (mut t, mut step) = (start, 0usize);
    // Per host: the step it is back up at, and whether it misses this scrape.
    let mut down_until = vec![0usize; hosts];
    let mut skip = vec![false; hosts];
    while t < end {
        let slice = step / 30;
        for h in 0..hosts {
            skip[h] = step < down_until[h] || rng.uniform() < 1e-3;
            if step >= down_until[h] && rng.uniform() < 5e-5 {
                down_until[h] = step + 30;
            }
        }
        for (i, g) in gens.iter_mut().enumerate() {
            let shard = i % shards;
            let mut x = g.next(t, &mut rng, jitter_ms);
            if down_until[g.host] == step + 30 {
                // Going down: Prometheus writes a stale marker for each series.
                x.1 = f64::from_bits(telltale_common::model::STALE_NAN_BITS);
            } else if skip[g.host] {
                continue;
            } else if let Shape::Counter { .. } = g.shape
                && rng.uniform() < 2e-5
            {
                g.v = 0.0;
                x.1 = 0.0;
            } else if let Shape::Walk { .. } = g.shape
                && rng.uniform() < 5e-5
            {
                x.1 = f64::NAN;
            }
            pending[shard].push(SeriesSamples {
                labels: g.labels.clone(),
                samples: vec![x],
            });
            samples += 1;
            if pending[shard].len() == per_body {
                out.push((
                    slice,
                    shard,
                    telltale_aggregator::api::remote_write::encode(&pending[shard]),
                ));
                pending[shard].clear();
            }
        }
        t += STEP;
        step += 1;
        if step % 30 == 0 || t >= end {
            for (shard, p) in pending.iter_mut().enumerate() {
                if !p.is_empty() {
                    out.push((
                        slice,
                        shard,
                        telltale_aggregator::api::remote_write::encode(p),
                    ));
                    p.clear();
                }
            }
        }
    }
    (out, series, samples)
}

/// POSTs every body over keep-alive HTTP/1.1 connections from `senders` threads, sharded by
/// series group like Prometheus' remote_write shards (so each series arrives in order), all
/// shards finishing a 5-minute slice before any starts the next (Prometheus refuses samples
/// more than an hour behind its head); returns the wall time until the last body was
/// answered 2xx.
pub(crate) fn send_all(
    addr: SocketAddr,
    bodies: &Arc<Vec<Body>>,
    senders: usize,
) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let barrier = Arc::new(std::sync::Barrier::new(senders));
    let slices = bodies.last().map_or(0, |b| b.0 + 1);
    let handles: Vec<_> = (0..senders)
        .map(|me| {
            let (bodies, barrier) = (bodies.clone(), barrier.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut conn = TcpStream::connect(addr)?;
                conn.set_nodelay(true)?;
                let mut reader = BufReader::new(conn.try_clone()?);
                let mut failed = None;
                let mut i = 0;
                for slice in 0..slices {
                    while i < bodies.len() && bodies[i].0 == slice {
                        let (_, group, b) = &bodies[i];
                        i += 1;
                        if group % senders != me || failed.is_some() {
                            continue;
                        }
                        if let Err(e) = post(&mut conn, &mut reader, addr, b) {
                            failed = Some(e);
                        }
                    }
                    // Every shard reaches every barrier, failed or not, so none waits forever.
                    barrier.wait();
                }
                failed.map_or(Ok(()), Err)
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// One remote_write POST on a keep-alive connection; an error unless answered 2xx.
fn post(
    conn: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    b: &[u8],
) -> anyhow::Result<()> {
    write!(
        conn,
        "POST /api/v1/write HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\nContent-Length: {}\r\n\r\n",
        b.len()
    )?;
    conn.write_all(b)?;
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    anyhow::ensure!(
        (200..300).contains(&code),
        "{addr}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

/// Waits until `p`'s size has not changed for `quiet` (at most `max`).
fn settle(p: &Path, quiet: Duration, max: Duration) -> u64 {
    let end = Instant::now() + max;
    let mut last = du(p);
    let mut since = Instant::now();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(2));
        let now = du(p);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    last
}

/// One system's figures.
struct Row {
    name: &'static str,
    rate: f64,
    cpu_per_m: f64,
    bps: f64,
    per_m: f64,
    hwm: u64,
    ms: f64,
    n: usize,
}

struct Peer {
    name: &'static str,
    addr: SocketAddr,
    pid: u32,
    data: std::path::PathBuf,
    /// The peer's process (Telltale's is the harness' `Aggregator`): stopped when dropped,
    /// whatever ended the run.
    _child: Option<KillOnDrop>,
}

pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn wait_ok(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    wait_for(Duration::from_secs(60), || {
        http_get(addr, path).ok().filter(|r| r.0 == 200)
    })
    .with_context(|| format!("{addr}{path} never answered 200"))?;
    Ok(())
}

fn query_ms(addr: SocketAddr, path: &str, rounds: usize) -> anyhow::Result<(f64, usize)> {
    let (status, body) = http_get(addr, path)?;
    anyhow::ensure!(status == 200, "{addr}{path}: {status} {body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let n = v["data"]["result"].as_array().map_or(0, Vec::len);
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let (status, _) = http_get(addr, path)?;
        anyhow::ensure!(status == 200);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], n))
}

pub fn bench_tsdb(args: &[String]) -> anyhow::Result<()> {
    // `real` (the headline): what remote_write queues and agents send, one sample per series
    // per request; `slices`: 30 samples per series per request (5-minute slices).
    let shape: String = arg(args, "--shape", "real".to_string());
    let real = match shape.as_str() {
        "real" => true,
        "slices" => false,
        other => anyhow::bail!("--shape {other}: real or slices"),
    };
    let hosts: usize = arg(args, "--hosts", if real { 366 } else { 50 });
    let hours: i64 = arg(args, "--hours", if real { 6 } else { 24 });
    let senders: usize = arg(args, "--senders", 4);
    let per_body: usize = arg(args, "--per-body", 10_000);
    let jitter_ms: f64 = arg(args, "--jitter-ms", 25.0);
    let end = telltale_common::model::now_ms() / STEP * STEP - 60_000;
    let start = end - hours * 3_600_000;
    eprintln!("encoding {hosts} hosts × {hours} h ({shape})...");
    let (bodies, series, samples) = if real {
        bodies_real(hosts, start, end, senders, per_body, jitter_ms)
    } else {
        bodies(hosts, start, end)
    };
    let body_bytes: usize = bodies.iter().map(|b| b.2.len()).sum();
    eprintln!(
        "{series} series, {samples} samples, {} bodies ({:.0} MiB)",
        bodies.len(),
        mib(body_bytes as u64)
    );
    let bodies = Arc::new(bodies);
    let dir = tempfile::tempdir()?;

    // Telltale.
    let tls = dir.path().join("tls");
    certs_init(&tls)?;
    let tt_data = dir.path().join("telltale");
    let tt = start_aggregator(&tls, &tt_data, "127.0.0.1:0", "127.0.0.1:0", &[])?;
    // VictoriaMetrics.
    let vm_port = free_port()?;
    let vm_data = dir.path().join("victoria");
    let vm = Command::new(VICTORIA)
        .arg(format!("-storageDataPath={}", vm_data.display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{vm_port}"))
        .arg("-retentionPeriod=1y")
        .arg("-loggerLevel=ERROR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .context("victoria-metrics (apt-get install victoria-metrics)")?;
    // Prometheus.
    let prom_port = free_port()?;
    let prom_data = dir.path().join("prometheus");
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n")?;
    let prom = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", prom_data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .arg("--storage.tsdb.retention.time=30d")
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(KillOnDrop)?;
    let mut peers = [
        Peer {
            name: "Telltale",
            addr: tt.http,
            pid: tt.proc.child.id(),
            data: tt_data,
            _child: None,
        },
        Peer {
            name: "VictoriaMetrics 1.79",
            addr: format!("127.0.0.1:{vm_port}").parse()?,
            pid: vm.0.id(),
            data: vm_data,
            _child: Some(vm),
        },
        Peer {
            name: "Prometheus 2.42",
            addr: format!("127.0.0.1:{prom_port}").parse()?,
            pid: prom.0.id(),
            data: prom_data,
            _child: Some(prom),
        },
    ];
    wait_ok(peers[1].addr, "/health")?;
    wait_ok(peers[2].addr, "/-/ready")?;
    std::thread::sleep(Duration::from_secs(2));
    let mut rows = Vec::new();
    let qpath = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=60",
        enc("rate(node_cpu_seconds_total[5m])"),
        (end - 6 * 3_600_000) / 1000,
        end / 1000
    );
    let only: String = arg(args, "--only", String::new());
    // The skipped peers stay in the list, so they are stopped at the end like the others.
    for p in peers
        .iter_mut()
        .filter(|p| only.is_empty() || p.name.to_lowercase().starts_with(&only))
    {
        let (cpu0, _, base_rss) = proc_usage(p.pid)?;
        eprintln!("{}: ingesting...", p.name);
        let secs = send_all(p.addr, &bodies, senders)?;
        let rate = samples as f64 / secs;
        // The server's own CPU (utime + stime) while the senders ran, per million samples.
        let cpu_per_m = (proc_usage(p.pid)?.0 - cpu0) / samples as f64 * 1e6;
        eprintln!(
            "{}: {rate:.0} samples/s, {cpu_per_m:.2} CPU s per 1M samples; compacting...",
            p.name
        );
        let bytes = match p.name {
            "Telltale" => {
                let (st, body) =
                    http_post(p.addr, "/api/v1/admin/tsdb/flush", "application/json", b"")?;
                anyhow::ensure!(st == 200, "flush: {st} {body}");
                let out = Command::new(bin("telltale-aggregator")?)
                    .args(["storage", "stats", "--data-dir"])
                    .arg(&p.data)
                    .output()?;
                eprintln!("{}", String::from_utf8_lossy(&out.stdout));
                du(&p.data)
            }
            n if n.starts_with("Victoria") => {
                http_get(p.addr, "/internal/force_flush")?;
                let month = |t: i64| {
                    let d = std::process::Command::new("date")
                        .args(["-u", "-d", &format!("@{}", t / 1000), "+%Y_%m"])
                        .output();
                    d.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                        .unwrap_or_default()
                };
                for m in [month(start), month(end)] {
                    let _ = http_get(
                        p.addr,
                        &format!("/internal/force_merge?partition_prefix={m}"),
                    );
                }
                settle(&p.data, Duration::from_secs(10), Duration::from_secs(120))
            }
            _ => settle(&p.data, Duration::from_secs(20), Duration::from_secs(240)),
        };
        let (_, hwm, rss) = proc_usage(p.pid)?;
        let (ms, n) = query_ms(p.addr, &qpath, 10)?;
        let per_m = rss.saturating_sub(base_rss) as f64 / series as f64 * 1e6;
        eprintln!(
            "{}: {bytes} bytes, RSS {:.1} MiB (+{:.1}), peak {:.1} MiB, query {ms:.1} ms ({n} series)",
            p.name,
            mib(rss),
            mib(rss.saturating_sub(base_rss)),
            mib(hwm)
        );
        rows.push(Row {
            name: p.name,
            rate,
            cpu_per_m,
            bps: bytes as f64 / samples as f64,
            per_m,
            hwm,
            ms,
            n,
        });
    }
    let cut = if real {
        format!(
            "one sample per series per request, {per_body} samples a request, scrape jitter up to {jitter_ms} ms"
        )
    } else {
        "30 samples per series per request (5-minute slices), 200 series a request".to_string()
    };
    println!(
        "\nStorage, {hosts} hosts × 82 series ({series} series), {hours} h at 10 s: {samples} samples, {cut}, remote_write from {senders} senders, one system at a time:\n"
    );
    println!(
        "| system | ingest samples/s | server CPU s per 1M samples | bytes/sample on disk | RSS MiB per 1M active series | peak RSS MiB | `rate(node_cpu_seconds_total[5m])`, 6 h at 60 s, ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.2} | {:.3} | {:.0} | {:.0} | {:.1} ({} series) |",
            r.name,
            r.rate,
            r.cpu_per_m,
            r.bps,
            r.per_m / (1024.0 * 1024.0),
            mib(r.hwm),
            r.ms,
            r.n
        );
    }
    let hold: u64 = arg(args, "--hold", 0);
    if hold > 0 {
        eprintln!(
            "holding {hold} s: {}",
            peers
                .iter()
                .map(|p| format!("{} http://{} pid {}", p.name, p.addr, p.pid))
                .collect::<Vec<_>>()
                .join(", ")
        );
        std::thread::sleep(Duration::from_secs(hold));
    }
    if rows.len() < 3 {
        return Ok(());
    }
    let (t, v, p) = (&rows[0], &rows[1], &rows[2]);
    println!(
        "\nTelltale ÷ VictoriaMetrics: ingest {:.2}×, CPU per sample {:.2}×, bytes/sample {:.2}×; Telltale ÷ Prometheus: RSS per series {:.2}×, ingest {:.2}×, CPU per sample {:.2}×, bytes/sample {:.2}×; query vs VM {:.2}×, vs Prometheus {:.2}×",
        t.rate / v.rate,
        t.cpu_per_m / v.cpu_per_m,
        t.bps / v.bps,
        t.per_m / p.per_m,
        t.rate / p.rate,
        t.cpu_per_m / p.cpu_per_m,
        t.bps / p.bps,
        t.ms / v.ms,
        t.ms / p.ms
    );
    Ok(())
}
