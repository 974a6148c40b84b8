//! The trace pool forwarder (`[traces.pool]`): sends the foreign spans of the traces WAL —
//! spans of this aggregator's agents whose trace another member samples
//! ([`crate::traces::pool`]) — to that member's `POST /api/v1/pool/spans`, where they join
//! its sampler beside the trace's other spans. It reads the WAL as the ClickHouse exporters do
//! ([`super::drive`]): from a position kept in `DATA_DIR/pool/spans.pos` (persisted at most
//! once a second and at a clean shutdown), holding the segments it has not sent (up to
//! `max_wal_bytes`; past it the oldest are dropped and their spans counted).
//!
//! A send is retried with doubling backoff until the member takes it: a member that is down
//! holds up the spans for every member (one position), which the decision wait of their
//! traces bounds in usefulness, not in safety — nothing acknowledged is lost. A member that
//! answers 400 or 413 refused the body for good (it is logged and its spans counted as
//! dropped). After a crash the spans since the last persisted position are sent again; the
//! receiving member then holds those spans twice.

pub mod options;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use telltale_common::codec;
use telltale_common::trace::Span;

use crate::durable::feed::{self, Feed, Sink, StoreFeed, WalHold};
use crate::forward::cursor::Cursor;
use crate::forward::drive;
pub use options::{PoolOptions, PoolSection, SPANS_PATH};

/// The forwarder's counters (`telltale_aggregator_trace_pool_*`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Spans a member took.
    pub spans_sent: AtomicU64,
    /// Spans dropped: past the byte cap, or refused for good.
    pub spans_dropped: AtomicU64,
    /// Sends that failed (and were retried).
    pub failures: AtomicU64,
    /// WAL records skipped as undecodable or damaged.
    pub corrupt_records: AtomicU64,
    /// Unix ms when it had last sent everything durable.
    pub caught_up_ms: AtomicU64,
}

/// The forwarder.
pub struct Forwarder {
    /// Settings.
    pub opts: PoolOptions,
    /// Counters.
    pub counters: Counters,
    cursor: Cursor,
    hold: WalHold,
    feed: std::sync::OnceLock<StoreFeed>,
}

/// Foreign spans read from the WAL, by the member that samples them.
pub struct Foreign {
    owners: Arc<crate::traces::pool::Owners>,
    by_member: BTreeMap<usize, Vec<Span>>,
    spans: usize,
    corrupt: u64,
}

impl Sink for Foreign {
    fn record(&mut self, payload: &[u8], path: &Path) {
        match crate::traces::engine::decode_foreign_spans(payload) {
            Ok(spans) => {
                self.spans += spans.len();
                for s in spans {
                    let m = self.owners.owner(&s.trace_id);
                    self.by_member.entry(m).or_default().push(s);
                }
            }
            Err(e) => {
                tracing::warn!(segment = %path.display(), error = %e, "trace pool: undecodable WAL record skipped");
                self.corrupt += 1;
            }
        }
    }

    fn damaged(&mut self, path: &Path, at: usize, len: usize) {
        tracing::warn!(segment = %path.display(), offset = at, bytes = len, "trace pool: damaged WAL bytes skipped");
        self.corrupt += 1;
    }

    fn items(&self) -> usize {
        self.spans
    }
}

impl drive::Batch for Foreign {
    fn corrupt(&self) -> u64 {
        self.corrupt
    }
}

/// The directory of the forwarder's position.
pub fn positions_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pool")
}

impl Forwarder {
    /// Loads the position and sets `hold` from it, before the trace store opens.
    pub fn prepare(
        data_dir: &Path,
        opts: PoolOptions,
        hold: WalHold,
    ) -> std::io::Result<Forwarder> {
        let dir = positions_dir(data_dir);
        std::fs::create_dir_all(&dir)?;
        let cursor = Cursor::load(dir.join("spans.pos"), "trace pool".into());
        let f = Forwarder {
            opts,
            counters: Counters::default(),
            cursor,
            hold,
            feed: std::sync::OnceLock::new(),
        };
        f.hold_at_persisted();
        Ok(f)
    }

    fn hold_at_persisted(&self) {
        self.hold
            .set(self.cursor.persisted().map_or(u64::MAX, |p| p.segment));
    }

    /// Starts forwarding from the trace store's WAL.
    pub fn start(self: &Arc<Self>, feed: StoreFeed) {
        let _ = self.feed.set(feed.clone());
        if self.cursor.position().is_none() {
            let (segment, offset) = feed.tip();
            self.cursor.start_at(feed::Position { segment, offset });
            self.hold_at_persisted();
        }
        let o = &self.opts;
        tracing::info!(members = ?o.owners.members(), this = o.owners.this(), "trace pool forwarder started");
        tokio::spawn(drive::run(self.clone(), feed));
    }

    /// Persists the acknowledged position (a clean shutdown).
    pub fn shutdown(&self) {
        self.cursor.persist();
    }

    /// `telltale_aggregator_trace_pool_*` for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let pending = match (self.feed.get(), self.cursor.position()) {
            (Some(f), Some(p)) => feed::pending_bytes(f, p),
            _ => 0,
        };
        let at = n(&c.caught_up_ms);
        let lag = if at == 0 {
            0.0
        } else {
            now_ms().saturating_sub(at) as f64 / 1000.0
        };
        for (name, kind, help, v) in [
            (
                "spans_sent_total",
                "counter",
                "Foreign spans a member of the pool took.",
                n(&c.spans_sent) as f64,
            ),
            (
                "spans_dropped_total",
                "counter",
                "Foreign spans dropped: past max_wal_bytes, or refused for good by their member.",
                n(&c.spans_dropped) as f64,
            ),
            (
                "send_failures_total",
                "counter",
                "Sends to a member that failed and were retried.",
                n(&c.failures) as f64,
            ),
            (
                "corrupt_records_total",
                "counter",
                "WAL records skipped as damaged or undecodable.",
                n(&c.corrupt_records) as f64,
            ),
            (
                "pending_bytes",
                "gauge",
                "Traces WAL bytes the forwarder has not sent yet.",
                pending as f64,
            ),
            (
                "lag_seconds",
                "gauge",
                "Time since the forwarder had last sent everything durable.",
                lag,
            ),
        ] {
            let name = format!("telltale_aggregator_trace_pool_{name}");
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }

    /// Sends `spans` to member `m` until it takes them (or refuses them for good).
    async fn send_to(&self, m: usize, spans: Vec<Span>) {
        let o = &self.opts;
        let Some(url) = o.urls.get(m) else {
            return;
        };
        let n = spans.len() as u64;
        let body = match codec::encode_payload(&spans) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "trace pool: cannot encode spans; dropped");
                self.counters.spans_dropped.fetch_add(n, Ordering::Relaxed);
                return;
            }
        };
        let mut backoff = o.min_backoff;
        loop {
            let mut req = o
                .client
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/msgpack")
                .body(body.clone());
            if let Some(a) = &o.authorization {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            let failure = match req.send().await {
                Ok(r) if r.status().is_success() => {
                    self.counters.spans_sent.fetch_add(n, Ordering::Relaxed);
                    return;
                }
                Ok(r) if matches!(r.status().as_u16(), 400 | 413) => {
                    let status = r.status();
                    let text: String = r
                        .text()
                        .await
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect();
                    tracing::error!(%url, %status, answer = %text.trim(), spans = n, "trace pool: the member refused the spans for good; dropped");
                    self.counters.spans_dropped.fetch_add(n, Ordering::Relaxed);
                    return;
                }
                Ok(r) => {
                    let status = r.status();
                    let text: String = r
                        .text()
                        .await
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect();
                    format!("{status}: {}", text.trim())
                }
                Err(e) => e.to_string(),
            };
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%url, error = %failure, ?backoff, "trace pool: sending spans failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(o.max_backoff);
        }
    }
}

fn now_ms() -> u64 {
    telltale_common::model::now_ms().max(0) as u64
}

impl drive::Exporter for Forwarder {
    type Batch = Foreign;

    fn what(&self) -> String {
        "trace pool".into()
    }

    fn batch(&self) -> Foreign {
        Foreign {
            owners: self.opts.owners.clone(),
            by_member: BTreeMap::new(),
            spans: 0,
            corrupt: 0,
        }
    }

    fn max_items(&self) -> (usize, u64) {
        (self.opts.max_spans_per_request, 400)
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
        self.hold_at_persisted()
    }

    fn note(&self, dropped: u64, corrupt: u64, caught_up: bool) {
        let c = &self.counters;
        c.spans_dropped.fetch_add(dropped, Ordering::Relaxed);
        c.corrupt_records.fetch_add(corrupt, Ordering::Relaxed);
        if caught_up {
            c.caught_up_ms.store(now_ms(), Ordering::Relaxed);
        }
    }

    async fn send(&self, batch: Foreign) {
        for (m, spans) in batch.by_member {
            self.send_to(m, spans).await;
        }
    }
}
