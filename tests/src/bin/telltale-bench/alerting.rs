//! `telltale-bench alerting [--trials 40]`: breach-to-webhook latency.
//!
//! Same rule (`bench_breach > 0`, `for: 0s`), same breaching sample pushed by remote_write,
//! one webhook receiver. Peers: Prometheus 2.42 at its tightest (1 s evaluation, remote-write
//! receiver) sending to Alertmanager 0.25 (group_wait 0s, group_interval 1s); Telltale with
//! the rule evaluated as the sample arrives. Each trial uses a new label value (a new alert
//! and group), pushed at a random phase; latency = webhook receipt − the moment the push
//! started. A third series measures the agent path: a real agent collecting a textfile every
//! 1 s; latency = webhook receipt − the stored sample's collection timestamp.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use telltale_common::model::{Labels, Sample, SeriesSamples, now_ms};
use telltale_tests::compliance::Rng;
use telltale_tests::peers::{ALERTMANAGER, Alertmanager, WebhookSink, free_tcp_port};
use telltale_tests::*;

use crate::arg;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const RULE: &str = "groups:\n  - name: bench\n    interval: 1s\n    rules:\n      - alert: Breach\n        expr: bench_breach > 0\n        labels: {severity: critical}\n";

fn push(addr: std::net::SocketAddr, trial: usize, v: f64) -> anyhow::Result<()> {
    let s = [SeriesSamples {
        labels: Labels::from_pairs([
            ("__name__", "bench_breach".to_string()),
            ("trial", trial.to_string()),
        ]),
        samples: vec![Sample(now_ms(), v)],
    }];
    let body = telltale_aggregator::api::remote_write::encode(&s);
    let (st, b) = http_post(addr, "/api/v1/write", "application/x-protobuf", &body)?;
    anyhow::ensure!(st == 204, "remote_write to {addr}: {st} {b}");
    Ok(())
}

/// Waits for the firing notification of `trial` at `path`; returns its receipt time.
fn receipt(sink: &WebhookSink, path: &str, alertname: &str, trial: usize) -> anyhow::Result<i64> {
    wait_for(Duration::from_secs(30), || {
        sink.accepted(path).into_iter().find_map(|r| {
            let hit = r.body["status"] == "firing"
                && r.body["alerts"].as_array()?.iter().any(|a| {
                    a["labels"]["trial"].as_str() == Some(&trial.to_string())
                        && a["labels"]["alertname"] == alertname
                        && a["status"] == "firing"
                });
            hit.then_some(r.at_ms)
        })
    })
    .with_context(|| format!("no notification for trial {trial} at {path}"))
}

fn pcts(v: &mut [f64]) -> (f64, f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (p(0.5), p(0.9), p(0.99), v[v.len() - 1])
}

/// The benchmark.
pub fn bench_alerting(args: &[String]) -> anyhow::Result<()> {
    let trials: usize = arg(args, "--trials", 40);
    let dir = tempfile::tempdir()?;
    let sink = WebhookSink::start()?;
    let mut rng = Rng(7);

    // Prometheus + Alertmanager.
    let am = Alertmanager::start(
        Path::new(ALERTMANAGER),
        &format!(
            "route: {{receiver: hook, group_by: [trial], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}\nreceivers: [{{name: hook, webhook_configs: [{{url: '{}', send_resolved: false}}]}}]\n",
            sink.url("/prometheus")
        ),
    )?;
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, RULE)?;
    let prom_port = free_tcp_port();
    let prom_addr: std::net::SocketAddr = format!("127.0.0.1:{prom_port}").parse()?;
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global: {{evaluation_interval: 1s, scrape_interval: 1h}}\nrule_files: [{:?}]\nalerting:\n  alertmanagers: [{{static_configs: [{{targets: ['{}']}}]}}]\n",
            rules.display(),
            am.addr
        ),
    )?;
    let mut cmd = Command::new(PROMETHEUS);
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("prom").display()
        ))
        .arg(format!("--web.listen-address={prom_addr}"))
        .arg("--web.enable-remote-write-receiver");
    // Stopped when dropped, whatever ends the run.
    let (mut prom, _out) =
        Proc::spawn(cmd, "prometheus").context("prometheus (apt-get install prometheus)")?;
    wait_for(Duration::from_secs(30), || {
        http_get(prom_addr, "/-/ready")
            .ok()
            .filter(|(s, _)| *s == 200)
    })
    .context("prometheus not ready")?;

    // Telltale, with a real agent for the collection-timestamp figure.
    let tls = dir.path().join("tls");
    certs_init(&tls)?;
    certs_issue(&tls, "bench-host")?;
    let routes = dir.path().join("routes.yml");
    std::fs::write(
        &routes,
        format!(
            "route: {{receiver: hook, group_by: [trial], group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}\nreceivers: [{{name: hook, webhook_configs: [{{url: '{}', send_resolved: false}}]}}]\n",
            sink.url("/telltale")
        ),
    )?;
    std::fs::write(
        dir.path().join("agent-rules.yml"),
        "groups:\n  - name: agent\n    interval: 1s\n    rules:\n      - alert: AgentBreach\n        expr: bench_agent_breach > 0\n",
    )?;
    let tt = start_aggregator(
        &tls,
        &dir.path().join("tt"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--rules",
            &rules.display().to_string(),
            "--rules",
            &dir.path().join("agent-rules.yml").display().to_string(),
            "--routes",
            &routes.display().to_string(),
        ],
    )?;
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir_all(&textfiles)?;
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!("[textfile]\ndirectory = {textfiles:?}\n"),
    )?;
    let _agent = start_agent_with_config(
        &tls,
        "bench-host",
        tt.quic,
        &dir.path().join("agent"),
        "1s",
        Some(&agent_toml),
    )?;
    std::thread::sleep(Duration::from_secs(3));

    let mut results: Vec<(&str, Vec<f64>)> = Vec::new();
    for (name, addr, path) in [
        ("Telltale (remote_write)", tt.http, "/telltale"),
        (
            "Prometheus 2.42 + Alertmanager 0.25 (remote_write)",
            prom_addr,
            "/prometheus",
        ),
    ] {
        let mut lat = Vec::new();
        for trial in 0..trials {
            std::thread::sleep(Duration::from_millis(200 + (rng.uniform() * 1000.0) as u64));
            let t0 = now_ms();
            push(addr, trial, 1.0)?;
            let got = receipt(&sink, path, "Breach", trial)?;
            lat.push((got - t0) as f64);
            push(addr, trial, 0.0)?;
        }
        eprintln!("{name}: done");
        results.push((name, lat));
    }
    // Agent path: the sample's collection timestamp to receipt.
    let mut lat = Vec::new();
    for trial in 0..trials {
        std::thread::sleep(Duration::from_millis(300 + (rng.uniform() * 1000.0) as u64));
        let tmp = textfiles.join("bench.prom.tmp");
        std::fs::write(&tmp, format!("bench_agent_breach{{trial=\"{trial}\"}} 1\n"))?;
        std::fs::rename(&tmp, textfiles.join("bench.prom"))?;
        let got = receipt(&sink, "/telltale", "AgentBreach", trial)?;
        let q = format!("bench_agent_breach{{trial=\"{trial}\"}}[2m]");
        let r = query(tt.http, &q)?;
        let collected = r
            .first()
            .and_then(|s| {
                s["values"].as_array()?.iter().find_map(|p| {
                    let t = p[0].as_f64()?;
                    (p[1].as_str()? == "1").then_some((t * 1000.0) as i64)
                })
            })
            .with_context(|| format!("no stored sample for trial {trial}: {r:?}"))?;
        lat.push((got - collected) as f64);
        std::fs::write(&tmp, "bench_agent_breach 0\n")?;
        std::fs::rename(&tmp, textfiles.join("bench.prom"))?;
    }
    results.push(("Telltale (agent at 1s, from collection timestamp)", lat));
    prom.kill();

    println!("\nbreach → webhook latency, {trials} trials each (ms)");
    println!("| | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    let mut p99s = Vec::new();
    for (name, mut v) in results {
        let (a, b, c, d) = pcts(&mut v);
        p99s.push(c);
        println!("| {name} | {a:.0} | {b:.0} | {c:.0} | {d:.0} |");
    }
    println!(
        "\nTelltale p99 / Prometheus+Alertmanager p99 (remote_write): {:.3}",
        p99s[0] / p99s[1]
    );
    Ok(())
}
