//! Reading the metrics WAL from a queue's position ([`crate::durable::feed`]): the records
//! between the position and the durable tip, decoded into samples by series id. Segments a
//! queue has finished are left to the engine, which deletes them once blocks cover them and
//! no queue holds them (see [`crate::durable::feed::WalHold`]).

use std::path::Path;

use telltale_common::model::{Labels, Sample};

pub use crate::durable::feed::Position;
use crate::durable::feed::{self, Sink};
use crate::metrics::tsdb::{WalFeed, decode_record};

/// What one read found.
#[derive(Debug, Default)]
pub struct WalRead {
    /// Samples by series id, in WAL order.
    pub points: Vec<(u32, Sample)>,
    /// Samples of records from before series ids were logged (release 0.1), with labels.
    pub labelled: Vec<(Labels, Vec<Sample>)>,
    /// Records that did not decode (skipped, logged).
    pub corrupt: u64,
    /// Whole segments that were gone when the queue reached them (deleted by hand, or by
    /// the byte cap while this queue was behind).
    pub missing_segments: u64,
}

impl WalRead {
    /// Samples read.
    pub fn samples(&self) -> usize {
        self.points.len() + self.labelled.iter().map(|(_, s)| s.len()).sum::<usize>()
    }
}

impl Sink for WalRead {
    fn record(&mut self, payload: &[u8], path: &Path) {
        match decode_record(payload) {
            Ok(r) => {
                self.points.extend(r.points);
                self.labelled.extend(r.labelled);
            }
            Err(e) => {
                tracing::warn!(segment = %path.display(), error = %e, "remote_write: undecodable WAL record skipped");
                self.corrupt += 1;
            }
        }
    }
    fn damaged(&mut self, path: &Path, at: usize, len: usize) {
        tracing::warn!(segment = %path.display(), offset = at, bytes = len, "remote_write: damaged WAL bytes skipped");
        self.corrupt += 1;
    }
    fn items(&self) -> usize {
        self.samples()
    }
}

/// Reads from `pos` towards the tip until at least `max_samples` samples are read (whole
/// records: a read may end a little past it) or the tip is reached. Returns what was read
/// and the position after it.
pub fn read(
    feed: &WalFeed,
    pos: Position,
    max_samples: usize,
) -> std::io::Result<(WalRead, Position)> {
    let mut out = WalRead::default();
    // Points are ~11 bytes a sample in the WAL.
    let (pos, missing) = feed::read(feed, pos, max_samples, 16, &mut out)?;
    out.missing_segments = missing;
    Ok((out, pos))
}

/// Samples in a finished segment from `pos` to its end (what skipping it drops).
pub fn count_rest(dir: &Path, pos: Position) -> u64 {
    let mut out = WalRead::default();
    feed::read_rest(dir, pos, &mut out);
    out.samples() as u64
}

pub use feed::{over_cap, pending_bytes};
