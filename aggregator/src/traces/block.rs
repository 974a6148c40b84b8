//! Trace blocks: immutable files holding whole kept traces, with the index a query needs to
//! find a trace by id without reading others, and search rows by service.
//!
//! ```text
//! "TTTB" 1                 magic, format version
//! chunk*                   zstd frames of traces in trace-id order, about CHUNK_RAW_BYTES
//!                          each, in columns ([`chunk`])
//! rows*                    zstd frames, one per service: its spans' search rows (columns,
//!                          by start time)
//! index                    MessagePack [`BlockIndex`]
//! u32 index length, u32 CRC-32 of the index, "TTTB"
//! ```
//!
//! The index (kept in memory) holds the sorted trace ids (16 bytes a trace) and the first
//! trace of each chunk, so a trace by id is a binary search and one chunk decompressed; and
//! per service its operations, time range and where its rows are, so a search decompresses
//! the rows of one service only and the chunks of the traces that match.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use telltale_common::trace::{Span, TraceId};

use super::store::TraceStoreError;
use crate::durable::{blockfile, blockstore};

pub mod chunk;

const MAGIC: &[u8; 4] = b"TTTB";
const VERSION: u8 = 1;
/// Raw bytes of spans per chunk (before compression): one trace by id decompresses this.
pub const CHUNK_RAW_BYTES: usize = 256 << 10;
/// zstd level of chunks and rows: 6 took 3 % fewer bytes than 3 in the store bench (61.3
/// against 63.3 a span) for more CPU at the cut (README, "Traces ... next to ClickHouse").
const ZSTD_LEVEL: i32 = 6;

/// One service's spans in a block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceIndex {
    /// `service.name`.
    pub name: String,
    /// Its span names and kinds (OTLP numbers), sorted.
    pub operations: Vec<(String, i32)>,
    /// Earliest span start (ns).
    pub min_ns: u64,
    /// Latest span start (ns).
    pub max_ns: u64,
    /// Where its [`Rows`] frame is.
    pub offset: u64,
    /// Its length.
    pub len: u32,
}

/// A service's spans as search rows (columns, one entry per span).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Rows {
    /// The trace's ordinal in the block.
    pub trace: Vec<u32>,
    /// The span name's index in [`ServiceIndex::operations`].
    pub op: Vec<u32>,
    /// Start (ns).
    pub start_ns: Vec<u64>,
    /// Duration (ns).
    pub duration_ns: Vec<u64>,
    /// Whether the span failed.
    pub error: Vec<bool>,
}

impl Rows {
    /// The rows ordered by start (a search reads the newest first and stops early).
    fn by_start(self) -> Rows {
        let mut order: Vec<usize> = (0..self.trace.len()).collect();
        order.sort_by_key(|&i| self.start_ns[i]);
        Rows {
            trace: order.iter().map(|&i| self.trace[i]).collect(),
            op: order.iter().map(|&i| self.op[i]).collect(),
            start_ns: order.iter().map(|&i| self.start_ns[i]).collect(),
            duration_ns: order.iter().map(|&i| self.duration_ns[i]).collect(),
            error: order.iter().map(|&i| self.error[i]).collect(),
        }
    }
}

/// A block's index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockIndex {
    /// Earliest span start (ns).
    pub min_ns: u64,
    /// Latest span end (ns).
    pub max_ns: u64,
    /// Spans.
    pub spans: u64,
    /// Trace ids, sorted, 16 bytes each.
    #[serde(with = "serde_bytes")]
    pub ids: Vec<u8>,
    /// Each chunk's first trace ordinal.
    pub chunk_first: Vec<u32>,
    /// Each chunk's offset and length.
    pub chunks: Vec<(u64, u32)>,
    /// Services.
    pub services: Vec<ServiceIndex>,
    /// Calls between services: minute (of the child span's start), parent, child, calls,
    /// errors.
    pub edges: Vec<(u64, String, String, u64, u64)>,
    /// The first WAL segment not in this block (see the log blocks' field of that name).
    pub wal_before: u64,
    /// The agent batches stored up to that point.
    pub dedup: Vec<(String, u64, crate::durable::dedup::RangeSet)>,
}

impl BlockIndex {
    /// Traces in the block.
    pub fn traces(&self) -> usize {
        self.ids.len() / 16
    }

    /// The ordinal of trace `id`, if the block has it.
    pub fn find(&self, id: &TraceId) -> Option<u32> {
        let n = self.traces();
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.ids[mid * 16..mid * 16 + 16].cmp(&id[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid as u32),
            }
        }
        None
    }

    /// Trace id number `ord`.
    pub fn id(&self, ord: u32) -> Option<TraceId> {
        let i = ord as usize * 16;
        self.ids.get(i..i + 16)?.try_into().ok()
    }
}

/// An open block.
#[derive(Debug)]
pub struct Block {
    /// Its file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its index.
    pub index: BlockIndex,
    file: File,
}

fn corrupt(path: &Path, reason: impl Into<String>) -> TraceStoreError {
    TraceStoreError::Read {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TraceStoreError + '_ {
    move |e| corrupt(path, e.to_string())
}

/// What a block is made of: kept traces (any order) and where the WAL they cover ends.
pub struct Contents<'a> {
    /// The traces.
    pub traces: Vec<(TraceId, &'a [Span])>,
    /// See [`BlockIndex::wal_before`].
    pub wal_before: u64,
    /// See [`BlockIndex::dedup`].
    pub dedup: Vec<(String, u64, crate::durable::dedup::RangeSet)>,
    /// See [`BlockIndex::edges`].
    pub edges: Vec<(u64, String, String, u64, u64)>,
}

/// Writes a block to `path` (through a temporary file, synced, renamed, directory synced).
pub fn write(path: &Path, mut c: Contents<'_>) -> Result<u64, TraceStoreError> {
    c.traces.sort_by_key(|t| t.0);
    let mut buf = blockfile::start(MAGIC, VERSION, 1 << 20);
    let mut index = BlockIndex {
        min_ns: u64::MAX,
        max_ns: 0,
        spans: 0,
        ids: Vec::with_capacity(c.traces.len() * 16),
        chunk_first: Vec::new(),
        chunks: Vec::new(),
        services: Vec::new(),
        edges: c.edges,
        wal_before: c.wal_before,
        dedup: c.dedup,
    };
    let enc = |e: rmp_serde::encode::Error| corrupt(path, e.to_string());
    let mut chunk: Vec<&[Span]> = Vec::new();
    let mut raw = 0usize;
    let flush = |chunk: &mut Vec<&[Span]>, buf: &mut Vec<u8>, index: &mut BlockIndex| {
        if chunk.is_empty() {
            return Ok(());
        }
        let body = chunk::encode(chunk);
        let packed = zstd::bulk::compress(&body, ZSTD_LEVEL).map_err(io(path))?;
        index.chunks.push((buf.len() as u64, packed.len() as u32));
        buf.extend_from_slice(&packed);
        chunk.clear();
        Ok::<(), TraceStoreError>(())
    };
    // Per service: rows, operations, earliest and latest start.
    type Service = (Rows, Vec<(String, i32)>, u64, u64);
    let mut by_service: std::collections::BTreeMap<&str, Service> = Default::default();
    for (ord, (id, spans)) in c.traces.iter().enumerate() {
        if chunk.is_empty() {
            index.chunk_first.push(ord as u32);
        }
        index.ids.extend_from_slice(id);
        for s in spans.iter() {
            index.min_ns = index.min_ns.min(s.start_ns);
            index.max_ns = index.max_ns.max(s.end_ns);
            index.spans += 1;
            raw += 64 + s.name.len() + s.attributes.len() * 24;
            let e = by_service
                .entry(s.service.as_str())
                .or_insert_with(|| (Rows::default(), Vec::new(), u64::MAX, 0));
            let op = (s.name.clone(), s.kind as i32);
            let k = match e.1.iter().position(|o| *o == op) {
                Some(k) => k,
                None => {
                    e.1.push(op);
                    e.1.len() - 1
                }
            };
            e.0.trace.push(ord as u32);
            e.0.op.push(k as u32);
            e.0.start_ns.push(s.start_ns);
            e.0.duration_ns.push(s.duration_ns());
            e.0.error
                .push(s.status == telltale_common::trace::SpanStatus::Error);
            e.2 = e.2.min(s.start_ns);
            e.3 = e.3.max(s.start_ns);
        }
        chunk.push(spans);
        if raw >= CHUNK_RAW_BYTES {
            flush(&mut chunk, &mut buf, &mut index)?;
            raw = 0;
        }
    }
    flush(&mut chunk, &mut buf, &mut index)?;
    for (name, (rows, operations, min_ns, max_ns)) in by_service {
        let rows = rows.by_start();
        let body = rmp_serde::to_vec(&rows).map_err(enc)?;
        let packed = zstd::bulk::compress(&body, ZSTD_LEVEL).map_err(io(path))?;
        index.services.push(ServiceIndex {
            name: name.to_string(),
            operations,
            min_ns,
            max_ns,
            offset: buf.len() as u64,
            len: packed.len() as u32,
        });
        buf.extend_from_slice(&packed);
    }
    let idx = rmp_serde::to_vec(&index).map_err(enc)?;
    blockfile::finish(path, buf, &idx).map_err(io(path))
}

impl blockstore::StoredBlock for Block {
    fn newest_ns(&self) -> i64 {
        i64::try_from(self.index.max_ns).unwrap_or(i64::MAX)
    }
    fn bytes(&self) -> u64 {
        self.bytes
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn written_at(&self) -> (u64, &[(String, u64, crate::durable::dedup::RangeSet)]) {
        (self.index.wal_before, &self.index.dedup)
    }
}

impl Block {
    /// Opens a block and checks its index.
    pub fn open(path: &Path) -> Result<Block, TraceStoreError> {
        let blockfile::Opened {
            file,
            bytes,
            index: idx,
            data_end,
        } = blockfile::open(path, MAGIC, VERSION).map_err(|e| match e {
            blockfile::FileError::Io(e) => io(path)(e),
            blockfile::FileError::Corrupt(reason) => corrupt(path, reason),
        })?;
        let index: BlockIndex =
            rmp_serde::from_slice(&idx).map_err(|e| corrupt(path, e.to_string()))?;
        let beyond = |off: u64, len: u32| off.saturating_add(u64::from(len)) > data_end;
        if !index.ids.len().is_multiple_of(16)
            || index.chunks.len() != index.chunk_first.len()
            || index.chunks.iter().any(|&(o, l)| beyond(o, l))
            || index.services.iter().any(|s| beyond(s.offset, s.len))
            || index
                .chunk_first
                .iter()
                .any(|&f| f as usize >= index.traces().max(1))
        {
            return Err(corrupt(path, "index does not fit the file"));
        }
        Ok(Block {
            path: path.to_path_buf(),
            bytes,
            index,
            file,
        })
    }

    fn frame(&self, offset: u64, len: u32) -> Result<Vec<u8>, TraceStoreError> {
        let mut packed = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut packed, offset)
            .map_err(io(&self.path))?;
        zstd::stream::decode_all(&packed[..]).map_err(io(&self.path))
    }

    /// Traces of chunk `c` by position (all when `want` is `None`).
    fn chunk(
        &self,
        c: usize,
        want: Option<&[usize]>,
    ) -> Result<Vec<(usize, Vec<Span>)>, TraceStoreError> {
        let &(off, len) = self
            .index
            .chunks
            .get(c)
            .ok_or_else(|| corrupt(&self.path, "no such chunk"))?;
        let first = self.index.chunk_first.get(c).map_or(0, |&f| f as usize);
        let end = self
            .index
            .chunk_first
            .get(c + 1)
            .map_or(self.index.traces(), |&f| f as usize);
        let ids = self
            .index
            .ids
            .get(first * 16..end * 16)
            .ok_or_else(|| corrupt(&self.path, "chunk's traces beyond the index"))?;
        chunk::decode(&self.frame(off, len)?, ids, want)
            .ok_or_else(|| corrupt(&self.path, "damaged chunk"))
    }

    fn chunk_of(&self, ord: u32) -> (usize, usize) {
        let c = self
            .index
            .chunk_first
            .partition_point(|&f| f <= ord)
            .saturating_sub(1);
        let first = self.index.chunk_first.get(c).copied().unwrap_or(0);
        (c, (ord - first.min(ord)) as usize)
    }

    /// The spans of trace number `ord`.
    pub fn trace(&self, ord: u32) -> Result<Vec<Span>, TraceStoreError> {
        let (c, i) = self.chunk_of(ord);
        self.chunk(c, Some(&[i]))?
            .pop()
            .map(|(_, s)| s)
            .ok_or_else(|| corrupt(&self.path, "trace beyond its chunk"))
    }

    /// Several traces by ordinal (each chunk decompressed once), in `ords`' order.
    pub fn traces(&self, ords: &[u32]) -> Result<Vec<Vec<Span>>, TraceStoreError> {
        let mut out: Vec<Vec<Span>> = vec![Vec::new(); ords.len()];
        let mut by_chunk: std::collections::BTreeMap<usize, Vec<(usize, usize)>> =
            Default::default();
        for (k, &o) in ords.iter().enumerate() {
            let (c, i) = self.chunk_of(o);
            by_chunk.entry(c).or_default().push((i, k));
        }
        for (c, list) in by_chunk {
            let want: Vec<usize> = list.iter().map(|x| x.0).collect();
            let got = self.chunk(c, Some(&want))?;
            for (i, k) in list {
                let spans = got
                    .iter()
                    .find(|(p, _)| *p == i)
                    .map(|(_, s)| s.clone())
                    .ok_or_else(|| corrupt(&self.path, "trace beyond its chunk"))?;
                out[k] = spans;
            }
        }
        Ok(out)
    }

    /// A service's search rows.
    pub fn rows(&self, s: &ServiceIndex) -> Result<Rows, TraceStoreError> {
        let rows: Rows = rmp_serde::from_slice(&self.frame(s.offset, s.len)?)
            .map_err(|e| corrupt(&self.path, e.to_string()))?;
        let n = rows.trace.len();
        if [
            rows.op.len(),
            rows.start_ns.len(),
            rows.duration_ns.len(),
            rows.error.len(),
        ]
        .iter()
        .any(|&l| l != n)
        {
            return Err(corrupt(&self.path, "search rows of unequal lengths"));
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests;
