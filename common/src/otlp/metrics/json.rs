//! OTLP/JSON metrics: read into the protobuf messages, so both encodings take one path.
//! 64-bit integers may be strings, doubles may be `"NaN"`/`"Infinity"` strings (the
//! protobuf JSON mapping), attribute values are `AnyValue` objects.
use serde::Deserialize;
use serde_json::Value as J;

use super::super::json::{Attrs, KeyValue as JsonKv};
use super::super::{AnyValue, KeyValue, OtlpError, Resource, Value};
use super::{
    Buckets, Data, Exponential, ExponentialPoint, ExportMetricsServiceRequest, Gauge, Histogram,
    HistogramPoint, Metric, Number, NumberPoint, Quantile, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryPoint,
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
                                metrics: sm
                                    .metrics
                                    .into_iter()
                                    .map(metric)
                                    .collect::<Result<_, OtlpError>>()?,
                            })
                        })
                        .collect::<Result<_, OtlpError>>()?,
                })
            })
            .collect::<Result<_, OtlpError>>()?,
    })
}
