//! The data model: a series is a metric name plus labels, a sample is `(ms timestamp, f64)`.
//!
//! Labels are kept as a vector of `(name, value)` pairs sorted by name, with the metric name
//! stored under `__name__` like Prometheus does; sorting makes equal label sets compare and hash
//! equal whatever order they were built in.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// The bit pattern Prometheus uses for a stale marker: a NaN that is not the default NaN.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Whether `v` is a Prometheus stale marker (compared bitwise: every other NaN is a value).
pub fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// A sorted set of labels, the metric name included as `__name__`.
///
/// Shared behind an `Arc`: query evaluation hands the same label set to every step of a range
/// query, so a clone is a reference count, not a copy of every string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Labels(Arc<Vec<(String, String)>>);

impl Labels {
    /// Builds a label set from pairs in any order; a later duplicate name wins; empty values
    /// are dropped, as Prometheus treats an empty label as an absent one.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut l = Labels::from_pairs_keeping_empty(pairs);
        if l.0.iter().any(|(_, val)| val.is_empty()) {
            Arc::make_mut(&mut l.0).retain(|(_, val)| !val.is_empty());
        }
        l
    }

    /// Like [`Labels::from_pairs`] but keeping empty values: an alert's annotations, which
    /// Prometheus keeps (and sends) even when their template renders to nothing.
    pub fn from_pairs_keeping_empty<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut v: Vec<(String, String)> = Vec::new();
        for (k, val) in pairs {
            let (k, val) = (k.into(), val.into());
            if let Some(slot) = v.iter_mut().find(|(n, _)| *n == k) {
                slot.1 = val;
            } else {
                v.push((k, val));
            }
        }
        v.sort();
        Labels(Arc::new(v))
    }

    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    /// The metric name (`__name__`), if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// Sets `name` to `value`, keeping the order sorted.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => {
                if self.0[i].1 != value {
                    Arc::make_mut(&mut self.0)[i].1 = value.to_string();
                }
            }
            Err(i) => Arc::make_mut(&mut self.0).insert(i, (name.to_string(), value.to_string())),
        }
    }

    /// Removes label `name` if present.
    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Arc::make_mut(&mut self.0).remove(i);
        }
    }

    /// The pairs, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// An identity for this shared label set (equal for clones of it), for memoizing.
    pub fn share_id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// Number of labels, `__name__` included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Restores the sorted, de-duplicated invariant on a label set that came from outside
    /// (the wire or the disk) and reports whether it was already valid.
    pub fn normalize(&mut self) -> bool {
        let sorted = self.0.windows(2).all(|w| w[0].0 < w[1].0);
        if !sorted {
            let v = Arc::make_mut(&mut self.0);
            v.sort();
            v.dedup_by(|a, b| a.0 == b.0);
        }
        sorted
    }
}

/// One sample: a millisecond Unix timestamp and a value. Encoded as a two-element array.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample(pub i64, pub f64);

impl Sample {
    /// The timestamp in milliseconds since the Unix epoch.
    pub fn t(&self) -> i64 {
        self.0
    }
    /// The value.
    pub fn v(&self) -> f64 {
        self.1
    }
}

/// A series with the samples a batch carries for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesSamples {
    /// The series' labels, metric name included.
    pub labels: Labels,
    /// Samples in the order they were taken.
    pub samples: Vec<Sample>,
}

/// The civil date `(year, month 1-12, day 1-31)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How long a driver sleeps for a wall-clock deadline (ms since the epoch): until it, at least
/// 1 ms and at most a minute; a minute without one (the drivers also wake on their inputs).
pub fn until(deadline_ms: Option<i64>) -> std::time::Duration {
    let ms = deadline_ms.map_or(60_000, |t| (t - now_ms()).clamp(1, 60_000));
    std::time::Duration::from_millis(ms as u64)
}
/// A valid label name made from any key (a parsed log field): characters other than
/// `[A-Za-z0-9_]` become `_`, and a leading digit (or nothing) gets a `_` in front.
pub fn label_name_from(k: &str) -> String {
    let mut s: String = k
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// Whether `s` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*` (Prometheus' rule; the agent,
/// remote_write, rule files and PromQL's label functions all check with this one).
pub fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Whether `s` is a valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_key_becomes_a_valid_label_name() {
        for (k, want) in [
            ("req.id", "req_id"),
            ("9lives", "_9lives"),
            ("", "_"),
            ("ünï", "_n_"),
            ("ok_1", "ok_1"),
        ] {
            assert_eq!(label_name_from(k), want);
            assert!(valid_label_name(&label_name_from(k)));
        }
    }

    #[test]
    fn labels_are_sorted_and_deduplicated() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("b", "3"), ("c", "")]);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("a", "1"), ("b", "3")]);
        assert_eq!(l.get("b"), Some("3"));
        assert_eq!(l.get("c"), None);
    }

    #[test]
    fn normalize_repairs_unsorted_input() {
        let mut l = Labels(Arc::new(vec![
            ("z".into(), "1".into()),
            ("a".into(), "2".into()),
        ]));
        assert!(!l.normalize());
        assert_eq!(l.get("a"), Some("2"));
        assert!(l.normalize());
    }

    #[test]
    fn stale_marker_is_a_specific_nan() {
        assert!(is_stale_marker(f64::from_bits(STALE_NAN_BITS)));
        assert!(!is_stale_marker(f64::NAN));
    }
}
