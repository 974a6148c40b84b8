//! What an SRE's tools ask of a Prometheus and an Alertmanager, asked of a running aggregator
//! by the real clients where Debian has them: promtool (`check metrics` on `/metrics`, queries
//! over gzip), amtool (`config show`, `cluster show` over `/api/v2/status`), and the status
//! endpoints Grafana and the Prometheus UI read.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use telltale_tests::peers::{AMTOOL, peer};
use telltale_tests::{
    certs_init, certs_issue, http_get, start_agent_with_config, start_quick_aggregator, wait_for,
};

const PROMTOOL: &str = "/usr/bin/promtool";

fn json(agg: std::net::SocketAddr, path: &str) -> Value {
    let (st, body) = http_get(agg, path).expect("in a test");
    assert_eq!(st, 200, "{path}: {body}");
    serde_json::from_str::<Value>(&body).expect("in a test")["data"].clone()
}

/// A raw HTTP/1.1 GET with `Accept-Encoding: gzip`: (headers, body bytes).
fn get_gzip(addr: std::net::SocketAddr, path: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("in a test");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("in a test");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    )
    .expect("in a test");
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("in a test");
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("in a test");
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    let mut body = all[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // De-chunk.
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("in a test");
            let n = usize::from_str_radix(
                std::str::from_utf8(&rest[..eol]).expect("in a test").trim(),
                16,
            )
            .expect("in a test");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 4 + n..];
        }
        body = out;
    }
    (head, body)
}

#[test]
fn grafana_promtool_and_amtool_find_a_prometheus_and_an_alertmanager() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    certs_init(&tls).unwrap();
    certs_issue(&tls, "web-1").unwrap();
    let routes = dir.path().join("routes.yml");
    let routing = "route: {receiver: ops, group_wait: 1s}\nreceivers: [{name: ops}]\n";
    std::fs::write(&routes, routing).unwrap();
    let r = routes.display().to_string();
    let agg = start_quick_aggregator(&tls, dir.path(), "sekrit-token", &["--routes", &r]).unwrap();
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "[[scrape]]\njob = \"self\"\ntargets = [\"{}\"]\ninterval = \"1s\"\n",
            agg.http
        ),
    )
    .unwrap();
    let _agent = start_agent_with_config(
        &tls,
        "web-1",
        agg.quic,
        &dir.path().join("agent"),
        "1s",
        Some(&agent_toml),
    )
    .unwrap();
    wait_for(Duration::from_secs(60), || {
        let t = json(agg.http, "/api/v1/targets");
        let active = t["activeTargets"].as_array()?;
        (active.len() >= 2).then_some(())
    })
    .expect("the agent and its scrape target are targets");

    // buildinfo: a Prometheus version Grafana uses its newer APIs with; ours beside it.
    let b = json(agg.http, "/api/v1/status/buildinfo");
    assert_eq!(b["version"], "2.45.0");
    assert_eq!(b["telltaleVersion"], env!("CARGO_PKG_VERSION"));
    assert!(
        b["goVersion"].as_str().unwrap().starts_with("rustc "),
        "{b}"
    );

    // /metrics passes promtool's exposition check (histograms, process_*, build info).
    if let Some(promtool) = peer(PROMTOOL, "prometheus") {
        let (_, metrics) = http_get(agg.http, "/metrics").unwrap();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
            "telltale_build_info{version=",
            "telltale_aggregator_ingest_seconds_bucket{le=\"+Inf\"}",
        ] {
            assert!(metrics.contains(name), "{name} missing from /metrics");
        }
        let mut child = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(metrics.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "promtool check metrics: {out:?}");
        // promtool's client asks for gzip and reads it.
        let url = format!("http://{}", agg.http);
        let out = Command::new(&promtool)
            .args(["query", "instant", &url, "count(up)"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("=> 2 @"),
            "{out:?}"
        );
    }

    // gzip when asked, the same bytes inside.
    let (head, body) = get_gzip(agg.http, "/api/v1/label/__name__/values");
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut plain)
        .unwrap();
    let (_, direct) = http_get(agg.http, "/api/v1/label/__name__/values").unwrap();
    let names = |s: &str| {
        serde_json::from_str::<Value>(s).unwrap()["data"]
            .as_array()
            .unwrap()
            .len()
    };
    assert!(
        names(&plain) >= names(&direct) && names(&plain) > 50,
        "{plain}"
    );

    // config, flags, runtime: secrets never leave.
    let c = json(agg.http, "/api/v1/status/config");
    let yaml = c["yaml"].as_str().unwrap();
    assert!(
        yaml.contains("api_token: <secret>") && yaml.contains("routes.yml"),
        "{yaml}"
    );
    let f = json(agg.http, "/api/v1/status/flags");
    assert_eq!(f["api-token"], "<secret>");
    assert_eq!(f["routes"], r);
    let all = serde_json::to_string(&c).unwrap() + &serde_json::to_string(&f).unwrap();
    assert!(!all.contains("sekrit-token"));
    let rt = json(agg.http, "/api/v1/status/runtimeinfo");
    assert_eq!(rt["reloadConfigSuccess"], true);
    assert_eq!(rt["connectedAgents"], 1);
    assert!(rt["startTime"].as_str().unwrap().ends_with('Z'), "{rt}");

    // The cardinality view agrees with PromQL's counts.
    let t = json(agg.http, "/api/v1/status/tsdb?limit=5");
    let top = t["seriesCountByMetricName"].as_array().unwrap();
    assert_eq!(top.len(), 5, "{t}");
    for m in top {
        let name = m["name"].as_str().unwrap();
        let want = json(
            agg.http,
            &format!("/api/v1/query?query=count%28%7B__name__%3D%22{name}%22%7D%29"),
        );
        let n: f64 = want["result"][0]["value"][1]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            m["value"].as_f64().unwrap() >= n,
            "{name}: the view counts the head's 2 hours, PromQL the last 5 minutes ({t})"
        );
    }
    assert!(t["headStats"]["numSeries"].as_u64().unwrap() > 100, "{t}");
    let (st, body) = http_get(agg.http, "/api/v1/status/tsdb?limit=0").unwrap();
    assert_eq!(st, 400, "{body}");

    // Targets: the agent (job telltale-agent) and its scrape job's target, both up.
    let targets = json(agg.http, "/api/v1/targets");
    let active = targets["activeTargets"].as_array().unwrap();
    assert!(
        active
            .iter()
            .any(|t| t["labels"]["instance"] == "web-1" && t["health"] == "up"),
        "{targets}"
    );
    assert!(
        active
            .iter()
            .any(|t| t["scrapePool"] == "self" && t["health"] == "up"),
        "{targets}"
    );

    // amtool reads the routing file and the cluster state from /api/v2/status.
    if let Some(amtool) = peer(AMTOOL, "prometheus-alertmanager") {
        let url = format!("--alertmanager.url=http://{}", agg.http);
        let out = Command::new(&amtool)
            .args([url.as_str(), "config", "show"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), routing.trim());
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("are different"),
            "{out:?}"
        );
        let out = Command::new(&amtool)
            .args([url.as_str(), "cluster", "show"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("disabled"),
            "{out:?}"
        );
    }
}

/// Starts `serve` with stderr into a file and `env`, waits for it to listen, stops it; the
/// lines it wrote.
fn serve_log(dir: &std::path::Path, env: &[(&str, String)], args: &[&str]) -> Vec<String> {
    use std::io::BufRead;
    let tls = dir.join("tls");
    if !tls.exists() {
        certs_init(&tls).expect("certs");
    }
    let log = dir.join("stderr.log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(telltale_tests::bin("telltale-aggregator").expect("binary"));
    cmd.arg("serve")
        .arg("--tls-dir")
        .arg(&tls)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--quic-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .env_remove("TELLTALE_LOG")
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::piped())
        .stderr(file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    assert!(line.contains("listening"), "{line}");
    let _ = child.kill();
    let _ = child.wait();
    std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn logs_take_per_module_levels_a_format_and_leave_timestamps_to_journald() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    // JSON lines, one module at info and the rest at warn.
    let lines = serve_log(
        dir.path(),
        &[(
            "TELLTALE_LOG",
            "warn,telltale_aggregator::serve=info".into(),
        )],
        &["--log-format", "json"],
    );
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(
        events.iter().any(|e| e["msg"] == "storage recovered"),
        "{lines:?}"
    );
    for e in &events {
        assert!(e["ts"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
        let info = e["level"] == "info";
        assert!(!info || e["target"] == "telltale_aggregator::serve", "{e}");
    }
    let recovered = events
        .iter()
        .find(|e| e["msg"] == "storage recovered")
        .unwrap();
    assert!(
        recovered["segments"].is_u64(),
        "numbers stay numbers: {recovered}"
    );

    // logfmt, with stderr the "journal": JOURNAL_STREAM names the file's device and inode.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    std::fs::write(&log, "").unwrap();
    let m = std::fs::metadata(&log).unwrap();
    let journal = format!("{}:{}", m.dev(), m.ino());
    // serve_log truncates the same file (same inode).
    let lines = serve_log(
        dir.path(),
        &[
            ("JOURNAL_STREAM", journal),
            ("TELLTALE_LOG_FORMAT", "logfmt".into()),
        ],
        &[],
    );
    let recovered = lines
        .iter()
        .find(|l| l.contains("msg=\"storage recovered\""))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(
        recovered.starts_with("level=info target=telltale_aggregator::serve"),
        "{recovered}"
    );
    assert!(
        lines.iter().all(|l| l.starts_with("level=")),
        "no timestamp: {lines:?}"
    );

    // A directive that does not parse: said once, and info is used.
    let dir = tempfile::tempdir().unwrap();
    let lines = serve_log(dir.path(), &[("RUST_LOG", "telltale=loud".into())], &[]);
    assert!(
        lines[0].contains("telltale=loud") && lines[0].contains("logging at info"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("storage recovered")),
        "{lines:?}"
    );
}

/// A restart with a WAL to replay: the HTTP port answers at once — healthy, and not ready
/// with how far recovery is — and every sample is there once it is ready.
#[test]
fn ready_says_how_far_recovery_is_until_it_is_done() {
    use telltale_common::model::{Labels, Sample, SeriesSamples};
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    certs_init(&tls).unwrap();
    let port = telltale_tests::free_port();
    let listen = format!("127.0.0.1:{port}");
    let start = |dir: &std::path::Path| {
        telltale_tests::start_aggregator(&tls, &dir.join("agg"), &listen, "127.0.0.1:0", &[])
            .unwrap()
    };
    let agg = start(dir.path());
    // 400 series × 2000 samples of the last 40 minutes in 40 writes: a WAL worth replaying
    // (recent, so it stays in the head rather than being cut into blocks).
    let t0 = telltale_common::model::now_ms() - 2_400_000;
    for w in 0..40 {
        let series: Vec<SeriesSamples> = (0..400)
            .map(|i| SeriesSamples {
                labels: Labels::from_pairs([
                    ("__name__", "replay_me"),
                    ("i", i.to_string().as_str()),
                ]),
                samples: (0..50)
                    .map(|k| Sample(t0 + (w * 50 + k) * 1200, k as f64))
                    .collect(),
            })
            .collect();
        telltale_tests::remote_write(agg.http, &series, None).unwrap();
    }
    // SIGKILL: nothing is compacted, everything is replayed.
    drop(agg);
    let mut cmd = Command::new(telltale_tests::bin("telltale-aggregator").unwrap());
    cmd.args(["serve", "--tls-dir"])
        .arg(&tls)
        .arg("--data-dir")
        .arg(dir.path().join("agg"))
        .args(["--http-listen", &listen, "--quic-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("restart.log")).unwrap());
    let mut child = cmd.spawn().unwrap();
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let mut seen = Vec::new();
    // Polled every few milliseconds (wait_for's 200 ms would miss a short recovery).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let ready_at = loop {
        if std::time::Instant::now() > deadline {
            break None;
        }
        let Ok(ready) = http_get(addr, "/-/ready") else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        if ready.0 == 200 {
            break Some(());
        }
        assert_eq!(ready.0, 503, "{ready:?}");
        let healthy = http_get(addr, "/-/healthy").expect("healthy answers");
        assert_eq!(healthy.0, 200, "healthy while recovering");
        seen.push(ready.1);
        std::thread::sleep(Duration::from_millis(2));
    };
    let total = ready_at.and_then(|()| {
        let v = telltale_tests::query(addr, "sum(count_over_time(replay_me[2h]))").ok()?;
        v.first()?["value"][1].as_str()?.parse::<f64>().ok()
    });
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(dir.path().join("restart.log")).unwrap_or_default();
    assert_eq!(
        total,
        Some(800_000.0),
        "ready, with every sample replayed\n{log}"
    );
    eprintln!(
        "/-/ready answered while recovering: {:?}",
        seen.iter().collect::<std::collections::BTreeSet<_>>()
    );
    assert!(!seen.is_empty(), "the port answered before ready");
    for s in &seen {
        assert!(s.starts_with("Telltale is not ready: "), "{s:?}");
        let known = [
            "reading series",
            "loading blocks",
            "replaying WAL",
            "opening the log store",
            "opening the trace store",
            "loading rules and alerting state",
        ];
        assert!(known.iter().any(|k| s.contains(k)), "{s:?}");
        if s.contains("replaying WAL") {
            assert!(s.contains(" % (") && s.contains(" segments, "), "{s:?}");
        }
    }
}

/// Man pages and completions come from the clap definitions: every flag of `run`/`serve` is
/// in the page, and each shell gets a script that names the binary.
#[test]
fn man_pages_and_completions_are_generated_from_the_flags() {
    for (bin, flags) in [
        (
            "telltale-agent",
            ["--aggregator", "--data-dir", "--interval"],
        ),
        (
            "telltale-aggregator",
            ["--http-listen", "--rules", "--api-token"],
        ),
    ] {
        let path = telltale_tests::bin(bin).unwrap();
        let out = Command::new(&path).arg("man").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let page = String::from_utf8(out.stdout).unwrap();
        assert!(page.contains(&format!(".TH {bin} 1")), "{page}");
        for f in flags {
            // roff escapes the dashes.
            assert!(
                page.contains(&f.replace('-', "\\-")),
                "{bin}: {f} missing from the man page"
            );
        }
        for shell in ["bash", "zsh", "fish"] {
            let out = Command::new(&path)
                .args(["completions", shell])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            assert!(
                String::from_utf8_lossy(&out.stdout).contains(bin),
                "{bin} {shell}"
            );
        }
        let out = Command::new(&path)
            .args(["completions", "tcsh"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
    }
}

/// The container recipe and the compose example name files that exist and flags the binaries
/// have (no container engine here to run them: this keeps them from rotting).
#[test]
fn the_container_recipe_and_compose_example_match_the_repository() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dockerfile = std::fs::read_to_string(root.join("packaging/container/Dockerfile")).unwrap();
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let src = line.split_whitespace().nth(1).unwrap();
        if src != "." {
            assert!(
                root.join(src).exists(),
                "Dockerfile copies {src}, which is not there"
            );
        }
    }
    let compose_dir = root.join("packaging/container");
    let compose = std::fs::read_to_string(compose_dir.join("compose.yml")).unwrap();
    for word in compose.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
        let path = word.trim_matches('"').split(':').next().unwrap_or("");
        if path.starts_with("./") || path.starts_with("../") {
            assert!(compose_dir.join(path).exists(), "compose.yml names {path}");
        }
    }
    // Every flag a service passes is one of its binary's.
    let help = |bin: &str, sub: &str| {
        let out = Command::new(telltale_tests::bin(bin).unwrap())
            .args([sub, "--help"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let (agent, serve) = (
        help("telltale-agent", "run"),
        help("telltale-aggregator", "serve"),
    );
    let mut checked = 0;
    for line in compose.lines() {
        let is_agent = line.contains("\"run\"")
            || line.contains("\"--aggregator\"")
            || line.contains("\"--ca\"")
            || line.contains("\"--key\"");
        for flag in line.split('"').filter(|w| w.starts_with("--")) {
            let known = if is_agent { &agent } else { &serve };
            assert!(
                known.contains(flag),
                "compose.yml passes {flag}, unknown to the binary"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked} flags checked");
}

/// HTTPS on the HTTP API with client certificates and a read token, driven by curl (OpenSSL):
/// a client with the CA, a certificate and the token reads; without the certificate the
/// handshake fails; without the token it is 401; plain HTTP gets nothing; a key that does not
/// fit stops `check-config` with exit 2.
#[test]
fn the_http_api_speaks_https_with_client_certificates_and_a_read_token() {
    let Some(curl) = peer("/usr/bin/curl", "curl") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    certs_init(&tls).unwrap();
    certs_issue(&tls, "grafana").unwrap();
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            "http_tls_cert = {:?}\nhttp_tls_key = {:?}\nhttp_client_ca = {:?}\nread_token = \"reader\"\n",
            tls.join("server.crt"),
            tls.join("server.key"),
            tls.join("ca.crt")
        ),
    )
    .unwrap();
    let c = cfg.display().to_string();
    let agg = telltale_tests::start_aggregator(
        &tls,
        &dir.path().join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--config", &c],
    )
    .unwrap();
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", agg.http.port());
    let run = |args: &[&str]| {
        let out = Command::new(&curl)
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let ca = tls.join("ca.crt").display().to_string();
    let cert = tls.join("agents/grafana.crt").display().to_string();
    let key = tls.join("agents/grafana.key").display().to_string();
    let q = url("/api/v1/query?query=vector(7)");
    let full = ["--cacert", &ca, "--cert", &cert, "--key", &key];
    let (code, out) = run(&[&full[..], &["-H", "Authorization: Bearer reader", &q]].concat());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("\"7\"") && out.ends_with("\n200"), "{out}");
    // The probe stays open to a client with a certificate but no token.
    let (_, out) = run(&[&full[..], &[url("/-/ready").as_str()]].concat());
    assert!(out.ends_with("\n200"), "{out}");
    // No token: 401.
    let (_, out) = run(&[&full[..], &[q.as_str()]].concat());
    assert!(out.ends_with("\n401"), "{out}");
    // No client certificate: the handshake fails.
    let (code, out) = run(&["--cacert", &ca, "-H", "Authorization: Bearer reader", &q]);
    assert_ne!(code, Some(0), "{out}");
    // Plain HTTP to the HTTPS port: no HTTP answer.
    let (_, out) = run(&[format!("http://{}/-/healthy", agg.http).as_str()]);
    assert!(!out.ends_with("\n200"), "{out}");

    // The agent scrapes that HTTPS endpoint as Prometheus would a secured target: CA, client
    // certificate and a bearer token from a file; a job without the token is refused (up 0).
    certs_issue(&tls, "web-1").unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "reader\n").unwrap();
    let agent_toml = dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "[[scrape]]\njob = \"secure\"\nscheme = \"https\"\ntargets = [\"127.0.0.1:{port}\"]\ninterval = \"1s\"\n\
             ca_file = {ca:?}\ncert_file = {cert:?}\nkey_file = {key:?}\nbearer_token_file = {token:?}\n\n\
             [[scrape]]\njob = \"no_token\"\nscheme = \"https\"\ntargets = [\"127.0.0.1:{port}\"]\ninterval = \"1s\"\n\
             ca_file = {ca:?}\ncert_file = {cert:?}\nkey_file = {key:?}\n",
            port = agg.http.port(),
        ),
    )
    .unwrap();
    let _agent = start_agent_with_config(
        &tls,
        "web-1",
        agg.quic,
        &dir.path().join("agent"),
        "1s",
        Some(&agent_toml),
    )
    .unwrap();
    let ups = wait_for(Duration::from_secs(60), || {
        let (_, out) = run(&[
            &full[..],
            &[
                "-H",
                "Authorization: Bearer reader",
                &url("/api/v1/query?query=up%7Bjob%3D~%22secure%7Cno_token%22%7D"),
            ],
        ]
        .concat());
        let body = out.rsplit_once('\n')?.0.to_string();
        let v: Value = serde_json::from_str(&body).ok()?;
        let mut ups: Vec<(String, String)> = v["data"]["result"]
            .as_array()?
            .iter()
            .map(|r| {
                (
                    r["metric"]["job"].as_str().unwrap_or("").to_string(),
                    r["value"][1].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        ups.sort();
        (ups.len() == 2).then_some(ups)
    })
    .expect("both scrape jobs report up");
    assert_eq!(
        ups,
        [
            ("no_token".to_string(), "0".to_string()),
            ("secure".to_string(), "1".to_string())
        ]
    );

    // A key that does not belong to the certificate: check-config names it, exit 2.
    std::fs::write(
        &cfg,
        format!(
            "http_tls_cert = {:?}\nhttp_tls_key = {:?}\n",
            tls.join("server.crt"),
            tls.join("agents/grafana.key")
        ),
    )
    .unwrap();
    let out = Command::new(telltale_tests::bin("telltale-aggregator").unwrap())
        .args(["check-config", "--config", &c, "--tls-dir"])
        .arg(&tls)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server.crt"),
        "{out:?}"
    );
    // A client CA without HTTPS: a config error naming the key.
    std::fs::write(&cfg, format!("http_client_ca = {:?}\n", tls.join("ca.crt"))).unwrap();
    let out = Command::new(telltale_tests::bin("telltale-aggregator").unwrap())
        .args(["check-config", "--config", &c])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("http_client_ca"),
        "{out:?}"
    );
}

/// `POST /api/v1/admin/tsdb/snapshot` (token) leaves a data directory another aggregator
/// serves the same samples from.
#[test]
fn a_snapshot_is_a_data_directory_with_the_samples() {
    use telltale_common::model::{Labels, Sample, SeriesSamples};
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    certs_init(&tls).unwrap();
    let agg = start_quick_aggregator(&tls, dir.path(), "tok", &[]).unwrap();
    let now = telltale_common::model::now_ms();
    let series: Vec<SeriesSamples> = (0..10)
        .map(|i| SeriesSamples {
            labels: Labels::from_pairs([("__name__", "snap_me"), ("i", i.to_string().as_str())]),
            samples: (0..60)
                .map(|k| Sample(now - 60_000 + k * 1000, k as f64))
                .collect(),
        })
        .collect();
    telltale_tests::remote_write(agg.http, &series, Some("tok")).unwrap();
    let (st, body) = telltale_tests::http_post_auth(
        agg.http,
        "/api/v1/admin/tsdb/snapshot",
        "application/json",
        b"",
        None,
    )
    .unwrap();
    assert_eq!(st, 401, "{body}");
    let (st, body) = telltale_tests::http_post_auth(
        agg.http,
        "/api/v1/admin/tsdb/snapshot",
        "application/json",
        b"",
        Some("tok"),
    )
    .unwrap();
    assert_eq!(st, 200, "{body}");
    let name = serde_json::from_str::<Value>(&body).unwrap()["data"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    // Written after the snapshot: not in it.
    let later: Vec<SeriesSamples> = vec![SeriesSamples {
        labels: Labels::from_pairs([("__name__", "after_snap")]),
        samples: vec![Sample(now, 1.0)],
    }];
    telltale_tests::remote_write(agg.http, &later, Some("tok")).unwrap();
    let snap = dir.path().join("agg/snapshots").join(&name);
    assert!(snap.join("series.log").is_file(), "{}", snap.display());
    let copy =
        telltale_tests::start_aggregator(&tls, &snap, "127.0.0.1:0", "127.0.0.1:0", &[]).unwrap();
    let count = |q: &str| {
        telltale_tests::query(copy.http, q)
            .unwrap()
            .first()
            .and_then(|v| v["value"][1].as_str().map(String::from))
    };
    assert_eq!(
        count("sum(count_over_time(snap_me[5m]))").as_deref(),
        Some("600")
    );
    assert_eq!(count("count(after_snap)"), None);
}

/// `delete_series` and `clean_tombstones` as Prometheus answers them: token required, 400 for
/// a bad call, 204 when done; the samples disappear from queries at once, stay deleted across
/// a restart, and a clean leaves the other series whole.
#[test]
fn delete_series_hides_samples_at_once_and_clean_tombstones_rewrites_the_blocks() {
    use telltale_common::model::{Labels, Sample, SeriesSamples};
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    certs_init(&tls).unwrap();
    let agg = start_quick_aggregator(&tls, dir.path(), "tok", &[]).unwrap();
    let now = telltale_common::model::now_ms() / 1000 * 1000;
    // 3 jobs × 4 instances, a sample a minute for the last 3 hours (so blocks get cut).
    let series: Vec<SeriesSamples> = (0..12)
        .map(|i| SeriesSamples {
            labels: Labels::from_pairs([
                ("__name__", "doomed"),
                ("job", ["a", "b", "c"][i % 3]),
                ("instance", i.to_string().as_str()),
            ]),
            samples: (0..180)
                .map(|k| Sample(now - 180 * 60_000 + k * 60_000, k as f64))
                .collect(),
        })
        .collect();
    telltale_tests::remote_write(agg.http, &series, Some("tok")).unwrap();
    let post = |path: &str, token: Option<&str>| {
        telltale_tests::http_post_auth(agg.http, path, "application/json", b"", token).unwrap()
    };
    let flush = post("/api/v1/admin/tsdb/flush", Some("tok"));
    assert_eq!(flush.0, 200, "{flush:?}");
    let count = |addr, q: &str| -> Option<f64> {
        telltale_tests::query(addr, q)
            .unwrap()
            .first()
            .and_then(|v| v["value"][1].as_str()?.parse().ok())
    };
    assert_eq!(
        count(agg.http, "count(count_over_time(doomed[4h]))"),
        Some(12.0)
    );
    let path = |q: &str| {
        format!(
            "/api/v1/admin/tsdb/delete_series?{}",
            q.replace('{', "%7B")
                .replace('}', "%7D")
                .replace('"', "%22")
        )
    };
    // No token, no selector, a bad selector, end before start: refused, nothing deleted.
    assert_eq!(post(&path(r#"match[]=doomed{job="a"}"#), None).0, 401);
    let (st, body) = post("/api/v1/admin/tsdb/delete_series", Some("tok"));
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("match[]"), "{body}");
    let (st, body) = post(&path("match[]=doomed{job="), Some("tok"));
    assert_eq!(st, 400, "{body}");
    let (st, body) = post(&path("match[]=doomed&start=100&end=50"), Some("tok"));
    assert_eq!(st, 400, "{body}");
    assert_eq!(
        count(agg.http, "count(count_over_time(doomed[4h]))"),
        Some(12.0)
    );
    // job="a": all of it. job="b": the first hour only (Unix seconds, as promtool and curl send).
    let (st, body) = post(&path(r#"match[]=doomed{job="a"}"#), Some("tok"));
    assert_eq!(st, 204, "{body}");
    // Up to just before the 61st sample: 60 of each series' 180 go.
    let end_s = (now - 120 * 60_000) / 1000 - 1;
    let (st, body) = post(
        &path(&format!(r#"match[]=doomed{{job="b"}}&start=0&end={end_s}"#)),
        Some("tok"),
    );
    assert_eq!(st, 204, "{body}");
    let check = |addr| {
        assert_eq!(
            count(addr, r#"count(count_over_time(doomed{job="a"}[4h]))"#),
            None
        );
        assert_eq!(
            count(addr, r#"sum(count_over_time(doomed{job="b"}[4h]))"#),
            Some(4.0 * 120.0),
            "b keeps the samples after the deleted hour"
        );
        assert_eq!(
            count(addr, r#"sum(count_over_time(doomed{job="c"}[4h]))"#),
            Some(4.0 * 180.0)
        );
        let (st, body) = telltale_tests::http_get(addr, "/api/v1/label/job/values").unwrap();
        assert_eq!(st, 200);
        assert!(!body.contains("\"a\"") && body.contains("\"b\""), "{body}");
    };
    check(agg.http);
    let (_, metrics) = telltale_tests::http_get(agg.http, "/metrics").unwrap();
    assert!(
        metrics.contains("telltale_aggregator_tombstones{what=\"series\"} 8"),
        "8 series have deletions"
    );
    // Deletions are durable: a restart (SIGKILL, WAL replayed) keeps them.
    drop(agg);
    let agg = start_quick_aggregator(&tls, dir.path(), "tok", &[]).unwrap();
    check(agg.http);
    let post = |path: &str, token: Option<&str>| {
        telltale_tests::http_post_auth(agg.http, path, "application/json", b"", token).unwrap()
    };
    assert_eq!(post("/api/v1/admin/tsdb/clean_tombstones", None).0, 401);
    let (st, body) = post("/api/v1/admin/tsdb/clean_tombstones", Some("tok"));
    assert_eq!(st, 204, "{body}");
    check(agg.http);
    let (_, metrics) = telltale_tests::http_get(agg.http, "/metrics").unwrap();
    assert!(
        metrics.contains("telltale_aggregator_tombstones{what=\"series\"} 0"),
        "the clean applied every deletion"
    );
    drop(agg);
    let agg = start_quick_aggregator(&tls, dir.path(), "tok", &[]).unwrap();
    check(agg.http);
}
