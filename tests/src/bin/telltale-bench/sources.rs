//! Benchmarks of the agent's sources:
//!
//! - `statsd`: StatsD packets per second a real `telltale-agent` sustains with all its threads
//!   pinned to one core (`taskset`), the sender pinned to the other, at rising offered rates;
//!   what the agent counted as received (its own `telltale_agent_statsd_packets_total`, read
//!   back through the aggregator), its CPU share of that core and its peak RSS.
//! - `sources`: agent CPU and peak RSS with 50 scrape targets (each serving a real
//!   node_exporter exposition captured at start) and 20 health checks, next to an agent with
//!   host metrics only, both running at once.
//! - `hostile`: the agent's peak RSS under each hostile source, with its limits and without.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use telltale_tests::*;

use crate::{arg, mib, proc_usage};

fn pin(pid: u32, cpu: &str) -> anyhow::Result<()> {
    let st = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(st.success(), "taskset failed");
    Ok(())
}

fn counter(http: std::net::SocketAddr, q: &str) -> Option<f64> {
    query(http, q)
        .ok()?
        .first()?
        .get("value")?
        .get(1)?
        .as_str()?
        .parse()
        .ok()
}

/// Lines an application sends: counters with tags, timers, gauges, a set, across 200 keys.
fn lines() -> Vec<Vec<u8>> {
    (0..200)
        .map(|i| {
            match i % 4 {
                0 => format!("shop.orders:1|c|#plan:p{},region:eu", i % 7),
                1 => format!("api.latency:{}|ms|@0.5|#route:/r{}", 10 + i, i % 11),
                2 => format!("queue.depth:{}|g|#queue:q{}", i, i % 5),
                _ => format!("users.active:u{i}|s"),
            }
            .into_bytes()
        })
        .collect()
}

pub fn bench_statsd(args: &[String]) -> anyhow::Result<()> {
    let step = humantime::parse_duration(&arg(args, "--step", "5s".to_string()))?;
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    certs_init(&tls)?;
    certs_issue(&tls, "statsd-bench")?;
    let agg = start_fresh_aggregator(&tls, dir.path())?;
    let port = free_udp_port();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!("[statsd]\nlisten = \"127.0.0.1:{port}\"\nflush_interval = \"10s\"\n"),
    )?;
    let agent = start_agent_with_config(
        &tls,
        "statsd-bench",
        agg.quic,
        &dir.path().join("agent"),
        "1s",
        Some(&cfg),
    )?;
    let pid = agent.child.id();
    std::thread::sleep(Duration::from_secs(2));
    pin(pid, "0")?;
    pin(std::process::id(), "1")?;
    let q = "telltale_agent_statsd_packets_total{instance=\"statsd-bench\"}";
    let received = || -> anyhow::Result<f64> {
        // The agent reports every second: wait for a report newer than the last packet sent.
        std::thread::sleep(Duration::from_millis(2500));
        counter(agg.http, q).context("the agent reported no statsd counter")
    };
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(("127.0.0.1", port))?;
    let payloads = lines();
    let mut rows = Vec::new();
    let mut before = received()?;
    for rate in [100_000u64, 200_000, 300_000, 0] {
        let (cpu0, _, _) = proc_usage(pid)?;
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < step {
            for _ in 0..500 {
                let _ = sock.send(&payloads[(sent % payloads.len() as u64) as usize]);
                sent += 1;
            }
            if rate > 0 {
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let (cpu1, hwm, _) = proc_usage(pid)?;
        let after = received()?;
        let got = after - before;
        before = after;
        rows.push(format!(
            "| {} | {:.0} | {:.0} | {:.2}% | {:.0}% | {:.1} |",
            if rate == 0 {
                "as fast as one sender can".to_string()
            } else {
                rate.to_string()
            },
            sent as f64 / secs,
            got / secs,
            100.0 * (1.0 - got / sent as f64).max(0.0),
            100.0 * (cpu1 - cpu0) / secs,
            mib(hwm),
        ));
    }
    println!(
        "\nStatsD ingest, agent pinned to one core, {} per step, one line per packet:\n",
        humantime::format_duration(step)
    );
    println!(
        "| offered packets/s | sent packets/s | received packets/s | loss | agent CPU (of its core) | agent peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

/// Serves `body` as a Prometheus exposition on a free port, one thread per listener.
fn exporter(body: Arc<String>, stop: Arc<AtomicBool>) -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let port = l.local_addr()?.port();
    l.set_nonblocking(true)?;
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let mut buf = [0u8; 2048];
                    let _ = s.read(&mut buf);
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                        body.len(),
                        body
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Ok(port)
}

pub fn bench_sources(args: &[String]) -> anyhow::Result<()> {
    let duration = humantime::parse_duration(&arg(args, "--duration", "2m".to_string()))?;
    let interval = arg(args, "--interval", "10s".to_string());
    let ne = "/usr/bin/prometheus-node-exporter";
    anyhow::ensure!(Path::new(ne).exists(), "{ne} is missing");
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    certs_init(&tls)?;
    let agg = start_fresh_aggregator(&tls, dir.path())?;
    // One real node_exporter exposition, served by 50 targets.
    let ne_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut ne_proc = Command::new(ne)
        .arg(format!("--web.listen-address=127.0.0.1:{ne_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let addr = format!("127.0.0.1:{ne_port}").parse()?;
    let body = wait_for(Duration::from_secs(10), || {
        http_get(addr, "/metrics").ok().map(|(_, b)| b)
    })
    .context("node_exporter did not answer")?;
    let _ = ne_proc.kill();
    let _ = ne_proc.wait();
    let series = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    let stop = Arc::new(AtomicBool::new(false));
    let body = Arc::new(body);
    let mut cfg = String::from(
        "[statsd]\nenabled = false\n[limits]\nmax_series = 500000\nmax_series_per_source = 50000\n",
    );
    for i in 0..50 {
        let p = exporter(body.clone(), stop.clone())?;
        cfg.push_str(&format!(
            "[[scrape]]\njob = \"app{i}\"\ntargets = [\"127.0.0.1:{p}\"]\n"
        ));
    }
    let health = exporter(Arc::new("ok\n".into()), stop.clone())?;
    let tcp = TcpListener::bind("127.0.0.1:0")?;
    let tcp_addr = tcp.local_addr()?;
    std::thread::spawn(move || for _ in tcp.incoming() {});
    for i in 0..20 {
        let check = match i % 10 {
            0..=4 => format!(
                "type = \"http\"\nurl = \"http://127.0.0.1:{health}/health\"\nbody_pattern = \"ok\""
            ),
            5..=7 => format!("type = \"tcp\"\naddress = \"{tcp_addr}\""),
            8 => "type = \"dns\"\nhost = \"localhost\"".to_string(),
            _ => "type = \"exec\"\ncommand = [\"/bin/true\"]".to_string(),
        };
        cfg.push_str(&format!("[[check]]\nname = \"c{i}\"\n{check}\n"));
    }
    let cfg_path = dir.path().join("sources.toml");
    std::fs::write(&cfg_path, &cfg)?;
    let plain_path = dir.path().join("plain.toml");
    std::fs::write(&plain_path, "[statsd]\nenabled = false\n")?;
    let mut agents = Vec::new();
    for (name, c) in [("host-only", &plain_path), ("sources", &cfg_path)] {
        certs_issue(&tls, name)?;
        let a = start_agent_with_config(
            &tls,
            name,
            agg.quic,
            &dir.path().join(name),
            &interval,
            Some(c),
        )?;
        agents.push((name, a));
    }
    std::thread::sleep(Duration::from_secs(12));
    let start: Vec<_> = agents
        .iter()
        .map(|(_, a)| proc_usage(a.child.id()))
        .collect::<anyhow::Result<_>>()?;
    eprintln!("measuring for {}...", humantime::format_duration(duration));
    std::thread::sleep(duration);
    println!(
        "\nAgent with 50 scrape targets ({series} series each, a real node_exporter exposition) and 20 checks (10 HTTP, 6 TCP, 2 DNS, 2 exec), {interval} interval, over {}:\n",
        humantime::format_duration(duration)
    );
    println!("| agent | CPU s | CPU % of one core | peak RSS MiB | series shipped per interval |");
    println!("|---|---|---|---|---|");
    for ((name, a), s0) in agents.iter().zip(start) {
        let s1 = proc_usage(a.child.id())?;
        let n = counter(agg.http, &format!("count({{instance=\"{name}\"}})")).unwrap_or(0.0);
        println!(
            "| {name} | {:.2} | {:.2}% | {:.1} | {n:.0} |",
            s1.0 - s0.0,
            100.0 * (s1.0 - s0.0) / duration.as_secs_f64(),
            mib(s1.1),
        );
    }
    stop.store(true, Ordering::Relaxed);
    Ok(())
}

/// `hostile`: the agent's peak RSS (VmHWM) with one hostile source each — a scrape target
/// answering 2 M series, one answering a sample with 100 k labels, one answering a 50 MB
/// label value, and a textfile of 300 k series — next to an agent with host metrics only,
/// and to the same sources with every limit off (`0`), as agents had before the limits.
pub fn bench_hostile(args: &[String]) -> anyhow::Result<()> {
    let duration = humantime::parse_duration(&arg(args, "--duration", "30s".to_string()))?;
    let interval = arg(args, "--interval", "5s".to_string());
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    certs_init(&tls)?;
    let agg = start_fresh_aggregator(&tls, dir.path())?;
    let stop = Arc::new(AtomicBool::new(false));
    let many: String = (0..2_000_000)
        .map(|i| format!("hostile_metric{{id=\"{i}\"}} {i}\n"))
        .collect();
    let wide = format!(
        "wide{{{}}} 1\n",
        (0..100_000)
            .map(|i| format!("l{i}=\"v\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let long = format!("long{{a=\"{}\"}} 1\n", "v".repeat(50 << 20));
    let textdir = dir.path().join("textfile");
    std::fs::create_dir_all(&textdir)?;
    let text: String = (0..300_000)
        .map(|i| format!("text_metric{{id=\"{i}\"}} {i}\n"))
        .collect();
    std::fs::write(textdir.join("big.prom"), text)?;
    let mut sources: Vec<(&str, String)> = Vec::new();
    for (name, body) in [
        ("2M-series", many),
        ("100k-labels", wide),
        ("50MB-value", long),
    ] {
        let p = exporter(Arc::new(body), stop.clone())?;
        sources.push((
            name,
            format!("[[scrape]]\njob = \"h\"\ntargets = [\"127.0.0.1:{p}\"]\ntimeout = \"4s\"\n"),
        ));
    }
    sources.push((
        "300k-textfile",
        format!("[textfile]\ndirectory = \"{}\"\n", textdir.display()),
    ));
    let off = "body_size_limit = 0\nsample_limit = 0\nlabel_limit = 0\nlabel_name_length_limit = 0\nlabel_value_length_limit = 0\n";
    let mut agents = Vec::new();
    let mut add = |name: String, cfg: String| -> anyhow::Result<()> {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("[statsd]\nenabled = false\n{cfg}"))?;
        certs_issue(&tls, &name)?;
        let a = start_agent_with_config(
            &tls,
            &name,
            agg.quic,
            &dir.path().join(&name),
            &interval,
            Some(&path),
        )?;
        agents.push((name, a));
        Ok(())
    };
    add("host-only".into(), String::new())?;
    for (name, cfg) in &sources {
        add(name.to_string(), cfg.clone())?;
        add(format!("{name}-nolimits"), format!("{cfg}{off}"))?;
    }
    eprintln!("running for {}...", humantime::format_duration(duration));
    std::thread::sleep(duration);
    println!(
        "\nAgent peak RSS with one hostile source each, {interval} interval, over {}:\n",
        humantime::format_duration(duration)
    );
    println!("| source | limits | peak RSS MiB | the agent says |");
    println!("|---|---|---|---|");
    for (name, a) in &agents {
        let (_, hwm, _) = proc_usage(a.child.id()).unwrap_or((0.0, 0, 0));
        let log = a.log();
        let said = [
            "sample_limit",
            "label_limit",
            "label_value_length_limit",
            "body larger",
            "body_size_limit",
        ]
        .iter()
        .find(|k| log.contains(*k))
        .map(|k| format!("refused: {k}"))
        .unwrap_or_else(|| "-".into());
        let (source, limits) = match name.strip_suffix("-nolimits") {
            Some(s) => (s.to_string(), "off"),
            None => (name.clone(), "default"),
        };
        println!("| {source} | {limits} | {:.1} | {said} |", mib(hwm));
    }
    stop.store(true, Ordering::Relaxed);
    Ok(())
}
