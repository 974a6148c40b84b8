use super::*;
use crate::durable::dedup::Origin;
use crate::labels::Matcher;
use crate::logs::store::{LogQuerier, Selection};

fn stream(labels: &[(&str, &str)], lines: &[(i64, &str)]) -> LogStream {
    LogStream {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        entries: lines
            .iter()
            .map(|(t, l)| LogEntry {
                t_ns: *t,
                line: l.to_string(),
                metadata: Vec::new(),
            })
            .collect(),
    }
}

fn all(e: &LogEngine) -> Vec<(String, Vec<(i64, String)>)> {
    let m = [Matcher {
        name: "source".into(),
        op: crate::labels::MatchOp::Regex(regex::Regex::new("^.*$").expect("re")),
    }];
    e.select(&Selection {
        matchers: &m,
        start_ns: i64::MIN,
        end_ns: i64::MAX,
        needles: &[],
        max_bytes: u64::MAX,
    })
    .expect("select")
    .into_iter()
    .map(|s| {
        (
            format!("{:?}", s.labels),
            s.entries.into_iter().map(|e| (e.t_ns, e.line)).collect(),
        )
    })
    .collect()
}

fn origin(seq: u64) -> Option<Origin> {
    Some(Origin {
        agent: "web-1".into(),
        epoch: 7,
        sequence: seq,
    })
}

#[tokio::test]
async fn appends_survive_restarts_cuts_and_replays_are_stored_once() {
    // Lines of today: retention must not touch them.
    let now = telltale_common::model::now_ms() * 1_000_000;
    let d = tempfile::tempdir().expect("dir");
    let e = LogEngine::open(d.path(), LogOptions::default()).expect("open");
    let r = e
        .append(LogAppend {
            origin: origin(1),
            streams: vec![stream(
                &[("source", "app")],
                &[(now + 10, "b"), (now + 5, "a")],
            )],
        })
        .await
        .expect("append");
    assert_eq!(r, LogOutcome::Stored { lines: 2 });
    let dup = e
        .append(LogAppend {
            origin: origin(1),
            streams: vec![stream(&[("source", "app")], &[(now + 10, "b")])],
        })
        .await
        .expect("append");
    assert_eq!(dup, LogOutcome::Duplicate);
    let before = all(&e);
    assert_eq!(
        before[0].1,
        vec![(now + 5, "a".to_string()), (now + 10, "b".to_string())]
    );
    assert!(before[0].0.contains("instance") && before[0].0.contains("web-1"));
    drop(e);
    // From the WAL.
    let e = LogEngine::open(d.path(), LogOptions::default()).expect("reopen");
    assert_eq!(all(&e), before);
    e.flush().await.expect("cut");
    assert_eq!(e.stats().1, 1, "one block");
    e.append(LogAppend {
        origin: origin(2),
        streams: vec![stream(&[("source", "app")], &[(now + 20, "c")])],
    })
    .await
    .expect("append");
    drop(e);
    // From the block and the WAL after it; the replayed batch is still known.
    let e = LogEngine::open(d.path(), LogOptions::default()).expect("reopen");
    assert_eq!(all(&e)[0].1.len(), 3);
    // Index stats: one chunk in the block (2 lines), the head's line as one more.
    let m = [Matcher::equal("source", "app")];
    let st = e.index_stats(&m, i64::MIN, i64::MAX);
    assert_eq!((st.streams, st.chunks, st.entries, st.bytes), (1, 2, 3, 3));
    let none = e.index_stats(&[Matcher::equal("source", "other")], i64::MIN, i64::MAX);
    assert_eq!(none, crate::logs::store::IndexStats::default());
    let dup = e
        .append(LogAppend {
            origin: origin(1),
            streams: vec![stream(&[("source", "app")], &[(now + 10, "b")])],
        })
        .await
        .expect("append");
    assert_eq!(dup, LogOutcome::Duplicate);
}

#[tokio::test]
async fn damage_is_skipped_and_counted_never_blocking_start_up() {
    let d = tempfile::tempdir().expect("dir");
    let e = LogEngine::open(d.path(), LogOptions::default()).expect("open");
    for i in 0..3 {
        e.append(LogAppend {
            origin: None,
            streams: vec![stream(&[("source", "x")], &[(i, "line")])],
        })
        .await
        .expect("append");
    }
    e.flush().await.expect("cut");
    e.append(LogAppend {
        origin: None,
        streams: vec![stream(&[("source", "x")], &[(9, "after the block")])],
    })
    .await
    .expect("append");
    drop(e);
    // A damaged block and a torn WAL tail.
    let blk = std::fs::read_dir(d.path().join("blocks"))
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "lblk"))
        .expect("a block");
    std::fs::write(&blk, b"TTLB\x01garbage").expect("damage");
    let seg = crate::durable::segments::list_segments(&d.path().join("wal"))
        .expect("segs")
        .into_iter()
        .rfind(|(_, p)| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .expect("a segment")
        .1;
    let mut bytes = std::fs::read(&seg).expect("read");
    bytes.extend_from_slice(&[0xde, 0xad]);
    std::fs::write(&seg, bytes).expect("torn");
    let e = LogEngine::open(d.path(), LogOptions::default()).expect("opens despite damage");
    assert_eq!(e.counters().quarantined_blocks.load(Ordering::Relaxed), 1);
    assert_eq!(all(&e)[0].1, vec![(9, "after the block".to_string())]);
}

#[tokio::test]
async fn retention_deletes_old_blocks_then_the_oldest_over_the_byte_cap() {
    let d = tempfile::tempdir().expect("dir");
    let opts = LogOptions {
        retention: Duration::from_secs(3600),
        ..LogOptions::default()
    };
    let e = LogEngine::open(d.path(), opts).expect("open");
    let hour = 3_600_000_000_000i64;
    for (i, t) in [hour, 5 * hour, 6 * hour].into_iter().enumerate() {
        e.append(LogAppend {
            origin: None,
            streams: vec![stream(&[("source", "x")], &[(t, &format!("line {i}"))])],
        })
        .await
        .expect("append");
        e.flush().await.expect("cut");
    }
    assert_eq!(e.stats().1, 3);
    e.apply_retention(6 * hour);
    assert_eq!(e.stats().1, 2, "the block ending at hour 1 expired");
    let lines: Vec<String> = all(&e)[0].1.iter().map(|x| x.1.clone()).collect();
    assert_eq!(lines, vec!["line 1", "line 2"]);
}

#[tokio::test]
async fn bad_label_names_are_refused() {
    let d = tempfile::tempdir().expect("dir");
    let e = LogEngine::open(d.path(), LogOptions::default()).expect("open");
    let r = e
        .append(LogAppend {
            origin: None,
            streams: vec![stream(&[("bad-name", "x")], &[(1, "l")])],
        })
        .await;
    assert!(matches!(r, Err(LogStoreError::Invalid(m)) if m.contains("bad-name")));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

#[tokio::test]
async fn a_crash_between_a_block_and_its_checkpoint_reads_no_line_twice() {
    let now = telltale_common::model::now_ms() * 1_000_000;
    let d = tempfile::tempdir().expect("dir");
    let dir = d.path().join("logs");
    let e = LogEngine::open(&dir, LogOptions::default()).expect("open");
    e.append(LogAppend {
        origin: origin(1),
        streams: vec![stream(&[("source", "app")], &[(now, "a"), (now + 1, "b")])],
    })
    .await
    .expect("append");
    // The WAL and checkpoint as they are before the cut.
    let saved = d.path().join("saved");
    copy_dir(&dir.join("wal"), &saved.join("wal"));
    let had_checkpoint = dir.join("checkpoint").exists();
    e.flush().await.expect("cut");
    drop(e);
    // As if the process died right after the block was synced: the old WAL segments and
    // checkpoint are back.
    std::fs::remove_dir_all(dir.join("wal")).expect("rm");
    copy_dir(&saved.join("wal"), &dir.join("wal"));
    if !had_checkpoint {
        let _ = std::fs::remove_file(dir.join("checkpoint"));
    }
    let e = LogEngine::open(&dir, LogOptions::default()).expect("reopen");
    assert_eq!(all(&e)[0].1.len(), 2, "each line once: {:?}", all(&e));
    let again = e
        .append(LogAppend {
            origin: origin(1),
            streams: vec![stream(&[("source", "app")], &[(now, "a")])],
        })
        .await
        .expect("append");
    assert_eq!(
        again,
        LogOutcome::Duplicate,
        "the batch is still known as stored"
    );
}

#[tokio::test]
async fn tallies_from_blocks_and_head_agree_with_the_lines() {
    let now = telltale_common::model::now_ms() * 1_000_000;
    let d = tempfile::tempdir().expect("dir");
    let e = LogEngine::open(d.path(), LogOptions::default()).expect("open");
    let batch = |k: i64| LogAppend {
        origin: None,
        streams: vec![
            stream(
                &[("source", "a")],
                &[(now + k, "short"), (now + k + 5, "a longer line é")],
            ),
            stream(&[("source", "b")], &[(now + k + 2, "b")]),
        ],
    };
    e.append(batch(0)).await.expect("append");
    e.flush().await.expect("cut");
    e.append(batch(10)).await.expect("append");
    e.append(batch(20)).await.expect("append");
    e.flush().await.expect("cut");
    e.append(batch(30)).await.expect("append");
    let m = [Matcher {
        name: "source".into(),
        op: crate::labels::MatchOp::Regex(regex::Regex::new("^.*$").expect("re")),
    }];
    // Edges on lines, between them, around everything, inside one chunk, outside all.
    let n = now;
    for edges in [
        vec![i64::MIN, i64::MAX],
        vec![n - 1, n + 2, n + 12, n + 100],
        vec![n, n + 5, n + 10, n + 15, n + 20, n + 25, n + 30, n + 35],
        vec![n + 1, n + 3],
        vec![n - 100, n - 50, n - 1],
        vec![n + 1000, n + 2000],
        vec![n + 3, n + 4],
    ] {
        let fast = e.tally(&m, &edges, u64::MAX).expect("tally");
        let slow = crate::logs::store::tally_by_select(&e, &m, &edges, u64::MAX).expect("select");
        assert_eq!(fast, slow, "edges {edges:?}");
    }
    // By hand: stream a's 8 lines at +0 +5 +10 +15 +20 +25 +30 +35, b's at +2 +12 +22 +32.
    let t = e
        .tally(&m, &[n - 1, n + 12, n + 40], u64::MAX)
        .expect("tally");
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].lines, vec![3, 5]);
    assert_eq!(t[0].bytes, vec![5 + 16 + 5, 16 + 5 + 16 + 5 + 16]);
    assert_eq!(t[1].lines, vec![2, 2]);
    // Lines decoded count 16 bytes against the bound; a chunk inside one interval is counted
    // from the index alone and costs nothing.
    let edges = [n + 1, n + 33];
    assert!(matches!(
        e.tally(&m, &edges, 16 * 4),
        Err(LogStoreError::TooMuchData { .. })
    ));
    assert!(e.tally(&m, &[n - 1, n + 1000], 16 * 3).is_ok());
}

/// Counting queries take the store's tally (no line read); the same query with a filter that
/// keeps every line takes the line path. On random streams cut into blocks at random points,
/// and random steps, ranges and functions, both agree.
#[tokio::test]
async fn counting_from_tallies_agrees_with_counting_lines() {
    use crate::logs::logql::{Query, eval, parse};
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    const S: i64 = 1_000_000_000;
    let now = telltale_common::model::now_ms() * 1_000_000 / S * S;
    let d = tempfile::tempdir().expect("dir");
    let e = LogEngine::open(d.path(), LogOptions::default()).expect("open");
    for round in 0..12 {
        let mut streams = Vec::new();
        for src in ["a", "b", "c"] {
            let lines: Vec<(i64, String)> = (0..rng.random_range(0..200))
                .map(|_| {
                    // Whole seconds too, so lines fall on window edges.
                    let t = now
                        + rng.random_range(0..600) * S
                        + if rng.random_bool(0.5) {
                            0
                        } else {
                            rng.random_range(0..S)
                        };
                    (t, "x".repeat(rng.random_range(1..40)))
                })
                .collect();
            let refs: Vec<(i64, &str)> = lines.iter().map(|(t, l)| (*t, l.as_str())).collect();
            streams.push(stream(&[("source", src), ("level", "info")], &refs));
        }
        e.append(LogAppend {
            origin: None,
            streams,
        })
        .await
        .expect("append");
        if round % 3 == 1 {
            e.flush().await.expect("cut");
        }
    }
    let funcs = ["count_over_time", "rate", "bytes_over_time", "bytes_rate"];
    for _ in 0..200 {
        let f = funcs[rng.random_range(0..funcs.len())];
        let range = rng.random_range(1..120) * S / if rng.random_bool(0.3) { 7 } else { 1 };
        let step = rng.random_range(1..90) * S;
        let start = now - 60 * S + rng.random_range(0..300) * S;
        let end = start + rng.random_range(0..400) * S;
        let agg = rng.random_bool(0.5);
        let sel = r#"{source=~"a|c"}"#;
        let q = |filter: &str| {
            let inner = format!("{f}({sel}{filter}[{}ms])", range / 1_000_000);
            if agg {
                format!("sum by (level) ({inner})")
            } else {
                inner
            }
        };
        let run = |q: &str| {
            let Ok(Query::Metric(m)) = parse(q) else {
                panic!("{q}")
            };
            eval::range_metric(&e, &m, start, end, step, &eval::Limits::default())
                .expect("runs")
                .into_iter()
                .map(|s| (s.labels, s.points))
                .collect::<Vec<_>>()
        };
        let fast = run(&q(""));
        let slow = run(&q(r#" != "never-in-a-line""#));
        assert_eq!(fast, slow, "{}", q(""));
    }
}
