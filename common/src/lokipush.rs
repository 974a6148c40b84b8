//! Loki's push format (`POST /loki/api/v1/push`), decoded into streams: protobuf
//! (`application/x-protobuf`, snappy block compression — what Promtail, Alloy and Fluent
//! Bit's Loki output send) or JSON (`application/json`:
//! `{"streams":[{"stream":{"k":"v"},"values":[["<ns>","<line>"(, {metadata})?]]}]}`).
//! Shared by the aggregator's push endpoint and the agent's `type = "loki"` source.

use crate::wire::{LogEntry, LogStream};

/// Longest line accepted (Loki's default `max_line_size`).
pub const MAX_LINE_BYTES: usize = 256 * 1024;
/// Largest decompressed body.
pub const MAX_BODY_BYTES: usize = 64 << 20;

#[derive(Clone, PartialEq, prost::Message)]
struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    streams: Vec<StreamAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StreamAdapter {
    #[prost(string, tag = "1")]
    labels: String,
    #[prost(message, repeated, tag = "2")]
    entries: Vec<EntryAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    line: String,
    #[prost(message, repeated, tag = "3")]
    structured_metadata: Vec<LabelPair>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Timestamp {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LabelPair {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// Why a push body is refused (400).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Snappy or protobuf did not decode.
    #[error("malformed push body: {0}")]
    Malformed(String),
    /// The body decompresses to more than [`MAX_BODY_BYTES`].
    #[error("push body larger than {MAX_BODY_BYTES} bytes decompressed")]
    TooLarge,
    /// A stream's labels are not a selector of equality matchers.
    #[error("invalid labels {labels:?}: {reason}")]
    Labels {
        /// The labels as sent.
        labels: String,
        /// Why.
        reason: String,
    },
    /// A line is longer than [`MAX_LINE_BYTES`].
    #[error("line of {bytes} bytes in stream {labels} is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong {
        /// The stream.
        labels: String,
        /// Its size.
        bytes: usize,
    },
}

/// Parses a stream's label set as Loki pushes carry it, `{a="b", c="d"}` (values with Go
/// escapes), into pairs sorted by name.
pub fn parse_labels(s: &str) -> Result<Vec<(String, String)>, PushError> {
    let bad = |reason: &str| PushError::Labels {
        labels: s.to_string(),
        reason: reason.to_string(),
    };
    let inner = s
        .trim()
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| bad("not in braces"))?;
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| bad("a name without = and a value"))?;
        let name = rest[..eq].trim();
        if !crate::model::valid_label_name(name) {
            return Err(bad("an invalid label name"));
        }
        let after = rest[eq + 1..].trim_start();
        if after.starts_with('~') {
            return Err(bad("only = matchers name a stream"));
        }
        let mut chars = after
            .strip_prefix('"')
            .ok_or_else(|| bad("a value not in quotes"))?
            .char_indices();
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, e)) => value.push(e),
                    None => break,
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.ok_or_else(|| bad("an unterminated value"))?;
        if out.iter().any(|(k, _)| k == name) {
            return Err(bad("a label given twice"));
        }
        out.push((name.to_string(), value));
        rest = after[1 + end + 1..].trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None if rest.is_empty() => {}
            None => return Err(bad("labels not separated by commas")),
        }
    }
    if out.is_empty() {
        return Err(bad("no labels"));
    }
    out.sort();
    Ok(out)
}

fn check_line(labels: &[(String, String)], line: &str) -> Result<(), PushError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(PushError::LineTooLong {
            labels: format!("{labels:?}"),
            bytes: line.len(),
        });
    }
    Ok(())
}

/// Decodes a snappy-compressed protobuf `PushRequest`.
pub fn decode_protobuf(body: &[u8]) -> Result<Vec<LogStream>, PushError> {
    let len = snap::raw::decompress_len(body).map_err(|e| PushError::Malformed(e.to_string()))?;
    if len > MAX_BODY_BYTES {
        return Err(PushError::TooLarge);
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| PushError::Malformed(e.to_string()))?;
    let req = <PushRequest as prost::Message>::decode(raw.as_slice())
        .map_err(|e| PushError::Malformed(e.to_string()))?;
    let mut out = Vec::with_capacity(req.streams.len());
    for s in req.streams {
        let labels = parse_labels(&s.labels)?;
        let mut entries = Vec::with_capacity(s.entries.len());
        for e in s.entries {
            check_line(&labels, &e.line)?;
            let ts = e.timestamp.unwrap_or_default();
            entries.push(LogEntry {
                t_ns: ts
                    .seconds
                    .saturating_mul(1_000_000_000)
                    .saturating_add(i64::from(ts.nanos)),
                line: e.line,
                metadata: e
                    .structured_metadata
                    .into_iter()
                    .map(|p| (p.name, p.value))
                    .collect(),
            });
        }
        out.push(LogStream { labels, entries });
    }
    Ok(out)
}

/// Encodes streams as a Promtail-style push body (protobuf, snappy): for tests and the bench.
pub fn encode_protobuf(streams: &[LogStream]) -> Vec<u8> {
    let req = PushRequest {
        streams: streams
            .iter()
            .map(|s| StreamAdapter {
                labels: format!(
                    "{{{}}}",
                    s.labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                entries: s
                    .entries
                    .iter()
                    .map(|e| EntryAdapter {
                        timestamp: Some(Timestamp {
                            seconds: e.t_ns.div_euclid(1_000_000_000),
                            nanos: e.t_ns.rem_euclid(1_000_000_000) as i32,
                        }),
                        line: e.line.clone(),
                        structured_metadata: e
                            .metadata
                            .iter()
                            .map(|(k, v)| LabelPair {
                                name: k.clone(),
                                value: v.clone(),
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    };
    let raw = prost::Message::encode_to_vec(&req);
    // Compressing a byte buffer in memory cannot fail.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

#[derive(serde::Deserialize)]
struct JsonPush {
    streams: Vec<JsonStream>,
}

#[derive(serde::Deserialize)]
struct JsonStream {
    stream: std::collections::BTreeMap<String, String>,
    values: Vec<JsonEntry>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum JsonEntry {
    Plain((String, String)),
    WithMetadata((String, String, std::collections::BTreeMap<String, String>)),
}

/// Decodes a JSON push body.
pub fn decode_json(body: &[u8]) -> Result<Vec<LogStream>, PushError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(PushError::TooLarge);
    }
    let req: JsonPush =
        serde_json::from_slice(body).map_err(|e| PushError::Malformed(e.to_string()))?;
    let mut out = Vec::with_capacity(req.streams.len());
    for s in req.streams {
        let labels: Vec<(String, String)> = s.stream.into_iter().collect();
        let mut entries = Vec::with_capacity(s.values.len());
        for v in s.values {
            let (t, line, md) = match v {
                JsonEntry::Plain((t, l)) => (t, l, Default::default()),
                JsonEntry::WithMetadata((t, l, m)) => (t, l, m),
            };
            check_line(&labels, &line)?;
            let t_ns = t
                .parse::<i64>()
                .map_err(|_| PushError::Malformed(format!("timestamp {t:?} is not nanoseconds")))?;
            entries.push(LogEntry {
                t_ns,
                line,
                metadata: md.into_iter().collect(),
            });
        }
        out.push(LogStream { labels, entries });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_and_json_pushes_decode_to_the_same_streams() {
        let req = PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{job="app", env="prod"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp {
                        seconds: 1_700_000_000,
                        nanos: 5,
                    }),
                    line: "hello".into(),
                    structured_metadata: vec![LabelPair {
                        name: "trace_id".into(),
                        value: "abc".into(),
                    }],
                }],
            }],
        };
        let raw = prost::Message::encode_to_vec(&req);
        let body = snap::raw::Encoder::new()
            .compress_vec(&raw)
            .expect("snappy");
        let a = decode_protobuf(&body).expect("protobuf");
        let b = decode_json(
            br#"{"streams":[{"stream":{"job":"app","env":"prod"},"values":[["1700000000000000005","hello",{"trace_id":"abc"}]]}]}"#,
        )
        .expect("json");
        assert_eq!(a, b);
        assert_eq!(a[0].labels[0], ("env".to_string(), "prod".to_string()));
    }

    #[test]
    fn hostile_bodies_are_refused_with_a_reason() {
        assert!(matches!(
            decode_protobuf(b"\xff\xff\xff\xff\x0f"),
            Err(PushError::Malformed(_) | PushError::TooLarge)
        ));
        assert!(matches!(
            decode_protobuf(b"\x05abc"),
            Err(PushError::Malformed(_))
        ));
        assert!(matches!(
            decode_json(b"{\"streams\": 5}"),
            Err(PushError::Malformed(_))
        ));
        assert!(matches!(
            decode_json(br#"{"streams":[{"stream":{"a":"b"},"values":[["x","l"]]}]}"#),
            Err(PushError::Malformed(m)) if m.contains("nanoseconds")
        ));
        let long = "x".repeat(MAX_LINE_BYTES + 1);
        let body = format!(r#"{{"streams":[{{"stream":{{"a":"b"}},"values":[["1","{long}"]]}}]}}"#);
        assert!(matches!(
            decode_json(body.as_bytes()),
            Err(PushError::LineTooLong { .. })
        ));
        for bad in [
            r#"{a=~"b"}"#,
            "a",
            r#"{a="b"} |= "x""#,
            "{}",
            r#"{a="b" c="d"}"#,
            r#"{a="b}"#,
            r#"{1a="b"}"#,
            r#"{a="b", a="c"}"#,
        ] {
            assert!(parse_labels(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_labels(r#"{ z = "q\"uote", a="b" }"#).expect("labels"),
            vec![
                ("a".to_string(), "b".to_string()),
                ("z".to_string(), "q\"uote".to_string())
            ]
        );
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..200 {
            let junk: Vec<u8> = (0..40)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode_protobuf(&junk);
            let _ = decode_json(&junk);
        }
    }
}
