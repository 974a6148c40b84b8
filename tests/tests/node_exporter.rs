//! The agent's host metrics are node_exporter's, checked against the real
//! `prometheus-node-exporter` (Debian package, 1.5) on the same host: every family it exposes
//! with its default collectors is produced by the agent with the same type, label names,
//! label-value sets and (where a value is comparable) value, and the same names and labels
//! reach the aggregator — so existing node_exporter dashboards and alert rules work unchanged.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use telltale_tests::exposition::{Family, families};
use telltale_tests::peers::NodeExporter;
use telltale_tests::*;

/// Metrics the agent emits from node_exporter collectors that are off by default
/// (`tcpstat`, `processes`), so a default node_exporter does not show them.
const NON_DEFAULT: &[&str] = &["node_tcp_connection_states", "node_processes_threads"];

/// Families of node_exporter releases newer than Debian's 1.5 (netstat's default filter grew;
/// softnet's RPS and flow-limit columns from 1.6; IRQ pressure from 1.8), which current
/// dashboards use.
const NEWER_THAN_DEBIAN: &[&str] = &[
    "node_netstat_TcpExt_TCPOFOQueue",
    "node_netstat_TcpExt_TCPRcvQDrop",
    "node_softnet_received_rps_total",
    "node_softnet_flow_limit_count_total",
    "node_pressure_irq_stalled_seconds_total",
];

/// node_exporter families the agent does not produce, and why.
const NOT_PRODUCED: &[(&str, &str)] = &[
    (
        "node_exporter_build_info",
        "identifies node_exporter itself; the agent reports telltale_agent_* about itself",
    ),
    (
        "node_textfile_scrape_error",
        "produced by the agent's textfile source when a [textfile] directory is configured \
         (tested in tests/tests/textfile.rs), not by the host collectors `collect` runs",
    ),
];

/// Families whose label *values* name implementation parts, not the host: only their type
/// and label names are compared.
const VALUES_NAME_COLLECTORS: &[&str] = &[
    "node_scrape_collector_duration_seconds",
    "node_scrape_collector_success",
];

/// Families whose values legitimately move between two reads a moment apart without being
/// monotonic (free memory, load, queue lengths, the clock, the NTP error estimate, ...): their
/// values are not compared, everything else about them is.
fn volatile(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "node_memory_",
        "node_load",
        "node_time_seconds",
        "node_timex_maxerror_seconds",
        "node_timex_estimated_error_seconds",
        "node_timex_offset_seconds",
        "node_timex_frequency_adjustment_ratio",
        "node_entropy_available_bits",
        "node_procs_",
        "node_filefd_allocated",
        "node_sockstat_",
        "node_nf_conntrack_entries",
        "node_udp_queues",
        "node_arp_entries",
        "node_filesystem_free_bytes",
        "node_filesystem_avail_bytes",
        "node_filesystem_files_free",
        "node_disk_io_now",
        "node_netstat_Tcp_CurrEstab",
        "node_scrape_collector_",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// node_exporter 1.5 (Debian's build) with upstream's defaults for the two flags Debian's
/// package changes (it excludes `lo` from netdev and `/run`, `/mnt`, `/media` from
/// filesystem); the agent follows upstream node_exporter.
fn upstream_defaults() -> Vec<String> {
    vec![
        "--collector.netdev.device-exclude=".into(),
        "--collector.filesystem.mount-points-exclude=^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)".into(),
    ]
}

#[test]
fn every_node_exporter_family_matches_in_type_labels_and_values() {
    let Some(ne) = NodeExporter::start(&upstream_defaults()) else {
        return;
    };
    let scrape = || ne.scrape();
    // node_exporter before and after the agent: a counter the agent read lies between.
    let before = families(&scrape());
    let agent = Command::new(bin("telltale-agent").unwrap())
        .arg("collect")
        .output()
        .unwrap();
    let after = families(&scrape());
    drop(ne);
    assert!(agent.status.success());
    let ours = families(&String::from_utf8(agent.stdout).unwrap());
    let collector_errors = String::from_utf8_lossy(&agent.stderr);

    let mut problems = Vec::new();
    let mut compared = (0, 0);
    for (name, theirs) in before.iter().filter(|(n, _)| n.starts_with("node_")) {
        if NOT_PRODUCED.iter().any(|(n, _)| n == name) {
            continue;
        }
        let Some(mine) = ours.get(name) else {
            problems.push(format!("{name}: missing from the agent"));
            continue;
        };
        compared.0 += 1;
        if mine.kind != theirs.kind {
            problems.push(format!(
                "{name}: type {}, node_exporter {}",
                mine.kind, theirs.kind
            ));
        }
        let names = |f: &Family| -> BTreeSet<String> {
            f.series.keys().flat_map(|l| l.keys().cloned()).collect()
        };
        if names(mine) != names(theirs) {
            problems.push(format!(
                "{name}: label names {:?}, node_exporter {:?}",
                names(mine),
                names(theirs)
            ));
            continue;
        }
        if VALUES_NAME_COLLECTORS.contains(&name.as_str()) {
            continue;
        }
        let sets = |f: &Family| f.series.keys().cloned().collect::<BTreeSet<_>>();
        let later = after.get(name).map(sets).unwrap_or_default();
        if sets(mine) != sets(theirs) && sets(mine) != later {
            let only_ne: Vec<_> = sets(theirs).difference(&sets(mine)).cloned().collect();
            let only_agent: Vec<_> = sets(mine).difference(&sets(theirs)).cloned().collect();
            problems.push(format!(
                "{name}: label sets differ: only node_exporter {only_ne:?}, only agent {only_agent:?}"
            ));
            continue;
        }
        if volatile(name) {
            continue;
        }
        for (labels, &x) in &mine.series {
            let Some(&a) = theirs.series.get(labels) else {
                continue;
            };
            let c = after
                .get(name)
                .and_then(|f| f.series.get(labels))
                .copied()
                .unwrap_or(a);
            let (lo, hi) = (a.min(c), a.max(c));
            let tol = 1e-9 * hi.abs().max(1.0);
            compared.1 += 1;
            let agrees = (lo - tol..=hi + tol).contains(&x) || (x.is_nan() && a.is_nan());
            if !agrees {
                problems.push(format!(
                    "{name}{labels:?}: agent {x}, node_exporter {a} then {c}"
                ));
            }
        }
    }
    for name in ours.keys() {
        if !before.contains_key(name)
            && !NON_DEFAULT.contains(&name.as_str())
            && !NEWER_THAN_DEBIAN.contains(&name.as_str())
        {
            problems.push(format!("{name}: node_exporter has no such family"));
        }
    }
    eprintln!(
        "{} families compared, {} values compared; agent collector errors: {collector_errors}",
        compared.0, compared.1
    );
    // Guards against a vacuous pass (an unreadable node_exporter page, an empty agent run).
    assert!(
        compared.0 >= 150 && compared.1 >= 100,
        "too little compared: {compared:?}"
    );
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn host_metric_names_and_labels_match_node_exporter() {
    // Debian's defaults, as the package runs it.
    let Some(ne) = NodeExporter::start(&[]) else {
        return;
    };
    let text = ne.scrape();
    drop(ne);
    // Label names per family, empty values dropped as Prometheus stores them.
    let reference: BTreeMap<String, BTreeSet<String>> = families(&text)
        .into_iter()
        .map(|(name, f)| {
            let names = f.series.keys().flat_map(|l| l.keys().cloned()).collect();
            (name, names)
        })
        .collect();
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
