//! The in-memory side of the log store: every series with its samples, an index from label
//! sets to series, and postings from `(label, value)` to series for selective matchers.

use std::collections::HashMap;
use std::hash::Hasher;

use rustc_hash::{FxHashMap, FxHasher};
use telltale_common::model::{Labels, Sample, is_stale_marker};

use crate::storage::{MatchOp, Matcher, SeriesData, StorageError, StorageStats};
use telltale_common::wire::Event;

#[derive(Debug)]
struct MemSeries {
    labels: Labels,
    /// Ordered by timestamp, one sample per timestamp.
    samples: Vec<Sample>,
}

impl MemSeries {
    /// Adds a sample; returns true if it replaced one with the same timestamp.
    fn push(&mut self, s: Sample) -> bool {
        match self.samples.last() {
            Some(last) if last.0 >= s.0 => {
                match self.samples.binary_search_by_key(&s.0, |x| x.0) {
                    // Same timestamp: the later write wins, except that a stale marker never
                    // replaces a real value.
                    Ok(i) => {
                        if !is_stale_marker(s.1) {
                            self.samples[i] = s;
                        }
                        true
                    }
                    Err(i) => {
                        self.samples.insert(i, s);
                        false
                    }
                }
            }
            _ => {
                self.samples.push(s);
                false
            }
        }
    }

    fn range(&self, start: i64, end: i64) -> &[Sample] {
        let lo = self.samples.partition_point(|s| s.0 < start);
        let hi = self.samples.partition_point(|s| s.0 <= end);
        &self.samples[lo..hi.max(lo)]
    }
}

/// All series and samples held in memory.
#[derive(Debug, Default)]
pub struct Head {
    series: Vec<MemSeries>,
    /// Hash of the label pairs ([`hash_labels`]) → series with that hash (almost always one).
    /// Keyed by hash so that borrowed label pairs from a batch can be looked up without
    /// building an owned `Labels`; FxHash because it runs for every incoming sample.
    index: FxHashMap<u64, Vec<u32>>,
    postings: HashMap<String, HashMap<String, Vec<u32>>>,
    samples: u64,
    overwritten: u64,
    /// The newest host events, oldest first (see [`MAX_EVENTS`]).
    events: std::collections::VecDeque<Event>,
}

/// Host events held in memory (they are also in the log, so a restart replays them). A
/// bounded window: events are for "what changed lately", the series keep the history.
pub const MAX_EVENTS: usize = 100_000;

/// Hashes sorted label pairs; equal for a `Labels` and its borrowed pairs.
pub fn hash_labels<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = FxHasher::default();
    for (k, v) in pairs {
        h.write(k.as_bytes());
        h.write_u8(0xff);
        h.write(v.as_bytes());
        h.write_u8(0xff);
    }
    h.finish()
}

impl Head {
    /// The id of the series with these sorted label pairs, if it exists.
    pub fn lookup(&self, pairs: &[(&str, &str)], hash: u64) -> Option<u32> {
        self.index.get(&hash)?.iter().copied().find(|&id| {
            self.series[id as usize]
                .labels
                .iter()
                .eq(pairs.iter().copied())
        })
    }

    /// The id of the series with these sorted label pairs, created if needed.
    pub fn get_or_create(&mut self, pairs: &[(&str, &str)], hash: u64) -> u32 {
        if let Some(id) = self.lookup(pairs, hash) {
            return id;
        }
        let labels = Labels::from_pairs(pairs.iter().copied());
        let id = self.series.len() as u32;
        for (k, v) in labels.iter() {
            self.postings
                .entry(k.to_string())
                .or_default()
                .entry(v.to_string())
                .or_default()
                .push(id);
        }
        self.index.entry(hash).or_default().push(id);
        self.series.push(MemSeries {
            labels,
            samples: Vec::new(),
        });
        id
    }

    /// Adds samples to series by id; returns how many were new (not replacing a sample with
    /// the same timestamp).
    pub fn apply(&mut self, points: &[(u32, Sample)]) -> usize {
        let mut n = 0;
        for &(id, sample) in points {
            let Some(ms) = self.series.get_mut(id as usize) else {
                continue;
            };
            if ms.push(sample) {
                self.overwritten += 1;
            } else {
                n += 1;
            }
        }
        self.samples += n as u64;
        n
    }

    /// Candidate series for the matchers: the smallest postings list of an equality matcher
    /// with a non-empty value, or every series.
    fn candidates(&self, matchers: &[Matcher]) -> Vec<u32> {
        let mut best: Option<&Vec<u32>> = None;
        for m in matchers {
            if let MatchOp::Equal(v) = &m.op
                && !v.is_empty()
            {
                match self.postings.get(&m.name).and_then(|p| p.get(v)) {
                    None => return Vec::new(),
                    Some(list) => {
                        if best.is_none_or(|b| list.len() < b.len()) {
                            best = Some(list);
                        }
                    }
                }
            }
        }
        match best {
            Some(list) => list.clone(),
            None => (0..self.series.len() as u32).collect(),
        }
    }

    fn matching(&self, matchers: &[Matcher]) -> impl Iterator<Item = &MemSeries> {
        self.candidates(matchers)
            .into_iter()
            .map(|id| &self.series[id as usize])
            .filter(|s| matchers.iter().all(|m| m.matches_labels(&s.labels)))
    }

    /// See [`crate::storage::Storage::select`].
    pub fn select(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        max_samples: usize,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let mut out = Vec::new();
        let mut total = 0usize;
        for s in self.matching(matchers) {
            let r = s.range(start, end);
            if r.is_empty() {
                continue;
            }
            total += r.len();
            if total > max_samples {
                return Err(StorageError::TooManySamples { limit: max_samples });
            }
            out.push(SeriesData {
                labels: s.labels.clone(),
                samples: r.to_vec(),
            });
        }
        Ok(out)
    }

    /// See [`crate::storage::Storage::series`].
    pub fn series_labels(&self, matchers: &[Matcher], start: i64, end: i64) -> Vec<Labels> {
        self.matching(matchers)
            .filter(|s| !s.range(start, end).is_empty())
            .map(|s| s.labels.clone())
            .collect()
    }

    /// Keeps `events`, dropping the oldest beyond [`MAX_EVENTS`].
    pub fn push_events(&mut self, events: Vec<Event>) {
        for e in events {
            if self.events.len() == MAX_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(e);
        }
    }

    /// Events since `since_ms` matching `matchers` (`kind` matches as a label), oldest first,
    /// the newest `limit` of them.
    pub fn events(&self, matchers: &[Matcher], since_ms: i64, limit: usize) -> Vec<Event> {
        let label = |e: &'_ Event, name: &str| -> String {
            if name == "kind" {
                return e.kind.clone();
            }
            e.labels
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut out: Vec<Event> = self
            .events
            .iter()
            .rev()
            .filter(|e| e.t_ms >= since_ms)
            .filter(|e| matchers.iter().all(|m| m.matches(&label(e, &m.name))))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// What is held.
    pub fn stats(&self) -> StorageStats {
        StorageStats {
            series: self.series.len() as u64,
            samples: self.samples,
            overwritten: self.overwritten,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telltale_common::model::STALE_NAN_BITS;

    type TestBatch = Vec<(Vec<(String, String)>, Vec<Sample>)>;

    fn ss(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> TestBatch {
        let mut p: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        p.sort();
        vec![(p, samples.iter().map(|&(t, v)| Sample(t, v)).collect())]
    }

    impl Head {
        fn add(&mut self, batch: TestBatch) {
            for (pairs, samples) in batch {
                let pairs: Vec<(&str, &str)> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let id = self.get_or_create(&pairs, hash_labels(pairs.iter().copied()));
                let points: Vec<_> = samples.into_iter().map(|s| (id, s)).collect();
                self.apply(&points);
            }
        }
    }

    #[test]
    fn borrowed_pairs_find_the_series_they_created() {
        let mut h = Head::default();
        let pairs = [("__name__", "m"), ("a", "1")];
        let hash = hash_labels(pairs.iter().copied());
        let id = h.get_or_create(&pairs, hash);
        assert_eq!(h.lookup(&pairs, hash), Some(id));
        assert_eq!(h.get_or_create(&pairs, hash), id);
        let owned = Labels::from_pairs(pairs);
        assert_eq!(hash_labels(owned.iter()), hash);
        assert_eq!(
            h.lookup(&[("__name__", "m")], hash),
            None,
            "equal hashes are checked"
        );
    }

    #[test]
    fn out_of_order_samples_are_merged_in_order() {
        let mut h = Head::default();
        h.add(ss(&[("__name__", "m")], &[(10, 1.0), (30, 3.0)]));
        h.add(ss(&[("__name__", "m")], &[(20, 2.0), (30, 4.0)]));
        h.add(ss(
            &[("__name__", "m")],
            &[(30, f64::from_bits(STALE_NAN_BITS))],
        ));
        let got = h
            .select(&[Matcher::equal("__name__", "m")], 0, 100, 100)
            .unwrap();
        let ts: Vec<_> = got[0].samples.iter().map(|s| (s.0, s.1)).collect();
        assert_eq!(ts, vec![(10, 1.0), (20, 2.0), (30, 4.0)]);
        assert_eq!(h.stats().overwritten, 2);
        assert_eq!(h.stats().samples, 3);
    }

    #[test]
    fn matchers_and_limits() {
        let mut h = Head::default();
        for i in 0..10 {
            h.add(ss(
                &[("__name__", "m"), ("i", &i.to_string())],
                &[(1, i as f64)],
            ));
        }
        let re = Matcher {
            name: "i".into(),
            op: MatchOp::Regex(regex::Regex::new("^(?:[0-4])$").unwrap()),
        };
        assert_eq!(
            h.select(std::slice::from_ref(&re), 0, 10, 100)
                .unwrap()
                .len(),
            5
        );
        assert!(
            h.select(&[Matcher::equal("__name__", "nope")], 0, 10, 100)
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            h.select(&[Matcher::equal("__name__", "m")], 0, 10, 3),
            Err(StorageError::TooManySamples { limit: 3 })
        ));
        assert_eq!(h.series_labels(&[re], 2, 10).len(), 0);
    }
}
