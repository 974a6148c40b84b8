//! Snapshots (`POST /api/v1/admin/tsdb/snapshot`): the head is cut into blocks first, then
//! the engine's files are put under `<data dir>/snapshots/<name>/` as a data directory of its
//! own — `serve --data-dir` on it reads the metrics back. Blocks are immutable once written,
//! so they are hard-linked (no copy, and a later compaction that deletes the original leaves
//! the snapshot's link); the files the engine appends to (series.log, events.log, the WAL,
//! the checkpoint) are copied, so the snapshot does not grow with them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The files of the engine at `data_dir`: `(path relative to it, hard-linkable)`.
fn engine_files(data_dir: &Path) -> io::Result<Vec<(PathBuf, bool)>> {
    let mut out = Vec::new();
    for f in [
        "series.log",
        "events.log",
        "checkpoint",
        super::tombstones::FILE,
    ] {
        if data_dir.join(f).is_file() {
            out.push((PathBuf::from(f), false));
        }
    }
    for (dir, ext, link) in [("blocks", "blk", true), ("log", "seg", false)] {
        let d = data_dir.join(dir);
        if !d.is_dir() {
            continue;
        }
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            if p.extension().and_then(|x| x.to_str()) == Some(ext)
                && let Some(name) = p.file_name()
            {
                out.push((Path::new(dir).join(name), link));
            }
        }
    }
    Ok(out)
}

/// Puts the engine's files at `data_dir` into `dest` (created). A block compacted away
/// between listing and linking is skipped when its successor is linked instead: the listing
/// is retried a few times until every file it names is there.
pub fn take(data_dir: &Path, dest: &Path) -> io::Result<usize> {
    for attempt in 0..5 {
        let _ = fs::remove_dir_all(dest);
        fs::create_dir_all(dest.join("blocks"))?;
        fs::create_dir_all(dest.join("log"))?;
        let mut n = 0;
        let mut vanished = false;
        for (rel, link) in engine_files(data_dir)? {
            let (from, to) = (data_dir.join(&rel), dest.join(&rel));
            let r = if link {
                fs::hard_link(&from, &to).or_else(|_| fs::copy(&from, &to).map(|_| ()))
            } else {
                fs::copy(&from, &to).map(|_| ())
            };
            match r {
                Ok(()) => n += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < 4 => {
                    vanished = true;
                    break;
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", from.display()))),
            }
        }
        if !vanished {
            // Durable before it is reported: every file, then the directories naming them.
            for (rel, _) in engine_files(dest)? {
                fs::File::open(dest.join(rel))?.sync_all()?;
            }
            for d in [dest.join("blocks"), dest.join("log"), dest.to_path_buf()] {
                fs::File::open(d)?.sync_all()?;
            }
            return Ok(n);
        }
    }
    Err(io::Error::other("the data directory kept changing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_linked_and_appended_files_copied() {
        let d = tempfile::tempdir().unwrap();
        let (data, snap) = (d.path().join("data"), d.path().join("snap"));
        fs::create_dir_all(data.join("blocks")).unwrap();
        fs::create_dir_all(data.join("log")).unwrap();
        fs::write(data.join("series.log"), b"s1").unwrap();
        fs::write(data.join("blocks/0001.blk"), b"block").unwrap();
        fs::write(data.join("blocks/0002.tmp"), b"half").unwrap();
        fs::write(data.join("log/0001.seg"), b"w").unwrap();
        fs::write(data.join("LOCK"), b"").unwrap();
        assert_eq!(take(&data, &snap).unwrap(), 3);
        // Appending to the original does not reach the snapshot.
        fs::write(data.join("series.log"), b"s1s2").unwrap();
        assert_eq!(fs::read(snap.join("series.log")).unwrap(), b"s1");
        assert_eq!(fs::read(snap.join("blocks/0001.blk")).unwrap(), b"block");
        assert!(!snap.join("blocks/0002.tmp").exists() && !snap.join("LOCK").exists());
        // A compaction deleting the block leaves the snapshot's link.
        fs::remove_file(data.join("blocks/0001.blk")).unwrap();
        assert_eq!(fs::read(snap.join("blocks/0001.blk")).unwrap(), b"block");
    }
}
