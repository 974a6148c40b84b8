//! Which batch sequences each agent epoch has stored, as compact ranges.
//!
//! Agents send oldest-first but interleave fresh batches while they drain a backlog, so the
//! stored set is a few ranges, not a watermark. Kept in memory, saved in the checkpoint when
//! the head is cut into a block, and rebuilt from the checkpoint plus the WAL at start-up.

use std::collections::{BTreeMap, HashMap};

/// Where a batch came from: a repeated origin is stored once (by every signal's store).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The agent's name, from its certificate.
    pub agent: String,
    /// The agent's buffer epoch (see `Hello::epoch`).
    pub epoch: u64,
    /// The batch's sequence number within the epoch.
    pub sequence: u64,
}

/// A set of `u64` kept as disjoint inclusive ranges.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct RangeSet {
    /// start → end (inclusive); ranges never touch or overlap.
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// Whether `x` is in the set.
    pub fn contains(&self, x: u64) -> bool {
        self.ranges
            .range(..=x)
            .next_back()
            .is_some_and(|(_, &end)| x <= end)
    }

    /// Adds `x`; returns false if it was already there.
    pub fn insert(&mut self, x: u64) -> bool {
        if self.contains(x) {
            return false;
        }
        let mut start = x;
        let mut end = x;
        if x > 0
            && let Some((&s, &e)) = self.ranges.range(..x).next_back()
            && e == x - 1
        {
            start = s;
        }
        if let Some(next) = x.checked_add(1)
            && let Some(e) = self.ranges.remove(&next)
        {
            end = e;
        }
        self.ranges.insert(start, end);
        true
    }

    /// Removes `x`; returns false if it was not there.
    pub fn remove(&mut self, x: u64) -> bool {
        let Some((&s, &e)) = self.ranges.range(..=x).next_back() else {
            return false;
        };
        if x > e {
            return false;
        }
        self.ranges.remove(&s);
        if s < x {
            self.ranges.insert(s, x - 1);
        }
        if x < e {
            self.ranges.insert(x + 1, e);
        }
        true
    }

    /// Number of disjoint ranges.
    #[cfg(test)]
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }
}

/// Stored sequences per `(agent, epoch)`.
#[derive(Debug, Default, Clone)]
pub struct Dedup {
    seen: HashMap<(String, u64), RangeSet>,
}

impl Dedup {
    /// Marks a sequence as stored; returns false if it already was.
    pub fn mark(&mut self, agent: &str, epoch: u64, seq: u64) -> bool {
        self.seen
            .entry((agent.to_string(), epoch))
            .or_default()
            .insert(seq)
    }

    /// Whether the sequence is stored (or being stored).
    pub fn contains(&self, agent: &str, epoch: u64, seq: u64) -> bool {
        self.seen
            .get(&(agent.to_string(), epoch))
            .is_some_and(|r| r.contains(seq))
    }

    /// The marks as a list (for the checkpoint).
    pub fn to_list(&self) -> Vec<(String, u64, RangeSet)> {
        self.seen
            .iter()
            .map(|((a, e), r)| (a.clone(), *e, r.clone()))
            .collect()
    }

    /// Marks from a checkpoint's list.
    pub fn from_list(list: Vec<(String, u64, RangeSet)>) -> Dedup {
        Dedup {
            seen: list.into_iter().map(|(a, e, r)| ((a, e), r)).collect(),
        }
    }

    /// Forgets a mark whose write failed.
    pub fn unmark(&mut self, agent: &str, epoch: u64, seq: u64) {
        if let Some(r) = self.seen.get_mut(&(agent.to_string(), epoch)) {
            r.remove(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec((any::<bool>(), 0u64..64), 0..200)) {
            let mut r = RangeSet::default();
            let mut model = BTreeSet::new();
            for (ins, x) in ops {
                if ins {
                    prop_assert_eq!(r.insert(x), model.insert(x));
                } else {
                    prop_assert_eq!(r.remove(x), model.remove(&x));
                }
                for y in 0..64 {
                    prop_assert_eq!(r.contains(y), model.contains(&y));
                }
            }
        }
    }

    #[test]
    fn consecutive_sequences_stay_one_range() {
        let mut r = RangeSet::default();
        for x in (1..1000).rev() {
            r.insert(x);
        }
        r.insert(u64::MAX);
        r.insert(0);
        assert_eq!(r.range_count(), 2);
    }
}
