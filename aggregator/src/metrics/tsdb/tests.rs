//! Engine tests: durability across cuts and restarts, compaction, rollups, retention, caps,
//! damage.

use std::time::Duration;

use telltale_common::model::{Labels, Sample, SeriesSamples};
use telltale_common::wire::{Batch, ClientMessage};

use super::*;
use crate::metrics::storage::{Admin, Appender, MatchOp, Querier};

const H: i64 = 3_600_000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn opts() -> Options {
    Options {
        // Tests drive maintenance themselves, with their own clock.
        maintenance_interval: Duration::from_secs(3600),
        retention: Duration::from_secs(100 * 365 * 86_400),
        rollup_retention: Duration::from_secs(200 * 365 * 86_400),
        // Tests place samples hours after now (later block windows); the limit itself is
        // tested with a sample days ahead.
        max_future: Duration::from_secs(86_400),
        ..Options::default()
    }
}

fn series(name: &str, inst: &str, samples: Vec<Sample>) -> SeriesSamples {
    SeriesSamples {
        labels: Labels::from_pairs([("__name__", name), ("instance", inst)]),
        samples,
    }
}

fn put(rt: &tokio::runtime::Runtime, db: &Tsdb, s: Vec<SeriesSamples>) -> AppendOutcome {
    rt.block_on(db.append(AppendRequest {
        origin: None,
        data: AppendData::Series(s),
    }))
    .unwrap()
}

fn agent_req(agent: &str, seq: u64, t: i64, names: &[String]) -> AppendRequest {
    let encoded = codec::encode_payload(&ClientMessage::Batch(Batch {
        sequence: seq,
        created_ms: t,
        series: names
            .iter()
            .map(|n| SeriesSamples {
                labels: Labels::from_pairs([("__name__", n.as_str())]),
                samples: vec![Sample(t, seq as f64)],
            })
            .collect(),
        events: vec![Event {
            t_ms: t,
            kind: "check_state".into(),
            labels: vec![
                ("check".into(), "web".into()),
                ("instance".into(), "liar".into()),
            ],
            message: format!("batch {seq}"),
        }],
        spans: Vec::new(),
        exemplars: Vec::new(),
        logs: Vec::new(),
    }))
    .unwrap();
    AppendRequest {
        origin: Some(Origin {
            agent: agent.into(),
            epoch: 7,
            sequence: seq,
        }),
        data: AppendData::Encoded(encoded),
    }
}

/// An agent batch naming a series invalidly (a label name, a metric name) is refused whole,
/// with the name in the reason; its sequence is not taken, so the same sequence with valid
/// names is stored afterwards, and the valid series sent with the bad one are not stored.
#[test]
fn an_agent_batch_with_an_invalid_name_is_refused_whole() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    for (names, word) in [
        (
            vec!["ok".to_string(), "bad name".to_string()],
            "invalid metric name \"bad name\"",
        ),
        (
            vec!["ok".to_string(), "1x".to_string()],
            "invalid metric name \"1x\"",
        ),
    ] {
        let r = rt
            .block_on(db.append(agent_req("a", 1, 1000, &names)))
            .unwrap();
        match r {
            AppendOutcome::Invalid { reason } => assert!(reason.contains(word), "{reason}"),
            other => panic!("{names:?}: {other:?}"),
        }
    }
    // A label name no selector could name, on a series or on an event, refuses the batch.
    let event = |labels: &[(&str, &str)]| telltale_common::wire::Event {
        t_ms: 1000,
        kind: "check_state".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        message: "down".into(),
    };
    for (series_labels, events, word) in [
        (
            vec![("__name__", "ok"), ("a-b", "x")],
            Vec::new(),
            "invalid label name \"a-b\"",
        ),
        (
            vec![("__name__", "ok")],
            vec![event(&[("check", "db"), ("bad name", "x")])],
            "invalid label name \"bad name\" in an event",
        ),
    ] {
        let mut req = agent_req("a", 1, 1000, &["ok".to_string()]);
        if let AppendData::Encoded(e) = &mut req.data {
            let batch = ClientMessage::Batch(Batch {
                sequence: 1,
                created_ms: 1000,
                series: vec![SeriesSamples {
                    labels: Labels::from_pairs(series_labels),
                    samples: vec![Sample(1000, 1.0)],
                }],
                events,
                spans: Vec::new(),
                exemplars: Vec::new(),
                logs: Vec::new(),
            });
            *e = codec::encode_payload(&batch).unwrap();
        }
        match rt.block_on(db.append(req)).unwrap() {
            AppendOutcome::Invalid { reason } => assert!(reason.contains(word), "{reason}"),
            other => panic!("{word}: {other:?}"),
        }
    }
    assert!(all(&db, "ok").is_empty());
    let r = rt
        .block_on(db.append(agent_req("a", 1, 1000, &["ok".to_string()])))
        .unwrap();
    assert_eq!(r, AppendOutcome::Stored { samples: 1 });
    assert_eq!(all(&db, "ok"), vec![Sample(1000, 1.0)]);
}

/// Where each record of an intact segment starts.
fn record_offsets(seg: &[u8]) -> Vec<usize> {
    let mut at = Vec::new();
    let mut pos = 0;
    while pos + HEADER_LEN <= seg.len() {
        at.push(pos);
        let len = u32::from_be_bytes(seg[pos..pos + 4].try_into().unwrap()) as usize;
        pos += HEADER_LEN + len;
    }
    at
}

fn all(db: &Tsdb, name: &str) -> Vec<Sample> {
    db.select(
        &[Matcher::equal("__name__", name)],
        i64::MIN,
        i64::MAX,
        1 << 24,
    )
    .unwrap()
    .into_iter()
    .flat_map(|s| s.samples)
    .collect()
}

fn ramp(from: i64, to: i64, step: i64) -> Vec<Sample> {
    (0..)
        .map(|k| from + k * step)
        .take_while(|&t| t <= to)
        .map(|t| Sample(t, ((t / step) % 1000) as f64))
        .collect()
}

#[test]
fn duplicates_and_events_survive_cuts_and_restarts() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["m".to_string()];
    {
        let db = Tsdb::open_with(dir.path(), opts()).unwrap();
        let r = rt
            .block_on(db.append(agent_req("a", 1, 1000, &names)))
            .unwrap();
        assert_eq!(r, AppendOutcome::Stored { samples: 1 });
        let r = rt
            .block_on(db.append(agent_req("a", 1, 1000, &names)))
            .unwrap();
        assert_eq!(r, AppendOutcome::Duplicate);
        // Cut into a block: the WAL segment goes, the checkpoint keeps the origin.
        db.flush_and_compact(now_ms()).unwrap();
        assert_eq!(db.head_samples(), 0);
        rt.block_on(db.append(agent_req("a", 2, 2000, &names)))
            .unwrap();
    }
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    assert_eq!(all(&db, "m"), vec![Sample(1000, 1.0), Sample(2000, 2.0)]);
    for seq in [1, 2] {
        let r = rt
            .block_on(db.append(agent_req("a", seq, 1000, &names)))
            .unwrap();
        assert_eq!(r, AppendOutcome::Duplicate, "seq {seq}");
    }
    let ev = db.events(&[], 0, 10);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(ev[0].message, "batch 1");
    assert_eq!(
        ev[0].labels,
        vec![
            ("check".into(), "web".into()),
            ("instance".into(), "a".into())
        ]
    );
    assert_eq!(db.stats().overwritten, 0);
    let segs = wal::list_segments(&dir.path().join("log")).unwrap();
    assert!(
        segs.iter().all(|(n, _)| *n >= 2),
        "covered segments deleted: {segs:?}"
    );
}

#[test]
fn torn_tail_and_corrupt_records_never_block_start_up() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["m".to_string()];
    {
        let db = Tsdb::open_with(dir.path(), opts()).unwrap();
        for seq in 1..=3 {
            rt.block_on(db.append(agent_req("a", seq, seq as i64 * 1000, &names)))
                .unwrap();
        }
    }
    let seg = crate::durable::segments::segment_path(&dir.path().join("log"), 1);
    let mut bytes = fs::read(&seg).unwrap();
    // Records: the series definition, then batches 1, 2, 3. Damage batch 2, tear batch 3.
    let at = record_offsets(&bytes);
    assert_eq!(at.len(), 4, "{at:?}");
    bytes[at[2] + HEADER_LEN + 3] ^= 0xff;
    bytes.truncate(bytes.len() - 5);
    fs::write(&seg, &bytes).unwrap();
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    assert_eq!(db.recovery.records, 2);
    assert_eq!(db.recovery.corrupt, 1);
    assert!(db.recovery.truncated_bytes > 0);
    assert_eq!(all(&db, "m").len(), 1);
    rt.block_on(db.append(agent_req("a", 3, 3000, &names)))
        .unwrap();
    assert_eq!(all(&db, "m").len(), 2);
}

/// One bad length byte in a record header in the middle of a segment: the records after it
/// are replayed and the segment is not cut (it was cut at the bad header before).
#[test]
fn a_bad_record_header_loses_that_record_only() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["m".to_string()];
    {
        let db = Tsdb::open_with(dir.path(), opts()).unwrap();
        for seq in 1..=12 {
            rt.block_on(db.append(agent_req("a", seq, seq as i64 * 1000, &names)))
                .unwrap();
        }
    }
    let seg = crate::durable::segments::segment_path(&dir.path().join("log"), 1);
    let mut bytes = fs::read(&seg).unwrap();
    let size = bytes.len();
    let at = record_offsets(&bytes);
    assert_eq!(at.len(), 13, "the series definition and 12 batches: {at:?}");
    // The length field of batch 4: its top byte, so it claims far more than the file holds.
    bytes[at[4]] ^= 0x7f;
    fs::write(&seg, &bytes).unwrap();
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    assert_eq!(db.recovery.records, 12);
    assert_eq!(db.recovery.corrupt, 1);
    assert_eq!(db.recovery.truncated_bytes, 0);
    assert_eq!(
        fs::metadata(&seg).unwrap().len() as usize,
        size,
        "nothing cut"
    );
    assert_eq!(all(&db, "m").len(), 11);
}

#[test]
fn the_series_api_lists_a_series_only_where_it_has_samples() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    let t0 = 100 * 24 * H;
    // "gone" stops after 20 minutes, "live" goes on for 3 hours; both flushed into blocks.
    put(
        &rt,
        &db,
        vec![
            series("m", "gone", ramp(t0, t0 + 20 * 60_000, 15_000)),
            series("m", "live", ramp(t0, t0 + 3 * H, 15_000)),
        ],
    );
    db.flush_and_compact(t0 + 5 * H).unwrap();
    assert!(!db.block_summary().is_empty());
    let listed = |from: i64, to: i64| -> Vec<String> {
        let mut v: Vec<String> = db
            .series(&[Matcher::equal("__name__", "m")], from, to)
            .iter()
            .filter_map(|l| l.get("instance").map(str::to_string))
            .collect();
        v.sort();
        v
    };
    assert_eq!(listed(t0, t0 + 3 * H), ["gone", "live"]);
    assert_eq!(listed(t0 + 10 * 60_000, t0 + 11 * 60_000), ["gone", "live"]);
    // An hour after "gone" stopped, inside the same block window: only "live".
    assert_eq!(listed(t0 + H, t0 + 2 * H), ["live"]);
    assert_eq!(listed(t0 + 2 * H, t0 + 2 * H), ["live"]);
    assert!(listed(t0 + 4 * H, t0 + 5 * H).is_empty());
    // From the whole of time, both.
    assert_eq!(listed(i64::MIN, i64::MAX), ["gone", "live"]);
}

#[test]
fn compaction_keeps_every_sample_and_rollups_equal_raw() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    let day = 24 * H;
    let t0 = 100 * day;
    // 30 hours of 10 s samples for two series, cut every 3 hours of data; one sample lands
    // late (within the window) after its window was compacted.
    let a = ramp(t0, t0 + 30 * H, 10_000);
    let mut cut_at = t0 + 3 * H;
    let mut i = 0;
    while i < a.len() {
        let j = a[i..].partition_point(|s| s.0 < cut_at) + i;
        put(
            &rt,
            &db,
            vec![
                series("a", "x", a[i..j].to_vec()),
                series("b", "y", a[i..j].to_vec()),
            ],
        );
        db.flush_and_compact(cut_at).unwrap();
        i = j;
        cut_at += 3 * H;
    }
    db.flush_and_compact(t0 + 40 * H).unwrap();
    let kinds = db.block_summary();
    assert!(
        kinds.iter().any(|k| k.0 == Kind::Raw && k.1 == 2),
        "a day block: {kinds:?}"
    );
    assert!(
        kinds.iter().all(|k| k.0 == Kind::Raw),
        "rollups wait for raw retention: {kinds:?}"
    );
    assert_eq!(all(&db, "a"), a);
    // A late sample within the out-of-order window of its series merges in.
    let late = Sample(t0 + 30 * H - 20 * 60_000 + 5, 7.0);
    put(&rt, &db, vec![series("a", "x", vec![late])]);
    db.flush_and_compact(t0 + 40 * H).unwrap();
    let mut want = a.clone();
    want.push(late);
    want.sort_by_key(|s| s.0);
    assert_eq!(all(&db, "a"), want);
    drop(db);
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    assert_eq!(all(&db, "a"), want, "after a restart");
    assert_eq!(db.stats().samples as usize, 2 * a.len() + 1);
    // Rollups equal rollups computed from raw samples, for both resolutions (written when
    // the raw blocks expire: move the clock past the raw retention).
    let m = [Matcher::equal("__name__", "a")];
    let raw_rollups: Vec<_> = [300_000, H]
        .iter()
        .map(|&res| {
            crate::metrics::storage::rollup_from_raw(&db, &m, t0, t0 + 31 * H, res, 1 << 20)
                .unwrap()
        })
        .collect();
    db.flush_and_compact(t0 + 40 * H + 101 * 365 * day).unwrap();
    let kinds = db.block_summary();
    assert!(kinds.iter().any(|k| k.0 == Kind::Rollup5m), "{kinds:?}");
    assert!(
        kinds.iter().all(|k| k.0 != Kind::Raw || k.1 == 0),
        "raw blocks expired: {kinds:?}"
    );
    for res in [300_000, H] {
        let from_blocks = db.select_rollup(&m, t0, t0 + 31 * H, res, 1 << 20).unwrap();
        let from_raw = &raw_rollups[usize::from(res == H)];
        assert_eq!(from_blocks.len(), from_raw.len());
        let (b, r) = (&from_blocks[0].buckets, &from_raw[0].buckets);
        if let Some(i) = (0..b.len().max(r.len())).find(|&i| b.get(i) != r.get(i)) {
            panic!(
                "resolution {res}: bucket {i} of {}/{}: {:?} vs {:?}",
                b.len(),
                r.len(),
                b.get(i),
                r.get(i)
            );
        }
        assert!(!from_blocks[0].buckets.is_empty());
    }
    // And survive a restart.
    drop(db);
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    assert_eq!(
        db.select_rollup(&m, t0, t0 + 31 * H, H, 1 << 20).unwrap(),
        raw_rollups[1]
    );
}

/// Level-0 blocks of a window still open are merged per 30-minute sub-window, not into one
/// block whose chunks grow through the window: 100 minutes at 1 s, cut every 10 minutes,
/// leave blocks of at most 30 minutes of rows each, and every sample reads back.
#[test]
fn open_windows_are_merged_in_sub_windows_that_keep_chunks_small() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    const H: i64 = 3_600_000;
    let t0 = (now_ms() / (2 * H) - 2) * 2 * H;
    // Windows are (start, end]: from the second after t0 all is in one 2-hour window.
    let a = ramp(t0 + 1000, t0 + 100 * 60_000, 1000);
    for piece in a.chunks(600) {
        put(
            &rt,
            &db,
            vec![
                series("sub", "x", piece.to_vec()),
                series("sub", "y", piece.to_vec()),
            ],
        );
        // "Now" is within the window's out-of-order hour: the window is still open.
        db.flush_and_compact(t0 + 100 * 60_000).unwrap();
    }
    let blocks = db.block_summary();
    let l0: Vec<u64> = blocks
        .iter()
        .filter(|b| b.0 == Kind::Raw && b.1 == 0)
        .map(|b| b.2)
        .collect();
    assert!(l0.len() >= 4, "{blocks:?}");
    assert!(l0.iter().all(|&rows| rows <= 2 * 1800), "{blocks:?}");
    assert_eq!(l0.iter().sum::<u64>(), 2 * a.len() as u64, "{blocks:?}");
    assert_eq!(all(&db, "sub").len(), 2 * a.len());
    // Level-0 chunks are read without being cached (they are replaced within minutes)...
    assert_eq!(db.inner.cache.usage().0, 0);
    // ...compacted ones are cached once the window closes.
    db.flush_and_compact(t0 + 6 * H).unwrap();
    assert_eq!(all(&db, "sub").len(), 2 * a.len());
    assert!(db.inner.cache.usage().0 > 0, "{:?}", db.block_summary());
}

/// Steady ingest — series sampled at their own phases, each batch a little late, cuts every
/// two minutes with the maintenance rounds between — overlaps consecutive blocks as a whole
/// but never a series' own times: no block is rewritten out of turn (that would multiply
/// compaction's cost). A sample written again at a time its series had, after that time is
/// in a compacted block, reads back as the newer value through the later compactions.
#[test]
fn steady_ingest_rewrites_nothing_out_of_turn_and_an_overwrite_wins() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    let t0 = (now_ms() / (2 * H) - 4) * 2 * H;
    let names: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
    // Five simulated hours at 10 s; each round arrives in two halves (two agents), and a
    // cut (every 70 s, across the 30-minute sub-windows' ends) falls between them, so
    // consecutive blocks share times as a whole.
    let mut overlapping = 0;
    for round in 0..(5 * 360) {
        let at = t0 + round * 10_000;
        for half in 0..2 {
            let batch: Vec<SeriesSamples> = names
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == half)
                .map(|(i, n)| {
                    series(
                        n,
                        "x",
                        vec![Sample(at + (i as i64 * 97) % 9_000, round as f64)],
                    )
                })
                .collect();
            put(&rt, &db, batch);
            let now = at + 13_000;
            if half == 0 && round % 7 == 3 {
                compact::cut_round(&db.inner, &db.tx, now, true).unwrap();
                let l0: Vec<Arc<Block>> = db
                    .inner
                    .blocks
                    .read()
                    .unwrap()
                    .iter()
                    .filter(|b| b.level == 0)
                    .cloned()
                    .collect();
                if l0.iter().any(|a| {
                    l0.iter()
                        .any(|b| a.seq < b.seq && a.min_t <= b.max_t && b.min_t <= a.max_t)
                }) {
                    overlapping += 1;
                }
                compact::compact_round(&db.inner, now, false).unwrap();
            }
        }
    }
    assert!(
        overlapping > 100,
        "the test's blocks share times as a whole: {overlapping} cuts"
    );
    let c = &db.inner.counters;
    assert!(c.compactions.load(Ordering::Relaxed) > 20, "compaction ran");
    assert_eq!(c.resequenced.load(Ordering::Relaxed), 0);
    assert_eq!(all(&db, "s7").len(), 5 * 360);
    // An overwrite of a sample 40 minutes old (within the out-of-order hour), in a block by
    // now.
    let old = t0 + 1560 * 10_000 + 7 * 97;
    assert_eq!(
        all(&db, "s7").iter().find(|s| s.0 == old).map(|s| s.1),
        Some(1560.0)
    );
    let out = put(&rt, &db, vec![series("s7", "x", vec![Sample(old, -1.0)])]);
    assert!(matches!(out, AppendOutcome::Stored { .. }), "{out:?}");
    db.flush_and_compact(t0 + 5 * H + 13_000).unwrap();
    assert_eq!(
        all(&db, "s7").iter().find(|s| s.0 == old).map(|s| s.1),
        Some(-1.0)
    );
    db.flush_and_compact(t0 + 12 * H).unwrap();
    assert_eq!(
        all(&db, "s7").iter().find(|s| s.0 == old).map(|s| s.1),
        Some(-1.0)
    );
    assert_eq!(all(&db, "s7").len(), 5 * 360);
}

#[test]
fn retention_frees_disk_and_keeps_rollups() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        retention: Duration::from_secs(2 * 86_400),
        rollup_retention: Duration::from_secs(10 * 86_400),
        ..opts()
    };
    let now = now_ms();
    let db = Tsdb::open_with(dir.path(), o).unwrap();
    // Noisy values, so the blocks have a size worth measuring.
    let mut x = 12345u64;
    let data: Vec<Sample> = ramp(now - 30 * H, now, 10_000)
        .into_iter()
        .map(|s| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            Sample(s.0, (x >> 40) as f64)
        })
        .collect();
    put(&rt, &db, vec![series("a", "x", data.clone())]);
    db.flush_and_compact(now).unwrap();
    let du = |p: &Path| -> u64 {
        fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    let before = du(&dir.path().join("blocks"));
    assert_eq!(all(&db, "a").len(), data.len());
    let m = [Matcher::equal("__name__", "a")];
    let hourly = db
        .select_rollup(&m, now - 30 * H, now - 20 * H, H, 1 << 20)
        .unwrap();
    assert_eq!(hourly[0].buckets.len(), 10);
    // Three days later the raw blocks are gone, the rollups stay.
    db.flush_and_compact(now + 3 * 24 * H).unwrap();
    let after = du(&dir.path().join("blocks"));
    assert!(after * 4 < before, "{before} -> {after} bytes");
    let raw_left: Vec<_> = all(&db, "a");
    assert!(
        raw_left.len() < data.len() / 10,
        "{} raw samples left",
        raw_left.len()
    );
    let r = db
        .select_rollup(&m, now - 30 * H, now - 20 * H, H, 1 << 20)
        .unwrap();
    assert_eq!(r, hourly, "hourly rollups outlive the raw data");
    // Past the rollup retention everything compacted is gone.
    db.flush_and_compact(now + 11 * 24 * H).unwrap();
    assert!(
        db.select_rollup(&m, now - 30 * H, now - 20 * H, H, 1 << 20)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn series_caps_refuse_new_series_and_existing_ones_keep_flowing() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        max_series_per_agent: 3,
        max_series: 5,
        ..opts()
    };
    let db = Tsdb::open_with(dir.path(), o).unwrap();
    let names: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    let r = rt
        .block_on(db.append(agent_req("a", 1, now_ms(), &names)))
        .unwrap();
    assert_eq!(r, AppendOutcome::Stored { samples: 3 });
    let c = db.counters();
    assert_eq!(c.series_refused_agent.load(Ordering::Relaxed), 2);
    // Another agent gets its own 3... until the total cap of 5.
    let r = rt
        .block_on(db.append(agent_req("b", 1, now_ms(), &names)))
        .unwrap();
    assert_eq!(r, AppendOutcome::Stored { samples: 2 });
    assert_eq!(c.series_refused_total.load(Ordering::Relaxed), 3);
    // Existing series keep flowing.
    let r = rt
        .block_on(db.append(agent_req("a", 2, now_ms() + 1000, &names)))
        .unwrap();
    assert_eq!(r, AppendOutcome::Stored { samples: 3 });
    let mut text = String::new();
    db.render_metrics(&mut text);
    // After a restart the series read back from series.log count for their agent again as
    // soon as it writes: a new one is still refused.
    db.flush_and_compact(now_ms()).unwrap();
    drop(db);
    let o = Options {
        max_series_per_agent: 3,
        max_series: 5,
        ..opts()
    };
    let db2 = Tsdb::open_with(dir.path(), o).unwrap();
    let r = rt
        .block_on(db2.append(agent_req("a", 3, now_ms() + 2000, &names)))
        .unwrap();
    assert_eq!(r, AppendOutcome::Stored { samples: 3 });
    assert_eq!(
        db2.counters().series_refused_total.load(Ordering::Relaxed)
            + db2.counters().series_refused_agent.load(Ordering::Relaxed),
        2
    );
    assert!(
        text.contains("telltale_aggregator_series_refused_total{reason=\"agent_limit\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("telltale_aggregator_series_refused_total{reason=\"total_limit\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("telltale_aggregator_active_series 5"),
        "{text}"
    );
}

/// remote_write senders share one cap on the series they create, and one request may create
/// only so many: a request of a million new series cannot grow the head without bound.
#[test]
fn remote_write_has_caps_on_new_series_per_request_and_in_total() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let o = Options {
        max_series_remote_write: 50,
        max_new_series_per_remote_write: 20,
        ..opts()
    };
    let db = Tsdb::open_with(dir.path(), o).unwrap();
    let t = now_ms();
    let rw = |from: usize, to: usize, t: i64| AppendRequest {
        origin: None,
        data: AppendData::RemoteWrite(crate::metrics::remote_write::encode_raw(
            &(from..to)
                .map(|i| series(&format!("rw{i}"), "x", vec![Sample(t, 1.0)]))
                .collect::<Vec<_>>(),
        )),
    };
    let stored = |r: AppendOutcome| match r {
        AppendOutcome::Stored { samples } => samples,
        other => panic!("{other:?}"),
    };
    assert_eq!(stored(rt.block_on(db.append(rw(0, 30, t))).unwrap()), 20);
    // The 20 known ones flow, 20 of the new ones are created.
    assert_eq!(
        stored(rt.block_on(db.append(rw(0, 60, t + 1))).unwrap()),
        40
    );
    // The total cap (50) leaves room for 10 more.
    assert_eq!(
        stored(rt.block_on(db.append(rw(0, 100, t + 2))).unwrap()),
        50
    );
    let c = db.counters();
    assert_eq!(c.series_refused_request.load(Ordering::Relaxed), 10 + 20);
    assert_eq!(c.series_refused_remote_write.load(Ordering::Relaxed), 50);
    // Series the aggregator makes itself (rules, up) are not under these caps.
    assert_eq!(
        stored(put(
            &rt,
            &db,
            (0..30)
                .map(|i| series(&format!("own{i}"), "x", vec![Sample(t, 1.0)]))
                .collect()
        )),
        30
    );
    let mut text = String::new();
    db.render_metrics(&mut text);
    assert!(
        text.contains("telltale_aggregator_series_refused_total{reason=\"remote_write_limit\"} 50"),
        "{text}"
    );
}

#[test]
fn damaged_blocks_are_quarantined_or_reported_and_check_finds_them() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    // Both minutes of samples in one 2-hour block window (a run that straddled a window
    // boundary cut two level-0 blocks, and the test found three files).
    let t0 = now_ms() / (2 * H) * (2 * H) + 60_000;
    {
        let db = Tsdb::open_with(dir.path(), opts()).unwrap();
        put(
            &rt,
            &db,
            vec![series("a", "x", ramp(t0, t0 + 60_000, 10_000))],
        );
        db.flush_and_compact(t0).unwrap();
        put(
            &rt,
            &db,
            vec![series(
                "a",
                "x",
                ramp(t0 + 3 * H, t0 + 3 * H + 50_000, 10_000),
            )],
        );
        db.flush_and_compact(t0).unwrap();
    }
    assert!(check::check(dir.path()).unwrap().problems.is_empty());
    // Block files only: a `.tmp` of a write in flight is not a block.
    let mut blocks: Vec<_> = fs::read_dir(dir.path().join("blocks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "blk"))
        .collect();
    blocks.sort();
    let listing: Vec<_> = fs::read_dir(dir.path().join("blocks"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(blocks.len(), 2, "blocks directory: {listing:?}");
    // First block: a flipped chunk byte (reported on read); second: a cut-off file.
    let mut b = fs::read(&blocks[0]).unwrap();
    b[12] ^= 0x55;
    fs::write(&blocks[0], &b).unwrap();
    let b = fs::read(&blocks[1]).unwrap();
    fs::write(&blocks[1], &b[..b.len() - 3]).unwrap();
    let report = check::check(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    assert_eq!(db.recovery.quarantined, 1);
    assert!(
        dir.path()
            .join("quarantine")
            .join(blocks[1].file_name().unwrap())
            .exists()
    );
    assert!(all(&db, "a").is_empty(), "the damaged chunk is skipped");
    assert_eq!(db.counters().corrupt_chunks.load(Ordering::Relaxed), 1);
    // The engine goes on: new data is stored and read.
    put(
        &rt,
        &db,
        vec![series("a", "x", vec![Sample(t0 + 200_000, 1.0)])],
    );
    assert_eq!(all(&db, "a").len(), 1);
    let stats = check::stats(dir.path()).unwrap();
    assert!(stats.contains("bytes/sample"), "{stats}");
}

#[test]
fn regex_selectors_use_the_postings() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    let s: Vec<SeriesSamples> = (0..200)
        .map(|i| SeriesSamples {
            labels: Labels::from_pairs([
                ("__name__", "up"),
                ("job", if i % 2 == 0 { "x" } else { "y" }),
                (
                    "instance",
                    &format!("{}-{i}", if i % 3 == 0 { "web" } else { "db" }),
                ),
            ]),
            samples: vec![Sample(now_ms(), 1.0)],
        })
        .collect();
    put(&rt, &db, s);
    let re = Matcher {
        name: "instance".into(),
        op: MatchOp::Regex(regex::Regex::new("^(?:web.*)$").unwrap()),
    };
    let got = db.series(&[Matcher::equal("job", "x"), re], i64::MIN, i64::MAX);
    assert_eq!(got.len(), (0..200).filter(|i| i % 6 == 0).count());
    assert_eq!(
        db.label_values("job", &[], i64::MIN, i64::MAX),
        vec!["x", "y"]
    );
    assert_eq!(
        db.label_names(&[], i64::MIN, i64::MAX),
        vec!["__name__", "instance", "job"]
    );
}

#[test]
fn coarse_range_queries_answer_from_rollups_exactly_as_from_raw() {
    use crate::metrics::promql::{Engine, Value};
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Tsdb::open_with(dir.path(), opts()).unwrap());
    let day = 24 * H;
    let t0 = 200 * day;
    // Two days of 10 s samples with integer values (sums stay exact), a gap and a stale marker.
    let mut x = 7u64;
    let mut data: Vec<Sample> = ramp(t0, t0 + 2 * day, 10_000)
        .into_iter()
        .filter(|s| !(s.0 > t0 + 5 * H && s.0 < t0 + 7 * H))
        .map(|s| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            Sample(s.0, ((x >> 33) % 1000) as f64)
        })
        .collect();
    data[500].1 = f64::from_bits(telltale_common::model::STALE_NAN_BITS);
    put(
        &rt,
        &db,
        vec![
            series("g", "x", data.clone()),
            series("g", "y", data[..9000].to_vec()),
        ],
    );
    db.flush_and_compact(t0 + 3 * day).unwrap();
    let engine = Engine::new(db.clone(), Duration::from_secs(300), 50_000_000);
    for q in [
        "max_over_time(g[1h])",
        "min_over_time(g[3h])",
        "sum_over_time(g[1h])",
        "count_over_time(g[2h])",
        "avg_over_time(g[1h])",
        "last_over_time(g[1h])",
        "sum by (instance) (max_over_time(g[5m] offset 1h))",
    ] {
        for step in [H, 300_000] {
            let (start, end) = (t0 + H, t0 + 2 * day);
            let coarse = engine.range(q, start, end, step).unwrap();
            // The same steps as instant queries take the raw path.
            let mut want: std::collections::BTreeMap<Labels, Vec<Sample>> = Default::default();
            let mut t = start;
            while t <= end {
                if let Value::Vector(v) = engine.instant(q, t).unwrap() {
                    for (l, s) in v {
                        want.entry(l).or_default().push(s);
                    }
                }
                t += step;
            }
            let got: std::collections::BTreeMap<Labels, Vec<Sample>> =
                coarse.into_iter().map(|s| (s.labels, s.samples)).collect();
            assert_eq!(got.len(), want.len(), "{q} step {step}");
            // Raw windows are summed with compensation (Prometheus' order of operations);
            // rollups add bucket sums: sums and averages agree to the last bits, not to the
            // bit. Everything else is equal exactly.
            let exact = !q.starts_with("sum_over_time") && !q.starts_with("avg_over_time");
            for (l, w) in &want {
                let g = got
                    .get(l)
                    .unwrap_or_else(|| panic!("{q} step {step} {l:?} missing"));
                if exact {
                    assert_eq!(g, w, "{q} step {step} {l:?}");
                    continue;
                }
                assert_eq!(g.len(), w.len(), "{q} step {step} {l:?}");
                for (a, b) in g.iter().zip(w) {
                    assert_eq!(a.0, b.0, "{q} step {step} {l:?}");
                    assert!(
                        (a.1 - b.1).abs() <= 1e-12 * a.1.abs().max(b.1.abs()),
                        "{q} step {step} {l:?}: {a:?} vs {b:?}"
                    );
                }
            }
        }
    }
    // The coarse path reads rollups once raw retention has turned the raw blocks into them:
    // it still answers the same, while the raw path has nothing left.
    let q = "max_over_time(g[1h])";
    let before = engine.range(q, t0 + H, t0 + 2 * day, H).unwrap();
    db.flush_and_compact(t0 + 3 * day + 101 * 365 * day)
        .unwrap();
    assert!(db.block_summary().iter().any(|b| b.0 == Kind::Rollup1h));
    assert!(all(&db, "g").len() < 1000, "raw samples are gone");
    assert_eq!(engine.range(q, t0 + H, t0 + 2 * day, H).unwrap(), before);
    assert!(matches!(engine.instant(q, t0 + day).unwrap(), Value::Vector(v) if v.is_empty()));
}

/// A range query at a rollup step hands series to `topk` and `sort` in label order, as the
/// raw path does (and Prometheus): of equal values, the first in label order stays. (The
/// rollups came in storage order, so which of 24 alike series a dashboard's `topk` showed
/// differed from Prometheus at 5-minute steps.)
#[test]
fn rollups_hand_series_over_in_label_order() {
    use crate::metrics::promql::Engine;
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Tsdb::open_with(dir.path(), opts()).unwrap());
    let t0 = 200 * 24 * H;
    let alike: Vec<Sample> = ramp(t0, t0 + 6 * H, 15_000)
        .into_iter()
        .map(|s| Sample(s.0, 1.0))
        .collect();
    // Created in reverse label order, one request each, so storage order is not label order.
    for i in (0..30).rev() {
        put(
            &rt,
            &db,
            vec![series("t", &format!("i{i:02}"), alike.clone())],
        );
    }
    db.flush_and_compact(t0 + 2 * 24 * H).unwrap();
    let engine = Engine::new(db.clone(), Duration::from_secs(300), 50_000_000);
    for (q, n) in [
        ("topk(3, count_over_time(t[5m]))", 3),
        ("bottomk(2, max_over_time(t[1h]))", 2),
    ] {
        for step in [300_000, H] {
            let r = engine.range(q, t0 + 2 * H, t0 + 5 * H, step).unwrap();
            let kept: Vec<&str> = r.iter().filter_map(|x| x.labels.get("instance")).collect();
            let want: Vec<String> = (0..n).map(|i| format!("i{i:02}")).collect();
            assert_eq!(kept, want, "{q} step {step}");
            let steps = (3 * H / step + 1) as usize;
            assert!(
                r.iter().all(|x| x.samples.len() == steps),
                "{q} step {step}"
            );
        }
    }
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// What merging means, the slow way: every sample with its write's rank, by time, the
    /// newest write at a timestamp winning unless it is a stale marker.
    fn merged_by_sorting(runs: &[Vec<Sample>]) -> Vec<Sample> {
        let mut all: Vec<(i64, usize, f64)> = Vec::new();
        for (i, r) in runs.iter().enumerate() {
            all.extend(r.iter().map(|s| (s.0, i, s.1)));
        }
        all.sort_by_key(|x| (x.0, x.1));
        let mut out: Vec<Sample> = Vec::new();
        for (t, _, v) in all {
            match out.last_mut() {
                Some(last) if last.0 == t => {
                    if !telltale_common::model::is_stale_marker(v) {
                        last.1 = v;
                    }
                }
                _ => out.push(Sample(t, v)),
            }
        }
        out
    }

    /// Sorted runs of distinct timestamps: overlapping ones, and disjoint ones in any order
    /// (blocks of several windows are listed in the order they were written, not by time).
    fn runs() -> impl Strategy<Value = Vec<Vec<Sample>>> {
        let run = (
            0i64..40,
            proptest::collection::btree_set(0i64..30, 0..12),
            0u8..4,
        )
            .prop_map(|(base, ts, stale)| {
                ts.into_iter()
                    .map(|t| {
                        let v = if t % 4 == i64::from(stale) {
                            f64::from_bits(telltale_common::model::STALE_NAN_BITS)
                        } else {
                            (base * 100 + t) as f64
                        };
                        Sample(base * 10 + t, v)
                    })
                    .collect::<Vec<_>>()
            });
        proptest::collection::vec(run, 0..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn runs_merge_as_sorting_every_sample_would(runs in runs()) {
            let want = merged_by_sorting(&runs);
            let got = merge_runs(runs);
            prop_assert_eq!(
                got.iter().map(|s| (s.0, s.1.to_bits())).collect::<Vec<_>>(),
                want.iter().map(|s| (s.0, s.1.to_bits())).collect::<Vec<_>>()
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever bytes a WAL segment, a block, series.log or the checkpoint hold, start-up
        /// opens the engine (skipping, truncating or quarantining what is damaged) and it
        /// stores and reads new data.
        #[test]
        fn start_up_survives_any_bytes(
            wal in proptest::collection::vec(any::<u8>(), 0..2000),
            blk in proptest::collection::vec(any::<u8>(), 0..2000),
            series_log in proptest::collection::vec(any::<u8>(), 0..500),
            checkpoint in proptest::collection::vec(any::<u8>(), 0..200),
            valid_prefix in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let rt = rt();
            if valid_prefix {
                // A real store first, so the garbage lands after valid records.
                let db = Tsdb::open_with(dir.path(), opts()).unwrap();
                put(&rt, &db, vec![series("a", "x", vec![Sample(now_ms(), 1.0)])]);
                db.flush_and_compact(now_ms()).unwrap();
                put(&rt, &db, vec![series("a", "x", vec![Sample(now_ms() + 1, 2.0)])]);
            }
            let append = |p: &Path, b: &[u8]| {
                let mut f = fs::OpenOptions::new().create(true).append(true).open(p).unwrap();
                std::io::Write::write_all(&mut f, b).unwrap();
            };
            fs::create_dir_all(dir.path().join("log")).unwrap();
            fs::create_dir_all(dir.path().join("blocks")).unwrap();
            append(&crate::durable::segments::segment_path(&dir.path().join("log"), 999), &wal);
            append(&dir.path().join("blocks").join("0000000000000999.blk"), &blk);
            append(&dir.path().join("series.log"), &series_log);
            append(&dir.path().join("checkpoint"), &checkpoint);
            let db = Tsdb::open_with(dir.path(), opts()).unwrap();
            let t = now_ms() + 10;
            put(&rt, &db, vec![series("b", "y", vec![Sample(t, 3.0)])]);
            prop_assert_eq!(all(&db, "b"), vec![Sample(t, 3.0)]);
            let _ = check::check(dir.path()).unwrap();
        }
    }
}

#[test]
fn a_damaged_series_record_keeps_later_ids_aligned() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let t = now_ms();
    {
        let db = Tsdb::open_with(dir.path(), opts()).unwrap();
        for name in ["s0", "s1", "s2"] {
            put(&rt, &db, vec![series(name, "x", vec![Sample(t, 1.0)])]);
        }
        db.flush_and_compact(t).unwrap();
    }
    // Flip a byte inside the second record's payload.
    let p = dir.path().join("series.log");
    let mut b = fs::read(&p).unwrap();
    let frames = files::read_frames(&p).unwrap();
    let first = HEADER_LEN + frames.payloads[0].len();
    b[first + HEADER_LEN + 2] ^= 0xff;
    fs::write(&p, &b).unwrap();
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    assert_eq!(all(&db, "s0").len(), 1);
    assert_eq!(
        all(&db, "s2").len(),
        1,
        "the third series keeps its id and its data"
    );
    assert_eq!(all(&db, "s1").len(), 0);
    assert_eq!(
        all(&db, LOST_SERIES).len(),
        1,
        "s1's samples under the placeholder"
    );
    // New series get fresh ids, not the lost one's.
    put(&rt, &db, vec![series("s3", "x", vec![Sample(t + 1, 1.0)])]);
    assert_eq!(all(&db, "s3").len(), 1);
    assert_eq!(all(&db, "s2").len(), 1);
}

#[test]
fn extreme_timestamps_are_refused_and_counted_never_an_overflow() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    let s = vec![
        Sample(i64::MIN + 1, 1.0),
        Sample(-1, 2.0),
        Sample(i64::MAX - 1, 3.0),
    ];
    let r = put(&rt, &db, vec![series("edge", "x", s)]);
    assert_eq!(r, AppendOutcome::Stored { samples: 1 });
    assert_eq!(db.counters().refused_too_old.load(Ordering::Relaxed), 1);
    assert_eq!(db.counters().refused_too_new.load(Ordering::Relaxed), 1);
    db.flush_and_compact(now_ms()).unwrap();
    db.flush_and_compact(i64::MAX / 2).unwrap();
    let mut text = String::new();
    db.render_metrics(&mut text);
    assert!(
        text.contains("telltale_aggregator_samples_refused_total{reason=\"too_far_in_future\"} 1"),
        "{text}"
    );
}

/// Series created by concurrent appends from the first moment after start-up are defined in
/// the log before any record names them: after a restart every sample is back under its own
/// labels (values carry the series number, so a sample under another series' id would show).
#[test]
fn series_created_concurrently_come_back_under_their_own_labels() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = now_ms();
    {
        let db = std::sync::Arc::new(Tsdb::open_with(dir.path(), opts()).unwrap());
        rt.block_on(async {
            let mut tasks = Vec::new();
            for task in 0..8 {
                let db = db.clone();
                tasks.push(tokio::spawn(async move {
                    for round in 0..20i64 {
                        let s: Vec<SeriesSamples> = (0..5)
                            .map(|k| {
                                let n = task * 1000 + round * 10 + k;
                                series("c", &n.to_string(), vec![Sample(t + round, n as f64)])
                            })
                            .collect();
                        let data = if task % 2 == 0 {
                            AppendData::Series(s)
                        } else {
                            AppendData::RemoteWrite(crate::metrics::remote_write::encode_raw(&s))
                        };
                        db.append(AppendRequest { origin: None, data })
                            .await
                            .unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
    }
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    let got = db
        .select(
            &[Matcher::equal("__name__", "c")],
            i64::MIN,
            i64::MAX,
            1 << 20,
        )
        .unwrap();
    assert_eq!(got.len(), 8 * 20 * 5);
    for s in got {
        let n: f64 = s.labels.get("instance").unwrap().parse().unwrap();
        assert_eq!(s.samples.len(), 1, "{:?}", s.labels);
        assert_eq!(s.samples[0].1, n, "{:?}", s.labels);
    }
    assert_eq!(all(&db, LOST_SERIES).len(), 0);
}

/// A damaged series definition loses the labels, not the samples: they read back under a
/// placeholder, and the ids after it keep their series.
#[test]
fn a_damaged_series_definition_keeps_the_samples_under_a_placeholder() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let t = now_ms();
    {
        let db = Tsdb::open_with(dir.path(), opts()).unwrap();
        put(&rt, &db, vec![series("a", "x", vec![Sample(t, 1.0)])]);
        put(&rt, &db, vec![series("a", "x", vec![Sample(t + 1, 2.0)])]);
        put(&rt, &db, vec![series("b", "x", vec![Sample(t + 2, 3.0)])]);
    }
    let seg = crate::durable::segments::segment_path(&dir.path().join("log"), 1);
    let mut bytes = fs::read(&seg).unwrap();
    let at = record_offsets(&bytes);
    // def(a), a, a, def(b), b: damage a's definition.
    assert_eq!(at.len(), 5, "{at:?}");
    bytes[at[0] + HEADER_LEN + 2] ^= 0xff;
    fs::write(&seg, &bytes).unwrap();
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    assert_eq!(db.recovery.corrupt, 1);
    assert_eq!(all(&db, "a").len(), 0);
    assert_eq!(
        all(&db, LOST_SERIES)
            .iter()
            .map(|s| s.1)
            .collect::<Vec<_>>(),
        vec![1.0, 2.0]
    );
    assert_eq!(
        all(&db, "b").iter().map(|s| s.1).collect::<Vec<_>>(),
        vec![3.0]
    );
    // New series do not take the placeholder's id.
    put(&rt, &db, vec![series("c", "x", vec![Sample(t + 3, 4.0)])]);
    drop(db);
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    assert_eq!(
        all(&db, "c").iter().map(|s| s.1).collect::<Vec<_>>(),
        vec![4.0]
    );
    assert_eq!(all(&db, LOST_SERIES).len(), 2);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            fs::copy(&p, &dest).unwrap();
        }
    }
}

/// A data directory written by release 0.1 (`tests/data/release-0.1`, made by that release's
/// `record_release_dir` test: 26 hours of two series in compacted blocks, a 27th hour, five
/// agent batches with events and a remote_write request in its WAL, whose records carry
/// labels) opens, reads back every sample bit for bit, keeps its batch origins, and takes
/// new writes that survive another restart.
#[test]
fn a_data_directory_of_release_0_1_opens_with_everything_in_it() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/release-0.1"),
        dir.path(),
    );
    let t0: i64 = 1_764_000_000_000;
    let value = |i: usize, k: i64| -> f64 {
        if i == 0 && k == 100 {
            f64::NAN
        } else if i == 0 && k == 200 {
            f64::from_bits(telltale_common::model::STALE_NAN_BITS)
        } else {
            k as f64 * 0.25 + i as f64 * 1000.0
        }
    };
    let check = |db: &Tsdb| {
        for i in 0..2usize {
            let got = db
                .select(
                    &[
                        Matcher::equal("__name__", "rec_series"),
                        Matcher::equal("i", &i.to_string()),
                    ],
                    i64::MIN,
                    i64::MAX,
                    1 << 20,
                )
                .unwrap();
            assert_eq!(got.len(), 1);
            let want: Vec<(i64, u64)> = (0..27 * 360)
                .map(|k| (t0 + k * 10_000 + (k % 7), value(i, k).to_bits()))
                .collect();
            let have: Vec<(i64, u64)> = got[0]
                .samples
                .iter()
                .map(|s| (s.0, s.1.to_bits()))
                .collect();
            assert_eq!(have.len(), want.len(), "series {i}");
            assert!(have == want, "series {i}: samples differ");
        }
        let agent = all(db, "rec_agent");
        assert_eq!(
            agent.iter().map(|s| s.1).collect::<Vec<_>>(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0]
        );
        let rw = all(db, "rec_rw");
        assert_eq!(
            rw.iter().map(|s| s.1).collect::<Vec<_>>(),
            vec![0.5, 1.5, 2.5]
        );
        let ev = db.events(&[], i64::MIN, 100);
        assert_eq!(ev.len(), 5, "{ev:?}");
        assert!(
            ev.iter()
                .all(|e| e.labels.contains(&("instance".into(), "a1".into())))
        );
    };
    {
        let db = Tsdb::open_with(dir.path(), opts()).unwrap();
        assert_eq!(db.recovery.corrupt, 0);
        assert_eq!(db.recovery.quarantined, 0);
        check(&db);
        // The origins of the old records still de-duplicate.
        let again = rt
            .block_on(db.append(agent_req(
                "a1",
                3,
                t0 + 27 * 3_600_000 + 3000,
                &["rec_agent".into()],
            )))
            .unwrap();
        assert_eq!(again, AppendOutcome::Duplicate);
        put(
            &rt,
            &db,
            vec![series(
                "rec_new",
                "x",
                vec![Sample(t0 + 28 * 3_600_000, 42.0)],
            )],
        );
    }
    // New records after old ones, and a cut and compaction over both.
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    check(&db);
    assert_eq!(all(&db, "rec_new"), vec![Sample(t0 + 28 * 3_600_000, 42.0)]);
    db.flush_and_compact(t0 + 80 * 3_600_000).unwrap();
    drop(db);
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    check(&db);
    assert_eq!(all(&db, "rec_new"), vec![Sample(t0 + 28 * 3_600_000, 42.0)]);
}

/// Agent batches go through the cache of label bytes: the same bytes from two agents are two
/// series (each stamped with its sender), a repeated label set finds its series again, and
/// what stamping does (instance replaced, empty values dropped, no name: not stored) holds
/// on the cached path as on the first.
#[test]
fn agent_label_bytes_are_cached_per_agent() {
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let db = Tsdb::open_with(dir.path(), opts()).unwrap();
    let t = now_ms();
    let batch = |agent: &str, seq: u64, v: f64| {
        let encoded = codec::encode_payload(&ClientMessage::Batch(Batch {
            sequence: seq,
            created_ms: t,
            series: vec![
                SeriesSamples {
                    labels: Labels::from_pairs([
                        ("__name__", "m"),
                        ("instance", "liar"),
                        ("x", ""),
                    ]),
                    samples: vec![Sample(t + seq as i64, v)],
                },
                SeriesSamples {
                    labels: Labels::from_pairs([("nameless", "y")]),
                    samples: vec![Sample(t + seq as i64, v)],
                },
            ],
            events: Vec::new(),
            spans: Vec::new(),
            exemplars: Vec::new(),
            logs: Vec::new(),
        }))
        .unwrap();
        AppendRequest {
            origin: Some(Origin {
                agent: agent.into(),
                epoch: 1,
                sequence: seq,
            }),
            data: AppendData::Encoded(encoded),
        }
    };
    for seq in 1..=3 {
        for (agent, v) in [("a", 1.0), ("b", 2.0)] {
            let r = rt
                .block_on(db.append(batch(agent, seq, v * seq as f64)))
                .unwrap();
            assert_eq!(r, AppendOutcome::Stored { samples: 1 });
        }
    }
    let got = db
        .select(&[Matcher::equal("__name__", "m")], i64::MIN, i64::MAX, 1000)
        .unwrap();
    let mut seen: Vec<(Labels, Vec<f64>)> = got
        .into_iter()
        .map(|s| (s.labels, s.samples.iter().map(|x| x.1).collect()))
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let want = |i: &str| {
        Labels::from_pairs([
            ("__name__", "m"),
            ("instance", i),
            ("job", crate::metrics::storage::AGENT_JOB),
        ])
    };
    assert_eq!(
        seen,
        vec![
            (want("a"), vec![1.0, 2.0, 3.0]),
            (want("b"), vec![2.0, 4.0, 6.0])
        ]
    );
    assert_eq!(db.stats().series, 2, "the nameless series is not stored");
}
