//! Log lines and alert events to ClickHouse, the real server from Debian's package (18.16,
//! started here with its own data directory and zstd as its compression method). Log lines
//! are pushed through Loki's API while ClickHouse is down for 20 s and the aggregator
//! restarts cleanly in between: afterwards every line the aggregator acknowledged is in
//! `telltale.logs` exactly once. Spans sent to a real agent's OTLP receiver reach
//! `telltale.spans` for the traces tail sampling kept, and only those. An always-firing rule
//! routed to a `clickhouse_configs` receiver lands as rows of `telltale.events`.

// The helpers below start peers and read them back: any failure there is the test's failure.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use telltale_common::wire::{LogEntry, LogStream};
use telltale_tests::peers::{free_tcp_port, peer};
use telltale_tests::*;

const CLICKHOUSE: &str = "/usr/sbin/clickhouse-server";
const TOKEN: &str = "ch-test-token";

/// Starts ClickHouse on `http` (and `tcp`) with its data in `dir`; waits until it answers.
fn start_clickhouse(dir: &Path, http: u16, tcp: u16) -> Proc {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let users = dir.join("users.xml");
    std::fs::write(
        &users,
        r#"<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>
    <telltale><password>s3cret</password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></telltale>
  </users>
  <quotas><default></default></quotas>
</yandex>
"#,
    )
    .unwrap();
    let cfg = dir.join("config.xml");
    let d = dir.display();
    std::fs::write(
        &cfg,
        format!(
            r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/server.err.log</errorlog><size>10M</size><count>1</count></logger>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{d}/data/</path>
  <tmp_path>{d}/data/tmp/</tmp_path>
  <user_files_path>{d}/data/user_files/</user_files_path>
  <users_config>{}</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <timezone>UTC</timezone>
  <compression><case><method>zstd</method></case></compression>
</yandex>
"#,
            users.display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(CLICKHOUSE);
    cmd.arg(format!("--config-file={}", cfg.display()));
    let (p, mut out) = Proc::spawn(cmd, "clickhouse").unwrap();
    std::thread::spawn(move || {
        let mut sink = [0u8; 4096];
        while matches!(out.read(&mut sink), Ok(n) if n > 0) {}
    });
    let addr: SocketAddr = ([127, 0, 0, 1], http).into();
    wait_for(Duration::from_secs(60), || {
        http_get(addr, "/ping").ok().filter(|r| r.0 == 200)
    })
    .expect("clickhouse did not start");
    p
}

/// Runs `sql` as the default user; returns the answer (panics on an error answer).
fn ch(port: u16, sql: &str) -> String {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let (st, body) = http_post(addr, "/", "text/plain", sql.as_bytes()).unwrap();
    assert_eq!(st, 200, "{sql}: {body}");
    body
}

/// Pushes batches of numbered lines until stopped; keeps the numbers of the lines whose push
/// was acknowledged.
struct Pusher {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Pusher {
    fn start(http: Arc<Mutex<SocketAddr>>) -> Pusher {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let mut next = 0u64;
            while !s.load(Ordering::Relaxed) {
                let now = telltale_common::model::now_ms() * 1_000_000;
                let numbers: Vec<u64> = (next..next + 40).collect();
                next += 40;
                let streams = vec![LogStream {
                    labels: vec![
                        ("job".into(), "chtest".into()),
                        ("level".into(), "info".into()),
                    ],
                    entries: numbers
                        .iter()
                        .enumerate()
                        .map(|(i, n)| LogEntry {
                            t_ns: now + i as i64,
                            line: format!("request {n} served in 12ms \"GET /api\""),
                            metadata: vec![("seq".into(), n.to_string())],
                        })
                        .collect(),
                }];
                let addr = *http.lock().unwrap();
                if loki_push(addr, TOKEN, &streams).is_ok() {
                    a.lock().unwrap().extend(numbers);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Pusher {
            stop,
            acked,
            thread,
        }
    }

    fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.acked.lock().map(|v| v.clone()).unwrap()
    }
}

#[test]
fn log_lines_and_alert_events_reach_clickhouse_once_across_an_outage_and_a_restart() {
    let Some(_) = peer(CLICKHOUSE, "clickhouse-server") else {
        return;
    };
    let (dir, tls) = scratch_with_ca().unwrap();
    let (ch_http, ch_tcp) = (free_tcp_port(), free_tcp_port());
    let ch_dir = dir.path().join("clickhouse");
    let mut server = start_clickhouse(&ch_dir, ch_http, ch_tcp);
    let pw = dir.path().join("ch.password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[clickhouse]
url = "http://127.0.0.1:{ch_http}"
basic_auth = {{ username = "telltale", password_file = {pw:?} }}
batch_send_deadline = "200ms"
max_backoff = "1s"

[traces.sampling]
ratio = 0.0
decision_wait = "1s"
"#
        ),
    )
    .unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups: [{name: g, interval: 1s, rules: [{alert: ClickHouseTestAlert, expr: 'vector(1)', labels: {severity: warning, instance: ch-host}, annotations: {summary: 'always firing'}}]}]\n",
    )
    .unwrap();
    let routes = dir.path().join("routes.yml");
    std::fs::write(
        &routes,
        format!(
            "route: {{receiver: olap, group_by: [alertname], group_wait: 0s, group_interval: 1s}}\n\
             receivers:\n  - name: olap\n    clickhouse_configs: [{{url: 'http://127.0.0.1:{ch_http}', username: telltale, password_file: {pw:?}}}]\n"
        ),
    )
    .unwrap();
    let args: Vec<String> = [
        "--config",
        &cfg.display().to_string(),
        "--api-token",
        TOKEN,
        "--rules",
        &rules.display().to_string(),
        "--routes",
        &routes.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let data = dir.path().join("agg");
    let mut agg = start_aggregator(&tls, &data, "127.0.0.1:0", "127.0.0.1:0", &a).unwrap();
    let http = Arc::new(Mutex::new(agg.http));
    let pusher = Pusher::start(http.clone());
    // An application's spans through an agent's OTLP receiver: trace …01 fails (kept), trace
    // …02 is fine (dropped at ratio 0).
    let otlp = free_tcp_port();
    certs_issue(&tls, "ch-agent").unwrap();
    let agent_cfg = dir.path().join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "[otlp]\nenabled = true\nhttp_listen = \"127.0.0.1:{otlp}\"\ngrpc_listen = \"127.0.0.1:{}\"\n",
            free_tcp_port()
        ),
    )
    .unwrap();
    let agent = start_agent_with_config(
        &tls,
        "ch-agent",
        agg.quic,
        &dir.path().join("agent"),
        "1s",
        Some(&agent_cfg),
    )
    .unwrap();
    agent
        .wait_log("OTLP/gRPC receiver started", Duration::from_secs(20))
        .unwrap();
    let now_ns = telltale_common::model::now_ms() * 1_000_000;
    let spans = |trace: &str, code: u8| {
        format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"checkout"}}}}]}},
            "scopeSpans":[{{"spans":[
              {{"traceId":"{trace}","spanId":"00f067aa0ba902b7","name":"POST /pay","kind":2,"startTimeUnixNano":"{now_ns}","endTimeUnixNano":"{}","status":{{"code":{code}}}}},
              {{"traceId":"{trace}","spanId":"00f067aa0ba902b8","parentSpanId":"00f067aa0ba902b7","name":"charge","kind":3,"startTimeUnixNano":"{now_ns}","endTimeUnixNano":"{}"}}
            ]}}]}}]}}"#,
            now_ns + 20_000_000,
            now_ns + 10_000_000
        )
    };
    let otlp_addr: SocketAddr = ([127, 0, 0, 1], otlp).into();
    for (trace, code) in [
        ("4bf92f3577b34da6a3ce929d0e0e4701", 2),
        ("4bf92f3577b34da6a3ce929d0e0e4702", 0),
    ] {
        let (st, body) = http_post(
            otlp_addr,
            "/v1/traces",
            "application/json",
            spans(trace, code).as_bytes(),
        )
        .unwrap();
        assert_eq!(st, 200, "{body}");
    }
    std::thread::sleep(Duration::from_secs(3));

    // ClickHouse goes down for 20 s; meanwhile the aggregator restarts cleanly (pushes that
    // fail during the restart are not acknowledged, so not expected).
    server.terminate(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(6));
    let failures = metric(
        agg.http,
        "telltale_aggregator_clickhouse_insert_failures_total{table=\"logs\"}",
    )
    .unwrap();
    assert!(failures > 0.0, "no insert failed while ClickHouse was down");
    agg.proc.terminate(Duration::from_secs(30));
    agg = start_aggregator(
        &tls,
        &data,
        &agg.http.to_string(),
        &agg.quic.to_string(),
        &a,
    )
    .unwrap();
    *http.lock().unwrap() = agg.http;
    std::thread::sleep(Duration::from_secs(14));
    let _server = start_clickhouse(&ch_dir, ch_http, ch_tcp);
    std::thread::sleep(Duration::from_secs(3));
    let acked = pusher.stop();
    assert!(
        acked.len() > 2_000,
        "only {} lines acknowledged",
        acked.len()
    );

    // Every acknowledged line arrives, once (waiting on distinct lines: a duplicate must not
    // end the wait early).
    let count = || -> usize {
        ch(
            ch_http,
            "SELECT uniqExact(metadata_values[1]) FROM telltale.logs",
        )
        .trim()
        .parse()
        .unwrap_or(0)
    };
    wait_for(Duration::from_secs(60), || {
        (count() >= acked.len()).then_some(())
    });
    let mut seen: HashMap<u64, u32> = HashMap::new();
    for l in ch(ch_http, "SELECT metadata_values[1] FROM telltale.logs").lines() {
        *seen.entry(l.trim().parse().unwrap()).or_default() += 1;
    }
    let lost = acked.iter().filter(|n| !seen.contains_key(n)).count();
    let twice: u32 = seen.values().map(|c| c - 1).sum();
    assert_eq!(
        (lost, twice),
        (0, 0),
        "(lost, twice) in ClickHouse of {} acknowledged lines",
        acked.len()
    );
    // The rows carry the stream and the line as stored.
    let row = ch(
        ch_http,
        "SELECT stream, line, instance FROM telltale.logs WHERE metadata_values[1] = '7' FORMAT JSONEachRow",
    );
    let v: serde_json::Value = serde_json::from_str(row.trim()).unwrap();
    assert_eq!(v["stream"], "{job=\"chtest\", level=\"info\"}");
    assert_eq!(v["line"], "request 7 served in 12ms \"GET /api\"");
    // Partitioned by day, compressed.
    let ddl = ch(ch_http, "SHOW CREATE TABLE telltale.logs");
    assert!(
        ddl.contains("MergeTree") && ddl.contains("toYYYYMMDD"),
        "{ddl}"
    );
    ch(ch_http, "OPTIMIZE TABLE telltale.logs FINAL");
    let sizes = ch(
        ch_http,
        "SELECT sum(data_compressed_bytes), sum(data_uncompressed_bytes) FROM system.columns WHERE database = 'telltale' AND table = 'logs'",
    );
    let sizes: Vec<u64> = sizes
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(sizes[0] * 3 < sizes[1], "not compressed: {sizes:?}");

    // The kept trace's spans are rows of telltale.spans; the dropped trace's are not.
    let spans = wait_for(Duration::from_secs(60), || {
        let r = ch(
            ch_http,
            "SELECT trace_id, span_id, parent_span_id, service, name, kind, status FROM telltale.spans ORDER BY span_id FORMAT JSONEachRow",
        );
        let rows: Vec<serde_json::Value> = r
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (rows.len() >= 2).then_some(rows)
    })
    .expect("no spans in ClickHouse");
    assert_eq!(spans.len(), 2, "{spans:?}");
    for s in &spans {
        assert_eq!(s["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4701", "{s}");
        assert_eq!(s["service"], "checkout");
    }
    assert_eq!(spans[0]["name"], "POST /pay");
    assert_eq!(spans[0]["status"], "error");
    assert_eq!(spans[0]["kind"], "server");
    assert_eq!(spans[1]["parent_span_id"], "00f067aa0ba902b7");
    drop(agent);

    // The alert's notifications are rows of telltale.events.
    let events = wait_for(Duration::from_secs(60), || {
        let r = ch(
            ch_http,
            "SELECT alertname, status, receiver, kind, severity, instance, body FROM telltale.events FORMAT JSONEachRow",
        );
        r.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["alertname"] == "ClickHouseTestAlert")
    })
    .expect("no event row for the alert");
    assert_eq!(events["status"], "firing");
    assert_eq!(events["receiver"], "olap");
    assert_eq!(events["kind"], "alert");
    assert_eq!(events["severity"], "warning");
    assert_eq!(events["instance"], "ch-host");
    let body: serde_json::Value = serde_json::from_str(events["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["version"], "4");
    let dropped = metric(
        agg.http,
        "telltale_aggregator_clickhouse_rows_dropped_total{table=\"logs\"}",
    )
    .unwrap();
    assert_eq!(dropped, 0.0);
}

/// Incidents are archived into `telltale.incidents` (a new version when acknowledged), and an
/// incidents report whose range reaches back past the aggregator's 7 days reads the ones it
/// no longer holds from there — its own only; with ClickHouse down it says what is missing.
#[test]
fn incidents_are_archived_and_long_range_reports_read_them_back() {
    let Some(_) = peer(CLICKHOUSE, "clickhouse-server") else {
        return;
    };
    let (dir, tls) = scratch_with_ca().unwrap();
    let (ch_http, ch_tcp) = (free_tcp_port(), free_tcp_port());
    let mut server = start_clickhouse(&dir.path().join("clickhouse"), ch_http, ch_tcp);
    let source = "http://agg-a.example:9470";
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            "[alerting]\nexternal_url = \"{source}\"\n\n[clickhouse]\nurl = \"http://127.0.0.1:{ch_http}\"\n\
             logs = false\nspans = false\nincidents_interval = \"300ms\"\n"
        ),
    )
    .unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups: [{name: g, interval: 1s, rules: [{alert: ArchiveTestAlert, expr: 'vector(1)', labels: {severity: critical, instance: db-1}}]}]\n",
    )
    .unwrap();
    let (c, r) = (cfg.display().to_string(), rules.display().to_string());
    let args = ["--config", &c, "--api-token", TOKEN, "--rules", &r];
    let agg = start_aggregator(
        &tls,
        &dir.path().join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &args,
    )
    .unwrap();
    let ch_addr: SocketAddr = ([127, 0, 0, 1], ch_http).into();
    // Empty until the archive has made its table.
    let archived = |cond: &str| -> Vec<serde_json::Value> {
        let sql = format!(
            "SELECT id, source, root_cause, status, opened_ms, acknowledged_ms, body FROM telltale.incidents FINAL WHERE {cond} FORMAT JSONEachRow"
        );
        let (st, text) = http_post(ch_addr, "/", "text/plain", sql.as_bytes()).unwrap();
        if st != 200 {
            return Vec::new();
        }
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    // ClickHouse writes 64-bit integers as JSON strings.
    let num = |v: &serde_json::Value| -> u64 {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0)
    };
    // The rule's incident is archived, with the aggregator as its source.
    let row = wait_for(Duration::from_secs(60), || {
        archived("root_cause = 'ArchiveTestAlert'")
            .into_iter()
            .next()
    })
    .expect("the incident never reached telltale.incidents");
    assert_eq!(row["source"], source);
    assert_eq!(row["status"], "open");
    assert_eq!(num(&row["acknowledged_ms"]), 0);
    let id = num(&row["id"]);
    // Acknowledged: a new version replaces it.
    let (st, body) = http_post_auth(
        agg.http,
        &format!("/api/v1/incidents/{id}/ack"),
        "application/json",
        br#"{"by": "ann"}"#,
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(st, 200, "{body}");
    let row = wait_for(Duration::from_secs(30), || {
        archived(&format!("id = {id}"))
            .into_iter()
            .find(|r| num(&r["acknowledged_ms"]) > 0)
    })
    .expect("the acknowledgement was not archived");
    let body: serde_json::Value = serde_json::from_str(row["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["acknowledged"]["by"], "ann");
    assert_eq!(
        archived(&format!("id = {id}")).len(),
        1,
        "one version after FINAL"
    );

    // Two incidents from 40 days ago, as an earlier run of this aggregator (and another
    // aggregator) archived them: the aggregator no longer holds them.
    let now = telltale_common::model::now_ms();
    let old = |id: u64, src: &str, cause: &str| {
        let opened = now - 40 * 86_400_000;
        let t = |ms: i64| {
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + Duration::from_millis(ms as u64),
            )
            .to_string()
        };
        let body = serde_json::json!({
            "id": id.to_string(), "status": "resolved", "openedAt": t(opened),
            "updatedAt": t(opened + 3_600_000), "resolvedAt": t(opened + 3_600_000),
            "priority": 1, "rootCause": {"alertname": cause, "labels": {}},
            "acknowledged": {"by": "bob", "at": t(opened + 600_000)},
            "alerts": [{"labels": {"alertname": cause}}], "timeline": [],
        });
        serde_json::json!({
            "timestamp": opened / 1000, "source": src, "id": id, "opened_ms": opened,
            "updated_ms": opened + 3_600_000, "archived_ms": opened + 3_600_000,
            "acknowledged_ms": opened + 600_000, "resolved_ms": opened + 3_600_000,
            "status": "resolved", "root_cause": cause, "alerts": 1, "body": body.to_string(),
        })
        .to_string()
    };
    let rows = format!(
        "{}\n{}\n",
        old(900_001, source, "OldDiskFull"),
        old(900_002, "http://agg-b.example:9470", "OtherAggregators")
    );
    let (st, text) = http_post(
        ch_addr,
        "/?query=INSERT%20INTO%20telltale.incidents%20FORMAT%20JSONEachRow",
        "text/plain",
        rows.as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 200, "{text}");

    let report = |range: &str| -> serde_json::Value {
        let (st, body) = http_get(
            agg.http,
            &format!("/api/v1/reports/render?kind=incidents&range={range}&format=json"),
        )
        .unwrap();
        assert_eq!(st, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["data"].clone()
    };
    // 60 days: the live incident and this aggregator's old one, not the other's.
    let long = report("60d");
    assert_eq!(long["summary"]["incidents"], 2, "{}", long["summary"]);
    assert_eq!(long["summary"]["acknowledged"], 2);
    assert_eq!(long["summary"]["rootCauses"]["OldDiskFull"], 1);
    assert!(
        long["summary"]["rootCauses"]
            .get("OtherAggregators")
            .is_none()
    );
    assert!(long["summary"].get("archiveNote").is_none());
    // 7 days: the aggregator's own state; the archive is not read.
    assert_eq!(report("7d")["summary"]["incidents"], 1);

    // ClickHouse down: the long report is still made, from what the aggregator holds, and
    // says what may be missing.
    server.kill();
    let long = report("60d");
    assert_eq!(long["summary"]["incidents"], 1);
    let note = long["summary"]["archiveNote"].as_str().unwrap_or("");
    assert!(note.contains("could not be read"), "{}", long["summary"]);
    let sent = metric(
        agg.http,
        "telltale_aggregator_clickhouse_rows_sent_total{table=\"incidents\"}",
    )
    .unwrap();
    assert!(sent >= 2.0, "incident versions archived: {sent}");
}
