//! The log store's interface, by role like the metrics storage's: [`LogAppender`] (agents,
//! Loki push), [`LogQuerier`] (LogQL, the Loki API, incidents). LogQL and the API use these
//! traits only; the engine behind them is [`super::engine`].

use std::future::Future;
use std::pin::Pin;

use telltale_common::model::Labels;
use telltale_common::wire::{LogEntry, LogStream};

use crate::durable::dedup::Origin;
use crate::labels::Matcher;

/// A boxed future, so the traits can be used as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Lines to store.
#[derive(Debug, Clone)]
pub struct LogAppend {
    /// Set for agent batches: de-duplicated by origin, and every stream gets `instance` = the
    /// agent. `None` for Loki push.
    pub origin: Option<Origin>,
    /// The streams and their lines.
    pub streams: Vec<LogStream>,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq)]
pub enum LogOutcome {
    /// The lines are durable.
    Stored {
        /// Lines stored.
        lines: usize,
    },
    /// This origin was stored before; nothing was written again.
    Duplicate,
}

/// Log store errors.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// Writing or syncing the log failed; nothing of the request is acknowledged.
    #[error("log store write failed: {0}")]
    Write(std::io::Error),
    /// The store is shutting down.
    #[error("log store is closed")]
    Closed,
    /// The data directory could not be opened.
    #[error("cannot open the log store in {dir}: {source}")]
    Open {
        /// The directory.
        dir: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A query would read more than allowed.
    #[error(
        "the query would read more than {limit} bytes of log lines (logs.max_query_bytes); narrow the selector or the time range"
    )]
    TooMuchData {
        /// The limit.
        limit: u64,
    },
    /// A stream or a line is not acceptable (an invalid label name, a line over the limit).
    #[error("{0}")]
    Invalid(String),
}

/// What a query reads: the streams matching every matcher, lines with `start_ns <= t <
/// end_ns`.
#[derive(Debug, Clone)]
pub struct Selection<'a> {
    /// Stream matchers (at least one).
    pub matchers: &'a [Matcher],
    /// Inclusive start (ns).
    pub start_ns: i64,
    /// Exclusive end (ns).
    pub end_ns: i64,
    /// Substrings every line the caller keeps contains (from `|=` filters): chunks whose
    /// token filter rules one out are not decompressed. Lines without them may still be
    /// returned; the caller filters.
    pub needles: &'a [String],
    /// Most bytes of lines to read before failing with [`LogStoreError::TooMuchData`].
    pub max_bytes: u64,
}

/// The lines of one stream a query read, oldest first.
#[derive(Debug, Clone)]
pub struct Selected {
    /// The stream's labels.
    pub labels: Labels,
    /// Its lines in the range, by time.
    pub entries: Vec<LogEntry>,
}

/// Lines and bytes of one stream in the intervals between consecutive edges of a
/// [`LogQuerier::tally`]: entry `j` covers `edges[j] < t <= edges[j + 1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// The stream's labels.
    pub labels: Labels,
    /// Lines per interval.
    pub lines: Vec<u64>,
    /// Bytes of lines per interval.
    pub bytes: Vec<u64>,
}

impl Tally {
    /// An empty tally over `intervals` intervals.
    pub fn new(labels: Labels, intervals: usize) -> Tally {
        Tally {
            labels,
            lines: vec![0; intervals],
            bytes: vec![0; intervals],
        }
    }

    /// Counts a line at `t_ns` of `bytes` (outside every interval: not counted).
    pub fn add(&mut self, edges: &[i64], t_ns: i64, bytes: u64) {
        if let Some(j) = interval(edges, t_ns) {
            self.lines[j] += 1;
            self.bytes[j] += bytes;
        }
    }

    /// Whether this stream has no line in any interval.
    pub fn is_empty(&self) -> bool {
        self.lines.iter().all(|&n| n == 0)
    }
}

/// The interval of `edges` holding `t_ns` (`edges[j] < t <= edges[j + 1]`), if any.
pub fn interval(edges: &[i64], t_ns: i64) -> Option<usize> {
    let p = edges.partition_point(|&e| e < t_ns);
    (p >= 1 && p < edges.len()).then(|| p - 1)
}

/// What a line read for its time and size alone counts against a query's byte bound.
pub const SIZE_BYTES: u64 = 16;

/// The write side.
pub trait LogAppender: Send + Sync + 'static {
    /// Stores lines; resolves once they are durable (or known to be a duplicate).
    fn append(&self, req: LogAppend) -> BoxFuture<'_, Result<LogOutcome, LogStoreError>>;
}

/// What `/loki/api/v1/index/stats` reports for a selector and a range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    /// Streams with lines in the range.
    pub streams: u64,
    /// Chunks those lines are in (the head counts as one per stream).
    pub chunks: u64,
    /// Lines.
    pub entries: u64,
    /// Bytes of lines.
    pub bytes: u64,
}

/// The read side.
pub trait LogQuerier: Send + Sync + 'static {
    /// The lines of the selected streams in the range.
    fn select(&self, sel: &Selection<'_>) -> Result<Vec<Selected>, LogStoreError>;

    /// Lines and bytes of the selected streams in each interval between consecutive
    /// `edges` (sorted, at least two) — what counting queries need, without the lines.
    /// Streams with no line in any interval are left out; the rest come sorted by labels.
    /// Each line the store decodes counts [`SIZE_BYTES`] against `max_bytes` (a chunk
    /// counted from its index alone costs nothing). This default reads the lines; an engine
    /// can do better.
    fn tally(
        &self,
        matchers: &[Matcher],
        edges: &[i64],
        max_bytes: u64,
    ) -> Result<Vec<Tally>, LogStoreError> {
        tally_by_select(self, matchers, edges, max_bytes)
    }

    /// The label sets of streams matching `matchers` (all streams when empty) with lines in
    /// `[start_ns, end_ns)`.
    fn streams(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64) -> Vec<Labels>;

    /// Sizes of what a selector covers in a range, from the index where the engine can
    /// (whole chunks, as Loki counts them); this default reads the lines.
    fn index_stats(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64) -> IndexStats {
        let sel = Selection {
            matchers,
            start_ns,
            end_ns,
            needles: &[],
            max_bytes: u64::MAX,
        };
        let mut st = IndexStats::default();
        for s in self.select(&sel).unwrap_or_default() {
            st.streams += 1;
            st.chunks += 1;
            st.entries += s.entries.len() as u64;
            st.bytes += s.entries.iter().map(|e| e.line.len() as u64).sum::<u64>();
        }
        st
    }
}

/// [`LogQuerier::tally`] by reading the lines.
pub fn tally_by_select<Q: LogQuerier + ?Sized>(
    q: &Q,
    matchers: &[Matcher],
    edges: &[i64],
    max_bytes: u64,
) -> Result<Vec<Tally>, LogStoreError> {
    let (Some(&first), Some(&last)) = (edges.first(), edges.last()) else {
        return Ok(Vec::new());
    };
    let sel = Selection {
        matchers,
        start_ns: first.saturating_add(1),
        end_ns: last.saturating_add(1),
        needles: &[],
        max_bytes,
    };
    let intervals = edges.len().saturating_sub(1);
    Ok(q.select(&sel)?
        .into_iter()
        .map(|s| {
            let mut t = Tally::new(s.labels, intervals);
            for e in &s.entries {
                t.add(edges, e.t_ns, e.line.len() as u64);
            }
            t
        })
        .filter(|t| !t.is_empty())
        .collect())
}

/// A whole log store.
pub trait LogStore: LogAppender + LogQuerier {}

impl<T: LogAppender + LogQuerier> LogStore for T {}
