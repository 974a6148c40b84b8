//! Where ingest CPU goes, per series of a 1000-series agent batch: the connection loop's
//! header decode, and the store's borrowed decode + stamp + series lookup, timed without the
//! disk (fsync latency is not CPU).
//! `cargo run --release -p telltale-aggregator --example micro`

use std::time::Instant;

use telltale_aggregator::metrics::storage::{AppendData, AppendRequest, Appender, Origin};
use telltale_aggregator::metrics::tsdb::Tsdb;
use telltale_common::codec;
use telltale_common::model::{Labels, Sample, SeriesSamples};
use telltale_common::wire::{Batch, ClientMessage, ClientMessageHead};

fn main() {
    let batch = |k: u64| Batch {
        sequence: k,
        created_ms: k as i64,
        events: Vec::new(),
        series: (0..1000)
            .map(|j| SeriesSamples {
                labels: Labels::from_pairs([
                    ("__name__", format!("bench_metric_{}", j % 25)),
                    ("series", j.to_string()),
                    ("device", format!("dev{}", j % 7)),
                    ("mode", "user".to_string()),
                    ("host", "bench-1".to_string()),
                ]),
                samples: vec![Sample(k as i64, 1.0)],
            })
            .collect(),
        spans: Vec::new(),
        exemplars: Vec::new(),
        logs: Vec::new(),
    };
    let n = 300u64;
    let payloads: Vec<Vec<u8>> = (1..=n)
        .map(|k| codec::encode_payload(&ClientMessage::Batch(batch(k))).unwrap_or_default())
        .collect();
    let t = Instant::now();
    for p in &payloads {
        let _ = codec::decode_payload::<ClientMessageHead>(p);
    }
    let head = t.elapsed();
    let t = Instant::now();
    for p in &payloads {
        let _ = codec::decode_payload::<ClientMessage>(p);
    }
    let owned = t.elapsed();
    let dir = std::env::temp_dir().join(format!("micro-{}", std::process::id()));
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    // Timestamps near 1970: keep them past the default retention.
    let opts = telltale_aggregator::metrics::tsdb::Options {
        retention: std::time::Duration::from_secs(100 * 365 * 86_400),
        ..Default::default()
    };
    let store = Tsdb::open_with(&dir, opts).unwrap_or_else(|e| panic!("{e}"));
    // Concurrent appends, as from many connections: group commit amortises the fsyncs.
    let t = Instant::now();
    let store = std::sync::Arc::new(store);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for (k, p) in payloads.into_iter().enumerate() {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .append(AppendRequest {
                        origin: Some(Origin {
                            agent: "bench-1".into(),
                            epoch: 1,
                            sequence: k as u64 + 1,
                        }),
                        data: AppendData::Encoded(p),
                    })
                    .await
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let append = t.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    let per = |d: std::time::Duration| d.as_nanos() as f64 / (n as f64 * 1000.0);
    println!(
        "per series: head decode {:.0} ns; owned decode (for comparison) {:.0} ns; append wall time, all stages, {:.0} ns",
        per(head),
        per(owned),
        per(append)
    );
}
