//! Forwarding what the aggregator stores to distributed stores: remote_write queues
//! (`[[remote_write]]`, Prometheus remote_write 1.0) fed from the WAL, as Prometheus' WAL
//! watcher does — a queue reads every record the engine made durable, so everything the
//! aggregator acknowledged (agents' batches, remote_write it received, `up`, rule results)
//! goes out, and the segments a queue has not sent stay on disk (up to its byte cap) across
//! restarts and outages of the receiver.
//!
//! Each queue keeps its position in `DATA_DIR/remote_write/<name>.pos` (persisted at most
//! once a second and at a clean shutdown): a restart resumes there, so after a clean
//! shutdown nothing is sent twice, and after a crash at most what was delivered in the
//! second before it is (a queue waiting on a receiver that is down keeps persisting, so a
//! crash during an outage resends nothing delivered before the outage). Receivers keep one
//! sample per series and timestamp: Prometheus ignores an identical duplicate,
//! VictoriaMetrics drops it with `-dedup.minScrapeInterval`. A new queue starts at the
//! WAL's end: it forwards what arrives from then on.
//!
//! The WAL holds every sample the engine was asked to store, including the few the head then
//! refused (beyond the out-of-order window or `max_future`): those are forwarded too, and
//! the receiver applies its own limits.
//!
//! The ClickHouse exporter ([`clickhouse`], `[clickhouse]`) reads the logs WAL the same way.

pub mod clickhouse;
pub mod cursor;
pub mod drive;
pub mod options;
pub mod pool;
pub mod queue;
pub mod tail;
#[cfg(test)]
mod tests;

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::metrics::tsdb::{WalFeed, WalHold};
pub use options::{RemoteWriteOptions, RemoteWriteSection};
use queue::Queue;

/// Every queue.
pub struct Forwarders {
    queues: Vec<Arc<Queue>>,
    hold: WalHold,
    feed: std::sync::OnceLock<WalFeed>,
    clickhouse: Vec<Arc<clickhouse::Exporter>>,
    incidents: Option<Arc<clickhouse::incidents::Archive>>,
    pool: Option<Arc<pool::Forwarder>>,
}

/// The directory of the queues' positions.
pub fn positions_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("remote_write")
}

impl Forwarders {
    /// Loads the queues' positions and sets `hold` from them, before the engine opens (so
    /// its start-up keeps the segments they still need).
    pub fn prepare(
        data_dir: &Path,
        opts: &[RemoteWriteOptions],
        hold: WalHold,
    ) -> std::io::Result<Forwarders> {
        let dir = positions_dir(data_dir);
        if !opts.is_empty() {
            std::fs::create_dir_all(&dir)?;
        }
        let queues = opts
            .iter()
            .map(|o| Arc::new(Queue::load(dir.join(format!("{}.pos", o.name)), o.clone())))
            .collect();
        let f = Forwarders {
            queues,
            hold,
            feed: std::sync::OnceLock::new(),
            clickhouse: Vec::new(),
            incidents: None,
            pool: None,
        };
        f.move_hold();
        Ok(f)
    }

    fn move_hold(&self) {
        let min = self
            .queues
            .iter()
            .filter_map(|q| q.persisted())
            .map(|p| p.segment)
            .min()
            .unwrap_or(u64::MAX);
        self.hold.set(min);
    }

    /// Starts every queue on the engine's WAL.
    pub fn start(self: &Arc<Self>, feed: WalFeed) {
        let _ = self.feed.set(feed.clone());
        for q in &self.queues {
            if q.position().is_none() {
                // A new queue sends what is stored from now on: its start is fixed here,
                // before any append after `start` returns, not when its task first runs.
                let (segment, offset) = feed.tip();
                q.start_at(queue::Position { segment, offset });
            }
            let me = self.clone();
            let on_move: Arc<dyn Fn() + Send + Sync> = Arc::new(move || me.move_hold());
            tracing::info!(remote = %q.opts.name, url = %q.opts.url, "remote_write queue started");
            tokio::spawn(queue::run(q.clone(), feed.clone(), on_move));
        }
    }

    /// Adds the ClickHouse exporters `[clickhouse]` asks for: their positions are loaded and
    /// each store's hold (`logs_hold`, `traces_hold`) set from them before the stores open.
    pub fn with_clickhouse(
        mut self,
        data_dir: &Path,
        opts: Option<&clickhouse::ClickHouseOptions>,
        logs_hold: WalHold,
        traces_hold: WalHold,
        source: &str,
    ) -> std::io::Result<Forwarders> {
        let Some(o) = opts else {
            return Ok(self);
        };
        if o.incidents {
            self.incidents = Some(Arc::new(clickhouse::incidents::Archive::new(
                o.clone(),
                source.to_string(),
            )));
        }
        for (on, signal, hold) in [
            (o.logs, clickhouse::Signal::Logs, logs_hold),
            (o.spans, clickhouse::Signal::Spans, traces_hold),
        ] {
            if on {
                self.clickhouse.push(Arc::new(clickhouse::Exporter::prepare(
                    data_dir,
                    signal,
                    o.clone(),
                    hold,
                )?));
            }
        }
        Ok(self)
    }

    /// Adds the trace pool forwarder `[traces.pool]` asks for, holding the traces WAL with
    /// its own slot of `traces_hold`.
    pub fn with_pool(
        mut self,
        data_dir: &Path,
        opts: Option<&pool::PoolOptions>,
        traces_hold: &WalHold,
    ) -> std::io::Result<Forwarders> {
        if let Some(o) = opts {
            self.pool = Some(Arc::new(pool::Forwarder::prepare(
                data_dir,
                o.clone(),
                traces_hold.another(),
            )?));
        }
        Ok(self)
    }

    /// Starts the trace pool forwarder, if any, on the trace store's WAL.
    pub fn start_pool(&self, feed: crate::durable::feed::StoreFeed) {
        if let Some(p) = &self.pool {
            p.start(feed);
        }
    }

    /// Starts the incident archive, if any, on what `incidents` lists.
    pub fn start_incidents(&self, incidents: impl Fn() -> Vec<serde_json::Value> + Send + 'static) {
        if let Some(a) = &self.incidents {
            tokio::spawn(a.clone().run(incidents));
        }
    }

    /// The incident archive, if `[clickhouse]` keeps one.
    pub fn incident_archive(&self) -> Option<&Arc<clickhouse::incidents::Archive>> {
        self.incidents.as_ref()
    }

    /// Whether an exporter of `signal` is configured.
    pub fn exports(&self, signal: clickhouse::Signal) -> bool {
        self.clickhouse.iter().any(|c| c.signal == signal)
    }

    /// Starts the ClickHouse exporter of `signal`, if any, on its store's WAL.
    pub fn start_clickhouse(
        &self,
        signal: clickhouse::Signal,
        feed: crate::durable::feed::StoreFeed,
    ) {
        for c in self.clickhouse.iter().filter(|c| c.signal == signal) {
            c.start(feed.clone());
        }
    }

    /// Persists every queue's acknowledged position (a clean shutdown).
    pub fn shutdown(&self) {
        for q in &self.queues {
            q.persist();
        }
        for c in &self.clickhouse {
            c.shutdown();
        }
        if let Some(p) = &self.pool {
            p.shutdown();
        }
    }

    /// Whether no queue and no exporter is configured.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
            && self.clickhouse.is_empty()
            && self.incidents.is_none()
            && self.pool.is_none()
    }

    /// `telltale_aggregator_remote_write_*` for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        clickhouse::render_metrics(&self.clickhouse, self.incidents.as_deref(), out);
        if let Some(p) = &self.pool {
            p.render_metrics(out);
        }
        if self.queues.is_empty() {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        type Get = fn(&Queue) -> u64;
        let metrics: [(&str, &str, &str, Get); 6] = [
            (
                "samples_sent_total",
                "counter",
                "Samples the receiver acknowledged.",
                |q| q.counters.sent.load(Ordering::Relaxed),
            ),
            (
                "samples_failed_total",
                "counter",
                "Samples the receiver refused for good (4xx answers other than 429).",
                |q| q.counters.failed.load(Ordering::Relaxed),
            ),
            (
                "samples_dropped_total",
                "counter",
                "Samples dropped unsent because the queue was behind by more than its WAL byte cap.",
                |q| q.counters.dropped.load(Ordering::Relaxed),
            ),
            (
                "samples_pending",
                "gauge",
                "Samples read from the WAL and not yet acknowledged.",
                |q| q.counters.pending.load(Ordering::Relaxed),
            ),
            (
                "retries_total",
                "counter",
                "Requests retried (5xx, 429, network errors).",
                |q| q.counters.retries.load(Ordering::Relaxed),
            ),
            (
                "sent_bytes_total",
                "counter",
                "Compressed request bytes acknowledged.",
                |q| q.counters.bytes.load(Ordering::Relaxed),
            ),
        ];
        let mut family = |name: &str, kind: &str, help: &str, value: &dyn Fn(&Queue) -> String| {
            let name = format!("telltale_aggregator_remote_write_{name}");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for q in &self.queues {
                let _ = writeln!(out, "{name}{{remote=\"{}\"}} {}", q.opts.name, value(q));
            }
        };
        for (name, kind, help, get) in metrics {
            family(name, kind, help, &|q| get(q).to_string());
        }
        family(
            "lag_seconds",
            "gauge",
            "Time since the queue had last sent everything durable in the WAL.",
            &|q| {
                let at = q.counters.caught_up_ms.load(Ordering::Relaxed);
                let lag = if at == 0 { 0 } else { now.saturating_sub(at) };
                (lag as f64 / 1000.0).to_string()
            },
        );
        if let Some(feed) = self.feed.get() {
            family(
                "pending_bytes",
                "gauge",
                "WAL bytes the queue has not sent yet.",
                &|q| {
                    q.position()
                        .map(|p| tail::pending_bytes(feed, p))
                        .unwrap_or(0)
                        .to_string()
                },
            );
        }
    }
}
