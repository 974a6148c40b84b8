//! Every decoder that reads bytes from outside, as fuzz targets: the bodies `cargo fuzz`
//! runs (`tests/fuzz/`, nightly, libFuzzer) and the inputs `tests/tests/decoders.rs` replays
//! on stable (the regression corpus, `tests/fuzz/regressions/<target>/`). A target must never
//! panic, hang or grow without bound: whatever the bytes, a decoder answers or refuses.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use telltale_common::model::{Labels, Sample, SeriesSamples};

/// A target's body.
pub type Target = fn(&[u8]);

/// The targets, by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("wire", wire),
    ("remote_write", remote_write),
    ("chunks", chunks),
    ("data_dir", data_dir),
    ("exposition", exposition),
    ("statsd", statsd),
    ("promql", promql),
    ("rule_files", rule_files),
    ("config", config),
    ("logs", logs),
    ("traces", traces),
];

/// Runs target `name` on `data`; `false` if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match TARGETS.iter().find(|(n, _)| *n == name) {
        Some((_, f)) => {
            f(data);
            true
        }
        None => false,
    }
}

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// The agent ↔ aggregator protocol: frame headers and every message, owned and borrowed.
pub fn wire(data: &[u8]) {
    use telltale_common::codec::{self, HEADER_LEN, Header};
    use telltale_common::wire::{ClientMessage, ClientMessageRef, ServerMessage};
    if let Some(h) = data
        .get(..HEADER_LEN)
        .and_then(|h| <&[u8; HEADER_LEN]>::try_from(h).ok())
    {
        let _ = Header::parse(h, 16 << 20);
    }
    let _ = codec::decode_payload::<ClientMessage>(data);
    let _ = codec::decode_payload::<ServerMessage>(data);
    let _ = codec::decode_borrowed::<ClientMessageRef<'_>>(data);
}

/// Prometheus remote_write bodies (snappy + protobuf).
pub fn remote_write(data: &[u8]) {
    let _ = telltale_aggregator::metrics::remote_write::decode(data);
    // And a valid snappy frame around the bytes, so the protobuf decoder is reached too.
    let framed = snap::raw::Encoder::new()
        .compress_vec(data)
        .unwrap_or_default();
    let _ = telltale_aggregator::metrics::remote_write::decode(&framed);
}

/// Chunk codecs of the metrics and trace stores.
pub fn chunks(data: &[u8]) {
    use telltale_aggregator::metrics::tsdb::chunk;
    for (ints, floats) in [(1, 1), (1, 5), (2, 0)] {
        let _ = chunk::decode(data, ints, floats);
    }
    let (ids, rest) = data.split_at(data.len().min(48));
    let _ = telltale_aggregator::traces::block::chunk::decode(rest, ids, None);
}

/// The files of a metrics data directory that [`data_dir`] fills, in its order.
const DATA_FILES: [&str; 5] = [
    "log/00000000000000000001.seg",
    "series.log",
    "checkpoint",
    "blocks/00000000000000000001.blk",
    "tombstones",
];

/// A whole data directory of the metrics engine from bytes: WAL segment, `series.log`,
/// `checkpoint`, a block and `tombstones`, each but the last after its length (two bytes,
/// little-endian). It opens or refuses; then a query runs over whatever it recovered.
pub fn data_dir(data: &[u8]) {
    use telltale_aggregator::metrics::storage::Querier;
    use telltale_aggregator::metrics::tsdb::{Options, Tsdb};
    let Ok(dir) = tempfile::tempdir() else { return };
    let d = dir.path();
    let mut rest = data;
    for (i, f) in DATA_FILES.iter().enumerate() {
        let take = if i + 1 == DATA_FILES.len() {
            rest.len()
        } else {
            let n = match rest {
                [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
                _ => 0,
            };
            rest = rest.get(2..).unwrap_or_default();
            n.min(rest.len())
        };
        let (part, more) = rest.split_at(take);
        rest = more;
        let p = d.join(f);
        if let Some(parent) = p.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(&p, part);
    }
    let opts = Options {
        maintenance_interval: Duration::from_secs(3600),
        ..Options::default()
    };
    if let Ok(db) = Tsdb::open_with(d, opts)
        && let Ok(m) =
            telltale_aggregator::metrics::promql::selector_matchers(r#"{__name__=~".+"}"#)
    {
        let _ = db.select(&m, i64::MIN, i64::MAX, 1 << 20);
    }
}

/// The exposition formats the agent scrapes: Prometheus text and OpenMetrics.
pub fn exposition(data: &[u8]) {
    use telltale_agent::sources::expfmt::{Dialect, parse};
    let s = text(data);
    let _ = parse(&s, Dialect::Text);
    let _ = parse(&s, Dialect::OpenMetrics);
}

/// StatsD / DogStatsD packets, then a flush of what they made.
pub fn statsd(data: &[u8]) {
    let mut a = telltale_agent::sources::statsd::Aggregator::new(1000);
    a.ingest_packet(data);
    let _ = a.flush(1_700_000_000_000, &[0.5, 0.99], 2);
}

/// PromQL: parsed, then evaluated (instant and range) over a few series.
pub fn promql(data: &[u8]) {
    use telltale_aggregator::metrics::promql::Engine;
    use telltale_aggregator::metrics::storage::memory::MemStorage;
    use telltale_aggregator::metrics::storage::{AppendData, AppendRequest};
    let q = text(data);
    if Engine::parse(&q).is_err() {
        return;
    }
    let m = MemStorage::new();
    let series = ["a", "b"]
        .iter()
        .map(|inst| SeriesSamples {
            labels: Labels::from_pairs([("__name__", "m"), ("instance", *inst), ("le", "1")]),
            samples: (0..20)
                .map(|i| Sample(i * 15_000, (i * i) as f64))
                .collect(),
        })
        .collect();
    let _ = m.append_now(AppendRequest {
        origin: None,
        data: AppendData::Series(series),
    });
    let engine = Engine::new(Arc::new(m), Duration::from_secs(300), 50_000);
    let _ = engine.instant_with_timeout(&q, 200_000, Some(Duration::from_secs(2)));
    let _ = engine.range_with_timeout(&q, 0, 300_000, 15_000, Some(Duration::from_secs(2)));
}

/// Rule, routing, runbook, SLO, detector and dashboard files, and templates.
pub fn rule_files(data: &[u8]) {
    use telltale_aggregator::rules::file::{Lang, parse};
    let s = text(data);
    let f = Path::new("fuzz.yml");
    let _ = parse(f, &s, Duration::from_secs(60), Lang::PromQL);
    let _ = parse(f, &s, Duration::from_secs(60), Lang::LogQL);
    let _ = telltale_aggregator::alerting::config::RoutingConfig::parse(&s);
    let _ = telltale_aggregator::remediate::Runbooks::parse(&s);
    let _ = telltale_aggregator::slo::spec::parse(f, &s);
    let _ = telltale_aggregator::anomaly::live::spec::parse("fuzz.yml", &s);
    let _ = telltale_aggregator::api::ui::parse_dashboard(&s, None);
    let _ = telltale_aggregator::alert::matchers::parse_list(&s);
    if let Ok(t) = telltale_aggregator::alert::template::Template::parse(&s) {
        let labels = Labels::from_pairs([("instance", "a:1")]);
        let q =
            |_: &str| -> Result<Vec<(Labels, f64)>, String> { Ok(vec![(Labels::default(), 1.0)]) };
        let _ = t.render(telltale_aggregator::alert::template::Data {
            name: "fuzz",
            labels: &labels,
            external: &labels,
            value: 1.5,
            external_url: "http://x",
            query: Some(&q),
        });
    }
}

/// The agent's and the aggregator's TOML configuration.
pub fn config(data: &[u8]) {
    use telltale_common::config::parse_toml;
    let s = text(data);
    let f = Path::new("fuzz.toml");
    let _ = parse_toml::<telltale_agent::config::FileConfig>(f, &s);
    let _ = parse_toml::<telltale_aggregator::config::FileConfig>(f, &s);
    let _ = telltale_common::config::parse_bytes(&s);
    let _ = telltale_common::logging::parse_filter(&s);
}

/// Log intake: Loki push (protobuf, JSON), OTLP logs, Fluent Forward, syslog, journald
/// export lines, logfmt, LogQL.
pub fn logs(data: &[u8]) {
    use telltale_common::otlp::Format;
    let _ = telltale_common::lokipush::decode_protobuf(data);
    let _ = telltale_common::lokipush::decode_json(data);
    let _ = telltale_common::otlp::logs::decode_logs(data, Format::Protobuf);
    let _ = telltale_common::otlp::logs::decode_logs(data, Format::Json);
    let _ = telltale_agent::sources::forward::decode(data);
    let s = text(data);
    let _ = telltale_agent::sources::syslog::parse(&s);
    let _ = telltale_agent::sources::journald::parse(&s);
    let _ = telltale_common::logfmt::parse(&s);
    let _ = telltale_common::lokipush::parse_labels(&s);
    let _ = telltale_aggregator::logs::logql::parse(&s);
}

/// Trace and metric intake over OTLP (protobuf and JSON).
pub fn traces(data: &[u8]) {
    use telltale_common::otlp::Format;
    for f in [Format::Protobuf, Format::Json] {
        let _ = telltale_common::otlp::decode_traces(data, f);
        let mut deltas = telltale_common::otlp::metrics::Deltas::new(1000);
        let _ = telltale_common::otlp::metrics::decode_metrics(data, f, &mut deltas);
    }
}

/// Valid inputs of target `name` to start from: what cargo-fuzz's corpus begins with and
/// what the stable suite mutates. The repository's own files where it has them.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = |dir: &str, ext: &str| -> Vec<Vec<u8>> {
        let mut out: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(repo.join(dir))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
            .collect();
        out.sort();
        out.into_iter().map(|(_, b)| b).collect()
    };
    let series = || -> Vec<SeriesSamples> {
        vec![SeriesSamples {
            labels: Labels::from_pairs([("__name__", "up"), ("job", "node")]),
            samples: vec![
                Sample(1_700_000_000_000, 1.0),
                Sample(1_700_000_010_000, 0.0),
            ],
        }]
    };
    let lines = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
    match name {
        "wire" => {
            use telltale_common::wire::{Batch, ClientMessage};
            let batch = ClientMessage::Batch(Batch {
                sequence: 7,
                created_ms: 1_700_000_000_000,
                series: series(),
                events: Vec::new(),
                logs: Vec::new(),
                spans: Vec::new(),
                exemplars: Vec::new(),
            });
            telltale_common::codec::encode_frame(&batch)
                .into_iter()
                .collect()
        }
        "remote_write" => vec![telltale_aggregator::api::remote_write::encode(&series())],
        "chunks" => {
            let ts: Vec<i64> = (0..50).map(|i| 1_700_000_000_000 + i * 10_000).collect();
            let vs: Vec<f64> = (0..50).map(|i| f64::from(i) * 0.25).collect();
            vec![telltale_aggregator::metrics::tsdb::chunk::encode(
                &[&ts],
                &[&vs],
            )]
        }
        "data_dir" => data_dir_seed().into_iter().collect(),
        "exposition" => lines(&[
            "# HELP m_total A counter.\n# TYPE m_total counter\nm_total{a=\"b\"} 1 1700000000000\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 3\nh_sum 4.5\nh_count 3\n# EOF\n",
        ]),
        "statsd" => lines(&["a.b:1|c|#t:v\nlat:3.2|ms|@0.5\ng:+3|g\ns:x|s\nh:2|h|#a,b:c"]),
        "promql" => lines(&[
            "sum by (instance) (rate(m[1m]))",
            "histogram_quantile(0.9, sum by (le) (rate(m[5m])))",
            "m offset 1m > bool 3 or on(instance) vector(1)",
            "topk(1, m) * on(instance) group_left(le) m",
            "max_over_time(deriv(m[1m])[2m:15s]) @ 100",
        ]),
        "rule_files" => {
            let mut v = files("config/rules", "yml");
            v.extend(files("config", "yml"));
            v.extend(files("tests/rules", "yml"));
            v
        }
        "config" => files("config", "toml"),
        "logs" => lines(&[
            r#"{"streams":[{"stream":{"job":"x"},"values":[["1700000000000000000","line level=info"]]}]}"#,
            "<34>1 2003-10-11T22:14:15.003Z host app 1 ID47 [x@1 a=\"b\"] message",
            "<13>Oct 11 22:14:15 host app[1]: hi",
            "a=1 b=\"two words\" c",
            "sum by (level) (count_over_time({job=\"x\"} |= \"err\" | logfmt [5m]))",
        ]),
        "traces" => lines(&[
            r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000100000000","status":{"code":2}}]}]}]}"#,
        ]),
        _ => Vec::new(),
    }
}

/// A data directory written by the engine, packed as [`data_dir`] reads it.
fn data_dir_seed() -> Option<Vec<u8>> {
    use telltale_aggregator::metrics::storage::{AppendData, AppendRequest, Appender};
    use telltale_aggregator::metrics::tsdb::{Options, Tsdb};
    let dir = tempfile::tempdir().ok()?;
    {
        let db = Tsdb::open_with(
            dir.path(),
            Options {
                maintenance_interval: Duration::from_secs(3600),
                ..Options::default()
            },
        )
        .ok()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let now = telltale_common::model::now_ms();
        let series = vec![SeriesSamples {
            labels: Labels::from_pairs([("__name__", "m"), ("i", "1")]),
            samples: (0..30)
                .map(|k| Sample(now - 600_000 + k * 10_000, k as f64))
                .collect(),
        }];
        rt.block_on(db.append(AppendRequest {
            origin: None,
            data: AppendData::Series(series),
        }))
        .ok()?;
    }
    let mut out = Vec::new();
    for (i, f) in DATA_FILES.iter().enumerate() {
        let mut b = std::fs::read(dir.path().join(f)).unwrap_or_default();
        b.truncate(usize::from(u16::MAX));
        if i + 1 < DATA_FILES.len() {
            out.extend_from_slice(&(b.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(&b);
    }
    Some(out)
}
