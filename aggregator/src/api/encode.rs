//! Prometheus' JSON for query results, written by hand: the shapes (`[t, "v"]` points,
//! labels as objects) are fixed and large results are common, so a string is built directly.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use telltale_common::model::{Labels, Sample};

use crate::metrics::promql::Value;
use crate::metrics::promql::format::{push_int, write_sample, write_value};
use crate::metrics::storage::SeriesData;

/// Appends `s` as a JSON string.
pub(super) use telltale_common::logging::push_json_str;

pub(super) fn push_labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, k);
        out.push(':');
        push_json_str(out, v);
    }
    out.push('}');
}

pub(super) fn push_timestamp(out: &mut String, t_ms: i64) {
    // Whole milliseconds, printed as seconds with 3 decimals when there is a fraction.
    if t_ms < 0 {
        out.push('-');
    }
    let a = t_ms.unsigned_abs();
    let (secs, ms) = (a / 1000, a % 1000);
    push_int(out, secs as i64);
    if ms != 0 {
        // Always three digits, as Prometheus writes them (`1.500`, `1.050`).
        out.push('.');
        for d in [ms / 100, ms / 10 % 10, ms % 10] {
            out.push(char::from(b'0' + d as u8));
        }
    }
}

pub(super) fn push_point(out: &mut String, s: &Sample) {
    out.push('[');
    push_timestamp(out, s.0);
    out.push(',');
    push_value(out, s.1);
    out.push(']');
}

/// Appends a sample value as Prometheus writes it, quoted
/// ([`write_sample`]: this runs for every point of a range query's result).
pub(super) fn push_value(out: &mut String, v: f64) {
    out.push('"');
    write_sample(out, v);
    out.push('"');
}

pub(super) fn push_matrix(out: &mut String, m: &[SeriesData]) {
    // A range answer's series share the steps' timestamps: each is formatted once, with the
    // point's opening around it (`[1796502582,"`), and copied for every series.
    let mut opening: rustc_hash::FxHashMap<i64, String> = Default::default();
    out.push('[');
    for (i, s) in m.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"metric\":");
        push_labels(out, &s.labels);
        out.push_str(",\"values\":[");
        for (j, p) in s.samples.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let open = opening.entry(p.0).or_insert_with(|| {
                let mut o = String::with_capacity(20);
                o.push('[');
                push_timestamp(&mut o, p.0);
                o.push_str(",\"");
                o
            });
            out.push_str(open);
            write_sample(out, p.1);
            out.push_str("\"]");
        }
        out.push_str("]}");
    }
    out.push(']');
}

pub(super) fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// About the bytes `v` takes as JSON, so the answer is written into one buffer: a range
/// query's answer runs to tens of megabytes, and growing a buffer by doubling copied it
/// about once more and faulted in every page of each larger copy.
fn size_hint(v: &Value) -> usize {
    let labels = |l: &Labels| l.iter().map(|(k, v)| k.len() + v.len() + 6).sum::<usize>() + 32;
    256 + match v {
        // A point: `[1796502582.5,"0.08342476987345523"],` is 40 bytes at most of the time.
        Value::Vector(v) => v.iter().map(|(l, _)| labels(l) + 48).sum::<usize>(),
        Value::Matrix(m) => m
            .iter()
            .map(|s| labels(&s.labels) + 40 * s.samples.len())
            .sum::<usize>(),
        Value::Scalar(_) => 48,
        Value::String(_, s) => s.len() + 48,
    }
}

/// A query result in the success envelope, written directly: large results are most of a
/// query's cost when built as a JSON tree first.
pub(super) fn value_response(v: &Value) -> Response {
    let mut out = String::with_capacity(size_hint(v));
    out.push_str("{\"status\":\"success\",\"data\":{\"resultType\":");
    match v {
        Value::Vector(v) => {
            out.push_str("\"vector\",\"result\":[");
            for (i, (l, s)) in v.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                push_labels(&mut out, l);
                out.push_str(",\"value\":");
                push_point(&mut out, s);
                out.push('}');
            }
            out.push(']');
        }
        Value::Matrix(m) => {
            out.push_str("\"matrix\",\"result\":");
            push_matrix(&mut out, m);
        }
        // Prometheus writes a scalar or a string with Go's `encoding/json`, not its point
        // encoder: the time as a float (`1.05`, not `1.050`), a scalar's value positional
        // however large or small (`0.0000001`, `1000000000000000000000`).
        Value::Scalar(s) => {
            out.push_str("\"scalar\",\"result\":[");
            write_value(&mut out, s.0 as f64 / 1000.0);
            out.push_str(",\"");
            write_value(&mut out, s.1);
            out.push_str("\"]");
        }
        Value::String(t, s) => {
            out.push_str("\"string\",\"result\":[");
            write_value(&mut out, *t as f64 / 1000.0);
            out.push(',');
            push_json_str(&mut out, s);
            out.push(']');
        }
    }
    out.push_str("}}");
    json_response(out)
}
