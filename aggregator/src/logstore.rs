//! The first storage engine: an append-only log of batches on disk, everything in memory.
//!
//! # On disk
//! `DATA_DIR/log/NNNNNNNNNNNNNNNNNNNN.seg`, segments of at most 128 MiB, each a sequence of
//! records framed exactly like wire frames (see `telltale_common::codec`: length, version,
//! CRC-32, payload). A record's payload is a MessagePack map
//! `{agent, epoch, sequence, wire, series}`: `wire` holds an agent's batch exactly as it arrived
//! (a `ClientMessage::Batch` payload), `series` the samples the aggregator produced itself.
//!
//! # Durability
//! One writer thread does group commit: it takes every queued record, writes them, calls
//! `fdatasync`, and only then applies them to memory and answers the callers — so an
//! acknowledged batch survives SIGKILL and power loss. A failed write is cut off the file
//! again and reported to every caller of the group; none of them is acknowledged.
//!
//! # Recovery
//! Start-up replays every segment. A record with a bad checksum or payload is skipped and
//! counted; a torn tail (a record cut short by a crash) is truncated and logged. Start-up never
//! stops on corruption. Writing resumes in a fresh segment.
//!
//! # Limits
//! Everything is held in memory (16 bytes per sample) and replay reads the whole log: this
//! engine is the durable baseline the storage issue replaces with a real TSDB behind the same
//! [`Storage`] trait.

mod dedup;
mod head;

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use telltale_common::codec::{self, HEADER_LEN, Header};
use telltale_common::model::{Labels, Sample, SeriesSamples};
use telltale_common::wire::{ClientMessageRef, Event};
use tokio::sync::{mpsc, oneshot};

use crate::storage::{
    AppendData, AppendOutcome, AppendRequest, BoxFuture, Matcher, Origin, SeriesData, Storage,
    StorageError, StorageStats, stamp_agent_labels,
};
use dedup::Dedup;
use head::{Head, hash_labels};

const SEGMENT_BYTES: u64 = 128 * 1024 * 1024;
const MAX_RECORD: u32 = 256 * 1024 * 1024;

/// The payload of one log record, borrowing from the bytes it was decoded from (or is
/// encoded from).
#[derive(Debug, Serialize, Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    agent: Option<&'a str>,
    #[serde(default)]
    epoch: u64,
    sequence: Option<u64>,
    #[serde(borrow, default)]
    wire: Option<&'a serde_bytes::Bytes>,
    /// Borrowed when writing (no copy of the caller's series), owned when replaying.
    #[serde(default)]
    series: std::borrow::Cow<'a, [SeriesSamples]>,
}

/// A series to store: sorted label pairs borrowed from a payload or a record, and samples.
type Prepared<'a> = (Vec<(&'a str, &'a str)>, Vec<Sample>);

/// Decodes what a record or an append carries into label pairs and samples, stamping agent
/// series with their origin. Series without a metric name are dropped.
fn prepare<'a>(
    agent: Option<&'a str>,
    wire: Option<&'a [u8]>,
    series: &'a [SeriesSamples],
) -> Result<(Vec<Prepared<'a>>, Vec<Event>), String> {
    let mut out: Vec<Prepared<'a>> = Vec::new();
    let mut events = Vec::new();
    if let Some(w) = wire {
        match codec::decode_borrowed::<ClientMessageRef>(w).map_err(|e| e.to_string())? {
            ClientMessageRef::Batch(b) => {
                out.extend(b.series.into_iter().map(|s| (s.labels, s.samples)));
                events = b.events;
            }
            ClientMessageRef::Hello(_) => return Err("a hello where a batch belongs".into()),
        }
    }
    out.extend(
        series
            .iter()
            .map(|s| (s.labels.iter().collect::<Vec<_>>(), s.samples.clone())),
    );
    out.retain_mut(|(pairs, _)| match agent {
        Some(a) => stamp_agent_labels(pairs, a),
        None => {
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            true
        }
    });
    // Events speak for the agent that sent them, like its series.
    for e in &mut events {
        e.labels.retain(|(k, _)| k != "instance");
        if let Some(a) = agent {
            e.labels.push(("instance".into(), a.into()));
        }
        e.labels.sort();
    }
    Ok((out, events))
}

/// Flattens prepared series into `(series id, sample)` points, creating series as needed:
/// lookups under the read lock, only the misses under the write lock.
fn resolve(head: &RwLock<Head>, prepared: Vec<Prepared<'_>>) -> Vec<(u32, Sample)> {
    let hashes: Vec<u64> = prepared
        .iter()
        .map(|(p, _)| hash_labels(p.iter().copied()))
        .collect();
    let mut ids: Vec<Option<u32>> = {
        let h = head.read().unwrap_or_else(|e| e.into_inner());
        prepared
            .iter()
            .zip(&hashes)
            .map(|((p, _), &hash)| h.lookup(p, hash))
            .collect()
    };
    if ids.iter().any(Option::is_none) {
        let mut h = head.write().unwrap_or_else(|e| e.into_inner());
        for (i, id) in ids.iter_mut().enumerate() {
            if id.is_none() {
                *id = Some(h.get_or_create(&prepared[i].0, hashes[i]));
            }
        }
    }
    let mut points = Vec::with_capacity(prepared.iter().map(|(_, s)| s.len()).sum());
    for (id, (_, samples)) in ids.into_iter().zip(prepared) {
        if let Some(id) = id {
            points.extend(samples.into_iter().map(|s| (id, s)));
        }
    }
    points
}

enum Job {
    Write {
        framed: Vec<u8>,
        points: Vec<(u32, Sample)>,
        /// Events of the batch, kept once the record is durable.
        events: Vec<Event>,
        origin: Option<Origin>,
        done: oneshot::Sender<Result<usize, StorageError>>,
    },
    Barrier {
        done: oneshot::Sender<Result<usize, StorageError>>,
    },
}

/// Counters of what replay found.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Records replayed.
    pub records: u64,
    /// Records skipped as corrupt.
    pub corrupt: u64,
    /// Bytes cut off torn segment tails.
    pub truncated_bytes: u64,
    /// Segments read.
    pub segments: u64,
}

/// The log store. Cheap to share behind an `Arc`.
pub struct LogStore {
    head: Arc<RwLock<Head>>,
    dedup: Arc<Mutex<Dedup>>,
    tx: mpsc::Sender<Job>,
    bytes_written: Arc<AtomicU64>,
    /// What start-up recovery found.
    pub recovery: RecoveryReport,
}

fn open_err(dir: &Path, e: impl std::fmt::Display) -> StorageError {
    StorageError::Open {
        dir: dir.display().to_string(),
        message: e.to_string(),
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut segs = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        let n = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = n {
            segs.push((n, p));
        }
    }
    segs.sort();
    Ok(segs)
}

impl LogStore {
    /// Opens (or creates) the store in `data_dir`, replaying the log.
    pub fn open(data_dir: &Path) -> Result<LogStore, StorageError> {
        let dir = data_dir.join("log");
        fs::create_dir_all(&dir).map_err(|e| open_err(&dir, e))?;
        let mut head = Head::default();
        let mut dedup = Dedup::default();
        let mut report = RecoveryReport::default();
        let segs = list_segments(&dir).map_err(|e| open_err(&dir, e))?;
        for (_, path) in &segs {
            replay_segment(path, &mut head, &mut dedup, &mut report)
                .map_err(|e| open_err(&dir, format!("{}: {e}", path.display())))?;
        }
        let next = segs.last().map(|(n, _)| n + 1).unwrap_or(1);
        let head = Arc::new(RwLock::new(head));
        let dedup = Arc::new(Mutex::new(dedup));
        let (tx, rx) = mpsc::channel(4096);
        let bytes_written = Arc::new(AtomicU64::new(0));
        let writer = Writer::create(dir.clone(), next).map_err(|e| open_err(&dir, e))?;
        let (h2, d2, b2) = (head.clone(), dedup.clone(), bytes_written.clone());
        std::thread::Builder::new()
            .name("telltale-log-writer".into())
            .spawn(move || writer.run(rx, h2, d2, b2))
            .map_err(|e| open_err(&dir, e))?;
        Ok(LogStore {
            head,
            dedup,
            tx,
            bytes_written,
            recovery: report,
        })
    }

    /// Bytes written to the log since start.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    fn read_head(&self) -> std::sync::RwLockReadGuard<'_, Head> {
        self.head.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_dedup(&self) -> std::sync::MutexGuard<'_, Dedup> {
        self.dedup.lock().unwrap_or_else(|e| e.into_inner())
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
        let (wire, series): (Option<&[u8]>, &[SeriesSamples]) = match &req.data {
            AppendData::Encoded(w) => (Some(w), &[]),
            AppendData::Series(s) => (None, s),
        };
        let agent = req.origin.as_ref().map(|o| o.agent.as_str());
        let (prepared, events) = match prepare(agent, wire, series) {
            Ok(p) => p,
            Err(reason) => {
                unmark(self);
                return Ok(AppendOutcome::Invalid { reason });
            }
        };
        let rec = Record {
            agent,
            epoch: req.origin.as_ref().map(|o| o.epoch).unwrap_or(0),
            sequence: req.origin.as_ref().map(|o| o.sequence),
            wire: wire.map(serde_bytes::Bytes::new),
            series: std::borrow::Cow::Borrowed(series),
        };
        let payload = match codec::encode_payload(&rec) {
            Ok(p) => p,
            Err(e) => {
                unmark(self);
                return Err(StorageError::Write(e.to_string()));
            }
        };
        let mut framed = Vec::with_capacity(HEADER_LEN + payload.len());
        codec::frame_into(&payload, &mut framed);
        let points = resolve(&self.head, prepared);
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
        Ok(AppendOutcome::Stored { samples })
    }
}

impl Storage for LogStore {
    fn append(&self, req: AppendRequest) -> BoxFuture<'_, Result<AppendOutcome, StorageError>> {
        Box::pin(self.append_inner(req))
    }

    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        max_samples: usize,
    ) -> Result<Vec<SeriesData>, StorageError> {
        self.read_head()
            .select(matchers, start_ms, end_ms, max_samples)
    }

    fn series(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<Labels> {
        self.read_head().series_labels(matchers, start_ms, end_ms)
    }

    fn stats(&self) -> StorageStats {
        self.read_head().stats()
    }

    fn events(&self, matchers: &[Matcher], since_ms: i64, limit: usize) -> Vec<Event> {
        self.read_head().events(matchers, since_ms, limit)
    }
}

fn replay_segment(
    path: &Path,
    head: &mut Head,
    dedup: &mut Dedup,
    report: &mut RecoveryReport,
) -> std::io::Result<()> {
    let data = fs::read(path)?;
    report.segments += 1;
    let mut off = 0usize;
    while off < data.len() {
        if data.len() - off < HEADER_LEN {
            break;
        }
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&data[off..off + HEADER_LEN]);
        let header = match Header::parse(&h, MAX_RECORD) {
            Ok(h) => h,
            Err(e) => {
                // The length cannot be trusted: nothing after this point can be framed.
                tracing::error!(segment = %path.display(), offset = off, error = %e,
                    "corrupt record header: the rest of the segment is skipped");
                report.corrupt += 1;
                report.truncated_bytes += (data.len() - off) as u64;
                truncate(path, off as u64)?;
                return Ok(());
            }
        };
        let end = off + HEADER_LEN + header.len as usize;
        if end > data.len() {
            break;
        }
        let payload = &data[off + HEADER_LEN..end];
        off = end;
        if let Err(e) = header.verify(payload) {
            tracing::error!(segment = %path.display(), offset = off, error = %e, "corrupt record skipped");
            report.corrupt += 1;
            continue;
        }
        let decoded = codec::decode_borrowed::<Record>(payload)
            .map_err(|e| e.to_string())
            .and_then(|rec| {
                let (p, events) = prepare(rec.agent, rec.wire.map(|w| &w[..]), &rec.series)?;
                let points: Vec<(u32, Sample)> = p
                    .into_iter()
                    .flat_map(|(pairs, samples)| {
                        let id = head.get_or_create(&pairs, hash_labels(pairs.iter().copied()));
                        samples.into_iter().map(move |s| (id, s))
                    })
                    .collect();
                Ok((rec.agent, rec.epoch, rec.sequence, points, events))
            });
        match decoded {
            Ok((agent, epoch, sequence, points, events)) => {
                if let (Some(agent), Some(seq)) = (agent, sequence) {
                    dedup.mark(agent, epoch, seq);
                }
                head.apply(&points);
                head.push_events(events);
                report.records += 1;
            }
            Err(e) => {
                tracing::error!(segment = %path.display(), offset = off, error = %e, "undecodable record skipped");
                report.corrupt += 1;
            }
        }
    }
    if off < data.len() {
        let torn = (data.len() - off) as u64;
        tracing::warn!(segment = %path.display(), bytes = torn, "torn tail truncated");
        report.truncated_bytes += torn;
        truncate(path, off as u64)?;
    }
    Ok(())
}

fn truncate(path: &Path, len: u64) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()
}

struct Writer {
    dir: PathBuf,
    file: File,
    segment: u64,
    len: u64,
}

impl Writer {
    fn create(dir: PathBuf, segment: u64) -> std::io::Result<Writer> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(segment_path(&dir, segment))?;
        // Make the new segment's directory entry durable too.
        File::open(&dir)?.sync_all()?;
        Ok(Writer {
            dir,
            file,
            segment,
            len: 0,
        })
    }

    fn roll(&mut self) -> std::io::Result<()> {
        let next = Writer::create(self.dir.clone(), self.segment + 1)?;
        *self = next;
        Ok(())
    }

    fn write_group(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.len > SEGMENT_BYTES {
            self.roll()?;
        }
        let res = self.file.write_all(buf).and_then(|_| self.file.sync_data());
        match res {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut the partial write off so later records stay framed; if even that
                // fails, continue in a new segment.
                let cut = self
                    .file
                    .set_len(self.len)
                    .and_then(|_| self.file.seek(SeekFrom::End(0)).map(|_| ()));
                if cut.is_err() {
                    let _ = self.roll();
                }
                Err(e)
            }
        }
    }

    fn run(
        mut self,
        mut rx: mpsc::Receiver<Job>,
        head: Arc<RwLock<Head>>,
        dedup: Arc<Mutex<Dedup>>,
        bytes: Arc<AtomicU64>,
    ) {
        let mut buf = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = vec![first];
            while jobs.len() < 4096 {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            buf.clear();
            for j in &jobs {
                if let Job::Write { framed, .. } = j {
                    buf.extend_from_slice(framed);
                }
            }
            let res = if buf.is_empty() {
                Ok(())
            } else {
                self.write_group(&buf)
            };
            match res {
                Ok(()) => {
                    bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    let mut h = head.write().unwrap_or_else(|e| e.into_inner());
                    let mut answers = Vec::with_capacity(jobs.len());
                    for j in jobs {
                        match j {
                            Job::Write {
                                points,
                                events,
                                done,
                                ..
                            } => {
                                h.push_events(events);
                                answers.push((done, Ok(h.apply(&points))))
                            }
                            Job::Barrier { done } => answers.push((done, Ok(0))),
                        }
                    }
                    drop(h);
                    for (done, r) in answers {
                        let _ = done.send(r);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "log write failed; the batches are not acknowledged");
                    let mut d = dedup.lock().unwrap_or_else(|e| e.into_inner());
                    for j in jobs {
                        let done = match j {
                            Job::Write { origin, done, .. } => {
                                if let Some(o) = origin {
                                    d.unmark(&o.agent, o.epoch, o.sequence);
                                }
                                done
                            }
                            Job::Barrier { done } => done,
                        };
                        let _ = done.send(Err(StorageError::Write(e.to_string())));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telltale_common::model::Labels;
    use telltale_common::wire::{Batch, ClientMessage};

    fn series(name: &str, t: i64, v: f64) -> Vec<SeriesSamples> {
        vec![SeriesSamples {
            labels: Labels::from_pairs([("__name__", name)]),
            samples: vec![Sample(t, v)],
        }]
    }

    fn agent_req(seq: u64, t: i64) -> AppendRequest {
        let encoded = codec::encode_payload(&ClientMessage::Batch(Batch {
            sequence: seq,
            created_ms: t,
            series: series("m", t, seq as f64),
            events: vec![Event {
                t_ms: t,
                kind: "check_state".into(),
                labels: vec![
                    ("check".into(), "web".into()),
                    ("instance".into(), "liar".into()),
                ],
                message: format!("batch {seq}"),
            }],
        }))
        .unwrap();
        AppendRequest {
            origin: Some(Origin {
                agent: "a".into(),
                epoch: 7,
                sequence: seq,
            }),
            data: AppendData::Encoded(encoded),
        }
    }

    fn all(store: &LogStore) -> Vec<Sample> {
        store
            .select(
                &[Matcher::equal("__name__", "m")],
                i64::MIN,
                i64::MAX,
                1 << 20,
            )
            .unwrap()
            .into_iter()
            .flat_map(|s| s.samples)
            .collect()
    }

    #[tokio::test]
    async fn duplicates_are_stored_once_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LogStore::open(dir.path()).unwrap();
            assert_eq!(
                store.append(agent_req(1, 1000)).await.unwrap(),
                AppendOutcome::Stored { samples: 1 }
            );
            assert_eq!(
                store.append(agent_req(1, 1000)).await.unwrap(),
                AppendOutcome::Duplicate
            );
            store
                .append(AppendRequest {
                    origin: None,
                    data: AppendData::Series(series("m", 2000, 9.0)),
                })
                .await
                .unwrap();
            assert_eq!(all(&store).len(), 2);
        }
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(all(&store).len(), 2);
        assert_eq!(
            store.append(agent_req(1, 1000)).await.unwrap(),
            AppendOutcome::Duplicate
        );
        assert_eq!(store.recovery.records, 2);
        // The batch's event was kept once, replayed from the log, and speaks for the agent
        // of the certificate, not the one the payload named.
        store.append(agent_req(2, 3000)).await.unwrap();
        let ev = store.events(&[], 0, 10);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!(ev[0].message, "batch 1");
        assert_eq!(
            ev[0].labels,
            vec![
                ("check".into(), "web".into()),
                ("instance".into(), "a".into())
            ]
        );
        assert_eq!(store.events(&[], 2000, 10).len(), 1);
        assert_eq!(store.events(&[], 0, 1)[0].message, "batch 2");
        assert!(
            store
                .events(&[Matcher::equal("kind", "other")], 0, 10)
                .is_empty()
        );
    }

    #[tokio::test]
    async fn agent_series_carry_the_certificate_name_and_bad_batches_are_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        let spoofed = codec::encode_payload(&ClientMessage::Batch(Batch {
            sequence: 1,
            created_ms: 1,
            events: Vec::new(),
            series: vec![
                SeriesSamples {
                    labels: Labels::from_pairs([("__name__", "m"), ("instance", "someone-else")]),
                    samples: vec![Sample(1, 1.0)],
                },
                SeriesSamples {
                    labels: Labels::from_pairs([("no_name", "x")]),
                    samples: vec![Sample(1, 1.0)],
                },
            ],
        }))
        .unwrap();
        let origin = |sequence| Origin {
            agent: "a".into(),
            epoch: 1,
            sequence,
        };
        let r = store
            .append(AppendRequest {
                origin: Some(origin(1)),
                data: AppendData::Encoded(spoofed),
            })
            .await
            .unwrap();
        assert_eq!(
            r,
            AppendOutcome::Stored { samples: 1 },
            "the nameless series is dropped"
        );
        let got = store.series(&[], i64::MIN, i64::MAX);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].get("instance"), Some("a"));
        assert_eq!(got[0].get("job"), Some("telltale-agent"));
        let r = store
            .append(AppendRequest {
                origin: Some(origin(2)),
                data: AppendData::Encoded(b"\x93\x01\x02".to_vec()),
            })
            .await
            .unwrap();
        assert!(matches!(r, AppendOutcome::Invalid { .. }), "{r:?}");
        drop(store);
        // Replay applies the same stamping to the logged bytes.
        let store = LogStore::open(dir.path()).unwrap();
        let got = store.series(&[], i64::MIN, i64::MAX);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].get("instance"), Some("a"));
    }

    #[tokio::test]
    async fn torn_tail_and_corrupt_records_never_block_start_up() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = LogStore::open(dir.path()).unwrap();
            for seq in 1..=3 {
                store
                    .append(agent_req(seq, seq as i64 * 1000))
                    .await
                    .unwrap();
            }
        }
        let seg = segment_path(&dir.path().join("log"), 1);
        let mut bytes = fs::read(&seg).unwrap();
        let rec_len = bytes.len() / 3;
        // Flip a payload byte of the second record, and tear the third.
        bytes[rec_len + HEADER_LEN + 3] ^= 0xff;
        bytes.truncate(bytes.len() - 5);
        fs::write(&seg, &bytes).unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.recovery.records, 1);
        assert_eq!(store.recovery.corrupt, 1);
        assert!(store.recovery.truncated_bytes > 0);
        assert_eq!(all(&store).len(), 1);
        // The lost batches were never acknowledged in this scenario's terms; a resend stores them.
        store.append(agent_req(3, 3000)).await.unwrap();
        assert_eq!(all(&store).len(), 2);
    }
}
