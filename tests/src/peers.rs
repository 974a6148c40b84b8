//! Alerting peers for tests and benchmarks: a webhook receiver (records what it gets, answers
//! with a chosen status), and the real `nats-server` and `prometheus-alertmanager` from
//! Debian's packages, started on free loopback ports and stopped when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{Proc, http_get, wait_for};

/// `nats-server` from Debian's package.
pub const NATS_SERVER: &str = "/usr/sbin/nats-server";
/// `prometheus-alertmanager` from Debian's package.
pub const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
/// `prometheus-node-exporter` from Debian's package.
pub const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
/// `amtool` from the same package.
pub const AMTOOL: &str = "/usr/bin/amtool";

/// The peer at `path` if installed; without it a test fails in CI (`CI` set) and is skipped
/// with a printed reason elsewhere.
pub fn peer(path: &str, package: &str) -> Option<PathBuf> {
    if Path::new(path).exists() {
        return Some(PathBuf::from(path));
    }
    assert!(
        std::env::var("CI").is_err(),
        "{path} is missing in CI: .ci/run must install {package}"
    );
    eprintln!("skipped: {path} not installed (apt-get install {package})");
    None
}

/// A free TCP port on loopback.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// One request a [`WebhookSink`] received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Wall-clock receipt time (ms since the epoch), comparable with sample timestamps.
    pub at_ms: i64,
    /// Request path.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// The JSON body (`Null` if it was not JSON).
    pub body: Value,
}

/// A webhook receiver on a free loopback port.
pub struct WebhookSink {
    /// Its address.
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl WebhookSink {
    /// Starts one answering 200.
    pub fn start() -> anyhow::Result<WebhookSink> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s, st) = (got.clone(), status.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(c) = conn else { continue };
                let (g, s) = (g.clone(), s.clone());
                std::thread::spawn(move || {
                    let _ = serve_conn(c, &g, &s);
                });
            }
        });
        Ok(WebhookSink {
            addr,
            got,
            status,
            stop,
        })
    }

    /// The URL of `path` on it.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answer later requests with `status`.
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    /// Every request so far.
    pub fn all(&self) -> Vec<Received> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// The accepted (2xx) requests to `path`.
    pub fn accepted(&self, path: &str) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| r.path == path && (200..300).contains(&r.status))
            .collect()
    }

    /// Waits until `n` requests to `path` were accepted.
    pub fn wait(&self, path: &str, n: usize, timeout: Duration) -> anyhow::Result<Vec<Received>> {
        wait_for(timeout, || {
            let a = self.accepted(path);
            (a.len() >= n).then_some(a)
        })
        .with_context(|| {
            format!(
                "{n} notifications to {path} never arrived; got {:?}",
                self.all()
            )
        })
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_conn(c: TcpStream, got: &Mutex<Vec<Received>>, status: &AtomicU16) -> anyhow::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(c.try_clone()?);
    let mut w = c;
    // Keep-alive: serve requests until the client closes.
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        let at_ms = telltale_common::model::now_ms();
        let st = status.load(Ordering::Relaxed);
        if let Ok(mut g) = got.lock() {
            g.push(Received {
                at_ms,
                path,
                status: st,
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            });
        }
        write!(w, "HTTP/1.1 {st} X\r\nContent-Length: 0\r\n\r\n")?;
        w.flush()?;
    }
}

/// A running `nats-server` with JetStream.
pub struct Nats {
    /// The process.
    pub proc: Proc,
    /// Client port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Nats {
    /// Starts one (JetStream on, storage in a temporary directory).
    pub fn start(bin: &Path) -> anyhow::Result<Nats> {
        let dir = tempfile::tempdir()?;
        let port = free_tcp_port();
        let mut cmd = Command::new(bin);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path());
        let (proc, _out) = Proc::spawn(cmd, "nats-server")?;
        wait_for(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .with_context(|| format!("nats-server did not listen: {}", proc.log()))?;
        Ok(Nats {
            proc,
            port,
            _dir: dir,
        })
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A request over the plain NATS protocol (no client library): publishes `payload` to
    /// `subject` with a reply inbox and returns the reply's payload.
    pub fn request(&self, subject: &str, payload: &str) -> anyhow::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut info = String::new();
        r.read_line(&mut info)?;
        write!(
            s,
            "CONNECT {{\"verbose\":false}}\r\nSUB _INBOX.t 1\r\nPUB {subject} _INBOX.t {}\r\n{payload}\r\nPING\r\n",
            payload.len()
        )?;
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            let mut line = String::new();
            r.read_line(&mut line)?;
            if let Some(rest) = line.strip_prefix("MSG ") {
                let n: usize = rest
                    .split_whitespace()
                    .last()
                    .and_then(|x| x.parse().ok())
                    .context("bad MSG line")?;
                let mut buf = vec![0; n + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n);
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
            if line.starts_with("PING") {
                s.write_all(b"PONG\r\n")?;
            }
            if line.starts_with("-ERR") {
                bail!("NATS: {line}");
            }
        }
        bail!("no reply to {subject}")
    }

    /// The payloads stored in JetStream stream `stream`, oldest first.
    pub fn stream_messages(&self, stream: &str) -> anyhow::Result<Vec<Value>> {
        let info: Value =
            serde_json::from_str(&self.request(&format!("$JS.API.STREAM.INFO.{stream}"), "")?)?;
        let n = info["state"]["messages"].as_u64().unwrap_or(0);
        let first = info["state"]["first_seq"].as_u64().unwrap_or(1);
        let mut out = Vec::new();
        for seq in first..first + n {
            let m: Value = serde_json::from_str(&self.request(
                &format!("$JS.API.STREAM.MSG.GET.{stream}"),
                &format!("{{\"seq\":{seq}}}"),
            )?)?;
            let data = m["message"]["data"].as_str().unwrap_or("");
            out.push(serde_json::from_slice(&base64(data)?).unwrap_or(Value::Null));
        }
        Ok(out)
    }
}

fn base64(s: &str) -> anyhow::Result<Vec<u8>> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = A.iter().position(|x| *x == c).context("bad base64")? as u32;
        buf = buf << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// A running Alertmanager.
pub struct Alertmanager {
    /// The process.
    pub proc: Proc,
    /// Its HTTP address.
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts one with `config` (YAML), clustering off.
    pub fn start(bin: &Path, config: &str) -> anyhow::Result<Alertmanager> {
        let dir = tempfile::tempdir()?;
        let cfg = dir.path().join("alertmanager.yml");
        std::fs::write(&cfg, config)?;
        let port = free_tcp_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=");
        let (proc, _out) = Proc::spawn(cmd, "alertmanager")?;
        wait_for(Duration::from_secs(20), || {
            http_get(addr, "/-/ready").ok().filter(|(s, _)| *s == 200)
        })
        .with_context(|| format!("alertmanager did not become ready: {}", proc.log()))?;
        Ok(Alertmanager {
            proc,
            addr,
            _dir: dir,
        })
    }

    /// `GET /api/v2/alerts`.
    pub fn alerts(&self) -> anyhow::Result<Vec<Value>> {
        let (st, body) = http_get(self.addr, "/api/v2/alerts")?;
        anyhow::ensure!(st == 200, "alertmanager answered {st}: {body}");
        Ok(serde_json::from_str::<Value>(&body)?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

/// A tiny HTTP service that daemonizes itself (the action starts it and returns at once) and
/// writes its pid, so the test can kill it like a crash would.
pub const SERVICE: &str = r#"
import http.server, os, sys
port, pidfile = int(sys.argv[1]), sys.argv[2]
if os.fork() > 0:
    sys.exit(0)
os.setsid()
if os.fork() > 0:
    os._exit(0)
# A well-behaved daemon lets go of the stdio it was started with.
log = os.open(pidfile + ".log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
devnull = os.open(os.devnull, os.O_RDWR)
os.dup2(devnull, 0)
os.dup2(log, 1)
os.dup2(log, 2)
import time
for attempt in range(50):
    try:
        srv = http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit(1)
with open(pidfile, "w") as f:
    f.write(str(os.getpid()))
srv.serve_forever()
"#;

/// A daemonized service started from [`SERVICE`].
pub struct Service {
    /// Its port.
    pub port: u16,
    /// Its pid file.
    pub pidfile: PathBuf,
}

impl Service {
    /// Writes [`SERVICE`] to `dir/service.py` and starts it on `port` the way an action
    /// would (`python3 service.py PORT PIDFILE`), waiting until it answers.
    pub fn start(dir: &Path, port: u16) -> anyhow::Result<(Service, PathBuf)> {
        let script = dir.join("service.py");
        std::fs::write(&script, SERVICE)?;
        let svc = Service {
            port,
            pidfile: dir.join("service.pid"),
        };
        let st = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(&svc.pidfile)
            .status()?;
        anyhow::ensure!(st.success(), "the service did not start: {st}");
        wait_for(Duration::from_secs(10), || svc.alive().then_some(()))
            .context("the service does not answer")?;
        Ok((svc, script))
    }

    /// Whether it accepts connections.
    pub fn alive(&self) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }
    /// Kills it like a crash (SIGKILL).
    pub fn kill(&self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pidfile) {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid.trim()])
                .status();
        }
        let _ = std::fs::remove_file(&self.pidfile);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a `promtool test rules` file with `telltale-aggregator rules test` and, where
/// Debian's promtool is installed, with promtool too: both must pass it (the file is the
/// reference's verdict on what Telltale computes).
pub fn rules_test_on_both(test: &Path) {
    let ours = std::process::Command::new(crate::bin("telltale-aggregator").expect("built"))
        .args(["rules", "test"])
        .arg(test)
        .output()
        .expect("runs");
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stdout)
    );
    let Some(promtool) = peer("/usr/bin/promtool", "prometheus") else {
        return;
    };
    let theirs = std::process::Command::new(promtool)
        .args(["test", "rules"])
        .arg(test)
        .output()
        .expect("runs");
    assert!(
        theirs.status.success(),
        "{}{}",
        String::from_utf8_lossy(&theirs.stdout),
        String::from_utf8_lossy(&theirs.stderr)
    );
}

/// A running node_exporter on a free loopback port, killed when dropped.
pub struct NodeExporter {
    child: std::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl NodeExporter {
    /// Starts it with `args` after the listen address; `None` (test skipped) where it is not
    /// installed outside CI.
    pub fn start(args: &[String]) -> Option<NodeExporter> {
        if !Path::new(NODE_EXPORTER).exists() {
            assert!(
                std::env::var("CI").is_err(),
                "{NODE_EXPORTER} is missing in CI: .ci/run must install prometheus-node-exporter"
            );
            eprintln!(
                "skipped: {NODE_EXPORTER} not installed (apt-get install prometheus-node-exporter)"
            );
            return None;
        }
        let port = free_tcp_port();
        let child = Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Some(NodeExporter { child, addr })
    }

    /// Its `/metrics` page, waiting for it to listen.
    ///
    /// # Panics
    /// When it does not answer within 10 s.
    pub fn scrape(&self) -> String {
        wait_for(Duration::from_secs(10), || {
            http_get(self.addr, "/metrics").ok().map(|r| r.1)
        })
        .expect("node_exporter answers /metrics within 10 s")
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
