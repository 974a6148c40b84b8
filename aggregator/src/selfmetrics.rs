//! The aggregator's own counters, rendered at `/metrics` in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use telltale_common::histogram::Histogram;
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
    /// Connection attempts sent a QUIC Retry (address validation) because many handshakes
    /// were in progress.
    pub handshake_retries: AtomicU64,
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
    /// Storage writes fail because the disk is full (acknowledgements stop until they work).
    pub disk_full: bool,
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
            names::AGG_REJECTED_BATCHES,
            "Agent batches refused for good (undecodable, or an invalid name): the agent drops \
             them; the reason is in the aggregator's log and the agent's.",
            l(&self.rejected_batches),
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
            names::AGG_HANDSHAKE_RETRIES,
            "Connection attempts asked to validate their address (a QUIC Retry) first, because many handshakes were in progress.",
            l(&self.handshake_retries),
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
        gauge(
            &mut out,
            names::AGG_DISK_FULL,
            "1 while metric storage writes fail on a full disk: batches are not acknowledged (agents keep them) until writes work again.",
            u64::from(g.disk_full),
        );
        out
    }
}

/// The latency of each stage of the pipeline, recorded where the work happens and read by
/// `/metrics` (as histograms) and by the live pipeline diagram (as quantiles over a window).
///
/// One process-wide set, like a Prometheus client's default registry: the stages live in
/// modules that are built and replaced independently (a reload makes a new rule manager), and
/// a figure must survive that.
#[derive(Debug, Default)]
pub struct Latencies {
    /// From a batch's `created_ms` on the agent to its arrival here: collection, the agent's
    /// buffer and the network (agent clocks are trusted; a skewed clock shows here first).
    pub batch_delay: Histogram,
    /// From a batch's arrival to its acknowledgement, every store having it durably.
    pub ingest: Histogram,
    /// Appending a batch's samples to the TSDB (WAL included).
    pub tsdb_append: Histogram,
    /// Appending a batch's log lines to the log store.
    pub log_append: Histogram,
    /// Appending a batch's spans to the trace store.
    pub span_append: Histogram,
    /// One evaluation of one rule group.
    pub rule_group: Histogram,
    /// One evaluation of one anomaly detector.
    pub detector: Histogram,
    /// Handling one batch of alerts in alerting: routing, grouping, inhibition, correlation
    /// into incidents.
    pub correlation: Histogram,
    /// From an alert's firing to a receiver accepting its first notification.
    pub alert_to_notification: Histogram,
    /// One delivery attempt to a receiver.
    pub delivery: Histogram,
    /// From a remediation's command sent to its result received.
    pub remediation: Histogram,
    /// One PromQL query of the HTTP API (instant or range).
    pub query: Histogram,
    /// Rendering one report.
    pub report: Histogram,
    /// Log lines stored.
    pub log_lines: AtomicU64,
    /// Spans stored.
    pub spans: AtomicU64,
}

/// The aggregator's stage latencies.
pub static LATENCY: std::sync::LazyLock<Latencies> = std::sync::LazyLock::new(Latencies::default);

/// `(metric name, help, histogram)` of every latency, as `/metrics` writes them.
pub fn latency_histograms() -> [(&'static str, &'static str, &'static Histogram); 13] {
    let l = &*LATENCY;
    [
        (
            names::AGG_BATCH_DELAY,
            "Seconds from a batch's creation on its agent to its arrival here.",
            &l.batch_delay,
        ),
        (
            names::AGG_INGEST_SECONDS,
            "Seconds from a batch's arrival to its acknowledgement (durable in every store).",
            &l.ingest,
        ),
        (
            "telltale_aggregator_tsdb_append_seconds",
            "Seconds appending one batch's samples to the TSDB.",
            &l.tsdb_append,
        ),
        (
            "telltale_aggregator_log_append_seconds",
            "Seconds appending one batch's log lines to the log store.",
            &l.log_append,
        ),
        (
            "telltale_aggregator_span_append_seconds",
            "Seconds appending one batch's spans to the trace store.",
            &l.span_append,
        ),
        (
            names::AGG_RULE_GROUP_SECONDS,
            "Seconds one evaluation of one rule group took.",
            &l.rule_group,
        ),
        (
            "telltale_aggregator_anomaly_evaluation_seconds",
            "Seconds one evaluation of one anomaly detector took.",
            &l.detector,
        ),
        (
            "telltale_aggregator_alert_handling_seconds",
            "Seconds handling one batch of alerts: routing, grouping, inhibition, incidents.",
            &l.correlation,
        ),
        (
            names::AGG_ALERT_TO_NOTIFICATION,
            "Seconds from an alert firing to a receiver accepting its first notification.",
            &l.alert_to_notification,
        ),
        (
            "telltale_aggregator_notification_delivery_seconds",
            "Seconds one delivery attempt to a receiver took.",
            &l.delivery,
        ),
        (
            "telltale_aggregator_remediation_seconds",
            "Seconds from a remediation's command to its result.",
            &l.remediation,
        ),
        (
            "telltale_aggregator_query_seconds",
            "Seconds one PromQL query of the HTTP API took.",
            &l.query,
        ),
        (
            "telltale_aggregator_report_render_seconds",
            "Seconds rendering one report.",
            &l.report,
        ),
    ]
}

/// Writes every stage latency histogram.
pub fn render_latencies(out: &mut String) {
    for (name, help, h) in latency_histograms() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        h.snapshot().render(out, name, "");
    }
    let l = &*LATENCY;
    counter(
        out,
        "telltale_aggregator_log_lines_stored_total",
        "Log lines stored from agents.",
        l.log_lines.load(Ordering::Relaxed),
    );
    counter(
        out,
        "telltale_aggregator_spans_stored_total",
        "Spans stored from agents.",
        l.spans.load(Ordering::Relaxed),
    );
}

/// `(cpu seconds, resident bytes, virtual bytes, open fds, max fds)` of this process from
/// `/proc/self` (Linux; `None` elsewhere). CPU ticks are in USER_HZ, which the kernel fixes
/// at 100 for every interface to user space.
fn process_stats() -> Option<(f64, f64, f64, f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command (which may hold spaces) in its parentheses.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? * 1024.0)
    };
    let fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::INFINITY);
    Some((ticks / 100.0, kb("VmRSS:")?, kb("VmSize:")?, fds, max_fds))
}

/// The `process_*` series every Prometheus exporter has, and `telltale_build_info`.
pub fn render_process(out: &mut String, started_ms: i64, revision: &str, rustc: &str) {
    if let Some((cpu, rss, vsz, fds, max_fds)) = process_stats() {
        for (name, kind, help, v) in [
            (
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                cpu,
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                rss,
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                vsz,
            ),
            (
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                fds,
            ),
            (
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                max_fds,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n\
         # TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}",
        started_ms as f64 / 1000.0
    );
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let _ = writeln!(
        out,
        "# HELP telltale_build_info The version, git revision and compiler of this build (always 1).\n\
         # TYPE telltale_build_info gauge\n\
         telltale_build_info{{version=\"{}\",revision=\"{}\",rustc=\"{}\"}} 1",
        esc(telltale_common::VERSION),
        esc(revision),
        esc(rustc)
    );
}
