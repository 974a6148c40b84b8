//! Record files: a sequence of records framed like wire frames (length, version, CRC-32,
//! payload), read with resynchronisation after damage, appended with a sync, or replaced
//! atomically. The TSDB keeps `series.log`, `events.log` and `checkpoint` so; WAL segments
//! ([`super::segments`]) are scanned with the same [`Scanner`].

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use telltale_common::codec::{self, HEADER_LEN, Header};

/// The largest record these files hold.
const MAX_RECORD: u32 = 512 * 1024 * 1024;

/// What reading a record file found.
#[derive(Debug, Default)]
pub struct Frames {
    /// Intact payloads, in order.
    pub payloads: Vec<Vec<u8>>,
    /// Records skipped for a bad checksum.
    pub corrupt: u64,
    /// Bytes after the last whole record (a torn tail).
    pub torn: u64,
}

/// Reads every record of `path` (a missing file has none). Never fails on content.
pub fn read_frames(path: &Path) -> std::io::Result<Frames> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Frames::default()),
        Err(e) => return Err(e),
    };
    let mut f = Frames::default();
    let mut scan = Scanner::new(&data, MAX_RECORD);
    for item in scan.by_ref() {
        match item {
            Item::Frame { payload, .. } => f.payloads.push(payload.to_vec()),
            Item::Damaged { .. } => f.corrupt += 1,
        }
    }
    f.torn = scan.torn() as u64;
    Ok(f)
}

/// What a [`Scanner`] finds, in file order.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// An intact record (its checksum verified) at byte `at`.
    Frame {
        /// Offset of its header.
        at: usize,
        /// Its payload.
        payload: &'a [u8],
    },
    /// `len` damaged bytes at `at`, followed by an intact record (or, if the search gave up,
    /// by the end of the file, which is then not a torn tail: see [`Scanner::torn`]).
    Damaged {
        /// Offset of the damage.
        at: usize,
        /// Its length.
        len: usize,
    },
}

/// How many payload bytes one scan may checksum while looking for the next intact record
/// after damage: bounds the work on a file of garbage (each candidate header costs a
/// checksum of the length it announces).
const RESYNC_BUDGET: usize = 1 << 30;

/// Walks framed records, resynchronising after damage: a record whose header or checksum is
/// bad is skipped by searching for the next offset where an intact record starts (a header
/// of this version announcing a non-empty payload that fits, whose CRC-32 verifies), so one
/// bad length byte never hides the records after it. Bytes after the last intact record
/// with no intact record following are the torn tail — the only part a caller may cut.
pub struct Scanner<'a> {
    data: &'a [u8],
    off: usize,
    max: u32,
    budget: usize,
    torn: usize,
}

impl<'a> Scanner<'a> {
    /// A scanner over `data`, accepting records of at most `max` bytes.
    pub fn new(data: &'a [u8], max: u32) -> Scanner<'a> {
        Scanner {
            data,
            off: 0,
            max,
            budget: RESYNC_BUDGET,
            torn: 0,
        }
    }

    /// Bytes at the end after the last intact record, with no intact record after them
    /// (valid once the iterator has ended). Zero when damage ended the scan early because
    /// the search budget ran out: then the end of the file is *not* known to be torn.
    pub fn torn(&self) -> usize {
        self.torn
    }

    /// The intact record at `at`, if one starts there.
    fn frame_at(&self, at: usize, resync: bool) -> Option<&'a [u8]> {
        let h: &[u8; HEADER_LEN] = self.data.get(at..at + HEADER_LEN)?.try_into().ok()?;
        let header = Header::parse(h, self.max).ok()?;
        if resync && header.len == 0 {
            // An empty payload's CRC is 0: nine zero-ish bytes would pass for a record.
            return None;
        }
        let payload = self
            .data
            .get(at + HEADER_LEN..at + HEADER_LEN + header.len as usize)?;
        header.verify(payload).ok()?;
        Some(payload)
    }

    /// The next offset after `from` where an intact record starts.
    fn resync(&mut self, from: usize) -> Result<Option<usize>, ()> {
        let d = self.data;
        for at in from..d.len().saturating_sub(HEADER_LEN - 1) {
            // Cheap tests first: the version byte, then a length that fits.
            if d[at + 4] != codec::FRAME_VERSION {
                continue;
            }
            let len = u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]) as usize;
            if len == 0 || len > self.max as usize || at + HEADER_LEN + len > d.len() {
                continue;
            }
            if self.budget < len {
                return Err(());
            }
            self.budget -= len;
            if self.frame_at(at, true).is_some() {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }
}

impl<'a> Iterator for Scanner<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        let at = self.off;
        if at >= self.data.len() {
            return None;
        }
        if let Some(payload) = self.frame_at(at, false) {
            self.off = at + HEADER_LEN + payload.len();
            return Some(Item::Frame { at, payload });
        }
        match self.resync(at + 1) {
            Ok(Some(next)) => {
                self.off = next;
                Some(Item::Damaged { at, len: next - at })
            }
            Ok(None) => {
                // Nothing intact follows. A whole record that fails its checksum is damaged
                // (counted, and what follows it is read as framed by its length); anything
                // else is a torn tail (a record cut short by a crash).
                let whole = self
                    .data
                    .get(at..at + HEADER_LEN)
                    .and_then(|h| <&[u8; HEADER_LEN]>::try_from(h).ok())
                    .and_then(|h| Header::parse(h, self.max).ok())
                    .map(|h| HEADER_LEN + h.len as usize)
                    .filter(|n| at + n <= self.data.len());
                if let Some(n) = whole {
                    self.off = at + n;
                    return Some(Item::Damaged { at, len: n });
                }
                self.torn = self.data.len() - at;
                self.off = self.data.len();
                None
            }
            Err(()) => {
                self.off = self.data.len();
                Some(Item::Damaged {
                    at,
                    len: self.data.len() - at,
                })
            }
        }
    }
}

/// Truncates a torn tail found by [`read_frames`].
pub fn cut_tail(path: &Path, frames: &Frames) -> std::io::Result<()> {
    if frames.torn == 0 {
        return Ok(());
    }
    let f = OpenOptions::new().write(true).open(path)?;
    let len = f.metadata()?.len();
    f.set_len(len - frames.torn)?;
    f.sync_all()
}

/// Appends records and syncs.
pub fn append_frames(path: &Path, payloads: &[Vec<u8>]) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for p in payloads {
        codec::frame_into(p, &mut buf);
    }
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(&buf)?;
    f.sync_data()
}

/// Replaces `path` with one record, atomically (temporary file, sync, rename, sync dir).
pub fn write_atomic(path: &Path, payloads: &[Vec<u8>]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut buf = Vec::new();
    for p in payloads {
        codec::frame_into(p, &mut buf);
    }
    let mut f = File::create(&tmp)?;
    f.write_all(&buf)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(d) = path.parent() {
        File::open(d)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_file_content_reads_without_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("f");
            fs::write(&p, &b).unwrap();
            let f = read_frames(&p).unwrap();
            prop_assert!(f.torn as usize <= b.len());
        }
    }

    /// One damaged length byte (or payload byte, or a run of garbage) in the middle: every
    /// record after it is still read, and nothing after it counts as a torn tail.
    #[test]
    fn damage_in_the_middle_resynchronises() {
        let records: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 20 + i as usize * 7]).collect();
        let mut clean = Vec::new();
        for r in &records {
            codec::frame_into(r, &mut clean);
        }
        let starts: Vec<usize> = {
            let mut v = vec![0];
            for r in &records[..records.len() - 1] {
                let last = *v.last().unwrap_or(&0);
                v.push(last + HEADER_LEN + r.len());
            }
            v
        };
        for (victim, how) in [
            (10, "len"),
            (11, "len0"),
            (20, "payload"),
            (30, "version"),
            (40, "garbage"),
        ] {
            let mut data = clean.clone();
            let at = starts[victim];
            match how {
                "len" => data[at + 2] ^= 0x40,
                "len0" => data[at] = 0xff,
                "payload" => data[at + HEADER_LEN + 3] ^= 1,
                "version" => data[at + 4] = 9,
                _ => data.splice(at..at, [0x11u8; 333]).for_each(drop),
            }
            let mut scan = Scanner::new(&data, MAX_RECORD);
            let items: Vec<Item> = scan.by_ref().collect();
            let frames: Vec<&[u8]> = items
                .iter()
                .filter_map(|i| match i {
                    Item::Frame { payload, .. } => Some(*payload),
                    _ => None,
                })
                .collect();
            let damaged = items.len() - frames.len();
            assert_eq!(damaged, 1, "{how}");
            let lost = if how == "garbage" { 0 } else { 1 };
            assert_eq!(frames.len(), records.len() - lost, "{how}");
            assert_eq!(frames.last(), Some(&records[49].as_slice()), "{how}");
            assert_eq!(scan.torn(), 0, "{how}");
        }
        // A record cut short at the end is the torn tail.
        let cut = &clean[..clean.len() - 5];
        let mut scan = Scanner::new(cut, MAX_RECORD);
        assert_eq!(scan.by_ref().count(), 49);
        assert_eq!(scan.torn(), HEADER_LEN + records[49].len() - 5);
    }

    #[test]
    fn torn_tails_are_found_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        append_frames(&p, &[b"one".to_vec(), b"two".to_vec()]).unwrap();
        let mut bytes = fs::read(&p).unwrap();
        bytes.truncate(bytes.len() - 1);
        fs::write(&p, &bytes).unwrap();
        let f = read_frames(&p).unwrap();
        assert_eq!(f.payloads, vec![b"one".to_vec()]);
        assert!(f.torn > 0);
        cut_tail(&p, &f).unwrap();
        append_frames(&p, &[b"three".to_vec()]).unwrap();
        assert_eq!(read_frames(&p).unwrap().payloads.len(), 2);
    }
}
