//! The envelope of the logs' and traces' block files: a magic and a version byte first, the
//! data, then the index (MessagePack), its length and CRC-32 and the magic again. Written
//! through a temporary file that is synced and renamed, the directory synced after; opened
//! by checking both magics, the version and the index's checksum. What the data and index
//! hold is each store's own.
//!
//! ```text
//! MAGIC(4) VERSION(1) data… index… index_len(u32 LE) index_crc32(u32 LE) MAGIC(4)
//! ```

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes of the smallest block: both magics, the version, the length and the checksum.
const ENVELOPE: u64 = 17;

/// Why a block file cannot be written or opened.
#[derive(Debug)]
pub enum FileError {
    /// Reading or writing failed.
    Io(std::io::Error),
    /// The file is not a well-formed block.
    Corrupt(String),
}

/// A new block's bytes: starts with the magic and version; the caller appends the data.
pub fn start(magic: &[u8; 4], version: u8, capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(capacity);
    buf.extend_from_slice(magic);
    buf.push(version);
    buf
}

/// Ends `buf` (from [`start`], with the data) with `index` and writes it to `path` durably.
/// Returns the file's size.
pub fn finish(path: &Path, mut buf: Vec<u8>, index: &[u8]) -> std::io::Result<u64> {
    let magic: [u8; 4] = buf
        .get(..4)
        .and_then(|m| m.try_into().ok())
        .ok_or_else(|| std::io::Error::other("a block starts with its magic"))?;
    buf.extend_from_slice(index);
    buf.extend_from_slice(&(index.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(index).to_le_bytes());
    buf.extend_from_slice(&magic);
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&buf)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all())?;
    }
    Ok(buf.len() as u64)
}

/// An opened block file whose envelope checked out.
pub struct Opened {
    /// The file, for reading data on demand.
    pub file: File,
    /// Its size.
    pub bytes: u64,
    /// The index's bytes (checksum verified).
    pub index: Vec<u8>,
    /// Where the data ends (the index starts): data offsets must stay below.
    pub data_end: u64,
}

/// Opens `path` and checks the envelope.
pub fn open(path: &Path, magic: &[u8; 4], version: u8) -> Result<Opened, FileError> {
    let file = File::open(path).map_err(FileError::Io)?;
    let bytes = file.metadata().map_err(FileError::Io)?.len();
    if bytes < ENVELOPE {
        return Err(FileError::Corrupt("too short".into()));
    }
    let mut tail = [0u8; 12];
    file.read_exact_at(&mut tail, bytes - 12)
        .map_err(FileError::Io)?;
    let mut head = [0u8; 5];
    file.read_exact_at(&mut head, 0).map_err(FileError::Io)?;
    if &tail[8..] != magic || &head[..4] != magic {
        return Err(FileError::Corrupt("bad magic".into()));
    }
    if head[4] != version {
        return Err(FileError::Corrupt(format!("unknown version {}", head[4])));
    }
    let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    let crc = u32::from_le_bytes([tail[4], tail[5], tail[6], tail[7]]);
    if len + ENVELOPE > bytes {
        return Err(FileError::Corrupt("index length beyond the file".into()));
    }
    let data_end = bytes - 12 - len;
    let mut index = vec![0u8; len as usize];
    file.read_exact_at(&mut index, data_end)
        .map_err(FileError::Io)?;
    if crc32fast::hash(&index) != crc {
        return Err(FileError::Corrupt("index checksum mismatch".into()));
    }
    Ok(Opened {
        file,
        bytes,
        index,
        data_end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_reads_back_and_every_damage_to_its_envelope_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.blk");
        let mut buf = start(b"TEST", 3, 64);
        buf.extend_from_slice(b"data");
        let size = finish(&path, buf, b"index").unwrap();
        assert_eq!(size, 5 + 4 + 5 + 12);
        let o = open(&path, b"TEST", 3).unwrap();
        assert_eq!(
            (o.bytes, o.data_end, o.index.as_slice()),
            (size, 9, &b"index"[..])
        );
        assert!(!dir.path().join("1.tmp").exists());

        let good = std::fs::read(&path).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..10].to_vec(), "too short"),
            ([b"XEST".as_slice(), &good[4..]].concat(), "bad magic"),
            (
                [&good[..4], &[9u8][..], &good[5..]].concat(),
                "unknown version 9",
            ),
            (
                {
                    let mut g = good.clone();
                    g[10] ^= 1;
                    g
                },
                "index checksum mismatch",
            ),
            (
                {
                    let mut g = good.clone();
                    let n = g.len();
                    g[n - 12..n - 8].copy_from_slice(&1000u32.to_le_bytes());
                    g
                },
                "index length beyond the file",
            ),
        ];
        for (bytes, want) in cases {
            std::fs::write(&path, &bytes).unwrap();
            match open(&path, b"TEST", 3) {
                Err(FileError::Corrupt(r)) => assert_eq!(r, want),
                Err(FileError::Io(e)) => panic!("{want}: io {e}"),
                Ok(_) => panic!("{want}: opened"),
            }
        }
        assert!(matches!(
            open(&dir.path().join("missing"), b"TEST", 3),
            Err(FileError::Io(_))
        ));
    }
}
