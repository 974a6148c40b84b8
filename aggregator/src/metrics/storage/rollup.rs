//! Rollups: per-bucket summaries of raw samples, which an engine may keep longer than the
//! samples (the vocabulary PromQL and engines share; how an engine stores them is its own).
//!
//! A bucket of width `R` ending at `E` (a multiple of `R`) summarizes the samples with
//! `E - R < t <= E` — left-open, right-closed, like a PromQL range window ending at `E` —
//! as `min`, `max`, `sum`, `count` and `last`, plus `last_t`, the timestamp of the last
//! sample. Stale markers are left out (the `*_over_time` functions ignore them too).
//!
//! A PromQL window `[te - range, te]` with `te` and `range` multiples of `R` is then exactly
//! the buckets ending in `(te - range, te]` plus the one sample at `te - range`, which is
//! the `last` of the bucket ending there when its `last_t` equals `te - range`. So
//! `min`/`max`/`count`/`last_over_time` from rollups equal the raw results exactly, and
//! `sum`/`avg_over_time` up to the order of floating-point additions (tested).
//!

use telltale_common::model::{Sample, is_stale_marker};

/// Rollup resolutions an engine keeps and PromQL asks for, coarsest first: 1 hour, 5 minutes.
pub const RESOLUTIONS: [i64; 2] = [3_600_000, 300_000];

/// One bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// The bucket's end (a multiple of its width); it covers `(end - width, end]`.
    pub end: i64,
    /// Timestamp of the last sample.
    pub last_t: i64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sum of values.
    pub sum: f64,
    /// Number of samples.
    pub count: f64,
    /// The last sample's value.
    pub last: f64,
}

/// The end of the left-open window of width `w` holding `t`.
pub fn window_end(t: i64, w: i64) -> i64 {
    let q = t.div_euclid(w);
    // Saturating: a sample may carry any timestamp (remote_write does not bound them).
    if t.rem_euclid(w) == 0 {
        t
    } else {
        q.saturating_add(1).saturating_mul(w)
    }
}

/// Summarizes time-ordered samples into buckets of width `w`.
pub fn buckets(samples: &[Sample], w: i64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for s in samples {
        if is_stale_marker(s.1) {
            continue;
        }
        let end = window_end(s.0, w);
        match out.last_mut() {
            Some(b) if b.end == end => {
                b.min = if s.1 < b.min || b.min.is_nan() {
                    s.1
                } else {
                    b.min
                };
                b.max = if s.1 > b.max || b.max.is_nan() {
                    s.1
                } else {
                    b.max
                };
                b.sum += s.1;
                b.count += 1.0;
                b.last = s.1;
                b.last_t = s.0;
            }
            _ => out.push(Bucket {
                end,
                last_t: s.0,
                min: s.1,
                max: s.1,
                sum: s.1,
                count: 1.0,
                last: s.1,
            }),
        }
    }
    out
}

/// How a window of buckets is reduced (the `*_over_time` functions rollups can answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    /// `min_over_time`
    Min,
    /// `max_over_time`
    Max,
    /// `sum_over_time`
    Sum,
    /// `count_over_time`
    Count,
    /// `avg_over_time`
    Avg,
    /// `last_over_time`
    Last,
}

impl Agg {
    /// The aggregation a PromQL function name asks for.
    pub fn for_function(name: &str) -> Option<Agg> {
        Some(match name {
            "min_over_time" => Agg::Min,
            "max_over_time" => Agg::Max,
            "sum_over_time" => Agg::Sum,
            "count_over_time" => Agg::Count,
            "avg_over_time" => Agg::Avg,
            "last_over_time" => Agg::Last,
            _ => return None,
        })
    }
}

/// The aggregation over the PromQL window `[te - range, te]` (both multiples of the bucket
/// width `w`) from time-ordered buckets; `None` when the window holds no sample.
pub fn window(b: &[Bucket], te: i64, range: i64, agg: Agg) -> Option<f64> {
    let lo = b.partition_point(|x| x.end < te - range);
    let hi = b.partition_point(|x| x.end <= te);
    let mut acc: Option<Bucket> = None;
    for (i, x) in b[lo..hi.max(lo)].iter().enumerate() {
        // The bucket ending at the window's start contributes only its last sample, and only
        // if that sample lies exactly on the start.
        let part = if i == 0 && x.end == te - range {
            if x.last_t != x.end {
                continue;
            }
            Bucket {
                min: x.last,
                max: x.last,
                sum: x.last,
                count: 1.0,
                ..*x
            }
        } else {
            *x
        };
        acc = Some(match acc {
            None => part,
            Some(a) => Bucket {
                end: part.end,
                last_t: part.last_t,
                min: if part.min < a.min || a.min.is_nan() {
                    part.min
                } else {
                    a.min
                },
                max: if part.max > a.max || a.max.is_nan() {
                    part.max
                } else {
                    a.max
                },
                sum: a.sum + part.sum,
                count: a.count + part.count,
                last: part.last,
            },
        });
    }
    let a = acc?;
    Some(match agg {
        Agg::Min => a.min,
        Agg::Max => a.max,
        Agg::Sum => a.sum,
        Agg::Count => a.count,
        Agg::Avg => a.sum / a.count,
        Agg::Last => a.last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use telltale_common::model::STALE_NAN_BITS;

    /// The raw aggregation, as the PromQL functions compute it (closed window, no stale).
    fn raw(s: &[Sample], te: i64, range: i64, agg: Agg) -> Option<f64> {
        let w: Vec<f64> = s
            .iter()
            .filter(|x| x.0 >= te - range && x.0 <= te && !is_stale_marker(x.1))
            .map(|x| x.1)
            .collect();
        if w.is_empty() {
            return None;
        }
        Some(match agg {
            Agg::Min => w
                .iter()
                .copied()
                .fold(f64::NAN, |a, v| if v < a || a.is_nan() { v } else { a }),
            Agg::Max => w
                .iter()
                .copied()
                .fold(f64::NAN, |a, v| if v > a || a.is_nan() { v } else { a }),
            Agg::Sum => w.iter().sum(),
            Agg::Count => w.len() as f64,
            Agg::Avg => w.iter().sum::<f64>() / w.len() as f64,
            Agg::Last => *w.last().unwrap_or(&f64::NAN),
        })
    }

    proptest! {
        /// A rollup equals the raw aggregation it summarizes: integer values keep sums exact.
        #[test]
        fn rollup_windows_equal_raw_aggregation(
            steps in proptest::collection::vec((1i64..200_000, -1000i64..1000, 0u8..20), 1..300),
            te_k in 1i64..40, range_k in 1i64..8, res_k in 0usize..2,
        ) {
            let w = RESOLUTIONS[res_k];
            let mut t = 0i64;
            let s: Vec<Sample> = steps.iter().map(|&(dt, v, k)| {
                // Some samples land exactly on bucket boundaries, some are stale markers.
                t += if k == 0 { w - t.rem_euclid(w) } else { dt };
                Sample(t, if k == 1 { f64::from_bits(STALE_NAN_BITS) } else { v as f64 })
            }).collect();
            let b = buckets(&s, w);
            let (te, range) = (te_k * w, range_k * w);
            for agg in [Agg::Min, Agg::Max, Agg::Sum, Agg::Count, Agg::Avg, Agg::Last] {
                prop_assert_eq!(window(&b, te, range, agg), raw(&s, te, range, agg), "{:?}", agg);
            }
        }
    }

    #[test]
    fn windows_are_left_open() {
        assert_eq!(window_end(300_000, 300_000), 300_000);
        assert_eq!(window_end(300_001, 300_000), 600_000);
        assert_eq!(window_end(-1, 300_000), 0);
        assert_eq!(window_end(-300_000, 300_000), -300_000);
        assert_eq!(window_end(i64::MAX, 7_200_000), i64::MAX);
        assert_eq!(window_end(i64::MIN, 7_200_000) % 7_200_000, 0);
    }
}
