//! Where ingest CPU goes: decode, stamp and apply of a 1000-series batch, timed separately.
//! `cargo run --release -p telltale-aggregator --example micro`

use std::time::Instant;

use telltale_aggregator::storage::stamp_agent_series;
use telltale_common::codec;
use telltale_common::model::{Labels, Sample, SeriesSamples};
use telltale_common::wire::{Batch, ClientMessage};

fn main() {
    let batch = |k: i64| Batch {
        sequence: 1,
        created_ms: k,
        series: (0..1000)
            .map(|j| SeriesSamples {
                labels: Labels::from_pairs([
                    ("__name__", format!("bench_metric_{}", j % 25)),
                    ("series", j.to_string()),
                    ("device", format!("dev{}", j % 7)),
                    ("mode", "user".to_string()),
                    ("host", "bench-1".to_string()),
                    ("instance", "bench-1".to_string()),
                    ("job", "telltale-agent".to_string()),
                ]),
                samples: vec![Sample(k, 1.0)],
            })
            .collect(),
    };
    let payload = codec::encode_payload(&ClientMessage::Batch(batch(1))).unwrap_or_default();
    let n = 300;
    let t = Instant::now();
    let mut decoded = Vec::new();
    for _ in 0..n {
        if let Ok(ClientMessage::Batch(b)) = codec::decode_payload::<ClientMessage>(&payload) {
            decoded.push(b);
        }
    }
    let dec = t.elapsed();
    let t = Instant::now();
    for b in decoded.iter_mut() {
        stamp_agent_series(&mut b.series, "bench-1");
    }
    let stamp = t.elapsed();
    let dir = std::env::temp_dir().join(format!("micro-{}", std::process::id()));
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let store =
        telltale_aggregator::logstore::LogStore::open(&dir).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    rt.block_on(async {
        use telltale_aggregator::storage::{AppendRequest, Storage};
        for (k, mut b) in decoded.into_iter().enumerate() {
            for s in &mut b.series {
                s.samples[0].0 = k as i64;
            }
            let _ = store
                .append(AppendRequest {
                    origin: None,
                    series: b.series,
                    encoded: Some(payload.clone()),
                })
                .await;
        }
    });
    let apply = t.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    let per = |d: std::time::Duration| d.as_nanos() as f64 / (n as f64 * 1000.0);
    println!(
        "per series: decode {:.0} ns, stamp {:.0} ns, append (log + fsync + apply, serial) {:.0} ns",
        per(dec),
        per(stamp),
        per(apply)
    );
}
