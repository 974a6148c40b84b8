//! Log batch bodies in append-only segment files beside sled; sled keeps a small marker.
//!
//! # Why
//! A sled 0.34 leaf holds its values inline and splits only past 16 items, and a leaf larger
//! than a quarter of a segment is written whole, as a blob file, on every insert and every
//! removal. Log batches are large (up to about 128 KiB), so up to 16 of them shared a leaf
//! and every push or acknowledgement rewrote megabytes: while catching up on files the
//! agent's `blobs` held 1.9 GiB for a 64 MiB log cap, a third of its CPU was system time and
//! its RSS reached 300 MiB. Metric batches (kilobytes) stay in sled, where they fit.
//!
//! # Layout
//! `<buffer>/logs/<id>.seg` (16 hex digits): records appended one after another, each the
//! value sled would have held (`samples: u32 BE` and the wire frame, whose CRC-32 covers the
//! payload). A segment is written until it passes [`SEGMENT_BYTES`], then a new one starts;
//! ids only grow (the next is one past the largest found at open), so a new epoch never
//! meets an old segment. sled's `logs` tree maps the sequence to a [`Place`].
//!
//! # Order and durability
//! A record is written and `fdatasync`ed (and a new segment's directory entry synced)
//! *before* the sled transaction that records its place and the read positions: a place in
//! sled always points at data on disk. A crash between the two leaves bytes no place names;
//! a segment without a live place is deleted (at once when its last batch goes, else at the
//! next open). A segment is kept while any of its batches is held, so the disk holds at most
//! one segment's worth beyond the log cap per batch held out of order.
//!
//! # Compatibility
//! A value in the `logs` tree that is not a marker is a record held inline, as buffers
//! written before segments hold them: it is read as before.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The segments' directory inside the buffer's.
pub const DIR: &str = "logs";

/// A segment is closed to new records once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 4 << 20;

const MAGIC: &[u8; 4] = b"TTLS";
/// A marker's length: magic, segment id, offset, length, CRC-32 of what precedes it.
pub const MARKER_LEN: usize = 4 + 8 + 8 + 4 + 4;

/// Where a log batch's record lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The segment's id.
    pub segment: u64,
    /// The record's offset in it.
    pub offset: u64,
    /// The record's length.
    pub len: u32,
}

impl Place {
    /// The marker sled holds for this place.
    pub fn encode(&self) -> [u8; MARKER_LEN] {
        let mut v = [0u8; MARKER_LEN];
        v[..4].copy_from_slice(MAGIC);
        v[4..12].copy_from_slice(&self.segment.to_be_bytes());
        v[12..20].copy_from_slice(&self.offset.to_be_bytes());
        v[20..24].copy_from_slice(&self.len.to_be_bytes());
        let crc = crc32fast::hash(&v[..24]);
        v[24..].copy_from_slice(&crc.to_be_bytes());
        v
    }

    /// `None` when `v` is not a marker (a record held inline); `Some(Err)` when it is a
    /// damaged one.
    pub fn decode(v: &[u8]) -> Option<Result<Place, String>> {
        // An inline record starting with the magic would claim 0x54544C53 samples in one
        // batch: no batch holds that many.
        if v.len() != MARKER_LEN || &v[..4] != MAGIC {
            return None;
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let crc = u32::from_be_bytes([v[24], v[25], v[26], v[27]]);
        if crc32fast::hash(&v[..24]) != crc {
            return Some(Err("log batch marker fails its checksum".into()));
        }
        Some(Ok(Place {
            segment: u64_at(4),
            offset: u64_at(12),
            len: u32::from_be_bytes([v[20], v[21], v[22], v[23]]),
        }))
    }
}

/// The segment being written.
struct Current {
    id: u64,
    file: File,
    len: u64,
}

struct State {
    current: Option<Current>,
    next_id: u64,
    /// Batches held per segment.
    live: BTreeMap<u64, u32>,
}

/// The segment files of one buffer.
pub struct Segments {
    dir: PathBuf,
    state: Mutex<State>,
}

fn segment_id(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

impl Segments {
    /// Opens (creating) `dir`. Nothing is deleted until [`Segments::sweep`].
    pub fn open(dir: &Path) -> io::Result<Segments> {
        std::fs::create_dir_all(dir)?;
        let mut next_id = 1;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(id) = entry.file_name().to_str().and_then(segment_id) {
                next_id = next_id.max(id.saturating_add(1));
            }
        }
        Ok(Segments {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                current: None,
                next_id,
                live: BTreeMap::new(),
            }),
        })
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}.seg"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `record` durably and counts it live; returns its place.
    pub fn append(&self, record: &[u8]) -> io::Result<Place> {
        let len = u32::try_from(record.len())
            .map_err(|_| io::Error::other("log batch record larger than 4 GiB"))?;
        let mut st = self.lock();
        if st.current.as_ref().is_none_or(|c| c.len >= SEGMENT_BYTES) {
            // An id is used once, even when making its file fails (a retry takes the next).
            let id = st.next_id;
            st.next_id = id + 1;
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(self.path(id))?;
            // The new name must survive a power loss before a place names it.
            if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
                let _ = std::fs::remove_file(self.path(id));
                return Err(e);
            }
            let old = st.current.replace(Current { id, file, len: 0 });
            if let Some(old) = old {
                self.delete_if_dead(&mut st, old.id);
            }
        }
        let Some(cur) = st.current.as_mut() else {
            return Err(io::Error::other("no log segment open"));
        };
        let offset = cur.len;
        let written = cur
            .file
            .write_all(record)
            .and_then(|_| cur.file.sync_data());
        if let Err(e) = written {
            // Its end is unknown now: the next record starts a new segment.
            if let Some(old) = st.current.take() {
                self.delete_if_dead(&mut st, old.id);
            }
            return Err(e);
        }
        cur.len += u64::from(len);
        let id = cur.id;
        *st.live.entry(id).or_insert(0) += 1;
        Ok(Place {
            segment: id,
            offset,
            len,
        })
    }

    /// Reads the record at `place`.
    pub fn read(&self, place: &Place) -> io::Result<Vec<u8>> {
        let f = File::open(self.path(place.segment))?;
        let mut v = vec![0u8; place.len as usize];
        f.read_exact_at(&mut v, place.offset)?;
        Ok(v)
    }

    /// Counts a record found at open as live.
    pub fn adopt(&self, place: &Place) {
        *self.lock().live.entry(place.segment).or_insert(0) += 1;
    }

    /// Forgets a record (acknowledged, evicted or damaged); its segment is deleted once no
    /// record in it is held and nothing more is written to it.
    pub fn release(&self, place: &Place) {
        let mut st = self.lock();
        if let Some(n) = st.live.get_mut(&place.segment) {
            *n = n.saturating_sub(1);
        }
        self.delete_if_dead(&mut st, place.segment);
    }

    fn delete_if_dead(&self, st: &mut State, id: u64) {
        if st.current.as_ref().is_some_and(|c| c.id == id) {
            return;
        }
        if st.live.get(&id).copied().unwrap_or(0) == 0 {
            st.live.remove(&id);
            // A failed unlink leaves a file the next open's sweep deletes.
            if let Err(e) = std::fs::remove_file(self.path(id))
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(segment = id, error = %e, "cannot delete a log segment");
            }
        }
    }

    /// After the records found at open are adopted: deletes segment files none of them is
    /// in, and any other file in the directory. Returns how many files were deleted; only a
    /// directory that cannot be listed is an error.
    pub fn sweep(&self) -> io::Result<usize> {
        let st = self.lock();
        let mut deleted = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let keep = entry
                .file_name()
                .to_str()
                .and_then(segment_id)
                .is_some_and(|id| st.live.get(&id).copied().unwrap_or(0) > 0);
            if !keep {
                // Best effort: something that cannot be deleted (a directory someone made
                // here) is reported and left, and the buffer opens all the same.
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => deleted += 1,
                    Err(e) => {
                        tracing::warn!(path = %entry.path().display(), error = %e, "cannot delete a stray file among the log segments")
                    }
                }
            }
        }
        Ok(deleted)
    }

    /// Files in the segments' directory now.
    #[cfg(test)]
    pub fn files(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|d| d.filter(|e| e.is_ok()).count())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_damage_is_seen() {
        let p = Place {
            segment: 7,
            offset: 1 << 33,
            len: 131_000,
        };
        let m = p.encode();
        assert_eq!(Place::decode(&m), Some(Ok(p)));
        for i in 0..MARKER_LEN {
            let mut d = m;
            d[i] ^= 0x10;
            assert_ne!(Place::decode(&d), Some(Ok(p)), "byte {i}");
        }
        assert_eq!(Place::decode(b"short"), None);
        let mut inline = vec![0u8; 4 + 9 + 200];
        inline[3] = 5;
        assert_eq!(Place::decode(&inline), None);
    }

    #[test]
    fn segments_roll_read_back_and_go_when_empty() {
        let d = tempfile::tempdir().expect("dir");
        let s = Segments::open(&d.path().join("logs")).expect("open");
        let record = |i: usize| vec![(i % 251) as u8; 300_000 + i];
        let places: Vec<Place> = (0..40)
            .map(|i| s.append(&record(i)).expect("append"))
            .collect();
        assert!(s.files() >= 3, "segments roll past {SEGMENT_BYTES} bytes");
        for (i, p) in places.iter().enumerate() {
            assert_eq!(s.read(p).expect("read"), record(i));
        }
        // Out of order, as acknowledgements come: a segment goes with its last record.
        for p in places.iter().rev().skip(1) {
            s.release(p);
        }
        assert_eq!(s.files(), 1, "only the segment being written remains");
        assert!(s.read(&places[0]).is_err());
        assert_eq!(s.read(&places[39]).expect("read"), record(39));
        drop(s);
        // Reopened: nothing adopted, so the sweep deletes the rest; ids keep growing.
        let s = Segments::open(&d.path().join("logs")).expect("reopen");
        std::fs::write(d.path().join("logs/stray.tmp"), b"x").expect("stray");
        assert_eq!(s.sweep().expect("sweep"), 2);
        let p = s.append(b"again").expect("append");
        assert!(p.segment > places[39].segment);
    }
}
