//! Lines gathered into streams for one batch: what every log source hands to its sink.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use regex_lite::Regex;
use telltale_common::wire::{Batch, LogEntry, LogStream};

use crate::pipeline::logsink::LogSink;

/// A batch is worth pushing once it holds this many bytes of lines. Every copy of a batch on
/// its way out (its entries, the encoded frame, sled's write, the shipper's read, QUIC's send
/// buffer) is alive at once for a moment, so this bounds the agent's memory spikes: at 512
/// KiB the logs benchmark measured peaks 6–8 MiB above the steady state. 128 KiB makes a batch
/// every 70 ms at 10 000 records/s, which cost the agent about a third more CPU there: sled
/// rewrites a leaf holding several log batches as a blob file on every insert and removal
/// (see the README's logs benchmark), so each batch pays for its neighbours.
pub const BATCH_BYTES: usize = 128 * 1024;

/// Lines by stream, in arrival order.
#[derive(Debug, Default)]
pub struct LogBatcher {
    streams: Vec<LogStream>,
    index: HashMap<Vec<(String, String)>, usize>,
    bytes: usize,
}

impl LogBatcher {
    /// Adds a line to the stream `labels` (sorted here; a name given twice keeps its first
    /// value).
    pub fn add(&mut self, mut labels: Vec<(String, String)>, entry: LogEntry) {
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|a, b| a.0 == b.0);
        self.add_sorted(&labels, entry);
    }

    /// [`LogBatcher::add`] with labels already sorted by name and without repeats: they are
    /// copied only for a stream not yet in the batch.
    pub fn add_sorted(&mut self, labels: &[(String, String)], entry: LogEntry) {
        self.bytes += entry.line.len();
        let i = match self.index.get(labels) {
            Some(&i) => i,
            None => {
                self.streams.push(LogStream {
                    labels: labels.to_vec(),
                    entries: Vec::new(),
                });
                self.index.insert(labels.to_vec(), self.streams.len() - 1);
                self.streams.len() - 1
            }
        };
        self.streams[i].entries.push(entry);
    }

    /// Bytes of lines held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a batch should be pushed now.
    pub fn full(&self) -> bool {
        self.bytes >= BATCH_BYTES
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// The streams held, emptying the batcher.
    pub fn take(&mut self) -> Vec<LogStream> {
        self.index.clear();
        self.bytes = 0;
        std::mem::take(&mut self.streams)
    }
}

/// Cuts `line` to at most `max` bytes (on a character boundary); whether it was cut.
pub fn cut_line(line: &mut String, max: usize) -> bool {
    if line.len() <= max {
        return false;
    }
    let mut cut = max;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    line.truncate(cut);
    true
}

/// A wire batch carrying log streams only (the buffer gives it its sequence).
pub fn batch_of(streams: Vec<LogStream>) -> Batch {
    Batch {
        sequence: 0,
        created_ms: telltale_common::model::now_ms(),
        series: Vec::new(),
        events: Vec::new(),
        spans: Vec::new(),
        exemplars: Vec::new(),
        logs: streams,
    }
}

/// Hands what a listener gathered to the sink as one batch (nothing when it is empty); a
/// failure drops the lines (a listener cannot ask its senders again) and is logged.
pub async fn flush(batch: &Mutex<LogBatcher>, sink: &dyn LogSink, source: &str) {
    let streams = batch.lock().map(|mut b| b.take()).unwrap_or_default();
    if streams.is_empty() {
        return;
    }
    if let Err(e) = sink.store(batch_of(streams), Vec::new(), Vec::new()).await {
        tracing::error!(source, error = %e, "received log lines could not be buffered: dropped");
    }
}

/// A message that does not follow its protocol (syslog, forward): what is wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadMessage(pub &'static str);

/// What a source does past its rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OverLimit {
    /// Drop the lines (counted).
    Drop,
    /// Keep one line in `n` (the others counted as dropped).
    Sample(u32),
}

/// A source's rate limit and the counters it derives from its lines.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Most lines a second (0: no limit).
    pub max_lines: u64,
    /// Most bytes of lines a second (0: no limit).
    pub max_bytes: u64,
    /// What happens past either.
    pub over: OverLimit,
    /// `(name, regex)`: a counter of the lines matching each, by source
    /// (`telltale_agent_log_matches_total{source, counter}`).
    pub counters: Vec<(String, Regex)>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            max_lines: 0,
            max_bytes: 0,
            over: OverLimit::Drop,
            counters: Vec::new(),
        }
    }
}

/// Counts lines by source and level, and by source and counter, for the agent's own series.
///
/// Keyed by source first, so counting a line looks its source up by `&str` and allocates
/// nothing (only a source's first line does).
#[derive(Debug, Default)]
pub struct LineCounts {
    by_level: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    by_counter: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    dropped: Mutex<BTreeMap<String, u64>>,
}

/// Adds one to `map[source][key]`, allocating only for a key or source not seen before.
fn bump<K: Ord + std::borrow::Borrow<str>>(
    map: &Mutex<BTreeMap<String, BTreeMap<K, u64>>>,
    source: &str,
    key: impl std::borrow::Borrow<str> + Into<K> + Copy,
) {
    let Ok(mut m) = map.lock() else {
        return;
    };
    let inner = match m.get_mut(source) {
        Some(i) => i,
        None => m.entry(source.to_string()).or_default(),
    };
    match inner.get_mut(key.borrow()) {
        Some(n) => *n += 1,
        None => {
            inner.insert(key.into(), 1);
        }
    }
}

impl LineCounts {
    /// `(source, level, lines)`, `(source, counter, lines)`, `(source, lines dropped by the
    /// rate limit)`.
    #[allow(clippy::type_complexity)]
    pub fn snapshot(
        &self,
    ) -> (
        Vec<(String, &'static str, u64)>,
        Vec<(String, String, u64)>,
        Vec<(String, u64)>,
    ) {
        let lv = self
            .by_level
            .lock()
            .map(|m| {
                m.iter()
                    .flat_map(|(s, l)| l.iter().map(|(l, n)| (s.clone(), *l, *n)))
                    .collect()
            })
            .unwrap_or_default();
        let ct = self
            .by_counter
            .lock()
            .map(|m| {
                m.iter()
                    .flat_map(|(s, c)| c.iter().map(|(c, n)| (s.clone(), c.clone(), *n)))
                    .collect()
            })
            .unwrap_or_default();
        let dr = self
            .dropped
            .lock()
            .map(|m| m.iter().map(|(s, n)| (s.clone(), *n)).collect())
            .unwrap_or_default();
        (lv, ct, dr)
    }
}

/// A source's gate: counts every line, then admits it within the rate limit.
#[derive(Debug)]
pub struct Gate {
    source: String,
    rules: Admission,
    window: Instant,
    lines: u64,
    bytes: u64,
    seen_over: u64,
}

impl Gate {
    /// A gate for `source`.
    pub fn new(source: &str, rules: Admission) -> Gate {
        Gate {
            source: source.to_string(),
            rules,
            window: Instant::now(),
            lines: 0,
            bytes: 0,
            seen_over: 0,
        }
    }

    /// Counts a line (before any limit: the counters see every line) and says whether it
    /// goes on.
    pub fn admit(&mut self, counts: &LineCounts, level: &'static str, line: &str) -> bool {
        bump(&counts.by_level, &self.source, level);
        for (name, re) in &self.rules.counters {
            if re.is_match(line) {
                bump(&counts.by_counter, &self.source, name.as_str());
            }
        }
        if self.window.elapsed().as_secs() >= 1 {
            self.window = Instant::now();
            (self.lines, self.bytes) = (0, 0);
        }
        self.lines += 1;
        self.bytes += line.len() as u64;
        let over = (self.rules.max_lines > 0 && self.lines > self.rules.max_lines)
            || (self.rules.max_bytes > 0 && self.bytes > self.rules.max_bytes);
        let keep = match (over, self.rules.over) {
            (false, _) => true,
            (true, OverLimit::Drop) => false,
            (true, OverLimit::Sample(n)) => {
                self.seen_over += 1;
                self.seen_over.is_multiple_of(u64::from(n.max(1)))
            }
        };
        if !keep && let Ok(mut m) = counts.dropped.lock() {
            match m.get_mut(self.source.as_str()) {
                Some(n) => *n += 1,
                None => {
                    m.insert(self.source.clone(), 1);
                }
            }
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_group_by_their_sorted_labels() {
        let mut b = LogBatcher::default();
        let e = |l: &str| LogEntry {
            t_ns: 1,
            line: l.into(),
            metadata: Vec::new(),
        };
        let l = |a: &str| {
            vec![
                ("z".to_string(), "1".to_string()),
                ("a".to_string(), a.to_string()),
            ]
        };
        b.add(l("x"), e("one"));
        b.add(l("y"), e("two"));
        b.add(l("x"), e("three"));
        assert_eq!(b.bytes(), 11);
        let s = b.take();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels[0], ("a".to_string(), "x".to_string()));
        assert_eq!(s[0].entries.len(), 2);
        assert!(b.is_empty() && b.bytes() == 0);
    }

    #[test]
    fn gates_count_every_line_and_limit_or_sample_past_the_rate() {
        let counts = LineCounts::default();
        let rules = Admission {
            max_lines: 10,
            counters: vec![("http_5xx".into(), Regex::new(r" 5\d\d ").expect("re"))],
            ..Admission::default()
        };
        let mut g = Gate::new("app", rules.clone());
        let kept = (0..100)
            .filter(|i| {
                g.admit(
                    &counts,
                    "info",
                    &format!("GET / {} ok", 200 + (i % 2) * 300),
                )
            })
            .count();
        assert_eq!(kept, 10, "the first 10 of the second");
        let mut s = Gate::new(
            "sampled",
            Admission {
                over: OverLimit::Sample(10),
                ..rules
            },
        );
        let kept = (0..110).filter(|_| s.admit(&counts, "error", "x")).count();
        assert_eq!(
            kept,
            10 + 10,
            "10 within the limit, then 1 in 10 of the other 100"
        );
        let (lv, ct, dr) = counts.snapshot();
        assert!(lv.contains(&("app".to_string(), "info", 100)));
        assert!(lv.contains(&("sampled".to_string(), "error", 110)));
        assert!(ct.contains(&("app".to_string(), "http_5xx".to_string(), 50)));
        assert!(dr.contains(&("app".to_string(), 90)));
        assert!(dr.contains(&("sampled".to_string(), 90)));
    }
}
