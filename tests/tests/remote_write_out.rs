//! remote_write out to the real receivers from Debian's packages: VictoriaMetrics (its single
//! node speaks the protocol of its cluster's vminsert) and Prometheus with its remote-write
//! receiver. A remote_write client and a real agent write to the aggregator, which forwards
//! everything to both; VictoriaMetrics is down for 60 s and the aggregator restarts in
//! between. Afterwards every sample the aggregator acknowledged is at both receivers, and
//! none twice at VictoriaMetrics (which keeps duplicates, so they can be counted).

// The helpers below start peers and read them back: any failure there is the test's failure.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use telltale_tests::chaos::{RW_SERIES, RwWriter};
use telltale_tests::peers::peer;
use telltale_tests::*;

const VICTORIA: &str = "/usr/bin/victoria-metrics";
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Starts a peer whose stdout is drained (a Go program dies of a broken stdout pipe).
fn spawn(cmd: Command, tag: &str) -> Proc {
    let (p, mut out) = Proc::spawn(cmd, tag).unwrap();
    std::thread::spawn(move || {
        let mut sink = [0u8; 4096];
        while matches!(out.read(&mut sink), Ok(n) if n > 0) {}
    });
    p
}

fn start_vm(dir: &Path, port: u16) -> Proc {
    let mut cmd = Command::new(VICTORIA);
    cmd.arg(format!("-storageDataPath={}", dir.display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .args([
            "-retentionPeriod=100y",
            "-httpAuth.username=telltale",
            "-httpAuth.password=s3cret",
            "-loggerLevel=ERROR",
        ]);
    let p = spawn(cmd, "victoria-metrics");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for(Duration::from_secs(30), || {
        http_get(addr, "/health").ok().filter(|r| r.0 == 200)
    })
    .expect("victoria-metrics did not start");
    p
}

fn start_prometheus(dir: &Path, port: u16) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("prometheus.yml");
    // Agents' batches arrive out of order after a reconnection (a replayed backlog), and
    // the queue forwards them in WAL order: Prometheus refuses a whole request holding one
    // out-of-order sample unless its out-of-order window is open.
    std::fs::write(
        &cfg,
        "global:\n  scrape_interval: 1m\nstorage:\n  tsdb:\n    out_of_order_time_window: 1h\n",
    )
    .unwrap();
    let mut cmd = Command::new(PROMETHEUS);
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(["--web.enable-remote-write-receiver", "--log.level=error"]);
    let p = spawn(cmd, "prometheus");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for(Duration::from_secs(30), || {
        http_get(addr, "/-/ready").ok().filter(|r| r.0 == 200)
    })
    .expect("prometheus did not start");
    p
}

/// VictoriaMetrics' raw samples of `chaos_rw_*` (after a forced flush): series name →
/// timestamps, duplicates kept.
fn vm_export(port: u16) -> HashMap<String, Vec<(i64, f64)>> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let auth = "dGVsbHRhbGU6czNjcmV0"; // telltale:s3cret
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "30", "-H"])
            .arg(format!("Authorization: Basic {auth}"))
            .arg(format!("http://{addr}{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    get("/internal/force_flush");
    let body = get(&format!(
        "/api/v1/export?match[]={}",
        enc("{__name__=~\"chaos_rw_.*\"}")
    ));
    let mut out: HashMap<String, Vec<(i64, f64)>> = HashMap::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = v["metric"]["__name__"].as_str().unwrap_or("").to_string();
        let ts = v["timestamps"].as_array().cloned().unwrap_or_default();
        let vs = v["values"].as_array().cloned().unwrap_or_default();
        let e = out.entry(name).or_default();
        for (t, x) in ts.iter().zip(vs) {
            e.push((t.as_i64().unwrap_or(0), x.as_f64().unwrap_or(f64::NAN)));
        }
    }
    out
}

/// A new aggregator on `old`'s data directory and addresses (the agent and the writer find
/// it again), once `old` is stopped.
fn restart(tls: &Path, data: &Path, old: &Aggregator, config: &str) -> Aggregator {
    start_aggregator(
        tls,
        data,
        &old.http.to_string(),
        &old.quic.to_string(),
        &["--config", config],
    )
    .unwrap()
}

/// (lost, stored twice) at VictoriaMetrics of what `all` had acknowledged, once nothing is
/// missing or after a minute. (Waiting for as many samples as were acknowledged would end
/// early when some arrived twice while others were still on their way.)
fn lost_and_twice_at_vm(vm_port: u16, all: &telltale_tests::chaos::Acked) -> (u64, u64) {
    let count = || {
        let got = vm_export(vm_port);
        let mut stats = (0u64, 0u64);
        for n in 0..RW_SERIES {
            let samples = got
                .get(&format!("chaos_rw_{n}"))
                .cloned()
                .unwrap_or_default();
            let mut count: HashMap<i64, (u32, f64)> = HashMap::new();
            for (t, v) in samples {
                let e = count.entry(t).or_insert((0, v));
                e.0 += 1;
            }
            for &(a, b) in &all.ranges {
                for i in a..b {
                    match count.get(&(all.base + i)) {
                        Some((k, v)) if *v == i as f64 => stats.1 += u64::from(*k - 1),
                        _ => stats.0 += 1,
                    }
                }
            }
        }
        stats
    };
    wait_for(Duration::from_secs(60), || {
        let s = count();
        (s.0 == 0).then_some(s)
    })
    .unwrap_or_else(count)
}

#[test]
fn everything_acknowledged_reaches_victoria_metrics_and_prometheus_across_an_outage_and_a_restart()
{
    let (Some(_), Some(_), Some(_)) = (
        peer(VICTORIA, "victoria-metrics"),
        peer(PROMETHEUS, "prometheus"),
        peer("/usr/bin/curl", "curl"),
    ) else {
        return;
    };
    let (dir, tls) = scratch_with_ca().unwrap();
    let (vm_port, prom_port) = (free_port(), free_port());
    let vm_dir = dir.path().join("vm");
    let mut vm = start_vm(&vm_dir, vm_port);
    let _prom = start_prometheus(&dir.path().join("prom"), prom_port);
    let pw = dir.path().join("vm.password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[[remote_write]]
name = "vm"
url = "http://127.0.0.1:{vm_port}/api/v1/write"
[remote_write.basic_auth]
username = "telltale"
password_file = {pw:?}
[remote_write.queue]
batch_send_deadline = "200ms"
max_backoff = "1s"

[[remote_write]]
name = "prometheus"
url = "http://127.0.0.1:{prom_port}/api/v1/write"
[[remote_write.write_relabel_configs]]
target_label = "forwarded_by"
replacement = "telltale"
[remote_write.queue]
batch_send_deadline = "200ms"
"#
        ),
    )
    .unwrap();
    let c = cfg.display().to_string();
    let data = dir.path().join("agg");
    let mut agg =
        start_aggregator(&tls, &data, "127.0.0.1:0", "127.0.0.1:0", &["--config", &c]).unwrap();
    certs_issue(&tls, "fwd-agent").unwrap();
    let _agent = start_agent(&tls, "fwd-agent", agg.quic, &dir.path().join("agent"), "1s").unwrap();
    let writer = RwWriter::paced(agg.http, Duration::from_millis(20), None);
    std::thread::sleep(Duration::from_secs(3));

    // VictoriaMetrics goes down (cleanly: what it acknowledged it keeps) for 60 s.
    vm.terminate(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(30));
    // Meanwhile the aggregator restarts, cleanly; its queues resume where they were (the
    // writer's requests during the restart fail and are not counted as acknowledged).
    agg.proc.terminate(Duration::from_secs(30));
    agg = restart(&tls, &data, &agg, &c);
    std::thread::sleep(Duration::from_secs(30));
    let retries = metric(
        agg.http,
        "telltale_aggregator_remote_write_retries_total{remote=\"vm\"}",
    )
    .unwrap();
    assert!(
        retries > 0.0,
        "the queue never retried while its receiver was down"
    );
    let _vm = start_vm(&vm_dir, vm_port);
    std::thread::sleep(Duration::from_secs(3));
    let all = writer.stop();
    let total = all.total();
    assert!(total > 10_000, "only {total} samples were written");

    // Every acknowledged sample arrives at VictoriaMetrics, once.
    assert_eq!(
        lost_and_twice_at_vm(vm_port, &all),
        (0, 0),
        "(lost, twice) at VictoriaMetrics of {total} acknowledged"
    );
    // ...and at Prometheus, with the label its queue's relabelling adds.
    let prom: SocketAddr = ([127, 0, 0, 1], prom_port).into();
    assert_eq!(all.lost(prom).unwrap(), 0, "lost at Prometheus");
    let labelled = query(
        prom,
        "count_over_time(chaos_rw_0{forwarded_by=\"telltale\"}[1h])",
    )
    .unwrap();
    assert_eq!(labelled.len(), 1, "{labelled:?}");
    // The agent's series went out too.
    let agent = wait_for(Duration::from_secs(30), || {
        let r = query(prom, "count({instance=\"fwd-agent\"})").ok()?;
        let n: f64 = r.first()?["value"][1].as_str()?.parse().ok()?;
        (n > 10.0).then_some(n)
    });
    assert!(
        agent.is_some(),
        "the agent's series never reached Prometheus"
    );
    for (q, what) in [
        ("vm", "dropped"),
        ("prometheus", "dropped"),
        ("vm", "failed"),
        ("prometheus", "failed"),
    ] {
        let v = metric(
            agg.http,
            &format!("telltale_aggregator_remote_write_samples_{what}_total{{remote=\"{q}\"}}"),
        )
        .unwrap();
        assert_eq!(v, 0.0, "{q} {what}");
    }
}

/// Telltale forwarding to another Telltale over HTTPS with a client certificate and a bearer
/// token: the receiver refuses a request without them, and takes the forwarded samples.
#[test]
fn a_queue_authenticates_with_a_client_certificate_and_a_bearer_token() {
    if peer("/usr/bin/curl", "curl").is_none() {
        return;
    }
    let (dir, tls) = scratch_with_ca().unwrap();
    certs_issue(&tls, "forwarder").unwrap();
    let rcfg = dir.path().join("receiver.toml");
    std::fs::write(
        &rcfg,
        format!(
            "http_tls_cert = {:?}\nhttp_tls_key = {:?}\nhttp_client_ca = {:?}\napi_token = \"t0ken\"\n",
            tls.join("server.crt"),
            tls.join("server.key"),
            tls.join("ca.crt")
        ),
    )
    .unwrap();
    let rc = rcfg.display().to_string();
    let receiver = start_aggregator(
        &tls,
        &dir.path().join("receiver"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--config", &rc],
    )
    .unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[remote_write]]\nurl = \"https://127.0.0.1:{}/api/v1/write\"\nbearer_token_file = {token:?}\n[remote_write.tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n[remote_write.queue]\nbatch_send_deadline = \"100ms\"\n",
            receiver.http.port(),
            tls.join("ca.crt"),
            tls.join("agents/forwarder.crt"),
            tls.join("agents/forwarder.key"),
        ),
    )
    .unwrap();
    let c = cfg.display().to_string();
    let agg = start_aggregator(
        &tls,
        &dir.path().join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--config", &c],
    )
    .unwrap();
    let writer = RwWriter::paced(agg.http, Duration::from_millis(50), None);
    std::thread::sleep(Duration::from_secs(2));
    let acked = writer.stop();
    assert!(acked.total() > 0);
    // Read back over HTTPS with curl (the receiver wants the client certificate for reads too).
    let lost = wait_for(Duration::from_secs(30), || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(tls.join("ca.crt"))
            .arg("--cert")
            .arg(tls.join("agents/forwarder.crt"))
            .arg("--key")
            .arg(tls.join("agents/forwarder.key"))
            .arg(format!(
                "https://127.0.0.1:{}/api/v1/query?query={}",
                receiver.http.port(),
                enc(&(0..RW_SERIES)
                    .map(|n| format!("count_over_time(chaos_rw_{n}[1h])"))
                    .collect::<Vec<_>>()
                    .join(" + "))
            ))
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let n: f64 = v["data"]["result"]
            .as_array()?
            .iter()
            .filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok())
            .sum();
        (n as u64 == acked.total()).then_some(())
    });
    assert!(
        lost.is_some(),
        "the receiver never had all {} samples; forwarder log:\n{}",
        acked.total(),
        agg.proc.log()
    );
}

/// `[storage] mode = "forward"`: an aggregator that keeps nothing forwards everything a
/// remote_write client and an agent send to VictoriaMetrics — across a receiver outage with
/// a SIGKILL of the aggregator in it — and refuses queries with a reason.
#[test]
fn a_forward_only_aggregator_loses_nothing_across_an_outage_and_a_crash() {
    let (Some(_), Some(_)) = (
        peer(VICTORIA, "victoria-metrics"),
        peer("/usr/bin/curl", "curl"),
    ) else {
        return;
    };
    let (dir, tls) = scratch_with_ca().unwrap();
    let vm_port = free_port();
    let vm_dir = dir.path().join("vm");
    let mut vm = start_vm(&vm_dir, vm_port);
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\nmode = \"forward\"\n\n[[remote_write]]\nname = \"vm\"\nurl = \"http://127.0.0.1:{vm_port}/api/v1/write\"\n[remote_write.basic_auth]\nusername = \"telltale\"\npassword = \"s3cret\"\n[remote_write.queue]\nbatch_send_deadline = \"200ms\"\nmax_backoff = \"1s\"\n"
        ),
    )
    .unwrap();
    let c = cfg.display().to_string();
    let data = dir.path().join("agg");
    let mut agg =
        start_aggregator(&tls, &data, "127.0.0.1:0", "127.0.0.1:0", &["--config", &c]).unwrap();
    certs_issue(&tls, "fwd-agent").unwrap();
    let _agent = start_agent(&tls, "fwd-agent", agg.quic, &dir.path().join("agent"), "1s").unwrap();
    let writer = RwWriter::paced(agg.http, Duration::from_millis(20), None);
    std::thread::sleep(Duration::from_secs(3));
    // Nothing is kept to query, and the answer says so.
    for path in [
        "/api/v1/query?query=up",
        "/api/v1/query_range?query=up&start=0&end=60&step=15",
        "/api/v1/label/__name__/values",
        "/federate?match[]=up",
    ] {
        let (status, body) = http_get(agg.http, path).unwrap();
        assert_eq!(status, 422, "{path}: {body}");
        assert!(body.contains("mode = \\\"forward\\\""), "{path}: {body}");
    }
    vm.terminate(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(8));
    agg.proc.kill();
    agg = restart(&tls, &data, &agg, &c);
    std::thread::sleep(Duration::from_secs(8));
    let _vm = start_vm(&vm_dir, vm_port);
    std::thread::sleep(Duration::from_secs(2));
    let all = writer.stop();
    let total = all.total();
    assert!(total > 2_000, "only {total} samples were written");
    assert_eq!(
        lost_and_twice_at_vm(vm_port, &all),
        (0, 0),
        "(lost, twice) at VictoriaMetrics of {total} acknowledged"
    );
    // The agent's series (and the aggregator's `up` for it) went out too.
    let vm: SocketAddr = ([127, 0, 0, 1], vm_port).into();
    let agent = wait_for(Duration::from_secs(30), || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-u", "telltale:s3cret"])
            .arg(format!(
                "http://{vm}/api/v1/series?match[]={}",
                enc("{instance=\"fwd-agent\"}")
            ))
            .output()
            .ok()?;
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        (body.matches("__name__").count() > 10 && body.contains("\"up\"")).then_some(())
    });
    assert!(
        agent.is_some(),
        "the agent's series never reached VictoriaMetrics"
    );
    let v = metric(
        agg.http,
        "telltale_aggregator_remote_write_samples_dropped_total{remote=\"vm\"}",
    )
    .unwrap();
    assert_eq!(v, 0.0, "dropped");
}
