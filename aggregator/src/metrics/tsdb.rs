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
//! tombstones        deletions not yet cleaned (see `tombstones`)
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

mod append;
mod batch_scan;
pub mod block;
mod cache;
pub mod check;
pub mod chunk;
mod compact;
mod feed;
mod precedence;
pub use crate::durable::frames as files;
pub mod head;
pub mod progress;
mod query;
pub mod rollup;
pub mod snapshot;
pub mod tombstones;
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

use crate::durable::dedup::{self, Dedup};
use crate::metrics::remote_write;
use crate::metrics::storage::stamp_agent_labels;
use crate::metrics::storage::{
    Admin, AppendData, AppendHook, AppendOutcome, AppendRequest, Appender, BoxFuture, Matcher,
    Origin, Querier, RollupData, SeriesData, StorageError, StorageStats, rollup::Bucket,
};
use append::run_writer;
use block::{Block, Kind};
pub use feed::{WalFeed, WalHold, WalSamples, decode_record};
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
    /// How far ahead of this host's clock a sample may be; further ones are refused and
    /// counted (`too_far_in_future`). Stored future samples would block their series: once
    /// the sender's clock is right again, its samples are older than the stored ones and
    /// beyond the out-of-order window, refused for as long as the clock was ahead.
    pub max_future: Duration,
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
    /// WAL segments at or above this number are kept even once blocks cover them: readers
    /// of the log (remote_write queues, see `forward`) have not sent them yet.
    pub wal_hold: WalHold,
    /// Forward only (`[storage] mode = "forward"`, like Prometheus' agent mode): appends are
    /// logged and acknowledged as always, and series resolved and counted, but no sample
    /// goes to the head, so no block is ever written and queries find nothing. The WAL is
    /// rolled every `forward_segment_bytes` (or `head_max_age`) and its segments deleted
    /// once every remote_write queue has sent them.
    pub forward_only: bool,
    /// Forward only: the WAL continues in a new segment (and the segments before it become
    /// deletable once sent) past this size (16 MiB), so disk use stays a few segments beyond
    /// what the queues have not sent.
    pub forward_segment_bytes: u64,
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
            // Mimir's default creation grace period: skew of minutes passes, a jumped clock
            // does not.
            max_future: Duration::from_secs(600),
            head_max_age: Duration::from_secs(600),
            head_samples_per_series: 60,
            max_series_per_agent: 200_000,
            max_series: 10_000_000,
            max_series_remote_write: 200_000,
            max_new_series_per_remote_write: 20_000,
            active_window: Duration::from_secs(3600),
            maintenance_interval: Duration::from_secs(10),
            chunk_cache_bytes: 128 << 20,
            wal_hold: WalHold::default(),
            forward_only: false,
            forward_segment_bytes: 16 << 20,
        }
    }
}

/// Counters the engine keeps (exported on `/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Samples refused: older than their series' out-of-order window or than retention.
    pub refused_too_old: AtomicU64,
    /// Samples refused: further ahead of the aggregator's clock than `max_future`.
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
    /// Blocks merged or rewritten out of turn so that a newer write at a timestamp keeps
    /// outranking an older one (only samples written again at times a series had).
    pub resequenced: AtomicU64,
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

/// A series' labels, in-memory sample runs (oldest first, deletions already dropped), block
/// chunks to read, and its deleted intervals (to drop from the chunks).
type SeriesParts = (
    Labels,
    Vec<Vec<Sample>>,
    Vec<(Arc<Block>, block::Entry)>,
    Option<tombstones::Intervals>,
);

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
    /// Deletions in force (see [`tombstones`]); the write lock also serialises the file.
    tombstones: RwLock<tombstones::Tombstones>,
    /// Wall-clock ms of the last checkpoint.
    last_checkpoint_ms: AtomicU64,
    /// The checkpoint of the last block cut, not yet written.
    pending_checkpoint: Mutex<Option<Checkpoint>>,
    /// The first WAL segment the written checkpoint does not cover.
    checkpointed_segment: AtomicU64,
    /// The durable end of the WAL: the segment being written and its synced length.
    wal_tip: Mutex<(u64, u64)>,
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
    // Runs that do not overlap in time (chunks of different windows, then the head) share no
    // timestamp, so which write is newer decides nothing: they are laid end to end in time
    // order, whatever order the blocks were listed in.
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| runs[i].first().map(|s| s.0));
    let disjoint = order
        .windows(2)
        .all(|w| runs[w[0]].last().map(|s| s.0) < runs[w[1]].first().map(|s| s.0));
    if disjoint {
        let mut out = Vec::with_capacity(runs.iter().map(Vec::len).sum());
        for i in order {
            out.extend_from_slice(&runs[i]);
        }
        return out;
    }
    let mut all: Vec<(i64, usize, f64)> = Vec::new();
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
    /// A handle for readers of the WAL.
    pub fn wal_feed(&self) -> WalFeed {
        WalFeed {
            inner: self.inner.clone(),
        }
    }

    /// Opens (or creates) the engine in `data_dir` with default options.
    pub fn open(data_dir: &Path) -> Result<Tsdb, StorageError> {
        Tsdb::open_with(data_dir, Options::default())
    }

    /// Opens (or creates) the engine: loads series, blocks and the checkpoint, replays the
    /// WAL, and starts the writer and maintenance threads.
    pub fn open_with(data_dir: &Path, opts: Options) -> Result<Tsdb, StorageError> {
        Tsdb::open_reporting(data_dir, opts, &progress::Progress::default())
    }

    /// [`Tsdb::open_with`], telling `progress` how far it is (blocks loaded, WAL segments and
    /// samples replayed).
    pub fn open_reporting(
        data_dir: &Path,
        opts: Options,
        progress: &progress::Progress,
    ) -> Result<Tsdb, StorageError> {
        use progress::Phase;
        progress.phase(Phase::Series, 0);
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
        let entries: Vec<_> = fs::read_dir(&blocks_dir)
            .map_err(|e| open_err(&blocks_dir, e))?
            .collect();
        progress.phase(Phase::Blocks, entries.len() as u64);
        for e in entries {
            progress.step();
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
        let mut replayed_unheld = false;
        progress.phase(
            Phase::Wal,
            segs.iter().filter(|(n, _)| *n >= cp.wal_segment).count() as u64,
        );
        for (n, path) in &segs {
            if *n < cp.wal_segment {
                if *n < opts.wal_hold.get() {
                    let _ = fs::remove_file(path);
                }
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
                if opts.forward_only {
                    // Nothing goes to the head; the segment is cut (and then deleted once
                    // sent) like one written since.
                    replayed_unheld |= !points.is_empty();
                } else {
                    head.apply(&points, None, 0);
                }
                progress.samples(points.len() as u64);
                replayed_events.extend(evs);
                replayed_events.extend(rec.events);
                Ok(())
            })
            .map_err(|e| open_err(&wal_dir, format!("{}: {e}", path.display())))?;
            progress.step();
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
        let tombstones =
            tombstones::Tombstones::load(data_dir).map_err(|e| open_err(data_dir, e))?;
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
            head_since_ms: AtomicU64::new(if head_samples > 0 || replayed_unheld {
                now_ms() as u64
            } else {
                0
            }),
            counters: Counters::default(),
            write_error: Mutex::new(None),
            cutting: Mutex::new(()),
            compacting: Mutex::new(()),
            wake: (Mutex::new(false), std::sync::Condvar::new()),
            cache,
            tombstones: RwLock::new(tombstones),
            last_checkpoint_ms: AtomicU64::new(0),
            pending_checkpoint: Mutex::new(None),
            checkpointed_segment: AtomicU64::new(cp.wal_segment),
            wal_tip: Mutex::new((next_segment, 0)),
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
                        if e.is_disk_full() {
                            tracing::error!(error = %e, "disk full: the head stays in memory and in the WAL until a block can be written; retrying");
                        } else {
                            tracing::error!(error = %e, "writing the head into a block failed; retrying");
                        }
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
                        if e.is_disk_full() {
                            tracing::error!(error = %e, "disk full: compaction waits (its inputs are kept); retrying next round");
                        } else {
                            tracing::error!(error = %e, "storage compaction failed; retrying next round");
                        }
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

    /// Cuts the head into blocks (unless `skip_head`), then puts the engine's files under
    /// `<data dir>/snapshots/<name>`; returns the name (see [`snapshot`]).
    pub fn snapshot(&self, now_ms: i64, skip_head: bool) -> Result<String, StorageError> {
        if !skip_head {
            self.flush_and_compact(now_ms)?;
        }
        let stamp = jiff::Timestamp::from_millisecond(now_ms)
            .map(|t| t.strftime("%Y%m%dT%H%M%SZ").to_string())
            .unwrap_or_else(|_| now_ms.to_string());
        let name = format!("{stamp}-{:016x}", rand::random::<u64>());
        let dest = self.inner.dir.join("snapshots").join(&name);
        snapshot::take(&self.inner.dir, &dest)
            .map_err(|e| StorageError::Write(format!("snapshot {}: {e}", dest.display())))?;
        Ok(name)
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

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tombstone_tests;
