//! The queue on a real engine in a temporary directory, sending to an in-process receiver
//! whose answers the test switches (the real receivers, VictoriaMetrics and Prometheus, are
//! in `tests/tests/remote_write_out.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use telltale_common::model::{Labels, Sample, SeriesSamples};

use super::*;
use crate::metrics::storage::{AppendData, AppendRequest, Appender};
use crate::metrics::tsdb::{Options, Tsdb};

/// What the receiver got: (series labels as text, timestamp) → how many times.
type Got = Arc<Mutex<BTreeMap<(String, i64), u32>>>;

struct Receiver {
    got: Got,
    /// The status it answers (204 stores).
    status: Arc<AtomicU16>,
    url: String,
}

async fn receiver() -> Receiver {
    let got: Got = Arc::default();
    let status = Arc::new(AtomicU16::new(204));
    let (g, st) = (got.clone(), status.clone());
    let app = axum::Router::new().route(
        "/api/v1/write",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (g, st) = (g.clone(), st.clone());
            async move {
                let code = st.load(Ordering::SeqCst);
                if code == 204 {
                    let series = crate::metrics::remote_write::decode(&body).expect("a valid body");
                    let mut g = g.lock().unwrap();
                    for s in series {
                        let key = format!("{:?}", s.labels);
                        for x in s.samples {
                            *g.entry((key.clone(), x.0)).or_default() += 1;
                        }
                    }
                }
                axum::http::StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/write", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    Receiver { got, status, url }
}

fn queue_opts(url: &str, extra: &str) -> Vec<RemoteWriteOptions> {
    let t = format!(
        "url = \"{url}\"\nname = \"t\"\n{extra}\n[queue]\nbatch_send_deadline = \"20ms\"\nmin_backoff = \"10ms\"\nmax_backoff = \"50ms\"\nmax_samples_per_send = 7\nshards = 3\n"
    );
    options::validate(Path::new("t"), &[toml::from_str(&t).unwrap()]).unwrap()
}

fn queue_opts_cap(url: &str, cap: u64) -> Vec<RemoteWriteOptions> {
    let mut o = queue_opts(url, "");
    o[0].max_wal_bytes = cap;
    o
}

fn open(dir: &Path, opts: &[RemoteWriteOptions]) -> (Arc<Tsdb>, Arc<Forwarders>) {
    let o = Options {
        maintenance_interval: Duration::from_secs(3600),
        ..Options::default()
    };
    open_with(dir, opts, o)
}

fn open_with(dir: &Path, opts: &[RemoteWriteOptions], o: Options) -> (Arc<Tsdb>, Arc<Forwarders>) {
    let f = Arc::new(Forwarders::prepare(dir, opts, o.wal_hold.clone()).unwrap());
    let db = Arc::new(Tsdb::open_with(dir, o).unwrap());
    f.start(db.wal_feed());
    (db, f)
}

/// Asserts that the receiver got `total` samples, none twice.
fn assert_once(got: &Got, total: usize) {
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), total);
    let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
}

/// `n` series × `k` samples from `t0`, stored.
async fn put(db: &Tsdb, tag: &str, n: usize, k: usize, t0: i64) -> usize {
    let series: Vec<SeriesSamples> = (0..n)
        .map(|i| SeriesSamples {
            labels: Labels::from_pairs([("__name__", "fwd_test"), ("s", &format!("{tag}{i}"))]),
            samples: (0..k)
                .map(|j| Sample(t0 + j as i64 * 1000, j as f64))
                .collect(),
        })
        .collect();
    db.append(AppendRequest {
        origin: None,
        data: AppendData::Series(series),
    })
    .await
    .unwrap();
    n * k
}

async fn wait_for(got: &Got, n: usize) {
    for _ in 0..1500 {
        if got.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{} of {n} samples arrived", got.lock().unwrap().len());
}

/// Waits until the queue has had every WAL byte acknowledged (`pending_bytes` 0).
async fn acknowledged(f: &Forwarders) {
    for _ in 0..500 {
        if counter(f, "pending_bytes") == 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pending_bytes {}", counter(f, "pending_bytes"));
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn counter(f: &Forwarders, name: &str) -> f64 {
    let mut out = String::new();
    f.render_metrics(&mut out);
    out.lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "telltale_aggregator_remote_write_{name}{{remote=\"t\"}} "
            ))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_arrives_once_across_outages_cuts_and_restarts() {
    let r = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = queue_opts(&r.url, "");
    let t0 = now() - 600_000;
    let (db, f) = open(dir.path(), &opts);
    let mut total = put(&db, "a", 10, 5, t0).await;
    wait_for(&r.got, total).await;
    // The receiver is down while more arrives and the head is cut into blocks: the
    // checkpoint covers those segments, the queue's hold keeps them.
    r.status.store(503, Ordering::SeqCst);
    total += put(&db, "b", 10, 5, t0).await;
    let d = db.clone();
    tokio::task::spawn_blocking(move || d.flush_and_compact(now()))
        .await
        .unwrap()
        .unwrap();
    total += put(&db, "c", 4, 3, t0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(counter(&f, "retries_total") > 0.0);
    r.status.store(204, Ordering::SeqCst);
    wait_for(&r.got, total).await;
    // The receiver counts a body before its answer reaches the queue: a restart at that
    // instant would rightly send it again (at least once). Wait for the acknowledgement.
    acknowledged(&f).await;
    // A clean restart resumes at the saved position: nothing twice.
    f.shutdown();
    drop((f, db));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (db, f) = open(dir.path(), &opts);
    total += put(&db, "d", 3, 4, t0).await;
    wait_for(&r.got, total).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_once(&r.got, total);
    assert_eq!(counter(&f, "samples_dropped_total"), 0.0);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_counted_and_skipped() {
    let r = receiver().await;
    r.status.store(400, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (db, f) = open(dir.path(), &queue_opts(&r.url, ""));
    let n = put(&db, "a", 5, 2, now() - 60_000).await;
    for _ in 0..1500 {
        if counter(&f, "samples_failed_total") >= n as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counter(&f, "samples_failed_total"), n as f64);
    // The queue went on: what comes next is sent.
    r.status.store(204, Ordering::SeqCst);
    let m = put(&db, "b", 2, 2, now() - 60_000).await;
    wait_for(&r.got, m).await;
    assert_eq!(r.got.lock().unwrap().len(), m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relabelling_drops_and_rewrites_series() {
    let r = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "[[write_relabel_configs]]\nsource_labels = [\"s\"]\nregex = \"a[0-4]\"\naction = \"drop\"\n[[write_relabel_configs]]\ntarget_label = \"via\"\nreplacement = \"telltale\"\n";
    let (db, _f) = open(dir.path(), &queue_opts(&r.url, extra));
    put(&db, "a", 10, 2, now() - 60_000).await;
    wait_for(&r.got, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = r.got.lock().unwrap().clone();
    assert_eq!(got.len(), 10, "{got:?}");
    assert!(
        got.keys()
            .all(|(l, _)| l.contains("telltale") && !l.contains("\"a0\"")),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_byte_cap_the_oldest_segments_are_dropped_and_counted() {
    let r = receiver().await;
    r.status.store(503, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (db, f) = open(dir.path(), &queue_opts_cap(&r.url, 1));
    let t0 = now() - 60_000;
    let n = put(&db, "a", 20, 5, t0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Blocks now hold those samples; the segments are the queue's alone, beyond its cap.
    let d = db.clone();
    tokio::task::spawn_blocking(move || d.flush_and_compact(now()))
        .await
        .unwrap()
        .unwrap();
    for _ in 0..1500 {
        if counter(&f, "samples_dropped_total") >= n as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counter(&f, "samples_dropped_total"), n as f64);
    r.status.store(204, Ordering::SeqCst);
    let m = put(&db, "b", 3, 2, t0).await;
    wait_for(&r.got, m).await;
    let got = r.got.lock().unwrap().clone();
    assert!(got.keys().all(|(l, _)| l.contains("\"b")), "{got:?}");
}

/// Records larger than one read (a request of 8 000 new series carries their definitions and
/// points, ~200 KB) are read whole, wherever the reads cut them: every sample once, nothing
/// taken for damage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_reader_finds_every_record_whatever_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        maintenance_interval: Duration::from_secs(3600),
        ..Options::default()
    };
    let db = Tsdb::open_with(dir.path(), o).unwrap();
    let feed = db.wal_feed();
    let (segment, offset) = feed.tip();
    let t0 = now() - 60_000;
    let mut total = 0;
    for (i, (n, k)) in [(8000, 1), (3, 40), (5000, 2), (1, 1)]
        .into_iter()
        .enumerate()
    {
        total += put(&db, &format!("r{i}-"), n, k, t0).await;
    }
    for max in [1usize, 7, 5000, 1 << 20] {
        let mut pos = tail::Position { segment, offset };
        let (mut got, mut corrupt) = (0, 0);
        loop {
            let (r, to) = tail::read(&feed, pos, max).unwrap();
            if to == pos {
                break;
            }
            got += r.samples();
            corrupt += r.corrupt;
            pos = to;
        }
        assert_eq!(
            (got, corrupt),
            (total, 0),
            "reading {max} samples at a time"
        );
    }
}

/// Forward only (`[storage] mode = "forward"`): every acknowledged sample reaches the
/// receiver once across an outage, size-triggered rolls and a restart; nothing is kept (no
/// head samples, no blocks); the WAL the outage held is deleted once sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_only_sends_everything_once_keeps_nothing_and_frees_the_wal() {
    let r = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = queue_opts(&r.url, "");
    let o = Options {
        maintenance_interval: Duration::from_secs(3600),
        forward_only: true,
        forward_segment_bytes: 4096,
        max_series: 1000,
        ..Options::default()
    };
    let start = |o: &Options| open_with(dir.path(), &opts, o.clone());
    let segments = || std::fs::read_dir(dir.path().join("log")).unwrap().count();
    let flush = |db: &Arc<Tsdb>| {
        let d = db.clone();
        tokio::task::spawn_blocking(move || d.flush_and_compact(now()))
    };
    let t0 = now() - 600_000;
    let (db, f) = start(&o);
    let mut total = put(&db, "a", 10, 5, t0).await;
    wait_for(&r.got, total).await;
    r.status.store(503, Ordering::SeqCst);
    for i in 0..6 {
        // Each request's record is past 4 KiB: the WAL rolls after every one.
        total += put(&db, &format!("b{i}-"), 150, 4, t0).await;
    }
    flush(&db).await.unwrap().unwrap();
    let held = segments();
    assert!(held >= 6, "the outage's segments are kept: {held}");
    r.status.store(204, Ordering::SeqCst);
    wait_for(&r.got, total).await;
    acknowledged(&f).await;
    // The position is persisted at most once a second; then a cut lets the sent go.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    total += put(&db, "c", 2, 2, t0).await;
    wait_for(&r.got, total).await;
    flush(&db).await.unwrap().unwrap();
    let after = segments();
    assert!(after <= 2, "sent segments deleted: {held} → {after}");
    assert_eq!(db.head_samples(), 0);
    assert!(db.block_summary().is_empty(), "{:?}", db.block_summary());
    // Series are still resolved and capped: 10 + 900 + 2 are active, 88 more fit.
    let refused = || db.counters().series_refused_total.load(Ordering::Relaxed);
    assert_eq!(refused(), 0);
    total += put(&db, "e", 150, 1, t0).await - 62;
    assert_eq!(refused(), 62);
    wait_for(&r.got, total).await;
    acknowledged(&f).await;
    f.shutdown();
    drop((f, db));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (db, f) = start(&o);
    total += put(&db, "d", 3, 4, t0).await;
    wait_for(&r.got, total).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_once(&r.got, total);
    assert_eq!(counter(&f, "samples_dropped_total"), 0.0);
    assert_eq!(db.head_samples(), 0);
    assert!(db.block_summary().is_empty());
}

/// A crash in a receiver's outage resends nothing acknowledged before it: while the queue
/// waits on its stuck shards, the position of the rounds acknowledged before the outage is
/// still persisted (what a restart resumes from), not left a second behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_position_before_an_outage_is_persisted_while_the_queue_waits() {
    let r = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = queue_opts(&r.url, "");
    let t0 = now() - 600_000;
    let (db, f) = open(dir.path(), &opts);
    let mut total = 0;
    for round in 0..5 {
        total += put(&db, &format!("a{round}-"), 10, 5, t0).await;
        wait_for(&r.got, total).await;
        acknowledged(&f).await;
        let before = f.queues[0].position().unwrap();
        // The receiver goes down with far more coming, in many records, than the shards'
        // channels hold (3 shards × 3 bodies of a 21-sample round): the reader waits.
        r.status.store(503, Ordering::SeqCst);
        for k in 0..30 {
            total += put(&db, &format!("b{round}-{k}-"), 10, 2, t0).await;
        }
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert!(counter(&f, "retries_total") > 0.0);
        let saved =
            cursor::Cursor::load(positions_dir(dir.path()).join("t.pos"), "t".into()).position();
        assert_eq!(
            saved,
            Some(before),
            "round {round}: the persisted position lags the acknowledged one"
        );
        // The outage ends; what waited goes out.
        r.status.store(204, Ordering::SeqCst);
        wait_for(&r.got, total).await;
        acknowledged(&f).await;
    }
    assert_once(&r.got, total);
    drop(db);
}
