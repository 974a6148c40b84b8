//! The engine's side of WAL readers (the remote_write queues of `forward`): a hold that keeps
//! segments they have not sent, and a handle to find and decode what they read.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use telltale_common::model::Labels;

use super::Inner;
use crate::durable::feed::Feed;
pub use crate::durable::feed::WalHold;

/// What a reader of the WAL needs from the engine (the remote_write queues of `forward`):
/// where the segments are, how far they are durable, which are covered by blocks, and the
/// labels behind the series ids that records carry. Cheap to clone.
#[derive(Clone)]
pub struct WalFeed {
    pub(super) inner: Arc<Inner>,
}

impl WalFeed {
    /// The directory of the segments (`DATA_DIR/log`).
    pub fn dir(&self) -> PathBuf {
        self.inner.dir.join("log")
    }

    /// The segment being written and its synced length: records before it are durable (and
    /// acknowledged or about to be); bytes after it may still be cut off by a failed write.
    pub fn tip(&self) -> (u64, u64) {
        *self.inner.wal_tip.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first segment the written checkpoint does not cover: segments below it are kept
    /// only for readers (and count against their byte cap).
    pub fn checkpointed(&self) -> u64 {
        self.inner.checkpointed_segment.load(Ordering::Relaxed)
    }

    /// The labels of a series id (every id a record names is in the head).
    pub fn labels(&self, id: u32) -> Option<Labels> {
        let h = self.inner.head.read().unwrap_or_else(|e| e.into_inner());
        h.get(id).map(|s| s.labels.clone())
    }

    /// The readers' hold on segments.
    pub fn hold(&self) -> &WalHold {
        &self.inner.opts.wal_hold
    }
}

impl Feed for WalFeed {
    fn wal_dir(&self) -> PathBuf {
        self.dir()
    }
    fn tip(&self) -> (u64, u64) {
        WalFeed::tip(self)
    }
    fn checkpointed(&self) -> u64 {
        WalFeed::checkpointed(self)
    }
}

/// The samples of one WAL record: by series id, and (records from before ids were logged,
/// release 0.1) with their labels.
#[derive(Debug, Default)]
pub struct WalSamples {
    /// Samples by series id.
    pub points: Vec<(u32, telltale_common::model::Sample)>,
    /// Samples with their labels.
    pub labelled: Vec<(Labels, Vec<telltale_common::model::Sample>)>,
}

/// Decodes a WAL record's payload (a frame's payload, as [`crate::durable::frames::Scanner`]
/// finds it) into its samples; damage is an error, never a panic.
pub fn decode_record(payload: &[u8]) -> Result<WalSamples, super::wal::RecordError> {
    let rec: super::wal::Record<'_> = telltale_common::codec::decode_borrowed(payload)?;
    let mut out = WalSamples::default();
    if let Some(p) = rec.points {
        out.points = super::wal::decode_points(p)?;
    }
    if rec.wire.is_some() || !rec.series.is_empty() {
        let (series, _) =
            super::wal::prepare(rec.agent, rec.wire.map(|w| w.as_ref()), &rec.series)?;
        out.labelled = series
            .into_iter()
            .map(|(pairs, samples)| (Labels::from_pairs(pairs), samples))
            .collect();
    }
    Ok(out)
}
