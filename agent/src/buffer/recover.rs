//! Surviving a failed write (a full disk). After sled fails to write — `ENOSPC` above all —
//! that sled instance refuses every later operation, even once space is back; before this,
//! the agent then lost every batch until it was restarted. Now the failure is noted
//! ([`Buffer::disk_full`], the `telltale_agent_disk_full` gauge, a log line from the caller),
//! the caller keeps its batches in memory (bounded, run.rs), and [`Buffer::recover`] opens a
//! new instance on the same files once writes work again.
//!
//! Sequences stay unique across the swap: every sequence below the witness's reservation may
//! have been used (a batch can be read and shipped from sled's memory before the flush that
//! failed), so the new instance continues at the reservation, never below it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Buffer, BufferError, be};

/// sled's handles of one instance.
pub(super) struct Trees {
    pub db: sled::Db,
    pub batches: sled::Tree,
    pub meta: sled::Tree,
    pub logs: sled::Tree,
    pub positions: sled::Tree,
}

impl Trees {
    fn open(db: sled::Db) -> sled::Result<Trees> {
        Ok(Trees {
            batches: db.open_tree("batches")?,
            meta: db.open_tree("meta")?,
            logs: db.open_tree("logs")?,
            positions: db.open_tree("positions")?,
            db,
        })
    }
}

/// Whether a sled error means the instance is done (an I/O error), and whether it is a
/// full disk.
fn classify(e: &sled::Error) -> (bool, bool) {
    match e {
        sled::Error::Io(io) => (
            true,
            io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28),
        ),
        _ => (false, false),
    }
}

impl Buffer {
    /// The current sled handles.
    pub(super) fn t(&self) -> Result<Arc<Trees>, BufferError> {
        self.trees
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| BufferError::Reopening(self.dir.clone()))
    }

    /// Notes what a sled error says about the instance.
    pub(super) fn note_failure(&self, e: &sled::Error) {
        let (broken, full) = classify(e);
        if broken {
            self.broken.store(true, Ordering::Relaxed);
        }
        if full {
            self.disk_full.store(true, Ordering::Relaxed);
        }
    }

    /// A write failed because the disk is full, and the buffer has not recovered yet.
    pub fn disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Relaxed)
    }

    /// A write failed and the buffer has not recovered yet: pushes fail until
    /// [`Buffer::recover`] succeeds.
    pub fn broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Replaces a failed sled instance by a new one on the same files. `Ok(true)`: the buffer
    /// works (again); `Ok(false)`: not yet (the old instance is still in use for a moment);
    /// an error: the new instance cannot write either (still full) — call again later.
    pub fn recover(&self) -> Result<bool, BufferError> {
        if !self.broken() {
            return Ok(true);
        }
        {
            let mut g = self.trees.write().unwrap_or_else(|e| e.into_inner());
            // The old instance must be gone before the new one can take the files' lock.
            if g.as_ref().is_some_and(|t| Arc::strong_count(t) > 1) {
                return Ok(false);
            }
            *g = None;
            let trees = Self::open_db_inner(&self.dir)
                .and_then(|db| Trees::open(db).map_err(|e| self.err(e)))?;
            let stored = trees
                .meta
                .get("next_seq")
                .map_err(|e| self.err(e))?
                .and_then(|v| be(&v))
                .unwrap_or(0);
            let next = stored.max(self.reserved.load(Ordering::Relaxed));
            trees
                .meta
                .insert("next_seq", &next.to_be_bytes())
                .map_err(|e| self.err(e))?;
            // A write that works: the disk has room again.
            trees.db.flush().map_err(|e| self.err(e))?;
            *g = Some(Arc::new(trees));
        }
        self.scan(false)?;
        self.broken.store(false, Ordering::Relaxed);
        self.disk_full.store(false, Ordering::Relaxed);
        Ok(true)
    }
}
