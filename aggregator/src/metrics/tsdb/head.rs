//! The in-memory side of the engine: every series (labels, newest timestamp, owner, the
//! samples not yet cut into a block), the index from label sets to series, postings from
//! `(label, value)` to series, and the newest host events.
//!
//! Series ids are dense and never reused; they are the ids `series.log` and the blocks use.

use std::collections::HashMap;
use std::hash::Hasher;

use rustc_hash::{FxHashMap, FxHasher};
use telltale_common::model::{Labels, Sample, is_stale_marker};

use crate::metrics::storage::{MatchOp, Matcher};
use telltale_common::wire::Event;

/// A series as the head holds it.
#[derive(Debug)]
pub struct MemSeries {
    /// The label set.
    pub labels: Labels,
    /// Samples not yet in a block, ordered by timestamp, one per timestamp.
    pub samples: Vec<Sample>,
    /// The newest timestamp ever stored (out-of-order window reference).
    pub max_t: i64,
    /// Wall-clock second of the last append (for the active-series count).
    pub last_write_s: u32,
    /// The agent that owns the series ([`NO_OWNER`] for the aggregator's own and
    /// remote-written series).
    pub owner: u32,
}

/// Owner of series not from an agent.
pub const NO_OWNER: u32 = u32::MAX;

impl MemSeries {
    /// Adds a sample; returns true if it replaced one with the same timestamp.
    fn push(&mut self, s: Sample) -> bool {
        self.max_t = self.max_t.max(s.0);
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

    /// The head samples in `[start, end]`.
    pub fn range(&self, start: i64, end: i64) -> &[Sample] {
        let lo = self.samples.partition_point(|s| s.0 < start);
        let hi = self.samples.partition_point(|s| s.0 <= end);
        &self.samples[lo..hi.max(lo)]
    }
}

/// What applying points did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Samples stored.
    pub stored: usize,
    /// Samples that replaced one with the same timestamp.
    pub overwritten: usize,
    /// Samples older than the series' out-of-order window, refused.
    pub too_old: usize,
    /// Samples too far in the future, refused.
    pub too_new: usize,
}

/// Limits applied when points arrive (not when the WAL replays: what was acknowledged is
/// kept).
#[derive(Debug, Clone, Copy)]
pub struct AppendLimits {
    /// How late a sample may be, behind its series' newest, in ms.
    pub ooo_window_ms: i64,
    /// Samples older than this (wall-clock ms) are refused: retention would drop them.
    pub min_t: i64,
    /// Samples newer than this (wall-clock ms) are refused: a clock far ahead would keep
    /// its block's window open for ever.
    pub max_t: i64,
}

/// All series, their head samples, and the index.
#[derive(Debug, Default)]
pub struct Head {
    series: Vec<MemSeries>,
    /// Hash of the label pairs ([`hash_labels`]) → series with that hash (almost always one).
    /// Keyed by hash so that borrowed label pairs from a batch can be looked up without
    /// building an owned `Labels`; FxHash because it runs for every incoming sample.
    index: FxHashMap<u64, Vec<u32>>,
    /// label name → value → series ids, ascending (ids are assigned in order).
    postings: FxHashMap<String, FxHashMap<String, Vec<u32>>>,
    /// Samples in the head.
    pub head_samples: u64,
    /// Samples that replaced another with the same timestamp.
    pub overwritten: u64,
    /// The newest host events, oldest first (see [`MAX_EVENTS`]).
    events: std::collections::VecDeque<Event>,
    /// Agent names by owner id.
    owners: Vec<String>,
    owner_ids: HashMap<String, u32>,
    /// Active series per owner, and in total (recounted by [`Head::recount_active`]).
    active: Vec<u32>,
    /// See `active`.
    pub active_total: u64,
}

/// Host events held in memory (they are also in the WAL and then `events.log`, so a restart
/// reloads them). A bounded window: events are for "what changed lately", the series keep
/// the history.
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

/// A set of series ids: a sorted list, or a bitmap when the union of many lists is large
/// (a regex matching thousands of values: setting bits beats sorting half a million ids).
enum IdSet {
    List(Vec<u32>),
    Bits(Vec<u64>),
}

impl IdSet {
    fn union(lists: Vec<&Vec<u32>>, n: usize) -> IdSet {
        let total: usize = lists.iter().map(|l| l.len()).sum();
        if lists.len() <= 1 || total < 4096 || total < n / 64 {
            return IdSet::List(union(lists));
        }
        let mut bits = vec![0u64; n / 64 + 1];
        for l in lists {
            for &id in l {
                if let Some(w) = bits.get_mut(id as usize / 64) {
                    *w |= 1 << (id % 64);
                }
            }
        }
        IdSet::Bits(bits)
    }

    fn is_empty(&self) -> bool {
        match self {
            IdSet::List(l) => l.is_empty(),
            IdSet::Bits(b) => b.iter().all(|w| *w == 0),
        }
    }

    /// Lists by length first, bitmaps last.
    fn rank(&self) -> usize {
        match self {
            IdSet::List(l) => l.len(),
            IdSet::Bits(_) => usize::MAX,
        }
    }
}

fn has_bit(bits: &[u64], id: u32) -> bool {
    bits.get(id as usize / 64)
        .is_some_and(|w| w & (1 << (id % 64)) != 0)
}

fn bits_to_ids(bits: &[u64]) -> Vec<u32> {
    let mut out = Vec::new();
    for (i, &w) in bits.iter().enumerate() {
        let mut w = w;
        while w != 0 {
            out.push((i * 64) as u32 + w.trailing_zeros());
            w &= w - 1;
        }
    }
    out
}

/// Sorted union of sorted id lists.
fn union(lists: Vec<&Vec<u32>>) -> Vec<u32> {
    match lists.len() {
        0 => Vec::new(),
        1 => lists[0].clone(),
        _ => {
            let mut out: Vec<u32> = lists.iter().flat_map(|l| l.iter().copied()).collect();
            out.sort_unstable();
            out.dedup();
            out
        }
    }
}

/// Sorted intersection; walks the shorter list and gallops in the longer one.
fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    let mut lo = 0;
    for &x in small {
        lo += large[lo..].partition_point(|&y| y < x);
        if lo < large.len() && large[lo] == x {
            out.push(x);
        }
    }
    out
}

/// Sorted difference `a - b`.
fn subtract(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        j += b[j..].partition_point(|&y| y < x);
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
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

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether there is no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// A series by id.
    pub fn get(&self, id: u32) -> Option<&MemSeries> {
        self.series.get(id as usize)
    }

    /// The owner id of an agent name.
    pub fn owner_id(&mut self, agent: Option<&str>) -> u32 {
        let Some(a) = agent else {
            return NO_OWNER;
        };
        if let Some(&id) = self.owner_ids.get(a) {
            return id;
        }
        let id = self.owners.len() as u32;
        self.owners.push(a.to_string());
        self.owner_ids.insert(a.to_string(), id);
        self.active.push(0);
        id
    }

    /// Active series of an owner.
    pub fn active_of(&self, owner: u32) -> u64 {
        self.active.get(owner as usize).map_or(0, |&n| u64::from(n))
    }

    /// Adds a series (its id is the next one); the caller checked it does not exist.
    pub fn create(&mut self, labels: Labels, hash: u64, owner: u32, now_s: u32) -> u32 {
        let id = self.series.len() as u32;
        for (k, v) in labels.iter() {
            let by_value = match self.postings.get_mut(k) {
                Some(m) => m,
                None => self.postings.entry(k.to_string()).or_default(),
            };
            match by_value.get_mut(v) {
                Some(l) => l.push(id),
                None => {
                    by_value.insert(v.to_string(), vec![id]);
                }
            }
        }
        self.index.entry(hash).or_default().push(id);
        self.series.push(MemSeries {
            labels,
            samples: Vec::new(),
            max_t: i64::MIN,
            last_write_s: now_s,
            owner,
        });
        if let Some(a) = self.active.get_mut(owner as usize) {
            *a += 1;
        }
        self.active_total += 1;
        id
    }

    /// The id of the series with these sorted label pairs, created if needed (no limits:
    /// replay and the aggregator's own series).
    pub fn get_or_create(&mut self, pairs: &[(&str, &str)], hash: u64) -> u32 {
        if let Some(id) = self.lookup(pairs, hash) {
            return id;
        }
        self.create(Labels::from_pairs(pairs.iter().copied()), hash, NO_OWNER, 0)
    }

    /// Gives an unowned series (loaded at start-up) to `owner`, counting it as active there.
    pub fn claim(&mut self, id: u32, owner: u32) {
        let Some(s) = self.series.get_mut(id as usize) else {
            return;
        };
        if s.owner == NO_OWNER && owner != NO_OWNER {
            s.owner = owner;
            if let Some(a) = self.active.get_mut(owner as usize) {
                *a += 1;
            }
        }
    }

    /// Raises a series' newest timestamp (what blocks hold, at start-up).
    pub fn note_max_t(&mut self, id: u32, t: i64) {
        if let Some(s) = self.series.get_mut(id as usize) {
            s.max_t = s.max_t.max(t);
        }
    }

    /// Adds samples to series by id. With `limits`, samples too late for their series'
    /// out-of-order window (or older than retention) are refused.
    pub fn apply(
        &mut self,
        points: &[(u32, Sample)],
        limits: Option<AppendLimits>,
        now_s: u32,
    ) -> Applied {
        let mut a = Applied::default();
        for &(id, sample) in points {
            let Some(ms) = self.series.get_mut(id as usize) else {
                continue;
            };
            if let Some(l) = limits {
                if (ms.max_t != i64::MIN && sample.0 < ms.max_t.saturating_sub(l.ooo_window_ms))
                    || sample.0 < l.min_t
                {
                    a.too_old += 1;
                    continue;
                }
                if sample.0 > l.max_t {
                    a.too_new += 1;
                    continue;
                }
            }
            ms.last_write_s = now_s;
            if ms.push(sample) {
                a.overwritten += 1;
            } else {
                a.stored += 1;
            }
        }
        self.head_samples += a.stored as u64;
        self.overwritten += a.overwritten as u64;
        a
    }

    /// Forward-only mode's [`Head::apply`]: marks the series written (for the active-series
    /// counts and caps) without keeping any sample. Every point counts as stored.
    pub fn touch(&mut self, points: &[(u32, Sample)], now_s: u32) -> Applied {
        let mut a = Applied::default();
        for &(id, _) in points {
            if let Some(ms) = self.series.get_mut(id as usize) {
                ms.last_write_s = now_s;
                a.stored += 1;
            }
        }
        a
    }

    /// Moves every series' head samples out (sorted by id), leaving the head empty.
    pub fn take_samples(&mut self) -> Vec<(u32, Vec<Sample>)> {
        let mut out = Vec::new();
        for (id, s) in self.series.iter_mut().enumerate() {
            if !s.samples.is_empty() {
                out.push((id as u32, std::mem::take(&mut s.samples)));
            }
        }
        self.head_samples = 0;
        out
    }

    /// Recounts active series: those written since `since_s`.
    pub fn recount_active(&mut self, since_s: u32) {
        self.active.iter_mut().for_each(|a| *a = 0);
        let mut total = 0;
        for s in &self.series {
            if s.last_write_s >= since_s {
                total += 1;
                if let Some(a) = self.active.get_mut(s.owner as usize) {
                    *a += 1;
                }
            }
        }
        self.active_total = total;
    }

    /// Ids of the series matching all matchers, ascending, from the postings: a matcher
    /// that cannot match the empty string selects the union of its matching values' lists
    /// (intersected with the others); one that can match it removes the series of its
    /// non-matching values.
    pub fn matching_ids(&self, matchers: &[Matcher]) -> Vec<u32> {
        let n = self.series.len();
        let mut sets: Vec<IdSet> = Vec::new();
        let mut negative: Vec<IdSet> = Vec::new();
        for m in matchers {
            let positive = !m.matches("");
            let Some(values) = self.postings.get(&m.name) else {
                if positive {
                    return Vec::new();
                }
                continue;
            };
            let lists: Vec<&Vec<u32>> = match &m.op {
                MatchOp::Equal(v) if positive => values.get(v).into_iter().collect(),
                _ => values
                    .iter()
                    .filter(|(v, _)| m.matches(v) == positive)
                    .map(|(_, l)| l)
                    .collect(),
            };
            let set = IdSet::union(lists, n);
            if positive {
                if set.is_empty() {
                    return Vec::new();
                }
                sets.push(set);
            } else {
                negative.push(set);
            }
        }
        // The smallest list drives; bitmaps are probed.
        sets.sort_by_key(IdSet::rank);
        let mut sets = sets.into_iter();
        let mut ids = match sets.next() {
            None => (0..n as u32).collect(),
            Some(IdSet::List(l)) => l,
            Some(IdSet::Bits(b)) => bits_to_ids(&b),
        };
        for s in sets {
            match s {
                IdSet::List(l) => ids = intersect(&ids, &l),
                IdSet::Bits(b) => ids.retain(|&id| has_bit(&b, id)),
            }
        }
        for s in negative {
            match s {
                IdSet::List(l) => ids = subtract(&ids, &l),
                IdSet::Bits(b) => ids.retain(|&id| !has_bit(&b, id)),
            }
        }
        ids
    }

    /// Label names in use (by any series).
    pub fn label_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.postings.keys().cloned().collect();
        v.sort();
        v
    }

    /// Values of a label with their series lists.
    pub fn label_values(&self, name: &str) -> Vec<(&str, &[u32])> {
        self.postings
            .get(name)
            .map(|m| m.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect())
            .unwrap_or_default()
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use telltale_common::model::STALE_NAN_BITS;

    fn add(
        h: &mut Head,
        pairs: &[(&str, &str)],
        samples: &[(i64, f64)],
        limits: Option<AppendLimits>,
    ) -> Applied {
        let mut p = pairs.to_vec();
        p.sort();
        let id = h.get_or_create(&p, hash_labels(p.iter().copied()));
        let points: Vec<_> = samples.iter().map(|&(t, v)| (id, Sample(t, v))).collect();
        h.apply(&points, limits, 0)
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
    fn late_samples_merge_within_the_window_and_older_ones_are_refused() {
        let mut h = Head::default();
        let lim = Some(AppendLimits {
            ooo_window_ms: 100,
            min_t: 0,
            max_t: i64::MAX,
        });
        add(
            &mut h,
            &[("__name__", "m")],
            &[(1000, 1.0), (1300, 3.0)],
            lim,
        );
        let a = add(
            &mut h,
            &[("__name__", "m")],
            &[(1200, 2.0), (1300, 4.0), (1100, 9.0)],
            lim,
        );
        assert_eq!(
            a,
            Applied {
                stored: 1,
                overwritten: 1,
                too_old: 1,
                too_new: 0
            }
        );
        add(
            &mut h,
            &[("__name__", "m")],
            &[(1300, f64::from_bits(STALE_NAN_BITS))],
            lim,
        );
        let s = h.get(0).unwrap();
        let got: Vec<_> = s.samples.iter().map(|s| (s.0, s.1)).collect();
        assert_eq!(got, vec![(1000, 1.0), (1200, 2.0), (1300, 4.0)]);
        // Retention's floor refuses too; replay (no limits) keeps everything.
        let lim = Some(AppendLimits {
            ooo_window_ms: 1_000_000,
            min_t: 5000,
            max_t: 9000,
        });
        assert_eq!(
            add(&mut h, &[("__name__", "m")], &[(9001, 1.0)], lim).too_new,
            1
        );
        assert_eq!(
            add(&mut h, &[("__name__", "m")], &[(4000, 1.0)], lim).too_old,
            1
        );
        assert_eq!(
            add(&mut h, &[("__name__", "m")], &[(10, 1.0)], None).stored,
            1
        );
    }

    fn regex(name: &str, re: &str, negate: bool) -> Matcher {
        let r = regex::Regex::new(&format!("^(?:{re})$")).unwrap();
        Matcher {
            name: name.into(),
            op: if negate {
                MatchOp::NotRegex(r)
            } else {
                MatchOp::Regex(r)
            },
        }
    }

    fn scan(h: &Head, ms: &[Matcher]) -> Vec<u32> {
        (0..h.len() as u32)
            .filter(|&id| {
                ms.iter()
                    .all(|m| m.matches_labels(&h.get(id).unwrap().labels))
            })
            .collect()
    }

    proptest! {
        /// The postings answer exactly what scanning every series answers.
        #[test]
        fn postings_agree_with_a_scan(
            series in proptest::collection::vec((0u8..3, proptest::option::of(0u8..4), 0u8..5), 1..60),
            ms in proptest::collection::vec((0u8..4, 0u8..4, 0u8..6), 0..4),
        ) {
            let mut h = Head::default();
            for (job, inst, dev) in &series {
                let job = format!("j{job}");
                let inst = inst.map(|i| format!("web-{i}"));
                let dev = format!("d{dev}");
                let mut p = vec![("__name__", "m"), ("job", job.as_str()), ("dev", dev.as_str())];
                if let Some(i) = &inst {
                    p.push(("instance", i.as_str()));
                }
                p.sort();
                h.get_or_create(&p, hash_labels(p.iter().copied()));
            }
            let names = ["job", "instance", "dev", "missing"];
            let matchers: Vec<Matcher> = ms.iter().map(|&(n, op, v)| {
                let name = names[n as usize];
                let value = match v { 0 => String::new(), 1 => "j1".into(), 2 => "web-1".into(), 3 => "web-.*".into(), 4 => "d[0-2]".into(), _ => "j.*".into() };
                match op {
                    0 => Matcher::equal(name, &value),
                    1 => Matcher { name: name.into(), op: MatchOp::NotEqual(value) },
                    2 => regex(name, &value, false),
                    _ => regex(name, &value, true),
                }
            }).collect();
            prop_assert_eq!(h.matching_ids(&matchers), scan(&h, &matchers));
        }
    }

    #[test]
    fn set_operations() {
        let big: Vec<Vec<u32>> = (0..100)
            .map(|k| (0..100).map(|i| i * 100 + k).collect())
            .collect();
        let set = IdSet::union(big.iter().collect(), 10_000);
        assert!(matches!(set, IdSet::Bits(_)));
        if let IdSet::Bits(b) = set {
            assert_eq!(bits_to_ids(&b), (0..10_000).collect::<Vec<u32>>());
        }
        assert_eq!(intersect(&[1, 3, 5, 7], &[0, 3, 4, 7, 9]), vec![3, 7]);
        assert_eq!(subtract(&[1, 3, 5, 7], &[3, 4, 7]), vec![1, 5]);
        assert_eq!(union(vec![&vec![5, 9], &vec![1, 5]]), vec![1, 5, 9]);
    }
}
