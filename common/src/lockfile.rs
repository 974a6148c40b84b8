//! An exclusive lock on a data directory, taken before anything in it is read or written, so a
//! second process started on the same directory stops at once and names the one holding it.
//!
//! The lock is `flock(2)` on `DIR/LOCK`, which also holds the holder's description (program
//! and pid). The kernel releases it when the process ends, however it ends, so a stale file
//! from a killed process never blocks a restart.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the directory.
pub const LOCK_FILE: &str = "LOCK";

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("data directory {dir} is in use by {holder}; stop it first, or use another directory")]
    Held {
        /// The directory.
        dir: PathBuf,
        /// What the lock file says of its holder.
        holder: String,
    },
    /// The directory or the lock file cannot be created or opened.
    #[error("cannot lock data directory {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
    /// The directory locked.
    pub dir: PathBuf,
}

/// Creates `dir` if needed and locks it for `program`.
pub fn lock_dir(dir: &Path, program: &str) -> Result<DirLock, LockError> {
    let io = |source| LockError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))
        .map_err(io)?;
    use rustix::fs::{FlockOperation, flock};
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(LockError::Held {
                dir: dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "another process".into()
                } else {
                    holder.to_string()
                },
            });
        }
        Err(e) => return Err(io(e.into())),
    }
    // Ours now: say who holds it.
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    writeln!(file, "{program} (pid {})", std::process::id()).map_err(io)?;
    Ok(DirLock {
        _file: file,
        dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_released_one_is_taken_again() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        let held = lock_dir(&dir, "telltale-test").unwrap();
        // flock locks belong to the open file: a second open in this process conflicts too.
        let e = lock_dir(&dir, "other").unwrap_err().to_string();
        assert!(e.contains("in use by telltale-test (pid "), "{e}");
        drop(held);
        lock_dir(&dir, "other").unwrap();
    }
}
