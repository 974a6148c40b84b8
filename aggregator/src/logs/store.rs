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

/// A stream's labels and its lines' `(ns, bytes)`, by time.
pub type StreamSizes = (Labels, Vec<(i64, u32)>);

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

    /// The times and byte lengths of the selected streams' lines in the range, by time — what
    /// counting queries need, without the lines. Each line counts [`SIZE_BYTES`] against
    /// `max_bytes`. This default reads the lines; an engine can do better.
    fn sizes(&self, sel: &Selection<'_>) -> Result<Vec<StreamSizes>, LogStoreError> {
        sizes_by_select(self, sel)
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

/// [`LogQuerier::sizes`] by reading the lines.
pub fn sizes_by_select<Q: LogQuerier + ?Sized>(
    q: &Q,
    sel: &Selection<'_>,
) -> Result<Vec<StreamSizes>, LogStoreError> {
    Ok(q.select(sel)?
        .into_iter()
        .map(|s| {
            let v = s
                .entries
                .iter()
                .map(|e| (e.t_ns, u32::try_from(e.line.len()).unwrap_or(u32::MAX)))
                .collect();
            (s.labels, v)
        })
        .collect())
}

/// A whole log store.
pub trait LogStore: LogAppender + LogQuerier {}

impl<T: LogAppender + LogQuerier> LogStore for T {}
