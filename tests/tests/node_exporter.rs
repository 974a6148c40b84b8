//! The agent's host metrics carry node_exporter's names and label names, checked against the
//! real `prometheus-node-exporter` (Debian package) running on the same host, so existing
//! node_exporter dashboards and alert rules work unchanged.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use telltale_tests::*;

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// Metrics the agent emits from node_exporter collectors that are off by default
/// (`tcpstat`, `processes`), so a default node_exporter does not show them.
const NON_DEFAULT: &[&str] = &["node_tcp_connection_states", "node_processes_threads"];

/// Fields in the netstat default filter of node_exporter releases newer than Debian's 1.5.
const NEWER_THAN_DEBIAN: &[&str] = &[
    "node_netstat_TcpExt_TCPOFOQueue",
    "node_netstat_TcpExt_TCPRcvQDrop",
];

/// Label names per metric name from the text exposition format.
fn parse_exposition(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let entry = out.entry(line[..name_end].to_string()).or_default();
        if line[name_end..].starts_with('{') {
            let mut rest = &line[name_end + 1..];
            while let Some(eq) = rest.find('=') {
                entry.insert(rest[..eq].trim_start_matches(',').to_string());
                // Skip the quoted value, honouring backslash escapes.
                let bytes = rest.as_bytes();
                let mut i = eq + 2;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                rest = &rest[(i + 1).min(rest.len())..];
                if rest.starts_with('}') {
                    break;
                }
            }
        }
    }
    out
}

#[test]
fn host_metric_names_and_labels_match_node_exporter() {
    if !Path::new(NODE_EXPORTER).exists() {
        assert!(
            std::env::var("CI").is_err(),
            "{NODE_EXPORTER} is missing in CI: .ci/run must install prometheus-node-exporter"
        );
        eprintln!(
            "skipped: {NODE_EXPORTER} not installed (apt-get install prometheus-node-exporter)"
        );
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut ne = Command::new(NODE_EXPORTER)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let text = wait_for(Duration::from_secs(10), || {
        http_get(addr, "/metrics").ok().map(|r| r.1)
    })
    .unwrap();
    let _ = ne.kill();
    let _ = ne.wait();
    let reference = parse_exposition(&text);
    assert!(
        reference.contains_key("node_cpu_seconds_total"),
        "node_exporter output unreadable"
    );

    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    certs_init(&tls).unwrap();
    certs_issue(&tls, "names").unwrap();
    let agg = start_fresh_aggregator(&tls, dir.path()).unwrap();
    let _agent = start_agent(&tls, "names", agg.quic, &dir.path().join("agent"), "1s").unwrap();
    let series = wait_for(Duration::from_secs(10), || {
        let (_, body) = http_get(
            agg.http,
            &format!("/api/v1/series?match[]={}", enc("{__name__=~\"node_.+\"}")),
        )
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let s = v["data"].as_array()?.clone();
        (s.len() > 100).then_some(s)
    })
    .unwrap();
    let mut ours: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in series {
        let obj = s.as_object().unwrap();
        let name = obj["__name__"].as_str().unwrap().to_string();
        let labels = obj
            .keys()
            .filter(|k| !["__name__", "instance", "job"].contains(&k.as_str()));
        ours.entry(name).or_default().extend(labels.cloned());
    }
    let mut problems = Vec::new();
    for (name, labels) in &ours {
        match reference.get(name) {
            Some(theirs) if theirs == labels => {}
            // node_exporter 1.5 has no device_error label yet; newer versions do.
            Some(theirs)
                if theirs.iter().all(|l| labels.contains(l)) && labels.len() == theirs.len() => {}
            Some(theirs) => problems.push(format!(
                "{name}: labels {labels:?}, node_exporter has {theirs:?}"
            )),
            None if NON_DEFAULT.contains(&name.as_str())
                || NEWER_THAN_DEBIAN.contains(&name.as_str()) => {}
            None => problems.push(format!("{name}: node_exporter has no such metric here")),
        }
    }
    for core in [
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_load1",
        "node_filesystem_avail_bytes",
        "node_network_receive_bytes_total",
        "node_netstat_Tcp_RetransSegs",
        "node_time_seconds",
        "node_boot_time_seconds",
        "node_uname_info",
        "node_disk_read_bytes_total",
        "node_sockstat_TCP_inuse",
        "node_vmstat_pgmajfault",
    ] {
        if !ours.contains_key(core) {
            problems.push(format!("{core}: the agent did not send it"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
