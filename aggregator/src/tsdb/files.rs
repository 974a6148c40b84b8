//! Small checksummed files beside the blocks: `series.log` (series ids and labels),
//! `events.log` (host events) and `checkpoint` (what the blocks cover). Each is a sequence of
//! records framed like wire frames (length, version, CRC-32, MessagePack payload).

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
    let mut off = 0;
    while data.len() - off >= HEADER_LEN {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&data[off..off + HEADER_LEN]);
        let Ok(header) = Header::parse(&h, MAX_RECORD) else {
            break;
        };
        let end = off + HEADER_LEN + header.len as usize;
        if end > data.len() {
            break;
        }
        let payload = &data[off + HEADER_LEN..end];
        off = end;
        if header.verify(payload).is_ok() {
            f.payloads.push(payload.to_vec());
        } else {
            f.corrupt += 1;
        }
    }
    f.torn = (data.len() - off) as u64;
    Ok(f)
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
