//! The aggregator's own counters, rendered at `/metrics` in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use telltale_common::names;

/// Counters updated by ingest and the API.
#[derive(Debug, Default)]
pub struct SelfMetrics {
    /// Batches stored.
    pub batches: AtomicU64,
    /// Replayed batches acknowledged without storing.
    pub duplicate_batches: AtomicU64,
    /// Samples stored.
    pub samples: AtomicU64,
    /// Batches refused because they do not decode.
    pub rejected_batches: AtomicU64,
    /// Connections closed for a bad frame.
    pub frame_errors: AtomicU64,
    /// Handshakes refused.
    pub handshake_errors: AtomicU64,
    /// Agent connections closed because a newer one of the same agent arrived.
    pub connections_replaced: AtomicU64,
    /// HTTP API requests.
    pub http_requests: AtomicU64,
}

/// Gauges read at render time.
pub struct Gauges {
    /// Connected agents.
    pub connected_agents: usize,
    /// What storage holds.
    pub storage: crate::metrics::storage::StorageStats,
    /// Corrupt records found at start-up.
    pub corrupt_records: u64,
}

/// Writes a counter in the text exposition format.
pub fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

/// Writes a gauge in the text exposition format.
pub fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

impl SelfMetrics {
    /// Increments a counter.
    pub fn inc(c: &AtomicU64, by: u64) {
        c.fetch_add(by, Ordering::Relaxed);
    }

    /// Renders everything in the text exposition format.
    pub fn render(&self, g: &Gauges) -> String {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        counter(
            &mut out,
            names::AGG_BATCHES,
            "Agent batches stored.",
            l(&self.batches),
        );
        counter(
            &mut out,
            names::AGG_DUPLICATE_BATCHES,
            "Replayed agent batches acknowledged without storing them twice.",
            l(&self.duplicate_batches),
        );
        counter(
            &mut out,
            names::AGG_SAMPLES,
            "Samples stored.",
            l(&self.samples),
        );
        counter(
            &mut out,
            names::AGG_FRAME_ERRORS,
            "Agent connections closed because of a malformed or oversized frame.",
            l(&self.frame_errors),
        );
        counter(
            &mut out,
            names::AGG_HANDSHAKE_ERRORS,
            "Agent connections refused during the handshake.",
            l(&self.handshake_errors),
        );
        counter(
            &mut out,
            names::AGG_CONNECTIONS_REPLACED,
            "Agent connections closed because a newer connection of the same agent arrived.",
            l(&self.connections_replaced),
        );
        counter(
            &mut out,
            names::AGG_HTTP_REQUESTS,
            "HTTP API requests.",
            l(&self.http_requests),
        );
        gauge(
            &mut out,
            names::AGG_CONNECTED_AGENTS,
            "Agents connected now.",
            g.connected_agents as u64,
        );
        gauge(
            &mut out,
            names::AGG_SERIES,
            "Series held by storage.",
            g.storage.series,
        );
        gauge(
            &mut out,
            names::AGG_STORED_SAMPLES,
            "Samples held by storage.",
            g.storage.samples,
        );
        counter(
            &mut out,
            names::AGG_OVERWRITTEN_SAMPLES,
            "Samples that replaced one with the same series and timestamp (since start-up, replay included).",
            g.storage.overwritten,
        );
        counter(
            &mut out,
            names::AGG_CORRUPT_RECORDS,
            "Corrupt log records skipped at start-up.",
            g.corrupt_records,
        );
        out
    }
}
