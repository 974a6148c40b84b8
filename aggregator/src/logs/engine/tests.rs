use super::*;
use crate::durable::dedup::Origin;

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
    let seg = segments::list_segments(&d.path().join("wal"))
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
async fn sizes_from_blocks_and_head_agree_with_the_lines() {
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
    let m = [Matcher {
        name: "source".into(),
        op: crate::labels::MatchOp::Regex(regex::Regex::new("^.*$").expect("re")),
    }];
    for (start, end) in [
        (i64::MIN, i64::MAX),
        (now + 2, now + 12),
        (now + 100, now + 200),
    ] {
        let sel = Selection {
            matchers: &m,
            start_ns: start,
            end_ns: end,
            needles: &[],
            max_bytes: u64::MAX,
        };
        let fast = e.sizes(&sel).expect("sizes");
        let slow = crate::logs::store::sizes_by_select(&e, &sel).expect("select");
        assert_eq!(fast, slow, "[{start}, {end})");
    }
    // Each line counts 16 bytes against the bound: 6 lines need 96.
    let tight = Selection {
        matchers: &m,
        start_ns: i64::MIN,
        end_ns: i64::MAX,
        needles: &[],
        max_bytes: 95,
    };
    assert!(matches!(
        e.sizes(&tight),
        Err(LogStoreError::TooMuchData { .. })
    ));
}
