//! The trace store's interface, by role: [`SpanAppender`] (agent batches), [`TraceQuerier`]
//! (the Jaeger API, later the UI and correlation). The API uses these traits only; the
//! engine behind them is [`super::engine`].

use telltale_common::trace::{Span, SpanKind, TraceId};

use crate::durable::dedup::Origin;

/// A boxed future, so the traits can be used as `dyn`.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Spans to store.
#[derive(Debug, Clone)]
pub struct SpanAppend {
    /// The agent batch they came in (de-duplicated by it); `None` for spans from elsewhere.
    pub origin: Option<Origin>,
    /// The spans; `instance` (the agent) is added to each span's resource.
    pub spans: Vec<Span>,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq)]
pub enum SpanOutcome {
    /// The spans are durable (sampling decides later which are kept for queries).
    Stored {
        /// Spans written.
        spans: usize,
    },
    /// This origin was stored before; nothing was written again.
    Duplicate,
}

/// Trace store errors.
#[derive(Debug, thiserror::Error)]
pub enum TraceStoreError {
    /// Writing or syncing failed; nothing of the request is acknowledged.
    #[error("trace store write failed: {0}")]
    Write(std::io::Error),
    /// The store is shutting down.
    #[error("trace store is closed")]
    Closed,
    /// The data directory could not be opened.
    #[error("cannot open the trace store in {dir}: {source}")]
    Open {
        /// The directory.
        dir: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Reading a block failed.
    #[error("trace block {path}: {reason}")]
    Read {
        /// The block.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// A search: traces with at least one span matching every condition given (Jaeger's
/// semantics: service, operation, tags, duration all hold for one span), started in
/// `[start_ns, end_ns]`, newest first, at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct TraceSearch {
    /// The span's service.
    pub service: String,
    /// The span's name (any when `None`).
    pub operation: Option<String>,
    /// Attribute (or resource attribute) values the span has, exactly; `error=true` also
    /// matches a span with an error status.
    pub tags: Vec<(String, String)>,
    /// Shortest span duration (ns).
    pub min_duration_ns: Option<u64>,
    /// Longest span duration (ns).
    pub max_duration_ns: Option<u64>,
    /// Earliest span start (ns).
    pub start_ns: u64,
    /// Latest span start (ns).
    pub end_ns: u64,
    /// Most traces.
    pub limit: usize,
}

impl TraceSearch {
    /// Whether `s` meets every condition.
    pub fn matches(&self, s: &Span) -> bool {
        s.service == self.service
            && self.operation.as_ref().is_none_or(|o| *o == s.name)
            && s.start_ns >= self.start_ns
            && s.start_ns <= self.end_ns
            && self.min_duration_ns.is_none_or(|d| s.duration_ns() >= d)
            && self.max_duration_ns.is_none_or(|d| s.duration_ns() <= d)
            && self.tags.iter().all(|(k, v)| has_tag(s, k, v))
    }
}

/// Whether a span carries `key=value` (attributes, then resource attributes; `error=true`
/// also matches an error status, as Jaeger's clients write errors as that tag).
pub fn has_tag(s: &Span, key: &str, value: &str) -> bool {
    let hit = |p: &[(String, String)]| p.iter().any(|(k, v)| k == key && v == value);
    hit(&s.attributes)
        || hit(&s.resource)
        || (key == "error"
            && value == "true"
            && s.status == telltale_common::trace::SpanStatus::Error)
}

/// Calls between two services, from parent/child spans of stored traces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Edge {
    /// The calling service.
    pub parent: String,
    /// The called service.
    pub child: String,
    /// Calls.
    pub calls: u64,
    /// Calls whose child span failed.
    pub errors: u64,
}

/// The write side.
pub trait SpanAppender: Send + Sync + 'static {
    /// Stores spans; resolves once they are durable (or known to be a duplicate).
    fn append(&self, req: SpanAppend) -> BoxFuture<'_, Result<SpanOutcome, TraceStoreError>>;
}

/// The read side (blocking: callers run it off the async threads).
pub trait TraceQuerier: Send + Sync + 'static {
    /// Every stored span of a trace, by start (empty when unknown).
    fn trace(&self, id: &TraceId) -> Result<Vec<Span>, TraceStoreError>;

    /// Traces with a span matching `q`, newest first: each trace's spans, by start.
    fn search(&self, q: &TraceSearch) -> Result<Vec<Vec<Span>>, TraceStoreError>;

    /// Services with stored spans, sorted.
    fn services(&self) -> Vec<String>;

    /// A service's operations and their kinds, sorted.
    fn operations(&self, service: &str) -> Vec<(String, SpanKind)>;

    /// Calls between services in traces that started in `[start_ns, end_ns]`.
    fn dependencies(&self, start_ns: u64, end_ns: u64) -> Vec<Edge>;

    /// Appends the store's own metrics (Prometheus text) to `out`.
    fn render_metrics(&self, _out: &mut String) {}

    /// The service graph as series at `t_ms` (running totals of every span received).
    fn graph_series(&self, _t_ms: i64) -> Vec<telltale_common::model::SeriesSamples> {
        Vec::new()
    }

    /// The calls between services and the hosts of each service seen in spans.
    fn topology(&self) -> super::graph::Topology {
        super::graph::Topology::default()
    }
}

/// A whole trace store.
pub trait TraceStore: SpanAppender + TraceQuerier {}

impl<T: SpanAppender + TraceQuerier> TraceStore for T {}

/// A trace id from its hex (Jaeger also accepts ids shorter than 32 digits: left-padded).
pub fn parse_trace_id(s: &str) -> Option<TraceId> {
    if s.is_empty() || s.len() > 32 {
        return None;
    }
    let padded = format!("{s:0>32}");
    telltale_common::trace::unhex::<16>(&padded).filter(|id| *id != [0; 16])
}
