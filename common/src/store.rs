//! Opening the sled stores both daemons keep (the agent's buffer and remediation journal, the
//! aggregator's alerting state) with one policy: a store that is *damaged* is moved aside and
//! replaced by a new one, counted and logged, so start-up is never blocked by it; a store that
//! cannot be opened for any other reason — held by another process, owned by another user, a
//! full or read-only disk — is a start-up error, and nothing is moved.

use std::path::{Path, PathBuf};

/// Whether sled's error means the files are damaged (rather than unreachable).
pub fn is_damage(e: &sled::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) => true,
        // A damaged `conf` file reads as settings this build does not support.
        sled::Error::Unsupported(_) => true,
        sled::Error::Io(io) => {
            matches!(io.kind(), ErrorKind::InvalidData | ErrorKind::UnexpectedEof)
        }
        _ => false,
    }
}

/// Whether sled's error is its file lock held (by this process or another).
fn is_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// A store that could not be opened (a damaged one is replaced, not an error).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled refused to open it: held by another process, owned by another user, a full or
    /// read-only disk. Nothing was moved.
    #[error("cannot open {what} in {dir}: {source}")]
    Open {
        /// What the store is for.
        what: String,
        /// Its directory.
        dir: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// It was damaged and could not be moved aside.
    #[error("{what} in {dir} is damaged ({reason}) and cannot be moved aside: {source}")]
    MoveAside {
        /// What the store is for.
        what: String,
        /// Its directory.
        dir: PathBuf,
        /// The damage.
        reason: String,
        /// Why the rename failed.
        source: std::io::Error,
    },
    /// It was moved aside, and a new one could not be created.
    #[error("cannot create {what} in {dir}: {source}")]
    Create {
        /// What the store is for.
        what: String,
        /// Its directory.
        dir: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
}

/// How a store was opened.
pub struct Opened {
    /// The store.
    pub db: sled::Db,
    /// Where the damaged store was moved, if it was.
    pub moved_aside: Option<PathBuf>,
}

/// Opens `dir` with `open`; if sled reports damage (or panics reading it), moves `dir` aside
/// as `DIR.corrupt-<ms>` and opens a new store. Any other error is returned as it is.
pub fn open_or_replace(
    dir: &Path,
    what: &str,
    open: impl Fn(&Path) -> sled::Result<sled::Db>,
) -> Result<Opened, StoreError> {
    // sled releases its file lock when its last background thread lets go of the store, a
    // moment after the `Db` is dropped: a store closed and reopened in one process (a test, a
    // reload) can meet its own old lock. Another process cannot hold it (the daemons' own lock
    // file comes first), so a held lock is waited for, briefly, before it is an error.
    let try_open = || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open(dir)));
    let mut first = try_open();
    for _ in 0..100 {
        match &first {
            Ok(Err(e)) if is_held(e) => {
                std::thread::sleep(std::time::Duration::from_millis(20));
                first = try_open();
            }
            _ => break,
        }
    }
    let reason = match first {
        Ok(Ok(db)) => {
            return Ok(Opened {
                db,
                moved_aside: None,
            });
        }
        Ok(Err(e)) if is_damage(&e) => e.to_string(),
        Ok(Err(source)) => {
            return Err(StoreError::Open {
                what: what.to_string(),
                dir: dir.to_path_buf(),
                source,
            });
        }
        Err(_) => "reading it panicked".to_string(),
    };
    let aside = dir.with_extension(format!("corrupt-{}", crate::model::now_ms()));
    tracing_log(what, dir, &reason, &aside);
    std::fs::rename(dir, &aside).map_err(|source| StoreError::MoveAside {
        what: what.to_string(),
        dir: dir.to_path_buf(),
        reason: reason.clone(),
        source,
    })?;
    let db = open(dir).map_err(|source| StoreError::Create {
        what: what.to_string(),
        dir: dir.to_path_buf(),
        source,
    })?;
    Ok(Opened {
        db,
        moved_aside: Some(aside),
    })
}

fn tracing_log(what: &str, dir: &Path, reason: &str, aside: &Path) {
    tracing::error!(
        dir = %dir.display(), aside = %aside.display(), reason,
        "{what} is damaged: moved aside and started empty; what it held is lost"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(p: &Path) -> sled::Result<sled::Db> {
        sled::Config::new().path(p).open()
    }

    /// Fills a store and returns it still open. (Dropping a `sled::Db` releases its file
    /// lock only when sled's background threads let go of it, a moment later.)
    fn filled(dir: &Path) -> sled::Db {
        let db = open(dir).unwrap();
        for i in 0..2000u32 {
            db.insert(i.to_be_bytes(), vec![7u8; 100]).unwrap();
        }
        db.flush().unwrap();
        db
    }

    /// A damaged `conf` is reported by sled as corruption: moved aside, a new store opened.
    /// (Damage in `db` is not reported at all — sled keeps the records before it — which is
    /// why the stores that must notice keep a witness of their own, like the agent buffer.)
    #[test]
    fn damage_sled_reports_is_moved_aside() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("s");
        // Dropped just before the reopen: open_or_replace waits for sled's late release.
        drop(filled(&dir));
        let mut bytes = std::fs::read(dir.join("conf")).unwrap();
        for b in &mut bytes[..16] {
            *b ^= 0x5A;
        }
        std::fs::write(dir.join("conf"), bytes).unwrap();
        let o = open_or_replace(&dir, "test store", open).unwrap();
        let aside = o.moved_aside.expect("moved aside");
        assert!(aside.join("db").exists());
        assert!(o.db.is_empty());
        o.db.insert("k", "v").unwrap();
    }

    /// What is damage and what is not: a permission problem, a held lock or a full disk is
    /// never a reason to move a healthy store aside (root cannot be refused a file here, so
    /// the classification is tested on the errors themselves).
    #[test]
    fn only_damage_is_damage() {
        use std::io::{Error, ErrorKind};
        assert!(is_damage(&sled::Error::Corruption { at: None, bt: () }));
        assert!(is_damage(&sled::Error::Io(Error::new(
            ErrorKind::UnexpectedEof,
            "short"
        ))));
        for kind in [
            ErrorKind::PermissionDenied,
            ErrorKind::Other, // sled's "could not acquire lock"
            ErrorKind::StorageFull,
            ErrorKind::ReadOnlyFilesystem,
            ErrorKind::NotFound,
        ] {
            assert!(
                !is_damage(&sled::Error::Io(Error::new(kind, "x"))),
                "{kind:?}"
            );
        }
        // And an open that fails for such a reason moves nothing.
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("s");
        let _held = filled(&dir);
        let e = open_or_replace(&dir, "test store", |_| {
            Err(sled::Error::Io(Error::new(
                ErrorKind::PermissionDenied,
                "EACCES",
            )))
        });
        assert!(matches!(e, Err(m) if m.to_string().contains("EACCES")));
        assert!(dir.join("db").exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_held_store_is_an_error_and_not_moved() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("s");
        let held = filled(&dir);
        let e = match open_or_replace(&dir, "test store", open) {
            Err(e) => e,
            Ok(_) => panic!("opened a held store"),
        };
        assert!(e.to_string().contains("cannot open test store"), "{e}");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "nothing moved"
        );
        drop(held);
    }
}
