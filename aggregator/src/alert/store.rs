//! The alerting state's sled store (silences, alerts, incidents, the notification outbox, and
//! the remediation records beside them), behind a handle that survives a full disk.
//!
//! After a write fails — `ENOSPC` above all — a sled instance refuses every later operation,
//! even once space is back: before this, a full disk left alerting unable to record a silence,
//! an incident or a notification until the aggregator was restarted (found by the disk-full
//! test, tests/tests/chaos.rs). It lives with the vocabulary alerting and remediation share,
//! since both keep records in it. Every operation goes through [`StateStore`]; an I/O error marks
//! the instance broken, and the next operation (at most once a second) drops it and opens a new
//! one on the same files. What the failed instance held only in memory is gone with it — it
//! was never acknowledged as durable (the write that failed returned its error to its caller).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The open instance: the database (flushes, ids) and the `alerting` tree.
type Handles = (sled::Db, sled::Tree);

/// A stored record: key and value.
pub type Record = (Vec<u8>, Vec<u8>);

/// Why the state cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Held by another process, no permission, a full disk.
    #[error(transparent)]
    Store(#[from] telltale_common::store::StoreError),
    /// sled failed.
    #[error("alerting state: {0}")]
    Sled(#[from] sled::Error),
}

struct Inner {
    dir: PathBuf,
    open: RwLock<Option<Handles>>,
    broken: AtomicBool,
    last_try: Mutex<Option<Instant>>,
}

/// The alerting state's store, shared with the remediation driver (its records live in the
/// same tree, as in earlier releases). Cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    inner: Arc<Inner>,
    /// Whether a damaged store was moved aside at open.
    pub moved_aside: bool,
}

fn config(dir: &Path) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .cache_capacity(16 << 20)
        .flush_every_ms(Some(500))
}

impl StateStore {
    /// Opens the state in `dir`. Damaged state is moved aside and the aggregator starts
    /// without it (alerts are re-evaluated by the rules; silences, incidents and the
    /// notification log are lost and logged); a store that cannot be opened for another
    /// reason stops start-up.
    pub fn open(dir: &Path) -> Result<StateStore, OpenError> {
        let opened =
            telltale_common::store::open_or_replace(dir, "alerting state", |d| config(d).open())?;
        let tree = opened.db.open_tree("alerting")?;
        Ok(StateStore {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                open: RwLock::new(Some((opened.db, tree))),
                broken: AtomicBool::new(false),
                last_try: Mutex::new(None),
            }),
            moved_aside: opened.moved_aside.is_some(),
        })
    }

    /// The open instance's handles, reopening a broken one first (at most once a second).
    fn handles(&self) -> sled::Result<Handles> {
        if self.inner.broken.load(Ordering::Relaxed) {
            self.reopen();
        }
        self.inner
            .open
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| {
                sled::Error::Io(std::io::Error::other(
                    "the alerting state is being reopened after a failed write",
                ))
            })
    }

    /// Notes an I/O error: the instance is done.
    fn check<T>(&self, r: sled::Result<T>) -> sled::Result<T> {
        if let Err(sled::Error::Io(e)) = &r
            && !self.inner.broken.swap(true, Ordering::Relaxed)
        {
            tracing::error!(error = %e, "alerting state cannot write (a full disk?): it is reopened once writes work again");
        }
        r
    }

    fn reopen(&self) {
        {
            let mut last = self
                .inner
                .last_try
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return;
            }
            *last = Some(Instant::now());
        }
        let mut g = self.inner.open.write().unwrap_or_else(|e| e.into_inner());
        // Dropped first: the new instance needs the files' lock, which goes with the last
        // handle of the old one (clones are held only for the length of one operation).
        g.take();
        let opened = config(&self.inner.dir).open().and_then(|db| {
            let tree = db.open_tree("alerting")?;
            // A write that works: the disk has room again.
            db.flush()?;
            Ok((db, tree))
        });
        match opened {
            Ok(h) => {
                *g = Some(h);
                self.inner.broken.store(false, Ordering::Relaxed);
                tracing::info!("alerting state reopened: writes work again");
            }
            Err(e) => tracing::debug!(error = %e, "alerting state not reopened yet"),
        }
    }

    /// A new unique id (the outbox's keys).
    pub fn generate_id(&self) -> sled::Result<u64> {
        let r = self.handles().and_then(|(db, _)| db.generate_id());
        self.check(r)
    }

    /// Applies a batch atomically (in memory until [`StateStore::flush`]).
    pub fn apply_batch(&self, b: sled::Batch) -> sled::Result<()> {
        let r = self.handles().and_then(|(_, t)| t.apply_batch(b));
        self.check(r)
    }

    /// Stores `k`.
    pub fn insert(&self, k: impl AsRef<[u8]>, v: impl Into<sled::IVec>) -> sled::Result<()> {
        let r = self
            .handles()
            .and_then(|(_, t)| t.insert(k.as_ref(), v).map(|_| ()));
        self.check(r)
    }

    /// Removes `k`.
    pub fn remove(&self, k: impl AsRef<[u8]>) -> sled::Result<()> {
        let r = self
            .handles()
            .and_then(|(_, t)| t.remove(k.as_ref()).map(|_| ()));
        self.check(r)
    }

    /// Reads `k`.
    pub fn get(&self, k: impl AsRef<[u8]>) -> sled::Result<Option<sled::IVec>> {
        let r = self.handles().and_then(|(_, t)| t.get(k.as_ref()));
        self.check(r)
    }

    /// The records under `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &str) -> sled::Result<sled::Iter> {
        self.handles().map(|(_, t)| t.scan_prefix(prefix))
    }

    /// Makes everything written so far durable.
    pub async fn flush(&self) -> sled::Result<()> {
        let db = self.handles()?.0;
        let r = db.flush_async().await.map(|_| ());
        drop(db);
        self.check(r)
    }

    /// The records under `prefix` and how many could not be read (skipped, logged).
    pub fn load(&self, prefix: &str) -> (Vec<Record>, u64) {
        let mut bad = 0;
        let mut out = Vec::new();
        let iter = match self.scan_prefix(prefix) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(prefix, error = %e, "alerting state unreadable");
                return (out, 1);
            }
        };
        for r in iter {
            match r {
                Ok((k, v)) => out.push((k.to_vec(), v.to_vec())),
                Err(e) => {
                    tracing::error!(prefix, error = %e, "unreadable alerting state record skipped");
                    bad += 1;
                }
            }
        }
        (out, bad)
    }
}
