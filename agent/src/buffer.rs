//! The agent's durable queue of batches, in sled: a batch is written (and flushed) before it
//! is sent, and removed only when the aggregator acknowledges it.
//!
//! # Layout
//! - tree `batches`: key = sequence (u64 big-endian, so iteration is oldest-first);
//!   value = `samples: u32 BE` followed by one frame exactly as sent on the wire (see
//!   `telltale_common::codec`: length, version, CRC-32, MessagePack `ClientMessage::Batch`).
//! - tree `meta`: `next_seq` (u64 BE), `epoch` (u64 BE, random, made when the buffer is
//!   created; see `Hello::epoch`), `dropped` (u64 BE, batches dropped over the buffer's life).
//!
//! # Limits
//! A byte cap (default 512 MiB): when a new batch would exceed it, the oldest batches are
//! dropped first and counted. A record that fails its checksum is removed, counted and
//! logged when it is read — at open (every record is checked) or before sending.
//! sled's `flush` uses `sync_file_range`: a killed agent loses nothing flushed, a power loss
//! may lose the last flushed writes (the aggregator's de-duplication makes re-sends safe).
//! If sled itself cannot open the directory, it is moved aside (`*.corrupt-<time>`) and a new
//! buffer is started, so start-up is never blocked.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// A batch could not be encoded.
    #[error("cannot encode batch: {0}")]
    Encode(#[from] codec::CodecError),
    /// A single batch is larger than the whole cap.
    #[error("batch of {size} bytes is larger than the buffer cap of {cap} bytes")]
    TooLarge {
        /// Batch size.
        size: u64,
        /// The cap.
        cap: u64,
    },
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
    db: sled::Db,
    batches: sled::Tree,
    meta: sled::Tree,
    epoch: u64,
    cap: u64,
    bytes: AtomicU64,
    count: AtomicU64,
    dropped: AtomicU64,
    corrupt: AtomicU64,
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
        let db = match Self::open_db(dir) {
            Ok(db) => db,
            Err(e) => {
                let aside =
                    dir.with_extension(format!("corrupt-{}", telltale_common::model::now_ms()));
                tracing::error!(dir = %dir.display(), error = %e, aside = %aside.display(),
                    "buffer cannot be opened: moving it aside and starting a new one");
                std::fs::rename(dir, &aside).map_err(|io| BufferError::Sled {
                    dir: dir.to_path_buf(),
                    source: sled::Error::Io(io),
                })?;
                Self::open_db(dir)?
            }
        };
        let err = |source| BufferError::Sled {
            dir: dir.to_path_buf(),
            source,
        };
        let batches = db.open_tree("batches").map_err(err)?;
        let meta = db.open_tree("meta").map_err(err)?;
        let epoch = match meta.get("epoch").map_err(err)?.and_then(|v| be(&v)) {
            Some(e) => e,
            None => {
                let e: u64 = rand::random::<u64>() | 1;
                meta.insert("epoch", &e.to_be_bytes()).map_err(err)?;
                db.flush().map_err(err)?;
                e
            }
        };
        let dropped = meta
            .get("dropped")
            .map_err(err)?
            .and_then(|v| be(&v))
            .unwrap_or(0);
        let b = Buffer {
            dir: dir.to_path_buf(),
            db,
            batches,
            meta,
            epoch,
            cap,
            bytes: AtomicU64::new(0),
            count: AtomicU64::new(0),
            dropped: AtomicU64::new(dropped),
            corrupt: AtomicU64::new(0),
        };
        b.scan()?;
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
            .cache_capacity(1 << 20)
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
        BufferError::Sled {
            dir: self.dir.clone(),
            source,
        }
    }

    /// Verifies every record, removing the corrupt ones, and counts bytes.
    fn scan(&self) -> Result<(), BufferError> {
        let (mut bytes, mut count) = (0u64, 0u64);
        let mut bad = Vec::new();
        for kv in self.batches.iter() {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            match check(&v) {
                Ok(_) => {
                    bytes += v.len() as u64;
                    count += 1;
                }
                Err(e) => bad.push((k, e)),
            }
        }
        for (k, e) in bad {
            tracing::error!(sequence = be(&k).unwrap_or(0), error = %e, "corrupt buffered batch skipped");
            self.batches.remove(k).map_err(|e| self.err(e))?;
            self.count_drop(true);
        }
        self.bytes.store(bytes, Ordering::Relaxed);
        self.count.store(count, Ordering::Relaxed);
        Ok(())
    }

    fn count_drop(&self, corrupt: bool) {
        let d = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if corrupt {
            self.corrupt.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.meta.insert("dropped", &d.to_be_bytes());
    }

    /// The buffer's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Assigns the next sequence to `batch`, stores it and flushes; returns the sequence.
    pub async fn push(&self, mut batch: Batch) -> Result<u64, BufferError> {
        let seq = self
            .meta
            .update_and_fetch("next_seq", |old| {
                let n = old.and_then(be).unwrap_or(0) + 1;
                Some(n.to_be_bytes().to_vec())
            })
            .map_err(|e| self.err(e))?
            .and_then(|v| be(&v))
            .unwrap_or(1);
        batch.sequence = seq;
        let samples = batch.sample_count() as u32;
        let payload = codec::encode_payload(&ClientMessage::Batch(batch))?;
        let mut value = Vec::with_capacity(4 + HEADER_LEN + payload.len());
        value.extend_from_slice(&samples.to_be_bytes());
        codec::frame_into(&payload, &mut value);
        let size = value.len() as u64;
        if size > self.cap {
            return Err(BufferError::TooLarge {
                size,
                cap: self.cap,
            });
        }
        while self.bytes.load(Ordering::Relaxed) + size > self.cap {
            match self.batches.pop_min().map_err(|e| self.err(e))? {
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
        self.batches
            .insert(seq.to_be_bytes(), value)
            .map_err(|e| self.err(e))?;
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        // A synchronous flush on purpose: `flush_async` hands the work to sled's I/O thread
        // pool, which costs a thread per flush in flight and memory in each; the agent's one
        // runtime thread can afford the wait (sync_file_range, about a millisecond).
        self.db.flush().map_err(|e| self.err(e))?;
        Ok(seq)
    }

    /// Reads batch `seq`; a corrupt one is removed, counted and reported as absent.
    pub fn get(&self, seq: u64) -> Result<Option<Stored>, BufferError> {
        let Some(v) = self
            .batches
            .get(seq.to_be_bytes())
            .map_err(|e| self.err(e))?
        else {
            return Ok(None);
        };
        match check(&v) {
            Ok((samples, frame)) => Ok(Some(Stored {
                seq,
                samples,
                frame: frame.to_vec(),
            })),
            Err(e) => {
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
        for k in self.batches.range(from.to_be_bytes()..) {
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
            .batches
            .last()
            .map_err(|e| self.err(e))?
            .and_then(|(k, _)| be(&k)))
    }

    /// Forgets an acknowledged (or refused) batch.
    pub fn remove(&self, seq: u64) -> Result<(), BufferError> {
        if let Some(v) = self
            .batches
            .remove(seq.to_be_bytes())
            .map_err(|e| self.err(e))?
        {
            self.bytes.fetch_sub(v.len() as u64, Ordering::Relaxed);
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Counts a batch dropped for a reason other than the cap (for example refused).
    pub fn note_dropped(&self) {
        self.count_drop(false);
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Batches held.
    pub fn len(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
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

    /// Flushes everything to disk (used at shutdown).
    pub fn flush(&self) -> Result<(), BufferError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
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
        }
        let b = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(b.epoch(), epoch);
        assert_eq!(b.len(), 1);
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
            let mut v = b.batches.get(1u64.to_be_bytes()).unwrap().unwrap().to_vec();
            let last = v.len() - 1;
            v[last] ^= 0xff;
            b.batches.insert(1u64.to_be_bytes(), v).unwrap();
            b.flush().unwrap();
        }
        let b = Buffer::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(b.corrupt(), 1);
        assert_eq!(b.len(), 1);
        assert!(b.get(1).unwrap().is_none());
        assert!(b.get(2).unwrap().is_some());
    }
}
