//! Work split across the cores for the length of one call (scoped threads, so the parts
//! borrow what the caller holds): the query path's reads and sweeps, which run inside
//! `block_in_place` and would otherwise use one core of a machine's few.

/// The threads a split uses: the cores, at most 8.
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8)
}

/// `part` over `items` cut into `threads` runs of consecutive items, each run on a thread of
/// its own; the results in the items' order. A part that panicked is `panicked()` in its
/// place.
pub fn split<I: Send, T: Send, E: Send>(
    items: Vec<I>,
    threads: usize,
    part: impl Fn(Vec<I>) -> Result<T, E> + Sync,
    panicked: impl Fn() -> E,
) -> Vec<Result<T, E>> {
    let per = items.len().div_ceil(threads.max(1)).max(1);
    let mut runs: Vec<Vec<I>> = Vec::new();
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        runs.push(it.by_ref().take(per).collect());
    }
    std::thread::scope(|sc| {
        let handles: Vec<_> = runs
            .into_iter()
            .map(|run| {
                let part = &part;
                sc.spawn(move || part(run))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(panicked())))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_once_in_order() {
        for n in [0usize, 1, 2, 7, 100, 101] {
            for threads in [0usize, 1, 2, 3, 8, 200] {
                let parts = split((0..n).collect(), threads, Ok::<_, ()>, || ());
                let all: Vec<usize> = parts.into_iter().flat_map(|p| p.unwrap()).collect();
                assert_eq!(all, (0..n).collect::<Vec<_>>(), "n {n} threads {threads}");
            }
        }
    }

    #[test]
    fn a_panicking_part_is_an_error_in_its_place() {
        let parts = split(
            vec![0, 1, 2, 3],
            2,
            |run: Vec<i32>| {
                assert!(run[0] == 0, "the second part fails");
                Ok(run)
            },
            || "panicked",
        );
        assert_eq!(parts, vec![Ok(vec![0, 1]), Err("panicked")]);
    }
}
