//! The read side of the log engine: every query walks the same way — the blocks' chunks of
//! the matching streams that overlap the range, then the head — through [`LogEngine::visit`].

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use telltale_common::model::Labels;
use telltale_common::wire::LogEntry;

use super::LogEngine;
use crate::labels::Matcher;
use crate::logs::block::{Block, BlockError, ChunkIndex};
use crate::logs::store::{
    IndexStats, LogQuerier, LogStoreError, SIZE_BYTES, Selected, Selection, Tally, interval,
};

/// What a walk meets, stream by stream (labels are given with each part).
enum Part<'a> {
    /// A chunk of a block, overlapping the range (maybe only in part).
    Chunk(&'a Block, &'a ChunkIndex),
    /// A stream's lines in the head, unsorted by range (the caller filters).
    Head(&'a [LogEntry]),
}

fn matches(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches_labels(labels))
}

fn too_much(read: u64, limit: u64) -> Result<(), LogStoreError> {
    if read > limit {
        Err(LogStoreError::TooMuchData { limit })
    } else {
        Ok(())
    }
}

impl LogEngine {
    /// Calls `f` with every chunk of a stream matching `matchers` that overlaps `[start_ns,
    /// end_ns)` in the blocks, then with every matching stream's lines in the head. An error
    /// from `f` ends the walk.
    fn visit(
        &self,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
        mut f: impl FnMut(&Labels, Part<'_>) -> Result<(), LogStoreError>,
    ) -> Result<(), LogStoreError> {
        // A snapshot: a cut or retention running meanwhile does not wait for the query.
        let blocks = self
            .inner
            .blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for b in blocks
            .iter()
            .filter(|b| b.index.max_t >= start_ns && b.index.min_t < end_ns)
        {
            for s in &b.index.streams {
                let labels = Labels::from_pairs(s.labels.clone());
                if !matches(matchers, &labels) {
                    continue;
                }
                for c in s
                    .chunks
                    .iter()
                    .filter(|c| c.max_t >= start_ns && c.min_t < end_ns)
                {
                    f(&labels, Part::Chunk(b, c))?;
                }
            }
        }
        let head = self.inner.head.read().unwrap_or_else(|e| e.into_inner());
        for (labels, entries) in &head.streams {
            if matches(matchers, labels) {
                f(labels, Part::Head(entries))?;
            }
        }
        Ok(())
    }

    /// A damaged chunk is skipped, logged and counted: the query answers from the rest.
    fn damaged(&self, e: &BlockError) {
        tracing::error!(error = %e, "damaged log chunk skipped");
        self.inner
            .counters
            .corrupt_records
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl LogQuerier for LogEngine {
    fn select(&self, sel: &Selection<'_>) -> Result<Vec<Selected>, LogStoreError> {
        let mut out: HashMap<Labels, Vec<LogEntry>> = HashMap::new();
        let mut read = 0u64;
        let in_range = |t: i64| t >= sel.start_ns && t < sel.end_ns;
        self.visit(sel.matchers, sel.start_ns, sel.end_ns, |labels, part| {
            match part {
                Part::Chunk(b, c) => {
                    if !sel
                        .needles
                        .iter()
                        .all(|n| crate::logs::block::may_contain(&c.trigrams, n))
                    {
                        return Ok(());
                    }
                    read += c.line_bytes;
                    too_much(read, sel.max_bytes)?;
                    match b.read_chunk(c) {
                        Ok(entries) => out
                            .entry(labels.clone())
                            .or_default()
                            .extend(entries.into_iter().filter(|e| in_range(e.t_ns))),
                        Err(e) => self.damaged(&e),
                    }
                }
                Part::Head(entries) => {
                    let picked: Vec<LogEntry> = entries
                        .iter()
                        .filter(|e| in_range(e.t_ns))
                        .cloned()
                        .collect();
                    read += picked.iter().map(|e| e.line.len() as u64).sum::<u64>();
                    too_much(read, sel.max_bytes)?;
                    if !picked.is_empty() {
                        out.entry(labels.clone()).or_default().extend(picked);
                    }
                }
            }
            Ok(())
        })?;
        let mut v: Vec<Selected> = out
            .into_iter()
            .map(|(labels, mut entries)| {
                entries.sort_by_key(|e| e.t_ns);
                Selected { labels, entries }
            })
            .collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(v)
    }

    fn tally(
        &self,
        matchers: &[Matcher],
        edges: &[i64],
        max_bytes: u64,
    ) -> Result<Vec<Tally>, LogStoreError> {
        let (Some(&first), Some(&last)) = (edges.first(), edges.last()) else {
            return Ok(Vec::new());
        };
        let intervals = edges.len() - 1;
        let mut out: HashMap<Labels, Tally> = HashMap::new();
        let mut read = 0u64;
        // Lines at `first < t <= last`: the walk's range is `[first + 1, last + 1)`.
        let (start, end) = (first.saturating_add(1), last.saturating_add(1));
        self.visit(matchers, start, end, |labels, part| {
            let t = out
                .entry(labels.clone())
                .or_insert_with(|| Tally::new(labels.clone(), intervals));
            match part {
                Part::Chunk(b, c) => {
                    // From the index alone: the chunk's bucket counts, when no edge splits a
                    // bucket; a chunk inside one interval.
                    if crate::logs::block::counts::add(&c.counts, edges, &mut t.lines, &mut t.bytes)
                    {
                        return Ok(());
                    }
                    if let (Some(a), Some(z)) = (interval(edges, c.min_t), interval(edges, c.max_t))
                        && a == z
                    {
                        t.lines[a] += u64::from(c.lines);
                        t.bytes[a] += c.line_bytes;
                        return Ok(());
                    }
                    read += u64::from(c.lines) * SIZE_BYTES;
                    too_much(read, max_bytes)?;
                    match b.read_sizes(c) {
                        Ok(v) => {
                            // Lines are by time: walk the edges alongside.
                            let mut j = 0usize;
                            for (ts, len) in v {
                                if ts <= first || ts > last {
                                    continue;
                                }
                                while edges[j + 1] < ts {
                                    j += 1;
                                }
                                t.lines[j] += 1;
                                t.bytes[j] += u64::from(len);
                            }
                        }
                        Err(e) => self.damaged(&e),
                    }
                }
                Part::Head(entries) => {
                    read += entries.len() as u64 * SIZE_BYTES;
                    too_much(read, max_bytes)?;
                    for e in entries {
                        t.add(edges, e.t_ns, e.line.len() as u64);
                    }
                }
            }
            Ok(())
        })?;
        let mut v: Vec<Tally> = out.into_values().filter(|t| !t.is_empty()).collect();
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(v)
    }

    fn index_stats(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64) -> IndexStats {
        let mut st = IndexStats::default();
        let mut seen: std::collections::HashSet<Labels> = std::collections::HashSet::new();
        let walked = self.visit(matchers, start_ns, end_ns, |labels, part| {
            let (chunks, lines, bytes) = match part {
                // Whole chunks, as Loki counts them.
                Part::Chunk(_, c) => (1, u64::from(c.lines), c.line_bytes),
                Part::Head(entries) => {
                    let inside = entries
                        .iter()
                        .filter(|e| e.t_ns >= start_ns && e.t_ns < end_ns);
                    let (n, b) =
                        inside.fold((0u64, 0u64), |(n, b), e| (n + 1, b + e.line.len() as u64));
                    (u64::from(n > 0), n, b)
                }
            };
            if lines > 0 {
                st.chunks += chunks;
                st.entries += lines;
                st.bytes += bytes;
                seen.insert(labels.clone());
            }
            Ok(())
        });
        // The walk's closure never fails.
        debug_assert!(walked.is_ok());
        st.streams = seen.len() as u64;
        st
    }

    fn streams(&self, matchers: &[Matcher], start_ns: i64, end_ns: i64) -> Vec<Labels> {
        let mut out: Vec<Labels> = Vec::new();
        let walked = self.visit(matchers, start_ns, end_ns, |labels, part| {
            let any = match part {
                Part::Chunk(..) => true,
                Part::Head(entries) => entries
                    .iter()
                    .any(|e| e.t_ns >= start_ns && e.t_ns < end_ns),
            };
            if any && out.last() != Some(labels) {
                out.push(labels.clone());
            }
            Ok(())
        });
        debug_assert!(walked.is_ok());
        out.sort();
        out.dedup();
        out
    }
}
