//! The log store with patterns learnt from what it stores: appends go to the store, and the
//! lines of every stored append are handed to the pattern thread through a bounded queue
//! (never waited on: a full queue skips and counts them).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use telltale_common::model::{Labels, now_ms};

use super::{MAX_LINE_BYTES, Patterns};
use crate::labels::Matcher;
use crate::logs::store::{
    BoxFuture, IndexStats, LogAppend, LogAppender, LogOutcome, LogQuerier, LogStore, LogStoreError,
    Selected, Selection,
};

/// Appends waiting for the pattern thread.
const QUEUE: usize = 256;

type Job = Vec<(Labels, Vec<(i64, String)>)>;

/// A log store whose appends also feed a [`Patterns`] index.
pub struct WithPatterns {
    inner: Arc<dyn LogStore>,
    patterns: Arc<Patterns>,
    tx: Mutex<SyncSender<Job>>,
    /// Appends queued or being clustered: when the queue is full, no copy is made at all.
    pending: Arc<AtomicUsize>,
}

impl WithPatterns {
    /// Wraps `inner`; starts the pattern thread (it ends when this is dropped).
    pub fn new(inner: Arc<dyn LogStore>, patterns: Arc<Patterns>) -> std::io::Result<WithPatterns> {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let p = patterns.clone();
        let pending = Arc::new(AtomicUsize::new(0));
        let done = pending.clone();
        std::thread::Builder::new()
            .name("log-patterns".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let now = now_ms();
                    for (labels, lines) in job {
                        p.feed(&labels, &lines, now);
                    }
                    done.fetch_sub(1, Ordering::Relaxed);
                }
            })?;
        Ok(WithPatterns {
            inner,
            patterns,
            tx: Mutex::new(tx),
            pending,
        })
    }
}

/// The streams of an append as the store keeps them (an agent's `instance` stamped), lines
/// cut to what the patterns read.
fn copy(req: &LogAppend) -> Job {
    req.streams
        .iter()
        .map(|s| {
            let mut labels =
                Labels::from_pairs(s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            if let Some(o) = &req.origin {
                labels.set("instance", &o.agent);
            }
            let lines = s
                .entries
                .iter()
                .map(|e| {
                    let mut end = e.line.len().min(MAX_LINE_BYTES);
                    while !e.line.is_char_boundary(end) {
                        end -= 1;
                    }
                    (e.t_ns, e.line[..end].to_string())
                })
                .collect();
            (labels, lines)
        })
        .collect()
}

impl LogAppender for WithPatterns {
    fn append(&self, req: LogAppend) -> BoxFuture<'_, Result<LogOutcome, LogStoreError>> {
        Box::pin(async move {
            let lines: usize = req.streams.iter().map(|s| s.entries.len()).sum();
            let job = (self.pending.load(Ordering::Relaxed) < QUEUE).then(|| copy(&req));
            let out = self.inner.append(req).await;
            if matches!(out, Ok(LogOutcome::Stored { .. })) {
                let sent = job.map(|job| {
                    self.pending.fetch_add(1, Ordering::Relaxed);
                    self.tx
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .try_send(job)
                });
                if let Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) = sent {
                    self.pending.fetch_sub(1, Ordering::Relaxed);
                }
                if !matches!(sent, Some(Ok(()))) {
                    self.patterns
                        .skipped
                        .fetch_add(lines as u64, Ordering::Relaxed);
                }
            }
            out
        })
    }
}

impl LogQuerier for WithPatterns {
    fn select(&self, sel: &Selection<'_>) -> Result<Vec<Selected>, LogStoreError> {
        self.inner.select(sel)
    }

    fn streams(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64) -> Vec<Labels> {
        self.inner.streams(matchers, start_ns, end_ns)
    }

    fn index_stats(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64) -> IndexStats {
        self.inner.index_stats(matchers, start_ns, end_ns)
    }
}
