//! An agent with two aggregators (`aggregators`, failover): both forward to one
//! VictoriaMetrics (Debian's package, which keeps duplicates, so they can be counted). The
//! preferred aggregator is killed (SIGKILL: the worst case, batches it stored but never
//! acknowledged) and restarted 15 s later on the same ports. The agent moves to the second
//! and back; meanwhile an `AgentDown` rule (`up == 0` for 20 s) routed to a webhook on both
//! aggregators never fires, the one left behind marks the agent as moved away, and every
//! interval the agent collected reaches VictoriaMetrics. Duplicates at the receiver (batches
//! the killed aggregator had stored and the agent sent again to the other) are counted and
//! printed: across aggregators the receiver's de-duplication is what removes them.

// The helpers below start peers and read them back: any failure there is the test's failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use telltale_tests::peers::{WebhookSink, free_tcp_port, peer};
use telltale_tests::*;

const VICTORIA: &str = "/usr/bin/victoria-metrics";
const AGENT: &str = "fo-agent";

fn start_vm(dir: &Path, port: u16) -> Proc {
    let mut cmd = Command::new(VICTORIA);
    cmd.arg(format!("-storageDataPath={}", dir.display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .args(["-retentionPeriod=100y", "-loggerLevel=ERROR"]);
    let (p, mut out) = Proc::spawn(cmd, "victoria-metrics").unwrap();
    std::thread::spawn(move || {
        let mut sink = [0u8; 4096];
        while matches!(out.read(&mut sink), Ok(n) if n > 0) {}
    });
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for(Duration::from_secs(30), || {
        http_get(addr, "/health").ok().filter(|r| r.0 == 200)
    })
    .expect("victoria-metrics did not start");
    p
}

/// Timestamps of the agent's `node_memory_MemTotal_bytes` at VictoriaMetrics, with how often
/// each was stored.
fn vm_timestamps(port: u16) -> BTreeMap<i64, u32> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let _ = http_get(addr, "/internal/force_flush");
    let (_, body) = http_get(
        addr,
        &format!(
            "/api/v1/export?match[]={}",
            enc(&format!(
                "node_memory_MemTotal_bytes{{instance=\"{AGENT}\"}}"
            ))
        ),
    )
    .unwrap();
    let mut out = BTreeMap::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for t in v["timestamps"].as_array().cloned().unwrap_or_default() {
            *out.entry(t.as_i64().unwrap_or(0)).or_default() += 1;
        }
    }
    out
}

fn agent_state(agg: &Aggregator) -> Option<serde_json::Value> {
    let (st, body) = http_get(agg.http, "/api/v1/agents").ok()?;
    if st != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == AGENT)
        .cloned()
}

fn connected(agg: &Aggregator) -> bool {
    agent_state(agg).is_some_and(|a| a["connected"] == true)
}

fn agent_down_alerts(agg: &Aggregator) -> usize {
    let (_, body) = http_get(agg.http, "/api/v1/alerts").unwrap_or_default();
    body.matches("\"AgentDown\"").count()
}

#[test]
fn an_agent_fails_over_and_back_without_an_agent_down_alert_or_a_lost_interval() {
    let Some(_) = peer(VICTORIA, "victoria-metrics") else {
        return;
    };
    let (dir, tls) = scratch_with_ca().unwrap();
    let vm_port = free_tcp_port();
    let _vm = start_vm(&dir.path().join("vm"), vm_port);
    let sink = WebhookSink::start().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups: [{name: g, interval: 1s, rules: [{alert: AgentDown, expr: 'up{job=\"telltale-agent\"} == 0', for: 20s}]}]\n",
    )
    .unwrap();
    let routes = dir.path().join("routes.yml");
    std::fs::write(
        &routes,
        format!(
            "route: {{receiver: hook, group_by: [alertname, instance], group_wait: 0s, group_interval: 1s}}\n\
             receivers: [{{name: hook, webhook_configs: [{{url: '{}'}}]}}]\n",
            sink.url("/hook")
        ),
    )
    .unwrap();
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[remote_write]]\nurl = \"http://127.0.0.1:{vm_port}/api/v1/write\"\n[remote_write.queue]\nbatch_send_deadline = \"200ms\"\nmax_backoff = \"1s\"\n"
        ),
    )
    .unwrap();
    let args: Vec<String> = [
        "--config",
        cfg.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--routes",
        routes.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let at = |p: u16| format!("127.0.0.1:{p}");
    let (a_http, a_quic, b_http, b_quic) = (
        free_tcp_port(),
        free_udp_port(),
        free_tcp_port(),
        free_udp_port(),
    );
    let a_dir = dir.path().join("agg-a");
    let mut agg_a = start_aggregator(&tls, &a_dir, &at(a_http), &at(a_quic), &a).unwrap();
    let agg_b = start_aggregator(
        &tls,
        &dir.path().join("agg-b"),
        &at(b_http),
        &at(b_quic),
        &a,
    )
    .unwrap();

    // The agent prefers A, then B.
    certs_issue(&tls, AGENT).unwrap();
    let agent_cfg = dir.path().join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "aggregators = [\"localhost:{a_quic}\", \"localhost:{b_quic}\"]\nmode = \"failover\"\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin("telltale-agent").unwrap());
    cmd.arg("run")
        .arg("--config")
        .arg(&agent_cfg)
        .args(["--name", AGENT])
        .arg("--data-dir")
        .arg(dir.path().join("agent"))
        .arg("--ca")
        .arg(tls.join("ca.crt"))
        .arg("--cert")
        .arg(tls.join(format!("agents/{AGENT}.crt")))
        .arg("--key")
        .arg(tls.join(format!("agents/{AGENT}.key")))
        .args(["--interval", "1s"]);
    let _agent = Proc::spawn(cmd, AGENT).unwrap().0;
    wait_for(Duration::from_secs(30), || connected(&agg_a).then_some(()))
        .expect("the agent never connected to its preferred aggregator");
    std::thread::sleep(Duration::from_secs(5));

    // A crashes: the agent moves to B.
    let killed = Instant::now();
    agg_a.proc.child.kill().unwrap();
    let _ = agg_a.proc.child.wait();
    wait_for(Duration::from_secs(60), || connected(&agg_b).then_some(()))
        .expect("the agent never failed over to B");
    let failover = killed.elapsed();
    std::thread::sleep(Duration::from_secs(15));

    // A is back: the agent returns to it, and B knows it moved rather than went down.
    agg_a = start_aggregator(&tls, &a_dir, &at(a_http), &at(a_quic), &a).unwrap();
    let back = Instant::now();
    wait_for(Duration::from_secs(60), || connected(&agg_a).then_some(()))
        .expect("the agent never moved back to A");
    let failback = back.elapsed();
    let on_b = wait_for(Duration::from_secs(10), || {
        agent_state(&agg_b).filter(|s| s["connected"] == false)
    })
    .expect("B still counts the agent as connected");
    assert_eq!(on_b["moved_away"], true, "{on_b}");
    eprintln!("failover after a crash: {failover:?}; back on the restarted one after {failback:?}");

    // Longer than the rule's `for`: AgentDown fires on neither aggregator.
    std::thread::sleep(Duration::from_secs(25));
    assert_eq!(agent_down_alerts(&agg_a), 0, "AgentDown on A");
    assert_eq!(agent_down_alerts(&agg_b), 0, "AgentDown on B");
    let down: Vec<_> = sink
        .all()
        .into_iter()
        .filter(|r| r.body.to_string().contains("AgentDown"))
        .collect();
    assert!(down.is_empty(), "AgentDown was notified: {down:?}");
    // On B the agent's up ended (the staleness marker): no value now, none 0.
    let (_, b_up) = http_get(
        agg_b.http,
        &format!("/api/v1/query?query={}", enc("up == 0")),
    )
    .unwrap();
    assert!(!b_up.contains(AGENT), "{b_up}");

    // Every interval collected reached VictoriaMetrics (through A or B).
    let end = telltale_common::model::now_ms() - 3_000;
    let got = wait_for(Duration::from_secs(60), || {
        let ts = vm_timestamps(vm_port);
        ts.keys()
            .next_back()
            .is_some_and(|&last| last >= end)
            .then_some(ts)
    })
    .expect("VictoriaMetrics never caught up");
    let times: Vec<i64> = got.keys().copied().collect();
    let lost: i64 = times
        .windows(2)
        .map(|w| ((w[1] - w[0]) as f64 / 1000.0).round() as i64 - 1)
        .filter(|&n| n > 0)
        .sum();
    let twice: u32 = got.values().map(|c| c - 1).sum();
    eprintln!(
        "at VictoriaMetrics: {} intervals, {lost} missing, {twice} stored twice",
        times.len()
    );
    assert!(times.len() > 40, "only {} intervals", times.len());
    assert_eq!(lost, 0, "intervals missing at VictoriaMetrics");
}
