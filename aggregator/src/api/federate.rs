//! `/federate?match[]=…`: Prometheus' federation endpoint, so a Prometheus server can scrape
//! Telltale (`metrics_path: /federate`, `honor_labels: true`, `params: {match[]: [...]}`).
//!
//! Written as Prometheus 2.42 writes it: the newest sample of every series a `match[]`
//! selector names, within the lookback before now; a series whose newest sample is a stale
//! marker is left out; the text exposition format, one `# TYPE name untyped` family per
//! metric name in name order, each sample with its own timestamp in milliseconds; and
//! `instance=""` on a series without an `instance` label, so that the scraper keeps it empty
//! instead of adding its own. No `match[]` is an empty answer, as there.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use telltale_common::model::{Labels, Sample, is_stale_marker, now_ms};

use super::{ApiError, Params, St};
use crate::metrics::promql::format::{format_go_v, push_int};

/// Prometheus' text format, version 0.0.4.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The handler.
pub async fn federate(
    State(st): St,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &body);
    let sets = super::selectors(&p, false)?;
    let now = now_ms();
    let (lookback, max_samples) = (st.engine.lookback_ms(), st.engine.max_samples());
    let storage = st.storage.clone();
    let newest = tokio::task::spawn_blocking(move || {
        // One entry per series however many selectors name it.
        let mut newest: BTreeMap<Labels, Sample> = BTreeMap::new();
        for m in &sets {
            for s in storage.select(m, now - lookback, now, max_samples)? {
                if let Some(&last) = s.samples.last() {
                    newest.insert(s.labels, last);
                }
            }
        }
        Ok::<_, crate::metrics::storage::StorageError>(newest)
    })
    .await
    .map_err(|e| ApiError::internal(format!("federation read failed: {e}")))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut out = String::new();
    write_text(&mut out, &newest);
    Ok(([(header::CONTENT_TYPE, TEXT_FORMAT)], out).into_response())
}

/// Writes the samples as Prometheus' federation does (see the module's documentation).
fn write_text(out: &mut String, newest: &BTreeMap<Labels, Sample>) {
    // By name: a family is written once, with all its series.
    let mut by_name: BTreeMap<&str, Vec<(&Labels, Sample)>> = BTreeMap::new();
    for (labels, &s) in newest {
        if is_stale_marker(s.1) {
            continue;
        }
        let name = labels.get("__name__").unwrap_or("");
        by_name.entry(name).or_default().push((labels, s));
    }
    for (name, series) in by_name {
        out.push_str("# TYPE ");
        out.push_str(name);
        out.push_str(" untyped\n");
        for (labels, Sample(t, v)) in series {
            out.push_str(name);
            out.push('{');
            let mut first = true;
            let mut pair = |out: &mut String, k: &str, v: &str| {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(k);
                out.push_str("=\"");
                escape_into(out, v);
                out.push('"');
            };
            let mut instance = false;
            for (k, v) in labels.iter() {
                if k == "__name__" {
                    continue;
                }
                instance |= k == "instance";
                pair(out, k, v);
            }
            if !instance {
                pair(out, "instance", "");
            }
            out.push_str("} ");
            out.push_str(&float_text(v));
            out.push(' ');
            push_int(out, t);
            out.push('\n');
        }
    }
}

/// A label value with the text format's escapes (backslash, quote, newline).
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A value as the text format writes it: `strconv`'s shortest `'g'`, with `+Inf`, `-Inf`,
/// `NaN`, and `0` for either zero.
fn float_text(v: f64) -> String {
    if v == 0.0 { "0".into() } else { format_go_v(v) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn families_by_name_with_timestamps_escapes_and_an_empty_instance() {
        let mut m = BTreeMap::new();
        m.insert(
            labels(&[("__name__", "b"), ("instance", "h:1"), ("job", "x")]),
            Sample(1_700_000_000_123, 1.5e6),
        );
        m.insert(
            labels(&[("__name__", "a"), ("path", "c:\\\"d\"\n")]),
            Sample(1_700_000_000_000, -0.0),
        );
        m.insert(
            labels(&[("__name__", "b"), ("instance", "h:2")]),
            Sample(1_700_000_000_000, f64::INFINITY),
        );
        m.insert(
            labels(&[("__name__", "c")]),
            Sample(
                1_700_000_000_000,
                f64::from_bits(telltale_common::model::STALE_NAN_BITS),
            ),
        );
        let mut out = String::new();
        write_text(&mut out, &m);
        assert_eq!(
            out,
            "# TYPE a untyped\n\
             a{path=\"c:\\\\\\\"d\\\"\\n\",instance=\"\"} 0 1700000000000\n\
             # TYPE b untyped\n\
             b{instance=\"h:1\",job=\"x\"} 1.5e+06 1700000000123\n\
             b{instance=\"h:2\"} +Inf 1700000000000\n"
        );
    }
}
