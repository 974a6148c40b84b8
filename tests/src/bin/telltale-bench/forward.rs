//! `telltale-bench forward [--hosts 100] [--hours 2] [--senders 4] [--per-body 2000]
//! [--only telltale|forward|vmagent]`: remote_write forwarding, Telltale (storing, and
//! forward-only) next to vmagent (from the
//! victoria-metrics package), each in front of its own fresh VictoriaMetrics. The same
//! real-sender-shaped remote_write traffic as `telltale-bench tsdb` (node_exporter-like hosts
//! at 10 s, slices of 5 minutes, stale markers, resets) is pushed to the forwarder as fast as
//! it accepts; measured until the receiver has inserted every sample: end-to-end samples/s,
//! the forwarder's CPU (utime + stime) per million samples and its peak RSS.
//!
//! Not the same work for the storing aggregator: it also stores every sample (WAL with
//! fsync, head, blocks, compaction) and answers queries on it, then forwards from its WAL.
//! The forward-only one (`[storage] mode = "forward"`) does vmagent's job: it logs each
//! request to its WAL (fsync'ed before the answer) and forwards from there; vmagent forwards
//! from memory (its on-disk queue is used only while the receiver lags). All run with
//! default settings otherwise.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use telltale_tests::*;

use crate::tsdb::{KillOnDrop, VICTORIA, bodies_real, free_port, send_all, wait_ok};
use crate::{arg, mib, proc_usage};

const VMAGENT: &str = "/usr/bin/vmagent";

/// VictoriaMetrics' count of samples received over remote_write.
fn vm_inserted(addr: SocketAddr) -> u64 {
    let Ok((_, body)) = http_get(addr, "/metrics") else {
        return 0;
    };
    body.lines()
        .find_map(|l| l.strip_prefix("vm_rows_inserted_total{type=\"promremotewrite\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

struct Figures {
    name: &'static str,
    accept_s: f64,
    done_s: f64,
    cpu_s: f64,
    peak_rss: u64,
    /// The receiver's CPU over the same time.
    vm_cpu_s: f64,
}

pub fn bench_forward(args: &[String]) -> anyhow::Result<()> {
    for (p, pkg) in [
        (VICTORIA, "victoria-metrics"),
        (VMAGENT, "victoria-metrics"),
    ] {
        anyhow::ensure!(
            std::path::Path::new(p).exists(),
            "{p} is missing: apt-get install {pkg}"
        );
    }
    let hosts: usize = arg(args, "--hosts", 100);
    let hours: i64 = arg(args, "--hours", 2);
    let senders: usize = arg(args, "--senders", 4);
    let per_body: usize = arg(args, "--per-body", 2000);
    let only: String = arg(args, "--only", String::new());
    // Settings for Telltale's `[remote_write.queue]` (TOML lines, `;` between them), for
    // trying others than the defaults.
    let queue: String = arg(args, "--queue", String::new()).replace(';', "\n");
    let end = telltale_common::model::now_ms() / 10_000 * 10_000 - 60_000;
    let start = end - hours * 3_600_000;
    eprintln!("encoding {hosts} hosts × {hours} h...");
    let (bodies, series, samples) = bodies_real(hosts, start, end, senders, per_body, 25.0);
    eprintln!(
        "{series} series, {samples} samples in {} bodies of up to {per_body}",
        bodies.len()
    );
    let bodies = Arc::new(bodies);
    let mut rows = Vec::new();
    for name in ["Telltale", "Telltale forward-only", "vmagent"] {
        let key = if name == "Telltale forward-only" {
            "forward"
        } else {
            name
        };
        if !only.is_empty() && !key.to_lowercase().starts_with(&only) {
            continue;
        }
        let dir = tempfile::tempdir()?;
        let vm_port = free_port()?;
        let vm_addr: SocketAddr = format!("127.0.0.1:{vm_port}").parse()?;
        let vm = Command::new(VICTORIA)
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("vm").display()
            ))
            .arg(format!("-httpListenAddr={vm_addr}"))
            .args(["-retentionPeriod=1y", "-loggerLevel=ERROR"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(KillOnDrop)?;
        wait_ok(vm_addr, "/health")?;
        let url = format!("http://{vm_addr}/api/v1/write");
        // The forwarder: (its address, pid, what keeps it running).
        let (addr, pid, _keep): (SocketAddr, u32, Box<dyn std::any::Any>) = match name {
            "Telltale" | "Telltale forward-only" => {
                let tls = dir.path().join("tls");
                certs_init(&tls)?;
                let cfg = dir.path().join("agg.toml");
                let mode = if name == "Telltale" {
                    ""
                } else {
                    "[storage]\nmode = \"forward\"\n"
                };
                std::fs::write(
                    &cfg,
                    format!(
                        "{mode}[[remote_write]]\nurl = \"{url}\"\n[remote_write.queue]\n{queue}\n"
                    ),
                )?;
                let c = cfg.display().to_string();
                let agg = start_aggregator(
                    &tls,
                    &dir.path().join("agg"),
                    "127.0.0.1:0",
                    "127.0.0.1:0",
                    &["--config", &c],
                )?;
                (agg.http, agg.proc.child.id(), Box::new(agg))
            }
            _ => {
                let port = free_port()?;
                let a: SocketAddr = format!("127.0.0.1:{port}").parse()?;
                let child = Command::new(VMAGENT)
                    .arg(format!("-httpListenAddr={a}"))
                    .arg(format!("-remoteWrite.url={url}"))
                    .arg(format!(
                        "-remoteWrite.tmpDataPath={}",
                        dir.path().join("vmagent").display()
                    ))
                    .arg("-loggerLevel=ERROR")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map(KillOnDrop)
                    .context("vmagent")?;
                wait_ok(a, "/health")?;
                (a, child.0.id(), Box::new(child))
            }
        };
        std::thread::sleep(Duration::from_secs(2));
        let (cpu0, _, _) = proc_usage(pid)?;
        let (vm0, _, _) = proc_usage(vm.0.id())?;
        let t0 = Instant::now();
        eprintln!("{name}: pushing...");
        let accept_s = send_all(addr, &bodies, senders)?;
        let mut done = None;
        while t0.elapsed() < Duration::from_secs(900) {
            if vm_inserted(vm_addr) >= samples as u64 {
                done = Some(t0.elapsed().as_secs_f64());
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (cpu1, peak, _) = proc_usage(pid)?;
        let (vm1, _, _) = proc_usage(vm.0.id())?;
        let done_s = done.with_context(|| {
            format!(
                "{name}: the receiver had {} of {samples} samples after 15 minutes",
                vm_inserted(vm_addr)
            )
        })?;
        eprintln!(
            "{name}: accepted in {accept_s:.1} s, all at the receiver after {done_s:.1} s, {:.2} CPU s",
            cpu1 - cpu0
        );
        rows.push(Figures {
            name,
            accept_s,
            done_s,
            cpu_s: cpu1 - cpu0,
            peak_rss: peak,
            vm_cpu_s: vm1 - vm0,
        });
    }
    println!(
        "remote_write forwarding: {samples} samples ({series} series, {hosts} hosts × {hours} h at 10 s, bodies of {per_body}, {senders} senders), each forwarder in front of a fresh VictoriaMetrics"
    );
    println!(
        "| forwarder | samples/s end to end | accepted in | CPU s per 1M samples | peak RSS | receiver's CPU s per 1M |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.1} s | {:.2} | {:.0} MiB | {:.2} |",
            r.name,
            samples as f64 / r.done_s,
            r.accept_s,
            r.cpu_s / samples as f64 * 1e6,
            mib(r.peak_rss),
            r.vm_cpu_s / samples as f64 * 1e6
        );
    }
    if let Some(v) = rows.iter().find(|r| r.name == "vmagent") {
        for t in rows.iter().filter(|r| r.name != "vmagent") {
            println!(
                "{} ÷ vmagent: throughput {:.2}×, CPU per sample {:.2}×",
                t.name,
                v.done_s / t.done_s,
                t.cpu_s / v.cpu_s
            );
        }
    }
    Ok(())
}
