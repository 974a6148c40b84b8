//! The log engine behind [`super::store`]: the same durability contract as the metrics
//! engine, on the same shared code ([`crate::durable`]).
//!
//! ```text
//! DATA_DIR/logs/wal/NNNNNNNNNNNNNNNNNNNN.seg   appends, framed, group-committed (fdatasync)
//! DATA_DIR/logs/blocks/NNNNNNNN.lblk           immutable blocks (layout in block.rs)
//! DATA_DIR/logs/checkpoint                     WAL segment the blocks cover + stored batches
//! DATA_DIR/logs/quarantine/                    blocks that did not open
//! ```
//!
//! One writer thread takes appends in groups: it refuses replays of agent batches already
//! stored, writes the group to the WAL and syncs it, applies it to the in-memory head, then
//! answers — so an acknowledged line is on disk. When the head holds `head_max_bytes` of
//! lines or is `head_max_age` old, the writer cuts it into a block (synced and renamed), rolls
//! the WAL, writes the checkpoint and deletes the segments the block covers. Start-up loads
//! the blocks (a damaged one is quarantined and counted), then replays the WAL from the
//! checkpoint (a damaged record is skipped and counted, a torn tail cut off): it never blocks
//! on damage. A maintenance thread deletes blocks past `retention`, then the oldest while the
//! blocks take more than `max_bytes`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as smpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use telltale_common::model::{Labels, valid_label_name};
use telltale_common::wire::{LogEntry, LogStream};
use tokio::sync::oneshot;

use super::block::{self, Block};
use super::store::{BoxFuture, LogAppend, LogAppender, LogOutcome, LogStoreError};
use crate::durable::blockstore::{self, Checkpoint, PathError};
use crate::durable::dedup::Dedup;
use crate::durable::feed::{StoreFeed, WalHold};
use crate::durable::segments::Writer;

/// Largest WAL record read back (a record is one append; agents' frames are capped lower).
const MAX_RECORD: u32 = 256 << 20;

/// Settings (`[logs]` in aggregator.toml).
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Lines older than this are deleted (whole blocks).
    pub retention: Duration,
    /// The blocks' total size is kept under this (oldest blocks deleted first).
    pub max_bytes: u64,
    /// The head is cut into a block once its lines take this many bytes.
    pub head_max_bytes: u64,
    /// ... or once its oldest line arrived this long ago.
    pub head_max_age: Duration,
    /// Segments from this one on are kept for the WAL's readers (the ClickHouse exporter).
    pub wal_hold: WalHold,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            retention: Duration::from_secs(7 * 86_400),
            max_bytes: 10 << 30,
            head_max_bytes: 64 << 20,
            head_max_age: Duration::from_secs(15 * 60),
            wal_hold: WalHold::default(),
        }
    }
}

/// The engine's counters (`telltale_aggregator_logs_*`).
#[derive(Debug, Default)]
pub struct LogCounters {
    /// Lines stored.
    pub lines: AtomicU64,
    /// Bytes of lines stored.
    pub bytes: AtomicU64,
    /// Appends answered as duplicates.
    pub duplicates: AtomicU64,
    /// WAL records skipped as damaged at start-up.
    pub corrupt_records: AtomicU64,
    /// Blocks moved to quarantine at start-up.
    pub quarantined_blocks: AtomicU64,
    /// Blocks written.
    pub blocks_written: AtomicU64,
    /// Blocks deleted by retention.
    pub expired_blocks: AtomicU64,
    /// Failed WAL or block writes.
    pub write_errors: AtomicU64,
}

#[derive(Debug, Serialize, Deserialize)]
struct WalRecord {
    agent: Option<String>,
    epoch: u64,
    sequence: u64,
    streams: Vec<LogStream>,
}

/// The streams of one WAL record (a frame's payload, as [`crate::durable::feed`] hands it to
/// the WAL's readers); damage is an error, never a panic.
pub fn decode_wal_record(
    payload: &[u8],
) -> Result<Vec<LogStream>, telltale_common::codec::CodecError> {
    telltale_common::codec::decode_payload::<WalRecord>(payload).map(|r| r.streams)
}

impl blockstore::Record for WalRecord {
    fn origin(&self) -> Option<(&str, u64, u64)> {
        self.agent
            .as_deref()
            .map(|a| (a, self.epoch, self.sequence))
    }
}

#[derive(Default)]
struct Head {
    index: HashMap<Labels, usize>,
    streams: Vec<(Labels, Vec<LogEntry>)>,
    bytes: u64,
    since: Option<Instant>,
}

impl Head {
    fn apply(&mut self, streams: Vec<LogStream>) -> (usize, u64) {
        let (mut lines, mut bytes) = (0, 0u64);
        for s in streams {
            let labels = Labels::from_pairs(s.labels);
            let i = match self.index.get(&labels) {
                Some(&i) => i,
                None => {
                    self.streams.push((labels.clone(), Vec::new()));
                    self.index.insert(labels, self.streams.len() - 1);
                    self.streams.len() - 1
                }
            };
            lines += s.entries.len();
            bytes += s.entries.iter().map(|e| e.line.len() as u64).sum::<u64>();
            self.streams[i].1.extend(s.entries);
        }
        if lines > 0 && self.since.is_none() {
            self.since = Some(Instant::now());
        }
        self.bytes += bytes;
        (lines, bytes)
    }
}

struct Inner {
    dir: PathBuf,
    opts: LogOptions,
    head: RwLock<Head>,
    blocks: RwLock<Vec<Arc<Block>>>,
    dedup: Mutex<Dedup>,
    next_block: AtomicU64,
    counters: LogCounters,
    feed: StoreFeed,
}

enum Job {
    Append {
        record: WalRecord,
        done: oneshot::Sender<Result<LogOutcome, LogStoreError>>,
    },
    Cut {
        done: oneshot::Sender<Result<(), LogStoreError>>,
    },
}

/// The engine.
pub struct LogEngine {
    inner: Arc<Inner>,
    tx: Mutex<smpsc::Sender<Job>>,
}

fn open_err(e: PathError) -> LogStoreError {
    LogStoreError::Open {
        dir: e.path.display().to_string(),
        source: e.source,
    }
}

impl LogEngine {
    /// Opens (or creates) the store in `dir` and starts its writer and maintenance threads.
    pub fn open(dir: &Path, opts: LogOptions) -> Result<LogEngine, LogStoreError> {
        blockstore::create_dirs(dir).map_err(open_err)?;
        let counters = LogCounters::default();
        let (blocks, next_block) = blockstore::load_blocks(
            dir,
            "lblk",
            "log",
            Block::open,
            &counters.quarantined_blocks,
        )
        .map_err(open_err)?;
        let cp = blockstore::resume(dir, &blocks).map_err(open_err)?;
        let mut head = Head::default();
        let mut dedup = Dedup::from_list(cp.dedup.clone());
        let writer = blockstore::replay(
            dir,
            &cp,
            MAX_RECORD,
            "log",
            &mut dedup,
            &counters.corrupt_records,
            |r: WalRecord| {
                let (lines, bytes) = head.apply(r.streams);
                counters.lines.fetch_add(lines as u64, Ordering::Relaxed);
                counters.bytes.fetch_add(bytes, Ordering::Relaxed);
            },
        )
        .map_err(open_err)?;
        // Segments the blocks cover go, but those the WAL's readers hold.
        let _ = blockstore::delete_covered(dir, cp.wal_segment.min(opts.wal_hold.get()));
        let feed = StoreFeed::new(dir.join("wal"), opts.wal_hold.clone());
        feed.publish_tip(writer.segment(), 0);
        feed.publish_checkpoint(cp.wal_segment);
        let inner = Arc::new(Inner {
            feed,
            dir: dir.to_path_buf(),
            opts,
            head: RwLock::new(head),
            blocks: RwLock::new(blocks),
            dedup: Mutex::new(dedup),
            next_block: AtomicU64::new(next_block),
            counters,
        });
        let tx = blockstore::start_threads(dir, "logs", &inner, writer_loop, writer, retention)
            .map_err(open_err)?;
        Ok(LogEngine {
            inner,
            tx: Mutex::new(tx),
        })
    }

    /// What the WAL's readers need (the ClickHouse exporter).
    pub fn feed(&self) -> StoreFeed {
        self.inner.feed.clone()
    }

    /// The counters.
    pub fn counters(&self) -> &LogCounters {
        &self.inner.counters
    }

    /// Lines and bytes in the head, blocks and their bytes.
    pub fn stats(&self) -> (u64, usize, u64) {
        let head = self
            .inner
            .head
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .bytes;
        let blocks = self.inner.blocks.read().unwrap_or_else(|e| e.into_inner());
        (head, blocks.len(), blocks.iter().map(|b| b.bytes).sum())
    }

    /// Cuts the head into a block now (the admin flush, tests and benchmarks).
    pub async fn flush(&self) -> Result<(), LogStoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Job::Cut { done })?;
        rx.await.map_err(|_| LogStoreError::Closed)?
    }

    /// Applies retention as of `now_ns` (tests move time; the thread uses the clock).
    pub fn apply_retention(&self, now_ns: i64) {
        retention(&self.inner, now_ns);
    }

    fn send(&self, job: Job) -> Result<(), LogStoreError> {
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| LogStoreError::Closed)
    }
}

/// Checks and stamps an append's streams: `instance` is the agent for agent batches; label
/// names must be valid; labels are sorted, empty values dropped; a stream without lines is
/// dropped.
fn prepare(req: LogAppend) -> Result<WalRecord, LogStoreError> {
    let agent = req.origin.as_ref().map(|o| o.agent.clone());
    let mut streams = Vec::with_capacity(req.streams.len());
    for mut s in req.streams {
        if s.entries.is_empty() {
            continue;
        }
        if let Some(bad) = s.labels.iter().find(|(k, _)| !valid_label_name(k)) {
            return Err(LogStoreError::Invalid(format!(
                "invalid label name {:?} in a log stream",
                bad.0
            )));
        }
        if let Some(a) = &agent {
            s.labels.retain(|(k, _)| k != "instance");
            s.labels.push(("instance".into(), a.clone()));
        }
        s.labels.retain(|(_, v)| !v.is_empty());
        s.labels.sort();
        s.labels.dedup_by(|a, b| a.0 == b.0);
        streams.push(s);
    }
    let (epoch, sequence) = req.origin.map(|o| (o.epoch, o.sequence)).unwrap_or((0, 0));
    Ok(WalRecord {
        agent,
        epoch,
        sequence,
        streams,
    })
}

impl LogAppender for LogEngine {
    fn append(&self, req: LogAppend) -> BoxFuture<'_, Result<LogOutcome, LogStoreError>> {
        Box::pin(async move {
            let record = prepare(req)?;
            let (done, rx) = oneshot::channel();
            self.send(Job::Append { record, done })?;
            rx.await.map_err(|_| LogStoreError::Closed)?
        })
    }
}

fn writer_loop(inner: &Inner, mut w: Writer, rx: &smpsc::Receiver<Job>) {
    while let Some(jobs) = blockstore::take_jobs(rx) {
        let (mut cuts, mut appends) = (Vec::new(), Vec::new());
        for j in jobs {
            match j {
                Job::Cut { done } => cuts.push(done),
                Job::Append { record, done } => appends.push((record, done)),
            }
        }
        let mut buf = Vec::new();
        let group = blockstore::group(
            &inner.dedup.lock().unwrap_or_else(|e| e.into_inner()),
            appends,
            &mut buf,
            |done| {
                inner.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                let _ = done.send(Ok(LogOutcome::Duplicate));
            },
            |done, e| {
                let _ = done.send(Err(LogStoreError::Invalid(e)));
            },
        );
        if !group.is_empty() {
            match w.write_group(&buf) {
                Ok(()) => {
                    inner.feed.publish_tip(w.segment(), w.synced_len());
                    let mut head = inner.head.write().unwrap_or_else(|e| e.into_inner());
                    let mut dedup = inner.dedup.lock().unwrap_or_else(|e| e.into_inner());
                    for (r, done) in group {
                        if let Some(a) = &r.agent {
                            dedup.mark(a, r.epoch, r.sequence);
                        }
                        let (lines, bytes) = head.apply(r.streams);
                        inner
                            .counters
                            .lines
                            .fetch_add(lines as u64, Ordering::Relaxed);
                        inner.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
                        let _ = done.send(Ok(LogOutcome::Stored { lines }));
                    }
                }
                Err(e) => {
                    inner.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "log WAL write failed: the appends are refused");
                    for (_, done) in group {
                        let _ = done.send(Err(LogStoreError::Write(std::io::Error::new(
                            e.kind(),
                            e.to_string(),
                        ))));
                    }
                }
            }
        }
        let due = {
            let h = inner.head.read().unwrap_or_else(|e| e.into_inner());
            h.bytes >= inner.opts.head_max_bytes
                || h.since
                    .is_some_and(|s| s.elapsed() >= inner.opts.head_max_age)
        };
        if due || !cuts.is_empty() {
            let r = cut(inner, &mut w);
            if let Err(e) = &r {
                inner.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "cutting the log head into a block failed: it stays in memory and in the WAL; retrying");
            }
            for done in cuts {
                let _ = done.send(match &r {
                    Ok(()) => Ok(()),
                    Err(e) => Err(LogStoreError::Write(std::io::Error::other(e.to_string()))),
                });
            }
        }
    }
}

/// Writes the head into a block, then rolls the WAL and checkpoints past it. On failure the
/// head is kept (and still covered by the WAL).
fn cut(inner: &Inner, w: &mut Writer) -> Result<(), block::BlockError> {
    let mut head = inner.head.write().unwrap_or_else(|e| e.into_inner());
    if head.streams.is_empty() {
        return Ok(());
    }
    let io = |source| block::BlockError::Io {
        path: inner.dir.join("wal"),
        source,
    };
    // New appends go to a new segment first: every segment before it is in the head, so the
    // block records it as where the WAL it covers ends (see `BlockIndex::wal_before`).
    w.roll().map_err(io)?;
    inner.feed.publish_tip(w.segment(), 0);
    let wal_before = w.segment();
    let dedup = inner
        .dedup
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .to_list();
    for (_, entries) in head.streams.iter_mut() {
        entries.sort_by_key(|e| e.t_ns);
    }
    let seq = inner.next_block.fetch_add(1, Ordering::Relaxed);
    let path = inner.dir.join("blocks").join(format!("{seq:08}.lblk"));
    let streams: Vec<block::StreamLines<'_>> = head
        .streams
        .iter()
        .map(|(l, e)| {
            (
                l.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                e.as_slice(),
            )
        })
        .collect();
    block::write(&path, &streams, wal_before, dedup.clone())?;
    let b = Block::open(&path)?;
    inner
        .blocks
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .push(Arc::new(b));
    *head = Head::default();
    drop(head);
    inner
        .counters
        .blocks_written
        .fetch_add(1, Ordering::Relaxed);
    blockstore::write_checkpoint(
        &inner.dir,
        &Checkpoint {
            wal_segment: wal_before,
            dedup,
        },
        inner.opts.wal_hold.get(),
    )
    .map_err(io)?;
    inner.feed.publish_checkpoint(wal_before);
    Ok(())
}

/// Deletes blocks whose newest line is older than the retention, then the oldest blocks
/// while all of them take more than `max_bytes`.
fn retention(inner: &Inner, now_ns: i64) {
    blockstore::retain(
        &inner.blocks,
        now_ns.saturating_sub(inner.opts.retention.as_nanos() as i64),
        inner.opts.max_bytes,
        "log",
        &inner.counters.expired_blocks,
    );
}

mod query;

#[cfg(test)]
mod tests;
