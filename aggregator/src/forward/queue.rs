//! One remote_write queue: reads the WAL from its position, batches, sends in shards,
//! retries, and moves (and persists) its position only once every shard of a round is
//! acknowledged — so what the aggregator acknowledged is sent at least once, and after a
//! clean restart not twice.
//!
//! A round is up to `shards × max_samples_per_send` samples; each shard takes the series
//! whose id falls to it, so one series' samples go out in order. 5xx, 429 and network errors
//! are retried with doubling backoff without end; other 4xx answers are the receiver
//! refusing the data for good (counted as failed, logged, not retried). While a queue is
//! stuck, the WAL segments it holds grow; past `max_wal_bytes` the oldest ones are dropped
//! from its view and their samples counted as dropped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use telltale_common::model::{Labels, Sample};

use super::cursor::Cursor;
use super::options::RemoteWriteOptions;
pub use super::tail::Position;
use super::tail::{self, WalRead};
use crate::metrics::tsdb::WalFeed;

/// A queue's counters (rendered at `/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Samples the receiver acknowledged.
    pub sent: AtomicU64,
    /// Samples the receiver refused for good (4xx).
    pub failed: AtomicU64,
    /// Samples dropped by the WAL byte cap.
    pub dropped: AtomicU64,
    /// Requests retried.
    pub retries: AtomicU64,
    /// Samples read and not yet acknowledged.
    pub pending: AtomicU64,
    /// Compressed bytes sent.
    pub bytes: AtomicU64,
    /// Unix ms when the queue had last sent everything durable.
    pub caught_up_ms: AtomicU64,
}

/// A queue's state shared with the wiring.
pub struct Queue {
    /// Settings.
    pub opts: RemoteWriteOptions,
    /// Counters.
    pub counters: Counters,
    /// Its position in the WAL.
    pub cursor: Cursor,
}

impl Queue {
    /// The queue with the position persisted in `path`, if any.
    pub fn load(path: PathBuf, opts: RemoteWriteOptions) -> Queue {
        Queue {
            cursor: Cursor::load(path, format!("remote_write {}", opts.name)),
            opts,
            counters: Counters::default(),
        }
    }

    /// The acknowledged position.
    pub fn position(&self) -> Option<Position> {
        self.cursor.position()
    }

    /// The position persisted last (what a restart resumes from, and what the WAL hold
    /// keeps).
    pub fn persisted(&self) -> Option<Position> {
        self.cursor.persisted()
    }

    /// Persists the acknowledged position if it moved; `true` when it did.
    pub fn persist(&self) -> bool {
        self.cursor.persist()
    }

    /// Starts a new queue at `p` (persisted at once).
    pub fn start_at(&self, p: Position) {
        self.cursor.start_at(p);
    }

    fn set(&self, p: Position) {
        self.cursor.set(p);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The labels a series is sent with, as encoded `Label` fields (`None`: relabelling drops
/// it), by series id.
type LabelCache = rustc_hash::FxHashMap<u32, Option<Arc<[u8]>>>;

/// A series' encoded labels and its samples of a round.
type Encoded<'a> = (Arc<[u8]>, &'a [Sample]);

/// Rounds sent and not yet wholly acknowledged, oldest first, shared by the reader and the
/// shard workers.
#[derive(Default)]
struct Flight {
    /// `(round id, position after it, bodies not yet acknowledged, samples)`.
    rounds: Mutex<std::collections::VecDeque<(u64, Position, usize, u64)>>,
    /// Bumped when the byte cap abandons everything in flight; workers drop older bodies.
    epoch: AtomicU64,
    /// Signalled when a body is done.
    done: tokio::sync::Notify,
}

impl Flight {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, Position, usize, u64)>> {
        self.rounds.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pops the finished rounds at the front; the position after the last one.
    fn finished(&self) -> Option<Position> {
        let mut r = self.lock();
        let mut last = None;
        while r.front().is_some_and(|f| f.2 == 0) {
            last = r.pop_front().map(|f| f.1);
        }
        last
    }

    fn in_flight(&self) -> (usize, u64) {
        let r = self.lock();
        (r.len(), r.iter().map(|f| f.3).sum())
    }
}

/// One body for a shard worker: `(round id, epoch, body, samples)`.
type Item = (u64, u64, Vec<u8>, u64);

/// Sends a shard's bodies in order (so each series' samples arrive in order), one at a time.
async fn shard_worker(
    q: Arc<Queue>,
    flight: Arc<Flight>,
    mut rx: tokio::sync::mpsc::Receiver<Item>,
) {
    while let Some((round, epoch, body, samples)) = rx.recv().await {
        if flight.epoch.load(Ordering::Relaxed) == epoch {
            send_one(&q, &flight, epoch, body, samples).await;
        }
        if let Some(r) = flight.lock().iter_mut().find(|r| r.0 == round) {
            r.2 = r.2.saturating_sub(1);
        }
        flight.done.notify_one();
    }
}

/// Runs a queue until the process ends. `on_move` is called after each persisted position
/// change (the wiring moves the WAL hold).
///
/// The reader reads and encodes rounds while earlier ones are in flight: each shard has a
/// worker sending its bodies in order, and the position moves past a round once every body
/// of it and of the rounds before it is acknowledged.
pub async fn run(q: Arc<Queue>, feed: WalFeed, on_move: Arc<dyn Fn() + Send + Sync>) {
    let mut pos = match q.position() {
        Some(p) => p,
        None => {
            let (segment, offset) = feed.tip();
            q.start_at(Position { segment, offset });
            Position { segment, offset }
        }
    };
    on_move();
    q.counters.caught_up_ms.store(now_ms(), Ordering::Relaxed);
    let flight = Arc::new(Flight::default());
    let workers: Vec<tokio::sync::mpsc::Sender<Item>> = (0..q.opts.shards)
        .map(|_| {
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            tokio::spawn(shard_worker(q.clone(), flight.clone(), rx));
            tx
        })
        .collect();
    let mut labels = LabelCache::default();
    let mut scratch = Scratch::default();
    let capacity = q.opts.shards * q.opts.max_samples_per_send;
    let mut pending = WalRead::default();
    let mut read_to = pos;
    let mut first_read: Option<Instant> = None;
    let mut persisted_at = Instant::now();
    let mut draining = false;
    let mut next_round = 0u64;
    loop {
        settle(&q, &flight, &mut pos, &mut persisted_at, &on_move);
        // Past the byte cap: abandon what is in flight, drop (and count) the oldest
        // segments, read the rest again.
        let cap_pos = enforce_cap(&q, &feed, pos).await;
        if cap_pos != pos {
            flight.epoch.fetch_add(1, Ordering::Relaxed);
            flight.lock().clear();
            pending = WalRead::default();
            first_read = None;
            read_to = cap_pos;
            pos = cap_pos;
            q.set(pos);
        }
        let (rounds, in_flight) = flight.in_flight();
        let want = capacity.saturating_sub(pending.samples());
        let (f, from) = (feed.clone(), read_to);
        let got = tokio::task::spawn_blocking(move || tail::read(&f, from, want)).await;
        let (more, to) = match got {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::warn!(remote = %q.opts.name, error = %e, "remote_write: cannot read the WAL; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => {
                tracing::error!(remote = %q.opts.name, "remote_write: the WAL reader panicked; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if more.missing_segments > 0 {
            tracing::warn!(remote = %q.opts.name, segments = more.missing_segments,
                "remote_write: WAL segments were gone before the queue sent them");
        }
        if more.samples() > 0 && first_read.is_none() {
            first_read = Some(Instant::now());
        }
        pending.points.extend(more.points);
        pending.labelled.extend(more.labelled);
        read_to = to;
        q.counters
            .pending
            .store(pending.samples() as u64 + in_flight, Ordering::Relaxed);
        let at_tip = {
            let (s, o) = feed.tip();
            read_to
                == Position {
                    segment: s,
                    offset: o,
                }
        };
        // A partial batch goes when its deadline passes, or at once when it is the tail of
        // a backlog (the round before was full): a queue catching up does not wait.
        let due = first_read.is_some_and(|t| t.elapsed() >= q.opts.batch_send_deadline)
            || (draining && at_tip);
        if pending.samples() >= capacity || (pending.samples() > 0 && due) {
            let batch = std::mem::take(&mut pending);
            draining = batch.samples() >= capacity;
            first_read = None;
            let bodies = encode_shards(&q.opts, &feed, &mut labels, &mut scratch, batch);
            let round = next_round;
            next_round += 1;
            let total: u64 = bodies.iter().map(|b| b.2).sum();
            flight
                .lock()
                .push_back((round, read_to, bodies.len(), total));
            let epoch = flight.epoch.load(Ordering::Relaxed);
            'bodies: for (shard, body, n) in bodies {
                // Waits while the shard's worker is busy (its channel holds two bodies);
                // while it waits long (a receiver down), the rounds acknowledged before are
                // still persisted (a crash in an outage resends none of them) and the byte
                // cap is watched.
                let mut waited = 0u32;
                loop {
                    match tokio::time::timeout(Duration::from_millis(250), workers[shard].reserve())
                        .await
                    {
                        Ok(Ok(permit)) => {
                            permit.send((round, epoch, body, n));
                            break;
                        }
                        Ok(Err(_)) => break 'bodies,
                        Err(_) => {
                            settle(&q, &flight, &mut pos, &mut persisted_at, &on_move);
                            waited += 1;
                        }
                    }
                    // Every 5 s of waiting: past the byte cap, abandon what is in flight.
                    if waited > 0 && waited.is_multiple_of(20) && over_cap(&q, &feed, pos).await {
                        tracing::warn!(remote = %q.opts.name,
                            "remote_write: the receiver is unreachable and the WAL byte cap is reached; abandoning what is in flight");
                        flight.epoch.fetch_add(1, Ordering::Relaxed);
                        flight.lock().clear();
                        read_to = pos;
                        break 'bodies;
                    }
                }
            }
        } else if pending.samples() == 0 && read_to != pos && rounds == 0 {
            // Records without samples (series definitions): nothing to send, move on.
            pos = read_to;
            q.set(pos);
        }
        let (rounds, _) = flight.in_flight();
        if pending.samples() == 0 && at_tip && rounds == 0 {
            q.counters.caught_up_ms.store(now_ms(), Ordering::Relaxed);
        }
        if at_tip {
            tokio::select! {
                _ = flight.done.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
}

/// Moves `pos` past the rounds acknowledged wholly, and persists it at most once a second
/// (a clean shutdown persists it too, see `Forwarders::shutdown`); the WAL hold follows it.
fn settle(
    q: &Queue,
    flight: &Flight,
    pos: &mut Position,
    persisted_at: &mut Instant,
    on_move: &Arc<dyn Fn() + Send + Sync>,
) {
    if let Some(p) = flight.finished() {
        *pos = p;
        q.set(p);
    }
    if persisted_at.elapsed() >= Duration::from_secs(1) {
        *persisted_at = Instant::now();
        if q.persist() {
            on_move();
        }
    }
}

/// Whether the segments from `pos` on that only this queue holds exceed its byte cap.
async fn over_cap(q: &Queue, feed: &WalFeed, pos: Position) -> bool {
    if pos.segment >= feed.checkpointed() {
        return false;
    }
    let (f, cap) = (feed.clone(), q.opts.max_wal_bytes);
    tokio::task::spawn_blocking(move || tail::over_cap(&f, pos.segment, cap))
        .await
        .unwrap_or(false)
}

/// Moves `pos` past segments beyond the byte cap (their samples counted as dropped).
async fn enforce_cap(q: &Queue, feed: &WalFeed, pos: Position) -> Position {
    // The common case, a queue within the segments storage still needs, costs no I/O.
    if pos.segment >= feed.checkpointed() {
        return pos;
    }
    let (f, cap) = (feed.clone(), q.opts.max_wal_bytes);
    let res = tokio::task::spawn_blocking(move || {
        crate::durable::feed::skip_over_cap(&f, pos, cap, tail::count_rest)
    })
    .await;
    match res {
        Ok((p, dropped)) => {
            if p != pos {
                tracing::warn!(remote = %q.opts.name, segments = p.segment - pos.segment, dropped, max_wal_bytes = cap,
                    "remote_write: the queue is behind by more than its WAL byte cap; its oldest segments were dropped");
            }
            q.counters.dropped.fetch_add(dropped, Ordering::Relaxed);
            p
        }
        Err(_) => pos,
    }
}

/// Sends one body until it is acknowledged, refused for good, or abandoned (the byte cap
/// moved the epoch on).
async fn send_one(q: &Queue, flight: &Flight, epoch: u64, body: Vec<u8>, samples: u64) {
    let mut backoff = q.opts.min_backoff;
    loop {
        let mut req = q
            .opts
            .client
            .post(&q.opts.url)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body.clone());
        if let Some(a) = &q.opts.authorization {
            req = req.header("Authorization", a);
        }
        let (retry, why) = match req.send().await {
            Ok(r) if r.status().is_success() => {
                q.counters.sent.fetch_add(samples, Ordering::Relaxed);
                q.counters
                    .bytes
                    .fetch_add(body.len() as u64, Ordering::Relaxed);
                return;
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let text: String = text.chars().take(300).collect();
                let retry = status.is_server_error() || status.as_u16() == 429;
                (retry, format!("{status}: {}", text.trim()))
            }
            Err(e) => (true, e.to_string()),
        };
        if !retry {
            tracing::error!(remote = %q.opts.name, samples, error = %why,
                "remote_write: the receiver refused a request; its samples are not sent");
            q.counters.failed.fetch_add(samples, Ordering::Relaxed);
            return;
        }
        q.counters.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(remote = %q.opts.name, error = %why, ?backoff, "remote_write: retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(q.opts.max_backoff);
        if flight.epoch.load(Ordering::Relaxed) != epoch {
            return;
        }
    }
}

/// Snappy-compressed `WriteRequest`s, one per shard with samples: `(shard, body, samples)`.
fn encode_shards(
    opts: &RemoteWriteOptions,
    feed: &WalFeed,
    labels: &mut LabelCache,
    scratch: &mut Scratch,
    batch: WalRead,
) -> Vec<(usize, Vec<u8>, u64)> {
    if labels.len() > 1_000_000 {
        labels.clear();
    }
    // Series by id, each one's samples in WAL order (the sort is stable; the WAL's records
    // are runs of series, which it merges), then the samples of a series are one slice.
    let mut points = batch.points;
    points.sort_by_key(|p| p.0);
    let Scratch {
        snappy,
        raw,
        ids,
        samples,
    } = scratch;
    ids.clear();
    samples.clear();
    for (id, s) in points {
        ids.push(id);
        samples.push(s);
    }
    let mut shards: Vec<Vec<Encoded<'_>>> = vec![Vec::new(); opts.shards];
    let mut i = 0;
    while i < ids.len() {
        let id = ids[i];
        let end = i + ids[i..].iter().take_while(|&&x| x == id).count();
        let enc = labels
            .entry(id)
            .or_insert_with(|| {
                feed.labels(id)
                    .and_then(|l| encode_labels(opts, &l))
                    .map(Arc::from)
            })
            .clone();
        if let Some(enc) = enc {
            shards[id as usize % opts.shards].push((enc, &samples[i..end]));
        }
        i = end;
    }
    for (l, samples) in &batch.labelled {
        if let Some(enc) = encode_labels(opts, l) {
            shards[0].push((Arc::from(enc), samples));
        }
    }
    shards
        .into_iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .map(|(shard, series)| {
            let n: usize = series.iter().map(|(_, s)| s.len()).sum();
            encode_request(&series, raw);
            let body = snappy.compress_vec(raw).unwrap_or_default();
            (shard, body, n as u64)
        })
        .collect()
}

/// What encoding a round needs and the next round uses again: the snappy encoder (its hash
/// table), the request buffer, and the round's series ids and samples. Reused because each
/// is larger than the allocator's mmap threshold (`serve/memory.rs`): allocated anew, every
/// round paid for mapping, zeroing and unmapping them (page faults were a tenth of a
/// forward-only aggregator's profile).
struct Scratch {
    snappy: snap::raw::Encoder,
    raw: Vec<u8>,
    ids: Vec<u32>,
    samples: Vec<Sample>,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            snappy: snap::raw::Encoder::new(),
            raw: Vec::new(),
            ids: Vec::new(),
            samples: Vec::new(),
        }
    }
}

/// A series' labels after relabelling, as `TimeSeries.labels` fields (sorted by name, as
/// receivers require); `None` when relabelling drops it.
fn encode_labels(opts: &RemoteWriteOptions, l: &Labels) -> Option<Vec<u8>> {
    let l = telltale_common::relabel::apply(&opts.relabel, l)?;
    let mut pairs: Vec<(&str, &str)> = l.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    for (k, v) in pairs {
        let mut label = Vec::with_capacity(k.len() + v.len() + 4);
        put_bytes(&mut label, 1, k.as_bytes());
        put_bytes(&mut label, 2, v.as_bytes());
        put_bytes(&mut out, 1, &label);
    }
    Some(out)
}

/// `WriteRequest { repeated TimeSeries timeseries = 1 }` from encoded labels and samples
/// (`Sample { double value = 1; int64 timestamp = 2 }`), into `out` (cleared first). Each
/// `TimeSeries` is written in place: its length is known before its bytes.
fn encode_request(series: &[Encoded<'_>], out: &mut Vec<u8>) {
    out.clear();
    let sample_len = |s: &Sample| 10 + varint_len(s.0 as u64);
    let ts_len = |(labels, samples): &Encoded<'_>| {
        labels.len()
            + samples
                .iter()
                .map(|s| 1 + varint_len(sample_len(s) as u64) + sample_len(s))
                .sum::<usize>()
    };
    out.reserve(
        series
            .iter()
            .map(|e| {
                let n = ts_len(e);
                1 + varint_len(n as u64) + n
            })
            .sum(),
    );
    let mut v = [0u8; 10];
    for e in series {
        let (labels, samples) = e;
        out.push(1 << 3 | 2);
        let n = varint_into(&mut v, ts_len(e) as u64);
        out.extend_from_slice(&v[..n]);
        out.extend_from_slice(labels);
        for s in samples.iter() {
            let mut sample = [0u8; 22];
            sample[0] = 2 << 3 | 2;
            sample[2] = 0x09;
            sample[3..11].copy_from_slice(&s.1.to_bits().to_le_bytes());
            sample[11] = 0x10;
            let n = varint_into(&mut sample[12..], s.0 as u64);
            // Sample lengths are 11 to 20 bytes: one varint byte.
            sample[1] = (10 + n) as u8;
            out.extend_from_slice(&sample[..12 + n]);
        }
    }
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_bytes(out: &mut Vec<u8>, field: u8, b: &[u8]) {
    out.push(field << 3 | 2);
    let mut v = [0u8; 10];
    let n = varint_into(&mut v, b.len() as u64);
    out.extend_from_slice(&v[..n]);
    out.extend_from_slice(b);
}

fn varint_into(out: &mut [u8], mut v: u64) -> usize {
    let mut i = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[i] = byte;
            return i + 1;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The hand-written encoder writes what the receiver's protobuf decoder reads back:
        /// labels sorted, samples bit for bit (negative timestamps and NaNs too).
        #[test]
        fn requests_decode_as_sent(
            series in proptest::collection::vec(
                (
                    proptest::collection::btree_map("[a-z_]{1,8}", "\\PC{0,12}", 0..5),
                    proptest::collection::vec((proptest::num::i64::ANY, proptest::num::u64::ANY), 1..6),
                ),
                1..6,
            ),
        ) {
            let opts = super::super::options::validate(
                std::path::Path::new("t"),
                &[toml::from_str("url = \"http://a/w\"").unwrap()],
            ).unwrap().remove(0);
            let mut input = Vec::new();
            for (i, (l, s)) in series.iter().enumerate() {
                let mut pairs: Vec<(String, String)> = l.clone().into_iter().collect();
                pairs.push(("__name__".into(), format!("m{i}")));
                let labels = Labels::from_pairs(pairs);
                let enc: Arc<[u8]> = encode_labels(&opts, &labels).unwrap().into();
                let samples: Vec<Sample> = s.iter().map(|(t, v)| Sample(*t, f64::from_bits(*v))).collect();
                input.push((labels, enc, samples));
            }
            let enc: Vec<Encoded<'_>> = input.iter().map(|(_, e, s)| (e.clone(), s.as_slice())).collect();
            let mut raw = Vec::new();
            encode_request(&enc, &mut raw);
            let back: crate::metrics::remote_write::WriteRequest = prost::Message::decode(raw.as_slice()).unwrap();
            proptest::prop_assert_eq!(back.timeseries.len(), input.len());
            for (ts, (labels, _, samples)) in back.timeseries.iter().zip(&input) {
                let got: Vec<(String, String)> = ts.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
                let mut want: Vec<(String, String)> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                want.sort();
                proptest::prop_assert_eq!(got, want);
                let got: Vec<(i64, u64)> = ts.samples.iter().map(|s| (s.timestamp, s.value.to_bits())).collect();
                let want: Vec<(i64, u64)> = samples.iter().map(|s| (s.0, s.1.to_bits())).collect();
                proptest::prop_assert_eq!(got, want);
            }
        }
    }
}
