//! A latency histogram both daemons record into: fixed buckets, lock-free updates, rendered as
//! Prometheus' `_bucket{le}`/`_sum`/`_count`, and read back as quantiles over a window (the
//! difference of two snapshots), which is how the live pipeline diagram labels its edges.
//!
//! One bucket layout for every latency Telltale measures, from a sub-millisecond fsync to a
//! ten-minute delivery retry: quantiles are interpolated inside a bucket exactly as PromQL's
//! `histogram_quantile` does, so the diagram and a Grafana panel over the same series agree.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the finite buckets; `+Inf` follows.
pub const BOUNDS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
    600.0,
];

const N: usize = BOUNDS.len() + 1;

/// A histogram of durations in seconds.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; N],
    /// Sum in microseconds (an integer keeps the update lock-free).
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// The counts of a histogram at one moment (per bucket, not cumulative).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Snapshot {
    /// Observations per bucket, the last one `+Inf`.
    pub buckets: [u64; N],
    /// Sum of the observations, in microseconds.
    pub sum_us: u64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        self.observe_secs(d.as_secs_f64());
    }

    /// Records one duration in seconds (negative values, from a clock step, count as 0).
    pub fn observe_secs(&self, secs: f64) {
        let s = if secs.is_finite() && secs > 0.0 {
            secs
        } else {
            0.0
        };
        let i = BOUNDS.iter().position(|b| s <= *b).unwrap_or(N - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(
            (s * 1e6).min(u64::MAX as f64 / 2.0) as u64,
            Ordering::Relaxed,
        );
    }

    /// The counts now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

impl Snapshot {
    /// Observations in all buckets.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Sum of the observations in seconds.
    pub fn sum_secs(&self) -> f64 {
        self.sum_us as f64 / 1e6
    }

    /// What was observed after `earlier` (a counter reset — a newer snapshot smaller than the
    /// older — yields this snapshot whole, as PromQL's `rate` treats one).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        if self
            .buckets
            .iter()
            .zip(&earlier.buckets)
            .any(|(a, b)| a < b)
        {
            return *self;
        }
        Snapshot {
            buckets: std::array::from_fn(|i| self.buckets[i] - earlier.buckets[i]),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// Adds another snapshot's counts (for one figure over several histograms).
    pub fn merge(&mut self, other: &Snapshot) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }

    /// The `q` quantile (0..=1) interpolated linearly inside its bucket, as PromQL's
    /// `histogram_quantile` does (the first bucket's lower bound is 0; a quantile in `+Inf`
    /// answers the highest finite bound). `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            let upto = below + n;
            if (upto as f64) >= rank && *n > 0 {
                if i == N - 1 {
                    return Some(BOUNDS[N - 2]);
                }
                let lo = if i == 0 { 0.0 } else { BOUNDS[i - 1] };
                let hi = BOUNDS[i];
                let into = (rank - below as f64) / *n as f64;
                return Some(lo + (hi - lo) * into.clamp(0.0, 1.0));
            }
            below = upto;
        }
        Some(BOUNDS[N - 2])
    }

    /// Writes the histogram in Prometheus' text format under `name` with `labels` (already
    /// formatted `k="v"` pairs joined by commas, or empty). The caller writes HELP/TYPE once.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            cum += n;
            let le = if i == N - 1 {
                "+Inf".to_string()
            } else {
                BOUNDS[i].to_string()
            };
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cum}");
        }
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum_secs());
        let _ = writeln!(out, "{name}_count{} {cum}", braces(labels));
    }

    /// `(le, cumulative count)` per bucket, `+Inf` last as `f64::INFINITY`: what a sender of
    /// the histogram as series needs.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut cum = 0u64;
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                cum += n;
                (BOUNDS.get(i).copied().unwrap_or(f64::INFINITY), cum)
            })
            .collect()
    }
}

/// The text-format name of an upper bound (`0.005`, `+Inf`), as Prometheus writes `le`.
pub fn le_label(b: f64) -> String {
    if b.is_infinite() {
        "+Inf".to_string()
    } else {
        b.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_histogram_quantile() {
        let h = Histogram::default();
        // 100 observations of 3 ms (bucket 0.0025..0.005) and 100 of 40 ms (0.025..0.05).
        for _ in 0..100 {
            h.observe(Duration::from_millis(3));
            h.observe(Duration::from_millis(40));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 200);
        assert!((s.sum_secs() - 4.3).abs() < 1e-6, "{}", s.sum_secs());
        // Rank 100 of 200 ends the first occupied bucket: its upper bound.
        assert!((s.quantile(0.5).unwrap() - 0.005).abs() < 1e-9);
        // Rank 198: 98 into the second bucket of 100 → 0.025 + 0.025 × 0.98.
        assert!((s.quantile(0.99).unwrap() - 0.0495).abs() < 1e-9);
        assert_eq!(Snapshot::default().quantile(0.5), None);
    }

    #[test]
    fn a_window_is_the_difference_and_a_reset_yields_the_newer_whole() {
        let h = Histogram::default();
        h.observe_secs(0.2);
        let a = h.snapshot();
        h.observe_secs(7.0);
        h.observe_secs(-1.0);
        let b = h.snapshot();
        let w = b.since(&a);
        assert_eq!(w.count(), 2);
        assert!((w.quantile(1.0).unwrap() - 10.0).abs() < 1e-9);
        assert_eq!(a.since(&b), a);
        // Beyond the last bound: the highest finite bound, like histogram_quantile.
        let big = Histogram::default();
        big.observe_secs(5000.0);
        assert_eq!(big.snapshot().quantile(0.5), Some(600.0));
    }

    #[test]
    fn renders_cumulative_buckets_sum_and_count() {
        let h = Histogram::default();
        h.observe_secs(0.0007);
        h.observe_secs(0.03);
        let mut out = String::new();
        h.snapshot().render(&mut out, "x_seconds", "stage=\"a\"");
        assert!(out.contains("x_seconds_bucket{stage=\"a\",le=\"0.0005\"} 0\n"));
        assert!(out.contains("x_seconds_bucket{stage=\"a\",le=\"0.001\"} 1\n"));
        assert!(out.contains("x_seconds_bucket{stage=\"a\",le=\"+Inf\"} 2\n"));
        assert!(out.contains("x_seconds_count{stage=\"a\"} 2\n"));
        assert!(out.contains("x_seconds_sum{stage=\"a\"} 0.0307\n"));
        let mut bare = String::new();
        h.snapshot().render(&mut bare, "y", "");
        assert!(bare.contains("y_bucket{le=\"0.05\"} 2\n") && bare.contains("y_count 2\n"));
        let c = h.snapshot().cumulative();
        assert_eq!(c.last(), Some(&(f64::INFINITY, 2)));
        assert_eq!(le_label(c[1].0), "0.001");
    }
}
