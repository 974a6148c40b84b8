//! The trace engine behind [`super::store`]: the log engine's durability contract, on the
//! same shared code ([`crate::durable`]), with tail sampling between the WAL and the head.
//!
//! ```text
//! DATA_DIR/traces/wal/NNNNNNNNNNNNNNNNNNNN.seg   appends, framed, group-committed (fdatasync)
//! DATA_DIR/traces/blocks/NNNNNNNN.tblk           immutable blocks of kept traces (block.rs)
//! DATA_DIR/traces/checkpoint                     WAL segment the blocks cover + stored batches
//! DATA_DIR/traces/quarantine/                    blocks that did not open
//! ```
//!
//! One writer thread takes appends in groups: it refuses replays of agent batches already
//! stored, writes the group to the WAL and syncs it, offers the spans to the sampler, then
//! answers — an acknowledged span is on disk, whatever the sampler decides later. Every
//! second (and after each group) the sampler's due decisions are applied: kept traces join
//! the head, dropped ones are counted. When the head holds `head_max_bytes` or is
//! `head_max_age` old, the writer rolls the WAL, writes the spans still waiting for their
//! decision into the new segment (so deleting the old segments loses none of them), cuts
//! the head into a block, checkpoints and deletes the segments the block covers. Start-up
//! loads the blocks (a damaged one is quarantined and counted), replays the WAL from the
//! checkpoint through the sampler (damaged records skipped and counted, a torn tail cut off);
//! a decision depends only on the trace's spans and id, so replayed traces are decided as
//! before. A maintenance thread applies retention by age and bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as smpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use telltale_common::codec;
use telltale_common::trace::{Span, TraceId};
use tokio::sync::oneshot;

use super::block::{self, Block};
use super::sample::{Reason, Sampler, SamplingOptions};
use super::store::{BoxFuture, SpanAppend, SpanAppender, SpanOutcome, TraceStoreError};
use crate::durable::blockstore::{self, Checkpoint, PathError};
use crate::durable::dedup::Dedup;
use crate::durable::feed::{StoreFeed, WalHold};
use crate::durable::segments::Writer;

/// Largest WAL record read back.
const MAX_RECORD: u32 = 256 << 20;

/// Settings (`[traces]` in aggregator.toml).
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// Traces whose last span ended longer ago are deleted (whole blocks).
    pub retention: Duration,
    /// The blocks' total size is kept under this (oldest blocks deleted first).
    pub max_bytes: u64,
    /// The head is cut into a block once its spans take about this many bytes.
    pub head_max_bytes: u64,
    /// ... or once its first span arrived this long ago.
    pub head_max_age: Duration,
    /// Tail sampling.
    pub sampling: SamplingOptions,
    /// How often the service graph series are written (and correlation learns the topology).
    pub graph_interval: Duration,
    /// Write the spans that join the store after the sampler's decision into the WAL again
    /// (as `kept` records), for the WAL's readers (the ClickHouse exporter).
    pub kept_records: bool,
    /// Segments from this one on are kept for the WAL's readers.
    pub wal_hold: WalHold,
    /// The pool this aggregator samples traces in (`[traces.pool]`): spans of agent batches
    /// whose trace another member owns are written as foreign, for the pool forwarder, and
    /// never sampled here.
    pub pool: Option<std::sync::Arc<super::pool::Owners>>,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            retention: Duration::from_secs(7 * 86_400),
            max_bytes: 10 << 30,
            head_max_bytes: 64 << 20,
            head_max_age: Duration::from_secs(10 * 60),
            sampling: SamplingOptions::default(),
            graph_interval: Duration::from_secs(15),
            kept_records: false,
            wal_hold: WalHold::default(),
            pool: None,
        }
    }
}

/// The engine's counters (`telltale_aggregator_traces_*`).
#[derive(Debug, Default)]
pub struct TraceCounters {
    /// Spans received (written to the WAL).
    pub spans_received: AtomicU64,
    /// Spans of kept traces (into the head).
    pub spans_kept: AtomicU64,
    /// Spans of dropped traces.
    pub spans_dropped: AtomicU64,
    /// Decisions by reason: error, slow, sampled, dropped.
    pub decisions: [AtomicU64; 4],
    /// Decisions made before the wait was over, for lack of room.
    pub early_decisions: AtomicU64,
    /// Appends answered as duplicates.
    pub duplicates: AtomicU64,
    /// WAL records skipped as damaged at start-up.
    pub corrupt_records: AtomicU64,
    /// Blocks moved to quarantine at start-up.
    pub quarantined_blocks: AtomicU64,
    /// Blocks written.
    pub blocks_written: AtomicU64,
    /// Blocks deleted by retention.
    pub expired_blocks: AtomicU64,
    /// Failed WAL or block writes.
    pub write_errors: AtomicU64,
    /// Spans of agent batches whose trace another member of the pool samples.
    pub spans_foreign: AtomicU64,
}

#[derive(Debug, Serialize, Deserialize)]
struct WalRecord {
    agent: Option<String>,
    epoch: u64,
    sequence: u64,
    spans: Vec<Span>,
    /// Spans waiting for their decision, written again into a new segment at a cut.
    #[serde(default)]
    carried: bool,
    /// The service-graph matcher's state at a cut (with the carried spans), restored on
    /// replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    graph: Option<super::graph::Memory>,
    /// Spans that joined the store after the sampler's decision, written for the WAL's
    /// readers (`kept_records`); replay skips them (the sampler decides again).
    #[serde(default, skip_serializing_if = "is_false")]
    kept: bool,
    /// Written while every trace is kept: these spans joined the store as they came.
    #[serde(default, skip_serializing_if = "is_false")]
    all_kept: bool,
    /// Spans of the batch whose trace another member of the pool samples: durable here, sent
    /// on by the pool forwarder, never offered to this store's sampler.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    foreign: Vec<Span>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The spans of a trace WAL record that joined the store (as [`crate::durable::feed`] hands
/// its payload to the WAL's readers): those of a `kept` record, or of a record written while
/// every trace was kept (not the carried copies of spans still waiting); empty for the rest.
/// Damage is an error, never a panic.
pub fn decode_stored_spans(payload: &[u8]) -> Result<Vec<Span>, codec::CodecError> {
    let r: WalRecord = codec::decode_payload(payload)?;
    Ok(if r.kept || (r.all_kept && !r.carried) {
        r.spans
    } else {
        Vec::new()
    })
}

/// The foreign spans of a trace WAL record (what the pool forwarder sends on). Damage is an
/// error, never a panic.
pub fn decode_foreign_spans(payload: &[u8]) -> Result<Vec<Span>, codec::CodecError> {
    let r: WalRecord = codec::decode_payload(payload)?;
    Ok(r.foreign)
}

impl blockstore::Record for WalRecord {
    fn origin(&self) -> Option<(&str, u64, u64)> {
        self.agent
            .as_deref()
            .map(|a| (a, self.epoch, self.sequence))
    }
}

/// Kept traces not yet in a block.
#[derive(Default)]
struct Head {
    traces: HashMap<TraceId, Vec<Span>>,
    edges: super::graph::Edges,
    operations: BTreeMap<String, BTreeSet<(String, i32)>>,
    bytes: u64,
    since: Option<Instant>,
}

/// About what a span takes in memory and (before compression) on disk.
fn span_bytes(s: &Span) -> u64 {
    let pairs =
        |p: &[(String, String)]| p.iter().map(|(k, v)| k.len() + v.len() + 48).sum::<usize>();
    (200 + s.service.len() + s.name.len() + pairs(&s.attributes) + pairs(&s.resource)) as u64
        + s.events
            .iter()
            .map(|e| 64 + pairs(&e.attributes) as u64)
            .sum::<u64>()
}

impl Head {
    fn add(&mut self, spans: Vec<Span>) {
        if spans.is_empty() {
            return;
        }
        if self.since.is_none() {
            self.since = Some(Instant::now());
        }
        for s in spans {
            self.bytes += span_bytes(&s);
            let ops = self.operations.entry(s.service.clone()).or_default();
            if !ops.contains(&(s.name.clone(), s.kind as i32)) {
                ops.insert((s.name.clone(), s.kind as i32));
            }
            self.traces.entry(s.trace_id).or_default().push(s);
        }
    }
}

struct Inner {
    dir: PathBuf,
    opts: TraceOptions,
    head: RwLock<Head>,
    /// Calls between services from every span received (before sampling); only the writer
    /// thread changes it.
    graph: Mutex<super::graph::Graph>,
    sampler: Mutex<Sampler>,
    blocks: RwLock<Vec<Arc<Block>>>,
    dedup: Mutex<Dedup>,
    next_block: AtomicU64,
    counters: TraceCounters,
    feed: StoreFeed,
    /// Spans a `kept` record replayed at start-up already carries (so deciding their trace
    /// again does not write them twice); emptied at the next cut.
    replayed_kept: Mutex<std::collections::HashSet<(TraceId, telltale_common::trace::SpanId)>>,
}

type Done = oneshot::Sender<Result<SpanOutcome, TraceStoreError>>;
type CutDone = oneshot::Sender<Result<(), TraceStoreError>>;
/// What one writer round took: appends to write, cuts and decisions asked for.
type Gathered = (
    Vec<(WalRecord, Done)>,
    Vec<CutDone>,
    Vec<(Instant, oneshot::Sender<()>)>,
);

enum Job {
    Append {
        record: WalRecord,
        done: Done,
    },
    Cut {
        done: oneshot::Sender<Result<(), TraceStoreError>>,
    },
    Decide {
        now: Instant,
        done: oneshot::Sender<()>,
    },
}

/// The engine.
pub struct TraceEngine {
    inner: Arc<Inner>,
    tx: Mutex<smpsc::Sender<Job>>,
}

fn open_err(e: PathError) -> TraceStoreError {
    TraceStoreError::Open {
        dir: e.path.display().to_string(),
        source: e.source,
    }
}

impl TraceEngine {
    /// Opens (or creates) the store in `dir` and starts its writer and maintenance threads.
    pub fn open(dir: &Path, opts: TraceOptions) -> Result<TraceEngine, TraceStoreError> {
        blockstore::create_dirs(dir).map_err(open_err)?;
        let counters = TraceCounters::default();
        let (blocks, next_block) = blockstore::load_blocks(
            dir,
            "tblk",
            "trace",
            Block::open,
            &counters.quarantined_blocks,
        )
        .map_err(open_err)?;
        let cp = blockstore::resume(dir, &blocks).map_err(open_err)?;
        let mut dedup = Dedup::from_list(cp.dedup.clone());
        let mut sampler = Sampler::new(opts.sampling.clone());
        let mut head = Head::default();
        let mut graph = super::graph::Graph::default();
        let now = Instant::now();
        let mut replayed_kept = std::collections::HashSet::new();
        let writer = blockstore::replay(
            dir,
            &cp,
            MAX_RECORD,
            "trace",
            &mut dedup,
            &counters.corrupt_records,
            |r: WalRecord| {
                if r.kept {
                    replayed_kept.extend(r.spans.iter().map(|s| (s.trace_id, s.span_id)));
                    return;
                }
                counters
                    .spans_received
                    .fetch_add(r.spans.len() as u64, Ordering::Relaxed);
                if let Some(m) = r.graph {
                    graph = super::graph::Graph::restore(m);
                }
                // Carried spans' calls were counted before the cut.
                if !r.carried {
                    for s in &r.spans {
                        graph.observe(s, &mut head.edges);
                    }
                }
                let o = sampler.offer(r.spans, now);
                note_offer(&counters, &o);
                head.add(o.kept);
            },
        )
        .map_err(open_err)?;
        let _ = blockstore::delete_covered(dir, cp.wal_segment.min(opts.wal_hold.get()));
        let feed = StoreFeed::new(dir.join("wal"), opts.wal_hold.clone());
        feed.publish_tip(writer.segment(), 0);
        feed.publish_checkpoint(cp.wal_segment);
        let inner = Arc::new(Inner {
            feed,
            replayed_kept: Mutex::new(replayed_kept),
            dir: dir.to_path_buf(),
            opts,
            head: RwLock::new(head),
            graph: Mutex::new(graph),
            sampler: Mutex::new(sampler),
            blocks: RwLock::new(blocks),
            dedup: Mutex::new(dedup),
            next_block: AtomicU64::new(next_block),
            counters,
        });
        let tx = blockstore::start_threads(dir, "traces", &inner, writer_loop, writer, retention)
            .map_err(open_err)?;
        Ok(TraceEngine {
            inner,
            tx: Mutex::new(tx),
        })
    }

    /// What the WAL's readers need (the ClickHouse exporter).
    pub fn feed(&self) -> StoreFeed {
        self.inner.feed.clone()
    }

    /// The counters.
    pub fn counters(&self) -> &TraceCounters {
        &self.inner.counters
    }

    /// Cuts the head into a block now (tests and benchmarks).
    pub async fn flush(&self) -> Result<(), TraceStoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Job::Cut { done })?;
        rx.await.map_err(|_| TraceStoreError::Closed)?
    }

    /// Applies the sampler's decisions due at `now` (tests move time; the writer uses the
    /// clock every second).
    pub async fn decide(&self, now: Instant) -> Result<(), TraceStoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Job::Decide { now, done })?;
        rx.await.map_err(|_| TraceStoreError::Closed)
    }

    /// Applies retention as of `now_ns`.
    pub fn apply_retention(&self, now_ns: i64) {
        retention(&self.inner, now_ns);
    }

    /// Blocks and their bytes.
    pub fn stats(&self) -> (usize, u64) {
        let b = self.inner.blocks.read().unwrap_or_else(|e| e.into_inner());
        (b.len(), b.iter().map(|b| b.bytes).sum())
    }

    fn send(&self, job: Job) -> Result<(), TraceStoreError> {
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(job)
            .map_err(|_| TraceStoreError::Closed)
    }
}

fn note_offer(c: &TraceCounters, o: &super::sample::Offered) {
    c.spans_kept
        .fetch_add(o.kept.len() as u64, Ordering::Relaxed);
    c.spans_dropped
        .fetch_add(o.dropped as u64, Ordering::Relaxed);
}

/// Stamps an append: spans of an agent batch carry `instance` = the agent in their resource;
/// in a pool, those whose trace another member owns are set apart as foreign. (Spans from
/// elsewhere — the pool's members — are this member's by construction and stay.)
fn prepare(req: SpanAppend, pool: Option<&super::pool::Owners>) -> WalRecord {
    let agent = req.origin.as_ref().map(|o| o.agent.clone());
    let mut spans = req.spans;
    let mut foreign = Vec::new();
    if let Some(a) = &agent {
        for s in &mut spans {
            s.resource.retain(|(k, _)| k != "instance");
            s.resource.push(("instance".into(), a.clone()));
        }
        if let Some(p) = pool {
            (spans, foreign) = spans.into_iter().partition(|s| p.is_ours(&s.trace_id));
        }
    }
    let (epoch, sequence) = req.origin.map(|o| (o.epoch, o.sequence)).unwrap_or((0, 0));
    WalRecord {
        agent,
        epoch,
        sequence,
        spans,
        carried: false,
        graph: None,
        kept: false,
        all_kept: false,
        foreign,
    }
}

impl SpanAppender for TraceEngine {
    fn append(&self, req: SpanAppend) -> BoxFuture<'_, Result<SpanOutcome, TraceStoreError>> {
        Box::pin(async move {
            let record = prepare(req, self.inner.opts.pool.as_deref());
            let (done, rx) = oneshot::channel();
            self.send(Job::Append { record, done })?;
            rx.await.map_err(|_| TraceStoreError::Closed)?
        })
    }
}

/// Applies the decisions due at `now`; adds the spans that joined the store to `kept` when
/// `kept_records` is on.
fn decide(inner: &Inner, now: Instant, kept: &mut Vec<Span>) {
    let decisions = inner
        .sampler
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .due(now);
    if decisions.is_empty() {
        return;
    }
    let c = &inner.counters;
    let mut head = inner.head.write().unwrap_or_else(|e| e.into_inner());
    for d in decisions {
        let slot = match d.reason {
            Reason::Error => 0,
            Reason::Slow => 1,
            Reason::Sampled => 2,
            Reason::Dropped => 3,
        };
        c.decisions[slot].fetch_add(1, Ordering::Relaxed);
        if d.early {
            c.early_decisions.fetch_add(1, Ordering::Relaxed);
        }
        let n = d.spans.len() as u64;
        if d.reason.kept() {
            c.spans_kept.fetch_add(n, Ordering::Relaxed);
            if inner.opts.kept_records {
                kept.extend(d.spans.iter().cloned());
            }
            head.add(d.spans);
        } else {
            c.spans_dropped.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Splits queued jobs: cuts and decision requests apart, appends that are not replays
/// encoded into one WAL group.
fn gather(inner: &Inner, jobs: Vec<Job>, buf: &mut Vec<u8>) -> Gathered {
    let (mut appends, mut cuts, mut decides) = (Vec::new(), Vec::new(), Vec::new());
    for j in jobs {
        match j {
            Job::Cut { done } => cuts.push(done),
            Job::Decide { now, done } => decides.push((now, done)),
            Job::Append { record, done } => appends.push((record, done)),
        }
    }
    let all_kept = inner.opts.sampling.keeps_all();
    for (r, _) in appends.iter_mut() {
        r.all_kept = all_kept;
    }
    let group = blockstore::group(
        &inner.dedup.lock().unwrap_or_else(|e| e.into_inner()),
        appends,
        buf,
        |done| {
            inner.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            let _ = done.send(Ok(SpanOutcome::Duplicate));
        },
        |done, e| {
            let _ = done.send(Err(TraceStoreError::Write(std::io::Error::other(e))));
        },
    );
    (group, cuts, decides)
}

fn writer_loop(inner: &Inner, mut w: Writer, rx: &smpsc::Receiver<Job>) {
    // Spans that joined the store and wait to be written as a `kept` record.
    let mut kept: Vec<Span> = Vec::new();
    while let Some(jobs) = blockstore::take_jobs(rx) {
        let mut buf = Vec::new();
        let (group, cuts, decides) = gather(inner, jobs, &mut buf);
        if !group.is_empty() {
            match w.write_group(&buf) {
                Ok(()) => {
                    inner.feed.publish_tip(w.segment(), w.synced_len());
                    let now = Instant::now();
                    let mut dedup = inner.dedup.lock().unwrap_or_else(|e| e.into_inner());
                    let mut sampler = inner.sampler.lock().unwrap_or_else(|e| e.into_inner());
                    let mut head = inner.head.write().unwrap_or_else(|e| e.into_inner());
                    let mut graph = inner.graph.lock().unwrap_or_else(|e| e.into_inner());
                    for (r, done) in group {
                        if let Some(a) = &r.agent {
                            dedup.mark(a, r.epoch, r.sequence);
                        }
                        inner
                            .counters
                            .spans_foreign
                            .fetch_add(r.foreign.len() as u64, Ordering::Relaxed);
                        let spans = r.spans.len() + r.foreign.len();
                        inner
                            .counters
                            .spans_received
                            .fetch_add(spans as u64, Ordering::Relaxed);
                        for s in &r.spans {
                            graph.observe(s, &mut head.edges);
                        }
                        let o = sampler.offer(r.spans, now);
                        note_offer(&inner.counters, &o);
                        if inner.opts.kept_records && !r.all_kept {
                            // Late spans of a trace already kept.
                            kept.extend(o.kept.iter().cloned());
                        }
                        head.add(o.kept);
                        let _ = done.send(Ok(SpanOutcome::Stored { spans }));
                    }
                }
                Err(e) => {
                    inner.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "trace WAL write failed: the appends are refused");
                    for (_, done) in group {
                        let _ = done.send(Err(TraceStoreError::Write(std::io::Error::new(
                            e.kind(),
                            e.to_string(),
                        ))));
                    }
                }
            }
        }
        decide(inner, Instant::now(), &mut kept);
        let mut answers = Vec::with_capacity(decides.len());
        for (now, done) in decides {
            decide(inner, now, &mut kept);
            answers.push(done);
        }
        // Answered once what they decided is written for the WAL's readers.
        write_kept(inner, &mut w, &mut kept);
        for done in answers {
            let _ = done.send(());
        }
        let due = {
            let h = inner.head.read().unwrap_or_else(|e| e.into_inner());
            h.bytes >= inner.opts.head_max_bytes
                || h.since
                    .is_some_and(|s| s.elapsed() >= inner.opts.head_max_age)
        };
        if due || !cuts.is_empty() {
            let r = cut(inner, &mut w);
            if let Err(e) = &r {
                inner.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "cutting the trace head into a block failed: it stays in memory and in the WAL; retrying");
            }
            for done in cuts {
                let _ = done.send(match &r {
                    Ok(()) => Ok(()),
                    Err(e) => Err(TraceStoreError::Write(std::io::Error::other(e.to_string()))),
                });
            }
        }
    }
}

/// Writes the spans that joined the store since the last call as a `kept` record (but those a
/// replayed `kept` record carries already); kept for the next round if the write fails.
fn write_kept(inner: &Inner, w: &mut Writer, kept: &mut Vec<Span>) {
    if kept.is_empty() {
        return;
    }
    {
        let mut seen = inner
            .replayed_kept
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !seen.is_empty() {
            kept.retain(|s| !seen.remove(&(s.trace_id, s.span_id)));
        }
    }
    if kept.is_empty() {
        return;
    }
    let record = WalRecord {
        agent: None,
        epoch: 0,
        sequence: 0,
        spans: std::mem::take(kept),
        carried: false,
        graph: None,
        kept: true,
        all_kept: false,
        foreign: Vec::new(),
    };
    let mut buf = Vec::new();
    match codec::encode_payload(&record) {
        Ok(p) => codec::frame_into(&p, &mut buf),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode kept spans for the WAL's readers");
            return;
        }
    }
    match w.write_group(&buf) {
        Ok(()) => inner.feed.publish_tip(w.segment(), w.synced_len()),
        Err(e) => {
            inner.counters.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "writing kept spans for the WAL's readers failed; retrying");
            *kept = record.spans;
        }
    }
}

/// Rolls the WAL, carries the spans waiting for a decision into the new segment, writes the
/// head into a block and checkpoints past the segments it covers. On failure the head is kept
/// (still covered by the WAL).
fn cut(inner: &Inner, w: &mut Writer) -> Result<(), TraceStoreError> {
    let mut head = inner.head.write().unwrap_or_else(|e| e.into_inner());
    let io = |e: std::io::Error| TraceStoreError::Write(e);
    w.roll().map_err(io)?;
    inner.feed.publish_tip(w.segment(), 0);
    let wal_before = w.segment();
    inner
        .replayed_kept
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    {
        let sampler = inner.sampler.lock().unwrap_or_else(|e| e.into_inner());
        let graph = inner.graph.lock().unwrap_or_else(|e| e.into_inner());
        if sampler.pending_spans() > 0 || !graph.is_empty() {
            let carry = WalRecord {
                agent: None,
                epoch: 0,
                sequence: 0,
                spans: sampler.waiting().cloned().collect(),
                carried: true,
                graph: (!graph.is_empty()).then(|| graph.memory()),
                kept: false,
                all_kept: false,
                foreign: Vec::new(),
            };
            let p = codec::encode_payload(&carry)
                .map_err(|e| io(std::io::Error::other(e.to_string())))?;
            let mut buf = Vec::new();
            codec::frame_into(&p, &mut buf);
            w.write_group(&buf).map_err(io)?;
            inner.feed.publish_tip(w.segment(), w.synced_len());
        }
    }
    let dedup = inner
        .dedup
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .to_list();
    if !head.traces.is_empty() {
        let seq = inner.next_block.fetch_add(1, Ordering::Relaxed);
        let path = inner.dir.join("blocks").join(format!("{seq:08}.tblk"));
        let contents = block::Contents {
            traces: head
                .traces
                .iter()
                .map(|(id, s)| (*id, s.as_slice()))
                .collect(),
            wal_before,
            dedup: dedup.clone(),
            edges: head
                .edges
                .iter()
                .map(|((m, p, c), (n, e))| (*m, p.clone(), c.clone(), *n, *e))
                .collect(),
        };
        block::write(&path, contents)?;
        let b = Block::open(&path)?;
        inner
            .blocks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(b));
        inner
            .counters
            .blocks_written
            .fetch_add(1, Ordering::Relaxed);
    }
    *head = Head::default();
    drop(head);
    blockstore::write_checkpoint(
        &inner.dir,
        &Checkpoint {
            wal_segment: wal_before,
            dedup,
        },
        inner.opts.wal_hold.get(),
    )
    .map_err(io)?;
    inner.feed.publish_checkpoint(wal_before);
    Ok(())
}

/// Deletes blocks whose last span ended before the retention, then the oldest while the
/// blocks take more than `max_bytes`.
fn retention(inner: &Inner, now_ns: i64) {
    blockstore::retain(
        &inner.blocks,
        now_ns.saturating_sub(inner.opts.retention.as_nanos() as i64),
        inner.opts.max_bytes,
        "trace",
        &inner.counters.expired_blocks,
    );
}

mod query;

#[cfg(test)]
mod tests;
