//! Keeping the resident set small: start-up code dropped once it has run
//! ([`drop_startup_code`]), free heap pages handed back every interval, and every second
//! while log sources run ([`trim`]).
//!
//! Log lines pass through the agent in bursts — a file read, a batch of entries, its encoded
//! frame, sled's copy, the shipper's read — and glibc's malloc keeps what they freed: in the
//! logs benchmark (10 files, 10 000 records/s) 7 of the agent's 27 MiB were free heap pages,
//! handed back at once by `malloc_trim(0)`. So while log sources run the agent trims every
//! second (a walk over the free lists: microseconds on a heap this size). Fixing glibc's mmap
//! threshold as well (256 KiB) was tried and dropped: it cost a fifth more CPU while catching
//! up on files (every big buffer mapped and faulted in anew) for no lower peak. Other C
//! libraries: nothing happens here, `malloc_trim` is glibc's.

#![allow(unsafe_code)]

/// Keeps glibc's malloc to one arena. By default every thread that allocates while another
/// holds the main arena's lock gets an arena of its own (up to 8 per core), each with its
/// own free pages: the agent's threads (its runtime, sled's flusher, blocking reads) allocate
/// little and seldom contend, and one arena measured 0.3–0.5 MiB less peak RSS at 1 s
/// collection (`telltale-bench agent`, with `MALLOC_ARENA_MAX=1` set against the same build).
/// Call before threads start; an explicit `MALLOC_ARENA_MAX` in the environment wins.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before other threads run.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Returns free heap pages to the kernel.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks; it frees nothing in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops the code pages start-up touched from the agent's resident set, once start-up is
/// over. Reading the configuration and certificates, setting up TLS and opening the buffer
/// run code that a running agent does not run again, and its pages stay resident: at 1 s
/// collection the agent's own code was 5 MiB of its 12. Advising the executable mappings
/// (`r-xp`, file-backed: the agent's and its libraries') `MADV_DONTNEED` drops them; the code
/// the agent runs every interval faults straight back in from the page cache (minor faults,
/// within the next interval), the rest stays out until it is used again.
/// Returns the bytes of mappings advised.
pub fn drop_startup_code() -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return 0;
        };
        let mut dropped = 0usize;
        for line in maps.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            // address perms offset dev inode path
            let [range, "r-xp", _, _, inode, path, ..] = f.as_slice() else {
                continue;
            };
            if *inode == "0" || !path.starts_with('/') {
                continue;
            }
            let Some((a, b)) = range.split_once('-') else {
                continue;
            };
            let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            else {
                continue;
            };
            if b <= a {
                continue;
            }
            // SAFETY: the range is a private, read-only, executable mapping of a file, as the
            // kernel lists it: its pages are never written, so dropping them loses nothing —
            // the next use faults them in again from the file. No memory the program owns is
            // touched.
            let r = unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED) };
            if r == 0 {
                dropped += b - a;
            }
        }
        tracing::debug!(
            bytes = dropped,
            "start-up code dropped from the resident set"
        );
        dropped
    }
    #[cfg(not(target_os = "linux"))]
    0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Resident pages, from the page tables (`smaps_rollup` walks them; the counters in
    /// `status` may lag behind a drop).
    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/smaps_rollup")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Rss:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The file-backed code pages leave the resident set, and the program runs on (its code
    /// faulted back in from the file as it is used).
    #[test]
    fn code_pages_leave_the_resident_set_and_come_back_on_use() {
        let before = rss_kib();
        assert!(before > 0, "Rss is read");
        let advised = drop_startup_code();
        let after = rss_kib();
        assert!(advised > 0, "the executable mappings were advised");
        assert!(after < before, "Rss {before} KiB → {after} KiB");
        // Code runs on: formatting, hashing, allocation all fault their pages back in.
        let mut m = std::collections::HashMap::new();
        for i in 0..1000 {
            m.insert(format!("k{i}"), i * 2);
        }
        assert_eq!(m["k500"], 1000);
        trim();
    }
}
