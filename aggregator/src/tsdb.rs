//! The storage engine: a write-ahead log, an in-memory head, and immutable compressed blocks
//! with rollups, behind the [`Storage`] trait.
//!
//! # Layout
//! - [`wal`]: group-committed, fdatasync'ed log of appends — samples by series id, each series
//!   defined once (the durability point: a batch is acknowledged once its record is on disk).
//! - [`head`]: every series, its labels, postings, and the samples not yet in a block.
//! - [`chunk`]: the chunk codec (pco columns); [`block`]: block files of chunks with a
//!   checksummed index; [`rollup`]: 5-minute and 1-hour summaries.
//! - [`compact`]: cutting the head into blocks, compaction into 2-hour then 1-day windows
//!   (rollups up to 30-day windows), rollups, retention.
//! - [`check`]: `storage check` and `storage stats`.
//! - [`files`]: `series.log`, `events.log` and `checkpoint`.
//!
//! # Data directory
//! ```text
//! log/NNNN.seg      WAL segments (see `wal`)
//! blocks/NNNN.blk   blocks, named by sequence number (see `block`)
//! series.log        series id → labels, appended before any block refers to the id
//! events.log        host events cut from the head
//! checkpoint        first WAL segment not covered by blocks, and the stored batch origins
//! quarantine/       blocks that do not open, moved aside at start-up
//! ```
//!
//! # Life of a sample
//! An append is decoded, its series resolved (new series beyond the per-agent or total
//! active-series cap are refused and counted), its record written to the WAL with group
//! commit, then the samples go to the head (samples more than the out-of-order window behind
//! their series' newest are refused and counted). When the head is old enough or large
//! enough, the WAL is rolled and the head's samples are cut into a level-0 block; the
//! checkpoint then lets the covered WAL segments go. Closed windows are compacted into
//! 2-hour and then 1-day blocks, each with its rollups; retention deletes whole blocks.
//!
//! # Reads
//! A query resolves matchers on the postings, then reads each series from the head, the
//! blocks being cut, and the blocks that overlap the range, merging them by timestamp (the
//! newest write wins). Readers look at the head first and the blocks last, and writers add a
//! block before they drop what it replaces, so a reader never misses data in motion.

mod batch_scan;
pub mod block;
mod cache;
pub mod check;
pub mod chunk;
mod compact;
mod dedup;
pub mod files;
pub mod head;
pub mod rollup;
mod wal;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use telltale_common::codec::{self, HEADER_LEN};
use telltale_common::model::{Labels, Sample, SeriesSamples, is_stale_marker};
use telltale_common::wire::Event;
use tokio::sync::{mpsc, oneshot};

use crate::api::remote_write;
use crate::storage::stamp_agent_labels;
use crate::storage::{
    AppendData, AppendHook, AppendOutcome, AppendRequest, BoxFuture, Matcher, Origin, RollupData,
    SeriesData, Storage, StorageError, StorageStats,
};
use block::{Block, Kind};
use dedup::Dedup;
use head::{AppendLimits, Head, NO_OWNER, hash_labels};
pub use wal::RecoveryReport;
use wal::{Record, Writer, prepare, stamp_events};

/// Engine settings (see `config/aggregator.toml`, section `[storage]`).
#[derive(Debug, Clone)]
pub struct Options {
    /// How long raw samples are kept.
    pub retention: Duration,
    /// How long rollups are kept.
    pub rollup_retention: Duration,
    /// How far behind its series' newest sample a sample may arrive and still be stored.
    pub ooo_window: Duration,
    /// The head is cut into a block once its oldest write is this old...
    pub head_max_age: Duration,
    /// ...or once it holds this many samples per active series on average (bounds memory
    /// per series).
    pub head_samples_per_series: u64,
    /// Active series one agent may have; new ones beyond are refused.
    pub max_series_per_agent: u64,
    /// Active series in total; new ones beyond are refused.
    pub max_series: u64,
    /// Active series created by remote_write senders, together; new ones beyond are refused.
    pub max_series_remote_write: u64,
    /// New series one remote_write request may create; the rest are refused.
    pub max_new_series_per_remote_write: u64,
    /// A series is active while it was written in this long.
    pub active_window: Duration,
    /// How often the background maintenance runs (cut, compaction, retention).
    pub maintenance_interval: Duration,
    /// Bytes of decoded chunks kept for repeated reads (dashboards refreshing); 0 disables.
    pub chunk_cache_bytes: u64,
}

/// The owner of series created by remote_write (all senders together); `<` cannot appear
/// in an agent's name, so no agent shares its cap.
pub const REMOTE_WRITE_OWNER: &str = "<remote_write>";

impl Default for Options {
    fn default() -> Self {
        Options {
            retention: Duration::from_secs(15 * 86_400),
            rollup_retention: Duration::from_secs(400 * 86_400),
            ooo_window: Duration::from_secs(3600),
            head_max_age: Duration::from_secs(600),
            head_samples_per_series: 60,
            max_series_per_agent: 200_000,
            max_series: 10_000_000,
            max_series_remote_write: 200_000,
            max_new_series_per_remote_write: 20_000,
            active_window: Duration::from_secs(3600),
            maintenance_interval: Duration::from_secs(10),
            chunk_cache_bytes: 128 << 20,
        }
    }
}

/// Counters the engine keeps (exported on `/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Samples refused: older than their series' out-of-order window or than retention.
    pub refused_too_old: AtomicU64,
    /// Samples refused: more than a day ahead of the aggregator's clock.
    pub refused_too_new: AtomicU64,
    /// New series refused by the active-series caps.
    pub series_refused_agent: AtomicU64,
    /// See `series_refused_agent` (the total cap).
    pub series_refused_total: AtomicU64,
    /// See `series_refused_agent` (the cap on series created by remote_write senders).
    pub series_refused_remote_write: AtomicU64,
    /// See `series_refused_agent` (the cap on new series in one remote_write request).
    pub series_refused_request: AtomicU64,
    /// Chunks that failed their checksum or did not decode when read.
    pub corrupt_chunks: AtomicU64,
    /// WAL bytes written.
    pub wal_bytes: AtomicU64,
    /// Head cuts into level-0 blocks.
    pub cuts: AtomicU64,
    /// Compactions run.
    pub compactions: AtomicU64,
    /// Blocks deleted by retention.
    pub expired_blocks: AtomicU64,
    /// Maintenance steps that failed (logged).
    pub maintenance_errors: AtomicU64,
}

/// Samples moved out of the head, being written into a block.
#[derive(Debug)]
pub struct Frozen {
    /// Series and samples, by ascending id.
    pub series: Vec<(u32, Vec<Sample>)>,
    /// The WAL segment started at the cut: the ones before it hold nothing else.
    wal_segment: u64,
    /// Origins on disk at the cut (for the checkpoint).
    durable: Vec<(String, u64, dedup::RangeSet)>,
    /// Events applied since the previous cut.
    events: Vec<Event>,
}

impl Frozen {
    fn get(&self, id: u32) -> Option<&[Sample]> {
        self.series
            .binary_search_by_key(&id, |s| s.0)
            .ok()
            .map(|i| self.series[i].1.as_slice())
    }
}

/// A series' labels, in-memory sample runs (oldest first) and block chunks to read.
type SeriesParts = (Labels, Vec<Vec<Sample>>, Vec<(Arc<Block>, block::Entry)>);

/// What the checkpoint file records.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    /// WAL segments below this one are covered by blocks.
    wal_segment: u64,
    /// Batch origins stored by the covered segments.
    dedup: Vec<(String, u64, dedup::RangeSet)>,
}

/// The name given to series whose `series.log` record was lost to damage.
pub const LOST_SERIES: &str = "telltale_lost_series";

/// A series record of `series.log` (and a series definition in the WAL).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SeriesRecord {
    pub(crate) id: u32,
    pub(crate) labels: Labels,
}

/// remote_write label bytes → series id and metric name.
type KeyCache = rustc_hash::FxHashMap<Box<[u8]>, (u32, Arc<str>)>;

/// Series ids (`None`: refused) and metric names.
type IdsAndNames = (Vec<Option<u32>>, Vec<Arc<str>>);

/// An append's samples by series id, its host events, and the distinct metric names it
/// touches (when an append hook wants them).
type Resolved = (Vec<(u32, Sample)>, Vec<Event>, Vec<Arc<str>>);

struct Inner {
    dir: PathBuf,
    opts: Options,
    head: RwLock<Head>,
    frozen: RwLock<Vec<Arc<Frozen>>>,
    /// Open blocks of every kind, by ascending sequence number.
    blocks: RwLock<Vec<Arc<Block>>>,
    /// Origins stored or being stored (appends check it first).
    dedup: Mutex<Dedup>,
    /// Origins whose records are on disk (what a checkpoint may claim).
    durable: Mutex<Dedup>,
    /// Events applied since the last cut (written to `events.log` by the cut).
    pending_events: Mutex<Vec<Event>>,
    next_seq: AtomicU64,
    /// Series ids below this are in `series.log`.
    persisted_series: AtomicU64,
    /// Wall-clock ms of the first write since the last cut (0: none).
    head_since_ms: AtomicU64,
    counters: Counters,
    /// Why the last log write failed and how many bytes it tried to write, until the log is
    /// writable again (readiness reports it; see [`writable_again`]).
    write_error: Mutex<Option<(String, u64)>>,
    /// Serializes cut rounds.
    cutting: Mutex<()>,
    /// Serializes compaction rounds.
    compacting: Mutex<()>,
    /// Decoded chunks of recent reads.
    cache: cache::ChunkCache,
    /// Wall-clock ms of the last checkpoint.
    last_checkpoint_ms: AtomicU64,
    /// The checkpoint of the last block cut, not yet written.
    pending_checkpoint: Mutex<Option<Checkpoint>>,
    /// remote_write label bytes as sent ([`remote_write::RawSeries::key`]) → series id and
    /// metric name: a series seen before costs one hash and one comparison of its bytes.
    rw_keys: RwLock<KeyCache>,
    /// The same per agent, for the label arrays of its batches.
    agent_keys: RwLock<rustc_hash::FxHashMap<String, Arc<RwLock<KeyCache>>>>,
    /// Set (and notified) by the writer when the head reaches its size budget, so the cut
    /// happens at once instead of at the next scheduled round: memory per series stays
    /// bounded under any ingest rate.
    wake: (Mutex<bool>, std::sync::Condvar),
}

impl Inner {
    /// Asks the cutter thread to run now.
    fn wake_cutter(&self) {
        let (lock, cv) = &self.wake;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_one();
    }

    /// The head's sample budget: `head_samples_per_series` per active series (at least
    /// 100 000 samples).
    fn head_budget(&self, active: u64) -> u64 {
        (active.max(1) * self.opts.head_samples_per_series).max(100_000)
    }
}

enum Job {
    Write {
        framed: Vec<u8>,
        points: Vec<(u32, Sample)>,
        events: Vec<Event>,
        origin: Option<Origin>,
        done: oneshot::Sender<Result<usize, StorageError>>,
    },
    Barrier {
        done: oneshot::Sender<Result<usize, StorageError>>,
    },
    /// Roll the WAL and move the head's samples into a frozen set.
    Cut {
        done: oneshot::Sender<Result<(), StorageError>>,
    },
}

/// The engine. Cheap to share behind an `Arc`; dropping it stops its threads.
pub struct Tsdb {
    inner: Arc<Inner>,
    tx: mpsc::Sender<Job>,
    stop: Arc<AtomicBool>,
    /// Called after each durable append with the metric names it stored.
    hook: RwLock<Option<AppendHook>>,
    /// What start-up recovery found.
    pub recovery: RecoveryReport,
}

fn open_err(dir: &Path, e: impl std::fmt::Display) -> StorageError {
    StorageError::Open {
        dir: dir.display().to_string(),
        message: e.to_string(),
    }
}

/// Wall-clock milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Merges sample runs given oldest write first: ordered by time, one sample per timestamp,
/// the newest write winning (a stale marker never replaces a value).
pub fn merge_runs(mut runs: Vec<Vec<Sample>>) -> Vec<Sample> {
    runs.retain(|r| !r.is_empty());
    if runs.len() <= 1 {
        return runs.pop().unwrap_or_default();
    }
    let ordered = runs
        .windows(2)
        .all(|w| w[0].last().map(|s| s.0) < w[1].first().map(|s| s.0));
    let mut all: Vec<(i64, usize, f64)> = Vec::new();
    if ordered {
        return runs.concat();
    }
    for (i, r) in runs.iter().enumerate() {
        all.extend(r.iter().map(|s| (s.0, i, s.1)));
    }
    all.sort_by_key(|x| (x.0, x.1));
    let mut out: Vec<Sample> = Vec::with_capacity(all.len());
    for (t, _, v) in all {
        match out.last_mut() {
            Some(last) if last.0 == t => {
                if !is_stale_marker(v) {
                    last.1 = v;
                }
            }
            _ => out.push(Sample(t, v)),
        }
    }
    out
}

impl Tsdb {
    /// Opens (or creates) the engine in `data_dir` with default options.
    pub fn open(data_dir: &Path) -> Result<Tsdb, StorageError> {
        Tsdb::open_with(data_dir, Options::default())
    }

    /// Opens (or creates) the engine: loads series, blocks and the checkpoint, replays the
    /// WAL, and starts the writer and maintenance threads.
    pub fn open_with(data_dir: &Path, opts: Options) -> Result<Tsdb, StorageError> {
        let wal_dir = data_dir.join("log");
        let blocks_dir = data_dir.join("blocks");
        for d in [&wal_dir, &blocks_dir] {
            fs::create_dir_all(d).map_err(|e| open_err(d, e))?;
        }
        let mut report = RecoveryReport::default();
        let mut head = Head::default();
        // Series ids are positions in series.log.
        let series_path = data_dir.join("series.log");
        let frames = files::read_frames(&series_path).map_err(|e| open_err(data_dir, e))?;
        if frames.torn > 0 || frames.corrupt > 0 {
            tracing::warn!(
                torn = frames.torn,
                corrupt = frames.corrupt,
                "series.log damaged: the intact records are used"
            );
            files::cut_tail(&series_path, &frames).map_err(|e| open_err(data_dir, e))?;
        }
        // Records carry their id: a damaged record in the middle leaves a gap, filled with a
        // placeholder so every later id still names the series the blocks mean by it.
        let mut lost = 0u64;
        for p in &frames.payloads {
            let Ok(r) = codec::decode_borrowed::<SeriesRecord>(p) else {
                tracing::error!("undecodable series record skipped");
                continue;
            };
            lost += define(&mut head, r);
        }
        let persisted = head.len() as u64;
        // Blocks.
        let mut blocks = Vec::new();
        let mut next_seq = 1u64;
        for e in fs::read_dir(&blocks_dir).map_err(|e| open_err(&blocks_dir, e))? {
            let path = e.map_err(|e| open_err(&blocks_dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".blk") {
                continue;
            }
            match Block::open(&path) {
                Ok((b, entries)) => {
                    for en in &entries {
                        if en.series as u64 >= persisted {
                            tracing::error!(block = %path.display(), series = en.series, "block names a series series.log does not have");
                            continue;
                        }
                        head.note_max_t(en.series, en.max_t);
                    }
                    next_seq = next_seq.max(b.seq + 1);
                    report.blocks += 1;
                    blocks.push(Arc::new(b));
                }
                Err(err) => {
                    tracing::error!(error = %err, "block quarantined");
                    report.quarantined += 1;
                    quarantine(data_dir, &path);
                }
            }
        }
        blocks.sort_by_key(|b| b.seq);
        // Checkpoint: WAL segments below it are in blocks.
        let cp_frames =
            files::read_frames(&data_dir.join("checkpoint")).map_err(|e| open_err(data_dir, e))?;
        let cp: Checkpoint = cp_frames
            .payloads
            .first()
            .and_then(|p| codec::decode_borrowed(p).ok())
            .unwrap_or_default();
        let mut dedup = Dedup::from_list(cp.dedup);
        let segs = wal::list_segments(&wal_dir).map_err(|e| open_err(&wal_dir, e))?;
        let mut events = load_events(data_dir);
        let mut replayed_events = Vec::new();
        for (n, path) in &segs {
            if *n < cp.wal_segment {
                let _ = fs::remove_file(path);
                continue;
            }
            wal::replay_segment(path, &mut report, |rec: Record<'_>| {
                for d in rec.defs {
                    lost += define(&mut head, d);
                }
                let mut points = match rec.points {
                    Some(p) => wal::decode_points(p)?,
                    None => Vec::new(),
                };
                // Records of release 0.1 carry labels with their samples.
                let (p, evs) = prepare(rec.agent, rec.wire.map(|w| &w[..]), &rec.series)?;
                for (pairs, samples) in p {
                    let id = head.get_or_create(&pairs, hash_labels(pairs.iter().copied()));
                    points.extend(samples.into_iter().map(|s| (id, s)));
                }
                if let (Some(agent), Some(seq)) = (rec.agent, rec.sequence) {
                    dedup.mark(agent, rec.epoch, seq);
                }
                // A series whose definition was lost to damage keeps its samples, under a
                // placeholder name (as for series.log), and its id stays taken.
                if let Some(max) = points.iter().map(|p| p.0).max()
                    && max as usize >= head.len()
                {
                    lost += define(
                        &mut head,
                        SeriesRecord {
                            id: max,
                            labels: lost_labels(max as usize),
                        },
                    );
                }
                head.apply(&points, None, 0);
                replayed_events.extend(evs);
                replayed_events.extend(rec.events);
                Ok(())
            })
            .map_err(|e| open_err(&wal_dir, format!("{}: {e}", path.display())))?;
        }
        if lost > 0 {
            tracing::error!(
                lost,
                "series.log or the WAL lost the labels of some series: their samples read as {LOST_SERIES}{{series_id=...}}"
            );
        }
        events.extend(replayed_events.iter().cloned());
        head.push_events(events);
        let now_s = (now_ms() / 1000) as u32;
        head.recount_active(now_s.saturating_sub(opts.active_window.as_secs() as u32));
        let next_segment = segs
            .last()
            .map(|(n, _)| n + 1)
            .unwrap_or(1)
            .max(cp.wal_segment);
        let writer =
            Writer::create(wal_dir.clone(), next_segment).map_err(|e| open_err(&wal_dir, e))?;
        let head_samples = head.head_samples;
        let cache =
            cache::ChunkCache::new(usize::try_from(opts.chunk_cache_bytes).unwrap_or(usize::MAX));
        let inner = Arc::new(Inner {
            dir: data_dir.to_path_buf(),
            opts,
            head: RwLock::new(head),
            frozen: RwLock::new(Vec::new()),
            blocks: RwLock::new(blocks),
            dedup: Mutex::new(dedup.clone()),
            durable: Mutex::new(dedup),
            pending_events: Mutex::new(replayed_events),
            next_seq: AtomicU64::new(next_seq),
            persisted_series: AtomicU64::new(persisted),
            head_since_ms: AtomicU64::new(if head_samples > 0 { now_ms() as u64 } else { 0 }),
            counters: Counters::default(),
            write_error: Mutex::new(None),
            cutting: Mutex::new(()),
            compacting: Mutex::new(()),
            wake: (Mutex::new(false), std::sync::Condvar::new()),
            cache,
            last_checkpoint_ms: AtomicU64::new(0),
            pending_checkpoint: Mutex::new(None),
            rw_keys: RwLock::new(Default::default()),
            agent_keys: RwLock::new(Default::default()),
        });
        let (tx, rx) = mpsc::channel(4096);
        let w_inner = inner.clone();
        let logged = inner.head.read().unwrap_or_else(|e| e.into_inner()).len();
        std::thread::Builder::new()
            .name("telltale-wal-writer".into())
            .spawn(move || run_writer(writer, rx, w_inner, logged))
            .map_err(|e| open_err(data_dir, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let tsdb = Tsdb {
            inner,
            tx,
            stop,
            hook: RwLock::new(None),
            recovery: report,
        };
        tsdb.spawn_maintenance()
            .map_err(|e| open_err(data_dir, e))?;
        Ok(tsdb)
    }

    /// Starts the two background threads: the cutter (writes frozen heads into blocks as
    /// soon as the writer cuts them, and cuts an old head), and the compactor (compaction,
    /// retention, active-series count), so a long compaction never holds up a cut.
    fn spawn_maintenance(&self) -> std::io::Result<()> {
        let (inner, tx, stop) = (self.inner.clone(), self.tx.clone(), self.stop.clone());
        std::thread::Builder::new()
            .name("telltale-tsdb-cutter".into())
            .spawn(move || {
                let every = inner.opts.maintenance_interval.min(Duration::from_secs(1));
                while wait_or_wake(&inner, &stop, every) {
                    if let Err(e) = compact::cut_round(&inner, &tx, now_ms(), false) {
                        inner.counters.maintenance_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "writing the head into a block failed; retrying");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            })?;
        let (inner, stop) = (self.inner.clone(), self.stop.clone());
        std::thread::Builder::new()
            .name("telltale-tsdb-compactor".into())
            .spawn(move || {
                let every = inner.opts.maintenance_interval;
                let mut next = std::time::Instant::now() + every;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if std::time::Instant::now() < next {
                        continue;
                    }
                    next = std::time::Instant::now() + every;
                    if let Err(e) = compact::compact_round(&inner, now_ms(), false) {
                        inner.counters.maintenance_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "storage compaction failed; retrying next round");
                    }
                }
            })?;
        Ok(())
    }

    /// Cuts the head into a block now and runs compaction and retention as of `now_ms`
    /// (the admin endpoint, tests and benchmarks; the background thread does the same on
    /// its own schedule).
    pub fn flush_and_compact(&self, now_ms: i64) -> Result<(), StorageError> {
        compact::maintain(&self.inner, &self.tx, now_ms, true)
            .map_err(|e| StorageError::Write(e.to_string()))
    }

    /// The engine's counters.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Samples in the head (not yet in a block).
    pub fn head_samples(&self) -> u64 {
        self.read_head().head_samples
    }

    /// Open blocks: (kind, level, rows, bytes).
    pub fn block_summary(&self) -> Vec<(Kind, u8, u64, u64)> {
        self.inner
            .blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|b| (b.kind, b.level, b.rows, b.bytes))
            .collect()
    }

    fn read_head(&self) -> std::sync::RwLockReadGuard<'_, Head> {
        self.inner.head.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_dedup(&self) -> std::sync::MutexGuard<'_, Dedup> {
        self.inner.dedup.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves sorted label pairs to series ids, creating new series within the caps: the
    /// total, the owner's (an agent's, or all remote_write senders' together) and, for
    /// remote_write, a cap on new series per request. `None` for a refused series.
    fn resolve_ids(
        &self,
        agent: Option<&str>,
        remote_write: bool,
        pairs: &[&[(&str, &str)]],
    ) -> Vec<Option<u32>> {
        let opts = &self.inner.opts;
        let (owner_name, owner_cap, mut new_left) = if remote_write {
            (
                Some(REMOTE_WRITE_OWNER),
                opts.max_series_remote_write,
                opts.max_new_series_per_remote_write,
            )
        } else {
            (agent, opts.max_series_per_agent, u64::MAX)
        };
        let hashes: Vec<u64> = pairs
            .iter()
            .map(|p| hash_labels(p.iter().copied()))
            .collect();
        let (mut ids, unowned): (Vec<Option<u32>>, bool) = {
            let h = self.read_head();
            let ids: Vec<Option<u32>> = pairs
                .iter()
                .zip(&hashes)
                .map(|(p, &hash)| h.lookup(p, hash))
                .collect();
            // Series loaded from series.log have no owner until their agent writes again.
            let unowned = owner_name.is_some()
                && ids
                    .iter()
                    .flatten()
                    .any(|&id| h.get(id).is_some_and(|s| s.owner == NO_OWNER));
            (ids, unowned)
        };
        if unowned {
            let mut h = self.inner.head.write().unwrap_or_else(|e| e.into_inner());
            let owner = h.owner_id(owner_name);
            for &id in ids.iter().flatten() {
                h.claim(id, owner);
            }
        }
        if ids.iter().any(Option::is_none) {
            let now_s = (now_ms() / 1000) as u32;
            let mut h = self.inner.head.write().unwrap_or_else(|e| e.into_inner());
            let owner = h.owner_id(owner_name);
            let (mut refused_agent, mut refused_total, mut refused_request) = (0u64, 0u64, 0u64);
            for (i, id) in ids.iter_mut().enumerate() {
                if id.is_some() {
                    continue;
                }
                if let Some(found) = h.lookup(pairs[i], hashes[i]) {
                    *id = Some(found);
                } else if h.active_total >= opts.max_series {
                    refused_total += 1;
                } else if owner != NO_OWNER && h.active_of(owner) >= owner_cap {
                    refused_agent += 1;
                } else if new_left == 0 {
                    refused_request += 1;
                } else {
                    new_left -= 1;
                    let labels = Labels::from_pairs(pairs[i].iter().copied());
                    *id = Some(h.create(labels, hashes[i], owner, now_s));
                }
            }
            drop(h);
            let c = &self.inner.counters;
            if refused_agent + refused_total + refused_request > 0 {
                let counter = if remote_write {
                    &c.series_refused_remote_write
                } else {
                    &c.series_refused_agent
                };
                counter.fetch_add(refused_agent, Ordering::Relaxed);
                c.series_refused_total
                    .fetch_add(refused_total, Ordering::Relaxed);
                c.series_refused_request
                    .fetch_add(refused_request, Ordering::Relaxed);
                tracing::warn!(
                    owner = owner_name.unwrap_or("-"),
                    refused_owner_cap = refused_agent,
                    refused_total,
                    refused_request,
                    "new series refused: a series cap was reached (existing series keep flowing)"
                );
            }
        }
        ids
    }

    /// Series ids for series known by the bytes their labels were sent as: from `cache` for
    /// bytes seen before (no label is decoded, checked, sorted or hashed for those), the rest
    /// decoded by `decode` (an error refuses the request before anything is stored; `None`
    /// drops that series), resolved within the caps, then cached. Also the metric names,
    /// when `names` is wanted.
    #[allow(clippy::too_many_arguments)]
    fn ids_by_key<'k>(
        &self,
        cache: &RwLock<KeyCache>,
        cap: u64,
        keys: &[&'k [u8]],
        agent: Option<&str>,
        remote_write: bool,
        decode: impl Fn(&'k [u8]) -> Result<Option<Vec<(&'k str, &'k str)>>, String>,
        names: bool,
    ) -> Result<IdsAndNames, String> {
        let mut ids = vec![None; keys.len()];
        let mut metric_names: Vec<Arc<str>> = Vec::new();
        let mut misses: Vec<usize> = Vec::new();
        {
            let cache = cache.read().unwrap_or_else(|e| e.into_inner());
            for (i, key) in keys.iter().enumerate() {
                match cache.get(*key) {
                    Some((id, name)) => {
                        ids[i] = Some(*id);
                        if names && metric_names.last().is_none_or(|n| !Arc::ptr_eq(n, name)) {
                            metric_names.push(name.clone());
                        }
                    }
                    None => misses.push(i),
                }
            }
        }
        if misses.is_empty() {
            return Ok((ids, metric_names));
        }
        let mut decoded: Vec<(usize, Vec<(&str, &str)>)> = Vec::with_capacity(misses.len());
        for &i in &misses {
            if let Some(p) = decode(keys[i])? {
                decoded.push((i, p));
            }
        }
        let slices: Vec<&[(&str, &str)]> = decoded.iter().map(|(_, p)| p.as_slice()).collect();
        let found = self.resolve_ids(agent, remote_write, &slices);
        let mut cache = cache.write().unwrap_or_else(|e| e.into_inner());
        // Senders spelling label sets in ever new ways cannot grow it without bound.
        let cap = usize::try_from(cap)
            .unwrap_or(usize::MAX)
            .saturating_mul(2)
            .max(1 << 16);
        if cache.len() + decoded.len() > cap {
            cache.clear();
        }
        for ((i, p), id) in decoded.iter().zip(found) {
            ids[*i] = id;
            let name: Arc<str> = p
                .iter()
                .find(|(k, _)| *k == "__name__")
                .map(|(_, v)| Arc::from(*v))
                .unwrap_or_else(|| Arc::from(""));
            if names {
                metric_names.push(name.clone());
            }
            if let Some(id) = id {
                cache.insert(keys[*i].to_vec().into_boxed_slice(), (id, name));
            }
        }
        Ok((ids, metric_names))
    }

    /// Points, events and (if `names`) the distinct metric names of an agent's batch walked
    /// by [`batch_scan::scan`]: the same cached path as remote_write, per agent (the labels
    /// an agent sends are stamped with its name).
    fn resolve_agent_batch(
        &self,
        agent: &str,
        raw: batch_scan::RawBatch<'_>,
        names: bool,
    ) -> Result<Resolved, String> {
        let cache = {
            let caches = self
                .inner
                .agent_keys
                .read()
                .unwrap_or_else(|e| e.into_inner());
            caches.get(agent).cloned()
        };
        let cache = match cache {
            Some(c) => c,
            None => self
                .inner
                .agent_keys
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(agent.to_string())
                .or_default()
                .clone(),
        };
        let keys: Vec<&[u8]> = raw.series.iter().map(|(k, _)| *k).collect();
        let decode = |key| {
            let mut p = batch_scan::pairs(key).ok_or("undecodable labels")?;
            Ok(stamp_agent_labels(&mut p, agent).then_some(p))
        };
        let cap = self.inner.opts.max_series_per_agent;
        let (ids, mut metric_names) =
            self.ids_by_key(&cache, cap, &keys, Some(agent), false, decode, names)?;
        let mut points = Vec::with_capacity(raw.samples.len());
        for ((_, range), id) in raw.series.iter().zip(ids) {
            if let Some(id) = id {
                points.extend(raw.samples[range.clone()].iter().map(|&x| (id, x)));
            }
        }
        if names {
            metric_names.sort_unstable();
            metric_names.dedup();
        }
        let mut events = raw.events;
        stamp_events(&mut events, Some(agent));
        Ok((points, events, metric_names))
    }

    async fn append_inner(&self, req: AppendRequest) -> Result<AppendOutcome, StorageError> {
        if let Some(o) = &req.origin {
            let fresh = self.lock_dedup().mark(&o.agent, o.epoch, o.sequence);
            if !fresh {
                // Stored or being stored: a barrier behind it makes sure it is durable.
                let (done, rx) = oneshot::channel();
                self.tx
                    .send(Job::Barrier { done })
                    .await
                    .map_err(|_| StorageError::Closed)?;
                rx.await.map_err(|_| StorageError::Closed)??;
                return if self.lock_dedup().contains(&o.agent, o.epoch, o.sequence) {
                    Ok(AppendOutcome::Duplicate)
                } else {
                    Err(StorageError::Write(
                        "the earlier copy of this batch failed to write".into(),
                    ))
                };
            }
        }
        let unmark = |this: &Self| {
            if let Some(o) = &req.origin {
                this.lock_dedup().unmark(&o.agent, o.epoch, o.sequence);
            }
        };
        let hook = self.hook.read().unwrap_or_else(|e| e.into_inner()).clone();
        let resolved = match &req.data {
            AppendData::RemoteWrite(raw) => self.resolve_remote_write(raw, hook.is_some()),
            AppendData::Encoded(w) => match (&req.origin, batch_scan::scan(w)) {
                (Some(o), Some(raw)) => self.resolve_agent_batch(&o.agent, raw, hook.is_some()),
                _ => self.resolve_prepared(&req, Some(w), &[], hook.is_some()),
            },
            AppendData::Series(s) => self.resolve_prepared(&req, None, s, hook.is_some()),
        };
        let (points, events, names) = match resolved {
            Ok(r) => r,
            Err(reason) => {
                unmark(self);
                return Ok(AppendOutcome::Invalid { reason });
            }
        };
        // The log record names series by id: their labels are in the log once, in the
        // definitions the writer puts in front of the first group that names them.
        let mut encoded = Vec::new();
        wal::encode_points(&points, &mut encoded);
        let payload = match codec::encode_payload(&Record::points(
            req.origin.as_ref(),
            &encoded,
            events.clone(),
        )) {
            Ok(p) => p,
            Err(e) => {
                unmark(self);
                return Err(StorageError::Write(e.to_string()));
            }
        };
        let mut framed = Vec::with_capacity(HEADER_LEN + payload.len());
        codec::frame_into(&payload, &mut framed);
        let (done, rx) = oneshot::channel();
        let job = Job::Write {
            framed,
            points,
            events,
            origin: req.origin.clone(),
            done,
        };
        if self.tx.send(job).await.is_err() {
            unmark(self);
            return Err(StorageError::Closed);
        }
        let samples = rx.await.map_err(|_| StorageError::Closed)??;
        if let Some(h) = hook {
            let names: Vec<&str> = names.iter().map(|n| &**n).collect();
            h(&names);
        }
        Ok(AppendOutcome::Stored { samples })
    }

    /// Points, events and (if `names`) the distinct metric names of a remote_write request.
    fn resolve_remote_write(&self, raw: &[u8], names: bool) -> Result<Resolved, String> {
        let bad = |e: String| format!("malformed remote_write body: {e}");
        let sc = remote_write::scan(raw).map_err(bad)?;
        let keys: Vec<&[u8]> = sc.series.iter().map(|s| &*s.key).collect();
        // Every new key is checked before anything is stored: a bad series refuses the
        // request, as before the cache.
        let decode = |key| remote_write::labels(key).map(Some);
        let cap = self.inner.opts.max_series_remote_write;
        let (ids, mut metric_names) = self
            .ids_by_key(&self.inner.rw_keys, cap, &keys, None, true, decode, names)
            .map_err(bad)?;
        let mut points = Vec::with_capacity(sc.samples.len());
        for (s, id) in sc.series.iter().zip(ids) {
            if let Some(id) = id {
                points.extend(sc.samples[s.samples.clone()].iter().map(|&x| (id, x)));
            }
        }
        if names {
            metric_names.sort_unstable();
            metric_names.dedup();
        }
        Ok((points, Vec::new(), metric_names))
    }

    /// Points, events and (if `names`) the distinct metric names of an agent batch or of the
    /// aggregator's own series.
    fn resolve_prepared(
        &self,
        req: &AppendRequest,
        wire: Option<&[u8]>,
        series: &[SeriesSamples],
        names: bool,
    ) -> Result<Resolved, String> {
        let agent = req.origin.as_ref().map(|o| o.agent.as_str());
        let (prepared, events) = prepare(agent, wire, series)?;
        let mut metric_names: Vec<Arc<str>> = Vec::new();
        if names {
            let mut seen: Vec<&str> = prepared
                .iter()
                .filter_map(|(pairs, _)| pairs.iter().find(|(k, _)| *k == "__name__"))
                .map(|(_, n)| *n)
                .collect();
            seen.sort_unstable();
            seen.dedup();
            metric_names = seen.into_iter().map(Arc::from).collect();
        }
        let slices: Vec<&[(&str, &str)]> = prepared.iter().map(|(p, _)| p.as_slice()).collect();
        let ids = self.resolve_ids(agent, false, &slices);
        let mut points = Vec::with_capacity(prepared.iter().map(|(_, s)| s.len()).sum());
        for (id, (_, samples)) in ids.into_iter().zip(prepared) {
            if let Some(id) = id {
                points.extend(samples.into_iter().map(|s| (id, s)));
            }
        }
        Ok((points, events, metric_names))
    }

    /// Each matching series' samples in `[start, end]` from every source, merged; also the
    /// sources' order (head first) is what keeps concurrent cuts from hiding data.
    fn read_series(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        max_samples: usize,
        kind: Kind,
    ) -> Result<Vec<SeriesParts>, StorageError> {
        // 1. the head (under its lock, copying only the range), 2. frozen sets, 3. blocks.
        let mut out: Vec<(u32, Labels, Vec<Vec<Sample>>)> = Vec::new();
        let mut total = 0usize;
        {
            let h = self.read_head();
            for id in h.matching_ids(matchers) {
                let Some(s) = h.get(id) else { continue };
                let mut runs = Vec::new();
                if kind == Kind::Raw {
                    let r = s.range(start, end);
                    total += r.len();
                    if total > max_samples {
                        return Err(StorageError::TooManySamples { limit: max_samples });
                    }
                    if !r.is_empty() {
                        runs.push(r.to_vec());
                    }
                }
                out.push((id, s.labels.clone(), runs));
            }
        }
        if kind == Kind::Raw {
            let frozen = self
                .inner
                .frozen
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for (id, _, runs) in &mut out {
                for f in &frozen {
                    if let Some(s) = f.get(*id) {
                        let lo = s.partition_point(|x| x.0 < start);
                        let hi = s.partition_point(|x| x.0 <= end).max(lo);
                        if hi > lo {
                            total += hi - lo;
                            if total > max_samples {
                                return Err(StorageError::TooManySamples { limit: max_samples });
                            }
                            // Frozen data is older than what is in the head now.
                            runs.insert(0, s[lo..hi].to_vec());
                        }
                    }
                }
            }
        }
        let blocks: Vec<Arc<Block>> = self
            .inner
            .blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|b| b.kind == kind && b.max_t >= start && b.min_t <= end)
            .cloned()
            .collect();
        Ok(out
            .into_iter()
            .map(|(id, labels, runs)| {
                let refs = blocks
                    .iter()
                    .filter_map(|b| b.entry(id).map(|e| (b.clone(), *e)))
                    .collect();
                (labels, runs, refs)
            })
            .collect())
    }

    fn note_corrupt(&self, e: &block::BlockError) {
        self.inner
            .counters
            .corrupt_chunks
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, "chunk skipped");
    }
}

impl Drop for Tsdb {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Creates the series a `series.log` record or a WAL definition names, at its id. An id
/// already there is kept (a definition seen twice, or in both files); ids skipped by damage
/// get a placeholder so every later id still names the series the blocks and the log mean by
/// it. Returns how many placeholders were made.
fn define(head: &mut Head, r: SeriesRecord) -> u64 {
    if (r.id as usize) < head.len() {
        return 0;
    }
    let mut lost = 0;
    while (r.id as usize) > head.len() {
        let l = lost_labels(head.len());
        let hash = hash_labels(l.iter());
        head.create(l, hash, NO_OWNER, 0);
        lost += 1;
    }
    let hash = hash_labels(r.labels.iter());
    head.create(r.labels, hash, NO_OWNER, 0);
    lost
}

/// The placeholder labels of series `id`, whose labels were lost to damage.
fn lost_labels(id: usize) -> Labels {
    let id = id.to_string();
    Labels::from_pairs([("__name__", LOST_SERIES), ("series_id", id.as_str())])
}

fn quarantine(data_dir: &Path, path: &Path) {
    let q = data_dir.join("quarantine");
    let moved = fs::create_dir_all(&q).and_then(|_| {
        let name = path.file_name().unwrap_or_default();
        fs::rename(path, q.join(name))
    });
    if let Err(e) = moved {
        tracing::error!(error = %e, path = %path.display(), "cannot move the damaged file aside; it is skipped");
    }
}

fn load_events(data_dir: &Path) -> Vec<Event> {
    let frames = match files::read_frames(&data_dir.join("events.log")) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "events.log unreadable; host events start empty");
            return Vec::new();
        }
    };
    let mut events: Vec<Event> = Vec::new();
    for p in &frames.payloads {
        if let Ok(mut evs) = codec::decode_borrowed::<Vec<Event>>(p) {
            events.append(&mut evs);
        }
    }
    let skip = events.len().saturating_sub(head::MAX_EVENTS);
    events.drain(..skip);
    events
}

/// How far ahead of the aggregator's clock a sample may be (a day: skewed clocks pass,
/// nonsense timestamps do not).
const MAX_FUTURE_MS: i64 = 86_400_000;

/// Frozen sets that may wait for their block before the writer stops taking writes (and so
/// stops acknowledging): memory stays bounded when blocks are written slower than data
/// arrives, or not at all (a full disk).
const MAX_FROZEN: usize = 2;

/// The WAL writer thread. Series ids below `logged` are defined in the log or in
/// `series.log` (at start-up: every series the head holds, taken before any append can
/// create one).
fn run_writer(mut w: Writer, mut rx: mpsc::Receiver<Job>, inner: Arc<Inner>, mut logged: usize) {
    let mut buf = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut waited = false;
        while inner.frozen.read().unwrap_or_else(|e| e.into_inner()).len() >= MAX_FROZEN {
            if !waited {
                tracing::warn!("blocks are written slower than data arrives: ingest waits");
                waited = true;
            }
            inner.wake_cutter();
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut jobs = vec![first];
        while jobs.len() < 4096 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        buf.clear();
        // Series created since the last group (appends resolve their ids before they queue)
        // are defined in front of the records that name them.
        let mut defined = logged;
        let mut defs_err = None;
        if jobs.iter().any(|j| matches!(j, Job::Write { .. })) {
            let defs: Vec<SeriesRecord> = {
                let h = inner.head.read().unwrap_or_else(|e| e.into_inner());
                defined = h.len();
                (logged..defined)
                    .filter_map(|id| {
                        let id = id as u32;
                        h.get(id).map(|s| SeriesRecord {
                            id,
                            labels: s.labels.clone(),
                        })
                    })
                    .collect()
            };
            if !defs.is_empty() {
                match codec::encode_payload(&Record::defs(defs)) {
                    Ok(p) => codec::frame_into(&p, &mut buf),
                    // Cannot happen for labels; were it to, the group is not written.
                    Err(e) => defs_err = Some(format!("cannot encode series definitions: {e}")),
                }
            }
        }
        for j in &jobs {
            if let Job::Write { framed, .. } = j {
                buf.extend_from_slice(framed);
            }
        }
        let res = if let Some(e) = defs_err {
            Err(std::io::Error::other(e))
        } else if buf.is_empty() {
            Ok(())
        } else {
            w.write_group(&buf)
        };
        match res {
            Ok(()) => {
                logged = defined;
                if !buf.is_empty() {
                    let mut w = inner.write_error.lock().unwrap_or_else(|e| e.into_inner());
                    if w.as_ref()
                        .is_some_and(|(_, failed)| writable_again(&inner.dir, *failed))
                    {
                        w.take();
                        tracing::info!("log writes succeed again");
                    }
                }
                inner
                    .counters
                    .wal_bytes
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                let now = now_ms();
                let limits = AppendLimits {
                    ooo_window_ms: ms(inner.opts.ooo_window),
                    min_t: now.saturating_sub(ms(inner.opts.retention)),
                    max_t: now.saturating_add(MAX_FUTURE_MS),
                };
                let now_s = (now / 1000) as u32;
                let mut answers = Vec::with_capacity(jobs.len());
                let (mut too_old, mut too_new) = (0, 0);
                let mut cut = None;
                {
                    let mut h = inner.head.write().unwrap_or_else(|e| e.into_inner());
                    let mut durable = inner.durable.lock().unwrap_or_else(|e| e.into_inner());
                    let mut pending = inner
                        .pending_events
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    let mut stored = 0;
                    for j in jobs {
                        match j {
                            Job::Write {
                                points,
                                events,
                                origin,
                                done,
                                ..
                            } => {
                                let a = h.apply(&points, Some(limits), now_s);
                                stored += a.stored;
                                too_old += a.too_old;
                                too_new += a.too_new;
                                pending.extend(events.iter().cloned());
                                h.push_events(events);
                                if let Some(o) = origin {
                                    durable.mark(&o.agent, o.epoch, o.sequence);
                                }
                                answers.push((done, Ok(a.stored)));
                            }
                            Job::Barrier { done } => answers.push((done, Ok(0))),
                            Job::Cut { done } => cut = Some(done),
                        }
                    }
                    if stored > 0 {
                        let _ = inner.head_since_ms.compare_exchange(
                            0,
                            now as u64,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    // Cut when asked to, or at once when the head reaches its budget (the
                    // cutter thread writes the frozen set into a block).
                    let over = h.head_samples >= inner.head_budget(h.active_total);
                    if cut.is_some() || over {
                        // Everything before the new segment is in this head: move it out.
                        let r = w
                            .roll()
                            .map_err(|e| StorageError::Write(e.to_string()))
                            .map(|()| {
                                let frozen = Arc::new(Frozen {
                                    series: h.take_samples(),
                                    wal_segment: w.segment(),
                                    durable: durable.to_list(),
                                    events: std::mem::take(&mut *pending),
                                });
                                inner
                                    .frozen
                                    .write()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(frozen);
                                inner.head_since_ms.store(0, Ordering::Relaxed);
                            });
                        if let Err(e) = &r {
                            tracing::error!(error = %e, "cannot roll the WAL to cut the head; retrying later");
                        }
                        if let Some(done) = cut {
                            let _ = done.send(r);
                        }
                        inner.wake_cutter();
                    }
                }
                if too_new > 0 {
                    inner
                        .counters
                        .refused_too_new
                        .fetch_add(too_new as u64, Ordering::Relaxed);
                }
                if too_old > 0 {
                    inner
                        .counters
                        .refused_too_old
                        .fetch_add(too_old as u64, Ordering::Relaxed);
                }
                for (done, r) in answers {
                    let _ = done.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "log write failed; the batches are not acknowledged");
                *inner.write_error.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((e.to_string(), buf.len() as u64));
                let mut d = inner.dedup.lock().unwrap_or_else(|e| e.into_inner());
                for j in jobs {
                    match j {
                        Job::Write { origin, done, .. } => {
                            if let Some(o) = origin {
                                d.unmark(&o.agent, o.epoch, o.sequence);
                            }
                            let _ = done.send(Err(StorageError::Write(e.to_string())));
                        }
                        Job::Barrier { done } => {
                            let _ = done.send(Err(StorageError::Write(e.to_string())));
                        }
                        Job::Cut { done } => {
                            let _ = done.send(Err(StorageError::Write(e.to_string())));
                        }
                    }
                }
            }
        }
    }
}

/// Whether a log that failed writing `failed` bytes counts as writable again after a later write
/// succeeded. On a full disk a small write can succeed in the bytes the failed one freed when its
/// partial record was cut off, and readiness would flap between "cannot write" and ready many
/// times a second; so the failure stands until the filesystem has room for the failed group
/// and a margin (1 MiB). Without a free-space figure (statvfs failing), a success is enough.
fn writable_again(dir: &Path, failed: u64) -> bool {
    match rustix::fs::statvfs(dir) {
        Ok(s) => s.f_bavail.saturating_mul(s.f_frsize) >= failed.saturating_add(1 << 20),
        Err(_) => true,
    }
}

impl Storage for Tsdb {
    fn append(&self, req: AppendRequest) -> BoxFuture<'_, Result<AppendOutcome, StorageError>> {
        Box::pin(self.append_inner(req))
    }

    fn write_error(&self) -> Option<String> {
        self.inner
            .write_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(e, _)| e.clone())
    }

    fn set_append_hook(&self, hook: AppendHook) {
        *self.hook.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        max_samples: usize,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let parts = self.read_series(matchers, start_ms, end_ms, max_samples, Kind::Raw)?;
        let in_memory: usize = parts.iter().flat_map(|p| &p.1).map(Vec::len).sum();
        let total = AtomicU64::new(in_memory as u64);
        // Decoding chunks is most of a read: series are split across the cores.
        let read = |part: Vec<SeriesParts>| -> Result<Vec<SeriesData>, StorageError> {
            let mut out = Vec::with_capacity(part.len());
            for (labels, mut runs, refs) in part {
                let mut from_blocks = Vec::with_capacity(refs.len() + runs.len());
                for (b, e) in refs {
                    let key = (b.seq, e.series);
                    let chunk = match self.inner.cache.get(key) {
                        Some(c) => c,
                        None => match b.read_columns(&e) {
                            Ok(c) => {
                                let (ts, vs) = (&c.ints[0], &c.floats[0]);
                                let decoded: Arc<Vec<Sample>> = Arc::new(
                                    ts.iter().zip(vs).map(|(&t, &v)| Sample(t, v)).collect(),
                                );
                                self.inner.cache.insert(key, decoded.clone());
                                decoded
                            }
                            Err(err) => {
                                self.note_corrupt(&err);
                                continue;
                            }
                        },
                    };
                    let lo = chunk.partition_point(|s| s.0 < start_ms);
                    let hi = chunk.partition_point(|s| s.0 <= end_ms).max(lo);
                    let n = total.fetch_add((hi - lo) as u64, Ordering::Relaxed) as usize;
                    if n + hi - lo > max_samples {
                        return Err(StorageError::TooManySamples { limit: max_samples });
                    }
                    from_blocks.push(chunk[lo..hi].to_vec());
                }
                // Blocks (oldest writes) first, then frozen sets, then the head.
                from_blocks.append(&mut runs);
                let samples = merge_runs(from_blocks);
                if !samples.is_empty() {
                    out.push(SeriesData { labels, samples });
                }
            }
            Ok(out)
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        let chunks: usize = parts.iter().map(|p| p.2.len()).sum();
        if threads <= 1 || chunks < 512 {
            return read(parts);
        }
        let per = parts.len().div_ceil(threads);
        let mut groups: Vec<Vec<SeriesParts>> = Vec::new();
        let mut it = parts.into_iter().peekable();
        while it.peek().is_some() {
            groups.push(it.by_ref().take(per).collect());
        }
        let results: Vec<Result<Vec<SeriesData>, StorageError>> = std::thread::scope(|sc| {
            let handles: Vec<_> = groups.into_iter().map(|g| sc.spawn(|| read(g))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StorageError::Write("a read thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    fn select_rollup(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        resolution_ms: i64,
        max_rows: usize,
    ) -> Result<Vec<RollupData>, StorageError> {
        let kind = match resolution_ms {
            300_000 => Kind::Rollup5m,
            3_600_000 => Kind::Rollup1h,
            _ => {
                return crate::storage::rollup_from_raw(
                    self,
                    matchers,
                    start_ms,
                    end_ms,
                    resolution_ms,
                    max_rows,
                );
            }
        };
        // Rollups exist for what raw retention removed, and raw blocks expire oldest first:
        // buckets ending before the oldest raw sample still in a block come from rollup
        // blocks, later ones are computed from raw samples. (Raw windows are multiples of the
        // bucket widths, so no bucket straddles the two.)
        let (raw_min, rollup_max) = {
            let blocks = self.inner.blocks.read().unwrap_or_else(|e| e.into_inner());
            let raw_min = blocks
                .iter()
                .filter(|b| b.kind == Kind::Raw)
                .map(|b| b.min_t)
                .min();
            let rollup_max = blocks
                .iter()
                .filter(|b| b.kind == kind)
                .map(|b| b.max_t)
                .max();
            (raw_min, rollup_max)
        };
        let covered = match (rollup_max, raw_min) {
            (None, _) => i64::MIN,
            (Some(r), None) => r,
            (Some(_), Some(m)) => m.saturating_sub(1),
        };
        let mut by_labels: std::collections::HashMap<Labels, Vec<rollup::Bucket>> =
            Default::default();
        let mut rows = 0usize;
        if covered >= start_ms {
            for (labels, _, refs) in
                self.read_series(matchers, start_ms, covered.min(end_ms), max_rows, kind)?
            {
                let mut runs: Vec<Vec<rollup::Bucket>> = Vec::new();
                for (b, e) in refs {
                    match b.read_columns(&e).and_then(|c| {
                        rollup::from_columns(&c).map_err(|err| block::BlockError::Corrupt {
                            path: b.path.display().to_string(),
                            message: err.to_string(),
                        })
                    }) {
                        Ok(bk) => runs.push(
                            bk.into_iter()
                                .filter(|x| x.end >= start_ms && x.end <= end_ms.min(covered))
                                .collect(),
                        ),
                        Err(err) => self.note_corrupt(&err),
                    }
                }
                let merged = merge_buckets(runs);
                rows += merged.len();
                if rows > max_rows {
                    return Err(StorageError::TooManySamples { limit: max_rows });
                }
                if !merged.is_empty() {
                    by_labels.insert(labels, merged);
                }
            }
        }
        if end_ms > covered {
            let from = if covered == i64::MIN {
                start_ms
            } else {
                (covered + 1).max(start_ms)
            };
            for r in crate::storage::rollup_from_raw(
                self,
                matchers,
                from,
                end_ms,
                resolution_ms,
                max_rows.saturating_sub(rows),
            )? {
                by_labels.entry(r.labels).or_default().extend(r.buckets);
            }
        }
        Ok(by_labels
            .into_iter()
            .map(|(labels, buckets)| RollupData { labels, buckets })
            .collect())
    }

    fn series(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<Labels> {
        let Ok(parts) = self.read_series(matchers, start_ms, end_ms, usize::MAX, Kind::Raw) else {
            return Vec::new();
        };
        parts
            .into_iter()
            .filter(|(_, runs, refs)| !runs.is_empty() || !refs.is_empty())
            .map(|(l, _, _)| l)
            .collect()
    }

    fn label_names(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<String> {
        if matchers.is_empty() && start_ms == i64::MIN && end_ms == i64::MAX {
            return self.read_head().label_names();
        }
        crate::storage::label_names_of(&self.series(matchers, start_ms, end_ms))
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<String> {
        if matchers.is_empty() && start_ms == i64::MIN && end_ms == i64::MAX {
            let mut v: Vec<String> = self
                .read_head()
                .label_values(name)
                .into_iter()
                .map(|(v, _)| v.to_string())
                .collect();
            v.sort();
            return v;
        }
        crate::storage::label_values_of(&self.series(matchers, start_ms, end_ms), name)
    }

    fn stats(&self) -> StorageStats {
        let h = self.read_head();
        let blocks = self.inner.blocks.read().unwrap_or_else(|e| e.into_inner());
        let frozen = self.inner.frozen.read().unwrap_or_else(|e| e.into_inner());
        let in_blocks: u64 = blocks
            .iter()
            .filter(|b| b.kind == Kind::Raw)
            .map(|b| b.rows)
            .sum();
        let in_frozen: u64 = frozen
            .iter()
            .flat_map(|f| &f.series)
            .map(|s| s.1.len() as u64)
            .sum();
        StorageStats {
            series: h.len() as u64,
            samples: h.head_samples + in_blocks + in_frozen,
            overwritten: h.overwritten,
        }
    }

    fn events(&self, matchers: &[Matcher], since_ms: i64, limit: usize) -> Vec<Event> {
        self.read_head().events(matchers, since_ms, limit)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.flush_and_compact(now_ms())
    }

    fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        use telltale_common::names as n;
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut family = |name: &str, kind: &str, help: &str, rows: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        family(
            n::AGG_SERIES_REFUSED,
            "counter",
            "New series refused by the active-series caps.",
            &[
                (
                    "{reason=\"agent_limit\"}".into(),
                    l(&c.series_refused_agent),
                ),
                (
                    "{reason=\"total_limit\"}".into(),
                    l(&c.series_refused_total),
                ),
                (
                    "{reason=\"remote_write_limit\"}".into(),
                    l(&c.series_refused_remote_write),
                ),
                (
                    "{reason=\"remote_write_request_limit\"}".into(),
                    l(&c.series_refused_request),
                ),
            ],
        );
        family(
            n::AGG_SAMPLES_REFUSED,
            "counter",
            "Samples refused: behind their series' out-of-order window or older than retention (too_old), or more than a day ahead of the aggregator's clock.",
            &[
                ("{reason=\"too_old\"}".into(), l(&c.refused_too_old)),
                (
                    "{reason=\"too_far_in_future\"}".into(),
                    l(&c.refused_too_new),
                ),
            ],
        );
        let (active, head) = {
            let h = self.read_head();
            (h.active_total, h.head_samples)
        };
        family(
            n::AGG_ACTIVE_SERIES,
            "gauge",
            "Series written within the active window.",
            &[(String::new(), active)],
        );
        family(
            n::AGG_HEAD_SAMPLES,
            "gauge",
            "Samples in the head, not yet in a block.",
            &[(String::new(), head)],
        );
        let mut per: std::collections::BTreeMap<(&str, u8), u64> = Default::default();
        let mut bytes: std::collections::BTreeMap<&str, u64> = Default::default();
        for (k, lvl, _, b) in self.block_summary() {
            *per.entry((k.name(), lvl)).or_default() += 1;
            *bytes.entry(k.name()).or_default() += b;
        }
        let rows: Vec<(String, u64)> = per
            .into_iter()
            .map(|((k, lvl), v)| (format!("{{kind=\"{k}\",level=\"{lvl}\"}}"), v))
            .collect();
        family(
            n::AGG_BLOCKS,
            "gauge",
            "Storage blocks by kind and level.",
            &rows,
        );
        let rows: Vec<(String, u64)> = bytes
            .into_iter()
            .map(|(k, v)| (format!("{{kind=\"{k}\"}}"), v))
            .collect();
        family(
            n::AGG_BLOCK_BYTES,
            "gauge",
            "Bytes of storage blocks by kind.",
            &rows,
        );
        for (name, help, v) in [
            (
                n::AGG_CORRUPT_CHUNKS,
                "Chunks that failed their checksum or did not decode when read.",
                l(&c.corrupt_chunks),
            ),
            (
                n::AGG_QUARANTINED_BLOCKS,
                "Blocks moved to quarantine at start-up.",
                self.recovery.quarantined,
            ),
            (
                n::AGG_WAL_BYTES,
                "Bytes written to the WAL.",
                l(&c.wal_bytes),
            ),
            (
                n::AGG_HEAD_CUTS,
                "Head cuts into level-0 blocks.",
                l(&c.cuts),
            ),
            (n::AGG_COMPACTIONS, "Compactions.", l(&c.compactions)),
            (
                n::AGG_EXPIRED_BLOCKS,
                "Blocks deleted by retention.",
                l(&c.expired_blocks),
            ),
            (
                n::AGG_MAINTENANCE_ERRORS,
                "Storage maintenance rounds that failed.",
                l(&c.maintenance_errors),
            ),
        ] {
            family(name, "counter", help, &[(String::new(), v)]);
        }
    }
}

/// Waits `every` or until woken; false once the engine is dropped.
fn wait_or_wake(inner: &Inner, stop: &AtomicBool, every: Duration) -> bool {
    let until = std::time::Instant::now() + every;
    let (lock, cv) = &inner.wake;
    let mut woken = lock.lock().unwrap_or_else(|e| e.into_inner());
    while !*woken && !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        woken = cv
            .wait_timeout(woken, left.min(Duration::from_millis(100)))
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    *woken = false;
    !stop.load(Ordering::Relaxed)
}

/// Merges bucket runs given oldest write first (a newer bucket with the same end wins).
fn merge_buckets(runs: Vec<Vec<rollup::Bucket>>) -> Vec<rollup::Bucket> {
    let mut all: Vec<(usize, rollup::Bucket)> = runs
        .into_iter()
        .enumerate()
        .flat_map(|(i, r)| r.into_iter().map(move |b| (i, b)))
        .collect();
    all.sort_by_key(|(i, b)| (b.end, *i));
    let mut out: Vec<rollup::Bucket> = Vec::with_capacity(all.len());
    for (_, b) in all {
        match out.last_mut() {
            Some(last) if last.end == b.end => *last = b,
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests;
