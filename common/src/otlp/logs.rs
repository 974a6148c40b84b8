//! OTLP logs (`ExportLogsServiceRequest`), decoded into [`LogRecord`]s: protobuf or
//! OTLP/JSON, as for traces. A record's body is its line (a string as is, other values as
//! JSON); its trace and span ids, when set, are kept (how logs join their traces).

use super::{AnyValue, Format, KeyValue, OtlpError, Resource, any_text, pairs, service_of};
use crate::trace::{SpanId, TraceId};

/// One log record.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// `service.name` of its resource (`unknown_service` when absent).
    pub service: String,
    /// When (ns since the epoch): the record's time, else when it was observed.
    pub t_ns: u64,
    /// `error`, `warn`, `info`, `debug` or `unknown`, from the severity number (or text).
    pub level: &'static str,
    /// The body.
    pub line: String,
    /// Its attributes.
    pub attributes: Vec<(String, String)>,
    /// The trace it was written in.
    pub trace_id: Option<TraceId>,
    /// The span it was written in.
    pub span_id: Option<SpanId>,
}

/// What a request held.
#[derive(Debug, Default)]
pub struct DecodedLogs {
    /// The records.
    pub records: Vec<LogRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExportLogsServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_logs: Vec<ResourceLogs>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceLogs {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_logs: Vec<ScopeLogs>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScopeLogs {
    #[prost(message, repeated, tag = "2")]
    log_records: Vec<PbLogRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbLogRecord {
    #[prost(fixed64, tag = "1")]
    time_unix_nano: u64,
    #[prost(int32, tag = "2")]
    severity_number: i32,
    #[prost(string, tag = "3")]
    severity_text: String,
    #[prost(message, optional, tag = "5")]
    body: Option<AnyValue>,
    #[prost(message, repeated, tag = "6")]
    attributes: Vec<KeyValue>,
    #[prost(bytes = "vec", tag = "9")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "10")]
    span_id: Vec<u8>,
    #[prost(fixed64, tag = "11")]
    observed_time_unix_nano: u64,
}

/// The level of an OTLP severity: the number's range (1–4 trace, 5–8 debug, 9–12 info,
/// 13–16 warn, 17–24 error and fatal), else the text.
fn level(number: i32, text: &str) -> &'static str {
    match number {
        1..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=24 => "error",
        _ => match text.to_ascii_lowercase().as_str() {
            "trace" | "debug" => "debug",
            "info" | "information" | "notice" => "info",
            "warn" | "warning" => "warn",
            "error" | "fatal" | "critical" | "crit" | "err" => "error",
            _ => "unknown",
        },
    }
}

fn id<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    let a: [u8; N] = b.try_into().ok()?;
    (a != [0u8; N]).then_some(a)
}

#[allow(clippy::too_many_arguments)]
fn record(
    service: &str,
    time: u64,
    observed: u64,
    level: &'static str,
    line: String,
    attributes: Vec<(String, String)>,
    trace_id: &[u8],
    span_id: &[u8],
) -> LogRecord {
    LogRecord {
        service: service.to_string(),
        t_ns: if time != 0 { time } else { observed },
        level,
        line,
        attributes,
        trace_id: id(trace_id),
        span_id: id(span_id),
    }
}

/// Decodes an `ExportLogsServiceRequest`. A record without a time (and no observed time)
/// gets 0: the caller stamps it.
pub fn decode_logs(body: &[u8], format: Format) -> Result<DecodedLogs, OtlpError> {
    let mut out = DecodedLogs::default();
    match format {
        Format::Protobuf => {
            use prost::Message;
            let req = ExportLogsServiceRequest::decode(body).map_err(|e| OtlpError::Malformed {
                format: "protobuf",
                reason: e.to_string(),
            })?;
            for rl in req.resource_logs {
                let (service, _) =
                    service_of(pairs(rl.resource.map(|r| r.attributes).unwrap_or_default()));
                for sl in rl.scope_logs {
                    for r in sl.log_records {
                        out.records.push(record(
                            &service,
                            r.time_unix_nano,
                            r.observed_time_unix_nano,
                            level(r.severity_number, &r.severity_text),
                            any_text(r.body),
                            pairs(r.attributes),
                            &r.trace_id,
                            &r.span_id,
                        ));
                    }
                }
            }
        }
        Format::Json => {
            let req: json::Request =
                serde_json::from_slice(body).map_err(|e| OtlpError::Malformed {
                    format: "JSON",
                    reason: e.to_string(),
                })?;
            for rl in req.resource_logs {
                let (service, _) = service_of(super::json::pairs(
                    rl.resource.map(|r| r.attributes).unwrap_or_default(),
                ));
                for sl in rl.scope_logs {
                    for r in sl.log_records {
                        out.records.push(record(
                            &service,
                            super::json::u64_or_zero(&r.time_unix_nano),
                            super::json::u64_or_zero(&r.observed_time_unix_nano),
                            level(r.severity_number, &r.severity_text),
                            json::body(&r.body),
                            super::json::pairs(r.attributes),
                            &super::json::id_bytes(&r.trace_id),
                            &super::json::id_bytes(&r.span_id),
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}

mod json {
    use serde::Deserialize;
    use serde_json::Value as J;

    use super::super::json::{Attrs, KeyValue, text};

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    pub(super) struct Request {
        pub(super) resource_logs: Vec<ResourceLogs>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    pub(super) struct ResourceLogs {
        pub(super) resource: Option<Attrs>,
        pub(super) scope_logs: Vec<ScopeLogs>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    pub(super) struct ScopeLogs {
        pub(super) log_records: Vec<Record>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    pub(super) struct Record {
        pub(super) time_unix_nano: J,
        pub(super) observed_time_unix_nano: J,
        pub(super) severity_number: i32,
        pub(super) severity_text: String,
        pub(super) body: J,
        pub(super) attributes: Vec<KeyValue>,
        pub(super) trace_id: String,
        pub(super) span_id: String,
    }

    /// The body `AnyValue` as a line.
    pub(super) fn body(v: &J) -> String {
        text(v)
    }
}

/// The answer to an accepted logs request (`ExportLogsServiceResponse`).
pub fn encode_logs_response(format: Format, message: &str) -> Vec<u8> {
    super::encode_partial(format, "rejectedLogRecords", 0, message)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::super::Value;
    use super::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::String(v.into())),
            }),
        }
    }

    #[test]
    fn protobuf_and_json_logs_decode_with_levels_and_trace_ids() {
        let body = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "billing")],
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![
                        PbLogRecord {
                            time_unix_nano: 5,
                            severity_number: 17,
                            body: Some(AnyValue {
                                value: Some(Value::String("card declined".into())),
                            }),
                            attributes: vec![kv("order", "7")],
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            ..Default::default()
                        },
                        PbLogRecord {
                            observed_time_unix_nano: 9,
                            severity_text: "Warning".into(),
                            body: Some(AnyValue {
                                value: Some(Value::Int(42)),
                            }),
                            trace_id: vec![0; 16],
                            ..Default::default()
                        },
                    ],
                }],
            }],
        }
        .encode_to_vec();
        let d = decode_logs(&body, Format::Protobuf).expect("decodes");
        assert_eq!(d.records.len(), 2);
        let (a, b) = (&d.records[0], &d.records[1]);
        assert_eq!(
            (a.service.as_str(), a.t_ns, a.level),
            ("billing", 5, "error")
        );
        assert_eq!(a.line, "card declined");
        assert_eq!(a.trace_id, Some([1; 16]));
        assert_eq!(a.span_id, Some([2; 8]));
        assert_eq!((b.t_ns, b.level, b.line.as_str()), (9, "warn", "42"));
        assert_eq!(b.trace_id, None, "an all-zero id is no id");
        let json = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
          "scopeLogs":[{"logRecords":[{"timeUnixNano":"1700000000000000000","severityNumber":9,
            "body":{"stringValue":"hello"},"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
            "attributes":[{"key":"user","value":{"stringValue":"u1"}}]}]}]}]}"#;
        let d = decode_logs(json.as_bytes(), Format::Json).expect("decodes");
        let r = &d.records[0];
        assert_eq!(
            (r.service.as_str(), r.level, r.line.as_str()),
            ("api", "info", "hello")
        );
        assert_eq!(r.t_ns, 1_700_000_000_000_000_000);
        assert_eq!(r.attributes, vec![("user".to_string(), "u1".to_string())]);
        assert!(r.trace_id.is_some() && r.span_id.is_some());
        assert!(decode_logs(b"\x0a\xff", Format::Protobuf).is_err());
        assert!(decode_logs(b"[", Format::Json).is_err());
    }
}
