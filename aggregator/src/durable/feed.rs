//! Readers of a store's WAL (the exporters of `forward`: remote_write queues on the metrics
//! WAL, the ClickHouse exporter on the logs WAL), as Prometheus' WAL watcher reads: from a
//! position of their own up to the durable tip the engine publishes — never bytes a failed
//! write could still cut off — while a [`WalHold`] keeps the segments a reader has not
//! finished on disk after blocks cover them.
//!
//! A store publishes a [`Feed`]: where its segments are, its tip, and the first segment its
//! checkpoint does not cover (segments below it are kept only for readers, and count against
//! their byte cap). Readers decode the records themselves, through a [`Sink`].

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use telltale_common::codec::HEADER_LEN;

use super::frames::{Item, Scanner};
use super::segments::{list_segments, segment_path};

/// The first WAL segment the readers of a store still need (`u64::MAX`: none), shared between
/// the readers that move it and the engine that deletes segments below it. Each reader of a
/// store has its own slot ([`WalHold::another`]); the store keeps what the furthest behind
/// needs.
#[derive(Debug, Clone)]
pub struct WalHold {
    mine: Arc<AtomicU64>,
    all: Arc<Mutex<Vec<Arc<AtomicU64>>>>,
}

impl Default for WalHold {
    fn default() -> Self {
        let mine = Arc::new(AtomicU64::new(u64::MAX));
        WalHold {
            all: Arc::new(Mutex::new(vec![mine.clone()])),
            mine,
        }
    }
}

impl WalHold {
    /// Keeps segments from `segment` on, for this slot's reader.
    pub fn set(&self, segment: u64) {
        self.mine.store(segment, Ordering::Relaxed);
    }

    /// The first segment any reader still needs.
    pub fn get(&self) -> u64 {
        self.all
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// A slot for another reader of the same store (holding nothing until it is set).
    pub fn another(&self) -> WalHold {
        let mine = Arc::new(AtomicU64::new(u64::MAX));
        self.all
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(mine.clone());
        WalHold {
            mine,
            all: self.all.clone(),
        }
    }
}

/// Where a reader is: the next byte to read in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    /// The segment.
    pub segment: u64,
    /// The offset in it.
    pub offset: u64,
}

/// What a store tells its WAL's readers.
pub trait Feed {
    /// The directory of the segments.
    fn wal_dir(&self) -> PathBuf;
    /// The segment being written and its synced length.
    fn tip(&self) -> (u64, u64);
    /// The first segment the written checkpoint does not cover.
    fn checkpointed(&self) -> u64;
}

/// The feed of a store built on [`super::blockstore`] (logs, traces): the engine publishes
/// its tip after each synced group and its checkpoint after each cut, and keeps segments from
/// `hold` on. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StoreFeed {
    dir: PathBuf,
    tip: Arc<Mutex<(u64, u64)>>,
    checkpointed: Arc<AtomicU64>,
    /// The readers' hold on segments.
    pub hold: WalHold,
}

impl StoreFeed {
    /// A feed of the segments in `wal_dir`, kept from `hold` on.
    pub fn new(wal_dir: PathBuf, hold: WalHold) -> StoreFeed {
        StoreFeed {
            dir: wal_dir,
            hold,
            ..StoreFeed::default()
        }
    }

    /// The engine: segment `segment` is durable up to `len`.
    pub fn publish_tip(&self, segment: u64, len: u64) {
        *self.tip.lock().unwrap_or_else(|e| e.into_inner()) = (segment, len);
    }

    /// The engine: segments below `segment` are covered by blocks.
    pub fn publish_checkpoint(&self, segment: u64) {
        self.checkpointed.store(segment, Ordering::Relaxed);
    }
}

impl Feed for StoreFeed {
    fn wal_dir(&self) -> PathBuf {
        self.dir.clone()
    }
    fn tip(&self) -> (u64, u64) {
        *self.tip.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn checkpointed(&self) -> u64 {
        self.checkpointed.load(Ordering::Relaxed)
    }
}

/// What a reader does with the records it reads.
pub trait Sink {
    /// A record's payload (checksum verified), read from `path`.
    fn record(&mut self, payload: &[u8], path: &Path);
    /// Damaged bytes skipped in `path` (counted and logged by the reader).
    fn damaged(&mut self, path: &Path, at: usize, len: usize);
    /// Items taken so far (what a read's budget counts).
    fn items(&self) -> usize;
}

/// Most bytes read from a segment at once.
const READ_BYTES: u64 = 16 << 20;

/// A store's largest record.
const MAX_RECORD: u32 = 256 << 20;

/// Reads records from `pos` towards the tip into `sink` until it holds at least `max_items`
/// (whole records: a read may end a little past it) or the tip is reached; `item_bytes` is
/// about what one item takes in the WAL (a read asks for what the budget still wants, not a
/// fixed large amount). Returns the position after what was read and the number of whole
/// segments that were gone when the reader reached them (deleted by hand, or skipped for the
/// byte cap).
pub fn read(
    feed: &impl Feed,
    mut pos: Position,
    max_items: usize,
    item_bytes: u64,
    sink: &mut impl Sink,
) -> std::io::Result<(Position, u64)> {
    let dir = feed.wal_dir();
    let mut missing = 0;
    while sink.items() < max_items {
        let (tip_seg, tip_len) = feed.tip();
        if pos.segment > tip_seg || (pos.segment == tip_seg && pos.offset >= tip_len) {
            break;
        }
        let path = segment_path(&dir, pos.segment);
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Gone: continue at the next segment that exists.
                let next = list_segments(&dir)?
                    .into_iter()
                    .map(|(n, _)| n)
                    .find(|&n| n > pos.segment)
                    .unwrap_or(tip_seg);
                missing += next.saturating_sub(pos.segment);
                pos = Position {
                    segment: next.max(pos.segment + 1),
                    offset: 0,
                };
                continue;
            }
            Err(e) => return Err(e),
        };
        let end = if pos.segment == tip_seg {
            tip_len
        } else {
            f.metadata()?.len()
        };
        if pos.offset >= end {
            // A finished segment read to its end.
            pos = Position {
                segment: pos.segment + 1,
                offset: 0,
            };
            continue;
        }
        let need = (max_items - sink.items()).saturating_mul(item_bytes as usize) as u64;
        let mut want = (end - pos.offset).min(need.clamp(64 << 10, READ_BYTES));
        let used = loop {
            f.seek(SeekFrom::Start(pos.offset))?;
            let mut buf = Vec::with_capacity(want as usize);
            f.by_ref().take(want).read_to_end(&mut buf)?;
            let complete = pos.offset + want == end;
            let used = scan(&buf, sink, max_items, complete, &path);
            if used > 0 || want == end - pos.offset {
                // Nothing intact up to the durable end: damage, skipped.
                break if used > 0 { used as u64 } else { want };
            }
            // A record larger than one read: read up to the end.
            want = end - pos.offset;
        };
        pos.offset += used;
    }
    Ok((pos, missing))
}

/// Hands whole records of `buf` to `sink` until it holds `max_items`; returns the bytes used
/// (up to the end of the last record taken). Damage is skipped only when `buf` reaches the
/// durable end: in a partial read, what looks damaged may be a record cut by the read, and is
/// read again whole.
fn scan(buf: &[u8], sink: &mut impl Sink, max_items: usize, complete: bool, path: &Path) -> usize {
    let mut used = 0;
    let mut scan = Scanner::new(buf, MAX_RECORD);
    for item in scan.by_ref() {
        match item {
            Item::Frame { at, payload } => {
                sink.record(payload, path);
                used = at + HEADER_LEN + payload.len();
                if sink.items() >= max_items {
                    break;
                }
            }
            Item::Damaged { .. } if !complete => break,
            Item::Damaged { at, len } => {
                sink.damaged(path, at, len);
                used = at + len;
            }
        }
    }
    used
}

/// Hands the records of a finished segment from `pos` to its end to `sink` (what skipping it
/// drops, for counting).
pub fn read_rest(dir: &Path, pos: Position, sink: &mut impl Sink) {
    let path = segment_path(dir, pos.segment);
    let Ok(mut f) = std::fs::File::open(&path) else {
        return;
    };
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(pos.offset)).is_err() || f.read_to_end(&mut buf).is_err() {
        return;
    }
    scan(&buf, sink, usize::MAX, true, &path);
}

/// Whether the segments from `from` on that storage no longer needs (below the checkpoint),
/// which a reader alone holds on disk, take more than `cap` bytes. Lists the segments only
/// when the reader is behind the checkpoint at all.
pub fn over_cap(feed: &impl Feed, from: u64, cap: u64) -> bool {
    let checkpointed = feed.checkpointed();
    from < checkpointed && held_bytes(&feed.wal_dir(), from, checkpointed) > cap
}

/// Moves a reader at `pos` past its oldest segments while those it alone holds exceed `cap`;
/// `count` tells what a skipped part (a segment from a position to its end) held. Returns
/// where the reader goes on and the total counted (what was dropped unsent). Blocking.
pub fn skip_over_cap(
    feed: &impl Feed,
    mut pos: Position,
    cap: u64,
    mut count: impl FnMut(&Path, Position) -> u64,
) -> (Position, u64) {
    let dir = feed.wal_dir();
    let mut dropped = 0;
    while over_cap(feed, pos.segment, cap) {
        dropped += count(&dir, pos);
        pos = Position {
            segment: pos.segment + 1,
            offset: 0,
        };
    }
    (pos, dropped)
}

fn held_bytes(dir: &Path, from: u64, checkpointed: u64) -> u64 {
    list_segments(dir)
        .map(|segs| {
            segs.iter()
                .filter(|(n, _)| *n >= from && *n < checkpointed)
                .filter_map(|(_, p)| p.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Bytes from `pos` to the tip (what the reader has still to read).
pub fn pending_bytes(feed: &impl Feed, pos: Position) -> u64 {
    let (tip_seg, tip_len) = feed.tip();
    if pos.segment == tip_seg {
        return tip_len.saturating_sub(pos.offset);
    }
    let Ok(segs) = list_segments(&feed.wal_dir()) else {
        return 0;
    };
    segs.iter()
        .filter(|(n, _)| *n >= pos.segment && *n < tip_seg)
        .filter_map(|(n, p)| Some((*n, p.metadata().ok()?.len())))
        .map(|(n, len)| {
            if n == pos.segment {
                len.saturating_sub(pos.offset)
            } else {
                len
            }
        })
        .sum::<u64>()
        + tip_len
}

#[cfg(test)]
mod tests {
    use super::WalHold;

    #[test]
    fn a_store_keeps_what_its_furthest_behind_reader_needs() {
        let store = WalHold::default();
        let clickhouse = store.another();
        let pool = store.another();
        assert_eq!(store.get(), u64::MAX);
        clickhouse.set(7);
        pool.set(3);
        assert_eq!((store.get(), clickhouse.get(), pool.get()), (3, 3, 3));
        pool.set(9);
        assert_eq!(store.get(), 7);
        clickhouse.set(u64::MAX);
        assert_eq!(store.get(), 9);
        // A clone is the same slot.
        let again = pool.clone();
        again.set(u64::MAX);
        assert_eq!(store.get(), u64::MAX);
    }
}
