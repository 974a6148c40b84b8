//! OTLP traces (`ExportTraceServiceRequest`), decoded into [`Span`]s: protobuf
//! (`application/x-protobuf`, what the OpenTelemetry SDKs send by default) or OTLP/JSON
//! (`application/json`: lowerCamelCase fields, ids in hex, 64-bit integers as strings or
//! numbers, enums as numbers), and the answers the protocol expects.
//!
//! Only the messages and fields spans need are declared; protobuf skips the others. A span
//! that cannot be kept (an id of the wrong length or all zero, an end before its start) is
//! rejected alone and counted; the rest of the request is kept, and the answer's
//! `partial_success` says how many were rejected and why (OTLP's partial success).

use crate::trace::{Span, SpanEvent, SpanId, SpanKind, SpanLink, SpanStatus, TraceId};

/// Largest request body, decompressed.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// How a body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

impl Format {
    /// From a `Content-Type` header: JSON when it says so, protobuf for
    /// `application/x-protobuf` (and `application/protobuf`); anything else is `None`.
    pub fn from_content_type(ct: &str) -> Option<Format> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json" => Some(Format::Json),
            "application/x-protobuf" | "application/protobuf" => Some(Format::Protobuf),
            _ => None,
        }
    }

    /// The `Content-Type` of answers in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Protobuf => "application/x-protobuf",
        }
    }
}

/// Why a request is refused whole (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The body is not an `ExportTraceServiceRequest`.
    #[error("malformed OTLP {format} body: {reason}")]
    Malformed {
        /// `protobuf` or `JSON`.
        format: &'static str,
        /// What the decoder said.
        reason: String,
    },
}

/// What a request held.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The spans kept.
    pub spans: Vec<Span>,
    /// Spans rejected.
    pub rejected: u64,
    /// Why the first rejected span was.
    pub reason: Option<String>,
}

impl Decoded {
    fn reject(&mut self, why: String) {
        self.rejected += 1;
        if self.reason.is_none() {
            self.reason = Some(why);
        }
    }
}

// --- protobuf (opentelemetry-proto: collector/trace/v1, trace/v1, common/v1, resource/v1) ---

#[derive(Clone, PartialEq, prost::Message)]
struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Resource {
    #[prost(message, repeated, tag = "1")]
    attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScopeSpans {
    #[prost(message, repeated, tag = "2")]
    spans: Vec<PbSpan>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbSpan {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    name: String,
    #[prost(int32, tag = "6")]
    kind: i32,
    #[prost(fixed64, tag = "7")]
    start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    attributes: Vec<KeyValue>,
    #[prost(message, repeated, tag = "11")]
    events: Vec<PbEvent>,
    #[prost(message, repeated, tag = "13")]
    links: Vec<PbLink>,
    #[prost(message, optional, tag = "15")]
    status: Option<PbStatus>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbEvent {
    #[prost(fixed64, tag = "1")]
    time_unix_nano: u64,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, repeated, tag = "3")]
    attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbLink {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PbStatus {
    #[prost(string, tag = "2")]
    message: String,
    #[prost(int32, tag = "3")]
    code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct KeyValue {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AnyValue {
    #[prost(oneof = "Value", tags = "1, 2, 3, 4, 5, 6, 7")]
    value: Option<Value>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Value {
    #[prost(string, tag = "1")]
    String(String),
    #[prost(bool, tag = "2")]
    Bool(bool),
    #[prost(int64, tag = "3")]
    Int(i64),
    #[prost(double, tag = "4")]
    Double(f64),
    #[prost(message, tag = "5")]
    Array(ArrayValue),
    #[prost(message, tag = "6")]
    KvList(KeyValueList),
    #[prost(bytes = "vec", tag = "7")]
    Bytes(Vec<u8>),
}

#[derive(Clone, PartialEq, prost::Message)]
struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    values: Vec<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct KeyValueList {
    #[prost(message, repeated, tag = "1")]
    values: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExportTraceServiceResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected_spans: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// `google.rpc.Status`, the body of OTLP/HTTP error answers.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// An `AnyValue` as JSON, for values that are arrays or maps.
fn any_json(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        None => J::Null,
        Some(Value::String(s)) => J::String(s.clone()),
        Some(Value::Bool(b)) => J::Bool(*b),
        Some(Value::Int(i)) => J::from(*i),
        Some(Value::Double(d)) => serde_json::Number::from_f64(*d).map_or(J::Null, J::Number),
        Some(Value::Array(a)) => J::Array(a.values.iter().map(any_json).collect()),
        Some(Value::KvList(l)) => J::Object(
            l.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(J::Null, any_json)))
                .collect(),
        ),
        Some(Value::Bytes(b)) => J::String(base64_encode(b)),
    }
}

fn any_text(v: Option<AnyValue>) -> String {
    match v.and_then(|v| v.value) {
        None => String::new(),
        Some(Value::String(s)) => s,
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::Double(d)) => d.to_string(),
        Some(Value::Bytes(b)) => base64_encode(&b),
        Some(other) => any_json(&AnyValue { value: Some(other) }).to_string(),
    }
}

fn pairs(kvs: Vec<KeyValue>) -> Vec<(String, String)> {
    kvs.into_iter()
        .map(|kv| (kv.key, any_text(kv.value)))
        .collect()
}

/// Standard base64 with padding (RFC 4648; OTLP's bytes as JSON, basic authentication).
pub fn base64_encode(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                s.push(A[(n >> shift) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The parts of a span both encodings share, before its ids are checked.
struct RawSpan {
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    name: String,
    kind: i32,
    start: u64,
    end: u64,
    attributes: Vec<(String, String)>,
    events: Vec<SpanEvent>,
    links: Vec<(Vec<u8>, Vec<u8>)>,
    status: i32,
    status_message: String,
}

fn id<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    let a: [u8; N] = b.try_into().ok()?;
    (a != [0u8; N]).then_some(a)
}

/// Checks a span's ids and times; `Err` says why it is rejected.
fn finish(raw: RawSpan, service: &str, resource: &[(String, String)]) -> Result<Span, String> {
    let trace_id: TraceId = id(&raw.trace_id).ok_or_else(|| {
        format!(
            "span {:?}: trace id of {} bytes (16, not all zero, expected)",
            raw.name,
            raw.trace_id.len()
        )
    })?;
    let span_id: SpanId = id(&raw.span_id).ok_or_else(|| {
        format!(
            "span {:?}: span id of {} bytes (8, not all zero, expected)",
            raw.name,
            raw.span_id.len()
        )
    })?;
    let parent = match raw.parent.len() {
        0 => None,
        8 => id::<8>(&raw.parent),
        n => {
            return Err(format!(
                "span {:?}: parent span id of {n} bytes (8 expected)",
                raw.name
            ));
        }
    };
    if raw.end < raw.start {
        return Err(format!("span {:?} ends before it starts", raw.name));
    }
    Ok(Span {
        trace_id,
        span_id,
        parent,
        service: service.to_string(),
        name: raw.name,
        kind: SpanKind::from_otlp(raw.kind),
        start_ns: raw.start,
        end_ns: raw.end,
        status: SpanStatus::from_otlp(raw.status),
        status_message: raw.status_message,
        attributes: raw.attributes,
        resource: resource.to_vec(),
        events: raw.events,
        links: raw
            .links
            .into_iter()
            .filter_map(|(t, s)| {
                Some(SpanLink {
                    trace_id: id(&t)?,
                    span_id: id(&s)?,
                })
            })
            .collect(),
    })
}

/// `service.name` out of a resource's attributes, and the rest.
fn service_of(mut attrs: Vec<(String, String)>) -> (String, Vec<(String, String)>) {
    let service = match attrs.iter().position(|(k, _)| k == "service.name") {
        Some(i) => attrs.swap_remove(i).1,
        None => "unknown_service".to_string(),
    };
    attrs.sort();
    (service, attrs)
}

/// Decodes an `ExportTraceServiceRequest`.
pub fn decode_traces(body: &[u8], format: Format) -> Result<Decoded, OtlpError> {
    match format {
        Format::Protobuf => decode_protobuf(body),
        Format::Json => json::decode(body),
    }
}

fn decode_protobuf(body: &[u8]) -> Result<Decoded, OtlpError> {
    use prost::Message;
    let req = ExportTraceServiceRequest::decode(body).map_err(|e| OtlpError::Malformed {
        format: "protobuf",
        reason: e.to_string(),
    })?;
    let mut out = Decoded::default();
    for rs in req.resource_spans {
        let (service, resource) =
            service_of(pairs(rs.resource.map(|r| r.attributes).unwrap_or_default()));
        for ss in rs.scope_spans {
            for s in ss.spans {
                let status = s.status.unwrap_or_default();
                let raw = RawSpan {
                    trace_id: s.trace_id,
                    span_id: s.span_id,
                    parent: s.parent_span_id,
                    name: s.name,
                    kind: s.kind,
                    start: s.start_time_unix_nano,
                    end: s.end_time_unix_nano,
                    attributes: pairs(s.attributes),
                    events: s
                        .events
                        .into_iter()
                        .map(|e| SpanEvent {
                            t_ns: e.time_unix_nano,
                            name: e.name,
                            attributes: pairs(e.attributes),
                        })
                        .collect(),
                    links: s
                        .links
                        .into_iter()
                        .map(|l| (l.trace_id, l.span_id))
                        .collect(),
                    status: status.code,
                    status_message: status.message,
                };
                match finish(raw, &service, &resource) {
                    Ok(span) => out.spans.push(span),
                    Err(why) => out.reject(why),
                }
            }
        }
    }
    Ok(out)
}

mod json {
    //! OTLP/JSON: the protobuf messages' JSON mapping, with OTLP's exceptions (ids in hex,
    //! not base64; enums as numbers).
    use serde::Deserialize;
    use serde_json::Value as J;

    use super::{Decoded, OtlpError, RawSpan, finish, service_of};
    use crate::trace::SpanEvent;

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Request {
        resource_spans: Vec<ResourceSpans>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct ResourceSpans {
        resource: Option<Attrs>,
        scope_spans: Vec<ScopeSpans>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    pub(super) struct Attrs {
        pub(super) attributes: Vec<KeyValue>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct ScopeSpans {
        spans: Vec<Span>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Span {
        trace_id: String,
        span_id: String,
        parent_span_id: String,
        name: String,
        kind: i32,
        start_time_unix_nano: J,
        end_time_unix_nano: J,
        attributes: Vec<KeyValue>,
        events: Vec<Event>,
        links: Vec<Link>,
        status: Option<Status>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Event {
        time_unix_nano: J,
        name: String,
        attributes: Vec<KeyValue>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Link {
        trace_id: String,
        span_id: String,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Status {
        message: String,
        code: i32,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    pub(super) struct KeyValue {
        key: String,
        value: J,
    }

    /// A 64-bit unsigned integer written as a number or a string (protobuf's JSON mapping
    /// writes 64-bit integers as strings).
    fn u64_of(v: &J) -> Result<u64, String> {
        match v {
            J::Null => Ok(0),
            J::Number(n) => n.as_u64().ok_or_else(|| format!("{n} is not a u64")),
            J::String(s) => s.parse().map_err(|_| format!("{s:?} is not a u64")),
            other => Err(format!("{other} is not a u64")),
        }
    }

    /// [`u64_of`], 0 when it is not one (log record times: the caller stamps those).
    pub(super) fn u64_or_zero(v: &J) -> u64 {
        u64_of(v).unwrap_or(0)
    }

    /// An `AnyValue` (`{"stringValue": ...}`, `{"intValue": "5"}`...) as text.
    pub(super) fn text(v: &J) -> String {
        let Some(o) = v.as_object() else {
            return String::new();
        };
        let Some((k, inner)) = o.iter().next() else {
            return String::new();
        };
        match (k.as_str(), inner) {
            ("stringValue" | "intValue" | "bytesValue", J::String(s)) => s.clone(),
            ("arrayValue" | "kvlistValue", _) => plain(v).to_string(),
            (_, J::String(s)) => s.clone(),
            (_, other) => other.to_string(),
        }
    }

    /// An `AnyValue` as the plain JSON it stands for (arrays and maps, for text).
    fn plain(v: &J) -> J {
        let Some((k, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
            return J::Null;
        };
        let values = || inner.get("values").and_then(J::as_array).cloned();
        match k.as_str() {
            "arrayValue" => J::Array(values().unwrap_or_default().iter().map(plain).collect()),
            "kvlistValue" => J::Object(
                values()
                    .unwrap_or_default()
                    .iter()
                    .map(|kv| {
                        let key = kv.get("key").and_then(J::as_str).unwrap_or("").to_string();
                        (key, kv.get("value").map_or(J::Null, plain))
                    })
                    .collect(),
            ),
            "intValue" => inner
                .as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .map_or_else(|| inner.clone(), J::from),
            _ => inner.clone(),
        }
    }

    pub(super) fn pairs(kvs: Vec<KeyValue>) -> Vec<(String, String)> {
        kvs.into_iter()
            .map(|kv| (kv.key, text(&kv.value)))
            .collect()
    }

    /// Hex to bytes; a string that is not hex becomes bytes of the wrong length, which the
    /// id checks then reject with its length.
    pub(super) fn id_bytes(s: &str) -> Vec<u8> {
        if !s.len().is_multiple_of(2) {
            return vec![0; s.len()];
        }
        (0..s.len() / 2)
            .map_while(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
            .collect()
    }

    pub(super) fn decode(body: &[u8]) -> Result<Decoded, OtlpError> {
        let req: Request = serde_json::from_slice(body).map_err(|e| OtlpError::Malformed {
            format: "JSON",
            reason: e.to_string(),
        })?;
        let mut out = Decoded::default();
        for rs in req.resource_spans {
            let (service, resource) =
                service_of(pairs(rs.resource.map(|r| r.attributes).unwrap_or_default()));
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let times = u64_of(&s.start_time_unix_nano)
                        .and_then(|a| Ok((a, u64_of(&s.end_time_unix_nano)?)));
                    let (start, end) = match times {
                        Ok(t) => t,
                        Err(e) => {
                            out.reject(format!("span {:?}: time {e}", s.name));
                            continue;
                        }
                    };
                    let status = s.status.unwrap_or_default();
                    let raw = RawSpan {
                        trace_id: id_bytes(&s.trace_id),
                        span_id: id_bytes(&s.span_id),
                        parent: id_bytes(&s.parent_span_id),
                        name: s.name,
                        kind: s.kind,
                        start,
                        end,
                        attributes: pairs(s.attributes),
                        events: s
                            .events
                            .into_iter()
                            .map(|e| SpanEvent {
                                t_ns: u64_of(&e.time_unix_nano).unwrap_or(0),
                                name: e.name,
                                attributes: pairs(e.attributes),
                            })
                            .collect(),
                        links: s
                            .links
                            .into_iter()
                            .map(|l| (id_bytes(&l.trace_id), id_bytes(&l.span_id)))
                            .collect(),
                        status: status.code,
                        status_message: status.message,
                    };
                    match finish(raw, &service, &resource) {
                        Ok(span) => out.spans.push(span),
                        Err(why) => out.reject(why),
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Encodes spans as an `ExportTraceServiceRequest` in protobuf (what an SDK sends):
/// consecutive spans of the same service and resource share a `ResourceSpans`; attribute
/// values are sent as strings.
pub fn encode_traces(spans: &[Span]) -> Vec<u8> {
    use prost::Message;
    let strings = |pairs: &[(String, String)]| -> Vec<KeyValue> {
        pairs
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: Some(AnyValue {
                    value: Some(Value::String(v.clone())),
                }),
            })
            .collect()
    };
    let mut req = ExportTraceServiceRequest::default();
    let mut last: Option<(&str, &[(String, String)])> = None;
    for s in spans {
        if last != Some((s.service.as_str(), s.resource.as_slice())) {
            let mut attrs = vec![("service.name".to_string(), s.service.clone())];
            attrs.extend(s.resource.iter().cloned());
            req.resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: strings(&attrs),
                }),
                scope_spans: vec![ScopeSpans::default()],
            });
            last = Some((s.service.as_str(), s.resource.as_slice()));
        }
        let Some(scope) = req
            .resource_spans
            .last_mut()
            .and_then(|r| r.scope_spans.last_mut())
        else {
            continue;
        };
        scope.spans.push(PbSpan {
            trace_id: s.trace_id.to_vec(),
            span_id: s.span_id.to_vec(),
            parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: s.name.clone(),
            kind: s.kind as i32,
            start_time_unix_nano: s.start_ns,
            end_time_unix_nano: s.end_ns,
            attributes: strings(&s.attributes),
            events: s
                .events
                .iter()
                .map(|e| PbEvent {
                    time_unix_nano: e.t_ns,
                    name: e.name.clone(),
                    attributes: strings(&e.attributes),
                })
                .collect(),
            links: s
                .links
                .iter()
                .map(|l| PbLink {
                    trace_id: l.trace_id.to_vec(),
                    span_id: l.span_id.to_vec(),
                })
                .collect(),
            status: (s.status != SpanStatus::Unset || !s.status_message.is_empty()).then(|| {
                PbStatus {
                    message: s.status_message.clone(),
                    code: s.status as i32,
                }
            }),
        });
    }
    req.encode_to_vec()
}

/// The answer to an accepted request: an `ExportTraceServiceResponse`, with a partial
/// success when spans were rejected (or a warning is to be said).
pub fn encode_response(format: Format, rejected: u64, message: &str) -> Vec<u8> {
    encode_partial(format, "rejectedSpans", rejected, message)
}

/// An `Export*ServiceResponse`: the three signals' responses have the same layout (field 1,
/// a partial success of `int64 rejected_<what> = 1; string error_message = 2`), so one
/// message encodes them all; in JSON the count's name is `count_key`.
fn encode_partial(format: Format, count_key: &str, rejected: u64, message: &str) -> Vec<u8> {
    use prost::Message;
    let nothing = rejected == 0 && message.is_empty();
    match format {
        Format::Protobuf => ExportTraceServiceResponse {
            partial_success: (!nothing).then(|| PartialSuccess {
                rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
                error_message: message.to_string(),
            }),
        }
        .encode_to_vec(),
        Format::Json if nothing => b"{}".to_vec(),
        Format::Json => serde_json::json!({
            "partialSuccess": {count_key: rejected.to_string(), "errorMessage": message}
        })
        .to_string()
        .into_bytes(),
    }
}

/// The body of an error answer: a `google.rpc.Status` (`code` is a gRPC code: 3 invalid
/// argument, 8 resource exhausted, 14 unavailable).
pub fn encode_status(format: Format, code: i32, message: &str) -> Vec<u8> {
    use prost::Message;
    match format {
        Format::Protobuf => RpcStatus {
            code,
            message: message.to_string(),
        }
        .encode_to_vec(),
        Format::Json => serde_json::json!({"code": code, "message": message})
            .to_string()
            .into_bytes(),
    }
}

pub mod logs;
pub mod metrics;

#[cfg(test)]
mod tests;
