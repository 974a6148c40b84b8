//! Giving freed memory back to the kernel (glibc's allocator only).
//!
//! A heap profile under the soak's load (`telltale-bench soak --wrap heaptrack`, 25 agents, 16
//! minutes) found no leak: the live heap stayed between 46 and 70 MiB, but maintenance (head cuts, merges, compaction) makes transient
//! peaks of 85–110 MiB, and glibc keeps what they freed. Two causes: its mmap threshold is
//! dynamic — after a large block allocated by `mmap` is freed, the threshold rises (up to
//! 32 MiB), so later large buffers come from the arenas and stay there; and free pages in
//! the middle of an arena are returned only by `malloc_trim`. So resident memory climbed
//! with the largest peak so far. Fixing the threshold (which turns the dynamic adjustment
//! off) and trimming every 30 s (`serve`) keep resident memory near the live heap (README,
//! "Durability and failure handling": the hour-long soak before and after).
//!
//! These are the only unsafe calls in the aggregator: neither `std` nor `rustix` wraps
//! `mallopt` or `malloc_trim`. Both take plain integers and only change the allocator's
//! bookkeeping.
#![allow(unsafe_code)]

/// Allocations at least this large are mapped on their own and unmapped when freed.
pub const MMAP_THRESHOLD: usize = 128 << 10;

/// Fixes the allocator's mmap threshold at [`MMAP_THRESHOLD`]; true when it took.
pub fn configure() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes two integers and is thread-safe in glibc.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Returns the free pages of every arena to the kernel; true when some were.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes an integer (the padding to keep) and locks each arena
        // while it walks it.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Many small blocks freed in the middle of the heap stay resident until trimmed; after
    /// `trim` resident memory is back near where it was.
    ///
    /// Resident memory is the whole process's, so the test runs alone in a child process of
    /// this test binary (the other tests' threads allocate too).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trim_gives_freed_small_blocks_back() {
        const NAME: &str = "serve::memory::tests::trim_gives_freed_small_blocks_back";
        if std::env::var_os("TELLTALE_MEMORY_TEST_CHILD").is_none() {
            let exe = std::env::current_exe().unwrap();
            let out = std::process::Command::new(exe)
                .args([NAME, "--exact", "--test-threads=1", "--nocapture"])
                .env("TELLTALE_MEMORY_TEST_CHILD", "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{text}");
            assert!(text.contains("1 passed"), "the child ran no test: {text}");
            return;
        }
        assert!(configure(), "mallopt refused the threshold");
        let before = rss_kib();
        // 64 MiB in 1 KiB blocks (below the threshold, so from the arena), touched, then
        // every block but one in 64 freed: the survivors pin the arena's top.
        let mut blocks: Vec<Vec<u8>> = (0..65536).map(|i| vec![(i % 251) as u8; 1024]).collect();
        let filled = rss_kib();
        assert!(filled > before + 48 * 1024, "{before} → {filled} KiB");
        for (i, b) in blocks.iter_mut().enumerate() {
            if i % 64 != 0 {
                *b = Vec::new();
            }
        }
        let freed = rss_kib();
        trim();
        let trimmed = rss_kib();
        assert!(
            trimmed + 32 * 1024 < freed,
            "freed {freed} KiB, after trim {trimmed} KiB"
        );
        drop(blocks);
    }
}
