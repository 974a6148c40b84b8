//! Go's `sort.Sort` (Go 1.19 to today: pattern-defeating quicksort), reproduced step for step.
//!
//! Prometheus orders `sort`, `sort_desc` and the kept elements of `topk`/`bottomk` with
//! `sort.Sort`, which is not stable: of equal values (and `sort(up)` is all ones) the order
//! that comes out is whatever Go's algorithm leaves, and so is the place of NaNs, whose
//! `Less` in Prometheus is not a strict weak order. A client comparing an instant `sort(…)`
//! with Prometheus' sees that order, so it is reproduced exactly: the same pivots, the same
//! comparisons and swaps in the same sequence, the same pseudo-random pattern breaking.
//! Prometheus 2.42 as Debian ships it is built with Go 1.19.8.

/// Sorts `v` as Go's `sort.Sort` sorts a collection whose `Less(i, j)` is
/// `less(&v[i], &v[j])`.
pub fn sort<T>(v: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let limit = usize::BITS - n.leading_zeros();
    let mut s = Sorter { v, less };
    s.pdqsort(0, n, limit);
}

#[derive(Clone, Copy, PartialEq)]
enum Hint {
    Unknown,
    Increasing,
    Decreasing,
}

struct Sorter<'a, T, F> {
    v: &'a mut [T],
    less: F,
}

impl<T, F: Fn(&T, &T) -> bool> Sorter<'_, T, F> {
    fn lt(&self, i: usize, j: usize) -> bool {
        (self.less)(&self.v[i], &self.v[j])
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.v.swap(i, j);
    }

    fn insertion(&mut self, a: usize, b: usize) {
        for i in a + 1..b {
            let mut j = i;
            while j > a && self.lt(j, j - 1) {
                self.swap(j, j - 1);
                j -= 1;
            }
        }
    }

    fn sift_down(&mut self, lo: usize, hi: usize, first: usize) {
        let mut root = lo;
        loop {
            let mut child = 2 * root + 1;
            if child >= hi {
                return;
            }
            if child + 1 < hi && self.lt(first + child, first + child + 1) {
                child += 1;
            }
            if !self.lt(first + root, first + child) {
                return;
            }
            self.swap(first + root, first + child);
            root = child;
        }
    }

    fn heap_sort(&mut self, a: usize, b: usize) {
        let (first, hi) = (a, b - a);
        for i in (0..=(hi - 1) / 2).rev() {
            self.sift_down(i, hi, first);
        }
        for i in (0..hi).rev() {
            self.swap(first, first + i);
            self.sift_down(0, i, first);
        }
    }

    fn pdqsort(&mut self, mut a: usize, mut b: usize, mut limit: u32) {
        const MAX_INSERTION: usize = 12;
        let (mut was_balanced, mut was_partitioned) = (true, true);
        loop {
            let length = b - a;
            if length <= MAX_INSERTION {
                self.insertion(a, b);
                return;
            }
            if limit == 0 {
                self.heap_sort(a, b);
                return;
            }
            if !was_balanced {
                self.break_patterns(a, b);
                limit -= 1;
            }
            let (mut pivot, mut hint) = self.choose_pivot(a, b);
            if hint == Hint::Decreasing {
                self.reverse(a, b);
                pivot = (b - 1) - (pivot - a);
                hint = Hint::Increasing;
            }
            if was_balanced
                && was_partitioned
                && hint == Hint::Increasing
                && self.partial_insertion(a, b)
            {
                return;
            }
            // Many elements equal to the one before this range: split off the equal ones.
            if a > 0 && !self.lt(a - 1, pivot) {
                a = self.partition_equal(a, b, pivot);
                continue;
            }
            let (mid, already) = self.partition(a, b, pivot);
            was_partitioned = already;
            let (left, right) = (mid - a, b - mid);
            let threshold = length / 8;
            if left < right {
                was_balanced = left >= threshold;
                self.pdqsort(a, mid, limit);
                a = mid + 1;
            } else {
                was_balanced = right >= threshold;
                self.pdqsort(mid + 1, b, limit);
                b = mid;
            }
        }
    }

    fn partition(&mut self, a: usize, b: usize, pivot: usize) -> (usize, bool) {
        self.swap(a, pivot);
        // Signed, as in Go: the scans stop when i passes j, which leaves j at a or above.
        let (mut i, mut j) = (a + 1, b as isize - 1);
        while i as isize <= j && self.lt(i, a) {
            i += 1;
        }
        while i as isize <= j && !self.lt(j as usize, a) {
            j -= 1;
        }
        if i as isize > j {
            self.swap(j as usize, a);
            return (j as usize, true);
        }
        self.swap(i, j as usize);
        i += 1;
        j -= 1;
        loop {
            while i as isize <= j && self.lt(i, a) {
                i += 1;
            }
            while i as isize <= j && !self.lt(j as usize, a) {
                j -= 1;
            }
            if i as isize > j {
                break;
            }
            self.swap(i, j as usize);
            i += 1;
            j -= 1;
        }
        self.swap(j as usize, a);
        (j as usize, false)
    }

    fn partition_equal(&mut self, a: usize, b: usize, pivot: usize) -> usize {
        self.swap(a, pivot);
        let (mut i, mut j) = (a + 1, b as isize - 1);
        loop {
            while i as isize <= j && !self.lt(a, i) {
                i += 1;
            }
            while i as isize <= j && self.lt(a, j as usize) {
                j -= 1;
            }
            if i as isize > j {
                return i;
            }
            self.swap(i, j as usize);
            i += 1;
            j -= 1;
        }
    }

    fn partial_insertion(&mut self, a: usize, b: usize) -> bool {
        const MAX_STEPS: usize = 5;
        const SHORTEST_SHIFTING: usize = 50;
        let mut i = a + 1;
        for _ in 0..MAX_STEPS {
            while i < b && !self.lt(i, i - 1) {
                i += 1;
            }
            if i == b {
                return true;
            }
            if b - a < SHORTEST_SHIFTING {
                return false;
            }
            self.swap(i, i - 1);
            // The smaller one shifted left (Go's loop runs down to index 1, not to `a`).
            if i - a >= 2 {
                let mut j = i - 1;
                while j >= 1 {
                    if !self.lt(j, j - 1) {
                        break;
                    }
                    self.swap(j, j - 1);
                    j -= 1;
                }
            }
            // The greater one shifted right.
            if b - i >= 2 {
                for j in i + 1..b {
                    if !self.lt(j, j - 1) {
                        break;
                    }
                    self.swap(j, j - 1);
                }
            }
        }
        false
    }

    fn break_patterns(&mut self, a: usize, b: usize) {
        let length = b - a;
        if length < 8 {
            return;
        }
        let mut random = length as u64;
        let modulus = 1usize << (usize::BITS - length.leading_zeros());
        let mid = a + (length / 4) * 2;
        for idx in mid - 1..=mid + 1 {
            // Go 1.19's xorshift (later Go releases shift by 13, 7 and 17).
            random ^= random << 13;
            random ^= random >> 17;
            random ^= random << 5;
            let mut other = (random as usize) & (modulus - 1);
            if other >= length {
                other -= length;
            }
            self.swap(idx, a + other);
        }
    }

    fn choose_pivot(&mut self, a: usize, b: usize) -> (usize, Hint) {
        const SHORTEST_NINTHER: usize = 50;
        const MAX_SWAPS: usize = 4 * 3;
        let l = b - a;
        let mut swaps = 0;
        let (mut i, mut j, mut k) = (a + l / 4, a + l / 4 * 2, a + l / 4 * 3);
        if l >= 8 {
            if l >= SHORTEST_NINTHER {
                i = self.median(i - 1, i, i + 1, &mut swaps);
                j = self.median(j - 1, j, j + 1, &mut swaps);
                k = self.median(k - 1, k, k + 1, &mut swaps);
            }
            j = self.median(i, j, k, &mut swaps);
        }
        let hint = match swaps {
            0 => Hint::Increasing,
            MAX_SWAPS => Hint::Decreasing,
            _ => Hint::Unknown,
        };
        (j, hint)
    }

    fn order2(&self, a: usize, b: usize, swaps: &mut usize) -> (usize, usize) {
        if self.lt(b, a) {
            *swaps += 1;
            (b, a)
        } else {
            (a, b)
        }
    }

    fn median(&self, a: usize, b: usize, c: usize, swaps: &mut usize) -> usize {
        let (a, b) = self.order2(a, b, swaps);
        let (b, _) = self.order2(b, c, swaps);
        let (_, b) = self.order2(a, b, swaps);
        b
    }

    fn reverse(&mut self, a: usize, b: usize) {
        let (mut i, mut j) = (a, b - 1);
        while i < j {
            self.swap(i, j);
            i += 1;
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator for the property tests.
    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *seed >> 33
    }

    #[test]
    fn sorts_like_any_sort_where_the_order_is_total() {
        let mut seed = 7;
        for n in [0, 1, 2, 5, 12, 13, 40, 49, 50, 51, 100, 257, 1000, 5000] {
            for shape in 0..5 {
                let mut v: Vec<u64> = (0..n as u64)
                    .map(|i| match shape {
                        0 => lcg(&mut seed),
                        1 => i,
                        2 => n as u64 - i,
                        3 => lcg(&mut seed) % 4,
                        _ => i ^ (lcg(&mut seed) % 3),
                    })
                    .collect();
                let mut want = v.clone();
                want.sort_unstable();
                sort(&mut v, |a, b| a < b);
                assert_eq!(v, want, "n={n} shape={shape}");
            }
        }
    }

    /// Ties and NaNs come out exactly where Go leaves them: `testdata/gosort.txt` holds
    /// orders recorded from Go 1.19.8's `sort.Sort` with Prometheus' `Less` (sizes 2 to 257,
    /// so insertion sort, both pivot rules, partial insertion sort, pattern breaking and
    /// the equal-partition path all run), including NaNs, infinities and all-equal input.
    #[test]
    fn ties_and_nans_come_out_in_go_1_19_order() {
        let text = include_str!("testdata/gosort.txt");
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(lines.len() >= 100, "the recorded cases are there");
        let mut unstable = 0;
        for pair in lines.chunks(2) {
            let f: Vec<&str> = pair[0].split_whitespace().collect();
            let desc = f[0] == "sort_desc";
            let mut xs: Vec<(f64, usize)> = f[1..]
                .iter()
                .enumerate()
                .map(|(i, t)| (t.parse().expect("a number"), i))
                .collect();
            sort(&mut xs, |a, b| {
                b.0.is_nan() || if desc { b.0 < a.0 } else { b.0 > a.0 }
            });
            let got: Vec<String> = xs.iter().map(|x| x.1.to_string()).collect();
            assert_eq!(got.join(" "), pair[1], "{}", pair[0]);
            unstable += usize::from(xs.windows(2).any(|w| w[0].0 == w[1].0 && w[0].1 > w[1].1));
        }
        // The cases would not test anything a stable sort gets right by itself.
        assert!(unstable > 10, "{unstable} cases reorder ties");
    }
}
