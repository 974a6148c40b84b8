//! The storage interface: what ingest appends to and what queries read from.
//!
//! PromQL and the HTTP API depend on this trait only; the binary's wiring picks the engine
//! (today [`crate::logstore::LogStore`]). A later engine replaces the implementation, not the trait.

use std::future::Future;
use std::pin::Pin;

use telltale_common::model::{Labels, Sample, SeriesSamples};

/// Where a batch came from: a repeated origin is stored once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The agent's name, from its certificate.
    pub agent: String,
    /// The agent's buffer epoch (see `Hello::epoch`).
    pub epoch: u64,
    /// The batch's sequence number within the epoch.
    pub sequence: u64,
}

/// A batch of samples to store.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// Set for agent batches, which are de-duplicated; `None` for the aggregator's own series.
    pub origin: Option<Origin>,
    /// The samples.
    pub series: Vec<SeriesSamples>,
    /// The same series as MessagePack (a wire `ClientMessage::Batch` payload), when the caller
    /// has it: the engine then logs these bytes as they are instead of encoding again; on
    /// replay it decodes them and applies [`stamp_agent_series`] with the origin's agent.
    pub encoded: Option<Vec<u8>>,
}

/// What happened to an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The samples are durable.
    Stored {
        /// How many samples were stored.
        samples: usize,
    },
    /// This origin was stored before; nothing was written again (it is durable).
    Duplicate,
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

/// How a label matcher compares.
#[derive(Debug, Clone)]
pub enum MatchOp {
    /// `=`
    Equal(String),
    /// `!=`
    NotEqual(String),
    /// `=~` (the regex is anchored at both ends)
    Regex(regex::Regex),
    /// `!~` (anchored)
    NotRegex(regex::Regex),
}

/// A label matcher such as `job="node"`. A missing label matches as the empty string.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label name.
    pub name: String,
    /// The comparison.
    pub op: MatchOp,
}

impl Matcher {
    /// An equality matcher.
    pub fn equal(name: &str, value: &str) -> Self {
        Matcher {
            name: name.to_string(),
            op: MatchOp::Equal(value.to_string()),
        }
    }

    /// Whether label value `v` (empty when absent) satisfies the matcher.
    pub fn matches(&self, v: &str) -> bool {
        match &self.op {
            MatchOp::Equal(x) => v == x,
            MatchOp::NotEqual(x) => v != x,
            MatchOp::Regex(r) => r.is_match(v),
            MatchOp::NotRegex(r) => !r.is_match(v),
        }
    }

    /// Whether the series' labels satisfy the matcher.
    pub fn matches_labels(&self, labels: &Labels) -> bool {
        self.matches(labels.get(&self.name).unwrap_or(""))
    }
}

/// One series' samples in a time range.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesData {
    /// The series.
    pub labels: Labels,
    /// Samples with `start <= t <= end`, ordered by time.
    pub samples: Vec<Sample>,
}

/// A boxed future, so the trait can be used as `dyn Storage`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A storage engine.
pub trait Storage: Send + Sync + 'static {
    /// Stores a batch; resolves once it is durable (or known to be a duplicate).
    fn append(&self, req: AppendRequest) -> BoxFuture<'_, Result<AppendOutcome, StorageError>>;

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

    /// Counts describing what is held.
    fn stats(&self) -> StorageStats;
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

/// Stamps an agent batch with its origin: `instance` is always the agent's certificate name
/// (whatever the payload said), `job` defaults to [`AGENT_JOB`]. Label sets are normalized
/// (sorted, de-duplicated). Series without a metric name are removed; returns how many.
/// Ingest and log replay both call this, so stored data never depends on payload claims.
pub fn stamp_agent_series(series: &mut Vec<SeriesSamples>, agent: &str) -> usize {
    let before = series.len();
    series.retain(|s| s.labels.metric_name().is_some_and(|n| !n.is_empty()));
    for s in series.iter_mut() {
        s.labels.normalize();
        s.labels.set("instance", agent);
        if s.labels.get("job").is_none() {
            s.labels.set("job", AGENT_JOB);
        }
    }
    before - series.len()
}
