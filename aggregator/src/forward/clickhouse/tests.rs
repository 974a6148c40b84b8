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
    let mut rows = Rows::default();
    let (mut p, mut missing) = (pos, 0);
    loop {
        // Seven more rows a read (the budget counts what the sink holds).
        let max = rows.items() + 7;
        let (to, m) = feed::read(feed, p, max, LINE_BYTES, &mut rows).expect("read");
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
    let mut rows = Rows::default();
    rows.record(b"\xc1 not msgpack", Path::new("x.seg"));
    rows.damaged(Path::new("x.seg"), 0, 10);
    assert_eq!((rows.rows, rows.corrupt), (0, 2));
}
