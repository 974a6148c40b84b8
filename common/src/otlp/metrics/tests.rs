use prost::Message;

use super::super::{AnyValue, Value};
use super::*;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::String(v.into())),
        }),
    }
}

fn point(v: f64, attrs: Vec<KeyValue>) -> NumberPoint {
    NumberPoint {
        attributes: attrs,
        time_unix_nano: 1_700_000_000_123_000_000,
        value: Some(Number::Double(v)),
    }
}

fn every_kind() -> Vec<Metric> {
    vec![
        Metric {
            name: "http.server.requests".into(),
            unit: "1".into(),
            data: Some(Data::Sum(Sum {
                data_points: vec![point(42.0, vec![kv("http.route", "/pay")])],
                temporality: 2,
                monotonic: true,
            })),
        },
        Metric {
            name: "queue.depth".into(),
            unit: "1".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: vec![NumberPoint {
                    attributes: vec![],
                    time_unix_nano: 1_700_000_000_123_000_000,
                    value: Some(Number::Int(7)),
                }],
            })),
        },
        Metric {
            name: "http.server.duration".into(),
            unit: "s".into(),
            data: Some(Data::Histogram(Histogram {
                data_points: vec![HistogramPoint {
                    attributes: vec![kv("1code", "200")],
                    time_unix_nano: 1_700_000_000_123_000_000,
                    count: 6,
                    sum: Some(1.5),
                    bucket_counts: vec![1, 2, 3],
                    explicit_bounds: vec![0.1, 0.5],
                }],
                temporality: 2,
            })),
        },
        Metric {
            name: "rpc.latency".into(),
            unit: "ms".into(),
            data: Some(Data::Summary(Summary {
                data_points: vec![SummaryPoint {
                    attributes: vec![],
                    time_unix_nano: 1_700_000_000_123_000_000,
                    count: 10,
                    sum: 55.0,
                    quantile_values: vec![Quantile {
                        quantile: 0.99,
                        value: 9.5,
                    }],
                }],
            })),
        },
        Metric {
            name: "deltas".into(),
            unit: String::new(),
            data: Some(Data::Sum(Sum {
                data_points: vec![point(1.0, vec![]), point(2.0, vec![])],
                temporality: DELTA,
                monotonic: true,
            })),
        },
    ]
}

/// [`every_kind`] in OTLP/JSON as an SDK writes it (64-bit integers as strings).
const EVERY_KIND_JSON: &str = r#"{"resourceMetrics":[{"resource":{"attributes":[
  {"key":"service.name","value":{"stringValue":"shop"}},{"key":"service.namespace","value":{"stringValue":"prod"}}]},
 "scopeMetrics":[{"scope":{"name":"x"},"metrics":[
  {"name":"http.server.requests","unit":"1","sum":{"aggregationTemporality":2,"isMonotonic":true,
    "dataPoints":[{"attributes":[{"key":"http.route","value":{"stringValue":"/pay"}}],"timeUnixNano":"1700000000123000000","asDouble":42}]}},
  {"name":"queue.depth","unit":"1","gauge":{"dataPoints":[{"timeUnixNano":"1700000000123000000","asInt":"7"}]}},
  {"name":"http.server.duration","unit":"s","histogram":{"aggregationTemporality":2,"dataPoints":[
    {"attributes":[{"key":"1code","value":{"stringValue":"200"}}],"timeUnixNano":"1700000000123000000",
     "count":"6","sum":1.5,"bucketCounts":["1","2","3"],"explicitBounds":[0.1,0.5]}]}},
  {"name":"rpc.latency","unit":"ms","summary":{"dataPoints":[{"timeUnixNano":"1700000000123000000",
    "count":"10","sum":55,"quantileValues":[{"quantile":0.99,"value":9.5}]}]}},
  {"name":"deltas","sum":{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[
    {"timeUnixNano":"1700000000123000000","asDouble":1},{"timeUnixNano":"1700000000123000000","asDouble":2}]}}
 ]}]}]}"#;

/// The same metrics in protobuf and in OTLP/JSON give the same series; bad numbers in
/// JSON are errors that name them.
#[test]
fn json_and_protobuf_give_the_same_series() {
    let body = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "shop"), kv("service.namespace", "prod")],
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: every_kind(),
            }],
        }],
    }
    .encode_to_vec();
    let pb = decode_metrics(&body, Format::Protobuf, &mut Deltas::new(10)).expect("pb");
    let js = decode_metrics(
        EVERY_KIND_JSON.as_bytes(),
        Format::Json,
        &mut Deltas::new(10),
    )
    .expect("json");
    assert_eq!(pb.series.len(), 12);
    assert_eq!(pb.series, js.series);
    assert_eq!(pb.rejected, js.rejected);
    for (bad, names) in [
        (
            r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[{"asInt":"seven"}]}}]}]}]}"#,
            "\"seven\"",
        ),
        (
            r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"h","histogram":{"dataPoints":[{"count":"-1"}]}}]}]}]}"#,
            "\"-1\"",
        ),
        (
            r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[{"asDouble":"lots"}]}}]}]}]}"#,
            "\"lots\"",
        ),
        (r#"{"resourceMetrics":"#, "EOF"),
    ] {
        match decode_metrics(bad.as_bytes(), Format::Json, &mut Deltas::new(10)) {
            Err(OtlpError::Malformed { format, reason }) => {
                assert_eq!(format, "JSON");
                assert!(reason.contains(names), "{reason}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    // Doubles the protobuf JSON mapping writes as strings.
    let inf = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":[{"asDouble":"Infinity"}]}}]}]}]}"#;
    let d = decode_metrics(inf.as_bytes(), Format::Json, &mut Deltas::new(1)).expect("inf");
    assert_eq!(d.series[0].samples[0].1, f64::INFINITY);
}

#[test]
fn every_kind_converts_like_prometheus_expects() {
    let metrics = every_kind();
    let body = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "shop"), kv("service.namespace", "prod")],
            }),
            scope_metrics: vec![ScopeMetrics { metrics }],
        }],
    }
    .encode_to_vec();
    let d = decode_metrics(&body, Format::Protobuf, &mut Deltas::new(10)).expect("decodes");
    let got: Vec<String> = d
        .series
        .iter()
        .map(|s| {
            let rest: Vec<String> = s
                .labels
                .iter()
                .filter(|(k, _)| *k != "__name__")
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            let name = s.labels.metric_name().unwrap_or("");
            format!("{name}{{{}}} {}", rest.join(", "), s.samples[0].1)
        })
        .collect();
    let has = |want: &str| got.iter().any(|g| g == want);
    for want in [
        r#"http_server_requests_total{http_route="/pay", job="prod/shop"} 42"#,
        r#"queue_depth_ratio{job="prod/shop"} 7"#,
        r#"http_server_duration_seconds_bucket{_1code="200", job="prod/shop", le="0.1"} 1"#,
        r#"http_server_duration_seconds_bucket{_1code="200", job="prod/shop", le="0.5"} 3"#,
        r#"http_server_duration_seconds_bucket{_1code="200", job="prod/shop", le="+Inf"} 6"#,
        r#"http_server_duration_seconds_sum{_1code="200", job="prod/shop"} 1.5"#,
        r#"http_server_duration_seconds_count{_1code="200", job="prod/shop"} 6"#,
        r#"rpc_latency_milliseconds{job="prod/shop", quantile="0.99"} 9.5"#,
        r#"rpc_latency_milliseconds_count{job="prod/shop"} 10"#,
    ] {
        assert!(has(want), "{want} not in {got:#?}");
    }
    assert_eq!(d.series[0].samples[0].0, 1_700_000_000_123);
    // Two delta points of one series: a running total.
    let deltas: Vec<f64> = d
        .series
        .iter()
        .filter(|s| s.labels.metric_name() == Some("deltas_total"))
        .map(|s| s.samples[0].1)
        .collect();
    assert_eq!(deltas, vec![1.0, 3.0]);
    assert_eq!(d.rejected, 0);
    let mut none = Deltas::new(10);
    assert!(decode_metrics(b"not json", Format::Json, &mut none).is_err());
    assert!(decode_metrics(&[0x0a, 0xff], Format::Protobuf, &mut none).is_err());
}

fn request(metrics: Vec<Metric>) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: None,
            scope_metrics: vec![ScopeMetrics { metrics }],
        }],
    }
    .encode_to_vec()
}

fn value(d: &DecodedMetrics, name: &str, le: Option<&str>) -> Option<f64> {
    d.series
        .iter()
        .find(|s| {
            s.labels.metric_name() == Some(name) && le.is_none_or(|l| s.labels.get("le") == Some(l))
        })
        .map(|s| s.samples[0].1)
}

/// Exponential histograms become `le` buckets that count exactly the values at or below
/// each bound: random values bucketed as OTLP's spec says (index `ceil(log2(v)·2^s) − 1`),
/// at several scales, negative and zero values too.
#[test]
fn exponential_histograms_become_le_buckets_that_count_right() {
    let mut x = 0x9e37_79b9_u64;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    for scale in [-2, 0, 1, 3] {
        let values: Vec<f64> = (0..400)
            .map(|i| match i % 10 {
                0 => 0.0,
                1 | 2 => -(10f64.powf(rnd() * 5.0 - 2.0)),
                _ => 10f64.powf(rnd() * 6.0 - 3.0),
            })
            .collect();
        let index = |v: f64| ((v.abs().log2() * f64::from(scale).exp2()).ceil() as i64) - 1;
        let (mut pos, mut neg) = (Vec::<(i64, u64)>::new(), Vec::<(i64, u64)>::new());
        for &v in values.iter().filter(|v| **v != 0.0) {
            let list = if v > 0.0 { &mut pos } else { &mut neg };
            list.push((index(v), 1));
        }
        let to_buckets = |list: &[(i64, u64)]| {
            let lo = list.iter().map(|b| b.0).min().unwrap_or(0);
            let hi = list.iter().map(|b| b.0).max().unwrap_or(0);
            let mut counts = vec![0u64; (hi - lo + 1) as usize];
            for (k, n) in list {
                counts[(k - lo) as usize] += n;
            }
            Buckets {
                offset: lo as i32,
                bucket_counts: counts,
            }
        };
        let p = ExponentialPoint {
            attributes: vec![],
            time_unix_nano: 1,
            count: values.len() as u64,
            sum: Some(values.iter().sum()),
            scale,
            zero_count: values.iter().filter(|v| **v == 0.0).count() as u64,
            positive: Some(to_buckets(&pos)),
            negative: Some(to_buckets(&neg)),
            zero_threshold: 0.0,
        };
        let h = explicit(&p).expect("converts");
        let mut cumulative = 0;
        for (i, le) in h.bounds.iter().enumerate() {
            cumulative += h.counts[i];
            // Values within a hair of a bound may fall either side of it.
            let near = values
                .iter()
                .any(|v| ((v - le) / le.abs().max(1e-300)).abs() < 1e-9);
            if near {
                continue;
            }
            let want = values.iter().filter(|v| **v <= *le).count() as u64;
            assert_eq!(cumulative, want, "scale {scale}, le {le}");
        }
        assert_eq!(cumulative + h.counts[h.bounds.len()], values.len() as u64);
        assert!(h.bounds.windows(2).all(|w| w[0] < w[1]), "bounds ascend");
    }
    let odd = ExponentialPoint {
        scale: 21,
        ..ExponentialPoint::default()
    };
    assert!(explicit(&odd).expect_err("scale").contains("scale 21"));
    let wide = ExponentialPoint {
        positive: Some(Buckets {
            offset: 0,
            bucket_counts: vec![1; 400],
        }),
        ..ExponentialPoint::default()
    };
    assert!(explicit(&wide).expect_err("wide").contains("400 buckets"));
}

/// Delta sums and histograms become cumulative across requests, per series; a histogram
/// whose bounds change starts again; past the cap new delta series are rejected while
/// known ones go on.
#[test]
fn deltas_add_up_across_requests_like_cumulative_series() {
    let sum = |v: f64, route: &str| Metric {
        name: "requests".into(),
        unit: String::new(),
        data: Some(Data::Sum(Sum {
            data_points: vec![point(v, vec![kv("route", route)])],
            temporality: DELTA,
            monotonic: true,
        })),
    };
    let hist = |counts: Vec<u64>, bounds: Vec<f64>, total: f64| Metric {
        name: "latency".into(),
        unit: "s".into(),
        data: Some(Data::Histogram(Histogram {
            data_points: vec![HistogramPoint {
                attributes: vec![],
                time_unix_nano: 1_700_000_000_000_000_000,
                count: counts.iter().sum(),
                sum: Some(total),
                bucket_counts: counts,
                explicit_bounds: bounds,
            }],
            temporality: DELTA,
        })),
    };
    let mut deltas = Deltas::new(3);
    let mut totals = Vec::new();
    let mut rng = 0x2545_f491u64;
    let mut want = [0.0f64; 2];
    let mut want_buckets = [0u64; 3];
    for round in 0..50 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let (a, b) = ((rng % 7) as f64, (rng % 5) as f64);
        want[0] += a;
        want[1] += b;
        let counts = vec![rng % 3, rng % 4, rng % 2];
        for (w, c) in want_buckets.iter_mut().zip(&counts) {
            *w += c;
        }
        let d = decode_metrics(
            &request(vec![
                sum(a, "/a"),
                sum(b, "/b"),
                hist(counts, vec![0.1, 1.0], 0.5),
            ]),
            Format::Protobuf,
            &mut deltas,
        )
        .expect("decodes");
        assert_eq!(d.rejected, 0, "round {round}: {:?}", d.reason);
        let of = |route: &str| {
            d.series
                .iter()
                .find(|s| s.labels.get("route") == Some(route))
                .map(|s| s.samples[0].1)
        };
        assert_eq!((of("/a"), of("/b")), (Some(want[0]), Some(want[1])));
        assert_eq!(
            value(&d, "latency_seconds_bucket", Some("+Inf")),
            Some(want_buckets.iter().sum::<u64>() as f64)
        );
        assert_eq!(
            value(&d, "latency_seconds_bucket", Some("0.1")),
            Some(want_buckets[0] as f64)
        );
        assert_eq!(
            value(&d, "latency_seconds_sum", None),
            Some(0.5 * (round + 1) as f64)
        );
        totals.push(value(&d, "latency_seconds_count", None));
    }
    assert!(totals.windows(2).all(|w| w[0] <= w[1]), "never decreases");
    // New bounds: the histogram starts again from this point.
    let d = decode_metrics(
        &request(vec![hist(vec![2, 1], vec![5.0], 1.0)]),
        Format::Protobuf,
        &mut deltas,
    )
    .expect("decodes");
    assert_eq!(value(&d, "latency_seconds_bucket", Some("+Inf")), Some(3.0));
    assert_eq!(value(&d, "latency_seconds_bucket", Some("5")), Some(2.0));
    // Three series kept (the cap): a fourth is rejected, the known ones go on.
    let d = decode_metrics(
        &request(vec![sum(1.0, "/c"), sum(1.0, "/a")]),
        Format::Protobuf,
        &mut deltas,
    )
    .expect("decodes");
    assert_eq!(d.rejected, 1);
    assert!(d.reason.expect("why").contains("at most 3 delta series"));
    assert_eq!(d.series.len(), 1);
    assert_eq!(d.series[0].samples[0].1, want[0] + 1.0);
    assert_eq!(deltas.len(), 3);
}
