//! The agent's durable queue of batches, in sled: a batch is written (and flushed) before it
//! is sent, and removed only when the aggregator acknowledges it.
//!
//! # Layout
//! - tree `batches`: key = sequence (u64 big-endian, so iteration is oldest-first);
//!   value = `samples: u32 BE` followed by one frame exactly as sent on the wire (see
//!   `telltale_common::codec`: length, version, CRC-32, MessagePack `ClientMessage::Batch`).
//! - tree `logs`: batches of log lines, keyed like `batches`, under a cap of their own
//!   (`[buffer] logs_max_bytes`): a flood of logs never evicts a metric batch, and metric
//!   batches go first when a backlog drains (see [`logs`]). The value is a marker naming
//!   where the record (framed like `batches`' values) lies in a segment file under `logs/`
//!   (see [`segments`]: sled rewrites large values badly); buffers written before segments
//!   hold records inline, still read.
//! - tree `positions`: where each log source has read to, written in the same transaction
//!   as the batch that carries the lines.
//! - tree `meta`: `next_seq` (u64 BE), `epoch` (u64 BE, random, made when the buffer is
//!   created; see `Hello::epoch`), `dropped` (u64 BE, batches dropped over the buffer's life).
//!
//! # Limits
//! A byte cap (default 512 MiB): when a new batch would exceed it, the oldest batches are
//! dropped first and counted. A record that fails its checksum is removed, counted and
//! logged when it is read — at open (every record is checked) or before sending.
//! sled's `flush` uses `sync_file_range`: a killed agent loses nothing flushed, a power loss
//! may lose the last flushed writes (the aggregator's de-duplication makes re-sends safe).
//!
//! # Damage
//! sled reads its log up to the first damaged record and silently drops the rest: a few
//! flipped bytes can roll `next_seq` back, and re-used sequences would then be dropped by
//! the aggregator as duplicates. So the sequence state has a witness outside sled,
//! `sequence.state` in the buffer directory (see [`SeqState`]): it records the last sequence
//! used after every push, sequences are *reserved* in blocks of [`RESERVE`] (the file is
//! synced before a block is used), and a clean shutdown records the batches held. At open:
//! - nothing damaged: a clean shutdown continues at `next_seq`; after a crash, at the end of
//!   the reserved block, so no sequence is ever used twice even if a power loss cost both
//!   files their last writes;
//! - sled's state behind the witness (`next_seq` before the last sequence used, a batch count
//!   other than a clean shutdown recorded, another epoch, or no state at all), or a damaged
//!   witness: the sequence state cannot be trusted — the damage is counted and logged and a
//!   **new epoch** starts (sequences from 1 again, which the aggregator de-duplicates
//!   separately; the batches still held are sent in it);
//! - no witness (a buffer written by a release before it): sled's state is trusted once and
//!   the witness written.
//!
//! If sled reports damage when opening, the directory is moved aside (`*.corrupt-<time>`) and
//! a new buffer is started; any other open error (the directory held by another process, no
//! permission, a read-only disk) is returned and nothing is moved.

mod logs;
mod recover;
mod segments;

pub use logs::DEFAULT_CAP as DEFAULT_LOG_CAP;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use telltale_common::codec::{self, HEADER_LEN, Header};
use telltale_common::wire::{Batch, ClientMessage};

/// Buffer errors.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// sled failed.
    #[error("buffer storage in {dir}: {source}")]
    Sled {
        /// The buffer directory.
        dir: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// The buffer cannot be opened (held by another process, no permission...): nothing is
    /// moved; the agent stops with this message.
    #[error(transparent)]
    Open(#[from] telltale_common::store::StoreError),
    /// The sequence witness cannot be written.
    #[error("cannot write the buffer's sequence witness {path}: {source}")]
    Witness {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A batch could not be encoded.
    #[error("cannot encode batch: {0}")]
    Encode(#[from] codec::CodecError),
    /// A log segment file cannot be written or listed.
    #[error("log segments in {dir}: {source}")]
    Segments {
        /// The segments' directory.
        dir: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A single batch is larger than the whole cap.
    #[error("batch of {size} bytes is larger than the buffer cap of {cap} bytes")]
    TooLarge {
        /// Batch size.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// A failed store is being replaced (see [`Buffer::recover`]); try again.
    #[error("buffer storage in {0} is being reopened after a failed write")]
    Reopening(PathBuf),
}

/// A batch as read back for sending.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its sequence.
    pub seq: u64,
    /// Samples in it.
    pub samples: u32,
    /// The frame to send.
    pub frame: Vec<u8>,
}

/// The durable batch queue.
pub struct Buffer {
    dir: PathBuf,
    /// sled's handles; `None` only while [`Buffer::recover`] replaces a failed instance.
    trees: std::sync::RwLock<Option<Arc<recover::Trees>>>,
    /// A write failed: this sled instance refuses everything from now on (recover.rs).
    broken: AtomicBool,
    /// ... and the failure was a full disk.
    disk_full: AtomicBool,
    segments: segments::Segments,
    epoch: u64,
    cap: u64,
    log_cap: u64,
    bytes: AtomicU64,
    count: AtomicU64,
    log_bytes: AtomicU64,
    log_count: AtomicU64,
    dropped: AtomicU64,
    corrupt: AtomicU64,
    state_path: PathBuf,
    /// The witness file, rewritten in place after each push.
    witness: std::sync::Mutex<std::fs::File>,
    /// Sequences below this may have been used (the witness file says so).
    reserved: AtomicU64,
}

/// The witness file's name, inside the buffer directory.
pub const STATE_FILE: &str = "sequence.state";
/// Sequences reserved at a time: the witness is written once per block.
pub const RESERVE: u64 = 1024;

/// Why the sequence witness cannot be used (the buffer then starts a new epoch).
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// It exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// It is not a witness, or fails its checksum.
    #[error("{path} {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The sequence witness: `TTSQ`, version 1, then big-endian: epoch, reserved, last (the last
/// sequence used), a clean-shutdown flag and the batches held at that shutdown, and a CRC-32
/// of what precedes it. 42 bytes, rewritten in place after every push (without a sync: it
/// survives a killed process like sled's own writes do) and synced when a block is reserved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeqState {
    /// The buffer's epoch.
    pub epoch: u64,
    /// Sequences below this may have been used.
    pub reserved: u64,
    /// The last sequence used (0: none).
    pub last: u64,
    /// At a clean shutdown: the number of batches held.
    pub clean: Option<u64>,
}

const STATE_LEN: usize = 4 + 1 + 8 + 8 + 8 + 1 + 8 + 4;

impl SeqState {
    fn encode(&self) -> [u8; STATE_LEN] {
        let mut v = [0u8; STATE_LEN];
        v[..4].copy_from_slice(b"TTSQ");
        v[4] = 1;
        v[5..13].copy_from_slice(&self.epoch.to_be_bytes());
        v[13..21].copy_from_slice(&self.reserved.to_be_bytes());
        v[21..29].copy_from_slice(&self.last.to_be_bytes());
        if let Some(b) = self.clean {
            v[29] = 1;
            v[30..38].copy_from_slice(&b.to_be_bytes());
        }
        let crc = crc32fast::hash(&v[..38]);
        v[38..].copy_from_slice(&crc.to_be_bytes());
        v
    }

    /// Reads the witness: `Ok(None)` when there is none, `Err` when it is damaged.
    pub fn read(path: &Path) -> Result<Option<SeqState>, WitnessError> {
        let damaged = |reason| WitnessError::Damaged {
            path: path.to_path_buf(),
            reason,
        };
        let v = match std::fs::read(path) {
            Ok(v) => v,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(WitnessError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        if v.len() != STATE_LEN || &v[..4] != b"TTSQ" || v[4] != 1 {
            return Err(damaged("is not a sequence witness"));
        }
        let u = |i: usize| be(&v[i..i + 8]).unwrap_or(0);
        if crc32fast::hash(&v[..38]) != u32::from_be_bytes([v[38], v[39], v[40], v[41]]) {
            return Err(damaged("fails its checksum"));
        }
        Ok(Some(SeqState {
            epoch: u(5),
            reserved: u(13),
            last: u(21),
            clean: (v[29] == 1).then(|| u(30)),
        }))
    }

    /// Writes the witness durably (temporary file, fsync, rename, fsync of the directory).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&self.encode())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    }

    /// Whether sled's state (`epoch`, `next_seq`, batches held) agrees with the witness:
    /// the last sequence to continue after, or why it cannot be trusted.
    fn verdict(&self, epoch: u64, next_seq: u64, batches: u64) -> Result<u64, String> {
        if epoch != self.epoch {
            return Err(format!(
                "buffer epoch {epoch} is not the witness's {}",
                self.epoch
            ));
        }
        if next_seq < self.last {
            return Err(format!(
                "the buffer's last sequence is {next_seq}, the witness saw {} used",
                self.last
            ));
        }
        match self.clean {
            Some(b) if b != batches => Err(format!(
                "{b} batches were held at a clean shutdown, {batches} are found"
            )),
            Some(_) => Ok(next_seq),
            // After a crash (or a power loss, which may lose the witness's last writes too):
            // past everything that may have been used.
            None => Ok(next_seq.max(self.reserved)),
        }
    }
}

fn be(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// Checks a stored value; returns `(samples, frame)`.
fn check(value: &[u8]) -> Result<(u32, &[u8]), String> {
    if value.len() < 4 + HEADER_LEN {
        return Err(format!("record of {} bytes is too short", value.len()));
    }
    let samples = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
    let frame = &value[4..];
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&frame[..HEADER_LEN]);
    let header = Header::parse(&h, u32::MAX).map_err(|e| e.to_string())?;
    let payload = &frame[HEADER_LEN..];
    if payload.len() != header.len as usize {
        return Err(format!(
            "record says {} payload bytes, holds {}",
            header.len,
            payload.len()
        ));
    }
    header.verify(payload).map_err(|e| e.to_string())?;
    Ok((samples, frame))
}

impl Buffer {
    /// Opens the buffer in `dir` with a byte cap.
    pub fn open(dir: &Path, cap: u64) -> Result<Buffer, BufferError> {
        let opened = telltale_common::store::open_or_replace(dir, "agent buffer", |d| {
            Self::open_db(d).map_err(|e| match e {
                BufferError::Sled { source, .. } => source,
                other => sled::Error::Unsupported(other.to_string()),
            })
        })
        .map_err(BufferError::Open)?;
        let db = opened.db;
        let mut corrupt = u64::from(opened.moved_aside.is_some());
        let err = |source| BufferError::Sled {
            dir: dir.to_path_buf(),
            source,
        };
        let batches = db.open_tree("batches").map_err(err)?;
        let meta = db.open_tree("meta").map_err(err)?;
        let logs = db.open_tree("logs").map_err(err)?;
        let positions = db.open_tree("positions").map_err(err)?;
        let stored_epoch = meta.get("epoch").map_err(err)?.and_then(|v| be(&v));
        let stored_next = meta
            .get("next_seq")
            .map_err(err)?
            .and_then(|v| be(&v))
            .unwrap_or(0);
        let state_path = dir.join(STATE_FILE);
        let witness = SeqState::read(&state_path);
        // Decide whether sled's sequence state can be trusted (see the module doc).
        let (epoch, next) = match (stored_epoch, witness) {
            (None, Ok(Some(w))) => {
                // The witness says this buffer had an epoch: sled lost all of its state.
                tracing::error!(
                    epoch = w.epoch,
                    "agent buffer damaged: its state is gone; starting a new epoch"
                );
                corrupt += 1;
                (None, 0)
            }
            (None, _) => (None, 0),
            (Some(e), Ok(None)) => (Some(e), stored_next),
            (Some(e), Ok(Some(w))) => {
                match w.verdict(e, stored_next, (batches.len() + logs.len()) as u64) {
                    Ok(next) => (Some(e), next),
                    Err(why) => {
                        tracing::error!(epoch = e, next_seq = stored_next, reason = %why,
                        "agent buffer damaged: its sequence state cannot be trusted; starting a new epoch");
                        corrupt += 1;
                        (None, 0)
                    }
                }
            }
            (Some(e), Err(why)) => {
                tracing::error!(epoch = e, reason = %why,
                    "agent buffer's sequence witness is damaged; starting a new epoch");
                corrupt += 1;
                (None, 0)
            }
        };
        let epoch = match epoch {
            Some(e) => e,
            None => {
                let e: u64 = rand::random::<u64>() | 1;
                meta.insert("epoch", &e.to_be_bytes()).map_err(err)?;
                e
            }
        };
        meta.insert("next_seq", &next.to_be_bytes()).map_err(err)?;
        db.flush().map_err(err)?;
        // The first block is reserved before any sequence of it is used; the file says
        // "not clean" until [`Buffer::close`].
        let reserved = next.saturating_add(RESERVE);
        SeqState {
            epoch,
            reserved,
            last: next,
            clean: None,
        }
        .write(&state_path)
        .map_err(|e| BufferError::Witness {
            path: state_path.clone(),
            source: e,
        })?;
        let dropped = meta
            .get("dropped")
            .map_err(err)?
            .and_then(|v| be(&v))
            .unwrap_or(0);
        let segments_dir = dir.join(segments::DIR);
        let segments =
            segments::Segments::open(&segments_dir).map_err(|source| BufferError::Segments {
                dir: segments_dir.clone(),
                source,
            })?;
        let b = Buffer {
            dir: dir.to_path_buf(),
            trees: std::sync::RwLock::new(Some(Arc::new(recover::Trees {
                db,
                batches,
                meta,
                logs,
                positions,
            }))),
            broken: AtomicBool::new(false),
            disk_full: AtomicBool::new(false),
            segments,
            epoch,
            cap,
            log_cap: logs::DEFAULT_CAP.min(cap),
            bytes: AtomicU64::new(0),
            count: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            log_count: AtomicU64::new(0),
            dropped: AtomicU64::new(dropped),
            corrupt: AtomicU64::new(corrupt),
            witness: std::sync::Mutex::new(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&state_path)
                    .map_err(|e| BufferError::Witness {
                        path: state_path.clone(),
                        source: e,
                    })?,
            ),
            state_path,
            reserved: AtomicU64::new(reserved),
        };
        b.scan(true)?;
        Ok(b)
    }

    fn open_db(dir: &Path) -> Result<sled::Db, BufferError> {
        // sled starts seven I/O threads on first use that poll every second for the life of
        // the process; on an idle agent their wake-ups were most of its CPU. Threads inherit
        // the timer slack of the thread that creates them, so they are created (by opening
        // and flushing) under a 60 s slack: their idle timeouts then fire late and together.
        // Work handed to them is signalled, not timed, so it is not delayed. The calling
        // thread gets its own slack back afterwards.
        let previous = rustix::thread::current_timer_slack().ok();
        let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(60_000_000_000));
        let db = Self::open_db_inner(dir).and_then(|db| {
            db.insert("opened", &telltale_common::model::now_ms().to_be_bytes())
                .and_then(|_| db.flush())
                .map(|_| db)
                .map_err(|source| BufferError::Sled {
                    dir: dir.to_path_buf(),
                    source,
                })
        });
        let _ =
            rustix::thread::set_current_timer_slack(previous.and_then(std::num::NonZeroU64::new));
        db
    }

    fn open_db_inner(dir: &Path) -> Result<sled::Db, BufferError> {
        sled::Config::new()
            .path(dir)
            // Batches live here only until acknowledged (milliseconds on a healthy link); the
            // cache only needs the tree's upper nodes, not the values.
            .cache_capacity(512 << 10)
            .mode(sled::Mode::LowSpace)
            // The agent flushes after every push itself; sled's background flusher would only
            // add a thread and wake-ups.
            .flush_every_ms(None)
            .open()
            .map_err(|source| BufferError::Sled {
                dir: dir.to_path_buf(),
                source,
            })
    }

    fn err(&self, source: sled::Error) -> BufferError {
        self.note_failure(&source);
        BufferError::Sled {
            dir: self.dir.clone(),
            source,
        }
    }

    /// The record a `logs` tree value holds inline or names in a segment.
    fn log_record(&self, value: &[u8]) -> Result<Vec<u8>, String> {
        match segments::Place::decode(value) {
            None => Ok(value.to_vec()),
            Some(Err(e)) => Err(e),
            Some(Ok(place)) => self.segments.read(&place).map_err(|e| {
                format!(
                    "log batch record at {}+{} of segment {:016x}: {e}",
                    place.offset, place.len, place.segment
                )
            }),
        }
    }

    /// Verifies every record, removing the corrupt ones, and counts bytes; then deletes the
    /// log segment files no record is in.
    fn scan(&self, at_open: bool) -> Result<(), BufferError> {
        let t = self.t()?;
        for (tree, bytes_at, count_at, logs) in [
            (&t.batches, &self.bytes, &self.count, false),
            (&t.logs, &self.log_bytes, &self.log_count, true),
        ] {
            let (mut bytes, mut count) = (0u64, 0u64);
            let mut bad = Vec::new();
            for kv in tree.iter() {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                let checked = if logs {
                    self.log_record(&v)
                        .and_then(|r| check(&r).map(|_| r.len() as u64))
                } else {
                    check(&v).map(|_| v.len() as u64)
                };
                match checked {
                    Ok(len) => {
                        bytes += len;
                        count += 1;
                        if at_open && let Some(Ok(place)) = segments::Place::decode(&v) {
                            self.segments.adopt(&place);
                        }
                    }
                    Err(e) => bad.push((k, e)),
                }
            }
            for (k, e) in bad {
                tracing::error!(sequence = be(&k).unwrap_or(0), error = %e, "corrupt buffered batch skipped");
                tree.remove(k).map_err(|e| self.err(e))?;
                self.count_drop(true);
            }
            bytes_at.store(bytes, Ordering::Relaxed);
            count_at.store(count, Ordering::Relaxed);
        }
        if !at_open {
            return Ok(());
        }
        let swept = self
            .segments
            .sweep()
            .map_err(|source| BufferError::Segments {
                dir: self.dir.join(segments::DIR),
                source,
            })?;
        if swept > 0 {
            tracing::info!(
                files = swept,
                "log segment files no buffered batch is in were deleted"
            );
        }
        Ok(())
    }

    fn count_drop(&self, corrupt: bool) {
        let d = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if corrupt {
            self.corrupt.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(t) = self.t() {
            let _ = t.meta.insert("dropped", &d.to_be_bytes());
        }
    }

    /// The buffer's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Assigns the next sequence to `batch`, stores it and flushes; returns the sequence.
    pub async fn push(&self, batch: Batch) -> Result<u64, BufferError> {
        let (seq, value) = self.sequence_and_frame(batch)?;
        let size = value.len() as u64;
        if size > self.cap {
            return Err(BufferError::TooLarge {
                size,
                cap: self.cap,
            });
        }
        while self.bytes.load(Ordering::Relaxed) + size > self.cap {
            match self.t()?.batches.pop_min().map_err(|e| self.err(e))? {
                Some((k, v)) => {
                    self.bytes.fetch_sub(v.len() as u64, Ordering::Relaxed);
                    self.count.fetch_sub(1, Ordering::Relaxed);
                    self.count_drop(false);
                    tracing::warn!(
                        sequence = be(&k).unwrap_or(0),
                        "buffer full: oldest batch dropped"
                    );
                }
                None => break,
            }
        }
        self.t()?
            .batches
            .insert(seq.to_be_bytes(), value)
            .map_err(|e| self.err(e))?;
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.made_durable(seq)?;
        Ok(seq)
    }

    /// Flushes sled, then records `seq` as used in the witness.
    fn made_durable(&self, seq: u64) -> Result<(), BufferError> {
        // A synchronous flush on purpose: `flush_async` hands the work to sled's I/O thread
        // pool, which costs a thread per flush in flight and memory in each; the agent's one
        // runtime thread can afford the wait (sync_file_range, about a millisecond).
        self.t()?.db.flush().map_err(|e| self.err(e))?;
        // After sled has it: the witness never claims more than sled holds.
        self.witness(seq, self.reserved.load(Ordering::Relaxed), None, false)
    }

    /// Takes the next sequence (reserving its block in the witness first) and frames
    /// `batch` with it: `samples: u32 BE` and the wire frame.
    fn sequence_and_frame(&self, mut batch: Batch) -> Result<(u64, Vec<u8>), BufferError> {
        let seq = self
            .t()?
            .meta
            .update_and_fetch("next_seq", |old| {
                let n = old.and_then(be).unwrap_or(0) + 1;
                Some(n.to_be_bytes().to_vec())
            })
            .map_err(|e| self.err(e))?
            .and_then(|v| be(&v))
            .unwrap_or(1);
        // A sequence is used only once its block is reserved in the witness.
        if seq >= self.reserved.load(Ordering::Relaxed) {
            let reserved = seq.saturating_add(RESERVE);
            self.witness(seq.saturating_sub(1), reserved, None, true)?;
            self.reserved.store(reserved, Ordering::Relaxed);
        }
        batch.sequence = seq;
        let samples = batch.sample_count() as u32;
        let payload = codec::encode_payload(&ClientMessage::Batch(batch))?;
        let mut value = Vec::with_capacity(4 + HEADER_LEN + payload.len());
        value.extend_from_slice(&samples.to_be_bytes());
        codec::frame_into(&payload, &mut value);
        Ok((seq, value))
    }

    /// Reads batch `seq`; a corrupt one is removed, counted and reported as absent.
    pub fn get(&self, seq: u64) -> Result<Option<Stored>, BufferError> {
        let key = seq.to_be_bytes();
        let (record, log_value) = match self.t()?.batches.get(key).map_err(|e| self.err(e))? {
            // Metric batches are kilobytes: the copy is cheap.
            Some(v) => (Ok(v.to_vec()), None),
            None => match self.t()?.logs.get(key).map_err(|e| self.err(e))? {
                Some(v) => (self.log_record(&v), Some(v)),
                None => return Ok(None),
            },
        };
        let checked = record.and_then(|mut r| {
            let (samples, _) = check(&r)?;
            r.drain(..4);
            Ok((samples, r))
        });
        match checked {
            Ok((samples, frame)) => Ok(Some(Stored {
                seq,
                samples,
                frame,
            })),
            Err(e) => {
                // A log batch evicted (its segment deleted) while it was read is gone, not
                // corrupt.
                if let Some(v) = log_value
                    && self.t()?.logs.get(key).map_err(|e| self.err(e))?.as_ref() != Some(&v)
                {
                    return Ok(None);
                }
                tracing::error!(sequence = seq, error = %e, "corrupt buffered batch skipped");
                self.remove(seq)?;
                self.count_drop(true);
                Ok(None)
            }
        }
    }

    /// The smallest buffered sequence `>= from` not in `skip`.
    pub fn next_from(
        &self,
        from: u64,
        skip: impl Fn(u64) -> bool,
    ) -> Result<Option<u64>, BufferError> {
        for k in self.t()?.batches.range(from.to_be_bytes()..) {
            let (k, _) = k.map_err(|e| self.err(e))?;
            if let Some(s) = be(&k)
                && !skip(s)
            {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// The newest buffered sequence.
    pub fn last(&self) -> Result<Option<u64>, BufferError> {
        Ok(self
            .t()?
            .batches
            .last()
            .map_err(|e| self.err(e))?
            .and_then(|(k, _)| be(&k)))
    }

    /// Forgets an acknowledged (or refused) batch.
    pub fn remove(&self, seq: u64) -> Result<(), BufferError> {
        let key = seq.to_be_bytes();
        if let Some(v) = self.t()?.batches.remove(key).map_err(|e| self.err(e))? {
            self.bytes.fetch_sub(v.len() as u64, Ordering::Relaxed);
            self.count.fetch_sub(1, Ordering::Relaxed);
        } else if let Some(v) = self.t()?.logs.remove(key).map_err(|e| self.err(e))? {
            self.forget_log(&v);
        }
        Ok(())
    }

    /// Counts a batch dropped for a reason other than the cap (for example refused).
    pub fn note_dropped(&self) {
        self.count_drop(false);
    }

    /// Bytes held (metric and log batches).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed) + self.log_bytes.load(Ordering::Relaxed)
    }

    /// Batches held (metric and log batches).
    pub fn len(&self) -> u64 {
        self.count.load(Ordering::Relaxed) + self.log_count.load(Ordering::Relaxed)
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batches dropped over the buffer's life (cap, corruption, refusal).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Corrupt records found since start.
    pub fn corrupt(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<(), BufferError> {
        self.t()?.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    /// Flushes and records a clean shutdown in the witness: the next open continues at the
    /// exact sequence and checks the batch count. Nothing may be pushed afterwards.
    pub fn close(&self) -> Result<(), BufferError> {
        self.flush()?;
        let next = self
            .t()?
            .meta
            .get("next_seq")
            .map_err(|e| self.err(e))?
            .and_then(|v| be(&v))
            .unwrap_or(0);
        self.witness(
            next,
            self.reserved.load(Ordering::Relaxed),
            Some({
                let t = self.t()?;
                (t.batches.len() + t.logs.len()) as u64
            }),
            true,
        )
    }

    /// Rewrites the witness in place; `sync` also makes it durable.
    fn witness(
        &self,
        last: u64,
        reserved: u64,
        clean: Option<u64>,
        sync: bool,
    ) -> Result<(), BufferError> {
        use std::os::unix::fs::FileExt;
        let bytes = SeqState {
            epoch: self.epoch,
            reserved,
            last,
            clean,
        }
        .encode();
        let f = self.witness.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all_at(&bytes, 0)
            .and_then(|_| if sync { f.sync_data() } else { Ok(()) })
            .map_err(|e| BufferError::Witness {
                path: self.state_path.clone(),
                source: e,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telltale_common::model::{Labels, Sample, SeriesSamples};

    fn batch(n: usize) -> Batch {
        Batch {
            sequence: 0,
            created_ms: 1,
            events: Vec::new(),
            series: (0..n)
                .map(|i| SeriesSamples {
                    labels: Labels::from_pairs([("__name__", format!("m{i}"))]),
                    samples: vec![Sample(1, i as f64)],
                })
                .collect(),
            spans: Vec::new(),
            exemplars: Vec::new(),
            logs: Vec::new(),
        }
    }

    #[tokio::test]
    async fn batches_survive_reopen_and_sequences_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let epoch;
        {
            let b = Buffer::open(dir.path(), 1 << 20).unwrap();
            epoch = b.epoch();
            assert_eq!(b.push(batch(3)).await.unwrap(), 1);
            assert_eq!(b.push(batch(3)).await.unwrap(), 2);
            b.remove(1).unwrap();
            b.remove(2).unwrap();
            assert_eq!(b.push(batch(3)).await.unwrap(), 3);
            b.close().unwrap();
        }
        let b = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(b.epoch(), epoch);
        assert_eq!(b.len(), 1);
        b.close().unwrap();
        drop(b);
        // After a clean shutdown the sequence continues exactly.
        let b = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(b.epoch(), epoch);
        let s = b.get(3).unwrap().unwrap();
        assert_eq!(s.samples, 3);
        let mut d = codec::FrameDecoder::new(u32::MAX);
        d.push(&s.frame).unwrap();
        match codec::decode_payload::<ClientMessage>(&d.poll_frame().unwrap().unwrap()).unwrap() {
            ClientMessage::Batch(got) => assert_eq!(got.sequence, 3),
            other => panic!("{other:?}"),
        }
        assert_eq!(b.push(batch(1)).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn the_cap_drops_the_oldest_first_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let b = Buffer::open(dir.path(), 2000).unwrap();
        for _ in 0..20 {
            b.push(batch(5)).await.unwrap();
        }
        assert!(b.bytes() <= 2000);
        assert!(b.dropped() > 0);
        let first = b.next_from(0, |_| false).unwrap().unwrap();
        assert_eq!(first, b.dropped() + 1, "the oldest were dropped");
        assert_eq!(b.last().unwrap(), Some(20));
        assert!(matches!(
            b.push(batch(500)).await,
            Err(BufferError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn a_corrupt_record_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = Buffer::open(dir.path(), 1 << 20).unwrap();
            b.push(batch(2)).await.unwrap();
            b.push(batch(2)).await.unwrap();
            // Corrupt record 1 in place, as a bad disk block would.
            let mut v = b
                .t()
                .expect("trees")
                .batches
                .get(1u64.to_be_bytes())
                .unwrap()
                .unwrap()
                .to_vec();
            let last = v.len() - 1;
            v[last] ^= 0xff;
            b.t()
                .expect("trees")
                .batches
                .insert(1u64.to_be_bytes(), v)
                .unwrap();
            b.flush().unwrap();
        }
        let b = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(b.corrupt(), 1);
        assert_eq!(b.len(), 1);
        assert!(b.get(1).unwrap().is_none());
        assert!(b.get(2).unwrap().is_some());
    }

    #[tokio::test]
    async fn after_a_crash_sequences_continue_past_the_reserved_block() {
        let dir = tempfile::tempdir().unwrap();
        let b = Buffer::open(dir.path(), 1 << 20).unwrap();
        let epoch = b.epoch();
        for _ in 0..5 {
            b.push(batch(1)).await.unwrap();
        }
        drop(b); // no close: a crash
        let b = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(b.epoch(), epoch);
        assert_eq!(b.corrupt(), 0);
        assert_eq!(b.push(batch(1)).await.unwrap(), RESERVE + 1);
        // Past a block boundary the next block is reserved before it is used.
        for _ in 0..RESERVE {
            b.push(batch(1)).await.unwrap();
        }
        let w = SeqState::read(&dir.path().join(STATE_FILE))
            .unwrap()
            .unwrap();
        assert!(w.reserved > 2 * RESERVE + 1, "{w:?}");
    }

    /// Bytes flipped anywhere in sled's file while the agent is stopped: whatever sled makes
    /// of it, the agent never re-uses a sequence of its epoch (the aggregator would drop the
    /// new batch as a duplicate), and lost state is counted.
    #[tokio::test]
    async fn flipped_bytes_never_reuse_a_sequence_silently() {
        let base = tempfile::tempdir().unwrap();
        let mut detected = 0;
        for (n, (at, len)) in [
            (0usize, 16usize),
            (100, 8),
            (600, 64),
            (3000, 64),
            (9000, 200),
        ]
        .into_iter()
        .enumerate()
        {
            for clean in [false, true] {
                let dir = base.path().join(format!("b{n}{clean}"));
                let b = Buffer::open(&dir, 1 << 20).unwrap();
                let epoch = b.epoch();
                let mut last = 0;
                for i in 0..60 {
                    last = b.push(batch(2)).await.unwrap();
                    if i % 3 == 0 {
                        b.remove(last).unwrap(); // acknowledged
                    }
                }
                if clean {
                    b.close().unwrap();
                } else {
                    b.flush().unwrap();
                }
                drop(b);
                let db = dir.join("db");
                let mut bytes = std::fs::read(&db).unwrap();
                let end = (at + len).min(bytes.len());
                for x in &mut bytes[at.min(end)..end] {
                    *x ^= 0x5A;
                }
                std::fs::write(&db, &bytes).unwrap();
                let b = Buffer::open(&dir, 1 << 20).unwrap();
                let next = b.push(batch(1)).await.unwrap();
                if b.epoch() == epoch {
                    assert!(
                        next > last,
                        "damage at {at}: sequence {next} re-used (last {last})"
                    );
                    assert_eq!(b.len(), 41, "damage at {at}: batches lost without a count");
                } else {
                    assert!(b.corrupt() >= 1, "a new epoch without a count");
                    assert_eq!(next, 1);
                    detected += 1;
                }
            }
        }
        assert!(detected >= 3, "most damage is detected ({detected})");
    }

    #[tokio::test]
    async fn a_damaged_witness_starts_a_new_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let b = Buffer::open(dir.path(), 1 << 20).unwrap();
        let epoch = b.epoch();
        b.push(batch(1)).await.unwrap();
        b.close().unwrap();
        drop(b);
        let p = dir.path().join(STATE_FILE);
        let mut v = std::fs::read(&p).unwrap();
        v[10] ^= 1;
        std::fs::write(&p, v).unwrap();
        let b = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_ne!(b.epoch(), epoch);
        assert_eq!(b.corrupt(), 1);
        assert_eq!(b.len(), 1, "the backlog is kept and sent in the new epoch");
        assert_eq!(b.push(batch(1)).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_buffer_held_by_another_process_is_an_error_and_not_moved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buffer");
        let held = Buffer::open(&path, 1 << 20).unwrap();
        held.push(batch(1)).await.unwrap();
        match Buffer::open(&path, 1 << 20) {
            Err(BufferError::Open(m)) => assert!(m.to_string().contains("lock"), "{m}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened twice"),
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "nothing moved aside"
        );
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn a_buffer_written_before_the_witness_is_trusted_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let b = Buffer::open(dir.path(), 1 << 20).unwrap();
        let epoch = b.epoch();
        rt.block_on(b.push(batch(1))).unwrap();
        b.close().unwrap();
        drop(b);
        std::fs::remove_file(dir.path().join(STATE_FILE)).unwrap();
        let b = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(b.epoch(), epoch);
        assert_eq!(b.corrupt(), 0);
        assert_eq!(rt.block_on(b.push(batch(1))).unwrap(), 2);
    }
}
