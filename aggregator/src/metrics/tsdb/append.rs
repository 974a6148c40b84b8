//! The write path: resolving a batch's series to ids (cached by their label bytes per agent
//! and for remote_write), the WAL writer thread with group commit, and [`Appender`].

use super::*;

impl Tsdb {
    /// Resolves sorted label pairs to series ids, creating new series within the caps: the
    /// total, the owner's (an agent's, or all remote_write senders' together) and, for
    /// remote_write, a cap on new series per request. `None` for a refused series.
    fn resolve_ids(
        &self,
        agent: Option<&str>,
        remote_write: bool,
        pairs: &[&[(&str, &str)]],
    ) -> Vec<Option<u32>> {
        let opts = &self.inner.opts;
        let (owner_name, owner_cap, mut new_left) = if remote_write {
            (
                Some(REMOTE_WRITE_OWNER),
                opts.max_series_remote_write,
                opts.max_new_series_per_remote_write,
            )
        } else {
            (agent, opts.max_series_per_agent, u64::MAX)
        };
        let hashes: Vec<u64> = pairs
            .iter()
            .map(|p| hash_labels(p.iter().copied()))
            .collect();
        let (mut ids, unowned): (Vec<Option<u32>>, bool) = {
            let h = self.read_head();
            let ids: Vec<Option<u32>> = pairs
                .iter()
                .zip(&hashes)
                .map(|(p, &hash)| h.lookup(p, hash))
                .collect();
            // Series loaded from series.log have no owner until their agent writes again.
            let unowned = owner_name.is_some()
                && ids
                    .iter()
                    .flatten()
                    .any(|&id| h.get(id).is_some_and(|s| s.owner == NO_OWNER));
            (ids, unowned)
        };
        if unowned {
            let mut h = self.inner.head.write().unwrap_or_else(|e| e.into_inner());
            let owner = h.owner_id(owner_name);
            for &id in ids.iter().flatten() {
                h.claim(id, owner);
            }
        }
        if ids.iter().any(Option::is_none) {
            let now_s = (now_ms() / 1000) as u32;
            let mut h = self.inner.head.write().unwrap_or_else(|e| e.into_inner());
            let owner = h.owner_id(owner_name);
            let (mut refused_agent, mut refused_total, mut refused_request) = (0u64, 0u64, 0u64);
            for (i, id) in ids.iter_mut().enumerate() {
                if id.is_some() {
                    continue;
                }
                if let Some(found) = h.lookup(pairs[i], hashes[i]) {
                    *id = Some(found);
                } else if h.active_total >= opts.max_series {
                    refused_total += 1;
                } else if owner != NO_OWNER && h.active_of(owner) >= owner_cap {
                    refused_agent += 1;
                } else if new_left == 0 {
                    refused_request += 1;
                } else {
                    new_left -= 1;
                    let labels = Labels::from_pairs(pairs[i].iter().copied());
                    *id = Some(h.create(labels, hashes[i], owner, now_s));
                }
            }
            drop(h);
            let c = &self.inner.counters;
            if refused_agent + refused_total + refused_request > 0 {
                let counter = if remote_write {
                    &c.series_refused_remote_write
                } else {
                    &c.series_refused_agent
                };
                counter.fetch_add(refused_agent, Ordering::Relaxed);
                c.series_refused_total
                    .fetch_add(refused_total, Ordering::Relaxed);
                c.series_refused_request
                    .fetch_add(refused_request, Ordering::Relaxed);
                tracing::warn!(
                    owner = owner_name.unwrap_or("-"),
                    refused_owner_cap = refused_agent,
                    refused_total,
                    refused_request,
                    "new series refused: a series cap was reached (existing series keep flowing)"
                );
            }
        }
        ids
    }

    /// Series ids for series known by the bytes their labels were sent as: from `cache` for
    /// bytes seen before (no label is decoded, checked, sorted or hashed for those), the rest
    /// decoded by `decode` (an error refuses the request before anything is stored; `None`
    /// drops that series), resolved within the caps, then cached. Also the metric names,
    /// when `names` is wanted.
    #[allow(clippy::too_many_arguments)]
    fn ids_by_key<'k>(
        &self,
        cache: &RwLock<KeyCache>,
        cap: u64,
        keys: &[&'k [u8]],
        agent: Option<&str>,
        remote_write: bool,
        decode: impl Fn(&'k [u8]) -> Result<Option<Vec<(&'k str, &'k str)>>, String>,
        names: bool,
    ) -> Result<IdsAndNames, String> {
        let mut ids = vec![None; keys.len()];
        let mut metric_names: Vec<Arc<str>> = Vec::new();
        let mut misses: Vec<usize> = Vec::new();
        {
            let cache = cache.read().unwrap_or_else(|e| e.into_inner());
            for (i, key) in keys.iter().enumerate() {
                match cache.get(*key) {
                    Some((id, name)) => {
                        ids[i] = Some(*id);
                        if names && metric_names.last().is_none_or(|n| !Arc::ptr_eq(n, name)) {
                            metric_names.push(name.clone());
                        }
                    }
                    None => misses.push(i),
                }
            }
        }
        if misses.is_empty() {
            return Ok((ids, metric_names));
        }
        let mut decoded: Vec<(usize, Vec<(&str, &str)>)> = Vec::with_capacity(misses.len());
        for &i in &misses {
            if let Some(p) = decode(keys[i])? {
                decoded.push((i, p));
            }
        }
        let slices: Vec<&[(&str, &str)]> = decoded.iter().map(|(_, p)| p.as_slice()).collect();
        let found = self.resolve_ids(agent, remote_write, &slices);
        let mut cache = cache.write().unwrap_or_else(|e| e.into_inner());
        // Senders spelling label sets in ever new ways cannot grow it without bound.
        let cap = usize::try_from(cap)
            .unwrap_or(usize::MAX)
            .saturating_mul(2)
            .max(1 << 16);
        if cache.len() + decoded.len() > cap {
            cache.clear();
        }
        for ((i, p), id) in decoded.iter().zip(found) {
            ids[*i] = id;
            let name: Arc<str> = p
                .iter()
                .find(|(k, _)| *k == "__name__")
                .map(|(_, v)| Arc::from(*v))
                .unwrap_or_else(|| Arc::from(""));
            if names {
                metric_names.push(name.clone());
            }
            if let Some(id) = id {
                cache.insert(keys[*i].to_vec().into_boxed_slice(), (id, name));
            }
        }
        Ok((ids, metric_names))
    }

    /// Points, events and (if `names`) the distinct metric names of an agent's batch walked
    /// by [`batch_scan::scan`]: the same cached path as remote_write, per agent (the labels
    /// an agent sends are stamped with its name).
    fn resolve_agent_batch(
        &self,
        agent: &str,
        raw: batch_scan::RawBatch<'_>,
        names: bool,
    ) -> Result<Resolved, String> {
        let cache = {
            let caches = self
                .inner
                .agent_keys
                .read()
                .unwrap_or_else(|e| e.into_inner());
            caches.get(agent).cloned()
        };
        let cache = match cache {
            Some(c) => c,
            None => self
                .inner
                .agent_keys
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(agent.to_string())
                .or_default()
                .clone(),
        };
        let keys: Vec<&[u8]> = raw.series.iter().map(|(k, _)| *k).collect();
        let decode = |key| {
            let mut p = batch_scan::pairs(key).ok_or("undecodable labels")?;
            if !stamp_agent_labels(&mut p, agent) {
                return Ok(None);
            }
            invalid_names(&p).map_or(Ok(Some(p)), Err)
        };
        let cap = self.inner.opts.max_series_per_agent;
        let (ids, mut metric_names) =
            self.ids_by_key(&cache, cap, &keys, Some(agent), false, decode, names)?;
        let mut points = Vec::with_capacity(raw.samples.len());
        for ((_, range), id) in raw.series.iter().zip(ids) {
            if let Some(id) = id {
                points.extend(raw.samples[range.clone()].iter().map(|&x| (id, x)));
            }
        }
        if names {
            metric_names.sort_unstable();
            metric_names.dedup();
        }
        if let Some(reason) = invalid_event_names(&raw.events) {
            return Err(reason);
        }
        let mut events = raw.events;
        stamp_events(&mut events, Some(agent));
        Ok((points, events, metric_names))
    }

    async fn append_inner(&self, req: AppendRequest) -> Result<AppendOutcome, StorageError> {
        if let Some(o) = &req.origin {
            let fresh = self.lock_dedup().mark(&o.agent, o.epoch, o.sequence);
            if !fresh {
                // Stored or being stored: a barrier behind it makes sure it is durable.
                let (done, rx) = oneshot::channel();
                self.tx
                    .send(Job::Barrier { done })
                    .await
                    .map_err(|_| StorageError::Closed)?;
                rx.await.map_err(|_| StorageError::Closed)??;
                return if self.lock_dedup().contains(&o.agent, o.epoch, o.sequence) {
                    Ok(AppendOutcome::Duplicate)
                } else {
                    Err(StorageError::Write(
                        "the earlier copy of this batch failed to write".into(),
                    ))
                };
            }
        }
        let unmark = |this: &Self| {
            if let Some(o) = &req.origin {
                this.lock_dedup().unmark(&o.agent, o.epoch, o.sequence);
            }
        };
        let hook = self.hook.read().unwrap_or_else(|e| e.into_inner()).clone();
        let resolved = match &req.data {
            AppendData::RemoteWrite(raw) => self.resolve_remote_write(raw, hook.is_some()),
            AppendData::Encoded(w) => match (&req.origin, batch_scan::scan(w)) {
                (Some(o), Some(raw)) => self.resolve_agent_batch(&o.agent, raw, hook.is_some()),
                _ => self.resolve_prepared(&req, Some(w), &[], hook.is_some()),
            },
            AppendData::Series(s) => self.resolve_prepared(&req, None, s, hook.is_some()),
        };
        let (points, events, names) = match resolved {
            Ok(r) => r,
            Err(reason) => {
                unmark(self);
                return Ok(AppendOutcome::Invalid { reason });
            }
        };
        // The log record names series by id: their labels are in the log once, in the
        // definitions the writer puts in front of the first group that names them.
        let mut encoded = Vec::new();
        wal::encode_points(&points, &mut encoded);
        let payload = match codec::encode_payload(&Record::points(
            req.origin.as_ref(),
            &encoded,
            events.clone(),
        )) {
            Ok(p) => p,
            Err(e) => {
                unmark(self);
                return Err(StorageError::Write(e.to_string()));
            }
        };
        let mut framed = Vec::with_capacity(HEADER_LEN + payload.len());
        codec::frame_into(&payload, &mut framed);
        let (done, rx) = oneshot::channel();
        let job = Job::Write {
            framed,
            points,
            events,
            origin: req.origin.clone(),
            done,
        };
        if self.tx.send(job).await.is_err() {
            unmark(self);
            return Err(StorageError::Closed);
        }
        let samples = rx.await.map_err(|_| StorageError::Closed)??;
        if let Some(h) = hook {
            let names: Vec<&str> = names.iter().map(|n| &**n).collect();
            h(&names);
        }
        Ok(AppendOutcome::Stored { samples })
    }

    /// Points, events and (if `names`) the distinct metric names of a remote_write request.
    fn resolve_remote_write(&self, raw: &[u8], names: bool) -> Result<Resolved, String> {
        fn bad(e: impl std::fmt::Display) -> String {
            format!("malformed remote_write body: {e}")
        }
        let sc = remote_write::scan(raw).map_err(bad)?;
        let keys: Vec<&[u8]> = sc.series.iter().map(|s| &*s.key).collect();
        // Every new key is checked before anything is stored: a bad series refuses the
        // request, as before the cache.
        let decode = |key| {
            remote_write::labels(key)
                .map(Some)
                .map_err(|e| e.to_string())
        };
        let cap = self.inner.opts.max_series_remote_write;
        let (ids, mut metric_names) = self
            .ids_by_key(&self.inner.rw_keys, cap, &keys, None, true, decode, names)
            .map_err(bad)?;
        let mut points = Vec::with_capacity(sc.samples.len());
        for (s, id) in sc.series.iter().zip(ids) {
            if let Some(id) = id {
                points.extend(sc.samples[s.samples.clone()].iter().map(|&x| (id, x)));
            }
        }
        if names {
            // A sender's series of one metric come together and share the cache's name: the
            // runs go first, by pointer, so the sort sees a few names rather than every series.
            metric_names.dedup_by(|a, b| Arc::ptr_eq(a, b));
            metric_names.sort_unstable();
            metric_names.dedup();
        }
        Ok((points, Vec::new(), metric_names))
    }

    /// Points, events and (if `names`) the distinct metric names of an agent batch or of the
    /// aggregator's own series.
    fn resolve_prepared(
        &self,
        req: &AppendRequest,
        wire: Option<&[u8]>,
        series: &[SeriesSamples],
        names: bool,
    ) -> Result<Resolved, String> {
        let agent = req.origin.as_ref().map(|o| o.agent.as_str());
        let (prepared, events) = prepare(agent, wire, series).map_err(|e| e.to_string())?;
        if agent.is_some()
            && let Some(reason) = prepared
                .iter()
                .find_map(|(p, _)| invalid_names(p))
                .or_else(|| invalid_event_names(&events))
        {
            return Err(reason);
        }
        let mut metric_names: Vec<Arc<str>> = Vec::new();
        if names {
            let mut seen: Vec<&str> = prepared
                .iter()
                .filter_map(|(pairs, _)| pairs.iter().find(|(k, _)| *k == "__name__"))
                .map(|(_, n)| *n)
                .collect();
            seen.sort_unstable();
            seen.dedup();
            metric_names = seen.into_iter().map(Arc::from).collect();
        }
        let slices: Vec<&[(&str, &str)]> = prepared.iter().map(|(p, _)| p.as_slice()).collect();
        let ids = self.resolve_ids(agent, false, &slices);
        let mut points = Vec::with_capacity(prepared.iter().map(|(_, s)| s.len()).sum());
        for (id, (_, samples)) in ids.into_iter().zip(prepared) {
            if let Some(id) = id {
                points.extend(samples.into_iter().map(|s| (id, s)));
            }
        }
        Ok((points, events, metric_names))
    }
}

/// Frozen sets that may wait for their block before the writer stops taking writes (and so
/// stops acknowledging): memory stays bounded when blocks are written slower than data
/// arrives, or not at all (a full disk).
const MAX_FROZEN: usize = 2;

/// The WAL writer thread. Series ids below `logged` are defined in the log or in
/// `series.log` (at start-up: every series the head holds, taken before any append can
/// create one).
pub(super) fn run_writer(
    mut w: Writer,
    mut rx: mpsc::Receiver<Job>,
    inner: Arc<Inner>,
    mut logged: usize,
) {
    let mut buf = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut waited = false;
        while inner.frozen.read().unwrap_or_else(|e| e.into_inner()).len() >= MAX_FROZEN {
            if !waited {
                tracing::warn!("blocks are written slower than data arrives: ingest waits");
                waited = true;
            }
            inner.wake_cutter();
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut jobs = vec![first];
        while jobs.len() < 4096 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        buf.clear();
        // Series created since the last group (appends resolve their ids before they queue)
        // are defined in front of the records that name them.
        let mut defined = logged;
        let mut defs_err = None;
        if jobs.iter().any(|j| matches!(j, Job::Write { .. })) {
            let defs: Vec<SeriesRecord> = {
                let h = inner.head.read().unwrap_or_else(|e| e.into_inner());
                defined = h.len();
                (logged..defined)
                    .filter_map(|id| {
                        let id = id as u32;
                        h.get(id).map(|s| SeriesRecord {
                            id,
                            labels: s.labels.clone(),
                        })
                    })
                    .collect()
            };
            if !defs.is_empty() {
                match codec::encode_payload(&Record::defs(defs)) {
                    Ok(p) => codec::frame_into(&p, &mut buf),
                    // Cannot happen for labels; were it to, the group is not written.
                    Err(e) => defs_err = Some(format!("cannot encode series definitions: {e}")),
                }
            }
        }
        for j in &jobs {
            if let Job::Write { framed, .. } = j {
                buf.extend_from_slice(framed);
            }
        }
        let res = if let Some(e) = defs_err {
            Err(std::io::Error::other(e))
        } else if buf.is_empty() {
            Ok(())
        } else {
            w.write_group(&buf)
        };
        match res {
            Ok(()) => {
                logged = defined;
                *inner.wal_tip.lock().unwrap_or_else(|e| e.into_inner()) =
                    (w.segment(), w.synced_len());
                if !buf.is_empty() {
                    let mut w = inner.write_error.lock().unwrap_or_else(|e| e.into_inner());
                    if w.as_ref()
                        .is_some_and(|(_, failed)| writable_again(&inner.dir, *failed))
                    {
                        w.take();
                        tracing::info!("log writes succeed again");
                    }
                }
                inner
                    .counters
                    .wal_bytes
                    .fetch_add(buf.len() as u64, Ordering::Relaxed);
                let now = now_ms();
                let limits = AppendLimits {
                    ooo_window_ms: ms(inner.opts.ooo_window),
                    min_t: now.saturating_sub(ms(inner.opts.retention)),
                    max_t: now.saturating_add(ms(inner.opts.max_future)),
                };
                let now_s = (now / 1000) as u32;
                let mut answers = Vec::with_capacity(jobs.len());
                let (mut too_old, mut too_new) = (0, 0);
                let mut cut = None;
                {
                    let mut h = inner.head.write().unwrap_or_else(|e| e.into_inner());
                    let mut durable = inner.durable.lock().unwrap_or_else(|e| e.into_inner());
                    let mut pending = inner
                        .pending_events
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    let mut stored = 0;
                    for j in jobs {
                        match j {
                            Job::Write {
                                points,
                                events,
                                origin,
                                done,
                                ..
                            } => {
                                let a = if inner.opts.forward_only {
                                    h.touch(&points, now_s)
                                } else {
                                    h.apply(&points, Some(limits), now_s)
                                };
                                stored += a.stored;
                                too_old += a.too_old;
                                too_new += a.too_new;
                                pending.extend(events.iter().cloned());
                                h.push_events(events);
                                if let Some(o) = origin {
                                    durable.mark(&o.agent, o.epoch, o.sequence);
                                }
                                answers.push((done, Ok(a.stored)));
                            }
                            Job::Barrier { done } => answers.push((done, Ok(0))),
                            Job::Cut { done } => cut = Some(done),
                        }
                    }
                    if stored > 0 {
                        let _ = inner.head_since_ms.compare_exchange(
                            0,
                            now as u64,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    // Cut when asked to, or at once when the head reaches its budget (the
                    // cutter thread writes the frozen set into a block).
                    // (Forward only: when the segment reaches its size, so that what was
                    // sent can be deleted.)
                    let over = if inner.opts.forward_only {
                        w.synced_len() >= inner.opts.forward_segment_bytes
                    } else {
                        h.head_samples >= inner.head_budget(h.active_total)
                    };
                    if cut.is_some() || over {
                        // Everything before the new segment is in this head: move it out.
                        let r = w
                            .roll()
                            .map_err(|e| StorageError::Write(e.to_string()))
                            .map(|()| {
                                *inner.wal_tip.lock().unwrap_or_else(|e| e.into_inner()) =
                                    (w.segment(), 0);
                                let frozen = Arc::new(Frozen {
                                    series: h.take_samples(),
                                    wal_segment: w.segment(),
                                    durable: durable.to_list(),
                                    events: std::mem::take(&mut *pending),
                                });
                                inner
                                    .frozen
                                    .write()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(frozen);
                                inner.head_since_ms.store(0, Ordering::Relaxed);
                            });
                        if let Err(e) = &r {
                            tracing::error!(error = %e, "cannot roll the WAL to cut the head; retrying later");
                        }
                        if let Some(done) = cut {
                            let _ = done.send(r);
                        }
                        inner.wake_cutter();
                    }
                }
                if too_new > 0 {
                    inner
                        .counters
                        .refused_too_new
                        .fetch_add(too_new as u64, Ordering::Relaxed);
                }
                if too_old > 0 {
                    inner
                        .counters
                        .refused_too_old
                        .fetch_add(too_old as u64, Ordering::Relaxed);
                }
                for (done, r) in answers {
                    let _ = done.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "log write failed; the batches are not acknowledged");
                *inner.write_error.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((e.to_string(), buf.len() as u64));
                let mut d = inner.dedup.lock().unwrap_or_else(|e| e.into_inner());
                for j in jobs {
                    match j {
                        Job::Write { origin, done, .. } => {
                            if let Some(o) = origin {
                                d.unmark(&o.agent, o.epoch, o.sequence);
                            }
                            let _ = done.send(Err(StorageError::Write(e.to_string())));
                        }
                        Job::Barrier { done } => {
                            let _ = done.send(Err(StorageError::Write(e.to_string())));
                        }
                        Job::Cut { done } => {
                            let _ = done.send(Err(StorageError::Write(e.to_string())));
                        }
                    }
                }
            }
        }
    }
}

/// Whether a log that failed writing `failed` bytes counts as writable again after a later write
/// succeeded. On a full disk a small write can succeed in the bytes the failed one freed when its
/// partial record was cut off, and readiness would flap between "cannot write" and ready many
/// times a second; so the failure stands until the filesystem has room for the failed group
/// and a margin (1 MiB). Without a free-space figure (statvfs failing), a success is enough.
fn writable_again(dir: &Path, failed: u64) -> bool {
    match rustix::fs::statvfs(dir) {
        Ok(s) => s.f_bavail.saturating_mul(s.f_frsize) >= failed.saturating_add(1 << 20),
        Err(_) => true,
    }
}

impl Appender for Tsdb {
    fn append(&self, req: AppendRequest) -> BoxFuture<'_, Result<AppendOutcome, StorageError>> {
        Box::pin(self.append_inner(req))
    }

    fn write_error(&self) -> Option<String> {
        self.inner
            .write_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(e, _)| e.clone())
    }

    fn set_append_hook(&self, hook: AppendHook) {
        *self.hook.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }
}

/// Why an agent's events cannot be stored, if they cannot: a label name no selector could
/// name (events are matched by selectors in `/api/v1/events` and by correlation), as for
/// its series.
fn invalid_event_names(events: &[telltale_common::wire::Event]) -> Option<String> {
    events.iter().find_map(|e| {
        e.labels
            .iter()
            .find(|(k, _)| !telltale_common::model::valid_label_name(k))
            .map(|(k, _)| {
                let k: String = k.chars().take(100).collect();
                format!("invalid label name {k:?} in an event")
            })
    })
}

/// Why an agent's series cannot be stored: a label or metric name Prometheus' rules do not
/// allow. The agent's sources only make valid names, so a batch with one is refused whole
/// (as remote_write refuses a request with one) with this reason, rather than stored where
/// selectors cannot name it and `/federate` would write a page its scrapers cannot parse.
/// Replaying the write-ahead log does not check: what was once stored stays readable.
pub(super) fn invalid_names(pairs: &[(&str, &str)]) -> Option<String> {
    use telltale_common::model::{METRIC_NAME, valid_label_name, valid_metric_name};
    let short = |s: &str| s.chars().take(100).collect::<String>();
    pairs.iter().find_map(|(k, v)| {
        if *k == METRIC_NAME {
            (!valid_metric_name(v)).then(|| format!("invalid metric name {:?}", short(v)))
        } else {
            (!valid_label_name(k)).then(|| format!("invalid label name {:?}", short(k)))
        }
    })
}
