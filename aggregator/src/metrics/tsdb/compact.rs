//! Maintenance: cutting the head into level-0 blocks, compacting closed windows, writing
//! rollups, and retention. Every step takes `now` (wall-clock ms) as an argument, so tests
//! can move time; the background thread passes the clock.
//!
//! # Levels
//! | level | raw blocks | rollup blocks |
//! |---|---|---|
//! | 0 | one per head cut (any time range) | — |
//! | 1 | one per 2-hour window | per 2-hour window |
//! | 2 | one per day | per day |
//! | 3 | — | per 30 days |
//!
//! A window is *closed* once it ends at least the out-of-order window before now. Closed level-0 blocks are merged into their 2-hour windows — or straight
//! into a day block when that day was already compacted (a late backfill) — together with
//! the blocks already there, so a window's block always holds all of its samples. Closed days of
//! 2-hour blocks become day blocks. Retention deletes whole blocks whose newest sample is
//! past it; a raw block leaves as its rollups (5 m and 1 h buckets of its window, exact
//! because the block holds the whole window), which are compacted into day and 30-day
//! blocks and kept for the rollup retention. While raw samples are kept, the same buckets
//! are computed from them when a query asks, so rollups cost no disk during the raw
//! retention (measured: at a 2-hour window a rollup block cost as much as 40 % of the raw
//! data, nearly all of it per-chunk overhead).
//!
//! New blocks are synced and added before the inputs are dropped and deleted; a crash in
//! between leaves duplicates that reads merge away and the next round compacts again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use telltale_common::codec;
use telltale_common::model::Sample;
use tokio::sync::{mpsc, oneshot};

use super::block::{Block, BlockError, BlockWriter, Kind};
use super::chunk::ChunkError;
use super::precedence::{Seqs, SharedTimes, with_newer_sharing};
use super::query::merge_buckets;
use super::rollup;
use super::tombstones;
use super::{Checkpoint, Inner, Job, SeriesRecord, chunk, files, merge_runs, ms};
use crate::metrics::storage::StorageError;
use crate::metrics::storage::rollup::{Bucket, buckets, window_end};

/// Why a maintenance step failed. Every failure leaves the engine consistent (inputs stay
/// until what replaces them is durable) and the next round retries; the variant says
/// whether retrying can help — a full disk clears when space returns, a corrupt block is
/// quarantined, a closed engine stops the round for good.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// A block could not be written or read.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// A log or checkpoint file could not be written.
    #[error("{file}: {source}")]
    Io {
        /// The file (relative to the data directory).
        file: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A record could not be encoded (a bug, not a disk problem).
    #[error("encoding {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The codec's error.
        source: telltale_common::codec::CodecError,
    },
    /// A rollup chunk did not decode.
    #[error("rollup chunk: {0}")]
    Chunk(#[from] ChunkError),
    /// The writer refused to cut the head (its log write failed), or is gone.
    #[error("cutting the head: {0}")]
    Cut(#[from] StorageError),
}

impl MaintenanceError {
    /// True when the disk is full: the round is retried once space returns.
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            MaintenanceError::Io { source, .. } => Some(source),
            MaintenanceError::Block(BlockError::Io { source, .. }) => Some(source),
            _ => None,
        };
        io.is_some_and(|e| e.raw_os_error() == Some(28)) // ENOSPC
    }
}

fn io(file: &'static str) -> impl FnOnce(std::io::Error) -> MaintenanceError {
    move |source| MaintenanceError::Io { file, source }
}

fn encode(
    what: &'static str,
) -> impl FnOnce(telltale_common::codec::CodecError) -> MaintenanceError {
    move |source| MaintenanceError::Encode { what, source }
}

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// Window width per level (level 0 blocks have none; they are treated as 2 hours).
const WINDOWS: [i64; 4] = [2 * HOUR, 2 * HOUR, DAY, 30 * DAY];

/// `events.log` is rewritten with the newest events once it grows past this.
const EVENTS_LOG_MAX: u64 = 64 << 20;

/// Level-0 blocks of one open sub-window merged together once this many exist (or once the
/// sub-window has ended).
const OPEN_L0_MERGE: usize = 4;

/// The span of the blocks level-0 blocks of open windows are merged into (2-hour windows
/// are made of whole ones).
const OPEN_SUB_WINDOW: i64 = 30 * 60 * 1000;

/// The window width of a level.
pub fn window_of_level(level: u8) -> i64 {
    WINDOWS[usize::from(level.min(3))]
}

/// One maintenance round: [`cut_round`] then [`compact_round`].
pub(super) fn maintain(
    inner: &Inner,
    tx: &mpsc::Sender<Job>,
    now: i64,
    force: bool,
) -> Result<(), MaintenanceError> {
    cut_round(inner, tx, now, force)?;
    compact_round(inner, now, force)
}

/// Cuts the head if it is old enough (or `force`), then writes every frozen set into a
/// level-0 block. (The writer cuts by itself when the head reaches its size budget.)
pub(super) fn cut_round(
    inner: &Inner,
    tx: &mpsc::Sender<Job>,
    now: i64,
    force: bool,
) -> Result<(), MaintenanceError> {
    let _serial = inner.cutting.lock().unwrap_or_else(|e| e.into_inner());
    // Frozen sets first: the writer stops taking writes while too many wait, and a cut
    // request queued behind it would never be answered.
    write_frozen(inner)?;
    let head_samples = inner
        .head
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .head_samples;
    let since = inner.head_since_ms.load(Ordering::Relaxed) as i64;
    // Forward only, the head keeps no samples: the segments written since the last cut are
    // what is due (`head_since_ms` is set by the first append after a cut).
    let written = head_samples > 0 || (inner.opts.forward_only && since > 0);
    let due = written && (force || (since > 0 && now - since >= ms(inner.opts.head_max_age)));
    if due {
        let (done, rx) = oneshot::channel();
        tx.blocking_send(Job::Cut { done })
            .map_err(|_| StorageError::Closed)?;
        rx.blocking_recv().map_err(|_| StorageError::Closed)??;
    }
    write_frozen(inner)?;
    checkpoint(inner, force)
}

/// Compacts closed windows, applies retention and recounts active series (`force`: see
/// [`compact`]).
pub(super) fn compact_round(inner: &Inner, now: i64, force: bool) -> Result<(), MaintenanceError> {
    let _serial = inner.compacting.lock().unwrap_or_else(|e| e.into_inner());
    compact(inner, now, force)?;
    retention(inner, now)?;
    let since_s = ((now / 1000) as u32).saturating_sub(inner.opts.active_window.as_secs() as u32);
    inner
        .head
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .recount_active(since_s);
    Ok(())
}

fn blocks_dir(inner: &Inner) -> std::path::PathBuf {
    inner.dir.join("blocks")
}

/// Appends the series created since the last cut to `series.log` (before any block names them).
fn persist_series(inner: &Inner) -> Result<(), MaintenanceError> {
    let from = inner.persisted_series.load(Ordering::Relaxed) as u32;
    let records: Vec<Vec<u8>> = {
        let h = inner.head.read().unwrap_or_else(|e| e.into_inner());
        let to = h.len() as u32;
        let mut out = Vec::new();
        for id in from..to {
            if let Some(s) = h.get(id) {
                let rec = SeriesRecord {
                    id,
                    labels: s.labels.clone(),
                };
                out.push(codec::encode_payload(&rec).map_err(encode("series record"))?);
            }
        }
        out
    };
    if records.is_empty() {
        return Ok(());
    }
    files::append_frames(&inner.dir.join("series.log"), &records).map_err(io("series.log"))?;
    inner
        .persisted_series
        .store(u64::from(from) + records.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// Writes every frozen set (oldest first) into a level-0 block (after the series it names
/// are in `series.log` and its events in `events.log`), and leaves its checkpoint pending
/// (see [`checkpoint`]).
fn write_frozen(inner: &Inner) -> Result<(), MaintenanceError> {
    loop {
        let Some(f) = inner
            .frozen
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .cloned()
        else {
            return Ok(());
        };
        persist_series(inner)?;
        if !f.events.is_empty() {
            let path = inner.dir.join("events.log");
            let payload = codec::encode_payload(&f.events).map_err(encode("events"))?;
            files::append_frames(&path, &[payload]).map_err(io("events.log"))?;
            // Start-up keeps the newest events only: past a size, keep just those on disk.
            if std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) > EVENTS_LOG_MAX {
                let newest = inner.head.read().unwrap_or_else(|e| e.into_inner()).events(
                    &[],
                    i64::MIN,
                    super::head::MAX_EVENTS,
                );
                let payload = codec::encode_payload(&newest).map_err(encode("events"))?;
                files::write_atomic(&path, &[payload]).map_err(io("events.log"))?;
            }
        }
        if !f.series.is_empty() {
            let seq = inner.next_seq.fetch_add(1, Ordering::Relaxed);
            let mut w = BlockWriter::create(&blocks_dir(inner), Kind::Raw, 0, seq)?;
            for (id, first, last, rows, bytes) in encode_chunks(&f.series) {
                w.add(id, first, last, rows, &bytes)?;
            }
            if let Some(b) = w.finish()? {
                let mut blocks = inner.blocks.write().unwrap_or_else(|e| e.into_inner());
                blocks.push(Arc::new(b));
            }
        }
        inner
            .frozen
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|x| !Arc::ptr_eq(x, &f));
        inner.counters.cuts.fetch_add(1, Ordering::Relaxed);
        *inner
            .pending_checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Checkpoint {
            wal_segment: f.wal_segment,
            dedup: f.durable.clone(),
        });
    }
}

/// Writes the checkpoint of the last block cut, at most once a second unless `force`:
/// skipping one only leaves WAL segments for start-up to replay, and cuts come several a
/// second under load (each checkpoint costs two more syncs). Then deletes the WAL segments
/// it covers.
fn checkpoint(inner: &Inner, force: bool) -> Result<(), MaintenanceError> {
    let now = super::now_ms();
    let last = inner.last_checkpoint_ms.load(Ordering::Relaxed) as i64;
    if !force && now - last < 1000 {
        return Ok(());
    }
    let Some(cp) = inner
        .pending_checkpoint
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    else {
        return Ok(());
    };
    let payload = codec::encode_payload(&cp).map_err(encode("checkpoint"))?;
    files::write_atomic(&inner.dir.join("checkpoint"), &[payload]).map_err(io("checkpoint"))?;
    inner
        .last_checkpoint_ms
        .store(now.max(0) as u64, Ordering::Relaxed);
    inner
        .checkpointed_segment
        .store(cp.wal_segment, Ordering::Relaxed);
    let wal_dir = inner.dir.join("log");
    let keep = cp.wal_segment.min(inner.opts.wal_hold.get());
    for (n, path) in super::wal::list_segments(&wal_dir).map_err(io("log"))? {
        if n < keep {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

/// Encodes a cut's chunks in the plain format. Returns `(series, first t, last t, rows,
/// chunk)` in input order. (One thread: plain chunks cost a few ns a sample, and threads
/// spawned per cut each keep a malloc arena of their own.)
fn encode_chunks(series: &[(u32, Vec<Sample>)]) -> Vec<(u32, i64, i64, u32, Vec<u8>)> {
    series
        .iter()
        .filter_map(|(id, samples)| {
            let (ts, vs): (Vec<i64>, Vec<f64>) = samples.iter().map(|s| (s.0, s.1)).unzip();
            let (first, last) = (*ts.first()?, *ts.last()?);
            Some((
                *id,
                first,
                last,
                ts.len() as u32,
                chunk::encode_plain(&[&ts], &[&vs]),
            ))
        })
        .collect()
}

fn snapshot(inner: &Inner) -> Vec<Arc<Block>> {
    inner
        .blocks
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// The windows of width `w` that `[min_t, max_t]` touches.
fn windows_touched(min_t: i64, max_t: i64, w: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut e = window_end(min_t, w);
    while e < window_end(max_t, w) + w {
        out.push(e);
        e += w;
        if out.len() > 100_000 {
            break;
        }
    }
    out
}

/// Compacts closed windows; `force` (a flush) also rewrites the level-0 blocks of open
/// windows, however few, into pco blocks (cut blocks are in the plain format).
fn compact(inner: &Inner, now: i64, force: bool) -> Result<(), MaintenanceError> {
    // Wall-clock time closes windows: backfilled history compacts at once, and the last
    // data of a quiet system still moves on. A series that lags (an agent replaying an
    // outage) may still add to a closed window; its late samples are merged in then.
    let closed = now - ms(inner.opts.ooo_window);
    // Raw level 0 into 2-hour windows, or into an existing day block.
    let blocks = snapshot(inner);
    let l0: Vec<Arc<Block>> = blocks
        .iter()
        .filter(|b| b.kind == Kind::Raw && b.level == 0 && window_end(b.max_t, 2 * HOUR) <= closed)
        .cloned()
        .collect();
    if !l0.is_empty() {
        let days: HashSet<i64> = blocks
            .iter()
            .filter(|b| b.kind == Kind::Raw && b.level == 2)
            .map(|b| window_end(b.max_t, DAY))
            .collect();
        let target = move |t: i64| {
            let d = window_end(t, DAY);
            if days.contains(&d) {
                (2u8, d)
            } else {
                (1u8, window_end(t, 2 * HOUR))
            }
        };
        let mut targets = BTreeSet::new();
        for b in &l0 {
            for w in windows_touched(b.min_t, b.max_t, 2 * HOUR) {
                targets.insert(target(w));
            }
        }
        let mut inputs = l0.clone();
        inputs.extend(
            blocks
                .iter()
                .filter(|b| {
                    b.kind == Kind::Raw
                        && b.level >= 1
                        && targets
                            .contains(&(b.level, window_end(b.max_t, window_of_level(b.level))))
                })
                .cloned(),
        );
        merge_write(inner, inputs, Kind::Raw, &target)?;
    }
    // Level-0 blocks of windows still open are merged once there are a few, so the newest
    // hours are not left in many small chunks (they compress worse and cost a read each).
    // They are merged per sub-window of `OPEN_SUB_WINDOW`, not into one block per 2-hour
    // window: that block's chunk of a series grew through the window (10 800 samples at 1 s
    // before it closed), every merge rewrote it whole, and every rule evaluation decoded it
    // whole to read five minutes — and the ever larger allocations fragmented the heap (the
    // soak's RSS growth). A sub-window's chunk stays small; the closed 2-hour window is
    // compacted from them as before.
    let mut open: BTreeMap<i64, Vec<Arc<Block>>> = BTreeMap::new();
    for b in snapshot(inner)
        .into_iter()
        .filter(|b| b.kind == Kind::Raw && b.level == 0 && window_end(b.max_t, 2 * HOUR) > closed)
    {
        open.entry(window_end(b.max_t, OPEN_SUB_WINDOW))
            .or_default()
            .push(b);
    }
    for (end, group) in open {
        let ended = end <= now;
        let due = if force {
            !group.is_empty()
        } else {
            group.len() >= OPEN_L0_MERGE || (ended && group.len() >= 2)
        };
        if due {
            merge_write(inner, group, Kind::Raw, &|t| {
                (0, window_end(t, OPEN_SUB_WINDOW))
            })?;
        }
    }
    // Closed days: 2-hour blocks into day blocks; rollups likewise, then into 30 days.
    for (kind, from, to) in [
        (Kind::Raw, 1u8, 2u8),
        (Kind::Rollup5m, 1, 2),
        (Kind::Rollup1h, 1, 2),
        (Kind::Rollup5m, 2, 3),
        (Kind::Rollup1h, 2, 3),
    ] {
        let w = window_of_level(to);
        let blocks = snapshot(inner);
        let ready: BTreeSet<i64> = blocks
            .iter()
            .filter(|b| b.kind == kind && b.level == from && window_end(b.max_t, w) <= closed)
            .map(|b| window_end(b.max_t, w))
            .collect();
        if ready.is_empty() {
            continue;
        }
        let inputs: Vec<Arc<Block>> = blocks
            .iter()
            .filter(|b| {
                b.kind == kind
                    && (b.level == from || b.level == to)
                    && ready.contains(&window_end(b.max_t, w))
            })
            .cloned()
            .collect();
        merge_write(inner, inputs, kind, &move |t| (to, window_end(t, w)))?;
    }
    Ok(())
}

type Writers = BTreeMap<(Kind, u8, i64), BlockWriter>;

fn writer<'a>(
    inner: &Inner,
    ws: &'a mut Writers,
    key: (Kind, u8, i64),
    seqs: &mut Seqs,
) -> Result<&'a mut BlockWriter, MaintenanceError> {
    match ws.entry(key) {
        std::collections::btree_map::Entry::Occupied(e) => Ok(e.into_mut()),
        std::collections::btree_map::Entry::Vacant(v) => {
            let seq = seqs.take(inner);
            let w = BlockWriter::create(&blocks_dir(inner), key.0, key.1, seq)?;
            Ok(v.insert(w))
        }
    }
}

/// Merges `inputs` (all of one kind) into the target windows, keeping newest-write-wins
/// across every block of the kind.
///
/// Which of two samples at the same time wins goes by block sequence number, and the blocks
/// written here get new, higher ones. So a block of the kind that shares times of a series
/// with the inputs is merged with them when its sequence number lies among theirs (the merge
/// keeps their order), and rewritten above the merge's blocks when it is newer than all of
/// them (so it still outranks what they became). Without this an older write read back in
/// place of a newer one at the same timestamp (found by `tombstone_tests`).
///
/// Crash-safe order: the merge's numbers are reserved first, then one range per newer block
/// above them; the newer blocks are rewritten newest first, then the merge is written. At any
/// point a crash leaves every pair of blocks sharing times in their original order (an
/// original and its copy hold the same samples).
fn merge_write(
    inner: &Inner,
    mut inputs: Vec<Arc<Block>>,
    kind: Kind,
    target: &dyn Fn(i64) -> (u8, i64),
) -> Result<(), MaintenanceError> {
    let Some(lo) = inputs.iter().map(|b| b.seq).min() else {
        return Ok(());
    };
    let hi = inputs.iter().map(|b| b.seq).max().unwrap_or(lo);
    let mut shared = SharedTimes::default();
    // Among the inputs' sequence numbers: merged with them.
    loop {
        let between: Vec<Arc<Block>> = snapshot(inner)
            .into_iter()
            .filter(|b| b.kind == kind && lo < b.seq && b.seq < hi)
            .filter(|b| !inputs.iter().any(|i| Arc::ptr_eq(i, b)))
            .filter(|b| inputs.iter().any(|i| shared.check(i, b)))
            .collect();
        if between.is_empty() {
            break;
        }
        inner
            .counters
            .resequenced
            .fetch_add(between.len() as u64, Ordering::Relaxed);
        inputs.extend(between);
    }
    let mut own = Seqs::reserve(inner, &inputs, OPEN_SUB_WINDOW);
    // Newer than all of them (a cut's block made meanwhile included): a block joins when it
    // is newer than one that shares times with it, an input or one already joining.
    let candidates: Vec<Arc<Block>> = snapshot(inner)
        .into_iter()
        .filter(|b| b.kind == kind && b.seq > hi)
        .filter(|b| !inputs.iter().any(|i| Arc::ptr_eq(i, b)))
        .collect();
    let join = with_newer_sharing(&mut shared, &inputs, &candidates);
    inner
        .counters
        .resequenced
        .fetch_add(join.len() as u64, Ordering::Relaxed);
    rewrite_in_order(inner, join)?;
    merge_exact(inner, inputs, kind, target, &mut own)
}

/// Rewrites `blocks` (ascending by sequence), each alone in its own level's windows, keeping
/// their order above everything numbered before: ranges are reserved oldest first, and the
/// blocks rewritten newest first, so a crash part-way leaves the rewritten ones (the newest)
/// above the rest.
fn rewrite_in_order(inner: &Inner, blocks: Vec<Arc<Block>>) -> Result<(), MaintenanceError> {
    let ranges: Vec<Seqs> = blocks
        .iter()
        .map(|b| Seqs::reserve(inner, std::slice::from_ref(b), OPEN_SUB_WINDOW))
        .collect();
    for (b, mut seqs) in blocks.into_iter().zip(ranges).rev() {
        let (kind, level, w) = (b.kind, b.level, window_of_level(b.level));
        merge_exact(
            inner,
            vec![b],
            kind,
            &move |t| (level, window_end(t, w)),
            &mut seqs,
        )?;
    }
    Ok(())
}

/// Merges `inputs` (all of one kind) series by series, splits the rows into the target
/// windows, writes the blocks, then swaps them in for the inputs.
fn merge_exact(
    inner: &Inner,
    mut inputs: Vec<Arc<Block>>,
    kind: Kind,
    target: &dyn Fn(i64) -> (u8, i64),
    seqs: &mut Seqs,
) -> Result<(), MaintenanceError> {
    inputs.sort_by_key(|b| b.seq);
    let ids = series_ids(&inputs);
    let deleted = deletions(inner, &ids);
    let res = kind.resolution_ms().unwrap_or(0);
    let mut ws = Writers::new();
    for id in ids {
        let deleted = deleted.get(&id);
        let mut raw_runs: Vec<Vec<Sample>> = Vec::new();
        let mut bucket_runs: Vec<Vec<Bucket>> = Vec::new();
        for b in &inputs {
            let Some(e) = b.entry(id) else { continue };
            let cols = match b.read_columns(e) {
                Ok(c) => c,
                Err(err) => {
                    // A damaged input must not be merged away: move it aside and retry.
                    inner
                        .counters
                        .corrupt_chunks
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %err, block = %b.path.display(), "block quarantined during compaction");
                    super::quarantine(&inner.dir, &b.path);
                    inner
                        .blocks
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|x| !Arc::ptr_eq(x, b));
                    for (_, w) in ws {
                        let _ = w.finish().map(|b| b.map(|b| std::fs::remove_file(b.path)));
                    }
                    return Err(err.into());
                }
            };
            if kind == Kind::Raw {
                raw_runs.push(
                    cols.ints[0]
                        .iter()
                        .zip(&cols.floats[0])
                        .map(|(&t, &v)| Sample(t, v))
                        .collect(),
                );
            } else {
                bucket_runs.push(rollup::from_columns(&cols)?);
            }
        }
        if kind == Kind::Raw {
            let mut rows = merge_runs(raw_runs);
            if let Some(iv) = deleted {
                tombstones::drop_samples(iv, &mut rows);
            }
            for (i, j) in groups(&rows, |s| target(s.0)) {
                let part = &rows[i..j];
                let (level, end) = target(part[0].0);
                let (ts, vs): (Vec<i64>, Vec<f64>) = part.iter().map(|s| (s.0, s.1)).unzip();
                writer(inner, &mut ws, (Kind::Raw, level, end), seqs)?.add(
                    id,
                    ts[0],
                    ts[ts.len() - 1],
                    ts.len() as u32,
                    &chunk::encode(&[&ts], &[&vs]),
                )?;
            }
        } else {
            let mut rows = merge_buckets(bucket_runs);
            if let Some(iv) = deleted {
                tombstones::drop_buckets(iv, res, &mut rows);
            }
            for (i, j) in groups(&rows, |b| target(b.end)) {
                let part = &rows[i..j];
                let (level, end) = target(part[0].end);
                writer(inner, &mut ws, (kind, level, end), seqs)?.add(
                    id,
                    part[0].end,
                    part[part.len() - 1].end,
                    part.len() as u32,
                    &rollup::encode(part),
                )?;
            }
        }
    }
    let made = finish(ws)?;
    {
        let mut blocks = inner.blocks.write().unwrap_or_else(|e| e.into_inner());
        blocks.retain(|b| !inputs.iter().any(|i| Arc::ptr_eq(i, b)));
        blocks.extend(made);
        blocks.sort_by_key(|b| b.seq);
    }
    for b in &inputs {
        let _ = std::fs::remove_file(&b.path);
    }
    inner.counters.compactions.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Writes the 5-minute and 1-hour rollups of raw blocks (same level and window).
fn materialize_rollups(inner: &Inner, raw: &[Arc<Block>]) -> Result<(), MaintenanceError> {
    let mut ws = Writers::new();
    let ids = series_ids(raw);
    let deleted = deletions(inner, &ids);
    for id in ids {
        for b in raw {
            let Some(e) = b.entry(id) else { continue };
            let cols = match b.read_columns(e) {
                Ok(c) => c,
                Err(err) => {
                    inner
                        .counters
                        .corrupt_chunks
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %err, "chunk skipped while writing rollups");
                    continue;
                }
            };
            let mut samples: Vec<Sample> = cols.ints[0]
                .iter()
                .zip(&cols.floats[0])
                .map(|(&t, &v)| Sample(t, v))
                .collect();
            if let Some(iv) = deleted.get(&id) {
                tombstones::drop_samples(iv, &mut samples);
            }
            let end = window_end(b.max_t, window_of_level(b.level));
            for rk in [Kind::Rollup5m, Kind::Rollup1h] {
                let bk = buckets(&samples, rk.resolution_ms().unwrap_or(HOUR));
                if let (Some(f), Some(l)) = (bk.first(), bk.last()) {
                    let (lo, hi) = (f.end, l.end);
                    writer(inner, &mut ws, (rk, b.level, end), &mut Seqs::fresh())?.add(
                        id,
                        lo,
                        hi,
                        bk.len() as u32,
                        &rollup::encode(&bk),
                    )?;
                }
            }
        }
    }
    let made = finish(ws)?;
    let mut blocks = inner.blocks.write().unwrap_or_else(|e| e.into_inner());
    blocks.extend(made);
    blocks.sort_by_key(|b| b.seq);
    Ok(())
}

/// The deleted intervals of those of `ids` with deletions (copied: compaction does not hold
/// the lock that a deletion waits for).
fn deletions(inner: &Inner, ids: &[u32]) -> HashMap<u32, tombstones::Intervals> {
    let t = inner.tombstones.read().unwrap_or_else(|e| e.into_inner());
    if t.is_empty() {
        return HashMap::new();
    }
    ids.iter()
        .filter_map(|&id| t.get(id).map(|iv| (id, iv)))
        .collect()
}

/// Rewrites every block holding samples that a deletion in force covers (same kind, level
/// and window), without them. Returns the number of blocks rewritten.
///
/// A rewritten block gets a new (higher) sequence number, and newest-write-wins goes by
/// sequence: rewritten alone, an old block's samples would outrank those a newer block holds
/// for the same timestamps. So every newer block that shares times of a series with a
/// rewritten one is rewritten too (transitively), in [`rewrite_in_order`]: their order among
/// themselves is kept, and the blocks left alone share no times with any of them.
pub(super) fn rewrite_deleted(inner: &Inner) -> Result<usize, MaintenanceError> {
    let _serial = inner.compacting.lock().unwrap_or_else(|e| e.into_inner());
    let blocks = snapshot(inner);
    let (hit, rest): (Vec<Arc<Block>>, Vec<Arc<Block>>) = blocks.into_iter().partition(|b| {
        let ids: Vec<u32> = b.entries().iter().map(|e| e.series).collect();
        deletions(inner, &ids)
            .values()
            .any(|iv| tombstones::meets(iv, b.min_t, b.max_t))
    });
    let joined = with_newer_sharing(&mut SharedTimes::default(), &hit, &rest);
    let mut todo = hit;
    todo.extend(joined);
    todo.sort_by_key(|b| b.seq);
    let n = todo.len();
    rewrite_in_order(inner, todo)?;
    Ok(n)
}

/// The series any of the blocks holds, ascending.
fn series_ids(blocks: &[Arc<Block>]) -> Vec<u32> {
    let mut ids: Vec<u32> = blocks
        .iter()
        .flat_map(|b| b.entries().iter().map(|e| e.series))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Finishes every writer (synced and renamed), returning the opened blocks.
fn finish(ws: Writers) -> Result<Vec<Arc<Block>>, MaintenanceError> {
    let mut made = Vec::new();
    for (_, w) in ws {
        if let Some(b) = w.finish()? {
            made.push(Arc::new(b));
        }
    }
    Ok(made)
}

/// Runs of consecutive rows with the same key, as index ranges.
fn groups<T, K: PartialEq>(rows: &[T], key: impl Fn(&T) -> K) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=rows.len() {
        if i == rows.len() || key(&rows[i]) != key(&rows[start]) {
            if i > start {
                out.push((start, i));
            }
            start = i;
        }
    }
    out
}

fn retention(inner: &Inner, now: i64) -> Result<(), MaintenanceError> {
    let raw_before = now.saturating_sub(ms(inner.opts.retention));
    let rollup_before = now.saturating_sub(ms(inner.opts.rollup_retention));
    let expired: Vec<Arc<Block>> = snapshot(inner)
        .into_iter()
        .filter(|b| {
            // Only compacted blocks expire: a level-0 block waits for its window to close.
            b.level > 0
                && b.max_t
                    < if b.kind == Kind::Raw {
                        raw_before
                    } else {
                        rollup_before
                    }
        })
        .collect();
    // Deletions older than every block that could still hold their samples (a 30-day
    // rollup window past the rollup cut-off) have nothing left to hide.
    let forget_before = raw_before.min(rollup_before).saturating_sub(31 * DAY);
    inner
        .tombstones
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .forget(&inner.dir, &[], forget_before, None)
        .map_err(io("tombstones"))?;
    if expired.is_empty() {
        return Ok(());
    }
    // A raw block leaves as rollups: its window holds all of that window's samples, so the
    // buckets are exact. They are synced and added before the raw block goes.
    let raw: Vec<Arc<Block>> = expired
        .iter()
        .filter(|b| b.kind == Kind::Raw)
        .cloned()
        .collect();
    if !raw.is_empty() {
        materialize_rollups(inner, &raw)?;
    }
    inner
        .blocks
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|b| !expired.iter().any(|x| Arc::ptr_eq(x, b)));
    for b in &expired {
        tracing::info!(block = %b.path.display(), kind = b.kind.name(), max_t = b.max_t, "block expired");
        std::fs::remove_file(&b.path).map_err(|source| BlockError::Io {
            path: b.path.display().to_string(),
            source,
        })?;
        inner
            .counters
            .expired_blocks
            .fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
