//! Syslog on the agent (`[[log]]` with `type = "syslog"`): RFC 5424 and RFC 3164 messages
//! over UDP (one message per datagram) and TCP (octet-counted as RFC 6587 describes, or one
//! message per line), both on the source's `listen` address.
//!
//! A message's severity becomes the `level` label (0–3 error, 4 warn, 5–6 info, 7 debug);
//! hostname, app name, process id, message id, facility and structured data travel as
//! structured metadata (they would make too many streams as labels). The timestamp is the
//! message's own when it has a full one (RFC 5424), else the time it arrived. A message that
//! does not parse is kept whole, with level `unknown`, and counted.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use telltale_common::model::now_ms;
use telltale_common::wire::LogEntry;
use tokio::sync::watch;

use super::logbatch::{BadMessage, Gate, LogBatcher};
use super::logfile::LogStats;
use crate::pipeline::logsink::LogSink;

/// A validated syslog source.
#[derive(Debug, Clone)]
pub struct SyslogSource {
    /// The `source` label.
    pub name: String,
    /// Where to listen (UDP and TCP).
    pub listen: SocketAddr,
    /// Static labels.
    pub labels: Vec<(String, String)>,
    /// Longer messages are cut (and counted).
    pub max_line_bytes: usize,
    /// Rate limit and counters.
    pub admission: super::logbatch::Admission,
}

/// A parsed message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    /// Its own timestamp (ns), when it has a full one.
    pub t_ns: Option<i64>,
    /// 0–7.
    pub severity: u8,
    /// 0–23.
    pub facility: u8,
    /// Fields as metadata (`hostname`, `app_name`, `procid`, `msgid`, `sd`).
    pub fields: Vec<(String, String)>,
    /// The message text.
    pub msg: String,
}

fn nil(s: &str) -> Option<&str> {
    (s != "-" && !s.is_empty()).then_some(s)
}

/// Splits off the next space-separated field.
fn field(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(' ');
    if s.is_empty() {
        return None;
    }
    Some(match s.find(' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    })
}

/// RFC 5424 structured data: `-` or `[id k="v"]...` (quotes may hold escaped `"`, `\`, `]`).
fn structured(s: &str) -> Option<(&str, &str)> {
    if let Some(rest) = s.strip_prefix('-') {
        return Some(("", rest.strip_prefix(' ').unwrap_or(rest)));
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i] == b'[' {
        let mut quoted = false;
        i += 1;
        loop {
            let c = *b.get(i)?;
            match c {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b']' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        i += 1;
    }
    if i == 0 {
        return None;
    }
    let rest = &s[i..];
    Some((&s[..i], rest.strip_prefix(' ').unwrap_or(rest)))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses one message (RFC 5424 when the version `1` follows the priority, else RFC 3164).
pub fn parse(raw: &str) -> Result<Message, BadMessage> {
    let raw = raw.trim_end_matches(['\n', '\r', '\0']);
    let rest = raw.strip_prefix('<').ok_or(BadMessage("no <priority>"))?;
    let end = rest
        .find('>')
        .filter(|&e| (1..=3).contains(&e))
        .ok_or(BadMessage("bad <priority>"))?;
    let pri: u8 = rest[..end]
        .parse()
        .map_err(|_| BadMessage("bad <priority>"))?;
    if pri > 191 {
        return Err(BadMessage("priority above 191"));
    }
    let mut m = Message {
        severity: pri % 8,
        facility: pri / 8,
        ..Message::default()
    };
    let rest = &rest[end + 1..];
    if let Some(r) = rest.strip_prefix("1 ") {
        let (ts, r) = field(r).ok_or(BadMessage("no timestamp"))?;
        let (host, r) = field(r).ok_or(BadMessage("no hostname"))?;
        let (app, r) = field(r).ok_or(BadMessage("no app name"))?;
        let (procid, r) = field(r).ok_or(BadMessage("no process id"))?;
        let (msgid, r) = field(r).ok_or(BadMessage("no message id"))?;
        let (sd, msg) =
            structured(r.trim_start_matches(' ')).ok_or(BadMessage("bad structured data"))?;
        m.t_ns = nil(ts).and_then(|t| {
            humantime::parse_rfc3339_weak(t.trim_end_matches('Z'))
                .ok()
                .or_else(|| humantime::parse_rfc3339(t).ok())
                .and_then(|st| st.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        });
        for (k, v) in [
            ("hostname", nil(host)),
            ("app_name", nil(app)),
            ("procid", nil(procid)),
            ("msgid", nil(msgid)),
            ("sd", nil(sd)),
        ] {
            if let Some(v) = v {
                m.fields.push((k.to_string(), v.to_string()));
            }
        }
        m.msg = msg.trim_start_matches('\u{feff}').to_string();
        return Ok(m);
    }
    // RFC 3164: "Mmm dd hh:mm:ss HOST TAG[PID]: MSG", every part optional in practice.
    let mut r = rest;
    // `get`: the first bytes may be inside a multi-byte character (found by fuzzing: a
    // message such as `<34>é…` panicked the listener).
    if r.len() >= 16
        && r.get(..3).is_some_and(|m| MONTHS.contains(&m))
        && r.as_bytes().get(15) == Some(&b' ')
        && r.as_bytes()[9] == b':'
    {
        r = &r[16..];
        if let Some((host, after)) = field(r) {
            m.fields.push(("hostname".into(), host.to_string()));
            r = after;
        }
    }
    if let Some(colon) = r.find(": ").filter(|&c| c <= 48 && !r[..c].contains(' ')) {
        let tag = &r[..colon];
        let (app, pid) = match tag.split_once('[') {
            Some((a, p)) => (a, Some(p.trim_end_matches(']'))),
            None => (tag, None),
        };
        if !app.is_empty() {
            m.fields.push(("app_name".into(), app.to_string()));
        }
        if let Some(p) = pid {
            m.fields.push(("procid".into(), p.to_string()));
        }
        r = &r[colon + 2..];
    }
    m.msg = r.to_string();
    Ok(m)
}

fn level(severity: u8) -> &'static str {
    match severity {
        0..=3 => "error",
        4 => "warn",
        5 | 6 => "info",
        _ => "debug",
    }
}

/// Turns a received message into a line of the batch.
fn take(
    cfg: &SyslogSource,
    stats: &LogStats,
    gate: &Mutex<Gate>,
    batch: &Mutex<LogBatcher>,
    raw: &[u8],
) {
    stats.lines.fetch_add(1, Ordering::Relaxed);
    stats.bytes.fetch_add(raw.len() as u64, Ordering::Relaxed);
    let text = String::from_utf8_lossy(raw);
    let (lvl, mut entry) = match parse(&text) {
        Ok(m) => {
            let mut fields = m.fields;
            fields.push(("facility".into(), m.facility.to_string()));
            (
                level(m.severity),
                LogEntry {
                    t_ns: m.t_ns.unwrap_or_else(|| now_ms().saturating_mul(1_000_000)),
                    line: m.msg,
                    metadata: fields,
                },
            )
        }
        Err(why) => {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(source = %cfg.name, %why, "malformed syslog message kept whole");
            (
                "unknown",
                LogEntry {
                    t_ns: now_ms().saturating_mul(1_000_000),
                    line: text.trim_end_matches(['\n', '\r', '\0']).to_string(),
                    metadata: Vec::new(),
                },
            )
        }
    };
    if super::logbatch::cut_line(&mut entry.line, cfg.max_line_bytes) {
        stats.cut.fetch_add(1, Ordering::Relaxed);
    }
    let admitted = gate
        .lock()
        .map(|mut g| g.admit(&stats.counts, lvl, &entry.line))
        .unwrap_or(true);
    if !admitted {
        return;
    }
    let mut labels = cfg.labels.clone();
    labels.push(("source".into(), cfg.name.clone()));
    labels.push(("level".into(), lvl.into()));
    if let Ok(mut b) = batch.lock() {
        b.add(labels, entry);
    }
}

/// Reads one TCP connection: octet-counted frames (`LEN SP MSG`) or newline-separated
/// messages, told apart by the first byte of each. Bounded by [`super::streams`]: closed after its idle time, and when its unfinished
/// message would take the source past its buffer budget.
async fn connection(
    mut s: tokio::net::TcpStream,
    (cfg, stats, gate, batch): super::streams::Shared<SyslogSource>,
    activity: super::streams::Activity,
    mut held: super::streams::Reservation,
) {
    let max = cfg.max_line_bytes + 64;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Take every whole message in the buffer.
        while let Some(&first) = buf.first() {
            if first.is_ascii_digit() {
                let Some(sp) = buf.iter().take(12).position(|&b| b == b' ') else {
                    if buf.len() >= 12 {
                        stats.malformed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    break;
                };
                let Some(len) = std::str::from_utf8(&buf[..sp])
                    .ok()
                    .and_then(|l| l.parse::<usize>().ok())
                else {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                if len > max {
                    // Refused rather than buffered: a sender cannot make the agent hold more.
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(source = %cfg.name, len, "syslog frame over the size limit: connection closed");
                    return;
                }
                if buf.len() < sp + 1 + len {
                    break;
                }
                take(&cfg, &stats, &gate, &batch, &buf[sp + 1..sp + 1 + len]);
                buf.drain(..sp + 1 + len);
            } else if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                take(&cfg, &stats, &gate, &batch, &buf[..nl]);
                buf.drain(..=nl);
            } else if buf.len() > max {
                take(&cfg, &stats, &gate, &batch, &buf[..max]);
                buf.clear();
            } else {
                break;
            }
        }
        if !held.hold(buf.len()) {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(source = %cfg.name, bytes = buf.len(), "syslog senders together hold more unfinished messages than the source's buffer budget: connection closed");
            return;
        }
        match super::streams::read(&mut s, &mut chunk, &activity).await {
            0 => {
                if !buf.is_empty() && !buf[0].is_ascii_digit() {
                    take(&cfg, &stats, &gate, &batch, &buf);
                }
                return;
            }
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Binds the source's UDP and TCP sockets.
pub async fn bind(
    cfg: &SyslogSource,
) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let udp = tokio::net::UdpSocket::bind(cfg.listen).await?;
    let tcp = tokio::net::TcpListener::bind(cfg.listen).await?;
    Ok((udp, tcp))
}

/// Runs a syslog source until `stop`: receives, batches every second (or 512 KiB), and hands
/// the batches to the sink.
pub async fn run(
    cfg: SyslogSource,
    sink: Arc<dyn LogSink>,
    stats: Arc<LogStats>,
    mut stop: watch::Receiver<bool>,
) {
    let (udp, tcp) = match bind(&cfg).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(source = %cfg.name, listen = %cfg.listen, error = %e, "cannot listen for syslog; running without this source");
            return;
        }
    };
    tracing::info!(source = %cfg.name, listen = %cfg.listen, "syslog listener started (UDP and TCP)");
    let cfg = Arc::new(cfg);
    let batch = Arc::new(Mutex::new(LogBatcher::default()));
    let gate = Arc::new(Mutex::new(Gate::new(&cfg.name, cfg.admission.clone())));
    let mut conns = super::streams::Conns::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut dgram = vec![0u8; 65_536];
    loop {
        let flush = tokio::select! {
            r = udp.recv_from(&mut dgram) => {
                if let Ok((n, _)) = r {
                    take(&cfg, &stats, &gate, &batch, &dgram[..n]);
                }
                batch.lock().map(|b| b.full()).unwrap_or(false)
            }
            a = tcp.accept() => {
                if let Ok((s, _)) = a {
                    let shared = (cfg.clone(), stats.clone(), gate.clone(), batch.clone());
                    if conns.spawn(|act, held| connection(s, shared, act, held)) {
                        tracing::info!(source = %cfg.name, "syslog connections at their limit: the one idle longest was closed");
                    }
                }
                false
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => false,
            _ = tick.tick() => true,
            _ = stop.changed() => true,
        };
        if flush {
            super::logbatch::flush(&batch, sink.as_ref(), &cfg.name).await;
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multibyte_character_after_the_priority_is_a_message_not_a_panic() {
        for raw in [
            "<34>é Oct 11 22:14:15 x",
            "<34>1\u{fffd}2003-10-11T22:14:35Z h a 1 I - m",
            "<13>Ja\u{e9}",
        ] {
            let m = parse(raw).expect("parses as RFC 3164");
            assert!(!m.msg.is_empty(), "{raw:?}");
        }
    }

    #[test]
    fn rfc5424_and_rfc3164_parse() {
        let m = parse(r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Appl\"ication" eventID="1011"] BOMAn application event log entry"#).expect("5424");
        assert_eq!((m.facility, m.severity), (20, 5));
        assert_eq!(m.t_ns, Some(1_065_910_455_003_000_000));
        assert_eq!(m.msg, "BOMAn application event log entry");
        assert!(
            m.fields
                .contains(&("hostname".into(), "mymachine.example.com".into()))
        );
        assert!(m.fields.contains(&("msgid".into(), "ID47".into())));
        assert!(
            m.fields
                .iter()
                .any(|(k, v)| k == "sd" && v.ends_with("eventID=\"1011\"]"))
        );
        let m = parse("<34>1 - - - - - -").expect("all nil");
        assert_eq!((m.msg.as_str(), m.t_ns), ("", None));
        let m = parse("<13>Dec  2 08:20:00 web-1 sshd[812]: Accepted publickey").expect("3164");
        assert_eq!(m.severity, 5);
        assert_eq!(m.msg, "Accepted publickey");
        assert!(m.fields.contains(&("app_name".into(), "sshd".into())));
        assert!(m.fields.contains(&("procid".into(), "812".into())));
        assert!(m.fields.contains(&("hostname".into(), "web-1".into())));
        assert_eq!(parse("<11>just text").expect("bare").msg, "just text");
        for bad in ["no priority", "<>x", "<999>x", "<12", "<1x>y"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        for _ in 0..500 {
            let n = rand::random::<u8>() as usize % 60;
            let alphabet = b"<>1 -[]\"\\=:aZ09 ";
            let junk: String = (0..n)
                .map(|_| alphabet[rand::random::<u8>() as usize % alphabet.len()] as char)
                .collect();
            let _ = parse(&junk);
        }
    }
}
