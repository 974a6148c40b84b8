//! Log blocks: immutable files holding the lines of a time span, by stream, in compressed
//! chunks, with an index that lets a query skip what it cannot need.
//!
//! ```text
//! "TTLB" 1                       magic, format version
//! chunk*                         zstd frames (see below), back to back
//! index                          MessagePack [`BlockIndex`]
//! u32 index length, u32 CRC-32 of the index, "TTLB"
//! ```
//!
//! A chunk holds up to about [`CHUNK_RAW_BYTES`] of one stream's lines, oldest first, in
//! columns before compression (columns compress better than rows: the timestamps are nearly
//! regular, the lines alike): a varint count `n`; `n` zigzag-varint timestamp deltas (ns);
//! `n` varint line lengths; the lines' bytes; then, only if a line has structured metadata,
//! its MessagePack (`n` arrays of pairs). The first three columns are a zstd frame of their
//! own and the rest a second one (`ChunkIndex::sizes_len` says where the first ends), so a
//! query that counts lines or bytes decompresses a few KiB of a chunk; the two frames
//! decompress together into the same bytes as chunks written as a single frame. Each chunk's
//! index entry carries its time range, line count, raw size, its lines and bytes per time
//! bucket ([`counts`]: counting queries whose window edges fall on bucket boundaries read
//! nothing else), and a trigram filter: one bit per hashed trigram of its lines, so a
//! needle (`|= "..."`) whose trigrams are not all set cannot be in the chunk, which is then
//! not decompressed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use telltale_common::wire::LogEntry;

use crate::durable::{blockfile, blockstore};

pub mod counts;

const MAGIC: &[u8; 4] = b"TTLB";
const VERSION: u8 = 1;
/// Raw bytes of lines per chunk (before compression).
pub const CHUNK_RAW_BYTES: usize = 1 << 20;
/// zstd level 3, the library's default: `cargo bench-telltale logs` measured the blocks at
/// 1.02× ClickHouse's bytes (zstd level 1, after merges) on its 10 M-record mix. Higher levels
/// are untried: the cut compresses inside the writer thread, so a slower level would hold
/// appends up longer.
const ZSTD_LEVEL: i32 = 3;

/// A stream's labels (sorted by name) and its lines (sorted by time), as a block takes them.
pub type StreamLines<'a> = (Vec<(String, String)>, &'a [LogEntry]);

/// A block's index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockIndex {
    /// Earliest line (ns).
    pub min_t: i64,
    /// Latest line (ns).
    pub max_t: i64,
    /// Its streams.
    pub streams: Vec<StreamIndex>,
    /// The first WAL segment not in this block (the head it was cut from covered every
    /// segment before): start-up replays from here even when the checkpoint written after
    /// the block was lost to a crash, so no line is read twice.
    #[serde(default)]
    pub wal_before: u64,
    /// The agent batches stored up to that point (for the same reason).
    #[serde(default)]
    pub dedup: Vec<(String, u64, crate::durable::dedup::RangeSet)>,
}

/// One stream in a block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamIndex {
    /// The stream's labels, sorted by name.
    pub labels: Vec<(String, String)>,
    /// Its chunks, oldest first.
    pub chunks: Vec<ChunkIndex>,
}

/// One chunk in a block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkIndex {
    /// Offset of its zstd frame in the file.
    pub offset: u64,
    /// Compressed length.
    pub len: u32,
    /// Earliest line (ns).
    pub min_t: i64,
    /// Latest line (ns).
    pub max_t: i64,
    /// Lines.
    pub lines: u32,
    /// Bytes of its lines.
    pub line_bytes: u64,
    /// The trigram filter (a power-of-two number of bytes).
    #[serde(with = "serde_bytes")]
    pub trigrams: Vec<u8>,
    /// Compressed length of the chunk's first zstd frame, which holds its line count,
    /// timestamps and line lengths alone (the lines follow in a second frame); 0 in chunks
    /// written as one frame (before this field), which decode the same way.
    #[serde(default)]
    pub sizes_len: u32,
    /// Lines and bytes per time bucket ([`counts`]); empty in chunks written before it or
    /// spanning too long.
    #[serde(default, with = "serde_bytes")]
    pub counts: Vec<u8>,
}

/// Why a block cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a well-formed block.
    #[error("{path}: corrupt log block: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlockError + '_ {
    move |source| BlockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> BlockError {
    BlockError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

fn hash3(a: u8, b: u8, c: u8) -> u32 {
    // FNV-1a over three bytes: cheap, and spreads trigrams well enough for a one-hash filter.
    let mut h: u32 = 0x811c_9dc5;
    for x in [a, b, c] {
        h ^= u32::from(x);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The trigram filter of some lines: `bytes` long (a power of two).
pub fn trigram_filter<'a>(lines: impl Iterator<Item = &'a str>, bytes: usize) -> Vec<u8> {
    let mut f = vec![0u8; bytes];
    let mask = (bytes * 8 - 1) as u32;
    for l in lines {
        for w in l.as_bytes().windows(3) {
            let bit = hash3(w[0], w[1], w[2]) & mask;
            f[(bit / 8) as usize] |= 1 << (bit % 8);
        }
    }
    f
}

/// Whether `needle` may occur in lines whose filter is `f` (`true` when it cannot tell).
pub fn may_contain(f: &[u8], needle: &str) -> bool {
    if f.is_empty() || needle.len() < 3 || !f.len().is_power_of_two() {
        return true;
    }
    let mask = (f.len() * 8 - 1) as u32;
    needle.as_bytes().windows(3).all(|w| {
        let bit = hash3(w[0], w[1], w[2]) & mask;
        f[(bit / 8) as usize] & (1 << (bit % 8)) != 0
    })
}

/// Filter size for a chunk that compressed to `packed` bytes: a sixteenth of the chunk's size
/// on disk rounded down to a power of two, between 512 bytes and 16 KiB. Sized by
/// the compressed size, not the raw one, because that is what the filter adds to: the logs
/// benchmark measured filters sized by raw text (16 KiB per chunk) at 12 % of the blocks'
/// bytes. Repetitive text (which compresses well) has few distinct trigrams: a 600 KiB chunk
/// of the benchmark's mix compresses to about 130 KiB and gets an 8 KiB filter, about a third
/// full, so a needle of ten trigrams passes a chunk without it with a probability near
/// 0.35^10 ≈ 3e-5.
fn filter_bytes(packed: usize) -> usize {
    let want = (packed / 16).max(1);
    // The power of two at or below: between a 32nd and a 16th of the chunk.
    (1usize << (usize::BITS - 1 - want.leading_zeros())).clamp(512, 16 * 1024)
}

/// The chunk's first columns: the line count, timestamp deltas and line lengths.
fn encode_sizes(entries: &[LogEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 8 + 8);
    put_varint(&mut out, entries.len() as u64);
    let mut prev = 0i64;
    for e in entries {
        let d = e.t_ns.wrapping_sub(prev);
        put_varint(&mut out, ((d << 1) ^ (d >> 63)) as u64);
        prev = e.t_ns;
    }
    for e in entries {
        put_varint(&mut out, e.line.len() as u64);
    }
    out
}

/// The chunk's other columns: the lines' bytes, then their structured metadata if any.
fn encode_lines(entries: &[LogEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.line.len()).sum::<usize>() + 16);
    for e in entries {
        out.extend_from_slice(e.line.as_bytes());
    }
    if entries.iter().any(|e| !e.metadata.is_empty()) {
        let md: Vec<&Vec<(String, String)>> = entries.iter().map(|e| &e.metadata).collect();
        // Pairs of strings always encode.
        if let Ok(b) = rmp_serde::to_vec(&md) {
            out.extend_from_slice(&b);
        }
    }
    out
}

/// Decodes a chunk's raw columns ([`encode_sizes`] then [`encode_lines`]); damage is `None`,
/// never a panic.
fn decode_chunk(b: &[u8]) -> Option<Vec<LogEntry>> {
    let mut pos = 0;
    let n = usize::try_from(get_varint(b, &mut pos)?).ok()?;
    if n > b.len() {
        return None;
    }
    let mut ts = Vec::with_capacity(n);
    let mut t = 0i64;
    for _ in 0..n {
        let z = get_varint(b, &mut pos)?;
        t = t.wrapping_add(((z >> 1) as i64) ^ -((z & 1) as i64));
        ts.push(t);
    }
    let mut lens = Vec::with_capacity(n);
    for _ in 0..n {
        lens.push(usize::try_from(get_varint(b, &mut pos)?).ok()?);
    }
    let mut out = Vec::with_capacity(n);
    for (t, len) in ts.into_iter().zip(lens) {
        let raw = b.get(pos..pos.checked_add(len)?)?;
        pos += len;
        out.push(LogEntry {
            t_ns: t,
            line: String::from_utf8_lossy(raw).into_owned(),
            metadata: Vec::new(),
        });
    }
    if pos < b.len() {
        let md: Vec<Vec<(String, String)>> = rmp_serde::from_slice(&b[pos..]).ok()?;
        if md.len() != out.len() {
            return None;
        }
        for (e, m) in out.iter_mut().zip(md) {
            e.metadata = m;
        }
    }
    Some(out)
}

/// Decodes the first two columns of a chunk's raw bytes — timestamps and line lengths —
/// from as much of the chunk as has been decompressed: `Ok(None)` when more is needed,
/// `Err(())` when it is damaged.
fn decode_sizes(b: &[u8]) -> Result<Option<Vec<(i64, u32)>>, ()> {
    let mut pos = 0;
    let Some(n) = get_varint(b, &mut pos) else {
        return Ok(None);
    };
    let n = usize::try_from(n).map_err(|_| ())?;
    if n > 1 << 26 {
        return Err(());
    }
    let mut out = Vec::with_capacity(n);
    let mut t = 0i64;
    for _ in 0..n {
        let Some(z) = get_varint(b, &mut pos) else {
            return Ok(None);
        };
        t = t.wrapping_add(((z >> 1) as i64) ^ -((z & 1) as i64));
        out.push((t, 0u32));
    }
    for e in out.iter_mut() {
        let Some(len) = get_varint(b, &mut pos) else {
            return Ok(None);
        };
        e.1 = u32::try_from(len).map_err(|_| ())?;
    }
    Ok(Some(out))
}

/// Writes a block of `streams` (each one's lines sorted by time) to `path` (through a
/// temporary file, synced, renamed). Returns its index and size.
pub fn write(
    path: &Path,
    streams: &[StreamLines<'_>],
    wal_before: u64,
    dedup: Vec<(String, u64, crate::durable::dedup::RangeSet)>,
) -> Result<(BlockIndex, u64), BlockError> {
    let mut buf = blockfile::start(MAGIC, VERSION, 1 << 20);
    let mut index = BlockIndex {
        min_t: i64::MAX,
        max_t: i64::MIN,
        streams: Vec::new(),
        wal_before,
        dedup,
    };
    for (labels, entries) in streams {
        let mut si = StreamIndex {
            labels: labels.clone(),
            chunks: Vec::new(),
        };
        let mut start = 0;
        while start < entries.len() {
            let mut end = start;
            let mut raw = 0usize;
            while end < entries.len() && (end == start || raw < CHUNK_RAW_BYTES) {
                raw += entries[end].line.len();
                end += 1;
            }
            let part = &entries[start..end];
            // Two zstd frames: counting queries decompress the first alone, and the two
            // decompress together into the one-frame layout.
            let mut packed =
                zstd::bulk::compress(&encode_sizes(part), ZSTD_LEVEL).map_err(io(path))?;
            let sizes_len = packed.len() as u32;
            packed.extend_from_slice(
                &zstd::bulk::compress(&encode_lines(part), ZSTD_LEVEL).map_err(io(path))?,
            );
            let (min_t, max_t) = part.iter().fold((i64::MAX, i64::MIN), |(a, b), e| {
                (a.min(e.t_ns), b.max(e.t_ns))
            });
            index.min_t = index.min_t.min(min_t);
            index.max_t = index.max_t.max(max_t);
            si.chunks.push(ChunkIndex {
                offset: buf.len() as u64,
                len: packed.len() as u32,
                min_t,
                max_t,
                lines: part.len() as u32,
                line_bytes: raw as u64,
                trigrams: trigram_filter(
                    part.iter().map(|e| e.line.as_str()),
                    filter_bytes(packed.len()),
                ),
                sizes_len,
                counts: counts::encode(part),
            });
            buf.extend_from_slice(&packed);
            start = end;
        }
        index.streams.push(si);
    }
    let idx = rmp_serde::to_vec(&index).map_err(|e| corrupt(path, e.to_string()))?;
    buf.extend_from_slice(&idx);
    let size = blockfile::finish(path, buf, &idx).map_err(io(path))?;
    Ok((index, size))
}

/// An open block: its index in memory, chunks read on demand.
#[derive(Debug)]
pub struct Block {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its index.
    pub index: BlockIndex,
    file: File,
}

impl blockstore::StoredBlock for Block {
    fn newest_ns(&self) -> i64 {
        self.index.max_t
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
    pub fn open(path: &Path) -> Result<Block, BlockError> {
        let blockfile::Opened {
            file,
            bytes,
            index: idx,
            data_end,
        } = blockfile::open(path, MAGIC, VERSION).map_err(|e| match e {
            blockfile::FileError::Io(source) => io(path)(source),
            blockfile::FileError::Corrupt(reason) => corrupt(path, reason),
        })?;
        let index: BlockIndex =
            rmp_serde::from_slice(&idx).map_err(|e| corrupt(path, e.to_string()))?;
        for s in &index.streams {
            for c in &s.chunks {
                if c.offset + u64::from(c.len) > data_end {
                    return Err(corrupt(path, "chunk beyond the data"));
                }
            }
        }
        Ok(Block {
            path: path.to_path_buf(),
            bytes,
            index,
            file,
        })
    }

    /// The times and byte lengths of a chunk's lines, decompressing only the front of the
    /// chunk that holds them (the two first columns: a few KiB of a 1 MiB chunk), for queries
    /// that count lines or bytes without looking at them.
    pub fn read_sizes(&self, c: &ChunkIndex) -> Result<Vec<(i64, u32)>, BlockError> {
        use std::io::Read;
        let damaged = |what: String| corrupt(&self.path, format!("chunk at {}: {what}", c.offset));
        if c.sizes_len > 0 && c.sizes_len <= c.len {
            let mut packed = vec![0u8; c.sizes_len as usize];
            self.file
                .read_exact_at(&mut packed, c.offset)
                .map_err(io(&self.path))?;
            let cap = 20 * c.lines as usize + 64;
            let raw = zstd::bulk::decompress(&packed, cap).map_err(|e| damaged(e.to_string()))?;
            return match decode_sizes(&raw) {
                Ok(Some(v)) if v.len() == c.lines as usize => Ok(v),
                _ => Err(damaged("sizes do not decode".into())),
            };
        }
        // A chunk of one frame: decompress only as far as the sizes reach.
        let mut packed = vec![0u8; c.len as usize];
        self.file
            .read_exact_at(&mut packed, c.offset)
            .map_err(io(&self.path))?;
        let mut dec = zstd::stream::read::Decoder::with_buffer(&packed[..])
            .map_err(|e| damaged(e.to_string()))?;
        let mut raw = Vec::with_capacity(64 << 10);
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let n = dec.read(&mut buf).map_err(|e| damaged(e.to_string()))?;
            raw.extend_from_slice(&buf[..n]);
            match decode_sizes(&raw) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) if n > 0 => continue,
                _ => return Err(damaged("sizes do not decode".into())),
            }
        }
    }

    /// Reads and decompresses a chunk.
    pub fn read_chunk(&self, c: &ChunkIndex) -> Result<Vec<LogEntry>, BlockError> {
        let mut packed = vec![0u8; c.len as usize];
        self.file
            .read_exact_at(&mut packed, c.offset)
            .map_err(io(&self.path))?;
        // The raw size is bounded by the lines' bytes plus their framing.
        let cap = c.line_bytes as usize + 20 * c.lines as usize + 64 + (1 << 16);
        let raw = zstd::bulk::decompress(&packed, cap)
            .map_err(|e| corrupt(&self.path, format!("chunk at {}: {e}", c.offset)))?;
        decode_chunk(&raw)
            .ok_or_else(|| corrupt(&self.path, format!("chunk at {} does not decode", c.offset)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(t: i64, line: &str) -> LogEntry {
        LogEntry {
            t_ns: t,
            line: line.into(),
            metadata: Vec::new(),
        }
    }

    #[test]
    fn blocks_round_trip_and_filters_skip_what_is_absent() {
        let d = tempfile::tempdir().expect("dir");
        let path = d.path().join("1.lblk");
        let mut a: Vec<LogEntry> = (0..5000)
            .map(|i| e(1_000 + i * 7, &format!("GET /api/{i} 200 trace=abc{i:05}")))
            .collect();
        a[3].metadata = vec![("trace_id".into(), "x".into())];
        let b = vec![e(5, "only line"), e(9, "naïve ünïcode")];
        let labels_a = vec![("source".to_string(), "app".to_string())];
        let labels_b = vec![("source".to_string(), "sys".to_string())];
        let (idx, size) = write(
            &path,
            &[(labels_a.clone(), &a), (labels_b.clone(), &b)],
            0,
            Vec::new(),
        )
        .expect("write");
        assert_eq!((idx.min_t, idx.max_t), (5, 1_000 + 4999 * 7));
        let blk = Block::open(&path).expect("open");
        assert_eq!(blk.bytes, size);
        let mut back = Vec::new();
        for c in &blk.index.streams[0].chunks {
            back.extend(blk.read_chunk(c).expect("chunk"));
        }
        assert_eq!(back, a);
        let c = &blk.index.streams[1].chunks[0];
        assert_eq!(blk.read_chunk(c).expect("chunk"), b);
        let f = &blk.index.streams[0].chunks[0].trigrams;
        assert!(may_contain(f, "trace=abc00042"));
        assert!(!may_contain(f, "a needle that is not there at all"));
    }

    #[test]
    fn sizes_are_read_from_the_front_of_a_chunk_alone() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<LogEntry> = (0..60_000)
            .map(|i| {
                e(
                    1_000 + i * 7,
                    &format!("line {i} {}", "x".repeat((i % 50) as usize)),
                )
            })
            .collect();
        let labels = vec![("app".to_string(), "a".to_string())];
        let path = dir.path().join("b.lblk");
        write(&path, &[(labels, &entries[..])], 0, Vec::new()).unwrap();
        let b = Block::open(&path).unwrap();
        let mut got = Vec::new();
        for c in &b.index.streams[0].chunks {
            got.extend(b.read_sizes(c).unwrap());
        }
        let want: Vec<(i64, u32)> = entries
            .iter()
            .map(|x| (x.t_ns, x.line.len() as u32))
            .collect();
        assert_eq!(got, want);
        assert!(b.index.streams[0].chunks.len() > 1, "several chunks");
        // Chunks written as one frame (no `sizes_len`) are read by decompressing their front.
        let mut old_layout = Vec::new();
        for c in &b.index.streams[0].chunks {
            assert!(
                c.sizes_len > 0 && c.sizes_len < c.len / 4,
                "a small first frame"
            );
            let one = ChunkIndex {
                sizes_len: 0,
                ..c.clone()
            };
            old_layout.extend(b.read_sizes(&one).unwrap());
        }
        assert_eq!(old_layout, want);
        assert!(
            decode_sizes(&[0xff]).unwrap().is_none(),
            "incomplete: more needed"
        );
        assert!(
            decode_sizes(&[0xff, 0xff, 0xff, 0xff, 0x7f]).is_err(),
            "absurd count"
        );
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().expect("dir");
        let path = d.path().join("1.lblk");
        let a: Vec<LogEntry> = (0..100).map(|i| e(i, "some line")).collect();
        write(&path, &[(vec![], &a)], 0, Vec::new()).expect("write");
        let good = std::fs::read(&path).expect("read");
        for cut in [0, 3, 10, good.len() / 2, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).expect("write");
            assert!(Block::open(&path).is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[8] ^= 0xff; // inside the chunk
        std::fs::write(&path, &bad).expect("write");
        let blk = Block::open(&path).expect("the index is intact");
        assert!(blk.read_chunk(&blk.index.streams[0].chunks[0]).is_err());
        for _ in 0..200 {
            let n: Vec<u8> = (0..64).map(|_| rand::random::<u8>()).collect();
            let _ = decode_chunk(&n);
        }
    }
}
