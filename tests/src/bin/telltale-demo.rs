//! The one-command demo: builds the binaries, makes certificates in a scratch directory,
//! starts a real aggregator and a real agent on this host over QUIC with mutual TLS, waits for
//! the first samples and prints the URL and example queries. Runs until Ctrl-C
//! (or for `--for DURATION`).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use telltale_tests::*;

struct Args {
    run_for: Option<Duration>,
    build: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        run_for: None,
        build: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--for" => {
                let v = it.next().context("--for needs a duration such as 30s")?;
                a.run_for =
                    Some(humantime::parse_duration(&v).with_context(|| format!("--for {v}"))?);
            }
            "--no-build" => a.build = false,
            "-h" | "--help" => {
                println!(
                    "telltale-demo [--for DURATION] [--no-build]\n\nStarts an aggregator and an agent on this host and prints how to query them."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(a)
}

fn build() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // The same package set as `cargo demo`'s own build (this crate depends on both daemons),
    // so features resolve the same and no dependency is compiled a second time: only the two
    // binaries are left to build.
    cmd.args([
        "build",
        "--locked",
        "-p",
        "telltale-tests",
        "-p",
        "telltale-agent",
        "-p",
        "telltale-aggregator",
        "--bin",
        "telltale-agent",
        "--bin",
        "telltale-aggregator",
    ]);
    // The profile this binary was built with (`target/<profile>/`; `debug` is `dev`'s).
    match bin_dir().file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    // `cargo run` gave this process the variables of the package it runs (CARGO_MANIFEST_DIR,
    // CARGO_PKG_*, …). Build scripts that track them (ring's tracks CARGO_MANIFEST_DIR) would
    // see a change and rebuild ring and all that depends on it, both here and at the next
    // `cargo demo`: the inner build gets the environment the outer one had.
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        if k.starts_with("CARGO_MANIFEST_")
            || k.starts_with("CARGO_PKG_")
            || matches!(
                k,
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE" | "OUT_DIR"
            )
        {
            cmd.env_remove(k);
        }
    }
    eprintln!("building telltale-agent and telltale-aggregator (cargo's progress below)…");
    let st = cmd.status().context("cannot run cargo")?;
    anyhow::ensure!(st.success(), "building the binaries failed");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    if a.build {
        build()?;
    }
    let scratch: PathBuf =
        std::env::temp_dir().join(format!("telltale-demo-{}", std::process::id()));
    let tls = scratch.join("tls");
    certs_init(&tls)?;
    let name = "demo-agent";
    certs_issue(&tls, name)?;
    // Rules: the example host rules, and a business alert that fires once orders flow.
    let node_rules = format!("{}/../config/rules/*.yml", env!("CARGO_MANIFEST_DIR"));
    let demo_rules = scratch.join("demo-rules.yml");
    std::fs::create_dir_all(&scratch)?;
    std::fs::write(
        &demo_rules,
        "groups:\n  - name: demo\n    interval: 10s\n    rules:\n      - alert: OrdersFlowing\n        expr: sum by (instance) (shop_orders) > 0\n        labels: {severity: info}\n        annotations: {summary: '{{ $labels.instance }} took {{ $value }} orders'}\n",
    )?;
    let demo_rules = demo_rules.display().to_string();
    let detectors = format!("{}/../config/detectors.yml", env!("CARGO_MANIFEST_DIR"));
    let rule_args = [
        "--rules",
        node_rules.as_str(),
        "--rules",
        demo_rules.as_str(),
        "--detectors",
        detectors.as_str(),
    ];
    let agg = start_aggregator(
        &tls,
        &scratch.join("aggregator"),
        "127.0.0.1:9470",
        "127.0.0.1:9471",
        &rule_args,
    )
    .or_else(|e| {
        eprintln!("(default ports busy: {e:#}; using free ports instead)");
        start_aggregator(
            &tls,
            &scratch.join("aggregator"),
            "127.0.0.1:0",
            "127.0.0.1:0",
            &rule_args,
        )
    })?;
    // Beyond host metrics: a StatsD listener the demo feeds a business metric through, and an
    // HTTP health check of the aggregator itself.
    let statsd_port = free_udp_port();
    let agent_toml = scratch.join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "[statsd]\nlisten = \"127.0.0.1:{statsd_port}\"\nflush_interval = \"1s\"\n\
             [[check]]\nname = \"aggregator-http\"\ntype = \"http\"\nurl = \"http://{}/-/healthy\"\ninterval = \"1s\"\n",
            agg.http
        ),
    )?;
    let agent = start_agent_with_config(
        &tls,
        name,
        agg.quic,
        &scratch.join("agent"),
        "1s",
        Some(&agent_toml),
    )?;
    let app = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let order = |n: u64| {
        for i in 0..n {
            let plan = if i % 3 == 0 { "pro" } else { "free" };
            let _ = app.send_to(
                format!(
                    "shop.orders:1|c|#plan:{plan}\nshop.revenue:{}|c|#currency:eur",
                    10 + i % 40
                )
                .as_bytes(),
                ("127.0.0.1", statsd_port),
            );
        }
    };
    order(5);
    let first = wait_for(Duration::from_secs(30), || {
        let r = query(agg.http, "node_cpu_seconds_total").ok()?;
        (!r.is_empty()).then_some(r.len())
    })
    .with_context(|| {
        format!(
            "no data arrived within 30s\naggregator:\n{}\nagent:\n{}",
            agg.proc.log(),
            agent.log()
        )
    })?;

    let url = format!("http://{}", agg.http);
    println!("\nTelltale demo is running.");
    println!("  web UI:     {url}/  (overview, explore, host dashboard, alerts, SLOs, reports)");
    println!(
        "  pipeline:   {url}/#/pipeline  (the live flow with measured latency; Mermaid: {url}/api/v1/pipeline)"
    );
    println!("  aggregator: {url} (QUIC ingest on {}/udp)", agg.quic);
    println!("  agent:      {name}, collecting every 1s, {first} CPU series so far");
    println!("  scratch:    {} (certificates, data)\n", scratch.display());
    println!("Try:");
    // Let the first StatsD flush and health check arrive.
    wait_for(Duration::from_secs(10), || {
        order(1);
        query(agg.http, "shop_orders")
            .ok()
            .filter(|r| !r.is_empty())
    });
    wait_for(Duration::from_secs(10), || {
        query(agg.http, "ALERTS{alertname=\"OrdersFlowing\"}")
            .ok()
            .filter(|r| !r.is_empty())
    });
    for q in [
        "node_load1",
        "node_memory_MemAvailable_bytes",
        "up",
        "node_network_receive_bytes_total{device=\"lo\"}[30s]",
        "sum by (plan) (shop_orders)",
        "probe_success{check=\"aggregator-http\"}",
        "ALERTS{alertname=\"OrdersFlowing\"}",
    ] {
        let sample = query(agg.http, q)
            .ok()
            .and_then(|r| r.first().cloned())
            .map(|s| {
                if s["values"].is_array() {
                    format!("{} samples", s["values"].as_array().map_or(0, Vec::len))
                } else {
                    s["value"][1].as_str().unwrap_or("").to_string()
                }
            })
            .unwrap_or_default();
        println!(
            "  curl -s '{url}/api/v1/query?query={}'    # {q} = {sample}",
            enc(q)
        );
    }
    println!("  curl -s '{url}/api/v1/agents'");
    println!("  curl -s '{url}/api/v1/rules'      # config/rules/node.yml + a demo business alert");
    println!("  curl -s '{url}/api/v1/alerts'     # OrdersFlowing fires within seconds");
    println!("  curl -s '{url}/api/v1/incidents'  # firing alerts correlated into incidents");
    println!(
        "  curl -s '{url}/api/v1/anomaly'    # config/detectors.yml: telltale_anomaly_score series"
    );
    println!("  curl -s '{url}/api/v1/events'     # health checks changing state");
    println!(
        "  echo 'shop.orders:1|c|#plan:pro' > /dev/udp/127.0.0.1/{statsd_port}   # a business metric (bash)"
    );
    println!("  curl -s '{url}/metrics'");
    println!("\nGrafana: add a Prometheus data source with URL {url}. Ctrl-C stops the demo.\n");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_secs(if a.run_for.is_some() { 1 } else { 10 }));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick() => {
                    order(3);
                    let samples = metric(agg.http, "telltale_aggregator_samples_ingested_total").unwrap_or(0.0);
                    let series = metric(agg.http, "telltale_aggregator_series").unwrap_or(0.0);
                    println!("  {:>4}s: {samples} samples stored, {series} series", started.elapsed().as_secs());
                    if a.run_for.is_some_and(|d| started.elapsed() >= d) {
                        break;
                    }
                }
            }
        }
    });
    let (mut agent, mut agg) = (agent, agg);
    agent.terminate(Duration::from_secs(10));
    agg.proc.terminate(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&scratch);
    println!("stopped; scratch directory removed");
    Ok(())
}
