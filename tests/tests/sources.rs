//! Every agent source end to end, with real peers: a real aggregator and agent, the real
//! prometheus-node-exporter scraped, StatsD packets over UDP, `*.prom` files, an HTTPS server
//! (Python's, with a certificate from the test's CA), a TCP listener and a Nagios-style plugin
//! script; then what arrives is read back through the aggregator's query API, and health-check
//! state changes through `/api/v1/events`.

#![allow(clippy::unwrap_used)]

use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use telltale_tests::*;

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTPS server (Python's http.server behind ssl) answering `GET /health` with "healthy".
fn https_server(tls: &Path, dir: &Path) -> (Kill, u16) {
    let port = free_port();
    std::fs::write(dir.join("health"), "healthy\n").unwrap();
    let script = format!(
        "import http.server, ssl, functools\n\
         h = functools.partial(http.server.SimpleHTTPRequestHandler, directory={dir:?})\n\
         s = http.server.HTTPServer(('127.0.0.1', {port}), h)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         c.load_cert_chain({crt:?}, {key:?})\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n",
        dir = dir.display().to_string(),
        crt = tls.join("server.crt").display().to_string(),
        key = tls.join("server.key").display().to_string(),
    );
    let child = Command::new("python3")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed (installed by .ci/run)");
    (Kill(child), port)
}

fn value(v: &Value) -> f64 {
    v["value"][1].as_str().unwrap().parse().unwrap()
}

/// Waits until `q` returns at least one series and returns them.
fn wait_query(http: std::net::SocketAddr, q: &str, secs: u64) -> Vec<Value> {
    wait_for(Duration::from_secs(secs), || {
        query(http, q).ok().filter(|r| !r.is_empty())
    })
    .unwrap_or_else(|| panic!("{q} returned nothing in {secs}s"))
}

#[test]
fn scrape_statsd_textfile_and_checks_arrive_enriched_at_the_aggregator() {
    let node_exporter = Path::new(NODE_EXPORTER).exists();
    assert!(
        node_exporter || std::env::var("CI").is_err(),
        "{NODE_EXPORTER} is missing in CI: .ci/run must install prometheus-node-exporter"
    );
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    certs_init(&tls).unwrap();
    certs_issue(&tls, "shop-1").unwrap();
    let agg = start_fresh_aggregator(&tls, dir.path()).unwrap();

    // The peers.
    let ne_port = free_port();
    let _ne = node_exporter.then(|| {
        Kill(
            Command::new(NODE_EXPORTER)
                .arg(format!("--web.listen-address=127.0.0.1:{ne_port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    });
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let (_https, https_port) = https_server(&tls, &www);
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir_all(&textfiles).unwrap();
    std::fs::write(
        textfiles.join("backup.prom"),
        "# TYPE backup_last_success_timestamp_seconds gauge\nbackup_last_success_timestamp_seconds{db=\"orders\"} 1.7e9\n",
    )
    .unwrap();
    std::fs::write(textfiles.join("broken.prom"), "not { valid\n").unwrap();
    // A Nagios-style plugin whose state the test controls through a file.
    let state = dir.path().join("plugin-state");
    std::fs::write(&state, "1").unwrap();
    let plugin = dir.path().join("check_queue");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\ncase $(cat {}) in\n\
             0) echo 'QUEUE OK - 3 jobs | jobs=3;10;20 age=0.5s'; exit 0;;\n\
             1) echo 'QUEUE WARNING - 12 jobs | jobs=12;10;20 age=1500ms'; exit 1;;\n\
             *) echo 'QUEUE CRITICAL - 25 jobs | jobs=25;10;20'; exit 2;;\nesac\n",
            state.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let statsd_port = free_udp_port();

    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[labels]
dc = "test-dc"

[enrich]
host_labels = ["arch"]

[statsd]
listen = "127.0.0.1:{statsd_port}"
flush_interval = "1s"
percentiles = [0.5, 0.99]

[textfile]
directory = "{textfiles}"

[[scrape]]
job = "node"
targets = ["127.0.0.1:{ne_port}"]
interval = "1s"
[[scrape.relabel]]
source_labels = ["__name__"]
regex = "node_load.*|node_cpu_seconds_total|node_exporter_build_info"
action = "keep"

[[scrape]]
job = "gone"
targets = ["127.0.0.1:1"]
interval = "1s"

[[check]]
name = "shop-web"
type = "http"
url = "https://localhost:{https_port}/health"
ca_file = "{ca}"
body_pattern = "healthy"
interval = "1s"
labels = {{ service = "shop" }}

[[check]]
name = "db-port"
type = "tcp"
address = "{tcp_addr}"
interval = "1s"

[[check]]
name = "resolver"
type = "dns"
host = "localhost"
interval = "1s"

[[check]]
name = "queue"
type = "exec"
command = ["{plugin}"]
interval = "1s"
"#,
            textfiles = textfiles.display(),
            ca = tls.join("ca.crt").display(),
            plugin = plugin.display(),
        ),
    )
    .unwrap();
    let _agent = start_agent_with_config(
        &tls,
        "shop-1",
        agg.quic,
        &dir.path().join("agent"),
        "1s",
        Some(&config),
    )
    .unwrap();

    // Business metrics over StatsD, as an application would send them; one bad line in the
    // middle of a packet spoils nothing else.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = format!("127.0.0.1:{statsd_port}");
    // The listener starts with the agent: send until the first counts arrive.
    let orders = wait_for(Duration::from_secs(15), || {
        udp.send_to(
            b"shop.orders:1|c|#plan:pro\nthis is garbage\nshop.revenue:19.99|c|#currency:eur\ncheckout.latency:120|ms",
            &target,
        )
        .unwrap();
        query(agg.http, "shop_orders{plan=\"pro\"}")
            .ok()
            .filter(|r| !r.is_empty())
    })
    .expect("StatsD counter never arrived");
    let o = &orders[0]["metric"];
    assert_eq!(o["instance"], "shop-1");
    assert_eq!(o["job"], "telltale-agent");
    assert_eq!(o["dc"], "test-dc", "static label");
    assert_eq!(o["arch"], std::env::consts::ARCH, "host metadata label");
    assert!(value(&orders[0]) >= 1.0);
    let sent = wait_for(Duration::from_secs(10), || {
        let n = value(&query(agg.http, "shop_orders").ok()?.first()?.clone());
        let m = value(
            &query(agg.http, "telltale_agent_statsd_malformed_total")
                .ok()?
                .first()?
                .clone(),
        );
        (n >= 1.0 && n == m).then_some((n, m))
    })
    .expect("one malformed line counted per packet, and every packet's good lines counted");
    let revenue = wait_query(agg.http, "shop_revenue{currency=\"eur\"}", 10);
    assert!((value(&revenue[0]) / 19.99 - sent.0).abs() < 1e-6 * sent.0.max(1.0));
    let p99 = wait_query(agg.http, "checkout_latency{quantile=\"0.99\"}", 10);
    assert_eq!(value(&p99[0]), 0.12, "timers are reported in seconds");

    // Scrape: up per target, the relabel keep rule, node_exporter's own series.
    if node_exporter {
        let up = wait_query(agg.http, "up{job=\"node\"}", 15);
        assert_eq!(value(&up[0]), 1.0);
        assert_eq!(up[0]["metric"]["target"], format!("127.0.0.1:{ne_port}"));
        assert_eq!(up[0]["metric"]["instance"], "shop-1");
        wait_query(agg.http, "node_exporter_build_info{job=\"node\"}", 10);
        wait_query(agg.http, "scrape_duration_seconds{job=\"node\"}", 10);
        let load = wait_query(agg.http, "node_load1{job=\"node\"}", 10);
        assert_eq!(load[0]["metric"]["dc"], "test-dc");
        assert!(
            query(agg.http, "node_memory_MemTotal_bytes{job=\"node\"}")
                .unwrap()
                .is_empty(),
            "dropped by the job's keep rule"
        );
    }
    let gone = wait_query(agg.http, "up{job=\"gone\"}", 15);
    assert_eq!(value(&gone[0]), 0.0);

    // Textfile: the good file's metric, the broken one reported.
    let b = wait_query(
        agg.http,
        "backup_last_success_timestamp_seconds{db=\"orders\"}",
        15,
    );
    assert_eq!(value(&b[0]), 1.7e9);
    let err = wait_query(agg.http, "node_textfile_scrape_error", 10);
    assert_eq!(value(&err[0]), 1.0);

    // Checks.
    let web = wait_query(agg.http, "probe_success{check=\"shop-web\"}", 15);
    assert_eq!(value(&web[0]), 1.0, "{web:?}");
    assert_eq!(web[0]["metric"]["service"], "shop");
    let expiry = wait_query(
        agg.http,
        "probe_ssl_earliest_cert_expiry{check=\"shop-web\"}",
        10,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(value(&expiry[0]) > now + 86_400.0, "{expiry:?}");
    let db = wait_query(agg.http, "probe_success{check=\"db-port\"}", 10);
    assert_eq!(value(&db[0]), 1.0);
    wait_query(agg.http, "probe_dns_answers{check=\"resolver\"}", 10);
    let status = wait_query(agg.http, "telltale_check_status{check=\"queue\"}", 10);
    assert_eq!(value(&status[0]), 1.0, "WARNING from exit code 1");
    let age = wait_query(
        agg.http,
        "telltale_check_perfdata{check=\"queue\",label=\"age\"}",
        10,
    );
    assert_eq!(value(&age[0]), 1.5, "1500ms in seconds");
    assert_eq!(age[0]["metric"]["unit"], "seconds");

    // State changes become events: the plugin goes CRITICAL, the TCP service goes away.
    std::fs::write(&state, "2").unwrap();
    drop(tcp);
    let events = wait_for(Duration::from_secs(15), || {
        let (code, body) = http_get(
            agg.http,
            &format!("/api/v1/events?match={}", enc("{kind=\"check_state\"}")),
        )
        .ok()?;
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).ok()?;
        let list = v["data"].as_array()?.clone();
        let has = |check: &str, from: &str, to: &str| {
            list.iter().any(|e| {
                e["labels"]["check"] == check
                    && e["labels"]["from"] == from
                    && e["labels"]["to"] == to
                    && e["labels"]["instance"] == "shop-1"
            })
        };
        (has("queue", "WARNING", "CRITICAL") && has("db-port", "OK", "CRITICAL")).then_some(list)
    })
    .expect("state-change events for the plugin and the TCP check");
    let crit = events
        .iter()
        .find(|e| e["labels"]["check"] == "queue" && e["labels"]["to"] == "CRITICAL")
        .unwrap();
    assert_eq!(
        crit["message"], "queue is CRITICAL: QUEUE CRITICAL - 25 jobs",
        "the plugin's first line, without perfdata"
    );
    let (code, body) = http_get(agg.http, "/api/v1/events?limit=0").unwrap();
    assert_eq!(code, 400, "{body}");
}

/// The agent degrades gracefully: with the aggregator unreachable its backlog grows, adaptive
/// sampling thins the non-critical metrics while the critical ones keep full resolution, and a
/// flood of new StatsD series is capped, counted and blamed on the right label. Everything
/// buffered arrives once the aggregator appears.
#[test]
fn backlog_turns_on_adaptive_sampling_and_the_series_cap_names_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    certs_init(&tls).unwrap();
    certs_issue(&tls, "busy-1").unwrap();
    // A QUIC port nobody listens on yet.
    let quic: std::net::SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let statsd_port = free_udp_port();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[statsd]\nlisten = \"127.0.0.1:{statsd_port}\"\nflush_interval = \"1s\"\n\
             [limits]\nmax_series_per_source = 5000\n\
             [adaptive]\nbacklog_batches = 3\nwindow = \"10s\"\n"
        ),
    )
    .unwrap();
    let agent = start_agent_with_config(
        &tls,
        "busy-1",
        quic,
        &dir.path().join("agent"),
        "1s",
        Some(&config),
    )
    .unwrap();
    // 6000 users, one series each: 1000 more than the cap.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    agent
        .wait_log("statsd listener started", Duration::from_secs(10))
        .unwrap();
    for chunk in (0..6000).collect::<Vec<_>>().chunks(50) {
        let packet: Vec<String> = chunk
            .iter()
            .map(|u| format!("logins:1|c|#user:u{u}"))
            .collect();
        udp.send_to(packet.join("\n").as_bytes(), ("127.0.0.1", statsd_port))
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    agent
        .wait_log("series cap reached", Duration::from_secs(10))
        .unwrap();
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("series cap reached"))
        .unwrap();
    assert!(
        line.contains("source=statsd") && line.contains("label \"user\""),
        "{line}"
    );
    agent
        .wait_log("downsampling non-critical metrics", Duration::from_secs(20))
        .unwrap();
    std::thread::sleep(Duration::from_secs(12));
    let agg = start_aggregator(
        &tls,
        &dir.path().join("agg"),
        "127.0.0.1:0",
        &quic.to_string(),
        &[],
    )
    .unwrap();
    agent
        .wait_log(
            "backlog drained: full resolution again",
            Duration::from_secs(60),
        )
        .unwrap();
    let active = wait_query(
        agg.http,
        "max_over_time(telltale_agent_adaptive_sampling_active[5m])",
        20,
    );
    assert_eq!(value(&active[0]), 1.0);
    // During the outage: the critical self metric every second, node_load1 about once per
    // 10 s window.
    let outage_end = wait_for(Duration::from_secs(20), || {
        raw_samples(
            agg.http,
            "telltale_agent_connected{instance=\"busy-1\"}",
            "5m",
        )
        .ok()?
        .into_iter()
        .find(|(_, v)| *v == 1.0)
        .map(|(t, _)| t)
    })
    .expect("connected at some point");
    // Count from the moment adaptive sampling switched on (its own gauge says when), so the
    // full-resolution samples before the backlog built up do not count, however long that
    // took on a loaded machine.
    let adaptive_from = raw_samples(
        agg.http,
        "telltale_agent_adaptive_sampling_active{instance=\"busy-1\"}",
        "5m",
    )
    .unwrap()
    .into_iter()
    .find(|(_, v)| *v == 1.0)
    .map(|(t, _)| t)
    .expect("adaptive sampling was on at some point");
    let count_before = |sel: &str| {
        raw_samples(agg.http, sel, "5m")
            .unwrap()
            .into_iter()
            .filter(|(t, _)| *t >= adaptive_from && *t < outage_end - 2000)
            .count()
    };
    let critical = count_before("telltale_agent_connected{instance=\"busy-1\"}");
    let thinned = count_before("node_load1{instance=\"busy-1\"}");
    assert!(
        critical >= 10,
        "critical metric kept every interval: {critical}"
    );
    assert!(
        thinned * 3 < critical,
        "non-critical thinned during the backlog: {thinned} vs {critical}"
    );
    let sampled = wait_query(
        agg.http,
        "telltale_agent_sampling_input_samples_total{strategy=\"adaptive\"} - telltale_agent_sampling_output_samples_total{strategy=\"adaptive\"}",
        10,
    );
    assert!(value(&sampled[0]) > 0.0, "{sampled:?}");
    let dropped = wait_query(
        agg.http,
        "telltale_agent_series_dropped_total{source=\"statsd\"}",
        10,
    );
    assert!(value(&dropped[0]) >= 1000.0, "{dropped:?}");
    let kept = wait_query(agg.http, "count(logins)", 10);
    assert_eq!(value(&kept[0]), 5000.0, "the first 5000 users keep flowing");
}
