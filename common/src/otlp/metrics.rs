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

mod json;

/// The answer to an accepted metrics request (`ExportMetricsServiceResponse`).
pub fn encode_metrics_response(format: Format, rejected: u64, message: &str) -> Vec<u8> {
    super::encode_partial(format, "rejectedDataPoints", rejected, message)
}

#[cfg(test)]
mod tests;
