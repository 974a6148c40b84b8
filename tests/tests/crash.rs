//! Crash consistency: SIGKILL the aggregator during heavy remote_write ingest, 20 times, while
//! it cuts its head into blocks and compacts every 200 ms; after each restart every
//! acknowledged sample is there, once, with no hole.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use telltale_common::model::{Labels, Sample, SeriesSamples};
use telltale_tests::{certs_init, http_get, http_post, query, start_aggregator};

const WRITERS: usize = 3;
const SERIES_PER_WRITER: usize = 40;
const SAMPLES_PER_REQUEST: i64 = 25;
const CYCLES: usize = 20;

fn name(w: usize, s: usize) -> String {
    format!("crash_w{w}_s{s}")
}

#[test]
fn every_acknowledged_sample_survives_sigkill_during_ingest_and_compaction() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tls = dir.path().join("tls");
    certs_init(&tls)?;
    let data = dir.path().join("data");
    let cfg = dir.path().join("aggregator.toml");
    // Cut and compact constantly, so kills land in every phase.
    std::fs::write(
        &cfg,
        "[storage]\nhead_max_age = \"1s\"\nmaintenance_interval = \"200ms\"\n",
    )?;
    let cfg_s = cfg.to_string_lossy().to_string();
    // Two days back, 1 s apart: 2-hour windows close and compact while the test runs.
    let base = telltale_common::model::now_ms() / 1000 * 1000 - 2 * 86_400_000;
    // Samples acknowledged per series (each series is written in order by one writer).
    let acked: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let mut rng = 0x2545F4914F6CDD1Du64;
    for cycle in 0..CYCLES {
        let agg = start_aggregator(
            &tls,
            &data,
            "127.0.0.1:0",
            "127.0.0.1:0",
            &["--config", &cfg_s],
        )?;
        let http = agg.http;
        // Everything acknowledged so far is there: c samples 0..c, values 0..c.
        verify(
            http,
            &acked.lock().unwrap_or_else(|e| e.into_inner()),
            cycle,
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for w in 0..WRITERS {
            let (acked, stop) = (acked.clone(), stop.clone());
            handles.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut next: Vec<i64> = {
                        let a = acked.lock().unwrap_or_else(|e| e.into_inner());
                        (0..SERIES_PER_WRITER)
                            .map(|s| a.get(&name(w, s)).copied().unwrap_or(0))
                            .collect()
                    };
                    let series: Vec<SeriesSamples> = (0..SERIES_PER_WRITER)
                        .map(|s| SeriesSamples {
                            labels: Labels::from_pairs([
                                ("__name__", name(w, s).as_str()),
                                ("job", "crash"),
                            ]),
                            samples: (next[s]..next[s] + SAMPLES_PER_REQUEST)
                                .map(|k| Sample(base + k * 1000, k as f64))
                                .collect(),
                        })
                        .collect();
                    let body = telltale_aggregator::api::remote_write::encode(&series);
                    match http_post(http, "/api/v1/write", "application/x-protobuf", &body) {
                        Ok((204, _)) => {
                            let mut a = acked.lock().unwrap_or_else(|e| e.into_inner());
                            for (s, n) in next.iter_mut().enumerate() {
                                *n += SAMPLES_PER_REQUEST;
                                a.insert(name(w, s), *n);
                            }
                        }
                        _ => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }));
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(300 + rng % 1200));
        let mut agg = agg;
        agg.proc.kill();
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.join();
        }
    }
    let agg = start_aggregator(
        &tls,
        &data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--config", &cfg_s],
    )?;
    let a = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    verify(agg.http, &a, CYCLES)?;
    let total: i64 = a.values().sum();
    assert!(
        total > 100_000,
        "heavy enough: {total} samples acknowledged"
    );
    let (_, m) = http_get(agg.http, "/metrics")?;
    let cuts = m
        .lines()
        .find(|l| l.starts_with("telltale_aggregator_head_cuts_total "))
        .unwrap_or("");
    assert!(
        !cuts.ends_with(" 0"),
        "cuts happened in the last run too: {cuts}"
    );
    let blocks = std::fs::read_dir(data.join("blocks"))?.count();
    assert!(blocks > 0, "data went into blocks");
    Ok(())
}

fn verify(
    http: std::net::SocketAddr,
    acked: &HashMap<String, i64>,
    cycle: usize,
) -> anyhow::Result<()> {
    if acked.is_empty() {
        return Ok(());
    }
    for (series, &n) in acked {
        let c = query(http, &format!("count_over_time({series}[3d])"))?;
        let sum = query(http, &format!("sum_over_time({series}[3d])"))?;
        let c: i64 = c
            .first()
            .and_then(|x| x["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let sum: f64 = sum
            .first()
            .and_then(|x| x["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        anyhow::ensure!(
            c >= n,
            "cycle {cycle}: {series} has {c} samples, {n} were acknowledged"
        );
        let want = (c * (c - 1) / 2) as f64;
        anyhow::ensure!(
            sum == want,
            "cycle {cycle}: {series}: {c} samples summing to {sum}, not {want}: a hole or a duplicate"
        );
    }
    Ok(())
}
