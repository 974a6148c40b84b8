//! Segment files of framed records written with group commit: a writer appends a group of
//! records with one `fdatasync`, cuts a failed write off again (so later records stay
//! framed) and continues in a new segment past a size. Readers scan segments with
//! [`super::frames::Scanner`]. The TSDB's write-ahead log is made of these; the logs and traces
//! stores are to use the same.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A segment grows to about this size before the writer continues in the next one.
pub const SEGMENT_BYTES: u64 = 128 * 1024 * 1024;

/// The path of segment `n` in `dir`.
pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

/// The segments in `dir`, by number.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
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

/// Cuts `path` to `len` bytes, durably (a torn tail).
pub fn truncate(path: &Path, len: u64) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()
}

/// Appends groups of records to the newest segment.
pub struct Writer {
    dir: PathBuf,
    file: File,
    segment: u64,
    len: u64,
}

impl Writer {
    /// Creates segment `segment` in `dir` (it must not exist).
    pub fn create(dir: PathBuf, segment: u64) -> std::io::Result<Writer> {
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

    /// The segment being written.
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// Bytes written (and synced) to the segment.
    pub fn synced_len(&self) -> u64 {
        self.len
    }

    /// Continues in a new segment.
    pub fn roll(&mut self) -> std::io::Result<()> {
        let next = Writer::create(self.dir.clone(), self.segment + 1)?;
        *self = next;
        Ok(())
    }

    /// Writes a group of framed records and syncs it; on failure nothing of it stays.
    pub fn write_group(&mut self, buf: &[u8]) -> std::io::Result<()> {
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
}
