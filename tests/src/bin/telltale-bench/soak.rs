//! `telltale-bench soak [--duration 1h] [--agents 50] [--every 1m] [--out DIR] [--config F]
//! [--wrap PROGRAM]`: the
//! aggregator under realistic load for a long time — `agents` real agents collecting every
//! second plus a remote_write client (5 series × 100 samples every 100 ms) — with its resident
//! memory, open descriptors and data directory size sampled every `every`. Reported: growth of
//! RSS and descriptors from the sample at minute 10 (a sixth of the run when shorter) to the
//! end, and between the means of the first and the last fifth of that stretch (the goal,
//! ≤ 5 %: a single pair of samples compares phases of maintenance's saw-tooth), the data
//! directory's growth per minute in the first and second half after that sample (equal when
//! the disk grows as retention predicts: linearly, nothing deleted within an hour of the
//! default 15 days), and `soak.csv` + `soak.svg` (three panels over time) in `--out` (default
//! `target/soak`). `--wrap heaptrack` runs the aggregator under a heap profiler.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use telltale_tests::chaos::{RwWriter, Scratch, rss_and_fds};
use telltale_tests::*;

use crate::arg;

/// One sample: minutes since start, aggregator RSS bytes, descriptors, data dir bytes,
/// agent samples stored.
type Row = (f64, u64, u64, u64, f64);

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub fn bench_soak(args: &[String]) -> anyhow::Result<()> {
    let duration = humantime::parse_duration(&arg(args, "--duration", "1h".to_string()))?;
    let every = humantime::parse_duration(&arg(args, "--every", "1m".to_string()))?;
    let agents: usize = arg(args, "--agents", 50);
    let out = std::path::PathBuf::from(arg(args, "--out", "target/soak".to_string()));
    std::fs::create_dir_all(&out)?;
    let names: Vec<String> = (0..agents).map(|i| format!("soak-{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let s = Scratch::new(&refs)?;
    let data = s.path("agg");
    // `--config FILE`: an aggregator.toml for the run (to try settings against the growth).
    let config: String = arg(args, "--config", String::new());
    let extra: Vec<&str> = if config.is_empty() {
        Vec::new()
    } else {
        vec!["--config", config.as_str()]
    };
    // `--wrap PROGRAM`: run the aggregator under a wrapper such as `heaptrack` to see where
    // memory goes (RSS and descriptors are then read from the aggregator's own `process_*` metrics).
    let wrap: String = arg(args, "--wrap", String::new());
    let agg = if wrap.is_empty() {
        start_aggregator(&s.tls, &data, "127.0.0.1:0", "127.0.0.1:0", &extra)?
    } else {
        let serve = aggregator_command(&s.tls, &data, "127.0.0.1:0", "127.0.0.1:0", &extra)?;
        let mut cmd = std::process::Command::new(&wrap);
        cmd.arg(serve.get_program()).args(serve.get_args());
        start_aggregator_command(cmd)?
    };
    let mut procs = Vec::new();
    for n in &names {
        procs.push(start_agent(&s.tls, n, agg.quic, &s.path(n), "1s")?);
    }
    let writer = RwWriter::paced(agg.http, Duration::from_millis(100), None);
    eprintln!(
        "{agents} agents at 1 s + remote_write for {}; a sample every {}",
        humantime::format_duration(duration),
        humantime::format_duration(every)
    );
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    while started.elapsed() < duration {
        std::thread::sleep(every.min(duration.saturating_sub(started.elapsed())));
        let (mut rss, mut fds) = rss_and_fds(&agg.proc);
        if !wrap.is_empty() {
            rss = metric(agg.http, "process_resident_memory_bytes").unwrap_or(0.0) as u64;
            fds = metric(agg.http, "process_open_fds").unwrap_or(0.0) as u64;
        }
        let stored = metric(agg.http, "telltale_aggregator_samples_ingested_total").unwrap_or(0.0);
        let row = (
            started.elapsed().as_secs_f64() / 60.0,
            rss,
            fds,
            dir_bytes(&data),
            stored,
        );
        eprintln!(
            "{:6.1} min  RSS {:7.1} MiB  fds {:4}  disk {:8.1} MiB  samples {:.0}",
            row.0,
            row.1 as f64 / 1048576.0,
            row.2,
            row.3 as f64 / 1048576.0,
            row.4
        );
        // Where memory goes: the caches' sizes and the block count, from /metrics.
        if let Ok((_, m)) = http_get(agg.http, "/metrics") {
            let pick = |name: &str| -> String {
                m.lines()
                    .filter(|l| l.starts_with(name))
                    .map(|l| l.trim_start_matches("telltale_aggregator_").to_string())
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            eprintln!(
                "         {}  {}  {}",
                pick("telltale_aggregator_series_key_cache_entries"),
                pick("telltale_aggregator_chunk_cache_bytes"),
                pick("telltale_aggregator_storage_blocks")
            );
        }
        rows.push(row);
    }
    let acked = writer.stop();
    if !wrap.is_empty() {
        // Killing the wrapper would orphan the aggregator: it is stopped (SIGTERM, so the
        // wrapper writes its profile) through its parent's pid.
        stop_children(agg.proc.child.id());
    }
    let alive = procs
        .iter_mut()
        .map(|p| matches!(p.child.try_wait(), Ok(None)))
        .filter(|&running| running)
        .count();
    let base = rows
        .iter()
        .position(|r| r.0 >= 10.0f64.min(duration.as_secs_f64() / 60.0 / 6.0))
        .context("no samples")?;
    let (b, last) = (rows[base], rows[rows.len() - 1]);
    let growth = |a: u64, z: u64| (z as f64 - a as f64) / (a.max(1) as f64) * 100.0;
    let mid = rows[(base + rows.len() - 1) / 2];
    // Disk growth per minute over the first and the second half after the baseline.
    let rate = |a: &Row, z: &Row| (z.3 as f64 - a.3 as f64) / 1048576.0 / (z.0 - a.0).max(1e-9);
    let mut csv = String::from("minute,rss_bytes,fds,disk_bytes,samples_stored\n");
    for r in &rows {
        csv.push_str(&format!("{:.2},{},{},{},{:.0}\n", r.0, r.1, r.2, r.3, r.4));
    }
    std::fs::write(out.join("soak.csv"), csv)?;
    std::fs::write(out.join("soak.svg"), svg(&rows, base))?;
    println!(
        "soak: {agents} agents at 1 s + remote_write ({} samples acknowledged), {}, sampled every {}",
        acked.total(),
        humantime::format_duration(duration),
        humantime::format_duration(every)
    );
    println!(
        "aggregator RSS {:.1} → {:.1} MiB from minute {:.0} ({:+.1} %), descriptors {} → {} ({:+.1} %)",
        b.1 as f64 / 1048576.0,
        last.1 as f64 / 1048576.0,
        b.0,
        growth(b.1, last.1),
        b.2,
        last.2,
        growth(b.2, last.2)
    );
    // Resident memory follows maintenance in a saw-tooth (head cuts and merges every few
    // minutes, ±15 %), so two single samples compare phases as much as trends: the goal is
    // judged on the means of the first and the last `span` minutes after the baseline.
    let span = (last.0 - b.0) / 5.0;
    let mean = |from: f64, to: f64, f: fn(&Row) -> f64| {
        let v: Vec<f64> = rows[base..]
            .iter()
            .filter(|r| r.0 >= from && r.0 <= to)
            .map(f)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let pct = |a: f64, z: f64| (z - a) / a.max(1e-9) * 100.0;
    let (rss_a, rss_z) = (
        mean(b.0, b.0 + span, |r| r.1 as f64 / 1048576.0),
        mean(last.0 - span, last.0, |r| r.1 as f64 / 1048576.0),
    );
    let (fd_a, fd_z) = (
        mean(b.0, b.0 + span, |r| r.2 as f64),
        mean(last.0 - span, last.0, |r| r.2 as f64),
    );
    println!(
        "means of minutes {:.0}–{:.0} and {:.0}–{:.0}: RSS {rss_a:.1} → {rss_z:.1} MiB ({:+.1} %), descriptors {fd_a:.1} → {fd_z:.1} ({:+.1} %); goal ≤ 5 %",
        b.0,
        b.0 + span,
        last.0 - span,
        last.0,
        pct(rss_a, rss_z),
        pct(fd_a, fd_z)
    );
    println!(
        "disk {:.1} MiB ({:.0} agent samples stored): growing {:.2} MiB/min in the first half after minute {:.0}, {:.2} MiB/min in the second (equal: linear, as a retention longer than the run predicts)",
        last.3 as f64 / 1048576.0,
        last.4,
        rate(&b, &mid),
        b.0,
        rate(&mid, &last)
    );
    // The data directory has its own saw-tooth (WAL segments truncated at head cuts, level-0
    // blocks merged): the same rates between the means of the first, middle and last fifth.
    let disk = |from: f64, to: f64| mean(from, to, |r| r.3 as f64 / 1048576.0);
    let middle = (b.0 + last.0) / 2.0;
    let (d_a, d_m, d_z) = (
        disk(b.0, b.0 + span),
        disk(middle - span / 2.0, middle + span / 2.0),
        disk(last.0 - span, last.0),
    );
    println!(
        "disk, means of fifths: {d_a:.1} → {d_m:.1} → {d_z:.1} MiB, growing {:.2} then {:.2} MiB/min",
        (d_m - d_a) / (middle - b.0 - span / 2.0).max(1e-9),
        (d_z - d_m) / (last.0 - middle - span / 2.0).max(1e-9)
    );
    println!(
        "agents still running: {alive} of {agents}; plot and data: {}",
        out.display()
    );
    Ok(())
}

/// Sends SIGTERM to every process whose parent is `parent` and waits up to 30 s for them.
fn stop_children(parent: u32) {
    let children: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().into_string().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let rest = stat.get(stat.rfind(')')? + 2..)?;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect();
    for pid in &children {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", pid])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && children
            .iter()
            .any(|pid| Path::new("/proc").join(pid).exists())
    {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A panel's title and what it draws of a row.
type Panel = (&'static str, fn(&Row) -> f64);

/// Three panels (RSS MiB, descriptors, disk MiB) over minutes, the baseline sample marked.
fn svg(rows: &[Row], base: usize) -> String {
    let (w, h, pad) = (720.0, 170.0, 40.0);
    let t_max = rows.last().map_or(1.0, |r| r.0).max(1e-9);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{}" font-family="sans-serif" font-size="11">"#,
        3.0 * h + 20.0
    );
    let panels: [Panel; 3] = [
        ("aggregator RSS (MiB)", |r| r.1 as f64 / 1048576.0),
        ("open descriptors", |r| r.2 as f64),
        ("data directory (MiB)", |r| r.3 as f64 / 1048576.0),
    ];
    for (i, (title, f)) in panels.iter().enumerate() {
        let y0 = i as f64 * h + 10.0;
        let vals: Vec<f64> = rows.iter().map(f).collect();
        let hi = vals.iter().cloned().fold(0.0f64, f64::max).max(1e-9) * 1.1;
        let x = |t: f64| pad + (w - 2.0 * pad) * t / t_max;
        let y = |v: f64| y0 + h - 30.0 - (h - 50.0) * v / hi;
        let pts: Vec<String> = rows
            .iter()
            .zip(&vals)
            .map(|(r, v)| format!("{:.1},{:.1}", x(r.0), y(*v)))
            .collect();
        out.push_str(&format!(
            r##"<text x="{pad}" y="{:.0}">{title}: {:.1} → {:.1}</text><line x1="{pad}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999"/><text x="{:.0}" y="{:.1}">{:.0} min</text><text x="2" y="{:.1}">{:.0}</text><polyline fill="none" stroke="#2e86c1" stroke-width="1.5" points="{}"/>"##,
            y0 + 12.0,
            vals.get(base).copied().unwrap_or(0.0),
            vals.last().copied().unwrap_or(0.0),
            y(0.0),
            w - pad,
            y(0.0),
            w - pad - 20.0,
            y(0.0) + 14.0,
            t_max,
            y(hi / 1.1),
            hi / 1.1,
            pts.join(" ")
        ));
        if let Some(r) = rows.get(base) {
            out.push_str(&format!(
                r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#c0392b" stroke-dasharray="3,3"/>"##,
                x(r.0),
                y0 + 16.0,
                x(r.0),
                y(0.0)
            ));
        }
    }
    out.push_str("</svg>\n");
    out
}
