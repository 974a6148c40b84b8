//! Log patterns: lines clustered into templates as they arrive ([`drain`]), counted per
//! template, per stream and over time, so that one can ask which kinds of lines a stream logs
//! and how often (`/loki/api/v1/patterns`), read the counts as series
//! (`telltale_log_pattern_lines_total{source, pattern}`), and be told when a pattern appears or
//! surges (events `log_pattern_new` and `log_pattern_surge`, at `/api/v1/events`).
//!
//! Templates are learnt per `source` (the stream's `source` label, else `job`): the hosts
//! running one application share them. Counts are kept per stream in 10-second buckets for
//! [`WINDOW_MS`], in memory, so the pattern API answers for any stream selector over the last
//! three hours (as Loki's pattern ingester does); a restart starts learning afresh.
//!
//! Patterns are analysis, never in the way of ingest: the store's append path hands a copy of
//! the stored lines to a thread of its own through a bounded queue and, when the queue is
//! full, counts the lines as skipped instead of waiting ([`super::observe::Observed`]).

pub mod drain;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use telltale_common::model::{Labels, STALE_NAN_BITS, Sample, SeriesSamples};
use telltale_common::names;
use telltale_common::wire::Event;

use crate::labels::Matcher;
use drain::Drain;

/// How long per-stream counts are kept (ms).
pub const WINDOW_MS: i64 = 3 * 3_600_000;
/// Width of a count bucket (ms).
pub const BUCKET_MS: i64 = 10_000;
/// Templates one source holds (the least recently used goes first).
const MAX_TEMPLATES_PER_SOURCE: usize = 500;
/// Pattern series written, all sources together, and per source; templates beyond are
/// counted in their source's `pattern="<other>"` series.
const MAX_SERIES: usize = 2000;
const MAX_SERIES_PER_SOURCE: usize = 100;
/// Count buckets kept, all streams together (16 bytes each): past it the oldest go first.
const MAX_BUCKETS: usize = 4_000_000;
/// Sources learnt; lines of further sources are not clustered (counted as skipped).
const MAX_SOURCES: usize = 2000;
/// Bytes of a line clustered (the rest is ignored).
const MAX_LINE_BYTES: usize = 4096;
/// After a source first appears, no "new pattern" events for this long by default
/// (`[logs] pattern_warmup`): everything is new then, after a restart too.
pub const DEFAULT_WARMUP: std::time::Duration = std::time::Duration::from_secs(600);
/// Lines a template needs before it is announced as new.
const NEW_MIN_LINES: u64 = 3;
/// A surge: a minute with at least this many lines...
const SURGE_MIN_LINES: u64 = 20;
/// ...and this many times the template's mean per minute over the half hour before...
const SURGE_FACTOR: f64 = 5.0;
/// ...measured over at least this much history (ms); announced at most once per cool-down.
const SURGE_HISTORY_MS: i64 = 10 * 60_000;
const SURGE_COOLDOWN_MS: i64 = 15 * 60_000;

/// The pattern series' label value for lines without a series of their own.
pub const OTHER: &str = "<other>";

#[derive(Debug)]
struct Template {
    drain_id: usize,
    total: u64,
    created_ms: i64,
    announced: bool,
    last_surge_ms: i64,
    /// Has a series of its own.
    slot: bool,
    /// The pattern text of the last series written (to mark it stale when it changes).
    written: Option<String>,
    /// Lines per minute by line time, oldest first.
    minutes: VecDeque<(i64, u64)>,
}

#[derive(Debug)]
struct Source {
    drain: Drain,
    first_seen_ms: i64,
    last_seen_ms: i64,
    /// Drain id → template key.
    keys: HashMap<usize, u64>,
    templates: HashMap<u64, Template>,
    /// Lines counted in the `<other>` series.
    other: u64,
    slots: usize,
}

#[derive(Debug, Default)]
struct Stream {
    source: String,
    /// Template key → (bucket start ms, lines), oldest first.
    counts: HashMap<u64, VecDeque<(i64, u64)>>,
}

#[derive(Debug, Default)]
struct State {
    sources: HashMap<String, Source>,
    streams: HashMap<Labels, Stream>,
    next_key: u64,
    slots: usize,
    buckets: usize,
}

/// One pattern's counts over a query's range.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternSeries {
    /// The template (`<_>` for variable parts).
    pub pattern: String,
    /// `(ms, lines)` per step with lines, by time.
    pub samples: Vec<(i64, u64)>,
}

/// What a flush produced: the pattern series' samples and the events.
#[derive(Debug, Default)]
pub struct Flushed {
    /// `telltale_log_pattern_lines_total` samples (and stale markers of renamed patterns).
    pub series: Vec<SeriesSamples>,
    /// `log_pattern_new` and `log_pattern_surge` events.
    pub events: Vec<Event>,
}

/// The pattern index.
#[derive(Debug)]
pub struct Patterns {
    state: Mutex<State>,
    warmup_ms: i64,
    /// Lines clustered.
    pub lines: AtomicU64,
    /// Lines not clustered: the queue was full, or too many sources.
    pub skipped: AtomicU64,
    /// Events written.
    pub events: AtomicU64,
}

fn source_of(labels: &Labels) -> &str {
    labels
        .get("source")
        .or_else(|| labels.get("job"))
        .unwrap_or("unknown")
}

fn add(q: &mut VecDeque<(i64, u64)>, at: i64, n: u64) -> bool {
    match q.iter().rposition(|x| x.0 <= at) {
        Some(i) if q[i].0 == at => {
            q[i].1 += n;
            false
        }
        Some(i) => {
            q.insert(i + 1, (at, n));
            true
        }
        None => {
            q.push_front((at, n));
            true
        }
    }
}

impl Default for Patterns {
    fn default() -> Self {
        Patterns::new(DEFAULT_WARMUP)
    }
}

impl Patterns {
    /// An empty index whose sources announce no new pattern for `warmup` after they appear.
    pub fn new(warmup: std::time::Duration) -> Patterns {
        Patterns {
            state: Mutex::default(),
            warmup_ms: warmup.as_millis().min(i64::MAX as u128) as i64,
            lines: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            events: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Clusters one stream's lines (`(ns, line)`); `now_ms` is the wall clock.
    pub fn feed(&self, labels: &Labels, lines: &[(i64, String)], now_ms: i64) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let name = source_of(labels).to_string();
        if !st.sources.contains_key(&name) && st.sources.len() >= MAX_SOURCES {
            self.skipped
                .fetch_add(lines.len() as u64, Ordering::Relaxed);
            return;
        }
        let src = st.sources.entry(name.clone()).or_insert_with(|| Source {
            drain: Drain::new(MAX_TEMPLATES_PER_SOURCE),
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            keys: HashMap::new(),
            templates: HashMap::new(),
            other: 0,
            slots: 0,
        });
        src.last_seen_ms = now_ms;
        let stream = st.streams.entry(labels.clone()).or_insert_with(|| Stream {
            source: name,
            counts: HashMap::new(),
        });
        for (t_ns, line) in lines {
            let t_ms = t_ns / 1_000_000;
            let mut end = line.len().min(MAX_LINE_BYTES);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            let Some(tr) = src.drain.train(&line[..end]) else {
                src.other += 1;
                continue;
            };
            if let Some(gone) = tr.evicted
                && let Some(key) = src.keys.remove(&gone)
                && let Some(t) = src.templates.remove(&key)
                && t.slot
            {
                src.slots -= 1;
                st.slots -= 1;
            }
            let key = if tr.created {
                let key = st.next_key;
                st.next_key += 1;
                let slot = st.slots < MAX_SERIES && src.slots < MAX_SERIES_PER_SOURCE;
                if slot {
                    st.slots += 1;
                    src.slots += 1;
                }
                src.keys.insert(tr.id, key);
                src.templates.insert(
                    key,
                    Template {
                        drain_id: tr.id,
                        total: 0,
                        created_ms: now_ms,
                        // Everything is new while a source warms up: never announced.
                        announced: now_ms < src.first_seen_ms.saturating_add(self.warmup_ms),
                        last_surge_ms: i64::MIN / 2,
                        slot,
                        written: None,
                        minutes: VecDeque::new(),
                    },
                );
                key
            } else {
                match src.keys.get(&tr.id) {
                    Some(&k) => k,
                    None => continue,
                }
            };
            let Some(t) = src.templates.get_mut(&key) else {
                continue;
            };
            t.total += 1;
            if !t.slot {
                src.other += 1;
            }
            add(&mut t.minutes, t_ms - t_ms.rem_euclid(60_000), 1);
            if t_ms > now_ms - WINDOW_MS {
                let q = stream.counts.entry(key).or_default();
                if add(q, t_ms - t_ms.rem_euclid(BUCKET_MS), 1) {
                    st.buckets += 1;
                }
            }
        }
        self.lines.fetch_add(lines.len() as u64, Ordering::Relaxed);
    }

    /// The patterns of streams matching `matchers`, counted per `step_ms` over
    /// `[start_ms, end_ms]`, most lines first; at most `limit`.
    pub fn query(
        &self,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        limit: usize,
    ) -> Vec<PatternSeries> {
        let step = step_ms.max(BUCKET_MS);
        let st = self.lock();
        let mut acc: HashMap<String, std::collections::BTreeMap<i64, u64>> = HashMap::new();
        for (labels, stream) in &st.streams {
            if !matchers.iter().all(|m| m.matches_labels(labels)) {
                continue;
            }
            let Some(src) = st.sources.get(&stream.source) else {
                continue;
            };
            for (key, q) in &stream.counts {
                let Some(pattern) = src
                    .templates
                    .get(key)
                    .and_then(|t| src.drain.pattern(t.drain_id))
                else {
                    continue;
                };
                let out = acc.entry(pattern).or_default();
                for &(b, n) in q.iter().filter(|x| x.0 >= start_ms && x.0 <= end_ms) {
                    *out.entry(start_ms + (b - start_ms) / step * step)
                        .or_default() += n;
                }
            }
        }
        let mut out: Vec<PatternSeries> = acc
            .into_iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(pattern, s)| PatternSeries {
                pattern,
                samples: s.into_iter().collect(),
            })
            .collect();
        let total = |p: &PatternSeries| p.samples.iter().map(|x| x.1).sum::<u64>();
        out.sort_by(|a, b| total(b).cmp(&total(a)).then(a.pattern.cmp(&b.pattern)));
        out.truncate(limit);
        out
    }

    /// The series samples and events due at `now_ms`, and old counts dropped.
    pub fn flush(&self, now_ms: i64) -> Flushed {
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut out = Flushed::default();
        let minute = now_ms - now_ms.rem_euclid(60_000) - 60_000;
        let idle: Vec<String> = st
            .sources
            .iter()
            .filter(|(_, s)| s.last_seen_ms < now_ms - WINDOW_MS)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &idle {
            if let Some(s) = st.sources.remove(n) {
                st.slots -= s.slots;
            }
        }
        for (name, src) in &mut st.sources {
            let series = |pattern: &str, v: f64| SeriesSamples {
                labels: Labels::from_pairs([
                    ("__name__", names::LOG_PATTERN_LINES),
                    ("pattern", pattern),
                    ("source", name.as_str()),
                ]),
                samples: vec![Sample(now_ms, v)],
            };
            if src.other > 0 {
                out.series.push(series(OTHER, src.other as f64));
            }
            for t in src.templates.values_mut() {
                let pattern = src.drain.pattern(t.drain_id).unwrap_or_default();
                if t.slot {
                    if let Some(old) = t.written.as_deref().filter(|o| *o != pattern) {
                        out.series.push(series(old, f64::from_bits(STALE_NAN_BITS)));
                    }
                    out.series.push(series(&pattern, t.total as f64));
                    t.written = Some(pattern.clone());
                }
                while t.minutes.front().is_some_and(|x| x.0 < minute - 3_600_000) {
                    t.minutes.pop_front();
                }
                let event = |kind: &str, message: String| Event {
                    t_ms: now_ms,
                    kind: kind.into(),
                    labels: vec![
                        ("pattern".into(), pattern.clone()),
                        ("source".into(), name.clone()),
                    ],
                    message,
                };
                if !t.announced && t.total >= NEW_MIN_LINES {
                    t.announced = true;
                    out.events.push(event(
                        "log_pattern_new",
                        format!(
                            "new log pattern in {name}: {} lines of {pattern:?}",
                            t.total
                        ),
                    ));
                }
                let in_minute = |m: i64| t.minutes.iter().find(|x| x.0 == m).map_or(0, |x| x.1);
                let last = in_minute(minute);
                let history_from = (minute - 30 * 60_000).max(t.created_ms);
                if last >= SURGE_MIN_LINES
                    && minute - history_from >= SURGE_HISTORY_MS
                    && now_ms - t.last_surge_ms >= SURGE_COOLDOWN_MS
                {
                    let before: u64 = t
                        .minutes
                        .iter()
                        .filter(|x| x.0 >= history_from && x.0 < minute)
                        .map(|x| x.1)
                        .sum();
                    let mean = before as f64 / ((minute - history_from) / 60_000).max(1) as f64;
                    if last as f64 >= SURGE_FACTOR * mean.max(1.0) {
                        t.last_surge_ms = now_ms;
                        out.events.push(event(
                            "log_pattern_surge",
                            format!(
                                "log pattern surging in {name}: {last} lines in a minute, {mean:.1} a minute before: {pattern:?}"
                            ),
                        ));
                    }
                }
            }
        }
        // Counts of templates gone (evicted, idle sources) and buckets past the window.
        let cutoff = if st.buckets > MAX_BUCKETS {
            // Over the memory bound: keep the newest part of the window that fits.
            let keep = WINDOW_MS as f64 * MAX_BUCKETS as f64 / st.buckets as f64;
            now_ms - keep as i64
        } else {
            now_ms - WINDOW_MS
        };
        let sources = &st.sources;
        let mut buckets = 0;
        st.streams.retain(|_, s| {
            let Some(src) = sources.get(&s.source) else {
                return false;
            };
            s.counts.retain(|k, q| {
                while q.front().is_some_and(|x| x.0 < cutoff) {
                    q.pop_front();
                }
                buckets += q.len();
                !q.is_empty() && src.templates.contains_key(k)
            });
            !s.counts.is_empty()
        });
        st.buckets = buckets;
        self.events
            .fetch_add(out.events.len() as u64, Ordering::Relaxed);
        out
    }

    /// Appends the index's counters.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let (templates, streams) = {
            let st = self.lock();
            (
                st.sources.values().map(|s| s.drain.len()).sum::<usize>(),
                st.streams.len(),
            )
        };
        for (n, help, kind, v) in [
            (
                names::AGG_LOG_PATTERN_LINES,
                "Log lines clustered into patterns.",
                "counter",
                self.lines.load(Ordering::Relaxed),
            ),
            (
                names::AGG_LOG_PATTERN_SKIPPED,
                "Log lines not clustered (the pattern queue was full, or too many sources).",
                "counter",
                self.skipped.load(Ordering::Relaxed),
            ),
            (
                names::AGG_LOG_PATTERN_EVENTS,
                "log_pattern_new and log_pattern_surge events written.",
                "counter",
                self.events.load(Ordering::Relaxed),
            ),
            (
                names::AGG_LOG_PATTERNS,
                "Log pattern templates held.",
                "gauge",
                templates as u64,
            ),
            (
                names::AGG_LOG_PATTERN_STREAMS,
                "Log streams with pattern counts.",
                "gauge",
                streams as u64,
            ),
        ] {
            let _ = writeln!(out, "# HELP {n} {help}\n# TYPE {n} {kind}\n{n} {v}");
        }
    }
}

#[cfg(test)]
mod tests;
