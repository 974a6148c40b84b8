//! Log batches in the buffer: their own tree and cap, pushed together with the read
//! positions of the lines they carry.
//!
//! A log source's position (how far it has read a file) is written in the **same sled
//! transaction** as the batch holding the lines up to it. A line is therefore in exactly one
//! place at any moment — not yet read, in the buffer, or acknowledged and gone — so a
//! restarted agent neither skips nor repeats a line. (Committing the position only when the
//! aggregator acknowledges the batch, as one might first think, would make a restart re-read
//! lines whose batch is still buffered and send them twice.) A log batch evicted by the cap
//! loses its lines, counted like any dropped batch.

use std::sync::atomic::Ordering;

use sled::Transactional;
use telltale_common::wire::Batch;

use super::segments::Place;
use super::{Buffer, BufferError, be};

/// The log batches' byte cap unless `[buffer] logs_max_bytes` says otherwise.
pub const DEFAULT_CAP: u64 = 64 << 20;

impl Buffer {
    /// Sets the log batches' byte cap (at most the whole buffer's).
    pub fn with_log_cap(mut self, cap: u64) -> Buffer {
        self.log_cap = cap.min(self.cap).max(1);
        self
    }

    /// Stores a batch of log lines and, atomically with it, the sources' new positions
    /// (`(key, value)` pairs); returns its sequence. Over the log cap the oldest log batches
    /// go first (metric batches are never evicted for logs).
    pub async fn push_logs(
        &self,
        batch: Batch,
        positions: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<u64, BufferError> {
        let (seq, value) = self.sequence_and_frame(batch)?;
        let size = value.len() as u64;
        if size > self.log_cap {
            return Err(BufferError::TooLarge {
                size,
                cap: self.log_cap,
            });
        }
        while self.log_bytes.load(Ordering::Relaxed) + size > self.log_cap {
            match self.t()?.logs.pop_min().map_err(|e| self.err(e))? {
                Some((k, v)) => {
                    self.forget_log(&v);
                    self.count_drop(false);
                    tracing::warn!(
                        sequence = be(&k).unwrap_or(0),
                        "log buffer full: oldest log batch dropped"
                    );
                }
                None => break,
            }
        }
        let key = seq.to_be_bytes();
        // The record first, durably; then sled's marker and the positions (segments.rs).
        let place = self
            .segments
            .append(&value)
            .map_err(|source| BufferError::Segments {
                dir: self.dir.join(super::segments::DIR),
                source,
            })?;
        drop(value);
        let marker = place.encode();
        let t = self.t()?;
        let stored = (&t.logs, &t.positions)
            .transaction(|(logs, pos)| {
                logs.insert(&key[..], &marker[..])?;
                for (k, v) in positions {
                    pos.insert(k.as_slice(), v.as_slice())?;
                }
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(s) => self.err(s),
                sled::transaction::TransactionError::Abort(()) => {
                    self.err(sled::Error::Unsupported("transaction aborted".into()))
                }
            });
        if let Err(e) = stored {
            self.segments.release(&place);
            return Err(e);
        }
        self.log_bytes.fetch_add(size, Ordering::Relaxed);
        self.log_count.fetch_add(1, Ordering::Relaxed);
        self.made_durable(seq)?;
        Ok(seq)
    }

    /// Writes positions that carry no lines (a file found, a file gone) and forgets those of
    /// files that are gone, durably.
    pub fn set_positions(
        &self,
        positions: &[(Vec<u8>, Vec<u8>)],
        forget: &[Vec<u8>],
    ) -> Result<(), BufferError> {
        if positions.is_empty() && forget.is_empty() {
            return Ok(());
        }
        let mut b = sled::Batch::default();
        for (k, v) in positions {
            b.insert(k.as_slice(), v.as_slice());
        }
        for k in forget {
            b.remove(k.as_slice());
        }
        self.t()?
            .positions
            .apply_batch(b)
            .map_err(|e| self.err(e))?;
        self.t()?.db.flush().map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The smallest buffered log batch sequence `>= from` not in `skip`.
    pub fn next_log_from(
        &self,
        from: u64,
        skip: impl Fn(u64) -> bool,
    ) -> Result<Option<u64>, BufferError> {
        for k in self.t()?.logs.range(from.to_be_bytes()..) {
            let (k, _) = k.map_err(|e| self.err(e))?;
            if let Some(s) = be(&k)
                && !skip(s)
            {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// A log source's stored position.
    pub fn position(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BufferError> {
        Ok(self
            .t()?
            .positions
            .get(key)
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }

    /// Uncounts a `logs` tree value just removed and lets its segment record go.
    pub(super) fn forget_log(&self, value: &[u8]) {
        let len = match Place::decode(value) {
            Some(Ok(place)) => {
                self.segments.release(&place);
                u64::from(place.len)
            }
            _ => value.len() as u64,
        };
        self.log_bytes.fetch_sub(len, Ordering::Relaxed);
        self.log_count.fetch_sub(1, Ordering::Relaxed);
    }

    /// Bytes of log batches held.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes.load(Ordering::Relaxed)
    }

    /// Whether log batches fill less than half their cap: room for sources that can wait.
    pub fn log_room(&self) -> bool {
        self.log_bytes() < self.log_cap / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telltale_common::wire::{LogEntry, LogStream};

    fn log_batch(n: usize) -> Batch {
        Batch {
            sequence: 0,
            created_ms: 0,
            series: Vec::new(),
            events: Vec::new(),
            spans: Vec::new(),
            exemplars: Vec::new(),
            logs: vec![LogStream {
                labels: vec![("source".into(), "f".into())],
                entries: (0..n)
                    .map(|i| LogEntry {
                        t_ns: i as i64,
                        line: "x".repeat(100),
                        metadata: Vec::new(),
                    })
                    .collect(),
            }],
        }
    }

    #[tokio::test]
    async fn positions_move_with_their_batch_and_logs_never_evict_metrics() {
        let d = tempfile::tempdir().expect("dir");
        let b = Buffer::open(d.path(), 1 << 20)
            .expect("open")
            .with_log_cap(8 * 1024);
        let mut metric_batch = log_batch(0);
        metric_batch.logs.clear();
        metric_batch.series = vec![telltale_common::model::SeriesSamples {
            labels: telltale_common::model::Labels::from_pairs([("__name__", "m")]),
            samples: vec![telltale_common::model::Sample(1, 1.0)],
        }];
        let metric = b.push(metric_batch).await.expect("push");
        let mut seqs = Vec::new();
        for i in 0u64..20 {
            let pos = vec![(b"file:a".to_vec(), (i * 100).to_be_bytes().to_vec())];
            seqs.push(b.push_logs(log_batch(10), &pos).await.expect("push logs"));
        }
        // The log cap (8 KiB, about 7 batches) evicted the oldest log batches only.
        assert!(
            b.get(metric).expect("get").is_some(),
            "the metric batch stays"
        );
        assert!(b.get(seqs[0]).expect("get").is_none());
        assert!(b.get(seqs[19]).expect("get").is_some());
        assert!(b.log_bytes() <= 8 * 1024);
        assert_eq!(
            b.position(b"file:a").expect("pos"),
            Some(1900u64.to_be_bytes().to_vec())
        );
        assert_eq!(
            b.next_log_from(0, |_| false)
                .expect("next")
                .map(|s| s > metric),
            Some(true)
        );
        b.close().expect("close");
        drop(b);
        // Reopened after a clean shutdown: the count of both kinds matches the witness.
        let b = Buffer::open(d.path(), 1 << 20).expect("reopen");
        assert_eq!(b.corrupt(), 0);
        assert_eq!(
            b.position(b"file:a").expect("pos"),
            Some(1900u64.to_be_bytes().to_vec())
        );
        let held = b.len();
        b.remove(seqs[19]).expect("remove");
        assert_eq!(b.len(), held - 1);
    }

    fn disk_bytes(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir.join(super::super::segments::DIR))
            .expect("segments dir")
            .map(|e| e.expect("entry").metadata().expect("meta").len())
            .sum()
    }

    /// Log batches lie in segment files (sled holds markers); the disk holds about the cap,
    /// not every batch ever pushed, while batches are evicted and acknowledged out of order.
    #[tokio::test]
    async fn log_batches_live_in_segments_and_the_disk_follows_the_cap() {
        use super::super::segments::{MARKER_LEN, SEGMENT_BYTES};
        let d = tempfile::tempdir().expect("dir");
        let cap = 2u64 << 20;
        let b = Buffer::open(d.path(), 64 << 20)
            .expect("open")
            .with_log_cap(cap);
        // Live records span at most the cap over the share kept (2/3 here), plus a partly
        // dead segment at each end.
        let bound = cap * 3 / 2 + 2 * SEGMENT_BYTES;
        let mut held = Vec::new();
        for i in 0u64..150 {
            let pos = vec![(b"file:a".to_vec(), i.to_be_bytes().to_vec())];
            let seq = b.push_logs(log_batch(3000), &pos).await.expect("push");
            held.push(seq);
            // Acknowledge every third batch at once, as a healthy link would.
            if i % 3 == 0 {
                b.remove(seq).expect("ack");
            }
            assert!(b.log_bytes() <= cap);
            let disk = disk_bytes(d.path());
            assert!(
                disk <= bound,
                "segments hold {disk} bytes for a cap of {cap}"
            );
        }
        let newest = b
            .t()
            .expect("trees")
            .logs
            .last()
            .expect("last")
            .expect("held")
            .1;
        let segment = Place::decode(&newest)
            .expect("marker")
            .expect("valid")
            .segment;
        assert!(
            segment * SEGMENT_BYTES > 3 * bound,
            "the test writes far more than the bound ({segment} segments)"
        );
        for kv in b.t().expect("trees").logs.iter() {
            let (_, v) = kv.expect("kv");
            assert_eq!(v.len(), MARKER_LEN, "sled holds a marker, not the record");
        }
        let last = *held.last().expect("pushed");
        let stored = b.get(last).expect("get").expect("held");
        assert!(stored.frame.len() > 30_000);
        // Everything acknowledged: only the segment being written is left.
        while let Some(s) = b.next_log_from(0, |_| false).expect("next") {
            b.remove(s).expect("ack");
        }
        assert_eq!(b.log_bytes(), 0);
        assert_eq!(b.segments.files(), 1);
        b.close().expect("close");
        drop(b);
        // Reopened with nothing held: the sweep deletes that one too.
        let b = Buffer::open(d.path(), 64 << 20).expect("reopen");
        assert_eq!(b.segments.files(), 0);
        assert_eq!(b.corrupt(), 0);
    }

    /// Records held inline by buffers written before segments are still sent; damaged or
    /// missing segment records are counted and skipped; stray files are deleted at open.
    #[tokio::test]
    async fn inline_records_still_read_and_damaged_segments_are_counted() {
        let d = tempfile::tempdir().expect("dir");
        let (inline, damaged, missing, good);
        {
            let b = Buffer::open(d.path(), 64 << 20).expect("open");
            damaged = b.push_logs(log_batch(50), &[]).await.expect("push");
            good = b.push_logs(log_batch(50), &[]).await.expect("push");
            // An inline record as an older agent wrote it: the record itself as the value.
            let (seq, record) = b.sequence_and_frame(log_batch(20)).expect("frame");
            b.t()
                .expect("trees")
                .logs
                .insert(seq.to_be_bytes(), record)
                .expect("insert");
            inline = seq;
            // A marker whose segment file is gone.
            missing = b.push_logs(log_batch(5), &[]).await.expect("push");
            let place = Place {
                segment: 999,
                offset: 0,
                len: 100,
            };
            b.t()
                .expect("trees")
                .logs
                .insert(missing.to_be_bytes(), &place.encode()[..])
                .expect("insert");
            b.close().expect("close");
        }
        // Flip a byte inside the first record's payload, on disk.
        let seg_dir = d.path().join(super::super::segments::DIR);
        let seg = std::fs::read_dir(&seg_dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .min()
            .expect("a segment");
        let mut bytes = std::fs::read(&seg).expect("read");
        bytes[200] ^= 0x40;
        std::fs::write(&seg, bytes).expect("write");
        std::fs::write(seg_dir.join("00000000000000ff.seg"), b"orphan").expect("orphan");
        std::fs::create_dir(seg_dir.join("someone's directory")).expect("a stray directory");
        let b = Buffer::open(d.path(), 64 << 20).expect("reopen");
        assert_eq!(b.corrupt(), 2, "the damaged and the missing record");
        assert!(b.get(damaged).expect("get").is_none());
        assert!(b.get(missing).expect("get").is_none());
        assert!(b.get(good).expect("get").is_some());
        let old = b.get(inline).expect("get").expect("inline record read");
        assert!(old.frame.len() > 2000);
        assert!(
            !seg_dir.join("00000000000000ff.seg").exists(),
            "orphan swept"
        );
        assert_eq!(b.len(), 2);
        b.remove(inline).expect("remove");
        b.remove(good).expect("remove");
        assert_eq!(b.log_bytes(), 0);
        // New segments are numbered past every file seen, the orphan's too.
        let next = b.push_logs(log_batch(1), &[]).await.expect("push");
        let v = b
            .t()
            .expect("trees")
            .logs
            .get(next.to_be_bytes())
            .expect("get")
            .expect("held");
        let place = Place::decode(&v).expect("marker").expect("valid");
        assert!(place.segment > 0xff);
    }
}
