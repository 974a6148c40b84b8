//! Reading the WAL from a queue's position: the records between the position and the
//! durable tip (never bytes a failed write could still cut off), decoded into samples by
//! series id. Segments a queue has finished are left to the engine, which deletes them once
//! blocks cover them and no queue holds them (see [`crate::metrics::tsdb::WalHold`]).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};
use telltale_common::codec::HEADER_LEN;
use telltale_common::model::{Labels, Sample};

use crate::durable::frames::{Item, Scanner};
use crate::durable::segments::{list_segments, segment_path};
use crate::metrics::tsdb::{WalFeed, decode_record};

/// Where a queue is: the next byte to read in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    /// The segment.
    pub segment: u64,
    /// The offset in it.
    pub offset: u64,
}

/// What one read found.
#[derive(Debug, Default)]
pub struct WalRead {
    /// Samples by series id, in WAL order.
    pub points: Vec<(u32, Sample)>,
    /// Samples of records from before series ids were logged (release 0.1), with labels.
    pub labelled: Vec<(Labels, Vec<Sample>)>,
    /// Records that did not decode (skipped, logged).
    pub corrupt: u64,
    /// Whole segments that were gone when the queue reached them (deleted by hand, or by
    /// the byte cap while this queue was behind).
    pub missing_segments: u64,
}

impl WalRead {
    /// Samples read.
    pub fn samples(&self) -> usize {
        self.points.len() + self.labelled.iter().map(|(_, s)| s.len()).sum::<usize>()
    }
}

/// Most bytes read from a segment at once.
const READ_BYTES: u64 = 16 << 20;

/// The WAL's largest record.
const MAX_RECORD: u32 = 256 << 20;

/// Reads from `pos` towards the tip until at least `max_samples` samples are read (whole
/// records: a read may end a little past it) or the tip is reached. Returns what was read
/// and the position after it.
pub fn read(
    feed: &WalFeed,
    mut pos: Position,
    max_samples: usize,
) -> std::io::Result<(WalRead, Position)> {
    let dir = feed.dir();
    let mut out = WalRead::default();
    while out.samples() < max_samples {
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
                out.missing_segments += next.saturating_sub(pos.segment);
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
        // About what the samples still wanted take (points are ~11 bytes a sample), not a
        // fixed large read: a round would otherwise read megabytes to use kilobytes.
        let need = (max_samples - out.samples()).saturating_mul(16) as u64;
        let mut want = (end - pos.offset).min(need.clamp(64 << 10, READ_BYTES));
        let used = loop {
            f.seek(SeekFrom::Start(pos.offset))?;
            let mut buf = Vec::with_capacity(want as usize);
            f.by_ref().take(want).read_to_end(&mut buf)?;
            let complete = pos.offset + want == end;
            let used = decode(&buf, &mut out, max_samples, complete, &path);
            if used > 0 || want == end - pos.offset {
                // Nothing intact up to the durable end: damage, skipped.
                break if used > 0 { used as u64 } else { want };
            }
            // A record larger than one read: read up to the end.
            want = end - pos.offset;
        };
        pos.offset += used;
    }
    Ok((out, pos))
}

/// Decodes whole records from `buf` until `max_samples` are read; returns the bytes used
/// (up to the end of the last record taken). Damage is skipped only when `buf` reaches the
/// durable end: in a partial read, what looks damaged may be a record cut by the read, and
/// is read again whole.
fn decode(buf: &[u8], out: &mut WalRead, max_samples: usize, complete: bool, path: &Path) -> usize {
    let mut used = 0;
    let mut scan = Scanner::new(buf, MAX_RECORD);
    for item in scan.by_ref() {
        match item {
            Item::Frame { at, payload } => {
                match decode_record(payload) {
                    Ok(r) => {
                        out.points.extend(r.points);
                        out.labelled.extend(r.labelled);
                    }
                    Err(e) => {
                        tracing::warn!(segment = %path.display(), error = %e, "remote_write: undecodable WAL record skipped");
                        out.corrupt += 1;
                    }
                }
                used = at + HEADER_LEN + payload.len();
                if out.samples() >= max_samples {
                    break;
                }
            }
            Item::Damaged { .. } if !complete => break,
            Item::Damaged { at, len } => {
                tracing::warn!(segment = %path.display(), offset = at, bytes = len, "remote_write: damaged WAL bytes skipped");
                out.corrupt += 1;
                used = at + len;
            }
        }
    }
    used
}

/// Samples in a finished segment from `offset` to its end (what skipping it drops).
pub fn count_rest(dir: &Path, pos: Position) -> u64 {
    let path = segment_path(dir, pos.segment);
    let Ok(mut f) = std::fs::File::open(&path) else {
        return 0;
    };
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(pos.offset)).is_err() || f.read_to_end(&mut buf).is_err() {
        return 0;
    }
    let mut out = WalRead::default();
    decode(&buf, &mut out, usize::MAX, true, &path);
    out.samples() as u64
}

/// Whether the segments from `from` on that storage no longer needs (below the checkpoint),
/// which the queue alone holds on disk, take more than `cap` bytes. Blocking (lists the
/// segments) only when the queue is behind the checkpoint at all.
pub fn over_cap(feed: &WalFeed, from: u64, cap: u64) -> bool {
    let checkpointed = feed.checkpointed();
    from < checkpointed && held_bytes(&feed.dir(), from, checkpointed) > cap
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

/// Bytes from `pos` to the tip (what the queue has still to send).
pub fn pending_bytes(feed: &WalFeed, pos: Position) -> u64 {
    let (tip_seg, tip_len) = feed.tip();
    if pos.segment == tip_seg {
        return tip_len.saturating_sub(pos.offset);
    }
    let Ok(segs) = list_segments(&feed.dir()) else {
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
