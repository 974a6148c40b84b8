//! A host dashboard's queries, differential against a real Prometheus on real host series.
//!
//! The series are the real `prometheus-node-exporter`'s on this host (every `node_*` counter,
//! gauge and untyped family with its label sets and the values read), given an hour of
//! history for two hosts: counters rise at rates drawn per series (one host reboots half-way:
//! its counters start again from 0 and its boot time moves), gauges wander around the value
//! read, sizes and limits stay put, `node_time_seconds` is the sample's time. The same
//! samples go to Prometheus 2.42 and to Telltale by remote write. Then the queries a host
//! dashboard draws — written here in the shapes of Grafana's Node Exporter Full panels
//! (CPU busy, load per core, memory, swap, disks, filesystems, network, TCP, vmstat,
//! pressure, uptime), with the template variables and `$__rate_interval` filled in as Grafana
//! fills them — run as Grafana runs them: range queries over the last hour with start and
//! end aligned to the step, at a 15 s, 60 s and 7 s step, and an instant query; and the
//! variable queries (`label_values`) go through the label and series APIs. Every answer
//! must be Prometheus'. The seed (history and reboot time) is printed and replayed with
//! `TT_DASHBOARD_SEED`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use serde_json::Value;
use telltale_common::model::{Labels, Sample, SeriesSamples};
use telltale_tests::compliance::Rng;
use telltale_tests::exposition::families;
use telltale_tests::fuzz::{Pair, Verdict};
use telltale_tests::peers::NodeExporter;
use telltale_tests::{enc, http_get, seed_from_env};

/// The scrape interval of the history (ms).
const INTERVAL: i64 = 15_000;
const HOSTS: [&str; 2] = ["host-a:9100", "host-b:9100"];

/// Gauges that do not move on a real host between scrapes: sizes, totals, limits, info.
fn steady(name: &str) -> bool {
    [
        "_total_bytes",
        "Total_bytes",
        "_size_bytes",
        "_files",
        "_limit",
        "_maximum",
        "_info",
        "_boot_time_seconds",
        "_max",
        "_bits",
    ]
    .iter()
    .any(|s| name.ends_with(s))
}

/// The history of every `node_*` counter, gauge and untyped series of `text` for both
/// hosts over `[start, end]` (ms), from `seed`.
fn history(text: &str, seed: u64, start: i64, end: i64) -> Vec<SeriesSamples> {
    let mut rng = Rng(seed | 1);
    let reboot = start + (end - start) / 3 + ((end - start) as f64 / 3.0 * rng.uniform()) as i64;
    let mut out = Vec::new();
    for (name, fam) in families(text) {
        if !name.starts_with("node_")
            || !["counter", "gauge", "untyped"].contains(&fam.kind.as_str())
        {
            continue;
        }
        for (labels, v0) in &fam.series {
            for (h, host) in HOSTS.iter().enumerate() {
                let mut pairs: Vec<(String, String)> =
                    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                pairs.push(("__name__".into(), name.clone()));
                pairs.push(("instance".into(), host.to_string()));
                pairs.push(("job".into(), "node".into()));
                let counter = fam.kind == "counter"
                    || (fam.kind == "untyped" && name.starts_with("node_vmstat_"))
                    || name.starts_with("node_netstat_") && !name.contains("Curr");
                let scale = if h == 0 { 1.0 } else { 0.5 + rng.uniform() };
                // Per second, in proportion to the counter's size; a counter at 0 stays
                // there half the time (most error counters do).
                let rate = if *v0 == 0.0 && rng.uniform() < 0.5 {
                    0.0
                } else {
                    v0.max(1.0) * (1e-5 + 1e-3 * rng.uniform())
                };
                let phase = rng.uniform() * 6.3;
                let mut samples = Vec::new();
                let mut t = start;
                let mut c = v0 * scale;
                while t <= end {
                    let at = t + (rng.uniform() * 50.0) as i64 - 25;
                    let rebooted = h == 1 && at >= reboot;
                    let v = if name == "node_time_seconds" {
                        at as f64 / 1000.0
                    } else if name == "node_boot_time_seconds" {
                        if rebooted {
                            (reboot / 1000) as f64
                        } else {
                            *v0
                        }
                    } else if counter {
                        if h == 1 && at >= reboot && at - INTERVAL < reboot {
                            c = 0.0;
                        }
                        c += rate * INTERVAL as f64 / 1000.0 * (0.5 + rng.uniform());
                        c
                    } else if steady(&name) || *v0 == 0.0 {
                        v0 * scale
                    } else {
                        let wave = 0.1 * ((t - start) as f64 / 600_000.0 + phase).sin();
                        (v0 * scale * (1.0 + wave + 0.02 * (rng.uniform() - 0.5))).max(0.0)
                    };
                    samples.push(Sample(at, v));
                    t += INTERVAL;
                }
                out.push(SeriesSamples {
                    labels: Labels::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
                    samples,
                });
            }
        }
    }
    out
}

/// The dashboard's panel queries, with `$job`, `$node` and `$__rate_interval` as Grafana
/// leaves them for substitution.
const PANELS: &[&str] = &[
    // CPU
    r#"count(count(node_cpu_seconds_total{instance="$node",job="$job"}) by (cpu))"#,
    r#"100 * (1 - avg(rate(node_cpu_seconds_total{mode="idle",instance="$node",job="$job"}[$__rate_interval])))"#,
    r#"sum by (mode) (irate(node_cpu_seconds_total{instance="$node",job="$job"}[$__rate_interval])) / scalar(count(count(node_cpu_seconds_total{instance="$node",job="$job"}) by (cpu)))"#,
    r#"sum by (instance) (rate(node_cpu_seconds_total{mode!="idle",job="$job"}[$__rate_interval])) / on (instance) group_left count by (instance) (node_cpu_seconds_total{mode="idle",job="$job"})"#,
    r#"avg(node_load1{instance="$node",job="$job"}) / count(count(node_cpu_seconds_total{instance="$node",job="$job"}) by (cpu)) * 100"#,
    r#"node_load5{instance=~"$node|host-b:9100",job="$job"}"#,
    r#"increase(node_cpu_seconds_total{mode="iowait",instance="$node",job="$job"}[1h])"#,
    r#"resets(node_cpu_seconds_total{job="$job"}[1h])"#,
    r#"sum by (instance) (rate(node_schedstat_running_seconds_total{job="$job"}[$__rate_interval]))"#,
    r#"rate(node_context_switches_total{instance="$node",job="$job"}[$__rate_interval])"#,
    r#"irate(node_intr_total{instance="$node",job="$job"}[$__rate_interval])"#,
    r#"rate(node_pressure_cpu_waiting_seconds_total{instance="$node",job="$job"}[$__rate_interval])"#,
    // Memory
    r#"100 - (node_memory_MemAvailable_bytes{instance="$node",job="$job"} * 100 / node_memory_MemTotal_bytes{instance="$node",job="$job"})"#,
    r#"(1 - node_memory_SwapFree_bytes{instance="$node",job="$job"} / node_memory_SwapTotal_bytes{instance="$node",job="$job"}) * 100"#,
    r#"node_memory_MemTotal_bytes{instance="$node",job="$job"} - node_memory_MemFree_bytes{instance="$node",job="$job"} - (node_memory_Cached_bytes{instance="$node",job="$job"} + node_memory_Buffers_bytes{instance="$node",job="$job"} + node_memory_SReclaimable_bytes{instance="$node",job="$job"})"#,
    r#"node_memory_Active_bytes{instance="$node",job="$job"} or node_memory_Inactive_bytes{instance="$node",job="$job"}"#,
    r#"(node_memory_MemTotal_bytes{job="$job"} - node_memory_MemAvailable_bytes{job="$job"}) unless node_memory_MemTotal_bytes{job="$job"} == 0"#,
    r#"rate(node_vmstat_pgfault{instance="$node",job="$job"}[$__rate_interval])"#,
    r#"rate(node_vmstat_pgmajfault{instance="$node",job="$job"}[$__rate_interval])"#,
    r#"irate(node_vmstat_pswpin{instance="$node",job="$job"}[$__rate_interval]) * 4096"#,
    // Filesystems and disks
    r#"100 - ((node_filesystem_avail_bytes{instance="$node",job="$job",mountpoint="/",fstype!="rootfs"} * 100) / node_filesystem_size_bytes{instance="$node",job="$job",mountpoint="/",fstype!="rootfs"})"#,
    r#"node_filesystem_avail_bytes{instance="$node",job="$job",device!~"rootfs",fstype!~"tmpfs|ramfs"}"#,
    r#"1 - node_filesystem_files_free{instance="$node",job="$job"} / node_filesystem_files{instance="$node",job="$job"}"#,
    r#"node_filesystem_readonly{instance="$node",job="$job"} + on (instance, device, mountpoint) group_left node_filesystem_device_error{instance="$node",job="$job"}"#,
    r#"predict_linear(node_filesystem_avail_bytes{job="$job",fstype!~"tmpfs"}[1h], 4 * 3600) < 0"#,
    r#"rate(node_disk_read_bytes_total{instance="$node",job="$job",device=~"(/dev/)?(mmcblk.p.+|nvme.+|sd.+|vd.+|xvd.+|dm-.+|md.+)"}[$__rate_interval])"#,
    r#"rate(node_disk_io_time_seconds_total{instance="$node",job="$job"}[$__rate_interval])"#,
    r#"rate(node_disk_read_time_seconds_total{instance="$node",job="$job"}[$__rate_interval]) / rate(node_disk_reads_completed_total{instance="$node",job="$job"}[$__rate_interval])"#,
    r#"irate(node_disk_writes_completed_total{instance="$node",job="$job"}[$__rate_interval])"#,
    r#"quantile(0.9, rate(node_disk_io_time_seconds_total{job="$job"}[$__rate_interval]))"#,
    // Network
    r#"irate(node_network_receive_bytes_total{instance="$node",job="$job",device!~"lo|veth.*"}[$__rate_interval]) * 8"#,
    r#"rate(node_network_transmit_packets_total{instance="$node",job="$job"}[$__rate_interval])"#,
    r#"sum without (device) (rate(node_network_receive_bytes_total{job="$job"}[$__rate_interval]))"#,
    r#"topk(3, rate(node_network_transmit_bytes_total{job="$job"}[$__rate_interval]))"#,
    r#"node_network_up{instance="$node",job="$job"} * on (instance, device) group_left (operstate) node_network_info{instance="$node",job="$job"}"#,
    r#"irate(node_netstat_Tcp_OutSegs{instance="$node",job="$job"}[$__rate_interval])"#,
    r#"node_netstat_Tcp_CurrEstab{instance="$node",job="$job"}"#,
    r#"rate(node_netstat_TcpExt_ListenDrops{instance="$node",job="$job"}[$__rate_interval])"#,
    r#"node_sockstat_TCP_inuse{instance="$node",job="$job"} + node_sockstat_UDP_inuse{instance="$node",job="$job"}"#,
    r#"node_nf_conntrack_entries{instance="$node",job="$job"} / node_nf_conntrack_entries_limit{instance="$node",job="$job"}"#,
    // System
    r#"node_time_seconds{instance="$node",job="$job"} - node_boot_time_seconds{instance="$node",job="$job"}"#,
    r#"changes(node_boot_time_seconds{job="$job"}[1h])"#,
    r#"count by (release) (node_uname_info{job="$job"})"#,
    r#"node_filefd_allocated{instance="$node",job="$job"} / node_filefd_maximum{instance="$node",job="$job"} * 100"#,
    r#"rate(node_forks_total{instance="$node",job="$job"}[$__rate_interval])"#,
    r#"node_procs_running{instance="$node",job="$job"} or node_procs_blocked{instance="$node",job="$job"}"#,
    r#"node_entropy_available_bits{instance="$node",job="$job"}"#,
    r#"node_timex_estimated_error_seconds{instance="$node",job="$job"}"#,
    r#"avg_over_time(node_load1{job="$job"}[$__interval])"#,
    r#"max_over_time(node_procs_running{job="$job"}[$__rate_interval])"#,
    r#"up{job="$job"}"#,
];

/// `q` with Grafana's substitutions for a panel at `step` (ms): `$__interval` the step,
/// `$__rate_interval` the larger of four scrape intervals and the step plus one.
fn fill(q: &str, node: &str, step: i64) -> String {
    let rate = (4 * INTERVAL).max(step + INTERVAL) / 1000;
    q.replace("$node", node)
        .replace("$job", "node")
        .replace("$__rate_interval", &format!("{rate}s"))
        .replace("$__interval", &format!("{}s", step / 1000))
}

/// The `data` of an API answer as a set (label values, label names, series).
fn data_set(v: &Value) -> Result<BTreeSet<String>, String> {
    match &v["data"] {
        Value::Array(a) => Ok(a.iter().map(|x| x.to_string()).collect()),
        other => Err(format!("not a list: {other} ({v})")),
    }
}

#[test]
fn a_host_dashboard_answers_as_prometheus_does() {
    let Some(_) = telltale_tests::peers::peer(telltale_tests::compliance::PROMETHEUS, "prometheus")
    else {
        return;
    };
    let Some(ne) = NodeExporter::start(&[]) else {
        return;
    };
    let text = ne.scrape();
    drop(ne);
    let seed = seed_from_env("TT_DASHBOARD_SEED");
    let now = telltale_common::model::now_ms() / 1000 * 1000;
    let (start, end) = (now - 65 * 60_000, now - 30_000);
    let series = history(&text, seed, start, end);
    assert!(
        series.len() > 200,
        "only {} series from node_exporter",
        series.len()
    );
    let pair = Pair::load(&series, start, end).unwrap();

    let mut wrong = Vec::new();
    let mut undecided = 0;
    let mut nonempty = 0;
    let mut asked = 0;
    for panel in PANELS {
        for step in [INTERVAL, 60_000, 7_000] {
            // Grafana aligns the range to the step.
            let at = end / step * step;
            let span = 3_600_000 / step * step;
            let q = fill(panel, HOSTS[0], step);
            asked += 1;
            match pair.judge_over(&q, at, Some(step), span) {
                Verdict::Agree => {}
                Verdict::Differ(e) => wrong.push(format!("{q} (step {step} ms): {e}")),
                Verdict::Undecided(_) => undecided += 1,
            }
        }
        let q = fill(panel, HOSTS[1], 60_000);
        asked += 1;
        match pair.judge(&q, end, None) {
            Verdict::Agree => {}
            Verdict::Differ(e) => wrong.push(format!("{q} (instant): {e}")),
            Verdict::Undecided(_) => undecided += 1,
        }
        let (_, body) = http_get(
            pair.telltale.http,
            &format!(
                "/api/v1/query?query={}&time={}",
                enc(&q),
                end as f64 / 1000.0
            ),
        )
        .unwrap();
        if body.contains("\"metric\"") {
            nonempty += 1;
        }
    }

    // The variable queries: label_values(job), label_values(node_uname_info{job=...},
    // instance), label_values(node_filesystem_size_bytes{...}, mountpoint), and the series
    // and label names a query editor lists.
    let (s, e) = (start as f64 / 1000.0, end as f64 / 1000.0);
    let range = format!("start={s}&end={e}");
    let sel = |q: &str| enc(&fill(q, HOSTS[0], INTERVAL));
    let apis = [
        format!("/api/v1/label/job/values?{range}"),
        format!(
            "/api/v1/label/instance/values?match[]={}&{range}",
            sel(r#"node_uname_info{job="$job"}"#)
        ),
        format!(
            "/api/v1/label/mountpoint/values?match[]={}&{range}",
            sel(r#"node_filesystem_size_bytes{instance="$node",job="$job"}"#)
        ),
        format!(
            "/api/v1/label/device/values?match[]={}&{range}",
            sel(r#"node_network_info{job="$job"}"#)
        ),
        format!(
            "/api/v1/series?match[]={}&{range}",
            sel(r#"node_filesystem_size_bytes{instance="$node"}"#)
        ),
        format!(
            "/api/v1/labels?match[]={}&{range}",
            sel(r#"{__name__=~"node_disk_.+",job="$job"}"#)
        ),
        format!("/api/v1/label/__name__/values?{range}"),
    ];
    for path in &apis {
        asked += 1;
        let get = |addr| -> Value {
            let (_, body) = http_get(addr, path).unwrap();
            serde_json::from_str(&body).unwrap_or(Value::Null)
        };
        let (theirs, ours) = (get(pair.prometheus_addr), get(pair.telltale.http));
        match (data_set(&theirs), data_set(&ours)) {
            (Ok(a), Ok(b)) if a == b => {}
            (Ok(a), Ok(b)) => wrong.push(format!(
                "{path}: only Prometheus {:?}; only Telltale {:?}",
                a.difference(&b).take(5).collect::<Vec<_>>(),
                b.difference(&a).take(5).collect::<Vec<_>>()
            )),
            (a, b) => wrong.push(format!("{path}: {a:?} / {b:?}")),
        }
    }
    println!(
        "dashboard: {} series, {asked} requests, {} wrong, {undecided} undecided (ties Prometheus orders at random), {nonempty} of {} panels with data",
        series.len(),
        wrong.len(),
        PANELS.len()
    );
    for w in &wrong {
        println!("  WRONG {}", w.chars().take(600).collect::<String>());
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers (TT_DASHBOARD_SEED={seed})",
        wrong.len()
    );
    assert!(
        undecided * 20 <= asked,
        "{undecided} of {asked} undecided: the check has gone blind"
    );
    // Panels whose families this host lacks (no swap, no conntrack) answer empty on both;
    // most must have data, or the comparison says little.
    assert!(
        nonempty * 3 >= PANELS.len() * 2,
        "only {nonempty} panels with data"
    );
}
