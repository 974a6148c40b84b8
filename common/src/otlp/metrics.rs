//! OTLP metrics (`ExportMetricsServiceRequest`, protobuf or OTLP/JSON) as Prometheus series,
//! following OpenTelemetry's Prometheus compatibility rules where they matter to queries:
//!
//! - names: characters other than `[a-zA-Z0-9_:]` become `_`; the unit is appended as a
//!   suffix for the common units (`s` → `_seconds`, `ms` → `_milliseconds`, `By` →
//!   `_bytes`, `1` on gauges → `_ratio`) unless the name already ends with it; monotonic
//!   sums get `_total`;
//! - labels: the data point's attributes (names sanitised the same way), plus `job` = the
//!   resource's `service.name` (`service.namespace/service.name` when both are set);
//! - gauges and sums are one series each; histograms `_bucket{le}` (cumulative), `_sum` and
//!   `_count`; summaries `{quantile}`, `_sum` and `_count`.
//!
//! Sums and histograms with delta temporality become cumulative through [`Deltas`], running
//! totals the receiver keeps across requests (what the OpenTelemetry Collector's
//! `deltatocumulative` processor does), since a Prometheus counter is cumulative.
//! Exponential histograms become classic `le` buckets (see [`explicit`]), since Telltale
//! stores no native histograms; delta ones are rejected data points (OTLP's partial success
//! says so).

use std::collections::HashMap;

use super::{Format, KeyValue, OtlpError, Resource, pairs};
use crate::model::{Labels, Sample, SeriesSamples};

/// What a request held.
#[derive(Debug, Default)]
pub struct DecodedMetrics {
    /// The series, one sample each.
    pub series: Vec<SeriesSamples>,
    /// Data points not converted.
    pub rejected: u64,
    /// Why the first was not.
    pub reason: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExportMetricsServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_metrics: Vec<ResourceMetrics>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceMetrics {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_metrics: Vec<ScopeMetrics>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScopeMetrics {
    #[prost(message, repeated, tag = "2")]
    metrics: Vec<Metric>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Metric {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "3")]
    unit: String,
    #[prost(oneof = "Data", tags = "5, 7, 9, 10, 11")]
    data: Option<Data>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Data {
    #[prost(message, tag = "5")]
    Gauge(Gauge),
    #[prost(message, tag = "7")]
    Sum(Sum),
    #[prost(message, tag = "9")]
    Histogram(Histogram),
    #[prost(message, tag = "10")]
    Exponential(Exponential),
    #[prost(message, tag = "11")]
    Summary(Summary),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Gauge {
    #[prost(message, repeated, tag = "1")]
    data_points: Vec<NumberPoint>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Sum {
    #[prost(message, repeated, tag = "1")]
    data_points: Vec<NumberPoint>,
    #[prost(int32, tag = "2")]
    temporality: i32,
    #[prost(bool, tag = "3")]
    monotonic: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Histogram {
    #[prost(message, repeated, tag = "1")]
    data_points: Vec<HistogramPoint>,
    #[prost(int32, tag = "2")]
    temporality: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Exponential {
    #[prost(message, repeated, tag = "1")]
    data_points: Vec<ExponentialPoint>,
    #[prost(int32, tag = "2")]
    temporality: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ExponentialPoint {
    #[prost(message, repeated, tag = "1")]
    attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "3")]
    time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    count: u64,
    #[prost(double, optional, tag = "5")]
    sum: Option<f64>,
    #[prost(sint32, tag = "6")]
    scale: i32,
    #[prost(fixed64, tag = "7")]
    zero_count: u64,
    #[prost(message, optional, tag = "8")]
    positive: Option<Buckets>,
    #[prost(message, optional, tag = "9")]
    negative: Option<Buckets>,
    #[prost(double, tag = "14")]
    zero_threshold: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Buckets {
    #[prost(sint32, tag = "1")]
    offset: i32,
    #[prost(uint64, repeated, tag = "2")]
    bucket_counts: Vec<u64>,
}

/// Most buckets of an exponential histogram point converted to `le` buckets.
const MAX_EXPONENTIAL_BUCKETS: usize = 320;

/// An exponential histogram point as explicit buckets: bucket `k` of scale `s` holds
/// `(base^k, base^(k+1)]` with `base = 2^(2^-s)` (negative buckets the mirror image), so its
/// upper bound is an `le`; the zero bucket's is the zero threshold. `None` (with why) for a
/// scale outside OTLP's range or too many buckets.
fn explicit(p: &ExponentialPoint) -> Result<HistogramTotal, String> {
    if !(-10..=20).contains(&p.scale) {
        return Err(format!("scale {} outside -10..=20", p.scale));
    }
    let empty = Buckets::default();
    let (pos, neg) = (
        p.positive.as_ref().unwrap_or(&empty),
        p.negative.as_ref().unwrap_or(&empty),
    );
    if pos.bucket_counts.len() + neg.bucket_counts.len() > MAX_EXPONENTIAL_BUCKETS {
        return Err(format!(
            "{} buckets, more than {MAX_EXPONENTIAL_BUCKETS}",
            pos.bucket_counts.len() + neg.bucket_counts.len()
        ));
    }
    let step = (-f64::from(p.scale)).exp2();
    let bound = |k: i64| ((k as f64) * step).exp2();
    let (mut bounds, mut counts) = (Vec::new(), Vec::new());
    // Most negative first: bucket k covers [-base^(k+1), -base^k), its upper bound -base^k.
    for (i, n) in neg.bucket_counts.iter().enumerate().rev() {
        bounds.push(-bound(i64::from(neg.offset) + i as i64));
        counts.push(*n);
    }
    bounds.push(p.zero_threshold.abs());
    counts.push(p.zero_count);
    for (i, n) in pos.bucket_counts.iter().enumerate() {
        bounds.push(bound(i64::from(pos.offset) + i as i64 + 1));
        counts.push(*n);
    }
    let seen: u64 = counts.iter().fold(0u64, |a, n| a.saturating_add(*n));
    counts.push(p.count.saturating_sub(seen));
    Ok(HistogramTotal {
        bounds,
        counts,
        sum: p.sum.unwrap_or(f64::NAN),
        count: p.count,
    })
}

#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    data_points: Vec<SummaryPoint>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NumberPoint {
    #[prost(message, repeated, tag = "7")]
    attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "3")]
    time_unix_nano: u64,
    #[prost(oneof = "Number", tags = "4, 6")]
    value: Option<Number>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Number {
    #[prost(double, tag = "4")]
    Double(f64),
    #[prost(sfixed64, tag = "6")]
    Int(i64),
}

#[derive(Clone, PartialEq, prost::Message)]
struct HistogramPoint {
    #[prost(message, repeated, tag = "9")]
    attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "3")]
    time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    count: u64,
    #[prost(double, optional, tag = "5")]
    sum: Option<f64>,
    #[prost(fixed64, repeated, tag = "6")]
    bucket_counts: Vec<u64>,
    #[prost(double, repeated, tag = "7")]
    explicit_bounds: Vec<f64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SummaryPoint {
    #[prost(message, repeated, tag = "7")]
    attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "3")]
    time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    count: u64,
    #[prost(double, tag = "5")]
    sum: f64,
    #[prost(message, repeated, tag = "6")]
    quantile_values: Vec<Quantile>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Quantile {
    #[prost(double, tag = "1")]
    quantile: f64,
    #[prost(double, tag = "2")]
    value: f64,
}

/// OTLP's `AGGREGATION_TEMPORALITY_DELTA`.
const DELTA: i32 = 1;

/// A Prometheus name or label name: other characters become `_`, and a leading digit gets
/// one before it.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The series name of a metric (see the module doc).
fn series_name(name: &str, unit: &str, gauge: bool, total: bool) -> String {
    let mut n = sanitize(name);
    let suffix = match unit {
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "1" if gauge => "ratio",
        _ => "",
    };
    if !suffix.is_empty() && !n.ends_with(suffix) {
        n.push('_');
        n.push_str(suffix);
    }
    if total && !n.ends_with("_total") {
        n.push_str("_total");
    }
    n
}

/// Running totals of delta series (see the module doc), kept by a receiver across requests.
#[derive(Debug)]
pub struct Deltas {
    max: usize,
    sums: HashMap<Labels, f64>,
    histograms: HashMap<Labels, HistogramTotal>,
}

#[derive(Debug, Default)]
struct HistogramTotal {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Deltas {
    /// Totals for at most `max` series; a delta series past that is rejected (its points
    /// counted in the partial success) until the receiver restarts.
    pub fn new(max: usize) -> Deltas {
        Deltas {
            max,
            sums: HashMap::new(),
            histograms: HashMap::new(),
        }
    }

    /// Series with a running total.
    pub fn len(&self) -> usize {
        self.sums.len() + self.histograms.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn room_for(&self, known: bool) -> bool {
        known || self.len() < self.max
    }
}

struct Out<'a> {
    job: &'a str,
    decoded: &'a mut DecodedMetrics,
    deltas: &'a mut Deltas,
}

impl Out<'_> {
    /// The labels of a series: the point's attributes, the name, `job`, `extra`.
    fn labels(
        &self,
        name: &str,
        attrs: &[(String, String)],
        extra: Option<(&str, String)>,
    ) -> Labels {
        let mut labels: Vec<(String, String)> = attrs
            .iter()
            .map(|(k, v)| (sanitize(k), v.clone()))
            .filter(|(k, _)| k != "__name__")
            .collect();
        labels.push(("__name__".into(), name.to_string()));
        if !self.job.is_empty() && !labels.iter().any(|(k, _)| k == "job") {
            labels.push(("job".into(), self.job.to_string()));
        }
        if let Some((k, val)) = extra {
            labels.push((k.to_string(), val));
        }
        Labels::from_pairs(labels)
    }

    fn push(
        &mut self,
        name: &str,
        attrs: &[(String, String)],
        extra: Option<(&str, String)>,
        t_ns: u64,
        v: f64,
    ) {
        let labels = self.labels(name, attrs, extra);
        self.push_labels(labels, t_ns, v);
    }

    fn push_labels(&mut self, labels: Labels, t_ns: u64, v: f64) {
        let t_ms = i64::try_from(t_ns / 1_000_000).unwrap_or(i64::MAX);
        self.decoded.series.push(SeriesSamples {
            labels,
            samples: vec![Sample(t_ms, v)],
        });
    }

    /// The points of a delta sum, each added to its series' running total.
    fn delta_numbers(&mut self, name: &str, metric: &str, points: Vec<NumberPoint>) {
        for p in points {
            let v = match p.value {
                Some(Number::Double(d)) => d,
                Some(Number::Int(i)) => i as f64,
                None => continue,
            };
            let labels = self.labels(name, &pairs(p.attributes), None);
            if !self.deltas.room_for(self.deltas.sums.contains_key(&labels)) {
                self.reject(1, too_many(metric, self.deltas.max));
                continue;
            }
            let total = self.deltas.sums.entry(labels.clone()).or_insert(0.0);
            *total += v;
            let total = *total;
            self.push_labels(labels, p.time_unix_nano, total);
        }
    }

    /// A histogram point as `_bucket{le}` (cumulative across buckets), `_sum` and `_count`.
    fn histogram(&mut self, base: &str, attrs: &[(String, String)], t_ns: u64, h: &HistogramTotal) {
        let mut cumulative = 0u64;
        for (i, n) in h.counts.iter().enumerate() {
            cumulative = cumulative.saturating_add(*n);
            let le = h
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            self.push(
                &format!("{base}_bucket"),
                attrs,
                Some(("le", le)),
                t_ns,
                cumulative as f64,
            );
        }
        if !h.sum.is_nan() {
            self.push(&format!("{base}_sum"), attrs, None, t_ns, h.sum);
        }
        self.push(&format!("{base}_count"), attrs, None, t_ns, h.count as f64);
    }

    /// One series per point of a gauge or sum.
    fn numbers(&mut self, name: &str, points: Vec<NumberPoint>) {
        for p in points {
            let v = match p.value {
                Some(Number::Double(d)) => d,
                Some(Number::Int(i)) => i as f64,
                None => f64::NAN,
            };
            self.push(name, &pairs(p.attributes), None, p.time_unix_nano, v);
        }
    }

    fn reject(&mut self, n: usize, why: String) {
        self.decoded.rejected += n as u64;
        if self.decoded.reason.is_none() {
            self.decoded.reason = Some(why);
        }
    }
}

fn convert(m: Metric, out: &mut Out<'_>) {
    match m.data {
        None => {}
        Some(Data::Gauge(g)) => {
            out.numbers(&series_name(&m.name, &m.unit, true, false), g.data_points)
        }
        Some(Data::Sum(s)) => {
            if s.temporality == DELTA {
                let name = series_name(&m.name, &m.unit, !s.monotonic, s.monotonic);
                return out.delta_numbers(&name, &m.name, s.data_points);
            }
            out.numbers(
                &series_name(&m.name, &m.unit, !s.monotonic, s.monotonic),
                s.data_points,
            );
        }
        Some(Data::Histogram(h)) => {
            let base = series_name(&m.name, &m.unit, false, false);
            for p in h.data_points {
                if !p.bucket_counts.is_empty()
                    && p.bucket_counts.len() != p.explicit_bounds.len() + 1
                {
                    out.reject(
                        1,
                        format!(
                            "{}: {} bucket counts for {} bounds",
                            m.name,
                            p.bucket_counts.len(),
                            p.explicit_bounds.len()
                        ),
                    );
                    continue;
                }
                let attrs = pairs(p.attributes);
                let point = HistogramTotal {
                    bounds: p.explicit_bounds,
                    counts: p.bucket_counts,
                    // No sum (allowed for histograms with negative values): no `_sum`.
                    sum: p.sum.unwrap_or(f64::NAN),
                    count: p.count,
                };
                if h.temporality != DELTA {
                    out.histogram(&base, &attrs, p.time_unix_nano, &point);
                    continue;
                }
                let key = out.labels(&base, &attrs, None);
                let d = &mut *out.deltas;
                if !d.room_for(d.histograms.contains_key(&key)) {
                    let why = too_many(&m.name, d.max);
                    out.reject(1, why);
                    continue;
                }
                let total = d.histograms.entry(key).or_default();
                // New bounds (or a first point) start the totals again.
                if total.bounds != point.bounds || total.counts.len() != point.counts.len() {
                    *total = HistogramTotal {
                        bounds: point.bounds.clone(),
                        counts: vec![0; point.counts.len()],
                        sum: 0.0,
                        count: 0,
                    };
                }
                for (t, n) in total.counts.iter_mut().zip(&point.counts) {
                    *t = t.saturating_add(*n);
                }
                total.sum += point.sum;
                total.count = total.count.saturating_add(point.count);
                let snapshot = HistogramTotal {
                    bounds: total.bounds.clone(),
                    counts: total.counts.clone(),
                    sum: total.sum,
                    count: total.count,
                };
                out.histogram(&base, &attrs, p.time_unix_nano, &snapshot);
            }
        }
        Some(Data::Exponential(e)) => {
            if e.temporality == DELTA {
                return out.reject(
                    e.data_points.len(),
                    format!(
                        "{}: delta exponential histograms are not supported, send cumulative",
                        m.name
                    ),
                );
            }
            let base = series_name(&m.name, &m.unit, false, false);
            for p in e.data_points {
                match explicit(&p) {
                    Ok(h) => out.histogram(&base, &pairs(p.attributes), p.time_unix_nano, &h),
                    Err(why) => out.reject(1, format!("{}: {why}", m.name)),
                }
            }
        }
        Some(Data::Summary(s)) => {
            let base = series_name(&m.name, &m.unit, false, false);
            for p in s.data_points {
                let attrs = pairs(p.attributes);
                for q in &p.quantile_values {
                    out.push(
                        &base,
                        &attrs,
                        Some(("quantile", q.quantile.to_string())),
                        p.time_unix_nano,
                        q.value,
                    );
                }
                out.push(
                    &format!("{base}_sum"),
                    &attrs,
                    None,
                    p.time_unix_nano,
                    p.sum,
                );
                out.push(
                    &format!("{base}_count"),
                    &attrs,
                    None,
                    p.time_unix_nano,
                    p.count as f64,
                );
            }
        }
    }
}

fn too_many(metric: &str, max: usize) -> String {
    format!(
        "{metric}: the receiver keeps running totals for at most {max} delta series; send cumulative"
    )
}

/// The `job` of a resource: `service.namespace/service.name`, or `service.name`.
fn job(attrs: &[(String, String)]) -> String {
    let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match (get("service.namespace"), get("service.name")) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        (None, Some(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Decodes an `ExportMetricsServiceRequest` (protobuf or OTLP/JSON) into series; delta
/// series are added to their running totals in `deltas`.
pub fn decode_metrics(
    body: &[u8],
    format: Format,
    deltas: &mut Deltas,
) -> Result<DecodedMetrics, OtlpError> {
    use prost::Message;
    let req = match format {
        Format::Json => json::decode(body)?,
        Format::Protobuf => {
            ExportMetricsServiceRequest::decode(body).map_err(|e| OtlpError::Malformed {
                format: "protobuf",
                reason: e.to_string(),
            })?
        }
    };
    let mut decoded = DecodedMetrics::default();
    for rm in req.resource_metrics {
        let job = job(&pairs(
            rm.resource.map(|r| r.attributes).unwrap_or_default(),
        ));
        let mut out = Out {
            job: &job,
            decoded: &mut decoded,
            deltas: &mut *deltas,
        };
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                convert(m, &mut out);
            }
        }
    }
    Ok(decoded)
}

mod json {
    //! OTLP/JSON metrics: read into the protobuf messages, so both encodings take one path.
    //! 64-bit integers may be strings, doubles may be `"NaN"`/`"Infinity"` strings (the
    //! protobuf JSON mapping), attribute values are `AnyValue` objects.
    use serde::Deserialize;
    use serde_json::Value as J;

    use super::super::json::{Attrs, KeyValue as JsonKv};
    use super::super::{AnyValue, KeyValue, OtlpError, Resource, Value};
    use super::{
        Buckets, Data, Exponential, ExponentialPoint, ExportMetricsServiceRequest, Gauge,
        Histogram, HistogramPoint, Metric, Number, NumberPoint, Quantile, ResourceMetrics,
        ScopeMetrics, Sum, Summary, SummaryPoint,
    };

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Request {
        resource_metrics: Vec<JsonResourceMetrics>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct JsonResourceMetrics {
        resource: Option<Attrs>,
        scope_metrics: Vec<JsonScopeMetrics>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct JsonScopeMetrics {
        metrics: Vec<JsonMetric>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct JsonMetric {
        name: String,
        unit: String,
        gauge: Option<Points>,
        sum: Option<Points>,
        histogram: Option<Points>,
        exponential_histogram: Option<Points>,
        summary: Option<Points>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Points {
        data_points: Vec<Point>,
        aggregation_temporality: i32,
        is_monotonic: bool,
    }

    /// Any kind's data point: the fields of the kind at hand are set.
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Point {
        attributes: Vec<JsonKv>,
        time_unix_nano: J,
        as_double: Option<J>,
        as_int: Option<J>,
        count: J,
        sum: Option<J>,
        bucket_counts: Vec<J>,
        explicit_bounds: Vec<J>,
        quantile_values: Vec<JsonQuantile>,
        scale: i32,
        zero_count: J,
        zero_threshold: J,
        positive: Option<JsonBuckets>,
        negative: Option<JsonBuckets>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct JsonBuckets {
        offset: i32,
        bucket_counts: Vec<J>,
    }

    fn buckets(b: &Option<JsonBuckets>) -> Result<Option<Buckets>, OtlpError> {
        b.as_ref()
            .map(|b| {
                Ok(Buckets {
                    offset: b.offset,
                    bucket_counts: b
                        .bucket_counts
                        .iter()
                        .map(u64_of)
                        .collect::<Result<_, _>>()?,
                })
            })
            .transpose()
    }

    fn exponential(p: Point) -> Result<ExponentialPoint, OtlpError> {
        Ok(ExponentialPoint {
            time_unix_nano: u64_of(&p.time_unix_nano)?,
            count: u64_of(&p.count)?,
            sum: p.sum.as_ref().map(f64_of).transpose()?,
            scale: p.scale,
            zero_count: u64_of(&p.zero_count)?,
            zero_threshold: f64_of(&p.zero_threshold)?,
            positive: buckets(&p.positive)?,
            negative: buckets(&p.negative)?,
            attributes: attrs(p.attributes),
        })
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct JsonQuantile {
        quantile: J,
        value: J,
    }

    fn bad(reason: String) -> OtlpError {
        OtlpError::Malformed {
            format: "JSON",
            reason,
        }
    }

    fn u64_of(v: &J) -> Result<u64, OtlpError> {
        match v {
            J::Null => Some(0),
            J::Number(n) => n.as_u64(),
            J::String(s) => s.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| bad(format!("{v} is not an unsigned 64-bit integer")))
    }

    fn i64_of(v: &J) -> Result<i64, OtlpError> {
        match v {
            J::Number(n) => n.as_i64(),
            J::String(s) => s.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| bad(format!("{v} is not a 64-bit integer")))
    }

    fn f64_of(v: &J) -> Result<f64, OtlpError> {
        match v {
            J::Null => Ok(0.0),
            J::Number(n) => n
                .as_f64()
                .ok_or_else(|| bad(format!("{n} is not a double"))),
            J::String(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                _ => s.parse().map_err(|_| bad(format!("{s:?} is not a double"))),
            },
            other => Err(bad(format!("{other} is not a double"))),
        }
    }

    fn attrs(kvs: Vec<JsonKv>) -> Vec<KeyValue> {
        super::super::json::pairs(kvs)
            .into_iter()
            .map(|(key, v)| KeyValue {
                key,
                value: Some(AnyValue {
                    value: Some(Value::String(v)),
                }),
            })
            .collect()
    }

    fn number(p: Point) -> Result<NumberPoint, OtlpError> {
        let value = match (&p.as_double, &p.as_int) {
            (Some(d), _) => Some(Number::Double(f64_of(d)?)),
            (None, Some(i)) => Some(Number::Int(i64_of(i)?)),
            (None, None) => None,
        };
        Ok(NumberPoint {
            time_unix_nano: u64_of(&p.time_unix_nano)?,
            attributes: attrs(p.attributes),
            value,
        })
    }

    fn histogram(p: Point) -> Result<HistogramPoint, OtlpError> {
        Ok(HistogramPoint {
            time_unix_nano: u64_of(&p.time_unix_nano)?,
            count: u64_of(&p.count)?,
            sum: p.sum.as_ref().map(f64_of).transpose()?,
            bucket_counts: p
                .bucket_counts
                .iter()
                .map(u64_of)
                .collect::<Result<_, _>>()?,
            explicit_bounds: p
                .explicit_bounds
                .iter()
                .map(f64_of)
                .collect::<Result<_, _>>()?,
            attributes: attrs(p.attributes),
        })
    }

    fn summary(p: Point) -> Result<SummaryPoint, OtlpError> {
        Ok(SummaryPoint {
            time_unix_nano: u64_of(&p.time_unix_nano)?,
            count: u64_of(&p.count)?,
            sum: p.sum.as_ref().map(f64_of).transpose()?.unwrap_or(0.0),
            quantile_values: p
                .quantile_values
                .iter()
                .map(|q| {
                    Ok(Quantile {
                        quantile: f64_of(&q.quantile)?,
                        value: f64_of(&q.value)?,
                    })
                })
                .collect::<Result<_, OtlpError>>()?,
            attributes: attrs(p.attributes),
        })
    }

    fn each<T>(
        p: Points,
        f: fn(Point) -> Result<T, OtlpError>,
    ) -> Result<(Vec<T>, i32, bool), OtlpError> {
        let points = p.data_points.into_iter().map(f).collect::<Result<_, _>>()?;
        Ok((points, p.aggregation_temporality, p.is_monotonic))
    }

    fn metric(m: JsonMetric) -> Result<Metric, OtlpError> {
        let data = if let Some(g) = m.gauge {
            Some(Data::Gauge(Gauge {
                data_points: each(g, number)?.0,
            }))
        } else if let Some(p) = m.sum {
            let (data_points, temporality, monotonic) = each(p, number)?;
            Some(Data::Sum(Sum {
                data_points,
                temporality,
                monotonic,
            }))
        } else if let Some(p) = m.histogram {
            let (data_points, temporality, _) = each(p, histogram)?;
            Some(Data::Histogram(Histogram {
                data_points,
                temporality,
            }))
        } else if let Some(p) = m.exponential_histogram {
            let (data_points, temporality, _) = each(p, exponential)?;
            Some(Data::Exponential(Exponential {
                data_points,
                temporality,
            }))
        } else if let Some(p) = m.summary {
            Some(Data::Summary(Summary {
                data_points: each(p, summary)?.0,
            }))
        } else {
            None
        };
        Ok(Metric {
            name: m.name,
            unit: m.unit,
            data,
        })
    }

    pub(super) fn decode(body: &[u8]) -> Result<ExportMetricsServiceRequest, OtlpError> {
        let req: Request = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
        Ok(ExportMetricsServiceRequest {
            resource_metrics: req
                .resource_metrics
                .into_iter()
                .map(|rm| {
                    Ok(ResourceMetrics {
                        resource: rm.resource.map(|r| Resource {
                            attributes: attrs(r.attributes),
                        }),
                        scope_metrics: rm
                            .scope_metrics
                            .into_iter()
                            .map(|sm| {
                                Ok(ScopeMetrics {
                                    metrics: sm.metrics.into_iter().map(metric).collect::<Result<
                                        _,
                                        OtlpError,
                                    >>(
                                    )?,
                                })
                            })
                            .collect::<Result<_, OtlpError>>()?,
                    })
                })
                .collect::<Result<_, OtlpError>>()?,
        })
    }
}

/// The answer to an accepted metrics request (`ExportMetricsServiceResponse`).
pub fn encode_metrics_response(format: Format, rejected: u64, message: &str) -> Vec<u8> {
    super::encode_partial(format, "rejectedDataPoints", rejected, message)
}

#[cfg(test)]
mod tests {
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
                s.labels.metric_name() == Some(name)
                    && le.is_none_or(|l| s.labels.get("le") == Some(l))
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
}
