use super::*;
use telltale_common::trace::{SpanKind, SpanStatus};

fn rng(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn random_trace(x: &mut u64) -> (TraceId, Vec<Span>) {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&rng(x).to_be_bytes());
    id[8..].copy_from_slice(&rng(x).to_be_bytes());
    let n = 1 + rng(x) % 12;
    let spans = (0..n)
        .map(|i| {
            let start = 1_700_000_000_000_000_000 + rng(x) % 3_600_000_000_000;
            Span {
                trace_id: id,
                span_id: (i + 1).to_be_bytes(),
                parent: (i > 0).then(|| (rng(x) % i + 1).to_be_bytes()),
                service: format!("svc{}", rng(x) % 5),
                name: format!("op{}", rng(x) % 9),
                kind: SpanKind::from_otlp((rng(x) % 6) as i32),
                start_ns: start,
                end_ns: start + rng(x) % 5_000_000_000,
                status: if rng(x).is_multiple_of(10) {
                    SpanStatus::Error
                } else {
                    SpanStatus::Unset
                },
                status_message: String::new(),
                attributes: (0..rng(x) % 4)
                    .map(|k| (format!("k{k}"), format!("v{}", rng(x) % 100)))
                    .collect(),
                resource: vec![("host.name".into(), format!("h{}", rng(x) % 3))],
                events: Vec::new(),
                links: Vec::new(),
            }
        })
        .collect::<Vec<Span>>();
    // In arrival order: from several hosts, a child often comes before its parent.
    let mut spans = spans;
    for i in (1..spans.len()).rev() {
        spans.swap(i, (rng(x) % (i as u64 + 1)) as usize);
    }
    (id, spans)
}

#[test]
fn every_trace_comes_back_by_id_and_rows_describe_every_span() {
    let dir = tempfile::tempdir().expect("dir");
    let mut x = 0x2545_f491_4f6c_dd1d;
    let traces: Vec<(TraceId, Vec<Span>)> = (0..3000).map(|_| random_trace(&mut x)).collect();
    let path = dir.path().join("00000001.tblk");
    let contents = Contents {
        traces: traces.iter().map(|(id, s)| (*id, s.as_slice())).collect(),
        wal_before: 9,
        dedup: Vec::new(),
        edges: Vec::new(),
    };
    write(&path, contents).expect("write");
    let b = Block::open(&path).expect("open");
    assert!(b.index.chunks.len() > 1, "several chunks");
    assert_eq!(b.index.traces(), 3000);
    assert_eq!(b.index.wal_before, 9);
    for (id, spans) in traces.iter().step_by(7) {
        let ord = b.index.find(id).expect("found");
        assert_eq!(&b.trace(ord).expect("read"), spans);
    }
    let ords: Vec<u32> = (0..3000u32).rev().step_by(13).collect();
    let many = b.traces(&ords).expect("many");
    for (o, t) in ords.iter().zip(&many) {
        assert_eq!(t[0].trace_id, b.index.id(*o).expect("id"));
    }
    assert!(b.index.find(&[0; 16]).is_none());
    // The rows: one per span, each naming its trace, operation, start and duration.
    let total: usize = traces.iter().map(|(_, s)| s.len()).sum();
    let mut seen = 0;
    for si in &b.index.services {
        let rows = b.rows(si).expect("rows");
        for i in 0..rows.trace.len() {
            let id = b.index.id(rows.trace[i]).expect("id");
            let spans = &traces.iter().find(|(t, _)| *t == id).expect("trace").1;
            let (op, kind) = &si.operations[rows.op[i] as usize];
            assert!(spans.iter().any(|s| s.service == si.name
                && s.name == *op
                && s.kind as i32 == *kind
                && s.start_ns == rows.start_ns[i]
                && s.duration_ns() == rows.duration_ns[i]
                && (s.status == SpanStatus::Error) == rows.error[i]));
        }
        seen += rows.trace.len();
    }
    assert_eq!(seen, total);
}

#[test]
fn a_damaged_block_does_not_open_and_a_damaged_chunk_is_an_error() {
    let dir = tempfile::tempdir().expect("dir");
    let mut x = 99;
    let traces: Vec<(TraceId, Vec<Span>)> = (0..50).map(|_| random_trace(&mut x)).collect();
    let path = dir.path().join("00000001.tblk");
    write(
        &path,
        Contents {
            traces: traces.iter().map(|(id, s)| (*id, s.as_slice())).collect(),
            wal_before: 1,
            dedup: Vec::new(),
            edges: Vec::new(),
        },
    )
    .expect("write");
    let good = std::fs::read(&path).expect("read");
    for cut in [0, 3, 16, good.len() / 2, good.len() - 1] {
        std::fs::write(&path, &good[..cut]).expect("write");
        assert!(Block::open(&path).is_err(), "cut at {cut}");
    }
    let mut bad = good.clone();
    bad[7] ^= 0xff; // inside the first chunk: the index still opens
    std::fs::write(&path, &bad).expect("write");
    let b = Block::open(&path).expect("index intact");
    let first = b.index.chunk_first[0];
    assert!(b.trace(first).is_err());
}
