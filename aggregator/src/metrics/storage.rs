//! The storage interface: what ingest appends to and what queries read from.
//!
//! The interface is split by role, as Prometheus splits its own: [`Appender`] (ingest, rules),
//! [`Querier`] (PromQL, the query API) and [`Admin`] (counts, flush, the engine's metrics);
//! [`Storage`] is all three. PromQL and the HTTP API depend on these traits only; the
//! binary's wiring picks the engine (today [`crate::metrics::tsdb::Tsdb`]; unit tests also use
//! [`memory::MemStorage`]). Swapping the engine replaces the implementation, not the traits.

pub mod memory;
pub mod rollup;

use std::future::Future;
use std::pin::Pin;

use telltale_common::model::{Labels, Sample, SeriesSamples};
pub use telltale_common::wire::Event;

pub use crate::labels::{MatchOp, Matcher, label_names_of, label_values_of};

pub use crate::durable::dedup::Origin;

/// The samples of an append.
#[derive(Debug, Clone)]
pub enum AppendData {
    /// A wire `ClientMessage::Batch` payload (MessagePack) exactly as an agent sent it. The
    /// engine walks it without copying and decodes the labels only of series it has not seen.
    Encoded(Vec<u8>),
    /// Series built in the aggregator (for example `up`).
    Series(Vec<SeriesSamples>),
    /// A remote_write request's `WriteRequest` (protobuf, decompressed) exactly as it arrived:
    /// the engine walks it without copying and decodes the labels only of series it has not
    /// seen; a malformed request is [`AppendOutcome::Invalid`]. Stored under the caps on
    /// series created by remote_write (in total and per request).
    RemoteWrite(Vec<u8>),
}

/// A batch of samples to store.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// Set for agent batches: they are de-duplicated by origin, and every series gets
    /// `instance` = the origin's agent (see [`stamp_agent_labels`]). `None` for the
    /// aggregator's own series.
    pub origin: Option<Origin>,
    /// The samples.
    pub data: AppendData,
}

/// What happened to an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The samples are durable.
    Stored {
        /// How many samples were stored.
        samples: usize,
    },
    /// This origin was stored before; nothing was written again (it is durable).
    Duplicate,
    /// The batch can never be stored (it does not decode); nothing was written.
    Invalid {
        /// Why.
        reason: String,
    },
}

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Writing or syncing the log failed; nothing of the request is acknowledged.
    #[error("storage write failed: {0}")]
    Write(String),
    /// The engine is shutting down.
    #[error("storage is closed")]
    Closed,
    /// The data directory could not be opened.
    #[error("cannot open storage in {dir}: {message}")]
    Open {
        /// The directory.
        dir: String,
        /// What went wrong.
        message: String,
    },
    /// A query would touch more samples than allowed.
    #[error("query would load more than {limit} samples")]
    TooManySamples {
        /// The limit.
        limit: usize,
    },
}

/// One series' samples in a time range.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    /// The series.
    pub labels: Labels,
    /// Samples with `start <= t <= end`, ordered by time.
    pub samples: Vec<Sample>,
}

/// Called once an append is durable, with the distinct metric names it stored (in no
/// particular order). Rules use it to evaluate what a sample touches as it arrives.
pub type AppendHook = std::sync::Arc<dyn Fn(&[&str]) + Send + Sync>;

/// A boxed future, so the trait can be used as `dyn Storage`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The write side of an engine: what ingest, rules and the aggregator's own series call.
pub trait Appender: Send + Sync + 'static {
    /// Stores a batch; resolves once it is durable (or known to be a duplicate).
    fn append(&self, req: AppendRequest) -> BoxFuture<'_, Result<AppendOutcome, StorageError>>;

    /// Why the last durable write failed, while writes keep failing (a full or read-only
    /// disk); `None` while they succeed. Readiness reports it.
    fn write_error(&self) -> Option<String> {
        None
    }

    /// Installs the hook called after every durable append (replacing an earlier one). An
    /// engine that cannot tell leaves rules to their timers.
    fn set_append_hook(&self, hook: AppendHook) {
        let _ = hook;
    }
}

/// The read side of an engine: all PromQL and the query API need.
pub trait Querier: Send + Sync + 'static {
    /// Series matching all `matchers` with their samples in `[start_ms, end_ms]`; fails
    /// instead of loading more than `max_samples`.
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        max_samples: usize,
    ) -> Result<Vec<SeriesData>, StorageError>;

    /// Label sets of the series matching `matchers` that have samples in the range.
    fn series(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<Labels>;

    /// Rollup buckets of width `resolution_ms` (see [`rollup`]) ending in
    /// `[start_ms, end_ms]` for the matching series; at most `max_rows` buckets in all.
    /// Engines that keep rollups answer from them; the default computes them from raw samples.
    fn select_rollup(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        resolution_ms: i64,
        max_rows: usize,
    ) -> Result<Vec<RollupData>, StorageError> {
        rollup_from_raw(self, matchers, start_ms, end_ms, resolution_ms, max_rows)
    }

    /// Label names of the matching series with samples in the range, sorted.
    fn label_names(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<String> {
        label_names_of(&self.series(matchers, start_ms, end_ms))
    }

    /// Values of label `name` among the matching series with samples in the range, sorted.
    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<String> {
        label_values_of(&self.series(matchers, start_ms, end_ms), name)
    }

    /// Host events (health checks changing state...) with `t_ms >= since_ms` whose labels
    /// satisfy `matchers` (the event's `kind` matches as label `kind`), oldest first, at most
    /// `limit` (the newest ones when more match).
    fn events(&self, matchers: &[Matcher], since_ms: i64, limit: usize) -> Vec<Event> {
        let _ = (matchers, since_ms, limit);
        Vec::new()
    }
}

/// The operator's side of an engine: counts, its own metrics, a forced flush.
pub trait Admin: Send + Sync + 'static {
    /// Counts describing what is held.
    fn stats(&self) -> StorageStats;

    /// Cuts what is in memory into blocks and compacts now (`POST /api/v1/admin/tsdb/flush`).
    /// Blocking: call it off the async runtime.
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// Puts a consistent copy of the metrics under `<data dir>/snapshots/<name>` (the head cut
    /// into blocks first unless `skip_head`) and returns the name
    /// (`POST /api/v1/admin/tsdb/snapshot`). Blocking.
    fn snapshot(&self, skip_head: bool) -> Result<String, StorageError> {
        let _ = skip_head;
        Err(StorageError::Write("this engine takes no snapshots".into()))
    }

    /// Deletes the samples in `[start, end]` (ms, inclusive) of the series matching
    /// `matchers` (`POST /api/v1/admin/tsdb/delete_series`); returns how many series matched.
    /// Blocking.
    fn delete_series(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<u64, StorageError> {
        let _ = (matchers, start, end);
        Err(StorageError::Write("this engine does not delete".into()))
    }

    /// Rewrites what deletions hide so their records can go
    /// (`POST /api/v1/admin/tsdb/clean_tombstones`); returns the blocks rewritten. Blocking.
    fn clean_tombstones(&self) -> Result<u64, StorageError> {
        Ok(0)
    }

    /// Appends the engine's own metrics in the text exposition format.
    fn render_metrics(&self, out: &mut String) {
        let _ = out;
    }
}

/// A whole engine: every role. The binary's wiring holds one as `Arc<dyn Storage>` and hands
/// each part the role it needs (PromQL gets a [`Querier`]).
pub trait Storage: Appender + Querier + Admin {}

impl<T: Appender + Querier + Admin + ?Sized> Storage for T {}

/// One series' rollup buckets, ordered by end.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupData {
    /// The series.
    pub labels: Labels,
    /// Buckets.
    pub buckets: Vec<rollup::Bucket>,
}

/// Rollup buckets computed from raw samples: the buckets ending in `[start, end]` cover
/// samples from `start - resolution` (exclusive).
pub fn rollup_from_raw<S: Querier + ?Sized>(
    s: &S,
    matchers: &[Matcher],
    start_ms: i64,
    end_ms: i64,
    resolution_ms: i64,
    max_rows: usize,
) -> Result<Vec<RollupData>, StorageError> {
    let from = start_ms.saturating_sub(resolution_ms).saturating_add(1);
    let data = s.select(matchers, from, end_ms, usize::MAX)?;
    let mut rows = 0;
    let mut out = Vec::with_capacity(data.len());
    for d in data {
        let mut buckets = rollup::buckets(&d.samples, resolution_ms);
        buckets.retain(|b| b.end >= start_ms && b.end <= end_ms);
        rows += buckets.len();
        if rows > max_rows {
            return Err(StorageError::TooManySamples { limit: max_rows });
        }
        if !buckets.is_empty() {
            out.push(RollupData {
                labels: d.labels,
                buckets,
            });
        }
    }
    Ok(out)
}

/// What a storage engine holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// Series.
    pub series: u64,
    /// Samples.
    pub samples: u64,
    /// Samples that arrived for a timestamp the series already had (and replaced it). A batch
    /// stored twice would show here, so the end-to-end tests assert it stays 0.
    pub overwritten: u64,
}

/// The job label given to agent series that carry none.
pub const AGENT_JOB: &str = "telltale-agent";

/// Stamps an agent's label set with its origin: `instance` is always the agent's certificate
/// name (whatever the payload said), `job` defaults to [`AGENT_JOB`], empty values are
/// dropped (Prometheus treats them as absent), names are sorted and a repeated name keeps its
/// first value. Returns false when no metric name is left: such a series is not stored.
/// Ingest and log replay both go through this, so stored data never depends on payload claims.
pub fn stamp_agent_labels<'a>(pairs: &mut Vec<(&'a str, &'a str)>, agent: &'a str) -> bool {
    pairs.retain(|(_, v)| !v.is_empty());
    match pairs.iter_mut().find(|(k, _)| *k == "instance") {
        Some(p) => p.1 = agent,
        None => pairs.push(("instance", agent)),
    }
    if !pairs.iter().any(|(k, _)| *k == "job") {
        pairs.push(("job", AGENT_JOB));
    }
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    pairs.dedup_by(|later, earlier| later.0 == earlier.0);
    pairs
        .iter()
        .any(|(k, _)| *k == telltale_common::model::METRIC_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamping_overrides_instance_and_defaults_job() {
        let mut p = vec![
            ("job", "node"),
            ("__name__", "m"),
            ("instance", "liar"),
            ("x", ""),
        ];
        assert!(stamp_agent_labels(&mut p, "web-1"));
        assert_eq!(
            p,
            vec![("__name__", "m"), ("instance", "web-1"), ("job", "node")]
        );
        let mut p = vec![("a", "1")];
        assert!(!stamp_agent_labels(&mut p, "web-1"));
        let mut p = vec![("__name__", "m"), ("a", "1"), ("a", "2")];
        assert!(stamp_agent_labels(&mut p, "w"));
        assert_eq!(
            p,
            vec![
                ("__name__", "m"),
                ("a", "1"),
                ("instance", "w"),
                ("job", AGENT_JOB)
            ]
        );
    }
}
