//! Tailing log files (`[[log]]` with `type = "file"`): globs, rotation by rename and by
//! copytruncate, multiline records, and read positions that move with the lines.
//!
//! A file is known by its identity (device and inode), not its name: a file renamed away
//! (logrotate's default) is read to its end through the handle already open, and the new
//! file at the old name is read from its beginning; a file that shrinks below the read offset
//! was truncated in place (copytruncate) and is read again from 0. Files present when a
//! source starts for the first time are read from their end (`start_at = "beginning"` to read
//! them whole); files that appear later — rotations, new files, files that appeared while the
//! agent was stopped — from their beginning.
//!
//! Positions: how far a file's lines have gone into batches is stored by the sink in the same
//! step as the batch that carries them (the buffer: one sled transaction), keyed by the
//! file's identity; after a restart each file continues at its position. A position is forgotten
//! when its file is gone, so a new file that gets the same inode starts at 0.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use regex_lite::Regex;
use telltale_common::model::now_ms;
use telltale_common::wire::{Batch, LogEntry};
use tokio::sync::watch;

use super::logbatch::{Admission, Gate, LineCounts, LogBatcher};
use super::logparse::{self, Parser};
use crate::pipeline::logsink::{LogSink, Positions};

/// A validated file source.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// The `source` label.
    pub name: String,
    /// Globs (`*` and `?` in the file-name part).
    pub paths: Vec<String>,
    /// Read files present at the first start from their end.
    pub start_at_end: bool,
    /// A line matching this starts a record; others continue the previous one.
    pub multiline_start: Option<Regex>,
    /// Longer records are cut here (and counted).
    pub max_line_bytes: usize,
    /// How lines are parsed.
    pub parser: Parser,
    /// Static labels.
    pub labels: Vec<(String, String)>,
    /// Parsed fields that become labels.
    pub label_keys: Vec<String>,
    /// Rate limit and counters.
    pub admission: Admission,
}

/// Counters of all log sources together (`telltale_agent_log_*`).
#[derive(Debug, Default)]
pub struct LogStats {
    /// Records read.
    pub lines: AtomicU64,
    /// Bytes of records read.
    pub bytes: AtomicU64,
    /// Records cut at `max_line_bytes`.
    pub cut: AtomicU64,
    /// Truncations (copytruncate) seen.
    pub truncations: AtomicU64,
    /// Messages that did not parse as their protocol (syslog), kept whole.
    pub malformed: AtomicU64,
    /// Read or buffer errors.
    pub errors: AtomicU64,
    /// Lines by source and level, and by source and counter.
    pub counts: LineCounts,
}

/// Bytes read from one file in one read at most.
const READ_CHUNK: usize = 256 << 10;
/// How often files are polled.
const POLL: Duration = Duration::from_millis(250);
/// A multiline record still open after this long without a new line is emitted.
const RECORD_FLUSH: Duration = Duration::from_secs(1);

struct Tracked {
    path: PathBuf,
    file: File,
    /// Offset of the first byte not read yet.
    read: u64,
    /// Offset just past the last record handed out (what the position records).
    committed: u64,
    /// Bytes read past the last complete line.
    partial: Vec<u8>,
    /// Skipping the rest of a line already cut.
    skipping: bool,
    /// An open multiline record: its text, the offset of its first line, the offset just
    /// past its last line, and when it last grew.
    record: Option<(String, u64, u64, Instant)>,
    /// Polls in a row its name was not matched (it was renamed or deleted).
    unmatched: u32,
    /// Its position's key in the sink (made once, not for every line).
    key: Vec<u8>,
}

/// One source's files and the records read but not yet pushed.
pub struct Tailer {
    cfg: FileSource,
    files: HashMap<(u64, u64), Tracked>,
    first_scan: bool,
    out: LogBatcher,
    positions: Positions,
    forget: Vec<Vec<u8>>,
    stats: Arc<LogStats>,
    gate: Gate,
    /// Stream labels (sorted) by file and level, with the path they were made for: built
    /// once, not for every line.
    streams: HashMap<((u64, u64), &'static str), StreamLabels>,
    /// Which file a poll reads first (it turns, so a poll cut short by a full batch does not
    /// always favour the same file).
    turn: usize,
}

/// The path a file's stream labels were made for, and the labels (sorted by name).
type StreamLabels = (PathBuf, Vec<(String, String)>);

fn key(source: &str, id: (u64, u64)) -> Vec<u8> {
    format!("log\0{source}\0{}:{}", id.0, id.1).into_bytes()
}

fn wildcard(pattern: &str, name: &str) -> bool {
    fn m(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], n) || (!n.is_empty() && m(p, &n[1..])),
            (Some(b'?'), Some(_)) => m(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &n[1..]),
            _ => false,
        }
    }
    m(pattern.as_bytes(), name.as_bytes())
}

/// The regular files a glob names now.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let p = Path::new(pattern);
    let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    if !name.contains(['*', '?']) {
        return vec![p.to_path_buf()];
    }
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_str().is_some_and(|n| wildcard(name, n)))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

impl Tailer {
    /// A tailer for `cfg`; its files' stored positions are read from the sink as they are
    /// found.
    pub fn new(cfg: FileSource, stats: Arc<LogStats>) -> Tailer {
        Tailer {
            gate: Gate::new(&cfg.name, cfg.admission.clone()),
            cfg,
            files: HashMap::new(),
            first_scan: true,
            out: LogBatcher::default(),
            positions: Vec::new(),
            forget: Vec::new(),
            stats,
            streams: HashMap::new(),
            turn: 0,
        }
    }

    /// Finds files, reads what they gained, and turns complete records into entries, until a
    /// batch is full (so catching up on a long file holds one batch in memory, not the file);
    /// returns whether a file has more to read.
    pub fn poll(&mut self, sink: &dyn LogSink) -> bool {
        let started_key = format!("log\0{}\0started", self.cfg.name).into_bytes();
        let first_ever = self.first_scan && sink.position(&started_key).is_none();
        let mut matched: Vec<(u64, u64)> = Vec::new();
        for pattern in self.cfg.paths.clone() {
            for path in expand(&pattern) {
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let id = (meta.dev(), meta.ino());
                matched.push(id);
                if let Some(t) = self.files.get_mut(&id) {
                    t.path = path;
                    continue;
                }
                let Ok(file) = File::open(&path) else {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let stored = sink
                    .position(&key(&self.cfg.name, id))
                    .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                    .map(u64::from_be_bytes);
                let len = meta.len();
                let start = match stored {
                    Some(p) if p <= len => p,
                    Some(_) => 0,
                    None if first_ever && self.cfg.start_at_end => len,
                    None => 0,
                };
                if stored.is_none() {
                    // Known from now on: a restart continues here, not at the end.
                    self.positions
                        .push((key(&self.cfg.name, id), start.to_be_bytes().to_vec()));
                }
                self.files.insert(
                    id,
                    Tracked {
                        path,
                        file,
                        read: start,
                        committed: start,
                        partial: Vec::new(),
                        skipping: false,
                        record: None,
                        unmatched: 0,
                        key: key(&self.cfg.name, id),
                    },
                );
            }
        }
        if self.first_scan {
            self.first_scan = false;
            if first_ever {
                self.positions.push((started_key, vec![1]));
            }
        }
        let mut ids: Vec<(u64, u64)> = self.files.keys().copied().collect();
        ids.sort_unstable();
        if !ids.is_empty() {
            self.turn = (self.turn + 1) % ids.len();
            ids.rotate_left(self.turn);
        }
        let mut more = false;
        for id in ids {
            if self.out.full() {
                more = true;
                break;
            }
            let at_eof = self.read_file(id);
            more |= !at_eof;
            let Some(t) = self.files.get_mut(&id) else {
                continue;
            };
            if matched.contains(&id) {
                t.unmatched = 0;
            } else {
                t.unmatched += 1;
            }
            // Renamed away or deleted, and read to its end: done with it.
            if t.unmatched >= 2 && at_eof && t.record.is_none() && t.partial.is_empty() {
                self.files.remove(&id);
                self.forget.push(key(&self.cfg.name, id));
            }
        }
        more
    }

    /// Reads what file `id` gained; returns whether it is at its end.
    fn read_file(&mut self, id: (u64, u64)) -> bool {
        let Some(t) = self.files.get_mut(&id) else {
            return true;
        };
        let len = match t.file.metadata() {
            Ok(m) => m.len(),
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        };
        if len < t.read {
            // Truncated in place (copytruncate): the new content starts at 0.
            self.stats.truncations.fetch_add(1, Ordering::Relaxed);
            tracing::info!(file = %t.path.display(), "log file truncated: reading it from the start");
            t.read = 0;
            t.committed = 0;
            t.partial.clear();
            t.record = None;
            t.skipping = false;
        }
        let want = (len - t.read).min(READ_CHUNK as u64) as usize;
        let mut buf = vec![0u8; want];
        let n = match t.file.read_at(&mut buf, t.read) {
            Ok(n) => n,
            Err(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(file = %t.path.display(), error = %e, "cannot read log file");
                return true;
            }
        };
        buf.truncate(n);
        let base = t.read;
        t.read += n as u64;
        let at_eof = t.read >= len;
        let mut start = 0;
        // (line, offset of its first byte, offset just past its newline)
        let mut lines: Vec<(Vec<u8>, u64, u64)> = Vec::new();
        for (i, &b) in buf.iter().enumerate() {
            if b == b'\n' {
                let line_start = base + start as u64 - t.partial.len() as u64;
                let mut line = std::mem::take(&mut t.partial);
                line.extend_from_slice(&buf[start..i]);
                let end = base + i as u64 + 1;
                if t.skipping {
                    t.skipping = false;
                    // The cut line was handed out already; its rest is dropped.
                    if t.record.is_none() {
                        t.committed = end;
                    }
                } else {
                    lines.push((line, line_start, end));
                }
                start = i + 1;
            }
        }
        if !t.skipping {
            t.partial.extend_from_slice(&buf[start..]);
        }
        let max = self.cfg.max_line_bytes;
        if t.partial.len() > max {
            // A line longer than the limit: cut it, hand it out, skip to its end.
            let line = std::mem::take(&mut t.partial);
            let line_start = t.read - line.len() as u64;
            lines.push((line, line_start, t.read));
            t.skipping = true;
        }
        for (line, line_start, end) in lines {
            self.line(id, line, line_start, end);
        }
        // A multiline record with nothing after it for a while is complete.
        if let Some(t) = self.files.get_mut(&id)
            && let Some((_, _, _, since)) = &t.record
            && since.elapsed() >= RECORD_FLUSH
            && at_eof
            && let Some((text, _, end, _)) = t.record.take()
        {
            self.emit(id, text, end);
        }
        at_eof
    }

    /// A complete line from `start` to `end`: starts, continues or is a record.
    fn line(&mut self, id: (u64, u64), mut raw: Vec<u8>, start: u64, end: u64) {
        if raw.last() == Some(&b'\r') {
            raw.pop();
        }
        let text = match String::from_utf8(raw) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        let Some(t) = self.files.get_mut(&id) else {
            return;
        };
        match &self.cfg.multiline_start {
            None => self.emit(id, text, end),
            Some(re) if re.is_match(&text) => {
                let prev = t.record.replace((text, start, end, Instant::now()));
                if let Some((p, _, _, _)) = prev {
                    // The file's position stops where the record just opened begins.
                    self.emit(id, p, start);
                }
            }
            Some(_) => match &mut t.record {
                Some((rec, _, rend, since)) if rec.len() < self.cfg.max_line_bytes => {
                    rec.push('\n');
                    rec.push_str(&text);
                    *rend = end;
                    *since = Instant::now();
                }
                Some((_, _, rend, _)) => *rend = end,
                // Continuation lines before any start line stand alone.
                None => self.emit(id, text, end),
            },
        }
    }

    /// Hands a record out; the file's position moves to `commit_to` (past the record, or
    /// to the start of a record still open after it).
    fn emit(&mut self, id: (u64, u64), mut text: String, commit_to: u64) {
        if super::logbatch::cut_line(&mut text, self.cfg.max_line_bytes) {
            self.stats.cut.fetch_add(1, Ordering::Relaxed);
        }
        let Some(t) = self.files.get_mut(&id) else {
            return;
        };
        t.committed = commit_to;
        let pos = t.committed.to_be_bytes();
        self.stats.lines.fetch_add(1, Ordering::Relaxed);
        self.stats
            .bytes
            .fetch_add(text.len() as u64, Ordering::Relaxed);
        // Consecutive lines of one file move one position entry (the last one wins anyway).
        match self.positions.last_mut() {
            Some((lk, lv)) if *lk == t.key => {
                lv.clear();
                lv.extend_from_slice(&pos);
            }
            _ => self.positions.push((t.key.clone(), pos.to_vec())),
        }
        let fields = logparse::fields(&self.cfg.parser, &text);
        let level = logparse::level(&fields, &text);
        // Past the rate limit the line is dropped (counted); its bytes are read all the same.
        if !self.gate.admit(&self.stats.counts, level, &text) {
            return;
        }
        let cached = self.streams.get(&(id, level)).filter(|c| c.0 == t.path);
        let base = match cached {
            Some(c) => &c.1,
            None => {
                let mut labels = self.cfg.labels.clone();
                labels.push(("source".into(), self.cfg.name.clone()));
                labels.push(("filename".into(), t.path.display().to_string()));
                labels.push(("level".into(), level.into()));
                labels.sort_by(|a, b| a.0.cmp(&b.0));
                labels.dedup_by(|a, b| a.0 == b.0);
                self.streams.insert((id, level), (t.path.clone(), labels));
                &self.streams[&(id, level)].1
            }
        };
        let mut extra = Vec::new();
        let mut metadata = Vec::new();
        for (k, v) in fields {
            if self.cfg.label_keys.contains(&k) {
                extra.push((k, v));
            } else if k != "level" {
                metadata.push((k, v));
            }
        }
        let entry = LogEntry {
            t_ns: now_ms().saturating_mul(1_000_000),
            line: text,
            metadata,
        };
        if extra.is_empty() {
            self.out.add_sorted(base, entry);
        } else {
            // Extracted labels after the fixed ones: a name given twice keeps its first value.
            let mut labels = base.clone();
            labels.extend(extra);
            self.out.add(labels, entry);
        }
    }

    /// Whether enough is waiting to push a batch.
    pub fn full(&self) -> bool {
        self.out.full()
    }

    /// The batch of what was read, and the positions to commit with it (`None` when there is
    /// nothing to write).
    pub fn take(&mut self) -> Option<(Batch, Positions, Vec<Vec<u8>>)> {
        if self.out.is_empty() && self.positions.is_empty() && self.forget.is_empty() {
            return None;
        }
        let streams = self.out.take();
        // The last position of each file wins.
        let mut pos: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for (k, v) in self.positions.drain(..) {
            pos.insert(k, v);
        }
        Some((
            super::logbatch::batch_of(streams),
            pos.into_iter().collect(),
            std::mem::take(&mut self.forget),
        ))
    }
}

/// Runs a file source until `stop`: polls its files, pushes batches with their positions,
/// and wakes the shipper.
pub async fn run(
    cfg: FileSource,
    sink: Arc<dyn LogSink>,
    stats: Arc<LogStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tailer = Some(Tailer::new(cfg, stats.clone()));
    let mut last_push = Instant::now();
    loop {
        // No room in the buffer: read nothing until the aggregator has taken some.
        if !sink.room() && !*stop.borrow() {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        let Some(mut t) = tailer.take() else { return };
        let s = sink.clone();
        let polled = tokio::task::spawn_blocking(move || {
            let more = t.poll(s.as_ref());
            (t, more)
        })
        .await;
        let Ok((mut t, more)) = polled else { return };
        let stopping = *stop.borrow();
        if t.full() || last_push.elapsed() >= Duration::from_secs(1) || stopping {
            if let Some((batch, positions, forget)) = t.take()
                && let Err(e) = sink.store(batch, positions, forget).await
            {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "log lines could not be buffered: they are read again after a restart");
            }
            last_push = Instant::now();
        }
        tailer = Some(t);
        if stopping {
            return;
        }
        // Catching up: read on at once while the buffer has room; otherwise wait (a full
        // buffer drains as the aggregator acknowledges; the files keep the lines meanwhile).
        if more && sink.room() {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests;
