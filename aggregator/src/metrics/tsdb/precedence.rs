//! Which of two blocks' samples at the same time wins: the newer block's, by sequence
//! number. What compaction needs to keep that order when it rewrites blocks (see
//! `compact::merge_write`): sequence numbers reserved ahead of a merge, and which blocks share
//! times of a series.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Inner;
use super::block::Block;

/// Sequence numbers for the blocks a merge writes: from a range reserved beforehand (so the
/// merge's place in the order is fixed before anything is written), then fresh ones.
pub(super) struct Seqs {
    next: u64,
    end: u64,
}

impl Seqs {
    /// No reservation: every block gets the next fresh number.
    pub(super) fn fresh() -> Seqs {
        Seqs { next: 0, end: 0 }
    }

    /// Reserves enough numbers for the blocks merging `blocks` can write: one per window of
    /// `narrowest` (the narrowest a merge cuts into) that each touches.
    pub(super) fn reserve(inner: &Inner, blocks: &[Arc<Block>], narrowest: i64) -> Seqs {
        let n: u64 = blocks
            .iter()
            .map(|b| (b.max_t.saturating_sub(b.min_t) / narrowest).max(0) as u64 + 2)
            .sum();
        let next = inner.next_seq.fetch_add(n, Ordering::Relaxed);
        Seqs {
            next,
            end: next + n,
        }
    }

    pub(super) fn take(&mut self, inner: &Inner) -> u64 {
        if self.next < self.end {
            self.next += 1;
            self.next - 1
        } else {
            inner.next_seq.fetch_add(1, Ordering::Relaxed)
        }
    }
}

/// The `candidates` that are newer than a block of `seeds`, or than a candidate already
/// chosen, and share times with it, repeated until none is added; by ascending sequence.
pub(super) fn with_newer_sharing(
    shared: &mut SharedTimes,
    seeds: &[Arc<Block>],
    candidates: &[Arc<Block>],
) -> Vec<Arc<Block>> {
    let mut chosen: Vec<Arc<Block>> = Vec::new();
    loop {
        let mut more = Vec::new();
        for b in candidates {
            if chosen.iter().any(|c| Arc::ptr_eq(c, b)) {
                continue;
            }
            let pulled = seeds
                .iter()
                .chain(&chosen)
                .any(|s| s.seq < b.seq && shared.check(s, b));
            if pulled {
                more.push(Arc::clone(b));
            }
        }
        if more.is_empty() {
            chosen.sort_by_key(|b| b.seq);
            return chosen;
        }
        chosen.extend(more);
    }
}

/// Whether two blocks share times of a series, from their indexes (read once per block).
/// Blocks cut one after the other overlap as a whole (the ingest lag), but a series'
/// samples in them follow each other; only a write at times a series already has in an
/// older block makes two blocks share them. A block whose index cannot be read counts as
/// sharing (rewriting it finds out whether it is damaged).
#[derive(Default)]
pub(super) struct SharedTimes {
    ranges: HashMap<u64, Option<Vec<SeriesRange>>>,
}

impl SharedTimes {
    pub(super) fn check(&mut self, a: &Block, b: &Block) -> bool {
        if a.kind != b.kind || a.min_t > b.max_t || b.min_t > a.max_t {
            return false;
        }
        for x in [a, b] {
            self.ranges
                .entry(x.seq)
                .or_insert_with(|| x.series_ranges().ok());
        }
        match (&self.ranges[&a.seq], &self.ranges[&b.seq]) {
            (Some(x), Some(y)) => series_overlap(x, y),
            _ => true,
        }
    }
}

/// A series' time range in a block: `(series, min_t, max_t)`.
type SeriesRange = (u32, i64, i64);

/// Whether some series has overlapping time ranges in both lists (each sorted by series).
fn series_overlap(x: &[SeriesRange], y: &[SeriesRange]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        let (a, b) = (x[i], y[j]);
        match a.0.cmp(&b.0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                if a.1 <= b.2 && b.1 <= a.2 {
                    return true;
                }
                i += 1;
                j += 1;
            }
        }
    }
    false
}
