use prost::Message;

use super::*;
use crate::trace::hex;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn pb_span(name: &str, trace: u8, span: u8, parent: Option<u8>) -> PbSpan {
    PbSpan {
        trace_id: vec![trace; 16],
        span_id: vec![span; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_250_000_000,
        attributes: vec![
            kv("http.route", Value::String("/api/users".into())),
            kv("http.status_code", Value::Int(500)),
            kv("retry", Value::Bool(true)),
            kv("ratio", Value::Double(0.25)),
            kv(
                "tags",
                Value::Array(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(Value::String("a".into())),
                        },
                        AnyValue {
                            value: Some(Value::Int(2)),
                        },
                    ],
                }),
            ),
            kv("raw", Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef])),
        ],
        events: vec![PbEvent {
            time_unix_nano: 1_700_000_000_100_000_000,
            name: "exception".into(),
            attributes: vec![kv("exception.type", Value::String("Timeout".into()))],
        }],
        links: vec![PbLink {
            trace_id: vec![9; 16],
            span_id: vec![8; 8],
        }],
        status: Some(PbStatus {
            message: "boom".into(),
            code: 2,
        }),
    }
}

fn request(spans: Vec<PbSpan>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", Value::String("checkout".into())),
                    kv("host.name", Value::String("web-1".into())),
                ],
            }),
            scope_spans: vec![ScopeSpans { spans }],
        }],
    }
    .encode_to_vec()
}

#[test]
fn protobuf_spans_decode_with_every_field() {
    let body = request(vec![
        pb_span("GET /api/users", 1, 2, Some(3)),
        pb_span("root", 1, 3, None),
    ]);
    let d = decode_traces(&body, Format::Protobuf).expect("decodes");
    assert_eq!(d.rejected, 0);
    assert_eq!(d.spans.len(), 2);
    let s = &d.spans[0];
    assert_eq!(s.trace_id, [1; 16]);
    assert_eq!(s.span_id, [2; 8]);
    assert_eq!(s.parent, Some([3; 8]));
    assert_eq!(d.spans[1].parent, None);
    assert_eq!(s.service, "checkout");
    assert_eq!(
        s.resource,
        vec![("host.name".to_string(), "web-1".to_string())]
    );
    assert_eq!(s.kind, SpanKind::Server);
    assert_eq!(s.status, SpanStatus::Error);
    assert_eq!(s.status_message, "boom");
    assert_eq!(s.duration_ns(), 250_000_000);
    let attr = |k: &str| {
        s.attributes
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(attr("http.route"), Some("/api/users"));
    assert_eq!(attr("http.status_code"), Some("500"));
    assert_eq!(attr("retry"), Some("true"));
    assert_eq!(attr("ratio"), Some("0.25"));
    assert_eq!(attr("tags"), Some(r#"["a",2]"#));
    assert_eq!(attr("raw"), Some("3q2+7w=="));
    assert_eq!(s.events[0].name, "exception");
    assert_eq!(s.events[0].attributes[0].1, "Timeout");
    assert_eq!(s.links[0].trace_id, [9; 16]);
}

#[test]
fn a_resource_without_a_service_name_is_unknown_service() {
    let body = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans {
                spans: vec![pb_span("x", 1, 1, None)],
            }],
        }],
    }
    .encode_to_vec();
    let d = decode_traces(&body, Format::Protobuf).expect("decodes");
    assert_eq!(d.spans[0].service, "unknown_service");
}

#[test]
fn bad_spans_are_rejected_alone_and_said_why() {
    let mut short = pb_span("short", 1, 1, None);
    short.trace_id = vec![1; 15];
    let zero = pb_span("zero", 1, 0, None);
    let mut backwards = pb_span("backwards", 1, 5, None);
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1;
    let mut bad_parent = pb_span("parent", 1, 6, None);
    bad_parent.parent_span_id = vec![1; 3];
    let body = request(vec![
        short,
        pb_span("good", 2, 2, None),
        zero,
        backwards,
        bad_parent,
    ]);
    let d = decode_traces(&body, Format::Protobuf).expect("decodes");
    assert_eq!(d.spans.len(), 1);
    assert_eq!(d.spans[0].name, "good");
    assert_eq!(d.rejected, 4);
    let why = d.reason.expect("a reason");
    assert!(why.contains("trace id of 15 bytes"), "{why}");
}

/// The shape of opentelemetry-proto's `examples/trace.json`.
#[test]
fn otlp_json_decodes_like_protobuf() {
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[
        {"key":"service.name","value":{"stringValue":"my.service"}}]},
      "scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0"},
        "spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
          "parentSpanId":"EEE19B7EC3C1B173","name":"I'm a server span",
          "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
          "kind":2,"attributes":[
            {"key":"my.span.attr","value":{"stringValue":"some value"}},
            {"key":"n","value":{"intValue":"42"}},
            {"key":"list","value":{"arrayValue":{"values":[{"intValue":"1"},{"stringValue":"b"}]}}},
            {"key":"map","value":{"kvlistValue":{"values":[{"key":"k","value":{"boolValue":true}}]}}}],
          "events":[{"timeUnixNano":"1544712660500000000","name":"ev"}],
          "status":{"code":1}}]}]}]}"#;
    let d = decode_traces(body.as_bytes(), Format::Json).expect("decodes");
    assert_eq!(d.rejected, 0, "{:?}", d.reason);
    let s = &d.spans[0];
    assert_eq!(hex(&s.trace_id), "5b8efff798038103d269b633813fc60c");
    assert_eq!(hex(&s.span_id), "eee19b7ec3c1b174");
    assert_eq!(
        s.parent.map(|p| hex(&p)).as_deref(),
        Some("eee19b7ec3c1b173")
    );
    assert_eq!(s.service, "my.service");
    assert_eq!(s.duration_ns(), 1_000_000_000);
    assert_eq!(s.kind, SpanKind::Server);
    assert_eq!(s.status, SpanStatus::Ok);
    assert_eq!(s.events[0].t_ns, 1_544_712_660_500_000_000);
    let attrs: Vec<(&str, &str)> = s
        .attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        attrs,
        vec![
            ("my.span.attr", "some value"),
            ("n", "42"),
            ("list", r#"[1,"b"]"#),
            ("map", r#"{"k":true}"#),
        ]
    );
    // Not hex, or a time that is not a number: that span alone is rejected.
    let bad = body
        .replace("EEE19B7EC3C1B174", "EEE19B7EC3C1B1ZZ")
        .replace(
            "{\"traceId\"",
            "{\"traceId\":\"00\",\"x\":1},{\"startTimeUnixNano\":\"soon\"},{\"traceId\"",
        );
    let d = decode_traces(bad.as_bytes(), Format::Json).expect("decodes");
    assert_eq!((d.spans.len(), d.rejected), (0, 3), "{:?}", d.reason);
}

/// Random and truncated bodies never panic: they are refused or decode to what they hold.
#[test]
fn hostile_bodies_are_errors_never_panics() {
    let good = request(vec![pb_span("a", 1, 2, None), pb_span("b", 1, 3, Some(2))]);
    for cut in 0..good.len() {
        let _ = decode_traces(&good[..cut], Format::Protobuf);
    }
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for n in 0..3000 {
        let len = (n % 200) + 1;
        let mut body = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            body.push(x as u8);
        }
        // Flipped bytes inside a valid body, and pure noise.
        let mut flipped = good.clone();
        let at = (x as usize) % flipped.len();
        flipped[at] ^= (x >> 8) as u8 | 1;
        let _ = decode_traces(&flipped, Format::Protobuf);
        let _ = decode_traces(&body, Format::Protobuf);
        let _ = decode_traces(&body, Format::Json);
    }
    // Nesting past the decoders' recursion limits is an error, not a stack overflow.
    let mut deep = AnyValue {
        value: Some(Value::String("leaf".into())),
    };
    for _ in 0..200 {
        deep = AnyValue {
            value: Some(Value::Array(ArrayValue { values: vec![deep] })),
        };
    }
    let mut s = pb_span("deep", 1, 2, None);
    s.attributes = vec![KeyValue {
        key: "deep".into(),
        value: Some(deep),
    }];
    assert!(decode_traces(&request(vec![s]), Format::Protobuf).is_err());
    let json = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"attributes":[{{"key":"d","value":{}}}]}}]}}]}}]}}"#,
        "{\"arrayValue\":{\"values\":[".repeat(300)
    );
    assert!(decode_traces(json.as_bytes(), Format::Json).is_err());
    match decode_traces(b"{not json", Format::Json) {
        Err(e) => assert!(e.to_string().contains("malformed OTLP JSON body"), "{e}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn answers_follow_the_protocol() {
    let ok = encode_response(Format::Protobuf, 0, "");
    assert!(ok.is_empty(), "an empty ExportTraceServiceResponse");
    let partial = encode_response(Format::Protobuf, 3, "bad ids");
    let r = ExportTraceServiceResponse::decode(&partial[..]).expect("decodes");
    let p = r.partial_success.expect("partial success");
    assert_eq!((p.rejected_spans, p.error_message.as_str()), (3, "bad ids"));
    assert_eq!(encode_response(Format::Json, 0, ""), b"{}");
    let j: serde_json::Value =
        serde_json::from_slice(&encode_response(Format::Json, 2, "x")).expect("json");
    assert_eq!(j["partialSuccess"]["rejectedSpans"], "2");
    let st = RpcStatus::decode(&encode_status(Format::Protobuf, 3, "no")[..]).expect("status");
    assert_eq!((st.code, st.message.as_str()), (3, "no"));
    assert_eq!(
        Format::from_content_type("application/json; charset=utf-8"),
        Some(Format::Json)
    );
    assert_eq!(
        Format::from_content_type("application/x-protobuf"),
        Some(Format::Protobuf)
    );
    assert_eq!(Format::from_content_type("text/plain"), None);
}

/// Random spans survive encoding and decoding unchanged.
#[test]
fn encoded_spans_decode_to_themselves() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let kinds = [
        SpanKind::Unspecified,
        SpanKind::Internal,
        SpanKind::Server,
        SpanKind::Client,
        SpanKind::Producer,
        SpanKind::Consumer,
    ];
    let statuses = [SpanStatus::Unset, SpanStatus::Ok, SpanStatus::Error];
    let spans: Vec<Span> = (0..300)
        .map(|i| {
            let start = next() >> 2;
            Span {
                trace_id: (next() as u128 | 1).to_be_bytes(),
                span_id: (next() | 1).to_be_bytes(),
                parent: (i % 3 != 0).then(|| (next() | 1).to_be_bytes()),
                service: format!("svc{}", i / 50),
                name: format!("op {}", next() % 7),
                kind: kinds[(next() % 6) as usize],
                start_ns: start,
                end_ns: start + next() % 10_000_000_000,
                status: statuses[(next() % 3) as usize],
                status_message: if i % 7 == 0 {
                    "why".into()
                } else {
                    String::new()
                },
                attributes: vec![
                    ("k".into(), format!("v{}", next() % 100)),
                    ("é".into(), String::new()),
                ],
                resource: vec![("host.name".into(), format!("h{}", i / 100))],
                events: (0..(i % 3))
                    .map(|e| SpanEvent {
                        t_ns: start + e as u64,
                        name: "ev".into(),
                        attributes: vec![("a".into(), "b".into())],
                    })
                    .collect(),
                links: (0..(i % 2))
                    .map(|_| SpanLink {
                        trace_id: [7; 16],
                        span_id: [8; 8],
                    })
                    .collect(),
            }
        })
        .collect();
    let d = decode_traces(&encode_traces(&spans), Format::Protobuf).expect("decodes");
    assert_eq!(d.rejected, 0);
    assert_eq!(d.spans, spans);
}
