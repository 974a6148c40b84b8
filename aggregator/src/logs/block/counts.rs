//! A chunk's lines and bytes per time bucket, kept in its index entry so a query that counts
//! lines over windows whose edges fall on bucket boundaries never decompresses the chunk.
//!
//! Buckets are left-open like query windows: bucket `k` of width `w` holds `k·w < t ≤
//! (k+1)·w`. The width is the finest of [`WIDTHS_S`] that covers the chunk in at most
//! [`MAX_BUCKETS`] buckets (a chunk of an hour: 1 m; of ten minutes: 15 s), so the steps
//! Grafana asks for over long ranges, where reading every chunk would cost most (a minute or
//! more over hours, aligned to the step), fall on boundaries; shorter ranges read fewer
//! chunks and may decode them. 64 buckets cost about 0.2 % of the blocks' bytes on the logs
//! benchmark (256 cost 0.7 %, which pushed the blocks past ClickHouse's size there). Encoding: varint width (s); then, for
//! each non-empty bucket, the zigzag-varint difference from the previous bucket's `k` (the
//! first from 0), varint lines, varint bytes. A chunk spanning more than
//! `MAX_BUCKETS` coarsest buckets gets none (empty), as do chunks written before this
//! existed: both are counted from their lines.

use telltale_common::wire::LogEntry;

use super::{get_varint, put_varint};

/// Bucket widths, finest first (seconds).
const WIDTHS_S: [i64; 8] = [1, 5, 15, 30, 60, 300, 900, 3600];
/// Most buckets a chunk's span may cover.
const MAX_BUCKETS: i64 = 64;
const NS: i64 = 1_000_000_000;

/// The bucket of `t` at width `w`: `k·w < t ≤ (k+1)·w`.
fn bucket(t: i64, w: i64) -> i64 {
    t.saturating_sub(1).div_euclid(w)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

/// The counts of `entries` (sorted by time), or nothing when they span too long.
pub fn encode(entries: &[LogEntry]) -> Vec<u8> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Vec::new();
    };
    let Some(w_s) = WIDTHS_S.into_iter().find(|w| {
        let w = w * NS;
        bucket(last.t_ns, w) - bucket(first.t_ns, w) < MAX_BUCKETS
    }) else {
        return Vec::new();
    };
    let w = w_s * NS;
    let mut out = Vec::with_capacity(64);
    put_varint(&mut out, w_s as u64);
    let mut prev = 0i64;
    let mut i = 0;
    while i < entries.len() {
        let k = bucket(entries[i].t_ns, w);
        let (mut lines, mut bytes) = (0u64, 0u64);
        while i < entries.len() && bucket(entries[i].t_ns, w) == k {
            lines += 1;
            bytes += entries[i].line.len() as u64;
            i += 1;
        }
        put_varint(&mut out, zigzag(k.wrapping_sub(prev)));
        put_varint(&mut out, lines);
        put_varint(&mut out, bytes);
        prev = k;
    }
    out
}

/// Adds a chunk's counts to `lines` and `bytes` by the intervals of `edges` (sorted; entry
/// `j` covers `edges[j] < t ≤ edges[j + 1]`), if every bucket falls inside one interval or
/// outside them all; returns whether it did (nothing is added otherwise, nor when the counts
/// are absent or damaged).
pub fn add(counts: &[u8], edges: &[i64], lines: &mut [u64], bytes: &mut [u64]) -> bool {
    let mut pos = 0;
    let Some(w_s) = get_varint(counts, &mut pos) else {
        return false;
    };
    let Some(w) = i64::try_from(w_s).ok().and_then(|w| w.checked_mul(NS)) else {
        return false;
    };
    if w <= 0 {
        return false;
    }
    // First pass: place every bucket; the edges are walked once (buckets only grow).
    let mut placed: Vec<(usize, u64, u64)> = Vec::with_capacity(64);
    let (mut k, mut p) = (0i64, 0usize);
    while pos < counts.len() {
        let (Some(d), Some(n), Some(b)) = (
            get_varint(counts, &mut pos),
            get_varint(counts, &mut pos),
            get_varint(counts, &mut pos),
        ) else {
            return false;
        };
        k = k.wrapping_add(unzigzag(d));
        let lo = k.saturating_mul(w).saturating_add(1);
        let hi = k.saturating_add(1).saturating_mul(w);
        // p: edges before `lo`; the bucket is in one piece when no edge is in [lo, hi).
        while p < edges.len() && edges[p] < lo {
            p += 1;
        }
        if p < edges.len() && edges[p] < hi {
            return false;
        }
        placed.push((p, n, b));
    }
    for (p, n, b) in placed {
        // Past the last edge or at or before the first: outside every interval.
        if p >= 1 && p < edges.len() {
            lines[p - 1] += n;
            bytes[p - 1] += b;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn entries(ts: &[i64]) -> Vec<LogEntry> {
        ts.iter()
            .map(|&t| LogEntry {
                t_ns: t,
                line: "x".repeat((t.rem_euclid(7) + 1) as usize),
                metadata: Vec::new(),
            })
            .collect()
    }

    /// Random chunks and edges: whenever the counts answer, they answer what counting the
    /// lines one by one does; on aligned edges they always answer.
    #[test]
    fn counts_agree_with_the_lines_or_decline() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut answered = 0;
        for _ in 0..2000 {
            let base = rng.random_range(-1000i64..1000) * NS;
            let span = [10, 300, 3600, 86_400, 400 * 3600][rng.random_range(0..5)] * NS;
            let mut ts: Vec<i64> = (0..rng.random_range(1..300))
                .map(|_| {
                    let t = base + rng.random_range(0..span);
                    // Lines on whole seconds too (on bucket and window edges).
                    if rng.random_bool(0.3) { t / NS * NS } else { t }
                })
                .collect();
            ts.sort_unstable();
            let es = entries(&ts);
            let c = encode(&es);
            let step = [1, 15, 60, 300, 7][rng.random_range(0..5)] * NS;
            let aligned = step != 7 * NS;
            let start = (base / step - rng.random_range(-5..5)) * step
                + if aligned { 0 } else { rng.random_range(0..NS) };
            let edges: Vec<i64> = (0..rng.random_range(2..50))
                .map(|i| start + i * step)
                .collect();
            let (mut lines, mut bytes) = (vec![0; edges.len() - 1], vec![0; edges.len() - 1]);
            let ok = add(&c, &edges, &mut lines, &mut bytes);
            let (mut l2, mut b2) = (vec![0; edges.len() - 1], vec![0; edges.len() - 1]);
            for e in &es {
                let p = edges.partition_point(|&x| x < e.t_ns);
                if p >= 1 && p < edges.len() {
                    l2[p - 1] += 1;
                    b2[p - 1] += e.line.len() as u64;
                }
            }
            if ok {
                answered += 1;
                assert_eq!((lines, bytes), (l2, b2), "edges {edges:?} ts {ts:?}");
            } else {
                assert!(lines.iter().all(|&n| n == 0), "declined but added");
                // Declining is allowed only when an edge splits a bucket, or no counts.
                if !c.is_empty() && aligned && step >= 60 * NS && span <= 3600 * NS {
                    panic!("aligned edges declined: step {step} span {span}");
                }
            }
        }
        assert!(answered > 500, "answered {answered} of 2000");
    }

    #[test]
    fn damaged_or_absent_counts_decline() {
        let (mut l, mut b) = (vec![0; 1], vec![0; 1]);
        assert!(!add(&[], &[0, 10], &mut l, &mut b));
        assert!(!add(&[0x80], &[0, 10], &mut l, &mut b));
        assert!(!add(&[1, 2, 3], &[0, 10], &mut l, &mut b));
        assert!(!add(&[0], &[0, 10], &mut l, &mut b));
        assert_eq!((l, b), (vec![0], vec![0]));
        // Too long a span for the coarsest width: no counts.
        assert!(encode(&entries(&[0, 3600 * NS * 300])).is_empty());
    }
}
