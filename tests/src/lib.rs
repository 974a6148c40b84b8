//! The harness of Telltale's end-to-end tests, demo and benchmarks: it finds the real
//! binaries, makes certificates with `certs init`/`certs issue`, starts and kills processes,
//! and queries the HTTP API.
//!
//! The binaries come from the same `target/<profile>/` directory as the test or tool that
//! uses them. `cargo test --workspace` builds them (the agent and aggregator packages have
//! integration tests of their own, which makes cargo build their binaries first).

pub mod apidiff;
pub mod cascade;
pub mod chaos;
pub mod compliance;
pub mod decoders;
pub mod exposition;
pub mod faultproxy;
pub mod fuzz;
pub mod hostile;
pub mod peers;
pub mod routefuzz;
pub mod rulefuzz;
pub mod webdriver;
pub mod websocket;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// A whole number from the environment (a test's size or seed set by hand), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The directory holding the workspace's binaries for the current profile.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test executables live in target/<profile>/deps.
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of a workspace binary, failing with advice if it has not been built.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let p = bin_dir().join(name);
    if !p.exists() {
        bail!(
            "{} is missing: run `cargo test --workspace` (or `cargo build --workspace --bins`)",
            p.display()
        );
    }
    Ok(p)
}

/// A scratch directory with a CA made by `certs init` in `DIR/tls`; returns both.
pub fn scratch_with_ca() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    certs_init(&tls)?;
    Ok((dir, tls))
}

/// Runs `telltale-aggregator certs init` in `dir`.
pub fn certs_init(dir: &Path) -> anyhow::Result<()> {
    let st = Command::new(bin("telltale-aggregator")?)
        .args(["certs", "init", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(st.success(), "certs init failed: {st}");
    Ok(())
}

/// Runs `telltale-aggregator certs issue` for `agent`.
pub fn certs_issue(dir: &Path, agent: &str) -> anyhow::Result<()> {
    let st = Command::new(bin("telltale-aggregator")?)
        .args(["certs", "issue", "--dir"])
        .arg(dir)
        .args(["--agent", agent])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(st.success(), "certs issue failed: {st}");
    Ok(())
}

/// A child process whose stderr is captured (and echoed when `TELLTALE_TEST_LOG` is set),
/// killed when dropped.
pub struct Proc {
    /// The process.
    pub child: Child,
    log: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `cmd` with stdout piped (returned) and stderr captured.
    pub fn spawn(mut cmd: Command, tag: &str) -> anyhow::Result<(Proc, std::process::ChildStdout)> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if std::env::var_os("TELLTALE_LOG").is_none() {
            cmd.env("TELLTALE_LOG", "info");
        }
        let mut child = cmd.spawn().with_context(|| format!("cannot start {tag}"))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let log = Arc::new(Mutex::new(String::new()));
        let (l2, tag) = (log.clone(), tag.to_string());
        std::thread::spawn(move || {
            let echo = std::env::var_os("TELLTALE_TEST_LOG").is_some();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[{tag}] {line}");
                }
                if let Ok(mut g) = l2.lock() {
                    g.push_str(&line);
                    g.push('\n');
                }
            }
        });
        Ok((Proc { child, log }, stdout))
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log().contains(needle) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("log never contained {needle:?}; log:\n{}", self.log())
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for exit; returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running aggregator.
pub struct Aggregator {
    /// The process.
    pub proc: Proc,
    /// HTTP address.
    pub http: SocketAddr,
    /// QUIC address.
    pub quic: SocketAddr,
}

/// Starts `telltale-aggregator serve` with the given directories and addresses
/// (`127.0.0.1:0` picks free ports) and waits until it listens.
pub fn start_aggregator(
    tls_dir: &Path,
    data_dir: &Path,
    http: &str,
    quic: &str,
    extra: &[&str],
) -> anyhow::Result<Aggregator> {
    start_aggregator_command(aggregator_command(tls_dir, data_dir, http, quic, extra)?)
}

/// The `telltale-aggregator serve` command [`start_aggregator`] starts.
pub fn aggregator_command(
    tls_dir: &Path,
    data_dir: &Path,
    http: &str,
    quic: &str,
    extra: &[&str],
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(bin("telltale-aggregator")?);
    cmd.arg("serve")
        .arg("--tls-dir")
        .arg(tls_dir)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--http-listen", http, "--quic-listen", quic])
        .args(extra);
    Ok(cmd)
}

/// Starts an aggregator from a prepared `serve` command (extra environment, for example) and
/// waits until it listens.
pub fn start_aggregator_command(cmd: Command) -> anyhow::Result<Aggregator> {
    let (proc, stdout) = Proc::spawn(cmd, "aggregator")?;
    // The first line with `http=` (a wrapper such as heaptrack prints lines of its own first).
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    for _ in 0..20 {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.contains("http=") {
            break;
        }
    }
    let parse = |key: &str| -> anyhow::Result<SocketAddr> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .with_context(|| format!("aggregator did not start: {line:?}\n{}", proc.log()))?
            .parse()
            .context("bad address")
    };
    let http = parse("http=")?;
    let quic = parse("quic=")?;
    Ok(Aggregator { proc, http, quic })
}

/// Starts an aggregator on free loopback ports with its data in `dir/agg`, rule groups
/// evaluated every second (a config file `dir/agg.toml`) and the API token `token`; `extra`
/// flags are added.
pub fn start_quick_aggregator(
    tls_dir: &Path,
    dir: &Path,
    token: &str,
    extra: &[&str],
) -> anyhow::Result<Aggregator> {
    let cfg = dir.join("agg.toml");
    std::fs::write(&cfg, "[rules]\nevaluation_interval = \"1s\"\n")?;
    let cfg_arg = cfg.display().to_string();
    let mut args = vec!["--config", cfg_arg.as_str(), "--api-token", token];
    args.extend_from_slice(extra);
    start_aggregator(
        tls_dir,
        &dir.join("agg"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &args,
    )
}

/// Starts an aggregator on free loopback ports with its data in `dir/agg`.
pub fn start_fresh_aggregator(tls_dir: &Path, dir: &Path) -> anyhow::Result<Aggregator> {
    start_aggregator(tls_dir, &dir.join("agg"), "127.0.0.1:0", "127.0.0.1:0", &[])
}

/// Starts `telltale-agent run` with a certificate issued from `tls_dir` for `name`.
pub fn start_agent(
    tls_dir: &Path,
    name: &str,
    aggregator: SocketAddr,
    data_dir: &Path,
    interval: &str,
) -> anyhow::Result<Proc> {
    start_agent_with_config(tls_dir, name, aggregator, data_dir, interval, None)
}

/// Like [`start_agent`], reading `config` (an `agent.toml`) too; the flags still override.
pub fn start_agent_with_config(
    tls_dir: &Path,
    name: &str,
    aggregator: SocketAddr,
    data_dir: &Path,
    interval: &str,
    config: Option<&Path>,
) -> anyhow::Result<Proc> {
    let cmd = agent_command(tls_dir, name, aggregator, data_dir, interval, config)?;
    Ok(Proc::spawn(cmd, name)?.0)
}

/// The `telltale-agent run` command [`start_agent_with_config`] starts.
pub fn agent_command(
    tls_dir: &Path,
    name: &str,
    aggregator: SocketAddr,
    data_dir: &Path,
    interval: &str,
    config: Option<&Path>,
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(bin("telltale-agent")?);
    cmd.arg("run");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(["--name", name])
        .args(["--aggregator", &format!("localhost:{}", aggregator.port())])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--ca")
        .arg(tls_dir.join("ca.crt"))
        .arg("--cert")
        .arg(tls_dir.join(format!("agents/{name}.crt")))
        .arg("--key")
        .arg(tls_dir.join(format!("agents/{name}.key")))
        .args(["--interval", interval]);
    Ok(cmd)
}

/// A plain HTTP/1.0 GET; returns status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    http_get_auth(addr, path, None)
}

/// [`http_get`] with an optional bearer token.
pub fn http_get_auth(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")?;
    read_response(s)
}

/// Reads an HTTP/1.0 response to the end: status and body.
fn read_response(mut s: TcpStream) -> anyhow::Result<(u16, String)> {
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("malformed response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    Ok((status, body.to_string()))
}

/// A plain HTTP/1.0 POST; returns status and body.
pub fn http_post(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    http_post_auth(addr, path, content_type, body, None)
}

/// [`http_post`] with an optional bearer token.
pub fn http_post_auth(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &[u8],
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    read_response(s)
}

/// Pushes `series` to `/api/v1/write` (Prometheus remote_write) with the bearer `token`; an
/// answer other than 204 is an error naming it.
pub fn remote_write(
    addr: SocketAddr,
    series: &[telltale_common::model::SeriesSamples],
    token: Option<&str>,
) -> anyhow::Result<()> {
    let body = telltale_aggregator::api::remote_write::encode(series);
    let (st, b) = http_post_auth(
        addr,
        "/api/v1/write",
        "application/x-protobuf",
        &body,
        token,
    )?;
    if st != 204 {
        bail!("remote_write answered {st}: {b}");
    }
    Ok(())
}

/// Pushes `streams` to `/loki/api/v1/push` as Promtail sends them (protobuf + snappy) with
/// the bearer `token`; an answer other than 204 is an error naming it.
pub fn loki_push(
    http: SocketAddr,
    token: &str,
    streams: &[telltale_common::wire::LogStream],
) -> anyhow::Result<()> {
    let body = telltale_aggregator::logs::push::encode_protobuf(streams);
    let (status, resp) = http_post_auth(
        http,
        "/loki/api/v1/push",
        "application/x-protobuf",
        &body,
        Some(token),
    )?;
    anyhow::ensure!(status == 204, "push answered {status}: {resp}");
    Ok(())
}

/// Percent-encodes a query parameter.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs an instant query and returns `data.result`.
pub fn query(http: SocketAddr, q: &str) -> anyhow::Result<Vec<Value>> {
    let (status, body) = http_get(http, &format!("/api/v1/query?query={}", enc(q)))?;
    let v: Value = serde_json::from_str(&body).with_context(|| format!("bad JSON: {body}"))?;
    anyhow::ensure!(status == 200, "query {q:?} failed with {status}: {body}");
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Reads one counter or gauge from `/metrics`.
pub fn metric(http: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let (_, body) = http_get(http, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{name} not in /metrics"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for a listener to bind next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A UDP port on 127.0.0.1 that was free a moment ago (for a peer to bind next).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Polls `f` every 200 ms until it returns `Some` or the timeout passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The raw samples `(ms, value)` of `metric{instance=...}` over the last `range`.
pub fn raw_samples(
    http: SocketAddr,
    selector: &str,
    range: &str,
) -> anyhow::Result<Vec<(i64, f64)>> {
    let r = query(http, &format!("{selector}[{range}]"))?;
    let mut out = Vec::new();
    for s in r {
        for p in s["values"].as_array().cloned().unwrap_or_default() {
            let t = p[0].as_f64().unwrap_or(0.0);
            let v: f64 = p[1].as_str().unwrap_or("NaN").parse().unwrap_or(f64::NAN);
            out.push(((t * 1000.0).round() as i64, v));
        }
    }
    out.sort_by_key(|p| p.0);
    Ok(out)
}

/// An authenticated QUIC connection to the aggregator at `addr` as agent `name` (its
/// certificate issued in `tls`), with the hello (`epoch`) sent on its stream: for tests that
/// speak the protocol by hand.
pub async fn rogue_agent(
    tls: &Path,
    name: &str,
    addr: SocketAddr,
    epoch: u64,
) -> anyhow::Result<(
    quinn::Endpoint,
    quinn::Connection,
    quinn::SendStream,
    quinn::RecvStream,
)> {
    use telltale_common::wire::{ClientMessage, Hello};
    let paths = telltale_common::tls::TlsPaths {
        ca: tls.join("ca.crt"),
        cert: tls.join(format!("agents/{name}.crt")),
        key: tls.join(format!("agents/{name}.key")),
    };
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    ep.set_default_client_config(paths.load()?.client_config()?);
    let conn = ep.connect(addr, "localhost")?.await?;
    let (mut send, recv) = conn.open_bi().await?;
    let hello = telltale_common::codec::encode_frame(&ClientMessage::Hello(Hello {
        protocol_version: telltale_common::PROTOCOL_VERSION,
        agent_version: "test".into(),
        epoch,
        capabilities: Vec::new(),
        actions: Vec::new(),
        sources: Vec::new(),
    }))?;
    send.write_all(&hello).await?;
    Ok((ep, conn, send, recv))
}

/// A seed for a randomised test: `var` from the environment (to replay a failure), else the
/// clock; printed, so a failing run's output says how to replay it.
pub fn seed_from_env(var: &str) -> u64 {
    let s = std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| telltale_common::model::now_ms() as u64 | 1);
    eprintln!("{var}={s}");
    s
}
