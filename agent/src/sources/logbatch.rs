//! Lines gathered into streams for one batch: what every log source hands to its sink.

use std::collections::HashMap;

use telltale_common::wire::{LogEntry, LogStream};

/// A batch is worth pushing once it holds this many bytes of lines.
pub const BATCH_BYTES: usize = 512 * 1024;

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
        self.bytes += entry.line.len();
        let i = match self.index.get(&labels) {
            Some(&i) => i,
            None => {
                self.streams.push(LogStream {
                    labels: labels.clone(),
                    entries: Vec::new(),
                });
                self.index.insert(labels, self.streams.len() - 1);
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
}
