//! Deletions (`POST /api/v1/admin/tsdb/delete_series`, like Prometheus'): a tombstone names
//! series ids and a time interval; it is appended to `tombstones` (a record file, synced
//! before the call answers) and kept in memory by series id.
//!
//! - **Reads** drop the samples a tombstone covers, and the rollup buckets whose window
//!   touches it, so a deletion is visible at once, before any file is rewritten.
//! - **Compaction and rollups** leave covered samples out of what they write.
//! - **`clean_tombstones`** cuts the head into blocks, rewrites every block that holds
//!   covered samples, and then forgets the tombstones it applied (records added meanwhile
//!   stay). Series left with no sample at all are named in one *emptied* record (an empty
//!   interval, `start > end`, hiding nothing): the head keeps every series it ever saw (ids
//!   are positions in `series.log`), and this record keeps emptied ones out of the label
//!   listings over all time until a sample brings them back.
//! - A tombstone's end is **clamped to the time of the call**: a deletion removes what is
//!   stored, not what an agent sends next. (Prometheus' open-ended deletion of a live series
//!   also hides its new samples until the tombstone is cleaned.) A sample written later into
//!   a deleted interval — within the out-of-order window — is hidden until
//!   `clean_tombstones` has run.
//! - Tombstones older than every retention (`end` before both cut-offs) have nothing left to
//!   hide and are forgotten by retention.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use telltale_common::codec;
use telltale_common::model::Sample;

use super::files;
use crate::metrics::storage::rollup::Bucket;

/// The file under the data directory.
pub const FILE: &str = "tombstones";

/// One deletion: these series, samples with `start <= t <= end`; or, with `start > end`, the
/// series a clean emptied (at `end`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Series ids.
    pub ids: Vec<u32>,
    /// First deleted timestamp (ms).
    pub start: i64,
    /// Last deleted timestamp (ms).
    pub end: i64,
}

impl Record {
    /// The record of the series a clean at `at` left without samples.
    pub fn emptied(ids: Vec<u32>, at: i64) -> Record {
        Record {
            ids,
            start: i64::MAX,
            end: at,
        }
    }
}

/// Merged, sorted, disjoint intervals `[start, end]` of one series.
pub type Intervals = Arc<[(i64, i64)]>;

/// The deletions in force.
#[derive(Debug, Default)]
pub struct Tombstones {
    /// In the order they were made (the file's order).
    records: Vec<Record>,
    by_id: HashMap<u32, Intervals>,
    emptied: HashSet<u32>,
}

impl Tombstones {
    /// Reads `<dir>/tombstones` (none when missing). A damaged record is skipped and
    /// reported: its deletion is lost, never the data of other series.
    pub fn load(dir: &Path) -> std::io::Result<Tombstones> {
        let frames = files::read_frames(&dir.join(FILE))?;
        let mut records = Vec::new();
        let mut bad = frames.corrupt;
        for p in &frames.payloads {
            match codec::decode_borrowed::<Record>(p) {
                Ok(r) => records.push(r),
                Err(_) => bad += 1,
            }
        }
        if bad > 0 || frames.torn > 0 {
            tracing::error!(
                damaged = bad,
                torn_bytes = frames.torn,
                "tombstones damaged: the intact deletions are applied; repeat the others"
            );
        }
        let mut t = Tombstones {
            records,
            ..Tombstones::default()
        };
        t.reindex();
        Ok(t)
    }

    fn reindex(&mut self) {
        let mut raw: HashMap<u32, Vec<(i64, i64)>> = HashMap::new();
        self.emptied.clear();
        for r in &self.records {
            if r.start > r.end {
                self.emptied.extend(&r.ids);
                continue;
            }
            for &id in &r.ids {
                raw.entry(id).or_default().push((r.start, r.end));
            }
        }
        self.by_id = raw.into_iter().map(|(id, v)| (id, merge(v))).collect();
    }

    /// Whether no deletion is in force and no series was emptied.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty() && self.emptied.is_empty()
    }

    /// The series emptied by cleans (until a sample brings one back).
    pub fn emptied(&self) -> impl Iterator<Item = u32> + '_ {
        self.emptied.iter().copied()
    }

    /// Whether series `id` has deletions or was emptied by a clean (a listing checks its
    /// data).
    pub fn touched(&self, id: u32) -> bool {
        self.by_id.contains_key(&id) || self.emptied.contains(&id)
    }

    /// Deletion records in force.
    pub fn records(&self) -> usize {
        self.records.len()
    }

    /// Series with deleted intervals.
    pub fn series(&self) -> usize {
        self.by_id.len()
    }

    /// A copy of the records that delete (not the emptied ones): what a clean applies.
    pub fn deletions(&self) -> Vec<Record> {
        self.records
            .iter()
            .filter(|r| r.start <= r.end)
            .cloned()
            .collect()
    }

    /// The deleted intervals of series `id`.
    pub fn get(&self, id: u32) -> Option<Intervals> {
        self.by_id.get(&id).cloned()
    }

    /// Makes `rec` durable in `<dir>/tombstones`, then in force.
    pub fn add(&mut self, dir: &Path, rec: Record) -> std::io::Result<()> {
        let payload = codec::encode_payload(&rec).map_err(std::io::Error::other)?;
        files::append_frames(&dir.join(FILE), &[payload])?;
        self.records.push(rec);
        self.reindex();
        Ok(())
    }

    /// Forgets the records in `applied` (by a clean) and those ending before `before`; with
    /// `emptied` (a clean's finding), its one record replaces the emptied records. Rewrites
    /// the file atomically when anything changes.
    pub fn forget(
        &mut self,
        dir: &Path,
        applied: &[Record],
        before: i64,
        emptied: Option<Record>,
    ) -> std::io::Result<()> {
        let replace = emptied.is_some();
        let mut keep: Vec<Record> = self
            .records
            .iter()
            .filter(|r| r.end >= before && !applied.contains(r))
            .filter(|r| !(replace && r.start > r.end))
            .cloned()
            .collect();
        if keep.len() == self.records.len() && !replace {
            return Ok(());
        }
        keep.extend(emptied.filter(|r| !r.ids.is_empty()));
        let payloads = keep
            .iter()
            .map(codec::encode_payload)
            .collect::<Result<Vec<_>, _>>()
            .map_err(std::io::Error::other)?;
        files::write_atomic(&dir.join(FILE), &payloads)?;
        self.records = keep;
        self.reindex();
        Ok(())
    }
}

/// Sorts and merges overlapping or touching intervals.
fn merge(mut v: Vec<(i64, i64)>) -> Intervals {
    v.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out.into()
}

/// Whether `t` is in one of `iv`.
pub fn covers(iv: &[(i64, i64)], t: i64) -> bool {
    let i = iv.partition_point(|&(s, _)| s <= t);
    i > 0 && t <= iv[i - 1].1
}

/// Whether one of `iv` meets `[from, to]`.
pub fn meets(iv: &[(i64, i64)], from: i64, to: i64) -> bool {
    iv.iter().any(|&(s, e)| s <= to && e >= from)
}

/// Removes the samples `iv` covers.
pub fn drop_samples(iv: &[(i64, i64)], samples: &mut Vec<Sample>) {
    samples.retain(|s| !covers(iv, s.0));
}

/// Removes the buckets of width `res` (covering `(end - res, end]`) that a deletion meets.
pub fn drop_buckets(iv: &[(i64, i64)], res: i64, buckets: &mut Vec<Bucket>) {
    buckets.retain(|b| !meets(iv, b.end.saturating_sub(res) + 1, b.end));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_survive_a_reload_and_forgetting_rewrites_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tombstones::load(dir.path()).unwrap();
        assert!(t.is_empty());
        t.add(
            dir.path(),
            Record {
                ids: vec![1, 2],
                start: 10,
                end: 20,
            },
        )
        .unwrap();
        t.add(
            dir.path(),
            Record {
                ids: vec![2],
                start: 21,
                end: 30,
            },
        )
        .unwrap();
        let t2 = Tombstones::load(dir.path()).unwrap();
        assert_eq!(t2.records(), 2);
        assert_eq!(
            &*t2.get(2).unwrap(),
            &[(10, 30)],
            "touching intervals merge"
        );
        assert_eq!(&*t2.get(1).unwrap(), &[(10, 20)]);
        let mut t2 = t2;
        let first = t2.deletions()[..1].to_vec();
        t2.forget(dir.path(), &first, i64::MIN, None).unwrap();
        let t3 = Tombstones::load(dir.path()).unwrap();
        assert_eq!(t3.records(), 1);
        assert!(t3.get(1).is_none());
        assert_eq!(&*t3.get(2).unwrap(), &[(21, 30)]);
        let mut t3 = t3;
        t3.forget(dir.path(), &[], 31, None).unwrap();
        assert!(Tombstones::load(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_damaged_record_loses_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tombstones::default();
        t.add(
            dir.path(),
            Record {
                ids: vec![1],
                start: 0,
                end: 5,
            },
        )
        .unwrap();
        t.add(
            dir.path(),
            Record {
                ids: vec![2],
                start: 0,
                end: 5,
            },
        )
        .unwrap();
        let p = dir.path().join(FILE);
        let mut b = std::fs::read(&p).unwrap();
        let last = b.len() - 1;
        b[HEADER_AT.min(last)] ^= 0xff;
        std::fs::write(&p, &b).unwrap();
        let t = Tombstones::load(dir.path()).unwrap();
        assert_eq!(t.records(), 1, "the intact record is kept");
    }
    /// A byte inside the first record's payload.
    const HEADER_AT: usize = telltale_common::codec::HEADER_LEN + 2;

    proptest! {
        #[test]
        fn coverage_agrees_with_the_plain_definition(
            iv in proptest::collection::vec((-50i64..50, 0i64..20), 0..6),
            t in -60i64..80,
        ) {
            let raw: Vec<(i64, i64)> = iv.iter().map(|&(s, l)| (s, s + l)).collect();
            let merged = merge(raw.clone());
            let plain = raw.iter().any(|&(s, e)| s <= t && t <= e);
            prop_assert_eq!(covers(&merged, t), plain);
            prop_assert!(merged.windows(2).all(|w| w[0].1 + 1 < w[1].0));
        }
    }
}
