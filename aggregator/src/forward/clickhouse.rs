//! The ClickHouse exporters (`[clickhouse]`), one per signal: each reads its store's WAL from a
//! position of its own, as the remote_write queues read the metrics WAL
//! ([`crate::durable::feed`]), and inserts rows into `<database>.logs` (every line the
//! aggregator acknowledged) or `<database>.spans` (the spans of the traces tail sampling kept:
//! the trace store writes them into its WAL again once decided, as `kept` records, or marks
//! its records when every trace is kept) — schema in [`crate::clickhouse`]. A position is kept
//! in `DATA_DIR/clickhouse/<signal>.pos` (persisted at most once a second and at a clean
//! shutdown) and moves only past rows ClickHouse acknowledged; the segments an exporter has not
//! sent stay on disk (up to `max_wal_bytes` beyond what the store keeps anyway; past it the
//! oldest are dropped and their rows counted).
//!
//! So an acknowledged line reaches ClickHouse at least once: a failed insert is retried with
//! doubling backoff without end (ClickHouse answers 500 to most errors, so nothing is judged
//! permanent; each failure is logged), and after a crash the lines since the last persisted
//! position (at most a second of them) are inserted again — a MergeTree keeps both copies
//! (readers that need exactness deduplicate on `(stream, timestamp_ns, line)`). After a clean
//! shutdown nothing is sent twice. A new exporter starts at the WAL's end.
//!
//! Alert and incident events are not read here: the alerting outbox delivers them
//! (`clickhouse_configs` in the routing file), with its own durability.

pub mod incidents;
pub mod options;

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clickhouse::{self, Table};
use crate::durable::feed::{self, Feed, Position, Sink, StoreFeed, WalHold};
use crate::forward::cursor::Cursor;
use crate::forward::drive;
pub use options::{ClickHouseOptions, ClickHouseSection};

/// The exporter's counters (`telltale_aggregator_clickhouse_*`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Rows ClickHouse acknowledged.
    pub rows_sent: AtomicU64,
    /// Lines dropped unsent by the WAL byte cap.
    pub rows_dropped: AtomicU64,
    /// Inserts that failed (and were retried).
    pub failures: AtomicU64,
    /// Body bytes acknowledged.
    pub bytes_sent: AtomicU64,
    /// WAL records skipped as undecodable or damaged.
    pub corrupt_records: AtomicU64,
    /// Unix ms when the exporter had last sent everything durable.
    pub caught_up_ms: AtomicU64,
}

/// What an exporter reads and where it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Log lines, from the logs WAL into `logs`.
    Logs,
    /// Kept spans, from the traces WAL into `spans`.
    Spans,
}

impl Signal {
    /// Its table.
    pub fn table(self) -> Table {
        match self {
            Signal::Logs => Table::Logs,
            Signal::Spans => Table::Spans,
        }
    }

    /// Its name (the position file's, the metrics' `table` label).
    pub fn name(self) -> &'static str {
        self.table().name()
    }

    /// About what a row takes in the WAL.
    fn row_bytes(self) -> u64 {
        match self {
            Signal::Logs => 160,
            Signal::Spans => 400,
        }
    }
}

/// An exporter of one signal.
pub struct Exporter {
    /// What it exports.
    pub signal: Signal,
    /// Settings.
    pub opts: ClickHouseOptions,
    /// Counters.
    pub counters: Counters,
    cursor: Cursor,
    hold: WalHold,
    feed: std::sync::OnceLock<StoreFeed>,
}

/// The directory of the exporter's position.
pub fn positions_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("clickhouse")
}

/// Rows read from a WAL, as a JSONEachRow body.
pub struct Rows {
    signal: Signal,
    body: Vec<u8>,
    rows: usize,
    corrupt: u64,
}

impl Rows {
    fn new(signal: Signal) -> Rows {
        Rows {
            signal,
            body: Vec::new(),
            rows: 0,
            corrupt: 0,
        }
    }

    fn undecodable(&mut self, path: &Path, e: &dyn std::fmt::Display) {
        tracing::warn!(segment = %path.display(), error = %e, signal = self.signal.name(), "clickhouse: undecodable WAL record skipped");
        self.corrupt += 1;
    }
}

impl Sink for Rows {
    fn record(&mut self, payload: &[u8], path: &Path) {
        if self.signal == Signal::Spans {
            match crate::traces::engine::decode_stored_spans(payload) {
                Ok(spans) => {
                    for s in &spans {
                        clickhouse::span_row(&mut self.body, s);
                    }
                    self.rows += spans.len();
                }
                Err(e) => self.undecodable(path, &e),
            }
            return;
        }
        match crate::logs::engine::decode_wal_record(payload) {
            Ok(streams) => {
                for s in streams {
                    let stream = clickhouse::selector(&s.labels);
                    for e in &s.entries {
                        clickhouse::log_row(
                            &mut self.body,
                            &s.labels,
                            &stream,
                            e.t_ns,
                            &e.line,
                            &e.metadata,
                        );
                        self.rows += 1;
                    }
                }
            }
            Err(e) => self.undecodable(path, &e),
        }
    }
    fn damaged(&mut self, path: &Path, at: usize, len: usize) {
        tracing::warn!(segment = %path.display(), offset = at, bytes = len, signal = self.signal.name(), "clickhouse: damaged WAL bytes skipped");
        self.corrupt += 1;
    }
    fn items(&self) -> usize {
        self.rows
    }
}

fn now_ms() -> u64 {
    telltale_common::model::now_ms().max(0) as u64
}

impl Exporter {
    /// Loads the exporter's position and sets `hold` from it, before its store opens (so its
    /// start-up keeps the segments the exporter still needs).
    pub fn prepare(
        data_dir: &Path,
        signal: Signal,
        opts: ClickHouseOptions,
        hold: WalHold,
    ) -> std::io::Result<Exporter> {
        let dir = positions_dir(data_dir);
        std::fs::create_dir_all(&dir)?;
        let cursor = Cursor::load(
            dir.join(format!("{}.pos", signal.name())),
            format!("clickhouse {}", signal.name()),
        );
        let e = Exporter {
            signal,
            opts,
            counters: Counters::default(),
            cursor,
            hold,
            feed: std::sync::OnceLock::new(),
        };
        e.move_hold();
        Ok(e)
    }

    fn move_hold(&self) {
        self.hold
            .set(self.cursor.persisted().map_or(u64::MAX, |p| p.segment));
    }

    /// Starts exporting from its store's WAL.
    pub fn start(self: &Arc<Self>, feed: StoreFeed) {
        let _ = self.feed.set(feed.clone());
        if self.cursor.position().is_none() {
            // A new exporter sends what is stored from now on, fixed before any append
            // after `start` returns.
            let (segment, offset) = feed.tip();
            self.cursor.start_at(Position { segment, offset });
            self.move_hold();
        }
        tracing::info!(url = %self.opts.url, database = %self.opts.database, signal = self.signal.name(), "clickhouse exporter started");
        let me = self.clone();
        tokio::spawn(async move {
            create_schema(&me).await;
            drive::run(me, feed).await
        });
    }

    /// Persists the acknowledged position (a clean shutdown).
    pub fn shutdown(&self) {
        self.cursor.persist();
    }

    /// Its metrics: name, kind, help, value.
    fn metric_values(&self) -> [(&'static str, &'static str, &'static str, String); 7] {
        let c = &self.counters;
        let pending = match (self.feed.get(), self.cursor.position()) {
            (Some(f), Some(p)) => feed::pending_bytes(f, p),
            _ => 0,
        };
        let at = c.caught_up_ms.load(Ordering::Relaxed);
        let lag = if at == 0 {
            0.0
        } else {
            now_ms().saturating_sub(at) as f64 / 1000.0
        };
        [
            (
                "rows_sent_total",
                "counter",
                "Rows ClickHouse acknowledged.",
                c.rows_sent.load(Ordering::Relaxed).to_string(),
            ),
            (
                "rows_dropped_total",
                "counter",
                "Rows dropped unsent because the exporter was behind by more than its WAL byte cap.",
                c.rows_dropped.load(Ordering::Relaxed).to_string(),
            ),
            (
                "insert_failures_total",
                "counter",
                "Inserts that failed and were retried.",
                c.failures.load(Ordering::Relaxed).to_string(),
            ),
            (
                "sent_bytes_total",
                "counter",
                "Insert body bytes acknowledged.",
                c.bytes_sent.load(Ordering::Relaxed).to_string(),
            ),
            (
                "corrupt_records_total",
                "counter",
                "WAL records skipped as damaged or undecodable.",
                c.corrupt_records.load(Ordering::Relaxed).to_string(),
            ),
            (
                "pending_bytes",
                "gauge",
                "WAL bytes the exporter has not sent yet.",
                pending.to_string(),
            ),
            (
                "lag_seconds",
                "gauge",
                "Time since the exporter had last sent everything durable in its WAL.",
                lag.to_string(),
            ),
        ]
    }
}

/// `telltale_aggregator_clickhouse_*` for `/metrics`, a family per metric with a series per
/// exporter.
pub fn render_metrics(
    exporters: &[Arc<Exporter>],
    archive: Option<&incidents::Archive>,
    out: &mut String,
) {
    let all: Vec<_> = exporters.iter().map(|e| e.metric_values()).collect();
    // The incident archive has the counters, not the WAL's figures.
    let archived = archive.map(|a| {
        let c = &a.counters;
        [
            Some(c.rows_sent.load(Ordering::Relaxed)),
            None,
            Some(c.failures.load(Ordering::Relaxed)),
            Some(c.bytes_sent.load(Ordering::Relaxed)),
            None,
            None,
            None,
        ]
    });
    let families: Vec<(&str, &str, &str)> = match all.first() {
        Some(v) => v.iter().map(|(n, k, h, _)| (*n, *k, *h)).collect(),
        None if archived.is_some() => vec![
            (
                "rows_sent_total",
                "counter",
                "Rows ClickHouse acknowledged.",
            ),
            ("", "", ""),
            (
                "insert_failures_total",
                "counter",
                "Inserts that failed and were retried.",
            ),
            (
                "sent_bytes_total",
                "counter",
                "Insert body bytes acknowledged.",
            ),
        ],
        None => return,
    };
    for (i, (name, kind, help)) in families.into_iter().enumerate() {
        let value = archived.as_ref().and_then(|a| a.get(i).copied().flatten());
        if name.is_empty() || (all.is_empty() && value.is_none()) {
            continue;
        }
        let name = format!("telltale_aggregator_clickhouse_{name}");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (e, values) in exporters.iter().zip(&all) {
            let _ = writeln!(
                out,
                "{name}{{table=\"{}\"}} {}",
                e.signal.name(),
                values[i].3
            );
        }
        if let Some(v) = value {
            let _ = writeln!(out, "{name}{{table=\"incidents\"}} {v}");
        }
    }
}

/// Creates the schema, retrying until ClickHouse answers.
async fn create_schema(e: &Exporter) {
    let o = &e.opts;
    let mut backoff = o.min_backoff;
    loop {
        match clickhouse::create_schema(
            &o.client,
            &o.url,
            o.authorization.as_deref(),
            &o.database,
            &[e.signal.table()],
        )
        .await
        {
            Ok(v) => {
                tracing::info!(version = ?v, database = %o.database, "clickhouse: tables ready");
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, ?backoff, "clickhouse: cannot create the tables; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(o.max_backoff);
            }
        }
    }
}

/// Inserts `body`, retrying until ClickHouse acknowledges it.
async fn insert(e: &Exporter, body: Vec<u8>, rows: usize) {
    let o = &e.opts;
    let query = e.signal.table().insert(&o.database);
    let mut backoff = o.min_backoff;
    let len = body.len() as u64;
    loop {
        match clickhouse::execute(
            &o.client,
            &o.url,
            o.authorization.as_deref(),
            &query,
            body.clone(),
        )
        .await
        {
            Ok(_) => {
                e.counters
                    .rows_sent
                    .fetch_add(rows as u64, Ordering::Relaxed);
                e.counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
                return;
            }
            Err(err) => {
                e.counters.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, rows, ?backoff, "clickhouse: insert failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(o.max_backoff);
            }
        }
    }
}

impl drive::Batch for Rows {
    fn corrupt(&self) -> u64 {
        self.corrupt
    }
}

impl drive::Exporter for Exporter {
    type Batch = Rows;

    fn what(&self) -> String {
        format!("clickhouse {}", self.signal.name())
    }

    fn batch(&self) -> Rows {
        Rows::new(self.signal)
    }

    fn max_items(&self) -> (usize, u64) {
        (self.opts.max_rows_per_insert, self.signal.row_bytes())
    }

    fn deadline(&self) -> Duration {
        self.opts.batch_send_deadline
    }

    fn max_wal_bytes(&self) -> u64 {
        self.opts.max_wal_bytes
    }

    fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    fn move_hold(&self) {
        Exporter::move_hold(self)
    }

    fn note(&self, dropped: u64, corrupt: u64, caught_up: bool) {
        let c = &self.counters;
        c.rows_dropped.fetch_add(dropped, Ordering::Relaxed);
        c.corrupt_records.fetch_add(corrupt, Ordering::Relaxed);
        if caught_up {
            c.caught_up_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    async fn send(&self, rows: Rows) {
        insert(self, rows.body, rows.rows).await
    }
}

#[cfg(test)]
mod tests;
