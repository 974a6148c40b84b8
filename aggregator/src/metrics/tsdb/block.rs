//! Block files: immutable, checksummed files of compressed chunks, one chunk per series.
//!
//! # Layout (version 1)
//! ```text
//! "TTBLK1\n\0"                          8-byte magic, version in it
//! chunk bytes, one after another        (see `chunk`)
//! index                                 MessagePack `IndexFile`
//! u64 LE  index offset
//! u32 LE  index length
//! u32 LE  CRC-32 of the index
//! "TTBLKEND"                            8-byte trailer
//! ```
//! The index names the block's kind (raw or a rollup resolution), level, time range and
//! sequence number, and for every series (by id, see `series.log`) its time range, row
//! count, and the offset, length and CRC-32 of its chunk. A block is written to a `.tmp`
//! name, synced, renamed and the directory synced, so a crash leaves either the whole block
//! or a `.tmp` that start-up deletes.
//!
//! Only the index is read at open (and its CRC checked); a chunk is read with a positioned
//! read and its CRC checked when a query or a compaction needs it.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"TTBLK1\n\0";
const TRAILER: &[u8; 8] = b"TTBLKEND";
const FOOTER: usize = 8 + 4 + 4 + 8;
/// The largest index a block may claim (protects start-up from a corrupt length).
const MAX_INDEX: u64 = 1 << 31;

/// What a block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Kind {
    /// Raw samples: columns `t`, `v`.
    Raw,
    /// 5-minute rollups (see `rollup`).
    Rollup5m,
    /// 1-hour rollups.
    Rollup1h,
}

impl Kind {
    /// The i64 and f64 column counts of this kind's chunks.
    pub fn shape(self) -> (u8, u8) {
        match self {
            Kind::Raw => (1, 1),
            Kind::Rollup5m | Kind::Rollup1h => (
                crate::metrics::tsdb::rollup::INTS,
                crate::metrics::tsdb::rollup::FLOATS,
            ),
        }
    }

    /// The bucket width of a rollup kind.
    pub fn resolution_ms(self) -> Option<i64> {
        match self {
            Kind::Raw => None,
            Kind::Rollup5m => Some(5 * 60_000),
            Kind::Rollup1h => Some(3_600_000),
        }
    }

    /// A short name for logs and `storage stats`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Raw => "raw",
            Kind::Rollup5m => "5m",
            Kind::Rollup1h => "1h",
        }
    }
}

/// One series' entry in a block index (on disk).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Series id.
    pub series: u32,
    /// First row's timestamp.
    pub min_t: i64,
    /// Last row's timestamp.
    pub max_t: i64,
    /// Rows.
    pub rows: u32,
    /// Chunk offset in the file.
    pub off: u64,
    /// Chunk length.
    pub len: u32,
    /// CRC-32 of the chunk.
    pub crc: u32,
}

/// A block's index as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexFile {
    /// What the chunks hold.
    pub kind: Kind,
    /// Compaction level: 0 for a head flush, then one level per window size.
    pub level: u8,
    /// Sequence number: a block with a higher one holds newer writes.
    pub seq: u64,
    /// Smallest timestamp.
    pub min_t: i64,
    /// Largest timestamp.
    pub max_t: i64,
    /// Entries, sorted by series id.
    pub entries: Vec<IndexEntry>,
}

/// The part of an entry kept in memory for every open block.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Series id.
    pub series: u32,
    /// Chunk length.
    pub len: u32,
    /// Chunk offset.
    pub off: u64,
    /// CRC-32 of the chunk.
    pub crc: u32,
}

/// Block errors.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a well-formed block.
    #[error("{path}: corrupt block: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BlockError + '_ {
    move |source| BlockError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(path: &Path, message: impl Into<String>) -> BlockError {
    BlockError::Corrupt {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads and checks the index of a block file of `bytes` bytes; returns it and its offset.
fn read_index(file: &File, path: &Path, bytes: u64) -> Result<(IndexFile, u64), BlockError> {
    let mut foot = [0u8; FOOTER];
    file.read_exact_at(&mut foot, bytes - FOOTER as u64)
        .map_err(io_err(path))?;
    if &foot[16..] != TRAILER {
        return Err(corrupt(path, "bad trailer (the file was cut short)"));
    }
    let idx_off = u64::from_le_bytes(foot[0..8].try_into().unwrap_or_default());
    let idx_len = u64::from(u32::from_le_bytes(
        foot[8..12].try_into().unwrap_or_default(),
    ));
    let idx_crc = u32::from_le_bytes(foot[12..16].try_into().unwrap_or_default());
    if idx_len > MAX_INDEX || idx_off.checked_add(idx_len) != Some(bytes - FOOTER as u64) {
        return Err(corrupt(path, "index offset and length do not fit the file"));
    }
    let mut idx = vec![0u8; idx_len as usize];
    file.read_exact_at(&mut idx, idx_off)
        .map_err(io_err(path))?;
    if crc32fast::hash(&idx) != idx_crc {
        return Err(corrupt(path, "index checksum mismatch"));
    }
    let index: IndexFile = rmp_serde::from_slice(&idx)
        .map_err(|e| corrupt(path, format!("index does not decode: {e}")))?;
    Ok((index, idx_off))
}

/// An open block.
#[derive(Debug)]
pub struct Block {
    /// The file.
    pub path: PathBuf,
    file: File,
    /// Kind.
    pub kind: Kind,
    /// Level.
    pub level: u8,
    /// Sequence number.
    pub seq: u64,
    /// Smallest timestamp.
    pub min_t: i64,
    /// Largest timestamp.
    pub max_t: i64,
    /// Rows in all chunks.
    pub rows: u64,
    /// File size.
    pub bytes: u64,
    /// Entries sorted by series id.
    entries: Vec<Entry>,
    /// Set once a chunk failed its checksum (the block is then reported by `storage check`
    /// and in the aggregator's metrics).
    pub damaged: AtomicBool,
}

impl Block {
    /// Opens a block, reading and checking its index. Also returns the index entries (for
    /// the caller to learn each series' newest timestamp).
    pub fn open(path: &Path) -> Result<(Block, Vec<IndexEntry>), BlockError> {
        let file = File::open(path).map_err(io_err(path))?;
        let bytes = file.metadata().map_err(io_err(path))?.len();
        if bytes < (MAGIC.len() + FOOTER) as u64 {
            return Err(corrupt(path, format!("{bytes} bytes is too short")));
        }
        let mut magic = [0u8; 8];
        file.read_exact_at(&mut magic, 0).map_err(io_err(path))?;
        if &magic != MAGIC {
            return Err(corrupt(path, "bad magic (not a block, or another version)"));
        }
        let (index, idx_off) = read_index(&file, path, bytes)?;
        let mut rows = 0u64;
        let mut last = None;
        for e in &index.entries {
            if e.off < MAGIC.len() as u64 || e.off.saturating_add(u64::from(e.len)) > idx_off {
                return Err(corrupt(
                    path,
                    format!("chunk of series {} lies outside the chunk area", e.series),
                ));
            }
            if last.is_some_and(|l| l >= e.series) {
                return Err(corrupt(path, "index entries are not sorted by series"));
            }
            last = Some(e.series);
            rows += u64::from(e.rows);
        }
        let block = Block {
            path: path.to_path_buf(),
            file,
            kind: index.kind,
            level: index.level,
            seq: index.seq,
            min_t: index.min_t,
            max_t: index.max_t,
            rows,
            bytes,
            entries: index
                .entries
                .iter()
                .map(|e| Entry {
                    series: e.series,
                    len: e.len,
                    off: e.off,
                    crc: e.crc,
                })
                .collect(),
            damaged: AtomicBool::new(false),
        };
        Ok((block, index.entries))
    }

    /// Whether the block holds the series.
    pub fn entry(&self, series: u32) -> Option<&Entry> {
        self.entries
            .binary_search_by_key(&series, |e| e.series)
            .ok()
            .map(|i| &self.entries[i])
    }

    /// The entries, sorted by series id.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Every series' time range in this block, `(series, min_t, max_t)` by series id, read
    /// from the file's index (kept out of memory: compaction alone asks for it).
    pub fn series_ranges(&self) -> Result<Vec<(u32, i64, i64)>, BlockError> {
        let (index, _) = read_index(&self.file, &self.path, self.bytes)?;
        Ok(index
            .entries
            .iter()
            .map(|e| (e.series, e.min_t, e.max_t))
            .collect())
    }

    /// Reads and checks one chunk.
    pub fn read_chunk(&self, e: &Entry) -> Result<Vec<u8>, BlockError> {
        let mut buf = vec![0u8; e.len as usize];
        self.file
            .read_exact_at(&mut buf, e.off)
            .map_err(io_err(&self.path))?;
        if crc32fast::hash(&buf) != e.crc {
            self.damaged.store(true, Ordering::Relaxed);
            return Err(corrupt(
                &self.path,
                format!(
                    "chunk of series {} at offset {}: checksum mismatch",
                    e.series, e.off
                ),
            ));
        }
        Ok(buf)
    }

    /// Reads, checks and decodes one series' chunk.
    pub fn read_columns(&self, e: &Entry) -> Result<super::chunk::Columns, BlockError> {
        let bytes = self.read_chunk(e)?;
        let (i, f) = self.kind.shape();
        super::chunk::decode(&bytes, i, f).map_err(|err| {
            self.damaged.store(true, Ordering::Relaxed);
            corrupt(&self.path, format!("chunk of series {}: {err}", e.series))
        })
    }
}

/// Writes a block: chunks are added in series order, then [`BlockWriter::finish`].
pub struct BlockWriter {
    tmp: PathBuf,
    out: BufWriter<File>,
    off: u64,
    index: IndexFile,
}

impl BlockWriter {
    /// Starts a block in `dir` (as a `.tmp` file).
    pub fn create(dir: &Path, kind: Kind, level: u8, seq: u64) -> Result<BlockWriter, BlockError> {
        let tmp = dir.join(format!("{seq:016}.blk.tmp"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        // Compaction keeps a writer open per target window and kind: small buffers.
        let mut out = BufWriter::with_capacity(64 << 10, file);
        out.write_all(MAGIC).map_err(io_err(&tmp))?;
        Ok(BlockWriter {
            tmp,
            out,
            off: MAGIC.len() as u64,
            index: IndexFile {
                kind,
                level,
                seq,
                min_t: i64::MAX,
                max_t: i64::MIN,
                entries: Vec::new(),
            },
        })
    }

    /// Adds a series' chunk; series must come in increasing id order.
    pub fn add(
        &mut self,
        series: u32,
        min_t: i64,
        max_t: i64,
        rows: u32,
        chunk: &[u8],
    ) -> Result<(), BlockError> {
        debug_assert!(self.index.entries.last().is_none_or(|e| e.series < series));
        self.out.write_all(chunk).map_err(io_err(&self.tmp))?;
        self.index.entries.push(IndexEntry {
            series,
            min_t,
            max_t,
            rows,
            off: self.off,
            len: chunk.len() as u32,
            crc: crc32fast::hash(chunk),
        });
        self.off += chunk.len() as u64;
        self.index.min_t = self.index.min_t.min(min_t);
        self.index.max_t = self.index.max_t.max(max_t);
        Ok(())
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.index.entries.is_empty()
    }

    /// Writes the index and footer, syncs, and renames the file to its final name; returns
    /// the opened block. An empty writer removes its file and returns `None`.
    pub fn finish(mut self) -> Result<Option<Block>, BlockError> {
        if self.index.entries.is_empty() {
            drop(self.out);
            let _ = fs::remove_file(&self.tmp);
            return Ok(None);
        }
        let idx = rmp_serde::to_vec(&self.index).map_err(|e| corrupt(&self.tmp, e.to_string()))?;
        let mut foot = Vec::with_capacity(FOOTER);
        foot.extend_from_slice(&self.off.to_le_bytes());
        foot.extend_from_slice(&(idx.len() as u32).to_le_bytes());
        foot.extend_from_slice(&crc32fast::hash(&idx).to_le_bytes());
        foot.extend_from_slice(TRAILER);
        self.out.write_all(&idx).map_err(io_err(&self.tmp))?;
        self.out.write_all(&foot).map_err(io_err(&self.tmp))?;
        let file = self.out.into_inner().map_err(|e| BlockError::Io {
            path: self.tmp.display().to_string(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&self.tmp))?;
        drop(file);
        let dest = self.tmp.with_extension("");
        fs::rename(&self.tmp, &dest).map_err(io_err(&dest))?;
        if let Some(dir) = dest.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
        Block::open(&dest).map(|(b, _)| Some(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tsdb::chunk;

    fn write(dir: &Path) -> PathBuf {
        let mut w = BlockWriter::create(dir, Kind::Raw, 0, 7).unwrap();
        for s in [1u32, 5, 9] {
            let ts: Vec<i64> = (0..50).map(|i| i * 10_000).collect();
            let vs: Vec<f64> = (0..50).map(|i| (i * s as i64) as f64).collect();
            w.add(s, 0, 490_000, 50, &chunk::encode(&[&ts], &[&vs]))
                .unwrap();
        }
        w.finish().unwrap().unwrap().path
    }

    #[test]
    fn blocks_round_trip_and_find_series() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path());
        assert_eq!(path.file_name().unwrap(), "0000000000000007.blk");
        let (b, idx) = Block::open(&path).unwrap();
        assert_eq!(
            (b.kind, b.level, b.seq, b.rows, b.min_t, b.max_t),
            (Kind::Raw, 0, 7, 150, 0, 490_000)
        );
        assert_eq!(idx.len(), 3);
        assert!(b.entry(4).is_none());
        let c = b.read_columns(b.entry(5).unwrap()).unwrap();
        assert_eq!(c.floats[0][3], 15.0);
    }

    #[test]
    fn damage_is_reported_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path());
        let good = fs::read(&path).unwrap();
        // A flipped byte in a chunk: the block opens, that chunk fails its checksum.
        let mut bad = good.clone();
        bad[20] ^= 0x40;
        fs::write(&path, &bad).unwrap();
        let (b, _) = Block::open(&path).unwrap();
        let e = *b.entry(1).unwrap();
        assert!(
            b.read_columns(&e)
                .unwrap_err()
                .to_string()
                .contains("checksum mismatch")
        );
        assert!(b.damaged.load(Ordering::Relaxed));
        // Every cut and every flipped byte in the index or footer is an error at open.
        for cut in [0, 5, good.len() / 2, good.len() - 1] {
            fs::write(&path, &good[..cut]).unwrap();
            assert!(Block::open(&path).is_err(), "cut at {cut}");
        }
        for i in (good.len() - FOOTER - 10)..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            fs::write(&path, &bad).unwrap();
            assert!(Block::open(&path).is_err(), "flip at {i}");
        }
    }
}
