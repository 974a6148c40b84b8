//! The vocabulary rules, alerting and remediation share, so that the dependency arrows run
//! one way (rules → alert ← alerting, alert ← remediate): what an [`Alert`] is and its
//! identity ([`fingerprint`]), where alerts go ([`Notifier`]), label matchers in
//! Alertmanager's syntax ([`matchers`]), the Go-template subset of annotations, notification
//! texts and runbook arguments ([`template`]), and the duration and time formats of their files.

pub mod matchers;
pub mod store;
pub mod template;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use telltale_common::config::Invalid;
use telltale_common::model::Labels;

/// An alert, as Alertmanager holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Identifying labels (`alertname` among them).
    pub labels: Labels,
    /// Descriptive annotations.
    pub annotations: Labels,
    /// When it started (ms).
    pub starts_at: i64,
    /// When it ends or ended (ms); 0 = unknown. An alert whose end has passed is resolved.
    pub ends_at: i64,
    /// Link back to the rule's expression.
    pub generator_url: String,
}

impl Alert {
    /// The alert's identity: a hash of its labels.
    pub fn fingerprint(&self) -> u64 {
        fingerprint(&self.labels)
    }

    /// Whether it is resolved at `now`.
    pub fn resolved_at(&self, now: i64) -> bool {
        self.ends_at != 0 && self.ends_at <= now
    }

    /// Priority from the `severity` label: 0 (most urgent) to 3.
    pub fn priority(&self) -> u8 {
        priority_of(&self.labels)
    }
}

/// Priority from a `severity` (or `priority`) label: critical/page/P1 → 0, error/high/P2 → 1,
/// warning/P3 → 2, anything else → 3. Notifications and escalations are handled in this order.
pub fn priority_of(labels: &Labels) -> u8 {
    let s = labels
        .get("severity")
        .or_else(|| labels.get("priority"))
        .unwrap_or("")
        .to_ascii_lowercase();
    match s.as_str() {
        "critical" | "page" | "emergency" | "p1" | "fatal" => 0,
        "error" | "high" | "major" | "p2" => 1,
        "warning" | "warn" | "medium" | "p3" => 2,
        _ => 3,
    }
}

/// FNV-1a over the sorted label pairs, each name and value followed by 0xff (the shape of
/// Alertmanager's fingerprint), as a stable identity.
pub fn fingerprint(labels: &Labels) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h ^= x as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (k, v) in labels.iter() {
        eat(k.as_bytes());
        eat(&[0xff]);
        eat(v.as_bytes());
        eat(&[0xff]);
    }
    h
}

/// A fingerprint as Alertmanager prints it (16 hex digits).
pub fn fingerprint_hex(fp: u64) -> String {
    format!("{fp:016x}")
}

/// Milliseconds as RFC 3339 with milliseconds (`0001-01-01T00:00:00Z` for 0, like Go's zero time).
pub fn rfc3339(ms: i64) -> String {
    if ms <= 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses RFC 3339 into milliseconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, Invalid> {
    if s.starts_with("0001-01-01") {
        return Ok(0);
    }
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z').trim_end_matches("+00:00"))
        .map_err(|e| format!("invalid time {s:?}: {e}"))?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| Invalid(format!("invalid time {s:?}: {e}")))
}

/// Where alerts go (the alerting service, in the running aggregator).
pub trait Notifier: Send + Sync {
    /// Hands over alerts that fired, changed or resolved (resolved ones have `ends_at` set).
    fn send(&self, alerts: Vec<Alert>);
}

/// A Prometheus duration (`30s`, `1h30m`, `0s`); zero is allowed (promql-parser refuses it).
pub fn prom_duration(s: &str) -> Result<Duration, Invalid> {
    let t = s.trim();
    let unit = t.trim_start_matches('0');
    if t.starts_with('0') && ["", "ms", "s", "m", "h", "d", "w", "y"].contains(&unit) {
        return Ok(Duration::ZERO);
    }
    promql_parser::util::parse_duration(t)
        .map_err(|e| Invalid(format!("invalid duration {s:?}: {e}")))
}

/// What remediation tells the alerting side about an alert's remediation (sent over the
/// channel `serve` wires between the two drivers; the alerting side records it in the alert's
/// incident and pages when a remediation failed).
#[derive(Debug, Clone)]
pub enum RemediationNews {
    /// A remediation changed state: a line for the incident's timeline.
    Note {
        /// The remediated alert.
        alert_fp: u64,
        /// The sentence.
        text: String,
    },
    /// The alert resolved inside the verify window after a successful run.
    Remediated {
        /// The remediated alert.
        alert_fp: u64,
        /// The remediation.
        id: String,
    },
    /// The remediation failed: escalate, with its record attached.
    Failed {
        /// The remediation.
        id: String,
        /// The remediated alert.
        alert_fp: u64,
        /// The alert's labels.
        labels: Labels,
        /// The remediation record, as the API shows it, for the page.
        detail: serde_json::Value,
    },
}

/// Why a request to the alerting or remediation side failed, so that the HTTP layer (or any
/// other caller) can tell a bad request from a missing object from a broken store.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request is invalid (a silence without matchers, an unknown decision...).
    #[error("{0}")]
    Invalid(String),
    /// No such object.
    #[error("{0}")]
    NotFound(String),
    /// The state could not be written.
    #[error("{0}")]
    Store(String),
}

impl From<Invalid> for RequestError {
    fn from(e: Invalid) -> Self {
        RequestError::Invalid(e.0)
    }
}

/// Labels as a JSON object (as Alertmanager's payloads and APIs write them).
pub fn labels_json(l: &Labels) -> serde_json::Value {
    serde_json::Value::Object(
        l.iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect(),
    )
}

/// A random id formatted like a UUID (version 4): silences and remediations are named so.
pub fn uuid_v4() -> String {
    let mut a: u128 = rand::random();
    a = (a & !(0xf << 76)) | (0x4 << 76);
    a = (a & !(0x3 << 62)) | (0x2 << 62);
    let h = format!("{a:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_orders_priority_and_times_round_trip() {
        let p = |s: &str| priority_of(&Labels::from_pairs([("severity", s)]));
        assert!(p("critical") < p("error"));
        assert!(p("error") < p("warning"));
        assert!(p("warning") < p("info"));
        assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
        let t = 1_764_000_000_123;
        assert_eq!(parse_rfc3339(&rfc3339(t)), Ok(t));
        assert_eq!(parse_rfc3339("2025-11-24T16:00:00.123+00:00"), Ok(t));
        assert!(parse_rfc3339("yesterday").is_err());
        let a = Labels::from_pairs([("a", "1")]);
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(
            fingerprint(&a),
            fingerprint(&Labels::from_pairs([("a", "2")]))
        );
    }
}
