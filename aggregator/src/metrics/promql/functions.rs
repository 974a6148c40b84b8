//! PromQL functions over range vectors and instant vectors, as Prometheus computes them.

use telltale_common::model::Sample;

/// `rate`, `increase`, `delta` with Prometheus' extrapolation: the result is extrapolated to
/// the window edges unless the first or last sample is further than 1.1 average intervals from
/// them, and a counter is never extrapolated below zero.
pub fn extrapolated(
    points: &[Sample],
    t: i64,
    range_ms: i64,
    counter: bool,
    rate: bool,
) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (first, last) = (points[0], points[points.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        let mut prev = first.1;
        for p in &points[1..] {
            if p.1 < prev {
                result += prev;
            }
            prev = p.1;
        }
    }
    Some(extrapolate(
        first,
        last,
        points.len(),
        result,
        t,
        range_ms,
        counter,
        rate,
    ))
}

/// Counter-reset corrections summed from the start of a series: `out[i]` is the sum of the
/// values before every reset among samples `1..=i`, so the correction inside a window
/// `[lo, hi]` is `out[hi] - out[lo]` — `rate()` then costs the same for any window length.
pub fn reset_prefix(samples: &[Sample]) -> Vec<f64> {
    let mut out = Vec::new();
    reset_prefix_into(samples, &mut out);
    out
}

/// [`reset_prefix`] into `out` (cleared first), so a sweep over many series reuses one buffer.
pub fn reset_prefix_into(samples: &[Sample], out: &mut Vec<f64>) {
    out.clear();
    out.reserve(samples.len());
    let mut acc = 0.0;
    let mut prev = f64::NAN;
    for p in samples {
        // NaN before the first sample: no comparison holds, as for the first sample.
        if p.1 < prev {
            acc += prev;
        }
        prev = p.1;
        out.push(acc);
    }
}

/// Prometheus' extrapolation of `result` (the increase between `first` and `last`, `n`
/// samples) to the window `[t - range, t]`, in Prometheus 2's order of operations (the
/// compliance reference): durations from integer milliseconds, the zero point of a counter
/// before the threshold, one factor (divided by the range for a rate) applied last.
#[allow(clippy::too_many_arguments)]
pub fn extrapolate(
    first: Sample,
    last: Sample,
    n: usize,
    result: f64,
    t: i64,
    range_ms: i64,
    counter: bool,
    rate: bool,
) -> f64 {
    let range_start = t - range_ms;
    let mut to_start = (first.0 - range_start) as f64 / 1000.0;
    let to_end = (t - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let avg = sampled / (n - 1) as f64;
    if counter && result > 0.0 && first.1 >= 0.0 {
        // Counters cannot go below zero: when the zero point is nearer than the window's
        // start, the series started there.
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        avg / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        avg / 2.0
    };
    let mut factor = interval / sampled;
    if rate {
        factor /= range_ms as f64 / 1000.0;
    }
    result * factor
}

/// `holt_winters(v, sf, tf)` (Prometheus 2's name for double exponential smoothing): the
/// smoothed value after the last sample, with smoothing factor `sf` and trend factor `tf`
/// (both in `(0, 1)`, checked by the caller); `None` below two samples. The operations are
/// Prometheus' own, in its order.
pub fn holt_winters(points: &[Sample], sf: f64, tf: f64) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (mut s0, mut s1) = (0.0, points[0].1);
    let mut b = points[1].1 - points[0].1;
    for (i, p) in points.iter().enumerate().skip(1) {
        let x = sf * p.1;
        // The trend, from the second step on (the first keeps the initial one).
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = x + y;
    }
    Some(s1)
}

/// `irate` (per second) and `idelta` from the last two samples.
pub fn instant_delta(points: &[Sample], rate: bool) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let (prev, last) = (points[points.len() - 2], points[points.len() - 1]);
    let mut d = last.1 - prev.1;
    if rate && last.1 < prev.1 {
        d = last.1;
    }
    if rate {
        let dt = (last.0 - prev.0) as f64 / 1000.0;
        if dt == 0.0 {
            return None;
        }
        d /= dt;
    }
    Some(d)
}

/// One step of Neumaier's compensated (Kahan) summation, as Prometheus adds up windows:
/// returns the new sum and compensation.
pub fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// `sum_over_time`: compensated, Infinity kept as it is.
pub fn kahan_sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for v in values {
        (sum, c) = kahan_inc(v, sum, c);
    }
    if sum.is_infinite() { sum } else { sum + c }
}

/// `avg_over_time`: an incremental, compensated mean (no overflow on large values), with
/// Prometheus' handling of infinities.
pub fn kahan_mean(values: impl Iterator<Item = f64>) -> f64 {
    let (mut mean, mut count, mut c) = (0.0f64, 0.0, 0.0);
    for v in values {
        count += 1.0;
        if mean.is_infinite() {
            // Inf of the same sign keeps the mean; so does any finite value.
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        (mean, c) = kahan_inc(v / count - mean / count, mean, c);
    }
    if mean.is_infinite() { mean } else { mean + c }
}

/// `stdvar_over_time` (population variance): Welford's method with compensated sums.
pub fn kahan_variance(values: impl Iterator<Item = f64>) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for v in values {
        count += 1.0;
        let delta = v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// Least-squares slope and the intercept at `intercept_ms`, as `deriv` and `predict_linear`
/// use: x in seconds from the intercept time (from the integer difference in ms, so large
/// timestamps lose nothing), compensated sums. `None` below two samples.
pub fn linear_regression(points: &[Sample], intercept_ms: i64) -> Option<(f64, f64)> {
    if points.len() < 2 {
        return None;
    }
    let init_y = points[0].1;
    let mut const_y = true;
    let mut n = 0.0;
    let (mut sx, mut cx, mut sy, mut cy) = (0.0, 0.0, 0.0, 0.0);
    let (mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    for (i, p) in points.iter().enumerate() {
        if const_y && i > 0 && p.1 != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = p.0.wrapping_sub(intercept_ms) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(p.1, sy, cy);
        (sxy, cxy) = kahan_inc(x * p.1, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init_y.is_infinite() {
            return Some((f64::NAN, f64::NAN));
        }
        return Some((0.0, init_y));
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    Some((slope, sy / n - slope * sx / n))
}

/// Aggregation `stdvar` (and `stddev`, its root): Welford's method without compensation,
/// as Prometheus aggregates across series.
pub fn variance(values: &[f64]) -> f64 {
    let (mut count, mut mean, mut value) = (0.0, 0.0, 0.0);
    for (i, &v) in values.iter().enumerate() {
        if i == 0 {
            (count, mean, value) = (1.0, v, 0.0);
            continue;
        }
        count += 1.0;
        let delta = v - mean;
        mean += delta / count;
        value += delta * (v - mean);
    }
    value / count
}

/// Aggregation `avg`: Prometheus' incremental mean (each side divided by the count, so no
/// overflow), infinities kept.
pub fn incremental_mean(mean: f64, count: usize, v: f64) -> f64 {
    if mean.is_infinite() {
        if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
            return mean;
        }
        if !v.is_infinite() && !v.is_nan() {
            return mean;
        }
    }
    let n = count as f64;
    mean + (v / n - mean / n)
}

/// `topk` (or, with `bottom`, `bottomk`) over one group's elements in input order, exactly as
/// Prometheus selects them: a binary heap of at most `k` elements in Go's `container/heap`
/// discipline (NaN ranks lowest for both), an element replacing the root only when strictly
/// better, so of equal values the earlier ones stay; the kept elements are then ordered best
/// first as Go's `sort.Sort` orders them (ties in its order).
pub fn top_k<T>(items: Vec<T>, k: usize, bottom: bool, value: impl Fn(&T) -> f64) -> Vec<T> {
    if k == 0 {
        return Vec::new();
    }
    // Go's `Less(i, j)` of the heap: the root is the element to drop first.
    let less = |a: f64, b: f64| a.is_nan() || if bottom { a > b } else { a < b };
    let mut h: Vec<T> = Vec::with_capacity(k.min(items.len()));
    let up = |h: &mut Vec<T>, mut j: usize| {
        while j > 0 {
            let i = (j - 1) / 2;
            if !less(value(&h[j]), value(&h[i])) {
                break;
            }
            h.swap(i, j);
            j = i;
        }
    };
    let down = |h: &mut Vec<T>, n: usize| {
        let mut i = 0;
        loop {
            let j1 = 2 * i + 1;
            if j1 >= n {
                break;
            }
            let mut j = j1;
            if j1 + 1 < n && less(value(&h[j1 + 1]), value(&h[j1])) {
                j = j1 + 1;
            }
            if !less(value(&h[j]), value(&h[i])) {
                break;
            }
            h.swap(i, j);
            i = j;
        }
    };
    for (n, x) in items.into_iter().enumerate() {
        if n == 0 {
            h.push(x);
            continue;
        }
        let root = value(&h[0]);
        let v = value(&x);
        let better = if bottom { root > v } else { root < v };
        if h.len() < k || better || root.is_nan() {
            if h.len() == k {
                if k == 1 {
                    h[0] = x;
                    continue;
                }
                // heap.Pop: the root swapped to the end, sifted down, removed.
                let last = h.len() - 1;
                h.swap(0, last);
                down(&mut h, last);
                h.pop();
            }
            h.push(x);
            let last = h.len() - 1;
            up(&mut h, last);
        }
    }
    // sort.Sort(sort.Reverse(heap)): Go's unstable sort, so ties come out in its order.
    super::gosort::sort(&mut h, |a, b| less(value(b), value(a)));
    h
}

/// `x ^ y` as Go's `math.Pow` computes it (and so Prometheus): integer powers by repeated
/// squaring of the mantissa, the fractional part through `exp(yf * ln x)`. A correctly
/// rounded `powf` differs in the last bits, which e.g. `sin(x ^ y)` or `count_values` make
/// visible.
pub fn go_pow(x: f64, y: f64) -> f64 {
    let odd_int = |y: f64| {
        let (yi, yf) = (y.trunc(), y.fract());
        yf == 0.0 && yi.abs() < 9.007_199_254_740_992e15 && (yi as i64) & 1 == 1
    };
    if y == 0.0 || x == 1.0 {
        return 1.0;
    }
    if y == 1.0 {
        return x;
    }
    if x.is_nan() || y.is_nan() {
        return f64::NAN;
    }
    if x == 0.0 {
        return if y < 0.0 {
            if x.is_sign_negative() && odd_int(y) {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }
        } else if x.is_sign_negative() && odd_int(y) {
            x
        } else {
            0.0
        };
    }
    // An infinite (or too large to be odd) exponent: 1 for -1, else 0 or +Inf.
    let huge_power = || {
        if x == -1.0 {
            1.0
        } else if (x.abs() < 1.0) == (y > 0.0) {
            0.0
        } else {
            f64::INFINITY
        }
    };
    if y.is_infinite() {
        return huge_power();
    }
    if x.is_infinite() {
        if x < 0.0 {
            return go_pow(1.0 / x, -y);
        }
        return if y < 0.0 { 0.0 } else { f64::INFINITY };
    }
    if y == 0.5 {
        return x.sqrt();
    }
    if y == -0.5 {
        return 1.0 / x.sqrt();
    }
    let (mut yi, mut yf) = (y.abs().trunc(), y.abs().fract());
    if yf != 0.0 && x < 0.0 {
        return f64::NAN;
    }
    if yi >= (1u64 << 63) as f64 {
        return huge_power();
    }
    let mut a1 = 1.0;
    let mut ae: i64 = 0;
    if yf != 0.0 {
        if yf > 0.5 {
            yf -= 1.0;
            yi += 1.0;
        }
        a1 = super::gomath::go_exp(yf * super::gomath::go_ln(x));
    }
    let (mut x1, mut xe) = frexp(x);
    let mut i = yi as i64;
    while i != 0 {
        if !(-(1 << 12)..=(1 << 12)).contains(&xe) {
            ae += xe;
            break;
        }
        if i & 1 == 1 {
            a1 *= x1;
            ae += xe;
        }
        x1 *= x1;
        xe <<= 1;
        if x1 < 0.5 {
            x1 += x1;
            xe -= 1;
        }
        i >>= 1;
    }
    if y < 0.0 {
        a1 = 1.0 / a1;
        ae = -ae;
    }
    ldexp(a1, ae)
}

/// Go's `math.Frexp`: `f = frac × 2^exp` with `|frac|` in [0.5, 1).
pub(super) fn frexp(f: f64) -> (f64, i64) {
    if f == 0.0 || f.is_infinite() || f.is_nan() {
        return (f, 0);
    }
    let (f, mut exp) = if f.abs() < f64::MIN_POSITIVE {
        (f * (1u64 << 52) as f64, -52)
    } else {
        (f, 0)
    };
    let mut x = f.to_bits();
    exp += ((x >> 52) & 0x7FF) as i64 - 1023 + 1;
    x &= !(0x7FF << 52);
    x |= 1022 << 52;
    (f64::from_bits(x), exp)
}

/// Go's `math.Ldexp`: `frac × 2^exp`, rounding once into the denormal range.
fn ldexp(frac: f64, exp: i64) -> f64 {
    if frac == 0.0 || frac.is_infinite() || frac.is_nan() {
        return frac;
    }
    let (frac, e) = if frac.abs() < f64::MIN_POSITIVE {
        (frac * (1u64 << 52) as f64, -52)
    } else {
        (frac, 0)
    };
    let mut exp = exp + e;
    let mut x = frac.to_bits();
    exp += ((x >> 52) & 0x7FF) as i64 - 1023;
    if exp < -1075 {
        return 0.0f64.copysign(frac);
    }
    if exp > 1023 {
        return if frac < 0.0 {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    let mut m = 1.0;
    if exp < -1022 {
        exp += 53;
        m = 1.0 / (1u64 << 53) as f64;
    }
    x &= !(0x7FF << 52);
    x |= ((exp + 1023) as u64) << 52;
    m * f64::from_bits(x)
}

/// The order of Go's `sort.Float64s`, which Prometheus sorts quantiles with: NaN before
/// every number.
pub fn nan_first(a: &f64, b: &f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    }
}

/// The φ-quantile of `values` (reordered in place), interpolating like Prometheus.
pub fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0) as usize;
    let upper = (rank.floor() as usize + 1).min(values.len() - 1);
    let weight = rank - rank.floor();
    // Only the two order statistics are needed: a selection, not a sort (the windows of a
    // range query are sorted again at every step otherwise).
    let (_, lo, above) = values.select_nth_unstable_by(lower, nan_first);
    let lo = *lo;
    let hi = if upper > lower {
        above.iter().copied().min_by(nan_first).unwrap_or(lo)
    } else {
        lo
    };
    lo * (1.0 - weight) + hi * weight
}

/// `histogram_quantile` over classic buckets `(le, cumulative count)`, step by step as
/// Prometheus computes it: buckets of equal `le` merged, counts made monotonic (a NaN count
/// left alone), the bucket found by Go's binary search.
pub fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    buckets.dedup_by(|b, kept| {
        let same = b.0 == kept.0;
        if same {
            kept.1 += b.1;
        }
        same
    });
    let mut max = buckets[0].1;
    for b in buckets.iter_mut().skip(1) {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            b.1 = max;
        }
    }
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let total = buckets[buckets.len() - 1].1;
    if total == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * total;
    // Go's sort.Search over all but the last bucket (with a NaN count the probes it makes
    // decide, so the search is Go's, not a partition point).
    let (mut i, mut j) = (0usize, buckets.len() - 1);
    while i < j {
        let h = (i + j) / 2;
        if buckets[h].1 >= rank {
            j = h;
        } else {
            i = h + 1;
        }
    }
    let b = i;
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[(i64, f64)]) -> Vec<Sample> {
        v.iter().map(|&(t, v)| Sample(t, v)).collect()
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // A counter growing 1/s sampled every 10 s over a 60 s window ending on a sample.
        let p = pts(&[
            (10_000, 10.0),
            (20_000, 20.0),
            (30_000, 30.0),
            (40_000, 40.0),
            (50_000, 50.0),
            (60_000, 60.0),
        ]);
        let r = extrapolated(&p, 60_000, 60_000, true, true).unwrap();
        assert!((r - 1.0).abs() < 1e-9, "{r}");
        let inc = extrapolated(&p, 60_000, 60_000, true, false).unwrap();
        assert!((inc - 60.0).abs() < 1e-9, "{inc}");
        // A reset adds the value before it.
        let p = pts(&[(0, 5.0), (10_000, 10.0), (20_000, 2.0)]);
        let inc = extrapolated(&p, 20_000, 20_000, true, false).unwrap();
        assert!((inc - 7.0).abs() < 1e-9, "{inc}");
    }

    #[test]
    fn prefix_sums_give_the_same_rate_as_a_scan_for_every_window() {
        let vals = [5.0, 7.0, 2.0, 3.0, 3.0, 1.0, 9.0, 0.0, 4.0, 4.5];
        let samples: Vec<Sample> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| Sample(i as i64 * 10_000, *v))
            .collect();
        let prefix = reset_prefix(&samples);
        for lo in 0..samples.len() {
            for hi in lo + 2..=samples.len() {
                let w = &samples[lo..hi];
                let t = w[w.len() - 1].0 + 3_000;
                let range = t - w[0].0 + 2_000;
                let scan = extrapolated(w, t, range, true, true).unwrap();
                let result = w[w.len() - 1].1 - w[0].1 + (prefix[hi - 1] - prefix[lo]);
                let fast = extrapolate(w[0], w[w.len() - 1], w.len(), result, t, range, true, true);
                assert!(
                    (scan - fast).abs() <= 1e-12 * scan.abs().max(1.0),
                    "{lo}..{hi}: {scan} {fast}"
                );
            }
        }
    }

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(quantile(0.5, &mut [1.0, 3.0, 2.0]), 2.0);
        assert_eq!(quantile(0.25, &mut [1.0, 2.0, 3.0, 4.0, 5.0]), 2.0);
        let mut b = vec![
            (0.1, 10.0),
            (0.5, 50.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((bucket_quantile(0.5, &mut b) - 0.5).abs() < 1e-9);
    }

    /// A counter that starts inside the window (a new instance), as Debian's Prometheus 2.42
    /// answered it: the zero point is taken before the extrapolation threshold.
    #[test]
    fn a_counter_starting_inside_the_window_is_extrapolated_as_prometheus_2() {
        let p = [
            Sample(1_796_143_799_998, 15.544),
            Sample(1_796_143_815_005, 30.380000000000003),
        ];
        let inc = extrapolated(&p, 1_796_143_820_000, 60_000, true, false).unwrap();
        assert!((inc - 35.31808356100487).abs() < 1e-12, "{inc}");
        // Nine digits agree at any magnitude of time: durations come from integer ms.
        let q = [
            Sample(1_796_143_829_997, 30.67),
            Sample(1_796_143_845_001, 44.0),
            Sample(1_796_143_849_999, 50.5),
        ];
        let a = extrapolated(&q, 1_796_143_850_000, 60_000, true, true).unwrap();
        let shifted: Vec<Sample> = q
            .iter()
            .map(|s| Sample(s.0 - 1_796_000_000_000, s.1))
            .collect();
        let b = extrapolated(&shifted, 143_850_000, 60_000, true, true).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn pow_follows_go() {
        assert_eq!(go_pow(2.0, 10.0), 1024.0);
        assert_eq!(go_pow(-2.0, 3.0), -8.0);
        assert_eq!(go_pow(2.0, -2.0), 0.25);
        assert_eq!(go_pow(0.0, -1.0), f64::INFINITY);
        assert_eq!(go_pow(-0.0, -3.0), f64::NEG_INFINITY);
        assert!(go_pow(-8.0, 1.0 / 3.0).is_nan());
        assert_eq!(go_pow(9.0, 0.5), 3.0);
        assert_eq!(go_pow(f64::NEG_INFINITY, 3.0), f64::NEG_INFINITY);
        assert_eq!(go_pow(0.5, f64::INFINITY), 0.0);
        assert_eq!(go_pow(2.0, 1100.0), f64::INFINITY);
        assert_eq!(go_pow(2.0, -1074.0), f64::from_bits(1));
        // Close to the correctly rounded power, but not equal: repeated squaring gathers
        // rounding errors (0.9^400 is ~40 ulps off), which is exactly what Prometheus shows.
        for (x, y) in [(1.1, 7.0), (3.7, 2.5), (123.456, -3.25), (0.9, 400.0)] {
            let (g, r) = (go_pow(x, y), f64::powf(x, y));
            assert!((g - r).abs() <= 1e-12 * r.abs(), "{x}^{y}: {g} vs {r}");
        }
        assert_ne!(go_pow(0.9, 400.0), f64::powf(0.9, 400.0));
    }
}
