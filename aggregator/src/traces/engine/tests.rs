use super::*;
use crate::durable::dedup::Origin;
use crate::traces::store::{TraceQuerier, TraceSearch};
use telltale_common::trace::SpanKind;
use telltale_common::trace::{SpanEvent, SpanStatus};

fn span(
    trace: u64,
    i: u64,
    parent: Option<u64>,
    service: &str,
    name: &str,
    start_s: u64,
    ms: u64,
) -> Span {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&0xabcd_u64.to_be_bytes());
    id[8..].copy_from_slice(&trace.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
    let start_ns = start_s * 1_000_000_000;
    Span {
        trace_id: id,
        span_id: (i + 1).to_be_bytes(),
        parent: parent.map(|p| (p + 1).to_be_bytes()),
        service: service.into(),
        name: name.into(),
        kind: SpanKind::Server,
        start_ns,
        end_ns: start_ns + ms * 1_000_000,
        status: SpanStatus::Unset,
        status_message: String::new(),
        attributes: vec![("http.route".into(), format!("/r/{}", trace % 7))],
        resource: Vec::new(),
        events: vec![SpanEvent {
            t_ns: start_ns + 1,
            name: "e".into(),
            attributes: Vec::new(),
        }],
        links: Vec::new(),
    }
}

/// A trace of three services: web → api → db.
fn trace3(t: u64, start_s: u64, db_ms: u64) -> Vec<Span> {
    vec![
        span(t, 0, None, "web", "GET /", start_s, db_ms + 20),
        span(t, 1, Some(0), "api", "call", start_s, db_ms + 10),
        span(t, 2, Some(1), "db", "query", start_s, db_ms),
    ]
}

fn origin(seq: u64) -> Option<Origin> {
    Some(Origin {
        agent: "host-a".into(),
        epoch: 1,
        sequence: seq,
    })
}

async fn append(e: &TraceEngine, seq: u64, spans: Vec<Span>) -> SpanOutcome {
    e.append(SpanAppend {
        origin: origin(seq),
        spans,
    })
    .await
    .expect("append")
}

fn id_of(t: u64) -> TraceId {
    trace3(t, 0, 1)[0].trace_id
}

const T0: u64 = 1_700_000_000;

#[tokio::test]
async fn traces_are_found_by_id_and_search_in_head_blocks_and_after_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    let e = TraceEngine::open(dir.path(), TraceOptions::default()).expect("open");
    for t in 0..50u64 {
        assert_eq!(
            append(&e, t, trace3(t, T0 + t, 10 * t)).await,
            SpanOutcome::Stored { spans: 3 }
        );
    }
    // A batch replayed by the agent is not stored twice.
    assert_eq!(
        append(&e, 7, trace3(7, T0 + 7, 70)).await,
        SpanOutcome::Duplicate
    );
    e.flush().await.expect("flush");
    // The second half of trace 60 arrives after the cut: it sits in the head, its first half
    // in a block; the trace comes back whole.
    let t60 = trace3(60, T0 + 60, 5);
    append(&e, 100, t60[..1].to_vec()).await;
    e.flush().await.expect("flush");
    append(&e, 101, t60[1..].to_vec()).await;
    for t in 51..55u64 {
        append(&e, 200 + t, trace3(t, T0 + t, 10 * t)).await;
    }
    let check = |e: &TraceEngine, web_api_calls: u64| {
        let got = e.trace(&id_of(7)).expect("trace");
        assert_eq!(got.len(), 3);
        assert!(
            got.iter()
                .all(|s| s.resource.contains(&("instance".into(), "host-a".into())))
        );
        assert_eq!(e.trace(&id_of(60)).expect("split trace").len(), 3);
        assert!(e.trace(&[1; 16]).expect("unknown").is_empty());
        assert_eq!(e.services(), vec!["api", "db", "web"]);
        assert_eq!(
            e.operations("db"),
            vec![("query".to_string(), SpanKind::Server)]
        );
        // db spans of 300 ms or more: traces 30..=49 and 51..=54, newest first.
        let q = TraceSearch {
            service: "db".into(),
            operation: Some("query".into()),
            min_duration_ns: Some(300_000_000),
            start_ns: 0,
            end_ns: u64::MAX,
            limit: 100,
            ..TraceSearch::default()
        };
        let found: Vec<TraceId> = e
            .search(&q)
            .expect("search")
            .iter()
            .map(|t| t[0].trace_id)
            .collect();
        let want: Vec<TraceId> = (30..50).chain(51..55).rev().map(id_of).collect();
        assert_eq!(found, want);
        // A limit, a time range, tags, a duration ceiling.
        let q2 = TraceSearch {
            limit: 3,
            start_ns: (T0 + 40) * 1_000_000_000,
            end_ns: (T0 + 45) * 1_000_000_000,
            tags: vec![("http.route".into(), "/r/0".into())],
            max_duration_ns: Some(430_000_000),
            ..q.clone()
        };
        let found: Vec<TraceId> = e
            .search(&q2)
            .expect("search")
            .iter()
            .map(|t| t[0].trace_id)
            .collect();
        assert_eq!(found, vec![id_of(42)]);
        assert!(
            e.search(&TraceSearch {
                service: "nope".into(),
                ..q
            })
            .expect("search")
            .is_empty()
        );
        let deps = e.dependencies(0, u64::MAX);
        let calls: Vec<(&str, &str, u64)> = deps
            .iter()
            .map(|d| (d.parent.as_str(), d.child.as_str(), d.calls))
            .collect();
        assert_eq!(
            calls,
            vec![("api", "db", 55), ("web", "api", web_api_calls)]
        );
        // By time: traces 10..=19 started in minute 0 of T0 + 10 s...
        let (from, to) = ((T0 + 10) * 1_000_000_000, (T0 + 19) * 1_000_000_000);
        let part = e.dependencies(from, to);
        assert!(part.iter().all(|d| d.calls < 55 && d.calls > 0), "{part:?}");
    };
    check(&e, 55);
    drop(e);
    // Reopened without a flush: the head's spans come back from the WAL, once.
    let e = TraceEngine::open(dir.path(), TraceOptions::default()).expect("reopen");
    // The call from trace 60's web span (in a block) to its api span (in the head, replayed)
    // straddles the restart: the matcher's memory, written at the cut, still knows the web
    // span, so the call is counted again; and the running totals go on from where they were.
    check(&e, 55);
    let total = |e: &TraceEngine| {
        e.graph_series(0)
            .iter()
            .find(|s| {
                s.labels.metric_name() == Some("traces_service_graph_request_total")
                    && s.labels.get("client") == Some("web")
            })
            .map(|s| s.samples[0].1)
    };
    assert_eq!(total(&e), Some(55.0));
    assert_eq!(
        append(&e, 101, t60[1..].to_vec()).await,
        SpanOutcome::Duplicate
    );
    assert_eq!(
        append(&e, 3, trace3(3, T0, 1)).await,
        SpanOutcome::Duplicate
    );
}

#[tokio::test]
async fn sampling_keeps_whole_traces_across_a_cut_and_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let opts = TraceOptions {
        sampling: SamplingOptions {
            ratio: 0.0,
            decision_wait: Duration::from_secs(5),
            slow_threshold: Some(Duration::from_secs(1)),
            ..SamplingOptions::default()
        },
        ..TraceOptions::default()
    };
    let e = TraceEngine::open(dir.path(), opts.clone()).expect("open");
    // Trace 1 is slow (its db span arrives last), trace 2 fails, trace 3 is plain.
    let (t1, mut t2, t3) = (trace3(1, T0, 1500), trace3(2, T0, 5), trace3(3, T0, 5));
    t2[2].status = SpanStatus::Error;
    append(&e, 1, vec![t1[0].clone(), t2[0].clone(), t3[0].clone()]).await;
    // Nothing is visible before the decision.
    assert!(e.trace(&id_of(1)).expect("t1").is_empty());
    // A cut while they wait: their spans are carried into the new WAL segment.
    e.flush().await.expect("flush");
    append(&e, 2, vec![t1[1].clone(), t2[1].clone(), t3[1].clone()]).await;
    drop(e);
    // Restarted: the waiting spans come back from the carried record and the WAL.
    let e = TraceEngine::open(dir.path(), opts).expect("reopen");
    append(&e, 3, vec![t1[2].clone(), t2[2].clone(), t3[2].clone()]).await;
    e.decide(Instant::now() + Duration::from_secs(6))
        .await
        .expect("decide");
    assert_eq!(
        e.trace(&id_of(1)).expect("t1").len(),
        3,
        "slow trace kept whole"
    );
    assert_eq!(
        e.trace(&id_of(2)).expect("t2").len(),
        3,
        "failed trace kept whole"
    );
    assert!(
        e.trace(&id_of(3)).expect("t3").is_empty(),
        "plain trace dropped"
    );
    let c = e.counters();
    assert_eq!(c.decisions[0].load(Ordering::Relaxed), 1);
    assert_eq!(c.decisions[1].load(Ordering::Relaxed), 1);
    assert_eq!(c.decisions[3].load(Ordering::Relaxed), 1);
    // A late span of the dropped trace is dropped; of a kept one, kept.
    let late = span(3, 9, Some(0), "db", "late", T0, 1);
    let late_kept = span(1, 9, Some(0), "db", "late", T0, 1);
    append(&e, 4, vec![late, late_kept]).await;
    assert!(e.trace(&id_of(3)).expect("t3").is_empty());
    assert_eq!(e.trace(&id_of(1)).expect("t1").len(), 4);
    let mut text = String::new();
    e.render_metrics(&mut text);
    assert!(
        text.contains("telltale_aggregator_traces_decisions_total{reason=\"slow\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn damaged_wal_records_are_skipped_and_counted() {
    let dir = tempfile::tempdir().expect("dir");
    let e = TraceEngine::open(dir.path(), TraceOptions::default()).expect("open");
    for t in 0..3u64 {
        append(&e, t, trace3(t, T0, 1)).await;
    }
    drop(e);
    let segs = crate::durable::segments::list_segments(&dir.path().join("wal")).expect("segments");
    let (_, path) = segs
        .iter()
        .find(|(_, p)| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .expect("a written segment");
    let mut data = std::fs::read(path).expect("read");
    // Flip a byte in the middle record's payload and cut the last record short.
    let third = data.len() / 3;
    data[third + third / 2] ^= 0x55;
    data.truncate(data.len() - 5);
    std::fs::write(path, &data).expect("write");
    let e = TraceEngine::open(dir.path(), TraceOptions::default()).expect("reopen despite damage");
    assert_eq!(e.counters().corrupt_records.load(Ordering::Relaxed), 1);
    assert_eq!(e.trace(&id_of(0)).expect("t0").len(), 3);
    assert!(e.trace(&id_of(1)).expect("t1").is_empty());
    // Still writable.
    append(&e, 10, trace3(10, T0, 1)).await;
    assert_eq!(e.trace(&id_of(10)).expect("t10").len(), 3);
}

#[tokio::test]
async fn retention_deletes_old_blocks_and_a_damaged_block_is_quarantined() {
    let dir = tempfile::tempdir().expect("dir");
    let e = TraceEngine::open(dir.path(), TraceOptions::default()).expect("open");
    append(&e, 1, trace3(1, T0, 1)).await;
    e.flush().await.expect("flush");
    append(&e, 2, trace3(2, T0 + 86_400 * 3, 1)).await;
    e.flush().await.expect("flush");
    assert_eq!(e.stats().0, 2);
    e.apply_retention((T0 + 86_400 * 8) as i64 * 1_000_000_000);
    assert_eq!(e.stats().0, 1);
    assert!(e.trace(&id_of(1)).expect("t1").is_empty());
    assert_eq!(e.trace(&id_of(2)).expect("t2").len(), 3);
    drop(e);
    let blk = std::fs::read_dir(dir.path().join("blocks"))
        .expect("blocks")
        .next()
        .expect("one")
        .expect("entry")
        .path();
    let mut data = std::fs::read(&blk).expect("read");
    let n = data.len();
    data[n - 20] ^= 0xff;
    std::fs::write(&blk, &data).expect("write");
    let e = TraceEngine::open(dir.path(), TraceOptions::default()).expect("reopen");
    assert_eq!(e.counters().quarantined_blocks.load(Ordering::Relaxed), 1);
    assert_eq!(e.stats().0, 0);
}

/// Searches that stop early (newest rows first, sections skipped) return exactly what a
/// scan of every span returns: random traces over several blocks and the head, random
/// queries.
#[tokio::test]
async fn searches_agree_with_a_scan_of_every_span() {
    let dir = tempfile::tempdir().expect("dir");
    let e = TraceEngine::open(dir.path(), TraceOptions::default()).expect("open");
    let mut x: u64 = 0x1234_5678;
    let mut rnd = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let services = ["a", "b", "c"];
    let mut all: Vec<Span> = Vec::new();
    let mut seq = 0;
    for round in 0..5u64 {
        for t in 0..120u64 {
            let k = round * 1000 + t;
            let n = 1 + rnd(5);
            let mut spans = Vec::new();
            for i in 0..n {
                // Unique starts (no ties), spread so blocks overlap in time.
                let start_s = T0 + rnd(3000);
                let mut s = span(
                    k,
                    i,
                    i.checked_sub(1),
                    services[rnd(3) as usize],
                    ["x", "y"][rnd(2) as usize],
                    start_s,
                    1 + rnd(900),
                );
                s.start_ns += k * 1000 + i;
                s.end_ns += k * 1000 + i;
                if rnd(7) == 0 {
                    s.attributes.push(("tag".into(), "hot".into()));
                }
                spans.push(s);
            }
            seq += 1;
            append(&e, seq, spans.clone()).await;
            all.extend(spans);
        }
        if round < 4 {
            e.flush().await.expect("flush");
        }
    }
    for _ in 0..300 {
        let q = TraceSearch {
            service: services[rnd(3) as usize].into(),
            operation: (rnd(2) == 0).then(|| ["x", "y"][rnd(2) as usize].to_string()),
            tags: if rnd(4) == 0 {
                vec![("tag".into(), "hot".into())]
            } else {
                Vec::new()
            },
            min_duration_ns: (rnd(2) == 0).then(|| rnd(900) * 1_000_000),
            max_duration_ns: (rnd(3) == 0).then(|| rnd(900) * 1_000_000),
            start_ns: (T0 + rnd(1500)) * 1_000_000_000,
            end_ns: (T0 + 1500 + rnd(2000)) * 1_000_000_000,
            limit: 1 + rnd(30) as usize,
        };
        let mut best: HashMap<TraceId, u64> = HashMap::new();
        for s in all.iter().filter(|s| q.matches(s)) {
            let t = best.entry(s.trace_id).or_insert(0);
            *t = (*t).max(s.start_ns);
        }
        let mut want: Vec<(u64, TraceId)> = best.into_iter().map(|(id, t)| (t, id)).collect();
        want.sort_by(|a, b| b.cmp(a));
        want.truncate(q.limit);
        let want: Vec<TraceId> = want.into_iter().map(|(_, id)| id).collect();
        let got: Vec<TraceId> = e
            .search(&q)
            .expect("search")
            .iter()
            .map(|t| t[0].trace_id)
            .collect();
        assert_eq!(got, want, "{q:?}");
    }
}

#[tokio::test]
async fn foreign_spans_of_a_pool_are_written_apart_never_sampled_and_held_for_the_forwarder() {
    use crate::durable::feed::{self, Position, Sink};
    let dir = tempfile::tempdir().expect("dir");
    let owners = Arc::new(super::super::pool::Owners::new(
        vec!["http://a:1".into(), "http://b:1".into()],
        0,
    ));
    let hold = WalHold::default();
    // The forwarder's slot: it has read nothing yet.
    let forwarder = hold.another();
    forwarder.set(0);
    let opts = TraceOptions {
        pool: Some(owners.clone()),
        wal_hold: hold,
        ..TraceOptions::default()
    };
    let e = TraceEngine::open(dir.path(), opts).expect("open");
    for t in 0..40u64 {
        append(&e, t, trace3(t, T0 + t, 5)).await;
    }
    e.decide(Instant::now() + Duration::from_secs(3600))
        .await
        .expect("decide");
    // A cut: the segments it covers stay for the forwarder.
    e.flush().await.expect("flush");
    let theirs: Vec<u64> = (0..40).filter(|&t| !owners.is_ours(&id_of(t))).collect();
    assert!(!theirs.is_empty() && theirs.len() < 40, "{theirs:?}");
    for t in 0..40u64 {
        let stored = e.trace(&id_of(t)).expect("trace");
        let want = if theirs.contains(&t) { 0 } else { 3 };
        assert_eq!(stored.len(), want, "trace {t}");
    }
    struct Collect(Vec<Span>);
    impl Sink for Collect {
        fn record(&mut self, payload: &[u8], _: &Path) {
            self.0
                .extend(decode_foreign_spans(payload).expect("decodes"));
        }
        fn damaged(&mut self, _: &Path, _: usize, _: usize) {
            panic!("damaged WAL");
        }
        fn items(&self) -> usize {
            self.0.len()
        }
    }
    let mut c = Collect(Vec::new());
    feed::read(
        &e.feed(),
        Position {
            segment: 0,
            offset: 0,
        },
        usize::MAX,
        1,
        &mut c,
    )
    .expect("read");
    assert_eq!(c.0.len(), theirs.len() * 3);
    assert!(c.0.iter().all(|s| !owners.is_ours(&s.trace_id)));
    // Stamped with their agent before they leave.
    assert!(c.0.iter().all(|s| {
        s.resource
            .iter()
            .any(|(k, v)| k == "instance" && v == "host-a")
    }));
    assert_eq!(
        e.counters().spans_foreign.load(Ordering::Relaxed),
        theirs.len() as u64 * 3
    );
}
