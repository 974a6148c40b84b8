//! Active health checks: HTTP(S), TCP connect, DNS resolution, and exec with Nagios plugin
//! conventions. Each runs on its own interval with a timeout and reports, labelled
//! `check="<name>"` plus the check's own labels:
//!
//! - `probe_success` (1/0) and `probe_duration_seconds`, as blackbox_exporter names them;
//! - `telltale_check_status`: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios' codes);
//! - HTTP: `probe_http_status_code`, and for HTTPS `probe_ssl_earliest_cert_expiry` (Unix
//!   seconds; the check is WARNING when it is closer than `cert_expiry_warning`);
//! - DNS: `probe_dns_answers`;
//! - exec: `telltale_check_perfdata{label,unit}` from the plugin's perfdata, values in base
//!   units (seconds, bytes);
//! - an event (`check_state`) whenever the state changes, with the message.
//!
//! Exec checks run the configured argv directly (never through a shell), with stdout capped at
//! 16 KiB and the process killed at the timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use regex_lite::Regex;
use telltale_common::model::{Labels, Sample, SeriesSamples, now_ms};
use telltale_common::wire::Event;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::pipeline::SourceBatch;
use crate::pipeline::relabel::Rule;

/// Nagios states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// 0
    Ok,
    /// 1
    Warning,
    /// 2
    Critical,
    /// 3
    Unknown,
}

impl State {
    fn code(self) -> f64 {
        match self {
            State::Ok => 0.0,
            State::Warning => 1.0,
            State::Critical => 2.0,
            State::Unknown => 3.0,
        }
    }

    /// The Nagios word.
    pub fn word(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }

    fn from_exit(code: Option<i32>) -> State {
        match code {
            Some(0) => State::Ok,
            Some(1) => State::Warning,
            Some(2) => State::Critical,
            _ => State::Unknown,
        }
    }
}

/// What a check probes.
#[derive(Debug, Clone)]
pub enum Probe {
    /// GET a URL.
    Http {
        /// The URL.
        url: hyper::Uri,
        /// Statuses that count as success (empty: 200-299).
        expect_status: Vec<u16>,
        /// A pattern the body must match.
        body_pattern: Option<Regex>,
        /// TLS for https.
        tls: Option<Arc<rustls::ClientConfig>>,
        /// WARNING when the certificate expires sooner than this.
        cert_expiry_warning: Duration,
    },
    /// Connect to `HOST:PORT`.
    Tcp {
        /// The address.
        address: String,
    },
    /// Resolve a name with the system resolver.
    Dns {
        /// The name.
        host: String,
        /// An address that must be among the answers.
        expect_address: Option<std::net::IpAddr>,
    },
    /// Run a Nagios-style plugin.
    Exec {
        /// argv; never run through a shell.
        command: Vec<String>,
    },
}

impl Probe {
    fn kind(&self) -> &'static str {
        match self {
            Probe::Http { .. } => "http",
            Probe::Tcp { .. } => "tcp",
            Probe::Dns { .. } => "dns",
            Probe::Exec { .. } => "exec",
        }
    }
}

/// One configured check.
#[derive(Debug, Clone)]
pub struct Check {
    /// The `check` label.
    pub name: String,
    /// Extra labels on every series of the check.
    pub labels: Vec<(String, String)>,
    /// How often.
    pub interval: Duration,
    /// Longest a run may take.
    pub timeout: Duration,
    /// What to probe.
    pub probe: Probe,
    /// Relabel rules for its series.
    pub relabel: Arc<[Rule]>,
}

/// An extra series of a check: metric name, extra labels, value.
pub type Extra = (&'static str, Vec<(String, String)>, f64);

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The state.
    pub state: State,
    /// One line for a person.
    pub message: String,
    /// Extra series (name, extra labels, value).
    pub extra: Vec<Extra>,
    /// How long the probe took.
    pub duration: Duration,
}

fn outcome(state: State, message: impl Into<String>) -> Outcome {
    Outcome {
        state,
        message: message.into(),
        extra: Vec::new(),
        duration: Duration::ZERO,
    }
}

/// Runs `check` once.
pub async fn run_once(check: &Check) -> Outcome {
    let started = Instant::now();
    let mut o = match tokio::time::timeout(check.timeout, probe(&check.probe)).await {
        Ok(o) => o,
        Err(_) => outcome(
            State::Critical,
            format!(
                "timed out after {}",
                humantime::format_duration(check.timeout)
            ),
        ),
    };
    o.duration = started.elapsed();
    o
}

async fn probe(p: &Probe) -> Outcome {
    match p {
        Probe::Http {
            url,
            expect_status,
            body_pattern,
            tls,
            cert_expiry_warning,
        } => {
            let r = match crate::sources::httpc::get(url, tls.as_ref(), &[], 1 << 20).await {
                Ok(r) => r,
                Err(e) => return outcome(State::Critical, e.to_string()),
            };
            let mut o = outcome(State::Ok, format!("HTTP {}", r.status));
            o.extra
                .push(("probe_http_status_code", Vec::new(), f64::from(r.status)));
            let status_ok = if expect_status.is_empty() {
                (200..300).contains(&r.status)
            } else {
                expect_status.contains(&r.status)
            };
            if !status_ok {
                o.state = State::Critical;
                o.message = format!("HTTP status {} is not the expected one", r.status);
            } else if let Some(re) = body_pattern
                && !re.is_match(&String::from_utf8_lossy(&r.body))
            {
                o.state = State::Critical;
                o.message = format!("body does not match {:?}", re.as_str());
            }
            if let Some(na) = r.cert_not_after {
                o.extra
                    .push(("probe_ssl_earliest_cert_expiry", Vec::new(), na as f64));
                let left = na - now_ms() / 1000;
                if left < 0 {
                    o.state = State::Critical;
                    o.message = "certificate expired".into();
                } else if (left as u64) < cert_expiry_warning.as_secs() && o.state == State::Ok {
                    o.state = State::Warning;
                    o.message = format!(
                        "certificate expires in {}",
                        humantime::format_duration(Duration::from_secs(left as u64))
                    );
                }
            }
            o
        }
        Probe::Tcp { address } => match tokio::net::TcpStream::connect(address.as_str()).await {
            Ok(_) => outcome(State::Ok, format!("connected to {address}")),
            Err(e) => outcome(State::Critical, format!("connect {address}: {e}")),
        },
        Probe::Dns {
            host,
            expect_address,
        } => match tokio::net::lookup_host((host.as_str(), 0)).await {
            Ok(addrs) => {
                let ips: Vec<std::net::IpAddr> = addrs.map(|a| a.ip()).collect();
                let mut o = outcome(
                    State::Ok,
                    format!("{host} resolves to {} addresses", ips.len()),
                );
                o.extra
                    .push(("probe_dns_answers", Vec::new(), ips.len() as f64));
                if let Some(want) = expect_address
                    && !ips.contains(want)
                {
                    o.state = State::Critical;
                    o.message = format!("{host} does not resolve to {want}");
                }
                o
            }
            Err(e) => outcome(State::Critical, format!("cannot resolve {host}: {e}")),
        },
        Probe::Exec { command } => exec(command).await,
    }
}

async fn exec(argv: &[String]) -> Outcome {
    let Some((prog, args)) = argv.split_first() else {
        return outcome(State::Unknown, "empty command");
    };
    let mut child = match tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return outcome(State::Unknown, format!("cannot run {prog}: {e}")),
    };
    let mut out = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let _ = stdout.take(16 * 1024).read_to_end(&mut out).await;
    }
    let status = match child.wait().await {
        Ok(s) => s,
        Err(e) => return outcome(State::Unknown, format!("{prog}: {e}")),
    };
    let text = String::from_utf8_lossy(&out);
    let first = text.lines().next().unwrap_or("").trim();
    let (message, perf) = match first.split_once('|') {
        Some((m, p)) => (m.trim(), p),
        None => (first, ""),
    };
    // Perfdata can continue on later lines after a second '|'.
    let mut perfdata = perf.to_string();
    if let Some((_, more)) = text
        .split_once('\n')
        .and_then(|(_, rest)| rest.split_once('|'))
    {
        perfdata.push(' ');
        perfdata.push_str(more);
    }
    let mut o = outcome(State::from_exit(status.code()), message.to_string());
    if status.code().is_none() {
        o.message = format!("{prog} was killed by a signal");
    }
    for (label, value, unit) in parse_perfdata(&perfdata) {
        o.extra.push((
            "telltale_check_perfdata",
            vec![("label".into(), label), ("unit".into(), unit.into())],
            value,
        ));
    }
    o
}

/// Parses Nagios perfdata (`'label'=value[UOM];warn;crit;min;max ...`) into
/// `(label, value in base units, unit)`. Items that do not parse are skipped.
pub fn parse_perfdata(s: &str) -> Vec<(String, f64, &'static str)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (label, after) = if let Some(r) = rest.strip_prefix('\'') {
            match r.split_once("'=") {
                Some((l, a)) => (l.to_string(), a),
                None => break,
            }
        } else {
            match rest.split_once('=') {
                Some((l, a)) => (l.trim().to_string(), a),
                None => break,
            }
        };
        let (item, next) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
        rest = next.trim_start();
        let value_uom = item.split(';').next().unwrap_or("");
        let split = value_uom
            .find(|c: char| {
                !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E')
            })
            .unwrap_or(value_uom.len());
        let (num, uom) = value_uom.split_at(split);
        let Ok(v) = num.parse::<f64>() else { continue };
        let (factor, unit) = match uom {
            "s" => (1.0, "seconds"),
            "ms" => (1e-3, "seconds"),
            "us" => (1e-6, "seconds"),
            "%" => (1.0, "percent"),
            "B" => (1.0, "bytes"),
            "KB" => (1024.0, "bytes"),
            "MB" => (1024.0 * 1024.0, "bytes"),
            "GB" => (1024.0 * 1024.0 * 1024.0, "bytes"),
            "TB" => (1024.0f64.powi(4), "bytes"),
            "c" => (1.0, "counter"),
            _ => (1.0, ""),
        };
        if !label.is_empty() {
            out.push((label, v * factor, unit));
        }
    }
    out
}

/// Turns an outcome into series at `t_ms`.
pub fn series(check: &Check, o: &Outcome, t_ms: i64) -> Vec<SeriesSamples> {
    let base = |name: &str, extra: &[(String, String)]| {
        let mut l = Labels::from_pairs(
            check
                .labels
                .iter()
                .chain(extra.iter())
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        l.set("check", &check.name);
        l.set("__name__", name);
        l
    };
    let one = |l: Labels, v: f64| SeriesSamples {
        labels: l,
        samples: vec![Sample(t_ms, v)],
    };
    let mut out = vec![
        one(
            base("probe_success", &[]),
            if o.state == State::Ok || o.state == State::Warning {
                1.0
            } else {
                0.0
            },
        ),
        one(
            base("probe_duration_seconds", &[]),
            o.duration.as_secs_f64(),
        ),
        one(base("telltale_check_status", &[]), o.state.code()),
    ];
    for (name, extra, v) in &o.extra {
        out.push(one(base(name, extra), *v));
    }
    out
}

/// Runs `check` every interval until the channel closes, sending series and state-change
/// events.
pub async fn run(check: Arc<Check>, tx: mpsc::Sender<SourceBatch>) {
    let source: Arc<str> = Arc::from(format!("check:{}", check.name));
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last: Option<State> = None;
    loop {
        tick.tick().await;
        let o = run_once(&check).await;
        let t = now_ms();
        let mut events = Vec::new();
        if last != Some(o.state) {
            let from = last.map(State::word).unwrap_or("NONE");
            let message = format!("{} is {}: {}", check.name, o.state.word(), o.message);
            if o.state == State::Ok {
                tracing::info!(check = %check.name, from, "{message}");
            } else {
                tracing::warn!(check = %check.name, from, "{message}");
            }
            let mut labels = vec![
                ("check".to_string(), check.name.clone()),
                ("from".to_string(), from.to_string()),
                ("to".to_string(), o.state.word().to_string()),
                ("type".to_string(), check.probe.kind().to_string()),
            ];
            labels.extend(check.labels.iter().cloned());
            labels.sort();
            events.push(Event {
                t_ms: t,
                kind: "check_state".into(),
                labels,
                message,
            });
            last = Some(o.state);
        }
        let b = SourceBatch {
            exemplars: Vec::new(),
            source: source.clone(),
            relabel: check.relabel.clone(),
            series: series(&check, &o, t),
            events,
        };
        if tx.send(b).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfdata_in_base_units() {
        let p = parse_perfdata("time=0.5s;1;2;0 size=2KB 'disk /'=80%;90;95 bad=x load1=0.3");
        assert_eq!(
            p,
            vec![
                ("time".into(), 0.5, "seconds"),
                ("size".into(), 2048.0, "bytes"),
                ("disk /".into(), 80.0, "percent"),
                ("load1".into(), 0.3, ""),
            ]
        );
    }

    #[tokio::test]
    async fn tcp_and_dns_checks_against_real_sockets_and_the_resolver() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let mk = |probe| Check {
            name: "c".into(),
            labels: Vec::new(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            probe,
            relabel: Arc::from(Vec::new()),
        };
        let ok = run_once(&mk(Probe::Tcp {
            address: addr.clone(),
        }))
        .await;
        assert_eq!(ok.state, State::Ok, "{}", ok.message);
        drop(l);
        let down = run_once(&mk(Probe::Tcp { address: addr })).await;
        assert_eq!(down.state, State::Critical);
        let dns = run_once(&mk(Probe::Dns {
            host: "localhost".into(),
            expect_address: Some("127.0.0.1".parse().unwrap()),
        }))
        .await;
        assert_eq!(dns.state, State::Ok, "{}", dns.message);
        let nx = run_once(&mk(Probe::Dns {
            host: "no-such-host.invalid".into(),
            expect_address: None,
        }))
        .await;
        assert_eq!(nx.state, State::Critical);
        let s = series(
            &mk(Probe::Tcp {
                address: String::new(),
            }),
            &nx,
            9,
        );
        assert_eq!(s[0].labels.metric_name(), Some("probe_success"));
        assert_eq!(s[0].samples[0].1, 0.0);
        assert_eq!(s[2].samples[0].1, 2.0);
    }
}
