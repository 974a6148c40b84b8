//! The skeleton the logs and traces stores share around their own records and block
//! formats: blocks loaded at start-up (a block that does not open is quarantined, an
//! interrupted write removed), the checkpoint (which WAL segment the blocks cover and which
//! agent batches they hold) read, moved on by a block written after it and rewritten after a
//! cut, the WAL replayed past it (damage skipped and counted, a torn tail cut off), appends
//! grouped with replays of stored agent batches answered apart, and retention by age then by
//! size. Each store keeps what differs: its record, its head, its block layout.
//!
//! ```text
//! DIR/wal/NNNNNNNNNNNNNNNNNNNN.seg   appends, framed, group-committed ([`super::segments`])
//! DIR/blocks/NNNNNNNN.<ext>          immutable blocks ([`super::blockfile`])
//! DIR/checkpoint                     [`Checkpoint`]
//! DIR/quarantine/                    blocks that did not open
//! ```

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as smpsc;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use telltale_common::codec;

use super::dedup::{Dedup, RangeSet};
use super::frames::{self, Item, Scanner};
use super::segments;

/// An I/O failure and the file or directory it happened on.
#[derive(Debug)]
pub struct PathError {
    /// Where.
    pub path: PathBuf,
    /// What.
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> PathError + '_ {
    move |source| PathError {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the blocks' WAL ends (segments before it are in blocks) and the agent batches stored
/// by then.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The first segment not covered by a block.
    pub wal_segment: u64,
    /// Agent batches stored, as [`Dedup::to_list`].
    pub dedup: Vec<(String, u64, RangeSet)>,
}

/// What the shared code needs of a block.
pub trait StoredBlock {
    /// The newest time in it, in nanoseconds since the epoch.
    fn newest_ns(&self) -> i64;
    /// Its size on disk.
    fn bytes(&self) -> u64;
    /// Its file.
    fn path(&self) -> &Path;
    /// The checkpoint as of when it was written (its WAL end and the batches stored, see
    /// [`Checkpoint`]), so a crash between writing it and the checkpoint loses nothing and
    /// replays nothing twice.
    fn written_at(&self) -> (u64, &[(String, u64, RangeSet)]);
}

/// A WAL record as the shared code sees it: which agent batch it is, if any.
pub trait Record {
    /// The agent, its epoch and the batch's sequence number; `None` for pushes without one.
    fn origin(&self) -> Option<(&str, u64, u64)>;
}

/// Creates `dir/blocks` and `dir/wal`.
pub fn create_dirs(dir: &Path) -> Result<(), PathError> {
    for d in [dir.join("blocks"), dir.join("wal")] {
        std::fs::create_dir_all(&d).map_err(at(&d))?;
    }
    Ok(())
}

/// Opens the blocks `dir/blocks/*.{ext}` in name order with `open`, moving those that do not
/// open to `dir/quarantine` (counted in `quarantined`) and removing interrupted writes
/// (`*.tmp`). Returns the blocks and the next block number.
pub fn load_blocks<B, E: Display>(
    dir: &Path,
    ext: &str,
    kind: &str,
    open: impl Fn(&Path) -> Result<B, E>,
    quarantined: &AtomicU64,
) -> Result<(Vec<Arc<B>>, u64), PathError> {
    let blocks_dir = dir.join("blocks");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&blocks_dir)
        .map_err(at(&blocks_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let (mut blocks, mut next) = (Vec::new(), 1u64);
    for p in names {
        match p.extension().and_then(|x| x.to_str()) {
            Some(x) if x == ext => {}
            Some("tmp") => {
                let _ = std::fs::remove_file(&p);
                continue;
            }
            _ => continue,
        }
        if let Some(n) = p
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
        {
            next = next.max(n + 1);
        }
        match open(&p) {
            Ok(b) => blocks.push(Arc::new(b)),
            Err(e) => {
                tracing::error!(error = %e, "{kind} block does not open: moved to quarantine");
                quarantined.fetch_add(1, Ordering::Relaxed);
                let q = dir.join("quarantine");
                let _ = std::fs::create_dir_all(&q);
                if let Some(name) = p.file_name() {
                    let _ = std::fs::rename(&p, q.join(name));
                }
            }
        }
    }
    Ok((blocks, next))
}

/// The checkpoint to resume from: the file's, or that of a block written after it.
pub fn resume<B: StoredBlock>(dir: &Path, blocks: &[Arc<B>]) -> Result<Checkpoint, PathError> {
    let path = dir.join("checkpoint");
    let cp: Checkpoint = frames::read_frames(&path)
        .map_err(at(&path))?
        .payloads
        .last()
        .and_then(|p| codec::decode_payload(p).ok())
        .unwrap_or_default();
    Ok(
        match blocks.iter().map(|b| b.written_at()).max_by_key(|w| w.0) {
            Some((wal_segment, dedup)) if wal_segment > cp.wal_segment => Checkpoint {
                wal_segment,
                dedup: dedup.to_vec(),
            },
            _ => cp,
        },
    )
}

/// Replays the WAL segments in `dir/wal` from `cp` on: marks each agent batch in `dedup` and
/// hands its record to `each`; leaves segments the checkpoint covers alone (the caller deletes
/// them with [`delete_covered`], but those its WAL's readers hold); skips damaged or
/// undecodable records (counted in `corrupt`); cuts a torn tail off. Returns the writer for new
/// appends, in a new segment after the last (a replayed segment is never written again).
pub fn replay<R: DeserializeOwned + Record>(
    dir: &Path,
    cp: &Checkpoint,
    max_record: u32,
    kind: &str,
    dedup: &mut Dedup,
    corrupt: &AtomicU64,
    mut each: impl FnMut(R),
) -> Result<segments::Writer, PathError> {
    let wal_dir = dir.join("wal");
    let mut last = cp.wal_segment;
    for (n, path) in segments::list_segments(&wal_dir).map_err(at(&wal_dir))? {
        last = last.max(n);
        if n < cp.wal_segment {
            continue;
        }
        let data = std::fs::read(&path).map_err(at(&path))?;
        let mut scan = Scanner::new(&data, max_record);
        for item in scan.by_ref() {
            match item {
                Item::Frame { at, payload } => match codec::decode_payload::<R>(payload) {
                    Ok(r) => {
                        if let Some((a, epoch, seq)) = r.origin() {
                            dedup.mark(a, epoch, seq);
                        }
                        each(r);
                    }
                    Err(e) => {
                        tracing::error!(segment = %path.display(), offset = at, error = %e, "undecodable {kind} record skipped");
                        corrupt.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Item::Damaged { at, len } => {
                    tracing::error!(segment = %path.display(), offset = at, bytes = len, "damaged {kind} record skipped");
                    corrupt.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let torn = scan.torn();
        if torn > 0 {
            tracing::warn!(segment = %path.display(), bytes = torn, "torn tail of the {kind} WAL cut off");
            segments::truncate(&path, (data.len() - torn) as u64).map_err(at(&path))?;
        }
    }
    segments::Writer::create(wal_dir.clone(), last + 1).map_err(at(&wal_dir))
}

/// Writes the checkpoint (atomically) and deletes the WAL segments it covers but those from
/// `hold` on (kept for the WAL's readers).
pub fn write_checkpoint(dir: &Path, cp: &Checkpoint, hold: u64) -> std::io::Result<()> {
    let payload = codec::encode_payload(cp).map_err(|e| std::io::Error::other(e.to_string()))?;
    frames::write_atomic(&dir.join("checkpoint"), &[payload])?;
    delete_covered(dir, cp.wal_segment.min(hold))
}

/// Deletes the WAL segments below `keep` (the checkpoint's, or a reader's hold below it).
pub fn delete_covered(dir: &Path, keep: u64) -> std::io::Result<()> {
    for (n, p) in segments::list_segments(&dir.join("wal"))? {
        if n < keep {
            let _ = std::fs::remove_file(p);
        }
    }
    Ok(())
}

/// Deletes the blocks whose newest time is before `horizon_ns`, then the oldest while the
/// blocks take more than `max_bytes` (counted in `expired`).
pub fn retain<B: StoredBlock>(
    blocks: &RwLock<Vec<Arc<B>>>,
    horizon_ns: i64,
    max_bytes: u64,
    kind: &str,
    expired: &AtomicU64,
) {
    let mut blocks = blocks.write().unwrap_or_else(|e| e.into_inner());
    blocks.sort_by_key(|b| b.newest_ns());
    let mut total: u64 = blocks.iter().map(|b| b.bytes()).sum();
    let mut gone = Vec::new();
    blocks.retain(|b| {
        let drop_it = b.newest_ns() < horizon_ns || total > max_bytes;
        if drop_it {
            total -= b.bytes();
            gone.push(b.path().to_path_buf());
        }
        !drop_it
    });
    drop(blocks);
    for p in gone {
        tracing::info!(block = %p.display(), "{kind} block deleted by retention");
        expired.fetch_add(1, Ordering::Relaxed);
        let _ = std::fs::remove_file(p);
    }
}

/// Starts a store's threads: `telltale-{kind}-writer` runs `writer(inner, wal, jobs)` until
/// every sender of the returned channel is gone; `telltale-{kind}-retention` calls
/// `retention(inner, now_ns)` every 30 s while `inner` lives.
pub fn start_threads<T: Send + Sync + 'static, W: Send + 'static, J: Send + 'static>(
    dir: &Path,
    kind: &str,
    inner: &Arc<T>,
    writer: fn(&T, W, &smpsc::Receiver<J>),
    wal: W,
    retention: fn(&T, i64),
) -> Result<smpsc::Sender<J>, PathError> {
    let (tx, rx) = smpsc::channel();
    let w = inner.clone();
    std::thread::Builder::new()
        .name(format!("telltale-{kind}-writer"))
        .spawn(move || writer(&w, wal, &rx))
        .map_err(at(dir))?;
    let m: Weak<T> = Arc::downgrade(inner);
    std::thread::Builder::new()
        .name(format!("telltale-{kind}-retention"))
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(30));
                let Some(inner) = m.upgrade() else { break };
                retention(&inner, telltale_common::model::now_ms() * 1_000_000);
            }
        })
        .map_err(at(dir))?;
    Ok(tx)
}

/// The jobs a writer thread takes at once: waits up to a second for the first (so the writer
/// also runs its timed work when idle), then takes what is queued, up to 512. `None` once
/// every sender is gone.
pub fn take_jobs<J>(rx: &smpsc::Receiver<J>) -> Option<Vec<J>> {
    let mut jobs = match rx.recv_timeout(Duration::from_secs(1)) {
        Ok(j) => vec![j],
        Err(smpsc::RecvTimeoutError::Timeout) => Vec::new(),
        Err(smpsc::RecvTimeoutError::Disconnected) => return None,
    };
    while jobs.len() < 512 {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
    Some(jobs)
}

/// Sorts appends into one WAL group: a replay of an agent batch already stored (or twice in
/// these appends) goes to `duplicate`, a record that does not encode to `failed`; the rest are
/// framed into `buf` and returned, in order.
pub fn group<R: Serialize + Record, D>(
    dedup: &Dedup,
    appends: Vec<(R, D)>,
    buf: &mut Vec<u8>,
    mut duplicate: impl FnMut(D),
    mut failed: impl FnMut(D, String),
) -> Vec<(R, D)> {
    let mut group: Vec<(R, D)> = Vec::with_capacity(appends.len());
    for (record, done) in appends {
        let replay = record.origin().is_some_and(|(a, epoch, seq)| {
            dedup.contains(a, epoch, seq)
                || group
                    .iter()
                    .any(|(r, _)| r.origin() == Some((a, epoch, seq)))
        });
        if replay {
            duplicate(done);
            continue;
        }
        match codec::encode_payload(&record) {
            Ok(p) => {
                codec::frame_into(&p, buf);
                group.push((record, done));
            }
            Err(e) => failed(done, e.to_string()),
        }
    }
    group
}
