use super::*;
use crate::logs::engine::{LogEngine, LogOptions};
use crate::logs::store::{LogAppend, LogAppender};
use telltale_common::wire::{LogEntry, LogStream};

fn lines(from: u64, n: u64) -> LogAppend {
    let now = telltale_common::model::now_ms() * 1_000_000;
    LogAppend {
        origin: None,
        streams: vec![LogStream {
            labels: vec![("job".into(), "x".into())],
            entries: (from..from + n)
                .map(|i| LogEntry {
                    t_ns: now + i as i64,
                    line: format!("line {i}"),
                    metadata: Vec::new(),
                })
                .collect(),
        }],
    }
}

/// Reads everything from `pos` to the tip: the rows' lines and the segments found missing.
fn read_all(feed: &StoreFeed, pos: Position) -> (Vec<String>, u64) {
    let mut rows = Rows::new(Signal::Logs);
    let (mut p, mut missing) = (pos, 0);
    loop {
        // Seven more rows a read (the budget counts what the sink holds).
        let max = rows.items() + 7;
        let (to, m) = feed::read(feed, p, max, Signal::Logs.row_bytes(), &mut rows).expect("read");
        missing += m;
        if to == p {
            break;
        }
        p = to;
    }
    let text = String::from_utf8(rows.body).expect("utf-8");
    let lines = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json row");
            v["line"].as_str().expect("line").to_string()
        })
        .collect();
    (lines, missing)
}

async fn cut_twice(hold: &WalHold, d: &Path) -> (StoreFeed, Position) {
    let opts = LogOptions {
        wal_hold: hold.clone(),
        ..LogOptions::default()
    };
    let e = LogEngine::open(d, opts).expect("open");
    let feed = e.feed();
    let (segment, offset) = feed.tip();
    let start = Position { segment, offset };
    hold.set(segment);
    for (from, cut) in [(0, true), (10, true), (20, false)] {
        e.append(lines(from, 10)).await.expect("append");
        if cut {
            e.flush().await.expect("cut");
        }
    }
    (feed, start)
}

#[tokio::test]
async fn the_hold_keeps_every_line_of_the_logs_wal_for_its_reader_across_cuts_and_restarts() {
    let want: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
    let d = tempfile::tempdir().expect("dir");
    let hold = WalHold::default();
    let (feed, start) = cut_twice(&hold, d.path()).await;
    assert!(feed.checkpointed() > start.segment, "the cuts checkpointed");
    assert_eq!(read_all(&feed, start), (want.clone(), 0));
    // Reopened (the engine replays past the checkpoint only, and keeps the held segments).
    let e = LogEngine::open(
        d.path(),
        LogOptions {
            wal_hold: hold.clone(),
            ..LogOptions::default()
        },
    )
    .expect("reopen");
    assert_eq!(read_all(&e.feed(), start), (want, 0));
    // Released, the next cut deletes them.
    hold.set(u64::MAX);
    e.append(lines(30, 1)).await.expect("append");
    e.flush().await.expect("cut");
    let (got, missing) = read_all(&e.feed(), start);
    assert!(missing > 0, "{got:?}");
}

#[tokio::test]
async fn without_a_hold_cut_segments_are_gone() {
    // The control of the test above: the hold is what keeps the lines.
    let d = tempfile::tempdir().expect("dir");
    let hold = WalHold::default();
    let opts = LogOptions {
        wal_hold: hold.clone(),
        ..LogOptions::default()
    };
    let e = LogEngine::open(d.path(), opts).expect("open");
    let feed = e.feed();
    let (segment, offset) = feed.tip();
    for from in [0, 10] {
        e.append(lines(from, 10)).await.expect("append");
        e.flush().await.expect("cut");
    }
    let (got, missing) = read_all(&feed, Position { segment, offset });
    assert!(missing > 0 && got.is_empty(), "{got:?} {missing}");
}

#[test]
fn damaged_and_undecodable_records_are_counted_not_fatal() {
    let mut rows = Rows::new(Signal::Logs);
    rows.record(b"\xc1 not msgpack", Path::new("x.seg"));
    rows.damaged(Path::new("x.seg"), 0, 10);
    assert_eq!((rows.rows, rows.corrupt), (0, 2));
}

mod spans {
    use super::*;
    use crate::traces::engine::{TraceEngine, TraceOptions};
    use crate::traces::sample::SamplingOptions;
    use crate::traces::store::{SpanAppend, SpanAppender};
    use std::time::Instant;
    use telltale_common::trace::{Span, SpanKind, SpanStatus};

    fn span(trace: u8, i: u8, failed: bool) -> Span {
        let now = telltale_common::model::now_ms() as u64 * 1_000_000;
        Span {
            trace_id: [trace; 16],
            span_id: [i + 1; 8],
            parent: None,
            service: "api".into(),
            name: format!("op {i}"),
            kind: SpanKind::Server,
            start_ns: now,
            end_ns: now + 1_000_000,
            status: if failed {
                SpanStatus::Error
            } else {
                SpanStatus::Unset
            },
            status_message: String::new(),
            attributes: Vec::new(),
            resource: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
        }
    }

    fn open(d: &Path, hold: &WalHold, ratio: f64) -> TraceEngine {
        TraceEngine::open(
            d,
            TraceOptions {
                kept_records: true,
                wal_hold: hold.clone(),
                sampling: SamplingOptions {
                    ratio,
                    ..SamplingOptions::default()
                },
                ..TraceOptions::default()
            },
        )
        .expect("open")
    }

    /// The exported rows from `pos` to the tip: (trace id's first byte, span name).
    fn read(feed: &StoreFeed, pos: Position) -> (Vec<(String, String)>, Position) {
        let mut rows = Rows::new(Signal::Spans);
        let (to, _) = feed::read(feed, pos, usize::MAX, 400, &mut rows).expect("read");
        assert_eq!(rows.corrupt, 0);
        let text = String::from_utf8(rows.body).expect("utf-8");
        let mut out: Vec<(String, String)> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("row");
                (
                    v["trace_id"].as_str().expect("id")[..2].to_string(),
                    v["name"].as_str().expect("name").to_string(),
                )
            })
            .collect();
        out.sort();
        (out, to)
    }

    #[tokio::test]
    async fn only_kept_traces_are_exported_once_across_a_restart() {
        let d = tempfile::tempdir().expect("dir");
        let hold = WalHold::default();
        let e = open(d.path(), &hold, 0.0);
        let feed = e.feed();
        let (segment, offset) = feed.tip();
        let start = Position { segment, offset };
        hold.set(segment);
        // Trace 1 fails (kept), trace 2 is fine (dropped at ratio 0).
        for spans in [
            vec![span(1, 0, false), span(2, 0, false)],
            vec![span(1, 1, true), span(2, 1, false)],
        ] {
            e.append(SpanAppend {
                origin: None,
                spans,
            })
            .await
            .expect("append");
        }
        let (before, _) = read(&feed, start);
        assert!(before.is_empty(), "nothing before the decision: {before:?}");
        let later = Instant::now() + std::time::Duration::from_secs(3600);
        e.decide(later).await.expect("decide");
        let (rows, end) = read(&feed, start);
        let want = vec![
            ("01".to_string(), "op 0".to_string()),
            ("01".to_string(), "op 1".to_string()),
        ];
        assert_eq!(rows, want);
        // A late span of the kept trace joins it, and is exported.
        e.append(SpanAppend {
            origin: None,
            spans: vec![span(1, 2, false)],
        })
        .await
        .expect("append");
        // (A writer round: its kept record is written after the append is answered.)
        e.decide(Instant::now()).await.expect("a round");
        let (late, end) = read(&feed, end);
        assert_eq!(late, vec![("01".to_string(), "op 2".to_string())]);
        drop(e);
        // Restarted: the WAL is replayed and trace 1 decided again, but its spans are not
        // written for the exporter twice.
        let e = open(d.path(), &hold, 0.0);
        e.decide(Instant::now() + std::time::Duration::from_secs(3600))
            .await
            .expect("decide");
        let (again, _) = read(&e.feed(), end);
        assert!(again.is_empty(), "exported twice: {again:?}");
        // ... while new decisions after the restart still are.
        e.append(SpanAppend {
            origin: None,
            spans: vec![span(3, 0, true)],
        })
        .await
        .expect("append");
        e.decide(Instant::now() + std::time::Duration::from_secs(7200))
            .await
            .expect("decide");
        let (new, _) = read(&e.feed(), end);
        assert_eq!(new, vec![("03".to_string(), "op 0".to_string())]);
    }

    #[tokio::test]
    async fn when_every_trace_is_kept_every_span_is_exported_once_without_kept_records() {
        let d = tempfile::tempdir().expect("dir");
        let hold = WalHold::default();
        let e = open(d.path(), &hold, 1.0);
        let feed = e.feed();
        let (segment, offset) = feed.tip();
        hold.set(segment);
        let len_before = feed.tip().1;
        e.append(SpanAppend {
            origin: None,
            spans: vec![span(1, 0, false), span(2, 0, false)],
        })
        .await
        .expect("append");
        e.decide(Instant::now() + std::time::Duration::from_secs(3600))
            .await
            .expect("decide");
        let one_record = feed.tip().1 - len_before;
        let (rows, _) = read(&feed, Position { segment, offset });
        assert_eq!(rows.len(), 2, "{rows:?}");
        // Nothing was written twice into the WAL for it: one record.
        e.append(SpanAppend {
            origin: None,
            spans: vec![span(1, 0, false), span(2, 0, false)],
        })
        .await
        .expect("append");
        assert_eq!(feed.tip().1 - len_before, 2 * one_record);
    }
}
