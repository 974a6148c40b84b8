//! `telltale-bench remediation [--trials 10]`: kill-to-restart time.
//!
//! A real service (a small HTTP server) on the agent's host, an HTTP health check every
//! second, an alert on it, and a runbook whose action restarts it. Each trial kills the
//! service with SIGKILL and measures until it answers again; then waits until the alert has
//! resolved (so the next trial fires it anew). Target: 5 s at 1 s intervals.

use std::time::{Duration, Instant};

use anyhow::Context;
use telltale_tests::peers::{Service, free_tcp_port};
use telltale_tests::*;

use crate::arg;

/// The benchmark.
pub fn bench_remediation(args: &[String]) -> anyhow::Result<()> {
    let trials: usize = arg(args, "--trials", 10);
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    certs_init(&tls)?;
    certs_issue(&tls, "bench-host")?;
    let port = free_tcp_port();
    let (svc, script) = Service::start(dir.path(), port)?;
    let pidfile = svc.pidfile.clone();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: web\n    interval: 1s\n    rules:\n      - alert: WebDown\n        expr: probe_success{check=\"web\"} == 0\n",
    )?;
    let runbooks = dir.path().join("runbooks.yml");
    std::fs::write(
        &runbooks,
        format!(
            "runbooks:\n  - name: restart-web\n    matchers: ['alertname=\"WebDown\"']\n    action: start-web\n    params: {{port: '{port}'}}\n    verify_window: 30s\n    max_runs_per_alert: 1000\n    max_runs_per_host: 1000\n"
        ),
    )?;
    let agg = start_aggregator(
        &tls,
        &dir.path().join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--rules",
            &rules.display().to_string(),
            "--runbooks",
            &runbooks.display().to_string(),
        ],
    )?;
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "[[check]]\nname = \"web\"\ntype = \"http\"\nurl = \"http://127.0.0.1:{port}/\"\ninterval = \"1s\"\n\n[[action]]\nname = \"start-web\"\nargv = [\"/usr/bin/python3\", \"{}\", \"{{port}}\", \"{}\"]\nmax_runs = 1000\n[[action.param]]\nname = \"port\"\npattern = \"[0-9]{{2,5}}\"\n",
            script.display(),
            pidfile.display()
        ),
    )?;
    let _agent = start_agent_with_config(
        &tls,
        "bench-host",
        agg.quic,
        &dir.path().join("agent"),
        "1s",
        Some(&agent_toml),
    )?;
    let healthy = || {
        query(agg.http, "probe_success{check=\"web\"}")
            .ok()
            .and_then(|r| r.first().cloned())
            .is_some_and(|s| s["value"][1] == "1")
    };
    wait_for(Duration::from_secs(30), || healthy().then_some(())).context("not healthy")?;
    let mut times = Vec::new();
    let mut rng = telltale_tests::compliance::Rng(11);
    for i in 0..trials {
        svc.kill();
        let t0 = Instant::now();
        while svc.alive() {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(10),
                "trial {i}: still answering after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Polled every 10 ms (wait_for's 200 ms would blur the figure).
        while !svc.alive() {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(60),
                "trial {i}: not restarted"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        times.push(t0.elapsed().as_secs_f64());
        // Let the alert resolve before the next crash.
        wait_for(Duration::from_secs(30), || {
            let a = query(agg.http, "ALERTS{alertname=\"WebDown\"}").ok()?;
            (a.is_empty() && healthy()).then_some(())
        })
        .with_context(|| {
            format!(
                "trial {i}: the alert did not resolve: ALERTS {:?}, healthy {}, remediations {}",
                query(agg.http, "ALERTS"),
                healthy(),
                std::fs::read_to_string(format!("{}.log", pidfile.display())).unwrap_or_default()
            )
        })?;
        // A random phase against the 1 s check, so every detection delay is sampled.
        std::thread::sleep(Duration::from_millis(500 + (rng.uniform() * 1000.0) as u64));
    }
    svc.kill();
    times.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    println!("\nkill → service answering again, {trials} trials (1 s check interval), seconds");
    println!("| p50 | p90 | max | target |");
    println!("|---|---|---|---|");
    println!(
        "| {:.2} | {:.2} | {:.2} | 5 |",
        p(0.5),
        p(0.9),
        times[times.len() - 1]
    );
    Ok(())
}
