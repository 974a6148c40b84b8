//! The remote_write receiver (`POST /api/v1/write`, protocol 1.0): a snappy-block-compressed
//! protobuf `WriteRequest`, stored durably before the 204, so Prometheus, Grafana Alloy, Vector
//! and Telegraf can send to Telltale. A malformed body gets 400 (senders do not retry 4xx).

use telltale_common::model::{Labels, Sample, SeriesSamples, valid_label_name, valid_metric_name};

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

/// Why a remote_write body cannot be stored; the HTTP layer answers 400 with the message,
/// storage counts the request as invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not snappy's block format.
    #[error("snappy: {0}")]
    Snappy(String),
    /// It would decompress to more than [`MAX_BODY`].
    #[error("decompressed body of {len} bytes exceeds {max}")]
    TooLarge {
        /// Decompressed size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a `WriteRequest` (protobuf structure).
    #[error("{0}")]
    Protobuf(String),
    /// A series' labels break Prometheus' rules (names, duplicates, no metric name, UTF-8).
    #[error("{0}")]
    Labels(String),
}

impl From<String> for DecodeError {
    fn from(m: String) -> Self {
        DecodeError::Protobuf(m)
    }
}

impl From<&str> for DecodeError {
    fn from(m: &str) -> Self {
        DecodeError::Protobuf(m.to_string())
    }
}

/// Decompresses a remote_write body (snappy block format), refusing more than [`MAX_BODY`].
pub fn decompress(body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let len = snap::raw::decompress_len(body).map_err(|e| DecodeError::Snappy(e.to_string()))?;
    if len > MAX_BODY {
        return Err(DecodeError::TooLarge { len, max: MAX_BODY });
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| DecodeError::Snappy(e.to_string()))
}

/// A `WriteRequest` walked without copying: every series' label messages as sent (its key)
/// and all samples in one list.
#[derive(Debug, Default)]
pub struct Scanned<'a> {
    /// The series in request order.
    pub series: Vec<RawSeries<'a>>,
    /// Every series' samples, in request order (see [`RawSeries::samples`]).
    pub samples: Vec<Sample>,
}

/// One `TimeSeries` of a [`Scanned`] request.
#[derive(Debug)]
pub struct RawSeries<'a> {
    /// The series' `Label` messages exactly as encoded (tags and lengths included), in the
    /// order sent: equal bytes are equal label sets, so a receiver can key a cache on them
    /// and decode labels only for bytes it has not seen. Borrowed from the request when the
    /// labels are contiguous (as every sender writes them), copied together otherwise.
    pub key: std::borrow::Cow<'a, [u8]>,
    /// This series' range in [`Scanned::samples`].
    pub samples: std::ops::Range<usize>,
}

/// Walks a decompressed `WriteRequest` (protobuf) without decoding labels. Fields other than
/// labels and samples (exemplars, histograms, metadata) are skipped, as by a protobuf decoder
/// built from the 1.0 schema; a truncated or malformed message is an error.
pub fn scan(raw: &[u8]) -> Result<Scanned<'_>, DecodeError> {
    let mut out = Scanned::default();
    let mut r = Reader::new(raw);
    while let Some((field, wt)) = r.tag()? {
        if field == 1 {
            let ts = r.len_delimited(wt, "timeseries")?;
            scan_series(ts, &mut out)?;
        } else {
            r.skip(wt)?;
        }
    }
    Ok(out)
}

fn scan_series<'a>(ts: &'a [u8], out: &mut Scanned<'a>) -> Result<(), DecodeError> {
    let first = out.samples.len();
    let mut r = Reader::new(ts);
    // The label messages' span while they are contiguous; `split` once they are not.
    let mut span: Option<(usize, usize)> = None;
    let mut split: Option<Vec<u8>> = None;
    loop {
        let at = r.pos;
        let Some((field, wt)) = r.tag()? else { break };
        match field {
            1 => {
                r.len_delimited(wt, "label")?;
                let end = r.pos;
                match (&mut split, &mut span) {
                    (Some(buf), _) => buf.extend_from_slice(&ts[at..end]),
                    (None, Some((_, e))) if *e == at => *e = end,
                    (None, Some((s, e))) => {
                        let mut buf = ts[*s..*e].to_vec();
                        buf.extend_from_slice(&ts[at..end]);
                        split = Some(buf);
                    }
                    (None, None) => span = Some((at, end)),
                }
            }
            2 => {
                let m = r.len_delimited(wt, "sample")?;
                out.samples.push(scan_sample(m)?);
            }
            _ => r.skip(wt)?,
        }
    }
    let key = match (split, span) {
        (Some(buf), _) => std::borrow::Cow::Owned(buf),
        (None, Some((s, e))) => std::borrow::Cow::Borrowed(&ts[s..e]),
        (None, None) => std::borrow::Cow::Borrowed(&ts[..0]),
    };
    out.series.push(RawSeries {
        key,
        samples: first..out.samples.len(),
    });
    Ok(())
}

fn scan_sample(m: &[u8]) -> Result<Sample, DecodeError> {
    let (mut t, mut v) = (0i64, 0f64);
    let mut r = Reader::new(m);
    while let Some((field, wt)) = r.tag()? {
        match (field, wt) {
            (1, 1) => v = f64::from_bits(r.fixed64()?),
            (2, 0) => t = r.varint()? as i64,
            (1 | 2, _) => return Err("sample field of the wrong wire type".into()),
            _ => r.skip(wt)?,
        }
    }
    Ok(Sample(t, v))
}

/// The label pairs of a series key (see [`RawSeries::key`]), checked as Prometheus' receiver
/// checks them, empty values dropped (Prometheus reads them as absent), sorted by name.
pub fn labels(key: &[u8]) -> Result<Vec<(&str, &str)>, DecodeError> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    let mut r = Reader::new(key);
    while let Some((field, wt)) = r.tag()? {
        if field != 1 {
            r.skip(wt)?;
            continue;
        }
        let m = r.len_delimited(wt, "label")?;
        let (mut name, mut value) = ("", "");
        let mut lr = Reader::new(m);
        while let Some((f, wt)) = lr.tag()? {
            match f {
                1 | 2 => {
                    let b = lr.len_delimited(wt, "label string")?;
                    let s = std::str::from_utf8(b).map_err(|_| {
                        DecodeError::Labels("a label that is not valid UTF-8".into())
                    })?;
                    if f == 1 { name = s } else { value = s }
                }
                _ => lr.skip(wt)?,
            }
        }
        if !valid_label_name(name) {
            return Err(DecodeError::Labels(format!("invalid label name {name:?}")));
        }
        if name == "__name__" && !valid_metric_name(value) {
            return Err(DecodeError::Labels(format!(
                "invalid metric name {value:?}"
            )));
        }
        if pairs.iter().any(|(n, _)| *n == name) {
            return Err(DecodeError::Labels(format!(
                "duplicate label name {name:?}"
            )));
        }
        pairs.push((name, value));
    }
    pairs.retain(|(_, v)| !v.is_empty());
    if !pairs.iter().any(|(n, _)| *n == "__name__") {
        return Err(DecodeError::Labels("a series without __name__".into()));
    }
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    Ok(pairs)
}

/// Decodes a remote_write body into series (tests and tools; the receiver uses [`scan`]).
pub fn decode(body: &[u8]) -> Result<Vec<SeriesSamples>, DecodeError> {
    let raw = decompress(body)?;
    let sc = scan(&raw)?;
    sc.series
        .iter()
        .map(|s| {
            Ok(SeriesSamples {
                labels: Labels::from_pairs(labels(&s.key)?),
                samples: sc.samples[s.samples.clone()].to_vec(),
            })
        })
        .collect()
}

/// A protobuf reader over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| "truncated varint".to_string())?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    /// The next field number and wire type, or `None` at the end.
    fn tag(&mut self) -> Result<Option<(u64, u8)>, DecodeError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let k = self.varint()?;
        let field = k >> 3;
        if field == 0 {
            return Err("field number 0".into());
        }
        Ok(Some((field, (k & 7) as u8)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| format!("field of {n} bytes runs past its message"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn len_delimited(&mut self, wt: u8, what: &str) -> Result<&'a [u8], DecodeError> {
        if wt != 2 {
            return Err(DecodeError::Protobuf(format!(
                "{what} of wire type {wt}, not a message"
            )));
        }
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| format!("{what} length {n}"))?)
    }

    fn skip(&mut self, wt: u8) -> Result<(), DecodeError> {
        match wt {
            0 => self.varint().map(|_| ()),
            1 => self.take(8).map(|_| ()),
            2 => self.len_delimited(2, "field").map(|_| ()),
            5 => self.take(4).map(|_| ()),
            other => Err(DecodeError::Protobuf(format!(
                "unsupported wire type {other}"
            ))),
        }
    }
}

/// Encodes series as a remote_write body (used by tests and the compliance harness).
pub fn encode(series: &[SeriesSamples]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&encode_raw(series))
        .unwrap_or_default()
}

/// Encodes series as an uncompressed `WriteRequest`.
pub fn encode_raw(series: &[SeriesSamples]) -> Vec<u8> {
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
    prost::Message::encode_to_vec(&req)
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
            assert!(e.to_string().contains(why), "{labels:?}: {e}");
        }
        let ok = decode(&body(&[("__name__", "ns:m_1"), ("_a", "x"), ("empty", "")])).unwrap();
        assert_eq!(ok[0].labels.len(), 2, "an empty value is no label");
    }

    /// Labels given between samples (protobuf allows any field order) make the same key as
    /// labels given together.
    #[test]
    fn interleaved_labels_make_the_same_key() {
        let label = |n: &str, v: &str| {
            prost::Message::encode_to_vec(&Label {
                name: n.into(),
                value: v.into(),
            })
        };
        let sample = prost::Message::encode_to_vec(&ProtoSample {
            value: 1.5,
            timestamp: 7,
        });
        let field = |tag: u8, m: &[u8]| {
            let mut out = vec![tag, m.len() as u8];
            out.extend_from_slice(m);
            out
        };
        let (a, b) = (label("__name__", "m"), label("x", "y"));
        let together = [field(0x0a, &a), field(0x0a, &b), field(0x12, &sample)].concat();
        let apart = [field(0x0a, &a), field(0x12, &sample), field(0x0a, &b)].concat();
        let (r1, r2) = (field(0x0a, &together), field(0x0a, &apart));
        let (k1, k2) = (scan(&r1).unwrap(), scan(&r2).unwrap());
        assert_eq!(k1.series[0].key, k2.series[0].key);
        assert_eq!(k2.samples, vec![Sample(7, 1.5)]);
        assert_eq!(
            labels(&k2.series[0].key).unwrap(),
            vec![("__name__", "m"), ("x", "y")]
        );
    }

    proptest::proptest! {
        /// What `scan` and `labels` read equals what prost decodes, for any series.
        #[test]
        fn scan_agrees_with_prost(
            series in proptest::collection::vec(
                (
                    proptest::collection::vec(("[a-z_][a-z0-9_]{0,6}", "\\PC{0,5}"), 0..5),
                    proptest::collection::vec((proptest::num::i64::ANY, proptest::num::f64::ANY), 0..4),
                ),
                0..6,
            )
        ) {
            let req = WriteRequest {
                timeseries: series
                    .iter()
                    .map(|(ls, ss)| TimeSeries {
                        labels: std::iter::once(("__name__".to_string(), "m".to_string()))
                            .chain(ls.iter().cloned())
                            .map(|(name, value)| Label { name, value })
                            .collect(),
                        samples: ss
                            .iter()
                            .map(|&(timestamp, value)| ProtoSample { value, timestamp })
                            .collect(),
                    })
                    .collect(),
            };
            let raw = prost::Message::encode_to_vec(&req);
            let sc = scan(&raw).unwrap();
            // What the bytes say (proto3 leaves out a -0.0 value, say).
            let req = <WriteRequest as prost::Message>::decode(raw.as_slice()).unwrap();
            proptest::prop_assert_eq!(sc.series.len(), req.timeseries.len());
            for (s, ts) in sc.series.iter().zip(&req.timeseries) {
                let got = sc.samples[s.samples.clone()].to_vec();
                let want: Vec<Sample> =
                    ts.samples.iter().map(|x| Sample(x.timestamp, x.value)).collect();
                proptest::prop_assert_eq!(
                    got.iter().map(|x| (x.0, x.1.to_bits())).collect::<Vec<_>>(),
                    want.iter().map(|x| (x.0, x.1.to_bits())).collect::<Vec<_>>()
                );
                let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
                let dup = names.iter().enumerate().any(|(i, n)| names[..i].contains(n));
                match labels(&s.key) {
                    Ok(p) => {
                        proptest::prop_assert!(!dup);
                        let want = Labels::from_pairs(
                            ts.labels.iter().map(|l| (l.name.clone(), l.value.clone())),
                        );
                        proptest::prop_assert_eq!(Labels::from_pairs(p), want);
                    }
                    Err(e) => proptest::prop_assert!(dup, "{}", e),
                }
            }
        }

        /// Any bytes: an answer or an error, never a panic.
        #[test]
        fn hostile_bytes_never_panic(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(sc) = scan(&raw) {
                for s in &sc.series {
                    let _ = labels(&s.key);
                }
            }
            let _ = labels(&raw);
        }
    }
}
