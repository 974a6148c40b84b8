//! The read path: merging head, frozen sets and blocks per series, rollups from rollup
//! blocks, labels, and the [`Querier`] and [`Admin`] roles.

use super::*;

impl Tsdb {
    /// Each matching series' samples in `[start, end]` from every source, merged; also the
    /// sources' order (head first) is what keeps concurrent cuts from hiding data.
    fn read_series(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        max_samples: usize,
        kind: Kind,
    ) -> Result<Vec<SeriesParts>, StorageError> {
        // 1. the head (under its lock, copying only the range), 2. frozen sets, 3. blocks.
        type Found = (u32, Labels, Vec<Vec<Sample>>, Option<tombstones::Intervals>);
        let mut out: Vec<Found> = Vec::new();
        let mut total = 0usize;
        {
            let tomb = self
                .inner
                .tombstones
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let h = self.read_head();
            for id in h.matching_ids(matchers) {
                let Some(s) = h.get(id) else { continue };
                let deleted = tomb.get(id);
                let mut runs = Vec::new();
                if kind == Kind::Raw {
                    let r = s.range(start, end);
                    total += r.len();
                    if total > max_samples {
                        return Err(StorageError::TooManySamples { limit: max_samples });
                    }
                    let mut r = r.to_vec();
                    if let Some(iv) = &deleted {
                        tombstones::drop_samples(iv, &mut r);
                    }
                    if !r.is_empty() {
                        runs.push(r);
                    }
                }
                out.push((id, s.labels.clone(), runs, deleted));
            }
        }
        if kind == Kind::Raw {
            let frozen = self
                .inner
                .frozen
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for (id, _, runs, deleted) in &mut out {
                for f in &frozen {
                    if let Some(s) = f.get(*id) {
                        let lo = s.partition_point(|x| x.0 < start);
                        let hi = s.partition_point(|x| x.0 <= end).max(lo);
                        if hi > lo {
                            total += hi - lo;
                            if total > max_samples {
                                return Err(StorageError::TooManySamples { limit: max_samples });
                            }
                            let mut r = s[lo..hi].to_vec();
                            if let Some(iv) = deleted {
                                tombstones::drop_samples(iv, &mut r);
                            }
                            // Frozen data is older than what is in the head now.
                            if !r.is_empty() {
                                runs.insert(0, r);
                            }
                        }
                    }
                }
            }
        }
        let blocks: Vec<Arc<Block>> = self
            .inner
            .blocks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|b| b.kind == kind && b.max_t >= start && b.min_t <= end)
            .cloned()
            .collect();
        Ok(out
            .into_iter()
            .map(|(id, labels, runs, deleted)| {
                let refs = blocks
                    .iter()
                    .filter_map(|b| b.entry(id).map(|e| (b.clone(), *e)))
                    .collect();
                (labels, runs, refs, deleted)
            })
            .collect())
    }

    /// One series' samples in `[start, end]`: its chunks decoded (through the cache) and
    /// merged with its in-memory runs, deletions dropped; `None` when nothing is left.
    /// `total` counts the samples read so far against `max_samples`.
    fn read_part(
        &self,
        (labels, mut runs, refs, deleted): SeriesParts,
        start: i64,
        end: i64,
        total: &AtomicU64,
        max_samples: usize,
    ) -> Result<Option<SeriesData>, StorageError> {
        let mut from_blocks = Vec::with_capacity(refs.len() + runs.len());
        for (b, e) in refs {
            let key = (b.seq, e.series);
            // Only chunks of compacted blocks are cached. Level-0 blocks (head flushes and
            // the open window's sub-window merges) are replaced every few minutes by larger
            // ones: caching them filled the cache with entries of deleted blocks, in ever
            // larger allocations, and fragmented the heap to several times the cache's
            // budget (the soak: 178 → 490 MiB in an hour with it, flat without it).
            let cacheable = b.level > 0;
            let cached = if cacheable {
                self.inner.cache.get(key)
            } else {
                None
            };
            let count = |lo: usize, hi: usize| {
                let n = total.fetch_add((hi - lo) as u64, Ordering::Relaxed) as usize;
                if n + hi - lo > max_samples {
                    return Err(StorageError::TooManySamples { limit: max_samples });
                }
                Ok(())
            };
            let mut run = match cached {
                Some(chunk) => {
                    let lo = chunk.partition_point(|s| s.0 < start);
                    let hi = chunk.partition_point(|s| s.0 <= end).max(lo);
                    count(lo, hi)?;
                    chunk[lo..hi].to_vec()
                }
                None => match b.read_columns(&e) {
                    Ok(c) => {
                        let (ts, vs) = (&c.ints[0], &c.floats[0]);
                        if cacheable {
                            let decoded: Arc<Vec<Sample>> =
                                Arc::new(ts.iter().zip(vs).map(|(&t, &v)| Sample(t, v)).collect());
                            self.inner.cache.insert(key, decoded);
                        }
                        // Only the range, straight from the columns.
                        let lo = ts.partition_point(|&t| t < start);
                        let hi = ts.partition_point(|&t| t <= end).max(lo);
                        count(lo, hi)?;
                        ts[lo..hi]
                            .iter()
                            .zip(&vs[lo..])
                            .map(|(&t, &v)| Sample(t, v))
                            .collect()
                    }
                    Err(err) => {
                        self.note_corrupt(&err);
                        continue;
                    }
                },
            };
            if let Some(iv) = &deleted {
                tombstones::drop_samples(iv, &mut run);
            }
            from_blocks.push(run);
        }
        // Blocks (oldest writes) first, then frozen sets, then the head.
        from_blocks.append(&mut runs);
        let samples = merge_runs(from_blocks);
        Ok((!samples.is_empty()).then_some(SeriesData { labels, samples }))
    }

    /// Whether series `id` has a sample a deletion does not hide, anywhere.
    /// Locks in the read path's order: tombstones, head, frozen sets, blocks.
    fn has_data(&self, t: &tombstones::Tombstones, h: &Head, id: u32) -> bool {
        let parts = {
            let Some(s) = h.get(id) else { return false };
            if !t.touched(id) {
                return true;
            }
            let iv = t.get(id).unwrap_or_else(|| Arc::from([]));
            let mut run = s.range(i64::MIN, i64::MAX).to_vec();
            tombstones::drop_samples(&iv, &mut run);
            if !run.is_empty() {
                return true;
            }
            let frozen = self.inner.frozen.read().unwrap_or_else(|e| e.into_inner());
            let mut runs = Vec::new();
            for f in frozen.iter() {
                if let Some(s) = f.get(id) {
                    let mut r = s.to_vec();
                    tombstones::drop_samples(&iv, &mut r);
                    runs.push(r);
                }
            }
            let refs = self
                .inner
                .blocks
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|b| b.kind == Kind::Raw)
                .filter_map(|b| b.entry(id).map(|e| (b.clone(), *e)))
                .collect();
            (s.labels.clone(), runs, refs, Some(iv))
        };
        let total = AtomicU64::new(0);
        matches!(
            self.read_part(parts, i64::MIN, i64::MAX, &total, usize::MAX),
            Ok(Some(_))
        )
    }

    /// Label values (of `name`, or every label's names with `None`) of the series that have
    /// data, from the postings: the fast path for listings over all time. A value whose
    /// series all have deletions is checked series by series.
    fn listed_values(&self, name: Option<&str>) -> Vec<String> {
        let t = self
            .inner
            .tombstones
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let h = self.read_head();
        let no_deletions = t.is_empty();
        let mut v: Vec<String> = match name {
            None if no_deletions => return h.label_names(),
            Some(n) if no_deletions => h
                .label_values(n)
                .into_iter()
                .map(|(v, _)| v.to_string())
                .collect(),
            _ => {
                let live = |ids: &[u32]| ids.iter().any(|&id| self.has_data(&t, &h, id));
                match name {
                    Some(n) => h
                        .label_values(n)
                        .into_iter()
                        .filter(|(_, ids)| live(ids))
                        .map(|(v, _)| v.to_string())
                        .collect(),
                    None => h
                        .label_names()
                        .into_iter()
                        .filter(|n| h.label_values(n).iter().any(|(_, ids)| live(ids)))
                        .collect(),
                }
            }
        };
        v.sort();
        v
    }

    fn note_corrupt(&self, e: &block::BlockError) {
        self.inner
            .counters
            .corrupt_chunks
            .fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, "chunk skipped");
    }
}

impl Querier for Tsdb {
    fn select(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        max_samples: usize,
    ) -> Result<Vec<SeriesData>, StorageError> {
        let parts = self.read_series(matchers, start_ms, end_ms, max_samples, Kind::Raw)?;
        let in_memory: usize = parts.iter().flat_map(|p| &p.1).map(Vec::len).sum();
        let total = AtomicU64::new(in_memory as u64);
        // Decoding chunks is most of a read: series are split across the cores.
        let read = |part: Vec<SeriesParts>| -> Result<Vec<SeriesData>, StorageError> {
            let mut out = Vec::with_capacity(part.len());
            for p in part {
                if let Some(d) = self.read_part(p, start_ms, end_ms, &total, max_samples)? {
                    out.push(d);
                }
            }
            Ok(out)
        };
        let threads = telltale_common::parallel::threads();
        let chunks: usize = parts.iter().map(|p| p.2.len()).sum();
        if threads <= 1 || chunks < 512 {
            return read(parts);
        }
        let results = telltale_common::parallel::split(parts, threads, read, || {
            StorageError::Write("a read thread panicked".into())
        });
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }

    fn select_rollup(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        resolution_ms: i64,
        max_rows: usize,
    ) -> Result<Vec<RollupData>, StorageError> {
        let kind = match resolution_ms {
            300_000 => Kind::Rollup5m,
            3_600_000 => Kind::Rollup1h,
            _ => {
                return crate::metrics::storage::rollup_from_raw(
                    self,
                    matchers,
                    start_ms,
                    end_ms,
                    resolution_ms,
                    max_rows,
                );
            }
        };
        // Rollups exist for what raw retention removed, and raw blocks expire oldest first:
        // buckets ending before the oldest raw sample still in a block come from rollup
        // blocks, later ones are computed from raw samples. (Raw windows are multiples of the
        // bucket widths, so no bucket straddles the two.)
        let (raw_min, rollup_max) = {
            let blocks = self.inner.blocks.read().unwrap_or_else(|e| e.into_inner());
            let raw_min = blocks
                .iter()
                .filter(|b| b.kind == Kind::Raw)
                .map(|b| b.min_t)
                .min();
            let rollup_max = blocks
                .iter()
                .filter(|b| b.kind == kind)
                .map(|b| b.max_t)
                .max();
            (raw_min, rollup_max)
        };
        let covered = match (rollup_max, raw_min) {
            (None, _) => i64::MIN,
            (Some(r), None) => r,
            (Some(_), Some(m)) => m.saturating_sub(1),
        };
        let mut by_labels: std::collections::HashMap<Labels, Vec<Bucket>> = Default::default();
        let mut rows = 0usize;
        if covered >= start_ms {
            let res = kind.resolution_ms().unwrap_or(resolution_ms);
            for (labels, _, refs, deleted) in
                self.read_series(matchers, start_ms, covered.min(end_ms), max_rows, kind)?
            {
                let mut runs: Vec<Vec<Bucket>> = Vec::new();
                for (b, e) in refs {
                    match b.read_columns(&e).and_then(|c| {
                        rollup::from_columns(&c).map_err(|err| block::BlockError::Corrupt {
                            path: b.path.display().to_string(),
                            message: err.to_string(),
                        })
                    }) {
                        Ok(bk) => runs.push(
                            bk.into_iter()
                                .filter(|x| x.end >= start_ms && x.end <= end_ms.min(covered))
                                .collect(),
                        ),
                        Err(err) => self.note_corrupt(&err),
                    }
                }
                let mut merged = merge_buckets(runs);
                if let Some(iv) = &deleted {
                    tombstones::drop_buckets(iv, res, &mut merged);
                }
                rows += merged.len();
                if rows > max_rows {
                    return Err(StorageError::TooManySamples { limit: max_rows });
                }
                if !merged.is_empty() {
                    by_labels.insert(labels, merged);
                }
            }
        }
        if end_ms > covered {
            let from = if covered == i64::MIN {
                start_ms
            } else {
                (covered + 1).max(start_ms)
            };
            for r in crate::metrics::storage::rollup_from_raw(
                self,
                matchers,
                from,
                end_ms,
                resolution_ms,
                max_rows.saturating_sub(rows),
            )? {
                by_labels.entry(r.labels).or_default().extend(r.buckets);
            }
        }
        Ok(by_labels
            .into_iter()
            .map(|(labels, buckets)| RollupData { labels, buckets })
            .collect())
    }

    fn series(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<Labels> {
        let Ok(parts) = self.read_series(matchers, start_ms, end_ms, usize::MAX, Kind::Raw) else {
            return Vec::new();
        };
        let total = AtomicU64::new(0);
        parts
            .into_iter()
            .filter_map(|p| match p.3 {
                // In-memory runs are cut to the range already; a block whose window lies in
                // the range holds only series with samples there. A block reaching past the
                // range may hold a series only outside it (a host gone an hour before the
                // range ends, which Grafana's variable would still list): its chunk is read.
                None if !p.1.is_empty()
                    || p.2
                        .iter()
                        .any(|(b, _)| b.min_t >= start_ms && b.max_t <= end_ms) =>
                {
                    Some(p.0)
                }
                None if p.2.is_empty() => None,
                // A series with deletions is listed only if a sample is left in the range.
                _ => self
                    .read_part(p, start_ms, end_ms, &total, usize::MAX)
                    .ok()
                    .flatten()
                    .map(|d| d.labels),
            })
            .collect()
    }

    fn label_names(&self, matchers: &[Matcher], start_ms: i64, end_ms: i64) -> Vec<String> {
        if matchers.is_empty() && start_ms == i64::MIN && end_ms == i64::MAX {
            return self.listed_values(None);
        }
        crate::metrics::storage::label_names_of(&self.series(matchers, start_ms, end_ms))
    }

    fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
    ) -> Vec<String> {
        if matchers.is_empty() && start_ms == i64::MIN && end_ms == i64::MAX {
            return self.listed_values(Some(name));
        }
        crate::metrics::storage::label_values_of(&self.series(matchers, start_ms, end_ms), name)
    }

    fn events(&self, matchers: &[Matcher], since_ms: i64, limit: usize) -> Vec<Event> {
        self.read_head().events(matchers, since_ms, limit)
    }
}

impl Admin for Tsdb {
    fn stats(&self) -> StorageStats {
        let h = self.read_head();
        let blocks = self.inner.blocks.read().unwrap_or_else(|e| e.into_inner());
        let frozen = self.inner.frozen.read().unwrap_or_else(|e| e.into_inner());
        let in_blocks: u64 = blocks
            .iter()
            .filter(|b| b.kind == Kind::Raw)
            .map(|b| b.rows)
            .sum();
        let in_frozen: u64 = frozen
            .iter()
            .flat_map(|f| &f.series)
            .map(|s| s.1.len() as u64)
            .sum();
        StorageStats {
            series: h.len() as u64,
            samples: h.head_samples + in_blocks + in_frozen,
            overwritten: h.overwritten,
        }
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.flush_and_compact(now_ms())
    }

    fn snapshot(&self, skip_head: bool) -> Result<String, StorageError> {
        Tsdb::snapshot(self, now_ms(), skip_head)
    }

    fn delete_series(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<u64, StorageError> {
        // What is stored now, not what arrives next (see `tombstones`).
        let end = end.min(now_ms());
        let ids = self.read_head().matching_ids(matchers);
        if ids.is_empty() || start > end {
            return Ok(0);
        }
        let n = ids.len() as u64;
        self.inner
            .tombstones
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .add(&self.inner.dir, tombstones::Record { ids, start, end })
            .map_err(|e| StorageError::Write(format!("cannot record the deletion: {e}")))?;
        tracing::info!(
            series = n,
            start,
            end,
            "series deleted (tombstone recorded)"
        );
        Ok(n)
    }

    fn clean_tombstones(&self) -> Result<u64, StorageError> {
        let applied = self
            .inner
            .tombstones
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .deletions();
        if applied.is_empty() {
            return Ok(0);
        }
        // Everything in memory goes to blocks first, so the rewrite below reaches it all.
        self.flush_and_compact(now_ms())?;
        let n = compact::rewrite_deleted(&self.inner)
            .map_err(|e| StorageError::Write(e.to_string()))?;
        // The series left without a sample: those of the deletions and those emptied before
        // that no sample has brought back.
        let mut ids: Vec<u32> = applied.iter().flat_map(|r| r.ids.iter().copied()).collect();
        let emptied: Vec<u32> = {
            let t = self
                .inner
                .tombstones
                .read()
                .unwrap_or_else(|e| e.into_inner());
            ids.extend(t.emptied());
            ids.sort_unstable();
            ids.dedup();
            let h = self.read_head();
            ids.into_iter()
                .filter(|&id| !self.has_data(&t, &h, id))
                .collect()
        };
        let then = Some(tombstones::Record::emptied(emptied, now_ms()));
        self.inner
            .tombstones
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .forget(&self.inner.dir, &applied, i64::MIN, then)
            .map_err(|e| StorageError::Write(format!("cannot rewrite the tombstones: {e}")))?;
        tracing::info!(blocks = n, deletions = applied.len(), "tombstones cleaned");
        Ok(n as u64)
    }

    fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        use telltale_common::names as n;
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut family = |name: &str, kind: &str, help: &str, rows: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        family(
            n::AGG_SERIES_REFUSED,
            "counter",
            "New series refused by the active-series caps.",
            &[
                (
                    "{reason=\"agent_limit\"}".into(),
                    l(&c.series_refused_agent),
                ),
                (
                    "{reason=\"total_limit\"}".into(),
                    l(&c.series_refused_total),
                ),
                (
                    "{reason=\"remote_write_limit\"}".into(),
                    l(&c.series_refused_remote_write),
                ),
                (
                    "{reason=\"remote_write_request_limit\"}".into(),
                    l(&c.series_refused_request),
                ),
            ],
        );
        family(
            n::AGG_SAMPLES_REFUSED,
            "counter",
            "Samples refused: behind their series' out-of-order window or older than retention (too_old), or further ahead of the aggregator's clock than max_future (too_far_in_future).",
            &[
                ("{reason=\"too_old\"}".into(), l(&c.refused_too_old)),
                (
                    "{reason=\"too_far_in_future\"}".into(),
                    l(&c.refused_too_new),
                ),
            ],
        );
        let (active, head) = {
            let h = self.read_head();
            (h.active_total, h.head_samples)
        };
        family(
            n::AGG_ACTIVE_SERIES,
            "gauge",
            "Series written within the active window.",
            &[(String::new(), active)],
        );
        family(
            n::AGG_HEAD_SAMPLES,
            "gauge",
            "Samples in the head, not yet in a block.",
            &[(String::new(), head)],
        );
        // What the caches hold, so memory can be told apart (the soak reads these).
        let (agent_keys, agent_caches) = {
            let caches = self
                .inner
                .agent_keys
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let n: usize = caches
                .values()
                .map(|c| c.read().unwrap_or_else(|e| e.into_inner()).len())
                .sum();
            (n as u64, caches.len() as u64)
        };
        let rw_keys = self
            .inner
            .rw_keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len() as u64;
        family(
            "telltale_aggregator_series_key_cache_entries",
            "gauge",
            "Label sets as sent (agents' batches, remote_write) cached with their series id.",
            &[
                ("{sender=\"agents\"}".into(), agent_keys),
                ("{sender=\"remote_write\"}".into(), rw_keys),
            ],
        );
        family(
            "telltale_aggregator_series_key_caches",
            "gauge",
            "Per-agent label caches.",
            &[(String::new(), agent_caches)],
        );
        let (cached, cached_bytes) = self.inner.cache.usage();
        family(
            "telltale_aggregator_chunk_cache_chunks",
            "gauge",
            "Decoded chunks in the chunk cache.",
            &[(String::new(), cached)],
        );
        family(
            "telltale_aggregator_chunk_cache_bytes",
            "gauge",
            "Bytes of decoded samples in the chunk cache (its budget is [storage] chunk_cache).",
            &[(String::new(), cached_bytes)],
        );
        let (records, series) = {
            let t = self
                .inner
                .tombstones
                .read()
                .unwrap_or_else(|e| e.into_inner());
            (t.records() as u64, t.series() as u64)
        };
        family(
            n::AGG_TOMBSTONES,
            "gauge",
            "Deletions in force (not yet cleaned), and the series they name.",
            &[
                (r#"{what="deletions"}"#.into(), records),
                (r#"{what="series"}"#.into(), series),
            ],
        );
        let mut per: std::collections::BTreeMap<(&str, u8), u64> = Default::default();
        let mut bytes: std::collections::BTreeMap<&str, u64> = Default::default();
        for (k, lvl, _, b) in self.block_summary() {
            *per.entry((k.name(), lvl)).or_default() += 1;
            *bytes.entry(k.name()).or_default() += b;
        }
        let rows: Vec<(String, u64)> = per
            .into_iter()
            .map(|((k, lvl), v)| (format!("{{kind=\"{k}\",level=\"{lvl}\"}}"), v))
            .collect();
        family(
            n::AGG_BLOCKS,
            "gauge",
            "Storage blocks by kind and level.",
            &rows,
        );
        let rows: Vec<(String, u64)> = bytes
            .into_iter()
            .map(|(k, v)| (format!("{{kind=\"{k}\"}}"), v))
            .collect();
        family(
            n::AGG_BLOCK_BYTES,
            "gauge",
            "Bytes of storage blocks by kind.",
            &rows,
        );
        for (name, help, v) in [
            (
                n::AGG_CORRUPT_CHUNKS,
                "Chunks that failed their checksum or did not decode when read.",
                l(&c.corrupt_chunks),
            ),
            (
                n::AGG_QUARANTINED_BLOCKS,
                "Blocks moved to quarantine at start-up.",
                self.recovery.quarantined,
            ),
            (
                n::AGG_WAL_BYTES,
                "Bytes written to the WAL.",
                l(&c.wal_bytes),
            ),
            (
                n::AGG_HEAD_CUTS,
                "Head cuts into level-0 blocks.",
                l(&c.cuts),
            ),
            (n::AGG_COMPACTIONS, "Compactions.", l(&c.compactions)),
            (
                n::AGG_RESEQUENCED,
                "Blocks merged or rewritten out of turn so that a newer write at a timestamp keeps outranking an older one.",
                l(&c.resequenced),
            ),
            (
                n::AGG_EXPIRED_BLOCKS,
                "Blocks deleted by retention.",
                l(&c.expired_blocks),
            ),
            (
                n::AGG_MAINTENANCE_ERRORS,
                "Storage maintenance rounds that failed.",
                l(&c.maintenance_errors),
            ),
        ] {
            family(name, "counter", help, &[(String::new(), v)]);
        }
    }
}

/// Merges bucket runs given oldest write first (a newer bucket with the same end wins).
pub(super) fn merge_buckets(runs: Vec<Vec<Bucket>>) -> Vec<Bucket> {
    let mut all: Vec<(usize, Bucket)> = runs
        .into_iter()
        .enumerate()
        .flat_map(|(i, r)| r.into_iter().map(move |b| (i, b)))
        .collect();
    all.sort_by_key(|(i, b)| (b.end, *i));
    let mut out: Vec<Bucket> = Vec::with_capacity(all.len());
    for (_, b) in all {
        match out.last_mut() {
            Some(last) if last.end == b.end => *last = b,
            _ => out.push(b),
        }
    }
    out
}
