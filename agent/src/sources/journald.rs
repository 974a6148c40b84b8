//! The systemd journal (`[[log]]` with `type = "journald"`), read through `journalctl
//! --output=json --follow` (run directly, no shell), so the agent needs no libsystemd.
//!
//! Each entry's `MESSAGE` is the line; `PRIORITY` becomes `level` (0–3 error, 4 warn, 5–6
//! info, 7 debug) and `_SYSTEMD_UNIT` the `unit` label (units are few); hostname, syslog
//! identifier, PID and the transport travel as metadata; `__REALTIME_TIMESTAMP` is the time.
//! The journal cursor of the last entry in a batch is that source's position, written with
//! the batch like a file's offset, and a restart continues after it (`--after-cursor`). At
//! the first start the source begins at the journal's end (`start_at = "beginning"` reads
//! it all).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use telltale_common::model::now_ms;
use telltale_common::wire::LogEntry;
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;

use super::logbatch::{Admission, Gate, LogBatcher, cut_line};
use super::logfile::LogStats;
use crate::pipeline::logsink::LogSink;

/// A validated journald source.
#[derive(Debug, Clone)]
pub struct JournaldSource {
    /// The `source` label.
    pub name: String,
    /// Start at the journal's end the first time (else its beginning).
    pub start_at_end: bool,
    /// Static labels.
    pub labels: Vec<(String, String)>,
    /// Longer messages are cut (and counted).
    pub max_line_bytes: usize,
    /// Rate limit and counters.
    pub admission: Admission,
    /// The `journalctl` to run: `/usr/bin/journalctl` (an absolute path, never looked up).
    pub journalctl: String,
}

/// An entry as the agent keeps it, and its cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The cursor (the position after this entry).
    pub cursor: String,
    /// `level`.
    pub level: &'static str,
    /// `unit` (empty when the entry has none).
    pub unit: String,
    /// The line.
    pub entry: LogEntry,
}

/// `MESSAGE` is a string, or an array of bytes when it is not UTF-8.
fn message(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) => {
            let bytes: Vec<u8> = a
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        _ => None,
    }
}

/// Parses one line of `journalctl --output=json`.
pub fn parse(line: &str) -> Option<Entry> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let cursor = field("__CURSOR")?;
    let msg = v.get("MESSAGE").and_then(message).unwrap_or_default();
    let t_ns = field("__REALTIME_TIMESTAMP")
        .and_then(|t| t.parse::<i64>().ok())
        .map(|us| us.saturating_mul(1000))
        .unwrap_or_else(|| now_ms().saturating_mul(1_000_000));
    let level = match field("PRIORITY").and_then(|p| p.parse::<u8>().ok()) {
        Some(0..=3) => "error",
        Some(4) => "warn",
        Some(5 | 6) => "info",
        Some(7) => "debug",
        _ => "unknown",
    };
    let metadata = [
        ("_HOSTNAME", "hostname"),
        ("SYSLOG_IDENTIFIER", "identifier"),
        ("_PID", "pid"),
        ("_TRANSPORT", "transport"),
    ]
    .into_iter()
    .filter_map(|(k, name)| field(k).map(|v| (name.to_string(), v)))
    .collect();
    Some(Entry {
        cursor,
        level,
        unit: field("_SYSTEMD_UNIT").unwrap_or_default(),
        entry: LogEntry {
            t_ns,
            line: msg,
            metadata,
        },
    })
}

fn key(source: &str) -> Vec<u8> {
    format!("journald\0{source}").into_bytes()
}

/// Runs a journald source until `stop`: follows the journal, pushes a batch (with the cursor
/// of its last entry) every second or 512 KiB. Without `journalctl`, or when it ends, the
/// source logs why and waits 10 s before trying again.
pub async fn run(
    cfg: JournaldSource,
    sink: Arc<dyn LogSink>,
    stats: Arc<LogStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut gate = Gate::new(&cfg.name, cfg.admission.clone());
    loop {
        let cursor = sink
            .position(&key(&cfg.name))
            .and_then(|c| String::from_utf8(c).ok());
        let mut cmd = tokio::process::Command::new(&cfg.journalctl);
        cmd.args(["--output=json", "--follow", "--no-pager"]);
        match &cursor {
            Some(c) => {
                cmd.arg(format!("--after-cursor={c}"));
            }
            None if cfg.start_at_end => {
                cmd.args(["--lines=0"]);
            }
            None => {
                cmd.args(["--lines=all"]);
            }
        }
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(source = %cfg.name, journalctl = %cfg.journalctl, error = %e, "cannot run journalctl; retrying in 10 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(10)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        let Some(out) = child.stdout.take() else {
            return;
        };
        let mut lines = tokio::io::BufReader::new(out).lines();
        let mut batch = LogBatcher::default();
        let mut last_cursor: Option<String> = None;
        let mut since = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let ended = loop {
            let (flush, ended) = tokio::select! {
                l = lines.next_line() => match l {
                    Ok(Some(l)) => {
                        if let Some(mut e) = parse(&l) {
                            stats.lines.fetch_add(1, Ordering::Relaxed);
                            stats.bytes.fetch_add(e.entry.line.len() as u64, Ordering::Relaxed);
                            if cut_line(&mut e.entry.line, cfg.max_line_bytes) {
                                stats.cut.fetch_add(1, Ordering::Relaxed);
                            }
                            last_cursor = Some(e.cursor.clone());
                            if gate.admit(&stats.counts, e.level, &e.entry.line) {
                                let mut labels = cfg.labels.clone();
                                labels.push(("source".into(), cfg.name.clone()));
                                labels.push(("level".into(), e.level.into()));
                                if !e.unit.is_empty() {
                                    labels.push(("unit".into(), e.unit.clone()));
                                }
                                batch.add(labels, e.entry);
                            }
                        } else {
                            stats.malformed.fetch_add(1, Ordering::Relaxed);
                        }
                        (batch.full(), false)
                    }
                    _ => (true, true),
                },
                _ = tick.tick() => (since.elapsed() >= Duration::from_secs(1), false),
                _ = stop.changed() => (true, true),
            };
            if flush && let Some(c) = last_cursor.take() {
                since = Instant::now();
                let b = super::logbatch::batch_of(batch.take());
                let pos = vec![(key(&cfg.name), c.into_bytes())];
                if let Err(e) = sink.store(b, pos, Vec::new()).await {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(source = %cfg.name, error = %e, "journal lines could not be buffered: they are read again after a restart");
                }
            }
            if ended {
                break *stop.borrow();
            }
        };
        let _ = child.kill().await;
        if ended {
            return;
        }
        tracing::warn!(source = %cfg.name, "journalctl ended; following again in 10 s");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_json_lines_parse() {
        // As `journalctl --output=json` writes them (fields from systemd.journal-fields(7)).
        let e = parse(r#"{"__CURSOR":"s=abc;i=1f","__REALTIME_TIMESTAMP":"1700000000123456","PRIORITY":"3","_SYSTEMD_UNIT":"nginx.service","_HOSTNAME":"web-1","SYSLOG_IDENTIFIER":"nginx","_PID":"812","MESSAGE":"upstream timed out"}"#).expect("entry");
        assert_eq!(e.cursor, "s=abc;i=1f");
        assert_eq!((e.level, e.unit.as_str()), ("error", "nginx.service"));
        assert_eq!(e.entry.t_ns, 1_700_000_000_123_456_000);
        assert_eq!(e.entry.line, "upstream timed out");
        assert!(
            e.entry
                .metadata
                .contains(&("pid".to_string(), "812".to_string()))
        );
        // A message that is not UTF-8 comes as an array of bytes.
        let e = parse(r#"{"__CURSOR":"c","MESSAGE":[104,105,255]}"#).expect("bytes");
        assert_eq!((e.entry.line.as_str(), e.level), ("hi\u{fffd}", "unknown"));
        assert!(parse("not json").is_none());
        assert!(parse(r#"{"MESSAGE":"no cursor"}"#).is_none());
    }
}
