//! The tailer against real files: rotation by rename and by copytruncate, restarts that
//! continue at the stored position (nothing skipped, nothing repeated), multiline records,
//! cut lines and invalid UTF-8. The sink is a map in memory standing in for the buffer
//! (the end-to-end test in `tests/` uses the real one).

use std::io::Write;
use std::sync::Mutex;

use super::*;

#[derive(Default)]
struct MemSink {
    positions: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    /// Lines stored.
    lines: std::sync::atomic::AtomicUsize,
    /// Whether [`LogSink::room`] says no.
    full: std::sync::atomic::AtomicBool,
}

impl MemSink {
    fn commit(&self, positions: Vec<(Vec<u8>, Vec<u8>)>, forget: Vec<Vec<u8>>) {
        let mut p = self.positions.lock().expect("lock");
        for (k, v) in positions {
            p.insert(k, v);
        }
        for k in forget {
            p.remove(&k);
        }
    }
}

impl LogSink for MemSink {
    fn position(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.positions.lock().expect("lock").get(key).cloned()
    }

    fn store(
        &self,
        batch: Batch,
        positions: Vec<(Vec<u8>, Vec<u8>)>,
        forget: Vec<Vec<u8>>,
    ) -> crate::pipeline::logsink::BoxFuture<'_, Result<(), crate::pipeline::logsink::SinkError>>
    {
        let n: usize = batch.logs.iter().map(|s| s.entries.len()).sum();
        self.lines.fetch_add(n, Ordering::Relaxed);
        self.commit(positions, forget);
        Box::pin(async { Ok(()) })
    }

    fn room(&self) -> bool {
        !self.full.load(Ordering::Relaxed)
    }
}

fn source(dir: &Path, start_at_end: bool) -> FileSource {
    FileSource {
        name: "app".into(),
        paths: vec![dir.join("*.log").display().to_string()],
        start_at_end,
        multiline_start: None,
        max_line_bytes: 64,
        parser: Parser::None,
        labels: vec![("env".into(), "test".into())],
        label_keys: Vec::new(),
        admission: crate::sources::logbatch::Admission::default(),
    }
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open");
    f.write_all(text.as_bytes()).expect("write");
}

/// Polls and commits like the run loop; returns the lines handed out.
fn poll(t: &mut Tailer, sink: &MemSink) -> Vec<String> {
    t.poll(sink);
    match t.take() {
        Some((batch, positions, forget)) => {
            sink.commit(positions, forget);
            batch
                .logs
                .into_iter()
                .flat_map(|s| s.entries.into_iter().map(|e| e.line))
                .collect()
        }
        None => Vec::new(),
    }
}

#[test]
fn files_present_at_the_first_start_are_read_from_their_end_later_ones_whole() {
    let d = tempfile::tempdir().expect("dir");
    let old = d.path().join("old.log");
    append(&old, "before the agent\n");
    let sink = MemSink::default();
    let stats = Arc::new(LogStats::default());
    let mut t = Tailer::new(source(d.path(), true), stats.clone());
    assert!(poll(&mut t, &sink).is_empty());
    append(&old, "after\n");
    append(&d.path().join("new.log"), "new file line\n");
    let mut got = poll(&mut t, &sink);
    got.sort();
    assert_eq!(got, vec!["after", "new file line"]);
    // A restart continues where it was; a file that appeared while stopped is read whole.
    append(&old, "while stopped\n");
    append(&d.path().join("later.log"), "appeared while stopped\n");
    let mut t = Tailer::new(source(d.path(), true), stats);
    let mut got = poll(&mut t, &sink);
    got.sort();
    assert_eq!(got, vec!["appeared while stopped", "while stopped"]);
}

#[test]
fn rotation_by_rename_and_by_copytruncate_loses_and_repeats_nothing() {
    let d = tempfile::tempdir().expect("dir");
    let live = d.path().join("app.log");
    append(&live, "");
    let sink = MemSink::default();
    let mut t = Tailer::new(source(d.path(), false), Arc::new(LogStats::default()));
    let mut all = Vec::new();
    let mut n = 0;
    let mut write = |k: usize| {
        for _ in 0..k {
            append(&live, &format!("line {n}\n"));
            n += 1;
        }
    };
    write(5);
    all.extend(poll(&mut t, &sink));
    write(3);
    // logrotate's default: rename, then a new file at the old name. The renamed file no
    // longer matches the glob but is read to its end.
    std::fs::rename(&live, d.path().join("app.log.1")).expect("rename");
    append(&live, "");
    write(4);
    all.extend(poll(&mut t, &sink));
    all.extend(poll(&mut t, &sink));
    all.extend(poll(&mut t, &sink));
    write(2);
    // copytruncate: copied elsewhere, then cut to zero in place.
    all.extend(poll(&mut t, &sink));
    std::fs::copy(&live, d.path().join("app.log.2")).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&live)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    write(2);
    all.extend(poll(&mut t, &sink));
    let want: Vec<String> = (0..16).map(|i| format!("line {i}")).collect();
    let mut got = all.clone();
    got.sort_by_key(|l| l[5..].parse::<u32>().unwrap_or(0));
    assert_eq!(got, want, "every line once: {all:?}");
}

#[test]
fn multiline_records_cut_lines_and_bad_utf8() {
    let d = tempfile::tempdir().expect("dir");
    let f = d.path().join("x.log");
    append(&f, "");
    let mut cfg = source(d.path(), false);
    cfg.multiline_start = Some(Regex::new(r"^\d{4}-").expect("re"));
    let sink = MemSink::default();
    let stats = Arc::new(LogStats::default());
    let mut t = Tailer::new(cfg.clone(), stats.clone());
    append(&f, "2026-12-02 boom\n  at a()\n  at b()\n2026-12-02 next\n");
    let got = poll(&mut t, &sink);
    assert_eq!(got, vec!["2026-12-02 boom\n  at a()\n  at b()"]);
    // The open record is not committed: a restart reads it again, once.
    let mut t2 = Tailer::new(cfg, stats.clone());
    append(&f, "2026-12-02 third\n");
    let got = poll(&mut t2, &sink);
    assert_eq!(got, vec!["2026-12-02 next"]);
    // A line longer than 64 bytes is cut and counted; the rest of it is dropped.
    let mut t3 = Tailer::new(source(d.path(), false), stats.clone());
    let g = d.path().join("y.log");
    append(&g, &format!("{}\nshort\n", "z".repeat(200)));
    append(&g, "bad \u{fffd} ok\n");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&g)
        .expect("open")
        .write_all(b"raw \xff\xfe bytes\n")
        .expect("write");
    let got: Vec<String> = poll(&mut t3, &sink)
        .into_iter()
        .filter(|l| !l.starts_with("2026"))
        .collect();
    assert_eq!(got[0], "z".repeat(64));
    assert_eq!(
        &got[1..],
        ["short", "bad \u{fffd} ok", "raw \u{fffd}\u{fffd} bytes"]
    );
    assert!(stats.cut.load(Ordering::Relaxed) >= 1);
}

#[test]
fn globs_match_file_names() {
    assert!(wildcard("*.log", "app.log"));
    assert!(wildcard("app-?.log", "app-1.log"));
    assert!(!wildcard("*.log", "app.log.1"));
    assert!(wildcard("*", ""));
}

/// Catching up on a long file holds one batch at a time, never the file: a poll stops once a
/// batch is full and says more is waiting; polls that follow read the rest, every line once.
#[test]
fn a_long_file_is_read_a_batch_at_a_time() {
    let d = tempfile::tempdir().expect("dir");
    let sink = MemSink::default();
    let mut cfg = source(d.path(), false);
    cfg.max_line_bytes = 1024;
    let mut t = Tailer::new(cfg, Arc::new(LogStats::default()));
    let lines = 30_000;
    let text: String = (0..lines)
        .map(|i| format!("line {i:06} {}\n", "x".repeat(80)))
        .collect();
    append(&d.path().join("big.log"), &text);
    let mut seen = Vec::new();
    let mut polls = 0;
    loop {
        let more = t.poll(&sink);
        assert!(
            t.out.bytes() <= crate::sources::logbatch::BATCH_BYTES + READ_CHUNK,
            "a poll held {} bytes",
            t.out.bytes()
        );
        if let Some((batch, positions, forget)) = t.take() {
            sink.commit(positions, forget);
            seen.extend(
                batch
                    .logs
                    .into_iter()
                    .flat_map(|s| s.entries.into_iter().map(|e| e.line)),
            );
        }
        polls += 1;
        if !more {
            break;
        }
    }
    assert!(polls > 10, "{polls} polls for {} bytes", text.len());
    assert_eq!(seen.len(), lines);
    for (i, l) in seen.iter().enumerate() {
        assert!(l.starts_with(&format!("line {i:06} ")), "{i}: {l}");
    }
}

/// A source that can wait reads nothing while the buffer has no room, and goes on where it
/// stopped once it has.
#[tokio::test]
async fn files_wait_while_the_buffer_has_no_room() {
    let d = tempfile::tempdir().expect("dir");
    let sink = Arc::new(MemSink::default());
    sink.full.store(true, Ordering::Relaxed);
    append(&d.path().join("a.log"), "");
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(run(
        source(d.path(), false),
        sink.clone(),
        Arc::new(LogStats::default()),
        rx,
    ));
    let text: String = (0..1000).map(|i| format!("l{i}\n")).collect();
    append(&d.path().join("a.log"), &text);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(sink.lines.load(Ordering::Relaxed), 0, "read while full");
    sink.full.store(false, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.lines.load(Ordering::Relaxed) < 1000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sink.lines.load(Ordering::Relaxed), 1000);
    let _ = stop.send(true);
    task.await.expect("join");
}
