//! The log store as the aggregator runs it: appends go to the store, and the lines of every
//! stored append are handed on to what watches them — the pattern thread, through a bounded
//! queue (never waited on: a full queue skips and counts them), and live tails
//! (`/loki/api/v1/tail`), through a broadcast channel a slow tail falls behind on without
//! holding anyone up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use telltale_common::model::{Labels, now_ms};
use tokio::sync::broadcast;

use crate::labels::Matcher;
use crate::logs::patterns::Patterns;
use crate::logs::store::{
    BoxFuture, IndexStats, LogAppend, LogAppender, LogOutcome, LogQuerier, LogStore, LogStoreError,
    Selected, Selection, Tally,
};

/// Appends waiting for the pattern thread.
const QUEUE: usize = 256;
/// Appends a live tail may fall behind by before it misses some.
const TAIL_QUEUE: usize = 1024;

/// The streams of one stored append, as the store keeps them (`(ns, line)` by stream).
pub type Stored = Arc<Vec<(Labels, Vec<(i64, String)>)>>;

/// A log store whose stored appends feed a [`Patterns`] index and live tails.
pub struct Observed {
    inner: Arc<dyn LogStore>,
    patterns: Arc<Patterns>,
    tx: Mutex<SyncSender<Stored>>,
    /// Appends queued for or being clustered: when the queue is full, no copy is made for it.
    pending: Arc<AtomicUsize>,
    tail: broadcast::Sender<Stored>,
}

impl Observed {
    /// Wraps `inner`; starts the pattern thread (it ends when this is dropped).
    pub fn new(inner: Arc<dyn LogStore>, patterns: Arc<Patterns>) -> std::io::Result<Observed> {
        let (tx, rx) = sync_channel::<Stored>(QUEUE);
        let p = patterns.clone();
        let pending = Arc::new(AtomicUsize::new(0));
        let done = pending.clone();
        std::thread::Builder::new()
            .name("log-patterns".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let now = now_ms();
                    for (labels, lines) in job.iter() {
                        p.feed(labels, lines, now);
                    }
                    done.fetch_sub(1, Ordering::Relaxed);
                }
            })?;
        Ok(Observed {
            inner,
            patterns,
            tx: Mutex::new(tx),
            pending,
            tail: broadcast::channel(TAIL_QUEUE).0,
        })
    }

    /// Lines stored from now on, append by append (a receiver that falls more than
    /// `TAIL_QUEUE` appends behind is told how many it missed).
    pub fn subscribe(&self) -> broadcast::Receiver<Stored> {
        self.tail.subscribe()
    }
}

/// The streams of an append as the store keeps them (an agent's `instance` stamped).
fn copy(req: &LogAppend) -> Stored {
    Arc::new(
        req.streams
            .iter()
            .map(|s| {
                let mut labels =
                    Labels::from_pairs(s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                if let Some(o) = &req.origin {
                    labels.set("instance", &o.agent);
                }
                let lines = s.entries.iter().map(|e| (e.t_ns, e.line.clone())).collect();
                (labels, lines)
            })
            .collect(),
    )
}

impl LogAppender for Observed {
    fn append(&self, req: LogAppend) -> BoxFuture<'_, Result<LogOutcome, LogStoreError>> {
        Box::pin(async move {
            let lines: usize = req.streams.iter().map(|s| s.entries.len()).sum();
            let for_patterns = self.pending.load(Ordering::Relaxed) < QUEUE;
            let for_tails = self.tail.receiver_count() > 0;
            let job = (for_patterns || for_tails).then(|| copy(&req));
            let out = self.inner.append(req).await;
            if !matches!(out, Ok(LogOutcome::Stored { .. })) {
                return out;
            }
            let mut clustered = false;
            if let Some(job) = job {
                if for_tails {
                    // No receiver left: nothing to do.
                    let _ = self.tail.send(job.clone());
                }
                if for_patterns {
                    self.pending.fetch_add(1, Ordering::Relaxed);
                    let sent = self
                        .tx
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .try_send(job);
                    clustered = sent.is_ok();
                    if !clustered {
                        self.pending.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
            if !clustered {
                self.patterns
                    .skipped
                    .fetch_add(lines as u64, Ordering::Relaxed);
            }
            out
        })
    }
}

impl LogQuerier for Observed {
    fn select(&self, sel: &Selection<'_>) -> Result<Vec<Selected>, LogStoreError> {
        self.inner.select(sel)
    }

    fn tally(
        &self,
        matchers: &[Matcher],
        edges: &[i64],
        max_bytes: u64,
    ) -> Result<Vec<Tally>, LogStoreError> {
        self.inner.tally(matchers, edges, max_bytes)
    }

    fn streams(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64) -> Vec<Labels> {
        self.inner.streams(matchers, start_ns, end_ns)
    }

    fn index_stats(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64) -> IndexStats {
        self.inner.index_stats(matchers, start_ns, end_ns)
    }
}
