use super::*;
use telltale_common::trace::SpanKind;

/// xorshift: reproducible ids and shuffles.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn id(&mut self) -> TraceId {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next().to_be_bytes());
        id[8..].copy_from_slice(&self.next().to_be_bytes());
        id
    }
}

fn span(trace: TraceId, i: u64, service: &str, name: &str, ms: u64, status: SpanStatus) -> Span {
    Span {
        trace_id: trace,
        span_id: (i + 1).to_be_bytes(),
        parent: (i > 0).then(|| 1u64.to_be_bytes()),
        service: service.into(),
        name: name.into(),
        kind: SpanKind::Server,
        start_ns: 1_000_000_000,
        end_ns: 1_000_000_000 + ms * 1_000_000,
        status,
        status_message: String::new(),
        attributes: Vec::new(),
        resource: Vec::new(),
        events: Vec::new(),
        links: Vec::new(),
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Plain,
    Failed,
    Slow,
}

#[test]
fn failed_and_slow_traces_are_all_kept_whole_and_a_tenth_of_the_rest() {
    let opts = SamplingOptions {
        ratio: 0.1,
        decision_wait: Duration::from_secs(5),
        slow: vec![SlowRule {
            service: Some("db".into()),
            operation: Some("query".into()),
            threshold: Duration::from_millis(300),
        }],
        slow_threshold: Some(Duration::from_secs(2)),
        ..SamplingOptions::default()
    };
    let mut s = Sampler::new(opts);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    // 12 000 plain traces, 400 with a failed span, 400 with a slow db query, 200 slow by the
    // default threshold; 4 spans each from three services, arriving interleaved over 30 s.
    let mut traces: Vec<(TraceId, Kind)> = Vec::new();
    for i in 0..13_000u32 {
        let k = match i % 65 {
            0 | 1 => Kind::Failed,
            2 | 3 => Kind::Slow,
            _ => Kind::Plain,
        };
        traces.push((rng.id(), k));
    }
    let mut arrivals: Vec<(u64, Span)> = Vec::new();
    for (n, (id, k)) in traces.iter().enumerate() {
        let t0 = (n as u64 * 30_000) / traces.len() as u64;
        for i in 0..4u64 {
            let (svc, name) = [
                ("web", "GET /"),
                ("api", "call"),
                ("db", "query"),
                ("db", "query"),
            ][i as usize];
            let mut ms = 20;
            let mut status = SpanStatus::Unset;
            // The interesting span is the last to arrive, from another "host".
            if i == 3 {
                match k {
                    Kind::Failed => status = SpanStatus::Error,
                    Kind::Slow if n % 2 == 0 => ms = 400,
                    Kind::Slow => {
                        ms = 2500;
                    }
                    Kind::Plain => ms = 299,
                }
            }
            arrivals.push((t0 + i * 900, span(*id, i, svc, name, ms, status)));
        }
    }
    arrivals.sort_by_key(|a| a.0);
    let start = Instant::now();
    let mut kept: HashMap<TraceId, usize> = HashMap::new();
    let mut dropped: HashMap<TraceId, usize> = HashMap::new();
    let mut reasons: HashMap<TraceId, Reason> = HashMap::new();
    let mut settle = |decisions: Vec<Decision>,
                      kept: &mut HashMap<TraceId, usize>,
                      dropped: &mut HashMap<TraceId, usize>| {
        for d in decisions {
            assert!(!d.early);
            reasons.insert(d.id, d.reason);
            let m = if d.reason.kept() {
                &mut *kept
            } else {
                &mut *dropped
            };
            *m.entry(d.id).or_default() += d.spans.len();
        }
    };
    for (t, sp) in arrivals {
        let now = start + Duration::from_millis(t);
        let id = sp.trace_id;
        let o = s.offer(vec![sp], now);
        assert!(
            o.kept.is_empty() && o.dropped == 0,
            "no span comes after its decision here"
        );
        let _ = id;
        settle(s.due(now), &mut kept, &mut dropped);
    }
    settle(
        s.due(start + Duration::from_secs(3600)),
        &mut kept,
        &mut dropped,
    );
    assert_eq!(s.pending_spans(), 0);
    let mut plain = (0, 0);
    for (id, k) in &traces {
        match k {
            Kind::Failed | Kind::Slow => {
                assert_eq!(kept.get(id), Some(&4), "{k:?} trace kept whole");
                let want = if *k == Kind::Failed {
                    Reason::Error
                } else {
                    Reason::Slow
                };
                assert_eq!(reasons.get(id), Some(&want));
            }
            Kind::Plain => {
                plain.0 += 1;
                match (kept.get(id), dropped.get(id)) {
                    (Some(4), None) => plain.1 += 1,
                    (None, Some(4)) => {}
                    other => panic!("a plain trace split: {other:?}"),
                }
            }
        }
    }
    assert!(plain.0 >= 10_000);
    let share = plain.1 as f64 / plain.0 as f64;
    assert!((0.08..=0.12).contains(&share), "kept share {share}");
}

#[test]
fn late_spans_follow_the_decision_and_memory_stays_bounded() {
    let opts = SamplingOptions {
        ratio: 0.5,
        decision_wait: Duration::from_secs(10),
        max_pending_spans: 100,
        max_decided: 1000,
        ..SamplingOptions::default()
    };
    let mut s = Sampler::new(opts);
    let mut rng = Rng(77);
    let t0 = Instant::now();
    let ids: Vec<TraceId> = (0..60).map(|_| rng.id()).collect();
    let mut early = Vec::new();
    for id in &ids {
        s.offer(
            (0..3)
                .map(|i| span(*id, i, "a", "x", 1, SpanStatus::Unset))
                .collect(),
            t0,
        );
        early.extend(s.due(t0));
        assert!(s.pending_spans() <= 100, "{}", s.pending_spans());
    }
    // 180 spans offered, at most 100 wait: the oldest 27 traces were decided early.
    assert_eq!(early.len(), 27);
    assert!(early.iter().all(|d| d.early));
    // A late span follows its trace's decision.
    for d in &early {
        let o = s.offer(vec![span(d.id, 9, "b", "y", 1, SpanStatus::Error)], t0);
        if d.reason.kept() {
            assert_eq!((o.kept.len(), o.dropped), (1, 0));
        } else {
            assert_eq!((o.kept.len(), o.dropped), (0, 1));
        }
    }
    assert!(early.iter().any(|d| d.reason.kept()) && early.iter().any(|d| !d.reason.kept()));
}

#[test]
fn the_share_is_a_function_of_the_id_and_rules_pick_the_most_specific() {
    let mut rng = Rng(5);
    let ids: Vec<TraceId> = (0..20_000).map(|_| rng.id()).collect();
    for ratio in [0.0, 0.01, 0.25, 0.5, 0.9] {
        let n = ids.iter().filter(|id| in_share(id, ratio)).count() as f64 / ids.len() as f64;
        assert!((n - ratio).abs() < 0.01, "{ratio}: {n}");
        // A larger share contains every id of a smaller one.
        assert!(
            ids.iter()
                .all(|id| !in_share(id, ratio) || in_share(id, ratio + 0.05))
        );
    }
    assert!(ids.iter().all(|id| in_share(id, 1.0)));
    let opts = SamplingOptions {
        ratio: 0.0,
        slow_threshold: Some(Duration::from_secs(1)),
        slow: vec![
            SlowRule {
                service: Some("db".into()),
                operation: None,
                threshold: Duration::from_millis(100),
            },
            SlowRule {
                service: Some("db".into()),
                operation: Some("bulk".into()),
                threshold: Duration::from_secs(5),
            },
            SlowRule {
                service: None,
                operation: Some("health".into()),
                threshold: Duration::from_secs(60),
            },
        ],
        ..SamplingOptions::default()
    };
    let id = [3u8; 16];
    let one = |svc: &str, name: &str, ms: u64| {
        opts.decide(&id, &[span(id, 0, svc, name, ms, SpanStatus::Unset)])
    };
    assert_eq!(one("db", "select", 150), Reason::Slow);
    assert_eq!(one("db", "bulk", 150), Reason::Dropped);
    assert_eq!(one("db", "bulk", 5000), Reason::Slow);
    assert_eq!(one("web", "health", 2000), Reason::Dropped);
    assert_eq!(one("web", "GET", 1000), Reason::Slow);
    assert_eq!(one("web", "GET", 999), Reason::Dropped);
    assert_eq!(
        opts.decide(&id, &[span(id, 0, "web", "GET", 1, SpanStatus::Error)]),
        Reason::Error
    );
}
