//! The remote_write receiver (`POST /api/v1/write`, protocol 1.0): a snappy-block-compressed
//! protobuf `WriteRequest`, stored durably before the 204, so Prometheus, Grafana Alloy, Vector
//! and Telegraf can send to Telltale. A malformed body gets 400 (senders do not retry 4xx).

use telltale_common::model::{Labels, Sample, SeriesSamples};

/// `prometheus.WriteRequest` (only the fields Telltale stores).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, metric name included as `__name__`.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<ProtoSample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// Name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoSample {
    /// Value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Largest accepted body, compressed and decompressed.
pub const MAX_BODY: usize = 64 << 20;

/// Decodes a remote_write body into series.
pub fn decode(body: &[u8]) -> Result<Vec<SeriesSamples>, String> {
    let len = snap::raw::decompress_len(body).map_err(|e| format!("snappy: {e}"))?;
    if len > MAX_BODY {
        return Err(format!(
            "decompressed body of {len} bytes exceeds {MAX_BODY}"
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy: {e}"))?;
    let req = <WriteRequest as prost::Message>::decode(raw.as_slice())
        .map_err(|e| format!("protobuf: {e}"))?;
    let mut out = Vec::with_capacity(req.timeseries.len());
    for ts in req.timeseries {
        check_labels(&ts.labels)?;
        // Empty values mean "no such label", as in Prometheus.
        let labels = Labels::from_pairs(
            ts.labels
                .into_iter()
                .filter(|l| !l.value.is_empty())
                .map(|l| (l.name, l.value)),
        );
        if labels.metric_name().is_none() {
            return Err("a series without __name__".into());
        }
        out.push(SeriesSamples {
            labels,
            samples: ts
                .samples
                .into_iter()
                .map(|s| Sample(s.timestamp, s.value))
                .collect(),
        });
    }
    Ok(out)
}

/// Whether `s` is a valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Whether `s` is a valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// Refuses what Prometheus' own receiver refuses: invalid label names, an invalid metric
/// name, a label name given twice.
fn check_labels(labels: &[Label]) -> Result<(), String> {
    for (i, l) in labels.iter().enumerate() {
        if !valid_label_name(&l.name) {
            return Err(format!("invalid label name {:?}", l.name));
        }
        if l.name == "__name__" && !valid_metric_name(&l.value) {
            return Err(format!("invalid metric name {:?}", l.value));
        }
        if labels[..i].iter().any(|o| o.name == l.name) {
            return Err(format!("duplicate label name {:?}", l.name));
        }
    }
    Ok(())
}

/// Encodes series as a remote_write body (used by tests and the compliance harness).
pub fn encode(series: &[SeriesSamples]) -> Vec<u8> {
    let req = WriteRequest {
        timeseries: series
            .iter()
            .map(|s| TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|(k, v)| Label {
                        name: k.into(),
                        value: v.into(),
                    })
                    .collect(),
                samples: s
                    .samples
                    .iter()
                    .map(|x| ProtoSample {
                        value: x.1,
                        timestamp: x.0,
                    })
                    .collect(),
            })
            .collect(),
    };
    let raw = prost::Message::encode_to_vec(&req);
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_malformed_bodies() {
        let s = vec![SeriesSamples {
            labels: Labels::from_pairs([("__name__", "m"), ("a", "b")]),
            samples: vec![Sample(1, 2.5), Sample(2, f64::NAN)],
        }];
        let got = decode(&encode(&s)).unwrap();
        assert_eq!(got[0].labels, s[0].labels);
        assert_eq!(got[0].samples[0], Sample(1, 2.5));
        assert!(decode(b"not snappy at all").is_err());
        let not_proto = snap::raw::Encoder::new()
            .compress_vec(b"\xff\xff\xff")
            .unwrap();
        assert!(decode(&not_proto).is_err());
    }

    fn body(labels: &[(&str, &str)]) -> Vec<u8> {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: labels
                    .iter()
                    .map(|(k, v)| Label {
                        name: k.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                samples: vec![ProtoSample {
                    value: 1.0,
                    timestamp: 1,
                }],
            }],
        };
        snap::raw::Encoder::new()
            .compress_vec(&prost::Message::encode_to_vec(&req))
            .unwrap()
    }

    #[test]
    fn invalid_names_are_refused() {
        for (labels, why) in [
            (vec![("__name__", "m"), ("a-b", "x")], "invalid label name"),
            (vec![("__name__", "m"), ("1a", "x")], "invalid label name"),
            (vec![("__name__", "m"), ("", "x")], "invalid label name"),
            (vec![("__name__", "m"), ("é", "x")], "invalid label name"),
            (vec![("__name__", "m x")], "invalid metric name"),
            (
                vec![("__name__", "m"), ("a", "1"), ("a", "2")],
                "duplicate label name",
            ),
        ] {
            let e = decode(&body(&labels)).unwrap_err();
            assert!(e.contains(why), "{labels:?}: {e}");
        }
        let ok = decode(&body(&[("__name__", "ns:m_1"), ("_a", "x"), ("empty", "")])).unwrap();
        assert_eq!(ok[0].labels.len(), 2, "an empty value is no label");
    }
}
